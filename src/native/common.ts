/**
 * What the native engine's prefill (prefill.ts) and decoder (decoder.ts) share: memory checks,
 * error naming, state buffers and the per-run shared feeds (positions, RoPE tables).
 */
import os from 'node:os';
import { fail, SynaximError } from '../util/errors.ts';
import type { ModelConfig } from '../formats/config.ts';
import { kvDim, qDim } from '../formats/config.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { modelConfigFile } from '../formats/weights.ts';
import { f32, i64, type ort } from '../runtime/ort/session.ts';
import { ropeTables, type LayerGraph, type StateSpec } from './layerGraph.ts';
import { isInt4Symb, type NativeLayerWeights } from './layerWeights.ts';
import { boundBytes } from './linear.ts';

/** The decoder chains consecutive layers into one graph up to this many bytes of weights. */
export const STACK_BYTES = 1 << 30;

/**
 * Below this many bytes of weights per run, one intra-op thread: a decode step of a small model is
 * hundreds of tiny ops, where waking a thread pool costs more than it gives (stories260k: 1 thread
 * ~6x faster than 2 on a 2-core machine).
 */
export const SMALL_RUN_BYTES = 16 << 20;

export function nativeLayerBytes(lw: NativeLayerWeights): number {
  return Object.values(lw.linear).reduce((a, src) => a + boundBytes(src), 0);
}

/** What names a layer in errors: the model's config file and the layer. */
export function layerWhat(weights: ModelWeights, l: number): string {
  return `${modelConfigFile(weights)} (layer ${l})`;
}

/** Serialize a graph; the 2 GiB protobuf limit is a user-facing refusal, not a crash. */
export function graphBytes<T>(weights: ModelWeights, what: string, build: () => T): T {
  try {
    return build();
  } catch (e) {
    if (e instanceof SynaximError) throw e;
    const msg = e instanceof Error ? e.message : String(e);
    if (/2 GiB/.test(msg)) fail(modelConfigFile(weights), `too big for the native engine: ${what} has more than 2 GiB of weights in one graph`);
    throw e;
  }
}

/** Bytes of one layer's weights as bound (int4 stays 4-bit). */
export function layerBytes(c: ModelConfig, int4GroupSize: number | null): number {
  const D = c.hiddenSize;
  const numel = D * (qDim(c) + 2 * kvDim(c)) + qDim(c) * D + 3 * D * c.intermediateSize;
  return int4GroupSize ? numel / 2 + (4 * numel) / int4GroupSize : 4 * numel;
}

/**
 * Refuse up front (one line) a model that cannot fit this machine's memory: streamed prefill
 * holds about three layers' worth (float32: the layer running and the next one being read; INT4:
 * host copy, ORT's copy and its prepacked one); the decoder holds every layer.
 */
export function requireNativeFits(weights: ModelWeights, mode: 'streamed' | 'resident', activationBytes = 0): void {
  const c = weights.config;
  const gs = isInt4Symb(weights) ? weights.quantization.groupSize : null;
  const layer = layerBytes(c, gs);
  const head = gs ? c.vocabSize * c.hiddenSize * (0.5 + 4 / gs) : 4 * c.vocabSize * c.hiddenSize;
  const need = mode === 'streamed' ? 3 * Math.max(layer, Math.min(head, 1 << 30)) + activationBytes : c.numLayers * layer + head + 2 * layer + activationBytes;
  const total = os.totalmem();
  if (need > total) {
    const gib = (x: number) => `${(x / 2 ** 30).toFixed(1)} GiB`;
    fail(
      modelConfigFile(weights),
      `too big for this machine: ${mode === 'streamed' ? 'one layer needs' : `its ${c.numLayers} layers and lm_head, all resident, need`} ${gib(need)}, more than its ${gib(total)} of memory`,
    );
  }
}

/** Concatenate per-sequence [T*D] arrays into one [B*T*D] batch. */
export function stack(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Zeros for a state: 'B' = batch, any other symbolic dim = 0 (empty). */
export function initialState(st: StateSpec, batch: number): ort.Tensor {
  const dims = st.dims.map((d) => (typeof d === 'number' ? d : d === 'B' ? batch : 0));
  return f32(new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
}

/** The shared inputs (positions, RoPE tables) a layer graph declares, for positions start..start+T-1. */
export function sharedFeeds(g: LayerGraph, c: ModelConfig, positions: number[]): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  if (g.usesPositions) feeds.positions = i64(positions);
  if (g.usesRope) {
    const { cos, sin } = ropeTables(c, positions);
    feeds.rope_cos = f32(cos, [positions.length, c.headDim]);
    feeds.rope_sin = f32(sin, [positions.length, c.headDim]);
  }
  return feeds;
}
