/**
 * The slow, obvious float64 reference of the `window` policy (and of the teacher, window = null):
 * the whole decoder in plain Float64Array loops over the model's weights, one sequence at a time —
 * embeddings, RMSNorm, RoPE (HF rotate-half), grouped-query softmax attention where a query at
 * position i sees keys j with i − W < j ≤ i (Mistral `sliding_window`), SwiGLU MLP, final norm,
 * lm_head, log-softmax. No tfjs, no batching, no blocking: what the fast path (student.ts
 * `window` layers on tfjs) must equal. Also the figures an evaluation reports (PPL, mean
 * KL(teacher ‖ window), top-1 agreement) computed from these logits, for the tests.
 *
 * O(T² · layers) attention and full matrix-vector loops: for small models (stories260k) only.
 */
import type { ModelConfig } from '../formats/config.ts';
import type { Matrix, ModelWeights } from '../formats/weights.ts';

/** RoPE inverse frequencies θ^(−2i/hd) in float64 (plain RoPE; llama3 scaling is not modelled here). */
function invFrequencies(c: ModelConfig): Float64Array {
  if (c.ropeScaling) throw new Error('window.naive: rope_scaling is not supported by the float64 reference');
  const half = c.headDim / 2;
  return Float64Array.from({ length: half }, (_, i) => 1 / Math.pow(c.ropeTheta, (2 * i) / c.headDim));
}

/** y = W x (+ b) for one row x; W [out, in] row-major (nn.Linear orientation). */
function matVec(w: Matrix, x: Float64Array, bias: Float32Array | null = null): Float64Array {
  const out = new Float64Array(w.rows);
  for (let o = 0; o < w.rows; o++) {
    let acc = bias ? bias[o]! : 0;
    const row = o * w.cols;
    for (let i = 0; i < w.cols; i++) acc += w.data[row + i]! * x[i]!;
    out[o] = acc;
  }
  return out;
}

function rmsNorm(x: Float64Array, g: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i]! * x[i]!;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return Float64Array.from(x, (v, i) => v * inv * g[i]!);
}

/** HF rotate-half RoPE at position `pos`, in place, for `heads` heads of size hd. */
function rope(x: Float64Array, heads: number, hd: number, pos: number, inv: Float64Array): void {
  const half = hd / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < half; j++) {
      const a = x[h * hd + j]!;
      const b = x[h * hd + j + half]!;
      const angle = pos * inv[j]!;
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      x[h * hd + j] = a * cos - b * sin;
      x[h * hd + j + half] = b * cos + a * sin;
    }
  }
}

/**
 * Logits [T, vocab] (row-major, float64) of one sequence at positions 0..T−1, every layer softmax
 * attention limited to the last `window` positions (null: all earlier positions; the model's own
 * sliding window, if any, caps either).
 */
export function naiveWindowLogits(weights: ModelWeights, ids: number[], window: number | null): Float64Array {
  const c = weights.config;
  const T = ids.length;
  const { hiddenSize: D, numHeads: H, numKvHeads: Kv, headDim: hd, vocabSize: V } = c;
  const nRep = H / Kv;
  const W = Math.min(window ?? Infinity, c.slidingWindow ?? Infinity);
  const inv = invFrequencies(c);
  const emb = weights.embed(ids);
  let h: Float64Array[] = Array.from({ length: T }, (_, t) => Float64Array.from(emb.subarray(t * D, (t + 1) * D)));
  for (let l = 0; l < c.numLayers; l++) {
    const lw = weights.layer(l);
    const q: Float64Array[] = [];
    const k: Float64Array[] = [];
    const v: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const x = rmsNorm(h[t]!, lw.inputNorm, c.rmsNormEps);
      const qt = matVec(lw.q, x, lw.qBias);
      const kt = matVec(lw.k, x, lw.kBias);
      rope(qt, H, hd, t, inv);
      rope(kt, Kv, hd, t, inv);
      q.push(qt);
      k.push(kt);
      v.push(matVec(lw.v, x, lw.vBias));
    }
    const next: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const attn = new Float64Array(H * hd);
      const first = Number.isFinite(W) ? Math.max(0, t - W + 1) : 0;
      for (let head = 0; head < H; head++) {
        const g = Math.floor(head / nRep); // GQA: query head → its kv head
        const scores = new Float64Array(t - first + 1);
        let max = -Infinity;
        for (let j = first; j <= t; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[t]![head * hd + d]! * k[j]![g * hd + d]!;
          scores[j - first] = dot / Math.sqrt(hd);
          max = Math.max(max, scores[j - first]!);
        }
        let sum = 0;
        for (let i = 0; i < scores.length; i++) sum += (scores[i] = Math.exp(scores[i]! - max));
        for (let j = first; j <= t; j++) {
          const p = scores[j - first]! / sum;
          for (let d = 0; d < hd; d++) attn[head * hd + d]! += p * v[j]![g * hd + d]!;
        }
      }
      const o = matVec(lw.o, attn);
      const mid = Float64Array.from(h[t]!, (x, i) => x + o[i]!);
      const y = rmsNorm(mid, lw.postNorm, c.rmsNormEps);
      const gate = matVec(lw.gate, y);
      const up = matVec(lw.up, y);
      const act = Float64Array.from(gate, (a, i) => (a / (1 + Math.exp(-a))) * up[i]!);
      const down = matVec(lw.down, act);
      next.push(Float64Array.from(mid, (x, i) => x + down[i]!));
    }
    h = next;
  }
  const head = weights.lmHeadRows(0, V);
  const norm = weights.finalNorm();
  const logits = new Float64Array(T * V);
  for (let t = 0; t < T; t++) logits.set(matVec(head, rmsNorm(h[t]!, norm, c.rmsNormEps)), t * V);
  return logits;
}

/** log-softmax of one row of logits, float64. */
function logSoftmax(x: Float64Array): Float64Array {
  let max = -Infinity;
  for (const v of x) max = Math.max(max, v);
  let sum = 0;
  for (const v of x) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(x, (v) => v - lse);
}

export interface NaiveWindowFigures {
  tokens: number;
  /** exp(mean −log p_window(next token)). */
  ppl: number;
  /** mean over tokens of KL(teacher ‖ window), nats. */
  kld: number;
  /** fraction of tokens where the window's argmax equals the teacher's. */
  top1: number;
}

/**
 * The evaluation figures of `window` against the teacher (full softmax attention on the teacher's
 * weights) over whole sequences, every next token scored: the window runs on `studentWeights`
 * (the same as `teacherWeights` for an HF-only model).
 */
export function naiveWindowFigures(teacherWeights: ModelWeights, studentWeights: ModelWeights, sequences: number[][], window: number): NaiveWindowFigures {
  const V = teacherWeights.config.vocabSize;
  let n = 0;
  let nll = 0;
  let kld = 0;
  let agree = 0;
  for (const ids of sequences) {
    const ref = naiveWindowLogits(teacherWeights, ids, null);
    const win = naiveWindowLogits(studentWeights, ids, window);
    for (let t = 0; t + 1 < ids.length; t++) {
      const lp = logSoftmax(ref.subarray(t * V, (t + 1) * V));
      const lq = logSoftmax(win.subarray(t * V, (t + 1) * V));
      let kl = 0;
      let argP = 0;
      let argQ = 0;
      for (let i = 0; i < V; i++) {
        kl += Math.exp(lp[i]!) * (lp[i]! - lq[i]!);
        if (lp[i]! > lp[argP]!) argP = i;
        if (lq[i]! > lq[argQ]!) argQ = i;
      }
      nll -= lq[ids[t + 1]!]!;
      kld += kl;
      agree += argP === argQ ? 1 : 0;
      n += 1;
    }
  }
  return { tokens: n, ppl: Math.exp(nll / n), kld: kld / n, top1: agree / n };
}
