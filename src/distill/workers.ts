/**
 * Distillation over both cores for `--input teacher`. There every trained layer l reads the
 * teacher's hidden state l and is compared with hidden state l+1, so the layers of one step are
 * independent: they can run on different worker threads (each with its own tfjs engine, its own
 * weights for its layers, its own tf.Variables), and the step's loss and gradients are put back
 * together here. (`--input student` chains the layers — l reads l−1's output — so it stays on one
 * thread.)
 *
 *   const pool = await TeacherInputLayerWorkers.start({ studentDir, opts, seqLen, teacher }, 2);
 *   try {
 *     const r = await pool.pass(batch, params.read(), true);   // same contract as runPass(ctx, batch, params, true)
 *   } finally {
 *     await pool.close();
 *   }
 *
 * Layer at position p of `opts.layers` goes to worker p mod N (sticky: a worker keeps its layers
 * resident when they fit in `residentBytes`, else streams them a layer at a time as runPass does).
 * A worker runs runPass of src/distill/train.ts on its own layers; its gradients are scaled from
 * 1/(B · its layers) to 1/(B · all layers), so the result is runPass's over all layers (up to float
 * rounding of that scale). This module is the worker side too (its `layerWorker*` functions).
 *
 * Memory: each worker holds the teacher hidden states of its layers (indices l and l+1) and its
 * layers' weights; two workers need about twice one layer's weights on the host and heap.
 */
import { WorkerPool, type WorkerPoolOptions } from '../runtime/workers.ts';
import { applyWasmMemoryFixes } from '../runtime/wasmFixes.ts';
import { fail } from '../util/errors.ts';
import { initialAdapter } from '../formats/adapter.ts';
import { openModel } from '../formats/openModel.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { AdapterVariables, LayerSource, runPass, type PassContext, type PassResult, type TrainOptions } from './train.ts';

const MODULE = new URL(import.meta.url);
/** Adapter tensors per layer in the flat parameter list: gate_bias, gate_scale, output_scale, mix_alpha. */
const PER_LAYER = 4;

export interface LayerWorkersSpec {
  /** The student's weight directory (HF or .symb); every worker opens it. */
  studentDir: string;
  /** Training options; `input` must be 'teacher'. */
  opts: TrainOptions;
  seqLen: number;
  /** Teacher residual stream: index i -> per sequence [T·hidden]; needs l and l+1 for every trained l. */
  teacher: Map<number, Float32Array[]>;
  /** Keep a worker's layers uploaded when they fit in this many bytes (default 1 GiB, as LayerSource). */
  residentBytes?: number;
}

interface WorkerInit {
  studentDir: string;
  opts: TrainOptions;
  seqLen: number;
  teacher: [number, Float32Array[]][];
  residentBytes: number;
  totalLayers: number;
}

export class TeacherInputLayerWorkers {
  private constructor(
    private readonly pool: WorkerPool,
    /** positions[w] = positions in opts.layers handled by worker w. */
    private readonly positions: number[][],
    private readonly nLayers: number,
  ) {}

  /** Start `workers` threads (at most one per trained layer) and hand each its layers. */
  static async start(spec: LayerWorkersSpec, workers: number, poolOpts: WorkerPoolOptions = {}): Promise<TeacherInputLayerWorkers> {
    if (spec.opts.input !== 'teacher') fail(null, 'layer-parallel distillation needs --input teacher (with --input student each layer reads the previous one)');
    const layers = spec.opts.layers;
    const n = Math.max(1, Math.min(workers, layers.length));
    const positions = Array.from({ length: n }, (_, w) => layers.map((_, p) => p).filter((p) => p % n === w));
    const pool = await WorkerPool.start(n, poolOpts);
    try {
      await Promise.all(
        positions.map((ps, w) => {
          const mine = ps.map((p) => layers[p]!);
          const indices = new Set(mine.flatMap((l) => [l, l + 1]));
          const teacher: [number, Float32Array[]][] = [...indices].map((i) => {
            const h = spec.teacher.get(i);
            if (!h) throw new Error(`TeacherInputLayerWorkers: teacher hidden state ${i} is missing`);
            return [i, h];
          });
          const init: WorkerInit = { studentDir: spec.studentDir, opts: { ...spec.opts, layers: mine }, seqLen: spec.seqLen, teacher, residentBytes: spec.residentBytes ?? 1 << 30, totalLayers: layers.length };
          return pool.call(w, MODULE, 'layerWorkerInit', [init]);
        }),
      );
    } catch (e) {
      await pool.close();
      throw e;
    }
    return new TeacherInputLayerWorkers(pool, positions, layers.length);
  }

  get size(): number {
    return this.pool.size;
  }

  /**
   * runPass over the batch `seqIdx` for every trained layer, the layers spread over the workers.
   * `params` is the flat adapter list (AdapterVariables.read() order); grads come back in that order.
   */
  async pass(seqIdx: number[], params: Float32Array[], withGrad: boolean): Promise<PassResult> {
    if (params.length !== PER_LAYER * this.nLayers) throw new Error(`TeacherInputLayerWorkers.pass: ${params.length} parameter tensors for ${this.nLayers} layers`);
    const results = await Promise.all(
      this.positions.map((ps, w) => this.pool.call<PassResult>(w, MODULE, 'layerWorkerPass', [seqIdx, ps.flatMap((p) => params.slice(PER_LAYER * p, PER_LAYER * (p + 1))), withGrad])),
    );
    const lossPerLayer = new Array<number>(this.nLayers).fill(NaN);
    const grads: Float32Array[] | null = withGrad ? new Array<Float32Array>(PER_LAYER * this.nLayers) : null;
    results.forEach((r, w) => {
      this.positions[w]!.forEach((p, i) => {
        lossPerLayer[p] = r.lossPerLayer[i]!;
        if (grads) for (let k = 0; k < PER_LAYER; k++) grads[PER_LAYER * p + k] = r.grads![PER_LAYER * i + k]!;
      });
    });
    return { lossPerLayer, loss: lossPerLayer.reduce((a, b) => a + b, 0) / this.nLayers, grads };
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Worker side (runs in a WorkerPool thread)

let worker: { ctx: PassContext; vars: AdapterVariables; weights: ModelWeights; scale: number; restoreFixes: () => void } | null = null;

/** Open the student, take this worker's layers and teacher states. Replaces an earlier init. */
export function layerWorkerInit(init: WorkerInit): void {
  layerWorkerRelease();
  const restoreFixes = applyWasmMemoryFixes(); // as runDistill does on the main thread; restored by layerWorkerRelease

  const weights = openModel(init.studentDir);
  const layers = init.opts.layers;
  const ctx: PassContext = {
    config: weights.config,
    layers: new LayerSource(weights, layers, init.residentBytes),
    opts: init.opts,
    seqLen: init.seqLen,
    teacher: new Map(init.teacher),
    studentStart: null,
    rope: null,
  };
  const vars = new AdapterVariables(initialAdapter(layers, weights.config.hiddenSize, init.opts.window ?? null));
  // runPass here scales by 1/(B · this worker's layers); the whole step's loss is a mean over all layers.
  worker = { ctx, vars, weights, scale: layers.length / init.totalLayers, restoreFixes };
}

/** runPass on this worker's layers with the given parameters (flat, this worker's layers only). */
export function layerWorkerPass(seqIdx: number[], params: Float32Array[], withGrad: boolean): PassResult {
  if (!worker) throw new Error('layerWorkerPass before layerWorkerInit');
  worker.vars.assign(params);
  const r = runPass(worker.ctx, seqIdx, worker.vars, withGrad);
  if (r.grads && worker.scale !== 1) {
    const s = worker.scale;
    r.grads = r.grads.map((g) => g.map((x) => x * s));
  }
  return r;
}

export function layerWorkerRelease(): void {
  if (!worker) return;
  worker.ctx.layers.dispose();
  worker.vars.dispose();
  worker.weights.close();
  worker.restoreFixes();
  worker = null;
}
