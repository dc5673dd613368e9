/** `synaxim fixture --shape tiny|magnus|llama-1b OUT` — deterministic random HF + INT4 .symb models. */
import type { CommandModule } from 'yargs';
import { FIXTURE_SHAPES, type FixtureShape, isFixtureEntry, makeFixture } from '../../formats/fixture.ts';
import { checkOutput } from '../../util/outputs.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'fixture <out>',
  describe: 'write a deterministic random model (HF checkpoint + INT4 .symb) of the tiny, Magnus or Llama-3.2-1B shape',
  builder: (y) =>
    y
      .positional('out', { type: 'string', demandOption: true, describe: 'output directory (gets hf/ and symb-int4/)' })
      .option('shape', { choices: FIXTURE_SHAPES, default: 'tiny' as FixtureShape, describe: 'model dimensions' })
      .option('seed', { type: 'number', default: 0 })
      .option('group-size', { type: 'number', describe: 'int4 group size (default 32 for tiny, 128 otherwise)' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace an earlier fixture in OUT, or write hf/ and symb-int4/ into a non-empty OUT (other files are kept)' })
      .example('$0 fixture models/tiny', 'the tiny random model the registry name `tiny` finds')
      .example('$0 fixture --shape magnus /tmp/magnus', 'a random model of Magnus\'s exact shape (about 18 GB) for scale tests'),
  handler: async (args) => {
    checkOutput({ out: String(args.out), flag: 'OUT', kind: 'dir', overwrite: Boolean(args.overwrite), inputs: [], isOurs: isFixtureEntry, marker: 'symb-int4' });
    await makeFixture(args.shape as FixtureShape, String(args.out), { seed: Number(args.seed), groupSize: args['group-size'] as number | undefined });
  },
};
