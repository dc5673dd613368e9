/**
 * (e) and the Magnus-shaped runs: a CLI command run as a child process, with its wall time and
 * its peak resident set size read from /proc/<pid>/status (VmHWM, the kernel's high-water mark,
 * polled every 200 ms; the last reading before exit is the peak up to then). Output goes to a
 * log file; the result keeps its tail.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PROJECT_ROOT } from '../src/util/paths.ts';
import { procStatusMiB, sig } from './machine.ts';

export interface CommandRun {
  name: string;
  command: string;
  exitCode: number | null;
  wallSec: number;
  peakRssMiB: number | null;
  peakRssGiB: number | null;
  log: string;
  tail: string;
  /** What else was learned from the run (filled in by whoever records it). */
  note?: string;
}

export function measureCommand(name: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = {}): Promise<CommandRun> {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  const out = fs.openSync(logFile, 'w');
  const bin = path.join(PROJECT_ROOT, 'bin', 'synaxim.js');
  const t0 = performance.now();
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', out, out], env: { ...process.env, ...env } });
  let peak: number | null = null;
  const poll = setInterval(() => {
    const v = procStatusMiB(child.pid!, 'VmHWM');
    if (v !== null) peak = Math.max(peak ?? 0, v);
  }, 200);
  return new Promise((resolve) => {
    child.on('exit', (code) => {
      clearInterval(poll);
      fs.closeSync(out);
      const text = fs.readFileSync(logFile, 'utf8');
      resolve({
        name,
        command: `synaxim ${args.join(' ')}`,
        exitCode: code,
        wallSec: sig((performance.now() - t0) / 1000),
        peakRssMiB: peak,
        peakRssGiB: peak === null ? null : sig(peak / 1024),
        log: logFile,
        tail: text.split('\n').filter((l) => l.trim()).slice(-6).join('\n'),
      });
    });
  });
}
