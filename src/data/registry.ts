/**
 * The model registry: short names (`magnus`, `stories260k`, ...) for the directories a run needs —
 * the student's weights (usually a `.symb` conversion), the teacher's (the original HF checkpoint,
 * or `same`: the student's own weights) and the tokenizer. Each name is a JSON file in
 * `configs/models/`; its directories are relative to a models root, searched in order:
 * every entry of `$SYNAXIM_MODELS` (`:`-separated), then `./models`. A name resolves to whatever
 * layout its how-to-get advice produces (the declared student/teacher pair, an HF checkpoint alone,
 * or a `.symb` conversion alone, which then teaches itself — said on stderr). A missing model is an
 * error that says where we looked and how to get it — never a silent fallback to something else.
 *
 * A plain directory works too: an HF checkpoint, a `.symb` conversion, or a directory holding both
 * (`hf/` and `symb-*`/, like ../shared/models/stories260k) — then hf/ is the teacher and the
 * `.symb` conversion the student.
 */
import type { InputPath } from '../util/outputs.ts';
import fs from 'node:fs';
import path from 'node:path';
import { fail, SynaximError } from '../util/errors.ts';
import { entryExists, MiB, readSmallRegularFile, snippet } from '../util/fileio.ts';
import { CONFIGS_DIR, PROJECT_ROOT } from '../util/paths.ts';

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
    j = JSON.parse(readSmallRegularFile(file, 4 * MiB, 'a registry entry').toString('utf8'));
  } catch (e) {
    if (e instanceof SynaximError) throw e; // not a regular file, too big, missing: said in one line
    fail(file, `invalid JSON (${snippet((e as Error).message, 120)})`);
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
// entryExists (lstat): a dangling or looping link counts as there, so its reader names the problem.
const isHfDir = (d: string) => entryExists(path.join(d, 'config.json'));
const isSymbDir = (d: string) => entryExists(path.join(d, 'config.symb.json'));
const hasTokenizer = (d: string) => entryExists(path.join(d, 'tokenizer.json'));

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
        // (a regular file of a sane size: a FIFO here would block forever)
        const j = JSON.parse(readSmallRegularFile(path.join(d, 'config.symb.json'), 4 * MiB, 'a JSON config').toString('utf8')) as { tokenizer_dir?: unknown };
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

/** What one models root holds for a registry entry: where we looked and what we found there. */
export interface RegistryLookup {
  root: string;
  /** `<root>/<entry.dir>` */
  dir: string;
  /** Human-readable findings, e.g. `symb-int4/ (.symb)`, `hf/ (Hugging Face)`, `Hugging Face checkpoint`; empty: nothing. */
  found: string[];
  /** The directories a run would use from here, or null when this root holds no usable model. */
  resolved: ResolvedModel | null;
  /** Said once when the model resolves but not as the entry declares it (e.g. no teacher: the student teaches). */
  note: string | null;
}

/** Every usable model layout inside `base`, described for `synaxim models` and error messages. */
function findings(base: string): string[] {
  if (!isDir(base)) return [];
  const out: string[] = [];
  if (isHfDir(base)) out.push('Hugging Face checkpoint (config.json)');
  if (isSymbDir(base)) out.push('.symb conversion (config.symb.json)');
  if (isDir(path.join(base, 'hf')) && isHfDir(path.join(base, 'hf'))) out.push('hf/ (Hugging Face)');
  for (const s of symbSubdirs(base)) out.push(`${s}/ (.symb)`);
  return out;
}

/**
 * Look for an entry under one root. The declared layout (`student` and `teacher` under `dir`) comes
 * first; otherwise whatever the how-to-get advice can produce: an HF checkpoint alone (in `dir` or
 * `dir/hf/`: it is student and teacher), a `.symb` conversion alone (it teaches itself, said in
 * `note`), or `hf/` with another `symb-*` conversion than the declared one.
 */
export function lookupRegistryEntry(entry: RegistryEntry, file: string, root: string): RegistryLookup {
  const base = path.join(root, entry.dir);
  const found = findings(base);
  const lookup: RegistryLookup = { root, dir: base, found, resolved: null, note: null };
  if (found.length === 0) return lookup;
  const source = `registry ${path.relative(PROJECT_ROOT, file) || file} in ${root}`;
  const declaredStudent = path.join(base, entry.student);
  const declaredTeacher = entry.teacher === 'same' ? null : path.join(base, entry.teacher);
  const usable = (d: string) => isDir(d) && (isHfDir(d) || isSymbDir(d));
  let studentDir: string;
  let teacherDir: string;
  if (usable(declaredStudent)) studentDir = declaredStudent;
  else if (isHfDir(base) || isSymbDir(base)) studentDir = base;
  else {
    const symbs = symbSubdirs(base);
    if (symbs.length > 0) studentDir = path.join(base, symbs[0]!);
    else if (usable(path.join(base, 'hf'))) studentDir = path.join(base, 'hf');
    else return lookup;
  }
  if (entry.teacher === 'same') teacherDir = studentDir;
  else if (declaredTeacher && usable(declaredTeacher)) teacherDir = declaredTeacher;
  else if (isHfDir(studentDir)) teacherDir = studentDir;
  else if (isHfDir(base)) teacherDir = base;
  else if (usable(path.join(base, 'hf'))) teacherDir = path.join(base, 'hf');
  else {
    teacherDir = studentDir;
    lookup.note =
      `model '${entry.name}': no teacher at ${declaredTeacher}, so the student's own weights (${studentDir}) are the teacher ` +
      `(every comparison is then against the quantized model; put the Hugging Face checkpoint there for the real teacher)`;
  }
  let tokenizerDir: string | null;
  if (entry.tokenizer === 'auto' || !hasTokenizer(path.join(base, entry.tokenizer))) tokenizerDir = findTokenizer(teacherDir, studentDir);
  else tokenizerDir = path.join(base, entry.tokenizer);
  const rel = (d: string) => path.relative(base, d) || '.';
  lookup.resolved = {
    name: entry.name,
    studentDir,
    teacherDir,
    tokenizerDir,
    baseModel: entry.baseModel,
    source: `${source} (student ${rel(studentDir)}, teacher ${teacherDir === studentDir ? 'the student itself' : rel(teacherDir)})`,
  };
  return lookup;
}

/** Notes already printed (a run resolves its model several times: once per worker, once per phase). */
const notesSaid = new Set<string>();

/** Resolve a registry entry against the models roots: the first root that holds a usable layout. */
export function resolveRegistryEntry(entry: RegistryEntry, file: string, roots = modelRoots()): ResolvedModel {
  const looked: string[] = [];
  for (const root of roots) {
    const l = lookupRegistryEntry(entry, file, root);
    looked.push(l.found.length > 0 ? `${l.dir} (found ${l.found.join(', ')}; no model weights)` : l.dir);
    if (!l.resolved) continue;
    if (l.note && !notesSaid.has(l.note)) {
      notesSaid.add(l.note);
      process.stderr.write(`synaxim: note: ${l.note}\n`);
    }
    return l.resolved;
  }
  return fail(
    null,
    `model '${entry.name}' not found; looked in ${looked.join(', ')} ($SYNAXIM_MODELS, then ./models; \`synaxim models\` lists every name). ${entry.howToGet}`,
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

/** What `--model` (and `--teacher`) read: the directory given and the student/teacher/tokenizer dirs it resolves to. */
export function modelInputs(model: string | null | undefined, teacher?: string | null): InputPath[] {
  const inputs: InputPath[] = [];
  if (!model) return inputs;
  if (fs.existsSync(model)) inputs.push({ path: model, what: 'input model directory' });
  try {
    const r = resolveModel(model, teacher ? { teacher } : {});
    inputs.push({ path: r.studentDir, what: 'input model directory' }, { path: r.teacherDir, what: 'teacher directory' }, { path: r.tokenizerDir, what: 'tokenizer directory' });
  } catch (e) {
    if (!(e instanceof SynaximError)) throw e; // the command reports a bad --model itself, with its own words
  }
  if (teacher && teacher !== 'same' && fs.existsSync(teacher)) inputs.push({ path: teacher, what: 'teacher directory' });
  return inputs;
}
