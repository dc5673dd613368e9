/**
 * `synaxim compare REPORT_DIR... --out DIR`: one table and one set of charts across evaluation runs
 * (an INT4 vs an INT8 conversion, adapter vs no adapter, two training runs), flagging the
 * differences that are unlikely to be noise.
 *
 * The first run is the baseline. Each configuration of a later run is compared with the
 * configuration of the same name in the baseline. When both runs scored the same tokens (equal
 * `tokens.hash`) and kept their per-token figures (per_token.safetensors, written by eval), the test
 * is paired: d_i = x_i(run) − x_i(baseline) per token, z = mean(d) / s.e.(d), with x the token's NLL
 * (for PPL), KLD, top-1 agreement or Δp² (for RMS Δp). Otherwise it is unpaired,
 * z = (a − b) / sqrt(se_a² + se_b²). A difference is flagged at |z| ≥ Z_THRESHOLD (2: about 95%
 * two-sided) and called better or worse by the metric's direction (lower PPL, KLD and RMS Δp, higher
 * top-1 agreement). Runs on different tokens are compared all the same, under a prominent warning:
 * their differences include the data.
 */
import { layerRangesText } from '../util/layerRanges.ts';
import fs from 'node:fs';
import path from 'node:path';
import { writeFilesAtomic } from '../util/atomic.ts';
import { fail } from '../util/errors.ts';
import { type Chart, type VlSpec } from '../report/charts.ts';
import { htmlEscape, htmlPage, htmlTable, markdownTable, type Table } from '../report/html.ts';
import { readPerToken } from './perToken.ts';
import { REPORT_SCHEMA, fmt, jsonSafe, pct, pm, type EvalReport } from './report.ts';
import type { PerTokenValues } from './stats.ts';

export const COMPARE_SCHEMA = 'synaxim.compare/2';

/** |z| at which a difference is flagged: about 95% two-sided under the normal approximation. */
export const Z_THRESHOLD = 2;

export interface CompareRun {
  label: string;
  dir: string;
  report: EvalReport;
  /** Per-token figures per configuration (per_token.safetensors), or null when the eval kept none. */
  perToken?: Map<string, PerTokenValues> | null;
}

type Config = EvalReport['configurations'][number];

/** A metric compared across runs: its value and error, its per-token form, and which way is better. */
interface MetricDef {
  key: string;
  title: string;
  get: (c: Config) => [number, number];
  /** The per-token quantity whose paired mean difference tests this metric. */
  perToken: (v: PerTokenValues, i: number) => number;
  lowerIsBetter: boolean;
}

const METRICS: MetricDef[] = [
  { key: 'ppl', title: 'PPL', get: (c) => [c.ppl, c.ppl_stderr], perToken: (v, i) => v.nll[i]!, lowerIsBetter: true },
  { key: 'kld.mean', title: 'mean KLD', get: (c) => [c.kld.mean, c.kld.stderr], perToken: (v, i) => v.kld[i]!, lowerIsBetter: true },
  { key: 'same_top_p', title: 'same top p', get: (c) => [c.same_top_p, c.same_top_p_stderr], perToken: (v, i) => v.same_top[i]!, lowerIsBetter: false },
  { key: 'delta_p.rms', title: 'RMS Δp', get: (c) => [c.delta_p.rms, c.delta_p.rms_stderr], perToken: (v, i) => v.delta_p[i]! * v.delta_p[i]!, lowerIsBetter: true },
];

export interface CompareFlag {
  configuration: string;
  run: string;
  baseline: string;
  metric: string;
  value: number;
  baseline_value: number;
  /** value − baseline_value */
  diff: number;
  /** z of the test: paired mean per-token difference / its s.e., or diff / sqrt(se₁² + se₂²). */
  z: number;
  test: 'paired' | 'unpaired';
  direction: 'better' | 'worse';
}

export interface CompareRow {
  configuration: string;
  run: string;
  tokens: number;
  ppl: number;
  ppl_stderr: number;
  ppl_ratio: number;
  ppl_ratio_stderr: number;
  kld_mean: number;
  kld_stderr: number;
  kld_p99: number;
  same_top_p: number;
  same_top_p_stderr: number;
  rms_delta_p: number;
  rms_delta_p_stderr: number;
  /** Metrics (keys as in `flags`) that differ from the baseline's same configuration: all, better, worse. */
  differs: string[];
  better: string[];
  worse: string[];
}

export interface CompareResult {
  schema: typeof COMPARE_SCHEMA;
  created: string;
  baseline: string;
  /** How differences are flagged. */
  test: { z_threshold: number; paired: string; unpaired: string };
  runs: {
    label: string;
    dir: string;
    model: string;
    student_storage: string;
    student_hash: string;
    adapter: string | null;
    adapter_layers: number[] | null;
    adapter_hash: string | null;
    rest: string;
    suite: string;
    tokens_scored: number;
    tokens_hash: string;
    /** Whether this run's per-token figures were found (paired tests possible). */
    per_token: boolean;
    backend: string;
    created: string;
  }[];
  same_tokens: boolean;
  warnings: string[];
  rows: CompareRow[];
  flags: CompareFlag[];
}

/** Read and check `DIR/report.json` (or a report.json path). */
export function readReportDir(dirOrFile: string): EvalReport {
  const file = fs.existsSync(dirOrFile) && fs.statSync(dirOrFile).isDirectory() ? path.join(dirOrFile, 'report.json') : dirOrFile;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return fail(file, code === 'ENOENT' ? 'no report.json here (is this an eval output directory?)' : `cannot read (${code})`);
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    return fail(file, `invalid JSON (${(e as Error).message})`);
  }
  const r = j as Partial<EvalReport>;
  if (typeof r !== 'object' || r === null || r.schema !== REPORT_SCHEMA) {
    fail(file, `not a ${REPORT_SCHEMA} report (schema ${JSON.stringify((r as { schema?: unknown } | null)?.schema ?? null)})`);
  }
  if (!Array.isArray(r.configurations) || r.configurations.length === 0) fail(file, 'report has no configurations');
  for (const c of r.configurations) {
    if (typeof c?.name !== 'string' || c.kld === undefined) fail(file, 'a configuration lacks its name or statistics');
  }
  return r as EvalReport;
}

/** `sha256:abcdef…` -> `abcdef12` */
const short = (h: string | null | undefined, n = 8) => (h ? (h.split(':')[1] ?? h).slice(0, n) : '–');


/**
 * A run's name in tables and legends: model, adapter layers and a short hash of the adapter (or of
 * the student weights when there is none) — `stories260k · adapter L0-1 · 3f2a9c1b`. When two runs
 * would share a name, the report directory's name is added.
 */
export function runLabels(reports: { dir: string; report: EvalReport }[]): string[] {
  const basic = reports.map(({ report: r }) =>
    r.adapter ? `${r.model.name} · adapter L${layerRangesText(r.adapter.layers)} · ${short(r.adapter.hash)}` : `${r.model.name} · no adapter · ${short(r.model.student.hash)}`,
  );
  const named = basic.map((b, i) => (basic.filter((x) => x === b).length > 1 ? `${b} (${path.basename(path.resolve(reports[i]!.dir))})` : b));
  return named.map((b, i) => (named.filter((x) => x === b).length > 1 ? `${b} #${i + 1}` : b));
}

/** null → NaN (JSON writes non-finite numbers as null). */
const num = (x: number | null | undefined): number => (typeof x === 'number' ? x : NaN);

/** Mean, standard error and z of per-token differences d_i (i < n), Welford-accumulated in float64. */
export function pairedDifference(n: number, d: (i: number) => number): { mean: number; se: number; z: number } {
  if (n < 2) return { mean: NaN, se: NaN, z: NaN };
  let mean = 0;
  let m2 = 0;
  for (let i = 0; i < n; i++) {
    const x = d(i);
    const delta = x - mean;
    mean += delta / (i + 1);
    m2 += delta * (x - mean);
  }
  // sqrt(var / (n − 1)) with the population variance, as every other standard error here (stats.ts)
  const se = Math.sqrt(m2 / n / (n - 1));
  const z = se === 0 ? (mean === 0 ? 0 : Math.sign(mean) * Infinity) : mean / se;
  return { mean, se, z };
}

/** z of the paired per-token differences of one metric (run − baseline); NaN when not computable. */
function pairedZ(m: MetricDef, run: PerTokenValues, base: PerTokenValues): number {
  if (run.nll.length !== base.nll.length) return NaN;
  return pairedDifference(run.nll.length, (i) => m.perToken(run, i) - m.perToken(base, i)).z;
}

function unpairedZ(a: number, sa: number, b: number, sb: number): number {
  if (!Number.isFinite(a) || !Number.isFinite(b)) return NaN;
  const se = Math.sqrt((Number.isFinite(sa) ? sa * sa : 0) + (Number.isFinite(sb) ? sb * sb : 0));
  if (se === 0) return a === b ? 0 : Math.sign(a - b) * Infinity;
  return (a - b) / se;
}

export function compareRuns(runs: CompareRun[]): CompareResult {
  if (runs.length < 1) fail(null, 'compare: give at least one report directory');
  const base = runs[0]!;
  const warnings: string[] = [];
  const sameTokens = runs.every((r) => r.report.tokens.hash === base.report.tokens.hash);
  for (const r of runs.slice(1)) {
    if (r.report.tokens.hash !== base.report.tokens.hash) {
      warnings.push(
        `${r.label} scored different tokens than ${base.label} (suite ${r.report.suite.name}, ${r.report.tokens.scored} tokens vs suite ${base.report.suite.name}, ${base.report.tokens.scored} tokens): ` +
          'its differences include the data, and the test is unpaired',
      );
    } else if (!r.perToken || !base.perToken) {
      warnings.push(`${!base.perToken ? base.label : r.label} has no per-token figures (per_token.safetensors; evals before this version): ${r.label} is tested unpaired, which misses smaller differences`);
    }
  }
  // Configuration names in order of first appearance.
  const names: string[] = [];
  for (const r of runs) for (const c of r.report.configurations) if (!names.includes(c.name)) names.push(c.name);
  const rows: CompareRow[] = [];
  const flags: CompareFlag[] = [];
  for (const name of names) {
    const baseCfg = base.report.configurations.find((c) => c.name === name);
    for (const r of runs) {
      const c = r.report.configurations.find((x) => x.name === name);
      if (!c) continue;
      const better: string[] = [];
      const worse: string[] = [];
      if (baseCfg && r !== base) {
        const paired = r.report.tokens.hash === base.report.tokens.hash ? [r.perToken?.get(name), base.perToken?.get(name)] : [];
        for (const m of METRICS) {
          const [a, sa] = m.get(c).map(num) as [number, number];
          const [b, sb] = m.get(baseCfg).map(num) as [number, number];
          const usePaired = paired[0] !== undefined && paired[1] !== undefined;
          const z = usePaired ? pairedZ(m, paired[0]!, paired[1]!) : unpairedZ(a, sa, b, sb);
          if (!(Math.abs(z) >= Z_THRESHOLD)) continue;
          const direction = (z < 0) === m.lowerIsBetter ? 'better' : 'worse';
          (direction === 'better' ? better : worse).push(m.key);
          flags.push({ configuration: name, run: r.label, baseline: base.label, metric: m.key, value: a, baseline_value: b, diff: a - b, z, test: usePaired ? 'paired' : 'unpaired', direction });
        }
      }
      rows.push({
        configuration: name,
        run: r.label,
        tokens: c.tokens,
        ppl: num(c.ppl),
        ppl_stderr: num(c.ppl_stderr),
        ppl_ratio: num(c.ppl_ratio?.ratio),
        ppl_ratio_stderr: num(c.ppl_ratio?.ratio_stderr),
        kld_mean: num(c.kld.mean),
        kld_stderr: num(c.kld.stderr),
        kld_p99: num(c.kld.p99),
        same_top_p: num(c.same_top_p),
        same_top_p_stderr: num(c.same_top_p_stderr),
        rms_delta_p: num(c.delta_p?.rms),
        rms_delta_p_stderr: num(c.delta_p?.rms_stderr),
        differs: [...better, ...worse],
        better,
        worse,
      });
    }
  }
  return {
    schema: COMPARE_SCHEMA,
    created: new Date().toISOString(),
    baseline: base.label,
    test: {
      z_threshold: Z_THRESHOLD,
      paired: 'same tokens: z = mean / s.e. of the per-token differences (NLL for PPL, KLD, top-1 agreement, Δp² for RMS Δp)',
      unpaired: 'different tokens or no per-token figures: z = (a − b) / sqrt(se_a² + se_b²)',
    },
    runs: runs.map((r) => ({
      label: r.label,
      dir: r.dir,
      model: r.report.model.name,
      student_storage: r.report.model.student.storage,
      student_hash: r.report.model.student.hash,
      adapter: r.report.adapter?.dir ?? null,
      adapter_layers: r.report.adapter?.layers ?? null,
      adapter_hash: r.report.adapter?.hash ?? null,
      rest: r.report.rest,
      suite: r.report.suite.name,
      tokens_scored: r.report.tokens.scored,
      tokens_hash: r.report.tokens.hash,
      per_token: Boolean(r.perToken),
      backend: r.report.backend.name,
      created: r.report.created,
    })),
    same_tokens: sameTokens,
    warnings,
    rows,
    flags,
  };
}

/** Read the report directories (and their per-token figures) and compare them. */
export function compareReportDirs(dirs: string[]): { runs: CompareRun[]; result: CompareResult } {
  const loaded = dirs.map((d) => {
    const report = readReportDir(d);
    const dir = fs.existsSync(d) && fs.statSync(d).isDirectory() ? d : path.dirname(d);
    return { dir: path.resolve(dir), report, perToken: readPerToken(dir, report.tokens.hash) };
  });
  const l = runLabels(loaded);
  const runs = loaded.map((x, i) => ({ label: l[i]!, ...x }));
  return { runs, result: compareRuns(runs) };
}

// ---------------------------------------------------------------- tables

/** A table whose cells may be marked better or worse than the baseline. */
export interface CompareTable extends Table {
  /** `row,column` -> 'better' | 'worse' */
  marks?: Map<string, 'better' | 'worse'>;
}

const COLUMNS: { title: string; metric?: string; cell: (r: CompareRow) => string }[] = [
  { title: 'configuration', cell: (r) => r.configuration },
  { title: 'run', cell: (r) => r.run },
  { title: 'tokens', cell: (r) => String(r.tokens) },
  { title: 'PPL', metric: 'ppl', cell: (r) => pm(r.ppl, r.ppl_stderr) },
  { title: 'PPL / PPL(teacher)', cell: (r) => pm(r.ppl_ratio, r.ppl_ratio_stderr) },
  { title: 'mean KLD', metric: 'kld.mean', cell: (r) => pm(r.kld_mean, r.kld_stderr) },
  { title: 'p99 KLD', cell: (r) => fmt(r.kld_p99) },
  { title: 'same top p', metric: 'same_top_p', cell: (r) => pct(r.same_top_p, r.same_top_p_stderr) },
  { title: 'RMS Δp', metric: 'delta_p.rms', cell: (r) => pct(r.rms_delta_p, r.rms_delta_p_stderr) },
];

function testNote(c: CompareResult): string {
  return (
    `Green: better than the same configuration in the baseline run (${c.baseline}); red: worse — where |z| ≥ ${c.test.z_threshold} (about 95%, two-sided). ` +
    `Same tokens: paired per-token differences (NLL for PPL, KLD, top-1 agreement, Δp² for RMS Δp); otherwise unpaired, sqrt(se₁² + se₂²). ± = one standard error.`
  );
}

export function compareTable(c: CompareResult): CompareTable {
  const marks = new Map<string, 'better' | 'worse'>();
  const flagsCells: [number, number][] = [];
  c.rows.forEach((r, ri) =>
    COLUMNS.forEach((col, ci) => {
      if (!col.metric) return;
      const mark = r.better.includes(col.metric) ? 'better' : r.worse.includes(col.metric) ? 'worse' : null;
      if (mark) {
        marks.set(`${ri},${ci}`, mark);
        flagsCells.push([ri, ci]);
      }
    }),
  );
  return {
    title: 'All runs',
    header: COLUMNS.map((x) => x.title),
    rows: c.rows.map((r, ri) => COLUMNS.map((col, ci) => {
      const mark = marks.get(`${ri},${ci}`);
      return col.cell(r) + (mark === 'better' ? ' ▲' : mark === 'worse' ? ' ▼' : '');
    })),
    flags: flagsCells,
    marks,
    note: testNote(c) + ' ▲ better, ▼ worse.',
  };
}

const METRIC_TITLE = Object.fromEntries(METRICS.map((m) => [m.key, m.title]));

export function flagsTable(c: CompareResult): CompareTable | null {
  if (c.flags.length === 0) return null;
  const marks = new Map<string, 'better' | 'worse'>();
  c.flags.forEach((f, i) => marks.set(`${i},3`, f.direction));
  const show = (f: CompareFlag, x: number) => (f.metric === 'same_top_p' || f.metric === 'delta_p.rms' ? pct(x) : fmt(x));
  return {
    title: `Differences at |z| ≥ ${c.test.z_threshold}`,
    header: ['configuration', 'run', 'metric', 'verdict', 'value', 'baseline', 'difference', 'z', 'test'],
    rows: c.flags.map((f) => [f.configuration, f.run, METRIC_TITLE[f.metric] ?? f.metric, f.direction, show(f, f.value), show(f, f.baseline_value), fmt(f.diff, 3), fmt(f.z, 3), f.test]),
    marks,
    note: `baseline: ${c.baseline}. ${testNote(c)}`,
  };
}

export function runsTable(c: CompareResult): CompareTable {
  return {
    title: 'Runs',
    header: ['run', 'report directory', 'student', 'adapter', 'suite', 'tokens', 'token hash', 'per-token', 'backend', 'created'],
    rows: c.runs.map((r) => [
      r.label + (r.label === c.baseline ? ' (baseline)' : ''),
      path.basename(r.dir),
      `${r.student_storage} ${short(r.student_hash)}`,
      r.adapter_layers ? `L${layerRangesText(r.adapter_layers)}, rest ${r.rest} (${short(r.adapter_hash)})` : 'none',
      r.suite,
      String(r.tokens_scored),
      short(r.tokens_hash),
      r.per_token ? 'yes' : 'no',
      r.backend,
      r.created.slice(0, 16).replace('T', ' '),
    ]),
  };
}

// ---------------------------------------------------------------- charts

const CHART_CONFIG = {
  font: 'Helvetica, Arial, sans-serif',
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#e6e6e6' },
  // No label truncation; legends below the plot, where long run names have room.
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 0, orient: 'bottom', direction: 'vertical' },
  title: { fontSize: 14, anchor: 'start' },
  view: { stroke: null },
};
const WIDTH = 560;
const HEIGHT = 240;
/** Categorical palettes: 10 colours while they suffice, else 20. */
const scheme = (n: number) => (n <= 10 ? 'tableau10' : 'tableau20');

/** Grouped bars: x = configuration, one bar per run (colour), ± 1 s.e. rules. */
function groupedBars(title: string, rows: { run: string; configuration: string; value: number; stderr: number }[], yTitle: string, runOrder: string[]): VlSpec {
  const values = rows.filter((r) => Number.isFinite(r.value)).map((r) => ({ ...r, lo: r.value - (Number.isFinite(r.stderr) ? r.stderr : 0), hi: r.value + (Number.isFinite(r.stderr) ? r.stderr : 0) }));
  const x = { field: 'configuration', type: 'nominal', title: null, sort: null, axis: { labelAngle: -20, labelLimit: 0 } };
  const xOffset = { field: 'run', type: 'nominal', sort: runOrder };
  return {
    title,
    width: WIDTH,
    height: HEIGHT,
    data: { values },
    config: CHART_CONFIG,
    layer: [
      {
        mark: { type: 'bar', tooltip: true },
        encoding: { x, xOffset, y: { field: 'value', type: 'quantitative', title: yTitle, scale: { zero: true } }, color: { field: 'run', type: 'nominal', title: 'run', sort: runOrder, scale: { scheme: scheme(runOrder.length), domain: runOrder } } },
      },
      { mark: { type: 'rule', color: '#333' }, encoding: { x, xOffset, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } } },
    ],
  };
}

/** Lines: colour = configuration, dash and point shape = run, so n configurations × m runs need n colours. */
function runLines(title: string, rows: { configuration: string; run: string; x: number; y: number }[], o: { xTitle: string; yTitle: string; yLog?: boolean; xInteger?: boolean }, runOrder: string[]): VlSpec {
  const ok = rows.filter((r) => Number.isFinite(r.x) && Number.isFinite(r.y) && (!o.yLog || r.y > 0));
  const configs = [...new Set(ok.map((r) => r.configuration))];
  return {
    title,
    width: WIDTH,
    height: HEIGHT,
    data: { values: ok },
    config: CHART_CONFIG,
    mark: { type: 'line', point: true, tooltip: true },
    encoding: {
      x: { field: 'x', type: 'quantitative', title: o.xTitle, scale: { zero: false }, axis: o.xInteger ? { tickMinStep: 1, format: 'd' } : {} },
      y: { field: 'y', type: 'quantitative', title: o.yTitle, scale: o.yLog ? { type: 'log' } : { zero: false } },
      color: { field: 'configuration', type: 'nominal', title: 'configuration', sort: configs, scale: { scheme: scheme(configs.length), domain: configs } },
      strokeDash: { field: 'run', type: 'nominal', title: 'run', sort: runOrder, scale: { domain: runOrder } },
      shape: { field: 'run', type: 'nominal', title: 'run', sort: runOrder, scale: { domain: runOrder } },
    },
  };
}

export function compareCharts(runs: CompareRun[], c: CompareResult): Chart[] {
  const order = c.runs.map((r) => r.label);
  const charts: Chart[] = [
    { id: 'ppl', title: 'Perplexity', spec: groupedBars('Perplexity per configuration and run (± 1 s.e.)', c.rows.map((r) => ({ run: r.run, configuration: r.configuration, value: r.ppl, stderr: r.ppl_stderr })), 'perplexity (lower is better)', order) },
  ];
  const nonRef = c.rows.filter((r) => r.kld_mean > 0);
  if (nonRef.length > 0) {
    charts.push({ id: 'kld', title: 'Mean KLD', spec: groupedBars('Mean KLD vs the teacher (± 1 s.e.)', nonRef.map((r) => ({ run: r.run, configuration: r.configuration, value: r.kld_mean, stderr: r.kld_stderr })), 'mean KLD, nats (lower is better)', order) });
    charts.push({ id: 'top1', title: 'Same top p', spec: groupedBars('Top-1 agreement with the teacher (± 1 s.e.)', nonRef.map((r) => ({ run: r.run, configuration: r.configuration, value: 100 * r.same_top_p, stderr: 100 * r.same_top_p_stderr })), 'same top p, % (higher is better)', order) });
  }
  const others = (run: CompareRun) => run.report.configurations.filter((cfg) => cfg.name !== run.report.reference);
  const pos = runs.flatMap((run) => others(run).flatMap((cfg) => cfg.by_position.map((b) => ({ configuration: cfg.name, run: run.label, x: b.start + (run.report.suite.position_bucket - 1) / 2, y: b.kld_mean }))));
  if (pos.length > 0) charts.push({ id: 'position', title: 'Divergence vs position', spec: runLines('Mean KLD vs position in the window', pos, { xTitle: 'position', yTitle: 'mean KLD (nats)' }, order) });
  const layers = runs.flatMap((run) => others(run).flatMap((cfg) => (cfg.hidden ?? []).filter((h) => h.hidden > 0).map((h) => ({ configuration: cfg.name, run: run.label, x: h.hidden - 1, y: h.rel_mse }))));
  if (layers.length > 0) {
    charts.push({ id: 'layers', title: 'Per-layer error', spec: runLines('Hidden-state relative MSE after each layer', layers, { xTitle: 'layer', yTitle: 'relative MSE (log scale)', yLog: true, xInteger: true }, order) });
  }
  return charts;
}

// ---------------------------------------------------------------- markdown and html

export function renderCompareMarkdown(c: CompareResult): string {
  const out = [`# SYNAXIM comparison of ${c.runs.length} runs`, ''];
  for (const w of c.warnings) out.push(`> **Warning:** ${w}`, '');
  for (const t of [runsTable(c), compareTable(c), flagsTable(c)]) if (t) out.push(markdownTable(t), '');
  if (c.flags.length === 0 && c.runs.length > 1) out.push(`No configuration differs from the baseline at |z| ≥ ${c.test.z_threshold}.`, '');
  out.push('Charts: compare.html.');
  return out.join('\n');
}

/** A compare table in HTML: scrolls sideways, better/worse cells coloured. */
function compareHtmlTable(t: CompareTable, id: string): string {
  return htmlTable(t, { id, wrap: true, cellClass: (ri, ci) => t.marks?.get(`${ri},${ci}`) ?? null });
}

const COMPARE_CSS = `
body { font-family: Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1360px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 6px; }
h2 { font-size: 16px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
ul.meta { font-size: 13px; color: #444; padding-left: 18px; }
.table-wrap { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin-top: 6px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
#runs td:nth-child(-n+2) { white-space: normal; text-align: left; max-width: 320px; overflow-wrap: anywhere; }
#all-runs td:nth-child(2), #differences td:nth-child(-n+4) { text-align: left; }
thead th { background: #f4f4f4; }
td.better { background: #d9f2d9; color: #14532d; font-weight: bold; }
td.worse { background: #fbd5d5; color: #7f1d1d; font-weight: bold; }
p.note { font-size: 12px; color: #666; max-width: 1100px; }
div.warning { background: #fff4e5; border: 2px solid #d9480f; color: #7c2d12; padding: 10px 14px; font-size: 15px; margin: 12px 0; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; }
figure.chart { margin: 0; border: 1px solid #eee; padding: 8px; max-width: 100%; overflow-x: auto; }
`;

async function renderCompareHtml(runs: CompareRun[], c: CompareResult, embedded: unknown): Promise<string> {
  const tables = [compareHtmlTable(runsTable(c), 'runs'), compareHtmlTable(compareTable(c), 'all-runs')];
  const ft = flagsTable(c);
  if (ft) tables.push(compareHtmlTable(ft, 'differences'));
  else if (c.runs.length > 1) tables.push(`<p class="note" id="no-differences">No configuration differs from the baseline at |z| ≥ ${c.test.z_threshold}.</p>`);
  return htmlPage({
    title: `SYNAXIM comparison of ${c.runs.length} runs`,
    css: COMPARE_CSS,
    // one block, even when empty (an empty line then; kept so the page's bytes did not change)
    intro: [c.warnings.map((w) => `<div class="warning"><strong>Warning:</strong> ${htmlEscape(w)}</div>`).join('\n')],
    meta: [`baseline: ${c.baseline}`, `flagged: |z| ≥ ${c.test.z_threshold} (about 95%); ${c.same_tokens ? 'all runs scored the same tokens' : 'the runs scored different tokens'}`],
    sections: tables,
    charts: compareCharts(runs, c),
    data: embedded,
  });
}

/** Write compare.md, compare.html, then compare.json into `outDir` (staged, compare.json last). */
export async function writeComparison(outDir: string, runs: CompareRun[], c: CompareResult): Promise<{ json: string; md: string; html: string }> {
  const safe = jsonSafe(c);
  const paths = { json: path.join(outDir, 'compare.json'), md: path.join(outDir, 'compare.md'), html: path.join(outDir, 'compare.html') };
  const html = await renderCompareHtml(runs, c, safe);
  // Staged, then renamed in with compare.json last (see writeFilesAtomic).
  writeFilesAtomic(outDir, [{ name: 'compare.md', data: renderCompareMarkdown(safe) + '\n' }, { name: 'compare.html', data: html }, { name: 'compare.json', data: JSON.stringify(safe, null, 2) + '\n' }], 'compare.json');
  return paths;
}
