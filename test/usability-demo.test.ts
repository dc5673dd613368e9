/**
 * The demo as a user runs it: `synaxim demo` trains its tiny model on the built-in stories (so the
 * teacher really predicts them), distills, evaluates, compares, and its summary reports the
 * end-to-end figures — teacher, engine, initial and trained adapter — taken from the reports, with a
 * plain verdict on whether the adapter helped. The training forward is held to the teacher's.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { defaultCorpus } from '../src/data/corpus.ts';
import { demoSummary, type DemoFigures } from '../src/demo/run.ts';
import { trainingLossOf, trainTinyModel } from '../src/demo/tinyModel.ts';
import { RowScorer } from '../src/eval/stats.ts';
import { openModel } from '../src/formats/openModel.ts';
import { loadTokenizer } from '../src/formats/tokenizer.ts';
import { teacherPrefill } from '../src/teacher/teacher.ts';
import { synaxim } from './helpers/usabilityCli.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-usability-demo-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(async () => {
  await initBackend('wasm');
});

describe('the demo model', () => {
  it("trains (loss falls) and its training forward equals the teacher's forward on the checkpoint it writes", async () => {
    const dir = path.join(tmp, 'model');
    const r = await trainTinyModel(dir, defaultCorpus(), { steps: 30, batch: 3, seqLen: 64, lr: 1e-2, seed: 0 });
    expect(r.lossLast).toBeLessThan(r.lossFirst - 0.5);
    const w = openModel(r.hfDir);
    try {
      const tok = await loadTokenizer(r.hfDir, { bosTokenId: w.config.bosTokenId, eosTokenIds: w.config.eosTokenIds, modelVocabSize: w.config.vocabSize });
      const batch = defaultCorpus(3, 5).documents.map((d) => [tok.bosId!, ...tok.encode(d, { addBos: false }).slice(0, 63)]);
      const packed = trainingLossOf(w, batch);
      // reference: the teacher's prefill, one sequence at a time, NLL in float64
      const V = w.config.vocabSize;
      const scorer = new RowScorer(V);
      const logits = teacherPrefill(w, batch).logits;
      let sum = 0;
      let n = 0;
      batch.forEach((ids, s) => {
        for (let t = 0; t + 1 < ids.length; t++) {
          const row = logits[s]!.subarray(t * V, (t + 1) * V);
          sum += scorer.score(row, row, ids[t + 1]!).nll;
          n++;
        }
      });
      expect(Math.abs(packed - sum / n)).toBeLessThan(1e-4 * (sum / n));
    } finally {
      w.close();
    }
  });
});

describe('the summary', () => {
  const base: DemoFigures = {
    teacher: { ppl: 2.1 },
    engine: { ppl: 40, kld: 2.5 },
    initial: { ppl: 38, kld: 2.4 },
    trained: { ppl: 20, kld: 1.5 },
    vsEngine: { nllZ: -8, kldZ: -7 },
    vsInitial: { nllZ: -6, kldZ: -5 },
  };
  const model = { steps: 150, lossFirst: 4.3, lossLast: 1.3 };
  it('says the adapter helped only when the paired tests say so', () => {
    const s = demoSummary(base, model, 42);
    expect(s).toMatch(/teacher \(softmax attention\)\s+PPL\s+2\.1\n/);
    expect(s).toMatch(/trained adapter \(layers 0-1\)\s+PPL\s+20\s+mean KLD\s+1\.5/);
    expect(s).toContain('The trained adapter helped: it closes 40% of the engine\'s KLD to the teacher');
  });
  it('says plainly when it did not', () => {
    const worse = demoSummary({ ...base, trained: { ppl: 45, kld: 2.7 }, vsEngine: { nllZ: 3, kldZ: 4 } }, model, 42);
    expect(worse).toContain('The trained adapter did NOT help: it is worse than no adapter on these tokens (PPL 45 vs 40, KLD 2.7 vs 2.5).');
    expect(worse).toMatch(/trained adapter vs no adapter: PPL 45 vs 40 \(WORSE, paired z 3\)/);
    const noise = demoSummary({ ...base, vsEngine: { nllZ: -1, kldZ: 0.5 } }, model, 42);
    expect(noise).toContain('did NOT clearly help');
    expect(noise).not.toContain('adapter helped');
  });
});

describe('synaxim demo, as a user runs it', () => {
  it('reports teacher, engine, initial and trained adapter from its own reports, and a verdict', () => {
    const out = path.join(tmp, 'demo');
    const r = synaxim(['demo', '--out', out, '--train-steps', '40', '--epochs', '3'], { env: { SYNAXIM_CACHE: path.join(tmp, 'cache') }, cwd: tmp });
    expect(r.code, r.stderr).toBe(0);
    const s = r.stdout;
    const report = JSON.parse(fs.readFileSync(path.join(out, 'eval-trained', 'report.json'), 'utf8'));
    const initial = JSON.parse(fs.readFileSync(path.join(out, 'eval-initial', 'report.json'), 'utf8'));
    const by = (rep: typeof report, n: string) => rep.configurations.find((c: { name: string }) => c.name === n);
    const num = (re: RegExp) => Number(re.exec(s)![1]);
    // the figures are the reports'
    expect(num(/teacher \(softmax attention\)\s+PPL\s+([\d.]+)/)).toBeCloseTo(by(report, 'teacher').ppl, 2);
    expect(num(/engine \(no adapter\)\s+PPL\s+([\d.]+)/)).toBeCloseTo(by(report, 'engine').ppl, 1);
    expect(num(/initial adapter \(layers 0-1\)\s+PPL\s+([\d.]+)/)).toBeCloseTo(by(initial, 'adapter').ppl, 1);
    expect(num(/trained adapter \(layers 0-1\)\s+PPL\s+([\d.]+)/)).toBeCloseTo(by(report, 'adapter').ppl, 1);
    expect(num(/trained adapter \(layers 0-1\)\s+PPL\s+[\d.]+\s+mean KLD\s+([\d.]+)/)).toBeCloseTo(by(report, 'adapter').kld.mean, 2);
    // the model has real structure: its teacher predicts held-out stories far better than chance (vocabulary 320)
    expect(by(report, 'teacher').ppl).toBeLessThan(10);
    expect(by(report, 'teacher').ppl).toBeLessThan(by(report, 'engine').ppl);
    expect(s).toMatch(/The trained adapter (helped|did NOT help|did NOT clearly help)/);
    expect(s).toMatch(/trained adapter vs no adapter: PPL .* paired z/);
    expect(s).not.toMatch(/MSE/); // the distillation loss is not the verdict
    expect(fs.existsSync(path.join(out, 'compare', 'compare.html'))).toBe(true);
    expect(fs.readdirSync(out).sort()).toEqual(['adapter-initial', 'adapter-trained', 'compare', 'eval-initial', 'eval-trained', 'tiny-stories']);
  });
});
