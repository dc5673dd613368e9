/**
 * What a new user types, as separate `synaxim` processes on stories260k (../shared; skipped at run
 * time without it):
 * - `--layers all | first-N | last-N` wherever `--layers` is accepted (distill), resolved against
 *   the model's layer count; too many layers is a one-line error;
 * - every command that runs a student says in one line which layers run which policy (forward,
 *   generate, distill, eval), and says so plainly when nothing is gated;
 * - eval twice on the same tokens, then compare: paired per-token tests, runs named by model and
 *   adapter, a different-tokens run warned about.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLayerList } from '../src/cli/common.ts';
import { SynaximError } from '../src/util/errors.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { formatPolicyLine, studentPolicies } from '../src/engine/policyLine.ts';
import { synaxim } from './helpers/usabilityCli.ts';

const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-usability-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
if (!sharedAvailable()) console.warn('usability-cli.test: CLI checks skipped: ../shared is absent');
const env = { SYNAXIM_CACHE: path.join(tmp, 'cache') };
const layersOf = (outDir: string) => JSON.parse(fs.readFileSync(path.join(outDir, 'symbiotic_adapter', 'adapter_config.json'), 'utf8')).layers as number[];

describe('--layers values', () => {
  it('parses now, resolves against the layer count later', () => {
    expect(parseLayerList('0-3,6').explicit).toEqual([0, 1, 2, 3, 6]);
    expect(parseLayerList('all').explicit).toBeNull();
    expect(parseLayerList('all').resolve(5)).toEqual([0, 1, 2, 3, 4]);
    expect(parseLayerList('first-2').resolve(32)).toEqual([0, 1]);
    expect(parseLayerList('last-3').resolve(32)).toEqual([29, 30, 31]);
    expect(parseLayerList('FIRST-2, 7').resolve(32)).toEqual([0, 1, 7]);
    expect(() => parseLayerList('first-9').resolve(5)).toThrow(/'first-9' asks for 9 layers; the model has 5/);
    expect(() => parseLayerList('0-7').resolve(5)).toThrow(/layer 5 is out of range \(the model has 5 layers: 0\.\.4\)/);
    expect(() => parseLayerList('alll')).toThrow(SynaximError);
    expect(() => parseLayerList('first-0')).toThrow(/selects no layer/);
  });
});

describe('the policy line', () => {
  it('one function formats every command\'s line', () => {
    expect(formatPolicyLine(studentPolicies(32, [0, 1, 2, 3, 4], 'teacher'))).toBe('layers 0-4 adapter-v1, 5-31 softmax');
    expect(formatPolicyLine(studentPolicies(5, null, 'engine'))).toBe('layers 0-4 engine-v0.1.1');
    expect(formatPolicyLine(studentPolicies(5, [2], 'fixed'))).toBe('layers 0-1 fixed, 2 adapter-v1, 3-4 fixed');
    expect(formatPolicyLine(studentPolicies(5, [0, 1], 'engine', 'adapter-window-4'))).toBe('layers 0-1 adapter-window-4, 2-4 engine-v0.1.1');
    expect(formatPolicyLine(studentPolicies(5, null, 'teacher'))).toMatch(/^layers 0-4 softmax \(nothing is gated: /);
  });
});

describe.skipIf(!sharedAvailable())('as a user types it (stories260k)', () => {
  const adapterRun = path.join(tmp, 'first2');
  beforeAll(() => {
    const r = synaxim(['distill', '--model', STORIES, '--layers', 'first-2', '--epochs', '0', '--max-seqs', '8', '--out', adapterRun], { env, cwd: tmp });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('synaxim: student: layers 0-1 adapter-v1, 2-4 engine-v0.1.1\n');
  });

  it('distill --layers first-2 / last-2 / all', () => {
    expect(layersOf(adapterRun)).toEqual([0, 1]);
    const last = path.join(tmp, 'last2');
    expect(synaxim(['distill', '--model', STORIES, '--layers', 'last-2', '--epochs', '0', '--max-seqs', '8', '--out', last], { env, cwd: tmp }).code).toBe(0);
    expect(layersOf(last)).toEqual([3, 4]);
    // no --out: the default directory names the resolved layers
    const all = synaxim(['distill', '--model', STORIES, '--layers', 'all', '--epochs', '0', '--max-seqs', '8', '--rest', 'teacher'], { env, cwd: tmp });
    expect(all.code, all.stderr).toBe(0);
    expect(all.stderr).toContain('synaxim: student: layers 0-4 adapter-v1\n');
    expect(layersOf(path.join(tmp, 'out', 'distill-stories260k-L0-4'))).toEqual([0, 1, 2, 3, 4]);
    const bad = synaxim(['distill', '--model', STORIES, '--layers', 'first-9', '--epochs', '0', '--out', path.join(tmp, 'bad')], { env, cwd: tmp });
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n').at(-1)).toBe("synaxim: error: --layers: 'first-9' asks for 9 layers; the model has 5");
  });

  it('forward and generate say which layers run what', () => {
    const f = synaxim(['forward', '--model', STORIES, '--ids', '1,2,3', '--engine', 'student', '--rest', 'teacher', '--out', path.join(tmp, 'f.safetensors')], { env, cwd: tmp });
    expect(f.code, f.stderr).toBe(0);
    expect(f.stderr).toMatch(/^synaxim: student: layers 0-4 softmax \(nothing is gated: softmax attention on the student weights; give --adapter or another --rest\)$/m);
    const g = synaxim(['generate', '--model', STORIES, '--prompt-ids', '1', '--max-tokens', '3', '--engine', 'student', '--adapter', adapterRun, '--json'], { env, cwd: tmp });
    expect(g.code, g.stderr).toBe(0);
    expect(g.stderr).toContain('synaxim: student: layers 0-1 adapter-v1, 2-4 engine-v0.1.1\n');
    // the teacher runs no student: no line
    const t = synaxim(['generate', '--model', STORIES, '--prompt-ids', '1', '--max-tokens', '3'], { env, cwd: tmp });
    expect(t.stderr).not.toMatch(/synaxim: student:/);
  });

  it('eval says it per configuration; two evals compare paired, a third on other tokens is warned about', () => {
    const e1 = path.join(tmp, 'eval-none');
    const e2 = path.join(tmp, 'eval-adapter');
    const e3 = path.join(tmp, 'eval-other');
    const r1 = synaxim(['eval', '--model', STORIES, '--suite', 'smoke', '--out', e1, '--workers', '1'], { env, cwd: tmp });
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stderr).toContain('synaxim: engine: layers 0-4 engine-v0.1.1\n');
    const r2 = synaxim(['eval', '--model', STORIES, '--adapter', adapterRun, '--suite', 'smoke', '--out', e2, '--workers', '1'], { env, cwd: tmp });
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stderr).toContain('synaxim: adapter: layers 0-1 adapter-v1, 2-4 engine-v0.1.1\n');
    expect(r2.stderr).toContain('synaxim: hybrid: layers 0-1 adapter-v1, 2-4 softmax\n');
    expect(fs.existsSync(path.join(e2, 'per_token.safetensors'))).toBe(true);
    const corpus = path.join(STORIES, 'corpus', 'eval.jsonl');
    const r3 = synaxim(['eval', '--model', STORIES, '--corpus', corpus, '--context', '32', '--max-seqs', '8', '--out', e3, '--workers', '1', '--quiet'], { env, cwd: tmp });
    expect(r3.code, r3.stderr).toBe(0);

    const cmp = path.join(tmp, 'cmp');
    const c = synaxim(['compare', e1, e2, e3, '--out', cmp], { env, cwd: tmp });
    expect(c.code, c.stderr).toBe(0);
    expect(c.stderr).toMatch(/^synaxim: warning: stories260k · no adapter · [0-9a-f]{8} \(eval-other\) scored different tokens/m);
    const j = JSON.parse(fs.readFileSync(path.join(cmp, 'compare.json'), 'utf8'));
    expect(j.runs.map((r: { label: string }) => r.label)).toEqual([
      expect.stringMatching(/^stories260k · no adapter · [0-9a-f]{8} \(eval-none\)$/),
      expect.stringMatching(/^stories260k · adapter L0-1 · [0-9a-f]{8}$/),
      expect.stringMatching(/^stories260k · no adapter · [0-9a-f]{8} \(eval-other\)$/),
    ]);
    expect(j.runs.map((r: { per_token: boolean }) => r.per_token)).toEqual([true, true, true]);
    expect(j.test.z_threshold).toBe(2);
    // the same model and tokens: teacher, quantization and engine identical, so never flagged
    const second = j.runs[1].label;
    expect(j.flags.filter((f: { run: string; configuration: string }) => f.run === second && ['teacher', 'teacher-on-student-weights', 'engine'].includes(f.configuration))).toEqual([]);
    for (const f of j.flags) expect(f.test).toBe(f.run === second ? 'paired' : 'unpaired');
    const html = fs.readFileSync(path.join(cmp, 'compare.html'), 'utf8');
    expect(html).toMatch(/<div class="warning"><strong>Warning:<\/strong>/);
  });
});
