/**
 * `synaxim bench`: every speed a fraction of this machine's own limits, measured in the same run
 * (bench/limits.ts: the sgemm peak of onnxruntime-node and numpy/OpenBLAS, and the memory-copy
 * bandwidth; the `machine.limits` of the report): prefill GFLOP/s ÷ sgemm peak, decode bytes/s ÷
 * copy bandwidth. Other figures are ratios of two measurements of the same run.
 *
 *   gate        (a) chunked-parallel gate fwd+bwd vs the scripts' per-token loop, Magnus dims
 *   phases      (b) teacher prefill / distill step of one layer on the tfjs reference backend:
 *                   GFLOP/s ÷ sgemm peak
 *   throughput  (c) prefill and decode on the tfjs reference backend: stories260k (whole model),
 *                   Magnus (one layer, extrapolated and labelled); GFLOP/s ÷ sgemm peak, bytes/s ÷
 *                   copy bandwidth
 *   native      the ONNX Runtime engine (src/native) against the targets of issue 15: teacher
 *                   prefill at context 512 (Llama-3.2-1B layer sizes), student engine decode (INT4;
 *                   at 1B sizes also with int8 activations, the opt-in), stories260k decode; skipped with a line while src/native lacks what they need
 *   scaling     (d) distill step and eval (teacher + engine layer) time vs T = 64 … 1024
 *   workers     1 vs 2 worker threads on the same work
 *   layerload   streaming one Magnus layer: BF16 / int4 decode and upload (needs --magnus DIR)
 *   magnus      the Magnus-shaped eval and distill runs as child processes: wall time, peak RSS
 *   (e) peak RSS of this process after each section.
 *
 * Sizes come from a preset: `full` (the committed numbers), `quick`, and `tiny` (tests: seconds).
 * Sections not run keep their previous results in bench.json (each carries when it was measured).
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic } from '../src/util/atomic.ts';
import { openModel } from '../src/formats/openModel.ts';
import { describeMachine, rss, sig, type MachineInfo, type RssInfo } from './machine.ts';
import type { GateBenchRow } from './gate.ts';
import type { PhaseRow, PhaseTimings } from './phases.ts';
import { fractionOf, measureLimits, type LimitSizes, type MachineLimits } from './limits.ts';
import { nativeSection, type NativeRow, type NativeSizes } from './native.ts';
import type { PhasesResult } from './sections.ts';
import { layerLoadTiming, type HeapGrowth, type LayerLoadTiming, type ModelThroughput, type ShapeThroughput } from './throughput.ts';
import { WorkerPool } from '../src/runtime/workers.ts';
import { BENCH_TASKS, type DistillHeapRow } from './tasks.ts';
import { distillLayersSpeedup, evalSpeedup, matmulSpeedup, type SpeedupRow } from './parallel.ts';
import { measureCommand, type CommandRun } from './runs.ts';
import type { BenchShape } from './synthetic.ts';
import { writeBenchReadme } from './report.ts';

export const BENCH_SCHEMA = 'synaxim-bench/2';
export const SECTIONS = ['gate', 'phases', 'trainmemory', 'throughput', 'scaling', 'workers', 'native', 'layerload', 'magnus'] as const;
export type Section = (typeof SECTIONS)[number];
export type Preset = 'full' | 'quick' | 'tiny';

export interface Sizes {
  limits: LimitSizes;
  native: NativeSizes;
  gate: { D: number; Ts: number[]; loopTokens: number; reps: number };
  phases: { shape: BenchShape; T: number; B: number; reps: number };
  throughput: { model: { sequences: number; T: number; context: number; steps: number; reps: number }; shape: BenchShape | null; context: number; steps: number };
  scaling: { shape: BenchShape; Ts: number[]; reps: number };
  trainmemory: { shape: BenchShape; T: number; B: number };
  workers: { matmul: [number, number, number, number]; distill: { shape: BenchShape; layers: number; T: number; B: number; steps: number }; eval: { shape: BenchShape; tokens: number } };
}

export function presetSizes(p: Preset): Sizes {
  switch (p) {
    case 'full':
      return {
        limits: { n: 2048, reps: 7, copyBytes: 256 * 2 ** 20, copyReps: 7, numpy: true },
        native: { shape: 'llama-1b', layers: 4, vocab: 32000, groupSize: 128, context: 512, prefillReps: 3, decodeWarmup: 64, decodeSteps: 320 },
        gate: { D: 4096, Ts: [64, 512], loopTokens: 4, reps: 2 },
        phases: { shape: 'magnus', T: 64, B: 2, reps: 2 },
        throughput: { model: { sequences: 8, T: 256, context: 128, steps: 64, reps: 3 }, shape: 'magnus', context: 512, steps: 8 },
        scaling: { shape: 'llama-1b', Ts: [64, 128, 256, 512, 1024], reps: 1 },
        trainmemory: { shape: 'magnus', T: 64, B: 7 },
        workers: { matmul: [512, 2048, 2048, 8], distill: { shape: 'small', layers: 2, T: 256, B: 2, steps: 4 }, eval: { shape: 'small', tokens: 2048 } },
      };
    case 'quick':
      return {
        limits: { n: 2048, reps: 3, copyBytes: 256 * 2 ** 20, copyReps: 3, numpy: true },
        native: { shape: 'llama-1b', layers: 4, vocab: 32000, groupSize: 128, context: 512, prefillReps: 1, decodeWarmup: 64, decodeSteps: 192 },
        gate: { D: 4096, Ts: [64, 512], loopTokens: 2, reps: 1 },
        phases: { shape: 'magnus', T: 64, B: 1, reps: 1 },
        throughput: { model: { sequences: 4, T: 128, context: 64, steps: 32, reps: 1 }, shape: 'magnus', context: 128, steps: 4 },
        scaling: { shape: 'small', Ts: [64, 128, 256, 512, 1024], reps: 1 },
        trainmemory: { shape: 'magnus', T: 64, B: 3 },
        workers: { matmul: [256, 1024, 1024, 8], distill: { shape: 'small', layers: 2, T: 128, B: 1, steps: 2 }, eval: { shape: 'small', tokens: 1024 } },
      };
    case 'tiny':
      return {
        limits: { n: 128, reps: 3, copyBytes: 4 * 2 ** 20, copyReps: 3, numpy: true },
        native: { shape: 'small', layers: 2, vocab: 512, groupSize: 32, context: 16, prefillReps: 1, decodeWarmup: 2, decodeSteps: 3 },
        gate: { D: 64, Ts: [16, 32], loopTokens: 4, reps: 1 },
        phases: { shape: 'small', T: 16, B: 1, reps: 1 },
        throughput: { model: { sequences: 2, T: 16, context: 8, steps: 4, reps: 1 }, shape: null, context: 8, steps: 2 },
        scaling: { shape: 'small', Ts: [16, 32], reps: 1 },
        trainmemory: { shape: 'small', T: 16, B: 2 },
        workers: { matmul: [64, 64, 64, 2], distill: { shape: 'small', layers: 2, T: 16, B: 1, steps: 1 }, eval: { shape: 'small', tokens: 64 } },
      };
  }
}

export type LimitName = 'sgemm peak' | 'copy bandwidth';

export interface HeadlineRow {
  figure: string;
  value: number | null;
  /** What a speed is made of: GFLOP/s (prefill, training) or GB/s (decode); null for other figures. */
  rate: { value: number; unit: 'GFLOP/s' | 'GB/s' } | null;
  /** rate ÷ the machine limit it is measured against (machine.limits of the run that measured it). */
  ofLimit: { fraction: number; limit: LimitName; limitValue: number } | null;
  target: string | null;
  meets: boolean | null;
  note: string;
}

export interface ScalingRow {
  T: number;
  teacherLayerMs: number;
  studentLayerMs: number;
  /** eval per layer: the teacher and engine configurations (what an eval runs per layer without a .symb/adapter). */
  evalLayerMs: number;
  distillStepMs: number;
  attentionOnlyMs: number;
  gateOnlyMs: number;
  /** Projection GFLOP/s of the teacher layer and of the distill step (phases.ts FLOP counts). */
  gflops: { teacherPrefill: number; distillStep: number };
  /** gflops ÷ the sgemm peak of the same run. */
  fractionOfSgemmPeak: { teacherPrefill: number | null; distillStep: number | null };
}

/** The limits a section's ratios were divided by (those of the run that measured it). */
export interface LimitsUsed {
  measuredAt: string;
  sgemmPeakGflops: number;
  sgemmPeakLibrary: string;
  copyGbPerSec: number;
}

export type RatedPhaseRow = PhaseRow & { fractionOfSgemmPeak: number | null };
export type RatedModelThroughput = ModelThroughput & { fractionOfSgemmPeak: { prefill: number | null }; fractionOfCopy: { studentDecode: number | null } };
export type RatedShapeThroughput = ShapeThroughput & { fractionOfSgemmPeak: { prefillPerLayer: number | null }; fractionOfCopy: { studentDecode: number | null } };
export type RatedNativeRow = NativeRow & { limit: LimitName; fraction: number | null };

export interface BenchReport {
  schema: string;
  created: string;
  preset: Preset;
  /** The machine, and its limits measured at the start of this run. */
  machine: MachineInfo & { limits: MachineLimits };
  headline: HeadlineRow[];
  gate?: { measuredAt: string; rows: GateBenchRow[] };
  phases?: { measuredAt: string; limits: LimitsUsed; rows: RatedPhaseRow[]; timings: PhaseTimings; timingsWithFixes?: PhaseTimings };
  throughput?: { measuredAt: string; limits: LimitsUsed; models: RatedModelThroughput[]; shapes: RatedShapeThroughput[] };
  native?: { measuredAt: string; limits: LimitsUsed; rows: RatedNativeRow[] };
  scaling?: {
    measuredAt: string;
    limits: LimitsUsed;
    shape: string;
    rows: ScalingRow[];
    /** Least-squares slope of log(time) on log(T): 1 = linear, 2 = quadratic. */
    exponents: Record<string, number>;
  };
  workers?: { measuredAt: string; rows: (SpeedupRow & { identical?: boolean })[] };
  trainmemory?: { measuredAt: string; rows: DistillHeapRow[] };
  layerload?: { measuredAt: string; rows: LayerLoadTiming[]; heap: HeapGrowth[] };
  magnus?: { measuredAt: string; dir: string; runs: CommandRun[]; limitGiB: number };
  /** Peak RSS of the bench process after each section it ran (e). */
  rss: Record<string, RssInfo>;
}

export const MAGNUS_RUNS = ['eval', 'distill'] as const;
export type MagnusRun = (typeof MAGNUS_RUNS)[number];
const MAGNUS_RUN_NAMES: Record<MagnusRun, string> = { eval: 'eval --suite smoke', distill: 'distill --layers 0-7 --epochs 1 --max-seqs 8 --seq-len 64' };

/** The CLI arguments of a Magnus-shaped run (outputs beside the model directory). */
export function magnusRunArgs(name: MagnusRun, dir: string): string[] {
  const parent = path.dirname(path.resolve(dir));
  if (name === 'eval') return ['eval', '--model', dir, '--suite', 'smoke', '--out', path.join(parent, 'magnus-eval'), '--overwrite'];
  return ['distill', '--model', dir, '--layers', '0-7', '--epochs', '1', '--max-seqs', '8', '--seq-len', '64', '--out', path.join(parent, 'magnus-distill'), '--overwrite', '--no-cache'];
}

/** Runs replace earlier runs of the same name; the others are kept. */
export function mergeMagnusRuns(previous: BenchReport['magnus'] | undefined, dir: string, runs: CommandRun[]): NonNullable<BenchReport['magnus']> {
  const kept = (previous?.runs ?? []).filter((p) => !runs.some((r) => r.name === p.name));
  const order = (n: string) => Object.values(MAGNUS_RUN_NAMES).indexOf(n);
  return { measuredAt: now(), dir, runs: [...kept, ...runs].sort((a, b) => order(a.name) - order(b.name)), limitGiB: 10 };
}

export interface BenchOptions {
  preset: Preset;
  /** Output directory (bench.json, README.md, charts). null: write nothing. */
  out: string | null;
  sections?: Section[];
  /** A `synaxim fixture --shape magnus` directory (layerload, magnus sections). */
  magnus?: string | null;
  /** Which Magnus runs the magnus section does (default both; the others keep earlier results). */
  magnusRuns?: MagnusRun[];
  log?: (line: string) => void;
}

const now = () => new Date().toISOString();

function readPrevious(file: string): Partial<BenchReport> {
  try {
    const j = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<BenchReport>;
    return j.schema === BENCH_SCHEMA ? j : {};
  } catch {
    return {};
  }
}

const gflopsRate = (value: number): HeadlineRow['rate'] => ({ value, unit: 'GFLOP/s' });
const gbRate = (value: number): HeadlineRow['rate'] => ({ value, unit: 'GB/s' });
const ofSgemm = (fraction: number | null, l: LimitsUsed): HeadlineRow['ofLimit'] => (fraction === null ? null : { fraction, limit: 'sgemm peak', limitValue: l.sgemmPeakGflops });
const ofCopy = (fraction: number | null, l: LimitsUsed): HeadlineRow['ofLimit'] => (fraction === null ? null : { fraction, limit: 'copy bandwidth', limitValue: l.copyGbPerSec });

/** Issue 15's targets: prefill ≥ 0.35 of the sgemm peak; decode bytes/s ≥ 0.5 of copy bandwidth at 1B sizes. */
export const PREFILL_TARGET = 0.35;
export const DECODE_BANDWIDTH_TARGET = 0.5;

export function headline(r: BenchReport): HeadlineRow[] {
  const rows: HeadlineRow[] = [];
  const plain = (figure: string, value: number | null, target: string | null, meets: boolean | null, note: string): HeadlineRow => ({ figure, value, rate: null, ofLimit: null, target, meets, note });
  const lim = r.machine?.limits;
  if (lim) {
    for (const g of lim.sgemm) rows.push({ ...plain(`machine: sgemm ${g.n}³ fp32, ${g.library}, ${g.threads} threads`, g.gflops, null, null, `GFLOP/s, median of ${g.reps}${g.library === lim.sgemmPeakLibrary ? '; the reference peak' : ''}`), rate: gflopsRate(g.gflops) });
    if (lim.numpyNote) rows.push(plain('machine: sgemm with numpy', null, null, null, lim.numpyNote));
    for (const c of lim.copy) rows.push({ ...plain(`machine: memory copy, ${c.method}, ${Math.round(c.bytes / 2 ** 20)} MiB`, c.gbPerSec, null, null, `GB/s read + written, median of ${c.reps}${c.gbPerSec === lim.copyGbPerSec ? '; the reference bandwidth' : ''}`), rate: gbRate(c.gbPerSec) });
  }
  for (const n of r.native?.rows ?? []) {
    const l = r.native!.limits;
    if (n.kind === 'prefill') {
      rows.push({
        figure: `${n.figure}: tokens/s`,
        value: n.tokensPerSec,
        rate: n.rate === null ? null : gflopsRate(n.rate),
        ofLimit: ofSgemm(n.fraction, l),
        target: `≥ ${PREFILL_TARGET} of sgemm peak`,
        meets: n.fraction === null ? null : n.fraction >= PREFILL_TARGET,
        note: n.skipped ? `skipped: ${n.skipped}` : n.detail,
      });
      continue;
    }
    const ref = n.referenceTokensPerSec;
    const refText = ref ? (ref.low === ref.high ? `${ref.low}` : `${ref.low}–${ref.high}`) : null;
    rows.push({
      figure: `${n.figure}: tokens/s`,
      value: n.tokensPerSec,
      rate: n.rate === null ? null : gbRate(n.rate),
      ofLimit: ofCopy(n.fraction, l),
      target: refText ? `≥ ${refText} tok/s (reference numpy engine, recorded in issue 15, not measured here)` : null,
      meets: refText && n.tokensPerSec !== null ? n.tokensPerSec >= ref!.high : null,
      note: n.skipped ? `skipped: ${n.skipped}` : `${n.detail}; ${sig(n.workPerToken / 2 ** 20)} MiB read per token (${ref?.source ?? 'no recorded reference at this size'})`,
    });
    if (n.bandwidthTarget) {
      rows.push({
        figure: `${n.figure}: bytes/s ÷ copy bandwidth`,
        value: n.fraction,
        rate: n.rate === null ? null : gbRate(n.rate),
        ofLimit: ofCopy(n.fraction, l),
        target: `≥ ${DECODE_BANDWIDTH_TARGET} of copy bandwidth`,
        meets: n.fraction === null ? null : n.fraction >= DECODE_BANDWIDTH_TARGET,
        note: n.skipped ? `skipped: ${n.skipped}` : 'weights as stored (int4 + f32 group scales), lm_head and gate states read once per token',
      });
    }
  }
  for (const g of r.gate?.rows ?? []) {
    rows.push(plain(
      `gate fwd+bwd speed-up, chunked vs per-token loop, D ${g.D}, T ${g.T}`,
      g.speedup,
      g.T === 64 && g.D === 4096 ? '≥ 20×' : null,
      g.T === 64 && g.D === 4096 ? g.speedup >= 20 : null,
      `with the final state; training path (no final state) ${g.speedupTrainingPath}×; ${g.note}`,
    ));
  }
  for (const f of r.phases?.rows ?? []) {
    rows.push({
      figure: `tfjs ${r.machine.backend}: ${f.phase}, ${f.shape}, T ${f.T}, ${f.sequences} seq${f.sequences > 1 ? 's' : ''}${f.variant ? ` (${f.variant})` : ''}: ms`,
      value: f.phaseMs,
      rate: gflopsRate(f.achievedGflops),
      ofLimit: ofSgemm(f.fractionOfSgemmPeak, r.phases!.limits),
      target: null,
      meets: null,
      note: `${f.matmulGflop} GFLOP of projections`,
    });
  }
  for (const t of r.trainmemory?.rows ?? []) {
    rows.push(plain(
      `distill step, one ${t.shape} layer, ${t.sequences} seqs × ${t.T}: wasm heap MiB (${t.variant})`,
      t.heapMiBAfter,
      '< 4096 (wasm32 limit)',
      t.ok && t.heapMiBAfter !== null ? t.heapMiBAfter < 4096 : false,
      t.ok ? `step ${t.stepMs} ms; loss ${t.loss}; d/d gate_bias ${t.gradGateBias}` : `FAILED: ${t.error}`,
    ));
  }
  for (const m of r.throughput?.models ?? []) {
    const l = r.throughput!.limits;
    rows.push({ figure: `tfjs: ${m.model}: teacher prefill tokens/s`, value: m.prefill.tokensPerSec, rate: gflopsRate(m.prefill.gflops), ofLimit: ofSgemm(m.fractionOfSgemmPeak.prefill, l), target: null, meets: null, note: `${m.prefill.sequences} × ${m.prefill.T} tokens, whole model` });
    rows.push({ figure: `tfjs: ${m.model}: student recurrent decode tokens/s`, value: m.decode.studentTokensPerSec, rate: gbRate(m.decode.studentGbPerSec), ofLimit: ofCopy(m.fractionOfCopy.studentDecode, l), target: null, meets: null, note: `${m.decode.studentOverTeacher}× the teacher's KV-cache decode at context ${m.decode.context}; f32 weights` });
  }
  for (const s of r.throughput?.shapes ?? []) {
    const l = r.throughput!.limits;
    rows.push({ figure: `tfjs: ${s.shape}: teacher prefill tokens/s per layer`, value: s.perLayer.prefillTokensPerSec, rate: gflopsRate(s.perLayer.prefillGflops), ofLimit: ofSgemm(s.fractionOfSgemmPeak.prefillPerLayer, l), target: null, meets: null, note: `T ${s.perLayer.prefillT}; whole model ${s.extrapolated.prefillTokensPerSec} tok/s (extrapolated)` });
    rows.push({
      figure: `tfjs: ${s.shape}: student decode tokens/s, whole model (EXTRAPOLATED from one layer)`,
      value: s.extrapolated.studentDecodeTokensPerSec,
      rate: gbRate(s.extrapolated.studentDecodeGbPerSec),
      ofLimit: ofCopy(s.fractionOfCopy.studentDecode, l),
      target: null,
      meets: null,
      note: `${s.extrapolated.studentOverTeacher}× the teacher's KV decode at context ${s.perLayer.decodeContext}; compute only, f32 weights`,
    });
  }
  if (r.scaling) {
    const e = r.scaling.exponents;
    rows.push(plain(`growth exponent in T (${r.scaling.shape} layer): distill step`, e.distillStep ?? null, '≈ 1 (linear)', null, `T ${r.scaling.rows.map((x) => x.T).join(', ')}`));
    rows.push(plain('growth exponent in T: eval (teacher + engine layer)', e.evalLayer ?? null, null, null, `student layer ${e.studentLayer}, teacher layer ${e.teacherLayer}`));
    rows.push(plain('growth exponent in T: teacher attention term alone', e.attentionOnly ?? null, '≈ 2 (quadratic)', null, `gate alone ${e.gateOnly}`));
  }
  for (const w of r.workers?.rows ?? []) rows.push(plain(`2 vs 1 worker threads: ${w.work}`, w.speedup, null, null, w.note));
  for (const m of r.magnus?.runs ?? []) {
    rows.push(plain(
      `Magnus run: ${m.name} peak RSS GiB`,
      m.peakRssGiB,
      `≤ ${r.magnus!.limitGiB} GiB`,
      m.peakRssGiB !== null && m.exitCode === 0 ? m.peakRssGiB <= r.magnus!.limitGiB : false,
      `exit ${m.exitCode}, wall ${m.wallSec} s${m.exitCode !== 0 ? ` — ${(m.tail ?? '').split('\n').find((l) => /error/i.test(l)) ?? 'failed'}` : ''}${m.note ? `; ${m.note}` : ''}`,
    ));
  }
  return rows;
}

/** The limits of this run, as a section records them. */
export function limitsUsed(l: MachineLimits): LimitsUsed {
  return { measuredAt: l.measuredAt, sgemmPeakGflops: l.sgemmPeakGflops, sgemmPeakLibrary: l.sgemmPeakLibrary, copyGbPerSec: l.copyGbPerSec };
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const log = o.log ?? (() => {});
  const sizes = presetSizes(o.preset);
  const wanted = new Set<Section>(o.sections ?? SECTIONS.filter((s) => (s === 'magnus' || s === 'layerload' ? Boolean(o.magnus) : true)));
  const jsonFile = o.out ? path.join(o.out, 'bench.json') : null;
  const prev = jsonFile ? readPrevious(jsonFile) : {};
  const limits = await measureLimits(sizes.limits, log);
  const used = limitsUsed(limits);
  const r: BenchReport = { schema: BENCH_SCHEMA, created: now(), preset: o.preset, machine: { ...describeMachine(), limits }, headline: [], rss: {} };
  for (const s of SECTIONS) {
    if (wanted.has(s) || !prev[s]) continue;
    (r as unknown as Record<string, unknown>)[s] = prev[s];
    if (prev.rss?.[s]) r.rss[s] = prev.rss[s]!;
  }
  const mark = (s: string) => {
    r.rss[s] = rss();
    log(`${s}: done, peak RSS ${r.rss[s]!.maxRssMiB} MiB`);
  };

  /** Run a section's measurements in a fresh worker: its own wasm heap (which never shrinks) and kernel registry. */
  const inWorker = async <T>(name: string, args: unknown[]): Promise<T> => {
    const pool = await WorkerPool.start(1);
    try {
      return await pool.call<T>(0, BENCH_TASKS, 'runSection', [name, ...args]);
    } finally {
      await pool.close();
    }
  };

  if (wanted.has('gate')) {
    r.gate = { measuredAt: now(), rows: await inWorker<GateBenchRow[]>('gate', [sizes]) };
    mark('gate');
  }

  if (wanted.has('phases')) {
    // The code as is, and with src/runtime/wasmFixes.ts (as is, a Magnus distill step of more than
    // one sequence exhausts the wasm heap: see trainmemory).
    const asIs = await inWorker<PhasesResult>('phases', [sizes, false]);
    const fixed = await inWorker<PhasesResult>('phases', [sizes, true]);
    const rows = [...asIs.rows, ...fixed.rows].map((f) => ({ ...f, fractionOfSgemmPeak: fractionOf(f.achievedGflops, used.sgemmPeakGflops) }));
    r.phases = { measuredAt: now(), limits: used, rows, timings: asIs.timings, timingsWithFixes: fixed.timings };
    mark('phases');
  }

  if (wanted.has('trainmemory')) {
    // One distill step of one layer, as is and with the wasm fixes, each in a fresh worker (fresh heap, own kernel registry).
    const m = sizes.trainmemory;
    const rows: DistillHeapRow[] = [];
    for (const fixed of [false, true]) {
      const pool = await WorkerPool.start(1);
      try {
        rows.push(await pool.call<DistillHeapRow>(0, BENCH_TASKS, 'distillHeapTask', [m.shape, m.B, m.T, fixed]));
      } catch (e) {
        rows.push({ variant: fixed ? 'with wasmFixes' : 'as is', shape: m.shape, T: m.T, sequences: m.B, ok: false, error: `worker died: ${(e as Error).message}`, stepMs: null, heapMiBBefore: null, heapMiBAfter: null, loss: null, gradGateBias: null });
      } finally {
        await pool.close();
      }
      const last = rows[rows.length - 1]!;
      log(`train memory (${last.variant}): ${last.ok ? `heap ${last.heapMiBBefore} -> ${last.heapMiBAfter} MiB, step ${last.stepMs} ms` : `failed: ${last.error}`}`);
    }
    r.trainmemory = { measuredAt: now(), rows };
    mark('trainmemory');
  }

  if (wanted.has('throughput')) {
    const t = await inWorker<{ models: ModelThroughput[]; shapes: ShapeThroughput[] }>('throughput', [sizes]);
    r.throughput = {
      measuredAt: now(),
      limits: used,
      models: t.models.map((m) => ({ ...m, fractionOfSgemmPeak: { prefill: fractionOf(m.prefill.gflops, used.sgemmPeakGflops) }, fractionOfCopy: { studentDecode: fractionOf(m.decode.studentGbPerSec, used.copyGbPerSec) } })),
      shapes: t.shapes.map((x) => ({ ...x, fractionOfSgemmPeak: { prefillPerLayer: fractionOf(x.perLayer.prefillGflops, used.sgemmPeakGflops) }, fractionOfCopy: { studentDecode: fractionOf(x.extrapolated.studentDecodeGbPerSec, used.copyGbPerSec) } })),
    };
    mark('throughput');
  }

  if (wanted.has('scaling')) {
    const sc = await inWorker<{ shape: string; rows: Omit<ScalingRow, 'fractionOfSgemmPeak'>[]; exponents: Record<string, number> }>('scaling', [sizes]);
    const rows = sc.rows.map((x) => ({ ...x, fractionOfSgemmPeak: { teacherPrefill: fractionOf(x.gflops.teacherPrefill, used.sgemmPeakGflops), distillStep: fractionOf(x.gflops.distillStep, used.sgemmPeakGflops) } }));
    r.scaling = { measuredAt: now(), limits: used, shape: sc.shape, rows, exponents: sc.exponents };
    mark('scaling');
  }

  if (wanted.has('workers')) {
    const w = sizes.workers;
    const rows: (SpeedupRow & { identical?: boolean })[] = [];
    rows.push(await matmulSpeedup(...w.matmul));
    log(`workers: matmul ${rows[rows.length - 1]!.speedup}×`);
    rows.push(await distillLayersSpeedup(w.distill.shape, w.distill.layers, w.distill.T, w.distill.B, w.distill.steps));
    log(`workers: distill layers ${rows[rows.length - 1]!.speedup}×`);
    rows.push(await evalSpeedup(w.eval.shape, w.eval.tokens, log));
    log(`workers: eval ${rows[rows.length - 1]!.speedup}×`);
    r.workers = { measuredAt: now(), rows };
    mark('workers');
  }

  if (wanted.has('native')) {
    const rows = await nativeSection(sizes.native, log);
    r.native = {
      measuredAt: now(),
      limits: used,
      rows: rows.map((n) => {
        const limit: LimitName = n.kind === 'prefill' ? 'sgemm peak' : 'copy bandwidth';
        return { ...n, limit, fraction: fractionOf(n.rate, limit === 'sgemm peak' ? used.sgemmPeakGflops : used.copyGbPerSec) };
      }),
    };
    mark('native');
  }

  if (wanted.has('layerload')) {
    if (!o.magnus) throw new Error('bench: the layerload section needs --magnus DIR');
    const rows: LayerLoadTiming[] = [];
    for (const sub of ['hf', 'symb-int4']) {
      const dir = path.join(o.magnus, sub);
      if (!fs.existsSync(dir)) continue;
      const w = openModel(dir);
      try {
        rows.push(layerLoadTiming(w, 0, o.preset === 'full' ? 2 : 1));
        log(`layer load ${sub}: decode ${rows[rows.length - 1]!.decodeMs} ms, upload ${rows[rows.length - 1]!.uploadMs} ms`);
      } finally {
        w.close();
      }
    }
    // Wasm heap while streaming layers, each order in a fresh worker (a wasm heap never shrinks).
    const heap: HeapGrowth[] = [];
    const int4 = path.join(o.magnus, 'symb-int4');
    if (fs.existsSync(int4)) {
      for (const order of ['uploadLayer', 'largestFirst'] as const) {
        const pool = await WorkerPool.start(1);
        try {
          heap.push(await pool.call<HeapGrowth>(0, BENCH_TASKS, 'heapGrowthTask', [int4, [0, 1, 2, 3], order, 64]));
          log(`heap growth (${order}): ${heap[heap.length - 1]!.heapMiBAfterLayer.join(', ')} MiB for ${heap[heap.length - 1]!.layerMiB} MiB layers`);
        } finally {
          await pool.close();
        }
      }
    }
    r.layerload = { measuredAt: now(), rows, heap };
    mark('layerload');
  }

  if (wanted.has('magnus')) {
    if (!o.magnus) throw new Error('bench: the magnus section needs --magnus DIR');
    const logs = path.join(o.out ?? '.', 'logs');
    const runs: CommandRun[] = [];
    for (const name of o.magnusRuns ?? MAGNUS_RUNS) {
      log(`magnus: ${name} (long)`);
      const run = await measureCommand(MAGNUS_RUN_NAMES[name], magnusRunArgs(name, o.magnus), path.join(logs, `magnus-${name}.log`));
      log(`magnus ${name}: exit ${run.exitCode}, ${run.wallSec} s, peak ${run.peakRssGiB} GiB`);
      runs.push(run);
    }
    r.magnus = mergeMagnusRuns(prev.magnus, o.magnus, runs);
    mark('magnus');
  }

  r.headline = headline(r);
  if (o.out && jsonFile) {
    fs.mkdirSync(o.out, { recursive: true });
    writeJsonAtomic(jsonFile, r);
    await writeBenchReadme(o.out, r);
  }
  return r;
}

