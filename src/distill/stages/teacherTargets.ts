/**
 * Distill stage 3: what the student is trained towards, from the teacher cache (computed and stored
 * on a miss) — the teacher's hidden states around each trained layer and, for a KL phase, its
 * next-token log-probs.
 */
import { fail } from '../../util/errors.ts';
import { backendMemoryLimit, layerWeightBytes } from '../../runtime/backend.ts';
import { currentTeacherEngine, teacherHiddenStates, teacherLogProbs, type TeacherCacheKey } from '../teacherCache.ts';
import type { RunConfig } from '../runConfig.ts';
import type { DistillData } from './data.ts';
import type { DistillModels } from './models.ts';

export interface TeacherTargets {
  /** hidden.get(i)[s] = the teacher's residual stream i of sequence s. */
  hidden: Map<number, Float32Array[]>;
  /** Next-token log-probs per sequence (runs with a KL phase), else null. */
  logProbs: Float32Array[] | null;
}

/** The teacher runs on this process's forward engine (native under --backend auto|native); so does the MSE training pass (nativePass.ts). */
export async function teacherTargets(rc: RunConfig, m: DistillModels, data: DistillData, teacherHash: string, log: (msg: string) => void): Promise<TeacherTargets> {
  const key: TeacherCacheKey = { modelHash: teacherHash, sequencesHash: data.tok.hash, seqLen: rc.seqLen, engine: currentTeacherEngine() };
  const cache = { root: rc.cacheRoot, useCache: rc.cache, log };
  // Layer l reads hidden.l (--input teacher) and is trained towards hidden.(l+1).
  const needed = new Set<number>();
  for (const l of rc.layers) {
    needed.add(l + 1);
    if (rc.input === 'teacher') needed.add(l);
  }
  const th = await teacherHiddenStates(m.teacher, data.tok.sequences, [...needed], key, cache);
  if (th.fromCache.length === needed.size) log(`teacher hidden states from cache ${th.cacheDir}`);
  if (!rc.withKl) return { hidden: th.hidden, logProbs: null };

  // The KL objective differentiates through the whole student at once: every layer and the
  // lm_head must be on the backend together (no streaming). Refuse up front what cannot fit.
  const c = m.student.config;
  const need = c.numLayers * layerWeightBytes(c).layer + 4 * c.vocabSize * c.hiddenSize;
  const limit = backendMemoryLimit();
  if (need > 0.75 * limit.bytes) {
    fail(
      m.resolved.studentDir,
      `--loss ${rc.loss}: the whole student (${(need / 1024 ** 3).toFixed(1)} GiB of float32 weights) must be on the backend at once, more than ${limit.what} allows; use --loss mse (layers streamed one at a time)`,
    );
  }
  const lp = await teacherLogProbs(m.teacher, data.tok.sequences, key, cache);
  if (lp.fromCache) log(`teacher log-probs from cache ${lp.file}`);
  return { hidden: th.hidden, logProbs: lp.logProbs };
}
