/**
 * `synaxim distill`: train the symbiotic adapter of the named layers against the teacher and
 * export OUT/symbiotic_adapter/, OUT/train_log.jsonl and OUT/distill_report.md.
 *
 *   synaxim distill --model magnus --layers 0-7 [--corpus FILE] [--seq-len 64] [--max-seqs N]
 *     [--epochs 30] [--lr 1e-2] [--input student|teacher] [--mlp-grad exact|detached]
 *     [--rest engine] [--seed 0] [--out DIR] [--resume] [--backend ...]
 */
import type { CommandModule } from 'yargs';
import { fail } from '../../core/errors.ts';
import { runDistill } from '../../distill/run.ts';
import { REST_POLICIES, type RestPolicy } from '../../engine/student.ts';
import { parseLayerList, requireDirectoryPath, startBackend, withBackend } from '../common.ts';

interface DistillArgs {
  model: string;
  teacher?: string;
  layers: string;
  corpus?: string;
  seqLen: number;
  maxSeqs?: number;
  epochs: number;
  lr: number;
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
      .option('layers', { type: 'string', demandOption: true, describe: 'layers to train, e.g. 0-7 or 0,2,5' })
      .option('corpus', { type: 'string', describe: 'calibration text: JSONL with a "text" field, or plain text (documents split at blank lines); default: built-in corpus' })
      .option('seq-len', { type: 'number', default: 64, describe: 'tokens per sequence (BOS + text, documents shorter are skipped)' })
      .option('max-seqs', { type: 'number', describe: 'use at most this many sequences' })
      .option('epochs', { type: 'number', default: 30, describe: 'passes over the data (0: export the initial adapter)' })
      .option('lr', { type: 'number', default: 1e-2, describe: 'AdamW learning rate (cosine schedule over all steps)' })
      .option('weight-decay', { type: 'number', default: 0.01, describe: 'AdamW decoupled weight decay' })
      .option('batch-size', { type: 'number', default: 8, describe: 'sequences per optimizer step' })
      .option('input', { choices: ['student', 'teacher'] as const, default: 'student' as const, describe: "what layer l reads: the student's own (detached) output of l-1, or the teacher's hidden state" })
      .option('mlp-grad', { choices: ['exact', 'detached'] as const, default: 'exact' as const, describe: 'differentiate through the MLP, or hold its output constant (as the SYNAXIM scripts)' })
      .option('rest', { choices: REST_POLICIES, default: 'engine' as RestPolicy, describe: 'policy of untrained layers the student stream passes through' })
      .option('seed', { type: 'number', default: 0, describe: 'seed of the data order' })
      .option('held-out', { type: 'number', default: 0.1, describe: 'fraction of sequences held out for the before/after report' })
      .option('chunk-size', { type: 'number', describe: 'parallel-gate chunk size (default: by model width)' })
      .option('out', { type: 'string', describe: 'output directory (default out/distill-<model>-L<layers>)' })
      .option('resume', { type: 'boolean', default: false, describe: "continue from OUT's checkpoint" })
      .option('overwrite', { type: 'boolean', default: false, describe: 'start over even if OUT holds a checkpoint' })
      .option('workers', { type: 'number', describe: 'worker threads for --input teacher (layers split between them) [default: 2 with ≥ 2 cores unless the job is tiny]' })
      .option('cache', { type: 'boolean', default: true, describe: 'use the teacher hidden-state cache (--no-cache to recompute)' }),
  handler: async (argv) => {
    const args = argv as unknown as DistillArgs;
    const layers = parseLayerList(args.layers);
    const modelTag = args.model.replace(/[/\\]+$/, '').split(/[/\\]/).pop() || 'model';
    const out = args.out ?? `out/distill-${modelTag}-L${args.layers.replace(/[^0-9,-]/g, '')}`;
    requireDirectoryPath(out);
    await startBackend(args.backend);
    await runDistill({
      model: args.model,
      teacher: args.teacher ?? null,
      layers,
      corpus: args.corpus ?? null,
      seqLen: int(args.seqLen, '--seq-len'),
      maxSeqs: args.maxSeqs === undefined ? null : int(args.maxSeqs, '--max-seqs'),
      epochs: int(args.epochs, '--epochs'),
      lr: args.lr,
      weightDecay: args.weightDecay,
      batchSize: int(args.batchSize, '--batch-size'),
      input: args.input,
      mlpGrad: args.mlpGrad,
      rest: args.rest,
      seed: int(args.seed, '--seed'),
      out,
      resume: args.resume,
      overwrite: args.overwrite,
      heldOutFraction: args.heldOut,
      chunkSize: args.chunkSize === undefined ? undefined : int(args.chunkSize, '--chunk-size'),
      cache: args.cache,
      workers: args.workers ?? null,
    });
  },
};
