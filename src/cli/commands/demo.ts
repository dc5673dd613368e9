/**
 * `synaxim demo` — the whole chain on a tiny model the demo trains itself, in about a minute:
 * train it on the built-in stories, distill an initial and a trained adapter, evaluate both against
 * the teacher, compare them, and report the end-to-end figures (src/demo/run.ts does the work).
 */
import type { CommandModule } from 'yargs';
import { withBackend, startBackend } from '../common.ts';
import { checkOutput } from '../../util/outputs.ts';
import type { BackendChoice } from '../../runtime/backend.ts';
import { DEMO_OUTPUTS, runDemoChain, type DemoResult } from '../../demo/run.ts';
import { DEFAULT_TRAIN_TINY } from '../../demo/tinyModel.ts';
import { runEvalCommand } from './eval.ts';
import { runCompareCommand } from './compare.ts';

interface DemoArgs {
  out: string;
  epochs: number;
  trainSteps: number;
  backend: BackendChoice;
  overwrite?: boolean;
}

export async function runDemo(a: DemoArgs): Promise<DemoResult> {
  // The demo's --out holds only its own outputs (the model it trains included).
  checkOutput({ out: a.out, flag: '--out', kind: 'dir', overwrite: a.overwrite ?? false, inputs: [], isOurs: (n) => DEMO_OUTPUTS.includes(n), marker: 'compare' });
  await startBackend(a.backend);
  const r = await runDemoChain({
    out: a.out,
    epochs: a.epochs,
    trainSteps: a.trainSteps,
    say: (s) => process.stderr.write(`\n== ${s}\n`),
    evaluate: (model, adapter, out) => runEvalCommand({ model, adapter, rest: 'engine', backend: a.backend, suite: 'smoke', quiet: false, overwrite: true, out }),
    compare: (reports, out) => runCompareCommand({ reports, out, overwrite: true }),
  });
  process.stdout.write(
    `\n${r.summary}\n` +
      `  trained adapter:   ${r.reports.adapter}\n` +
      `  distill report:    ${r.reports.distill}\n` +
      `  evaluation report: ${r.reports.trained}\n` +
      `  comparison:        ${r.reports.compare}\n`,
  );
  return r;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'demo',
  describe: 'run the whole chain on a tiny model it trains itself: train, distill, evaluate, compare, say whether the adapter helped',
  builder: (y) =>
    withBackend(y)
      .option('out', { type: 'string', default: 'out/demo', describe: 'where the model, adapters and reports go' })
      .option('epochs', { type: 'number', default: 15, describe: 'distillation epochs' })
      .option('train-steps', { type: 'number', default: DEFAULT_TRAIN_TINY.steps, describe: 'optimizer steps training the tiny model' })
      .option('overwrite', { type: 'boolean', default: false, describe: "replace an earlier demo's outputs in --out" })
      .example('$0 demo', 'the whole chain on a tiny model it trains itself (about a minute)')
      .example('$0 demo --out /tmp/demo --train-steps 300 --overwrite', 'train the tiny model longer; replace an earlier demo there'),
  handler: async (argv) => {
    await runDemo(argv as unknown as DemoArgs);
  },
};
