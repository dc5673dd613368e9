/**
 * distill's MSE pass on ONNX Runtime: what `runPass` (train.ts) computes — per trained layer the
 * forward pass, each sequence's MSE and the gradients of the batch loss w.r.t. that layer's adapter
 * parameters — with one graph per trained layer (src/native/adapterTrainGraph.ts) instead of tfjs
 * autodiff. Same inputs (student stream or teacher hidden states), same loss scaling, same flat
 * gradient order; untrained layers between trained ones (--input student) run the native `--rest`
 * layer graph. Both students: adapter-v1, and adapter-window with its softmax part over the last W
 * positions in the same graph. The KL objective stays on tfjs.
 *
 * Sessions: a trained layer has a training session (forward + backward) and, for passes without
 * gradients (held-out), a forward-only one (ONNX Runtime runs every node whatever is fetched). Both
 * hold the layer's weights as bound (INT4 stays 4-bit); an INT4 layer's backward products take the
 * dequantized float32 matrices as inputs. Within `residentBytes`, first the sessions are kept for
 * the whole run (built once), then also the float32 matrices (else dequantized per training pass:
 * a run of one step dequantizes each layer once either way); what does not fit is built per pass,
 * one layer at a time. The trained layers' sessions run without ORT's CPU memory arena: side by
 * side, each would keep its own peak.
 */
import os from 'node:os';
import type { ModelWeights } from '../formats/weights.ts';
import { createSession, f32, i64, releaseSession, runSession, type ort, type OrtSession } from '../runtime/ort/session.ts';
import { buildAdapterTrainGraph } from '../native/adapterTrainGraph.ts';
import { buildLayerGraph, ropeTables, softmaxPart, type LayerGraph } from '../native/layerGraph.ts';
import { nativeAttentionFor, nativeStudentAttention } from '../native/gatePart.ts';
import { loadNativeLayer, type NativeLayerWeights } from '../native/layerWeights.ts';
import { dequantizeInt4Matrix, int4Repackable, linearShape } from '../native/linear.ts';
import { graphBytes, initialState, layerWhat, nativeLayerBytes, sharedFeeds, stack } from '../native/common.ts';
import { mean, passFrame, requireFiniteBeforeTrained, teacherHidden, type PassContext, type PassResult, type TrainOptions } from './train.ts';
import type { RestPolicy } from '../model/policy.ts';
import { nativePrefill } from '../native/model.ts';

const BACKWARD = ['o', 'gate', 'up', 'down'] as const;
/** A trained layer's parameters in AdapterVariables' flat order, as the graph's inputs; adapter-window adds window_mix. */
const PARAMS = ['gate_bias', 'gate_scale', 'output_scale', 'mix_alpha'] as const;
const WINDOW_PARAMS = [...PARAMS, 'window_mix'] as const;

/** Bytes of the float32 matrices an INT4 layer's backward products are fed. */
function floatInputBytes(lw: NativeLayerWeights): number {
  return BACKWARD.reduce((a, k) => {
    const src = lw.linear[k];
    const { inFeatures, outFeatures } = linearShape(src);
    return a + (src.kind === 'int4' && int4Repackable(src.m) ? 4 * inFeatures * outFeatures : 0);
  }, 0);
}

/**
 * Sessions of a run's layers (and the float32 matrices) are kept when they fit in this many bytes:
 * a step then builds no session (0.3–0.6 s each for a Magnus layer) and dequantizes nothing.
 */
export function nativeResidentBytes(): number {
  return Math.min(8 * 2 ** 30, 0.4 * os.totalmem());
}

/**
 * studentStreamBefore (train.ts) on the native engine: the embeddings of `sequences` through layers
 * 0..first−1 with the `--rest` policy (no adapter before the first trained layer), per sequence.
 */
export async function nativeStudentStreamBefore(weights: ModelWeights, sequences: number[][], first: number, rest: RestPolicy): Promise<Float32Array[]> {
  if (first === 0) return sequences.map((ids) => weights.embed(ids));
  let stream: Float32Array[] = [];
  await nativePrefill(weights, sequences, {
    attention: nativeStudentAttention(weights.config, { adapter: null, rest }),
    layers: first,
    logits: false,
    guardFinite: false,
    onLayer: (l, hidden) => {
      requireFiniteBeforeTrained(hidden, l, rest, first, weights.config.hiddenSize);
      stream = hidden;
    },
  });
  return stream;
}

type Built = { session: OrtSession; graph?: LayerGraph; floatInputs?: (typeof BACKWARD)[number][] };

export class NativeMsePass {
  private readonly kept = new Map<string, Built>();
  private readonly floats = new Map<number, Record<string, ort.Tensor>>();
  private positionFeeds: Record<string, ort.Tensor> | null = null;

  private constructor(
    private readonly weights: ModelWeights,
    private readonly ctx: PassContext,
    /** Every session kept across passes (else built per pass). */
    readonly resident: boolean,
    /** The float32 inputs of INT4 layers kept too (else dequantized per training pass). */
    readonly residentFloats: boolean,
  ) {}

  /** Whether this pass can replace runPass for these options (the MSE passes of adapter-v1 and adapter-window). */
  static supports(ctx: { opts: Pick<TrainOptions, 'window'> }): boolean {
    const w = ctx.opts.window ?? null;
    return w === null || (Number.isInteger(w) && w >= 1);
  }

  /** Sessions resident when the span's layers fit in `residentBytes` (a number), or as told (tests). */
  static create(weights: ModelWeights, ctx: PassContext, residentBytes: number | { sessions: boolean; floats: boolean }): NativeMsePass {
    if (!NativeMsePass.supports(ctx)) throw new Error(`NativeMsePass: window must be a positive integer, got ${ctx.opts.window}`);
    const { layers, input } = ctx.opts;
    const span = input === 'student' ? Array.from({ length: layers[layers.length - 1]! - layers[0]! + 1 }, (_, i) => layers[0]! + i) : layers;
    if (typeof residentBytes !== 'number') return new NativeMsePass(weights, ctx, residentBytes.sessions, residentBytes.sessions && residentBytes.floats);
    const lw = loadNativeLayer(weights, layers[0]!);
    // Measured on Magnus-shaped INT4 layers: a session holds about 1.5× the layer's bound bytes.
    const sessions = span.length * 2 * 1.5 * nativeLayerBytes(lw);
    const floats = layers.length * floatInputBytes(lw);
    return new NativeMsePass(weights, ctx, sessions <= residentBytes, sessions + floats <= residentBytes);
  }

  /** What the sessions keep, for the log. */
  describe(): string {
    if (!this.resident) return "one layer's session at a time";
    return `every layer's sessions kept for the run${this.residentFloats ? '' : '; float32 matrices of the backward pass dequantized per step'}`;
  }

  /** The float32 matrices layer l's training graph takes as inputs. */
  private floatFeeds(l: number, which: (typeof BACKWARD)[number][]): Record<string, ort.Tensor> {
    const kept = this.floats.get(l);
    if (kept) return kept;
    const feeds: Record<string, ort.Tensor> = {};
    if (which.length > 0) {
      const lw = loadNativeLayer(this.weights, l);
      for (const k of which) {
        const src = lw.linear[k];
        if (src.kind !== 'int4') throw new Error(`NativeMsePass: ${k} of layer ${l} is not int4`);
        feeds[`w_${k}`] = f32(dequantizeInt4Matrix(src.m), [src.m.rows, src.m.cols]);
      }
    }
    if (this.residentFloats) this.floats.set(l, feeds);
    return feeds;
  }

  private async build(l: number, trained: boolean, gradients: boolean): Promise<Built> {
    const key = `${l}:${trained && gradients}`;
    const kept = this.kept.get(key);
    if (kept) return kept;
    const { weights, ctx } = this;
    const c = weights.config;
    const what = layerWhat(weights, l);
    const lw = loadNativeLayer(weights, l);
    let built: Built;
    if (trained) {
      const g = graphBytes(weights, `layer ${l}`, () => buildAdapterTrainGraph(what, c, lw, { seqLen: ctx.seqLen, mlpGrad: ctx.opts.mlpGrad, gradients, window: ctx.opts.window ?? null }, l));
      built = { session: await createSession(g.bytes, what, { memArena: false }), floatInputs: g.floatInputs };
    } else {
      // An untrained layer between trained ones (--input student): the `--rest` policy's layer.
      const part = nativeAttentionFor({ kind: ctx.opts.rest }, ctx.opts.chunkSize !== undefined ? { chunkSize: ctx.opts.chunkSize } : {}) ?? softmaxPart;
      const graph = graphBytes(weights, `layer ${l}`, () => buildLayerGraph(what, c, 'prefill', lw, [part], l));
      built = { session: await createSession(graph.bytes, what), graph };
    }
    if (this.resident) this.kept.set(key, built);
    return built;
  }

  private async done(b: Built): Promise<void> {
    if (!this.resident) await releaseSession(b.session);
  }

  /** adapter-window's graphs read positions 0..T−1 and their RoPE tables (made once). */
  private windowFeeds(): Record<string, ort.Tensor> {
    if (!this.positionFeeds) {
      const { config: c, seqLen: T } = this.ctx;
      const positions = Array.from({ length: T }, (_, t) => t);
      const { cos, sin } = ropeTables(c, positions);
      this.positionFeeds = { positions: i64(positions), rope_cos: f32(cos, [T, c.headDim]), rope_sin: f32(sin, [T, c.headDim]) };
    }
    return this.positionFeeds;
  }

  /** runPass on ONNX Runtime: `params` in AdapterVariables' flat order (four per layer; adapter-window five). */
  async pass(seqIdx: number[], params: Float32Array[], withGrad: boolean): Promise<PassResult> {
    const { ctx, weights } = this;
    const { opts, seqLen: T } = ctx;
    const c = weights.config;
    const D = c.hiddenSize;
    const { trained, nLayers, B, first, last, lossPerLayer, grads } = passFrame(opts, seqIdx, withGrad);
    const teacherAt = (i: number) => teacherHidden(ctx, i);
    const windowed = (opts.window ?? null) !== null;
    const names: readonly string[] = windowed ? WINDOW_PARAMS : PARAMS;
    if (params.length !== names.length * nLayers) throw new Error(`NativeMsePass: ${params.length} parameter tensors for ${nLayers} layers of ${names.length}`);
    const split = (out: Float32Array) => seqIdx.map((_, j) => out.slice(j * T * D, (j + 1) * T * D));
    let stream: Float32Array[] | null = opts.input === 'student' ? seqIdx.map((s) => ctx.studentStart![s]!) : null;
    const prefetched = new Map<number, Record<string, ort.Tensor>>();
    for (let l = first; l <= last; l++) {
      const pos = trained.indexOf(l);
      if (pos < 0 && opts.input === 'teacher') continue;
      const what = layerWhat(weights, l);
      const built = await this.build(l, pos >= 0, withGrad);
      try {
        if (pos < 0) {
          const feeds = sharedFeeds(built.graph!, c, Array.from({ length: T }, (_, t) => t));
          feeds.h0 = f32(stack(stream!), [B, T, D]);
          for (const st of built.graph!.states) feeds[st.input] = initialState(st, B);
          stream = split((await runSession(built.session, feeds, what)).h0_out!.data as Float32Array);
          continue;
        }
        const inputs = opts.input === 'student' ? stream! : seqIdx.map((s) => teacherAt(l)[s]!);
        const feeds: Record<string, ort.Tensor> = {
          h: f32(stack(inputs), [B, T, D]),
          target: f32(stack(seqIdx.map((s) => teacherAt(l + 1)[s]!)), [B, T, D]),
        };
        names.forEach((name, i) => (feeds[name] = f32(Float32Array.from(params[names.length * pos + i]!), [name === 'output_scale' ? D : 1])));
        if (windowed) Object.assign(feeds, this.windowFeeds());
        if (withGrad) {
          feeds.grad_scale = f32(Float32Array.of(1 / (B * nLayers)), [1]);
          Object.assign(feeds, prefetched.get(l) ?? this.floatFeeds(l, built.floatInputs!));
          prefetched.delete(l);
        }
        const keepOutputs = opts.input === 'student' && l < last;
        const fetches: Record<string, null> = { mse: null };
        if (keepOutputs) fetches.out = null;
        if (withGrad) for (const name of names) fetches[`d_${name}`] = null;
        const running = runSession(built.session, feeds, what, fetches);
        const next = trained[pos + 1];
        if (withGrad && next !== undefined && !this.residentFloats && built.floatInputs!.length > 0) {
          // ONNX Runtime computes this layer on its own threads meanwhile: dequantize the next one's matrices now.
          prefetched.set(next, this.floatFeeds(next, built.floatInputs!));
        }
        const r = await running;
        lossPerLayer[pos] = mean(r.mse!.data as Float32Array);
        if (withGrad) for (const name of names) grads!.push(Float32Array.from(r[`d_${name}`]!.data as Float32Array));
        stream = keepOutputs ? split(r.out!.data as Float32Array) : null;
      } finally {
        await this.done(built);
      }
    }
    return { lossPerLayer, loss: mean(lossPerLayer), grads };
  }

  /** evaluatePerLayer on ONNX Runtime: per-layer MSE over many sequences, in batches. */
  async evaluate(seqIdx: number[], params: Float32Array[], batchSize: number): Promise<number[]> {
    const sums = new Array<number>(this.ctx.opts.layers.length).fill(0);
    for (let i = 0; i < seqIdx.length; i += batchSize) {
      const batch = seqIdx.slice(i, i + batchSize);
      const r = await this.pass(batch, params, false);
      r.lossPerLayer.forEach((v, k) => (sums[k]! += v * batch.length));
    }
    return sums.map((s) => s / seqIdx.length);
  }

  async close(): Promise<void> {
    for (const b of this.kept.values()) await releaseSession(b.session);
    this.kept.clear();
    this.floats.clear();
  }
}
