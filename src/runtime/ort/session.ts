/**
 * ONNX Runtime (onnxruntime-node, CPU) sessions over models built by GraphBuilder. Intra-op
 * threads = the machine's cores. Every ORT failure becomes a one-line SynaximError naming what
 * ran (the model file and layer), never a native stack.
 */
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { fail } from '../../util/errors.ts';
import { externalDataOf, type ExternalData } from './graph.ts';

export type OrtSession = ort.InferenceSession;
export { ort };

/** Intra-op threads: the cores this process may use (SYNAXIM_THREADS overrides). */
export function ortThreads(): number {
  const env = Number(process.env.SYNAXIM_THREADS);
  if (Number.isInteger(env) && env > 0) return env;
  return Math.max(1, os.availableParallelism());
}

/** The first meaningful line of an ORT error, without the native source location noise. */
export function ortMessage(e: unknown): string {
  const raw = e instanceof Error ? e.message : String(e);
  const line = raw.split('\n').map((s) => s.trim()).filter((s) => s.length > 0).join(' ') || 'unknown error';
  // "[ONNXRuntimeError] : 1 : FAIL : Load model from ... failed:..." -> keep the part after the status.
  return line.replace(/^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*/, '').slice(0, 400);
}

function isOutOfMemory(msg: string): boolean {
  return /bad_alloc|out of memory|Failed to allocate/i.test(msg);
}

/** Where sessions run: ONNX Runtime's CPU provider, or CUDA (its CUDA 12 binaries installed; see the README). */
export type OrtProvider = 'cpu' | 'cuda';
let provider: OrtProvider = 'cpu';

/** Set by the backend choice (`--backend native-cuda`). */
export function setOrtProvider(p: OrtProvider): void {
  provider = p;
}

function providerError(msg: string): string | null {
  if (provider !== 'cuda' || !/cuda|CUDAExecutionProvider|libonnxruntime_providers/i.test(msg)) return null;
  return (
    `--backend native-cuda: ONNX Runtime's CUDA execution provider could not start (${msg}); it needs CUDA 12 with cuDNN 9 and ` +
    'its binaries, installed with: ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js'
  );
}

export interface SessionOptions {
  /** Intra-op threads (default ortThreads()); 1 for graphs of tiny ops, where a pool costs more than it gives. */
  threads?: number;
  /** Let idle pool threads spin (ORT's default true; off helps on an oversubscribed machine). */
  spinning?: boolean;
  /**
   * Skip prepacking constant weights. Prepacking pays off over many runs (decoding); a prefill
   * session runs a layer once or a few times, and MLAS's sgemm packs its operand per call anyway, so
   * for float32 weights prepacking only doubles session creation (measured: 1.7 s → 0.77 s for one
   * 235 MB matrix, same run time). Never for MatMulNBits: its prepacked layout is the fast INT4 path.
   */
  noPrepack?: boolean;
  /**
   * ORT's CPU memory arena (default on). Off for sessions kept resident side by side whose runs make
   * large short-lived tensors (distill's training graphs): the arena would keep each one's peak.
   */
  memArena?: boolean;
}

/** Create a CPU session from serialized model bytes; `what` names the model file and layer for errors. */
export async function createSession(model: Uint8Array, what: string, opts: SessionOptions = {}): Promise<OrtSession> {
  const spinning = opts.spinning ?? process.env.SYNAXIM_ORT_SPIN !== '0';
  try {
    const externalData = externalDataOf(model);
    return await ort.InferenceSession.create(model, {
      ...(externalData.length > 0 ? { externalData } : {}),
      executionProviders: provider === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
      intraOpNumThreads: opts.threads ?? ortThreads(),
      extra: { session: { intra_op: { allow_spinning: spinning ? '1' : '0' }, ...(opts.noPrepack ? { disable_prepacking: '1' } : {}) } },
      interOpNumThreads: 1,
      ...(opts.memArena === false ? { enableCpuMemArena: false } : {}),
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      logSeverityLevel: 3,
    });
  } catch (e) {
    const msg = ortMessage(e);
    fail(what, providerError(msg) ?? (isOutOfMemory(msg) ? `not enough memory to prepare the ONNX Runtime graph (${msg})` : `ONNX Runtime could not load the graph: ${msg}`));
  }
}

/**
 * Sessions kept by the model they were created from: asking again with byte-identical model bytes,
 * external data and options returns the same session, so graphs that take their weights as inputs
 * (GraphBuilder `weightInputs`) are prepared once for every layer of a kind. Holds at most `limit`
 * sessions: asking for another releases the least recently used (so a session stays valid until
 * `limit` others have been asked for since); releaseAll() when done.
 */
export class SessionCache {
  // Promises, so that asking twice before the first creation finishes still creates one session.
  private entries: { bytes: Uint8Array; external: ExternalData[]; key: string; session: Promise<OrtSession> }[] = [];

  constructor(private readonly limit = 4) {}

  get(model: Uint8Array, what: string, opts: SessionOptions = {}): Promise<OrtSession> {
    const external = externalDataOf(model);
    const key = JSON.stringify(opts);
    const i = this.entries.findIndex((e) => e.key === key && sameBytes(e.bytes, model) && sameExternal(e.external, external));
    if (i >= 0) {
      const [e] = this.entries.splice(i, 1);
      this.entries.push(e!);
      return e!.session;
    }
    const session = createSession(model, what, opts);
    const entry = { bytes: model, external, key, session };
    this.entries.push(entry);
    // A creation that fails is not kept (the caller gets its error).
    session.catch(() => (this.entries = this.entries.filter((e) => e !== entry)));
    while (this.entries.length > this.limit) void release(this.entries.shift()!.session);
    return session;
  }

  async releaseAll(): Promise<void> {
    const all = this.entries;
    this.entries = [];
    for (const e of all) await release(e.session);
  }
}

async function release(session: Promise<OrtSession>): Promise<void> {
  try {
    await releaseSession(await session);
  } catch {
    // A session that failed to create holds nothing.
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

function sameExternal(a: ExternalData[], b: ExternalData[]): boolean {
  return a.length === b.length && a.every((x, i) => x.path === b[i]!.path && sameBytes(x.data, b[i]!.data));
}

/**
 * Run a session; errors as one line naming `what`. `fetches` (optional) names the outputs to
 * compute: a tensor there is written in place (a pre-allocated output), null lets ORT allocate.
 */
export async function runSession(s: OrtSession, feeds: Record<string, ort.Tensor>, what: string, fetches?: Record<string, ort.Tensor | null>): Promise<Record<string, ort.Tensor>> {
  try {
    return (await (fetches ? s.run(feeds, fetches) : s.run(feeds))) as Record<string, ort.Tensor>;
  } catch (e) {
    const msg = ortMessage(e);
    fail(what, isOutOfMemory(msg) ? `not enough memory to run the ONNX Runtime graph (${msg})` : `ONNX Runtime failed: ${msg}`);
  }
}

/** Release a session's native memory (weights, prepacked buffers); errors here are ignored. */
export async function releaseSession(s: OrtSession): Promise<void> {
  try {
    await s.release();
  } catch {
    // Releasing is best effort; a failed release leaves memory to the process exit.
  }
}

/** A float32 tensor of `dims` over `data` (no copy). */
export function f32(data: Float32Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}

/** An int64 tensor from plain numbers. */
export function i64(values: ArrayLike<number>, dims?: number[]): ort.Tensor {
  const a = BigInt64Array.from(Array.from(values, (v) => BigInt(v)));
  return new ort.Tensor('int64', a, dims ?? [a.length]);
}
