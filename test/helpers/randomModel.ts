import { parseHfConfig } from '../../src/formats/config.ts';
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
