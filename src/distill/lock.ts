/**
 * One run per output directory, and no debris from runs that died: a lock file holding the owner's
 * pid (created with O_EXCL; a lock whose process is gone is taken over), and removal of the
 * temporary files that atomic writes of dead processes left behind (`.<name>.tmp-<pid>-<n>`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { processAlive as alive, removeStaleTemps } from '../core/atomic.ts';
import { fail } from '../core/errors.ts';

export { removeStaleTemps };

export const LOCK_FILE = '.synaxim-distill.lock';

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
