/** Options shared by commands, and parsing helpers for flag values. */
import fs from 'node:fs';
import path from 'node:path';
import type { Argv } from 'yargs';
import { BACKEND_CHOICES, type BackendChoice, initBackend, backendInfo } from '../core/backend.ts';
import { fail } from '../core/errors.ts';

export function withBackend<T>(y: Argv<T>) {
  return y.option('backend', {
    choices: BACKEND_CHOICES,
    default: 'auto' as BackendChoice,
    describe: 'compute backend (auto picks the best that loads)',
  });
}

/** Initialise the backend and say on stderr which one runs (every command records it). */
export async function startBackend(choice: BackendChoice, quiet = false): Promise<string> {
  const name = await initBackend(choice);
  if (!quiet) process.stderr.write(`synaxim: backend ${name} (${backendInfo().detail})\n`);
  return name;
}

/** "1,5,9" -> [1,5,9] with a clear error for anything else. */
export function parseIdList(text: string, flag: string): number[] {
  const parts = String(text).split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (parts.length === 0) fail(null, `${flag}: expected a comma-separated list of token ids`);
  return parts.map((p) => {
    if (!/^\d+$/.test(p)) fail(null, `${flag}: '${p}' is not a non-negative integer token id`);
    return Number(p);
  });
}

/** More layers than any real model has (config.ts refuses larger num_layers): bigger indices are typos. */
export const MAX_LAYER_INDEX = 4095;

/** "0-7", "0,2,5", "0-3,6" -> sorted unique layer indices. */
export function parseLayerList(text: string, flag = '--layers'): number[] {
  // Refuse absurd indices before a range like 0-100000000 expands into a huge list.
  for (const n of String(text).match(/\d+/g) ?? []) {
    if (Number(n) > MAX_LAYER_INDEX) fail(null, `${flag}: layer ${n} is beyond any model (at most ${MAX_LAYER_INDEX + 1} layers)`);
  }
  const out = new Set<number>();
  for (const part of String(text).split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) fail(null, `${flag}: '${part}' is not a layer index or range like 0-7`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) fail(null, `${flag}: range '${part}' is reversed`);
    for (let i = a; i <= b; i++) out.add(i);
  }
  if (out.size === 0) fail(null, `${flag}: no layers given`);
  return [...out].sort((x, y) => x - y);
}

/** An output directory flag must be (or be creatable as) a directory: say so before any work. */
export function requireDirectoryPath(out: string, flag = '--out'): void {
  const dir = path.resolve(out);
  for (let p = dir; ; p = path.dirname(p)) {
    if (fs.existsSync(p)) {
      if (!fs.statSync(p).isDirectory()) fail(p, p === dir ? `${flag}: this is a file, not a directory` : `${flag} ${out}: cannot make a directory under a file`);
      return;
    }
    if (path.dirname(p) === p) return;
  }
}
