/**
 * reports/bench/README.md from a BenchReport: the machine, the headline table, one table per
 * section, and charts (vega-lite specs rendered to SVG with src/report/charts.ts, written beside it).
 */
import path from 'node:path';
import { writeFileAtomic } from '../src/util/atomic.ts';
import { lines, renderSvg } from '../src/report/charts.ts';
import type { BenchReport } from './run.ts';

const sigText = (x: number) => String(Number(x.toPrecision(3)));

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
  const nat = r.native?.rows.filter((n) => !n.skipped) ?? [];
  if (nat.length) {
    const l = r.native!.limits;
    out.push(
      `**Native engine against the machine.** ${nat.map((n) => `${n.figure}: ${n.tokensPerSec} tok/s = ${n.rate} ${n.kind === 'prefill' ? 'GFLOP/s' : 'GB/s'}, ${n.fraction} of the ${n.limit} (${n.kind === 'prefill' ? `${l.sgemmPeakGflops} GFLOP/s` : `${l.copyGbPerSec} GB/s`})`).join('; ')}.`,
    );
  }
  const tfjsPrefill = r.phases?.rows.find((f) => f.phase.startsWith('teacher') && f.variant === 'as is');
  if (tfjsPrefill && tfjsPrefill.fractionOfSgemmPeak !== null) {
    out.push(
      `**The tfjs reference backend.** One ${tfjsPrefill.shape} teacher layer at T ${tfjsPrefill.T} runs at ${tfjsPrefill.achievedGflops} GFLOP/s, ${tfjsPrefill.fractionOfSgemmPeak} of the machine's sgemm peak (${r.phases!.limits.sgemmPeakGflops} GFLOP/s, ${r.phases!.limits.sgemmPeakLibrary}).`,
    );
  }
  const ll = r.layerload?.rows ?? [];
  if (ll.length) {
    out.push(
      `**Streaming a Magnus layer.** ${ll.map((l) => `${l.storage}: decode ${l.decodeMs} ms + transpose/upload ${l.uploadMs} ms`).join('; ')} per layer, per pass (a teacher layer computes 64 tokens in ~${r.phases?.rows[0]?.phaseMs ?? '?'} ms): a pass over fewer than a few hundred tokens spends more time loading weights than computing, so eval batches and distill steps should be as large as memory allows, and decoding must keep layers resident.`,
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
        `The gate alone grows ~T² (${r.scaling.exponents.gateOnly}) up to its chunk size (512 at this width: one chunk is exact masked attention-like work), linear beyond. The distill step's exponent is ${r.scaling.exponents.distillStep}.`,
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
    `Measured ${r.created} with preset \`${r.preset}\`. Every speed is also given as a fraction of this machine's own limits, measured in the same run (below): prefill and training GFLOP/s ÷ the sgemm peak, decode bytes/s ÷ the memory-copy bandwidth. Other figures are ratios of two measurements of the same run (interleaved, medians). Absolute times are for this machine only.`,
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
  const l = m.limits;
  if (l) {
    out.push(`### Limits (measured ${l.measuredAt})`, '');
    out.push(
      table(
        ['limit', 'how', 'threads', 'median ms', 'value'],
        [
          ...l.sgemm.map((g) => [`sgemm${g.library === l.sgemmPeakLibrary ? ' (reference peak)' : ''}`, `${g.library}: fp32 ${g.n}×${g.n}·${g.n}×${g.n}, ${g.reps} reps`, g.threads, g.medianMs, `${g.gflops} GFLOP/s`]),
          ...l.copy.map((c) => [`memory copy${c.gbPerSec === l.copyGbPerSec ? ' (reference)' : ''}`, `${c.method} of ${Math.round(c.bytes / 2 ** 20)} MiB, ${c.reps} reps; bytes read + written`, 1, c.medianMs, `${c.gbPerSec} GB/s`]),
        ],
      ),
      '',
    );
    if (l.numpyNote) out.push(`numpy: ${l.numpyNote}.`, '');
  }
  out.push('## Headline', '');
  out.push(
    table(
      ['figure', 'value', 'rate', 'of the machine limit', 'target', 'meets', 'note'],
      r.headline.map((h) => [h.figure, h.value, h.rate ? `${h.rate.value} ${h.rate.unit}` : null, h.ofLimit ? `${h.ofLimit.fraction} of ${h.ofLimit.limit}` : null, h.target, h.meets === null ? '' : h.meets ? 'yes' : 'NO', h.note]),
    ),
    '',
  );
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
    out.push(`## (b) Matmul-bound phases on the tfjs reference backend vs the sgemm peak (measured ${r.phases.measuredAt})`, '');
    out.push(
      table(
        ['variant', 'phase', 'shape', 'T', 'sequences', 'phase ms', 'GFLOP', 'GFLOP/s', 'sgemm peak GFLOP/s', 'fraction of sgemm peak'],
        r.phases.rows.map((f) => [f.variant ?? '', f.phase, f.shape, f.T, f.sequences, f.phaseMs, f.matmulGflop, f.achievedGflops, r.phases!.limits.sgemmPeakGflops, f.fractionOfSgemmPeak]),
      ),
      '',
      'GFLOP counts the layer\'s projections (the distill step adds the input gradients through down, gate, up and o).',
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
          ['model', 'layers', 'teacher prefill tok/s', 'prefill batch', 'prefill GFLOP/s', 'of sgemm peak', 'student recurrent decode tok/s', 'decode GB/s', 'of copy bandwidth', 'teacher KV decode tok/s', 'student / teacher', 'decode context'],
          r.throughput.models.map((x) => [x.model, x.layers, x.prefill.tokensPerSec, `${x.prefill.sequences} × ${x.prefill.T}`, x.prefill.gflops, x.fractionOfSgemmPeak.prefill, x.decode.studentTokensPerSec, x.decode.studentGbPerSec, x.fractionOfCopy.studentDecode, x.decode.teacherTokensPerSec, `${x.decode.studentOverTeacher}×`, x.decode.context]),
        ),
        '',
      );
    }
    for (const s of r.throughput.shapes) {
      out.push(
        table(
          ['shape', 'per layer: prefill tok/s (T)', 'per layer: prefill GFLOP/s (of sgemm peak)', 'per layer: student decode ms/token', 'per layer: teacher decode ms/token (context)', 'lm_head decode ms', 'EXTRAPOLATED whole model: prefill tok/s', 'student decode tok/s', 'student decode GB/s (of copy bandwidth)', 'teacher decode tok/s'],
          [[s.shape, `${s.perLayer.prefillTokensPerSec} (${s.perLayer.prefillT})`, `${s.perLayer.prefillGflops} (${s.fractionOfSgemmPeak.prefillPerLayer})`, s.perLayer.studentDecodeMsPerToken, `${s.perLayer.teacherDecodeMsPerToken} (${s.perLayer.decodeContext})`, s.lmHeadDecodeMs, s.extrapolated.prefillTokensPerSec, s.extrapolated.studentDecodeTokensPerSec, `${s.extrapolated.studentDecodeGbPerSec} (${s.fractionOfCopy.studentDecode})`, s.extrapolated.teacherDecodeTokensPerSec]],
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
        ['T', 'distill step ms', 'eval (teacher + engine) ms', 'teacher layer ms', 'student layer ms', 'teacher attention ms', 'gate ms', 'teacher prefill GFLOP/s (of sgemm peak)', 'distill step GFLOP/s (of sgemm peak)'],
        r.scaling.rows.map((x) => [x.T, x.distillStepMs, x.evalLayerMs, x.teacherLayerMs, x.studentLayerMs, x.attentionOnlyMs, x.gateOnlyMs, `${x.gflops.teacherPrefill} (${x.fractionOfSgemmPeak.teacherPrefill})`, `${x.gflops.distillStep} (${x.fractionOfSgemmPeak.distillStep})`]),
      ),
      '',
      `Growth exponents (slope of log time on log T; 1 = linear, 2 = quadratic): ${Object.entries(r.scaling.exponents)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}.`,
      '',
    );
  }
  if (r.native) {
    const l = r.native.limits;
    out.push(`## The native engine (ONNX Runtime) against issue 15's targets (measured ${r.native.measuredAt})`, '');
    out.push(
      table(
        ['figure', 'tok/s', 'work per token', 'rate', 'of the machine limit', 'reference tok/s (recorded, not measured here)', 'detail'],
        r.native.rows.map((n) => [
          n.figure,
          n.tokensPerSec,
          n.kind === 'prefill' ? `${sigText(n.workPerToken / 1e9)} GFLOP` : `${sigText(n.workPerToken / 2 ** 20)} MiB`,
          n.rate === null ? null : `${n.rate} ${n.kind === 'prefill' ? 'GFLOP/s' : 'GB/s'}`,
          n.fraction === null ? null : `${n.fraction} of ${n.limit} (${n.limit === 'sgemm peak' ? `${l.sgemmPeakGflops} GFLOP/s` : `${l.copyGbPerSec} GB/s`})`,
          n.referenceTokensPerSec ? `${n.referenceTokensPerSec.low === n.referenceTokensPerSec.high ? n.referenceTokensPerSec.low : `${n.referenceTokensPerSec.low}–${n.referenceTokensPerSec.high}`} (${n.referenceTokensPerSec.source})` : null,
          n.skipped ? `skipped: ${n.skipped}` : n.detail,
        ]),
      ),
      '',
      'Prefill work = FLOPs of the projections, causal attention and lm_head per token; decode work = bytes of the weights as stored (INT4 codes + f32 group scales), the lm_head and the gate states, read once per token (bench/costs.ts).',
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
