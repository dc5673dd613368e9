/**
 * Model shapes for per-layer benchmarks without files: the exact dimensions of the fixture shapes
 * (Magnus = Mistral-7B v0.3, Llama-3.2-1B) and a small one for quick runs, with deterministic random
 * weights (in memory, or written as an HF checkpoint). Per-layer cost depends on the shapes only, so
 * random weights time the same as real ones.
 */
import { pseudoRandom } from '../src/util/random.ts';
import { parseHfConfig, qDim, kvDim, type ModelConfig } from '../src/formats/config.ts';
import fs from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic } from '../src/util/atomic.ts';
import { byteTokenizerJson, fixtureConfig, TOKENIZER_CONFIG } from '../src/formats/fixture.ts';
import { writeSafetensors, type StTensorToWrite } from '../src/formats/safetensors.ts';
import type { LayerWeights, Matrix, ModelWeights } from '../src/formats/weights.ts';

export type BenchShape = 'magnus' | 'llama-1b' | 'small';

export function benchConfig(shape: BenchShape): ModelConfig {
  return parseHfConfig(shapeJson(shape), `bench:${shape}`);
}

/** HF config.json contents of a shape ('small': a 25 M-parameter Llama for quick runs). */
export function shapeJson(shape: BenchShape): Record<string, unknown> {
  if (shape !== 'small') return fixtureConfig(shape);
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 512, intermediate_size: 1536, num_hidden_layers: 8,
    num_attention_heads: 8, num_key_value_heads: 2, head_dim: 64, vocab_size: 4096, max_position_embeddings: 4096,
    rope_theta: 10000.0, rms_norm_eps: 1e-5, tie_word_embeddings: true, bos_token_id: 1, eos_token_id: 2,
  };
}

function hostRandom(n: number, std: number, seed: number): Float32Array {
  const d = pseudoRandom(n, seed);
  const a = std * Math.sqrt(3);
  for (let i = 0; i < n; i++) d[i]! *= a;
  return d;
}

/**
 * ModelWeights of random values with a shape's dimensions and `numLayers` layers (the benchmark
 * runs one layer of a big shape), for code that takes ModelWeights (the distillation's
 * LayerSource, the decoders). Host matrices are [out, in] like every ModelWeights.
 */
export class SyntheticWeights implements ModelWeights {
  readonly format = 'hf' as const;
  readonly storage = 'F32 (random)';
  readonly dir: string;
  constructor(readonly config: ModelConfig, readonly seed = 1) {
    this.dir = `synthetic:${config.hiddenSize}x${config.numLayers}`;
  }
  embed(ids: ArrayLike<number>): Float32Array {
    const D = this.config.hiddenSize;
    const out = new Float32Array(ids.length * D);
    for (let t = 0; t < ids.length; t++) out.set(pseudoRandom(D, 1000 + ids[t]!), t * D);
    return out;
  }
  lmHeadRows(start: number, count: number): Matrix {
    const D = this.config.hiddenSize;
    return { data: hostRandom(count * D, 4 / Math.sqrt(D), 7000 + start), rows: count, cols: D };
  }
  finalNorm(): Float32Array {
    return new Float32Array(this.config.hiddenSize).fill(1);
  }
  layer(index: number): LayerWeights {
    const c = this.config;
    const D = c.hiddenSize;
    const I = c.intermediateSize;
    const s = this.seed + 100 * index;
    const m = (rows: number, cols: number, std: number, k: number): Matrix => ({ data: hostRandom(rows * cols, std, s + k), rows, cols });
    return {
      inputNorm: new Float32Array(D).fill(1),
      q: m(qDim(c), D, 2 / Math.sqrt(D), 1),
      k: m(kvDim(c), D, 2 / Math.sqrt(D), 2),
      v: m(kvDim(c), D, 1 / Math.sqrt(D), 3),
      o: m(D, qDim(c), 1 / Math.sqrt(qDim(c)), 4),
      qBias: null,
      kBias: null,
      vBias: null,
      postNorm: new Float32Array(D).fill(1),
      gate: m(I, D, 1 / Math.sqrt(D), 6),
      up: m(I, D, 1 / Math.sqrt(D), 7),
      down: m(D, I, 1 / Math.sqrt(I), 8),
    };
  }
  close(): void {}
}

/** The config with another layer count / vocabulary (one layer of Magnus, a decoder without a big lm_head). */
export function withShape(c: ModelConfig, changes: Partial<Pick<ModelConfig, 'numLayers' | 'vocabSize'>>): ModelConfig {
  return { ...c, ...changes };
}

/**
 * Write a shape as an HF checkpoint directory (config.json, F32 model.safetensors, the fixtures'
 * byte-level tokenizer) so whole-pipeline code (runEval) can run on it. Random weights.
 */
export function writeSyntheticHf(dir: string, shape: BenchShape, overrides: Record<string, unknown> = {}): ModelConfig {
  const cfgJson = { ...shapeJson(shape), ...overrides, torch_dtype: 'float32' };
  const c = parseHfConfig(cfgJson, path.join(dir, 'config.json'));
  const w = new SyntheticWeights(c);
  const tensors: Record<string, StTensorToWrite> = {};
  const put = (name: string, data: Float32Array, shape2: number[]) => (tensors[name] = { dtype: 'F32', shape: shape2, data });
  const embed = w.lmHeadRows(0, c.vocabSize);
  put('model.embed_tokens.weight', embed.data, [c.vocabSize, c.hiddenSize]);
  if (!c.tieWordEmbeddings) put('lm_head.weight', w.lmHeadRows(0, c.vocabSize).data, [c.vocabSize, c.hiddenSize]);
  put('model.norm.weight', w.finalNorm(), [c.hiddenSize]);
  for (let l = 0; l < c.numLayers; l++) {
    const lw = w.layer(l);
    const p = `model.layers.${l}.`;
    put(p + 'input_layernorm.weight', lw.inputNorm, [c.hiddenSize]);
    put(p + 'post_attention_layernorm.weight', lw.postNorm, [c.hiddenSize]);
    const mats: [string, Matrix][] = [['self_attn.q_proj', lw.q], ['self_attn.k_proj', lw.k], ['self_attn.v_proj', lw.v], ['self_attn.o_proj', lw.o], ['mlp.gate_proj', lw.gate], ['mlp.up_proj', lw.up], ['mlp.down_proj', lw.down]];
    for (const [n, m] of mats) put(`${p}${n}.weight`, m.data, [m.rows, m.cols]);
  }
  fs.mkdirSync(dir, { recursive: true });
  writeJsonAtomic(path.join(dir, 'config.json'), cfgJson);
  writeJsonAtomic(path.join(dir, 'tokenizer.json'), byteTokenizerJson(Math.min(320, c.vocabSize)));
  writeJsonAtomic(path.join(dir, 'tokenizer_config.json'), TOKENIZER_CONFIG);
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return c;
}
