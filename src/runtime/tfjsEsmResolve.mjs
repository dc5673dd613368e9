// Module resolve hook (node:module `register`), used by gradients.ts only. tfjs-core publishes its
// gradient definitions only as ESM files whose relative imports have no '.js' extension, which
// Node's ESM loader refuses; inside tfjs-core/dist this adds the extension. Everything else is
// passed on unchanged.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export async function resolve(specifier, context, nextResolve) {
  const parent = context.parentURL;
  if (parent && parent.includes('/@tensorflow/tfjs-core/dist/') && specifier.startsWith('.') && !specifier.endsWith('.js')) {
    const url = new URL(specifier + '.js', parent);
    if (fs.existsSync(fileURLToPath(url))) return { url: url.href, format: 'module', shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
