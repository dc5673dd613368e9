/**
 * A Hugging Face checkpoint directory (config.json + safetensors, single or sharded) as
 * ModelWeights. Tensors are read one at a time on demand; every shape is checked against the
 * config and every value must be finite, so a mismatched or corrupt checkpoint is an error naming
 * the file and tensor, never a silently wrong model.
 */
import path from 'node:path';
import { fail } from '../util/errors.ts';
import { type ModelConfig, parseHfConfig, readJsonFile, qDim, kvDim, requireInsideModelDir } from './config.ts';
import { SafetensorsCheckpoint, type StDtype, requireFiniteWeights } from './safetensors.ts';
import type { LayerWeights, Matrix, ModelWeights } from './weights.ts';

const FLOAT_DTYPES: StDtype[] = ['F32', 'F16', 'BF16', 'F64'];

export class HfWeights implements ModelWeights {
  readonly config: ModelConfig;
  readonly dir: string;
  readonly format = 'hf' as const;
  readonly storage: string;
  private readonly ckpt: SafetensorsCheckpoint;

  constructor(dir: string) {
    this.dir = dir;
    const configFile = path.join(dir, 'config.json');
    requireInsideModelDir(dir, configFile);
    this.config = parseHfConfig(readJsonFile(configFile, { within: dir }), configFile);
    this.ckpt = SafetensorsCheckpoint.open(dir);
    try {
      this.storage = this.ckpt.info('model.embed_tokens.weight').dtype;
      for (const [name, shape] of this.expectedTensors()) this.checkShape(name, shape);
    } catch (e) {
      this.ckpt.close();
      throw e;
    }
  }

  /**
   * Every tensor the config implies, with its shape. Checked against the headers at open (cheap),
   * so a checkpoint missing a tensor of its last layer fails before any work, naming it. A
   * generator: a config declaring 10^8 layers fails at the first missing one, without building a list.
   */
  private *expectedTensors(): Generator<[string, number[]]> {
    const c = this.config;
    const D = c.hiddenSize;
    const I = c.intermediateSize;
    yield ['model.embed_tokens.weight', [c.vocabSize, D]];
    yield ['model.norm.weight', [D]];
    if (!c.tieWordEmbeddings) yield ['lm_head.weight', [c.vocabSize, D]];
    for (let l = 0; l < c.numLayers; l++) {
      const p = `model.layers.${l}.`;
      const out: [string, number[]][] = [
        [p + 'input_layernorm.weight', [D]],
        [p + 'self_attn.q_proj.weight', [qDim(c), D]],
        [p + 'self_attn.k_proj.weight', [kvDim(c), D]],
        [p + 'self_attn.v_proj.weight', [kvDim(c), D]],
        [p + 'self_attn.o_proj.weight', [D, qDim(c)]],
        [p + 'post_attention_layernorm.weight', [D]],
        [p + 'mlp.gate_proj.weight', [I, D]],
        [p + 'mlp.up_proj.weight', [I, D]],
        [p + 'mlp.down_proj.weight', [D, I]],
      ];
      const biases: [string, number][] = [['self_attn.q_proj.bias', qDim(c)], ['self_attn.k_proj.bias', kvDim(c)], ['self_attn.v_proj.bias', kvDim(c)]];
      for (const [n, size] of biases) if (c.attentionBias || this.ckpt.has(p + n)) out.push([p + n, [size]]);
      yield* out;
    }
  }

  private tensor(name: string, shape: number[]): Float32Array {
    const info = this.ckpt.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      fail(this.ckpt.file(name), `tensor '${name}' has shape [${info.shape.join(', ')}] but config.json implies [${shape.join(', ')}]`);
    }
    return requireFiniteWeights(this.ckpt.readFloat32(name), this.ckpt.file(name), name);
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
      out.set(requireFiniteWeights(this.ckpt.readFloat32Rows(name, id, 1), this.ckpt.file(name), name, id * D), t * D);
    }
    return out;
  }

  lmHeadRows(start: number, count: number): Matrix {
    const { vocabSize: V, hiddenSize: D } = this.config;
    const name = this.config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
    this.checkShape(name, [V, D]);
    const data = requireFiniteWeights(this.ckpt.readFloat32Rows(name, start, count), this.ckpt.file(name), name, start * D);
    return { data, rows: count, cols: D };
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

  /**
   * layer(index) read asynchronously (it overlaps work on the main thread, e.g. the previous layer's
   * run) into `reuse`'s arrays when given (a layer of this model read earlier and no longer needed:
   * no fresh memory per layer), else into new ones. Same checks and values as layer().
   */
  async layerAsync(index: number, reuse: LayerWeights | null = null): Promise<LayerWeights> {
    const c = this.config;
    if (!Number.isInteger(index) || index < 0 || index >= c.numLayers) fail(this.dir, `layer ${index} out of range (model has ${c.numLayers})`);
    const p = `model.layers.${index}.`;
    const D = c.hiddenSize;
    const into = (name: string, shape: number[], old: Float32Array | null | undefined): Promise<Float32Array> => {
      const info = this.ckpt.info(name);
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
        fail(this.ckpt.file(name), `tensor '${name}' has shape [${info.shape.join(', ')}] but config.json implies [${shape.join(', ')}]`);
      }
      const n = shape.reduce((a, b) => a * b, 1);
      return this.ckpt.readFloat32Into(name, old && old.length === n ? old : new Float32Array(n));
    };
    const matrix = async (name: string, rows: number, cols: number, old: Matrix | undefined): Promise<Matrix> => ({ data: await into(name, [rows, cols], old?.data), rows, cols });
    const bias = (n: string, size: number, old: Float32Array | null | undefined) => (c.attentionBias || this.ckpt.has(p + n) ? into(p + n, [size], old) : Promise.resolve(null));
    const r = reuse ?? undefined;
    const [inputNorm, q, k, v, o, qBias, kBias, vBias, postNorm, gate, up, down] = await Promise.all([
      into(p + 'input_layernorm.weight', [D], r?.inputNorm),
      matrix(p + 'self_attn.q_proj.weight', qDim(c), D, r?.q),
      matrix(p + 'self_attn.k_proj.weight', kvDim(c), D, r?.k),
      matrix(p + 'self_attn.v_proj.weight', kvDim(c), D, r?.v),
      matrix(p + 'self_attn.o_proj.weight', D, qDim(c), r?.o),
      bias('self_attn.q_proj.bias', qDim(c), r?.qBias),
      bias('self_attn.k_proj.bias', kvDim(c), r?.kBias),
      bias('self_attn.v_proj.bias', kvDim(c), r?.vBias),
      into(p + 'post_attention_layernorm.weight', [D], r?.postNorm),
      matrix(p + 'mlp.gate_proj.weight', c.intermediateSize, D, r?.gate),
      matrix(p + 'mlp.up_proj.weight', c.intermediateSize, D, r?.up),
      matrix(p + 'mlp.down_proj.weight', D, c.intermediateSize, r?.down),
    ]);
    return { inputNorm, q, k, v, o, qBias, kBias, vBias, postNorm, gate, up, down };
  }

  private checkShape(name: string, shape: number[]): void {
    const info = this.ckpt.info(name);
    if (!FLOAT_DTYPES.includes(info.dtype)) fail(this.ckpt.file(name), `tensor '${name}' has dtype ${info.dtype}; model weights must be F32, F16, BF16 or F64`);
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
