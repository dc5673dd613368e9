/**
 * The native (ONNX Runtime) teacher against the tfjs teacher and the float64 goldens in ../shared:
 * prefill logits and hidden states (tiny fixtures, stories260k; a synthetic model with biases,
 * sliding window, llama3 RoPE and an untied head), KV-cache decoding equal to prefill at every
 * position, nativePrefillMany equal to separate runs, and ORT errors as one-line SynaximErrors.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { SynaximError } from '../src/util/errors.ts';
import { openModel } from '../src/formats/openModel.ts';
import { readAllFloat32 } from '../src/formats/safetensors.ts';
import type { ModelWeights } from '../src/formats/weights.ts';
import { teacherPrefill } from '../src/teacher/teacher.ts';
import { argmax } from '../src/model/sampling.ts';
import { nativePrefill, nativePrefillMany, NativeDecoder, requireNativeFits } from '../src/native/model.ts';
import { softmaxPart, type AttentionPart } from '../src/native/layerGraph.ts';
import onnxProto from 'onnx-proto';
import { externalDataOf, GraphBuilder } from '../src/runtime/ort/graph.ts';
import { createSession, f32, releaseSession, runSession } from '../src/runtime/ort/session.ts';
import { maxAbsDiff, randoms } from './helpers/numeric.ts';
import { syntheticModel } from './helpers/randomModel.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

const FIXTURES = path.join(SHARED_DIR, 'fixtures');
const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');
if (!sharedAvailable()) console.warn(`native teacher conformance tests skipped: ${FIXTURES} not found (../shared is absent)`);


type Run = { logits: Float32Array[]; hidden?: Float32Array[][] };

/** Logits and every hidden state of two runs within `tol`, sequence by sequence. */
function expectRunsClose(a: Run, b: Run, tol: number): void {
  expect(a.logits.length).toBe(b.logits.length);
  a.logits.forEach((x, s) => expect(maxAbsDiff(x, b.logits[s]!), `logits of sequence ${s}`).toBeLessThan(tol));
  a.hidden?.forEach((hs, s) => hs.forEach((h, l) => expect(maxAbsDiff(h, b.hidden![s]![l]!), `hidden.${l} of sequence ${s}`).toBeLessThan(tol)));
}

/** KV-cache decoding from position 0 equals prefill logits at every position. */
async function expectDecodeMatchesPrefill(
  w: ModelWeights,
  ids: number[],
  prefillLogits: Float32Array,
  tol: number,
  attention?: (l: number) => AttentionPart | null,
  stackBytes?: number,
): Promise<void> {
  const V = w.config.vocabSize;
  const dec = await NativeDecoder.create(w, attention, { stackBytes });
  try {
    for (let t = 0; t < ids.length; t++) expect(maxAbsDiff(await dec.step(ids[t]!), prefillLogits.subarray(t * V, (t + 1) * V)), `position ${t}`).toBeLessThan(tol);
    dec.reset();
    expect(dec.position).toBe(0);
    expect(maxAbsDiff(await dec.step(ids[0]!), prefillLogits.subarray(0, V)), 'after reset').toBeLessThan(tol);
  } finally {
    await dec.close();
  }
}

describe('native teacher on a synthetic model (biases, sliding window 3, llama3 RoPE, untied head)', () => {
  const w = syntheticModel();
  const seqs = [
    [1, 5, 9, 3, 3, 17, 0, 12, 19, 4],
    [2, 2, 8, 11, 13, 6, 1, 0, 7, 7],
    [4, 3, 19],
  ];
  it('prefill equals the tfjs teacher (logits and hidden states), batched windows of mixed lengths', async () => {
    const ref = teacherPrefill(w, seqs, { hidden: true });
    const r = await nativePrefill(w, seqs, { hidden: true });
    expect(r.hidden![0]!.length).toBe(w.config.numLayers + 1);
    expectRunsClose(r, ref, 1e-4);
  });
  it('KV-cache decoding past the window equals prefill at every position', async () => {
    const full = (await nativePrefill(w, [seqs[0]!])).logits[0]!;
    await expectDecodeMatchesPrefill(w, seqs[0]!, full, 1e-5);
    await expectDecodeMatchesPrefill(w, seqs[0]!, full, 1e-5, undefined, 1); // one graph per layer
  });
  it('the same model without a window (full causal attention) also matches tfjs', async () => {
    const full: ModelWeights = { ...w, config: { ...w.config, slidingWindow: null }, embed: w.embed, lmHeadRows: w.lmHeadRows, finalNorm: w.finalNorm, layer: w.layer };
    expectRunsClose(await nativePrefill(full, seqs, { hidden: true }), teacherPrefill(full, seqs, { hidden: true }), 1e-4);
  });
});

describe('nativePrefillMany', () => {
  const w = syntheticModel();
  const seqs = [
    [1, 5, 9, 3, 3, 17, 0, 12],
    [2, 2, 8, 11, 13, 6, 1, 0],
  ];
  // A different part: attention output scaled by 0.5 (changes the residual stream from layer 1 on).
  const halfSoftmax: AttentionPart = (ctx) => ctx.b.node('Mul', [softmaxPart(ctx), ctx.b.constF([0.5], [])]);
  const sameAsSoftmax: AttentionPart = (ctx) => softmaxPart(ctx); // a distinct part computing the teacher
  const configs = [
    { name: 'teacher', attention: () => null },
    { name: 'half@1', attention: (l: number) => (l === 1 ? halfSoftmax : null) },
    { name: 'half@0', attention: (l: number) => (l === 0 ? halfSoftmax : softmaxPart) },
    { name: 'copy', attention: () => sameAsSoftmax },
  ];
  it('equals separate runs of each configuration (shared and split residual streams)', async () => {
    const many = await nativePrefillMany(w, seqs, configs, { hidden: true });
    expect(Object.keys(many).sort()).toEqual(configs.map((c) => c.name).sort());
    for (const c of configs) {
      const alone = await nativePrefill(w, seqs, { hidden: true, attention: c.attention });
      expectRunsClose(many[c.name]!, alone, 1e-6);
    }
    // The configurations really differ where their parts differ, and agree before.
    expect(maxAbsDiff(many['half@1']!.hidden![0]![1]!, many.teacher!.hidden![0]![1]!)).toBe(0);
    expect(maxAbsDiff(many['half@1']!.hidden![0]![2]!, many.teacher!.hidden![0]![2]!)).toBeGreaterThan(1e-3);
    expectRunsClose(many.copy!, many.teacher!, 1e-6);
  });
  it('a student part in the decoder equals its prefill at every position', async () => {
    const attention = (l: number) => (l === 1 ? halfSoftmax : null);
    const full = (await nativePrefill(w, [seqs[0]!], { attention })).logits[0]!;
    await expectDecodeMatchesPrefill(w, seqs[0]!, full, 1e-5, attention);
  });
});

describe('graph building and running', () => {
  it('a named output renames its node (no Identity copy); later uses, inputs and repeated outputs stay right', async () => {
    const b = new GraphBuilder('outputs');
    const x = b.input('x', 'float32', [3]);
    const y = b.node('Add', [x, b.constF([1, 2, 3], [3])]);
    b.output(y, 'float32', [3], 'y_out');
    b.output(y, 'float32', [3], 'y_again'); // already an output: a copy
    b.output(b.node('Mul', [y, b.constF([2], [])]), 'float32', [3], 'z'); // y used after being renamed
    b.output(x, 'float32', [3], 'x_echo'); // a graph input: a copy
    const bytes = b.toBytes();
    const nodes = onnxProto.onnx.ModelProto.decode(bytes).graph!.node!;
    expect(nodes.filter((n) => n.opType === 'Identity').map((n) => n.output![0])).toEqual(['y_again', 'x_echo']);
    const s = await createSession(bytes, 'outputs');
    const r = await runSession(s, { x: f32(new Float32Array([1, 1, 1]), [3]) }, 'outputs');
    expect([...(r.y_out!.data as Float32Array)]).toEqual([2, 3, 4]);
    expect([...(r.y_again!.data as Float32Array)]).toEqual([2, 3, 4]);
    expect([...(r.z!.data as Float32Array)]).toEqual([4, 6, 8]);
    expect([...(r.x_echo!.data as Float32Array)]).toEqual([1, 1, 1]);
    // A pre-allocated output is written in place; unnamed outputs are not computed.
    const into = new Float32Array(3);
    const only = await runSession(s, { x: f32(new Float32Array([0, 1, 2]), [3]) }, 'outputs', { z: f32(into, [3]) });
    expect([...into]).toEqual([2, 6, 10]);
    expect(Object.keys(only)).toEqual(['z']);
    await releaseSession(s);
  });
  it('large weights travel as in-memory external data, not protobuf copies, with the same results', async () => {
    const K = 64;
    const N = 512; // 128 KiB of float32: above the external-data threshold
    const w = randoms(N * K, 7);
    const xv = randoms(K, 8);
    const b = new GraphBuilder('external');
    const x = b.input('x', 'float32', [1, K]);
    b.output(b.node('FusedMatMul', [x, b.initializer('w', w, [N, K])], { transB: 1 }, { domain: 'com.microsoft' }), 'float32', [1, N], 'y');
    const bytes = b.toBytes();
    expect(bytes.length).toBeLessThan(4096);
    expect(externalDataOf(bytes).map((e) => e.data.byteLength)).toEqual([4 * N * K]);
    const s = await createSession(bytes, 'external');
    const y = (await runSession(s, { x: f32(xv, [1, K]) }, 'external')).y!.data as Float32Array;
    await releaseSession(s);
    const ref = new Float64Array(N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) ref[n] += w[n * K + k]! * xv[k]!;
    expect(maxAbsDiff(y, Float32Array.from(ref))).toBeLessThan(1e-5);
  });
});

describe('errors are one line', () => {
  it('an ONNX Runtime failure names what ran, without a native stack', async () => {
    const b = new GraphBuilder('bad');
    const x = b.input('x', 'float32', ['B', 3]);
    b.output(b.node('MatMul', [x, b.constF([1, 2, 3, 4, 5, 6], [3, 2])]), 'float32', ['B', 2], 'y');
    const s = await createSession(b.toBytes(), 'model/config.json (layer 3)');
    expect((await runSession(s, { x: f32(new Float32Array([1, 0, 0]), [1, 3]) }, 'w')).y!.data).toEqual(new Float32Array([1, 2]));
    const err = await runSession(s, { x: f32(new Float32Array([1, 0]), [1, 2]) }, 'model/config.json (layer 3)').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SynaximError);
    expect((err as Error).message).toMatch(/^model\/config\.json \(layer 3\): ONNX Runtime failed: .*dimensions/);
    expect((err as Error).message).not.toContain('\n');
    const bad = await createSession(new Uint8Array([1, 2, 3, 4]), 'garbage.onnx').catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(SynaximError);
    expect((bad as Error).message).toMatch(/^garbage\.onnx: ONNX Runtime could not load the graph/);
  });
  it('token ids outside the vocabulary and models too big for the machine are refused', async () => {
    const w = syntheticModel();
    await expect(nativePrefill(w, [[1, 20]])).rejects.toThrow(/token id 20 at position 1 is outside the vocabulary/);
    const huge: ModelWeights = { ...w, config: { ...w.config, hiddenSize: 1 << 20, intermediateSize: 1 << 22, numLayers: 100 } };
    expect(() => requireNativeFits(huge, 'streamed')).toThrow(/too big for this machine: one layer needs/);
  });
});

// ---------------------------------------------------------------- ../shared: tfjs and the goldens

function readGreedy(dir: string): number[] {
  return JSON.parse(fs.readFileSync(path.join(dir, 'golden', 'greedy.json'), 'utf8')).ids as number[];
}

/** Prefill of the golden greedy sequence within 2e-3 of teacher.safetensors (logits, every hidden), greedy ids identical. */
async function checkGolden(w: ModelWeights, root: string): Promise<Run> {
  const golden = readAllFloat32(path.join(root, 'golden', 'teacher.safetensors'));
  const ids = readGreedy(root);
  const r = await nativePrefill(w, [ids], { hidden: true });
  expect(maxAbsDiff(r.logits[0]!, golden.logits!.data), 'logits').toBeLessThan(2e-3);
  expect(r.hidden![0]!.length).toBe(w.config.numLayers + 1);
  r.hidden![0]!.forEach((h, l) => expect(maxAbsDiff(h, golden[`hidden.${l}`]!.data), `hidden.${l}`).toBeLessThan(2e-3));
  const V = w.config.vocabSize;
  for (let t = 0; t + 1 < ids.length; t++) expect(argmax(r.logits[0]!.subarray(t * V, (t + 1) * V)), `greedy at ${t}`).toBe(ids[t + 1]);
  return r;
}

const SHARED_MODELS = [
  { name: 'tiny-llama', root: path.join(FIXTURES, 'tiny-llama') },
  { name: 'tiny-mistral-bf16', root: path.join(FIXTURES, 'tiny-mistral-bf16') },
  { name: 'stories260k', root: STORIES },
];

for (const { name, root } of SHARED_MODELS) {
  describe.skipIf(!sharedAvailable())(`native teacher on ${name} (hf/)`, () => {
    let w: ModelWeights;
    beforeAll(() => {
      w = openModel(path.join(root, 'hf'));
    });
    afterAll(() => w?.close());
    it('logits and every hidden state within 2e-3 of the float64 golden; greedy ids identical; decode equals prefill', async () => {
      const r = await checkGolden(w, root);
      await expectDecodeMatchesPrefill(w, readGreedy(root).slice(0, 24), r.logits[0]!, 1e-4);
    });
    it('equals the tfjs teacher within 2e-3 on several windows (logits and hidden)', async () => {
      const V = w.config.vocabSize;
      const seqs = [0, 1, 2].map((k) => Array.from({ length: 17 + 5 * k }, (_, t) => (t === 0 ? 1 : (t * 37 + k * 101) % V)));
      expectRunsClose(await nativePrefill(w, seqs, { hidden: true }), teacherPrefill(w, seqs, { hidden: true }), 2e-3);
    });
  });
}
