/**
 * Content hashes of model and adapter directories, for reports: `sha256:<hex>` over every regular
 * file below the directory in sorted relative-path order, each as `path \0 size \0 bytes`. Two
 * directories with the same files hash the same wherever they live.
 *
 * Hashing a 15 GB checkpoint takes a while, so results are remembered in the cache directory,
 * keyed by the directory's path and every file's size and mtime: an unchanged directory is not
 * read again; any change of a file's size or mtime recomputes it.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../util/atomic.ts';
import { cacheDir } from '../util/paths.ts';
import { outsideModelDir } from './config.ts';

interface FileEntry {
  rel: string;
  full: string;
  size: number;
  mtimeMs: number;
}

function listFiles(dir: string): FileEntry[] {
  const out: FileEntry[] = [];
  // Only the directory's own content: a link out of it (`ln -s / model/root`) is not hashed (never
  // read), a link back up is walked once, a dangling link or a loop is no content.
  const walked = new Set<string>();
  const walk = (d: string, rel: string) => {
    const real = fs.realpathSync(d);
    if (walked.has(real)) return;
    walked.add(real);
    for (const name of fs.readdirSync(d).sort()) {
      const full = path.join(d, name);
      const r = rel ? `${rel}/${name}` : name;
      let st: fs.Stats;
      try {
        st = fs.statSync(full);
      } catch {
        continue;
      }
      if (outsideModelDir(dir, full) !== null) continue;
      if (st.isDirectory()) walk(full, r);
      else if (st.isFile()) out.push({ rel: r, full, size: st.size, mtimeMs: st.mtimeMs });
    }
  };
  const st = fs.statSync(dir);
  if (st.isFile()) return [{ rel: path.basename(dir), full: dir, size: st.size, mtimeMs: st.mtimeMs }];
  walk(dir, '');
  return out.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
}

function hashFiles(files: FileEntry[]): string {
  const h = crypto.createHash('sha256');
  const buf = Buffer.allocUnsafe(1 << 22);
  for (const f of files) {
    h.update(`${f.rel}\0${f.size}\0`);
    const fd = fs.openSync(f.full, 'r');
    try {
      let pos = 0;
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, pos);
        if (n <= 0) break;
        h.update(buf.subarray(0, n));
        pos += n;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return `sha256:${h.digest('hex')}`;
}

/** `sha256:<hex>` of a directory's (or a file's) content, remembered by path + sizes + mtimes. */
export function contentHash(dirOrFile: string, opts: { cache?: boolean } = {}): string {
  const abs = path.resolve(dirOrFile);
  const files = listFiles(abs);
  if (opts.cache === false) return hashFiles(files);
  const signature = crypto
    .createHash('sha256')
    .update(abs + '\n' + files.map((f) => `${f.rel}\0${f.size}\0${f.mtimeMs}`).join('\n'))
    .digest('hex');
  const cacheFile = path.join(cacheDir(), 'content-hash', `${signature.slice(0, 40)}.txt`);
  try {
    const cached = fs.readFileSync(cacheFile, 'utf8').trim();
    if (/^sha256:[0-9a-f]{64}$/.test(cached)) return cached;
  } catch {
    // not cached yet
  }
  const hash = hashFiles(files);
  try {
    writeFileAtomic(cacheFile, hash + '\n');
  } catch {
    // a read-only cache only costs time
  }
  return hash;
}
