/**
 * HF checkpoint directory -> SYNAXIM .symb directory, byte-compatible with the reference converter:
 * the same files, the same bytes (see symb.ts for the arithmetic), and a config.symb.json with the
 * reference's keys, values and formatting (Python `json.dump(indent=2)`). Tensors are streamed one
 * at a time (read, encode, write, drop), and the whole output directory appears atomically.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../util/errors.ts';
import { writeDirAtomic, writeFileAtomic } from '../util/atomic.ts';
import { type ModelConfig, MAX_TOKENIZER_BYTES, parseHfConfig, readJsonFile, requireInsideModelDir } from './config.ts';
import { entryExists, readSmallRegularFile } from '../util/fileio.ts';
import { SafetensorsCheckpoint } from './safetensors.ts';
import { type SymbMethod, MAX_GROUP_SIZE, SYMB_METHODS, encodeSymbTensor, encodingFor } from './symb.ts';
import { DEFAULT_SYMB_NAMES, SYMB_CONFIG_FILE, symbTensorSpecs } from './symbModel.ts';

/** Files a tokenizer may consist of; whichever exist are copied into `tokenizer/`. */
export const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'tokenizer.model',
  'special_tokens_map.json',
  'added_tokens.json',
  'vocab.json',
  'merges.txt',
];
export const TOKENIZER_DIR = 'tokenizer';
export const DEFAULT_GROUP_SIZE = 128;

// Fixed values the reference converter writes for a dense model (the SYNAXIM gate's defaults).
const GRRN_VERSION = '0.1.0';
const GATE_ALPHA = 0.5;
const GATE_SCALE = 0.0039;
const MEMORY_LAMBDA = 0.995;

/** Keys whose values Python holds as floats (printed `10000.0`, `1e-05`). */
const FLOAT_KEYS = new Set(['rope_theta', 'rms_norm_eps', 'gate_alpha', 'gate_scale', 'memory_lambda']);

/**
 * config.symb.json for a model, with the reference converter's keys in its order. HF facts the
 * reference format has no key for (rope_scaling, sliding_window, non-default BOS/EOS ids) are added
 * under their HF names only when present, so that our reader does not silently lose them; for the
 * models the reference handles (no rope scaling, no sliding window, BOS 1 / EOS 2) the keys are
 * exactly the reference's.
 */
export function symbConfigJson(c: ModelConfig, modelName: string, method: SymbMethod, groupSize: number, hfConfig: Record<string, unknown> = {}): Record<string, unknown> {
  const j: Record<string, unknown> = {
    model_name: modelName,
    model_type: 'dense',
    source_model: modelName,
    grrn_version: GRRN_VERSION,
    engine_name: 'SYNAXIM',
    architecture: 'dense',
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    max_position_embeddings: c.maxPositionEmbeddings,
    rope_theta: c.ropeTheta,
    rms_norm_eps: c.rmsNormEps,
    tie_word_embeddings: c.tieWordEmbeddings,
    layer_types: Array.from({ length: c.numLayers }, () => 'full_attention'),
    num_experts: 1,
    num_experts_per_tok: 1,
    moe_layer_indices: [],
    quantization: { method, group_size: groupSize, symmetric: true },
    hidden_act: 'silu',
    gate_alpha: GATE_ALPHA,
    gate_scale: GATE_SCALE,
    memory_lambda: MEMORY_LAMBDA,
    embedding_file: DEFAULT_SYMB_NAMES.embeddingFile,
    lm_head_file: DEFAULT_SYMB_NAMES.lmHeadFile,
    layer_dir_pattern: DEFAULT_SYMB_NAMES.layerDirPattern,
    tokenizer_dir: TOKENIZER_DIR,
  };
  if (c.ropeScaling) j.rope_scaling = hfConfig.rope_scaling;
  if (c.slidingWindow !== null) j.sliding_window = c.slidingWindow;
  if (c.bosTokenId !== 1) j.bos_token_id = c.bosTokenId;
  if (c.eosTokenIds.length !== 1 || c.eosTokenIds[0] !== 2) j.eos_token_id = c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds;
  return j;
}

/** Python's `repr(float)`: shortest round-trip digits, scientific below 1e-4 and from 1e16. */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mantissa, expText] = x.toExponential().split('e') as [string, string];
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    const sign = exp < 0 ? '-' : '+';
    return `${mantissa}e${sign}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  const s = String(x); // JS uses fixed notation in this range too
  return s.includes('.') ? s : `${s}.0`;
}

function pythonString(s: string): string {
  // json.dumps(ensure_ascii=True): JSON.stringify's escapes, plus \uXXXX for everything non-ASCII.
  return JSON.stringify(s).replace(/[\u007f-\uffff]/g, (ch) => (ch === '\u007f' ? ch : '\\u' + ch.charCodeAt(0).toString(16).padStart(4, '0')));
}

/** `json.dumps(value, indent=2)` as Python writes it (floats for FLOAT_KEYS, no trailing newline). */
export function pythonJsonDumps(value: unknown, indent = '', key = ''): string {
  const inner = indent + '  ';
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') return FLOAT_KEYS.has(key) || !Number.isInteger(value) ? pythonFloatRepr(value) : String(value);
  if (typeof value === 'string') return pythonString(value);
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return `[\n${value.map((v) => inner + pythonJsonDumps(v, inner, key)).join(',\n')}\n${indent}]`;
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 0) return '{}';
  return `{\n${entries.map(([k, v]) => `${inner}${pythonString(k)}: ${pythonJsonDumps(v, inner, k)}`).join(',\n')}\n${indent}}`;
}

export interface ConvertOptions {
  quantize: SymbMethod;
  /** int4 elements per group (recorded in the config for every method, as the reference does). */
  groupSize?: number;
  /** Progress lines (one per tensor). */
  log?: (line: string) => void;
  /** Write into a directory that holds other files too, keeping them (the CLI's --overwrite). */
  overwrite?: boolean;
}

export interface ConvertResult {
  outDir: string;
  method: SymbMethod;
  groupSize: number;
  tensors: number;
  parameters: number;
  /** Bytes of the .symb tensor files. */
  bytes: number;
  tokenizerFiles: string[];
  seconds: number;
}

/** HF tensors a converter may meet and need not store. */
function isIgnorable(name: string, c: ModelConfig): boolean {
  if (name.endsWith('.rotary_emb.inv_freq')) return true; // a buffer recomputed from rope_theta
  return c.tieWordEmbeddings && name === 'lm_head.weight'; // tied checkpoints sometimes store the copy
}

/** Entries a conversion writes into its output directory (anything else there is the user's). */
export function isSymbOutputEntry(name: string): boolean {
  return name.endsWith('.symb') || name === SYMB_CONFIG_FILE || name === TOKENIZER_DIR || name === 'layers';
}

/** Convert an HF checkpoint directory into a .symb directory `outDir` (replaced atomically). */
export async function convertHfToSymb(hfDir: string, outDir: string, options: ConvertOptions): Promise<ConvertResult> {
  const started = Date.now();
  const method = options.quantize;
  const groupSize = options.groupSize ?? DEFAULT_GROUP_SIZE;
  if (!SYMB_METHODS.includes(method)) fail(null, `--quantize ${JSON.stringify(method)}: expected one of ${SYMB_METHODS.join(', ')}`);
  if (!Number.isInteger(groupSize) || groupSize <= 0 || groupSize > MAX_GROUP_SIZE) fail(null, `--group-size ${groupSize}: expected an integer in 1..${MAX_GROUP_SIZE}`);
  const log = options.log ?? (() => {});

  const src = path.resolve(hfDir);
  const out = path.resolve(outDir);
  const configPath = path.join(src, 'config.json');
  if (!fs.existsSync(src) || !fs.statSync(src).isDirectory()) fail(hfDir, 'no such directory (expected a Hugging Face checkpoint directory)');
  if (out === src || src.startsWith(out + path.sep)) fail(outDir, 'the output directory must not be (or contain) the input directory');
  if (fs.existsSync(out)) {
    if (!fs.statSync(out).isDirectory()) fail(outDir, 'exists and is not a directory');
    // With overwrite (the CLI's --overwrite, after checkOutput) files a conversion does not write are kept.
    const looksSymb = fs.existsSync(path.join(out, SYMB_CONFIG_FILE));
    if (!options.overwrite && !looksSymb && fs.readdirSync(out).length > 0) fail(outDir, 'exists, is not empty and is not a .symb directory; refusing to replace it');
  }
  const hfConfig = readJsonFile(configPath, { within: src });
  const config = parseHfConfig(hfConfig, configPath);
  const ckpt = SafetensorsCheckpoint.open(src);
  try {
    const withBias = config.attentionBias || ckpt.has('model.layers.0.self_attn.q_proj.bias');
    const specs = symbTensorSpecs(config, withBias);
    const wanted = new Set(specs.map((s) => s.hfName));
    for (const name of ckpt.names()) {
      if (!wanted.has(name) && !isIgnorable(name, config)) fail(ckpt.file(name), `unexpected tensor '${name}' (not part of a ${config.architecture} model as config.json describes it)`);
    }
    const modelName = path.basename(src);
    const tokenizerFiles = TOKENIZER_FILES.filter((f) => entryExists(path.join(src, f)));
    // Copied files are read like every other: inside the model directory, regular, of a sane size.
    const tokenizerBytes = tokenizerFiles.map((f) => {
      const file = path.join(src, f);
      requireInsideModelDir(src, file);
      return readSmallRegularFile(file, MAX_TOKENIZER_BYTES, 'a tokenizer file');
    });
    let parameters = 0;
    let bytes = 0;
    await writeDirAtomic(out, (tmp) => {
      for (const spec of specs) {
        const info = ckpt.info(spec.hfName);
        if (info.shape.length !== spec.shape.length || info.shape.some((d, i) => d !== spec.shape[i])) {
          fail(ckpt.file(spec.hfName), `tensor '${spec.hfName}' has shape [${info.shape.join(', ')}] but config.json implies [${spec.shape.join(', ')}]`);
        }
        const values = ckpt.readFloat32(spec.hfName);
        const enc = encodingFor(method, groupSize, spec.shape, spec.isFinalNorm);
        const encoded = encodeSymbTensor(values, spec.shape, enc, `${ckpt.file(spec.hfName)} (tensor '${spec.hfName}')`);
        writeFileAtomic(path.join(tmp, spec.file), encoded);
        parameters += values.length;
        bytes += encoded.length;
        log(`${spec.file}  [${spec.shape.join(', ')}] ${info.dtype} -> ${enc.method}${enc.method === 'int4' ? `/g${enc.groupSize}` : ''}  ${encoded.length} bytes`);
      }
      const json = symbConfigJson(config, modelName, method, groupSize, hfConfig);
      writeFileAtomic(path.join(tmp, SYMB_CONFIG_FILE), pythonJsonDumps(json));
      tokenizerFiles.forEach((f, i) => writeFileAtomic(path.join(tmp, TOKENIZER_DIR, f), tokenizerBytes[i]!));
    }, { isOurs: isSymbOutputEntry, marker: SYMB_CONFIG_FILE });
    return { outDir: out, method, groupSize, tensors: specs.length, parameters, bytes, tokenizerFiles, seconds: (Date.now() - started) / 1000 };
  } finally {
    ckpt.close();
  }
}
