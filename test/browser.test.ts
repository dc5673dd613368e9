/**
 * The HTML reports in a real browser: headless Chromium (Debian's `chromium`, driven by
 * playwright-core) opens report.html and compare.html from disk, the charts must be there as SVG
 * with marks drawn, the console must stay free of errors, no request may leave the page, and a
 * screenshot is saved under test/.artifacts/ for a human to look at.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareReportDirs, writeComparison } from '../src/eval/compare.ts';
import { writeReport } from '../src/eval/report.ts';
import { PROJECT_ROOT } from '../src/util/paths.ts';
import { syntheticReport } from './evalFixtures.ts';

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = fs.existsSync(CHROMIUM);
if (!hasChromium) console.warn(`browser.test: skipped: ${CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)`);

const ARTIFACTS = path.join(PROJECT_ROOT, 'test', '.artifacts');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-browser-'));

describe.skipIf(!hasChromium)('reports in headless Chromium', () => {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let browser: any;
  beforeAll(async () => {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  afterAll(async () => {
    await browser?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  async function open(file: string, screenshot: string) {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    const external: string[] = [];
    page.on('console', (m: { type(): string; text(): string }) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e: Error) => errors.push(e.message));
    page.on('request', (r: { url(): string }) => {
      if (!r.url().startsWith('file:') && !r.url().startsWith('data:')) external.push(r.url());
    });
    await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, screenshot), fullPage: true });
    const charts = await page.$$eval('figure.chart', (figs: Element[]) =>
      figs.map((f) => {
        const svg = f.querySelector('svg');
        const box = svg?.getBoundingClientRect();
        return {
          id: f.id,
          hasSvg: Boolean(svg),
          width: box?.width ?? 0,
          height: box?.height ?? 0,
          marks: svg ? svg.querySelectorAll('g.role-mark > *').length : 0,
          axes: svg ? svg.querySelectorAll('g.role-axis').length : 0,
        };
      }),
    );
    const tables = await page.$$eval('table', (t: Element[]) => t.length);
    await page.close();
    return { errors, external, charts, tables };
  }

  it('report.html renders every chart with marks and axes, no console errors, no network', async () => {
    const dir = path.join(tmp, 'run');
    await writeReport(dir, syntheticReport());
    const r = await open(path.join(dir, 'report.html'), 'report.png');
    expect(r.errors).toEqual([]);
    expect(r.external).toEqual([]);
    expect(r.tables).toBeGreaterThanOrEqual(4);
    expect(r.charts.map((c: { id: string }) => c.id)).toEqual(['chart-ppl', 'chart-kld-mean', 'chart-kld', 'chart-position', 'chart-layers', 'chart-cosine', 'chart-memory']);
    for (const c of r.charts) {
      expect(c.hasSvg).toBe(true);
      expect(c.width).toBeGreaterThan(200);
      expect(c.height).toBeGreaterThan(100);
      expect(c.marks).toBeGreaterThan(0);
      expect(c.axes).toBeGreaterThanOrEqual(2);
    }
    expect(fs.statSync(path.join(ARTIFACTS, 'report.png')).size).toBeGreaterThan(10_000);
  });

  it('compare.html renders too', async () => {
    const a = path.join(tmp, 'a');
    const b = path.join(tmp, 'b');
    await writeReport(a, syntheticReport());
    await writeReport(b, syntheticReport({ seed: 5 }));
    const { runs, result } = compareReportDirs([a, b]);
    const out = path.join(tmp, 'cmp');
    await writeComparison(out, runs, result);
    const r = await open(path.join(out, 'compare.html'), 'compare.png');
    expect(r.errors).toEqual([]);
    expect(r.external).toEqual([]);
    expect(r.charts.length).toBeGreaterThanOrEqual(4);
    for (const c of r.charts) {
      expect(c.hasSvg).toBe(true);
      expect(c.marks).toBeGreaterThan(0);
    }
  });
});
