/**
 * Small tasks any worker of a WorkerPool can run (src/runtime/workers.ts): who the worker is, a plain
 * matmul timing (the benchmark's per-core peak and its 1-vs-N-worker scaling), and a deliberate
 * failure (tests). Exported functions take and return structured-cloneable values.
 */
import * as tf from '@tensorflow/tfjs-core';
import { threadId } from 'node:worker_threads';
import { backendInfo } from './backend.ts';
import { fail } from '../util/errors.ts';
import { pseudoRandom } from '../util/random.ts';

export const WORKER_TASKS = new URL('./workerTasks.ts', import.meta.url);

let calls = 0;

/** The worker's thread id, backend, and how many calls this module has served in it. */
export function describeWorker(): { threadId: number; backend: string; calls: number } {
  calls += 1;
  return { threadId, backend: backendInfo().backend, calls };
}


/**
 * x [m, k] · w [k, n] `reps` times (plain 2-D matmul, the backend's fast path), after one warm-up.
 * Returns the median milliseconds per product and a checksum of the last result (sum of its entries).
 */
export function timeMatMul(m: number, k: number, n: number, reps: number, seed = 1): { ms: number; checksum: number; gflops: number } {
  const x = tf.tensor2d(pseudoRandom(m * k, seed), [m, k]);
  const w = tf.tensor2d(pseudoRandom(k * n, seed + 1), [k, n]);
  const times: number[] = [];
  let checksum = 0;
  try {
    for (let i = 0; i <= reps; i++) {
      const t0 = performance.now();
      const y = tf.matMul(x, w);
      const data = y.dataSync() as Float32Array;
      const dt = performance.now() - t0;
      if (i > 0) times.push(dt);
      if (i === reps) {
        let s = 0;
        for (let j = 0; j < data.length; j++) s += data[j]!;
        checksum = s;
      }
      y.dispose();
    }
  } finally {
    x.dispose();
    w.dispose();
  }
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)]!;
  return { ms, checksum, gflops: (2 * m * k * n) / (ms * 1e6) };
}

/** Throws a SynaximError (tests: errors cross the thread boundary with their message). */
export function failOnPurpose(message: string): never {
  return fail('worker-test', message);
}

/** Returns a fresh Float32Array of n values i·scale (tests: results are moved, not copied). */
export function makeArray(n: number, scale: number): { data: Float32Array; view: Float32Array } {
  const buf = new Float32Array(2 * n);
  for (let i = 0; i < buf.length; i++) buf[i] = i * scale;
  // `data` spans its buffer (moved); `view` is a partial view (copied).
  const data = new Float32Array(n);
  data.set(buf.subarray(0, n));
  return { data, view: buf.subarray(n) };
}
