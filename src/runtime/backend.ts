/**
 * Compute backend selection: what runs the forward passes, and what trains.
 *
 * - `auto` / `native`: forward passes (teacher, student, every eval configuration, decoding) on the
 *   native engine (src/native: ONNX Runtime, onnxruntime-node's CPU library, all cores); adapter
 *   training (gradients) on the best tfjs backend that loads. `native-cuda`: the same with ONNX
 *   Runtime's CUDA execution provider (needs its CUDA 12 binaries, see the README).
 * - `wasm`, `cpu`, `tensorflow`, `tensorflow-gpu`: tfjs for everything — the slow, exact
 *   references (tfjs-node/-gpu are optional dependencies whose install downloads libtensorflow).
 * Every command records the backend that ran (see `backendInfo`).
 */
import * as tf from '@tensorflow/tfjs-core';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ModelConfig } from '../formats/config.ts';
import { fail } from '../util/errors.ts';
import { ort, ortThreads, setOrtProvider, type OrtProvider } from './ort/session.ts';

export const BACKEND_CHOICES = ['auto', 'native', 'native-cuda', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
type TfjsChoice = Exclude<BackendChoice, 'native' | 'native-cuda'>;

/** What runs forward passes: the native engine (ONNX Runtime, with its execution provider) or tfjs. */
export type ForwardEngine = { kind: 'native'; provider: OrtProvider } | { kind: 'tfjs' };
let forward: ForwardEngine = { kind: 'tfjs' };

/** The engine forward passes run on (set by initBackend; tfjs until then). */
export function forwardEngine(): ForwardEngine {
  return forward;
}

/** Whether forward passes run on the native engine. */
export function nativeForward(): boolean {
  return forward.kind === 'native';
}

/**
 * How the native engine multiplies activations by INT4 weights (com.microsoft MatMulNBits):
 * `float32` (default) multiplies float32 activations by the dequantized weights; `int8` quantizes
 * the activations to int8 per block first (accuracy_level 4, as llama.cpp does for Q4 weights).
 * int8 reads the weights from memory ~2× faster on CPU but moves products by ~3e-3 relative RMS —
 * outside the engine goldens — so it is an explicit opt-in, never the default. Float32-bound
 * matrices (every non-INT4 model) are unaffected.
 */
export const INT4_ACTIVATION_CHOICES = ['float32', 'int8'] as const;
export type Int4Activations = (typeof INT4_ACTIVATION_CHOICES)[number];
let int4Acts: Int4Activations = 'float32';

/** The INT4 activation mode that graphs built from now on use (read by src/native/linear.ts). */
export function int4Activations(): Int4Activations {
  return int4Acts;
}

/** Set the INT4 activation mode for graphs built from now on (initBackend checks it against the engine). */
export function setInt4Activations(mode: Int4Activations): void {
  if (!INT4_ACTIVATION_CHOICES.includes(mode)) fail(null, `unknown --int4-activations '${mode}' (choose from ${INT4_ACTIVATION_CHOICES.join(', ')})`);
  int4Acts = mode;
}


const require = createRequire(import.meta.url);
let active: { choice: BackendChoice; name: string; detail: string } | null = null;

async function tryNative(pkg: string): Promise<boolean> {
  try {
    // The native packages register the 'tensorflow' backend on the shared tfjs-core engine.
    require(pkg);
    return tf.findBackendFactory('tensorflow') != null;
  } catch {
    return false;
  }
}

async function tryWasm(): Promise<boolean> {
  await import('@tensorflow/tfjs-backend-wasm');
  return tf.findBackendFactory('wasm') != null;
}

async function activate(name: string): Promise<boolean> {
  try {
    const ok = await tf.setBackend(name);
    await tf.ready();
    return ok && tf.getBackend() === name;
  } catch {
    return false;
  }
}

/**
 * Initialise the chosen backend (idempotent). Returns the tfjs backend name that runs.
 * `int4Activations`, when given, sets that mode (see int4Activations); int8 needs the native engine.
 */
export async function initBackend(requested: BackendChoice = 'auto', opts: { int4Activations?: Int4Activations } = {}): Promise<string> {
  if (!BACKEND_CHOICES.includes(requested)) fail(null, `unknown --backend '${requested}' (choose from ${BACKEND_CHOICES.join(', ')})`);
  const fromEnv = process.env.SYNAXIM_BACKEND as BackendChoice | undefined;
  const choice = requested === 'auto' && fromEnv && BACKEND_CHOICES.includes(fromEnv) ? fromEnv : requested;
  const wantsNative = choice === 'auto' || choice === 'native' || choice === 'native-cuda';
  const acts = opts.int4Activations ?? int4Acts;
  if (acts === 'int8' && !wantsNative) {
    // tfjs has no int8-activation product: refuse rather than silently run float32.
    fail(null, `--int4-activations int8 needs the native engine (--backend auto, native or native-cuda); backend '${choice}' runs tfjs, which multiplies in float32 only`);
  }
  if (opts.int4Activations) setInt4Activations(opts.int4Activations);
  const provider: OrtProvider = choice === 'native-cuda' ? 'cuda' : 'cpu';
  if (wantsNative && !(forward.kind === 'native' && forward.provider === provider)) {
    // onnxruntime-node is a dependency (its CPU library ships in the npm package), loaded with the engine.
    if (provider === 'cuda') requireCudaProvider();
    setOrtProvider(provider);
    forward = { kind: 'native', provider };
    const version = ort.env.versions.node ?? ort.env.versions.common;
    nativeDetail = `onnxruntime-node ${version} (${provider === 'cuda' ? 'CUDA execution provider' : `CPU, ${ortThreads()} threads`})`;
  } else if (!wantsNative) {
    forward = { kind: 'tfjs' };
  }
  return initTfjs(wantsNative ? 'auto' : (choice as TfjsChoice));
}

let nativeDetail = '';

/**
 * `native-cuda` needs ONNX Runtime's CUDA provider library beside its CPU library; onnxruntime-node
 * does not install it by default (and this project's .npmrc skips that download). Say so up front.
 */
function requireCudaProvider(): void {
  const ortDir = path.dirname(require.resolve('onnxruntime-node/package.json'));
  const binDir = path.join(ortDir, 'bin', 'napi-v6', process.platform, process.arch);
  if (!fs.existsSync(path.join(binDir, 'libonnxruntime_providers_cuda.so'))) {
    fail(
      null,
      `backend 'native-cuda': ONNX Runtime's CUDA provider is not installed (no libonnxruntime_providers_cuda.so in ${binDir}); ` +
        'on a machine with CUDA 12 and cuDNN 9 run: ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js',
    );
  }
}

/** The tfjs backend (training, and every forward pass under a tfjs choice). */
async function initTfjs(choice: TfjsChoice): Promise<string> {
  if (active && (active.choice === choice || choice === 'auto')) return active.name;
  const order: TfjsChoice[] = choice === 'auto' ? ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] : [choice];
  for (const c of order) {
    let ok = false;
    let detail = '';
    if (c === 'tensorflow-gpu') {
      ok = (await tryNative('@tensorflow/tfjs-node-gpu')) && (await activate('tensorflow'));
      detail = '@tensorflow/tfjs-node-gpu (CUDA)';
    } else if (c === 'tensorflow') {
      ok = (await tryNative('@tensorflow/tfjs-node')) && (await activate('tensorflow'));
      detail = '@tensorflow/tfjs-node (CPU, libtensorflow)';
    } else if (c === 'wasm') {
      ok = (await tryWasm()) && (await activate('wasm'));
      detail = '@tensorflow/tfjs-backend-wasm (SIMD, single-threaded)';
    } else if (c === 'cpu') {
      await import('@tensorflow/tfjs-backend-cpu');
      ok = await activate('cpu');
      detail = '@tensorflow/tfjs-backend-cpu (plain JS)';
    }
    if (ok) {
      active = { choice: c, name: c, detail };
      return c;
    }
    if (choice !== 'auto') {
      fail(null, `backend '${c}' could not be loaded (${detail || c}); is the package installed? Try --backend auto`);
    }
  }
  return fail(null, 'no tfjs backend could be loaded');
}

/** What ran, for logs and reports: `native` (and the tfjs backend for what trains on tfjs) or the tfjs backend. */
export function backendInfo(): { backend: string; detail: string; tfjs: string } {
  const tfjsName = active?.name ?? tf.getBackend();
  const tfjsDetail = active?.detail ?? '';
  if (forward.kind === 'native') {
    const acts = int4Acts === 'int8' ? '; INT4 × int8 activations (MatMulNBits accuracy_level 4)' : '';
    return { backend: forward.provider === 'cuda' ? 'native-cuda' : 'native', detail: `${nativeDetail}; MSE training native, KL training on ${tfjsDetail || tfjsName}${acts}`, tfjs: tf.version_core };
  }
  return { backend: tfjsName, detail: tfjsDetail, tfjs: tf.version_core };
}

/** The wasm backend is 32-bit WebAssembly: its heap can never exceed 4 GiB. */
export const WASM_HEAP_BYTES = 4 * 1024 ** 3;
/** Room kept on the backend for activations, rope tables and the runtime itself. */
const WORKING_BYTES = 256 * 1024 ** 2;

/** What the active backend can hold: the wasm heap limit, or the machine's memory for the others. */
export function backendMemoryLimit(): { bytes: number; what: string } {
  const name = active?.name ?? tf.getBackend();
  if (name === 'wasm') return { bytes: WASM_HEAP_BYTES, what: 'the wasm backend can address (a 4 GiB heap)' };
  return { bytes: os.totalmem(), what: `this machine has (backend ${name})` };
}

/** Float32 bytes of one decoder layer's weights, and of its largest matrix. */
export function layerWeightBytes(c: ModelConfig): { layer: number; largestMatrix: number } {
  const D = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const I = c.intermediateSize;
  const elements = q * D + 2 * kv * D + D * q + 3 * I * D + 2 * D + (c.attentionBias ? q + 2 * kv : 0);
  return { layer: 4 * elements, largestMatrix: 4 * Math.max(q * D, kv * D, I * D) };
}

function gib(n: number): string {
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

/**
 * Refuse up front, in one line naming the model's config file, a model whose weights cannot be on
 * the backend: `streamed` (prefill) holds one layer at a time; `resident` (the decoders) holds
 * every layer and the lm_head. Plus one packed copy of the largest matrix (XNNPACK packs a
 * matmul's right operand) and working room. Without this, a very wide model streams for minutes
 * and dies inside wasm with "memory access out of bounds".
 */
export function requireModelFitsBackend(c: ModelConfig, configFile: string, mode: 'streamed' | 'resident'): void {
  const { layer, largestMatrix } = layerWeightBytes(c);
  const weights = mode === 'streamed' ? layer : c.numLayers * layer + 4 * c.vocabSize * c.hiddenSize;
  const need = weights + largestMatrix + WORKING_BYTES;
  const { bytes, what } = backendMemoryLimit();
  if (need > bytes) {
    fail(
      configFile,
      `too big for this backend: ${mode === 'streamed' ? 'one layer needs' : `its ${c.numLayers} layers and lm_head, all resident, need`} ${gib(need)} ` +
        `(hidden_size ${c.hiddenSize}, intermediate_size ${c.intermediateSize}, float32 weights and working room), more than the ${gib(bytes)} ${what}`,
    );
  }
}
