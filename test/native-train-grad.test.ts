/**
 * distill's MSE pass on ONNX Runtime (src/distill/nativePass.ts, graph src/native/adapterTrainGraph.ts)
 * against the tfjs reference `runPass` (autodiff): per-layer MSE and every adapter-parameter
 * gradient, on small random models (GQA; float32 and INT4 .symb read through MatMulNBits), --input
 * student (an untrained layer in between) and teacher, --mlp-grad exact and detached; adapter-window
 * (window_mix and the softmax part over the last W positions) with W shorter than and covering the
 * sequence; plus float64 central differences of the loss (the slow reference layer) on one
 * adapter-v1 and one adapter-window case; and the student stream into the first trained layer
 * (native prefill stopped there = tfjs studentStreamBefore). No ../shared needed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { writeFixtureHf } from '../src/formats/fixture.ts';
import { convertHfToSymb } from '../src/formats/convert.ts';
import { openModel } from '../src/formats/openModel.ts';
import type { ModelWeights } from '../src/formats/weights.ts';
import type { Adapter, AdapterLayerParams } from '../src/formats/adapter.ts';
import { naiveDecoderLayer } from '../src/model/decoderLayer.naive.ts';
import { ropeCosSin } from '../src/model/nn.ts';
import { AdapterVariables, flatFromAdapter, LayerSource, runPass, studentStreamBefore, type InputMode, type MlpGrad, type PassContext, type PassResult, type TrainOptions } from '../src/distill/train.ts';
import { NativeMsePass, nativeStudentStreamBefore } from '../src/distill/nativePass.ts';
import { randomModel, syntheticModel } from './helpers/randomModel.ts';
import { randoms, relRms } from './helpers/numeric.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-native-grad-'));
let int4: ModelWeights;
const f32 = randomModel({ hidden: 32, layers: 4, heads: 4, kvHeads: 2, headDim: 8, vocab: 16, inter: 48 }, 3);
/** Two layers with q/k/v biases, the model's own sliding window 3 and llama3 RoPE scaling. */
const synthetic = syntheticModel();
const MODELS = { float32: () => f32, int4: () => int4, synthetic: () => synthetic };

beforeAll(async () => {
  await initBackend('wasm');
  writeFixtureHf('tiny', path.join(tmp, 'hf'), 7); // hidden 64, 8 query / 4 kv heads
  await convertHfToSymb(path.join(tmp, 'hf'), path.join(tmp, 'int4'), { quantize: 'int4', groupSize: 32 }); // down (in 176) is not MatMulNBits-shaped: both int4 paths
  int4 = openModel(path.join(tmp, 'int4'));
});
afterAll(() => {
  int4?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const T = 12;
const SEQUENCES = [0, 1, 2];
const LAYERS = [1, 3];
/** The trained layers: 1 and 3 (2 in between, untrained), or both of a two-layer model. */
const layersOf = (weights: ModelWeights) => (weights.config.numLayers >= 4 ? LAYERS : [0, 1]);

function teacherStates(hidden: number, numLayers: number): Map<number, Float32Array[]> {
  const m = new Map<number, Float32Array[]>();
  for (let l = 0; l <= numLayers; l++) m.set(l, SEQUENCES.map((s) => randoms(T * hidden, 1000 * l + s)));
  return m;
}

/** adapter-v1's parameters, or adapter-window's (+ window_mix) with `window`. */
function adapterOf(hidden: number, window: number | null = null, layers = LAYERS): Adapter {
  const params: AdapterLayerParams[] = layers.map((l, i) => ({
    gateBias: 0.3 - 0.5 * i,
    gateScale: 1.2 + 0.3 * i,
    outputScale: Float32Array.from(randoms(hidden, 77 + l), (u) => 0.4 + 0.3 * u),
    mixAlpha: 0.2 + 0.4 * i,
    ...(window !== null ? { windowMix: -0.3 + 0.7 * i } : {}),
  }));
  return { layers, hiddenSize: hidden, params, config: {}, ...(window !== null ? { window } : {}) };
}

function contextOf(weights: ModelWeights, input: InputMode, mlpGrad: MlpGrad, layers: LayerSource | null, window: number | null = null): PassContext {
  const c = weights.config;
  const opts: TrainOptions = {
    layers: layersOf(weights), epochs: 1, lr: 1e-3, weightDecay: 0, gradClip: 1, batchSize: SEQUENCES.length, input, mlpGrad, rest: 'engine', seed: 0, chunkSize: 5, window,
  };
  const studentStart = input === 'student' ? SEQUENCES.map((s) => randoms(T * c.hiddenSize, 50 + s)) : null;
  return {
    config: c, layers: layers!, opts, seqLen: T, teacher: teacherStates(c.hiddenSize, c.numLayers), studentStart,
    rope: input === 'student' ? ropeCosSin(c, Array.from({ length: T }, (_, i) => i)) : null,
  };
}

function tfjsPass(weights: ModelWeights, ctx: PassContext, adapter: Adapter): PassResult {
  const trained = ctx.opts.layers;
  const layers = new LayerSource(weights, Array.from({ length: trained[trained.length - 1]! - trained[0]! + 1 }, (_, i) => trained[0]! + i), Infinity);
  const vars = new AdapterVariables(adapter);
  try {
    return runPass({ ...ctx, layers }, SEQUENCES, vars, true);
  } finally {
    vars.dispose();
    layers.dispose();
  }
}

type Residency = Parameters<typeof NativeMsePass.create>[2];
const ALL: Residency = { sessions: true, floats: true };

async function nativePass(weights: ModelWeights, ctx: PassContext, adapter: Adapter, withGrad = true, residentBytes: Residency = ALL): Promise<PassResult> {
  const pass = NativeMsePass.create(weights, ctx, residentBytes);
  try {
    return await pass.pass(SEQUENCES, flatFromAdapter(adapter), withGrad);
  } finally {
    await pass.close();
  }
}

const NAMES = ['gate_bias', 'gate_scale', 'output_scale', 'mix_alpha', 'window_mix'];

/** The native pass against tfjs runPass on one configuration (window null: adapter-v1). */
async function expectMatchesTfjs(model: keyof typeof MODELS, input: InputMode, mlpGrad: MlpGrad, window: number | null): Promise<void> {
  const weights = MODELS[model]();
  const ctx = contextOf(weights, input, mlpGrad, null, window);
  const layers = ctx.opts.layers;
  const adapter = adapterOf(weights.config.hiddenSize, window, layers);
  const n = window !== null ? 5 : 4; // parameters per layer
  const ref = tfjsPass(weights, ctx, adapter);
  const got = await nativePass(weights, ctx, adapter);
  expect(got.lossPerLayer.length).toBe(layers.length);
  got.lossPerLayer.forEach((v, i) => expect(Math.abs(v - ref.lossPerLayer[i]!) / ref.lossPerLayer[i]!, `loss of layer ${layers[i]}`).toBeLessThan(1e-5));
  expect(ref.grads!.length).toBe(n * layers.length);
  expect(got.grads!.length).toBe(ref.grads!.length);
  got.grads!.forEach((g, k) => {
    const what = `${NAMES[k % n]}.${Math.floor(k / n)}`;
    const ref1 = ref.grads![k]!;
    expect(g.length, what).toBe(ref1.length);
    expect(Math.max(...Array.from(ref1, Math.abs)), what).toBeGreaterThan(1e-7);
    // Relative to the gradient itself, or to 1% of its layer's largest entry when it is a sum
    // that nearly cancels (a gate_bias gradient of 5e-5 beside 0.5: float32 rounding of the
    // stream before it moves it by 1e-8).
    const layerScale = Math.max(...ref.grads!.slice(n * Math.floor(k / n), n * Math.floor(k / n) + n).flatMap((a) => Array.from(a, Math.abs)));
    let num = 0;
    let den = 0;
    ref1.forEach((v, i) => ((num += (g[i]! - v) ** 2), (den += v * v)));
    const err = Math.sqrt(num / ref1.length) / Math.max(Math.sqrt(den / ref1.length), 0.01 * layerScale);
    expect(err, what).toBeLessThan(1e-4);
  });
  // Sessions streamed, or kept with the float32 matrices dequantized per pass: the same numbers.
  for (const mode of [{ sessions: false, floats: false }, { sessions: true, floats: false }]) {
    const again = await nativePass(weights, ctx, adapter, true, mode);
    expect(again.lossPerLayer, JSON.stringify(mode)).toEqual(got.lossPerLayer);
    expect(again.grads, JSON.stringify(mode)).toEqual(got.grads);
  }
  // Without gradients (held-out passes; a forward-only graph): the same losses.
  const noGrad = await nativePass(weights, ctx, adapter, false);
  expect(noGrad.grads).toBeNull();
  noGrad.lossPerLayer.forEach((v, i) => expect(Math.abs(v - got.lossPerLayer[i]!) / v).toBeLessThan(1e-6));
}

describe('native MSE pass = tfjs runPass (losses and gradients)', () => {
  for (const model of ['float32', 'int4'] as const) {
    for (const input of ['student', 'teacher'] as const) {
      for (const mlpGrad of ['exact', 'detached'] as const) {
        it(`${model}, --input ${input}, --mlp-grad ${mlpGrad}`, () => expectMatchesTfjs(model, input, mlpGrad, null));
      }
    }
  }
});

describe('native adapter-window MSE pass = tfjs runPass (losses and gradients, window_mix included)', () => {
  // T = 12: W = 4 bands the softmax part; W = 12 and 16 cover the whole sequence.
  const cases = [
    ['float32', 'student', 'exact', 4],
    ['int4', 'teacher', 'detached', 4],
    ['float32', 'teacher', 'detached', 16],
    ['int4', 'student', 'exact', 12],
    // The model's sliding window 3 caps W = 8 (and not W = 2); biases on q/k/v; llama3 RoPE.
    ['synthetic', 'student', 'exact', 8],
    ['synthetic', 'teacher', 'detached', 2],
  ] as const;
  for (const [model, input, mlpGrad, window] of cases) {
    it(`${model}, --input ${input}, --mlp-grad ${mlpGrad}, --window ${window}`, () => expectMatchesTfjs(model, input, mlpGrad, window));
  }

  it('is what NativeMsePass.supports says', () => {
    expect(NativeMsePass.supports({ opts: { window: null } })).toBe(true);
    expect(NativeMsePass.supports({ opts: { window: 4 } })).toBe(true);
    expect(NativeMsePass.supports({ opts: { window: 0 } })).toBe(false);
  });
});

describe('native MSE pass gradients = float64 central differences', () => {
  it.each([null, 4])('float32, --input teacher, --mlp-grad exact, --window %s', async (window) => {
    const weights = f32;
    const c = weights.config;
    const ctx = contextOf(weights, 'teacher', 'exact', null, window);
    const adapter = adapterOf(c.hiddenSize, window);
    const perLayer = window !== null ? 5 : 4;
    const got = await nativePass(weights, ctx, adapter);
    const term64 = (pos: number, p: AdapterLayerParams): number => {
      const l = LAYERS[pos]!;
      let total = 0;
      for (const s of SEQUENCES) {
        const out = naiveDecoderLayer(ctx.teacher.get(l)![s]!, weights.layer(l), c, { kind: 'adapter', params: p, ...(window !== null ? { window } : {}) });
        const target = ctx.teacher.get(l + 1)![s]!;
        let se = 0;
        for (let i = 0; i < out.length; i++) se += (out[i]! - target[i]!) ** 2;
        total += se / out.length;
      }
      return total / (SEQUENCES.length * LAYERS.length);
    };
    const h = 1e-5;
    LAYERS.forEach((_, pos) => {
      const p = adapter.params[pos]!;
      const set = (k: number, i: number, v: number): AdapterLayerParams => {
        if (k !== 2) return { ...p, ...[{ gateBias: v }, { gateScale: v }, null, { mixAlpha: v }, { windowMix: v }][k] };
        const os = Float64Array.from(p.outputScale);
        os[i] = v;
        return { ...p, outputScale: os as unknown as Float32Array };
      };
      const get = (k: number, i: number) => [p.gateBias, p.gateScale, p.outputScale[i]!, p.mixAlpha, p.windowMix!][k]!;
      for (let k = 0; k < perLayer; k++) {
        const n = k === 2 ? c.hiddenSize : 1;
        const fd = Float64Array.from({ length: n }, (_, i) => (term64(pos, set(k, i, get(k, i) + h)) - term64(pos, set(k, i, get(k, i) - h))) / (2 * h));
        const what = `${NAMES[k]}.${pos}`;
        expect(Math.max(...Array.from(fd, Math.abs)), what).toBeGreaterThan(1e-6);
        expect(relRms(got.grads![perLayer * pos + k]!, fd), what).toBeLessThan(1e-4);
      }
    });
  });
});

describe('the student stream into the first trained layer: native = tfjs', () => {
  it.each(['engine', 'fixed', 'teacher'] as const)('--rest %s, first trained layer 2', async (rest) => {
    for (const weights of [f32, int4]) {
      const ids = SEQUENCES.map((s) => Array.from({ length: T }, (_, t) => (3 + 5 * s + 7 * t) % weights.config.vocabSize));
      const reference = studentStreamBefore(weights, ids.map((x) => weights.embed(x)), 2, rest, T);
      const got = await nativeStudentStreamBefore(weights, ids, 2, rest);
      expect(got).toHaveLength(ids.length);
      got.forEach((h, s) => expect(relRms(h, reference[s]!)).toBeLessThan(1e-5));
    }
  });
});
