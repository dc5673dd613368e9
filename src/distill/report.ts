/**
 * The distillation report: `OUT/distill_report.md` with the loss curves (vega-lite specs compiled
 * with vega-lite and rendered to SVG files beside it by vega, headless) and the held-out per-layer
 * MSE before and after training. Pure formatting of what the training loop measured.
 */
import path from 'node:path';
import { writeFileAtomic } from '../util/atomic.ts';
import { formatDuration } from '../util/progress.ts';
import { renderSvg, type VlSpec } from '../report/charts.ts';

export interface StepRecord {
  epoch: number;
  /** Global step, 0-based. */
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
}

export interface EpochRecord {
  epoch: number;
  /** Objective of the epoch (mse when the log does not say). */
  objective?: 'mse' | 'kl';
  earlyStop?: boolean;
  trainLoss: number;
  trainLossPerLayer: number[];
  heldOutLoss: number | null;
  heldOutPerLayer: number[] | null;
}

export interface ReportInput {
  title: string;
  modelName: string;
  modelSource: string;
  studentDir: string;
  teacherDir: string;
  baseModel: string | null;
  layers: number[];
  options: Record<string, unknown>;
  corpus: { source: string; hash: string; documents: number; trainSequences: number; heldOutSequences: number; seqLen: number; tokens: number };
  stepsPerEpoch: number;
  steps: StepRecord[];
  epochs: EpochRecord[];
  bestEpoch: number | null;
  bestLoss: number | null;
  /** The metric that chose the best epoch ("held-out KLD", "held-out MSE", "train MSE", …). */
  selectedBy?: string;
  /** Epochs after which a phase stopped early (--patience). */
  stoppedEarly?: number[];
  /** mse+kl: best epochs of the finished phases (the warm starts). */
  phaseBests?: { phase: number; epoch: number | null; loss: number | null; metric: string | null }[];
  /** Held-out KL(teacher‖student) per token, initial and exported adapter. */
  heldOutKl?: { before: number | null; after: number | null } | null;
  heldOutBefore: number[];
  heldOutAfter: number[];
  backend: string;
  wallTimeSec: number;
  tokensPerSec: number | null;
  adapterDir: string;
  toolVersion: string;
}

const CONFIG = {
  font: 'Helvetica, Arial, sans-serif',
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#e6e6e6' },
  legend: { labelFontSize: 11, titleFontSize: 12 },
  title: { fontSize: 14, anchor: 'start' },
  view: { stroke: null },
};

/** Step losses (thin), epoch means and held-out losses against epochs, log y. */
export function lossCurveSpec(r: Pick<ReportInput, 'steps' | 'epochs' | 'stepsPerEpoch'>): VlSpec {
  const values: { x: number; loss: number; series: string }[] = [];
  for (const s of r.steps) if (s.loss > 0 && Number.isFinite(s.loss)) values.push({ x: (s.step + 1) / r.stepsPerEpoch, loss: s.loss, series: 'step (train batch)' });
  for (const e of r.epochs) {
    if (e.trainLoss > 0) values.push({ x: e.epoch + 1, loss: e.trainLoss, series: 'epoch mean (train)' });
    if (e.heldOutLoss !== null && e.heldOutLoss > 0) values.push({ x: e.epoch + 1, loss: e.heldOutLoss, series: 'held-out' });
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'Distillation loss (mse epochs: mean hidden-state MSE over trained layers; kl epochs: KLD on the logits)',
    width: 560,
    height: 260,
    config: CONFIG,
    data: { values },
    mark: { type: 'line', point: false, strokeWidth: 1.5 },
    encoding: {
      x: { field: 'x', type: 'quantitative', title: 'epoch' },
      y: { field: 'loss', type: 'quantitative', title: 'loss', scale: { type: 'log' } },
      color: { field: 'series', type: 'nominal', title: null, sort: ['step (train batch)', 'epoch mean (train)', 'held-out'], scale: { range: ['#c7c7c7', '#1f77b4', '#d62728'] } },
    },
  };
}

/** Per-layer training loss by epoch, one line per layer, log y. */
export function perLayerSpec(r: Pick<ReportInput, 'epochs' | 'layers'>): VlSpec {
  const values: { epoch: number; loss: number; layer: string }[] = [];
  for (const e of r.epochs) e.trainLossPerLayer.forEach((v, i) => v > 0 && values.push({ epoch: e.epoch + 1, loss: v, layer: `layer ${r.layers[i]}` }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'Per-layer training loss by epoch (kl epochs: the one end-to-end KLD on every layer)',
    width: 560,
    height: 220,
    config: CONFIG,
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'epoch', type: 'quantitative', title: 'epoch' },
      y: { field: 'loss', type: 'quantitative', title: 'MSE', scale: { type: 'log' } },
      color: { field: 'layer', type: 'nominal', title: null, sort: r.layers.map((l) => `layer ${l}`) },
    },
  };
}

const fmt = (v: number | null | undefined, digits = 4) => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toExponential(digits - 1));

function change(before: number, after: number): string {
  if (!(before > 0) || !Number.isFinite(after)) return '–';
  const pct = (100 * (after - before)) / before;
  return `${pct >= 0 ? '+' : ''}${pct.toFixed(1)}%`;
}

/** The Markdown body (charts referenced as files beside it). */
export function reportMarkdown(r: ReportInput, charts: { loss: string | null; perLayer: string | null }): string {
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
  const lines: string[] = [];
  lines.push(`# ${r.title}`, '');
  lines.push(`Model **${r.modelName}** (${r.modelSource})${r.baseModel ? `, base ${r.baseModel}` : ''}.`);
  lines.push(`Student weights \`${r.studentDir}\`, teacher \`${r.teacherDir}\`. Adapted layers: ${r.layers.join(', ')}.`, '');
  lines.push('| | |', '| --- | --- |');
  lines.push(`| corpus | \`${r.corpus.source}\` (sha256 ${r.corpus.hash.slice(0, 16)}…, ${r.corpus.documents} documents) |`);
  lines.push(`| sequences | ${r.corpus.trainSequences} train + ${r.corpus.heldOutSequences} held-out × ${r.corpus.seqLen} tokens (${r.corpus.tokens} tokens) |`);
  const selectedBy = r.selectedBy ?? 'train MSE';
  lines.push(`| best epoch | ${r.bestEpoch === null ? '– (no training)' : r.bestEpoch + 1} (chosen by ${selectedBy}: ${fmt(r.bestLoss)}) |`);
  for (const pb of r.phaseBests ?? []) lines.push(`| warm start | phase ${pb.phase + 1}'s best epoch ${pb.epoch === null ? '–' : pb.epoch + 1} (${pb.metric ?? '–'} ${fmt(pb.loss)}) |`);
  if (r.stoppedEarly && r.stoppedEarly.length > 0) lines.push(`| early stop | after epoch ${r.stoppedEarly.map((e) => e + 1).join(', ')} (--patience) |`);
  if (r.heldOutKl) lines.push(`| held-out KLD | ${r.heldOutKl.before === null ? '–' : r.heldOutKl.before.toFixed(4)} → ${r.heldOutKl.after === null ? '–' : r.heldOutKl.after.toFixed(4)} nats per token (KL(teacher‖student) on the logits, whole student) |`);
  lines.push(`| wall time | ${formatDuration(r.wallTimeSec)} on ${r.backend}${r.tokensPerSec ? `, ${Math.round(r.tokensPerSec)} tokens/s (training)` : ''} |`);
  lines.push(`| adapter | \`${r.adapterDir}\` |`);
  lines.push(`| tool | synaxim ${r.toolVersion} |`, '');
  lines.push('## Options', '', '```json', JSON.stringify(r.options, null, 2), '```', '');
  lines.push('## Held-out hidden-state MSE per layer', '');
  lines.push('Mean squared error between the student layer output and the teacher hidden state, on the held-out split, with the initial adapter values and with the exported adapter (same input mode as training).', '');
  lines.push('| layer | before | after | change |', '| ---: | ---: | ---: | ---: |');
  r.layers.forEach((l, i) => lines.push(`| ${l} | ${fmt(r.heldOutBefore[i])} | ${fmt(r.heldOutAfter[i])} | ${change(r.heldOutBefore[i]!, r.heldOutAfter[i]!)} |`));
  const b = mean(r.heldOutBefore);
  const a = mean(r.heldOutAfter);
  lines.push(`| **mean** | **${fmt(b)}** | **${fmt(a)}** | **${change(b, a)}** |`, '');
  if (charts.loss || charts.perLayer) {
    lines.push('## Loss curves', '');
    if (charts.loss) lines.push(`![loss curve](${charts.loss})`, '');
    if (charts.perLayer) lines.push(`![per-layer loss](${charts.perLayer})`, '');
  }
  if (r.epochs.length > 0) {
    lines.push('## Epochs', '', `The best epoch is chosen by the objective's own held-out metric (held-out MSE for mse, held-out KLD for kl; train loss when nothing is held out).`, '');
    lines.push(`| epoch | objective | train loss | held-out loss |`, '| ---: | --- | ---: | ---: |');
    for (const e of r.epochs) lines.push(`| ${e.epoch + 1}${e.epoch === r.bestEpoch ? ' (best)' : ''}${e.earlyStop ? ' (stop)' : ''} | ${e.objective ?? 'mse'} | ${fmt(e.trainLoss)} | ${fmt(e.heldOutLoss)} |`);
    lines.push('');
  }
  return lines.join('\n');
}

/** Write distill_report.md and its SVG charts into outDir (each file atomically). */
export async function writeDistillReport(outDir: string, r: ReportInput): Promise<string> {
  let loss: string | null = null;
  let perLayer: string | null = null;
  if (r.steps.length > 0 || r.epochs.length > 0) {
    writeFileAtomic(path.join(outDir, 'loss_curve.svg'), await renderSvg(lossCurveSpec(r)));
    loss = 'loss_curve.svg';
  }
  if (r.epochs.length > 0) {
    writeFileAtomic(path.join(outDir, 'loss_per_layer.svg'), await renderSvg(perLayerSpec(r)));
    perLayer = 'loss_per_layer.svg';
  }
  const file = path.join(outDir, 'distill_report.md');
  writeFileAtomic(file, reportMarkdown(r, { loss, perLayer }));
  return file;
}
