/**
 * `eval --teacher-logits FILE`: the first run computes the teacher and keeps its log-probs, a later
 * run reads them instead of running the teacher; the figures agree within the file's quantization
 * bound (src/formats/teacherLogits.ts: every log-prob within scale/2 ≤ 7.7e-4 nats).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { SHARED_DIR } from '../src/util/paths.ts';
import { runEval } from '../src/eval/runner.ts';
import { loadSuite } from '../src/data/suite.ts';
import type { EvalReport } from '../src/eval/report.ts';

const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');
const haveStories = fs.existsSync(path.join(STORIES, 'hf', 'model.safetensors'));
if (!haveStories) console.warn(`teacher-logits-eval.test: skipped: ${STORIES} is missing`);

describe.skipIf(!haveStories)('eval --teacher-logits on stories260k', () => {
  let tmp: string;
  let live: EvalReport;
  let written: EvalReport;
  let read: EvalReport;
  const lines: string[] = [];
  beforeAll(async () => {
    await initBackend('wasm');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-tlp-'));
    const suite = loadSuite('smoke');
    const file = path.join(tmp, 'teacher.tlp');
    live = await runEval({ model: STORIES, suite });
    written = await runEval({ model: STORIES, suite, teacherLogits: file });
    read = await runEval({ model: STORIES, suite, teacherLogits: file, log: (l) => lines.push(l) });
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('writes the file on the first run and reads it on the next', () => {
    expect(written.teacher_logits?.status).toBe('written');
    expect(read.teacher_logits?.status).toBe('read');
    expect(lines.some((l) => /teacher log-probs read from/.test(l))).toBe(true);
  });

  it('a writing run gives exactly the live figures', () => {
    expect(written.configurations.map((c) => [c.name, c.ppl, c.kld.mean, c.same_top_p])).toEqual(live.configurations.map((c) => [c.name, c.ppl, c.kld.mean, c.same_top_p]));
  });

  it('figures from the cache equal the live ones within the quantization bound', () => {
    // δ ≤ 7.7e-4 per log-prob: ln PPL moves ≤ 2δ; KL mean ≤ ε² + ε(KL + 2) with ε = e^{2δ} − 1.
    const delta = 7.7e-4;
    const eps = Math.exp(2 * delta) - 1;
    for (const c of live.configurations) {
      const r = read.configurations.find((x) => x.name === c.name)!;
      expect(Math.abs(Math.log(r.ppl) - Math.log(c.ppl))).toBeLessThanOrEqual(2 * delta);
      expect(Math.abs(r.kld.mean - c.kld.mean)).toBeLessThanOrEqual(eps * eps + eps * (c.kld.mean + 2));
    }
    // the candidates themselves are computed live both times: their PPL is identical
    for (const name of ['teacher-on-student-weights', 'engine']) {
      expect(read.configurations.find((x) => x.name === name)!.ppl).toBe(live.configurations.find((x) => x.name === name)!.ppl);
    }
  });

  it('leaves out hidden-state figures it cannot compute, and says so', () => {
    expect(live.suite.metrics).toContain('hidden');
    expect(read.suite.metrics).not.toContain('hidden');
    expect(lines.some((l) => /no hidden-state figures/.test(l))).toBe(true);
  });

  it('refuses a file made for another teacher in one line', async () => {
    const file = path.join(tmp, 'teacher.tlp');
    await expect(runEval({ model: path.join(STORIES, 'symb-int4'), suite: loadSuite('smoke'), teacherLogits: file })).rejects.toThrow(/made for another teacher\/suite: teacher/);
  });
});
