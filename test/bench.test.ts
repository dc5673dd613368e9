/**
 * Smoke test of `synaxim bench` on tiny sizes: the JSON's shape and the README/charts it writes.
 * Benchmarks are never timed tests: nothing here asserts a speed, only that every figure is a
 * finite positive number where it must be and that the pieces agree with each other.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/core/backend.ts';
import { SynaximError } from '../src/core/errors.ts';
import { gateChunked, gateLogs, gateRecurrent } from '../src/engine/gate.ts';
import { perTokenLoop } from '../src/bench/gate.ts';
import { matMulWeightLeft } from '../src/core/wasmFixes.ts';
import { DISTILL_BACKWARD, FORWARD, matmulFlops } from '../src/bench/phases.ts';
import { BENCH_SCHEMA, headline, runBench, type BenchReport } from '../src/bench/run.ts';
import { benchConfig, layerParams } from '../src/bench/synthetic.ts';
import { parseSections } from '../src/cli/commands/bench.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-bench-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  await initBackend('wasm');
});

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
  it('forward matmuls of a layer are 2·T·(parameters of its matrices)', () => {
    for (const shape of ['small', 'magnus', 'llama-1b'] as const) {
      const c = benchConfig(shape);
      expect(matmulFlops(c, 7, FORWARD)).toBe(2 * 7 * layerParams(c));
    }
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

describe('synaxim bench --preset tiny', () => {
  let report: BenchReport;
  const out = path.join(tmp, 'bench');
  beforeAll(async () => {
    report = await runBench({ preset: 'tiny', out, sections: ['gate', 'phases', 'trainmemory', 'throughput', 'scaling'] });
  });

  it('writes bench.json (the same report) and a README with its charts', () => {
    const json = JSON.parse(fs.readFileSync(path.join(out, 'bench.json'), 'utf8')) as BenchReport;
    expect(json.schema).toBe(BENCH_SCHEMA);
    expect(json.headline).toEqual(report.headline);
    const md = fs.readFileSync(path.join(out, 'README.md'), 'utf8');
    expect(md).toContain('## Machine');
    expect(md).toContain(report.machine.cpuModel);
    expect(md).toContain('![');
    for (const f of ['scaling.svg', 'gate.svg']) expect(fs.readFileSync(path.join(out, f), 'utf8')).toMatch(/^<svg/);
  });

  it('describes the machine', () => {
    const m = report.machine;
    expect(m.cores).toBeGreaterThanOrEqual(1);
    expect(m.memoryGiB).toBeGreaterThan(0);
    expect(m.node).toBe(process.version);
    expect(m.backend).toBe('wasm');
    expect(m.cpuModel.length).toBeGreaterThan(0);
  });

  it('gate rows: positive times, speed-ups consistent with them', () => {
    const rows = report.gate!.rows;
    expect(rows.map((r) => r.T)).toEqual([16, 32]);
    for (const r of rows) {
      for (const v of [r.chunkedFwdBwdMs, r.chunkedOutputFwdBwdMs, r.loopFwdBwdMsPerToken, r.chunkedFwdMs, r.loopFwdMsPerToken]) expect(v).toBeGreaterThan(0);
      expect(r.loopFwdBwdMsAtT / r.chunkedFwdBwdMs).toBeCloseTo(r.speedup, 0);
      expect(r.loopTokensTimed).toBe(4);
    }
  });

  it('phase rows: fraction = Σ bare matmuls / phase time', () => {
    const rows = report.phases!.rows;
    expect(rows.map((r) => `${r.variant}: ${r.phase}`)).toEqual([
      'as is: teacher prefill (one layer)',
      'as is: distill step (one layer)',
      'with wasmFixes: teacher prefill (one layer)',
      'with wasmFixes: distill step (one layer)',
    ]);
    for (const r of rows) {
      expect(r.fractionOfPeak).toBeGreaterThan(0);
      expect(r.fractionOfPeak).toBeCloseTo(r.idealMatmulMs / r.phaseMs, 2);
      // achieved / peak = the same fraction (figures rounded to 3 significant digits)
      expect(Math.abs(r.achievedGflops / r.peakGflops / r.fractionOfPeak - 1)).toBeLessThan(0.01);
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

  it('throughput on stories260k (when the shared fixtures are there)', () => {
    const models = report.throughput!.models;
    if (models.length === 0) return; // shared fixtures absent: skipped inside the bench
    expect(models[0]!.model).toBe('stories260k');
    expect(models[0]!.prefill.tokensPerSec).toBeGreaterThan(0);
    expect(models[0]!.decode.studentTokensPerSec).toBeGreaterThan(0);
    expect(models[0]!.decode.teacherTokensPerSec).toBeGreaterThan(0);
  });

  it('scaling rows for each T and finite growth exponents', () => {
    const s = report.scaling!;
    expect(s.rows.map((r) => r.T)).toEqual([16, 32]);
    for (const r of s.rows) expect(r.evalLayerMs).toBeCloseTo(r.teacherLayerMs + r.studentLayerMs, 0);
    for (const v of Object.values(s.exponents)) expect(Number.isFinite(v)).toBe(true);
  });

  it('records peak RSS after each section', () => {
    expect(Object.keys(report.rss)).toEqual(['gate', 'phases', 'trainmemory', 'throughput', 'scaling']);
    for (const v of Object.values(report.rss)) expect(v.maxRssMiB).toBeGreaterThan(10);
  });

  it('a second run of one section keeps the others from bench.json', async () => {
    const again = await runBench({ preset: 'tiny', out, sections: ['gate'] });
    expect(again.scaling).toEqual(report.scaling);
    expect(again.phases).toEqual(report.phases);
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
    expect(h[0]).toMatchObject({ value: 25, target: '≥ 20×', meets: true });
    expect(h[1]).toMatchObject({ value: 10, target: null, meets: null });
    expect(h[2]).toMatchObject({ value: 7.5, meets: true });
    expect(h[3]).toMatchObject({ meets: false }); // a failed run never meets the limit
    expect(h[3]!.note).toContain('memory access out of bounds');
  });
  it('--sections is checked', () => {
    expect(parseSections('gate, scaling')).toEqual(['gate', 'scaling']);
    expect(() => parseSections('gate,nope')).toThrow(SynaximError);
  });
});
