/**
 * Two fixes for training big layers on tfjs-backend-wasm (found with the Magnus-shaped distill
 * run; measured by the bench's `distillheap` rows). Training applies them for as long as it trains
 * (`runDistill`, the distill layer workers) and restores the stock registrations afterwards; eval
 * takes no gradients and runs without them:
 *
 * 1. `Identity` on wasm COPIES its input (tfjs-backend-wasm 4.22 kernels/Identity: makeOutput +
 *    set), and tfjs clones (Identity) every tensor a kernel saves for backprop. A matmul saves
 *    both operands, so every `linear` on the tape cloned its weight matrix: 872 MB per sequence
 *    for one Magnus layer, so a distill step of 7 sequences asked the 4 GiB wasm heap for ~6 GB
 *    and crashed (malloc returns 0 → "memory access out of bounds"). Tensors are immutable, so
 *    the clone can share the data under a reference count, as tfjs-backend-cpu's Identity does.
 *
 * 2. The input gradient of x·W is dY·Wᵀ. On wasm only plain 2-D products run on XNNPACK, so
 *    gradients.ts materialised Wᵀ (a second copy of a 235 MB matrix, per use) — and XNNPACK then
 *    packs its right operand, a third copy. (W·dYᵀ)ᵀ is the same product with W as the LEFT
 *    operand (never packed, never transposed) and only the small dY / result transposed.
 *
 * Both are exact (same arithmetic up to summation order inside the matmul kernel).
 */
import * as tf from '@tensorflow/tfjs-core';
// The registrations the fixes replace must exist before they are saved, whatever the importer loaded
// first: the wasm backend's stock kernels (registered when its module loads, not when it is chosen)
// and gradients.ts's BatchMatMul gradient (registered by its top-level await).
import '@tensorflow/tfjs-backend-wasm';
import './gradients.ts';

/** What the fixes replaced, saved by the outermost apply and put back by its restore. */
interface Saved {
  identity: tf.KernelConfig | undefined;
  batchMatMulGradient: tf.GradConfig | undefined;
}

let saved: Saved | null = null;
/** Applications not yet restored: the fixes stay while any is live (nesting-safe). */
let live = 0;

/** a·b with the transpose flags, in the form that never copies/packs the larger operand when it is transposed. */
export function matMulWeightLeft(a: tf.Tensor, b: tf.Tensor, transposeA: boolean, transposeB: boolean): tf.Tensor {
  if (a.rank !== 2 || b.rank !== 2 || tf.getBackend() !== 'wasm') return tf.matMul(a, b, transposeA, transposeB);
  const t = (x: tf.Tensor) => tf.transpose(x);
  // op(a)·bᵀ = (b·op(a)ᵀ)ᵀ: b on the left, untransposed
  if (transposeB && b.size >= a.size) return t(tf.matMul(b, transposeA ? a : t(a)));
  // aᵀ·op(b) = (op(b)ᵀ·a)ᵀ: a on the left, untransposed
  if (transposeA && a.size > b.size) return t(tf.matMul(transposeB ? b : t(b), a));
  return tf.matMul(transposeA ? t(a) : a, transposeB ? t(b) : b);
}

/**
 * Apply both fixes to this thread's tfjs kernel registry and return `restore()`, which puts the
 * registrations that were there before back (tfjs looks kernels and gradients up at every call, so
 * the change takes effect at once both ways). Nesting-safe: the fixes stay until every apply has
 * been restored; each restore acts once (calling it again does nothing). Tensors made while the
 * fixes were on stay valid after the restore (the backend's reference counts cover both Identity
 * forms).
 */
export function applyWasmMemoryFixes(): () => void {
  if (live === 0) {
    saved = { identity: tf.getKernel('Identity', 'wasm'), batchMatMulGradient: tf.getGradient('BatchMatMul') };
    install();
  }
  live++;
  let restored = false;
  return () => {
    if (restored) return;
    restored = true;
    live--;
    if (live === 0) {
      putBack(saved!);
      saved = null;
    }
  };
}

/** Whether the fixes are on now (some apply not yet restored). */
export function wasmMemoryFixesApplied(): boolean {
  return live > 0;
}

function putBack(s: Saved): void {
  if (tf.getKernel('Identity', 'wasm')) tf.unregisterKernel('Identity', 'wasm');
  if (s.identity) tf.registerKernel(s.identity);
  if (s.batchMatMulGradient) tf.registerGradient(s.batchMatMulGradient);
  else if (tf.getGradient('BatchMatMul')) tf.unregisterGradient('BatchMatMul');
}

function install(): void {
  if (tf.getKernel('Identity', 'wasm')) tf.unregisterKernel('Identity', 'wasm');
  tf.registerKernel({
    kernelName: 'Identity',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend }) => {
      const x = inputs.x as tf.TensorInfo;
      (backend as unknown as { incRef(id: tf.DataId): void }).incRef(x.dataId);
      return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
    },
  });
  tf.registerGradient({
    kernelName: 'BatchMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dyIn: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs?: tf.NamedAttrMap) => {
      const dy = dyIn as tf.Tensor;
      const [a, b] = saved as [tf.Tensor, tf.Tensor];
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      const mm = matMulWeightLeft;
      if (!transposeA && !transposeB) return { a: () => mm(dy, b, false, true), b: () => mm(a, dy, true, false) };
      if (!transposeA && transposeB) return { a: () => mm(dy, b, false, false), b: () => mm(dy, a, true, false) };
      if (transposeA && !transposeB) return { a: () => mm(b, dy, false, true), b: () => mm(a, dy, false, false) };
      return { a: () => mm(b, dy, true, true), b: () => mm(dy, a, true, true) };
    },
  });
}
