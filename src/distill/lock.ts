/**
 * One run per output directory, and no debris from runs that died: a lock file holding the owner's
 * pid (created with O_EXCL; a lock whose process is gone is taken over), and removal of the
 * temporary files that atomic writes of dead processes left behind (`.<name>.tmp-<pid>-<n>`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ensureDir, processAlive as alive, removeStaleTemps } from '../util/atomic.ts';
import { fail } from '../util/errors.ts';
import { asUserFsError } from '../util/fsErrors.ts';

export { removeStaleTemps };

export const LOCK_FILE = '.synaxim-distill.lock';

/** Take the directory's lock; returns a release function. Fails if a live process holds it. */
export function acquireDirLock(dir: string, what = 'distill'): () => void {
  const file = path.join(dir, LOCK_FILE);
  try {
    ensureDir(dir);
  } catch (e) {
    throw asUserFsError(e, dir);
  }
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeLockFile(file);
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
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw asUserFsError(e, file);
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

/**
 * Create the lock file holding our pid (O_EXCL: fails with EEXIST when taken). A lock that could
 * not be written whole (disk full) is removed again: an empty lock file is debris, not a lock.
 */
function writeLockFile(file: string): void {
  const fd = fs.openSync(file, 'wx');
  try {
    const text = Buffer.from(String(process.pid));
    if (fs.writeSync(fd, text) !== text.length) throw Object.assign(new Error('short write'), { code: 'ENOSPC' });
    fs.closeSync(fd);
  } catch (e) {
    try {
      fs.closeSync(fd);
    } catch {
      // closed already or failing too: the removal below is what matters
    }
    fs.rmSync(file, { force: true });
    throw asUserFsError(e, file);
  }
}
