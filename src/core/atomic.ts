/**
 * Atomic outputs: everything the workbench writes goes to a temporary name in the same directory
 * and is renamed into place once complete, so a crash never leaves a file that looks finished.
 */
import fs from 'node:fs';
import path from 'node:path';

let counter = 0;
function tempName(target: string): string {
  counter += 1;
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${counter}`);
}

/** Write a whole file atomically (temp + fsync + rename). */
export function writeFileAtomic(target: string, data: string | Uint8Array | Uint8Array[]): void {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = tempName(target);
  const fd = fs.openSync(tmp, 'w');
  try {
    const parts = Array.isArray(data) ? data : [data];
    for (const part of parts) {
      const buf = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
      let off = 0;
      while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
    }
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, target);
}

export function writeJsonAtomic(target: string, value: unknown): void {
  writeFileAtomic(target, JSON.stringify(value, null, 2) + '\n');
}

/**
 * Build a directory atomically: `fill` writes into a temporary sibling directory, which then
 * replaces `target` (an existing target is moved aside and removed only after the rename).
 */
export async function writeDirAtomic(target: string, fill: (tmpDir: string) => Promise<void> | void): Promise<void> {
  const parent = path.dirname(path.resolve(target));
  fs.mkdirSync(parent, { recursive: true });
  const tmp = tempName(path.resolve(target));
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    await fill(tmp);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  let old: string | null = null;
  if (fs.existsSync(target)) {
    old = tempName(path.resolve(target)) + '.old';
    fs.renameSync(target, old);
  }
  fs.renameSync(tmp, target);
  if (old) fs.rmSync(old, { recursive: true, force: true });
}
