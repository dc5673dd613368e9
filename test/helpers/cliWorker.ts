/**
 * A long-lived child process that runs CLI invocations one after another through the same
 * `main(argv)` that bin/synaxim.js calls, so a table of a hundred bad-input cases costs one Node +
 * tsx + tfjs start instead of a hundred. Protocol: `@@ready` on stdout once loaded; then one JSON
 * line `{"id": n, "args": [...]}` on stdin per invocation, answered by one line
 * `@@result {"id", "code", "stdout", "stderr", "seconds"}` on stdout when it ends (the id ties the
 * answer to its request).
 * The parent (CliWorker in badFiles.ts) kills this process if an invocation hangs. Started as
 * `node --import tsx test/helpers/cliWorker.ts`.
 */
import readline from 'node:readline';
import { main } from '../../src/cli/main.ts';

const realStdoutWrite = process.stdout.write.bind(process.stdout);
const realStderrWrite = process.stderr.write.bind(process.stderr);

function capture(sink: (s: string) => void): typeof process.stdout.write {
  return ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    sink(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  }) as typeof process.stdout.write;
}

const lines = readline.createInterface({ input: process.stdin });
realStdoutWrite('@@ready\n');
for await (const line of lines) {
  if (!line.trim()) continue;
  const { id, args } = JSON.parse(line) as { id: number; args: string[] };
  let stdout = '';
  let stderr = '';
  process.stdout.write = capture((s) => (stdout += s));
  process.stderr.write = capture((s) => (stderr += s));
  process.exitCode = undefined;
  const t0 = performance.now();
  let code: number;
  try {
    await main(args);
    code = Number(process.exitCode ?? 0);
  } catch (e) {
    // main() reports every error itself; reaching this is a bug in main.
    stderr += `cliWorker: main() threw: ${(e as Error)?.stack ?? String(e)}\n`;
    code = 99;
  } finally {
    process.stdout.write = realStdoutWrite;
    process.stderr.write = realStderrWrite;
    process.exitCode = undefined;
  }
  const seconds = (performance.now() - t0) / 1000;
  realStdoutWrite('@@result ' + JSON.stringify({ id, code, stdout, stderr, seconds }) + '\n');
}
