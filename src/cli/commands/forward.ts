/**
 * `synaxim forward`: run a model over one token sequence and write its logits (and, with
 * --hidden, the residual stream before the first layer and after every layer) to a safetensors
 * file. This is the contract scripts and the other issues' tests compare against:
 *   logits [T, vocab] F32; hidden.0 (embedding output) … hidden.L (after layer L) [T, hidden] F32.
 */
import type { CommandModule } from 'yargs';
import { fail } from '../../util/errors.ts';
import { checkOutput } from '../../util/outputs.ts';
import { modelInputs, resolveModel } from '../../data/registry.ts';
import { openModel } from '../../formats/openModel.ts';
import { writeSafetensors, type StTensorToWrite } from '../../formats/safetensors.ts';
import { readAdapterForModel, type Adapter } from '../../formats/adapter.ts';
import { validateIds } from '../../model/sequence.ts';
import { REST_POLICIES, type RestPolicy } from '../../model/policy.ts';
import { engineForward, ENGINES, type Engine } from '../../engine/engines.ts';
import { studentPolicyLine } from '../../engine/policyLine.ts';
import { parseIdList, startBackend, withBackend } from '../common.ts';
import { backendInfo } from '../../runtime/backend.ts';

interface ForwardArgs {
  model: string;
  ids: string;
  out: string;
  hidden: boolean;
  engine: Engine;
  adapter?: string;
  allowOtherBase?: boolean;
  rest: RestPolicy;
  backend: Parameters<typeof startBackend>[0];
  overwrite?: boolean;
}

/** The handler's work, callable from tests. Returns what was written. */
export async function runForward(args: ForwardArgs): Promise<{ out: string; tokens: number; tensors: string[] }> {
  if (args.engine === 'teacher' && args.adapter !== undefined) fail(null, '--adapter needs --engine student');
  const ids = parseIdList(args.ids, '--ids');
  checkOutput({
    out: args.out, flag: '--out', kind: 'file', overwrite: args.overwrite ?? false,
    inputs: [...modelInputs(args.model), { path: args.adapter, what: 'adapter directory' }],
  });
  await startBackend(args.backend);
  const backend = backendInfo().backend; // 'native' when the native engine runs the forward pass
  const resolved = resolveModel(args.model);
  const dir = args.engine === 'teacher' ? resolved.teacherDir : resolved.studentDir;
  const weights = openModel(dir);
  try {
    validateIds(weights.config, ids, '--ids');
    let adapter: Adapter | null = null;
    if (args.engine === 'student') {
      adapter = args.adapter !== undefined ? readAdapterForModel(args.adapter, weights, args.allowOtherBase ?? false) : null;
      process.stderr.write(studentPolicyLine('student', weights.config.numLayers, adapter, args.rest));
    }
    const t0 = performance.now();
    const r = await engineForward(weights, ids, { engine: args.engine, adapter, rest: args.rest }, args.hidden);
    const seconds = (performance.now() - t0) / 1000;
    const { vocabSize: V, hiddenSize: D } = weights.config;
    const T = ids.length;
    const tensors: Record<string, StTensorToWrite> = { logits: { dtype: 'F32', shape: [T, V], data: r.logits } };
    if (args.hidden) {
      if (!r.hidden) throw new Error(`engine ${args.engine} returned no hidden states`);
      r.hidden.forEach((h, l) => (tensors[`hidden.${l}`] = { dtype: 'F32', shape: [T, D], data: h }));
    }
    writeSafetensors(args.out, tensors, {
      engine: args.engine,
      model: dir,
      backend,
      input_ids: ids.join(','),
      ...(args.engine === 'student' ? { rest: args.rest, adapter: args.adapter ?? '' } : {}),
    });
    process.stderr.write(`synaxim: forward ${T} tokens (${args.engine}) in ${seconds.toFixed(3)} s -> ${args.out}\n`);
    return { out: args.out, tokens: T, tensors: Object.keys(tensors) };
  } finally {
    weights.close();
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'forward',
  describe: 'run a model over token ids; write logits (and hidden states) to a safetensors file',
  builder: (y) =>
    withBackend(y)
      .option('model', { type: 'string', demandOption: true, describe: 'model directory (HF or .symb) or registry name' })
      .option('ids', { type: 'string', demandOption: true, describe: 'comma-separated token ids, e.g. 1,5,9' })
      .option('out', { type: 'string', demandOption: true, describe: 'output .safetensors file' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace an existing --out file' })
      .option('hidden', { type: 'boolean', default: false, describe: 'also write hidden.0 … hidden.L [T, hidden]' })
      .option('engine', { choices: ENGINES, default: 'teacher' as Engine, describe: 'softmax-attention teacher or SYNAXIM student' })
      .option('adapter', { type: 'string', describe: 'student: symbiotic_adapter directory' })
      .option('allow-other-base', { type: 'boolean', describe: 'apply an adapter whose recorded base model is not this model (warns)' })
      .option('rest', { choices: REST_POLICIES, default: 'engine' as RestPolicy, describe: 'student: policy for layers without an adapter' })
      .example('$0 forward --model stories260k --ids 1,403,407 --out logits.safetensors --hidden', 'teacher logits and hidden states for three tokens')
      .example('$0 forward --model stories260k --ids 1,403,407 --engine student --adapter out/distill-stories260k-L0-1 --out student.safetensors', 'the same through the student with a trained adapter'),
  handler: async (args) => {
    await runForward(args as unknown as ForwardArgs);
  },
};
