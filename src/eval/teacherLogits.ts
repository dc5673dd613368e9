/**
 * The eval side of the teacher log-prob cache (`eval --teacher-logits FILE`; format in
 * src/formats/teacherLogits.ts): write the teacher's log-probs once per (teacher, tokenizer,
 * windows), read them back window by window in place of a teacher prefill, refused in one line when
 * the file was made for another teacher, tokenizer or suite.
 *
 * Cached log-probs go straight into stats.ts: ComparisonAccumulator.addWindow takes logit rows and
 * log-softmaxes them in float64; a row of log-probs is a row of logits (softmax does not see a
 * constant shift), and that log-softmax renormalizes the dequantized row exactly. So
 * `scoreWindowAgainstCache` is addWindow with the cached window as the reference.
 *
 * Error of the figures (derivation in docs/teacher-logits.md). Let δ = scale/2 + 2^−24·|l| be the
 * per-entry error of the stored teacher log-probs l̃ (formats/teacherLogits.ts) and ε = e^{2δ} − 1.
 * After renormalization l̂ = l̃ − log Σ e^{l̃}, |l̂_v − l_v| ≤ 2δ (the log-sum is within ±δ of 0),
 * so p̂_v = p_v·e^{η_v} with |η_v| ≤ 2δ. Per token, against any candidate q:
 *   - NLL of the teacher: |Δ nll_ref| ≤ 2δ, hence |Δ ln PPL_ref| ≤ 2δ and |Δ ln(PPL/PPL_ref)| ≤ 2δ;
 *   - KL(p‖q) = Σ p (l − l_q): KL(p̂‖q) − KL(p‖q) = KL(p̂‖p) + Σ (p̂ − p)(l − l_q), with
 *     0 ≤ KL(p̂‖p) ≤ χ²(p̂‖p) ≤ ε² and |Σ (p̂ − p)(l − l_q)| ≤ ε·Σ p |l − l_q|, so
 *         |Δ KL| ≤ ε² + ε·Σ_v p_v |l_v − l_q,v|   ≤ ε² + ε·(KL + 2)
 *     (Σ p |l − l_q| = KL + 2·Σ p (l_q − l)₊ and Σ p (l_q − l)₊ ≤ Σ (q − p)₊ ≤ 1 by log x ≤ x − 1);
 *   - Δp: |Δ p_ref(target)| ≤ ε·p_ref(target);
 *   - same top: the cached argmax can differ only where the teacher's two largest log-probs are
 *     within 2δ of each other (a near-tie; the first index wins on an exact tie, as live).
 * With δ ≈ 2.3e-4 (log-probs down to −30): ε ≈ 4.6e-4, |Δ KL| ≤ about 9e-4 + 4.6e-4·KL per token.
 */
import fs from 'node:fs';
import path from 'node:path';
import { contentHash } from '../formats/contentHash.ts';
import { hashTokenWindows, TeacherLogitsFile, TeacherLogitsFileWriter, type TeacherLogitsHeader } from '../formats/teacherLogits.ts';
import { SYMB_CONFIG_FILE } from '../formats/symbModel.ts';
import { int4Activations } from '../runtime/backend.ts';
import { fail } from '../util/errors.ts';
import { logSoftmaxRow, type ComparisonAccumulator } from './stats.ts';

/** What a cache is for: the teacher, the tokenizer and the windows (content hashes), vocab and context. */
export interface TeacherLogitsKey {
  /** `sha256:<hex>` of the teacher model directory (contentHash). */
  teacherHash: string;
  /** `sha256:<hex>` of the tokenizer file (contentHash). */
  tokenizerHash: string;
  /** `sha256:<hex>` of the windows' token ids (hashTokenWindows). */
  windowsHash: string;
  vocab: number;
  /** The suite's context (longest window). */
  context: number;
  /** The teacher is an INT4 .symb (its logits depend on --int4-activations; the file does not record that mode). */
  int4Teacher?: boolean;
}

/** Whether a model directory is an INT4 .symb (config.symb.json says quantization.method int4). */
function isInt4Symb(dir: string): boolean {
  try {
    const j = JSON.parse(fs.readFileSync(path.join(dir, SYMB_CONFIG_FILE), 'utf8')) as { quantization?: { method?: unknown } };
    return j.quantization?.method === 'int4';
  } catch {
    return false; // not a .symb (or unreadable: the model loader reports that in its own words)
  }
}

/**
 * A --teacher-logits file holds float32-activation log-probs: with --int4-activations int8 an INT4
 * teacher computes other logits, so neither reading nor writing such a file is allowed then.
 */
function requireActivationsMatch(file: string, key: TeacherLogitsKey): void {
  if (key.int4Teacher && int4Activations() === 'int8') {
    fail(file, '--teacher-logits with an INT4 teacher needs --int4-activations float32 (the file holds float32-activation log-probs; int8 activations change the teacher\'s logits)');
  }
}

/** The key for a teacher directory, a tokenizer file and the suite's windows (token ids, BOS first). */
export function teacherLogitsKey(opts: { teacherDir: string; tokenizerFile: string; windows: ArrayLike<number>[]; vocab: number; context: number }): TeacherLogitsKey {
  return {
    teacherHash: contentHash(opts.teacherDir),
    tokenizerHash: contentHash(opts.tokenizerFile),
    windowsHash: hashTokenWindows(opts.windows),
    vocab: opts.vocab,
    context: opts.context,
    int4Teacher: isInt4Symb(opts.teacherDir),
  };
}

function short(h: string): string {
  return h.replace(/^sha256:/, '').slice(0, 12);
}

/**
 * Writes the teacher's log-probs for the windows, one window at a time, from the teacher's logits.
 * create() → writeWindow(i, logits) for every window (any order) → finish(); abort() on failure.
 */
export class TeacherLogitsWriter {
  private readonly row: Float64Array;

  private constructor(
    private readonly writer: TeacherLogitsFileWriter,
    readonly key: TeacherLogitsKey,
  ) {
    this.row = new Float64Array(key.vocab);
  }

  /**
   * Start `file` for `windows` (the token ids the teacher will see; their hash must be the key's).
   * An existing file is refused unless `overwrite`.
   */
  static create(file: string, key: TeacherLogitsKey, windows: ArrayLike<number>[], opts: { overwrite?: boolean } = {}): TeacherLogitsWriter {
    if (hashTokenWindows(windows) !== key.windowsHash) throw new Error('TeacherLogitsWriter: the windows are not the ones the key was made for');
    requireActivationsMatch(file, key);
    const header: TeacherLogitsHeader = {
      vocab: key.vocab,
      context: key.context,
      teacherHash: key.teacherHash,
      tokenizerHash: key.tokenizerHash,
      windowsHash: key.windowsHash,
      lengths: Uint32Array.from(windows, (w) => w.length),
    };
    return new TeacherLogitsWriter(TeacherLogitsFileWriter.create(file, header, opts), key);
  }

  get file(): string {
    return this.writer.file;
  }

  /** Window `i`'s teacher logits, [T × vocab] (a prefill's logits[s]): log-softmaxed in float64 and stored. */
  writeWindow(i: number, logits: Float32Array): void {
    const V = this.key.vocab;
    const T = this.writer.header.lengths[i];
    if (T === undefined) throw new Error(`TeacherLogitsWriter: window ${i} outside 0..${this.writer.windows - 1}`);
    if (logits.length !== T * V) throw new Error(`TeacherLogitsWriter: window ${i}: ${logits.length} logits for ${T} tokens × ${V}`);
    this.writer.writeWindowRows(i, (t) => {
      logSoftmaxRow(logits.subarray(t * V, (t + 1) * V), this.row);
      return this.row;
    });
  }

  finish(): void {
    this.writer.finish();
  }

  abort(): void {
    this.writer.abort();
  }
}

/** A cache open for reading. */
export interface TeacherLogProbs {
  readonly file: string;
  readonly key: TeacherLogitsKey;
  readonly windows: number;
  /** Window i's teacher log-probs, [T × vocab] float32 (usable wherever the teacher's logits are). */
  window(i: number): Float32Array;
  /** Several windows, in the shape of a prefill's `logits` for that batch. */
  batch(indices: number[]): Float32Array[];
  close(): void;
}

/**
 * Open a cache made for `expect`: a file made for another teacher, tokenizer, suite (windows) or
 * vocabulary is refused in one line saying which.
 */
export function openTeacherLogits(file: string, expect: TeacherLogitsKey): TeacherLogProbs {
  requireActivationsMatch(file, expect);
  const f = TeacherLogitsFile.open(file);
  try {
    const h = f.header;
    const diffs: string[] = [];
    if (h.teacherHash !== expect.teacherHash) diffs.push(`teacher ${short(h.teacherHash)}… ≠ ${short(expect.teacherHash)}…`);
    if (h.tokenizerHash !== expect.tokenizerHash) diffs.push(`tokenizer ${short(h.tokenizerHash)}… ≠ ${short(expect.tokenizerHash)}…`);
    if (h.windowsHash !== expect.windowsHash) diffs.push(`suite windows ${short(h.windowsHash)}… ≠ ${short(expect.windowsHash)}…`);
    if (h.vocab !== expect.vocab) diffs.push(`vocabulary ${h.vocab} ≠ ${expect.vocab}`);
    if (h.context !== expect.context) diffs.push(`context ${h.context} ≠ ${expect.context}`);
    if (diffs.length > 0) fail(file, `made for another teacher/suite: ${diffs.join(', ')} (file ≠ this run); remove it or pass another --teacher-logits file`);
  } catch (e) {
    f.close();
    throw e;
  }
  return {
    file,
    key: expect,
    windows: f.windows,
    window: (i) => f.window(i),
    batch: (indices) => indices.map((i) => f.window(i)),
    close: () => f.close(),
  };
}

/**
 * Score one window of a candidate against the cached teacher: `cached` = TeacherLogProbs.window(i),
 * `cand` the candidate's logits [T × vocab], `ids`/`firstScored` the window's. Exactly what the live
 * path does with the teacher's logits (stats.ts renormalizes the cached row in float64).
 */
export function scoreWindowAgainstCache(acc: ComparisonAccumulator, cached: Float32Array, cand: Float32Array, vocab: number, ids: ArrayLike<number>, firstScored: number): void {
  acc.addWindow(cached, cand, vocab, ids, firstScored);
}
