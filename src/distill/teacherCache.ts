/**
 * The teacher's hidden states for a calibration set, computed once per (teacher weights, token
 * sequences, seq-len) and cached on disk, so re-runs and hyper-parameter sweeps skip the teacher.
 *
 * Layout: `<cacheDir>/teacher-hidden/<key>/hidden.<l>.safetensors`, one file per residual-stream
 * index l (0 = embeddings, l+1 = after layer l), tensor `hidden` [N, T, hidden] F32. The key is a
 * hash of the teacher's content hash, the sequences' hash, the seq-len and the engine that computes
 * them (tfjs, or the native engine, whose float32 sums are ordered differently), so anything that
 * changes the numbers changes the key. Each file is written to a temporary name and renamed into place:
 * two runs filling the same cache at once both write complete, identical files and the last rename
 * wins — a reader never sees a partial file. `logprobs.safetensors` in the same directory holds the
 * teacher's next-token log-probs (the `--loss kl` target), under the same key.
 */
import fs from 'node:fs';
import path from 'node:path';
import { sha256Hex } from '../data/corpus.ts';
import { fail } from '../util/errors.ts';
import { cacheDir } from '../util/paths.ts';
import { SafetensorsFile, writeSafetensors } from '../formats/safetensors.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { forwardEngine, int4Activations } from '../runtime/backend.ts';
import { nativePrefill } from '../native/model.ts';
import type { PrefillOptions, PrefillResult } from '../model/sequence.ts';
import { teacherPrefill } from '../teacher/teacher.ts';
import { logSoftmaxRows } from './klLoss.ts';
import { removeStaleTemps } from './lock.ts';

/** Bump when the cached numbers would change for the same inputs (e.g. teacher arithmetic). */
export const TEACHER_CACHE_VERSION = 1;

export interface TeacherCacheKey {
  /** Content hash of the teacher's weight directory. */
  modelHash: string;
  /** hashSequences() of the token sequences. */
  sequencesHash: string;
  seqLen: number;
  /**
   * What computes the teacher (default 'tfjs'). The engines agree to float32 rounding, not bit for
   * bit, so each has its own entries: a run (and its --resume) reads back exactly what its engine
   * computes.
   */
  engine?: TeacherEngine;
}

/**
 * The engines the teacher can be computed on: tfjs (any tfjs backend), ONNX Runtime on CPU or CUDA,
 * and either of those with --int4-activations int8 (`-int8`: other numbers for an INT4 teacher).
 */
export type TeacherEngine = 'tfjs' | 'native' | 'native-cuda' | 'native-int8' | 'native-cuda-int8';

/** The engine this process's forward passes run on (set by initBackend). */
export function currentTeacherEngine(): TeacherEngine {
  const f = forwardEngine();
  if (f.kind === 'tfjs') return 'tfjs';
  const base = f.provider === 'cuda' ? 'native-cuda' : 'native';
  return int4Activations() === 'int8' ? `${base}-int8` : base;
}

export function teacherCacheDir(key: TeacherCacheKey, root = cacheDir()): string {
  // tfjs keeps the key it always had (existing caches stay valid); other engines add their name.
  const engine = key.engine && key.engine !== 'tfjs' ? `|${key.engine}` : '';
  const id = sha256Hex(`v${TEACHER_CACHE_VERSION}|${key.modelHash}|${key.sequencesHash}|${key.seqLen}${engine}`).slice(0, 32);
  return path.join(root, 'teacher-hidden', id);
}

/**
 * Sequences per native teacher call: as many as keep its two residual streams (layer input and
 * output) within 1 GiB — each call builds every layer's session once, so fewer calls are faster.
 */
function nativeBatch(T: number, D: number): number {
  return Math.max(16, Math.floor(2 ** 30 / (2 * 4 * T * D)));
}

/** The teacher over whole sequences on the key's engine. */
async function prefillOn(engine: TeacherEngine, weights: ModelWeights, sequences: number[][], opts: PrefillOptions): Promise<PrefillResult> {
  return engine === 'tfjs' ? teacherPrefill(weights, sequences, opts) : nativePrefill(weights, sequences, opts);
}

function layerFile(dir: string, index: number): string {
  return path.join(dir, `hidden.${index}.safetensors`);
}

/** Read one cached residual-stream index; null when absent or unreadable (it is recomputed then). */
function readCached(dir: string, index: number, n: number, T: number, D: number): Float32Array[] | null {
  const file = layerFile(dir, index);
  if (!fs.existsSync(file)) return null;
  let f: SafetensorsFile | null = null;
  try {
    f = SafetensorsFile.open(file);
    const info = f.info('hidden');
    if (info.dtype !== 'F32' || info.shape.join(',') !== [n, T, D].join(',')) return null;
    const all = f.readFloat32('hidden');
    for (let i = 0; i < all.length; i++) if (all[i]! - all[i]! !== 0) return null; // NaN/Inf: never a valid entry
    return Array.from({ length: n }, (_, s) => all.subarray(s * T * D, (s + 1) * T * D));
  } catch {
    return null; // a corrupt cache entry is not the user's problem: recompute and overwrite it
  } finally {
    f?.close();
  }
}

function writeCached(dir: string, index: number, perSeq: Float32Array[], T: number, D: number, key: TeacherCacheKey): void {
  const n = perSeq.length;
  const all = new Float32Array(n * T * D);
  perSeq.forEach((h, s) => all.set(h, s * T * D));
  writeSafetensors(layerFile(dir, index), { hidden: { dtype: 'F32', shape: [n, T, D], data: all } }, {
    model_hash: key.modelHash,
    sequences_hash: key.sequencesHash,
    seq_len: String(key.seqLen),
    index: String(index),
    version: String(TEACHER_CACHE_VERSION),
    engine: key.engine ?? 'tfjs',
  });
}

/**
 * The teacher's activations must be finite: a teacher whose weights overflow float32 (or a cache
 * of its NaNs) would make every distillation target NaN and blame the student's loss. Names the
 * layer, sequence and position of the first non-finite value.
 */
function requireFiniteHidden(perSeq: Float32Array[], layer: number, firstSeq: number, D: number): void {
  perSeq.forEach((h, j) => {
    for (let i = 0; i < h.length; i++) {
      const v = h[i]!;
      if (v - v !== 0) {
        fail(
          null,
          `teacher: non-finite activation (${v}) in the output of layer ${layer} (hidden.${layer + 1}) of calibration sequence ${firstSeq + j} at position ${Math.floor(i / D)}: ` +
            `the teacher's weights overflow float32; nothing was cached or trained`,
        );
      }
    }
  });
}

/** Thrown from the prefill's layer callback to stop once every needed layer is in hand. */
class EnoughLayers extends Error {}

export interface TeacherHiddenResult {
  /** hidden.get(l)[s] = residual stream index l of sequence s, [T*hidden] row-major. */
  hidden: Map<number, Float32Array[]>;
  cacheDir: string;
  /** Indices served from the cache (the rest were computed and stored). */
  fromCache: number[];
}

/**
 * Residual-stream indices `indices` (0 = embeddings, l+1 = after layer l) of the teacher for every
 * sequence, from the cache where present; missing ones are computed on the key's engine in batches
 * of `batchSize` sequences (the teacher streams its layers; tfjs default 16, native as many as
 * fit 1 GiB of residual streams: its layer-major pass builds each layer's session once per call)
 * and stored.
 */
export async function teacherHiddenStates(
  weights: ModelWeights,
  sequences: Int32Array[],
  indices: number[],
  key: TeacherCacheKey,
  opts: { root?: string; batchSize?: number; log?: (msg: string) => void; useCache?: boolean } = {},
): Promise<TeacherHiddenResult> {
  const c = weights.config;
  const D = c.hiddenSize;
  const n = sequences.length;
  const T = key.seqLen;
  for (const s of sequences) if (s.length !== T) fail(null, `teacher cache: every sequence must have ${T} tokens`);
  const wanted = [...new Set(indices)].sort((a, b) => a - b);
  for (const i of wanted) if (!Number.isInteger(i) || i < 0 || i > c.numLayers) fail(null, `teacher cache: hidden index ${i} out of range 0..${c.numLayers}`);
  const dir = teacherCacheDir(key, opts.root);
  const useCache = opts.useCache ?? true;
  const hidden = new Map<number, Float32Array[]>();
  const fromCache: number[] = [];
  if (useCache) {
    for (const i of wanted) {
      const got = readCached(dir, i, n, T, D);
      if (got) {
        hidden.set(i, got);
        fromCache.push(i);
      }
    }
  }
  const missing = wanted.filter((i) => !hidden.has(i));
  if (missing.length === 0) return { hidden, cacheDir: dir, fromCache };

  opts.log?.(`teacher: computing hidden states ${missing.join(', ')} for ${n} sequences × ${T} tokens (cache ${dir})`);
  for (const i of missing) hidden.set(i, new Array<Float32Array>(n));
  const lastNeeded = missing[missing.length - 1]!;
  const engine = key.engine ?? 'tfjs';
  const batch = Math.max(1, opts.batchSize ?? (engine === 'tfjs' ? 16 : nativeBatch(T, D)));
  for (let s0 = 0; s0 < n; s0 += batch) {
    const group = sequences.slice(s0, s0 + batch).map((s) => Array.from(s));
    if (missing.includes(0)) group.forEach((ids, j) => (hidden.get(0)![s0 + j] = weights.embed(ids)));
    if (lastNeeded === 0) continue;
    try {
      await prefillOn(engine, weights, group, {
        logits: false,
        guardFinite: false, // requireFiniteHidden below says more: the sequence's index in the whole set, the position, that nothing was cached
        onLayer: (l, perSeq) => {
          requireFiniteHidden(perSeq, l, s0, D);
          const target = hidden.get(l + 1);
          if (target && missing.includes(l + 1)) perSeq.forEach((h, j) => (target[s0 + j] = h));
          if (l + 1 >= lastNeeded) throw new EnoughLayers();
        },
      });
    } catch (e) {
      if (!(e instanceof EnoughLayers)) throw e;
    }
  }
  if (useCache) {
    fs.mkdirSync(dir, { recursive: true });
    removeStaleTemps(dir);
    for (const i of missing) writeCached(dir, i, hidden.get(i)!, T, D, key);
  }
  return { hidden, cacheDir: dir, fromCache };
}

// ---------------------------------------------------------------------------------------------
// Teacher log-probs (the `--loss kl` target)

/** `<cacheDir>/logprobs.safetensors`, tensor `logprobs` [N, T, vocab] F32, next to hidden.<l>. */
export function teacherLogProbsFile(key: TeacherCacheKey, root = cacheDir()): string {
  return path.join(teacherCacheDir(key, root), 'logprobs.safetensors');
}

/**
 * The teacher's next-token log-probabilities (log-softmax of its logits, in float64, stored F32)
 * for every sequence, [T*vocab] each, cached beside the hidden states under the same content key.
 * Size: N × T × vocab × 4 bytes (stories260k, 512 tokens: 128 KiB per 64-token sequence; a
 * 128k-token vocabulary: 32 MiB per sequence — the cache is meant for calibration sets of
 * hundreds of sequences, not more).
 */
export async function teacherLogProbs(
  weights: ModelWeights,
  sequences: Int32Array[],
  key: TeacherCacheKey,
  opts: { root?: string; batchSize?: number; log?: (msg: string) => void; useCache?: boolean } = {},
): Promise<{ logProbs: Float32Array[]; file: string; fromCache: boolean }> {
  const V = weights.config.vocabSize;
  const n = sequences.length;
  const T = key.seqLen;
  for (const s of sequences) if (s.length !== T) fail(null, `teacher cache: every sequence must have ${T} tokens`);
  const dir = teacherCacheDir(key, opts.root);
  const file = path.join(dir, 'logprobs.safetensors');
  const useCache = opts.useCache ?? true;
  if (useCache && fs.existsSync(file)) {
    let f: SafetensorsFile | null = null;
    try {
      f = SafetensorsFile.open(file);
      const info = f.info('logprobs');
      if (info.dtype === 'F32' && info.shape.join(',') === [n, T, V].join(',')) {
        const all = f.readFloat32('logprobs');
        let ok = true;
        for (let i = 0; i < all.length && ok; i++) if (Number.isNaN(all[i]!) || all[i]! > 0) ok = false; // log-probs are ≤ 0 (−Inf allowed)
        if (ok) return { logProbs: Array.from({ length: n }, (_, s) => all.subarray(s * T * V, (s + 1) * T * V)), file, fromCache: true };
      }
    } catch {
      // corrupt entry: recompute and overwrite it
    } finally {
      f?.close();
    }
  }
  opts.log?.(`teacher: computing next-token log-probs for ${n} sequences × ${T} tokens (cache ${dir})`);
  const logProbs: Float32Array[] = new Array(n);
  const engine = key.engine ?? 'tfjs';
  // Native: larger batches (each call builds every layer's session once); logits of 64 sequences at a time.
  const batch = Math.max(1, opts.batchSize ?? (engine === 'tfjs' ? 16 : 64));
  for (let s0 = 0; s0 < n; s0 += batch) {
    const group = sequences.slice(s0, s0 + batch).map((s) => Array.from(s));
    const { logits } = await prefillOn(engine, weights, group, { logits: true });
    logits.forEach((z, j) => {
      for (let i = 0; i < z.length; i++) {
        if (!Number.isFinite(z[i]!)) fail(null, `teacher: non-finite logit (${z[i]}) of calibration sequence ${s0 + j} at position ${Math.floor(i / V)}: the teacher's weights overflow float32; nothing was cached or trained`);
      }
      logProbs[s0 + j] = logSoftmaxRows(z, T, V);
    });
  }
  if (useCache) {
    fs.mkdirSync(dir, { recursive: true });
    removeStaleTemps(dir);
    const all = new Float32Array(n * T * V);
    logProbs.forEach((lp, s) => all.set(lp, s * T * V));
    writeSafetensors(file, { logprobs: { dtype: 'F32', shape: [n, T, V], data: all } }, {
      model_hash: key.modelHash,
      sequences_hash: key.sequencesHash,
      seq_len: String(key.seqLen),
      version: String(TEACHER_CACHE_VERSION),
      engine: key.engine ?? 'tfjs',
    });
  }
  return { logProbs, file, fromCache: false };
}
