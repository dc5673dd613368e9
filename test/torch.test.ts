/**
 * The SYNAXIM scripts' adapter files: the `.pt` reader (zip + restricted unpickler) and writer,
 * each against byte layouts assembled by hand in test/helpers/torchBytes.ts (and, when python3 is
 * present, Python's zipfile + pickletools structure checks — never pickle.load); the scripts'
 * adapter directory read like ours; the export's .pt; the base-model check; and on stories260k,
 * eval figures from the scripts' directory equal to ours exactly.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SynaximError } from '../src/util/errors.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_PT_FILE,
  ADAPTER_WEIGHTS_FILE,
  adapterStateDict,
  checkAdapterBase,
  initialAdapter,
  readAdapter,
  writeAdapter,
  type Adapter,
} from '../src/formats/adapter.ts';
import { parseHfConfig } from '../src/formats/config.ts';
import { describeAdapter } from '../src/formats/inspectAdapter.ts';
import { buildTorchStateDict, readTorchStateDict, writeTorchStateDict } from '../src/formats/torchStateDict.ts';
import { crc32, f32Bytes, op, pyInt, scriptsAdapter, stateDictPickle, torchFile, type TensorSpec } from './helpers/torchBytes.ts';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-torch-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let n = 0;
const fresh = (name = 'case') => path.join(tmpRoot, `${name}-${++n}`);
const MODULES = ['', 'gate_bias', 'gate_scale', 'output_scale', 'mix_alpha'];

function writeBytes(file: string, bytes: Uint8Array): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, bytes);
  return file;
}

const model = parseHfConfig({
  architectures: ['LlamaForCausalLM'],
  hidden_size: 8,
  intermediate_size: 16,
  num_hidden_layers: 4,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 32,
});

/** Distinct values per parameter, exact in float32. */
function trained(layers: number[], hidden: number): Adapter {
  const a = initialAdapter(layers, hidden);
  a.params.forEach((p, i) => {
    p.gateBias = -0.25 * (i + 1);
    p.gateScale = 1.5 + i;
    p.mixAlpha = 0.125 * i - 1;
    p.outputScale = Float32Array.from({ length: hidden }, (_, j) => 0.0625 * j - i);
  });
  return a;
}

/** The value trained() gives state-dict entry `name` at element j (for hand-built files). */
function trainedValue(name: string, j: number): number {
  const [fam, idx] = name.split('.') as [string, string];
  const i = Number(idx);
  return fam === 'gate_bias' ? -0.25 * (i + 1) : fam === 'gate_scale' ? 1.5 + i : fam === 'mix_alpha' ? 0.125 * i - 1 : 0.0625 * j - i;
}

// ---------------------------------------------------------------------------------------------
// An independent opcode walker for the pickles we write: tokens, with BINGET replaced by what the
// memo holds (our writer memoizes single-token objects only) and BINPUT dropped.

function pickleTokens(bytes: Uint8Array): string[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: string[] = [];
  const memo = new Map<number, string>();
  const dec = new TextDecoder();
  let p = 0;
  while (p < bytes.length) {
    const o = bytes[p++]!;
    const c = String.fromCharCode(o);
    if (o === 0x80) out.push(`PROTO ${bytes[p++]}`);
    else if (c === 'c') {
      const a = bytes.indexOf(10, p);
      const b = bytes.indexOf(10, a + 1);
      out.push(`GLOBAL ${dec.decode(bytes.subarray(p, a))} ${dec.decode(bytes.subarray(a + 1, b))}`);
      p = b + 1;
    } else if (c === 'X') {
      const len = dv.getUint32(p, true);
      out.push(`STR ${dec.decode(bytes.subarray(p + 4, p + 4 + len))}`);
      p += 4 + len;
    } else if (c === 'K') out.push(`INT ${bytes[p++]}`);
    else if (c === 'M') {
      out.push(`INT ${dv.getUint16(p, true)}`);
      p += 2;
    } else if (c === 'J') {
      out.push(`INT ${dv.getInt32(p, true)}`);
      p += 4;
    } else if (c === 'q') memo.set(bytes[p++]!, out[out.length - 1]!);
    else if (c === 'r') {
      memo.set(dv.getUint32(p, true), out[out.length - 1]!);
      p += 4;
    } else if (c === 'h') out.push(memo.get(bytes[p++]!) ?? 'BAD-GET');
    else if (c === 'j') {
      out.push(memo.get(dv.getUint32(p, true)) ?? 'BAD-GET');
      p += 4;
    } else {
      const names: Record<string, string> = { '.': 'STOP', '(': 'MARK', ')': 'EMPTY_TUPLE', t: 'TUPLE', '\x85': 'TUPLE1', '\x86': 'TUPLE2', '\x87': 'TUPLE3', R: 'REDUCE', b: 'BUILD', Q: 'BINPERSID', '}': 'EMPTY_DICT', s: 'SETITEM', u: 'SETITEMS', '\x89': 'NEWFALSE' };
      out.push(names[c] ?? `UNKNOWN ${o}`);
    }
  }
  return out;
}

/** Walk a zip's local records front to back (independent of the src reader). */
function localRecords(bytes: Uint8Array): Array<{ name: string; dataStart: number; data: Uint8Array; crc: number }> {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  let p = 0;
  while (dv.getUint32(p, true) === 0x04034b50) {
    const size = dv.getUint32(p + 18, true);
    const nameLen = dv.getUint16(p + 26, true);
    const extraLen = dv.getUint16(p + 28, true);
    const dataStart = p + 30 + nameLen + extraLen;
    out.push({ name: new TextDecoder().decode(bytes.subarray(p + 30, p + 30 + nameLen)), dataStart, data: bytes.subarray(dataStart, dataStart + size), crc: dv.getUint32(p + 14, true) });
    p = dataStart + size;
  }
  return out;
}

describe('torch .pt writer against our reader', () => {
  it('round-trips float32 tensors of shapes [1], [D], [] and [2, 3] exactly, archive named after the file', () => {
    const file = path.join(fresh(), 'weights.pt');
    const tensors = [
      { name: 'a', shape: [1], data: Float32Array.of(-0.25) },
      { name: 'b', shape: [5], data: Float32Array.of(1, -2, 3.5, 1e-30, -0) },
      { name: 'c', shape: [], data: Float32Array.of(0.5) },
      { name: 'd', shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) },
    ];
    fs.mkdirSync(path.dirname(file), { recursive: true });
    writeTorchStateDict(file, tensors, ['']);
    const back = readTorchStateDict(file);
    expect(back.prefix).toBe('weights');
    expect(back.byteorder).toBe('little');
    expect([...back.tensors.keys()]).toEqual(['a', 'b', 'c', 'd']);
    for (const t of tensors) {
      const r = back.tensors.get(t.name)!;
      expect(r.shape).toEqual(t.shape);
      expect(r.dtype).toBe('float32');
      expect(Array.from(r.data).map((v) => (Object.is(v, -0) ? '-0' : v))).toEqual(Array.from(t.data).map((v) => (Object.is(v, -0) ? '-0' : v)));
    }
  });
});

describe('our reader against hand-assembled torch files', () => {
  it("reads the scripts' state dict (archive/ prefix, unaligned records, no .format_version)", () => {
    const { tensors, storages } = scriptsAdapter(2, 4, trainedValue);
    const file = writeBytes(path.join(fresh(), 'x.pt'), torchFile('archive', stateDictPickle(tensors, { modules: MODULES }), storages));
    const sd = readTorchStateDict(file);
    expect(sd.prefix).toBe('archive');
    expect(sd.tensors.get('mix_alpha.1')!.shape).toEqual([]);
    expect(sd.tensors.get('gate_scale.0')!.shape).toEqual([1]);
    expect(Array.from(sd.tensors.get('output_scale.1')!.data)).toEqual([0, 1, 2, 3].map((j) => 0.0625 * j - 1));
    expect(sd.tensors.get('mix_alpha.1')!.data[0]).toBe(-0.875);
  });

  it('zip64 records (saturated central fields, zip64 extra and end records), as large-file writers produce', () => {
    const { tensors, storages } = scriptsAdapter(1, 3, trainedValue);
    const file = writeBytes(path.join(fresh(), 'z.pt'), torchFile('z', stateDictPickle(tensors, { modules: MODULES }), storages, { align: 64, zip64: true }));
    const sd = readTorchStateDict(file);
    expect(Array.from(sd.tensors.get('output_scale.0')!.data)).toEqual([0, 0.0625, 0.125]);
    expect(sd.tensors.get('gate_scale.0')!.data[0]).toBe(1.5);
  });

  it('float16 and bfloat16 storages, big-endian byteorder, strided views with offsets over a shared storage', () => {
    const tensors: TensorSpec[] = [
      // storage 0 (float32, 6 elements 0..5): its transpose [3, 2] and a strided slice from offset 1
      { name: 't', storage: 'FloatStorage', key: '0', numel: 6, offset: 0, size: [3, 2], stride: [1, 3] },
      { name: 's', storage: 'FloatStorage', key: '0', numel: 6, offset: 1, size: [2], stride: [2] },
      { name: 'h', storage: 'HalfStorage', key: '1', numel: 3, offset: 0, size: [3], stride: [1] },
      { name: 'bf', storage: 'BFloat16Storage', key: '2', numel: 2, offset: 1, size: [1], stride: [1] },
    ];
    const be16 = (...v: number[]) => Uint8Array.from(v.flatMap((x) => [x >> 8, x & 0xff]));
    const file = writeBytes(
      path.join(fresh(), 'y.pt'),
      torchFile('y', stateDictPickle(tensors, { metadata: false }), { '0': f32Bytes([0, 1, 2, 3, 4, 5], true), '1': be16(0x3c00, 0xc000, 0x3800), '2': be16(0x0000, 0x3fc0) }, { byteorder: 'big', align: 64 }),
    );
    const sd = readTorchStateDict(file);
    expect(sd.byteorder).toBe('big');
    expect(Array.from(sd.tensors.get('t')!.data)).toEqual([0, 3, 1, 4, 2, 5]);
    expect(sd.tensors.get('t')!.shape).toEqual([3, 2]);
    expect(Array.from(sd.tensors.get('s')!.data)).toEqual([1, 3]);
    expect(Array.from(sd.tensors.get('h')!.data)).toEqual([1, -2, 0.5]);
    expect(sd.tensors.get('h')!.dtype).toBe('float16');
    expect(Array.from(sd.tensors.get('bf')!.data)).toEqual([1.5]);
  });

  it('refuses a pickle that calls os.system, in one line naming the file, without running it', () => {
    const evil = Uint8Array.from([...op.PROTO(2), ...op.GLOBAL('os', 'system'), ...op.BINUNICODE('touch /tmp/pwned'), ...op.TUPLE1, ...op.REDUCE, ...op.STOP]);
    const file = writeBytes(path.join(fresh(), 'evil.pt'), torchFile('evil', evil, {}));
    let err: unknown;
    try {
      readTorchStateDict(file);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SynaximError);
    expect((err as Error).message).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: data.pkl: refusing pickle global os.system .* \\(at byte 2; nothing in the file was executed\\)$`));
    expect((err as Error).message.includes('\n')).toBe(false);
  });
});

describe('our writer against the byte layout torch.save produces', () => {
  const a = trained([0, 1], 3);
  const bytes = buildTorchStateDict('symbiotic_adapter', adapterStateDict(a), MODULES);

  it('zip: stored records in torch order, data 64-byte aligned, CRCs right, storages float32 LE', () => {
    const recs = localRecords(bytes);
    const names = ['data.pkl', '.format_version', '.storage_alignment', 'byteorder', ...Array.from({ length: 8 }, (_, i) => `data/${i}`), 'version'];
    expect(recs.map((r) => r.name)).toEqual(names.map((x) => `symbiotic_adapter/${x}`));
    for (const r of recs) {
      expect(r.dataStart % 64, r.name).toBe(0);
      expect(r.crc, r.name).toBe(crc32(r.data));
    }
    const text = (name: string) => new TextDecoder().decode(recs.find((r) => r.name === `symbiotic_adapter/${name}`)!.data);
    expect([text('.format_version'), text('.storage_alignment'), text('byteorder'), text('version')]).toEqual(['1', '64', 'little', '3\n']);
    // state-dict order: every gate_bias, then gate_scale, output_scale, mix_alpha
    const order = ['gate_bias.0', 'gate_bias.1', 'gate_scale.0', 'gate_scale.1', 'output_scale.0', 'output_scale.1', 'mix_alpha.0', 'mix_alpha.1'];
    order.forEach((name, k) => {
      const data = recs.find((r) => r.name === `symbiotic_adapter/data/${k}`)!.data;
      const expected = name.startsWith('output_scale') ? [0, 1, 2].map((j) => trainedValue(name, j)) : [trainedValue(name, 0)];
      expect(Buffer.from(data).equals(Buffer.from(f32Bytes(expected))), name).toBe(true);
    });
  });

  it('data.pkl: the opcode stream of a hand-assembled torch state dict (scripts shapes, 0-dim mix_alpha, _metadata)', () => {
    const pkl = localRecords(bytes)[0]!.data;
    const order = ['gate_bias.0', 'gate_bias.1', 'gate_scale.0', 'gate_scale.1', 'output_scale.0', 'output_scale.1', 'mix_alpha.0', 'mix_alpha.1'];
    const expected: TensorSpec[] = order.map((name, k) => {
      const size = name.startsWith('output_scale') ? [3] : name.startsWith('mix_alpha') ? [] : [1];
      return { name, storage: 'FloatStorage', key: String(k), numel: size[0] ?? 1, offset: 0, size, stride: size.length ? [1] : [] };
    });
    expect(pickleTokens(pkl)).toEqual(pickleTokens(stateDictPickle(expected, { modules: MODULES })));
    expect(pyInt(300)).toEqual([0x4d, 44, 1]); // the helper's own int encoding, as Python's
  });

  it('python3 zipfile + pickletools (structure only, no pickle.load) agree, when python3 is present', (ctx) => {
    const probe = spawnSync('python3', ['-c', 'import zipfile, pickletools'], { encoding: 'utf8' });
    if (probe.status !== 0) {
      console.log('skipped: python3 with zipfile/pickletools not available');
      ctx.skip();
      return;
    }
    const file = writeBytes(path.join(fresh(), 'symbiotic_adapter.pt'), bytes);
    // A symbolic walk of the opcodes (genops): name -> (storage key, numel, size, stride). Nothing is executed.
    const script = `
import sys, zipfile, pickletools, json, struct
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
names = z.namelist()
for i in z.infolist():
    assert i.compress_type == 0
    with open(sys.argv[1], 'rb') as f:
        f.seek(i.header_offset + 26)
        n, e = struct.unpack('<HH', f.read(4))
    assert (i.header_offset + 30 + n + e) % 64 == 0, i.filename
pkl = z.read('symbiotic_adapter/data.pkl')
pickletools.dis(pkl, out=open('/dev/null', 'w'))
stack, memo, marks, out = [], {}, [], {}
for op, arg, pos in pickletools.genops(pkl):
    nm = op.name
    if nm in ('PROTO', 'STOP'): continue
    if nm == 'MARK': marks.append(len(stack)); continue
    if nm in ('BINUNICODE', 'BININT1', 'BININT2', 'BININT'): stack.append(arg); continue
    if nm == 'GLOBAL': stack.append(('G', arg)); continue
    if nm == 'BINPUT': memo[arg] = stack[-1]; continue
    if nm == 'BINGET': stack.append(memo[arg]); continue
    if nm == 'EMPTY_TUPLE': stack.append(()); continue
    if nm in ('TUPLE1', 'TUPLE2', 'TUPLE3'):
        k = int(nm[-1]); t = tuple(stack[-k:]); del stack[-k:]; stack.append(t); continue
    if nm == 'TUPLE':
        m = marks.pop(); t = tuple(stack[m:]); del stack[m:]; stack.append(t); continue
    if nm == 'NEWFALSE': stack.append(False); continue
    if nm == 'BINPERSID': stack.append(('P', stack.pop())); continue
    if nm == 'EMPTY_DICT': stack.append({}); continue
    if nm == 'REDUCE':
        args = stack.pop(); fn = stack.pop()
        if fn == ('G', 'collections OrderedDict'): stack.append({})
        elif fn == ('G', 'torch._utils _rebuild_tensor_v2'): stack.append(('T', args[0][1][2], args[0][1][4], list(args[2]), list(args[3]), args[0][1][1][1]))
        else: raise SystemExit('unexpected callable %r' % (fn,))
        continue
    if nm == 'SETITEM':
        v = stack.pop(); k = stack.pop(); stack[-1][k] = v; continue
    if nm == 'SETITEMS':
        m = marks.pop(); items = stack[m:]; del stack[m:]
        for i in range(0, len(items), 2): stack[-1][items[i]] = items[i+1]
        continue
    if nm == 'BUILD':
        state = stack.pop(); stack[-1]['__state__'] = state; continue
    raise SystemExit('unexpected opcode ' + nm)
sd = stack[-1]
meta = sd.pop('__state__')
print(json.dumps({'names': names, 'tensors': {k: v[1:] for k, v in sd.items()}, 'metadata': meta['_metadata']}))
`;
    const r = spawnSync('python3', ['-c', script, file], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout) as { tensors: Record<string, [string, number, number[], number[], string]>; metadata: Record<string, unknown> };
    expect(got.tensors['gate_bias.1']).toEqual(['1', 1, [1], [1], 'torch FloatStorage']);
    expect(got.tensors['output_scale.0']).toEqual(['4', 3, [3], [1], 'torch FloatStorage']);
    expect(got.tensors['mix_alpha.0']).toEqual(['6', 1, [], [], 'torch FloatStorage']);
    expect(Object.keys(got.tensors)).toHaveLength(8);
    expect(got.metadata).toEqual(Object.fromEntries(MODULES.map((m) => [m, { version: 1 }])));
  });
});

describe("the scripts' adapter directory", () => {
  function scriptsDir(config: Record<string, unknown>, nLayers = 2, d = 8): string {
    const dir = fresh('scripts');
    const { tensors, storages } = scriptsAdapter(nLayers, d, trainedValue);
    writeBytes(path.join(dir, ADAPTER_PT_FILE), torchFile('symbiotic_adapter', stateDictPickle(tensors, { modules: MODULES }), storages, { align: 64 }));
    fs.writeFileSync(path.join(dir, ADAPTER_CONFIG_FILE), JSON.stringify(config));
    return dir;
  }

  it('train_adapter.py (n_layers = model layers, train_layers = adapted) reads as the same adapter as ours', async () => {
    const dir = scriptsDir({ engine: 'SYNAXIM', version: '0.1.1', base_model: 'unsloth/Llama-3.2-1B', D: 8, n_layers: 4, train_layers: 2, best_loss: 0.5, parameters: 22 });
    const a = readAdapter(dir, model);
    expect(a.format).toBe('pt');
    expect(a.layers).toEqual([0, 1]);
    expect(a.hiddenSize).toBe(8);
    const ours = fresh('ours');
    await writeAdapter(ours, trained([0, 1], 8));
    const b = readAdapter(ours, model);
    expect(a.params).toEqual(b.params);
    const d = describeAdapter(dir);
    expect(d).toMatchObject({ format: 'scripts-pt', config: 'scripts', base_model: { name: 'unsloth/Llama-3.2-1B', content_hash: null, num_layers: 4 }, layers: [0, 1], parameter_count: 22 });
    expect(d.per_layer[1]).toMatchObject({ layer: 1, gate_bias: -0.5, gate_scale: 2.5, mix_alpha: -0.875, output_scale: { min: -1, max: 0.0625 * 7 - 1 } });
    expect(d.per_layer[1]!.mix).toBeCloseTo(1 / (1 + Math.exp(0.875)), 12);
  });

  it('finetune_symbiotic.py (n_layers = adapted, no train_layers; adapter_type, description)', () => {
    const dir = scriptsDir({ engine: 'SYNAXIM', version: '0.1.1', base_model: 'm', adapter_type: 'symbiotic_gate', D: 8, n_layers: 3, best_loss: 1, parameters: 33, description: 'x' }, 3);
    const a = readAdapter(dir, model);
    expect(a.layers).toEqual([0, 1, 2]);
  });

  it('a config that disagrees with the state dict, or D that does not fit the model, is one line naming the file', () => {
    const dir = scriptsDir({ D: 8, n_layers: 4, train_layers: 3 });
    expect(() => readAdapter(dir)).toThrow(/adapter_config\.json: states 3 adapted layers .* symbiotic_adapter\.pt has 2/);
    const dir2 = scriptsDir({ D: 16, n_layers: 4, train_layers: 2 });
    expect(() => readAdapter(dir2)).toThrow(/symbiotic_adapter\.pt: tensor 'output_scale\.0' has shape \[8\], expected \[16\] \('D' in adapter_config\.json\)/);
    const dir3 = scriptsDir({ D: 8, n_layers: 2 }, 2, 8);
    expect(() => readAdapter(dir3, { ...model, hiddenSize: 16 })).toThrow(/hidden_size 8 does not match the model's hidden size 16/);
  });
});

describe('export: both formats side by side', () => {
  it('writes symbiotic_adapter.pt beside the safetensors, with the scripts keys in the config; both read back equal', async () => {
    const dir = fresh('export');
    const a = trained([0, 2, 3], 8);
    await writeAdapter(dir, a, { base_model: 'tiny', base_model_name_or_path: 'tiny', n_layers: 4 }, { torch: true });
    expect(fs.readdirSync(dir).sort()).toEqual([ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, ADAPTER_PT_FILE]);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, ADAPTER_CONFIG_FILE), 'utf8'));
    expect(cfg).toMatchObject({ D: 8, n_layers: 4, train_layers: 3, parameters: 33, base_model: 'tiny', base_model_name_or_path: 'tiny', layers: [0, 2, 3], hidden_size: 8 });
    const both = readAdapter(dir, model);
    expect(both.format).toBe('both');
    const sd = readTorchStateDict(path.join(dir, ADAPTER_PT_FILE));
    expect(sd.tensors.get('mix_alpha.2')!.shape).toEqual([]);
    expect(sd.tensors.get('gate_bias.0')!.shape).toEqual([1]);
    expect(sd.tensors.get('output_scale.1')!.shape).toEqual([8]);
    expect(Array.from(sd.tensors.get('output_scale.1')!.data)).toEqual(Array.from(a.params[1]!.outputScale));
    // the .pt alone gives the same adapter (layers from our config's list)
    fs.rmSync(path.join(dir, ADAPTER_WEIGHTS_FILE));
    const ptOnly = readAdapter(dir, model);
    expect(ptOnly.format).toBe('pt');
    expect(ptOnly.layers).toEqual([0, 2, 3]);
    expect(ptOnly.params).toEqual(both.params);
  });

  it('a .pt that disagrees with the safetensors beside it is refused', async () => {
    const dir = fresh('export');
    await writeAdapter(dir, trained([0, 1], 8), {}, { torch: true });
    const other = trained([0, 1], 8);
    other.params[1]!.gateScale = 7;
    writeTorchStateDict(path.join(dir, ADAPTER_PT_FILE), adapterStateDict(other), MODULES);
    expect(() => readAdapter(dir)).toThrow(/symbiotic_adapter\.pt: adapted layer 1 differs from adapter_model\.safetensors/);
  });
});

describe('adapters know their base model', () => {
  const hashOf = (h: string) => () => h;
  const withConfig = (config: Record<string, unknown>): Adapter => ({ ...trained([0, 1], 8), config, source: '/x/adapter_config.json' });

  it('a matching hash passes; another hash is refused in one line unless allowed; no hash is a note', () => {
    const a = withConfig({ base_model: 'tiny', base_model_content_hash: 'sha256:' + 'a'.repeat(64), base_model_num_layers: 4 });
    expect(checkAdapterBase(a, '/m', model, hashOf('sha256:' + 'a'.repeat(64)), false)).toMatchObject({ status: 'match', note: null });
    expect(() => checkAdapterBase(a, '/m', model, hashOf('sha256:' + 'b'.repeat(64)), false)).toThrow(
      /^\/x\/adapter_config\.json: adapter does not belong to this model: it was trained on a base model \(tiny\) with content hash sha256:aaaa.*, not \/m \(sha256:bbbb.*\); pass --allow-other-base/,
    );
    const allowed = checkAdapterBase(a, '/m', model, hashOf('sha256:' + 'b'.repeat(64)), true);
    expect(allowed.status).toBe('other-base');
    expect(allowed.modelHash).toBe('sha256:' + 'b'.repeat(64));
    const scripts = withConfig({ base_model: 'unsloth/Llama-3.2-1B', D: 8, n_layers: 4, train_layers: 2 });
    expect(checkAdapterBase(scripts, '/m', model, () => { throw new Error('no hash needed'); }, false)).toMatchObject({ status: 'unrecorded', note: expect.stringMatching(/records no base_model_content_hash \(base_model unsloth\/Llama-3\.2-1B\)/) });
  });

  it('a recorded layer count that is not the model\'s is refused (ours and train_adapter.py\'s n_layers)', () => {
    expect(() => checkAdapterBase(withConfig({ base_model_num_layers: 16 }), '/m', model, hashOf('h'), false)).toThrow(/trained on a 16-layer base model, not this 4-layer one/);
    expect(() => checkAdapterBase(withConfig({ D: 8, n_layers: 16, train_layers: 2 }), '/m', model, hashOf('h'), false)).toThrow(/16-layer/);
    // finetune_symbiotic.py's n_layers counts adapted layers, not the model's: not a base-model fact
    expect(checkAdapterBase(withConfig({ D: 8, n_layers: 2 }), '/m', model, hashOf('h'), false).status).toBe('unrecorded');
  });
});

const STORIES = path.join(SHARED_DIR, 'models', 'stories260k');

describe('stories260k: eval of the scripts\' directory gives the same figures as ours', () => {
  it('report.json configurations are identical (both formats, same values)', async (ctx) => {
    if (!sharedAvailable() || !fs.existsSync(path.join(STORIES, 'hf', 'config.json'))) {
      console.log('skipped: ../shared/models/stories260k not available');
      ctx.skip();
      return;
    }
    const { runEvalCommand } = await import('../src/cli/commands/eval.ts');
    const a = trained([0, 1, 2], 64);
    a.params.forEach((p, i) => (p.outputScale = Float32Array.from({ length: 64 }, (_, j) => 0.05 + 0.002 * j - 0.01 * i)));
    const ours = fresh('ours');
    await writeAdapter(ours, a, { base_model: 'stories260k' });
    const scripts = path.join(fresh('scripts'), 'symbiotic_adapter');
    fs.mkdirSync(scripts, { recursive: true });
    writeTorchStateDict(path.join(scripts, ADAPTER_PT_FILE), adapterStateDict(a), MODULES);
    fs.writeFileSync(path.join(scripts, ADAPTER_CONFIG_FILE), JSON.stringify({ engine: 'SYNAXIM', version: '0.1.1', base_model: 'stories260k', D: 64, n_layers: 5, train_layers: 3, best_loss: 0.1, parameters: 201 }));
    const run = async (adapter: string) => {
      const out = fresh('eval');
      const paths = await runEvalCommand({
        model: path.join(STORIES, 'hf'), adapter, corpus: path.join(STORIES, 'corpus', 'eval.jsonl'), maxSeqs: 2, context: 32,
        rest: 'engine', configurations: 'engine,adapter,hybrid', window: 'none', out, backend: 'wasm', quiet: true, workers: 1,
      });
      return JSON.parse(fs.readFileSync(paths.json, 'utf8')) as { configurations: Array<Record<string, unknown>>; adapter: Record<string, unknown> };
    };
    const r1 = await run(ours);
    const r2 = await run(path.dirname(scripts));
    const figures = (r: typeof r1) => r.configurations.map(({ wall_s: _w, ...rest }) => rest);
    expect(figures(r2)).toEqual(figures(r1));
    expect(r1.configurations.map((c) => c.name)).toEqual(['teacher', 'engine', 'adapter', 'hybrid']);
    expect(r2.adapter).toMatchObject({ format: 'pt', layers: [0, 1, 2], base_model: { status: 'unrecorded', name: 'stories260k' } });
    expect(r1.adapter).toMatchObject({ format: 'safetensors' });
  }, 120_000);
});
