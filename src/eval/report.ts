/**
 * Evaluation reports: `report.json` (versioned schema `synaxim.eval/1`, documented in
 * docs/report-schema.md), `report.md` and `report.html` (one self-contained file: inline CSS and SVG
 * charts rendered in Node, no scripts, no network). Each file is written atomically; report.json
 * last, so a directory with a report.json holds a complete report.
 */
import path from 'node:path';
import { removeStaleTemps, writeFilesAtomic } from '../util/atomic.ts';
import { inBinaryUnits } from '../util/fileio.ts';
import { barWithErrors, lines, type Chart } from '../report/charts.ts';
import { htmlEscape, htmlPage, htmlTable, markdownTable, type Table } from '../report/html.ts';
import type { ComparisonStats, DeltaPStats, DistributionStats, HiddenLayerStats, PositionBucket, PplRatioStats } from './stats.ts';

export const REPORT_SCHEMA = 'synaxim.eval/1';

// The table helpers live in report/html.ts (shared with compare and sweep); re-exported for importers of this module.
export { markdownTable, type Table };

/** What the attention block of a layer is in a configuration (`window-W`: softmax over the last W positions). */
export type LayerPolicy = 'teacher' | 'engine-v0.1.1' | 'adapter-v1' | `adapter-window-${number}` | 'fixed' | `window-${number}`;

export interface ConfigurationReport {
  name: string;
  description: string;
  /** Whose weights: the teacher's (HF) directory or the student's (.symb or HF) directory. */
  weights: 'teacher' | 'student';
  /** Attention policy per layer, index = layer. */
  layers: LayerPolicy[];
  tokens: number;
  wall_s: number;
  ppl: number;
  ppl_stderr: number;
  nll: { mean: number; stderr: number };
  /** Against the reference configuration (the teacher), paired over the same tokens. */
  ppl_ratio: PplRatioStats;
  kld: DistributionStats;
  /** Fraction 0–1. */
  same_top_p: number;
  same_top_p_stderr: number;
  delta_p: DeltaPStats;
  by_position: PositionBucket[];
  kld_histogram: { lo: number; hi: number | null; count: number }[];
  /** Per hidden state (1 … L) against the teacher's; null when the `hidden` metric is off. */
  hidden: HiddenLayerStats[] | null;
  /** Bytes of attention memory (KV cache and/or gate states) at each of `memory.contexts`. */
  memory_bytes: number[] | null;
  /** `window-W` configurations: W, and whether it is the same-memory window (absent otherwise). */
  window?: number;
  same_memory?: boolean;
}

export interface WeightsInfo {
  dir: string;
  format: 'hf' | 'symb';
  storage: string;
  /** `sha256:<hex>` over the directory's files (names and bytes). */
  hash: string;
}

export interface MemoryReport {
  /** Context lengths (tokens) of the memory table. */
  contexts: number[];
  /** Bytes per KV-cache element assumed (2: fp16/bf16, as HF holds the cache). */
  kv_bytes_per_element: number;
  /** Bytes per gate-state element assumed (4: float32, as the engine holds it). */
  state_bytes_per_element: number;
  /** KV-cache bytes per token per softmax-attention layer. */
  kv_bytes_per_token_per_layer: number;
  /** Gate-state (M) bytes per gated layer, independent of context. */
  state_bytes_per_layer: number;
  /** Context length from which one gate state is smaller than the KV cache it replaces (null: never). */
  break_even_context: number | null;
  /** The most window positions whose KV cache fits in one gate state's bytes (the same-memory window W). */
  same_memory_window?: number;
  notes: string;
}

export interface EvalReport {
  schema: typeof REPORT_SCHEMA;
  created: string;
  /** One or two sentences computed from the figures (quantization, gate, adapter, same-memory window); what the report opens with. (Absent in reports written before it existed.) */
  verdict?: string[];
  tool: { name: 'synaxim'; version: string; node: string; tfjs: string; vega: string; vega_lite: string };
  backend: { name: string; detail: string };
  model: {
    name: string;
    source: string;
    student: WeightsInfo;
    teacher: WeightsInfo;
    tokenizer: { dir: string | null; hash: string | null };
    config: { architecture: string; hidden_size: number; num_layers: number; num_heads: number; num_kv_heads: number; head_dim: number; vocab_size: number };
  };
  adapter: {
    dir: string;
    hash: string;
    layers: number[];
    semantics: string;
    /** Weight files read: safetensors (ours), pt (the SYNAXIM scripts' symbiotic_adapter.pt), both. */
    format?: string;
    /** The adapter's recorded base model against the student: match, unrecorded (no hash; the scripts'), other-base (--allow-other-base). */
    base_model?: { status: string; name: string | null; recorded_hash: string | null; model_hash: string | null; note: string | null } | null;
  } | null;
  rest: LayerPolicy;
  suite: {
    name: string;
    description: string;
    source: string;
    corpora: { source: string; hash: string; documents: number }[];
    context: number;
    stride: number | null;
    max_seqs: number | null;
    token_budget: number | null;
    metrics: string[];
    position_bucket: number;
  };
  tokens: {
    /** Tokens scored (predictions compared), the n of every statistic. */
    scored: number;
    windows: number;
    documents: number;
    /** Tokens fed to each model (scored or context). */
    fed: number;
    /** `sha256:<hex>` of the windows' ids and scored ranges: equal hashes = same tokens. */
    hash: string;
  };
  /** Name of the configuration everything is compared with. */
  reference: string;
  wall_s: number;
  /** W of the same-memory window configuration when it ran (null: `--window none`; absent in older reports). */
  same_memory_window?: number | null;
  configurations: ConfigurationReport[];
  memory: MemoryReport | null;
  /** Configurations not run, and why (e.g. `hybrid` when the adapter covers every layer: it would be `adapter` again). Absent in older reports. */
  skipped?: { name: string; why: string }[];
  /** `--teacher-logits FILE`: the teacher's log-probs were read from FILE (computed earlier) or computed and written to it. */
  teacher_logits?: { file: string; status: 'read' | 'written' };
}

/** Statistics of one configuration as they go into the report. */
export function configurationFromStats(
  base: { name: string; description: string; weights: 'teacher' | 'student'; layers: LayerPolicy[]; wall_s: number; window?: number; same_memory?: boolean },
  s: ComparisonStats,
  hidden: HiddenLayerStats[] | null,
  memoryBytes: number[] | null,
): ConfigurationReport {
  return {
    ...base,
    tokens: s.ppl.tokens,
    ppl: s.ppl.ppl,
    ppl_stderr: s.ppl.ppl_stderr,
    nll: { mean: s.ppl.nll_mean, stderr: s.ppl.nll_stderr },
    ppl_ratio: s.ppl_ratio,
    kld: s.kld,
    same_top_p: s.same_top_p,
    same_top_p_stderr: s.same_top_p_stderr,
    delta_p: s.delta_p,
    by_position: s.by_position,
    // JSON has no Infinity: the open last bin is written with hi null.
    kld_histogram: s.kld_histogram.map((b) => ({ lo: b.lo, hi: Number.isFinite(b.hi) ? b.hi : null, count: b.count })),
    hidden,
    memory_bytes: memoryBytes,
  };
}

// ---------------------------------------------------------------- formatting

/** A number with `digits` significant digits, plain where sensible. */
export function fmt(x: number | null | undefined, digits = 4): string {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  if (!Number.isFinite(x)) return x > 0 ? '∞' : '−∞';
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e6 || a < 1e-4) return x.toExponential(digits - 1);
  return Number(x.toPrecision(digits)).toString();
}
export function pm(x: number, se: number, digits = 4): string {
  return `${fmt(x, digits)} ± ${fmt(se, 2)}`;
}
export function pct(x: number, se?: number): string {
  if (!Number.isFinite(x)) return '–';
  return se === undefined ? `${(100 * x).toFixed(2)}%` : `${(100 * x).toFixed(2)} ± ${(100 * se).toFixed(2)}%`;
}
/** Bytes for the report's tables: three significant digits ("64.0 MiB", "1.50 KiB", "128 MiB"). */
export function bytes(n: number): string {
  if (!Number.isFinite(n)) return '–';
  const { value: v, unit } = inBinaryUnits(n);
  return `${unit === 'B' ? v : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${unit}`;
}
function shortHash(h: string | null): string {
  if (!h) return '–';
  const [algo, hex] = h.split(':');
  return hex ? `${algo}:${hex.slice(0, 12)}` : h.slice(0, 16);
}

/** Layer policies as a compact string: "0-1 adapter-v1, 2-4 teacher". */
export function describeLayers(layers: LayerPolicy[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < layers.length) {
    let j = i;
    while (j + 1 < layers.length && layers[j + 1] === layers[i]) j++;
    parts.push(`${i === j ? i : `${i}-${j}`} ${layers[i]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

// ---------------------------------------------------------------- the verdict

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/**
 * What the report opens with: one or two sentences computed from the figures — what quantization
 * alone costs, what the gate costs, how much of that gap the adapter recovers, and what a KV window
 * of the same memory as one gated layer's state costs next to the gate. Only the configurations
 * that ran are mentioned; [] when only the reference ran.
 */
export function verdictSentences(r: EvalReport): string[] {
  const by = (n: string) => r.configurations.find((c) => c.name === n);
  const ref = by(r.reference);
  if (!ref) return [];
  const kld = (c: ConfigurationReport) => `${fmt(c.kld.mean, 3)} nats of KLD`;
  const ppl = (c: ConfigurationReport) => `PPL ${fmt(ref.ppl, 3)} → ${fmt(c.ppl, 3)}, top-1 agreement ${(100 * c.same_top_p).toFixed(1)}%`;
  const quant = by('teacher-on-student-weights');
  const engine = by('engine');
  const adapter = by('adapter');
  const out: string[] = [];
  const first: string[] = [];
  if (quant) first.push(`quantization alone (${r.model.student.storage}) costs ${kld(quant)} (${ppl(quant)})`);
  if (engine) first.push(`the gate (the published engine on every layer) costs ${kld(engine)} (${ppl(engine)})`);
  if (adapter) {
    const which = `the adapter (layers ${r.adapter?.layers.join(',') ?? '?'}, other layers ${r.rest})`;
    const floor = quant ? quant.kld.mean : 0;
    const gap = engine ? engine.kld.mean - floor : NaN;
    if (engine && gap > 0) {
      const recovered = (engine.kld.mean - adapter.kld.mean) / gap;
      first.push(
        recovered >= 0
          ? `${which} recovers ${(100 * recovered).toFixed(1)}% of that gap${quant ? ' above quantization' : ''} (${kld(adapter)}, ${ppl(adapter)})`
          : `${which} recovers none of that gap: it costs ${kld(adapter)}, ${(100 * -recovered).toFixed(1)}% of the gap more than the bare gate (${ppl(adapter)})`,
      );
    } else first.push(`${which} costs ${kld(adapter)} (${ppl(adapter)})`);
  }
  if (first.length > 0) out.push(capitalize(first.join('; ')) + '.');
  const same = r.configurations.find((c) => c.same_memory === true);
  if (same && same.window !== undefined) {
    const state = r.memory ? ` (${bytes(r.memory.state_bytes_per_layer)} per layer)` : '';
    let s = `A KV window of the same memory as one gated layer's state${state}, softmax attention over the last ${same.window} positions, costs ${kld(same)} (${ppl(same)})`;
    if (same.window >= r.suite.context) s += ` — at context ${r.suite.context} that window sees every position, so here it is full attention`;
    const gated = [engine, adapter].filter((c): c is ConfigurationReport => c !== undefined).sort((a, b) => a.kld.mean - b.kld.mean)[0];
    if (gated) {
      if (same.kld.mean < gated.kld.mean) {
        s +=
          same.kld.mean > 0
            ? `: ${fmt(gated.kld.mean / same.kld.mean, 3)}× less divergence than ${gated.name}, so the gated state does not beat a KV window of equal memory here`
            : `: no divergence at all, so the gated state does not beat a KV window of equal memory here`;
      } else {
        s += `: ${gated.name} diverges ${fmt(same.kld.mean / Math.max(gated.kld.mean, 1e-300), 3)}× less, so the gated state beats a KV window of equal memory`;
      }
    }
    out.push(s + '.');
  }
  return out;
}

// ---------------------------------------------------------------- tables (shared by md and html)

export function summaryTable(r: EvalReport): Table {
  return {
    title: 'Summary',
    header: ['configuration', 'layers', 'PPL', `PPL / PPL(${r.reference})`, 'mean KLD', 'median KLD', 'p99 KLD', 'max KLD', 'same top p', 'RMS Δp', 'mean Δp'],
    rows: r.configurations.map((c) => [
      c.same_memory ? `${c.name} (same memory)` : c.name,
      describeLayers(c.layers),
      pm(c.ppl, c.ppl_stderr),
      pm(c.ppl_ratio.ratio, c.ppl_ratio.ratio_stderr),
      pm(c.kld.mean, c.kld.stderr),
      fmt(c.kld.median),
      fmt(c.kld.p99),
      fmt(c.kld.max),
      pct(c.same_top_p, c.same_top_p_stderr),
      pct(c.delta_p.rms, c.delta_p.rms_stderr),
      pct(c.delta_p.mean, c.delta_p.mean_stderr),
    ]),
    note: `KLD = KL(${r.reference} ‖ configuration) per token, nats. ± = one standard error over the ${r.tokens.scored} scored tokens (ratio: paired over the same tokens, as llama.cpp's --kl-divergence). Δp = p(correct token) − p_${r.reference}(correct token).`,
  };
}

export function kldTable(r: EvalReport): Table {
  return {
    title: 'KL divergence distribution',
    header: ['configuration', 'mean', 'min', 'median', 'p90', 'p95', 'p99', 'p99.9', 'max'],
    rows: r.configurations.map((c) => [c.name, pm(c.kld.mean, c.kld.stderr), fmt(c.kld.min), fmt(c.kld.median), fmt(c.kld.p90), fmt(c.kld.p95), fmt(c.kld.p99), fmt(c.kld.p99_9), fmt(c.kld.max)]),
  };
}

export function hiddenTable(r: EvalReport): Table | null {
  const withHidden = r.configurations.filter((c) => c.hidden && c.hidden.length > 0);
  if (withHidden.length === 0) return null;
  const indices = [...new Set(withHidden.flatMap((c) => c.hidden!.map((h) => h.hidden)))].sort((a, b) => a - b);
  return {
    title: 'Hidden states per layer (relative MSE / mean cosine vs the teacher)',
    header: ['configuration', ...indices.map((i) => (i === 0 ? 'embeddings' : `after layer ${i - 1}`))],
    rows: withHidden.map((c) => [
      c.name,
      ...indices.map((i) => {
        const h = c.hidden!.find((x) => x.hidden === i);
        return h ? `${fmt(h.rel_mse, 3)} / ${fmt(h.cosine, 4)}` : '–';
      }),
    ]),
    note: 'relative MSE = Σ‖h − h_teacher‖² / Σ‖h_teacher‖² over the scored tokens; cosine = mean over tokens.',
  };
}

export function positionTable(r: EvalReport): Table | null {
  const cfgs = r.configurations.filter((c) => c.by_position.length > 0);
  if (cfgs.length === 0) return null;
  const starts = [...new Set(cfgs.flatMap((c) => c.by_position.map((b) => b.start)))].sort((a, b) => a - b);
  const width = r.suite.position_bucket;
  return {
    title: 'Mean KLD by position in the window',
    header: ['configuration', ...starts.map((s) => (width === 1 ? `${s}` : `${s}–${s + width - 1}`))],
    rows: cfgs.map((c) => [c.name, ...starts.map((s) => fmt(c.by_position.find((b) => b.start === s)?.kld_mean, 3))]),
    note: 'position = index of the predicting token in its window (0 = BOS).',
  };
}

export function memoryTable(r: EvalReport): Table | null {
  if (!r.memory) return null;
  const cfgs = r.configurations.filter((c) => c.memory_bytes);
  return {
    title: 'Attention memory vs context length (one sequence)',
    header: ['configuration', ...r.memory.contexts.map((t) => `${t} tokens`)],
    rows: cfgs.map((c) => [c.name, ...c.memory_bytes!.map(bytes)]),
    note:
      `KV cache ${bytes(r.memory.kv_bytes_per_token_per_layer)} per token per softmax layer (a window-W layer keeps at most W positions); gate state ${bytes(r.memory.state_bytes_per_layer)} per gated layer. ` +
      r.memory.notes,
  };
}

export function configurationsTable(r: EvalReport): Table {
  return {
    title: 'Configurations',
    header: ['configuration', 'weights', 'what it is', 'tokens', 'seconds'],
    rows: r.configurations.map((c) => [c.name, c.weights, c.description, String(c.tokens), fmt(c.wall_s, 3)]),
  };
}

export function reportTables(r: EvalReport): Table[] {
  return [summaryTable(r), configurationsTable(r), kldTable(r), hiddenTable(r), positionTable(r), memoryTable(r)].filter((t): t is Table => t !== null);
}

// ---------------------------------------------------------------- charts

/** Cumulative fraction of tokens with KLD ≤ x at each histogram edge. */
function kldCdf(c: ConfigurationReport): { x: number; y: number }[] {
  const total = c.kld_histogram.reduce((a, b) => a + b.count, 0);
  const out: { x: number; y: number }[] = [];
  let acc = 0;
  for (const b of c.kld_histogram) {
    acc += b.count;
    if (b.hi !== null) out.push({ x: b.hi, y: total ? acc / total : 0 });
  }
  return out;
}

export function reportCharts(r: EvalReport): Chart[] {
  const cfgs = r.configurations;
  const others = cfgs.filter((c) => c.name !== r.reference);
  // One colour per configuration in every chart, the reference's included.
  const colorDomain = cfgs.map((c) => c.name);
  const charts: Chart[] = [
    {
      id: 'ppl',
      title: 'Perplexity per configuration',
      spec: barWithErrors(
        'Perplexity per configuration (± 1 s.e.)',
        cfgs.map((c) => ({ label: c.name, value: c.ppl, stderr: c.ppl_stderr })),
        'perplexity',
        { colorDomain },
      ),
    },
  ];
  const ref = r.reference;
  if (others.length > 0) {
    charts.push({
      id: 'kld-mean',
      title: 'Mean KLD per configuration',
      spec: barWithErrors(
        `Mean KL(${ref} ‖ ·) per configuration (± 1 s.e.; ${ref} = 0)`,
        cfgs.map((c) => ({ label: c.name, value: c.name === ref ? 0 : c.kld.mean, stderr: c.name === ref ? 0 : c.kld.stderr })),
        'mean KLD (nats)',
        { colorDomain },
      ),
    });
    charts.push({
      id: 'kld',
      title: 'KLD distribution',
      spec: lines(
        `KL(${r.reference} ‖ ·) per token: cumulative distribution`,
        others.flatMap((c) => kldCdf(c).map((p) => ({ series: c.name, ...p }))),
        { xTitle: 'KLD per token (nats, log scale)', yTitle: 'fraction of tokens ≤ KLD', xLog: true, yDomain: [0, 1], xFormat: '~g', colorDomain, reference: { series: ref, y: 1 } },
      ),
    });
    const pos = others.flatMap((c) => c.by_position.map((b) => ({ series: c.name, x: b.start + (r.suite.position_bucket - 1) / 2, y: b.kld_mean })));
    if (pos.length > 0) {
      const positive = pos.filter((p) => p.y > 0);
      const span = positive.length ? Math.max(...positive.map((p) => p.y)) / Math.min(...positive.map((p) => p.y)) : 1;
      charts.push({
        id: 'position',
        title: 'Divergence vs position',
        spec: lines('Mean KLD vs position in the window', pos, { xTitle: 'position of the predicting token', yTitle: 'mean KLD (nats)', yLog: span > 100, colorDomain, reference: { series: ref, y: 0 } }),
      });
    }
    // x = layer l (hidden state after it, hidden.{l+1}); the embeddings (hidden.0) are in the table only.
    const layerRows = others.flatMap((c) => (c.hidden ?? []).filter((h) => h.hidden > 0).map((h) => ({ series: c.name, x: h.hidden - 1, y: h.rel_mse })));
    if (layerRows.length > 0) {
      charts.push({
        id: 'layers',
        title: 'Per-layer error',
        spec: lines('Hidden-state relative MSE after each layer', layerRows, { xTitle: 'layer', yTitle: 'relative MSE (log scale)', yLog: true, xInteger: true, colorDomain, reference: { series: ref, y: 0 } }),
      });
      charts.push({
        id: 'cosine',
        title: 'Per-layer cosine',
        spec: lines(
          'Hidden-state cosine similarity after each layer',
          others.flatMap((c) => (c.hidden ?? []).filter((h) => h.hidden > 0).map((h) => ({ series: c.name, x: h.hidden - 1, y: h.cosine }))),
          { xTitle: 'layer', yTitle: 'mean cosine similarity', xInteger: true, colorDomain, reference: { series: ref, y: 1 } },
        ),
      });
    }
  }
  if (r.memory) {
    const mem = cfgs.filter((c) => c.memory_bytes).flatMap((c) => r.memory!.contexts.map((t, i) => ({ series: c.name, x: t, y: c.memory_bytes![i]! })));
    if (mem.length > 0) {
      charts.push({
        id: 'memory',
        title: 'Memory vs context',
        spec: lines('Attention memory vs context length', mem, { xTitle: 'context length (tokens, log scale)', yTitle: 'bytes (log scale)', xLog: true, yLog: true, xFormat: '~s', yFormat: '~s', colorDomain }),
      });
    }
  }
  return charts;
}

// ---------------------------------------------------------------- markdown

export function headerLines(r: EvalReport): string[] {
  const a = r.adapter;
  return [
    `model: ${r.model.name} — student ${r.model.student.format} ${r.model.student.storage} (${shortHash(r.model.student.hash)}), teacher ${r.model.teacher.format} ${r.model.teacher.storage} (${shortHash(r.model.teacher.hash)})`,
    `adapter: ${a ? `${a.dir} — layers ${a.layers.join(',')} (${a.semantics}, ${shortHash(a.hash)}); other layers: ${r.rest}` : 'none'}`,
    ...(a?.base_model?.note ? [`adapter base model: ${a.base_model.status === 'other-base' ? '**other base model** — ' : ''}${a.base_model.note}`] : []),
    `suite: ${r.suite.name} — ${r.suite.description || r.suite.source}; context ${r.suite.context}${r.suite.stride ? `, stride ${r.suite.stride}` : ''}`,
    ...(r.skipped ?? []).map((k) => `not run: ${k.name} — ${k.why}`),
    `tokens: ${r.tokens.scored} scored in ${r.tokens.windows} windows from ${r.tokens.documents} documents (${shortHash(r.tokens.hash)})`,
    `backend: ${r.backend.name} (${r.backend.detail}); synaxim ${r.tool.version}, tfjs ${r.tool.tfjs}, node ${r.tool.node}; ${r.created}; ${fmt(r.wall_s, 3)} s`,
  ];
}

/** The verdict of a report (computed for reports written before it was stored). */
export function reportVerdict(r: EvalReport): string[] {
  return Array.isArray(r.verdict) ? r.verdict : verdictSentences(r);
}

export function renderMarkdown(r: EvalReport): string {
  const verdict = reportVerdict(r);
  const out = [`# SYNAXIM evaluation: ${r.model.name}, ${r.suite.name}`, '', ...(verdict.length ? [`**Verdict.** ${verdict.join(' ')}`, ''] : []), ...headerLines(r).map((l) => `- ${l}`), ''];
  for (const t of reportTables(r)) out.push(markdownTable(t), '');
  out.push('Charts (perplexity, KLD distribution, divergence vs position, per-layer error, memory vs context): report.html.');
  return out.join('\n');
}

// ---------------------------------------------------------------- html

const CSS = `
body { font-family: Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 6px; }
h2 { font-size: 16px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
ul.meta { font-size: 13px; color: #444; padding-left: 18px; }
table { border-collapse: collapse; font-size: 13px; margin-top: 6px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
td:first-child { white-space: normal; overflow-wrap: anywhere; min-width: 8em; } /* a long configuration name wraps instead of widening the page */
thead th { background: #f4f4f4; }
td.flag { background: #fff1c2; font-weight: bold; }
p.note { font-size: 12px; color: #666; max-width: 1000px; }
p.verdict { font-size: 15px; max-width: 1000px; background: #f6f8fa; border-left: 4px solid #4c78a8; padding: 8px 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; }
figure.chart { margin: 0; border: 1px solid #eee; padding: 8px; }
`;

export async function renderHtml(r: EvalReport): Promise<string> {
  const verdict = reportVerdict(r);
  return htmlPage({
    title: `SYNAXIM evaluation: ${r.model.name}, ${r.suite.name}`,
    css: CSS,
    intro: verdict.length ? [`<p class="verdict" id="verdict"><strong>Verdict.</strong> ${htmlEscape(verdict.join(' '))}</p>`] : [],
    meta: headerLines(r),
    sections: reportTables(r).map((t) => htmlTable(t)),
    charts: reportCharts(r),
    data: r,
  });
}

/** Replace non-finite numbers (JSON has none) with null, recursively. */
export function jsonSafe<T>(x: T): T {
  return JSON.parse(JSON.stringify(x, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)));
}

/**
 * Write report.md, report.html, then report.json (staged, then renamed in with report.json last;
 * an older report.json is moved aside first, so an interrupted write never leaves a report.json
 * beside files it does not describe, and a failed one leaves the older report as it was).
 * Everything is rendered before the first file is touched, which keeps the window in which a kill
 * leaves md/html without a report.json to the few milliseconds of the writes.
 */
export async function writeReport(dir: string, report: EvalReport, extra: { name: string; data: string | Uint8Array }[] = []): Promise<{ json: string; md: string; html: string }> {
  const r = jsonSafe(report);
  const paths = { json: path.join(dir, 'report.json'), md: path.join(dir, 'report.md'), html: path.join(dir, 'report.html') };
  const md = renderMarkdown(r) + '\n';
  const html = await renderHtml(r);
  const json = JSON.stringify(r, null, 2) + '\n';
  removeStaleTemps(dir); // half-written temporaries of an earlier eval that was killed while writing
  // All three are staged first (a full disk leaves the older report whole); report.json goes in last
  // and an older one is moved aside before the first rename, so it never vouches for the new md/html.
  // `extra` (per_token.safetensors) is staged with them, so it never sits beside another run's report.json.
  writeFilesAtomic(dir, [...extra, { name: 'report.md', data: md }, { name: 'report.html', data: html }, { name: 'report.json', data: json }], 'report.json');
  return paths;
}
