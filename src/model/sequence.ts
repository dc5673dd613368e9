/**
 * What every forward pass over whole sequences shares, whatever engine runs it (tfjs in
 * model/forward.ts, ONNX Runtime in native/): the prefill options and result, the check that
 * token ids are inside the vocabulary, and the error for non-finite activations. Plain values
 * only: no tensor library is imported here.
 */
import { fail } from '../util/errors.ts';
import type { ModelConfig } from '../formats/config.ts';

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

/** The one-line error for a layer whose output holds NaN or ±Inf. */
export function failNonFiniteActivations(modelDir: string, layer: number, sequence: number | null): never {
  return fail(modelDir, `non-finite activations (NaN or Inf) after layer ${layer}${sequence === null ? '' : ` in sequence ${sequence}`}: the weights (or adapter) overflow float32`);
}

/** Layer outputs held on the host must be finite (the native engine's check; tfjs checks on its tensors). */
export function requireFiniteHost(x: Float32Array, modelDir: string, layer: number, sequence: number | null): void {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i]!)) failNonFiniteActivations(modelDir, layer, sequence);
}
