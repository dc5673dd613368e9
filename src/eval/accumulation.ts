/**
 * The eval's statistics stage: each unit's logits (and hidden states) folded into its
 * configuration's accumulators against the teacher's of the same batch, in unit order, then the
 * per-configuration figures of the report.
 */
import type { ModelConfig } from '../formats/config.ts';
import type { PrefillResult } from '../teacher/teacher.ts';
import type { EvalWindow } from '../data/suite.ts';
import { configurationFromStats, type ConfigurationReport } from './report.ts';
import { ComparisonAccumulator, HiddenAccumulator, type PerTokenValues } from './stats.ts';
import type { ConfigurationPlan } from './configurations.ts';
import { checkFinite } from './units.ts';

export class EvalAccumulation {
  private readonly acc: Map<string, ComparisonAccumulator>;
  private readonly hid: Map<string, HiddenAccumulator>;
  private readonly wall: Map<string, number>;
  /** The teacher's result of each batch in flight (the reference of the others). */
  private readonly refs = new Map<number, PrefillResult>();
  /** Units accumulated so far. */
  done = 0;

  constructor(
    private readonly c: ModelConfig,
    private readonly plans: ConfigurationPlan[],
    private readonly batches: EvalWindow[][],
    private readonly wantHidden: boolean,
    positionBucket: number,
    /** Called after each unit with its batch index and name. */
    private readonly onUnit: (batch: number, name: string) => void = () => {},
  ) {
    this.acc = new Map(plans.map((p) => [p.name, new ComparisonAccumulator(positionBucket)]));
    this.hid = new Map(plans.map((p) => [p.name, new HiddenAccumulator()]));
    this.wall = new Map(plans.map((p) => [p.name, 0]));
  }

  /** Fold unit `unit` (batch-major, teacher first) in; `seconds` it took to compute. */
  add(unit: number, out: PrefillResult, seconds: number): void {
    const { c, plans } = this;
    const b = Math.floor(unit / plans.length);
    const plan = plans[unit % plans.length]!;
    const batch = this.batches[b]!;
    const t = performance.now();
    checkFinite(plan, batch, out, c.vocabSize);
    if (plan.name === 'teacher') this.refs.set(b, out);
    const ref = this.refs.get(b)!;
    const a = this.acc.get(plan.name)!;
    const h = this.hid.get(plan.name)!;
    batch.forEach((w, s) => {
      a.addWindow(ref.logits[s]!, out.logits[s]!, c.vocabSize, w.ids, w.firstScored);
      if (this.wantHidden && plan.name !== 'teacher' && out.hidden && ref.hidden) {
        // the states at the scored (predicting) positions
        for (let l = 0; l < out.hidden[s]!.length; l++) {
          h.add(l, ref.hidden[s]![l]!, out.hidden[s]![l]!, c.hiddenSize, w.firstScored, w.ids.length - 1);
        }
      }
    });
    if (unit % plans.length === plans.length - 1) this.refs.delete(b);
    this.wall.set(plan.name, this.wall.get(plan.name)! + seconds + (performance.now() - t) / 1000);
    this.done += 1;
    this.onUnit(b, plan.name);
  }

  /** The configurations' figures (memory: bytes per context of each plan, or null). */
  reports(memory: number[][] | null): ConfigurationReport[] {
    return this.plans.map((p, i) =>
      configurationFromStats(
        { name: p.name, description: p.description, weights: p.weights, layers: p.layers, wall_s: this.wall.get(p.name)!, ...(p.window !== undefined ? { window: p.window, same_memory: p.sameMemory === true } : {}) },
        this.acc.get(p.name)!.result(),
        this.wantHidden && p.name !== 'teacher' ? this.hid.get(p.name)!.result() : null,
        memory ? memory[i]! : null,
      ),
    );
  }

  perToken(name: string): PerTokenValues {
    return this.acc.get(name)!.perToken();
  }
}
