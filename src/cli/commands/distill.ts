/**
 * `synaxim distill`: train the symbiotic adapter of the named layers against the teacher and
 * export OUT/symbiotic_adapter/, OUT/train_log.jsonl and OUT/distill_report.md.
 *
 *   synaxim distill --model magnus --layers 0-7 [--corpus FILE] [--seq-len 64] [--max-seqs N]
 *     [--epochs 30 (kl: 10)] [--lr 1e-2 (kl: 1e-1)] [--loss mse|kl|mse+kl] [--kl-epochs 5] [--kl-lr 1e-1] [--patience 5]
 *     [--input student|teacher] [--mlp-grad exact|detached]
 *     [--rest engine] [--seed 0] [--out DIR] [--resume] [--backend ...]
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { fail } from '../../util/errors.ts';
import { checkOutput } from '../../util/outputs.ts';
import { modelInputs } from '../../data/registry.ts';
import { runDistill } from '../../distill/run.ts';
import { DEFAULT_EPOCHS, DEFAULT_KL_PHASE_EPOCHS, DEFAULT_LR, DISTILL_DEFAULTS as D, DISTILL_LOSSES, STUDENT_KINDS, type DistillLossOption, type DistillOptions, type StudentKind } from '../../distill/runConfig.ts';
import { REST_POLICIES, type RestPolicy } from '../../engine/student.ts';
import { studentPolicyLine } from '../../engine/policyLine.ts';
import { modelLayerCount, parseLayerList, requireDirectoryPath, startBackend, withBackend } from '../common.ts';
import { layerRangesText } from '../../util/layerRanges.ts';

/** The flags as yargs hands them over (camelCase); their defaults are the run config's. */
interface DistillArgs {
  model: string;
  teacher?: string;
  layers: string;
  corpus?: string;
  seqLen: number;
  maxSeqs?: number;
  epochs?: number;
  lr?: number;
  loss: DistillLossOption;
  klEpochs?: number;
  klLr?: number;
  patience: number;
  student: StudentKind;
  window?: number;
  weightDecay: number;
  batchSize: number;
  input: 'student' | 'teacher';
  mlpGrad: 'exact' | 'detached';
  rest: RestPolicy;
  seed: number;
  out?: string;
  resume: boolean;
  overwrite: boolean;
  heldOut: number;
  chunkSize?: number;
  cache: boolean;
  backend: Parameters<typeof startBackend>[0];
  workers?: number;
}

/** Integer flags: their DistillOptions key and the flag named in the error. */
const INTEGER_FLAGS = { seqLen: '--seq-len', maxSeqs: '--max-seqs', epochs: '--epochs', klEpochs: '--kl-epochs', patience: '--patience', window: '--window', batchSize: '--batch-size', seed: '--seed', chunkSize: '--chunk-size' } as const;

/** The run's options from the flags: integers checked, nothing defaulted here (runConfig.ts does that). */
function distillOptions(args: DistillArgs, layers: number[], out: string): DistillOptions {
  const ints = Object.fromEntries(
    Object.entries(INTEGER_FLAGS).map(([k, flag]) => {
      const v = args[k as keyof typeof INTEGER_FLAGS];
      return [k, v === undefined ? undefined : int(v, flag)];
    }),
  ) as Partial<Record<keyof typeof INTEGER_FLAGS, number>>;
  return {
    ...ints,
    model: args.model,
    teacher: args.teacher ?? null,
    layers,
    corpus: args.corpus ?? null,
    lr: args.lr,
    loss: args.loss,
    klLr: args.klLr,
    student: args.student,
    weightDecay: args.weightDecay,
    input: args.input,
    mlpGrad: args.mlpGrad,
    rest: args.rest,
    out,
    resume: args.resume,
    overwrite: args.overwrite,
    heldOutFraction: args.heldOut,
    cache: args.cache,
    workers: args.workers ?? null,
  };
}

/** What a distill run writes into --out; anything else there is the user's. */
function isDistillOutputEntry(name: string): boolean {
  return ['checkpoint.safetensors', 'train_log.jsonl', 'distill_report.md', '.synaxim-distill.lock'].includes(name) || name.startsWith('symbiotic_adapter') || name.endsWith('.svg');
}

const int = (v: unknown, flag: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n)) fail(null, `${flag} must be an integer, got ${JSON.stringify(v)}`);
  return n;
};

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'distill',
  describe: 'train the symbiotic adapter of some layers against the teacher; export symbiotic_adapter/ and a report',
  builder: (y) =>
    withBackend(y)
      .option('model', { type: 'string', demandOption: true, describe: 'registry name (magnus, stories260k, tiny, …) or model directory' })
      .option('teacher', { type: 'string', describe: "teacher directory, or 'same' to use the student's own weights" })
      .option('layers', { type: 'string', demandOption: true, describe: 'layers to train: 0-7, 0,2,5, all, first-N or last-N' })
      .option('corpus', { type: 'string', describe: 'calibration text: JSONL with a "text" field, or plain text (documents split at blank lines); default: built-in corpus' })
      .option('seq-len', { type: 'number', default: D.seqLen, describe: 'tokens per sequence (BOS + text, documents shorter are skipped)' })
      .option('max-seqs', { type: 'number', describe: 'use at most this many sequences' })
      .option('epochs', { type: 'number', describe: `passes over the data (0: export the initial adapter); mse+kl: the MSE phase [default: ${DEFAULT_EPOCHS.mse} for mse and mse+kl, ${DEFAULT_EPOCHS.kl} for kl]` })
      .option('lr', { type: 'number', describe: `AdamW learning rate (cosine schedule over all steps) [default: ${DEFAULT_LR.mse} for mse, ${DEFAULT_LR.kl} for kl]` })
      .option('loss', { choices: DISTILL_LOSSES, default: D.loss, describe: 'objective: per-layer hidden-state MSE (the scripts), end-to-end KL(teacher‖student) on the logits, or MSE then KL from its best epoch' })
      .option('kl-epochs', { type: 'number', describe: `--loss mse+kl: epochs of the KL phase after the --epochs of MSE [default: ${DEFAULT_KL_PHASE_EPOCHS}]` })
      .option('kl-lr', { type: 'number', describe: `--loss mse+kl: learning rate of the KL phase [default: ${DEFAULT_LR.kl}]` })
      .option('student', { choices: STUDENT_KINDS, default: D.student, describe: 'attention of the trained layers: adapter-v1 (the gate, 4 parameters per layer), or adapter-window (softmax over the last --window positions mixed with the gate by a learned weight)' })
      .option('window', { type: 'number', describe: '--student adapter-window: positions of its softmax window (W)' })
      .option('patience', { type: 'number', default: D.patience, describe: 'stop a phase after this many epochs without a better held-out metric (MSE for mse, KLD for kl); 0: never' })
      .option('weight-decay', { type: 'number', default: D.weightDecay, describe: 'AdamW decoupled weight decay' })
      .option('batch-size', { type: 'number', default: D.batchSize, describe: 'sequences per optimizer step' })
      .option('input', { choices: ['student', 'teacher'] as const, default: D.input, describe: "what layer l reads: the student's own (detached) output of l-1, or the teacher's hidden state" })
      .option('mlp-grad', { choices: ['exact', 'detached'] as const, default: D.mlpGrad, describe: 'differentiate through the MLP, or hold its output constant (as the SYNAXIM scripts)' })
      .option('rest', { choices: REST_POLICIES, default: D.rest, describe: 'policy of untrained layers the student stream passes through' })
      .option('seed', { type: 'number', default: D.seed, describe: 'seed of the data order' })
      .option('held-out', { type: 'number', default: D.heldOutFraction, describe: 'fraction of sequences held out for the before/after report' })
      .option('chunk-size', { type: 'number', describe: 'parallel-gate chunk size (default: by model width)' })
      .option('out', { type: 'string', describe: 'output directory (default out/distill-<model>-L<layers>)' })
      .option('resume', { type: 'boolean', default: false, describe: "continue from OUT's checkpoint" })
      .option('overwrite', { type: 'boolean', default: false, describe: 'start over even if OUT holds a checkpoint' })
      .option('workers', { type: 'number', describe: 'worker threads for --input teacher (layers split between them) [default: 2 with ≥ 2 cores unless the job is tiny]' })
      .option('cache', { type: 'boolean', default: D.cache, describe: 'use the teacher hidden-state cache (--no-cache to recompute)' })
      .example('$0 distill --model stories260k --layers 0-1', 'train the adapter of layers 0 and 1 (writes out/distill-stories260k-L0-1/)')
      .example('$0 distill --model magnus --layers first-8 --epochs 1', 'the first eight layers of Magnus (also: all, last-N, 0,2,5)'),
  handler: async (argv) => {
    const args = argv as unknown as DistillArgs;
    const selection = parseLayerList(args.layers);
    // `all`, `first-N`, `last-N` need the model's layer count: read its config (cheap) first.
    const numLayers = modelLayerCount(args.model, args.teacher);
    const layers = selection.explicit ?? selection.resolve(numLayers);
    if (layers.every((l) => l < numLayers)) process.stderr.write(studentPolicyLine('student', numLayers, { layers, window: args.student === 'adapter-window' ? args.window : null }, args.rest));
    const modelTag = args.model.replace(/[/\\]+$/, '').split(/[/\\]/).pop() || 'model';
    const out = args.out ?? `out/distill-${modelTag}-L${layerRangesText(layers)}`;
    requireDirectoryPath(out);
    // A checkpoint of an earlier run is runDistill's to judge (--resume / --overwrite); here: no
    // input inside or around --out, and no files of the user's in it without --overwrite/--resume.
    checkOutput({
      out, flag: '--out', kind: 'dir', overwrite: args.overwrite || args.resume,
      inputs: [...modelInputs(args.model, args.teacher), { path: args.corpus, what: 'corpus' }],
      isOurs: isDistillOutputEntry,
      // An adapter without a checkpoint beside it (a finished run that kept none) is an earlier output too.
      marker: fs.existsSync(path.join(out, 'checkpoint.safetensors')) ? undefined : 'symbiotic_adapter',
    });
    await startBackend(args.backend);
    await runDistill(distillOptions(args, layers, out));
  },
};
