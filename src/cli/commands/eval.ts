/**
 * `synaxim eval --model M [--adapter DIR] [--suite S | --corpus FILE --context N --max-seqs N]
 *   [--rest engine] --out DIR [--backend]`: run the teacher and the student configurations side by
 * side on the same tokens and write report.json / report.md / report.html into DIR. Progress on
 * stderr; the report's location on stdout. Nothing is written until the run is complete (each
 * file atomically), so an interrupted eval leaves no report that looks finished.
 */
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { fail } from '../../core/errors.ts';
import { Progress } from '../../core/progress.ts';
import { REST_POLICIES, type RestPolicy } from '../../engine/student.ts';
import { fmt, pct, writeReport } from '../../eval/report.ts';
import { runEval } from '../../eval/runner.ts';
import { adHocSuite, CONFIGURATIONS, loadSuite, type ConfigurationName, type Suite } from '../../eval/suite.ts';
import { requireDirectoryPath, startBackend, withBackend } from '../common.ts';

export interface EvalArgs {
  model: string;
  adapter?: string;
  suite?: string;
  corpus?: string;
  context?: number;
  maxSeqs?: number;
  stride?: number;
  tokenBudget?: number;
  rest: RestPolicy;
  teacher?: string;
  configurations?: string;
  out: string;
  backend: Parameters<typeof startBackend>[0];
  quiet?: boolean;
  workers?: number;
}

/** The suite the flags describe: --suite (name or file), or the ad-hoc --corpus suite; default smoke. */
export function suiteFromArgs(a: Pick<EvalArgs, 'suite' | 'corpus' | 'context' | 'maxSeqs' | 'stride' | 'tokenBudget'>): Suite {
  if (a.suite !== undefined && a.corpus !== undefined) fail(null, '--suite and --corpus exclude each other (a suite file names its own corpora)');
  if (a.corpus === undefined) {
    for (const [flag, v] of [['--context', a.context], ['--max-seqs', a.maxSeqs], ['--stride', a.stride], ['--token-budget', a.tokenBudget]] as const) {
      if (v !== undefined) fail(null, `${flag} goes with --corpus (a suite file sets its own)`);
    }
    return loadSuite(a.suite ?? 'smoke');
  }
  return adHocSuite({ corpus: a.corpus, context: a.context ?? 128, maxSeqs: a.maxSeqs ?? null, stride: a.stride ?? null, tokenBudget: a.tokenBudget ?? null });
}

function parseConfigurations(text: string | undefined): ConfigurationName[] | null {
  if (text === undefined) return null;
  const names = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) fail(null, '--configurations: give a comma-separated list');
  for (const n of names) if (!CONFIGURATIONS.includes(n as ConfigurationName)) fail(null, `--configurations: unknown '${n}' (known: ${CONFIGURATIONS.join(', ')})`);
  return names as ConfigurationName[];
}

/** The handler's work, callable from tests. Returns the paths written. */
export async function runEvalCommand(args: EvalArgs): Promise<{ json: string; md: string; html: string }> {
  const suite = suiteFromArgs(args);
  const configurations = parseConfigurations(args.configurations);
  requireDirectoryPath(args.out);
  await startBackend(args.backend, args.quiet);
  let progress: Progress | null = null;
  const report = await runEval({
    model: args.model,
    adapter: args.adapter ?? null,
    suite,
    rest: args.rest,
    teacher: args.teacher,
    configurations,
    workers: args.workers ?? null,
    log: (line) => {
      if (!args.quiet) process.stderr.write(`synaxim: ${line}\n`);
    },
    progress: (done, total, tokens, status) => {
      if (args.quiet) return;
      progress ??= new Progress({ label: 'eval', total });
      if (done === 0) return;
      progress.tick(1, tokens, status);
      if (done === total) progress.finish();
    },
  });
  const paths = await writeReport(path.resolve(args.out), report);
  if (!args.quiet) {
    for (const c of report.configurations) {
      process.stderr.write(
        `synaxim:   ${c.name.padEnd(27)} PPL ${fmt(c.ppl).padStart(8)}  KLD ${fmt(c.kld.mean).padStart(8)}  same top p ${pct(c.same_top_p).padStart(7)}\n`,
      );
    }
  }
  process.stdout.write(`report: ${paths.html}\n`);
  return paths;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'eval',
  describe: 'evaluate teacher vs student configurations on a suite; write report.json, report.md, report.html',
  builder: (y) =>
    withBackend(y)
      .option('model', { type: 'string', demandOption: true, describe: 'registry name or model directory (HF, .symb, or a directory holding hf/ and symb-*/)' })
      .option('adapter', { type: 'string', describe: 'symbiotic_adapter directory: adds the adapter and hybrid configurations' })
      .option('suite', { type: 'string', describe: 'built-in suite (smoke, standard) or a suite JSON file [default: smoke]' })
      .option('corpus', { type: 'string', describe: 'ad-hoc suite: JSONL (text field) or plain-text corpus, each document its own sequence' })
      .option('context', { type: 'number', describe: 'ad-hoc suite: tokens per sequence, BOS included [default: 128]' })
      .option('max-seqs', { type: 'number', describe: 'ad-hoc suite: at most this many sequences (first documents)' })
      .option('stride', { type: 'number', describe: 'ad-hoc suite: sliding windows this many tokens apart for long documents' })
      .option('token-budget', { type: 'number', describe: 'ad-hoc suite: at most this many scored tokens' })
      .option('rest', { choices: REST_POLICIES, default: 'engine' as RestPolicy, describe: 'adapter configuration: policy of the layers without adapter' })
      .option('teacher', { type: 'string', describe: "teacher directory, or 'same' to use the student's own weights" })
      .option('configurations', { type: 'string', describe: `only these (comma-separated: ${CONFIGURATIONS.join(', ')}); the teacher always runs` })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory for the report' })
      .option('workers', { type: 'number', describe: 'worker threads, one tfjs engine each [default: 2 with ≥ 2 cores unless the job is tiny, else 1]' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress or summary on stderr (the report path still goes to stdout)' }),
  handler: async (args) => {
    await runEvalCommand(args as unknown as EvalArgs);
  },
};
