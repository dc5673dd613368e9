/**
 * `synaxim bench [--quick] [--out reports/bench] [--sections gate,phases,...] [--magnus DIR]`:
 * benchmarks of this machine, every speed a fraction of the machine's own limits measured in the
 * same run (sgemm peak, memory-copy bandwidth: bench/limits.ts; see bench/run.ts and docs/bench.md).
 * Prints the headline table as JSON on stdout; writes bench.json, README.md and charts into --out.
 * Never a timed test: `npm run bench` runs it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { fail } from '../../util/errors.ts';
import { checkOutput } from '../../util/outputs.ts';
import { MAGNUS_RUNS, runBench, SECTIONS, type MagnusRun, type Preset, type Section } from '../../../bench/run.ts';
import { startBackend, withBackend } from '../common.ts';

interface BenchArgs {
  quick: boolean;
  preset?: Preset;
  out: string;
  sections?: string;
  magnus?: string;
  magnusRuns?: string;
  backend: Parameters<typeof startBackend>[0];
  overwrite: boolean;
}

/**
 * --out of bench: an earlier bench output there (bench.json) is updated in place by design (sections
 * not run keep their results); a directory holding anything else needs --overwrite, and then only
 * bench's own files (bench.json, README.md, charts, logs/) are written.
 */
export function checkBenchOutput(out: string, magnus: string | undefined, overwrite: boolean): void {
  const earlier = fs.existsSync(path.join(out, 'bench.json'));
  checkOutput({
    out, flag: '--out', kind: 'dir', overwrite,
    inputs: [{ path: magnus, what: 'Magnus model directory' }],
    isOurs: (name) => earlier && (name === 'bench.json' || name === 'README.md' || name === 'logs' || name.endsWith('.svg')),
  });
}

export function parseSections(text: string | undefined): Section[] | undefined {
  if (text === undefined) return undefined;
  const names = text.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) if (!SECTIONS.includes(n as Section)) fail(null, `--sections: unknown '${n}' (known: ${SECTIONS.join(', ')})`);
  if (names.length === 0) fail(null, '--sections: give a comma-separated list');
  return names as Section[];
}

export function parseMagnusRuns(text: string | undefined): MagnusRun[] | undefined {
  if (text === undefined) return undefined;
  const names = text.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) if (!MAGNUS_RUNS.includes(n as MagnusRun)) fail(null, `--magnus-runs: unknown '${n}' (known: ${MAGNUS_RUNS.join(', ')})`);
  if (names.length === 0) fail(null, '--magnus-runs: give a comma-separated list');
  return names as MagnusRun[];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'bench',
  describe: 'measure the machine\'s limits (sgemm peak, copy bandwidth) and every speed as a fraction of them: native engine, tfjs reference, gate, scaling, workers; write reports/bench/',
  builder: (y) =>
    withBackend(y)
      .option('quick', { type: 'boolean', default: false, describe: 'smaller sizes and fewer repetitions (minutes, not a quarter hour)' })
      .option('preset', { choices: ['full', 'quick', 'tiny'] as const, describe: 'sizes (overrides --quick; tiny is for tests)' })
      .option('out', { type: 'string', default: 'reports/bench', describe: 'output directory (bench.json, README.md, charts)' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'write into a non-empty --out that holds no earlier bench output (other files are kept)' })
      .option('sections', { type: 'string', describe: `only these (comma-separated: ${SECTIONS.join(', ')}); the others keep their previous results` })
      .option('magnus', { type: 'string', describe: 'a `synaxim fixture --shape magnus` directory: adds the layerload and magnus sections (the magnus runs take long)' })
      .option('magnus-runs', { type: 'string', describe: `which Magnus runs (${MAGNUS_RUNS.join(', ')}; default both); the others keep their earlier results` })
      .example('$0 bench --quick', 'the quick benchmarks: JSON on stdout, reports/bench/'),
  handler: async (argv) => {
    const a = argv as unknown as BenchArgs;
    const sections = parseSections(a.sections);
    if (sections && (sections.includes('magnus') || sections.includes('layerload')) && !a.magnus) fail(null, '--sections magnus/layerload need --magnus DIR');
    checkBenchOutput(a.out, a.magnus, a.overwrite);
    await startBackend(a.backend);
    const report = await runBench({
      preset: a.preset ?? (a.quick ? 'quick' : 'full'),
      out: path.resolve(a.out),
      sections,
      magnus: a.magnus ?? null,
      magnusRuns: parseMagnusRuns(a.magnusRuns),
      log: (line) => process.stderr.write(`synaxim bench: ${line}\n`),
    });
    process.stdout.write(JSON.stringify(report.headline, null, 2) + '\n');
    process.stderr.write(`synaxim bench: wrote ${path.join(path.resolve(a.out), 'bench.json')} and README.md\n`);
  },
};
