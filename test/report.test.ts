import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compareReportDirs, compareRuns, readReportDir, writeComparison } from '../src/eval/compare.ts';
import { writePerToken } from '../src/eval/perToken.ts';
import type { PerTokenValues } from '../src/eval/stats.ts';
import { bytes, describeLayers, fmt, jsonSafe, pct, pm, renderMarkdown, REPORT_SCHEMA, writeReport } from '../src/eval/report.ts';
import { syntheticReport } from './evalFixtures.ts';
import { htmlPage, htmlTable, markdownTable, type Table } from '../src/report/html.ts';
import { formatBytes } from '../src/util/fileio.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-report-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('formatting', () => {
  it('numbers, errors, percentages, bytes, layer policies', () => {
    expect(fmt(2.51438)).toBe('2.514');
    expect(fmt(2043.2)).toBe('2043');
    expect(fmt(0)).toBe('0');
    expect(fmt(1.23e-7)).toBe('1.230e-7');
    expect(fmt(NaN)).toBe('–');
    expect(fmt(Infinity)).toBe('∞');
    expect(pm(2.514, 0.0312)).toBe('2.514 ± 0.031');
    expect(pct(0.037)).toBe('3.70%');
    expect(pct(0.206, 0.008)).toBe('20.60 ± 0.80%');
    expect(bytes(512)).toBe('512 B');
    expect(bytes(64 * 1024 * 1024)).toBe('64.0 MiB');
    expect(describeLayers(['adapter-v1', 'adapter-v1', 'teacher', 'teacher', 'teacher'])).toBe('0-1 adapter-v1, 2-4 teacher');
    expect(describeLayers(['engine-v0.1.1'])).toBe('0 engine-v0.1.1');
  });
  it('bytes in messages and notes (formatBytes, util/fileio.ts) and in report tables (bytes: three significant digits)', () => {
    expect(formatBytes(100)).toBe('100 bytes');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(4 * 1024 ** 2)).toBe('4.0 MiB');
    expect(formatBytes(5 * 1024 ** 3)).toBe('5.0 GiB');
    expect(formatBytes(3 * 1024 ** 4)).toBe('3.0 TiB');
    expect(bytes(1536)).toBe('1.50 KiB');
    expect(bytes(16 * 1024)).toBe('16.0 KiB');
    expect(bytes(128 * 1024 ** 2)).toBe('128 MiB');
    expect(bytes(NaN)).toBe('–');
  });
  it('JSON-safe: non-finite numbers become null', () => {
    expect(jsonSafe({ a: Infinity, b: [NaN, 1], c: { d: -Infinity } })).toEqual({ a: null, b: [null, 1], c: { d: null } });
  });
});

describe('shared report pieces (src/report/html.ts)', () => {
  const t: Table = { title: 'A <b> table', header: ['name', 'x|y'], rows: [['a', '1'], ['b|c', '2']], flags: [[1, 1]], note: 'n & m' };

  it('markdown table: escaped pipes, first column left, flagged cells bold, the note after', () => {
    expect(markdownTable(t)).toBe(['### A <b> table', '', '| name | x\\|y |', '| --- | ---: |', '| a | 1 |', '| b\\|c | **2** |', '', 'n & m'].join('\n'));
  });

  it('html table: escaped, flags as class "flag" by default, or the given cell classes, id and wrapper', () => {
    expect(htmlTable(t)).toBe(
      '<h2>A &lt;b&gt; table</h2>\n<table>\n<thead><tr><th>name</th><th>x|y</th></tr></thead>\n<tbody>\n' +
        '<tr><td>a</td><td>1</td></tr>\n<tr><td>b|c</td><td class="flag">2</td></tr>\n</tbody>\n</table>\n<p class="note">n &amp; m</p>',
    );
    const html = htmlTable({ ...t, note: undefined }, { id: 'x', wrap: true, cellClass: (r, c) => (r === 0 && c === 0 ? 'better' : null) });
    expect(html).toContain('<div class="table-wrap"><table id="x">');
    expect(html).toContain('<td class="better">a</td>');
    expect(html).not.toContain('flag');
    expect(html.endsWith('</table></div>')).toBe(true);
  });

  it('one page shell: title, intro blocks, escaped metadata, sections, charts; the data cannot close its script', async () => {
    const page = await htmlPage({ title: 'T <1>', css: 'b{}', intro: ['<p id="i">intro</p>'], meta: ['m <x>'], sections: ['<p>S</p>'], charts: [], data: { s: '</script><x>' } });
    expect(page.startsWith('<!DOCTYPE html>\n<html lang="en">')).toBe(true);
    expect(page).toContain('<title>T &lt;1&gt;</title>\n<style>b{}</style>');
    expect(page).toContain('<h1>T &lt;1&gt;</h1>\n<p id="i">intro</p>\n<ul class="meta">\n<li>m &lt;x&gt;</li>\n</ul>\n<p>S</p>\n<h2>Charts</h2>');
    expect(page).toContain('<script type="application/json" id="report-data">{"s":"\\u003c/script>\\u003cx>"}</script>\n</body>');
    expect((await htmlPage({ title: 't', css: '', meta: [], sections: [], charts: [] })).includes('report-data')).toBe(false);
  });
});

describe('report files', () => {
  const report = syntheticReport();
  const dir = path.join(tmp, 'run1');

  it('writes report.json, report.md and report.html and nothing else', async () => {
    const paths = await writeReport(dir, report);
    expect(fs.readdirSync(dir).sort()).toEqual(['report.html', 'report.json', 'report.md']);
    expect(paths.json).toBe(path.join(dir, 'report.json'));
  });

  it('report.json carries the schema and the required fields per configuration', () => {
    const j = JSON.parse(fs.readFileSync(path.join(dir, 'report.json'), 'utf8'));
    expect(j.schema).toBe(REPORT_SCHEMA);
    expect(j.model.student.hash).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(j.model.teacher.hash).toMatch(/^sha256:/);
    expect(j.adapter.hash).toMatch(/^sha256:/);
    expect(j.suite.name).toBe('synthetic');
    expect(j.tokens.scored).toBe(6 * 31);
    expect(j.backend.name).toBe('cpu');
    expect(j.tool.version).toBe('0.1.0');
    expect(j.configurations.map((c: { name: string }) => c.name)).toEqual(['teacher', 'engine', 'adapter', 'hybrid']);
    for (const c of j.configurations) {
      expect(typeof c.ppl).toBe('number');
      expect(typeof c.kld.mean).toBe('number');
      expect(typeof c.kld.p99).toBe('number');
      expect(typeof c.same_top_p).toBe('number');
      expect(c.tokens).toBe(6 * 31);
      expect(c.hidden).toHaveLength(4);
      expect(c.memory_bytes).toHaveLength(4);
    }
    const teacher = j.configurations[0];
    expect(teacher.kld.mean).toBe(0);
    expect(teacher.same_top_p).toBe(1);
    expect(teacher.ppl_ratio.ratio).toBe(1);
    // noisier configurations diverge more
    const kld = j.configurations.map((c: { kld: { mean: number } }) => c.kld.mean);
    expect(kld[1]).toBeGreaterThan(kld[2]);
    expect(kld[2]).toBeGreaterThan(kld[3]);
    expect(kld[3]).toBeGreaterThan(0);
    // the open last histogram bin is written with hi null (JSON has no Infinity)
    expect(teacher.kld_histogram.at(-1).hi).toBeNull();
  });

  it('report.md has the summary table with every configuration and the figures', () => {
    const md = fs.readFileSync(path.join(dir, 'report.md'), 'utf8');
    expect(md).toContain('# SYNAXIM evaluation: synthetic, synthetic');
    expect(md).toContain('| configuration | layers | PPL |');
    const hybrid = report.configurations[3]!;
    expect(md).toContain(`| hybrid | 0-1 adapter-v1, 2-3 teacher | ${pm(hybrid.ppl, hybrid.ppl_stderr)} |`);
    expect(md).toContain('Mean KLD by position');
    expect(md).toContain('Attention memory vs context length');
    expect(md).toBe(renderMarkdown(jsonSafe(report)) + '\n');
  });

  it('report.html is self-contained: inline SVG charts, no scripts to run, no network', () => {
    const html = fs.readFileSync(path.join(dir, 'report.html'), 'utf8');
    const svgs = html.match(/<svg[\s>]/g) ?? [];
    expect(svgs.length).toBe(7); // ppl, kld-mean, kld, position, layers, cosine, memory
    for (const id of ['ppl', 'kld', 'position', 'layers', 'memory']) expect(html).toContain(`id="chart-${id}"`);
    // no external resources: no src=/href= pointing anywhere, no executable scripts
    expect(html).not.toMatch(/\s(src|href)\s*=\s*["']?(https?:|\/\/)/i);
    expect(html).not.toMatch(/<script(?![^>]*type="application\/json")/);
    expect(html).not.toMatch(/<link\s/i);
    // the report data travels with the page
    const m = /<script type="application\/json" id="report-data">([\s\S]*?)<\/script>/.exec(html);
    expect(m).not.toBeNull();
    expect(JSON.parse(m![1]!).schema).toBe(REPORT_SCHEMA);
    // the bars are drawn (rect/path marks inside the ppl chart)
    const ppl = html.slice(html.indexOf('id="chart-ppl"'), html.indexOf('</figure>', html.indexOf('id="chart-ppl"')));
    expect(ppl).toMatch(/role-mark/);
  });

  it('rewriting a report replaces the files atomically (no temporary files left)', async () => {
    await writeReport(dir, syntheticReport({ seed: 3 }));
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});

describe('compare', () => {
  const a = path.join(tmp, 'cmp', 'int8');
  const b = path.join(tmp, 'cmp', 'int4');
  const c = path.join(tmp, 'cmp', 'other-data');
  const cfg = (engineNoise: number) => [
    { name: 'teacher', noise: 0 },
    { name: 'engine', noise: engineNoise },
  ];
  /** A synthetic eval written as eval writes it: report.json and per_token.safetensors. */
  async function writeRun(dir: string, opts: Parameters<typeof syntheticReport>[0]): Promise<void> {
    const perToken = new Map<string, PerTokenValues>();
    const report = syntheticReport({ ...opts, perToken });
    writePerToken(dir, report.tokens.hash, perToken);
    await writeReport(dir, report);
  }

  it('flags differences at |z| ≥ 2 with paired per-token tests, worse in red', async () => {
    await writeRun(a, { configurations: cfg(0.5), windows: 8 });
    await writeRun(b, { configurations: cfg(3), windows: 8 });
    const { runs, result } = compareReportDirs([a, b]);
    expect(result.baseline).toBe('synthetic · adapter L0-1 · cccccccc (int8)');
    expect(result.runs.map((r) => r.label)).toEqual(['synthetic · adapter L0-1 · cccccccc (int8)', 'synthetic · adapter L0-1 · cccccccc (int4)']);
    expect(result.runs.map((r) => r.per_token)).toEqual([true, true]);
    expect(result.same_tokens).toBe(true);
    expect(result.warnings).toEqual([]);
    expect(result.rows.map((r) => r.configuration)).toEqual(['teacher', 'teacher', 'engine', 'engine']);
    // the teacher is the same in both runs: nothing flagged; the engine is clearly worse
    expect(result.flags.filter((f) => f.configuration === 'teacher')).toEqual([]);
    const engine = result.flags.filter((f) => f.configuration === 'engine');
    expect(engine.map((f) => f.metric)).toEqual(expect.arrayContaining(['ppl', 'kld.mean', 'same_top_p']));
    for (const f of engine) {
      expect(f.test).toBe('paired');
      expect(f.direction).toBe('worse');
      expect(Math.abs(f.z)).toBeGreaterThanOrEqual(2);
    }
    // worse: higher PPL and KLD, lower top-1 agreement
    expect(engine.find((f) => f.metric === 'kld.mean')!.diff).toBeGreaterThan(0);
    expect(engine.find((f) => f.metric === 'same_top_p')!.diff).toBeLessThan(0);

    const out = path.join(tmp, 'cmp', 'out');
    await writeComparison(out, runs, result);
    expect(fs.readdirSync(out).sort()).toEqual(['compare.html', 'compare.json', 'compare.md']);
    const md = fs.readFileSync(path.join(out, 'compare.md'), 'utf8');
    expect(md).toContain('Differences at |z| ≥ 2');
    expect(md).toMatch(/\| engine \| synthetic · adapter L0-1 · cccccccc \(int4\) \| 248 \| \*\*[^|]*▼\*\*/); // flagged cell: bold, marked worse
    const html = fs.readFileSync(path.join(out, 'compare.html'), 'utf8');
    expect((html.match(/<svg[\s>]/g) ?? []).length).toBeGreaterThanOrEqual(3);
    expect(html).toContain('class="worse"');
    expect(html).not.toContain('class="better"');
  });

  it('the other way round the same differences are better, in green', () => {
    const { result } = compareReportDirs([b, a]);
    const engine = result.flags.filter((f) => f.configuration === 'engine');
    expect(engine.length).toBeGreaterThan(0);
    for (const f of engine) expect(f.direction).toBe('better');
    expect(result.rows.find((r) => r.configuration === 'engine' && r.run === result.runs[1]!.label)!.better).toContain('kld.mean');
  });

  it('pairing finds a small difference that the unpaired errors miss', async () => {
    // Same data, same noise draws, 2% more noise: per token the runs move together.
    const p1 = path.join(tmp, 'cmp', 'pair1');
    const p2 = path.join(tmp, 'cmp', 'pair2');
    await writeRun(p1, { configurations: cfg(1), windows: 8 });
    await writeRun(p2, { configurations: cfg(1.02), windows: 8 });
    const { runs, result } = compareReportDirs([p1, p2]);
    const kld = result.flags.find((f) => f.configuration === 'engine' && f.metric === 'kld.mean');
    expect(kld?.test).toBe('paired');
    expect(kld?.direction).toBe('worse');
    // the same two runs without per-token figures: the unpaired test does not see it
    const unpaired = compareRuns(runs.map((r) => ({ ...r, perToken: null })));
    expect(unpaired.flags.filter((f) => f.metric === 'kld.mean')).toEqual([]);
    expect(unpaired.warnings[0]).toMatch(/no per-token figures/);
  });

  it('the same run twice: no flags, distinct names', () => {
    const { result } = compareReportDirs([a, a]);
    expect(result.flags).toEqual([]);
    expect(result.runs.map((r) => r.label)).toEqual(['synthetic · adapter L0-1 · cccccccc (int8) #1', 'synthetic · adapter L0-1 · cccccccc (int8) #2']);
  });

  it('runs on different tokens are compared unpaired, under a prominent warning', async () => {
    await writeRun(c, { configurations: cfg(0.5), dataSeed: 9 });
    const { runs, result } = compareReportDirs([a, c]);
    expect(result.same_tokens).toBe(false);
    expect(result.warnings[0]).toMatch(/different tokens/);
    for (const f of result.flags) expect(f.test).toBe('unpaired');
    const out = path.join(tmp, 'cmp', 'out-different');
    await writeComparison(out, runs, result);
    expect(fs.readFileSync(path.join(out, 'compare.html'), 'utf8')).toMatch(/<div class="warning"><strong>Warning:<\/strong>[^<]*different tokens/);
  });

  it('a directory without a report, or a file of another schema, is a one-line error', () => {
    expect(() => readReportDir(path.join(tmp, 'nope'))).toThrow(/no report\.json here/);
    const bad = path.join(tmp, 'bad');
    fs.mkdirSync(bad, { recursive: true });
    fs.writeFileSync(path.join(bad, 'report.json'), JSON.stringify({ schema: 'other/1' }));
    expect(() => readReportDir(bad)).toThrow(/not a synaxim\.eval\/1 report/);
    fs.writeFileSync(path.join(bad, 'report.json'), '{not json');
    expect(() => readReportDir(bad)).toThrow(/invalid JSON/);
  });
});
