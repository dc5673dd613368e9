/**
 * The tfjs building blocks (src/model/nn.ts) against slow, obvious float64 references written as
 * plain loops, plus llama3 RoPE scaling against numbers from HF's `_compute_llama3_parameters`,
 * and a gradient check (distillation differentiates through these blocks).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/runtime/backend.ts';
import '../src/runtime/gradients.ts'; // registers tfjs-core's gradients (the Node bundle ships none)
import { applyRope, linear, repeatKv, rmsNorm, ropeCosSin, ropeInvFreq, swigluMlp, transposeHost, uploadLayer, uploadMatrix, disposeLayer } from '../src/model/nn.ts';
import type { ModelConfig } from '../src/formats/config.ts';
import { maxAbsDiff, randoms } from './helpers/numeric.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

function config(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return {
    architecture: 'llama', hiddenSize: 16, intermediateSize: 24, numLayers: 1, numHeads: 4, numKvHeads: 2, headDim: 8,
    vocabSize: 32, maxPositionEmbeddings: 128, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null, slidingWindow: null,
    tieWordEmbeddings: true, attentionBias: false, bosTokenId: 1, eosTokenIds: [2], torchDtype: null, ...overrides,
  };
}

// ---- slow references (float64, loops) ----

function refRmsNorm(x: ArrayLike<number>, T: number, D: number, w: Float32Array, eps: number): Float64Array {
  const out = new Float64Array(T * D);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let d = 0; d < D; d++) ss += x[t * D + d] ** 2;
    const inv = 1 / Math.sqrt(ss / D + eps);
    for (let d = 0; d < D; d++) out[t * D + d] = x[t * D + d] * inv * w[d];
  }
  return out;
}

function refLinear(x: ArrayLike<number>, T: number, inDim: number, w: ArrayLike<number>, outDim: number, bias?: ArrayLike<number>): Float64Array {
  const out = new Float64Array(T * outDim);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < outDim; o++) {
      let s = bias ? bias[o] : 0;
      for (let i = 0; i < inDim; i++) s += x[t * inDim + i] * w[o * inDim + i];
      out[t * outDim + o] = s;
    }
  }
  return out;
}

/** HF rotate-half RoPE, head by head: pair (j, j + hd/2) rotated by angle pos·θ^(-2j/hd). */
function refRope(x: ArrayLike<number>, positions: number[], nHeads: number, hd: number, theta: number): Float64Array {
  const out = new Float64Array(x.length);
  const half = hd / 2;
  positions.forEach((p, t) => {
    for (let h = 0; h < nHeads; h++) {
      const base = t * nHeads * hd + h * hd;
      for (let j = 0; j < half; j++) {
        const angle = p / Math.pow(theta, (2 * j) / hd);
        const a = x[base + j];
        const b = x[base + j + half];
        out[base + j] = a * Math.cos(angle) - b * Math.sin(angle);
        out[base + j + half] = b * Math.cos(angle) + a * Math.sin(angle);
      }
    }
  });
  return out;
}

const silu = (z: number) => z / (1 + Math.exp(-z));

/** A PyTorch-oriented [out, in] host matrix uploaded as a LinearWeight. */
const W = (data: Float32Array, out: number, inDim: number) => uploadMatrix({ data, rows: out, cols: inDim });

describe('rmsNorm', () => {
  it('matches the float64 reference for several shapes', () => {
    for (const [T, D, seed] of [[1, 8, 1], [5, 64, 2], [7, 96, 3]]) {
      const x = randoms(T * D, seed, 3);
      const w = randoms(D, seed + 100, 1);
      const got = tf.tidy(() => rmsNorm(tf.tensor2d(x, [T, D]), tf.tensor1d(w), 1e-5).dataSync());
      expect(maxAbsDiff(got, refRmsNorm(x, T, D, w, 1e-5))).toBeLessThan(2e-6 * 3);
    }
  });
  it('eps matters for tiny inputs (zero input stays zero, no NaN)', () => {
    const got = tf.tidy(() => rmsNorm(tf.zeros([2, 4]) as tf.Tensor2D, tf.ones([4]) as tf.Tensor1D, 1e-6).dataSync());
    expect(Array.from(got)).toEqual(new Array(8).fill(0));
  });
});

describe('linear', () => {
  it('is x·Wᵀ (+ bias) for W [out, in] uploaded with uploadMatrix', () => {
    for (const [T, inDim, outDim] of [[3, 5, 4], [1, 64, 172], [7, 33, 33]]) {
      const x = randoms(T * inDim, 7);
      const w = randoms(outDim * inDim, 8);
      const b = randoms(outDim, 9);
      const got = tf.tidy(() => linear(tf.tensor2d(x, [T, inDim]), W(w, outDim, inDim)).dataSync());
      expect(maxAbsDiff(got, refLinear(x, T, inDim, w, outDim))).toBeLessThan(1e-5);
      const gotB = tf.tidy(() => linear(tf.tensor2d(x, [T, inDim]), W(w, outDim, inDim), tf.tensor1d(b)).dataSync());
      expect(maxAbsDiff(gotB, refLinear(x, T, inDim, w, outDim, b))).toBeLessThan(1e-5);
    }
  });
  it('uploadMatrix stores the transpose [in, out]; a weight of the wrong orientation is an error', () => {
    const w = randoms(5 * 3, 12);
    const t = transposeHost(w, 5, 3);
    for (let r = 0; r < 5; r++) for (let c = 0; c < 3; c++) expect(t[c * 5 + r]).toBe(w[r * 3 + c]);
    const big = randoms(70 * 45, 13); // crosses the 32-wide tiles
    const tb = transposeHost(big, 70, 45);
    expect(tb[44 * 70 + 69]).toBe(big[69 * 45 + 44]);
    expect(transposeHost(tb, 45, 70)).toEqual(big);
    const up = W(w, 5, 3);
    expect(up.shape).toEqual([3, 5]);
    expect(() => tf.tidy(() => linear(tf.zeros([2, 5]) as tf.Tensor2D, up))).toThrow(/expected \[in, out\]/);
    up.dispose();
  });
});

describe('RoPE', () => {
  it('inverse frequencies are θ^(-2i/d) without scaling', () => {
    const inv = ropeInvFreq(config({ headDim: 8, ropeTheta: 10000 }));
    expect(Array.from(inv)).toEqual([1, 0.1, 0.01, 0.001].map(Math.fround));
  });

  it('llama3 scaling reproduces HF _compute_llama3_parameters (Llama-3.2-1B settings)', () => {
    // Values from HF's formula evaluated in float64 (numpy) for θ 500000, head_dim 64, factor 32,
    // low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 8192.
    // Indices 0-14: high frequency (unchanged); 15-17: the smoothly interpolated band; 18-31: divided by 32.
    const expected: Record<number, number> = {
      0: 1.0,
      14: 0.0032114459947525913,
      15: 0.001290547928209264,
      16: 0.00042955679655936815,
      17: 9.70828780262767e-5,
      18: 1.9461638184831125e-5,
      31: 9.418306725434911e-8,
    };
    const inv = ropeInvFreq(
      config({
        headDim: 64,
        ropeTheta: 500000,
        ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
      }),
    );
    expect(inv.length).toBe(32);
    for (const [i, v] of Object.entries(expected)) expect(Math.abs(inv[Number(i)] - v) / v).toBeLessThan(1e-6);
    // The unscaled frequency of index 18 is 32× larger: long wavelengths were divided by the factor.
    expect(inv[18] * 32).toBeCloseTo(1 / Math.pow(500000, 36 / 64), 9);
  });

  it('cos/sin tables use the HF layout cat(freqs, freqs)', () => {
    const c = config({ headDim: 4, ropeTheta: 100 });
    const { cos, sin } = ropeCosSin(c, [0, 3]);
    const cosD = cos.dataSync();
    const sinD = sin.dataSync();
    cos.dispose();
    sin.dispose();
    const ang = [3 * 1, 3 * 0.1];
    expect(Array.from(cosD.slice(0, 4))).toEqual([1, 1, 1, 1]);
    expect(maxAbsDiff(cosD.slice(4), [Math.cos(ang[0]), Math.cos(ang[1]), Math.cos(ang[0]), Math.cos(ang[1])])).toBeLessThan(1e-7);
    expect(maxAbsDiff(sinD.slice(4), [Math.sin(ang[0]), Math.sin(ang[1]), Math.sin(ang[0]), Math.sin(ang[1])])).toBeLessThan(1e-7);
  });

  it('applyRope matches the per-head rotate-half reference and preserves norms', () => {
    const nHeads = 3;
    const hd = 8;
    const positions = [0, 1, 2, 7, 50, 511];
    const c = config({ headDim: hd });
    const x = randoms(positions.length * nHeads * hd, 11, 2);
    const { cos, sin } = ropeCosSin(c, positions);
    const got = tf.tidy(() => applyRope(tf.tensor2d(x, [positions.length, nHeads * hd]), nHeads, hd, cos, sin).dataSync());
    cos.dispose();
    sin.dispose();
    const ref = refRope(x, positions, nHeads, hd, c.ropeTheta);
    expect(maxAbsDiff(got, ref)).toBeLessThan(5e-6);
    // A rotation: every head vector keeps its length.
    for (let r = 0; r < positions.length * nHeads; r++) {
      let a = 0;
      let b = 0;
      for (let j = 0; j < hd; j++) {
        a += x[r * hd + j] ** 2;
        b += got[r * hd + j] ** 2;
      }
      expect(Math.abs(Math.sqrt(a) - Math.sqrt(b))).toBeLessThan(1e-5);
    }
  });
});

describe('repeatKv', () => {
  it('query head i reads kv head floor(i / nRep)', () => {
    for (const [nKv, nRep] of [[2, 1], [2, 2], [2, 3], [1, 4]]) {
      const hd = 3;
      const T = 2;
      const x = randoms(T * nKv * hd, 20 + nRep);
      const got = tf.tidy(() => repeatKv(tf.tensor2d(x, [T, nKv * hd]), nKv, nRep, hd).dataSync());
      const H = nKv * nRep;
      expect(got.length).toBe(T * H * hd);
      for (let t = 0; t < T; t++)
        for (let i = 0; i < H; i++)
          for (let j = 0; j < hd; j++) expect(got[t * H * hd + i * hd + j]).toBe(x[t * nKv * hd + Math.floor(i / nRep) * hd + j]);
    }
  });
});

describe('swigluMlp', () => {
  it('is down(silu(gate x) ⊙ up x)', () => {
    const [T, D, I] = [4, 6, 10];
    const x = randoms(T * D, 30);
    const g = randoms(I * D, 31);
    const u = randoms(I * D, 32);
    const d = randoms(D * I, 33);
    const got = tf.tidy(() =>
      swigluMlp(tf.tensor2d(x, [T, D]), W(g, I, D), W(u, I, D), W(d, D, I)).dataSync(),
    );
    const gx = refLinear(x, T, D, g, I);
    const ux = refLinear(x, T, D, u, I);
    const hidden = gx.map((z, i) => silu(z) * ux[i]);
    expect(maxAbsDiff(got, refLinear(hidden, T, I, d, D))).toBeLessThan(1e-5);
  });
});

describe('differentiability', () => {
  it('gradients through rmsNorm → rope → linear → swiglu agree with float64 finite differences', () => {
    const [T, D, I, nHeads, hd] = [3, 8, 12, 2, 4];
    const c = config({ hiddenSize: D, headDim: hd });
    const x = randoms(T * D, 40);
    const w = randoms(D, 41, 1);
    const q = randoms(D * D, 42, 0.5);
    const g = randoms(I * D, 43, 0.5);
    const u = randoms(I * D, 44, 0.5);
    const d = randoms(D * I, 45, 0.5);
    const r = randoms(T * D, 46);
    const positions = [0, 1, 2];
    // loss(x) = Σ r ⊙ mlp(rope(linear(rmsNorm(x), q)))
    const { cos, sin } = ropeCosSin(c, positions);
    const grad = tf.tidy(() => {
      const f = (xt: tf.Tensor) => {
        const h = applyRope(linear(rmsNorm(xt as tf.Tensor2D, tf.tensor1d(w), 1e-5), W(q, D, D)), nHeads, hd, cos, sin);
        const m = swigluMlp(h, W(g, I, D), W(u, I, D), W(d, D, I));
        return tf.sum(tf.mul(m, tf.tensor2d(r, [T, D])));
      };
      return tf.grad(f)(tf.tensor2d(x, [T, D])).dataSync();
    });
    cos.dispose();
    sin.dispose();
    const loss64 = (xs: Float64Array) => {
      const n = refRmsNorm(xs, T, D, w, 1e-5);
      const h = refRope(refLinear(n, T, D, q, D), positions, nHeads, hd, c.ropeTheta);
      const gx = refLinear(h, T, D, g, I);
      const ux = refLinear(h, T, D, u, I);
      const m = refLinear(gx.map((z, i) => silu(z) * ux[i]), T, I, d, D);
      return m.reduce((s, v, i) => s + v * r[i], 0);
    };
    const eps = 1e-4;
    for (const i of [0, 5, 11, 23]) {
      const plus = Float64Array.from(x);
      const minus = Float64Array.from(x);
      plus[i] += eps;
      minus[i] -= eps;
      const fd = (loss64(plus) - loss64(minus)) / (2 * eps);
      expect(Math.abs(grad[i] - fd)).toBeLessThan(2e-3 * Math.max(1, Math.abs(fd)));
    }
  });
});

describe('uploadLayer / disposeLayer', () => {
  it('uploads every field with its shape and frees them all', () => {
    const m = (rows: number, cols: number, seed: number) => ({ data: randoms(rows * cols, seed), rows, cols });
    const before = tf.memory().numTensors;
    const lt = uploadLayer({
      inputNorm: randoms(8, 1), q: m(8, 8, 2), k: m(4, 8, 3), v: m(4, 8, 4), o: m(8, 8, 5),
      qBias: randoms(8, 6), kBias: null, vBias: randoms(4, 7), postNorm: randoms(8, 8),
      gate: m(12, 8, 9), up: m(12, 8, 10), down: m(8, 12, 11),
    });
    expect(lt.k.shape).toEqual([8, 4]); // LinearWeight: [in, out]
    expect(lt.down.shape).toEqual([12, 8]);
    expect(lt.kBias).toBeNull();
    expect(lt.vBias!.shape).toEqual([4]);
    expect(tf.memory().numTensors - before).toBe(11);
    disposeLayer(lt);
    expect(tf.memory().numTensors).toBe(before);
  });
});
