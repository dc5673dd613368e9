/**
 * A SYNAXIM `.symb` directory as ModelWeights:
 *   config.symb.json, embeddings.symb, lm_head.symb (untied only), final_norm.symb,
 *   layers/layer_NN/{attn_q,attn_k,attn_v,attn_o,mlp_gate,mlp_up,mlp_down,norm_attn,norm_mlp}.symb
 *   (+ attn_{q,k,v}_bias.symb), tokenizer/.
 * The files carry no shapes (except int4's header), so every file is read by the shape the config
 * implies and the encoding `quantization.method` declares, and its size (and int4 header) must
 * agree — an int8 file where int4 is declared, or an lm_head of the wrong shape, is an error
 * naming the file, not a silently wrong model; so is a NaN/Inf weight (checked as each tensor is
 * decoded, naming it), and so is a file that resolves outside the directory. Layers are dequantized one at a time on request;
 * embedding and lm_head rows are decoded from positioned reads, so the big matrices never sit in
 * memory as float32.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../util/errors.ts';
import { openRegularFile, readExactly, readSmallRegularFile, regularFileSize } from '../util/fileio.ts';
import { type ModelConfig, type RopeScalingLlama3, parseSymbConfig, readJsonFile, qDim, kvDim, requireInsideModelDir } from './config.ts';
import { numelOf, requireFiniteWeights } from './safetensors.ts';
import {
  type SymbEncoding,
  type SymbMethod,
  SYMB_METHODS,
  INT4_HEADER_BYTES,
  INT8_HEADER_BYTES,
  decodeSymbTensor,
  dequantizeInt4,
  dequantizeInt8,
  encodingFor,
  validateSymbLayout,
  validateSymbTensor,
  int4Scales,
  symbByteLength,
  MAX_GROUP_SIZE,
} from './symb.ts';
import { decodeF16 } from '../util/fp16.ts';
import type { LayerWeights, Matrix, ModelWeights } from './weights.ts';

export const SYMB_CONFIG_FILE = 'config.symb.json';

/** The per-layer files and the HF tensors they hold. */
export const LAYER_FILES = [
  { file: 'attn_q', hf: 'self_attn.q_proj.weight' },
  { file: 'attn_k', hf: 'self_attn.k_proj.weight' },
  { file: 'attn_v', hf: 'self_attn.v_proj.weight' },
  { file: 'attn_o', hf: 'self_attn.o_proj.weight' },
  { file: 'mlp_gate', hf: 'mlp.gate_proj.weight' },
  { file: 'mlp_up', hf: 'mlp.up_proj.weight' },
  { file: 'mlp_down', hf: 'mlp.down_proj.weight' },
  { file: 'norm_attn', hf: 'input_layernorm.weight' },
  { file: 'norm_mlp', hf: 'post_attention_layernorm.weight' },
] as const;
export const BIAS_FILES = [
  { file: 'attn_q_bias', hf: 'self_attn.q_proj.bias' },
  { file: 'attn_k_bias', hf: 'self_attn.k_proj.bias' },
  { file: 'attn_v_bias', hf: 'self_attn.v_proj.bias' },
] as const;

/** One tensor of a .symb directory: where it lives, its HF name, the shape the config implies. */
export interface SymbTensorSpec {
  /** Path relative to the .symb directory, e.g. 'layers/layer_03/attn_q.symb'. */
  file: string;
  hfName: string;
  shape: number[];
  isFinalNorm: boolean;
}

/** `layers/layer_{:02d}` (Python format) -> the directory of layer `index`. */
export function layerDir(pattern: string, index: number): string {
  return pattern.replace(/\{(?::0?(\d+)d)?\}/g, (_m, width: string | undefined) => String(index).padStart(width ? Number(width) : 0, '0'));
}

export interface SymbNames {
  embeddingFile: string;
  lmHeadFile: string;
  layerDirPattern: string;
}
export const DEFAULT_SYMB_NAMES: SymbNames = {
  embeddingFile: 'embeddings.symb',
  lmHeadFile: 'lm_head.symb',
  layerDirPattern: 'layers/layer_{:02d}',
};

/** Every tensor file of a .symb directory for this config, in the reference converter's order. */
export function symbTensorSpecs(c: ModelConfig, withBias: boolean, names: SymbNames = DEFAULT_SYMB_NAMES): SymbTensorSpec[] {
  const D = c.hiddenSize;
  const I = c.intermediateSize;
  const specs: SymbTensorSpec[] = [
    { file: names.embeddingFile, hfName: 'model.embed_tokens.weight', shape: [c.vocabSize, D], isFinalNorm: false },
    { file: 'final_norm.symb', hfName: 'model.norm.weight', shape: [D], isFinalNorm: true },
  ];
  if (!c.tieWordEmbeddings) specs.push({ file: names.lmHeadFile, hfName: 'lm_head.weight', shape: [c.vocabSize, D], isFinalNorm: false });
  const shapes: Record<string, number[]> = {
    attn_q: [qDim(c), D],
    attn_k: [kvDim(c), D],
    attn_v: [kvDim(c), D],
    attn_o: [D, qDim(c)],
    mlp_gate: [I, D],
    mlp_up: [I, D],
    mlp_down: [D, I],
    norm_attn: [D],
    norm_mlp: [D],
    attn_q_bias: [qDim(c)],
    attn_k_bias: [kvDim(c)],
    attn_v_bias: [kvDim(c)],
  };
  for (let l = 0; l < c.numLayers; l++) {
    const dir = layerDir(names.layerDirPattern, l);
    const files = withBias ? [...LAYER_FILES, ...BIAS_FILES] : LAYER_FILES;
    for (const f of files) {
      specs.push({ file: `${dir}/${f.file}.symb`, hfName: `model.layers.${l}.${f.hf}`, shape: shapes[f.file]!, isFinalNorm: false });
    }
  }
  return specs;
}

/** What config.symb.json says about storage. */
export interface SymbQuantization {
  method: SymbMethod;
  groupSize: number;
}

export function parseQuantization(j: Record<string, unknown>, file: string): SymbQuantization {
  const q = j.quantization as Record<string, unknown> | undefined;
  if (!q || typeof q !== 'object') fail(file, `missing 'quantization' (expected {"method": "int4"|"int8"|"fp16"|"fp32", "group_size": N})`);
  const method = q.method;
  if (!SYMB_METHODS.includes(method as SymbMethod)) fail(file, `quantization.method ${JSON.stringify(method)} is not one of ${SYMB_METHODS.join(', ')}`);
  const groupSize = q.group_size ?? 128;
  if (typeof groupSize !== 'number' || !Number.isInteger(groupSize) || groupSize <= 0) {
    fail(file, `quantization.group_size must be a positive integer, got ${JSON.stringify(groupSize)}`);
  }
  if (groupSize > MAX_GROUP_SIZE) {
    fail(file, `quantization.group_size ${groupSize} is more than ${MAX_GROUP_SIZE} (the converter's limit)`);
  }
  if (q.symmetric === false) fail(file, 'asymmetric quantization (quantization.symmetric false) is not supported');
  return { method: method as SymbMethod, groupSize };
}

function stringKey(j: Record<string, unknown>, key: string, fallback: string, file: string): string {
  const v = j[key] ?? fallback;
  if (typeof v !== 'string' || v.length === 0) fail(file, `'${key}' must be a non-empty string`);
  if (path.isAbsolute(v) || v.split(/[\\/]/).includes('..')) fail(file, `'${key}' ${JSON.stringify(v)} must stay inside the model directory`);
  return v;
}

export function parseSymbNames(j: Record<string, unknown>, file: string): SymbNames {
  const pattern = stringKey(j, 'layer_dir_pattern', DEFAULT_SYMB_NAMES.layerDirPattern, file);
  for (const m of pattern.matchAll(/\{:0?(\d+)d\}/g)) {
    if (Number(m[1]) > 9) fail(file, `layer_dir_pattern ${JSON.stringify(pattern)}: field width ${m[1]} is too large (at most 9)`);
  }
  if (layerDir(pattern, 1) === layerDir(pattern, 0)) fail(file, `layer_dir_pattern ${JSON.stringify(pattern)} has no '{}' / '{:02d}' field for the layer index`);
  return {
    embeddingFile: stringKey(j, 'embedding_file', DEFAULT_SYMB_NAMES.embeddingFile, file),
    lmHeadFile: stringKey(j, 'lm_head_file', DEFAULT_SYMB_NAMES.lmHeadFile, file),
    layerDirPattern: pattern,
  };
}

/**
 * HF facts the reference config.symb.json has no key for. Our converter adds these HF-named keys
 * only when they differ from what a reader would otherwise assume (so conversions of plain models
 * keep exactly the reference keys); callers (the model registry) may pass them as hints too.
 */
function extensionHints(j: Record<string, unknown>, file: string): Partial<ModelConfig> {
  const hints: Partial<ModelConfig> = {};
  if (j.sliding_window !== undefined && j.sliding_window !== null) {
    const w = j.sliding_window;
    if (typeof w !== 'number' || !Number.isInteger(w) || w <= 0) fail(file, `'sliding_window' must be a positive integer or null`);
    hints.slidingWindow = w;
    hints.architecture = 'mistral';
  }
  if (j.rope_scaling !== undefined && j.rope_scaling !== null) {
    const r = j.rope_scaling as Record<string, unknown>;
    const type = r.rope_type ?? r.type;
    if (type !== 'default') {
      if (type !== 'llama3') fail(file, `unsupported rope_scaling type ${JSON.stringify(type)} (supported: llama3)`);
      const num = (k: string): number => {
        const v = r[k];
        if (typeof v !== 'number' || !(v > 0)) fail(file, `rope_scaling.${k} must be a positive number`);
        return v;
      };
      const scaling: RopeScalingLlama3 = {
        type: 'llama3',
        factor: num('factor'),
        lowFreqFactor: num('low_freq_factor'),
        highFreqFactor: num('high_freq_factor'),
        originalMaxPositionEmbeddings: num('original_max_position_embeddings'),
      };
      hints.ropeScaling = scaling;
    }
  }
  if (j.bos_token_id !== undefined) {
    const b = j.bos_token_id;
    if (b !== null && (typeof b !== 'number' || !Number.isInteger(b) || b < 0)) fail(file, `'bos_token_id' must be a non-negative integer or null`);
    hints.bosTokenId = b as number | null;
  }
  if (j.eos_token_id !== undefined) {
    const e = j.eos_token_id;
    const list = Array.isArray(e) ? e : e === null ? [] : [e];
    for (const x of list) if (typeof x !== 'number' || !Number.isInteger(x) || x < 0) fail(file, `'eos_token_id' must be a non-negative integer or a list of them`);
    hints.eosTokenIds = list as number[];
  }
  return hints;
}

function readAt(file: string, length: number, position: number): Uint8Array {
  const { fd } = openRegularFile(file, { missing: 'missing .symb file', expected: 'file' });
  try {
    return readExactly(fd, file, length, position);
  } finally {
    fs.closeSync(fd);
  }
}

/** A big [rows, cols] tensor (embeddings, lm_head) read a row range at a time. */
class RowReader {
  private scales: Float32Array | null = null; // int4 group scales, read once
  private int8Scale: number | null = null;

  constructor(
    readonly file: string,
    readonly hfName: string,
    readonly rows: number,
    readonly cols: number,
    readonly enc: SymbEncoding,
  ) {}

  /** Rows [start, start + count), checked finite. */
  read(start: number, count: number): Float32Array {
    return requireFiniteWeights(this.decode(start, count), this.file, this.hfName, start * this.cols);
  }

  private decode(start: number, count: number): Float32Array {
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > this.rows) {
      fail(this.file, `rows [${start}, ${start + count}) out of range (${this.rows} rows)`);
    }
    const from = start * this.cols;
    const n = count * this.cols;
    switch (this.enc.method) {
      case 'fp32': {
        const raw = readAt(this.file, 4 * n, 4 * from);
        const view = new DataView(raw.buffer);
        const out = new Float32Array(n);
        for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
        return out;
      }
      case 'fp16':
        return decodeF16(readAt(this.file, 2 * n, 2 * from));
      case 'int8':
        if (this.int8Scale === null) this.int8Scale = new DataView(readAt(this.file, 4, 0).buffer).getFloat32(0, true);
        return dequantizeInt8(this.int8Scale, readAt(this.file, n, INT8_HEADER_BYTES + from));
      case 'int4': {
        if (!this.scales) {
          const numGroups = Math.ceil((this.rows * this.cols) / this.enc.groupSize);
          const raw = readAt(this.file, 4 * numGroups, INT4_HEADER_BYTES);
          const view = new DataView(raw.buffer);
          this.scales = new Float32Array(numGroups);
          for (let g = 0; g < numGroups; g++) this.scales[g] = view.getFloat32(4 * g, true);
        }
        if (n === 0) return new Float32Array(0);
        const firstByte = from >>> 1;
        const lastByte = (from + n - 1) >>> 1;
        const packed = readAt(this.file, lastByte - firstByte + 1, INT4_HEADER_BYTES + 4 * this.scales.length + firstByte);
        return dequantizeInt4(this.scales, this.enc.groupSize, packed, from, from, n);
      }
    }
  }
}

/**
 * An int4 matrix exactly as its .symb file stores it, for engines that compute from 4-bit weights
 * (no float32 expansion): flat row-major groups of `groupSize` over [rows, cols] (a group may
 * cross a row end when cols % groupSize != 0), one float32 scale per group, codes q + 8 packed two
 * a byte, HIGH nibble first. Value = (code - 8) * scale.
 */
export interface Int4Matrix {
  file: string;
  rows: number;
  cols: number;
  groupSize: number;
  scales: Float32Array;
  packed: Uint8Array;
}

/** The linear layers of a decoder layer, by short name, and their HF tensor names. */
export const LAYER_MATRICES = {
  q: 'self_attn.q_proj.weight',
  k: 'self_attn.k_proj.weight',
  v: 'self_attn.v_proj.weight',
  o: 'self_attn.o_proj.weight',
  gate: 'mlp.gate_proj.weight',
  up: 'mlp.up_proj.weight',
  down: 'mlp.down_proj.weight',
} as const;
export type LayerMatrixName = keyof typeof LAYER_MATRICES;

export class SymbWeights implements ModelWeights {
  readonly config: ModelConfig;
  readonly dir: string;
  readonly format = 'symb' as const;
  readonly storage: string;
  readonly quantization: SymbQuantization;
  readonly specs: SymbTensorSpec[];
  private readonly configFile: string;
  private readonly byHfName: Map<string, SymbTensorSpec>;
  private readonly embedRows: RowReader;
  private readonly lmHead: RowReader;

  constructor(dir: string, hints: Partial<ModelConfig> = {}) {
    this.dir = dir;
    this.configFile = path.join(dir, SYMB_CONFIG_FILE);
    requireInsideModelDir(dir, this.configFile);
    const j = readJsonFile(this.configFile, { within: dir });
    this.quantization = parseQuantization(j, this.configFile);
    const names = parseSymbNames(j, this.configFile);
    // q/k/v biases: present in every layer or in none (the reference converter writes them when the HF model has them).
    const firstBias = path.join(dir, layerDir(names.layerDirPattern, 0), 'attn_q_bias.symb');
    const withBias = fs.existsSync(firstBias) || hints.attentionBias === true;
    const fileHints: Partial<ModelConfig> = { attentionBias: withBias, ...(withBias ? { architecture: 'qwen2' as const } : {}), ...extensionHints(j, this.configFile) };
    this.config = parseSymbConfig(j, this.configFile, { ...fileHints, ...hints });
    const { method, groupSize } = this.quantization;
    this.storage = method === 'int4' ? `int4/g${groupSize}` : method;
    // The last layer the config declares must be there before we list every file of every layer:
    // a corrupt num_layers (10^8) is one clear error, not minutes of building a list.
    const lastLayerFile = path.join(dir, layerDir(names.layerDirPattern, this.config.numLayers - 1), `${LAYER_FILES[0].file}.symb`);
    if (!fs.existsSync(lastLayerFile)) fail(lastLayerFile, `missing .symb file (config.symb.json declares ${this.config.numLayers} layers)`);
    this.specs = symbTensorSpecs(this.config, withBias, names);
    this.byHfName = new Map(this.specs.map((s) => [s.hfName, s]));
    for (const s of this.specs) this.checkFile(s);
    const V = this.config.vocabSize;
    const D = this.config.hiddenSize;
    const embedSpec = this.specs[0]!;
    this.embedRows = new RowReader(path.join(dir, embedSpec.file), embedSpec.hfName, V, D, this.encodingOf(embedSpec));
    const lmSpec = this.config.tieWordEmbeddings ? embedSpec : this.byHfName.get('lm_head.weight')!;
    this.lmHead = new RowReader(path.join(dir, lmSpec.file), lmSpec.hfName, V, D, this.encodingOf(lmSpec));
  }

  encodingOf(s: SymbTensorSpec): SymbEncoding {
    return encodingFor(this.quantization.method, this.quantization.groupSize, s.shape, s.isFinalNorm);
  }

  /** Existence, size and (int4) header of one file: a broken conversion fails at open, naming the file. */
  private checkFile(s: SymbTensorSpec): void {
    const file = path.join(this.dir, s.file);
    requireInsideModelDir(this.dir, file);
    const size = regularFileSize(file, 'missing .symb file');
    const head = readAt(file, Math.min(size, INT4_HEADER_BYTES), 0);
    validateSymbLayout(size, head, s.shape, this.encodingOf(s), file, SYMB_CONFIG_FILE);
  }

  private tensor(hfName: string): Float32Array {
    const s = this.byHfName.get(hfName);
    if (!s) fail(this.dir, `no .symb file holds '${hfName}'`);
    const file = path.join(this.dir, s.file);
    const bytes = readSmallRegularFile(file, symbByteLength(numelOf(s.shape), this.encodingOf(s)), 'this tensor\'s .symb file', 'missing .symb file');
    return requireFiniteWeights(decodeSymbTensor(bytes, s.shape, this.encodingOf(s), file, SYMB_CONFIG_FILE), file, hfName);
  }

  private matrix(hfName: string): Matrix {
    const s = this.byHfName.get(hfName)!;
    return { data: this.tensor(hfName), rows: s.shape[0]!, cols: s.shape[1]! };
  }

  embed(ids: ArrayLike<number>): Float32Array {
    const { vocabSize: V, hiddenSize: D } = this.config;
    const out = new Float32Array(ids.length * D);
    for (let t = 0; t < ids.length; t++) {
      const id = ids[t]!;
      if (!Number.isInteger(id) || id < 0 || id >= V) fail(null, `token id ${id} is outside the vocabulary (0..${V - 1}) of ${this.dir}`);
      out.set(this.embedRows.read(id, 1), t * D);
    }
    return out;
  }

  lmHeadRows(start: number, count: number): Matrix {
    return { data: this.lmHead.read(start, count), rows: count, cols: this.config.hiddenSize };
  }

  finalNorm(): Float32Array {
    return this.tensor('model.norm.weight');
  }

  layer(index: number): LayerWeights {
    const p = `model.layers.${index}.`;
    const vectors = this.layerVectors(index);
    return {
      inputNorm: vectors.inputNorm,
      q: this.matrix(p + 'self_attn.q_proj.weight'),
      k: this.matrix(p + 'self_attn.k_proj.weight'),
      v: this.matrix(p + 'self_attn.v_proj.weight'),
      o: this.matrix(p + 'self_attn.o_proj.weight'),
      qBias: vectors.qBias,
      kBias: vectors.kBias,
      vBias: vectors.vBias,
      postNorm: vectors.postNorm,
      gate: this.matrix(p + 'mlp.gate_proj.weight'),
      up: this.matrix(p + 'mlp.up_proj.weight'),
      down: this.matrix(p + 'mlp.down_proj.weight'),
    };
  }

  /**
   * Raw int4 codes + group scales of a layer matrix (null when the model is not int4): read as
   * stored, validated, never expanded to float32.
   */
  int4LayerMatrix(index: number, which: LayerMatrixName): Int4Matrix | null {
    const c = this.config;
    if (!Number.isInteger(index) || index < 0 || index >= c.numLayers) fail(this.dir, `layer ${index} out of range (model has ${c.numLayers})`);
    return this.int4Matrix(`model.layers.${index}.${LAYER_MATRICES[which]}`);
  }

  /** Raw int4 lm_head (the embedding matrix when tied), or null when the model is not int4. */
  int4LmHead(): Int4Matrix | null {
    return this.int4Matrix(this.config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
  }

  /** A layer's 1-D tensors (norm weights, q/k/v biases) without touching its matrices. */
  layerVectors(index: number): Pick<LayerWeights, 'inputNorm' | 'postNorm' | 'qBias' | 'kBias' | 'vBias'> {
    const c = this.config;
    if (!Number.isInteger(index) || index < 0 || index >= c.numLayers) fail(this.dir, `layer ${index} out of range (model has ${c.numLayers})`);
    const p = `model.layers.${index}.`;
    const bias = (n: string) => (this.byHfName.has(p + n) ? this.tensor(p + n) : null);
    return {
      inputNorm: this.tensor(p + 'input_layernorm.weight'),
      postNorm: this.tensor(p + 'post_attention_layernorm.weight'),
      qBias: bias('self_attn.q_proj.bias'),
      kBias: bias('self_attn.k_proj.bias'),
      vBias: bias('self_attn.v_proj.bias'),
    };
  }

  private int4Matrix(hfName: string): Int4Matrix | null {
    const s = this.byHfName.get(hfName);
    if (!s) fail(this.dir, `no .symb file holds '${hfName}'`);
    const enc = this.encodingOf(s);
    if (enc.method !== 'int4' || s.shape.length !== 2) return null;
    const file = path.join(this.dir, s.file);
    const bytes = readSmallRegularFile(file, symbByteLength(numelOf(s.shape), enc), 'this tensor\'s .symb file', 'missing .symb file');
    validateSymbTensor(bytes, s.shape, enc, file, SYMB_CONFIG_FILE);
    const scales = int4Scales(bytes);
    for (let g = 0; g < scales.length; g++) {
      // (code - 8) * scale reaches -8 * scale: that must be a finite float32 too.
      if (!Number.isFinite(Math.fround(8 * scales[g]!))) fail(file, `int4 group scale ${g} is ${scales[g]}: its weights are not finite float32`);
    }
    return { file, rows: s.shape[0]!, cols: s.shape[1]!, groupSize: enc.groupSize, scales, packed: bytes.subarray(INT4_HEADER_BYTES + 4 * scales.length) };
  }

  close(): void {
    // Files are opened per read; nothing to release.
  }
}

export function openSymbModel(dir: string, hints: Partial<ModelConfig> = {}): ModelWeights {
  return new SymbWeights(dir, hints);
}
