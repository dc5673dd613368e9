/**
 * `synaxim sweep` (layer sensitivity): which configurations it runs, how the report is built from
 * the evaluation's figures (order, compounding, verdict), and on stories260k that its figures are
 * the evaluation runner's (engine@0-4 = eval's `engine`, adapter@0-1 = eval's `hybrid` with a
 * layers-0,1 adapter), written atomically into an output directory it refuses to clobber.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSweepCommand } from '../src/cli/commands/sweep.ts';
import { initBackend } from '../src/runtime/backend.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { initialAdapter, writeAdapter } from '../src/formats/adapter.ts';
import type { EvalReport } from '../src/eval/report.ts';
import { runEval } from '../src/eval/runner.ts';
import { adHocSuite } from '../src/data/suite.ts';
import { renderSweepMarkdown, sweepConfigurations, sweepFromEval, type SweepReport } from '../src/eval/sweep.ts';
import { syntheticReport } from './evalFixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-sweep-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('the sweep plan and report', () => {
  it('one layer at a time, then prefixes 0..k; adapter rows only where the adapter has the layers', () => {
    expect(sweepConfigurations(3, null)).toEqual(['teacher-on-student-weights', 'engine@0', 'engine@1', 'engine@2', 'engine@0-1', 'engine@0-2']);
    expect(sweepConfigurations(4, [0, 1, 3]).filter((n) => n.startsWith('adapter'))).toEqual(['adapter@0', 'adapter@1', 'adapter@3', 'adapter@0-1']);
    expect(sweepConfigurations(3, [1, 2]).filter((n) => n.startsWith('adapter'))).toEqual(['adapter@1', 'adapter@2']);
  });

  /** A synthetic evaluation whose configurations carry the sweep's names, KLD set by hand. */
  function evalWith(klds: Record<string, number>): EvalReport {
    const names = Object.keys(klds);
    const r = syntheticReport({ configurations: [{ name: 'teacher', noise: 0 }, ...names.map((name) => ({ name, noise: 1 }))] });
    for (const c of r.configurations) if (c.name in klds) c.kld = { ...c.kld, mean: klds[c.name]! };
    return r;
  }

  it('order by single-layer KLD (the adapter when every layer has one); sums count the quantization floor once', () => {
    const klds = {
      'teacher-on-student-weights': 0.1,
      'engine@0': 2.1, 'engine@1': 1.1, 'engine@2': 1.6, 'engine@0-1': 3.5, 'engine@0-2': 4.0,
      'adapter@0': 0.9, 'adapter@1': 0.5, 'adapter@2': 0.3, 'adapter@0-1': 1.2, 'adapter@0-2': 2.0,
    };
    const s = sweepFromEval(evalWith(klds), 3, [0, 1, 2], 1);
    expect(s.order_by).toBe('adapter');
    expect(s.order).toEqual([2, 1, 0]);
    expect(s.single.map((x) => x.engine.kld)).toEqual([2.1, 1.1, 1.6]);
    expect(s.prefix.map((p) => p.layers)).toEqual([[0], [0, 1], [0, 1, 2]]);
    // 0.1 + (2.1 − 0.1) + (1.1 − 0.1)
    expect(s.prefix[1]!.engine.sum_of_singles).toBeCloseTo(3.1, 12);
    expect(s.prefix[2]!.adapter!.sum_of_singles).toBeCloseTo(0.1 + 0.8 + 0.4 + 0.2, 12);
    expect(s.quantization!.kld).toBe(0.1);
    expect(s.verdict[0]).toBe('Gated alone with the adapter (the other layers softmax), layer 2 costs least (0.3 nats of KLD) and layer 0 most (0.9); convert in the order 2, 1, 0.');
    expect(s.verdict[1]).toMatch(/^Every layer gated costs 2 nats, 1\.33× the sum of the single-layer costs \(1\.5, quantization counted once\): errors compound/);
    const md = renderSweepMarkdown(s);
    expect(md.indexOf('**Verdict.**')).toBeLessThan(md.indexOf('###'));
    expect(md).toContain('| 0-1 | 3.5 ±');
  });

  it('without an adapter (or one lacking a layer) the engine ranks the layers', () => {
    const s = sweepFromEval(evalWith({ 'engine@0': 2, 'engine@1': 1, 'engine@0-1': 2.5, 'adapter@1': 0.2 }), 2, [1], 1);
    expect(s.order_by).toBe('engine');
    expect(s.order).toEqual([1, 0]);
    expect(s.single[0]!.adapter).toBeNull();
    expect(s.single[1]!.adapter!.kld).toBe(0.2);
    expect(s.quantization).toBeNull();
    expect(s.prefix[1]!.engine.sum_of_singles).toBe(3);
    expect(s.verdict[1]).toMatch(/errors do not add up fully/);
  });
});

const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');
if (!sharedAvailable()) console.warn(`sweep.test: stories260k runs skipped: ${STORIES} is missing`);

describe.skipIf(!sharedAvailable())('stories260k: the sweep runs through the evaluation runner', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('figures equal eval\'s engine and hybrid; sweep.json/md/svg written; a non-empty --out is refused without --overwrite', async () => {
    const corpus = path.join(STORIES, 'corpus', 'eval.jsonl');
    const adapter = path.join(tmp, 'adapter-0,1');
    await writeAdapter(adapter, initialAdapter([0, 1], 64));
    const out = path.join(tmp, 'sweep');
    const { sweep } = await runSweepCommand({ model: STORIES, adapter, corpus, context: 32, maxSeqs: 3, out, backend: 'wasm', quiet: true, workers: 1 });
    expect(fs.readdirSync(out).sort()).toEqual(['sweep.json', 'sweep.md', 'sweep.svg']);
    const j = JSON.parse(fs.readFileSync(path.join(out, 'sweep.json'), 'utf8')) as SweepReport;
    expect(j.schema).toBe('synaxim.sweep/1');
    expect(j.single.map((x) => x.layer)).toEqual([0, 1, 2, 3, 4]);
    expect(j.single.map((x) => x.adapter !== null)).toEqual([true, true, false, false, false]);
    expect(j.prefix.map((p) => p.adapter !== null)).toEqual([true, true, false, false, false]);
    expect(j.order_by).toBe('engine');
    expect([...j.order].sort()).toEqual([0, 1, 2, 3, 4]);
    expect(j.quantization!.kld).toBeGreaterThan(0);
    for (const x of j.single) expect(x.engine.kld).toBeGreaterThan(j.quantization!.kld);
    expect(fs.readFileSync(path.join(out, 'sweep.svg'), 'utf8')).toMatch(/^<svg[\s\S]*mark-line[\s\S]*<\/svg>$/);

    // the same tokens through `eval`: all layers engine = engine@0-4; hybrid of a layers-0,1 adapter = adapter@0-1
    const suite = adHocSuite({ corpus, context: 32, maxSeqs: 3 });
    const r = await runEval({ model: STORIES, adapter, suite, configurations: ['engine', 'hybrid', 'teacher-on-student-weights'], windows: [], workers: 1 });
    const by = (n: string) => r.configurations.find((c) => c.name === n)!;
    expect(r.tokens.hash).toBe(sweep.tokens.hash);
    expect(sweep.prefix[4]!.engine.kld).toBeCloseTo(by('engine').kld.mean, 10);
    expect(sweep.prefix[4]!.engine.ppl).toBeCloseTo(by('engine').ppl, 8);
    expect(sweep.prefix[1]!.adapter!.kld).toBeCloseTo(by('hybrid').kld.mean, 10);
    expect(sweep.quantization!.kld).toBeCloseTo(by('teacher-on-student-weights').kld.mean, 10);

    // an earlier sweep in --out: refused without --overwrite, replaced with it; a foreign file is kept
    await expect(runSweepCommand({ model: STORIES, corpus, context: 32, maxSeqs: 3, out, backend: 'wasm', quiet: true, workers: 1 })).rejects.toThrow(/holds an earlier output \(sweep\.json\); pass --overwrite/);
    const other = path.join(tmp, 'other');
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, 'notes.txt'), 'mine');
    await expect(runSweepCommand({ model: STORIES, corpus, context: 32, maxSeqs: 3, out: other, backend: 'wasm', quiet: true, workers: 1 })).rejects.toThrow(/is not empty \(notes\.txt\)/);
    await runSweepCommand({ model: STORIES, corpus, context: 32, maxSeqs: 3, out, overwrite: true, backend: 'wasm', quiet: true, workers: 1 });
    const j2 = JSON.parse(fs.readFileSync(path.join(out, 'sweep.json'), 'utf8')) as SweepReport;
    expect(j2.adapter).toBeNull();
    expect(j2.single.map((x) => x.engine.kld)).toEqual(j.single.map((x) => x.engine.kld));
  });
});
