/**
 * distill's MSE pass on ONNX Runtime: what `runPass` (train.ts) computes — per trained layer the
 * forward pass, each sequence's MSE and the gradients of the batch loss w.r.t. that layer's adapter
 * parameters — with one graph per trained layer (src/native/adapterTrainGraph.ts) instead of tfjs
 * autodiff. Same inputs (student stream or teacher hidden states), same loss scaling, same flat
 * gradient order; untrained layers between trained ones (--input student) run the native `--rest`
 * layer graph. adapter-window and the KL objective stay on tfjs.
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
import { createSession, f32, releaseSession, runSession, type ort, type OrtSession } from '../runtime/ort/session.ts';
import { buildAdapterTrainGraph } from '../native/adapterTrainGraph.ts';
import { buildLayerGraph, softmaxPart, type LayerGraph } from '../native/layerGraph.ts';
import { nativeAttentionFor } from '../native/gatePart.ts';
import { loadNativeLayer, type NativeLayerWeights } from '../native/layerWeights.ts';
import { dequantizeInt4Matrix, int4Repackable, linearShape } from '../native/linear.ts';
import { graphBytes, initialState, layerWhat, nativeLayerBytes, sharedFeeds, stack } from '../native/common.ts';
import type { PassContext, PassResult, TrainOptions } from './train.ts';

const BACKWARD = ['o', 'gate', 'up', 'down'] as const;

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

function mean(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return s / xs.length;
}

type Built = { session: OrtSession; graph?: LayerGraph; floatInputs?: (typeof BACKWARD)[number][] };

export class NativeMsePass {
  private readonly kept = new Map<string, Built>();
  private readonly floats = new Map<number, Record<string, ort.Tensor>>();

  private constructor(
    private readonly weights: ModelWeights,
    private readonly ctx: PassContext,
    /** Every session kept across passes (else built per pass). */
    readonly resident: boolean,
    /** The float32 inputs of INT4 layers kept too (else dequantized per training pass). */
    readonly residentFloats: boolean,
  ) {}

  /** Whether this pass can replace runPass for these options (adapter-v1; adapter-window stays tfjs). */
  static supports(ctx: { opts: Pick<TrainOptions, 'window'> }): boolean {
    return (ctx.opts.window ?? null) === null;
  }

  /** Sessions resident when the span's layers fit in `residentBytes` (a number), or as told (tests). */
  static create(weights: ModelWeights, ctx: PassContext, residentBytes: number | { sessions: boolean; floats: boolean }): NativeMsePass {
    if (!NativeMsePass.supports(ctx)) throw new Error('NativeMsePass: adapter-window trains on tfjs');
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
      const g = graphBytes(weights, `layer ${l}`, () => buildAdapterTrainGraph(what, c, lw, { seqLen: ctx.seqLen, mlpGrad: ctx.opts.mlpGrad, gradients }, l));
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

  /** runPass on ONNX Runtime: `params` in AdapterVariables' flat order (adapter-v1, four per layer). */
  async pass(seqIdx: number[], params: Float32Array[], withGrad: boolean): Promise<PassResult> {
    const { ctx, weights } = this;
    const { opts, seqLen: T } = ctx;
    const c = weights.config;
    const D = c.hiddenSize;
    const trained = opts.layers;
    const nLayers = trained.length;
    const B = seqIdx.length;
    const first = trained[0]!;
    const last = trained[nLayers - 1]!;
    const lossPerLayer = new Array<number>(nLayers).fill(NaN);
    const grads: Float32Array[] | null = withGrad ? [] : null;
    const teacherAt = (i: number) => {
      const h = ctx.teacher.get(i);
      if (!h) throw new Error(`teacher hidden state ${i} was not prepared`);
      return h;
    };
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
        const k = 4 * pos;
        const feeds: Record<string, ort.Tensor> = {
          h: f32(stack(inputs), [B, T, D]),
          target: f32(stack(seqIdx.map((s) => teacherAt(l + 1)[s]!)), [B, T, D]),
          gate_bias: f32(Float32Array.from(params[k]!), [1]),
          gate_scale: f32(Float32Array.from(params[k + 1]!), [1]),
          output_scale: f32(Float32Array.from(params[k + 2]!), [D]),
          mix_alpha: f32(Float32Array.from(params[k + 3]!), [1]),
        };
        if (withGrad) {
          feeds.grad_scale = f32(Float32Array.of(1 / (B * nLayers)), [1]);
          Object.assign(feeds, prefetched.get(l) ?? this.floatFeeds(l, built.floatInputs!));
          prefetched.delete(l);
        }
        const keepOutputs = opts.input === 'student' && l < last;
        const fetches: Record<string, null> = { mse: null };
        if (keepOutputs) fetches.out = null;
        if (withGrad) for (const name of ['d_gate_bias', 'd_gate_scale', 'd_output_scale', 'd_mix_alpha']) fetches[name] = null;
        const running = runSession(built.session, feeds, what, fetches);
        const next = trained[pos + 1];
        if (withGrad && next !== undefined && !this.residentFloats && built.floatInputs!.length > 0) {
          // ONNX Runtime computes this layer on its own threads meanwhile: dequantize the next one's matrices now.
          prefetched.set(next, this.floatFeeds(next, built.floatInputs!));
        }
        const r = await running;
        lossPerLayer[pos] = mean(r.mse!.data as Float32Array);
        if (withGrad) for (const name of ['d_gate_bias', 'd_gate_scale', 'd_output_scale', 'd_mix_alpha']) grads!.push(Float32Array.from(r[name]!.data as Float32Array));
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
