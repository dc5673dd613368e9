/**
 * Atomic outputs: everything the workbench writes goes to a temporary name in the same directory
 * and is renamed into place once complete, so a crash never leaves a file that looks finished.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail, SynaximError } from './errors.ts';
import { asUserFsError } from './fsErrors.ts';

/**
 * mkdir -p that says why it failed: Node's recursive mkdir reports ENOENT for a directory it could
 * not create on a read-only file system (or without permission); creating the first missing
 * ancestor alone gives the real reason (EROFS, EACCES, ENOSPC…).
 */
export function ensureDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    let missing = path.resolve(dir);
    while (!fs.existsSync(path.dirname(missing)) && path.dirname(missing) !== missing) missing = path.dirname(missing);
    fs.mkdirSync(missing); // throws the real reason; if it succeeds (a race), try the whole path again
    fs.mkdirSync(dir, { recursive: true });
  }
}

let counter = 0;
function tempName(target: string): string {
  counter += 1;
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${counter}`);
}

/**
 * Write a whole file atomically (temp + fsync + rename). On any failure the temporary is removed
 * and the previous `target` (if any) is untouched; a user condition (disk full, read-only file
 * system, no permission) becomes a one-line SynaximError naming `target`.
 */
export function writeFileAtomic(target: string, data: string | Uint8Array | Uint8Array[]): void {
  const tmp = tempName(target);
  try {
    ensureDir(path.dirname(target));
    writeStaged(tmp, data, target);
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw asUserFsError(e, target);
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // already failing: the first error is the one to report
  }
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

/** Whether `name` is a temporary of an atomic write (`.<target>.tmp-<pid>-<n>[.old]`). */
export function isTempName(name: string): boolean {
  return parseTempName(name) !== null;
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

export interface DirWriteOptions {
  /**
   * Names (entries directly in `target`) this command writes or wrote in an earlier version of its
   * output: replaced or removed when `target` is rewritten. Everything else in `target` belongs to
   * the user and is kept (default: only the names the new output has).
   */
  isOurs?: (name: string) => boolean;
  /**
   * The entry whose presence says "this output is complete" (config.symb.json, report.json): when
   * our files are merged into a directory that holds other files, it is removed first and put in
   * place last, so a directory with it never mixes old and new files.
   */
  marker?: string;
}

/**
 * Build a directory atomically: `fill` writes into a temporary sibling directory, which then
 * replaces `target` (an existing target is moved aside and removed only after the rename). What
 * an earlier run killed mid-way left behind is recovered or removed first.
 *
 * When `target` holds files that are not ours (the user's README.md beside a conversion, accepted
 * with --overwrite), the directory is not swapped: each of our entries is renamed into `target`
 * one by one (each rename atomic; a directory entry of ours is swapped whole), our entries the new
 * output no longer has are removed, and the user's files stay where they are. If `fill` fails,
 * `target` is untouched either way.
 */
export async function writeDirAtomic(target: string, fill: (tmpDir: string) => Promise<void> | void, opts: DirWriteOptions = {}): Promise<void> {
  const abs = path.resolve(target);
  const parent = path.dirname(abs);
  let tmp: string | null = null;
  try {
    ensureDir(parent);
    recoverInterruptedDirWrite(abs);
    tmp = tempName(abs);
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp);
    await fill(tmp);
  } catch (e) {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    throw tmp ? renameTempInError(asUserFsError(e, target), tmp, abs) : asUserFsError(e, target);
  }
  try {
    const foreign = fs.existsSync(target) ? foreignEntries(abs, tmp, opts) : [];
    if (foreign.length > 0) {
      mergeInto(abs, tmp, opts);
      return;
    }
    let old: string | null = null;
    if (fs.existsSync(target)) {
      old = tempName(abs) + '.old';
      fs.renameSync(target, old);
    }
    fs.renameSync(tmp, target);
    if (old) fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw asUserFsError(e, target);
  }
}

/** A user error about a file inside the temporary directory names the file of the output instead. */
function renameTempInError(e: unknown, tmp: string, target: string): unknown {
  if (!(e instanceof SynaximError) || !e.file || !(e.file === tmp || e.file.startsWith(tmp + path.sep))) return e;
  const renamed = new SynaximError(target + e.file.slice(tmp.length), e.message.slice(e.file.length + 2));
  (renamed as Error & { cause?: unknown }).cause = e;
  return renamed;
}

/** Entries of an existing `target` that are neither in the new output `tmp` nor ours (nor our temporaries). */
function foreignEntries(target: string, tmp: string, opts: DirWriteOptions): string[] {
  if (!fs.statSync(target).isDirectory()) return [];
  const fresh = new Set(fs.readdirSync(tmp));
  return fs.readdirSync(target).filter((n) => !fresh.has(n) && !(opts.isOurs?.(n) ?? false) && parseTempName(n) === null);
}

/** Move the new output's entries from `tmp` into `target`, keeping the user's files (see writeDirAtomic). */
function mergeInto(target: string, tmp: string, opts: DirWriteOptions): void {
  removeStaleTemps(target);
  const fresh = fs.readdirSync(tmp);
  // A user's directory where we write a file (or the reverse) is not ours to remove.
  for (const n of fresh) {
    const dst = path.join(target, n);
    if (!fs.existsSync(dst)) continue;
    const srcIsDir = fs.statSync(path.join(tmp, n)).isDirectory();
    if (fs.lstatSync(dst).isDirectory() !== srcIsDir) {
      fail(dst, `is a ${srcIsDir ? 'file' : 'directory'} but the output needs a ${srcIsDir ? 'directory' : 'file'} of that name; move it away`);
    }
  }
  const marker = opts.marker && fresh.includes(opts.marker) ? opts.marker : null;
  if (marker) fs.rmSync(path.join(target, marker), { recursive: true, force: true });
  for (const n of fresh) if (n !== marker) moveEntry(path.join(tmp, n), path.join(target, n));
  for (const n of fs.readdirSync(target)) {
    if (!fresh.includes(n) && (opts.isOurs?.(n) ?? false)) fs.rmSync(path.join(target, n), { recursive: true, force: true });
  }
  if (marker) moveEntry(path.join(tmp, marker), path.join(target, marker));
  fs.rmSync(tmp, { recursive: true, force: true });
}

/** rename(src, dst); a directory dst is moved aside first and removed after. */
function moveEntry(src: string, dst: string): void {
  if (fs.existsSync(dst) && fs.lstatSync(dst).isDirectory()) {
    const old = tempName(dst) + '.old';
    fs.renameSync(dst, old);
    fs.renameSync(src, dst);
    fs.rmSync(old, { recursive: true, force: true });
  } else fs.renameSync(src, dst);
}

/**
 * Write several files of one output into `dir`, all or nothing as far as a failure goes: every file
 * is written to a temporary first (a full disk fails here, with the old output untouched), then
 * they are renamed into place, `marker` last. The old marker is moved aside before the first rename
 * (and put back if anything fails), so a marker never vouches for files it does not describe, even
 * after kill -9. Other files in `dir` are not touched.
 */
export function writeFilesAtomic(dir: string, files: { name: string; data: string | Uint8Array }[], marker: string): void {
  if (!files.some((f) => f.name === marker)) throw new Error(`writeFilesAtomic: the marker ${marker} is not among the files`);
  const staged: { tmp: string; dst: string }[] = [];
  const markerFile = path.join(dir, marker);
  let aside: string | null = null;
  try {
    if (!fs.existsSync(dir)) ensureDir(dir);
    if (fs.existsSync(markerFile)) {
      aside = tempName(markerFile);
      fs.renameSync(markerFile, aside);
    }
    const ordered = [...files.filter((f) => f.name !== marker), ...files.filter((f) => f.name === marker)];
    for (const f of ordered) {
      const dst = path.join(dir, f.name);
      const tmp = tempName(dst);
      staged.push({ tmp, dst });
      writeStaged(tmp, f.data, dst);
    }
  } catch (e) {
    for (const s of staged) fs.rmSync(s.tmp, { force: true });
    if (aside) fs.renameSync(aside, markerFile);
    throw asUserFsError(e, dir);
  }
  const last = staged.pop()!; // the marker
  for (const s of staged) fs.renameSync(s.tmp, s.dst);
  if (aside) fs.rmSync(aside, { force: true });
  fs.renameSync(last.tmp, last.dst);
}

/** Write `data` whole into the new file `tmp` and fsync it; user conditions are named after `nameForErrors`. */
function writeStaged(tmp: string, data: string | Uint8Array | Uint8Array[], nameForErrors: string): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(tmp, 'w');
    for (const part of Array.isArray(data) ? data : [data]) {
      const buf = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
      let off = 0;
      while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
  } catch (e) {
    if (fd !== null) closeQuietly(fd);
    throw asUserFsError(e, nameForErrors);
  }
}
