import { describe, expect, it } from 'vitest';
import { bf16BitsToF32, decodeBf16, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../src/util/fp16.ts';

/** Slow obvious reference: the nearest half (ties to even) found by searching all 65536 bit patterns' values. */
const HALF_VALUES: { bits: number; value: number }[] = [];
for (let b = 0; b < 0x7c00; b++) HALF_VALUES.push({ bits: b, value: f16BitsToF32(b) });

function referenceF16(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (Number.isNaN(x)) return 0x7e00;
  const maxHalf = 65504;
  // Values at or beyond maxHalf + half an ulp (2^4) round to infinity.
  if (a >= maxHalf + 16) return sign | 0x7c00;
  // binary search for the nearest representable half
  let lo = 0;
  let hi = HALF_VALUES.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (HALF_VALUES[mid]!.value <= a) lo = mid;
    else hi = mid;
  }
  const dl = a - HALF_VALUES[lo]!.value;
  const dh = HALF_VALUES[hi]!.value - a;
  let pick = dl < dh ? lo : dh < dl ? hi : (HALF_VALUES[lo]!.bits & 1) === 0 ? lo : hi;
  if (a <= HALF_VALUES[0]!.value) pick = 0;
  return sign | HALF_VALUES[pick]!.bits;
}

describe('float16', () => {
  it('decodes known bit patterns', () => {
    expect(f16BitsToF32(0x3c00)).toBe(1);
    expect(f16BitsToF32(0xc000)).toBe(-2);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x7c00)).toBe(Infinity);
    expect(Number.isNaN(f16BitsToF32(0x7e00))).toBe(true);
  });

  it('encodes with round-to-nearest-even, subnormals, overflow (property test vs reference)', () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const cases = [0, -0, 1, 65504, 65519.99, 65520, 1e6, 2 ** -24, 2 ** -25, 2 ** -25 * 1.0001, 3 * 2 ** -26, 6.1e-5, 1 + 2 ** -11, 1 + 3 * 2 ** -11];
    for (let i = 0; i < 20000; i++) {
      const mag = 10 ** (rand() * 12 - 8);
      cases.push(Math.fround((rand() < 0.5 ? -1 : 1) * mag));
    }
    for (const x of cases) {
      const fx = Math.fround(x);
      expect(f32ToF16Bits(fx), `x=${fx}`).toBe(referenceF16(fx));
    }
  });

  it('round-trips every finite half exactly', () => {
    for (let b = 0; b < 0x10000; b++) {
      const v = f16BitsToF32(b);
      if (Number.isNaN(v)) continue;
      expect(f32ToF16Bits(v)).toBe(b);
    }
  });
});

describe('bfloat16', () => {
  it('truncates exactly representable values and rounds to nearest even', () => {
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even (1.0)
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
    for (let b = 0; b < 0x10000; b += 7) {
      const v = bf16BitsToF32(b);
      if (!Number.isNaN(v)) expect(f32ToBf16Bits(v)).toBe(b);
    }
  });
});

describe('decodeBf16', () => {
  it('decodes aligned (fast path) and unaligned bytes to the same values, each by its bit pattern', () => {
    const bits = [0x0000, 0x8000, 0x3f80, 0xbf80, 0x7f80, 0xff80, 0x7fc0, 0x0001, 0x4049, 0xc2f7, 0x7f7f];
    const aligned = new Uint8Array(2 * bits.length);
    bits.forEach((b, i) => ((aligned[2 * i] = b & 0xff), (aligned[2 * i + 1] = b >> 8)));
    const shifted = new Uint8Array(aligned.length + 1);
    shifted.set(aligned, 1);
    const unaligned = shifted.subarray(1);
    expect(unaligned.byteOffset % 2).toBe(1);
    const expected = bits.map((b) => bf16BitsToF32(b));
    expect(Array.from(decodeBf16(aligned))).toEqual(expected);
    expect(Array.from(decodeBf16(unaligned))).toEqual(expected);
  });
});
