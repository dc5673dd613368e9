/**
 * The symbiotic adapter's part of a gated layer (adapter-v1, adapter-window), as functions of
 * plain tensors; the parameters may be tf.Variables (training differentiates through these):
 *
 *   gate logit  z_t = s_t·gate_scale + gate_bias                       (g_t = σ(z_t))
 *   output      o_t = σ(mix_alpha)·((W_o r_t) ⊙ output_scale) + (1 − σ(mix_alpha))·x_t
 *   window mix  o_t = σ(window_mix)·o^window_t + (1 − σ(window_mix))·o_t      (adapter-window)
 */
import * as tf from '@tensorflow/tfjs-core';
import type { AdapterPolicy } from './policy.ts';

/** The adapter's gate logit from the gate scores s [T]. */
export function adapterGateLogit(s: tf.Tensor1D, p: AdapterPolicy): tf.Tensor1D {
  return tf.add(tf.mul(s, p.gateScale), p.gateBias) as tf.Tensor1D;
}

/** The adapter's output from the projected gate read-out W_o r [T, hidden] and the normed input x. */
export function adapterOutput(projected: tf.Tensor2D, x: tf.Tensor2D, p: AdapterPolicy): tf.Tensor2D {
  return tf.tidy(() => {
    const alpha = tf.sigmoid(p.mixAlpha);
    const a = tf.mul(projected, p.outputScale);
    return tf.add(tf.mul(a, alpha), tf.mul(x, tf.sub(1, alpha))) as tf.Tensor2D;
  });
}

/** adapter-window: σ(window_mix)·o_window + (1 − σ(window_mix))·o_gate. */
export function adapterWindowMix(windowOut: tf.Tensor2D, gated: tf.Tensor2D, p: AdapterPolicy): tf.Tensor2D {
  return tf.tidy(() => {
    const lambda = tf.sigmoid(p.windowMix!);
    return tf.add(tf.mul(windowOut, lambda), tf.mul(gated, tf.sub(1, lambda))) as tf.Tensor2D;
  });
}
