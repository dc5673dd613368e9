/**
 * Model shapes for per-layer benchmarks without files: the exact dimensions of the fixture shapes
 * (Magnus = Mistral-7B v0.3, Llama-3.2-1B) and a small one for quick runs, with random weights
 * uploaded straight to the backend in the [in, out] orientation `linear` expects. Per-layer cost
 * depends on the shapes only, so random weights time the same as real ones.
 */
import * as tf from '@tensorflow/tfjs-core';
import { type LayerTensors } from '../core/nn.ts';
import { pseudoRandom } from '../core/workerTasks.ts';
import { parseHfConfig, qDim, kvDim, type ModelConfig } from '../formats/config.ts';
import { fixtureConfig } from '../formats/fixture.ts';

export type BenchShape = 'magnus' | 'llama-1b' | 'small';

export function benchConfig(shape: BenchShape): ModelConfig {
  if (shape === 'small') {
    return parseHfConfig(
      {
        architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 512, intermediate_size: 1536, num_hidden_layers: 8,
        num_attention_heads: 8, num_key_value_heads: 2, head_dim: 64, vocab_size: 4096, max_position_embeddings: 4096,
        rope_theta: 10000.0, rms_norm_eps: 1e-5, tie_word_embeddings: true,
      },
      'bench:small',
    );
  }
  return parseHfConfig(fixtureConfig(shape), `bench:${shape}`);
}

/** Parameters of one decoder layer's matrices. */
export function layerParams(c: ModelConfig): number {
  const D = c.hiddenSize;
  return D * (2 * qDim(c) + 2 * kvDim(c) + 3 * c.intermediateSize);
}

/** [rows, cols] uniform in ±scale·√3 (std `scale`), deterministic. */
function randomMatrix(rows: number, cols: number, std: number, seed: number): tf.Tensor2D {
  const data = pseudoRandom(rows * cols, seed);
  const a = std * Math.sqrt(3);
  for (let i = 0; i < data.length; i++) data[i]! *= a;
  return tf.tensor2d(data, [rows, cols]);
}

function nearOnes(n: number, seed: number): tf.Tensor1D {
  const d = pseudoRandom(n, seed);
  for (let i = 0; i < n; i++) d[i] = 1 + 0.05 * d[i]!;
  return tf.tensor1d(d);
}

/** One layer of random weights on the backend (LinearWeights are [in, out]). Dispose with disposeLayer. */
export function randomLayer(c: ModelConfig, seed = 1): LayerTensors {
  const D = c.hiddenSize;
  const I = c.intermediateSize;
  const inStd = 1 / Math.sqrt(D);
  return {
    inputNorm: nearOnes(D, seed),
    q: randomMatrix(D, qDim(c), 2 * inStd, seed + 1),
    k: randomMatrix(D, kvDim(c), 2 * inStd, seed + 2),
    v: randomMatrix(D, kvDim(c), inStd, seed + 3),
    o: randomMatrix(qDim(c), D, 1 / Math.sqrt(qDim(c)), seed + 4),
    qBias: null,
    kBias: null,
    vBias: null,
    postNorm: nearOnes(D, seed + 5),
    gate: randomMatrix(D, I, inStd, seed + 6),
    up: randomMatrix(D, I, inStd, seed + 7),
    down: randomMatrix(I, D, 1 / Math.sqrt(I), seed + 8),
  };
}

/** A layer input h [T, hidden] of unit-scale random values. */
export function randomHidden(T: number, D: number, seed = 11): tf.Tensor2D {
  return tf.tensor2d(pseudoRandom(T * D, seed), [T, D]);
}
