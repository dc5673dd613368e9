/**
 * The ONE decoder-layer skeleton as an ONNX graph (HF modeling_llama semantics):
 *
 *   x  = RMSNorm(h)                      input_layernorm
 *   h' = h + AttentionPart(x)            the teacher's softmax attention, or a student's part
 *   h''= h' + down(silu(gate(n)) ⊙ up(n)), n = RMSNorm(h')   post_attention_layernorm, SwiGLU
 *
 * One graph may hold several branches (configurations) over the same layer: their linear weights
 * are bound once and shared, so ONNX Runtime prepares (prepacks) each matrix once per session.
 *
 * Graph interface (names the runner feeds/reads):
 * - `h<i>` [B, T, hidden] float32 in, `h<i>_out` out, per branch i;
 * - `positions` int64 [T] (absolute positions), `rope_cos` / `rope_sin` [T, headDim] (host
 *   tables, see ropeTables) — declared only when a branch uses them;
 * - per state a part declares, `past.L<layer>.<i>.<name>` in and `present.L<layer>.<i>.<name>`
 *   out. A state's initial value is zeros with symbolic dim 'B' = batch and every other symbolic
 *   dim = 0 (an empty cache); prefill feeds that and ignores the output.
 * `buildStackGraph` chains several layers of one configuration (`h0` in, `h0_out` out).
 */
import type { ModelConfig } from '../formats/config.ts';
import { ropeTables } from '../model/rope.ts';
export { ropeTables };
import { GraphBuilder, type ElemType, type WeightFeed } from '../runtime/ort/graph.ts';
import { bindLinear } from './linear.ts';
import type { NativeLayerWeights } from './layerWeights.ts';

export interface LayerGraphContext {
  b: GraphBuilder;
  config: ModelConfig;
  mode: 'prefill' | 'decode';
  /** input_layernorm(h), [B, T, hidden] float32 (T = 1 in decode). */
  x: string;
  /** int64 [T] absolute positions (decode: the current position). */
  positions: string;
  /** The layer's bound weights (+bias): [B, T, in] -> [B, T, out]. */
  linear(which: 'q' | 'k' | 'v' | 'o', input: string): string;
  /** RoPE of [B, T, heads*headDim] at `positions`. */
  rope(t: string, heads: number): string;
  /**
   * Causal (banded when window) GQA softmax attention, RoPE'd q/k in, [B, T, heads*headDim] out
   * (before o_proj). In decode mode it declares its own cache state under cacheName.
   */
  softmaxAttention(q: string, k: string, v: string, opts: { window: number | null; cacheName: string }): string;
  /**
   * Whether the runner folds deferred states itself between runs (NativeDecoder): a part may then
   * declare read-only states (`readOnly`, no stateOut) that the runner updates. False: every state
   * is an input with its output, and feeding each output back is the whole recurrence (absent = false).
   */
  runnerFolds?: boolean;
  /** Declare a state input (decode), returns its name. */
  state(name: string, dims: (number | string)[], opts?: { readOnly?: boolean }): string;
  /** The matching state output. */
  stateOut(name: string, value: string, dims: (number | string)[]): void;
}

/** Returns the block output [B, T, hidden] added to the residual. */
export type AttentionPart = (ctx: LayerGraphContext) => string;

/** The teacher's attention: q/k/v projections, RoPE, softmax attention, o_proj. */
export const softmaxPart: AttentionPart = (ctx) => {
  const c = ctx.config;
  const q = ctx.rope(ctx.linear('q', ctx.x), c.numHeads);
  const k = ctx.rope(ctx.linear('k', ctx.x), c.numKvHeads);
  const v = ctx.linear('v', ctx.x);
  return ctx.linear('o', ctx.softmaxAttention(q, k, v, { window: c.slidingWindow, cacheName: 'kv' }));
};

/** A declared state: its graph input/output names and dims (for the initial zeros). */
export interface StateSpec {
  layer: number;
  branch: number;
  name: string;
  input: string;
  output: string | null;
  dims: (number | string)[];
  /** Read by the graph, never written (the runner updates it: LayerGraphContext.runnerFolds). */
  readOnly?: boolean;
}

export interface LayerGraph {
  bytes: Uint8Array;
  states: StateSpec[];
  /** Which shared inputs the graph declares. */
  usesPositions: boolean;
  usesRope: boolean;
  /** With `weightInputs`: the layer's weights, fed as inputs by these names (the graph holds none). */
  weights?: WeightFeed[];
}

/** Added to masked scores: exp() of it underflows to exactly 0 in float32 (as the tfjs path). */
const MASKED = -1e30;

/** RMSNorm over the last axis (ORT's SimplifiedLayerNormalization: x / sqrt(mean(x²) + eps) · w). */
export function rmsNormNode(b: GraphBuilder, x: string, weight: string, eps: number): string {
  return b.node('SimplifiedLayerNormalization', [x, weight], { axis: -1, epsilon: eps });
}

/** The inputs every layer of a graph shares (declared on first use) and the masks built from them. */
class SharedInputs {
  private positionsName: string | null = null;
  private rope: { cos: string; sin: string } | null = null;
  private readonly masks = new Map<string, string>();
  readonly states: StateSpec[] = [];

  constructor(
    readonly b: GraphBuilder,
    readonly config: ModelConfig,
    readonly mode: 'prefill' | 'decode',
    readonly runnerFolds = false,
  ) {}

  get usesPositions(): boolean {
    return this.positionsName !== null;
  }
  get usesRope(): boolean {
    return this.rope !== null;
  }

  positions(): string {
    if (!this.positionsName) this.positionsName = this.b.input('positions', 'int64', [this.mode === 'decode' ? 1 : 'T']);
    return this.positionsName;
  }

  ropeInputs(): { cos: string; sin: string } {
    if (!this.rope) {
      const T = this.mode === 'decode' ? 1 : 'T';
      const d = this.config.headDim;
      this.rope = { cos: this.b.input('rope_cos', 'float32', [T, d]), sin: this.b.input('rope_sin', 'float32', [T, d]) };
    }
    return this.rope;
  }

  /** Additive causal mask [T, T] (banded by `window`), built in the graph from `positions`. */
  mask(window: number | null): string {
    const key = String(window);
    let m = this.masks.get(key);
    if (!m) {
      const b = this.b;
      const pos = this.positions();
      const diff = b.node('Sub', [b.node('Unsqueeze', [pos, b.constI([1])]), b.node('Unsqueeze', [pos, b.constI([0])])]); // [T, T]: q - k
      let visible = b.node('GreaterOrEqual', [diff, b.constI([0], [])]);
      if (window !== null) visible = b.node('And', [visible, b.node('Less', [diff, b.constI([window], [])])]);
      m = b.node('Where', [visible, b.constF([0], []), b.constF([MASKED], [])]);
      this.masks.set(key, m);
    }
    return m;
  }
}

/** One layer's weights bound into a graph (each matrix once, shared by every branch). */
class LayerBinding {
  private readonly linears = new Map<string, (input: string) => string>();

  constructor(
    readonly shared: SharedInputs,
    readonly prefix: string,
    readonly weights: NativeLayerWeights,
  ) {}

  get b(): GraphBuilder {
    return this.shared.b;
  }
  get config(): ModelConfig {
    return this.shared.config;
  }
  get mode(): 'prefill' | 'decode' {
    return this.shared.mode;
  }

  linear(which: 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down'): (input: string) => string {
    let f = this.linears.get(which);
    if (!f) {
      const w = this.weights;
      const bias = which === 'q' ? w.qBias : which === 'k' ? w.kBias : which === 'v' ? w.vBias : null;
      f = bindLinear(this.b, `${this.prefix}${which}`, w.linear[which], bias);
      this.linears.set(which, f);
    }
    return f;
  }
}

/** RoPE (rotate-half form) of t [B, T, heads*hd] with cos/sin [T, hd]. */
function ropeNode(s: SharedInputs, t: string, heads: number): string {
  const b = s.b;
  const d = s.config.headDim;
  const half = d / 2;
  const { cos, sin } = s.ropeInputs();
  const x = b.node('Reshape', [t, b.constI([0, 0, heads, d])]); // [B, T, n, d]
  const x1 = b.node('Slice', [x, b.constI([0]), b.constI([half]), b.constI([3])]);
  const x2 = b.node('Slice', [x, b.constI([half]), b.constI([d]), b.constI([3])]);
  const rotated = b.node('Concat', [b.node('Neg', [x2]), x1], { axis: 3 });
  const c = b.node('Unsqueeze', [cos, b.constI([1])]); // [T, 1, d]
  const sn = b.node('Unsqueeze', [sin, b.constI([1])]);
  const out = b.node('Add', [b.node('Mul', [x, c]), b.node('Mul', [rotated, sn])]);
  return b.node('Reshape', [out, b.constI([0, 0, heads * d])]);
}

/**
 * Softmax attention. Query head i reads kv head ⌊i / nRep⌋: queries are grouped
 * [B, nKv, nRep, T, d] against keys [B, nKv, 1, d, Tk] (MatMul broadcasts the nRep axis).
 */
function softmaxAttentionNode(
  s: SharedInputs,
  q: string,
  k: string,
  v: string,
  opts: { window: number | null; cacheName: string },
  declareState: (name: string, dims: (number | string)[]) => string,
  declareStateOut: (name: string, value: string, dims: (number | string)[]) => void,
): string {
  const b = s.b;
  const c = s.config;
  const d = c.headDim;
  const nKv = c.numKvHeads;
  const nRep = c.numHeads / nKv;
  const qScaled = b.node('Mul', [q, b.constF([1 / Math.sqrt(d)], [])]);
  const qg = b.node('Transpose', [b.node('Reshape', [qScaled, b.constI([0, 0, nKv, nRep, d])])], { perm: [0, 2, 3, 1, 4] }); // [B, nKv, nRep, T, d]
  let kh = b.node('Transpose', [b.node('Reshape', [k, b.constI([0, 0, nKv, d])])], { perm: [0, 2, 1, 3] }); // [B, nKv, T, d]
  let vh = b.node('Transpose', [b.node('Reshape', [v, b.constI([0, 0, nKv, d])])], { perm: [0, 2, 1, 3] });
  let mask: string | null = null;
  if (s.mode === 'decode') {
    // Cache [B, nKv, P, d]; the newest position is appended, then only the last `window` kept:
    // a query at position p sees keys j with p - j < window, i.e. exactly the cache.
    const pastK = declareState(`${opts.cacheName}.k`, ['B', nKv, 'P', d]);
    const pastV = declareState(`${opts.cacheName}.v`, ['B', nKv, 'P', d]);
    kh = b.node('Concat', [pastK, kh], { axis: 2 });
    vh = b.node('Concat', [pastV, vh], { axis: 2 });
    if (opts.window !== null) {
      const keep = [b.constI([-opts.window]), b.constI([2 ** 62]), b.constI([2])];
      kh = b.node('Slice', [kh, ...keep]);
      vh = b.node('Slice', [vh, ...keep]);
    }
    declareStateOut(`${opts.cacheName}.k`, kh, ['B', nKv, 'P1', d]);
    declareStateOut(`${opts.cacheName}.v`, vh, ['B', nKv, 'P1', d]);
  } else {
    mask = s.mask(opts.window);
  }
  const kt = b.node('Unsqueeze', [b.node('Transpose', [kh], { perm: [0, 1, 3, 2] }), b.constI([2])]); // [B, nKv, 1, d, Tk]
  let scores = b.node('MatMul', [qg, kt]); // [B, nKv, nRep, T, Tk]
  if (mask) scores = b.node('Add', [scores, mask]);
  const probs = b.node('Softmax', [scores], { axis: -1 });
  const out = b.node('MatMul', [probs, b.node('Unsqueeze', [vh, b.constI([2])])]); // [B, nKv, nRep, T, d]
  return b.node('Reshape', [b.node('Transpose', [out], { perm: [0, 3, 1, 2, 4] }), b.constI([0, 0, c.numHeads * d])]);
}

/**
 * Add layer `layer` with one branch per attention part to the graph: branch i maps `inputs[i]`
 * [B, T, hidden] to the returned output i. Initializers and states are named by layer.
 */
function addLayer(shared: SharedInputs, layer: number, weights: NativeLayerWeights, parts: AttentionPart[], inputs: string[], what: string): string[] {
  const b = shared.b;
  const config = shared.config;
  const mode = shared.mode;
  const lb = new LayerBinding(shared, `L${layer}.`, weights);
  const D = config.hiddenSize;
  const eps = config.rmsNormEps;
  const inNorm = b.weight(`L${layer}.input_layernorm.weight`, weights.inputNorm, [D]);
  const postNorm = b.weight(`L${layer}.post_attention_layernorm.weight`, weights.postNorm, [D]);
  return parts.map((part, i) => {
    const h = inputs[i]!;
    const x = rmsNormNode(b, h, inNorm, eps);
    const declareState = (stateName: string, dims: (number | string)[], opts: { readOnly?: boolean } = {}): string => {
      if (shared.states.some((st) => st.layer === layer && st.branch === i && st.name === stateName)) {
        throw new Error(`${what}: state '${stateName}' declared twice`);
      }
      const input = b.input(`past.L${layer}.${i}.${stateName}`, 'float32', dims);
      if (opts.readOnly && !shared.runnerFolds) throw new Error(`${what}: read-only state '${stateName}' in a graph whose runner does not fold`);
      shared.states.push({ layer, branch: i, name: stateName, input, output: null, dims, ...(opts.readOnly ? { readOnly: true } : {}) });
      return input;
    };
    const declareStateOut = (stateName: string, value: string, dims: (number | string)[]): void => {
      const st = shared.states.find((x) => x.layer === layer && x.branch === i && x.name === stateName);
      if (!st) throw new Error(`${what}: stateOut('${stateName}') without state('${stateName}')`);
      if (st.readOnly) throw new Error(`${what}: stateOut('${stateName}') of a read-only state`);
      if (st.output) throw new Error(`${what}: stateOut('${stateName}') given twice`);
      st.output = `present.L${layer}.${i}.${stateName}`;
      b.output(value, 'float32' as ElemType, dims, st.output);
    };
    const ctx: LayerGraphContext = {
      b,
      config,
      mode,
      runnerFolds: shared.runnerFolds,
      x,
      get positions() {
        return shared.positions();
      },
      linear: (which, input) => lb.linear(which)(input),
      rope: (t, heads) => ropeNode(shared, t, heads),
      softmaxAttention: (q, k, v, opts) => softmaxAttentionNode(shared, q, k, v, opts, declareState, declareStateOut),
      state: declareState,
      stateOut: declareStateOut,
    };
    const attnOut = part(ctx);
    const afterAttn = b.node('Add', [h, attnOut]);
    const n = rmsNormNode(b, afterAttn, postNorm, eps);
    const g = lb.linear('gate')(n);
    const act = b.node('Mul', [b.node('Mul', [g, b.node('Sigmoid', [g])]), lb.linear('up')(n)]);
    return b.node('Add', [afterAttn, lb.linear('down')(act)]);
  });
}

function finish(b: GraphBuilder, shared: SharedInputs, name: string): LayerGraph {
  for (const st of shared.states) {
    if (!st.output && !st.readOnly) throw new Error(`layer graph ${name}: state '${st.name}' of layer ${st.layer}, branch ${st.branch} has no stateOut`);
  }
  const graph: LayerGraph = { bytes: b.toBytes(), states: shared.states, usesPositions: shared.usesPositions, usesRope: shared.usesRope };
  if (b.opts.weightInputs) graph.weights = b.weightFeeds;
  return graph;
}

/**
 * Build one layer's graph with a branch per attention part (`parts[i]` computes branch i's
 * attention block): inputs `h<i>`, outputs `h<i>_out`. `name` names the graph (model file +
 * layer, for errors). With `weightInputs` the weights are graph inputs (LayerGraph.weights): graphs
 * of two layers with the same parts are then the same bytes, and one session runs both.
 */
export function buildLayerGraph(
  name: string,
  config: ModelConfig,
  mode: 'prefill' | 'decode',
  weights: NativeLayerWeights,
  parts: AttentionPart[],
  layer = 0,
  opts: { weightInputs?: boolean } = {},
): LayerGraph {
  const b = new GraphBuilder(name, { weightInputs: opts.weightInputs });
  const shared = new SharedInputs(b, config, mode);
  const T = mode === 'decode' ? 1 : 'T';
  const D = config.hiddenSize;
  const inputs = parts.map((_, i) => b.input(`h${i}`, 'float32', ['B', T, D]));
  addLayer(shared, layer, weights, parts, inputs, name).forEach((out, i) => b.output(out, 'float32', ['B', T, D], `h${i}_out`));
  return finish(b, shared, name);
}

/**
 * Several consecutive layers of one configuration as one graph (the resident decoder: one run per
 * step instead of one per layer): input `h0`, output `h0_out` — or, with `head`, what the head adds
 * on the last layer's output (the decoder's last stack computes the logits in the same run).
 */
export function buildStackGraph(
  name: string,
  config: ModelConfig,
  mode: 'prefill' | 'decode',
  layers: { layer: number; weights: NativeLayerWeights; part: AttentionPart }[],
  head?: (b: GraphBuilder, h: string, T: number | 'T') => void,
  opts: { runnerFolds?: boolean } = {},
): LayerGraph {
  const b = new GraphBuilder(name);
  const shared = new SharedInputs(b, config, mode, opts.runnerFolds ?? false);
  const T = mode === 'decode' ? 1 : 'T';
  const D = config.hiddenSize;
  let h = b.input('h0', 'float32', ['B', T, D]);
  for (const { layer, weights, part } of layers) h = addLayer(shared, layer, weights, [part], [h], name)[0]!;
  if (head) head(b, h, T);
  else b.output(h, 'float32', ['B', T, D], 'h0_out');
  return finish(b, shared, name);
}

/**
 * The teacher's causal softmax attention over whole sequences, banded to the last `window`
 * positions (null: every earlier one), for a graph built outside the layer skeleton (distill's
 * training graph, adapterTrainGraph.ts): q [B, T, heads*hd], k, v [B, T, kvHeads*hd] before RoPE
 * -> [B, T, heads*hd] before o_proj. Declares the inputs `positions`, `rope_cos`, `rope_sin` (feed
 * them as sharedFeeds in native/common.ts does), so call it once per graph.
 */
export function prefillSoftmaxAttention(b: GraphBuilder, config: ModelConfig, q: string, k: string, v: string, window: number | null): string {
  const shared = new SharedInputs(b, config, 'prefill');
  const noState = (): never => {
    throw new Error('prefillSoftmaxAttention: a prefill graph declares no state');
  };
  return softmaxAttentionNode(shared, ropeNode(shared, q, config.numHeads), ropeNode(shared, k, config.numKvHeads), v, { window, cacheName: 'kv' }, noState, noState);
}
