import { describe, expect, it } from 'vitest';
import {
  ComparisonAccumulator,
  HiddenAccumulator,
  RowScorer,
  RunningCovariance,
  RunningMoments,
  differsBeyondError,
  logSoftmaxRow,
  median,
  percentile,
} from '../src/eval/stats.ts';
import { mulberry32 } from '../src/util/random.ts';

/** mulberry32, the project's seeded PRNG (uniform in [0, 1)): reproducible property tests. */
const rng = mulberry32;
function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-300)) * Math.cos(2 * Math.PI * r());
}

// ---- slow, obvious references: sums and sums of squares exactly as llama.cpp's kl_divergence() ----
function meanAndUncertainty(values: number[]): [number, number] {
  const n = values.length;
  const sum = values.reduce((a, b) => a + b, 0);
  const sum2 = values.reduce((a, b) => a + b * b, 0);
  const f = sum / n;
  const df = sum2 / n - f * f;
  return [f, n > 1 && df > 0 ? Math.sqrt(df / (n - 1)) : 0];
}
function covarianceOfMeans(a: number[], b: number[]): number {
  const n = a.length;
  const sa = a.reduce((x, y) => x + y, 0);
  const sb = b.reduce((x, y) => x + y, 0);
  let sab = 0;
  for (let i = 0; i < n; i++) sab += a[i]! * b[i]!;
  return (sab / n - (sa / n) * (sb / n)) / (n - 1);
}
function softmaxSlow(row: number[]): number[] {
  const m = Math.max(...row);
  const e = row.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}
function argmaxSlow(row: number[]): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}
function percentileSlow(values: number[], fraction: number): number {
  const s = [...values].sort((a, b) => a - b);
  const p = fraction * (s.length - 1);
  const lo = Math.floor(p);
  const hi = Math.ceil(p);
  return s[lo]! + (p - lo) * (s[hi]! - s[lo]!);
}

describe('running moments', () => {
  it('mean and stderr of 1, 2, 3 by hand', () => {
    const m = new RunningMoments();
    for (const x of [1, 2, 3]) m.add(x);
    expect(m.mean).toBeCloseTo(2, 15);
    expect(m.variance()).toBeCloseTo(2 / 3, 15); // population variance
    expect(m.stderr()).toBeCloseTo(Math.sqrt(1 / 3), 15); // sqrt(var / (n-1))
  });
  it('no uncertainty from one value; no cancellation with a large offset', () => {
    const one = new RunningMoments();
    one.add(5);
    expect(one.stderr()).toBe(0);
    const big = new RunningMoments();
    for (const x of [1e9 + 1, 1e9 + 2, 1e9 + 3]) big.add(x);
    expect(big.variance()).toBeCloseTo(2 / 3, 6);
  });
  it('covariance of the means matches the sum formula', () => {
    const r = rng(3);
    const a: number[] = [];
    const b: number[] = [];
    const c = new RunningCovariance();
    for (let i = 0; i < 200; i++) {
      const x = gauss(r);
      const y = 0.7 * x + 0.3 * gauss(r);
      a.push(x);
      b.push(y);
      c.add(x, y);
    }
    expect(c.covarianceOfMeans()).toBeCloseTo(covarianceOfMeans(a, b), 12);
  });
});

describe('percentiles (llama.cpp definition)', () => {
  it('hand-checked small cases', () => {
    const s = [1, 2, 3, 4];
    expect(percentile(s, 0.5)).toBeCloseTo(2.5, 15);
    expect(percentile(s, 0.9)).toBeCloseTo(3.7, 15); // 0.9·3 = 2.7 -> 3 + 0.7
    expect(percentile(s, 0)).toBe(1);
    expect(percentile(s, 1)).toBe(4);
    expect(median(s)).toBe(2.5);
    expect(median([5, 7, 9])).toBe(7);
    expect(percentile([42], 0.99)).toBe(42);
    expect(Number.isNaN(percentile([], 0.5))).toBe(true);
  });
  it('agrees with a slow reference on random data', () => {
    const r = rng(11);
    const v = Array.from({ length: 1001 }, () => r() * 10);
    const sorted = Float64Array.from(v).sort();
    for (const f of [0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999]) expect(percentile(sorted, f)).toBeCloseTo(percentileSlow(v, f), 12);
  });
});

describe('log-softmax and one-row scores', () => {
  it('log-softmax of two equal logits is −ln 2; argmax is the first maximum', () => {
    const out = new Float64Array(3);
    expect(logSoftmaxRow([0, 0, -Infinity], out)).toBe(0);
    expect(out[0]).toBeCloseTo(-Math.LN2, 15);
    expect(out[1]).toBeCloseTo(-Math.LN2, 15);
    expect(out[2]).toBe(-Infinity);
    // large logits do not overflow
    logSoftmaxRow([1000, 1000], out);
    expect(out[0]).toBeCloseTo(-Math.LN2, 12);
  });
  it('KL, NLL, Δp and top-1 of a two-token case by hand', () => {
    // reference p = (1/2, 1/2); candidate p = (3/4, 1/4)
    const s = new RowScorer(2).score([0, 0], [Math.log(3), 0], 1);
    expect(s.kld).toBeCloseTo(0.5 * Math.log(4 / 3), 14); // ½ln(½/¾) + ½ln(½/¼)
    expect(s.nll).toBeCloseTo(Math.log(4), 14);
    expect(s.nllRef).toBeCloseTo(Math.LN2, 14);
    expect(s.deltaP).toBeCloseTo(0.25 - 0.5, 14);
    expect(s.sameTop).toBe(true); // ties: both pick token 0
    const flipped = new RowScorer(2).score([1, 0], [0, 1], 0);
    expect(flipped.sameTop).toBe(false);
  });
  it('identical rows give KL exactly 0', () => {
    const row = Float32Array.from([0.3, -2, 5, 1e-3]);
    expect(new RowScorer(4).score(row, row, 2).kld).toBe(0);
  });
  it('a candidate that rules out a token the reference allows has infinite KL', () => {
    expect(new RowScorer(2).score([0, 0], [0, -Infinity], 0).kld).toBe(Infinity);
  });
  it('bad shapes and targets are errors', () => {
    expect(() => new RowScorer(3).score([0, 0], [0, 0, 0], 0)).toThrow(/vocabulary/);
    expect(() => new RowScorer(2).score([0, 0], [0, 0], 2)).toThrow(/outside/);
  });
});

/** Random logits window of T tokens (peaked like a trained LM) and a perturbed copy. */
function randomWindow(r: () => number, T: number, V: number, noise: number) {
  const ref = new Float32Array(T * V);
  const cand = new Float32Array(T * V);
  for (let i = 0; i < T * V; i++) {
    ref[i] = 3 * gauss(r);
    cand[i] = ref[i]! + noise * gauss(r);
  }
  const ids = Array.from({ length: T }, () => Math.floor(r() * V));
  return { ref, cand, ids };
}

describe('comparison accumulator vs slow reference', () => {
  it('every statistic matches llama.cpp formulas on random logits', () => {
    const r = rng(7);
    const V = 37;
    const acc = new ComparisonAccumulator(4);
    const nll: number[] = [];
    const nllRef: number[] = [];
    const kld: number[] = [];
    const dp: number[] = [];
    const dp2: number[] = [];
    const pos: number[] = [];
    let same = 0;
    for (const [T, first] of [
      [20, 0],
      [13, 5],
      [31, 0],
    ] as const) {
      const w = randomWindow(r, T, V, 1.5);
      acc.addWindow(w.ref, w.cand, V, w.ids, first);
      for (let t = first; t < T - 1; t++) {
        const a = Array.from(w.ref.subarray(t * V, (t + 1) * V));
        const b = Array.from(w.cand.subarray(t * V, (t + 1) * V));
        const p = softmaxSlow(a);
        const q = softmaxSlow(b);
        const tgt = w.ids[t + 1]!;
        nll.push(-Math.log(q[tgt]!));
        nllRef.push(-Math.log(p[tgt]!));
        let k = 0;
        for (let v = 0; v < V; v++) k += p[v]! * Math.log(p[v]! / q[v]!);
        kld.push(k);
        dp.push(q[tgt]! - p[tgt]!);
        dp2.push((q[tgt]! - p[tgt]!) ** 2);
        if (argmaxSlow(a) === argmaxSlow(b)) same++;
        pos.push(t);
      }
    }
    const n = nll.length;
    expect(acc.tokens).toBe(n);
    const s = acc.result();
    const [mq, sq] = meanAndUncertainty(nll);
    const [mb, sb] = meanAndUncertainty(nllRef);
    const cov = covarianceOfMeans(nll, nllRef);
    expect(s.ppl.tokens).toBe(n);
    expect(s.ppl.nll_mean).toBeCloseTo(mq, 12);
    expect(s.ppl.nll_stderr).toBeCloseTo(sq, 12);
    expect(s.ppl.ppl).toBeCloseTo(Math.exp(mq), 10);
    expect(s.ppl.ppl_stderr).toBeCloseTo(Math.exp(mq) * sq, 10);
    expect(s.ppl_ref.ppl).toBeCloseTo(Math.exp(mb), 10);
    const lnSe = Math.sqrt(sq * sq + sb * sb - 2 * cov);
    expect(s.ppl_ratio.ln_ratio).toBeCloseTo(mq - mb, 12);
    expect(s.ppl_ratio.ln_ratio_stderr).toBeCloseTo(lnSe, 12);
    expect(s.ppl_ratio.ratio).toBeCloseTo(Math.exp(mq - mb), 10);
    expect(s.ppl_ratio.ratio_stderr).toBeCloseTo(Math.exp(mq - mb) * lnSe, 10);
    expect(s.ppl_ratio.correlation).toBeCloseTo(cov / (sq * sb), 10);
    const pplQ = Math.exp(mq);
    const pplB = Math.exp(mb);
    expect(s.ppl_ratio.diff).toBeCloseTo(pplQ - pplB, 10);
    expect(s.ppl_ratio.diff_stderr).toBeCloseTo(Math.sqrt((pplQ * sq) ** 2 + (pplB * sb) ** 2 - 2 * pplQ * pplB * cov), 9);
    const [mk, sk] = meanAndUncertainty(kld);
    expect(s.kld.mean).toBeCloseTo(mk, 12);
    expect(s.kld.stderr).toBeCloseTo(sk, 12);
    expect(s.kld.median).toBeCloseTo(percentileSlow(kld, 0.5), 12);
    expect(s.kld.p90).toBeCloseTo(percentileSlow(kld, 0.9), 12);
    expect(s.kld.p95).toBeCloseTo(percentileSlow(kld, 0.95), 12);
    expect(s.kld.p99).toBeCloseTo(percentileSlow(kld, 0.99), 12);
    expect(s.kld.p99_9).toBeCloseTo(percentileSlow(kld, 0.999), 12);
    expect(s.kld.max).toBeCloseTo(Math.max(...kld), 12);
    expect(s.kld.min).toBeCloseTo(Math.min(...kld), 12);
    expect(s.same_top_p).toBeCloseTo(same / n, 15);
    expect(s.same_top_p_stderr).toBeCloseTo(Math.sqrt(((same / n) * (1 - same / n)) / (n - 1)), 12);
    const [mdp, sdp] = meanAndUncertainty(dp);
    const [mse, smse] = meanAndUncertainty(dp2);
    expect(s.delta_p.mean).toBeCloseTo(mdp, 12);
    expect(s.delta_p.mean_stderr).toBeCloseTo(sdp, 12);
    expect(s.delta_p.rms).toBeCloseTo(Math.sqrt(mse), 12);
    expect(s.delta_p.rms_stderr).toBeCloseTo((0.5 / Math.sqrt(mse)) * smse, 12);
    expect(s.delta_p.max_abs).toBeCloseTo(Math.max(...dp.map(Math.abs)), 12);
    // positions bucketed by 4: bucket k holds positions 4k..4k+3
    let bucketTotal = 0;
    for (const b of s.by_position) {
      const idx = pos.map((p, i) => (p >= b.start && p < b.end ? i : -1)).filter((i) => i >= 0);
      expect(b.end - b.start).toBe(4);
      expect(b.tokens).toBe(idx.length);
      expect(b.kld_mean).toBeCloseTo(idx.reduce((a, i) => a + kld[i]!, 0) / idx.length, 12);
      expect(b.nll_mean).toBeCloseTo(idx.reduce((a, i) => a + nll[i]!, 0) / idx.length, 12);
      bucketTotal += b.tokens;
    }
    expect(bucketTotal).toBe(n);
    expect(s.kld_histogram.reduce((a, b) => a + b.count, 0)).toBe(n);
  });

  it('a configuration compared with itself: KL 0, ratio exactly 1, full agreement', () => {
    const r = rng(5);
    const w = randomWindow(r, 40, 16, 0);
    const acc = new ComparisonAccumulator();
    acc.addWindow(w.ref, w.ref, 16, w.ids, 0);
    const s = acc.result();
    expect(s.kld.mean).toBe(0);
    expect(s.kld.max).toBe(0);
    expect(s.ppl_ratio.ratio).toBe(1);
    expect(s.ppl_ratio.ln_ratio_stderr).toBeCloseTo(0, 7);
    expect(s.same_top_p).toBe(1);
    expect(s.delta_p.rms).toBe(0);
    expect(s.kld_histogram[0]!.count).toBe(39);
  });

  it('a uniform model has perplexity = vocabulary size', () => {
    const V = 50;
    const T = 30;
    const logits = new Float32Array(T * V); // all zero: uniform
    const ids = Array.from({ length: T }, (_, i) => (i * 7) % V);
    const acc = new ComparisonAccumulator();
    acc.addWindow(logits, logits, V, ids, 0);
    const s = acc.result();
    expect(s.ppl.ppl).toBeCloseTo(V, 9);
    expect(s.ppl.ppl_stderr).toBeCloseTo(0, 9);
  });

  it('hand-checked three-token perplexity', () => {
    // Candidate puts p = e^-1, e^-2, e^-3 on the targets: mean NLL 2, PPL e², ± e²·sqrt(1/3).
    const acc = new ComparisonAccumulator();
    for (const [i, nll] of [1, 2, 3].entries()) acc.addScore({ nll, nllRef: 1, kld: 0, sameTop: true, deltaP: 0 }, i);
    const s = acc.result();
    expect(s.ppl.ppl).toBeCloseTo(Math.exp(2), 12);
    expect(s.ppl.ppl_stderr).toBeCloseTo(Math.exp(2) * Math.sqrt(1 / 3), 12);
    expect(s.ppl_ratio.ratio).toBeCloseTo(Math.exp(1), 12);
    // the reference's NLL is constant: no covariance, the ratio's error is the candidate's
    expect(s.ppl_ratio.ln_ratio_stderr).toBeCloseTo(Math.sqrt(1 / 3), 12);
  });

  it('streaming in any split gives the same result as one pass', () => {
    const r = rng(9);
    const V = 11;
    const w = randomWindow(r, 50, V, 0.8);
    const one = new ComparisonAccumulator(8);
    one.addWindow(w.ref, w.cand, V, w.ids, 0);
    const rows = new ComparisonAccumulator(8);
    for (let t = 0; t < 49; t++) rows.addRow(w.ref.subarray(t * V, (t + 1) * V), w.cand.subarray(t * V, (t + 1) * V), w.ids[t + 1]!, t);
    expect(JSON.stringify(rows.result())).toBe(JSON.stringify(one.result()));
  });
});

describe('hidden-state agreement', () => {
  it('relative MSE and cosine by hand', () => {
    const h = new HiddenAccumulator();
    // token 0: ref (1,0), cand (0,1): err 2, |ref|² 1, cos 0; token 1: ref (2,0), cand (2,0): err 0, |ref|² 4, cos 1
    h.add(1, Float32Array.from([1, 0, 2, 0]), Float32Array.from([0, 1, 2, 0]), 2, 0, 2);
    const [s] = h.result();
    expect(s!.hidden).toBe(1);
    expect(s!.tokens).toBe(2);
    expect(s!.rel_mse).toBeCloseTo(2 / 5, 15);
    expect(s!.mse).toBeCloseTo(2 / 4, 15);
    expect(s!.cosine).toBeCloseTo(0.5, 15);
    expect(s!.cosine_min).toBeCloseTo(0, 15);
  });
  it('only the requested rows count; layers are kept apart and sorted', () => {
    const h = new HiddenAccumulator();
    const ref = Float32Array.from([1, 1, 5, 5]);
    const cand = Float32Array.from([1, 1, -5, 5]);
    h.add(3, ref, cand, 2, 0, 1);
    h.add(2, ref, cand, 2, 1, 2);
    const s = h.result();
    expect(s.map((x) => x.hidden)).toEqual([2, 3]);
    expect(s[1]!.rel_mse).toBe(0);
    expect(s[0]!.rel_mse).toBeCloseTo(100 / 50, 12);
    expect(s[0]!.cosine).toBeCloseTo(0, 12);
  });
  it('agrees with a slow reference on random states', () => {
    const r = rng(21);
    const H = 9;
    const T = 17;
    const ref = Float32Array.from({ length: T * H }, () => gauss(r));
    const cand = Float32Array.from(ref, (x) => x + 0.3 * gauss(r));
    const h = new HiddenAccumulator();
    h.add(4, ref, cand, H, 2, T);
    let num = 0;
    let den = 0;
    let cosSum = 0;
    for (let t = 2; t < T; t++) {
      let e = 0, a2 = 0, b2 = 0, ab = 0; // prettier-ignore
      for (let j = 0; j < H; j++) {
        const a = ref[t * H + j]!;
        const b = cand[t * H + j]!;
        e += (a - b) ** 2;
        a2 += a * a;
        b2 += b * b;
        ab += a * b;
      }
      num += e;
      den += a2;
      cosSum += ab / Math.sqrt(a2 * b2);
    }
    const [s] = h.result();
    expect(s!.rel_mse).toBeCloseTo(num / den, 12);
    expect(s!.cosine).toBeCloseTo(cosSum / (T - 2), 12);
    expect(s!.mse).toBeCloseTo(num / ((T - 2) * H), 12);
  });
});

describe('differences beyond error', () => {
  it('flags only what exceeds the combined standard error', () => {
    expect(differsBeyondError(10, 1, 12, 1)).toBe(true); // 2 > sqrt(2)
    expect(differsBeyondError(10, 1, 11, 1)).toBe(false); // 1 < sqrt(2)
    expect(differsBeyondError(10, 0, 10, 0)).toBe(false);
    expect(differsBeyondError(10, 1, 12, 1, 2)).toBe(false); // 2 < 2·sqrt(2)
    expect(differsBeyondError(NaN, 0, 1, 0)).toBe(false);
  });
});
