/**
 * The decoding loop: feed a prompt to an incremental decoder (teacher: KV cache; student:
 * recurrent state), then sample one token at a time until EOS, a token budget or the model's
 * last position.
 */
import type { Sampler } from '../model/sampling.ts';

/**
 * Incremental decoding, whatever the engine: feed a token, get the logits of the next. tfjs
 * decoders answer synchronously, the native engine's (ONNX Runtime sessions) asynchronously.
 */
export interface Decoder {
  /** Tokens fed so far. */
  readonly position: number;
  step(id: number): Float32Array | Promise<Float32Array>;
  /** Feed several tokens (possibly batched); logits after the last. Default: `step` each. */
  prefill?(ids: number[]): Float32Array | Promise<Float32Array>;
  dispose?(): void | Promise<void>;
}

export type StopReason = 'eos' | 'max_tokens' | 'max_position';

export interface GenerateOptions {
  maxTokens: number;
  sampler: Sampler;
  eosIds: number[];
  /** Positions the model supports (max_position_embeddings): decoding stops there. */
  maxPositions: number;
  /** Called with each generated id and the ids before it. */
  onToken?: (id: number, prevIds: number[]) => void;
}

/** Feed the prompt, then sample up to maxTokens more. Returns prompt + generated ids. */
export async function generateIds(decoder: Decoder, promptIds: number[], o: GenerateOptions): Promise<{ ids: number[]; stop: StopReason }> {
  const ids = [...promptIds];
  if (o.maxTokens <= 0) return { ids, stop: 'max_tokens' };
  let logits: Float32Array;
  if (decoder.prefill) logits = await decoder.prefill(promptIds);
  else {
    logits = new Float32Array(0);
    for (const id of promptIds) logits = await decoder.step(id);
  }
  for (let n = 0; ; ) {
    const next = o.sampler.sample(logits);
    o.onToken?.(next, ids);
    ids.push(next);
    n++;
    if (o.eosIds.includes(next)) return { ids, stop: 'eos' };
    if (n >= o.maxTokens) return { ids, stop: 'max_tokens' };
    if (decoder.position >= o.maxPositions) return { ids, stop: 'max_position' };
    logits = await decoder.step(next);
  }
}
