/**
 * `--int4-activations int8` (issue 15, decode bandwidth): MatMulNBits with accuracy_level 4 quantizes
 * the activations to int8 per block. An opt-in: its products move by ~3e-3 relative RMS, the default
 * (float32) stays bit-identical. Checked here: the int8 product against the float64 product of the
 * dequantized matrix (and that it is not the float32 product: the setting reaches the kernel),
 * decode against prefill in int8 mode, the default against float32 set explicitly, what is recorded
 * (backendInfo, the teacher cache's engine name), and the refusals (a tfjs backend, --teacher-logits
 * with an INT4 teacher).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import yargs from 'yargs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { backendInfo, initBackend, int4Activations, setInt4Activations, type BackendChoice } from '../src/runtime/backend.ts';
import { writeFixtureHf } from '../src/formats/fixture.ts';
import { convertHfToSymb } from '../src/formats/convert.ts';
import { openModel } from '../src/formats/openModel.ts';
import type { ModelWeights } from '../src/formats/weights.ts';
import { dequantizeInt4Matrix } from '../src/native/linear.ts';
import { nativePrefill, NativeDecoder } from '../src/native/model.ts';
import { currentTeacherEngine } from '../src/distill/teacherCache.ts';
import { openTeacherLogits, teacherLogitsKey } from '../src/eval/teacherLogits.ts';
import { startBackend, withBackend } from '../src/cli/common.ts';
import { SynaximError } from '../src/util/errors.ts';
import { int4Of, refProduct, runInt4Linear } from './helpers/int4.ts';
import { maxAbsDiff, randoms, relRms } from './helpers/numeric.ts';

let tmp: string;
let w: ModelWeights;

beforeAll(async () => {
  await initBackend('wasm', { int4Activations: 'float32' });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-int8-acts-'));
  writeFixtureHf('tiny', path.join(tmp, 'hf'), 11); // hidden 64; down (in 176) takes the float32 fallback
  await convertHfToSymb(path.join(tmp, 'hf'), path.join(tmp, 'int4'), { quantize: 'int4', groupSize: 32 });
  w = openModel(path.join(tmp, 'int4'));
});

afterAll(() => {
  w?.close();
  setInt4Activations('float32');
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

afterEach(() => setInt4Activations('float32'));

describe('MatMulNBits with int8 activations', () => {
  for (const [N, K, gs, M] of [
    [96, 256, 32, 1],
    [64, 512, 128, 5],
  ] as const) {
    it(`is within 1e-2 relative RMS of the float64 dequantized product, and not the float32 product (N ${N}, K ${K}, g${gs}, M ${M})`, async () => {
      const m = int4Of(randoms(N * K, N + K, 0.5), N, K, gs);
      const x = randoms(M * K, K + 7);
      const ref = refProduct(x, dequantizeInt4Matrix(m), M, K, N);
      const y32 = await runInt4Linear(m, x, M, 1);
      setInt4Activations('int8');
      const y8 = await runInt4Linear(m, x, M, 1);
      const err8 = relRms(y8, ref);
      const err32 = relRms(y32, ref);
      console.log(`int8 activations, N ${N} K ${K} g${gs} M ${M}: relRms ${err8.toExponential(2)} (float32: ${err32.toExponential(2)})`);
      expect(err32).toBeLessThan(1e-6);
      expect(err8).toBeLessThan(1e-2);
      // The setting reaches the kernel: int8 products differ from float32's by more than rounding.
      expect(err8).toBeGreaterThan(1e-5);
      expect(maxAbsDiff(y8, y32)).toBeGreaterThan(0);
    });
  }
});

describe('an INT4 model in int8 mode', () => {
  const V = () => w.config.vocabSize;
  const seq = () => Array.from({ length: 12 }, (_, t) => (t === 0 ? 1 : (t * 37 + 5) % V()));

  it('decode equals prefill (within 1e-4) and the logits move from float32 mode by < 5e-2 relative RMS', async () => {
    const ids = seq();
    const r32 = await nativePrefill(w, [ids], {});
    setInt4Activations('int8');
    const r8 = await nativePrefill(w, [ids], {});
    const moved = relRms(r8.logits[0]!, r32.logits[0]!);
    console.log(`tiny INT4 model, int8 vs float32 activations: logits relRms ${moved.toExponential(2)}`);
    expect(moved).toBeGreaterThan(0);
    expect(moved).toBeLessThan(5e-2);
    const dec = await NativeDecoder.create(w);
    try {
      let worst = 0;
      for (let t = 0; t < ids.length; t++) worst = Math.max(worst, maxAbsDiff(await dec.step(ids[t]!), r8.logits[0]!.subarray(t * V(), (t + 1) * V())));
      console.log(`int8 mode: decode vs prefill max |Δlogit| ${worst.toExponential(2)}`);
      expect(worst).toBeLessThan(1e-4);
    } finally {
      await dec.close();
    }
  });

  it('the default is float32: logits bit-identical to float32 set explicitly, after an int8 run', async () => {
    const ids = seq();
    const before = await nativePrefill(w, [ids], {});
    setInt4Activations('int8');
    await nativePrefill(w, [ids], {});
    setInt4Activations('float32');
    const after = await nativePrefill(w, [ids], {});
    expect(maxAbsDiff(after.logits[0]!, before.logits[0]!)).toBe(0);
  });
});

describe('what is recorded, and what is refused', () => {
  afterAll(async () => {
    await initBackend('wasm', { int4Activations: 'float32' });
  });

  it('backendInfo and the teacher cache name the mode; float32 adds nothing', async () => {
    await initBackend('native', { int4Activations: 'float32' });
    expect(int4Activations()).toBe('float32');
    expect(backendInfo().detail).not.toContain('int8');
    expect(currentTeacherEngine()).toBe('native');
    await initBackend('native', { int4Activations: 'int8' });
    expect(backendInfo().detail).toContain('; INT4 × int8 activations (MatMulNBits accuracy_level 4)');
    expect(currentTeacherEngine()).toBe('native-int8');
    setInt4Activations('float32');
  });

  it('--backend wasm --int4-activations int8 is refused in one line through the CLI options', async () => {
    const argv = (await withBackend(yargs([])).parseAsync(['--backend', 'wasm', '--int4-activations', 'int8'])) as unknown as { backend: BackendChoice };
    const err = await startBackend(argv.backend, true).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SynaximError);
    expect((err as Error).message).toMatch(/^--int4-activations int8 needs the native engine/);
    expect((err as Error).message).not.toContain('\n');
    expect(int4Activations()).toBe('float32'); // nothing was set
    // The default of the option is float32: the same parse without it starts wasm.
    const plain = (await withBackend(yargs([])).parseAsync(['--backend', 'wasm'])) as unknown as { backend: BackendChoice };
    await expect(startBackend(plain.backend, true)).resolves.toBe('wasm');
  });

  it('--teacher-logits with an INT4 teacher is refused in int8 mode, naming the file', async () => {
    const key = teacherLogitsKey({ teacherDir: path.join(tmp, 'int4'), tokenizerFile: path.join(tmp, 'hf', 'config.json'), windows: [[1, 2, 3]], vocab: V(), context: 3 });
    expect(key.int4Teacher).toBe(true);
    expect(teacherLogitsKey({ teacherDir: path.join(tmp, 'hf'), tokenizerFile: path.join(tmp, 'hf', 'config.json'), windows: [[1, 2, 3]], vocab: V(), context: 3 }).int4Teacher).toBe(false);
    setInt4Activations('int8');
    const file = path.join(tmp, 'teacher.tlp');
    expect(() => openTeacherLogits(file, key)).toThrow(SynaximError);
    expect(() => openTeacherLogits(file, key)).toThrow(/needs --int4-activations float32/);
  });

  function V(): number {
    return w.config.vocabSize;
  }
});
