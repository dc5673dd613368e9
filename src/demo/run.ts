/**
 * `synaxim demo`: the whole chain on a model small enough for a minute on two cores —
 *   1. train the tiny model on the built-in stories (src/demo/tinyModel.ts) into OUT/tiny-stories;
 *   2. export the initial adapter (`distill --epochs 0`) and train one (`distill`) on layers 0-1;
 *   3. evaluate both against the teacher on held-out stories (the smoke suite);
 *   4. compare the two evaluations;
 * then say, from the end-to-end figures (PPL and KLD vs the teacher, paired over the same tokens),
 * whether the trained adapter helped — not from the distillation's own loss.
 */
import fs from 'node:fs';
import path from 'node:path';
import { defaultCorpus } from '../data/corpus.ts';
import { runDistill } from '../distill/run.ts';
import { pairedDifference } from '../eval/compare.ts';
import { readPerToken } from '../eval/perToken.ts';
import { fmt, type EvalReport } from '../eval/report.ts';
import type { PerTokenValues } from '../eval/stats.ts';
import { DEFAULT_TRAIN_TINY, trainTinyModel, type TrainTinyResult } from './tinyModel.ts';

/** What the demo writes into its output directory (nothing else there is touched). */
export const DEMO_OUTPUTS = ['tiny-stories', 'adapter-initial', 'adapter-trained', 'eval-initial', 'eval-trained', 'compare'];

/** The adapted layers of the demo (the others stay engine-v0.1.1 in `adapter`, softmax in `hybrid`). */
export const DEMO_LAYERS = [0, 1];

export interface DemoOptions {
  out: string;
  /** Distillation epochs. */
  epochs: number;
  /** Optimizer steps training the tiny model. */
  trainSteps: number;
  /** Runs an evaluation and writes its report (the eval command's handler). */
  evaluate: (model: string, adapter: string, out: string) => Promise<{ json: string; html: string }>;
  /** Compares report directories (the compare command's handler). */
  compare: (reports: string[], out: string) => Promise<{ json: string; html: string }>;
  say?: (line: string) => void;
}

export interface DemoFigures {
  teacher: { ppl: number };
  engine: { ppl: number; kld: number };
  initial: { ppl: number; kld: number };
  trained: { ppl: number; kld: number };
  /** Paired z (trained adapter − engine) of per-token NLL and KLD; negative = the adapter is better. */
  vsEngine: { nllZ: number; kldZ: number } | null;
  /** Paired z (trained − initial adapter). */
  vsInitial: { nllZ: number; kldZ: number } | null;
}

export interface DemoResult {
  model: TrainTinyResult;
  figures: DemoFigures;
  summary: string;
  reports: { initial: string; trained: string; compare: string; distill: string; adapter: string };
}

function readReport(file: string): EvalReport {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as EvalReport;
}

function cfg(r: EvalReport, name: string) {
  const c = r.configurations.find((x) => x.name === name);
  if (!c) throw new Error(`demo: the evaluation has no '${name}' configuration`);
  return c;
}

function pairedZs(a: PerTokenValues | undefined, b: PerTokenValues | undefined): { nllZ: number; kldZ: number } | null {
  if (!a || !b || a.nll.length !== b.nll.length) return null;
  return { nllZ: pairedDifference(a.nll.length, (i) => a.nll[i]! - b.nll[i]!).z, kldZ: pairedDifference(a.kld.length, (i) => a.kld[i]! - b.kld[i]!).z };
}

/** The end-to-end figures of the two evaluations (same tokens), with paired tests from their per_token files. */
export function demoFigures(initialDir: string, trainedDir: string): DemoFigures {
  const ri = readReport(path.join(initialDir, 'report.json'));
  const rt = readReport(path.join(trainedDir, 'report.json'));
  const pi = readPerToken(initialDir, ri.tokens.hash);
  const pt = readPerToken(trainedDir, rt.tokens.hash);
  const same = ri.tokens.hash === rt.tokens.hash;
  return {
    teacher: { ppl: cfg(rt, 'teacher').ppl },
    engine: { ppl: cfg(rt, 'engine').ppl, kld: cfg(rt, 'engine').kld.mean },
    initial: { ppl: cfg(ri, 'adapter').ppl, kld: cfg(ri, 'adapter').kld.mean },
    trained: { ppl: cfg(rt, 'adapter').ppl, kld: cfg(rt, 'adapter').kld.mean },
    vsEngine: pairedZs(pt?.get('adapter'), pt?.get('engine')),
    vsInitial: same ? pairedZs(pt?.get('adapter'), pi?.get('adapter')) : null,
  };
}

/** Significant at the comparison's threshold (|z| ≥ 2, about 95%). */
const SIGNIFICANT = 2;

function judgement(what: string, z: { nllZ: number; kldZ: number } | null, ppl: [number, number], kld: [number, number]): string {
  const pplText = `PPL ${fmt(ppl[1], 4)} vs ${fmt(ppl[0], 4)}`;
  const kldText = `KLD ${fmt(kld[1], 3)} vs ${fmt(kld[0], 3)}`;
  if (!z) return `${what}: ${pplText}, ${kldText} (no per-token figures for a paired test)`;
  const verdict = (zz: number) => (zz <= -SIGNIFICANT ? 'better' : zz >= SIGNIFICANT ? 'WORSE' : 'no clear difference');
  const p = verdict(z.nllZ);
  const k = verdict(z.kldZ);
  return `${what}: ${pplText} (${p}, paired z ${fmt(z.nllZ, 3)}), ${kldText} (${k}, paired z ${fmt(z.kldZ, 3)})`;
}

/** The summary a user reads: every end-to-end figure, and plainly whether the adapter helped. */
export function demoSummary(f: DemoFigures, model: Pick<TrainTinyResult, 'steps' | 'lossFirst' | 'lossLast'>, seconds: number): string {
  const L = `layers ${DEMO_LAYERS.join('-')}`;
  const rows: [string, number, number | null][] = [
    ['teacher (softmax attention)', f.teacher.ppl, null],
    ['engine (no adapter)', f.engine.ppl, f.engine.kld],
    [`initial adapter (${L})`, f.initial.ppl, f.initial.kld],
    [`trained adapter (${L})`, f.trained.ppl, f.trained.kld],
  ];
  const helped = f.vsEngine !== null && f.vsEngine.nllZ <= -SIGNIFICANT && f.vsEngine.kldZ <= -SIGNIFICANT;
  const hurt = f.vsEngine !== null && (f.vsEngine.nllZ >= SIGNIFICANT || f.vsEngine.kldZ >= SIGNIFICANT);
  const gap = f.engine.kld;
  const recovered = gap > 0 ? (100 * (f.engine.kld - f.trained.kld)) / gap : NaN;
  const verdict = helped
    ? `The trained adapter helped: it closes ${fmt(recovered, 3)}% of the engine's KLD to the teacher (PPL ${fmt(f.engine.ppl, 4)} → ${fmt(f.trained.ppl, 4)}; teacher ${fmt(f.teacher.ppl, 4)}).`
    : hurt
      ? `The trained adapter did NOT help: it is worse than no adapter on these tokens (PPL ${fmt(f.trained.ppl, 4)} vs ${fmt(f.engine.ppl, 4)}, KLD ${fmt(f.trained.kld, 3)} vs ${fmt(f.engine.kld, 3)}).`
      : `The trained adapter did NOT clearly help: its difference from no adapter is within the noise of these tokens (see the paired z below).`;
  return [
    `demo finished in ${seconds.toFixed(0)} s`,
    `  model: the tiny shape (hidden 64, 4 layers) trained for ${model.steps} steps on the built-in stories: loss ${fmt(model.lossFirst, 3)} → ${fmt(model.lossLast, 3)} nats/token`,
    '  held-out stories (smoke suite), against the teacher:',
    ...rows.map(([name, ppl, kld]) => `    ${name.padEnd(30)} PPL ${fmt(ppl, 4).padStart(7)}${kld === null ? '' : `   mean KLD ${fmt(kld, 3).padStart(6)}`}`),
    `  ${verdict}`,
    `  ${judgement('trained adapter vs no adapter', f.vsEngine, [f.engine.ppl, f.trained.ppl], [f.engine.kld, f.trained.kld])}`,
    `  ${judgement('trained vs initial adapter', f.vsInitial, [f.initial.ppl, f.trained.ppl], [f.initial.kld, f.trained.kld])}`,
  ].join('\n');
}

/** Run the chain into `o.out` and return its figures and summary. */
export async function runDemoChain(o: DemoOptions): Promise<DemoResult> {
  const started = performance.now();
  const say = o.say ?? (() => {});
  const modelDir = path.join(o.out, 'tiny-stories');
  say(`1/4 training the tiny model on the built-in stories (${o.trainSteps} steps) into ${modelDir}`);
  const model = await trainTinyModel(modelDir, defaultCorpus(), { ...DEFAULT_TRAIN_TINY, steps: o.trainSteps, log: (l) => process.stderr.write(`synaxim: ${l}\n`) });

  // Every other setting is distill's default (src/distill/runConfig.ts).
  const common = { model: modelDir, layers: DEMO_LAYERS, maxSeqs: 96, overwrite: true };
  say(`2/4 distilling layers ${DEMO_LAYERS.join(', ')}: the initial adapter (--epochs 0) and a trained one (${o.epochs} epochs)`);
  const initial = await runDistill({ ...common, epochs: 0, out: path.join(o.out, 'adapter-initial') });
  const trained = await runDistill({ ...common, epochs: o.epochs, out: path.join(o.out, 'adapter-trained') });

  say('3/4 evaluating both against the teacher on held-out stories (smoke suite)');
  const evInitial = await o.evaluate(modelDir, initial.adapterDir, path.join(o.out, 'eval-initial'));
  const evTrained = await o.evaluate(modelDir, trained.adapterDir, path.join(o.out, 'eval-trained'));

  say('4/4 comparing the two evaluations');
  const cmp = await o.compare([path.join(o.out, 'eval-initial'), path.join(o.out, 'eval-trained')], path.join(o.out, 'compare'));

  const figures = demoFigures(path.dirname(evInitial.json), path.dirname(evTrained.json));
  const summary = demoSummary(figures, model, (performance.now() - started) / 1000);
  return {
    model,
    figures,
    summary,
    reports: { initial: evInitial.html, trained: evTrained.html, compare: cmp.html, distill: trained.reportFile, adapter: trained.adapterDir },
  };
}
