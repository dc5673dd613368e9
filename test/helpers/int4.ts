/** INT4 matrices for the native engine's tests: made as a .symb stores them, multiplied by the bound linear and by float64. */
import { encodeInt4, INT4_HEADER_BYTES, int4Scales } from '../../src/formats/symb.ts';
import type { Int4Matrix } from '../../src/formats/symbModel.ts';
import { matVec } from '../../src/model/float64.naive.ts';
import { bindLinear } from '../../src/native/linear.ts';
import { GraphBuilder } from '../../src/runtime/ort/graph.ts';
import { createSession, f32, runSession } from '../../src/runtime/ort/session.ts';

/** An int4 matrix as a .symb file stores it, from float32 values (the converter's own encoder). */
export function int4Of(values: Float32Array, rows: number, cols: number, groupSize: number): Int4Matrix {
  const bytes = encodeInt4(values, [rows, cols], groupSize);
  const scales = int4Scales(bytes);
  return { file: '(test)', rows, cols, groupSize, scales, packed: bytes.subarray(INT4_HEADER_BYTES + 4 * scales.length) };
}

/** x [M, K] · Wᵀ in float64 for W [N, K] (the product's float64 matVec, row by row). */
export function refProduct(x: Float32Array, w: Float32Array, M: number, K: number, N: number): Float64Array {
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) out.set(matVec({ data: w, rows: N, cols: K }, x.subarray(m * K, (m + 1) * K)), m * N);
  return out;
}

/** The bound linear (MatMulNBits or its float32 fallback, in the current INT4 mode) on x [B, M/B, K] through ONNX Runtime. */
export async function runInt4Linear(m: Int4Matrix, x: Float32Array, M: number, B: number): Promise<Float32Array> {
  const b = new GraphBuilder('int4-test');
  const input = b.input('x', 'float32', [B, M / B, m.cols]);
  b.output(bindLinear(b, 'w', { kind: 'int4', m }, null)(input), 'float32', [B, M / B, m.rows], 'y');
  const s = await createSession(b.toBytes(), 'int4-test');
  try {
    return (await runSession(s, { x: f32(x, [B, M / B, m.cols]) }, 'int4-test')).y!.data as Float32Array;
  } finally {
    await s.release();
  }
}
