/**
 * Distill stage 0: the student and the teacher, opened once for the whole run (the teacher is the
 * student's own weights with `--teacher same` or when the registry has no separate teacher).
 */
import path from 'node:path';
import { fail } from '../../util/errors.ts';
import { resolveModel, type ResolvedModel } from '../../data/registry.ts';
import { contentHash } from '../../formats/contentHash.ts';
import { openModel } from '../../formats/openModel.ts';
import type { ModelWeights } from '../../formats/weights.ts';

export interface DistillModels {
  resolved: ResolvedModel;
  student: ModelWeights;
  teacher: ModelWeights;
  teacherSame: boolean;
}

/** Resolve and open both models; the teacher must be the same network as the student. */
export function openDistillModels(model: string, teacherOverride: string | null | undefined): DistillModels {
  const resolved = resolveModel(model, { teacher: teacherOverride ?? undefined });
  const student = openModel(resolved.studentDir);
  const teacherSame = path.resolve(resolved.teacherDir) === path.resolve(resolved.studentDir);
  const teacher = teacherSame ? student : openModel(resolved.teacherDir);
  const m = { resolved, student, teacher, teacherSame };
  try {
    if (!teacherSame) sameShape(student, teacher);
  } catch (e) {
    closeDistillModels(m);
    throw e;
  }
  return m;
}

export function closeDistillModels(m: DistillModels): void {
  m.student.close();
  if (!m.teacherSame) m.teacher.close();
}

/** Content hashes of the two weight directories (the fingerprint's and the export's). */
export function modelHashes(m: DistillModels): { student: string; teacher: string } {
  const student = contentHash(m.resolved.studentDir);
  return { student, teacher: m.teacherSame ? student : contentHash(m.resolved.teacherDir) };
}

function sameShape(student: ModelWeights, teacher: ModelWeights): void {
  const a = student.config;
  const b = teacher.config;
  for (const k of ['hiddenSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'intermediateSize', 'vocabSize'] as const) {
    if (a[k] !== b[k]) fail(teacher.dir, `teacher ${k} ${b[k]} differs from the student's ${a[k]} (${student.dir}): not the same model`);
  }
}
