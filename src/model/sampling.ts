/**
 * Next-token sampling, deterministic for a given seed. The sampler is llama2.c's (`run.c`):
 * greedy argmax at temperature 0; otherwise logits / temperature, float32 softmax, one coin per
 * token from its xorshift* generator, and nucleus (top-p) sampling over the probabilities sorted
 * in descending order. Arithmetic is rounded to float32 where run.c computes in float, so with
 * the same logits and seed this picks the same tokens as run.c (the stories260k corpus was
 * sampled that way).
 */
import { fail } from '../util/errors.ts';

const f32 = Math.fround;

/** Index of the largest logit (the first one on ties). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

const MASK64 = (1n << 64n) - 1n;

/** llama2.c's xorshift* generator: 64-bit state, 32-bit outputs. */
export class XorShiftRng {
  private state: bigint;

  constructor(seed: number | bigint) {
    const s = BigInt(seed);
    if (s <= 0n || s > MASK64) fail(null, `--seed: ${seed} must be an integer from 1 to 2^64-1`);
    this.state = s;
  }

  /** random_u32: state ^= state >> 12; ^= state << 25; ^= state >> 27; (state * 0x2545F4914F6CDD1D) >> 32. */
  nextU32(): number {
    let s = this.state;
    s ^= s >> 12n;
    s = (s ^ (s << 25n)) & MASK64;
    s ^= s >> 27n;
    this.state = s;
    return Number(((s * 0x2545f4914f6cdd1dn) & MASK64) >> 32n);
  }

  /** random_f32: a float in [0, 1) from the top 24 bits. */
  nextFloat(): number {
    return (this.nextU32() >>> 8) / 16777216;
  }
}

/** Softmax in float32 arithmetic, as run.c: subtract the max, expf, sum, divide. */
export function softmaxF32(logits: ArrayLike<number>): Float32Array {
  const p = Float32Array.from(logits);
  let max = p[0];
  for (let i = 1; i < p.length; i++) if (p[i] > max) max = p[i];
  let sum = 0;
  for (let i = 0; i < p.length; i++) {
    p[i] = Math.exp(f32(p[i] - max));
    sum = f32(sum + p[i]);
  }
  for (let i = 0; i < p.length; i++) p[i] = p[i] / sum;
  return p;
}

/** Sample from the whole distribution: first index whose cumulative probability exceeds coin. */
export function sampleMultinomial(probs: Float32Array, coin: number): number {
  let cdf = 0;
  for (let i = 0; i < probs.length; i++) {
    cdf = f32(cdf + probs[i]);
    if (coin < cdf) return i;
  }
  return probs.length - 1; // rounding
}

/**
 * Nucleus sampling: keep the most probable tokens until their cumulative probability exceeds
 * topP, then sample among them (coin scaled to their mass). Tokens below (1-topP)/(n-1) cannot be
 * part of the nucleus and are dropped before sorting, as in run.c.
 */
export function sampleTopP(probs: Float32Array, topP: number, coin: number): number {
  const n = probs.length;
  const cutoff = f32(f32(1 - f32(topP)) / (n - 1));
  const candidates: number[] = [];
  for (let i = 0; i < n; i++) if (probs[i] >= cutoff) candidates.push(i);
  // Descending probability; a stable sort keeps lower ids first on ties (glibc's merge-sort qsort).
  candidates.sort((a, b) => probs[b] - probs[a]);
  let cumulative = 0;
  let last = candidates.length - 1;
  for (let i = 0; i < candidates.length; i++) {
    cumulative = f32(cumulative + probs[candidates[i]]);
    if (cumulative > f32(topP)) {
      last = i;
      break;
    }
  }
  const r = f32(coin * cumulative);
  let cdf = 0;
  for (let i = 0; i <= last; i++) {
    cdf = f32(cdf + probs[candidates[i]]);
    if (r < cdf) return candidates[i];
  }
  return candidates[last]; // rounding
}

export interface SamplerOptions {
  /** 0: greedy. */
  temperature: number;
  /** Nucleus mass in (0, 1); ≤ 0 or ≥ 1 samples from the whole distribution. */
  topP: number;
  seed: number | bigint;
}

export class Sampler {
  private readonly rng: XorShiftRng;

  constructor(readonly opts: SamplerOptions) {
    if (!Number.isFinite(opts.temperature) || opts.temperature < 0) fail(null, `--temperature: ${opts.temperature} must be ≥ 0`);
    if (!Number.isFinite(opts.topP)) fail(null, `--top-p: ${opts.topP} is not a number`);
    this.rng = new XorShiftRng(opts.seed);
  }

  /** Pick the next token from logits [vocab]. */
  sample(logits: ArrayLike<number>): number {
    const { temperature, topP } = this.opts;
    if (temperature === 0) return argmax(logits);
    const t = f32(temperature);
    const scaled = new Float32Array(logits.length);
    for (let i = 0; i < logits.length; i++) scaled[i] = logits[i] / t;
    const probs = softmaxF32(scaled);
    const coin = this.rng.nextFloat();
    return topP <= 0 || topP >= 1 ? sampleMultinomial(probs, coin) : sampleTopP(probs, topP, coin);
  }
}
