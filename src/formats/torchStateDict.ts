/**
 * `.pt` state dicts as `torch.save(module.state_dict())` writes them: the zip container
 * (torchZip.ts) holding `data.pkl` (torchPickle.ts: restricted, never executes anything) and one
 * record `data/<key>` per storage, plus the small records torch adds (`.format_version`,
 * `.storage_alignment`, `byteorder`, `version`, `.data/serialization_id`).
 *
 * Reading checks every tensor view against its storage (offset, strides, sizes) before touching
 * a byte and returns float32 copies; writing produces float32 little-endian contiguous tensors in
 * torch's layout, so `torch.load` + `load_state_dict` read it.
 */
import path from 'node:path';
import { writeFileAtomic } from '../util/atomic.ts';
import { fail } from '../util/errors.ts';
import { decodeBf16, decodeF16 } from '../util/fp16.ts';
import { checkPlainTree, pickleStateDict, PyDict, PyTensor, restrictedUnpickle, type TorchFloatDtype } from './torchPickle.ts';
import { buildTorchZip, readTorchZip, type TorchZip, type TorchZipRecord } from './torchZip.ts';

export interface TorchTensor {
  name: string;
  /** Storage dtype in the file (values are returned as float32). */
  dtype: TorchFloatDtype;
  shape: number[];
  data: Float32Array;
}

export interface TorchStateDict {
  file: string;
  /** The zip's archive directory (file stem or `archive`). */
  prefix: string;
  byteorder: 'little' | 'big';
  /** In file order. */
  tensors: Map<string, TorchTensor>;
}

const ELEMENT_BYTES: Record<TorchFloatDtype, number> = { float32: 4, float16: 2, bfloat16: 2 };
/** Most elements one tensor may have here (an adapter's largest is one hidden vector). */
const MAX_TENSOR_ELEMENTS = 1 << 26;

function smallText(zip: TorchZip, name: string): string | null {
  const r = zip.records.get(name);
  if (!r) return null;
  if (r.length > 64) fail(zip.file, `zip record '${name}' has ${r.length} bytes (expected a short text)`);
  return Buffer.from(r).toString('latin1').trim();
}

/** Storage bytes (in file byte order) -> float32 values. */
function decodeStorage(bytes: Uint8Array, dtype: TorchFloatDtype, big: boolean): Float32Array {
  const n = bytes.length / ELEMENT_BYTES[dtype];
  if (dtype === 'float32') {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, !big);
    return out;
  }
  let le = bytes;
  if (big) {
    le = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i += 2) {
      le[i] = bytes[i + 1]!;
      le[i + 1] = bytes[i]!;
    }
  }
  return dtype === 'float16' ? decodeF16(le) : decodeBf16(le);
}

/** Parse a torch.save state dict from zip records (see readTorchStateDict). */
export function stateDictFromZip(zip: TorchZip): TorchStateDict {
  const file = zip.file;
  const pkl = zip.records.get('data.pkl');
  if (!pkl) fail(file, `no '${zip.prefix}/data.pkl' record (not a torch.save file?)`);
  const fmt = smallText(zip, '.format_version');
  if (fmt !== null && !/^\d+$/.test(fmt)) fail(file, `.format_version is ${JSON.stringify(fmt)}, not a number`);
  const align = smallText(zip, '.storage_alignment');
  if (align !== null && !/^\d+$/.test(align)) fail(file, `.storage_alignment is ${JSON.stringify(align)}, not a number`);
  const version = smallText(zip, 'version') ?? smallText(zip, '.data/version');
  if (version !== null && !/^\d+$/.test(version)) fail(file, `version record is ${JSON.stringify(version)}, not a number`);
  const order = smallText(zip, 'byteorder') ?? 'little';
  if (order !== 'little' && order !== 'big') fail(file, `byteorder is ${JSON.stringify(order)} (expected little or big)`);
  const big = order === 'big';

  const root = restrictedUnpickle(pkl, file);
  if (!(root instanceof PyDict)) fail(file, `data.pkl holds a ${root === null ? 'None' : typeof root === 'object' ? root.constructor.name.replace(/^Py/, '') : typeof root}, not a state dict (OrderedDict of tensors)`);
  if (root.state) checkPlainTree(root.state, file, '_metadata');

  const decoded = new Map<string, Float32Array>();
  const tensors = new Map<string, TorchTensor>();
  for (const [name, t] of root.map) {
    if (typeof name !== 'string') fail(file, `state dict key ${name} is not a string`);
    if (!(t instanceof PyTensor)) fail(file, `state dict entry '${name}' is not a tensor`);
    const s = t.storage;
    const where = `tensor '${name}'`;
    let storage = decoded.get(s.key);
    if (!storage) {
      const rec = zip.records.get(`data/${s.key}`);
      if (!rec) fail(file, `${where}: its storage record '${zip.prefix}/data/${s.key}' is missing`);
      const want = s.numel * ELEMENT_BYTES[s.dtype];
      if (rec.length !== want) {
        fail(file, `${where}: storage 'data/${s.key}' has ${rec.length} bytes, but data.pkl declares ${s.numel} ${s.dtype} elements (${want} bytes)`);
      }
      storage = decodeStorage(rec, s.dtype, big);
      decoded.set(s.key, storage);
    }
    if (t.offset < 0) fail(file, `${where}: negative storage offset ${t.offset}`);
    if (t.shape.some((d) => d < 0)) fail(file, `${where}: negative size [${t.shape.join(', ')}]`);
    if (t.stride.some((d) => d < 0)) fail(file, `${where}: negative stride [${t.stride.join(', ')}] (not supported)`);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel > MAX_TENSOR_ELEMENTS) fail(file, `${where}: ${numel} elements is more than an adapter tensor can have`);
    if (numel > 0) {
      const last = t.offset + t.shape.reduce((a, d, i) => a + (d - 1) * t.stride[i]!, 0);
      if (last >= s.numel) fail(file, `${where}: view (offset ${t.offset}, size [${t.shape.join(', ')}], stride [${t.stride.join(', ')}]) reaches element ${last} of a ${s.numel}-element storage`);
    }
    const out = new Float32Array(numel);
    // Row-major walk over the view.
    const idx = new Array<number>(t.shape.length).fill(0);
    for (let i = 0; i < numel; i++) {
      let at = t.offset;
      for (let d = 0; d < idx.length; d++) at += idx[d]! * t.stride[d]!;
      out[i] = storage[at]!;
      for (let d = idx.length - 1; d >= 0; d--) {
        if (++idx[d]! < t.shape[d]!) break;
        idx[d] = 0;
      }
    }
    tensors.set(name, { name, dtype: s.dtype, shape: [...t.shape], data: out });
  }
  return { file, prefix: zip.prefix, byteorder: order, tensors };
}

/** Read a `.pt` state dict of float tensors, refusing anything else in one line. */
export function readTorchStateDict(file: string): TorchStateDict {
  return stateDictFromZip(readTorchZip(file));
}

export interface TensorToSave {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** The bytes `torch.save(state_dict, "<stem>.pt")` would write for these float32 tensors. */
export function buildTorchStateDict(prefix: string, tensors: TensorToSave[], metadataModules: string[]): Uint8Array {
  const records: TorchZipRecord[] = [];
  const pickled = tensors.map((t, i) => {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) throw new Error(`tensor ${t.name}: shape [${t.shape.join(', ')}] has ${numel} elements, data ${t.data.length}`);
    return { name: t.name, key: String(i), numel, shape: t.shape };
  });
  records.push({ name: 'data.pkl', data: pickleStateDict(pickled, metadataModules) });
  records.push({ name: '.format_version', data: Buffer.from('1') });
  records.push({ name: '.storage_alignment', data: Buffer.from('64') });
  records.push({ name: 'byteorder', data: Buffer.from('little') });
  tensors.forEach((t, i) => {
    const b = Buffer.alloc(4 * t.data.length);
    for (let j = 0; j < t.data.length; j++) b.writeFloatLE(t.data[j]!, 4 * j);
    records.push({ name: `data/${i}`, data: b });
  });
  records.push({ name: 'version', data: Buffer.from('3\n') });
  return buildTorchZip(prefix, records);
}

/** Write a `.pt` state dict atomically; the archive directory is the file's stem, as torch.save names it. */
export function writeTorchStateDict(file: string, tensors: TensorToSave[], metadataModules: string[]): void {
  writeFileAtomic(file, buildTorchStateDict(path.basename(file).replace(/\.[^.]*$/, ''), tensors, metadataModules));
}
