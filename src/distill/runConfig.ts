/**
 * One distillation's settings, frozen: built once from the options (the CLI's flags, a test's or
 * the demo's object) with every default in this file. The same object is the resume fingerprint
 * (`resumeFingerprint`), the `training` block of adapter_config.json and the report's options
 * (`trainingBlock`), and the training loop's options (`trainOptions`) — so a setting cannot mean one
 * thing in the checkpoint and another in the export.
 *
 * The key order of the fingerprint and of the training block is part of the file formats: a
 * checkpoint written before must still resume, and an exported adapter_config.json must not change.
 */
import { fail } from '../util/errors.ts';
import { REST_POLICIES, type RestPolicy } from '../engine/student.ts';
import { ADAMW_DEFAULTS } from './optimizer.ts';
import type { DistillLoss, InputMode, MlpGrad, TrainHooks, TrainOptions, TrainPhase, TrainState } from './train.ts';

export type DistillLossOption = 'mse' | 'kl' | 'mse+kl';
export type StudentKind = 'adapter-v1' | 'adapter-window';
export const STUDENT_KINDS: readonly StudentKind[] = ['adapter-v1', 'adapter-window'];
export const DISTILL_LOSSES: readonly DistillLossOption[] = ['mse', 'kl', 'mse+kl'];
/**
 * Default learning rate and epochs per objective (the CLI's; chosen on stories260k, all 5 layers,
 * by held-out KLD: see README). MSE keeps the scripts' 1e-2 × 30 epochs.
 */
export const DEFAULT_LR: Record<DistillLoss, number> = { mse: 1e-2, kl: 1e-1 };
export const DEFAULT_EPOCHS: Record<DistillLoss, number> = { mse: 30, kl: 10 };
/** Default epochs of the KL phase of `mse+kl`. */
export const DEFAULT_KL_PHASE_EPOCHS = 5;
/** Default --patience: a phase stops after this many epochs without a better held-out metric. */
export const DEFAULT_PATIENCE = 5;

/** Every other default of a distillation (the CLI shows these as its flags' defaults). */
export const DISTILL_DEFAULTS = Object.freeze({
  seqLen: 64,
  loss: 'mse' as DistillLossOption,
  patience: DEFAULT_PATIENCE,
  student: 'adapter-v1' as StudentKind,
  weightDecay: ADAMW_DEFAULTS.weightDecay,
  gradClip: 1.0,
  batchSize: 8,
  input: 'student' as InputMode,
  mlpGrad: 'exact' as MlpGrad,
  rest: 'engine' as RestPolicy,
  seed: 0,
  heldOutFraction: 0.1,
  /** Keep all trained layers on the backend when they fit in this many bytes. */
  residentBytes: 1 << 30,
  cache: true,
});

/** What a caller may set; anything left out takes its default above. */
export interface DistillOptions {
  model: string;
  /** Teacher override: a directory, or `same` (the student's weights). */
  teacher?: string | null;
  layers: number[];
  corpus?: string | null;
  seqLen?: number;
  maxSeqs?: number | null;
  /** Default: DEFAULT_EPOCHS of the objective (mse+kl: of its MSE phase). */
  epochs?: number;
  /** Default: DEFAULT_LR of the objective. */
  lr?: number;
  /**
   * Objective: `mse` (default, the scripts' per-layer hidden-state MSE), `kl` (end-to-end
   * KL(teacher‖student) on the logits), `mse+kl` (`epochs` of MSE, then `klEpochs` of KL at `klLr`
   * from the MSE phase's best).
   */
  loss?: DistillLossOption;
  /** mse+kl: epochs of the KL phase (default DEFAULT_KL_PHASE_EPOCHS). */
  klEpochs?: number;
  /** mse+kl: learning rate of the KL phase (default DEFAULT_LR.kl). */
  klLr?: number;
  /** Stop a phase after this many epochs without a better held-out metric (default DEFAULT_PATIENCE; 0: never). */
  patience?: number | null;
  /** The student's attention policy for the trained layers: adapter-v1 (default) or adapter-window. */
  student?: StudentKind;
  /** adapter-window: positions of the softmax window (required with it). */
  window?: number | null;
  weightDecay?: number;
  gradClip?: number;
  batchSize?: number;
  input?: InputMode;
  mlpGrad?: MlpGrad;
  rest?: RestPolicy;
  seed?: number;
  out: string;
  resume?: boolean;
  overwrite?: boolean;
  /** Fraction of sequences held out for the before/after report. */
  heldOutFraction?: number;
  chunkSize?: number | null;
  /** Worker threads for --input teacher (layers split between them); default: chooseWorkers. */
  workers?: number | null;
  /** Keep all trained layers on the backend when they fit in this many bytes (default 1 GiB). */
  residentBytes?: number;
  /** Use (and fill) the teacher hidden-state cache. */
  cache?: boolean;
  /** Cache root (default cacheDir()). */
  cacheRoot?: string;
  quiet?: boolean;
  /** Tests: hash the resident weights before and after training and fail if they differ. */
  verifyWeights?: boolean;
  /** Tests: extra hooks into the loop. */
  hooks?: Partial<Pick<TrainHooks, 'beforeStep'>>;
}

/** A distillation's settings with every default applied; frozen. */
export interface RunConfig {
  readonly model: string;
  readonly teacher: string | null;
  /** Trained layers, sorted, each once. */
  readonly layers: readonly number[];
  readonly corpus: string | null;
  readonly seqLen: number;
  readonly maxSeqs: number | null;
  readonly loss: DistillLossOption;
  /** --epochs as given (mse+kl: the MSE phase's). */
  readonly epochs: number;
  /** Epochs of all phases together. */
  readonly totalEpochs: number;
  readonly lr: number;
  readonly phases: readonly TrainPhase[];
  /** The run has a KL phase with epochs (needs the teacher's log-probs and the whole student). */
  readonly withKl: boolean;
  readonly patience: number;
  readonly student: StudentKind;
  /** adapter-window's W; null for adapter-v1. */
  readonly window: number | null;
  readonly weightDecay: number;
  readonly gradClip: number;
  readonly batchSize: number;
  readonly input: InputMode;
  readonly mlpGrad: MlpGrad;
  readonly rest: RestPolicy;
  readonly seed: number;
  readonly heldOutFraction: number;
  readonly chunkSize: number | null;
  readonly workers: number | null;
  readonly residentBytes: number;
  readonly cache: boolean;
  readonly cacheRoot: string | undefined;
  readonly out: string;
  readonly resume: boolean;
  readonly overwrite: boolean;
  readonly quiet: boolean;
  readonly verifyWeights: boolean;
  readonly hooks: Partial<Pick<TrainHooks, 'beforeStep'>> | undefined;
}

/** The objective by epochs for a --loss choice. */
export function distillPhases(o: Pick<DistillOptions, 'loss' | 'epochs' | 'lr' | 'klEpochs' | 'klLr'>): TrainPhase[] {
  const loss = o.loss ?? DISTILL_DEFAULTS.loss;
  const kind: DistillLoss = loss === 'kl' ? 'kl' : 'mse';
  const epochs = o.epochs ?? DEFAULT_EPOCHS[kind];
  const lr = o.lr ?? DEFAULT_LR[kind];
  if (loss === 'mse') return [{ loss: 'mse', epochs, lr }];
  if (loss === 'kl') return [{ loss: 'kl', epochs, lr }];
  return [
    { loss: 'mse', epochs, lr },
    { loss: 'kl', epochs: o.klEpochs ?? DEFAULT_KL_PHASE_EPOCHS, lr: o.klLr ?? DEFAULT_LR.kl },
  ];
}

/** Check the options against a model of `numLayers` layers and build the frozen config. */
export function buildRunConfig(o: DistillOptions, numLayers: number): RunConfig {
  checkOptions(o, numLayers);
  const d = DISTILL_DEFAULTS;
  const loss = o.loss ?? d.loss;
  const kind: DistillLoss = loss === 'kl' ? 'kl' : 'mse';
  const epochs = o.epochs ?? DEFAULT_EPOCHS[kind];
  const lr = o.lr ?? DEFAULT_LR[kind];
  const phases = distillPhases({ ...o, loss, epochs, lr }).map((p) => Object.freeze(p));
  return Object.freeze({
    model: o.model,
    teacher: o.teacher ?? null,
    layers: Object.freeze([...new Set(o.layers)].sort((a, b) => a - b)),
    corpus: o.corpus ?? null,
    seqLen: o.seqLen ?? d.seqLen,
    maxSeqs: o.maxSeqs ?? null,
    loss,
    epochs,
    totalEpochs: phases.reduce((a, p) => a + p.epochs, 0),
    lr,
    phases: Object.freeze(phases),
    withKl: phases.some((p) => p.loss === 'kl' && p.epochs > 0),
    patience: o.patience ?? d.patience,
    student: o.student ?? d.student,
    window: o.student === 'adapter-window' ? o.window! : null,
    weightDecay: o.weightDecay ?? d.weightDecay,
    gradClip: o.gradClip ?? d.gradClip,
    batchSize: o.batchSize ?? d.batchSize,
    input: o.input ?? d.input,
    mlpGrad: o.mlpGrad ?? d.mlpGrad,
    rest: o.rest ?? d.rest,
    seed: o.seed ?? d.seed,
    heldOutFraction: o.heldOutFraction ?? d.heldOutFraction,
    chunkSize: o.chunkSize ?? null,
    workers: o.workers ?? null,
    residentBytes: o.residentBytes ?? d.residentBytes,
    cache: o.cache ?? d.cache,
    cacheRoot: o.cacheRoot,
    out: o.out,
    resume: o.resume ?? false,
    overwrite: o.overwrite ?? false,
    quiet: o.quiet ?? false,
    verifyWeights: o.verifyWeights ?? false,
    hooks: o.hooks,
  });
}

/** The training loop's options. */
export function trainOptions(rc: RunConfig): TrainOptions {
  return {
    window: rc.window,
    layers: [...rc.layers],
    epochs: rc.totalEpochs,
    lr: rc.lr,
    phases: rc.phases.map((p) => ({ ...p })),
    patience: rc.patience,
    weightDecay: rc.weightDecay,
    gradClip: rc.gradClip,
    batchSize: rc.batchSize,
    input: rc.input,
    mlpGrad: rc.mlpGrad,
    rest: rc.rest,
    seed: rc.seed,
    chunkSize: rc.chunkSize ?? undefined,
  };
}

/** Content hashes the fingerprint pins besides the settings. */
export interface RunInputsHashes {
  student: string;
  teacher: string;
  sequences: string;
}

/**
 * What a checkpoint must match to be resumed: the inputs and every setting that changes the
 * arithmetic. (Key order and values as checkpoints have always stored them.)
 */
export function resumeFingerprint(rc: RunConfig, h: RunInputsHashes): Record<string, unknown> {
  return {
    student_hash: h.student,
    teacher_hash: h.teacher,
    sequences_hash: h.sequences,
    seq_len: rc.seqLen,
    layers: [...rc.layers],
    epochs: rc.totalEpochs,
    lr: rc.lr,
    weight_decay: rc.weightDecay,
    grad_clip: rc.gradClip,
    batch_size: rc.batchSize,
    input: rc.input,
    mlp_grad: rc.mlpGrad,
    rest: rc.rest,
    seed: rc.seed,
    chunk_size: rc.chunkSize,
    held_out_fraction: rc.heldOutFraction,
    loss: rc.loss,
    phases: rc.phases.map((p) => ({ ...p })),
    patience: rc.patience,
    student: rc.student,
    window: rc.window,
  };
}

/** How the run went, for the training block (what the settings alone do not say). */
export interface TrainingOutcome {
  selectedBy: string;
  state: Pick<TrainState, 'stoppedEarly' | 'phaseBests' | 'globalStep'>;
  resumed: boolean;
}

/** The `training` block of adapter_config.json, also the report's options (key order is the format's). */
export function trainingBlock(rc: RunConfig, outcome: TrainingOutcome) {
  const phases = rc.phases.map((p) => ({ ...p }));
  return {
    student: rc.student,
    ...(rc.window !== null ? { window: rc.window } : {}),
    loss: rc.loss,
    objective: phases.map((p) => `${p.epochs} epochs ${p.loss === 'kl' ? 'KL(teacher‖student) on the logits, end to end' : 'mean over trained layers of MSE(student layer output, teacher hidden state)'} at lr ${p.lr}`).join('; then '),
    phases,
    patience: rc.patience,
    best_epoch_selected_by: outcome.selectedBy,
    stopped_early_after_epoch: outcome.state.stoppedEarly,
    phase_bests: outcome.state.phaseBests,
    epochs: rc.epochs,
    lr: rc.lr,
    optimizer: 'AdamW',
    weight_decay: rc.weightDecay,
    betas: [ADAMW_DEFAULTS.beta1, ADAMW_DEFAULTS.beta2],
    eps: ADAMW_DEFAULTS.eps,
    schedule: 'cosine',
    grad_clip: rc.gradClip,
    batch_size: rc.batchSize,
    steps: outcome.state.globalStep,
    input: rc.input,
    mlp_grad: rc.mlpGrad,
    rest: rc.rest,
    seed: rc.seed,
    seq_len: rc.seqLen,
    max_seqs: rc.maxSeqs,
    held_out_fraction: rc.heldOutFraction,
    chunk_size: rc.chunkSize,
    gate_form: 'chunked-parallel',
    resumed: outcome.resumed,
  };
}
export type TrainingBlock = ReturnType<typeof trainingBlock>;

/** Every check of the options a user can get wrong, with the flag to fix in the message. */
function checkOptions(o: DistillOptions, numLayers: number): void {
  if (o.layers.length === 0) fail(null, '--layers: no layers given');
  const bad = o.layers.filter((l) => !Number.isInteger(l) || l < 0 || l >= numLayers);
  if (bad.length) fail(null, `--layers: ${rangesText(bad)} out of range (the model has ${numLayers} layers: 0..${numLayers - 1})`);
  const kind: DistillLoss = o.loss === 'kl' ? 'kl' : 'mse';
  const epochs = o.epochs ?? DEFAULT_EPOCHS[kind];
  const lr = o.lr ?? DEFAULT_LR[kind];
  if (!Number.isInteger(epochs) || epochs < 0) fail(null, `--epochs must be a non-negative integer, got ${epochs}`);
  if (!(lr > 0) || !Number.isFinite(lr)) fail(null, `--lr must be a positive number, got ${lr}`);
  if (o.loss !== undefined && !DISTILL_LOSSES.includes(o.loss)) fail(null, `--loss must be one of ${DISTILL_LOSSES.join(', ')}, got ${o.loss}`);
  if (o.klEpochs !== undefined && (!Number.isInteger(o.klEpochs) || o.klEpochs < 0)) fail(null, `--kl-epochs must be a non-negative integer, got ${o.klEpochs}`);
  if (o.klLr !== undefined && (!(o.klLr > 0) || !Number.isFinite(o.klLr))) fail(null, `--kl-lr must be a positive number, got ${o.klLr}`);
  if ((o.klEpochs !== undefined || o.klLr !== undefined) && o.loss !== 'mse+kl') fail(null, '--kl-epochs and --kl-lr set the KL phase of --loss mse+kl');
  if (o.patience !== undefined && o.patience !== null && (!Number.isInteger(o.patience) || o.patience < 0)) fail(null, `--patience must be a non-negative integer, got ${o.patience}`);
  if (o.student !== undefined && !STUDENT_KINDS.includes(o.student)) fail(null, `--student must be one of ${STUDENT_KINDS.join(', ')}, got ${o.student}`);
  if (o.student === 'adapter-window' && !(Number.isInteger(o.window) && o.window! >= 1)) fail(null, `--student adapter-window needs --window W (a positive integer), got ${o.window ?? 'none'}`);
  if (o.student !== 'adapter-window' && o.window !== undefined && o.window !== null) fail(null, '--window sets the window of --student adapter-window');
  const batchSize = o.batchSize ?? DISTILL_DEFAULTS.batchSize;
  if (!Number.isInteger(batchSize) || batchSize < 1) fail(null, `--batch-size must be a positive integer, got ${batchSize}`);
  const input = o.input ?? DISTILL_DEFAULTS.input;
  if (!['student', 'teacher'].includes(input)) fail(null, `--input must be student or teacher, got ${input}`);
  const mlpGrad = o.mlpGrad ?? DISTILL_DEFAULTS.mlpGrad;
  if (!['exact', 'detached'].includes(mlpGrad)) fail(null, `--mlp-grad must be exact or detached, got ${mlpGrad}`);
  const rest = o.rest ?? DISTILL_DEFAULTS.rest;
  if (!REST_POLICIES.includes(rest)) fail(null, `--rest must be one of ${REST_POLICIES.join(', ')}, got ${rest}`);
  const seed = o.seed ?? DISTILL_DEFAULTS.seed;
  if (!Number.isInteger(seed)) fail(null, `--seed must be an integer, got ${seed}`);
  if (o.chunkSize !== undefined && o.chunkSize !== null && (!Number.isInteger(o.chunkSize) || o.chunkSize < 1)) fail(null, `--chunk-size must be a positive integer`);
  if (o.workers !== undefined && o.workers !== null && (!Number.isInteger(o.workers) || o.workers < 1)) fail(null, `--workers must be a positive integer, got ${o.workers}`);
  if (input !== 'teacher' && (o.workers ?? 1) > 1) fail(null, '--workers > 1 needs --input teacher (with --input student each layer reads the previous one)');
  const heldOut = o.heldOutFraction ?? DISTILL_DEFAULTS.heldOutFraction;
  if (!(heldOut >= 0 && heldOut < 1)) fail(null, `--held-out must be a fraction in [0, 1), got ${heldOut}`);
}

/** Sorted integers as ranges ("4-4095, 5000"), so a long list stays a short line. */
function rangesText(xs: number[]): string {
  const sorted = [...new Set(xs)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(j - i >= 2 ? `${sorted[i]}-${sorted[j]}` : sorted.slice(i, j + 1).join(', '));
    i = j + 1;
  }
  return parts.join(', ');
}
