/** `synaxim convert HF_DIR OUT_DIR --quantize int4|int8|fp16|fp32 [--group-size 128]` */
import type { CommandModule } from 'yargs';
import { checkOutput } from '../../util/outputs.ts';
import { convertHfToSymb, DEFAULT_GROUP_SIZE, isSymbOutputEntry } from '../../formats/convert.ts';
import { SYMB_CONFIG_FILE } from '../../formats/symbModel.ts';
import { SYMB_METHODS, type SymbMethod } from '../../formats/symb.ts';

interface ConvertArgs {
  hf_dir: string;
  out_dir: string;
  quantize: SymbMethod;
  'group-size': number;
  quiet: boolean;
  overwrite: boolean;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'convert <hf_dir> <out_dir>',
  describe: 'convert a Hugging Face checkpoint directory to a SYNAXIM .symb directory (byte-compatible with the reference converter)',
  builder: (y) =>
    y
      .positional('hf_dir', { type: 'string', demandOption: true, describe: 'Hugging Face model directory (config.json + safetensors)' })
      .positional('out_dir', { type: 'string', demandOption: true, describe: 'output .symb directory (written atomically)' })
      .option('quantize', { choices: SYMB_METHODS, demandOption: true, describe: 'weight encoding (1-D tensors and final_norm are always fp16)' })
      .option('group-size', { type: 'number', default: DEFAULT_GROUP_SIZE, describe: 'int4 elements per scale group' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no per-tensor progress lines' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace an earlier conversion in OUT_DIR, or write into a non-empty OUT_DIR (other files in it are kept)' })
      .example('$0 convert models/stories260k/hf models/stories260k/symb-int4 --quantize int4 --group-size 32', 'an HF checkpoint -> INT4 .symb (what `--model stories260k` then uses as its student)'),
  handler: async (args) => {
    const argv = args as unknown as ConvertArgs;
    checkOutput({
      out: argv.out_dir, flag: 'OUT_DIR', kind: 'dir', overwrite: argv.overwrite,
      inputs: [{ path: argv.hf_dir, what: 'input checkpoint directory' }], isOurs: isSymbOutputEntry, marker: SYMB_CONFIG_FILE,
    });
    // Pure host arithmetic: no compute backend is involved.
    const result = await convertHfToSymb(argv.hf_dir, argv.out_dir, {
      quantize: argv.quantize,
      groupSize: argv['group-size'],
      overwrite: argv.overwrite,
      log: argv.quiet ? undefined : (line) => process.stderr.write(`  ${line}\n`),
    });
    const g = result.method === 'int4' ? ` (group size ${result.groupSize})` : '';
    process.stdout.write(
      `wrote ${result.outDir}: ${result.tensors} tensors, ${result.parameters.toLocaleString('en-US')} parameters, ` +
        `${result.bytes.toLocaleString('en-US')} bytes as ${result.method}${g}` +
        `${result.tokenizerFiles.length ? `, tokenizer: ${result.tokenizerFiles.join(', ')}` : ', no tokenizer files'} in ${result.seconds.toFixed(1)} s\n`,
    );
  },
};
