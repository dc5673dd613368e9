/**
 * The one rule every command that writes follows before it writes anything (issue 14, section 2):
 *   1. an output may not be, lie inside, or contain any input it reads (model, teacher, adapter,
 *      corpus, report…), compared as real paths (symlinks resolved), so `--out MODEL/x` or a link
 *      into the model directory never overwrites what the run reads;
 *   2. an existing output file, or an output directory holding an earlier complete output or
 *      anything the command does not write, is refused unless --overwrite;
 *   3. with --overwrite only the command's own files are replaced (see writeDirAtomic's isOurs and
 *      writeFilesAtomic): the user's other files in the directory stay.
 * Each command calls checkOutput with the paths it reads, before its first write.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail, SynaximError } from './errors.ts';
import { isTempName } from './atomic.ts';

/** Something a command reads: a directory or file, and what it is in words ("model directory"). */
export interface InputPath {
  path: string | null | undefined;
  what: string;
}

export interface OutputRule {
  /** The output as the user gave it. */
  out: string;
  /** How the user named it in messages: `--out`, `OUT_DIR`. */
  flag: string;
  kind: 'file' | 'dir';
  inputs: InputPath[];
  overwrite: boolean;
  /** dir: names directly in the directory that the command writes (other names are the user's). */
  isOurs?: (name: string) => boolean;
  /** dir: the entry whose presence says an earlier output is complete (refused without --overwrite). */
  marker?: string;
}

/** `p` with every symlink resolved, also when `p` (or its tail) does not exist yet. */
export function realPathOf(p: string, depth = 0): string {
  const abs = path.resolve(p);
  try {
    return fs.realpathSync(abs);
  } catch {
    // Missing: a dangling link is followed by hand, otherwise resolve the parent and append.
  }
  if (depth < 40) {
    try {
      if (fs.lstatSync(abs).isSymbolicLink()) return realPathOf(path.resolve(path.dirname(abs), fs.readlinkSync(abs)), depth + 1);
    } catch {
      // not there at all
    }
  }
  const parent = path.dirname(abs);
  return parent === abs ? abs : path.join(realPathOf(parent, depth + 1), path.basename(abs));
}

/** Whether `inner` is `outer` or lies inside it (both real, absolute paths). */
export function isWithin(inner: string, outer: string): boolean {
  if (inner === outer) return true;
  return inner.startsWith(outer.endsWith(path.sep) ? outer : outer + path.sep);
}

/** Refuse an output that would overwrite an input or an earlier output (see the module comment). */
export function checkOutput(rule: OutputRule): void {
  const { out, flag } = rule;
  const real = realPathOf(out);
  for (const input of rule.inputs) {
    if (!input.path) continue;
    const inReal = realPathOf(input.path);
    if (real === inReal) fail(out, `${flag} is the ${input.what} ${input.path} itself; write the output elsewhere`);
    if (isWithin(real, inReal)) fail(out, `${flag} is inside the ${input.what} ${input.path}; write the output elsewhere`);
    if (rule.kind === 'dir' && isWithin(inReal, real)) fail(out, `${flag} contains the ${input.what} ${input.path}; write the output elsewhere`);
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(out);
  } catch {
    return; // nothing there yet (or a dangling link, which writing replaces)
  }
  if (rule.kind === 'file') {
    if (st.isDirectory()) fail(out, `${flag} is a directory; give a file name`);
    if (!rule.overwrite) fail(out, `${flag}: the file exists; pass --overwrite to replace it`);
    return;
  }
  if (!st.isDirectory()) fail(out, `${flag}: exists and is not a directory`);
  if (rule.overwrite) return;
  const entries = fs.readdirSync(out).filter((n) => !isTempName(n));
  if (rule.marker && entries.includes(rule.marker)) {
    fail(out, `${flag} holds an earlier output (${rule.marker}); pass --overwrite to replace it`);
  }
  const foreign = entries.filter((n) => !(rule.isOurs?.(n) ?? false));
  if (foreign.length > 0) {
    const list = foreign.slice(0, 3).join(', ') + (foreign.length > 3 ? `, … (${foreign.length} entries)` : '');
    fail(out, `${flag} is not empty (${list}); pass --overwrite to write into it (only the files this command writes are replaced)`);
  }
}
