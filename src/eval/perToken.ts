/**
 * `per_token.safetensors` beside an eval's report.json: every scored token's NLL, KLD, top-1
 * agreement and Δp per configuration, in scoring order. Two runs that scored the same tokens (equal
 * `tokens.hash`) can then be compared token by token — paired differences, whose standard error is
 * far smaller than the two runs' separate errors combined (src/eval/compare.ts).
 *
 * Tensors `<configuration>.nll|kld|delta_p` (F32 [n]) and `<configuration>.same_top` (U8 [n]);
 * metadata `tokens_hash` ties the file to its report, so a sidecar left from an earlier eval into the
 * same directory is never paired with a newer report.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../util/atomic.ts';
import { encodeSafetensors, SafetensorsFile, type StTensorToWrite } from '../formats/safetensors.ts';
import type { PerTokenValues } from './stats.ts';

export const PER_TOKEN_FILE = 'per_token.safetensors';
const FIELDS = ['nll', 'kld', 'delta_p'] as const;

/** The file's bytes (staged with the report by writeReport, so both land together). */
export function encodePerToken(tokensHash: string, values: Map<string, PerTokenValues>): Uint8Array {
  const tensors: Record<string, StTensorToWrite> = {};
  for (const [name, v] of values) {
    for (const f of FIELDS) tensors[`${name}.${f}`] = { dtype: 'F32', shape: [v[f].length], data: v[f] };
    tensors[`${name}.same_top`] = { dtype: 'U8', shape: [v.same_top.length], data: v.same_top };
  }
  return Buffer.concat(encodeSafetensors(tensors, { format: 'synaxim.per_token/1', tokens_hash: tokensHash }));
}

/** Write the file alone into `dir` (atomically). */
export function writePerToken(dir: string, tokensHash: string, values: Map<string, PerTokenValues>): string {
  const file = path.join(dir, PER_TOKEN_FILE);
  writeFileAtomic(file, encodePerToken(tokensHash, values));
  return file;
}

/**
 * The per-token figures stored beside a report, or null when there are none or they belong to other
 * tokens (an older eval, a file of another kind): the comparison then falls back to unpaired errors.
 */
export function readPerToken(dir: string, tokensHash: string): Map<string, PerTokenValues> | null {
  const file = path.join(dir, PER_TOKEN_FILE);
  if (!fs.existsSync(file)) return null;
  let f: SafetensorsFile;
  try {
    f = SafetensorsFile.open(file);
  } catch {
    return null;
  }
  try {
    if (f.metadata?.tokens_hash !== tokensHash) return null;
    const names = [...new Set(f.names().filter((n) => n.endsWith('.nll')).map((n) => n.slice(0, -'.nll'.length)))];
    const out = new Map<string, PerTokenValues>();
    for (const name of names) {
      if (!FIELDS.every((x) => f.has(`${name}.${x}`)) || !f.has(`${name}.same_top`)) continue;
      const v: PerTokenValues = {
        nll: f.readFloat32(`${name}.nll`),
        kld: f.readFloat32(`${name}.kld`),
        delta_p: f.readFloat32(`${name}.delta_p`),
        same_top: f.readBytes(`${name}.same_top`),
      };
      if (v.kld.length === v.nll.length && v.delta_p.length === v.nll.length && v.same_top.length === v.nll.length) out.set(name, v);
    }
    return out;
  } catch {
    return null;
  } finally {
    f.close();
  }
}
