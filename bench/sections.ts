/**
 * The measurements of the bench sections that run in one tfjs engine (`runBench` runs each in a
 * fresh worker thread: a wasm heap never shrinks, and one section's high-water mark must not
 * decide whether the next one fits). Each returns plain data; progress goes to stderr.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SHARED_DIR } from '../src/util/paths.ts';
import { openModel } from '../src/formats/openModel.ts';
import { benchGate, type GateBenchRow } from './gate.ts';
import { sig } from './machine.ts';
import { BenchLayer, FORWARD, DISTILL_BACKWARD, matmulFlops, phaseRows, timePhases, type PhaseRow, type PhaseTimings } from './phases.ts';
import type { ScalingRow, Sizes } from './run.ts';
import { benchConfig } from './synthetic.ts';
import { modelThroughput, shapeThroughput, type ModelThroughput, type ShapeThroughput } from './throughput.ts';
import { applyWasmMemoryFixes } from '../src/runtime/wasmFixes.ts';

/** Synchronous (a worker's process.stderr is flushed asynchronously and lost when the worker is stopped). */
function log(line: string): void {
  fs.writeSync(2, `synaxim bench: ${line}\n`);
}

export function gateSection(sizes: Sizes): GateBenchRow[] {
  const g = sizes.gate;
  return benchGate({ D: g.D, Ts: g.Ts, loopTokens: g.loopTokens, reps: g.reps }, log);
}

export interface PhasesResult {
  rows: PhaseRow[];
  timings: PhaseTimings;
}

/**
 * (b) One layer of the phases shape: teacher prefill and a distill step against bare matmuls.
 * As is, the step runs one sequence (a Magnus step of several exhausts the wasm heap as is); with
 * the fixes, `sizes.phases.B` sequences.
 */
export function phasesSection(sizes: Sizes, withFixes: boolean): PhasesResult {
  const p = sizes.phases;
  const restoreFixes = withFixes ? applyWasmMemoryFixes() : () => {};
  const B = withFixes ? p.B : 1;
  const bl = new BenchLayer(benchConfig(p.shape));
  try {
    const t = timePhases(bl, p.T, B, ['teacherLayer', 'distillStep'], p.reps, 1);
    const variant = withFixes ? 'with wasmFixes' : 'as is';
    const rows = phaseRows(p.shape, bl.config, t, B).map((r) => ({ ...r, variant }));
    for (const row of rows) log(`${row.phase} ${row.shape} T ${row.T} (${variant}): ${row.achievedGflops} GFLOP/s`);
    return { rows, timings: t };
  } finally {
    bl.dispose();
    restoreFixes();
  }
}

export function throughputSection(sizes: Sizes): { models: ModelThroughput[]; shapes: ShapeThroughput[] } {
  const models: ModelThroughput[] = [];
  const shapes: ShapeThroughput[] = [];
  const stories = path.join(SHARED_DIR, 'models', 'stories260k', 'hf');
  if (fs.existsSync(stories)) {
    const w = openModel(stories);
    try {
      models.push(modelThroughput('stories260k', w, sizes.throughput.model));
      log(`stories260k: prefill ${models[0]!.prefill.tokensPerSec} tok/s, student decode ${models[0]!.decode.studentTokensPerSec} tok/s`);
    } finally {
      w.close();
    }
  } else log(`throughput: ${stories} not found, skipped`);
  const shape = sizes.throughput.shape;
  if (shape) {
    const full = benchConfig(shape);
    const T = 64;
    const bl = new BenchLayer(full);
    let prefillMs: number;
    try {
      prefillMs = timePhases(bl, T, 1, ['teacherLayer'], 2, 1).phases.teacherLayer!.ms;
    } finally {
      bl.dispose();
    }
    shapes.push(shapeThroughput(shape, full, prefillMs, T, { context: sizes.throughput.context, steps: sizes.throughput.steps }));
    log(`${shape}: student decode ${shapes[0]!.perLayer.studentDecodeMsPerToken} ms/token/layer, teacher ${shapes[0]!.perLayer.teacherDecodeMsPerToken}`);
  }
  return { models, shapes };
}

/** Least-squares slope of log(y) on log(x). */
export function logLogSlope(xs: number[], ys: number[]): number {
  const lx = xs.map(Math.log);
  const ly = ys.map(Math.log);
  const mx = lx.reduce((a, b) => a + b, 0) / lx.length;
  const my = ly.reduce((a, b) => a + b, 0) / ly.length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < lx.length; i++) {
    num += (lx[i]! - mx) * (ly[i]! - my);
    den += (lx[i]! - mx) ** 2;
  }
  return den > 0 ? sig(num / den) : NaN;
}

/** (d) One layer of the scaling shape at each T (the fractions of the sgemm peak are added by run.ts): distill step (one sequence, as is), eval's teacher and engine layers, attention and gate alone. */
export function scalingSection(sizes: Sizes): { shape: string; rows: Omit<ScalingRow, 'fractionOfSgemmPeak'>[]; exponents: Record<string, number> } {
  const s = sizes.scaling;
  const bl = new BenchLayer(benchConfig(s.shape));
  const rows: Omit<ScalingRow, 'fractionOfSgemmPeak'>[] = [];
  try {
    s.Ts.forEach((T, i) => {
      const t = timePhases(bl, T, 1, ['teacherLayer', 'studentLayer', 'distillStep', 'attentionOnly', 'gateOnly'], s.reps, i === 0 ? 1 : 0);
      const ph = t.phases;
      rows.push({
        T,
        teacherLayerMs: sig(ph.teacherLayer!.ms),
        studentLayerMs: sig(ph.studentLayer!.ms),
        evalLayerMs: sig(ph.teacherLayer!.ms + ph.studentLayer!.ms),
        distillStepMs: sig(ph.distillStep!.ms),
        attentionOnlyMs: sig(ph.attentionOnly!.ms),
        gateOnlyMs: sig(ph.gateOnly!.ms),
        gflops: {
          teacherPrefill: sig(matmulFlops(bl.config, T, FORWARD) / (ph.teacherLayer!.ms * 1e6)),
          distillStep: sig(matmulFlops(bl.config, T, [...FORWARD, ...DISTILL_BACKWARD]) / (ph.distillStep!.ms * 1e6)),
        },
      });
      log(`scaling ${s.shape} T ${T}: teacher ${rows[i]!.teacherLayerMs} ms, student ${rows[i]!.studentLayerMs} ms, distill ${rows[i]!.distillStepMs} ms`);
    });
  } finally {
    bl.dispose();
  }
  const Ts = rows.map((x) => x.T);
  const exp = (k: keyof Omit<ScalingRow, 'T' | 'gflops' | 'fractionOfSgemmPeak'>) => logLogSlope(Ts, rows.map((x) => x[k] as number));
  return {
    shape: s.shape,
    rows,
    exponents: {
      distillStep: exp('distillStepMs'),
      evalLayer: exp('evalLayerMs'),
      studentLayer: exp('studentLayerMs'),
      teacherLayer: exp('teacherLayerMs'),
      attentionOnly: exp('attentionOnlyMs'),
      gateOnly: exp('gateOnlyMs'),
    },
  };
}
