import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { parseHfConfig, parseSymbConfig, readJsonFile, kvHeadsPerGroup } from '../src/formats/config.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';

if (!sharedAvailable()) console.warn(`config.test: the configs of the shared fixtures skipped: ${SHARED_DIR}/fixtures not found`);

const llama32_1b = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 2048, intermediate_size: 8192,
  num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 64, vocab_size: 128256,
  max_position_embeddings: 131072, rms_norm_eps: 1e-5, rope_theta: 500000.0, tie_word_embeddings: true,
  bos_token_id: 128000, eos_token_id: 128001, hidden_act: 'silu', torch_dtype: 'bfloat16',
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
};
const mistral7b = {
  architectures: ['MistralForCausalLM'], model_type: 'mistral', hidden_size: 4096, intermediate_size: 14336,
  num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 128, vocab_size: 32768,
  max_position_embeddings: 32768, rms_norm_eps: 1e-5, rope_theta: 1000000.0, sliding_window: null,
  tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, hidden_act: 'silu',
};

describe('HF config', () => {
  it('parses Llama-3.2-1B with llama3 rope scaling and tied embeddings', () => {
    const c = parseHfConfig(llama32_1b);
    expect(c).toMatchObject({ architecture: 'llama', hiddenSize: 2048, numKvHeads: 8, headDim: 64, tieWordEmbeddings: true, ropeTheta: 500000 });
    expect(c.ropeScaling).toEqual({ type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    expect(kvHeadsPerGroup(c)).toBe(4);
  });
  it('parses Mistral-7B-v0.3 (Magnus) with a null sliding window', () => {
    const c = parseHfConfig(mistral7b);
    expect(c).toMatchObject({ architecture: 'mistral', slidingWindow: null, headDim: 128, vocabSize: 32768, tieWordEmbeddings: false, eosTokenIds: [2] });
    expect(parseHfConfig({ ...mistral7b, sliding_window: 4096 }).slidingWindow).toBe(4096);
  });
  it('qwen2 has q/k/v biases; head_dim defaults to hidden/heads', () => {
    const c = parseHfConfig({ ...mistral7b, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', head_dim: undefined, sliding_window: undefined });
    expect(c.attentionBias).toBe(true);
    expect(c.headDim).toBe(128);
  });
  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['unknown architecture', { ...mistral7b, architectures: ['GPT2LMHeadModel'], model_type: undefined }, /unsupported architecture "GPT2LMHeadModel"/],
    ['unknown rope_scaling', { ...llama32_1b, rope_scaling: { rope_type: 'yarn', factor: 4 } }, /unsupported rope_scaling type "yarn"/],
    ['zero size', { ...mistral7b, hidden_size: 0 }, /'hidden_size' must be a positive integer/],
    ['negative heads', { ...mistral7b, num_attention_heads: -4 }, /'num_attention_heads' must be a positive integer/],
    ['heads not divisible', { ...mistral7b, num_key_value_heads: 5 }, /not a multiple of num_key_value_heads/],
    ['missing field', { ...mistral7b, vocab_size: undefined }, /missing required field 'vocab_size'/],
    ['hidden not divisible without head_dim', { ...mistral7b, head_dim: undefined, hidden_size: 4095 }, /not divisible/],
    ['other activation', { ...mistral7b, hidden_act: 'gelu' }, /unsupported hidden_act/],
    ['MoE', { ...mistral7b, num_local_experts: 8 }, /mixture-of-experts/],
    ['type disagreement', { ...mistral7b, model_type: 'llama' }, /disagrees/],
    ['bos outside vocab', { ...mistral7b, bos_token_id: 99999 }, /outside the vocabulary/],
    // A string "false" is truthy: booleans must be booleans (issue 14 §3).
    ['tie_word_embeddings "false"', { ...mistral7b, tie_word_embeddings: 'false' }, /'tie_word_embeddings' must be true or false, got "false"/],
    ['tie_word_embeddings 0', { ...mistral7b, tie_word_embeddings: 0 }, /'tie_word_embeddings' must be true or false, got 0/],
    ['attention_bias "true"', { ...mistral7b, attention_bias: 'true' }, /'attention_bias' must be true or false/],
    ['mlp_bias "false"', { ...mistral7b, mlp_bias: 'false' }, /'mlp_bias' must be true or false/],
  ];
  it('takes true/false/absent/null booleans as they are', () => {
    expect(parseHfConfig({ ...mistral7b, tie_word_embeddings: false }).tieWordEmbeddings).toBe(false);
    expect(parseHfConfig({ ...mistral7b, tie_word_embeddings: true }).tieWordEmbeddings).toBe(true);
    expect(parseHfConfig({ ...mistral7b, tie_word_embeddings: null }).tieWordEmbeddings).toBe(false);
    expect(parseSymbConfig({ hidden_size: 64, intermediate_size: 128, num_layers: 2, num_attention_heads: 4, vocab_size: 32, tie_word_embeddings: true }).tieWordEmbeddings).toBe(true);
    expect(() => parseSymbConfig({ hidden_size: 64, intermediate_size: 128, num_layers: 2, num_attention_heads: 4, vocab_size: 32, tie_word_embeddings: 'yes' }, 'c.symb.json')).toThrow(/^c\.symb\.json: 'tie_word_embeddings' must be true or false/);
  });
  for (const [name, json, re] of bad) {
    it(`rejects ${name}`, () => {
      expect(() => parseHfConfig(json, '/m/config.json')).toThrow(re);
      expect(() => parseHfConfig(json, '/m/config.json')).toThrow(/^\/m\/config\.json: /);
    });
  }
});

describe.skipIf(!sharedAvailable())('configs of the shared fixtures', () => {
  it('HF and .symb configs agree', () => {
    for (const fx of ['tiny-llama', 'tiny-mistral-bf16']) {
      const hf = parseHfConfig(readJsonFile(path.join(SHARED_DIR, 'fixtures', fx, 'hf/config.json')));
      const symb = parseSymbConfig(readJsonFile(path.join(SHARED_DIR, 'fixtures', fx, 'symb-int4/config.symb.json')), 'config.symb.json', { architecture: hf.architecture });
      for (const k of ['hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'vocabSize', 'rmsNormEps', 'ropeTheta', 'tieWordEmbeddings'] as const) {
        expect(symb[k], `${fx} ${k}`).toEqual(hf[k]);
      }
    }
  });
});
