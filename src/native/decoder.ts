/**
 * The native (ONNX Runtime) decoder: one token at a time with resident per-layer sessions and
 * state (KV cache, or whatever state the attention parts declare).
 */
import { qDim, type ModelConfig } from '../formats/config.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { modelConfigFile } from '../formats/weights.ts';
import type { GraphBuilder } from '../runtime/ort/graph.ts';
import { createSession, f32, releaseSession, runSession, type ort, type OrtSession } from '../runtime/ort/session.ts';
import { addHead, buildHeadGraph, headBytes, headSlices, type HeadSlice } from './headGraph.ts';
import { buildStackGraph, softmaxPart, type AttentionPart, type LayerGraph, type StateSpec } from './layerGraph.ts';
import { loadNativeLayer, type NativeLayerWeights } from './layerWeights.ts';
import { validateIds } from '../model/sequence.ts';
import { buildGateFoldGraph, FOLD_IO } from './gateGraph.ts';
import { GATE_BASE, GATE_KEYS, GATE_LOGS, GATE_VALUES } from './gatePart.ts';
import { graphBytes, initialState, nativeLayerBytes, requireNativeFits, sharedFeeds, SMALL_RUN_BYTES, STACK_BYTES } from './common.ts';

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

/**
 * One gated layer's deferred state (gatePart.ts GATE_BASE and its buffer): M_base is folded with
 * the buffer every C tokens by a fold graph (no weights; one session per (D, C)), then the buffer
 * is emptied.
 */
interface FoldGroup {
  base: DecodeState;
  keys: DecodeState;
  values: DecodeState;
  logs: DecodeState;
  chunk: number;
  fold: { session: OrtSession; what: string };
}

/**
 * Gate states from this size on (D ≥ 256) are deferred (runnerFolds): below it the D² passes of
 * the plain step cost less than the deferred step's extra ops. Measured A/B on the 2-core machine:
 * stories260k (D = 64) plain 1.3–1.6× faster; D = 512 deferred 1.4–2.4× faster; D = 2048 1.8–2.7×.
 */
export const DEFERRED_MIN_STATE_BYTES = 1 << 18;

/**
 * Embedding tables up to this size are held as float32 rows: embed() dequantizes per call, ~17 µs
 * a token on stories260k, 3% of its step.
 */
const EMBED_TABLE_BYTES = 16 << 20;

/** Whether a state's shape is known before the run (all dims numbers or the batch): it can be written in place. */
function fixedShape(st: StateSpec): boolean {
  return st.dims.every((d) => typeof d === 'number' || d === 'B');
}

/**
 * Incremental decoding: `step(id)` feeds the token at the current position and returns the
 * logits for the next one. Every layer's session stays resident (weights bound once); per-layer
 * state (the KV cache, or the parts' own state) is carried between steps. The head is fused into
 * the last layers' graph when it fits (one run per step for a model under STACK_BYTES), and
 * fixed-shape states are written in place into a second buffer, never copied out. A large gate
 * state is deferred (runnerFolds): the graphs only read M_base and push the token into a buffer;
 * every C tokens the decoder folds the buffer into M_base (one fold run per gated layer).
 * `close()` frees it.
 */
export class NativeDecoder {
  private pos = 0;
  private states: DecodeState[][]; // per stack graph
  private folds: FoldGroup[];
  private readonly embedTable: Float32Array | null;

  private constructor(
    private readonly weights: ModelWeights,
    private readonly layers: DecodeStack[],
    private readonly heads: { session: OrtSession; slice: HeadSlice; what: string }[],
    private readonly foldSessions: Map<string, { session: OrtSession; what: string }>,
  ) {
    this.states = layers.map(({ graph }) => graph.states.map((spec) => ({ spec, current: initialState(spec, 1), spare: fixedShape(spec) ? initialState(spec, 1) : null })));
    this.folds = this.states.flatMap((states) => foldGroups(states, foldSessions));
    const { vocabSize: V, hiddenSize: H } = weights.config;
    this.embedTable = 4 * V * H <= EMBED_TABLE_BYTES ? weights.embed(Array.from({ length: V }, (_, i) => i)) : null;
  }

  /**
   * `opts.stackBytes`: weights per chained graph (default 1 GiB; tests use 1 to get one graph per layer).
   * `opts.runnerFolds`: gated layers keep the deferred state (M_base + a chunk of recent tokens, folded
   * here every chunk: a step reads each D×D state once instead of rewriting it); false: the plain
   * recurrent step. Default: deferred when the state has at least DEFERRED_MIN_STATE_BYTES.
   */
  static async create(weights: ModelWeights, attention?: (layer: number) => AttentionPart | null, opts: { stackBytes?: number; runnerFolds?: boolean } = {}): Promise<NativeDecoder> {
    const stackBytes = opts.stackBytes ?? STACK_BYTES;
    const c = weights.config;
    const runnerFolds = opts.runnerFolds ?? 4 * qDim(c) ** 2 >= DEFERRED_MIN_STATE_BYTES;
    requireNativeFits(weights, 'resident');
    const stacks: DecodeStack[] = [];
    const heads: { session: OrtSession; slice: HeadSlice; what: string }[] = [];
    const foldSessions = new Map<string, { session: OrtSession; what: string }>();
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
        const graph = graphBytes(weights, `layer ${first}`, () => buildStackGraph(what, c, 'decode', layers, addHeadTo, { runnerFolds }));
        const threads = pendingBytes / layers.length < SMALL_RUN_BYTES ? 1 : undefined;
        stacks.push({ session: await createSession(graph.bytes, what, { threads }), graph: { ...graph, bytes: new Uint8Array(0) }, what, head });
        for (const st of graph.states) {
          if (st.name !== GATE_BASE) continue;
          const D = st.dims[1] as number;
          const C = graph.states.find((x) => x.layer === st.layer && x.branch === st.branch && x.name === GATE_KEYS)!.dims[1] as number;
          const key = `${D}x${C}`;
          if (foldSessions.has(key)) continue;
          const foldWhat = `${modelConfigFile(weights)} (gate state fold)`;
          foldSessions.set(key, { session: await createSession(buildGateFoldGraph(foldWhat, D, C), foldWhat, { threads: D * D * 4 < SMALL_RUN_BYTES ? 1 : undefined }), what: foldWhat });
        }
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
      for (const x of [...stacks, ...heads, ...foldSessions.values()]) await releaseSession(x.session);
      throw e;
    }
    return new NativeDecoder(weights, stacks, heads, foldSessions);
  }

  get config(): ModelConfig {
    return this.weights.config;
  }

  /** How many gated layers keep the deferred state (folded every C tokens); 0 = the plain step. */
  get deferredLayers(): number {
    return this.folds.length;
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
    const H = c.hiddenSize;
    let h = f32(this.embedTable ? this.embedTable.slice(tokenId * H, (tokenId + 1) * H) : this.weights.embed([tokenId]), [1, 1, H]);
    for (let l = 0; l < this.layers.length; l++) {
      const { session, graph, what, head } = this.layers[l]!;
      const feeds = sharedFeeds(graph, c, [this.pos]);
      feeds.h0 = h;
      const fetches: Record<string, ort.Tensor | null> = {};
      const states = this.states[l]!;
      for (const st of states) {
        feeds[st.spec.input] = st.current;
        if (!st.spec.readOnly) fetches[st.spec.output!] = st.spare;
      }
      // The fused head writes straight into the returned array (one slice = the whole vocabulary).
      if (head) fetches.logits = f32(head.count === V ? logits : new Float32Array(head.count), [1, 1, head.count]);
      else fetches.h0_out = null;
      const out = await runSession(session, feeds, what, fetches);
      for (const st of states) {
        if (st.spec.readOnly) continue;
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
    for (const f of this.folds) if (this.pos % f.chunk === 0) await this.fold(f);
    return logits;
  }

  /** M_base ← fold(M_base, buffer) into the spare buffer, then empty the buffer. */
  private async fold(f: FoldGroup): Promise<void> {
    const feeds = { [FOLD_IO.base]: f.base.current, [FOLD_IO.keys]: f.keys.current, [FOLD_IO.values]: f.values.current, [FOLD_IO.logs]: f.logs.current };
    await runSession(f.fold.session, feeds, f.fold.what, { [FOLD_IO.out]: f.base.spare });
    [f.base.current, f.base.spare] = [f.base.spare!, f.base.current];
    for (const st of [f.keys, f.values, f.logs]) (st.current.data as Float32Array).fill(0);
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
    for (const x of [...this.layers, ...this.heads, ...this.foldSessions.values()]) await releaseSession(x.session);
  }
}

/** The deferred gate states of one stack graph, grouped per (layer, branch) with their fold session. */
function foldGroups(states: DecodeState[], sessions: Map<string, { session: OrtSession; what: string }>): FoldGroup[] {
  return states
    .filter((st) => st.spec.name === GATE_BASE)
    .map((base) => {
      const find = (name: string) => states.find((x) => x.spec.layer === base.spec.layer && x.spec.branch === base.spec.branch && x.spec.name === name)!;
      const keys = find(GATE_KEYS);
      const chunk = keys.spec.dims[1] as number;
      return { base, keys, values: find(GATE_VALUES), logs: find(GATE_LOGS), chunk, fold: sessions.get(`${base.spec.dims[1]}x${chunk}`)! };
    });
}
