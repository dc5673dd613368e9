/**
 * The end-to-end distillation objective on logits: KL(teacher ‖ student) per position,
 *
 *   KL_t = Σ_v p_v (log p_v − log q_v),   q = softmax(z),  z = x_t · W_lmᵀ
 *        = Σ_v p_v log p_v − Σ_v p_v z_v + (Σ_v p_v) · logsumexp(z)
 *
 * with p the teacher's (cached) next-token distribution and x_t the student's final-normed hidden
 * state. The vocabulary is processed in slices of the lm_head (as the teacher's `projectLogits`),
 * and the gradient is hand-written (dKL_t/dz = (Σp)·q − p, dx = dz · W): the backward pass
 * recomputes each slice's logits from x instead of keeping all of them, so the largest tensor alive
 * at once is one slice [T, slice] — not [T, vocab]. The lm_head weights themselves are all on the
 * backend (constants: no gradient flows into them).
 */
import * as tf from '@tensorflow/tfjs-core';

/** One lm_head slice on the backend: vocabulary rows [start, start+count) as Wᵀ [hidden, count]. */
export interface VocabSlice {
  start: number;
  count: number;
  /** [hidden, count] (uploadMatrix orientation). */
  w: tf.Tensor2D;
}

/** One sequence's teacher targets, per position t: probabilities per slice, Σ p log p, Σ p. */
export interface KlTarget {
  /** Per slice [T, count]. */
  probs: tf.Tensor2D[];
  /** [T] Σ_v p_v log p_v (float64 on the host, then float32). */
  negEntropy: tf.Tensor1D;
  /** [T] Σ_v p_v (1 up to rounding: kept exact so the KL is ≥ 0 to float precision). */
  mass: tf.Tensor1D;
}

/**
 * Teacher log-probs of one sequence [T*V] row-major -> tensors for `logitKl`. Dispose with
 * `disposeKlTarget`.
 */
export function klTarget(logProbs: Float32Array, T: number, V: number, slices: readonly VocabSlice[]): KlTarget {
  if (logProbs.length !== T * V) throw new Error(`klTarget: ${logProbs.length} log-probs for [${T}, ${V}]`);
  const negEntropy = new Float32Array(T);
  const mass = new Float32Array(T);
  const probs = slices.map((s) => new Float32Array(T * s.count));
  for (let t = 0; t < T; t++) {
    let h = 0;
    let m = 0;
    const row = t * V;
    slices.forEach((s, j) => {
      const out = probs[j]!;
      for (let v = 0; v < s.count; v++) {
        const lp = logProbs[row + s.start + v]!;
        const p = Math.exp(lp);
        out[t * s.count + v] = p;
        if (p > 0) h += p * lp;
        m += p;
      }
    });
    negEntropy[t] = h;
    mass[t] = m;
  }
  return {
    probs: probs.map((p, j) => tf.tensor2d(p, [T, slices[j]!.count])),
    negEntropy: tf.tensor1d(negEntropy),
    mass: tf.tensor1d(mass),
  };
}

export function disposeKlTarget(t: KlTarget): void {
  t.probs.forEach((p) => p.dispose());
  t.negEntropy.dispose();
  t.mass.dispose();
}

/** logsumexp over each row of the logits, slice by slice: [T]. */
function sliceLse(x: tf.Tensor2D, slices: readonly VocabSlice[]): tf.Tensor1D {
  return tf.tidy(() => {
    const parts = slices.map((s) => tf.logSumExp(tf.matMul(x, s.w), 1) as tf.Tensor1D);
    return (parts.length === 1 ? parts[0]! : (tf.logSumExp(tf.stack(parts, 1), 1) as tf.Tensor1D));
  });
}

/** Per-position KL_t [T] (no gradient). */
export function logitKlPerPosition(x: tf.Tensor2D, slices: readonly VocabSlice[], target: KlTarget): tf.Tensor1D {
  return tf.tidy(() => {
    const lse = sliceLse(x, slices);
    let cross: tf.Tensor1D = tf.zeros([x.shape[0]]);
    slices.forEach((s, j) => (cross = tf.add(cross, tf.sum(tf.mul(target.probs[j]!, tf.matMul(x, s.w)), 1)) as tf.Tensor1D));
    return tf.add(tf.sub(target.negEntropy, cross), tf.mul(target.mass, lse)) as tf.Tensor1D;
  });
}

/**
 * Mean over positions of KL_t, differentiable w.r.t. x [T, hidden] (the student's final-normed
 * hidden states). The slices and the target are constants.
 */
export function logitKl(x: tf.Tensor2D, slices: readonly VocabSlice[], target: KlTarget): tf.Scalar {
  const T = x.shape[0];
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const input = args[0] as tf.Tensor2D;
    const save = args[1] as tf.GradSaveFunc;
    const lse = sliceLse(input, slices);
    const value = tf.tidy(() => {
      let cross: tf.Tensor1D = tf.zeros([T]);
      slices.forEach((s, j) => (cross = tf.add(cross, tf.sum(tf.mul(target.probs[j]!, tf.matMul(input, s.w)), 1)) as tf.Tensor1D));
      return tf.mean(tf.add(tf.sub(target.negEntropy, cross), tf.mul(target.mass, lse))) as tf.Scalar;
    });
    save([input, lse]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, lseSaved] = saved as [tf.Tensor2D, tf.Tensor1D];
        return tf.tidy(() => {
          const scale = tf.div(dy, T);
          const lseCol = tf.reshape(lseSaved, [T, 1]);
          const massCol = tf.reshape(target.mass, [T, 1]);
          let dx: tf.Tensor2D = tf.zeros(xs.shape);
          slices.forEach((s, j) => {
            const q = tf.exp(tf.sub(tf.matMul(xs, s.w), lseCol));
            const dz = tf.mul(tf.sub(tf.mul(q, massCol), target.probs[j]!), scale) as tf.Tensor2D;
            dx = tf.add(dx, tf.matMul(dz, s.w, false, true)) as tf.Tensor2D;
          });
          return [dx];
        });
      },
    };
  });
  return f(x) as tf.Scalar;
}

/** Teacher logits [T*V] -> log-softmax per row, in float64, stored float32. */
export function logSoftmaxRows(logits: Float32Array, T: number, V: number): Float32Array {
  const out = new Float32Array(T * V);
  for (let t = 0; t < T; t++) {
    const row = t * V;
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, logits[row + v]!);
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(logits[row + v]! - max);
    const lse = max + Math.log(sum);
    for (let v = 0; v < V; v++) out[row + v] = logits[row + v]! - lse;
  }
  return out;
}
