/**
 * A small, strict safetensors reader and writer (https://github.com/huggingface/safetensors format):
 *   u64 little-endian header length N | N bytes of JSON header | tensor data.
 * The header maps names to {dtype, shape, data_offsets: [begin, end]} (relative to the data start)
 * plus an optional "__metadata__" string→string map. We check everything the format promises —
 * header ≤ 100 MB, offsets contiguous from 0, in range, non-overlapping, the file ending at the last
 * tensor, shape × dtype size = byte length, no duplicate names — and read one tensor at a time with
 * positioned reads, never the whole file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../util/errors.ts';
import { entryExists, MiB, openRegularFile, readExactly, regularFileSize, snippet } from '../util/fileio.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { decodeBf16, decodeF16, encodeBf16, encodeF16, f16BitsToF32 } from '../util/fp16.ts';
import { asUserFsError } from '../util/fsErrors.ts';
import { CONTROL_CHARS, jsonErrorText, readJsonFile, requireInsideModelDir } from './config.ts';

export type StDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<StDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

export const MAX_HEADER_BYTES = 100 * 1000 * 1000;

export interface StTensorInfo {
  name: string;
  dtype: StDtype;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  byteOffset: number;
  byteLength: number;
}

export function numelOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Top-level keys of a JSON object text, in order, including duplicates (JSON.parse silently keeps
 * the last of duplicate keys, which would hide a tensor).
 */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(text.slice(i, j + 1)) as string);
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      if (depth === 1 && c === '{') expectKey = true;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
  }
  return keys;
}

/** Parse and validate a header given the file size. Pure: used by the reader and by tests. */
export function parseHeader(file: string, headerBytes: Uint8Array, fileSize: number): { tensors: StTensorInfo[]; metadata: Record<string, string> | null } {
  const dataStart = 8 + headerBytes.length;
  let text: string;
  try {
    // ignoreBOM keeps a byte-order mark in the text (the default drops it silently), so it is refused below.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    fail(file, 'safetensors header is not valid UTF-8');
  }
  // The reference reader (serde_json) refuses a header that does not start with '{'; a BOM included.
  if (text.startsWith('\uFEFF')) fail(file, 'safetensors header starts with a UTF-8 byte-order mark (the reference reader refuses it)');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(file, `safetensors header is not valid JSON (${jsonErrorText(e)})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail(file, 'safetensors header must be a JSON object');
  const keys = topLevelKeys(text);
  const seen = new Set<string>();
  for (const k of keys) {
    // Names end up in one-line error messages and on terminals: no newlines, no escape sequences.
    if (CONTROL_CHARS.test(k)) fail(file, `tensor name ${JSON.stringify(k)} contains control characters`);
    if (seen.has(k)) fail(file, `duplicate tensor name '${k}' in safetensors header`);
    seen.add(k);
  }
  const obj = json as Record<string, unknown>;
  let metadata: Record<string, string> | null = null;
  const tensors: StTensorInfo[] = [];
  for (const [name, raw] of Object.entries(obj)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, '__metadata__ must be a string→string map');
      for (const [k, v] of Object.entries(raw)) if (typeof v !== 'string') fail(file, `__metadata__ value for ${JSON.stringify(k)} is not a string`);
      metadata = raw as Record<string, string>;
      continue;
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, `tensor '${name}': entry must be an object`);
    const e = raw as Record<string, unknown>;
    const dtype = e.dtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) fail(file, `tensor '${name}': unknown dtype ${JSON.stringify(dtype)}`);
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0)) {
      fail(file, `tensor '${name}': shape must be a list of non-negative integers below 2^53, got ${snippet(JSON.stringify(shape) ?? String(shape), 60)}`);
    }
    // Element count and byte size, multiplied dim by dim as the reference reader does (checked
    // usize products), must stay exact: [2^40, 2^40, 0] is refused there, and here.
    let numel = 1;
    for (const d of shape as number[]) {
      numel *= d;
      if (!Number.isSafeInteger(numel * DTYPE_BYTES[dtype as StDtype])) {
        fail(file, `tensor '${name}': shape [${(shape as number[]).join(', ')}] × ${dtype} overflows (more than 2^53 bytes)`);
      }
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)) {
      fail(file, `tensor '${name}': data_offsets must be two non-negative integers`);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) fail(file, `tensor '${name}': data_offsets [${begin}, ${end}] end before they begin`);
    const expected = numelOf(shape as number[]) * DTYPE_BYTES[dtype as StDtype];
    if (end - begin !== expected) {
      fail(file, `tensor '${name}': shape [${(shape as number[]).join(', ')}] × ${dtype} is ${expected} bytes but data_offsets span ${end - begin}`);
    }
    if (dataStart + end > fileSize) fail(file, `tensor '${name}': data_offsets [${begin}, ${end}] run past the end of the file (${fileSize - dataStart} data bytes)`);
    tensors.push({ name, dtype: dtype as StDtype, shape: shape as number[], byteOffset: dataStart + begin, byteLength: end - begin });
  }
  // Contiguity: sorted by offset, each tensor starts where the previous ended, from 0 to the end of the file.
  const sorted = [...tensors].sort((a, b) => a.byteOffset - b.byteOffset || a.byteLength - b.byteLength);
  let cursor = dataStart;
  for (const t of sorted) {
    if (t.byteOffset < cursor) fail(file, `tensor '${t.name}' overlaps the previous tensor (offset ${t.byteOffset - dataStart} < ${cursor - dataStart})`);
    if (t.byteOffset > cursor) fail(file, `gap of ${t.byteOffset - cursor} bytes before tensor '${t.name}' (tensors must be contiguous)`);
    cursor = t.byteOffset + t.byteLength;
  }
  if (cursor !== fileSize) fail(file, `file has ${fileSize - cursor} bytes after the last tensor (the file must end at the last tensor)`);
  return { tensors, metadata };
}

/** Decode raw little-endian bytes of a float dtype to float32. */
export function bytesToFloat32(bytes: Uint8Array, dtype: StDtype, what: string): Float32Array {
  switch (dtype) {
    case 'F32': {
      const out = new Float32Array(bytes.length / 4);
      new Uint8Array(out.buffer).set(bytes); // copy: the source may be unaligned
      return out;
    }
    case 'F16':
      return decodeF16(bytes);
    case 'BF16':
      return decodeBf16(bytes);
    case 'F64': {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const out = new Float32Array(bytes.length / 8);
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(8 * i, true);
      return out;
    }
    default:
      return fail(what, `dtype ${dtype} is not a float type`);
  }
}

/**
 * Weights must be finite: a NaN or ±Inf in a checkpoint would poison every activation downstream
 * far from its cause, so the model readers check each float tensor as they decode it and name the
 * tensor. `flatOffset` is the flat index of values[0] in the tensor (for row reads). The fast pass
 * sums x·0 in four accumulators (0 for finite x, NaN for NaN or ±Inf; ~1 ns a value); only a
 * tensor that fails it is searched for the first bad index.
 */
export function requireFiniteWeights(values: Float32Array, file: string, tensor: string, flatOffset = 0): Float32Array {
  let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  const n4 = values.length & ~3;
  for (let i = 0; i < n4; i += 4) {
    a0 += values[i]! * 0;
    a1 += values[i + 1]! * 0;
    a2 += values[i + 2]! * 0;
    a3 += values[i + 3]! * 0;
  }
  for (let i = n4; i < values.length; i++) a0 += values[i]! * 0;
  if (a0 + a1 + a2 + a3 === 0) return values;
  const i = values.findIndex((v) => !Number.isFinite(v));
  const v = values[i]!;
  return fail(file, `tensor '${tensor}' has ${Number.isNaN(v) ? 'a NaN' : `an ${v > 0 ? '+' : '-'}Inf`} at flat index ${flatOffset + i} (weights must be finite)`);
}

/** Decode raw little-endian integer bytes to JS numbers (I64/U64 must fit in 2^53). */
export function bytesToInts(bytes: Uint8Array, dtype: StDtype, what: string): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = DTYPE_BYTES[dtype];
  const n = bytes.length / size;
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const o = i * size;
    switch (dtype) {
      case 'I64':
      case 'U64': {
        const v = dtype === 'I64' ? view.getBigInt64(o, true) : view.getBigUint64(o, true);
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) fail(what, `integer ${v} does not fit in a double`);
        out[i] = Number(v);
        break;
      }
      case 'I32': out[i] = view.getInt32(o, true); break;
      case 'U32': out[i] = view.getUint32(o, true); break;
      case 'I16': out[i] = view.getInt16(o, true); break;
      case 'U16': out[i] = view.getUint16(o, true); break;
      case 'I8': out[i] = view.getInt8(o); break;
      case 'U8': case 'BOOL': out[i] = view.getUint8(o); break;
      default: fail(what, `dtype ${dtype} is not an integer type`);
    }
  }
  return out;
}

/** One .safetensors file, opened for positioned reads. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string> | null;
  private readonly byName: Map<string, StTensorInfo>;
  private fd: number | null;

  private constructor(file: string, fd: number, tensors: StTensorInfo[], metadata: Record<string, string> | null) {
    this.path = file;
    this.fd = fd;
    this.metadata = metadata;
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  static open(file: string): SafetensorsFile {
    // Stat before open, O_NONBLOCK: a FIFO or device named like a shard is refused, never waited on.
    const { fd, size } = openRegularFile(file);
    try {
      if (size < 8) fail(file, `too small to be a safetensors file (${size} bytes)`);
      const lenBytes = readExactly(fd, file, 8, 0);
      const headerLen = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true);
      if (headerLen > BigInt(MAX_HEADER_BYTES)) fail(file, `safetensors header length ${headerLen} exceeds the 100 MB limit`);
      if (Number(headerLen) > size - 8) fail(file, `safetensors header length ${headerLen} runs past the end of the file (${size} bytes)`);
      const header = readExactly(fd, file, Number(headerLen), 8);
      const { tensors, metadata } = parseHeader(file, header, size);
      return new SafetensorsFile(file, fd, tensors, metadata);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  names(): string[] {
    return [...this.byName.keys()];
  }
  has(name: string): boolean {
    return this.byName.has(name);
  }
  info(name: string): StTensorInfo {
    const t = this.byName.get(name);
    if (!t) fail(this.path, `missing tensor '${name}'`);
    return t;
  }
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    if (this.fd === null) fail(this.path, 'file is closed');
    return readExactly(this.fd, this.path, t.byteLength, t.byteOffset);
  }
  readFloat32(name: string): Float32Array {
    const t = this.info(name);
    if (this.fd !== null && widensInPlace(t.dtype)) return this.readWidened(t.byteOffset, numelOf(t.shape), t.dtype);
    return bytesToFloat32(this.readBytes(name), t.dtype, `${this.path} (tensor '${name}')`);
  }
  /** n values of a 4- or 2-byte float dtype at `offset`, read into the float32 result itself and widened there. */
  private readWidened(offset: number, n: number, dtype: StDtype): Float32Array {
    const out = new Float32Array(n);
    const width = DTYPE_BYTES[dtype];
    const bytes = new Uint8Array(out.buffer, (4 - width) * n, width * n);
    for (let off = 0; off < bytes.length; ) {
      const got = fs.readSync(this.fd!, bytes, off, bytes.length - off, offset + off);
      if (got === 0) fail(this.path, `unexpected end of file reading ${bytes.length} bytes at ${offset}`);
      off += got;
    }
    widen(out, dtype);
    return out;
  }
  readInt(name: string): number[] {
    const t = this.info(name);
    return bytesToInts(this.readBytes(name), t.dtype, `${this.path} (tensor '${name}')`);
  }
  /** Rows [start, start+count) of a tensor whose first axis is rows, as float32 (one positioned read). */
  readFloat32Rows(name: string, start: number, count: number): Float32Array {
    const t = this.info(name);
    const rows = t.shape[0] ?? 1;
    if (start < 0 || count < 0 || start + count > rows) fail(this.path, `tensor '${name}': rows [${start}, ${start + count}) out of range (${rows} rows)`);
    const rowBytes = rows === 0 ? 0 : t.byteLength / rows;
    if (this.fd === null) fail(this.path, 'file is closed');
    if (widensInPlace(t.dtype)) return this.readWidened(t.byteOffset + rowBytes * start, (rowBytes * count) / DTYPE_BYTES[t.dtype], t.dtype);
    const bytes = readExactly(this.fd, this.path, rowBytes * count, t.byteOffset + rowBytes * start);
    return bytesToFloat32(bytes, t.dtype, `${this.path} (tensor '${name}')`);
  }
  /**
   * A float tensor (F32, F16 or BF16) as float32 straight into `dest` (its numel values), checked
   * finite. The read is asynchronous (libuv's pool: it overlaps work on the main thread, such as an
   * ONNX Runtime run) and lands in dest's own memory: 2-byte values in its upper half, then widened
   * in place — no intermediate buffer, and a reused `dest` costs no fresh pages. Other dtypes: the
   * plain read, copied in.
   */
  async readFloat32Into(name: string, dest: Float32Array): Promise<Float32Array> {
    const t = this.info(name);
    const n = numelOf(t.shape);
    const what = `${this.path} (tensor '${name}')`;
    if (dest.length !== n) throw new Error(`readFloat32Into ${what}: destination has ${dest.length} values, the tensor ${n}`);
    if (this.fd === null) fail(this.path, 'file is closed');
    const width = DTYPE_BYTES[t.dtype];
    if (!widensInPlace(t.dtype)) {
      dest.set(requireFiniteWeights(bytesToFloat32(this.readBytes(name), t.dtype, what), this.path, name));
      return dest;
    }
    const bytes = new Uint8Array(dest.buffer, dest.byteOffset + (4 - width) * n, width * n);
    await readExactlyAsync(this.fd, this.path, bytes, t.byteOffset);
    // 2-byte dtypes say whether every value was finite as they widen; the search for the first bad
    // one (and its message) is requireFiniteWeights's.
    if (t.dtype === 'F32' || !widen(dest, t.dtype)) requireFiniteWeights(dest, this.path, name);
    return dest;
  }
  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Float dtypes read straight into a float32 array's memory (and widened there when 2 bytes wide). */
function widensInPlace(dtype: StDtype): boolean {
  return LITTLE_ENDIAN_HOST && (dtype === 'F32' || dtype === 'F16' || dtype === 'BF16');
}

/** Widen the values in dest's upper half in place (F32: nothing to do); false when a 2-byte value is NaN or ±Inf. */
function widen(dest: Float32Array, dtype: StDtype): boolean {
  if (dtype === 'BF16') return widenBf16InPlace(dest);
  if (dtype === 'F16') return widenF16InPlace(dest);
  return true;
}

/** Fill `target` from `fd` at `position` on libuv's pool; a short file or an I/O error is one line naming the file. */
function readExactlyAsync(fd: number, file: string, target: Uint8Array, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let off = 0;
    const step = (): void => {
      fs.read(fd, target, off, target.length - off, position + off, (err, got) => {
        try {
          if (err) throw asUserFsError(err, file);
          if (got === 0) fail(file, `unexpected end of file reading ${target.length} bytes at ${position}`);
        } catch (e) {
          reject(e);
          return;
        }
        off += got;
        if (off < target.length) step();
        else resolve();
      });
    };
    if (target.length === 0) resolve();
    else step();
  });
}

/**
 * dest's upper half holds n BF16 values; widen them to float32 in place, front to back: value i is
 * read from bytes [2n+2i, 2n+2i+2) and then written to [4i, 4i+4), which ends at or before where
 * value i+1 is read (4i+4 <= 2n+2i+2 for i <= n-1), so nothing is overwritten before it is read.
 * The finite check rides along (false when any value is NaN or ±Inf: exponent bits all ones).
 */
function widenBf16InPlace(dest: Float32Array): boolean {
  const n = dest.length;
  const bits = new Uint32Array(dest.buffer, dest.byteOffset, n);
  let bad = 0;
  let i = 0;
  if (n % 2 === 0) {
    // Two values per 32-bit read (the pair's second value is the high half); the same order
    // argument holds: pair j is read from [2n+4j, 2n+4j+4) and written to [8j, 8j+8).
    const pairs = new Uint32Array(dest.buffer, dest.byteOffset + 2 * n, n / 2);
    for (let j = 0; j < n / 2; j++) {
      const x = pairs[j]!;
      bad |= (x & 0x7f807f80) + 0x00800080;
      bits[2 * j] = x << 16;
      bits[2 * j + 1] = x & 0xffff0000;
    }
    i = n;
  }
  const halves = new Uint16Array(dest.buffer, dest.byteOffset + 2 * n, n);
  for (; i < n; i++) {
    const h = halves[i]!;
    bad |= (h & 0x7f80) + 0x80;
    bits[i] = h << 16;
  }
  return (bad & 0x80008000) === 0;
}

/** F16 the same way (decoded value by value; NaN/Inf when the exponent bits are all ones). */
function widenF16InPlace(dest: Float32Array): boolean {
  const n = dest.length;
  const halves = new Uint16Array(dest.buffer, dest.byteOffset + 2 * n, n);
  let bad = 0;
  for (let i = 0; i < n; i++) {
    const h = halves[i]!;
    bad |= (h & 0x7c00) + 0x400;
    dest[i] = f16BitsToF32(h);
  }
  return (bad & 0x8000) === 0;
}

export const INDEX_FILE = 'model.safetensors.index.json';
/** A shard index lists every tensor name once (~100 bytes each): 64 MiB is ~600k tensors. */
export const MAX_INDEX_BYTES = 64 * MiB;

/**
 * A checkpoint: one .safetensors file, a directory holding `model.safetensors`, or a sharded
 * directory with `model.safetensors.index.json` (`weight_map`: tensor name → shard file).
 * Shards are opened lazily; every tensor must be in exactly the shard the index names.
 */
export class SafetensorsCheckpoint {
  readonly location: string;
  private readonly shardOf: Map<string, string>;
  private readonly open_: Map<string, SafetensorsFile> = new Map();

  private constructor(location: string, shardOf: Map<string, string>) {
    this.location = location;
    this.shardOf = shardOf;
  }

  static open(dirOrFile: string): SafetensorsCheckpoint {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(dirOrFile);
    } catch {
      return fail(dirOrFile, 'no such file or directory');
    }
    if (stat.isFile()) {
      const f = SafetensorsFile.open(dirOrFile);
      const ck = new SafetensorsCheckpoint(dirOrFile, new Map(f.names().map((n) => [n, dirOrFile])));
      ck.open_.set(dirOrFile, f);
      return ck;
    }
    const indexPath = path.join(dirOrFile, INDEX_FILE);
    if (entryExists(indexPath)) {
      const index: unknown = readJsonFile(indexPath, { within: dirOrFile, maxBytes: MAX_INDEX_BYTES, what: 'a shard index' });
      const map = (index as { weight_map?: unknown })?.weight_map;
      if (typeof map !== 'object' || map === null || Array.isArray(map)) fail(indexPath, "missing 'weight_map' object");
      const shardOf = new Map<string, string>();
      const shards = new Set<string>();
      for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
        if (CONTROL_CHARS.test(name)) fail(indexPath, `tensor name ${JSON.stringify(name)} contains control characters`);
        if (typeof shard !== 'string' || shard.length === 0 || CONTROL_CHARS.test(shard) || shard.includes('/') || shard.includes('\\') || shard.startsWith('.')) {
          fail(indexPath, `tensor '${name}': shard ${JSON.stringify(shard)} is not a plain file name in this directory`);
        }
        shardOf.set(name, path.join(dirOrFile, shard));
        shards.add(shard);
      }
      const ck = new SafetensorsCheckpoint(dirOrFile, shardOf);
      for (const shard of shards) {
        const file = path.join(dirOrFile, shard);
        if (!entryExists(file)) fail(indexPath, `names shard '${shard}', which does not exist`);
        requireInsideModelDir(dirOrFile, file);
      }
      // Validate every shard's header now (cheap: headers only) and cross-check the index.
      try {
        const claimed = new Map<string, string>();
        for (const shard of shards) {
          const file = path.join(dirOrFile, shard);
          const f = ck.shard(file);
          for (const n of f.names()) {
            const prev = claimed.get(n);
            if (prev) fail(indexPath, `tensor '${n}' appears in two shards ('${prev}' and '${shard}')`);
            claimed.set(n, shard);
            if (shardOf.get(n) !== file) fail(file, `tensor '${n}' is in this shard but the index names ${shardOf.has(n) ? `'${path.basename(shardOf.get(n)!)}'` : 'no shard'} for it`);
          }
        }
        for (const [n, file] of shardOf) if (!claimed.has(n)) fail(indexPath, `tensor '${n}' is not in its shard '${path.basename(file)}'`);
      } catch (e) {
        ck.close(); // no file handles left behind by a checkpoint that failed to open
        throw e;
      }
      return ck;
    }
    const single = path.join(dirOrFile, 'model.safetensors');
    if (entryExists(single)) {
      requireInsideModelDir(dirOrFile, single);
      regularFileSize(single, 'file not found', 'regular file');
      return SafetensorsCheckpoint.open(single);
    }
    return fail(dirOrFile, `no model.safetensors or ${INDEX_FILE} in this directory`);
  }

  private shard(file: string): SafetensorsFile {
    let f = this.open_.get(file);
    if (!f) {
      f = SafetensorsFile.open(file);
      this.open_.set(file, f);
    }
    return f;
  }
  private fileFor(name: string): SafetensorsFile {
    const file = this.shardOf.get(name);
    if (!file) fail(this.location, `missing tensor '${name}'`);
    return this.shard(file);
  }
  names(): string[] {
    return [...this.shardOf.keys()];
  }
  has(name: string): boolean {
    return this.shardOf.has(name);
  }
  info(name: string): StTensorInfo {
    return this.fileFor(name).info(name);
  }
  /** The file that holds a tensor (for error messages). */
  file(name: string): string {
    return this.fileFor(name).path;
  }
  readBytes(name: string): Uint8Array {
    return this.fileFor(name).readBytes(name);
  }
  readFloat32(name: string): Float32Array {
    return this.fileFor(name).readFloat32(name);
  }
  readInt(name: string): number[] {
    return this.fileFor(name).readInt(name);
  }
  readFloat32Rows(name: string, start: number, count: number): Float32Array {
    return this.fileFor(name).readFloat32Rows(name, start, count);
  }
  readFloat32Into(name: string, dest: Float32Array): Promise<Float32Array> {
    return this.fileFor(name).readFloat32Into(name, dest);
  }
  close(): void {
    for (const f of this.open_.values()) f.close();
    this.open_.clear();
  }
}

export type StData = Float32Array | Float64Array | Int32Array | Uint8Array | Int8Array | Int16Array | Uint16Array | Uint32Array | BigInt64Array | number[];

export interface StTensorToWrite {
  dtype: StDtype;
  shape: number[];
  /** Values; Float32Array/number[] are encoded to the dtype; a Uint8Array with a non-U8 dtype is taken as raw little-endian bytes. */
  data: StData;
}

function encodeData(name: string, t: StTensorToWrite): Uint8Array {
  const n = numelOf(t.shape);
  const { dtype, data } = t;
  if (data instanceof Uint8Array && dtype !== 'U8' && dtype !== 'BOOL') {
    if (data.length !== n * DTYPE_BYTES[dtype]) throw new Error(`tensor '${name}': ${data.length} raw bytes for ${n} × ${dtype}`);
    return data;
  }
  if (data.length !== n) throw new Error(`tensor '${name}': ${data.length} values for shape [${t.shape.join(', ')}]`);
  const out = new Uint8Array(n * DTYPE_BYTES[dtype]);
  const view = new DataView(out.buffer);
  switch (dtype) {
    case 'F16': return encodeF16(data as ArrayLike<number>);
    case 'BF16': return encodeBf16(data as ArrayLike<number>);
    case 'F32': for (let i = 0; i < n; i++) view.setFloat32(4 * i, Number(data[i]), true); break;
    case 'F64': for (let i = 0; i < n; i++) view.setFloat64(8 * i, Number(data[i]), true); break;
    case 'I64': for (let i = 0; i < n; i++) view.setBigInt64(8 * i, BigInt(data[i]!), true); break;
    case 'U64': for (let i = 0; i < n; i++) view.setBigUint64(8 * i, BigInt(data[i]!), true); break;
    case 'I32': for (let i = 0; i < n; i++) view.setInt32(4 * i, Number(data[i]), true); break;
    case 'U32': for (let i = 0; i < n; i++) view.setUint32(4 * i, Number(data[i]), true); break;
    case 'I16': for (let i = 0; i < n; i++) view.setInt16(2 * i, Number(data[i]), true); break;
    case 'U16': for (let i = 0; i < n; i++) view.setUint16(2 * i, Number(data[i]), true); break;
    case 'I8': for (let i = 0; i < n; i++) view.setInt8(i, Number(data[i])); break;
    case 'U8': case 'BOOL': for (let i = 0; i < n; i++) view.setUint8(i, Number(data[i])); break;
  }
  return out;
}

/** Serialise tensors (in the given order) to safetensors bytes: [length, header, ...data]. */
export function encodeSafetensors(tensors: Record<string, StTensorToWrite>, metadata?: Record<string, string>): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (name === '__metadata__') throw new Error("'__metadata__' is not a tensor name");
    const bytes = encodeData(name, t);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
    blobs.push(bytes);
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // pad so the data starts 8-byte aligned, like the reference writer
  const headerBytes = Buffer.from(json, 'utf8');
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  return [len, headerBytes, ...blobs];
}

/** Write a .safetensors file atomically (temp + rename). */
export function writeSafetensors(file: string, tensors: Record<string, StTensorToWrite>, metadata?: Record<string, string>): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}

/** Read every float tensor of a file as float32 (for goldens and small files). */
export function readAllFloat32(file: string): Record<string, { shape: number[]; data: Float32Array }> {
  const f = SafetensorsFile.open(file);
  try {
    const out: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const n of f.names()) {
      const info = f.info(n);
      if (['F64', 'F32', 'F16', 'BF16'].includes(info.dtype)) out[n] = { shape: info.shape, data: f.readFloat32(n) };
    }
    return out;
  } finally {
    f.close();
  }
}
