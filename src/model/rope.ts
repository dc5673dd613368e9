/**
 * Rotary position embedding tables, on the host, in float64 (no tfjs): what the tfjs layers
 * (nn.ts) and the native engine's graphs (native/layerGraph.ts) both bind.
 */
import type { ModelConfig } from '../formats/config.ts';

/**
 * RoPE inverse frequencies θ^(-2i/headDim), i < headDim/2, computed in float64. With
 * `rope_scaling.type == 'llama3'` they are rescaled exactly as HF `_compute_llama3_parameters`:
 * long wavelengths divided by `factor`, short ones kept, the band between interpolated smoothly.
 */
export function ropeInvFreq(config: ModelConfig): Float32Array {
  const half = config.headDim / 2;
  const inv = new Float64Array(half);
  // HF: 1 / base ** (arange(0, dim, 2).float() / dim)
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(config.ropeTheta, (2 * i) / config.headDim);
  const s = config.ropeScaling;
  if (s && s.type === 'llama3') {
    const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
    const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen < highFreqWavelen) continue; // high frequency: unchanged
      if (wavelen > lowFreqWavelen) {
        inv[i] = inv[i] / s.factor; // low frequency: fully scaled
      } else {
        // medium frequency: interpolate between scaled and unscaled
        const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i] / s.factor) + smooth * inv[i];
      }
    }
  }
  return Float32Array.from(inv);
}

/** cos/sin tables [T, headDim] for absolute positions, HF layout (cat(freqs, freqs)), angles in float64. */
export function ropeTables(config: ModelConfig, positions: ArrayLike<number>): { cos: Float32Array; sin: Float32Array } {
  const invFreq = ropeInvFreq(config);
  const d = config.headDim;
  const half = d / 2;
  const T = positions.length;
  const cos = new Float32Array(T * d);
  const sin = new Float32Array(T * d);
  for (let t = 0; t < T; t++) {
    const p = positions[t]!;
    for (let i = 0; i < half; i++) {
      const angle = p * invFreq[i]!;
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[t * d + i] = c;
      cos[t * d + i + half] = c;
      sin[t * d + i] = s;
      sin[t * d + i + half] = s;
    }
  }
  return { cos, sin };
}
