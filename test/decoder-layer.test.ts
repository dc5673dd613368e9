/**
 * The one decoder-layer step (src/model/decoderLayer.ts), every attention policy, without
 * ../shared: decoding through the layer's state (one token at a time, or a first block then one
 * at a time) gives what the whole-sequence form gives, and the teacher and student compositions
 * are that step.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/runtime/backend.ts';
import '../src/runtime/gradients.ts';
import { parseHfConfig, type ModelConfig } from '../src/formats/config.ts';
import type { LayerWeights, Matrix } from '../src/formats/weights.ts';
import { disposeLayer, ropeCosSin, uploadLayer, type LayerTensors } from '../src/model/nn.ts';
import { LayerState, policyLayer } from '../src/model/decoderLayer.ts';
import { adapterPolicy, disposePolicy, type LayerPolicy } from '../src/model/policy.ts';
import { initialAdapter } from '../src/formats/adapter.ts';
import { naiveDecoderLayer, type NaiveLayerPolicy } from '../src/model/decoderLayer.naive.ts';
import { maxAbsDiff, randoms, relRms } from './helpers/numeric.ts';

const T = 11;
let c: ModelConfig;
let lw: LayerWeights;
let layer: LayerTensors;
let h: Float32Array;

beforeAll(async () => {
  await initBackend('wasm');
  c = parseHfConfig({
    architectures: ['LlamaForCausalLM'],
    hidden_size: 24,
    intermediate_size: 40,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 8,
    vocab_size: 16,
    rms_norm_eps: 1e-5,
  });
  const mat = (rows: number, cols: number, s: number): Matrix => ({ rows, cols, data: randoms(rows * cols, s, 1 / Math.sqrt(cols)) });
  lw = {
    inputNorm: Float32Array.from(randoms(24, 1), (x) => 1 + 0.2 * x),
    q: mat(32, 24, 2),
    k: mat(16, 24, 3),
    v: mat(16, 24, 4),
    o: mat(24, 32, 5),
    qBias: null,
    kBias: null,
    vBias: null,
    postNorm: Float32Array.from(randoms(24, 6), (x) => 1 + 0.2 * x),
    gate: mat(40, 24, 7),
    up: mat(40, 24, 8),
    down: mat(24, 40, 9),
  };
  layer = uploadLayer(lw);
  h = randoms(T * 24, 10, 2);
  return () => disposeLayer(layer);
});

/** An adapted layer's parameters: as tensors for the layer, as numbers for the reference. */
function adapterOf(window: number | null): { policy: LayerPolicy; naive: NaiveLayerPolicy } {
  const a = initialAdapter([0], 24, window);
  const p = a.params[0]!;
  p.gateBias = 0.4;
  p.gateScale = 1.5;
  p.mixAlpha = 0.3;
  p.outputScale = Float32Array.from(randoms(24, 11), (x) => 1 + 0.3 * x);
  if (window !== null) p.windowMix = 0.6;
  return { policy: adapterPolicy(a, 0), naive: { kind: 'adapter', params: p, ...(window !== null ? { window } : {}) } };
}

const plain = <P extends LayerPolicy & NaiveLayerPolicy>(p: P) => () => ({ policy: p as LayerPolicy, naive: p as NaiveLayerPolicy });
const POLICIES: Array<[string, () => { policy: LayerPolicy; naive: NaiveLayerPolicy }]> = [
  ['softmax (teacher)', plain({ kind: 'teacher' })],
  ['window 3', plain({ kind: 'window', window: 3 })],
  ['engine-v0.1.1', plain({ kind: 'engine' })],
  ['fixed', plain({ kind: 'fixed' })],
  ['adapter-v1', () => adapterOf(null)],
  ['adapter-window 4', () => adapterOf(4)],
];

/** The layer over positions [from, from + n) of h, continuing `state`. */
function decodeRows(policy: LayerPolicy, state: LayerState, from: number, n: number): Float32Array {
  return tf.tidy(() => {
    const x = tf.tensor2d(h.subarray(from * 24, (from + n) * 24), [n, 24]);
    const rope = ropeCosSin(c, Array.from({ length: n }, (_, i) => from + i));
    return policyLayer(x, layer, c, policy, { rope, chunkSize: 4, state }).dataSync() as Float32Array;
  });
}

describe('decoderLayer: one step for prefill, decoding and training', () => {
  for (const [name, make] of POLICIES) {
    it(`${name}: the whole-sequence step equals the float64 reference; decoding token by token and block-then-tokens gives the same`, () => {
      const { policy, naive } = make();
      const before = tf.memory().numTensors;
      try {
        const whole = tf.tidy(() => policyLayer(tf.tensor2d(h, [T, 24]), layer, c, policy, { chunkSize: 4 }).dataSync() as Float32Array);
        expect(relRms(whole, naiveDecoderLayer(h, lw, c, naive))).toBeLessThan(1e-5);

        const byToken = new Float32Array(T * 24);
        const s1 = new LayerState(c, policy);
        for (let t = 0; t < T; t++) byToken.set(decodeRows(policy, s1, t, 1), t * 24);
        expect(maxAbsDiff(byToken, whole)).toBeLessThan(2e-5);

        const blockThenTokens = new Float32Array(T * 24);
        const s2 = new LayerState(c, policy);
        blockThenTokens.set(decodeRows(policy, s2, 0, 5), 0);
        for (let t = 5; t < T; t++) blockThenTokens.set(decodeRows(policy, s2, t, 1), t * 24);
        expect(maxAbsDiff(blockThenTokens, whole)).toBeLessThan(2e-5);

        // Gated layers hold one D_q×D_q state; softmax ones none.
        const gated = policy.kind !== 'teacher' && policy.kind !== 'window';
        expect(s1.gateBytes).toBe(gated ? 32 * 32 * 4 : 0);
        s1.reset();
        s2.reset();
        expect(s1.gateBytes).toBe(0);
        expect(tf.memory().numTensors - before).toBe(0); // reset freed every cache and state
      } finally {
        disposePolicy(policy);
      }
    });
  }

  it('a softmax layer refuses a block of tokens after its cache holds some (the decoder feeds them one by one)', () => {
    const policy: LayerPolicy = { kind: 'teacher' };
    const state = new LayerState(c, policy);
    decodeRows(policy, state, 0, 2);
    expect(() => decodeRows(policy, state, 2, 3)).toThrow(/empty cache/);
    state.reset();
  });
});
