/**
 * The eval report's charts as a user reads them (issue 13, "Eval charts"): no series hidden behind an
 * identical one (`hybrid` is not run when the adapter covers every layer, and the report says why),
 * the teacher drawn as the reference (KLD 0, relative MSE 0, cosine 1), ± 1 s.e. bars on the PPL and
 * KLD bars, long configuration names shown whole, and nothing overflowing the page in headless Chromium.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { initialAdapter, writeAdapter } from '../src/formats/adapter.ts';
import { renderSvg, type VlSpec } from '../src/report/charts.ts';
import { renderMarkdown, reportCharts, writeReport } from '../src/eval/report.ts';
import { syntheticReport } from './evalFixtures.ts';
import { synaxim } from './helpers/usabilityCli.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-usability-report-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const LONG = 'adapter@0,1,2,3-with-a-rather-long-configuration-name';
const longNames = () =>
  syntheticReport({
    configurations: [
      { name: 'teacher', noise: 0 },
      { name: 'teacher-on-student-weights', noise: 0.2 },
      { name: 'engine', noise: 3 },
      { name: LONG, noise: 1.5 },
      { name: 'window-64 (same memory)', noise: 1 },
    ],
  });

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const layers = (spec: VlSpec): any[] => spec.layer ?? [spec];

describe('report charts (specs)', () => {
  const r = longNames();
  const charts = new Map(reportCharts(r).map((c) => [c.id, c.spec]));

  it('the teacher is in every comparison chart: a dashed reference at KLD-CDF 1, KLD 0, relative MSE 0, cosine 1', () => {
    // on a log y axis (per-layer MSE; here the KLD by position too) 0 is drawn on the bottom edge, said so in its label
    const expected: Record<string, number> = { kld: 1, position: 0, layers: 0, cosine: 1 };
    for (const [id, y] of Object.entries(expected)) {
      const spec = charts.get(id)!;
      const onAxis = layers(spec)[0].encoding.y.scale.type !== 'log';
      if (id === 'layers') expect(onAxis).toBe(false);
      const rule = layers(spec).find((l) => l.mark?.type === 'rule');
      expect(rule, id).toBeDefined();
      expect(rule.encoding.color).toEqual({ datum: 'teacher', type: 'nominal' });
      expect(rule.encoding.y, id).toEqual(onAxis ? { datum: y, type: 'quantitative' } : { value: spec.height });
      const text = layers(spec).find((l) => l.mark?.type === 'text');
      expect(text.encoding.text.value, id).toBe(`teacher: ${y}${onAxis ? '' : ' (below the log axis)'}`);
    }
  });

  it('mean KLD per configuration: the teacher at 0, every bar with a ± 1 s.e. rule and caps from the report', () => {
    const spec = charts.get('kld-mean')!;
    const values = spec.data.values as { label: string; value: number; lo: number; hi: number }[];
    expect(values.map((v) => v.label)).toContain('engine');
    for (const c of r.configurations.filter((c) => c.name !== 'teacher')) {
      const v = values.find((x) => x.label === c.name)!;
      expect(v.value).toBe(c.kld.mean);
      expect(v.hi).toBeCloseTo(c.kld.mean + c.kld.stderr, 12);
    }
    const marks = layers(spec).map((l) => l.mark.type);
    expect(marks).toEqual(['bar', 'rule', 'tick', 'tick']);
    // on a linear axis the teacher's 0 is a bar of its own (no noise: span ≤ 100)
    const lin = reportCharts(syntheticReport()).find((c) => c.id === 'kld-mean')!.spec;
    expect((lin.data.values as { label: string; value: number }[]).find((v) => v.label === 'teacher')).toMatchObject({ value: 0, lo: 0, hi: 0 });
  });

  it('perplexity bars carry ± 1 s.e. caps at ppl ± stderr', () => {
    const spec = charts.get('ppl')!;
    expect(layers(spec).map((l) => l.mark.type)).toEqual(['bar', 'rule', 'tick', 'tick']);
    const values = spec.data.values as { label: string; lo: number; hi: number }[];
    for (const c of r.configurations) {
      const v = values.find((x) => x.label === c.name)!;
      expect(v.hi - c.ppl).toBeCloseTo(c.ppl_stderr, 9);
    }
  });

  it('long configuration names are never cut: whole in the rendered SVG, no ellipsis', async () => {
    for (const id of ['ppl', 'kld', 'layers']) {
      const svg = await renderSvg(charts.get(id)!);
      expect(svg, id).toContain(LONG);
      expect(svg, id).not.toContain('…');
    }
  });

  it('a configuration not run is named with its reason in report.md and report.html', async () => {
    const s = syntheticReport();
    s.skipped = [{ name: 'hybrid', why: 'identical to adapter: the adapter covers every layer (0-3), so no layer is left for softmax attention' }];
    expect(renderMarkdown(s)).toContain('- not run: hybrid — identical to adapter: the adapter covers every layer (0-3)');
    const dir = path.join(tmp, 'skipped');
    const paths = await writeReport(dir, s);
    expect(fs.readFileSync(paths.html, 'utf8')).toContain('<li>not run: hybrid — identical to adapter');
    expect(JSON.parse(fs.readFileSync(paths.json, 'utf8')).skipped).toEqual(s.skipped);
  });
});

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = fs.existsSync(CHROMIUM);
if (!hasChromium) console.warn(`usability-report.test: browser part skipped: ${CHROMIUM} is missing`);

describe.skipIf(!hasChromium)('report.html with long names in headless Chromium', () => {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let browser: any;
  beforeAll(async () => {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('every chart is there, the teacher in its legend and labels, error caps drawn, nothing wider than the page or its figure', async () => {
    const dir = path.join(tmp, 'long');
    const paths = await writeReport(dir, longNames());
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(pathToFileURL(paths.html).href, { waitUntil: 'load' });
    const got = await page.evaluate(() => {
      const doc = document.documentElement;
      const figures = [...document.querySelectorAll('figure.chart')].map((f) => {
        const fb = f.getBoundingClientRect();
        const svg = f.querySelector('svg')!;
        const sb = svg.getBoundingClientRect();
        return {
          id: f.id,
          inside: sb.left >= fb.left - 0.5 && sb.right <= fb.right + 0.5,
          inPage: fb.right <= doc.clientWidth + 0.5,
          texts: [...svg.querySelectorAll('text')].map((t) => t.textContent ?? ''),
          // vega draws a tick as a rect: the caps are the rects of layers 2 and 3
          caps: svg.querySelectorAll('g.layer_2_marks > path, g.layer_3_marks > path, g.layer_2_marks > rect, g.layer_3_marks > rect').length,
          refRules: svg.querySelectorAll('g.mark-rule.layer_1_marks line').length,
        };
      });
      const tables = [...document.querySelectorAll('table')].map((t) => t.getBoundingClientRect().right <= doc.clientWidth + 0.5);
      return { scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth, figures, tables };
    });
    await page.close();
    expect(got.scrollWidth).toBeLessThanOrEqual(got.clientWidth); // no horizontal scrolling
    expect(got.tables.every(Boolean)).toBe(true);
    type Figure = (typeof got.figures)[number];
    const by = new Map<string, Figure>(got.figures.map((f: Figure) => [f.id, f]));
    expect([...by.keys()]).toEqual(['chart-ppl', 'chart-kld-mean', 'chart-kld', 'chart-position', 'chart-layers', 'chart-cosine', 'chart-memory']);
    for (const f of got.figures) {
      expect(f.inside, f.id).toBe(true);
      expect(f.inPage, f.id).toBe(true);
      expect(f.texts.join(' '), f.id).not.toContain('…');
      expect(f.texts, f.id).toContain(LONG);
    }
    for (const id of ['chart-ppl', 'chart-kld-mean']) expect(by.get(id)!.caps, id).toBeGreaterThanOrEqual(2 * 4);
    for (const id of ['chart-kld', 'chart-position', 'chart-layers', 'chart-cosine']) {
      expect(by.get(id)!.texts, id).toContain('teacher'); // legend entry
      expect(by.get(id)!.texts.some((t: string) => t.startsWith('teacher: ')), id).toBe(true); // the reference's label
      expect(by.get(id)!.refRules, id).toBe(1);
    }
  });
});

const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');

describe('eval with an adapter on every layer (stories260k)', () => {
  it('does not compute hybrid (it would be adapter again) and says why on stderr, in report.md/html/json', async (ctx) => {
    if (!sharedAvailable() || !fs.existsSync(path.join(STORIES, 'hf', 'config.json'))) {
      console.log('skipped: ../shared/models/stories260k not available');
      ctx.skip();
      return;
    }
    const adapter = path.join(tmp, 'adapter-all');
    await writeAdapter(adapter, initialAdapter([0, 1, 2, 3, 4], 64));
    const out = path.join(tmp, 'eval-all');
    const r = synaxim(
      ['eval', '--model', path.join(STORIES, 'hf'), '--adapter', adapter, '--corpus', path.join(STORIES, 'corpus', 'eval.jsonl'), '--max-seqs', '2', '--context', '32',
        '--configurations', 'engine,adapter,hybrid', '--window', 'none', '--out', out, '--backend', 'wasm', '--workers', '1'],
      { env: { SYNAXIM_CACHE: path.join(tmp, 'cache') }, cwd: tmp },
    );
    expect(r.code, r.stderr).toBe(0);
    const why = 'identical to adapter: the adapter covers every layer (0-4), so no layer is left for softmax attention';
    expect(r.stderr).toContain(`synaxim: eval: not running hybrid: ${why}\n`);
    expect(r.stderr).not.toMatch(/synaxim: hybrid: layers/);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
    expect(report.configurations.map((c: { name: string }) => c.name)).toEqual(['teacher', 'engine', 'adapter']);
    expect(report.skipped).toEqual([{ name: 'hybrid', why }]);
    expect(fs.readFileSync(path.join(out, 'report.md'), 'utf8')).toContain(`- not run: hybrid — ${why}`);
    expect(fs.readFileSync(path.join(out, 'report.html'), 'utf8')).toContain(`not run: hybrid — ${why}`);
  });
});
