/**
 * distill's MSE training step for one adapter-v1 / adapter-window layer as ONE ONNX graph: the layer's forward
 * pass, each sequence's MSE against the teacher's next hidden state, and the hand-written
 * gradients of the loss w.r.t. the adapter parameters (the tfjs path, src/distill/train.ts
 * runPass, differentiates the same formulas by autodiff and is the reference).
 *
 * Forward (x = RMSNorm(h), no RoPE; k, v GQA-expanded; s_t the gate score, z_t = s_t·gs + gb):
 *   r_t = Σ_{s≤t} w_{t,s} (q_t·k̂_s) v̂_s,  w_{t,s} = (1−g_s) Π_{s<u≤t} g_u   (dense [T, T] form)
 *   P = W_o r;  gated = α (P ⊙ s_o) + (1−α) x;  attn = gated;  h1 = h + attn;  out = h1 + MLP(RMSNorm(h1))
 *   adapter-window: attn = λ o_win + (1−λ) gated, λ = σ(window_mix), o_win = W_o softmax attention
 *   over the last W positions (RoPE'd q, k; the teacher's, layerGraph.ts prefillSoftmaxAttention)
 * Backward, G = dL/d out = 2(out − target)/(T·D) · grad_scale:
 *   gA = G + J_mlp(h1)ᵀ G  (`detached`: G);  gG = gA (adapter-window: (1−λ) gA)
 *   d window_mix = λ(1−λ) Σ (o_win − gated)·gA  (adapter-window)
 *   d s_o = Σ α P ⊙ gG;  d mix = α(1−α) Σ (P⊙s_o − x)·gG
 *   dr = (α s_o ⊙ gG) W_o;  A_{t,s} = w_{t,s}(q_t·k̂_s)(dr_t·v̂_s)
 *   dL/d log(1−g_s) = Σ_t A_{t,s};  dL/d log g_u = Σ_{t≥u} Σ_{s<u} A_{t,s}
 *   dz = (1−g)·dL/dlog g − g·dL/dlog(1−g);  d gb = Σ dz;  d gs = Σ dz·s
 * q, k̂, v̂, s and o_win do not depend on the parameters (the input h is detached), so that is all.
 *
 * The backward products run in the Wᵀ direction (g·W_o, g·W_down, ·W_gate, ·W_up): MatMulNBits
 * cannot do those from K-blocked INT4 codes, so they use the float32 matrices — for int4 the exactly
 * dequantized values, fed as the inputs `w_o`, `w_gate`, `w_up`, `w_down` [out, in] (listed in
 * `floatInputs`); the forward products are the layer's own bound linears (MatMulNBits for int4).
 *
 * Interface: inputs `h`, `target` [B, T, hidden] (T fixed at build), `gate_bias`, `gate_scale`,
 * `mix_alpha` [1], `output_scale` [hidden], `grad_scale` [1] (+ `w_<which>`, see floatInputs); adapter-window
 * also `window_mix` [1] and `positions` int64 [T], `rope_cos`, `rope_sin` [T, headDim] (positions
 * 0..T−1, as native/common.ts sharedFeeds). Outputs `out` [B, T, hidden], `mse` [B], `d_gate_bias`,
 * `d_gate_scale`, `d_mix_alpha` [1], `d_output_scale` [hidden] (+ `d_window_mix` [1])
 * (without `gradients`: `out` and `mse` only — ONNX Runtime runs every node of a graph whatever
 * is fetched, so a held-out pass gets a graph of its own at about half the work).
 */
import type { ModelConfig } from '../formats/config.ts';
import { GraphBuilder } from '../runtime/ort/graph.ts';
import { prefillSoftmaxAttention, rmsNormNode } from './layerGraph.ts';
import { bindLinear, bindLinearInputGrad } from './linear.ts';
import type { NativeLayerWeights } from './layerWeights.ts';
import { constTriangles, gateLogsOps, gateLogWeightsOps, gateScoresOps, normalizeKeysOps, normalizeValuesOps, repeatKvOps, rowNormOps } from './gateGraph.ts';

export interface AdapterTrainGraphOptions {
  /** Sequence length (every sequence of a run has it). */
  seqLen: number;
  /** 'detached' holds the MLP output constant for the gradients. */
  mlpGrad: 'exact' | 'detached';
  /** false: forward and MSE only (held-out passes): no backward nodes, no float32 copies of int4 weights. */
  gradients?: boolean;
  /** adapter-window's W (null/absent: adapter-v1). */
  window?: number | null;
}

const sumAll = (b: GraphBuilder, x: string) => b.node('Reshape', [b.node('ReduceSum', [x], { keepdims: 0 }), b.constI([1])]);

export interface AdapterTrainGraph {
  bytes: Uint8Array;
  /** Matrices fed as float32 inputs (input name = `w_<which>`). */
  floatInputs: ('o' | 'gate' | 'up' | 'down')[];
}

/** Build layer `layer`'s training graph (adapter-v1, or adapter-window with `window`). `name` names the graph (model file + layer). */
export function buildAdapterTrainGraph(name: string, config: ModelConfig, weights: NativeLayerWeights, opts: AdapterTrainGraphOptions, layer = 0): AdapterTrainGraph {
  const b = new GraphBuilder(name);
  const c = config;
  const T = opts.seqLen;
  const D = c.hiddenSize;
  const Dq = c.numHeads * c.headDim;
  const nRep = c.numHeads / c.numKvHeads;
  const eps = c.rmsNormEps;
  const p = `L${layer}.`;
  const linear = (which: 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down') => {
    const bias = which === 'q' ? weights.qBias : which === 'k' ? weights.kBias : which === 'v' ? weights.vBias : null;
    return bindLinear(b, `${p}${which}`, weights.linear[which], bias);
  };

  const h = b.input('h', 'float32', ['B', T, D]);
  const target = b.input('target', 'float32', ['B', T, D]);
  const gateBias = b.input('gate_bias', 'float32', [1]);
  const gateScale = b.input('gate_scale', 'float32', [1]);
  const outputScale = b.input('output_scale', 'float32', [D]);
  const mixAlpha = b.input('mix_alpha', 'float32', [1]);
  const window = opts.window ?? null;
  const windowMix = window !== null ? b.input('window_mix', 'float32', [1]) : null;
  const one = b.constF([1], [1]);
  const floatInputs: AdapterTrainGraph['floatInputs'] = [];
  const inputGrad = (which: 'o' | 'gate' | 'up' | 'down') => {
    const g = bindLinearInputGrad(b, `${p}${which}`, weights.linear[which], `w_${which}`);
    if (g.input) floatInputs.push(which);
    return g.apply;
  };

  // ---- forward: the adapter's attention part
  const inNorm = b.initializer(`${p}input_layernorm.weight`, weights.inputNorm, [D]);
  const postNorm = b.initializer(`${p}post_attention_layernorm.weight`, weights.postNorm, [D]);
  const x = rmsNormNode(b, h, inNorm, eps);
  const q = linear('q')(x);
  const k = linear('k')(x);
  const v = linear('v')(x);
  const kExp = repeatKvOps(b, k, c.numKvHeads, nRep, c.headDim);
  const vExp = repeatKvOps(b, v, c.numKvHeads, nRep, c.headDim);
  const kHat = normalizeKeysOps(b, kExp);
  const vHat = normalizeValuesOps(b, vExp, rowNormOps(b, x));
  const s = gateScoresOps(b, q, kExp, c.numHeads, c.headDim); // [B, T, 1]
  const z = b.node('Add', [b.node('Mul', [s, gateScale]), gateBias]);
  const { logGate, logOneMinusGate } = gateLogsOps(b, z);
  const logG = b.node('Squeeze', [logGate, b.constI([2])]); // [B, T]
  const log1mG = b.node('Squeeze', [logOneMinusGate, b.constI([2])]);
  // log w[s, t] = log(1−g_s) + Σ_{s<u≤t} log g_u: direct segment sums, as the chunked gate's.
  const tri = constTriangles(b, T);
  const logW = gateLogWeightsOps(b, logG, log1mG, tri, 1); // [B, s, t]
  const w = b.node('Transpose', [b.node('Exp', [logW])], { perm: [0, 2, 1] }); // [B, t, s]
  const qk = b.node('MatMul', [q, b.node('Transpose', [kHat], { perm: [0, 2, 1] })]); // [B, t, s]
  const wqk = b.node('Mul', [w, qk]);
  const r = b.node('MatMul', [wqk, vHat]); // [B, T, Dq]
  const oProj = linear('o');
  const projected = oProj(r); // P [B, T, D]
  const alpha = b.node('Sigmoid', [mixAlpha]);
  const pso = b.node('Mul', [projected, outputScale]);
  const gated = b.node('Add', [b.node('Mul', [pso, alpha]), b.node('Mul', [x, b.node('Sub', [one, alpha])])]);
  // adapter-window: the teacher's softmax attention over the last W positions beside the gate
  // (the model's own sliding window, if any, caps W further, as everywhere else).
  let windowed: { oWin: string; lambda: string } | null = null;
  if (windowMix !== null) {
    const W = c.slidingWindow === null ? window! : Math.min(window!, c.slidingWindow);
    windowed = { oWin: oProj(prefillSoftmaxAttention(b, c, q, k, v, W)), lambda: b.node('Sigmoid', [windowMix]) };
  }
  const attn = windowed ? b.node('Add', [b.node('Mul', [windowed.oWin, windowed.lambda]), b.node('Mul', [gated, b.node('Sub', [one, windowed.lambda])])]) : gated;
  const h1 = b.node('Add', [h, attn]);

  // ---- forward: the MLP
  const n = rmsNormNode(b, h1, postNorm, eps);
  const a = linear('gate')(n);
  const u = linear('up')(n);
  const sigA = b.node('Sigmoid', [a]);
  const silu = b.node('Mul', [a, sigA]);
  const act = b.node('Mul', [silu, u]);
  const out = b.node('Add', [h1, linear('down')(act)]);

  // ---- loss
  const diff = b.node('Sub', [out, target]);
  const mse = b.node('ReduceMean', [b.node('Mul', [diff, diff])], { axes: [1, 2], keepdims: 0 }); // [B]
  if (opts.gradients === false) {
    b.output(out, 'float32', ['B', T, D], 'out');
    b.output(mse, 'float32', ['B'], 'mse');
    return { bytes: b.toBytes(), floatInputs };
  }
  const gradScale = b.input('grad_scale', 'float32', [1]);
  const G = b.node('Mul', [diff, b.node('Mul', [gradScale, b.constF([2 / (T * D)], [1])])]);

  // ---- backward through the MLP (exact) into h1
  let gA = G;
  if (opts.mlpGrad === 'exact') {
    const gAct = inputGrad('down')(G); // [B, T, I]
    const du = b.node('Mul', [gAct, silu]);
    const dSilu = b.node('Mul', [sigA, b.node('Add', [one, b.node('Mul', [a, b.node('Sub', [one, sigA])])])]); // silu'(a)
    const da = b.node('Mul', [b.node('Mul', [gAct, u]), dSilu]);
    const dn = b.node('Add', [inputGrad('gate')(da), inputGrad('up')(du)]);
    // RMSNorm: y = h1·rinv, n = y ⊙ w  =>  dh1 = rinv·(dy − y·mean(dy·y)), dy = dn ⊙ w.
    const rinv = b.node('Reciprocal', [b.node('Sqrt', [b.node('Add', [b.node('ReduceMean', [b.node('Mul', [h1, h1])], { axes: [-1], keepdims: 1 }), b.constF([eps], [1])])])]);
    const y = b.node('Mul', [h1, rinv]);
    const dy = b.node('Mul', [dn, postNorm]);
    const proj = b.node('ReduceMean', [b.node('Mul', [dy, y])], { axes: [-1], keepdims: 1 });
    gA = b.node('Add', [G, b.node('Mul', [rinv, b.node('Sub', [dy, b.node('Mul', [y, proj])])])]);
  }

  // ---- adapter-window's mix (o_win is a constant of the parameters); gated's upstream gradient
  let gG = gA;
  let dWindowMix: string | null = null;
  if (windowed) {
    const { oWin, lambda } = windowed;
    const lambdaSlope = b.node('Mul', [lambda, b.node('Sub', [one, lambda])]);
    dWindowMix = b.node('Mul', [sumAll(b, b.node('Mul', [b.node('Sub', [oWin, gated]), gA])), lambdaSlope]);
    gG = b.node('Mul', [gA, b.node('Sub', [one, lambda])]);
  }

  // ---- the adapter's output parameters
  const dOutputScale = b.node('Mul', [b.node('ReduceSum', [b.node('Mul', [projected, gG]), b.constI([0, 1])], { keepdims: 0 }), alpha]); // [D]
  const alphaSlope = b.node('Mul', [alpha, b.node('Sub', [one, alpha])]);
  const dMixAlpha = b.node('Mul', [sumAll(b, b.node('Mul', [b.node('Sub', [pso, x]), gG])), alphaSlope]);

  // ---- into the gate read-out and the gate logits
  const gP = b.node('Mul', [gG, b.node('Mul', [outputScale, alpha])]);
  const dr = inputGrad('o')(gP); // [B, T, Dq]
  const rv = b.node('MatMul', [dr, b.node('Transpose', [vHat], { perm: [0, 2, 1] })]); // [B, t, s]
  const A = b.node('Mul', [wqk, rv]);
  const dLog1mG = b.node('ReduceSum', [A, b.constI([1])], { keepdims: 0 }); // Σ_t, [B, s]
  // Σ_{s<u} A[t, s] for every (t, u), then Σ over t ≥ u.
  const before = b.node('CumSum', [A, b.constI([-1], [])], { exclusive: 1 }); // [B, t, u]
  const atOrAfter = b.node('Sub', [one, tri.strictlyAfter]); // [t, u]: 1 where t ≥ u
  const dLogG = b.node('ReduceSum', [b.node('Mul', [before, atOrAfter]), b.constI([1])], { keepdims: 0 }); // [B, u]
  const g = b.node('Exp', [logG]);
  const dz = b.node('Sub', [b.node('Mul', [b.node('Exp', [log1mG]), dLogG]), b.node('Mul', [g, dLog1mG])]); // [B, T]
  const dGateBias = sumAll(b, dz);
  const dGateScale = sumAll(b, b.node('Mul', [dz, b.node('Squeeze', [s, b.constI([2])])]));

  b.output(out, 'float32', ['B', T, D], 'out');
  b.output(mse, 'float32', ['B'], 'mse');
  b.output(dGateBias, 'float32', [1], 'd_gate_bias');
  b.output(dGateScale, 'float32', [1], 'd_gate_scale');
  b.output(dOutputScale, 'float32', [D], 'd_output_scale');
  b.output(dMixAlpha, 'float32', [1], 'd_mix_alpha');
  if (dWindowMix) b.output(dWindowMix, 'float32', [1], 'd_window_mix');
  return { bytes: b.toBytes(), floatInputs };
}
