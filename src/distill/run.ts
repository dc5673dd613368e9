/**
 * `synaxim distill` end to end: resolve the model, tokenize the corpus, get the teacher's hidden
 * states (cached), train the adapter (checkpoint after every epoch, resumable, Ctrl-C safe), export
 * `OUT/symbiotic_adapter/`, `OUT/train_log.jsonl` and `OUT/distill_report.md`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { backendInfo, backendMemoryLimit, layerWeightBytes } from '../runtime/backend.ts';
import { applyWasmMemoryFixes } from '../runtime/wasmFixes.ts';
import { chooseWorkers } from '../runtime/workers.ts';
import { TeacherInputLayerWorkers } from './workers.ts';
import { checkSequences, defaultCorpus, readCorpus, splitHeldOut, tokenizeCorpus, type Corpus } from '../data/corpus.ts';
import { fail } from '../util/errors.ts';
import { Progress } from '../util/progress.ts';
import { resolveModel, type ResolvedModel } from '../data/registry.ts';
import { contentHash } from '../formats/contentHash.ts';
import { ropeCosSin } from '../model/nn.ts';
import { initialAdapter, adapterParameterCount } from '../formats/adapter.ts';
import { REST_POLICIES, type RestPolicy } from '../engine/student.ts';
import { openModel } from '../formats/openModel.ts';
import { loadTokenizer } from '../formats/tokenizer.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { acquireDirLock, removeStaleTemps } from './lock.ts';
import { exportAdapter, toolVersion, type ExportProvenance } from './export.ts';
import { ADAMW_DEFAULTS } from './optimizer.ts';
import { writeDistillReport, type EpochRecord, type StepRecord } from './report.ts';
import { teacherHiddenStates, teacherLogProbs } from './teacherCache.ts';
import type { VocabSlice } from './klLoss.ts';
import { uploadMatrix } from '../model/nn.ts';
import * as tf from '@tensorflow/tfjs-core';
import {
  evaluateKl,
  selectionMetric,
  type DistillLoss,
  type KlContext,
  type TrainPhase,
  AdapterVariables,
  adapterFromFlat,
  CHECKPOINT_FILE,
  evaluatePerLayer,
  fingerprintMismatch,
  flatFromAdapter,
  initialTrainState,
  LayerSource,
  loadCheckpoint,
  saveCheckpoint,
  stepsPerEpoch,
  studentStreamBefore,
  trainLoop,
  truncateLog,
  type EpochEvent,
  type InputMode,
  type MlpGrad,
  type PassContext,
  type StepEvent,
  type TrainHooks,
  type TrainOptions,
  type TrainState,
} from './train.ts';

export const TRAIN_LOG_FILE = 'train_log.jsonl';

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

/** The objective by epochs for a --loss choice. */
export function distillPhases(o: Pick<DistillOptions, 'loss' | 'epochs' | 'lr' | 'klEpochs' | 'klLr'>): TrainPhase[] {
  const loss = o.loss ?? 'mse';
  if (loss === 'mse') return [{ loss: 'mse', epochs: o.epochs, lr: o.lr }];
  if (loss === 'kl') return [{ loss: 'kl', epochs: o.epochs, lr: o.lr }];
  return [
    { loss: 'mse', epochs: o.epochs, lr: o.lr },
    { loss: 'kl', epochs: o.klEpochs ?? DEFAULT_KL_PHASE_EPOCHS, lr: o.klLr ?? DEFAULT_LR.kl },
  ];
}
export const REPORT_FILE = 'distill_report.md';

export interface DistillOptions {
  model: string;
  /** Teacher override: a directory, or `same` (the student's weights). */
  teacher?: string | null;
  layers: number[];
  corpus?: string | null;
  seqLen: number;
  maxSeqs?: number | null;
  epochs: number;
  lr: number;
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
  batchSize: number;
  input: InputMode;
  mlpGrad: MlpGrad;
  rest: RestPolicy;
  seed: number;
  out: string;
  resume?: boolean;
  overwrite?: boolean;
  /** Fraction of sequences held out for the before/after report. */
  heldOutFraction?: number;
  chunkSize?: number;
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

export interface DistillResult {
  outDir: string;
  adapterDir: string;
  reportFile: string;
  logFile: string;
  bestLoss: number | null;
  bestEpoch: number | null;
  heldOutBefore: number[];
  heldOutAfter: number[];
  /** Held-out KL(teacher‖student) per token before/after (runs with a kl phase). */
  heldOutKl: { before: number | null; after: number | null } | null;
  /** The metric that chose the exported epoch (e.g. "held-out KLD"). */
  selectedBy: string;
  wallTimeSec: number;
  trainTokens: number;
  weightsFingerprint?: { before: string; after: string };
  resumedFrom: { epoch: number; step: number } | null;
}

function checkOptions(o: DistillOptions, numLayers: number): void {
  if (o.layers.length === 0) fail(null, '--layers: no layers given');
  const bad = o.layers.filter((l) => !Number.isInteger(l) || l < 0 || l >= numLayers);
  if (bad.length) fail(null, `--layers: ${rangesText(bad)} out of range (the model has ${numLayers} layers: 0..${numLayers - 1})`);
  if (!Number.isInteger(o.epochs) || o.epochs < 0) fail(null, `--epochs must be a non-negative integer, got ${o.epochs}`);
  if (!(o.lr > 0) || !Number.isFinite(o.lr)) fail(null, `--lr must be a positive number, got ${o.lr}`);
  if (o.loss !== undefined && !DISTILL_LOSSES.includes(o.loss)) fail(null, `--loss must be one of ${DISTILL_LOSSES.join(', ')}, got ${o.loss}`);
  if (o.klEpochs !== undefined && (!Number.isInteger(o.klEpochs) || o.klEpochs < 0)) fail(null, `--kl-epochs must be a non-negative integer, got ${o.klEpochs}`);
  if (o.klLr !== undefined && (!(o.klLr > 0) || !Number.isFinite(o.klLr))) fail(null, `--kl-lr must be a positive number, got ${o.klLr}`);
  if ((o.klEpochs !== undefined || o.klLr !== undefined) && o.loss !== 'mse+kl') fail(null, '--kl-epochs and --kl-lr set the KL phase of --loss mse+kl');
  if (o.patience !== undefined && o.patience !== null && (!Number.isInteger(o.patience) || o.patience < 0)) fail(null, `--patience must be a non-negative integer, got ${o.patience}`);
  if (o.student !== undefined && !STUDENT_KINDS.includes(o.student)) fail(null, `--student must be one of ${STUDENT_KINDS.join(', ')}, got ${o.student}`);
  if (o.student === 'adapter-window' && !(Number.isInteger(o.window) && o.window! >= 1)) fail(null, `--student adapter-window needs --window W (a positive integer), got ${o.window ?? 'none'}`);
  if (o.student !== 'adapter-window' && o.window !== undefined && o.window !== null) fail(null, '--window sets the window of --student adapter-window');
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) fail(null, `--batch-size must be a positive integer, got ${o.batchSize}`);
  if (!['student', 'teacher'].includes(o.input)) fail(null, `--input must be student or teacher, got ${o.input}`);
  if (!['exact', 'detached'].includes(o.mlpGrad)) fail(null, `--mlp-grad must be exact or detached, got ${o.mlpGrad}`);
  if (!REST_POLICIES.includes(o.rest)) fail(null, `--rest must be one of ${REST_POLICIES.join(', ')}, got ${o.rest}`);
  if (!Number.isInteger(o.seed)) fail(null, `--seed must be an integer, got ${o.seed}`);
  if (o.chunkSize !== undefined && (!Number.isInteger(o.chunkSize) || o.chunkSize < 1)) fail(null, `--chunk-size must be a positive integer`);
  if (o.workers !== undefined && o.workers !== null && (!Number.isInteger(o.workers) || o.workers < 1)) fail(null, `--workers must be a positive integer, got ${o.workers}`);
  if (o.input !== 'teacher' && (o.workers ?? 1) > 1) fail(null, '--workers > 1 needs --input teacher (with --input student each layer reads the previous one)');
  const heldOut = o.heldOutFraction ?? 0.1;
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

function sameShape(student: ModelWeights, teacher: ModelWeights): void {
  const a = student.config;
  const b = teacher.config;
  for (const k of ['hiddenSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'intermediateSize', 'vocabSize'] as const) {
    if (a[k] !== b[k]) fail(teacher.dir, `teacher ${k} ${b[k]} differs from the student's ${a[k]} (${student.dir}): not the same model`);
  }
}

/** Run (or resume) a distillation. */
export async function runDistill(o: DistillOptions): Promise<DistillResult> {
  const log = (msg: string) => {
    if (!o.quiet) process.stderr.write(`synaxim distill: ${msg}\n`);
  };
  const wallStart = performance.now();
  // On wasm, stock tfjs copies every weight it saves for backprop and materialises Wᵀ for the
  // input gradient: a Magnus layer then overflows the 4 GiB heap. Same arithmetic, no copies.
  applyWasmMemoryFixes();
  const resolved: ResolvedModel = resolveModel(o.model, { teacher: o.teacher ?? undefined });
  const student = openModel(resolved.studentDir);
  const teacherSame = path.resolve(resolved.teacherDir) === path.resolve(resolved.studentDir);
  const teacher = teacherSame ? student : openModel(resolved.teacherDir);
  let releaseLock: (() => void) | null = null;
  try {
    const c = student.config;
    if (!teacherSame) sameShape(student, teacher);
    checkOptions(o, c.numLayers);
    const layers = [...new Set(o.layers)].sort((a, b) => a - b);
    const phases = distillPhases(o);
    const withKl = phases.some((p) => p.loss === 'kl' && p.epochs > 0);
    const patience = o.patience === undefined || o.patience === null ? DEFAULT_PATIENCE : o.patience;
    const window = o.student === 'adapter-window' ? o.window! : null;
    const opts: TrainOptions = {
      window,
      layers,
      epochs: phases.reduce((a, p) => a + p.epochs, 0),
      lr: o.lr,
      phases,
      patience,
      weightDecay: o.weightDecay ?? ADAMW_DEFAULTS.weightDecay,
      gradClip: o.gradClip ?? 1.0,
      batchSize: o.batchSize,
      input: o.input,
      mlpGrad: o.mlpGrad,
      rest: o.rest,
      seed: o.seed,
      chunkSize: o.chunkSize,
    };
    log(`model ${resolved.name} (${resolved.source}); student ${resolved.studentDir} [${student.storage}], teacher ${teacherSame ? 'same weights' : resolved.teacherDir}`);

    // Corpus -> sequences.
    if (!resolved.tokenizerDir) fail(resolved.studentDir, 'this model has no tokenizer.json (needed to tokenize the corpus)');
    const tokenizer = await loadTokenizer(resolved.tokenizerDir, { bosTokenId: c.bosTokenId, eosTokenIds: c.eosTokenIds, modelVocabSize: c.vocabSize });
    const corpus: Corpus = o.corpus ? readCorpus(o.corpus) : defaultCorpus();
    if (o.seqLen > c.maxPositionEmbeddings) fail(null, `--seq-len ${o.seqLen} exceeds the model's context (${c.maxPositionEmbeddings})`);
    const tok = tokenizeCorpus(corpus.documents, tokenizer, { seqLen: o.seqLen, maxSeqs: o.maxSeqs ?? null, addBos: true, source: corpus.source });
    checkSequences(tok.sequences, c.vocabSize, c.maxPositionEmbeddings, corpus.source);
    const all = tok.sequences.map((_, i) => i);
    const { train, heldOut } = splitHeldOut(all, { fraction: o.heldOutFraction ?? 0.1, seed: 0 });
    if (train.length === 0) fail(corpus.source, 'no training sequences left after the held-out split; add documents or lower --seq-len');
    log(`corpus ${corpus.source}: ${corpus.documents.length} documents -> ${tok.sequences.length} sequences × ${o.seqLen} tokens (${tok.dropped} too short); ${train.length} train, ${heldOut.length} held out`);

    // Output directory and checkpoint.
    const outDir = path.resolve(o.out);
    const ckptFile = path.join(outDir, CHECKPOINT_FILE);
    const logFile = path.join(outDir, TRAIN_LOG_FILE);
    releaseLock = acquireDirLock(outDir);
    removeStaleTemps(outDir); // debris of a run that was killed mid-write
    const studentHash = contentHash(resolved.studentDir);
    const teacherHash = teacherSame ? studentHash : contentHash(resolved.teacherDir);
    const fingerprint = {
      student_hash: studentHash,
      teacher_hash: teacherHash,
      sequences_hash: tok.hash,
      seq_len: o.seqLen,
      layers,
      epochs: opts.epochs,
      lr: opts.lr,
      weight_decay: opts.weightDecay,
      grad_clip: opts.gradClip,
      batch_size: opts.batchSize,
      input: opts.input,
      mlp_grad: opts.mlpGrad,
      rest: opts.rest,
      seed: opts.seed,
      chunk_size: opts.chunkSize ?? null,
      held_out_fraction: o.heldOutFraction ?? 0.1,
      loss: o.loss ?? 'mse',
      phases,
      patience,
      student: o.student ?? 'adapter-v1',
      window,
    };
    let state: TrainState;
    let resumedFrom: DistillResult['resumedFrom'] = null;
    let priorTrainSec = 0;
    if (o.resume) {
      if (!fs.existsSync(ckptFile)) fail(ckptFile, 'nothing to resume: no checkpoint here (start without --resume)');
      state = loadCheckpoint(ckptFile);
      const diff = fingerprintMismatch(state.fingerprint, fingerprint);
      if (diff) fail(ckptFile, `cannot resume with different settings (${diff})`);
      truncateLog(logFile, state.logBytes);
      resumedFrom = { epoch: state.epoch, step: state.stepInEpoch };
      priorTrainSec = state.wallTimeSec;
      log(`resuming from ${ckptFile}: epoch ${state.epoch}, step ${state.stepInEpoch} of the next`);
    } else {
      if (fs.existsSync(ckptFile) && !o.overwrite) {
        fail(ckptFile, 'a checkpoint of an earlier run is here; pass --resume to continue it or --overwrite to start over');
      }
      fs.mkdirSync(outDir, { recursive: true });
      // Starting over: nothing from an earlier run may sit beside the new one looking current.
      for (const stale of [CHECKPOINT_FILE, TRAIN_LOG_FILE, REPORT_FILE, 'loss_curve.svg', 'loss_per_layer.svg']) fs.rmSync(path.join(outDir, stale), { force: true });
      fs.rmSync(path.join(outDir, 'symbiotic_adapter'), { recursive: true, force: true });
      const init = initialAdapter(layers, c.hiddenSize, window);
      state = initialTrainState(flatFromAdapter(init), fingerprint, layers.length);
      fs.writeFileSync(logFile, '');
    }

    // Teacher hidden states (cached) and the student's stream into the first trained layer.
    const needed = new Set<number>();
    for (const l of layers) {
      needed.add(l + 1);
      if (o.input === 'teacher') needed.add(l);
    }
    const th = teacherHiddenStates(teacher, tok.sequences, [...needed], { modelHash: teacherHash, sequencesHash: tok.hash, seqLen: o.seqLen }, {
      root: o.cacheRoot,
      useCache: o.cache ?? true,
      log,
    });
    if (th.fromCache.length === needed.size) log(`teacher hidden states from cache ${th.cacheDir}`);
    // The student's own stream starts from the student's embeddings (a .symb conversion may quantize them).
    const studentStart =
      o.input === 'student' ? studentStreamBefore(student, tok.sequences.map((s) => student.embed(s)), layers[0]!, o.rest, o.seqLen, o.chunkSize) : null;

    const layerSource = new LayerSource(student, range(layers[0]!, layers[layers.length - 1]!).filter((l) => o.input === 'student' || layers.includes(l)), o.residentBytes ?? 1 << 30);
    const needsRope = o.input === 'student' && o.rest !== 'fixed' && range(layers[0]!, layers[layers.length - 1]!).some((l) => !layers.includes(l));
    const rope = needsRope ? ropeCosSin(c, Array.from({ length: o.seqLen }, (_, i) => i)) : null;
    // --loss kl / mse+kl: the whole student up to the lm_head, against the teacher's cached log-probs.
    let klCtx: KlContext | null = null;
    if (withKl) {
      // The KL objective differentiates through the whole student at once: every layer and the
      // lm_head must be on the backend together (no streaming). Refuse up front what cannot fit.
      const need = c.numLayers * layerWeightBytes(c).layer + 4 * c.vocabSize * c.hiddenSize;
      const limit = backendMemoryLimit();
      if (need > 0.75 * limit.bytes) {
        fail(
          resolved.studentDir,
          `--loss ${o.loss}: the whole student (${(need / 1024 ** 3).toFixed(1)} GiB of float32 weights) must be on the backend at once, more than ${limit.what} allows; use --loss mse (layers streamed one at a time)`,
        );
      }
      const lp = teacherLogProbs(teacher, tok.sequences, { modelHash: teacherHash, sequencesHash: tok.hash, seqLen: o.seqLen }, { root: o.cacheRoot, useCache: o.cache ?? true, log });
      if (lp.fromCache) log(`teacher log-probs from cache ${lp.file}`);
      const sliceRows = Math.max(1, Math.min(c.vocabSize, Math.floor((1 << 24) / c.hiddenSize)));
      const slices: VocabSlice[] = [];
      for (let start = 0; start < c.vocabSize; start += sliceRows) {
        const count = Math.min(sliceRows, c.vocabSize - start);
        slices.push({ start, count, w: uploadMatrix(student.lmHeadRows(start, count)) });
      }
      klCtx = {
        layers: new LayerSource(student, range(0, c.numLayers - 1), Number.POSITIVE_INFINITY),
        finalNorm: tf.tensor1d(student.finalNorm()),
        slices,
        embeddings: tok.sequences.map((s) => student.embed(s)),
        logProbs: lp.logProbs,
        rope: ropeCosSin(c, Array.from({ length: o.seqLen }, (_, i) => i)),
      };
    }
    const ctx: PassContext = { config: c, layers: layerSource, opts, seqLen: o.seqLen, teacher: th.hidden, studentStart, rope, kl: klCtx };
    const fingerprintBefore = o.verifyWeights ? layerSource.fingerprint() : undefined;
    log(`training layers ${layers.join(', ')}: ${adapterParameterCount({ layers, hiddenSize: c.hiddenSize, window })} parameters${window !== null ? ` (adapter-window, W ${window})` : ''}, input ${o.input}, mlp-grad ${o.mlpGrad}, rest ${o.rest}; weights ${layerSource.isResident ? 'resident' : 'streamed a layer at a time'}`);

    let interrupted = false;
    let sigintCount = 0;
    const onSigint = () => {
      sigintCount += 1;
      if (sigintCount > 1) {
        process.stderr.write('\nsynaxim distill: second interrupt, exiting without saving\n');
        process.exit(130);
      }
      interrupted = true;
      process.stderr.write('\nsynaxim distill: interrupt: finishing the current step and saving a checkpoint (Ctrl-C again to abort)\n');
    };
    process.on('SIGINT', onSigint);
    process.on('SIGTERM', onSigint);
    try {
      // Before: held-out MSE of the initial adapter (stored in the checkpoint, so resumes skip it).
      if (state.heldOutBefore === null) {
        const initVars = new AdapterVariables(initialAdapter(layers, c.hiddenSize, window));
        try {
          state.heldOutBefore = heldOut.length ? evaluatePerLayer(ctx, heldOut, initVars, o.batchSize) : [];
          if (withKl && heldOut.length) state.heldOutKlBefore = evaluateKl(ctx, heldOut, initVars, o.batchSize);
        } finally {
          initVars.dispose();
        }
      }

      const perEpoch = stepsPerEpoch(train.length, Math.min(o.batchSize, train.length));
      const total = perEpoch * opts.epochs;
      const progress = new Progress({ label: 'distill', total, ...(o.quiet ? { stream: { write: () => true }, tty: false } : {}) });
      progress.skip(state.globalStep);
      const hooks: TrainHooks = {
        log: (e: StepEvent | EpochEvent) => {
          fs.appendFileSync(logFile, JSON.stringify(e) + '\n');
          if (e.type === 'epoch') {
            progress.log(
              `epoch ${e.epoch + 1}/${opts.epochs} (${e.objective ?? 'mse'}): train ${e.train_loss.toExponential(4)}${e.held_out_loss !== null ? `, held-out ${e.held_out_loss.toExponential(4)}` : ''}${e.best ? ' (best)' : ''}${e.early_stop ? `, no better ${e.selected_by} for ${patience} epochs: phase stopped early` : ''}, ${Math.round(e.tokens_per_s)} tok/s`,
            );
          }
        },
        checkpoint: (s) => {
          s.logBytes = fs.statSync(logFile).size;
          saveCheckpoint(ckptFile, s);
        },
        onStep: (s, loss, tokens) => progress.tick(1, tokens, `epoch ${s.epoch + 1}/${opts.epochs} loss ${loss.toExponential(3)}`),
        interrupted: () => interrupted,
        beforeStep: o.hooks?.beforeStep,
        checkpointPath: ckptFile,
      };
      if (state.epoch < opts.epochs) {
        // --input teacher makes layers independent: spread them over worker threads (one tfjs each).
        // (adapter-window trains on this thread: the workers' parameter layout is adapter-v1's.)
        const workers = o.input === 'teacher' && window === null ? chooseWorkers({ requested: o.workers ?? null, units: layers.length, tiny: c.hiddenSize * c.numLayers < 4096 }) : 1;
        const layerWorkers = workers > 1 ? await TeacherInputLayerWorkers.start({ studentDir: resolved.studentDir, opts, seqLen: o.seqLen, teacher: th.hidden }, workers) : null;
        if (layerWorkers) {
          log(`training on ${layerWorkers.size} worker threads (layers split between them)`);
          hooks.pass = (seqIdx, params, withGrad) => layerWorkers.pass(seqIdx, params, withGrad);
        }
        try {
          state = await trainLoop(ctx, state, train, heldOut, hooks);
        } finally {
          await layerWorkers?.close();
        }
        progress.finish();
      } else if (opts.epochs === 0) {
        // --epochs 0: export the initial adapter; its training loss is the "best".
        const initVars = new AdapterVariables(initialAdapter(layers, c.hiddenSize, window));
        try {
          const perLayer = evaluatePerLayer(ctx, train, initVars, o.batchSize);
          state.best = { params: state.params.map((p) => p.slice()), loss: perLayer.reduce((a, b) => a + b, 0) / perLayer.length, epoch: -1, metric: 'train MSE' };
        } finally {
          initVars.dispose();
        }
        hooks.checkpoint(state);
      }
      if (interrupted) fail(null, 'interrupted before the export; continue with --resume');

      // After: the exported (best) adapter on the held-out split.
      const bestFlat = state.best ? state.best.params : state.params;
      const exported = adapterFromFlat(layers, c.hiddenSize, bestFlat, window);
      const bestVars = new AdapterVariables(exported);
      let heldOutAfter: number[];
      let heldOutKlAfter: number | null = null;
      try {
        heldOutAfter = heldOut.length ? evaluatePerLayer(ctx, heldOut, bestVars, o.batchSize) : [];
        if (withKl && heldOut.length) heldOutKlAfter = evaluateKl(ctx, heldOut, bestVars, o.batchSize);
      } finally {
        bestVars.dispose();
      }
      const fingerprintAfter = o.verifyWeights ? layerSource.fingerprint() : undefined;
      if (fingerprintBefore && fingerprintAfter !== fingerprintBefore) throw new Error('model weights changed during training (bug)');

      const bk = backendInfo();
      const bestEpoch = state.best && state.best.epoch >= 0 ? state.best.epoch : null;
      const bestLoss = state.best ? state.best.loss : null;
      const heldOutBefore = state.heldOutBefore ?? [];
      const byLayer = (xs: number[]) => Object.fromEntries(layers.map((l, i) => [String(l), xs[i]!]));
      const lastPhase = phaseOfState(phases, state);
      const selectedBy = state.best?.metric ?? selectionMetric(lastPhase.loss, heldOut.length > 0);
      const heldOutKl = withKl && heldOut.length ? { before: state.heldOutKlBefore, after: heldOutKlAfter } : null;
      const training = {
        student: o.student ?? 'adapter-v1',
        ...(window !== null ? { window } : {}),
        loss: o.loss ?? 'mse',
        objective: phases.map((p) => `${p.epochs} epochs ${p.loss === 'kl' ? 'KL(teacher‖student) on the logits, end to end' : 'mean over trained layers of MSE(student layer output, teacher hidden state)'} at lr ${p.lr}`).join('; then '),
        phases,
        patience,
        best_epoch_selected_by: selectedBy,
        stopped_early_after_epoch: state.stoppedEarly,
        phase_bests: state.phaseBests,
        epochs: o.epochs,
        lr: opts.lr,
        optimizer: 'AdamW',
        weight_decay: opts.weightDecay,
        betas: [ADAMW_DEFAULTS.beta1, ADAMW_DEFAULTS.beta2],
        eps: ADAMW_DEFAULTS.eps,
        schedule: 'cosine',
        grad_clip: opts.gradClip,
        batch_size: opts.batchSize,
        steps: state.globalStep,
        input: opts.input,
        mlp_grad: opts.mlpGrad,
        rest: opts.rest,
        seed: opts.seed,
        seq_len: o.seqLen,
        max_seqs: o.maxSeqs ?? null,
        held_out_fraction: o.heldOutFraction ?? 0.1,
        chunk_size: opts.chunkSize ?? null,
        gate_form: 'chunked-parallel',
        resumed: resumedFrom !== null,
      };
      const provenance: ExportProvenance = {
        baseModel: { name: resolved.name, id: resolved.baseModel, studentDir: resolved.studentDir, contentHash: studentHash, format: student.format, storage: student.storage, numLayers: c.numLayers },
        teacher: { dir: resolved.teacherDir, contentHash: teacherHash, same: teacherSame },
        training,
        corpus: {
          source: corpus.source,
          hash: corpus.hash,
          documents: corpus.documents.length,
          sequences: tok.sequences.length,
          trainSequences: train.length,
          heldOutSequences: heldOut.length,
          seqLen: o.seqLen,
          tokens: tok.tokenCount,
          trainTokens: train.length * o.seqLen,
          sequencesHash: tok.hash,
        },
        bestLoss,
        bestEpoch,
        heldOut: { before: byLayer(heldOutBefore), after: byLayer(heldOutAfter) },
        backend: { name: bk.backend, detail: bk.detail, tfjs: bk.tfjs },
        // Training time of earlier sessions (resumed runs) plus all of this session.
        wallTimeSec: priorTrainSec + (performance.now() - wallStart) / 1000,
      };
      // Which metric chose the exported (best) epoch, and the held-out KLD, at the top of adapter_config.json.
      exported.config = { ...exported.config, best_epoch_selected_by: selectedBy, ...(heldOutKl ? { held_out_kld: heldOutKl } : {}) };
      const adapterDir = await exportAdapter(outDir, exported, provenance);

      const { steps, epochs } = readTrainLog(logFile);
      const trainTokens = state.globalStep > 0 ? epochs.length * train.length * o.seqLen : 0;
      const reportFile = await writeDistillReport(outDir, {
        title: `Distillation report: ${resolved.name}, layers ${layers.join(', ')}`,
        modelName: resolved.name,
        modelSource: resolved.source,
        studentDir: resolved.studentDir,
        teacherDir: teacherSame ? `${resolved.studentDir} (same weights)` : resolved.teacherDir,
        baseModel: resolved.baseModel,
        layers,
        options: training,
        corpus: { source: corpus.source, hash: corpus.hash, documents: corpus.documents.length, trainSequences: train.length, heldOutSequences: heldOut.length, seqLen: o.seqLen, tokens: tok.tokenCount },
        stepsPerEpoch: perEpoch,
        steps,
        epochs,
        bestEpoch,
        bestLoss,
        selectedBy,
        stoppedEarly: state.stoppedEarly,
        phaseBests: state.phaseBests,
        heldOutKl,
        heldOutBefore,
        heldOutAfter,
        backend: `${bk.backend} (${bk.detail})`,
        wallTimeSec: provenance.wallTimeSec,
        tokensPerSec: state.wallTimeSec > 0 && trainTokens > 0 ? trainTokens / state.wallTimeSec : null,
        adapterDir,
        toolVersion: toolVersion(),
      });
      log(`adapter ${adapterDir}; report ${reportFile}`);
      const meanOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
      log(`held-out MSE (mean over layers): before ${meanOf(heldOutBefore).toExponential(4)}, after ${meanOf(heldOutAfter).toExponential(4)}`);
      if (heldOutKl) log(`held-out KLD (nats per token): before ${heldOutKl.before?.toFixed(4)}, after ${heldOutKl.after?.toFixed(4)}; best epoch chosen by ${selectedBy}`);
      return {
        outDir,
        adapterDir,
        reportFile,
        logFile,
        bestLoss,
        bestEpoch,
        heldOutBefore,
        heldOutAfter,
        heldOutKl,
        selectedBy,
        wallTimeSec: provenance.wallTimeSec,
        trainTokens,
        weightsFingerprint: fingerprintBefore ? { before: fingerprintBefore, after: fingerprintAfter! } : undefined,
        resumedFrom,
      };
    } finally {
      process.off('SIGINT', onSigint);
      process.off('SIGTERM', onSigint);
      layerSource.dispose();
      if (klCtx) {
        klCtx.layers.dispose();
        klCtx.finalNorm.dispose();
        klCtx.slices.forEach((sl) => sl.w.dispose());
        klCtx.rope.cos.dispose();
        klCtx.rope.sin.dispose();
      }
      rope?.cos.dispose();
      rope?.sin.dispose();
    }
  } finally {
    releaseLock?.();
    student.close();
    if (!teacherSame) teacher.close();
  }
}

/** The phase the run's state ended in. */
function phaseOfState(phases: TrainPhase[], state: TrainState): TrainPhase {
  return phases[Math.min(state.phase, phases.length - 1)]!;
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

/** Step and epoch records of a train_log.jsonl (for the report). */
export function readTrainLog(file: string): { steps: StepRecord[]; epochs: EpochRecord[] } {
  const steps: StepRecord[] = [];
  const epochs: EpochRecord[] = [];
  if (!fs.existsSync(file)) return { steps, epochs };
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const e = JSON.parse(line) as StepEvent | EpochEvent;
    if (e.type === 'step') steps.push({ epoch: e.epoch, step: e.step, loss: e.loss, lr: e.lr, gradNorm: e.grad_norm });
    else if (e.type === 'epoch') {
      epochs.push({
        epoch: e.epoch,
        objective: e.objective ?? 'mse',
        ...(e.early_stop ? { earlyStop: true } : {}),
        trainLoss: e.train_loss,
        trainLossPerLayer: Object.values(e.train_loss_per_layer),
        heldOutLoss: e.held_out_loss,
        heldOutPerLayer: e.held_out_per_layer ? Object.values(e.held_out_per_layer) : null,
      });
    }
  }
  return { steps, epochs };
}
