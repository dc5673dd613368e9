/**
 * Distillation of the symbiotic adapter: the student's layer outputs are pulled toward the
 * teacher's hidden states. The only tf.Variables are the adapter parameters (`gate_bias`,
 * `gate_scale`, `output_scale`, `mix_alpha` of each trained layer); model weights are constant
 * tensors.
 *
 *   loss = mean over trained layers l of MSE(student layer l output, teacher hidden state l+1)
 *
 * Input of trained layer l (`--input`):
 * - `student` (default, as the SYNAXIM scripts): the student's own output of layer l−1, detached —
 *   the student stream runs from the embeddings through the student (untrained layers with the
 *   `--rest` policy), so a layer learns to work on what the student will actually feed it;
 * - `teacher`: the teacher's hidden state l (layers independent of each other).
 * Either way no gradient crosses layers, so one step processes the batch a layer at a time — only
 * that layer's weights need to be on the backend — and the gradient of layer l's parameters is
 * the gradient of its own MSE / (#layers). `--mlp-grad detached` holds the MLP output constant.
 *
 * Steps: AdamW, cosine learning rate over all steps, global gradient-norm clipping; the data
 * order of epoch e is a permutation seeded by (seed, e), so a run continued from a checkpoint at
 * any step boundary computes exactly what an uninterrupted run computes.
 */
import * as tf from '@tensorflow/tfjs-core';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { seededPermutation } from '../util/random.ts';
import { fail, InterruptedError, SynaximError } from '../util/errors.ts';
import { disposeLayer, rmsNorm, ropeCosSin, uploadLayer, type LayerTensors } from '../model/nn.ts';
import { qDim, kvDim, type ModelConfig } from '../formats/config.ts';
import { SafetensorsFile, writeSafetensors, type StTensorToWrite } from '../formats/safetensors.ts';
import type { ModelWeights } from '../formats/weights.ts';
import type { Adapter } from '../formats/adapter.ts';
import { restLayerPolicy, type AdapterPolicy, type RestPolicy } from '../model/policy.ts';
import { policyLayer, type MlpGrad } from '../model/decoderLayer.ts';
import { disposeKlTarget, klTarget, logitKl, type VocabSlice } from './klLoss.ts';
import { AdamW, clipGradNorm, cosineLr, type AdamWState } from './optimizer.ts';
import type { NativeMsePass } from './nativePass.ts';

export type InputMode = 'student' | 'teacher';
export type { MlpGrad };
/** `mse`: per-layer hidden-state MSE; `kl`: end-to-end KL(teacher‖student) on the logits. */
export type DistillLoss = 'mse' | 'kl';

/** A stretch of epochs trained with one objective and its own cosine schedule (`mse+kl` = two phases). */
export interface TrainPhase {
  loss: DistillLoss;
  epochs: number;
  lr: number;
}

export interface TrainOptions {
  /** Trained layers, sorted ascending. */
  layers: number[];
  epochs: number;
  lr: number;
  weightDecay: number;
  gradClip: number;
  batchSize: number;
  input: InputMode;
  mlpGrad: MlpGrad;
  rest: RestPolicy;
  seed: number;
  /** Parallel-gate chunk size (default: the engine's). */
  chunkSize?: number;
  /** `--student adapter-window --window W`: the adapter's window (null/absent: adapter-v1). */
  window?: number | null;
  /**
   * The objective by epochs (default: one MSE phase of `epochs` at `lr`). Their epochs add up to
   * `epochs`. A later phase starts from the best parameters of the one before, with a fresh
   * optimizer state and its own cosine schedule.
   */
  phases?: TrainPhase[];
  /** Stop a phase when its held-out metric has not improved for this many epochs (null/0: never). */
  patience?: number | null;
}

/** The phases of a run (one MSE phase unless told otherwise). */
export function phasesOf(opts: Pick<TrainOptions, 'phases' | 'epochs' | 'lr'>): TrainPhase[] {
  return opts.phases && opts.phases.length > 0 ? opts.phases : [{ loss: 'mse', epochs: opts.epochs, lr: opts.lr }];
}

/** The phase epoch `epoch` belongs to, with its epoch range [start, end). */
export function phaseAtEpoch(phases: TrainPhase[], epoch: number): { index: number; start: number; end: number } {
  let start = 0;
  for (let i = 0; i < phases.length; i++) {
    const end = start + phases[i]!.epochs;
    if (epoch < end) return { index: i, start, end };
    start = end;
  }
  return { index: phases.length - 1, start: start - phases[phases.length - 1]!.epochs, end: start };
}

/** The name of the metric that picks the best epoch of a phase. */
export function selectionMetric(loss: DistillLoss, heldOut: boolean): string {
  return `${heldOut ? 'held-out' : 'train'} ${loss === 'kl' ? 'KLD' : 'MSE'}`;
}

// ---------------------------------------------------------------------------------------------
// Adapter parameters as tf.Variables

const PARAM_NAMES = ['gate_bias', 'gate_scale', 'output_scale', 'mix_alpha'] as const;

/**
 * The adapter's parameters as tf.Variables (the only ones in a run), flattened per layer as
 * [gate_bias, gate_scale, output_scale, mix_alpha] (+ window_mix for adapter-window).
 */
export class AdapterVariables {
  readonly layers: number[];
  readonly hiddenSize: number;
  readonly window: number | null;
  readonly policies: AdapterPolicy[];

  constructor(adapter: Adapter) {
    this.layers = [...adapter.layers];
    this.hiddenSize = adapter.hiddenSize;
    this.window = adapter.window ?? null;
    const w = this.window;
    this.policies = adapter.params.map((p) => ({
      kind: 'adapter' as const,
      gateBias: tf.variable(tf.scalar(p.gateBias), true),
      gateScale: tf.variable(tf.scalar(p.gateScale), true),
      outputScale: tf.variable(tf.tensor1d(p.outputScale), true),
      mixAlpha: tf.variable(tf.scalar(p.mixAlpha), true),
      ...(w !== null ? { window: w, windowMix: tf.variable(tf.scalar(p.windowMix!), true) } : {}),
    }));
  }

  /** Parameters per adapted layer in the flat list. */
  get perLayer(): number {
    return this.window !== null ? 5 : 4;
  }

  /** The variables of adapted position i (four, five with window_mix). */
  variables(i: number): tf.Variable[] {
    const p = this.policies[i]!;
    return (p.windowMix ? [p.gateBias, p.gateScale, p.outputScale, p.mixAlpha, p.windowMix] : [p.gateBias, p.gateScale, p.outputScale, p.mixAlpha]) as tf.Variable[];
  }

  all(): tf.Variable[] {
    return this.policies.flatMap((_, i) => this.variables(i));
  }

  /** The adapted position whose parameter flat index `k` is. */
  layerPositionOfFlat(k: number): number {
    return Math.floor(k / this.perLayer);
  }

  /** Sizes of the flat parameter list. */
  sizes(): number[] {
    return this.layers.flatMap(() => (this.window !== null ? [1, 1, this.hiddenSize, 1, 1] : [1, 1, this.hiddenSize, 1]));
  }

  /** Flat names: `gate_bias.0`, … (the adapter's state-dict names). */
  names(): string[] {
    const names: readonly string[] = this.window !== null ? [...PARAM_NAMES, 'window_mix'] : PARAM_NAMES;
    return this.layers.flatMap((_, i) => names.map((n) => `${n}.${i}`));
  }

  read(): Float32Array[] {
    return this.all().map((v) => Float32Array.from(v.dataSync() as Float32Array));
  }

  assign(values: Float32Array[]): void {
    const vars = this.all();
    if (values.length !== vars.length) throw new Error('AdapterVariables.assign: wrong number of tensors');
    vars.forEach((v, k) => {
      const t = tf.tensor(values[k]!, v.shape);
      v.assign(t);
      t.dispose();
    });
  }

  dispose(): void {
    this.all().forEach((v) => v.dispose());
  }
}

/** Flat parameter list -> Adapter (numbers are the float32 values); `window` for adapter-window. */
export function adapterFromFlat(layers: number[], hiddenSize: number, flat: Float32Array[], window: number | null = null): Adapter {
  const n = window !== null ? 5 : 4;
  return {
    layers: [...layers],
    hiddenSize,
    params: layers.map((_, i) => ({
      gateBias: flat[n * i]![0]!,
      gateScale: flat[n * i + 1]![0]!,
      outputScale: Float32Array.from(flat[n * i + 2]!),
      mixAlpha: flat[n * i + 3]![0]!,
      ...(window !== null ? { windowMix: flat[n * i + 4]![0]! } : {}),
    })),
    config: {},
    ...(window !== null ? { window } : {}),
  };
}

export function flatFromAdapter(a: Adapter): Float32Array[] {
  return a.params.flatMap((p) => [
    Float32Array.of(p.gateBias),
    Float32Array.of(p.gateScale),
    Float32Array.from(p.outputScale),
    Float32Array.of(p.mixAlpha),
    ...(a.window ? [Float32Array.of(p.windowMix!)] : []),
  ]);
}

// ---------------------------------------------------------------------------------------------
// Layer weights on the backend

/** Bytes of one layer's weights as float32 on the backend. */
export function layerBytes(c: ModelConfig): number {
  const D = c.hiddenSize;
  return 4 * (2 * qDim(c) * D + 2 * kvDim(c) * D + 3 * c.intermediateSize * D + 2 * D + (c.attentionBias ? qDim(c) + 2 * kvDim(c) : 0));
}

/**
 * Layers [first, last] on demand: all uploaded once when they fit in `residentBytes`, otherwise
 * uploaded on `get` and released on `release` (one layer on the backend at a time).
 */
export class LayerSource {
  private readonly resident = new Map<number, LayerTensors>();
  private readonly streamed = new Map<number, LayerTensors>();
  readonly isResident: boolean;

  constructor(private readonly weights: ModelWeights, layers: number[], residentBytes: number) {
    this.isResident = layers.length * layerBytes(weights.config) <= residentBytes;
    if (this.isResident) for (const l of layers) this.resident.set(l, uploadLayer(weights.layer(l)));
  }

  get(l: number): LayerTensors {
    const r = this.resident.get(l);
    if (r) return r;
    const t = uploadLayer(this.weights.layer(l));
    this.streamed.set(l, t);
    return t;
  }

  release(l: number): void {
    const t = this.streamed.get(l);
    if (t) {
      disposeLayer(t);
      this.streamed.delete(l);
    }
  }

  /** sha256 of every resident weight tensor's bytes (to prove training left them untouched). */
  fingerprint(): string {
    const h = crypto.createHash('sha256');
    for (const [l, t] of [...this.resident].sort((a, b) => a[0] - b[0])) {
      for (const [name, v] of Object.entries(t)) {
        if (!v) continue;
        const d = (v as tf.Tensor).dataSync() as Float32Array;
        h.update(`${l}.${name}`);
        h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      }
    }
    return h.digest('hex');
  }

  dispose(): void {
    for (const t of this.resident.values()) disposeLayer(t);
    for (const t of this.streamed.values()) disposeLayer(t);
    this.resident.clear();
    this.streamed.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// One pass over a batch: per-layer MSE and (optionally) gradients

export interface PassContext {
  config: ModelConfig;
  layers: LayerSource;
  opts: TrainOptions;
  seqLen: number;
  /** Teacher residual stream: teacher.get(i)[s] = hidden.i of sequence s, [T*hidden]. */
  teacher: Map<number, Float32Array[]>;
  /** Student mode: the student's stream entering the first trained layer, per sequence. */
  studentStart: Float32Array[] | null;
  /** RoPE tables for untrained `engine` / `teacher` layers between trained ones. */
  rope: { cos: tf.Tensor2D; sin: tf.Tensor2D } | null;
  /** What the end-to-end KL objective needs (runs with a `kl` phase). */
  kl?: KlContext | null;
  /** The MSE passes on ONNX Runtime (native engine); absent: runPass on tfjs. */
  native?: NativeMsePass | null;
}

/**
 * The `kl` objective runs the whole student (every layer, up to the lm_head): all layers, the
 * final norm and the lm_head on the backend (a model that does not fit cannot use `--loss kl`).
 */
export interface KlContext {
  /** Layers 0..L−1 (resident). */
  layers: LayerSource;
  finalNorm: tf.Tensor1D;
  slices: VocabSlice[];
  /** The student's embeddings of each sequence, [T*hidden]. */
  embeddings: Float32Array[];
  /** The teacher's next-token log-probs of each sequence, [T*vocab]. */
  logProbs: Float32Array[];
  /** RoPE tables for positions 0..T−1 (engine / teacher layers). */
  rope: { cos: tf.Tensor2D; sin: tf.Tensor2D };
}

export interface PassResult {
  /** Mean over the batch of each trained layer's MSE. */
  lossPerLayer: number[];
  /** Mean over layers of lossPerLayer. */
  loss: number;
  /** Gradients of `loss` in AdapterVariables' flat order (when asked for). */
  grads: Float32Array[] | null;
}

/** The teacher's residual stream i of every sequence (prepared by the teacher stage). */
export function teacherHidden(ctx: PassContext, i: number): Float32Array[] {
  const h = ctx.teacher.get(i);
  if (!h) throw new Error(`teacher hidden state ${i} was not prepared`);
  return h;
}

export function mean(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return s / xs.length;
}

/** What every MSE pass over a batch starts from: the trained layers' span, the batch size, and empty per-layer losses and gradients. */
export function passFrame(opts: Pick<TrainOptions, 'layers'>, seqIdx: number[], withGrad: boolean) {
  const trained = opts.layers;
  const nLayers = trained.length;
  return {
    trained,
    nLayers,
    B: seqIdx.length,
    first: trained[0]!,
    last: trained[nLayers - 1]!,
    lossPerLayer: new Array<number>(nLayers).fill(NaN),
    grads: withGrad ? ([] as Float32Array[]) : null,
  };
}

/**
 * Run the trained layers over sequences `seqIdx` with the adapter in `params` (variables or
 * constants), layer by layer; with `withGrad`, the gradients of the batch loss w.r.t. `params`.
 */
export function runPass(ctx: PassContext, seqIdx: number[], params: AdapterVariables, withGrad: boolean): PassResult {
  const { config: c, opts, seqLen: T } = ctx;
  const D = c.hiddenSize;
  const { trained, nLayers, B, first, last, lossPerLayer, grads } = passFrame(opts, seqIdx, withGrad);
  const restPolicy = restLayerPolicy(opts.rest);
  const fromHost = (data: Float32Array) => tf.tensor2d(data, [T, D]);
  const teacherAt = (i: number) => teacherHidden(ctx, i);

  let stream: tf.Tensor2D[] | null = opts.input === 'student' ? seqIdx.map((s) => fromHost(ctx.studentStart![s]!)) : null;
  try {
    for (let l = first; l <= last; l++) {
      const pos = trained.indexOf(l);
      if (pos < 0 && opts.input === 'teacher') continue; // layers are independent: untrained ones never run
      const layer = ctx.layers.get(l);
      try {
        if (pos < 0) {
          // An untrained layer between trained ones: the student stream passes through it (--rest).
          stream = stream!.map((x) => {
            const y = tf.tidy(() => policyLayer(x, layer, c, restPolicy, { chunkSize: opts.chunkSize, rope: ctx.rope }));
            x.dispose();
            return y;
          });
          continue;
        }
        const inputs = opts.input === 'student' ? stream! : seqIdx.map((s) => fromHost(teacherAt(l)[s]!));
        const targets = seqIdx.map((s) => fromHost(teacherAt(l + 1)[s]!));
        const keepOutputs = opts.input === 'student' && l < last;
        const outputs: tf.Tensor2D[] = [];
        const perSeq: tf.Scalar[] = [];
        const policy = params.policies[pos]!;
        const batchLoss = (): tf.Scalar => {
          let total: tf.Scalar = tf.scalar(0);
          inputs.forEach((x, j) => {
            const out = policyLayer(x, layer, c, policy, { chunkSize: opts.chunkSize, mlpGrad: opts.mlpGrad });
            const mse = tf.mean(tf.squaredDifference(out, targets[j]!)) as tf.Scalar;
            perSeq.push(tf.keep(mse));
            if (keepOutputs) outputs.push(tf.keep(out));
            total = tf.add(total, mse) as tf.Scalar;
          });
          // d loss / d θ_l where loss = mean over layers and sequences of the MSE.
          return tf.mul(total, 1 / (B * nLayers)) as tf.Scalar;
        };
        try {
          if (withGrad) {
            const vars = params.variables(pos);
            const { value, grads: g } = tf.variableGrads(batchLoss, vars);
            value.dispose();
            for (const v of vars) {
              const gv = g[v.name];
              grads!.push(gv ? Float32Array.from(gv.dataSync() as Float32Array) : new Float32Array(v.size));
            }
            Object.values(g).forEach((t) => t.dispose());
          } else {
            tf.tidy(batchLoss).dispose();
          }
          lossPerLayer[pos] = mean(perSeq.map((m) => (m.dataSync() as Float32Array)[0]!));
        } finally {
          perSeq.forEach((m) => m.dispose());
          targets.forEach((t) => t.dispose());
          inputs.forEach((t) => t.dispose());
          stream = null;
        }
        if (keepOutputs) stream = outputs;
      } finally {
        ctx.layers.release(l);
      }
    }
  } finally {
    stream?.forEach((t) => t.dispose());
  }
  return { lossPerLayer, loss: mean(lossPerLayer), grads };
}

/** Per-layer MSE over many sequences (no gradients), in batches: mean over sequences. */
export function evaluatePerLayer(ctx: PassContext, seqIdx: number[], params: AdapterVariables, batchSize: number): number[] {
  const n = ctx.opts.layers.length;
  const sums = new Array<number>(n).fill(0);
  for (let i = 0; i < seqIdx.length; i += batchSize) {
    const batch = seqIdx.slice(i, i + batchSize);
    const r = runPass(ctx, batch, params, false);
    r.lossPerLayer.forEach((v, k) => (sums[k]! += v * batch.length));
  }
  return sums.map((s) => s / seqIdx.length);
}

/**
 * End-to-end pass for the `kl` objective: each sequence runs through every layer of the student
 * (adapted layers with the adapter in `params`, the others with `--rest`), the final norm and the
 * lm_head; the loss is the mean over positions and sequences of KL(teacher ‖ student). Gradients
 * (one sequence at a time, summed on the host: memory of one sequence's graph) flow through the
 * whole stack into every adapter parameter, and only into those. `lossPerLayer` repeats the one
 * end-to-end value for each trained layer (the log's per-layer fields keep their shape).
 */
export function runKlPass(ctx: PassContext, seqIdx: number[], params: AdapterVariables, withGrad: boolean): PassResult {
  const { config: c, opts, seqLen: T } = ctx;
  const kl = ctx.kl;
  if (!kl) throw new Error('runKlPass: no KL context');
  const B = seqIdx.length;
  const restPolicy = restLayerPolicy(opts.rest);
  const policies = Array.from({ length: c.numLayers }, (_, l) => {
    const pos = opts.layers.indexOf(l);
    return pos >= 0 ? params.policies[pos]! : restPolicy;
  });
  const layers = Array.from({ length: c.numLayers }, (_, l) => kl.layers.get(l));
  const vars = params.all();
  const grads: Float32Array[] | null = withGrad ? vars.map((v) => new Float32Array(v.size)) : null;
  let total = 0;
  try {
    for (const s of seqIdx) {
      const target = klTarget(kl.logProbs[s]!, T, c.vocabSize, kl.slices);
      try {
        const loss = (): tf.Scalar => {
          let h = tf.tensor2d(kl.embeddings[s]!, [T, c.hiddenSize]);
          for (let l = 0; l < c.numLayers; l++) h = policyLayer(h, layers[l]!, c, policies[l]!, { chunkSize: opts.chunkSize, mlpGrad: opts.mlpGrad, rope: kl.rope });
          return logitKl(rmsNorm(h, kl.finalNorm, c.rmsNormEps), kl.slices, target);
        };
        if (withGrad) {
          const { value, grads: g } = tf.variableGrads(loss, vars);
          total += (value.dataSync() as Float32Array)[0]!;
          value.dispose();
          vars.forEach((v, k) => {
            const gv = g[v.name];
            if (!gv) return;
            const d = gv.dataSync() as Float32Array;
            const acc = grads![k]!;
            for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + d[i]! / B;
          });
          Object.values(g).forEach((t) => t.dispose());
        } else {
          const v = tf.tidy(loss);
          total += (v.dataSync() as Float32Array)[0]!;
          v.dispose();
        }
      } finally {
        disposeKlTarget(target);
      }
    }
  } finally {
    for (let l = 0; l < c.numLayers; l++) kl.layers.release(l);
  }
  const value = total / B;
  return { lossPerLayer: opts.layers.map(() => value), loss: value, grads };
}

/** Mean KL(teacher ‖ student) per position over many sequences (no gradients). */
export function evaluateKl(ctx: PassContext, seqIdx: number[], params: AdapterVariables, batchSize: number): number {
  let sum = 0;
  for (let i = 0; i < seqIdx.length; i += batchSize) {
    const batch = seqIdx.slice(i, i + batchSize);
    sum += runKlPass(ctx, batch, params, false).loss * batch.length;
  }
  return sum / seqIdx.length;
}

/**
 * The student's stream entering the first trained layer, per sequence: the embeddings when that is
 * layer 0, else the embeddings run through layers 0..first−1 with the `--rest` policy. Constant
 * during training (no adapter before the first trained layer), so it is computed once.
 */
export function studentStreamBefore(weights: ModelWeights, embeddings: Float32Array[], first: number, rest: RestPolicy, T: number, chunkSize?: number): Float32Array[] {
  const c = weights.config;
  if (first === 0) return embeddings;
  let host = embeddings;
  const rope = ropeCosSin(c, Array.from({ length: T }, (_, i) => i));
  try {
    for (let l = 0; l < first; l++) {
      const layer = uploadLayer(weights.layer(l));
      try {
        host = host.map((h) =>
          tf.tidy(() => {
            const out = policyLayer(tf.tensor2d(h, [T, c.hiddenSize]), layer, c, restLayerPolicy(rest), { chunkSize, rope });
            return Float32Array.from(out.dataSync() as Float32Array);
          }),
        );
      } finally {
        disposeLayer(layer);
      }
      requireFiniteBeforeTrained(host, l, rest, first, c.hiddenSize);
    }
  } finally {
    rope.cos.dispose();
    rope.sin.dispose();
  }
  return host;
}

/**
 * An overflow in the student's stream before the first trained layer would surface as a NaN loss
 * of that layer: name its real place (untrained layer l's output, sequence, position).
 */
export function requireFiniteBeforeTrained(host: Float32Array[], l: number, rest: RestPolicy, first: number, hiddenSize: number): void {
  host.forEach((h, s) => {
    for (let i = 0; i < h.length; i++) {
      if (h[i]! - h[i]! !== 0) {
        fail(
          null,
          `student: non-finite activation (${h[i]}) in the output of untrained layer ${l} (--rest ${rest}) of sequence ${s} at position ${Math.floor(i / hiddenSize)}, ` +
            `before the first trained layer ${first}: the student's weights overflow float32; nothing was trained`,
        );
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Training state and checkpoints

export interface TrainState {
  /** Epochs completed. */
  epoch: number;
  /** Steps completed in the current (incomplete) epoch. */
  stepInEpoch: number;
  /** Steps completed overall. */
  globalStep: number;
  params: Float32Array[];
  optimizer: AdamWState;
  /** Best epoch of the current phase by its selection metric (held-out when there is a held-out split). */
  best: { params: Float32Array[]; loss: number; epoch: number; metric?: string } | null;
  /** Index of the phase the parameters belong to (see TrainOptions.phases). */
  phase: number;
  /** Global step at which the current phase started (its cosine schedule counts from there). */
  phaseStartStep: number;
  /** Best epochs of the finished phases (the warm starts of the next). */
  phaseBests: { phase: number; epoch: number | null; loss: number | null; metric: string | null }[];
  /** Epochs after which a phase stopped early (--patience). */
  stoppedEarly: number[];
  /** Held-out KL(teacher‖student) of the initial adapter (runs with a `kl` phase). */
  heldOutKlBefore: number | null;
  /** Σ over the current epoch's steps of each layer's step loss. */
  epochLossSum: number[];
  /** Seconds spent training in earlier sessions (resumed runs add up). */
  wallTimeSec: number;
  /** Byte length of train_log.jsonl when the state was saved (a resume truncates the log to it). */
  logBytes: number;
  /** Identity of the run (options, model, data): a resume must match it. */
  fingerprint: Record<string, unknown>;
  /** Held-out per-layer MSE of the initial adapter. */
  heldOutBefore: number[] | null;
}

export const CHECKPOINT_FILE = 'checkpoint.safetensors';
const CHECKPOINT_FORMAT = 'synaxim-distill-checkpoint-v1';

export function initialTrainState(params: Float32Array[], fingerprint: Record<string, unknown>, nLayers: number): TrainState {
  return {
    epoch: 0,
    stepInEpoch: 0,
    globalStep: 0,
    params: params.map((p) => p.slice()),
    optimizer: { step: 0, expAvg: params.map((p) => new Float32Array(p.length)), expAvgSq: params.map((p) => new Float32Array(p.length)) },
    best: null,
    phase: 0,
    phaseStartStep: 0,
    phaseBests: [],
    stoppedEarly: [],
    heldOutKlBefore: null,
    epochLossSum: new Array<number>(nLayers).fill(0),
    wallTimeSec: 0,
    logBytes: 0,
    fingerprint,
    heldOutBefore: null,
  };
}

/** Write the state atomically (temp file + fsync + rename): a crash leaves the previous checkpoint. */
export function saveCheckpoint(file: string, s: TrainState): void {
  const tensors: Record<string, StTensorToWrite> = {};
  const put = (prefix: string, list: Float32Array[]) => list.forEach((a, k) => (tensors[`${prefix}.${k}`] = { dtype: 'F32', shape: [a.length], data: a }));
  put('param', s.params);
  put('adam_exp_avg', s.optimizer.expAvg);
  put('adam_exp_avg_sq', s.optimizer.expAvgSq);
  if (s.best) put('best', s.best.params);
  const meta = {
    format: CHECKPOINT_FORMAT,
    epoch: s.epoch,
    step_in_epoch: s.stepInEpoch,
    global_step: s.globalStep,
    adam_step: s.optimizer.step,
    n_params: s.params.length,
    best: s.best ? { loss: s.best.loss, epoch: s.best.epoch, metric: s.best.metric ?? null } : null,
    phase: s.phase,
    phase_start_step: s.phaseStartStep,
    phase_bests: s.phaseBests,
    stopped_early: s.stoppedEarly,
    held_out_kl_before: s.heldOutKlBefore,
    epoch_loss_sum: s.epochLossSum,
    wall_time_s: s.wallTimeSec,
    log_bytes: s.logBytes,
    fingerprint: s.fingerprint,
    held_out_before: s.heldOutBefore,
  };
  writeSafetensors(file, tensors, { state: JSON.stringify(meta) });
}

export function loadCheckpoint(file: string): TrainState {
  const st = SafetensorsFile.open(file);
  try {
    let meta: Record<string, unknown>;
    try {
      meta = JSON.parse(st.metadata?.state ?? 'null') as Record<string, unknown>;
    } catch {
      return fail(file, 'checkpoint metadata is not valid JSON');
    }
    if (!meta || meta.format !== CHECKPOINT_FORMAT) fail(file, `not a distillation checkpoint (format ${JSON.stringify(meta?.format)})`);
    const n = meta.n_params as number;
    const list = (prefix: string) => Array.from({ length: n }, (_, k) => st.readFloat32(`${prefix}.${k}`));
    const best = meta.best as { loss: number; epoch: number; metric?: string | null } | null;
    const params = list('param');
    for (const p of params) if (p.some((v) => !Number.isFinite(v))) fail(file, 'checkpoint holds non-finite parameters');
    return {
      epoch: meta.epoch as number,
      stepInEpoch: meta.step_in_epoch as number,
      globalStep: meta.global_step as number,
      params,
      optimizer: { step: meta.adam_step as number, expAvg: list('adam_exp_avg'), expAvgSq: list('adam_exp_avg_sq') },
      best: best ? { params: list('best'), loss: best.loss, epoch: best.epoch, ...(best.metric ? { metric: best.metric } : {}) } : null,
      phase: (meta.phase as number | undefined) ?? 0,
      phaseStartStep: (meta.phase_start_step as number | undefined) ?? 0,
      phaseBests: (meta.phase_bests as TrainState['phaseBests'] | undefined) ?? [],
      stoppedEarly: (meta.stopped_early as number[] | undefined) ?? [],
      heldOutKlBefore: (meta.held_out_kl_before as number | null | undefined) ?? null,
      epochLossSum: meta.epoch_loss_sum as number[],
      wallTimeSec: meta.wall_time_s as number,
      logBytes: meta.log_bytes as number,
      fingerprint: meta.fingerprint as Record<string, unknown>,
      heldOutBefore: (meta.held_out_before as number[] | null) ?? null,
    };
  } finally {
    st.close();
  }
}

/** The first option that differs between two run fingerprints, or null. */
export function fingerprintMismatch(a: Record<string, unknown>, b: Record<string, unknown>): string | null {
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) return `${k}: checkpoint has ${JSON.stringify(a[k])}, this run ${JSON.stringify(b[k])}`;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// The training loop

export interface StepEvent {
  type: 'step';
  /** Objective of the step (absent in logs of older runs: mse). */
  objective?: DistillLoss;
  epoch: number;
  step: number;
  loss: number;
  loss_per_layer: Record<string, number>;
  lr: number;
  grad_norm: number;
  tokens_per_s: number;
  elapsed_s: number;
}

export interface EpochEvent {
  type: 'epoch';
  objective?: DistillLoss;
  epoch: number;
  train_loss: number;
  train_loss_per_layer: Record<string, number>;
  held_out_loss: number | null;
  held_out_per_layer: Record<string, number> | null;
  best: boolean;
  /** The metric that chose `best` (e.g. "held-out KLD"). */
  selected_by?: string;
  /** The phase stops after this epoch (--patience): its metric did not improve for that many epochs. */
  early_stop?: boolean;
  lr: number;
  tokens_per_s: number;
  elapsed_s: number;
}

export interface TrainHooks {
  /** A log record (one JSON line in train_log.jsonl). */
  log(event: StepEvent | EpochEvent): void;
  /** Save the state (after every epoch, and when interrupted). Returns nothing; must be atomic. */
  checkpoint(state: TrainState): void;
  /** Called after each step (progress display). */
  onStep?(state: TrainState, loss: number, tokens: number): void;
  /** True when the user asked to stop (Ctrl-C): the loop saves a checkpoint and throws InterruptedError. */
  interrupted?(): boolean;
  /** Tests: look at or tamper with the parameters before step `globalStep`. */
  beforeStep?(globalStep: number, params: Float32Array[]): void;
  /** Where the last good checkpoint is, for messages. */
  checkpointPath?: string;
  /**
   * Run a training pass elsewhere (layer-parallel worker threads under --input teacher); default:
   * `runPass` on this thread. Same contract: per-layer losses and the flat gradients.
   */
  pass?(seqIdx: number[], params: Float32Array[], withGrad: boolean): Promise<PassResult>;
  /** Held-out per-layer MSE elsewhere (the native engine); default: `evaluatePerLayer` on this thread. */
  evaluate?(seqIdx: number[], params: Float32Array[], batchSize: number): Promise<number[]>;
}

export function stepsPerEpoch(nTrain: number, batchSize: number): number {
  return Math.ceil(nTrain / batchSize);
}

/** Epoch e's data order: a permutation seeded by the run seed and the epoch. */
export function epochOrder(nTrain: number, seed: number, epoch: number): number[] {
  return seededPermutation(nTrain, (Math.imul(seed >>> 0, 0x9e3779b1) ^ (epoch + 1) * 0x85ebca6b) >>> 0);
}

const layerRecord = (layers: number[], values: number[]) => Object.fromEntries(layers.map((l, i) => [String(l), values[i]!]));

/**
 * Entering the next phase (an epoch boundary, so a resumed run passes here the same way): warm
 * start from the previous phase's best, fresh optimizer state, its own cosine schedule.
 */
function enterPhase(state: TrainState, index: number, optimizer: AdamW): void {
  if (state.stepInEpoch !== 0) throw new Error('trainLoop: phase change inside an epoch');
  const prev = state.best;
  state.phaseBests.push({ phase: state.phase, epoch: prev ? prev.epoch : null, loss: prev ? prev.loss : null, metric: prev?.metric ?? null });
  if (prev) state.params = prev.params.map((p) => p.slice());
  state.best = null;
  state.phase = index;
  state.phaseStartStep = state.globalStep;
  optimizer.load({ step: 0, expAvg: state.params.map((p) => new Float32Array(p.length)), expAvgSq: state.params.map((p) => new Float32Array(p.length)) });
  state.optimizer = optimizer.state;
}

/** The step's gradient norm after clipping; a non-finite loss or gradient stops training in one line naming the layer. */
function checkedGradNorm(lossPerLayer: number[], grads: Float32Array[], loss: string, opts: TrainOptions, params: AdapterVariables, at: string): number {
  const badLayer = lossPerLayer.findIndex((v) => !Number.isFinite(v));
  if (badLayer >= 0) {
    const where = loss === 'kl' ? 'the end-to-end KL' : `layer ${opts.layers[badLayer]}`;
    throw new SynaximError(null, `non-finite loss (${lossPerLayer[badLayer]}) in ${where} at ${at}`);
  }
  const gradNorm = clipGradNorm(grads, opts.gradClip);
  if (!Number.isFinite(gradNorm)) {
    const bad = grads.findIndex((g) => g.some((v) => !Number.isFinite(v)));
    throw new SynaximError(null, `non-finite gradient in layer ${opts.layers[params.layerPositionOfFlat(Math.max(0, bad))]} at ${at}`);
  }
  return gradNorm;
}

/**
 * Train from `state` to the end (opts.epochs), mutating and returning `state`. `train` and
 * `heldOut` index sequences of the pass context. Stops with a SynaximError on a non-finite loss
 * or gradient (nothing is saved then: the last checkpoint stays the last good one).
 */
export async function trainLoop(ctx: PassContext, state: TrainState, train: number[], heldOut: number[], hooks: TrainHooks): Promise<TrainState> {
  const { opts } = ctx;
  const nTrain = train.length;
  const B = Math.max(1, Math.min(opts.batchSize, nTrain));
  const perEpoch = stepsPerEpoch(nTrain, B);
  const phases = phasesOf(opts);
  const totalEpochs = phases.reduce((a, p) => a + p.epochs, 0);
  if (totalEpochs !== opts.epochs) throw new Error(`trainLoop: phases add up to ${totalEpochs} epochs, options say ${opts.epochs}`);
  const tokensPerStep = (k: number) => Math.min(B, nTrain - k * B) * ctx.seqLen;
  const params = new AdapterVariables(adapterFromFlat(opts.layers, ctx.config.hiddenSize, state.params, opts.window ?? null));
  const optimizer = new AdamW(params.sizes(), { lr: opts.lr, weightDecay: opts.weightDecay });
  optimizer.load(state.optimizer);
  const sessionStart = performance.now();
  const elapsed = () => state.wallTimeSec + (performance.now() - sessionStart) / 1000;
  const where = hooks.checkpointPath ? ` The last good checkpoint is kept at ${hooks.checkpointPath}${state.epoch > 0 ? '' : ' (if any)'}.` : '';
  const snapshot = (): TrainState => ({ ...state, params: state.params.map((p) => p.slice()), optimizer: optimizer.snapshot(), wallTimeSec: elapsed() });
  try {
    for (; state.epoch < opts.epochs; ) {
      const ph = phaseAtEpoch(phases, state.epoch);
      const phase = phases[ph.index]!;
      if (ph.index > state.phase) enterPhase(state, ph.index, optimizer);
      const phaseSteps = phase.epochs * perEpoch;
      const order = epochOrder(nTrain, opts.seed, state.epoch);
      let epochTokens = 0;
      const epochStart = performance.now();
      for (; state.stepInEpoch < perEpoch; ) {
        const k = state.stepInEpoch;
        const batch = order.slice(k * B, (k + 1) * B).map((i) => train[i]!);
        hooks.beforeStep?.(state.globalStep, state.params);
        params.assign(state.params);
        const t0 = performance.now();
        const r =
          phase.loss === 'kl' ? runKlPass(ctx, batch, params, true) : hooks.pass ? await hooks.pass(batch, state.params, true) : runPass(ctx, batch, params, true);
        const at = `epoch ${state.epoch + 1}, step ${k + 1}/${perEpoch} (global step ${state.globalStep + 1})`;
        const grads = r.grads!;
        const gradNorm = checkedGradNorm(r.lossPerLayer, grads, phase.loss, opts, params, `${at}; training stopped.${where}`);
        const lr = cosineLr(phase.lr, state.globalStep - state.phaseStartStep, phaseSteps);
        optimizer.step(state.params, grads, lr);
        state.optimizer = optimizer.state;
        r.lossPerLayer.forEach((v, i) => (state.epochLossSum[i]! += v));
        state.stepInEpoch += 1;
        state.globalStep += 1;
        const seconds = (performance.now() - t0) / 1000;
        const tokens = tokensPerStep(k);
        epochTokens += tokens;
        hooks.log({
          type: 'step',
          objective: phase.loss,
          epoch: state.epoch,
          step: state.globalStep - 1,
          loss: r.loss,
          loss_per_layer: layerRecord(opts.layers, r.lossPerLayer),
          lr,
          grad_norm: gradNorm,
          tokens_per_s: tokens / Math.max(seconds, 1e-9),
          elapsed_s: elapsed(),
        });
        hooks.onStep?.(state, r.loss, tokens);
        // Let signal handlers run between steps (the step itself is synchronous).
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (hooks.interrupted?.() && (state.stepInEpoch < perEpoch || state.epoch + 1 < opts.epochs)) {
          hooks.checkpoint(snapshot());
          throw new InterruptedError(`interrupted at ${at}; checkpoint saved${hooks.checkpointPath ? ` to ${hooks.checkpointPath}` : ''}; continue with --resume`);
        }
      }
      // End of epoch: mean training loss, held-out loss, best state, checkpoint.
      const trainPerLayer = state.epochLossSum.map((s) => s / perEpoch);
      const trainLoss = mean(trainPerLayer);
      params.assign(state.params);
      // The best epoch is chosen by the phase's own metric on the held-out split (train loss only
      // when nothing is held out): held-out MSE for mse, held-out KLD for kl.
      const heldPerLayer =
        heldOut.length > 0 && phase.loss === 'mse' ? (hooks.evaluate ? await hooks.evaluate(heldOut, state.params, B) : evaluatePerLayer(ctx, heldOut, params, B)) : null;
      const heldLoss = heldOut.length === 0 ? null : phase.loss === 'kl' ? evaluateKl(ctx, heldOut, params, B) : mean(heldPerLayer!);
      const score = heldLoss ?? trainLoss;
      const metric = selectionMetric(phase.loss, heldLoss !== null);
      const isBest = state.best === null || score < state.best.loss;
      if (isBest) state.best = { params: state.params.map((p) => p.slice()), loss: score, epoch: state.epoch, metric };
      const patience = opts.patience ?? 0;
      const earlyStop = patience > 0 && state.epoch + 1 < ph.end && state.epoch - state.best!.epoch >= patience;
      const epochSeconds = (performance.now() - epochStart) / 1000;
      hooks.log({
        type: 'epoch',
        objective: phase.loss,
        epoch: state.epoch,
        train_loss: trainLoss,
        train_loss_per_layer: layerRecord(opts.layers, trainPerLayer),
        held_out_loss: heldLoss,
        held_out_per_layer: heldPerLayer ? layerRecord(opts.layers, heldPerLayer) : null,
        best: isBest,
        selected_by: metric,
        ...(earlyStop ? { early_stop: true } : {}),
        lr: cosineLr(phase.lr, Math.min(state.globalStep - state.phaseStartStep, phaseSteps), phaseSteps),
        tokens_per_s: epochTokens / Math.max(epochSeconds, 1e-9),
        elapsed_s: elapsed(),
      });
      state.epoch += 1;
      state.stepInEpoch = 0;
      state.epochLossSum = state.epochLossSum.map(() => 0);
      if (earlyStop) {
        state.stoppedEarly.push(state.epoch - 1);
        state.epoch = ph.end; // the rest of this phase is skipped
      }
      hooks.checkpoint(snapshot());
      if (hooks.interrupted?.() && state.epoch < opts.epochs) {
        throw new InterruptedError(`interrupted after epoch ${state.epoch}; checkpoint saved${hooks.checkpointPath ? ` to ${hooks.checkpointPath}` : ''}; continue with --resume`);
      }
    }
    state.wallTimeSec = elapsed();
    return state;
  } finally {
    params.dispose();
  }
}

/** Truncate an append-only log to `bytes` (a resumed run drops what came after its checkpoint). */
export function truncateLog(file: string, bytes: number): void {
  if (!fs.existsSync(file)) {
    if (bytes > 0) fail(file, `training log is missing (the checkpoint expects ${bytes} bytes of it)`);
    return;
  }
  const size = fs.statSync(file).size;
  if (size < bytes) fail(file, `training log is shorter (${size} bytes) than the checkpoint expects (${bytes})`);
  fs.truncateSync(file, bytes);
}
