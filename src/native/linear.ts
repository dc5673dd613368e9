/**
 * A model's linear layers as graph nodes, weights bound as initializers (so ONNX Runtime prepares
 * them once per session), or as graph inputs when the builder says `weightInputs` (GraphBuilder.weight:
 * one session per layer kind, fed each layer's weights):
 * - float32 host matrices (HF F32/F16/BF16 checkpoints, .symb fp16/fp32/int8, all decoded to
 *   float32 by the readers): com.microsoft FusedMatMul with transB, the [out, in] matrix bound as stored;
 * - int4 .symb matrices: com.microsoft MatMulNBits straight from the 4-bit codes — the .symb group
 *   scales become its block scales, its codes (q + 8) its unsigned nibbles with the default zero
 *   point 8; only the nibble order differs (.symb: high nibble first; MatMulNBits: low first).
 *   MatMulNBits blocks never cross a row, so this needs in_features % group_size == 0 (and a
 *   power-of-two group ≥ 16, which the kernel requires); other int4 matrices are expanded to
 *   float32 once (loadNativeLayer notes it on stderr, once per model). With int4Activations()
 *   'int8' (an opt-in) MatMulNBits quantizes the activations to int8 per block (accuracy_level 4).
 */
import { dequantizeInt4 } from '../formats/symb.ts';
import type { Int4Matrix } from '../formats/symbModel.ts';
import type { Matrix } from '../formats/weights.ts';
import type { GraphBuilder } from '../runtime/ort/graph.ts';
import { int4Activations } from '../runtime/backend.ts';

export type LinearSource = { kind: 'f32'; m: Matrix } | { kind: 'int4'; m: Int4Matrix };

/** in/out features of a linear source ([out, in] PyTorch orientation). */
export function linearShape(src: LinearSource): { inFeatures: number; outFeatures: number } {
  return { inFeatures: src.m.cols, outFeatures: src.m.rows };
}

/** Whether MatMulNBits can take this int4 matrix as stored (blocks = the file's groups, inside rows). */
export function int4Repackable(m: Pick<Int4Matrix, 'cols' | 'groupSize'>): boolean {
  const bs = m.groupSize;
  return m.cols % bs === 0 && bs >= 16 && (bs & (bs - 1)) === 0;
}

/** MatMulNBits's B: uint8 [N, K/bs, bs/2], low nibble first; the .symb bytes with nibbles swapped. */
export function repackInt4(m: Int4Matrix): { b: Uint8Array; scales: Float32Array } {
  const bytes = (m.rows * m.cols) / 2;
  const b = new Uint8Array(bytes);
  const src = m.packed;
  let i = 0;
  if (src.byteOffset % 4 === 0) {
    // Four bytes at a time (a layer of a 7B model is ~100 MB of codes).
    const words = bytes >>> 2;
    const s32 = new Uint32Array(src.buffer, src.byteOffset, words);
    const d32 = new Uint32Array(b.buffer, 0, words);
    for (let w = 0; w < words; w++) {
      const x = s32[w]!;
      d32[w] = ((x & 0x0f0f0f0f) << 4) | ((x >>> 4) & 0x0f0f0f0f);
    }
    i = words << 2;
  }
  for (; i < bytes; i++) {
    const x = src[i]!;
    b[i] = ((x & 0x0f) << 4) | (x >>> 4);
  }
  return { b, scales: m.scales.length === (m.rows * m.cols) / m.groupSize ? m.scales : m.scales.subarray(0, (m.rows * m.cols) / m.groupSize) };
}

/** The float32 [rows, cols] values of an int4 matrix (the fallback path). */
export function dequantizeInt4Matrix(m: Int4Matrix): Float32Array {
  return dequantizeInt4(m.scales, m.groupSize, m.packed, 0, 0, m.rows * m.cols);
}

/**
 * Add `input · Wᵀ (+ bias)` for input [..., in] to the graph; the weight initializer is named
 * `name` (bind each matrix once per graph and reuse the returned function for every caller).
 */
export function bindLinear(b: GraphBuilder, name: string, src: LinearSource, bias: Float32Array | null): (input: string) => string {
  const { inFeatures: K, outFeatures: N } = linearShape(src);
  let apply: (input: string) => string;
  if (src.kind === 'int4' && int4Repackable(src.m)) {
    const { b: packed, scales } = repackInt4(src.m);
    const bs = src.m.groupSize;
    const wB = b.weight(`${name}.qweight`, packed, [N, K / bs, bs / 2]);
    const wS = b.weight(`${name}.scales`, scales, [(N * K) / bs]);
    // accuracy_level 4: int8 activations (the opt-in of int4Activations()); absent: float32, today's numerics.
    const attrs: Record<string, number> = { K, N, bits: 4, block_size: bs };
    if (int4Activations() === 'int8') attrs.accuracy_level = 4;
    apply = (input) => b.node('MatMulNBits', [input, wB, wS], attrs, { domain: 'com.microsoft' });
  } else {
    // int4 that MatMulNBits cannot take as stored (loadNativeLayer says so once per model).
    const data = src.kind === 'int4' ? dequantizeInt4Matrix(src.m) : src.m.data;
    // FusedMatMul's transB reads the [out, in] matrix as stored: no host transpose, and ORT
    // prepacks it once per session as it does MatMul's constant B.
    const w = b.weight(`${name}.weight`, data, [N, K]);
    apply = (input) => b.node('FusedMatMul', [input, w], { transB: 1 }, { domain: 'com.microsoft' });
  }
  if (!bias) return apply;
  const bName = b.weight(`${name}.bias`, bias, [N]);
  return (input) => b.node('Add', [apply(input), bName]);
}

/** Bytes the bound weight takes in the graph (for memory estimates). */
export function boundBytes(src: LinearSource): number {
  const { inFeatures: K, outFeatures: N } = linearShape(src);
  if (src.kind === 'int4' && int4Repackable(src.m)) return (N * K) / 2 + (4 * N * K) / src.m.groupSize;
  return 4 * N * K;
}

/**
 * `g · W` for g [..., out] -> [..., in]: the input gradient of `bindLinear(b, name, src)` (bind
 * that first). A matrix bound as float32 is reused as is; MatMulNBits cannot multiply in this
 * direction, so for a matrix it takes the float32 [out, in] values come in as the graph input
 * `inputName` (`input` says so; feed dequantizeInt4Matrix) — an input, not an initializer, so
 * ONNX Runtime neither copies nor prepacks it at session creation. (Dequantizing in the graph with
 * com.microsoft GatherBlockQuantized is exact too but measured slower: 0.8 s for a 14336×4096
 * matrix on 2 cores against 0.3 s on the host.)
 */
export function bindLinearInputGrad(b: GraphBuilder, name: string, src: LinearSource, inputName: string): { apply: (g: string) => string; input: string | null } {
  const { inFeatures: K, outFeatures: N } = linearShape(src);
  const asInput = src.kind === 'int4' && int4Repackable(src.m);
  const w = asInput ? b.input(inputName, 'float32', [N, K]) : `${name}.weight`;
  return { apply: (g) => b.node('MatMul', [g, w]), input: asInput ? inputName : null };
}
