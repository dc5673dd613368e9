/**
 * Calibration corpora: reading (JSONL with a `text` field, or plain text split into documents at
 * blank lines), a built-in default corpus the project writes itself, tokenization into training
 * sequences, content hashes (cache keys and provenance), and a deterministic held-out split.
 *
 * Each document becomes at most one sequence: BOS + its tokens, cut to `seqLen`. Documents shorter
 * than that are dropped, so every sequence has exactly `seqLen` tokens and a step sees a fixed
 * number of tokens (the SYNAXIM scripts train on fixed-length windows as well).
 */
import { mulberry32, seededPermutation } from '../util/random.ts';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fail, SynaximError } from '../util/errors.ts';
import { GiB, MiB, openRegularFile } from '../util/fileio.ts';
import { Progress } from '../util/progress.ts';
import { jsonErrorText } from '../formats/config.ts';

export interface Corpus {
  /** Where it came from: a file path, or `builtin:default`. */
  source: string;
  documents: string[];
  /** sha256 of the raw bytes (file) or of the generated text (built-in). */
  hash: string;
}

/** What tokenizeCorpus needs from a tokenizer (src/formats/tokenizer.ts provides it). */
export interface CorpusTokenizer {
  encode(text: string, opts?: { addBos?: boolean }): number[];
  bosId: number | null;
}

export interface TokenizedCorpus {
  sequences: Int32Array[];
  seqLen: number;
  /** Total tokens over all sequences. */
  tokenCount: number;
  /** Documents skipped for being shorter than seqLen. */
  dropped: number;
  /** Content hash of the token ids (covers corpus, tokenizer, seq-len and max-seqs). */
  hash: string;
}

export function sha256Hex(data: string | Uint8Array): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** Hash of a list of token sequences: lengths and ids, little-endian int32. */
export function hashSequences(sequences: Int32Array[]): string {
  const h = crypto.createHash('sha256');
  const len = new Int32Array(1);
  for (const s of sequences) {
    len[0] = s.length;
    h.update(new Uint8Array(len.buffer));
    h.update(new Uint8Array(s.buffer, s.byteOffset, s.byteLength));
  }
  return h.digest('hex');
}

/** Corpus files above this are refused up front (a calibration or evaluation corpus is megabytes, not gigabytes). */
export const MAX_CORPUS_BYTES = GiB;
/** A `.json` corpus (one JSON array) is parsed whole, so it is held whole: a lower limit. */
export const MAX_JSON_CORPUS_CHARS = 256 * MiB;
/** Longest line read whole; a longer JSONL record is refused, a longer plain-text line is cut here. */
export const MAX_LINE_CHARS = 64 * MiB;
/**
 * Characters of one document kept. Only a document's first `--seq-len`/`--context` tokens are ever
 * used (see encodePrefix), a few characters each; a 500 MB one-line "document" is cut here instead
 * of filling memory.
 */
export const MAX_DOC_CHARS = 16 * MiB;
/** Corpus files at least this big show a progress line while they are read. */
export const PROGRESS_MIN_BYTES = 64 * MiB;
const READ_CHUNK_BYTES = 4 * MiB;

/**
 * Documents from corpus text pushed in pieces (a file read in chunks), so no whole-file string is
 * ever built. Formats, told apart as before:
 * - JSONL (the name ends in .jsonl, or the first non-blank line is a JSON object): one object with
 *   a string `text` per line; errors name the line.
 * - a `.json` file holding one JSON array of such objects (the Hugging Face `datasets` export).
 * - plain text: documents separated by blank lines (lines of only spaces/tabs), trimmed.
 */
class CorpusParser {
  readonly docs: string[] = [];
  private mode: 'unknown' | 'jsonl' | 'plain' | 'json';
  private pending = '';
  private pendingCut = false;
  private lineNo = 0;
  private block: string[] = [];
  private blockChars = 0;
  private jsonParts: string[] = [];
  private jsonChars = 0;

  constructor(private readonly source: string) {
    this.mode = source.endsWith('.jsonl') ? 'jsonl' : source.endsWith('.json') ? 'json' : 'unknown';
  }

  push(text: string): void {
    if (this.mode === 'json') {
      this.jsonChars += text.length;
      if (this.jsonChars > MAX_JSON_CORPUS_CHARS) {
        fail(this.source, `a .json corpus is read whole, and this one is over ${MAX_JSON_CORPUS_CHARS / MiB}M characters; write it as JSONL (one {"text": …} per line) instead`);
      }
      this.jsonParts.push(text);
      return;
    }
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      this.appendPending(nl < 0 ? text.slice(start) : text.slice(start, nl));
      if (nl < 0) return;
      this.endLine();
      start = nl + 1;
    }
  }

  end(): string[] {
    if (this.mode === 'json') this.parseJsonText(this.jsonParts.join(''));
    else {
      this.endLine();
      this.endBlock();
    }
    if (this.docs.length === 0) fail(this.source, 'corpus is empty (no documents with text)');
    return this.docs;
  }

  private appendPending(s: string): void {
    if (this.pendingCut) return;
    if (this.pending.length + s.length > MAX_LINE_CHARS) {
      this.pending += s.slice(0, MAX_LINE_CHARS - this.pending.length);
      this.pendingCut = true;
    } else this.pending += s;
  }

  private endLine(): void {
    const line = this.pending;
    const cut = this.pendingCut;
    this.pending = '';
    this.pendingCut = false;
    this.lineNo++;
    if (this.mode === 'unknown') {
      if (line.trim().length === 0) return; // blank lines before the first text mean nothing in either format
      this.mode = line.trimStart().startsWith('{') ? 'jsonl' : 'plain';
    }
    if (this.mode === 'jsonl') this.jsonlLine(line, cut);
    else this.plainLine(line);
  }

  private jsonlLine(raw: string, cut: boolean): void {
    const n = this.lineNo;
    if (cut) fail(this.source, `line ${n}: a record of more than ${MAX_LINE_CHARS / MiB}M characters (split the document)`);
    const line = raw.trim();
    if (line.length === 0) return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      // (one line: V8 quotes the offending text, control characters and all)
      fail(this.source, `line ${n}: invalid JSON (${jsonErrorText(e)})`);
    }
    this.record(obj, `line ${n}`);
  }

  private record(obj: unknown, where: string): void {
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) fail(this.source, `${where}: expected a JSON object with a "text" field`);
    const t = (obj as Record<string, unknown>).text;
    if (t === undefined) fail(this.source, `${where}: missing string field "text"`);
    if (typeof t !== 'string') fail(this.source, `${where}: field "text" must be a string, got ${t === null ? 'null' : Array.isArray(t) ? 'an array' : typeof t}`);
    if (t.trim().length > 0) this.docs.push(t.length > MAX_DOC_CHARS ? t.slice(0, MAX_DOC_CHARS) : t);
  }

  /** Plain text: CRLF and lone CR are newlines; a line of only spaces/tabs ends a document. */
  private plainLine(raw: string): void {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    for (const sub of line.includes('\r') ? line.split('\r') : [line]) {
      if (/^[ \t]*$/.test(sub)) {
        this.endBlock();
        continue;
      }
      if (this.blockChars >= MAX_DOC_CHARS) continue;
      const kept = sub.length + this.blockChars > MAX_DOC_CHARS ? sub.slice(0, MAX_DOC_CHARS - this.blockChars) : sub;
      this.block.push(kept);
      this.blockChars += kept.length + 1;
    }
  }

  private endBlock(): void {
    if (this.block.length === 0) return;
    const d = this.block.join('\n').trim();
    this.block = [];
    this.blockChars = 0;
    if (d.length > 0) this.docs.push(d);
  }

  private parseJsonText(text: string): void {
    const body = text.trimStart();
    if (body.startsWith('{')) {
      // One object per line in a .json file: read as JSONL, as before.
      this.mode = 'jsonl';
      this.push(text);
      this.endLine();
      return;
    }
    if (!body.startsWith('[')) fail(this.source, 'a .json corpus must be a JSON array of {"text": …} objects (or use .jsonl: one object per line, or .txt)');
    let arr: unknown;
    try {
      arr = JSON.parse(body);
    } catch (e) {
      fail(this.source, `invalid JSON (${jsonErrorText(e)})`);
    }
    if (!Array.isArray(arr)) fail(this.source, 'a .json corpus must be a JSON array of {"text": …} objects');
    arr.forEach((x, i) => this.record(x, `element ${i}`));
  }
}

/** Parse corpus text (see CorpusParser for the formats). */
export function parseCorpus(text: string, source: string): string[] {
  return parseCorpusChunks([text], source);
}

/** Parse corpus text given in pieces (as readCorpus reads a file); the same documents as parseCorpus of the whole. */
export function parseCorpusChunks(chunks: Iterable<string>, source: string): string[] {
  const parser = new CorpusParser(source);
  for (const c of chunks) parser.push(c);
  return parser.end();
}

/**
 * Read a corpus file in chunks: checked to be a regular file of a sane size first (a FIFO is
 * refused, never waited on), hashed and decoded as it streams, documents cut to MAX_DOC_CHARS,
 * with a progress line for big files.
 */
export function readCorpus(file: string): Corpus {
  try {
    if (fs.statSync(file).isDirectory()) fail(file, 'is a directory, expected a corpus file');
  } catch (e) {
    if (e instanceof SynaximError) throw e; // (anything else is reported by the open below)
  }
  const { fd, size } = openRegularFile(file, { maxBytes: MAX_CORPUS_BYTES, what: 'a corpus', missing: 'corpus file not found', expected: 'corpus file' });
  const hash = crypto.createHash('sha256');
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const parser = new CorpusParser(file);
  const bar = size >= PROGRESS_MIN_BYTES ? new Progress({ label: `reading ${path.basename(file)} (MiB)`, total: Math.ceil(size / MiB) }) : null;
  const buf = Buffer.alloc(Math.min(READ_CHUNK_BYTES, Math.max(1, size)));
  const decode = (bytes?: Uint8Array) => {
    try {
      return bytes ? decoder.decode(bytes, { stream: true }) : decoder.decode();
    } catch {
      return fail(file, 'corpus is not valid UTF-8 text');
    }
  };
  try {
    // At most the size the stat promised: a file that grows while it is read cannot make us read on.
    for (let pos = 0; pos < size; ) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, size - pos), pos);
      if (n === 0) break;
      const bytes = buf.subarray(0, n);
      hash.update(bytes);
      parser.push(decode(bytes));
      bar?.tick(Math.floor((pos + n) / MiB) - Math.floor(pos / MiB));
      pos += n;
    }
    parser.push(decode());
  } finally {
    fs.closeSync(fd);
    bar?.finish();
  }
  return { source: file, documents: parser.end(), hash: hash.digest('hex') };
}

/**
 * The first prefix encodePrefix tries: this many characters per needed token (English runs 2–5),
 * and at least PREFIX_MIN_CHARS. Documents no longer than that are tokenized whole, as before.
 */
const PREFIX_CHARS_PER_TOKEN = 8;
const PREFIX_MIN_CHARS = 1024;
/** Tokens a prefix must yield beyond those kept, so the cut cannot change the kept ones. */
const PREFIX_MARGIN_TOKENS = 16;

/**
 * The first `maxTokens` ids of `tokenizer.encode(doc)` (all of them when the document has fewer),
 * without tokenizing more of a long document than that needs. Only a window's worth of tokens of a
 * document is ever used, and tokenization time grows faster than linearly with the length of
 * text without pre-tokenizer splits (SentencePiece-style BPE: 64 Ki characters 0.7 s, 128 Ki 2.7 s
 * with the stories260k tokenizer), so a 5 MB document never finished. A long document is
 * tokenized by prefixes instead: 8 characters per needed token first, grown 4× until the prefix
 * yields `maxTokens` + a margin, or is the whole document. The prefix is cut just before a
 * whitespace character (where pre-tokenizers split and SentencePiece starts a word), and the
 * margin tokens before the cut are dropped, so the ids kept are those of the whole document.
 */
export function encodePrefix(tokenizer: CorpusTokenizer, doc: string, maxTokens: number, firstChars?: number): number[] {
  if (!Number.isFinite(maxTokens)) return tokenizer.encode(doc, { addBos: false });
  // (firstChars: tests start small, to exercise the cut and the growth on short documents)
  let chars = firstChars ?? Math.max(PREFIX_MIN_CHARS, PREFIX_CHARS_PER_TOKEN * (maxTokens + PREFIX_MARGIN_TOKENS));
  for (;;) {
    if (chars >= doc.length) return tokenizer.encode(doc, { addBos: false });
    const ids = tokenizer.encode(doc.slice(0, prefixCut(doc, chars)), { addBos: false });
    if (ids.length >= maxTokens + PREFIX_MARGIN_TOKENS) return ids.slice(0, maxTokens);
    chars *= 4;
  }
}

/** Where to cut `doc` near `chars`: before the last whitespace in its second half, else not inside a surrogate pair. */
export function prefixCut(doc: string, chars: number): number {
  for (let i = chars; i > chars / 2; i--) {
    const c = doc.charCodeAt(i);
    if (c === 32 || c === 10 || c === 9 || c === 13) return i;
  }
  const c = doc.charCodeAt(chars);
  return c >= 0xdc00 && c <= 0xdfff ? chars - 1 : chars;
}

/**
 * Tokenize documents into fixed-length sequences: BOS (when addBos) + tokens, cut to seqLen;
 * documents with fewer than seqLen tokens are dropped; at most maxSeqs sequences, in corpus order.
 */
export function tokenizeCorpus(
  docs: string[],
  tokenizer: CorpusTokenizer,
  opts: { seqLen: number; maxSeqs?: number | null; addBos?: boolean; source?: string },
): TokenizedCorpus {
  const { seqLen } = opts;
  const addBos = opts.addBos ?? true;
  const source = opts.source ?? 'corpus';
  if (!Number.isInteger(seqLen) || seqLen < 2) fail(null, `--seq-len must be an integer ≥ 2, got ${seqLen}`);
  if (opts.maxSeqs != null && (!Number.isInteger(opts.maxSeqs) || opts.maxSeqs < 1)) fail(null, `--max-seqs must be a positive integer, got ${opts.maxSeqs}`);
  if (addBos && tokenizer.bosId === null) fail(source, 'the tokenizer has no BOS token; cannot prepend one');
  const sequences: Int32Array[] = [];
  let dropped = 0;
  for (const doc of docs) {
    if (opts.maxSeqs != null && sequences.length >= opts.maxSeqs) break;
    // Only the first seqLen tokens are used: a long document is tokenized by prefix (same ids).
    const ids = encodePrefix(tokenizer, doc, seqLen - (addBos ? 1 : 0));
    const withBos = addBos ? [tokenizer.bosId!, ...ids] : ids;
    if (withBos.length < seqLen) {
      dropped++;
      continue;
    }
    sequences.push(Int32Array.from(withBos.slice(0, seqLen)));
  }
  if (sequences.length === 0) {
    fail(source, `no document has at least ${seqLen} tokens (${dropped} too short); lower --seq-len or use longer documents`);
  }
  return { sequences, seqLen, tokenCount: sequences.length * seqLen, dropped, hash: hashSequences(sequences) };
}

/** Every id must be in the vocabulary and every sequence must fit the model's context. */
export function checkSequences(seqs: Int32Array[], vocabSize: number, maxPositions: number, source: string): void {
  seqs.forEach((s, i) => {
    if (s.length > maxPositions) fail(source, `sequence ${i} has ${s.length} tokens, more than the model's context (${maxPositions}); lower --seq-len`);
    for (const id of s) if (id < 0 || id >= vocabSize) fail(source, `sequence ${i} holds token id ${id}, outside the model's vocabulary (0..${vocabSize - 1}); wrong tokenizer for this model?`);
  });
}


/**
 * Deterministic held-out split: a seeded choice of round(n·fraction) items (at least one when
 * n ≥ 2, never all); both parts keep corpus order.
 */
export function splitHeldOut<T>(items: T[], opts: { fraction?: number; seed?: number } = {}): { train: T[]; heldOut: T[] } {
  const fraction = opts.fraction ?? 0.1;
  if (!(fraction >= 0 && fraction < 1)) fail(null, `held-out fraction must be in [0, 1), got ${fraction}`);
  const n = items.length;
  let k = Math.round(n * fraction);
  if (fraction > 0 && n >= 2) k = Math.min(n - 1, Math.max(1, k));
  if (n < 2) k = 0;
  const chosen = new Set(seededPermutation(n, (opts.seed ?? 0) ^ 0x5eed).slice(0, k));
  const train: T[] = [];
  const heldOut: T[] = [];
  items.forEach((it, i) => (chosen.has(i) ? heldOut : train).push(it));
  return { train, heldOut };
}

// --- The built-in default corpus -----------------------------------------------------------------
// Short, simple stories generated from a small grammar with a fixed seed, so the text is ours, the
// same on every machine, and in the plain-English register small models are trained on.

const NAMES = ['Mia', 'Tom', 'Ada', 'Leo', 'Nora', 'Sam', 'Ivy', 'Ben', 'Zoe', 'Max', 'Lucy', 'Finn'];
const ANIMALS = ['cat', 'dog', 'bird', 'fox', 'rabbit', 'frog', 'duck', 'bear', 'owl', 'mouse'];
const PLACES = ['park', 'garden', 'forest', 'beach', 'kitchen', 'market', 'river', 'hill', 'school', 'library'];
const THINGS = ['ball', 'kite', 'box', 'book', 'hat', 'boat', 'cake', 'drum', 'map', 'lamp', 'key', 'shell'];
const COLORS = ['red', 'blue', 'green', 'yellow', 'small', 'big', 'shiny', 'old', 'soft', 'funny'];
const FEELINGS = ['happy', 'sad', 'curious', 'brave', 'tired', 'proud', 'surprised', 'calm'];
const VERBS = ['found', 'lost', 'made', 'painted', 'carried', 'shared', 'hid', 'fixed'];
const TIMES = ['One day', 'In the morning', 'After lunch', 'Later', 'That evening', 'On a rainy day'];
const ENDINGS = [
  'From that day on, they were good friends.',
  'They laughed and went home together.',
  'It was the best day of the year.',
  'Then everyone sat down and had some tea.',
  'And the little {animal} was never lonely again.',
];

function fill(template: string, pick: <T>(xs: T[]) => T, who: string, friend: string, animal: string): string {
  return template
    .replaceAll('{who}', who)
    .replaceAll('{friend}', friend)
    .replaceAll('{animal}', animal)
    .replaceAll('{place}', pick(PLACES))
    .replaceAll('{thing}', pick(THINGS))
    .replaceAll('{color}', pick(COLORS))
    .replaceAll('{feeling}', pick(FEELINGS))
    .replaceAll('{verb}', pick(VERBS))
    .replaceAll('{time}', pick(TIMES));
}

const SENTENCES = [
  '{time}, {who} went to the {place} with a {color} {thing}.',
  '{who} saw a {animal} near the {place}.',
  'The {animal} looked {feeling} and asked, "Can I play too?"',
  '{who} {verb} a {color} {thing} under a tree.',
  '{friend} said, "Look, a {color} {thing}! Let us take it to the {place}."',
  '{who} felt {feeling}, so {who} sang a little song.',
  'They walked to the {place} and counted {n} {thing}s.',
  'The {animal} ran around the {place} and found a {color} {thing}.',
  '"I am {feeling} today," said {friend}.',
  '{who} and {friend} {verb} the {thing} together.',
  'The sun was warm, and the {place} was quiet.',
  'A {color} {animal} jumped over the {thing}.',
];

/** The default calibration corpus: `count` generated stories (deterministic for a seed). */
export function defaultCorpus(count = 240, seed = 20240601): Corpus {
  const rand = mulberry32(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const docs: string[] = [];
  for (let d = 0; d < count; d++) {
    const who = pick(NAMES);
    let friend = pick(NAMES);
    if (friend === who) friend = NAMES[(NAMES.indexOf(who) + 1) % NAMES.length]!;
    const animal = pick(ANIMALS);
    const sentences = [`Once upon a time, there was a ${pick(FEELINGS)} child named ${who}.`];
    const n = 7 + Math.floor(rand() * 6);
    for (let i = 0; i < n; i++) {
      sentences.push(fill(pick(SENTENCES), pick, who, friend, animal).replaceAll('{n}', String(2 + Math.floor(rand() * 8))));
    }
    sentences.push(fill(pick(ENDINGS), pick, who, friend, animal));
    docs.push(sentences.join(' '));
  }
  return { source: 'builtin:default', documents: docs, hash: sha256Hex(docs.join('\n\n')) };
}
