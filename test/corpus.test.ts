/** Corpora: parsing, errors with line numbers, tokenization into sequences, hashes, held-out split, the built-in corpus. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkSequences,
  defaultCorpus,
  hashSequences,
  parseCorpus,
  readCorpus,
  seededPermutation,
  splitHeldOut,
  tokenizeCorpus,
  type CorpusTokenizer,
} from '../src/core/corpus.ts';
import { SynaximError } from '../src/core/errors.ts';
import { SHARED_DIR, sharedAvailable } from '../src/core/paths.ts';
import { loadTokenizer } from '../src/formats/tokenizer.ts';

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
