/**
 * The symbiotic gate kernels against a slow, obvious float64 reference (src/model/gate.naive.ts: the
 * per-token recurrence M_t = g_t M_{t-1} + (1−g_t) k̂_t v̂_tᵀ, r_t = q_tᵀ M_t written as plain loops,
 * and the chunked form's algebra written out the same way), and the two tfjs
 * forms (recurrent, chunked parallel) against each other — values, final states and gradients
 * with respect to the adapter parameters — for awkward lengths, GQA ratios and saturated gates.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/runtime/backend.ts';
import { repeatKv } from '../src/model/nn.ts';
import {
  defaultChunkSize,
  gateChunked,
  gateChunkedOutput,
  gateLogs,
  gateRecurrent,
  gateRecurrentStep,
  gateScores,
  logOneMinusSigmoid,
  logSigmoid,
  normalizeKeys,
  normalizeValues,
  rowNorms,
  type GateSequence,
} from '../src/model/gate.ts';
import { gateChunkedNaive, gateRecurrentNaive as referenceGate, sigmoid64 } from '../src/model/gate.naive.ts';
import { randoms, relRms } from './helpers/numeric.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

// ---------------------------------------------------------------------------------------------
// helpers

function allFinite(x: ArrayLike<number>): boolean {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return false;
  return true;
}

/** Unit-norm rows (what k̂ is), as plain arrays. */
function unitRows(x: Float32Array, T: number, D: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let t = 0; t < T; t++) {
    let n = 0;
    for (let i = 0; i < D; i++) n += x[t * D + i] ** 2;
    n = Math.sqrt(n);
    for (let i = 0; i < D; i++) out[t * D + i] = x[t * D + i] / n;
  }
  return out;
}

interface Case {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  z: Float32Array;
  T: number;
  D: number;
}

function makeCase(T: number, D: number, seed: number, z: (t: number) => number): Case {
  return {
    q: randoms(T * D, seed),
    k: unitRows(randoms(T * D, seed + 1), T, D),
    v: randoms(T * D, seed + 2, 2),
    z: Float32Array.from({ length: T }, (_, t) => z(t)),
    T,
    D,
  };
}

function toSequence(c: Case): GateSequence {
  const z = tf.tensor1d(c.z);
  const { logGate, logOneMinusGate } = gateLogs(z);
  z.dispose();
  return {
    q: tf.tensor2d(c.q, [c.T, c.D]),
    kHat: tf.tensor2d(c.k, [c.T, c.D]),
    vHat: tf.tensor2d(c.v, [c.T, c.D]),
    logGate,
    logOneMinusGate,
  };
}

function disposeSeq(s: GateSequence): void {
  Object.values(s).forEach((t) => (t as tf.Tensor).dispose());
}

function host(t: tf.Tensor): Float32Array {
  const d = t.dataSync() as Float32Array;
  t.dispose();
  return d;
}

const GATE_PATTERNS: Record<string, (t: number, seed: number) => number> = {
  random: (t, s) => randoms(1, s * 1000 + t)[0] * 4,
  'near 1 (z=50)': () => 50,
  'near 0 (z=-50)': () => -50,
  'saturated 1 (z=1e4)': () => 1e4,
  'saturated 0 (z=-1e4)': () => -1e4,
  'mixed ±50 / ±1e4': (t) => [50, -50, 1e4, -1e4, 0.3, 50, 50][t % 7],
};

// ---------------------------------------------------------------------------------------------

describe('gate logs and per-token quantities', () => {
  it('log σ(z) and log(1−σ(z)) are exact and finite for saturated z, with finite gradients', () => {
    const zs = [-1e4, -50, -20, -1, 0, 0.5, 20, 50, 1e4];
    const z = tf.tensor1d(zs);
    const lg = host(logSigmoid(z));
    const l1m = host(logOneMinusSigmoid(z));
    zs.forEach((zi, i) => {
      const expLg = zi >= 0 ? -Math.log1p(Math.exp(-zi)) : zi - Math.log1p(Math.exp(zi));
      const expL1m = zi >= 0 ? -zi - Math.log1p(Math.exp(-zi)) : -Math.log1p(Math.exp(zi));
      expect(Math.abs(lg[i] - expLg)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(expLg)));
      expect(Math.abs(l1m[i] - expL1m)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(expL1m)));
    });
    // d/dz log σ(z) = σ(−z); d/dz log(1−σ(z)) = −σ(z)
    const g1 = host(tf.grad((x: tf.Tensor) => tf.sum(logSigmoid(x)))(z));
    const g2 = host(tf.grad((x: tf.Tensor) => tf.sum(logOneMinusSigmoid(x)))(z));
    zs.forEach((zi, i) => {
      expect(g1[i]).toBeCloseTo(sigmoid64(-zi), 6);
      expect(g2[i]).toBeCloseTo(-sigmoid64(zi), 6);
    });
    z.dispose();
  });

  it('gateScores, normalizeKeys, normalizeValues match plain loops (GQA-expanded k, v)', () => {
    const T = 5;
    const nHeads = 6;
    const nKv = 2;
    const hd = 4;
    const D = nHeads * hd;
    const q = randoms(T * D, 11);
    const kKv = randoms(T * nKv * hd, 12);
    const vKv = randoms(T * nKv * hd, 13);
    const xNorm = Float32Array.from(randoms(T, 14), (x) => Math.abs(x) * 5 + 0.1);
    // plain GQA expansion: head h reads kv head ⌊h / (nHeads/nKv)⌋
    const expand = (x: Float32Array) => {
      const out = new Float32Array(T * D);
      for (let t = 0; t < T; t++) for (let h = 0; h < nHeads; h++) for (let i = 0; i < hd; i++) out[t * D + h * hd + i] = x[t * nKv * hd + Math.floor(h / (nHeads / nKv)) * hd + i];
      return out;
    };
    const kE = expand(kKv);
    const vE = expand(vKv);
    const kT = repeatKv(tf.tensor2d(kKv, [T, nKv * hd]), nKv, nHeads / nKv, hd);
    const vT = repeatKv(tf.tensor2d(vKv, [T, nKv * hd]), nKv, nHeads / nKv, hd);
    expect(Array.from(kT.dataSync())).toEqual(Array.from(kE));
    const qT = tf.tensor2d(q, [T, D]);
    const s = host(gateScores(qT, kT, nHeads, hd));
    const kh = host(normalizeKeys(kT));
    const xn = tf.tensor1d(xNorm);
    const vh = host(normalizeValues(vT, xn));
    for (let t = 0; t < T; t++) {
      let mean = 0;
      for (let h = 0; h < nHeads; h++) {
        let dot = 0;
        for (let i = 0; i < hd; i++) dot += q[t * D + h * hd + i] * kE[t * D + h * hd + i];
        mean += dot / Math.sqrt(hd) / nHeads;
      }
      expect(s[t]).toBeCloseTo(mean, 5);
      let kn = 0;
      let vn = 0;
      for (let i = 0; i < D; i++) {
        kn += kE[t * D + i] ** 2;
        vn += vE[t * D + i] ** 2;
      }
      for (let i = 0; i < D; i++) {
        expect(kh[t * D + i]).toBeCloseTo(kE[t * D + i] / (Math.sqrt(kn) + 1e-8), 6);
        expect(vh[t * D + i]).toBeCloseTo((vE[t * D + i] / (Math.sqrt(vn) + 1e-8)) * xNorm[t], 5);
      }
    }
    const norms = host(rowNorms(qT));
    for (let t = 0; t < T; t++) {
      let n = 0;
      for (let i = 0; i < D; i++) n += q[t * D + i] ** 2;
      expect(norms[t]).toBeCloseTo(Math.sqrt(n), 5);
    }
    [kT, vT, qT, xn].forEach((x) => x.dispose());
  });

  it('the default chunk grows with D and stays in [64, 512]', () => {
    expect(defaultChunkSize(8)).toBe(64);
    expect(defaultChunkSize(64)).toBe(64);
    expect(defaultChunkSize(96)).toBe(128);
    expect(defaultChunkSize(4096)).toBe(512);
  });
});

describe('recurrent form = float64 reference', () => {
  it('one step by hand', () => {
    const D = 3;
    const M = tf.tensor2d([1, 2, 3, 4, 5, 6, 7, 8, 9], [D, D]);
    const q = tf.tensor1d([1, 0, -1]);
    const k = tf.tensor1d([0, 1, 0]);
    const v = tf.tensor1d([2, 0, 1]);
    const g = 0.75;
    const step = gateRecurrentStep(M, q, k, v, Math.log(g), Math.log(1 - g));
    // M' = 0.75 M + 0.25 k vᵀ: row 1 gets + [0.5, 0, 0.25]
    const expectedM = [0.75, 1.5, 2.25, 3.5, 3.75, 4.75, 5.25, 6, 6.75];
    const gotM = host(step.state);
    expectedM.forEach((e, i) => expect(gotM[i]).toBeCloseTo(e, 6));
    // r = qᵀ M' = row0 − row2
    const gotR = host(step.r);
    [0.75 - 5.25, 1.5 - 6, 2.25 - 6.75].forEach((e, i) => expect(gotR[i]).toBeCloseTo(e, 5));
    [M, q, k, v].forEach((x) => x.dispose());
  });

  it('matches the float64 loop on outputs and final state', () => {
    const c = makeCase(13, 12, 5, (t) => GATE_PATTERNS.random(t, 5));
    const ref = referenceGate(c.q, c.k, c.v, c.z, c.T, c.D);
    const seq = toSequence(c);
    const out = gateRecurrent(seq);
    expect(relRms(host(out.r), ref.r)).toBeLessThan(1e-5);
    expect(relRms(host(out.state), ref.state)).toBeLessThan(1e-5);
    disposeSeq(seq);
  });
});

describe('chunked parallel form = recurrent form = float64 reference', () => {
  const shapes: Array<{ T: number; C: number; why: string }> = [
    { T: 1, C: 8, why: 'single token' },
    { T: 5, C: 8, why: 'T < C' },
    { T: 8, C: 8, why: 'T = C' },
    { T: 37, C: 8, why: 'T not a multiple of C' },
    { T: 48, C: 16, why: 'several whole chunks' },
  ];
  for (const { T, C, why } of shapes) {
    for (const [pattern, z] of Object.entries(GATE_PATTERNS)) {
      it(`T=${T}, C=${C} (${why}), gates ${pattern}`, () => {
        const D = 16;
        const c = makeCase(T, D, T * 7 + C, (t) => z(t, T));
        const ref = referenceGate(c.q, c.k, c.v, c.z, T, D);
        const seq = toSequence(c);
        const chunked = gateChunked(seq, C);
        const rC = host(chunked.r);
        const sC = host(chunked.state);
        const rec = gateRecurrent(seq);
        const rR = host(rec.r);
        const sR = host(rec.state);
        const rOnly = host(gateChunkedOutput(seq, C));
        disposeSeq(seq);
        for (const x of [rC, sC, rR, sR, rOnly]) expect(allFinite(x)).toBe(true);
        expect(relRms(rC, ref.r)).toBeLessThan(1e-5);
        expect(relRms(sC, ref.state)).toBeLessThan(1e-5);
        expect(relRms(rC, rR)).toBeLessThan(1e-4);
        expect(relRms(sC, sR)).toBeLessThan(1e-4);
        expect(Array.from(rOnly)).toEqual(Array.from(rC));
        // the chunked algebra itself, in float64, equals the recurrence
        const naiveChunked = gateChunkedNaive(c.q, c.k, c.v, c.z, T, D, C);
        expect(relRms(naiveChunked.r, ref.r)).toBeLessThan(1e-12);
        expect(relRms(naiveChunked.state, ref.state)).toBeLessThan(1e-12);
      });
    }
  }

  it('continues from an initial state (= one run over the concatenation)', () => {
    const D = 12;
    const whole = makeCase(29, D, 99, (t) => GATE_PATTERNS.random(t, 9));
    const ref = referenceGate(whole.q, whole.k, whole.v, whole.z, 29, D);
    const split = 11;
    const part = (c: Case, a: number, b: number): Case => ({
      q: c.q.slice(a * D, b * D), k: c.k.slice(a * D, b * D), v: c.v.slice(a * D, b * D), z: c.z.slice(a, b), T: b - a, D,
    });
    const first = toSequence(part(whole, 0, split));
    const second = toSequence(part(whole, split, 29));
    const a = gateChunked(first, 8);
    const b = gateChunked(second, 8, a.state);
    const bOnly = host(gateChunkedOutput(second, 8, a.state));
    const recB = gateRecurrent(second, a.state);
    const r = new Float32Array(29 * D);
    r.set(host(a.r), 0);
    const rB = host(b.r);
    r.set(rB, split * D);
    expect(relRms(r, ref.r)).toBeLessThan(1e-5);
    expect(relRms(host(b.state), ref.state)).toBeLessThan(1e-5);
    expect(relRms(bOnly, rB)).toBeLessThan(1e-6);
    expect(relRms(host(recB.r), rB)).toBeLessThan(1e-4);
    // the float64 references continue from a state the same way (the first reads only its first `split` tokens)
    const refA = referenceGate(whole.q, whole.k, whole.v, whole.z, split, D);
    const partB = part(whole, split, 29);
    const naiveB = gateChunkedNaive(partB.q, partB.k, partB.v, partB.z, partB.T, D, 8, refA.state);
    expect(relRms(naiveB.r, ref.r.slice(split * D))).toBeLessThan(1e-12);
    expect(relRms(naiveB.state, ref.state)).toBeLessThan(1e-12);
    a.state.dispose();
    recB.state.dispose();
    disposeSeq(first);
    disposeSeq(second);
  });

  it('leaks no tensors', () => {
    const c = makeCase(21, 8, 3, (t) => GATE_PATTERNS.random(t, 3));
    const seq = toSequence(c);
    const before = tf.memory().numTensors;
    const out = gateChunked(seq, 8);
    const rOnly = gateChunkedOutput(seq, 8);
    const rec = gateRecurrent(seq);
    expect(tf.memory().numTensors).toBe(before + 5);
    [out.r, out.state, rOnly, rec.r, rec.state].forEach((t) => t.dispose());
    disposeSeq(seq);
  });
});

/**
 * The adapter-v1 attention block up to its output, written directly on the gate kernels:
 * z = s·gate_scale + gate_bias, o = σ(mix)·((W_o r) ⊙ output_scale) + (1−σ(mix))·x.
 */
function adapterBlock(
  form: 'chunked' | 'recurrent',
  C: number,
  x: tf.Tensor2D,
  q: tf.Tensor2D,
  kKv: tf.Tensor2D,
  vKv: tf.Tensor2D,
  wo: tf.Tensor2D,
  p: { gateBias: tf.Scalar; gateScale: tf.Scalar; outputScale: tf.Tensor1D; mixAlpha: tf.Scalar },
  heads: { nHeads: number; nKv: number; hd: number },
): tf.Tensor2D {
  const nRep = heads.nHeads / heads.nKv;
  const k = repeatKv(kKv, heads.nKv, nRep, heads.hd);
  const v = repeatKv(vKv, heads.nKv, nRep, heads.hd);
  const z = tf.add(tf.mul(gateScores(q, k, heads.nHeads, heads.hd), p.gateScale), p.gateBias) as tf.Tensor1D;
  const seq: GateSequence = { q, kHat: normalizeKeys(k), vHat: normalizeValues(v, rowNorms(x)), ...gateLogs(z) };
  const r = form === 'chunked' ? gateChunkedOutput(seq, C) : gateRecurrent(seq).r;
  const a = tf.mul(tf.matMul(r, wo, false, true), p.outputScale);
  const alpha = tf.sigmoid(p.mixAlpha);
  return tf.add(tf.mul(a, alpha), tf.mul(x, tf.sub(1, alpha))) as tf.Tensor2D;
}

describe('gradients w.r.t. the adapter parameters: chunked = recurrent', () => {
  const cases = [
    { ratio: 1, T: 19, C: 8, bias: 0.3, scale: 1.2 },
    { ratio: 2, T: 6, C: 8, bias: -0.5, scale: 0.8 },
    { ratio: 3, T: 24, C: 8, bias: 1.0, scale: 2.0 },
    { ratio: 4, T: 33, C: 16, bias: 0.0, scale: 1.0 },
    { ratio: 2, T: 21, C: 8, bias: 40, scale: 1.0, why: 'gates near 1' },
    { ratio: 2, T: 21, C: 8, bias: -40, scale: 1.0, why: 'gates near 0' },
    { ratio: 4, T: 17, C: 8, bias: 1e4, scale: 1.0, why: 'gates saturated at 1' },
    { ratio: 4, T: 17, C: 8, bias: -1e4, scale: 1.0, why: 'gates saturated at 0' },
  ];
  for (const cs of cases) {
    it(`GQA ${cs.ratio}:1, T=${cs.T}, C=${cs.C}, gate_bias ${cs.bias}${cs.why ? ` (${cs.why})` : ''}`, () => {
      const nKv = 2;
      const nHeads = nKv * cs.ratio;
      const hd = 4;
      const D = nHeads * hd;
      const hidden = 10;
      const T = cs.T;
      const seed = cs.ratio * 100 + T;
      const x = tf.tensor2d(randoms(T * hidden, seed), [T, hidden]);
      const q = tf.tensor2d(randoms(T * D, seed + 1, 2), [T, D]);
      const kKv = tf.tensor2d(randoms(T * nKv * hd, seed + 2, 2), [T, nKv * hd]);
      const vKv = tf.tensor2d(randoms(T * nKv * hd, seed + 3), [T, nKv * hd]);
      const wo = tf.tensor2d(randoms(hidden * D, seed + 4, 0.5), [hidden, D]);
      const target = tf.tensor2d(randoms(T * hidden, seed + 5), [T, hidden]);
      const params = {
        gateBias: tf.variable(tf.scalar(cs.bias)),
        gateScale: tf.variable(tf.scalar(cs.scale)),
        outputScale: tf.variable(tf.tensor1d(Float32Array.from(randoms(hidden, seed + 6), (u) => 0.1 + 0.05 * u))),
        mixAlpha: tf.variable(tf.scalar(0.2)),
      };
      const heads = { nHeads, nKv, hd };
      const run = (form: 'chunked' | 'recurrent') => {
        const { value, grads } = tf.variableGrads(() => tf.mean(tf.squaredDifference(adapterBlock(form, cs.C, x, q, kKv, vKv, wo, params, heads), target)) as tf.Scalar);
        const out = {
          loss: host(value)[0],
          gateBias: host(grads[params.gateBias.name]),
          gateScale: host(grads[params.gateScale.name]),
          outputScale: host(grads[params.outputScale.name]),
          mixAlpha: host(grads[params.mixAlpha.name]),
        };
        Object.values(grads).forEach((g) => g.dispose());
        return out;
      };
      const chunked = run('chunked');
      const recurrent = run('recurrent');
      const outC = host(tf.tidy(() => adapterBlock('chunked', cs.C, x, q, kKv, vKv, wo, params, heads)));
      const outR = host(tf.tidy(() => adapterBlock('recurrent', cs.C, x, q, kKv, vKv, wo, params, heads)));
      [x, q, kKv, vKv, wo, target, ...Object.values(params)].forEach((t) => t.dispose());

      expect(allFinite(outC)).toBe(true);
      expect(relRms(outC, outR)).toBeLessThan(1e-4);
      expect(Math.abs(chunked.loss - recurrent.loss)).toBeLessThanOrEqual(1e-5 * Math.abs(recurrent.loss));
      for (const name of ['gateBias', 'gateScale', 'outputScale', 'mixAlpha'] as const) {
        expect(allFinite(chunked[name]), `${name} finite`).toBe(true);
        expect(allFinite(recurrent[name]), `${name} finite (recurrent)`).toBe(true);
        // Saturated gates have (numerically) zero gate gradients: compare absolutely there.
        const scaleRef = Math.sqrt(recurrent[name].reduce((s, g) => s + g * g, 0));
        if (scaleRef < 1e-12) expect(Math.max(...Array.from(chunked[name], Math.abs))).toBeLessThan(1e-9);
        else expect(relRms(chunked[name], recurrent[name]), name).toBeLessThan(1e-4);
      }
    });
  }
});

describe('gradient registry fixes (src/runtime/gradients.ts)', () => {
  it('cumsum gradient along a non-last axis is the reverse cumulative sum on that axis', () => {
    for (const shape of [[3, 2], [3, 3]] as const) {
      const x = tf.tensor2d(randoms(shape[0] * shape[1], 1), [...shape]);
      const w = randoms(shape[0] * shape[1], 2);
      const g = host(tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(tf.cumsum(xx, 0), tf.tensor2d(w, [...shape]))))(x));
      for (let i = 0; i < shape[0]; i++) {
        for (let j = 0; j < shape[1]; j++) {
          let expected = 0;
          for (let t = i; t < shape[0]; t++) expected += w[t * shape[1] + j];
          expect(g[i * shape[1] + j]).toBeCloseTo(expected, 5);
        }
      }
      x.dispose();
    }
  });

  it('matMul gradients for every transpose combination match dA = dY·Bᵀ, dB = Aᵀ·dY', () => {
    const [m, k, n] = [3, 4, 5];
    const A = randoms(m * k, 3);
    const B = randoms(k * n, 4);
    const W = randoms(m * n, 5); // loss = Σ W ⊙ (A B)
    const ref = (i: number, j: number, which: 'A' | 'B') => {
      let s = 0;
      if (which === 'A') for (let c = 0; c < n; c++) s += W[i * n + c] * B[j * n + c];
      else for (let r = 0; r < m; r++) s += W[r * n + j] * A[r * k + i];
      return s;
    };
    const transpose = (x: Float32Array, r: number, c: number) => Float32Array.from({ length: r * c }, (_, idx) => x[(idx % r) * c + Math.floor(idx / r)]);
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        const a = ta ? tf.tensor2d(transpose(A, m, k), [k, m]) : tf.tensor2d(A, [m, k]);
        const b = tb ? tf.tensor2d(transpose(B, k, n), [n, k]) : tf.tensor2d(B, [k, n]);
        const w = tf.tensor2d(W, [m, n]);
        const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y, ta, tb), w)))([a, b]).map(host);
        for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) expect(ga[ta ? j * m + i : i * k + j]).toBeCloseTo(ref(i, j, 'A'), 5);
        for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) expect(gb[tb ? j * k + i : i * n + j]).toBeCloseTo(ref(i, j, 'B'), 5);
        [a, b, w].forEach((t) => t.dispose());
      }
    }
  });

  it('a single token (one chunk of one row) differentiates in both forms', () => {
    const c = makeCase(1, 6, 12, () => 0.7);
    const seq = toSequence(c);
    const z = tf.tensor1d(c.z);
    const f = (form: 'chunked' | 'recurrent') =>
      host(tf.grad((zz: tf.Tensor) => {
        const s = { ...seq, ...gateLogs(zz as tf.Tensor1D) };
        return tf.sum(form === 'chunked' ? gateChunkedOutput(s, 4) : gateRecurrent(s).r);
      })(z));
    const gc = f('chunked');
    const gr = f('recurrent');
    expect(allFinite(gc)).toBe(true);
    expect(relRms(gc, gr)).toBeLessThan(1e-5);
    z.dispose();
    disposeSeq(seq);
  });
});
