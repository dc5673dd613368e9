/**
 * Distill stage 4: everything a training or evaluation pass reads — the student's layers on the
 * backend (resident or streamed), the student's own stream into the first trained layer, RoPE
 * tables, and for a KL phase the whole student up to the lm_head. `dispose` frees the tensors.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ropeCosSin, uploadMatrix } from '../../model/nn.ts';
import type { VocabSlice } from '../klLoss.ts';
import { LayerSource, studentStreamBefore, type KlContext, type PassContext } from '../train.ts';
import { trainOptions, type RunConfig } from '../runConfig.ts';
import { NativeMsePass, nativeResidentBytes, nativeStudentStreamBefore } from '../nativePass.ts';
import { nativeForward } from '../../runtime/backend.ts';
import type { DistillData } from './data.ts';
import type { DistillModels } from './models.ts';
import type { TeacherTargets } from './teacherTargets.ts';

export function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

export async function passContext(rc: RunConfig, m: DistillModels, data: DistillData, targets: TeacherTargets): Promise<{ ctx: PassContext; dispose: () => void }> {
  const { student } = m;
  const c = student.config;
  const layers = rc.layers;
  const first = layers[0]!;
  const span = range(first, layers[layers.length - 1]!);
  const positions = () => ropeCosSin(c, Array.from({ length: rc.seqLen }, (_, i) => i));
  // The MSE passes run on the native engine when the forward engine is native: the
  // tfjs layer source is then only for the tfjs parts (KL, or --verify-weights), uploaded on demand.
  const useNative = nativeForward() && rc.phases.some((p) => p.loss === 'mse') && NativeMsePass.supports({ opts: { window: rc.window } });
  const studentStart = rc.input === 'student' ? await studentStreamInto(rc, m, data) : null;
  const layerSource = new LayerSource(student, span.filter((l) => rc.input === 'student' || layers.includes(l)), useNative && !rc.verifyWeights ? 0 : rc.residentBytes);
  const needsRope = rc.input === 'student' && rc.rest !== 'fixed' && span.some((l) => !layers.includes(l));
  const rope = needsRope ? positions() : null;
  const kl = targets.logProbs ? klContext(rc, m, data, targets.logProbs, positions()) : null;
  const ctx: PassContext = { config: c, layers: layerSource, opts: trainOptions(rc), seqLen: rc.seqLen, teacher: targets.hidden, studentStart, rope, kl };
  // The native engine runs the MSE passes too: ONNX Runtime instead of tfjs autodiff.
  const native = useNative ? NativeMsePass.create(student, ctx, nativeResidentBytes()) : null;
  ctx.native = native;
  const dispose = () => {
    void native?.close();
    layerSource.dispose();
    if (kl) {
      kl.layers.dispose();
      kl.finalNorm.dispose();
      kl.slices.forEach((sl) => sl.w.dispose());
      kl.rope.cos.dispose();
      kl.rope.sin.dispose();
    }
    rope?.cos.dispose();
    rope?.sin.dispose();
  };
  return { ctx, dispose };
}

/**
 * The student's stream entering the first trained layer (the embeddings run through layers
 * 0..first−1 with the `--rest` policy): on the native engine when it is the forward engine.
 */
async function studentStreamInto(rc: RunConfig, m: DistillModels, data: DistillData): Promise<Float32Array[]> {
  const { student } = m;
  const first = rc.layers[0]!;
  if (first === 0 || !nativeForward()) return studentStreamBefore(student, data.tok.sequences.map((s) => student.embed(s)), first, rc.rest, rc.seqLen, rc.chunkSize ?? undefined);
  return nativeStudentStreamBefore(student, data.tok.sequences.map((s) => Array.from(s)), first, rc.rest);
}

/** --loss kl / mse+kl: the whole student up to the lm_head, against the teacher's log-probs. */
function klContext(rc: RunConfig, m: DistillModels, data: DistillData, logProbs: Float32Array[], rope: KlContext['rope']): KlContext {
  const { student } = m;
  const c = student.config;
  // The lm_head in slices of at most 2^24 values (one upload each).
  const sliceRows = Math.max(1, Math.min(c.vocabSize, Math.floor((1 << 24) / c.hiddenSize)));
  const slices: VocabSlice[] = [];
  for (let start = 0; start < c.vocabSize; start += sliceRows) {
    const count = Math.min(sliceRows, c.vocabSize - start);
    slices.push({ start, count, w: uploadMatrix(student.lmHeadRows(start, count)) });
  }
  return {
    layers: new LayerSource(student, range(0, c.numLayers - 1), Number.POSITIVE_INFINITY),
    finalNorm: tf.tensor1d(student.finalNorm()),
    slices,
    embeddings: data.tok.sequences.map((s) => student.embed(s)),
    logProbs,
    rope,
  };
}
