/**
 * Benchmark work that runs inside worker threads (src/runtime/workers.ts): distillation steps of one
 * layer of a shape (module-scope cache: the layer stays uploaded in its worker between calls, as
 * the sticky routing of WorkerPool.mapSticky intends).
 */
import { BenchLayer, PhaseInputs } from './phases.ts';
import { benchConfig, type BenchShape } from './synthetic.ts';
import { runPass } from '../src/distill/train.ts';
import { ropeCosSin } from '../src/model/nn.ts';
import { openModel } from '../src/formats/openModel.ts';
import { decoderLayer, softmaxAttentionBlock } from '../src/teacher/teacher.ts';
import { heapGrowth, wasmHeapBytes, type HeapGrowth } from './throughput.ts';
import { applyWasmMemoryFixes } from '../src/runtime/wasmFixes.ts';
import { gateSection, phasesSection, scalingSection, throughputSection } from './sections.ts';
import type { Sizes } from './run.ts';

export const BENCH_TASKS = new URL('./tasks.ts', import.meta.url);

const layers = new Map<string, { bl: BenchLayer; x: PhaseInputs }>();

/** `steps` distillation steps (forward + gradients) of layer `layerKey` of `shape`; total ms. */
export function distillLayerSteps(shape: BenchShape, layerKey: number, T: number, B: number, steps: number): { ms: number; loss: number } {
  const key = `${shape}/${layerKey}/${T}/${B}`;
  let e = layers.get(key);
  if (!e) {
    const bl = new BenchLayer(benchConfig(shape));
    e = { bl, x: new PhaseInputs(bl, T, B) };
    layers.set(key, e);
    runPass(e.x.pass, [0], e.x.params, true); // warm-up
  }
  const seqs = Array.from({ length: B }, (_, s) => s);
  let loss = 0;
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) loss = runPass(e.x.pass, seqs, e.x.params, true).loss;
  return { ms: performance.now() - t0, loss };
}

/** heapGrowth of throughput.ts in this worker (a fresh wasm heap per worker). */
export function heapGrowthTask(dir: string, layerList: number[], order: 'uploadLayer' | 'largestFirst', T: number): HeapGrowth {
  const w = openModel(dir);
  try {
    const c = w.config;
    const rope = ropeCosSin(c, Array.from({ length: T }, (_, i) => i));
    try {
      return heapGrowth(w, layerList, order, T, (layer, h) => decoderLayer(h, layer, c.rmsNormEps, (n) => softmaxAttentionBlock(n, layer, c, rope.cos, rope.sin)));
    } finally {
      rope.cos.dispose();
      rope.sin.dispose();
    }
  } finally {
    w.close();
  }
}

export interface DistillHeapRow {
  variant: 'as is' | 'with wasmFixes';
  shape: string;
  T: number;
  sequences: number;
  ok: boolean;
  error: string | null;
  stepMs: number | null;
  heapMiBBefore: number | null;
  heapMiBAfter: number | null;
  loss: number | null;
  /** First entry of the gate_bias gradient (the two variants must agree). */
  gradGateBias: number | null;
}

/**
 * One distillation step (runPass with gradients, one layer, `B` sequences) in this worker, with or
 * without the wasm fixes (src/runtime/wasmFixes.ts, restored afterwards); reports the wasm heap. Run
 * it in a fresh worker: the wasm heap never shrinks.
 */
export function distillHeapTask(shape: BenchShape, B: number, T: number, fixed: boolean): DistillHeapRow {
  const restoreFixes = fixed ? applyWasmMemoryFixes() : () => {};
  const row: DistillHeapRow = { variant: fixed ? 'with wasmFixes' : 'as is', shape, T, sequences: B, ok: false, error: null, stepMs: null, heapMiBBefore: null, heapMiBAfter: null, loss: null, gradGateBias: null };
  const heap = () => Math.round((wasmHeapBytes() ?? 0) / 2 ** 20);
  try {
    const bl = new BenchLayer(benchConfig(shape));
    const x = new PhaseInputs(bl, T, B);
    const seqs = Array.from({ length: B }, (_, s) => s);
    runPass(x.pass, seqs, x.params, false); // forward once: XNNPACK packs the weights
    row.heapMiBBefore = heap();
    const t0 = performance.now();
    const r = runPass(x.pass, seqs, x.params, true);
    row.stepMs = Math.round(performance.now() - t0);
    row.heapMiBAfter = heap();
    row.loss = r.loss;
    row.gradGateBias = r.grads![0]![0]!;
    row.ok = true;
  } catch (e) {
    row.error = (e as Error).message;
    row.heapMiBAfter = heap();
  } finally {
    restoreFixes();
  }
  return row;
}

/** Run one bench section's measurements in this worker (see sections.ts). */
export function runSection(name: 'gate' | 'phases' | 'throughput' | 'scaling', sizes: Sizes, ...rest: unknown[]): unknown {
  switch (name) {
    case 'gate':
      return gateSection(sizes);
    case 'phases':
      return phasesSection(sizes, Boolean(rest[0]));
    case 'throughput':
      return throughputSection(sizes);
    case 'scaling':
      return scalingSection(sizes);
  }
}
