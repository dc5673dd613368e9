/** Positioned, checked file reads shared by the format readers (safetensors, .symb, llama2c). */
import fs from 'node:fs';
import { fail } from './errors.ts';

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

/** Size of a regular file; a missing file, a directory or an unreadable one is an error naming it. */
export function regularFileSize(file: string, missing = 'file not found'): number {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return fail(file, code === 'ENOENT' || code === 'ENOTDIR' ? missing : `cannot read (${code})`);
  }
  if (!st.isFile()) fail(file, 'not a file');
  return st.size;
}
