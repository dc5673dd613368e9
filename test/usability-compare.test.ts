/**
 * Usability of compare.html as a user reads it: many runs with long names, one on different tokens,
 * opened in headless Chromium at 1400 px. The warning is there, better and worse are coloured
 * differently, every table and chart fits the page (nothing scrolls sideways), legends carry whole
 * run names and no two series share a colour. A screenshot goes to test/.artifacts/.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../src/util/paths.ts';
import { compareReportDirs, writeComparison } from '../src/eval/compare.ts';
import { writePerToken } from '../src/eval/perToken.ts';
import { writeReport } from '../src/eval/report.ts';
import type { PerTokenValues } from '../src/eval/stats.ts';
import { syntheticReport } from './evalFixtures.ts';

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = fs.existsSync(CHROMIUM);
if (!hasChromium) console.warn(`usability-compare.test: browser checks skipped: ${CHROMIUM} is missing (apt-get install chromium)`);

const ARTIFACTS = path.join(PROJECT_ROOT, 'test', '.artifacts');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-usability-compare-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const L = ['adapter-v1', 'adapter-v1', 'engine-v0.1.1', 'engine-v0.1.1'] as const;

/** Four runs of five configurations (20 bars, 16 line series), the last on other tokens. */
async function writeRuns(): Promise<string[]> {
  const dirs: string[] = [];
  for (let i = 0; i < 4; i++) {
    const dir = path.join(tmp, `eval-run-with-a-rather-long-directory-name-${i}`);
    const perToken = new Map<string, PerTokenValues>();
    const r = syntheticReport({
      seed: 10 + i,
      dataSeed: i === 3 ? 7 : 1,
      perToken,
      configurations: [
        { name: 'teacher', noise: 0, layers: ['teacher', 'teacher', 'teacher', 'teacher'] },
        { name: 'teacher-on-student-weights', noise: 0.2, layers: ['teacher', 'teacher', 'teacher', 'teacher'] },
        { name: 'engine', noise: 3, layers: ['engine-v0.1.1', 'engine-v0.1.1', 'engine-v0.1.1', 'engine-v0.1.1'] },
        { name: 'adapter', noise: 1 + i * 0.5, layers: [...L] },
        { name: 'hybrid', noise: 1.5 - i * 0.3, layers: ['adapter-v1', 'adapter-v1', 'teacher', 'teacher'] },
      ],
    });
    r.model.name = 'magnus-7b-instruct-finetune';
    r.adapter = { ...r.adapter!, layers: i === 0 ? [0, 1] : [0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15, 16, 17, 18, 19, 20, 31], hash: `sha256:${String(i).repeat(64)}` };
    writePerToken(dir, r.tokens.hash, perToken);
    await writeReport(dir, r);
    dirs.push(dir);
  }
  return dirs;
}

describe('compare.html for many runs', () => {
  let html = '';
  let out = '';
  beforeAll(async () => {
    const dirs = await writeRuns();
    const { runs, result } = compareReportDirs(dirs);
    out = path.join(tmp, 'cmp');
    await writeComparison(out, runs, result);
    html = fs.readFileSync(path.join(out, 'compare.html'), 'utf8');
  });

  it('names runs by model, adapter layers and a short hash; warns about the run on other tokens', () => {
    const j = JSON.parse(fs.readFileSync(path.join(out, 'compare.json'), 'utf8'));
    expect(j.runs.map((r: { label: string }) => r.label)).toEqual([
      'magnus-7b-instruct-finetune · adapter L0-1 · 00000000',
      'magnus-7b-instruct-finetune · adapter L0-7,12-20,31 · 11111111',
      'magnus-7b-instruct-finetune · adapter L0-7,12-20,31 · 22222222',
      'magnus-7b-instruct-finetune · adapter L0-7,12-20,31 · 33333333',
    ]);
    expect(html).not.toMatch(/symbiotic_adapter sha256/);
    expect(j.warnings).toHaveLength(1);
    expect(j.warnings[0]).toMatch(/33333333 scored different tokens/);
    // runs 2 and 3: paired; run 4: unpaired
    const tests = new Set(j.flags.filter((f: { run: string }) => f.run.endsWith('33333333')).map((f: { test: string }) => f.test));
    expect([...tests]).toEqual(['unpaired']);
    expect(j.flags.some((f: { test: string }) => f.test === 'paired')).toBe(true);
    expect(html).toContain('class="better"');
    expect(html).toContain('class="worse"');
  });

  it.skipIf(!hasChromium)('in headless Chromium at 1400 px: every element there, nothing overflows, legends whole', async () => {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
      const errors: string[] = [];
      page.on('pageerror', (e: Error) => errors.push(e.message));
      await page.goto(pathToFileURL(path.join(out, 'compare.html')).href, { waitUntil: 'load' });
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      const shot = path.join(ARTIFACTS, 'usability-compare.png');
      await page.screenshot({ path: shot, fullPage: true });
      const m = await page.evaluate(() => {
        const fits = (el: Element) => el.scrollWidth <= el.clientWidth + 1;
        const doc = document.documentElement;
        const rect = (el: Element) => el.getBoundingClientRect();
        const legendTexts = [...document.querySelectorAll('figure.chart svg g.role-legend text')].map((t) => t.textContent ?? '');
        const better = document.querySelector('td.better');
        const worse = document.querySelector('td.worse');
        return {
          pageFits: doc.scrollWidth <= window.innerWidth,
          warning: document.querySelectorAll('div.warning').length,
          tables: [...document.querySelectorAll('table')].map((t) => t.id),
          wrapsFit: [...document.querySelectorAll('.table-wrap')].map(fits),
          tablesInside: [...document.querySelectorAll('table')].map((t) => rect(t).right <= window.innerWidth),
          charts: [...document.querySelectorAll('figure.chart')].map((f) => ({
            id: f.id,
            fits: fits(f) && rect(f).right <= window.innerWidth,
            marks: f.querySelectorAll('g.role-mark > *').length,
          })),
          legendTexts,
          betterColour: better ? getComputedStyle(better).backgroundColor : null,
          worseColour: worse ? getComputedStyle(worse).backgroundColor : null,
          // colours of the PPL chart's bars: one per run
          pplFills: [...new Set([...document.querySelectorAll('#chart-ppl g.role-mark path')].map((p) => p.getAttribute('fill')))].filter(Boolean),
        };
      });
      expect(errors).toEqual([]);
      expect(m.pageFits).toBe(true);
      expect(m.warning).toBe(1);
      expect(m.tables).toEqual(['runs', 'all-runs', 'differences']);
      expect(m.wrapsFit.every(Boolean)).toBe(true);
      expect(m.tablesInside.every(Boolean)).toBe(true);
      expect(m.charts.map((c) => c.id)).toEqual(['chart-ppl', 'chart-kld', 'chart-top1', 'chart-position', 'chart-layers']);
      for (const c of m.charts) {
        expect(c.fits, c.id).toBe(true);
        expect(c.marks, c.id).toBeGreaterThan(0);
      }
      // whole run names in the legends (vega cuts long labels with an ellipsis)
      expect(m.legendTexts.some((t) => t.includes('…'))).toBe(false);
      expect(m.legendTexts).toContain('magnus-7b-instruct-finetune · adapter L0-7,12-20,31 · 33333333');
      expect(m.betterColour).not.toBe(m.worseColour);
      expect(m.pplFills.length).toBe(4);
      expect(fs.statSync(shot).size).toBeGreaterThan(10_000);
    } finally {
      await browser.close();
    }
  });
});
