/**
 * The one interface through which the teacher and the student see a model's weights, whatever the
 * file format (HF safetensors directory or SYNAXIM .symb directory). Weights are handed out as
 * float32 host arrays, one layer at a time, so callers can stream: load layer l, use it, drop it.
 * Matrices keep the PyTorch `nn.Linear` orientation: [out_features, in_features], row-major.
 */
import path from 'node:path';
import type { ModelConfig } from './config.ts';

export interface Matrix {
  data: Float32Array;
  rows: number; // out_features (or vocab for embeddings)
  cols: number; // in_features (or hidden for embeddings)
}

export interface LayerWeights {
  inputNorm: Float32Array; // input_layernorm.weight [hidden]
  q: Matrix; // self_attn.q_proj.weight [numHeads*headDim, hidden]
  k: Matrix; // self_attn.k_proj.weight [numKvHeads*headDim, hidden]
  v: Matrix; // self_attn.v_proj.weight [numKvHeads*headDim, hidden]
  o: Matrix; // self_attn.o_proj.weight [hidden, numHeads*headDim]
  qBias: Float32Array | null;
  kBias: Float32Array | null;
  vBias: Float32Array | null;
  postNorm: Float32Array; // post_attention_layernorm.weight [hidden]
  gate: Matrix; // mlp.gate_proj.weight [intermediate, hidden]
  up: Matrix; // mlp.up_proj.weight [intermediate, hidden]
  down: Matrix; // mlp.down_proj.weight [hidden, intermediate]
}

export interface ModelWeights {
  readonly config: ModelConfig;
  /** The directory the weights come from. */
  readonly dir: string;
  readonly format: 'hf' | 'symb';
  /** e.g. 'F32', 'BF16', 'int4/g128' — what is stored on disk. */
  readonly storage: string;
  /** Embedding rows for the given token ids: [ids.length, hidden] row-major. */
  embed(ids: ArrayLike<number>): Float32Array;
  /** Rows [start, start+count) of the output projection (lm_head, or the embedding when tied): [count, hidden]. */
  lmHeadRows(start: number, count: number): Matrix;
  finalNorm(): Float32Array;
  layer(index: number): LayerWeights;
  /** Release file handles and caches. */
  close(): void;
}

/** The file that describes a model (named by errors about the model as a whole). */
export function modelConfigFile(weights: Pick<ModelWeights, 'dir' | 'format'>): string {
  return path.join(weights.dir, weights.format === 'hf' ? 'config.json' : 'config.symb.json');
}
