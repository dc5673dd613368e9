/**
 * Teacher prefill, native engine (ONNX Runtime) vs the tfjs path, on one model, in one process:
 * tokens/s and GFLOP/s (matmul FLOPs: linear layers, causal attention, lm_head), with ORT's
 * fp32 MatMul 2048³ measured in the same run as the machine's peak. Not a test; run by hand:
 *
 *   npx synaxim fixture --shape llama-1b /tmp/l1b
 *   npx tsx bench/native-vs-tfjs.ts /tmp/l1b/hf --layers 4 --context 512 --windows 2 [--skip-tfjs]
 */
import { openModel } from '../src/formats/openModel.ts';
import type { ModelWeights } from '../src/formats/weights.ts';
import { kvDim, qDim, type ModelConfig } from '../src/formats/config.ts';
import { initBackend } from '../src/runtime/backend.ts';
import { teacherPrefill } from '../src/teacher/teacher.ts';
import { nativePrefill } from '../src/native/model.ts';
import { GraphBuilder } from '../src/runtime/ort/graph.ts';
import { createSession, f32, ortThreads, runSession } from '../src/runtime/ort/session.ts';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}
const dir = process.argv[2]!;
const layers = Number(arg('layers', '4'));
const T = Number(arg('context', '512'));
const windows = Number(arg('windows', '2'));
const skipTfjs = process.argv.includes('--skip-tfjs');

/** Matmul FLOPs of a prefill of `n` windows of T tokens. */
function prefillFlops(c: ModelConfig, T: number, n: number): number {
  const D = c.hiddenSize;
  const perTokenLayer = 2 * (D * (qDim(c) + 2 * kvDim(c)) + qDim(c) * D + 3 * D * c.intermediateSize);
  const attention = 2 * 2 * c.numHeads * c.headDim * ((T * (T + 1)) / 2); // q·kᵀ and p·v, causal half
  return n * (c.numLayers * (T * perTokenLayer + attention) + T * 2 * D * c.vocabSize);
}

async function ortPeak(): Promise<number> {
  const N = 2048;
  const b = new GraphBuilder('peak');
  const x = b.input('a', 'float32', [N, N]);
  b.output(b.node('MatMul', [x, b.constF(new Float32Array(N * N).fill(0.001), [N, N])]), 'float32', [N, N], 'y');
  const s = await createSession(b.toBytes(), 'peak');
  const a = f32(new Float32Array(N * N).fill(0.5), [N, N]);
  await runSession(s, { a }, 'peak');
  const reps = 5;
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) await runSession(s, { a }, 'peak');
  const secs = (performance.now() - t0) / 1000;
  await s.release();
  return (reps * 2 * N ** 3) / secs / 1e9;
}

const base = openModel(dir);
// The first `layers` layers of the model (a proxy keeps instanceof for the int4 reader).
const w = new Proxy(base, {
  get: (t, p) => {
    if (p === 'config') return { ...t.config, numLayers: Math.min(layers, t.config.numLayers) };
    const v = Reflect.get(t, p, t);
    return typeof v === 'function' ? v.bind(t) : v;
  },
}) as ModelWeights;
const c = w.config;
const V = c.vocabSize;
const seqs = Array.from({ length: windows }, (_, k) => Array.from({ length: T }, (_, t) => (t * 7919 + k * 104729) % V));
const flops = prefillFlops(c, T, windows);
console.log(`model ${dir} (${w.storage}), ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${V}; ${windows} windows × ${T} tokens; ORT intra-op threads ${ortThreads()}`);
const peak = await ortPeak();
console.log(`ORT fp32 MatMul 2048³: ${peak.toFixed(1)} GFLOP/s`);

const report = (name: string, secs: number) =>
  console.log(`${name}: ${secs.toFixed(2)} s, ${((windows * T) / secs).toFixed(1)} tok/s, ${(flops / secs / 1e9).toFixed(1)} GFLOP/s = ${(flops / secs / 1e9 / peak).toFixed(2)} of the ORT peak`);

let t0 = performance.now();
const nat = await nativePrefill(w, seqs);
report('native prefill (incl. graph build + weight binding)', (performance.now() - t0) / 1000);
t0 = performance.now();
await nativePrefill(w, seqs);
report('native prefill, second run', (performance.now() - t0) / 1000);

if (!skipTfjs) {
  await initBackend('auto');
  t0 = performance.now();
  const ref = teacherPrefill(w, seqs);
  report('tfjs teacherPrefill', (performance.now() - t0) / 1000);
  let d = 0;
  ref.logits.forEach((x, s) => x.forEach((v, i) => (d = Math.max(d, Math.abs(v - nat.logits[s]![i]!)))));
  console.log(`max |native - tfjs| logits: ${d.toExponential(2)}`);
}
