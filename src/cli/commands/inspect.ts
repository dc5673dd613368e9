/** `synaxim inspect DIR [--json]`: describe an HF or .symb model directory. */
import type { CommandModule } from 'yargs';
import { describeModel, renderDescription } from '../../formats/inspect.ts';

interface InspectArgs {
  dir: string;
  json: boolean;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'inspect <dir>',
  describe: 'describe an HF or .symb model directory: tensors, shapes, dtypes, parameter count, bytes, compression vs FP16',
  builder: (y) =>
    y
      .positional('dir', { type: 'string', demandOption: true, describe: 'model directory (HF checkpoint or .symb conversion)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the description as JSON' }),
  handler: (args) => {
    const argv = args as unknown as InspectArgs;
    const d = describeModel(argv.dir);
    process.stdout.write(argv.json ? JSON.stringify(d, null, 2) + '\n' : renderDescription(d));
  },
};
