import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadTokenizer, type Tokenizer } from '../src/formats/tokenizer.ts';
import { hfTokenizerConfigFor, hfTokenizerJsonFor, pythonJsonDumps, type Llama2cConfig, type Llama2cVocab } from '../src/formats/llama2c.ts';
import { SynaximError } from '../src/util/errors.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';

const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');

function corpusTexts(): string[] {
  return ['calibration', 'eval'].flatMap((name) =>
    fs
      .readFileSync(path.join(STORIES, 'corpus', `${name}.jsonl`), 'utf8')
      .split('\n')
      .filter((l) => l.trim().length > 0)
      .map((l) => (JSON.parse(l) as { text: string }).text),
  );
}

/** Print a generation token by token, as `generate` does. */
function streamed(tok: Tokenizer, ids: number[]): string[] {
  return ids.map((id, i) => tok.decodeToken(ids.slice(0, i), id));
}

function expectOneLineError(fn: () => unknown, ...fragments: string[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SynaximError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  for (const f of fragments) expect(msg).toContain(f);
}
async function expectOneLineErrorAsync(p: Promise<unknown>, ...fragments: string[]): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SynaximError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  for (const f of fragments) expect(msg).toContain(f);
}

// A small llama2.c-style vocabulary (specials, 256 bytes, characters, BPE merges with falling
// scores) so that the tokenizer is tested without the shared fixtures too.
const SYNTH_MERGED = ['▁a', 'ab', '▁ab', 'bc', 'abc', '▁abc', 'ca', 'cab'];
const SYNTH_CHARS = ['▁', 'a', 'b', 'c', '.'];
function synthVocab(): Llama2cVocab {
  const pieces = ['<unk>', '<s>', '</s>'];
  for (let b = 0; b < 256; b++) pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  pieces.push(...SYNTH_MERGED, ...SYNTH_CHARS);
  const scores = new Float32Array(pieces.length);
  for (let i = 259; i < pieces.length; i++) scores[i] = -(i - 259);
  return { maxTokenLength: 6, pieces, scores };
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-tok-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function writeSynthDir(name: string): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const vocab = synthVocab();
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), pythonJsonDumps(hfTokenizerJsonFor(vocab)));
  const cfg = { seqLen: 64 } as Llama2cConfig;
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), pythonJsonDumps(hfTokenizerConfigFor(vocab, cfg), { indent: 2 }));
  return dir;
}

describe('tokenizer (synthetic llama2.c-style BPE)', () => {
  it('loads, adds BOS by default, merges by score and falls back to bytes', async () => {
    const tok = await loadTokenizer(writeSynthDir('synth'));
    expect(tok.bosId).toBe(1);
    expect(tok.eosIds).toEqual([2]);
    expect(tok.vocabSize).toBe(259 + SYNTH_MERGED.length + SYNTH_CHARS.length);
    expect(tok.addBosByDefault).toBe(true);
    const id = (p: string) => tok.tokenToId(p)!;
    // "abc" → "▁abc" (one token); "cab" → "▁" + "cab"; "é" has no token → its UTF-8 bytes.
    expect(tok.encode('abc')).toEqual([1, id('▁abc')]);
    expect(tok.encode('abc', { addBos: false })).toEqual([id('▁abc')]);
    expect(tok.encode('cab', { addBos: false })).toEqual([id('▁'), id('cab')]);
    expect(tok.encode('é', { addBos: false })).toEqual([id('▁'), 3 + 0xc3, 3 + 0xa9]);
    expect(tok.encode('', { addBos: false })).toEqual([]);
    expect(tok.encode('')).toEqual([1]);
    for (const text of ['abc', 'a b c', 'cab ab.', 'é😀a', '  leading and double  spaces ', 'x\ny']) {
      expect(tok.decode(tok.encode(text))).toBe(text);
      expect(streamed(tok, tok.encode(text)).join('')).toBe(text);
    }
    expect(tok.decode([1, id('▁abc')], { skipSpecial: false })).toBe('<s> abc');
    expect(tok.decode([])).toBe('');
  });

  it('streams characters split over byte tokens whole, never half', async () => {
    const tok = await loadTokenizer(writeSynthDir('synth-stream'));
    const text = 'ab 😀é c€';
    const ids = tok.encode(text);
    const pieces = streamed(tok, ids);
    expect(pieces.join('')).toBe(text);
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
    // The emoji is 4 byte tokens: nothing is printed until the 4th, which prints the whole emoji.
    const emojiAt = pieces.findIndex((p) => p.includes('😀'));
    expect(pieces.slice(emojiAt - 3, emojiAt)).toEqual(['', '', '']);
    expect(pieces[emojiAt]).toBe('😀');
  });

  it('streams random id sequences to the text decode() gives (property)', async () => {
    const tok = await loadTokenizer(writeSynthDir('synth-prop'));
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const utf8Bytes = [...Buffer.from('é€😀', 'utf8')].map((b) => b + 3);
    for (let trial = 0; trial < 300; trial++) {
      const ids: number[] = [];
      const n = 1 + rand(30);
      for (let i = 0; i < n; i++) {
        const r = rand(10);
        if (r < 4) ids.push(259 + rand(SYNTH_MERGED.length + SYNTH_CHARS.length));
        else if (r < 8) ids.push(utf8Bytes[rand(utf8Bytes.length)]!); // often-invalid byte soup
        else if (r < 9) ids.push(1 + rand(2));
        else ids.push(3 + 0x41 + rand(26));
      }
      const whole = tok.decode(ids);
      // Stray bytes at the very end are held back (they might start a character); anywhere else
      // the streamed pieces add up to exactly the decoded text.
      if (whole.endsWith('\uFFFD')) continue;
      expect(streamed(tok, ids).join('')).toBe(whole);
    }
  });

  it('honours add_bos_token false and a model-config BOS when the tokenizer names none', async () => {
    const dir = writeSynthDir('synth-nobos');
    const cfgPath = path.join(dir, 'tokenizer_config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
    fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, add_bos_token: false, bos_token: undefined }));
    const tok = await loadTokenizer(dir, { bosTokenId: 1, eosTokenIds: [2] });
    expect(tok.addBosByDefault).toBe(false);
    expect(tok.bosId).toBe(1);
    expect(tok.encode('a')[0]).not.toBe(1);
    expect(tok.encode('a', { addBos: true })[0]).toBe(1);
  });

  it('finds the tokenizer in a tokenizer/ subdirectory (.symb layout)', async () => {
    const dir = path.join(tmp, 'symb-like');
    fs.mkdirSync(dir, { recursive: true });
    fs.cpSync(writeSynthDir('synth-src'), path.join(dir, 'tokenizer'), { recursive: true });
    const tok = await loadTokenizer(dir);
    expect(tok.file).toBe(path.join(dir, 'tokenizer', 'tokenizer.json'));
    expect(tok.decode(tok.encode('cab abc'))).toBe('cab abc');
  });

  it('gives one-line errors naming the file for missing or corrupt tokenizers and bad ids', async () => {
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty, { recursive: true });
    await expectOneLineErrorAsync(loadTokenizer(empty), path.join(empty, 'tokenizer.json'), 'not found');

    const corrupt = writeSynthDir('corrupt');
    const file = path.join(corrupt, 'tokenizer.json');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').slice(0, 500));
    await expectOneLineErrorAsync(loadTokenizer(corrupt), file, 'invalid JSON');

    const noModel = writeSynthDir('no-model');
    fs.writeFileSync(path.join(noModel, 'tokenizer.json'), '{"version": "1.0"}');
    await expectOneLineErrorAsync(loadTokenizer(noModel), path.join(noModel, 'tokenizer.json'), "missing 'model'");

    const badModel = writeSynthDir('bad-model');
    fs.writeFileSync(path.join(badModel, 'tokenizer.json'), '{"model": {"type": "BPE", "vocab": 7}}');
    await expectOneLineErrorAsync(loadTokenizer(badModel), path.join(badModel, 'tokenizer.json'));

    const badCfg = writeSynthDir('bad-cfg');
    fs.writeFileSync(path.join(badCfg, 'tokenizer_config.json'), '{"bos_token": "<nope>"}');
    await expectOneLineErrorAsync(loadTokenizer(badCfg), 'tokenizer_config.json', '<nope>');

    const tok = await loadTokenizer(writeSynthDir('ids'));
    expectOneLineError(() => tok.decode([1, 9999]), '9999', 'outside the vocabulary');
    expectOneLineError(() => tok.decode([-1]), 'outside the vocabulary');
  });
});

describe('tokenizer: sizes and places checked before the tokenizer is built (issue 14 §3)', () => {
  it('refuses a vocabulary bigger than the model\'s, an added token beyond it, and non-boolean flags, naming the file', async () => {
    const dir = writeSynthDir('sizes');
    const file = path.join(dir, 'tokenizer.json');
    const j = JSON.parse(fs.readFileSync(file, 'utf8')) as { model: { vocab: Record<string, number> }; added_tokens: { id: number }[] };
    const entries = Object.keys(j.model.vocab).length;
    await expect(loadTokenizer(dir, { modelVocabSize: entries })).resolves.toBeTruthy();
    await expectOneLineErrorAsync(loadTokenizer(dir, { modelVocabSize: entries - 1 }), file, `the tokenizer has ${entries} vocabulary entries but the model's vocabulary is ${entries - 1}`);
    fs.writeFileSync(file, JSON.stringify({ ...j, added_tokens: [...j.added_tokens, { id: entries + 50, content: '<x>', special: true }] }));
    await expectOneLineErrorAsync(loadTokenizer(dir, { modelVocabSize: entries }), file, `added token id ${entries + 50} is outside the model's vocabulary`);
    const cfg = writeSynthDir('flags');
    fs.writeFileSync(path.join(cfg, 'tokenizer_config.json'), '{"add_bos_token": "false"}');
    await expectOneLineErrorAsync(loadTokenizer(cfg), path.join(cfg, 'tokenizer_config.json'), `'add_bos_token' must be true or false, got "false"`);
  });

  it('reads tokenizer files only from inside the model directory (a .symb tokenizer/ link out of it included); links inside are fine', async () => {
    const outside = writeSynthDir('outside-tok');
    const model = path.join(tmp, 'linked-model');
    fs.mkdirSync(model, { recursive: true });
    fs.writeFileSync(path.join(model, 'config.symb.json'), '{}');
    fs.symlinkSync(outside, path.join(model, 'tokenizer'));
    await expectOneLineErrorAsync(loadTokenizer(path.join(model, 'tokenizer')), path.join(model, 'tokenizer', 'tokenizer.json'), 'outside the model directory');
    await expectOneLineErrorAsync(loadTokenizer(model), path.join(model, 'tokenizer', 'tokenizer.json'), 'outside the model directory');
    const inside = writeSynthDir('inside-link');
    fs.renameSync(path.join(inside, 'tokenizer.json'), path.join(inside, 'blob'));
    fs.symlinkSync('blob', path.join(inside, 'tokenizer.json'));
    await expect(loadTokenizer(inside)).resolves.toBeTruthy();
  });
});

describe.skipIf(!sharedAvailable())('tokenizer (stories260k, shared fixtures)', () => {
  if (!sharedAvailable()) console.warn(`skipping stories260k tokenizer tests: ${SHARED_DIR} is absent`);

  it('encodes "Once upon a time" as llama2.c does and round-trips it', async () => {
    const tok = await loadTokenizer(path.join(STORIES, 'hf'));
    expect(tok.bosId).toBe(1);
    expect(tok.eosIds).toEqual([2]);
    expect(tok.vocabSize).toBe(512);
    // The first tokens of golden/greedy.json are BOS "Once upon a time".
    expect(tok.encode('Once upon a time')).toEqual([1, 403, 407, 261, 378]);
    expect(tok.decode([1, 403, 407, 261, 378])).toBe('Once upon a time');
    expect(streamed(tok, [1, 403, 407, 261, 378])).toEqual(['', 'Once', ' upon', ' a', ' time']);
  });

  it('round-trips every corpus text (calibration + eval), whole and streamed', async () => {
    const tok = await loadTokenizer(path.join(STORIES, 'hf'));
    const texts = corpusTexts();
    expect(texts.length).toBe(300);
    let tokens = 0;
    for (const text of texts) {
      const ids = tok.encode(text);
      expect(ids[0]).toBe(1);
      tokens += ids.length;
      expect(tok.decode(ids)).toBe(text);
      expect(tok.decode(tok.encode(text, { addBos: false }))).toBe(text);
    }
    for (const text of texts.slice(0, 20)) expect(streamed(tok, tok.encode(text)).join('')).toBe(text);
    expect(tokens).toBeGreaterThan(50_000);
  });

  it('reads the same tokenizer from a .symb directory', async () => {
    const hf = await loadTokenizer(path.join(STORIES, 'hf'));
    const symb = await loadTokenizer(path.join(STORIES, 'symb-fp16'), { bosTokenId: 1, eosTokenIds: [2] });
    expect(symb.bosId).toBe(1);
    for (const text of corpusTexts().slice(0, 10)) expect(symb.encode(text)).toEqual(hf.encode(text));
  });

  it('decodes the golden greedy ids to the published story', async () => {
    const tok = await loadTokenizer(path.join(STORIES, 'hf'));
    const greedy = JSON.parse(fs.readFileSync(path.join(STORIES, 'golden', 'greedy.json'), 'utf8')) as { ids: number[] };
    expect(tok.decode(greedy.ids).startsWith('Once upon a time, there was a little girl named Lily. She loved to play outside in the park.')).toBe(true);
    expect(streamed(tok, greedy.ids).join('')).toBe(tok.decode(greedy.ids));
  });
});
