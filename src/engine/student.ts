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
 */
import * as tf from '@tensorflow/tfjs-core';
import { fail } from '../util/errors.ts';
import { applyRope, disposeLayer, linear, repeatKv, rmsNorm, ropeCosSin, swigluMlp, uploadLayer, uploadMatrix, type LayerTensors } from '../model/nn.ts';
import type { ModelConfig } from '../formats/config.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { causalAttention, KvCache, type AttentionShape } from '../model/attention.ts';
import { attentionShape, modelConfigFile, qkvProjections, softmaxAttentionBlock, streamedForward, validateIds, type PrefillOptions, type PrefillResult } from '../teacher/teacher.ts';
import { requireModelFitsBackend } from '../runtime/backend.ts';
import { adapterPosition, validateAdapterForModel, type Adapter } from '../formats/adapter.ts';
import {
  constantGateLogs,
  gateChunked,
  gateChunkedOutput,
  gateLogs,
  gateRecurrentStep,
  gateScores,
  normalizeKeys,
  normalizeValues,
  rowNorms,
  type GateSequence,
} from '../model/gate.ts';

/** The adapter-v1 parameters of one layer as tensors (tf.Variables when training). */
export interface AdapterPolicy {
  kind: 'adapter';
  gateBias: tf.Scalar;
  gateScale: tf.Scalar;
  /** [hidden] */
  outputScale: tf.Tensor1D;
  mixAlpha: tf.Scalar;
  /**
   * adapter-window (LoLCATs/Liger style): the layer also runs softmax attention over its last
   * `window` positions (RoPE as the teacher, same q/k/v) and outputs
   *   o_t = σ(window_mix)·W_o softmax_window(q_t, K, V) + (1 − σ(window_mix))·o^adapter-v1_t.
   * Decoding keeps the last `window` keys/values AND the gate state.
   */
  window?: number;
  windowMix?: tf.Scalar;
}
/** Softmax attention over the last `window` positions (a KV-cache baseline with bounded memory). */
export interface WindowPolicy {
  kind: 'window';
  window: number;
}
export type LayerPolicy = AdapterPolicy | WindowPolicy | { kind: 'engine' } | { kind: 'fixed' } | { kind: 'teacher' };
export type PolicyKind = LayerPolicy['kind'];
/** What the layers without adapter parameters do (`--rest`). */
export type RestPolicy = 'teacher' | 'engine' | 'fixed';
export const REST_POLICIES: readonly RestPolicy[] = ['teacher', 'engine', 'fixed'];

/** The `fixed` policy's constants (SYNAXIM adapter script, untrained layers). */
export const FIXED_GATE = 0.9;
export const FIXED_OUTPUT_SCALE = 0.1;

export interface StudentLayerOptions {
  /** Chunk size of the parallel gate (default: gate.ts `defaultChunkSize`). */
  chunkSize?: number;
  /** 'detached' holds the MLP output constant for gradients (the SYNAXIM training scripts); default 'exact'. */
  mlpGrad?: 'exact' | 'detached';
  /** RoPE tables [T, headDim] for positions 0..T-1 (`engine` / `teacher` layers); made on the fly when absent. */
  rope?: { cos: tf.Tensor2D; sin: tf.Tensor2D };
}

/** Upload one adapted layer's parameters as constant tensors. Dispose with `disposePolicy`. */
export function adapterPolicy(adapter: Adapter, position: number): AdapterPolicy {
  const p = adapter.params[position];
  return {
    kind: 'adapter',
    gateBias: tf.scalar(p.gateBias),
    gateScale: tf.scalar(p.gateScale),
    outputScale: tf.tensor1d(p.outputScale),
    mixAlpha: tf.scalar(p.mixAlpha),
    ...(adapter.window ? { window: adapter.window, windowMix: tf.scalar(p.windowMix!) } : {}),
  };
}

export function disposePolicy(p: LayerPolicy): void {
  if (p.kind === 'adapter') [p.gateBias, p.gateScale, p.outputScale, p.mixAlpha, p.windowMix].forEach((t) => t?.dispose());
}

/**
 * Policy kind of every layer: `softmaxLayers` softmax, adapted layers `adapter`, the others `rest`;
 * with `window`, every softmax layer becomes a `window` layer.
 */
export function layerPolicyKinds(
  config: ModelConfig,
  adapter: Adapter | null | undefined,
  rest: RestPolicy,
  opts: Pick<StudentOptions, 'window' | 'softmaxLayers'> = {},
): PolicyKind[] {
  return Array.from({ length: config.numLayers }, (_, l) => {
    const kind: PolicyKind = opts.softmaxLayers?.includes(l) ? 'teacher' : adapter && adapterPosition(adapter, l) >= 0 ? 'adapter' : rest;
    return kind === 'teacher' && opts.window != null ? 'window' : kind;
  });
}

/** The attention shape of a `window` layer: the model's own sliding window, if any, caps W further. */
export function windowShape(c: ModelConfig, window: number): AttentionShape {
  return { ...attentionShape(c), slidingWindow: c.slidingWindow === null ? window : Math.min(window, c.slidingWindow) };
}

/** Softmax attention of a `window` layer over positions 0..T-1 (cos/sin [T, headDim]): o [T, hidden]. */
function windowAttentionBlock(x: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, window: number, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const { q, k, v } = qkvProjections(x, layer);
    const qRot = applyRope(q, c.numHeads, c.headDim, cos, sin);
    const kRot = applyRope(k, c.numKvHeads, c.headDim, cos, sin);
    return linear(causalAttention(qRot, kRot, v, windowShape(c, window)), layer.o);
  });
}

/** The policy of a layer of kind `k` (adapter parameters uploaded; dispose with `disposePolicy`). */
function policyOf(k: PolicyKind, l: number, adapter: Adapter | null, window: number | null | undefined): LayerPolicy {
  if (k === 'adapter') return adapterPolicy(adapter!, adapterPosition(adapter!, l));
  if (k === 'window') return { kind: 'window', window: window! };
  return { kind: k } as LayerPolicy;
}

// ---------------------------------------------------------------------------------------------
// One gated layer's attention block

/**
 * The gate's per-token inputs for a gated layer (policy adapter / engine / fixed): q, k̂, v̂
 * (GQA-expanded to D_q) and log g, log(1−g). x [T, hidden] is the normed layer input; `rope` holds
 * cos/sin for the tokens' positions (used by `engine` only).
 */
export function gateInputs(x: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, policy: LayerPolicy, rope: { cos: tf.Tensor2D; sin: tf.Tensor2D } | null): GateSequence {
  if (policy.kind === 'teacher' || policy.kind === 'window') throw new Error(`gateInputs: the ${policy.kind} policy has no gate`);
  return tf.tidy(() => {
    const T = x.shape[0];
    let { q, k, v } = qkvProjections(x, layer);
    if (policy.kind === 'engine') {
      if (!rope) throw new Error('engine policy needs RoPE tables');
      q = applyRope(q, c.numHeads, c.headDim, rope.cos, rope.sin);
      k = applyRope(k, c.numKvHeads, c.headDim, rope.cos, rope.sin);
    }
    const nRep = c.numHeads / c.numKvHeads;
    const kExpanded = repeatKv(k, c.numKvHeads, nRep, c.headDim);
    const vExpanded = repeatKv(v, c.numKvHeads, nRep, c.headDim);
    let logs: { logGate: tf.Tensor1D; logOneMinusGate: tf.Tensor1D };
    if (policy.kind === 'fixed') {
      logs = constantGateLogs(T, FIXED_GATE);
    } else {
      const s = gateScores(q, kExpanded, c.numHeads, c.headDim);
      logs = gateLogs(policy.kind === 'adapter' ? (tf.add(tf.mul(s, policy.gateScale), policy.gateBias) as tf.Tensor1D) : s);
    }
    return { q, kHat: normalizeKeys(kExpanded), vHat: normalizeValues(vExpanded, rowNorms(x)), ...logs };
  });
}

/** The attention block's output o [T, hidden] from the gate's r [T, D_q] (policy adapter / engine / fixed). */
export function gateBlockOutput(r: tf.Tensor2D, x: tf.Tensor2D, layer: LayerTensors, policy: LayerPolicy): tf.Tensor2D {
  return tf.tidy(() => {
    const projected = linear(r, layer.o);
    if (policy.kind === 'engine') return projected;
    if (policy.kind === 'fixed') return tf.mul(projected, FIXED_OUTPUT_SCALE) as tf.Tensor2D;
    if (policy.kind !== 'adapter') throw new Error(`gateBlockOutput: not a gated policy (${policy.kind})`);
    const alpha = tf.sigmoid(policy.mixAlpha);
    const a = tf.mul(projected, policy.outputScale);
    return tf.add(tf.mul(a, alpha), tf.mul(x, tf.sub(1, alpha))) as tf.Tensor2D;
  });
}

/** adapter-window: σ(window_mix)·o_window + (1 − σ(window_mix))·o_gate. */
function mixWindow(windowOut: tf.Tensor2D, gated: tf.Tensor2D, policy: AdapterPolicy): tf.Tensor2D {
  return tf.tidy(() => {
    const lambda = tf.sigmoid(policy.windowMix!);
    return tf.add(tf.mul(windowOut, lambda), tf.mul(gated, tf.sub(1, lambda))) as tf.Tensor2D;
  });
}

function positionsRope(c: ModelConfig, T: number): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  return ropeCosSin(c, Array.from({ length: T }, (_, i) => i));
}

/**
 * The attention block of a student layer over a whole sequence (positions 0..T-1): x [T, hidden]
 * normed input -> o [T, hidden]. Gated policies run the chunked-parallel gate from M_0 = 0.
 */
export function studentAttention(x: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, policy: LayerPolicy, opts: StudentLayerOptions = {}): tf.Tensor2D {
  return tf.tidy(() => {
    const adapterWindow = policy.kind === 'adapter' && policy.window !== undefined;
    const needsRope = policy.kind === 'engine' || policy.kind === 'teacher' || policy.kind === 'window' || adapterWindow;
    const rope = needsRope ? (opts.rope ?? positionsRope(c, x.shape[0])) : null;
    if (policy.kind === 'teacher') return softmaxAttentionBlock(x, layer, c, rope!.cos, rope!.sin);
    if (policy.kind === 'window') return windowAttentionBlock(x, layer, c, policy.window, rope!.cos, rope!.sin);
    const r = gateChunkedOutput(gateInputs(x, layer, c, policy, rope), opts.chunkSize);
    const gated = gateBlockOutput(r, x, layer, policy);
    if (!adapterWindow) return gated;
    const p = policy as AdapterPolicy;
    return mixWindow(windowAttentionBlock(x, layer, c, p.window!, rope!.cos, rope!.sin), gated, p);
  });
}

/**
 * Identity in the forward pass, zero gradient: the MLP runs inside (so its ops are not even
 * recorded for backprop) and its output is a constant as far as autodiff is concerned.
 * (tfjs-core has no stopGradient.)
 */
function detachedMlp(x: tf.Tensor2D, layer: LayerTensors): tf.Tensor2D {
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const input = args[0] as tf.Tensor2D;
    return { value: swigluMlp(input, layer.gate, layer.up, layer.down), gradFunc: () => tf.zerosLike(input) };
  });
  return f(x) as tf.Tensor2D;
}

/**
 * One student decoder layer over a whole sequence: h [T, hidden] -> h'' [T, hidden]. Pure and
 * differentiable w.r.t. the adapter parameters in `policy` (tf.Variables when training).
 */
export function studentLayerForward(h: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, policy: LayerPolicy, opts: StudentLayerOptions = {}): tf.Tensor2D {
  return tf.tidy(() => {
    const attnOut = studentAttention(rmsNorm(h, layer.inputNorm, c.rmsNormEps), layer, c, policy, opts);
    const afterAttn = tf.add(h, attnOut) as tf.Tensor2D;
    const mlpIn = rmsNorm(afterAttn, layer.postNorm, c.rmsNormEps);
    const mlpOut = opts.mlpGrad === 'detached' ? detachedMlp(mlpIn, layer) : swigluMlp(mlpIn, layer.gate, layer.up, layer.down);
    return tf.add(afterAttn, mlpOut) as tf.Tensor2D;
  });
}

// ---------------------------------------------------------------------------------------------
// Whole sequences

export interface StudentOptions {
  /** Adapter parameters for some layers (adapter-v1). */
  adapter?: Adapter | null;
  /** Policy of the layers without adapter parameters. Default 'engine'. */
  rest?: RestPolicy;
  /** Parallel-gate chunk size (default: by D_q). */
  chunkSize?: number;
  /** Layers that keep softmax attention whatever the adapter and `rest` say (a hybrid, e.g. one layer gated). */
  softmaxLayers?: number[] | null;
  /** Softmax layers see only the current and window−1 previous positions (`window` policy). */
  window?: number | null;
}

function checkStudent(weights: ModelWeights, opts: StudentOptions): RestPolicy {
  const rest = opts.rest ?? 'engine';
  if (!REST_POLICIES.includes(rest)) fail(null, `unknown rest policy '${rest}' (choose from ${REST_POLICIES.join(', ')})`);
  if (opts.adapter) validateAdapterForModel(opts.adapter, weights.config, opts.adapter.source ?? 'adapter');
  if (opts.window != null && !(Number.isInteger(opts.window) && opts.window >= 1)) fail(null, `window must be a positive integer, got ${opts.window}`);
  return rest;
}

/**
 * The student over whole sequences (positions from 0), streamed a layer at a time exactly like
 * `teacherPrefill`, with the same output contract: logits per sequence and, with `hidden`,
 * hidden.0 (embeddings) … hidden.L (the student's residual stream after each layer).
 */
export function studentPrefill(weights: ModelWeights, sequences: number[][], opts: StudentOptions & PrefillOptions = {}): PrefillResult {
  const c = weights.config;
  const rest = checkStudent(weights, opts);
  const adapter = opts.adapter ?? null;
  const kinds = layerPolicyKinds(c, adapter, rest, opts);
  const needsRope = kinds.some((k) => k === 'engine' || k === 'teacher' || k === 'window');
  const ropeFor = new Map<number, { cos: tf.Tensor2D; sin: tf.Tensor2D }>();
  if (needsRope) for (const ids of sequences) if (!ropeFor.has(ids.length)) ropeFor.set(ids.length, positionsRope(c, ids.length));
  const policies: LayerPolicy[] = kinds.map((k, l) => policyOf(k, l, adapter, opts.window));
  try {
    return streamedForward(weights, sequences, (x, layer, l) => studentAttention(x, layer, c, policies[l], { chunkSize: opts.chunkSize, rope: ropeFor.get(x.shape[0]) }), opts);
  } finally {
    policies.forEach(disposePolicy);
    for (const r of ropeFor.values()) {
      r.cos.dispose();
      r.sin.dispose();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/**
 * Incremental decoding with the recurrent gate: `step(id)` feeds the token at `position` and
 * returns the logits for the next one. Gated layers keep one D_q×D_q state each (constant in the
 * sequence length); `teacher` layers keep a KV cache. Holds every layer's weights on the backend
 * (like TeacherDecoder: for models that fit). Call `dispose()` when done.
 */
export class StudentDecoder {
  readonly config: ModelConfig;
  readonly kinds: PolicyKind[];
  private readonly layers: LayerTensors[];
  private readonly policies: LayerPolicy[];
  private readonly finalNorm: tf.Tensor1D;
  private readonly lmHead: tf.Tensor2D;
  /** Gated layers: M (null before the first token). */
  private readonly states: (tf.Tensor2D | null)[];
  /** Teacher and window layers: KV cache (a window layer's keeps its last W positions). */
  private readonly caches: (KvCache | null)[];
  private readonly chunkSize: number | undefined;
  private pos = 0;

  constructor(private readonly weights: ModelWeights, opts: StudentOptions = {}) {
    const c = weights.config;
    const rest = checkStudent(weights, opts);
    this.config = c;
    this.chunkSize = opts.chunkSize;
    const adapter = opts.adapter ?? null;
    this.kinds = layerPolicyKinds(c, adapter, rest, opts);
    requireModelFitsBackend(c, modelConfigFile(weights), 'resident');
    this.layers = [];
    for (let l = 0; l < c.numLayers; l++) this.layers.push(uploadLayer(weights.layer(l)));
    this.policies = this.kinds.map((k, l) => policyOf(k, l, adapter, opts.window));
    this.finalNorm = tf.tensor1d(weights.finalNorm());
    this.lmHead = uploadMatrix(weights.lmHeadRows(0, c.vocabSize));
    this.states = this.kinds.map(() => null);
    this.caches = this.policies.map((p) =>
      p.kind === 'teacher'
        ? new KvCache(attentionShape(c))
        : p.kind === 'window'
          ? new KvCache(windowShape(c, p.window))
          : p.kind === 'adapter' && p.window !== undefined
            ? new KvCache(windowShape(c, p.window)) // adapter-window: the last W keys/values beside the gate state
            : null,
    );
  }

  /** Position of the next token fed (= tokens seen so far). */
  get position(): number {
    return this.pos;
  }

  /** Bytes held by the gate states now (Σ D_q² × 4 over gated layers once a token was fed). */
  stateBytes(): number {
    return this.states.reduce((s, m) => s + (m ? m.size * 4 : 0), 0);
  }

  /** Feed one token (recurrent gate); returns the logits [vocab] predicting the token after it. */
  step(id: number): Float32Array {
    validateIds(this.config, [id]);
    return this.run([id]);
  }

  /**
   * Feed several tokens at once: the chunked-parallel gate from the current states (which it
   * leaves as the recurrent form would); returns the logits after the last token. Same result as
   * `step` on each.
   */
  prefill(ids: number[]): Float32Array {
    validateIds(this.config, ids);
    if (this.pos !== 0 && this.caches.some((cache) => cache !== null)) {
      // Softmax layers batch only from an empty cache (as TeacherDecoder): feed the rest one by one.
      let out: Float32Array = new Float32Array(0);
      for (const id of ids) out = this.run([id]);
      return out;
    }
    return this.run(ids);
  }

  /**
   * Softmax attention of layer `l` through its KV cache: one token attends to the cache; a first
   * block of tokens (the cache is empty then, see prefill) runs causal attention and fills it.
   */
  private cachedSoftmax(x: tf.Tensor2D, layer: LayerTensors, l: number, rope: { cos: tf.Tensor2D; sin: tf.Tensor2D }, shape: AttentionShape): tf.Tensor2D {
    const c = this.config;
    const { q, k, v } = qkvProjections(x, layer);
    const qRot = applyRope(q, c.numHeads, c.headDim, rope.cos, rope.sin);
    const kRot = applyRope(k, c.numKvHeads, c.headDim, rope.cos, rope.sin);
    const cache = this.caches[l]!;
    let attn: tf.Tensor2D;
    if (x.shape[0] === 1) {
      cache.append(kRot, v);
      attn = cache.attend(qRot);
    } else {
      attn = causalAttention(qRot, kRot, v, shape);
      cache.append(kRot, v);
    }
    return linear(attn, layer.o);
  }

  private run(ids: number[]): Float32Array {
    const c = this.config;
    const T = ids.length;
    const positions = Array.from({ length: T }, (_, i) => this.pos + i);
    const newStates: (tf.Tensor2D | null)[] = this.states.map(() => null);
    const logits = tf.tidy(() => {
      const rope = ropeCosSin(c, positions);
      let h = tf.tensor2d(this.weights.embed(ids), [T, c.hiddenSize]);
      this.layers.forEach((layer, l) => {
        const policy = this.policies[l];
        const x = rmsNorm(h, layer.inputNorm, c.rmsNormEps);
        let attnOut: tf.Tensor2D;
        if (policy.kind === 'teacher' || policy.kind === 'window') {
          attnOut = this.cachedSoftmax(x, layer, l, rope, policy.kind === 'window' ? windowShape(c, policy.window) : attentionShape(c));
        } else {
          const seq = gateInputs(x, layer, c, policy, rope);
          const previous = this.states[l];
          let r: tf.Tensor2D;
          let state: tf.Tensor2D;
          if (T === 1) {
            const D = seq.q.shape[1];
            const step = gateRecurrentStep(
              previous ?? (tf.zeros([D, D]) as tf.Tensor2D),
              tf.reshape(seq.q, [D]) as tf.Tensor1D,
              tf.reshape(seq.kHat, [D]) as tf.Tensor1D,
              tf.reshape(seq.vHat, [D]) as tf.Tensor1D,
              tf.reshape(seq.logGate, []) as tf.Scalar,
              tf.reshape(seq.logOneMinusGate, []) as tf.Scalar,
            );
            r = tf.reshape(step.r, [1, D]) as tf.Tensor2D;
            state = step.state;
          } else {
            ({ r, state } = gateChunked(seq, this.chunkSize, previous));
          }
          newStates[l] = tf.keep(state);
          attnOut = gateBlockOutput(r, x, layer, policy);
          if (policy.kind === 'adapter' && policy.window !== undefined) {
            // adapter-window: the softmax part over the last W positions, from the layer's KV window.
            attnOut = mixWindow(this.cachedSoftmax(x, layer, l, rope, windowShape(c, policy.window)), attnOut, policy);
          }
        }
        const afterAttn = tf.add(h, attnOut) as tf.Tensor2D;
        h = tf.add(afterAttn, swigluMlp(rmsNorm(afterAttn, layer.postNorm, c.rmsNormEps), layer.gate, layer.up, layer.down)) as tf.Tensor2D;
      });
      const last = T === 1 ? h : tf.slice(h, [T - 1, 0], [1, -1]);
      return linear(rmsNorm(last as tf.Tensor2D, this.finalNorm, c.rmsNormEps), this.lmHead);
    });
    newStates.forEach((s, l) => {
      if (s) {
        this.states[l]?.dispose();
        this.states[l] = s;
      }
    });
    this.pos += T;
    const out = logits.dataSync() as Float32Array;
    logits.dispose();
    return out;
  }

  /** Forget every position (states and caches emptied; weights kept). */
  reset(): void {
    this.states.forEach((s, l) => {
      s?.dispose();
      this.states[l] = null;
    });
    this.caches.forEach((cache) => cache?.reset());
    this.pos = 0;
  }

  dispose(): void {
    this.reset();
    this.layers.forEach(disposeLayer);
    this.policies.forEach(disposePolicy);
    this.finalNorm.dispose();
    this.lmHead.dispose();
  }
}
