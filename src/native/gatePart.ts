/**
 * The student's attention parts for the native engine's decoder-layer graph (layerGraph.ts): each
 * layer policy of src/engine/student.ts as an `AttentionPart` built from the layer's own q/k/v/o
 * projections and the gate graphs of gateGraph.ts. Same maths as the tfjs student:
 *
 * - `engine` (engine-v0.1.1): RoPE on q, k; g = σ(s); o = W_o r.
 * - `fixed`: no RoPE; g = 0.9; o = 0.1·W_o r.
 * - `adapter` (adapter-v1): no RoPE; g = σ(s·gate_scale + gate_bias);
 *   o = σ(mix_alpha)·((W_o r) ⊙ output_scale) + (1 − σ(mix_alpha))·x.
 *   With `window` (adapter-window): o = σ(window_mix)·W_o softmax_window(RoPE q, RoPE k, v) + (1 − σ(window_mix))·o.
 * - `window` (W): softmax attention over the current and W−1 previous positions (RoPE as the teacher).
 * - `teacher`: softmax attention — `null` here: the runner's own softmax part.
 *
 * s_t = (q_t·k_t)/(nHeads·√hd), k̂ = k/(‖k‖+1e-8), v̂ = v/(‖v‖+1e-8)·‖x‖ (k, v repeated per GQA group).
 * Prefill runs the chunked log-space gate from M_0 = 0; decode one recurrent step on the layer's
 * [B, D, D] state (`gate_state`), zero before the first token — or, when the runner folds
 * (NativeDecoder on large states), the deferred step: M_base plus a buffer of the last ≤ C tokens.
 *
 * Policies are plain values (numbers, Float32Array): the native layer imports nothing above it.
 */
import type { ModelConfig } from '../formats/config.ts';
import { adapterPosition, validateAdapterForModel, type Adapter } from '../formats/adapter.ts';
import { fail } from '../util/errors.ts';
import { defaultChunkSize } from '../model/gate.ts';
import { FIXED_GATE, FIXED_OUTPUT_SCALE, layerPolicyKinds, REST_POLICIES, type RestPolicy, type SoftmaxLayerOptions } from '../model/policy.ts';
import type { AttentionPart, LayerGraphContext } from './layerGraph.ts';
import {
  constantGateLogsOps,
  gateChunkedOps,
  gateDeferredStepOps,
  gateLogsOps,
  gateScoresOps,
  gateDecodeStepOps,
  decodeRowNormOps,
  normalizeKeysOps,
  normalizeValuesOps,
  repeatKvOps,
  rowNormOps,
} from './gateGraph.ts';

/** Name of a gated layer's state in decode graphs (input; the output is declared through ctx.stateOut). */
export const GATE_STATE = 'gate_state';
/**
 * A gated layer's deferred decode state (when the runner folds, LayerGraphContext.runnerFolds):
 * M_base (read only) and the buffer of the tokens since the last fold (gateGraph.ts GateBuffer).
 */
export const GATE_BASE = 'gate_base';
export const GATE_KEYS = 'gate_keys';
export const GATE_VALUES = 'gate_values';
export const GATE_LOGS = 'gate_logs';
/** Name of an adapter-window / window layer's KV cache in decode graphs. */
export const WINDOW_CACHE = 'window_kv';

/** One layer's adapter-v1 (or adapter-window) values. */
export interface NativeAdapterPolicy {
  kind: 'adapter';
  gateBias: number;
  gateScale: number;
  /** [hidden] */
  outputScale: Float32Array;
  mixAlpha: number;
  /** adapter-window: the window W and the window/gate mix logit. */
  window?: number;
  windowMix?: number;
}
export type NativePolicy = NativeAdapterPolicy | { kind: 'window'; window: number } | { kind: 'engine' } | { kind: 'fixed' } | { kind: 'teacher' };

export interface GatePartOptions {
  /** Chunk size of the prefill gate (default: gate.ts defaultChunkSize(D)). */
  chunkSize?: number;
  /** Tokens the decoder's deferred gate state buffers between folds (default DECODE_CHUNK). */
  decodeChunk?: number;
}

/**
 * Default decode buffer: a step costs ~6·C·D floats of buffer traffic, a fold ~6·D² every C
 * tokens; at D = 2048 the sum is smallest near C = 45.
 */
export const DECODE_CHUNK = 64;

/** σ(z) in float64, stable for large |z| (the graphs take the mixes as constants). */
function sigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

/** The effective window of a softmax layer: the model's own sliding window, if any, caps W further. */
function effectiveWindow(c: ModelConfig, window: number): number {
  return c.slidingWindow === null ? window : Math.min(window, c.slidingWindow);
}

type GatedPolicy = NativeAdapterPolicy | { kind: 'engine' } | { kind: 'fixed' };

/** Softmax attention over the last W positions through the layer's o projection, [B, T, hidden]. */
function windowAttention(ctx: LayerGraphContext, q: string, k: string, v: string, window: number): string {
  const c = ctx.config;
  const attn = ctx.softmaxAttention(ctx.rope(q, c.numHeads), ctx.rope(k, c.numKvHeads), v, { window: effectiveWindow(c, window), cacheName: WINDOW_CACHE });
  return ctx.linear('o', attn);
}

/** o = a·u + (1 − a)·w with a constant mix a. */
function mix(ctx: LayerGraphContext, u: string, w: string, a: number): string {
  const b = ctx.b;
  return b.node('Add', [b.node('Mul', [u, b.constF([a], [1])]), b.node('Mul', [w, b.constF([1 - a], [1])])]);
}

/** The gated attention block of one layer (engine / fixed / adapter / adapter-window). */
function gatedPart(policy: GatedPolicy, opts: GatePartOptions): AttentionPart {
  return (ctx) => {
    const { b, config: c, x } = ctx;
    const D = c.numHeads * c.headDim;
    const nRep = c.numHeads / c.numKvHeads;
    const q0 = ctx.linear('q', x);
    const k0 = ctx.linear('k', x);
    const v = ctx.linear('v', x);
    const q = policy.kind === 'engine' ? ctx.rope(q0, c.numHeads) : q0;
    const k = policy.kind === 'engine' ? ctx.rope(k0, c.numKvHeads) : k0;
    const kExpanded = repeatKvOps(b, k, c.numKvHeads, nRep, c.headDim);
    const vExpanded = repeatKvOps(b, v, c.numKvHeads, nRep, c.headDim);
    let z: string | null = null;
    if (policy.kind !== 'fixed') {
      z = gateScoresOps(b, q, kExpanded, c.numHeads, c.headDim);
      if (policy.kind === 'adapter') z = b.node('Add', [b.node('Mul', [z, b.constF([policy.gateScale], [1])]), b.constF([policy.gateBias], [1])]);
    }
    const gateValues = () => ({
      q,
      kHat: normalizeKeysOps(b, kExpanded),
      vHat: normalizeValuesOps(b, vExpanded, rowNormOps(b, x)),
      ...(z === null ? constantGateLogsOps(b, q, FIXED_GATE) : gateLogsOps(b, z)),
    });
    let r: string;
    if (ctx.mode === 'prefill') {
      r = gateChunkedOps(b, gateValues(), D, opts.chunkSize ?? defaultChunkSize(D));
    } else if (!ctx.runnerFolds) {
      // The plain step on the layer's D×D state (small states: fewest ops).
      const gate = z === null ? { constant: FIXED_GATE } : { z };
      const step = gateDecodeStepOps(b, q, kExpanded, vExpanded, decodeRowNormOps(b, x), gate, ctx.state(GATE_STATE, ['B', D, D]), D);
      ctx.stateOut(GATE_STATE, step.state, ['B', D, D]);
      r = step.r;
    } else {
      const gate = gateValues();
      // The deferred state: M_base read only, the tokens since the last fold in a buffer the
      // runner folds into M_base when full.
      const C = opts.decodeChunk ?? DECODE_CHUNK;
      const base = ctx.state(GATE_BASE, ['B', D, D], { readOnly: true });
      const buffer = { keys: ctx.state(GATE_KEYS, ['B', C, D]), values: ctx.state(GATE_VALUES, ['B', C, D]), logs: ctx.state(GATE_LOGS, ['B', C, 2]) };
      const step = gateDeferredStepOps(b, gate, base, buffer, D, C);
      ctx.stateOut(GATE_KEYS, step.buffer.keys, ['B', C, D]);
      ctx.stateOut(GATE_VALUES, step.buffer.values, ['B', C, D]);
      ctx.stateOut(GATE_LOGS, step.buffer.logs, ['B', C, 2]);
      r = step.r;
    }
    const projected = ctx.linear('o', r);
    if (policy.kind === 'engine') return projected;
    if (policy.kind === 'fixed') return b.node('Mul', [projected, b.constF([FIXED_OUTPUT_SCALE], [1])]);
    if (policy.outputScale.length !== c.hiddenSize) throw new Error(`adapter output_scale has ${policy.outputScale.length} values, the model's hidden size is ${c.hiddenSize}`);
    const scaled = b.node('Mul', [projected, b.constF(policy.outputScale, [c.hiddenSize])]);
    const gated = mix(ctx, scaled, x, sigmoid(policy.mixAlpha));
    if (policy.window === undefined) return gated;
    if (policy.windowMix === undefined) throw new Error('adapter-window policy without window_mix');
    return mix(ctx, windowAttention(ctx, q0, k0, v, policy.window), gated, sigmoid(policy.windowMix));
  };
}

const windowParts = new Map<number, AttentionPart>();

/** Pure sliding-window softmax attention (the `window` policy); one part per W, so configurations share it. */
export function windowPart(window: number): AttentionPart {
  if (!(Number.isInteger(window) && window >= 1)) throw new Error(`window must be a positive integer, got ${window}`);
  let part = windowParts.get(window);
  if (!part) {
    part = (ctx) => windowAttention(ctx, ctx.linear('q', ctx.x), ctx.linear('k', ctx.x), ctx.linear('v', ctx.x), window);
    windowParts.set(window, part);
  }
  return part;
}

/** The published engine's part (default chunk size). One value, so configurations that share it share a branch. */
export const enginePart: AttentionPart = gatedPart({ kind: 'engine' }, {});
/** The `fixed` policy's part (default chunk size). */
export const fixedPart: AttentionPart = gatedPart({ kind: 'fixed' }, {});

/**
 * The attention part of one layer policy; null for `teacher` (the runner's softmax part).
 * Parameterless policies return shared parts (nativePrefillMany shares a branch per part).
 */
export function nativeAttentionFor(policy: NativePolicy, opts: GatePartOptions = {}): AttentionPart | null {
  switch (policy.kind) {
    case 'teacher':
      return null;
    case 'window':
      return windowPart(policy.window);
    case 'engine':
      return opts.chunkSize === undefined && opts.decodeChunk === undefined ? enginePart : gatedPart(policy, opts);
    case 'fixed':
      return opts.chunkSize === undefined && opts.decodeChunk === undefined ? fixedPart : gatedPart(policy, opts);
    case 'adapter':
      return gatedPart(policy, opts);
  }
}

/** Which layers do what: the tfjs student's rule (model/policy.ts layerPolicyKinds). */
export interface NativeStudentLayout extends SoftmaxLayerOptions {
  /** Adapter parameters for some layers. */
  adapter?: Adapter | null;
  /** Policy of the layers without adapter parameters (default 'engine'). */
  rest?: RestPolicy;
}

/** The policy of every layer of a model with `config` under `layout`, as plain values. */
export function nativePolicies(config: ModelConfig, layout: NativeStudentLayout): NativePolicy[] {
  const adapter = layout.adapter ?? null;
  // The same refusals as the tfjs student (one line each).
  const rest = layout.rest ?? 'engine';
  if (!REST_POLICIES.includes(rest)) fail(null, `unknown rest policy '${rest}' (choose from ${REST_POLICIES.join(', ')})`);
  if (adapter) validateAdapterForModel(adapter, config, adapter.source ?? 'adapter');
  if (layout.window != null && !(Number.isInteger(layout.window) && layout.window >= 1)) fail(null, `window must be a positive integer, got ${layout.window}`);
  return layerPolicyKinds(config, adapter, rest, layout).map((kind, layer): NativePolicy => {
    if (kind === 'window') return { kind, window: layout.window! };
    if (kind !== 'adapter') return { kind };
    const p = adapter!.params[adapterPosition(adapter!, layer)]!;
    return {
      kind,
      gateBias: p.gateBias,
      gateScale: p.gateScale,
      outputScale: p.outputScale,
      mixAlpha: p.mixAlpha,
      ...(adapter!.window ? { window: adapter!.window, windowMix: p.windowMix } : {}),
    };
  });
}

/** layer -> attention part (null = softmax) for a student configuration: what nativePrefill / nativePrefillMany take. */
export function nativeStudentAttention(config: ModelConfig, layout: NativeStudentLayout, opts: GatePartOptions = {}): (layer: number) => AttentionPart | null {
  const parts = nativePolicies(config, layout).map((p) => nativeAttentionFor(p, opts));
  return (layer) => {
    if (!(layer >= 0 && layer < parts.length)) throw new Error(`layer ${layer} is not in the model (${parts.length} layers)`);
    return parts[layer]!;
  };
}
