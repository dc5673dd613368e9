/** Options shared by commands, and parsing helpers for flag values. */
import fs from 'node:fs';
import path from 'node:path';
import type { Argv } from 'yargs';
import { BACKEND_CHOICES, type BackendChoice, initBackend, backendInfo, INT4_ACTIVATION_CHOICES, type Int4Activations } from '../runtime/backend.ts';
import { fail } from '../util/errors.ts';
import { resolveModel } from '../data/registry.ts';
import { openModel } from '../formats/openModel.ts';

/** The --int4-activations value of the command being run (recorded by withBackend's middleware, read by startBackend). */
let requestedInt4Activations: Int4Activations = 'float32';

export function withBackend<T>(y: Argv<T>) {
  return y
    .option('backend', {
      choices: BACKEND_CHOICES,
      default: 'auto' as BackendChoice,
      describe: 'auto|native: forward passes and MSE training on the native engine (ONNX Runtime, all cores), KL training on tfjs; native-cuda: ONNX Runtime CUDA (CUDA 12 provider installed); wasm|cpu|tensorflow|tensorflow-gpu: tfjs throughout (the exact references)',
    })
    .option('int4-activations', {
      choices: INT4_ACTIVATION_CHOICES,
      default: 'float32' as Int4Activations,
      describe: "native engine, INT4 .symb weights: float32 (default, exact to the goldens) or int8 (activations quantized per block, MatMulNBits accuracy_level 4: ~2x the weight bandwidth, products move by ~3e-3 relative RMS)",
    })
    .middleware((argv) => {
      // Every command reaches the backend through startBackend(args.backend); the mode rides beside it.
      requestedInt4Activations = (argv['int4-activations'] as Int4Activations | undefined) ?? 'float32';
    });
}

/** Initialise the backend and say on stderr which one runs (every command records it). */
export async function startBackend(choice: BackendChoice, quiet = false): Promise<string> {
  const name = await initBackend(choice, { int4Activations: requestedInt4Activations });
  const info = backendInfo(); // (native: the engine of the forward passes, and the tfjs backend that trains)
  if (!quiet) process.stderr.write(`synaxim: backend ${info.backend} (${info.detail})\n`);
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

/**
 * A parsed `--layers` value. Its syntax is checked at once (before any work); `all`, `first-N` and
 * `last-N` need the model's layer count, so the indices come from `resolve(numLayers)` once the
 * model is known. Every index is checked against that count there.
 */
export interface LayerSelection {
  text: string;
  flag: string;
  /** The indices when the text names them outright (no `all`/`first-N`/`last-N`), else null. */
  explicit: number[] | null;
  resolve(numLayers: number): number[];
}

/** "0-7", "0,2,5", "0-3,6", "all", "first-4", "last-2" (and mixes like "first-2,7") -> a LayerSelection. */
export function parseLayerList(text: string, flag = '--layers'): LayerSelection {
  // Refuse absurd indices before a range like 0-100000000 expands into a huge list.
  for (const n of String(text).match(/\d+/g) ?? []) {
    if (Number(n) > MAX_LAYER_INDEX) fail(null, `${flag}: layer ${n} is beyond any model (at most ${MAX_LAYER_INDEX + 1} layers)`);
  }
  const parts = String(text).split(',').map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) fail(null, `${flag}: no layers given`);
  type Part = (numLayers: number) => number[];
  const range = (a: number, b: number) => Array.from({ length: Math.max(0, b - a + 1) }, (_, i) => a + i);
  let symbolic = false;
  const pieces: Part[] = parts.map((part) => {
    const p = part.toLowerCase();
    if (p === 'all') {
      symbolic = true;
      return (L) => range(0, L - 1);
    }
    const fl = /^(first|last)-(\d+)$/.exec(p);
    if (fl) {
      const n = Number(fl[2]);
      if (n === 0) fail(null, `${flag}: '${part}' selects no layer`);
      symbolic = true;
      return (L) => {
        if (n > L) fail(null, `${flag}: '${part}' asks for ${n} layers; the model has ${L}`);
        return fl[1] === 'first' ? range(0, n - 1) : range(L - n, L - 1);
      };
    }
    const m = /^(\d+)(?:-(\d+))?$/.exec(p);
    if (!m) fail(null, `${flag}: '${part}' is not a layer index, a range like 0-7, all, first-N or last-N`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) fail(null, `${flag}: range '${part}' is reversed`);
    return () => range(a, b);
  });
  const collect = (numLayers: number) => [...new Set(pieces.flatMap((f) => f(numLayers)))].sort((x, y) => x - y);
  return {
    text: String(text),
    flag,
    explicit: symbolic ? null : collect(MAX_LAYER_INDEX + 1),
    resolve(numLayers: number): number[] {
      const layers = collect(numLayers);
      const bad = layers.filter((l) => l >= numLayers);
      if (bad.length > 0) fail(null, `${flag}: layer ${bad[0]} is out of range (the model has ${numLayers} layers: 0..${numLayers - 1})`);
      if (layers.length === 0) fail(null, `${flag}: '${text}' selects no layer of this ${numLayers}-layer model`);
      return layers;
    },
  };
}


/** The layer count of a `--model` value (its student's config), for resolving a LayerSelection. */
export function modelLayerCount(model: string, teacher?: string): number {
  const resolved = resolveModel(model, teacher ? { teacher } : {});
  const w = openModel(resolved.studentDir);
  try {
    return w.config.numLayers;
  } finally {
    w.close();
  }
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
