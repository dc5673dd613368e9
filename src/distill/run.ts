/**
 * `synaxim distill` end to end, in stages (src/distill/stages/):
 *   models → data (corpus → sequences) → run directory (lock, checkpoint / resume) → teacher
 *   targets (cached) → pass context → training (workers, Ctrl-C) → export + report,
 * all reading one frozen run config (src/distill/runConfig.ts). Writes `OUT/symbiotic_adapter/`,
 * `OUT/train_log.jsonl` and `OUT/distill_report.md`.
 */
import { applyWasmMemoryFixes } from '../runtime/wasmFixes.ts';
import { watchInterrupts } from '../util/interrupt.ts';
import { adapterParameterCount } from '../formats/adapter.ts';
import { buildRunConfig, resumeFingerprint, type DistillOptions } from './runConfig.ts';
import { closeDistillModels, modelHashes, openDistillModels } from './stages/models.ts';
import { distillData } from './stages/data.ts';
import { lockRunDir, startOrResume, type RunDir } from './stages/runDir.ts';
import { teacherTargets } from './stages/teacherTargets.ts';
import { passContext } from './stages/passContext.ts';
import { DISTILL_INTERRUPT_MESSAGES, trainAdapter } from './stages/training.ts';
import { publishAdapter, type DistillResult } from './stages/publish.ts';

export {
  DEFAULT_EPOCHS,
  DEFAULT_KL_PHASE_EPOCHS,
  DEFAULT_LR,
  DEFAULT_PATIENCE,
  DISTILL_DEFAULTS,
  DISTILL_LOSSES,
  STUDENT_KINDS,
  distillPhases,
  type DistillLossOption,
  type DistillOptions,
  type StudentKind,
} from './runConfig.ts';
export { REPORT_FILE, TRAIN_LOG_FILE } from './stages/runDir.ts';
export { readTrainLog, type DistillResult } from './stages/publish.ts';

/** Run (or resume) a distillation. */
export async function runDistill(o: DistillOptions): Promise<DistillResult> {
  const log = (msg: string) => {
    if (!o.quiet) process.stderr.write(`synaxim distill: ${msg}\n`);
  };
  const wallStart = performance.now();
  // On wasm, stock tfjs copies every weight it saves for backprop and materialises Wᵀ for the
  // input gradient: a Magnus layer then overflows the 4 GiB heap. Same arithmetic, no copies.
  // Scoped to this run: restored when it ends.
  const restoreKernels = applyWasmMemoryFixes();
  let models: ReturnType<typeof openDistillModels> | null = null;
  let dir: RunDir | null = null;
  try {
    models = openDistillModels(o.model, o.teacher);
    const { resolved, student } = models;
    const c = student.config;
    const rc = buildRunConfig(o, c.numLayers);
    log(`model ${resolved.name} (${resolved.source}); student ${resolved.studentDir} [${student.storage}], teacher ${models.teacherSame ? 'same weights' : resolved.teacherDir}`);
    const data = await distillData(rc, models, log);
    dir = lockRunDir(rc);
    const hashes = modelHashes(models);
    const started = startOrResume(rc, dir, resumeFingerprint(rc, { ...hashes, sequences: data.tok.hash }), c.hiddenSize, log);
    const targets = await teacherTargets(rc, models, data, hashes.teacher, log);
    const { ctx, dispose } = await passContext(rc, models, data, targets);
    const signals = watchInterrupts(DISTILL_INTERRUPT_MESSAGES);
    try {
      const before = rc.verifyWeights ? ctx.layers.fingerprint() : undefined;
      let after: string | undefined;
      const { layers, window } = rc;
      log(`training layers ${layers.join(', ')}: ${adapterParameterCount({ layers: [...layers], hiddenSize: c.hiddenSize, window })} parameters${window !== null ? ` (adapter-window, W ${window})` : ''}, input ${rc.input}, mlp-grad ${rc.mlpGrad}, rest ${rc.rest}${ctx.native ? '' : `; weights ${ctx.layers.isResident ? 'resident' : 'streamed a layer at a time'}`}`);
      const trained = await trainAdapter(rc, models, data, ctx, dir, started.state, signals.interrupted, log);
      const afterEvaluation = () => {
        after = rc.verifyWeights ? ctx.layers.fingerprint() : undefined;
        if (before && after !== before) throw new Error('model weights changed during training (bug)');
      };
      const published = await publishAdapter({ rc, models, hashes, data, ctx, dir, started, state: trained.state, stepsPerEpoch: trained.stepsPerEpoch, wallStart, afterEvaluation }, log);
      return { ...published, weightsFingerprint: before ? { before, after: after! } : undefined };
    } finally {
      signals.stop();
      dispose();
    }
  } finally {
    dir?.release();
    if (models) closeDistillModels(models);
    restoreKernels();
  }
}
