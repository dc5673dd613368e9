/**
 * The model registry: short names (`magnus`, `stories260k`, ...) for the directories a run needs —
 * the student's weights (usually a `.symb` conversion), the teacher's (the original HF checkpoint,
 * or `same`: the student's own weights) and the tokenizer. Each name is a JSON file in
 * `configs/models/`; its directories are relative to a models root, searched in order:
 * every entry of `$SYNAXIM_MODELS` (`:`-separated), then `./models`. A missing model is an error
 * that says where we looked and how to get it — never a silent fallback to something else.
 *
 * A plain directory works too: an HF checkpoint, a `.symb` conversion, or a directory holding both
 * (`hf/` and `symb-*`/, like ../shared/models/stories260k) — then hf/ is the teacher and the
 * `.symb` conversion the student.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from './errors.ts';
import { CONFIGS_DIR, PROJECT_ROOT } from './paths.ts';

export const MODELS_CONFIG_DIR = path.join(CONFIGS_DIR, 'models');

/** One `configs/models/<name>.json`. Paths are relative to `dir`, which is relative to a models root. */
export interface RegistryEntry {
  name: string;
  description: string;
  /** Directory under a models root that holds this model's files. */
  dir: string;
  /** Student weights (a `.symb` or HF directory), relative to `dir`. */
  student: string;
  /** Teacher weights relative to `dir`, or `same` (the student's weights are the teacher). */
  teacher: string;
  /** Directory with tokenizer.json relative to `dir`; `auto`: the teacher's, else the student's `tokenizer/`. */
  tokenizer: string;
  /** Upstream model id (Hugging Face repo) the weights derive from, recorded in adapters. */
  baseModel: string | null;
  /** One or two sentences: how to put the files in place. */
  howToGet: string;
}

export interface ResolvedModel {
  /** Registry name, or the directory's base name. */
  name: string;
  studentDir: string;
  /** Teacher directory; equals studentDir when the teacher is `same`. */
  teacherDir: string;
  /** Directory holding tokenizer.json, or null when the model has none (bare-id fixtures). */
  tokenizerDir: string | null;
  /** Upstream model id when known (registry), else null. */
  baseModel: string | null;
  /** How it was found, for logs and reports: `registry configs/models/x.json in /root` or `directory /path`. */
  source: string;
}

/** Registry names are plain words: nothing that could walk out of configs/models. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function str(file: string, j: Record<string, unknown>, key: string, fallback?: string): string {
  const v = j[key] ?? fallback;
  if (typeof v !== 'string' || v.length === 0) fail(file, `'${key}' must be a non-empty string`);
  return v;
}

/** A path from a registry file must stay inside its root (no absolute paths, no `..`). */
function relativeInside(file: string, key: string, p: string): string {
  if (path.isAbsolute(p) || p.split(/[\\/]/).includes('..')) fail(file, `'${key}' (${JSON.stringify(p)}) must be a relative path inside the models root`);
  return p;
}

export function readRegistryEntry(file: string): RegistryEntry {
  let j: unknown;
  try {
    j = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    fail(file, code === 'ENOENT' ? 'file not found' : `invalid JSON (${(e as Error).message})`);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) fail(file, 'a registry entry must be a JSON object');
  const o = j as Record<string, unknown>;
  const name = str(file, o, 'name');
  const teacher = str(file, o, 'teacher', 'same');
  const tokenizer = str(file, o, 'tokenizer', 'auto');
  const base = o.base_model;
  if (base !== undefined && base !== null && typeof base !== 'string') fail(file, `'base_model' must be a string or null`);
  return {
    name,
    description: typeof o.description === 'string' ? o.description : '',
    dir: relativeInside(file, 'dir', str(file, o, 'dir', name)),
    student: relativeInside(file, 'student', str(file, o, 'student')),
    teacher: teacher === 'same' ? 'same' : relativeInside(file, 'teacher', teacher),
    tokenizer: tokenizer === 'auto' ? 'auto' : relativeInside(file, 'tokenizer', tokenizer),
    baseModel: (base as string | undefined) ?? null,
    howToGet: typeof o.how_to_get === 'string' ? o.how_to_get : '',
  };
}

/** Names of every registry entry. */
export function registryNames(): string[] {
  if (!fs.existsSync(MODELS_CONFIG_DIR)) return [];
  return fs
    .readdirSync(MODELS_CONFIG_DIR)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -'.json'.length))
    .sort();
}

/** Models roots in search order: $SYNAXIM_MODELS entries, then ./models (cwd), then <project>/models. */
export function modelRoots(env: NodeJS.ProcessEnv = process.env): string[] {
  const roots: string[] = [];
  for (const r of (env.SYNAXIM_MODELS ?? '').split(':')) if (r.trim()) roots.push(path.resolve(r.trim()));
  roots.push(path.resolve('models'));
  roots.push(path.join(PROJECT_ROOT, 'models'));
  return [...new Set(roots)];
}

const isDir = (p: string) => {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
};
const isHfDir = (d: string) => fs.existsSync(path.join(d, 'config.json'));
const isSymbDir = (d: string) => fs.existsSync(path.join(d, 'config.symb.json'));
const hasTokenizer = (d: string) => fs.existsSync(path.join(d, 'tokenizer.json'));

/** `.symb` conversions in order of preference when a directory holds several. */
const SYMB_PREFERENCE = ['symb-int4', 'symb-int8', 'symb-fp16', 'symb-fp32', 'symb'];

function symbSubdirs(dir: string): string[] {
  const subs = fs.readdirSync(dir).filter((s) => (s === 'symb' || s.startsWith('symb-')) && isSymbDir(path.join(dir, s)));
  const rank = (s: string) => {
    const i = SYMB_PREFERENCE.indexOf(s);
    return i < 0 ? SYMB_PREFERENCE.length : i;
  };
  return subs.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** The tokenizer for a student/teacher pair: the teacher's tokenizer.json, else a .symb's tokenizer dir. */
function findTokenizer(teacherDir: string, studentDir: string): string | null {
  for (const d of [teacherDir, studentDir]) {
    if (hasTokenizer(d)) return d;
    if (isSymbDir(d)) {
      let sub = 'tokenizer';
      try {
        const j = JSON.parse(fs.readFileSync(path.join(d, 'config.symb.json'), 'utf8')) as { tokenizer_dir?: unknown };
        if (typeof j.tokenizer_dir === 'string' && !j.tokenizer_dir.split(/[\\/]/).includes('..') && !path.isAbsolute(j.tokenizer_dir)) sub = j.tokenizer_dir;
      } catch {
        // an unreadable config is reported by whoever opens the model; here we just keep the default
      }
      if (hasTokenizer(path.join(d, sub))) return path.join(d, sub);
    }
  }
  return null;
}

/** Resolve a plain directory (HF, .symb, or a parent holding hf/ and symb-*\/). */
export function resolveModelDir(dirIn: string): ResolvedModel {
  const dir = path.resolve(dirIn);
  if (!isDir(dir)) fail(dirIn, 'no such model directory');
  const name = path.basename(dir);
  if (isSymbDir(dir) || isHfDir(dir)) {
    return { name, studentDir: dir, teacherDir: dir, tokenizerDir: findTokenizer(dir, dir), baseModel: null, source: `directory ${dir}` };
  }
  const hf = path.join(dir, 'hf');
  const symbs = symbSubdirs(dir);
  const hasHf = isDir(hf) && isHfDir(hf);
  if (!hasHf && symbs.length === 0) {
    fail(dirIn, 'not a model directory: no config.json (Hugging Face), config.symb.json (SYNAXIM), hf/ or symb-*/ inside');
  }
  const studentDir = symbs.length > 0 ? path.join(dir, symbs[0]!) : hf;
  const teacherDir = hasHf ? hf : studentDir;
  return {
    name,
    studentDir,
    teacherDir,
    tokenizerDir: findTokenizer(teacherDir, studentDir),
    baseModel: null,
    source: `directory ${dir} (student ${path.basename(studentDir)}/, teacher ${path.basename(teacherDir)}/)`,
  };
}

/** Resolve a registry entry against the models roots. */
export function resolveRegistryEntry(entry: RegistryEntry, file: string, roots = modelRoots()): ResolvedModel {
  const looked: string[] = [];
  for (const root of roots) {
    const base = path.join(root, entry.dir);
    const studentDir = path.join(base, entry.student);
    looked.push(studentDir);
    if (!isDir(studentDir)) continue;
    const teacherDir = entry.teacher === 'same' ? studentDir : path.join(base, entry.teacher);
    if (!isDir(teacherDir)) {
      fail(
        null,
        `model '${entry.name}': found the student at ${studentDir} but not the teacher at ${teacherDir}. ${entry.howToGet} ` +
          `(or pass --teacher same to use the student's own weights as the teacher)`,
      );
    }
    let tokenizerDir: string | null;
    if (entry.tokenizer === 'auto') tokenizerDir = findTokenizer(teacherDir, studentDir);
    else {
      tokenizerDir = path.join(base, entry.tokenizer);
      if (!hasTokenizer(tokenizerDir)) fail(path.join(tokenizerDir, 'tokenizer.json'), `model '${entry.name}': tokenizer not found. ${entry.howToGet}`);
    }
    return { name: entry.name, studentDir, teacherDir, tokenizerDir, baseModel: entry.baseModel, source: `registry ${path.relative(PROJECT_ROOT, file)} in ${root}` };
  }
  return fail(
    null,
    `model '${entry.name}' not found; looked for ${looked.join(', ')} ($SYNAXIM_MODELS, then ./models). ${entry.howToGet}`,
  );
}

/**
 * A registry name or a directory -> the directories a run needs. Anything containing a path
 * separator, starting with `.`, or naming an existing directory is taken as a directory.
 */
export function resolveModel(nameOrDir: string, opts: { teacher?: string; roots?: string[] } = {}): ResolvedModel {
  const looksLikePath = nameOrDir.includes('/') || nameOrDir.includes('\\') || nameOrDir.startsWith('.') || isDir(nameOrDir);
  let resolved: ResolvedModel;
  if (looksLikePath) resolved = resolveModelDir(nameOrDir);
  else {
    if (!NAME_RE.test(nameOrDir)) fail(null, `--model: '${nameOrDir}' is neither a registry name nor a directory`);
    const file = path.join(MODELS_CONFIG_DIR, `${nameOrDir}.json`);
    if (!fs.existsSync(file)) {
      fail(null, `--model: unknown model '${nameOrDir}' (no directory of that name; registry names: ${registryNames().join(', ') || 'none'})`);
    }
    const entry = readRegistryEntry(file);
    if (opts.teacher === 'same') entry.teacher = 'same';
    resolved = resolveRegistryEntry(entry, file, opts.roots);
  }
  if (opts.teacher && opts.teacher !== 'same') {
    const t = path.resolve(opts.teacher);
    if (!isDir(t)) fail(opts.teacher, 'no such teacher directory');
    resolved = { ...resolved, teacherDir: t, tokenizerDir: resolved.tokenizerDir ?? findTokenizer(t, resolved.studentDir) };
  } else if (opts.teacher === 'same') {
    resolved = { ...resolved, teacherDir: resolved.studentDir };
  }
  return resolved;
}
