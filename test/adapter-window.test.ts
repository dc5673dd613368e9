/**
 * adapter-window (softmax over the last W positions + the adapter-v1 gate, mixed by σ(window_mix)):
 * the tfjs layer against the float64 reference (src/model/adapterWindow.naive.ts), the gradient of
 * window_mix against central differences of that reference, recurrent decoding (gate state + last
 * W keys/values) against prefill, the adapter files (write/read, errors), the memory accounting,
 * and `distill --student adapter-window` end to end.
 */
import * as tf from '@tensorflow/tfjs-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { disposeLayer, uploadLayer } from '../src/model/nn.ts';
import { readAdapter, writeAdapter, initialAdapter, adapterParameterCount, INITIAL_WINDOW_MIX, type Adapter, type AdapterLayerParams } from '../src/formats/adapter.ts';
import { naiveAdapterWindowBlock } from '../src/model/adapterWindow.naive.ts';
import { adapterWindowBytesPerLayer, gateStateBytesPerLayer, kvBytesPerTokenPerLayer, memoryAtLength } from '../src/engine/memory.ts';
import { disposePolicy, studentAttention, StudentDecoder, studentPrefill, type AdapterPolicy } from '../src/engine/student.ts';
import { writeFixtureHf } from '../src/formats/fixture.ts';
import { openModel } from '../src/formats/openModel.ts';
import type { ModelWeights } from '../src/formats/weights.ts';
import { readTrainLog, runDistill } from '../src/distill/run.ts';
import { randoms, relRms } from './helpers/numeric.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-adapter-window-'));
const TINY = path.join(tmp, 'tiny-hf');
let model: ModelWeights;
afterAll(() => {
  model?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

beforeAll(async () => {
  await initBackend('wasm');
  writeFixtureHf('tiny', TINY);
  model = openModel(TINY);
});

function params(hidden: number, windowMix: number): AdapterLayerParams {
  return { gateBias: 0.4, gateScale: 1.7, outputScale: Float32Array.from(randoms(hidden, 5), (u) => 0.1 + 0.3 * u), mixAlpha: -0.3, windowMix };
}

function policyOf(p: AdapterLayerParams, window: number, windowMix: tf.Scalar = tf.scalar(p.windowMix!)): AdapterPolicy {
  return { kind: 'adapter', gateBias: tf.scalar(p.gateBias), gateScale: tf.scalar(p.gateScale), outputScale: tf.tensor1d(p.outputScale), mixAlpha: tf.scalar(p.mixAlpha), window, windowMix };
}

describe('adapter-window layer = float64 reference', () => {
  for (const [window, windowMix] of [
    [4, 0.7],
    [3, -1.2],
    [64, 0.1], // W ≥ T: the window part is plain causal softmax attention
  ] as const) {
    it(`W ${window}, window_mix ${windowMix}: outputs within 1e-4 relative (chunk sizes 5 and 64)`, () => {
      const c = model.config;
      const T = 17;
      const x = randoms(T * c.hiddenSize, 99, 1.5);
      const p = params(c.hiddenSize, windowMix);
      const ref = naiveAdapterWindowBlock(x, model.layer(1), c, p, window);
      const layer = uploadLayer(model.layer(1));
      const policy = policyOf(p, window);
      const xT = tf.tensor2d(x, [T, c.hiddenSize]);
      try {
        for (const chunkSize of [5, 64]) {
          const got = studentAttention(xT, layer, c, policy, { chunkSize });
          expect(relRms(got.dataSync() as Float32Array, ref), `chunk ${chunkSize}`).toBeLessThan(1e-4);
          const maxRef = Math.max(...Array.from(ref, Math.abs));
          const d = got.dataSync() as Float32Array;
          for (let i = 0; i < d.length; i++) expect(Math.abs(d[i]! - ref[i]!)).toBeLessThan(1e-4 * maxRef);
          got.dispose();
        }
      } finally {
        xT.dispose();
        disposePolicy(policy);
        disposeLayer(layer);
      }
    });
  }

  it('d/d window_mix of a weighted sum of the outputs = central differences of the float64 reference', () => {
    const c = model.config;
    const T = 11;
    const window = 4;
    const x = randoms(T * c.hiddenSize, 3, 1.5);
    const weights = randoms(T * c.hiddenSize, 4, 1);
    const layer = uploadLayer(model.layer(0));
    for (const wm of [0.3, -2.0]) {
      const p = params(c.hiddenSize, wm);
      const variable = tf.variable(tf.scalar(wm));
      const policy = policyOf(p, window, variable);
      const xT = tf.tensor2d(x, [T, c.hiddenSize]);
      const wT = tf.tensor2d(weights, [T, c.hiddenSize]);
      const { grads } = tf.variableGrads(() => tf.sum(tf.mul(studentAttention(xT, layer, c, policy, { chunkSize: 4 }), wT)) as tf.Scalar, [variable]);
      const analytic = (grads[variable.name]!.dataSync() as Float32Array)[0]!;
      const f = (v: number) => naiveAdapterWindowBlock(x, model.layer(0), c, { ...p, windowMix: v }, window).reduce((acc, o, i) => acc + o * weights[i]!, 0);
      const h = 1e-4;
      const fd = (f(wm + h) - f(wm - h)) / (2 * h);
      expect(Math.abs(analytic - fd) / Math.abs(fd)).toBeLessThan(1e-4);
      Object.values(grads).forEach((g) => g.dispose());
      xT.dispose();
      wT.dispose();
      variable.dispose();
      disposePolicy({ ...policy, windowMix: undefined });
    }
    disposeLayer(layer);
  });
});

function windowAdapter(layers: number[], window: number, seed: number): Adapter {
  const a = initialAdapter(layers, model.config.hiddenSize, window);
  a.params.forEach((p, i) => {
    p.gateBias = 0.2 * (i + 1);
    p.windowMix = (seed + i) % 2 === 0 ? 0.8 : -0.5;
    p.outputScale = Float32Array.from(randoms(model.config.hiddenSize, seed + i), (u) => 0.1 + 0.2 * u);
  });
  return a;
}

describe('adapter-window decoding and files', () => {
  it('the recurrent decoder (gate state + last W keys/values) gives the prefill logits', () => {
    const adapter = windowAdapter([0, 2], 3, 1);
    const ids = [1, 17, 42, 5, 99, 23, 7, 64, 11, 3];
    const pre = studentPrefill(model, [ids], { adapter, rest: 'engine' }).logits[0]!;
    const V = model.config.vocabSize;
    const dec = new StudentDecoder(model, { adapter, rest: 'engine' });
    try {
      const steps: Float32Array[] = ids.map((id) => dec.step(id));
      steps.forEach((row, t) => expect(relRms(row, pre.subarray(t * V, (t + 1) * V)), `position ${t}`).toBeLessThan(1e-4));
      // Prefill of 4 tokens, then one at a time: the same.
      dec.reset();
      const first = dec.prefill(ids.slice(0, 4));
      expect(relRms(first, pre.subarray(3 * V, 4 * V))).toBeLessThan(1e-4);
      for (let t = 4; t < ids.length; t++) expect(relRms(dec.step(ids[t]!), pre.subarray(t * V, (t + 1) * V))).toBeLessThan(1e-4);
    } finally {
      dec.dispose();
    }
  });

  it('writes adapter_type adapter-window, window and window_mix.i; reads them back; refuses inconsistent files', async () => {
    const adapter = windowAdapter([1, 3], 4, 2);
    const dir = path.join(tmp, 'adapter-w4');
    await writeAdapter(dir, adapter);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect([cfg.adapter_type, cfg.semantics, cfg.window, cfg.num_parameters]).toEqual(['adapter-window', 'adapter-window-v1', 4, 2 * (4 + 64)]);
    const back = readAdapter(dir, model.config);
    expect(back.window).toBe(4);
    expect(back.params.map((p) => p.windowMix)).toEqual(adapter.params.map((p) => Math.fround(p.windowMix!)));
    expect(adapterParameterCount(back)).toBe(2 * 68);
    // window missing / not an integer, and window_mix in an adapter-v1 file: one-line errors naming the file.
    const bad = (name: string, edit: (c: Record<string, unknown>) => void) => {
      const d = path.join(tmp, name);
      fs.cpSync(dir, d, { recursive: true });
      const f = path.join(d, 'adapter_config.json');
      const c = JSON.parse(fs.readFileSync(f, 'utf8')) as Record<string, unknown>;
      edit(c);
      fs.writeFileSync(f, JSON.stringify(c));
      return d;
    };
    expect(() => readAdapter(bad('no-window', (c) => delete c.window))).toThrow(/'window' must be a positive integer for adapter-window, got undefined/);
    expect(() => readAdapter(bad('v1-with-mix', (c) => ((c.adapter_type = 'symbiotic_gate'), (c.semantics = 'adapter-v1'), delete c.window)))).toThrow(/unexpected tensor 'window_mix\.0'/);
    expect(() => readAdapter(bad('mixed', (c) => (c.semantics = 'adapter-v1')))).toThrow(/adapter_type "adapter-window" and semantics "adapter-v1" disagree/);
  });

  it('memory: a layer keeps the D_q² state and min(T, W) positions of keys/values', () => {
    const c = model.config;
    expect(adapterWindowBytesPerLayer(c, 4, 128)).toBe(gateStateBytesPerLayer(c) + 4 * kvBytesPerTokenPerLayer(c));
    expect(adapterWindowBytesPerLayer(c, 4, 2)).toBe(gateStateBytesPerLayer(c) + 2 * kvBytesPerTokenPerLayer(c));
    const m = memoryAtLength(c, 512, { adapterWindow: 4 });
    expect(m.studentStateBytes).toBe(c.numLayers * (gateStateBytesPerLayer(c) + 4 * kvBytesPerTokenPerLayer(c)));
  });
});

describe('distill --student adapter-window', () => {
  it('trains window_mix with the rest, exports the adapter-window semantics, and the student reads it back', async () => {
    const r = await runDistill({
      model: TINY,
      layers: [0, 1, 2, 3],
      seqLen: 24,
      maxSeqs: 20,
      epochs: 2,
      lr: 3e-2,
      batchSize: 4,
      input: 'student',
      mlpGrad: 'exact',
      rest: 'engine',
      seed: 0,
      student: 'adapter-window',
      window: 4,
      loss: 'kl',
      out: path.join(tmp, 'distill-w4'),
      cacheRoot: path.join(tmp, 'cache'),
      quiet: true,
    });
    expect(r.heldOutKl!.after!).toBeLessThan(r.heldOutKl!.before!);
    const a = readAdapter(r.adapterDir, model.config);
    expect(a.window).toBe(4);
    expect(a.config.adapter_type).toBe('adapter-window');
    expect((a.config.training as Record<string, unknown>).student).toBe('adapter-window');
    expect(a.params.some((p) => p.windowMix !== INITIAL_WINDOW_MIX)).toBe(true);
    expect(readTrainLog(r.logFile).epochs.length).toBe(2);
    // eval/forward/generate go through studentPrefill / StudentDecoder with the adapter as read.
    const logits = studentPrefill(model, [[1, 5, 9, 13]], { adapter: a }).logits[0]!;
    expect(logits.every(Number.isFinite)).toBe(true);
  });

  it('refuses --student adapter-window without --window, and --window without it', async () => {
    const base = { model: TINY, layers: [0], seqLen: 16, maxSeqs: 4, epochs: 1, lr: 1e-2, batchSize: 2, input: 'student' as const, mlpGrad: 'exact' as const, rest: 'engine' as const, seed: 0, quiet: true, cacheRoot: path.join(tmp, 'cache') };
    await expect(runDistill({ ...base, out: path.join(tmp, 'bad-w1'), student: 'adapter-window' })).rejects.toThrow(/--student adapter-window needs --window W/);
    await expect(runDistill({ ...base, out: path.join(tmp, 'bad-w2'), window: 4 })).rejects.toThrow(/--window sets the window of --student adapter-window/);
  });
});
