/** Corpora: parsing, errors with line numbers, tokenization into sequences, hashes, held-out split, the built-in corpus. */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkSequences,
  defaultCorpus,
  encodePrefix,
  hashSequences,
  MAX_DOC_CHARS,
  parseCorpus,
  parseCorpusChunks,
  readCorpus,
  splitHeldOut,
  tokenizeCorpus,
  type CorpusTokenizer,
} from '../src/data/corpus.ts';
import { SynaximError } from '../src/util/errors.ts';
import { mulberry32, seededPermutation } from '../src/util/random.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { loadTokenizer } from '../src/formats/tokenizer.ts';
import { buildWindows, docTokensNeeded } from '../src/data/suite.ts';

if (!sharedAvailable()) console.warn(`corpus.test: the stories260k tokenizer check skipped: ${SHARED_DIR}/fixtures not found`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-corpus-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A word-level stand-in: one id per whitespace-separated word (its length + 10). */
const wordTokenizer: CorpusTokenizer = {
  bosId: 1,
  encode: (text) => text.split(/\s+/).filter(Boolean).map((w) => 10 + w.length),
};

function errorOf(fn: () => unknown): SynaximError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SynaximError);
    expect((e as Error).message.includes('\n')).toBe(false);
    return e as SynaximError;
  }
  throw new Error('expected an error');
}

describe('parseCorpus / readCorpus', () => {
  it('reads JSONL text fields, skipping blank lines', () => {
    const docs = parseCorpus('{"text": "a b"}\n\n{"text": "c", "id": 3}\n', 'x.jsonl');
    expect(docs).toEqual(['a b', 'c']);
  });

  it('names the line of a bad JSONL record', () => {
    expect(errorOf(() => parseCorpus('{"text": "ok"}\n{"text": "ok"}\n{"text": oops}\n', 'c.jsonl')).message).toMatch(/^c\.jsonl: line 3: invalid JSON/);
    expect(errorOf(() => parseCorpus('{"text": "ok"}\n{"body": "x"}\n', 'c.jsonl')).message).toMatch(/^c\.jsonl: line 2: missing string field "text"/);
    expect(errorOf(() => parseCorpus('{"text": "ok"}\n[1, 2]\n', 'c.jsonl')).message).toMatch(/line 2: expected a JSON object/);
  });

  it('splits plain text into documents at blank lines', () => {
    expect(parseCorpus('one\ntwo\n\n  \nthree\r\n\r\nfour\n', 'c.txt')).toEqual(['one\ntwo', 'three', 'four']);
  });

  it('rejects an empty corpus', () => {
    expect(errorOf(() => parseCorpus('\n \n', 'e.txt')).message).toMatch(/^e\.txt: corpus is empty/);
    expect(errorOf(() => parseCorpus('{"text": ""}\n', 'e.jsonl')).message).toMatch(/empty/);
  });

  it('hashes the file bytes and reports missing files in one line', () => {
    const f = path.join(tmp, 'c.jsonl');
    fs.writeFileSync(f, '{"text": "hello world"}\n');
    const a = readCorpus(f);
    fs.writeFileSync(f, '{"text": "hello world!"}\n');
    const b = readCorpus(f);
    expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(a.hash).not.toBe(b.hash);
    expect(errorOf(() => readCorpus(path.join(tmp, 'nope.jsonl'))).message).toMatch(/nope\.jsonl: corpus file not found/);
    fs.writeFileSync(f, Buffer.from([0xff, 0xfe, 0x00]));
    expect(errorOf(() => readCorpus(f)).message).toMatch(/not valid UTF-8/);
  });
});

describe('tokenizeCorpus', () => {
  const docs = ['a bb ccc dddd', 'x', 'p q r s t u v'];

  it('makes one BOS-prefixed sequence per long-enough document, cut to seqLen', () => {
    const t = tokenizeCorpus(docs, wordTokenizer, { seqLen: 4 });
    expect(t.sequences.map((s) => Array.from(s))).toEqual([
      [1, 11, 12, 13],
      [1, 11, 11, 11],
    ]);
    expect(t.dropped).toBe(1);
    expect(t.tokenCount).toBe(8);
  });

  it('honours maxSeqs and addBos', () => {
    const t = tokenizeCorpus(docs, wordTokenizer, { seqLen: 3, maxSeqs: 1, addBos: false });
    expect(t.sequences.map((s) => Array.from(s))).toEqual([[11, 12, 13]]);
  });

  it('hashes the token ids: same ids same hash, any change a different one', () => {
    const a = tokenizeCorpus(docs, wordTokenizer, { seqLen: 4 });
    const b = tokenizeCorpus(docs, wordTokenizer, { seqLen: 4 });
    const c = tokenizeCorpus(docs, wordTokenizer, { seqLen: 3 });
    expect(a.hash).toBe(b.hash);
    expect(a.hash).not.toBe(c.hash);
    expect(hashSequences([Int32Array.of(1, 2), Int32Array.of(3)])).not.toBe(hashSequences([Int32Array.of(1), Int32Array.of(2, 3)]));
  });

  it('says so when no document is long enough', () => {
    expect(errorOf(() => tokenizeCorpus(['a b'], wordTokenizer, { seqLen: 64, source: 'tiny.txt' })).message).toMatch(/^tiny\.txt: no document has at least 64 tokens/);
  });

  it('checks ids against the vocabulary and the context', () => {
    expect(errorOf(() => checkSequences([Int32Array.of(1, 600)], 512, 64, 'c.jsonl')).message).toMatch(/token id 600, outside the model's vocabulary/);
    expect(errorOf(() => checkSequences([new Int32Array(65)], 512, 64, 'c.jsonl')).message).toMatch(/more than the model's context \(64\)/);
    checkSequences([Int32Array.of(0, 511)], 512, 64, 'ok');
  });
});

describe('splitHeldOut', () => {
  const items = Array.from({ length: 50 }, (_, i) => i);
  it('is deterministic, disjoint, complete and keeps order', () => {
    const a = splitHeldOut(items, { fraction: 0.1, seed: 3 });
    const b = splitHeldOut(items, { fraction: 0.1, seed: 3 });
    expect(a).toEqual(b);
    expect(a.heldOut.length).toBe(5);
    expect([...a.train, ...a.heldOut].sort((x, y) => x - y)).toEqual(items);
    expect(a.train).toEqual([...a.train].sort((x, y) => x - y));
    expect(splitHeldOut(items, { fraction: 0.1, seed: 4 }).heldOut).not.toEqual(a.heldOut);
  });
  it('holds out at least one item and never all', () => {
    expect(splitHeldOut([1, 2], { fraction: 0.01 }).heldOut.length).toBe(1);
    expect(splitHeldOut([1, 2, 3], { fraction: 0.99 }).train.length).toBe(1);
    expect(splitHeldOut([1], { fraction: 0.5 }).heldOut.length).toBe(0);
  });
  it('uses a real permutation', () => {
    const p = seededPermutation(100, 7);
    expect([...p].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(p).not.toEqual(Array.from({ length: 100 }, (_, i) => i));
  });
});

describe('the built-in default corpus', () => {
  it('is generated deterministically', () => {
    const a = defaultCorpus();
    const b = defaultCorpus();
    expect(a.documents).toEqual(b.documents);
    expect(a.hash).toBe(b.hash);
    expect(a.documents.length).toBe(240);
    expect(new Set(a.documents).size).toBe(240);
    expect(a.documents.every((d) => d.startsWith('Once upon a time') && !d.includes('{'))).toBe(true);
  });

  it.skipIf(!sharedAvailable())('gives ≥ 200 sequences of 64 tokens with the stories260k tokenizer', async () => {
    const tok = await loadTokenizer(path.join(SHARED_DIR, 'models', 'stories260k', 'hf'));
    const t = tokenizeCorpus(defaultCorpus().documents, tok, { seqLen: 64 });
    expect(t.sequences.length).toBeGreaterThanOrEqual(200);
    expect(t.sequences.every((s) => s[0] === 1 && s.length === 64)).toBe(true);
  });
});

// ---- Hostile corpora (issue 14 §3): streamed reading, JSON arrays, long documents -------------

/** The reader before streaming: whole text, regex split (the reference the streamed parser must match). */
function referenceParse(text: string, source: string): string[] {
  const firstLine = text.split('\n').find((l) => l.trim().length > 0) ?? '';
  const docs: string[] = [];
  if (source.endsWith('.jsonl') || firstLine.trimStart().startsWith('{')) {
    for (const line of text.split('\n')) if (line.trim()) {
      const t = (JSON.parse(line.trim()) as { text: string }).text;
      if (t.trim().length > 0) docs.push(t);
    }
  } else {
    for (const block of text.replace(/\r\n?/g, '\n').split(/\n[ \t]*\n/)) if (block.trim()) docs.push(block.trim());
  }
  return docs;
}

describe('streamed corpus parsing', () => {
  it('gives the documents of the whole-text reference for random texts cut into random chunks', () => {
    const rand = mulberry32(7);
    const pieces = ['word', 'two words', ' ', '\t', '\n', '\n', '\r\n', '\r', '\n \n', '\n\t\n', '\u00e9t\u00e9', '\ud83d\ude00', '  x  '];
    for (let trial = 0; trial < 400; trial++) {
      let text = '';
      const n = Math.floor(rand() * 40);
      for (let i = 0; i < n; i++) text += pieces[Math.floor(rand() * pieces.length)]!;
      if (!text.trim()) continue;
      const cuts = [0, ...Array.from({ length: 4 }, () => Math.floor(rand() * text.length)).sort((a, b) => a - b), text.length];
      const chunks = cuts.slice(1).map((c, i) => text.slice(cuts[i], c));
      expect(parseCorpusChunks(chunks, 'c.txt'), JSON.stringify(text)).toEqual(referenceParse(text, 'c.txt'));
    }
    const jsonl = ['{"text": "a b"}', '', '  {"text": "c\\nd"}  ', '{"text": " "}', '{"text": "e"}\r'].join('\n');
    for (let cut = 0; cut <= jsonl.length; cut++) {
      expect(parseCorpusChunks([jsonl.slice(0, cut), jsonl.slice(cut)], 'c.jsonl')).toEqual(referenceParse(jsonl, 'c.jsonl'));
    }
  });

  it('reads a file bigger than one read chunk as the whole-text reference does, with the same hash', () => {
    const f = path.join(tmp, 'big.jsonl');
    const lines = Array.from({ length: 60_000 }, (_, i) => JSON.stringify({ text: `document ${i} ${'é'.repeat(i % 50)} ${'x'.repeat(i % 97)}` }));
    const text = lines.join('\n') + '\n';
    fs.writeFileSync(f, text);
    expect(fs.statSync(f).size).toBeGreaterThan(4 * 1024 * 1024);
    const c = readCorpus(f);
    expect(c.documents).toEqual(referenceParse(text, f));
    expect(c.hash).toBe(crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex'));
  });

  it('reads a .json array of {"text"} records as documents, and names the element that is wrong', () => {
    expect(parseCorpus('[{"text": "one"}, {"text": "two", "id": 2}, {"text": "  "}]', 'c.json')).toEqual(['one', 'two']);
    expect(parseCorpus('\n  [\n {"text": "x"}\n]\n', 'c.json')).toEqual(['x']);
    expect(errorOf(() => parseCorpus('[{"text": "one"}, {"body": "two"}]', 'c.json')).message).toBe('c.json: element 1: missing string field "text"');
    expect(errorOf(() => parseCorpus('[{"text": "one"}, "two"]', 'c.json')).message).toMatch(/^c\.json: element 1: expected a JSON object/);
    expect(errorOf(() => parseCorpus('[{"text": "one"},', 'c.json')).message).toMatch(/^c\.json: invalid JSON/);
    expect(errorOf(() => parseCorpus('just text', 'c.json')).message).toMatch(/^c\.json: a \.json corpus must be a JSON array/);
    // One object per line in a .json file is JSONL, as before.
    expect(parseCorpus('{"text": "a"}\n{"text": "b"}\n', 'c.json')).toEqual(['a', 'b']);
  });

  it('cuts a document longer than MAX_DOC_CHARS instead of holding it whole', () => {
    const long = 'ab '.repeat(MAX_DOC_CHARS / 2);
    const docs = parseCorpusChunks([long.slice(0, 1000), long.slice(1000), '\n\nshort'], 'c.txt');
    expect(docs.map((d) => d.length)).toEqual([MAX_DOC_CHARS, 5]);
  });
});

describe('encodePrefix: a long document is tokenized only as far as its windows need, to the same ids', () => {
  it('matches the whole-document ids (word tokenizer), from any first prefix, and never encodes the whole of a long document', () => {
    const rand = mulberry32(3);
    const words = ['a', 'bb', 'ccc', 'dddd', 'eeeee'];
    let longest = 0;
    const tok: CorpusTokenizer = { bosId: 1, encode: (t) => ((longest = Math.max(longest, t.length)), wordTokenizer.encode(t)) };
    for (let trial = 0; trial < 200; trial++) {
      const doc = Array.from({ length: 1 + Math.floor(rand() * 300) }, () => words[Math.floor(rand() * 5)]).join(rand() < 0.5 ? ' ' : '  \n');
      const need = 1 + Math.floor(rand() * 80);
      const first = [undefined, 3, 16, 100][trial % 4];
      expect(encodePrefix(tok, doc, need, first).slice(0, need)).toEqual(wordTokenizer.encode(doc).slice(0, need));
    }
    longest = 0;
    const huge = 'word '.repeat(2_000_000);
    expect(encodePrefix(tok, huge, 64)).toEqual(Array(64).fill(14));
    expect(longest).toBeLessThan(10_000);
  });

  it('tokenizeCorpus gives the same sequences as the whole-document path', () => {
    const rand = mulberry32(11);
    const docs = Array.from({ length: 50 }, () => Array.from({ length: Math.floor(rand() * 3000) }, () => 'xyz'.slice(0, 1 + Math.floor(rand() * 3))).join(' '));
    for (const seqLen of [2, 8, 64, 700]) {
      const got = tokenizeCorpus(docs, wordTokenizer, { seqLen });
      const ref = docs.map((d) => [1, ...wordTokenizer.encode(d)]).filter((s) => s.length >= seqLen).map((s) => Int32Array.from(s.slice(0, seqLen)));
      expect(got.sequences).toEqual(ref);
      expect(got.hash).toBe(hashSequences(ref));
    }
  });

  it('matches the whole-document ids with the stories260k tokenizer (its eval corpus, and all of it as one document)', async (ctx) => {
    if (!sharedAvailable()) {
      console.warn(`corpus.test: stories260k encodePrefix check skipped: ${SHARED_DIR} not found`);
      ctx.skip();
      return;
    }
    const root = path.join(SHARED_DIR, 'models', 'stories260k');
    const tok = await loadTokenizer(path.join(root, 'hf'));
    const docs = readCorpus(path.join(root, 'corpus', 'eval.jsonl')).documents.slice(0, 100);
    for (const [i, doc] of docs.entries()) {
      const whole = tok.encode(doc, { addBos: false });
      for (const need of [1, 31, 200]) {
        for (const first of [8, 200, undefined]) {
          expect(encodePrefix(tok, doc, need, first).slice(0, need), `doc ${i} need ${need} first ${first}`).toEqual(whole.slice(0, need));
        }
      }
    }
    const joined = docs.slice(0, 40).join('\n\n');
    const whole = tok.encode(joined, { addBos: false });
    for (const need of [64, 256, 1024, 4096]) expect(encodePrefix(tok, joined, need).slice(0, need)).toEqual(whole.slice(0, need));
    // and the distillation's sequences, as before
    for (const seqLen of [16, 256]) {
      const t = tokenizeCorpus(docs, tok, { seqLen });
      const ref = docs.map((d) => [1, ...tok.encode(d, { addBos: false })]).filter((s) => s.length >= seqLen).map((s) => Int32Array.from(s.slice(0, seqLen)));
      expect(t.hash).toBe(hashSequences(ref));
    }
  });

  it('eval windows built from documents cut at docTokensNeeded are the windows of the whole documents', () => {
    const rand = mulberry32(5);
    for (let trial = 0; trial < 300; trial++) {
      const docs = Array.from({ length: 1 + Math.floor(rand() * 4) }, () => Array.from({ length: Math.floor(rand() * 120) }, () => 3 + Math.floor(rand() * 50)));
      const context = 2 + Math.floor(rand() * 20);
      const stride = rand() < 0.3 ? null : 1 + Math.floor(rand() * (context - 1));
      const maxSeqs = rand() < 0.4 ? null : 1 + Math.floor(rand() * 6);
      const tokenBudget = rand() < 0.5 ? null : 1 + Math.floor(rand() * 60);
      const bos = rand() < 0.8 ? 1 : null;
      const s = { context, stride, maxSeqs, tokenBudget };
      const need = docTokensNeeded(s);
      const opts = { bos, ...s };
      const cut = docs.map((d) => d.slice(0, need));
      expect(buildWindows(cut, opts), JSON.stringify({ s, bos })).toEqual(buildWindows(docs, opts));
    }
  });
});
