/**
 * The demo's model: the `tiny` shape (hidden 64, 4 layers, 8/4 heads, vocab 320, byte-level
 * tokenizer), trained for a few seconds on the built-in stories with tfjs autodiff so that it has
 * real structure. On a random model the adapter chain has nothing to recover — perplexities are
 * all near the vocabulary size — and its numbers mean nothing; on this one the teacher predicts the
 * stories well, the unadapted gate loses much of that, and an adapter can be seen to win some back
 * (or not).
 *
 * The forward pass is the teacher's decoder layer (src/teacher) with the same nn.ts blocks (RMSNorm,
 * rotate-half RoPE, GQA, SwiGLU), on tf.variables; attention runs a batch packed end to end under a
 * block-diagonal causal mask (the same function as one sequence at a time, in fewer ops). A test
 * checks that the trained model's own loss agrees with `synaxim eval`'s teacher perplexity. The result is written
 * as an HF checkpoint (`hf/`, F32) and its INT4 `.symb` conversion (`symb-int4/`, group 32), like
 * `synaxim fixture --shape tiny`.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '../runtime/gradients.ts';
import { writeJsonAtomic } from '../util/atomic.ts';
import { type Corpus } from '../data/corpus.ts';
import { mulberry32 } from '../util/random.ts';
import { applyRope, linear, rmsNorm, ropeCosSin, transposeHost, uploadLayer, type LayerTensors } from '../model/nn.ts';
import { parseHfConfig, type ModelConfig } from '../formats/config.ts';
import { convertHfToSymb } from '../formats/convert.ts';
import { byteTokenizerJson, fixtureConfig, TOKENIZER_CONFIG } from '../formats/fixture.ts';
import { writeSafetensors, type StTensorToWrite } from '../formats/safetensors.ts';
import { loadTokenizer } from '../formats/tokenizer.ts';
import type { ModelWeights } from '../formats/weights.ts';
import { decoderLayer } from '../teacher/teacher.ts';

export interface TrainTinyOptions {
  /** Optimizer steps (Adam). */
  steps: number;
  /** Sequences per step. */
  batch: number;
  /** Tokens per sequence, BOS included. */
  seqLen: number;
  lr: number;
  seed: number;
  log?: (line: string) => void;
}

export const DEFAULT_TRAIN_TINY: TrainTinyOptions = { steps: 120, batch: 6, seqLen: 64, lr: 4e-3, seed: 0 };

export interface TrainTinyResult {
  hfDir: string;
  symbDir: string;
  /** Mean training loss (nats/token) over the first and the last 10 steps. */
  lossFirst: number;
  lossLast: number;
  steps: number;
  seconds: number;
}

/** What the training forward reads: matrices as LinearWeights ([in, out], see src/model/nn.ts), as the teacher's functions want them. */
interface ForwardParams {
  embed: tf.Tensor2D; // [V, D]
  finalNorm: tf.Tensor1D;
  layers: LayerTensors[];
}

/** The trainable parameters. */
interface Params extends ForwardParams {
  embed: tf.Variable<tf.Rank.R2>; // [V, D]
  finalNorm: tf.Variable<tf.Rank.R1>; // [D]
  layers: (LayerTensors & Record<'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down', tf.Variable<tf.Rank.R2>> & Record<'inputNorm' | 'postNorm', tf.Variable<tf.Rank.R1>>)[];
}

function uniform(rand: () => number, n: number, std: number): Float32Array {
  const a = std * Math.sqrt(3);
  return Float32Array.from({ length: n }, () => (2 * rand() - 1) * a);
}

function initParams(cfg: Record<string, unknown>, seed: number): Params {
  const D = cfg.hidden_size as number;
  const H = cfg.num_attention_heads as number;
  const KV = cfg.num_key_value_heads as number;
  const hd = cfg.head_dim as number;
  const F = cfg.intermediate_size as number;
  const V = cfg.vocab_size as number;
  const L = cfg.num_hidden_layers as number;
  const rand = mulberry32(seed + 1);
  const m = (rows: number, cols: number, std: number) => tf.variable(tf.tensor2d(uniform(rand, rows * cols, std), [rows, cols]));
  const ones = (n: number) => tf.variable(tf.ones([n]) as tf.Tensor1D);
  return {
    embed: tf.variable(tf.tensor2d(uniform(rand, V * D, 0.5 / Math.sqrt(D)), [V, D])),
    finalNorm: ones(D),
    layers: Array.from({ length: L }, () => ({
      inputNorm: ones(D),
      q: m(D, H * hd, 1 / Math.sqrt(D)),
      k: m(D, KV * hd, 1 / Math.sqrt(D)),
      v: m(D, KV * hd, 1 / Math.sqrt(D)),
      o: m(H * hd, D, 0.5 / Math.sqrt(H * hd)),
      qBias: null,
      kBias: null,
      vBias: null,
      postNorm: ones(D),
      gate: m(D, F, 1 / Math.sqrt(D)),
      up: m(D, F, 1 / Math.sqrt(D)),
      down: m(F, D, 0.5 / Math.sqrt(F)),
    })),
  };
}

function allVariables(p: Params): tf.Variable[] {
  return [p.embed, p.finalNorm, ...p.layers.flatMap((l) => [l.inputNorm, l.q, l.k, l.v, l.o, l.postNorm, l.gate, l.up, l.down])];
}

/** Training windows: BOS + the start of each story (what eval and distill read), and BOS + a window at a random offset. */
function trainingWindows(docs: number[][], bos: number, seqLen: number, rand: () => number): number[][] {
  const out: number[][] = [];
  for (const ids of docs) {
    if (ids.length >= seqLen - 1) out.push([bos, ...ids.slice(0, seqLen - 1)]);
    if (ids.length >= 2 * seqLen) {
      const o = 1 + Math.floor(rand() * (ids.length - seqLen));
      out.push([bos, ...ids.slice(o, o + seqLen - 1)]);
    }
  }
  return out;
}

/**
 * Causal softmax attention over a batch of sequences laid end to end ([N = B·T rows]): a
 * block-diagonal causal mask keeps each sequence to itself, so this equals the teacher's
 * causalAttention run on each sequence alone, in a few large ops instead of many small ones.
 */
function packedAttention(x: tf.Tensor2D, layer: LayerTensors, cfg: ModelConfig, cos: tf.Tensor2D, sin: tf.Tensor2D, mask: tf.Tensor2D): tf.Tensor2D {
  const { numHeads: H, numKvHeads: KV, headDim: hd } = cfg;
  const rep = H / KV;
  // 2-D products per head: tfjs-wasm runs only untransposed batch-1 matmuls on XNNPACK
  const q = tf.split(applyRope(tf.mul(linear(x, layer.q), 1 / Math.sqrt(hd)) as tf.Tensor2D, H, hd, cos, sin), H, 1) as tf.Tensor2D[];
  const kT = (tf.split(applyRope(linear(x, layer.k), KV, hd, cos, sin), KV, 1) as tf.Tensor2D[]).map((k) => tf.transpose(k));
  const v = tf.split(linear(x, layer.v), KV, 1) as tf.Tensor2D[];
  const heads = q.map((qh, h) => tf.matMul(tf.softmax(tf.add(tf.matMul(qh, kT[Math.floor(h / rep)]!), mask)), v[Math.floor(h / rep)]!));
  return linear(tf.concat(heads, 1) as tf.Tensor2D, layer.o);
}

/** Block-diagonal causal mask for `B` sequences of `T` rows: 0 where row i may see row j, else −1e9. */
function packedMask(B: number, T: number): tf.Tensor2D {
  const N = B * T;
  const m = new Float32Array(N * N).fill(-1e9);
  for (let b = 0; b < B; b++) for (let i = 0; i < T; i++) m.fill(0, (b * T + i) * N + b * T, (b * T + i) * N + b * T + i + 1);
  return tf.tensor2d(m, [N, N]);
}

/** Mean next-token cross-entropy of one batch (equal-length sequences), through the teacher's decoder layer. */
function batchLoss(p: ForwardParams, cfg: ModelConfig, batch: number[][], rope: { cos: tf.Tensor2D; sin: tf.Tensor2D; mask: tf.Tensor2D }): tf.Scalar {
  const inputs = batch.flatMap((ids) => ids.slice(0, -1));
  const targets = batch.flatMap((ids) => ids.slice(1));
  // one-hot · E rather than gather: gather's gradient (UnsortedSegmentSum) has no wasm kernel
  let h = tf.matMul(tf.cast(tf.oneHot(tf.tensor1d(inputs, 'int32'), cfg.vocabSize), 'float32'), p.embed) as tf.Tensor2D;
  for (const layer of p.layers) h = decoderLayer(h, layer, cfg.rmsNormEps, (x) => packedAttention(x, layer, cfg, rope.cos, rope.sin, rope.mask));
  const logits = tf.matMul(rmsNorm(h, p.finalNorm, cfg.rmsNormEps), tf.transpose(p.embed));
  const target = tf.oneHot(tf.tensor1d(targets, 'int32'), cfg.vocabSize);
  return tf.neg(tf.mean(tf.sum(tf.mul(tf.logSoftmax(logits), target), -1))) as tf.Scalar;
}

/**
 * The training forward's mean loss over equal-length sequences of a written checkpoint — for the
 * test that holds it to the teacher's own forward pass (the packed attention must equal it).
 */
export function trainingLossOf(weights: ModelWeights, batch: number[][]): number {
  const c = weights.config;
  const T = batch[0]!.length - 1;
  return tf.tidy(() => {
    const lm = weights.lmHeadRows(0, c.vocabSize);
    const p: ForwardParams = {
      embed: tf.tensor2d(lm.data, [lm.rows, lm.cols]),
      finalNorm: tf.tensor1d(weights.finalNorm()),
      layers: Array.from({ length: c.numLayers }, (_, l) => uploadLayer(weights.layer(l))),
    };
    const { cos, sin } = ropeCosSin(c, Array.from({ length: batch.length * T }, (_, i) => i % T));
    return batchLoss(p, c, batch, { cos, sin, mask: packedMask(batch.length, T) }).dataSync()[0]!;
  });
}

/** Host copy of a LinearWeight [in, out] in PyTorch orientation [out, in]. */
function toTorch(v: tf.Variable): StTensorToWrite {
  const [rows, cols] = v.shape as [number, number];
  return { dtype: 'F32', shape: [cols, rows], data: transposeHost(v.dataSync() as Float32Array, rows, cols) };
}

/**
 * Train the tiny model on `corpus` and write `<dir>/hf` and `<dir>/symb-int4`. Deterministic for a
 * seed on one backend.
 */
export async function trainTinyModel(dir: string, corpus: Corpus, o: TrainTinyOptions = DEFAULT_TRAIN_TINY): Promise<TrainTinyResult> {
  const log = o.log ?? (() => {});
  const t0 = performance.now();
  const cfgJson = fixtureConfig('tiny');
  const hfDir = path.join(dir, 'hf');
  const symbDir = path.join(dir, 'symb-int4');
  fs.mkdirSync(hfDir, { recursive: true });
  writeJsonAtomic(path.join(hfDir, 'config.json'), cfgJson);
  writeJsonAtomic(path.join(hfDir, 'tokenizer.json'), byteTokenizerJson(cfgJson.vocab_size as number));
  writeJsonAtomic(path.join(hfDir, 'tokenizer_config.json'), TOKENIZER_CONFIG);
  const cfg = parseHfConfig(cfgJson as never, path.join(hfDir, 'config.json'));
  const tokenizer = await loadTokenizer(hfDir, { bosTokenId: cfg.bosTokenId, eosTokenIds: cfg.eosTokenIds, modelVocabSize: cfg.vocabSize });
  const rand = mulberry32(o.seed + 7);
  const docs = corpus.documents.map((d) => tokenizer.encode(d, { addBos: false }));
  const windows = trainingWindows(docs, tokenizer.bosId ?? cfg.bosTokenId ?? 1, o.seqLen, rand);
  if (windows.length === 0) throw new Error(`trainTinyModel: no document of ${o.seqLen} tokens in ${corpus.source}`);

  const params = initParams(cfgJson, o.seed);
  const vars = allVariables(params);
  const optimizer = tf.train.adam(o.lr);
  // positions 0..T−2 of every sequence of a batch, laid end to end
  const { cos, sin } = ropeCosSin(cfg, Array.from({ length: o.batch * (o.seqLen - 1) }, (_, i) => i % (o.seqLen - 1)));
  const mask = packedMask(o.batch, o.seqLen - 1);
  const losses: number[] = [];
  try {
    let order: number[] = [];
    for (let step = 0; step < o.steps; step++) {
      if (order.length < o.batch) order = [...order, ...shuffled(windows.length, rand)];
      const batch = order.splice(0, o.batch).map((i) => windows[i]!);
      const loss = optimizer.minimize(() => batchLoss(params, cfg, batch, { cos, sin, mask }), true, vars);
      losses.push(loss!.dataSync()[0]!);
      loss!.dispose();
      if ((step + 1) % 25 === 0 || step === 0) log(`training the demo model: step ${step + 1}/${o.steps}, loss ${losses.at(-1)!.toFixed(3)} nats/token`);
    }
    const tensors: Record<string, StTensorToWrite> = {
      'model.embed_tokens.weight': { dtype: 'F32', shape: params.embed.shape, data: params.embed.dataSync() as Float32Array },
      'model.norm.weight': { dtype: 'F32', shape: params.finalNorm.shape, data: params.finalNorm.dataSync() as Float32Array },
    };
    params.layers.forEach((l, i) => {
      const pre = `model.layers.${i}.`;
      tensors[pre + 'input_layernorm.weight'] = { dtype: 'F32', shape: l.inputNorm.shape, data: l.inputNorm.dataSync() as Float32Array };
      tensors[pre + 'post_attention_layernorm.weight'] = { dtype: 'F32', shape: l.postNorm.shape, data: l.postNorm.dataSync() as Float32Array };
      tensors[pre + 'self_attn.q_proj.weight'] = toTorch(l.q);
      tensors[pre + 'self_attn.k_proj.weight'] = toTorch(l.k);
      tensors[pre + 'self_attn.v_proj.weight'] = toTorch(l.v);
      tensors[pre + 'self_attn.o_proj.weight'] = toTorch(l.o);
      tensors[pre + 'mlp.gate_proj.weight'] = toTorch(l.gate);
      tensors[pre + 'mlp.up_proj.weight'] = toTorch(l.up);
      tensors[pre + 'mlp.down_proj.weight'] = toTorch(l.down);
    });
    writeSafetensors(path.join(hfDir, 'model.safetensors'), tensors, { format: 'pt' });
  } finally {
    cos.dispose();
    sin.dispose();
    mask.dispose();
    optimizer.dispose();
    for (const v of vars) v.dispose();
  }
  fs.rmSync(symbDir, { recursive: true, force: true });
  await convertHfToSymb(hfDir, symbDir, { quantize: 'int4', groupSize: 32 });
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  return { hfDir, symbDir, lossFirst: mean(losses.slice(0, 10)), lossLast: mean(losses.slice(-10)), steps: o.steps, seconds: (performance.now() - t0) / 1000 };
}

function shuffled(n: number, rand: () => number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}
