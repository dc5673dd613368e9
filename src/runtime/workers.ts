/**
 * Both CPU cores for tfjs-wasm. The wasm backend runs single-threaded in Node, so a second core is
 * only used by a second tfjs engine: a worker thread (`worker_threads`) with its own tfjs instance
 * and its own wasm heap (up to 4 GiB each). Independent work — evaluation windows, configurations,
 * distillation layers under `--input teacher` — is spread over a pool of such workers.
 *
 * A call names a module (by file URL) and one of its exported functions; the worker imports the
 * module once (it stays loaded, so module-scope state such as open weights or uploaded layers
 * survives to the next call on the same worker) and runs the function with structured-cloned
 * arguments. Large typed arrays in results are moved, not copied (see workerBoot.mjs); pass
 * `transfer` to move arguments the same way. Errors come back with their one-line message (a
 * SynaximError stays a SynaximError).
 *
 *   const pool = await WorkerPool.start(2);
 *   try {
 *     const outs = await pool.map(new URL('../core/task.ts', import.meta.url), 'work', items.map((x) => [x]));
 *   } finally {
 *     await pool.close();
 *   }
 *
 * Memory: every worker holds its own copy of whatever its tasks load (a layer's weights, a batch's
 * activations), so N workers need about N times the per-task memory; `chooseWorkers` keeps small
 * jobs on one worker.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { backendInfo, type BackendChoice } from './backend.ts';
import { SynaximError } from '../util/errors.ts';

const BOOT = new URL('./workerBoot.mjs', import.meta.url);

/** Cores this process may use (os.availableParallelism where Node has it). */
export function availableCores(): number {
  const n = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.max(1, n);
}

/**
 * How many workers to use: an explicit `requested` count wins (at least 1, at most `units`);
 * otherwise 1 when there are fewer than 2 cores, fewer than 2 independent units of work, a job
 * too small to pay the ~1–2 s start of a worker (`tiny`), or a backend that is already
 * multi-threaded (tfjs-node); else min(cores, units, 2).
 */
export function chooseWorkers(opts: { requested?: number | null; units: number; tiny?: boolean; backend?: string; cores?: number }): number {
  const units = Math.max(1, Math.floor(opts.units));
  if (opts.requested !== undefined && opts.requested !== null) {
    if (!Number.isInteger(opts.requested) || opts.requested < 1) throw new SynaximError(null, `--workers must be a positive integer, got ${opts.requested}`);
    return Math.min(opts.requested, units);
  }
  const cores = opts.cores ?? availableCores();
  const backend = opts.backend ?? backendInfo().backend;
  if (cores < 2 || units < 2 || opts.tiny || (backend !== 'wasm' && backend !== 'cpu')) return 1;
  return Math.min(cores, units, 2);
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker;
  /** Calls sent to this worker and not yet answered. */
  pending: Map<number, Pending>;
  dead: Error | null;
}

/** Rebuild an error thrown inside a worker. */
function errorFromWorker(e: { name: string; message: string; file: string | null; stack: string }): Error {
  if (e.name === 'SynaximError' || e.name === 'InterruptedError') {
    const prefix = e.file ? `${e.file}: ` : '';
    const err = new SynaximError(e.file, e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message);
    return err;
  }
  const err = new Error(e.message);
  err.name = e.name;
  err.stack = `${e.name}: ${e.message}\n    (in a worker thread)\n${e.stack.split('\n').slice(1).join('\n')}`;
  return err;
}

export interface WorkerPoolOptions {
  /** Backend each worker starts (default: the one running in this thread, else auto). */
  backend?: BackendChoice;
}

export class WorkerPool {
  private nextId = 1;
  private closed = false;

  private constructor(
    private readonly slots: Slot[],
    /** The tfjs backend the workers run. */
    readonly backend: string,
  ) {}

  /** Start `size` workers and wait until each has its tfjs backend ready. */
  static async start(size: number, opts: WorkerPoolOptions = {}): Promise<WorkerPool> {
    if (!Number.isInteger(size) || size < 1) throw new Error(`WorkerPool: size must be a positive integer, got ${size}`);
    const backend = opts.backend ?? ((backendInfo().backend || 'auto') as BackendChoice);
    const slots: Slot[] = [];
    const started: Promise<string>[] = [];
    for (let i = 0; i < size; i++) {
      const worker = new Worker(BOOT, { workerData: { backend, index: i }, stdout: false, stderr: false });
      const slot: Slot = { worker, pending: new Map(), dead: null };
      slots.push(slot);
      started.push(
        new Promise<string>((resolve, reject) => {
          const onFirst = (msg: { ready?: { ok: boolean; backend?: string; error?: Parameters<typeof errorFromWorker>[0] } }) => {
            if (!msg.ready) return;
            worker.off('message', onFirst);
            if (msg.ready.ok) resolve(msg.ready.backend!);
            else reject(errorFromWorker(msg.ready.error!));
          };
          worker.on('message', onFirst);
          worker.once('error', reject);
          worker.once('exit', (code) => reject(new Error(`worker ${i} exited with code ${code} while starting`)));
        }),
      );
      worker.on('message', (msg: { id?: number; ok?: boolean; value?: unknown; error?: Parameters<typeof errorFromWorker>[0] }) => {
        if (msg.id === undefined) return;
        const p = slot.pending.get(msg.id);
        if (!p) return;
        slot.pending.delete(msg.id);
        if (msg.ok) p.resolve(msg.value);
        else p.reject(errorFromWorker(msg.error!));
      });
      const die = (err: Error) => {
        slot.dead ??= err;
        for (const p of slot.pending.values()) p.reject(err);
        slot.pending.clear();
      };
      worker.on('error', (e) => die(e instanceof Error ? e : new Error(String(e))));
      worker.on('exit', (code) => die(new Error(`worker ${i} exited (code ${code})${code === 0 ? '' : ': it crashed or ran out of memory'}`)));
    }
    let names: string[];
    try {
      names = await Promise.all(started);
    } catch (e) {
      await Promise.all(slots.map((s) => s.worker.terminate()));
      throw e;
    }
    return new WorkerPool(slots, names[0]!);
  }

  get size(): number {
    return this.slots.length;
  }

  /**
   * Run `fn(...args)` of `module` on worker `index` (calls to one worker run in the order sent).
   * Route related calls to the same worker to reuse what its module keeps loaded.
   */
  call<T>(index: number, module: URL | string, fn: string, args: unknown[] = [], transfer: Transferable[] = []): Promise<T> {
    if (this.closed) return Promise.reject(new Error('WorkerPool: closed'));
    const slot = this.slots[index];
    if (!slot) return Promise.reject(new Error(`WorkerPool: no worker ${index} (pool of ${this.slots.length})`));
    if (slot.dead) return Promise.reject(slot.dead);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      slot.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      try {
        slot.worker.postMessage({ id, module: String(module), fn, args }, transfer as never[]);
      } catch (e) {
        slot.pending.delete(id);
        reject(e);
      }
    });
  }

  /**
   * Run `fn` once per entry of `argsList`, each on whichever worker is free next (dynamic
   * scheduling: at most one call in flight per worker). Results in the order of `argsList`.
   * `onResult(i, value)` sees each result as it arrives (in completion order). The first error
   * rejects (after the calls in flight have ended).
   */
  async map<T>(module: URL | string, fn: string, argsList: unknown[][], onResult?: (i: number, value: T) => void): Promise<T[]> {
    const results = new Array<T>(argsList.length);
    let next = 0;
    let failure: unknown = null;
    const lane = async (w: number) => {
      while (failure === null && next < argsList.length) {
        const i = next++;
        try {
          const v = await this.call<T>(w, module, fn, argsList[i]);
          results[i] = v;
          onResult?.(i, v);
        } catch (e) {
          failure ??= e;
        }
      }
    };
    await Promise.all(this.slots.map((_, w) => lane(w)));
    if (failure !== null) throw failure;
    return results;
  }

  /**
   * Like `map`, but item i always goes to worker `key(i) mod size` (sticky routing): e.g. the
   * same layer to the same worker every step, so the worker keeps that layer's weights uploaded.
   * Calls of one worker run in order; the workers run side by side.
   */
  async mapSticky<T>(module: URL | string, fn: string, argsList: unknown[][], key: (i: number) => number): Promise<T[]> {
    return Promise.all(argsList.map((args, i) => this.call<T>(((key(i) % this.size) + this.size) % this.size, module, fn, args)));
  }

  /** Stop every worker (pending calls are rejected). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

/**
 * Run `fn` of `module` over `argsList` on `workers` threads, or in this thread when `workers` is 1
 * (same module, same function, no pool started): the one code path for both. Results in order.
 */
export async function parallelMap<T>(workers: number, module: URL | string, fn: string, argsList: unknown[][], opts: WorkerPoolOptions = {}): Promise<T[]> {
  if (workers <= 1 || argsList.length <= 1) {
    const mod = (await import(String(module))) as Record<string, (...a: unknown[]) => T | Promise<T>>;
    const f = mod[fn];
    if (typeof f !== 'function') throw new Error(`parallelMap: ${String(module)} exports no function '${fn}'`);
    const out: T[] = [];
    for (const args of argsList) out.push(await f(...args));
    return out;
  }
  const pool = await WorkerPool.start(Math.min(workers, argsList.length), opts);
  try {
    return await pool.map<T>(module, fn, argsList);
  } finally {
    await pool.close();
  }
}
