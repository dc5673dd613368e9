/**
 * `eval` on the native engine (layer-major: every configuration on the same weights advanced
 * together) against the tfjs reference on stories260k: the same figures, configuration by
 * configuration, within what float32 summation order can move them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendInfo, initBackend } from '../src/runtime/backend.ts';
import { SHARED_DIR } from '../src/util/paths.ts';
import { runEval } from '../src/eval/runner.ts';
import { adHocSuite } from '../src/data/suite.ts';
import { initialAdapter, writeAdapter } from '../src/formats/adapter.ts';
import type { EvalReport } from '../src/eval/report.ts';

const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');
const haveStories = fs.existsSync(path.join(STORIES, 'hf', 'model.safetensors'));
if (!haveStories) console.warn(`native-eval.test: skipped: ${STORIES} is missing`);

describe.skipIf(!haveStories)('eval: native engine vs tfjs on stories260k', () => {
  let tmp: string;
  let native: EvalReport;
  let tfjs: EvalReport;
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-native-eval-'));
    // A non-trivial adapter on layers 1-2 (values away from the initial ones), so adapter and hybrid differ from engine.
    const a = initialAdapter([1, 2], 64);
    a.params.forEach((p, i) => {
      p.gateBias = 0.3 - 0.2 * i;
      p.gateScale = 1.4;
      p.mixAlpha = 0.8;
      p.outputScale = p.outputScale.map((_, j) => 0.2 + 0.01 * (j % 7));
    });
    const adapterDir = path.join(tmp, 'adapter');
    await writeAdapter(adapterDir, a);
    const suite = adHocSuite({ corpus: path.join(STORIES, 'corpus', 'eval.jsonl'), context: 96, maxSeqs: 12 });
    const opts = { model: STORIES, adapter: adapterDir, suite, windows: [16, 'same-memory' as const], configurations: null };
    await initBackend('native');
    expect(backendInfo().backend).toBe('native');
    native = await runEval(opts);
    await initBackend('wasm');
    tfjs = await runEval(opts);
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('runs the same configurations', () => {
    expect(native.configurations.map((c) => c.name)).toEqual(tfjs.configurations.map((c) => c.name));
    expect(native.configurations.map((c) => c.name)).toEqual(expect.arrayContaining(['teacher', 'teacher-on-student-weights', 'engine', 'adapter', 'hybrid', 'window-16']));
    expect(native.backend.name).toBe('native');
    expect(tfjs.backend.name).toBe('wasm');
  });

  it('gives the same PPL, KLD and top-1 agreement for every configuration', () => {
    for (const t of tfjs.configurations) {
      const n = native.configurations.find((c) => c.name === t.name)!;
      expect(Math.abs(Math.log(n.ppl) - Math.log(t.ppl)), t.name).toBeLessThan(1e-4);
      expect(Math.abs(n.kld.mean - t.kld.mean), t.name).toBeLessThan(1e-4 * Math.max(1, t.kld.mean));
      // top-1 can flip only on near-ties: at most one token in a thousand
      expect(Math.abs(n.same_top_p - t.same_top_p), t.name).toBeLessThanOrEqual(1e-3);
    }
  });

  it('a window covering every sequence computes exactly what softmax on the same weights does', () => {
    const same = native.configurations.find((c) => c.name.startsWith('window-') && c.name !== 'window-16')!;
    const softmax = native.configurations.find((c) => c.name === 'teacher-on-student-weights')!;
    expect(same.ppl).toBe(softmax.ppl);
    expect(same.kld.mean).toBe(softmax.kld.mean);
  });
});
