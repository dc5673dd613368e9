/**
 * Distill stage 5: training — the held-out figures of the initial adapter, then the loop from the
 * state (new or resumed) to the last epoch, on worker threads when the layers are independent
 * (--input teacher), saving a checkpoint every epoch and on Ctrl-C (src/util/interrupt.ts).
 * On the native engine (--backend auto|native) the MSE passes run on ONNX Runtime (nativePass.ts);
 * the KL objective stays on tfjs.
 */
import fs from 'node:fs';
import { InterruptedError } from '../../util/errors.ts';
import { Progress } from '../../util/progress.ts';
import { chooseWorkers } from '../../runtime/workers.ts';
import { initialAdapter } from '../../formats/adapter.ts';
import { TeacherInputLayerWorkers } from '../workers.ts';
import { AdapterVariables, evaluateKl, flatFromAdapter, evaluatePerLayer, saveCheckpoint, stepsPerEpoch, trainLoop, type EpochEvent, type PassContext, type StepEvent, type TrainHooks, type TrainState } from '../train.ts';
import type { RunConfig } from '../runConfig.ts';
import type { DistillData } from './data.ts';
import type { DistillModels } from './models.ts';
import type { RunDir } from './runDir.ts';

export interface Trained {
  state: TrainState;
  stepsPerEpoch: number;
}

/** What distill says at Ctrl-C (the caller watches for the signals over training and export). */
export const DISTILL_INTERRUPT_MESSAGES = {
  first: '\nsynaxim distill: interrupt: finishing the current step and saving a checkpoint (Ctrl-C again to abort)\n',
  second: '\nsynaxim distill: second interrupt, exiting without saving\n',
};

export async function trainAdapter(
  rc: RunConfig,
  m: DistillModels,
  data: DistillData,
  ctx: PassContext,
  dir: RunDir,
  start: TrainState,
  interrupted: () => boolean,
  log: (msg: string) => void,
): Promise<Trained> {
  const native = ctx.native ?? null;
  if (native) log(`MSE passes on ONNX Runtime (${native.describe()})`);
  let state = start;
  const { train, heldOut } = data;
  const hiddenSize = m.student.config.hiddenSize;
  const initialFlat = () => flatFromAdapter(initialAdapter([...rc.layers], hiddenSize, rc.window));
  // Before: held-out MSE of the initial adapter (stored in the checkpoint, so resumes skip it).
  if (state.heldOutBefore === null) {
    if (native) state.heldOutBefore = heldOut.length ? await native.evaluate(heldOut, initialFlat(), rc.batchSize) : [];
    withInitialAdapter(rc, hiddenSize, (vars) => {
      if (!native) state.heldOutBefore = heldOut.length ? evaluatePerLayer(ctx, heldOut, vars, rc.batchSize) : [];
      if (rc.withKl && heldOut.length) state.heldOutKlBefore = evaluateKl(ctx, heldOut, vars, rc.batchSize);
    });
  }
  const perEpoch = stepsPerEpoch(train.length, Math.min(rc.batchSize, train.length));
  const hooks = trainHooks(rc, dir, perEpoch, state, interrupted);
  if (native) {
    hooks.pass = (seqIdx, params, withGrad) => native.pass(seqIdx, params, withGrad);
    hooks.evaluate = (seqIdx, params, batchSize) => native.evaluate(seqIdx, params, batchSize);
  }
  if (state.epoch < rc.totalEpochs) {
    // --input teacher makes layers independent: spread them over worker threads (one tfjs each).
    // (tfjs only; adapter-window trains on this thread there: the workers' parameter layout is adapter-v1's.)
    const c = m.student.config;
    const workers = !native && rc.input === 'teacher' && rc.window === null ? chooseWorkers({ requested: rc.workers, units: rc.layers.length, tiny: c.hiddenSize * c.numLayers < 4096 }) : 1;
    const layerWorkers = workers > 1 ? await TeacherInputLayerWorkers.start({ studentDir: m.resolved.studentDir, opts: ctx.opts, seqLen: rc.seqLen, teacher: ctx.teacher }, workers) : null;
    if (layerWorkers) {
      log(`training on ${layerWorkers.size} worker threads (layers split between them)`);
      hooks.pass = (seqIdx, params, withGrad) => layerWorkers.pass(seqIdx, params, withGrad);
    }
    try {
      state = await trainLoop(ctx, state, train, heldOut, hooks);
    } finally {
      await layerWorkers?.close();
    }
    hooks.progress.finish();
  } else if (rc.totalEpochs === 0) {
    // --epochs 0: export the initial adapter; its training loss is the "best".
    const perLayer = native ? await native.evaluate(train, initialFlat(), rc.batchSize) : withInitialAdapter(rc, hiddenSize, (vars) => evaluatePerLayer(ctx, train, vars, rc.batchSize));
    state.best = { params: state.params.map((p) => p.slice()), loss: perLayer.reduce((a, b) => a + b, 0) / perLayer.length, epoch: -1, metric: 'train MSE' };
    hooks.checkpoint(state);
  }
  if (interrupted()) throw new InterruptedError(`interrupted before the export; checkpoint saved to ${dir.ckptFile}; continue with --resume`);
  return { state, stepsPerEpoch: perEpoch };
}

function withInitialAdapter<R>(rc: RunConfig, hiddenSize: number, use: (vars: AdapterVariables) => R): R {
  const vars = new AdapterVariables(initialAdapter([...rc.layers], hiddenSize, rc.window));
  try {
    return use(vars);
  } finally {
    vars.dispose();
  }
}

/** The loop's hooks: the JSONL log, checkpoints, the progress line and the interrupt flag. */
function trainHooks(rc: RunConfig, dir: RunDir, perEpoch: number, state: TrainState, interrupted: () => boolean): TrainHooks & { progress: Progress } {
  const epochs = rc.totalEpochs;
  const progress = new Progress({ label: 'distill', total: perEpoch * epochs, ...(rc.quiet ? { stream: { write: () => true }, tty: false } : {}) });
  progress.skip(state.globalStep);
  return {
    progress,
    log: (e: StepEvent | EpochEvent) => {
      fs.appendFileSync(dir.logFile, JSON.stringify(e) + '\n');
      if (e.type === 'epoch') {
        progress.log(
          `epoch ${e.epoch + 1}/${epochs} (${e.objective ?? 'mse'}): train ${e.train_loss.toExponential(4)}${e.held_out_loss !== null ? `, held-out ${e.held_out_loss.toExponential(4)}` : ''}${e.best ? ' (best)' : ''}${e.early_stop ? `, no better ${e.selected_by} for ${rc.patience} epochs: phase stopped early` : ''}, ${Math.round(e.tokens_per_s)} tok/s`,
        );
      }
    },
    checkpoint: (s) => {
      s.logBytes = fs.statSync(dir.logFile).size;
      saveCheckpoint(dir.ckptFile, s);
    },
    onStep: (s, loss, tokens) => progress.tick(1, tokens, `epoch ${s.epoch + 1}/${epochs} loss ${loss.toExponential(3)}`),
    interrupted,
    beforeStep: rc.hooks?.beforeStep,
    checkpointPath: dir.ckptFile,
  };
}
