/** `synaxim import-llama2c MODEL.bin TOKENIZER.bin OUT_DIR`: a llama2.c checkpoint → HF directory. */
import type { CommandModule } from 'yargs';
import { checkOutput } from '../../util/outputs.ts';
import { importLlama2c, LLAMA2C_OUTPUT_FILES } from '../../formats/llama2c.ts';

interface Args {
  model: string;
  tokenizer: string;
  out: string;
  overwrite: boolean;
}

export const command: CommandModule<object, Args> = {
  command: 'import-llama2c <model> <tokenizer> <out>',
  describe: "convert a llama2.c checkpoint (legacy v0 .bin) and its tokenizer.bin into a Hugging Face directory",
  builder: (y) =>
    y
      .positional('model', { type: 'string', demandOption: true, describe: 'llama2.c model file, e.g. stories15M.bin' })
      .positional('tokenizer', { type: 'string', demandOption: true, describe: 'llama2.c tokenizer file, e.g. tokenizer.bin or tok512.bin' })
      .positional('out', { type: 'string', demandOption: true, describe: 'output directory (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace an earlier import in OUT, or write into a non-empty OUT (other files in it are kept)' })
      .example('$0 import-llama2c stories260K.bin tok512.bin models/stories260k', '') as never,
  handler: async (args) => {
    checkOutput({
      out: args.out, flag: 'OUT', kind: 'dir', overwrite: args.overwrite,
      inputs: [{ path: args.model, what: 'input checkpoint' }, { path: args.tokenizer, what: 'input tokenizer' }],
      isOurs: (name) => LLAMA2C_OUTPUT_FILES.includes(name), marker: 'config.json',
    });
    const r = await importLlama2c(args.model, args.tokenizer, args.out, { overwrite: args.overwrite });
    const c = r.config;
    process.stdout.write(
      `wrote ${args.out}: LlamaForCausalLM hidden ${c.dim}, ${c.nLayers} layers, ${c.nHeads}/${c.nKvHeads} heads, ` +
        `MLP ${c.hiddenDim}, vocab ${c.vocabSize} (${c.sharedClassifier ? 'tied' : 'untied'} classifier), ` +
        `${r.tensors} tensors, ${r.merges} merges\n`,
    );
  },
};
