/**
 * The decoder layer, written once (llama2.c `forward`, nanoGPT `Block`), for the teacher, the
 * student, training and decoding alike:
 *
 *   x   = RMSNorm(h)                      input_layernorm
 *   h'  = h + attention(x)                the attention part: a POLICY (policy.ts)
 *   h'' = h' + MLP(RMSNorm(h'))           post_attention_layernorm, SwiGLU
 *
 * `decoderLayer` is the skeleton around any attention function; `policyAttention` is the attention
 * part for a layer policy, over a whole sequence from position 0 (prefill, training) or continuing
 * a layer's decoding state (KV cache, gate state) one token or one block at a time.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../formats/config.ts';
import { rmsNorm, ropeCosSin, swigluMlp, type LayerTensors } from './nn.ts';
import { cachedSoftmaxAttentionBlock, KvCache, attentionShape, softmaxAttentionBlock, windowShape } from './attention.ts';
import { gateBlockOutput, gateChunkedOutput, gateContinue, gateInputs } from './gate.ts';
import { adapterWindowMix } from './adapter.ts';
import { isGated, needsRope, softmaxWindow, type LayerPolicy } from './policy.ts';

export type RopeTables = { cos: tf.Tensor2D; sin: tf.Tensor2D };
/** 'detached' holds the MLP output constant for gradients (the SYNAXIM training scripts); default 'exact'. */
export type MlpGrad = 'exact' | 'detached';

/**
 * Identity in the forward pass, zero gradient: the MLP runs inside (so its ops are not even
 * recorded for backprop) and its output is a constant as far as autodiff is concerned.
 * (tfjs-core has no stopGradient.)
 */
function detachedMlp(x: tf.Tensor2D, layer: LayerTensors): tf.Tensor2D {
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const input = args[0] as tf.Tensor2D;
    return { value: swigluMlp(input, layer.gate, layer.up, layer.down), gradFunc: () => tf.zerosLike(input) };
  });
  return f(x) as tf.Tensor2D;
}

/**
 * THE layer step: pre-norm residual attention block, then pre-norm residual MLP. h [T, hidden];
 * `attention` maps the normed input x [T, hidden] to the attention block's output (after o_proj).
 */
export function decoderLayer(h: tf.Tensor2D, layer: LayerTensors, eps: number, attention: (x: tf.Tensor2D) => tf.Tensor2D, mlpGrad: MlpGrad = 'exact'): tf.Tensor2D {
  return tf.tidy(() => {
    const attnOut = attention(rmsNorm(h, layer.inputNorm, eps));
    const afterAttn = tf.add(h, attnOut) as tf.Tensor2D;
    const mlpIn = rmsNorm(afterAttn, layer.postNorm, eps);
    const mlpOut = mlpGrad === 'detached' ? detachedMlp(mlpIn, layer) : swigluMlp(mlpIn, layer.gate, layer.up, layer.down);
    return tf.add(afterAttn, mlpOut) as tf.Tensor2D;
  });
}

/**
 * What one layer keeps between decoding calls: the KV cache of its softmax part (teacher, window,
 * adapter-window; a window layer's keeps its last W positions) and the gate state M (gated
 * layers; null before the first token, i.e. M = 0).
 */
export class LayerState {
  readonly cache: KvCache | null;
  gate: tf.Tensor2D | null = null;

  constructor(c: ModelConfig, policy: LayerPolicy) {
    const window = softmaxWindow(policy);
    this.cache = policy.kind === 'teacher' ? new KvCache(attentionShape(c)) : window !== null ? new KvCache(windowShape(c, window)) : null;
  }

  /** Bytes of the gate state now (D_q² × 4 once a token was fed). */
  get gateBytes(): number {
    return this.gate ? this.gate.size * 4 : 0;
  }

  /** Replace the gate state (kept across tidy scopes). */
  setGate(next: tf.Tensor2D): void {
    const kept = tf.keep(next);
    this.gate?.dispose();
    this.gate = kept;
  }

  reset(): void {
    this.gate?.dispose();
    this.gate = null;
    this.cache?.reset();
  }
}

export interface AttentionContext {
  /** RoPE tables [T, headDim] for the tokens' positions; made for positions 0..T-1 when absent (whole sequences only). */
  rope?: RopeTables | null;
  /** Parallel-gate chunk size (default: gate.ts `defaultChunkSize`). */
  chunkSize?: number;
  /** Decoding: the layer's state, continued and advanced. Absent: a whole sequence from position 0. */
  state?: LayerState;
}

/** The attention part of a layer with policy `policy`: normed input x [T, hidden] -> o [T, hidden]. */
export function policyAttention(x: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, policy: LayerPolicy, ctx: AttentionContext = {}): tf.Tensor2D {
  return tf.tidy(() => {
    const state = ctx.state;
    let rope: RopeTables | null = null;
    if (needsRope(policy)) {
      if (!ctx.rope && state) throw new Error('policyAttention: decoding needs RoPE tables for the tokens positions');
      rope = ctx.rope ?? ropeCosSin(c, Array.from({ length: x.shape[0] }, (_, i) => i));
    }
    const window = softmaxWindow(policy);
    const softmax = (shape = window === null ? attentionShape(c) : windowShape(c, window)): tf.Tensor2D =>
      state ? cachedSoftmaxAttentionBlock(x, layer, c, rope!.cos, rope!.sin, state.cache!) : softmaxAttentionBlock(x, layer, c, rope!.cos, rope!.sin, shape);
    if (!isGated(policy)) return softmax();
    const seq = gateInputs(x, layer, c, policy, rope);
    let r: tf.Tensor2D;
    if (state) {
      const next = gateContinue(seq, state.gate, ctx.chunkSize);
      state.setGate(next.state);
      r = next.r;
    } else {
      r = gateChunkedOutput(seq, ctx.chunkSize);
    }
    const gated = gateBlockOutput(r, x, layer, policy);
    // adapter-window: the softmax part over the last W positions beside the gate.
    return policy.kind === 'adapter' && window !== null ? adapterWindowMix(softmax(), gated, policy) : gated;
  });
}

export interface LayerForwardOptions extends AttentionContext {
  mlpGrad?: MlpGrad;
}

/**
 * One decoder layer with policy `policy`: h [T, hidden] -> h'' [T, hidden]. Over a whole sequence
 * it is pure and differentiable w.r.t. the adapter parameters in `policy` (tf.Variables when
 * training); with `state` it continues decoding.
 */
export function policyLayer(h: tf.Tensor2D, layer: LayerTensors, c: ModelConfig, policy: LayerPolicy, opts: LayerForwardOptions = {}): tf.Tensor2D {
  return decoderLayer(h, layer, c.rmsNormEps, (x) => policyAttention(x, layer, c, policy, opts), opts.mlpGrad);
}
