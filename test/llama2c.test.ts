import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import yargs from 'yargs';
import {
  importLlama2c,
  mergesFromScores,
  parseLlama2cHeader,
  permuteToRotateHalf,
  pythonFloatRepr,
  pythonJsonDumps,
} from '../src/formats/llama2c.ts';
import { loadTokenizer } from '../src/formats/tokenizer.ts';
import { SafetensorsFile } from '../src/formats/safetensors.ts';
import { SynaximError } from '../src/util/errors.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { command as importCommand } from '../src/cli/commands/import-llama2c.ts';

const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');

// ---------------------------------------------------------------------------------------------
// Slow, obvious references

/** HF's permute: w.view(n_heads, hs/2, 2, cols).transpose(1, 2).reshape(rows, cols), index by index. */
function permuteReference(w: Float32Array, nHeads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const hs = rows / nHeads;
  const out = new Float32Array(w.length);
  // out[h][i][j][c] = w[h][j][i][c] with w viewed as [nHeads, hs/2, 2, cols], out as [nHeads, 2, hs/2, cols].
  for (let h = 0; h < nHeads; h++)
    for (let i = 0; i < 2; i++)
      for (let j = 0; j < hs / 2; j++)
        for (let c = 0; c < cols; c++) out[((h * 2 + i) * (hs / 2) + j) * cols + c] = w[((h * (hs / 2) + j) * 2 + i) * cols + c]!;
  return out;
}

/** llama2.c run.c's `encode` (no BOS/EOS), over the tokenizer.bin texts (' ' for a space). */
function encodeRunC(texts: string[], scores: ArrayLike<number>, text: string): number[] {
  const lookup = new Map(texts.map((t, i) => [t, i]));
  const tokens: number[] = [];
  if (text.length > 0) tokens.push(lookup.get(' ')!); // the dummy prefix
  for (const ch of text) {
    const id = lookup.get(ch);
    if (id !== undefined) tokens.push(id);
    else for (const byte of Buffer.from(ch, 'utf8')) tokens.push(byte + 3); // byte fallback
  }
  for (;;) {
    // Merge the adjacent pair whose concatenation is the best-scoring token (the first on ties).
    let bestScore = -1e10;
    let bestId = -1;
    let bestIdx = -1;
    for (let i = 0; i + 1 < tokens.length; i++) {
      const id = lookup.get(texts[tokens[i]!]! + texts[tokens[i + 1]!]!);
      if (id !== undefined && scores[id]! > bestScore) {
        bestScore = scores[id]!;
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) return tokens;
    tokens.splice(bestIdx, 2, bestId);
  }
}

/** Read a tokenizer.bin the plain way (for the reference encoder). */
function readTokenizerBin(file: string, vocabSize: number): { texts: string[]; scores: number[] } {
  const b = fs.readFileSync(file);
  const texts: string[] = [];
  const scores: number[] = [];
  let off = 4;
  for (let i = 0; i < vocabSize; i++) {
    scores.push(b.readFloatLE(off));
    const n = b.readInt32LE(off + 4);
    off += 8;
    texts.push(b.subarray(off, off + n).toString('utf8'));
    off += n;
  }
  return { texts, scores };
}

// ---------------------------------------------------------------------------------------------
// Synthetic llama2.c files

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

interface SynthModel {
  dim: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  seqLen: number;
  tied: boolean;
}

/** Write a legacy llama2.c checkpoint with random weights; returns the blocks by run.c name. */
function writeModelBin(file: string, m: SynthModel, seed = 1): Record<string, Float32Array> {
  const r = rng(seed);
  const hs = m.dim / m.heads;
  const kv = m.kvHeads * hs;
  const sizes: [string, number][] = [
    ['token_embedding', m.vocab * m.dim],
    ['rms_att', m.layers * m.dim],
    ['wq', m.layers * m.dim * m.dim],
    ['wk', m.layers * kv * m.dim],
    ['wv', m.layers * kv * m.dim],
    ['wo', m.layers * m.dim * m.dim],
    ['rms_ffn', m.layers * m.dim],
    ['w1', m.layers * m.hidden * m.dim],
    ['w2', m.layers * m.dim * m.hidden],
    ['w3', m.layers * m.hidden * m.dim],
    ['rms_final', m.dim],
    ['freq_cis_real', (m.seqLen * hs) / 2],
    ['freq_cis_imag', (m.seqLen * hs) / 2],
  ];
  if (!m.tied) sizes.push(['wcls', m.vocab * m.dim]);
  const blocks: Record<string, Float32Array> = {};
  const header = new Int32Array([m.dim, m.hidden, m.layers, m.heads, m.kvHeads, m.tied ? m.vocab : -m.vocab, m.seqLen]);
  const parts: Uint8Array[] = [new Uint8Array(header.buffer)];
  for (const [name, n] of sizes) {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = r() * 2 - 1;
    blocks[name] = a;
    parts.push(new Uint8Array(a.buffer));
  }
  fs.writeFileSync(file, Buffer.concat(parts));
  return blocks;
}

/** A tokenizer.bin as llama2.c's tokenizer.py writes it: specials, bytes, then pieces by score. */
function writeTokenizerBin(file: string, pieces: string[]): { texts: string[]; scores: number[] } {
  const texts = ['<unk>', '\n<s>\n', '\n</s>\n'];
  for (let b = 0; b < 256; b++) texts.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  texts.push(...pieces);
  const scores = texts.map((_, i) => (i < 259 ? 0 : -(i - 259)));
  const bytes = texts.map((t) => Buffer.from(t, 'utf8'));
  const parts: Buffer[] = [Buffer.from(new Int32Array([Math.max(...bytes.map((b) => b.length))]).buffer)];
  bytes.forEach((b, i) => {
    const head = Buffer.alloc(8);
    head.writeFloatLE(scores[i]!, 0);
    head.writeInt32LE(b.length, 4);
    parts.push(head, b);
  });
  fs.writeFileSync(file, Buffer.concat(parts));
  return { texts, scores };
}

// A BPE vocabulary in the order a BPE trainer makes it: every merged piece is built from pieces
// that score higher. Spaces are ' ' here, as in tokenizer.bin.
const SYNTH_PIECES = [' t', 'he', ' a', ' the', 'ab', ' ab', 'bc', 'abc', ' abc', 'ca', 'cab', 'th', 'e ', ' ', 't', 'h', 'e', 'a', 'b', 'c', '.', ','];

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-l2c-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function expectOneLine(err: unknown, ...fragments: string[]): void {
  expect(err).toBeInstanceOf(SynaximError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  for (const f of fragments) expect(msg).toContain(f);
}
async function importError(model: string, tok: string, out: string): Promise<unknown> {
  try {
    await importLlama2c(model, tok, out);
  } catch (e) {
    return e;
  }
  return null;
}

describe('q/k permutation to rotate-half', () => {
  it('matches the HF permute index by index (property, random shapes)', () => {
    const r = rng(7);
    for (let trial = 0; trial < 40; trial++) {
      const nHeads = 1 + Math.floor(r() * 5);
      const hs = 2 * (1 + Math.floor(r() * 4));
      const cols = 1 + Math.floor(r() * 9);
      const w = Float32Array.from({ length: nHeads * hs * cols }, () => r());
      const want = permuteReference(w, nHeads, cols);
      expect(permuteToRotateHalf(w, nHeads, cols)).toEqual(want);
      // On raw float32 bytes with rowLength = 4 × cols it is the same permutation, bit for bit.
      const asBytes = permuteToRotateHalf(new Uint8Array(w.buffer.slice(0)), nHeads, 4 * cols);
      expect(new Float32Array(asBytes.buffer)).toEqual(want);
    }
  });
  it('sends interleaved pairs to halves: head rows [r0 i0 r1 i1] → [r0 r1 i0 i1]', () => {
    const w = Float32Array.from([10, 11, 20, 21, 30, 31, 40, 41]); // 1 head, hs 4, 2 columns
    expect(Array.from(permuteToRotateHalf(w, 1, 2))).toEqual([10, 11, 30, 31, 20, 21, 40, 41]);
    expect(() => permuteToRotateHalf(new Float32Array(6), 1, 2)).toThrow(); // odd head size
  });
});

describe('Python-compatible JSON text', () => {
  it('formats floats like Python repr', () => {
    const cases: [number, string][] = [
      [1e-5, '1e-05'], [1e-6, '1e-06'], [10000, '10000.0'], [500000, '500000.0'], [0.1, '0.1'], [0.0001, '0.0001'],
      [1.5e-7, '1.5e-07'], [1e16, '1e+16'], [1234567890123456, '1234567890123456.0'], [12345678901234567, '1.2345678901234568e+16'],
      [-2.5, '-2.5'], [0, '0.0'], [123.456, '123.456'], [3.0000000000000004, '3.0000000000000004'], [1e22, '1e+22'], [5e-324, '5e-324'],
    ];
    for (const [x, want] of cases) expect(pythonFloatRepr(x)).toBe(want);
  });
  it('writes json.dumps layouts (compact and indent=2) with ordered Map keys', () => {
    const v = { a: [1, 'x"\n\u0001é▁'], b: { c: null, d: true }, e: [], f: {}, rope_theta: 10000, g: new Map([['1', 1], ['0', 0]]) };
    expect(pythonJsonDumps(v, { floatKeys: new Set(['rope_theta']) })).toBe(
      '{"a": [1, "x\\"\\n\\u0001é▁"], "b": {"c": null, "d": true}, "e": [], "f": {}, "rope_theta": 10000.0, "g": {"1": 1, "0": 0}}',
    );
    expect(pythonJsonDumps({ a: [1, 2], b: { c: 0.5 } }, { indent: 2 })).toBe('{\n  "a": [\n    1,\n    2\n  ],\n  "b": {\n    "c": 0.5\n  }\n}');
  });
});

describe('llama2.c tokenizer → HF BPE', () => {
  it('lists every split of every token, by score then by part ids', () => {
    const pieces = ['a', 'b', 'c', 'ab', 'bc', 'abc'];
    const scores = [0, 0, 0, -1, -2, -3];
    expect(mergesFromScores(pieces, scores)).toEqual([['a', 'b'], ['b', 'c'], ['a', 'bc'], ['ab', 'c']]);
  });

  it("encodes exactly like run.c's encoder (property, random texts)", async () => {
    const model: SynthModel = { dim: 8, hidden: 12, layers: 1, heads: 2, kvHeads: 1, vocab: 259 + SYNTH_PIECES.length, seqLen: 4, tied: true };
    const bin = path.join(tmp, 'tokprop.bin');
    const tokBin = path.join(tmp, 'tokprop-tok.bin');
    writeModelBin(bin, model);
    const { texts, scores } = writeTokenizerBin(tokBin, SYNTH_PIECES);
    const out = path.join(tmp, 'tokprop-hf');
    await importLlama2c(bin, tokBin, out);
    const tok = await loadTokenizer(out);
    const alphabet = ['a', 'b', 'c', 't', 'h', 'e', ' ', ' ', '.', ',', 'é', '€', '😀', 'x', '\n'];
    const r = rng(3);
    for (let trial = 0; trial < 400; trial++) {
      const text = Array.from({ length: Math.floor(r() * 24) }, () => alphabet[Math.floor(r() * alphabet.length)]).join('');
      const ids = tok.encode(text, { addBos: false });
      expect(ids, JSON.stringify(text)).toEqual(encodeRunC(texts, scores, text));
      expect(tok.decode(ids)).toBe(text);
    }
  });
});

describe('import-llama2c (synthetic checkpoints)', () => {
  for (const tied of [true, false]) {
    it(`converts a ${tied ? 'tied' : 'untied'} GQA checkpoint: names, shapes, permuted q/k, config`, async () => {
      const m: SynthModel = { dim: 16, hidden: 24, layers: 2, heads: 4, kvHeads: 2, vocab: 259 + SYNTH_PIECES.length, seqLen: 32, tied };
      const bin = path.join(tmp, `m-${tied}.bin`);
      const tokBin = path.join(tmp, `t-${tied}.bin`);
      const blocks = writeModelBin(bin, m, tied ? 11 : 12);
      writeTokenizerBin(tokBin, SYNTH_PIECES);
      const out = path.join(tmp, `out-${tied}`);
      const r = await importLlama2c(bin, tokBin, out);
      expect(r.config).toMatchObject({ dim: 16, nKvHeads: 2, vocabSize: m.vocab, sharedClassifier: tied, headSize: 4 });
      expect(fs.readdirSync(out).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);

      const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
      expect(config).toMatchObject({
        architectures: ['LlamaForCausalLM'], hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4,
        num_key_value_heads: 2, head_dim: 4, vocab_size: m.vocab, max_position_embeddings: 32, tie_word_embeddings: tied, bos_token_id: 1, eos_token_id: 2,
      });

      const st = SafetensorsFile.open(path.join(out, 'model.safetensors'));
      try {
        const D = m.dim, H = m.hidden, kv = m.kvHeads * (D / m.heads);
        const layerSlice = (name: string, l: number, n: number) => blocks[name]!.subarray(l * n, (l + 1) * n);
        const expected: Record<string, [number[], Float32Array]> = {
          'model.embed_tokens.weight': [[m.vocab, D], blocks.token_embedding!],
          'model.norm.weight': [[D], blocks.rms_final!],
        };
        if (!tied) expected['lm_head.weight'] = [[m.vocab, D], blocks.wcls!];
        for (let l = 0; l < m.layers; l++) {
          const p = `model.layers.${l}.`;
          expected[p + 'input_layernorm.weight'] = [[D], layerSlice('rms_att', l, D)];
          expected[p + 'post_attention_layernorm.weight'] = [[D], layerSlice('rms_ffn', l, D)];
          expected[p + 'self_attn.q_proj.weight'] = [[D, D], permuteReference(layerSlice('wq', l, D * D), m.heads, D)];
          expected[p + 'self_attn.k_proj.weight'] = [[kv, D], permuteReference(layerSlice('wk', l, kv * D), m.kvHeads, D)];
          expected[p + 'self_attn.v_proj.weight'] = [[kv, D], layerSlice('wv', l, kv * D)];
          expected[p + 'self_attn.o_proj.weight'] = [[D, D], layerSlice('wo', l, D * D)];
          expected[p + 'mlp.gate_proj.weight'] = [[H, D], layerSlice('w1', l, H * D)];
          expected[p + 'mlp.down_proj.weight'] = [[D, H], layerSlice('w2', l, D * H)];
          expected[p + 'mlp.up_proj.weight'] = [[H, D], layerSlice('w3', l, H * D)];
        }
        expect(st.names().sort()).toEqual(Object.keys(expected).sort());
        for (const [name, [shape, data]] of Object.entries(expected)) {
          expect(st.info(name).dtype).toBe('F32');
          expect(st.info(name).shape, name).toEqual(shape);
          expect(st.readFloat32(name), name).toEqual(Float32Array.from(data));
        }
      } finally {
        st.close();
      }
    });
  }

  it('rejects bad headers, wrong sizes and mismatched tokenizers with one-line errors, writing nothing', async () => {
    const m: SynthModel = { dim: 8, hidden: 12, layers: 1, heads: 2, kvHeads: 1, vocab: 259 + SYNTH_PIECES.length, seqLen: 4, tied: true };
    const bin = path.join(tmp, 'good.bin');
    const tokBin = path.join(tmp, 'good-tok.bin');
    writeModelBin(bin, m);
    writeTokenizerBin(tokBin, SYNTH_PIECES);
    const good = fs.readFileSync(bin);
    const out = path.join(tmp, 'never');
    const variant = (name: string, bytes: Uint8Array) => {
      const f = path.join(tmp, name);
      fs.writeFileSync(f, bytes);
      return f;
    };
    const withHeader = (name: string, values: number[]) => {
      const b = Buffer.from(good);
      values.forEach((v, i) => b.writeInt32LE(v, 4 * i));
      return variant(name, b);
    };

    const truncated = variant('trunc.bin', good.subarray(0, good.length - 4));
    expectOneLine(await importError(truncated, tokBin, out), truncated, 'truncated');
    const longer = variant('long.bin', Buffer.concat([good, Buffer.alloc(8)]));
    expectOneLine(await importError(longer, tokBin, out), longer, 'trailing data');
    const tiny = variant('tiny.bin', good.subarray(0, 10));
    expectOneLine(await importError(tiny, tokBin, out), tiny, 'too small');
    const zeroHeads = withHeader('zh.bin', [8, 12, 1, 0, 1, m.vocab, 4]);
    expectOneLine(await importError(zeroHeads, tokBin, out), zeroHeads, 'n_heads must be positive');
    const indivisible = withHeader('ind.bin', [8, 12, 1, 3, 1, m.vocab, 4]);
    expectOneLine(await importError(indivisible, tokBin, out), indivisible, 'not a multiple of n_heads');
    const gqa = withHeader('gqa.bin', [8, 12, 1, 2, 3, m.vocab, 4]);
    expectOneLine(await importError(gqa, tokBin, out), gqa, 'n_kv_heads');
    const huge = withHeader('huge.bin', [8, 12, 1 << 30, 2, 1, m.vocab, 4]);
    expectOneLine(await importError(huge, tokBin, out), huge, 'implausibly large');
    const v1 = withHeader('v1.bin', [0x616b3432, 1]);
    expectOneLine(await importError(v1, tokBin, out), v1, 'version 1', 'legacy');
    expectOneLine(await importError(path.join(tmp, 'absent.bin'), tokBin, out), 'absent.bin', 'not found');

    // Tokenizer problems.
    const tokBytes = fs.readFileSync(tokBin);
    const tokTrunc = variant('tok-trunc.bin', tokBytes.subarray(0, tokBytes.length - 3));
    expectOneLine(await importError(bin, tokTrunc, out), tokTrunc, 'ends inside token');
    const smallerVocab = withHeader('sv.bin', [8, 12, 1, 2, 1, m.vocab - 1, 4]);
    const svBytes = fs.readFileSync(smallerVocab).subarray(0, good.length - 4 * 8); // keep the .bin size consistent
    const sv = variant('sv2.bin', svBytes);
    expectOneLine(await importError(sv, tokBin, out), tokBin, 'bytes after its', 'vocab_size');
    const badByteTok = path.join(tmp, 'badbyte-tok.bin');
    writeTokenizerBin(badByteTok, SYNTH_PIECES);
    const bb = fs.readFileSync(badByteTok);
    bb.write('<0x7F>', bb.indexOf('<0x41>'), 'latin1'); // token 3 + 0x41 is no longer <0x41>
    fs.writeFileSync(badByteTok, bb);
    expectOneLine(await importError(bin, badByteTok, out), badByteTok, 'expected "<0x41>"');

    expect(fs.existsSync(out)).toBe(false);

    // An output directory holding anything but an earlier import is never replaced.
    const occupied = path.join(tmp, 'occupied');
    fs.mkdirSync(occupied);
    fs.writeFileSync(path.join(occupied, 'notes.txt'), 'keep me');
    expectOneLine(await importError(bin, tokBin, occupied), occupied, 'holds other files', 'notes.txt');
    expect(fs.readFileSync(path.join(occupied, 'notes.txt'), 'utf8')).toBe('keep me');
    const again = path.join(tmp, 'again');
    await importLlama2c(bin, tokBin, again);
    await importLlama2c(bin, tokBin, again); // re-importing over our own output is fine
    expect(fs.readdirSync(again).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    expect(parseLlama2cHeader('x', new Uint8Array(good.subarray(0, 28))).headSize).toBe(4);
  });

  it('runs as the `import-llama2c` command', async () => {
    const bin = path.join(tmp, 'cli.bin');
    const tokBin = path.join(tmp, 'cli-tok.bin');
    writeModelBin(bin, { dim: 8, hidden: 12, layers: 1, heads: 2, kvHeads: 1, vocab: 259 + SYNTH_PIECES.length, seqLen: 4, tied: true });
    writeTokenizerBin(tokBin, SYNTH_PIECES);
    const out = path.join(tmp, 'cli-out');
    const write = process.stdout.write;
    let printed = '';
    process.stdout.write = ((s: string) => ((printed += s), true)) as typeof process.stdout.write;
    try {
      await yargs(['import-llama2c', bin, tokBin, out]).command(importCommand).strict().fail((msg, err) => { throw err ?? new Error(msg); }).parseAsync();
    } finally {
      process.stdout.write = write;
    }
    expect(printed).toContain(`wrote ${out}`);
    expect(fs.existsSync(path.join(out, 'model.safetensors'))).toBe(true);
  });
});

describe.skipIf(!sharedAvailable())('import-llama2c reproduces stories260k/hf (shared fixtures)', () => {
  if (!sharedAvailable()) console.warn(`skipping stories260k import tests: ${SHARED_DIR} is absent`);
  let out: string;
  beforeAll(async () => {
    out = path.join(tmp, 'stories260k-hf');
    await importLlama2c(path.join(STORIES, 'original', 'stories260K.bin'), path.join(STORIES, 'original', 'tok512.bin'), out);
  });

  it('writes the same config and tokenizer files, byte for byte', () => {
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) {
      const mine = fs.readFileSync(path.join(out, f), 'utf8');
      const ref = fs.readFileSync(path.join(STORIES, 'hf', f), 'utf8');
      expect(JSON.parse(mine), f).toEqual(JSON.parse(ref));
      expect(mine, f).toBe(ref);
    }
  });

  it('writes the same tensors: names, shapes, F32 values exactly', () => {
    const mine = SafetensorsFile.open(path.join(out, 'model.safetensors'));
    const ref = SafetensorsFile.open(path.join(STORIES, 'hf', 'model.safetensors'));
    try {
      expect(mine.names().sort()).toEqual(ref.names().sort());
      expect(mine.names().length).toBe(2 + 5 * 9);
      for (const n of ref.names()) {
        expect(mine.info(n).dtype).toBe(ref.info(n).dtype);
        expect(mine.info(n).shape, n).toEqual(ref.info(n).shape);
        expect(Buffer.from(mine.readBytes(n)).equals(Buffer.from(ref.readBytes(n))), n).toBe(true);
      }
      expect(mine.metadata).toEqual(ref.metadata);
    } finally {
      mine.close();
      ref.close();
    }
  });

  it("encodes every corpus text like the shipped tokenizer and like run.c's encoder", async () => {
    const mine = await loadTokenizer(out);
    const ref = await loadTokenizer(path.join(STORIES, 'hf'));
    const { texts, scores } = readTokenizerBin(path.join(STORIES, 'original', 'tok512.bin'), 512);
    const corpus = ['calibration', 'eval'].flatMap((name) =>
      fs.readFileSync(path.join(STORIES, 'corpus', `${name}.jsonl`), 'utf8').split('\n').filter((l) => l.trim()).map((l) => (JSON.parse(l) as { text: string }).text),
    );
    expect(corpus.length).toBe(300);
    for (const text of [...corpus, 'Once upon a time']) {
      const ids = mine.encode(text);
      expect(ids).toEqual(ref.encode(text));
      expect(ids.slice(1)).toEqual(encodeRunC(texts, scores, text));
      expect(mine.decode(ids)).toBe(text);
    }
  });
});
