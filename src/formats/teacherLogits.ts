/**
 * The teacher log-probability file (`eval --teacher-logits FILE`): the teacher's per-token
 * log-probabilities over the vocabulary for every window of a suite, stored once and reused by every
 * later eval against the same (teacher, tokenizer, windows). Quantized like llama.cpp's
 * `--kl-divergence-base` file: per token a float32 minimum log-prob, a float32 scale and vocab × uint16
 * codes. Layout (all little-endian):
 *
 *   0    8 bytes  magic "SYNXTLP\0"
 *   8    u32      version (1)
 *   12   u32      vocab V
 *   16   u32      context (longest window the suite allows)
 *   20   u32      number of windows W
 *   24   32 bytes sha256 of the teacher model's files       (formats/contentHash.ts)
 *   56   32 bytes sha256 of the tokenizer file               (formats/contentHash.ts)
 *   88   32 bytes sha256 of the windows' token ids           (hashTokenWindows below)
 *   120  8 bytes  reserved, zero
 *   128  W × u32  tokens in each window (1 … context)
 *   then window after window, token after token: f32 min, f32 scale, V × u16 code
 *
 * Dequantized log-prob = min + code · scale. The writer picks min = the row's smallest log-prob
 * (raised to LOGPROB_FLOOR = −100 nats if lower: a −∞ logit must not make the scale infinite) and
 * rounded down to float32, and the smallest float32 scale with min + 65535·scale ≥ the row's largest
 * log-prob; code = round((logp − min) / scale).
 *
 * Error bound, per entry: |dequantized − true| ≤ scale/2 for every log-prob ≥ LOGPROB_FLOOR (an entry
 * below it reads back as ≥ the floor: probability < e^−100, nothing any figure can see). The reader
 * returns float32, which adds at most 2^−24·|log-prob|. scale = (max − min)/65535 ≤ 100/65535, so
 * scale/2 ≤ 7.7e-4 nats; for a real row (log-probs down to about −30) it is about 2.3e-4.
 * What that means for KL, top-1 and perplexity is derived in src/eval/teacherLogits.ts and
 * docs/teacher-logits.md.
 *
 * Streaming: the writer takes one window at a time (positioned writes into a temporary file renamed
 * into place by finish(); util/atomic.ts's naming, so a killed run's temporary is cleaned up like
 * any other); the reader reads one window at a time. Hostile files: the reader checks magic,
 * version, bounds on every count, that the size is exactly what the header implies, and for every
 * row that its probabilities sum to 1 within the quantization error (a flipped bit or a foreign file
 * is refused, never scored); every problem is one line naming the file.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ensureDir } from '../util/atomic.ts';
import { fail } from '../util/errors.ts';
import { asUserFsError } from '../util/fsErrors.ts';
import { entryExists, formatBytes, openRegularFile, readExactly } from '../util/fileio.ts';

export const TEACHER_LOGITS_MAGIC = Buffer.from('SYNXTLP\0', 'latin1');
export const TEACHER_LOGITS_VERSION = 1;
export const HEADER_BYTES = 128;
/** Log-probs below this are stored as this (nats). */
export const LOGPROB_FLOOR = -100;
export const MAX_CODE = 65535;
/** Bounds on what a header may claim (a hostile file must not make the reader allocate wildly). */
export const MAX_VOCAB = 1 << 21;
export const MAX_CONTEXT = 1 << 20;
export const MAX_WINDOWS = 1 << 24;
/** A window is read whole as float32: at most this many values (4 GiB). */
export const MAX_WINDOW_VALUES = 2 ** 30;
/** Codes are stored little-endian; typed-array views need a swap on a big-endian machine. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export interface TeacherLogitsHeader {
  vocab: number;
  context: number;
  /** `sha256:<hex>` of the teacher model's files. */
  teacherHash: string;
  /** `sha256:<hex>` of the tokenizer file. */
  tokenizerHash: string;
  /** `sha256:<hex>` of the windows' token ids (hashTokenWindows). */
  windowsHash: string;
  /** Tokens in each window. */
  lengths: Uint32Array;
}

/** Bytes of one token's record: min, scale, codes. */
export function recordBytes(vocab: number): number {
  return 8 + 2 * vocab;
}

/** Rows of a T-row window read or written at once: a few MiB at a time (a 32k vocabulary × 512 tokens window is 32 MiB of codes). */
function chunkRows(T: number, rowBytes: number): number {
  return Math.max(1, Math.min(T, Math.floor((4 << 20) / rowBytes)));
}

/** A window index inside 0..windows−1 (a caller's bug otherwise). */
function requireWindowIndex(i: number, windows: number): void {
  if (!(Number.isInteger(i) && i >= 0 && i < windows)) throw new Error(`teacher logits: window ${i} outside 0..${windows - 1}`);
}

/** Byte offset of each window's first row: after the header and the table of window lengths. */
function windowOffsets(header: Pick<TeacherLogitsHeader, 'vocab' | 'lengths'>): number[] {
  const rb = recordBytes(header.vocab);
  let off = HEADER_BYTES + 4 * header.lengths.length;
  return Array.from(header.lengths, (n) => {
    const o = off;
    off += n * rb;
    return o;
  });
}

/**
 * `sha256:<hex>` of token windows: u32 count, then per window u32 length and the ids as u32, all
 * little-endian. Two suites that cut the same tokens into the same windows hash the same.
 */
export function hashTokenWindows(windows: ArrayLike<number>[]): string {
  const h = crypto.createHash('sha256');
  const u32 = (n: number) => {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(n >>> 0);
    return b;
  };
  h.update(u32(windows.length));
  for (const w of windows) {
    h.update(u32(w.length));
    h.update(Buffer.from(Uint32Array.from(w).buffer));
  }
  return `sha256:${h.digest('hex')}`;
}

const HASH_RE = /^sha256:([0-9a-f]{64})$/;
function hashBytes(h: string, what: string): Buffer {
  const m = HASH_RE.exec(h);
  if (!m) throw new Error(`teacher logits: ${what} hash ${h} is not sha256:<64 hex digits>`);
  return Buffer.from(m[1]!, 'hex');
}

export function encodeHeader(h: TeacherLogitsHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES + 4 * h.lengths.length);
  TEACHER_LOGITS_MAGIC.copy(b, 0);
  b.writeUInt32LE(TEACHER_LOGITS_VERSION, 8);
  b.writeUInt32LE(h.vocab, 12);
  b.writeUInt32LE(h.context, 16);
  b.writeUInt32LE(h.lengths.length, 20);
  hashBytes(h.teacherHash, 'teacher').copy(b, 24);
  hashBytes(h.tokenizerHash, 'tokenizer').copy(b, 56);
  hashBytes(h.windowsHash, 'windows').copy(b, 88);
  h.lengths.forEach((n, i) => b.writeUInt32LE(n, HEADER_BYTES + 4 * i));
  return b;
}

/** The float32 next to `x` towards +∞ (dir 1) or −∞ (dir −1); x finite and non-zero. */
function f32Step(x: number, dir: 1 | -1): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  // Away from zero is +1 on the bit pattern whatever the sign.
  u[0] = Math.sign(x) === dir ? u[0]! + 1 : u[0]! - 1;
  return f[0]!;
}

/**
 * Quantize one row of log-probs into `out` at `offset` (recordBytes(V) bytes). Returns the row's
 * {min, scale}. Throws a plain Error on a non-finite entry other than −∞ (the caller names the file).
 */
export function quantizeRow(logprobs: ArrayLike<number>, out: DataView, offset: number): { min: number; scale: number } {
  const V = logprobs.length;
  let lo = Infinity;
  let hi = -Infinity;
  for (let v = 0; v < V; v++) {
    const x = logprobs[v]!;
    if (Number.isNaN(x) || x === Infinity) throw new Error(`log-prob ${x} at vocabulary index ${v}`);
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  if (!(hi > -Infinity)) throw new Error('every log-prob is −∞');
  // log-probs are ≤ 0; a row of raw logits here is a caller's bug the reader would later call corrupt
  if (hi > 1e-3) throw new Error(`not log-probabilities (the largest is ${hi} > 0)`);
  lo = Math.min(Math.max(lo, LOGPROB_FLOOR), hi);
  let min = Math.fround(lo);
  if (min > lo) min = f32Step(min, -1);
  let scale = 0;
  if (hi > min) {
    scale = Math.fround((hi - min) / MAX_CODE);
    if (scale === 0) scale = 2 ** -149; // the smallest float32 (subnormal)
    while (min + MAX_CODE * scale < hi) scale = f32Step(scale, 1);
  }
  out.setFloat32(offset, min, true);
  out.setFloat32(offset + 4, scale, true);
  const codes = new Uint16Array(out.buffer, out.byteOffset + offset + 8, V); // record offsets are even
  const inv = scale > 0 ? 1 / scale : 0;
  for (let v = 0; v < V; v++) {
    // (x − min)·(1/scale) may differ from (x − min)/scale in the last bit: the bound gets 1e-16 relative slack
    let code = Math.round((logprobs[v]! - min) * inv);
    if (!(code >= 0)) code = 0; // −∞ and anything below the floor
    else if (code > MAX_CODE) code = MAX_CODE;
    codes[v] = code;
  }
  if (!LITTLE_ENDIAN) Buffer.from(codes.buffer, codes.byteOffset, codes.byteLength).swap16();
  return { min, scale };
}

/**
 * Dequantize one record at `offset` of `bytes` into out[outOffset … + V) (float64 arithmetic, stored
 * as float32). Returns log Σ exp(dequantized) computed in float64 (≈ 0 for a valid row) and the row's
 * scale, for validation.
 */
export function dequantizeRow(bytes: DataView, offset: number, vocab: number, out: Float32Array, outOffset: number): { lse: number; min: number; scale: number } {
  const min = bytes.getFloat32(offset, true);
  const scale = bytes.getFloat32(offset + 4, true);
  const codes = LITTLE_ENDIAN
    ? new Uint16Array(bytes.buffer, bytes.byteOffset + offset + 8, vocab) // record offsets are even
    : Uint16Array.from({ length: vocab }, (_, v) => bytes.getUint16(offset + 8 + 2 * v, true));
  let sum = 0;
  for (let v = 0; v < vocab; v++) {
    const x = min + codes[v]! * scale;
    out[outOffset + v] = x;
    sum += Math.exp(x);
  }
  return { lse: Math.log(sum), min, scale };
}

/** Largest |log Σ p| a valid row can show: the quantization error plus rounding. */
export function rowNormTolerance(scale: number): number {
  return scale / 2 + 1e-6;
}

let tempCounter = 0;
/** A temporary beside `target` named as util/atomic.ts names them (`.<name>.tmp-<pid>-<n>`), so its stale-temp cleanup applies. */
function tempNameFor(target: string): string {
  tempCounter += 1;
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${900000000 + tempCounter}`);
}

/**
 * Writes a teacher log-prob file window by window (in any order), atomically: everything goes to a
 * temporary beside `file`, renamed into place by finish() once every window is in. abort() (or a
 * failure in finish) removes the temporary; an existing `file` is never touched before the rename.
 */
export class TeacherLogitsFileWriter {
  private fd: number | null;
  private readonly tmp: string;
  private readonly offsets: number[];
  private readonly written: Uint8Array;
  private scratch: DataView | null = null;

  private constructor(
    readonly file: string,
    readonly header: TeacherLogitsHeader,
    fd: number,
    tmp: string,
    private readonly overwrite: boolean,
  ) {
    this.fd = fd;
    this.tmp = tmp;
    this.offsets = windowOffsets(header);
    this.written = new Uint8Array(header.lengths.length);
  }

  /** Start writing `file`; refuses to replace an existing one unless `overwrite`. */
  static create(file: string, header: TeacherLogitsHeader, opts: { overwrite?: boolean } = {}): TeacherLogitsFileWriter {
    const { vocab, context, lengths } = header;
    if (!(Number.isInteger(vocab) && vocab >= 1 && vocab <= MAX_VOCAB)) throw new Error(`teacher logits: vocabulary ${vocab} outside 1..${MAX_VOCAB}`);
    if (!(Number.isInteger(context) && context >= 1 && context <= MAX_CONTEXT)) throw new Error(`teacher logits: context ${context} outside 1..${MAX_CONTEXT}`);
    if (lengths.length > MAX_WINDOWS) throw new Error(`teacher logits: ${lengths.length} windows, more than ${MAX_WINDOWS}`);
    lengths.forEach((n, i) => {
      if (!(n >= 1 && n <= context)) throw new Error(`teacher logits: window ${i} has ${n} tokens, outside 1..${context}`);
    });
    const head = encodeHeader(header);
    if (entryExists(file) && !opts.overwrite) fail(file, 'the file exists; pass --overwrite to replace it');
    const tmp = tempNameFor(path.resolve(file));
    let fd: number | null = null;
    try {
      ensureDir(path.dirname(path.resolve(file)));
      fd = fs.openSync(tmp, 'wx');
      let off = 0;
      while (off < head.length) off += fs.writeSync(fd, head, off, head.length - off, off);
    } catch (e) {
      if (fd !== null) fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
      throw asUserFsError(e, file);
    }
    return new TeacherLogitsFileWriter(file, header, fd, tmp, opts.overwrite ?? false);
  }

  get windows(): number {
    return this.header.lengths.length;
  }

  /** Store window `i`'s log-probs, [T × vocab] row-major (T = lengths[i]), float64 or float32. */
  writeWindow(i: number, logprobs: ArrayLike<number> & { subarray(a: number, b: number): ArrayLike<number> }): void {
    const V = this.header.vocab;
    const T = this.header.lengths[i];
    if (T !== undefined && logprobs.length !== T * V) throw new Error(`teacher logits: window ${i}: ${logprobs.length} values for ${T} tokens × ${V}`);
    this.writeWindowRows(i, (t) => logprobs.subarray(t * V, (t + 1) * V));
  }

  /**
   * Store window `i` row by row: `row(t)` gives token t's log-probs (vocab values; it may reuse one
   * buffer, each row is quantized before the next is asked for), so a window's log-probs need never
   * be whole in memory.
   */
  writeWindowRows(i: number, row: (t: number) => ArrayLike<number>): void {
    const fd = this.fd;
    if (fd === null) throw new Error('teacher logits: writer already finished');
    requireWindowIndex(i, this.windows);
    const V = this.header.vocab;
    const T = this.header.lengths[i]!;
    const rb = recordBytes(V);
    const rowsPerChunk = chunkRows(T, rb);
    if (!this.scratch || this.scratch.byteLength < rowsPerChunk * rb) this.scratch = new DataView(new ArrayBuffer(rowsPerChunk * rb));
    const buf = new Uint8Array(this.scratch.buffer);
    try {
      for (let t0 = 0; t0 < T; t0 += rowsPerChunk) {
        const rows = Math.min(rowsPerChunk, T - t0);
        for (let r = 0; r < rows; r++) {
          const t = t0 + r;
          const values = row(t);
          if (values.length !== V) throw new Error(`teacher logits: window ${i}, token ${t}: ${values.length} values for vocabulary ${V}`);
          try {
            quantizeRow(values, this.scratch, r * rb);
          } catch (e) {
            fail(this.file, `window ${i}, token ${t}: the teacher's log-probs are unusable (${(e as Error).message}); nothing was written`);
          }
        }
        const len = rows * rb;
        const pos = this.offsets[i]! + t0 * rb;
        let off = 0;
        while (off < len) off += fs.writeSync(fd, buf, off, len - off, pos + off);
      }
    } catch (e) {
      this.abort();
      throw asUserFsError(e, this.file);
    }
    this.written[i] = 1;
  }

  /** fsync and rename into place; every window must have been written. */
  finish(): void {
    if (this.fd === null) throw new Error('teacher logits: writer already finished');
    const missing = this.written.indexOf(0);
    if (missing >= 0) {
      this.abort();
      throw new Error(`teacher logits: window ${missing} of ${this.windows} was never written`);
    }
    try {
      fs.fsyncSync(this.fd);
      fs.closeSync(this.fd);
      this.fd = null;
      if (entryExists(this.file) && !this.overwrite) fail(this.file, 'the file appeared while it was being written; pass --overwrite to replace it');
      fs.renameSync(this.tmp, this.file);
    } catch (e) {
      this.abort();
      throw asUserFsError(e, this.file);
    }
  }

  /** Drop the temporary (idempotent). */
  abort(): void {
    if (this.fd !== null) {
      try {
        fs.closeSync(this.fd);
      } catch {
        // already failing
      }
      this.fd = null;
    }
    fs.rmSync(this.tmp, { force: true });
  }
}

/** A teacher log-prob file open for reading, one window at a time. */
export class TeacherLogitsFile {
  private fd: number | null;
  private readonly offsets: number[];

  private constructor(
    readonly file: string,
    readonly header: TeacherLogitsHeader,
    fd: number,
  ) {
    this.fd = fd;
    this.offsets = windowOffsets(header);
  }

  /** Open and check the header and the size (not the rows: those are checked as they are read). */
  static open(file: string): TeacherLogitsFile {
    const { fd, size } = openRegularFile(file, { expected: 'teacher log-prob file' });
    try {
      const bad = (msg: string): never => fail(file, `not a valid teacher log-prob file: ${msg}`);
      if (size < HEADER_BYTES) bad(`${size} bytes, shorter than the ${HEADER_BYTES}-byte header`);
      const h = Buffer.from(readExactly(fd, file, HEADER_BYTES, 0));
      if (!h.subarray(0, 8).equals(TEACHER_LOGITS_MAGIC)) fail(file, 'not a teacher log-prob file (wrong magic; expected one written by `eval --teacher-logits`)');
      const version = h.readUInt32LE(8);
      if (version !== TEACHER_LOGITS_VERSION) fail(file, `teacher log-prob file version ${version}, this synaxim reads version ${TEACHER_LOGITS_VERSION}`);
      const vocab = h.readUInt32LE(12);
      const context = h.readUInt32LE(16);
      const windows = h.readUInt32LE(20);
      if (vocab < 1 || vocab > MAX_VOCAB) bad(`vocabulary ${vocab} outside 1..${MAX_VOCAB}`);
      if (context < 1 || context > MAX_CONTEXT) bad(`context ${context} outside 1..${MAX_CONTEXT}`);
      if (windows > MAX_WINDOWS) bad(`${windows} windows, more than ${MAX_WINDOWS}`);
      if (!h.subarray(120, 128).equals(Buffer.alloc(8))) bad('reserved header bytes are not zero');
      const tableEnd = HEADER_BYTES + 4 * windows;
      if (size < tableEnd) bad(`${formatBytes(size)}, too short for the table of ${windows} windows`);
      const table = Buffer.from(readExactly(fd, file, 4 * windows, HEADER_BYTES));
      const lengths = new Uint32Array(windows);
      let expected = tableEnd;
      const rb = recordBytes(vocab);
      for (let i = 0; i < windows; i++) {
        const n = table.readUInt32LE(4 * i);
        if (n < 1 || n > context) bad(`window ${i} has ${n} tokens, outside 1..${context}`);
        if (n * vocab > MAX_WINDOW_VALUES) bad(`window ${i} (${n} tokens × ${vocab}) is too large to read`);
        lengths[i] = n;
        expected += n * rb;
      }
      if (size !== expected) bad(`${size} bytes, but its header describes ${expected} (${size < expected ? 'truncated' : 'trailing data'})`);
      const hex = (o: number) => `sha256:${h.subarray(o, o + 32).toString('hex')}`;
      return new TeacherLogitsFile(file, { vocab, context, teacherHash: hex(24), tokenizerHash: hex(56), windowsHash: hex(88), lengths }, fd);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  get windows(): number {
    return this.header.lengths.length;
  }

  /**
   * Window `i`'s dequantized log-probs, [T × vocab] row-major float32 (the layout of a prefill's
   * logits). Every row is checked: finite min and scale, and probabilities summing to 1 within
   * the quantization error.
   */
  window(i: number): Float32Array {
    const fd = this.fd;
    if (fd === null) throw new Error('teacher logits: file closed');
    requireWindowIndex(i, this.windows);
    const V = this.header.vocab;
    const T = this.header.lengths[i]!;
    const rb = recordBytes(V);
    const out = new Float32Array(T * V);
    const rowsPerChunk = chunkRows(T, rb);
    for (let t0 = 0; t0 < T; t0 += rowsPerChunk) {
      const rows = Math.min(rowsPerChunk, T - t0);
      const bytes = readExactly(fd, this.file, rows * rb, this.offsets[i]! + t0 * rb);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let r = 0; r < rows; r++) {
        const t = t0 + r;
        const { lse, min, scale } = dequantizeRow(view, r * rb, V, out, t * V);
        if (!Number.isFinite(min) || !Number.isFinite(scale) || scale < 0 || min < LOGPROB_FLOOR - 1) {
          fail(this.file, `not a valid teacher log-prob file: window ${i}, token ${t}: min ${min}, scale ${scale}`);
        }
        if (!(Math.abs(lse) <= rowNormTolerance(scale))) {
          fail(this.file, `not a valid teacher log-prob file: window ${i}, token ${t}: the probabilities sum to ${Math.exp(lse).toPrecision(6)}, not 1 (corrupt data)`);
        }
      }
    }
    return out;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
