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
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { backendInfo } from '../runtime/backend.ts';
import { checkSequences, encodePrefix, sha256Hex, type Corpus } from '../data/corpus.ts';
import { fail, InterruptedError } from '../util/errors.ts';
import { chooseWorkers, WorkerPool } from '../runtime/workers.ts';
import { resolveModel, type ResolvedModel } from '../data/registry.ts';
import { qDim, type ModelConfig } from '../formats/config.ts';
import { openModel } from '../formats/openModel.ts';
import { loadTokenizer } from '../formats/tokenizer.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { adapterPolicyName, checkAdapterBase, readAdapter, type Adapter } from '../formats/adapter.ts';
import { breakEvenContext, cachedPositions, DEFAULT_KV_BYTES, DEFAULT_STATE_BYTES, formatBytes, gateStateBytesPerLayer, kvBytesPerTokenPerLayer, sameMemoryWindow } from '../engine/memory.ts';
import { studentPrefill, type RestPolicy } from '../engine/student.ts';
import { teacherPrefill } from '../teacher/teacher.ts';
import type { PrefillResult } from '../teacher/teacher.ts';
import { contentHash } from '../formats/contentHash.ts';
import { configurationFromStats, REPORT_SCHEMA, verdictSentences, type ConfigurationReport, type EvalReport, type LayerPolicy, type MemoryReport, type WeightsInfo } from './report.ts';
import { ComparisonAccumulator, HiddenAccumulator, type PerTokenValues } from './stats.ts';
import {
  buildWindows,
  describeWindows,
  parseConfigurationName,
  positionBucketWidth,
  readSuiteCorpora,
  scoredCount,
  type ConfigurationName,
  type EvalWindow,
  type Suite,
  type WindowRequest,
  docTokensNeeded,
} from '../data/suite.ts';

import pkg from '../../package.json' with { type: 'json' };
import { version as vegaVersion } from 'vega';
import { version as vegaLiteVersion } from 'vega-lite';

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
}

/** How one configuration computes logits for a batch of windows. */
interface ConfigurationPlan {
  name: ConfigurationName;
  description: string;
  weights: 'teacher' | 'student';
  layers: LayerPolicy[];
  /** `onLayerDone`: after each layer of the batch (progress). */
  run: (sequences: number[][], hidden: boolean, onLayerDone?: (layer: number) => void) => PrefillResult;
  /** `window-W`: W; `sameMemory` when it is the same-memory window. */
  window?: number;
  sameMemory?: boolean;
}

const REST_TO_POLICY: Record<RestPolicy, LayerPolicy> = { engine: 'engine-v0.1.1', teacher: 'teacher', fixed: 'fixed' };

function layerPolicies(numLayers: number, adapter: Adapter | null, rest: RestPolicy): LayerPolicy[] {
  return Array.from({ length: numLayers }, (_, l) => (adapter && adapter.layers.includes(l) ? adapterPolicyName(adapter) : REST_TO_POLICY[rest]));
}

function windowPolicies(numLayers: number, window: number): LayerPolicy[] {
  return Array.from({ length: numLayers }, () => `window-${window}` as const);
}

/** `window-W` in a report's layer list -> W; null for any other policy. */
export function windowOfPolicy(p: LayerPolicy): number | null {
  const m = /^window-([0-9]+)$/.exec(p);
  return m ? Number(m[1]) : null;
}

/** `adapter-window-W` -> W (it keeps a gate state and the last W positions); null for any other policy. */
function adapterWindowOfPolicy(p: LayerPolicy): number | null {
  const m = /^adapter-window-([0-9]+)$/.exec(p);
  return m ? Number(m[1]) : null;
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

/**
 * Attention memory of one sequence at each context length, per configuration, from the student
 * engine's accounting (src/engine/memory.ts): softmax layers hold a KV cache (capped by a sliding
 * window), gated layers one D_q × D_q state whatever the context.
 */
export function attentionMemory(c: ModelConfig, layersPerConfiguration: LayerPolicy[][], contexts: number[]): { perConfiguration: number[][]; report: MemoryReport } {
  const kvPerToken = kvBytesPerTokenPerLayer(c, DEFAULT_KV_BYTES);
  const state = gateStateBytesPerLayer(c, DEFAULT_STATE_BYTES);
  // per layer: a softmax layer's KV cache, a window layer's (at most W positions), or one gate state
  const layerBytes = (p: LayerPolicy, t: number): number => {
    if (p === 'teacher') return cachedPositions(c, t) * kvPerToken;
    const w = windowOfPolicy(p);
    if (w !== null) return cachedPositions(c, t, w) * kvPerToken;
    const aw = adapterWindowOfPolicy(p);
    return aw !== null ? state + cachedPositions(c, t, aw) * kvPerToken : state;
  };
  const perConfiguration = layersPerConfiguration.map((layers) => contexts.map((t) => layers.reduce((sum, p) => sum + layerBytes(p, t), 0)));
  const breakEven = breakEvenContext(c);
  return {
    perConfiguration,
    report: {
      contexts,
      kv_bytes_per_element: DEFAULT_KV_BYTES,
      state_bytes_per_element: DEFAULT_STATE_BYTES,
      kv_bytes_per_token_per_layer: kvPerToken,
      state_bytes_per_layer: state,
      break_even_context: Number.isFinite(breakEven) ? breakEven : null,
      same_memory_window: sameMemoryWindow(c),
      notes:
        `KV cache = 2 · ${c.numKvHeads} kv heads · ${c.headDim} head_dim values per token (${DEFAULT_KV_BYTES}-byte, as HF holds it)` +
        (c.slidingWindow !== null ? `, at most ${c.slidingWindow} positions (sliding window)` : '') +
        `; gate state = D_q² values with D_q = ${qDim(c)} (${DEFAULT_STATE_BYTES}-byte float32). ` +
        (Number.isFinite(breakEven) ? `One gate state is smaller than the KV cache it replaces from ${breakEven} tokens on. ` : 'The sliding window keeps the KV cache below one gate state. ') +
        `A window layer keeps at most W positions; the same-memory window W = ${sameMemoryWindow(c)} holds as many bytes as one gate state.`,
    },
  };
}

/** Hash of the windows the models saw (ids and scored ranges): equal hashes = same tokens. */
export function windowsHash(windows: EvalWindow[]): string {
  const parts = windows.map((w) => `${w.firstScored}:${w.ids.join(',')}`);
  return `sha256:${sha256Hex(parts.join('\n'))}`;
}

/** Split windows into batches of at most `maxTokens` tokens (at least one window each). */
export function batchWindows(windows: EvalWindow[], maxTokens: number): EvalWindow[][] {
  const batches: EvalWindow[][] = [];
  let cur: EvalWindow[] = [];
  let tokens = 0;
  for (const w of windows) {
    if (cur.length > 0 && tokens + w.ids.length > maxTokens) {
      batches.push(cur);
      cur = [];
      tokens = 0;
    }
    cur.push(w);
    tokens += w.ids.length;
  }
  if (cur.length > 0) batches.push(cur);
  return batches;
}

/** First non-finite value in `x` (row-major [T, width]): its position and value, or null. */
function firstNonFinite(x: Float32Array, width: number): { position: number; value: number } | null {
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v - v !== 0) return { position: Math.floor(i / width), value: v };
  }
  return null;
}

/**
 * Non-finite logits would poison every statistic silently: stop and say where. The window that
 * produced them is run once more with its hidden states to name the first layer whose output holds
 * a non-finite value — where the overflow starts (only on this failure path, so otherwise the check
 * costs one scan of the logits).
 */
function checkFinite(plan: ConfigurationPlan, batch: EvalWindow[], out: PrefillResult, vocab: number, hiddenSize: number): void {
  batch.forEach((w, s) => {
    const bad = firstNonFinite(out.logits[s]!, vocab);
    if (!bad) return;
    const hidden = (out.hidden?.[s] ?? plan.run([w.ids], true).hidden?.[0]) as Float32Array[] | undefined;
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
  });
}

/**
 * Ctrl-C (SIGINT) or SIGTERM during an evaluation: stop before the next unit of work. Nothing has
 * been written yet (the report is written only once complete), so there is nothing to save; a
 * second signal exits at once.
 */
function watchInterrupts(): { interrupted: () => boolean; stop: () => void } {
  let signals = 0;
  const onSignal = () => {
    signals += 1;
    if (signals > 1) {
      process.stderr.write('synaxim: error: eval interrupted; no report written\n');
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    interrupted: () => signals > 0,
    stop: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** Let pending signal handlers run (the units themselves are synchronous). */
const yieldToEvents = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Tokenize a suite's corpora and cut them into windows. */
export async function prepareWindows(
  suite: Suite,
  resolved: ResolvedModel,
  config: ModelConfig,
): Promise<{ windows: EvalWindow[]; corpora: Corpus[]; documents: number; tokenizerFile: string }> {
  if (!resolved.tokenizerDir) {
    fail(resolved.studentDir, 'this model has no tokenizer.json (neither beside the teacher nor in the .symb tokenizer/ directory); evaluation needs one to read the corpus');
  }
  if (suite.context > config.maxPositionEmbeddings) {
    const flags = suite.source === 'flags';
    fail(flags ? null : suite.source, `${flags ? '--' : ''}context ${suite.context} is longer than the model's max_position_embeddings (${config.maxPositionEmbeddings})`);
  }
  const tokenizer = await loadTokenizer(resolved.tokenizerDir, { bosTokenId: config.bosTokenId, eosTokenIds: config.eosTokenIds, modelVocabSize: config.vocabSize });
  const corpora = readSuiteCorpora(suite);
  const bos = tokenizer.bosId ?? config.bosTokenId;
  const docs: number[][] = [];
  // Tokenize lazily: with one window per document and a cap, stop once enough documents are in hand.
  const lazy = suite.stride === null && !suite.concatenate;
  let nonEmpty = 0;
  let scoredSoFar = 0;
  const enough = () =>
    lazy && ((suite.maxSeqs !== null && nonEmpty >= suite.maxSeqs) || (suite.tokenBudget !== null && scoredSoFar >= suite.tokenBudget));
  const perDoc = docTokensNeeded(suite);
  outer: for (const c of corpora) {
    for (const text of c.documents) {
      if (enough()) break outer;
      const ids = encodePrefix(tokenizer, text, perDoc); // a long document: only the tokens its windows use
      docs.push(ids);
      const withBos = ids.length + (bos === null ? 0 : 1);
      if (withBos >= 2) nonEmpty++;
      scoredSoFar += Math.max(0, Math.min(withBos, suite.context) - 1);
    }
  }
  const windows = buildWindows(docs, { bos, context: suite.context, stride: suite.stride, maxSeqs: suite.maxSeqs, tokenBudget: suite.tokenBudget });
  if (windows.length === 0) fail(corpora[0]?.source ?? null, 'no document yields a token to score');
  checkSequences(
    windows.map((w) => Int32Array.from(w.ids)),
    config.vocabSize,
    config.maxPositionEmbeddings,
    tokenizer.file,
  );
  return { windows, corpora, documents: new Set(windows.map((w) => w.doc)).size, tokenizerFile: tokenizer.file };
}

/**
 * Every configuration that applies to these weights (teacher first), each with how it runs a batch.
 * Shared by `runEval` and its worker threads (`evalUnitInWorker`), so both run the same code.
 */
export function configurationPlans(
  teacherWeights: ModelWeights,
  studentWeights: ModelWeights,
  adapter: Adapter | null,
  rest: RestPolicy,
  extra: ConfigurationName[] = [],
  sameMemory: number | null = null,
): ConfigurationPlan[] {
  const c = teacherWeights.config;
  const all: ConfigurationPlan[] = [
    {
      name: 'teacher',
      description: `softmax attention on the teacher's weights (${teacherWeights.format} ${teacherWeights.storage})`,
      weights: 'teacher',
      layers: layerPolicies(c.numLayers, null, 'teacher'),
      run: (seqs, hidden, onLayerDone) => teacherPrefill(teacherWeights, seqs, { hidden, guardFinite: false, onLayerDone }),
    },
  ];
  if (studentWeights !== teacherWeights && studentWeights.format === 'symb') {
    all.push({
      name: 'teacher-on-student-weights',
      description: `softmax attention on the student's dequantized weights (${studentWeights.storage}): quantization error only`,
      weights: 'student',
      layers: layerPolicies(c.numLayers, null, 'teacher'),
      run: (seqs, hidden, onLayerDone) => teacherPrefill(studentWeights, seqs, { hidden, guardFinite: false, onLayerDone }),
    });
  }
  all.push({
    name: 'engine',
    description: 'every layer engine-v0.1.1 (the published engine, no adapter)',
    weights: 'student',
    layers: layerPolicies(c.numLayers, null, 'engine'),
    run: (seqs, hidden, onLayerDone) => studentPrefill(studentWeights, seqs, { adapter: null, rest: 'engine', hidden, guardFinite: false, onLayerDone }),
  });
  if (adapter) {
    all.push({
      name: 'adapter',
      description: `adapted layers adapter-v1, the others ${REST_TO_POLICY[rest]} (--rest ${rest})`,
      weights: 'student',
      layers: layerPolicies(c.numLayers, adapter, rest),
      run: (seqs, hidden, onLayerDone) => studentPrefill(studentWeights, seqs, { adapter, rest, hidden, guardFinite: false, onLayerDone }),
    });
    all.push({
      name: 'hybrid',
      description: 'adapted layers adapter-v1, the others softmax attention',
      weights: 'student',
      layers: layerPolicies(c.numLayers, adapter, 'teacher'),
      run: (seqs, hidden, onLayerDone) => studentPrefill(studentWeights, seqs, { adapter, rest: 'teacher', hidden, guardFinite: false, onLayerDone }),
    });
  }
  for (const name of extra) {
    const plan = parametricPlan(name, c, studentWeights, adapter, sameMemory);
    if (plan && !all.some((p) => p.name === plan.name)) all.push(plan);
  }
  return all;
}

/** The plan of a parametric configuration (`window-W`, `engine@L`, `adapter@L`); null when it does not apply. */
function parametricPlan(name: ConfigurationName, c: ModelConfig, studentWeights: ModelWeights, adapter: Adapter | null, sameMemory: number | null): ConfigurationPlan | null {
  const spec = parseConfigurationName(name);
  if (!spec || spec.kind === 'fixed') return null;
  if (spec.kind === 'window') {
    const W = spec.window;
    const same = W === sameMemory;
    const cap = c.slidingWindow !== null && c.slidingWindow < W ? ` (capped by the model's sliding window ${c.slidingWindow})` : '';
    return {
      name,
      description:
        `every layer softmax attention over the last ${W} positions${cap}, on the student's weights, no parameters` +
        (same ? `: the same memory as one gated layer's state (${formatBytes(gateStateBytesPerLayer(c))} per layer)` : ''),
      weights: 'student',
      layers: windowPolicies(c.numLayers, W),
      window: W,
      sameMemory: same,
      run: (seqs, hidden, onLayerDone) => studentPrefill(studentWeights, seqs, { adapter: null, rest: 'teacher', window: W, hidden, guardFinite: false, onLayerDone }),
    };
  }
  const { policy, layers } = spec;
  if (layers.some((l) => l >= c.numLayers)) return null;
  if (policy === 'adapter' && (!adapter || layers.some((l) => !adapter.layers.includes(l)))) return null;
  const softmaxLayers = Array.from({ length: c.numLayers }, (_, l) => l).filter((l) => !layers.includes(l));
  const which = layers.length === 1 ? `layer ${layers[0]}` : `layers ${layers[0]}-${layers[layers.length - 1]}`;
  return {
    name,
    description: `${which} ${policy === 'engine' ? 'engine-v0.1.1' : 'adapter-v1'}, the others softmax attention`,
    weights: 'student',
    layers: Array.from({ length: c.numLayers }, (_, l) => (layers.includes(l) ? (policy === 'engine' ? 'engine-v0.1.1' : 'adapter-v1') : 'teacher')),
    run: (seqs, hidden, onLayerDone) =>
      studentPrefill(studentWeights, seqs, { adapter: policy === 'adapter' ? adapter : null, rest: policy === 'engine' ? 'engine' : 'teacher', softmaxLayers, hidden, guardFinite: false, onLayerDone }),
  };
}

/** Why a configuration does not apply here (for the error). */
function whyInapplicable(name: ConfigurationName, c: ModelConfig, adapter: Adapter | null): string {
  const spec = parseConfigurationName(name);
  if (spec?.kind === 'layers') {
    if (spec.layers.some((l) => l >= c.numLayers)) return `the model has layers 0-${c.numLayers - 1}`;
    if (!adapter) return 'it needs --adapter';
    return `the adapter has layers ${adapter.layers.join(',')}`;
  }
  return name === 'adapter' || name === 'hybrid' ? 'it needs --adapter' : 'the student is not a .symb conversion of another teacher';
}

/** Window sizes asked for, `same-memory` resolved; ascending. */
export function resolveWindows(requests: WindowRequest[], c: ModelConfig): number[] {
  return [...new Set(requests.map((w) => (w === 'same-memory' ? sameMemoryWindow(c) : w)))].sort((a, b) => a - b);
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
export function evalUnitInWorker(spec: EvalWorkerSpec, planName: ConfigurationName, sequences: number[][], hidden: boolean): { out: PrefillResult; seconds: number } {
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
  const out = plan.run(sequences, hidden);
  return { out, seconds: (performance.now() - t) / 1000 };
}

/**
 * Run units 0..total-1 on a pool of `workers` threads and hand each result to `accumulate` in unit
 * order. A worker may run ahead of the oldest unfinished unit by at most 2·workers units, which
 * bounds the results held here (each holds a batch's logits).
 */
async function runUnitsInWorkers(
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
        results.set(unit, await pool.call<{ out: PrefillResult; seconds: number }>(w, RUNNER_MODULE, 'evalUnitInWorker', argsOf(unit)));
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

const RUNNER_MODULE = new URL(import.meta.url);

/** Run an evaluation and return its report (not yet written; see writeReport). */
export async function runEval(opts: RunEvalOptions): Promise<EvalReport> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const suite = opts.suite;
  const rest: RestPolicy = opts.rest ?? 'engine';
  const resolved = resolveModel(opts.model, opts.teacher ? { teacher: opts.teacher } : {});
  const teacherWeights = openModel(resolved.teacherDir);
  const studentWeights = path.resolve(resolved.studentDir) === path.resolve(resolved.teacherDir) ? teacherWeights : openModel(resolved.studentDir);
  const signals = watchInterrupts();
  try {
    const c = teacherWeights.config;
    checkSameShape(c, studentWeights.config, resolved.teacherDir, resolved.studentDir);
    const adapter = opts.adapter ? readAdapter(opts.adapter, studentWeights.config) : null;
    const adapterDir = adapter?.source ? path.dirname(adapter.source) : null;
    // The adapter's recorded base model against the student it is applied to (refused unless allowed).
    const baseCheck = adapter ? checkAdapterBase(adapter, studentWeights.dir, studentWeights.config, (d) => contentHash(d), opts.allowOtherBase ?? false) : null;
    if (baseCheck?.note) log(`eval: ${baseCheck.status === 'other-base' ? 'warning: ' : 'note: '}${baseCheck.note}`);

    // ---- the plan: which configurations, on which weights, with which layer policies
    const requested = opts.configurations ?? suite.configurations;
    // Window baselines come on top of the configurations asked for (every report answers "does the
    // state beat a KV window of equal memory?" unless told `--window none`).
    const windowRequests = opts.windows ?? suite.windows;
    const sameMemory = windowRequests.includes('same-memory') ? sameMemoryWindow(c) : null;
    const windowNames = resolveWindows(windowRequests, c).map((W) => `window-${W}` as ConfigurationName);
    const extra = [...new Set([...(requested ?? []).filter((n) => parseConfigurationName(n)?.kind !== 'fixed'), ...windowNames])];
    const all = configurationPlans(teacherWeights, studentWeights, adapter, rest, extra, sameMemory);
    let wanted = requested ? [...requested, ...windowNames] : null;
    if (wanted) {
      for (const w of wanted) {
        if (!all.some((p) => p.name === w) && !opts.skipInapplicable) fail(null, `configuration '${w}' does not apply here (${whyInapplicable(w, c, adapter)})`);
      }
      wanted = wanted.filter((w) => all.some((p) => p.name === w));
    }
    // The teacher always runs: it is the reference.
    let plans = all.filter((p) => p.name === 'teacher' || !wanted || wanted.includes(p.name));
    // An adapter on every layer leaves no layer to `rest`: `hybrid` would be `adapter` again (same
    // figures, one series hiding the other in every chart), so it is not computed.
    const skipped: { name: string; why: string }[] = [];
    if (adapter && plans.some((p) => p.name === 'adapter') && plans.some((p) => p.name === 'hybrid') && adapter.layers.length >= c.numLayers && Array.from({ length: c.numLayers }, (_, l) => l).every((l) => adapter.layers.includes(l))) {
      skipped.push({ name: 'hybrid', why: `identical to adapter: the adapter covers every layer (0-${c.numLayers - 1}), so no layer is left for softmax attention` });
      plans = plans.filter((p) => p.name !== 'hybrid');
    }
    for (const k of skipped) log(`eval: not running ${k.name}: ${k.why}`);

    // ---- the tokens
    const prep = await prepareWindows(suite, resolved, c);
    const windows = prep.windows;
    const scored = windows.reduce((a, w) => a + scoredCount(w), 0);
    const fed = windows.reduce((a, w) => a + w.ids.length, 0);
    log(`eval: ${resolved.name}: ${windows.length} windows, ${scored} tokens scored (${describeWindows(suite)}); configurations: ${plans.map((p) => p.name).join(', ')}`);

    const metrics = new Set(suite.metrics);
    const wantHidden = metrics.has('hidden');
    const bucket = positionBucketWidth(suite);
    const acc = new Map(plans.map((p) => [p.name, new ComparisonAccumulator(bucket)]));
    const hid = new Map(plans.map((p) => [p.name, new HiddenAccumulator()]));
    const wall = new Map(plans.map((p) => [p.name, 0]));
    const defaultBatch = Math.max(suite.context, Math.min(8192, Math.floor(2 ** 26 / c.vocabSize)));
    // Workers take (batch, configuration) units: with more than one, cut the windows into at least
    // that many batches so every worker has work even when one batch would hold them all.
    // A worker costs ~1–2 s to start (tsx, tfjs, wasm): jobs under ~2·10¹⁰ multiply-adds stay here.
    const flops = 2 * fed * plans.length * (c.numLayers * (3 * c.intermediateSize + 2 * qDim(c) + 2 * c.numKvHeads * c.headDim) * c.hiddenSize + c.vocabSize * c.hiddenSize);
    const workers = chooseWorkers({ requested: opts.workers, units: windows.length * plans.length, tiny: flops < 2e10 });
    // (each batch re-streams the weights once per configuration, so no more batches than that)
    const batchTokens = opts.batchTokens ?? (workers > 1 ? Math.max(suite.context, Math.min(defaultBatch, Math.ceil(fed / workers) + suite.context - 1)) : defaultBatch);
    const batches = batchWindows(windows, batchTokens);
    const totalUnits = batches.length * plans.length;
    let done = 0;
    // Progress in work of comparable cost: tokens × layers (a unit = one batch through one configuration,
    // ticking after every layer when it runs here), so a big model is never minutes without a tick.
    const batchFed = batches.map((b) => b.reduce((x, w) => x + w.ids.length, 0));
    const totalWork = fed * c.numLayers * plans.length;
    let finishedWork = 0;
    opts.progress?.(0, totalWork, 0, 'starting');
    if (workers > 1) log(`eval: ${workers} worker threads over ${batches.length} batches × ${plans.length} configurations`);

    // Units in canonical order (batch-major, teacher first): each configuration's accumulators see
    // the windows in the same order whether the units ran here or in workers, so the figures agree.
    const refs = new Map<number, PrefillResult>();
    const accumulate = (unit: number, out: PrefillResult, seconds: number) => {
      const b = Math.floor(unit / plans.length);
      const plan = plans[unit % plans.length]!;
      const batch = batches[b]!;
      const t = performance.now();
      checkFinite(plan, batch, out, c.vocabSize, c.hiddenSize);
      if (plan.name === 'teacher') refs.set(b, out);
      const ref = refs.get(b)!;
      const a = acc.get(plan.name)!;
      const h = hid.get(plan.name)!;
      batch.forEach((w, s) => {
        a.addWindow(ref.logits[s]!, out.logits[s]!, c.vocabSize, w.ids, w.firstScored);
        if (wantHidden && plan.name !== 'teacher' && out.hidden && ref.hidden) {
          // the states at the scored (predicting) positions
          for (let l = 0; l < out.hidden[s]!.length; l++) {
            h.add(l, ref.hidden[s]![l]!, out.hidden[s]![l]!, c.hiddenSize, w.firstScored, w.ids.length - 1);
          }
        }
      });
      if (unit % plans.length === plans.length - 1) refs.delete(b);
      wall.set(plan.name, wall.get(plan.name)! + seconds + (performance.now() - t) / 1000);
      done += 1;
      finishedWork += batchFed[b]! * c.numLayers;
      opts.progress?.(finishedWork, totalWork, batchFed[b]!, plan.name);
    };

    const stopIfInterrupted = async () => {
      await yieldToEvents();
      if (signals.interrupted()) throw new InterruptedError(`eval interrupted after ${done} of ${totalUnits} units (batch × configuration); no report written`);
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
        const out = plan.run(batches[b]!.map((w) => w.ids), wantHidden, opts.progress ? onLayerDone : undefined);
        accumulate(unit, out, (performance.now() - t) / 1000);
        await stopIfInterrupted();
      }
    } else {
      const spec: EvalWorkerSpec = { model: opts.model, teacher: opts.teacher ?? null, adapter: opts.adapter ?? null, rest, extra, sameMemory };
      await runUnitsInWorkers(workers, totalUnits, (unit) => [spec, plans[unit % plans.length]!.name, batches[Math.floor(unit / plans.length)]!.map((w) => w.ids), wantHidden], accumulate, signals.interrupted);
      await stopIfInterrupted();
    }

    // ---- memory: attention state vs KV cache as a function of context
    const memory = metrics.has('memory') ? attentionMemory(c, plans.map((p) => p.layers), suite.memoryContexts) : null;

    const configurations: ConfigurationReport[] = plans.map((p, i) =>
      configurationFromStats(
        { name: p.name, description: p.description, weights: p.weights, layers: p.layers, wall_s: wall.get(p.name)!, ...(p.window !== undefined ? { window: p.window, same_memory: p.sameMemory === true } : {}) },
        acc.get(p.name)!.result(),
        wantHidden && p.name !== 'teacher' ? hid.get(p.name)!.result() : null,
        memory ? memory.perConfiguration[i]! : null,
      ),
    );
    if (opts.perToken) for (const p of plans) opts.perToken(p.name, acc.get(p.name)!.perToken());
    const info = backendInfo();
    const sameMemoryRun = plans.some((p) => p.sameMemory) ? sameMemory : null;
    const report: EvalReport = {
      schema: REPORT_SCHEMA,
      created: new Date().toISOString(),
      verdict: [], // filled in below, from the figures
      tool: { name: 'synaxim', version: pkg.version, node: process.version, tfjs: tf.version_core, vega: vegaVersion, vega_lite: vegaLiteVersion },
      backend: { name: info.backend, detail: info.detail },
      model: {
        name: resolved.name,
        source: resolved.source,
        student: weightsInfo(studentWeights),
        teacher: weightsInfo(teacherWeights),
        tokenizer: { dir: resolved.tokenizerDir, hash: contentHash(prep.tokenizerFile) },
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
      rest: REST_TO_POLICY[rest],
      suite: {
        name: suite.name,
        description: suite.description || describeWindows(suite),
        source: suite.source,
        corpora: prep.corpora.map((cp) => ({ source: cp.source, hash: `sha256:${cp.hash}`, documents: cp.documents.length })),
        context: suite.context,
        stride: suite.stride,
        max_seqs: suite.maxSeqs,
        token_budget: suite.tokenBudget,
        metrics: suite.metrics,
        position_bucket: bucket,
      },
      tokens: { scored, windows: windows.length, documents: prep.documents, fed, hash: windowsHash(windows) },
      reference: 'teacher',
      wall_s: (performance.now() - t0) / 1000,
      same_memory_window: sameMemoryRun,
      configurations,
      memory: memory ? memory.report : null,
      ...(skipped.length ? { skipped } : {}),
    };
    report.verdict = verdictSentences(report);
    return report;
  } finally {
    signals.stop();
    if (studentWeights !== teacherWeights) studentWeights.close();
    teacherWeights.close();
  }
}
