/**
 * Eval progress as a user sees it on a real model (issue 13, "Progress"): the runner reports after
 * every layer of every batch, in work of comparable cost (tokens × layers), so a big model is never
 * minutes without a tick, and the counts add up to the total exactly. The ETA itself is tested as a
 * pure function in progress.test.ts.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { runEval } from '../src/eval/runner.ts';
import { adHocSuite } from '../src/data/suite.ts';

const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');

describe('eval progress on stories260k', () => {
  it('ticks after every layer of every (batch, configuration), in tokens × layers, ending at the total', async (ctx) => {
    if (!sharedAvailable()) {
      console.log('skipped: ../shared/models/stories260k not available');
      ctx.skip();
      return;
    }
    await initBackend('wasm');
    const suite = adHocSuite({ corpus: path.join(STORIES, 'corpus', 'eval.jsonl'), context: 32, maxSeqs: 6 });
    const calls: { done: number; total: number; tokens: number; status: string }[] = [];
    const r = await runEval({
      model: path.join(STORIES, 'hf'), suite, configurations: ['engine'], windows: [], workers: 1, batchTokens: 64,
      progress: (done, total, tokens, status) => calls.push({ done, total, tokens, status }),
    });
    const L = r.model.config.num_layers;
    const plans = r.configurations.length; // teacher, engine
    const total = r.tokens.fed * L * plans;
    expect(calls[0]).toEqual({ done: 0, total, tokens: 0, status: 'starting' });
    expect(calls.every((c) => c.total === total)).toBe(true);
    expect(calls.at(-1)!.done).toBe(total);
    // windows of ≤ 32 tokens in batches of ≤ 64: more than one batch, each configuration ticking L times per batch
    const units = calls.filter((c) => c.tokens > 0);
    expect(units.length).toBeGreaterThan(plans);
    expect(calls.length).toBe(1 + units.length * L);
    expect(units.reduce((a, c) => a + c.tokens, 0)).toBe(r.tokens.fed * plans);
    for (let i = 1; i < calls.length; i++) expect(calls[i]!.done).toBeGreaterThan(calls[i - 1]!.done);
    expect(calls.filter((c) => c.status === `engine layer 1/${L}`).length).toBe(units.length / plans);
  });
});
