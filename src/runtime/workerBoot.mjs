// Entry of every worker thread of a WorkerPool (src/runtime/workers.ts). Plain JavaScript on purpose:
// Node 20 ignores `--import tsx` in a Worker's execArgv for the worker's own entry module, so this
// file registers tsx itself and only then imports TypeScript. It then starts the tfjs backend the
// pool asked for (one tfjs engine and one wasm heap per worker) and serves calls:
//   in:  { id, module, fn, args }     module: file URL of a .ts/.js module, fn: an exported function
//   out: { id, ok: true, value }      value: what fn returned (awaited); typed arrays that span their
//                                     whole buffer are transferred (moved, not copied): the worker
//                                     must not use them afterwards. Partial views are copied.
//        { id, ok: false, error: { name, message, file, stack } }
// Modules stay loaded between calls, so a task module can keep state (open weights, uploaded
// layers) in module scope for the next call routed to the same worker.
import { parentPort, workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();

const { initBackend } = await import(new URL('./backend.ts', import.meta.url).href);
let ready;
try {
  ready = { ok: true, backend: await initBackend(workerData.backend ?? 'auto') };
} catch (e) {
  ready = { ok: false, error: describeError(e) };
}
parentPort.postMessage({ ready });

function describeError(e) {
  if (e instanceof Error) return { name: e.name, message: e.message, file: e.file ?? null, stack: e.stack ?? '' };
  return { name: 'Error', message: String(e), file: null, stack: '' };
}

/** The ArrayBuffers to move: those of typed arrays that span them whole, reachable through arrays, plain objects and Maps. */
function transferables(value, out = new Set(), seen = new Set()) {
  if (value === null || typeof value !== 'object' || seen.has(value)) return out;
  seen.add(value);
  if (ArrayBuffer.isView(value)) {
    if (value.buffer instanceof ArrayBuffer && value.byteOffset === 0 && value.byteLength === value.buffer.byteLength) out.add(value.buffer);
  } else if (Array.isArray(value)) {
    for (const v of value) transferables(v, out, seen);
  } else if (value instanceof Map) {
    for (const v of value.values()) transferables(v, out, seen);
  } else {
    for (const v of Object.values(value)) transferables(v, out, seen);
  }
  return out;
}

const modules = new Map();
let queue = Promise.resolve();

// Calls run one after another, in arrival order (a task may await; the next one waits for it).
parentPort.on('message', (msg) => {
  queue = queue.then(() => serve(msg));
});

async function serve(msg) {
  const { id, module, fn, args } = msg;
  try {
    let mod = modules.get(module);
    if (!mod) {
      mod = await import(module);
      modules.set(module, mod);
    }
    if (typeof mod[fn] !== 'function') throw new Error(`worker: ${module} exports no function '${fn}'`);
    const value = await mod[fn](...(args ?? []));
    parentPort.postMessage({ id, ok: true, value }, [...transferables(value)]);
  } catch (e) {
    parentPort.postMessage({ id, ok: false, error: describeError(e) });
  }
}
