/**
 * The native (ONNX Runtime) forward pass over whole sequences, LAYER-MAJOR: every window of every
 * configuration is advanced through layer l before layer l+1, so a large model holds at most two
 * layers (the one running and the next, read while it runs). Float32 layers take their weights as
 * graph inputs, so one session serves every layer of the same kind (no session, copy or
 * prepacking per layer); INT4 layers are bound per layer (MatMulNBits needs its prepacked layout).
 * Configurations that have computed the same thing so far (same attention part at every layer,
 * e.g. softmax) share one residual stream until they differ.
 */
import type { ModelConfig } from '../formats/config.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { modelConfigFile } from '../formats/weights.ts';
import { createSession, f32, ort, releaseSession, runSession, SessionCache } from '../runtime/ort/session.ts';
import type { WeightFeed } from '../runtime/ort/graph.ts';
import { buildHeadGraphFed, headSlices, type HeadSlice } from './headGraph.ts';
import { buildLayerGraph, softmaxPart, type AttentionPart } from './layerGraph.ts';
import { loadNativeLayerAsync, type NativeLayerWeights } from './layerWeights.ts';
import { int4Repackable } from './linear.ts';
import { requireFiniteHost, validateIds, type PrefillOptions, type PrefillResult } from '../model/sequence.ts';
import { graphBytes, initialState, layerWhat, requireNativeFits, sharedFeeds, stack } from './common.ts';

export type { PrefillOptions, PrefillResult } from '../model/sequence.ts';

/** Score elements (B · heads · T · T) one prefill batch may hold: 64 Mi floats (256 MiB). */
const SCORE_BUDGET = 1 << 26;

/** Logit values (B · T · vocab) one lm_head run may produce: 64 Mi floats (256 MiB). */
const LOGITS_BUDGET = 1 << 26;

/** Sequences grouped into batches of equal length, each within the score budget. */
function makeBatches(sequences: number[][], c: ModelConfig): number[][] {
  const byLength = new Map<number, number[]>();
  sequences.forEach((ids, s) => {
    const group = byLength.get(ids.length) ?? [];
    group.push(s);
    byLength.set(ids.length, group);
  });
  const batches: number[][] = [];
  for (const [T, group] of byLength) {
    const cap = Math.max(1, Math.floor(SCORE_BUDGET / (c.numHeads * T * T)));
    for (let i = 0; i < group.length; i += cap) batches.push(group.slice(i, i + cap));
  }
  return batches;
}

/** Final norm + lm_head over residual streams: per stream, per sequence [T, vocab]. */
async function projectLogits(weights: ModelWeights, streams: Float32Array[][], sequences: number[][], batches: number[][]): Promise<Float32Array[][]> {
  const c = weights.config;
  const V = c.vocabSize;
  const D = c.hiddenSize;
  const logits = streams.map(() => sequences.map((ids) => new Float32Array(ids.length * V)));
  // Smaller batches than the layers': one run's logits stay within LOGITS_BUDGET values.
  const headBatches = batches.flatMap((batch) => {
    const cap = Math.max(1, Math.floor(LOGITS_BUDGET / (sequences[batch[0]!]!.length * V)));
    const out: number[][] = [];
    for (let i = 0; i < batch.length; i += cap) out.push(batch.slice(i, i + cap));
    return out;
  });
  for (const slice of headSlices(weights)) {
    const what = `${modelConfigFile(weights)} (lm_head)`;
    const head = graphBytes(weights, 'the lm_head', () => buildHeadGraphFed(what, weights, slice));
    const headFeeds = tensorsOf(head.weights);
    const session = await createSession(head.bytes, what, { noPrepack: head.weights.length > 0, spinning: false });
    try {
      for (let k = 0; k < streams.length; k++) {
        for (const batch of headBatches) {
          const T = sequences[batch[0]!]!.length;
          const h = f32(stack(batch.map((s) => streams[k]![s]!)), [batch.length, T, D]);
          const out = (await runSession(session, { ...headFeeds, h }, what)).logits!.data as Float32Array;
          batch.forEach((s, j) => scatterSlice(out, j, T, slice, logits[k]![s]!, V));
        }
      }
    } finally {
      await releaseSession(session);
    }
  }
  return logits;
}

/** Copy batch row j's [T, count] slice logits into a [T, V] array at columns start.. */
function scatterSlice(out: Float32Array, j: number, T: number, slice: HeadSlice, dest: Float32Array, V: number): void {
  const n = slice.count;
  const base = j * T * n;
  if (n === V) {
    dest.set(out.subarray(base, base + T * n));
    return;
  }
  for (let t = 0; t < T; t++) dest.set(out.subarray(base + t * n, base + (t + 1) * n), t * V + slice.start);
}

/** Weight feeds as ORT tensors over the host arrays (no copy). */
function tensorsOf(feeds: WeightFeed[]): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {};
  for (const w of feeds) out[w.name] = w.data instanceof Float32Array ? f32(w.data, w.dims) : new ort.Tensor('uint8', w.data, w.dims);
  return out;
}

/** `layers`: run only layers 0..layers−1 (hidden states only: with `logits: false`). */
export type NativePrefillOptions = PrefillOptions & { layers?: number };

export interface NativeConfig {
  name: string;
  /** The attention part of layer l; null = the teacher's softmax attention. */
  attention: (layer: number) => AttentionPart | null;
}

/**
 * Every configuration over the same sequences, layer-major: one graph per layer holding every
 * configuration's branch, weights bound (and prepacked) once, all windows advanced per layer.
 * `onLayer` is called only when there is one configuration.
 */
export async function nativePrefillMany(weights: ModelWeights, sequences: number[][], configs: NativeConfig[], opts: NativePrefillOptions = {}): Promise<Record<string, PrefillResult>> {
  const c = weights.config;
  const nLayers = opts.layers ?? c.numLayers;
  if (!Number.isInteger(nLayers) || nLayers < 0 || nLayers > c.numLayers) throw new Error(`nativePrefillMany: layers ${nLayers} outside 0..${c.numLayers}`);
  if (nLayers < c.numLayers && opts.logits !== false) throw new Error('nativePrefillMany: a partial model (layers) has no logits');
  const D = c.hiddenSize;
  if (configs.length === 0) return {};
  if (new Set(configs.map((x) => x.name)).size !== configs.length) throw new Error('nativePrefillMany: configuration names must be unique');
  sequences.forEach((ids, s) => validateIds(c, ids, sequences.length > 1 ? `sequence ${s}` : 'input'));
  // Held across the run: every configuration's residual streams (and hidden states, logits on request).
  const tokens = sequences.reduce((a, s) => a + s.length, 0);
  const perToken = D * (opts.hidden ? c.numLayers + 2 : 2) + (opts.logits === false ? 0 : c.vocabSize);
  requireNativeFits(weights, 'streamed', 4 * configs.length * tokens * perToken);
  const batches = makeBatches(sequences, c);
  // Residual streams: configurations sharing everything so far share a stream.
  let streams: { configs: number[]; hidden: Float32Array[] }[] = [{ configs: configs.map((_, i) => i), hidden: sequences.map((ids) => weights.embed(ids)) }];
  const hiddenOf: Float32Array[][][] | null = opts.hidden ? configs.map(() => sequences.map(() => [])) : null;
  const record = () => {
    if (!hiddenOf) return;
    for (const st of streams) for (const k of st.configs) st.hidden.forEach((h, s) => hiddenOf[k]![s]!.push(h));
  };
  record();
  const sessions = new SessionCache(4);
  // Layer l+1 is read (asynchronously, into the arrays layer l-1 used) while layer l runs.
  const load = (l: number, reuse: NativeLayerWeights | null) => {
    const p = loadNativeLayerAsync(weights, l, reuse);
    p.catch(() => {}); // awaited at its layer; until then a failure is not "unhandled"
    return p;
  };
  let next: Promise<NativeLayerWeights> | null = nLayers > 0 ? load(0, null) : null;
  let spare: NativeLayerWeights | null = null;
  try {
    for (let l = 0; l < nLayers; l++) {
      // Split streams whose configurations take different parts at this layer.
      const branches: { part: AttentionPart; configs: number[]; input: Float32Array[] }[] = [];
      for (const st of streams) {
        const byPart = new Map<AttentionPart, number[]>();
        for (const k of st.configs) {
          const part = configs[k]!.attention(l) ?? softmaxPart;
          const group = byPart.get(part) ?? [];
          group.push(k);
          byPart.set(part, group);
        }
        for (const [part, group] of byPart) branches.push({ part, configs: group, input: st.hidden });
      }
      const what = layerWhat(weights, l);
      const layerWeights: NativeLayerWeights = await next!;
      next = l + 1 < nLayers ? load(l + 1, spare) : null;
      // Float32 weights are graph inputs and the graph is named without the layer: every layer
      // with the same branches is the same graph, and one session (prepared once) runs them all.
      // INT4 stays bound per layer: MatMulNBits is fast only on the layout it prepacks at session
      // creation (cheap for INT4), and dequantizes a runtime B at every run.
      const weightInputs = !Object.values(layerWeights.linear).some((src) => src.kind === 'int4' && int4Repackable(src.m));
      const graph = graphBytes(weights, `layer ${l}`, () =>
        weightInputs
          ? buildLayerGraph(`${modelConfigFile(weights)} (prefill layer)`, c, 'prefill', layerWeights, branches.map((br) => br.part), 0, { weightInputs: true })
          : buildLayerGraph(what, c, 'prefill', layerWeights, branches.map((br) => br.part), l),
      );
      // No spinning: a layer is a few large ops, where idle pool threads spinning between them (and
      // between runs, while this thread reads weights) only take cores from other work.
      const session = weightInputs ? await sessions.get(graph.bytes, what, { noPrepack: true, spinning: false }) : await createSession(graph.bytes, what, { spinning: false });
      const weightFeeds = tensorsOf(graph.weights ?? []);
      const outputs: Float32Array[][] = branches.map(() => new Array<Float32Array>(sequences.length));
      try {
        for (const batch of batches) {
          const T = sequences[batch[0]!]!.length;
          const positions = Array.from({ length: T }, (_, t) => t);
          const feeds = { ...weightFeeds, ...sharedFeeds(graph, c, positions) };
          branches.forEach((br, i) => (feeds[`h${i}`] = f32(stack(batch.map((s) => br.input[s]!)), [batch.length, T, D])));
          for (const st of graph.states) feeds[st.input] = initialState(st, batch.length);
          const result = await runSession(session, feeds, what);
          branches.forEach((_, i) => {
            const out = result[`h${i}_out`]!.data as Float32Array;
            batch.forEach((s, j) => (outputs[i]![s] = out.slice(j * T * D, (j + 1) * T * D)));
          });
        }
      } finally {
        if (!weightInputs) await releaseSession(session);
      }
      spare = layerWeights;
      streams = branches.map((br, i) => ({ configs: br.configs, hidden: outputs[i]! }));
      if (opts.guardFinite !== false) {
        for (const st of streams) st.hidden.forEach((h, s) => requireFiniteHost(h, weights.dir, l, sequences.length > 1 ? s : null));
      }
      record();
      if (opts.onLayer && configs.length === 1) opts.onLayer(l, streams[0]!.hidden);
      opts.onLayerDone?.(l);
    }
  } finally {
    await sessions.releaseAll();
  }
  const logits = opts.logits === false ? null : await projectLogits(weights, streams.map((st) => st.hidden), sequences, batches);
  const results: Record<string, PrefillResult> = {};
  streams.forEach((st, k) => {
    for (const i of st.configs) {
      const r: PrefillResult = { logits: logits ? logits[k]! : [] };
      if (hiddenOf) r.hidden = hiddenOf[i]!;
      results[configs[i]!.name] = r;
    }
  });
  return results;
}

/** The model over whole sequences (positions from 0): the teacher, or `attention(l)` per layer. */
export async function nativePrefill(
  weights: ModelWeights,
  sequences: number[][],
  opts: NativePrefillOptions & { attention?: (layer: number) => AttentionPart | null } = {},
): Promise<PrefillResult> {
  const r = await nativePrefillMany(weights, sequences, [{ name: 'model', attention: opts.attention ?? (() => null) }], opts);
  return r.model!;
}
