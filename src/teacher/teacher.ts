/**
 * The teacher: a standard Llama / Mistral / Qwen2 decoder with softmax attention (HF
 * modeling_llama semantics). Per layer:
 *
 *   x  = RMSNorm(h)                      input_layernorm
 *   h' = h + TokenMixer(x)               self-attention incl. o_proj (the student swaps this call)
 *   h''= h' + MLP(RMSNorm(h'))           post_attention_layernorm, SwiGLU
 *
 * then the final norm and lm_head. Two modes that must agree:
 * - `teacherPrefill`: whole sequences, streamed a layer at a time (only one layer's weights on the
 *   backend), hidden states on request, logits in vocabulary slices.
 * - `TeacherDecoder`: one token at a time with a KV cache (holds all layers; for small models).
 */
import * as tf from '@tensorflow/tfjs-core';
import path from 'node:path';
import { fail } from '../util/errors.ts';
import { requireModelFitsBackend } from '../runtime/backend.ts';
import { applyRope, disposeLayer, linear, rmsNorm, ropeCosSin, swigluMlp, uploadLayer, uploadMatrix, type LayerTensors } from '../model/nn.ts';
import type { ModelConfig } from '../formats/config.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { causalAttention, KvCache, type AttentionShape } from '../model/attention.ts';

/**
 * What replaces attention in a layer: maps the normed layer input x [T, hidden] of sequence
 * `seqIndex` to the attention block's output (after o_proj) [T, hidden].
 */
export type TokenMixer = (x: tf.Tensor2D, layer: LayerTensors, layerIndex: number, seqIndex: number) => tf.Tensor2D;

export interface PrefillOptions {
  /** Return hidden.0 (embeddings) … hidden.L (residual stream after each layer) per sequence. */
  hidden?: boolean;
  /** Called after layer l with each sequence's residual stream after it (= hidden.{l+1}), [T*hidden]. */
  onLayer?: (layerIndex: number, hiddenPerSeq: Float32Array[]) => void;
  /** Called after layer l without reading anything back (progress: eval ticks per layer). */
  onLayerDone?: (layerIndex: number) => void;
  /** Skip the final norm and lm_head (callers that only want hidden states). Default true. */
  logits?: boolean;
  /**
   * Stop with an error naming the layer when a layer's output has NaN/Inf (default true). Callers
   * with a richer diagnosis of their own (eval names configuration, document and position) turn it off.
   */
  guardFinite?: boolean;
}

export interface PrefillResult {
  /** Per sequence: [T, vocab] row-major. Empty when `logits: false`. */
  logits: Float32Array[];
  /** Per sequence: hidden[l] = hidden.l, [T, hidden] row-major, l = 0..numLayers. */
  hidden?: Float32Array[][];
}

export function attentionShape(c: ModelConfig): AttentionShape {
  return { numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim, slidingWindow: c.slidingWindow };
}

/** The file that describes a model (named by errors about the model as a whole). */
export function modelConfigFile(weights: Pick<ModelWeights, 'dir' | 'format'>): string {
  return path.join(weights.dir, weights.format === 'hf' ? 'config.json' : 'config.symb.json');
}

/** Token ids must be integers inside the vocabulary: one-line error otherwise. */
export function validateIds(config: ModelConfig, ids: ArrayLike<number>, what = 'input'): void {
  if (ids.length === 0) fail(null, `${what}: empty token sequence`);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) {
      fail(null, `${what}: token id ${id} at position ${i} is outside the vocabulary (0..${config.vocabSize - 1})`);
    }
  }
}

/** One decoder layer around a token mixer: pre-norm residual attention block, then pre-norm residual MLP. */
export function decoderLayer(h: tf.Tensor2D, layer: LayerTensors, eps: number, mixer: (x: tf.Tensor2D) => tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const attnOut = mixer(rmsNorm(h, layer.inputNorm, eps));
    const afterAttn = tf.add(h, attnOut) as tf.Tensor2D;
    const mlpOut = swigluMlp(rmsNorm(afterAttn, layer.postNorm, eps), layer.gate, layer.up, layer.down);
    return tf.add(afterAttn, mlpOut) as tf.Tensor2D;
  });
}

/** q, k, v projections (+ biases) of the normed input x [T, hidden]. */
export function qkvProjections(x: tf.Tensor2D, layer: LayerTensors): { q: tf.Tensor2D; k: tf.Tensor2D; v: tf.Tensor2D } {
  return { q: linear(x, layer.q, layer.qBias), k: linear(x, layer.k, layer.kBias), v: linear(x, layer.v, layer.vBias) };
}

/** The teacher's attention block over a whole sequence at positions 0..T-1 (cos/sin [T, headDim]). */
export function softmaxAttentionBlock(x: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const { q, k, v } = qkvProjections(x, layer);
    const qRot = applyRope(q, c.numHeads, c.headDim, cos, sin);
    const kRot = applyRope(k, c.numKvHeads, c.headDim, cos, sin);
    return linear(causalAttention(qRot, kRot, v, attentionShape(c)), layer.o);
  });
}

/** Vocabulary rows per lm_head slice: keeps one uploaded slice near 64 MiB of f32. */
function lmHeadSliceRows(c: ModelConfig): number {
  return Math.max(1, Math.min(c.vocabSize, Math.floor((1 << 24) / c.hiddenSize)));
}

/**
 * Final norm + lm_head for every sequence, vocabulary slice by slice (each slice uploaded once and
 * applied to all sequences). `h` per sequence [T, hidden] on the backend; returns [T, vocab] per sequence.
 */
export function projectLogits(weights: ModelWeights, h: tf.Tensor2D[]): Float32Array[] {
  const c = weights.config;
  const V = c.vocabSize;
  const finalNorm = tf.tensor1d(weights.finalNorm());
  const normed = h.map((x) => rmsNorm(x, finalNorm, c.rmsNormEps));
  finalNorm.dispose();
  const logits = h.map((x) => new Float32Array(x.shape[0] * V));
  const sliceRows = lmHeadSliceRows(c);
  for (let start = 0; start < V; start += sliceRows) {
    const count = Math.min(sliceRows, V - start);
    const w = uploadMatrix(weights.lmHeadRows(start, count));
    normed.forEach((x, s) => {
      const part = tf.tidy(() => linear(x, w));
      const data = part.dataSync() as Float32Array;
      part.dispose();
      const T = x.shape[0];
      if (count === V) logits[s].set(data);
      else for (let t = 0; t < T; t++) logits[s].set(data.subarray(t * count, (t + 1) * count), t * V + start);
    });
    w.dispose();
  }
  normed.forEach((x) => x.dispose());
  return logits;
}

/**
 * Run sequences through the model layer by layer: layer l is uploaded once, every sequence passes
 * through it (attention block = `mixer`), then it is released before l+1 is loaded. This is the
 * streaming skeleton shared by the teacher and the student.
 */
export function streamedForward(weights: ModelWeights, sequences: number[][], mixer: TokenMixer, opts: PrefillOptions = {}): PrefillResult {
  const c = weights.config;
  sequences.forEach((ids, s) => validateIds(c, ids, sequences.length > 1 ? `sequence ${s}` : 'input'));
  requireModelFitsBackend(c, modelConfigFile(weights), 'streamed');
  const hidden: Float32Array[][] | undefined = opts.hidden ? sequences.map(() => []) : undefined;
  let h = sequences.map((ids) => tf.tensor2d(weights.embed(ids), [ids.length, c.hiddenSize]));
  try {
    if (hidden) h.forEach((x, s) => hidden[s].push(x.dataSync() as Float32Array));
    for (let l = 0; l < c.numLayers; l++) {
      const layer = uploadLayer(weights.layer(l));
      try {
        h = h.map((x, s) => {
          const next = decoderLayer(x, layer, c.rmsNormEps, (normed) => mixer(normed, layer, l, s));
          x.dispose();
          return next;
        });
      } finally {
        disposeLayer(layer);
      }
      if (opts.guardFinite !== false) h.forEach((x, s) => requireFiniteActivations(x, weights.dir, l, sequences.length > 1 ? s : null));
      if (hidden || opts.onLayer) {
        const host = h.map((x) => x.dataSync() as Float32Array);
        if (hidden) host.forEach((d, s) => hidden[s].push(d));
        opts.onLayer?.(l, host);
      }
      opts.onLayerDone?.(l);
    }
    const logits = opts.logits === false ? [] : projectLogits(weights, h);
    return hidden ? { logits, hidden } : { logits };
  } finally {
    h.forEach((x) => x.dispose());
  }
}

/**
 * Numerics guard: a layer output with NaN/Inf (weights that overflow float32, a saturated gate gone
 * wrong) stops the run naming the layer, instead of producing NaN figures downstream. One fused
 * reduction per layer and sequence: negligible next to the layer itself.
 */
export function requireFiniteActivations(x: tf.Tensor, modelDir: string, layer: number, sequence: number | null): void {
  const finite = tf.tidy(() => tf.all(tf.isFinite(x)).dataSync()[0]);
  if (!finite) {
    fail(modelDir, `non-finite activations (NaN or Inf) after layer ${layer}${sequence === null ? '' : ` in sequence ${sequence}`}: the weights (or adapter) overflow float32`);
  }
}

/** The teacher over whole sequences (positions from 0): logits and, on request, hidden states. */
export function teacherPrefill(weights: ModelWeights, sequences: number[][], opts: PrefillOptions = {}): PrefillResult {
  const c = weights.config;
  const maxT = Math.max(...sequences.map((s) => s.length));
  // cos/sin for each distinct sequence length (made up front: the mixer runs inside tidy scopes).
  const ropeFor = new Map<number, { cos: tf.Tensor2D; sin: tf.Tensor2D }>();
  for (const ids of sequences) {
    if (!ropeFor.has(ids.length)) ropeFor.set(ids.length, ropeCosSin(c, Array.from({ length: ids.length }, (_, i) => i)));
  }
  const tables = (T: number) => ropeFor.get(T)!;
  try {
    return streamedForward(weights, sequences, (x, layer) => {
      const { cos, sin } = tables(x.shape[0]);
      return softmaxAttentionBlock(x, layer, c, cos, sin);
    }, opts);
  } finally {
    for (const r of ropeFor.values()) {
      r.cos.dispose();
      r.sin.dispose();
    }
  }
}

/**
 * Incremental decoding with a KV cache: `step(id)` feeds the token at `position` and returns the
 * logits for the next one. Holds every layer's weights and the whole lm_head on the backend (fine
 * for small models; large ones use prefill, which streams). Call `dispose()` when done.
 */
export class TeacherDecoder {
  readonly config: ModelConfig;
  private readonly layers: LayerTensors[];
  private readonly finalNorm: tf.Tensor1D;
  private readonly lmHead: tf.Tensor2D;
  private readonly caches: KvCache[];
  private pos = 0;

  constructor(private readonly weights: ModelWeights) {
    const c = weights.config;
    this.config = c;
    requireModelFitsBackend(c, modelConfigFile(weights), 'resident');
    this.layers = [];
    for (let l = 0; l < c.numLayers; l++) this.layers.push(uploadLayer(weights.layer(l)));
    this.finalNorm = tf.tensor1d(weights.finalNorm());
    this.lmHead = uploadMatrix(weights.lmHeadRows(0, c.vocabSize));
    this.caches = this.layers.map(() => new KvCache(attentionShape(c)));
  }

  /** Position of the next token fed (= tokens seen so far). */
  get position(): number {
    return this.pos;
  }

  /** Feed one token; returns the logits [vocab] predicting the token after it. */
  step(id: number): Float32Array {
    validateIds(this.config, [id]);
    return this.run([id]);
  }

  /**
   * Feed several tokens at once (batched over the sequence, filling the caches); returns the logits
   * after the last one. Same result as calling `step` on each.
   */
  prefill(ids: number[]): Float32Array {
    validateIds(this.config, ids);
    if (this.pos !== 0) {
      let out: Float32Array = new Float32Array(0);
      for (const id of ids) out = this.step(id);
      return out;
    }
    return this.run(ids);
  }

  /** Run tokens at positions pos.. through every layer; the caches are empty or T = 1. */
  private run(ids: number[]): Float32Array {
    const c = this.config;
    const T = ids.length;
    const positions = Array.from({ length: T }, (_, i) => this.pos + i);
    const logits = tf.tidy(() => {
      const { cos, sin } = ropeCosSin(c, positions);
      let h = tf.tensor2d(this.weights.embed(ids), [T, c.hiddenSize]);
      this.layers.forEach((layer, l) => {
        h = decoderLayer(h, layer, c.rmsNormEps, (x) => {
          const { q, k, v } = qkvProjections(x, layer);
          const qRot = applyRope(q, c.numHeads, c.headDim, cos, sin);
          const kRot = applyRope(k, c.numKvHeads, c.headDim, cos, sin);
          const cache = this.caches[l];
          let attn: tf.Tensor2D;
          if (T === 1) {
            cache.append(kRot, v);
            attn = cache.attend(qRot);
          } else {
            attn = causalAttention(qRot, kRot, v, attentionShape(c));
            cache.append(kRot, v);
          }
          return linear(attn, layer.o);
        });
      });
      const last = T === 1 ? h : tf.slice(h, [T - 1, 0], [1, -1]);
      return linear(rmsNorm(last as tf.Tensor2D, this.finalNorm, c.rmsNormEps), this.lmHead);
    });
    this.pos += T;
    const out = logits.dataSync() as Float32Array;
    logits.dispose();
    return out;
  }

  /** Forget every position (caches emptied; weights kept). */
  reset(): void {
    this.caches.forEach((cache) => cache.reset());
    this.pos = 0;
  }

  dispose(): void {
    this.reset();
    this.layers.forEach(disposeLayer);
    this.finalNorm.dispose();
    this.lmHead.dispose();
  }
}
