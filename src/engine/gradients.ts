/**
 * Autodiff needs tfjs-core's gradient registry filled. The CommonJS bundle that
 * `import * as tf from '@tensorflow/tfjs-core'` loads under Node ships no gradients (the union
 * package `@tensorflow/tfjs` normally imports them); they exist only as ESM files in
 * `tfjs-core/dist/gradients/`, with extensionless relative imports. We load them through a tiny
 * resolve hook. They register into the same global registry and run on the same global engine as
 * the bundle (tfjs keeps both in a global namespace, and `Tensor` checks `instanceof` by shape), so
 * `tf.grad` / `tf.variableGrads` work afterwards. Importing this module is enough (top-level await).
 */
import { register } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';

let loaded: Promise<void> | null = null;

/** Register every tfjs-core gradient (idempotent). */
export function registerAllGradients(): Promise<void> {
  if (!loaded) {
    loaded = (async () => {
      // Already there (e.g. the union package was loaded): nothing to do.
      if (tf.getGradient('Sum') && tf.getGradient('BatchMatMul')) return;
      register('./tfjsEsmResolve.mjs', import.meta.url);
      await import('@tensorflow/tfjs-core/dist/register_all_gradients.js' as string);
      if (!tf.getGradient('Sum')) throw new Error('tfjs-core gradients did not register');
    })();
  }
  return loaded;
}

await registerAllGradients();
