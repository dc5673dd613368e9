/**
 * The native (ONNX Runtime) forward passes over a model:
 * - `nativePrefill` / `nativePrefillMany` (prefill.ts): whole sequences, layer-major;
 * - `NativeDecoder` (decoder.ts): one token at a time with resident sessions and state.
 */
export { nativePrefill, nativePrefillMany, type NativeConfig, type PrefillOptions, type PrefillResult } from './prefill.ts';
export { NativeDecoder } from './decoder.ts';
export { requireNativeFits } from './common.ts';
