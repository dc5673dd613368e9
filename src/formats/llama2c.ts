/**
 * Import a llama2.c checkpoint (karpathy's TinyStories models) into a Hugging Face directory.
 *
 * Model file, legacy "version 0" format (export.py legacy_export, read by run.c):
 *   7 × int32  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *              (vocab_size < 0 means the classifier is not tied to the embedding)
 *   float32    token_embedding [V, D], rms_att [L, D], wq [L, D, D], wk [L, KV, D], wv [L, KV, D],
 *              wo [L, D, D], rms_ffn [L, D], w1 [L, H, D], w2 [L, D, H], w3 [L, H, D], rms_final [D],
 *              freq_cis_real [seq_len, hs/2], freq_cis_imag [seq_len, hs/2] (unused), wcls [V, D] if untied
 *   Matrices are torch nn.Linear weights, [out, in] row-major, as HF stores them. llama2.c applies
 *   RoPE to interleaved pairs (q0,q1),(q2,q3)…; HF rotates halves (q_i, q_{i+hs/2}), so the rows of
 *   q and k are permuted per head as HF's convert_llama_weights_to_hf does.
 *
 * Tokenizer file (tokenizer.py export): int32 max_token_length, then for each of the model's
 *   vocab_size tokens: float32 score, int32 byte length, UTF-8 bytes. SentencePiece's '▁' is written
 *   as ' ', BOS (id 1) as "\n<s>\n", EOS (id 2) as "\n</s>\n"; ids 3..258 are the byte tokens
 *   <0x00>..<0xFF>. llama2.c's encoder prepends a space, looks every character up (bytes for the
 *   unknown ones), then repeatedly merges the adjacent pair whose concatenation is the
 *   best-scoring token. The equivalent HF tokenizer is a BPE with byte fallback whose merges are all
 *   (left, right) splits of every token, ranked by the merged token's score — the merge list
 *   transformers' SentencePieceExtractor builds from a SentencePiece model.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../util/errors.ts';
import { openRegularFile, readExactly, readSmallRegularFile } from '../util/fileio.ts';
import { MAX_TOKENIZER_BYTES } from './config.ts';
import { writeDirAtomic, writeFileAtomic } from '../util/atomic.ts';
import { writeSafetensors, type StTensorToWrite } from './safetensors.ts';

export interface Llama2cConfig {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  /** The classifier is the embedding matrix (header vocab_size > 0). */
  sharedClassifier: boolean;
  headSize: number;
}

export const LLAMA2C_HEADER_BYTES = 7 * 4;
/** Newer llama2.c exports (version ≥ 1) start with this uint32 magic, "ak42". */
const LLAMA2C_MAGIC = 0x616b3432;
/** Sizes beyond this are not a llama2.c model but a corrupt header (and would overflow the size arithmetic). */
const MAX_HEADER_VALUE = 1 << 24;

const BOS_ID = 1;
const EOS_ID = 2;
const FIRST_BYTE_TOKEN = 3;

function describeHeader(c: Pick<Llama2cConfig, 'dim' | 'hiddenDim' | 'nLayers' | 'nHeads' | 'nKvHeads' | 'vocabSize' | 'seqLen'>): string {
  return `dim ${c.dim}, hidden_dim ${c.hiddenDim}, n_layers ${c.nLayers}, n_heads ${c.nHeads}, n_kv_heads ${c.nKvHeads}, vocab_size ${c.vocabSize}, seq_len ${c.seqLen}`;
}

/** Parse and check the 28-byte header (pure; `file` names the file in errors). */
export function parseLlama2cHeader(file: string, header: Uint8Array): Llama2cConfig {
  if (header.length < LLAMA2C_HEADER_BYTES) fail(file, `too small to be a llama2.c checkpoint (${header.length} bytes; the header alone is ${LLAMA2C_HEADER_BYTES})`);
  const view = new DataView(header.buffer, header.byteOffset, LLAMA2C_HEADER_BYTES);
  if (view.getUint32(0, true) === LLAMA2C_MAGIC) {
    fail(file, `is a llama2.c version ${view.getInt32(4, true)} export; only the legacy version 0 format is supported (export.py --version 0)`);
  }
  const v = Array.from({ length: 7 }, (_, i) => view.getInt32(4 * i, true));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, rawVocab, seqLen] = v as [number, number, number, number, number, number, number];
  const c = { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize: rawVocab, seqLen };
  const bad = (what: string): never => fail(file, `bad llama2.c header (${describeHeader(c)}): ${what}`);
  for (const [name, value] of [['dim', dim], ['hidden_dim', hiddenDim], ['n_layers', nLayers], ['n_heads', nHeads], ['n_kv_heads', nKvHeads], ['seq_len', seqLen]] as const) {
    if (value <= 0) bad(`${name} must be positive`);
    if (value > MAX_HEADER_VALUE) bad(`${name} is implausibly large`);
  }
  if (rawVocab === 0) bad('vocab_size is 0');
  if (Math.abs(rawVocab) > MAX_HEADER_VALUE) bad('vocab_size is implausibly large');
  if (dim % nHeads !== 0) bad('dim is not a multiple of n_heads');
  const headSize = dim / nHeads;
  if (headSize % 2 !== 0) bad(`head size ${headSize} is odd (RoPE rotates pairs)`);
  if (nKvHeads > nHeads || nHeads % nKvHeads !== 0) bad('n_heads is not a multiple of n_kv_heads');
  const vocabSize = Math.abs(rawVocab);
  if (vocabSize < FIRST_BYTE_TOKEN + 256) bad(`vocab_size ${vocabSize} cannot hold the 3 special and 256 byte tokens llama2.c expects`);
  return { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen, sharedClassifier: rawVocab > 0, headSize };
}

/** One float32 block of the checkpoint, in file order. */
export interface Llama2cBlock {
  name: string;
  /** Shape of the whole block; per-layer blocks have n_layers as their first dimension. */
  shape: number[];
  byteOffset: number;
  byteLength: number;
}

/** The blocks of a legacy checkpoint in run.c's order (`memory_map_weights`), with their offsets. */
export function llama2cLayout(c: Llama2cConfig): { blocks: Llama2cBlock[]; fileBytes: number } {
  const { dim: D, hiddenDim: H, nLayers: L, vocabSize: V, headSize: hs, seqLen } = c;
  const kvDim = c.nKvHeads * hs;
  const shapes: [string, number[]][] = [
    ['token_embedding', [V, D]],
    ['rms_att', [L, D]],
    ['wq', [L, c.nHeads * hs, D]],
    ['wk', [L, kvDim, D]],
    ['wv', [L, kvDim, D]],
    ['wo', [L, D, c.nHeads * hs]],
    ['rms_ffn', [L, D]],
    ['w1', [L, H, D]],
    ['w2', [L, D, H]],
    ['w3', [L, H, D]],
    ['rms_final', [D]],
    ['freq_cis_real', [seqLen, hs / 2]],
    ['freq_cis_imag', [seqLen, hs / 2]],
  ];
  if (!c.sharedClassifier) shapes.push(['wcls', [V, D]]);
  const blocks: Llama2cBlock[] = [];
  let offset = LLAMA2C_HEADER_BYTES;
  for (const [name, shape] of shapes) {
    const byteLength = 4 * shape.reduce((a, b) => a * b, 1);
    blocks.push({ name, shape, byteOffset: offset, byteLength });
    offset += byteLength;
  }
  return { blocks, fileBytes: offset };
}

/**
 * Reorder the rows of a q or k projection from llama2.c's interleaved-pair RoPE layout to HF's
 * rotate-half layout: within each head, new row j (< hs/2) is old row 2j (the pair's first
 * element) and new row hs/2 + j is old row 2j + 1. This is HF's
 * `w.view(n_heads, hs // 2, 2, cols).transpose(1, 2).reshape(rows, cols)`. Works on any typed
 * array: `rowLength` counts elements per row (4 × cols when `w` holds raw float32 bytes).
 */
export function permuteToRotateHalf<T extends Float32Array | Uint8Array>(w: T, nHeads: number, rowLength: number): T {
  const rows = w.length / rowLength;
  if (!Number.isInteger(rows) || rows % nHeads !== 0 || (rows / nHeads) % 2 !== 0) {
    throw new Error(`permuteToRotateHalf: ${w.length} elements are not ${nHeads} heads of an even number of rows of ${rowLength}`);
  }
  const hs = rows / nHeads;
  const half = hs / 2;
  const out = new (w.constructor as new (n: number) => T)(w.length);
  for (let h = 0; h < nHeads; h++) {
    for (let j = 0; j < half; j++) {
      for (let pairPos = 0; pairPos < 2; pairPos++) {
        const from = h * hs + 2 * j + pairPos;
        const to = h * hs + pairPos * half + j;
        out.set(w.subarray(from * rowLength, (from + 1) * rowLength), to * rowLength);
      }
    }
  }
  return out;
}

/** Read and check a checkpoint's header against its file size. */
export function readLlama2cConfig(file: string): Llama2cConfig {
  const { fd, size } = openRegularFile(file, { expected: 'file' });
  try {
    const config = parseLlama2cHeader(file, readExactly(fd, file, Math.min(size, LLAMA2C_HEADER_BYTES), 0));
    const { fileBytes } = llama2cLayout(config);
    if (size !== fileBytes) {
      fail(file, `is ${size} bytes but its header (${describeHeader({ ...config, vocabSize: config.sharedClassifier ? config.vocabSize : -config.vocabSize })}) implies ${fileBytes} bytes — ${size < fileBytes ? 'truncated' : 'trailing data'}, or not a legacy llama2.c checkpoint`);
    }
    return config;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The HF tensors of a checkpoint, as raw little-endian F32 bytes (the .bin's own bytes, rows
 * permuted for q/k — no float arithmetic, so values are exact). Names follow HF's LlamaForCausalLM.
 */
export function readLlama2cAsHf(file: string): { config: Llama2cConfig; tensors: Record<string, StTensorToWrite> } {
  const config = readLlama2cConfig(file);
  const { blocks } = llama2cLayout(config);
  const block = new Map(blocks.map((b) => [b.name, b]));
  const { fd } = openRegularFile(file, { expected: 'file' });
  const tensors: Record<string, StTensorToWrite> = {};
  try {
    const whole = (name: string): Uint8Array => {
      const b = block.get(name)!;
      return readExactly(fd, file, b.byteLength, b.byteOffset);
    };
    /** Layer `l`'s slice of a per-layer block, with the block's shape minus its layer dimension. */
    const layer = (name: string, l: number): { shape: number[]; bytes: Uint8Array } => {
      const b = block.get(name)!;
      const per = b.byteLength / config.nLayers;
      return { shape: b.shape.slice(1), bytes: readExactly(fd, file, per, b.byteOffset + l * per) };
    };
    const f32 = (shape: number[], bytes: Uint8Array): StTensorToWrite => ({ dtype: 'F32', shape, data: bytes });

    const all: Record<string, StTensorToWrite> = {};
    all['model.embed_tokens.weight'] = f32([config.vocabSize, config.dim], whole('token_embedding'));
    for (let l = 0; l < config.nLayers; l++) {
      const p = `model.layers.${l}.`;
      const q = layer('wq', l);
      const k = layer('wk', l);
      const rowBytes = 4 * config.dim;
      all[p + 'input_layernorm.weight'] = f32(layer('rms_att', l).shape, layer('rms_att', l).bytes);
      all[p + 'self_attn.q_proj.weight'] = f32(q.shape, permuteToRotateHalf(q.bytes, config.nHeads, rowBytes));
      all[p + 'self_attn.k_proj.weight'] = f32(k.shape, permuteToRotateHalf(k.bytes, config.nKvHeads, rowBytes));
      for (const [src, dst] of [['wv', 'self_attn.v_proj'], ['wo', 'self_attn.o_proj'], ['rms_ffn', 'post_attention_layernorm'], ['w1', 'mlp.gate_proj'], ['w2', 'mlp.down_proj'], ['w3', 'mlp.up_proj']] as const) {
        const t = layer(src, l);
        all[`${p}${dst}.weight`] = f32(t.shape, t.bytes);
      }
    }
    all['model.norm.weight'] = f32([config.dim], whole('rms_final'));
    if (!config.sharedClassifier) all['lm_head.weight'] = f32([config.vocabSize, config.dim], whole('wcls'));
    // Sorted by name, as the Python safetensors writer orders them.
    for (const name of Object.keys(all).sort()) tensors[name] = all[name]!;
  } finally {
    fs.closeSync(fd);
  }
  return { config, tensors };
}

/** HF config.json for a llama2.c model (llama2.c fixes ε = 1e-5, θ = 10000, BOS 1, EOS 2). */
export function hfConfigFor(c: Llama2cConfig): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: c.headSize,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.seqLen,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    hidden_act: 'silu',
    tie_word_embeddings: c.sharedClassifier,
    bos_token_id: BOS_ID,
    eos_token_id: EOS_ID,
    torch_dtype: 'float32',
  };
}
const CONFIG_FLOAT_KEYS = new Set(['rms_norm_eps', 'rope_theta']);

// ---------------------------------------------------------------------------------------------
// Tokenizer

export interface Llama2cVocab {
  maxTokenLength: number;
  /** Token texts as SentencePiece writes them ('▁' for a space; '<s>', '</s>' for BOS/EOS). */
  pieces: string[];
  scores: Float32Array;
}

/** Parse a llama2.c tokenizer.bin holding `vocabSize` tokens (pure). */
export function parseLlama2cTokenizer(file: string, bytes: Uint8Array, vocabSize: number): Llama2cVocab {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) fail(file, `too small to be a llama2.c tokenizer (${bytes.length} bytes)`);
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength <= 0 || maxTokenLength > 1 << 16) fail(file, `bad llama2.c tokenizer: max_token_length is ${maxTokenLength}`);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const pieces: string[] = [];
  const scores = new Float32Array(vocabSize);
  let off = 4;
  for (let id = 0; id < vocabSize; id++) {
    if (off + 8 > bytes.length) fail(file, `ends inside token ${id} of ${vocabSize} (truncated, or the model's vocab_size does not match this tokenizer)`);
    const score = view.getFloat32(off, true);
    const len = view.getInt32(off + 4, true);
    off += 8;
    if (!Number.isFinite(score)) fail(file, `token ${id} has score ${score}`);
    if (len < 0 || len > maxTokenLength) fail(file, `token ${id} has length ${len}, outside 0..max_token_length (${maxTokenLength})`);
    if (off + len > bytes.length) fail(file, `ends inside token ${id} of ${vocabSize} (truncated, or the model's vocab_size does not match this tokenizer)`);
    let text: string;
    try {
      text = utf8.decode(bytes.subarray(off, off + len));
    } catch {
      return fail(file, `token ${id} is not valid UTF-8`);
    }
    off += len;
    scores[id] = score;
    // Undo tokenizer.py's export: BOS/EOS were written with newlines around them, '▁' as ' '.
    pieces.push(id === BOS_ID || id === EOS_ID ? text.trim() : text.replaceAll(' ', '▁'));
  }
  if (off !== bytes.length) fail(file, `has ${bytes.length - off} bytes after its ${vocabSize} tokens (the model's vocab_size does not match this tokenizer)`);

  const expect = (id: number, piece: string, why: string) => {
    if (pieces[id] !== piece) fail(file, `token ${id} is ${JSON.stringify(pieces[id])}, expected ${JSON.stringify(piece)} (${why})`);
  };
  expect(BOS_ID, '<s>', 'llama2.c uses id 1 as BOS');
  expect(EOS_ID, '</s>', 'llama2.c uses id 2 as EOS');
  for (let b = 0; b < 256; b++) {
    expect(FIRST_BYTE_TOKEN + b, `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, 'llama2.c falls back to byte tokens at ids 3..258');
  }
  const seen = new Map<string, number>();
  pieces.forEach((p, id) => {
    if (p.length === 0) fail(file, `token ${id} is empty`);
    const prev = seen.get(p);
    if (prev !== undefined) fail(file, `token ${id} ${JSON.stringify(p)} duplicates token ${prev}`);
    seen.set(p, id);
  });
  return { maxTokenLength, pieces, scores };
}

/**
 * BPE merges equivalent to llama2.c's score-driven merging: every split of every token into two
 * tokens, ordered by the merged token's score (best first; a stable sort keeps ids in order for
 * equal scores) and, for one token, by the ids of its left then right part — the list
 * transformers' SentencePieceExtractor makes.
 */
export function mergesFromScores(pieces: string[], scores: ArrayLike<number>): [string, string][] {
  const idOf = new Map(pieces.map((p, i) => [p, i]));
  const merges: { left: string; right: string; score: number }[] = [];
  pieces.forEach((piece, id) => {
    const chars = Array.from(piece); // split between characters, not UTF-16 units
    const local: { left: string; right: string; score: number }[] = [];
    for (let i = 1; i < chars.length; i++) {
      const left = chars.slice(0, i).join('');
      const right = chars.slice(i).join('');
      if (idOf.has(left) && idOf.has(right)) local.push({ left, right, score: scores[id]! });
    }
    local.sort((a, b) => idOf.get(a.left)! - idOf.get(b.left)! || idOf.get(a.right)! - idOf.get(b.right)!);
    merges.push(...local);
  });
  merges.sort((a, b) => b.score - a.score); // stable (ES2019)
  return merges.map((m) => [m.left, m.right]);
}

/**
 * tokenizer.json for a llama2.c vocabulary (the layout transformers' LlamaConverter writes).
 * `model.vocab` is a Map (token → id, in id order); write it with `pythonJsonDumps`.
 */
export function hfTokenizerJsonFor(vocab: Llama2cVocab): Record<string, unknown> {
  const special = (id: number) => ({ id, content: vocab.pieces[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const bos = vocab.pieces[BOS_ID]!;
  // A Map keeps id order: in a plain object the digit tokens ("0", "1", …) would move first.
  const vocabMap = new Map(vocab.pieces.map((p, id) => [p, id]));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0), special(BOS_ID), special(EOS_ID)],
    // llama2.c's encoder: a leading space, then spaces as '▁'.
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [bos]: { id: bos, ids: [BOS_ID], tokens: [bos] } },
    },
    // llama2.c's decoder: '▁' is a space, <0xNN> a raw byte, and the space after BOS is dropped.
    decoder: {
      type: 'Sequence',
      decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: vocab.pieces[0],
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: vocabMap,
      merges: mergesFromScores(vocab.pieces, vocab.scores).map(([l, r]) => `${l} ${r}`),
    },
  };
}

export function hfTokenizerConfigFor(vocab: Llama2cVocab, c: Llama2cConfig): Record<string, unknown> {
  return {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: vocab.pieces[BOS_ID],
    eos_token: vocab.pieces[EOS_ID],
    unk_token: vocab.pieces[0],
    model_max_length: c.seqLen,
    tokenizer_class: 'LlamaTokenizer',
  };
}

// ---------------------------------------------------------------------------------------------
// JSON text as Python's json.dumps writes it, so the files match those of the Python tools.

/** Python's repr of a float: shortest round-trip digits, exponent form outside 1e-4 ≤ |x| < 1e16. */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mant, expText] = Math.abs(x).toExponential().split('e') as [string, string];
  const digits = mant.replace('.', '');
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
  const frac = digits.slice(exp + 1);
  return `${sign}${intPart}.${frac.length > 0 ? frac : '0'}`;
}

/**
 * `json.dumps(value, ensure_ascii=False, indent=indent)`. JS numbers do not remember whether
 * they were floats, so numbers under the keys in `floatKeys` are written as Python floats. A Map
 * is written as an object with its keys in insertion order.
 */
export function pythonJsonDumps(value: unknown, options: { indent?: number; floatKeys?: Set<string> } = {}): string {
  const { indent, floatKeys = new Set<string>() } = options;
  const write = (v: unknown, depth: number, key: string | null): string => {
    if (v === null || v === undefined) return 'null';
    if (typeof v === 'boolean') return v ? 'true' : 'false';
    if (typeof v === 'number') return key !== null && floatKeys.has(key) ? pythonFloatRepr(v) : Number.isInteger(v) ? String(v) : pythonFloatRepr(v);
    if (typeof v === 'string') return JSON.stringify(v); // same escapes as Python with ensure_ascii=False
    const isArray = Array.isArray(v);
    const entries: [string | null, unknown][] = isArray ? (v as unknown[]).map((x) => [null, x]) : v instanceof Map ? [...v.entries()].map(([k, x]) => [String(k), x]) : Object.entries(v as object);
    if (entries.length === 0) return isArray ? '[]' : '{}';
    const items = entries.map(([k, x]) => (k === null ? write(x, depth + 1, key) : `${JSON.stringify(k)}: ${write(x, depth + 1, k)}`));
    const [open, close] = isArray ? ['[', ']'] : ['{', '}'];
    if (indent === undefined) return `${open}${items.join(', ')}${close}`;
    const pad = '\n' + ' '.repeat(indent * (depth + 1));
    return `${open}${pad}${items.join(',' + pad)}\n${' '.repeat(indent * depth)}${close}`;
  };
  return write(value, 0, null);
}

// ---------------------------------------------------------------------------------------------

export interface ImportResult {
  config: Llama2cConfig;
  tensors: number;
  merges: number;
}

export const LLAMA2C_OUTPUT_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];

/** The output must be new, empty, or an earlier import (only our files) unless `overwrite`. */
function checkOutputDir(outDir: string, overwrite: boolean): void {
  if (!fs.existsSync(outDir)) return;
  if (!fs.statSync(outDir).isDirectory()) fail(outDir, 'exists and is not a directory');
  // With overwrite (the CLI's --overwrite, after checkOutput) only LLAMA2C_OUTPUT_FILES are replaced.
  if (overwrite) return;
  const foreign = fs.readdirSync(outDir).filter((f) => !LLAMA2C_OUTPUT_FILES.includes(f));
  if (foreign.length > 0) fail(outDir, `exists and holds other files (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', …' : ''}); give a new or empty directory`);
}

/** Convert `modelBin` + `tokenizerBin` into an HF directory `outDir` (written atomically). */
export async function importLlama2c(modelBin: string, tokenizerBin: string, outDir: string, opts: { overwrite?: boolean } = {}): Promise<ImportResult> {
  checkOutputDir(outDir, opts.overwrite ?? false);
  const { config, tensors } = readLlama2cAsHf(modelBin);
  const vocab = parseLlama2cTokenizer(tokenizerBin, new Uint8Array(readSmallRegularFile(tokenizerBin, MAX_TOKENIZER_BYTES, 'a llama2.c tokenizer', 'file not found')), config.vocabSize);
  const tokenizerJson = hfTokenizerJsonFor(vocab);
  await writeDirAtomic(outDir, (tmp) => {
    writeFileAtomic(path.join(tmp, 'config.json'), pythonJsonDumps(hfConfigFor(config), { indent: 2, floatKeys: CONFIG_FLOAT_KEYS }));
    writeSafetensors(path.join(tmp, 'model.safetensors'), tensors, { format: 'pt' });
    writeFileAtomic(path.join(tmp, 'tokenizer.json'), pythonJsonDumps(tokenizerJson));
    writeFileAtomic(path.join(tmp, 'tokenizer_config.json'), pythonJsonDumps(hfTokenizerConfigFor(vocab, config), { indent: 2 }));
  }, { isOurs: (name) => LLAMA2C_OUTPUT_FILES.includes(name), marker: 'config.json' });
  return { config, tensors: Object.keys(tensors).length, merges: ((tokenizerJson.model as { merges: string[] }).merges).length };
}
