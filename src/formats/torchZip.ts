/**
 * The zip container of `torch.save` files (PyTorch ≥ 1.6): stored (uncompressed) entries under
 * one top-level directory (the file's stem or `archive`), each record's data aligned to 64 bytes
 * by padding the local header's extra field. A minimal reader and writer of our own, because the
 * writer must control that alignment and the reader must be strict: these files come from the
 * internet, so every size, offset, name and CRC is checked before anything is used.
 *
 * Layout (APPNOTE.TXT): local records [header, name, extra, data]…, the central directory (one
 * entry per record), the end-of-central-directory record (zip64 variants where sizes need them).
 */
import zlib from 'node:zlib';
import { fail } from '../util/errors.ts';
import { readSmallRegularFile } from '../util/fileio.ts';

/** Largest .pt file we read: an adapter is kilobytes to a few megabytes. */
export const TORCH_ZIP_MAX_BYTES = 256 * 1024 * 1024;
/** Most entries we accept (a state dict of N tensors has N + ~6 records). */
export const TORCH_ZIP_MAX_ENTRIES = 65536;
/** Data alignment torch.save uses (`.storage_alignment`). */
export const TORCH_ZIP_ALIGNMENT = 64;

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const LOCAL_FIXED = 30;
const CENTRAL_FIXED = 46;
const EOCD_FIXED = 22;
/** Extra-field id torch uses for its alignment padding ("FB"). */
const PAD_EXTRA_ID = 0x4246;

// ---------------------------------------------------------------------------------------------
// CRC-32 (zlib.crc32 from Node 20.15; the table version for older 20.x)

let crcTable: Uint32Array | null = null;
function crc32Slow(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
export function crc32(data: Uint8Array): number {
  const native = (zlib as unknown as { crc32?: (d: Uint8Array) => number }).crc32;
  return native ? native(data) >>> 0 : crc32Slow(data);
}

// ---------------------------------------------------------------------------------------------
// Reading

export interface TorchZip {
  file: string;
  /** The top-level directory every entry lives under (`archive`, or the file's stem). */
  prefix: string;
  /** Entry contents by name relative to the prefix (`data.pkl`, `data/0`, `byteorder`, ...). */
  records: Map<string, Uint8Array>;
}

/** Why an entry name is unsafe, or null. */
function unsafeName(name: string): string | null {
  if (name.length === 0) return 'an empty entry name';
  if (name.includes('\0')) return 'an entry name with a NUL byte';
  if (name.includes('\\')) return `entry name ${JSON.stringify(name)} has a backslash`;
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) return `absolute entry name ${JSON.stringify(name)}`;
  if (name.split('/').some((p) => p === '..' || p === '.')) return `entry name ${JSON.stringify(name)} has a '..' or '.' component`;
  return null;
}

interface CentralEntry {
  name: string;
  flags: number;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

/** Zip64 extended-information extra field: the 64-bit values of the saturated 32-bit fields, in order. */
function applyZip64Extra(file: string, e: CentralEntry, extra: Uint8Array): void {
  const dv = new DataView(extra.buffer, extra.byteOffset, extra.byteLength);
  for (let p = 0; p + 4 <= extra.length; ) {
    const id = dv.getUint16(p, true);
    const len = dv.getUint16(p + 2, true);
    if (p + 4 + len > extra.length) fail(file, `zip entry ${JSON.stringify(e.name)}: extra field runs past its end`);
    if (id === 0x0001) {
      let q = p + 4;
      const take = (): number => {
        if (q + 8 > p + 4 + len) fail(file, `zip entry ${JSON.stringify(e.name)}: zip64 extra field too short`);
        const v = dv.getBigUint64(q, true);
        q += 8;
        if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(file, `zip entry ${JSON.stringify(e.name)}: zip64 size/offset ${v} is out of range`);
        return Number(v);
      };
      if (e.size === 0xffffffff) e.size = take();
      if (e.compressedSize === 0xffffffff) e.compressedSize = take();
      if (e.localOffset === 0xffffffff) e.localOffset = take();
    }
    p += 4 + len;
  }
}

/** The end-of-central-directory record: where the central directory is and how many entries it has. */
function findCentralDirectory(file: string, bytes: Uint8Array): { count: number; offset: number; size: number; end: number } {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < EOCD_FIXED) fail(file, `not a torch.save zip file (${bytes.length} bytes, too short)`);
  const lowest = Math.max(0, bytes.length - EOCD_FIXED - 0xffff);
  let at = -1;
  for (let p = bytes.length - EOCD_FIXED; p >= lowest; p--) {
    if (dv.getUint32(p, true) === SIG_EOCD && p + EOCD_FIXED + dv.getUint16(p + 20, true) === bytes.length) {
      at = p;
      break;
    }
  }
  if (at < 0) {
    const head = bytes.length >= 4 ? dv.getUint32(0, true) : 0;
    fail(file, head === SIG_LOCAL ? 'truncated or damaged zip file (no end-of-central-directory record)' : 'not a torch.save zip file (no zip end-of-central-directory record; legacy pre-1.6 torch files are not supported)');
  }
  if (dv.getUint16(at + 4, true) !== 0 || dv.getUint16(at + 6, true) !== 0) fail(file, 'multi-disk zip files are not supported');
  let count = dv.getUint16(at + 10, true);
  let size = dv.getUint32(at + 12, true);
  let offset = dv.getUint32(at + 16, true);
  if (dv.getUint16(at + 8, true) !== count) fail(file, 'zip end record: entry counts disagree');
  let end = at;
  if (count === 0xffff || size === 0xffffffff || offset === 0xffffffff) {
    const loc = at - 20;
    if (loc < 0 || dv.getUint32(loc, true) !== SIG_ZIP64_LOCATOR) fail(file, 'zip end record has zip64 markers but no zip64 locator');
    const rec64 = dv.getBigUint64(loc + 8, true);
    if (rec64 > BigInt(loc - 56) || rec64 < 0n) fail(file, `zip64 end record offset ${rec64} is out of range`);
    const r = Number(rec64);
    if (dv.getUint32(r, true) !== SIG_ZIP64_EOCD) fail(file, 'zip64 end record not found where its locator points');
    const big = (o: number, what: string): number => {
      const v = dv.getBigUint64(r + o, true);
      if (v > BigInt(bytes.length)) fail(file, `zip64 end record: ${what} ${v} exceeds the file size ${bytes.length}`);
      return Number(v);
    };
    count = big(32, 'entry count');
    size = big(40, 'central directory size');
    offset = big(48, 'central directory offset');
    end = r;
  }
  if (offset + size > end) fail(file, `zip central directory (offset ${offset}, ${size} bytes) runs past its end record at ${end} (truncated or damaged file)`);
  if (count > TORCH_ZIP_MAX_ENTRIES) fail(file, `zip declares ${count} entries (at most ${TORCH_ZIP_MAX_ENTRIES} accepted)`);
  if (count * CENTRAL_FIXED > size) fail(file, `zip declares ${count} entries but its central directory has only ${size} bytes`);
  return { count, offset, size, end };
}

/** Parse and check the zip container of a torch.save file; every record's bytes, CRC-checked. */
export function parseTorchZip(file: string, bytes: Uint8Array): TorchZip {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const cd = findCentralDirectory(file, bytes);
  const entries: CentralEntry[] = [];
  const names = new Set<string>();
  let p = cd.offset;
  for (let i = 0; i < cd.count; i++) {
    if (p + CENTRAL_FIXED > cd.offset + cd.size || dv.getUint32(p, true) !== SIG_CENTRAL) fail(file, `zip central directory entry ${i} is damaged or missing`);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    const next = p + CENTRAL_FIXED + nameLen + extraLen + commentLen;
    if (next > cd.offset + cd.size) fail(file, `zip central directory entry ${i} runs past the directory`);
    const rawName = bytes.subarray(p + CENTRAL_FIXED, p + CENTRAL_FIXED + nameLen);
    const name = new TextDecoder('utf-8', { fatal: false }).decode(rawName);
    const e: CentralEntry = {
      name,
      flags: dv.getUint16(p + 8, true),
      method: dv.getUint16(p + 10, true),
      crc: dv.getUint32(p + 16, true),
      compressedSize: dv.getUint32(p + 20, true),
      size: dv.getUint32(p + 24, true),
      localOffset: dv.getUint32(p + 42, true),
    };
    applyZip64Extra(file, e, bytes.subarray(p + CENTRAL_FIXED + nameLen, p + CENTRAL_FIXED + nameLen + extraLen));
    const bad = unsafeName(name);
    if (bad) fail(file, `refusing zip with ${bad}`);
    if (names.has(name)) fail(file, `zip has two entries named ${JSON.stringify(name)}`);
    names.add(name);
    if (e.flags & 0x1) fail(file, `zip entry ${JSON.stringify(name)} is encrypted`);
    if (e.method !== 0) fail(file, `zip entry ${JSON.stringify(name)} is compressed (method ${e.method}); torch.save files store entries uncompressed`);
    if (e.compressedSize !== e.size) fail(file, `zip entry ${JSON.stringify(name)}: stored entry declares ${e.compressedSize} stored bytes for ${e.size} bytes`);
    if (e.size > bytes.length) fail(file, `zip entry ${JSON.stringify(name)} declares ${e.size} bytes, more than the whole file (${bytes.length} bytes)`);
    entries.push(e);
    p = next;
  }
  if (entries.length === 0) fail(file, 'zip file has no entries');

  // One top-level directory holds everything.
  const prefix = entries[0]!.name.split('/')[0]!;
  for (const e of entries) {
    if (!e.name.startsWith(prefix + '/') || e.name.length === prefix.length + 1) fail(file, `zip entry ${JSON.stringify(e.name)} is not under the archive directory '${prefix}/'`);
  }

  // Local records: inside the file, before the central directory, not overlapping, CRC intact.
  const ranges: Array<[number, number, string]> = [];
  let declared = 0;
  const located: Array<{ e: CentralEntry; data: Uint8Array }> = [];
  const records = new Map<string, Uint8Array>();
  for (const e of entries) {
    const q = e.localOffset;
    if (q + LOCAL_FIXED > cd.offset || dv.getUint32(q, true) !== SIG_LOCAL) fail(file, `zip entry ${JSON.stringify(e.name)}: no local header at offset ${q} (truncated or damaged file)`);
    const nameLen = dv.getUint16(q + 26, true);
    const extraLen = dv.getUint16(q + 28, true);
    const localName = new TextDecoder().decode(bytes.subarray(q + LOCAL_FIXED, q + LOCAL_FIXED + nameLen));
    if (localName !== e.name) fail(file, `zip entry ${JSON.stringify(e.name)}: local header names ${JSON.stringify(localName)}`);
    if (dv.getUint16(q + 8, true) !== e.method) fail(file, `zip entry ${JSON.stringify(e.name)}: local and central headers disagree on the method`);
    const dataStart = q + LOCAL_FIXED + nameLen + extraLen;
    const dataEnd = dataStart + e.size;
    if (dataEnd > cd.offset) fail(file, `zip entry ${JSON.stringify(e.name)} declares ${e.size} bytes at ${dataStart}, past the end of the data (${cd.offset}); truncated file or false size`);
    if (!(e.flags & 0x8)) {
      const lcrc = dv.getUint32(q + 14, true);
      const lsize = dv.getUint32(q + 22, true);
      if ((lsize !== 0xffffffff && lsize !== e.size) || lcrc !== e.crc) fail(file, `zip entry ${JSON.stringify(e.name)}: local and central headers disagree on size or CRC`);
    }
    declared += e.size;
    ranges.push([q, dataEnd, e.name]);
    located.push({ e, data: bytes.subarray(dataStart, dataEnd) });
  }
  // Sizes and overlaps before any CRC: nested entries would make the CRC pass quadratic.
  if (declared > bytes.length) fail(file, `zip entries declare ${declared} bytes in all, more than the file's ${bytes.length}`);
  ranges.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i]![0] < ranges[i - 1]![1]) fail(file, `zip entries ${JSON.stringify(ranges[i - 1]![2])} and ${JSON.stringify(ranges[i]![2])} overlap`);
  }
  for (const { e, data } of located) {
    const actual = crc32(data);
    if (actual !== e.crc) fail(file, `zip entry ${JSON.stringify(e.name)}: CRC mismatch (stored ${hex8(e.crc)}, data ${hex8(actual)}); the file is damaged`);
    records.set(e.name.slice(prefix.length + 1), data);
  }
  return { file, prefix, records };
}

function hex8(v: number): string {
  return v.toString(16).padStart(8, '0');
}

/** Read and check a torch.save zip file (size-capped before anything is read). */
export function readTorchZip(file: string): TorchZip {
  return parseTorchZip(file, readSmallRegularFile(file, TORCH_ZIP_MAX_BYTES, 'an adapter .pt file'));
}

// ---------------------------------------------------------------------------------------------
// Writing

export interface TorchZipRecord {
  /** Name relative to the archive directory. */
  name: string;
  data: Uint8Array;
}

/**
 * The bytes of a zip in torch.save's layout: stored entries under `prefix/`, each record's data
 * starting at a multiple of 64 (extra field "FB" padded with 'Z', as torch does), no data
 * descriptors, then the central directory and end record.
 */
export function buildTorchZip(prefix: string, records: TorchZipRecord[]): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const r of records) {
    const name = Buffer.from(`${prefix}/${r.name}`, 'utf8');
    if (unsafeName(`${prefix}/${r.name}`)) throw new Error(`bad zip entry name ${prefix}/${r.name}`);
    const crc = crc32(r.data);
    const unpadded = offset + LOCAL_FIXED + name.length;
    // The padding extra field is at least its 4-byte header.
    const pad = (TORCH_ZIP_ALIGNMENT - ((unpadded + 4) % TORCH_ZIP_ALIGNMENT)) % TORCH_ZIP_ALIGNMENT;
    const extra = Buffer.alloc(4 + pad, 'Z'.charCodeAt(0));
    extra.writeUInt16LE(PAD_EXTRA_ID, 0);
    extra.writeUInt16LE(pad, 2);
    const local = Buffer.alloc(LOCAL_FIXED);
    local.writeUInt32LE(SIG_LOCAL, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0, 6); // flags
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt16LE(0, 10); // time
    local.writeUInt16LE(0x21, 12); // date 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(r.data.length, 18);
    local.writeUInt32LE(r.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(extra.length, 28);
    parts.push(local, name, extra, r.data);
    const c = Buffer.alloc(CENTRAL_FIXED);
    c.writeUInt32LE(SIG_CENTRAL, 0);
    c.writeUInt16LE(20, 4); // version made by
    c.writeUInt16LE(20, 6); // version needed
    c.writeUInt16LE(0, 8);
    c.writeUInt16LE(0, 10);
    c.writeUInt16LE(0, 12);
    c.writeUInt16LE(0x21, 14);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(r.data.length, 20);
    c.writeUInt32LE(r.data.length, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt16LE(0, 30);
    c.writeUInt16LE(0, 32);
    c.writeUInt16LE(0, 34);
    c.writeUInt16LE(0, 36);
    c.writeUInt32LE(0, 38);
    c.writeUInt32LE(offset, 42);
    central.push(c, name);
    offset += LOCAL_FIXED + name.length + extra.length + r.data.length;
  }
  const cdSize = central.reduce((a, b) => a + b.length, 0);
  if (offset + cdSize > 0xfffffff0 || records.length >= 0xffff) throw new Error('torch zip too large for the 32-bit zip format');
  const end = Buffer.alloc(EOCD_FIXED);
  end.writeUInt32LE(SIG_EOCD, 0);
  end.writeUInt16LE(records.length, 8);
  end.writeUInt16LE(records.length, 10);
  end.writeUInt32LE(cdSize, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...parts, ...central, end]);
}
