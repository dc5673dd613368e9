/**
 * Model configuration: parsed from a Hugging Face `config.json` (llama, mistral, qwen2) or from
 * a SYNAXIM `config.symb.json`. Field names follow the HF config keys in camelCase. Anything this
 * workbench would silently get wrong (unknown architecture, unsupported rope_scaling, MoE, ...) is
 * a clear error instead.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../util/errors.ts';
import { MiB, readSmallRegularFile, snippet } from '../util/fileio.ts';

export type Architecture = 'llama' | 'mistral' | 'qwen2';

export interface RopeScalingLlama3 {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface ModelConfig {
  architecture: Architecture;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScalingLlama3 | null;
  /** Mistral's sliding-window attention span (null: full causal attention). */
  slidingWindow: number | null;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (qwen2, or llama with attention_bias). */
  attentionBias: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** Storage dtype declared by the checkpoint (informational). */
  torchDtype: string | null;
}

/** Query heads that share one kv head (GQA group size). */
export function kvHeadsPerGroup(c: ModelConfig): number {
  return c.numHeads / c.numKvHeads;
}
export function qDim(c: ModelConfig): number {
  return c.numHeads * c.headDim;
}
export function kvDim(c: ModelConfig): number {
  return c.numKvHeads * c.headDim;
}

type Json = Record<string, unknown>;

/**
 * More layers than this is a corrupt config, not a model (released models have at most ~130):
 * refusing it up front keeps code that lists every layer's tensors (convert, the readers) from
 * building lists of 10^9 entries for one flipped digit.
 */
export const MAX_LAYERS = 4096;

function layerCount(file: string, j: Json, key: string): number {
  const n = positiveInt(file, j, key);
  if (n > MAX_LAYERS) fail(file, `'${key}' is ${n}, more than the ${MAX_LAYERS} layers any real model has (corrupt config?)`);
  return n;
}

function positiveInt(file: string, j: Json, key: string, fallback?: number): number {
  const v = j[key] ?? fallback;
  if (v === undefined || v === null) fail(file, `missing required field '${key}'`);
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail(file, `'${key}' must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}
function positiveNumber(file: string, j: Json, key: string, fallback?: number): number {
  const v = j[key] ?? fallback;
  if (v === undefined || v === null) fail(file, `missing required field '${key}'`);
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(file, `'${key}' must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}
/**
 * A boolean field: true, false, or absent/null (the fallback). Anything else is refused — the
 * string "false" is truthy, so Boolean() would read `"tie_word_embeddings": "false"` as true.
 */
function optionalBool(file: string, j: Json, key: string, fallback: boolean): boolean {
  const v = j[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') fail(file, `'${key}' must be true or false, got ${snippet(JSON.stringify(v) ?? String(v), 40)}`);
  return v;
}
function optionalId(file: string, j: Json, key: string): number | null {
  const v = j[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) fail(file, `'${key}' must be a non-negative integer`);
  return v;
}

/** Shape checks shared by both config kinds. */
function validateShape(file: string, c: ModelConfig): ModelConfig {
  if (c.numHeads % c.numKvHeads !== 0) {
    fail(file, `num_attention_heads (${c.numHeads}) is not a multiple of num_key_value_heads (${c.numKvHeads})`);
  }
  if (c.bosTokenId !== null && c.bosTokenId >= c.vocabSize) fail(file, `bos_token_id ${c.bosTokenId} is outside the vocabulary (${c.vocabSize})`);
  for (const e of c.eosTokenIds) if (e >= c.vocabSize) fail(file, `eos_token_id ${e} is outside the vocabulary (${c.vocabSize})`);
  return c;
}

const ARCHITECTURES: Record<string, Architecture> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
};

function parseRopeScaling(file: string, raw: unknown): RopeScalingLlama3 | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object') fail(file, `'rope_scaling' must be an object or null`);
  const r = raw as Json;
  const type = r.rope_type ?? r.type;
  if (type === 'default') return null;
  if (type !== 'llama3') fail(file, `unsupported rope_scaling type ${JSON.stringify(type)} (supported: llama3)`);
  return {
    type: 'llama3',
    factor: positiveNumber(file, r, 'factor'),
    lowFreqFactor: positiveNumber(file, r, 'low_freq_factor'),
    highFreqFactor: positiveNumber(file, r, 'high_freq_factor'),
    originalMaxPositionEmbeddings: positiveInt(file, r, 'original_max_position_embeddings'),
  };
}

/** Parse an HF config.json object. `file` names the file in errors. */
export function parseHfConfig(j: Json, file = 'config.json'): ModelConfig {
  if (typeof j !== 'object' || j === null || Array.isArray(j)) fail(file, 'config must be a JSON object');
  const archs = j.architectures;
  const modelType = j.model_type;
  let architecture: Architecture | undefined;
  if (Array.isArray(archs) && archs.length > 0) {
    architecture = ARCHITECTURES[String(archs[0])];
    if (!architecture) fail(file, `unsupported architecture ${JSON.stringify(archs[0])} (supported: ${Object.keys(ARCHITECTURES).join(', ')})`);
  } else if (typeof modelType === 'string') {
    architecture = (['llama', 'mistral', 'qwen2'] as const).find((a) => a === modelType);
    if (!architecture) fail(file, `unsupported model_type ${JSON.stringify(modelType)} (supported: llama, mistral, qwen2)`);
  } else {
    fail(file, `missing 'architectures' and 'model_type'`);
  }
  if (typeof modelType === 'string' && modelType !== architecture) {
    fail(file, `model_type '${modelType}' disagrees with architectures ${JSON.stringify(archs)}`);
  }
  const act = j.hidden_act ?? 'silu';
  if (act !== 'silu') fail(file, `unsupported hidden_act ${JSON.stringify(act)} (supported: silu)`);
  if (j.num_local_experts !== undefined || j.num_experts !== undefined) fail(file, 'mixture-of-experts models are not supported');
  if (optionalBool(file, j, 'mlp_bias', false)) fail(file, 'mlp_bias is not supported');
  if (optionalBool(file, j, 'use_sliding_window', false) && architecture === 'qwen2') fail(file, 'qwen2 sliding-window attention is not supported');

  const hiddenSize = positiveInt(file, j, 'hidden_size');
  const numHeads = positiveInt(file, j, 'num_attention_heads');
  const numKvHeads = positiveInt(file, j, 'num_key_value_heads', numHeads);
  let headDim: number;
  if (j.head_dim !== undefined && j.head_dim !== null) headDim = positiveInt(file, j, 'head_dim');
  else {
    if (hiddenSize % numHeads !== 0) fail(file, `hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numHeads}) and no head_dim is given`);
    headDim = hiddenSize / numHeads;
  }
  let slidingWindow: number | null = null;
  if (architecture === 'mistral' && j.sliding_window !== undefined && j.sliding_window !== null) {
    slidingWindow = positiveInt(file, j, 'sliding_window');
  }
  const eos = j.eos_token_id;
  let eosTokenIds: number[] = [];
  if (typeof eos === 'number') eosTokenIds = [eos];
  else if (Array.isArray(eos)) eosTokenIds = eos.map((e) => (typeof e === 'number' && Number.isInteger(e) && e >= 0 ? e : fail(file, `'eos_token_id' entries must be non-negative integers`)));
  else if (eos !== undefined && eos !== null) fail(file, `'eos_token_id' must be an integer or a list`);

  return validateShape(file, {
    architecture,
    hiddenSize,
    intermediateSize: positiveInt(file, j, 'intermediate_size'),
    numLayers: layerCount(file, j, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: positiveInt(file, j, 'vocab_size'),
    maxPositionEmbeddings: positiveInt(file, j, 'max_position_embeddings', 2048),
    rmsNormEps: positiveNumber(file, j, 'rms_norm_eps', 1e-6),
    ropeTheta: positiveNumber(file, j, 'rope_theta', 10000),
    ropeScaling: parseRopeScaling(file, j.rope_scaling),
    slidingWindow,
    tieWordEmbeddings: optionalBool(file, j, 'tie_word_embeddings', false),
    attentionBias: optionalBool(file, j, 'attention_bias', false) || architecture === 'qwen2',
    bosTokenId: optionalId(file, j, 'bos_token_id'),
    eosTokenIds,
    torchDtype: typeof j.torch_dtype === 'string' ? j.torch_dtype : null,
  });
}

/**
 * Parse a SYNAXIM `config.symb.json`. The .symb config does not record the HF architecture or the
 * special token ids; `hfHints` (from a neighbouring HF config or the tokenizer) fills those when known.
 */
export function parseSymbConfig(j: Json, file = 'config.symb.json', hfHints: Partial<ModelConfig> = {}): ModelConfig {
  if (typeof j !== 'object' || j === null || Array.isArray(j)) fail(file, 'config must be a JSON object');
  if (j.engine_name !== undefined && j.engine_name !== 'SYNAXIM') fail(file, `engine_name is ${JSON.stringify(j.engine_name)}, expected "SYNAXIM"`);
  if (j.architecture !== undefined && j.architecture !== 'dense') fail(file, `unsupported architecture ${JSON.stringify(j.architecture)} (supported: dense)`);
  if (typeof j.num_experts === 'number' && j.num_experts !== 1) fail(file, 'mixture-of-experts .symb models are not supported');
  const act = j.hidden_act ?? 'silu';
  if (act !== 'silu') fail(file, `unsupported hidden_act ${JSON.stringify(act)}`);
  const hiddenSize = positiveInt(file, j, 'hidden_size');
  const numHeads = positiveInt(file, j, 'num_attention_heads');
  const numLayers = layerCount(file, j, 'num_layers');
  if (Array.isArray(j.layer_types)) {
    if (j.layer_types.length !== numLayers) fail(file, `layer_types has ${j.layer_types.length} entries for num_layers ${numLayers}`);
    for (const t of j.layer_types) if (t !== 'full_attention') fail(file, `unsupported layer type ${JSON.stringify(t)}`);
  }
  let headDim: number;
  if (j.head_dim !== undefined && j.head_dim !== null) headDim = positiveInt(file, j, 'head_dim');
  else {
    if (hiddenSize % numHeads !== 0) fail(file, `hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numHeads})`);
    headDim = hiddenSize / numHeads;
  }
  return validateShape(file, {
    architecture: hfHints.architecture ?? 'llama',
    hiddenSize,
    intermediateSize: positiveInt(file, j, 'intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads: positiveInt(file, j, 'num_key_value_heads', numHeads),
    headDim,
    vocabSize: positiveInt(file, j, 'vocab_size'),
    maxPositionEmbeddings: positiveInt(file, j, 'max_position_embeddings', 2048),
    rmsNormEps: positiveNumber(file, j, 'rms_norm_eps', 1e-6),
    ropeTheta: positiveNumber(file, j, 'rope_theta', 10000),
    ropeScaling: hfHints.ropeScaling ?? null,
    slidingWindow: hfHints.slidingWindow ?? null,
    tieWordEmbeddings: optionalBool(file, j, 'tie_word_embeddings', false),
    attentionBias: hfHints.attentionBias ?? false,
    bosTokenId: hfHints.bosTokenId ?? 1,
    eosTokenIds: hfHints.eosTokenIds ?? [2],
    torchDtype: null,
  });
}

/** Largest JSON config (config.json, config.symb.json, tokenizer_config.json, adapter_config.json, a suite) we read. */
export const MAX_CONFIG_BYTES = 4 * MiB;
/** Largest tokenizer file we read (Gemma's 256k-entry tokenizer.json is 33 MiB; Llama 3's 9 MiB). */
export const MAX_TOKENIZER_BYTES = 64 * MiB;

export interface ReadJsonOptions {
  /** The model directory the file must resolve inside (symlinks included; see requireInsideModelDir). */
  within?: string;
  /** Size limit (default MAX_CONFIG_BYTES). */
  maxBytes?: number;
  /** What the file is, for the size message (default "a JSON config"). */
  what?: string;
}

/**
 * Read and parse a JSON file with one-line errors: a regular file of a sane size (never a FIFO,
 * device or directory; see readSmallRegularFile), inside `within` when given, valid UTF-8 JSON.
 */
export function readJsonFile(file: string, opts: ReadJsonOptions = {}): Json {
  if (opts.within !== undefined) requireInsideModelDir(opts.within, file);
  const bytes = readSmallRegularFile(file, opts.maxBytes ?? MAX_CONFIG_BYTES, opts.what ?? 'a JSON config');
  return parseJsonBytes(file, bytes) as Json;
}

/** JSON from bytes: one-line errors that quote at most a short, sanitized snippet of the text. */
export function parseJsonBytes(file: string, bytes: Uint8Array, what = 'JSON'): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes); // ignoreBOM: keep it, to refuse it
  } catch {
    return fail(file, `invalid ${what} (not UTF-8 text)`);
  }
  // The reference readers (Python's json) refuse a byte-order mark; JSON.parse would too, with a confusing message.
  if (text.startsWith('\uFEFF')) fail(file, `invalid ${what} (starts with a UTF-8 byte-order mark)`);
  try {
    return JSON.parse(text);
  } catch (e) {
    return fail(file, `invalid ${what} (${jsonErrorText(e)})`);
  }
}

/** Control characters (newlines, terminal escapes) that must not reach a one-line error message. */
export const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/**
 * A JSON.parse error as one line: V8 quotes the text around the error, newlines and whatever bytes
 * a broken file holds included.
 */
export function jsonErrorText(e: unknown): string {
  return snippet(String((e as Error)?.message ?? e), 120);
}

function isWithin(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/**
 * A model directory's files must live inside it. Model directories come from the internet; one
 * whose weight or config file is a symlink (or sits under a symlinked directory) resolving outside
 * the directory could make us read, and print facts about, any file on the machine — so such a
 * file is refused, naming it. The one exception is the Hugging Face hub cache, whose
 * `<repo>/snapshots/<rev>/` files link to `<repo>/blobs/`. A file that does not exist passes:
 * whoever opens it reports that.
 */
export function requireInsideModelDir(modelDir: string, file: string): void {
  const real = outsideModelDir(modelDir, file);
  if (real !== null) fail(file, `resolves (through a symlink) to ${real}, outside the model directory ${modelDir}; refusing to read it`);
}

/**
 * Where `file` really is when that is outside `modelDir` (the hub cache's blobs/ counting as
 * inside); null when it is inside, or does not resolve (a missing file, a dangling link, a loop).
 */
export function outsideModelDir(modelDir: string, file: string): string | null {
  let real: string;
  let root: string;
  try {
    real = fs.realpathSync(file);
    root = fs.realpathSync(modelDir);
  } catch {
    return null;
  }
  if (isWithin(root, real)) return null;
  const snapshots = path.dirname(root);
  if (path.basename(snapshots) === 'snapshots' && isWithin(path.join(path.dirname(snapshots), 'blobs'), real)) return null;
  return real;
}
