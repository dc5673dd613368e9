/**
 * The symbiotic gate: SYNAXIM's replacement for attention. One D×D state per layer
 * (D = D_q = n_heads·head_dim), one scalar gate per token shared by every head:
 *
 *   M_t = g_t·M_{t-1} + (1 − g_t)·k̂_t v̂_tᵀ,   M_0 = 0 (or a carried state),   r_t = q_tᵀ M_t
 *
 * Two forms of the same function:
 *
 * - recurrent (`gateRecurrentStep`, `gateRecurrent`): one token at a time, O(D²) memory whatever the
 *   length — decoding.
 * - chunked parallel (`gateChunked`): the recurrence unrolled,
 *       r_t = Σ_{s≤t} w_{t,s} (q_t·k̂_s) v̂_s,   w_{t,s} = (1−g_s) Π_{s<u≤t} g_u,
 *   evaluated exactly (masked attention-like matmuls) inside chunks of C tokens, with the state
 *   carried from chunk to chunk — the scheme flash-linear-attention uses for GLA / RetNet / Mamba2.
 *   Prefill, evaluation, training (differentiable by tfjs autodiff).
 *
 * Gates travel as logarithms: log g = log σ(z) = −softplus(−z), log(1−g) = −softplus(z); both are
 * finite and have finite derivatives for any finite z (saturated z = ±1e4 included), and every
 * weight is exp of a sum of them, so every exponent is ≤ 0 and nothing overflows.
 *
 * Within a chunk the decay from s to t is the "segment sum" Σ_{s<u≤t} log g_u, computed as a
 * cumulative sum over a masked [C, C] matrix (as Mamba2's `segsum`) rather than as the difference
 * L_t − L_s of prefix sums: the difference of two large prefix sums loses float32 precision when
 * gates are near 0 (log g ≈ −50 per token), the direct sum does not.
 */
import * as tf from '@tensorflow/tfjs-core';
import '../runtime/gradients.ts';
import type { ModelConfig } from '../formats/config.ts';
import { applyRope, linear, repeatKv, type LayerTensors } from './nn.ts';
import { qkvProjections } from './attention.ts';
import { adapterGateLogit, adapterOutput } from './adapter.ts';
import { FIXED_GATE, FIXED_OUTPUT_SCALE, type LayerPolicy } from './policy.ts';

/** Per-token inputs of the gate over a sequence. q, k̂, v̂ [T, D]; log g, log(1−g) [T]. */
export interface GateSequence {
  q: tf.Tensor2D;
  kHat: tf.Tensor2D;
  vHat: tf.Tensor2D;
  logGate: tf.Tensor1D;
  logOneMinusGate: tf.Tensor1D;
}

export interface GateResult {
  /** r_t = q_tᵀ M_t, [T, D]. */
  r: tf.Tensor2D;
  /** M_T, [D, D]: the state after the last token (carry it into the next call). */
  state: tf.Tensor2D;
}

// ---------------------------------------------------------------------------------------------
// Per-token quantities

/** log σ(z) = −softplus(−z): finite with a finite derivative σ(−z) for every finite z. */
export function logSigmoid<T extends tf.Tensor>(z: T): T {
  return tf.tidy(() => tf.neg(tf.softplus(tf.neg(z)))) as T;
}

/** log(1 − σ(z)) = log σ(−z) = −softplus(z). */
export function logOneMinusSigmoid<T extends tf.Tensor>(z: T): T {
  return tf.tidy(() => tf.neg(tf.softplus(z))) as T;
}

/** log g and log(1−g) of g = σ(gateLogit), gateLogit [T]. */
export function gateLogs(gateLogit: tf.Tensor1D): { logGate: tf.Tensor1D; logOneMinusGate: tf.Tensor1D } {
  return { logGate: logSigmoid(gateLogit), logOneMinusGate: logOneMinusSigmoid(gateLogit) };
}

/** A constant gate g for T tokens (the `fixed` policy: g = 0.9). */
export function constantGateLogs(T: number, g: number): { logGate: tf.Tensor1D; logOneMinusGate: tf.Tensor1D } {
  return { logGate: tf.fill([T], Math.log(g)) as tf.Tensor1D, logOneMinusGate: tf.fill([T], Math.log1p(-g)) as tf.Tensor1D };
}

/**
 * Gate scores s_t = mean over heads of q_{t,h}·k_{t,h} / sqrt(headDim). q and k [T, nHeads·headDim],
 * k already repeated per GQA group. (The mean of the per-head dot products is the full dot product
 * divided by nHeads.)
 */
export function gateScores(q: tf.Tensor2D, k: tf.Tensor2D, nHeads: number, headDim: number): tf.Tensor1D {
  return tf.tidy(() => tf.mul(tf.sum(tf.mul(q, k), 1), 1 / (nHeads * Math.sqrt(headDim))) as tf.Tensor1D);
}

/** Euclidean norm of each row: ‖x_t‖, x [T, D] -> [T]. */
export function rowNorms(x: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => tf.sqrt(tf.sum(tf.square(x), 1)) as tf.Tensor1D);
}

/** k̂_t = k_t / (‖k_t‖ + 1e-8), k [T, D] (GQA-expanded). */
export function normalizeKeys(k: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.div(k, tf.add(tf.reshape(rowNorms(k), [-1, 1]), 1e-8)) as tf.Tensor2D);
}

/** v̂_t = v_t / (‖v_t‖ + 1e-8) · ‖x_t‖, v [T, D] (GQA-expanded), xNorm = ‖x_t‖ [T]. */
export function normalizeValues(v: tf.Tensor2D, xNorm: tf.Tensor1D): tf.Tensor2D {
  return tf.tidy(() => {
    const scale = tf.div(xNorm, tf.add(rowNorms(v), 1e-8));
    return tf.mul(v, tf.reshape(scale, [-1, 1])) as tf.Tensor2D;
  });
}

// ---------------------------------------------------------------------------------------------
// Recurrent form

/**
 * One token: M_t = g·M_{t-1} + (1−g)·k̂ v̂ᵀ, r = qᵀ M_t. state [D, D], q/k̂/v̂ [D]; the gate as
 * log g and log(1−g) (numbers or scalars, so they can carry gradients).
 */
export function gateRecurrentStep(
  state: tf.Tensor2D,
  q: tf.Tensor1D,
  kHat: tf.Tensor1D,
  vHat: tf.Tensor1D,
  logGate: number | tf.Scalar,
  logOneMinusGate: number | tf.Scalar,
): { r: tf.Tensor1D; state: tf.Tensor2D } {
  return tf.tidy(() => {
    const D = q.shape[0];
    const g = typeof logGate === 'number' ? Math.exp(logGate) : tf.exp(logGate);
    const oneMinusG = typeof logOneMinusGate === 'number' ? Math.exp(logOneMinusGate) : tf.exp(logOneMinusGate);
    // (1−g)·k̂ v̂ᵀ as an outer product of the scaled k̂ (three passes over D² values per token, not four)
    const update = tf.mul(tf.reshape(tf.mul(kHat, oneMinusG), [D, 1]), tf.reshape(vHat, [1, D]));
    const next = tf.add(tf.mul(state, g), update) as tf.Tensor2D;
    const r = tf.reshape(tf.matMul(tf.reshape(q, [1, D]), next), [D]) as tf.Tensor1D;
    return { r, state: next };
  });
}

/** The recurrence token by token over a sequence (the slow, obviously-right form; decoding, tests). */
export function gateRecurrent(seq: GateSequence, initialState?: tf.Tensor2D | null): GateResult {
  return tf.tidy(() => {
    const [T, D] = seq.q.shape;
    const qs = splitChunks<tf.Tensor1D>(seq.q);
    const ks = splitChunks<tf.Tensor1D>(seq.kHat);
    const vs = splitChunks<tf.Tensor1D>(seq.vHat);
    const lgs = splitChunks<tf.Scalar>(seq.logGate);
    const l1ms = splitChunks<tf.Scalar>(seq.logOneMinusGate);
    if (T === 0) return { r: tf.zeros([0, D]) as tf.Tensor2D, state: initialState ? tf.clone(initialState) : (tf.zeros([D, D]) as tf.Tensor2D) };
    let state: tf.Tensor2D = initialState ?? (tf.zeros([D, D]) as tf.Tensor2D);
    const rs: tf.Tensor1D[] = [];
    for (let t = 0; t < T; t++) {
      const step = gateRecurrentStep(state, qs[t], ks[t], vs[t], lgs[t], l1ms[t]);
      rs.push(step.r);
      state = step.state;
    }
    return { r: tf.stack(rs) as tf.Tensor2D, state };
  });
}

// ---------------------------------------------------------------------------------------------
// Chunked parallel form

/**
 * Default chunk size. Per token the intra-chunk part costs ~2·C·D multiply-adds and the
 * chunk-to-chunk state ~2·D² (plus D² of memory traffic per chunk), so C ≈ D balances them; a
 * sequence no longer than one chunk needs no state at all (unless the final state is asked for).
 * Clamped to [64, 512]. Measured with bench/gate.bench.ts on wasm (2 shared cores): D = 64,
 * T = 512 is fastest at C = 64 (forward and forward+backward; 16/32 and 256/512 are 1.5–4×
 * slower); D = 4096, T = 512 is fastest at C = 512 (one chunk): ~1850 tok/s against 430 (C = 256),
 * 195 (C = 64) and 63 (C = 32) — and smaller chunks need a carried 64 MiB state per chunk for
 * backprop.
 */
export function defaultChunkSize(D: number): number {
  let c = 64;
  while (c < D && c < 512) c *= 2;
  return c;
}

/** Added to the log-weights of masked (non-causal) entries before exp: exp underflows to exactly 0. */
export const MASKED = -1e30;

/**
 * [n, n] values in (source s, target t) orientation, row-major: 1 where t > s, and the additive
 * causal mask (0 where t ≥ s, MASKED where t < s). Also the native engine's graph constants.
 */
export function causalTriangles(n: number): { strictlyAfter: Float32Array; causalMask: Float32Array } {
  const after = new Float32Array(n * n);
  const mask = new Float32Array(n * n);
  for (let s = 0; s < n; s++) {
    for (let t = 0; t < n; t++) {
      if (t > s) after[s * n + t] = 1;
      if (t < s) mask[s * n + t] = MASKED;
    }
  }
  return { strictlyAfter: after, causalMask: mask };
}

/** causalTriangles(n) as tensors. */
function triangles(n: number): { strictlyAfter: tf.Tensor2D; causalMask: tf.Tensor2D } {
  const t = causalTriangles(n);
  return { strictlyAfter: tf.tensor2d(t.strictlyAfter, [n, n]), causalMask: tf.tensor2d(t.causalMask, [n, n]) };
}

/**
 * Segment sums of the last axis of x [B, n], source-major: S[b, s, t] = Σ_{s<u≤t} x[b, u] for
 * t ≥ s, and MASKED for t < s. Each entry is a direct sum of the terms it covers (no difference
 * of prefix sums). The cumulative sum runs over the last axis: tfjs-core 4.22's Cumsum gradient
 * is wrong for any other axis (it transposes the result).
 */
function segmentSums(x: tf.Tensor2D): tf.Tensor3D {
  const [B, n] = x.shape;
  const { strictlyAfter, causalMask } = triangles(n);
  // terms[b, s, u] = x[b, u] where u > s; the cumulative sum over u up to t gives Σ_{s<u≤t}.
  const terms = tf.mul(tf.reshape(x, [B, 1, n]), strictlyAfter);
  return tf.add(tf.cumsum(terms, 2), causalMask) as tf.Tensor3D;
}

/**
 * x [N, ...] -> N tensors [...]. (tf.unstack over an axis of size 1 has a broken gradient in
 * tfjs-core 4.22: the tape hands Unpack's gradient a tensor instead of a list.)
 */
function splitChunks<T extends tf.Tensor>(x: tf.Tensor): T[] {
  return (x.shape[0] === 1 ? [tf.reshape(x, x.shape.slice(1))] : tf.unstack(x)) as T[];
}

function padRows<T extends tf.Tensor>(x: T, extra: number): T {
  if (extra === 0) return x;
  const pad: Array<[number, number]> = x.shape.map((_, i) => (i === 0 ? [0, extra] : [0, 0]) as [number, number]);
  return tf.pad(x, pad) as T;
}

/**
 * The chunked-parallel gate. Per chunk n of C tokens (state M entering it, M = 0 at first):
 *
 *   r_n     = (Q_n K̂_nᵀ ⊙ W_n) V̂_n  +  diag(Π_{u≤t} g_u) · Q_n M          (intra + carried)
 *   M_next  = (Π_{u∈n} g_u) · M  +  (K̂_n ⊙ w_end)ᵀ V̂_n                    (state after chunk n)
 *
 * with W_n[t, s] = w_{t,s} inside the chunk and w_end[s] = w_{C-1,s}. The per-token decays of all
 * chunks are computed at once ([N, C, C] segment sums); the chunks are then walked in order with
 * plain 2-D matmuls (no transpose flags, no batch): tfjs-backend-wasm runs exactly those on
 * XNNPACK and everything else in a scalar loop. Cost ~2·T·C·D for the intra part and ~2·T·D²
 * for the carried state, which a sequence of one chunk does not need unless the final state is
 * asked for.
 */
function chunkedImpl(seq: GateSequence, chunkSize: number, initialState: tf.Tensor2D | null, wantState: boolean): { r: tf.Tensor2D; state: tf.Tensor2D | null } {
  const [T, D] = seq.q.shape;
  if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new Error(`chunk size must be a positive integer, got ${chunkSize}`);
  if (T === 0) return { r: tf.zeros([0, D]) as tf.Tensor2D, state: wantState ? (initialState ? tf.clone(initialState) : (tf.zeros([D, D]) as tf.Tensor2D)) : null };
  const C = Math.min(chunkSize, T);
  const N = Math.ceil(T / C);
  const extra = N * C - T;
  // Padding tokens (at the end only) have k̂ = v̂ = 0 and log g = log(1−g) = 0: they add nothing to
  // the state, do not decay it, and their outputs are dropped.
  const q = padRows(seq.q, extra);
  const kT = tf.transpose(padRows(seq.kHat, extra)) as tf.Tensor2D; // [D, N·C]: k̂ᵀ, sliced per chunk
  const v = padRows(seq.vHat, extra);
  const logGate = tf.reshape(padRows(seq.logGate, extra), [N, C]) as tf.Tensor2D;
  const logOneMinusGate = tf.reshape(padRows(seq.logOneMinusGate, extra), [N, C]) as tf.Tensor2D;

  // log w = log(1−g_s) + Σ_{s<u≤t} log g_u, source-major [N, s, t] (≤ 0; MASKED where t < s).
  const logW = tf.add(segmentSums(logGate), tf.reshape(logOneMinusGate, [N, C, 1])) as tf.Tensor3D;
  const weights = splitChunks<tf.Tensor2D>(tf.transpose(tf.exp(logW), [0, 2, 1])); // per chunk [t, s]

  const carry = N > 1 || initialState !== null;
  const lastWithState = wantState ? N - 1 : N - 2; // the state after chunk n is needed for n ≤ this
  // Π_{u≤t} g_u within each chunk (reads of the carried state), [C, 1] per chunk.
  const withinDecay = carry ? splitChunks<tf.Tensor2D>(tf.reshape(tf.exp(tf.cumsum(logGate, 1)), [N, C, 1])) : [];
  // w_{C-1, s}: weight of token s in the state at the end of its chunk, [1, C] per chunk.
  const endWeights = lastWithState >= 0 ? splitChunks<tf.Tensor2D>(tf.reshape(tf.exp(tf.slice(logW, [0, 0, C - 1], [N, C, 1])), [N, 1, C])) : [];
  // Π g over each chunk.
  const chunkDecay = lastWithState >= 0 && (initialState || N > 1) ? splitChunks<tf.Scalar>(tf.exp(tf.sum(logGate, 1))) : [];

  let state: tf.Tensor2D | null = initialState;
  const outputs: tf.Tensor2D[] = [];
  for (let n = 0; n < N; n++) {
    const qn = tf.slice(q, [n * C, 0], [C, D]);
    const kTn = tf.slice(kT, [0, n * C], [D, C]);
    const vn = tf.slice(v, [n * C, 0], [C, D]);
    let rn: tf.Tensor2D = tf.matMul(tf.mul(tf.matMul(qn, kTn), weights[n]) as tf.Tensor2D, vn);
    if (state) rn = tf.add(rn, tf.mul(tf.matMul(qn, state), withinDecay[n])) as tf.Tensor2D;
    if (n <= lastWithState) {
      const own = tf.matMul(tf.mul(kTn, endWeights[n]) as tf.Tensor2D, vn); // Σ_s w_end[s] k̂_s v̂_sᵀ, [D, D]
      state = state ? (tf.add(tf.mul(state, chunkDecay[n]), own) as tf.Tensor2D) : (own as tf.Tensor2D);
    }
    outputs.push(rn);
  }
  let r = (N === 1 ? outputs[0] : tf.concat(outputs, 0)) as tf.Tensor2D;
  if (extra > 0) r = tf.slice(r, [0, 0], [T, D]);
  return { r, state: wantState ? state : null };
}

/**
 * The gate over a whole sequence in chunked-parallel form: r [T, D] and the final state M_T
 * [D, D]. `initialState` continues from an earlier call (M_0 = 0 without it). Differentiable.
 */
export function gateChunked(seq: GateSequence, chunkSize?: number, initialState?: tf.Tensor2D | null): GateResult {
  return tf.tidy(() => {
    const { r, state } = chunkedImpl(seq, chunkSize ?? defaultChunkSize(seq.q.shape[1]), initialState ?? null, true);
    return { r, state: state! };
  });
}

/**
 * Only the outputs r [T, D] (prefill without decoding afterwards, training): skips the final
 * state, which for T ≤ chunk size is most of the work (T·D² against T²·D).
 */
export function gateChunkedOutput(seq: GateSequence, chunkSize?: number, initialState?: tf.Tensor2D | null): tf.Tensor2D {
  return tf.tidy(() => chunkedImpl(seq, chunkSize ?? defaultChunkSize(seq.q.shape[1]), initialState ?? null, false).r);
}

// ---------------------------------------------------------------------------------------------
// The gate as a decoder layer's attention part (policies adapter / engine / fixed)

/**
 * The gate's per-token inputs for a gated layer: q, k̂, v̂ (GQA-expanded to D_q) and log g,
 * log(1−g). x [T, hidden] is the normed layer input; `rope` holds cos/sin for the tokens'
 * positions (used by `engine` only).
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
      logs = gateLogs(policy.kind === 'adapter' ? adapterGateLogit(s, policy) : s);
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
    return adapterOutput(projected, x, policy);
  });
}

/**
 * The gate continued from a carried state (decoding): one token by the recurrent step, several
 * by the chunked-parallel form; `previous` null means M = 0. Returns r [T, D] and the new state.
 */
export function gateContinue(seq: GateSequence, previous: tf.Tensor2D | null, chunkSize?: number): GateResult {
  if (seq.q.shape[0] !== 1) return gateChunked(seq, chunkSize, previous);
  return tf.tidy(() => {
    const D = seq.q.shape[1];
    const step = gateRecurrentStep(
      previous ?? (tf.zeros([D, D]) as tf.Tensor2D),
      tf.reshape(seq.q, [D]) as tf.Tensor1D,
      tf.reshape(seq.kHat, [D]) as tf.Tensor1D,
      tf.reshape(seq.vHat, [D]) as tf.Tensor1D,
      tf.reshape(seq.logGate, []) as tf.Scalar,
      tf.reshape(seq.logOneMinusGate, []) as tf.Scalar,
    );
    return { r: tf.reshape(step.r, [1, D]) as tf.Tensor2D, state: step.state };
  });
}
