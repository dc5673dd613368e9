/**
 * Wall-clock timing for benchmarks: a warm-up call (tfjs compiles and allocates on first use),
 * then repetitions; the median is reported. Results are forced with dataSync by the callers, so
 * the time covers the computation, not just its scheduling. `interleaved` alternates several
 * candidates rep by rep, so a ratio of two of them sees the same machine load (the cores are
 * shared with other processes; a slow minute hits both sides of the ratio).
 */
import * as tf from '@tensorflow/tfjs-core';

export interface Timing {
  /** Median over the timed repetitions, milliseconds. */
  ms: number;
  min: number;
  max: number;
  reps: number;
}

function summarize(samples: number[]): Timing {
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  const ms = n % 2 ? s[(n - 1) / 2]! : 0.5 * (s[n / 2 - 1]! + s[n / 2]!);
  return { ms, min: s[0]!, max: s[n - 1]!, reps: n };
}

/** Run `f` once to warm up (unless `warmup` is 0), then `reps` times; `f` must finish its work (dataSync) before returning. */
export function time(f: () => void, reps: number, warmup = 1): Timing {
  for (let i = 0; i < warmup; i++) f();
  const samples: number[] = [];
  for (let i = 0; i < Math.max(1, reps); i++) {
    const t0 = performance.now();
    f();
    samples.push(performance.now() - t0);
  }
  return summarize(samples);
}

/** Time several candidates, alternating them in each repetition (after one warm-up of each). */
export function interleaved<K extends string>(fs: Record<K, () => void>, reps: number, warmup = 1): Record<K, Timing> {
  const keys = Object.keys(fs) as K[];
  for (let i = 0; i < warmup; i++) for (const k of keys) fs[k]();
  const samples = Object.fromEntries(keys.map((k) => [k, [] as number[]])) as Record<K, number[]>;
  for (let r = 0; r < Math.max(1, reps); r++) {
    for (const k of keys) {
      const t0 = performance.now();
      fs[k]();
      samples[k].push(performance.now() - t0);
    }
  }
  return Object.fromEntries(keys.map((k) => [k, summarize(samples[k])])) as Record<K, Timing>;
}

/** Run a tfjs computation in a tidy scope and read every output back (forces the work). */
export function force(f: () => tf.Tensor | tf.Tensor[]): void {
  const outs = tf.tidy(() => {
    const o = f();
    return Array.isArray(o) ? o : [o];
  });
  for (const o of outs) o.dataSync();
  for (const o of outs) o.dispose();
}
