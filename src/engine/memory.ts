/**
 * State-memory accounting: what a model keeps per sequence while decoding.
 *
 * - A gated (SYNAXIM) layer keeps one D_q×D_q state M, whatever the context length:
 *   D_q² × 4 bytes (float32).
 * - A softmax layer keeps its KV cache: 2 (k and v) × n_kv × head_dim × bytes per element per
 *   token — growing with the context (up to the sliding window, for Mistral-style models).
 *
 * - A `window` layer (softmax over the last W positions) keeps a KV cache of at most W positions.
 *
 * A student with some layers gated and the rest softmax (`--rest teacher`) pays both. Pure
 * arithmetic, for the evaluation report.
 */
import { kvDim, qDim, type ModelConfig } from '../formats/config.ts';

/** Bytes per element used unless told otherwise: float32 state (as this engine holds it), fp16/bf16 KV cache (as HF holds it). */
export const DEFAULT_STATE_BYTES = 4;
export const DEFAULT_KV_BYTES = 2;

/** Bytes of one gated layer's state M: D_q² × bytes. */
export function gateStateBytesPerLayer(c: ModelConfig, bytesPerElement = DEFAULT_STATE_BYTES): number {
  return qDim(c) * qDim(c) * bytesPerElement;
}

/** KV-cache bytes one token adds in one softmax layer: 2 × n_kv × head_dim × bytes. */
export function kvBytesPerTokenPerLayer(c: ModelConfig, bytesPerElement = DEFAULT_KV_BYTES): number {
  return 2 * kvDim(c) * bytesPerElement;
}

/** KV-cache bytes per token of the whole teacher (every layer softmax): 2 × n_kv × head_dim × layers × bytes. */
export function kvBytesPerToken(c: ModelConfig, bytesPerElement = DEFAULT_KV_BYTES): number {
  return kvBytesPerTokenPerLayer(c, bytesPerElement) * c.numLayers;
}

/**
 * Positions a softmax layer keeps at context length T (all of them, or the sliding window); a
 * `window` layer (softmax over the last W positions) keeps at most W.
 */
export function cachedPositions(c: ModelConfig, contextLength: number, window: number | null = null): number {
  const model = c.slidingWindow === null ? contextLength : Math.min(contextLength, c.slidingWindow);
  return window === null ? model : Math.min(model, window);
}

/**
 * The same-memory window: the most positions W whose KV cache (W × 2 × n_kv × head_dim × kv bytes)
 * fits in the bytes of one gated layer's state (D_q² × state bytes) — the baseline that answers
 * "does the O(1) state beat a KV window of equal memory?". At least 1.
 */
export function sameMemoryWindow(c: ModelConfig, opts: Omit<MemoryOptions, 'gatedLayers'> = {}): number {
  return Math.max(1, Math.floor(gateStateBytesPerLayer(c, opts.stateBytesPerElement) / kvBytesPerTokenPerLayer(c, opts.kvBytesPerElement)));
}

/**
 * One adapter-window layer at context length T: the gate's D_q² state plus the KV cache of its
 * last W positions (min(T, W) × 2 × n_kv × head_dim × kv bytes) — it keeps both.
 */
export function adapterWindowBytesPerLayer(c: ModelConfig, window: number, contextLength: number, opts: Omit<MemoryOptions, 'gatedLayers' | 'adapterWindow'> = {}): number {
  return gateStateBytesPerLayer(c, opts.stateBytesPerElement) + kvBytesPerTokenPerLayer(c, opts.kvBytesPerElement) * cachedPositions(c, contextLength, window);
}

export interface MemoryOptions {
  /** The gated layers are adapter-window layers with this window: each also keeps a KV cache of W positions. */
  adapterWindow?: number | null;
  /** Number of gated layers (default: all). The others are softmax layers with a KV cache. */
  gatedLayers?: number;
  stateBytesPerElement?: number;
  kvBytesPerElement?: number;
}

export interface MemoryAtLength {
  contextLength: number;
  /** The teacher: every layer's KV cache. */
  teacherKvBytes: number;
  /** The student: gated layers' states + the softmax layers' KV caches. */
  studentStateBytes: number;
  studentKvBytes: number;
  studentBytes: number;
  /** teacher / student. */
  ratio: number;
}

/** Decoding memory per sequence at context length T, teacher vs student. */
export function memoryAtLength(c: ModelConfig, contextLength: number, opts: MemoryOptions = {}): MemoryAtLength {
  const gated = opts.gatedLayers ?? c.numLayers;
  if (!Number.isInteger(gated) || gated < 0 || gated > c.numLayers) throw new Error(`gatedLayers must be in 0..${c.numLayers}, got ${gated}`);
  const perTokenLayer = kvBytesPerTokenPerLayer(c, opts.kvBytesPerElement);
  const positions = cachedPositions(c, contextLength);
  const teacherKvBytes = perTokenLayer * positions * c.numLayers;
  const studentStateBytes =
    (opts.adapterWindow ? adapterWindowBytesPerLayer(c, opts.adapterWindow, contextLength, opts) : gateStateBytesPerLayer(c, opts.stateBytesPerElement)) * gated;
  const studentKvBytes = perTokenLayer * positions * (c.numLayers - gated);
  const studentBytes = studentStateBytes + studentKvBytes;
  return { contextLength, teacherKvBytes, studentStateBytes, studentKvBytes, studentBytes, ratio: studentBytes === 0 ? Infinity : teacherKvBytes / studentBytes };
}

/**
 * Context length from which a gated layer's fixed state is smaller than the KV cache it replaces:
 * ⌈D_q² × state bytes / (2 × n_kv × head_dim × kv bytes)⌉ (Infinity when a sliding window caps
 * the cache below that).
 */
export function breakEvenContext(c: ModelConfig, opts: Omit<MemoryOptions, 'gatedLayers'> = {}): number {
  const n = Math.ceil(gateStateBytesPerLayer(c, opts.stateBytesPerElement) / kvBytesPerTokenPerLayer(c, opts.kvBytesPerElement));
  return c.slidingWindow !== null && c.slidingWindow < n ? Infinity : n;
}

/** A table over context lengths (default 512 … 128k), for the eval report. */
export function memoryTable(c: ModelConfig, contextLengths: number[] = [512, 2048, 8192, 32768, 131072], opts: MemoryOptions = {}): MemoryAtLength[] {
  return contextLengths.map((T) => memoryAtLength(c, T, opts));
}

/** Human-readable bytes: the one formatter, util/fileio.ts (re-exported for this module's importers). */
export { formatBytes } from '../util/fileio.ts';
