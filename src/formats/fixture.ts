/**
 * Deterministic synthetic models: `synaxim fixture --shape tiny|magnus|llama-1b OUT` writes an HF
 * checkpoint (`OUT/hf`: config.json, safetensors — BF16 and sharded for the big shapes — and a
 * byte-fallback BPE tokenizer) and its INT4 `.symb` conversion (`OUT/symb-int4`). `tiny` is the
 * embedded default model of the workbench (demo, tests); `magnus` and `llama-1b` have the exact
 * dimensions of the user's real models, for scale tests and benchmarks.
 *
 * Weights are random but scaled like a trained model's (unit-norm-ish rows, peaked logits), from a
 * seeded PRNG, so the same command always writes the same bytes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../util/errors.ts';
import { writeDirAtomic, writeFileAtomic, writeJsonAtomic } from '../util/atomic.ts';
import { Progress } from '../util/progress.ts';
import { convertHfToSymb } from './convert.ts';
import { type StTensorToWrite, writeSafetensors, INDEX_FILE } from './safetensors.ts';

export const FIXTURE_SHAPES = ['tiny', 'magnus', 'llama-1b'] as const;
export type FixtureShape = (typeof FIXTURE_SHAPES)[number];

/** HF config.json contents for each shape. */
export function fixtureConfig(shape: FixtureShape): Record<string, unknown> {
  const common = { hidden_act: 'silu', bos_token_id: 1, eos_token_id: 2, rms_norm_eps: 1e-5 };
  switch (shape) {
    case 'tiny':
      return {
        architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 176,
        num_hidden_layers: 4, num_attention_heads: 8, num_key_value_heads: 4, head_dim: 8, vocab_size: 320,
        max_position_embeddings: 512, rope_theta: 10000.0, tie_word_embeddings: true, torch_dtype: 'float32', ...common,
      };
    case 'magnus': // Mistral-7B-Instruct-v0.3 dimensions
      return {
        architectures: ['MistralForCausalLM'], model_type: 'mistral', hidden_size: 4096, intermediate_size: 14336,
        num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 128, vocab_size: 32768,
        max_position_embeddings: 32768, rope_theta: 1000000.0, sliding_window: null, tie_word_embeddings: false,
        torch_dtype: 'bfloat16', ...common,
      };
    case 'llama-1b': // Llama-3.2-1B dimensions (llama3 rope scaling, tied embeddings)
      return {
        architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 2048, intermediate_size: 8192,
        num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 64, vocab_size: 128256,
        max_position_embeddings: 131072, rope_theta: 500000.0, tie_word_embeddings: true, torch_dtype: 'bfloat16',
        rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
        ...common,
      };
  }
}

/** xorshift128+ → uniform floats; deterministic per (seed, stream). */
export class Prng {
  private s0: bigint;
  private s1: bigint;
  constructor(seed: number, stream = 0) {
    this.s0 = BigInt.asUintN(64, BigInt(seed) * 0x9e3779b97f4a7c15n + BigInt(stream) + 1n);
    this.s1 = BigInt.asUintN(64, (BigInt(stream) + 0x632be59bd9b4e019n) ^ (this.s0 << 7n));
    for (let i = 0; i < 8; i++) this.nextU32();
  }
  nextU32(): number {
    let x = this.s0;
    const y = this.s1;
    this.s0 = y;
    x ^= BigInt.asUintN(64, x << 23n);
    x ^= x >> 17n;
    x ^= y ^ (y >> 26n);
    this.s1 = x;
    return Number(BigInt.asUintN(32, x + y));
  }
  /** Uniform in [-1, 1): fast path (fills with a 32-bit LCG seeded from the xorshift state). */
  fillUniform(out: Float32Array, scale: number): void {
    let s = this.nextU32() >>> 0;
    for (let i = 0; i < out.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      out[i] = ((s >>> 8) / 8388608 - 1) * scale;
    }
  }
}

/** Uniform[-a, a) with standard deviation `std`: a = std·√3. */
function randomTensor(prng: Prng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  prng.fillUniform(out, std * Math.sqrt(3));
  return out;
}

/**
 * A byte-fallback BPE tokenizer in the llama/sentencepiece style (the layout of stories260k's
 * tokenizer.json): <unk>, <s>, </s>, the 256 byte tokens, '▁' and printable ASCII characters.
 */
export function byteTokenizerJson(vocabSize: number): Record<string, unknown> {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  let next = 259;
  const chars = ['▁', ...'etaoinshrdlucmfwypvbgkjqxzETAOINSHRDLUCMFWYPVBGKJQXZ.,!?\'"-:;0123456789'];
  for (const c of chars) if (next < vocabSize && !(c in vocab)) vocab[c] = next++;
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }],
    },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: [] },
  };
}

export const TOKENIZER_CONFIG = {
  add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', tokenizer_class: 'LlamaTokenizer',
};

/**
 * Write the HF checkpoint of a shape into `dir` (not atomic by itself: callers build into a temp dir).
 * Big shapes are written one layer per shard with a `model.safetensors.index.json`, BF16.
 */
export function writeFixtureHf(shape: FixtureShape, dir: string, seed = 0, onProgress?: (done: number, total: number) => void): void {
  const cfg = fixtureConfig(shape);
  const D = cfg.hidden_size as number;
  const L = cfg.num_hidden_layers as number;
  const H = cfg.num_attention_heads as number;
  const KV = cfg.num_key_value_heads as number;
  const hd = cfg.head_dim as number;
  const F = cfg.intermediate_size as number;
  const V = cfg.vocab_size as number;
  const dtype = cfg.torch_dtype === 'bfloat16' ? 'BF16' : 'F32';
  const sharded = shape !== 'tiny';
  fs.mkdirSync(dir, { recursive: true });
  writeJsonAtomic(path.join(dir, 'config.json'), cfg);
  writeJsonAtomic(path.join(dir, 'tokenizer.json'), byteTokenizerJson(shape === 'tiny' ? V : 320));
  writeJsonAtomic(path.join(dir, 'tokenizer_config.json'), TOKENIZER_CONFIG);

  const weightMap: Record<string, string> = {};
  const shards: { file: string; tensors: () => Record<string, StTensorToWrite> }[] = [];
  const t = (prng: Prng, dims: number[], std: number): StTensorToWrite => ({ dtype, shape: dims, data: randomTensor(prng, dims.reduce((a, b) => a * b, 1), std) });
  const ones = (n: number, jitter: Prng): StTensorToWrite => {
    const d = randomTensor(jitter, n, 0.05);
    for (let i = 0; i < n; i++) d[i]! += 1;
    return { dtype, shape: [n], data: d };
  };
  const total = L + 2;
  const shardName = (i: number) => (sharded ? `model-${String(i + 1).padStart(5, '0')}-of-${String(total).padStart(5, '0')}.safetensors` : 'model.safetensors');
  const embedShard = (): Record<string, StTensorToWrite> => {
    const p = new Prng(seed, 1);
    // std 2.5/√D: tied logits then have a standard deviation of about 2.5 — peaked, not degenerate.
    return { 'model.embed_tokens.weight': t(p, [V, D], 2.5 / Math.sqrt(D)) };
  };
  const layerTensors = (l: number): Record<string, StTensorToWrite> => {
    const p = new Prng(seed, 100 + l);
    const pre = `model.layers.${l}.`;
    const inStd = 1 / Math.sqrt(D);
    return {
      [pre + 'input_layernorm.weight']: ones(D, p),
      [pre + 'self_attn.q_proj.weight']: t(p, [H * hd, D], inStd * 2),
      [pre + 'self_attn.k_proj.weight']: t(p, [KV * hd, D], inStd * 2),
      [pre + 'self_attn.v_proj.weight']: t(p, [KV * hd, D], inStd),
      [pre + 'self_attn.o_proj.weight']: t(p, [D, H * hd], 1 / Math.sqrt(H * hd)),
      [pre + 'post_attention_layernorm.weight']: ones(D, p),
      [pre + 'mlp.gate_proj.weight']: t(p, [F, D], inStd),
      [pre + 'mlp.up_proj.weight']: t(p, [F, D], inStd),
      [pre + 'mlp.down_proj.weight']: t(p, [D, F], 1 / Math.sqrt(F)),
    };
  };
  const headShard = (): Record<string, StTensorToWrite> => {
    const p = new Prng(seed, 2);
    const out: Record<string, StTensorToWrite> = { 'model.norm.weight': ones(D, p) };
    if (!cfg.tie_word_embeddings) out['lm_head.weight'] = t(p, [V, D], 2.5 / Math.sqrt(D));
    return out;
  };
  shards.push({ file: shardName(0), tensors: embedShard });
  for (let l = 0; l < L; l++) shards.push({ file: shardName(l + 1), tensors: () => layerTensors(l) });
  shards.push({ file: shardName(L + 1), tensors: headShard });

  if (!sharded) {
    const all: Record<string, StTensorToWrite> = {};
    for (const s of shards) Object.assign(all, s.tensors());
    writeSafetensors(path.join(dir, 'model.safetensors'), all, { format: 'pt' });
    onProgress?.(total, total);
    return;
  }
  shards.forEach((s, i) => {
    const tensors = s.tensors();
    for (const name of Object.keys(tensors)) weightMap[name] = s.file;
    writeSafetensors(path.join(dir, s.file), tensors, { format: 'pt' });
    onProgress?.(i + 1, total);
  });
  writeFileAtomic(path.join(dir, INDEX_FILE), JSON.stringify({ metadata: {}, weight_map: weightMap }, null, 2) + '\n');
}

export function parseFixtureShape(s: string): FixtureShape {
  if (!(FIXTURE_SHAPES as readonly string[]).includes(s)) fail(null, `unknown --shape '${s}' (choose from ${FIXTURE_SHAPES.join(', ')})`);
  return s as FixtureShape;
}

/** What a fixture directory holds; anything else in OUT is the user's and is kept. */
export const FIXTURE_ENTRIES = ['hf', 'symb-int4'];
export const isFixtureEntry = (name: string): boolean => FIXTURE_ENTRIES.includes(name);

/**
 * Write the fixture `shape` into `out` (hf/ and its INT4 conversion symb-int4/), atomically: OUT
 * gets both or neither; other files in OUT are kept. Progress on stderr unless `quiet`.
 */
export async function makeFixture(shape: FixtureShape, out: string, opts: { seed?: number; groupSize?: number; quiet?: boolean } = {}): Promise<void> {
  const log = (s: string) => opts.quiet || process.stderr.write(s + '\n');
  await writeDirAtomic(out, async (tmp) => {
    const hf = path.join(tmp, 'hf');
    let bar: Progress | null = null;
    let shardsDone = 0;
    writeFixtureHf(shape, hf, opts.seed ?? 0, (done, total) => {
      if (opts.quiet) return;
      bar ??= new Progress({ label: `fixture ${shape}: hf shards`, total });
      bar.tick(done - shardsDone);
      shardsDone = done;
    });
    (bar as Progress | null)?.finish();
    log(`fixture ${shape}: converting to int4 .symb`);
    await convertHfToSymb(hf, path.join(tmp, 'symb-int4'), { quantize: 'int4', groupSize: opts.groupSize ?? (shape === 'tiny' ? 32 : 128) });
  }, { isOurs: isFixtureEntry, marker: 'symb-int4' });
  log(`wrote ${out}/hf and ${out}/symb-int4`);
}
