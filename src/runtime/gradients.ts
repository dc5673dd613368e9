/**
 * Autodiff needs tfjs-core's gradient registry filled. The CommonJS bundle that
 * `import * as tf from '@tensorflow/tfjs-core'` loads under Node ships no gradients (the union
 * package `@tensorflow/tfjs` normally imports them); they exist only as ESM files in
 * `tfjs-core/dist/gradients/`, with extensionless relative imports. We load them through a tiny
 * resolve hook. They register into the same global registry and run on the same global engine as
 * the bundle (tfjs keeps both in a global namespace, and `Tensor` checks `instanceof` by shape), so
 * `tf.grad` / `tf.variableGrads` work afterwards. Importing this module is enough (top-level await).
 *
 * Two of tfjs-core 4.22's gradients are then replaced (same mathematics):
 * - Cumsum: the stock gradient transposes its result whenever the axis is not the last one, which
 *   is wrong (and silently so for square inputs). Ours is reverse-cumsum on the same axis.
 * - BatchMatMul, on the wasm backend: tfjs-backend-wasm runs a matmul on XNNPACK only when neither
 *   transpose flag is set and the batch is 1; anything else goes to a scalar triple loop that is
 *   ~5–20× slower at model sizes. The stock gradient always sets a flag (dA = dY·Bᵀ, dB = Aᵀ·dY), so
 *   every backward matmul took the slow loop. Ours materialises the transposes (cheap, memory-bound)
 *   for batch-1 products and keeps the flags elsewhere.
 */
import { register } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';

let loaded: Promise<void> | null = null;

/** a with its last two axes swapped. */
function swapLastTwo(x: tf.Tensor): tf.Tensor {
  const perm = x.shape.map((_, i) => i);
  const r = x.rank;
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return tf.transpose(x, perm);
}

/** matMul(x, y, tx, ty), with explicit transposes on wasm for batch-1 products (XNNPACK path). */
function matMulFast(x: tf.Tensor, y: tf.Tensor, tx: boolean, ty: boolean): tf.Tensor {
  const batch = (t: tf.Tensor) => t.shape.slice(0, -2).reduce((p, d) => p * d, 1);
  if (tf.getBackend() === 'wasm' && batch(x) === 1 && batch(y) === 1 && (tx || ty)) {
    return tf.matMul(tx ? swapLastTwo(x) : x, ty ? swapLastTwo(y) : y);
  }
  return tf.matMul(x, y, tx, ty);
}

function registerFixes(): void {
  tf.registerGradient({
    kernelName: 'Cumsum',
    gradFunc: (dy: tf.Tensor | tf.Tensor[], _saved: tf.Tensor[], attrs?: tf.NamedAttrMap) => {
      const { axis, exclusive, reverse } = attrs as unknown as { axis: number; exclusive: boolean; reverse: boolean };
      return { x: () => tf.cumsum(dy as tf.Tensor, axis, exclusive, !reverse) };
    },
  });
  tf.registerGradient({
    kernelName: 'BatchMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dyIn: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs?: tf.NamedAttrMap) => {
      const dy = dyIn as tf.Tensor;
      const [a, b] = saved;
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      if (!transposeA && !transposeB) return { a: () => matMulFast(dy, b, false, true), b: () => matMulFast(a, dy, true, false) };
      if (!transposeA && transposeB) return { a: () => matMulFast(dy, b, false, false), b: () => matMulFast(dy, a, true, false) };
      if (transposeA && !transposeB) return { a: () => matMulFast(b, dy, false, true), b: () => matMulFast(a, dy, false, false) };
      return { a: () => matMulFast(b, dy, true, true), b: () => matMulFast(dy, a, true, true) };
    },
  });
}

/** Register every tfjs-core gradient, with the fixes above (idempotent). */
export function registerAllGradients(): Promise<void> {
  if (!loaded) {
    loaded = (async () => {
      if (!(tf.getGradient('Sum') && tf.getGradient('Softplus'))) {
        register('./tfjsEsmResolve.mjs', import.meta.url);
        await import('@tensorflow/tfjs-core/dist/register_all_gradients.js' as string);
        if (!tf.getGradient('Sum')) throw new Error('tfjs-core gradients did not register');
      }
      registerFixes();
    })();
  }
  return loaded;
}

await registerAllGradients();
