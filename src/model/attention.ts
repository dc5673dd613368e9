/**
 * Softmax attention of the teacher (HF `eager_attention_forward`): causal, grouped-query (GQA),
 * optionally restricted to a sliding window (Mistral). Two forms that compute the same thing:
 *
 * - `causalAttention`: whole sequences (prefill, training), q/k/v [T, heads*headDim].
 * - `KvCache`: one token at a time (decoding), keys/values of earlier positions kept on the backend.
 *
 * q and k arrive with RoPE already applied. Query head i reads kv head ⌊i / nRep⌋; instead of
 * materialising repeated k/v we stack the nRep query heads of each kv head, so one kv head's
 * scores are a single matmul [nRep*T, hd] · [hd, T].
 *
 * Speed note: tfjs-wasm runs only 2-D `matMul(a, b)` without transposes through XNNPACK; batched
 * (rank-3) and `transposeB` matmuls take a slow generic path (5-20× slower at these shapes). So
 * keys are transposed once to [nKv, hd, T] and each kv head is its own 2-D matmul.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../formats/config.ts';
import { applyRope, linear, type LayerTensors } from './nn.ts';

export interface AttentionShape {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Mistral: a query at position i sees keys j with i - j < slidingWindow. null: all j ≤ i. */
  slidingWindow: number | null;
}

/** Added to the scores of masked positions: exp() of it underflows to exactly 0 in float32. */
const MASKED = -1e30;

/** Score elements per query block: bounds the [heads, block, keys] score tensor (64 MiB of f32). */
const SCORE_BUDGET = 1 << 24;

/** q [T, nHeads*hd] -> [nKv, nRep*T, hd], rows of one kv group's query heads stacked head by head. */
function groupQueries(q: tf.Tensor2D, s: AttentionShape): tf.Tensor3D {
  const T = q.shape[0];
  const nRep = s.numHeads / s.numKvHeads;
  const grouped = tf.transpose(tf.reshape(q, [T, s.numKvHeads, nRep, s.headDim]), [1, 2, 0, 3]);
  return tf.reshape(grouped, [s.numKvHeads, nRep * T, s.headDim]);
}

/** Inverse of groupQueries for the attention output: [nKv, nRep*T, hd] -> [T, nHeads*hd]. */
function ungroup(o: tf.Tensor3D, T: number, s: AttentionShape): tf.Tensor2D {
  const nRep = s.numHeads / s.numKvHeads;
  const heads = tf.transpose(tf.reshape(o, [s.numKvHeads, nRep, T, s.headDim]), [2, 0, 1, 3]);
  return tf.reshape(heads, [T, s.numHeads * s.headDim]);
}

/** k or v [T, nKv*hd] -> [nKv, T, hd]. */
function kvHeadsFirst(x: tf.Tensor2D, s: AttentionShape): tf.Tensor3D {
  const T = x.shape[0];
  return tf.transpose(tf.reshape(x, [T, s.numKvHeads, s.headDim]), [1, 0, 2]);
}

/** Additive mask for queries [q0, q1) against keys [k0, k1): 0 where visible, MASKED elsewhere. */
function blockMask(q0: number, q1: number, k0: number, k1: number, window: number | null): tf.Tensor2D {
  const rows = q1 - q0;
  const cols = k1 - k0;
  const m = new Float32Array(rows * cols).fill(MASKED);
  for (let i = 0; i < rows; i++) {
    const qi = q0 + i;
    // visible keys: max(k0, qi - window + 1) ≤ kj ≤ qi
    const first = Math.max(k0, window === null ? k0 : qi - window + 1);
    const last = Math.min(k1 - 1, qi);
    if (last >= first) m.fill(0, i * cols + (first - k0), i * cols + (last - k0) + 1);
  }
  return tf.tensor2d(m, [rows, cols]);
}

/**
 * softmax(q kᵀ / sqrt(hd) + mask) v over whole sequences. q [T, nHeads*hd], k/v [T, nKv*hd], all
 * at positions 0..T-1. Queries are processed in blocks (each block only against the keys it can
 * see), so the score tensor stays within `scoreBudget` elements (at least one query row per block).
 * Differentiable.
 */
export function causalAttention(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, s: AttentionShape, scoreBudget = SCORE_BUDGET): tf.Tensor2D {
  return tf.tidy(() => {
    const T = q.shape[0];
    const nRep = s.numHeads / s.numKvHeads;
    // Scale q rather than the scores: T·D multiplies instead of H·T².
    const qScaled = tf.mul(q, 1 / Math.sqrt(s.headDim)) as tf.Tensor2D;
    const keysT = tf.unstack(tf.transpose(tf.reshape(k, [T, s.numKvHeads, s.headDim]), [1, 2, 0])) as tf.Tensor2D[]; // per kv head [hd, T]
    const values = tf.unstack(kvHeadsFirst(v, s)) as tf.Tensor2D[]; // per kv head [T, hd]
    const block = Math.max(1, Math.min(T, Math.floor(scoreBudget / (s.numHeads * T))));
    const outputs: tf.Tensor2D[] = [];
    for (let q0 = 0; q0 < T; q0 += block) {
      const q1 = Math.min(T, q0 + block);
      const k0 = s.slidingWindow === null ? 0 : Math.max(0, q0 - s.slidingWindow + 1);
      const k1 = q1; // causal: no query in the block sees past q1 - 1
      const rows = q1 - q0;
      const keyCount = k1 - k0;
      const mask = blockMask(q0, q1, k0, k1, s.slidingWindow);
      const queries = tf.unstack(groupQueries(tf.slice(qScaled, [q0, 0], [rows, -1]), s)) as tf.Tensor2D[]; // per kv head [nRep*rows, hd]
      const perKvHead = queries.map((qg, g) => {
        const kt = keyCount === T ? keysT[g] : tf.slice(keysT[g], [0, k0], [-1, keyCount]);
        const vg = keyCount === T ? values[g] : tf.slice(values[g], [k0, 0], [keyCount, -1]);
        const scores = tf.reshape(tf.matMul(qg, kt), [nRep, rows, keyCount]);
        const probs = tf.reshape(tf.softmax(tf.add(scores, mask)), [nRep * rows, keyCount]);
        return tf.matMul(probs, vg) as tf.Tensor2D; // [nRep*rows, hd]
      });
      outputs.push(ungroup(tf.stack(perKvHead) as tf.Tensor3D, rows, s));
    }
    return (outputs.length === 1 ? outputs[0] : tf.concat(outputs, 0)) as tf.Tensor2D;
  });
}

/**
 * One layer's key/value cache for incremental decoding: keys and values [nKv, t, hd] of the
 * positions seen so far (only the last `slidingWindow` of them when the model has a window; keys
 * carry their RoPE rotation from when they were appended, so dropping old ones is exact).
 */
export class KvCache {
  private keys: tf.Tensor3D | null = null;
  private values: tf.Tensor3D | null = null;

  constructor(private readonly shape: AttentionShape) {}

  /** The shape it was made for (its sliding window is the number of positions it keeps). */
  get attentionShape(): AttentionShape {
    return this.shape;
  }

  /** Number of cached positions. */
  get length(): number {
    return this.keys ? this.keys.shape[1] : 0;
  }

  /** Append k/v rows [n, nKv*hd] (RoPE already applied to k). */
  append(k: tf.Tensor2D, v: tf.Tensor2D): void {
    const s = this.shape;
    const next = tf.tidy(() => {
      let keys = kvHeadsFirst(k, s);
      let values = kvHeadsFirst(v, s);
      if (this.keys && this.values) {
        keys = tf.concat([this.keys, keys], 1);
        values = tf.concat([this.values, values], 1);
      }
      const t = keys.shape[1];
      if (s.slidingWindow !== null && t > s.slidingWindow) {
        keys = tf.slice(keys, [0, t - s.slidingWindow, 0], [-1, -1, -1]);
        values = tf.slice(values, [0, t - s.slidingWindow, 0], [-1, -1, -1]);
      }
      return { keys, values };
    });
    this.keys?.dispose();
    this.values?.dispose();
    // keep: append may run inside a caller's tidy, which must not free the cache.
    this.keys = tf.keep(next.keys);
    this.values = tf.keep(next.values);
  }

  /**
   * Attention of one new query q [1, nHeads*hd] (the newest position, already appended) over
   * every cached position: all of them are visible to it, so no mask.
   */
  attend(q: tf.Tensor2D): tf.Tensor2D {
    if (!this.keys || !this.values) throw new Error('KvCache.attend before append');
    const keys = this.keys;
    const values = this.values;
    const s = this.shape;
    return tf.tidy(() => {
      const scores = tf.mul(tf.matMul(groupQueries(q, s), keys, false, true), 1 / Math.sqrt(s.headDim));
      return ungroup(tf.matMul(tf.softmax(scores), values), 1, s);
    });
  }

  reset(): void {
    this.keys?.dispose();
    this.values?.dispose();
    this.keys = null;
    this.values = null;
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax attention as a decoder layer's attention part (q/k/v projections, RoPE, o_proj)

/** The model's own attention shape (its sliding window, if any). */
export function attentionShape(c: ModelConfig): AttentionShape {
  return { numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim, slidingWindow: c.slidingWindow };
}

/** The attention shape of a `window` layer: the model's own sliding window, if any, caps W further. */
export function windowShape(c: ModelConfig, window: number): AttentionShape {
  return { ...attentionShape(c), slidingWindow: c.slidingWindow === null ? window : Math.min(window, c.slidingWindow) };
}

/** q, k, v projections (+ biases) of the normed input x [T, hidden]. */
export function qkvProjections(x: tf.Tensor2D, layer: LayerTensors): { q: tf.Tensor2D; k: tf.Tensor2D; v: tf.Tensor2D } {
  return { q: linear(x, layer.q, layer.qBias), k: linear(x, layer.k, layer.kBias), v: linear(x, layer.v, layer.vBias) };
}

/** q and k rotated by RoPE (cos/sin [T, headDim] for the tokens' positions). */
function rotatedQkv(x: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, cos: tf.Tensor2D, sin: tf.Tensor2D): { q: tf.Tensor2D; k: tf.Tensor2D; v: tf.Tensor2D } {
  const { q, k, v } = qkvProjections(x, layer);
  return { q: applyRope(q, c.numHeads, c.headDim, cos, sin), k: applyRope(k, c.numKvHeads, c.headDim, cos, sin), v };
}

/**
 * Softmax attention block over a whole sequence at positions 0..T-1 (cos/sin [T, headDim]):
 * normed input x [T, hidden] -> o [T, hidden] after o_proj. `shape` defaults to the model's own
 * (a `window` layer passes `windowShape`).
 */
export function softmaxAttentionBlock(x: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, cos: tf.Tensor2D, sin: tf.Tensor2D, shape: AttentionShape = attentionShape(c)): tf.Tensor2D {
  return tf.tidy(() => {
    const { q, k, v } = rotatedQkv(x, layer, c, cos, sin);
    return linear(causalAttention(q, k, v, shape), layer.o);
  });
}

/**
 * Softmax attention block through a layer's KV cache (decoding): one token attends to the cache
 * after appending itself; a first block of tokens (the cache is empty then) runs causal attention
 * over itself and fills the cache. cos/sin are for the tokens' absolute positions.
 */
export function cachedSoftmaxAttentionBlock(x: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, cos: tf.Tensor2D, sin: tf.Tensor2D, cache: KvCache): tf.Tensor2D {
  const { q, k, v } = rotatedQkv(x, layer, c, cos, sin);
  let attn: tf.Tensor2D;
  if (x.shape[0] === 1) {
    cache.append(k, v);
    attn = cache.attend(q);
  } else {
    if (cache.length !== 0) throw new Error('cachedSoftmaxAttentionBlock: several tokens need an empty cache');
    attn = causalAttention(q, k, v, cache.attentionShape);
    cache.append(k, v);
  }
  return linear(attn, layer.o);
}
