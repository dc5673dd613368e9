/**
 * src/runtime/wasmFixes.ts is scoped: apply returns restore, which puts back exactly the kernel and
 * gradient registrations that were there (the same objects), nesting-safe; while applied, the
 * zero-copy Identity shares its input's data and the weight-left matmul gradient gives the stock
 * gradient's values.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/runtime/backend.ts';
import { applyWasmMemoryFixes, wasmMemoryFixesApplied } from '../src/runtime/wasmFixes.ts';
import { randoms, relRms } from './helpers/numeric.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

const registrations = () => ({ identity: tf.getKernel('Identity', 'wasm'), gradient: tf.getGradient('BatchMatMul') });

/** Whether tf.clone (the Identity kernel) shares the input's data instead of copying it. */
function cloneShares(): boolean {
  const x = tf.tensor1d([1, 2, 3]);
  const y = tf.clone(x);
  const shared = y.dataId === x.dataId;
  expect(Array.from(y.dataSync())).toEqual([1, 2, 3]);
  x.dispose();
  expect(Array.from(y.dataSync())).toEqual([1, 2, 3]); // still readable after its source is gone
  y.dispose();
  return shared;
}

/** d/dA and d/dB of Σ W ⊙ op(A)·op(B) for every transpose combination, flattened. */
function matMulGrads(): Float32Array[] {
  const [m, k, n] = [5, 7, 3];
  const out: Float32Array[] = [];
  for (const ta of [false, true]) {
    for (const tb of [false, true]) {
      tf.tidy(() => {
        const a = tf.tensor2d(randoms(m * k, 1), ta ? [k, m] : [m, k]);
        const b = tf.tensor2d(randoms(k * n, 2), tb ? [n, k] : [k, n]);
        const w = tf.tensor2d(randoms(m * n, 3), [m, n]);
        const gs = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y, ta, tb), w)))([a, b]);
        gs.forEach((g) => out.push(g.dataSync() as Float32Array));
      });
    }
  }
  return out;
}

describe('wasm memory fixes: apply and restore', () => {
  it('restore puts back the very registrations that were there', () => {
    const stock = registrations();
    expect(stock.identity).toBeDefined();
    expect(stock.gradient).toBeDefined();
    expect(cloneShares()).toBe(false);
    const stockGrads = matMulGrads();

    const restore = applyWasmMemoryFixes();
    expect(wasmMemoryFixesApplied()).toBe(true);
    const patched = registrations();
    expect(patched.identity).not.toBe(stock.identity);
    expect(patched.gradient).not.toBe(stock.gradient);
    expect(cloneShares()).toBe(true);
    // same products, other operand order: the same gradients up to summation order
    matMulGrads().forEach((g, i) => expect(relRms(g, stockGrads[i]!)).toBeLessThan(1e-6));

    restore();
    expect(wasmMemoryFixesApplied()).toBe(false);
    const after = registrations();
    expect(after.identity).toBe(stock.identity);
    expect(after.gradient).toBe(stock.gradient);
    expect(cloneShares()).toBe(false);
    matMulGrads().forEach((g, i) => expect(Array.from(g)).toEqual(Array.from(stockGrads[i]!)));
  });

  it('nests: the fixes stay until the last apply is restored; a second restore does nothing', () => {
    const stock = registrations();
    const outer = applyWasmMemoryFixes();
    const patched = registrations();
    const inner = applyWasmMemoryFixes();
    expect(registrations()).toEqual(patched); // not installed twice
    inner();
    inner();
    expect(wasmMemoryFixesApplied()).toBe(true);
    expect(registrations().identity).toBe(patched.identity);
    expect(cloneShares()).toBe(true);
    outer();
    expect(registrations().identity).toBe(stock.identity);
    expect(registrations().gradient).toBe(stock.gradient);
    outer();
    expect(registrations().identity).toBe(stock.identity);
    // and it can be applied again afterwards
    const again = applyWasmMemoryFixes();
    expect(cloneShares()).toBe(true);
    again();
    expect(cloneShares()).toBe(false);
  });

  it('a tensor cloned while the fixes were on outlives the restore', () => {
    const x = tf.tensor1d([4, 5]);
    const restore = applyWasmMemoryFixes();
    const y = tf.clone(x);
    restore();
    x.dispose();
    expect(Array.from(y.dataSync())).toEqual([4, 5]);
    y.dispose();
  });
});
