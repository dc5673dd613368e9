/**
 * Evaluation statistics: pure float64 numerics, no I/O, no tfjs.
 *
 * The figures and their error bars follow llama.cpp's `llama-perplexity --kl-divergence` (what people
 * post when they compare quantizations), computed here in float64 from float32 logits:
 *
 *   - per-token NLL from a float64 log-softmax of each logit row; PPL = exp(mean NLL), ± by the delta
 *     method: stderr(PPL) = PPL · stderr(mean NLL), stderr(mean) = sqrt(var / (n − 1)) with the
 *     population variance var = E[x²] − E[x]²;
 *   - PPL(Q)/PPL(base) = exp(mean NLL_Q − mean NLL_base), ± from the paired tokens:
 *     stderr(ln ratio) = sqrt(se_Q² + se_base² − 2·cov), cov = covariance of the two means;
 *   - KL(teacher‖student) per token = Σ_v p_t(v) (log p_t(v) − log p_s(v)): mean ± stderr and the
 *     distribution (median, p90, p95, p99, p99.9, max) with llama.cpp's percentile definition
 *     (linear interpolation at fraction · (n − 1) over the sorted values);
 *   - "same top p": how often the two argmaxes agree, ± sqrt(p(1 − p)/(n − 1));
 *   - Δp = p_student(correct) − p_teacher(correct): mean ± stderr, RMS ± 0.5/RMS · stderr(Δp²).
 *
 * Differences from llama.cpp, on purpose: the teacher's log-probabilities are exact float64 (llama.cpp
 * stores them quantised to 16 bits and drops terms below e^-16), and the running sums are Welford
 * updates (no cancellation in E[x²] − E[x]²). llama.cpp reports an uncertainty of 0 below 11 tokens;
 * here any n ≥ 2 gets one.
 *
 * Everything is streaming: a logits row is consumed and forgotten; only a few scalars per token
 * (KLD and Δp, for the percentiles) are kept.
 */

/** Running mean and variance (Welford). */
export class RunningMoments {
  n = 0;
  mean = 0;
  /** Σ (x − mean)² */
  m2 = 0;
  add(x: number): void {
    this.n += 1;
    const d = x - this.mean;
    this.mean += d / this.n;
    this.m2 += d * (x - this.mean);
  }
  /** Population variance E[x²] − E[x]². */
  variance(): number {
    return this.n > 0 ? this.m2 / this.n : 0;
  }
  /** Standard error of the mean: sqrt(var / (n − 1)) (llama.cpp's `mean_and_uncertainty`). */
  stderr(): number {
    return this.n > 1 ? Math.sqrt(Math.max(0, this.variance() / (this.n - 1))) : 0;
  }
}

/** Running means of x and y and their co-moment, for the covariance of the two sample means. */
export class RunningCovariance {
  n = 0;
  meanX = 0;
  meanY = 0;
  /** Σ (x − meanX)(y − meanY) */
  c = 0;
  add(x: number, y: number): void {
    this.n += 1;
    const dx = x - this.meanX;
    this.meanX += dx / this.n;
    this.meanY += (y - this.meanY) / this.n;
    this.c += dx * (y - this.meanY);
  }
  /** Covariance of the two means: (E[xy] − E[x]E[y]) / (n − 1) (llama.cpp's `covariance`). */
  covarianceOfMeans(): number {
    return this.n > 1 ? this.c / this.n / (this.n - 1) : 0;
  }
}

/** Percentile as llama.cpp computes it: sorted values, linear interpolation at fraction·(n−1). */
export function percentile(sorted: ArrayLike<number>, fraction: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  if (fraction <= 0) return sorted[0]!;
  if (fraction >= 1) return sorted[n - 1]!;
  const p = fraction * (n - 1);
  const i = Math.floor(p);
  const w = p - i;
  return (1 - w) * sorted[i]! + w * sorted[Math.min(i + 1, n - 1)]!;
}

/** Median: the middle value, or the mean of the two middle values. */
export function median(sorted: ArrayLike<number>): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  return n % 2 === 0 ? 0.5 * (sorted[n / 2 - 1]! + sorted[n / 2]!) : sorted[(n - 1) / 2]!;
}

/**
 * log-softmax of one logit row in float64: out[v] = x[v] − max − log Σ exp(x − max).
 * Returns the index of the largest logit (the first one on ties, as llama.cpp's argmax).
 */
export function logSoftmaxRow(row: ArrayLike<number>, out: Float64Array): number {
  const n = row.length;
  let argmax = 0;
  let max = row[0]!;
  for (let v = 1; v < n; v++) {
    if (row[v]! > max) {
      max = row[v]!;
      argmax = v;
    }
  }
  let sum = 0;
  for (let v = 0; v < n; v++) sum += Math.exp(row[v]! - max);
  const logZ = max + Math.log(sum);
  for (let v = 0; v < n; v++) out[v] = row[v]! - logZ;
  return argmax;
}

/** What one scored token contributes, reference (teacher) vs candidate. */
export interface TokenScore {
  /** −log p_candidate(target) */
  nll: number;
  /** −log p_reference(target) */
  nllRef: number;
  /** KL(reference ‖ candidate) over the vocabulary, nats (≥ 0). */
  kld: number;
  /** The two argmaxes agree. */
  sameTop: boolean;
  /** p_candidate(target) − p_reference(target). */
  deltaP: number;
}

/** Scratch buffers for scoring rows of one vocabulary size. */
export class RowScorer {
  private readonly refLog: Float64Array;
  private readonly candLog: Float64Array;
  constructor(readonly vocab: number) {
    this.refLog = new Float64Array(vocab);
    this.candLog = new Float64Array(vocab);
  }
  /** Score one position: `ref` and `cand` are logit rows of length vocab, `target` the next token. */
  score(ref: ArrayLike<number>, cand: ArrayLike<number>, target: number): TokenScore {
    if (ref.length !== this.vocab || cand.length !== this.vocab) {
      throw new Error(`RowScorer: rows of ${ref.length}/${cand.length} logits for vocabulary ${this.vocab}`);
    }
    if (!(target >= 0 && target < this.vocab)) throw new Error(`RowScorer: target ${target} outside the vocabulary`);
    const refTop = logSoftmaxRow(ref, this.refLog);
    const candTop = logSoftmaxRow(cand, this.candLog);
    let kld = 0;
    for (let v = 0; v < this.vocab; v++) {
      const lr = this.refLog[v]!;
      const p = Math.exp(lr);
      // p underflows to exactly 0 for hopeless tokens: 0 · (anything finite) contributes nothing.
      if (p > 0) kld += p * (lr - this.candLog[v]!);
    }
    const lt = this.refLog[target]!;
    const lc = this.candLog[target]!;
    return {
      nll: -lc,
      nllRef: -lt,
      // Rounding can leave a tiny negative sum for identical rows; KL is never negative.
      kld: Math.max(0, kld),
      sameTop: refTop === candTop,
      deltaP: Math.exp(lc) - Math.exp(lt),
    };
  }
}

/** Perplexity of one model over the scored tokens. */
export interface PerplexityStats {
  tokens: number;
  nll_mean: number;
  nll_stderr: number;
  ppl: number;
  ppl_stderr: number;
}

/** PPL(candidate) / PPL(reference) on the same tokens, with errors from the paired differences. */
export interface PplRatioStats {
  /** mean NLL_cand − mean NLL_ref = ln(PPL_cand / PPL_ref) */
  ln_ratio: number;
  ln_ratio_stderr: number;
  ratio: number;
  ratio_stderr: number;
  /** PPL_cand − PPL_ref */
  diff: number;
  diff_stderr: number;
  /** Correlation of the two mean NLLs (llama.cpp's Cor(ln PPL(Q), ln PPL(base))). */
  correlation: number;
}

export interface DistributionStats {
  mean: number;
  stderr: number;
  min: number;
  median: number;
  p90: number;
  p95: number;
  p99: number;
  p99_9: number;
  max: number;
}

export interface DeltaPStats {
  /** mean of p_cand(correct) − p_ref(correct) */
  mean: number;
  mean_stderr: number;
  /** sqrt(mean Δp²) */
  rms: number;
  rms_stderr: number;
  /** largest |Δp| */
  max_abs: number;
}

export interface PositionBucket {
  /** Positions [start, end) of the predicting token in its window (0 = the BOS slot). */
  start: number;
  end: number;
  tokens: number;
  kld_mean: number;
  kld_stderr: number;
  nll_mean: number;
  nll_ref_mean: number;
  same_top_p: number;
}

export interface ComparisonStats {
  ppl: PerplexityStats;
  ppl_ref: PerplexityStats;
  ppl_ratio: PplRatioStats;
  kld: DistributionStats;
  /** Fraction (0–1) of tokens whose argmax agrees with the reference's. */
  same_top_p: number;
  same_top_p_stderr: number;
  delta_p: DeltaPStats;
  by_position: PositionBucket[];
  /** A coarse histogram of per-token KLD for charts: bin edges are log-spaced. */
  kld_histogram: { lo: number; hi: number; count: number }[];
}

function perplexityFrom(m: RunningMoments): PerplexityStats {
  const ppl = Math.exp(m.mean);
  return { tokens: m.n, nll_mean: m.mean, nll_stderr: m.stderr(), ppl, ppl_stderr: ppl * m.stderr() };
}

/** Grow-on-demand float64 list (per-token scalars; logits are never kept). */
class GrowingArray {
  private buf = new Float64Array(1024);
  length = 0;
  push(x: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = x;
  }
  sorted(): Float64Array {
    return this.buf.slice(0, this.length).sort();
  }
  /** The values in the order they came, as float32 (per-token figures for paired comparisons). */
  float32(): Float32Array {
    return Float32Array.from(this.buf.subarray(0, this.length));
  }
}

/** Per-token figures of one configuration in scoring order (what paired comparisons between runs need). */
export interface PerTokenValues {
  /** −log p(target) */
  nll: Float32Array;
  /** KL(reference ‖ configuration) */
  kld: Float32Array;
  /** 1 where the argmax agrees with the reference's */
  same_top: Uint8Array;
  /** p(target) − p_reference(target) */
  delta_p: Float32Array;
}

class BucketAccumulator {
  kld = new RunningMoments();
  nll = new RunningMoments();
  nllRef = new RunningMoments();
  sameTop = 0;
}

/** Log-spaced KLD histogram edges: 0, 1e-6 … 1e2 (two bins per decade), +∞. */
export const KLD_HISTOGRAM_EDGES: number[] = (() => {
  const edges = [0];
  for (let e = -6; e <= 2; e += 0.5) edges.push(10 ** e);
  edges.push(Infinity);
  return edges;
})();

/**
 * Streams scored tokens of one candidate configuration against the reference (the teacher) and
 * produces every logit statistic. Feed rows with `addRow` (or whole windows with `addWindow`).
 */
export class ComparisonAccumulator {
  private readonly nll = new RunningMoments();
  private readonly nllRef = new RunningMoments();
  private readonly nllPair = new RunningCovariance();
  private readonly kld = new RunningMoments();
  private readonly deltaP = new RunningMoments();
  private readonly deltaP2 = new RunningMoments();
  private maxAbsDeltaP = 0;
  private sameTop = 0;
  private readonly kldValues = new GrowingArray();
  // per-token values in scoring order, for paired comparisons between runs (src/eval/perToken.ts)
  private readonly nllValues = new GrowingArray();
  private readonly deltaPValues = new GrowingArray();
  private readonly sameTopValues = new GrowingArray();
  private readonly buckets = new Map<number, BucketAccumulator>();
  private scorer: RowScorer | null = null;

  /** `positionBucket`: width (in positions) of the divergence-by-position buckets. */
  constructor(readonly positionBucket = 16) {
    if (!(Number.isInteger(positionBucket) && positionBucket > 0)) throw new Error('positionBucket must be a positive integer');
  }

  get tokens(): number {
    return this.nll.n;
  }

  /** Add one already-scored token at `position` (index of the predicting token in its window). */
  addScore(s: TokenScore, position: number): void {
    this.nll.add(s.nll);
    this.nllRef.add(s.nllRef);
    this.nllPair.add(s.nll, s.nllRef);
    this.kld.add(s.kld);
    this.kldValues.push(s.kld);
    this.nllValues.push(s.nll);
    this.deltaPValues.push(s.deltaP);
    this.sameTopValues.push(s.sameTop ? 1 : 0);
    this.deltaP.add(s.deltaP);
    this.deltaP2.add(s.deltaP * s.deltaP);
    this.maxAbsDeltaP = Math.max(this.maxAbsDeltaP, Math.abs(s.deltaP));
    if (s.sameTop) this.sameTop += 1;
    const key = Math.floor(position / this.positionBucket);
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = new BucketAccumulator()));
    b.kld.add(s.kld);
    b.nll.add(s.nll);
    b.nllRef.add(s.nllRef);
    if (s.sameTop) b.sameTop += 1;
  }

  /** Score and add one position from two logit rows. */
  addRow(ref: ArrayLike<number>, cand: ArrayLike<number>, target: number, position: number): TokenScore {
    if (!this.scorer || this.scorer.vocab !== ref.length) this.scorer = new RowScorer(ref.length);
    const s = this.scorer.score(ref, cand, target);
    this.addScore(s, position);
    return s;
  }

  /**
   * Add the scored rows of one window: `ref`/`cand` are [T, vocab] logits for the window's tokens
   * `ids` (length T); rows firstScored … T−2 predict ids[row + 1].
   */
  addWindow(ref: Float32Array, cand: Float32Array, vocab: number, ids: ArrayLike<number>, firstScored: number): void {
    const T = ids.length;
    if (ref.length !== T * vocab || cand.length !== T * vocab) {
      throw new Error(`addWindow: logits of ${ref.length}/${cand.length} values for ${T} tokens × ${vocab}`);
    }
    for (let r = firstScored; r < T - 1; r++) {
      this.addRow(ref.subarray(r * vocab, (r + 1) * vocab), cand.subarray(r * vocab, (r + 1) * vocab), ids[r + 1]!, r);
    }
  }

  /** Every scored token's figures, in the order they were added. */
  perToken(): PerTokenValues {
    return { nll: this.nllValues.float32(), kld: this.kldValues.float32(), same_top: Uint8Array.from(this.sameTopValues.float32()), delta_p: this.deltaPValues.float32() };
  }

  result(): ComparisonStats {
    const n = this.nll.n;
    const ppl = perplexityFrom(this.nll);
    const pplRef = perplexityFrom(this.nllRef);
    const seQ = this.nll.stderr();
    const seB = this.nllRef.stderr();
    const cov = this.nllPair.covarianceOfMeans();
    const lnRatio = this.nll.mean - this.nllRef.mean;
    const lnRatioSe = Math.sqrt(Math.max(0, seQ * seQ + seB * seB - 2 * cov));
    const ratio = Math.exp(lnRatio);
    const pplCov = ppl.ppl * pplRef.ppl * cov;
    const sorted = this.kldValues.sorted();
    const rms = Math.sqrt(this.deltaP2.mean);
    const sameTop = n > 0 ? this.sameTop / n : NaN;
    const histogram: ComparisonStats['kld_histogram'] = [];
    for (let i = 0; i + 1 < KLD_HISTOGRAM_EDGES.length; i++) histogram.push({ lo: KLD_HISTOGRAM_EDGES[i]!, hi: KLD_HISTOGRAM_EDGES[i + 1]!, count: 0 });
    for (const x of sorted) {
      // Bins are [lo, hi); the first bin holds exact zeros and values below 1e-6.
      let i = histogram.length - 1;
      while (i > 0 && x < histogram[i]!.lo) i--;
      histogram[i]!.count += 1;
    }
    return {
      ppl,
      ppl_ref: pplRef,
      ppl_ratio: {
        ln_ratio: lnRatio,
        ln_ratio_stderr: lnRatioSe,
        ratio,
        ratio_stderr: ratio * lnRatioSe,
        diff: ppl.ppl - pplRef.ppl,
        diff_stderr: Math.sqrt(Math.max(0, ppl.ppl_stderr ** 2 + pplRef.ppl_stderr ** 2 - 2 * pplCov)),
        correlation: seQ > 0 && seB > 0 ? cov / (seQ * seB) : NaN,
      },
      kld: {
        mean: this.kld.mean,
        stderr: this.kld.stderr(),
        min: sorted.length ? sorted[0]! : NaN,
        median: median(sorted),
        p90: percentile(sorted, 0.9),
        p95: percentile(sorted, 0.95),
        p99: percentile(sorted, 0.99),
        p99_9: percentile(sorted, 0.999),
        max: sorted.length ? sorted[sorted.length - 1]! : NaN,
      },
      same_top_p: sameTop,
      same_top_p_stderr: n > 1 ? Math.sqrt((sameTop * (1 - sameTop)) / (n - 1)) : 0,
      delta_p: {
        mean: this.deltaP.mean,
        mean_stderr: this.deltaP.stderr(),
        rms,
        rms_stderr: rms > 0 ? (0.5 / rms) * this.deltaP2.stderr() : 0,
        max_abs: this.maxAbsDeltaP,
      },
      by_position: [...this.buckets.entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([key, b]) => ({
          start: key * this.positionBucket,
          end: (key + 1) * this.positionBucket,
          tokens: b.kld.n,
          kld_mean: b.kld.mean,
          kld_stderr: b.kld.stderr(),
          nll_mean: b.nll.mean,
          nll_ref_mean: b.nllRef.mean,
          same_top_p: b.sameTop / b.kld.n,
        })),
      kld_histogram: histogram,
    };
  }
}

/** Hidden-state agreement of one layer's output. */
export interface HiddenLayerStats {
  /** Index i of `hidden.i` (0 = embedding output, i = residual stream after layer i−1). */
  hidden: number;
  tokens: number;
  /** Σ‖h_cand − h_ref‖² / Σ‖h_ref‖² over the scored tokens. */
  rel_mse: number;
  /** mean over elements of (h_cand − h_ref)² */
  mse: number;
  /** mean over tokens of cos(h_cand, h_ref) */
  cosine: number;
  /** lowest per-token cosine */
  cosine_min: number;
}

class HiddenLayerAccumulator {
  tokens = 0;
  elements = 0;
  sumSqErr = 0;
  sumSqRef = 0;
  cos = new RunningMoments();
  cosMin = Infinity;
}

/** Streams per-layer hidden states [T, hidden] of candidate vs reference. */
export class HiddenAccumulator {
  private readonly layers = new Map<number, HiddenLayerAccumulator>();

  /** Rows [fromRow, toRow) of `ref`/`cand` ([T, hiddenSize] row-major) of hidden state `index`. */
  add(index: number, ref: Float32Array, cand: Float32Array, hiddenSize: number, fromRow: number, toRow: number): void {
    if (ref.length !== cand.length || ref.length % hiddenSize !== 0) {
      throw new Error(`HiddenAccumulator: hidden.${index} has ${ref.length} vs ${cand.length} values for width ${hiddenSize}`);
    }
    let acc = this.layers.get(index);
    if (!acc) this.layers.set(index, (acc = new HiddenLayerAccumulator()));
    for (let r = fromRow; r < toRow; r++) {
      let err = 0;
      let rr = 0;
      let cc = 0;
      let rc = 0;
      for (let j = r * hiddenSize, e = j + hiddenSize; j < e; j++) {
        const a = ref[j]!;
        const b = cand[j]!;
        err += (b - a) * (b - a);
        rr += a * a;
        cc += b * b;
        rc += a * b;
      }
      acc.tokens += 1;
      acc.elements += hiddenSize;
      acc.sumSqErr += err;
      acc.sumSqRef += rr;
      // Two zero vectors agree perfectly; one zero vector is orthogonal to anything.
      const cos = rr === 0 && cc === 0 ? 1 : rr === 0 || cc === 0 ? 0 : rc / Math.sqrt(rr * cc);
      acc.cos.add(cos);
      acc.cosMin = Math.min(acc.cosMin, cos);
    }
  }

  result(): HiddenLayerStats[] {
    return [...this.layers.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([index, a]) => ({
        hidden: index,
        tokens: a.tokens,
        rel_mse: a.sumSqRef > 0 ? a.sumSqErr / a.sumSqRef : a.sumSqErr === 0 ? 0 : Infinity,
        mse: a.elements > 0 ? a.sumSqErr / a.elements : NaN,
        cosine: a.cos.mean,
        cosine_min: a.tokens > 0 ? a.cosMin : NaN,
      }));
  }
}

/**
 * Is the difference between two figures larger than their combined standard error?
 * (|a − b| > k · sqrt(se_a² + se_b²); independent runs, so no covariance term.)
 */
export function differsBeyondError(a: number, seA: number, b: number, seB: number, k = 1): boolean {
  if (!Number.isFinite(a) || !Number.isFinite(b)) return false;
  return Math.abs(a - b) > k * Math.sqrt(seA * seA + seB * seB);
}
