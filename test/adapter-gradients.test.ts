/**
 * The distill loss's gradients w.r.t. the adapter parameters (gate_bias, gate_scale, output_scale,
 * mix_alpha, and window_mix for adapter-window), as training computes them (tfjs autodiff through
 * runPass, src/distill/train.ts), against central differences of the same loss computed in float64
 * by the slow reference layer (src/model/decoderLayer.naive.ts). Runs on a small random model built
 * here: no ../shared needed.
 *
 *   loss = mean over trained layers l and sequences s of MSE(layer_l(h_{l,s}; θ_l), target_{l+1,s})
 *
 * (`--input teacher`: each trained layer reads the teacher's hidden state, so θ_l reaches only
 * layer l's term), and for `--loss kl`
 *
 *   loss = mean over sequences and positions of KL(teacher ‖ softmax(lm_head(norm(student(embeddings; θ)))))
 *
 * through the whole student (untrained layers `--rest engine`), whose lm_head gradient is
 * hand-written (src/distill/klLoss.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { writeFixtureHf } from '../src/formats/fixture.ts';
import { openModel } from '../src/formats/openModel.ts';
import type { ModelWeights } from '../src/formats/weights.ts';
import type { Adapter, AdapterLayerParams } from '../src/formats/adapter.ts';
import { naiveDecoderLayer } from '../src/model/decoderLayer.naive.ts';
import { ropeCosSin, uploadMatrix } from '../src/model/nn.ts';
import { AdapterVariables, LayerSource, runKlPass, runPass, type PassContext, type TrainOptions } from '../src/distill/train.ts';
import { logSoftmaxRows, type VocabSlice } from '../src/distill/klLoss.ts';
import * as tf from '@tensorflow/tfjs-core';
import { randoms, relRms } from './helpers/numeric.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-adapter-gradients-'));
let weights: ModelWeights;

beforeAll(async () => {
  await initBackend('wasm');
  writeFixtureHf('tiny', path.join(tmp, 'hf'), 5); // hidden 64, 4 layers, 8 query / 4 kv heads, F32
  weights = openModel(path.join(tmp, 'hf'));
});
afterAll(() => {
  weights?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const T = 12;
const SEQUENCES = [0, 1];
const LAYERS = [1, 3];

/** Teacher hidden states h_l (l = 1..4) per sequence: the residual stream's scale (entries ~±1). */
function teacherStates(hidden: number): Map<number, Float32Array[]> {
  const m = new Map<number, Float32Array[]>();
  for (let l = 1; l <= 4; l++) m.set(l, SEQUENCES.map((s) => randoms(T * hidden, 1000 * l + s)));
  return m;
}

/** Away from the initial values (0, 1, 0.1, 0.5), different per layer, so no term is special. */
function adapterOf(hidden: number, window: number | null): Adapter {
  const params: AdapterLayerParams[] = LAYERS.map((l, i) => ({
    gateBias: 0.3 - 0.5 * i,
    gateScale: 1.2 + 0.3 * i,
    outputScale: Float32Array.from(randoms(hidden, 77 + l), (u) => 0.4 + 0.3 * u),
    mixAlpha: 0.2 + 0.4 * i,
    ...(window !== null ? { windowMix: -0.3 + 0.8 * i } : {}),
  }));
  return { layers: LAYERS, hiddenSize: hidden, params, config: {}, ...(window !== null ? { window } : {}) };
}

function trainOptions(window: number | null): TrainOptions {
  return {
    layers: LAYERS, epochs: 1, lr: 1e-3, weightDecay: 0, gradClip: 1, batchSize: SEQUENCES.length,
    input: 'teacher', mlpGrad: 'exact', rest: 'engine', seed: 0, chunkSize: 5, window,
  };
}

const PARAM_NAMES = ['gate_bias', 'gate_scale', 'output_scale', 'mix_alpha', 'window_mix'] as const;

/** Parameter k (AdapterVariables' order: gate_bias, gate_scale, output_scale, mix_alpha, window_mix), entry i. */
function getParam(p: AdapterLayerParams, k: number, i: number): number {
  return k === 0 ? p.gateBias : k === 1 ? p.gateScale : k === 2 ? p.outputScale[i]! : k === 3 ? p.mixAlpha : p.windowMix!;
}
/** A copy of p with parameter k, entry i, set to v. */
function withParam(p: AdapterLayerParams, k: number, i: number, v: number): AdapterLayerParams {
  if (k === 2) {
    // float64 copy: v ± h rounded to float32 would be off by ~3e-8, 0.1% of the step h
    const os = Float64Array.from(p.outputScale);
    os[i] = v;
    return { ...p, outputScale: os as unknown as Float32Array };
  }
  return { ...p, ...[{ gateBias: v }, { gateScale: v }, null, { mixAlpha: v }, { windowMix: v }][k] };
}

/** Layer `pos`'s share of the loss, in float64: (1 / (B · layers)) Σ_s MSE_s. */
function layerTerm64(teacher: Map<number, Float32Array[]>, pos: number, p: AdapterLayerParams, window: number | null): number {
  const c = weights.config;
  const l = LAYERS[pos]!;
  const lw = weights.layer(l);
  let total = 0;
  SEQUENCES.forEach((s) => {
    const out = naiveDecoderLayer(teacher.get(l)![s]!, lw, c, { kind: 'adapter', params: p, ...(window !== null ? { window } : {}) });
    const target = teacher.get(l + 1)![s]!;
    let se = 0;
    for (let i = 0; i < out.length; i++) se += (out[i]! - target[i]!) ** 2;
    total += se / out.length;
  });
  return total / (SEQUENCES.length * LAYERS.length);
}

function autodiff(teacher: Map<number, Float32Array[]>, adapter: Adapter, window: number | null): { loss: number; grads: Float32Array[] } {
  const opts = trainOptions(window);
  const layers = new LayerSource(weights, LAYERS, Infinity);
  const vars = new AdapterVariables(adapter);
  try {
    const ctx: PassContext = { config: weights.config, layers, opts, seqLen: T, teacher, studentStart: null, rope: null };
    const r = runPass(ctx, SEQUENCES, vars, true);
    return { loss: r.loss, grads: r.grads! };
  } finally {
    vars.dispose();
    layers.dispose();
  }
}

/**
 * Central differences (step h) of `loss64(pos, params of that layer)` for every parameter entry,
 * against the autodiff gradients `grads` (AdapterVariables' flat order).
 */
function expectGradients(
  adapter: Adapter,
  window: number | null,
  grads: Float32Array[],
  loss64: (pos: number, p: AdapterLayerParams) => number,
  o: { tolerance: number; outputScaleStride: number },
): void {
  const hidden = adapter.hiddenSize;
  const perLayer = window !== null ? 5 : 4;
  expect(grads.length).toBe(perLayer * LAYERS.length);
  const h = 1e-5;
  LAYERS.forEach((_, pos) => {
    const p = adapter.params[pos]!;
    for (let k = 0; k < perLayer; k++) {
      const size = k === 2 ? hidden : 1;
      const entries = Array.from({ length: size }, (_, i) => i).filter((i) => i % (k === 2 ? o.outputScaleStride : 1) === 0);
      const fd = Float64Array.from(entries, (i) => {
        const v = getParam(p, k, i);
        return (loss64(pos, withParam(p, k, i, v + h)) - loss64(pos, withParam(p, k, i, v - h))) / (2 * h);
      });
      const all = grads[perLayer * pos + k]!;
      const what = `${PARAM_NAMES[k]}.${pos} (layer ${LAYERS[pos]})`;
      expect(all.length, what).toBe(size);
      const got = Float32Array.from(entries, (i) => all[i]!);
      // every parameter moves the loss here: a zero gradient would be a broken path, not a pass
      expect(Math.max(...Array.from(fd, Math.abs)), what).toBeGreaterThan(1e-6);
      expect(relRms(got, fd), what).toBeLessThan(o.tolerance);
    }
  });
}

describe('adapter parameter gradients: tfjs autodiff = float64 central differences', () => {
  for (const window of [null, 4]) {
    it(window === null ? 'adapter-v1' : `adapter-window (W = ${window})`, () => {
      const hidden = weights.config.hiddenSize;
      const teacher = teacherStates(hidden);
      const adapter = adapterOf(hidden, window);
      const { loss, grads } = autodiff(teacher, adapter, window);
      // the loss itself: float32 (chunked gate, batched matmuls) = float64 loops
      const loss64 = LAYERS.reduce((acc, _, pos) => acc + layerTerm64(teacher, pos, adapter.params[pos]!, window), 0);
      expect(Math.abs(loss - loss64) / loss64).toBeLessThan(1e-5);
      expect(loss64).toBeGreaterThan(0.01);

      // measured ≤ 3e-6 (float32 forward and backward); rounding v ± h to float32 alone would give 1e-3
      expectGradients(adapter, window, grads, (pos, p) => layerTerm64(teacher, pos, p, window), { tolerance: 1e-4, outputScaleStride: 1 });
    });
  }
});

// ---------------------------------------------------------------------------------------------
// --loss kl

/** Token ids of each sequence and the teacher's next-token log-probs (a random peaked distribution). */
function klData(V: number): { ids: number[][]; logProbs: Float32Array[] } {
  const ids = SEQUENCES.map((s) => Array.from(randoms(T, 500 + s), (u) => Math.floor((u + 1) * 0.5 * (V - 3)) + 3));
  const logProbs = SEQUENCES.map((s) => logSoftmaxRows(Float32Array.from(randoms(T * V, 600 + s), (u) => 4 * u), T, V));
  return { ids, logProbs };
}

/** The KL loss in float64 with the adapter of layer `pos` replaced by `p` (the other as in `adapter`). */
function klLoss64(adapter: Adapter, window: number | null, data: { ids: number[][]; logProbs: Float32Array[] }, pos: number, p: AdapterLayerParams): number {
  const c = weights.config;
  const H = c.hiddenSize;
  const V = c.vocabSize;
  const lm = weights.lmHeadRows(0, V);
  const finalNorm = weights.finalNorm();
  let total = 0;
  SEQUENCES.forEach((s) => {
    let h: Float64Array = Float64Array.from(weights.embed(data.ids[s]!));
    for (let l = 0; l < c.numLayers; l++) {
      const at = LAYERS.indexOf(l);
      const policy = at < 0 ? ({ kind: 'engine' } as const) : { kind: 'adapter' as const, params: at === pos ? p : adapter.params[at]!, ...(window !== null ? { window } : {}) };
      // float64 all the way (the reference reads its input by index; rounding to float32 between
      // layers would be noise at the scale of the finite-difference step)
      h = naiveDecoderLayer(h as unknown as Float32Array, weights.layer(l), c, policy);
    }
    let sum = 0;
    for (let t = 0; t < T; t++) {
      let ss = 0;
      for (let i = 0; i < H; i++) ss += h[t * H + i]! ** 2;
      const inv = 1 / Math.sqrt(ss / H + c.rmsNormEps);
      const z = new Float64Array(V);
      for (let v = 0; v < V; v++) {
        let acc = 0;
        for (let i = 0; i < H; i++) acc += lm.data[v * H + i]! * h[t * H + i]! * inv * finalNorm[i]!;
        z[v] = acc;
      }
      let max = -Infinity;
      for (const x of z) max = Math.max(max, x);
      let se = 0;
      for (const x of z) se += Math.exp(x - max);
      const lse = max + Math.log(se);
      for (let v = 0; v < V; v++) {
        const lp = data.logProbs[s]![t * V + v]!;
        sum += Math.exp(lp) * (lp - (z[v]! - lse));
      }
    }
    total += sum / T;
  });
  return total / SEQUENCES.length;
}

describe('adapter parameter gradients through the KL objective: tfjs autodiff = float64 central differences', () => {
  for (const window of [null, 4]) {
    it(window === null ? 'adapter-v1' : `adapter-window (W = ${window})`, () => {
      const c = weights.config;
      const V = c.vocabSize;
      const adapter = adapterOf(c.hiddenSize, window);
      const data = klData(V);
      const all = Array.from({ length: c.numLayers }, (_, l) => l);
      const layers = new LayerSource(weights, all, Infinity);
      const vars = new AdapterVariables(adapter);
      // the lm_head in two slices, as the teacher's projection cuts a big vocabulary
      const cut = 200;
      const slices: VocabSlice[] = [
        { start: 0, count: cut, w: uploadMatrix(weights.lmHeadRows(0, cut)) },
        { start: cut, count: V - cut, w: uploadMatrix(weights.lmHeadRows(cut, V - cut)) },
      ];
      const finalNorm = tf.tensor1d(weights.finalNorm());
      const rope = ropeCosSin(c, Array.from({ length: T }, (_, t) => t));
      let r;
      try {
        const ctx: PassContext = {
          config: c, layers, opts: trainOptions(window), seqLen: T, teacher: new Map(), studentStart: null, rope: null,
          kl: { layers, finalNorm, slices, embeddings: data.ids.map((ids) => weights.embed(ids)), logProbs: data.logProbs, rope },
        };
        r = runKlPass(ctx, SEQUENCES, vars, true);
      } finally {
        vars.dispose();
        layers.dispose();
        slices.forEach((x) => x.w.dispose());
        [finalNorm, rope.cos, rope.sin].forEach((x) => x.dispose());
      }
      const loss64 = klLoss64(adapter, window, data, 0, adapter.params[0]!);
      expect(Math.abs(r.loss - loss64) / loss64).toBeLessThan(1e-5);
      expect(loss64).toBeGreaterThan(0.01);
      // measured ≤ 2.7e-4 (gate_scale of layer 1: its effect passes through three more float32
      // layers and the lm_head); every 8th output_scale entry (the full sweep is 64 forward pairs)
      expectGradients(adapter, window, r.grads!, (pos, p) => klLoss64(adapter, window, data, pos, p), { tolerance: 2e-3, outputScaleStride: 8 });
    });
  }
});
