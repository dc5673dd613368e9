/**
 * Benchmark work that runs inside worker threads (src/core/workers.ts): distillation steps of one
 * layer of a shape (module-scope cache: the layer stays uploaded in its worker between calls, as
 * the sticky routing of WorkerPool.mapSticky intends).
 */
import { BenchLayer, PhaseInputs } from './phases.ts';
import { benchConfig, type BenchShape } from './synthetic.ts';
import { runPass } from '../distill/train.ts';

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

/** Release what `distillLayerSteps` keeps. */
export function releaseLayers(): void {
  for (const e of layers.values()) {
    e.x.dispose();
    e.bl.dispose();
  }
  layers.clear();
}
