/**
 * INT4 read as INT4: .symb int4 matrices repacked for com.microsoft MatMulNBits (nibble order
 * swapped, group scales as block scales, zero point 8) against a float64 product of the
 * dequantized weights; the raw accessor against the float32 reader; int4 .symb models through
 * MatMulNBits against the tfjs teacher on the same files (../shared).
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { openModel } from '../src/formats/openModel.ts';
import { SymbWeights, type Int4Matrix, type LayerMatrixName } from '../src/formats/symbModel.ts';
import type { ModelWeights } from '../src/formats/weights.ts';
import { teacherPrefill } from '../src/teacher/teacher.ts';
import { dequantizeInt4Matrix, int4Repackable, repackInt4 } from '../src/native/linear.ts';
import { nativePrefill, NativeDecoder } from '../src/native/model.ts';
import { int4Of, refProduct, runInt4Linear } from './helpers/int4.ts';
import { maxAbsDiff, randoms } from './helpers/numeric.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

describe('MatMulNBits from .symb int4 codes', () => {
  it('repacking swaps the nibble order (.symb high nibble first, MatMulNBits low first) and keeps the scales', () => {
    const m: Int4Matrix = { file: '(t)', rows: 1, cols: 32, groupSize: 16, scales: Float32Array.from([0.5, 2]), packed: Uint8Array.from({ length: 16 }, (_, i) => (i << 4) | (15 - i)) };
    const { b, scales } = repackInt4(m);
    expect(Array.from(b)).toEqual(Array.from({ length: 16 }, (_, i) => ((15 - i) << 4) | i));
    expect(Array.from(scales)).toEqual([0.5, 2]);
    expect(int4Repackable(m)).toBe(true);
    expect(int4Repackable({ cols: 172, groupSize: 32 })).toBe(false); // groups would cross rows
    expect(int4Repackable({ cols: 96, groupSize: 24 })).toBe(false); // the kernel needs a power-of-two block ≥ 16
    expect(int4Repackable({ cols: 64, groupSize: 8 })).toBe(false);
  });

  const shapes: [string, number, number, number][] = [
    ['g16, K 64', 24, 64, 16],
    ['g32, K 96', 40, 96, 32],
    ['g64, K 256', 33, 256, 64],
    ['g128, K 384', 17, 384, 128],
    ['fallback: g32, K 172 (groups cross rows)', 20, 172, 32],
    ['fallback: g24, K 96', 12, 96, 24],
  ];
  for (const [name, N, K, gs] of shapes) {
    it(`equals the float64 product of the dequantized matrix (${name})`, async () => {
      const m = int4Of(randoms(N * K, N * 7 + K, 0.5), N, K, gs);
      const M = 6;
      const x = randoms(M * K, K + 3);
      const ref = refProduct(x, dequantizeInt4Matrix(m), M, K, N);
      const y = await runInt4Linear(m, x, M, 2);
      expect(maxAbsDiff(y, ref) / maxAbs(ref)).toBeLessThan(1e-5);
    });
  }
});

// ---------------------------------------------------------------- ../shared int4 models

const INT4_MODELS = [
  path.join(SHARED_DIR, 'models', 'stories260k', 'symb-int4'),
  path.join(SHARED_DIR, 'fixtures', 'tiny-llama', 'symb-int4'),
  path.join(SHARED_DIR, 'fixtures', 'tiny-mistral-bf16', 'symb-int4'),
];
if (!sharedAvailable()) console.warn(`native int4 model tests skipped: ${SHARED_DIR} not found (../shared is absent)`);

for (const dir of INT4_MODELS) {
  describe.skipIf(!sharedAvailable())(`int4 .symb through MatMulNBits: ${path.relative(SHARED_DIR, dir)}`, () => {
    let w: ModelWeights;
    beforeAll(() => {
      w = openModel(dir);
    });
    afterAll(() => w?.close());

    it('the raw int4 accessor dequantizes to exactly what the float32 reader returns (layers and lm_head)', () => {
      const sw = w as SymbWeights;
      expect(sw).toBeInstanceOf(SymbWeights);
      for (const l of [0, w.config.numLayers - 1]) {
        const lw = w.layer(l);
        for (const which of ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as LayerMatrixName[]) {
          const raw = sw.int4LayerMatrix(l, which)!;
          expect([raw.rows, raw.cols]).toEqual([lw[which].rows, lw[which].cols]);
          expect(raw.groupSize).toBe(32);
          expect(maxAbsDiff(dequantizeInt4Matrix(raw), lw[which].data), `layer ${l} ${which}`).toBe(0);
        }
        const vectors = sw.layerVectors(l);
        expect(maxAbsDiff(vectors.inputNorm, lw.inputNorm)).toBe(0);
        expect(maxAbsDiff(vectors.postNorm, lw.postNorm)).toBe(0);
      }
      const head = sw.int4LmHead()!;
      expect(maxAbsDiff(dequantizeInt4Matrix(head), w.lmHeadRows(0, w.config.vocabSize).data)).toBe(0);
    });

    it('prefill equals the tfjs teacher on the same files within 2e-3 (logits and hidden); decode equals prefill', async () => {
      const V = w.config.vocabSize;
      const seqs = [0, 1].map((k) => Array.from({ length: 20 + 7 * k }, (_, t) => (t === 0 ? 1 : (t * 53 + k * 17) % V)));
      const ref = teacherPrefill(w, seqs, { hidden: true });
      const r = await nativePrefill(w, seqs, { hidden: true });
      r.logits.forEach((x, s) => expect(maxAbsDiff(x, ref.logits[s]!), `logits ${s}`).toBeLessThan(2e-3));
      r.hidden!.forEach((hs, s) => hs.forEach((h, l) => expect(maxAbsDiff(h, ref.hidden![s]![l]!), `hidden.${l} of ${s}`).toBeLessThan(2e-3)));
      const dec = await NativeDecoder.create(w);
      try {
        for (let t = 0; t < seqs[0]!.length; t++) expect(maxAbsDiff(await dec.step(seqs[0]![t]!), r.logits[0]!.subarray(t * V, (t + 1) * V)), `position ${t}`).toBeLessThan(1e-4);
      } finally {
        await dec.close();
      }
    });
  });
}
