/**
 * `synaxim demo` — the whole chain on the embedded `tiny` model, in about a minute:
 *   1. make the model (deterministic random HF checkpoint + its INT4 .symb) if ./models/tiny is missing;
 *   2. export the initial adapter (`distill --epochs 0`) and train one (`distill`) on layers 0-1
 *      (layers 2-3 stay engine-v0.1.1 in `adapter` and softmax attention in `hybrid`);
 *   3. evaluate both against the teacher (teacher, teacher-on-student-weights, engine, adapter, hybrid);
 *   4. compare the two runs, flagging differences beyond their standard errors.
 */
import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import { withBackend, startBackend } from '../common.ts';
import type { BackendChoice } from '../../core/backend.ts';
import { makeFixture } from './fixture.ts';
import { runDistill } from '../../distill/run.ts';
import { runEvalCommand } from './eval.ts';
import { runCompareCommand } from './compare.ts';

interface DemoArgs {
  out: string;
  models: string;
  epochs: number;
  backend: BackendChoice;
}

export async function runDemo(a: DemoArgs): Promise<void> {
  const started = Date.now();
  const say = (s: string) => process.stderr.write(`\n== ${s}\n`);
  await startBackend(a.backend);
  const modelDir = path.join(a.models, 'tiny');
  if (!fs.existsSync(path.join(modelDir, 'symb-int4', 'config.symb.json'))) {
    say(`1/4 making the tiny model in ${modelDir}`);
    await makeFixture('tiny', modelDir);
  } else say(`1/4 using the tiny model in ${modelDir}`);

  const common = {
    model: modelDir, teacher: null, layers: [0, 1], corpus: null, seqLen: 64, maxSeqs: 96,
    lr: 1e-2, batchSize: 8, input: 'student' as const, mlpGrad: 'exact' as const, rest: 'engine' as const, seed: 0,
    overwrite: true, quiet: false,
  };
  say('2/4 distilling: the initial adapter (--epochs 0) and a trained one');
  const initial = await runDistill({ ...common, epochs: 0, out: path.join(a.out, 'adapter-initial') });
  const trained = await runDistill({ ...common, epochs: a.epochs, out: path.join(a.out, 'adapter-trained') });

  say('3/4 evaluating both against the teacher (smoke suite)');
  const evalArgs = { model: modelDir, rest: 'engine' as const, backend: a.backend, suite: 'smoke', quiet: false };
  await runEvalCommand({ ...evalArgs, adapter: initial.adapterDir, out: path.join(a.out, 'eval-initial') });
  const ev = await runEvalCommand({ ...evalArgs, adapter: trained.adapterDir, out: path.join(a.out, 'eval-trained') });

  say('4/4 comparing the unadapted student, the initial adapter and the trained adapter');
  const cmp = await runCompareCommand({ reports: [path.join(a.out, 'eval-initial'), path.join(a.out, 'eval-trained')], out: path.join(a.out, 'compare') });

  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length);
  process.stdout.write(
    `\ndemo finished in ${((Date.now() - started) / 1000).toFixed(0)} s\n` +
      `  held-out hidden-state MSE (mean over layers 0-1): initial ${mean(trained.heldOutBefore).toPrecision(4)} -> trained ${mean(trained.heldOutAfter).toPrecision(4)}\n` +
      `  trained adapter:   ${trained.adapterDir}\n` +
      `  distill report:    ${trained.reportFile}\n` +
      `  evaluation report: ${ev.html}\n` +
      `  comparison:        ${cmp.html}\n`,
  );
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'demo',
  describe: 'run the whole chain on the embedded tiny model: make it, distill, evaluate, compare with the unadapted student',
  builder: (y) =>
    withBackend(y)
      .option('out', { type: 'string', default: 'out/demo', describe: 'where the adapters and reports go' })
      .option('models', { type: 'string', default: 'models', describe: 'models root (the tiny model is made in <models>/tiny)' })
      .option('epochs', { type: 'number', default: 15, describe: 'training epochs' }),
  handler: async (argv) => runDemo(argv as unknown as DemoArgs),
};
