/**
 * `synaxim bench`: every figure a ratio of two measurements taken in the same run on this machine.
 *
 *   gate        (a) chunked-parallel gate fwd+bwd vs the scripts' per-token loop, Magnus dims
 *   phases      (b) teacher prefill / distill step of one layer as a fraction of the backend's
 *                   plain-matmul throughput at the same shapes
 *   throughput  (c) prefill and decode tokens/s: stories260k (whole model), Magnus (one layer,
 *                   extrapolated and labelled)
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
import { describeMachine, rss, type MachineInfo, type RssInfo } from './machine.ts';
import type { GateBenchRow } from './gate.ts';
import type { FractionRow, PhaseTimings } from './phases.ts';
import type { PhasesResult } from './sections.ts';
import { layerLoadTiming, type HeapGrowth, type LayerLoadTiming, type ModelThroughput, type ShapeThroughput } from './throughput.ts';
import { WorkerPool } from '../src/runtime/workers.ts';
import { BENCH_TASKS, type DistillHeapRow } from './tasks.ts';
import { distillLayersSpeedup, evalSpeedup, matmulSpeedup, type SpeedupRow } from './parallel.ts';
import { measureCommand, type CommandRun } from './runs.ts';
import type { BenchShape } from './synthetic.ts';
import { writeBenchReadme } from './report.ts';

export const BENCH_SCHEMA = 'synaxim-bench/1';
export const SECTIONS = ['gate', 'phases', 'trainmemory', 'throughput', 'scaling', 'workers', 'layerload', 'magnus'] as const;
export type Section = (typeof SECTIONS)[number];
export type Preset = 'full' | 'quick' | 'tiny';

export interface Sizes {
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
        gate: { D: 4096, Ts: [64, 512], loopTokens: 4, reps: 2 },
        phases: { shape: 'magnus', T: 64, B: 2, reps: 2 },
        throughput: { model: { sequences: 8, T: 256, context: 128, steps: 64, reps: 3 }, shape: 'magnus', context: 512, steps: 8 },
        scaling: { shape: 'llama-1b', Ts: [64, 128, 256, 512, 1024], reps: 1 },
        trainmemory: { shape: 'magnus', T: 64, B: 7 },
        workers: { matmul: [512, 2048, 2048, 8], distill: { shape: 'small', layers: 2, T: 256, B: 2, steps: 4 }, eval: { shape: 'small', tokens: 2048 } },
      };
    case 'quick':
      return {
        gate: { D: 4096, Ts: [64, 512], loopTokens: 2, reps: 1 },
        phases: { shape: 'magnus', T: 64, B: 1, reps: 1 },
        throughput: { model: { sequences: 4, T: 128, context: 64, steps: 32, reps: 1 }, shape: 'magnus', context: 128, steps: 4 },
        scaling: { shape: 'small', Ts: [64, 128, 256, 512, 1024], reps: 1 },
        trainmemory: { shape: 'magnus', T: 64, B: 3 },
        workers: { matmul: [256, 1024, 1024, 8], distill: { shape: 'small', layers: 2, T: 128, B: 1, steps: 2 }, eval: { shape: 'small', tokens: 1024 } },
      };
    case 'tiny':
      return {
        gate: { D: 64, Ts: [16, 32], loopTokens: 4, reps: 1 },
        phases: { shape: 'small', T: 16, B: 1, reps: 1 },
        throughput: { model: { sequences: 2, T: 16, context: 8, steps: 4, reps: 1 }, shape: null, context: 8, steps: 2 },
        scaling: { shape: 'small', Ts: [16, 32], reps: 1 },
        trainmemory: { shape: 'small', T: 16, B: 2 },
        workers: { matmul: [64, 64, 64, 2], distill: { shape: 'small', layers: 2, T: 16, B: 1, steps: 1 }, eval: { shape: 'small', tokens: 64 } },
      };
  }
}

export interface HeadlineRow {
  figure: string;
  value: number | null;
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
  fractionOfPeak: { teacherPrefill: number; distillStep: number };
}

export interface BenchReport {
  schema: string;
  created: string;
  preset: Preset;
  machine: MachineInfo;
  headline: HeadlineRow[];
  gate?: { measuredAt: string; rows: GateBenchRow[] };
  phases?: { measuredAt: string; rows: FractionRow[]; timings: PhaseTimings; timingsWithFixes?: PhaseTimings };
  throughput?: { measuredAt: string; models: ModelThroughput[]; shapes: ShapeThroughput[] };
  scaling?: {
    measuredAt: string;
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

export function headline(r: BenchReport): HeadlineRow[] {
  const rows: HeadlineRow[] = [];
  for (const g of r.gate?.rows ?? []) {
    rows.push({
      figure: `gate fwd+bwd speed-up, chunked vs per-token loop, D ${g.D}, T ${g.T}`,
      value: g.speedup,
      target: g.T === 64 && g.D === 4096 ? '≥ 20×' : null,
      meets: g.T === 64 && g.D === 4096 ? g.speedup >= 20 : null,
      note: `with the final state; training path (no final state) ${g.speedupTrainingPath}×; ${g.note}`,
    });
  }
  for (const f of r.phases?.rows ?? []) {
    rows.push({ figure: `${f.phase} / peak matmul, ${f.shape}, T ${f.T}, ${f.sequences} seq${f.sequences > 1 ? 's' : ''}${f.variant ? ` (${f.variant})` : ''}`, value: f.fractionOfPeak, target: '≥ 0.6', meets: f.fractionOfPeak >= 0.6, note: `${f.achievedGflops} of ${f.peakGflops} GFLOP/s${f.fractionWithoutTransposes !== undefined ? `; ${f.fractionWithoutTransposes} without the ${f.weightTransposeMs} ms of weight transposes its backward materialises` : ''}` });
  }
  for (const t of r.trainmemory?.rows ?? []) {
    rows.push({
      figure: `distill step, one ${t.shape} layer, ${t.sequences} seqs × ${t.T}: wasm heap MiB (${t.variant})`,
      value: t.heapMiBAfter,
      target: '< 4096 (wasm32 limit)',
      meets: t.ok && t.heapMiBAfter !== null ? t.heapMiBAfter < 4096 : false,
      note: t.ok ? `step ${t.stepMs} ms; loss ${t.loss}; d/d gate_bias ${t.gradGateBias}` : `FAILED: ${t.error}`,
    });
  }
  for (const m of r.throughput?.models ?? []) {
    rows.push({ figure: `${m.model}: teacher prefill tokens/s`, value: m.prefill.tokensPerSec, target: null, meets: null, note: `${m.prefill.sequences} × ${m.prefill.T} tokens, whole model` });
    rows.push({ figure: `${m.model}: student recurrent decode tokens/s`, value: m.decode.studentTokensPerSec, target: null, meets: null, note: `${m.decode.studentOverTeacher}× the teacher's KV-cache decode at context ${m.decode.context}` });
  }
  for (const s of r.throughput?.shapes ?? []) {
    rows.push({ figure: `${s.shape}: teacher prefill tokens/s per layer`, value: s.perLayer.prefillTokensPerSec, target: null, meets: null, note: `T ${s.perLayer.prefillT}; whole model ${s.extrapolated.prefillTokensPerSec} tok/s (extrapolated)` });
    rows.push({
      figure: `${s.shape}: student decode tokens/s, whole model (EXTRAPOLATED from one layer)`,
      value: s.extrapolated.studentDecodeTokensPerSec,
      target: null,
      meets: null,
      note: `${s.extrapolated.studentOverTeacher}× the teacher's KV decode at context ${s.perLayer.decodeContext}; compute only`,
    });
  }
  if (r.scaling) {
    const e = r.scaling.exponents;
    rows.push({ figure: `growth exponent in T (${r.scaling.shape} layer): distill step`, value: e.distillStep ?? null, target: '≈ 1 (linear)', meets: null, note: `T ${r.scaling.rows.map((x) => x.T).join(', ')}` });
    rows.push({ figure: 'growth exponent in T: eval (teacher + engine layer)', value: e.evalLayer ?? null, target: null, meets: null, note: `student layer ${e.studentLayer}, teacher layer ${e.teacherLayer}` });
    rows.push({ figure: 'growth exponent in T: teacher attention term alone', value: e.attentionOnly ?? null, target: '≈ 2 (quadratic)', meets: null, note: `gate alone ${e.gateOnly}` });
  }
  for (const w of r.workers?.rows ?? []) rows.push({ figure: `2 vs 1 worker threads: ${w.work}`, value: w.speedup, target: null, meets: null, note: w.note });
  for (const m of r.magnus?.runs ?? []) {
    rows.push({
      figure: `Magnus run: ${m.name} peak RSS GiB`,
      value: m.peakRssGiB,
      target: `≤ ${r.magnus!.limitGiB} GiB`,
      meets: m.peakRssGiB !== null && m.exitCode === 0 ? m.peakRssGiB <= r.magnus!.limitGiB : false,
      note: `exit ${m.exitCode}, wall ${m.wallSec} s${m.exitCode !== 0 ? ` — ${(m.tail ?? '').split('\n').find((l) => /error/i.test(l)) ?? 'failed'}` : ''}${m.note ? `; ${m.note}` : ''}`,
    });
  }
  return rows;
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const log = o.log ?? (() => {});
  const sizes = presetSizes(o.preset);
  const wanted = new Set<Section>(o.sections ?? SECTIONS.filter((s) => (s === 'magnus' || s === 'layerload' ? Boolean(o.magnus) : true)));
  const jsonFile = o.out ? path.join(o.out, 'bench.json') : null;
  const prev = jsonFile ? readPrevious(jsonFile) : {};
  const r: BenchReport = { schema: BENCH_SCHEMA, created: now(), preset: o.preset, machine: describeMachine(), headline: [], rss: {} };
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
    r.phases = { measuredAt: now(), rows: [...asIs.rows, ...fixed.rows], timings: asIs.timings, timingsWithFixes: fixed.timings };
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
    r.throughput = { measuredAt: now(), ...(await inWorker<Omit<NonNullable<BenchReport['throughput']>, 'measuredAt'>>('throughput', [sizes])) };
    mark('throughput');
  }

  if (wanted.has('scaling')) {
    r.scaling = { measuredAt: now(), ...(await inWorker<Omit<NonNullable<BenchReport['scaling']>, 'measuredAt'>>('scaling', [sizes])) };
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


/**
 * Put Magnus runs measured elsewhere (e.g. with `measureCommand` while nothing else ran) into an
 * existing bench.json and regenerate its README. Returns the updated report.
 */
export async function recordMagnusRuns(out: string, dir: string, runs: CommandRun[]): Promise<BenchReport> {
  const file = path.join(out, 'bench.json');
  const prev = readPrevious(file) as BenchReport;
  if (!prev.schema) throw new Error(`recordMagnusRuns: no ${BENCH_SCHEMA} report in ${file}`);
  const r: BenchReport = { ...prev, magnus: mergeMagnusRuns(prev.magnus, dir, runs) };
  r.headline = headline(r);
  writeJsonAtomic(file, r);
  await writeBenchReadme(out, r);
  return r;
}
