import { parseHfConfig, type ModelConfig } from '../../src/formats/config.ts';
import type { LayerWeights, Matrix, ModelWeights } from '../../src/formats/weights.ts';
import { randoms } from './numeric.ts';

/** A random Llama-shaped model held in memory (no files), for tests that need no fixtures. */
export function randomModel(shape: { hidden: number; layers: number; heads: number; kvHeads: number; headDim: number; vocab: number; inter: number }, seed: number): ModelWeights {
  const config = parseHfConfig({
    architectures: ['LlamaForCausalLM'],
    hidden_size: shape.hidden,
    intermediate_size: shape.inter,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    head_dim: shape.headDim,
    vocab_size: shape.vocab,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
  });
  const D = shape.heads * shape.headDim;
  const kv = shape.kvHeads * shape.headDim;
  const mat = (rows: number, cols: number, s: number): Matrix => ({ rows, cols, data: randoms(rows * cols, s, 1 / Math.sqrt(cols)) });
  const emb = randoms(shape.vocab * shape.hidden, seed, 1);
  const layers: LayerWeights[] = Array.from({ length: shape.layers }, (_, l) => {
    const s = seed + 100 * (l + 1);
    return {
      inputNorm: Float32Array.from(randoms(shape.hidden, s), (x) => 1 + 0.2 * x),
      q: mat(D, shape.hidden, s + 1),
      k: mat(kv, shape.hidden, s + 2),
      v: mat(kv, shape.hidden, s + 3),
      o: mat(shape.hidden, D, s + 4),
      qBias: null,
      kBias: null,
      vBias: null,
      postNorm: Float32Array.from(randoms(shape.hidden, s + 5), (x) => 1 + 0.2 * x),
      gate: mat(shape.inter, shape.hidden, s + 6),
      up: mat(shape.inter, shape.hidden, s + 7),
      down: mat(shape.hidden, shape.inter, s + 8),
    };
  });
  return {
    config,
    dir: '(memory)',
    format: 'hf',
    storage: 'F32',
    embed: (ids) => {
      const out = new Float32Array(ids.length * shape.hidden);
      for (let i = 0; i < ids.length; i++) out.set(emb.subarray(ids[i]! * shape.hidden, (ids[i]! + 1) * shape.hidden), i * shape.hidden);
      return out;
    },
    lmHeadRows: (start, count) => ({ rows: count, cols: shape.hidden, data: emb.slice(start * shape.hidden, (start + count) * shape.hidden) }),
    finalNorm: () => new Float32Array(shape.hidden).fill(1),
    layer: (i) => layers[i]!,
    close: () => {},
  };
}

export interface SyntheticModelOptions {
  /** The config's sliding window (default 3; null: none). */
  slidingWindow?: number | null;
  /** The config's RoPE scaling (default llama3, factor 4; null: none). */
  ropeScaling?: ModelConfig['ropeScaling'];
  /** Scale of the random projection weights (default 0.4), of q and k (default the same), and of the norms' noise around 1 (default 1). */
  weightScale?: number;
  qkScale?: number;
  normNoise?: number;
}

/**
 * An in-memory qwen2-like model exercising every option: q/k/v biases, sliding window 3, llama3
 * RoPE scaling, untied lm_head, GQA 2:1 (the window and scaling, and the weights' scales, as told).
 */
export function syntheticModel(opts: SyntheticModelOptions = {}): ModelWeights {
  const config: ModelConfig = {
    architecture: 'mistral', hiddenSize: 16, intermediateSize: 24, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 4,
    vocabSize: 20, maxPositionEmbeddings: 64, rmsNormEps: 1e-5, ropeTheta: 100,
    ropeScaling: opts.ropeScaling !== undefined ? opts.ropeScaling : { type: 'llama3', factor: 4, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
    slidingWindow: opts.slidingWindow !== undefined ? opts.slidingWindow : 3, tieWordEmbeddings: false, attentionBias: true, bosTokenId: 1, eosTokenIds: [2], torchDtype: null,
  };
  const { hiddenSize: D, intermediateSize: I, vocabSize: V } = config;
  const ws = opts.weightScale ?? 0.4;
  const qk = opts.qkScale ?? ws;
  const noise = opts.normNoise ?? 1;
  const m = (rows: number, cols: number, seed: number, scale = ws): Matrix => ({ data: randoms(rows * cols, seed, scale), rows, cols });
  const embed = randoms(V * D, 1);
  const head = randoms(V * D, 2, 0.5);
  const layers: LayerWeights[] = [0, 1].map((l) => ({
    inputNorm: randoms(D, 10 + l, noise).map((x) => 1 + 0.3 * x), q: m(16, D, 20 + l, qk), k: m(8, D, 30 + l, qk), v: m(8, D, 40 + l), o: m(D, 16, 50 + l),
    qBias: randoms(16, 60 + l, 0.2), kBias: randoms(8, 70 + l, 0.2), vBias: randoms(8, 80 + l, 0.2),
    postNorm: randoms(D, 90 + l, noise).map((x) => 1 + 0.3 * x), gate: m(I, D, 100 + l), up: m(I, D, 110 + l), down: m(D, I, 120 + l),
  }));
  return {
    config, dir: '(synthetic)', format: 'hf', storage: 'F32',
    embed: (ids) => {
      const out = new Float32Array(ids.length * D);
      for (let t = 0; t < ids.length; t++) out.set(embed.subarray(ids[t]! * D, (ids[t]! + 1) * D), t * D);
      return out;
    },
    lmHeadRows: (start, count) => ({ data: head.slice(start * D, (start + count) * D), rows: count, cols: D }),
    finalNorm: () => randoms(D, 3, noise).map((x) => 1 + 0.3 * x),
    layer: (l) => layers[l]!,
    close: () => {},
  };
}
