/**
 * What a forward pass must do, counted from the model's dimensions: the FLOPs of a prefill token
 * (what prefill GFLOP/s is made of) and the bytes a decode step must read (what decode bytes/s is
 * made of). Speeds in the bench are these counts divided by measured times, then by the machine's
 * limits (bench/limits.ts).
 */
import { kvDim, qDim, type ModelConfig } from '../src/formats/config.ts';

/** How the engine holds the weights a decode step reads. */
export type WeightStorage = { kind: 'f32' } | { kind: 'int4'; groupSize: number };

/** Parameters of one layer's seven projection matrices. */
export function layerMatrixParams(c: ModelConfig): number {
  const D = c.hiddenSize;
  return D * (2 * qDim(c) + 2 * kvDim(c) + 3 * c.intermediateSize);
}

/**
 * FLOP per token of a whole-model prefill of T-token windows: per layer the projections (2 per
 * weight) and causal attention (QKᵀ and A·V, 2·2·qDim per visible position, (T+1)/2 positions on
 * average); then the lm_head (2·hidden·vocab). Norms, RoPE and activations are left out (< 1%).
 */
export function prefillFlopsPerToken(c: ModelConfig, T: number, layers = c.numLayers, lmHead = true): number {
  const perLayer = 2 * layerMatrixParams(c) + 2 * 2 * qDim(c) * ((T + 1) / 2);
  return layers * perLayer + (lmHead ? 2 * c.hiddenSize * c.vocabSize : 0);
}

/** Bytes of `params` weights as stored: 4 per f32; int4 is half a byte per weight plus an f32 scale per group. */
export function weightBytes(params: number, s: WeightStorage): number {
  return s.kind === 'f32' ? 4 * params : params / 2 + 4 * Math.ceil(params / s.groupSize);
}

/** Bytes of the symbiotic gate's recurrent state of one layer: D_q × D_q float32. */
export function gateStateBytes(c: ModelConfig): number {
  return qDim(c) * qDim(c) * 4;
}

/**
 * Bytes one student decode step must read at least: every layer's matrices and the lm_head (as
 * stored), and each layer's recurrent gate state. The embedding row and norms are negligible.
 */
export function studentDecodeBytesPerToken(c: ModelConfig, s: WeightStorage, layers = c.numLayers, lmHead = true): number {
  return layers * (weightBytes(layerMatrixParams(c), s) + gateStateBytes(c)) + (lmHead ? weightBytes(c.hiddenSize * c.vocabSize, s) : 0);
}
