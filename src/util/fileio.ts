/**
 * Checked file access shared by every reader: positioned reads (safetensors, .symb, llama2c) and
 * whole reads of small files (JSON configs, tokenizers, suites, corpora). Files come from the
 * internet: a FIFO would block open() forever, /dev/zero would fill memory, a directory or a
 * dangling link would surface as an odd error. So each file is stat-ed before it is opened — it
 * must be a regular file of a sane size — and opened with O_NONBLOCK, so that even a file swapped
 * for a FIFO between the stat and the open does not block (fstat then refuses it).
 */
import fs from 'node:fs';
import { fail } from './errors.ts';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** Exactly `length` bytes at `position` of an open file; a short file is an error naming it. */
export function readExactly(fd: number, file: string, length: number, position: number): Uint8Array {
  const buf = new Uint8Array(length);
  let off = 0;
  while (off < length) {
    const n = fs.readSync(fd, buf, off, length - off, position + off);
    if (n === 0) fail(file, `unexpected end of file reading ${length} bytes at ${position}`);
    off += n;
  }
  return buf;
}

/** What a stat says about a path that is not a regular file, in a few words. */
function notRegularReason(st: fs.Stats, expected: string): string {
  if (st.isDirectory()) return `is a directory, not a ${expected}`;
  if (st.isFIFO()) return `is a named pipe (FIFO), not a ${expected}`;
  if (st.isCharacterDevice() || st.isBlockDevice()) return `is a device, not a ${expected}`;
  if (st.isSocket()) return `is a socket, not a ${expected}`;
  return `not a ${expected}`;
}

function statError(file: string, e: unknown, missing: string): never {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    // A link whose target is gone says so (stat follows links; lstat does not).
    let dangling = false;
    try {
      dangling = fs.lstatSync(file).isSymbolicLink();
    } catch {
      /* not there at all */
    }
    return fail(file, dangling ? 'is a symlink to a file that does not exist' : missing);
  }
  if (code === 'ELOOP') return fail(file, 'is a symlink loop (too many levels of symbolic links)');
  if (code === 'EACCES' || code === 'EPERM') return fail(file, 'permission denied');
  return fail(file, `cannot read (${code ?? String(e)})`);
}

/** Size of a regular file; a missing file, a directory, a FIFO, a device or an unreadable one is an error naming it. */
export function regularFileSize(file: string, missing = 'file not found', expected = 'file'): number {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    return statError(file, e, missing);
  }
  if (!st.isFile()) fail(file, notRegularReason(st, expected));
  return st.size;
}

const BINARY_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

/** n bytes in the largest binary unit it reaches: 1536 → { value: 1.5, unit: 'KiB' }. */
export function inBinaryUnits(n: number): { value: number; unit: (typeof BINARY_UNITS)[number] } {
  let value = n;
  let u = 0;
  while (value >= 1024 && u < BINARY_UNITS.length - 1) {
    value /= 1024;
    u++;
  }
  return { value, unit: BINARY_UNITS[u]! };
}

/** A human size for messages and notes: 1536 → "1.5 KiB", 100 → "100 bytes". */
export function formatBytes(n: number): string {
  const { value, unit } = inBinaryUnits(n);
  return unit === 'B' ? `${n} bytes` : `${value.toFixed(1)} ${unit}`;
}

/**
 * Open a regular file for reading without ever blocking: stat first (refusing FIFOs, devices,
 * directories), open with O_NONBLOCK, and check the opened file again (it may have been replaced).
 * Returns the descriptor and the size. `maxBytes` (optional) refuses bigger files, naming `what`.
 */
export function openRegularFile(file: string, opts: { maxBytes?: number; what?: string; missing?: string; expected?: string } = {}): { fd: number; size: number } {
  const expected = opts.expected ?? 'regular file';
  const size0 = regularFileSize(file, opts.missing, expected);
  const tooBig = (size: number) => {
    if (opts.maxBytes !== undefined && size > opts.maxBytes) {
      fail(file, `is ${formatBytes(size)}, more than the ${formatBytes(opts.maxBytes)} limit for ${opts.what ?? 'a file of this kind'}`);
    }
  };
  tooBig(size0);
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    return statError(file, e, opts.missing ?? 'file not found');
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) fail(file, notRegularReason(st, expected));
    tooBig(st.size);
    return { fd, size: st.size };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/**
 * The whole of a small regular file (a JSON config, a tokenizer, a suite), refusing anything that
 * is not a regular file of at most `maxBytes`. Reads the size the stat promised, no more: a file
 * that grows while being read cannot make it read past the limit.
 */
export function readSmallRegularFile(file: string, maxBytes: number, what: string, missing?: string, expected?: string): Buffer {
  const { fd, size } = openRegularFile(file, { maxBytes, what, missing, expected });
  try {
    return Buffer.from(readExactly(fd, file, size, 0).buffer);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A short, printable excerpt of text from a file, for an error message: control characters
 * (newlines, terminal escapes) replaced, runs of space collapsed, at most `max` characters.
 */
export function snippet(text: string, max = 40): string {
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, ' ').replace(/\s+/g, ' ').trim();
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/**
 * Whether anything is at `file`, a dangling symlink or a symlink loop included (fs.existsSync says
 * false for those, which would turn "your link is broken" into "no such file" further on).
 */
export function entryExists(file: string): boolean {
  try {
    fs.lstatSync(file);
    return true;
  } catch {
    return false;
  }
}
