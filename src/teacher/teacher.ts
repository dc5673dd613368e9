/**
 * The teacher: a standard Llama / Mistral / Qwen2 decoder with softmax attention (HF
 * modeling_llama semantics): the model's decoder layer (src/model/decoderLayer.ts) with every
 * layer's attention policy `teacher` (softmax with RoPE). Two modes that must agree:
 * - `teacherPrefill`: whole sequences, streamed a layer at a time (only one layer's weights on the
 *   backend), hidden states on request, logits in vocabulary slices.
 * - `TeacherDecoder`: one token at a time with a KV cache (holds all layers; for small models).
 */
import type { ModelWeights } from '../formats/weights.ts';
import type { LayerPolicy } from '../model/policy.ts';
import { policyPrefill, ResidentDecoder, type PrefillOptions, type PrefillResult } from '../model/forward.ts';

// The layer and whole-model building blocks now live in src/model; re-exported for existing callers.
export { attentionShape, qkvProjections, softmaxAttentionBlock } from '../model/attention.ts';
export { decoderLayer } from '../model/decoderLayer.ts';
export {
  modelConfigFile,
  projectLogits,
  requireFiniteActivations,
  streamedForward,
  validateIds,
  type PrefillOptions,
  type PrefillResult,
  type TokenMixer,
} from '../model/forward.ts';

function teacherPolicies(weights: ModelWeights): LayerPolicy[] {
  return Array.from({ length: weights.config.numLayers }, () => ({ kind: 'teacher' }) as const);
}

/** The teacher over whole sequences (positions from 0): logits and, on request, hidden states. */
export function teacherPrefill(weights: ModelWeights, sequences: number[][], opts: PrefillOptions = {}): PrefillResult {
  return policyPrefill(weights, sequences, teacherPolicies(weights), opts);
}

/**
 * Incremental decoding with a KV cache: `step(id)` feeds the token at `position` and returns the
 * logits for the next one; `prefill(ids)` feeds several (batched from an empty cache). Holds every
 * layer's weights and the whole lm_head on the backend (fine for small models; large ones use
 * prefill, which streams). Call `dispose()` when done.
 */
export class TeacherDecoder extends ResidentDecoder {
  constructor(weights: ModelWeights) {
    super(weights, teacherPolicies(weights));
  }
}
