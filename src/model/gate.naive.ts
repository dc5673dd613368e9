/**
 * Slow, obvious float64 references of the symbiotic gate (src/model/gate.ts), as plain loops —
 * what the tfjs kernels are tested against (test/gate.test.ts) and what the benchmark's per-token
 * comparison computes. Nothing here is fast; everything here is easy to check by reading.
 *
 *   M_t = g_t·M_{t-1} + (1 − g_t)·k̂_t v̂_tᵀ,   r_t = q_tᵀ M_t,   g_t = σ(z_t)
 *
 * Inputs are row-major flat arrays: q, k̂, v̂ [T·D], gate logits z [T]; states [D·D].
 */

/** σ(z) in float64 without overflow for any finite z (so 1 − g = σ(−z) is exact too). */
export function sigmoid64(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

/** log σ(z) in float64, finite for every finite z. */
export function logSigmoid64(z: number): number {
  return z >= 0 ? -Math.log1p(Math.exp(-z)) : z - Math.log1p(Math.exp(z));
}

export interface NaiveGateResult {
  /** r [T·D]. */
  r: Float64Array;
  /** M_T [D·D]. */
  state: Float64Array;
}

/** The recurrence token by token, from M_0 = `init` (zero without it). */
export function gateRecurrentNaive(q: ArrayLike<number>, kHat: ArrayLike<number>, vHat: ArrayLike<number>, z: ArrayLike<number>, T: number, D: number, init?: ArrayLike<number>): NaiveGateResult {
  const M = new Float64Array(D * D);
  if (init) for (let i = 0; i < D * D; i++) M[i] = init[i]!;
  const r = new Float64Array(T * D);
  for (let t = 0; t < T; t++) {
    const g = sigmoid64(z[t]!);
    const oneMinusG = sigmoid64(-z[t]!);
    for (let i = 0; i < D; i++) {
      const ki = kHat[t * D + i]! * oneMinusG;
      for (let j = 0; j < D; j++) M[i * D + j] = g * M[i * D + j]! + ki * vHat[t * D + j]!;
    }
    for (let j = 0; j < D; j++) {
      let acc = 0;
      for (let i = 0; i < D; i++) acc += q[t * D + i]! * M[i * D + j]!;
      r[t * D + j] = acc;
    }
  }
  return { r, state: M };
}

/**
 * The chunked-parallel form, written out: inside each chunk of C tokens
 *   r_t = Σ_{s≤t in chunk} w_{t,s} (q_t·k̂_s) v̂_s  +  (Π_{chunk start≤u≤t} g_u) · q_tᵀ M,
 *   w_{t,s} = (1−g_s) Π_{s<u≤t} g_u,
 * and the state carried to the next chunk M ← (Π_chunk g)·M + Σ_s w_{end,s} k̂_s v̂_sᵀ. The same
 * function as `gateRecurrentNaive` (up to rounding); it checks the unrolled algebra gateChunked uses.
 */
export function gateChunkedNaive(q: ArrayLike<number>, kHat: ArrayLike<number>, vHat: ArrayLike<number>, z: ArrayLike<number>, T: number, D: number, C: number, init?: ArrayLike<number>): NaiveGateResult {
  if (!Number.isInteger(C) || C < 1) throw new Error(`chunk size must be a positive integer, got ${C}`);
  const M = new Float64Array(D * D);
  if (init) for (let i = 0; i < D * D; i++) M[i] = init[i]!;
  const r = new Float64Array(T * D);
  const logG = Array.from({ length: T }, (_, t) => logSigmoid64(z[t]!));
  const log1mG = Array.from({ length: T }, (_, t) => logSigmoid64(-z[t]!));
  for (let start = 0; start < T; start += C) {
    const end = Math.min(start + C, T);
    for (let t = start; t < end; t++) {
      // carried part: decay of the entering state up to t
      let decay = 0;
      for (let u = start; u <= t; u++) decay += logG[u]!;
      const carried = Math.exp(decay);
      for (let j = 0; j < D; j++) {
        let acc = 0;
        for (let i = 0; i < D; i++) acc += q[t * D + i]! * M[i * D + j]!;
        r[t * D + j] = carried * acc;
      }
      // intra-chunk part
      for (let s = start; s <= t; s++) {
        let logW = log1mG[s]!;
        for (let u = s + 1; u <= t; u++) logW += logG[u]!;
        let qk = 0;
        for (let i = 0; i < D; i++) qk += q[t * D + i]! * kHat[s * D + i]!;
        const w = Math.exp(logW) * qk;
        for (let j = 0; j < D; j++) r[t * D + j] += w * vHat[s * D + j]!;
      }
    }
    // state after the chunk
    let chunkLog = 0;
    for (let u = start; u < end; u++) chunkLog += logG[u]!;
    const chunkDecay = Math.exp(chunkLog);
    for (let i = 0; i < D * D; i++) M[i] *= chunkDecay;
    for (let s = start; s < end; s++) {
      let logW = log1mG[s]!;
      for (let u = s + 1; u < end; u++) logW += logG[u]!;
      const w = Math.exp(logW);
      for (let i = 0; i < D; i++) {
        const ki = w * kHat[s * D + i]!;
        for (let j = 0; j < D; j++) M[i * D + j] += ki * vHat[s * D + j]!;
      }
    }
  }
  return { r, state: M };
}
