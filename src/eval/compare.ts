/**
 * `synaxim compare REPORT_DIR... --out DIR`: one table and one set of charts across evaluation runs
 * (an INT4 vs an INT8 conversion, adapter vs no adapter, two training runs), flagging differences
 * larger than their combined standard errors.
 *
 * The first run is the baseline. Each configuration of a later run is compared with the
 * configuration of the same name in the baseline: a figure is flagged when
 * |a − b| > sqrt(se_a² + se_b²) (the runs' errors taken as independent; when both runs scored the
 * same tokens this is conservative, since paired errors would be smaller). Runs on different tokens
 * (different `tokens.hash`) are compared all the same, with a warning: their differences include
 * the data.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../core/atomic.ts';
import { fail } from '../core/errors.ts';
import { barWithErrors, lines, type Chart } from './charts.ts';
import { REPORT_SCHEMA, fmt, htmlPage, jsonSafe, markdownTable, pct, pm, type EvalReport, type Table } from './report.ts';
import { differsBeyondError } from './stats.ts';

export const COMPARE_SCHEMA = 'synaxim.compare/1';

export interface CompareRun {
  label: string;
  dir: string;
  report: EvalReport;
}

/** A metric compared across runs: how to read its value and standard error from a configuration. */
interface MetricDef {
  key: string;
  title: string;
  get: (c: EvalReport['configurations'][number]) => [number, number];
}

const METRICS: MetricDef[] = [
  { key: 'ppl', title: 'PPL', get: (c) => [c.ppl, c.ppl_stderr] },
  { key: 'kld.mean', title: 'mean KLD', get: (c) => [c.kld.mean, c.kld.stderr] },
  { key: 'same_top_p', title: 'same top p', get: (c) => [c.same_top_p, c.same_top_p_stderr] },
  { key: 'delta_p.rms', title: 'RMS Δp', get: (c) => [c.delta_p.rms, c.delta_p.rms_stderr] },
];

export interface CompareFlag {
  configuration: string;
  run: string;
  baseline: string;
  metric: string;
  value: number;
  baseline_value: number;
  diff: number;
  combined_stderr: number;
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
  /** Metrics (keys as in `flags`) that differ from the baseline's same configuration beyond error. */
  differs: string[];
}

export interface CompareResult {
  schema: typeof COMPARE_SCHEMA;
  created: string;
  baseline: string;
  runs: {
    label: string;
    dir: string;
    model: string;
    student_hash: string;
    adapter: string | null;
    adapter_hash: string | null;
    suite: string;
    tokens_scored: number;
    tokens_hash: string;
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

/** Labels for runs: the directory names, made unique. */
function labels(dirs: string[]): string[] {
  const base = dirs.map((d) => path.basename(path.resolve(d)) || d);
  return base.map((b, i) => (base.filter((x) => x === b).length > 1 ? `${i + 1}:${b}` : b));
}

/** null → NaN (JSON writes non-finite numbers as null). */
const num = (x: number | null | undefined): number => (typeof x === 'number' ? x : NaN);

export function compareRuns(runs: CompareRun[]): CompareResult {
  if (runs.length < 1) fail(null, 'compare: give at least one report directory');
  const base = runs[0]!;
  const warnings: string[] = [];
  const sameTokens = runs.every((r) => r.report.tokens.hash === base.report.tokens.hash);
  if (!sameTokens) {
    for (const r of runs.slice(1)) {
      if (r.report.tokens.hash !== base.report.tokens.hash) {
        warnings.push(`${r.label} scored different tokens than ${base.label} (suite ${r.report.suite.name} vs ${base.report.suite.name}): differences include the data`);
      }
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
      const differs: string[] = [];
      if (baseCfg && r !== base) {
        for (const m of METRICS) {
          const [a, sa] = m.get(c).map(num) as [number, number];
          const [b, sb] = m.get(baseCfg).map(num) as [number, number];
          if (differsBeyondError(a, sa, b, sb)) {
            differs.push(m.key);
            flags.push({ configuration: name, run: r.label, baseline: base.label, metric: m.key, value: a, baseline_value: b, diff: a - b, combined_stderr: Math.sqrt(sa * sa + sb * sb) });
          }
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
        differs,
      });
    }
  }
  return {
    schema: COMPARE_SCHEMA,
    created: new Date().toISOString(),
    baseline: base.label,
    runs: runs.map((r) => ({
      label: r.label,
      dir: r.dir,
      model: r.report.model.name,
      student_hash: r.report.model.student.hash,
      adapter: r.report.adapter?.dir ?? null,
      adapter_hash: r.report.adapter?.hash ?? null,
      suite: r.report.suite.name,
      tokens_scored: r.report.tokens.scored,
      tokens_hash: r.report.tokens.hash,
      backend: r.report.backend.name,
      created: r.report.created,
    })),
    same_tokens: sameTokens,
    warnings,
    rows,
    flags,
  };
}

/** Read the report directories and compare them. */
export function compareReportDirs(dirs: string[]): { runs: CompareRun[]; result: CompareResult } {
  const l = labels(dirs);
  const runs = dirs.map((d, i) => ({ label: l[i]!, dir: path.resolve(d), report: readReportDir(d) }));
  return { runs, result: compareRuns(runs) };
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

export function compareTable(c: CompareResult): Table {
  const flagsCells: [number, number][] = [];
  c.rows.forEach((r, ri) => COLUMNS.forEach((col, ci) => col.metric && r.differs.includes(col.metric) && flagsCells.push([ri, ci])));
  return {
    title: 'All runs',
    header: COLUMNS.map((c) => c.title),
    rows: c.rows.map((r) => COLUMNS.map((col) => col.cell(r))),
    flags: flagsCells,
    note: `Highlighted: differs from the same configuration in the baseline run (${c.baseline}) by more than the combined standard error sqrt(se₁² + se₂²).`,
  };
}

export function flagsTable(c: CompareResult): Table | null {
  if (c.flags.length === 0) return null;
  return {
    title: 'Differences beyond the standard errors',
    header: ['configuration', 'run', 'metric', 'value', `baseline (${c.baseline})`, 'difference', 'combined s.e.', 'difference / s.e.'],
    rows: c.flags.map((f) => [f.configuration, f.run, f.metric, fmt(f.value), fmt(f.baseline_value), fmt(f.diff, 3), fmt(f.combined_stderr, 2), fmt(f.diff / f.combined_stderr, 3)]),
  };
}

export function runsTable(c: CompareResult): Table {
  return {
    title: 'Runs',
    header: ['run', 'model', 'student hash', 'adapter', 'suite', 'tokens', 'token hash', 'backend', 'created'],
    rows: c.runs.map((r) => [
      r.label + (r.label === c.baseline ? ' (baseline)' : ''),
      r.model,
      r.student_hash.slice(0, 19),
      r.adapter ? `${path.basename(r.adapter)} ${(r.adapter_hash ?? '').slice(0, 19)}` : 'none',
      r.suite,
      String(r.tokens_scored),
      r.tokens_hash.slice(0, 19),
      r.backend,
      r.created,
    ]),
  };
}

export function compareCharts(runs: CompareRun[], c: CompareResult): Chart[] {
  const charts: Chart[] = [
    {
      id: 'ppl',
      title: 'Perplexity',
      spec: barWithErrors('Perplexity per configuration and run (± 1 s.e.)', c.rows.map((r) => ({ label: r.run, group: r.configuration, value: r.ppl, stderr: r.ppl_stderr })), 'perplexity'),
    },
  ];
  const nonRef = c.rows.filter((r) => r.kld_mean > 0);
  if (nonRef.length > 0) {
    charts.push({
      id: 'kld',
      title: 'Mean KLD',
      spec: barWithErrors('Mean KLD vs the teacher (± 1 s.e.)', nonRef.map((r) => ({ label: r.run, group: r.configuration, value: r.kld_mean, stderr: r.kld_stderr })), 'mean KLD (nats)'),
    });
    charts.push({
      id: 'top1',
      title: 'Same top p',
      spec: barWithErrors('Top-1 agreement with the teacher (± 1 s.e.)', nonRef.map((r) => ({ label: r.run, group: r.configuration, value: 100 * r.same_top_p, stderr: 100 * r.same_top_p_stderr })), 'same top p (%)'),
    });
  }
  const series = (run: CompareRun, cfg: string) => (runs.length > 1 ? `${cfg} · ${run.label}` : cfg);
  const reference = (run: CompareRun) => run.report.reference;
  const pos = runs.flatMap((run) =>
    run.report.configurations
      .filter((cfg) => cfg.name !== reference(run))
      .flatMap((cfg) => cfg.by_position.map((b) => ({ series: series(run, cfg.name), x: b.start + (run.report.suite.position_bucket - 1) / 2, y: b.kld_mean }))),
  );
  if (pos.length > 0) charts.push({ id: 'position', title: 'Divergence vs position', spec: lines('Mean KLD vs position in the window', pos, { xTitle: 'position', yTitle: 'mean KLD (nats)' }) });
  const layers = runs.flatMap((run) =>
    run.report.configurations
      .filter((cfg) => cfg.name !== reference(run))
      .flatMap((cfg) => (cfg.hidden ?? []).filter((h) => h.hidden > 0).map((h) => ({ series: series(run, cfg.name), x: h.hidden - 1, y: h.rel_mse }))),
  );
  if (layers.length > 0) {
    charts.push({ id: 'layers', title: 'Per-layer error', spec: lines('Hidden-state relative MSE after each layer', layers, { xTitle: 'layer', yTitle: 'relative MSE (log scale)', yLog: true, xInteger: true }) });
  }
  return charts;
}

export function renderCompareMarkdown(c: CompareResult): string {
  const out = [`# SYNAXIM comparison of ${c.runs.length} runs`, ''];
  for (const w of c.warnings) out.push(`> warning: ${w}`, '');
  for (const t of [runsTable(c), compareTable(c), flagsTable(c)]) if (t) out.push(markdownTable(t), '');
  if (c.flags.length === 0 && c.runs.length > 1) out.push('No configuration differs from the baseline by more than its standard errors.', '');
  out.push('Charts: compare.html.');
  return out.join('\n');
}

/** Write compare.md, compare.html, then compare.json into `outDir` (each atomically). */
export async function writeComparison(outDir: string, runs: CompareRun[], c: CompareResult): Promise<{ json: string; md: string; html: string }> {
  const safe = jsonSafe(c);
  const paths = { json: path.join(outDir, 'compare.json'), md: path.join(outDir, 'compare.md'), html: path.join(outDir, 'compare.html') };
  fs.rmSync(paths.json, { force: true });
  writeFileAtomic(paths.md, renderCompareMarkdown(safe) + '\n');
  const meta = [`baseline: ${c.baseline}`, ...c.warnings.map((w) => `warning: ${w}`)];
  const tables = [runsTable(c), compareTable(c), flagsTable(c)].filter((t): t is Table => t !== null);
  writeFileAtomic(paths.html, await htmlPage(`SYNAXIM comparison of ${c.runs.length} runs`, meta, tables, compareCharts(runs, c), safe));
  writeFileAtomic(paths.json, JSON.stringify(safe, null, 2) + '\n');
  return paths;
}
