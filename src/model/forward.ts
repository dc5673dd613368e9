/**
 * The whole model around the one decoder layer (decoderLayer.ts), in its two modes, which must
 * agree:
 *
 * - prefill (`streamedForward`, `policyPrefill`): whole sequences at positions 0..T-1, streamed a
 *   layer at a time (only one layer's weights on the backend), hidden states on request, logits in
 *   vocabulary slices;
 * - decoding (`ResidentDecoder`): a token (or a first block) at a time with per-layer state (KV
 *   caches, gate states); holds every layer's weights and the whole lm_head on the backend.
 *
 * The teacher (every layer softmax) and the student (per-layer policies) are compositions of these.
 */
import * as tf from '@tensorflow/tfjs-core';
import { requireModelFitsBackend } from '../runtime/backend.ts';
import type { ModelConfig } from '../formats/config.ts';
import { modelConfigFile, type ModelWeights } from '../formats/weights.ts';
import { failNonFiniteActivations, validateIds, type PrefillOptions, type PrefillResult } from './sequence.ts';
import { disposeLayer, linear, rmsNorm, ropeCosSin, uploadLayer, uploadMatrix, type LayerTensors } from './nn.ts';
import { decoderLayer, LayerState, policyAttention, type RopeTables } from './decoderLayer.ts';
import { needsRope, type LayerPolicy } from './policy.ts';

// One definition for every engine (model/sequence.ts, formats/weights.ts); re-exported for existing importers.
export { modelConfigFile } from '../formats/weights.ts';
export { validateIds, type PrefillOptions, type PrefillResult } from './sequence.ts';

/**
 * What replaces attention in a layer: maps the normed layer input x [T, hidden] of sequence
 * `seqIndex` to the attention block's output (after o_proj) [T, hidden].
 */
export type TokenMixer = (x: tf.Tensor2D, layer: LayerTensors, layerIndex: number, seqIndex: number) => tf.Tensor2D;

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
 * Numerics guard: a layer output with NaN/Inf (weights that overflow float32, a saturated gate gone
 * wrong) stops the run naming the layer, instead of producing NaN figures downstream. One fused
 * reduction per layer and sequence: negligible next to the layer itself.
 */
export function requireFiniteActivations(x: tf.Tensor, modelDir: string, layer: number, sequence: number | null): void {
  const finite = tf.tidy(() => tf.all(tf.isFinite(x)).dataSync()[0]);
  if (!finite) failNonFiniteActivations(modelDir, layer, sequence);
}

/**
 * Run sequences through the model layer by layer: layer l is uploaded once, every sequence passes
 * through it (attention part = `mixer`), then it is released before l+1 is loaded.
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

/** RoPE tables for positions 0..T-1. */
export function ropeFromZero(c: ModelConfig, T: number): RopeTables {
  return ropeCosSin(c, Array.from({ length: T }, (_, i) => i));
}

/**
 * Whole sequences (positions from 0) through layers with the given policies (one per layer), the
 * gated ones in chunked-parallel form from M = 0. RoPE tables are made once per distinct length.
 */
export function policyPrefill(weights: ModelWeights, sequences: number[][], policies: LayerPolicy[], opts: PrefillOptions & { chunkSize?: number } = {}): PrefillResult {
  const c = weights.config;
  const ropeFor = new Map<number, RopeTables>();
  if (policies.some(needsRope)) for (const ids of sequences) if (!ropeFor.has(ids.length)) ropeFor.set(ids.length, ropeFromZero(c, ids.length));
  try {
    return streamedForward(weights, sequences, (x, layer, l) => policyAttention(x, layer, c, policies[l]!, { chunkSize: opts.chunkSize, rope: ropeFor.get(x.shape[0]) }), opts);
  } finally {
    for (const r of ropeFor.values()) {
      r.cos.dispose();
      r.sin.dispose();
    }
  }
}

/**
 * Incremental decoding through layers with the given policies: `step(id)` feeds the token at
 * `position` and returns the logits for the next one; softmax layers keep a KV cache, gated ones a
 * D_q×D_q state (recurrent form for one token, chunked-parallel from the carried state for a
 * block). Holds every layer's weights and the whole lm_head on the backend (for models that fit;
 * large ones use prefill, which streams). The policies belong to the caller. Call `dispose()`.
 */
export class ResidentDecoder {
  readonly config: ModelConfig;
  protected readonly layers: LayerTensors[];
  protected readonly states: LayerState[];
  private readonly finalNorm: tf.Tensor1D;
  private readonly lmHead: tf.Tensor2D;
  private pos = 0;

  constructor(
    private readonly weights: ModelWeights,
    private readonly policies: LayerPolicy[],
    private readonly chunkSize?: number,
  ) {
    const c = weights.config;
    this.config = c;
    requireModelFitsBackend(c, modelConfigFile(weights), 'resident');
    this.layers = [];
    for (let l = 0; l < c.numLayers; l++) this.layers.push(uploadLayer(weights.layer(l)));
    this.finalNorm = tf.tensor1d(weights.finalNorm());
    this.lmHead = uploadMatrix(weights.lmHeadRows(0, c.vocabSize));
    this.states = policies.map((p) => new LayerState(c, p));
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
   * Feed several tokens at once (batched over the sequence); returns the logits after the last
   * one. Same result as `step` on each. Softmax layers batch only from an empty cache: after the
   * first position, with any KV cache, the tokens are fed one by one.
   */
  prefill(ids: number[]): Float32Array {
    validateIds(this.config, ids);
    if (this.pos !== 0 && this.states.some((s) => s.cache !== null)) {
      let out: Float32Array = new Float32Array(0);
      for (const id of ids) out = this.run([id]);
      return out;
    }
    return this.run(ids);
  }

  /** Run tokens at positions pos.. through every layer. */
  private run(ids: number[]): Float32Array {
    const c = this.config;
    const T = ids.length;
    const positions = Array.from({ length: T }, (_, i) => this.pos + i);
    const logits = tf.tidy(() => {
      const rope = ropeCosSin(c, positions);
      let h = tf.tensor2d(this.weights.embed(ids), [T, c.hiddenSize]);
      this.layers.forEach((layer, l) => {
        const ctx = { rope, chunkSize: this.chunkSize, state: this.states[l] };
        h = decoderLayer(h, layer, c.rmsNormEps, (x) => policyAttention(x, layer, c, this.policies[l]!, ctx));
      });
      const last = T === 1 ? h : tf.slice(h, [T - 1, 0], [1, -1]);
      return linear(rmsNorm(last as tf.Tensor2D, this.finalNorm, c.rmsNormEps), this.lmHead);
    });
    this.pos += T;
    const out = logits.dataSync() as Float32Array;
    logits.dispose();
    return out;
  }

  /** Forget every position (states and caches emptied; weights kept). */
  reset(): void {
    this.states.forEach((s) => s.reset());
    this.pos = 0;
  }

  dispose(): void {
    this.reset();
    this.layers.forEach(disposeLayer);
    this.finalNorm.dispose();
    this.lmHead.dispose();
  }
}
