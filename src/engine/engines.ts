/**
 * Which model a command runs (`--engine`): the softmax-attention teacher, or the SYNAXIM student
 * (its adapter and `--rest` policy), behind one whole-sequence forward and one incremental decoder.
 * Both run on the native engine (ONNX Runtime, src/native) when the backend says so
 * (`nativeForward()`: --backend auto|native|native-cuda), else on tfjs (the exact reference).
 */
import type { Adapter } from '../formats/adapter.ts';
import type { ModelWeights } from '../formats/weights.ts';
import type { RestPolicy } from '../model/policy.ts';
import { nativeForward } from '../runtime/backend.ts';
import { nativePrefill, NativeDecoder } from '../native/model.ts';
import { nativeStudentAttention } from '../native/gatePart.ts';
import type { AttentionPart } from '../native/layerGraph.ts';
import { TeacherDecoder, teacherPrefill } from '../teacher/teacher.ts';
import { StudentDecoder, studentPrefill } from './student.ts';
import type { Decoder } from './generate.ts';

export const ENGINES = ['teacher', 'student'] as const;
export type Engine = (typeof ENGINES)[number];

export interface EngineChoice {
  engine: Engine;
  /** Student: adapter parameters for some layers (null: none). */
  adapter?: Adapter | null;
  /** Student: policy of the layers without adapter parameters. */
  rest?: RestPolicy;
}

/** The native engine's attention part per layer for a choice: undefined = softmax everywhere (the teacher). */
function nativeAttention(weights: ModelWeights, choice: EngineChoice): ((layer: number) => AttentionPart | null) | undefined {
  return choice.engine === 'teacher' ? undefined : nativeStudentAttention(weights.config, { adapter: choice.adapter ?? null, rest: choice.rest });
}

/** One sequence through the chosen engine: logits [T, vocab] and, with `hidden`, hidden.0 … hidden.L. */
export async function engineForward(weights: ModelWeights, ids: number[], choice: EngineChoice, hidden: boolean): Promise<{ logits: Float32Array; hidden?: Float32Array[] }> {
  const r = nativeForward()
    ? await nativePrefill(weights, [ids], { hidden, attention: nativeAttention(weights, choice) })
    : choice.engine === 'teacher'
      ? teacherPrefill(weights, [ids], { hidden })
      : studentPrefill(weights, [ids], { adapter: choice.adapter ?? null, rest: choice.rest, hidden });
  return { logits: r.logits[0]!, hidden: r.hidden?.[0] };
}

/** The native decoder behind the Decoder interface (its sessions are released by `dispose`). */
class NativeEngineDecoder implements Decoder {
  constructor(private readonly native: NativeDecoder) {}
  get position(): number {
    return this.native.position;
  }
  step(id: number): Promise<Float32Array> {
    return this.native.step(id);
  }
  dispose(): Promise<void> {
    return this.native.close();
  }
}

/** The chosen engine's incremental decoder (teacher: KV cache; student: recurrent gate state). Dispose it. */
export async function engineDecoder(weights: ModelWeights, choice: EngineChoice): Promise<Decoder> {
  if (nativeForward()) return new NativeEngineDecoder(await NativeDecoder.create(weights, nativeAttention(weights, choice)));
  return choice.engine === 'teacher' ? new TeacherDecoder(weights) : new StudentDecoder(weights, { adapter: choice.adapter ?? null, rest: choice.rest });
}
