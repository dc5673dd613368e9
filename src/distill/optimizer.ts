/**
 * The optimizer of the SYNAXIM training scripts, on host float32 arrays (the adapter has a few
 * thousand parameters; the host is exact, deterministic and easy to checkpoint):
 *
 * - AdamW exactly as torch.optim.AdamW (single-tensor path): decoupled weight decay
 *   p ← p·(1 − lr·wd), then m ← m + (1−β1)(g − m), v ← β2·v + (1−β2)·g², and
 *   p ← p − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + ε). Every tensor-valued intermediate is
 *   rounded to float32 as torch's float32 kernels do.
 * - Cosine annealing over all steps (torch CosineAnnealingLR, η_min 0, stepped after each update):
 *   lr_k = lr · ½(1 + cos(π k / K)) for step k = 0 … K−1.
 * - Global gradient-norm clipping (torch.nn.utils.clip_grad_norm_): ‖g‖ over all parameters,
 *   g ← g · min(1, max / (‖g‖ + 1e-6)).
 */
import { fail } from '../util/errors.ts';

export interface AdamWConfig {
  lr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
}

export const ADAMW_DEFAULTS: AdamWConfig = { lr: 1e-2, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 };

/** Everything needed to continue bit-identically: the step count and both moment buffers. */
export interface AdamWState {
  step: number;
  expAvg: Float32Array[];
  expAvgSq: Float32Array[];
}

const f = Math.fround;

export class AdamW {
  readonly config: AdamWConfig;
  state: AdamWState;

  constructor(sizes: number[], config: Partial<AdamWConfig> = {}) {
    this.config = { ...ADAMW_DEFAULTS, ...config };
    this.state = { step: 0, expAvg: sizes.map((n) => new Float32Array(n)), expAvgSq: sizes.map((n) => new Float32Array(n)) };
  }

  /** One update of `params` in place with gradients `grads` at learning rate `lr`. */
  step(params: Float32Array[], grads: Float32Array[], lr: number): void {
    const { weightDecay, beta1, beta2, eps } = this.config;
    if (params.length !== this.state.expAvg.length || grads.length !== params.length) throw new Error('AdamW.step: parameter list does not match the optimizer');
    this.state.step += 1;
    const t = this.state.step;
    const decay = f(1 - lr * weightDecay);
    const biasCorrection1 = 1 - beta1 ** t;
    const biasCorrection2Sqrt = Math.sqrt(1 - beta2 ** t);
    const stepSize = lr / biasCorrection1;
    const oneMinusBeta1 = f(1 - beta1);
    const oneMinusBeta2 = f(1 - beta2);
    for (let i = 0; i < params.length; i++) {
      const p = params[i]!;
      const g = grads[i]!;
      const m = this.state.expAvg[i]!;
      const v = this.state.expAvgSq[i]!;
      if (g.length !== p.length || m.length !== p.length) throw new Error(`AdamW.step: size mismatch in parameter ${i}`);
      for (let j = 0; j < p.length; j++) {
        const gj = g[j]!;
        p[j] = f(p[j]! * decay);
        m[j] = f(m[j]! + f(oneMinusBeta1 * f(gj - m[j]!)));
        v[j] = f(f(v[j]! * f(beta2)) + f(oneMinusBeta2 * f(gj * gj)));
        const denom = f(f(f(Math.sqrt(v[j]!)) / f(biasCorrection2Sqrt)) + f(eps));
        p[j] = f(p[j]! - f(f(stepSize) * f(m[j]! / denom)));
      }
    }
  }

  /** Copies of the state (for checkpoints). */
  snapshot(): AdamWState {
    return { step: this.state.step, expAvg: this.state.expAvg.map((a) => a.slice()), expAvgSq: this.state.expAvgSq.map((a) => a.slice()) };
  }

  load(s: AdamWState): void {
    const sizes = this.state.expAvg.map((a) => a.length);
    if (s.expAvg.length !== sizes.length || s.expAvgSq.length !== sizes.length || s.expAvg.some((a, i) => a.length !== sizes[i]) || s.expAvgSq.some((a, i) => a.length !== sizes[i])) {
      fail(null, 'optimizer state in the checkpoint does not match the adapter parameters');
    }
    if (!Number.isInteger(s.step) || s.step < 0) fail(null, `optimizer state has an invalid step count ${s.step}`);
    this.state = { step: s.step, expAvg: s.expAvg.map((a) => a.slice()), expAvgSq: s.expAvgSq.map((a) => a.slice()) };
  }
}

/** Learning rate of step k (0-based) of K under cosine annealing to 0 (CosineAnnealingLR, T_max = K). */
export function cosineLr(baseLr: number, k: number, totalSteps: number): number {
  if (totalSteps <= 0) return baseLr;
  return baseLr * 0.5 * (1 + Math.cos((Math.PI * k) / totalSteps));
}

/** Global L2 norm over all gradients (accumulated in float64). */
export function globalNorm(grads: Float32Array[]): number {
  let sum = 0;
  for (const g of grads) for (let j = 0; j < g.length; j++) sum += g[j]! * g[j]!;
  return Math.sqrt(sum);
}

/** clip_grad_norm_: scale all gradients in place so their global norm is ≤ maxNorm; returns the norm before. */
export function clipGradNorm(grads: Float32Array[], maxNorm: number): number {
  const norm = globalNorm(grads);
  const coef = Math.min(1, maxNorm / (norm + 1e-6));
  if (coef < 1) {
    const c = f(coef);
    for (const g of grads) for (let j = 0; j < g.length; j++) g[j] = f(g[j]! * c);
  }
  return norm;
}
