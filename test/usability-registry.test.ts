/**
 * Registry advice that leads somewhere, done as a user does it: follow the `generate --model
 * stories260k` advice (import-llama2c into <root>/stories260k, or into <root>/stories260k/hf) and
 * the name resolves; a .symb conversion alone resolves too, saying who teaches; `synaxim models`
 * lists each name, where it looked and what it found. Needs ../shared (stories260k's llama2.c
 * files); skipped at run time without it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { synaxim } from './helpers/usabilityCli.ts';

const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-usability-registry-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
if (!sharedAvailable()) console.warn('usability-registry.test: skipped: ../shared is absent');

/** Environment of a user whose models root is `root` (and no ./models of the project in the way). */
const envFor = (root: string) => ({ SYNAXIM_MODELS: root, SYNAXIM_CACHE: path.join(tmp, 'cache') });

describe.skipIf(!sharedAvailable())('registry names resolve to what the advice produces', () => {
  it('missing: the error names `synaxim models` and the exact commands to run', () => {
    const root = path.join(tmp, 'empty-root');
    fs.mkdirSync(root, { recursive: true });
    const r = synaxim(['generate', '--model', 'stories260k', '--prompt-ids', '1', '--max-tokens', '2'], { env: envFor(root), cwd: tmp });
    expect(r.code).toBe(1);
    const line = r.stderr.trim().split('\n').at(-1)!;
    expect(line).toMatch(/^synaxim: error: model 'stories260k' not found; looked in .*empty-root\/stories260k/);
    expect(line).toContain('`synaxim models` lists every name');
    expect(line).toContain('synaxim import-llama2c stories260K.bin tok512.bin <root>/stories260k/hf');
    expect(line).toContain('--group-size 32');
    const m = synaxim(['generate', '--model', 'magnus', '--prompt-ids', '1'], { env: envFor(root), cwd: tmp });
    expect(m.stderr).toMatch(/synaxim convert <root>\/magnus\/hf <root>\/magnus\/symb-int4 --quantize int4 --group-size 128/);
    expect(m.stderr).toMatch(/Magnus's published INT4 \.symb conversion \(group 128/);
  });

  for (const layout of ['<root>/stories260k (the old advice)', '<root>/stories260k/hf (the advice now)']) {
    it(`import-llama2c into ${layout}, then generate --model stories260k works`, () => {
      const root = path.join(tmp, layout.includes('/hf') ? 'root-hf' : 'root-flat');
      const target = layout.includes('/hf') ? path.join(root, 'stories260k', 'hf') : path.join(root, 'stories260k');
      const imp = synaxim(['import-llama2c', path.join(STORIES, 'original', 'stories260K.bin'), path.join(STORIES, 'original', 'tok512.bin'), target], { cwd: tmp });
      expect(imp.code, imp.stderr).toBe(0);
      const r = synaxim(['generate', '--model', 'stories260k', '--prompt', 'Once upon a time', '--max-tokens', '8', '--json'], { env: envFor(root), cwd: tmp });
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { ids: number[]; text: string };
      expect(out.text.startsWith('Once upon a time')).toBe(true);
      expect(out.ids.length).toBeGreaterThan(5);
      // the same text as the shared HF checkpoint gives (the import is that checkpoint)
      const ref = synaxim(['generate', '--model', path.join(STORIES, 'hf'), '--prompt', 'Once upon a time', '--max-tokens', '8', '--json'], { cwd: tmp });
      expect(JSON.parse(ref.stdout).ids).toEqual(out.ids);
      const models = JSON.parse(synaxim(['models', '--json'], { env: envFor(root), cwd: tmp }).stdout);
      const s = models.models.find((x: { name: string }) => x.name === 'stories260k');
      expect(s.resolved.student).toBe(target);
      expect(s.resolved.teacher).toBe(target);
      expect(s.looked[0].dir).toBe(path.join(root, 'stories260k'));
      expect(s.looked[0].found.length).toBeGreaterThan(0);
    });
  }

  it('a .symb conversion alone resolves, teaching itself, and says so', () => {
    const root = path.join(tmp, 'root-symb');
    fs.cpSync(path.join(STORIES, 'symb-int4'), path.join(root, 'stories260k', 'symb-int4'), { recursive: true });
    const r = synaxim(['generate', '--model', 'stories260k', '--prompt-ids', '1', '--max-tokens', '4', '--engine', 'student', '--json'], { env: envFor(root), cwd: tmp });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/synaxim: note: model 'stories260k': no teacher at .*root-symb\/stories260k\/hf, so the student's own weights/);
    expect(JSON.parse(r.stdout).ids.length).toBe(5);
  });

  it('`synaxim models` lists every name, where it looked and what it found', () => {
    const root = path.join(tmp, 'root-both');
    fs.mkdirSync(path.join(root, 'stories260k'), { recursive: true });
    fs.cpSync(path.join(STORIES, 'hf'), path.join(root, 'stories260k', 'hf'), { recursive: true });
    fs.cpSync(path.join(STORIES, 'symb-int4'), path.join(root, 'stories260k', 'symb-int4'), { recursive: true });
    const r = synaxim(['models'], { env: envFor(root), cwd: tmp });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^stories260k: found — /m);
    expect(r.stdout).toContain(`looked in ${path.join(root, 'stories260k')}: hf/ (Hugging Face), symb-int4/ (.symb)`);
    expect(r.stdout).toContain(`student ${path.join(root, 'stories260k', 'symb-int4')}`);
    expect(r.stdout).toContain(`teacher ${path.join(root, 'stories260k', 'hf')}`);
    expect(r.stdout).toMatch(/^magnus: missing — /m);
    expect(r.stdout).toContain(`looked in ${path.join(root, 'magnus')}: no such directory`);
    const j = JSON.parse(synaxim(['models', '--json'], { env: envFor(root), cwd: tmp }).stdout);
    expect(j.roots[0]).toBe(root);
    expect(j.models.map((m: { name: string }) => m.name)).toEqual(expect.arrayContaining(['magnus', 'llama-3.2-1b-symb', 'stories260k', 'tiny']));
    const magnus = j.models.find((m: { name: string }) => m.name === 'magnus');
    expect(magnus.resolved).toBeNull();
    expect(magnus.how_to_get).toMatch(/synaxim convert/);
  });
});
