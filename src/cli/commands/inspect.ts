/** `synaxim inspect DIR [--json]`: describe an HF or .symb model directory, or an adapter directory. */
import type { CommandModule } from 'yargs';
import { describeModel, renderDescription } from '../../formats/inspect.ts';
import { describeAdapter, isAdapterDir, renderAdapterDescription } from '../../formats/inspectAdapter.ts';

interface InspectArgs {
  dir: string;
  json: boolean;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'inspect <dir>',
  describe: 'describe an HF or .symb model directory (tensors, shapes, dtypes, parameter count, bytes, compression vs FP16) or an adapter directory (format, base model, per-layer values)',
  builder: (y) =>
    y
      .positional('dir', { type: 'string', demandOption: true, describe: 'model directory (HF checkpoint or .symb conversion) or symbiotic_adapter directory (ours or the SYNAXIM scripts\')' })
      .option('json', { type: 'boolean', default: false, describe: 'print the description as JSON' })
      .example('$0 inspect models/stories260k/symb-int4', 'describe a model directory: format, shapes, storage')
      .example('$0 inspect out/demo/adapter-trained/symbiotic_adapter --json', 'describe an adapter as JSON'),
  handler: (args) => {
    const argv = args as unknown as InspectArgs;
    if (isAdapterDir(argv.dir)) {
      const a = describeAdapter(argv.dir);
      process.stdout.write(argv.json ? JSON.stringify(a, null, 2) + '\n' : renderAdapterDescription(a));
      return;
    }
    const d = describeModel(argv.dir);
    process.stdout.write(argv.json ? JSON.stringify(d, null, 2) + '\n' : renderDescription(d));
  },
};
