/**
 * torch.save byte layouts assembled by hand, independently of src/formats/torch*.ts: pickle
 * opcodes written out one by one, and zip records laid out field by field (APPNOTE.TXT), with
 * knobs to lie about sizes, CRCs, names and methods. The torch tests build expected and hostile
 * files from these.
 */

// ---------------------------------------------------------------------------------------------
// Pickle opcodes (pickletools names)

const enc = new TextEncoder();
const u32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];

export const op = {
  PROTO: (v: number) => [0x80, v],
  STOP: [0x2e],
  MARK: [0x28],
  GLOBAL: (module: string, name: string) => [0x63, ...enc.encode(`${module}\n${name}\n`)],
  STACK_GLOBAL: [0x93],
  REDUCE: [0x52],
  BUILD: [0x62],
  BINPERSID: [0x51],
  EMPTY_TUPLE: [0x29],
  TUPLE: [0x74],
  TUPLE1: [0x85],
  TUPLE2: [0x86],
  EMPTY_LIST: [0x5d],
  APPEND: [0x61],
  EMPTY_DICT: [0x7d],
  SETITEM: [0x73],
  SETITEMS: [0x75],
  NEWFALSE: [0x89],
  NONE: [0x4e],
  BINUNICODE: (s: string) => {
    const b = enc.encode(s);
    return [0x58, ...u32(b.length), ...b];
  },
  BININT1: (v: number) => [0x4b, v],
  BININT: (v: number) => [0x4a, ...u32(v >>> 0)],
  LONG1: (bytes: number[]) => [0x8a, bytes.length, ...bytes],
  BINPUT: (i: number) => [0x71, i],
  BINGET: (i: number) => [0x68, i],
};

export function bytesOf(...parts: (number[] | number)[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((p) => (typeof p === 'number' ? [p] : p)));
}

/** An int the way Python's pickler writes it (protocol 2): BININT1 < 256, BININT2 < 65536, else BININT. */
export function pyInt(v: number): number[] {
  if (v >= 0 && v < 256) return op.BININT1(v);
  if (v >= 0 && v < 65536) return [0x4d, v & 0xff, v >> 8];
  return op.BININT(v);
}

/** A tuple of ints the way Python writes it: EMPTY_TUPLE, TUPLE1-3, else MARK … TUPLE. */
export function intTuple(values: number[]): number[] {
  if (values.length === 0) return op.EMPTY_TUPLE;
  const items = values.flatMap(pyInt);
  return values.length <= 3 ? [...items, 0x85 + values.length - 1] : [...op.MARK, ...items, ...op.TUPLE];
}

export interface TensorSpec {
  name: string;
  /** torch storage class name: FloatStorage, HalfStorage, BFloat16Storage, LongStorage, ... */
  storage: string;
  key: string;
  numel: number;
  offset: number;
  size: number[];
  stride: number[];
}

/** One `name: _rebuild_tensor_v2((storage pid), offset, size, stride, False, OrderedDict())` pair, no memo. */
export function tensorItem(t: TensorSpec): number[] {
  return [
    ...op.BINUNICODE(t.name),
    ...op.GLOBAL('torch._utils', '_rebuild_tensor_v2'),
    ...op.MARK,
    ...op.MARK, ...op.BINUNICODE('storage'), ...op.GLOBAL('torch', t.storage), ...op.BINUNICODE(t.key), ...op.BINUNICODE('cpu'), ...pyInt(t.numel), ...op.TUPLE,
    ...op.BINPERSID,
    ...pyInt(t.offset),
    ...intTuple(t.size),
    ...intTuple(t.stride),
    ...op.NEWFALSE,
    ...op.GLOBAL('collections', 'OrderedDict'), ...op.EMPTY_TUPLE, ...op.REDUCE,
    ...op.TUPLE,
    ...op.REDUCE,
  ];
}

/**
 * A whole state-dict pickle: OrderedDict of the tensors, then `_metadata` (OrderedDict of module
 * path -> {'version': 1}, default just '') via BUILD unless `metadata` is false.
 */
export function stateDictPickle(tensors: TensorSpec[], opts: { metadata?: boolean; modules?: string[]; extraItems?: number[] } = {}): Uint8Array {
  const body = [
    ...op.PROTO(2),
    ...op.GLOBAL('collections', 'OrderedDict'), ...op.EMPTY_TUPLE, ...op.REDUCE,
    ...op.MARK, ...tensors.flatMap(tensorItem), ...(opts.extraItems ?? []), ...op.SETITEMS,
  ];
  if (opts.metadata !== false) {
    body.push(
      ...op.EMPTY_DICT, ...op.BINUNICODE('_metadata'),
      ...op.GLOBAL('collections', 'OrderedDict'), ...op.EMPTY_TUPLE, ...op.REDUCE,
      ...op.MARK,
      ...(opts.modules ?? ['']).flatMap((m) => [...op.BINUNICODE(m), ...op.EMPTY_DICT, ...op.BINUNICODE('version'), ...op.BININT1(1), ...op.SETITEM]),
      ...op.SETITEMS,
      ...op.SETITEM, ...op.BUILD,
    );
  }
  body.push(...op.STOP);
  return Uint8Array.from(body);
}

// ---------------------------------------------------------------------------------------------
// Zip records, laid out field by field

export interface ZipEntrySpec {
  name: string;
  data: Uint8Array;
  /** Lie in both headers about the size. */
  declaredSize?: number;
  /** Lie about the CRC (both headers). */
  crc?: number;
  method?: number;
  /** Pad the local extra field so the data starts at a multiple of this. */
  align?: number;
  /** Point the central entry at another local header offset (entry index). */
  localOf?: number;
}

let table: Uint32Array | null = null;
/** CRC-32 (IEEE), bit by bit — independent of the src helpers. */
export function crc32(data: Uint8Array): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? (0xedb88320 ^ (c >>> 1)) >>> 0 : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (const b of data) c = (table[(c ^ b) & 0xff]! ^ (c >>> 8)) >>> 0;
  return (c ^ 0xffffffff) >>> 0;
}

function le64(n: number): number[] {
  return [...u32(n >>> 0), ...u32(Math.floor(n / 2 ** 32))];
}

function le(n: number, width: 2 | 4): number[] {
  return width === 2 ? [n & 0xff, (n >>> 8) & 0xff] : u32(n);
}

/**
 * The zip. `zip64`: the central entries' sizes and offsets saturated (0xFFFFFFFF) with the real
 * values in a zip64 extra field, and a zip64 end record + locator before a saturated end record.
 */
export function zipBytes(entries: ZipEntrySpec[], opts: { zip64?: boolean } = {}): Uint8Array {
  const out: number[] = [];
  const offsets: number[] = [];
  const central: number[] = [];
  for (const e of entries) {
    const name = [...enc.encode(e.name)];
    const size = e.declaredSize ?? e.data.length;
    const crc = e.crc ?? crc32(e.data);
    offsets.push(out.length);
    let extra: number[] = [];
    if (e.align) {
      const start = out.length + 30 + name.length + 4;
      const pad = (e.align - (start % e.align)) % e.align;
      extra = [0x99, 0x99, ...le(pad, 2), ...new Array(pad).fill(0)];
    }
    out.push(...le(0x04034b50, 4), ...le(20, 2), ...le(0, 2), ...le(e.method ?? 0, 2), ...le(0, 2), ...le(0, 2), ...le(crc, 4), ...le(size, 4), ...le(size, 4));
    out.push(...le(name.length, 2), ...le(extra.length, 2), ...name, ...extra, ...e.data);
  }
  entries.forEach((e, i) => {
    const name = [...enc.encode(e.name)];
    const size = e.declaredSize ?? e.data.length;
    const crc = e.crc ?? crc32(e.data);
    const offset = offsets[e.localOf ?? i]!;
    const x = opts.zip64 ? 0xffffffff : -1;
    const extra = opts.zip64 ? [...le(0x0001, 2), ...le(24, 2), ...le64(size), ...le64(size), ...le64(offset)] : [];
    central.push(...le(0x02014b50, 4), ...le(45, 2), ...le(45, 2), ...le(0, 2), ...le(e.method ?? 0, 2), ...le(0, 2), ...le(0, 2), ...le(crc, 4));
    central.push(...le(x >= 0 ? x : size, 4), ...le(x >= 0 ? x : size, 4));
    central.push(...le(name.length, 2), ...le(extra.length, 2), ...le(0, 2), ...le(0, 2), ...le(0, 2), ...le(0, 4), ...le(x >= 0 ? x : offset, 4), ...name, ...extra);
  });
  const cdOffset = out.length;
  out.push(...central);
  if (opts.zip64) {
    const rec = out.length;
    out.push(...le(0x06064b50, 4), ...le64(44), ...le(45, 2), ...le(45, 2), ...le(0, 4), ...le(0, 4));
    out.push(...le64(entries.length), ...le64(entries.length), ...le64(central.length), ...le64(cdOffset));
    out.push(...le(0x07064b50, 4), ...le(0, 4), ...le64(rec), ...le(1, 4));
    out.push(...le(0x06054b50, 4), ...le(0, 2), ...le(0, 2), ...le(0xffff, 2), ...le(0xffff, 2), ...le(0xffffffff, 4), ...le(0xffffffff, 4), ...le(0, 2));
  } else {
    out.push(...le(0x06054b50, 4), ...le(0, 2), ...le(0, 2), ...le(entries.length, 2), ...le(entries.length, 2), ...le(central.length, 4), ...le(cdOffset, 4), ...le(0, 2));
  }
  return Uint8Array.from(out);
}

/** float32 values as little- (or big-) endian bytes. */
export function f32Bytes(values: number[], bigEndian = false): Uint8Array {
  const b = new Uint8Array(4 * values.length);
  const dv = new DataView(b.buffer);
  values.forEach((v, i) => dv.setFloat32(4 * i, v, !bigEndian));
  return b;
}

/** The records of a torch.save file around a pickle: `prefix/data.pkl`, `prefix/data/<key>`, `byteorder`, `version`. */
export function torchFile(prefix: string, pickle: Uint8Array, storages: Record<string, Uint8Array>, opts: { byteorder?: string; align?: number; extra?: ZipEntrySpec[]; zip64?: boolean } = {}): Uint8Array {
  const entries: ZipEntrySpec[] = [{ name: `${prefix}/data.pkl`, data: pickle, align: opts.align }];
  if (opts.byteorder) entries.push({ name: `${prefix}/byteorder`, data: enc.encode(opts.byteorder), align: opts.align });
  for (const [key, data] of Object.entries(storages)) entries.push({ name: `${prefix}/data/${key}`, data, align: opts.align });
  entries.push({ name: `${prefix}/version`, data: enc.encode('3\n'), align: opts.align });
  entries.push(...(opts.extra ?? []));
  return zipBytes(entries, { zip64: opts.zip64 });
}

/** The scripts' adapter (N layers, hidden D) as TensorSpecs + storages, values from `value(name, j)`. */
export function scriptsAdapter(n: number, d: number, value: (name: string, j: number) => number): { tensors: TensorSpec[]; storages: Record<string, Uint8Array> } {
  const tensors: TensorSpec[] = [];
  const storages: Record<string, Uint8Array> = {};
  let key = 0;
  for (const fam of ['gate_bias', 'gate_scale', 'output_scale', 'mix_alpha'] as const) {
    for (let i = 0; i < n; i++) {
      const name = `${fam}.${i}`;
      const numel = fam === 'output_scale' ? d : 1;
      const size = fam === 'output_scale' ? [d] : fam === 'mix_alpha' ? [] : [1];
      tensors.push({ name, storage: 'FloatStorage', key: String(key), numel, offset: 0, size, stride: size.length ? [1] : [] });
      storages[String(key)] = f32Bytes(Array.from({ length: numel }, (_, j) => value(name, j)));
      key++;
    }
  }
  return { tensors, storages };
}
