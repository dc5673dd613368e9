/**
 * .symb directories end to end, against the reference converter's own output in ../shared:
 * `convert` reproduces every fixture byte for byte, the reader reads every fixture and its
 * dequantized weights are within the encoding's error of the HF weights, `inspect` describes
 * both formats, and broken directories fail with one line naming the file.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import yargs from 'yargs';
import { SynaximError } from '../src/util/errors.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { convertHfToSymb, pythonFloatRepr, pythonJsonDumps } from '../src/formats/convert.ts';
import { openHfModel } from '../src/formats/hfModel.ts';
import { describeModel, renderDescription } from '../src/formats/inspect.ts';
import { writeSafetensors } from '../src/formats/safetensors.ts';
import type { SymbMethod } from '../src/formats/symb.ts';
import { openSymbModel } from '../src/formats/symbModel.ts';
import type { Matrix, ModelWeights } from '../src/formats/weights.ts';
import { command as convertCommand } from '../src/cli/commands/convert.ts';
import { command as inspectCommand } from '../src/cli/commands/inspect.ts';

const HAVE_SHARED = sharedAvailable();
if (!HAVE_SHARED) console.warn(`convert.test: skipping the fixture tests: ${SHARED_DIR}/fixtures not found`);

const FIXTURES = path.join(SHARED_DIR, 'fixtures');
const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');

interface Case {
  model: string; // directory holding hf/ and the symb-* conversions
  sub: string;
  method: SymbMethod;
  groupSize: number;
}
const CASES: Case[] = [];
for (const m of ['tiny-llama', 'tiny-mistral-bf16']) {
  CASES.push(
    { model: path.join(FIXTURES, m), sub: 'symb-int4', method: 'int4', groupSize: 32 },
    { model: path.join(FIXTURES, m), sub: 'symb-int8', method: 'int8', groupSize: 128 },
    { model: path.join(FIXTURES, m), sub: 'symb-fp16', method: 'fp16', groupSize: 128 },
    { model: path.join(FIXTURES, m), sub: 'symb-fp32', method: 'fp32', groupSize: 128 },
  );
}
// stories260k's README says group 128, but its symb-int4 was converted with group 32: the
// config.symb.json and every int4 header say 32 (and the file sizes agree).
CASES.push(
  { model: STORIES, sub: 'symb-int4', method: 'int4', groupSize: 32 },
  { model: STORIES, sub: 'symb-fp16', method: 'fp16', groupSize: 128 },
);
const caseName = (c: Case) => `${path.basename(c.model)}/${c.sub}`;

function listFiles(dir: string, base = dir): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? listFiles(path.join(dir, e.name), base) : [path.relative(base, path.join(dir, e.name))]))
    .sort();
}

let tmp = '';
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-symb-test-'));
});
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** The one-line SynaximError message `f` throws. */
function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(SynaximError);
    const m = (e as Error).message;
    expect(m).not.toContain('\n');
    return m;
  }
  throw new Error('expected a SynaximError');
}
async function asyncErrorOf(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
  } catch (e) {
    expect(e).toBeInstanceOf(SynaximError);
    const m = (e as Error).message;
    expect(m).not.toContain('\n');
    return m;
  }
  throw new Error('expected a SynaximError');
}

describe.skipIf(!HAVE_SHARED)('convert reproduces the reference converter byte for byte', () => {
  for (const c of CASES) {
    it(caseName(c), async () => {
      const out = path.join(tmp, `convert-${path.basename(c.model)}-${c.sub}`);
      const result = await convertHfToSymb(path.join(c.model, 'hf'), out, { quantize: c.method, groupSize: c.groupSize });
      const ref = path.join(c.model, c.sub);
      const refFiles = listFiles(ref);
      expect(listFiles(out)).toEqual(refFiles);
      let symbFiles = 0;
      for (const f of refFiles) {
        if (f === 'config.symb.json') continue;
        const same = Buffer.compare(fs.readFileSync(path.join(ref, f)), fs.readFileSync(path.join(out, f))) === 0;
        expect(same, `${f} differs`).toBe(true);
        if (f.endsWith('.symb')) symbFiles++;
      }
      expect(symbFiles).toBe(result.tensors);
      const strip = (j: Record<string, unknown>) => ({ ...j, model_name: undefined, source_model: undefined });
      const refJson = JSON.parse(fs.readFileSync(path.join(ref, 'config.symb.json'), 'utf8'));
      const gotJson = JSON.parse(fs.readFileSync(path.join(out, 'config.symb.json'), 'utf8'));
      expect(strip(gotJson)).toEqual(strip(refJson));
      expect(Object.keys(gotJson)).toEqual(Object.keys(refJson));
      // The fixtures were converted from a directory named `hf`, as here: the text is identical too.
      expect(fs.readFileSync(path.join(out, 'config.symb.json'), 'utf8')).toBe(fs.readFileSync(path.join(ref, 'config.symb.json'), 'utf8'));
    });
  }

  it('names the model after the HF directory and replaces an earlier conversion atomically', async () => {
    const link = path.join(tmp, 'my-model');
    fs.symlinkSync(path.join(FIXTURES, 'tiny-llama', 'hf'), link);
    const out = path.join(tmp, 'named');
    await convertHfToSymb(link, out, { quantize: 'fp16' });
    await convertHfToSymb(link, out, { quantize: 'int4' }); // over an existing .symb directory
    const j = JSON.parse(fs.readFileSync(path.join(out, 'config.symb.json'), 'utf8'));
    expect(j.model_name).toBe('my-model');
    expect(j.source_model).toBe('my-model');
    expect(j.quantization).toEqual({ method: 'int4', group_size: 128, symmetric: true });
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});

/**
 * Largest |a - b| allowed per element of a tensor with values `ref` stored as `method`: half an
 * fp16 ulp, or half a quantization step plus the float32 rounding of x / scale and of q * scale
 * (each at most 2^-24 relative to |x|; the reference rounds a quotient that is a hair under a tie
 * up to the tie in float32, and then to even).
 */
function tolerance(method: SymbMethod | 'fp16', ref: Float32Array, groupSize: number): (i: number) => number {
  if (method === 'fp32') return () => 0;
  if (method === 'fp16') {
    return (i) => {
      const x = Math.abs(ref[i]!);
      return (x < 2 ** -14 ? 2 ** -24 : 2 ** (Math.floor(Math.log2(x)) - 10)) / 2;
    };
  }
  const f32 = (i: number) => 2 ** -23 * Math.abs(ref[i]!);
  if (method === 'int8') {
    const m = ref.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
    return (i) => (m / 127) * (0.5 + 1e-7) + f32(i);
  }
  const scales: number[] = [];
  for (let g = 0; g * groupSize < ref.length; g++) {
    const m = ref.subarray(g * groupSize, (g + 1) * groupSize).reduce((a, x) => Math.max(a, Math.abs(x)), 0);
    scales.push(m === 0 ? 1 : m / 7);
  }
  return (i) => scales[Math.floor(i / groupSize)]! * (0.5 + 1e-7) + f32(i);
}

function expectClose(what: string, got: Float32Array, ref: Float32Array, tol: (i: number) => number): number {
  expect(got.length, what).toBe(ref.length);
  let worst = 0;
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(got[i]! - ref[i]!);
    if (!(err <= tol(i))) throw new Error(`${what}[${i}]: ${got[i]} vs ${ref[i]} (allowed ${tol(i)})`);
    worst = Math.max(worst, err);
  }
  return worst;
}

function expectMatrix(what: string, got: Matrix, ref: Matrix, method: SymbMethod, g: number): void {
  expect([got.rows, got.cols], what).toEqual([ref.rows, ref.cols]);
  expectClose(what, got.data, ref.data, tolerance(method, ref.data, g));
}

describe.skipIf(!HAVE_SHARED)('the reader reads every reference conversion', () => {
  for (const c of CASES) {
    it(`${caseName(c)} dequantizes to the HF weights within the encoding's error`, () => {
      const hf: ModelWeights = openHfModel(path.join(c.model, 'hf'));
      const symb = openSymbModel(path.join(c.model, c.sub));
      try {
        const cfg = hf.config;
        expect(symb.format).toBe('symb');
        expect(symb.storage).toBe(c.method === 'int4' ? `int4/g${c.groupSize}` : c.method);
        for (const k of ['hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'vocabSize', 'maxPositionEmbeddings', 'rmsNormEps', 'ropeTheta', 'tieWordEmbeddings', 'slidingWindow', 'attentionBias', 'bosTokenId', 'eosTokenIds'] as const) {
          expect(symb.config[k], k).toEqual(cfg[k]);
        }
        const V = cfg.vocabSize;
        const D = cfg.hiddenSize;
        // Embeddings: all rows through embed(); in a shuffled order so row addressing is tested.
        const ids = Array.from({ length: V }, (_, i) => (i * 7 + 3) % V);
        const embedHf = hf.embed(ids);
        const fullEmbed = hf.embed(Array.from({ length: V }, (_, i) => i));
        const embTol = tolerance(c.method, fullEmbed, c.groupSize);
        expectClose('embed', symb.embed(ids), embedHf, (i) => embTol(ids[Math.floor(i / D)]! * D + (i % D)));
        // Output projection: untied lm_head is V×D like HF (the reference engine reads it as D×V).
        const lmHf = hf.lmHeadRows(0, V);
        expectMatrix('lmHead', symb.lmHeadRows(0, V), lmHf, c.method, c.groupSize);
        const part = symb.lmHeadRows(37, 101);
        expect(part.data).toEqual(symb.lmHeadRows(0, V).data.subarray(37 * D, 138 * D));
        expectClose('finalNorm', symb.finalNorm(), hf.finalNorm(), tolerance('fp16', hf.finalNorm(), 1));
        for (let l = 0; l < cfg.numLayers; l++) {
          const a = symb.layer(l);
          const b = hf.layer(l);
          for (const k of ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const) expectMatrix(`layer ${l} ${k}`, a[k], b[k], c.method, c.groupSize);
          expectClose(`layer ${l} inputNorm`, a.inputNorm, b.inputNorm, tolerance('fp16', b.inputNorm, 1));
          expectClose(`layer ${l} postNorm`, a.postNorm, b.postNorm, tolerance('fp16', b.postNorm, 1));
          expect([a.qBias, a.kBias, a.vBias]).toEqual([null, null, null]);
        }
        if (c.method === 'fp32') {
          // fp32 is exact.
          expect(symb.layer(0).q.data).toEqual(hf.layer(0).q.data);
          expect(symb.embed([5])).toEqual(hf.embed([5]));
        }
      } finally {
        hf.close();
        symb.close();
      }
    });
  }
});

describe.skipIf(!HAVE_SHARED)('bad .symb directories fail with one line naming the file', () => {
  const fixtureInt4 = path.join(FIXTURES, 'tiny-llama', 'symb-int4');
  const fixtureInt8 = path.join(FIXTURES, 'tiny-llama', 'symb-int8');
  /** A writable copy of the int4 fixture in tmp (never in the project), to break. */
  function brokenCopy(name: string): string {
    const dir = path.join(tmp, `broken-${name}`);
    fs.cpSync(fixtureInt4, dir, { recursive: true });
    for (const f of listFiles(dir)) fs.chmodSync(path.join(dir, f), 0o644);
    return dir;
  }
  const q = (dir: string) => path.join(dir, 'layers', 'layer_01', 'attn_q.symb');

  it('truncated file', () => {
    const dir = brokenCopy('truncated');
    fs.truncateSync(q(dir), 2000);
    expect(errorOf(() => openSymbModel(dir))).toBe(`${q(dir)}: 2000 bytes, but its int4 header (num_groups 128, group_size 32) implies 2580 bytes (truncated)`);
  });
  it('header group count that disagrees with the size', () => {
    const dir = brokenCopy('groups');
    const b = fs.readFileSync(q(dir));
    b.writeUInt32LE(64, 0);
    fs.writeFileSync(q(dir), b);
    expect(errorOf(() => openSymbModel(dir))).toMatch(new RegExp(`^${q(dir)}: corrupt int4 header: num_groups 64, group_size 32, numel 4096`));
  });
  it('header numel that disagrees with the size', () => {
    const dir = brokenCopy('numel');
    const b = fs.readFileSync(q(dir));
    b.writeUInt32LE(4000, 8);
    fs.writeFileSync(q(dir), b);
    expect(errorOf(() => openSymbModel(dir))).toMatch(new RegExp(`^${q(dir)}: corrupt int4 header`));
  });
  it('shape that disagrees with config.symb.json', () => {
    const dir = brokenCopy('shape');
    const cfgPath = path.join(dir, 'config.symb.json');
    const j = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
    j.intermediate_size = 160;
    fs.writeFileSync(cfgPath, JSON.stringify(j));
    const gate = path.join(dir, 'layers', 'layer_00', 'mlp_gate.symb');
    expect(errorOf(() => openSymbModel(dir))).toBe(`${gate}: int4 header shape 172x64 disagrees with config.symb.json shape [160, 64]`);
  });
  it('an int8 file where int4 is declared (the reference engine reads it as int4)', () => {
    const dir = brokenCopy('int8');
    const emb = path.join(dir, 'embeddings.symb');
    fs.copyFileSync(path.join(fixtureInt8, 'embeddings.symb'), emb);
    expect(errorOf(() => openSymbModel(dir))).toBe(
      `${emb}: 32772 bytes is the size of an int8 [512, 64] tensor, but config.symb.json declares int4 (group size 32) [512, 64] (20500 bytes)`,
    );
  });
  it('a raw file of the wrong size', () => {
    const dir = path.join(tmp, 'broken-fp16');
    fs.cpSync(path.join(FIXTURES, 'tiny-llama', 'symb-fp16'), dir, { recursive: true });
    const norm = path.join(dir, 'layers', 'layer_02', 'norm_mlp.symb');
    fs.chmodSync(norm, 0o644);
    fs.truncateSync(norm, 100);
    expect(errorOf(() => openSymbModel(dir))).toBe(`${norm}: 100 bytes (truncated?), but config.symb.json declares fp16 [64]: expected 128 bytes`);
  });
  it('missing file', () => {
    const dir = brokenCopy('missing');
    fs.rmSync(path.join(dir, 'layers', 'layer_03', 'mlp_down.symb'));
    expect(errorOf(() => openSymbModel(dir))).toBe(`${path.join(dir, 'layers', 'layer_03', 'mlp_down.symb')}: missing .symb file`);
  });
  it('untied model without lm_head.symb', () => {
    const dir = path.join(tmp, 'broken-lmhead');
    fs.cpSync(path.join(FIXTURES, 'tiny-mistral-bf16', 'symb-int8'), dir, { recursive: true });
    fs.rmSync(path.join(dir, 'lm_head.symb'), { force: true });
    expect(errorOf(() => openSymbModel(dir))).toBe(`${path.join(dir, 'lm_head.symb')}: missing .symb file`);
  });
  it('bad quantization block and missing config', () => {
    const dir = brokenCopy('method');
    const cfgPath = path.join(dir, 'config.symb.json');
    const j = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
    j.quantization.method = 'int3';
    fs.writeFileSync(cfgPath, JSON.stringify(j));
    expect(errorOf(() => openSymbModel(dir))).toBe(`${cfgPath}: quantization.method "int3" is not one of int4, int8, fp16, fp32`);
    fs.rmSync(cfgPath);
    expect(errorOf(() => openSymbModel(dir))).toBe(`${cfgPath}: file not found`);
  });
});

describe.skipIf(!HAVE_SHARED)('convert: bad input', () => {
  it('refuses an HF tensor whose shape disagrees with config.json, and writes nothing', async () => {
    const hf = path.join(tmp, 'bad-hf');
    fs.mkdirSync(hf);
    const cfg = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'tiny-llama', 'hf', 'config.json'), 'utf8'));
    cfg.num_hidden_layers = 1;
    fs.writeFileSync(path.join(hf, 'config.json'), JSON.stringify(cfg));
    const z = (shape: number[]) => ({ dtype: 'F32' as const, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
    const p = 'model.layers.0.';
    writeSafetensors(path.join(hf, 'model.safetensors'), {
      'model.embed_tokens.weight': z([512, 64]),
      'model.norm.weight': z([64]),
      [p + 'self_attn.q_proj.weight']: z([64, 64]),
      [p + 'self_attn.k_proj.weight']: z([32, 64]),
      [p + 'self_attn.v_proj.weight']: z([32, 64]),
      [p + 'self_attn.o_proj.weight']: z([64, 64]),
      [p + 'mlp.gate_proj.weight']: z([172, 64]),
      [p + 'mlp.up_proj.weight']: z([64, 172]), // transposed
      [p + 'mlp.down_proj.weight']: z([64, 172]),
      [p + 'input_layernorm.weight']: z([64]),
      [p + 'post_attention_layernorm.weight']: z([64]),
    });
    const out = path.join(tmp, 'bad-out');
    const m = await asyncErrorOf(() => convertHfToSymb(hf, out, { quantize: 'int4' }));
    expect(m).toBe(`${path.join(hf, 'model.safetensors')}: tensor 'model.layers.0.mlp.up_proj.weight' has shape [64, 172] but config.json implies [172, 64]`);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('bad-out'))).toEqual([]);
  });

  it('refuses to replace a directory that is not a .symb conversion, or to write into the input', async () => {
    const hf = path.join(FIXTURES, 'tiny-llama', 'hf');
    const other = path.join(tmp, 'precious');
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, 'notes.txt'), 'keep me');
    expect(await asyncErrorOf(() => convertHfToSymb(hf, other, { quantize: 'fp16' }))).toBe(`${other}: exists, is not empty and is not a .symb directory; refusing to replace it`);
    expect(fs.readFileSync(path.join(other, 'notes.txt'), 'utf8')).toBe('keep me');
    expect(await asyncErrorOf(() => convertHfToSymb(hf, path.dirname(hf), { quantize: 'fp16' }))).toMatch(/must not be \(or contain\) the input directory/);
    expect(await asyncErrorOf(() => convertHfToSymb(hf, path.join(tmp, 'x'), { quantize: 'int4', groupSize: 0 }))).toMatch(/--group-size 0/);
    expect(await asyncErrorOf(() => convertHfToSymb(path.join(tmp, 'nope'), path.join(tmp, 'x'), { quantize: 'int4' }))).toMatch(/nope: no such directory/);
  });
});

describe.skipIf(!HAVE_SHARED)('tokenizer files and config extensions', () => {
  it('copies the tokenizer files into tokenizer/ (stories260k)', async () => {
    const out = path.join(tmp, 'stories-tok');
    const r = await convertHfToSymb(path.join(STORIES, 'hf'), out, { quantize: 'int4', groupSize: 128 });
    expect(r.tokenizerFiles).toEqual(['tokenizer.json', 'tokenizer_config.json']);
    expect(listFiles(path.join(out, 'tokenizer'))).toEqual(['tokenizer.json', 'tokenizer_config.json']);
    expect(fs.readFileSync(path.join(out, 'tokenizer', 'tokenizer.json'))).toEqual(fs.readFileSync(path.join(STORIES, 'hf', 'tokenizer.json')));
    // group 128 reads back too, within half a step of the HF weights.
    const symb = openSymbModel(out);
    const hf = openHfModel(path.join(STORIES, 'hf'));
    expect(symb.storage).toBe('int4/g128');
    expectMatrix('down', symb.layer(4).down, hf.layer(4).down, 'int4', 128);
    symb.close();
    hf.close();
  });

  it('keeps rope_scaling, sliding_window and non-default BOS/EOS that the reference keys cannot hold', async () => {
    const hf = path.join(tmp, 'ext-hf');
    fs.mkdirSync(hf);
    const cfg = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'tiny-mistral-bf16', 'hf', 'config.json'), 'utf8'));
    cfg.sliding_window = 4;
    cfg.bos_token_id = 5;
    cfg.eos_token_id = [6, 7];
    fs.writeFileSync(path.join(hf, 'config.json'), JSON.stringify(cfg));
    fs.copyFileSync(path.join(FIXTURES, 'tiny-mistral-bf16', 'hf', 'model.safetensors'), path.join(hf, 'model.safetensors'));
    const out = path.join(tmp, 'ext-out');
    await convertHfToSymb(hf, out, { quantize: 'fp16' });
    const j = JSON.parse(fs.readFileSync(path.join(out, 'config.symb.json'), 'utf8'));
    expect([j.sliding_window, j.bos_token_id, j.eos_token_id]).toEqual([4, 5, [6, 7]]);
    const m = openSymbModel(out);
    expect([m.config.slidingWindow, m.config.bosTokenId, m.config.eosTokenIds, m.config.architecture]).toEqual([4, 5, [6, 7], 'mistral']);
  });
});

describe('q/k/v biases (qwen2)', () => {
  it('writes attn_{q,k,v}_bias.symb as raw fp16 and reads them back', async () => {
    const hf = path.join(tmp, 'qwen-hf');
    fs.mkdirSync(hf, { recursive: true });
    const D = 32, H = 4, KV = 2, hd = 8, I = 48, V = 64;
    fs.writeFileSync(path.join(hf, 'config.json'), JSON.stringify({
      architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_size: D, intermediate_size: I, num_hidden_layers: 2,
      num_attention_heads: H, num_key_value_heads: KV, vocab_size: V, max_position_embeddings: 128, rms_norm_eps: 1e-6,
      rope_theta: 1000000.0, tie_word_embeddings: true, bos_token_id: 1, eos_token_id: 2,
    }));
    let seed = 7;
    const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5);
    const t = (shape: number[]) => ({ dtype: 'F32' as const, shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, rand) });
    const tensors: Record<string, ReturnType<typeof t>> = { 'model.embed_tokens.weight': t([V, D]), 'model.norm.weight': t([D]) };
    for (let l = 0; l < 2; l++) {
      const p = `model.layers.${l}.`;
      Object.assign(tensors, {
        [p + 'self_attn.q_proj.weight']: t([H * hd, D]), [p + 'self_attn.q_proj.bias']: t([H * hd]),
        [p + 'self_attn.k_proj.weight']: t([KV * hd, D]), [p + 'self_attn.k_proj.bias']: t([KV * hd]),
        [p + 'self_attn.v_proj.weight']: t([KV * hd, D]), [p + 'self_attn.v_proj.bias']: t([KV * hd]),
        [p + 'self_attn.o_proj.weight']: t([D, H * hd]), [p + 'mlp.gate_proj.weight']: t([I, D]), [p + 'mlp.up_proj.weight']: t([I, D]),
        [p + 'mlp.down_proj.weight']: t([D, I]), [p + 'input_layernorm.weight']: t([D]), [p + 'post_attention_layernorm.weight']: t([D]),
      });
    }
    writeSafetensors(path.join(hf, 'model.safetensors'), tensors);
    const out = path.join(tmp, 'qwen-symb');
    await convertHfToSymb(hf, out, { quantize: 'int8' });
    const qb = path.join(out, 'layers', 'layer_01', 'attn_q_bias.symb');
    expect(fs.statSync(qb).size).toBe(2 * H * hd); // raw fp16, whatever the method
    const m = openSymbModel(out);
    expect(m.config.attentionBias).toBe(true);
    const ref = tensors['model.layers.1.self_attn.k_proj.bias']!.data;
    const kb = m.layer(1).kBias!;
    expectClose('kBias', kb, ref, tolerance('fp16', ref, 1));
    expectMatrix('v', m.layer(1).v, { data: tensors['model.layers.1.self_attn.v_proj.weight']!.data, rows: KV * hd, cols: D }, 'int8', 128);
    // A layer that lost one bias file is an error naming it.
    fs.rmSync(path.join(out, 'layers', 'layer_01', 'attn_v_bias.symb'));
    expect(errorOf(() => openSymbModel(out))).toBe(`${path.join(out, 'layers', 'layer_01', 'attn_v_bias.symb')}: missing .symb file`);
  });
});

describe('Python-style config.symb.json text', () => {
  it('formats floats as Python repr does', () => {
    expect([10000, 1e-5, 0.5, 0.0039, 0.995, 1e-6, 500000, 1e16, 1.5e-4, 0.0001].map(pythonFloatRepr)).toEqual([
      '10000.0', '1e-05', '0.5', '0.0039', '0.995', '1e-06', '500000.0', '1e+16', '0.00015', '0.0001',
    ]);
  });
  it('dumps with indent 2, empty lists inline, non-ASCII escaped', () => {
    expect(pythonJsonDumps({ a: [], b: { c: 1 }, rope_theta: 10000, name: 'é', d: ['x'] })).toBe(
      '{\n  "a": [],\n  "b": {\n    "c": 1\n  },\n  "rope_theta": 10000.0,\n  "name": "\\u00e9",\n  "d": [\n    "x"\n  ]\n}',
    );
  });
});

describe.skipIf(!HAVE_SHARED)('inspect', () => {
  it('describes HF and .symb directories of the same model consistently', () => {
    const hf = describeModel(path.join(FIXTURES, 'tiny-mistral-bf16', 'hf'));
    const int4 = describeModel(path.join(FIXTURES, 'tiny-mistral-bf16', 'symb-int4'));
    const fp32 = describeModel(path.join(FIXTURES, 'tiny-mistral-bf16', 'symb-fp32'));
    // hidden 96, 3 layers, q 96x96, kv 32x96, MLP 256, vocab 384 untied
    const perLayer = 2 * 96 * 96 + 2 * 32 * 96 + 3 * 256 * 96 + 2 * 96;
    const expected = 2 * 384 * 96 + 96 + 3 * perLayer;
    expect(hf.parameterCount).toBe(expected);
    expect(int4.parameterCount).toBe(expected);
    expect(hf.format).toBe('hf');
    expect(hf.storage).toBe('BF16');
    expect(hf.totalBytes).toBe(2 * expected);
    expect(hf.compressionVsFp16).toBe(1);
    expect(int4.storage).toBe('int4/g32');
    const files = listFiles(path.join(FIXTURES, 'tiny-mistral-bf16', 'symb-int4')).filter((f) => f.endsWith('.symb'));
    expect(int4.tensors.map((t) => t.file).sort()).toEqual(files);
    const onDisk = files.reduce((a, f) => a + fs.statSync(path.join(FIXTURES, 'tiny-mistral-bf16', 'symb-int4', f)).size, 0);
    expect(int4.totalBytes).toBe(onDisk);
    expect(int4.compressionVsFp16).toBeCloseTo((2 * expected) / onDisk, 12);
    expect(int4.compressionVsFp16).toBeGreaterThan(3);
    // fp32 stores norms as fp16: a little under twice the FP16 size.
    expect(fp32.totalBytes).toBe(4 * expected - 2 * (96 + 3 * 2 * 96));
    const q = int4.tensors.find((t) => t.name === 'model.layers.1.self_attn.q_proj.weight')!;
    expect(q).toEqual({ name: 'model.layers.1.self_attn.q_proj.weight', file: 'layers/layer_01/attn_q.symb', shape: [96, 96], dtype: 'int4/g32', parameters: 9216, bytes: 5780 });
    const text = renderDescription(int4);
    expect(text).toContain('parameters: 369,312');
    expect(text).toMatch(/layers\/layer_01\/attn_q\.symb\s+\[96, 96\]\s+int4\/g32\s+9,216\s+5,780/);
  });
});

describe.skipIf(!HAVE_SHARED)('CLI commands', () => {
  async function run(cmd: typeof convertCommand, argv: string[]): Promise<string> {
    const chunks: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    const errWrite = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((s: string) => (chunks.push(String(s)), true)) as typeof process.stdout.write;
    process.stderr.write = (() => true) as typeof process.stderr.write;
    try {
      await yargs(argv).command(cmd).strict().fail((msg, err) => {
        throw err ?? new Error(msg);
      }).parseAsync();
    } finally {
      process.stdout.write = write;
      process.stderr.write = errWrite;
    }
    return chunks.join('');
  }

  it('synaxim convert and synaxim inspect --json', async () => {
    const out = path.join(tmp, 'cli-out');
    const text = await run(convertCommand, ['convert', path.join(FIXTURES, 'tiny-llama', 'hf'), out, '--quantize', 'int4', '--group-size', '32']);
    expect(text).toMatch(/^wrote .*cli-out: 38 tensors, 214,592 parameters/);
    for (const f of listFiles(out)) {
      if (f.endsWith('.symb')) expect(fs.readFileSync(path.join(out, f))).toEqual(fs.readFileSync(path.join(FIXTURES, 'tiny-llama', 'symb-int4', f)));
    }
    const json = JSON.parse(await run(inspectCommand, ['inspect', out, '--json']));
    expect(json.format).toBe('symb');
    expect(json.parameterCount).toBe(214592);
    await expect(run(convertCommand, ['convert', 'a', 'b', '--quantize', 'int3'])).rejects.toThrow(/int3/);
  });
});
