/** The attention memory an evaluation reports: state vs KV cache per configuration and context. */
import { qDim, type ModelConfig } from '../formats/config.ts';
import { breakEvenContext, cachedPositions, DEFAULT_KV_BYTES, DEFAULT_STATE_BYTES, gateStateBytesPerLayer, kvBytesPerTokenPerLayer, sameMemoryWindow } from '../engine/memory.ts';
import { adapterWindowOfPolicy, windowOfPolicy } from './configurations.ts';
import type { LayerPolicy, MemoryReport } from './report.ts';

/**
 * Attention memory of one sequence at each context length, per configuration, from the student
 * engine's accounting (src/engine/memory.ts): softmax layers hold a KV cache (capped by a sliding
 * window), gated layers one D_q × D_q state whatever the context.
 */
export function attentionMemory(c: ModelConfig, layersPerConfiguration: LayerPolicy[][], contexts: number[]): { perConfiguration: number[][]; report: MemoryReport } {
  const kvPerToken = kvBytesPerTokenPerLayer(c, DEFAULT_KV_BYTES);
  const state = gateStateBytesPerLayer(c, DEFAULT_STATE_BYTES);
  // per layer: a softmax layer's KV cache, a window layer's (at most W positions), or one gate state
  const layerBytes = (p: LayerPolicy, t: number): number => {
    if (p === 'teacher') return cachedPositions(c, t) * kvPerToken;
    const w = windowOfPolicy(p);
    if (w !== null) return cachedPositions(c, t, w) * kvPerToken;
    const aw = adapterWindowOfPolicy(p);
    return aw !== null ? state + cachedPositions(c, t, aw) * kvPerToken : state;
  };
  const perConfiguration = layersPerConfiguration.map((layers) => contexts.map((t) => layers.reduce((sum, p) => sum + layerBytes(p, t), 0)));
  const breakEven = breakEvenContext(c);
  return {
    perConfiguration,
    report: {
      contexts,
      kv_bytes_per_element: DEFAULT_KV_BYTES,
      state_bytes_per_element: DEFAULT_STATE_BYTES,
      kv_bytes_per_token_per_layer: kvPerToken,
      state_bytes_per_layer: state,
      break_even_context: Number.isFinite(breakEven) ? breakEven : null,
      same_memory_window: sameMemoryWindow(c),
      notes:
        `KV cache = 2 · ${c.numKvHeads} kv heads · ${c.headDim} head_dim values per token (${DEFAULT_KV_BYTES}-byte, as HF holds it)` +
        (c.slidingWindow !== null ? `, at most ${c.slidingWindow} positions (sliding window)` : '') +
        `; gate state = D_q² values with D_q = ${qDim(c)} (${DEFAULT_STATE_BYTES}-byte float32). ` +
        (Number.isFinite(breakEven) ? `One gate state is smaller than the KV cache it replaces from ${breakEven} tokens on. ` : 'The sliding window keeps the KV cache below one gate state. ') +
        `A window layer keeps at most W positions; the same-memory window W = ${sameMemoryWindow(c)} holds as many bytes as one gate state.`,
    },
  };
}
