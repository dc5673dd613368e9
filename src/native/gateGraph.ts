/**
 * The symbiotic gate (src/model/gate.ts) as ONNX ops, for the native engine's graphs:
 *
 *   M_t = g_t·M_{t-1} + (1 − g_t)·k̂_t v̂_tᵀ,   r_t = q_tᵀ M_t,   one D×D state, one scalar gate per token.
 *
 * - `gateChunkedOps` (prefill, M_0 = 0): the chunked log-space form of `gateChunked`, every chunk at
 *   once as batched MatMuls — intra-chunk weights from segment sums (CumSum over a masked [C, C]
 *   matrix, never a difference of prefix sums), the state entering chunk n as a weighted sum of the
 *   earlier chunks' own contributions (the same segment sums over chunk totals, [N−1, N−1]). The
 *   carried part covers chunks 1..N−1 only, so a sequence of one chunk does no D² work at all.
 * - `gateStepOps` (decode): one recurrent step on a [B, D, D] state; `gateDecodeStepOps` the same
 *   step from the raw decode inputs in fewer ops (what the decoder runs on small states).
 * - `gateDeferredStepOps` / `gateFoldOps` (decode on large states): the state as M_base plus the
 *   last ≤ C tokens; a step reads M_base once (the recurrent step makes ~7 passes over D²), and the
 *   runner folds the buffer into M_base every C tokens (`buildGateFoldGraph`).
 *
 * Tensors carry a batch axis B (windows); sequences are [B, T, D], per-token gate logs [B, T, 1].
 * T may be symbolic: padding to whole chunks is computed in the graph.
 */
import { GraphBuilder } from '../runtime/ort/graph.ts';
import { causalTriangles, MASKED } from '../model/gate.ts';
/** Slice end meaning "to the end of the axis". */
const TO_END = 2 ** 62;

/** Σ of x·x over the last axis, kept: [.., D] -> [.., 1]. */
function sumSquares(b: GraphBuilder, x: string): string {
  return b.node('ReduceSum', [b.node('Mul', [x, x]), b.constI([-1])], { keepdims: 1 });
}

/** ‖x_t‖ over the last axis, kept: [B, T, D] -> [B, T, 1]. */
export function rowNormOps(b: GraphBuilder, x: string): string {
  return b.node('Sqrt', [sumSquares(b, x)]);
}

/** k̂ = k / (‖k‖ + 1e-8) (k GQA-expanded, [B, T, D]). */
export function normalizeKeysOps(b: GraphBuilder, k: string): string {
  return b.node('Div', [k, b.node('Add', [rowNormOps(b, k), b.constF([1e-8], [1])])]);
}

/** v̂ = v / (‖v‖ + 1e-8) · ‖x‖ (v GQA-expanded [B, T, D], xNorm [B, T, 1]). */
export function normalizeValuesOps(b: GraphBuilder, v: string, xNorm: string): string {
  const scale = b.node('Div', [xNorm, b.node('Add', [rowNormOps(b, v), b.constF([1e-8], [1])])]);
  return b.node('Mul', [v, scale]);
}

/** [B, T, nKv·hd] -> [B, T, nKv·nRep·hd]: each kv head repeated for its nRep query heads (HF repeat_kv). */
export function repeatKvOps(b: GraphBuilder, x: string, nKv: number, nRep: number, headDim: number): string {
  if (nRep === 1) return x;
  const heads = b.node('Reshape', [x, b.constI([0, 0, nKv, 1, headDim])]);
  const expanded = b.node('Expand', [heads, b.constI([1, 1, 1, nRep, 1])]);
  return b.node('Reshape', [expanded, b.constI([0, 0, nKv * nRep * headDim])]);
}

/** s_t = mean over heads of q_{t,h}·k_{t,h}/√hd = (q_t·k_t)/(nHeads·√hd), [B, T, 1]; k GQA-expanded. */
export function gateScoresOps(b: GraphBuilder, q: string, k: string, nHeads: number, headDim: number): string {
  const dot = b.node('ReduceSum', [b.node('Mul', [q, k]), b.constI([-1])], { keepdims: 1 });
  return b.node('Mul', [dot, b.constF([1 / (nHeads * Math.sqrt(headDim))], [1])]);
}

/** log σ(z) = −softplus(−z) and log(1 − σ(z)) = −softplus(z): finite for every finite z. */
export function gateLogsOps(b: GraphBuilder, z: string): { logGate: string; logOneMinusGate: string } {
  return {
    logGate: b.node('Neg', [b.node('Softplus', [b.node('Neg', [z])])]),
    logOneMinusGate: b.node('Neg', [b.node('Softplus', [z])]),
  };
}

/** A constant gate g for every token of `like` [B, T, ...]: log g and log(1−g) as [B, T, 1]. */
export function constantGateLogsOps(b: GraphBuilder, like: string, g: number): { logGate: string; logOneMinusGate: string } {
  const shape = b.node('Concat', [b.node('Shape', [like], { start: 0, end: 2 }), b.constI([1])], { axis: 0 });
  return {
    logGate: b.node('Expand', [b.constF([Math.log(g)], [1, 1, 1]), shape]),
    logOneMinusGate: b.node('Expand', [b.constF([Math.log1p(-g)], [1, 1, 1]), shape]),
  };
}

/** The gate's per-token inputs as graph values. q, kHat, vHat [B, T, D]; logGate, logOneMinusGate [B, T, 1]. */
export interface GateValues {
  q: string;
  kHat: string;
  vHat: string;
  logGate: string;
  logOneMinusGate: string;
}

/** Constant [n, n] triangles in (source s, target t) orientation (model/gate.ts causalTriangles). */
export function constTriangles(b: GraphBuilder, n: number): { strictlyAfter: string; causalMask: string } {
  const t = causalTriangles(n);
  return { strictlyAfter: b.constF(t.strictlyAfter, [n, n]), causalMask: b.constF(t.causalMask, [n, n]) };
}

/** The same triangles for a size known only at run time (`n`: int64 scalar). */
function dynamicTriangles(b: GraphBuilder, n: string): { strictlyAfter: string; causalMask: string } {
  const idx = b.node('Range', [b.constI([0], []), n, b.constI([1], [])]);
  const rows = b.node('Unsqueeze', [idx, b.constI([1])]); // s, [n, 1]
  const cols = b.node('Unsqueeze', [idx, b.constI([0])]); // t, [1, n]
  const strictlyAfter = b.node('Cast', [b.node('Less', [rows, cols])], { to: 1 });
  const causalMask = b.node('Mul', [b.node('Cast', [b.node('Less', [cols, rows])], { to: 1 }), b.constF([MASKED], [1])]);
  return { strictlyAfter, causalMask };
}

/**
 * Segment sums of x [B, N, n] over its last axis, source-major: S[.., s, t] = Σ_{s<u≤t} x[.., u]
 * for t ≥ s, MASKED for t < s — each entry a direct sum (CumSum of masked terms), as gate.ts.
 * Returns [B, N, n(s), n(t)].
 */
function segmentSumsOps(b: GraphBuilder, x: string, tri: { strictlyAfter: string; causalMask: string }, axisOfN: number): string {
  const terms = b.node('Mul', [b.node('Unsqueeze', [x, b.constI([axisOfN])]), tri.strictlyAfter]);
  return b.node('Add', [b.node('CumSum', [terms, b.constI([-1], [])]), tri.causalMask]);
}

/**
 * The gate's log-weights within a block of n tokens, source-major: log w[.., s, t] = log(1−g_s) +
 * Σ_{s<u≤t} log g_u for t ≥ s (MASKED for t < s: exp gives 0). logGate / logOneMinusGate
 * [.., n] with n on axis `axisOfN`; tri = constTriangles(b, n). Returns [.., n(s), n(t)].
 */
export function gateLogWeightsOps(b: GraphBuilder, logGate: string, logOneMinusGate: string, tri: { strictlyAfter: string; causalMask: string }, axisOfN: number): string {
  return b.node('Add', [segmentSumsOps(b, logGate, tri, axisOfN), b.node('Unsqueeze', [logOneMinusGate, b.constI([axisOfN + 1])])]);
}

/** Swap the last two axes of a rank-`rank` tensor. */
function swapLast(b: GraphBuilder, x: string, rank: number): string {
  const perm = Array.from({ length: rank }, (_, i) => i);
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1]!, perm[rank - 2]!];
  return b.node('Transpose', [x], { perm });
}

/** Slice x along `axis` from `start` to `end` (end may be negative or TO_END). */
function sliceAxis(b: GraphBuilder, x: string, axis: number, start: number, end: number): string {
  return b.node('Slice', [x, b.constI([start]), b.constI([end]), b.constI([axis])]);
}

/**
 * The chunked-parallel gate from M_0 = 0: r [B, T, D] for the gate inputs over a whole sequence.
 * Chunk n (of C tokens, N chunks after zero-padding T up; padding has k̂ = v̂ = 0 and log g =
 * log(1−g) = 0, so it neither adds to nor decays the state):
 *
 *   r_n = (Q_n K̂_nᵀ ⊙ W_n) V̂_n + diag(Π_{u≤t} g_u)·Q_n M_n,   M_{n+1} = (Π_{u∈n} g_u)·M_n + (K̂_n ⊙ w_end)ᵀ V̂_n
 *
 * with M_n = Σ_{m<n} (Π_{m<j<n} chunk decay_j)·own_m computed as one [N−1, N−1] × [N−1, D²] MatMul.
 */
export function gateChunkedOps(b: GraphBuilder, g: GateValues, D: number, chunkSize: number): string {
  const C = chunkSize;
  if (!Number.isInteger(C) || C < 1) throw new Error(`chunk size must be a positive integer, got ${C}`);
  const T = b.node('Shape', [g.q], { start: 1, end: 2 }); // [1] int64
  const cI = b.constI([C]);
  const extra = b.node('Mod', [b.node('Sub', [cI, b.node('Mod', [T, cI])]), cI]);
  const pads = b.node('Concat', [b.constI([0, 0, 0, 0]), extra, b.constI([0])], { axis: 0 }); // pad the end of axis 1 (rank 3)
  const pad = (x: string) => b.node('Pad', [x, pads]);
  const chunksOf = (x: string, last: number[]) => b.node('Reshape', [pad(x), b.constI([0, -1, C, ...last])]);
  const q = chunksOf(g.q, [D]); // [B, N, C, D]
  const k = chunksOf(g.kHat, [D]);
  const v = chunksOf(g.vHat, [D]);
  const logGate = chunksOf(g.logGate, []); // [B, N, C]
  const logOneMinusGate = chunksOf(g.logOneMinusGate, []);

  // log w = log(1−g_s) + Σ_{s<u≤t} log g_u, [B, N, s, t]; the intra-chunk part.
  const logW = gateLogWeightsOps(b, logGate, logOneMinusGate, constTriangles(b, C), 2);
  const w = b.node('Exp', [logW]);
  const scores = b.node('MatMul', [q, swapLast(b, k, 4)]); // [B, N, t, s]
  const intra = b.node('MatMul', [b.node('Mul', [scores, swapLast(b, w, 4)]), v]); // [B, N, C, D]

  // The carried state, needed by chunks 1..N−1 and made from chunks 0..N−2.
  const endWeights = b.node('Unsqueeze', [b.node('Gather', [w, b.constI([C - 1], [])], { axis: 3 }), b.constI([3])]); // w_{C−1,s}, [B, N, C, 1]
  const kEnd = sliceAxis(b, b.node('Mul', [k, endWeights]), 1, 0, -1); // [B, N−1, C, D]
  const own = b.node('MatMul', [swapLast(b, kEnd, 4), sliceAxis(b, v, 1, 0, -1)]); // Σ_s w_end[s] k̂_s v̂_sᵀ, [B, N−1, D, D]
  const chunkLog = sliceAxis(b, b.node('ReduceSum', [logGate, b.constI([2])], { keepdims: 0 }), 1, 0, -1); // log Π g per chunk, [B, N−1]
  const n1 = b.node('Squeeze', [b.node('Shape', [chunkLog], { start: 1, end: 2 }), b.constI([0])]); // N−1, scalar
  // decay[m, t'] = Π_{m<j≤t'} chunk g_j: weight of own_m in the state after chunk t' (0 for t' < m).
  const decay = b.node('Exp', [segmentSumsOps(b, chunkLog, dynamicTriangles(b, n1), 1)]); // [B, m, t']
  const statesFlat = b.node('MatMul', [swapLast(b, decay, 3), b.node('Reshape', [own, b.constI([0, 0, D * D])])]); // [B, t', D²]
  const states = b.node('Reshape', [statesFlat, b.constI([0, 0, D, D])]); // M after chunk t' = M entering chunk t'+1
  const withinDecay = b.node('Unsqueeze', [b.node('Exp', [b.node('CumSum', [logGate, b.constI([2], [])])]), b.constI([3])]); // Π_{u≤t} g_u, [B, N, C, 1]
  const carried = b.node('Mul', [b.node('MatMul', [sliceAxis(b, q, 1, 1, TO_END), states]), sliceAxis(b, withinDecay, 1, 1, TO_END)]); // [B, N−1, C, D]
  const carriedAll = b.node('Pad', [carried, b.constI([0, 1, 0, 0, 0, 0, 0, 0])]); // chunk 0 carries nothing

  const r = b.node('Reshape', [b.node('Add', [intra, carriedAll]), b.constI([0, -1, D])]);
  return b.node('Slice', [r, b.constI([0]), T, b.constI([1])]);
}

/**
 * One recurrent step (T = 1): M' = g·M + (1−g)·k̂ v̂ᵀ, r = qᵀ M'. state [B, D, D]; q/k̂/v̂ [B, 1, D];
 * gate logs [B, 1, 1]. Returns r [B, 1, D] and M'.
 */
export function gateStepOps(b: GraphBuilder, g: GateValues, state: string): { r: string; state: string } {
  const gate = b.node('Exp', [g.logGate]);
  const oneMinus = b.node('Exp', [g.logOneMinusGate]);
  const update = b.node('MatMul', [swapLast(b, b.node('Mul', [g.kHat, oneMinus]), 3), g.vHat]); // [B, D, D]
  const next = b.node('Add', [b.node('Mul', [state, gate]), update]);
  return { r: b.node('MatMul', [g.q, next]), state: next };
}

/**
 * The decode step's tokens since the last fold, as graph values: a shift register of the last C
 * tokens, newest last, empty slots zero (k̂ = v̂ = 0 and log g = log(1−g) = 0: they neither add to
 * nor decay anything, as the prefill's padding). keys / values [B, C, D]; logs [B, C, 2] = (log g, log(1−g)).
 */
export interface GateBuffer {
  keys: string;
  values: string;
  logs: string;
}

/**
 * Weights of the buffered tokens in the state after the newest one, from the buffer's logs [B, C, 2]:
 * w_s = (1−g_s)·Π_{u>s} g_u (each product a direct sum of logs: CumSum exclusive, from the end), [B, C, 1];
 * and decay = Π_u g_u [B, 1, 1], the weight of the state before the buffer.
 */
function bufferWeightsOps(b: GraphBuilder, logs: string): { w: string; decay: string } {
  const logGate = sliceAxis(b, logs, 2, 0, 1);
  const logOneMinusGate = sliceAxis(b, logs, 2, 1, 2);
  const after = b.node('CumSum', [logGate, b.constI([1], [])], { exclusive: 1, reverse: 1 });
  return {
    w: b.node('Exp', [b.node('Add', [logOneMinusGate, after])]),
    decay: b.node('Exp', [b.node('ReduceSum', [logGate, b.constI([1])], { keepdims: 1 })]),
  };
}

/**
 * One decode step on the deferred state (T = 1), the decoder's form of `gateStepOps`: the state is
 * M_base [B, D, D] (the state at the last fold, read only here) plus the buffer of the tokens since,
 * so a step reads M_base once and writes no D² value:
 *
 *   r_t = (Π_{s in buffer} g_s)·q_tᵀ M_base + Σ_{s in buffer} w_s (q_t·k̂_s) v̂_s,   w_s = (1−g_s)·Π_{s<u≤t} g_u
 *
 * The token is pushed into the buffer first (the oldest slot falls off: the runner folds a full
 * buffer into M_base with `gateFoldOps` before that happens). Returns r [B, 1, D] and the new buffer.
 */
export function gateDeferredStepOps(b: GraphBuilder, g: GateValues, base: string, buffer: GateBuffer, D: number, C: number): { r: string; buffer: GateBuffer } {
  const push = (x: string, token: string) => b.node('Concat', [sliceAxis(b, x, 1, 1, TO_END), token], { axis: 1 });
  const next: GateBuffer = {
    keys: push(buffer.keys, g.kHat),
    values: push(buffer.values, g.vHat),
    logs: push(buffer.logs, b.node('Concat', [g.logGate, g.logOneMinusGate], { axis: 2 })),
  };
  const { w, decay } = bufferWeightsOps(b, next.logs);
  const scores = b.node('MatMul', [next.keys, b.node('Reshape', [g.q, b.constI([0, D, 1])])]); // q·k̂_s, [B, C, 1]
  const coeff = b.node('Reshape', [b.node('Mul', [scores, w]), b.constI([0, 1, C])]);
  const recent = b.node('MatMul', [coeff, next.values]); // [B, 1, D]
  const carried = b.node('Mul', [b.node('MatMul', [g.q, base]), decay]);
  return { r: b.node('Add', [carried, recent]), buffer: next };
}

/**
 * Fold a full buffer into the deferred state: M_base' = (Π_s g_s)·M_base + Σ_s w_s k̂_s v̂_sᵀ
 * (w_s as in `gateDeferredStepOps` at the buffer's last token). base [B, D, D] -> [B, D, D].
 */
export function gateFoldOps(b: GraphBuilder, base: string, buffer: GateBuffer): string {
  const { w, decay } = bufferWeightsOps(b, buffer.logs);
  const own = b.node('MatMul', [swapLast(b, b.node('Mul', [buffer.keys, w]), 3), buffer.values]); // [B, D, D]
  return b.node('Add', [b.node('Mul', [base, decay]), own]);
}

/** Input and output names of the fold graph (`buildGateFoldGraph`). */
export const FOLD_IO = { base: 'base', keys: 'keys', values: 'values', logs: 'logs', out: 'base_out' } as const;

/** The fold as a graph of its own (no weights): one per (D, C), shared by every layer. */
export function buildGateFoldGraph(name: string, D: number, C: number): Uint8Array {
  const b = new GraphBuilder(name);
  const base = b.input(FOLD_IO.base, 'float32', ['B', D, D]);
  const buffer = { keys: b.input(FOLD_IO.keys, 'float32', ['B', C, D]), values: b.input(FOLD_IO.values, 'float32', ['B', C, D]), logs: b.input(FOLD_IO.logs, 'float32', ['B', C, 2]) };
  b.output(gateFoldOps(b, base, buffer), 'float32', ['B', D, D], FOLD_IO.out);
  return b.toBytes();
}

/** ‖x‖ over the last axis, kept, as one op: [B, 1, D] -> [B, 1, 1] (the decode path's rowNormOps). */
export function decodeRowNormOps(b: GraphBuilder, x: string): string {
  return b.node('ReduceL2', [x], { axes: [-1], keepdims: 1 });
}

/**
 * The plain recurrent step from the raw decode inputs, in as few ops as the maths allows (T = 1;
 * what the decoder runs on small states, where a step's time is mostly per-op overhead):
 *
 *   M' = g·M + (1−g)/(‖k‖+1e-8) · k (v·‖x‖/(‖v‖+1e-8))ᵀ,   r = qᵀ M'
 *
 * — `gateStepOps` on k̂, v̂ and σ-gates, with each scalar factor applied once. q, k, v [B, 1, D]
 * (k, v GQA-expanded), xNorm [B, 1, 1], the gate as its logit z [B, 1, 1] or a constant g;
 * state [B, D, D]. Returns r [B, 1, D] and M'.
 */
export function gateDecodeStepOps(b: GraphBuilder, q: string, k: string, v: string, xNorm: string, gate: { z: string } | { constant: number }, state: string, D: number): { r: string; state: string } {
  const eps = b.constF([1e-8], [1]);
  const [g, oneMinus] = 'z' in gate ? [b.node('Sigmoid', [gate.z]), b.node('Sigmoid', [b.node('Neg', [gate.z])])] : [b.constF([gate.constant], [1]), b.constF([1 - gate.constant], [1])];
  const kScaled = b.node('Mul', [k, b.node('Div', [oneMinus, b.node('Add', [decodeRowNormOps(b, k), eps])])]);
  const vHat = b.node('Mul', [v, b.node('Div', [xNorm, b.node('Add', [decodeRowNormOps(b, v), eps])])]);
  const update = b.node('MatMul', [b.node('Reshape', [kScaled, b.constI([0, D, 1])]), vHat]); // [B, D, D]
  const next = b.node('Add', [b.node('Mul', [state, g]), update]);
  return { r: b.node('MatMul', [q, next]), state: next };
}
