/**
 * The native (ONNX Runtime) forward passes over a model:
 * - `nativePrefill` / `nativePrefillMany`: whole sequences, LAYER-MAJOR — layer l's graph is built
 *   and its session created once (weights bound and prepacked once), every window of every
 *   configuration advanced through it, then released before layer l+1, so a large model never
 *   holds more than one layer. Configurations that have computed the same thing so far (same
 *   attention part at every layer, e.g. softmax) share one residual stream until they differ.
 * - `NativeDecoder`: one token at a time with resident per-layer sessions and state (KV cache,
 *   or whatever state the attention parts declare).
 */
import os from 'node:os';
import { fail, SynaximError } from '../util/errors.ts';
import type { ModelConfig } from '../formats/config.ts';
import { kvDim, qDim } from '../formats/config.ts';
import type { ModelWeights } from '../formats/weights.ts';
import type { GraphBuilder } from '../runtime/ort/graph.ts';
import { createSession, f32, i64, ort, releaseSession, runSession, type OrtSession } from '../runtime/ort/session.ts';
import { addHead, buildHeadGraph, headBytes, headSlices, type HeadSlice } from './headGraph.ts';
import { buildLayerGraph, buildStackGraph, ropeTables, softmaxPart, type AttentionPart, type LayerGraph, type StateSpec } from './layerGraph.ts';
import { isInt4Symb, loadNativeLayer, type NativeLayerWeights } from './layerWeights.ts';
import { boundBytes } from './linear.ts';
import { modelConfigFile } from '../formats/weights.ts';
import { requireFiniteHost, validateIds, type PrefillOptions, type PrefillResult } from '../model/sequence.ts';

export type { PrefillOptions, PrefillResult } from '../model/sequence.ts';

/** Score elements (B · heads · T · T) one prefill batch may hold: 64 Mi floats (256 MiB). */
const SCORE_BUDGET = 1 << 26;

/** Logit values (B · T · vocab) one lm_head run may produce: 64 Mi floats (256 MiB). */
const LOGITS_BUDGET = 1 << 26;

/** The decoder chains consecutive layers into one graph up to this many bytes of weights. */
const STACK_BYTES = 1 << 30;

/**
 * Below this many bytes of weights per run, one intra-op thread: a decode step of a small model is
 * hundreds of tiny ops, where waking a thread pool costs more than it gives (stories260k: 1 thread
 * ~6x faster than 2 on a 2-core machine).
 */
const SMALL_RUN_BYTES = 16 << 20;

function nativeLayerBytes(lw: NativeLayerWeights): number {
  return Object.values(lw.linear).reduce((a, src) => a + boundBytes(src), 0);
}

/** What names a layer in errors: the model's config file and the layer. */
function layerWhat(weights: ModelWeights, l: number): string {
  return `${modelConfigFile(weights)} (layer ${l})`;
}

/** Serialize a graph; the 2 GiB protobuf limit is a user-facing refusal, not a crash. */
function graphBytes<T>(weights: ModelWeights, what: string, build: () => T): T {
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
function layerBytes(c: ModelConfig, int4GroupSize: number | null): number {
  const D = c.hiddenSize;
  const numel = D * (qDim(c) + 2 * kvDim(c)) + qDim(c) * D + 3 * D * c.intermediateSize;
  return int4GroupSize ? numel / 2 + (4 * numel) / int4GroupSize : 4 * numel;
}

/**
 * Refuse up front (one line) a model that cannot fit this machine's memory: streamed prefill
 * holds one layer (host copy, serialized graph, ORT's copy); the decoder holds every layer.
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

/** Concatenate per-sequence [T*D] arrays into one [B*T*D] batch. */
function stack(parts: Float32Array[]): Float32Array {
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
function initialState(st: StateSpec, batch: number): ort.Tensor {
  const dims = st.dims.map((d) => (typeof d === 'number' ? d : d === 'B' ? batch : 0));
  return f32(new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
}

/** The shared inputs (positions, RoPE tables) a layer graph declares, for positions start..start+T-1. */
function sharedFeeds(g: LayerGraph, c: ModelConfig, positions: number[]): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  if (g.usesPositions) feeds.positions = i64(positions);
  if (g.usesRope) {
    const { cos, sin } = ropeTables(c, positions);
    feeds.rope_cos = f32(cos, [positions.length, c.headDim]);
    feeds.rope_sin = f32(sin, [positions.length, c.headDim]);
  }
  return feeds;
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
    const session = await createSession(graphBytes(weights, 'the lm_head', () => buildHeadGraph(what, weights, slice)), what);
    try {
      for (let k = 0; k < streams.length; k++) {
        for (const batch of headBatches) {
          const T = sequences[batch[0]!]!.length;
          const h = f32(stack(batch.map((s) => streams[k]![s]!)), [batch.length, T, D]);
          const out = (await runSession(session, { h }, what)).logits!.data as Float32Array;
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
export async function nativePrefillMany(weights: ModelWeights, sequences: number[][], configs: NativeConfig[], opts: PrefillOptions = {}): Promise<Record<string, PrefillResult>> {
  const c = weights.config;
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
  for (let l = 0; l < c.numLayers; l++) {
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
    const layerWeights = loadNativeLayer(weights, l);
    const graph = graphBytes(weights, `layer ${l}`, () => buildLayerGraph(what, c, 'prefill', layerWeights, branches.map((br) => br.part), l));
    // (float32 weights: no prepacking for a session that runs once per batch; INT4 keeps it, see createSession)
    const session = await createSession(graph.bytes, what, { noPrepack: Object.values(layerWeights.linear).every((src) => src.kind === 'f32') });
    const outputs: Float32Array[][] = branches.map(() => new Array<Float32Array>(sequences.length));
    try {
      for (const batch of batches) {
        const T = sequences[batch[0]!]!.length;
        const positions = Array.from({ length: T }, (_, t) => t);
        const feeds = sharedFeeds(graph, c, positions);
        branches.forEach((br, i) => (feeds[`h${i}`] = f32(stack(batch.map((s) => br.input[s]!)), [batch.length, T, D])));
        for (const st of graph.states) feeds[st.input] = initialState(st, batch.length);
        const result = await runSession(session, feeds, what);
        branches.forEach((_, i) => {
          const out = result[`h${i}_out`]!.data as Float32Array;
          batch.forEach((s, j) => (outputs[i]![s] = out.slice(j * T * D, (j + 1) * T * D)));
        });
      }
    } finally {
      await releaseSession(session);
    }
    streams = branches.map((br, i) => ({ configs: br.configs, hidden: outputs[i]! }));
    if (opts.guardFinite !== false) {
      for (const st of streams) st.hidden.forEach((h, s) => requireFiniteHost(h, weights.dir, l, sequences.length > 1 ? s : null));
    }
    record();
    if (opts.onLayer && configs.length === 1) opts.onLayer(l, streams[0]!.hidden);
    opts.onLayerDone?.(l);
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
  opts: PrefillOptions & { attention?: (layer: number) => AttentionPart | null } = {},
): Promise<PrefillResult> {
  const r = await nativePrefillMany(weights, sequences, [{ name: 'model', attention: opts.attention ?? (() => null) }], opts);
  return r.model!;
}

/** A state's current value; fixed-shape states are double-buffered (fed one, written into the other). */
interface DecodeState {
  spec: StateSpec;
  current: ort.Tensor;
  /** The buffer the next run writes (fixed-shape states only; null = ORT allocates the output). */
  spare: ort.Tensor | null;
}

/** One resident decode graph: consecutive layers, and with `head` the final norm + lm_head too. */
interface DecodeStack {
  session: OrtSession;
  graph: LayerGraph;
  what: string;
  /** The vocabulary slice this graph's `logits` output holds, when the head is fused into it. */
  head: HeadSlice | null;
}

/** Whether a state's shape is known before the run (all dims numbers or the batch): it can be written in place. */
function fixedShape(st: StateSpec): boolean {
  return st.dims.every((d) => typeof d === 'number' || d === 'B');
}

/**
 * Incremental decoding: `step(id)` feeds the token at the current position and returns the
 * logits for the next one. Every layer's session stays resident (weights bound once); per-layer
 * state (the KV cache, or the parts' own state) is carried between steps. The head is fused into
 * the last layers' graph when it fits (one run per step for a model under STACK_BYTES), and
 * fixed-shape states (the gate's D×D) are written in place into a second buffer, never copied out.
 * `close()` frees it.
 */
export class NativeDecoder {
  private pos = 0;
  private states: DecodeState[][]; // per stack graph

  private constructor(
    private readonly weights: ModelWeights,
    private readonly layers: DecodeStack[],
    private readonly heads: { session: OrtSession; slice: HeadSlice; what: string }[],
  ) {
    this.states = layers.map(({ graph }) => graph.states.map((spec) => ({ spec, current: initialState(spec, 1), spare: fixedShape(spec) ? initialState(spec, 1) : null })));
  }

  /** `opts.stackBytes`: weights per chained graph (default 1 GiB; tests use 1 to get one graph per layer). */
  static async create(weights: ModelWeights, attention?: (layer: number) => AttentionPart | null, opts: { stackBytes?: number } = {}): Promise<NativeDecoder> {
    const stackBytes = opts.stackBytes ?? STACK_BYTES;
    const c = weights.config;
    requireNativeFits(weights, 'resident');
    const stacks: DecodeStack[] = [];
    const heads: { session: OrtSession; slice: HeadSlice; what: string }[] = [];
    const slices = headSlices(weights);
    // One head slice small enough rides in the last stack's graph (its run computes the logits).
    const fusedHead = slices.length === 1 && headBytes(weights, slices[0]!) <= stackBytes ? slices[0]! : null;
    try {
      // Consecutive layers chained into graphs of at most STACK_BYTES of weights each.
      let pending: { layer: number; weights: NativeLayerWeights; part: AttentionPart }[] = [];
      let pendingBytes = 0;
      const flush = async (head: HeadSlice | null) => {
        if (pending.length === 0) return;
        const first = pending[0]!.layer;
        const last = pending[pending.length - 1]!.layer;
        const what = `${modelConfigFile(weights)} (layer${first === last ? ` ${first}` : `s ${first}-${last}`}${head ? ' and lm_head' : ''})`;
        const layers = pending;
        const addHeadTo = head ? (b: GraphBuilder, h: string, T: number | 'T') => addHead(b, weights, head, h, T) : undefined;
        const graph = graphBytes(weights, `layer ${first}`, () => buildStackGraph(what, c, 'decode', layers, addHeadTo));
        const threads = pendingBytes / layers.length < SMALL_RUN_BYTES ? 1 : undefined;
        stacks.push({ session: await createSession(graph.bytes, what, { threads }), graph: { ...graph, bytes: new Uint8Array(0) }, what, head });
        pending = [];
        pendingBytes = 0;
      };
      const flushHeads = async (list: HeadSlice[]) => {
        for (const slice of list) {
          const what = `${modelConfigFile(weights)} (lm_head)`;
          const threads = slice.count * c.hiddenSize * 4 < SMALL_RUN_BYTES ? 1 : undefined;
          heads.push({ session: await createSession(graphBytes(weights, 'the lm_head', () => buildHeadGraph(what, weights, slice, 1)), what, { threads }), slice, what });
        }
      };
      for (let l = 0; l < c.numLayers; l++) {
        const lw = loadNativeLayer(weights, l);
        const bytes = nativeLayerBytes(lw);
        if (pending.length > 0 && pendingBytes + bytes > stackBytes) await flush(null);
        pending.push({ layer: l, weights: lw, part: attention?.(l) ?? softmaxPart });
        pendingBytes += bytes;
      }
      if (fusedHead && pendingBytes + headBytes(weights, fusedHead) > stackBytes) await flush(null);
      if (fusedHead && pending.length === 0) {
        // The head alone (the last layers filled their graph).
        await flushHeads([fusedHead]);
      } else {
        await flush(fusedHead);
        if (!fusedHead) await flushHeads(slices);
      }
    } catch (e) {
      for (const x of [...stacks, ...heads]) await releaseSession(x.session);
      throw e;
    }
    return new NativeDecoder(weights, stacks, heads);
  }

  get config(): ModelConfig {
    return this.weights.config;
  }

  /** Position of the next token fed (= tokens seen so far). */
  get position(): number {
    return this.pos;
  }

  /** Feed one token; returns the logits [vocab] predicting the token after it. */
  async step(tokenId: number): Promise<Float32Array> {
    const c = this.config;
    const V = c.vocabSize;
    validateIds(c, [tokenId]);
    const logits = new Float32Array(V);
    let h = f32(this.weights.embed([tokenId]), [1, 1, c.hiddenSize]);
    for (let l = 0; l < this.layers.length; l++) {
      const { session, graph, what, head } = this.layers[l]!;
      const feeds = sharedFeeds(graph, c, [this.pos]);
      feeds.h0 = h;
      const fetches: Record<string, ort.Tensor | null> = {};
      const states = this.states[l]!;
      for (const st of states) {
        feeds[st.spec.input] = st.current;
        fetches[st.spec.output!] = st.spare;
      }
      // The fused head writes straight into the returned array (one slice = the whole vocabulary).
      if (head) fetches.logits = f32(head.count === V ? logits : new Float32Array(head.count), [1, 1, head.count]);
      else fetches.h0_out = null;
      const out = await runSession(session, feeds, what, fetches);
      for (const st of states) {
        const next = st.spare ?? out[st.spec.output!]!;
        st.spare = st.spare ? st.current : null;
        st.current = next;
      }
      if (head && head.count !== V) logits.set(fetches.logits!.data as Float32Array, head.start);
      if (!head) h = out.h0_out!;
    }
    for (const head of this.heads) {
      const out = (await runSession(head.session, { h }, head.what)).logits!.data as Float32Array;
      logits.set(out, head.slice.start);
    }
    this.pos++;
    return logits;
  }

  /** Forget every position (states back to their initial zeros; sessions kept). */
  reset(): void {
    this.pos = 0;
    for (const states of this.states) {
      for (const st of states) {
        if (st.spare) (st.current.data as Float32Array).fill(0);
        else st.current = initialState(st.spec, 1);
      }
    }
  }

  /** Release every session. */
  async close(): Promise<void> {
    for (const x of [...this.layers, ...this.heads]) await releaseSession(x.session);
  }
}
