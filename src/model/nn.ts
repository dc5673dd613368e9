/**
 * tfjs building blocks of a Llama-family decoder layer, shared by the teacher (softmax attention)
 * and the SYNAXIM student (gated D×D state). Everything here is pure tfjs and differentiable, so
 * distillation can take gradients through it. Activations are 2-D: [T tokens, features], with
 * the heads of a projection laid out side by side in the feature dimension ([T, nHeads*headDim]),
 * as in HF's `q_proj(x)` before `.view(..., n_heads, head_dim)`.
 *
 * Names follow HF modeling_llama: rms_norm, rotate_half / apply_rotary_pos_emb, repeat_kv, the
 * SwiGLU MLP `down_proj(silu(gate_proj(x)) * up_proj(x))`.
 */
import { ropeInvFreq, ropeTables } from './rope.ts';
export { ropeInvFreq };
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../formats/config.ts';
import type { LayerWeights, Matrix } from '../formats/weights.ts';

/** RMSNorm: x / sqrt(mean(x²) + eps) * weight, over the last axis. x [T, D], weight [D]. */
export function rmsNorm(x: tf.Tensor2D, weight: tf.Tensor1D, eps: number): tf.Tensor2D {
  return tf.tidy(() => {
    const meanSquare = tf.mean(tf.square(x), -1, true);
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(meanSquare, eps))), weight) as tf.Tensor2D;
  });
}

/**
 * A linear layer's weight on the backend, stored TRANSPOSED: [in_features, out_features].
 * tfjs-wasm's matMul is fast only for plain `x · w` (XNNPACK); with `transposeB` it takes a slow
 * path (~20× slower at these shapes), so `uploadMatrix` transposes the PyTorch-oriented [out, in]
 * host matrix once, on upload. Make these only with `uploadMatrix`/`uploadLayer`.
 */
export type LinearWeight = tf.Tensor2D;

/** nn.Linear: x · Wᵀ (+ bias) for x [T, in], `w` = Wᵀ [in, out] from `uploadMatrix`, bias [out]. */
export function linear(x: tf.Tensor2D, w: LinearWeight, bias?: tf.Tensor1D | null): tf.Tensor2D {
  if (x.shape[1] !== w.shape[0]) {
    throw new Error(`linear: input has ${x.shape[1]} features but the weight is [${w.shape.join(', ')}] (expected [in, out] from uploadMatrix)`);
  }
  return tf.tidy(() => {
    const y = tf.matMul(x, w);
    return (bias ? tf.add(y, bias) : y) as tf.Tensor2D;
  });
}

/** Row-major [rows, cols] -> [cols, rows], in cache-friendly tiles. */
export function transposeHost(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  const TILE = 32;
  for (let r0 = 0; r0 < rows; r0 += TILE) {
    const r1 = Math.min(rows, r0 + TILE);
    for (let c0 = 0; c0 < cols; c0 += TILE) {
      const c1 = Math.min(cols, c0 + TILE);
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[c * rows + r] = data[r * cols + c];
    }
  }
  return out;
}

/**
 * cos/sin tables for the given absolute positions, HF layout: emb = cat(freqs, freqs), so column
 * j and j + headDim/2 share a frequency. Angles are computed in float64 on the host.
 */
export function ropeCosSin(config: ModelConfig, positions: number[]): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  const { cos, sin } = ropeTables(config, positions);
  return { cos: tf.tensor2d(cos, [positions.length, config.headDim]), sin: tf.tensor2d(sin, [positions.length, config.headDim]) };
}

/** rotate_half as a matrix: x · R = [-x2, x1] for a head vector x = [x1, x2]. Cached per head size. */
const rotateHalfMatrices = new Map<number, Float32Array>();
function rotateHalfMatrix(headDim: number): Float32Array {
  let r = rotateHalfMatrices.get(headDim);
  if (!r) {
    const half = headDim / 2;
    r = new Float32Array(headDim * headDim);
    for (let j = 0; j < half; j++) {
      r[(j + half) * headDim + j] = -1; // output j takes -x[j + half]
      r[j * headDim + j + half] = 1; // output j + half takes x[j]
    }
    rotateHalfMatrices.set(headDim, r);
  }
  return r;
}

/**
 * Rotary embedding in HF rotate-half form: x·cos + rotate_half(x)·sin per head, with
 * rotate_half([x1, x2]) = [-x2, x1]. x [T, nHeads*headDim], cos/sin [T, headDim].
 * rotate_half is a product with a signed permutation matrix (exact: one nonzero term per output),
 * one fast 2-D matmul instead of split/neg/concat, which cost more in tfjs-wasm.
 */
export function applyRope(x: tf.Tensor2D, nHeads: number, headDim: number, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const T = x.shape[0];
    const rotated = tf.reshape(tf.matMul(tf.reshape(x, [T * nHeads, headDim]), tf.tensor2d(rotateHalfMatrix(headDim), [headDim, headDim])), [T, nHeads, headDim]);
    const heads = tf.reshape(x, [T, nHeads, headDim]);
    const c = tf.reshape(cos, [T, 1, headDim]);
    const s = tf.reshape(sin, [T, 1, headDim]);
    return tf.reshape(tf.add(tf.mul(heads, c), tf.mul(rotated, s)), [T, nHeads * headDim]) as tf.Tensor2D;
  });
}

/**
 * GQA: repeat each kv head nRep times so query head i reads kv head ⌊i / nRep⌋.
 * x [T, nKv*headDim] -> [T, nKv*nRep*headDim].
 */
export function repeatKv(x: tf.Tensor2D, nKv: number, nRep: number, headDim: number): tf.Tensor2D {
  if (nRep === 1) return tf.clone(x);
  return tf.tidy(() => {
    const T = x.shape[0];
    const expanded = tf.tile(tf.reshape(x, [T, nKv, 1, headDim]), [1, 1, nRep, 1]);
    return tf.reshape(expanded, [T, nKv * nRep * headDim]) as tf.Tensor2D;
  });
}

/** SiLU(x) = x·σ(x). */
export function silu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(x, tf.sigmoid(x)));
}

/** SwiGLU MLP: down(silu(gate(x)) ⊙ up(x)). Weights are LinearWeights (from uploadMatrix). */
export function swigluMlp(x: tf.Tensor2D, gate: LinearWeight, up: LinearWeight, down: LinearWeight): tf.Tensor2D {
  return tf.tidy(() => {
    const hidden = tf.mul(silu(linear(x, gate)), linear(x, up)) as tf.Tensor2D;
    return linear(hidden, down);
  });
}

/** One decoder layer's weights as backend tensors (same fields as `LayerWeights`; matrices transposed, see LinearWeight). */
export interface LayerTensors {
  inputNorm: tf.Tensor1D;
  q: LinearWeight;
  k: LinearWeight;
  v: LinearWeight;
  o: LinearWeight;
  qBias: tf.Tensor1D | null;
  kBias: tf.Tensor1D | null;
  vBias: tf.Tensor1D | null;
  postNorm: tf.Tensor1D;
  gate: LinearWeight;
  up: LinearWeight;
  down: LinearWeight;
}

/** Upload a host matrix [out, in] (PyTorch nn.Linear orientation) as a LinearWeight [in, out]. */
export function uploadMatrix(m: Matrix): LinearWeight {
  if (m.data.length !== m.rows * m.cols) throw new Error(`uploadMatrix: ${m.data.length} values for [${m.rows}, ${m.cols}]`);
  return tf.tensor2d(transposeHost(m.data, m.rows, m.cols), [m.cols, m.rows]);
}

function uploadVector(v: Float32Array | null): tf.Tensor1D | null {
  return v ? tf.tensor1d(v) : null;
}

/** Copy one layer's host weights to the backend. Pair with `disposeLayer`. */
export function uploadLayer(lw: LayerWeights): LayerTensors {
  return {
    inputNorm: tf.tensor1d(lw.inputNorm),
    q: uploadMatrix(lw.q),
    k: uploadMatrix(lw.k),
    v: uploadMatrix(lw.v),
    o: uploadMatrix(lw.o),
    qBias: uploadVector(lw.qBias),
    kBias: uploadVector(lw.kBias),
    vBias: uploadVector(lw.vBias),
    postNorm: tf.tensor1d(lw.postNorm),
    gate: uploadMatrix(lw.gate),
    up: uploadMatrix(lw.up),
    down: uploadMatrix(lw.down),
  };
}

export function disposeLayer(t: LayerTensors): void {
  for (const v of Object.values(t)) if (v) (v as tf.Tensor).dispose();
}
