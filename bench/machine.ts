/**
 * What machine a benchmark ran on, and how much memory the process has used: CPU model (from
 * /proc/cpuinfo), cores, memory, Node version, tfjs backend; peak resident set size from
 * `process.resourceUsage().maxRSS` and /proc/self/status (VmHWM), and the same for a child process
 * while it runs (/proc/<pid>/status).
 */
import fs from 'node:fs';
import os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { backendInfo } from '../src/runtime/backend.ts';
import { availableCores } from '../src/runtime/workers.ts';

export interface MachineInfo {
  cpuModel: string;
  /** Logical CPUs the OS reports, and those this process may use. */
  cores: number;
  availableParallelism: number;
  memoryGiB: number;
  os: string;
  node: string;
  tfjs: string;
  backend: string;
  backendDetail: string;
  /** 1/5/15-minute load averages when the run started (other processes share the cores). */
  loadavg: number[];
}

function cpuModel(): string {
  try {
    const text = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const m = /^model name\s*:\s*(.+)$/m.exec(text);
    if (m) return m[1]!.trim();
  } catch {
    // not Linux
  }
  return os.cpus()[0]?.model ?? 'unknown';
}

export function describeMachine(): MachineInfo {
  const b = backendInfo();
  return {
    cpuModel: cpuModel(),
    cores: os.cpus().length,
    availableParallelism: availableCores(),
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    tfjs: tf.version_core,
    backend: b.backend,
    backendDetail: b.detail,
    loadavg: os.loadavg().map((x) => round(x, 2)),
  };
}

/** A `VmXxx:  1234 kB` field of a /proc/<pid>/status file, in MiB (null when unreadable). */
export function procStatusMiB(pid: number | 'self', field: 'VmHWM' | 'VmRSS' | 'VmPeak'): number | null {
  try {
    const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s*(\\d+)\\s*kB`, 'm').exec(text);
    return m ? round(Number(m[1]) / 1024, 1) : null;
  } catch {
    return null;
  }
}

export interface RssInfo {
  /** process.resourceUsage().maxRSS (KiB there), in MiB: the peak of this process, every thread included. */
  maxRssMiB: number;
  /** /proc/self/status VmHWM (peak) and VmRSS (now), MiB. */
  vmHwmMiB: number | null;
  vmRssMiB: number | null;
}

export function rss(): RssInfo {
  return { maxRssMiB: round(process.resourceUsage().maxRSS / 1024, 1), vmHwmMiB: procStatusMiB('self', 'VmHWM'), vmRssMiB: procStatusMiB('self', 'VmRSS') };
}

export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const p = 10 ** digits;
  return Math.round(x * p) / p;
}

/** Round to `sig` significant digits (timings and ratios in reports). */
export function sig(x: number, digits = 3): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const p = 10 ** (digits - 1 - Math.floor(Math.log10(Math.abs(x))));
  return Math.round(x * p) / p;
}
