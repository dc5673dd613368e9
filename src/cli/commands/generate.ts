/**
 * `synaxim generate`: decode a continuation of a prompt one token at a time (teacher: KV cache;
 * student: recurrent state), greedy at temperature 0, else llama2.c's seeded temperature/top-p
 * sampler. Streams text as it is produced, or with --json prints
 * `{"ids": [...prompt and generated...], "text": ...}` once at the end. Stops at EOS (which is
 * kept in `ids`), after --max-tokens, or at the model's maximum position.
 */
import type { CommandModule } from 'yargs';
import { fail } from '../../util/errors.ts';
import { resolveModel } from '../../data/registry.ts';
import { Sampler } from '../../model/sampling.ts';
import { openModel } from '../../formats/openModel.ts';
import { loadTokenizer, type Tokenizer } from '../../formats/tokenizer.ts';
import { readAdapterForModel, type Adapter } from '../../formats/adapter.ts';
import { validateIds } from '../../model/sequence.ts';
import { REST_POLICIES, type RestPolicy } from '../../model/policy.ts';
import { engineDecoder, ENGINES, type Engine } from '../../engine/engines.ts';
import { generateIds, type Decoder, type StopReason } from '../../engine/generate.ts';
import { studentPolicyLine } from '../../engine/policyLine.ts';
import { parseIdList, startBackend, withBackend } from '../common.ts';
import { backendInfo } from '../../runtime/backend.ts';

interface GenerateArgs {
  model: string;
  prompt?: string;
  promptIds?: string;
  maxTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  json: boolean;
  engine: Engine;
  adapter?: string;
  allowOtherBase?: boolean;
  rest: RestPolicy;
  backend: Parameters<typeof startBackend>[0];
}

export interface GenerateResult {
  ids: number[];
  text: string | null;
  promptLength: number;
  stop: StopReason;
  backend: string;
  engine: Engine;
  tokensPerSecond: number;
}

/** The handler's work, callable from tests; `write` receives what goes to stdout. */
export async function runGenerate(args: GenerateArgs, write: (s: string) => void = (s) => void process.stdout.write(s)): Promise<GenerateResult> {
  if (args.prompt === undefined && args.promptIds === undefined) fail(null, 'give --prompt TEXT or --prompt-ids 1,2,...');
  if (args.prompt !== undefined && args.promptIds !== undefined) fail(null, '--prompt and --prompt-ids are mutually exclusive');
  if (!Number.isInteger(args.maxTokens) || args.maxTokens < 0) fail(null, `--max-tokens: ${args.maxTokens} must be a non-negative integer`);
  if (args.engine === 'teacher' && args.adapter !== undefined) fail(null, '--adapter needs --engine student');
  const sampler = new Sampler({ temperature: args.temperature, topP: args.topP, seed: args.seed });

  await startBackend(args.backend, args.json);
  const backend = backendInfo().backend; // 'native' when the native engine decodes
  const resolved = resolveModel(args.model);
  const weights = openModel(args.engine === 'teacher' ? resolved.teacherDir : resolved.studentDir);
  const c = weights.config;
  let decoder: Decoder | null = null;
  try {
    const tokenizer: Tokenizer | null = resolved.tokenizerDir
      ? await loadTokenizer(resolved.tokenizerDir, { bosTokenId: c.bosTokenId, eosTokenIds: c.eosTokenIds, modelVocabSize: c.vocabSize })
      : null;
    let promptIds: number[];
    if (args.promptIds !== undefined) promptIds = parseIdList(args.promptIds, '--prompt-ids');
    else {
      if (!tokenizer) fail(null, `--prompt: model ${weights.dir} has no tokenizer; use --prompt-ids`);
      promptIds = tokenizer.encode(args.prompt!);
      if (promptIds.length === 0) fail(null, '--prompt: the prompt encodes to no tokens and the tokenizer adds no BOS; use --prompt-ids');
    }
    validateIds(c, promptIds, args.promptIds !== undefined ? '--prompt-ids' : '--prompt');
    if (promptIds.length > c.maxPositionEmbeddings) fail(null, `prompt of ${promptIds.length} tokens is longer than the model's ${c.maxPositionEmbeddings} positions`);
    const eosIds = [...new Set([...c.eosTokenIds, ...(tokenizer?.eosIds ?? [])])];

    let adapter: Adapter | null = null;
    if (args.engine === 'student') {
      adapter = args.adapter !== undefined ? readAdapterForModel(args.adapter, weights, args.allowOtherBase ?? false) : null;
      process.stderr.write(studentPolicyLine('student', c.numLayers, adapter, args.rest));
    }
    decoder = await engineDecoder(weights, { engine: args.engine, adapter, rest: args.rest });
    const stream = !args.json;
    if (stream) write(tokenizer ? tokenizer.decode(promptIds) : promptIds.join(' '));
    const t0 = performance.now();
    const { ids, stop } = await generateIds(decoder, promptIds, {
      maxTokens: args.maxTokens,
      sampler,
      eosIds,
      maxPositions: c.maxPositionEmbeddings,
      onToken: stream ? (id, prev) => write(tokenizer ? tokenizer.decodeToken(prev, id) : ` ${id}`) : undefined,
    });
    const seconds = (performance.now() - t0) / 1000;
    const generated = ids.length - promptIds.length;
    const tokensPerSecond = (promptIds.length + generated) / Math.max(seconds, 1e-9);
    const text = tokenizer ? tokenizer.decode(ids) : null;
    if (stream) write('\n');
    else write(JSON.stringify({ ids, text }) + '\n');
    if (stop === 'max_position') process.stderr.write(`synaxim: stopped at the model's maximum of ${c.maxPositionEmbeddings} positions\n`);
    if (!args.json) {
      process.stderr.write(`synaxim: ${generated} tokens generated (${args.engine}, ${backend}, stop: ${stop}), ${tokensPerSecond.toFixed(1)} tokens/s\n`);
    }
    return { ids, text, promptLength: promptIds.length, stop, backend, engine: args.engine, tokensPerSecond };
  } finally {
    await decoder?.dispose?.();
    weights.close();
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'generate',
  describe: 'generate text from a prompt (greedy at temperature 0, else seeded top-p sampling)',
  builder: (y) =>
    withBackend(y)
      .option('model', { type: 'string', demandOption: true, describe: 'model directory (HF or .symb) or registry name' })
      .option('prompt', { type: 'string', describe: 'prompt text (needs a tokenizer; BOS added as the tokenizer config says)' })
      .option('prompt-ids', { type: 'string', describe: 'prompt as comma-separated token ids, e.g. 1 for BOS alone' })
      .option('max-tokens', { type: 'number', default: 128, describe: 'tokens to generate at most' })
      .option('temperature', { type: 'number', default: 0, describe: '0: greedy; otherwise softmax temperature' })
      .option('top-p', { type: 'number', default: 0.9, describe: 'nucleus sampling mass (≤0 or ≥1: whole distribution)' })
      .option('seed', { type: 'number', default: 42, describe: 'sampler seed (llama2.c xorshift*), ≥ 1' })
      .option('json', { type: 'boolean', default: false, describe: 'print {"ids": [...], "text": ...} at the end instead of streaming' })
      .option('engine', { choices: ENGINES, default: 'teacher' as Engine, describe: 'softmax-attention teacher (KV cache) or SYNAXIM student (recurrent)' })
      .option('adapter', { type: 'string', describe: 'student: symbiotic_adapter directory' })
      .option('allow-other-base', { type: 'boolean', describe: 'apply an adapter whose recorded base model is not this model (warns)' })
      .option('rest', { choices: REST_POLICIES, default: 'engine' as RestPolicy, describe: 'student: policy for layers without an adapter' })
      .conflicts('prompt', 'prompt-ids')
      .example('$0 generate --model stories260k --prompt "Once upon a time" --max-tokens 64', 'greedy continuation by the teacher')
      .example('$0 generate --model stories260k --prompt "Once upon a time" --engine student --adapter out/distill-stories260k-L0-1', 'the same by the student (adapted layers 0-1, the rest engine-v0.1.1)'),
  handler: async (args) => {
    await runGenerate(args as unknown as GenerateArgs);
  },
};
