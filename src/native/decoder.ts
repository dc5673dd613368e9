/**
 * The native (ONNX Runtime) decoder: one token at a time with resident per-layer sessions and
 * state (KV cache, or whatever state the attention parts declare).
 */
import type { ModelConfig } from '../formats/config.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { modelConfigFile } from '../formats/weights.ts';
import type { GraphBuilder } from '../runtime/ort/graph.ts';
import { createSession, f32, releaseSession, runSession, type ort, type OrtSession } from '../runtime/ort/session.ts';
import { addHead, buildHeadGraph, headBytes, headSlices, type HeadSlice } from './headGraph.ts';
import { buildStackGraph, softmaxPart, type AttentionPart, type LayerGraph, type StateSpec } from './layerGraph.ts';
import { loadNativeLayer, type NativeLayerWeights } from './layerWeights.ts';
import { validateIds } from '../model/sequence.ts';
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
