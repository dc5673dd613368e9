/**
 * Numerics guards (issue 7, item 3): activations that overflow float32 stop `eval` and `distill`
 * with one line naming the configuration / layer / position (no NaN figures, nothing cached or
 * written), and gates at saturation (gate logit ±1e4, ±50) give finite, agreeing results in both
 * forms of the gate at the level of whole student layers and whole models — prefill (chunked),
 * decoding (recurrent), and gradients. The gate kernels alone are covered in gate.test.ts.
 */
import * as tf from '@tensorflow/tfjs-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runEvalCommand } from '../src/cli/commands/eval.ts';
import { initBackend } from '../src/runtime/backend.ts';
import { hashSequences } from '../src/data/corpus.ts';
import { SynaximError } from '../src/util/errors.ts';
import { disposeLayer, rmsNorm, swigluMlp, uploadLayer } from '../src/model/nn.ts';
import { runDistill } from '../src/distill/run.ts';
import { teacherCacheDir, teacherHiddenStates } from '../src/distill/teacherCache.ts';
import { AdapterVariables, LayerSource, runPass, type PassContext } from '../src/distill/train.ts';
import { initialAdapter, writeAdapter, type Adapter } from '../src/formats/adapter.ts';
import { gateRecurrent } from '../src/model/gate.ts';
import {
  adapterPolicy,
  disposePolicy,
  gateBlockOutput,
  gateInputs,
  StudentDecoder,
  studentAttention,
  studentLayerForward,
  studentPrefill,
  type AdapterPolicy,
} from '../src/engine/student.ts';
import { writeFixtureHf } from '../src/formats/fixture.ts';
import { openModel } from '../src/formats/openModel.ts';
import { readAllFloat32, writeSafetensors, type StTensorToWrite } from '../src/formats/safetensors.ts';
import type { ModelWeights } from '../src/formats/weights.ts';
import { teacherPrefill } from '../src/teacher/teacher.ts';
import { randoms, relRms } from './helpers/numeric.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-numerics-'));
const TINY = path.join(tmp, 'tiny-hf');
/** TINY with post_attention_layernorm of layer 2 = 1e20: finite weights whose MLP overflows float32. */
const OVERFLOW = path.join(tmp, 'overflow-hf');
const OVERFLOW_LAYER = 2;
let model: ModelWeights;

beforeAll(async () => {
  await initBackend('wasm');
  writeFixtureHf('tiny', TINY);
  fs.cpSync(TINY, OVERFLOW, { recursive: true });
  const file = path.join(OVERFLOW, 'model.safetensors');
  const tensors: Record<string, StTensorToWrite> = {};
  for (const [name, t] of Object.entries(readAllFloat32(file))) tensors[name] = { dtype: 'F32', shape: t.shape, data: t.data };
  (tensors[`model.layers.${OVERFLOW_LAYER}.post_attention_layernorm.weight`]!.data as Float32Array).fill(1e20);
  writeSafetensors(file, tensors);
  model = openModel(TINY);
});
afterAll(() => {
  model?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const allFinite = (x: ArrayLike<number>) => {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i]!)) return false;
  return true;
};
function host(t: tf.Tensor): Float32Array {
  const d = Float32Array.from(t.dataSync() as Float32Array);
  t.dispose();
  return d;
}
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

// ---------------------------------------------------------------------------------------------

describe('activations that overflow float32 stop the run, naming where', () => {
  it('eval: one line naming configuration, layer and position; no report, no NaN figures', async () => {
    const out = path.join(tmp, 'eval-overflow');
    const err = await rejection(runEvalCommand({ model: OVERFLOW, suite: 'smoke', rest: 'engine', out, backend: 'wasm', quiet: true, workers: 1 }));
    expect(err).toBeInstanceOf(SynaximError);
    expect(err.message).toMatch(
      new RegExp(
        `^configuration 'teacher' produced a non-finite logit \\((NaN|-?Infinity)\\) in document 0 at window position \\d+ \\(token \\d+\\); ` +
          `the first non-finite activation \\((NaN|-?Infinity)\\) is in layer ${OVERFLOW_LAYER} \\(its output, hidden\\.${OVERFLOW_LAYER + 1}\\) at window position \\d+: `,
      ),
    );
    expect(err.message).toMatch(/no report written$/);
    expect(err.message.includes('\n')).toBe(false);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('eval: an adapter that overflows names the adapter configuration, not the teacher', async () => {
    const adapterDir = path.join(tmp, 'adapter-overflow');
    const a = initialAdapter([1], 64);
    a.params[0]!.outputScale.fill(3e38); // finite, but W_o r ⊙ output_scale overflows
    a.params[0]!.mixAlpha = 20; // σ(mix) ≈ 1: the gate's output is what the layer passes on
    await writeAdapter(adapterDir, a);
    const out = path.join(tmp, 'eval-adapter-overflow');
    const err = await rejection(
      runEvalCommand({ model: TINY, adapter: adapterDir, configurations: 'adapter', suite: 'smoke', rest: 'engine', out, backend: 'wasm', quiet: true, workers: 1 }),
    );
    expect(err).toBeInstanceOf(SynaximError);
    expect(err.message).toMatch(/^configuration 'adapter' produced a non-finite logit .*; the first non-finite activation .* is in layer 1 \(its output, hidden\.2\) at window position \d+: its weights or adapter overflow float32; no report written$/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('distill: the teacher pass stops naming layer, sequence and position; nothing cached, no adapter', async () => {
    const out = path.join(tmp, 'distill-overflow');
    const cacheRoot = path.join(tmp, 'cache-overflow');
    const err = await rejection(
      runDistill({
        model: OVERFLOW, layers: [0, 1, 2, 3], seqLen: 16, maxSeqs: 8, epochs: 1, lr: 1e-2, batchSize: 4,
        input: 'student', mlpGrad: 'exact', rest: 'engine', seed: 0, out, cacheRoot, quiet: true,
      }),
    );
    expect(err).toBeInstanceOf(SynaximError);
    expect(err.message).toMatch(new RegExp(`^teacher: non-finite activation \\((NaN|-?Infinity)\\) in the output of layer ${OVERFLOW_LAYER} \\(hidden\\.${OVERFLOW_LAYER + 1}\\) of calibration sequence 0 at position \\d+`));
    expect(err.message.includes('\n')).toBe(false);
    expect(fs.existsSync(path.join(out, 'symbiotic_adapter'))).toBe(false);
    const cached = fs.existsSync(path.join(cacheRoot, 'teacher-hidden')) ? fs.readdirSync(path.join(cacheRoot, 'teacher-hidden'), { recursive: true }).map(String) : [];
    expect(cached.filter((f) => f.endsWith('.safetensors'))).toEqual([]);
  });

  it('distill: a student that overflows before the first trained layer is named there, not as a NaN loss of the trained one', async () => {
    const err = await rejection(
      runDistill({
        model: OVERFLOW, teacher: TINY, layers: [3], seqLen: 16, maxSeqs: 8, epochs: 1, lr: 1e-2, batchSize: 4,
        input: 'student', mlpGrad: 'exact', rest: 'engine', seed: 0, out: path.join(tmp, 'distill-student-overflow'), cacheRoot: path.join(tmp, 'cache-student-overflow'), quiet: true,
      }),
    );
    expect(err).toBeInstanceOf(SynaximError);
    expect(err.message).toMatch(new RegExp(`^student: non-finite activation \\((NaN|-?Infinity)\\) in the output of untrained layer ${OVERFLOW_LAYER} \\(--rest engine\\) of sequence 0 at position \\d+, before the first trained layer 3`));
  });

  it('a cache entry holding NaN (from before this check) is recomputed, not trusted', async () => {
    const seqs = [Int32Array.from({ length: 12 }, (_, i) => (i * 5 + 2) % 320)];
    const key = { modelHash: 'numerics-test', sequencesHash: hashSequences(seqs), seqLen: 12 };
    const root = path.join(tmp, 'cache-nan');
    const poisoned = new Float32Array(12 * 64).fill(NaN);
    fs.mkdirSync(teacherCacheDir(key, root), { recursive: true });
    writeSafetensors(path.join(teacherCacheDir(key, root), 'hidden.2.safetensors'), { hidden: { dtype: 'F32', shape: [1, 12, 64], data: poisoned } });
    const r = await teacherHiddenStates(model, seqs, [2], key, { root });
    expect(r.fromCache).toEqual([]);
    expect(allFinite(r.hidden.get(2)![0]!)).toBe(true);
    expect((await teacherHiddenStates(model, seqs, [2], key, { root })).fromCache).toEqual([2]); // rewritten, now trusted
  });
});

// ---------------------------------------------------------------------------------------------

/** An adapter on `layers` with every gate logit pushed to ±saturation by gate_bias (gate_scale 1). */
function saturatedAdapter(layers: number[], gateBias: number): Adapter {
  const a = initialAdapter(layers, 64);
  a.params.forEach((p, i) => {
    p.gateBias = gateBias;
    p.outputScale = Float32Array.from(randoms(64, 40 + i), (u) => 0.3 + 0.2 * u);
    p.mixAlpha = 0.7;
  });
  return a;
}

const SATURATION = [1e4, -1e4, 50, -50];
const ids = Array.from(randoms(21, 77), (u) => Math.floor((u + 1) * 160) % 320);

describe('saturated gates: whole student, prefill (chunked) = decoding (recurrent), all finite', () => {
  for (const bias of SATURATION) {
    it(`gate_bias ${bias} on layers 0-3 (chunks of 8 over 21 tokens) and on layers 1,3 between engine layers`, () => {
      for (const layers of [[0, 1, 2, 3], [1, 3]]) {
        const adapter = saturatedAdapter(layers, bias);
        const opts = { adapter, rest: 'engine' as const, chunkSize: 8 };
        const pre = studentPrefill(model, [ids], { ...opts, hidden: true });
        const V = model.config.vocabSize;
        expect(allFinite(pre.logits[0]!)).toBe(true);
        pre.hidden![0]!.forEach((h, l) => expect(allFinite(h), `hidden.${l}`).toBe(true));
        // the prefill does not depend on the chunking (one chunk of 64 vs three of 8)
        expect(relRms(studentPrefill(model, [ids], { ...opts, chunkSize: 64 }).logits[0]!, pre.logits[0]!)).toBeLessThan(1e-5);

        const dec = new StudentDecoder(model, opts);
        let worst = 0;
        ids.forEach((id, t) => {
          const logits = dec.step(id);
          expect(allFinite(logits), `step ${t}`).toBe(true);
          worst = Math.max(worst, relRms(logits, pre.logits[0]!.subarray(t * V, (t + 1) * V)));
        });
        expect(worst).toBeLessThan(1e-4);
        // chunked continuation from carried (saturated) states = the same
        dec.reset();
        dec.prefill(ids.slice(0, 11));
        const cont = dec.prefill(ids.slice(11));
        expect(allFinite(cont)).toBe(true);
        expect(relRms(cont, pre.logits[0]!.subarray(20 * V, 21 * V))).toBeLessThan(1e-4);
        dec.dispose();
      }
    });
  }

  it('at ±1e4 the adapted attention block is its closed form (g = 1: state stays 0; g = 0: M_t = k̂_t v̂_tᵀ)', () => {
    const c = model.config;
    const T = 13;
    const layerWeights = model.layer(1);
    const layer = uploadLayer(layerWeights);
    const x = tf.tensor2d(randoms(T * 64, 5, 1.5), [T, 64]);
    const xHost = host(x.clone());
    for (const bias of [1e4, -1e4]) {
      const adapter = saturatedAdapter([1], bias);
      const policy = adapterPolicy(adapter, 0);
      const got = host(studentAttention(x, layer, c, policy, { chunkSize: 4 }));
      // the slow, obvious reference in float64 from the gate's own inputs
      const seq = gateInputs(x, layer, c, policy, null);
      const q = host(seq.q), k = host(seq.kHat), v = host(seq.vHat);
      seq.logGate.dispose();
      seq.logOneMinusGate.dispose();
      const D = 64;
      const p = adapter.params[0]!;
      const alpha = 1 / (1 + Math.exp(-p.mixAlpha));
      const wo = layerWeights.o; // [hidden, D]
      const expected = new Float64Array(T * 64);
      for (let t = 0; t < T; t++) {
        const r = new Float64Array(D); // g = 1: r = 0;  g = 0: r = (q_t·k̂_t) v̂_t
        if (bias < 0) {
          let qk = 0;
          for (let j = 0; j < D; j++) qk += q[t * D + j]! * k[t * D + j]!;
          for (let j = 0; j < D; j++) r[j] = qk * v[t * D + j]!;
        }
        for (let o = 0; o < 64; o++) {
          let a = 0;
          for (let j = 0; j < D; j++) a += wo.data[o * wo.cols + j]! * r[j]!;
          expected[t * 64 + o] = alpha * a * p.outputScale[o]! + (1 - alpha) * xHost[t * 64 + o]!;
        }
      }
      expect(allFinite(got)).toBe(true);
      expect(relRms(got, expected), `gate_bias ${bias}`).toBeLessThan(1e-5);
      disposePolicy(policy);
    }
    x.dispose();
    disposeLayer(layer);
  });
});

// ---------------------------------------------------------------------------------------------

/** A student layer with the gate in recurrent form (gateRecurrent), otherwise studentLayerForward. */
function recurrentLayerForward(h: tf.Tensor2D, layer: ReturnType<typeof uploadLayer>, policy: AdapterPolicy): tf.Tensor2D {
  const c = model.config;
  return tf.tidy(() => {
    const x = rmsNorm(h, layer.inputNorm, c.rmsNormEps);
    const r = gateRecurrent(gateInputs(x, layer, c, policy, null)).r;
    const afterAttn = tf.add(h, gateBlockOutput(r, x, layer, policy)) as tf.Tensor2D;
    return tf.add(afterAttn, swigluMlp(rmsNorm(afterAttn, layer.postNorm, c.rmsNormEps), layer.gate, layer.up, layer.down)) as tf.Tensor2D;
  });
}

describe('saturated gates: gradients through whole student layers and a training pass are finite', () => {
  const names = ['gateBias', 'gateScale', 'outputScale', 'mixAlpha'] as const;
  for (const bias of SATURATION) {
    it(`gate_bias ${bias}: one real layer (with its MLP), chunked = recurrent; a 4-layer training pass`, () => {
      const c = model.config;
      const layer = uploadLayer(model.layer(2));
      const T = 19;
      const h = tf.tensor2d(randoms(T * 64, 11, 2), [T, 64]);
      const target = tf.tensor2d(randoms(T * 64, 12, 2), [T, 64]);
      const vars = new AdapterVariables(saturatedAdapter([2], bias));
      const policy = vars.policies[0]!;
      const grads = (form: 'chunked' | 'recurrent') => {
        const { value, grads: g } = tf.variableGrads(() =>
          tf.mean(tf.squaredDifference(form === 'chunked' ? studentLayerForward(h, layer, c, policy, { chunkSize: 8 }) : recurrentLayerForward(h, layer, policy), target)) as tf.Scalar,
        );
        const out = { loss: host(value)[0]!, ...Object.fromEntries(names.map((n) => [n, host(g[(policy[n] as tf.Variable).name]!)])) } as Record<string, number | Float32Array>;
        Object.values(g).forEach((t) => t.dispose());
        return out;
      };
      const chunked = grads('chunked');
      const recurrent = grads('recurrent');
      expect(Number.isFinite(chunked.loss)).toBe(true);
      expect(Math.abs((chunked.loss as number) - (recurrent.loss as number))).toBeLessThanOrEqual(1e-5 * Math.abs(recurrent.loss as number));
      for (const n of names) {
        const gc = chunked[n] as Float32Array;
        const gr = recurrent[n] as Float32Array;
        expect(allFinite(gc), `${n} (chunked)`).toBe(true);
        expect(allFinite(gr), `${n} (recurrent)`).toBe(true);
        const scale = Math.sqrt(gr.reduce((s, g) => s + g * g, 0));
        if (scale < 1e-9) expect(Math.max(...Array.from(gc, Math.abs)), n).toBeLessThan(1e-8);
        else expect(relRms(gc, gr), n).toBeLessThan(1e-3);
      }
      // σ'(±1e4) is 0 in float32: the gate parameters get exactly no signal, nothing else breaks.
      if (Math.abs(bias) === 1e4) {
        expect(Math.abs((chunked.gateBias as Float32Array)[0]!)).toBeLessThan(1e-12);
        expect(Math.abs((chunked.gateScale as Float32Array)[0]!)).toBeLessThan(1e-12);
      }
      [h, target].forEach((t) => t.dispose());
      vars.dispose();
      disposeLayer(layer);

      // The training path over all four layers (student input, exact MLP gradient, chunks of 8).
      const seq = ids.slice(0, 16);
      const teacherHidden = teacherPrefill(model, [seq], { hidden: true, logits: false }).hidden![0]!;
      const all = new AdapterVariables(saturatedAdapter([0, 1, 2, 3], bias));
      const source = new LayerSource(model, [0, 1, 2, 3], 1 << 30);
      try {
        const ctx: PassContext = {
          config: c,
          layers: source,
          opts: { layers: [0, 1, 2, 3], epochs: 1, lr: 1e-2, weightDecay: 0.01, gradClip: 1, batchSize: 1, input: 'student', mlpGrad: 'exact', rest: 'engine', seed: 0, chunkSize: 8 },
          seqLen: seq.length,
          teacher: new Map(teacherHidden.map((x, i) => [i, [x]])),
          studentStart: [teacherHidden[0]!],
          rope: null,
        };
        const r = runPass(ctx, [0], all, true);
        expect(Number.isFinite(r.loss)).toBe(true);
        expect(r.lossPerLayer.every(Number.isFinite)).toBe(true);
        r.grads!.forEach((g, k) => expect(allFinite(g), all.names()[k]).toBe(true));
      } finally {
        all.dispose();
        source.dispose();
      }
    });
  }
});
