/**
 * Distill stage 2: the output directory (locked for the run) and the training state in it — a new
 * run's initial state, or the checkpoint of an earlier run with the same fingerprint (--resume).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../../util/errors.ts';
import { initialAdapter } from '../../formats/adapter.ts';
import { acquireDirLock, removeStaleTemps } from '../lock.ts';
import { CHECKPOINT_FILE, fingerprintMismatch, flatFromAdapter, initialTrainState, loadCheckpoint, truncateLog, type TrainState } from '../train.ts';
import type { RunConfig } from '../runConfig.ts';

export const TRAIN_LOG_FILE = 'train_log.jsonl';
export const REPORT_FILE = 'distill_report.md';

export interface RunDir {
  outDir: string;
  ckptFile: string;
  logFile: string;
  release: () => void;
}

/** Lock --out for this run and clear the debris of a run that was killed mid-write. */
export function lockRunDir(rc: RunConfig): RunDir {
  const outDir = path.resolve(rc.out);
  const release = acquireDirLock(outDir);
  removeStaleTemps(outDir);
  return { outDir, ckptFile: path.join(outDir, CHECKPOINT_FILE), logFile: path.join(outDir, TRAIN_LOG_FILE), release };
}

export interface StartedRun {
  state: TrainState;
  resumedFrom: { epoch: number; step: number } | null;
  /** Training time of earlier sessions (resumed runs). */
  priorTrainSec: number;
}

/** Resume the checkpoint (it must match `fingerprint`) or start over with the initial adapter. */
export function startOrResume(rc: RunConfig, dir: RunDir, fingerprint: Record<string, unknown>, hiddenSize: number, log: (msg: string) => void): StartedRun {
  const { outDir, ckptFile, logFile } = dir;
  if (rc.resume) {
    if (!fs.existsSync(ckptFile)) fail(ckptFile, 'nothing to resume: no checkpoint here (start without --resume)');
    const state = loadCheckpoint(ckptFile);
    const diff = fingerprintMismatch(state.fingerprint, fingerprint);
    if (diff) fail(ckptFile, `cannot resume with different settings (${diff})`);
    truncateLog(logFile, state.logBytes);
    log(`resuming from ${ckptFile}: epoch ${state.epoch}, step ${state.stepInEpoch} of the next`);
    return { state, resumedFrom: { epoch: state.epoch, step: state.stepInEpoch }, priorTrainSec: state.wallTimeSec };
  }
  if (fs.existsSync(ckptFile) && !rc.overwrite) {
    fail(ckptFile, 'a checkpoint of an earlier run is here; pass --resume to continue it or --overwrite to start over');
  }
  fs.mkdirSync(outDir, { recursive: true });
  // Starting over: nothing from an earlier run may sit beside the new one looking current.
  for (const stale of [CHECKPOINT_FILE, TRAIN_LOG_FILE, REPORT_FILE, 'loss_curve.svg', 'loss_per_layer.svg']) fs.rmSync(path.join(outDir, stale), { force: true });
  fs.rmSync(path.join(outDir, 'symbiotic_adapter'), { recursive: true, force: true });
  const init = initialAdapter([...rc.layers], hiddenSize, rc.window);
  const state = initialTrainState(flatFromAdapter(init), fingerprint, rc.layers.length);
  fs.writeFileSync(logFile, '');
  return { state, resumedFrom: null, priorTrainSec: 0 };
}
