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

/** Whether process `pid` still runs (on this machine). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/** `.<target>.tmp-<pid>-<n>[.old]` -> its parts; null for any other name. */
function parseTempName(name: string): { target: string; pid: number; old: boolean } | null {
  const m = /^\.(.+)\.tmp-(\d+)-\d+(\.old)?$/.exec(name);
  return m ? { target: m[1]!, pid: Number(m[2]), old: m[3] !== undefined } : null;
}

/**
 * Remove the temporaries (`.<name>.tmp-<pid>-<n>` files and directories) that atomic writes of
 * processes no longer running left in `dir` — a run killed mid-write (kill -9, power loss) cannot
 * clean up after itself. Only names of `target` when given. Returns how many were removed.
 */
export function removeStaleTemps(dir: string, target?: string): number {
  if (!fs.existsSync(dir)) return 0;
  let removed = 0;
  for (const name of fs.readdirSync(dir)) {
    const t = parseTempName(name);
    if (!t || (target !== undefined && t.target !== target) || processAlive(t.pid)) continue;
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}

/**
 * Before writing directory `target`: a run killed between writeDirAtomic's two renames left the
 * previous `target` as `.<target>.tmp-<pid>-<n>.old` and no `target` — put it back (the state before
 * the interrupted run), then drop the dead runs' other temporaries.
 */
function recoverInterruptedDirWrite(target: string): void {
  const parent = path.dirname(target);
  const base = path.basename(target);
  for (const name of fs.readdirSync(parent)) {
    const t = parseTempName(name);
    if (t && t.old && t.target === base && !processAlive(t.pid) && !fs.existsSync(target)) fs.renameSync(path.join(parent, name), target);
  }
  removeStaleTemps(parent, base);
}

/**
 * Build a directory atomically: `fill` writes into a temporary sibling directory, which then
 * replaces `target` (an existing target is moved aside and removed only after the rename). What
 * an earlier run killed mid-way left behind is recovered or removed first.
 */
export async function writeDirAtomic(target: string, fill: (tmpDir: string) => Promise<void> | void): Promise<void> {
  const parent = path.dirname(path.resolve(target));
  fs.mkdirSync(parent, { recursive: true });
  recoverInterruptedDirWrite(path.resolve(target));
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
