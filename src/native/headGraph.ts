/**
 * The model's head as graphs: final RMSNorm + lm_head (int4 through MatMulNBits when the model is
 * int4). A float32 lm_head bigger than HEAD_CHUNK_BYTES is split into vocabulary slices, one graph
 * each (one ONNX model holds at most 2 GiB of weights).
 *
 * Graph interface: `h` [B, T, hidden] in, `logits` [B, T, count] out (vocabulary rows
 * [start, start + count)).
 */
import type { ModelWeights } from '../formats/weights.ts';
import { GraphBuilder, type WeightFeed } from '../runtime/ort/graph.ts';
import { isInt4Symb, loadLmHead } from './layerWeights.ts';
import { bindLinear } from './linear.ts';
import { rmsNormNode } from './layerGraph.ts';

/** Largest float32 lm_head slice bound in one graph. */
export const HEAD_CHUNK_BYTES = 1 << 30;

export interface HeadSlice {
  start: number;
  count: number;
}

/** Vocabulary slices of the head graphs. */
export function headSlices(weights: ModelWeights): HeadSlice[] {
  const { vocabSize: V, hiddenSize: D } = weights.config;
  if (isInt4Symb(weights)) return [{ start: 0, count: V }];
  const rows = Math.max(1, Math.floor(HEAD_CHUNK_BYTES / (4 * D)));
  const slices: HeadSlice[] = [];
  for (let start = 0; start < V; start += rows) slices.push({ start, count: Math.min(rows, V - start) });
  return slices;
}

/** Add final norm + lm_head (one vocabulary slice) over `h` [B, T, hidden] to a graph: output `logits` [B, T, count]. */
export function addHead(b: GraphBuilder, weights: ModelWeights, slice: HeadSlice, h: string, T: number | 'T'): void {
  const c = weights.config;
  const norm = b.weight('model.norm.weight', weights.finalNorm(), [c.hiddenSize]);
  const lm = bindLinear(b, 'lm_head', loadLmHead(weights, slice.start, slice.count), null);
  b.output(lm(rmsNormNode(b, h, norm, c.rmsNormEps)), 'float32', ['B', T, slice.count], 'logits');
}

/** Bytes of one head slice's weights as bound (int4 stays 4-bit). */
export function headBytes(weights: ModelWeights, slice: HeadSlice): number {
  const c = weights.config;
  const gs = isInt4Symb(weights) && slice.count === c.vocabSize ? weights.quantization.groupSize : null;
  const numel = slice.count * c.hiddenSize;
  return gs ? numel / 2 + (4 * numel) / gs : 4 * numel;
}

/** The serialized head graph for one vocabulary slice. */
export function buildHeadGraph(name: string, weights: ModelWeights, slice: HeadSlice, T: number | 'T' = 'T'): Uint8Array {
  const b = new GraphBuilder(name);
  addHead(b, weights, slice, b.input('h', 'float32', ['B', T, weights.config.hiddenSize]), T);
  return b.toBytes();
}

/**
 * The head graph with a float32 lm_head as a graph input fed from the host array (`weights`), for
 * a session used a few times: no copy into ONNX Runtime and no prepacking (an INT4 head stays bound:
 * MatMulNBits needs its prepacked layout).
 */
export function buildHeadGraphFed(name: string, weights: ModelWeights, slice: HeadSlice, T: number | 'T' = 'T'): { bytes: Uint8Array; weights: WeightFeed[] } {
  const int4 = isInt4Symb(weights) && slice.count === weights.config.vocabSize;
  const b = new GraphBuilder(name, { weightInputs: !int4 });
  addHead(b, weights, slice, b.input('h', 'float32', ['B', T, weights.config.hiddenSize]), T);
  return { bytes: b.toBytes(), weights: b.weightFeeds };
}
