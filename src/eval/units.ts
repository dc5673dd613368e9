/**
 * The eval's configurations stage: (batch, configuration) units run in canonical order (batch-major,
 * teacher first), here or on worker threads, each result handed to the statistics in that order so
 * the figures are the same either way.
 */
import path from 'node:path';
import { fail } from '../util/errors.ts';
import { WorkerPool } from '../runtime/workers.ts';
import { resolveModel } from '../data/registry.ts';
import { openModel } from '../formats/openModel.ts';
import { readAdapter } from '../formats/adapter.ts';
import type { RestPolicy } from '../engine/student.ts';
import type { PrefillResult } from '../teacher/teacher.ts';
import type { ConfigurationName, EvalWindow } from '../data/suite.ts';
import { configurationPlans, type ConfigurationPlan } from './configurations.ts';

/** First non-finite value in `x` (row-major [T, width]): its position and value, or null. */
function firstNonFinite(x: Float32Array, width: number): { position: number; value: number } | null {
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v - v !== 0) return { position: Math.floor(i / width), value: v };
  }
  return null;
}

/** A configuration's non-finite logit, found while accumulating; `explainNonFinite` turns it into the user's error. */
export class NonFiniteLogits extends Error {
  constructor(
    readonly plan: ConfigurationPlan,
    readonly window: EvalWindow,
    readonly bad: { position: number; value: number },
    readonly hidden: Float32Array[] | undefined,
  ) {
    super(`configuration '${plan.name}' produced a non-finite logit`);
  }
}

/**
 * Non-finite logits would poison every statistic silently: stop (before the figures take them in)
 * and let `explainNonFinite` say where. Costs one scan of the logits.
 */
export function checkFinite(plan: ConfigurationPlan, batch: EvalWindow[], out: PrefillResult, vocab: number): void {
  batch.forEach((w, s) => {
    const bad = firstNonFinite(out.logits[s]!, vocab);
    if (bad) throw new NonFiniteLogits(plan, w, bad, out.hidden?.[s]);
  });
}

/**
 * The window that produced a non-finite logit is run once more with its hidden states (only on this
 * failure path) to name the first layer whose output holds a non-finite value — where the overflow starts.
 */
export async function explainNonFinite(e: NonFiniteLogits, hiddenSize: number): Promise<never> {
  const { plan, window: w, bad } = e;
  const hidden = (e.hidden ?? (await plan.run([w.ids], true)).hidden?.[0]) as Float32Array[] | undefined;
  const l = hidden ? hidden.findIndex((h) => firstNonFinite(h, hiddenSize) !== null) : -1;
  const first = l >= 0 ? firstNonFinite(hidden![l]!, hiddenSize)! : null;
  const origin =
    l < 0 ? 'every hidden state is finite: the final norm / lm_head overflow' :
    l === 0 ? `the embeddings are non-finite at window position ${first!.position}` :
    `the first non-finite activation (${first!.value}) is in layer ${l - 1} (its output, hidden.${l}) at window position ${first!.position}`;
  fail(
    null,
    `configuration '${plan.name}' produced a non-finite logit (${bad.value}) in document ${w.doc} at window position ${bad.position} (token ${w.offset + bad.position}); ` +
      `${origin}: its weights or adapter overflow float32; no report written`,
  );
}

/** What a worker needs to open the same models as `runEval` (structured-cloneable). */
export interface EvalWorkerSpec {
  model: string;
  teacher: string | null;
  adapter: string | null;
  rest: RestPolicy;
  /** Parametric configurations (window-W, engine@L, adapter@L) and the same-memory W. */
  extra: ConfigurationName[];
  sameMemory: number | null;
}

/** Worker-side cache: the models of the last spec, kept open between units. */
let workerModels: { key: string; plans: ConfigurationPlan[]; close: () => void } | null = null;

/**
 * Runs in a worker thread (src/runtime/workers.ts): one configuration over one batch of windows, with
 * the worker's own tfjs engine. Returns the prefill result (its arrays are moved to the caller).
 */
export async function evalUnitInWorker(spec: EvalWorkerSpec, planName: ConfigurationName, sequences: number[][], hidden: boolean): Promise<{ out: PrefillResult; seconds: number }> {
  const key = JSON.stringify(spec);
  if (workerModels?.key !== key) {
    workerModels?.close();
    const resolved = resolveModel(spec.model, spec.teacher ? { teacher: spec.teacher } : {});
    const teacherWeights = openModel(resolved.teacherDir);
    const studentWeights = path.resolve(resolved.studentDir) === path.resolve(resolved.teacherDir) ? teacherWeights : openModel(resolved.studentDir);
    const adapter = spec.adapter ? readAdapter(spec.adapter, studentWeights.config) : null;
    workerModels = {
      key,
      plans: configurationPlans(teacherWeights, studentWeights, adapter, spec.rest, spec.extra, spec.sameMemory),
      close: () => {
        if (studentWeights !== teacherWeights) studentWeights.close();
        teacherWeights.close();
      },
    };
  }
  const plan = workerModels.plans.find((p) => p.name === planName);
  if (!plan) throw new Error(`evalUnitInWorker: no configuration '${planName}' in the worker`);
  const t = performance.now();
  const out = await plan.run(sequences, hidden);
  return { out, seconds: (performance.now() - t) / 1000 };
}

/**
 * Run units 0..total-1 on a pool of `workers` threads and hand each result to `accumulate` in unit
 * order. A worker may run ahead of the oldest unfinished unit by at most 2·workers units, which
 * bounds the results held here (each holds a batch's logits).
 */
export async function runUnitsInWorkers(
  workers: number,
  total: number,
  argsOf: (unit: number) => unknown[],
  accumulate: (unit: number, out: PrefillResult, seconds: number) => void,
  interrupted: () => boolean = () => false,
): Promise<void> {
  const pool = await WorkerPool.start(workers);
  const results = new Map<number, { out: PrefillResult; seconds: number }>();
  let next = 0;
  let flushed = 0;
  let failure: unknown = null;
  let waiting: (() => void)[] = [];
  const wake = () => {
    const w = waiting;
    waiting = [];
    w.forEach((f) => f());
  };
  const flush = () => {
    while (results.has(flushed)) {
      const r = results.get(flushed)!;
      results.delete(flushed);
      accumulate(flushed, r.out, r.seconds);
      flushed += 1;
    }
    wake();
  };
  const lane = async (w: number) => {
    while (failure === null && next < total && !interrupted()) {
      if (next - flushed >= 2 * workers) {
        await new Promise<void>((resolve) => waiting.push(resolve));
        continue;
      }
      const unit = next++;
      try {
        results.set(unit, await pool.call<{ out: PrefillResult; seconds: number }>(w, UNITS_MODULE, 'evalUnitInWorker', argsOf(unit)));
        flush();
      } catch (e) {
        failure ??= e;
        wake();
      }
    }
  };
  // Ctrl-C: stop the workers mid-unit (nothing they compute would be used) instead of waiting for
  // them; their pending calls reject, and the caller reports the interruption.
  const watch = setInterval(() => {
    if (interrupted()) void pool.close();
  }, 50);
  try {
    await Promise.all(Array.from({ length: workers }, (_, w) => lane(w)));
  } finally {
    clearInterval(watch);
    await pool.close();
  }
  if (failure !== null && !interrupted()) throw failure;
}

const UNITS_MODULE = new URL(import.meta.url);
