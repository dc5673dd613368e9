/**
 * `synaxim sweep --model M [--suite S | --corpus FILE --context N --max-seqs N] [--adapter DIR]
 *   --out DIR [--overwrite]`: layer sensitivity — gate one layer at a time (the published engine
 * and, with an adapter, its parameters for that layer; the other layers softmax), then layers
 * 0..k, and report held-out KLD for each: which layers to convert first. Writes sweep.json,
 * sweep.md and sweep.svg into DIR (src/eval/sweep.ts); progress on stderr, the path on stdout.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { checkOutput } from '../../util/outputs.ts';
import { modelInputs } from '../../data/registry.ts';
import { cumulativeProgress } from '../../util/progress.ts';
import { fmt } from '../../eval/report.ts';
import { runSweep, SWEEP_FILES, writeSweep, type SweepReport } from '../../eval/sweep.ts';
import { requireDirectoryPath, startBackend, withBackend } from '../common.ts';
import { suiteFromArgs, withSuiteOptions, type SuiteFlags } from './eval.ts';

export interface SweepArgs extends SuiteFlags {
  model: string;
  adapter?: string;
  allowOtherBase?: boolean;
  teacher?: string;
  out: string;
  overwrite?: boolean;
  backend: Parameters<typeof startBackend>[0];
  quiet?: boolean;
  workers?: number;
}

/** The handler's work, callable from tests. */
export async function runSweepCommand(args: SweepArgs): Promise<{ paths: { json: string; md: string; svg: string }; sweep: SweepReport }> {
  const suite = suiteFromArgs(args);
  requireDirectoryPath(args.out);
  checkOutput({
    out: args.out,
    flag: '--out',
    kind: 'dir',
    overwrite: args.overwrite ?? false,
    inputs: [
      ...modelInputs(args.model, args.teacher),
      { path: args.adapter, what: 'adapter directory' },
      { path: suite.source !== 'flags' && fs.existsSync(suite.source) ? suite.source : null, what: 'suite file' },
      ...suite.corpora.map((c) => ({ path: c.kind === 'file' ? c.path : null, what: 'corpus' })),
    ],
    isOurs: (name) => (SWEEP_FILES as readonly string[]).includes(name),
    marker: 'sweep.json',
  });
  await startBackend(args.backend, args.quiet);
  const sweep = await runSweep({
    model: args.model,
    adapter: args.adapter ?? null,
    allowOtherBase: args.allowOtherBase ?? false,
    teacher: args.teacher,
    suite,
    workers: args.workers ?? null,
    log: (line) => {
      if (!args.quiet) process.stderr.write(`synaxim: ${line.replace(/^eval:/, 'sweep:')}\n`);
    },
    // (per layer of every batch, in tokens × layers: see runEval)
    progress: args.quiet ? undefined : cumulativeProgress('sweep'),
  });
  const paths = await writeSweep(path.resolve(args.out), sweep);
  if (!args.quiet) {
    for (const x of sweep.single) {
      process.stderr.write(`synaxim:   layer ${String(x.layer).padEnd(3)} engine KLD ${fmt(x.engine.kld).padStart(8)}${x.adapter ? `  adapter KLD ${fmt(x.adapter.kld).padStart(8)}` : ''}\n`);
    }
    for (const line of sweep.verdict) process.stderr.write(`synaxim: ${line}\n`);
  }
  process.stdout.write(`sweep: ${paths.md}\n`);
  return { paths, sweep };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'sweep',
  describe: 'layer sensitivity: KLD with one layer gated at a time and with layers 0..k gated; write sweep.json, sweep.md, sweep.svg',
  builder: (y) =>
    withSuiteOptions(withBackend(y))
      .option('model', { type: 'string', demandOption: true, describe: 'registry name or model directory (HF, .symb, or a directory holding hf/ and symb-*/)' })
      .option('adapter', { type: 'string', describe: 'symbiotic_adapter directory: also sweep its layers with their adapter parameters' })
      .option('allow-other-base', { type: 'boolean', default: false, describe: 'accept an adapter recorded for another base model' })
      .option('teacher', { type: 'string', describe: "teacher directory, or 'same' to use the student's own weights" })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory (must be empty or new unless --overwrite)' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace an earlier sweep in --out (other files there are kept)' })
      .option('workers', { type: 'number', describe: 'worker threads, one tfjs engine each [default: by cores and job size]' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress or summary on stderr (the output path still goes to stdout)' })
      .example('$0 sweep --model stories260k --out out/sweep', 'KLD of gating one layer at a time, then growing prefixes of layers')
      .example('$0 sweep --model stories260k --adapter out/distill-stories260k-L0-4 --out out/sweep-adapter', 'the same with an adapter\'s parameters per layer'),
  handler: async (args) => {
    await runSweepCommand(args as unknown as SweepArgs);
  },
};
