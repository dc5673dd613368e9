/**
 * One decoder layer's weights as the native engine binds them: int4 .symb matrices as their raw
 * codes + scales (never expanded), everything else as the readers' float32.
 */
import { SymbWeights, type LayerMatrixName } from '../formats/symbModel.ts';
import type { LayerWeights, Matrix, ModelWeights } from '../formats/weights.ts';
import { HfWeights } from '../formats/hfModel.ts';
import { int4Repackable, type LinearSource } from './linear.ts';

export interface NativeLayerWeights {
  inputNorm: Float32Array;
  postNorm: Float32Array;
  qBias: Float32Array | null;
  kBias: Float32Array | null;
  vBias: Float32Array | null;
  linear: Record<LayerMatrixName, LinearSource>;
}

const noted = new Set<string>();
/** Say once per model and shape that an int4 matrix is expanded to float32 (MatMulNBits cannot take it). */
function noteFallback(dir: string, groupSize: number, inFeatures: number, file: string): void {
  const key = `${dir}\0${groupSize}\0${inFeatures}`;
  if (noted.has(key)) return;
  noted.add(key);
  process.stderr.write(
    `synaxim: note: ${file}: int4 group size ${groupSize} does not split in_features ${inFeatures} into whole blocks for the INT4 kernel; ` +
      `matrices of this shape are computed from float32\n`,
  );
}

const MATRICES: LayerMatrixName[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

/** Whether this model's matrices are int4 on disk (read raw by the native engine). */
export function isInt4Symb(weights: ModelWeights): weights is SymbWeights {
  return weights instanceof SymbWeights && weights.quantization.method === 'int4';
}

/**
 * loadNativeLayer, with an HF checkpoint read asynchronously (overlapping the caller's other work)
 * into `reuse`'s float32 arrays when given (a layer of the same model no longer in use).
 */
export async function loadNativeLayerAsync(weights: ModelWeights, index: number, reuse: NativeLayerWeights | null = null): Promise<NativeLayerWeights> {
  if (!(weights instanceof HfWeights)) return loadNativeLayer(weights, index);
  const old = reuse ? hostLayer(reuse) : null;
  return fromHostLayer(await weights.layerAsync(index, old));
}

/** The float32 host layer behind native layer weights (null when any matrix is int4). */
function hostLayer(lw: NativeLayerWeights): LayerWeights | null {
  const m = {} as Record<LayerMatrixName, Matrix>;
  for (const which of MATRICES) {
    const src = lw.linear[which];
    if (src.kind !== 'f32') return null;
    m[which] = src.m;
  }
  return { inputNorm: lw.inputNorm, postNorm: lw.postNorm, qBias: lw.qBias, kBias: lw.kBias, vBias: lw.vBias, ...m };
}

function fromHostLayer(lw: LayerWeights): NativeLayerWeights {
  return {
    inputNorm: lw.inputNorm,
    postNorm: lw.postNorm,
    qBias: lw.qBias,
    kBias: lw.kBias,
    vBias: lw.vBias,
    linear: {
      q: { kind: 'f32', m: lw.q },
      k: { kind: 'f32', m: lw.k },
      v: { kind: 'f32', m: lw.v },
      o: { kind: 'f32', m: lw.o },
      gate: { kind: 'f32', m: lw.gate },
      up: { kind: 'f32', m: lw.up },
      down: { kind: 'f32', m: lw.down },
    },
  };
}

export function loadNativeLayer(weights: ModelWeights, index: number): NativeLayerWeights {
  if (isInt4Symb(weights)) {
    const vectors = weights.layerVectors(index);
    const linear = {} as Record<LayerMatrixName, LinearSource>;
    for (const which of MATRICES) {
      const m = weights.int4LayerMatrix(index, which)!;
      if (!int4Repackable(m)) noteFallback(weights.dir, m.groupSize, m.cols, m.file);
      linear[which] = { kind: 'int4', m };
    }
    return { ...vectors, linear };
  }
  return fromHostLayer(weights.layer(index));
}

/** The output projection's rows [start, start + count) (int4 raw when the model is int4 and all rows are asked). */
export function loadLmHead(weights: ModelWeights, start: number, count: number): LinearSource {
  if (isInt4Symb(weights) && start === 0 && count === weights.config.vocabSize) {
    const m = weights.int4LmHead();
    if (m) return { kind: 'int4', m };
  }
  return { kind: 'f32', m: weights.lmHeadRows(start, count) };
}
