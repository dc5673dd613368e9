/**
 * Calibration corpora: reading (JSONL with a `text` field, or plain text split into documents at
 * blank lines), a built-in default corpus the project writes itself, tokenization into training
 * sequences, content hashes (cache keys and provenance), and a deterministic held-out split.
 *
 * Each document becomes at most one sequence: BOS + its tokens, cut to `seqLen`. Documents shorter
 * than that are dropped, so every sequence has exactly `seqLen` tokens and a step sees a fixed
 * number of tokens (the SYNAXIM scripts train on fixed-length windows as well).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { fail } from './errors.ts';
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

/** Parse corpus text. JSONL when the name ends in .jsonl or the first non-blank line is a JSON object. */
export function parseCorpus(text: string, source: string): string[] {
  const firstLine = text.split('\n').find((l) => l.trim().length > 0) ?? '';
  const jsonl = source.endsWith('.jsonl') || firstLine.trimStart().startsWith('{');
  const docs: string[] = [];
  if (jsonl) {
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line.length === 0) continue;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch (e) {
        // (one line: V8 quotes the offending text, control characters and all)
        fail(source, `line ${i + 1}: invalid JSON (${jsonErrorText(e)})`);
      }
      if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) fail(source, `line ${i + 1}: expected a JSON object with a "text" field`);
      const t = (obj as Record<string, unknown>).text;
      if (t === undefined) fail(source, `line ${i + 1}: missing string field "text"`);
      if (typeof t !== 'string') fail(source, `line ${i + 1}: field "text" must be a string, got ${t === null ? 'null' : Array.isArray(t) ? 'an array' : typeof t}`);
      if (t.trim().length > 0) docs.push(t);
    }
  } else {
    for (const block of text.replace(/\r\n?/g, '\n').split(/\n[ \t]*\n/)) {
      const d = block.trim();
      if (d.length > 0) docs.push(d);
    }
  }
  if (docs.length === 0) fail(source, 'corpus is empty (no documents with text)');
  return docs;
}

export function readCorpus(file: string): Corpus {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return fail(file, code === 'ENOENT' ? 'corpus file not found' : code === 'EISDIR' ? 'is a directory, expected a corpus file' : `cannot read (${code})`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return fail(file, 'corpus is not valid UTF-8 text');
  }
  return { source: file, documents: parseCorpus(text, file), hash: sha256Hex(bytes) };
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
    const ids = tokenizer.encode(doc, { addBos: false });
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

/** mulberry32: a tiny deterministic PRNG (uniform in [0, 1)). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher–Yates permutation of 0..n-1 from a seed. */
export function seededPermutation(n: number, seed: number): number[] {
  const rand = mulberry32(seed);
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
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
