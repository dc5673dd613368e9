/**
 * Compute backend selection. tfjs-core + tfjs-backend-wasm is the default that works everywhere;
 * tfjs-node-gpu / tfjs-node are optional dependencies (their install downloads libtensorflow and is
 * skipped where that fails). `auto` picks the best backend that loads. Every command records the
 * backend that ran (see `backendInfo`).
 */
import * as tf from '@tensorflow/tfjs-core';
import { createRequire } from 'node:module';
import { fail } from './errors.ts';

export const BACKEND_CHOICES = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

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

/** Initialise the chosen backend (idempotent). Returns the tfjs backend name that runs. */
export async function initBackend(choice: BackendChoice = 'auto'): Promise<string> {
  if (active && (active.choice === choice || choice === 'auto')) return active.name;
  if (!BACKEND_CHOICES.includes(choice)) fail(null, `unknown --backend '${choice}' (choose from ${BACKEND_CHOICES.join(', ')})`);
  const order: BackendChoice[] = choice === 'auto' ? ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] : [choice];
  if (process.env.SYNAXIM_BACKEND && choice === 'auto') order.unshift(process.env.SYNAXIM_BACKEND as BackendChoice);
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

/** What ran, for logs and reports. */
export function backendInfo(): { backend: string; detail: string; tfjs: string } {
  return { backend: active?.name ?? tf.getBackend(), detail: active?.detail ?? '', tfjs: tf.version_core };
}
