/**
 * forward, generate and distill's teacher on the native engine (ONNX Runtime, `--backend native`)
 * against tfjs (`--backend wasm`, the exact reference) and the ../shared goldens:
 * - `forward` teacher and student logits/hidden within the goldens' 2e-3;
 * - greedy `generate` ids identical to tfjs on stories260k (teacher, student --rest engine, an adapter);
 * - the distill teacher cache's hidden states and log-probs native vs tfjs within tolerance, under
 *   their own cache keys, and a native entry read back bit-identical to a fresh native computation.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendInfo, initBackend } from '../src/runtime/backend.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { readAllFloat32, SafetensorsFile } from '../src/formats/safetensors.ts';
import { initialAdapter, writeAdapter } from '../src/formats/adapter.ts';
import { openModel } from '../src/formats/openModel.ts';
import { hashSequences } from '../src/data/corpus.ts';
import { runForward } from '../src/cli/commands/forward.ts';
import { runGenerate } from '../src/cli/commands/generate.ts';
import { currentTeacherEngine, teacherCacheDir, teacherHiddenStates, teacherLogProbs } from '../src/distill/teacherCache.ts';
import { maxAbsDiff } from './helpers/numeric.ts';

if (!sharedAvailable()) console.warn(`native-cli.test: skipped: ${SHARED_DIR}/fixtures not found`);

const STORIES = path.join(SHARED_DIR, 'models/stories260k');
let dir: string;
beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'native-cli-'));
});
afterAll(async () => {
  fs.rmSync(dir, { recursive: true, force: true });
  await initBackend('wasm');
});

function greedyIds(): number[] {
  return (JSON.parse(fs.readFileSync(path.join(STORIES, 'golden/greedy.json'), 'utf8')) as { ids: number[] }).ids;
}

/** An adapter on layers 0-1 with non-default values, so the adapter path is not close to the identity. */
async function writeTestAdapter(): Promise<string> {
  const a = initialAdapter([0, 1], 64);
  a.params.forEach((p, i) => {
    p.gateBias = 0.3 - 0.5 * i;
    p.gateScale = 1.2;
    p.mixAlpha = 0.8;
    p.outputScale = Float32Array.from({ length: 64 }, (_, k) => 0.05 + 0.002 * k);
  });
  const out = path.join(dir, 'adapter');
  await writeAdapter(out, a, {});
  return out;
}

describe.skipIf(!sharedAvailable())('forward on the native engine', () => {
  for (const fx of ['fixtures/tiny-llama', 'models/stories260k']) {
    it(`${fx}: teacher logits and hidden states within 2e-3 of the golden; recorded backend native`, async () => {
      const golden = readAllFloat32(path.join(SHARED_DIR, fx, 'golden/teacher.safetensors'));
      const f = SafetensorsFile.open(path.join(SHARED_DIR, fx, 'golden/teacher.safetensors'));
      const ids = f.readInt('input_ids');
      f.close();
      const out = path.join(dir, `${path.basename(fx)}-teacher.safetensors`);
      await runForward({ model: path.join(SHARED_DIR, fx, 'hf'), ids: ids.join(','), out, hidden: true, engine: 'teacher', rest: 'engine', backend: 'native' });
      const got = SafetensorsFile.open(out);
      try {
        expect(got.metadata?.backend).toBe('native');
        for (const k of Object.keys(golden).filter((k) => k !== 'input_ids')) {
          expect(maxAbsDiff(got.readFloat32(k), golden[k]!.data), k).toBeLessThanOrEqual(2e-3);
        }
      } finally {
        got.close();
      }
    });

    it(`${fx}: student --rest engine on symb-int4 within 2e-3 of the reference engine's logits`, async () => {
      const golden = path.join(SHARED_DIR, fx, 'golden/engine-int4.safetensors');
      const f = SafetensorsFile.open(golden);
      const ids = f.readInt('input_ids');
      f.close();
      const out = path.join(dir, `${path.basename(fx)}-engine.safetensors`);
      await runForward({ model: path.join(SHARED_DIR, fx, 'symb-int4'), ids: ids.join(','), out, hidden: false, engine: 'student', rest: 'engine', backend: 'native' });
      expect(maxAbsDiff(readAllFloat32(out).logits!.data, readAllFloat32(golden).logits!.data)).toBeLessThanOrEqual(2e-3);
    });
  }

  it('stories260k: student with an adapter, native vs tfjs, logits and hidden within 1e-4', async () => {
    const adapter = await writeTestAdapter();
    const ids = greedyIds().slice(0, 40).join(',');
    const run = async (backend: 'native' | 'wasm') => {
      const out = path.join(dir, `adapter-${backend}.safetensors`);
      await runForward({ model: path.join(STORIES, 'hf'), ids, out, hidden: true, engine: 'student', rest: 'engine', adapter, backend });
      return readAllFloat32(out);
    };
    const n = await run('native');
    const t = await run('wasm');
    for (const k of Object.keys(t)) expect(maxAbsDiff(n[k]!.data, t[k]!.data), k).toBeLessThanOrEqual(1e-4);
  });
});

describe.skipIf(!sharedAvailable())('greedy generate on the native engine: ids identical to tfjs (stories260k)', () => {
  const generate = async (backend: 'native' | 'wasm', extra: Record<string, unknown>) =>
    runGenerate({ model: path.join(STORIES, 'hf'), promptIds: '1', maxTokens: 64, temperature: 0, topP: 0.9, seed: 42, json: true, rest: 'engine', backend, ...extra } as never, () => {});

  it('teacher: the golden greedy ids, native and tfjs alike', async () => {
    const native = await generate('native', { engine: 'teacher' });
    expect(native.backend).toBe('native');
    expect(native.ids).toEqual(greedyIds());
    expect((await generate('wasm', { engine: 'teacher' })).ids).toEqual(native.ids);
  });

  it('student --rest engine (recurrent gate state) and with an adapter: native ids = tfjs ids', async () => {
    const adapter = await writeTestAdapter();
    for (const extra of [{ engine: 'student' }, { engine: 'student', adapter }]) {
      const native = await generate('native', extra);
      const tfjs = await generate('wasm', extra);
      expect(native.ids.length).toBeGreaterThan(10);
      expect(native.ids, JSON.stringify(extra)).toEqual(tfjs.ids);
    }
  });
});

describe.skipIf(!sharedAvailable())("distill's teacher cache on the native engine", () => {
  it('hidden states and log-probs native vs tfjs within tolerance; own keys; native cache read back bit-identical', async () => {
    const ids = greedyIds();
    const seqs = [0, 8, 16, 24].map((s) => Int32Array.from(ids.slice(s, s + 32)));
    const w = openModel(path.join(STORIES, 'hf'));
    const root = path.join(dir, 'cache');
    try {
      const base = { modelHash: 'stories260k-test', sequencesHash: hashSequences(seqs), seqLen: 32 };
      const all = [0, 1, 2, 3, 4, 5];
      await initBackend('native');
      expect(currentTeacherEngine()).toBe('native');
      expect(backendInfo().backend).toBe('native');
      const nKey = { ...base, engine: currentTeacherEngine() };
      const tKey = { ...base, engine: 'tfjs' as const };
      expect(teacherCacheDir(nKey, root)).not.toBe(teacherCacheDir(tKey, root));
      expect(teacherCacheDir(tKey, root)).toBe(teacherCacheDir(base, root)); // tfjs entries keep their old key
      const native = await teacherHiddenStates(w, seqs, all, nKey, { root });
      const nativeLp = await teacherLogProbs(w, seqs, nKey, { root });
      const tfjs = await teacherHiddenStates(w, seqs, all, tKey, { useCache: false });
      const tfjsLp = await teacherLogProbs(w, seqs, tKey, { useCache: false });
      for (const i of all) {
        for (let s = 0; s < seqs.length; s++) expect(maxAbsDiff(native.hidden.get(i)![s]!, tfjs.hidden.get(i)![s]!), `hidden.${i} seq ${s}`).toBeLessThanOrEqual(2e-3);
      }
      for (let s = 0; s < seqs.length; s++) expect(maxAbsDiff(nativeLp.logProbs[s]!, tfjsLp.logProbs[s]!), `log-probs seq ${s}`).toBeLessThanOrEqual(2e-3);
      // The native entry is what a resumed native run reads: bit-identical to computing it again.
      const again = await teacherHiddenStates(w, seqs, all, nKey, { root });
      expect(again.fromCache).toEqual(all);
      const fresh = await teacherHiddenStates(w, seqs, [3, 5], nKey, { useCache: false });
      for (const i of [3, 5]) for (let s = 0; s < seqs.length; s++) expect(Array.from(again.hidden.get(i)![s]!)).toEqual(Array.from(fresh.hidden.get(i)![s]!));
      const lpAgain = await teacherLogProbs(w, seqs, nKey, { root });
      expect(lpAgain.fromCache).toBe(true);
      expect(Array.from(lpAgain.logProbs[2]!)).toEqual(Array.from(nativeLp.logProbs[2]!));
    } finally {
      w.close();
    }
  });
});
