/**
 * `synaxim bench` on tiny sizes: the JSON and the README/charts it writes. Benchmarks are never
 * timed tests: nothing here asserts a speed. What is asserted is what a wrong implementation would
 * get wrong: FLOP and byte counts from the dimensions written out by hand, the machine limits'
 * kernels computing what they claim (the sgemm's product, the copy), every derived figure (the
 * limits from their timings, speed-ups, GFLOP/s, GB/s, every fraction of a machine limit = figure ÷
 * that limit, tokens/s, growth exponents) recomputed here from the raw figures it is derived from,
 * up to the rounding to 3 significant digits the report applies, and the sizes of the preset.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { SynaximError } from '../src/util/errors.ts';
import { gateChunked, gateLogs, gateRecurrent } from '../src/model/gate.ts';
import { perTokenLoop } from '../bench/gate.ts';
import { matMulWeightLeft } from '../src/runtime/wasmFixes.ts';
import { DISTILL_BACKWARD, FORWARD, matmulFlops } from '../bench/phases.ts';
import { BENCH_SCHEMA, headline, runBench, type BenchReport, type ScalingRow } from '../bench/run.ts';
import { SHARED_DIR } from '../src/util/paths.ts';
import { benchConfig } from '../bench/synthetic.ts';
import { layerMatrixParams as layerParams, prefillFlopsPerToken, studentDecodeBytesPerToken, weightBytes } from '../bench/costs.ts';
import { copyBandwidth, matmulModel } from '../bench/limits.ts';
import { createSession, f32, releaseSession, runSession } from '../src/runtime/ort/session.ts';
import { parseSections } from '../src/cli/commands/bench.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-bench-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  await initBackend('wasm');
});

/**
 * `got` equals `want` up to the report's rounding: every figure is rounded to 3 significant digits
 * (sig() in bench/machine.ts, relative error ≤ 0.5%), and `roundings` is how many such roundings
 * lie between the two (e.g. a/b compared with sig(a/b): a, b and the ratio — 3).
 */
function expectSameUpToRounding(got: number, want: number, roundings: number, what = ''): void {
  expect(Number.isFinite(got) && Number.isFinite(want), what).toBe(true);
  expect(Math.abs(got - want), `${what}: ${got} vs ${want}`).toBeLessThanOrEqual(roundings * 0.005 * 1.001 * Math.max(Math.abs(got), Math.abs(want)));
}

/** Multiply-adds ×2 of one decoder layer's projections, written out from the dimensions. */
function layerFlopsByHand(T: number, d: { D: number; I: number; heads: number; kvHeads: number; headDim: number }): number {
  const qDim = d.heads * d.headDim;
  const kvDim = d.kvHeads * d.headDim;
  // q [D, qDim], k and v [D, kvDim], o [qDim, D], gate and up [D, I], down [I, D]
  return 2 * T * (d.D * qDim + 2 * d.D * kvDim + qDim * d.D + 3 * d.D * d.I);
}

/** The dimensions of the bench shapes, as the model cards give them (Magnus = Mistral-7B v0.3, Llama-3.2-1B). */
const SHAPES = {
  small: { D: 512, I: 1536, heads: 8, kvHeads: 2, headDim: 64, layers: 8, vocab: 4096 },
  magnus: { D: 4096, I: 14336, heads: 32, kvHeads: 8, headDim: 128, layers: 32, vocab: 32768 },
  'llama-1b': { D: 2048, I: 8192, heads: 32, kvHeads: 8, headDim: 64, layers: 16, vocab: 128256 },
} as const;

const STORIES_HF = path.join(SHARED_DIR, 'models', 'stories260k', 'hf');
const haveStories = fs.existsSync(path.join(STORIES_HF, 'model.safetensors'));
if (!haveStories) console.warn(`bench.test: the stories260k throughput checks are skipped: ${STORIES_HF} is missing`);

function relRms(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

describe('the per-token loop the gate is compared with', () => {
  it('computes the engine recurrence: same r and final state as gateRecurrent and gateChunked', () => {
    const T = 13;
    const D = 24;
    const rand = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(1.7 * i + s) * 0.9);
    tf.tidy(() => {
      const q = tf.tensor2d(rand(T * D, 1), [T, D]);
      const k = tf.tensor2d(rand(T * D, 2), [T, D]);
      const kHat = tf.div(k, tf.norm(k, 'euclidean', 1, true)) as tf.Tensor2D;
      const vHat = tf.tensor2d(rand(T * D, 3), [T, D]);
      const z = tf.tensor1d(rand(T, 4).map((x) => 3 * x));
      const loop = perTokenLoop(q, kHat, vHat, z);
      const seq = { q, kHat, vHat, ...gateLogs(z) };
      const rec = gateRecurrent(seq);
      const chunked = gateChunked(seq, 4);
      for (const other of [rec, chunked]) {
        expect(relRms(loop.r.dataSync() as Float32Array, other.r.dataSync() as Float32Array)).toBeLessThan(1e-5);
        expect(relRms(loop.state.dataSync() as Float32Array, other.state.dataSync() as Float32Array)).toBeLessThan(1e-5);
      }
    });
  });
});

describe('matMulWeightLeft (wasm fix 2): the same product in another form', () => {
  it('equals tf.matMul for every transpose flag and either operand larger', () => {
    const rand = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.cos(0.37 * i + s));
    for (const [m, k, n] of [[3, 5, 40], [40, 5, 3], [7, 9, 11]]) {
      for (const ta of [false, true]) {
        for (const tb of [false, true]) {
          tf.tidy(() => {
            const a = tf.tensor2d(rand(m * k, 1), ta ? [k, m] : [m, k]);
            const b = tf.tensor2d(rand(k * n, 2), tb ? [n, k] : [k, n]);
            const want = tf.matMul(a, b, ta, tb).dataSync() as Float32Array;
            const got = matMulWeightLeft(a, b, ta, tb);
            expect(got.shape).toEqual([m, n]);
            expect(relRms(got.dataSync() as Float32Array, want)).toBeLessThan(1e-6);
          });
        }
      }
    }
  });
});

describe('FLOP accounting', () => {
  it('the bench shapes have the published dimensions', () => {
    for (const [shape, d] of Object.entries(SHAPES)) {
      const c = benchConfig(shape as keyof typeof SHAPES);
      expect([c.hiddenSize, c.intermediateSize, c.numHeads, c.numKvHeads, c.headDim, c.numLayers, c.vocabSize], shape).toEqual([d.D, d.I, d.heads, d.kvHeads, d.headDim, d.layers, d.vocab]);
    }
  });
  it('forward matmuls of a layer are 2·T·(parameters of its matrices), counted from the dimensions', () => {
    for (const shape of ['small', 'magnus', 'llama-1b'] as const) {
      const c = benchConfig(shape);
      for (const T of [1, 7, 64]) expect(matmulFlops(c, T, FORWARD), `${shape} T ${T}`).toBe(layerFlopsByHand(T, SHAPES[shape]));
      expect(2 * layerParams(c)).toBe(layerFlopsByHand(1, SHAPES[shape]));
    }
    // GQA: k and v are 4× narrower than q in all three (8 of 32 heads, 2 of 8)
    expect(layerParams(benchConfig('llama-1b'))).toBe(60_817_408);
    expect(layerParams(benchConfig('small'))).toBe(3_014_656);
  });
  it('the distill backward products have the input-gradient shapes', () => {
    const c = benchConfig('magnus');
    const D = c.hiddenSize;
    const I = c.intermediateSize;
    // dX through down [T,D]·[D,I], gate and up [T,I]·[I,D], o [T,D]·[D,Dq]
    expect(matmulFlops(c, 1, DISTILL_BACKWARD)).toBe(2 * (D * I + 2 * I * D + D * c.numHeads * c.headDim));
  });
  it('Magnus has the dimensions of Mistral-7B v0.3', () => {
    const c = benchConfig('magnus');
    expect([c.hiddenSize, c.intermediateSize, c.numHeads, c.numKvHeads, c.headDim, c.numLayers, c.vocabSize]).toEqual([4096, 14336, 32, 8, 128, 32, 32768]);
    expect(layerParams(c)).toBe(218_103_808);
  });
});

describe('FLOP and byte counts of whole-model prefill and decode', () => {
  it('prefill FLOP per token: projections, causal attention over (T+1)/2 positions, lm_head', () => {
    const c = benchConfig('small');
    const d = SHAPES.small;
    const T = 16;
    const perLayer = layerFlopsByHand(1, d) + 2 * 2 * d.heads * d.headDim * ((T + 1) / 2);
    expect(prefillFlopsPerToken(c, T)).toBe(d.layers * perLayer + 2 * d.D * d.vocab);
    expect(prefillFlopsPerToken(c, T, 1, false)).toBe(perLayer);
  });
  it('decode bytes per token: int4 is half a byte per weight plus an f32 scale per group; f32 is 4', () => {
    expect(weightBytes(4096, { kind: 'int4', groupSize: 128 })).toBe(2048 + 32 * 4);
    expect(weightBytes(100, { kind: 'int4', groupSize: 32 })).toBe(50 + 4 * 4); // the last group is partial
    expect(weightBytes(10, { kind: 'f32' })).toBe(40);
    const c = benchConfig('llama-1b');
    const d = SHAPES['llama-1b'];
    const params = layerFlopsByHand(1, d) / 2;
    const int4 = (n: number) => n / 2 + (n / 128) * 4;
    const state = (d.heads * d.headDim) ** 2 * 4;
    expect(studentDecodeBytesPerToken({ ...c, numLayers: 4, vocabSize: 32000 }, { kind: 'int4', groupSize: 128 })).toBe(4 * (int4(params) + state) + int4(d.D * 32000));
  });
});

describe('the machine limits measure what they say', () => {
  it('the sgemm model computes A·B (checked against a plain triple loop)', async () => {
    const n = 8;
    const a = Float32Array.from({ length: n * n }, (_, i) => Math.sin(i));
    const b = Float32Array.from({ length: n * n }, (_, i) => Math.cos(0.3 * i));
    const s = await createSession(matmulModel(n, b), 'test sgemm');
    try {
      const y = (await runSession(s, { A: f32(a, [n, n]) }, 'test sgemm')).Y!.data as Float32Array;
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) {
          let want = 0;
          for (let k = 0; k < n; k++) want += a[i * n + k]! * b[k * n + j]!;
          expect(Math.abs(y[i * n + j]! - want)).toBeLessThan(1e-5);
        }
      }
    } finally {
      await releaseSession(s);
    }
  });
  it('the copy copies, and its bandwidth counts the bytes read and written', () => {
    for (const method of ['Float32Array.set', 'Buffer.copy'] as const) {
      const c = copyBandwidth(method, 1 << 20, 3);
      expect(c.bytes).toBe(1 << 20);
      expectSameUpToRounding(c.gbPerSec, (2 * c.bytes) / (c.medianMs * 1e6), 2, `${method} GB/s`);
    }
  });
});

describe('synaxim bench --preset tiny', () => {
  let report: BenchReport;
  const out = path.join(tmp, 'bench');
  beforeAll(async () => {
    report = await runBench({ preset: 'tiny', out, sections: ['gate', 'phases', 'trainmemory', 'throughput', 'scaling', 'native'] });
  });

  it('writes bench.json (the same report) and a README with its charts', () => {
    const json = JSON.parse(fs.readFileSync(path.join(out, 'bench.json'), 'utf8')) as BenchReport;
    expect(json.schema).toBe(BENCH_SCHEMA);
    expect(json.headline).toEqual(report.headline);
    const md = fs.readFileSync(path.join(out, 'README.md'), 'utf8');
    expect(md).toContain('## Machine');
    expect(md).toContain('### Limits');
    expect(md).toContain(`${report.machine.limits.sgemmPeakGflops} GFLOP/s`);
    expect(md).toContain(report.machine.cpuModel);
    expect(md).toContain('![');
    for (const f of ['scaling.svg', 'gate.svg']) expect(fs.readFileSync(path.join(out, f), 'utf8')).toMatch(/^<svg/);
  });

  it('describes this machine', () => {
    const m = report.machine;
    expect(m.cores).toBe(os.cpus().length);
    expect(m.memoryGiB).toBeCloseTo(os.totalmem() / 2 ** 30, 1);
    expect(m.node).toBe(process.version);
    expect(m.backend).toBe('wasm');
    expect(m.cpuModel.length).toBeGreaterThan(0);
  });

  it('machine limits: the tiny sizes; GFLOP/s = 2n³ / time, GB/s = 2·bytes / time; the references are the larger', () => {
    const l = report.machine.limits;
    expect(l.sgemm[0]!.library).toMatch(/^onnxruntime-node /);
    for (const g of l.sgemm) {
      expect([g.n, g.reps]).toEqual([128, 3]);
      expect(g.threads).toBeGreaterThanOrEqual(1);
      expectSameUpToRounding(g.gflops, (2 * 128 ** 3) / (g.medianMs * 1e6), 2, `${g.library} GFLOP/s`);
    }
    // numpy is there (a second row) or the note says why not
    expect(l.sgemm.length === 2 ? l.sgemm[1]!.library.startsWith('numpy ') : l.numpyNote !== null).toBe(true);
    expect(l.sgemmPeakGflops).toBe(Math.max(...l.sgemm.map((g) => g.gflops)));
    expect(l.sgemm.find((g) => g.gflops === l.sgemmPeakGflops)!.library).toBe(l.sgemmPeakLibrary);
    expect(l.copy.map((c) => [c.method, c.bytes, c.reps])).toEqual([
      ['Float32Array.set', 4 * 2 ** 20, 3],
      ['Buffer.copy', 4 * 2 ** 20, 3],
    ]);
    for (const c of l.copy) expectSameUpToRounding(c.gbPerSec, (2 * c.bytes) / (c.medianMs * 1e6), 2, `${c.method} GB/s`);
    expect(l.copyGbPerSec).toBe(Math.max(...l.copy.map((c) => c.gbPerSec)));
    // every section measured in this run divides by these
    for (const s of [report.phases!, report.throughput!, report.scaling!, report.native!]) {
      expect(s.limits).toEqual({ measuredAt: l.measuredAt, sgemmPeakGflops: l.sgemmPeakGflops, sgemmPeakLibrary: l.sgemmPeakLibrary, copyGbPerSec: l.copyGbPerSec });
    }
  });

  it('gate rows: the tiny sizes, the loop scaled from its timed tokens, speed-ups = loop at T / chunked', () => {
    const rows = report.gate!.rows;
    expect(rows.map((r) => [r.T, r.D, r.loopTokensTimed])).toEqual([
      [16, 64, 4],
      [32, 64, 4],
    ]);
    for (const r of rows) {
      for (const v of [r.chunkedFwdBwdMs, r.chunkedOutputFwdBwdMs, r.loopFwdBwdMsPerToken, r.chunkedFwdMs, r.loopFwdMsPerToken]) expect(v).toBeGreaterThan(0);
      expect(r.note).toBe(`loop timed on its first 4 of ${r.T} tokens and scaled ×${r.T / 4} (its cost per token is constant)`);
      expectSameUpToRounding(r.loopFwdBwdMsAtT, r.loopFwdBwdMsPerToken * r.T, 2, 'loop at T = per token × T');
      expectSameUpToRounding(r.speedup, r.loopFwdBwdMsAtT / r.chunkedFwdBwdMs, 3, 'speed-up');
      expectSameUpToRounding(r.speedupTrainingPath, r.loopFwdBwdMsAtT / r.chunkedOutputFwdBwdMs, 3, 'training-path speed-up');
      expectSameUpToRounding(r.forwardSpeedup, (r.loopFwdMsPerToken * r.T) / r.chunkedFwdMs, 3, 'forward speed-up');
    }
  });

  it('phase rows: FLOPs from the dimensions; GFLOP/s = FLOPs / phase time; fraction = GFLOP/s ÷ sgemm peak', () => {
    const p = report.phases!;
    expect(p.rows.map((r) => `${r.variant}: ${r.phase}`)).toEqual([
      'as is: teacher prefill (one layer)',
      'as is: distill step (one layer)',
      'with wasmFixes: teacher prefill (one layer)',
      'with wasmFixes: distill step (one layer)',
    ]);
    // The products each phase must do, written out: the forward projections, and for the distill
    // step the input gradients dX of down, gate, up and o (shapes of gate, down, down and q).
    const d = SHAPES.small;
    const backwardFlops = 2 * 16 * (d.D * d.I + 2 * d.I * d.D + d.D * d.heads * d.headDim);
    for (const [i, r] of p.rows.entries()) {
      const timings = r.variant === 'as is' ? p.timings : p.timingsWithFixes!;
      const distill = r.phase.startsWith('distill');
      expect([r.shape, r.T, r.sequences]).toEqual(['small', 16, 1]);
      expectSameUpToRounding(r.phaseMs, (distill ? timings.phases.distillStep! : timings.phases.teacherLayer!).ms, 1, `row ${i} phase ms`);
      const flops = layerFlopsByHand(16, d) + (distill ? backwardFlops : 0);
      expectSameUpToRounding(r.matmulGflop, flops / 1e9, 1, `row ${i} GFLOP`);
      expectSameUpToRounding(r.achievedGflops, flops / (r.phaseMs * 1e6), 2, `row ${i} achieved GFLOP/s`);
      expectSameUpToRounding(r.fractionOfSgemmPeak!, r.achievedGflops / p.limits.sgemmPeakGflops, 2, `row ${i} fraction of the sgemm peak`);
    }
  });

  it('train memory: the wasm fixes change memory, not the numbers', () => {
    const [asIs, fixed] = report.trainmemory!.rows;
    expect(asIs!.variant).toBe('as is');
    expect(fixed!.variant).toBe('with wasmFixes');
    for (const r of [asIs!, fixed!]) {
      expect(r.ok).toBe(true);
      expect(r.heapMiBAfter).toBeGreaterThan(0);
    }
    expect(fixed!.loss).toBe(asIs!.loss); // the forward pass is untouched
    expect(Math.abs(fixed!.gradGateBias! - asIs!.gradGateBias!)).toBeLessThanOrEqual(1e-5 * Math.abs(asIs!.gradGateBias!) + 1e-9);
    expect(fixed!.heapMiBAfter!).toBeLessThanOrEqual(asIs!.heapMiBAfter!);
  });

  it('throughput: no shape at the tiny preset; stories260k only when ../shared has it', () => {
    expect(report.throughput!.shapes).toEqual([]);
    expect(report.throughput!.models).toHaveLength(haveStories ? 1 : 0);
  });

  it.skipIf(!haveStories)('throughput on stories260k: the preset sizes, tokens/s = tokens / time, student/teacher ratio', () => {
    const m = report.throughput!.models[0]!;
    expect(m.model).toBe('stories260k');
    expect(m.layers).toBe(5);
    expect([m.prefill.sequences, m.prefill.T, m.decode.context, m.decode.steps]).toEqual([2, 16, 8, 4]);
    expect(m.prefill.ms).toBeGreaterThan(0);
    expectSameUpToRounding(m.prefill.tokensPerSec, (2 * 16 * 1000) / m.prefill.ms, 2, 'prefill tokens/s');
    expect(m.decode.studentTokensPerSec).toBeGreaterThan(0);
    expect(m.decode.teacherTokensPerSec).toBeGreaterThan(0);
    expectSameUpToRounding(m.decode.studentOverTeacher, m.decode.studentTokensPerSec / m.decode.teacherTokensPerSec, 3, 'student / teacher');
    // stories260k: D 64, I 172, 8 heads × 8, 4 kv heads, 5 layers, vocab 512, tied; T 16
    const params = 64 * (2 * 64 + 2 * 32 + 3 * 172);
    const flops = 5 * (2 * params + 2 * 2 * 64 * (17 / 2)) + 2 * 64 * 512;
    expect(m.prefill.flopsPerToken).toBe(flops);
    expectSameUpToRounding(m.prefill.gflops, (m.prefill.tokensPerSec * flops) / 1e9, 2, 'prefill GFLOP/s');
    expectSameUpToRounding(m.fractionOfSgemmPeak.prefill!, m.prefill.gflops / report.throughput!.limits.sgemmPeakGflops, 2, 'prefill ÷ sgemm peak');
    const bytes = 5 * (4 * params + 64 * 64 * 4) + 4 * 64 * 512;
    expect(m.decode.studentBytesPerToken).toBe(bytes);
    expectSameUpToRounding(m.decode.studentGbPerSec, (m.decode.studentTokensPerSec * bytes) / 1e9, 2, 'decode GB/s');
    expectSameUpToRounding(m.fractionOfCopy.studentDecode!, m.decode.studentGbPerSec / report.throughput!.limits.copyGbPerSec, 2, 'decode ÷ copy bandwidth');
  });

  it('native rows: present or skipped with a reason; rate = tokens/s × work per token; fraction = rate ÷ its limit', () => {
    const n = report.native!;
    expect(n.rows.map((r) => [r.kind, r.limit])).toEqual([
      ['prefill', 'sgemm peak'],
      ['decode', 'copy bandwidth'],
      ['decode', 'copy bandwidth'],
    ]);
    expect(n.rows[2]!.referenceTokensPerSec).toMatchObject({ low: 1637, high: 1637 });
    for (const r of n.rows) {
      if (r.skipped !== null) {
        expect(r.skipped.length).toBeGreaterThan(0);
        expect([r.tokensPerSec, r.rate, r.fraction]).toEqual([null, null, null]);
        continue;
      }
      expect(r.tokensPerSec).toBeGreaterThan(0);
      expectSameUpToRounding(r.rate!, (r.tokensPerSec! * r.workPerToken) / 1e9, 2, `${r.figure}: rate`);
      const limit = r.limit === 'sgemm peak' ? n.limits.sgemmPeakGflops : n.limits.copyGbPerSec;
      expectSameUpToRounding(r.fraction!, r.rate! / limit, 2, `${r.figure}: fraction`);
    }
    // tiny preset: the small shape, 2 layers, vocab 512, context 16
    const pre = n.rows[0]!;
    if (pre.skipped === null) expect(pre.workPerToken).toBe(prefillFlopsPerToken({ ...benchConfig('small'), numLayers: 2, vocabSize: 512 }, 16));
  });

  it('headline: every rated row\'s fraction = its rate ÷ the limit it names', () => {
    const l = report.machine.limits;
    const rated = report.headline.filter((h) => h.ofLimit !== null);
    expect(rated.length).toBeGreaterThanOrEqual(4); // the phase rows at least
    for (const h of rated) {
      expect(h.ofLimit!.limitValue).toBe(h.ofLimit!.limit === 'sgemm peak' ? l.sgemmPeakGflops : l.copyGbPerSec);
      expect(h.rate!.unit).toBe(h.ofLimit!.limit === 'sgemm peak' ? 'GFLOP/s' : 'GB/s');
      expectSameUpToRounding(h.ofLimit!.fraction, h.rate!.value / h.ofLimit!.limitValue, 2, h.figure);
    }
    // no row measures against the backend's own matmul any more
    for (const h of report.headline) expect(h.figure).not.toMatch(/peak matmul/);
  });

  it('scaling rows for each T; eval = teacher + engine layer; exponents = log-log slopes of the rows', () => {
    const s = report.scaling!;
    expect(s.shape).toBe('small');
    expect(s.rows.map((r) => r.T)).toEqual([16, 32]);
    for (const r of s.rows) {
      for (const v of [r.teacherLayerMs, r.studentLayerMs, r.distillStepMs, r.attentionOnlyMs, r.gateOnlyMs]) expect(v).toBeGreaterThan(0);
      expectSameUpToRounding(r.evalLayerMs, r.teacherLayerMs + r.studentLayerMs, 3, `T ${r.T} eval layer`);
      expectSameUpToRounding(r.gflops.teacherPrefill, layerFlopsByHand(r.T, SHAPES.small) / (r.teacherLayerMs * 1e6), 2, `T ${r.T} teacher GFLOP/s`);
      expectSameUpToRounding(r.fractionOfSgemmPeak.teacherPrefill!, r.gflops.teacherPrefill / s.limits.sgemmPeakGflops, 2, `T ${r.T} teacher ÷ sgemm peak`);
      expectSameUpToRounding(r.fractionOfSgemmPeak.distillStep!, r.gflops.distillStep / s.limits.sgemmPeakGflops, 2, `T ${r.T} distill ÷ sgemm peak`);
    }
    // Two points: the slope is log(y32 / y16) / log(32 / 16), computed from the rounded rows.
    const [a, b] = s.rows as [ScalingRow, ScalingRow];
    const slope = (k: 'distillStepMs' | 'evalLayerMs' | 'studentLayerMs' | 'teacherLayerMs' | 'attentionOnlyMs' | 'gateOnlyMs') => Math.log(b[k] / a[k]) / Math.log(2);
    const want = {
      distillStep: slope('distillStepMs'),
      evalLayer: slope('evalLayerMs'),
      studentLayer: slope('studentLayerMs'),
      teacherLayer: slope('teacherLayerMs'),
      attentionOnly: slope('attentionOnlyMs'),
      gateOnly: slope('gateOnlyMs'),
    };
    expect(Object.keys(s.exponents).sort()).toEqual(Object.keys(want).sort());
    for (const [k, v] of Object.entries(want)) expect(Math.abs(s.exponents[k]! - v), k).toBeLessThanOrEqual(0.005 * Math.abs(v) + 1e-12);
  });

  it('records the peak RSS after each section: the process peak, which never decreases', () => {
    expect(Object.keys(report.rss)).toEqual(['gate', 'phases', 'trainmemory', 'throughput', 'scaling', 'native']);
    const peaks = Object.values(report.rss).map((v) => v.maxRssMiB);
    for (const v of peaks) expect(v).toBeGreaterThan(10);
    for (let i = 1; i < peaks.length; i++) expect(peaks[i]).toBeGreaterThanOrEqual(peaks[i - 1]!);
    // and no more than this process's peak now
    expect(peaks[peaks.length - 1]!).toBeLessThanOrEqual(process.resourceUsage().maxRSS / 1024 + 0.1);
  });

  it('a second run of one section keeps the others from bench.json', async () => {
    const again = await runBench({ preset: 'tiny', out, sections: ['gate'] });
    expect(again.scaling).toEqual(report.scaling);
    expect(again.phases).toEqual(report.phases);
    expect(again.native).toEqual(report.native);
    // the kept sections keep the limits they were divided by; the new run measured its own
    expect(again.machine.limits.measuredAt > report.machine.limits.measuredAt).toBe(true);
    expect(again.gate!.measuredAt >= report.gate!.measuredAt).toBe(true);
  });
});

describe('headline', () => {
  it('marks the gate target at Magnus dims and T = 64, and the RSS limit of the Magnus runs', () => {
    const r = {
      gate: { measuredAt: '', rows: [{ T: 64, D: 4096, speedup: 25, speedupTrainingPath: 900, note: 'n' }, { T: 512, D: 4096, speedup: 10, speedupTrainingPath: 99, note: 'n' }] },
      magnus: { measuredAt: '', dir: '/x', limitGiB: 10, runs: [{ name: 'eval', exitCode: 0, wallSec: 1, peakRssGiB: 7.5 }, { name: 'distill', exitCode: 1, wallSec: 1, peakRssGiB: 2, tail: 'x\nsynaxim: internal error: memory access out of bounds' }] },
    } as unknown as BenchReport;
    const h = headline(r);
    expect(h[0]).toMatchObject({ value: 25, target: '≥ 20×', meets: true, rate: null, ofLimit: null });
    expect(h[1]).toMatchObject({ value: 10, target: null, meets: null });
    expect(h[2]).toMatchObject({ value: 7.5, meets: true });
    expect(h[3]).toMatchObject({ meets: false }); // a failed run never meets the limit
    expect(h[3]!.note).toContain('memory access out of bounds');
  });
  it('native rows: targets of issue 15 next to them; skipped rows meet nothing', () => {
    const limits = { measuredAt: '', sgemmPeakGflops: 200, sgemmPeakLibrary: 'numpy', copyGbPerSec: 20 };
    const row = (o: Record<string, unknown>) => ({ model: 'm', workPerToken: 1, referenceTokensPerSec: null, bandwidthTarget: false, detail: 'd', skipped: null, ...o });
    const ref = { low: 8, high: 9, source: 's' };
    const r = {
      native: {
        measuredAt: '',
        limits,
        rows: [
          row({ kind: 'prefill', figure: 'p', tokensPerSec: 100, rate: 80, limit: 'sgemm peak', fraction: 0.4 }),
          row({ kind: 'decode', figure: 'd', tokensPerSec: 8.5, rate: 6, limit: 'copy bandwidth', fraction: 0.3, referenceTokensPerSec: ref, bandwidthTarget: true }),
          row({ kind: 'decode', figure: 's', tokensPerSec: null, rate: null, limit: 'copy bandwidth', fraction: null, referenceTokensPerSec: ref, skipped: 'src/native/model.ts is not there yet' }),
        ],
      },
    } as unknown as BenchReport;
    const h = headline(r);
    expect(h.map((x) => [x.figure, x.meets])).toEqual([
      ['p: tokens/s', true], // 0.4 ≥ 0.35
      ['d: tokens/s', false], // 8.5 < 9, the upper end of the recorded 8–9
      ['d: bytes/s ÷ copy bandwidth', false], // 0.3 < 0.5
      ['s: tokens/s', null],
    ]);
    expect(h[0]!.ofLimit).toEqual({ fraction: 0.4, limit: 'sgemm peak', limitValue: 200 });
    expect(h[1]!.target).toContain('8–9 tok/s');
    expect(h[1]!.target).toContain('recorded in issue 15');
    expect(h[3]!.note).toBe('skipped: src/native/model.ts is not there yet');
  });
  it('--sections is checked', () => {
    expect(parseSections('gate, scaling')).toEqual(['gate', 'scaling']);
    expect(() => parseSections('gate,nope')).toThrow(SynaximError);
  });
});
