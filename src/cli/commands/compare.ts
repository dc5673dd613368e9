/**
 * `synaxim compare REPORT_DIR... --out DIR`: one table and charts across eval runs (the first is
 * the baseline), flagging differences larger than their combined standard errors. Writes
 * compare.json / compare.md / compare.html into DIR; prints where on stdout.
 */
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { fail } from '../../core/errors.ts';
import { compareReportDirs, writeComparison } from '../../eval/compare.ts';

export interface CompareArgs {
  reports: string[];
  out: string;
  quiet?: boolean;
}

export async function runCompareCommand(args: CompareArgs): Promise<{ json: string; md: string; html: string }> {
  if (!args.reports || args.reports.length === 0) fail(null, 'compare: give one or more report directories');
  const { runs, result } = compareReportDirs(args.reports.map(String));
  const paths = await writeComparison(path.resolve(args.out), runs, result);
  if (!args.quiet) {
    for (const w of result.warnings) process.stderr.write(`synaxim: warning: ${w}\n`);
    if (result.flags.length === 0) process.stderr.write(`synaxim: no configuration differs from ${result.baseline} beyond its standard errors\n`);
    for (const f of result.flags) {
      process.stderr.write(`synaxim: ${f.configuration} ${f.run}: ${f.metric} ${f.value.toPrecision(4)} vs ${f.baseline_value.toPrecision(4)} (Δ ${f.diff.toPrecision(3)}, s.e. ${f.combined_stderr.toPrecision(2)})\n`);
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
      .positional('reports', { type: 'string', array: true, describe: 'eval output directories (each with report.json)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory for the comparison' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress or summary on stderr (the report path still goes to stdout)' }),
  handler: async (args) => {
    await runCompareCommand(args as unknown as CompareArgs);
  },
};
