/**
 * A Hugging Face checkpoint directory (config.json + safetensors, single or sharded) as
 * ModelWeights. Tensors are read one at a time on demand; every shape is checked against the
 * config so a mismatched checkpoint is an error, never a silently wrong model.
 */
import path from 'node:path';
import { fail } from '../core/errors.ts';
import { type ModelConfig, parseHfConfig, readJsonFile, qDim, kvDim } from './config.ts';
import { SafetensorsCheckpoint } from './safetensors.ts';
import type { LayerWeights, Matrix, ModelWeights } from './weights.ts';

export class HfWeights implements ModelWeights {
  readonly config: ModelConfig;
  readonly dir: string;
  readonly format = 'hf' as const;
  readonly storage: string;
  private readonly ckpt: SafetensorsCheckpoint;

  constructor(dir: string) {
    this.dir = dir;
    this.config = parseHfConfig(readJsonFile(path.join(dir, 'config.json')), path.join(dir, 'config.json'));
    this.ckpt = SafetensorsCheckpoint.open(dir);
    this.storage = this.ckpt.info('model.embed_tokens.weight').dtype;
  }

  private tensor(name: string, shape: number[]): Float32Array {
    const info = this.ckpt.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      fail(this.ckpt.file(name), `tensor '${name}' has shape [${info.shape.join(', ')}] but config.json implies [${shape.join(', ')}]`);
    }
    return this.ckpt.readFloat32(name);
  }
  private matrix(name: string, rows: number, cols: number): Matrix {
    return { data: this.tensor(name, [rows, cols]), rows, cols };
  }

  embed(ids: ArrayLike<number>): Float32Array {
    const { vocabSize: V, hiddenSize: D } = this.config;
    const name = 'model.embed_tokens.weight';
    this.checkShape(name, [V, D]);
    const out = new Float32Array(ids.length * D);
    for (let t = 0; t < ids.length; t++) {
      const id = ids[t]!;
      if (!Number.isInteger(id) || id < 0 || id >= V) fail(null, `token id ${id} is outside the vocabulary (0..${V - 1}) of ${this.dir}`);
      out.set(this.ckpt.readFloat32Rows(name, id, 1), t * D);
    }
    return out;
  }

  lmHeadRows(start: number, count: number): Matrix {
    const { vocabSize: V, hiddenSize: D } = this.config;
    const name = this.config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
    this.checkShape(name, [V, D]);
    return { data: this.ckpt.readFloat32Rows(name, start, count), rows: count, cols: D };
  }

  finalNorm(): Float32Array {
    return this.tensor('model.norm.weight', [this.config.hiddenSize]);
  }

  layer(index: number): LayerWeights {
    const c = this.config;
    if (!Number.isInteger(index) || index < 0 || index >= c.numLayers) fail(this.dir, `layer ${index} out of range (model has ${c.numLayers})`);
    const p = `model.layers.${index}.`;
    const D = c.hiddenSize;
    const bias = (n: string, size: number) => (c.attentionBias || this.ckpt.has(p + n) ? this.tensor(p + n, [size]) : null);
    return {
      inputNorm: this.tensor(p + 'input_layernorm.weight', [D]),
      q: this.matrix(p + 'self_attn.q_proj.weight', qDim(c), D),
      k: this.matrix(p + 'self_attn.k_proj.weight', kvDim(c), D),
      v: this.matrix(p + 'self_attn.v_proj.weight', kvDim(c), D),
      o: this.matrix(p + 'self_attn.o_proj.weight', D, qDim(c)),
      qBias: bias('self_attn.q_proj.bias', qDim(c)),
      kBias: bias('self_attn.k_proj.bias', kvDim(c)),
      vBias: bias('self_attn.v_proj.bias', kvDim(c)),
      postNorm: this.tensor(p + 'post_attention_layernorm.weight', [D]),
      gate: this.matrix(p + 'mlp.gate_proj.weight', c.intermediateSize, D),
      up: this.matrix(p + 'mlp.up_proj.weight', c.intermediateSize, D),
      down: this.matrix(p + 'mlp.down_proj.weight', D, c.intermediateSize),
    };
  }

  private checkShape(name: string, shape: number[]): void {
    const info = this.ckpt.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      fail(this.ckpt.file(name), `tensor '${name}' has shape [${info.shape.join(', ')}] but config.json implies [${shape.join(', ')}]`);
    }
  }

  close(): void {
    this.ckpt.close();
  }
}

export function openHfModel(dir: string): ModelWeights {
  return new HfWeights(dir);
}
