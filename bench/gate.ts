/**
 * (a) The symbiotic gate, forward + backward: the engine's chunked-parallel form (`gateChunked`,
 * src/model/gate.ts) against its recurrent form (`gateRecurrent`), which does per token what the
 * SYNAXIM scripts' loop does:
 *
 *   for t in range(T):
 *       g = sigmoid(z[t])
 *       M = g * M + (1 - g) * torch.outer(k_hat[t], v_hat[t])     # D×D outer product and update
 *       r[t] = q[t] @ M
 *
 * differentiated by autodiff (here tfjs's tape, there torch's), as the scripts train. Gradients are
 * taken w.r.t. the gate logits z (the path of the adapter's gate_bias and gate_scale) of
 * Σ r ⊙ W_r + Σ M_T ⊙ W_M, so both forms compute every output they would in training and the
 * final state. The training path proper (`gateChunkedOutput`: no final state, as distillation
 * uses it) is timed too.
 *
 * The loop's tape keeps ~3 D×D tensors per token (192 MiB at D = 4096): T = 64 would need 12 GiB,
 * far beyond the 4 GiB wasm heap, so the loop is timed on its first `loopTokens` tokens and scaled
 * to T (its cost per token is constant: every step does the same D×D work). That extrapolation is
 * labelled in the results.
 */
import * as tf from '@tensorflow/tfjs-core';
import { defaultChunkSize, gateChunked, gateChunkedOutput, gateLogs, gateRecurrent, type GateSequence } from '../src/model/gate.ts';
import { pseudoRandom } from '../src/util/random.ts';
import { sig } from './machine.ts';
import { interleaved, type Timing } from './timing.ts';

export interface GateBenchOptions {
  /** D_q = heads · head_dim (4096 for Magnus: 32 heads × 128; the 8 kv heads are expanded before the gate). */
  D: number;
  Ts: number[];
  /** Tokens the per-token loop is timed on (then scaled to T). */
  loopTokens: number;
  reps: number;
  chunk?: number;
}

export interface GateBenchRow {
  T: number;
  D: number;
  chunk: number;
  /** gateChunked (outputs + final state), forward + backward, ms. */
  chunkedFwdBwdMs: number;
  /** gateChunkedOutput (the training path, no final state), forward + backward, ms. */
  chunkedOutputFwdBwdMs: number;
  /** Per-token loop, forward + backward, ms per token (timed on loopTokens tokens). */
  loopFwdBwdMsPerToken: number;
  loopTokensTimed: number;
  /** loopFwdBwdMsPerToken · T: the loop's time at T, extrapolated (labelled). */
  loopFwdBwdMsAtT: number;
  /** Forward only, for reference. */
  chunkedFwdMs: number;
  loopFwdMsPerToken: number;
  /** loop (at T) / chunked: the headline ratio (with final state). */
  speedup: number;
  /** loop (at T) / chunked training path (no final state). */
  speedupTrainingPath: number;
  forwardSpeedup: number;
  note: string;
}

function inputs(T: number, D: number, seed: number): { q: tf.Tensor2D; kHat: tf.Tensor2D; vHat: tf.Tensor2D; z: tf.Tensor1D; wR: tf.Tensor2D; wM: tf.Tensor2D } {
  return tf.tidy(() => {
    const q = tf.tensor2d(pseudoRandom(T * D, seed), [T, D]);
    const k = tf.tensor2d(pseudoRandom(T * D, seed + 1), [T, D]);
    const kHat = tf.div(k, tf.norm(k, 'euclidean', 1, true)) as tf.Tensor2D;
    const vHat = tf.tensor2d(pseudoRandom(T * D, seed + 2), [T, D]);
    // gate logits spread around σ(1) ≈ 0.73 (both saturated ends occur)
    const z = tf.add(tf.mul(tf.tensor1d(pseudoRandom(T, seed + 3)), 3), 1) as tf.Tensor1D;
    const wR = tf.tensor2d(pseudoRandom(T * D, seed + 4), [T, D]);
    const wM = tf.tensor2d(pseudoRandom(D * D, seed + 5), [D, D]);
    return { q, kHat, vHat, z, wR, wM };
  });
}

/**
 * The per-token loop the chunked form is timed against: the product's recurrent form
 * (`gateRecurrent`, src/model/gate.ts; its float64 reference is src/model/gate.naive.ts), fed gate
 * logits as the scripts' loop is. Same D×D work per token as the scripts' loop (see the file
 * comment), differentiable by the tape. r [T, D] and M_T [D, D].
 */
export function perTokenLoop(q: tf.Tensor2D, kHat: tf.Tensor2D, vHat: tf.Tensor2D, z: tf.Tensor1D): { r: tf.Tensor2D; state: tf.Tensor2D } {
  return gateRecurrent(chunkedSeq(q, kHat, vHat, z)); // gateRecurrent tidies its own intermediates
}

function chunkedSeq(q: tf.Tensor2D, kHat: tf.Tensor2D, vHat: tf.Tensor2D, z: tf.Tensor1D): GateSequence {
  return { q, kHat, vHat, ...gateLogs(z) };
}

/** d/dz of Σ r⊙wR + Σ M_T⊙wM (read back), for a form returning r and the final state. */
function gradOf(form: (z: tf.Tensor1D) => { r: tf.Tensor2D; state: tf.Tensor2D | null }, z: tf.Tensor1D, wR: tf.Tensor2D, wM: tf.Tensor2D): void {
  const g = tf.tidy(() =>
    tf.grad((zz: tf.Tensor) => {
      const { r, state } = form(zz as tf.Tensor1D);
      const rows = r.shape[0];
      const lossR = tf.sum(tf.mul(r, rows === wR.shape[0] ? wR : tf.slice(wR, [0, 0], [rows, -1])));
      return state ? tf.add(lossR, tf.sum(tf.mul(state, wM))) : lossR;
    })(z),
  );
  g.dataSync();
  g.dispose();
}

function forward(form: () => tf.Tensor[]): void {
  const outs = tf.tidy(form);
  outs.forEach((o) => o.dataSync());
  outs.forEach((o) => o.dispose());
}

/** Why the loop cannot run whole at this size, when it cannot: its autodiff tape keeps ~3 D×D tensors per token. */
function tapeNote(T: number, D: number): string {
  const gib = (3 * T * D * D * 4) / 2 ** 30;
  return gib > 3 ? `; its autodiff tape at T = ${T} would need ~${Math.round(gib)} GiB, over the 4 GiB wasm heap` : '';
}

export function benchGate(o: GateBenchOptions, log: (s: string) => void = () => {}): GateBenchRow[] {
  const rows: GateBenchRow[] = [];
  const chunk = o.chunk ?? defaultChunkSize(o.D);
  for (const T of o.Ts) {
    const x = inputs(T, o.D, 7 + T);
    const n = Math.min(o.loopTokens, T);
    const head = tf.tidy(() => ({
      q: tf.slice(x.q, [0, 0], [n, -1]) as tf.Tensor2D,
      k: tf.slice(x.kHat, [0, 0], [n, -1]) as tf.Tensor2D,
      v: tf.slice(x.vHat, [0, 0], [n, -1]) as tf.Tensor2D,
      z: tf.slice(x.z, [0], [n]) as tf.Tensor1D,
    }));
    let t: Record<'chunkedFwdBwd' | 'chunkedOutputFwdBwd' | 'loopFwdBwd' | 'chunkedFwd' | 'loopFwd', Timing>;
    try {
      t = interleaved(
        {
          chunkedFwdBwd: () => gradOf((z) => gateChunked(chunkedSeq(x.q, x.kHat, x.vHat, z), chunk), x.z, x.wR, x.wM),
          chunkedOutputFwdBwd: () => gradOf((z) => ({ r: gateChunkedOutput(chunkedSeq(x.q, x.kHat, x.vHat, z), chunk), state: null }), x.z, x.wR, x.wM),
          loopFwdBwd: () => gradOf((z) => perTokenLoop(head.q, head.k, head.v, z), head.z, x.wR, x.wM),
          chunkedFwd: () => forward(() => Object.values(gateChunked(chunkedSeq(x.q, x.kHat, x.vHat, x.z), chunk))),
          loopFwd: () => forward(() => Object.values(perTokenLoop(head.q, head.k, head.v, head.z))),
        },
        o.reps,
      );
    } finally {
      Object.values(head).forEach((v) => v.dispose());
      Object.values(x).forEach((v) => v.dispose());
    }
    const loopPerToken = t.loopFwdBwd.ms / n;
    const loopAtT = loopPerToken * T;
    const row: GateBenchRow = {
      T,
      D: o.D,
      chunk: Math.min(chunk, T),
      chunkedFwdBwdMs: sig(t.chunkedFwdBwd.ms),
      chunkedOutputFwdBwdMs: sig(t.chunkedOutputFwdBwd.ms),
      loopFwdBwdMsPerToken: sig(loopPerToken),
      loopTokensTimed: n,
      loopFwdBwdMsAtT: sig(loopAtT),
      chunkedFwdMs: sig(t.chunkedFwd.ms),
      loopFwdMsPerToken: sig(t.loopFwd.ms / n),
      speedup: sig(loopAtT / t.chunkedFwdBwd.ms),
      speedupTrainingPath: sig(loopAtT / t.chunkedOutputFwdBwd.ms),
      forwardSpeedup: sig(((t.loopFwd.ms / n) * T) / t.chunkedFwd.ms),
      note: n < T ? `loop timed on its first ${n} of ${T} tokens and scaled ×${T / n} (its cost per token is constant)${tapeNote(T, o.D)}` : 'loop timed on all T tokens',
    };
    log(`gate D=${o.D} T=${T}: chunked fwd+bwd ${row.chunkedFwdBwdMs} ms, loop ${row.loopFwdBwdMsPerToken} ms/token -> ${row.speedup}×`);
    rows.push(row);
  }
  return rows;
}
