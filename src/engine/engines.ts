/**
 * Which model a command runs (`--engine`): the softmax-attention teacher, or the SYNAXIM student
 * (its adapter and `--rest` policy), behind one whole-sequence forward and one incremental decoder.
 */
import type { Adapter } from '../formats/adapter.ts';
import type { ModelWeights } from '../formats/weights.ts';
import type { RestPolicy } from '../model/policy.ts';
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

/** One sequence through the chosen engine: logits [T, vocab] and, with `hidden`, hidden.0 … hidden.L. */
export function engineForward(weights: ModelWeights, ids: number[], choice: EngineChoice, hidden: boolean): { logits: Float32Array; hidden?: Float32Array[] } {
  const r =
    choice.engine === 'teacher'
      ? teacherPrefill(weights, [ids], { hidden })
      : studentPrefill(weights, [ids], { adapter: choice.adapter ?? null, rest: choice.rest, hidden });
  return { logits: r.logits[0]!, hidden: r.hidden?.[0] };
}

/** The chosen engine's incremental decoder (teacher: KV cache; student: recurrent gate state). Dispose it. */
export function engineDecoder(weights: ModelWeights, choice: EngineChoice): Decoder {
  return choice.engine === 'teacher' ? new TeacherDecoder(weights) : new StudentDecoder(weights, { adapter: choice.adapter ?? null, rest: choice.rest });
}
