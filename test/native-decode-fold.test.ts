/**
 * The native decoder's deferred gate state (gateGraph.ts gateDeferredStepOps / gateFoldOps,
 * NativeDecoder with runnerFolds): M_base plus a buffer of the last ≤ C tokens, folded every C.
 * - the step and fold graphs, driven as the decoder drives them, = the float64 recurrent gate
 *   (gate.naive.ts), saturated gates included, across several fold boundaries;
 * - the plain step from raw decode inputs (gateDecodeStepOps, small states) = the same reference;
 * - whole random models: decoding 3·C+1 tokens (three folds) = prefill logits, = the plain
 *   recurrent step, for every gated policy; after reset() (mid-buffer) the same again.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { GraphBuilder } from '../src/runtime/ort/graph.ts';
import { createSession, f32, releaseSession, runSession } from '../src/runtime/ort/session.ts';
import { gateRecurrentNaive } from '../src/model/gate.naive.ts';
import { buildGateFoldGraph, FOLD_IO, gateDecodeStepOps, gateDeferredStepOps, gateLogsOps } from '../src/native/gateGraph.ts';
import { DECODE_CHUNK, nativeStudentAttention, type NativeStudentLayout } from '../src/native/gatePart.ts';
import { nativePrefill, NativeDecoder } from '../src/native/model.ts';
import { DEFERRED_MIN_STATE_BYTES } from '../src/native/decoder.ts';
import { initialAdapter } from '../src/formats/adapter.ts';
import { randoms, relRms } from './helpers/numeric.ts';
import { randomModel } from './helpers/randomModel.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

/** Token t of every batch row of x [B, T, n], as [B, n]. */
function tokenRows(x: Float32Array, B: number, T: number, t: number, n: number): Float32Array {
  const o = new Float32Array(B * n);
  for (let b = 0; b < B; b++) o.set(x.subarray((b * T + t) * n, (b * T + t + 1) * n), b * n);
  return o;
}

describe('deferred gate graphs = float64 recurrent gate', () => {
  for (const [B, T, D, C, label] of [
    [2, 13, 8, 4, 'three folds and one token'],
    [1, 11, 6, 1, 'C = 1: a fold after every token'],
    [2, 7, 8, 16, 'never folds'],
    [1, 25, 8, 8, 'saturated gates'],
  ] as const) {
    it(`B=${B} T=${T} D=${D} C=${C}: ${label}`, async () => {
      const g = new GraphBuilder('deferred-step');
      const ins = ['q', 'k', 'v'].map((n) => g.input(n, 'float32', ['B', 1, D]));
      const z = g.input('z', 'float32', ['B', 1, 1]);
      const base = g.input('base', 'float32', ['B', D, D]);
      const buf = { keys: g.input('keys', 'float32', ['B', C, D]), values: g.input('values', 'float32', ['B', C, D]), logs: g.input('logs', 'float32', ['B', C, 2]) };
      const step = gateDeferredStepOps(g, { q: ins[0]!, kHat: ins[1]!, vHat: ins[2]!, ...gateLogsOps(g, z) }, base, buf, D, C);
      g.output(step.r, 'float32', ['B', 1, D], 'r');
      g.output(step.buffer.keys, 'float32', ['B', C, D], 'keys_out');
      g.output(step.buffer.values, 'float32', ['B', C, D], 'values_out');
      g.output(step.buffer.logs, 'float32', ['B', C, 2], 'logs_out');
      const s = await createSession(g.toBytes(), 'deferred step test');
      const fold = await createSession(buildGateFoldGraph('fold test', D, C), 'fold test');
      const q = randoms(B * T * D, 1 + T);
      const k = randoms(B * T * D, 2 + T);
      const v = randoms(B * T * D, 3 + T);
      const zs = randoms(B * T, 4 + T, 3);
      if (label === 'saturated gates') zs.forEach((x, i) => (zs[i] = i % 3 === 0 ? 1e4 : i % 3 === 1 ? -1e4 : x * 20));
      let state: Record<'base' | 'keys' | 'values' | 'logs', Float32Array> = { base: new Float32Array(B * D * D), keys: new Float32Array(B * C * D), values: new Float32Array(B * C * D), logs: new Float32Array(B * C * 2) };
      const got = new Float32Array(B * T * D);
      const tok = (x: Float32Array, t: number, n: number) => tokenRows(x, B, T, t, n);
      for (let t = 0; t < T; t++) {
        const out = await runSession(
          s,
          { q: f32(tok(q, t, D), [B, 1, D]), k: f32(tok(k, t, D), [B, 1, D]), v: f32(tok(v, t, D), [B, 1, D]), z: f32(tok(zs, t, 1), [B, 1, 1]), base: f32(state.base, [B, D, D]), keys: f32(state.keys, [B, C, D]), values: f32(state.values, [B, C, D]), logs: f32(state.logs, [B, C, 2]) },
          'deferred step test',
        );
        const r = out.r!.data as Float32Array;
        for (let b = 0; b < B; b++) got.set(r.subarray(b * D, (b + 1) * D), (b * T + t) * D);
        state = { base: state.base, keys: out.keys_out!.data as Float32Array, values: out.values_out!.data as Float32Array, logs: out.logs_out!.data as Float32Array };
        if ((t + 1) % C === 0) {
          // What the decoder does with a full buffer: fold it into M_base, then empty it.
          const f = await runSession(fold, { [FOLD_IO.base]: f32(state.base, [B, D, D]), [FOLD_IO.keys]: f32(state.keys, [B, C, D]), [FOLD_IO.values]: f32(state.values, [B, C, D]), [FOLD_IO.logs]: f32(state.logs, [B, C, 2]) }, 'fold test');
          state = { base: f.base_out!.data as Float32Array, keys: new Float32Array(B * C * D), values: new Float32Array(B * C * D), logs: new Float32Array(B * C * 2) };
        }
      }
      await releaseSession(s);
      await releaseSession(fold);
      for (let b = 0; b < B; b++) {
        const sl = (x: Float32Array, n: number) => x.subarray(b * T * n, (b + 1) * T * n);
        const ref = gateRecurrentNaive(sl(q, D), sl(k, D), sl(v, D), sl(zs, 1), T, D);
        const mine = sl(got, D);
        expect(mine.every(Number.isFinite)).toBe(true);
        expect(relRms(mine, ref.r), `sequence ${b}`).toBeLessThan(1e-5);
      }
    });
  }
});

describe('plain decode step from raw inputs (gateDecodeStepOps) = float64 recurrent gate', () => {
  for (const gate of ['logit', 'saturated', 'constant'] as const) {
    it(`gate ${gate}`, async () => {
      const [B, T, D] = [2, 9, 8];
      const g = new GraphBuilder('decode-step');
      const ins = ['q', 'k', 'v'].map((n) => g.input(n, 'float32', ['B', 1, D]));
      const xNorm = g.input('xnorm', 'float32', ['B', 1, 1]);
      const z = g.input('z', 'float32', ['B', 1, 1]);
      const m = g.input('m', 'float32', ['B', D, D]);
      const step = gateDecodeStepOps(g, ins[0]!, ins[1]!, ins[2]!, xNorm, gate === 'constant' ? { constant: 0.9 } : { z }, m, D);
      g.output(step.r, 'float32', ['B', 1, D], 'r');
      g.output(step.state, 'float32', ['B', D, D], 'm_out');
      const s = await createSession(g.toBytes(), 'decode step test');
      const [q, k, v] = [randoms(B * T * D, 51), randoms(B * T * D, 52, 3), randoms(B * T * D, 53, 0.5)];
      const xn = Float32Array.from(randoms(B * T, 54), (u) => 1.5 + u);
      const zs = gate === 'constant' ? new Float32Array(B * T).fill(Math.log(0.9 / 0.1)) : Float32Array.from(randoms(B * T, 55, 3), (x, i) => (gate === 'saturated' ? (i % 3 === 0 ? 1e4 : i % 3 === 1 ? -1e4 : x * 20) : x));
      let state: Float32Array = new Float32Array(B * D * D);
      const got = new Float32Array(B * T * D);
      const tok = (x: Float32Array, t: number, n: number) => tokenRows(x, B, T, t, n);
      for (let t = 0; t < T; t++) {
        const out = await runSession(s, { q: f32(tok(q, t, D), [B, 1, D]), k: f32(tok(k, t, D), [B, 1, D]), v: f32(tok(v, t, D), [B, 1, D]), xnorm: f32(tok(xn, t, 1), [B, 1, 1]), z: f32(tok(zs, t, 1), [B, 1, 1]), m: f32(state, [B, D, D]) }, 'decode step test');
        state = out.m_out!.data as Float32Array;
        const r = out.r!.data as Float32Array;
        for (let b = 0; b < B; b++) got.set(r.subarray(b * D, (b + 1) * D), (b * T + t) * D);
      }
      await releaseSession(s);
      for (let b = 0; b < B; b++) {
        // k̂ = k/(‖k‖+1e-8), v̂ = v/(‖v‖+1e-8)·‖x‖ in float64, then the recurrence.
        const kHat = new Float64Array(T * D);
        const vHat = new Float64Array(T * D);
        for (let t = 0; t < T; t++) {
          const row = (x: Float32Array) => Array.from(x.subarray((b * T + t) * D, (b * T + t + 1) * D));
          const norm = (r: number[]) => Math.sqrt(r.reduce((a, u) => a + u * u, 0));
          const [kr, vr] = [row(k), row(v)];
          kr.forEach((u, i) => (kHat[t * D + i] = u / (norm(kr) + 1e-8)));
          vr.forEach((u, i) => (vHat[t * D + i] = (u / (norm(vr) + 1e-8)) * xn[b * T + t]!));
        }
        const ref = gateRecurrentNaive(q.subarray(b * T * D, (b + 1) * T * D), kHat, vHat, zs.subarray(b * T, (b + 1) * T), T, D);
        const mine = got.subarray(b * T * D, (b + 1) * T * D);
        expect(mine.every(Number.isFinite)).toBe(true);
        expect(relRms(mine, ref.r), `sequence ${b}`).toBeLessThan(1e-5);
      }
    });
  }
});

describe('NativeDecoder with the deferred gate state = prefill (random model, GQA 3:1)', () => {
  const model = randomModel({ hidden: 24, layers: 3, heads: 6, kvHeads: 2, headDim: 4, vocab: 40, inter: 48 }, 21);
  const c = model.config;
  const V = c.vocabSize;
  const C = 4;
  const seq = Array.from(randoms(3 * C + 1, 8), (u) => Math.floor((u + 1) * 20) % 40);
  const other = Array.from(randoms(2 * C + 3, 9), (u) => Math.floor((u + 1) * 20) % 40);
  const adapter = initialAdapter([0, 2], c.hiddenSize);
  adapter.params.forEach((p, i) => Object.assign(p, { gateBias: 0.3 * i - 0.2, gateScale: 1.5, mixAlpha: 0.7, outputScale: randoms(c.hiddenSize, 40 + i) }));
  const windowAdapter = initialAdapter([1], c.hiddenSize, 3);
  Object.assign(windowAdapter.params[0]!, { gateBias: 0.4, gateScale: 0.8, mixAlpha: -0.3, windowMix: 0.6 });
  const layouts: { name: string; layout: NativeStudentLayout }[] = [
    { name: 'engine', layout: { rest: 'engine' } },
    { name: 'fixed', layout: { rest: 'fixed' } },
    { name: 'adapter-v1 on 0,2 + engine', layout: { adapter, rest: 'engine' } },
    { name: 'adapter-window-3 on 1 + fixed', layout: { adapter: windowAdapter, rest: 'fixed' } },
    { name: 'hybrid: engine, layer 1 softmax', layout: { rest: 'engine', softmaxLayers: [1] } },
  ];
  for (const { name, layout } of layouts) {
    it(`${name}: ${3 * C + 1} tokens (three folds) = prefill = the plain step; reset() mid-buffer starts over`, async () => {
      const attention = nativeStudentAttention(c, layout, { chunkSize: 8, decodeChunk: C });
      const ref = await nativePrefill(model, [seq, other], { attention });
      const deferred = await NativeDecoder.create(model, attention, { runnerFolds: true, stackBytes: 1 });
      const plain = await NativeDecoder.create(model, attention, { runnerFolds: false });
      try {
        expect(deferred.deferredLayers).toBe(name.startsWith('hybrid') ? 2 : 3);
        expect(plain.deferredLayers).toBe(0);
        for (let t = 0; t < seq.length; t++) {
          const got = await deferred.step(seq[t]!);
          expect(relRms(got, ref.logits[0]!.subarray(t * V, (t + 1) * V)), `position ${t}`).toBeLessThan(1e-5);
          expect(relRms(got, await plain.step(seq[t]!)), `position ${t} vs plain`).toBeLessThan(1e-5);
        }
        // Stop mid-buffer (after a fold), reset, and decode another sequence across two folds.
        deferred.reset();
        expect(deferred.position).toBe(0);
        for (let t = 0; t < other.length; t++) {
          expect(relRms(await deferred.step(other[t]!), ref.logits[1]!.subarray(t * V, (t + 1) * V)), `after reset, position ${t}`).toBeLessThan(1e-5);
        }
      } finally {
        await deferred.close();
        await plain.close();
      }
    });
  }
});

describe('NativeDecoder picks the deferred state for large gate states', () => {
  // D = 4·64 = 256: a 256 KiB state, DEFERRED_MIN_STATE_BYTES; default DECODE_CHUNK tokens + 2 cross a fold.
  const model = randomModel({ hidden: 64, layers: 1, heads: 4, kvHeads: 2, headDim: 64, vocab: 40, inter: 64 }, 5);
  const c = model.config;
  const V = c.vocabSize;

  it(`D = 256 by default: ${DECODE_CHUNK + 2} tokens (one fold) = prefill`, async () => {
    expect(4 * 256 * 256).toBe(DEFERRED_MIN_STATE_BYTES);
    const seq = Array.from(randoms(DECODE_CHUNK + 2, 3), (u) => Math.floor((u + 1) * 20) % 40);
    const attention = nativeStudentAttention(c, { rest: 'engine' });
    const ref = await nativePrefill(model, [seq], { attention });
    const dec = await NativeDecoder.create(model, attention);
    try {
      expect(dec.deferredLayers).toBe(1);
      let worst = 0;
      for (let t = 0; t < seq.length; t++) worst = Math.max(worst, relRms(await dec.step(seq[t]!), ref.logits[0]!.subarray(t * V, (t + 1) * V)));
      expect(worst).toBeLessThan(1e-5);
    } finally {
      await dec.close();
    }
  });
});
