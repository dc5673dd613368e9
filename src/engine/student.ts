/**
 * The SYNAXIM student: the teacher's own weights with (some) attention layers replaced by the
 * symbiotic gate (src/model/gate.ts). Each layer follows a policy:
 *
 * - `adapter` (adapter-v1, the layer has adapter parameters), no RoPE:
 *     s_t = mean_h q_{t,h}·k_{t,h}/√hd,  g_t = σ(s_t·gate_scale + gate_bias)
 *     k̂_t = k_t/(‖k_t‖+1e-8),  v̂_t = v_t/(‖v_t‖+1e-8)·‖x_t‖   (k, v repeated per GQA group)
 *     M_t = g_t M_{t-1} + (1−g_t) k̂_t v̂_tᵀ,  r_t = q_tᵀ M_t
 *     o_t = σ(mix_alpha)·((W_o r_t) ⊙ output_scale) + (1 − σ(mix_alpha))·x_t
 * - `engine` (engine-v0.1.1, the published engine): RoPE on q and k first, g_t = σ(s_t), o_t = W_o r_t.
 * - `fixed` (the SYNAXIM adapter script's generation for untrained layers): no RoPE, g_t = 0.9,
 *   o_t = 0.1·W_o r_t.
 * - `teacher`: the layer keeps softmax attention (a hybrid model).
 * - `window` (W): softmax attention limited to the current and W−1 previous positions (Mistral
 *   `sliding_window` semantics, RoPE as the teacher), no parameters: the KV-window baseline.
 *
 * x_t = RMSNorm(h_t) is the layer's normed input; then h' = h + o, h'' = h' + MLP(RMSNorm(h')).
 *
 * Whole sequences run the chunked-parallel gate (`studentPrefill`, `studentLayerForward` —
 * differentiable w.r.t. the adapter parameters, the training path); `StudentDecoder` runs the
 * recurrent form, one D×D state per gated layer, constant memory per token.
 *
 * This file only composes: the policy type is src/model/policy.ts, the layer step
 * src/model/decoderLayer.ts (`decoderLayer`, dispatching on the policy in `policyAttention`), the
 * streamed prefill and resident decoder src/model/forward.ts.
 */
import type * as tf from '@tensorflow/tfjs-core';
import { fail } from '../util/errors.ts';
import { validateAdapterForModel, type Adapter } from '../formats/adapter.ts';
import type { ModelConfig } from '../formats/config.ts';
import type { ModelWeights } from '../formats/weights.ts';
import type { LayerTensors } from '../model/nn.ts';
import { disposePolicy, layerPolicy, layerPolicyKinds, REST_POLICIES, type LayerPolicy, type PolicyKind, type RestPolicy, type SoftmaxLayerOptions } from '../model/policy.ts';
import { policyAttention, policyLayer, type MlpGrad, type RopeTables } from '../model/decoderLayer.ts';
import { policyPrefill, ResidentDecoder, type PrefillOptions, type PrefillResult } from '../model/forward.ts';

// The policy type and the layer's parts live in src/model; re-exported for existing callers.
export {
  adapterPolicy,
  disposePolicy,
  FIXED_GATE,
  FIXED_OUTPUT_SCALE,
  layerPolicyKinds,
  REST_POLICIES,
  type AdapterPolicy,
  type LayerPolicy,
  type PolicyKind,
  type RestPolicy,
  type WindowPolicy,
} from '../model/policy.ts';
export { windowShape } from '../model/attention.ts';
export { gateBlockOutput, gateInputs } from '../model/gate.ts';

export interface StudentLayerOptions {
  /** Chunk size of the parallel gate (default: gate.ts `defaultChunkSize`). */
  chunkSize?: number;
  /** 'detached' holds the MLP output constant for gradients (the SYNAXIM training scripts); default 'exact'. */
  mlpGrad?: MlpGrad;
  /** RoPE tables [T, headDim] for positions 0..T-1 (`engine` / `teacher` layers); made on the fly when absent. */
  rope?: RopeTables;
}

/**
 * The attention block of a student layer over a whole sequence (positions 0..T-1): x [T, hidden]
 * normed input -> o [T, hidden]. Gated policies run the chunked-parallel gate from M_0 = 0.
 */
export function studentAttention(x: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, policy: LayerPolicy, opts: StudentLayerOptions = {}): tf.Tensor2D {
  return policyAttention(x, layer, c, policy, { chunkSize: opts.chunkSize, rope: opts.rope });
}

/**
 * One student decoder layer over a whole sequence: h [T, hidden] -> h'' [T, hidden]. Pure and
 * differentiable w.r.t. the adapter parameters in `policy` (tf.Variables when training).
 */
export function studentLayerForward(h: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, policy: LayerPolicy, opts: StudentLayerOptions = {}): tf.Tensor2D {
  return policyLayer(h, layer, c, policy, { chunkSize: opts.chunkSize, rope: opts.rope, mlpGrad: opts.mlpGrad });
}

// ---------------------------------------------------------------------------------------------
// Whole sequences

export interface StudentOptions extends SoftmaxLayerOptions {
  /** Adapter parameters for some layers (adapter-v1). */
  adapter?: Adapter | null;
  /** Policy of the layers without adapter parameters. Default 'engine'. */
  rest?: RestPolicy;
  /** Parallel-gate chunk size (default: by D_q). */
  chunkSize?: number;
}

function checkStudent(weights: ModelWeights, opts: StudentOptions): RestPolicy {
  const rest = opts.rest ?? 'engine';
  if (!REST_POLICIES.includes(rest)) fail(null, `unknown rest policy '${rest}' (choose from ${REST_POLICIES.join(', ')})`);
  if (opts.adapter) validateAdapterForModel(opts.adapter, weights.config, opts.adapter.source ?? 'adapter');
  if (opts.window != null && !(Number.isInteger(opts.window) && opts.window >= 1)) fail(null, `window must be a positive integer, got ${opts.window}`);
  return rest;
}

/** The student's per-layer policy kinds and policies (adapter parameters uploaded: dispose them). */
function studentPolicies(weights: ModelWeights, opts: StudentOptions): { kinds: PolicyKind[]; policies: LayerPolicy[] } {
  const rest = checkStudent(weights, opts);
  const adapter = opts.adapter ?? null;
  const kinds = layerPolicyKinds(weights.config, adapter, rest, opts);
  return { kinds, policies: kinds.map((k, l) => layerPolicy(k, l, adapter, opts.window)) };
}

/**
 * The student over whole sequences (positions from 0), streamed a layer at a time exactly like
 * `teacherPrefill`, with the same output contract: logits per sequence and, with `hidden`,
 * hidden.0 (embeddings) … hidden.L (the student's residual stream after each layer).
 */
export function studentPrefill(weights: ModelWeights, sequences: number[][], opts: StudentOptions & PrefillOptions = {}): PrefillResult {
  const { policies } = studentPolicies(weights, opts);
  try {
    return policyPrefill(weights, sequences, policies, opts);
  } finally {
    policies.forEach(disposePolicy);
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/**
 * Incremental decoding with the recurrent gate: `step(id)` feeds the token at `position` and
 * returns the logits for the next one. Gated layers keep one D_q×D_q state each (constant in the
 * sequence length); `teacher` layers keep a KV cache, `window` and adapter-window layers their
 * last W keys/values. Holds every layer's weights on the backend (like TeacherDecoder: for models
 * that fit). `prefill(ids)` runs the chunked-parallel gate from the current states (leaving them
 * as the recurrent form would). Call `dispose()` when done.
 */
export class StudentDecoder extends ResidentDecoder {
  readonly kinds: PolicyKind[];
  private readonly ownPolicies: LayerPolicy[];

  constructor(weights: ModelWeights, opts: StudentOptions = {}) {
    const { kinds, policies } = studentPolicies(weights, opts);
    try {
      super(weights, policies, opts.chunkSize);
    } catch (e) {
      policies.forEach(disposePolicy);
      throw e;
    }
    this.kinds = kinds;
    this.ownPolicies = policies;
  }

  /** Bytes held by the gate states now (Σ D_q² × 4 over gated layers once a token was fed). */
  stateBytes(): number {
    return this.states.reduce((s, st) => s + st.gateBytes, 0);
  }

  override dispose(): void {
    super.dispose();
    this.ownPolicies.forEach(disposePolicy);
  }
}
