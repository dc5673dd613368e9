/**
 * Interrupted runs and concurrent runs (issue 7, items 2 and 4) for `convert` and `eval`
 * (distill's kill -9 / resume tests live in distill.test.ts).
 *
 * Kill points are seeded (mulberry32(KILL_SEED)) and of two kinds:
 * - by time or progress: SIGKILL from this process some random time into the child's work;
 * - by file operation: the child counts its own file-system writes (open/write/fsync/close/
 *   rename/mkdir/rm) and sends itself SIGKILL just before the k-th one — the only way to land
 *   reliably inside the few milliseconds in which outputs are written and renamed.
 * After every kill the output must be absent (or hold no report.json / config.symb.json), or
 * complete and valid; anything else next to it must be a temporary name; the next run of the same
 * command must succeed with the same bytes / figures as an uninterrupted run and leave no
 * temporaries behind. Where each kill landed is printed (console.log) for the record.
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeFixture } from '../src/formats/fixture.ts';
import { runEvalCommand } from '../src/cli/commands/eval.ts';
import { writeDirAtomic } from '../src/util/atomic.ts';
import { initBackend } from '../src/runtime/backend.ts';
import { mulberry32 } from '../src/util/random.ts';
import { PROJECT_ROOT } from '../src/util/paths.ts';
import { runDistill } from '../src/distill/run.ts';
import { ADAPTER_WEIGHTS_FILE } from '../src/formats/adapter.ts';
import { writeReport, type EvalReport } from '../src/eval/report.ts';
import { convertHfToSymb } from '../src/formats/convert.ts';
import { fixtureConfig } from '../src/formats/fixture.ts';
import { openModel } from '../src/formats/openModel.ts';
import { writeSafetensors, type StTensorToWrite } from '../src/formats/safetensors.ts';
import { SYMB_CONFIG_FILE } from '../src/formats/symbModel.ts';

const KILL_SEED = 7_2024;
const random = mulberry32(KILL_SEED);
const uniform = (a: number, b: number) => a + (b - a) * random();
const pick = (n: number) => Math.floor(random() * n);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-interrupt-'));
const CACHE = path.join(tmp, 'cache');
/** `synaxim fixture --shape tiny`: hf/ and symb-int4/ (eval runs teacher, teacher-on-student-weights, engine). */
const MODEL = path.join(tmp, 'tiny');
const CORPUS = path.join(tmp, 'corpus.jsonl');
/** An HF checkpoint big enough (≈3.6 M parameters) that converting it takes about a second. */
const BIG = path.join(tmp, 'big-hf');
const CONFIGURATION_NAMES = ['teacher', 'teacher-on-student-weights', 'engine'];
const landings: string[] = [];
const land = (s: string) => landings.push(s);

beforeAll(async () => {
  await initBackend('wasm');
  await makeFixture('tiny', MODEL, { quiet: true });
  // 24 documents of ~90 words: each fills a 64-token window.
  const words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'and', 'looked', 'at', 'small', 'bird', 'in', 'tree', 'while', 'sun', 'rose', 'over', 'hill'];
  const next = mulberry32(5);
  const docs = Array.from({ length: 24 }, () => JSON.stringify({ text: Array.from({ length: 90 }, () => words[Math.floor(next() * words.length)]).join(' ') }));
  fs.writeFileSync(CORPUS, docs.join('\n') + '\n');
  writeBigHf(BIG);
});
afterAll(() => {
  if (landings.length) console.log(`kill points (seed ${KILL_SEED}):\n  ${landings.join('\n  ')}`);
  fs.rmSync(tmp, { recursive: true, force: true });
});

function writeBigHf(dir: string): void {
  const H = 256, I = 704, V = 320, KV = 128, L = 4;
  fs.mkdirSync(dir, { recursive: true });
  const config = { ...fixtureConfig('tiny'), hidden_size: H, intermediate_size: I, num_hidden_layers: L, num_attention_heads: 8, num_key_value_heads: 4, head_dim: 32 };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const next = mulberry32(11);
  const mat = (r: number, c: number): StTensorToWrite => ({ dtype: 'BF16', shape: [r, c], data: Float32Array.from({ length: r * c }, () => (next() * 2 - 1) * 0.05) });
  const ones = (n: number): StTensorToWrite => ({ dtype: 'BF16', shape: [n], data: new Float32Array(n).fill(1) });
  const t: Record<string, StTensorToWrite> = { 'model.embed_tokens.weight': mat(V, H), 'model.norm.weight': ones(H) };
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    Object.assign(t, {
      [`${p}input_layernorm.weight`]: ones(H), [`${p}post_attention_layernorm.weight`]: ones(H),
      [`${p}self_attn.q_proj.weight`]: mat(H, H), [`${p}self_attn.k_proj.weight`]: mat(KV, H), [`${p}self_attn.v_proj.weight`]: mat(KV, H), [`${p}self_attn.o_proj.weight`]: mat(H, H),
      [`${p}mlp.gate_proj.weight`]: mat(I, H), [`${p}mlp.up_proj.weight`]: mat(I, H), [`${p}mlp.down_proj.weight`]: mat(H, I),
    });
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), t);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(MODEL, 'hf', f), path.join(dir, f));
}

// ---------------------------------------------------------------------------------------------
// Child processes

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** ms from spawn to exit. */
  ms: number;
}
interface Child {
  out: () => { stdout: string; stderr: string };
  /** ms since spawn. */
  elapsed: () => number;
  kill: (signal: NodeJS.Signals) => boolean;
  exited: () => boolean;
  done: Promise<Exit>;
}

function start(args: string[], env: Record<string, string> = {}): Child {
  const t0 = performance.now();
  const proc = spawn(process.execPath, args, { cwd: PROJECT_ROOT, env: { ...process.env, SYNAXIM_CACHE: CACHE, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let finished = false;
  proc.stdout.on('data', (d) => (stdout += d));
  proc.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<Exit>((resolve) =>
    proc.on('close', (code, signal) => {
      finished = true;
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    }),
  );
  return { out: () => ({ stdout, stderr }), elapsed: () => performance.now() - t0, kill: (s) => !finished && proc.kill(s), exited: () => finished, done };
}

/** `node bin/synaxim.js ARGS`. */
const cli = (args: string[], env?: Record<string, string>) => start([path.join(PROJECT_ROOT, 'bin', 'synaxim.js'), ...args], env);
/** An ES-module script (the project's .ts through tsx). */
const script = (body: string) => start(['--input-type=module', '-e', `import { register } from ${JSON.stringify(pathToFileURL(path.join(PROJECT_ROOT, 'node_modules/tsx/dist/esm/api/index.mjs')).href)}; register();\n${body}`]);
const src = (rel: string) => JSON.stringify(pathToFileURL(path.join(PROJECT_ROOT, rel)).href);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll until `ready()` or the child exits; true when ready. */
async function until(child: Child, ready: () => boolean): Promise<boolean> {
  while (!child.exited()) {
    if (ready()) return true;
    await sleep(5);
  }
  return ready();
}

/**
 * Script prelude: count the file-system writes made while `armed`, and send ourselves SIGKILL just
 * before the `KILL_AT`-th (0: never). `ops` (a name per operation) is printed by the caller.
 */
function killAtOpPrelude(killAt: number): string {
  return `
const fs = (await import('node:fs')).default;
const path = (await import('node:path')).default;
const KILL_AT = ${killAt};
const ops = [];
let armed = false;
const rawWrite = fs.writeSync.bind(fs);
const writeFds = new Set(); // descriptors opened for writing (reads are not counted)
// Numeric flags write when they ask for write access or creation (O_NONBLOCK alone, as the readers use, does not).
const WRITE_BITS = fs.constants.O_WRONLY | fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_APPEND;
const isWrite = (flags) => flags !== undefined && (typeof flags === 'number' ? (flags & WRITE_BITS) !== 0 : !/^r(s)?$/.test(flags));
for (const name of ['openSync', 'writeSync', 'fsyncSync', 'closeSync', 'renameSync', 'mkdirSync', 'rmSync', 'unlinkSync', 'rmdirSync', 'copyFileSync', 'writeFileSync']) {
  const orig = fs[name];
  fs[name] = function (...args) {
    const counted = armed && (name === 'openSync' ? isWrite(args[1]) : name === 'closeSync' || name === 'writeSync' || name === 'fsyncSync' ? writeFds.has(args[0]) : true);
    if (counted) {
      const paths = (name === 'openSync' ? args.slice(0, 1) : args.slice(0, 2)).filter((a) => typeof a === 'string');
      const what = name + '(' + paths.map((a) => path.basename(a)).join(' -> ') + ')';
      ops.push(what);
      if (ops.length === KILL_AT) {
        rawWrite(2, 'KILLED before op ' + KILL_AT + ': ' + what + '\\n');
        process.kill(process.pid, 'SIGKILL');
      }
    }
    const result = orig.apply(this, args);
    if (name === 'openSync' && isWrite(args[1])) writeFds.add(result);
    if (name === 'closeSync') writeFds.delete(args[0]);
    return result;
  };
}`;
}
const opsOf = (stdout: string): string[] => JSON.parse(/^OPS (.*)$/m.exec(stdout)![1]!) as string[];
const killedOp = (stderr: string) => /KILLED before (op \d+: .*)/.exec(stderr)?.[1] ?? null;

function treeHashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of (fs.readdirSync(dir, { recursive: true }) as string[]).sort()) {
    const p = path.join(dir, rel);
    if (fs.statSync(p).isFile()) out[rel] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
  }
  return out;
}

/** Entries beside `target` in its parent that belong to it: temporaries of writeDirAtomic / writeFileAtomic. */
function tempsOf(dir: string, base: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.startsWith(`.${base}.`)) : [];
}
const TEMP_NAME = /^\..+\.tmp-\d+-\d+(\.old)?$/;
/** What eval writes: the report and the per-token figures `compare` pairs runs by (staged together, report.json last). */
const REPORT_FILES = ['per_token.safetensors', 'report.md', 'report.html', 'report.json'];

// ---------------------------------------------------------------------------------------------

describe('convert killed with kill -9', () => {
  it('at random points: the .symb directory is absent or complete, never half-written; a rerun gives the same bytes', async () => {
    const ref = path.join(tmp, 'convert-ref');
    await convertHfToSymb(BIG, ref, { quantize: 'int4' });
    const refHashes = treeHashes(ref);
    const tensorFiles = Object.keys(refHashes).filter((f) => f.endsWith('.symb')).length;
    const verifyOpens = (dir: string) => {
      const w = openModel(dir);
      try {
        for (let l = 0; l < w.config.numLayers; l++) expect(w.layer(l).down.data.every(Number.isFinite)).toBe(true);
        w.embed([0, 1]);
        w.finalNorm();
      } finally {
        w.close();
      }
    };
    verifyOpens(ref);

    const convertScript = (out: string, killAt: number) =>
      script(`${killAtOpPrelude(killAt)}
const { convertHfToSymb } = await import(${src('src/formats/convert.ts')});
armed = true;
await convertHfToSymb(${JSON.stringify(BIG)}, ${JSON.stringify(out)}, { quantize: 'int4', log: (line) => process.stderr.write('tensor ' + line + '\\n') });
armed = false;
process.stdout.write('OPS ' + JSON.stringify(ops) + '\\n');`);

    // An uninterrupted run in a child: the same bytes, and the list of its file operations.
    const dryOut = path.join(tmp, 'convert-dry', 'out');
    const dry = await convertScript(dryOut, 0).done;
    expect(dry.code, dry.stderr).toBe(0);
    expect(treeHashes(dryOut)).toEqual(refHashes);
    fs.rmSync(dryOut, { recursive: true });
    const ops = opsOf(dry.stdout);
    // The output appears by one rename, last: before it nothing named `out` exists.
    expect(ops[ops.length - 1]).toMatch(/^renameSync\(\.out\.tmp-\d+-\d+ -> out\)$/);

    /** Every state a kill may leave: absent, or byte-identical to the reference; beside it only temporaries. */
    const check = (out: string): string => {
      const parent = path.dirname(out);
      for (const n of fs.readdirSync(parent)) if (n !== 'out') expect(n, `stray entry beside ${out}`).toMatch(TEMP_NAME);
      if (!fs.existsSync(out)) return `absent${tempsOf(parent, 'out').some((n) => n.endsWith('.old')) ? ' (previous output kept aside as .old)' : ''}`;
      expect(treeHashes(out)).toEqual(refHashes); // so config.symb.json never appears before every tensor file
      verifyOpens(out);
      return 'complete';
    };

    // Two chains run side by side: A starts with no output, B with a complete one (a re-conversion).
    const A = path.join(tmp, 'convert-a', 'out');
    const B = path.join(tmp, 'convert-b', 'out');
    fs.mkdirSync(path.dirname(A), { recursive: true });
    fs.cpSync(ref, B, { recursive: true });
    type Kill = { kind: 'op'; at: number } | { kind: 'progress'; after: number; delay: number };
    // B's first kill lands between its two renames (old output moved aside, new one not yet in place):
    // the window that loses the previous output unless the next write puts it back.
    const replaceOps = ops.length + 2; // a replacing run has the two extra operations of moving the old output aside
    const chainB: Kill[] = [{ kind: 'op', at: replaceOps - 1 }];
    const chainA: Kill[] = [];
    for (let i = 0; i < 6; i++) (i % 2 ? chainB : chainA).push({ kind: 'op', at: 1 + pick(ops.length) });
    for (let i = 0; i < 3; i++) (i % 2 ? chainA : chainB).push({ kind: 'progress', after: 1 + pick(tensorFiles - 1), delay: uniform(0, 20) });

    const runChain = async (out: string, kills: Kill[], name: string) => {
      for (const k of kills) {
        const before = fs.existsSync(out) ? 'complete' : 'absent';
        const child = convertScript(out, k.kind === 'op' ? k.at : 0);
        let where: string;
        if (k.kind === 'progress') {
          const seen = () => (child.out().stderr.match(/^tensor /gm) ?? []).length;
          await until(child, () => seen() >= k.after);
          await sleep(k.delay);
          const logged = seen();
          child.kill('SIGKILL');
          where = `SIGKILL after ${logged}/${tensorFiles} tensors written (+${k.delay.toFixed(0)} ms)`;
        } else where = '';
        const r = await child.done;
        if (k.kind === 'op') where = `self-SIGKILL before ${killedOp(r.stderr) ?? '(none: finished)'} of ${before === 'complete' ? replaceOps : ops.length}`;
        const state = r.signal === 'SIGKILL' || r.code === 0 ? check(out) : expect.fail(`convert failed: ${r.stderr}`);
        land(`convert ${name} (output ${before} before): ${where} -> ${state}`);
        if (k === chainB[0]) {
          // Nothing lost: the killed replace left no `out`, and the previous output aside; the next
          // write of `out` puts it back first — even when that write itself fails.
          expect(state).toMatch(/^absent \(previous output kept aside/);
          await expect(writeDirAtomic(out, () => Promise.reject(new Error('this write fails')))).rejects.toThrow('this write fails');
          expect(treeHashes(out)).toEqual(refHashes);
          expect(tempsOf(path.dirname(out), 'out')).toEqual([]);
        }
      }
    };
    await Promise.all([runChain(A, chainA, 'A'), runChain(B, chainB, 'B')]);

    // The same command again, through the CLI for A: succeeds, same bytes, no temporaries left.
    const [againA, againB] = await Promise.all([cli(['convert', BIG, A, '--quantize', 'int4', '--quiet', '--overwrite']).done, convertScript(B, 0).done]);
    expect(againA.code, againA.stderr).toBe(0);
    expect(againB.code, againB.stderr).toBe(0);
    for (const out of [A, B]) {
      expect(treeHashes(out)).toEqual(refHashes);
      expect(fs.readdirSync(path.dirname(out))).toEqual(['out']);
    }
    expect(fs.existsSync(path.join(A, SYMB_CONFIG_FILE))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------

describe('eval killed with kill -9 or interrupted with Ctrl-C', () => {
  const REF = path.join(tmp, 'eval-ref');
  const evalArgs = (out: string) => ['eval', '--model', MODEL, '--corpus', CORPUS, '--context', '64', '--window', 'none', '--out', out, '--backend', 'wasm', '--workers', '1'];
  let refReport: EvalReport;
  let workMs = 1000;
  /** The report's figures: everything but timings and dates. */
  const figures = (r: EvalReport) => ({ tokens: r.tokens, suite: r.suite, model: r.model, configurations: r.configurations.map((c) => ({ ...c, wall_s: 0 })) });

  beforeAll(async () => {
    const t0 = performance.now();
    await runEvalCommand({ model: MODEL, corpus: CORPUS, context: 64, window: 'none', out: REF, rest: 'engine', backend: 'wasm', quiet: true, workers: 1 });
    workMs = performance.now() - t0;
    refReport = JSON.parse(fs.readFileSync(path.join(REF, 'report.json'), 'utf8')) as EvalReport;
    expect(refReport.configurations.map((c) => c.name)).toEqual(CONFIGURATION_NAMES);
  });

  /** A killed eval's --out: absent, or holding no report.json, or a complete report of the same figures. */
  const check = (out: string): string => {
    if (!fs.existsSync(out)) return 'absent';
    for (const n of fs.readdirSync(out)) if (!REPORT_FILES.includes(n)) expect(n).toMatch(TEMP_NAME);
    if (!fs.existsSync(path.join(out, 'report.json'))) return `no report.json (${fs.readdirSync(out).join(', ') || 'empty'})`;
    const r = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) as EvalReport;
    expect(r.configurations.map((c) => c.name)).toEqual(CONFIGURATION_NAMES);
    expect(figures(r)).toEqual(figures(refReport));
    return 'complete report';
  };

  it('kill -9 at random points leaves no report or a complete one; two reruns at once reproduce the figures', async () => {
    const dirs = [0, 1, 2].map((i) => path.join(tmp, `eval-kill-${i}`));
    // Kill 0 by time from spawn (likely still starting up); the others by time into the work,
    // which begins with the `synaxim: eval:` line (after the models are open and the corpus read).
    const plan: ({ fromSpawn: number } | { intoWork: number })[] = dirs.map((_, i) => (i === 0 ? { fromSpawn: uniform(50, 1500) } : { intoWork: uniform(0, 1.3 * workMs) }));
    await Promise.all(
      dirs.map(async (out, i) => {
        const child = cli(evalArgs(out));
        const p = plan[i]!;
        let workStart: number | null = null;
        if ('fromSpawn' in p) await sleep(p.fromSpawn);
        else {
          await until(child, () => /synaxim: eval:/.test(child.out().stderr));
          workStart = child.elapsed();
          await sleep(p.intoWork);
        }
        const at = child.elapsed();
        const { stderr, stdout } = child.out();
        const killed = child.kill('SIGKILL');
        const r = await child.done;
        const into = () => (workStart === null ? `${at.toFixed(0)} ms after spawn` : `${(at - workStart).toFixed(0)} ms into the work`);
        const stage = !killed
          ? 'after it finished'
          : /report:/.test(stdout)
            ? 'while printing its summary'
            : !/synaxim: eval:/.test(stderr)
              ? 'during start-up (loading, reading the corpus)'
              : /eval: (\d+)\/\1 100%/.test(stderr)
                ? `${into()}: after the last unit, while rendering/writing the report`
                : `${into()} (~${workMs.toFixed(0)} ms of work alone), computing`;
        expect(r.signal === 'SIGKILL' || r.code === 0, r.stderr).toBe(true);
        land(`eval kill ${i}: SIGKILL ${at.toFixed(0)} ms after spawn, ${stage} -> ${check(out)}`);
      }),
    );
    // The same command again in two of the killed directories, both at the same time.
    // --overwrite: a kill that landed after the run finished left a complete report, which a rerun may replace only when told to.
    const reruns = await Promise.all([dirs[1]!, dirs[2]!].map((out) => cli([...evalArgs(out), '--overwrite']).done));
    for (const [k, out] of [dirs[1]!, dirs[2]!].entries()) {
      expect(reruns[k]!.code, reruns[k]!.stderr).toBe(0);
      expect(check(out)).toBe('complete report');
      expect(fs.readdirSync(out).sort()).toEqual([...REPORT_FILES].sort());
    }
  });

  it('Ctrl-C (SIGINT) exits 130 promptly with one line and writes nothing (one thread, and two worker threads)', async () => {
    await Promise.all(
      [1, 2].map(async (workers) => {
        const out = path.join(tmp, `eval-sigint-${workers}`);
        const args = evalArgs(out);
        args[args.length - 1] = String(workers);
        const child = cli(args);
        await until(child, () => /synaxim: eval:/.test(child.out().stderr));
        const delay = uniform(0, Math.min(400, workMs / 3));
        await sleep(delay);
        const sentAt = child.elapsed();
        expect(child.kill('SIGINT')).toBe(true);
        const r = await child.done;
        const latency = r.ms - sentAt;
        land(`eval SIGINT (--workers ${workers}) ${delay.toFixed(0)} ms into the work: exit ${r.code} after ${latency.toFixed(0)} ms`);
        expect(r.signal).toBeNull();
        expect(r.code).toBe(130);
        // "Promptly" without a wall-clock assertion (the verdict must not depend on machine load):
        // it stopped before the last unit, so it did not run the work to the end.
        const errors = r.stderr.split('\n').filter((l) => /error/i.test(l));
        expect(errors).toHaveLength(1);
        expect(errors[0]).toMatch(/^synaxim: error: eval interrupted after \d+ of \d+ units \(batch × configuration\); no report written$/);
        const [, doneUnits, allUnits] = /after (\d+) of (\d+) units/.exec(errors[0]!)!;
        expect(Number(doneUnits), errors[0]).toBeLessThan(Number(allUnits));
        expect(r.stderr).not.toMatch(/^\s+at /m); // no stack trace
        expect(fs.existsSync(out)).toBe(false);
      }),
    );
  });

  it('kill -9 while the report files are written: report.json only beside the md/html it describes', async () => {
    const writeScript = (out: string, killAt: number) =>
      script(`${killAtOpPrelude(killAt)}
const { writeReport } = await import(${src('src/eval/report.ts')});
const report = JSON.parse(fs.readFileSync(${JSON.stringify(path.join(REF, 'report.json'))}, 'utf8'));
armed = true;
await writeReport(${JSON.stringify(out)}, report);
armed = false;
process.stdout.write('OPS ' + JSON.stringify(ops) + '\\n');`);
    const ref = Object.fromEntries(['report.md', 'report.html', 'report.json'].map((f) => [f, fs.readFileSync(path.join(REF, f), 'utf8')]));
    /** An older, different report in the directory (as when a sweep re-runs into the same --out). */
    const older = (out: string) => {
      fs.mkdirSync(out, { recursive: true });
      for (const [f, text] of Object.entries(ref)) fs.writeFileSync(path.join(out, f), f === 'report.json' ? text.replace(/"created": "[^"]*"/, '"created": "older"') : text + '<!-- older -->\n');
    };
    const dryOut = path.join(tmp, 'eval-write-dry');
    older(dryOut);
    const dry = await writeScript(dryOut, 0).done;
    expect(dry.code, dry.stderr).toBe(0);
    for (const [f, text] of Object.entries(ref)) expect(fs.readFileSync(path.join(dryOut, f), 'utf8'), f).toBe(text);
    const ops = opsOf(dry.stdout);
    const jsonAppears = ops.findIndex((o) => /^renameSync\(\.report\.json\.tmp-\d+-\d+ -> report\.json\)$/.test(o)) + 1;
    expect(jsonAppears).toBe(ops.length); // report.json is the last thing to appear
    const points = [jsonAppears, ...Array.from({ length: 3 }, () => 1 + pick(ops.length))];

    const checkWritten = (out: string): string => {
      for (const n of fs.readdirSync(out)) if (!(n in ref)) expect(n).toMatch(/^\.report\.(md|html|json)\.tmp-\d+-\d+$/);
      if (!fs.existsSync(path.join(out, 'report.json'))) return 'no report.json';
      // A report.json is the new one, and so are the files it describes.
      for (const [f, text] of Object.entries(ref)) expect(fs.readFileSync(path.join(out, f), 'utf8'), f).toBe(text);
      return 'complete new report';
    };
    const results = await Promise.all(
      points.map(async (at, i) => {
        const out = path.join(tmp, `eval-write-${i}`);
        older(out);
        const r = await writeScript(out, at).done;
        expect(r.signal, r.stderr).toBe('SIGKILL');
        const state = checkWritten(out);
        land(`eval report writing: self-SIGKILL before ${killedOp(r.stderr)} of ${ops.length} -> ${state}`);
        return { out, state };
      }),
    );
    expect(results[0]!.state).toBe('no report.json');
    // Writing again (the next eval into that --out) completes and sweeps the dead run's temporaries.
    const report = JSON.parse(ref['report.json']!) as EvalReport;
    for (const { out } of results) {
      await writeReport(out, report);
      expect(checkWritten(out)).toBe('complete new report');
      expect(fs.readdirSync(out).sort()).toEqual(['report.html', 'report.json', 'report.md']);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('two distill runs at the same time', () => {
  it('fill one teacher cache together and both write the adapter of a run alone', async () => {
    const hf = path.join(MODEL, 'hf');
    const opts = { layers: [0, 1], seqLen: 32, maxSeqs: 32, epochs: 1, batchSize: 8 };
    const alone = await runDistill({
      model: hf, ...opts, lr: 1e-2, input: 'student', mlpGrad: 'exact', rest: 'engine', seed: 0,
      out: path.join(tmp, 'distill-alone'), cacheRoot: path.join(tmp, 'cache-alone'), quiet: true,
    });
    const expected = fs.readFileSync(path.join(alone.adapterDir, ADAPTER_WEIGHTS_FILE));
    const shared = path.join(tmp, 'cache-shared');
    const args = (out: string) => ['distill', '--model', hf, '--layers', '0-1', '--seq-len', '32', '--max-seqs', '32', '--epochs', '1', '--batch-size', '8', '--out', out, '--backend', 'wasm'];
    const outs = [path.join(tmp, 'distill-one'), path.join(tmp, 'distill-two')];
    const runs = await Promise.all(outs.map((out) => cli(args(out), { SYNAXIM_CACHE: shared }).done));
    const computed = runs.filter((r) => /teacher: computing hidden states/.test(r.stderr)).length;
    land(`distill ×2 on one cache: ${computed} of 2 computed the teacher's hidden states themselves (${computed === 2 ? 'both filled the cache at once' : 'one read the entries the other wrote'})`);
    runs.forEach((r, i) => {
      expect(r.code, r.stderr).toBe(0);
      expect(fs.readFileSync(path.join(outs[i]!, 'symbiotic_adapter', ADAPTER_WEIGHTS_FILE)).equals(expected), `run ${i}`).toBe(true);
    });
    const entries = fs.readdirSync(path.join(shared, 'teacher-hidden'));
    expect(entries).toHaveLength(1);
    const files = fs.readdirSync(path.join(shared, 'teacher-hidden', entries[0]!));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(f).toMatch(/^hidden\.\d+\.safetensors$/); // complete entries only, no temporaries
  });
});
