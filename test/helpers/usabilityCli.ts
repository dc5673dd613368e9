/** Run `node bin/synaxim.js ARGS` as a user would (own process, real files) for the usability tests. */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { PROJECT_ROOT } from '../../src/util/paths.ts';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export function synaxim(args: string[], opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): CliRun {
  const r = spawnSync(process.execPath, [path.join(PROJECT_ROOT, 'bin', 'synaxim.js'), ...args], {
    cwd: opts.cwd ?? PROJECT_ROOT,
    env: { ...process.env, ...opts.env },
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 600_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
