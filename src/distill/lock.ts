/**
 * One run per output directory, and no debris from runs that died: a lock file holding the owner's
 * pid (created with O_EXCL; a lock whose process is gone is taken over), and removal of the
 * temporary files that atomic writes of dead processes left behind (`.<name>.tmp-<pid>-<n>`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../core/errors.ts';

export const LOCK_FILE = '.synaxim-distill.lock';

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/** Take the directory's lock; returns a release function. Fails if a live process holds it. */
export function acquireDirLock(dir: string, what = 'distill'): () => void {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx');
      fs.writeSync(fd, String(process.pid));
      fs.closeSync(fd);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try {
          if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.rmSync(file, { force: true });
        } catch {
          // already gone
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let owner = NaN;
      try {
        owner = Number(fs.readFileSync(file, 'utf8').trim());
      } catch {
        continue; // removed meanwhile: try again
      }
      if (alive(owner) && owner !== process.pid) fail(dir, `another ${what} run (pid ${owner}) is writing this directory`);
      fs.rmSync(file, { force: true }); // stale: its process is gone
    }
  }
  return fail(dir, `could not take the lock ${file}`);
}

/** Remove `.<name>.tmp-<pid>-<n>` files and directories of processes that no longer run. */
export function removeStaleTemps(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  let removed = 0;
  for (const name of fs.readdirSync(dir)) {
    const m = /^\..+\.tmp-(\d+)-\d+(\.old)?$/.exec(name);
    if (!m || alive(Number(m[1]))) continue;
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}
