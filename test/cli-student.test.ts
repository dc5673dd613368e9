/**
 * The student through the command line: `forward --engine student` and `generate --engine student`
 * (the paths a user runs), checked against the SYNAXIM reference engine's logits and the teacher.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { readAllFloat32, SafetensorsFile } from '../src/formats/safetensors.ts';
import { runForward } from '../src/cli/commands/forward.ts';
import { runGenerate } from '../src/cli/commands/generate.ts';
import { initialAdapter, writeAdapter } from '../src/formats/adapter.ts';

if (!sharedAvailable()) console.warn(`cli-student.test: the ../shared golden checks skipped: ${SHARED_DIR}/fixtures not found`);

let dir: string;
beforeAll(async () => {
  await initBackend('wasm');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cli-student-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe.skipIf(!sharedAvailable())('forward --engine student (../shared goldens)', () => {
  for (const fx of ['fixtures/tiny-llama', 'fixtures/tiny-mistral-bf16', 'models/stories260k']) {
    it(`${fx}: --rest engine on symb-int4 reproduces the reference engine's logits within 2e-3`, async () => {
      const golden = path.join(SHARED_DIR, fx, 'golden/engine-int4.safetensors');
      const f = SafetensorsFile.open(golden);
      const ids = f.readInt('input_ids');
      f.close();
      const out = path.join(dir, `${path.basename(fx)}-engine.safetensors`);
      await runForward({ model: path.join(SHARED_DIR, fx, 'symb-int4'), ids: ids.join(','), out, hidden: false, engine: 'student', rest: 'engine', backend: 'wasm' });
      const got = readAllFloat32(out);
      const want = readAllFloat32(golden);
      expect(got.logits!.shape).toEqual(want.logits!.shape);
      expect(maxAbsDiff(got.logits!.data, want.logits!.data)).toBeLessThanOrEqual(2e-3);
    });
  }

  it('--rest teacher with no adapter is the teacher; an adapter dir that does not fit is one clear error', async () => {
    const model = path.join(SHARED_DIR, 'fixtures/tiny-llama/hf');
    const ids = '1,438,135,279,220';
    const a = path.join(dir, 't.safetensors');
    const b = path.join(dir, 's.safetensors');
    await runForward({ model, ids, out: a, hidden: true, engine: 'teacher', rest: 'engine', backend: 'wasm' });
    await runForward({ model, ids, out: b, hidden: true, engine: 'student', rest: 'teacher', backend: 'wasm' });
    const ta = readAllFloat32(a);
    const tb = readAllFloat32(b);
    for (const k of Object.keys(ta)) expect(maxAbsDiff(ta[k]!.data, tb[k]!.data), k).toBe(0);
    const bad = path.join(dir, 'bad-adapter');
    await writeAdapter(bad, initialAdapter([0, 1], 32), {});
    await expect(runForward({ model, ids, out: path.join(dir, 'x.safetensors'), hidden: false, engine: 'student', rest: 'engine', adapter: bad, backend: 'wasm' })).rejects.toThrow(/hidden_size/);
    expect(fs.existsSync(path.join(dir, 'x.safetensors'))).toBe(false);
  });

  it('generate --engine student --rest teacher on stories260k tells the Lily story (recurrent decoding)', async () => {
    let text = '';
    await runGenerate(
      { model: path.join(SHARED_DIR, 'models/stories260k/hf'), prompt: 'Once upon a time', maxTokens: 30, temperature: 0, topP: 0.9, seed: 42, json: false, engine: 'student', rest: 'teacher', backend: 'wasm' } as never,
      (s: string) => (text += s),
    );
    expect(text).toContain('Once upon a time, there was a little girl named Lily.');
  });
});
