/**
 * The bad-input suite (issue 7 item 1, issue 2 "Bad input"): every case writes one hostile model
 * directory (a copy of the tiny fixture with one thing broken), runs the real CLI on it as a child
 * process, and asserts what the CLI promises for errors a user can cause:
 *   - exit code 1 (not 0: silently accepted; not 2: an internal error),
 *   - stderr is exactly one `synaxim: error: ...` line (besides the `synaxim: backend ...` line
 *     commands that compute print first), naming the offending file and the problem,
 *   - no stack trace (only --debug shows one),
 *   - nothing left in the output directory (no finished-looking file, no temp file),
 *   - done in seconds (the child is killed, and the case fails, after CASE_TIMEOUT_MS).
 * Pristine copies of the same fixtures must pass every command (controls), so each failure is the
 * hostile edit's doing. The number of cases is printed (it goes in the README).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeFixture } from '../src/formats/fixture.ts';
import { readAllFloat32, requireFiniteWeights } from '../src/formats/safetensors.ts';
import { SynaximError } from '../src/util/errors.ts';
import {
  CliWorker,
  copyDir,
  editJson,
  editSafetensorsHeader,
  int4HeaderFields,
  int8FileBytes,
  makeTempDir,
  mapLimit,
  problemLines,
  readRawSafetensors,
  runCli,
  setF16Bits,
  setF32Element,
  setInt4HeaderField,
  setInt4Scale,
  shardCheckpoint,
  tensorEntry,
  tensorsByOffset,
  truncateFile,
  writeIndex,
  writeRawSafetensors,
  type CliResult,
  dropTensor,
  addTensor,
} from './helpers/badFiles.ts';

/**
 * Only catches hangs (a case takes well under a second idle): generous, so that a loaded machine gives
 * the same verdict. CliWorker and runCli add COLD_START_MS for process start-up on top.
 */
const CASE_TIMEOUT_MS = 60_000;
/**
 * Every case runs through the CLI's main() in a long-lived child process (CliWorker: one Node +
 * tsx + tfjs start for the lot; an invocation that hangs gets the child killed); every
 * SUBPROCESS_EVERY-th case also runs as its own `node bin/synaxim.js` process, which must print the
 * same line with the same exit code. Two workers in parallel (the machine has 2 shared cores).
 */
const LANES = 2;
const SUBPROCESS_EVERY = 12;

type Base = 'hf' | 'symb' | 'sharded';
type Command = 'inspect' | 'forward' | 'convert' | 'generate' | 'generate-text';

interface BadCase {
  name: string;
  base: Base;
  /** Default: forward (opens the model, reads every layer, computes). */
  cmd?: Command;
  /** forward --ids / generate --prompt-ids (default 1,2,3 / 1). */
  ids?: string;
  /** Break the copy in `m` (the model directory); `outside` is a directory beside it, outside the model. */
  setup: (m: string, outside: string) => void;
  /** What the error line must name: a path relative to the model directory ('' = the directory), or a literal flag like '--ids'. */
  names: string;
  /** The problem, as the error line states it. */
  problem: RegExp;
}

const ST = 'model.safetensors';
const SHARD1 = 'model-00001-of-00002.safetensors';
const SHARD2 = 'model-00002-of-00002.safetensors';
const INDEX = 'model.safetensors.index.json';
const SYMB_CONFIG = 'config.symb.json';
const L = (l: number, file: string) => `layers/layer_0${l}/${file}.symb`;
const st = (m: string) => path.join(m, ST);

const CASES: BadCase[] = [
  // ---- safetensors: the header ---------------------------------------------------------------
  { name: 'safetensors: header length runs past the end of the file', base: 'hf', cmd: 'inspect', names: ST, problem: /header length \d+ runs past the end of the file/,
    setup: (m) => { const b = fs.readFileSync(st(m)); b.writeBigUInt64LE(BigInt(b.length)); fs.writeFileSync(st(m), b); } },
  { name: 'safetensors: header length > 100 MB', base: 'hf', names: ST, problem: /header length 200000000 exceeds the 100 MB limit/,
    setup: (m) => { const b = fs.readFileSync(st(m)); b.writeBigUInt64LE(200_000_000n); fs.writeFileSync(st(m), b); } },
  { name: 'safetensors: header length 2^64-1', base: 'hf', cmd: 'inspect', names: ST, problem: /exceeds the 100 MB limit/,
    setup: (m) => { const b = fs.readFileSync(st(m)); b.writeBigUInt64LE(2n ** 64n - 1n); fs.writeFileSync(st(m), b); } },
  { name: 'safetensors: file shorter than the 8-byte length', base: 'hf', names: ST, problem: /too small to be a safetensors file \(5 bytes\)/,
    setup: (m) => truncateFile(st(m), 5) },
  { name: 'safetensors: empty file', base: 'hf', cmd: 'convert', names: ST, problem: /too small to be a safetensors file \(0 bytes\)/,
    setup: (m) => truncateFile(st(m), 0) },
  { name: 'safetensors: header is invalid JSON', base: 'hf', names: ST, problem: /header is not valid JSON/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => JSON.stringify(h).slice(0, -1) + ',}') },
  { name: 'safetensors: header is not UTF-8', base: 'hf', cmd: 'inspect', names: ST, problem: /header is not valid UTF-8/,
    setup: (m) => { const b = fs.readFileSync(st(m)); b[12] = 0xff; fs.writeFileSync(st(m), b); } },
  { name: 'safetensors: header is a JSON array', base: 'hf', names: ST, problem: /header must be a JSON object/,
    setup: (m) => editSafetensorsHeader(st(m), () => '[]', () => new Uint8Array(0)) },
  { name: 'safetensors: unknown dtype', base: 'hf', cmd: 'inspect', names: ST, problem: /tensor 'model.norm.weight': unknown dtype "F8_E9M9"/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => void (tensorEntry(h, 'model.norm.weight').dtype = 'F8_E9M9')) },
  { name: 'safetensors: integer dtype for a weight', base: 'hf', names: ST, problem: /tensor 'model.layers.1.mlp.up_proj.weight' has dtype I32; model weights must be F32/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => void (tensorEntry(h, 'model.layers.1.mlp.up_proj.weight').dtype = 'I32')) },
  { name: 'safetensors: overlapping offsets', base: 'hf', names: ST, problem: /overlaps the previous tensor/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => {
      const [a, b] = tensorsByOffset(h).map((n) => tensorEntry(h, n));
      const len = b!.data_offsets[1] - b!.data_offsets[0];
      b!.data_offsets = [a!.data_offsets[1] - 4, a!.data_offsets[1] - 4 + len];
    }) },
  { name: 'safetensors: offsets out of range', base: 'hf', cmd: 'inspect', names: ST, problem: /data_offsets \[\d+, \d+\] run past the end of the file/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => {
      const last = tensorEntry(h, tensorsByOffset(h).at(-1)!);
      const len = last.data_offsets[1] - last.data_offsets[0];
      last.data_offsets = [last.data_offsets[0] + 1024, last.data_offsets[0] + 1024 + len];
    }) },
  { name: 'safetensors: gap between tensors', base: 'hf', names: ST, problem: /gap of 16 bytes before tensor '[^']+' \(tensors must be contiguous\)/,
    setup: (m) => {
      const first = tensorsByOffset(readRawSafetensors(st(m)).header)[0]!;
      let split = 0;
      editSafetensorsHeader(st(m), (h) => {
        split = tensorEntry(h, first).data_offsets[1];
        for (const n of tensorsByOffset(h).slice(1)) tensorEntry(h, n).data_offsets = tensorEntry(h, n).data_offsets.map((o) => o + 16) as [number, number];
      }, (d) => Buffer.concat([d.subarray(0, split), Buffer.alloc(16), d.subarray(split)]));
    } },
  { name: 'safetensors: shape × dtype disagrees with the byte span', base: 'hf', names: ST, problem: /tensor 'model.norm.weight': shape \[63\] × F32 is 252 bytes but data_offsets span 256/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => void (tensorEntry(h, 'model.norm.weight').shape = [63])) },
  { name: 'safetensors: end offset before begin', base: 'hf', cmd: 'inspect', names: ST, problem: /end before they begin/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => { const e = tensorEntry(h, 'model.norm.weight'); e.data_offsets = [e.data_offsets[1], e.data_offsets[0]]; }) },
  { name: 'safetensors: fractional offsets', base: 'hf', names: ST, problem: /data_offsets must be two non-negative integers/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => void (tensorEntry(h, 'model.norm.weight').data_offsets[0] += 0.5)) },
  { name: 'safetensors: negative dimension', base: 'hf', cmd: 'inspect', names: ST, problem: /shape must be a list of non-negative integers/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => void (tensorEntry(h, 'model.norm.weight').shape = [-64])) },
  { name: 'safetensors: tensor entry is not an object', base: 'hf', names: ST, problem: /tensor 'bogus': entry must be an object/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => void (h.bogus = 5)) },
  { name: 'safetensors: duplicate tensor names', base: 'hf', cmd: 'inspect', names: ST, problem: /duplicate tensor name 'model.norm.weight'/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => {
      const text = JSON.stringify(h);
      return text.slice(0, -1) + `,"model.norm.weight":${JSON.stringify(tensorEntry(h, 'model.norm.weight'))}}`;
    }) },
  { name: 'safetensors: __metadata__ value not a string', base: 'hf', names: ST, problem: /__metadata__ value for "format" is not a string/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => void (h.__metadata__ = { format: 1 })) },
  { name: 'safetensors: a tensor name with a newline and a terminal escape', base: 'hf', cmd: 'inspect', names: ST, problem: /tensor name "evil\\n\\u001b\[2Jname" contains control characters/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => {
      h['evil\n\u001b[2Jname'] = h['model.norm.weight'];
      delete h['model.norm.weight'];
    }) },
  { name: 'safetensors: __metadata__ not a map', base: 'hf', cmd: 'convert', names: ST, problem: /__metadata__ must be a string→string map/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => void (h.__metadata__ = ['pt'])) },
  { name: 'safetensors: bytes after the last tensor', base: 'hf', names: ST, problem: /has 10 bytes after the last tensor/,
    setup: (m) => fs.appendFileSync(st(m), Buffer.alloc(10)) },
  { name: 'safetensors: truncated in the tensor data', base: 'hf', cmd: 'convert', names: ST, problem: /run past the end of the file/,
    setup: (m) => truncateFile(st(m), fs.statSync(st(m)).size - 100) },
  { name: 'safetensors: model.safetensors is a directory', base: 'hf', names: ST, problem: /not a regular file/,
    setup: (m) => { fs.rmSync(st(m)); fs.mkdirSync(st(m)); } },

  // ---- sharded checkpoints ----------------------------------------------------------------------
  { name: 'sharded: index names a missing shard', base: 'sharded', names: INDEX, problem: /names shard 'model-00003-of-00003.safetensors', which does not exist/,
    setup: (m) => editJson(path.join(m, INDEX), (j) => void ((j.weight_map as Record<string, string>)['model.norm.weight'] = 'model-00003-of-00003.safetensors')) },
  { name: 'sharded: a tensor in two shards', base: 'sharded', cmd: 'inspect', names: INDEX, problem: /tensor 'model.embed_tokens.weight' appears in two shards/,
    setup: (m) => {
      const one = readRawSafetensors(path.join(m, SHARD1));
      const two = readRawSafetensors(path.join(m, SHARD2));
      const e = tensorEntry(one.header, 'model.embed_tokens.weight');
      const bytes = one.data.subarray(e.data_offsets[0], e.data_offsets[1]);
      two.header['model.embed_tokens.weight'] = { ...e, data_offsets: [two.data.length, two.data.length + bytes.length] };
      writeRawSafetensors(path.join(m, SHARD2), two.header, Buffer.concat([two.data, bytes]));
    } },
  { name: 'sharded: index shard escapes the directory (../)', base: 'sharded', names: INDEX, problem: /shard "\.\.\/x\.safetensors" is not a plain file name in this directory/,
    setup: (m, outside) => {
      fs.copyFileSync(path.join(m, SHARD2), path.join(outside, 'x.safetensors'));
      editJson(path.join(m, INDEX), (j) => { const w = j.weight_map as Record<string, string>; for (const k in w) if (w[k] === SHARD2) w[k] = '../x.safetensors'; });
    } },
  { name: 'sharded: index shard is an absolute path', base: 'sharded', cmd: 'convert', names: INDEX, problem: /is not a plain file name in this directory/,
    setup: (m) => editJson(path.join(m, INDEX), (j) => void ((j.weight_map as Record<string, string>)['model.norm.weight'] = '/etc/passwd')) },
  { name: 'sharded: index shard is an empty name', base: 'sharded', names: INDEX, problem: /shard "" is not a plain file name/,
    setup: (m) => editJson(path.join(m, INDEX), (j) => void ((j.weight_map as Record<string, string>)['model.norm.weight'] = '')) },
  { name: 'sharded: index is invalid JSON', base: 'sharded', cmd: 'inspect', names: INDEX, problem: /invalid JSON/,
    setup: (m) => fs.writeFileSync(path.join(m, INDEX), '{"weight_map": {') },
  { name: 'sharded: index names a tensor with a newline', base: 'sharded', cmd: 'inspect', names: INDEX, problem: /tensor name "model.norm.weight\\nFAKE: all good" contains control characters/,
    setup: (m) => editJson(path.join(m, INDEX), (j) => void ((j.weight_map as Record<string, string>)['model.norm.weight\nFAKE: all good'] = SHARD1)) },
  { name: 'sharded: index has no weight_map', base: 'sharded', names: INDEX, problem: /missing 'weight_map' object/,
    setup: (m) => fs.writeFileSync(path.join(m, INDEX), '{"metadata": {}}') },
  { name: 'sharded: index names the wrong shard for a tensor', base: 'sharded', names: SHARD1, problem: /tensor 'model.embed_tokens.weight' is in this shard but the index names 'model-00002-of-00002.safetensors'/,
    setup: (m) => editJson(path.join(m, INDEX), (j) => void ((j.weight_map as Record<string, string>)['model.embed_tokens.weight'] = SHARD2)) },
  { name: 'sharded: index names a tensor no shard holds', base: 'sharded', cmd: 'inspect', names: INDEX, problem: /tensor 'model.extra.weight' is not in its shard/,
    setup: (m) => editJson(path.join(m, INDEX), (j) => void ((j.weight_map as Record<string, string>)['model.extra.weight'] = SHARD1)) },
  { name: 'sharded: a shard is truncated', base: 'sharded', names: SHARD2, problem: /run past the end of the file/,
    setup: (m) => truncateFile(path.join(m, SHARD2), fs.statSync(path.join(m, SHARD2)).size - 4) },

  // ---- .symb files ------------------------------------------------------------------------------
  { name: 'symb: int4 file truncated', base: 'symb', names: L(1, 'attn_q'), problem: /implies \d+ bytes \(truncated\)/,
    setup: (m) => truncateFile(path.join(m, L(1, 'attn_q')), 1000) },
  { name: 'symb: int4 file shorter than its header', base: 'symb', cmd: 'inspect', names: L(0, 'mlp_up'), problem: /10 bytes \(truncated\?\), but config.symb.json declares int4 \(group size 32\) \[176, 64\]/,
    setup: (m) => truncateFile(path.join(m, L(0, 'mlp_up')), 10) },
  { name: 'symb: empty .symb file', base: 'symb', cmd: 'generate', names: L(3, 'mlp_down'), problem: /0 bytes \(truncated\?\)/,
    setup: (m) => truncateFile(path.join(m, L(3, 'mlp_down')), 0) },
  { name: 'symb: int4 group count disagrees with the size', base: 'symb', names: L(2, 'attn_v'), problem: /corrupt int4 header: num_groups 65, group_size 32, numel 2048/,
    setup: (m) => setInt4HeaderField(path.join(m, L(2, 'attn_v')), 0, 65) },
  { name: 'symb: int4 numel disagrees with the size', base: 'symb', cmd: 'inspect', names: L(2, 'attn_o'), problem: /corrupt int4 header/,
    setup: (m) => setInt4HeaderField(path.join(m, L(2, 'attn_o')), 2, 4097) },
  { name: 'symb: int4 group_size disagrees with config.symb.json', base: 'symb', names: L(0, 'attn_q'), problem: /corrupt int4 header|group_size/,
    setup: (m) => setInt4HeaderField(path.join(m, L(0, 'attn_q')), 1, 64) },
  { name: 'symb: int4 header shape disagrees with config.symb.json', base: 'symb', names: L(1, 'mlp_gate'), problem: /int4 header shape 64x176 disagrees with config.symb.json shape \[176, 64\]/,
    setup: (m) => { const f = path.join(m, L(1, 'mlp_gate')); const [, , , d0, d1] = int4HeaderFields(f); setInt4HeaderField(f, 3, d1!); setInt4HeaderField(f, 4, d0!); } },
  { name: 'symb: int8 file where int4 is declared', base: 'symb', names: L(0, 'attn_k'), problem: /2052 bytes is the size of an int8 \[32, 64\] tensor, but config.symb.json declares int4/,
    setup: (m) => fs.writeFileSync(path.join(m, L(0, 'attn_k')), int8FileBytes(32 * 64)) },
  { name: 'symb: fp16 norm truncated', base: 'symb', cmd: 'inspect', names: L(2, 'norm_attn'), problem: /126 bytes \(truncated\?\), but config.symb.json declares fp16 \[64\]/,
    setup: (m) => truncateFile(path.join(m, L(2, 'norm_attn')), 126) },
  { name: 'symb: final_norm too long', base: 'symb', names: 'final_norm.symb', problem: /130 bytes \(too long\)/,
    setup: (m) => fs.appendFileSync(path.join(m, 'final_norm.symb'), Buffer.alloc(2)) },
  { name: 'symb: embeddings truncated', base: 'symb', cmd: 'generate', names: 'embeddings.symb', problem: /truncated/,
    setup: (m) => truncateFile(path.join(m, 'embeddings.symb'), 5000) },
  { name: 'symb: a layer file is missing', base: 'symb', names: L(2, 'mlp_down'), problem: /missing .symb file/,
    setup: (m) => fs.rmSync(path.join(m, L(2, 'mlp_down'))) },
  { name: 'symb: a layer directory is missing', base: 'symb', cmd: 'inspect', names: L(3, 'attn_q'), problem: /missing .symb file/,
    setup: (m) => fs.rmSync(path.join(m, 'layers/layer_03'), { recursive: true }) },
  { name: 'symb: a layer file is a directory', base: 'symb', names: L(1, 'attn_k'), problem: /not a file/,
    setup: (m) => { fs.rmSync(path.join(m, L(1, 'attn_k'))); fs.mkdirSync(path.join(m, L(1, 'attn_k'))); } },
  { name: 'symb: lm_head.symb missing for an untied model', base: 'symb', names: 'lm_head.symb', problem: /missing .symb file/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.tie_word_embeddings = false)) },
  { name: 'symb: config.symb.json quantization missing', base: 'symb', names: SYMB_CONFIG, problem: /missing 'quantization'/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void delete j.quantization) },
  { name: 'symb: unknown quantization method', base: 'symb', cmd: 'inspect', names: SYMB_CONFIG, problem: /quantization.method "int3" is not one of int4, int8, fp16, fp32/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void ((j.quantization as Record<string, unknown>).method = 'int3')) },
  { name: 'symb: quantization group_size 0', base: 'symb', names: SYMB_CONFIG, problem: /quantization.group_size must be a positive integer, got 0/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void ((j.quantization as Record<string, unknown>).group_size = 0)) },
  { name: 'symb: int4 quantization declared for an int8 conversion', base: 'symb', cmd: 'inspect', names: 'embeddings.symb', problem: /20484 bytes is the size of an int8 \[320, 64\] tensor, but config.symb.json declares int4/,
    setup: (m) => {
      // every 2-D file rewritten as int8, config still says int4
      for (let l = 0; l < 4; l++) for (const [f, n] of [['attn_q', 64 * 64], ['attn_k', 32 * 64], ['attn_v', 32 * 64], ['attn_o', 64 * 64], ['mlp_gate', 176 * 64], ['mlp_up', 176 * 64], ['mlp_down', 64 * 176]] as const) {
        fs.writeFileSync(path.join(m, L(l, f)), int8FileBytes(n));
      }
      fs.writeFileSync(path.join(m, 'embeddings.symb'), int8FileBytes(320 * 64));
    } },

  // ---- config.json ------------------------------------------------------------------------------
  { name: 'config.json: missing hidden_size', base: 'hf', names: 'config.json', problem: /missing required field 'hidden_size'/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void delete j.hidden_size) },
  { name: 'config.json: missing vocab_size', base: 'hf', cmd: 'inspect', names: 'config.json', problem: /missing required field 'vocab_size'/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void delete j.vocab_size) },
  { name: 'config.json: hidden_size 0', base: 'hf', cmd: 'convert', names: 'config.json', problem: /'hidden_size' must be a positive integer, got 0/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.hidden_size = 0)) },
  { name: 'config.json: negative num_hidden_layers', base: 'hf', names: 'config.json', problem: /'num_hidden_layers' must be a positive integer, got -2/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.num_hidden_layers = -2)) },
  { name: 'config.json: vocab_size is a string', base: 'hf', cmd: 'generate', names: 'config.json', problem: /'vocab_size' must be a positive integer, got "320"/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.vocab_size = '320')) },
  { name: 'config.json: negative rms_norm_eps', base: 'hf', names: 'config.json', problem: /'rms_norm_eps' must be a positive number/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.rms_norm_eps = -1e-5)) },
  { name: 'config.json: head_dim 0', base: 'hf', names: 'config.json', problem: /'head_dim' must be a positive integer, got 0/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.head_dim = 0)) },
  { name: 'config.json: heads do not divide hidden_size', base: 'hf', cmd: 'inspect', names: 'config.json', problem: /hidden_size \(64\) is not divisible by num_attention_heads \(7\)/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => { delete j.head_dim; j.num_attention_heads = 7; j.num_key_value_heads = 7; }) },
  { name: 'config.json: kv heads do not divide heads', base: 'hf', names: 'config.json', problem: /num_attention_heads \(8\) is not a multiple of num_key_value_heads \(3\)/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.num_key_value_heads = 3)) },
  { name: 'config.json: unknown architecture', base: 'hf', cmd: 'convert', names: 'config.json', problem: /unsupported architecture "GPT2LMHeadModel"/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => { j.architectures = ['GPT2LMHeadModel']; delete j.model_type; }) },
  { name: 'config.json: unknown model_type', base: 'hf', names: 'config.json', problem: /unsupported model_type "falcon"/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => { delete j.architectures; j.model_type = 'falcon'; }) },
  { name: 'config.json: unknown rope_scaling type', base: 'hf', names: 'config.json', problem: /unsupported rope_scaling type "yarn"/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.rope_scaling = { rope_type: 'yarn', factor: 4 })) },
  { name: 'config.json: llama3 rope_scaling without factor', base: 'hf', cmd: 'inspect', names: 'config.json', problem: /missing required field 'factor'/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.rope_scaling = { rope_type: 'llama3', low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 })) },
  { name: 'config.json: unsupported hidden_act', base: 'hf', names: 'config.json', problem: /unsupported hidden_act "gelu"/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.hidden_act = 'gelu')) },
  { name: 'config.json: bos_token_id outside the vocabulary', base: 'hf', names: 'config.json', problem: /bos_token_id 999 is outside the vocabulary \(320\)/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.bos_token_id = 999)) },
  { name: 'config.json: invalid JSON', base: 'hf', cmd: 'generate', names: 'config.json', problem: /invalid JSON/,
    setup: (m) => fs.writeFileSync(path.join(m, 'config.json'), '{"hidden_size": 64,') },
  { name: 'config.json: a stray byte in pretty-printed JSON (error stays one line)', base: 'hf', names: 'config.json', problem: /invalid JSON \(Unexpected token/,
    setup: (m) => { const f = path.join(m, 'config.json'); fs.writeFileSync(f, fs.readFileSync(f, 'utf8').replace('"model_type": "llama"', '"model_type": #"llama"')); } },
  { name: 'config.json: a JSON array', base: 'hf', cmd: 'inspect', names: 'config.json', problem: /config must be a JSON object/,
    setup: (m) => fs.writeFileSync(path.join(m, 'config.json'), '[1, 2]') },
  { name: 'config.json: JSON null', base: 'hf', cmd: 'generate-text', names: 'config.json', problem: /config must be a JSON object/,
    setup: (m) => fs.writeFileSync(path.join(m, 'config.json'), 'null') },
  { name: 'config.json: missing (no config at all)', base: 'hf', names: '', problem: /not a model directory|neither config.json/,
    setup: (m) => fs.rmSync(path.join(m, 'config.json')) },

  // ---- config.symb.json -------------------------------------------------------------------------
  { name: 'config.symb.json: missing vocab_size', base: 'symb', names: SYMB_CONFIG, problem: /missing required field 'vocab_size'/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void delete j.vocab_size) },
  { name: 'config.symb.json: negative hidden_size', base: 'symb', cmd: 'inspect', names: SYMB_CONFIG, problem: /'hidden_size' must be a positive integer, got -64/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.hidden_size = -64)) },
  { name: 'config.symb.json: num_layers 0', base: 'symb', names: SYMB_CONFIG, problem: /'num_layers' must be a positive integer, got 0/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => { j.num_layers = 0; j.layer_types = []; }) },
  { name: 'config.symb.json: heads do not divide hidden_size', base: 'symb', names: SYMB_CONFIG, problem: /hidden_size \(64\) is not divisible by num_attention_heads \(7\)/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => { delete j.head_dim; j.num_attention_heads = 7; j.num_key_value_heads = 7; }) },
  { name: 'config.symb.json: unknown architecture', base: 'symb', cmd: 'inspect', names: SYMB_CONFIG, problem: /unsupported architecture "moe"/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.architecture = 'moe')) },
  { name: 'config.symb.json: unknown rope_scaling type', base: 'symb', names: SYMB_CONFIG, problem: /unsupported rope_scaling type "dynamic"/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.rope_scaling = { type: 'dynamic', factor: 2 })) },
  { name: 'config.symb.json: layer_types disagree with num_layers', base: 'symb', names: SYMB_CONFIG, problem: /layer_types has 4 entries for num_layers 5/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.num_layers = 5)) },
  { name: 'config.symb.json: one more layer than the files', base: 'symb', cmd: 'generate', names: L(4, 'attn_q'), problem: /missing .symb file/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => { j.num_layers = 5; delete j.layer_types; }) },
  { name: 'config.symb.json: num_layers 10^8 (no minutes-long listing)', base: 'symb', cmd: 'inspect', names: SYMB_CONFIG, problem: /'num_layers' is 100000000, more than the 4096 layers any real model has/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => { j.num_layers = 100000000; delete j.layer_types; }) },
  { name: 'config.symb.json: num_layers 4000 (the last layer is checked first)', base: 'symb', names: 'layers/layer_3999/attn_q.symb', problem: /missing .symb file \(config.symb.json declares 4000 layers\)/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => { j.num_layers = 4000; delete j.layer_types; }) },
  { name: 'config.symb.json: layer_dir_pattern field width 999999999', base: 'symb', names: SYMB_CONFIG, problem: /field width 999999999 is too large/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.layer_dir_pattern = 'layers/layer_{:0999999999d}')) },
  { name: 'config.symb.json: shape disagrees with the files (intermediate_size)', base: 'symb', names: L(0, 'mlp_gate'), problem: /int4 header shape 176x64 disagrees with config.symb.json shape \[160, 64\]/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.intermediate_size = 160)) },
  { name: 'config.symb.json: invalid JSON', base: 'symb', cmd: 'generate-text', names: SYMB_CONFIG, problem: /invalid JSON/,
    setup: (m) => fs.writeFileSync(path.join(m, SYMB_CONFIG), '{"vocab_size": 320, ]') },
  { name: 'config.symb.json: engine_name not SYNAXIM', base: 'symb', names: SYMB_CONFIG, problem: /engine_name is "OTHER"/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.engine_name = 'OTHER')) },

  // ---- tokenizer --------------------------------------------------------------------------------
  { name: 'tokenizer.json missing (generate --prompt)', base: 'hf', cmd: 'generate-text', names: '', problem: /--prompt: model .* has no tokenizer; use --prompt-ids/,
    setup: (m) => fs.rmSync(path.join(m, 'tokenizer.json')) },
  { name: 'tokenizer.json invalid JSON', base: 'hf', cmd: 'generate-text', names: 'tokenizer.json', problem: /invalid JSON/,
    setup: (m) => fs.writeFileSync(path.join(m, 'tokenizer.json'), fs.readFileSync(path.join(m, 'tokenizer.json')).subarray(0, 3000)) },
  { name: 'tokenizer.json with a nonsense model', base: 'hf', cmd: 'generate-text', names: 'tokenizer.json', problem: /not a usable tokenizer/,
    setup: (m) => fs.writeFileSync(path.join(m, 'tokenizer.json'), JSON.stringify({ version: '1.0', model: { type: 'BPE', vocab: 5, merges: 'x' } })) },
  { name: 'tokenizer.json without a model', base: 'symb', cmd: 'generate-text', names: 'tokenizer/tokenizer.json', problem: /not a usable tokenizer \(missing 'model'\)/,
    setup: (m) => fs.writeFileSync(path.join(m, 'tokenizer/tokenizer.json'), '{"version": "1.0"}') },
  { name: 'tokenizer_config.json invalid JSON', base: 'hf', cmd: 'generate-text', names: 'tokenizer_config.json', problem: /invalid JSON/,
    setup: (m) => fs.writeFileSync(path.join(m, 'tokenizer_config.json'), '{"bos_token": ') },
  { name: 'tokenizer_config.json: bos_token not in the vocabulary', base: 'hf', cmd: 'generate-text', names: 'tokenizer_config.json', problem: /bos_token "<nope>" is not in the vocabulary/,
    setup: (m) => editJson(path.join(m, 'tokenizer_config.json'), (j) => void (j.bos_token = '<nope>')) },

  // ---- token ids --------------------------------------------------------------------------------
  { name: 'forward --ids outside the vocabulary', base: 'hf', ids: '1,99999', names: '--ids', problem: /token id 99999 at position 1 is outside the vocabulary \(0\.\.319\)/, setup: () => {} },
  { name: 'generate --prompt-ids outside the vocabulary', base: 'symb', cmd: 'generate', ids: '320', names: '--prompt-ids', problem: /token id 320 at position 0 is outside the vocabulary/, setup: () => {} },
  { name: 'forward --ids not a number', base: 'hf', ids: '1,x,3', names: '--ids', problem: /'x' is not a non-negative integer token id/, setup: () => {} },

  // ---- tensors missing or the wrong shape -------------------------------------------------------
  { name: 'a tensor missing from the checkpoint', base: 'hf', names: ST, problem: /missing tensor 'model.layers.3.mlp.up_proj.weight'/,
    setup: (m) => dropTensor(st(m), 'model.layers.3.mlp.up_proj.weight') },
  { name: 'the embedding missing from the checkpoint', base: 'hf', cmd: 'convert', names: ST, problem: /missing tensor 'model.embed_tokens.weight'/,
    setup: (m) => dropTensor(st(m), 'model.embed_tokens.weight') },
  { name: 'a tensor shape disagrees with config.json (same bytes)', base: 'hf', names: ST, problem: /tensor 'model.layers.2.self_attn.q_proj.weight' has shape \[32, 128\] but config.json implies \[64, 64\]/,
    setup: (m) => editSafetensorsHeader(st(m), (h) => void (tensorEntry(h, 'model.layers.2.self_attn.q_proj.weight').shape = [32, 128])) },
  { name: 'config.json vocab_size disagrees with the embedding', base: 'hf', cmd: 'generate', names: ST, problem: /tensor 'model.embed_tokens.weight' has shape \[320, 64\] but config.json implies \[300, 64\]/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.vocab_size = 300)) },
  { name: 'config.json: num_hidden_layers 10^8 (convert)', base: 'hf', cmd: 'convert', names: 'config.json', problem: /'num_hidden_layers' is 100000000, more than the 4096 layers/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.num_hidden_layers = 100000000)) },
  { name: 'config.json: num_hidden_layers 4000 (fails at the first missing layer)', base: 'hf', names: ST, problem: /missing tensor 'model.layers.4.input_layernorm.weight'/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.num_hidden_layers = 4000)) },
  { name: 'config.json: one more layer than the checkpoint', base: 'hf', names: ST, problem: /missing tensor 'model.layers.4.input_layernorm.weight'/,
    setup: (m) => editJson(path.join(m, 'config.json'), (j) => void (j.num_hidden_layers = 5)) },
  { name: 'an unexpected tensor (convert)', base: 'hf', cmd: 'convert', names: ST, problem: /unexpected tensor 'model.layers.0.mlp.experts.0.weight'/,
    setup: (m) => addTensor(st(m), 'model.layers.0.mlp.experts.0.weight', [4, 4]) },

  // ---- NaN / Inf in weights ---------------------------------------------------------------------
  { name: 'NaN in a layer weight (HF)', base: 'hf', names: ST, problem: /tensor 'model.layers.1.mlp.up_proj.weight' has a NaN at flat index 77 \(weights must be finite\)/,
    setup: (m) => setF32Element(st(m), 'model.layers.1.mlp.up_proj.weight', 77, NaN) },
  { name: '+Inf in the final norm (HF)', base: 'hf', cmd: 'generate', names: ST, problem: /tensor 'model.norm.weight' has an \+Inf at flat index 3/,
    setup: (m) => setF32Element(st(m), 'model.norm.weight', 3, Infinity) },
  { name: '-Inf in an embedding row used as lm_head (HF, tied)', base: 'hf', names: ST, problem: /tensor 'model.embed_tokens.weight' has an -Inf at flat index 12805/,
    setup: (m) => setF32Element(st(m), 'model.embed_tokens.weight', 200 * 64 + 5, -Infinity) },
  { name: 'NaN in an embedding row that is looked up (HF)', base: 'hf', ids: '2', names: ST, problem: /tensor 'model.embed_tokens.weight' has a NaN at flat index 129/,
    setup: (m) => setF32Element(st(m), 'model.embed_tokens.weight', 2 * 64 + 1, NaN) },
  { name: 'NaN in an int4 group scale (symb)', base: 'symb', names: L(1, 'attn_v'), problem: /tensor 'model.layers.1.self_attn.v_proj.weight' has a NaN/,
    setup: (m) => setInt4Scale(path.join(m, L(1, 'attn_v')), 3, NaN) },
  { name: 'Inf in an fp16 norm (symb)', base: 'symb', cmd: 'generate', names: L(3, 'norm_mlp'), problem: /tensor 'model.layers.3.post_attention_layernorm.weight' has an \+Inf at flat index 9/,
    setup: (m) => setF16Bits(path.join(m, L(3, 'norm_mlp')), 9, 0x7c00) },
  { name: 'Inf in an int4 embedding scale (symb, tied lm_head)', base: 'symb', names: 'embeddings.symb', problem: /tensor 'model.embed_tokens.weight' has an? [+-]?(NaN|Inf)/,
    setup: (m) => setInt4Scale(path.join(m, 'embeddings.symb'), 500, Infinity) },
  { name: 'NaN in a weight (convert to int4)', base: 'hf', cmd: 'convert', names: ST, problem: /tensor 'model.layers.0.self_attn.k_proj.weight'.*NaN/,
    setup: (m) => setF32Element(st(m), 'model.layers.0.self_attn.k_proj.weight', 5, NaN) },

  // ---- paths that escape the model directory ----------------------------------------------------
  { name: 'symb: layer_dir_pattern with ../', base: 'symb', names: SYMB_CONFIG, problem: /'layer_dir_pattern' "\.\.\/layers\/layer_\{:02d\}" must stay inside the model directory/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.layer_dir_pattern = '../layers/layer_{:02d}')) },
  { name: 'symb: embedding_file with ../', base: 'symb', cmd: 'inspect', names: SYMB_CONFIG, problem: /'embedding_file' "layers\/\.\.\/\.\.\/embeddings.symb" must stay inside the model directory/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.embedding_file = 'layers/../../embeddings.symb')) },
  { name: 'symb: embedding_file absolute', base: 'symb', names: SYMB_CONFIG, problem: /'embedding_file' "\/etc\/passwd" must stay inside the model directory/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.embedding_file = '/etc/passwd')) },
  { name: 'symb: layer_dir_pattern without a layer field', base: 'symb', names: SYMB_CONFIG, problem: /layer_dir_pattern "layers\/layer" has no/,
    setup: (m) => editJson(path.join(m, SYMB_CONFIG), (j) => void (j.layer_dir_pattern = 'layers/layer')) },
  { name: 'symlink: model.safetensors points outside the model directory', base: 'hf', names: ST, problem: /resolves \(through a symlink\) to .*outside the model directory.*refusing to read it/,
    setup: (m, outside) => { fs.renameSync(st(m), path.join(outside, 'stolen.safetensors')); fs.symlinkSync(path.join(outside, 'stolen.safetensors'), st(m)); } },
  { name: 'symlink: config.json points outside the model directory', base: 'hf', names: 'config.json', problem: /resolves \(through a symlink\) to .*outside the model directory/,
    setup: (m, outside) => { fs.renameSync(path.join(m, 'config.json'), path.join(outside, 'config.json')); fs.symlinkSync('../outside/config.json', path.join(m, 'config.json')); } },
  { name: 'symlink: a shard points outside the model directory', base: 'sharded', cmd: 'inspect', names: SHARD2, problem: /resolves \(through a symlink\) to .*outside the model directory/,
    setup: (m, outside) => { fs.renameSync(path.join(m, SHARD2), path.join(outside, SHARD2)); fs.symlinkSync(path.join(outside, SHARD2), path.join(m, SHARD2)); } },
  { name: 'symlink: the shard index points outside the model directory', base: 'sharded', names: INDEX, problem: /resolves \(through a symlink\) to .*outside the model directory/,
    setup: (m, outside) => { fs.renameSync(path.join(m, INDEX), path.join(outside, INDEX)); fs.symlinkSync(path.join(outside, INDEX), path.join(m, INDEX)); } },
  { name: 'symlink: a .symb file points outside the model directory', base: 'symb', names: L(0, 'attn_q'), problem: /resolves \(through a symlink\) to .*outside the model directory/,
    setup: (m, outside) => { fs.renameSync(path.join(m, L(0, 'attn_q')), path.join(outside, 'attn_q.symb')); fs.symlinkSync(path.join(outside, 'attn_q.symb'), path.join(m, L(0, 'attn_q'))); } },
  { name: 'symlink: the layers directory points outside the model directory', base: 'symb', cmd: 'inspect', names: L(0, 'attn_q'), problem: /resolves \(through a symlink\) to .*outside the model directory/,
    setup: (m, outside) => { fs.renameSync(path.join(m, 'layers'), path.join(outside, 'layers')); fs.symlinkSync(path.join(outside, 'layers'), path.join(m, 'layers')); } },
  { name: 'symlink: config.symb.json points outside the model directory', base: 'symb', names: SYMB_CONFIG, problem: /resolves \(through a symlink\) to .*outside the model directory/,
    setup: (m, outside) => { fs.renameSync(path.join(m, SYMB_CONFIG), path.join(outside, SYMB_CONFIG)); fs.symlinkSync(path.join(outside, SYMB_CONFIG), path.join(m, SYMB_CONFIG)); } },
];

function argsFor(cmd: Command, m: string, out: string, ids?: string): { args: string[]; outputs: string[] } {
  switch (cmd) {
    case 'inspect':
      return { args: ['inspect', m], outputs: [] };
    case 'forward': {
      const f = path.join(out, 'logits.safetensors');
      return { args: ['forward', '--model', m, '--ids', ids ?? '1,2,3', '--out', f, '--backend', 'wasm'], outputs: [f] };
    }
    case 'convert': {
      const d = path.join(out, 'symb');
      return { args: ['convert', m, d, '--quantize', 'int4', '--group-size', '32', '--quiet'], outputs: [d] };
    }
    case 'generate':
      return { args: ['generate', '--model', m, '--prompt-ids', ids ?? '1', '--max-tokens', '2', '--backend', 'wasm'], outputs: [] };
    case 'generate-text':
      return { args: ['generate', '--model', m, '--prompt', 'Once upon', '--max-tokens', '2', '--backend', 'wasm'], outputs: [] };
  }
}

let root = '';
let fixture = '';
let caseCounter = 0;
const workers: CliWorker[] = [];

/** A fresh case directory: `model/` (a copy of the base fixture), `outside/`, `out/` (empty). */
function prepare(base: Base): { dir: string; model: string; outside: string; out: string } {
  const dir = path.join(root, `case-${String(++caseCounter).padStart(3, '0')}`);
  const model = path.join(dir, 'model');
  const outside = path.join(dir, 'outside');
  const out = path.join(dir, 'out');
  fs.mkdirSync(outside, { recursive: true });
  fs.mkdirSync(out, { recursive: true });
  copyDir(path.join(fixture, base === 'symb' ? 'symb-int4' : 'hf'), model);
  if (base === 'sharded') shardCheckpoint(model, 10);
  return { dir, model, outside, out };
}

function worker(lane: number): CliWorker {
  return (workers[lane] ??= new CliWorker());
}

beforeAll(async () => {
  root = makeTempDir('bad-input');
  fixture = path.join(root, 'fixture');
  await makeFixture('tiny', fixture, { quiet: true });
});

afterAll(() => {
  for (const w of workers) w.close();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

interface CaseRun {
  r: CliResult;
  model: string;
  out: string;
  outputs: string[];
  setupError: unknown;
}

async function runCase(c: BadCase, run: (args: string[]) => Promise<CliResult>): Promise<CaseRun> {
  const { model, outside, out } = prepare(c.base);
  try {
    c.setup(model, outside);
  } catch (e) {
    return { r: { code: null, signal: null, stdout: '', stderr: '', seconds: 0, timedOut: false }, model, out, outputs: [], setupError: e };
  }
  const { args, outputs } = argsFor(c.cmd ?? 'forward', model, out, c.ids);
  return { r: await run(args), model, out, outputs, setupError: null };
}

/** Case results, computed the first time any test asks: all cases in the workers, a sample as separate processes. */
let results: Promise<{ inWorker: CaseRun[]; subprocess: Map<number, CaseRun> }> | null = null;
function allResults() {
  results ??= (async () => {
    const sample = CASES.map((c, i) => ({ c, i })).filter(({ i }) => i % SUBPROCESS_EVERY === 0);
    const [inWorker, sub] = await Promise.all([
      mapLimit(CASES, LANES, (c, _i, lane) => runCase(c, (args) => worker(lane).run(args, CASE_TIMEOUT_MS))),
      mapLimit(sample, 1, ({ c }) => runCase(c, (args) => runCli(args, CASE_TIMEOUT_MS))),
    ]);
    return { inWorker, subprocess: new Map(sample.map(({ i }, k) => [i, sub[k]!])) };
  })();
  return results;
}

/** What the CLI promised for a case, checked on one run. */
function expectCleanFailure(c: BadCase, run: CaseRun): string {
  const { r, model, out, outputs, setupError } = run;
  expect(setupError, 'test setup').toBeNull();
  const context = `${c.name}\nstderr:\n${r.stderr}\nstdout:\n${r.stdout.slice(0, 500)}`;
  expect(r.timedOut, `hung (killed after ${CASE_TIMEOUT_MS} ms): ${context}`).toBe(false);
  expect(r.code, context).toBe(1);
  const lines = problemLines(r.stderr);
  expect(lines, context).toHaveLength(1);
  const line = lines[0]!;
  expect(line, context).toMatch(/^synaxim: error: /);
  expect(line).not.toMatch(/internal error/);
  expect(r.stderr, 'no stack trace without --debug').not.toMatch(/^\s+at /m);
  const named = c.names.startsWith('--') ? c.names : path.join(model, c.names);
  expect(line, `names ${named}`).toContain(named);
  expect(line).toMatch(c.problem);
  for (const o of outputs) expect(fs.existsSync(o), `output ${o} must not exist`).toBe(false);
  expect(fs.readdirSync(out), 'output directory must stay empty (no temp files)').toEqual([]);
  return line.split(path.dirname(model)).join('<case>');
}

describe('bad input: one clear line naming the file, exit 1, no stack, nothing written, no hang', () => {
  it(`covers ${CASES.length} hostile inputs`, async () => {
    const { inWorker, subprocess } = await allResults();
    const slowest = Math.max(...inWorker.map((x) => x.r.seconds));
    const slowestProcess = Math.max(...[...subprocess.values()].map((x) => x.r.seconds));
    console.log(
      `bad-input suite: ${CASES.length} cases through the CLI (slowest ${slowest.toFixed(2)} s); ` +
        `${subprocess.size} of them also as separate processes (slowest ${slowestProcess.toFixed(1)} s)`,
    );
    expect(CASES.length).toBeGreaterThanOrEqual(100);
  });

  CASES.forEach((c, i) => {
    it(`${c.name} [${c.cmd ?? 'forward'}${i % SUBPROCESS_EVERY === 0 ? ', + own process' : ''}]`, async () => {
      const { inWorker, subprocess } = await allResults();
      const line = expectCleanFailure(c, inWorker[i]!);
      const own = subprocess.get(i);
      if (own) expect(expectCleanFailure(c, own), 'the same line from a fresh `node bin/synaxim.js` process').toBe(line);
    });
  });
});

describe('controls: the pristine fixture passes every command; symlinks inside the model are fine', () => {
  it('hf, sharded and symb copies: inspect, forward, convert, generate all exit 0 and write finite outputs', async () => {
    const kinds: { base: Base; cmd: Command }[] = [
      { base: 'hf', cmd: 'inspect' },
      { base: 'hf', cmd: 'forward' },
      { base: 'hf', cmd: 'convert' },
      { base: 'hf', cmd: 'generate-text' },
      { base: 'sharded', cmd: 'forward' },
      { base: 'symb', cmd: 'inspect' },
      { base: 'symb', cmd: 'forward' },
      { base: 'symb', cmd: 'generate-text' },
    ];
    const runs = await mapLimit(kinds, LANES, async (k, _i, lane) => {
      const { model, out } = prepare(k.base);
      const { args, outputs } = argsFor(k.cmd, model, out);
      return { k, outputs, r: await worker(lane).run(args, CASE_TIMEOUT_MS) };
    });
    for (const { k, outputs, r } of runs) {
      expect(r.code, `${k.base} ${k.cmd}: ${r.stderr}`).toBe(0);
      for (const o of outputs) expect(fs.existsSync(o), o).toBe(true);
      if (k.cmd === 'forward') for (const v of readAllFloat32(outputs[0]!).logits!.data) expect(Number.isFinite(v)).toBe(true);
    }
  });

  it('a weight file symlinked within the model directory, and the Hugging Face hub cache layout (snapshots/<rev> -> blobs/), are read', async () => {
    const inside = prepare('hf');
    fs.mkdirSync(path.join(inside.model, 'blobs'));
    fs.renameSync(st(inside.model), path.join(inside.model, 'blobs', 'abc123'));
    fs.symlinkSync('blobs/abc123', st(inside.model));

    const hub = prepare('hf');
    const repo = path.join(hub.dir, 'models--org--tiny');
    const snapshot = path.join(repo, 'snapshots', 'f00d');
    fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
    fs.mkdirSync(snapshot, { recursive: true });
    for (const f of fs.readdirSync(hub.model)) {
      fs.renameSync(path.join(hub.model, f), path.join(repo, 'blobs', `sha-${f}`));
      fs.symlinkSync(`../../blobs/sha-${f}`, path.join(snapshot, f));
    }
    for (const m of [inside.model, snapshot]) {
      const r = await worker(0).run(argsFor('forward', m, path.join(path.dirname(m), 'o')).args, CASE_TIMEOUT_MS);
      expect(r.code, r.stderr).toBe(0);
    }
  });

  it('--debug adds the stack trace to the same one-line message', async () => {
    const { model, out } = prepare('hf');
    truncateFile(st(model), 5);
    const r = await worker(1).run([...argsFor('forward', model, out).args, '--debug'], CASE_TIMEOUT_MS);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`synaxim: error: ${st(model)}: too small to be a safetensors file`);
    expect(r.stderr).toMatch(/^\s+at /m);
  });
});

describe('requireFiniteWeights (the load-time NaN/Inf check) against the obvious reference', () => {
  it('finds the first NaN/±Inf at any length and position, and passes finite arrays (incl. ±max float, -0, subnormals)', () => {
    let seed = 12345;
    const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const specials = [NaN, Infinity, -Infinity];
    for (let trial = 0; trial < 300; trial++) {
      const n = Math.floor(random() * 37);
      const values = new Float32Array(n).map(() => (random() - 0.5) * 10);
      if (n > 0 && trial % 5 === 0) values[Math.floor(random() * n)] = [3.4028234663852886e38, -3.4028234663852886e38, -0, 1e-45][trial % 4]!;
      const bad = trial % 3 === 0 ? 0 : 1 + Math.floor(random() * 2);
      for (let b = 0; b < bad && n > 0; b++) values[Math.floor(random() * n)] = specials[Math.floor(random() * 3)]!;
      const reference = values.findIndex((v) => !Number.isFinite(v)); // slow and obvious
      if (reference < 0) expect(requireFiniteWeights(values, 'f.safetensors', 't')).toBe(values);
      else {
        let error: unknown = null;
        try {
          requireFiniteWeights(values, 'f.safetensors', 't', 1000);
        } catch (e) {
          error = e;
        }
        expect(error).toBeInstanceOf(SynaximError);
        const v = values[reference]!;
        const what = Number.isNaN(v) ? 'a NaN' : v > 0 ? 'an +Inf' : 'an -Inf';
        expect((error as Error).message).toBe(`f.safetensors: tensor 't' has ${what} at flat index ${1000 + reference} (weights must be finite)`);
      }
    }
  });
});
