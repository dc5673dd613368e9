/**
 * The .symb tensor encodings (src/formats/symb.ts) against slow, obvious references written here
 * from the format description, on random data of awkward sizes; round trips within half a
 * quantization step; numpy's round-half-to-even in float32; and the one-line errors for broken files.
 */
import { describe, expect, it } from 'vitest';
import { SynaximError } from '../src/util/errors.ts';
import { f16BitsToF32, f32ToF16Bits } from '../src/util/fp16.ts';
import {
  type SymbEncoding,
  decodeSymbRange,
  decodeSymbTensor,
  encodeInt4,
  encodeInt8,
  encodeSymbTensor,
  encodingFor,
  readInt4Header,
  roundHalfEven,
  symbByteLength,
  validateSymbTensor,
} from '../src/formats/symb.ts';

// ---- slow references, straight from the format text ---------------------------------------------

/** numpy.round on a float: nearest integer, ties to the even one. */
function refRound(x: number): number {
  const lower = Math.floor(x);
  const upper = lower + 1;
  if (x - lower < upper - x) return lower;
  if (upper - x < x - lower) return upper;
  return lower % 2 === 0 ? lower : upper;
}

/** float32 division as numpy does it: exact quotient rounded to float32. */
const div32 = (a: number, b: number) => Math.fround(a / b);

function refInt4(values: number[], dims: [number, number], groupSize: number): number[] {
  const numel = values.length;
  const numGroups = Math.ceil(numel / groupSize);
  const padded = [...values];
  while (padded.length < numGroups * groupSize) padded.push(0);
  if (padded.length % 2) padded.push(0);
  const bytes: number[] = [];
  const u32 = (v: number) => bytes.push(v & 255, (v >>> 8) & 255, (v >>> 16) & 255, (v >>> 24) & 255);
  u32(numGroups);
  u32(groupSize);
  u32(numel);
  u32(dims[0]);
  u32(dims[1]);
  const scales: number[] = [];
  for (let g = 0; g < numGroups; g++) {
    const group = padded.slice(g * groupSize, (g + 1) * groupSize);
    const m = Math.max(...group.map(Math.abs));
    scales.push(m === 0 ? 1 : div32(m, 7));
  }
  const f = new Float32Array(scales);
  bytes.push(...new Uint8Array(f.buffer));
  const nibble = (i: number) => {
    const scale = scales[Math.min(Math.floor(i / groupSize), numGroups - 1)]!;
    const q = Math.max(-8, Math.min(7, refRound(div32(padded[i]!, scale))));
    return q + 8;
  };
  for (let i = 0; i < padded.length; i += 2) bytes.push(nibble(i) * 16 + nibble(i + 1));
  return bytes;
}

function refInt8(values: number[]): number[] {
  const m = Math.max(0, ...values.map(Math.abs));
  const scale = m === 0 ? 1 : div32(m, 127);
  const head = [...new Uint8Array(new Float32Array([scale]).buffer)];
  return [...head, ...values.map((v) => (Math.max(-128, Math.min(127, refRound(div32(v, scale)))) + 256) % 256)];
}

// ---- random data -------------------------------------------------------------------------------

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Gaussian-ish float32 values, with some all-zero stretches and exact ties mixed in. */
function randomValues(n: number, rand: () => number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const r = rand();
    if (r < 0.1) v[i] = 0;
    else if (r < 0.15) v[i] = (Math.floor(rand() * 16) - 8) / 4; // multiples of 0.25: ties are common
    else v[i] = (rand() + rand() + rand() - 1.5) * 2 ** Math.floor(rand() * 12 - 8);
  }
  if (n > 40 && rand() < 0.5) v.fill(0, 3, 40); // all-zero groups for small group sizes
  return v;
}

const SIZES: [number, number][] = [
  [1, 1],
  [1, 7],
  [3, 5],
  [7, 13],
  [16, 32],
  [33, 17],
  [64, 64],
  [5, 101],
];
const GROUP_SIZES = [1, 2, 3, 5, 8, 32, 128];

describe('int4 encoding', () => {
  it('matches the slow reference byte for byte on random data (odd sizes, odd group sizes, zero groups)', () => {
    const rand = rng(1);
    let cases = 0;
    for (const [r, c] of SIZES) {
      for (const g of GROUP_SIZES) {
        const v = randomValues(r * c, rand);
        const got = encodeInt4(v, [r, c], g);
        expect([...got]).toEqual(refInt4([...v], [r, c], g));
        expect(got.length).toBe(symbByteLength(r * c, { method: 'int4', groupSize: g }));
        cases++;
      }
    }
    expect(cases).toBe(SIZES.length * GROUP_SIZES.length);
  });

  it('writes the header: num_groups, group_size, numel, dim0, dim1 (1 for 1-D)', () => {
    const h2 = readInt4Header(encodeInt4(new Float32Array(7 * 13), [7, 13], 32), 'x');
    expect(h2).toEqual({ numGroups: 3, groupSize: 32, numel: 91, dim0: 7, dim1: 13 });
    const h1 = readInt4Header(encodeInt4(new Float32Array(10), [10], 4), 'x');
    expect(h1).toEqual({ numGroups: 3, groupSize: 4, numel: 10, dim0: 10, dim1: 1 });
  });

  it('gives an all-zero group scale 1.0 and nibbles 8', () => {
    const bytes = encodeInt4(new Float32Array(8), [2, 4], 4);
    const view = new DataView(bytes.buffer);
    expect(view.getFloat32(20, true)).toBe(1);
    expect(view.getFloat32(24, true)).toBe(1);
    expect([...bytes.subarray(28)]).toEqual([0x88, 0x88, 0x88, 0x88]);
  });

  it('rounds half to even and packs the high nibble first', () => {
    // max 7 -> scale exactly 1, so x / scale = x and the ties are exact.
    const v = new Float32Array([7, 0.5, 1.5, 2.5, -0.5, -2.5, 3.5, -3.5, -7, 6.5, -6.5, 0]);
    const bytes = encodeInt4(v, [12], 12);
    // q = 7 0 2 2 0 -2 4 -4 -7 6 -6 0  ->  nibbles q+8 = 15 8 10 10 8 6 12 4 1 14 2 8
    expect([...bytes.subarray(24)]).toEqual([0xf8, 0xaa, 0x86, 0xc4, 0x1e, 0x28]);
  });

  it('divides in float32 as numpy does (a tie only in float32)', () => {
    // scale = f32(0.56146026 / 7) = 0.08020861; x / scale is -1.4999999536 in float64 but exactly
    // -1.5 in float32, which numpy rounds to -2 (nibble 6); float64 arithmetic would give -1.
    const m = Math.fround(0.56146026);
    const x = Math.fround(-0.12031291);
    expect(Math.fround(x / Math.fround(m / 7))).toBe(-1.5);
    expect(Math.round(x / (m / 7))).toBe(-1);
    const bytes = encodeInt4(new Float32Array([m, x]), [2], 2);
    expect(bytes[24]).toBe(0xf6); // 7 + 8, -2 + 8
  });

  it('clips to [-8, 7] and stays within half a step on the round trip', () => {
    const rand = rng(2);
    for (const [r, c] of SIZES) {
      for (const g of GROUP_SIZES) {
        const v = randomValues(r * c, rand);
        const enc: SymbEncoding = { method: 'int4', groupSize: g };
        const bytes = encodeInt4(v, [r, c], g);
        const back = decodeSymbTensor(bytes, [r, c], enc, 't');
        const scales = new Float32Array(bytes.buffer.slice(20, 20 + 4 * Math.ceil((r * c) / g)));
        for (let i = 0; i < v.length; i++) {
          const step = scales[Math.floor(i / g)]!;
          // half a step, plus the float32 rounding of x / scale and of q * scale
          expect(Math.abs(back[i]! - v[i]!)).toBeLessThanOrEqual(step / 2 + 2 ** -23 * Math.abs(v[i]!));
          expect(Math.abs(back[i]! / step)).toBeLessThanOrEqual(8);
        }
      }
    }
  });
});

describe('int8 encoding', () => {
  it('matches the slow reference byte for byte', () => {
    const rand = rng(3);
    for (const [r, c] of SIZES) {
      const v = randomValues(r * c, rand);
      expect([...encodeInt8(v)]).toEqual(refInt8([...v]));
    }
  });

  it('rounds half to even with one float32 scale max|x| / 127', () => {
    const v = new Float32Array([127, 0.5, 1.5, 2.5, -0.5, -2.5, -127, 126.5]);
    const bytes = encodeInt8(v);
    expect(new DataView(bytes.buffer).getFloat32(0, true)).toBe(1);
    expect([...new Int8Array(bytes.buffer, 4)]).toEqual([127, 0, 2, 2, 0, -2, -127, 126]);
  });

  it('round-trips within half a step', () => {
    const rand = rng(4);
    const v = randomValues(999, rand);
    const bytes = encodeInt8(v);
    const scale = new DataView(bytes.buffer).getFloat32(0, true);
    const back = decodeSymbTensor(bytes, [27, 37], { method: 'int8', groupSize: 128 }, 't');
    for (let i = 0; i < v.length; i++) expect(Math.abs(back[i]! - v[i]!)).toBeLessThanOrEqual(scale / 2 + 2 ** -23 * Math.abs(v[i]!));
  });

  it('encodes an all-zero tensor with scale 1.0', () => {
    const bytes = encodeInt8(new Float32Array(5));
    expect([...bytes]).toEqual([0, 0, 0x80, 0x3f, 0, 0, 0, 0, 0]);
  });
});

describe('fp32 / fp16 encodings and encodingFor', () => {
  it('fp32 is raw little-endian float32, fp16 raw IEEE half', () => {
    const v = new Float32Array([1, -2.5, 65504, 1e-7, 3.14159]);
    const b32 = encodeSymbTensor(v, [5, 1], { method: 'fp32', groupSize: 128 });
    expect([...new Float32Array(b32.buffer)]).toEqual([...v]);
    const b16 = encodeSymbTensor(v, [5, 1], { method: 'fp16', groupSize: 128 });
    const view = new DataView(b16.buffer);
    for (let i = 0; i < v.length; i++) expect(view.getUint16(2 * i, true)).toBe(f32ToF16Bits(v[i]!));
  });

  it('fp16 round-trips within half an fp16 ulp', () => {
    const v = randomValues(500, rng(5));
    const back = decodeSymbTensor(encodeSymbTensor(v, [500], { method: 'fp16', groupSize: 1 }), [500], { method: 'fp16', groupSize: 1 }, 't');
    for (let i = 0; i < v.length; i++) {
      const x = Math.abs(v[i]!);
      const ulp = x < 2 ** -14 ? 2 ** -24 : 2 ** (Math.floor(Math.log2(x)) - 10);
      expect(Math.abs(back[i]! - v[i]!)).toBeLessThanOrEqual(ulp / 2);
      expect(back[i]).toBe(f16BitsToF32(f32ToF16Bits(v[i]!)));
    }
  });

  it('stores 1-D tensors and final_norm as fp16 whatever the method', () => {
    expect(encodingFor('int4', 32, [64])).toEqual({ method: 'fp16', groupSize: 32 });
    expect(encodingFor('fp32', 128, [64])).toEqual({ method: 'fp16', groupSize: 128 });
    expect(encodingFor('int8', 128, [64, 64], true).method).toBe('fp16');
    expect(encodingFor('int8', 128, [64, 64]).method).toBe('int8');
  });
});

describe('decodeSymbRange', () => {
  it('equals the slice of the full decode for every method and arbitrary ranges', () => {
    const rand = rng(6);
    const shape = [9, 11];
    const v = randomValues(99, rand);
    for (const enc of [
      { method: 'fp32', groupSize: 128 },
      { method: 'fp16', groupSize: 128 },
      { method: 'int8', groupSize: 128 },
      { method: 'int4', groupSize: 5 },
      { method: 'int4', groupSize: 32 },
    ] as SymbEncoding[]) {
      const bytes = encodeSymbTensor(v, shape, enc);
      const full = decodeSymbTensor(bytes, shape, enc, 't');
      for (let k = 0; k < 20; k++) {
        const start = Math.floor(rand() * 99);
        const count = Math.floor(rand() * (99 - start + 1));
        expect([...decodeSymbRange(bytes, enc, start, count)]).toEqual([...full.subarray(start, start + count)]);
      }
    }
  });
});

describe('roundHalfEven', () => {
  it('agrees with the reference on ties and non-ties', () => {
    for (const x of [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 0.50000006, -7.5, 7.5, 3, -3, 0, 1e-30]) {
      expect(roundHalfEven(x)).toBe(refRound(x));
    }
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5].map((x) => roundHalfEven(x) + 0)).toEqual([0, 2, 2, 0, -2, -2]);
  });
});

describe('validation of a file against the shape and method it should have', () => {
  const shape = [16, 8];
  const int4 = { method: 'int4', groupSize: 32 } as const;
  const values = randomValues(128, rng(7));
  const good = encodeInt4(values, shape, 32);
  function message(f: () => void): string {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(SynaximError);
      const m = (e as Error).message;
      expect(m).not.toContain('\n');
      return m;
    }
    throw new Error('expected an error');
  }

  it('accepts the good file', () => {
    expect(() => validateSymbTensor(good, shape, int4, 'f.symb')).not.toThrow();
  });
  it('truncated int4 file', () => {
    expect(message(() => validateSymbTensor(good.subarray(0, good.length - 3), shape, int4, 'f.symb'))).toMatch(/^f\.symb: .*truncated/);
    expect(message(() => validateSymbTensor(good.subarray(0, 10), shape, int4, 'f.symb'))).toMatch(/^f\.symb: .*(truncated|expected)/);
  });
  it('int4 header group count or numel that disagree with the size', () => {
    const bad = good.slice();
    new DataView(bad.buffer).setUint32(0, 5, true); // num_groups 5 instead of 4
    expect(message(() => validateSymbTensor(bad, shape, int4, 'f.symb'))).toMatch(/^f\.symb: corrupt int4 header/);
    const bad2 = good.slice();
    new DataView(bad2.buffer).setUint32(8, 100, true); // numel
    expect(message(() => validateSymbTensor(bad2, shape, int4, 'f.symb'))).toMatch(/^f\.symb: corrupt int4 header/);
  });
  it('int4 header shape that disagrees with the expected shape', () => {
    expect(message(() => validateSymbTensor(good, [8, 16], int4, 'f.symb'))).toMatch(/^f\.symb: int4 header shape 16x8 disagrees with config\.symb\.json shape \[8, 16\]/);
  });
  it('int4 header group size that disagrees with the config', () => {
    const g64 = encodeInt4(new Float32Array(128), [16, 8], 64);
    expect(message(() => validateSymbTensor(g64, shape, int4, 'f.symb'))).toMatch(/group_size 64 disagrees with config\.symb\.json group_size 32/);
  });
  it('an int8 file where int4 is declared', () => {
    const int8 = encodeInt8(values);
    expect(message(() => validateSymbTensor(int8, shape, int4, 'f.symb'))).toMatch(/^f\.symb: 132 bytes is the size of an int8 \[16, 8\] tensor, but config\.symb\.json declares int4/);
  });
  it('raw files of the wrong size', () => {
    const fp16 = encodeSymbTensor(values, shape, { method: 'fp16', groupSize: 32 });
    expect(message(() => validateSymbTensor(fp16, shape, { method: 'fp32', groupSize: 32 }, 'f.symb'))).toMatch(/^f\.symb: 256 bytes is the size of an fp16 \[16, 8\] tensor, but config\.symb\.json declares fp32 \[16, 8\]: expected 512 bytes/);
    expect(message(() => validateSymbTensor(fp16.subarray(1), shape, { method: 'fp16', groupSize: 32 }, 'f.symb'))).toMatch(/truncated/);
  });
  it('refuses to quantize non-finite weights', () => {
    expect(message(() => encodeInt4(new Float32Array([1, NaN]), [2], 2, 'w'))).toMatch(/^w: value NaN/);
    expect(message(() => encodeInt8(new Float32Array([Infinity]), 'w'))).toMatch(/^w: value Infinity/);
  });
});
