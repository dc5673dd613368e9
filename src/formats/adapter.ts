/**
 * The symbiotic adapter (adapter-v1): per adapted layer four parameters — `gate_bias` and
 * `gate_scale` (scalars, the gate logit is s·gate_scale + gate_bias), `output_scale` (one per
 * hidden unit) and `mix_alpha` (scalar, mixes the gate output with the layer input).
 *
 * On disk, a `symbiotic_adapter/` directory:
 * - `adapter_model.safetensors` (ours): F32 tensors `gate_bias.i`, `gate_scale.i` [1],
 *   `output_scale.i` [hidden], `mix_alpha.i` [1] — i is the position in the adapted-layer list (the
 *   state-dict names of a PyTorch ParameterList, so `safetensors.torch.load_file` works there);
 * - `symbiotic_adapter.pt` (the SYNAXIM scripts' `torch.save(adapter.state_dict())`): the same
 *   names with the scripts' shapes (`mix_alpha.i` 0-dim), read by our restricted torch reader;
 * - `adapter_config.json`: ours has `layers` and `hidden_size` plus what the run records; the
 *   scripts' has `D`, `n_layers`, `train_layers` (train_adapter.py), `base_model`, ... and adapts
 *   layers 0..N-1. Our export writes both weight files and both sets of keys.
 * Adapters record their base model (`base_model_content_hash`); checkAdapterBase compares it with
 * the model the adapter is applied to.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic, writeDirAtomic } from '../util/atomic.ts';
import { fail } from '../util/errors.ts';
import { entryExists } from '../util/fileio.ts';
import { contentHash } from './contentHash.ts';
import { readJsonFile, type ModelConfig } from './config.ts';
import { SafetensorsFile, writeSafetensors, type StTensorToWrite } from './safetensors.ts';
import { readTorchStateDict, writeTorchStateDict, type TensorToSave, type TorchStateDict } from './torchStateDict.ts';

export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
/** The SYNAXIM scripts' weights: `torch.save(adapter.state_dict())`. */
export const ADAPTER_PT_FILE = 'symbiotic_adapter.pt';
/** The directory name the distillation exports into. */
export const ADAPTER_DIR_NAME = 'symbiotic_adapter';

export interface AdapterLayerParams {
  gateBias: number;
  gateScale: number;
  /** [hidden] */
  outputScale: Float32Array;
  mixAlpha: number;
  /** adapter-window only: the learned logit of the window/gate mix, o = σ(window_mix)·o_window + (1−σ)·o_gate. */
  windowMix?: number;
}

export interface Adapter {
  /** Adapted layer indices; params[i] belongs to layers[i]. */
  layers: number[];
  hiddenSize: number;
  params: AdapterLayerParams[];
  /** adapter_config.json as read (or as to be written), for provenance. */
  config: Record<string, unknown>;
  /** The adapter_config.json it was read from (names the adapter in errors). */
  source?: string;
  /** Which weight files it was read from: ours (safetensors), the scripts' (.pt), or both. */
  format?: AdapterFormat;
  /**
   * adapter-window (adapter_type `adapter-window`): each adapted layer also runs softmax attention
   * over its last `window` positions (RoPE as the teacher) and mixes it with the adapter-v1 output
   * by σ(window_mix). Absent/null: adapter-v1.
   */
  window?: number | null;
}

/** adapter_config.json `adapter_type` / `semantics` of the two adapter kinds. */
export const ADAPTER_WINDOW_TYPE = 'adapter-window';
/** How reports and the policy line name an adapter's attention: `adapter-v1`, or `adapter-window-W`. */
export function adapterPolicyName(a: { window?: number | null }): 'adapter-v1' | `adapter-window-${number}` {
  return a.window ? `adapter-window-${a.window}` : 'adapter-v1';
}
export const ADAPTER_WINDOW_SEMANTICS = 'adapter-window-v1';
/** Initial window_mix: σ(2) ≈ 0.88 — training starts near the plain window, the stronger of the two parts. */
export const INITIAL_WINDOW_MIX = 2;

export type AdapterFormat = 'safetensors' | 'pt' | 'both';

/** Initial values of the SYNAXIM scripts. */
export const INITIAL_ADAPTER_VALUES = { gateBias: 0, gateScale: 1, outputScale: 0.1, mixAlpha: 0.5 } as const;

export function initialAdapter(layers: number[], hiddenSize: number, window: number | null = null): Adapter {
  return {
    layers: [...layers],
    hiddenSize,
    params: layers.map(() => ({
      gateBias: INITIAL_ADAPTER_VALUES.gateBias,
      gateScale: INITIAL_ADAPTER_VALUES.gateScale,
      outputScale: new Float32Array(hiddenSize).fill(INITIAL_ADAPTER_VALUES.outputScale),
      mixAlpha: INITIAL_ADAPTER_VALUES.mixAlpha,
      ...(window !== null ? { windowMix: INITIAL_WINDOW_MIX } : {}),
    })),
    config: {},
    ...(window !== null ? { window } : {}),
  };
}

/** Number of trainable scalars: 3 + hidden per layer (+ window_mix for adapter-window). */
export function adapterParameterCount(a: Pick<Adapter, 'layers' | 'hiddenSize'> & { window?: number | null }): number {
  return a.layers.length * (3 + a.hiddenSize + (a.window ? 1 : 0));
}

/** adapter-window's `window` from adapter_config.json (null for adapter-v1). */
function configWindow(file: string, config: Record<string, unknown>): number | null {
  const isWindow = config.adapter_type === ADAPTER_WINDOW_TYPE || config.semantics === ADAPTER_WINDOW_SEMANTICS;
  if (!isWindow) {
    if (config.window !== undefined && config.window !== null) fail(file, `'window' is set but adapter_type is not ${ADAPTER_WINDOW_TYPE}`);
    return null;
  }
  if (config.adapter_type !== ADAPTER_WINDOW_TYPE || config.semantics !== ADAPTER_WINDOW_SEMANTICS) {
    fail(file, `adapter_type ${JSON.stringify(config.adapter_type)} and semantics ${JSON.stringify(config.semantics)} disagree (expected ${ADAPTER_WINDOW_TYPE} with ${ADAPTER_WINDOW_SEMANTICS})`);
  }
  const w = config.window;
  if (typeof w !== 'number' || !Number.isInteger(w) || w < 1) fail(file, `'window' must be a positive integer for ${ADAPTER_WINDOW_TYPE}, got ${JSON.stringify(w)}`);
  return w;
}

/** The index of `layer` in the adapter's list, or -1. */
export function adapterPosition(a: Adapter, layer: number): number {
  return a.layers.indexOf(layer);
}

/** The adapter fits the model: same hidden size, every layer exists. `where` names the adapter in errors. */
export function validateAdapterForModel(a: Adapter, config: ModelConfig, where: string): void {
  if (a.hiddenSize !== config.hiddenSize) {
    fail(where, `adapter hidden_size ${a.hiddenSize} does not match the model's hidden size ${config.hiddenSize} (adapter trained for another model?)`);
  }
  const outside = a.layers.filter((l) => l >= config.numLayers);
  if (outside.length > 0) {
    fail(where, `adapter layers ${outside.join(', ')} do not exist in the model (${config.numLayers} layers: 0..${config.numLayers - 1})`);
  }
}

function checkLayerList(file: string, raw: unknown): number[] {
  if (!Array.isArray(raw) || raw.length === 0) fail(file, `'layers' must be a non-empty list of layer indices, got ${JSON.stringify(raw)}`);
  const seen = new Set<number>();
  for (const l of raw) {
    if (typeof l !== 'number' || !Number.isInteger(l) || l < 0) fail(file, `'layers' entries must be non-negative integers, got ${JSON.stringify(l)}`);
    if (seen.has(l)) fail(file, `'layers' lists layer ${l} twice`);
    seen.add(l);
  }
  return raw as number[];
}

function positiveInt(file: string, config: Record<string, unknown>, key: string): number | undefined {
  const v = config[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail(file, `'${key}' must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * What adapter_config.json says about the tensors. Ours has `layers` + `hidden_size` (+ `semantics`);
 * the SYNAXIM scripts' has `D`, `n_layers` and (train_adapter.py) `train_layers`, and adapts layers
 * 0..N-1 with N from the state dict. A config with any of our keys is read as ours.
 */
interface ConfigFacts {
  flavor: 'ours' | 'scripts';
  /** Ours: the layer list. Scripts': null (0..N-1, N from the tensors). */
  layers: number[] | null;
  hiddenSize: number | null;
  /** Scripts': the number of adapted layers the config states (train_layers, else n_layers), if any. */
  statedCount: number | null;
}

function configFacts(file: string, config: Record<string, unknown>): ConfigFacts {
  if (config.semantics !== undefined && config.semantics !== 'adapter-v1' && config.semantics !== ADAPTER_WINDOW_SEMANTICS) {
    fail(file, `unsupported adapter semantics ${JSON.stringify(config.semantics)} (supported: adapter-v1, ${ADAPTER_WINDOW_SEMANTICS})`);
  }
  if (config.adapter_type !== undefined && config.adapter_type !== 'symbiotic_gate' && config.adapter_type !== ADAPTER_WINDOW_TYPE) {
    fail(file, `unsupported adapter_type ${JSON.stringify(config.adapter_type)} (supported: symbiotic_gate, ${ADAPTER_WINDOW_TYPE})`);
  }
  const ours = config.layers !== undefined || config.hidden_size !== undefined || config.semantics !== undefined;
  if (ours) {
    const layers = checkLayerList(file, config.layers);
    const hiddenSize = config.hidden_size;
    if (typeof hiddenSize !== 'number' || !Number.isInteger(hiddenSize) || hiddenSize <= 0) {
      fail(file, `'hidden_size' must be a positive integer, got ${JSON.stringify(hiddenSize)}`);
    }
    // (our export also writes the scripts' D; hidden_size is ours and is checked against the tensors)
    return { flavor: 'ours', layers, hiddenSize, statedCount: null };
  }
  const d = positiveInt(file, config, 'D');
  const nLayers = positiveInt(file, config, 'n_layers');
  const trainLayers = positiveInt(file, config, 'train_layers');
  if (trainLayers !== undefined && nLayers !== undefined && trainLayers > nLayers) fail(file, `'train_layers' ${trainLayers} is more than 'n_layers' ${nLayers}`);
  return { flavor: 'scripts', layers: null, hiddenSize: d ?? null, statedCount: trainLayers ?? nLayers ?? null };
}

/** A file of named float tensors (adapter_model.safetensors or symbiotic_adapter.pt). */
interface TensorSource {
  path: string;
  names(): string[];
  shape(name: string): number[];
  /** float32 values; the reader has checked the dtype is a float type. */
  values(name: string): Float32Array;
}

function safetensorsSource(st: SafetensorsFile): TensorSource {
  return { path: st.path, names: () => st.names(), shape: (n) => st.info(n).shape, values: (n) => st.readFloat32(n) };
}

function torchSource(sd: TorchStateDict): TensorSource {
  return { path: sd.file, names: () => [...sd.tensors.keys()], shape: (n) => sd.tensors.get(n)!.shape, values: (n) => sd.tensors.get(n)!.data };
}

const PARAM_NAME = /^(gate_bias|gate_scale|output_scale|mix_alpha|window_mix)\.(\d+)$/;

/** Adapted-layer count of a state dict: gate_bias.0 … gate_bias.N-1 (the other families are checked per layer). */
function stateDictLayerCount(src: TensorSource): number {
  let n = 0;
  for (const name of src.names()) {
    const m = PARAM_NAME.exec(name);
    if (m) n = Math.max(n, Number(m[2]) + 1);
  }
  if (n === 0) fail(src.path, 'no adapter tensors (expected gate_bias.i, gate_scale.i, output_scale.i, mix_alpha.i)');
  return n;
}

/** A one-element (shape [1] or [] — the scripts' mix_alpha is 0-dim) finite parameter. */
function readScalar(src: TensorSource, name: string, layer: number): number {
  if (!src.names().includes(name)) fail(src.path, `missing tensor '${name}' (adapted layer ${layer})`);
  const shape = src.shape(name);
  if (!(shape.length === 0 || (shape.length === 1 && shape[0] === 1))) {
    fail(src.path, `tensor '${name}' has shape [${shape.join(', ')}], expected [1]`);
  }
  const v = src.values(name)[0]!;
  if (!Number.isFinite(v)) fail(src.path, `tensor '${name}' (adapted layer ${layer}) is ${v}`);
  return v;
}

/** The per-layer parameters of `layers` from a tensor file; every tensor accounted for. */
function readParams(src: TensorSource, layers: number[], hiddenSize: number, hiddenFrom: string, withWindowMix = false): AdapterLayerParams[] {
  const names = new Set(src.names());
  const params = layers.map((layer, i) => {
    const osName = `output_scale.${i}`;
    if (!names.has(osName)) fail(src.path, `missing tensor '${osName}' (adapted layer ${layer})`);
    const shape = src.shape(osName);
    if (shape.length !== 1 || shape[0] !== hiddenSize) {
      fail(src.path, `tensor '${osName}' has shape [${shape.join(', ')}], expected [${hiddenSize}] (${hiddenFrom})`);
    }
    const outputScale = Float32Array.from(src.values(osName));
    const bad = outputScale.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) fail(src.path, `tensor '${osName}' (adapted layer ${layer}) has a non-finite value (${outputScale[bad]}) at ${bad}`);
    return {
      gateBias: readScalar(src, `gate_bias.${i}`, layer),
      gateScale: readScalar(src, `gate_scale.${i}`, layer),
      outputScale,
      mixAlpha: readScalar(src, `mix_alpha.${i}`, layer),
      ...(withWindowMix ? { windowMix: readScalar(src, `window_mix.${i}`, layer) } : {}),
    };
  });
  // Tensors beyond the layer list mean the config and the weights disagree.
  for (const name of names) {
    const m = PARAM_NAME.exec(name);
    if (!m || (m[1] === 'window_mix' && !withWindowMix)) fail(src.path, `unexpected tensor '${name}' (expected gate_bias.i, gate_scale.i, output_scale.i, mix_alpha.i${withWindowMix ? ', window_mix.i' : ''})`);
    if (Number(m[2]) >= layers.length) {
      fail(src.path, `tensor '${name}' has no layer: ${ADAPTER_CONFIG_FILE} lists ${layers.length} adapted layers (${layers.join(', ')})`);
    }
  }
  return params;
}

/** Layers and hidden size from the config, or (scripts' config) from the tensors, checked against each other. */
function layout(facts: ConfigFacts, src: TensorSource, configFile: string): { layers: number[]; hiddenSize: number; hiddenFrom: string } {
  if (facts.layers) return { layers: facts.layers, hiddenSize: facts.hiddenSize!, hiddenFrom: `hidden_size in ${ADAPTER_CONFIG_FILE}` };
  const n = stateDictLayerCount(src);
  if (facts.statedCount !== null && facts.statedCount !== n) {
    fail(configFile, `states ${facts.statedCount} adapted layers ('train_layers', else 'n_layers'), but ${path.basename(src.path)} has ${n} (gate_bias.0 … gate_bias.${n - 1})`);
  }
  let hiddenSize = facts.hiddenSize;
  let hiddenFrom = `'D' in ${ADAPTER_CONFIG_FILE}`;
  if (hiddenSize === null) {
    if (!src.names().includes('output_scale.0')) fail(src.path, `missing tensor 'output_scale.0' (adapted layer 0)`);
    hiddenSize = src.shape('output_scale.0')[0] ?? 0;
    hiddenFrom = 'output_scale.0';
    if (hiddenSize <= 0) fail(src.path, `tensor 'output_scale.0' has shape [${src.shape('output_scale.0').join(', ')}], expected [D]`);
  }
  return { layers: Array.from({ length: n }, (_, i) => i), hiddenSize, hiddenFrom };
}

/** The two tensor files hold the same values (our export writes both; an edit of one is a problem). */
function checkSameParams(pt: string, a: AdapterLayerParams[], b: AdapterLayerParams[], layers: number[]): void {
  if (a.length !== b.length) fail(pt, `has ${b.length} adapted layers, ${ADAPTER_WEIGHTS_FILE} ${a.length} (the two files of this adapter disagree; remove the stale one)`);
  a.forEach((p, i) => {
    const q = b[i]!;
    const same =
      Object.is(Math.fround(p.gateBias), Math.fround(q.gateBias)) &&
      Object.is(Math.fround(p.gateScale), Math.fround(q.gateScale)) &&
      Object.is(Math.fround(p.mixAlpha), Math.fround(q.mixAlpha)) &&
      p.outputScale.length === q.outputScale.length &&
      p.outputScale.every((v, j) => Object.is(v, q.outputScale[j]));
    if (!same) fail(pt, `adapted layer ${layers[i]} differs from ${ADAPTER_WEIGHTS_FILE} (the two files of this adapter disagree; remove the stale one)`);
  });
}

/**
 * Read an adapter directory (or a directory that holds `symbiotic_adapter/`), ours or the SYNAXIM
 * scripts'. Weights: `adapter_model.safetensors`; else `symbiotic_adapter.pt` (read by our
 * restricted torch reader); with both, the safetensors is read and the .pt must hold the same
 * values. With `modelConfig`, also checks that it fits that model. Every problem is a one-line
 * error naming the file.
 */
export function readAdapter(dir: string, modelConfig?: ModelConfig): Adapter {
  if (!fs.existsSync(dir)) fail(dir, 'adapter directory not found');
  if (!fs.statSync(dir).isDirectory()) fail(dir, `not a directory (expected an adapter directory with ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE} or ${ADAPTER_PT_FILE})`);
  if (!fs.existsSync(path.join(dir, ADAPTER_CONFIG_FILE)) && fs.existsSync(path.join(dir, ADAPTER_DIR_NAME, ADAPTER_CONFIG_FILE))) {
    dir = path.join(dir, ADAPTER_DIR_NAME);
  }
  const configFile = path.join(dir, ADAPTER_CONFIG_FILE);
  const config = readJsonFile(configFile);
  if (typeof config !== 'object' || config === null || Array.isArray(config)) fail(configFile, 'must be a JSON object');
  const facts = configFacts(configFile, config as Record<string, unknown>);
  const window = configWindow(configFile, config as Record<string, unknown>);

  const stFile = path.join(dir, ADAPTER_WEIGHTS_FILE);
  const ptFile = path.join(dir, ADAPTER_PT_FILE);
  const hasPt = entryExists(ptFile);
  // Without a .pt, a missing safetensors is reported as such (the usual case for our format).
  const hasSt = entryExists(stFile) || !hasPt;
  let adapter: Adapter;
  if (hasSt) {
    const st = SafetensorsFile.open(stFile);
    try {
      const src = safetensorsSource(st);
      const { layers, hiddenSize, hiddenFrom } = layout(facts, src, configFile);
      adapter = { layers, hiddenSize, params: readParams(src, layers, hiddenSize, hiddenFrom, window !== null), config, source: configFile, format: hasPt ? 'both' : 'safetensors', ...(window !== null ? { window } : {}) };
    } finally {
      st.close();
    }
    if (hasPt) {
      const pt = torchSource(readTorchStateDict(ptFile));
      checkSameParams(ptFile, adapter.params, readParams(pt, adapter.layers, adapter.hiddenSize, `the hidden size of ${ADAPTER_WEIGHTS_FILE}`), adapter.layers);
    }
  } else {
    const src = torchSource(readTorchStateDict(ptFile));
    const { layers, hiddenSize, hiddenFrom } = layout(facts, src, configFile);
    adapter = { layers, hiddenSize, params: readParams(src, layers, hiddenSize, hiddenFrom), config, source: configFile, format: 'pt' };
  }
  if (window !== null && adapter.format === 'pt') fail(configFile, `${ADAPTER_WINDOW_TYPE} adapters are stored in ${ADAPTER_WEIGHTS_FILE} only`);
  if (modelConfig) validateAdapterForModel(adapter, modelConfig, configFile);
  return adapter;
}

/** The adapter's tensors under their state-dict names, F32, in layer order. */
export function adapterTensors(a: Adapter): Record<string, StTensorToWrite> {
  const out: Record<string, StTensorToWrite> = {};
  a.params.forEach((p, i) => {
    out[`gate_bias.${i}`] = { dtype: 'F32', shape: [1], data: Float32Array.of(p.gateBias) };
    out[`gate_scale.${i}`] = { dtype: 'F32', shape: [1], data: Float32Array.of(p.gateScale) };
    out[`output_scale.${i}`] = { dtype: 'F32', shape: [a.hiddenSize], data: Float32Array.from(p.outputScale) };
    out[`mix_alpha.${i}`] = { dtype: 'F32', shape: [1], data: Float32Array.of(p.mixAlpha) };
    if (a.window) out[`window_mix.${i}`] = { dtype: 'F32', shape: [1], data: Float32Array.of(p.windowMix!) };
  });
  return out;
}

/**
 * The adapter as the scripts' `state_dict()`: ParameterList order (all gate_bias, then gate_scale,
 * output_scale, mix_alpha), shapes [1], [1], [D], [] — `load_state_dict` into
 * `SymbioticGateAdapter(D, len(layers))` takes it as is.
 */
export function adapterStateDict(a: Adapter): TensorToSave[] {
  const out: TensorToSave[] = [];
  a.params.forEach((p, i) => out.push({ name: `gate_bias.${i}`, shape: [1], data: Float32Array.of(p.gateBias) }));
  a.params.forEach((p, i) => out.push({ name: `gate_scale.${i}`, shape: [1], data: Float32Array.of(p.gateScale) }));
  a.params.forEach((p, i) => out.push({ name: `output_scale.${i}`, shape: [a.hiddenSize], data: Float32Array.from(p.outputScale) }));
  a.params.forEach((p, i) => out.push({ name: `mix_alpha.${i}`, shape: [], data: Float32Array.of(p.mixAlpha) }));
  return out;
}
/** Module paths of the scripts' adapter, for the state dict's `_metadata`. */
const STATE_DICT_MODULES = ['', 'gate_bias', 'gate_scale', 'output_scale', 'mix_alpha'];

export interface WriteAdapterOptions {
  /** Also write `symbiotic_adapter.pt` (the scripts' format). Default false. */
  torch?: boolean;
}

/**
 * Write `dir` (e.g. OUT/symbiotic_adapter) atomically: the whole directory appears at once.
 * adapter_config.json = the adapter's own config, then `extraConfig` (base model, training
 * options, ...), then the fields that describe the tensors (these always win; ours and the
 * scripts' `D`, `train_layers`, `parameters`).
 */
export async function writeAdapter(dir: string, a: Adapter, extraConfig: Record<string, unknown> = {}, opts: WriteAdapterOptions = {}): Promise<void> {
  if (a.params.length !== a.layers.length) throw new Error(`adapter has ${a.params.length} parameter sets for ${a.layers.length} layers`);
  a.params.forEach((p, i) => {
    if (p.outputScale.length !== a.hiddenSize) throw new Error(`output_scale.${i} has ${p.outputScale.length} values, hidden_size is ${a.hiddenSize}`);
    if (a.window && p.windowMix === undefined) throw new Error(`adapter-window layer ${a.layers[i]} has no window_mix`);
    const values = [p.gateBias, p.gateScale, p.mixAlpha, ...p.outputScale, ...(a.window ? [p.windowMix!] : [])];
    if (!values.every(Number.isFinite)) fail(dir, `refusing to write adapter layer ${a.layers[i]}: it has non-finite parameters`);
  });
  const config = {
    ...a.config,
    ...extraConfig,
    adapter_type: a.window ? ADAPTER_WINDOW_TYPE : 'symbiotic_gate',
    semantics: a.window ? ADAPTER_WINDOW_SEMANTICS : 'adapter-v1',
    ...(a.window ? { window: a.window } : {}),
    engine: 'SYNAXIM',
    hidden_size: a.hiddenSize,
    num_layers: a.layers.length,
    layers: a.layers,
    num_parameters: adapterParameterCount(a),
    // the SYNAXIM scripts' names for the same facts
    D: a.hiddenSize,
    train_layers: a.layers.length,
    parameters: adapterParameterCount(a),
  };
  await writeDirAtomic(dir, (tmp) => {
    writeSafetensors(path.join(tmp, ADAPTER_WEIGHTS_FILE), adapterTensors(a), { format: 'pt' });
    // The scripts' SymbioticGateAdapter has no window part: adapter-window has no .pt form.
    if (opts.torch && !a.window) writeTorchStateDict(path.join(tmp, ADAPTER_PT_FILE), adapterStateDict(a), STATE_DICT_MODULES);
    writeJsonAtomic(path.join(tmp, ADAPTER_CONFIG_FILE), config);
  });
}

// ---------------------------------------------------------------------------------------------
// Which base model an adapter belongs to

/** What the adapter's config records about its base model. */
export interface AdapterBaseRecord {
  /** `base_model` (a registry/hub id or a name), if recorded. */
  name: string | null;
  /** `base_model_content_hash` (ours), if recorded. */
  contentHash: string | null;
  /** The base model's layer count: ours `base_model_num_layers`; train_adapter.py's `n_layers` (with `train_layers`). */
  numLayers: number | null;
}

export function adapterBaseRecord(a: Adapter): AdapterBaseRecord {
  const c = a.config;
  const str = (v: unknown) => (typeof v === 'string' && v.length > 0 ? v : null);
  const int = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : null);
  const numLayers = int(c.base_model_num_layers) ?? (c.train_layers !== undefined ? int(c.n_layers) : null);
  return { name: str(c.base_model) ?? str(c.base_model_name_or_path), contentHash: str(c.base_model_content_hash), numLayers };
}

/** The outcome of checking an adapter against the model it is applied to (recorded in eval reports). */
export interface AdapterBaseCheck {
  /** match: the recorded hash (and layer count) agree; unrecorded: no hash to compare (the scripts'); other-base: a mismatch allowed by --allow-other-base. */
  status: 'match' | 'unrecorded' | 'other-base';
  recorded: AdapterBaseRecord;
  /** Content hash of the model directory the adapter is applied to (when a hash was compared). */
  modelHash: string | null;
  /** One line for the user (stderr) and the report; null for a plain match. */
  note: string | null;
}

/**
 * Check that the adapter belongs to the model at `modelDir` (hash via `hashOf`, the eval
 * reports' contentHash): a recorded `base_model_content_hash` must equal the model's, a recorded
 * layer count its layer count. A mismatch is a one-line error unless `allowOtherBase` (then the
 * result says so). An adapter that records no hash (the scripts') is accepted with a note.
 */
export function checkAdapterBase(a: Adapter, modelDir: string, config: ModelConfig, hashOf: (dir: string) => string, allowOtherBase: boolean): AdapterBaseCheck {
  const recorded = adapterBaseRecord(a);
  const where = a.source ?? modelDir;
  const named = recorded.name ? ` (${recorded.name})` : '';
  const problems: string[] = [];
  let modelHash: string | null = null;
  if (recorded.contentHash) {
    modelHash = hashOf(modelDir);
    if (modelHash !== recorded.contentHash) problems.push(`it was trained on a base model${named} with content hash ${recorded.contentHash.slice(0, 19)}…, not ${modelDir} (${modelHash.slice(0, 19)}…)`);
  }
  if (recorded.numLayers !== null && recorded.numLayers !== config.numLayers) {
    problems.push(`it was trained on a ${recorded.numLayers}-layer base model${named}, not this ${config.numLayers}-layer one`);
  }
  if (problems.length > 0) {
    if (!allowOtherBase) fail(where, `adapter does not belong to this model: ${problems.join('; ')}; pass --allow-other-base to apply it anyway`);
    return { status: 'other-base', recorded, modelHash, note: `adapter applied to another base model (--allow-other-base): ${problems.join('; ')}` };
  }
  if (!recorded.contentHash) {
    return { status: 'unrecorded', recorded, modelHash, note: `adapter records no base_model_content_hash${recorded.name ? ` (base_model ${recorded.name})` : ''}; applied to ${modelDir} unchecked` };
  }
  return { status: 'match', recorded, modelHash, note: null };
}

/**
 * readAdapter for a model about to run it (forward, generate): fits the model, belongs to it
 * (checkAdapterBase with the eval reports' content hash), notes and warnings on stderr.
 */
export function readAdapterForModel(dir: string, model: { dir: string; config: ModelConfig }, allowOtherBase: boolean, say: (line: string) => void = (l) => process.stderr.write(`synaxim: ${l}\n`)): Adapter {
  const a = readAdapter(dir, model.config);
  const check = checkAdapterBase(a, model.dir, model.config, (d) => contentHash(d), allowOtherBase);
  if (check.note) say(`${check.status === 'other-base' ? 'warning: ' : 'note: '}${check.note}`);
  return a;
}
