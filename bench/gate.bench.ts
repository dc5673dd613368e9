/**
 * Benchmark (not a test): the symbiotic gate's chunked-parallel form against its recurrent form.
 *
 *   npx tsx bench/gate.bench.ts [--backend wasm] [--quick]
 *
 * Magnus-like dimensions (D_q = 4096 = 32 heads × 128; the gate sees GQA-expanded k/v, so the
 * 8 kv heads do not change its cost), T = 64 and 512:
 * - forward of the chunked form without the final state (prefill / training / evaluation), C = 32…512;
 * - forward of the chunked form with the final state (prefill before decoding), default chunk;
 * - forward of the recurrent form (token by token, timed on the first tokens — its cost per token
 *   is constant — reported per token and as tokens/s);
 * - forward+backward (gradient w.r.t. the gate logits: the path of the adapter's gate_bias and
 *   gate_scale). Autodiff keeps every carried D×D state, so configurations whose estimate exceeds
 *   the wasm heap are skipped and reported as such.
 * A small-D section (stories260k: D_q = 64) checks the default chunk size there.
 *
 * Each Magnus-sized case runs in its own child process: running out of wasm memory aborts the
 * whole wasm module, which must not take the other measurements with it.
 * Prints one JSON document on stdout; progress on stderr.
 */
import * as tf from '@tensorflow/tfjs-core';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { initBackend, backendInfo, type BackendChoice } from '../src/runtime/backend.ts';
import { defaultChunkSize, gateChunked, gateChunkedOutput, gateLogs, gateRecurrent, type GateSequence } from '../src/model/gate.ts';

const args = process.argv.slice(2);
const backendArg = (args.includes('--backend') ? args[args.indexOf('--backend') + 1] : 'wasm') as BackendChoice;
const quick = args.includes('--quick');

function log(msg: string): void {
  process.stderr.write(`[gate.bench] ${msg}\n`);
}

interface Case {
  D: number;
  T: number;
  form: 'chunked' | 'chunked+final-state' | 'recurrent';
  pass: 'forward' | 'forward+backward';
  chunk?: number;
  /** Tokens actually run (recurrent: a prefix of T). */
  tokens: number;
  reps: number;
}

interface Row extends Omit<Case, 'reps'> {
  ms: number | null;
  tokensPerSec: number | null;
  msPerToken: number | null;
  note?: string;
}

/** The wasm heap is 4 GiB; leave room for fragmentation and the inputs. */
const HEAP_BUDGET = 2.5 * 2 ** 30;

/** Rough peak bytes of a case (dominated by D×D states; backward keeps them all). */
function estimateBytes(c: Case): number {
  const state = c.D * c.D * 4;
  if (c.form === 'recurrent') return c.pass === 'forward' ? 3 * state : (2 * c.tokens + 3) * state;
  const C = Math.min(c.chunk ?? defaultChunkSize(c.D), c.T);
  const N = Math.ceil(c.T / C);
  const carried = c.form === 'chunked+final-state' ? N : N - 1;
  if (carried <= 0) return 8 * c.T * c.D * 4 + 4 * N * C * C * 4;
  return (c.pass === 'forward' ? 3 : 2 * carried + 3) * state;
}

function makeSequence(T: number, D: number, seed: number): GateSequence {
  return tf.tidy(() => {
    const q = tf.randomNormal([T, D], 0, 1, 'float32', seed) as tf.Tensor2D;
    const k = tf.randomNormal([T, D], 0, 1, 'float32', seed + 1) as tf.Tensor2D;
    const v = tf.randomNormal([T, D], 0, 1, 'float32', seed + 2) as tf.Tensor2D;
    const kHat = tf.div(k, tf.norm(k, 'euclidean', 1, true)) as tf.Tensor2D;
    const z = tf.randomNormal([T], 1, 2, 'float32', seed + 3) as tf.Tensor1D;
    return { q, kHat, vHat: v, ...gateLogs(z) };
  });
}

/** One warm-up call, then the median wall time of `reps` calls (outputs read back). */
function time(f: () => tf.Tensor[], reps: number): number {
  const times: number[] = [];
  for (let i = 0; i < reps + 1; i++) {
    const t0 = performance.now();
    const outs = f();
    outs.forEach((o) => o.dataSync());
    outs.forEach((o) => o.dispose());
    if (i > 0) times.push(performance.now() - t0);
  }
  times.sort((x, y) => x - y);
  return times[Math.floor(times.length / 2)];
}

/** Run one case in this process. */
function runCase(c: Case): Row {
  const seq = makeSequence(c.tokens, c.D, 17);
  const w = tf.randomNormal([c.tokens, c.D], 0, 1, 'float32', 5) as tf.Tensor2D;
  const z = tf.randomNormal([c.tokens], 1, 2, 'float32', 6) as tf.Tensor1D;
  const withLogs = (zz: tf.Tensor): GateSequence => ({ ...seq, ...gateLogs(zz as tf.Tensor1D) });
  let f: () => tf.Tensor[];
  if (c.pass === 'forward') {
    if (c.form === 'recurrent') f = () => tf.tidy(() => Object.values(gateRecurrent(seq)));
    else if (c.form === 'chunked') f = () => tf.tidy(() => [gateChunkedOutput(seq, c.chunk)]);
    else f = () => tf.tidy(() => Object.values(gateChunked(seq, c.chunk)));
  } else {
    // d/dz Σ r ⊙ w with log g = log σ(z)
    const r = (zz: tf.Tensor) => (c.form === 'recurrent' ? gateRecurrent(withLogs(zz)).r : gateChunkedOutput(withLogs(zz), c.chunk));
    f = () => tf.tidy(() => [tf.grad((zz: tf.Tensor) => tf.sum(tf.mul(r(zz), w)))(z)]);
  }
  const ms = time(f, c.reps);
  [w, z, ...Object.values(seq)].forEach((t) => (t as tf.Tensor).dispose());
  const { reps: _reps, ...rest } = c;
  return { ...rest, ms: round(ms), tokensPerSec: round((c.tokens / ms) * 1000), msPerToken: round(ms / c.tokens, 3) };
}

function round(x: number, digits = 1): number {
  const p = 10 ** digits;
  return Math.round(x * p) / p;
}

function describeCase(c: Case): string {
  return `D=${c.D} T=${c.T} ${c.form}${c.chunk ? ` C=${c.chunk}` : ''} ${c.pass}${c.tokens !== c.T ? ` (${c.tokens} tokens)` : ''}`;
}

/** Run one case in a child process (isolates wasm aborts on out-of-memory). */
function runIsolated(c: Case): Row {
  const script = fileURLToPath(import.meta.url);
  const res = spawnSync(process.execPath, [...process.execArgv, script, '--backend', backendArg, '--case', JSON.stringify(c)], { encoding: 'utf8', maxBuffer: 1 << 24 });
  const line = (res.stdout ?? '').trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Row;
  } catch {
    let why = (res.stderr ?? '').split('\n').find((l) => /Error|Aborted|memory/i.test(l) && l.length < 300) ?? `exit ${res.status}`;
    if (/Aborted/.test(why)) why = 'wasm aborted (out of its 4 GiB heap: autodiff keeps every carried D×D state)';
    const { reps: _reps, ...rest } = c;
    return { ...rest, ms: null, tokensPerSec: null, msPerToken: null, note: `failed: ${why.trim()}` };
  }
}

function cases(D: number, Ts: number[], chunks: number[], recurrentTokens: number, recurrentGradTokens: number, reps: number): Case[] {
  const out: Case[] = [];
  for (const T of Ts) {
    // chunks ≥ T are all the same computation (one chunk): keep the first of them
    const distinct = chunks.filter((C) => C < T || C === chunks.find((x) => x >= T));
    for (const C of distinct) out.push({ D, T, form: 'chunked', pass: 'forward', chunk: C, tokens: T, reps });
    out.push({ D, T, form: 'chunked+final-state', pass: 'forward', chunk: defaultChunkSize(D), tokens: T, reps });
    out.push({ D, T, form: 'recurrent', pass: 'forward', tokens: Math.min(T, recurrentTokens), reps });
    for (const C of distinct) out.push({ D, T, form: 'chunked', pass: 'forward+backward', chunk: C, tokens: T, reps });
    out.push({ D, T, form: 'recurrent', pass: 'forward+backward', tokens: Math.min(T, recurrentGradTokens), reps });
  }
  return out;
}

function annotate(row: Row, c: Case): Row {
  const notes: string[] = [];
  if (c.form === 'chunked' && (c.chunk ?? 0) >= c.T) notes.push('one chunk: no carried state');
  if (c.form === 'chunked+final-state') notes.push('default chunk');
  if (c.tokens < c.T) notes.push(`timed on the first ${c.tokens} of ${c.T} tokens (constant cost per token)`);
  if (row.note) notes.push(row.note);
  return notes.length ? { ...row, note: notes.join('; ') } : row;
}

async function main(): Promise<void> {
  await initBackend(backendArg);
  if (args.includes('--case')) {
    const c = JSON.parse(args[args.indexOf('--case') + 1]) as Case;
    process.stdout.write(JSON.stringify(runCase(c)) + '\n');
    return;
  }
  log(`backend ${backendInfo().backend} (${backendInfo().detail})`);
  const t0 = performance.now();
  runCase({ D: 64, T: 16, form: 'chunked', pass: 'forward+backward', chunk: 8, tokens: 16, reps: 1 }); // warm-up

  const smallD: Row[] = [];
  for (const c of cases(64, [128, 512], [16, 32, 64, 128, 256, 512], 512, 128, quick ? 2 : 7)) {
    const row = annotate(runCase(c), c);
    log(`${describeCase(c)}: ${row.ms} ms, ${row.tokensPerSec} tok/s`);
    smallD.push(row);
  }
  const magnus: Row[] = [];
  const magnusCases = quick
    ? cases(4096, [64], [64], 4, 2, 1)
    : cases(4096, [64, 512], [32, 64, 128, 256, 512], 16, 4, 2);
  for (const c of magnusCases) {
    const need = estimateBytes(c);
    let row: Row;
    if (need > HEAP_BUDGET) {
      const { reps: _reps, ...rest } = c;
      row = { ...rest, ms: null, tokensPerSec: null, msPerToken: null, note: `skipped: needs ~${(need / 2 ** 30).toFixed(1)} GiB of wasm heap (4 GiB max)` };
    } else {
      row = runIsolated(c);
    }
    row = annotate(row, c);
    log(`${describeCase(c)}: ${row.ms === null ? row.note : `${row.ms} ms, ${row.tokensPerSec} tok/s`}`);
    magnus.push(row);
  }

  const best = (rows: Row[], T: number, pass: Row['pass']) =>
    rows.filter((r) => r.T === T && r.pass === pass && r.form === 'chunked' && r.tokensPerSec !== null).sort((a, b) => b.tokensPerSec! - a.tokensPerSec!)[0];
  const rec = (rows: Row[], T: number, pass: Row['pass']) => rows.find((r) => r.T === T && r.pass === pass && r.form === 'recurrent');
  const summary = [64, 512].flatMap((T) =>
    (['forward', 'forward+backward'] as const).map((pass) => {
      const b = best(magnus, T, pass);
      const r = rec(magnus, T, pass);
      return {
        T,
        pass,
        bestChunk: b?.chunk ?? null,
        chunkedTokensPerSec: b?.tokensPerSec ?? null,
        recurrentTokensPerSec: r?.tokensPerSec ?? null,
        speedup: b?.tokensPerSec && r?.tokensPerSec ? round(b.tokensPerSec / r.tokensPerSec) : null,
      };
    }),
  );
  const report = {
    benchmark: 'symbiotic gate: chunked-parallel vs recurrent',
    backend: backendInfo(),
    host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '', node: process.version, loadavg: os.loadavg().map((x) => round(x, 2)) },
    defaultChunk: { 'D=64': defaultChunkSize(64), 'D=4096': defaultChunkSize(4096) },
    note: 'ms = wall time of one call (median after a warm-up). Magnus: D_q 4096 (32 heads x 128; 8 kv heads, expanded). stateMiB per carried state = 64.',
    magnusSummary: summary,
    magnus,
    smallD,
    totalSeconds: round((performance.now() - t0) / 1000),
  };
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
}

await main();
