import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { threadId } from 'node:worker_threads';
import { initBackend } from '../src/runtime/backend.ts';
import { SynaximError } from '../src/util/errors.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { chooseWorkers, parallelMap, WorkerPool } from '../src/runtime/workers.ts';
import { timeMatMul, WORKER_TASKS } from '../src/runtime/workerTasks.ts';
import { runEval } from '../src/eval/runner.ts';
import { loadSuite } from '../src/data/suite.ts';
import path from 'node:path';

beforeAll(async () => {
  await initBackend('wasm');
});

describe('chooseWorkers', () => {
  it('defaults to 2 on ≥ 2 cores for a big job on wasm, 1 otherwise', () => {
    expect(chooseWorkers({ units: 10, cores: 2, backend: 'wasm' })).toBe(2);
    expect(chooseWorkers({ units: 10, cores: 16, backend: 'wasm' })).toBe(2);
    expect(chooseWorkers({ units: 10, cores: 1, backend: 'wasm' })).toBe(1);
    expect(chooseWorkers({ units: 1, cores: 2, backend: 'wasm' })).toBe(1);
    expect(chooseWorkers({ units: 10, cores: 2, backend: 'wasm', tiny: true })).toBe(1);
    expect(chooseWorkers({ units: 10, cores: 2, backend: 'tensorflow' })).toBe(1);
  });
  it('an explicit count wins, capped by the units; a bad one is a one-line error', () => {
    expect(chooseWorkers({ requested: 2, units: 10, cores: 1, tiny: true })).toBe(2);
    expect(chooseWorkers({ requested: 4, units: 3 })).toBe(3);
    expect(() => chooseWorkers({ requested: 0, units: 3 })).toThrow(SynaximError);
    expect(() => chooseWorkers({ requested: 1.5, units: 3 })).toThrow(/--workers must be a positive integer/);
  });
});

describe('WorkerPool', () => {
  let pool: WorkerPool;
  beforeAll(async () => {
    pool = await WorkerPool.start(2, { backend: 'wasm' });
  });
  afterAll(async () => {
    await pool.close();
  });

  it('runs two threads, each with its own wasm tfjs engine', async () => {
    expect(pool.size).toBe(2);
    expect(pool.backend).toBe('wasm');
    const a = await pool.call<{ threadId: number; backend: string }>(0, WORKER_TASKS, 'describeWorker');
    const b = await pool.call<{ threadId: number; backend: string }>(1, WORKER_TASKS, 'describeWorker');
    expect(a.backend).toBe('wasm');
    expect(b.backend).toBe('wasm');
    expect(a.threadId).not.toBe(b.threadId);
    expect([a.threadId, b.threadId]).not.toContain(threadId);
  });

  it('keeps module state per worker between calls (sticky routing)', async () => {
    const first = await pool.call<{ calls: number }>(1, WORKER_TASKS, 'describeWorker');
    const second = await pool.call<{ calls: number }>(1, WORKER_TASKS, 'describeWorker');
    expect(second.calls).toBe(first.calls + 1);
    const sticky = await pool.mapSticky<{ threadId: number }>(WORKER_TASKS, 'describeWorker', [[], [], [], []], (i) => i);
    expect(sticky[0]!.threadId).toBe(sticky[2]!.threadId);
    expect(sticky[1]!.threadId).toBe(sticky[3]!.threadId);
    expect(sticky[0]!.threadId).not.toBe(sticky[1]!.threadId);
  });

  it('map returns results in input order and computes what this thread computes', async () => {
    const args = [
      [8, 16, 4, 1, 3],
      [5, 7, 9, 1, 4],
      [32, 8, 16, 1, 5],
    ];
    const out = await pool.map<{ checksum: number }>(WORKER_TASKS, 'timeMatMul', args);
    const here = args.map((a) => timeMatMul(...(a as [number, number, number, number, number])));
    expect(out.map((o) => o.checksum)).toEqual(here.map((h) => h.checksum));
  });

  it('moves whole typed arrays back, copies partial views', async () => {
    const r = await pool.call<{ data: Float32Array; view: Float32Array }>(0, WORKER_TASKS, 'makeArray', [4, 0.5]);
    expect(Array.from(r.data)).toEqual([0, 0.5, 1, 1.5]);
    expect(Array.from(r.view)).toEqual([2, 2.5, 3, 3.5]);
    expect(r.data).toBeInstanceOf(Float32Array);
  });

  it('a SynaximError in a worker arrives as a SynaximError with its one-line message', async () => {
    const e = await pool.call(0, WORKER_TASKS, 'failOnPurpose', ['bad input']).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SynaximError);
    expect((e as SynaximError).message).toBe('worker-test: bad input');
    expect((e as SynaximError).file).toBe('worker-test');
    // the pool survives a failed call
    expect((await pool.call<{ backend: string }>(0, WORKER_TASKS, 'describeWorker')).backend).toBe('wasm');
  });

  it('an unknown function or worker index is an error, not a hang', async () => {
    await expect(pool.call(0, WORKER_TASKS, 'noSuchFunction')).rejects.toThrow(/exports no function 'noSuchFunction'/);
    await expect(pool.call(5, WORKER_TASKS, 'describeWorker')).rejects.toThrow(/no worker 5/);
  });
});

describe('parallelMap', () => {
  it('with one worker runs in this thread, with the same results', async () => {
    const here = await parallelMap<{ threadId: number }>(1, WORKER_TASKS, 'describeWorker', [[], []]);
    expect(here.map((h) => h.threadId)).toEqual([threadId, threadId]);
  });
  it('a closed pool rejects calls', async () => {
    const p = await WorkerPool.start(1, { backend: 'wasm' });
    await p.close();
    await expect(p.call(0, WORKER_TASKS, 'describeWorker')).rejects.toThrow(/closed/);
  });
});

describe.skipIf(!sharedAvailable())('eval with worker threads (stories260k)', () => {
  if (!sharedAvailable()) console.warn(`skipping: ${SHARED_DIR} not available`);
  it('2 workers give exactly the figures of 1 (same accumulation order)', async () => {
    const model = path.join(SHARED_DIR, 'models', 'stories260k');
    const suite = { ...loadSuite('smoke'), tokenBudget: 256 };
    const one = await runEval({ model, suite, workers: 1 });
    const two = await runEval({ model, suite, workers: 2 });
    const strip = (r: typeof one) => r.configurations.map(({ wall_s: _w, ...rest }) => rest);
    expect(two.tokens).toEqual(one.tokens);
    expect(strip(two)).toEqual(strip(one));
    expect(one.configurations.length).toBeGreaterThanOrEqual(2);
  });
});

describe('TeacherInputLayerWorkers (distillation layers under --input teacher)', () => {
  it('2 workers reproduce runPass over all layers: losses and gradients', async () => {
    const { writeFixtureHf } = await import('../src/formats/fixture.ts');
    const { openModel } = await import('../src/formats/openModel.ts');
    const { teacherPrefill } = await import('../src/teacher/teacher.ts');
    const { initialAdapter } = await import('../src/formats/adapter.ts');
    const { AdapterVariables, LayerSource, runPass } = await import('../src/distill/train.ts');
    const { TeacherInputLayerWorkers } = await import('../src/distill/workers.ts');
    const fs = await import('node:fs');
    const os = await import('node:os');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-workers-'));
    try {
      writeFixtureHf('tiny', dir);
      const w = openModel(dir);
      const c = w.config;
      const T = 12;
      const seqs = [0, 1, 2].map((s) => Array.from({ length: T }, (_, t) => 3 + ((s * 31 + t * 7) % 200)));
      const hidden = teacherPrefill(w, seqs, { hidden: true, logits: false }).hidden!;
      const teacher = new Map<number, Float32Array[]>();
      for (let i = 0; i <= c.numLayers; i++) teacher.set(i, hidden.map((h) => h[i]!));
      const layers = [0, 1, 3];
      const opts = { layers, epochs: 1, lr: 1e-2, weightDecay: 0.01, gradClip: 1, batchSize: 3, input: 'teacher' as const, mlpGrad: 'exact' as const, rest: 'engine' as const, seed: 0 };
      // Some parameters away from the initial values, so every gradient is exercised.
      const adapter = initialAdapter(layers, c.hiddenSize);
      adapter.params.forEach((p, i) => {
        p.gateBias = 0.3 * i - 0.2;
        p.gateScale = 1.1;
        p.mixAlpha = 0.2;
      });
      const vars = new AdapterVariables(adapter);
      const source = new LayerSource(w, layers, 1 << 30);
      const here = runPass({ config: c, layers: source, opts, seqLen: T, teacher, studentStart: null, rope: null }, [0, 2], vars, true);
      const pool = await TeacherInputLayerWorkers.start({ studentDir: dir, opts, seqLen: T, teacher }, 2);
      try {
        expect(pool.size).toBe(2);
        const there = await pool.pass([0, 2], vars.read(), true);
        expect(there.lossPerLayer.length).toBe(3);
        there.lossPerLayer.forEach((l, i) => expect(l).toBeCloseTo(here.lossPerLayer[i]!, 10));
        expect(there.loss).toBeCloseTo(here.loss, 10);
        expect(there.grads!.length).toBe(here.grads!.length);
        here.grads!.forEach((g, k) => {
          const got = there.grads![k]!;
          // float32: the workers scale each layer's loss by 1/(B·its layers) and the result by its share, not by 1/(B·all layers)
          const scale = Math.max(...Array.from(g, Math.abs));
          for (let j = 0; j < g.length; j++) expect(Math.abs(got[j]! - g[j]!)).toBeLessThanOrEqual(1e-5 * scale);
        });
        const noGrad = await pool.pass([1], vars.read(), false);
        expect(noGrad.grads).toBeNull();
      } finally {
        await pool.close();
        source.dispose();
        vars.dispose();
        w.close();
      }
      await expect(TeacherInputLayerWorkers.start({ studentDir: dir, opts: { ...opts, input: 'student' }, seqLen: T, teacher }, 2)).rejects.toThrow(/--input teacher/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
