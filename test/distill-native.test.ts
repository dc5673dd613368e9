/**
 * distill with its teacher on the native engine (`--backend native`; its MSE training pass too, src/distill/nativePass.ts):
 * killed with -9 and resumed (the teacher recomputed natively in each process, no cache), the
 * adapter is bit-identical to an uninterrupted native run; a native run reading its own teacher
 * cache gives that adapter too; and the native and tfjs teachers get separate cache entries.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.ts';
import { PROJECT_ROOT } from '../src/util/paths.ts';
import { writeFixtureHf } from '../src/formats/fixture.ts';
import { readTrainLog, runDistill, type DistillOptions } from '../src/distill/run.ts';
import { CHECKPOINT_FILE, loadCheckpoint } from '../src/distill/train.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-distill-native-'));
const CACHE = path.join(tmp, 'cache');
const TINY = path.join(tmp, 'tiny-hf');

beforeAll(async () => {
  await initBackend('native');
  writeFixtureHf('tiny', TINY);
});
afterAll(async () => {
  fs.rmSync(tmp, { recursive: true, force: true });
  await initBackend('wasm');
});

function run(out: string, over: Partial<DistillOptions> = {}): DistillOptions {
  return {
    model: TINY, layers: [0, 1], seqLen: 16, maxSeqs: 20, epochs: 6, lr: 1e-2, batchSize: 4,
    input: 'teacher', mlpGrad: 'exact', rest: 'engine', seed: 0, out, cacheRoot: CACHE, cache: false, quiet: true, ...over,
  };
}

const adapterBytes = (dir: string) => fs.readFileSync(path.join(dir, 'adapter_model.safetensors'));

/** A distill in a child process on the native engine, killed with `signal` once `ready()` holds. */
async function runChildUntil(opts: DistillOptions, ready: () => boolean, signal: NodeJS.Signals): Promise<{ signal: NodeJS.Signals | null; stderr: string }> {
  const tsx = pathToFileURL(path.join(PROJECT_ROOT, 'node_modules', 'tsx', 'dist', 'esm', 'api', 'index.mjs')).href;
  const src = (f: string) => JSON.stringify(pathToFileURL(path.join(PROJECT_ROOT, f)).href);
  const script = `import { register } from ${JSON.stringify(tsx)}; register();
const { initBackend } = await import(${src('src/runtime/backend.ts')});
await initBackend('native');
const { runDistill } = await import(${src('src/distill/run.ts')});
await runDistill(${JSON.stringify({ ...opts, quiet: false })});`;
  const child: ChildProcess = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: PROJECT_ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  let finished = false;
  const done = new Promise<{ signal: NodeJS.Signals | null; stderr: string }>((resolve) => child.on('close', (_code, sig) => ((finished = true), resolve({ signal: sig, stderr }))));
  while (!finished && !ready()) await new Promise((r) => setTimeout(r, 5));
  if (finished) throw new Error(`child finished before it could be interrupted: ${stderr.slice(-500)}`);
  child.kill(signal);
  return done;
}

describe('distill with the teacher on the native engine', () => {
  it('kill -9 and --resume give the bit-identical adapter; its own cache gives it too', async () => {
    const reference = await runDistill(run(path.join(tmp, 'uninterrupted')));
    const refBytes = adapterBytes(reference.adapterDir);

    const out = path.join(tmp, 'killed');
    const logFile = path.join(out, 'train_log.jsonl');
    const steps = () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"type":"step"')).length : 0);
    const killed = await runChildUntil(run(out), () => steps() >= 7, 'SIGKILL');
    expect(killed.signal).toBe('SIGKILL');
    expect(loadCheckpoint(path.join(out, CHECKPOINT_FILE)).epoch).toBeGreaterThanOrEqual(1);
    const resumed = await runDistill(run(out, { resume: true }));
    expect(resumed.resumedFrom).not.toBeNull();
    expect(adapterBytes(resumed.adapterDir).equals(refBytes)).toBe(true);
    expect(readTrainLog(resumed.logFile).steps.map((s) => s.loss)).toEqual(readTrainLog(reference.logFile).steps.map((s) => s.loss));

    // With the cache: the first run fills the native entry, the second reads it; both give the reference adapter.
    const filled = await runDistill(run(path.join(tmp, 'cache-fill'), { cache: true }));
    const read = await runDistill(run(path.join(tmp, 'cache-read'), { cache: true }));
    expect(adapterBytes(filled.adapterDir).equals(refBytes)).toBe(true);
    expect(adapterBytes(read.adapterDir).equals(refBytes)).toBe(true);
    // The tfjs teacher keeps an entry of its own beside the native one.
    const entries = () => fs.readdirSync(path.join(CACHE, 'teacher-hidden'));
    expect(entries()).toHaveLength(1);
    await initBackend('wasm');
    try {
      const tfjs = await runDistill(run(path.join(tmp, 'tfjs'), { cache: true }));
      expect(entries()).toHaveLength(2);
      // Same training from targets equal to float32 rounding: the losses agree closely, not bit for bit.
      const a = readTrainLog(tfjs.logFile).steps.map((s) => s.loss);
      const b = readTrainLog(reference.logFile).steps.map((s) => s.loss);
      a.forEach((x, i) => expect(Math.abs(x - b[i]!) / Math.abs(b[i]!), `step ${i}`).toBeLessThan(1e-3));
    } finally {
      await initBackend('native');
    }
  });
});
