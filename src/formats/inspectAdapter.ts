/**
 * `synaxim inspect ADAPTER_DIR`: what an adapter directory holds — which format (ours, the
 * SYNAXIM scripts' .pt, or both), the base model it records, its layers, parameter count and the
 * per-layer values (gate bias/scale, output scale mean/min/max, sigmoid(mix_alpha)).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ADAPTER_CONFIG_FILE, ADAPTER_DIR_NAME, adapterBaseRecord, adapterParameterCount, readAdapter } from './adapter.ts';

export interface AdapterLayerDescription {
  layer: number;
  gate_bias: number;
  gate_scale: number;
  output_scale: { mean: number; min: number; max: number };
  mix_alpha: number;
  /** sigmoid(mix_alpha): the weight of the gate output against the layer input. */
  mix: number;
}

export interface AdapterDescription {
  kind: 'adapter';
  dir: string;
  /** ours: adapter_model.safetensors; scripts-pt: symbiotic_adapter.pt; both (read: safetensors, .pt checked equal). */
  format: 'ours' | 'scripts-pt' | 'both';
  /** Whose adapter_config.json keys: ours (layers, hidden_size) or the scripts' (D, n_layers, train_layers). */
  config: 'ours' | 'scripts';
  base_model: { name: string | null; content_hash: string | null; num_layers: number | null };
  hidden_size: number;
  layers: number[];
  parameter_count: number;
  per_layer: AdapterLayerDescription[];
}

/** Whether `dir` looks like an adapter directory (or holds symbiotic_adapter/). */
export function isAdapterDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, ADAPTER_CONFIG_FILE)) || fs.existsSync(path.join(dir, ADAPTER_DIR_NAME, ADAPTER_CONFIG_FILE));
}

export function describeAdapter(dir: string): AdapterDescription {
  const a = readAdapter(dir);
  const base = adapterBaseRecord(a);
  const format = a.format === 'pt' ? 'scripts-pt' : a.format === 'both' ? 'both' : 'ours';
  return {
    kind: 'adapter',
    dir: a.source ? path.dirname(a.source) : dir,
    format,
    config: a.config.layers !== undefined ? 'ours' : 'scripts',
    base_model: { name: base.name, content_hash: base.contentHash, num_layers: base.numLayers },
    hidden_size: a.hiddenSize,
    layers: a.layers,
    parameter_count: adapterParameterCount(a),
    per_layer: a.params.map((p, i) => {
      let sum = 0;
      let min = Infinity;
      let max = -Infinity;
      for (const v of p.outputScale) {
        sum += v;
        if (v < min) min = v;
        if (v > max) max = v;
      }
      return {
        layer: a.layers[i]!,
        gate_bias: p.gateBias,
        gate_scale: p.gateScale,
        output_scale: { mean: sum / p.outputScale.length, min, max },
        mix_alpha: p.mixAlpha,
        mix: 1 / (1 + Math.exp(-p.mixAlpha)),
      };
    }),
  };
}

const FORMAT_TEXT: Record<AdapterDescription['format'], string> = {
  ours: 'ours (adapter_model.safetensors)',
  'scripts-pt': "the SYNAXIM scripts' (symbiotic_adapter.pt)",
  both: 'both (adapter_model.safetensors + symbiotic_adapter.pt, equal values)',
};

function num(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toPrecision(6);
}

export function renderAdapterDescription(d: AdapterDescription): string {
  const b = d.base_model;
  const lines = [
    `adapter: ${d.dir}`,
    `format: ${FORMAT_TEXT[d.format]}; adapter_config.json keys: ${d.config === 'ours' ? 'ours' : "the scripts'"}`,
    `base model: ${b.name ?? '(not recorded)'}${b.num_layers !== null ? `, ${b.num_layers} layers` : ''}; content hash ${b.content_hash ?? 'not recorded (applied unchecked)'}`,
    `hidden size: ${d.hidden_size}; adapted layers: ${d.layers.join(', ')} (${d.layers.length}); parameters: ${d.parameter_count}`,
    '',
  ];
  const header = ['layer', 'gate_bias', 'gate_scale', 'out_scale mean', 'min', 'max', 'mix_alpha', 'sigmoid(mix)'];
  const rows = d.per_layer.map((l) => [String(l.layer), num(l.gate_bias), num(l.gate_scale), num(l.output_scale.mean), num(l.output_scale.min), num(l.output_scale.max), num(l.mix_alpha), num(l.mix)]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [header, ...rows]) lines.push(r.map((c, i) => c.padStart(widths[i]!)).join('  '));
  return lines.join('\n') + '\n';
}
