/**
 * `distill --input teacher --workers 2`: layers trained on two worker threads (one tfjs engine each)
 * give the adapter a single thread gives, up to float summation order.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { runDistill, type DistillOptions } from '../src/distill/run.ts';
import { readAllFloat32 } from '../src/formats/safetensors.ts';
import { relRms } from './helpers/numeric.ts';

if (!sharedAvailable()) console.warn(`distill-workers.test: the stories260k worker-thread check skipped: ${SHARED_DIR}/fixtures not found`);

let dir: string;
beforeAll(async () => {
  await initBackend('wasm');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'distill-workers-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!sharedAvailable())('distill --input teacher on worker threads (stories260k)', () => {
  it('2 workers train the same adapter as 1, and --workers needs --input teacher', async () => {
    const base: DistillOptions = {
      model: path.join(SHARED_DIR, 'models/stories260k/hf'), layers: [0, 1, 2, 3, 4], seqLen: 32, maxSeqs: 24, epochs: 2,
      lr: 1e-2, batchSize: 8, input: 'teacher', mlpGrad: 'exact', rest: 'engine', seed: 0, out: '', quiet: true, cacheRoot: path.join(dir, 'cache'),
    };
    const one = await runDistill({ ...base, workers: 1, out: path.join(dir, 'w1') });
    const two = await runDistill({ ...base, workers: 2, out: path.join(dir, 'w2') });
    const a = readAllFloat32(path.join(one.adapterDir, 'adapter_model.safetensors'));
    const b = readAllFloat32(path.join(two.adapterDir, 'adapter_model.safetensors'));
    expect(Object.keys(b).sort()).toEqual(Object.keys(a).sort());
    for (const k of Object.keys(a)) expect(relRms(b[k]!.data, a[k]!.data), k).toBeLessThan(1e-4);
    two.heldOutAfter.forEach((v, i) => expect(Math.abs(v - one.heldOutAfter[i]!) / one.heldOutAfter[i]!).toBeLessThan(1e-4));
    await expect(runDistill({ ...base, input: 'student', workers: 2, out: path.join(dir, 'w3') })).rejects.toThrow(/--workers > 1 needs --input teacher/);
  });
});
