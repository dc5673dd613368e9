/**
 * Distillation: gradient conformance against the finite-difference goldens, training lowers the
 * loss and leaves the model weights untouched, outputs and their provenance, the teacher cache
 * (also under concurrent writers), NaN stops, and runs killed (kill -9) or interrupted (SIGINT)
 * that resume to the bit-identical adapter.
 */
import * as tf from '@tensorflow/tfjs-core';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import yargs from 'yargs';
import { command as distillCommand } from '../src/cli/commands/distill.ts';
import { initBackend } from '../src/runtime/backend.ts';
import { hashSequences } from '../src/data/corpus.ts';
import { SynaximError } from '../src/util/errors.ts';
import { PROJECT_ROOT, SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { contentHash as modelContentHash } from '../src/formats/contentHash.ts';
import { initialAdapter, readAdapter, INITIAL_ADAPTER_VALUES } from '../src/formats/adapter.ts';
import { writeFixtureHf } from '../src/formats/fixture.ts';
import { openModel } from '../src/formats/openModel.ts';
import { readAllFloat32, SafetensorsFile } from '../src/formats/safetensors.ts';
import { teacherPrefill } from '../src/teacher/teacher.ts';
import { readTrainLog, runDistill, type DistillOptions } from '../src/distill/run.ts';
import { acquireDirLock, LOCK_FILE, removeStaleTemps } from '../src/distill/lock.ts';
import { teacherHiddenStates } from '../src/distill/teacherCache.ts';
import { AdapterVariables, CHECKPOINT_FILE, LayerSource, loadCheckpoint, runPass, type InputMode, type MlpGrad, type PassContext } from '../src/distill/train.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-distill-'));
const CACHE = path.join(tmp, 'cache');
const TINY = path.join(tmp, 'tiny-hf');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  await initBackend('wasm');
  writeFixtureHf('tiny', TINY); // the project's own deterministic tiny model (with a byte tokenizer)
  process.env.SYNAXIM_CACHE = CACHE;
});

/** Options of a small, quick run on the generated tiny model. */
function tinyRun(out: string, over: Partial<DistillOptions> = {}): DistillOptions {
  return {
    model: TINY,
    layers: [0, 1, 2],
    seqLen: 24,
    maxSeqs: 20,
    epochs: 4,
    lr: 1e-2,
    batchSize: 4,
    input: 'student',
    mlpGrad: 'exact',
    rest: 'engine',
    seed: 0,
    out,
    cacheRoot: CACHE,
    quiet: true,
    ...over,
  };
}

const fileBytes = (f: string) => fs.readFileSync(f);

// ---------------------------------------------------------------------------------------------

describe.skipIf(!sharedAvailable())('gradient conformance (../shared/fixtures/*/golden/adapter.safetensors)', () => {
  if (!sharedAvailable()) console.warn(`skipping: ${SHARED_DIR}/fixtures not found`);
  for (const fixture of ['tiny-llama', 'tiny-mistral-bf16']) {
    const dir = path.join(SHARED_DIR, 'fixtures', fixture);
    let golden: Record<string, { shape: number[]; data: Float32Array }>;
    let ids: number[];
    let hidden: Float32Array[];
    beforeAll(() => {
      golden = readAllFloat32(path.join(dir, 'golden', 'adapter.safetensors'));
      const f = SafetensorsFile.open(path.join(dir, 'golden', 'adapter.safetensors'));
      ids = f.readInt('input_ids');
      f.close();
      const w = openModel(path.join(dir, 'hf'));
      hidden = teacherPrefill(w, [ids], { hidden: true, logits: false }).hidden![0]!;
      w.close();
    });

    const cases: [InputMode, MlpGrad, number | undefined][] = [
      ['student', 'exact', undefined],
      ['student', 'detached', undefined],
      ['teacher', 'exact', undefined],
      ['teacher', 'detached', undefined],
      ['student', 'exact', 7], // chunks of 7 over T = 24: gradients through the carried state
    ];
    for (const [mode, kind, chunkSize] of cases) {
      it(`${fixture}: loss.${mode} and grad.${mode}.${kind}${chunkSize ? ` (chunk ${chunkSize})` : ''}`, () => {
        const w = openModel(path.join(dir, 'hf'));
        const c = w.config;
        const layers = new LayerSource(w, [0, 1], 1 << 30);
        const adapter = {
          layers: [0, 1],
          hiddenSize: c.hiddenSize,
          config: {},
          params: [0, 1].map((i) => ({
            gateBias: golden[`gate_bias.${i}`]!.data[0]!,
            gateScale: golden[`gate_scale.${i}`]!.data[0]!,
            outputScale: golden[`output_scale.${i}`]!.data,
            mixAlpha: golden[`mix_alpha.${i}`]!.data[0]!,
          })),
        };
        const vars = new AdapterVariables(adapter);
        try {
          const ctx: PassContext = {
            config: c,
            layers,
            opts: { layers: [0, 1], epochs: 1, lr: 1e-2, weightDecay: 0.01, gradClip: 1, batchSize: 1, input: mode, mlpGrad: kind, rest: 'engine', seed: 0, chunkSize },
            seqLen: ids.length,
            teacher: new Map(hidden.map((h, i) => [i, [h]])),
            studentStart: [hidden[0]!],
            rope: null,
          };
          const r = runPass(ctx, [0], vars, true);
          const refLoss = golden[`loss.${mode}`]!.data[0]!;
          expect(Math.abs(r.loss - refLoss) / refLoss).toBeLessThan(1e-4);
          let worstRel = 0;
          vars.names().forEach((name, k) => {
            const ref = golden[`grad.${mode}.${kind}.${name}`]!.data;
            const got = r.grads![k]!;
            expect(got.length).toBe(ref.length);
            for (let j = 0; j < ref.length; j++) {
              const err = Math.abs(got[j]! - ref[j]!);
              const rel = err / Math.abs(ref[j]!);
              if (!(rel <= 1e-3 || err <= 1e-6)) expect.fail(`${name}[${j}]: got ${got[j]}, golden ${ref[j]} (rel ${rel})`);
              if (Math.abs(ref[j]!) > 1e-4) worstRel = Math.max(worstRel, rel);
            }
          });
          // The finite differences are good to ~1e-4: entries of any size agree that well here.
          expect(worstRel).toBeLessThan(1e-3);
          // exact and detached really differ (the MLP term matters), so both kinds are tested.
          if (kind === 'exact') {
            const detached = golden[`grad.${mode}.detached.mix_alpha.0`]!.data[0]!;
            expect(Math.abs(r.grads![3]![0]! - detached)).toBeGreaterThan(1e-4);
          }
        } finally {
          vars.dispose();
          layers.dispose();
          w.close();
        }
      });
    }
  }
});

// ---------------------------------------------------------------------------------------------

describe('distill on a tiny model', () => {
  it('lowers the loss, changes only the adapter variables, and writes every output', async () => {
    const out = path.join(tmp, 'run-basic');
    const modelHashBefore = modelContentHash(TINY);
    const seenVariables: number[] = [];
    const r = await runDistill({
      ...tinyRun(out),
      verifyWeights: true,
      hooks: { beforeStep: () => void seenVariables.push(Object.keys(tf.engine().registeredVariables).length) },
    });
    // Only the 4 adapter tensors per trained layer are tf.Variables.
    expect(new Set(seenVariables)).toEqual(new Set([4 * 3]));
    // Weights on the backend bit-identical before/after, files untouched.
    expect(r.weightsFingerprint!.after).toBe(r.weightsFingerprint!.before);
    expect(modelContentHash(TINY)).toBe(modelHashBefore);

    const log = readTrainLog(r.logFile);
    expect(log.epochs.length).toBe(4);
    expect(log.steps.length).toBe(4 * Math.ceil(18 / 4));
    expect(log.epochs[3]!.trainLoss).toBeLessThan(log.epochs[0]!.trainLoss);
    const meanOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(meanOf(r.heldOutAfter)).toBeLessThan(meanOf(r.heldOutBefore));
    // lr follows the cosine over all 20 steps; grad norms are logged and finite.
    expect(log.steps[0]!.lr).toBe(1e-2);
    expect(log.steps[10]!.lr).toBeCloseTo(1e-2 * 0.5 * (1 + Math.cos((Math.PI * 10) / 20)), 12);
    expect(log.steps.every((s) => Number.isFinite(s.gradNorm) && s.gradNorm > 0)).toBe(true);

    // The exported adapter: readable, the best epoch's state, full provenance.
    const a = readAdapter(r.adapterDir);
    expect(a.layers).toEqual([0, 1, 2]);
    expect(a.params[0]!.outputScale.some((v) => v !== INITIAL_ADAPTER_VALUES.outputScale)).toBe(true);
    const cfg = a.config;
    expect(cfg.adapter_type).toBe('symbiotic_gate');
    expect(cfg.semantics).toBe('adapter-v1');
    expect(cfg.engine).toBe('SYNAXIM');
    expect(cfg.hidden_size).toBe(64);
    expect(cfg.num_parameters).toBe(3 * 67);
    expect(cfg.base_model_content_hash).toBe(modelHashBefore);
    expect(cfg.best_loss).toBe(r.bestLoss);
    expect(cfg.best_epoch).toBe(r.bestEpoch);
    expect((cfg.corpus as Record<string, unknown>).token_count).toBe(20 * 24);
    expect((cfg.corpus as Record<string, unknown>).source).toBe('builtin:default');
    expect((cfg.corpus as Record<string, unknown>).hash).toMatch(/^[0-9a-f]{64}$/);
    const training = cfg.training as Record<string, unknown>;
    for (const [k, v] of Object.entries({ epochs: 4, lr: 0.01, weight_decay: 0.01, grad_clip: 1, input: 'student', mlp_grad: 'exact', rest: 'engine', seed: 0, seq_len: 24, max_seqs: 20, schedule: 'cosine', optimizer: 'AdamW' })) {
      expect(training[k]).toEqual(v);
    }
    expect(cfg.backend).toBe('wasm');
    expect(typeof cfg.wall_time_s).toBe('number');
    expect(cfg.tool_version).toMatch(/^\d+\.\d+\.\d+/);

    // Report with rendered SVG charts and the before/after table.
    const md = fs.readFileSync(r.reportFile, 'utf8');
    expect(md).toMatch(/\| layer \| before \| after \| change \|/);
    expect(md).toMatch(/!\[loss curve\]\(loss_curve\.svg\)/);
    expect(fs.readFileSync(path.join(out, 'loss_curve.svg'), 'utf8')).toMatch(/^<svg/);
    expect(fs.readFileSync(path.join(out, 'loss_per_layer.svg'), 'utf8')).toMatch(/^<svg/);
    // No temp files left behind.
    expect(fs.readdirSync(out).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('--input teacher and --mlp-grad detached train too; streaming weights gives the same adapter', async () => {
    const over: Partial<DistillOptions> = { input: 'teacher', mlpGrad: 'detached', layers: [1, 3], epochs: 2 };
    const r = await runDistill(tinyRun(path.join(tmp, 'run-teacher'), over));
    const log = readTrainLog(r.logFile);
    expect(log.epochs[1]!.trainLoss).toBeLessThan(log.epochs[0]!.trainLoss);
    // One layer on the backend at a time (nothing resident) computes exactly the same.
    const streamed = await runDistill(tinyRun(path.join(tmp, 'run-teacher-streamed'), { ...over, residentBytes: 0 }));
    const bytes = (d: string) => fileBytes(path.join(d, 'adapter_model.safetensors'));
    expect(bytes(streamed.adapterDir).equals(bytes(r.adapterDir))).toBe(true);
  });

  it('student input through an untrained layer between trained ones (--rest fixed)', async () => {
    const r = await runDistill(tinyRun(path.join(tmp, 'run-gap'), { layers: [1, 3], rest: 'fixed', epochs: 2, residentBytes: 0 }));
    const log = readTrainLog(r.logFile);
    expect(log.epochs[1]!.trainLoss).toBeLessThan(log.epochs[0]!.trainLoss);
  });

  it('--epochs 0 exports the initial adapter', async () => {
    const r = await runDistill(tinyRun(path.join(tmp, 'run-zero'), { epochs: 0 }));
    const a = readAdapter(r.adapterDir);
    const init = initialAdapter([0, 1, 2], 64);
    expect(a.params.map((p) => [p.gateBias, p.gateScale, p.mixAlpha])).toEqual(init.params.map((p) => [p.gateBias, p.gateScale, p.mixAlpha]));
    expect(Array.from(a.params[1]!.outputScale)).toEqual(Array.from(init.params[1]!.outputScale));
    expect(r.heldOutAfter).toEqual(r.heldOutBefore);
    expect(typeof r.bestLoss).toBe('number');
  });

  it('`synaxim distill` parses its flags with the documented defaults', async () => {
    const out = path.join(tmp, 'run-cli');
    await yargs(['distill', '--model', TINY, '--layers', '0-1,3', '--epochs', '0', '--seq-len', '16', '--max-seqs', '8', '--out', out, '--backend', 'wasm'])
      .command(distillCommand)
      .strict()
      .fail((msg, e) => {
        throw e ?? new Error(msg);
      })
      .parseAsync();
    const a = readAdapter(path.join(out, 'symbiotic_adapter'));
    expect(a.layers).toEqual([0, 1, 3]);
    const t = a.config.training as Record<string, unknown>;
    expect([t.epochs, t.lr, t.weight_decay, t.input, t.mlp_grad, t.rest, t.seed, t.seq_len, t.grad_clip]).toEqual([0, 0.01, 0.01, 'student', 'exact', 'engine', 0, 16, 1]);
  });

  it('refuses to overwrite or to resume with other settings', async () => {
    const out = path.join(tmp, 'run-basic');
    await expect(runDistill(tinyRun(out))).rejects.toThrow(/a checkpoint of an earlier run is here; pass --resume/);
    await expect(runDistill(tinyRun(out, { resume: true, lr: 2e-2 }))).rejects.toThrow(/cannot resume with different settings \(lr:/);
    await expect(runDistill(tinyRun(path.join(tmp, 'nothing-here'), { resume: true }))).rejects.toThrow(/nothing to resume/);
  });

  it('stops at a non-finite loss, naming layer and step, and keeps the last good checkpoint', async () => {
    const out = path.join(tmp, 'run-nan');
    const poisonStep = 7; // in epoch 2 (5 steps per epoch)
    let err: unknown;
    try {
      await runDistill({
        ...tinyRun(out),
        hooks: { beforeStep: (step, params) => void (step === poisonStep && params[4 * 1 + 2]!.fill(Infinity)) }, // output_scale of layer 1
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SynaximError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/non-finite loss \(\w+\) in layer 1 at epoch 2, step 3\/5 \(global step 8\)/);
    expect(msg).toContain(path.join(out, CHECKPOINT_FILE));
    expect(msg.includes('\n')).toBe(false);
    const ck = loadCheckpoint(path.join(out, CHECKPOINT_FILE));
    expect(ck.epoch).toBe(1);
    expect(ck.params.every((p) => p.every(Number.isFinite))).toBe(true);
    expect(fs.existsSync(path.join(out, 'symbiotic_adapter'))).toBe(false);
  });

  it('caches teacher hidden states by content, safely under concurrent writers', async () => {
    const w = openModel(TINY);
    const seqs = [Int32Array.from({ length: 16 }, (_, i) => (i * 7 + 3) % 320), Int32Array.from({ length: 16 }, (_, i) => (i * 11 + 1) % 320)];
    const key = { modelHash: 'test-model', sequencesHash: hashSequences(seqs), seqLen: 16 };
    const root = path.join(tmp, 'cache-concurrent');
    // Two processes fill the same cache entry at the same time.
    const script = childScript(`
      const { teacherHiddenStates } = await import(${JSON.stringify(pathToFileURL(path.join(PROJECT_ROOT, 'src/distill/teacherCache.ts')).href)});
      const { openModel } = await import(${JSON.stringify(pathToFileURL(path.join(PROJECT_ROOT, 'src/formats/openModel.ts')).href)});
      const seqs = ${JSON.stringify(seqs.map((s) => Array.from(s)))}.map((s) => Int32Array.from(s));
      const r = await teacherHiddenStates(openModel(${JSON.stringify(TINY)}), seqs, [0, 1, 2, 3, 4], ${JSON.stringify(key)}, { root: ${JSON.stringify(root)} });
      process.stdout.write(String(r.fromCache.length));
    `);
    const [a, b] = await Promise.all([runChild(script), runChild(script)]);
    expect(a.code).toBe(0);
    expect(b.code).toBe(0);
    const fresh = await teacherHiddenStates(w, seqs, [0, 1, 2, 3, 4], key, { useCache: false });
    const cached = await teacherHiddenStates(w, seqs, [0, 1, 2, 3, 4], key, { root });
    expect(cached.fromCache).toEqual([0, 1, 2, 3, 4]);
    for (const i of [0, 1, 2, 3, 4]) for (const s of [0, 1]) expect(Array.from(cached.hidden.get(i)![s]!)).toEqual(Array.from(fresh.hidden.get(i)![s]!));
    expect(fs.readdirSync(cached.cacheDir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    // A corrupt entry is recomputed, not trusted.
    fs.writeFileSync(path.join(cached.cacheDir, 'hidden.2.safetensors'), 'garbage');
    const again = await teacherHiddenStates(w, seqs, [2], key, { root });
    expect(again.fromCache).toEqual([]);
    expect(Array.from(again.hidden.get(2)![1]!)).toEqual(Array.from(fresh.hidden.get(2)![1]!));
    w.close();
  });

  it('resumes after kill -9 and after Ctrl-C to the bit-identical adapter', async () => {
    const opts = { ...tinyRun(''), layers: [0, 1], seqLen: 16, epochs: 6, maxSeqs: 20 };
    const reference = await runDistill({ ...opts, out: path.join(tmp, 'run-uninterrupted') });
    const refBytes = fileBytes(path.join(reference.adapterDir, 'adapter_model.safetensors'));

    const out = path.join(tmp, 'run-killed');
    const script = childDistillScript({ ...opts, out });
    const logFile = path.join(out, 'train_log.jsonl');
    const stepLines = () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"type":"step"')).length : 0);

    const noFinishedOutputs = () => {
      for (const f of ['symbiotic_adapter', 'distill_report.md', 'loss_curve.svg']) expect(fs.existsSync(path.join(out, f)), f).toBe(false);
    };
    // 1. kill -9 in epoch 2 (after at least 7 of 30 steps: one epoch checkpoint exists).
    const first = await runChildUntil(script, () => stepLines() >= 7, 'SIGKILL');
    expect(first.signal).toBe('SIGKILL');
    expect(loadCheckpoint(path.join(out, CHECKPOINT_FILE)).epoch).toBeGreaterThanOrEqual(1);
    noFinishedOutputs();

    // 2. resume, kill -9 again later.
    const resumeScript = childDistillScript({ ...opts, out, resume: true });
    const again = await runChildUntil(resumeScript, () => stepLines() >= 13, 'SIGKILL');
    expect(again.signal).toBe('SIGKILL');
    expect(again.stderr).toMatch(/resuming from/);
    noFinishedOutputs();

    // 3. resume, then Ctrl-C (SIGINT) mid-way: a clean exit (130) that saves a checkpoint.
    const second = await runChildUntil(resumeScript, () => stepLines() >= 19, 'SIGINT');
    expect(second.code).toBe(130);
    expect(second.stderr).toMatch(/checkpoint saved/);
    expect(second.stderr).not.toMatch(/at .*\.ts:\d+/); // no stack trace
    const ck = loadCheckpoint(path.join(out, CHECKPOINT_FILE));
    expect(ck.globalStep).toBeGreaterThanOrEqual(19);
    expect(ck.globalStep).toBeLessThan(30);
    noFinishedOutputs();

    // 4. resume to the end in this process.
    const resumed = await runDistill({ ...opts, out, resume: true });
    expect(resumed.resumedFrom).not.toBeNull();
    expect(fileBytes(path.join(resumed.adapterDir, 'adapter_model.safetensors')).equals(refBytes)).toBe(true);
    expect(resumed.bestLoss).toBe(reference.bestLoss);
    // The log holds each step and epoch exactly once.
    const log = readTrainLog(resumed.logFile);
    expect(log.steps.map((s) => s.step)).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect(log.epochs.map((e) => e.epoch)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(log.steps.map((s) => s.loss)).toEqual(readTrainLog(reference.logFile).steps.map((s) => s.loss));
    // Nothing left over from the killed processes.
    expect(fs.readdirSync(out).filter((f) => f.startsWith('.'))).toEqual([]);
  });

  it('--loss mse+kl resumes after kill -9 in either phase to the bit-identical adapter', async () => {
    // 18 train sequences, batch 4: 5 steps per epoch; 2 MSE epochs then 3 KL epochs (25 steps).
    const opts = { ...tinyRun(''), layers: [0, 1], seqLen: 16, epochs: 2, maxSeqs: 20, loss: 'mse+kl' as const, klEpochs: 3, patience: 0 };
    const reference = await runDistill({ ...opts, out: path.join(tmp, 'run-kl-uninterrupted') });
    const out = path.join(tmp, 'run-kl-killed');
    const logFile = path.join(out, 'train_log.jsonl');
    const stepLines = () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"type":"step"')).length : 0);
    const first = await runChildUntil(childDistillScript({ ...opts, out }), () => stepLines() >= 7, 'SIGKILL'); // MSE phase, epoch 2
    expect(first.signal).toBe('SIGKILL');
    const resumeScript = childDistillScript({ ...opts, out, resume: true });
    const again = await runChildUntil(resumeScript, () => stepLines() >= 17, 'SIGKILL'); // KL phase, epoch 4
    expect(again.signal).toBe('SIGKILL');
    expect(loadCheckpoint(path.join(out, CHECKPOINT_FILE)).phase).toBe(1);
    const resumed = await runDistill({ ...opts, out, resume: true });
    const bytes = (d: string) => fileBytes(path.join(d, 'adapter_model.safetensors'));
    expect(bytes(resumed.adapterDir).equals(bytes(reference.adapterDir))).toBe(true);
    expect(resumed.bestLoss).toBe(reference.bestLoss);
    expect(resumed.heldOutKl).toEqual(reference.heldOutKl);
    const log = readTrainLog(resumed.logFile);
    expect(log.steps.map((s) => s.step)).toEqual(Array.from({ length: 25 }, (_, i) => i));
    expect(log.steps.map((s) => s.loss)).toEqual(readTrainLog(reference.logFile).steps.map((s) => s.loss));
    expect(log.epochs.map((e) => e.objective)).toEqual(['mse', 'mse', 'kl', 'kl', 'kl']);
  });

  it('one run per output directory; a dead owner\'s lock is taken over', () => {
    const dir = path.join(tmp, 'locked');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, LOCK_FILE), String(process.ppid)); // a live process
    expect(() => acquireDirLock(dir)).toThrow(new RegExp(`another distill run \\(pid ${process.ppid}\\) is writing this directory`));
    fs.writeFileSync(path.join(dir, LOCK_FILE), '2147480000'); // no such process
    fs.writeFileSync(path.join(dir, '.checkpoint.safetensors.tmp-2147480000-3'), 'partial');
    const release = acquireDirLock(dir);
    expect(removeStaleTemps(dir)).toBe(1);
    expect(fs.readFileSync(path.join(dir, LOCK_FILE), 'utf8')).toBe(String(process.pid));
    release();
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

describe.skipIf(!sharedAvailable())('stories260k (a real trained model)', () => {
  it('a short distill of layers 0-4 lowers every layer\'s held-out MSE', async () => {
    const dir = path.join(SHARED_DIR, 'models', 'stories260k');
    const r = await runDistill({
      model: dir,
      layers: [0, 1, 2, 3, 4],
      corpus: path.join(dir, 'corpus', 'calibration.jsonl'),
      seqLen: 64,
      maxSeqs: 24,
      epochs: 2,
      lr: 1e-2,
      batchSize: 8,
      input: 'student',
      mlpGrad: 'exact',
      rest: 'engine',
      seed: 0,
      out: path.join(tmp, 'run-stories'),
      cacheRoot: CACHE,
      quiet: true,
    });
    r.heldOutAfter.forEach((after, i) => expect(after, `layer ${i}`).toBeLessThan(r.heldOutBefore[i]!));
    const cfg = readAdapter(r.adapterDir).config;
    expect(cfg.base_model_dir).toBe(path.join(dir, 'symb-int4'));
    expect(cfg.teacher_dir).toBe(path.join(dir, 'hf'));
  });
});

// ---------------------------------------------------------------------------------------------
// Child processes: the same code run as a separate `node` process (killable).

function childScript(body: string): string {
  const tsx = pathToFileURL(path.join(PROJECT_ROOT, 'node_modules', 'tsx', 'dist', 'esm', 'api', 'index.mjs')).href;
  return `import { register } from ${JSON.stringify(tsx)}; register();
const { initBackend } = await import(${JSON.stringify(pathToFileURL(path.join(PROJECT_ROOT, 'src/runtime/backend.ts')).href)});
await initBackend('wasm');
${body}`;
}

function childDistillScript(opts: DistillOptions): string {
  return childScript(`
    const { runDistill } = await import(${JSON.stringify(pathToFileURL(path.join(PROJECT_ROOT, 'src/distill/run.ts')).href)});
    const { reportError } = await import(${JSON.stringify(pathToFileURL(path.join(PROJECT_ROOT, 'src/cli/main.ts')).href)});
    try { await runDistill(${JSON.stringify({ ...opts, quiet: false })}); } catch (e) { process.exitCode = reportError(e, false); }
  `);
}

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function startChild(script: string): { child: ChildProcess; done: Promise<ChildResult> } {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: PROJECT_ROOT, env: { ...process.env, SYNAXIM_CACHE: CACHE }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<ChildResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done };
}

function runChild(script: string): Promise<ChildResult> {
  return startChild(script).done;
}

/** Run a child until `ready()` holds (polled), then send it `signal`; fails if it ends first. */
async function runChildUntil(script: string, ready: () => boolean, signal: NodeJS.Signals): Promise<ChildResult> {
  const { child, done } = startChild(script);
  let finished = false;
  void done.then(() => (finished = true));
  while (!finished && !ready()) await new Promise((r) => setTimeout(r, 5));
  if (finished) {
    const r = await done;
    throw new Error(`child finished before it could be interrupted (code ${r.code}): ${r.stderr.slice(-500)}`);
  }
  child.kill(signal);
  return done;
}
