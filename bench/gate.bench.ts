/**
 * Benchmark (not a test): the symbiotic gate's chunked-parallel form against its recurrent form.
 *
 *   npx tsx bench/gate.bench.ts [--backend wasm] [--quick]
 *
 * Magnus-like dimensions (D_q = 4096 = 32 heads × 128; the gate sees GQA-expanded k/v, so the
 * 8 kv heads do not change its cost), T = 64 and 512: forward throughput of
 * - the chunked form without the final state (prefill / training / evaluation) at C = 32…512,
 * - the chunked form with the final state (prefill before decoding),
 * - the recurrent form (token by token; timed on the first `recurrentTokens` tokens — its cost per
 *   token is constant — and reported per token and as tokens/s),
 * and forward+backward (gradient w.r.t. the gate logits, the path the adapter's gate_bias /
 * gate_scale take). A small-D section (stories260k: D_q = 64) checks the default chunk size there.
 * Prints one JSON document on stdout; progress on stderr.
 */
import * as tf from '@tensorflow/tfjs-core';
import os from 'node:os';
import { initBackend, backendInfo, type BackendChoice } from '../src/core/backend.ts';
import { defaultChunkSize, gateChunked, gateChunkedOutput, gateLogs, gateRecurrent, type GateSequence } from '../src/engine/gate.ts';

const args = process.argv.slice(2);
const backendArg = (args.includes('--backend') ? args[args.indexOf('--backend') + 1] : 'wasm') as BackendChoice;
const quick = args.includes('--quick');

function log(msg: string): void {
  process.stderr.write(`[gate.bench] ${msg}\n`);
}

function makeSequence(T: number, D: number, seed: number): GateSequence {
  return tf.tidy(() => {
    const q = tf.randomNormal([T, D], 0, 1, 'float32', seed) as tf.Tensor2D;
    const k = tf.randomNormal([T, D], 0, 1, 'float32', seed + 1) as tf.Tensor2D;
    const v = tf.randomNormal([T, D], 0, 1, 'float32', seed + 2) as tf.Tensor2D;
    const kHat = tf.div(k, tf.norm(k, 'euclidean', 1, true)) as tf.Tensor2D;
    const z = tf.randomNormal([T], 1, 2, 'float32', seed + 3) as tf.Tensor1D;
    return { q, kHat, vHat: v, ...gateLogs(z) };
  });
}

/**
 * Wall time of f (synchronised by reading the outputs back): one warm-up call, then the median of
 * `reps` calls. null when it fails (e.g. out of memory).
 */
function time(f: () => tf.Tensor[], reps: number): { ms: number | null; error?: string } {
  const times: number[] = [];
  for (let i = 0; i < reps + 1; i++) {
    const t0 = performance.now();
    try {
      const outs = f();
      outs.forEach((o) => o.dataSync()); // wasm runs synchronously; this also forces completion elsewhere
      outs.forEach((o) => o.dispose());
    } catch (e) {
      return { ms: null, error: String((e as Error).message ?? e).slice(0, 200) };
    }
    if (i > 0) times.push(performance.now() - t0);
  }
  times.sort((x, y) => x - y);
  return { ms: times[Math.floor(times.length / 2)] };
}

interface Row {
  D: number;
  T: number;
  form: string;
  chunk?: number;
  pass: 'forward' | 'forward+backward';
  ms: number | null;
  tokensPerSec: number | null;
  timedTokens?: number;
  note?: string;
}

function fwdChunked(seq: GateSequence, C: number, withState: boolean): () => tf.Tensor[] {
  return () => tf.tidy(() => (withState ? Object.values(gateChunked(seq, C)) : [gateChunkedOutput(seq, C)]));
}

/** d/dz of Σ r ⊙ w, with log g = log σ(z): the gradient path of the adapter's gate parameters. */
function fwdBwdChunked(seq: GateSequence, C: number, w: tf.Tensor2D, z: tf.Tensor1D): () => tf.Tensor[] {
  return () =>
    tf.tidy(() => [
      tf.grad((zz: tf.Tensor) => tf.sum(tf.mul(gateChunkedOutput({ ...seq, ...gateLogs(zz as tf.Tensor1D) }, C), w)))(z),
    ]);
}

function fwdBwdRecurrent(seq: GateSequence, w: tf.Tensor2D, z: tf.Tensor1D): () => tf.Tensor[] {
  return () => tf.tidy(() => [tf.grad((zz: tf.Tensor) => tf.sum(tf.mul(gateRecurrent({ ...seq, ...gateLogs(zz as tf.Tensor1D) }).r, w)))(z)]);
}

function prefix(seq: GateSequence, n: number): GateSequence {
  return tf.tidy(() => ({
    q: tf.slice(seq.q, [0, 0], [n, -1]),
    kHat: tf.slice(seq.kHat, [0, 0], [n, -1]),
    vHat: tf.slice(seq.vHat, [0, 0], [n, -1]),
    logGate: tf.slice(seq.logGate, [0], [n]),
    logOneMinusGate: tf.slice(seq.logOneMinusGate, [0], [n]),
  }));
}

function dispose(seq: GateSequence): void {
  Object.values(seq).forEach((t) => (t as tf.Tensor).dispose());
}

function bench(D: number, Ts: number[], chunks: number[], recurrentTokens: number, recurrentGradTokens: number, reps: number): Row[] {
  const rows: Row[] = [];
  for (const T of Ts) {
    const seq = makeSequence(T, D, 17);
    const w = tf.randomNormal([T, D], 0, 1, 'float32', 5) as tf.Tensor2D;
    const z = tf.randomNormal([T], 1, 2, 'float32', 6) as tf.Tensor1D;
    const push = (form: string, pass: Row['pass'], res: { ms: number | null; error?: string }, tokens: number, chunk?: number, note?: string) => {
      const row: Row = { D, T, form, pass, ms: res.ms === null ? null : Math.round(res.ms * 10) / 10, tokensPerSec: res.ms === null ? null : Math.round((tokens / res.ms) * 1000 * 10) / 10 };
      if (chunk !== undefined) row.chunk = chunk;
      if (tokens !== T) row.timedTokens = tokens;
      const n = [note, res.error].filter(Boolean).join('; ');
      if (n) row.note = n;
      rows.push(row);
      log(`D=${D} T=${T} ${form}${chunk ? ` C=${chunk}` : ''} ${pass}: ${res.ms === null ? `failed (${res.error})` : `${res.ms.toFixed(1)} ms, ${row.tokensPerSec} tok/s`}`);
    };
    for (const C of chunks) {
      if (C > T && C !== chunks.find((c) => c >= T)) continue; // chunks ≥ T are all the same computation
      push('chunked', 'forward', time(fwdChunked(seq, C, false), reps), T, C, C >= T ? 'one chunk: no state needed' : undefined);
    }
    const Cd = defaultChunkSize(D);
    push('chunked+final-state', 'forward', time(fwdChunked(seq, Cd, true), reps), T, Cd, 'default chunk');
    for (const C of chunks) {
      if (C > T && C !== chunks.find((c) => c >= T)) continue;
      push('chunked', 'forward+backward', time(fwdBwdChunked(seq, C, w, z), reps), T, C);
    }
    const nRec = Math.min(T, recurrentTokens);
    const recSeq = prefix(seq, nRec);
    push('recurrent', 'forward', time(() => Object.values(gateRecurrent(recSeq)), reps), nRec, undefined, nRec < T ? `timed on the first ${nRec} tokens (constant cost per token)` : undefined);
    const nRecGrad = Math.min(T, recurrentGradTokens);
    const recGradSeq = prefix(seq, nRecGrad);
    const wPrefix = tf.slice(w, [0, 0], [nRecGrad, -1]) as tf.Tensor2D;
    const zPrefix = tf.slice(z, [0], [nRecGrad]) as tf.Tensor1D;
    push('recurrent', 'forward+backward', time(fwdBwdRecurrent(recGradSeq, wPrefix, zPrefix), reps), nRecGrad, undefined,
      `timed on the first ${nRecGrad} tokens: autodiff keeps every step's D×D state (${(D * D * 4 / 2 ** 20).toFixed(0)} MiB each), so longer runs do not fit`);
    [w, z, wPrefix, zPrefix].forEach((t) => t.dispose());
    dispose(recSeq);
    dispose(recGradSeq);
    dispose(seq);
  }
  return rows;
}

await initBackend(backendArg);
log(`backend ${backendInfo().backend} (${backendInfo().detail})`);
const t0 = performance.now();
// warm up kernels (wasm compiles lazily)
bench(64, [16], [8], 4, 4, 1);

const small = bench(64, [128, 512], [16, 32, 64, 128, 256, 512], 512, 128, quick ? 1 : 5);
const magnus = bench(4096, quick ? [64] : [64, 512], quick ? [64] : [32, 64, 128, 256, 512], quick ? 4 : 16, quick ? 2 : 4, quick ? 1 : 2);

const report = {
  benchmark: 'symbiotic gate: chunked-parallel vs recurrent',
  backend: backendInfo(),
  host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '', node: process.version },
  defaultChunk: { 'D=64': defaultChunkSize(64), 'D=4096': defaultChunkSize(4096) },
  note: 'ms = wall time of one call (median after a warm-up call); tokensPerSec over the tokens timed. Magnus: D_q 4096 (32 heads x 128, 8 kv heads expanded).',
  magnus,
  smallD: small,
  totalSeconds: Math.round((performance.now() - t0) / 100) / 10,
};
process.stdout.write(JSON.stringify(report, null, 2) + '\n');
