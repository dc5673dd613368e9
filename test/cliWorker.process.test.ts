/**
 * CliWorker (test/helpers/badFiles.ts), the runner of the bad-input / bad-runs / fuzz suites:
 * every result belongs to the request that produced it. A child killed after a timeout, a child
 * that exits mid-invocation, or a result line with another request's id must never be taken for
 * the answer to a later request (before the fix, under load every later result shifted by one).
 * Runs against a stand-in child (helpers/fakeCliWorker.ts) that answers when told to.
 */
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../src/util/paths.ts';
import { CliWorker } from './helpers/badFiles.ts';

const worker = new CliWorker(path.join(PROJECT_ROOT, 'test', 'helpers', 'fakeCliWorker.ts'));
afterAll(() => worker.close());

describe('CliWorker ties every result to its request', () => {
  it('answers in order; a timed-out request is killed and the next one gets its own answer from a fresh child', async () => {
    expect(await worker.run(['answer', '0', '0', 'first'], 60_000)).toMatchObject({ code: 0, stdout: 'first', timedOut: false });
    // warm child: the timeout is the caller's (no cold-start allowance after the first invocation)
    const slow = await worker.run(['answer', '5000', '0', 'late'], 300);
    expect(slow).toMatchObject({ code: null, signal: 'SIGKILL', timedOut: true });
    // the killed child's exit must not answer these
    for (const text of ['second', 'third']) expect(await worker.run(['answer', '0', '1', text], 60_000)).toMatchObject({ code: 1, stdout: text, timedOut: false });
  });

  it('a child that exits during an invocation answers that invocation only', async () => {
    const r = await worker.run(['exit', '3'], 60_000);
    expect(r).toMatchObject({ code: 3, timedOut: false });
    expect(r.stderr).toMatch(/cliWorker exited during the invocation/);
    expect(await worker.run(['answer', '0', '0', 'after exit'], 60_000)).toMatchObject({ code: 0, stdout: 'after exit' });
  });

  it('a result line carrying another request id is ignored', async () => {
    expect(await worker.run(['stray'], 60_000)).toMatchObject({ code: 0, stdout: 'ok' });
    expect(await worker.run(['answer', '0', '0', 'next'], 60_000)).toMatchObject({ code: 0, stdout: 'next' });
  });

  it('one invocation at a time', async () => {
    const first = worker.run(['answer', '200', '0', 'a'], 60_000);
    await expect(worker.run(['answer', '0', '0', 'b'], 60_000)).rejects.toThrow(/one invocation at a time/);
    expect(await first).toMatchObject({ stdout: 'a' });
  });
});
