/**
 * Builders for hostile model files (bad-input suite and fuzzer): raw safetensors surgery, .symb
 * header edits, JSON edits, seeded byte mutations, and a CLI runner that kills hung children.
 * Everything works on copies in temporary directories; nothing here writes into ../shared.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PROJECT_ROOT } from '../../src/util/paths.ts';
import { mulberry32 } from '../../src/util/random.ts';

// ---------------------------------------------------------------------------------------------
// Temporary directories and copies

export function makeTempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `synaxim-${prefix}-`));
}

/** Copy a model directory (regular files only, symlinks copied as links). */
export function copyDir(src: string, dst: string): void {
  fs.cpSync(src, dst, { recursive: true, verbatimSymlinks: true });
}

// ---------------------------------------------------------------------------------------------
// safetensors surgery

export interface RawSafetensors {
  /** The parsed header (tensor entries and __metadata__). */
  header: Record<string, unknown>;
  /** Tensor data bytes (everything after the header). */
  data: Buffer;
}

export function readRawSafetensors(file: string): RawSafetensors {
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  return { header: JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>, data: bytes.subarray(8 + n) };
}

/**
 * Write a safetensors file from a header (object, or raw text for malformed JSON) and data bytes.
 * `declaredLength` overrides the u64 header length (to lie about it).
 */
export function writeRawSafetensors(file: string, header: Record<string, unknown> | string, data: Uint8Array, declaredLength?: bigint): void {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const headerBytes = Buffer.from(text, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(declaredLength ?? BigInt(headerBytes.length));
  fs.writeFileSync(file, Buffer.concat([len, headerBytes, data]));
}

type TensorEntry = { dtype: string; shape: number[]; data_offsets: [number, number] };

/** Rewrite a safetensors file's header (the callback edits it in place or returns a replacement). */
export function editSafetensorsHeader(file: string, edit: (h: Record<string, unknown>) => Record<string, unknown> | string | void, data?: (d: Buffer) => Uint8Array): void {
  const raw = readRawSafetensors(file);
  const next = edit(raw.header) ?? raw.header;
  writeRawSafetensors(file, next, data ? data(raw.data) : raw.data);
}

export function tensorEntry(h: Record<string, unknown>, name: string): TensorEntry {
  const e = h[name] as TensorEntry | undefined;
  if (!e) throw new Error(`test fixture has no tensor '${name}'`);
  return e;
}

/** Tensor names in data order (by begin offset). */
export function tensorsByOffset(h: Record<string, unknown>): string[] {
  return Object.keys(h)
    .filter((k) => k !== '__metadata__')
    .sort((a, b) => tensorEntry(h, a).data_offsets[0] - tensorEntry(h, b).data_offsets[0]);
}

/** Overwrite one float32 element of an F32 tensor in a safetensors file. */
export function setF32Element(file: string, tensor: string, index: number, value: number): void {
  const raw = readRawSafetensors(file);
  const e = tensorEntry(raw.header, tensor);
  if (e.dtype !== 'F32') throw new Error(`tensor '${tensor}' is ${e.dtype}, not F32`);
  const headerLen = fs.readFileSync(file).readBigUInt64LE(0);
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(4);
  b.writeFloatLE(value);
  fs.writeSync(fd, b, 0, 4, 8 + Number(headerLen) + e.data_offsets[0] + 4 * index);
  fs.closeSync(fd);
}

/** Remove one tensor from a safetensors file (header and data), keeping the rest valid. */
export function dropTensor(file: string, name: string): void {
  const { header, data } = readRawSafetensors(file);
  const kept: Buffer[] = [];
  const next: Record<string, unknown> = {};
  let offset = 0;
  for (const n of tensorsByOffset(header)) {
    if (n === name) continue;
    const e = tensorEntry(header, n);
    const bytes = data.subarray(e.data_offsets[0], e.data_offsets[1]);
    next[n] = { ...e, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
    kept.push(bytes);
  }
  if (header.__metadata__) next.__metadata__ = header.__metadata__;
  writeRawSafetensors(file, next, Buffer.concat(kept));
}

/** Append an F32 tensor (zeros) to a safetensors file. */
export function addTensor(file: string, name: string, shape: number[]): void {
  const { header, data } = readRawSafetensors(file);
  const bytes = Buffer.alloc(4 * shape.reduce((a, b) => a * b, 1));
  header[name] = { dtype: 'F32', shape, data_offsets: [data.length, data.length + bytes.length] };
  writeRawSafetensors(file, header, Buffer.concat([data, bytes]));
}

/**
 * Split a single-file checkpoint into two shards + model.safetensors.index.json (tensors in data
 * order; the first `firstCount` go to shard 1). Returns the weight map for further edits.
 */
export function shardCheckpoint(dir: string, firstCount: number): Record<string, string> {
  const single = path.join(dir, 'model.safetensors');
  const raw = readRawSafetensors(single);
  const names = tensorsByOffset(raw.header);
  const shards = [names.slice(0, firstCount), names.slice(firstCount)];
  const weightMap: Record<string, string> = {};
  shards.forEach((group, s) => {
    const file = `model-0000${s + 1}-of-00002.safetensors`;
    const header: Record<string, unknown> = {};
    const parts: Buffer[] = [];
    let offset = 0;
    for (const n of group) {
      const e = tensorEntry(raw.header, n);
      const bytes = raw.data.subarray(e.data_offsets[0], e.data_offsets[1]);
      header[n] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + bytes.length] };
      offset += bytes.length;
      parts.push(bytes);
      weightMap[n] = file;
    }
    writeRawSafetensors(path.join(dir, file), header, Buffer.concat(parts));
  });
  fs.rmSync(single);
  writeIndex(dir, weightMap);
  return weightMap;
}

export function writeIndex(dir: string, weightMap: Record<string, unknown>): void {
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }, null, 2));
}

// ---------------------------------------------------------------------------------------------
// .symb surgery

/** Set uint32 fields of an int4 .symb header: 0 num_groups, 1 group_size, 2 numel, 3 dim0, 4 dim1. */
export function setInt4HeaderField(file: string, field: 0 | 1 | 2 | 3 | 4, value: number): void {
  const bytes = fs.readFileSync(file);
  bytes.writeUInt32LE(value, 4 * field);
  fs.writeFileSync(file, bytes);
}

export function int4HeaderFields(file: string): number[] {
  const bytes = fs.readFileSync(file);
  return [0, 1, 2, 3, 4].map((i) => bytes.readUInt32LE(4 * i));
}

/** Set the float32 scale of group `g` of an int4 .symb file. */
export function setInt4Scale(file: string, g: number, value: number): void {
  const bytes = fs.readFileSync(file);
  bytes.writeFloatLE(value, 20 + 4 * g);
  fs.writeFileSync(file, bytes);
}

/** An int8 .symb file (scale + int8 values) of `numel` values, as the converter would write. */
export function int8FileBytes(numel: number, scale = 0.01): Buffer {
  const b = Buffer.alloc(4 + numel);
  b.writeFloatLE(scale, 0);
  for (let i = 0; i < numel; i++) b.writeInt8(((i * 37) % 255) - 127, 4 + i);
  return b;
}

export function truncateFile(file: string, keepBytes: number): void {
  fs.truncateSync(file, keepBytes);
}

/** Overwrite one fp16 element (raw half bits) of an fp16 .symb file. */
export function setF16Bits(file: string, index: number, bits: number): void {
  const bytes = fs.readFileSync(file);
  bytes.writeUInt16LE(bits, 2 * index);
  fs.writeFileSync(file, bytes);
}

// ---------------------------------------------------------------------------------------------
// JSON

export function editJson(file: string, edit: (j: Record<string, unknown>) => Record<string, unknown> | void): void {
  const j = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(file, JSON.stringify(edit(j) ?? j, null, 2));
}

// ---------------------------------------------------------------------------------------------
// Seeded byte mutations (fuzzer)

/** mulberry32, the project's seeded PRNG (uniform in [0, 1)). */
export const rng = mulberry32;

export type MutationKind = 'flip' | 'truncate' | 'insert' | 'header-flip' | 'json-value';

/** Values that break configs in ways bit flips rarely reach: zero, negative, huge, fractional, wrong types. */
const HOSTILE_JSON_VALUES = ['0', '-1', '-0', '0.5', '100000000', '4294967296', '9007199254740993', '1e300', 'null', '"7"', '[]', '{}', 'true'];

export interface Mutation {
  kind: MutationKind;
  /** What was done, for failure messages and replays. */
  detail: string;
  bytes: Buffer;
}

/**
 * One random mutation of `original`: flip 1–8 random bits anywhere; flip bits in the first
 * `headerBytes` (where structure lives: safetensors/int4 headers, JSON); truncate at a random
 * point; insert 1–16 random bytes at a random point; or, for JSON files (`json`), replace one
 * number literal with a hostile value.
 */
export function mutate(original: Buffer, random: () => number, headerBytes = 256, json = false): Mutation {
  const kinds: MutationKind[] = ['flip', 'header-flip', 'truncate', 'insert', ...(json ? (['json-value', 'json-value'] as const) : [])];
  const kind = kinds[Math.floor(random() * kinds.length)]!;
  const at = (limit: number) => Math.floor(random() * Math.max(1, limit));
  switch (kind) {
    case 'flip':
    case 'header-flip': {
      const bytes = Buffer.from(original);
      const count = 1 + at(8);
      const span = kind === 'flip' ? bytes.length : Math.min(bytes.length, headerBytes);
      const where: string[] = [];
      for (let i = 0; i < count; i++) {
        const pos = at(span);
        const bit = at(8);
        bytes[pos] = bytes[pos]! ^ (1 << bit);
        where.push(`${pos}.${bit}`);
      }
      return { kind, detail: `${kind} bits ${where.join(',')}`, bytes };
    }
    case 'truncate': {
      const keep = at(original.length);
      return { kind, detail: `truncate to ${keep} of ${original.length} bytes`, bytes: original.subarray(0, keep) };
    }
    case 'json-value': {
      const text = original.toString('utf8');
      const numbers = [...text.matchAll(/-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g)];
      if (numbers.length === 0) return { kind, detail: 'json-value: no numbers, unchanged', bytes: Buffer.from(original) };
      const n = numbers[at(numbers.length)]!;
      const value = HOSTILE_JSON_VALUES[at(HOSTILE_JSON_VALUES.length)]!;
      const bytes = Buffer.from(text.slice(0, n.index) + value + text.slice(n.index! + n[0].length), 'utf8');
      return { kind, detail: `json-value ${n[0]} at ${n.index} -> ${value}`, bytes };
    }
    case 'insert': {
      const pos = at(original.length + 1);
      const extra = Buffer.alloc(1 + at(16));
      for (let i = 0; i < extra.length; i++) extra[i] = at(256);
      return { kind, detail: `insert ${extra.length} bytes at ${pos}`, bytes: Buffer.concat([original.subarray(0, pos), extra, original.subarray(pos)]) };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Running the CLI

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall-clock seconds, for the record only: no test may assert on it (verdicts must not depend on machine load). */
  seconds: number;
  timedOut: boolean;
}

export const CLI = path.join(PROJECT_ROOT, 'bin', 'synaxim.js');

/**
 * Allowance for starting Node + tsx + tfjs (a fresh process, or a CliWorker child's first
 * invocation), added to every caller's timeout: idle it takes about a second, on a loaded machine
 * (load average 10–30) far longer. Timeouts here only catch hangs; they are not speed checks.
 */
export const COLD_START_MS = 90_000;

/**
 * Run `node bin/synaxim.js ...args` as a child process; kill it (and report timedOut) after
 * timeoutMs of work plus COLD_START_MS for the process start.
 */
export function runCli(args: string[], timeoutMs = 30_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, SYNAXIM_MODELS: '', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs + COLD_START_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, seconds: (performance.now() - t0) / 1000, timedOut });
    });
  });
}

/** Lines of stderr that are not the informational `synaxim: backend ...` line commands print first. */
export function problemLines(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((l) => l.length > 0)
    .filter((l) => !/^synaxim: backend \S+ \(/.test(l));
}

/** Run async jobs with at most `limit` in flight; `lane` (0 … limit-1) says which of the parallel runners runs a job. */
export async function mapLimit<T, R>(items: T[], limit: number, job: (item: T, index: number, lane: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const runner = async (lane: number) => {
    while (next < items.length) {
      const i = next++;
      out[i] = await job(items[i]!, i, lane);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, (_, lane) => runner(lane)));
  return out;
}

const WORKER = path.join(PROJECT_ROOT, 'test', 'helpers', 'cliWorker.ts');

/** One child process of a CliWorker, with everything that belongs to it (events are tied to it, never to "the current child"). */
interface WorkerChild {
  proc: ChildProcessWithoutNullStreams;
  /** Resolves true on the child's `@@ready` line, false if it exits first. */
  ready: Promise<boolean>;
  /** The invocation this child is running, by request id; null when idle or given up on. */
  pending: { id: number; done: (r: CliResult) => void } | null;
  stderr: string;
  invocations: number;
}

/**
 * Runs CLI invocations through `main(argv)` in one long-lived child process (cliWorker.ts), one
 * at a time: the CLI's whole error path (yargs, command, reportError, exit code) at a fraction of a
 * process start each. An invocation that does not finish within its timeout kills the child (it
 * is reported as timedOut, and the next invocation starts a fresh child).
 *
 * Every request carries an id that the child echoes in its result, and every listener belongs to
 * one child: a late result or exit of a child already killed after a timeout can never be taken
 * for the answer to a later request. The timeout counts from the moment the child is ready
 * (after its start-up, which has its own limit), and a child's first invocation, which loads the
 * backend, gets COLD_START_MS more.
 */
export class CliWorker {
  private child: WorkerChild | null = null;
  private busy = false;
  private nextId = 1;

  /** `script`: the child's program (cliWorker.ts; the helper's own test gives a stand-in that speaks the same protocol). */
  constructor(private readonly script: string = WORKER) {}

  private start(): WorkerChild {
    const proc = spawn(process.execPath, ['--import', 'tsx', this.script], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, SYNAXIM_MODELS: '', NO_COLOR: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let markReady: (ok: boolean) => void = () => {};
    const c: WorkerChild = { proc, ready: new Promise<boolean>((r) => (markReady = r)), pending: null, stderr: '', invocations: 0 };
    let buffer = '';
    proc.stdout.on('data', (d: Buffer) => {
      buffer += d.toString('utf8');
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line === '@@ready') markReady(true);
        if (!line.startsWith('@@result ')) continue;
        const r = JSON.parse(line.slice('@@result '.length)) as { id: number; code: number; stdout: string; stderr: string; seconds: number };
        const p = c.pending;
        if (!p || p.id !== r.id) continue; // the answer to a request already given up on
        c.pending = null;
        p.done({ code: r.code, stdout: r.stdout, stderr: r.stderr, seconds: r.seconds, signal: null, timedOut: false });
      }
    });
    proc.stderr.on('data', (d: Buffer) => (c.stderr = (c.stderr + d.toString('utf8')).slice(-20_000)));
    proc.stdin.on('error', () => {}); // EPIPE after the child died: its exit event reports it
    const ended = (code: number | null, signal: NodeJS.Signals | null) => {
      markReady(false);
      if (this.child === c) this.child = null;
      const p = c.pending;
      c.pending = null;
      // The invocation ended the process itself (process.exit) or crashed it.
      p?.done({ code, signal, stdout: '', stderr: `cliWorker exited during the invocation:\n${c.stderr}`, seconds: 0, timedOut: false });
    };
    proc.on('exit', ended);
    proc.on('error', (e) => {
      c.stderr += `\ncliWorker: ${e.message}`;
      ended(null, null);
    });
    this.child = c;
    return c;
  }

  private kill(c: WorkerChild): void {
    if (this.child === c) this.child = null;
    c.pending = null;
    c.proc.kill('SIGKILL');
  }

  async run(args: string[], timeoutMs = 30_000): Promise<CliResult> {
    if (this.busy) throw new Error('CliWorker runs one invocation at a time');
    this.busy = true;
    const t0 = performance.now();
    try {
      const c = this.child ?? this.start();
      let startTimer: NodeJS.Timeout | undefined;
      const ready = await Promise.race([c.ready, new Promise<'timeout'>((r) => (startTimer = setTimeout(() => r('timeout'), COLD_START_MS)))]);
      clearTimeout(startTimer);
      if (ready !== true) {
        this.kill(c);
        const why = ready === 'timeout' ? `did not start within ${COLD_START_MS / 1000} s` : 'exited while starting';
        return { code: null, signal: null, stdout: '', stderr: `cliWorker ${why}:\n${c.stderr}`, seconds: (performance.now() - t0) / 1000, timedOut: ready === 'timeout' };
      }
      const id = this.nextId++;
      const limit = timeoutMs + (c.invocations++ === 0 ? COLD_START_MS : 0);
      return await new Promise<CliResult>((resolve) => {
        const timer = setTimeout(() => {
          if (c.pending?.id !== id) return;
          this.kill(c);
          resolve({ code: null, signal: 'SIGKILL', stdout: '', stderr: '', seconds: (performance.now() - t0) / 1000, timedOut: true });
        }, limit);
        c.pending = {
          id,
          done: (r) => {
            clearTimeout(timer);
            resolve(r);
          },
        };
        c.proc.stdin.write(JSON.stringify({ id, args }) + '\n');
      });
    } finally {
      this.busy = false;
    }
  }

  close(): void {
    const c = this.child;
    this.child = null;
    if (!c) return;
    c.pending = null;
    c.proc.stdin.end();
    setTimeout(() => c.proc.kill('SIGKILL'), 2000).unref(); // in case it does not exit on its own
  }
}
