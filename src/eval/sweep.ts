/**
 * Layer sensitivity (`synaxim sweep`): which layers to convert first. Gates one layer at a time —
 * the published engine (`engine@l`) and, with an adapter, its parameters for that layer
 * (`adapter@l`), every other layer keeping softmax attention — then growing prefixes (layers 0..k,
 * `engine@0-k`, `adapter@0-k`), and reports held-out KLD against the teacher for each.
 *
 * The figures come from the evaluation runner (`runEval` with parametric configurations), so they
 * are computed exactly as in `synaxim eval` (same windows, accumulators, worker threads). Writes
 * sweep.json (schema `synaxim.sweep/1`, documented in docs/report-schema.md), sweep.md and
 * sweep.svg (a vega-lite chart) into one directory, sweep.json last.
 */
import path from 'node:path';
import { removeStaleTemps, writeFilesAtomic } from '../util/atomic.ts';
import { resolveModel } from '../data/registry.ts';
import { readAdapter } from '../formats/adapter.ts';
import { openModel } from '../formats/openModel.ts';
import { lines, renderSvg } from '../report/charts.ts';
import { fmt, jsonSafe, markdownTable, pct, pm, type ConfigurationReport, type EvalReport, type Table } from './report.ts';
import { runEval, type RunEvalOptions } from './runner.ts';
import { layersConfigurationName, type ConfigurationName, type Metric, type Suite } from '../data/suite.ts';

export const SWEEP_SCHEMA = 'synaxim.sweep/1';
/** The files a sweep writes; sweep.json last (its presence says the output is complete). */
export const SWEEP_FILES = ['sweep.json', 'sweep.md', 'sweep.svg'] as const;

/** One configuration's figures against the teacher. */
export interface SweepFigure {
  configuration: string;
  /** The gated layers (the others keep softmax attention). */
  layers: number[];
  kld: number;
  kld_stderr: number;
  kld_p99: number;
  ppl: number;
  ppl_stderr: number;
  same_top_p: number;
  same_top_p_stderr: number;
}

export interface SweepReport {
  schema: typeof SWEEP_SCHEMA;
  created: string;
  /** Sentences computed from the figures: the cheapest and dearest layer, how errors compound. */
  verdict: string[];
  tool: EvalReport['tool'];
  backend: EvalReport['backend'];
  model: EvalReport['model'];
  adapter: EvalReport['adapter'];
  suite: EvalReport['suite'];
  tokens: EvalReport['tokens'];
  reference: string;
  teacher: { ppl: number; ppl_stderr: number };
  /** Softmax attention on the student's weights (only for a .symb student): the floor every row stands on. */
  quantization: SweepFigure | null;
  /** One layer gated, the others softmax. */
  single: { layer: number; engine: SweepFigure; adapter: SweepFigure | null }[];
  /**
   * Layers 0..k gated, the others softmax; `sum_of_singles` = what the prefix would cost if the
   * layers' errors simply added: quantization KLD + Σ (single-layer KLD − quantization KLD)
   * (plain Σ of the single-layer KLDs without a .symb student).
   */
  prefix: { layers: number[]; engine: SweepFigure & { sum_of_singles: number }; adapter: (SweepFigure & { sum_of_singles: number }) | null }[];
  /** Layers ordered by their single-layer KLD, lowest first: the order to convert them in. */
  order: number[];
  /** Whose single-layer KLD `order` ranks: the adapter's when every layer has one, else the engine's. */
  order_by: 'adapter' | 'engine';
  wall_s: number;
}

export interface RunSweepOptions extends Pick<RunEvalOptions, 'model' | 'adapter' | 'teacher' | 'workers' | 'log' | 'progress' | 'allowOtherBase'> {
  suite: Suite;
}

/** What the sweep needs of each configuration; hidden states and memory are not computed. */
const SWEEP_METRICS: Metric[] = ['ppl', 'kld', 'same_top_p', 'delta_p'];

function figure(c: ConfigurationReport, layers: number[]): SweepFigure {
  return {
    configuration: c.name,
    layers,
    kld: c.kld.mean,
    kld_stderr: c.kld.stderr,
    kld_p99: c.kld.p99,
    ppl: c.ppl,
    ppl_stderr: c.ppl_stderr,
    same_top_p: c.same_top_p,
    same_top_p_stderr: c.same_top_p_stderr,
  };
}

/** The configurations a sweep runs over `numLayers` layers (adapter layers `adapterLayers`). */
export function sweepConfigurations(numLayers: number, adapterLayers: number[] | null): ConfigurationName[] {
  const names: ConfigurationName[] = ['teacher-on-student-weights'];
  const range = (k: number) => Array.from({ length: k + 1 }, (_, i) => i);
  for (let l = 0; l < numLayers; l++) names.push(layersConfigurationName('engine', [l]));
  for (let k = 1; k < numLayers; k++) names.push(layersConfigurationName('engine', range(k)));
  if (adapterLayers) {
    for (const l of adapterLayers) names.push(layersConfigurationName('adapter', [l]));
    // prefixes 0..k as long as the adapter has every layer of them
    for (let k = 1; k < numLayers && range(k).every((l) => adapterLayers.includes(l)); k++) names.push(layersConfigurationName('adapter', range(k)));
  }
  return names;
}

/** Run the sweep: one evaluation (teacher once per batch) over every configuration it needs. */
export async function runSweep(opts: RunSweepOptions): Promise<SweepReport> {
  const t0 = performance.now();
  const resolved = resolveModel(opts.model, opts.teacher ? { teacher: opts.teacher } : {});
  const w = openModel(resolved.studentDir);
  const numLayers = w.config.numLayers;
  w.close();
  const adapterLayers = opts.adapter ? readAdapter(opts.adapter).layers : null;
  const r = await runEval({
    ...opts,
    suite: { ...opts.suite, metrics: SWEEP_METRICS },
    configurations: sweepConfigurations(numLayers, adapterLayers),
    windows: [],
    // teacher-on-student-weights applies to a .symb student only
    skipInapplicable: true,
  });
  return sweepFromEval(r, numLayers, adapterLayers, (performance.now() - t0) / 1000);
}

/** The sweep's report from the evaluation that ran its configurations. Pure. */
export function sweepFromEval(r: EvalReport, numLayers: number, adapterLayers: number[] | null, wallSeconds: number): SweepReport {
  const by = (name: string) => r.configurations.find((c) => c.name === name);
  const range = (k: number) => Array.from({ length: k + 1 }, (_, i) => i);
  const pick = (policy: 'engine' | 'adapter', layers: number[]) => {
    const c = by(layersConfigurationName(policy, layers));
    return c ? figure(c, layers) : null;
  };
  const single = Array.from({ length: numLayers }, (_, l) => ({ layer: l, engine: pick('engine', [l])!, adapter: pick('adapter', [l]) }));
  const quant = by('teacher-on-student-weights');
  // every single-layer figure stands on the quantization floor: count it once
  const floor = quant ? quant.kld.mean : 0;
  const sumOf = (layers: number[], policy: 'engine' | 'adapter') => layers.reduce((s, l) => s + (single[l]![policy]?.kld ?? NaN) - floor, floor);
  const prefix = Array.from({ length: numLayers }, (_, k) => {
    const layers = range(k);
    const engine = pick('engine', layers)!;
    const adapter = pick('adapter', layers);
    return {
      layers,
      engine: { ...engine, sum_of_singles: sumOf(layers, 'engine') },
      adapter: adapter ? { ...adapter, sum_of_singles: sumOf(layers, 'adapter') } : null,
    };
  });
  const orderBy: 'adapter' | 'engine' = adapterLayers && single.every((s) => s.adapter) ? 'adapter' : 'engine';
  const order = [...single].sort((a, b) => a[orderBy]!.kld - b[orderBy]!.kld).map((s) => s.layer);
  const teacher = by(r.reference)!;
  const report: SweepReport = {
    schema: SWEEP_SCHEMA,
    created: r.created,
    verdict: [],
    tool: r.tool,
    backend: r.backend,
    model: r.model,
    adapter: r.adapter,
    suite: r.suite,
    tokens: r.tokens,
    reference: r.reference,
    teacher: { ppl: teacher.ppl, ppl_stderr: teacher.ppl_stderr },
    quantization: quant ? figure(quant, []) : null,
    single,
    prefix,
    order,
    order_by: orderBy,
    wall_s: wallSeconds,
  };
  report.verdict = sweepVerdict(report);
  return report;
}

/** One or two sentences from the figures: which layer to convert first and last, and how errors compound. */
export function sweepVerdict(s: SweepReport): string[] {
  const who = s.order_by === 'adapter' ? 'with the adapter' : 'with the published engine';
  const first = s.single[s.order[0]!]![s.order_by]!;
  const last = s.single[s.order[s.order.length - 1]!]![s.order_by]!;
  const out = [
    `Gated alone ${who} (the other layers softmax), layer ${s.order[0]} costs least (${fmt(first.kld, 3)} nats of KLD) and layer ${s.order[s.order.length - 1]} most (${fmt(last.kld, 3)}); convert in the order ${s.order.join(', ')}.`,
  ];
  const all = s.prefix[s.prefix.length - 1]!;
  const row = s.order_by === 'adapter' && all.adapter ? all.adapter : all.engine;
  if (s.prefix.length > 1 && Number.isFinite(row.sum_of_singles) && row.sum_of_singles > 0) {
    out.push(
      `Every layer gated costs ${fmt(row.kld, 3)} nats, ${fmt(row.kld / row.sum_of_singles, 3)}× the sum of the single-layer costs (${fmt(row.sum_of_singles, 3)}${s.quantization ? ', quantization counted once' : ''}): errors ${row.kld > row.sum_of_singles ? 'compound' : 'do not add up fully'} across layers.`,
    );
  }
  return out;
}

// ---------------------------------------------------------------- rendering

function kldCell(f: SweepFigure | null | undefined): string {
  return f ? pm(f.kld, f.kld_stderr, 3) : '–';
}

export function sweepTables(s: SweepReport): Table[] {
  const withAdapter = s.single.some((x) => x.adapter);
  const single: Table = {
    title: 'One layer gated, the others softmax attention',
    header: ['layer', 'engine KLD', 'engine PPL', 'engine same top p', ...(withAdapter ? ['adapter KLD', 'adapter PPL', 'adapter same top p'] : []), `rank (${s.order_by})`],
    rows: s.single.map((x) => [
      String(x.layer),
      kldCell(x.engine),
      pm(x.engine.ppl, x.engine.ppl_stderr, 4),
      pct(x.engine.same_top_p),
      ...(withAdapter ? [kldCell(x.adapter), x.adapter ? pm(x.adapter.ppl, x.adapter.ppl_stderr, 4) : '–', x.adapter ? pct(x.adapter.same_top_p) : '–'] : []),
      String(s.order.indexOf(x.layer) + 1),
    ]),
    note:
      `KLD = mean KL(${s.reference} ‖ configuration) per token, nats, ± one standard error over ${s.tokens.scored} scored tokens; teacher PPL ${fmt(s.teacher.ppl, 4)}.` +
      (s.quantization ? ` Softmax attention on the student's weights alone (quantization): KLD ${kldCell(s.quantization)}, PPL ${fmt(s.quantization.ppl, 4)}.` : ''),
  };
  const prefix: Table = {
    title: 'Layers 0..k gated, the others softmax attention',
    header: ['layers', 'engine KLD', 'sum of single-layer engine KLDs', 'engine same top p', ...(withAdapter ? ['adapter KLD', 'sum of single-layer adapter KLDs'] : [])],
    rows: s.prefix.map((p) => [
      p.layers.length === 1 ? `${p.layers[0]}` : `0-${p.layers[p.layers.length - 1]}`,
      kldCell(p.engine),
      fmt(p.engine.sum_of_singles, 3),
      pct(p.engine.same_top_p),
      ...(withAdapter ? [kldCell(p.adapter), p.adapter ? fmt(p.adapter.sum_of_singles, 3) : '–'] : []),
    ]),
    note:
      "A prefix KLD above the sum of its layers' single-layer KLDs means the errors compound across layers" +
      (s.quantization ? ' (the sum counts the quantization KLD, which every row includes, once).' : '.'),
  };
  return [single, prefix];
}

export function sweepChart(s: SweepReport) {
  const rows: { series: string; x: number; y: number }[] = [];
  for (const x of s.single) {
    rows.push({ series: 'engine, layer k alone', x: x.layer, y: x.engine.kld });
    if (x.adapter) rows.push({ series: 'adapter, layer k alone', x: x.layer, y: x.adapter.kld });
  }
  for (const p of s.prefix) {
    const k = p.layers[p.layers.length - 1]!;
    rows.push({ series: 'engine, layers 0..k', x: k, y: p.engine.kld });
    if (p.adapter) rows.push({ series: 'adapter, layers 0..k', x: k, y: p.adapter.kld });
  }
  if (s.quantization) for (const x of s.single) rows.push({ series: 'quantization only', x: x.layer, y: s.quantization.kld });
  const positive = rows.filter((r) => r.y > 0).map((r) => r.y);
  const span = positive.length ? Math.max(...positive) / Math.min(...positive) : 1;
  return lines(`Layer sensitivity: KL(${s.reference} ‖ ·) with layer k gated, or layers 0..k`, rows, {
    xTitle: 'layer k',
    yTitle: `mean KLD (nats${span > 100 ? ', log scale' : ''})`,
    xInteger: true,
    yLog: span > 100,
  });
}

export function renderSweepMarkdown(s: SweepReport): string {
  const out = [
    `# SYNAXIM layer sweep: ${s.model.name}, ${s.suite.name}`,
    '',
    `**Verdict.** ${s.verdict.join(' ')}`,
    '',
    `- model: ${s.model.name} — student ${s.model.student.format} ${s.model.student.storage}, teacher ${s.model.teacher.format} ${s.model.teacher.storage}`,
    `- adapter: ${s.adapter ? `${s.adapter.dir} — layers ${s.adapter.layers.join(',')}` : 'none'}`,
    `- suite: ${s.suite.name} — ${s.suite.description}; context ${s.suite.context}`,
    `- tokens: ${s.tokens.scored} scored in ${s.tokens.windows} windows`,
    `- backend: ${s.backend.name}; synaxim ${s.tool.version}; ${s.created}; ${fmt(s.wall_s, 3)} s`,
    '',
  ];
  for (const t of sweepTables(s)) out.push(markdownTable(t), '');
  out.push('Chart: sweep.svg.');
  return out.join('\n') + '\n';
}

/** Write sweep.md, sweep.svg, then sweep.json (staged first; sweep.json goes in last). */
export async function writeSweep(dir: string, sweep: SweepReport): Promise<{ json: string; md: string; svg: string }> {
  const s = jsonSafe(sweep);
  const svg = await renderSvg(sweepChart(s));
  removeStaleTemps(dir);
  writeFilesAtomic(
    dir,
    [
      { name: 'sweep.md', data: renderSweepMarkdown(s) },
      { name: 'sweep.svg', data: svg },
      { name: 'sweep.json', data: JSON.stringify(s, null, 2) + '\n' },
    ],
    'sweep.json',
  );
  return { json: path.join(dir, 'sweep.json'), md: path.join(dir, 'sweep.md'), svg: path.join(dir, 'sweep.svg') };
}
