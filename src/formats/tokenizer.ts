/**
 * Text ⇄ token ids through `@huggingface/tokenizers` over a model's `tokenizer.json` +
 * `tokenizer_config.json`. The files sit in the model directory itself (HF layout) or in its
 * `tokenizer/` subdirectory (.symb layout).
 *
 * BOS is handled here, not by the tokenizer's post-processor: we always encode without special
 * tokens and prepend the BOS id ourselves when asked (default: the config's `add_bos_token`, else
 * whatever the post-processor would do), so every model gets the same, explicit behaviour.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { fail } from '../util/errors.ts';
import { MAX_TOKENIZER_BYTES, readJsonFile } from './config.ts';
import { entryExists } from '../util/fileio.ts';

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';

export interface EncodeOptions {
  /** Prepend the BOS id (default: the tokenizer's own convention, `Tokenizer.addBosByDefault`). */
  addBos?: boolean;
}

export interface Tokenizer {
  /** The tokenizer.json that was loaded (for messages). */
  readonly file: string;
  readonly bosId: number | null;
  readonly eosIds: number[];
  /** One past the largest token id the tokenizer knows (added tokens included). */
  readonly vocabSize: number;
  readonly addBosByDefault: boolean;
  encode(text: string, options?: EncodeOptions): number[];
  /** Text of `ids`; special tokens (BOS, EOS, ...) are left out unless `skipSpecial` is false. */
  decode(ids: readonly number[], options?: { skipSpecial?: boolean }): string;
  /**
   * The text that token `id` adds after `prevIds`, for printing a generation as it happens.
   * Concatenating the results of every step gives the decoded text; a character split over
   * several byte tokens comes out whole once its last byte arrives.
   */
  decodeToken(prevIds: readonly number[], id: number): string;
  tokenToId(token: string): number | null;
  idToToken(id: number): string | null;
}

export interface LoadTokenizerOptions {
  /** The model config's BOS id (used when tokenizer_config.json names no bos_token). */
  bosTokenId?: number | null;
  /** The model config's EOS ids (merged with tokenizer_config.json's eos_token). */
  eosTokenIds?: number[];
  /** The model's vocab_size: a tokenizer that can produce ids at or beyond it is refused at load. */
  modelVocabSize?: number;
}

/**
 * Token ids in a BPE/WordPiece vocab object must lie within the number of entries (plus added
 * tokens): a hostile id like 10^9 would otherwise make the library walk a billion slots at load.
 */
function checkVocabIds(file: string, tokenizerJson: Json, modelVocabSize: number | undefined): void {
  const model = tokenizerJson.model as Json | undefined;
  const vocab = model?.vocab;
  const added = Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [];
  // Sizes first, before the library builds anything (its load time grows faster than linearly
  // with the vocabulary: 300k entries take ~10 s): a tokenizer with more entries than the model
  // has ids is not this model's, and one beyond any real vocabulary is not a tokenizer.
  // (Added tokens often repeat vocabulary entries, e.g. Llama 2's <s>: they are checked by id below.)
  const vocabEntries = Array.isArray(vocab) ? vocab.length : typeof vocab === 'object' && vocab !== null ? Object.keys(vocab).length : 0;
  const entries = vocabEntries + added.length;
  const limit = modelVocabSize ?? MAX_VOCAB_ENTRIES;
  if (vocabEntries > limit) {
    fail(file, modelVocabSize !== undefined
      ? `the tokenizer has ${vocabEntries} vocabulary entries but the model's vocabulary is ${modelVocabSize} (not this model's tokenizer)`
      : `the tokenizer has ${vocabEntries} vocabulary entries, more than the ${MAX_VOCAB_ENTRIES} any real vocabulary has`);
  }
  if (added.length > MAX_VOCAB_ENTRIES) fail(file, `the tokenizer has ${added.length} added tokens, more than the ${MAX_VOCAB_ENTRIES} any real vocabulary has`);
  const merges = model?.merges;
  if (Array.isArray(merges) && merges.length > MAX_VOCAB_ENTRIES) fail(file, `the tokenizer has ${merges.length} merges, more than the ${MAX_VOCAB_ENTRIES} any real vocabulary has`);
  for (const t of added) {
    const id = (t as Json | null)?.id;
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || (modelVocabSize !== undefined && id >= modelVocabSize)) {
      fail(file, `added token id ${JSON.stringify(id)} is ${modelVocabSize !== undefined ? `outside the model's vocabulary 0..${modelVocabSize - 1} (not this model's tokenizer)` : 'not a non-negative integer'}`);
    }
  }
  if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab)) return; // Unigram: ids are positions
  for (const [token, id] of Object.entries(vocab as Json)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= entries) {
      fail(file, `token ${JSON.stringify(token).slice(0, 40)} has id ${JSON.stringify(id)}, outside 0..${entries - 1} (the vocabulary has ${entries} entries)`);
    }
    if (modelVocabSize !== undefined && id >= modelVocabSize) {
      fail(file, `token ${JSON.stringify(token).slice(0, 40)} has id ${id}, but the model's vocabulary is ${modelVocabSize} (not this model's tokenizer)`);
    }
  }
}

/** More entries than any released vocabulary (Gemma: 262k) by a wide margin: refused without a model to compare with. */
export const MAX_VOCAB_ENTRIES = 1 << 20;

type Json = Record<string, unknown>;

/** Where a model directory keeps its tokenizer.json: the dir itself, or its tokenizer dir (.symb). */
export function findTokenizerDir(dir: string): string {
  const candidates = [dir];
  const symbConfig = path.join(dir, 'config.symb.json');
  if (entryExists(symbConfig)) {
    const sub = readJsonFile(symbConfig, { within: dir }).tokenizer_dir;
    if (typeof sub === 'string' && sub.length > 0) candidates.push(path.join(dir, sub));
  }
  candidates.push(path.join(dir, 'tokenizer'));
  for (const c of candidates) if (entryExists(path.join(c, TOKENIZER_FILE))) return c;
  return fail(path.join(dir, TOKENIZER_FILE), `file not found (looked in ${[...new Set(candidates)].join(' and ')})`);
}

/** `bos_token` / `eos_token` in tokenizer_config.json: a string or an AddedToken-like {content}. */
function specialTokenContent(file: string, cfg: Json, key: string): string | null {
  const v = cfg[key];
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return fail(file, `'${key}' must be a string or an object with 'content'`);
}

/**
 * The model directory a tokenizer directory belongs to: `dir` itself, or — for the `tokenizer/`
 * directory of a .symb model, which callers may pass directly — its parent. Files are read only
 * from inside it: a `tokenizer/` that is itself a link out of the model is refused too.
 */
function modelRootOf(dir: string): string {
  const parent = path.dirname(path.resolve(dir));
  const isModel = (d: string) => entryExists(path.join(d, 'config.json')) || entryExists(path.join(d, 'config.symb.json'));
  return !isModel(dir) && entryExists(path.join(parent, 'config.symb.json')) ? parent : dir;
}

/** Load the tokenizer of a model directory (HF or .symb). */
export async function loadTokenizer(dir: string, options: LoadTokenizerOptions = {}): Promise<Tokenizer> {
  const root = modelRootOf(dir);
  const tokDir = findTokenizerDir(dir);
  const file = path.join(tokDir, TOKENIZER_FILE);
  // Every file is read only from inside the model directory (the hub cache's blobs/ included).
  const tokenizerJson = readJsonFile(file, { within: root, maxBytes: MAX_TOKENIZER_BYTES, what: 'a tokenizer' });
  if (typeof tokenizerJson !== 'object' || tokenizerJson === null || Array.isArray(tokenizerJson)) fail(file, 'must be a JSON object');
  const cfgFile = path.join(tokDir, TOKENIZER_CONFIG_FILE);
  // (tokenizer_config.json can list every added token: the tokenizer's limit, not a config's)
  const cfg: Json = entryExists(cfgFile) ? readJsonFile(cfgFile, { within: root, maxBytes: MAX_TOKENIZER_BYTES, what: 'a tokenizer config' }) : {};
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) fail(cfgFile, 'must be a JSON object');
  // A string "false" would be read as set (or silently ignored): booleans must be booleans.
  for (const key of ['add_bos_token', 'add_eos_token', 'clean_up_tokenization_spaces']) {
    const v = cfg[key];
    if (v !== undefined && v !== null && typeof v !== 'boolean') fail(cfgFile, `'${key}' must be true or false, got ${JSON.stringify(v).slice(0, 40)}`);
  }

  // The HF model config beside the tokenizer supplies BOS/EOS ids when the caller does not.
  let modelBos = options.bosTokenId;
  let modelEos = options.eosTokenIds;
  const hfConfigFile = path.join(dir, 'config.json');
  if ((modelBos === undefined || modelEos === undefined) && entryExists(hfConfigFile)) {
    const mc = readJsonFile(hfConfigFile, { within: root });
    if (modelBos === undefined && typeof mc.bos_token_id === 'number') modelBos = mc.bos_token_id;
    if (modelEos === undefined) {
      if (typeof mc.eos_token_id === 'number') modelEos = [mc.eos_token_id];
      else if (Array.isArray(mc.eos_token_id)) modelEos = mc.eos_token_id.filter((e): e is number => typeof e === 'number');
    }
  }

  let hf: HfTokenizer;
  checkVocabIds(file, tokenizerJson, options.modelVocabSize);
  try {
    const model = tokenizerJson.model;
    if (typeof model !== 'object' || model === null) throw new Error("missing 'model'");
    hf = new HfTokenizer(tokenizerJson, cfg);
  } catch (e) {
    return fail(file, `not a usable tokenizer (${(e as Error).message})`);
  }
  const tokenizer = new HfBackedTokenizer(file, cfgFile, hf, cfg, modelBos ?? null, modelEos ?? []);
  if (options.modelVocabSize !== undefined && tokenizer.vocabSize > options.modelVocabSize) {
    fail(file, `the tokenizer has ids up to ${tokenizer.vocabSize - 1} but the model's vocabulary is ${options.modelVocabSize} (not this model's tokenizer)`);
  }
  return tokenizer;
}

/** Tokens of context for decodeToken: a held-back 4-byte character plus a few tokens before it. */
const DECODE_WINDOW = 12;
const REPLACEMENT = '\uFFFD';

class HfBackedTokenizer implements Tokenizer {
  readonly file: string;
  readonly bosId: number | null;
  readonly eosIds: number[];
  readonly vocabSize: number;
  readonly addBosByDefault: boolean;
  private readonly hf: HfTokenizer;
  private readonly cleanUpSpaces: boolean;
  private readonly specialIds: Set<number>;

  constructor(file: string, cfgFile: string, hf: HfTokenizer, cfg: Json, modelBos: number | null, modelEos: number[]) {
    this.file = file;
    this.hf = hf;
    let maxId = -1;
    for (const id of hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.specialIds = new Set([...hf.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id));
    if (this.vocabSize === 0) fail(file, 'the vocabulary is empty');

    const idOf = (key: string): number | null => {
      const content = specialTokenContent(cfgFile, cfg, key);
      if (content === null) return null;
      const id = hf.token_to_id(content);
      if (id === undefined) fail(cfgFile, `${key} ${JSON.stringify(content)} is not in the vocabulary of ${file}`);
      return id;
    };
    // The tokenizer's own BOS wins (it is what the model was trained with); the model config's
    // id is the fallback for tokenizer configs that do not name one.
    this.bosId = idOf('bos_token') ?? modelBos;
    const eos = new Set<number>(modelEos);
    const cfgEos = idOf('eos_token');
    if (cfgEos !== null) eos.add(cfgEos);
    this.eosIds = [...eos].sort((a, b) => a - b);
    for (const id of [this.bosId, ...this.eosIds]) {
      if (id !== null && (id < 0 || id >= this.vocabSize)) fail(file, `special token id ${id} is outside the vocabulary (${this.vocabSize})`);
    }

    if (typeof cfg.add_bos_token === 'boolean') this.addBosByDefault = cfg.add_bos_token;
    else {
      // No explicit setting: do what the tokenizer's post-processor does (Llama 3 adds
      // <|begin_of_text|>, Qwen2 adds nothing).
      let ids: number[] = [];
      try {
        ids = hf.encode('a', { add_special_tokens: true }).ids;
      } catch {
        ids = [];
      }
      this.addBosByDefault = this.bosId !== null && ids[0] === this.bosId;
    }
    if (this.addBosByDefault && this.bosId === null) fail(cfgFile, 'add_bos_token is true but no BOS token is defined');
    // transformers' Llama tokenizers default to no clean-up, which would break round trips ("a ." → "a.").
    this.cleanUpSpaces = cfg.clean_up_tokenization_spaces === true;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const addBos = options.addBos ?? this.addBosByDefault;
    const ids = text.length === 0 ? [] : [...this.hf.encode(text, { add_special_tokens: false }).ids];
    if (addBos) {
      if (this.bosId === null) fail(this.file, 'cannot add BOS: the tokenizer defines no BOS token');
      ids.unshift(this.bosId);
    }
    return ids;
  }

  decode(ids: readonly number[], options: { skipSpecial?: boolean } = {}): string {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        fail(null, `token id ${id} is outside the vocabulary (0..${this.vocabSize - 1}) of ${this.file}`);
      }
    }
    if (ids.length === 0) return '';
    return this.hf.decode([...ids], {
      skip_special_tokens: options.skipSpecial ?? true,
      clean_up_tokenization_spaces: this.cleanUpSpaces,
    });
  }

  /**
   * Decode a short window of the previous tokens with and without the new one and print the
   * difference of what is printable. The window keeps the decoder's context (a leading-space
   * strip, a byte-fallback run) the same in both decodes, so the pieces add up to the whole text.
   */
  decodeToken(prevIds: readonly number[], id: number): string {
    const window = prevIds.slice(Math.max(0, prevIds.length - DECODE_WINDOW));
    const before = this.printable(window);
    const after = this.printable([...window, id]);
    if (after.startsWith(before)) return after.slice(before.length);
    let common = 0;
    while (common < before.length && common < after.length && before[common] === after[common]) common++;
    return after.slice(common);
  }

  /**
   * The text of `ids` that can be printed now. An unfinished UTF-8 character at the end decodes
   * to one U+FFFD; the (at most 3) trailing tokens that make it are held back until the tokens
   * that complete it arrive. Bytes that never make a character print as U+FFFD once a later token
   * lets the text end cleanly.
   */
  private printable(ids: readonly number[]): string {
    const full = this.decode(ids);
    if (!full.endsWith(REPLACEMENT)) return full;
    const beforeTail = full.slice(0, -1);
    // Special tokens print nothing (decode skips them), so they do not count towards the 3.
    for (let held = 1, bytes = 0; held <= ids.length; held++) {
      if (!this.specialIds.has(ids[ids.length - held]!)) bytes++;
      if (bytes > 3) break;
      const text = this.decode(ids.slice(0, ids.length - held));
      // The held tokens must be exactly what produced the final U+FFFD (plus any text before it).
      if (beforeTail.startsWith(text)) return text;
    }
    return full;
  }

  tokenToId(token: string): number | null {
    return this.hf.token_to_id(token) ?? null;
  }
  idToToken(id: number): string | null {
    return this.hf.id_to_token(id) ?? null;
  }
}
