/**
 * Describe a model directory (HF checkpoint or .symb conversion): every tensor's shape, storage
 * dtype and bytes, the parameter count, the total, and the size against the same model in FP16.
 * Reads headers and file sizes only, never the weights.
 */
import fs from 'node:fs';
import path from 'node:path';
import { type ModelConfig, parseHfConfig, readJsonFile } from './config.ts';
import { detectFormat } from './openModel.ts';
import { SafetensorsCheckpoint } from './safetensors.ts';
import { numelOf } from './symb.ts';
import { SymbWeights } from './symbModel.ts';
import { TOKENIZER_DIR, TOKENIZER_FILES } from './convert.ts';

export interface TensorDescription {
  /** HF tensor name (for .symb too, so the two formats line up). */
  name: string;
  /** File holding it, relative to the model directory. */
  file: string;
  shape: number[];
  /** Storage: an HF dtype ('BF16', 'F32', ...) or a .symb encoding ('int4/g128', 'int8', 'fp16', 'fp32'). */
  dtype: string;
  parameters: number;
  bytes: number;
}

export interface ModelDescription {
  dir: string;
  format: 'hf' | 'symb';
  /** Main storage, e.g. 'BF16' or 'int4/g128'. */
  storage: string;
  config: ModelConfig;
  tensors: TensorDescription[];
  parameterCount: number;
  /** Bytes of tensor data (safetensors payloads, .symb files). */
  totalBytes: number;
  /** What the same parameters take in FP16. */
  fp16Bytes: number;
  /** fp16Bytes / totalBytes: how many times smaller than FP16 (< 1: larger). */
  compressionVsFp16: number;
  bitsPerParameter: number;
  tokenizerFiles: string[];
}

function describeHf(dir: string): Omit<ModelDescription, 'parameterCount' | 'totalBytes' | 'fp16Bytes' | 'compressionVsFp16' | 'bitsPerParameter'> {
  const configPath = path.join(dir, 'config.json');
  const config = parseHfConfig(readJsonFile(configPath, { within: dir }), configPath);
  const ckpt = SafetensorsCheckpoint.open(dir);
  try {
    const tensors = ckpt.names().map((name) => {
      const info = ckpt.info(name);
      return { name, file: path.relative(dir, ckpt.file(name)), shape: info.shape, dtype: info.dtype, parameters: numelOf(info.shape), bytes: info.byteLength };
    });
    const embed = tensors.find((t) => t.name === 'model.embed_tokens.weight');
    const tokenizerFiles = TOKENIZER_FILES.filter((f) => fs.existsSync(path.join(dir, f)));
    return { dir, format: 'hf', storage: embed?.dtype ?? tensors[0]?.dtype ?? '?', config, tensors, tokenizerFiles };
  } finally {
    ckpt.close();
  }
}

function describeSymb(dir: string): Omit<ModelDescription, 'parameterCount' | 'totalBytes' | 'fp16Bytes' | 'compressionVsFp16' | 'bitsPerParameter'> {
  const model = new SymbWeights(dir); // validates every file's size and header
  const tensors = model.specs.map((s) => {
    const enc = model.encodingOf(s);
    return {
      name: s.hfName,
      file: s.file,
      shape: s.shape,
      dtype: enc.method === 'int4' ? `int4/g${enc.groupSize}` : enc.method,
      parameters: numelOf(s.shape),
      bytes: fs.statSync(path.join(dir, s.file)).size,
    };
  });
  const tokDir = path.join(dir, TOKENIZER_DIR);
  const tokenizerFiles = fs.existsSync(tokDir) ? fs.readdirSync(tokDir).sort().map((f) => `${TOKENIZER_DIR}/${f}`) : [];
  return { dir, format: 'symb', storage: model.storage, config: model.config, tensors, tokenizerFiles };
}

/** Describe an HF or .symb model directory. */
export function describeModel(dir: string): ModelDescription {
  const base = detectFormat(dir) === 'hf' ? describeHf(dir) : describeSymb(dir);
  const parameterCount = base.tensors.reduce((a, t) => a + t.parameters, 0);
  const totalBytes = base.tensors.reduce((a, t) => a + t.bytes, 0);
  const fp16Bytes = 2 * parameterCount;
  return {
    ...base,
    parameterCount,
    totalBytes,
    fp16Bytes,
    compressionVsFp16: totalBytes > 0 ? fp16Bytes / totalBytes : 0,
    bitsPerParameter: parameterCount > 0 ? (8 * totalBytes) / parameterCount : 0,
  };
}

/** 1234567 -> '1.23 M' (parameters), 3850000000 -> '3.85 GB'. */
function si(n: number, unit: string): string {
  const steps: [number, string][] = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [v, p] of steps) if (n >= v) return `${(n / v).toFixed(2)} ${p}${unit}`;
  return `${n} ${unit}`.trimEnd();
}

/** Human-readable rendering: a summary, then one line per tensor. */
export function renderDescription(d: ModelDescription): string {
  const c = d.config;
  const lines: string[] = [];
  lines.push(`${d.dir}: ${d.format === 'hf' ? 'Hugging Face checkpoint' : 'SYNAXIM .symb'} (${d.storage})`);
  lines.push(
    `  ${c.architecture}: hidden ${c.hiddenSize}, ${c.numLayers} layers, ${c.numHeads} query / ${c.numKvHeads} kv heads, head_dim ${c.headDim}, ` +
      `MLP ${c.intermediateSize}, vocab ${c.vocabSize}, ${c.tieWordEmbeddings ? 'tied' : 'untied'} embeddings${c.attentionBias ? ', q/k/v biases' : ''}`,
  );
  lines.push(`  parameters: ${d.parameterCount.toLocaleString('en-US')} (${si(d.parameterCount, '')})`);
  lines.push(`  tensor bytes: ${d.totalBytes.toLocaleString('en-US')} (${si(d.totalBytes, 'B')}), ${d.bitsPerParameter.toFixed(2)} bits/parameter`);
  const ratio = d.compressionVsFp16;
  const vs = Math.abs(ratio - 1) < 0.005 ? 'the same size' : ratio > 1 ? `${ratio.toFixed(2)}x smaller` : `${(1 / ratio).toFixed(2)}x larger`;
  lines.push(`  vs FP16 (${si(d.fp16Bytes, 'B')}): ${vs}`);
  lines.push(`  tokenizer: ${d.tokenizerFiles.length ? d.tokenizerFiles.join(', ') : 'none'}`);
  lines.push('');
  const rows = d.tensors.map((t) => [d.format === 'symb' ? t.file : t.name, `[${t.shape.join(', ')}]`, t.dtype, t.parameters.toLocaleString('en-US'), t.bytes.toLocaleString('en-US')]);
  const header = [d.format === 'symb' ? 'file' : 'tensor', 'shape', 'dtype', 'parameters', 'bytes'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]) => '  ' + r.map((x, i) => (i >= 3 ? x.padStart(widths[i]!) : x.padEnd(widths[i]!))).join('  ').trimEnd();
  lines.push(fmt(header));
  for (const r of rows) lines.push(fmt(r));
  return lines.join('\n') + '\n';
}
