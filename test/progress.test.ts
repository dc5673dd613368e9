/** Progress output: a redrawn bar with ETA and tokens/s on a terminal, sparse plain lines otherwise. */
import { describe, expect, it } from 'vitest';
import { formatDuration, formatRate, Progress } from '../src/core/progress.ts';

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
