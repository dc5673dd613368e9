/**
 * What the attention part of one decoder layer runs: the policy. Shared by the teacher (every
 * layer `teacher`, i.e. softmax), the student engine, distillation and evaluation.
 *
 * - `teacher`: softmax attention with RoPE (the model's own).
 * - `window` (W): softmax attention over the current and W−1 previous positions (Mistral
 *   `sliding_window` semantics), no parameters: the KV-window baseline.
 * - `adapter` (adapter-v1, parameters per layer), no RoPE; with `window` set it is adapter-window.
 * - `engine` (engine-v0.1.1, the published engine): RoPE on q and k, g_t = σ(s_t), o_t = W_o r_t.
 * - `fixed` (the SYNAXIM adapter script's untrained layers): no RoPE, g_t = 0.9, o_t = 0.1·W_o r_t.
 *
 * The maths of each lives beside it: softmax in attention.ts, the gate in gate.ts, the adapter's
 * gate logit and output mix in adapter.ts; decoderLayer.ts dispatches on the policy.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../formats/config.ts';
import { adapterPosition, type Adapter } from '../formats/adapter.ts';

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

/** The policy of a layer without parameters of its own (`--rest`). */
export function restLayerPolicy(rest: RestPolicy): LayerPolicy {
  return { kind: rest };
}

/** Gated policies run the symbiotic gate (adapter / engine / fixed); the others are pure softmax. */
export function isGated(p: LayerPolicy): p is AdapterPolicy | { kind: 'engine' } | { kind: 'fixed' } {
  return p.kind === 'adapter' || p.kind === 'engine' || p.kind === 'fixed';
}

/** The softmax window a layer keeps (window, adapter-window), or null. */
export function softmaxWindow(p: LayerPolicy): number | null {
  if (p.kind === 'window') return p.window;
  if (p.kind === 'adapter' && p.window !== undefined) return p.window;
  return null;
}

/** Whether the layer's attention needs RoPE tables (everything except adapter-v1 and fixed). */
export function needsRope(p: LayerPolicy): boolean {
  return p.kind === 'engine' || p.kind === 'teacher' || p.kind === 'window' || softmaxWindow(p) !== null;
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

/** Which layers keep softmax attention, and with what window (the hybrid and window baselines). */
export interface SoftmaxLayerOptions {
  /** Layers that keep softmax attention whatever the adapter and `rest` say (a hybrid, e.g. one layer gated). */
  softmaxLayers?: number[] | null;
  /** Softmax layers see only the current and window−1 previous positions (`window` policy). */
  window?: number | null;
}

/**
 * Policy kind of every layer: `softmaxLayers` softmax, adapted layers `adapter`, the others `rest`;
 * with `window`, every softmax layer becomes a `window` layer.
 */
export function layerPolicyKinds(config: ModelConfig, adapter: Adapter | null | undefined, rest: RestPolicy, opts: SoftmaxLayerOptions = {}): PolicyKind[] {
  return Array.from({ length: config.numLayers }, (_, l) => {
    const kind: PolicyKind = opts.softmaxLayers?.includes(l) ? 'teacher' : adapter && adapterPosition(adapter, l) >= 0 ? 'adapter' : rest;
    return kind === 'teacher' && opts.window != null ? 'window' : kind;
  });
}

/** The policy of layer `l` of kind `k` (adapter parameters uploaded; dispose with `disposePolicy`). */
export function layerPolicy(k: PolicyKind, l: number, adapter: Adapter | null, window: number | null | undefined): LayerPolicy {
  if (k === 'adapter') return adapterPolicy(adapter!, adapterPosition(adapter!, l));
  if (k === 'window') return { kind: 'window', window: window! };
  return { kind: k } as LayerPolicy;
}
