/**
 * The symbiotic adapter (adapter-v1): per adapted layer four parameters — `gate_bias` and
 * `gate_scale` (scalars, the gate logit is s·gate_scale + gate_bias), `output_scale` (one per
 * hidden unit) and `mix_alpha` (scalar, mixes the gate output with the layer input).
 *
 * On disk, a `symbiotic_adapter/` directory as the SYNAXIM training scripts write it:
 * - `adapter_model.safetensors`: F32 tensors `gate_bias.i`, `gate_scale.i` [1], `output_scale.i`
 *   [hidden], `mix_alpha.i` [1] — i is the position in the adapted-layer list (the state-dict names
 *   of a PyTorch ParameterList, so `safetensors.torch.load_file` + `load_state_dict` works there);
 * - `adapter_config.json`: at least `layers` and `hidden_size`, plus what the run records.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic, writeDirAtomic } from '../core/atomic.ts';
import { fail } from '../core/errors.ts';
import { readJsonFile, type ModelConfig } from '../formats/config.ts';
import { SafetensorsFile, writeSafetensors, type StTensorToWrite } from '../formats/safetensors.ts';

export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
/** The directory name the distillation exports into. */
export const ADAPTER_DIR_NAME = 'symbiotic_adapter';

export interface AdapterLayerParams {
  gateBias: number;
  gateScale: number;
  /** [hidden] */
  outputScale: Float32Array;
  mixAlpha: number;
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
}

/** Initial values of the SYNAXIM scripts. */
export const INITIAL_ADAPTER_VALUES = { gateBias: 0, gateScale: 1, outputScale: 0.1, mixAlpha: 0.5 } as const;

export function initialAdapter(layers: number[], hiddenSize: number): Adapter {
  return {
    layers: [...layers],
    hiddenSize,
    params: layers.map(() => ({
      gateBias: INITIAL_ADAPTER_VALUES.gateBias,
      gateScale: INITIAL_ADAPTER_VALUES.gateScale,
      outputScale: new Float32Array(hiddenSize).fill(INITIAL_ADAPTER_VALUES.outputScale),
      mixAlpha: INITIAL_ADAPTER_VALUES.mixAlpha,
    })),
    config: {},
  };
}

/** Number of trainable scalars: 3 + hidden per layer. */
export function adapterParameterCount(a: Pick<Adapter, 'layers' | 'hiddenSize'>): number {
  return a.layers.length * (3 + a.hiddenSize);
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

/** A one-element (shape [1] or []) finite parameter. */
function readScalar(st: SafetensorsFile, name: string, layer: number): number {
  if (!st.has(name)) fail(st.path, `missing tensor '${name}' (adapted layer ${layer})`);
  const info = st.info(name);
  if (!(info.shape.length === 0 || (info.shape.length === 1 && info.shape[0] === 1))) {
    fail(st.path, `tensor '${name}' has shape [${info.shape.join(', ')}], expected [1]`);
  }
  const v = st.readFloat32(name)[0];
  if (!Number.isFinite(v)) fail(st.path, `tensor '${name}' (adapted layer ${layer}) is ${v}`);
  return v;
}

/**
 * Read an adapter directory (or a directory that holds `symbiotic_adapter/`). With `modelConfig`,
 * also checks that it fits that model. Every problem is a one-line error naming the file.
 */
export function readAdapter(dir: string, modelConfig?: ModelConfig): Adapter {
  if (!fs.existsSync(dir)) fail(dir, 'adapter directory not found');
  if (!fs.statSync(dir).isDirectory()) fail(dir, `not a directory (expected an adapter directory with ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE})`);
  if (!fs.existsSync(path.join(dir, ADAPTER_CONFIG_FILE)) && fs.existsSync(path.join(dir, ADAPTER_DIR_NAME, ADAPTER_CONFIG_FILE))) {
    dir = path.join(dir, ADAPTER_DIR_NAME);
  }
  const configFile = path.join(dir, ADAPTER_CONFIG_FILE);
  const config = readJsonFile(configFile);
  if (typeof config !== 'object' || config === null || Array.isArray(config)) fail(configFile, 'must be a JSON object');
  const layers = checkLayerList(configFile, config.layers);
  const hiddenSize = config.hidden_size;
  if (typeof hiddenSize !== 'number' || !Number.isInteger(hiddenSize) || hiddenSize <= 0) {
    fail(configFile, `'hidden_size' must be a positive integer, got ${JSON.stringify(hiddenSize)}`);
  }
  if (config.semantics !== undefined && config.semantics !== 'adapter-v1') {
    fail(configFile, `unsupported adapter semantics ${JSON.stringify(config.semantics)} (supported: adapter-v1)`);
  }
  if (config.adapter_type !== undefined && config.adapter_type !== 'symbiotic_gate') {
    fail(configFile, `unsupported adapter_type ${JSON.stringify(config.adapter_type)} (supported: symbiotic_gate)`);
  }

  const st = SafetensorsFile.open(path.join(dir, ADAPTER_WEIGHTS_FILE));
  try {
    const params: AdapterLayerParams[] = layers.map((layer, i) => {
      const osName = `output_scale.${i}`;
      if (!st.has(osName)) fail(st.path, `missing tensor '${osName}' (adapted layer ${layer})`);
      const info = st.info(osName);
      if (info.shape.length !== 1 || info.shape[0] !== hiddenSize) {
        fail(st.path, `tensor '${osName}' has shape [${info.shape.join(', ')}], expected [${hiddenSize}] (hidden_size in ${ADAPTER_CONFIG_FILE})`);
      }
      const outputScale = st.readFloat32(osName);
      const bad = outputScale.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) fail(st.path, `tensor '${osName}' (adapted layer ${layer}) has a non-finite value (${outputScale[bad]}) at ${bad}`);
      return {
        gateBias: readScalar(st, `gate_bias.${i}`, layer),
        gateScale: readScalar(st, `gate_scale.${i}`, layer),
        outputScale,
        mixAlpha: readScalar(st, `mix_alpha.${i}`, layer),
      };
    });
    // Tensors beyond the layer list mean the config and the weights disagree.
    for (const name of st.names()) {
      const m = /^(gate_bias|gate_scale|output_scale|mix_alpha)\.(\d+)$/.exec(name);
      if (!m) fail(st.path, `unexpected tensor '${name}' (expected gate_bias.i, gate_scale.i, output_scale.i, mix_alpha.i)`);
      if (Number(m[2]) >= layers.length) {
        fail(st.path, `tensor '${name}' has no layer: ${ADAPTER_CONFIG_FILE} lists ${layers.length} adapted layers (${layers.join(', ')})`);
      }
    }
    const adapter: Adapter = { layers, hiddenSize, params, config, source: configFile };
    if (modelConfig) validateAdapterForModel(adapter, modelConfig, configFile);
    return adapter;
  } finally {
    st.close();
  }
}

/** The adapter's tensors under their state-dict names, F32, in layer order. */
export function adapterTensors(a: Adapter): Record<string, StTensorToWrite> {
  const out: Record<string, StTensorToWrite> = {};
  a.params.forEach((p, i) => {
    out[`gate_bias.${i}`] = { dtype: 'F32', shape: [1], data: Float32Array.of(p.gateBias) };
    out[`gate_scale.${i}`] = { dtype: 'F32', shape: [1], data: Float32Array.of(p.gateScale) };
    out[`output_scale.${i}`] = { dtype: 'F32', shape: [a.hiddenSize], data: Float32Array.from(p.outputScale) };
    out[`mix_alpha.${i}`] = { dtype: 'F32', shape: [1], data: Float32Array.of(p.mixAlpha) };
  });
  return out;
}

/**
 * Write `dir` (e.g. OUT/symbiotic_adapter) atomically: the whole directory appears at once.
 * adapter_config.json = the adapter's own config, then `extraConfig` (base model, training
 * options, ...), then the fields that describe the tensors (these always win).
 */
export async function writeAdapter(dir: string, a: Adapter, extraConfig: Record<string, unknown> = {}): Promise<void> {
  if (a.params.length !== a.layers.length) throw new Error(`adapter has ${a.params.length} parameter sets for ${a.layers.length} layers`);
  a.params.forEach((p, i) => {
    if (p.outputScale.length !== a.hiddenSize) throw new Error(`output_scale.${i} has ${p.outputScale.length} values, hidden_size is ${a.hiddenSize}`);
    const values = [p.gateBias, p.gateScale, p.mixAlpha, ...p.outputScale];
    if (!values.every(Number.isFinite)) fail(dir, `refusing to write adapter layer ${a.layers[i]}: it has non-finite parameters`);
  });
  const config = {
    ...a.config,
    ...extraConfig,
    adapter_type: 'symbiotic_gate',
    semantics: 'adapter-v1',
    engine: 'SYNAXIM',
    hidden_size: a.hiddenSize,
    num_layers: a.layers.length,
    layers: a.layers,
    num_parameters: adapterParameterCount(a),
  };
  await writeDirAtomic(dir, (tmp) => {
    writeSafetensors(path.join(tmp, ADAPTER_WEIGHTS_FILE), adapterTensors(a), { format: 'pt' });
    writeJsonAtomic(path.join(tmp, ADAPTER_CONFIG_FILE), config);
  });
}
