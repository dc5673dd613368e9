/**
 * Worker threads (src/runtime/workers.ts): the same work on one worker and on two, same run.
 *
 * - matmul: 2·k plain matmuls, all on one worker vs k on each of two (raw scaling of the cores);
 * - distill layers (`--input teacher`: trained layers independent): L layers' steps, all on one
 *   worker vs sticky-routed one layer per worker (each keeps its layer uploaded);
 * - eval: `runEval` on a synthetic HF model with `workers: 1` and `workers: 2`; the reports'
 *   figures must be identical (the runner accumulates in the same order), which is checked.
 * Worker start-up (tsx + tfjs + wasm, ~1–3 s) is excluded from the matmul and distill figures
 * (pools are started first) and included in the eval figure (as a user sees it).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { WorkerPool } from '../src/runtime/workers.ts';
import { WORKER_TASKS } from '../src/runtime/workerTasks.ts';
import { runEval } from '../src/eval/runner.ts';
import { loadSuite } from '../src/data/suite.ts';
import { sig } from './machine.ts';
import { writeSyntheticHf, type BenchShape } from './synthetic.ts';
import { BENCH_TASKS } from './tasks.ts';

export interface SpeedupRow {
  work: string;
  oneWorkerMs: number;
  twoWorkersMs: number;
  speedup: number;
  note: string;
}

async function withPool<T>(size: number, f: (p: WorkerPool) => Promise<T>): Promise<T> {
  const pool = await WorkerPool.start(size);
  try {
    return await f(pool);
  } finally {
    await pool.close();
  }
}

export async function matmulSpeedup(m: number, k: number, n: number, jobs: number): Promise<SpeedupRow> {
  const args = Array.from({ length: jobs }, (_, i) => [m, k, n, 1, i + 1]);
  const run = (size: number) =>
    withPool(size, async (pool) => {
      await pool.map(WORKER_TASKS, 'timeMatMul', Array.from({ length: size }, () => [64, 64, 64, 1])); // start-up done
      const t0 = performance.now();
      await pool.map(WORKER_TASKS, 'timeMatMul', args);
      return performance.now() - t0;
    });
  const one = await run(1);
  const two = await run(2);
  return { work: `${jobs} × matMul [${m},${k}]·[${k},${n}] (each timed twice)`, oneWorkerMs: sig(one), twoWorkersMs: sig(two), speedup: sig(one / two), note: 'pools started before timing' };
}

export async function distillLayersSpeedup(shape: BenchShape, nLayers: number, T: number, B: number, steps: number): Promise<SpeedupRow> {
  const run = (size: number) =>
    withPool(size, async (pool) => {
      const args = Array.from({ length: nLayers }, (_, l) => [shape, l, T, B, 0]);
      await pool.mapSticky(BENCH_TASKS, 'distillLayerSteps', args, (i) => i); // upload + warm-up, not timed
      const t0 = performance.now();
      await pool.mapSticky(BENCH_TASKS, 'distillLayerSteps', Array.from({ length: nLayers }, (_, l) => [shape, l, T, B, steps]), (i) => i);
      return performance.now() - t0;
    });
  const one = await run(1);
  const two = await run(2);
  return {
    work: `${nLayers} layers × ${steps} distill steps (${shape}, T ${T}, ${B} seqs, --input teacher)`,
    oneWorkerMs: sig(one),
    twoWorkersMs: sig(two),
    speedup: sig(one / two),
    note: 'layer l on worker l mod N (sticky: weights stay uploaded); start-up and upload not timed',
  };
}

export async function evalSpeedup(shape: BenchShape, tokenBudget: number, log: (s: string) => void): Promise<SpeedupRow & { identical: boolean }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-bench-'));
  try {
    const modelDir = path.join(dir, 'hf');
    writeSyntheticHf(modelDir, shape);
    const suite = { ...loadSuite('standard'), tokenBudget, maxSeqs: null };
    const run = async (workers: number) => {
      const t0 = performance.now();
      const r = await runEval({ model: modelDir, suite, workers });
      return { ms: performance.now() - t0, r };
    };
    const one = await run(1);
    log(`eval speed-up: 1 worker ${sig(one.ms / 1000)} s`);
    const two = await run(2);
    const figures = (r: typeof one.r) => JSON.stringify(r.configurations.map((c) => [c.name, c.ppl, c.kld.mean, c.kld.p99, c.same_top_p]));
    const identical = figures(one.r) === figures(two.r);
    return {
      work: `runEval, ${shape} synthetic HF model, ${one.r.tokens.scored} tokens scored (suite 'standard' cut to that budget), ${one.r.configurations.length} configurations`,
      oneWorkerMs: sig(one.ms),
      twoWorkersMs: sig(two.ms),
      speedup: sig(one.ms / two.ms),
      identical,
      note: `worker start-up included; report figures ${identical ? 'identical' : 'DIFFER'} between 1 and 2 workers`,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
