/**
 * Open a model directory of either format. A directory with `config.symb.json` is a SYNAXIM .symb
 * conversion; one with `config.json` is a Hugging Face checkpoint. Names from the model registry
 * are resolved by src/data/registry.ts before this is called.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../util/errors.ts';
import { entryExists } from '../util/fileio.ts';
import type { ModelWeights } from './weights.ts';
import { openHfModel } from './hfModel.ts';
import { openSymbModel } from './symbModel.ts';

export type ModelFormat = 'hf' | 'symb';

export function detectFormat(dir: string): ModelFormat {
  if (!fs.existsSync(dir)) fail(dir, 'no such directory');
  if (!fs.statSync(dir).isDirectory()) fail(dir, 'not a directory (expected an HF or .symb model directory)');
  // entryExists: a dangling or looping config link is named by the reader, not taken for "no config".
  if (entryExists(path.join(dir, 'config.symb.json'))) return 'symb';
  if (entryExists(path.join(dir, 'config.json'))) return 'hf';
  return fail(dir, 'neither config.json (Hugging Face) nor config.symb.json (SYNAXIM) found');
}

export function openModel(dir: string): ModelWeights {
  return detectFormat(dir) === 'hf' ? openHfModel(dir) : openSymbModel(dir);
}
