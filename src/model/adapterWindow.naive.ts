/**
 * The slow, obvious float64 reference of one adapter-window layer's attention block, token by
 * token, straight from the definition (student.ts `AdapterPolicy.window`):
 *
 *   gate (adapter-v1, no RoPE): s_t = mean_h q_{t,h}·k_{t,h}/√hd, g_t = σ(s_t·gate_scale + gate_bias),
 *     M_t = g_t M_{t−1} + (1−g_t) k̂_t v̂_tᵀ (k̂ = k/(‖k‖+1e-8), v̂ = v/(‖v‖+1e-8)·‖x_t‖, GQA-expanded),
 *     o^gate_t = σ(mix_alpha)·((W_o q_tᵀM_t) ⊙ output_scale) + (1−σ(mix_alpha))·x_t
 *   window (RoPE as the teacher): o^win_t = W_o softmax over j ∈ (t−W, t] of q_t·k_j/√hd, values v_j
 *   o_t = σ(window_mix)·o^win_t + (1 − σ(window_mix))·o^gate_t
 *
 * x is the layer's normed input [T*hidden]. Plain Float64Array loops, no tfjs: what the fast path
 * (chunked gate + blocked window attention on tfjs, and the recurrent decoder) must equal.
 */
import type { ModelConfig } from '../formats/config.ts';
import type { LayerWeights } from '../formats/weights.ts';
import type { AdapterLayerParams } from '../formats/adapter.ts';
import { matVec, norm, rope, sigmoid } from './float64.naive.ts';

/** o [T*hidden] (float64) of an adapter-window layer for normed input x [T*hidden] at positions 0..T−1. */
export function naiveAdapterWindowBlock(x: Float32Array, lw: LayerWeights, c: ModelConfig, p: AdapterLayerParams, window: number): Float64Array {
  if (c.ropeScaling) throw new Error('adapterWindow.naive: rope_scaling is not supported by the float64 reference');
  if (p.windowMix === undefined) throw new Error('adapterWindow.naive: the parameters have no window_mix');
  const H = c.hiddenSize;
  const T = x.length / H;
  const { numHeads: nH, numKvHeads: nKv, headDim: hd } = c;
  const D = nH * hd;
  const nRep = nH / nKv;
  const W = Math.min(window, c.slidingWindow ?? Infinity);
  const alpha = sigmoid(p.mixAlpha);
  const lambda = sigmoid(p.windowMix);
  const M = new Float64Array(D * D);
  const keys: Float64Array[] = []; // RoPE'd, per position [nKv*hd]
  const values: Float64Array[] = [];
  const o = new Float64Array(T * H);
  for (let t = 0; t < T; t++) {
    const xt = x.subarray(t * H, (t + 1) * H);
    const q = matVec(lw.q, xt, lw.qBias);
    const k = matVec(lw.k, xt, lw.kBias);
    const v = matVec(lw.v, xt, lw.vBias);
    // Gate part (no RoPE).
    const kE = new Float64Array(D);
    const vE = new Float64Array(D);
    for (let h = 0; h < nH; h++) {
      const src = Math.floor(h / nRep);
      for (let i = 0; i < hd; i++) {
        kE[h * hd + i] = k[src * hd + i]!;
        vE[h * hd + i] = v[src * hd + i]!;
      }
    }
    let s = 0;
    for (let h = 0; h < nH; h++) {
      let dot = 0;
      for (let i = 0; i < hd; i++) dot += q[h * hd + i]! * kE[h * hd + i]!;
      s += dot / Math.sqrt(hd) / nH;
    }
    const g = sigmoid(s * p.gateScale + p.gateBias);
    const kn = norm(kE) + 1e-8;
    const vScale = norm(xt) / (norm(vE) + 1e-8);
    for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) M[i * D + j] = g * M[i * D + j]! + (1 - g) * (kE[i]! / kn) * vE[j]! * vScale;
    const r = new Float64Array(D);
    for (let j = 0; j < D; j++) {
      let acc = 0;
      for (let i = 0; i < D; i++) acc += q[i]! * M[i * D + j]!;
      r[j] = acc;
    }
    const gateProj = matVec(lw.o, r);
    // Window part (RoPE, softmax over the last W positions).
    const qRot = rope(q, nH, hd, t, c.ropeTheta);
    keys.push(rope(k, nKv, hd, t, c.ropeTheta));
    values.push(v);
    const first = Math.max(0, t - W + 1);
    const attn = new Float64Array(D);
    for (let head = 0; head < nH; head++) {
      const gk = Math.floor(head / nRep);
      const scores: number[] = [];
      for (let j = first; j <= t; j++) {
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += qRot[head * hd + d]! * keys[j]![gk * hd + d]!;
        scores.push(dot / Math.sqrt(hd));
      }
      const max = Math.max(...scores);
      const e = scores.map((z) => Math.exp(z - max));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let j = first; j <= t; j++) for (let d = 0; d < hd; d++) attn[head * hd + d]! += (e[j - first]! / sum) * values[j]![gk * hd + d]!;
    }
    const winProj = matVec(lw.o, attn);
    for (let i = 0; i < H; i++) {
      const gated = alpha * gateProj[i]! * p.outputScale[i]! + (1 - alpha) * xt[i]!;
      o[t * H + i] = lambda * winProj[i]! + (1 - lambda) * gated;
    }
  }
  return o;
}
