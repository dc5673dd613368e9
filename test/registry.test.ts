/** The model registry: names under the models roots, plain directories, clear errors, content hashes. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SynaximError } from '../src/util/errors.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import {
  modelRoots,
  readRegistryEntry,
  registryNames,
  MODELS_CONFIG_DIR,
  resolveModel,
  resolveModelDir,
  resolveRegistryEntry,
  type RegistryEntry,
} from '../src/data/registry.ts';

if (!sharedAvailable()) console.warn(`registry.test: the ../shared/models/stories260k check skipped: ${SHARED_DIR}/fixtures not found`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-registry-'));
const savedCache = process.env.SYNAXIM_CACHE;
process.env.SYNAXIM_CACHE = path.join(tmp, 'cache');
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  if (savedCache === undefined) delete process.env.SYNAXIM_CACHE;
  else process.env.SYNAXIM_CACHE = savedCache;
});

function touch(file: string, content = '{}'): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
}

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SynaximError);
    const m = (e as Error).message;
    expect(m.includes('\n')).toBe(false);
    return m;
  }
  throw new Error('expected an error');
}

const entry = (over: Partial<RegistryEntry> = {}): RegistryEntry => ({
  name: 'demo',
  description: '',
  dir: 'demo',
  student: 'symb-int4',
  teacher: 'hf',
  tokenizer: 'auto',
  baseModel: 'org/demo-7b',
  howToGet: 'Download org/demo-7b.',
  ...over,
});

describe('registry files', () => {
  it('has the four required entries and every file parses', () => {
    const names = registryNames();
    for (const n of ['magnus', 'llama-3.2-1b-symb', 'stories260k', 'tiny']) expect(names).toContain(n);
    for (const n of names) {
      const e = readRegistryEntry(path.join(MODELS_CONFIG_DIR, `${n}.json`));
      expect(e.name).toBe(n);
      expect(e.howToGet.length).toBeGreaterThan(10);
    }
    expect(readRegistryEntry(path.join(MODELS_CONFIG_DIR, 'magnus.json')).baseModel).toBe('mistralai/Mistral-7B-Instruct-v0.3');
    expect(readRegistryEntry(path.join(MODELS_CONFIG_DIR, 'llama-3.2-1b-symb.json')).baseModel).toBe('meta-llama/Llama-3.2-1B');
    expect(readRegistryEntry(path.join(MODELS_CONFIG_DIR, 'tiny.json')).howToGet).toMatch(/synaxim fixture --shape tiny/);
  });

  it('rejects entries whose paths leave the models root', () => {
    const f = path.join(tmp, 'bad.json');
    touch(f, JSON.stringify({ name: 'bad', student: '../../etc' }));
    expect(errorOf(() => readRegistryEntry(f))).toMatch(/'student' .* must be a relative path inside the models root/);
    touch(f, JSON.stringify({ name: 'bad', student: 'x', teacher: '/abs/hf' }));
    expect(errorOf(() => readRegistryEntry(f))).toMatch(/'teacher'/);
    touch(f, '{not json');
    expect(errorOf(() => readRegistryEntry(f))).toMatch(/invalid JSON/);
  });

  it('searches $SYNAXIM_MODELS (in order) before ./models', () => {
    const roots = modelRoots({ SYNAXIM_MODELS: '/a:/b::' } as NodeJS.ProcessEnv);
    expect(roots.slice(0, 3)).toEqual(['/a', '/b', path.resolve('models')]);
  });
});

describe('resolving a registry entry', () => {
  const rootA = path.join(tmp, 'rootA');
  const rootB = path.join(tmp, 'rootB');
  touch(path.join(rootB, 'demo', 'symb-int4', 'config.symb.json'));
  touch(path.join(rootB, 'demo', 'hf', 'config.json'));
  touch(path.join(rootB, 'demo', 'hf', 'tokenizer.json'));
  fs.mkdirSync(rootA, { recursive: true });

  it('finds the model in the first root that has it', () => {
    const r = resolveRegistryEntry(entry(), 'configs/models/demo.json', [rootA, rootB]);
    expect(r.studentDir).toBe(path.join(rootB, 'demo', 'symb-int4'));
    expect(r.teacherDir).toBe(path.join(rootB, 'demo', 'hf'));
    expect(r.tokenizerDir).toBe(path.join(rootB, 'demo', 'hf'));
    expect(r.baseModel).toBe('org/demo-7b');
    expect(r.source).toMatch(/rootB/);
  });

  it('teacher `same` uses the student weights', () => {
    const r = resolveRegistryEntry(entry({ teacher: 'same' }), 'x.json', [rootB]);
    expect(r.teacherDir).toBe(r.studentDir);
  });

  it('a missing model says where it looked and how to get it', () => {
    const m = errorOf(() => resolveRegistryEntry(entry({ dir: 'absent' }), 'x.json', [rootA, rootB]));
    expect(m).toMatch(/model 'demo' not found/);
    expect(m).toContain(path.join(rootA, 'absent'));
    expect(m).toContain(path.join(rootB, 'absent'));
    expect(m).toMatch(/`synaxim models` lists every name/);
    expect(m).toMatch(/Download org\/demo-7b/);
  });

  it('resolves every layout the advice can produce: HF alone, hf/ alone, .symb alone (said on stderr)', () => {
    const rootC = path.join(tmp, 'rootC');
    touch(path.join(rootC, 'hfonly', 'config.json')); // import-llama2c straight into <root>/<dir>
    touch(path.join(rootC, 'hfsub', 'hf', 'config.json'));
    touch(path.join(rootC, 'symbonly', 'symb-int4', 'config.symb.json'));
    touch(path.join(rootC, 'otherquant', 'symb-int8', 'config.symb.json'));
    touch(path.join(rootC, 'otherquant', 'hf', 'config.json'));
    const r1 = resolveRegistryEntry(entry({ dir: 'hfonly' }), 'x.json', [rootC]);
    expect([r1.studentDir, r1.teacherDir]).toEqual([path.join(rootC, 'hfonly'), path.join(rootC, 'hfonly')]);
    const r2 = resolveRegistryEntry(entry({ dir: 'hfsub' }), 'x.json', [rootC]);
    expect([r2.studentDir, r2.teacherDir]).toEqual([path.join(rootC, 'hfsub', 'hf'), path.join(rootC, 'hfsub', 'hf')]);
    const r4 = resolveRegistryEntry(entry({ dir: 'otherquant' }), 'x.json', [rootC]);
    expect([r4.studentDir, r4.teacherDir]).toEqual([path.join(rootC, 'otherquant', 'symb-int8'), path.join(rootC, 'otherquant', 'hf')]);
    const said: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((s: string) => (said.push(String(s)), true)) as typeof process.stderr.write;
    try {
      const r3 = resolveRegistryEntry(entry({ dir: 'symbonly' }), 'x.json', [rootC]);
      expect(r3.teacherDir).toBe(r3.studentDir);
      expect(r3.source).toMatch(/teacher the student itself/);
    } finally {
      process.stderr.write = write;
    }
    expect(said.join('')).toMatch(/^synaxim: note: model 'demo': no teacher at .*symbonly\/hf, so the student's own weights .* are the teacher/);
  });

  it('magnus, when absent, names its Hugging Face repo', () => {
    const saved = process.env.SYNAXIM_MODELS;
    process.env.SYNAXIM_MODELS = rootA;
    try {
      const m = errorOf(() => resolveModel('magnus'));
      expect(m).toMatch(/mistralai\/Mistral-7B-Instruct-v0\.3/);
      expect(m).toContain(rootA);
    } finally {
      if (saved === undefined) delete process.env.SYNAXIM_MODELS;
      else process.env.SYNAXIM_MODELS = saved;
    }
  });

  it('unknown names list the registry', () => {
    expect(errorOf(() => resolveModel('no-such-model'))).toMatch(/unknown model 'no-such-model'.*magnus/);
  });
});

describe('plain directories', () => {
  it('an HF directory is both student and teacher', () => {
    const d = path.join(tmp, 'plainhf');
    touch(path.join(d, 'config.json'));
    touch(path.join(d, 'tokenizer.json'));
    const r = resolveModel(d);
    expect(r.studentDir).toBe(d);
    expect(r.teacherDir).toBe(d);
    expect(r.tokenizerDir).toBe(d);
  });

  it('a .symb directory finds its tokenizer dir', () => {
    const d = path.join(tmp, 'plainsymb');
    touch(path.join(d, 'config.symb.json'), JSON.stringify({ tokenizer_dir: 'tok' }));
    touch(path.join(d, 'tok', 'tokenizer.json'));
    const r = resolveModelDir(d);
    expect(r.tokenizerDir).toBe(path.join(d, 'tok'));
  });

  it('a directory that is no model is a clear error', () => {
    const d = path.join(tmp, 'empty');
    fs.mkdirSync(d, { recursive: true });
    expect(errorOf(() => resolveModel(d))).toMatch(/not a model directory/);
    expect(errorOf(() => resolveModel(path.join(tmp, 'missing-dir')))).toMatch(/no such model directory/);
  });

  it.skipIf(!sharedAvailable())('../shared/models/stories260k: hf/ teaches the .symb student', () => {
    const d = path.join(SHARED_DIR, 'models', 'stories260k');
    const r = resolveModel(d);
    expect(r.teacherDir).toBe(path.join(d, 'hf'));
    expect(r.studentDir).toBe(path.join(d, 'symb-int4'));
    expect(r.tokenizerDir).toBe(path.join(d, 'hf'));
    expect(resolveModel(d, { teacher: 'same' }).teacherDir).toBe(r.studentDir);
  });
});
