/**
 * reports/bench/README.md from a BenchReport: the machine, the headline table, one table per
 * section, and charts (vega-lite specs rendered to SVG with src/report/charts.ts, written beside it).
 */
import path from 'node:path';
import { writeFileAtomic } from '../src/util/atomic.ts';
import { lines, renderSvg } from '../src/report/charts.ts';
import type { BenchReport } from './run.ts';

function table(header: string[], rows: (string | number | null | undefined)[][]): string {
  const cell = (v: string | number | null | undefined) => (v === null || v === undefined ? '–' : String(v)).replace(/\|/g, '\\|');
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`)].join('\n');
}

/** Chart specs of a report (exported for tests): time per token vs T, and the gate's time vs T. */
export function benchCharts(r: BenchReport): { file: string; title: string; spec: Record<string, unknown> }[] {
  const charts: { file: string; title: string; spec: Record<string, unknown> }[] = [];
  if (r.scaling && r.scaling.rows.length > 1) {
    const rows = r.scaling.rows.flatMap((x) => [
      { series: 'distill step (1 seq)', x: x.T, y: x.distillStepMs },
      { series: 'eval: teacher + engine layer', x: x.T, y: x.evalLayerMs },
      { series: 'teacher layer', x: x.T, y: x.teacherLayerMs },
      { series: 'student (engine) layer', x: x.T, y: x.studentLayerMs },
      { series: 'teacher attention only', x: x.T, y: x.attentionOnlyMs },
      { series: 'gate only', x: x.T, y: x.gateOnlyMs },
    ]);
    charts.push({
      file: 'scaling.svg',
      title: `Cost vs sequence length, one ${r.scaling.shape} layer (log-log: slope 1 = linear, 2 = quadratic)`,
      spec: lines(`Time vs T, one ${r.scaling.shape} layer`, rows, { xTitle: 'tokens T', yTitle: 'ms', xLog: true, yLog: true }),
    });
  }
  if (r.gate && r.gate.rows.length > 0) {
    const rows = r.gate.rows.flatMap((g) => [
      { series: 'per-token loop (scripts), fwd+bwd', x: g.T, y: g.loopFwdBwdMsAtT },
      { series: 'chunked (with final state), fwd+bwd', x: g.T, y: g.chunkedFwdBwdMs },
      { series: 'chunked training path, fwd+bwd', x: g.T, y: g.chunkedOutputFwdBwdMs },
    ]);
    charts.push({
      file: 'gate.svg',
      title: `Symbiotic gate forward+backward, D ${r.gate.rows[0]!.D}`,
      spec: lines(`Gate fwd+bwd, D ${r.gate.rows[0]!.D}`, rows, { xTitle: 'tokens T', yTitle: 'ms', xLog: true, yLog: true }),
    });
  }
  return charts;
}

/**
 * What the numbers say, as bullet points computed from them (so a re-run keeps the text true):
 * where memory and time go at Magnus scale, and what would fix it.
 */
export function findings(r: BenchReport): string[] {
  const out: string[] = [];
  const tm = r.trainmemory?.rows ?? [];
  const asIs = tm.find((t) => t.variant === 'as is');
  const fixed = tm.find((t) => t.variant === 'with wasmFixes');
  if (asIs && fixed) {
    out.push(
      `**Training memory.** One distill step of one ${asIs.shape} layer over ${asIs.sequences} sequences ${asIs.ok ? `takes the wasm heap to ${asIs.heapMiBAfter} MiB` : `exhausts the 4 GiB wasm heap (${asIs.error}; heap ${asIs.heapMiBAfter} MiB when it failed)`}: ` +
        'tfjs clones every tensor a kernel saves for backprop, and on wasm `Identity` is a copy, so each `linear` on the tape copies its weight (one layer, per sequence); ' +
        'the backward then materialises Wᵀ for dX = dY·Wᵀ (another copy, per use, which XNNPACK packs again). ' +
        `With src/runtime/wasmFixes.ts (zero-copy Identity; dX = (W·dYᵀ)ᵀ) the same step peaks at ${fixed.heapMiBAfter} MiB${fixed.stepMs !== null ? ` in ${fixed.stepMs} ms` : ''}, same loss, same gradients.`,
    );
  }
  const ph = r.phases?.rows ?? [];
  const dAsIs = ph.find((f) => f.variant === 'as is' && f.phase.startsWith('distill'));
  const dFixed = ph.find((f) => f.variant === 'with wasmFixes' && f.phase.startsWith('distill'));
  if (dAsIs && dFixed) {
    out.push(
      `**Distill step speed.** As is ${dAsIs.fractionOfPeak} of peak matmul throughput, ${dAsIs.weightTransposeMs} of its ${dAsIs.phaseMs} ms are the backward's weight transposes (tfjs-wasm transposes at ~0.25 GB/s); with the fixes ${dFixed.fractionOfPeak} of peak (${dFixed.sequences} sequences).`,
    );
  }
  const t = r.phases?.timings;
  if (t?.weightLeftMs) {
    const names = Object.keys(t.matmulMs) as (keyof typeof t.matmulMs)[];
    const plain = names.reduce((a, m) => a + t.matmulMs[m], 0);
    const left = names.reduce((a, m) => a + t.weightLeftMs[m], 0);
    out.push(
      `**Weight orientation.** At T ${t.T} the layer's products run ${Math.round((plain / left) * 100) / 100}× faster as (W'·xᵀ)ᵀ with W' [out, in] on the left than as x·W with W [in, out] (what \`linear\` does), and the left operand is never packed: ` +
        'storing weights as PyTorch does ([out, in]) would also drop XNNPACK\'s packed second copy of every weight (the heap holds ~2× each layer while it runs — see the streaming table) and the host transpose on every upload.',
    );
  }
  const ll = r.layerload?.rows ?? [];
  if (ll.length) {
    out.push(
      `**Streaming a Magnus layer.** ${ll.map((l) => `${l.storage}: decode ${l.decodeMs} ms + transpose/upload ${l.uploadMs} ms`).join('; ')} per layer, per pass (a teacher layer computes 64 tokens in ~${r.phases?.rows[0]?.phaseMs ?? '?'} ms): a pass over fewer than a few hundred tokens spends more time loading weights than computing, so eval batches and distill steps should be as large as memory allows, and decoding must keep layers resident. Most of the upload is the host transpose to [in, out], which the [out, in] orientation would remove.`,
    );
  }
  const sh = r.throughput?.shapes[0];
  if (sh) {
    out.push(
      `**Recurrent decode at ${sh.shape} width.** ${sh.perLayer.studentDecodeMsPerToken} ms per token per layer vs ${sh.perLayer.teacherDecodeMsPerToken} ms for the teacher's KV-cache step at context ${sh.perLayer.decodeContext}: each step rewrites the ${Math.round(sh.stateBytesPerLayer / 2 ** 20)} MiB D×D state with three element-wise tfjs ops (outer product, g·M, add), which tfjs-wasm runs far below memory bandwidth. ` +
        'The state wins on memory (no KV cache); on speed it wins only when the KV cache outgrows the state. Fix in the engine: a decode buffer of the last C tokens with the chunked form every C tokens (one [D,C]·[C,D] matmul instead of C element-wise D×D updates).',
    );
  }
  if (r.scaling) {
    const rows = r.scaling.rows;
    const last = rows[rows.length - 1]!;
    out.push(
      `**Growth in T.** Over T ${rows[0]!.T}–${last.T} a ${r.scaling.shape} layer is linear (teacher ${r.scaling.exponents.teacherLayer}, student ${r.scaling.exponents.studentLayer}); the teacher's attention alone grows with exponent ${r.scaling.exponents.attentionOnly} but is ${Math.round((last.attentionOnlyMs / last.teacherLayerMs) * 1000) / 10}% of the layer at T ${last.T}. ` +
        `The gate alone grows ~T² (${r.scaling.exponents.gateOnly}) up to its chunk size (512 at this width: one chunk is exact masked attention-like work), linear beyond. The distill step's exponent (${r.scaling.exponents.distillStep}) is below 1 because its per-step weight transposes are a fixed cost.`,
    );
  }
  const ev = r.magnus?.runs.find((m) => m.name.startsWith('eval'));
  if (ev) out.push(`**Magnus eval.** ${ev.exitCode === 0 ? 'Completes' : 'Fails'} at ${ev.peakRssGiB} GiB peak RSS in ${ev.wallSec} s${ev.note ? ` (${ev.note})` : ''}.`);
  return out;
}

export function benchMarkdown(r: BenchReport, charts: { file: string; title: string }[]): string {
  const m = r.machine;
  const out: string[] = [];
  out.push('# SYNAXIM benchmark (`synaxim bench`)', '');
  out.push(
    `Measured ${r.created} with preset \`${r.preset}\`. Every figure is a ratio of two measurements taken in the same run (interleaved, medians), so machine speed and load cancel as far as possible; absolute times are for this machine only.`,
    '',
  );
  out.push('## Machine', '');
  out.push(
    table(
      ['CPU', 'cores', 'memory', 'Node', 'tfjs', 'backend', 'load average at start'],
      [[m.cpuModel, `${m.cores} (usable ${m.availableParallelism})`, `${m.memoryGiB} GiB`, m.node, m.tfjs, `${m.backend} — ${m.backendDetail}`, m.loadavg.join(' / ')]],
    ),
    '',
  );
  out.push('## Headline', '');
  out.push(table(['figure', 'value', 'target', 'meets', 'note'], r.headline.map((h) => [h.figure, h.value, h.target, h.meets === null ? '' : h.meets ? 'yes' : 'NO', h.note])), '');
  for (const c of charts) out.push(`![${c.title}](${c.file})`, '');
  const f = findings(r);
  if (f.length) out.push('## Findings', '', ...f.map((x) => `- ${x}`), '');

  if (r.gate) {
    out.push(`## (a) Gate: chunked-parallel vs per-token loop (measured ${r.gate.measuredAt})`, '');
    out.push(
      table(
        ['D', 'T', 'chunk', 'chunked fwd+bwd ms', 'training path fwd+bwd ms', 'loop fwd+bwd ms/token', 'loop at T ms', 'speed-up', 'training-path speed-up', 'forward speed-up'],
        r.gate.rows.map((g) => [g.D, g.T, g.chunk, g.chunkedFwdBwdMs, g.chunkedOutputFwdBwdMs, g.loopFwdBwdMsPerToken, g.loopFwdBwdMsAtT, `${g.speedup}×`, `${g.speedupTrainingPath}×`, `${g.forwardSpeedup}×`]),
      ),
      '',
      ...r.gate.rows.map((g) => `- T ${g.T}: ${g.note}.`),
      '',
    );
  }
  if (r.phases) {
    out.push(`## (b) Matmul-bound phases vs the backend's peak matmul throughput (measured ${r.phases.measuredAt})`, '');
    out.push(
      table(
        ['variant', 'phase', 'shape', 'T', 'sequences', 'phase ms', 'Σ bare matmuls ms', 'GFLOP', 'achieved GFLOP/s', 'peak GFLOP/s', 'fraction', 'weight transposes ms', 'fraction without them'],
        r.phases.rows.map((f) => [f.variant ?? '', f.phase, f.shape, f.T, f.sequences, f.phaseMs, f.idealMatmulMs, f.matmulGflop, f.achievedGflops, f.peakGflops, f.fractionOfPeak, f.weightTransposeMs, f.fractionWithoutTransposes]),
      ),
      '',
      'Peak at a shape = the faster of the backend\'s two plain-matmul forms of that product, timed on the layer\'s own weights: ' +
        '`x·W` (W [in, out], what `linear` runs; XNNPACK packs W into a second copy) and `(W\'·xᵀ)ᵀ` (W\' [out, in] as the left operand: never packed). ms per projection, x·W / (W\'·xᵀ)ᵀ: ' +
        Object.entries(r.phases.timings.matmulMs)
          .map(([k, v]) => `${k} ${Math.round(v * 10) / 10} / ${Math.round((r.phases!.timings.weightLeftMs?.[k as keyof typeof r.phases.timings.matmulMs] ?? NaN) * 10) / 10}`)
          .join(', ') +
        '. The distill step\'s backward products are timed by the forward product of the same shape (DISTILL_BACKWARD in phases.ts).',
      '',
    );
  }
  if (r.trainmemory) {
    out.push(`## Training memory on the wasm heap (measured ${r.trainmemory.measuredAt})`, '');
    out.push(
      'One distill step (runPass with gradients) of one layer, each variant in a fresh worker. "with wasmFixes" = src/runtime/wasmFixes.ts: zero-copy wasm Identity (tensors saved for backprop are no longer cloned) and the weight-left form of the matmul input gradient (no transposed or packed copy of the weight).',
      '',
      table(
        ['variant', 'shape', 'T', 'sequences', 'heap before step MiB', 'heap after step MiB', 'step ms', 'loss', 'd loss / d gate_bias', 'error'],
        r.trainmemory.rows.map((t) => [t.variant, t.shape, t.T, t.sequences, t.heapMiBBefore, t.heapMiBAfter, t.stepMs, t.loss, t.gradGateBias, t.error]),
      ),
      '',
    );
  }
  if (r.throughput) {
    out.push(`## (c) Tokens per second (measured ${r.throughput.measuredAt})`, '');
    if (r.throughput.models.length) {
      out.push(
        table(
          ['model', 'layers', 'teacher prefill tok/s', 'prefill batch', 'student recurrent decode tok/s', 'teacher KV decode tok/s', 'student / teacher', 'decode context'],
          r.throughput.models.map((x) => [x.model, x.layers, x.prefill.tokensPerSec, `${x.prefill.sequences} × ${x.prefill.T}`, x.decode.studentTokensPerSec, x.decode.teacherTokensPerSec, `${x.decode.studentOverTeacher}×`, x.decode.context]),
        ),
        '',
      );
    }
    for (const s of r.throughput.shapes) {
      out.push(
        table(
          ['shape', 'per layer: prefill tok/s (T)', 'per layer: student decode ms/token', 'per layer: teacher decode ms/token (context)', 'lm_head decode ms', 'EXTRAPOLATED whole model: prefill tok/s', 'student decode tok/s', 'teacher decode tok/s'],
          [[s.shape, `${s.perLayer.prefillTokensPerSec} (${s.perLayer.prefillT})`, s.perLayer.studentDecodeMsPerToken, `${s.perLayer.teacherDecodeMsPerToken} (${s.perLayer.decodeContext})`, s.lmHeadDecodeMs, s.extrapolated.prefillTokensPerSec, s.extrapolated.studentDecodeTokensPerSec, s.extrapolated.teacherDecodeTokensPerSec]],
        ),
        '',
        `- ${s.extrapolated.label}.`,
        '',
      );
    }
  }
  if (r.scaling) {
    out.push(`## (d) How cost grows with T, one ${r.scaling.shape} layer (measured ${r.scaling.measuredAt})`, '');
    out.push(
      table(
        ['T', 'distill step ms', 'eval (teacher + engine) ms', 'teacher layer ms', 'student layer ms', 'teacher attention ms', 'gate ms', 'teacher prefill / peak', 'distill step / peak'],
        r.scaling.rows.map((x) => [x.T, x.distillStepMs, x.evalLayerMs, x.teacherLayerMs, x.studentLayerMs, x.attentionOnlyMs, x.gateOnlyMs, x.fractionOfPeak.teacherPrefill, x.fractionOfPeak.distillStep]),
      ),
      '',
      `Growth exponents (slope of log time on log T; 1 = linear, 2 = quadratic): ${Object.entries(r.scaling.exponents)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}.`,
      '',
    );
  }
  if (r.workers) {
    out.push(`## Worker threads: 1 vs 2 (measured ${r.workers.measuredAt})`, '');
    out.push(table(['work', '1 worker ms', '2 workers ms', 'speed-up', 'note'], r.workers.rows.map((w) => [w.work, w.oneWorkerMs, w.twoWorkersMs, `${w.speedup}×`, w.note])), '');
  }
  if (r.layerload) {
    out.push(`## Streaming one Magnus layer (measured ${r.layerload.measuredAt})`, '');
    out.push(table(['directory', 'storage', 'decode to f32 ms', 'transpose + upload ms', 'f32 MiB'], r.layerload.rows.map((l) => [l.dir, l.storage, l.decodeMs, l.uploadMs, Math.round(l.bytesF32 / 2 ** 20)])), '');
    if (r.layerload.heap?.length) {
      out.push(
        'Wasm heap (MiB) after streaming layers 0–3 (upload, one teacher layer pass at T 64, dispose), each upload order in a fresh worker:',
        '',
        table(['upload order', 'layer MiB', 'heap after each layer MiB'], r.layerload.heap.map((h) => [h.order, h.layerMiB, h.heapMiBAfterLayer.join(', ')])),
        '',
      );
    }
  }
  if (r.magnus) {
    out.push(`## Magnus-shaped runs (measured ${r.magnus.measuredAt}; limit ${r.magnus.limitGiB} GiB peak RSS)`, '');
    out.push(table(['run', 'exit', 'wall s', 'peak RSS GiB', 'command'], r.magnus.runs.map((x) => [x.name, x.exitCode, x.wallSec, x.peakRssGiB, `\`${x.command}\``])), '');
  }
  out.push('## Peak RSS of the bench process (e)', '');
  out.push(table(['after section', 'maxRSS MiB (resourceUsage)', 'VmHWM MiB', 'VmRSS MiB'], Object.entries(r.rss).map(([k, v]) => [k, v.maxRssMiB, v.vmHwmMiB, v.vmRssMiB])), '');
  out.push('The complete numbers are in `bench.json`; `npm run bench` (or `synaxim bench [--quick] [--magnus DIR]`) regenerates them.', '');
  return out.join('\n');
}

/** Render the charts and write README.md into `dir`. */
export async function writeBenchReadme(dir: string, r: BenchReport): Promise<void> {
  const charts = benchCharts(r);
  for (const c of charts) writeFileAtomic(path.join(dir, c.file), await renderSvg(c.spec));
  writeFileAtomic(path.join(dir, 'README.md'), benchMarkdown(r, charts));
}
