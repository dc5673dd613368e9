/**
 * The slow, obvious float64 reference of ONE decoder layer (decoderLayer.ts `policyLayer`) for
 * every attention policy, token by token, straight from the definitions (policy.ts):
 *
 *   x_t = RMSNorm(h_t);  h'_t = h_t + o_t;  h''_t = h'_t + W_down(silu(W_gate y_t) ⊙ W_up y_t),  y_t = RMSNorm(h'_t)
 *
 *   softmax (teacher / window W): o_t = W_o Σ_{j ∈ (t−W, t]} softmax_j(q̃_t·k̃_j/√hd) v_j  (q̃, k̃ with RoPE; GQA)
 *   gated: s_t = mean_h q_{t,h}·k_{t,h}/√hd,  M_t = g_t M_{t−1} + (1−g_t) k̂_t v̂_tᵀ,  r_t = q_tᵀ M_t
 *     k̂ = k/(‖k‖+1e-8), v̂ = v/(‖v‖+1e-8)·‖x_t‖ (k, v repeated per GQA group)
 *     engine: q, k with RoPE, g_t = σ(s_t), o_t = W_o r_t
 *     fixed:  g_t = 0.9, o_t = 0.1·W_o r_t
 *     adapter: g_t = σ(s_t·gate_scale + gate_bias), o_t = σ(α)·((W_o r_t) ⊙ output_scale) + (1−σ(α))·x_t
 *     adapter-window: o_t = σ(window_mix)·o^window_t + (1−σ(window_mix))·o^adapter_t
 *
 * Plain Float64Array loops, no tfjs, positions 0..T−1, plain RoPE (no rope_scaling): for tests.
 */
import type { ModelConfig } from '../formats/config.ts';
import type { LayerWeights } from '../formats/weights.ts';
import type { AdapterLayerParams } from '../formats/adapter.ts';
import { FIXED_GATE, FIXED_OUTPUT_SCALE } from './policy.ts';
import { matVec, norm, rmsNorm, rope, sigmoid } from './float64.naive.ts';

/** A layer policy with plain numbers (policy.ts `LayerPolicy` holds tensors). */
export type NaiveLayerPolicy =
  | { kind: 'teacher' }
  | { kind: 'window'; window: number }
  | { kind: 'engine' }
  | { kind: 'fixed' }
  | { kind: 'adapter'; params: AdapterLayerParams; window?: number };

/** k or v [nKv*hd] repeated per GQA group -> [nHeads*hd]. */
function repeatKv(x: Float64Array, c: ModelConfig): Float64Array {
  const nRep = c.numHeads / c.numKvHeads;
  return Float64Array.from({ length: c.numHeads * c.headDim }, (_, i) => x[Math.floor(Math.floor(i / c.headDim) / nRep) * c.headDim + (i % c.headDim)]!);
}

/** h'' [T*hidden] (float64) of one layer with `policy` for its input h [T*hidden] at positions 0..T−1. */
export function naiveDecoderLayer(h: Float32Array, lw: LayerWeights, c: ModelConfig, policy: NaiveLayerPolicy): Float64Array {
  if (c.ropeScaling) throw new Error('decoderLayer.naive: rope_scaling is not supported by the float64 reference');
  const H = c.hiddenSize;
  const T = h.length / H;
  const { numHeads: nH, numKvHeads: nKv, headDim: hd } = c;
  const D = nH * hd;
  const nRep = nH / nKv;
  const window = policy.kind === 'window' ? policy.window : policy.kind === 'adapter' ? (policy.window ?? null) : policy.kind === 'teacher' ? Infinity : null;
  const W = window === null ? null : Math.min(window, c.slidingWindow ?? Infinity);
  const M = new Float64Array(D * D);
  const keys: Float64Array[] = []; // RoPE'd, per position [nKv*hd]
  const values: Float64Array[] = [];
  const out = new Float64Array(T * H);
  for (let t = 0; t < T; t++) {
    const ht = h.subarray(t * H, (t + 1) * H);
    const x = rmsNorm(ht, lw.inputNorm, c.rmsNormEps);
    const q = matVec(lw.q, x, lw.qBias);
    const k = matVec(lw.k, x, lw.kBias);
    const v = matVec(lw.v, x, lw.vBias);
    const qRot = rope(q, nH, hd, t, c.ropeTheta);
    const kRot = rope(k, nKv, hd, t, c.ropeTheta);
    keys.push(kRot);
    values.push(v);

    // Softmax over positions (t − W, t] (teacher, window, adapter-window).
    let softmaxOut: Float64Array | null = null;
    if (W !== null) {
      const first = Number.isFinite(W) ? Math.max(0, t - W + 1) : 0;
      const attn = new Float64Array(D);
      for (let head = 0; head < nH; head++) {
        const g = Math.floor(head / nRep);
        const scores: number[] = [];
        for (let j = first; j <= t; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += qRot[head * hd + d]! * keys[j]![g * hd + d]!;
          scores.push(dot / Math.sqrt(hd));
        }
        const max = Math.max(...scores);
        const e = scores.map((z) => Math.exp(z - max));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let j = first; j <= t; j++) for (let d = 0; d < hd; d++) attn[head * hd + d]! += (e[j - first]! / sum) * values[j]![g * hd + d]!;
      }
      softmaxOut = matVec(lw.o, attn);
    }

    let o: Float64Array;
    if (policy.kind === 'teacher' || policy.kind === 'window') {
      o = softmaxOut!;
    } else {
      const qg = policy.kind === 'engine' ? qRot : q;
      const kE = repeatKv(policy.kind === 'engine' ? kRot : k, c);
      const vE = repeatKv(v, c);
      let s = 0;
      for (let i = 0; i < D; i++) s += qg[i]! * kE[i]!;
      s /= nH * Math.sqrt(hd);
      const g = policy.kind === 'fixed' ? FIXED_GATE : sigmoid(policy.kind === 'adapter' ? s * policy.params.gateScale + policy.params.gateBias : s);
      const kn = norm(kE) + 1e-8;
      const vScale = norm(x) / (norm(vE) + 1e-8);
      for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) M[i * D + j] = g * M[i * D + j]! + (1 - g) * (kE[i]! / kn) * vE[j]! * vScale;
      const r = new Float64Array(D);
      for (let j = 0; j < D; j++) {
        let acc = 0;
        for (let i = 0; i < D; i++) acc += qg[i]! * M[i * D + j]!;
        r[j] = acc;
      }
      const projected = matVec(lw.o, r);
      if (policy.kind === 'engine') o = projected;
      else if (policy.kind === 'fixed') o = projected.map((y) => y * FIXED_OUTPUT_SCALE);
      else {
        const p = policy.params;
        const alpha = sigmoid(p.mixAlpha);
        o = projected.map((y, i) => alpha * y * p.outputScale[i]! + (1 - alpha) * x[i]!);
        if (softmaxOut) {
          const lambda = sigmoid(p.windowMix!);
          o = o.map((y, i) => lambda * softmaxOut![i]! + (1 - lambda) * y);
        }
      }
    }

    const mid = Float64Array.from(ht, (y, i) => y + o[i]!);
    const y = rmsNorm(mid, lw.postNorm, c.rmsNormEps);
    const gate = matVec(lw.gate, y);
    const up = matVec(lw.up, y);
    const act = Float64Array.from(gate, (a, i) => (a / (1 + Math.exp(-a))) * up[i]!);
    const down = matVec(lw.down, act);
    for (let i = 0; i < H; i++) out[t * H + i] = mid[i]! + down[i]!;
  }
  return out;
}
