/**
 * Synthetic evaluation reports for the report, compare and browser tests: random "teacher" logits and
 * configurations that perturb them by a chosen amount, pushed through the real accumulators.
 */
import { configurationFromStats, REPORT_SCHEMA, type EvalReport, type LayerPolicy } from '../src/eval/report.ts';
import { ComparisonAccumulator, HiddenAccumulator, type PerTokenValues } from '../src/eval/stats.ts';
import { mulberry32 } from '../src/util/random.ts';

/** mulberry32, the project's seeded PRNG (uniform in [0, 1)). */
export const rng = mulberry32;
export function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-300)) * Math.cos(2 * Math.PI * r());
}

export interface SyntheticOptions {
  seed?: number;
  /** Noise added to the teacher's logits per configuration (0 = the teacher itself). */
  configurations?: { name: string; noise: number; layers?: LayerPolicy[] }[];
  windows?: number;
  context?: number;
  vocab?: number;
  /** Seed for the token ids (the "data"); equal seeds = same tokens. */
  dataSeed?: number;
  /** Filled with each configuration's per-token figures (for per_token.safetensors). */
  perToken?: Map<string, PerTokenValues>;
}

export function syntheticReport(opts: SyntheticOptions = {}): EvalReport {
  const V = opts.vocab ?? 64;
  const T = opts.context ?? 32;
  const W = opts.windows ?? 6;
  const H = 16;
  const L = 4;
  const cfgs = opts.configurations ?? [
    { name: 'teacher', noise: 0, layers: Array(L).fill('teacher') },
    { name: 'engine', noise: 3, layers: Array(L).fill('engine-v0.1.1') },
    { name: 'adapter', noise: 1.5, layers: ['adapter-v1', 'adapter-v1', 'engine-v0.1.1', 'engine-v0.1.1'] },
    { name: 'hybrid', noise: 0.5, layers: ['adapter-v1', 'adapter-v1', 'teacher', 'teacher'] },
  ];
  const data = rng(opts.dataSeed ?? 1);
  const windows = Array.from({ length: W }, () => {
    const ids = Array.from({ length: T }, () => Math.floor(data() * V));
    const logits = Float32Array.from({ length: T * V }, () => 2.5 * gauss(data));
    // make the data likely under the teacher: boost the next token's logit
    for (let t = 0; t + 1 < T; t++) logits[t * V + ids[t + 1]!] += 3;
    const hidden = Array.from({ length: L + 1 }, () => Float32Array.from({ length: T * H }, () => gauss(data)));
    return { ids, logits, hidden };
  });
  const r = rng(opts.seed ?? 2);
  const contexts = [128, 512, 2048, 8192];
  const configurations = cfgs.map((cfg) => {
    const acc = new ComparisonAccumulator(4);
    const hid = new HiddenAccumulator();
    for (const w of windows) {
      const cand = Float32Array.from(w.logits, (x) => x + cfg.noise * gauss(r));
      acc.addWindow(w.logits, cand, V, w.ids, 0);
      for (let l = 1; l <= L; l++) {
        const hc = Float32Array.from(w.hidden[l]!, (x) => x + cfg.noise * 0.1 * l * gauss(r));
        hid.add(l, w.hidden[l]!, hc, H, 0, T - 1);
      }
    }
    const layers = cfg.layers ?? Array(L).fill('teacher');
    const softmaxLayers = layers.filter((p) => p === 'teacher').length;
    return configurationFromStats(
      { name: cfg.name, description: `synthetic ${cfg.name}`, weights: cfg.name === 'teacher' ? 'teacher' : 'student', layers, wall_s: 0.5 },
      (opts.perToken?.set(cfg.name, acc.perToken()), acc.result()),
      hid.result(),
      contexts.map((t) => softmaxLayers * t * 2 * 64 * 4 + (L - softmaxLayers) * 64 * 64 * 4),
    );
  });
  const scored = W * (T - 1);
  return {
    schema: REPORT_SCHEMA,
    created: '2025-01-01T00:00:00.000Z',
    tool: { name: 'synaxim', version: '0.1.0', node: process.version, tfjs: '4.22.0', vega: '6', vega_lite: '6' },
    backend: { name: 'cpu', detail: 'synthetic' },
    model: {
      name: 'synthetic',
      source: 'test',
      student: { dir: '/models/synthetic/symb-int4', format: 'symb', storage: 'int4/g128', hash: 'sha256:' + 'a'.repeat(64) },
      teacher: { dir: '/models/synthetic/hf', format: 'hf', storage: 'F32', hash: 'sha256:' + 'b'.repeat(64) },
      tokenizer: { dir: null, hash: null },
      config: { architecture: 'llama', hidden_size: H, num_layers: L, num_heads: 2, num_kv_heads: 1, head_dim: 8, vocab_size: V },
    },
    adapter: { dir: '/runs/a/symbiotic_adapter', hash: 'sha256:' + 'c'.repeat(64), layers: [0, 1], semantics: 'adapter-v1' },
    rest: 'engine-v0.1.1',
    suite: {
      name: 'synthetic',
      description: 'random logits',
      source: 'test',
      corpora: [{ source: 'builtin:synthetic', hash: 'sha256:' + 'd'.repeat(64), documents: W }],
      context: T,
      stride: null,
      max_seqs: null,
      token_budget: null,
      metrics: ['ppl', 'kld', 'same_top_p', 'delta_p', 'hidden', 'position', 'memory'],
      position_bucket: 4,
    },
    tokens: { scored, windows: W, documents: W, fed: W * T, hash: `sha256:${String(opts.dataSeed ?? 1).padStart(64, '0')}` },
    reference: 'teacher',
    wall_s: 2,
    configurations,
    memory: {
      contexts,
      kv_bytes_per_element: 4,
      state_bytes_per_element: 4,
      kv_bytes_per_token_per_layer: 2 * 64 * 4,
      state_bytes_per_layer: 64 * 64 * 4,
      break_even_context: 32,
      notes: 'synthetic',
    },
  };
}
