/**
 * Distill stage 6: the exported (best) adapter measured on the held-out split, written as
 * OUT/symbiotic_adapter/ with its provenance, and the report OUT/distill_report.md.
 */
import fs from 'node:fs';
import { backendInfo } from '../../runtime/backend.ts';
import { adapterFromFlat, AdapterVariables, evaluateKl, evaluatePerLayer, flatFromAdapter, selectionMetric, type EpochEvent, type PassContext, type StepEvent, type TrainPhase, type TrainState } from '../train.ts';
import { exportAdapter, toolVersion, type ExportProvenance } from '../export.ts';
import { writeDistillReport, type EpochRecord, type StepRecord } from '../report.ts';
import { trainingBlock, type RunConfig, type TrainingBlock } from '../runConfig.ts';
import type { Adapter } from '../../formats/adapter.ts';
import type { DistillData } from './data.ts';
import type { DistillModels } from './models.ts';
import type { RunDir, StartedRun } from './runDir.ts';

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

export interface PublishInput {
  rc: RunConfig;
  models: DistillModels;
  hashes: { student: string; teacher: string };
  data: DistillData;
  ctx: PassContext;
  dir: RunDir;
  started: StartedRun;
  state: TrainState;
  stepsPerEpoch: number;
  /** performance.now() when this session started. */
  wallStart: number;
  /** Called once the held-out figures are in, before anything is written (tests: the weights check). */
  afterEvaluation?: () => void;
}

export type Published = Omit<DistillResult, 'weightsFingerprint'>;

export async function publishAdapter(p: PublishInput, log: (msg: string) => void): Promise<Published> {
  const { rc, models, data, ctx, dir, state } = p;
  const { resolved, student } = models;
  const c = student.config;
  const layers = [...rc.layers];
  const { train, heldOut, corpus, tok } = data;
  // After: the exported (best) adapter on the held-out split.
  const exported = adapterFromFlat(layers, c.hiddenSize, state.best ? state.best.params : state.params, rc.window);
  const { heldOutAfter, heldOutKlAfter } = await evaluateExported(rc, ctx, heldOut, exported);
  p.afterEvaluation?.();

  const bk = backendInfo();
  const bestEpoch = state.best && state.best.epoch >= 0 ? state.best.epoch : null;
  const bestLoss = state.best ? state.best.loss : null;
  const heldOutBefore = state.heldOutBefore ?? [];
  const byLayer = (xs: number[]) => Object.fromEntries(layers.map((l, i) => [String(l), xs[i]!]));
  const lastPhase: TrainPhase = rc.phases[Math.min(state.phase, rc.phases.length - 1)]!;
  const selectedBy = state.best?.metric ?? selectionMetric(lastPhase.loss, heldOut.length > 0);
  const heldOutKl = rc.withKl && heldOut.length ? { before: state.heldOutKlBefore, after: heldOutKlAfter } : null;
  const training = trainingBlock(rc, { selectedBy, state, resumed: p.started.resumedFrom !== null });
  const provenance: ExportProvenance = {
    baseModel: { name: resolved.name, id: resolved.baseModel, studentDir: resolved.studentDir, contentHash: p.hashes.student, format: student.format, storage: student.storage, numLayers: c.numLayers },
    teacher: { dir: resolved.teacherDir, contentHash: p.hashes.teacher, same: models.teacherSame },
    training,
    corpus: {
      source: corpus.source,
      hash: corpus.hash,
      documents: corpus.documents.length,
      sequences: tok.sequences.length,
      trainSequences: train.length,
      heldOutSequences: heldOut.length,
      seqLen: rc.seqLen,
      tokens: tok.tokenCount,
      trainTokens: train.length * rc.seqLen,
      sequencesHash: tok.hash,
    },
    bestLoss,
    bestEpoch,
    heldOut: { before: byLayer(heldOutBefore), after: byLayer(heldOutAfter) },
    backend: { name: bk.backend, detail: bk.detail, tfjs: bk.tfjs },
    // Training time of earlier sessions (resumed runs) plus all of this session.
    wallTimeSec: p.started.priorTrainSec + (performance.now() - p.wallStart) / 1000,
  };
  // Which metric chose the exported (best) epoch, and the held-out KLD, at the top of adapter_config.json.
  exported.config = { ...exported.config, best_epoch_selected_by: selectedBy, ...(heldOutKl ? { held_out_kld: heldOutKl } : {}) };
  const adapterDir = await exportAdapter(dir.outDir, exported, provenance);

  const { reportFile, trainTokens } = await writeReport(p, { training, selectedBy, heldOutKl, heldOutBefore, heldOutAfter, bestEpoch, bestLoss, adapterDir, wallTimeSec: provenance.wallTimeSec, backend: `${bk.backend} (${bk.detail})` });
  log(`adapter ${adapterDir}; report ${reportFile}`);
  const meanOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  log(`held-out MSE (mean over layers): before ${meanOf(heldOutBefore).toExponential(4)}, after ${meanOf(heldOutAfter).toExponential(4)}`);
  if (heldOutKl) log(`held-out KLD (nats per token): before ${heldOutKl.before?.toFixed(4)}, after ${heldOutKl.after?.toFixed(4)}; best epoch chosen by ${selectedBy}`);
  const { outDir, logFile } = dir;
  return { outDir, adapterDir, reportFile, logFile, bestLoss, bestEpoch, heldOutBefore, heldOutAfter, heldOutKl, selectedBy, wallTimeSec: provenance.wallTimeSec, trainTokens, resumedFrom: p.started.resumedFrom };
}

/** The held-out figures of the adapter to export (per-layer MSE, and KLD with a KL phase). */
async function evaluateExported(rc: RunConfig, ctx: PassContext, heldOut: number[], exported: Adapter): Promise<{ heldOutAfter: number[]; heldOutKlAfter: number | null }> {
  const nativeAfter = ctx.native && heldOut.length ? await ctx.native.evaluate(heldOut, flatFromAdapter(exported), rc.batchSize) : null;
  const vars = new AdapterVariables(exported);
  try {
    const heldOutAfter = nativeAfter ?? (heldOut.length ? evaluatePerLayer(ctx, heldOut, vars, rc.batchSize) : []);
    const heldOutKlAfter = rc.withKl && heldOut.length ? evaluateKl(ctx, heldOut, vars, rc.batchSize) : null;
    return { heldOutAfter, heldOutKlAfter };
  } finally {
    vars.dispose();
  }
}

interface Figures {
  training: TrainingBlock;
  selectedBy: string;
  heldOutKl: DistillResult['heldOutKl'];
  heldOutBefore: number[];
  heldOutAfter: number[];
  bestEpoch: number | null;
  bestLoss: number | null;
  adapterDir: string;
  wallTimeSec: number;
  backend: string;
}

/** OUT/distill_report.md from the run's figures and its train_log.jsonl. */
async function writeReport(p: PublishInput, f: Figures): Promise<{ reportFile: string; trainTokens: number }> {
  const { rc, models, data, dir, state } = p;
  const { resolved } = models;
  const { train, heldOut, corpus, tok } = data;
  const layers = [...rc.layers];
  const { steps, epochs } = readTrainLog(dir.logFile);
  const trainTokens = state.globalStep > 0 ? epochs.length * train.length * rc.seqLen : 0;
  const reportFile = await writeDistillReport(dir.outDir, {
    title: `Distillation report: ${resolved.name}, layers ${layers.join(', ')}`,
    modelName: resolved.name,
    modelSource: resolved.source,
    studentDir: resolved.studentDir,
    teacherDir: models.teacherSame ? `${resolved.studentDir} (same weights)` : resolved.teacherDir,
    baseModel: resolved.baseModel,
    layers,
    options: f.training,
    corpus: { source: corpus.source, hash: corpus.hash, documents: corpus.documents.length, trainSequences: train.length, heldOutSequences: heldOut.length, seqLen: rc.seqLen, tokens: tok.tokenCount },
    stepsPerEpoch: p.stepsPerEpoch,
    steps,
    epochs,
    bestEpoch: f.bestEpoch,
    bestLoss: f.bestLoss,
    selectedBy: f.selectedBy,
    stoppedEarly: state.stoppedEarly,
    phaseBests: state.phaseBests,
    heldOutKl: f.heldOutKl,
    heldOutBefore: f.heldOutBefore,
    heldOutAfter: f.heldOutAfter,
    backend: f.backend,
    wallTimeSec: f.wallTimeSec,
    tokensPerSec: state.wallTimeSec > 0 && trainTokens > 0 ? trainTokens / state.wallTimeSec : null,
    adapterDir: f.adapterDir,
    toolVersion: toolVersion(),
  });
  return { reportFile, trainTokens };
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
