/**
 * `distill --loss kl|mse+kl` and the held-out best epoch: the sliced logit KL and its hand-written
 * gradient against a float64 reference; the end-to-end pass's gradient against central
 * differences; training lowers the held-out KLD; mse+kl warm-starts the KL phase from the MSE
 * phase's best; the best epoch is chosen by the held-out metric and named in the outputs;
 * --patience stops a phase.
 */
import * as tf from '@tensorflow/tfjs-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { ropeCosSin, uploadMatrix } from '../src/model/nn.ts';
import { initialAdapter, readAdapter } from '../src/formats/adapter.ts';
import { writeFixtureHf } from '../src/formats/fixture.ts';
import { openModel } from '../src/formats/openModel.ts';
import { teacherPrefill } from '../src/teacher/teacher.ts';
import { disposeKlTarget, klTarget, logitKl, logitKlPerPosition, logSoftmaxRows, type VocabSlice } from '../src/distill/klLoss.ts';
import { distillPhases, readTrainLog, runDistill, type DistillOptions } from '../src/distill/run.ts';
import { AdapterVariables, flatFromAdapter, LayerSource, phaseAtEpoch, runKlPass, type PassContext } from '../src/distill/train.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-distill-kl-'));
const CACHE = path.join(tmp, 'cache');
const TINY = path.join(tmp, 'tiny-hf');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  await initBackend('wasm');
  writeFixtureHf('tiny', TINY);
  process.env.SYNAXIM_CACHE = CACHE;
});

function tinyRun(out: string, over: Partial<DistillOptions> = {}): DistillOptions {
  return {
    model: TINY,
    layers: [0, 1, 2],
    seqLen: 24,
    maxSeqs: 20,
    epochs: 3,
    lr: 3e-2,
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

/** A small deterministic pseudo-random stream. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

describe('logit KL (sliced, hand-written gradient) against float64', () => {
  it('value and d/dx match the float64 reference over three vocabulary slices', () => {
    const T = 5;
    const D = 6;
    const V = 11;
    const r = rng(7);
    const x = Float64Array.from({ length: T * D }, () => 2 * r());
    const W = Float64Array.from({ length: V * D }, () => 2 * r()); // lm_head rows [V, D]
    const teacherLogits = Float32Array.from({ length: T * V }, () => 4 * r());
    const logProbs = logSoftmaxRows(teacherLogits, T, V);
    // float64 reference: KL_t = Σ p (log p − log q), dKL/dx_t = Σ_v (q_v − p_v) W_v / T (mean over t).
    let refKl = 0;
    const refGrad = new Float64Array(T * D);
    for (let t = 0; t < T; t++) {
      const z = Array.from({ length: V }, (_, v) => {
        let acc = 0;
        for (let d = 0; d < D; d++) acc += x[t * D + d]! * W[v * D + d]!;
        return acc;
      });
      const m = Math.max(...z);
      const lse = m + Math.log(z.reduce((a, b) => a + Math.exp(b - m), 0));
      for (let v = 0; v < V; v++) {
        const lp = logProbs[t * V + v]!;
        const p = Math.exp(lp);
        const q = Math.exp(z[v]! - lse);
        refKl += (p * (lp - (z[v]! - lse))) / T;
        for (let d = 0; d < D; d++) refGrad[t * D + d]! += ((q - p) * W[v * D + d]!) / T;
      }
    }
    const slices: VocabSlice[] = [
      [0, 4],
      [4, 4],
      [8, 3],
    ].map(([start, count]) => ({ start: start!, count: count!, w: uploadMatrix({ data: Float32Array.from(W.subarray(start! * D, (start! + count!) * D)), rows: count!, cols: D }) }));
    const target = klTarget(logProbs, T, V, slices);
    const xt = tf.tensor2d(Float32Array.from(x), [T, D]);
    const value = (logitKl(xt, slices, target).dataSync() as Float32Array)[0]!;
    expect(Math.abs(value - refKl) / refKl).toBeLessThan(1e-5);
    const perPos = logitKlPerPosition(xt, slices, target).dataSync() as Float32Array;
    expect(Math.abs(perPos.reduce((a, b) => a + b, 0) / T - refKl) / refKl).toBeLessThan(1e-5);
    const g = tf.grad((a: tf.Tensor) => logitKl(a as tf.Tensor2D, slices, target))(xt).dataSync() as Float32Array;
    let err = 0;
    let norm = 0;
    for (let i = 0; i < g.length; i++) {
      err = Math.max(err, Math.abs(g[i]! - refGrad[i]!));
      norm = Math.max(norm, Math.abs(refGrad[i]!));
    }
    expect(err / norm).toBeLessThan(1e-5);
    disposeKlTarget(target);
    slices.forEach((s) => s.w.dispose());
    xt.dispose();
  });
});

describe('end-to-end KL pass', () => {
  it('its gradient into every adapter parameter kind matches central differences (float64 loss sums)', () => {
    const w = openModel(TINY);
    const c = w.config;
    const T = 12;
    const seqs = [Int32Array.from({ length: T }, (_, i) => (i * 37 + 5) % c.vocabSize), Int32Array.from({ length: T }, (_, i) => (i * 11 + 3) % c.vocabSize)];
    const logits = teacherPrefill(w, seqs.map((s) => Array.from(s)), { logits: true }).logits;
    const slices: VocabSlice[] = [{ start: 0, count: c.vocabSize, w: uploadMatrix(w.lmHeadRows(0, c.vocabSize)) }];
    const layers = new LayerSource(w, Array.from({ length: c.numLayers }, (_, l) => l), Infinity);
    const rope = ropeCosSin(c, Array.from({ length: T }, (_, i) => i));
    const trained = [0, 2];
    const ctx: PassContext = {
      config: c,
      layers,
      opts: { layers: trained, epochs: 1, lr: 1e-2, weightDecay: 0.01, gradClip: 1, batchSize: 2, input: 'student', mlpGrad: 'exact', rest: 'engine', seed: 0 },
      seqLen: T,
      teacher: new Map(),
      studentStart: null,
      rope: null,
      kl: {
        layers,
        finalNorm: tf.tensor1d(w.finalNorm()),
        slices,
        embeddings: seqs.map((s) => w.embed(s)),
        // The teacher here is the model with softmax attention; the student gates layers 0 and 2.
        logProbs: logits.map((z) => logSoftmaxRows(z, T, c.vocabSize)),
        rope,
      },
    };
    const init = initialAdapter(trained, c.hiddenSize);
    init.params[0]!.gateBias = 0.3;
    init.params[1]!.mixAlpha = -0.2;
    const flat = flatFromAdapter(init);
    const vars = new AdapterVariables(init);
    try {
      const r = runKlPass(ctx, [0, 1], vars, true);
      expect(r.loss).toBeGreaterThan(0);
      // Central differences on gate_bias.0, gate_scale.1, output_scale.0[3], mix_alpha.1.
      const probes: [number, number][] = [
        [0, 0],
        [5, 0],
        [2, 3],
        [7, 0],
      ];
      for (const [k, i] of probes) {
        const h = 1e-2;
        const at = (delta: number) => {
          const p = flat.map((a) => a.slice());
          p[k]![i] = p[k]![i]! + delta;
          vars.assign(p);
          return runKlPass(ctx, [0, 1], vars, false).loss;
        };
        const fd = (at(h) - at(-h)) / (2 * h);
        const analytic = r.grads![k]![i]!;
        expect(Math.abs(analytic - fd), `param ${k}[${i}]: ${analytic} vs ${fd}`).toBeLessThan(2e-3 + 2e-2 * Math.abs(fd));
      }
      // Nothing flows into the layers' weights: the only variables are the adapter's.
      expect(Object.keys(tf.engine().registeredVariables).length).toBe(4 * trained.length);
    } finally {
      vars.dispose();
      layers.dispose();
      ctx.kl!.finalNorm.dispose();
      slices[0]!.w.dispose();
      rope.cos.dispose();
      rope.sin.dispose();
      w.close();
    }
  });
});

describe('distill --loss kl / mse+kl on a tiny model', () => {
  it('--loss kl lowers the held-out KLD and names the metric that chose the best epoch', async () => {
    const r = await runDistill(tinyRun(path.join(tmp, 'kl'), { loss: 'kl' }));
    expect(r.heldOutKl!.after!).toBeLessThan(r.heldOutKl!.before!);
    const log = readTrainLog(r.logFile);
    expect(log.epochs.map((e) => e.objective)).toEqual(['kl', 'kl', 'kl']);
    // The best epoch is the one with the lowest held-out KLD, and its value is the best loss.
    const held = log.epochs.map((e) => e.heldOutLoss!);
    expect(r.bestEpoch).toBe(held.indexOf(Math.min(...held)));
    expect(r.bestLoss).toBe(Math.min(...held));
    expect(r.heldOutKl!.after).toBeCloseTo(r.bestLoss!, 5);
    const cfg = readAdapter(r.adapterDir).config;
    expect(cfg.best_epoch_selected_by).toBe('held-out KLD');
    expect((cfg.held_out_kld as { after: number }).after).toBe(r.heldOutKl!.after);
    const training = cfg.training as Record<string, unknown>;
    expect(training.loss).toBe('kl');
    expect(training.best_epoch_selected_by).toBe('held-out KLD');
    const md = fs.readFileSync(r.reportFile, 'utf8');
    expect(md).toMatch(/chosen by held-out KLD/);
    expect(md).toMatch(/\| held-out KLD \| \d+\.\d+ → \d+\.\d+ nats per token/);
  });

  it('--loss mse picks the best epoch by held-out MSE, not by train loss', async () => {
    const r = await runDistill(tinyRun(path.join(tmp, 'mse'), { epochs: 4 }));
    const log = readTrainLog(r.logFile);
    const held = log.epochs.map((e) => e.heldOutLoss!);
    expect(r.bestEpoch).toBe(held.indexOf(Math.min(...held)));
    expect(readAdapter(r.adapterDir).config.best_epoch_selected_by).toBe('held-out MSE');
    expect(r.heldOutKl).toBeNull();
  });

  it('mse+kl: the KL phase starts from the MSE phase\'s best parameters with its own schedule', async () => {
    const seen = new Map<number, Float32Array[]>();
    const r = await runDistill({
      ...tinyRun(path.join(tmp, 'mse-kl'), { loss: 'mse+kl', epochs: 2, klEpochs: 2, klLr: 5e-2 }),
      hooks: { beforeStep: (step, params) => void seen.set(step, params.map((p) => p.slice())) },
    });
    const log = readTrainLog(r.logFile);
    expect(log.epochs.map((e) => e.objective)).toEqual(['mse', 'mse', 'kl', 'kl']);
    const perEpoch = 5; // 18 train sequences, batch 4
    // Step 0 of each phase runs at the phase's own base learning rate.
    expect(log.steps[0]!.lr).toBe(3e-2);
    expect(log.steps[2 * perEpoch]!.lr).toBe(5e-2);
    // The KL phase's first step sees the MSE phase's best epoch's parameters (the checkpoint's best).
    const mseHeld = log.epochs.slice(0, 2).map((e) => e.heldOutLoss!);
    const bestMse = mseHeld.indexOf(Math.min(...mseHeld));
    const bestParams = bestMse === 1 ? seen.get(2 * perEpoch)! : seen.get(perEpoch)!; // params at the start of the epoch after the best one
    expect(seen.get(2 * perEpoch)!.map((p) => Array.from(p))).toEqual(bestParams.map((p) => Array.from(p)));
    const cfg = readAdapter(r.adapterDir).config;
    expect(cfg.best_epoch_selected_by).toBe('held-out KLD');
    expect((cfg.training as Record<string, unknown>).phase_bests).toEqual([{ phase: 0, epoch: bestMse, loss: Math.min(...mseHeld), metric: 'held-out MSE' }]);
    expect(r.bestEpoch).toBeGreaterThanOrEqual(2);
    expect(distillPhases({ loss: 'mse+kl', epochs: 30, lr: 1e-2 }).map((p) => [p.loss, p.epochs])).toEqual([
      ['mse', 30],
      ['kl', 5],
    ]);
    expect(phaseAtEpoch(distillPhases({ loss: 'mse+kl', epochs: 2, lr: 1e-2, klEpochs: 3 }), 4)).toEqual({ index: 1, start: 2, end: 5 });
  });

  it('--patience stops a phase whose held-out metric does not improve', async () => {
    // lr so small that float32 parameters never move: the held-out MSE stays equal, never better.
    const r = await runDistill(tinyRun(path.join(tmp, 'patience'), { epochs: 6, lr: 1e-12, patience: 2 }));
    const log = readTrainLog(r.logFile);
    expect(log.epochs.map((e) => e.epoch)).toEqual([0, 1, 2]);
    expect(log.epochs[2]!.earlyStop).toBe(true);
    expect(r.bestEpoch).toBe(0);
    const training = readAdapter(r.adapterDir).config.training as Record<string, unknown>;
    expect(training.stopped_early_after_epoch).toEqual([2]);
    expect(fs.readFileSync(r.reportFile, 'utf8')).toMatch(/\| early stop \| after epoch 3 \(--patience\) \|/);
    // patience 0: never stops.
    const all = await runDistill(tinyRun(path.join(tmp, 'patience-0'), { epochs: 4, lr: 1e-12, patience: 0 }));
    expect(readTrainLog(all.logFile).epochs.length).toBe(4);
  });

  it('refuses KL-phase flags without mse+kl and bad --loss / --patience values', async () => {
    await expect(runDistill(tinyRun(path.join(tmp, 'bad1'), { klEpochs: 2 }))).rejects.toThrow(/--kl-epochs and --kl-lr set the KL phase of --loss mse\+kl/);
    await expect(runDistill(tinyRun(path.join(tmp, 'bad2'), { loss: 'ce' as never }))).rejects.toThrow(/--loss must be one of mse, kl, mse\+kl/);
    await expect(runDistill(tinyRun(path.join(tmp, 'bad3'), { patience: -1 }))).rejects.toThrow(/--patience must be a non-negative integer/);
  });
});
