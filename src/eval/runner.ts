/**
 * `runEval`: run the configurations of an evaluation side by side on the same tokens and compute
 * every statistic against the teacher.
 *
 * Configurations (each a model over the suite's windows):
 * - `teacher` — softmax attention on the teacher's weights (the HF checkpoint where there is one);
 *   the reference for every comparison.
 * - `teacher-on-student-weights` — softmax attention on the student's dequantized `.symb` weights
 *   (only when the student is a `.symb` conversion of another teacher directory): quantization error
 *   alone, so that it can be told apart from the paradigm error of the gate.
 * - `engine` — every layer engine-v0.1.1 (the published engine, no adapter).
 * - `adapter` — adapted layers adapter-v1, the others `rest` (default engine). Needs an adapter.
 * - `hybrid` — adapted layers adapter-v1, the others softmax attention. Needs an adapter.
 * - `window-W` — every layer softmax attention over the last W positions, no parameters: the KV
 *   window baseline. By default the same-memory window runs (W such that its KV cache is as big as
 *   one gated layer's state): does the O(1) state beat a KV window of equal memory?
 * - `engine@L`, `adapter@L` — layers L gated, the others softmax (the layer sweep, src/eval/sweep.ts).
 * Every configuration but the teacher runs on the student's weights.
 *
 * Windows go through in batches: for each batch the teacher runs once (logits and hidden states
 * kept for the batch only), then each configuration runs and is folded into its accumulators, so
 * no logits are held beyond one batch.
 *
 * Stages: windows (src/eval/windows.ts) → teacher and configurations (src/eval/configurations.ts,
 * run as units by src/eval/units.ts) → statistics (src/eval/accumulation.ts) → report (here).
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { backendInfo, nativeForward } from '../runtime/backend.ts';
import { fail, InterruptedError } from '../util/errors.ts';
import { entryExists } from '../util/fileio.ts';
import { openTeacherLogits, teacherLogitsKey, TeacherLogitsWriter } from './teacherLogits.ts';
import { watchInterrupts, yieldToEvents } from '../util/interrupt.ts';
import { chooseWorkers } from '../runtime/workers.ts';
import { resolveModel, type ResolvedModel } from '../data/registry.ts';
import { qDim, type ModelConfig } from '../formats/config.ts';
import { openModel } from '../formats/openModel.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { checkAdapterBase, readAdapter, type Adapter, type AdapterBaseCheck } from '../formats/adapter.ts';
import type { RestPolicy } from '../engine/student.ts';
import { contentHash } from '../formats/contentHash.ts';
import { REPORT_SCHEMA, verdictSentences, type EvalReport, type WeightsInfo } from './report.ts';
import type { PerTokenValues } from './stats.ts';
import { describeWindows, positionBucketWidth, scoredCount, type ConfigurationName, type EvalWindow, type Suite, type WindowRequest } from '../data/suite.ts';
import { REST_TO_POLICY, selectPlans, type ConfigurationPlan, type PlanSelection } from './configurations.ts';
import { batchWindows, prepareWindows, windowsHash } from './windows.ts';
import { attentionMemory } from './attentionMemory.ts';
import { EvalAccumulation } from './accumulation.ts';
import { explainNonFinite, NonFiniteLogits, runUnitsInWorkers, type EvalWorkerSpec } from './units.ts';

import pkg from '../../package.json' with { type: 'json' };
import { version as vegaVersion } from 'vega';
import { version as vegaLiteVersion } from 'vega-lite';

export { attentionMemory } from './attentionMemory.ts';
export { batchWindows, prepareWindows, windowsHash } from './windows.ts';
export { configurationPlans, resolveWindows, windowOfPolicy, type ConfigurationPlan } from './configurations.ts';
export { evalUnitInWorker, type EvalWorkerSpec } from './units.ts';

export interface RunEvalOptions {
  /** A registry name or a directory (HF, .symb, or a parent holding hf/ and symb-*). */
  model: string;
  /** Adapter directory (symbiotic_adapter/ or a directory holding it). */
  adapter?: string | null;
  /** Apply an adapter whose recorded base model is not this one (warn and record it instead of refusing). */
  allowOtherBase?: boolean;
  suite: Suite;
  /** Policy of the non-adapted layers in the `adapter` configuration. Default engine. */
  rest?: RestPolicy;
  /** Teacher directory override, or `same` (the student's own weights). */
  teacher?: string;
  /** Only these configurations (default: the suite's list, else every one that applies); window baselines come on top. */
  configurations?: ConfigurationName[] | null;
  /** Window baselines (`window-W`) to add (default: the suite's, by default the same-memory window); [] for none. */
  windows?: WindowRequest[] | null;
  /** Skip asked-for configurations that do not apply here (e.g. teacher-on-student-weights without a .symb student) instead of failing. */
  skipInapplicable?: boolean;
  /** Most tokens fed per batch (default: by vocabulary size, so a batch's logits stay ~256 MB). */
  batchTokens?: number;
  /** Progress and log lines (default: silent). */
  log?: (line: string) => void;
  /**
   * Called once with done = 0 before the first batch, then after every layer of a batch through a
   * configuration (in-process; with workers, per finished batch): cumulative work done/total in
   * tokens × layers, and the tokens fed when a batch finished (0 between layers).
   */
  progress?: (done: number, total: number, tokens: number, status: string) => void;
  /**
   * Worker threads (src/runtime/workers.ts) that run (batch, configuration) units side by side, each
   * with its own tfjs engine; the statistics are accumulated here in the same order as with one,
   * so the report's figures are identical. Default: `chooseWorkers` (1 for tiny jobs or < 2 cores).
   */
  workers?: number | null;
  /** Receives each configuration's per-token figures once the run is complete (for per_token.safetensors). */
  perToken?: (configuration: string, values: PerTokenValues) => void;
  /**
   * A teacher log-prob cache (src/formats/teacherLogits.ts): read when the file exists (it must have
   * been made for this teacher, tokenizer and suite), else the teacher runs and the file is written
   * once the evaluation completes.
   */
  teacherLogits?: string | null;
}

/** The models of an evaluation, opened once, and the adapter checked against the student. */
interface EvalModels {
  resolved: ResolvedModel;
  teacher: ModelWeights;
  student: ModelWeights;
  adapter: Adapter | null;
  adapterDir: string | null;
  baseCheck: AdapterBaseCheck | null;
  close: () => void;
}

function openEvalModels(opts: RunEvalOptions, log: (line: string) => void): EvalModels {
  const resolved = resolveModel(opts.model, opts.teacher ? { teacher: opts.teacher } : {});
  const teacher = openModel(resolved.teacherDir);
  const student = path.resolve(resolved.studentDir) === path.resolve(resolved.teacherDir) ? teacher : openModel(resolved.studentDir);
  const close = () => {
    if (student !== teacher) student.close();
    teacher.close();
  };
  try {
    checkSameShape(teacher.config, student.config, resolved.teacherDir, resolved.studentDir);
    const adapter = opts.adapter ? readAdapter(opts.adapter, student.config) : null;
    const adapterDir = adapter?.source ? path.dirname(adapter.source) : null;
    // The adapter's recorded base model against the student it is applied to (refused unless allowed).
    const baseCheck = adapter ? checkAdapterBase(adapter, student.dir, student.config, (d) => contentHash(d), opts.allowOtherBase ?? false) : null;
    if (baseCheck?.note) log(`eval: ${baseCheck.status === 'other-base' ? 'warning: ' : 'note: '}${baseCheck.note}`);
    return { resolved, teacher, student, adapter, adapterDir, baseCheck, close };
  } catch (e) {
    close();
    throw e;
  }
}

/** Teacher and student must be the same network (a conversion changes storage, not shape). */
function checkSameShape(t: ModelConfig, s: ModelConfig, tDir: string, sDir: string): void {
  const keys: (keyof ModelConfig)[] = ['hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'vocabSize'];
  for (const k of keys) {
    if (t[k] !== s[k]) fail(sDir, `student ${k} ${String(s[k])} differs from the teacher's (${String(t[k])} in ${tDir}): not a conversion of that teacher`);
  }
}

function weightsInfo(w: ModelWeights): WeightsInfo {
  return { dir: w.dir, format: w.format, storage: w.storage, hash: contentHash(w.dir) };
}

/** How the windows are cut into batches and how many threads run the units. */
interface UnitPlan {
  batches: EvalWindow[][];
  workers: number;
  /** Tokens fed per batch. */
  batchFed: number[];
}

function planUnits(opts: RunEvalOptions, c: ModelConfig, plans: ConfigurationPlan[], windows: EvalWindow[], fed: number, log: (line: string) => void): UnitPlan {
  const suite = opts.suite;
  const defaultBatch = Math.max(suite.context, Math.min(8192, Math.floor(2 ** 26 / c.vocabSize)));
  // Workers take (batch, configuration) units: with more than one, cut the windows into at least
  // that many batches so every worker has work even when one batch would hold them all.
  // A worker costs ~1–2 s to start (tsx, tfjs, wasm): jobs under ~2·10¹⁰ multiply-adds stay here.
  const flops = 2 * fed * plans.length * (c.numLayers * (3 * c.intermediateSize + 2 * qDim(c) + 2 * c.numKvHeads * c.headDim) * c.hiddenSize + c.vocabSize * c.hiddenSize);
  // The native engine runs one process on every core (ONNX Runtime's threads) and advances all
  // configurations of a batch together: worker threads would only split that work and repeat it.
  const requested = nativeForward() && (opts.workers ?? 1) > 1 ? 1 : opts.workers;
  if (requested !== opts.workers) log(`eval: --workers ${opts.workers} applies to the tfjs backends; the native engine uses every core in this process`);
  const workers = chooseWorkers({ requested, units: windows.length * plans.length, tiny: flops < 2e10 });
  // (each batch re-streams the weights once per configuration, so no more batches than that)
  const batchTokens = opts.batchTokens ?? (workers > 1 ? Math.max(suite.context, Math.min(defaultBatch, Math.ceil(fed / workers) + suite.context - 1)) : defaultBatch);
  const batches = batchWindows(windows, batchTokens);
  return { batches, workers, batchFed: batches.map((b) => b.reduce((x, w) => x + w.ids.length, 0)) };
}

/**
 * A teacher log-prob file holds no hidden states: when one is read, the suite's hidden-state figures
 * (per-layer divergence from the teacher) are left out, said once, and the report's metrics say so.
 */
function withoutHiddenFromCache(opts: RunEvalOptions, log: (line: string) => void): RunEvalOptions {
  if (!opts.teacherLogits || !entryExists(opts.teacherLogits) || !opts.suite.metrics.includes('hidden')) return opts;
  log(`eval: no hidden-state figures: ${opts.teacherLogits} holds the teacher's log-probs, not its hidden states (run without --teacher-logits for them)`);
  return { ...opts, suite: { ...opts.suite, metrics: opts.suite.metrics.filter((m) => m !== 'hidden') } };
}

/** The teacher stage under `--teacher-logits`: the teacher plan replaced by a cache read, or tapped to fill the cache. */
interface TeacherLogitsStage {
  plans: ConfigurationPlan[];
  status: 'read' | 'written';
  /** Called once every unit is done (writes the file) or on failure (leaves nothing). */
  finish(): void;
  abort(): void;
}

function teacherLogitsStage(file: string, models: EvalModels, plans: ConfigurationPlan[], windows: EvalWindow[], tokenizerFile: string, context: number, wantHidden: boolean, log: (line: string) => void): TeacherLogitsStage {
  const c = models.teacher.config;
  const ids = windows.map((w) => w.ids);
  const key = teacherLogitsKey({ teacherDir: models.resolved.teacherDir, tokenizerFile, windows: ids, vocab: c.vocabSize, context });
  // A batch reaches a plan as its token ids; the same ids are the same window for the teacher.
  const indexOf = new Map(ids.map((w, i) => [w.join(','), i] as const));
  const windowIndices = (seqs: number[][]) =>
    seqs.map((s) => {
      const i = indexOf.get(s.join(','));
      if (i === undefined) throw new Error('teacherLogitsStage: a batch holds a window the suite does not have');
      return i;
    });
  const teacher = plans[0]!;
  if (entryExists(file)) {
    if (wantHidden) throw new Error('teacherLogitsStage: hidden-state figures asked with a cached teacher');
    const cache = openTeacherLogits(file, key);
    log(`eval: teacher log-probs read from ${file} (the teacher is not run)`);
    const cached: ConfigurationPlan = {
      ...teacher,
      description: `${teacher.description}; log-probs read from ${path.basename(file)}`,
      run: (seqs, _hidden, onLayerDone) => {
        const logits = cache.batch(windowIndices(seqs));
        for (let l = 0; l < c.numLayers; l++) onLayerDone?.(l);
        return { logits };
      },
    };
    return { plans: [cached, ...plans.slice(1)], status: 'read', finish: () => cache.close(), abort: () => cache.close() };
  }
  const writer = TeacherLogitsWriter.create(file, key, ids);
  log(`eval: the teacher's log-probs will be kept in ${file} for later evaluations against this teacher and suite`);
  const tapped: ConfigurationPlan = {
    ...teacher,
    run: async (seqs, hidden, onLayerDone) => {
      const out = await teacher.run(seqs, hidden, onLayerDone);
      windowIndices(seqs).forEach((i, s) => writer.writeWindow(i, out.logits[s]!));
      return out;
    },
  };
  return { plans: [tapped, ...plans.slice(1)], status: 'written', finish: () => writer.finish(), abort: () => writer.abort() };
}

/**
 * Every (batch, configuration) unit, here or on worker threads, folded into the statistics in unit
 * order; stops between units on Ctrl-C. Progress in work of comparable cost: tokens × layers (a unit
 * ticks after every layer when it runs here), so a big model is never minutes without a tick.
 */
async function runConfigurations(opts: RunEvalOptions, c: ModelConfig, sel: PlanSelection, windows: EvalWindow[], fed: number, interrupted: () => boolean, log: (line: string) => void): Promise<EvalAccumulation> {
  const { plans } = sel;
  const { batches, workers, batchFed } = planUnits(opts, c, plans, windows, fed, log);
  const totalUnits = batches.length * plans.length;
  const wantHidden = opts.suite.metrics.includes('hidden');
  const totalWork = fed * c.numLayers * plans.length;
  let finishedWork = 0;
  const stats = new EvalAccumulation(c, plans, batches, wantHidden, positionBucketWidth(opts.suite), (b, name) => {
    finishedWork += batchFed[b]! * c.numLayers;
    opts.progress?.(finishedWork, totalWork, batchFed[b]!, name);
  });
  opts.progress?.(0, totalWork, 0, 'starting');
  if (workers > 1) log(`eval: ${workers} worker threads over ${batches.length} batches × ${plans.length} configurations`);
  const stopIfInterrupted = async () => {
    await yieldToEvents();
    if (interrupted()) throw new InterruptedError(`eval interrupted after ${stats.done} of ${totalUnits} units (batch × configuration); no report written`);
  };
  await stopIfInterrupted();
  if (workers <= 1) {
    for (let unit = 0; unit < totalUnits; unit++) {
      const t = performance.now();
      const plan = plans[unit % plans.length]!;
      const b = Math.floor(unit / plans.length);
      const onLayerDone = (l: number) => {
        if (l + 1 < c.numLayers) opts.progress?.(finishedWork + (l + 1) * batchFed[b]!, totalWork, 0, `${plan.name} layer ${l + 1}/${c.numLayers}`);
      };
      const out = await plan.run(batches[b]!.map((w) => w.ids), wantHidden, opts.progress ? onLayerDone : undefined);
      stats.add(unit, out, (performance.now() - t) / 1000);
      await stopIfInterrupted();
    }
  } else {
    const spec: EvalWorkerSpec = { model: opts.model, teacher: opts.teacher ?? null, adapter: opts.adapter ?? null, rest: opts.rest ?? 'engine', extra: sel.extra, sameMemory: sel.sameMemory };
    const argsOf = (unit: number) => [spec, plans[unit % plans.length]!.name, batches[Math.floor(unit / plans.length)]!.map((w) => w.ids), wantHidden];
    await runUnitsInWorkers(workers, totalUnits, argsOf, (unit, out, seconds) => stats.add(unit, out, seconds), interrupted);
    await stopIfInterrupted();
  }
  return stats;
}

/** Run an evaluation and return its report (not yet written; see writeReport). */
export async function runEval(options: RunEvalOptions): Promise<EvalReport> {
  const t0 = performance.now();
  const log = options.log ?? (() => {});
  const opts = withoutHiddenFromCache(options, log);
  const suite = opts.suite;
  const rest: RestPolicy = opts.rest ?? 'engine';
  const models = openEvalModels(opts, log);
  // Ctrl-C: stop before the next unit. Nothing has been written yet (the report is written only once
  // complete), so there is nothing to save.
  const signals = watchInterrupts({ second: 'synaxim: error: eval interrupted; no report written\n' });
  try {
    const c = models.teacher.config;
    const sel = selectPlans(models.teacher, models.student, models.adapter, rest, {
      configurations: opts.configurations ?? suite.configurations,
      windows: opts.windows ?? suite.windows,
      skipInapplicable: opts.skipInapplicable ?? false,
    });
    for (const k of sel.skipped) log(`eval: not running ${k.name}: ${k.why}`);
    const prep = await prepareWindows(suite, models.resolved, c);
    const windows = prep.windows;
    const scored = windows.reduce((a, w) => a + scoredCount(w), 0);
    const fed = windows.reduce((a, w) => a + w.ids.length, 0);
    log(`eval: ${models.resolved.name}: ${windows.length} windows, ${scored} tokens scored (${describeWindows(suite)}); configurations: ${sel.plans.map((p) => p.name).join(', ')}`);
    const cache = opts.teacherLogits
      ? teacherLogitsStage(opts.teacherLogits, models, sel.plans, windows, prep.tokenizerFile, suite.context, suite.metrics.includes('hidden'), log)
      : null;
    let stats: EvalAccumulation;
    try {
      // The cache's teacher plan exists only here: its units run in-process.
      stats = await runConfigurations(cache ? { ...opts, workers: 1 } : opts, c, cache ? { ...sel, plans: cache.plans } : sel, windows, fed, signals.interrupted, log);
      cache?.finish();
    } catch (e) {
      cache?.abort();
      if (e instanceof NonFiniteLogits) await explainNonFinite(e, c.hiddenSize);
      throw e;
    }
    if (opts.perToken) for (const p of sel.plans) opts.perToken(p.name, stats.perToken(p.name));
    const report = evalReport(opts, models, sel, stats, { ...prep, scored, fed, wallSeconds: (performance.now() - t0) / 1000 });
    if (cache && opts.teacherLogits) report.teacher_logits = { file: path.resolve(opts.teacherLogits), status: cache.status };
    return report;
  } finally {
    signals.stop();
    models.close();
  }
}

/** The report stage: figures, provenance and the verdict sentences. */
function evalReport(
  opts: RunEvalOptions,
  models: EvalModels,
  sel: PlanSelection,
  stats: EvalAccumulation,
  t: Awaited<ReturnType<typeof prepareWindows>> & { scored: number; fed: number; wallSeconds: number },
): EvalReport {
  const { suite } = opts;
  const { resolved, adapter, adapterDir, baseCheck } = models;
  const c = models.teacher.config;
  const { plans } = sel;
  // ---- memory: attention state vs KV cache as a function of context
  const memory = suite.metrics.includes('memory') ? attentionMemory(c, plans.map((p) => p.layers), suite.memoryContexts) : null;
  const configurations = stats.reports(memory ? memory.perConfiguration : null);
  const info = backendInfo();
  const report: EvalReport = {
    schema: REPORT_SCHEMA,
    created: new Date().toISOString(),
    verdict: [], // filled in below, from the figures
    tool: { name: 'synaxim', version: pkg.version, node: process.version, tfjs: tf.version_core, vega: vegaVersion, vega_lite: vegaLiteVersion },
    backend: { name: info.backend, detail: info.detail },
    model: {
      name: resolved.name,
      source: resolved.source,
      student: weightsInfo(models.student),
      teacher: weightsInfo(models.teacher),
      tokenizer: { dir: resolved.tokenizerDir, hash: contentHash(t.tokenizerFile) },
      config: {
        architecture: c.architecture,
        hidden_size: c.hiddenSize,
        num_layers: c.numLayers,
        num_heads: c.numHeads,
        num_kv_heads: c.numKvHeads,
        head_dim: c.headDim,
        vocab_size: c.vocabSize,
      },
    },
    adapter:
      adapter && adapterDir
        ? {
            dir: adapterDir,
            hash: contentHash(adapterDir),
            layers: adapter.layers,
            semantics: String(adapter.config.semantics ?? 'adapter-v1'),
            format: adapter.format ?? 'safetensors',
            base_model: baseCheck
              ? { status: baseCheck.status, name: baseCheck.recorded.name, recorded_hash: baseCheck.recorded.contentHash, model_hash: baseCheck.modelHash, note: baseCheck.note }
              : null,
          }
        : null,
    rest: REST_TO_POLICY[opts.rest ?? 'engine'],
    suite: {
      name: suite.name,
      description: suite.description || describeWindows(suite),
      source: suite.source,
      corpora: t.corpora.map((cp) => ({ source: cp.source, hash: `sha256:${cp.hash}`, documents: cp.documents.length })),
      context: suite.context,
      stride: suite.stride,
      max_seqs: suite.maxSeqs,
      token_budget: suite.tokenBudget,
      metrics: suite.metrics,
      position_bucket: positionBucketWidth(suite),
    },
    tokens: { scored: t.scored, windows: t.windows.length, documents: t.documents, fed: t.fed, hash: windowsHash(t.windows) },
    reference: 'teacher',
    wall_s: t.wallSeconds,
    same_memory_window: plans.some((p) => p.sameMemory) ? sel.sameMemory : null,
    configurations,
    memory: memory ? memory.report : null,
    ...(sel.skipped.length ? { skipped: sel.skipped } : {}),
  };
  report.verdict = verdictSentences(report);
  return report;
}
