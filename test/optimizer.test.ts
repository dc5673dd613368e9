/**
 * The optimizer against references: AdamW (torch.optim.AdamW semantics) vs numbers worked out by
 * hand and vs a slow, obvious float64 implementation; the cosine schedule; global-norm clipping;
 * state round trips that continue bit-identically.
 */
import { describe, expect, it } from 'vitest';
import { AdamW, clipGradNorm, cosineLr, globalNorm } from '../src/distill/optimizer.ts';

/** The textbook AdamW (Loshchilov & Hutter, as torch implements it), float64, one parameter vector. */
function referenceAdamW(p0: number[], gradsPerStep: number[][], lrs: number[], wd: number, b1 = 0.9, b2 = 0.999, eps = 1e-8): number[] {
  const p = [...p0];
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  gradsPerStep.forEach((g, k) => {
    const t = k + 1;
    const lr = lrs[k]!;
    for (let j = 0; j < p.length; j++) {
      p[j] = p[j]! * (1 - lr * wd);
      m[j] = b1 * m[j]! + (1 - b1) * g[j]!;
      v[j] = b2 * v[j]! + (1 - b2) * g[j]! * g[j]!;
      const mHat = m[j]! / (1 - b1 ** t);
      const vHat = v[j]! / (1 - b2 ** t);
      p[j] = p[j]! - (lr * mHat) / (Math.sqrt(vHat) + eps);
    }
  });
  return p;
}

describe('AdamW', () => {
  it('matches a step worked out by hand', () => {
    // p = 1, g = 0.5, lr = 0.1, wd = 0.01:
    //   decay:  p = 1·(1 − 0.001) = 0.999
    //   m = 0.05, v = 0.00025; m̂ = 0.05/0.1 = 0.5, v̂ = 0.00025/0.001 = 0.25, √v̂ = 0.5
    //   p = 0.999 − 0.1·0.5/(0.5 + 1e-8) = 0.999 − 0.099999998 = 0.899000002
    const opt = new AdamW([1], { lr: 0.1, weightDecay: 0.01 });
    const p = [Float32Array.of(1)];
    opt.step(p, [Float32Array.of(0.5)], 0.1);
    expect(p[0]![0]).toBeCloseTo(0.899000002, 7);
    expect(opt.state.expAvg[0]![0]).toBeCloseTo(0.05, 8);
    expect(opt.state.expAvgSq[0]![0]).toBeCloseTo(0.00025, 10);
    // Second step, g = −0.25, lr = 0.05:
    //   decay: p = 0.899000002·(1 − 0.0005) = 0.8985505020
    //   m = 0.9·0.05 + 0.1·(−0.25) = 0.02; v = 0.999·0.00025 + 0.001·0.0625 = 0.00031225
    //   m̂ = 0.02/0.19 = 0.105263158; v̂ = 0.00031225/0.001999 = 0.156203102, √v̂ = 0.395225381
    //   p = 0.8985505020 − 0.05·0.105263158/0.395225391 = 0.8985505020 − 0.013316963 = 0.885233539
    opt.step(p, [Float32Array.of(-0.25)], 0.05);
    expect(p[0]![0]).toBeCloseTo(0.885233539, 6);
    expect(opt.state.step).toBe(2);
  });

  it('moves every parameter by about lr·sign(g) on the first step (no decay)', () => {
    const opt = new AdamW([4], { weightDecay: 0 });
    const p = [Float32Array.of(0, 0, 0, 0)];
    opt.step(p, [Float32Array.of(3, -0.001, 1e-3, -50)], 0.01);
    expect(Array.from(p[0]!).map((x) => Number(x.toFixed(6)))).toEqual([-0.01, 0.01, -0.01, 0.01]);
  });

  it('agrees with the float64 reference over many steps (property test)', () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
    for (let trial = 0; trial < 5; trial++) {
      const n = 7 + trial;
      const p0 = Array.from({ length: n }, () => rand());
      const steps = 25;
      const grads = Array.from({ length: steps }, () => Array.from({ length: n }, () => rand() * 0.5));
      const lrs = Array.from({ length: steps }, (_, k) => cosineLr(1e-2, k, steps));
      const want = referenceAdamW(p0.map(Math.fround), grads.map((g) => g.map(Math.fround)), lrs, 0.01);
      const opt = new AdamW([n]);
      const p = [Float32Array.from(p0)];
      grads.forEach((g, k) => opt.step(p, [Float32Array.from(g)], lrs[k]!));
      for (let j = 0; j < n; j++) expect(Math.abs(p[0]![j]! - want[j]!)).toBeLessThan(2e-6);
    }
  });

  it('continues bit-identically from a snapshot', () => {
    const grads = Array.from({ length: 6 }, (_, k) => [Float32Array.from([0.1 * k - 0.2, 0.3]), Float32Array.of(-0.05 * k)]);
    const run = (split: number | null) => {
      let opt = new AdamW([2, 1]);
      const p = [Float32Array.of(0.5, -0.5), Float32Array.of(2)];
      grads.forEach((g, k) => {
        if (k === split) {
          const saved = opt.snapshot();
          opt = new AdamW([2, 1]);
          opt.load(saved);
        }
        opt.step(p, g.map((x) => x.slice()), cosineLr(1e-2, k, grads.length));
      });
      return p.map((x) => Array.from(x));
    };
    expect(run(3)).toEqual(run(null));
  });

  it('refuses state of another shape', () => {
    const a = new AdamW([3]);
    expect(() => new AdamW([4]).load(a.snapshot())).toThrow(/does not match/);
  });
});

describe('cosine schedule', () => {
  it('is CosineAnnealingLR to zero over all steps', () => {
    expect(cosineLr(0.01, 0, 100)).toBe(0.01);
    expect(cosineLr(0.01, 50, 100)).toBeCloseTo(0.005, 12);
    expect(cosineLr(0.01, 25, 100)).toBeCloseTo(0.01 * 0.5 * (1 + Math.SQRT1_2), 12);
    expect(cosineLr(0.01, 99, 100)).toBeGreaterThan(0);
    expect(cosineLr(0.01, 100, 100)).toBeCloseTo(0, 15);
  });
});

describe('global gradient-norm clipping', () => {
  it('scales all gradients together to norm max when above it', () => {
    const g = [Float32Array.of(3), Float32Array.of(0, 4)];
    const norm = clipGradNorm(g, 1);
    expect(norm).toBe(5);
    expect(g[0]![0]).toBeCloseTo(0.6, 6);
    expect(g[1]![1]).toBeCloseTo(0.8, 6);
    expect(globalNorm(g)).toBeCloseTo(1, 5);
  });
  it('leaves gradients below the limit untouched', () => {
    const g = [Float32Array.of(0.3, -0.4)];
    expect(clipGradNorm(g, 1)).toBeCloseTo(0.5, 7);
    expect(Array.from(g[0]!)).toEqual([Math.fround(0.3), Math.fround(-0.4)]);
  });
  it('reports a non-finite norm instead of hiding it', () => {
    expect(clipGradNorm([Float32Array.of(NaN, 1)], 1)).toBeNaN();
  });
});
