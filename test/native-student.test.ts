/**
 * The native engine's student attention parts (src/native/gateGraph.ts, gatePart.ts):
 * - the gate's ONNX graphs (chunked log-space prefill, recurrent decode step) against tfjs'
 *   recurrent gate (src/model/gate.ts), saturated gates included;
 * - each policy (engine, fixed, adapter-v1, adapter-window, window) inside the native decoder-layer
 *   skeleton against the tfjs student layer, prefill and step-by-step decode;
 * - whole models: nativePrefill / NativeDecoder / nativePrefillMany (hybrids included) against
 *   tfjs studentPrefill on a random GQA model;
 * - ../shared (skipped at run time without it): the reference engine's logits on symb-int4
 *   (≤ 2e-3, the fixtures README's tolerance), the adapter golden's student outputs (1e-4
 *   relative), and stories260k (symb-int4, symb-fp16) with every policy against tfjs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/runtime/backend.ts';
import { GraphBuilder } from '../src/runtime/ort/graph.ts';
import { createSession, f32, i64, releaseSession, runSession } from '../src/runtime/ort/session.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { openModel } from '../src/formats/openModel.ts';
import { readAllFloat32, SafetensorsFile } from '../src/formats/safetensors.ts';
import type { ModelWeights } from '../src/formats/weights.ts';
import { initialAdapter, type Adapter } from '../src/formats/adapter.ts';
import { gateLogs, gateRecurrent } from '../src/model/gate.ts';
import { disposeLayer, uploadLayer } from '../src/model/nn.ts';
import { disposePolicy, layerPolicy, layerPolicyKinds, type RestPolicy } from '../src/model/policy.ts';
import { studentLayerForward, studentPrefill } from '../src/engine/student.ts';
import { gateChunkedOps, gateLogsOps, gateStepOps } from '../src/native/gateGraph.ts';
import { nativeAttentionFor, nativePolicies, nativeStudentAttention, type NativeStudentLayout } from '../src/native/gatePart.ts';
import { buildLayerGraph, ropeTables } from '../src/native/layerGraph.ts';
import { loadNativeLayer } from '../src/native/layerWeights.ts';
import { nativePrefill, nativePrefillMany, NativeDecoder } from '../src/native/model.ts';
import { maxAbsDiff, randoms, relRms } from './helpers/numeric.ts';
import { randomModel } from './helpers/randomModel.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

/** Random gate inputs for B sequences of T tokens: q, k̂, v̂ [B*T*D], gate logits [B*T]. */
function gateData(B: number, T: number, D: number, seed: number, logitScale = 3) {
  return { q: randoms(B * T * D, seed), k: randoms(B * T * D, seed + 1), v: randoms(B * T * D, seed + 2), z: randoms(B * T, seed + 3, logitScale) };
}

/** tfjs reference: the recurrent gate per sequence, r [B*T*D]. */
function tfjsGate(d: ReturnType<typeof gateData>, B: number, T: number, D: number): Float32Array {
  const out = new Float32Array(B * T * D);
  for (let b = 0; b < B; b++) {
    tf.tidy(() => {
      const sl = (x: Float32Array) => tf.tensor2d(x.subarray(b * T * D, (b + 1) * T * D), [T, D]);
      const logs = gateLogs(tf.tensor1d(d.z.subarray(b * T, (b + 1) * T)));
      const { r } = gateRecurrent({ q: sl(d.q), kHat: sl(d.k), vHat: sl(d.v), ...logs });
      out.set(r.dataSync() as Float32Array, b * T * D);
    });
  }
  return out;
}

describe('gate graphs (gateGraph.ts) = tfjs recurrent gate', () => {
  for (const [B, T, D, C] of [[1, 5, 8, 8], [2, 16, 8, 4], [2, 19, 12, 8], [1, 40, 16, 16], [3, 7, 4, 64]] as const) {
    it(`prefill chunked: B=${B} T=${T} D=${D} C=${C}`, async () => {
      const g = new GraphBuilder('gate');
      const ins = ['q', 'k', 'v'].map((n) => g.input(n, 'float32', ['B', 'T', D]));
      const z = g.input('z', 'float32', ['B', 'T', 1]);
      const r = gateChunkedOps(g, { q: ins[0]!, kHat: ins[1]!, vHat: ins[2]!, ...gateLogsOps(g, z) }, D, C);
      g.output(r, 'float32', ['B', 'T', D], 'r');
      const s = await createSession(g.toBytes(), 'gate test');
      const d = gateData(B, T, D, 7 + T);
      const out = await runSession(s, { q: f32(d.q, [B, T, D]), k: f32(d.k, [B, T, D]), v: f32(d.v, [B, T, D]), z: f32(d.z, [B, T, 1]) }, 'gate test');
      await releaseSession(s);
      expect(out.r!.dims).toEqual([B, T, D]);
      expect(relRms(out.r!.data as Float32Array, tfjsGate(d, B, T, D))).toBeLessThan(1e-5);
    });
  }

  it('saturated gates (logits ±1e4, g exactly 0 or 1) stay finite and exact', async () => {
    const [B, T, D, C] = [2, 21, 8, 8];
    const g = new GraphBuilder('gate');
    const ins = ['q', 'k', 'v'].map((n) => g.input(n, 'float32', ['B', 'T', D]));
    const z = g.input('z', 'float32', ['B', 'T', 1]);
    g.output(gateChunkedOps(g, { q: ins[0]!, kHat: ins[1]!, vHat: ins[2]!, ...gateLogsOps(g, z) }, D, C), 'float32', ['B', 'T', D], 'r');
    const s = await createSession(g.toBytes(), 'gate test');
    const d = gateData(B, T, D, 3);
    d.z = Float32Array.from(d.z, (x, i) => (i % 3 === 0 ? 1e4 : i % 3 === 1 ? -1e4 : x * 20));
    const out = await runSession(s, { q: f32(d.q, [B, T, D]), k: f32(d.k, [B, T, D]), v: f32(d.v, [B, T, D]), z: f32(d.z, [B, T, 1]) }, 'gate test');
    await releaseSession(s);
    const got = out.r!.data as Float32Array;
    expect(got.every(Number.isFinite)).toBe(true);
    expect(relRms(got, tfjsGate(d, B, T, D))).toBeLessThan(1e-5);
  });

  it('decode: recurrent steps on a carried [B, D, D] state = the recurrent gate', async () => {
    const [B, T, D] = [2, 9, 8];
    const g = new GraphBuilder('gate-step');
    const ins = ['q', 'k', 'v'].map((n) => g.input(n, 'float32', ['B', 1, D]));
    const z = g.input('z', 'float32', ['B', 1, 1]);
    const m = g.input('m', 'float32', ['B', D, D]);
    const step = gateStepOps(g, { q: ins[0]!, kHat: ins[1]!, vHat: ins[2]!, ...gateLogsOps(g, z) }, m);
    g.output(step.r, 'float32', ['B', 1, D], 'r');
    g.output(step.state, 'float32', ['B', D, D], 'm_out');
    const s = await createSession(g.toBytes(), 'gate step test');
    const d = gateData(B, T, D, 11);
    const ref = tfjsGate(d, B, T, D);
    let state: Float32Array = new Float32Array(B * D * D);
    const got = new Float32Array(B * T * D);
    for (let t = 0; t < T; t++) {
      const tok = (x: Float32Array, n: number) => {
        const o = new Float32Array(B * n);
        for (let b = 0; b < B; b++) o.set(x.subarray((b * T + t) * n, (b * T + t + 1) * n), b * n);
        return o;
      };
      const out = await runSession(s, { q: f32(tok(d.q, D), [B, 1, D]), k: f32(tok(d.k, D), [B, 1, D]), v: f32(tok(d.v, D), [B, 1, D]), z: f32(tok(d.z, 1), [B, 1, 1]), m: f32(state, [B, D, D]) }, 'gate step test');
      state = out.m_out!.data as Float32Array;
      const r = out.r!.data as Float32Array;
      for (let b = 0; b < B; b++) got.set(r.subarray(b * D, (b + 1) * D), (b * T + t) * D);
    }
    await releaseSession(s);
    expect(relRms(got, ref)).toBeLessThan(1e-5);
  });
});

// ---------------------------------------------------------------------------------------------
// One decoder layer with each student part (layerGraph.ts skeleton) vs the tfjs student layer


/** An adapter on `layers` with non-initial values (so every parameter matters). */
function testAdapter(layers: number[], hidden: number, window: number | null, seed: number): Adapter {
  const a = initialAdapter(layers, hidden, window);
  a.params.forEach((p, i) => {
    p.gateBias = 0.7 - 0.5 * i;
    p.gateScale = 1.3 + 0.2 * i;
    p.outputScale = Float32Array.from(randoms(hidden, seed + i), (u) => 0.5 * u);
    p.mixAlpha = 0.3 * (i + 1);
    if (window !== null) p.windowMix = -0.4 + i;
  });
  return a;
}

/** The layouts every layer-level test runs: each policy kind, GQA, adapter-window, window. */
function layouts(hidden: number): { name: string; layout: NativeStudentLayout }[] {
  return [
    { name: 'engine', layout: { rest: 'engine' } },
    { name: 'fixed', layout: { rest: 'fixed' } },
    { name: 'adapter-v1 (rest teacher)', layout: { adapter: testAdapter([0, 1], hidden, null, 5), rest: 'teacher' } },
    { name: 'adapter-window-4', layout: { adapter: testAdapter([0, 1], hidden, 4, 6), rest: 'engine' } },
    { name: 'window-5', layout: { rest: 'teacher' as RestPolicy, window: 5 } },
  ];
}

describe('student parts in the native layer graph = tfjs studentLayerForward', () => {
  const model = randomModel({ hidden: 24, layers: 2, heads: 6, kvHeads: 2, headDim: 4, vocab: 40, inter: 48 }, 21);
  const c = model.config;
  const H = c.hiddenSize;
  const [B, T] = [2, 19];
  const hIn = randoms(B * T * H, 77);

  /** tfjs: one layer per sequence. */
  function tfjsLayer(l: number, layout: NativeStudentLayout): Float32Array {
    const kinds = layerPolicyKinds(c, layout.adapter ?? null, layout.rest ?? 'engine', layout);
    const policy = layerPolicy(kinds[l]!, l, layout.adapter ?? null, layout.window);
    const layer = uploadLayer(model.layer(l));
    const out = new Float32Array(B * T * H);
    for (let b = 0; b < B; b++) {
      tf.tidy(() => {
        const h = tf.tensor2d(hIn.subarray(b * T * H, (b + 1) * T * H), [T, H]);
        out.set(studentLayerForward(h, layer, c, policy, { chunkSize: 8 }).dataSync() as Float32Array, b * T * H);
      });
    }
    disposePolicy(policy);
    disposeLayer(layer);
    return out;
  }

  for (const { name, layout } of layouts(H)) {
    for (const l of [0, 1]) {
      it(`${name}, layer ${l}: prefill (chunk 8) and decode step by step`, async () => {
        const policy = nativePolicies(c, layout)[l]!;
        const part = nativeAttentionFor(policy, { chunkSize: 8 });
        expect(part).not.toBeNull();
        const ref = tfjsLayer(l, layout);
        const weights = loadNativeLayer(model, l);
        const positions = Array.from({ length: T }, (_, t) => t);

        const prefill = buildLayerGraph(`test layer ${l}`, c, 'prefill', weights, [part!]);
        const s = await createSession(prefill.bytes, 'prefill');
        const rope = ropeTables(c, positions);
        const feeds: Record<string, ReturnType<typeof f32>> = { h0: f32(hIn, [B, T, H]) };
        if (prefill.usesPositions) feeds.positions = i64(positions);
        if (prefill.usesRope) Object.assign(feeds, { rope_cos: f32(rope.cos, [T, c.headDim]), rope_sin: f32(rope.sin, [T, c.headDim]) });
        const got = (await runSession(s, feeds, 'prefill')).h0_out!.data as Float32Array;
        await releaseSession(s);
        expect(relRms(got, ref)).toBeLessThan(1e-5);

        const decode = buildLayerGraph(`test layer ${l}`, c, 'decode', weights, [part!]);
        expect(decode.states.length).toBeGreaterThan(0);
        const ds = await createSession(decode.bytes, 'decode');
        const state: Record<string, ReturnType<typeof f32>> = {};
        for (const st of decode.states) {
          const dims = st.dims.map((d) => (d === 'B' ? B : typeof d === 'string' ? 0 : d));
          state[st.input] = f32(new Float32Array(dims.reduce((a, x) => a * x, 1)), dims);
        }
        const stepped = new Float32Array(B * T * H);
        for (let t = 0; t < T; t++) {
          const ht = new Float32Array(B * H);
          for (let b = 0; b < B; b++) ht.set(hIn.subarray((b * T + t) * H, (b * T + t + 1) * H), b * H);
          const r = ropeTables(c, [t]);
          const f: Record<string, ReturnType<typeof f32>> = { h0: f32(ht, [B, 1, H]), ...state };
          if (decode.usesPositions) f.positions = i64([t]);
          if (decode.usesRope) Object.assign(f, { rope_cos: f32(r.cos, [1, c.headDim]), rope_sin: f32(r.sin, [1, c.headDim]) });
          const out = await runSession(ds, f, 'decode');
          for (const st of decode.states) state[st.input] = out[st.output!] as ReturnType<typeof f32>;
          const o = out.h0_out!.data as Float32Array;
          for (let b = 0; b < B; b++) stepped.set(o.subarray(b * H, (b + 1) * H), (b * T + t) * H);
        }
        await releaseSession(ds);
        expect(relRms(stepped, ref)).toBeLessThan(1e-5);
      });
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Whole models: nativePrefill / NativeDecoder with student parts vs tfjs studentPrefill

/** Every student configuration the whole-model tests run (hybrids included). */
function modelLayouts(c: { hiddenSize: number; numLayers: number }): { name: string; layout: NativeStudentLayout }[] {
  const H = c.hiddenSize;
  return [
    { name: 'engine', layout: { rest: 'engine' } },
    { name: 'fixed', layout: { rest: 'fixed' } },
    { name: 'adapter-v1 on 0,1 + engine', layout: { adapter: testAdapter([0, 1], H, null, 31), rest: 'engine' } },
    { name: 'adapter-v1 on 0 + softmax', layout: { adapter: testAdapter([0], H, null, 32), rest: 'teacher' } },
    { name: 'adapter-window-3 on 1 + fixed', layout: { adapter: testAdapter([1], H, 3, 33), rest: 'fixed' } },
    { name: 'window-4', layout: { rest: 'teacher', window: 4 } },
    { name: 'hybrid: engine, layer 0 softmax', layout: { rest: 'engine', softmaxLayers: [0] } },
  ];
}

/** tfjs student logits per sequence for a layout. */
function tfjsStudent(model: ModelWeights, seqs: number[][], layout: NativeStudentLayout, chunkSize?: number): Float32Array[] {
  return studentPrefill(model, seqs, { adapter: layout.adapter ?? null, rest: layout.rest ?? 'engine', softmaxLayers: layout.softmaxLayers, window: layout.window, chunkSize }).logits;
}

describe('native student models = tfjs studentPrefill (random model, GQA 3:1)', () => {
  const model = randomModel({ hidden: 24, layers: 3, heads: 6, kvHeads: 2, headDim: 4, vocab: 40, inter: 48 }, 21);
  const c = model.config;
  const V = c.vocabSize;
  const seqs = [Array.from(randoms(19, 8), (u) => Math.floor((u + 1) * 20) % 40), Array.from(randoms(19, 9), (u) => Math.floor((u + 1) * 20) % 40), [1, 5, 9, 2, 7]];

  for (const { name, layout } of modelLayouts(c)) {
    it(`${name}: prefill logits, and decoding step by step = prefill`, async () => {
      const attention = nativeStudentAttention(c, layout, { chunkSize: 8 });
      const got = await nativePrefill(model, seqs, { attention });
      const ref = tfjsStudent(model, seqs, layout, 8);
      got.logits.forEach((g, i) => expect(relRms(g, ref[i]!), `sequence ${i}`).toBeLessThan(1e-5));
      const dec = await NativeDecoder.create(model, attention);
      try {
        let worst = 0;
        for (let t = 0; t < seqs[0]!.length; t++) worst = Math.max(worst, relRms(await dec.step(seqs[0]![t]!), got.logits[0]!.subarray(t * V, (t + 1) * V)));
        expect(worst).toBeLessThan(1e-5);
        // reset() zeroes every state, the gate's in-place (double-buffered) D×D one included.
        dec.reset();
        for (let t = 0; t < 3; t++) expect(relRms(await dec.step(seqs[0]![t]!), got.logits[0]!.subarray(t * V, (t + 1) * V)), `after reset, position ${t}`).toBeLessThan(1e-5);
      } finally {
        await dec.close();
      }
    });
  }

  it('nativePrefillMany over every configuration (shared weights, layer-major) = separate runs', async () => {
    const all = modelLayouts(c);
    const many = await nativePrefillMany(model, seqs, all.map(({ name, layout }) => ({ name, attention: nativeStudentAttention(c, layout) })), { hidden: true });
    for (const { name, layout } of all) {
      const one = await nativePrefill(model, seqs, { attention: nativeStudentAttention(c, layout), hidden: true });
      one.logits.forEach((g, i) => expect(maxAbsDiff(many[name]!.logits[i]!, g), `${name} sequence ${i}`).toBeLessThan(1e-6));
      one.hidden!.forEach((hs, i) => hs.forEach((h, l) => expect(maxAbsDiff(many[name]!.hidden![i]![l]!, h), `${name} hidden.${l}`).toBeLessThan(1e-6)));
    }
  });

  it('parameterless policies share one part (so nativePrefillMany shares their branch)', () => {
    expect(nativeAttentionFor({ kind: 'engine' })).toBe(nativeAttentionFor({ kind: 'engine' }));
    expect(nativeAttentionFor({ kind: 'window', window: 4 })).toBe(nativeAttentionFor({ kind: 'window', window: 4 }));
    expect(nativeAttentionFor({ kind: 'teacher' })).toBeNull();
    const hybrid = nativeStudentAttention(c, { rest: 'engine', softmaxLayers: [1] });
    expect([0, 1, 2].map((l) => hybrid(l) === null)).toEqual([false, true, false]);
    expect(() => hybrid(3)).toThrow(/layer 3 is not in the model/);
    // the tfjs student's refusals
    expect(() => nativeStudentAttention(c, { adapter: initialAdapter([0], 32) })).toThrow(/hidden_size 32 does not match the model's hidden size 24/);
    expect(() => nativeStudentAttention(c, { adapter: initialAdapter([3], 24) })).toThrow(/layers 3 do not exist in the model/);
    expect(() => nativeStudentAttention(c, { rest: 'softmax' as never })).toThrow(/unknown rest policy 'softmax'/);
    expect(() => nativeStudentAttention(c, { window: 0 })).toThrow(/window must be a positive integer/);
  });
});

// ---------------------------------------------------------------------------------------------
// ../shared: the reference engine's logits, the adapter golden, stories260k against tfjs

if (!sharedAvailable()) console.warn(`native-student.test: ${SHARED_DIR}/fixtures not found — skipping the ../shared conformance tests`);
const SHARED_DIRS = sharedAvailable()
  ? [
      ...fs.readdirSync(path.join(SHARED_DIR, 'fixtures')).map((d) => path.join('fixtures', d)),
      ...(fs.existsSync(path.join(SHARED_DIR, 'models')) ? fs.readdirSync(path.join(SHARED_DIR, 'models')).map((d) => path.join('models', d)) : []),
    ].filter((d) => fs.statSync(path.join(SHARED_DIR, d)).isDirectory())
  : [];
const ENGINE_DIRS = SHARED_DIRS.filter((d) => fs.existsSync(path.join(SHARED_DIR, d, 'golden', 'engine-int4.safetensors')) && fs.existsSync(path.join(SHARED_DIR, d, 'symb-int4')));

describe.skipIf(ENGINE_DIRS.length === 0)('golden engine-v0.1.1 logits on symb-int4, native engine (≤ 2e-3, the README\'s tolerance)', () => {
  for (const name of ENGINE_DIRS) {
    it(`${name}: prefill and step-by-step decoding`, async () => {
      const dir = path.join(SHARED_DIR, name);
      const st = SafetensorsFile.open(path.join(dir, 'golden', 'engine-int4.safetensors'));
      const ids = st.readInt('input_ids');
      const ref = st.readFloat32('logits');
      st.close();
      const model = openModel(path.join(dir, 'symb-int4'));
      try {
        const attention = nativeStudentAttention(model.config, { rest: 'engine' });
        const out = await nativePrefill(model, [ids], { attention });
        const prefillErr = maxAbsDiff(out.logits[0]!, ref);
        const V = model.config.vocabSize;
        const dec = await NativeDecoder.create(model, attention);
        let worst = 0;
        try {
          for (let t = 0; t < ids.length; t++) worst = Math.max(worst, maxAbsDiff(await dec.step(ids[t]!), ref.subarray(t * V, (t + 1) * V)));
        } finally {
          await dec.close();
        }
        console.log(`native engine-int4 ${name}: prefill max |Δlogit| = ${prefillErr.toExponential(2)}, decode ${worst.toExponential(2)}`);
        expect(prefillErr).toBeLessThanOrEqual(2e-3);
        expect(worst).toBeLessThanOrEqual(2e-3);
      } finally {
        model.close();
      }
    });
  }
});

const ADAPTER_DIRS = SHARED_DIRS.filter((d) => fs.existsSync(path.join(SHARED_DIR, d, 'golden', 'adapter.safetensors')));

describe.skipIf(ADAPTER_DIRS.length === 0)('golden adapter-v1 student outputs, native engine (1e-4 relative)', () => {
  for (const name of ADAPTER_DIRS) {
    it(`${name}: hidden.1 / hidden.2 = student_out.student.0 / .1`, async () => {
      const dir = path.join(SHARED_DIR, name);
      const file = path.join(dir, 'golden', 'adapter.safetensors');
      const golden = readAllFloat32(file);
      const st = SafetensorsFile.open(file);
      const ids = st.readInt('input_ids');
      const layers = (st.metadata?.layers ?? '0,1').split(',').map(Number);
      st.close();
      const model = openModel(path.join(dir, 'hf'));
      try {
        const adapter = initialAdapter(layers, model.config.hiddenSize);
        layers.forEach((_, i) => {
          adapter.params[i] = {
            gateBias: golden[`gate_bias.${i}`]!.data[0]!,
            gateScale: golden[`gate_scale.${i}`]!.data[0]!,
            outputScale: golden[`output_scale.${i}`]!.data,
            mixAlpha: golden[`mix_alpha.${i}`]!.data[0]!,
          };
        });
        const out = await nativePrefill(model, [ids], { attention: nativeStudentAttention(model.config, { adapter, rest: 'engine' }), hidden: true, logits: false });
        layers.forEach((l, i) => {
          const ref = golden[`student_out.student.${i}`]!.data;
          const got = out.hidden![0]![l + 1]!;
          expect(relRms(got, ref)).toBeLessThan(1e-4);
          expect(maxAbsDiff(got, ref)).toBeLessThan(1e-4 * Math.max(...Array.from(ref, Math.abs)));
        });
      } finally {
        model.close();
      }
    });
  }
});

const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');
const storiesAvailable = sharedAvailable() && fs.existsSync(path.join(STORIES, 'golden', 'greedy.json'));

describe.skipIf(!storiesAvailable)('stories260k: every policy, native engine = tfjs on the same files', () => {
  for (const variant of ['symb-int4', 'symb-fp16'] as const) {
    describe(variant, () => {
      let model: ModelWeights;
      let seqs: number[][];
      beforeAll(() => {
        model = openModel(path.join(STORIES, variant));
        const greedy = JSON.parse(fs.readFileSync(path.join(STORIES, 'golden', 'greedy.json'), 'utf8')) as { ids: number[] };
        // 65 ids: two gate chunks of 64 at D = 64; and a short second window.
        seqs = [greedy.ids, greedy.ids.slice(0, 20)];
      });
      afterAll(() => model?.close());
      for (const { name, layout } of modelLayouts({ hiddenSize: 64, numLayers: 5 })) {
        it(`${name}: logits within 2e-3 (max abs) and 1e-4 (relative RMS)`, async () => {
          const got = await nativePrefill(model, seqs, { attention: nativeStudentAttention(model.config, layout) });
          const ref = tfjsStudent(model, seqs, layout);
          console.log(`stories260k ${variant} ${name}: max |Δlogit| native vs tfjs = ${Math.max(...got.logits.map((g, i) => maxAbsDiff(g, ref[i]!))).toExponential(2)}`);
          got.logits.forEach((g, i) => {
            expect(maxAbsDiff(g, ref[i]!), `sequence ${i}`).toBeLessThanOrEqual(2e-3);
            expect(relRms(g, ref[i]!), `sequence ${i}`).toBeLessThan(1e-4);
          });
        });
      }
    });
  }
});
