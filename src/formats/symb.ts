/**
 * The SYNAXIM `.symb` tensor file: one tensor per file, no shape header except for int4, so the
 * reader needs the shape from `config.symb.json`. Pure bytes in / bytes out; the directory-level
 * I/O lives in symbModel.ts (reading) and convert.ts (writing).
 *
 * Layouts (all little-endian, tensors flattened row-major in the HF [out, in] orientation):
 *   fp32  raw float32 values
 *   fp16  raw IEEE half values
 *   int8  float32 scale = max|x| / 127, then numel int8 values q = round(x / scale)
 *   int4  uint32 num_groups, group_size, numel, dim0, dim1 (dim1 = 1 for 1-D), then num_groups
 *         float32 scales (max|group| / 7, or 1.0 for an all-zero group), then the nibbles
 *         q + 8 with q = clip(round(x / scale), -8, 7), two per byte, high nibble first, the
 *         values zero-padded to a multiple of group_size and to an even count.
 * 1-D tensors (norms, biases) and final_norm are raw fp16 whatever the quantization method.
 *
 * The arithmetic reproduces the reference converter (numpy, float32): every division is a
 * float32 division (Math.fround of the exact quotient of two float32 values is the correctly
 * rounded float32 quotient), and `round` is round-half-to-even.
 */
import { fail } from '../util/errors.ts';
import { decodeF16, encodeF16 } from '../util/fp16.ts';

export const SYMB_METHODS = ['int4', 'int8', 'fp16', 'fp32'] as const;
export type SymbMethod = (typeof SYMB_METHODS)[number];

/** How one file is laid out: the method, except that 1-D tensors and final_norm are 'fp16'. */
export interface SymbEncoding {
  method: SymbMethod;
  /** Elements per int4 group (ignored by the other methods). */
  groupSize: number;
}

export const INT4_HEADER_BYTES = 20;
export const INT8_HEADER_BYTES = 4;

/** The encoding the reference converter uses for a tensor of this shape under `method`. */
/**
 * Largest int4 group size accepted (the header stores it as a uint32; the last group is zero-padded,
 * so a group size beyond any tensor only wastes space — 2^20 bounds that at 512 KiB a tensor).
 */
export const MAX_GROUP_SIZE = 1 << 20;

export function encodingFor(method: SymbMethod, groupSize: number, shape: readonly number[], isFinalNorm = false): SymbEncoding {
  if (shape.length === 1 || isFinalNorm) return { method: 'fp16', groupSize };
  return { method, groupSize };
}

export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Bytes of a file holding `numel` values in this encoding. */
export function symbByteLength(numel: number, enc: SymbEncoding): number {
  switch (enc.method) {
    case 'fp32':
      return 4 * numel;
    case 'fp16':
      return 2 * numel;
    case 'int8':
      return INT8_HEADER_BYTES + numel;
    case 'int4': {
      const numGroups = Math.ceil(numel / enc.groupSize);
      return INT4_HEADER_BYTES + 4 * numGroups + Math.ceil((numGroups * enc.groupSize) / 2);
    }
  }
}

/** numpy's `round` (half to even) of a float. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f; // exact for float32 inputs
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function maxAbs(values: ArrayLike<number>, start: number, end: number): number {
  let m = 0;
  for (let i = start; i < end; i++) {
    const a = Math.abs(values[i]!);
    if (a > m) m = a;
  }
  return m;
}

function requireFinite(values: ArrayLike<number>, label: string): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]!)) fail(label, `value ${values[i]} at flat index ${i} cannot be quantized (weights must be finite)`);
  }
}

/** Everything an int4 file says about itself before its data. */
export interface Int4Header {
  numGroups: number;
  groupSize: number;
  numel: number;
  dim0: number;
  dim1: number;
}

export function readInt4Header(bytes: Uint8Array, label: string): Int4Header {
  if (bytes.length < INT4_HEADER_BYTES) fail(label, `truncated: ${bytes.length} bytes, shorter than the 20-byte int4 header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, INT4_HEADER_BYTES);
  return {
    numGroups: view.getUint32(0, true),
    groupSize: view.getUint32(4, true),
    numel: view.getUint32(8, true),
    dim0: view.getUint32(12, true),
    dim1: view.getUint32(16, true),
  };
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** int4 group-wise symmetric quantization of `values` (float32) with the shape recorded in the header. */
export function encodeInt4(values: Float32Array, shape: readonly number[], groupSize: number, label = 'int4'): Uint8Array {
  if (!Number.isInteger(groupSize) || groupSize <= 0) fail(label, `group size must be a positive integer, got ${groupSize}`);
  if (shape.length < 1 || shape.length > 2) fail(label, `int4 stores 1-D or 2-D tensors, got shape [${shape.join(', ')}]`);
  const numel = values.length;
  if (numel !== numelOf(shape)) fail(label, `${numel} values for shape [${shape.join(', ')}]`);
  requireFinite(values, label);
  const numGroups = Math.ceil(numel / groupSize);
  const paddedCount = numGroups * groupSize;
  const nibbleBytes = Math.ceil(paddedCount / 2);
  const out = new Uint8Array(INT4_HEADER_BYTES + 4 * numGroups + nibbleBytes);
  const view = new DataView(out.buffer);
  view.setUint32(0, numGroups, true);
  view.setUint32(4, groupSize, true);
  view.setUint32(8, numel, true);
  view.setUint32(12, shape[0]!, true);
  view.setUint32(16, shape.length === 2 ? shape[1]! : 1, true);
  const nibbles = new Uint8Array(2 * nibbleBytes).fill(8); // padding: x = 0 quantizes to q = 0, nibble 8
  for (let g = 0; g < numGroups; g++) {
    const start = g * groupSize;
    const end = Math.min(start + groupSize, numel); // the zero padding does not change max|group|
    const m = maxAbs(values, start, end);
    const scale = m === 0 ? 1.0 : Math.fround(m / 7);
    view.setFloat32(INT4_HEADER_BYTES + 4 * g, scale, true);
    for (let i = start; i < end; i++) {
      const q = roundHalfEven(Math.fround(values[i]! / scale));
      nibbles[i] = Math.min(7, Math.max(-8, q)) + 8;
    }
  }
  const base = INT4_HEADER_BYTES + 4 * numGroups;
  for (let b = 0; b < nibbleBytes; b++) out[base + b] = (nibbles[2 * b]! << 4) | nibbles[2 * b + 1]!;
  return out;
}

/** int8 per-tensor symmetric quantization: float32 scale, then int8 values. */
export function encodeInt8(values: Float32Array, label = 'int8'): Uint8Array {
  requireFinite(values, label);
  const m = maxAbs(values, 0, values.length);
  // numpy would divide by a zero scale here; an all-zero tensor gets scale 1.0 as int4 groups do.
  const scale = m === 0 ? 1.0 : Math.fround(m / 127);
  const out = new Uint8Array(INT8_HEADER_BYTES + values.length);
  new DataView(out.buffer).setFloat32(0, scale, true);
  const q = new Int8Array(out.buffer, INT8_HEADER_BYTES);
  for (let i = 0; i < values.length; i++) {
    q[i] = Math.min(127, Math.max(-128, roundHalfEven(Math.fround(values[i]! / scale))));
  }
  return out;
}

export function encodeFp32(values: Float32Array): Uint8Array {
  const out = new Uint8Array(4 * values.length);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(4 * i, values[i]!, true);
  return out;
}

/** Encode one tensor (float32 values, row-major) as the bytes of its .symb file. */
export function encodeSymbTensor(values: Float32Array, shape: readonly number[], enc: SymbEncoding, label = 'tensor'): Uint8Array {
  if (values.length !== numelOf(shape)) fail(label, `${values.length} values for shape [${shape.join(', ')}]`);
  switch (enc.method) {
    case 'fp32':
      return encodeFp32(values);
    case 'fp16':
      return encodeF16(values);
    case 'int8':
      return encodeInt8(values, label);
    case 'int4':
      return encodeInt4(values, shape, enc.groupSize, label);
  }
}

// ---------------------------------------------------------------------------------------------
// Validation and decoding

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** What a file of `size` bytes would be for this shape under each method (for error messages). */
function sizeLooksLike(size: number, shape: readonly number[], groupSize: number, not: SymbMethod): string | null {
  const numel = numelOf(shape);
  for (const method of SYMB_METHODS) {
    if (method === not) continue;
    if (symbByteLength(numel, { method, groupSize }) === size) return `the size of an ${method} ${shapeText(shape)} tensor`;
  }
  return null;
}

/**
 * Check that a file of `byteLength` bytes beginning with `head` (at least its first 20 bytes, or
 * all of it if shorter) is a well-formed file for a tensor of `shape` in `enc`: the size, and for
 * int4 the header (group size, numel, dims, group count). Needing only the head lets a reader check
 * a whole model directory at open without reading it. `label` (the file) names every error;
 * `context` says where the expected shape comes from.
 */
export function validateSymbLayout(byteLength: number, head: Uint8Array, shape: readonly number[], enc: SymbEncoding, label: string, context = 'config.symb.json'): void {
  const numel = numelOf(shape);
  const expected = symbByteLength(numel, enc);
  const declared = `${enc.method}${enc.method === 'int4' ? ` (group size ${enc.groupSize})` : ''} ${shapeText(shape)}`;
  if (enc.method === 'int4' && byteLength >= INT4_HEADER_BYTES) {
    const h = readInt4Header(head, label);
    const fromHeader = INT4_HEADER_BYTES + 4 * h.numGroups + Math.ceil((h.numGroups * h.groupSize) / 2);
    const plausible = h.groupSize > 0 && h.numGroups === Math.ceil(h.numel / h.groupSize) && h.dim0 * h.dim1 === h.numel;
    if (!plausible || fromHeader !== byteLength) {
      const other = sizeLooksLike(byteLength, shape, enc.groupSize, 'int4');
      if (other && byteLength !== expected) fail(label, `${byteLength} bytes is ${other}, but ${context} declares ${declared} (${expected} bytes)`);
      if (!plausible) {
        fail(label, `corrupt int4 header: num_groups ${h.numGroups}, group_size ${h.groupSize}, numel ${h.numel}, dims ${h.dim0}x${h.dim1} do not agree`);
      }
      fail(label, `${byteLength} bytes, but its int4 header (num_groups ${h.numGroups}, group_size ${h.groupSize}) implies ${fromHeader} bytes${byteLength < fromHeader ? ' (truncated)' : ''}`);
    }
    const dims = shape.length === 2 ? [shape[0]!, shape[1]!] : [shape[0]!, 1];
    if (h.dim0 !== dims[0] || h.dim1 !== dims[1]) {
      fail(label, `int4 header shape ${h.dim0}x${h.dim1} disagrees with ${context} shape ${shapeText(shape)}`);
    }
    if (h.groupSize !== enc.groupSize) fail(label, `int4 header group_size ${h.groupSize} disagrees with ${context} group_size ${enc.groupSize}`);
  }
  if (byteLength !== expected) {
    const other = sizeLooksLike(byteLength, shape, enc.groupSize, enc.method);
    const why = other ? `is ${other}` : byteLength < expected ? '(truncated?)' : '(too long)';
    fail(label, `${byteLength} bytes ${why}, but ${context} declares ${declared}: expected ${expected} bytes`);
  }
}

/** validateSymbLayout on a whole file's bytes. */
export function validateSymbTensor(bytes: Uint8Array, shape: readonly number[], enc: SymbEncoding, label: string, context?: string): void {
  validateSymbLayout(bytes.length, bytes.subarray(0, INT4_HEADER_BYTES), shape, enc, label, context);
}

/**
 * int4 values [start, start + count) from the packed nibbles. `packed[0]` is byte
 * `floor(packedFrom / 2)` of the nibble area, so a caller may pass just the bytes covering the
 * range (positioned reads of embedding rows) or the whole area (packedFrom 0).
 */
export function dequantizeInt4(scales: Float32Array, groupSize: number, packed: Uint8Array, packedFrom: number, start: number, count: number): Float32Array {
  const out = new Float32Array(count);
  const byteBase = Math.floor(packedFrom / 2);
  const lut = new Float32Array(16); // (nibble - 8) * scale for the current group, in float32 as numpy computes it
  const end = start + count;
  let j = start; // flat element index
  let i = 0; // output index
  while (j < end) {
    const g = Math.floor(j / groupSize);
    const groupEnd = Math.min((g + 1) * groupSize, end);
    const scale = scales[g]!;
    for (let n = 0; n < 16; n++) lut[n] = (n - 8) * scale;
    if (j & 1) out[i++] = lut[packed[(j++ >>> 1) - byteBase]! & 0x0f]!; // a low nibble first
    for (; j + 1 < groupEnd; j += 2) {
      const byte = packed[(j >>> 1) - byteBase]!;
      out[i++] = lut[byte >>> 4]!;
      out[i++] = lut[byte & 0x0f]!;
    }
    if (j < groupEnd) out[i++] = lut[packed[(j++ >>> 1) - byteBase]! >>> 4]!; // a high nibble last
  }
  return out;
}

/** The float32 scales of a (validated) int4 file. */
export function int4Scales(bytes: Uint8Array): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const numGroups = view.getUint32(0, true);
  const scales = new Float32Array(numGroups);
  for (let g = 0; g < numGroups; g++) scales[g] = view.getFloat32(INT4_HEADER_BYTES + 4 * g, true);
  return scales;
}

/** Decode elements [start, start + count) (flat row-major indices) of a validated tensor file. */
export function decodeSymbRange(bytes: Uint8Array, enc: SymbEncoding, start: number, count: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (enc.method) {
    case 'fp32': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * (start + i), true);
      return out;
    }
    case 'fp16':
      return decodeF16(bytes.subarray(2 * start, 2 * (start + count)));
    case 'int8':
      return dequantizeInt8(view.getFloat32(0, true), bytes.subarray(INT8_HEADER_BYTES + start, INT8_HEADER_BYTES + start + count));
    case 'int4': {
      const scales = int4Scales(bytes);
      const groupSize = view.getUint32(4, true);
      return dequantizeInt4(scales, groupSize, bytes.subarray(INT4_HEADER_BYTES + 4 * scales.length), 0, start, count);
    }
  }
}

/** int8 values (as raw bytes) times the tensor's scale, in float32. */
export function dequantizeInt8(scale: number, raw: Uint8Array): Float32Array {
  const q = new Int8Array(raw.buffer, raw.byteOffset, raw.length);
  const out = new Float32Array(raw.length);
  for (let i = 0; i < q.length; i++) out[i] = q[i]! * scale;
  return out;
}

/** Validate and decode a whole tensor file to float32 (row-major, the given shape). */
export function decodeSymbTensor(bytes: Uint8Array, shape: readonly number[], enc: SymbEncoding, label = 'tensor', context?: string): Float32Array {
  validateSymbTensor(bytes, shape, enc, label, context);
  if (enc.method === 'fp16') return decodeF16(bytes);
  return decodeSymbRange(bytes, enc, 0, numelOf(shape));
}

