/**
 * The configurations of an evaluation (see src/eval/runner.ts for the list): which ones apply to a
 * model and adapter, the layer policy of each, and how each runs a batch of windows. Shared by
 * `runEval` and its worker threads, so both run the same code.
 */
import type { ModelConfig } from '../formats/config.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { adapterPolicyName, type Adapter } from '../formats/adapter.ts';
import { formatBytes, gateStateBytesPerLayer, sameMemoryWindow } from '../engine/memory.ts';
import { studentPrefill, type RestPolicy, type StudentOptions } from '../engine/student.ts';
import { nativeForward } from '../runtime/backend.ts';
import { nativePrefillMany, type NativeConfig } from '../native/model.ts';
import { nativeAttentionFor, nativePolicies } from '../native/gatePart.ts';
import type { AttentionPart } from '../native/layerGraph.ts';
import { defaultChunkSize } from '../model/gate.ts';
import { teacherPrefill, type PrefillResult } from '../teacher/teacher.ts';
import { fail } from '../util/errors.ts';
import { parseConfigurationName, type ConfigurationName, type WindowRequest } from '../data/suite.ts';
import type { LayerPolicy } from './report.ts';

/** How one configuration computes logits for a batch of windows. */
export interface ConfigurationPlan {
  name: ConfigurationName;
  description: string;
  weights: 'teacher' | 'student';
  layers: LayerPolicy[];
  /**
   * The batch's logits (and hidden states when asked); `onLayerDone` after each layer (progress).
   * May be asynchronous (an engine on another runtime, a cache read).
   */
  run: (sequences: number[][], hidden: boolean, onLayerDone?: (layer: number) => void) => PrefillResult | Promise<PrefillResult>;
  /** The weights it runs on, and its layer layout (null: softmax attention throughout, the teacher's forward pass). */
  on: ModelWeights;
  layout: StudentLayout | null;
  /** `window-W`: W; `sameMemory` when it is the same-memory window. */
  window?: number;
  sameMemory?: boolean;
}

export const REST_TO_POLICY: Record<RestPolicy, LayerPolicy> = { engine: 'engine-v0.1.1', teacher: 'teacher', fixed: 'fixed' };

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
export function adapterWindowOfPolicy(p: LayerPolicy): number | null {
  const m = /^adapter-window-([0-9]+)$/.exec(p);
  return m ? Number(m[1]) : null;
}

/** A student configuration's layer layout: adapter, `--rest`, softmax layers, window (see model/policy.ts). */
export type StudentLayout = Pick<StudentOptions, 'adapter' | 'rest' | 'softmaxLayers' | 'window'>;

/** How a configuration runs one batch on the tfjs engine: the teacher's forward pass, or the student's under `layout`. */
function runs(on: ModelWeights, layout: StudentLayout | null): Pick<ConfigurationPlan, 'run' | 'on' | 'layout'> {
  return {
    on,
    layout,
    run: (seqs, hidden, onLayerDone) =>
      layout === null
        ? teacherPrefill(on, seqs, { hidden, guardFinite: false, onLayerDone })
        : studentPrefill(on, seqs, { ...layout, hidden, guardFinite: false, onLayerDone }),
  };
}

/**
 * The native engine's attention parts of a configuration (null: softmax at every layer) for
 * sequences of at most `longest` tokens. A window that covers every sequence is softmax attention
 * exactly (the same mask), so it shares the softmax branch instead of computing it again.
 */
function nativeConfig(plan: ConfigurationPlan, longest: number): NativeConfig {
  const layout = plan.layout;
  const coversAll = layout !== null && layout.window != null && layout.window >= longest && !layout.adapter && layout.rest === 'teacher';
  const attention = layout === null || coversAll ? () => null : studentAttention(plan.on.config, layout, gateChunk(plan.on.config.hiddenSize, longest));
  return { name: plan.name, attention };
}

/** Parameterless gate parts by policy and chunk: configurations with the same part share a branch. */
const gateParts = new Map<string, AttentionPart>();

/** nativeStudentAttention with the prefill gate's chunk size (the same part per policy and chunk, as there). */
function studentAttention(config: ModelConfig, layout: StudentLayout, chunk: number): (layer: number) => AttentionPart | null {
  const parts = nativePolicies(config, layout).map((policy) => {
    if (policy.kind !== 'engine' && policy.kind !== 'fixed') return nativeAttentionFor(policy, { chunkSize: chunk });
    const key = `${policy.kind}/${chunk}`;
    let part = gateParts.get(key);
    if (!part) gateParts.set(key, (part = nativeAttentionFor(policy, { chunkSize: chunk })!));
    return part;
  });
  return (layer) => {
    if (!(layer >= 0 && layer < parts.length)) throw new Error(`layer ${layer} is not in the model (${parts.length} layers)`);
    return parts[layer]!;
  };
}

/**
 * The prefill gate's chunk for sequences of at most `longest` tokens: the default, or the smallest
 * power of two from 64 that holds every sequence in one chunk when that is smaller (the gate pads
 * each sequence to whole chunks: a 65-token window in a 512 chunk is 8× its work, all on padding).
 */
function gateChunk(hidden: number, longest: number): number {
  let chunk = 64;
  while (chunk < longest) chunk *= 2;
  return Math.min(defaultChunkSize(hidden), chunk);
}

/**
 * On the native engine, the configurations that run on the same weights advance together, layer by
 * layer (nativePrefillMany): each layer's weights are read and prepared once per batch for all of
 * them, not once per configuration. The first of them asked for a batch computes every one; the
 * others hand over their result when asked (units run batch-major, so they are asked next).
 */
function layerMajor(plans: ConfigurationPlan[]): ConfigurationPlan[] {
  const groups = new Map<ModelWeights, ConfigurationPlan[]>();
  for (const p of plans) groups.set(p.on, [...(groups.get(p.on) ?? []), p]);
  const configsOf = (group: ConfigurationPlan[]) => (seqs: number[][]) => {
    const longest = Math.max(...seqs.map((q) => q.length));
    return group.map((p) => nativeConfig(p, longest));
  };
  // One shared batch per group of plans on the same weights.
  const sharedOf = new Map([...groups].map(([on, group]) => [on, sharedBatch(on, configsOf(group))] as const));
  return plans.map((plan) => {
    const group = groups.get(plan.on)!;
    const configsFor = configsOf(group);
    const shared = sharedOf.get(plan.on)!;
    return {
      ...plan,
      run: async (seqs, hidden, onLayerDone) => {
        // Hidden states are asked for all windows (the suite's hidden metric) or for one window on the
        // non-finite diagnosis path: the latter runs alone.
        if (hidden && seqs.length === 1 && !shared.holds(seqs)) {
          const own = configsFor(seqs)[group.indexOf(plan)]!;
          return (await nativePrefillMany(plan.on, seqs, [own], { hidden, guardFinite: false, onLayerDone }))[own.name]!;
        }
        return shared.take(plan.name, seqs, hidden, onLayerDone);
      },
    };
  });
}

/** One batch's results for a group of configurations, computed together and handed out once each. */
function sharedBatch(weights: ModelWeights, configsFor: (seqs: number[][]) => NativeConfig[]) {
  let key: string | null = null;
  let pending: Map<string, PrefillResult> | null = null;
  const keyOf = (seqs: number[][]) => seqs.map((s) => s.join(',')).join(';');
  return {
    holds: (seqs: number[][]) => key === keyOf(seqs),
    async take(name: string, seqs: number[][], hidden: boolean, onLayerDone?: (layer: number) => void): Promise<PrefillResult> {
      const k = keyOf(seqs);
      if (key !== k || !pending?.has(name)) {
        pending = new Map(Object.entries(await nativePrefillMany(weights, seqs, configsFor(seqs), { hidden, guardFinite: false, onLayerDone })));
        key = k;
      } else if (onLayerDone) {
        for (let l = 0; l < weights.config.numLayers; l++) onLayerDone(l);
      }
      const out = pending.get(name)!;
      pending.delete(name);
      return out;
    },
  };
}

/**
 * The eval's teacher stage: the reference every configuration is compared with, one batch of
 * windows at a time. The one place the teacher's logits come from (a cache of the teacher's
 * log-probs can stand in here: a row of log-probs is a row of logits to the statistics).
 */
export function teacherConfiguration(teacherWeights: ModelWeights): ConfigurationPlan {
  return {
    name: 'teacher',
    description: `softmax attention on the teacher's weights (${teacherWeights.format} ${teacherWeights.storage})`,
    weights: 'teacher',
    layers: layerPolicies(teacherWeights.config.numLayers, null, 'teacher'),
    ...runs(teacherWeights, null),
  };
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
    teacherConfiguration(teacherWeights),
  ];
  if (studentWeights !== teacherWeights && studentWeights.format === 'symb') {
    all.push({
      name: 'teacher-on-student-weights',
      description: `softmax attention on the student's dequantized weights (${studentWeights.storage}): quantization error only`,
      weights: 'student',
      layers: layerPolicies(c.numLayers, null, 'teacher'),
      ...runs(studentWeights, null),
    });
  }
  all.push({
    name: 'engine',
    description: 'every layer engine-v0.1.1 (the published engine, no adapter)',
    weights: 'student',
    layers: layerPolicies(c.numLayers, null, 'engine'),
    ...runs(studentWeights, { adapter: null, rest: 'engine' }),
  });
  if (adapter) {
    all.push({
      name: 'adapter',
      description: `adapted layers adapter-v1, the others ${REST_TO_POLICY[rest]} (--rest ${rest})`,
      weights: 'student',
      layers: layerPolicies(c.numLayers, adapter, rest),
      ...runs(studentWeights, { adapter, rest }),
    });
    all.push({
      name: 'hybrid',
      description: 'adapted layers adapter-v1, the others softmax attention',
      weights: 'student',
      layers: layerPolicies(c.numLayers, adapter, 'teacher'),
      ...runs(studentWeights, { adapter, rest: 'teacher' }),
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
      ...runs(studentWeights, { adapter: null, rest: 'teacher', window: W }),
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
    ...runs(studentWeights, { adapter: policy === 'adapter' ? adapter : null, rest: policy === 'engine' ? 'engine' : 'teacher', softmaxLayers }),
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

/** What `selectPlans` decided: the plans to run, and what the workers need to build the same. */
export interface PlanSelection {
  plans: ConfigurationPlan[];
  /** Parametric configurations (window-W, engine@L, adapter@L) beyond the fixed ones. */
  extra: ConfigurationName[];
  /** The same-memory W when the window requests include it. */
  sameMemory: number | null;
  /** Asked for but not computed, and why. */
  skipped: { name: string; why: string }[];
}

/**
 * The configurations to run: those asked for (default: every one that applies), the window
 * baselines on top, the teacher always (it is the reference).
 */
export function selectPlans(
  teacherWeights: ModelWeights,
  studentWeights: ModelWeights,
  adapter: Adapter | null,
  rest: RestPolicy,
  ask: { configurations: ConfigurationName[] | null; windows: WindowRequest[]; skipInapplicable: boolean },
): PlanSelection {
  const c = teacherWeights.config;
  // Window baselines come on top of the configurations asked for (every report answers "does the
  // state beat a KV window of equal memory?" unless told `--window none`).
  const requested = ask.configurations;
  const sameMemory = ask.windows.includes('same-memory') ? sameMemoryWindow(c) : null;
  const windowNames = resolveWindows(ask.windows, c).map((W) => `window-${W}` as ConfigurationName);
  const extra = [...new Set([...(requested ?? []).filter((n) => parseConfigurationName(n)?.kind !== 'fixed'), ...windowNames])];
  const all = configurationPlans(teacherWeights, studentWeights, adapter, rest, extra, sameMemory);
  let wanted = requested ? [...requested, ...windowNames] : null;
  if (wanted) {
    for (const w of wanted) {
      if (!all.some((p) => p.name === w) && !ask.skipInapplicable) fail(null, `configuration '${w}' does not apply here (${whyInapplicable(w, c, adapter)})`);
    }
    wanted = wanted.filter((w) => all.some((p) => p.name === w));
  }
  let plans = all.filter((p) => p.name === 'teacher' || !wanted || wanted.includes(p.name));
  // An adapter on every layer leaves no layer to `rest`: `hybrid` would be `adapter` again (same
  // figures, one series hiding the other in every chart), so it is not computed.
  const skipped: { name: string; why: string }[] = [];
  if (adapter && plans.some((p) => p.name === 'adapter') && plans.some((p) => p.name === 'hybrid') && adapter.layers.length >= c.numLayers && Array.from({ length: c.numLayers }, (_, l) => l).every((l) => adapter.layers.includes(l))) {
    skipped.push({ name: 'hybrid', why: `identical to adapter: the adapter covers every layer (0-${c.numLayers - 1}), so no layer is left for softmax attention` });
    plans = plans.filter((p) => p.name !== 'hybrid');
  }
  // (native: the plans that run, and only those, advance together layer by layer)
  return { plans: nativeForward() ? layerMajor(plans) : plans, extra, sameMemory, skipped };
}
