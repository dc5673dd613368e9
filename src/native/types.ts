/**
 * What the native engine shares with the tfjs path: the prefill options and results and token-id
 * validation (one definition, model/sequence.ts), the file that names a model in errors
 * (formats/weights.ts), re-exported here for the native modules; and the host-side finiteness guard.
 */
import { fail } from '../util/errors.ts';

export { modelConfigFile } from '../formats/weights.ts';
export { validateIds, type PrefillOptions, type PrefillResult } from '../model/sequence.ts';

/** Layer outputs must be finite: the same one-line error as the tfjs path. */
export function requireFiniteHost(x: Float32Array, modelDir: string, layer: number, sequence: number | null): void {
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i]!)) {
      fail(modelDir, `non-finite activations (NaN or Inf) after layer ${layer}${sequence === null ? '' : ` in sequence ${sequence}`}: the weights (or adapter) overflow float32`);
    }
  }
}
