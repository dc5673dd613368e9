/**
 * `synaxim eval --model M [--adapter DIR] [--suite S | --corpus FILE --context N --max-seqs N]
 *   [--rest engine] --out DIR [--backend]`: run the teacher and the student configurations side by
 * side on the same tokens and write report.json / report.md / report.html into DIR. Progress on
 * stderr; the report's location on stdout. Nothing is written until the run is complete (each
 * file atomically), so an interrupted eval leaves no report that looks finished.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { fail } from '../../util/errors.ts';
import { cumulativeProgress } from '../../util/progress.ts';
import { REST_POLICIES, type RestPolicy } from '../../engine/student.ts';
import { fmt, pct, writeReport } from '../../eval/report.ts';
import { runEval } from '../../eval/runner.ts';
import { adHocSuite, CONFIGURATION_NAMES_HELP, CONFIGURATIONS, loadSuite, parseConfigurationName, parseWindowFlag, type ConfigurationName, type Suite } from '../../data/suite.ts';
import { modelLayerCount, requireDirectoryPath, startBackend, withBackend } from '../common.ts';
import { readAdapter } from '../../formats/adapter.ts';
import { studentPolicyLine } from '../../engine/policyLine.ts';
import { encodePerToken, PER_TOKEN_FILE } from '../../eval/perToken.ts';
import { checkOutput } from '../../util/outputs.ts';
import { modelInputs } from '../../data/registry.ts';
import { ensureDir } from '../../util/atomic.ts';
import type { PerTokenValues } from '../../eval/stats.ts';

/** The flags that choose what is scored (see withSuiteOptions). */
export interface SuiteFlags {
  suite?: string;
  corpus?: string;
  context?: number;
  maxSeqs?: number;
  stride?: number;
  tokenBudget?: number;
}

export interface EvalArgs extends SuiteFlags {
  model: string;
  adapter?: string;
  allowOtherBase?: boolean;
  rest: RestPolicy;
  teacher?: string;
  configurations?: string;
  /** `W[,W2…]` window baselines (plus the same-memory one), or `none`. */
  window?: string;
  out: string;
  backend: Parameters<typeof startBackend>[0];
  quiet?: boolean;
  workers?: number;
  teacherLogits?: string;
  /** Replace an earlier report in --out (other files there are kept). */
  overwrite?: boolean;
}

/** What an eval writes into --out; anything else there is the user's. */
export function isEvalOutputEntry(name: string): boolean {
  return ['report.json', 'report.md', 'report.html', PER_TOKEN_FILE].includes(name);
}

/** The suite the flags describe: --suite (name or file), or the ad-hoc --corpus suite; default smoke. */
export function suiteFromArgs(a: SuiteFlags): Suite {
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
  for (const n of names) if (!parseConfigurationName(n)) fail(null, `--configurations: unknown '${n}' (known: ${CONFIGURATION_NAMES_HELP})`);
  return names as ConfigurationName[];
}

/** The handler's work, callable from tests. Returns the paths written. */
export async function runEvalCommand(args: EvalArgs): Promise<{ json: string; md: string; html: string }> {
  const suite = suiteFromArgs(args);
  const configurations = parseConfigurations(args.configurations);
  const windows = args.window === undefined ? null : parseWindowFlag(String(args.window));
  requireDirectoryPath(args.out);
  checkOutput({
    out: args.out, flag: '--out', kind: 'dir', overwrite: args.overwrite ?? false,
    inputs: [
      ...modelInputs(args.model, args.teacher),
      { path: args.adapter, what: 'adapter directory' },
      { path: suite.source !== 'flags' && fs.existsSync(suite.source) ? suite.source : null, what: 'suite file' },
      ...suite.corpora.map((c) => ({ path: c.kind === 'file' ? c.path : null, what: 'corpus' })),
      { path: args.teacherLogits && fs.existsSync(args.teacherLogits) ? args.teacherLogits : null, what: 'teacher log-prob file' },
    ],
    isOurs: isEvalOutputEntry, marker: 'report.json',
  });
  await startBackend(args.backend, args.quiet);
  if (!args.quiet) {
    // Which layers run what in each gated configuration (the teacher ones are softmax throughout).
    const numLayers = modelLayerCount(args.model, args.teacher);
    const adapter = args.adapter ? readAdapter(args.adapter) : null;
    const runs = (name: ConfigurationName) => ((configurations ?? suite.configurations ?? CONFIGURATIONS) as readonly string[]).includes(name);
    if (runs('engine')) process.stderr.write(studentPolicyLine('engine', numLayers, null, 'engine'));
    if (adapter && runs('adapter')) process.stderr.write(studentPolicyLine('adapter', numLayers, adapter, args.rest));
    // (hybrid with an adapter on every layer would be adapter again: runEval skips it and says why)
    const everyLayer = adapter !== null && Array.from({ length: numLayers }, (_, l) => l).every((l) => adapter.layers.includes(l));
    if (adapter && runs('hybrid') && !(everyLayer && runs('adapter'))) process.stderr.write(studentPolicyLine('hybrid', numLayers, adapter, 'teacher'));
  }
  const perToken = new Map<string, PerTokenValues>();
  const report = await runEval({
    model: args.model,
    adapter: args.adapter ?? null,
    allowOtherBase: args.allowOtherBase ?? false,
    suite,
    rest: args.rest,
    teacher: args.teacher,
    configurations,
    windows,
    workers: args.workers ?? null,
    teacherLogits: args.teacherLogits ?? null,
    perToken: (name, values) => perToken.set(name, values),
    log: (line) => {
      if (!args.quiet) process.stderr.write(`synaxim: ${line}\n`);
    },
    // (per layer of every batch, in tokens × layers: see runEval)
    progress: args.quiet ? undefined : cumulativeProgress('eval'),
  });
  // Per-token figures for paired comparisons (`synaxim compare`), tied to report.json by the tokens hash.
  const outDir = path.resolve(args.out);
  const outExisted = fs.existsSync(outDir);
  let paths: Awaited<ReturnType<typeof writeReport>>;
  try {
    ensureDir(outDir); // (says "read-only file system" where a recursive mkdir says ENOENT)
    paths = await writeReport(outDir, report, [{ name: PER_TOKEN_FILE, data: encodePerToken(report.tokens.hash, perToken) }]);
  } catch (e) {
    // Disk full, read-only…: the earlier report stays as it was (writeFilesAtomic); drop a directory this run made.
    if (!outExisted && fs.existsSync(outDir) && fs.readdirSync(outDir).length === 0) fs.rmdirSync(outDir);
    throw e;
  }
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

/** The flags that choose what is scored (shared by eval and sweep): a suite, or an ad-hoc corpus suite. */
export function withSuiteOptions<T>(y: Argv<T>) {
  return y
      .option('suite', { type: 'string', describe: 'built-in suite (smoke, standard) or a suite JSON file [default: smoke]' })
      .option('corpus', { type: 'string', describe: 'ad-hoc suite: JSONL (text field) or plain-text corpus, each document its own sequence' })
      .option('context', { type: 'number', describe: 'ad-hoc suite: tokens per sequence, BOS included [default: 128]' })
      .option('max-seqs', { type: 'number', describe: 'ad-hoc suite: at most this many sequences (first documents)' })
      .option('stride', { type: 'number', describe: 'ad-hoc suite: sliding windows this many tokens apart for long documents' })
      .option('token-budget', { type: 'number', describe: 'ad-hoc suite: at most this many scored tokens' });
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'eval',
  describe: 'evaluate teacher vs student configurations on a suite; write report.json, report.md, report.html',
  builder: (y) =>
    withSuiteOptions(withBackend(y))
      .option('model', { type: 'string', demandOption: true, describe: 'registry name or model directory (HF, .symb, or a directory holding hf/ and symb-*/)' })
      .option('adapter', { type: 'string', describe: 'symbiotic_adapter directory (ours or the SYNAXIM scripts\' .pt): adds the adapter and hybrid configurations' })
      .option('allow-other-base', { type: 'boolean', describe: 'apply an adapter whose recorded base model is not this model (warns; recorded in the report)' })
      .option('rest', { choices: REST_POLICIES, default: 'engine' as RestPolicy, describe: 'adapter configuration: policy of the layers without adapter' })
      .option('teacher', { type: 'string', describe: "teacher directory, or 'same' to use the student's own weights" })
      .option('configurations', { type: 'string', describe: `only these (comma-separated: ${CONFIGURATION_NAMES_HELP}); the teacher always runs` })
      .option('window', {
        type: 'string',
        describe: "window baselines window-W (every layer softmax over the last W positions, student's weights): W[,W2…] adds them to the same-memory window that runs by default; 'none' runs no window",
      })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory for the report' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace an earlier report in --out (other files there are kept)' })
      .option('teacher-logits', {
        type: 'string',
        describe: "keep the teacher's log-probs in FILE: read when FILE exists (made for this teacher, tokenizer and suite), else computed and written; later evals against the same teacher skip it",
      })
      .option('workers', { type: 'number', describe: 'worker threads, one tfjs engine each [default: 2 with ≥ 2 cores unless the job is tiny, else 1]' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress or summary on stderr (the report path still goes to stdout)' })
      .example('$0 eval --model stories260k --adapter out/distill-stories260k-L0-1 --out out/eval-adapter', 'teacher, engine, adapter and hybrid on the smoke suite')
      .example('$0 eval --model stories260k --adapter A --teacher-logits teacher.tlp --out out/eval-a', 'the first run computes the teacher and keeps its log-probs; the next reads them')
      .example('$0 eval --model stories260k --corpus wiki.test.raw --context 512 --out out/eval-wiki', 'your own corpus (plain text or JSONL with a text field)'),
  handler: async (args) => {
    await runEvalCommand(args as unknown as EvalArgs);
  },
};
