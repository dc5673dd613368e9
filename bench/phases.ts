/**
 * (b) and (d): the matmul-bound phases of one decoder layer on the tfjs reference backend, timed on
 * the real code paths, as GFLOP/s — which run.ts divides by the machine's sgemm peak measured in
 * the same run (bench/limits.ts) — and how their cost grows with T.
 *
 * Phases (one layer, weights already on the backend — loading is timed separately):
 * - teacher prefill: `decoderLayer` with the teacher's softmax attention block (what eval's
 *   `teacher` configuration and the distillation's teacher pass run per layer);
 * - student prefill: `studentLayerForward` with the engine-v0.1.1 policy (eval's `engine`);
 * - distill step: `runPass` of src/distill/train.ts on one trained layer (adapter-v1, --input
 *   teacher, --mlp-grad exact): forward + MSE + gradients of the adapter parameters, B sequences;
 * - attention only (`causalAttention`) and gate only (`gateChunkedOutput`), for the growth in T.
 *
 * FLOPs counted are those of the layer's projections (forward: q, k, v, o, gate, up, down; the
 * distill step's backward adds dX through down, gate, up and o — the same shapes as down/gate/gate/q
 * forward). Everything at one T is timed interleaved (see timing.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import { ropeCosSin, type LayerTensors } from '../src/model/nn.ts';
import { qDim, kvDim, type ModelConfig } from '../src/formats/config.ts';
import { initialAdapter } from '../src/formats/adapter.ts';
import { gateChunkedOutput } from '../src/model/gate.ts';
import { gateInputs, studentLayerForward } from '../src/engine/student.ts';
import { causalAttention } from '../src/model/attention.ts';
import { applyRope } from '../src/model/nn.ts';
import { attentionShape, decoderLayer, qkvProjections, softmaxAttentionBlock } from '../src/teacher/teacher.ts';
import { AdapterVariables, LayerSource, runPass, type PassContext, type TrainOptions } from '../src/distill/train.ts';
import { pseudoRandom } from '../src/util/random.ts';
import { sig } from './machine.ts';
import { SyntheticWeights, withShape } from './synthetic.ts';
import { interleaved, force, type Timing } from './timing.ts';

export type MatrixName = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';
const MATRICES: MatrixName[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

/** [in, out] of each projection. */
export function matrixShape(c: ModelConfig, m: MatrixName): [number, number] {
  const D = c.hiddenSize;
  const I = c.intermediateSize;
  switch (m) {
    case 'q':
      return [D, qDim(c)];
    case 'k':
    case 'v':
      return [D, kvDim(c)];
    case 'o':
      return [qDim(c), D];
    case 'gate':
    case 'up':
      return [D, I];
    case 'down':
      return [I, D];
  }
}

/** Multiply-adds ×2 of x [T, in] · W [in, out] over the given matrices. */
export function matmulFlops(c: ModelConfig, T: number, ms: MatrixName[]): number {
  return ms.reduce((a, m) => {
    const [i, o] = matrixShape(c, m);
    return a + 2 * T * i * o;
  }, 0);
}

/** Forward projections of a layer, and the backward input-gradient products of a distill step (by the forward matrix whose shape they have). */
export const FORWARD: MatrixName[] = MATRICES;
/** dX of down ([T,D]·W_downᵀ: gate's shape), of gate and up ([T,I]·Wᵀ: down's shape), of o ([T,D]·W_oᵀ: q's shape when D = D_q). */
export const DISTILL_BACKWARD: MatrixName[] = ['gate', 'down', 'down', 'q'];

/** One layer of a shape on the backend, owned by a distillation LayerSource (so runPass can use it too). */
export class BenchLayer {
  readonly config: ModelConfig;
  readonly source: LayerSource;
  readonly layer: LayerTensors;
  constructor(shapeConfig: ModelConfig) {
    this.config = withShape(shapeConfig, { numLayers: 1 });
    this.source = new LayerSource(new SyntheticWeights(this.config), [0], Number.POSITIVE_INFINITY);
    this.layer = this.source.get(0);
  }
  dispose(): void {
    this.source.dispose();
  }
}

/** Everything one sequence length needs, made outside the timed region. */
export class PhaseInputs {
  readonly h: tf.Tensor2D;
  readonly rope: { cos: tf.Tensor2D; sin: tf.Tensor2D };
  readonly attention: { q: tf.Tensor2D; k: tf.Tensor2D; v: tf.Tensor2D };
  readonly gate: ReturnType<typeof gateInputs>;
  readonly pass: PassContext;
  readonly params: AdapterVariables;

  constructor(
    readonly bl: BenchLayer,
    readonly T: number,
    /** Sequences per distill step. */
    readonly B: number,
  ) {
    const c = bl.config;
    const D = c.hiddenSize;
    this.h = tf.tensor2d(pseudoRandom(T * D, 3), [T, D]);
    this.rope = ropeCosSin(c, Array.from({ length: T }, (_, i) => i));
    this.attention = tf.tidy(() => {
      const { q, k, v } = qkvProjections(this.h, bl.layer);
      return { q: applyRope(q, c.numHeads, c.headDim, this.rope.cos, this.rope.sin), k: applyRope(k, c.numKvHeads, c.headDim, this.rope.cos, this.rope.sin), v };
    });
    this.gate = gateInputs(this.h, bl.layer, c, { kind: 'engine' }, this.rope);
    const opts: TrainOptions = { layers: [0], epochs: 1, lr: 1e-2, weightDecay: 0.01, gradClip: 1, batchSize: B, input: 'teacher', mlpGrad: 'exact', rest: 'engine', seed: 0 };
    const teacher = new Map<number, Float32Array[]>([
      [0, Array.from({ length: B }, (_, s) => pseudoRandom(T * D, 20 + s))],
      [1, Array.from({ length: B }, (_, s) => pseudoRandom(T * D, 40 + s))],
    ]);
    this.pass = { config: c, layers: bl.source, opts, seqLen: T, teacher, studentStart: null, rope: null };
    this.params = new AdapterVariables(initialAdapter([0], D));
  }

  dispose(): void {
    this.h.dispose();
    this.rope.cos.dispose();
    this.rope.sin.dispose();
    Object.values(this.attention).forEach((t) => t.dispose());
    Object.values(this.gate).forEach((t) => (t as tf.Tensor).dispose());
    this.params.dispose();
  }
}

export type PhaseName = 'teacherLayer' | 'studentLayer' | 'distillStep' | 'attentionOnly' | 'gateOnly';

/** The candidates of one sequence length: the phases asked for. */
function phaseCandidates(x: PhaseInputs, phases: PhaseName[]): Record<string, () => void> {
  const { layer } = x.bl;
  const c = x.bl.config;
  const out: Record<string, () => void> = {};
  for (const p of phases) {
    switch (p) {
      case 'teacherLayer':
        out[p] = () => force(() => decoderLayer(x.h, layer, c.rmsNormEps, (n) => softmaxAttentionBlock(n, layer, c, x.rope.cos, x.rope.sin)));
        break;
      case 'studentLayer':
        out[p] = () => force(() => studentLayerForward(x.h, layer, c, { kind: 'engine' }, { rope: x.rope }));
        break;
      case 'distillStep':
        out[p] = () => {
          runPass(x.pass, Array.from({ length: x.B }, (_, s) => s), x.params, true);
        };
        break;
      case 'attentionOnly':
        out[p] = () => force(() => causalAttention(x.attention.q, x.attention.k, x.attention.v, attentionShape(c)));
        break;
      case 'gateOnly':
        out[p] = () => force(() => gateChunkedOutput(x.gate));
        break;
    }
  }
  return out;
}

export interface PhaseRow {
  /** 'as is', or 'with wasmFixes' (src/runtime/wasmFixes.ts applied in that worker). */
  variant?: string;
  phase: 'teacher prefill (one layer)' | 'distill step (one layer)';
  shape: string;
  T: number;
  sequences: number;
  phaseMs: number;
  matmulGflop: number;
  /** matmulGflop / phase time. */
  achievedGflops: number;
}

export interface PhaseTimings {
  T: number;
  phases: Partial<Record<PhaseName, Timing>>;
}

/** Time the given phases at one sequence length (interleaved). */
export function timePhases(bl: BenchLayer, T: number, B: number, phases: PhaseName[], reps: number, warmup: number): PhaseTimings {
  const x = new PhaseInputs(bl, T, B);
  try {
    const t = interleaved(phaseCandidates(x, phases), reps, warmup);
    const ph: Partial<Record<PhaseName, Timing>> = {};
    for (const p of phases) ph[p] = t[p]!;
    return { T, phases: ph };
  } finally {
    x.dispose();
  }
}

/** The (b) rows from timings: teacher prefill and distill step as GFLOP/s of their projections. */
export function phaseRows(shape: string, c: ModelConfig, t: PhaseTimings, B: number): PhaseRow[] {
  const rows: PhaseRow[] = [];
  const make = (phase: PhaseRow['phase'], ms: MatrixName[], phaseMs: number, seqs: number): PhaseRow => {
    const flops = matmulFlops(c, t.T, ms) * seqs;
    return { phase, shape, T: t.T, sequences: seqs, phaseMs: sig(phaseMs), matmulGflop: sig(flops / 1e9), achievedGflops: sig(flops / (phaseMs * 1e6)) };
  };
  if (t.phases.teacherLayer) rows.push(make('teacher prefill (one layer)', FORWARD, t.phases.teacherLayer.ms, 1));
  if (t.phases.distillStep) rows.push(make('distill step (one layer)', [...FORWARD, ...DISTILL_BACKWARD], t.phases.distillStep.ms, B));
  return rows;
}
