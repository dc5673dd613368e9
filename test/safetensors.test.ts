import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SafetensorsCheckpoint, SafetensorsFile, encodeSafetensors, writeSafetensors } from '../src/formats/safetensors.ts';
import { SynaximError } from '../src/util/errors.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';

if (!sharedAvailable()) console.warn(`safetensors.test: the shared-fixture reads skipped: ${SHARED_DIR}/fixtures not found`);

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'st-test-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Build a file from a raw header object and data bytes (for hostile inputs). */
function rawFile(name: string, header: unknown, data: Uint8Array, headerLenOverride?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLenOverride ?? BigInt(json.length));
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

function expectError(fn: () => unknown, file: string, pattern: RegExp): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SynaximError);
    const msg = (e as Error).message;
    expect(msg.startsWith(file)).toBe(true);
    expect(msg).toMatch(pattern);
    expect(msg.includes('\n')).toBe(false);
    return;
  }
  throw new Error('expected an error');
}

describe('safetensors writer and reader', () => {
  it('round-trips F32/F16/BF16/I64/I32/U8 tensors with metadata', () => {
    const file = path.join(dir, 'rt.safetensors');
    const f32 = Float32Array.from([1.5, -2.25, 3.125, 0, 1e-3, 7]);
    writeSafetensors(
      file,
      {
        a: { dtype: 'F32', shape: [2, 3], data: f32 },
        h: { dtype: 'F16', shape: [6], data: f32 },
        b: { dtype: 'BF16', shape: [3, 2], data: f32 },
        ids: { dtype: 'I64', shape: [3], data: [1, 5, 9] },
        i32: { dtype: 'I32', shape: [2], data: Int32Array.from([-7, 8]) },
        u8: { dtype: 'U8', shape: [2], data: Uint8Array.from([0, 255]) },
      },
      { format: 'pt' },
    );
    const f = SafetensorsFile.open(file);
    expect(f.metadata).toEqual({ format: 'pt' });
    expect(f.names().sort()).toEqual(['a', 'b', 'h', 'i32', 'ids', 'u8']);
    expect(Array.from(f.readFloat32('a'))).toEqual(Array.from(f32));
    expect(Array.from(f.readFloat32('h'))).toEqual(Array.from(f32).map((x) => (x === Math.fround(1e-3) ? 0.0010004043579101562 : x)));
    expect(f.readFloat32('b')[0]).toBe(1.5);
    expect(f.readInt('ids')).toEqual([1, 5, 9]);
    expect(f.readInt('i32')).toEqual([-7, 8]);
    expect(f.readInt('u8')).toEqual([0, 255]);
    expect(Array.from(f.readFloat32Rows('a', 1, 1))).toEqual([0, Math.fround(1e-3), 7]);
    expect(f.info('a')).toMatchObject({ dtype: 'F32', shape: [2, 3], byteLength: 24 });
    f.close();
    // data starts 8-byte aligned, as the reference writer pads the header with spaces
    const hlen = Number(fs.readFileSync(file).readBigUInt64LE(0));
    expect(hlen % 8).toBe(0);
  });

  it('reads sharded checkpoints through the index', () => {
    const d = path.join(dir, 'sharded');
    fs.mkdirSync(d);
    writeSafetensors(path.join(d, 'model-00001-of-00002.safetensors'), { x: { dtype: 'F32', shape: [2], data: [1, 2] } });
    writeSafetensors(path.join(d, 'model-00002-of-00002.safetensors'), { y: { dtype: 'BF16', shape: [1], data: [3] } });
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: { x: 'model-00001-of-00002.safetensors', y: 'model-00002-of-00002.safetensors' } }));
    const ck = SafetensorsCheckpoint.open(d);
    expect(ck.names().sort()).toEqual(['x', 'y']);
    expect(Array.from(ck.readFloat32('x'))).toEqual([1, 2]);
    expect(Array.from(ck.readFloat32('y'))).toEqual([3]);
    ck.close();
  });

  describe.skipIf(!sharedAvailable())('reads the shared fixtures (written by the Python safetensors library)', () => {
    it('tiny-llama and tiny-mistral-bf16', () => {
      const a = SafetensorsCheckpoint.open(path.join(SHARED_DIR, 'fixtures/tiny-llama/hf'));
      expect(a.info('model.embed_tokens.weight')).toMatchObject({ dtype: 'F32', shape: [512, 64] });
      a.close();
      const b = SafetensorsCheckpoint.open(path.join(SHARED_DIR, 'fixtures/tiny-mistral-bf16/hf'));
      expect(b.info('lm_head.weight')).toMatchObject({ dtype: 'BF16', shape: [384, 96] });
      const w = b.readFloat32('lm_head.weight');
      expect(w.every(Number.isFinite)).toBe(true);
      b.close();
    });
  });
});

describe('safetensors strict validation (one-line errors naming the file)', () => {
  const four = new Uint8Array(4);
  const cases: { name: string; make: () => string; error: RegExp }[] = [
    { name: 'too small', make: () => { const f = path.join(dir, 'small.st'); fs.writeFileSync(f, Buffer.alloc(3)); return f; }, error: /too small/ },
    { name: 'header length beyond the file', make: () => rawFile('hl.st', { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, four, 10_000n), error: /runs past the end/ },
    { name: 'header > 100 MB', make: () => rawFile('big.st', {}, four, 200_000_000n), error: /100 MB/ },
    { name: 'invalid JSON', make: () => rawFile('json.st', '{"a": ', four), error: /not valid JSON/ },
    { name: 'header not an object', make: () => rawFile('arr.st', '[1,2]', new Uint8Array(0)), error: /must be a JSON object/ },
    { name: 'unknown dtype', make: () => rawFile('dt.st', { a: { dtype: 'F8', shape: [4], data_offsets: [0, 4] } }, four), error: /unknown dtype "F8"/ },
    { name: 'size mismatch', make: () => rawFile('sz.st', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, four), error: /8 bytes but data_offsets span 4/ },
    { name: 'out of range', make: () => rawFile('oor.st', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, four), error: /run past the end/ },
    { name: 'overlapping', make: () => rawFile('ov.st', { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, four), error: /overlaps/ },
    { name: 'gap', make: () => rawFile('gap.st', { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)), error: /gap of 4 bytes/ },
    { name: 'trailing bytes', make: () => rawFile('tail.st', { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(6)), error: /2 bytes after the last tensor/ },
    { name: 'duplicate names', make: () => rawFile('dup.st', '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', new Uint8Array(8)), error: /duplicate tensor name 'a'/ },
    { name: 'metadata not string→string', make: () => rawFile('meta.st', { __metadata__: { n: 1 }, a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, four), error: /__metadata__/ },
    { name: 'negative shape', make: () => rawFile('neg.st', { a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, four), error: /non-negative integers/ },
    { name: 'missing file', make: () => path.join(dir, 'nope.safetensors'), error: /file not found/ },
    // issue 14 §3: what the reference reader refuses
    { name: 'header starting with a UTF-8 BOM', make: () => rawFile('bom.st', '\ufeff{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', four), error: /header starts with a UTF-8 byte-order mark/ },
    { name: 'shape [0, 2^64]', make: () => rawFile('big-dim.st', '{"a":{"dtype":"F32","shape":[0,18446744073709551616],"data_offsets":[0,0]}}', new Uint8Array(0)), error: /non-negative integers below 2\^53/ },
    { name: 'shape [2^40, 2^40, 0] (overflows before the 0)', make: () => rawFile('ovf.st', { a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40, 0], data_offsets: [0, 0] } }, new Uint8Array(0)), error: /overflows \(more than 2\^53 bytes\)/ },
    { name: 'shape × dtype beyond 2^53 bytes', make: () => rawFile('ovf2.st', { a: { dtype: 'F64', shape: [2 ** 51], data_offsets: [0, 0] } }, new Uint8Array(0)), error: /overflows/ },
    { name: 'fractional dim', make: () => rawFile('frac.st', { a: { dtype: 'F32', shape: [0.5], data_offsets: [0, 2] } }, new Uint8Array(2)), error: /non-negative integers/ },
    { name: 'a FIFO (never opened blocking)', make: () => { const f = path.join(dir, 'fifo.st'); spawnSync('mkfifo', [f]); return f; }, error: /is a named pipe \(FIFO\), not a regular file/ },
    { name: 'a directory', make: () => { const f = path.join(dir, 'dir.st'); fs.mkdirSync(f, { recursive: true }); return f; }, error: /is a directory, not a regular file/ },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const file = c.make();
      expectError(() => SafetensorsFile.open(file), file, c.error);
    });
  }

  it('sharded index naming a missing shard or a tensor in two shards', () => {
    const d = path.join(dir, 'badshard');
    fs.mkdirSync(d);
    const index = path.join(d, 'model.safetensors.index.json');
    fs.writeFileSync(index, JSON.stringify({ weight_map: { x: 'a.safetensors' } }));
    expectError(() => SafetensorsCheckpoint.open(d), index, /names shard 'a.safetensors', which does not exist/);
    writeSafetensors(path.join(d, 'a.safetensors'), { x: { dtype: 'F32', shape: [1], data: [1] } });
    writeSafetensors(path.join(d, 'b.safetensors'), { x: { dtype: 'F32', shape: [1], data: [2] } });
    fs.writeFileSync(index, JSON.stringify({ weight_map: { x: 'a.safetensors', y: 'b.safetensors' } }));
    expect(() => SafetensorsCheckpoint.open(d)).toThrow(/x/);
    fs.writeFileSync(index, JSON.stringify({ weight_map: { x: '../a.safetensors' } }));
    expectError(() => SafetensorsCheckpoint.open(d), index, /not a plain file name/);
  });

  it('encodes exactly the bytes it declares', () => {
    const parts = encodeSafetensors({ a: { dtype: 'F16', shape: [3], data: [1, 2, 3] } });
    const total = parts.reduce((n, p) => n + p.length, 0);
    const hl = Number(Buffer.from(parts[0]!).readBigUInt64LE(0));
    expect(total).toBe(8 + hl + 6);
  });
});
