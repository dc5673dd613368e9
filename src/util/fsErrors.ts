/**
 * File-system failures a user causes or meets (disk full, read-only file system, no permission, a
 * file where a directory should be, …) are user conditions, never "internal errors": they become a
 * SynaximError naming the path and saying what happened in words.
 */
import { SynaximError } from './errors.ts';

/** errno codes that describe the user's files or machine, in words. */
const USER_CONDITIONS: Record<string, string> = {
  ENOENT: 'no such file or directory',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'not a directory (a file stands where a directory is needed)',
  EISDIR: 'is a directory (a file was expected)',
  EEXIST: 'already exists',
  ENOTEMPTY: 'directory not empty',
  EFBIG: 'file too large for this file system',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  ELOOP: 'too many levels of symbolic links',
  ENAMETOOLONG: 'file name too long',
  EXDEV: 'cannot move across file systems',
  EBUSY: 'resource busy',
  ETXTBSY: 'file busy',
  EIO: 'input/output error (the device failed)',
};

/** The words for a user-condition errno code, or null for codes that point at a bug. */
export function fsConditionWords(code: string | undefined): string | null {
  return code ? (USER_CONDITIONS[code] ?? null) : null;
}

/** Whether `e` is a Node file-system error whose code is a user condition. */
export function isUserFsError(e: unknown): e is NodeJS.ErrnoException {
  return !!e && typeof e === 'object' && fsConditionWords((e as NodeJS.ErrnoException).code) !== null;
}

/**
 * `e` as a SynaximError about `file` when it is a user condition (writeSync and friends throw
 * without a path: the caller knows which file it was writing); anything else unchanged.
 */
export function asUserFsError(e: unknown, file: string): unknown {
  if (e instanceof SynaximError || !isUserFsError(e)) return e;
  const err = new SynaximError(file, fsConditionWords(e.code)!);
  (err as Error & { cause?: unknown }).cause = e;
  return err;
}
