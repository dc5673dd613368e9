/**
 * `synaxim compare REPORT_DIR... --out DIR`: one table and charts across eval runs (the first is
 * the baseline), flagging differences at |z| ≥ 2 (paired per-token tests where the runs scored the
 * same tokens; see src/eval/compare.ts). Writes
 * compare.json / compare.md / compare.html into DIR; prints where on stdout.
 */
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { fail } from '../../util/errors.ts';
import { checkOutput } from '../../util/outputs.ts';
import { compareReportDirs, writeComparison } from '../../eval/compare.ts';

export interface CompareArgs {
  reports: string[];
  out: string;
  quiet?: boolean;
  /** Replace an earlier comparison in --out (other files there are kept). */
  overwrite?: boolean;
}

/** What compare writes into --out; anything else there is the user's. */
export function isCompareOutputEntry(name: string): boolean {
  return ['compare.json', 'compare.md', 'compare.html'].includes(name);
}

export async function runCompareCommand(args: CompareArgs): Promise<{ json: string; md: string; html: string }> {
  if (!args.reports || args.reports.length === 0) fail(null, 'compare: give one or more report directories');
  checkOutput({
    out: args.out, flag: '--out', kind: 'dir', overwrite: args.overwrite ?? false,
    inputs: args.reports.map((r) => ({ path: String(r), what: 'report it compares' })),
    isOurs: isCompareOutputEntry, marker: 'compare.json',
  });
  const { runs, result } = compareReportDirs(args.reports.map(String));
  const paths = await writeComparison(path.resolve(args.out), runs, result);
  if (!args.quiet) {
    for (const w of result.warnings) process.stderr.write(`synaxim: warning: ${w}\n`);
    if (result.flags.length === 0 && result.runs.length > 1) process.stderr.write(`synaxim: no configuration differs from ${result.baseline} at |z| ≥ ${result.test.z_threshold}\n`);
    for (const f of result.flags) {
      process.stderr.write(
        `synaxim: ${f.direction.toUpperCase()}: ${f.configuration} in ${f.run}: ${f.metric} ${f.value.toPrecision(4)} vs ${f.baseline_value.toPrecision(4)} (Δ ${f.diff.toPrecision(3)}, z ${f.z.toPrecision(3)}, ${f.test})\n`,
      );
    }
  }
  process.stdout.write(`comparison: ${paths.html}\n`);
  return paths;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'compare <reports..>',
  describe: 'compare eval reports (first = baseline); write compare.json, compare.md, compare.html',
  builder: (y) =>
    y
      .positional('reports', { type: 'string', array: true, default: undefined, describe: 'eval output directories (each with report.json); the first is the baseline' })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory for the comparison' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace an earlier comparison in --out (other files there are kept)' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress or summary on stderr (the report path still goes to stdout)' })
      .example('$0 compare out/eval-noadapter out/eval-adapter --out out/compare', 'the first run is the baseline; differences at paired |z| >= 2 are flagged'),
  handler: async (args) => {
    await runCompareCommand(args as unknown as CompareArgs);
  },
};
