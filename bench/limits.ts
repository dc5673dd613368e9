/**
 * The machine's own limits, measured in the same run as the figures they divide (issue 15: every
 * speed is a fraction of what this machine can do, not of our own kernel):
 *
 * - sgemm peak: an fp32 MatMul n×n·n×n through onnxruntime-node (src/runtime/ort: intra-op threads = cores, the
 *   right operand bound as an initializer so it is prepacked once, as the engine binds weights), and
 *   through numpy (its BLAS, OpenBLAS usually) when `python3 -c 'import numpy'` works. Median of reps,
 *   2·n³ FLOP each. The reference peak is the larger of the two.
 * - memory-copy bandwidth: a large Float32Array.set and Buffer.copy (well beyond the caches), bytes read
 *   + written per second, median of reps; the reference is the larger. One thread: what one decode
 *   stream reading its weights can expect.
 */
import { spawnSync } from 'node:child_process';
import { GraphBuilder } from '../src/runtime/ort/graph.ts';
import { createSession, f32, ort, ortThreads, releaseSession, runSession } from '../src/runtime/ort/session.ts';
import { sig } from './machine.ts';

export interface SgemmMeasurement {
  /** 'onnxruntime-node 1.30.0' or 'numpy 2.4.6 (openblas 0.3.x)'. */
  library: string;
  n: number;
  /** Threads it was given (intra-op threads; OPENBLAS/OMP/MKL_NUM_THREADS for numpy). */
  threads: number;
  reps: number;
  medianMs: number;
  /** 2·n³ / median time. */
  gflops: number;
}

export interface CopyMeasurement {
  method: 'Float32Array.set' | 'Buffer.copy';
  bytes: number;
  reps: number;
  medianMs: number;
  /** (bytes read + bytes written) / median time = 2·bytes / time, GB/s (10⁹). */
  gbPerSec: number;
}

export interface MachineLimits {
  measuredAt: string;
  sgemm: SgemmMeasurement[];
  /** Why numpy is missing from `sgemm`, when it is. */
  numpyNote: string | null;
  /** The larger sgemm figure: what prefill GFLOP/s is divided by. */
  sgemmPeakGflops: number;
  sgemmPeakLibrary: string;
  copy: CopyMeasurement[];
  /** The larger copy figure: what decode bytes/s is divided by. */
  copyGbPerSec: number;
}

export interface LimitSizes {
  /** Matrix size of the sgemm (2048 at full size). */
  n: number;
  reps: number;
  /** Bytes copied per repetition. */
  copyBytes: number;
  copyReps: number;
  /** Also time numpy (off in tests that must not depend on python). */
  numpy: boolean;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : 0.5 * (s[n / 2 - 1]! + s[n / 2]!);
}

/** A one-node ONNX model: Y = A · B, B an n×n float32 initializer (bound once, as the engine binds weights). */
export function matmulModel(n: number, b: Float32Array): Uint8Array {
  const g = new GraphBuilder('sgemm');
  const a = g.input('A', 'float32', [n, n]);
  const w = g.initializer('B', b, [n, n]);
  g.output(g.node('MatMul', [a, w]), 'float32', [n, n], 'Y');
  return g.toBytes();
}

/** Deterministic values in [-1, 1) (the values do not change the time; zeros might). */
function filled(count: number, seed: number): Float32Array {
  const a = new Float32Array(count);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    a[i] = (x >>> 0) / 2 ** 31 - 1;
  }
  return a;
}

export async function ortSgemm(n: number, reps: number): Promise<SgemmMeasurement> {
  const threads = ortThreads();
  const session = await createSession(matmulModel(n, filled(n * n, 2)), `sgemm ${n}³`);
  try {
    const a = f32(filled(n * n, 1), [n, n]);
    await runSession(session, { A: a }, `sgemm ${n}³`); // warm-up (first run allocates)
    const samples: number[] = [];
    for (let r = 0; r < Math.max(1, reps); r++) {
      const t0 = performance.now();
      const out = await runSession(session, { A: a }, `sgemm ${n}³`);
      samples.push(performance.now() - t0);
      out.Y!.dispose();
    }
    const ms = median(samples);
    return { library: `onnxruntime-node ${ort.env.versions.common}`, n, threads, reps: samples.length, medianMs: sig(ms), gflops: sig((2 * n ** 3) / (ms * 1e6)) };
  } finally {
    await releaseSession(session);
  }
}

const NUMPY_SCRIPT = `
import json, sys, time
import numpy as np
n, reps = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
ts = []
for _ in range(max(1, reps)):
    t0 = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t0)
blas = ''
try:
    cfg = np.show_config(mode='dicts')['Build Dependencies']['blas']
    blas = f"{cfg.get('name', '')} {cfg.get('version', '')}".strip()
except Exception:
    pass
print(json.dumps({'version': np.__version__, 'blas': blas, 'samples': ts}))
`;

/** numpy's sgemm in a python3 child, or why it could not run. */
export function numpySgemm(n: number, reps: number): SgemmMeasurement | { missing: string } {
  // The same thread count as onnxruntime's intra-op pool, set for every BLAS numpy may be built on.
  const t = String(ortThreads());
  const env = { ...process.env, OPENBLAS_NUM_THREADS: t, OMP_NUM_THREADS: t, MKL_NUM_THREADS: t };
  const r = spawnSync('python3', ['-c', NUMPY_SCRIPT, String(n), String(reps)], { encoding: 'utf8', timeout: 300_000, env });
  if (r.error) return { missing: `python3 not runnable (${r.error.message})` };
  if (r.status !== 0) return { missing: `python3 numpy failed: ${(r.stderr || '').trim().split('\n').pop() ?? `exit ${r.status}`}` };
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as { version: string; blas: string; samples: number[] };
  const ms = median(j.samples) * 1000;
  return { library: `numpy ${j.version}${j.blas ? ` (${j.blas})` : ''}`, n, threads: Number(t), reps: j.samples.length, medianMs: sig(ms), gflops: sig((2 * n ** 3) / (ms * 1e6)) };
}

/** Median time of copying `bytes` from one buffer to another, both touched first (no page faults timed). */
export function copyBandwidth(method: CopyMeasurement['method'], bytes: number, reps: number): CopyMeasurement {
  const n = Math.floor(bytes / 4);
  const src = filled(n, 3);
  const dst = new Float32Array(n);
  const srcB = Buffer.from(src.buffer, src.byteOffset, n * 4);
  const dstB = Buffer.from(dst.buffer, dst.byteOffset, n * 4);
  const once = method === 'Float32Array.set' ? () => dst.set(src) : () => srcB.copy(dstB);
  once(); // warm-up: faults the destination's pages in
  const samples: number[] = [];
  for (let r = 0; r < Math.max(1, reps); r++) {
    const t0 = performance.now();
    once();
    samples.push(performance.now() - t0);
  }
  if (dst[n - 1] !== src[n - 1]) throw new Error('copyBandwidth: the copy did not happen');
  const ms = median(samples);
  return { method, bytes: n * 4, reps: samples.length, medianMs: sig(ms), gbPerSec: sig((2 * n * 4) / (ms * 1e6)) };
}

/** Measure the limits; progress on `log`. */
export async function measureLimits(s: LimitSizes, log: (line: string) => void = () => {}): Promise<MachineLimits> {
  const sgemm: SgemmMeasurement[] = [await ortSgemm(s.n, s.reps)];
  log(`machine: sgemm ${s.n}³ ${sgemm[0]!.library}, ${sgemm[0]!.threads} threads: ${sgemm[0]!.gflops} GFLOP/s`);
  let numpyNote: string | null = null;
  if (s.numpy) {
    const np = numpySgemm(s.n, s.reps);
    if ('missing' in np) numpyNote = np.missing;
    else sgemm.push(np);
    log(`machine: sgemm ${s.n}³ ${'missing' in np ? `numpy skipped: ${np.missing}` : `${np.library}: ${np.gflops} GFLOP/s`}`);
  } else numpyNote = 'not measured at this preset';
  const copy = (['Float32Array.set', 'Buffer.copy'] as const).map((m) => copyBandwidth(m, s.copyBytes, s.copyReps));
  log(`machine: copy ${copy.map((c) => `${c.method} ${c.gbPerSec} GB/s`).join(', ')}`);
  const peak = sgemm.reduce((a, b) => (b.gflops > a.gflops ? b : a));
  return {
    measuredAt: new Date().toISOString(),
    sgemm,
    numpyNote,
    sgemmPeakGflops: peak.gflops,
    sgemmPeakLibrary: peak.library,
    copy,
    copyGbPerSec: Math.max(...copy.map((c) => c.gbPerSec)),
  };
}

/** A speed as a fraction of a limit (3 significant digits); null when either is missing. */
export function fractionOf(figure: number | null | undefined, limit: number | null | undefined): number | null {
  if (figure === null || figure === undefined || !limit || !Number.isFinite(figure)) return null;
  return sig(figure / limit);
}
