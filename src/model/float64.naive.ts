/**
 * Float64 building blocks shared by the slow references (`*.naive.ts`): plain loops over
 * Float64Array, straight from the definitions, no tfjs.
 */
import type { Matrix } from '../formats/weights.ts';

/** σ(z), stable for large |z|. */
export const sigmoid = (z: number) => (z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z)));

export function matVec(w: Matrix, x: ArrayLike<number>, bias: Float32Array | null = null): Float64Array {
  const out = new Float64Array(w.rows);
  for (let o = 0; o < w.rows; o++) {
    let acc = bias ? bias[o]! : 0;
    for (let i = 0; i < w.cols; i++) acc += w.data[o * w.cols + i]! * x[i]!;
    out[o] = acc;
  }
  return out;
}

export function rmsNorm(x: ArrayLike<number>, g: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i]! * x[i]!;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return Float64Array.from({ length: x.length }, (_, i) => x[i]! * inv * g[i]!);
}

/** HF rotate-half RoPE at position `pos` (plain RoPE, θ = rope_theta). */
export function rope(x: Float64Array, heads: number, hd: number, pos: number, theta: number): Float64Array {
  const half = hd / 2;
  const out = new Float64Array(x.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const angle = pos / Math.pow(theta, (2 * i) / hd);
      const a = x[h * hd + i]!;
      const b = x[h * hd + i + half]!;
      out[h * hd + i] = a * Math.cos(angle) - b * Math.sin(angle);
      out[h * hd + i + half] = b * Math.cos(angle) + a * Math.sin(angle);
    }
  }
  return out;
}

/** Euclidean norm. */
export const norm = (a: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return Math.sqrt(s);
};
