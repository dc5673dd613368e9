/**
 * (c) Tokens per second: teacher prefill and student recurrent decoding (with teacher KV-cache
 * decoding beside it, the thing the student replaces).
 *
 * - On a real model directory (stories260k): the whole model through `teacherPrefill` (streamed,
 *   logits included) and through `StudentDecoder.step` / `TeacherDecoder.step` token by token.
 * - On a shape without files (Magnus): one layer of random weights, compute only (weights already
 *   on the backend): per-layer prefill tokens/s from the teacher layer timing, per-layer decode
 *   from a one-layer StudentDecoder / TeacherDecoder with a tiny vocabulary, plus the lm_head
 *   product [1, hidden]·[hidden, vocab] timed bare. Whole-model figures are extrapolated
 *   (numLayers × layer + lm_head) and labelled so; they leave out loading the weights, which a
 *   model bigger than the wasm heap must stream per forward (timed separately as layer load).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../src/formats/config.ts';
import type { LayerWeights, ModelWeights } from '../src/formats/weights.ts';
import { StudentDecoder } from '../src/engine/student.ts';
import { teacherPrefill, TeacherDecoder } from '../src/teacher/teacher.ts';
import { disposeLayer, uploadLayer, uploadMatrix, type LayerTensors } from '../src/model/nn.ts';
import { pseudoRandom } from '../src/util/random.ts';
import { sig } from './machine.ts';
import { gateStateBytes, prefillFlopsPerToken, studentDecodeBytesPerToken } from './costs.ts';
import { SyntheticWeights, withShape } from './synthetic.ts';
import { force, time } from './timing.ts';

export interface ModelThroughput {
  model: string;
  layers: number;
  prefill: { sequences: number; T: number; ms: number; tokensPerSec: number; flopsPerToken: number; gflops: number };
  decode: {
    /** Tokens fed before timing (the teacher's KV cache holds them). */
    context: number;
    steps: number;
    studentTokensPerSec: number;
    teacherTokensPerSec: number;
    /** student / teacher decode speed at this context. */
    studentOverTeacher: number;
    /** Bytes a student step reads (f32 weights on the tfjs backend, lm_head, gate states) and that × tokens/s. */
    studentBytesPerToken: number;
    studentGbPerSec: number;
  };
}

function ids(n: number, vocab: number, seed: number): number[] {
  const r = pseudoRandom(n, seed);
  // skip the low (special) ids
  return Array.from(r, (x) => 3 + Math.floor(((x + 1) / 2) * (vocab - 3)) % (vocab - 3));
}

/** tokens/s of `steps` decode steps after a prefill of `context` tokens (the prefill is not timed). */
function decodeRate(make: () => { prefill(ids: number[]): Float32Array; step(id: number): Float32Array; dispose(): void }, vocab: number, context: number, steps: number): number {
  const d = make();
  try {
    d.prefill(ids(context, vocab, 5));
    d.step(4); // warm-up step
    const t0 = performance.now();
    for (const id of ids(steps, vocab, 6)) d.step(id);
    return (steps / (performance.now() - t0)) * 1000;
  } finally {
    d.dispose();
  }
}

/** A whole model from disk (small enough for the decoders, which hold every layer). */
export function modelThroughput(name: string, weights: ModelWeights, o: { sequences: number; T: number; context: number; steps: number; reps: number }): ModelThroughput {
  const c = weights.config;
  const seqs = Array.from({ length: o.sequences }, (_, s) => ids(o.T, c.vocabSize, 10 + s));
  const prefill = time(() => {
    teacherPrefill(weights, seqs);
  }, o.reps);
  const student = decodeRate(() => new StudentDecoder(weights, { rest: 'engine' }), c.vocabSize, o.context, o.steps);
  const teacher = decodeRate(() => new TeacherDecoder(weights), c.vocabSize, o.context, o.steps);
  const tokensPerSec = (o.sequences * o.T * 1000) / prefill.ms;
  const flopsPerToken = prefillFlopsPerToken(c, o.T);
  const bytesPerToken = studentDecodeBytesPerToken(c, { kind: 'f32' });
  return {
    model: name,
    layers: c.numLayers,
    prefill: { sequences: o.sequences, T: o.T, ms: sig(prefill.ms), tokensPerSec: sig(tokensPerSec), flopsPerToken, gflops: sig((tokensPerSec * flopsPerToken) / 1e9) },
    decode: {
      context: o.context,
      steps: o.steps,
      studentTokensPerSec: sig(student),
      teacherTokensPerSec: sig(teacher),
      studentOverTeacher: sig(student / teacher),
      studentBytesPerToken: bytesPerToken,
      studentGbPerSec: sig((student * bytesPerToken) / 1e9),
    },
  };
}

export interface ShapeThroughput {
  shape: string;
  layers: number;
  perLayer: {
    prefillT: number;
    prefillTokensPerSec: number;
    /** Projections + attention of one layer per token × tokens/s. */
    prefillGflops: number;
    decodeContext: number;
    studentDecodeMsPerToken: number;
    teacherDecodeMsPerToken: number;
  };
  lmHeadDecodeMs: number;
  /** Whole model, compute only: numLayers × per-layer + lm_head (prefill: per token, lm_head amortised the same way). */
  extrapolated: {
    label: string;
    prefillTokensPerSec: number;
    studentDecodeTokensPerSec: number;
    teacherDecodeTokensPerSec: number;
    studentOverTeacher: number;
    /** Bytes a whole-model student step reads (f32 layers, lm_head, gate states) and that × the extrapolated tokens/s. */
    studentBytesPerToken: number;
    studentDecodeGbPerSec: number;
  };
  /** Bytes of one layer's gate state / KV cache each decode step reads. */
  stateBytesPerLayer: number;
  kvBytesPerLayerAtContext: number;
}

/**
 * Per-layer decode and (given) prefill figures of a shape, extrapolated to its full depth.
 * `prefillLayerMs` is the teacher layer time at `prefillT` tokens (from the phase timings).
 */
export function shapeThroughput(shape: string, full: ModelConfig, prefillLayerMs: number, prefillT: number, o: { context: number; steps: number }): ShapeThroughput {
  // One layer, a 256-token vocabulary: the decoders' time is the layer's (the real lm_head is timed bare below).
  const oneLayer = new SyntheticWeights(withShape(full, { numLayers: 1, vocabSize: 256 }));
  const student = decodeRate(() => new StudentDecoder(oneLayer, { rest: 'engine' }), 256, o.context, o.steps);
  const teacher = decodeRate(() => new TeacherDecoder(oneLayer), 256, o.context, o.steps);
  const D = full.hiddenSize;
  const h = tf.tensor2d(pseudoRandom(D, 1), [1, D]);
  // The full-vocabulary lm_head as one [hidden, vocab] product (the decoders hold it whole).
  const lm = tf.tensor2d(pseudoRandom(D * full.vocabSize, 2), [D, full.vocabSize]);
  const lmMs = time(() => force(() => tf.matMul(h, lm)), 5).ms;
  h.dispose();
  lm.dispose();
  const L = full.numLayers;
  const studentMs = 1000 / student;
  const teacherMs = 1000 / teacher;
  const prefillPerToken = prefillLayerMs / prefillT;
  const studentTotal = L * studentMs + lmMs;
  const teacherTotal = L * teacherMs + lmMs;
  return {
    shape,
    layers: L,
    perLayer: {
      prefillT,
      prefillTokensPerSec: sig(1000 / prefillPerToken),
      prefillGflops: sig(prefillFlopsPerToken(full, prefillT, 1, false) / (prefillPerToken * 1e6)),
      decodeContext: o.context,
      studentDecodeMsPerToken: sig(studentMs),
      teacherDecodeMsPerToken: sig(teacherMs),
    },
    lmHeadDecodeMs: sig(lmMs),
    extrapolated: {
      label: `EXTRAPOLATED from one layer: ${L} × layer + lm_head, compute only (weights resident; streaming them is extra)`,
      prefillTokensPerSec: sig(1000 / (L * prefillPerToken)),
      studentDecodeTokensPerSec: sig(1000 / studentTotal),
      teacherDecodeTokensPerSec: sig(1000 / teacherTotal),
      studentOverTeacher: sig(teacherTotal / studentTotal),
      studentBytesPerToken: studentDecodeBytesPerToken(full, { kind: 'f32' }),
      studentDecodeGbPerSec: sig(studentDecodeBytesPerToken(full, { kind: 'f32' }) / (studentTotal * 1e6)),
    },
    stateBytesPerLayer: gateStateBytes(full),
    kvBytesPerLayerAtContext: 2 * full.numKvHeads * full.headDim * 4 * o.context,
  };
}

export interface LayerLoadTiming {
  dir: string;
  storage: string;
  /** Reading + decoding one layer to float32 host arrays (int4 dequantization / BF16 decode). */
  decodeMs: number;
  /** Transposing and uploading it to the backend (uploadLayer). */
  uploadMs: number;
  bytesF32: number;
}

/** Time streaming one layer of a model directory: decode to host f32, then upload (median of reps). */
export function layerLoadTiming(weights: ModelWeights, layer: number, reps: number): LayerLoadTiming {
  let bytes = 0;
  const decode = time(() => {
    const lw = weights.layer(layer);
    bytes = [lw.q, lw.k, lw.v, lw.o, lw.gate, lw.up, lw.down].reduce((a, m) => a + m.data.byteLength, 0);
  }, reps, 0);
  const lw = weights.layer(layer);
  const upload = time(() => disposeLayer(uploadLayer(lw)), reps, 0);
  return { dir: weights.dir, storage: weights.storage, decodeMs: sig(decode.ms), uploadMs: sig(upload.ms), bytesF32: bytes };
}

/** Bytes of the wasm backend's heap (WebAssembly memory only grows), or null on other backends. */
export function wasmHeapBytes(): number | null {
  const b = tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } };
  return b.wasm?.HEAPU8 ? b.wasm.HEAPU8.byteLength : null;
}

export interface HeapGrowth {
  order: string;
  layerMiB: number;
  /** Wasm heap after streaming each layer (upload, one teacher layer pass, dispose), MiB. */
  heapMiBAfterLayer: number[];
}

/**
 * How the wasm heap grows while layers are streamed through it: upload layer l, run it, dispose it,
 * upload l+1 … The heap never shrinks, so fragmentation (small tensors landing in the holes freed
 * by the previous layer's big matrices) shows as growth beyond one layer's size. `largestFirst`
 * uploads the matrices in decreasing size and the vectors last, so the next layer's big matrices
 * find the previous layer's holes intact.
 */
export function heapGrowth(weights: ModelWeights, layers: number[], order: 'uploadLayer' | 'largestFirst', T: number, run: (layer: LayerTensors, h: tf.Tensor2D) => tf.Tensor): HeapGrowth {
  const c = weights.config;
  const out: number[] = [];
  let bytes = 0;
  for (const l of layers) {
    const lw = weights.layer(l);
    bytes = [lw.q, lw.k, lw.v, lw.o, lw.gate, lw.up, lw.down].reduce((a, m) => a + 4 * m.data.length, 0);
    const layer = order === 'uploadLayer' ? uploadLayer(lw) : uploadLayerLargestFirst(lw);
    const h = tf.tensor2d(pseudoRandom(T * c.hiddenSize, l), [T, c.hiddenSize]);
    const y = tf.tidy(() => run(layer, h));
    y.dataSync();
    y.dispose();
    h.dispose();
    disposeLayer(layer);
    out.push(Math.round((wasmHeapBytes() ?? 0) / 2 ** 20));
  }
  return { order, layerMiB: Math.round(bytes / 2 ** 20), heapMiBAfterLayer: out };
}

/** uploadLayer with the matrices uploaded largest first and the small vectors after them. */
export function uploadLayerLargestFirst(lw: LayerWeights): LayerTensors {
  const names = (['gate', 'up', 'down', 'q', 'o', 'k', 'v'] as const).slice().sort((a, b) => lw[b].data.length - lw[a].data.length);
  const m: Partial<Record<(typeof names)[number], tf.Tensor2D>> = {};
  for (const n of names) m[n] = uploadMatrix(lw[n]);
  return {
    q: m.q!,
    k: m.k!,
    v: m.v!,
    o: m.o!,
    gate: m.gate!,
    up: m.up!,
    down: m.down!,
    inputNorm: tf.tensor1d(lw.inputNorm),
    postNorm: tf.tensor1d(lw.postNorm),
    qBias: lw.qBias ? tf.tensor1d(lw.qBias) : null,
    kBias: lw.kBias ? tf.tensor1d(lw.kBias) : null,
    vBias: lw.vBias ? tf.tensor1d(lw.vBias) : null,
  };
}
