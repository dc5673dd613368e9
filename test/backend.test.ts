/**
 * `--backend`: which engine runs forward passes (native ONNX Runtime or tfjs), what the reports
 * record, and the one-line refusal of native-cuda where ONNX Runtime's CUDA provider is missing.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backendInfo, forwardEngine, initBackend, nativeForward } from '../src/runtime/backend.ts';

const require = createRequire(import.meta.url);
const ortBin = path.join(path.dirname(require.resolve('onnxruntime-node/package.json')), 'bin', 'napi-v6', process.platform, process.arch);
const hasCudaProvider = fs.existsSync(path.join(ortBin, 'libonnxruntime_providers_cuda.so'));

describe('backend choice', () => {
  it('native: forward passes and MSE training on ONNX Runtime, KL training on tfjs; wasm: tfjs throughout', async () => {
    await initBackend('native');
    expect(nativeForward()).toBe(true);
    expect(forwardEngine()).toEqual({ kind: 'native', provider: 'cpu' });
    expect(backendInfo().backend).toBe('native');
    expect(backendInfo().detail).toMatch(/^onnxruntime-node \d+\.\d+\.\d+ \(CPU, \d+ threads\); MSE training native, KL training on /);
    await initBackend('wasm');
    expect(nativeForward()).toBe(false);
    expect(backendInfo().backend).toBe('wasm');
    await initBackend('auto');
    expect(backendInfo().backend).toBe('native');
  });

  it.skipIf(hasCudaProvider)('native-cuda without the CUDA provider is refused up front in one line naming the install command', async () => {
    await expect(initBackend('native-cuda')).rejects.toThrow(/CUDA provider is not installed .*ONNXRUNTIME_NODE_INSTALL=cuda12/);
  });

  it('an unknown backend is refused with the choices', async () => {
    await expect(initBackend('metal' as never)).rejects.toThrow(/unknown --backend 'metal' \(choose from auto, native, native-cuda/);
  });
});
