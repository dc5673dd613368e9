/**
 * Evaluation suites: which text, how it is cut into windows, how many tokens, which metrics.
 *
 * A suite is a JSON file (`configs/suites/<name>.json` for the built-in `smoke` and `standard`, or any
 * file given with `--suite FILE`), or an ad-hoc suite from flags (`--corpus FILE --context N
 * --max-seqs N`). Corpus paths in a suite file are relative to that file and must stay inside its
 * directory (no absolute paths, no `..`, no symlink leading out); `{"builtin": NAME}` names a corpus
 * the project writes itself.
 *
 * Windows (what the models see; every model sees exactly the same ones):
 * - `stride: null` (default): each document is its own sequence, BOS + tokens cut to `context`
 *   tokens; every next token is scored (T − 1 per window).
 * - `stride: S` (1 ≤ S < context): long documents are read with a sliding window of `context` tokens
 *   moved S tokens at a time (the window's first token replaced by BOS, as llama.cpp does); every
 *   token is scored exactly once, in the first window that has it beyond the previous window's end,
 *   so each scored token has at least context − S tokens before it (HF's "perplexity of fixed-length
 *   models" recipe).
 * Then `max_seqs` caps the number of windows and `token_budget` the number of scored tokens (the last
 * window is shortened to land on it exactly).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../util/errors.ts';
import { CONFIGS_DIR } from '../util/paths.ts';
import { defaultCorpus, readCorpus, type Corpus } from './corpus.ts';
import { MAX_CONFIG_BYTES, parseJsonBytes } from '../formats/config.ts';
import { readSmallRegularFile } from '../util/fileio.ts';

export const SUITES_DIR = path.join(CONFIGS_DIR, 'suites');

export const METRICS = ['ppl', 'kld', 'same_top_p', 'delta_p', 'hidden', 'position', 'memory'] as const;
export type Metric = (typeof METRICS)[number];

/** The configurations with fixed names. */
export const CONFIGURATIONS = ['teacher', 'teacher-on-student-weights', 'engine', 'adapter', 'hybrid'] as const;
export type FixedConfigurationName = (typeof CONFIGURATIONS)[number];
/**
 * A configuration name: a fixed one, or a parametric one —
 * - `window-W`: every layer softmax attention over the last W positions, on the student's weights;
 * - `engine@L`, `adapter@L` (L = a layer `3` or a range `0-2`): those layers gated (engine-v0.1.1 /
 *   adapter-v1), the others softmax attention, on the student's weights (`synaxim sweep`).
 */
export type ConfigurationName = FixedConfigurationName | `window-${number}` | `engine@${string}` | `adapter@${string}`;
/** What a configuration name means. */
export type ConfigurationSpec =
  | { kind: 'fixed'; name: FixedConfigurationName }
  | { kind: 'window'; window: number }
  | { kind: 'layers'; policy: 'engine' | 'adapter'; layers: number[] };
/** The names in words, for help and errors. */
export const CONFIGURATION_NAMES_HELP = `${CONFIGURATIONS.join(', ')}, window-W, engine@L, adapter@L (L a layer or a range like 0-2)`;

/** Parse a configuration name; null when it is none. */
export function parseConfigurationName(name: string): ConfigurationSpec | null {
  if ((CONFIGURATIONS as readonly string[]).includes(name)) return { kind: 'fixed', name: name as FixedConfigurationName };
  const w = /^window-([1-9][0-9]{0,8})$/.exec(name);
  if (w) return { kind: 'window', window: Number(w[1]) };
  const g = /^(engine|adapter)@(0|[1-9][0-9]{0,4})(?:-(0|[1-9][0-9]{0,4}))?$/.exec(name);
  if (g) {
    const a = Number(g[2]);
    const b = g[3] === undefined ? a : Number(g[3]);
    if (b < a) return null;
    return { kind: 'layers', policy: g[1] as 'engine' | 'adapter', layers: Array.from({ length: b - a + 1 }, (_, i) => a + i) };
  }
  return null;
}

/** The name of the configuration whose layers are `policy` on `layers` (contiguous) and softmax elsewhere. */
export function layersConfigurationName(policy: 'engine' | 'adapter', layers: number[]): ConfigurationName {
  const lo = Math.min(...layers);
  const hi = Math.max(...layers);
  if (hi - lo + 1 !== layers.length) throw new Error(`layersConfigurationName: layers ${layers.join(',')} are not a contiguous range`);
  return `${policy}@${lo === hi ? lo : `${lo}-${hi}`}`;
}

/** Window baselines asked for: sizes W, and `same-memory` (the W whose KV cache is as big as one gated layer's state). */
export type WindowRequest = number | 'same-memory';
/** By default every report carries the same-memory window. */
export const DEFAULT_WINDOWS: WindowRequest[] = ['same-memory'];

/**
 * `--window W[,W2…]` / `none`: the window sizes plus the same-memory window; `none` alone: no
 * window baseline at all. (`same-memory` may be named too.)
 */
export function parseWindowFlag(text: string, flag = '--window'): WindowRequest[] {
  const parts = text.split(',').map((x) => x.trim()).filter(Boolean);
  if (parts.length === 0) fail(null, `${flag}: give window sizes (comma-separated) or 'none'`);
  if (parts.includes('none')) {
    if (parts.length > 1) fail(null, `${flag}: 'none' excludes window sizes`);
    return [];
  }
  const sizes = parts.map((p) => {
    if (p === 'same-memory') return null;
    if (!/^[1-9][0-9]{0,8}$/.test(p)) fail(null, `${flag}: '${p}' is not a window size (a positive integer), 'same-memory' or 'none'`);
    return Number(p);
  });
  const unique: WindowRequest[] = [...new Set(sizes.filter((x): x is number => x !== null))].sort((a, b) => a - b);
  return [...unique, 'same-memory'];
}

/**
 * A corpus: a file (JSONL with a `text` field per line, or plain text with documents separated by
 * blank lines; told apart as src/data/corpus.ts does) or a built-in generated corpus.
 */
export type CorpusSpec = { kind: 'file'; path: string; maxDocs: number | null } | { kind: 'builtin'; name: string; maxDocs: number | null };

/**
 * Built-in corpora, generated by the project (no copied text): `default` is the distillation's
 * calibration corpus; `heldout` is the same grammar with another seed, so a suite does not score
 * the text an adapter was trained on.
 */
export const BUILTIN_CORPORA: Record<string, () => Corpus> = {
  default: () => defaultCorpus(),
  heldout: () => {
    const c = defaultCorpus(120, 777);
    return { ...c, source: 'builtin:heldout' };
  },
};

export interface Suite {
  name: string;
  description: string;
  /** Where the suite came from (a file path, or `flags`). */
  source: string;
  corpora: CorpusSpec[];
  /** Join each corpus's documents (with a blank line) into one text, as llama.cpp reads wiki.test.raw. */
  concatenate: boolean;
  /** Tokens per window, BOS included. */
  context: number;
  /** null: one window per document, cut to `context`; S: sliding windows S tokens apart. */
  stride: number | null;
  /** Most windows evaluated (null: no cap). */
  maxSeqs: number | null;
  /** Most tokens scored (null: no cap). */
  tokenBudget: number | null;
  metrics: Metric[];
  /** Configurations to run (null: every one that applies). */
  configurations: ConfigurationName[] | null;
  /** Window baselines added (`window-W` configurations); [] for none. */
  windows: WindowRequest[];
  /** Width of the divergence-by-position buckets (null: context/16, at least 1). */
  positionBucket: number | null;
  /** Context lengths for the state-memory vs KV-cache table. */
  memoryContexts: number[];
}

export const DEFAULT_MEMORY_CONTEXTS = [128, 512, 2048, 8192, 32768, 131072];

type Json = Record<string, unknown>;

function intField(file: string, j: Json, key: string, min: number, fallback: number | null): number | null {
  const v = j[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(file, `'${key}' must be an integer ≥ ${min}, got ${JSON.stringify(v)}`);
  return v;
}

/** A corpus path from a suite file: relative, and inside the suite file's directory (symlinks resolved). */
export function resolveInside(file: string, baseDir: string, rel: string): string {
  if (typeof rel !== 'string' || rel.length === 0) fail(file, 'corpus path must be a non-empty string');
  if (path.isAbsolute(rel) || rel.split(/[\\/]/).includes('..')) {
    fail(file, `corpus path ${JSON.stringify(rel)} escapes the suite's directory (use a path relative to the suite file, without '..')`);
  }
  const full = path.resolve(baseDir, rel);
  if (fs.existsSync(full)) {
    const realBase = fs.realpathSync(baseDir);
    const real = fs.realpathSync(full);
    if (real !== realBase && !real.startsWith(realBase + path.sep)) {
      fail(file, `corpus path ${JSON.stringify(rel)} is a link that leads outside the suite's directory (to ${real})`);
    }
  }
  return full;
}

function parseCorpus(file: string, baseDir: string, raw: unknown, i: number): CorpusSpec {
  const where = `corpora[${i}]`;
  if (typeof raw === 'string') return { kind: 'file', path: resolveInside(file, baseDir, raw), maxDocs: null };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, `${where} must be a path or an object with 'path' or 'builtin'`);
  const o = raw as Json;
  for (const k of Object.keys(o)) if (!['path', 'builtin', 'max_docs'].includes(k)) fail(file, `${where}: unknown field '${k}'`);
  const maxDocs = intField(file, o, 'max_docs', 1, null);
  if ((o.path === undefined) === (o.builtin === undefined)) fail(file, `${where} needs exactly one of 'path' and 'builtin'`);
  if (o.builtin !== undefined) {
    if (typeof o.builtin !== 'string' || !Object.hasOwn(BUILTIN_CORPORA, o.builtin)) {
      fail(file, `${where}: unknown built-in corpus ${JSON.stringify(o.builtin)} (known: ${Object.keys(BUILTIN_CORPORA).join(', ')})`);
    }
    return { kind: 'builtin', name: o.builtin, maxDocs };
  }
  return { kind: 'file', path: resolveInside(file, baseDir, o.path as string), maxDocs };
}

function configurationsField(file: string, j: Json): ConfigurationName[] | null {
  const v = j.configurations;
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v) || v.length === 0) fail(file, `'configurations' must be a non-empty list`);
  for (const x of v) {
    if (typeof x !== 'string' || !parseConfigurationName(x)) fail(file, `'configurations': unknown entry ${JSON.stringify(x)} (known: ${CONFIGURATION_NAMES_HELP})`);
  }
  return [...new Set(v as ConfigurationName[])];
}

function windowsField(file: string, j: Json): WindowRequest[] {
  const v = j.windows;
  if (v === undefined || v === null) return DEFAULT_WINDOWS;
  if (!Array.isArray(v)) fail(file, `'windows' must be a list of window sizes and/or "same-memory" ([] for none)`);
  for (const x of v) {
    if (x !== 'same-memory' && !(typeof x === 'number' && Number.isInteger(x) && x >= 1)) fail(file, `'windows': ${JSON.stringify(x)} is not a positive integer or "same-memory"`);
  }
  return [...new Set(v as WindowRequest[])];
}

function listField<T extends string>(file: string, j: Json, key: string, allowed: readonly T[]): T[] | null {
  const v = j[key];
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v) || v.length === 0) fail(file, `'${key}' must be a non-empty list`);
  for (const x of v) if (!allowed.includes(x as T)) fail(file, `'${key}': unknown entry ${JSON.stringify(x)} (known: ${allowed.join(', ')})`);
  return [...new Set(v as T[])];
}

/** Parse a suite object read from `file` (corpus paths relative to the file's directory). */
export function parseSuite(j: unknown, file: string): Suite {
  if (typeof j !== 'object' || j === null || Array.isArray(j)) fail(file, 'a suite must be a JSON object');
  const o = j as Json;
  const known = ['name', 'description', 'corpora', 'concatenate', 'context', 'stride', 'max_seqs', 'token_budget', 'metrics', 'configurations', 'windows', 'position_bucket', 'memory_contexts'];
  for (const k of Object.keys(o)) if (!known.includes(k)) fail(file, `unknown field '${k}' (known: ${known.join(', ')})`);
  const baseDir = path.dirname(path.resolve(file));
  if (!Array.isArray(o.corpora) || o.corpora.length === 0) fail(file, `'corpora' must be a non-empty list`);
  const context = intField(file, o, 'context', 2, null);
  if (context === null) fail(file, `missing required field 'context'`);
  const stride = intField(file, o, 'stride', 1, null);
  if (stride !== null && stride >= context) fail(file, `'stride' (${stride}) must be smaller than 'context' (${context})`);
  const mem = o.memory_contexts;
  let memoryContexts = DEFAULT_MEMORY_CONTEXTS;
  if (mem !== undefined && mem !== null) {
    if (!Array.isArray(mem) || mem.length === 0 || !mem.every((x) => Number.isInteger(x) && (x as number) > 0)) {
      fail(file, `'memory_contexts' must be a non-empty list of positive integers`);
    }
    memoryContexts = [...new Set(mem as number[])].sort((a, b) => a - b);
  }
  return {
    name: typeof o.name === 'string' && o.name ? o.name : path.basename(file, '.json'),
    description: typeof o.description === 'string' ? o.description : '',
    source: file,
    corpora: o.corpora.map((c, i) => parseCorpus(file, baseDir, c, i)),
    concatenate: o.concatenate === undefined ? false : o.concatenate === true ? true : o.concatenate === false ? false : fail(file, `'concatenate' must be true or false`),
    context,
    stride,
    maxSeqs: intField(file, o, 'max_seqs', 1, null),
    tokenBudget: intField(file, o, 'token_budget', 1, null),
    metrics: listField(file, o, 'metrics', METRICS) ?? [...METRICS],
    configurations: configurationsField(file, o),
    windows: windowsField(file, o),
    positionBucket: intField(file, o, 'position_bucket', 1, null),
    memoryContexts,
  };
}

/** Names of the built-in suites (configs/suites/*.json). */
export function builtinSuiteNames(): string[] {
  if (!fs.existsSync(SUITES_DIR)) return [];
  return fs
    .readdirSync(SUITES_DIR)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -5))
    .sort();
}

/** `--suite`: a built-in name (`smoke`, `standard`) or a path to a suite file. */
export function loadSuite(nameOrFile: string): Suite {
  let file: string;
  if (/^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(nameOrFile) && !fs.existsSync(nameOrFile)) {
    file = path.join(SUITES_DIR, `${nameOrFile}.json`);
    if (!fs.existsSync(file)) fail(null, `--suite: unknown suite '${nameOrFile}' (built-in: ${builtinSuiteNames().join(', ') || 'none'}; or give a file)`);
  } else file = nameOrFile;
  // A regular file of a sane size (a FIFO is refused, never waited on).
  const bytes = readSmallRegularFile(file, MAX_CONFIG_BYTES, 'a suite file', 'file not found', 'suite file');
  return parseSuite(parseJsonBytes(file, bytes), file);
}

/** The ad-hoc suite of `--corpus FILE --context N --max-seqs N` (a user path: may be anywhere). */
export function adHocSuite(opts: { corpus: string; context: number; maxSeqs?: number | null; stride?: number | null; tokenBudget?: number | null }): Suite {
  const { corpus, context } = opts;
  if (!Number.isInteger(context) || context < 2) fail(null, `--context must be an integer ≥ 2, got ${context}`);
  const maxSeqs = opts.maxSeqs ?? null;
  if (maxSeqs !== null && (!Number.isInteger(maxSeqs) || maxSeqs < 1)) fail(null, `--max-seqs must be a positive integer, got ${maxSeqs}`);
  const stride = opts.stride ?? null;
  if (stride !== null && (!Number.isInteger(stride) || stride < 1 || stride >= context)) fail(null, `--stride must be an integer in 1..${context - 1}`);
  const tokenBudget = opts.tokenBudget ?? null;
  if (tokenBudget !== null && (!Number.isInteger(tokenBudget) || tokenBudget < 1)) fail(null, `--token-budget must be a positive integer`);
  const full = path.resolve(corpus);
  if (!fs.existsSync(full)) fail(corpus, 'file not found');
  return {
    name: `adhoc:${path.basename(corpus)}`,
    description: `${corpus}, each document its own sequence: BOS + tokens cut to ${context}` + (maxSeqs ? `, first ${maxSeqs}` : ''),
    source: 'flags',
    corpora: [{ kind: 'file', path: full, maxDocs: null }],
    concatenate: false,
    context,
    stride,
    maxSeqs,
    tokenBudget,
    metrics: [...METRICS],
    configurations: null,
    windows: DEFAULT_WINDOWS,
    positionBucket: null,
    memoryContexts: DEFAULT_MEMORY_CONTEXTS,
  };
}

/** Divergence-by-position bucket width for a suite. */
export function positionBucketWidth(s: Suite): number {
  return s.positionBucket ?? Math.max(1, Math.ceil(s.context / 16));
}

/** One window the models see: `ids` (BOS first); rows firstScored … T−2 predict ids[row + 1]. */
export interface EvalWindow {
  /** Index of the document (over all corpora, in order) it comes from. */
  doc: number;
  /** Token offset of the window's first token in its document sequence (BOS = 0). */
  offset: number;
  ids: number[];
  firstScored: number;
}

/** Tokens scored in a window. */
export function scoredCount(w: EvalWindow): number {
  return Math.max(0, w.ids.length - 1 - w.firstScored);
}

/**
 * Cut tokenized documents (without BOS) into windows as the suite says. Pure.
 * `bos` null: the model has no BOS; documents start with their first token, which is not scored.
 */
export function buildWindows(
  docs: number[][],
  opts: { bos: number | null; context: number; stride: number | null; maxSeqs: number | null; tokenBudget: number | null },
): EvalWindow[] {
  const { bos, context, stride, maxSeqs, tokenBudget } = opts;
  if (stride !== null && !(stride >= 1 && stride < context)) throw new Error(`stride ${stride} must be in 1..${context - 1}`);
  const out: EvalWindow[] = [];
  let scored = 0;
  const full = (w: EvalWindow) => {
    // Apply the token budget: shorten the window so the total lands on it exactly.
    if (tokenBudget !== null && scored + scoredCount(w) > tokenBudget) {
      w.ids = w.ids.slice(0, w.firstScored + 1 + (tokenBudget - scored));
    }
    if (scoredCount(w) > 0) {
      out.push(w);
      scored += scoredCount(w);
    }
    return (maxSeqs !== null && out.length >= maxSeqs) || (tokenBudget !== null && scored >= tokenBudget);
  };
  for (let d = 0; d < docs.length; d++) {
    const seq = bos === null ? docs[d]! : [bos, ...docs[d]!];
    if (seq.length < 2) continue;
    if (stride === null) {
      if (full({ doc: d, offset: 0, ids: seq.slice(0, context), firstScored: 0 })) return out;
      continue;
    }
    let prevEnd = 0;
    for (let begin = 0; ; begin += stride) {
      const end = Math.min(begin + context, seq.length);
      const ids = seq.slice(begin, end);
      if (begin > 0 && bos !== null) ids[0] = bos;
      // targets: document indices j in [max(prevEnd, begin+1), end), predicted by row j − 1 − begin
      const firstTarget = Math.max(prevEnd, begin + 1);
      if (full({ doc: d, offset: begin, ids, firstScored: firstTarget - 1 - begin })) return out;
      prevEnd = end;
      if (end >= seq.length) break;
    }
  }
  return out;
}

/**
 * Tokens of a document (without BOS) the suite's windows can use, so that a long document is
 * tokenized only that far (encodePrefix; the windows come out the same): one window per document
 * uses `context` tokens; sliding windows use (max_seqs − 1)·stride + context, or token_budget +
 * context; Infinity when nothing bounds them. One more than needed, so a document cut there still
 * looks longer than the last window to buildWindows.
 */
export function docTokensNeeded(s: Pick<Suite, 'context' | 'stride' | 'maxSeqs' | 'tokenBudget'>): number {
  if (s.stride === null) return s.context + 1;
  let n = Infinity;
  if (s.maxSeqs !== null) n = Math.min(n, (s.maxSeqs - 1) * s.stride + s.context);
  if (s.tokenBudget !== null) n = Math.min(n, s.tokenBudget + s.context);
  return n + 1;
}

/** Read every corpus of a suite (documents in order, each corpus cut to its max_docs). */
export function readSuiteCorpora(s: Suite): Corpus[] {
  return s.corpora.map((c) => {
    const corpus = c.kind === 'builtin' ? BUILTIN_CORPORA[c.name]!() : readCorpus(c.path);
    const docs = c.maxDocs === null ? corpus.documents : corpus.documents.slice(0, c.maxDocs);
    return { ...corpus, documents: s.concatenate ? [docs.join('\n\n')] : docs };
  });
}

/** How a suite's windows were made, in words (for reports). */
export function describeWindows(s: Suite): string {
  return (s.concatenate ? 'documents joined into one text; ' : '') + (s.stride === null
    ? `each document its own sequence: BOS + tokens cut to ${s.context}, every next token scored`
    : `sliding windows of ${s.context} tokens, stride ${s.stride}, every token scored once`);
}
