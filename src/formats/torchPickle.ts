/**
 * The `data.pkl` of a torch.save state dict: a restricted unpickler of our own and the matching
 * writer. Pickle is a program for a stack machine that can call any importable function; this
 * reader is a separate interpreter that knows only the opcodes a state dict of float tensors uses
 * (protocol 2, as torch.save writes it) and only these globals:
 *   collections.OrderedDict             — the state dict, the `_metadata`, empty backward hooks
 *   torch._utils._rebuild_tensor_v2     — a tensor view of a storage
 *   torch.FloatStorage / HalfStorage / BFloat16Storage — storage types in persistent ids
 * REDUCE applies only those two callables to the arguments they take, BUILD only sets a state
 * dict's `_metadata`. Anything else (another global, another opcode, a call of anything else) is
 * refused at the byte it appears, in one line. Nothing is ever executed: "calling" an allowed
 * global builds a plain data record here. (Modelled on PyTorch's `weights_only` unpickler.)
 */
import { fail } from '../util/errors.ts';

// ---------------------------------------------------------------------------------------------
// The values the reader builds

export type TorchFloatDtype = 'float32' | 'float16' | 'bfloat16';
export const STORAGE_DTYPES: Record<string, TorchFloatDtype> = {
  'torch.FloatStorage': 'float32',
  'torch.HalfStorage': 'float16',
  'torch.BFloat16Storage': 'bfloat16',
};
const NON_FLOAT_STORAGES = [
  'Double', 'Long', 'Int', 'Short', 'Char', 'Byte', 'Bool', 'ComplexFloat', 'ComplexDouble', 'QInt8', 'QUInt8', 'QInt32', 'QUInt4x2', 'QUInt2x4', 'Untyped',
].map((t) => `torch.${t}Storage`);
const ALLOWED_CALLABLES = new Set(['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2']);

export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}
export class PyList {
  readonly items: PyValue[] = [];
}
export class PyDict {
  readonly map = new Map<string | number, PyValue>();
  /** BUILD's state (only `{'_metadata': …}` on an OrderedDict). */
  state: PyDict | null = null;
  constructor(readonly ordered: boolean) {}
}
export class PyGlobal {
  constructor(readonly name: string) {}
}
export class PyStorage {
  constructor(
    readonly dtype: TorchFloatDtype,
    readonly key: string,
    readonly location: string,
    readonly numel: number,
  ) {}
}
export class PyTensor {
  constructor(
    readonly storage: PyStorage,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}
export type PyValue = null | boolean | number | string | PyTuple | PyList | PyDict | PyGlobal | PyStorage | PyTensor;

const MARK = Symbol('mark');
type StackItem = PyValue | typeof MARK;

// ---------------------------------------------------------------------------------------------
// Opcodes

const OP = {
  PROTO: 0x80, FRAME: 0x95, STOP: 0x2e, MARK: 0x28, POP: 0x30,
  GLOBAL: 0x63, STACK_GLOBAL: 0x93, REDUCE: 0x52, BUILD: 0x62, BINPERSID: 0x51,
  EMPTY_TUPLE: 0x29, TUPLE: 0x74, TUPLE1: 0x85, TUPLE2: 0x86, TUPLE3: 0x87,
  EMPTY_LIST: 0x5d, APPEND: 0x61, APPENDS: 0x65, EMPTY_DICT: 0x7d, SETITEM: 0x73, SETITEMS: 0x75,
  BINUNICODE: 0x58, SHORT_BINUNICODE: 0x8c, BININT: 0x4a, BININT1: 0x4b, BININT2: 0x4d, LONG1: 0x8a, BINFLOAT: 0x47,
  NEWTRUE: 0x88, NEWFALSE: 0x89, NONE: 0x4e,
  BINPUT: 0x71, LONG_BINPUT: 0x72, BINGET: 0x68, LONG_BINGET: 0x6a, MEMOIZE: 0x94,
} as const;

/** Names of the opcodes we refuse, for the error message. */
const REFUSED_NAMES: Record<number, string> = {
  0x69: 'INST', 0x6f: 'OBJ', 0x81: 'NEWOBJ', 0x92: 'NEWOBJ_EX', 0x50: 'PERSID', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4',
  0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING', 0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES', 0x8e: 'BINBYTES8',
  0x56: 'UNICODE', 0x8d: 'BINUNICODE8', 0x49: 'INT', 0x4c: 'LONG', 0x8b: 'LONG4', 0x46: 'FLOAT', 0x6c: 'LIST', 0x64: 'DICT',
  0x67: 'GET', 0x70: 'PUT', 0x32: 'DUP', 0x31: 'POP_MARK', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET',
  0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

/** Bounds that keep a hostile pickle from using unbounded memory. */
const MAX_STACK = 1 << 20;
const MAX_MEMO = 1 << 20;

function typeName(v: StackItem): string {
  if (v === MARK) return 'MARK';
  if (v === null) return 'None';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  if (typeof v === 'string') return 'str';
  if (v instanceof PyTuple) return 'tuple';
  if (v instanceof PyList) return 'list';
  if (v instanceof PyDict) return v.ordered ? 'OrderedDict' : 'dict';
  if (v instanceof PyGlobal) return v.name;
  if (v instanceof PyStorage) return 'storage';
  return 'tensor';
}

/**
 * Run the restricted unpickler over `bytes`; `where` names the file in errors. Returns the
 * unpickled value (a state dict is an OrderedDict of tensors; see readTorchStateDict).
 */
export function restrictedUnpickle(bytes: Uint8Array, where: string): PyValue {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const stack: StackItem[] = [];
  const memo = new Map<number, PyValue>();
  const storages = new Map<string, PyStorage>();
  let p = 0;
  let at = 0;
  const bad = (msg: string): never => fail(where, `data.pkl: ${msg} (at byte ${at}; nothing in the file was executed)`);
  const need = (n: number) => {
    if (p + n > bytes.length) bad(`truncated pickle: an opcode needs ${n} more bytes`);
  };
  const push = (v: StackItem) => {
    if (stack.length >= MAX_STACK) bad(`pickle stack deeper than ${MAX_STACK}`);
    stack.push(v);
  };
  const pop = (): PyValue => {
    if (stack.length === 0) bad('pickle stack underflow');
    const v = stack.pop()!;
    if (v === MARK) bad('unexpected MARK on the stack');
    return v as PyValue;
  };
  const top = (): PyValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) bad('pickle stack underflow');
    return v as PyValue;
  };
  const popMark = (): PyValue[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) bad('no MARK for this opcode');
    const items = stack.splice(i) as PyValue[];
    items.shift();
    return items;
  };
  const put = (idx: number) => {
    if (!memo.has(idx) && memo.size >= MAX_MEMO) bad(`more than ${MAX_MEMO} memo entries`);
    memo.set(idx, top());
  };
  const get = (idx: number) => {
    if (!memo.has(idx)) bad(`memo entry ${idx} read before it was written`);
    push(memo.get(idx)!);
  };
  const str = (n: number): string => {
    need(n);
    try {
      return utf8.decode(bytes.subarray(p, (p += n)));
    } catch {
      return bad('string is not valid UTF-8');
    }
  };
  const resolveGlobal = (module: string, name: string): PyGlobal => {
    const full = `${module}.${name}`;
    if (ALLOWED_CALLABLES.has(full) || full in STORAGE_DTYPES) return new PyGlobal(full);
    if (NON_FLOAT_STORAGES.includes(full)) bad(`tensor storage ${full} is not a float type (only float32, float16 and bfloat16 tensors are read)`);
    return bad(`refusing pickle global ${JSON.stringify(full).slice(1, -1)} (a state dict of float tensors needs only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.Float/Half/BFloat16Storage)`);
  };
  const setItem = (d: PyValue, k: PyValue, v: PyValue) => {
    if (!(d instanceof PyDict)) bad(`SETITEM on a ${typeName(d)}, not a dict`);
    if (typeof k !== 'string' && !(typeof k === 'number' && Number.isInteger(k))) bad(`dict key of type ${typeName(k)} (only str and int keys are read)`);
    if (v === d) bad('recursive structure: a dict that contains itself');
    (d as PyDict).map.set(k as string | number, v);
  };
  const intArg = (v: PyValue, what: string): number => {
    if (typeof v !== 'number' || !Number.isInteger(v)) bad(`${what} must be an int, got ${typeName(v)}`);
    return v as number;
  };
  const intTuple = (v: PyValue, what: string): number[] => {
    if (!(v instanceof PyTuple)) bad(`${what} must be a tuple of ints, got ${typeName(v)}`);
    return (v as PyTuple).items.map((x) => intArg(x, `${what} entry`));
  };

  const reduce = (fn: PyValue, args: PyValue): PyValue => {
    if (!(fn instanceof PyGlobal) || !ALLOWED_CALLABLES.has(fn.name)) bad(`REDUCE (a call) of ${typeName(fn)} is not allowed`);
    if (!(args instanceof PyTuple)) bad(`REDUCE arguments must be a tuple, got ${typeName(args)}`);
    const a = (args as PyTuple).items;
    if ((fn as PyGlobal).name === 'collections.OrderedDict') {
      if (a.length !== 0) bad('collections.OrderedDict is only built empty here');
      return new PyDict(true);
    }
    // torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if (a.length !== 6 && a.length !== 7) bad(`_rebuild_tensor_v2 takes 6 or 7 arguments, got ${a.length}`);
    const [storage, offset, size, stride, requiresGrad, hooks, metadata] = a;
    if (!(storage instanceof PyStorage)) bad(`_rebuild_tensor_v2's first argument must be a storage, got ${typeName(storage!)}`);
    const off = intArg(offset!, 'storage offset');
    const shape = intTuple(size!, 'size');
    const strides = intTuple(stride!, 'stride');
    if (typeof requiresGrad !== 'boolean') bad(`requires_grad must be a bool, got ${typeName(requiresGrad!)}`);
    if (!(hooks instanceof PyDict) || hooks.map.size !== 0) bad('backward hooks must be an empty OrderedDict');
    if (metadata !== undefined && !(metadata instanceof PyDict && metadata.map.size === 0) && metadata !== null) bad('tensor metadata must be empty');
    if (shape.length !== strides.length) bad(`size has ${shape.length} dimensions, stride ${strides.length}`);
    return new PyTensor(storage as PyStorage, off, shape, strides);
  };

  const persistentLoad = (pid: PyValue): PyValue => {
    if (!(pid instanceof PyTuple) || pid.items.length !== 5 || pid.items[0] !== 'storage') bad('persistent id must be a (\'storage\', type, key, location, numel) tuple');
    const [, type, key, location, numel] = (pid as PyTuple).items;
    if (!(type instanceof PyGlobal) || !(type.name in STORAGE_DTYPES)) bad(`persistent id storage type ${typeName(type!)} is not a float storage`);
    if (typeof key !== 'string' || !/^[A-Za-z0-9_]{1,64}$/.test(key)) bad(`storage key ${JSON.stringify(key)} is not a plain name`);
    if (typeof location !== 'string') bad('storage location must be a str');
    const n = intArg(numel!, 'storage numel');
    if (n < 0) bad(`storage numel ${n} is negative`);
    const dtype = STORAGE_DTYPES[(type as PyGlobal).name]!;
    const seen = storages.get(key as string);
    if (seen) {
      if (seen.dtype !== dtype || seen.numel !== n) bad(`storage '${key}' is declared twice with different types or sizes`);
      return seen;
    }
    const s = new PyStorage(dtype, key as string, location as string, n);
    storages.set(key as string, s);
    return s;
  };

  for (;;) {
    if (p >= bytes.length) bad('pickle ends without STOP (truncated)');
    at = p;
    const op = bytes[p++]!;
    switch (op) {
      case OP.PROTO: {
        need(1);
        const v = bytes[p++]!;
        if (v < 2 || v > 5) bad(`pickle protocol ${v} (torch.save writes protocol 2)`);
        break;
      }
      case OP.FRAME:
        need(8);
        p += 8;
        break;
      case OP.STOP: {
        const v = pop();
        return v;
      }
      case OP.MARK:
        push(MARK);
        break;
      case OP.POP:
        if (stack.length === 0) bad('pickle stack underflow');
        stack.pop();
        break;
      case OP.GLOBAL: {
        const line = (): string => {
          const nl = bytes.indexOf(0x0a, p);
          if (nl < 0 || nl - p > 256) bad('GLOBAL name is not a short newline-terminated line');
          const s = new TextDecoder('latin1').decode(bytes.subarray(p, nl));
          p = nl + 1;
          return s;
        };
        const module = line();
        const name = line();
        push(resolveGlobal(module, name));
        break;
      }
      case OP.STACK_GLOBAL: {
        const name = pop();
        const module = pop();
        if (typeof name !== 'string' || typeof module !== 'string') bad('STACK_GLOBAL needs two strings');
        push(resolveGlobal(module as string, name as string));
        break;
      }
      case OP.REDUCE: {
        const args = pop();
        const fn = pop();
        push(reduce(fn, args));
        break;
      }
      case OP.BUILD: {
        const state = pop();
        const target = top();
        if (!(target instanceof PyDict) || !target.ordered) bad(`BUILD on a ${typeName(target)} is not allowed (only a state dict's _metadata is set)`);
        if (state === null) break;
        if (!(state instanceof PyDict) || [...state.map.keys()].some((k) => k !== '_metadata')) bad('BUILD state may only set _metadata');
        if (state === target) bad('recursive structure: BUILD with the object itself');
        (target as PyDict).state = state as PyDict;
        break;
      }
      case OP.BINPERSID:
        push(persistentLoad(pop()));
        break;
      case OP.EMPTY_TUPLE:
        push(new PyTuple([]));
        break;
      case OP.TUPLE:
        push(new PyTuple(popMark()));
        break;
      case OP.TUPLE1:
      case OP.TUPLE2:
      case OP.TUPLE3: {
        const n = op - OP.TUPLE1 + 1;
        const items: PyValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        push(new PyTuple(items));
        break;
      }
      case OP.EMPTY_LIST:
        push(new PyList());
        break;
      case OP.APPEND: {
        const v = pop();
        const l = top();
        if (!(l instanceof PyList)) bad(`APPEND to a ${typeName(l)}, not a list`);
        if (v === l) bad('recursive structure: a list that contains itself');
        (l as PyList).items.push(v);
        break;
      }
      case OP.APPENDS: {
        const items = popMark();
        const l = top();
        if (!(l instanceof PyList)) bad(`APPENDS to a ${typeName(l)}, not a list`);
        if (items.includes(l)) bad('recursive structure: a list that contains itself');
        (l as PyList).items.push(...items);
        break;
      }
      case OP.EMPTY_DICT:
        push(new PyDict(false));
        break;
      case OP.SETITEM: {
        const v = pop();
        const k = pop();
        setItem(top(), k, v);
        break;
      }
      case OP.SETITEMS: {
        const items = popMark();
        if (items.length % 2 !== 0) bad('SETITEMS with an odd number of items');
        const d = top();
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i]!, items[i + 1]!);
        break;
      }
      case OP.BINUNICODE: {
        need(4);
        const n = dv.getUint32(p, true);
        p += 4;
        push(str(n));
        break;
      }
      case OP.SHORT_BINUNICODE: {
        need(1);
        const n = bytes[p++]!;
        push(str(n));
        break;
      }
      case OP.BININT:
        need(4);
        push(dv.getInt32(p, true));
        p += 4;
        break;
      case OP.BININT1:
        need(1);
        push(bytes[p++]!);
        break;
      case OP.BININT2:
        need(2);
        push(dv.getUint16(p, true));
        p += 2;
        break;
      case OP.LONG1: {
        need(1);
        const n = bytes[p++]!;
        if (n > 8) bad(`LONG1 integer of ${n} bytes (at most 8 read)`);
        need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[p + i]!);
        if (n > 0 && bytes[p + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        p += n;
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) bad(`integer ${v} is out of range`);
        push(Number(v));
        break;
      }
      case OP.BINFLOAT:
        need(8);
        push(dv.getFloat64(p, false));
        p += 8;
        break;
      case OP.NEWTRUE:
        push(true);
        break;
      case OP.NEWFALSE:
        push(false);
        break;
      case OP.NONE:
        push(null);
        break;
      case OP.BINPUT:
        need(1);
        put(bytes[p++]!);
        break;
      case OP.LONG_BINPUT:
        need(4);
        put(dv.getUint32(p, true));
        p += 4;
        break;
      case OP.MEMOIZE:
        put(memo.size);
        break;
      case OP.BINGET:
        need(1);
        get(bytes[p++]!);
        break;
      case OP.LONG_BINGET:
        need(4);
        get(dv.getUint32(p, true));
        p += 4;
        break;
      default: {
        const name = REFUSED_NAMES[op];
        bad(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')}${name ? ` (${name})` : ''}`);
      }
    }
  }
}

/** Walk a value (the state dict's _metadata) checking it is a finite tree of plain data. */
export function checkPlainTree(v: PyValue, where: string, what: string, depth = 0, path = new Set<object>()): void {
  if (v === null || typeof v !== 'object') return;
  if (depth > 16) fail(where, `data.pkl: ${what} is nested more than 16 deep`);
  if (path.has(v)) fail(where, `data.pkl: recursive structure in ${what}`);
  if (v instanceof PyTensor || v instanceof PyStorage || v instanceof PyGlobal) fail(where, `data.pkl: ${what} holds a ${typeName(v)}`);
  path.add(v);
  const children = v instanceof PyDict ? [...v.map.values(), ...(v.state ? [v.state] : [])] : (v as PyTuple | PyList).items;
  for (const c of children) checkPlainTree(c, where, what, depth + 1, path);
  path.delete(v);
}

// ---------------------------------------------------------------------------------------------
// Writing: the pickle torch.save writes for a state dict of float32 tensors

export interface PickledTensor {
  name: string;
  /** Storage key (the record `data/<key>`). */
  key: string;
  numel: number;
  shape: number[];
}

class PickleWriter {
  private readonly out: number[] = [];
  private memoNext = 0;
  private readonly globals = new Map<string, number>();

  byte(...b: number[]): void {
    this.out.push(...b);
  }
  u32(v: number): void {
    this.out.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  }
  put(): void {
    const i = this.memoNext++;
    if (i < 256) this.byte(OP.BINPUT, i);
    else {
      this.byte(OP.LONG_BINPUT);
      this.u32(i);
    }
  }
  get(i: number): void {
    if (i < 256) this.byte(OP.BINGET, i);
    else {
      this.byte(OP.LONG_BINGET);
      this.u32(i);
    }
  }
  /** GLOBAL module\nname\n, memoized like Python's pickler (later uses are BINGETs). */
  global(module: string, name: string): void {
    const full = `${module}\n${name}\n`;
    const seen = this.globals.get(full);
    if (seen !== undefined) return this.get(seen);
    this.byte(OP.GLOBAL, ...Buffer.from(full, 'latin1'));
    this.globals.set(full, this.memoNext);
    this.put();
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.byte(OP.BINUNICODE);
    this.u32(b.length);
    this.byte(...b);
    this.put();
  }
  int(v: number): void {
    if (v >= 0 && v < 256) this.byte(OP.BININT1, v);
    else if (v >= 0 && v < 65536) this.byte(OP.BININT2, v & 0xff, v >> 8);
    else if (v >= -(2 ** 31) && v < 2 ** 31) {
      this.byte(OP.BININT);
      this.u32(v >>> 0);
    } else throw new Error(`int ${v} out of range for this writer`);
  }
  /** A tuple of ints as Python writes it (EMPTY_TUPLE / TUPLE1-3 / MARK…TUPLE), memoized unless empty. */
  intTuple(values: number[]): void {
    if (values.length === 0) return this.byte(OP.EMPTY_TUPLE);
    if (values.length > 3) this.byte(OP.MARK);
    for (const v of values) this.int(v);
    this.byte(values.length <= 3 ? OP.TUPLE1 + values.length - 1 : OP.TUPLE);
    this.put();
  }
  emptyOrderedDict(): void {
    this.global('collections', 'OrderedDict');
    this.byte(OP.EMPTY_TUPLE, OP.REDUCE);
    this.put();
  }
  /** Dict items as Python batches them: SETITEM for one, MARK … SETITEMS for 2..1000 per batch. */
  items<T>(entries: T[], writeOne: (e: T) => void): void {
    for (let i = 0; i < entries.length; i += 1000) {
      const batch = entries.slice(i, i + 1000);
      if (batch.length === 1) {
        writeOne(batch[0]!);
        this.byte(OP.SETITEM);
      } else {
        this.byte(OP.MARK);
        batch.forEach(writeOne);
        this.byte(OP.SETITEMS);
      }
    }
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

/**
 * `data.pkl` for `torch.save(module.state_dict())` of float32 tensors, each with its own
 * contiguous storage: OrderedDict(name → _rebuild_tensor_v2(storage, 0, shape, stride, False,
 * OrderedDict())) with `_metadata` = OrderedDict(module path → {'version': 1}) set by BUILD.
 */
export function pickleStateDict(tensors: PickledTensor[], metadataModules: string[]): Uint8Array {
  const w = new PickleWriter();
  w.byte(OP.PROTO, 2);
  w.emptyOrderedDict();
  w.items(tensors, (t) => {
    w.str(t.name);
    w.global('torch._utils', '_rebuild_tensor_v2');
    w.byte(OP.MARK);
    // the persistent id ('storage', torch.FloatStorage, key, 'cpu', numel)
    w.byte(OP.MARK);
    w.str('storage');
    w.global('torch', 'FloatStorage');
    w.str(t.key);
    w.str('cpu');
    w.int(t.numel);
    w.byte(OP.TUPLE);
    w.put();
    w.byte(OP.BINPERSID);
    w.int(0);
    w.intTuple(t.shape);
    const stride = t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    w.intTuple(stride);
    w.byte(OP.NEWFALSE);
    w.emptyOrderedDict();
    w.byte(OP.TUPLE);
    w.put();
    w.byte(OP.REDUCE);
    w.put();
  });
  // BUILD state {'_metadata': OrderedDict(...)}
  w.byte(OP.EMPTY_DICT);
  w.put();
  w.str('_metadata');
  w.emptyOrderedDict();
  w.items(metadataModules, (m) => {
    w.str(m);
    w.byte(OP.EMPTY_DICT);
    w.put();
    w.str('version');
    w.int(1);
    w.byte(OP.SETITEM);
  });
  w.byte(OP.SETITEM, OP.BUILD, OP.STOP);
  return w.bytes();
}
