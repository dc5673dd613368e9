/** Progress output: a redrawn bar with ETA and tokens/s on a terminal, sparse plain lines otherwise. */
import { describe, expect, it } from 'vitest';
import { cumulativeProgress, formatDuration, formatRate, Progress, RateEstimator } from '../src/util/progress.ts';

function sink() {
  const chunks: string[] = [];
  return { chunks, stream: { write: (s: string) => chunks.push(s), columns: 100 } };
}

describe('Progress', () => {
  it('draws a bar with percent, tokens/s and ETA on a terminal', () => {
    let now = 0;
    const { chunks, stream } = sink();
    const p = new Progress({ label: 'distill', total: 10, tty: true, stream, now: () => now });
    now = 2000;
    p.tick(4, 4000, 'loss 1.0e-1');
    const line = chunks.at(-1)!;
    expect(line.startsWith('\r')).toBe(true);
    expect(line).toMatch(/distill \[#+\.+\] 4\/10  40% 2\.0k tok\/s ETA 3s loss 1\.0e-1/);
    now = 5000;
    p.tick(6, 6000);
    p.finish();
    expect(chunks.at(-1)!).toMatch(/10\/10 100% .* 5s/);
    expect(chunks.at(-1)!.endsWith('\n')).toBe(true);
  });

  it('writes plain lines at most every logEverySec when not a terminal', () => {
    let now = 0;
    const { chunks, stream } = sink();
    const p = new Progress({ label: 'distill', total: 100, tty: false, stream, now: () => now, logEverySec: 10 });
    for (let i = 0; i < 100; i++) {
      now += 500; // 50 s in all
      p.tick(1, 64);
    }
    p.finish();
    // one line at the first tick, then one per 10 s, then the final line
    expect(chunks.length).toBeGreaterThanOrEqual(5);
    expect(chunks.length).toBeLessThanOrEqual(7);
    expect(chunks.every((c) => !c.includes('\r') && c.endsWith('\n'))).toBe(true);
    expect(chunks.at(-1)!).toMatch(/^distill: 100\/100 100% 128 tok\/s 50s\n$/);
  });

  it('counts resumed work toward the bar but not toward the rate', () => {
    let now = 0;
    const { stream } = sink();
    const p = new Progress({ label: 'x', total: 10, tty: false, stream, now: () => now });
    p.skip(5);
    now = 1000;
    p.tick(1);
    expect(p.line(now)).toMatch(/6\/10  60% ETA 4s/);
  });

  it('formats durations and rates', () => {
    expect(formatDuration(59.4)).toBe('59s');
    expect(formatDuration(61)).toBe('1m01s');
    expect(formatDuration(3725)).toBe('1h02m');
    expect(formatDuration(NaN)).toBe('?');
    expect(formatRate(950)).toBe('950');
    expect(formatRate(1234)).toBe('1.2k');
    expect(formatRate(2.5e6)).toBe('2.5M');
  });
});

describe('ETA (RateEstimator, fake clock)', () => {
  /** The distill story: a first unit that carries 60 s of start-up, then 390 units of 1 s each (7.5 min in all). */
  function warmupRun(onTick: (t: number, done: number, trueLeft: number) => void) {
    const total = 391;
    let t = 60_000;
    onTick(t, 1, 390);
    for (let done = 2; done <= total; done++) {
      t += 1000;
      onTick(t, done, total - done);
    }
  }

  it('holds after a slow start: within 10% of the true time left from 3 min on, where the mean since the start is 30-50% high', () => {
    const est = new RateEstimator(0);
    const worst = { ours: 0, mean: Infinity };
    warmupRun((t, done, trueLeft) => {
      est.add(1, t);
      if (t < 180_000 || trueLeft < 10) return;
      const ours = est.etaSeconds(trueLeft, t);
      const mean = trueLeft / (done / (t / 1000)); // what Progress said before: the mean rate since the start
      worst.ours = Math.max(worst.ours, Math.abs(ours - trueLeft) / trueLeft);
      worst.mean = Math.min(worst.mean, mean / trueLeft);
      if (t === 180_000) expect(mean / trueLeft).toBeGreaterThan(1.3);
    });
    expect(worst.ours).toBeLessThan(0.1);
    expect(worst.mean).toBeGreaterThan(1.0); // the old estimate is high all the way
  });

  it('steady work: exact from the first tick; a stall raises the ETA instead of freezing it', () => {
    const est = new RateEstimator(0);
    for (let i = 1; i <= 10; i++) est.add(5, i * 1000); // 5 units/s
    expect(est.etaSeconds(50, 10_000)).toBeCloseTo(10, 9);
    expect(est.etaSeconds(0, 10_000)).toBe(0);
    const stalled = est.etaSeconds(50, 40_000); // 30 s without a tick
    expect(stalled).toBeGreaterThan(20);
    expect(new RateEstimator(0).etaSeconds(10, 5000)).toBeNaN(); // nothing timed yet: '?'
  });

  it('a rate change is followed within a few half-lives', () => {
    const est = new RateEstimator(0, 10_000);
    let t = 0;
    for (let i = 0; i < 60; i++) est.add(1, (t += 1000)); // 1 unit/s for a minute
    for (let i = 0; i < 120; i++) est.add(1, (t += 250)); // then 4 units/s for 30 s (3 half-lives)
    expect(est.rate(t) * 1000).toBeGreaterThan(3.4);
    expect(est.rate(t) * 1000).toBeLessThan(4.01);
  });

  it('eval\'s cumulative tokens × layers: one bar line per layer, ETA from comparable units', () => {
    let now = 0;
    const { chunks, stream } = sink();
    const cb = cumulativeProgress('eval', { tty: true, stream, now: () => now });
    // 2 configurations × 2 batches of 100 tokens × 5 layers, 1 s per layer
    const total = 2 * 2 * 100 * 5;
    cb(0, total, 0, 'starting');
    let done = 0;
    for (let unit = 0; unit < 4; unit++) {
      for (let l = 0; l < 5; l++) {
        now += 1000;
        done += 100;
        cb(done, total, l === 4 ? 100 : 0, `cfg layer ${l + 1}/5`);
        if (unit === 1 && l === 1) expect(chunks.at(-1)!).toMatch(/700\/2000 {2}35% .*ETA 13s cfg layer 2\/5/);
      }
    }
    expect(chunks.length).toBe(20 + 1); // every layer drawn, then the final line
    expect(chunks.at(-1)!).toMatch(/2000\/2000 100% .* 20s/);
  });
});

