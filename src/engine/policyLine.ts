/**
 * The one line every command that runs the student prints on stderr, saying which layers run which
 * attention policy: `synaxim: student: layers 0-1 adapter-v1, 2-4 engine-v0.1.1`. A student that
 * gates nothing (no adapter and `--rest teacher`) is said plainly, since it is then the teacher's
 * attention on the student's weights.
 */
import type { RestPolicy } from '../model/policy.ts';

/** What the attention block of one layer runs. */
export type AttentionPolicy = 'adapter-v1' | `adapter-window-${number}` | 'engine-v0.1.1' | 'softmax' | 'fixed';

const REST_NAME: Record<RestPolicy, AttentionPolicy> = { engine: 'engine-v0.1.1', teacher: 'softmax', fixed: 'fixed' };

/** Per-layer policies of a student: adapted layers `adapterName` (adapter-v1 or adapter-window-W), the others what `rest` says. */
export function studentPolicies(numLayers: number, adapterLayers: readonly number[] | null, rest: RestPolicy, adapterName: AttentionPolicy = 'adapter-v1'): AttentionPolicy[] {
  const adapted = new Set(adapterLayers ?? []);
  return Array.from({ length: numLayers }, (_, l) => (adapted.has(l) ? adapterName : REST_NAME[rest]));
}

/** ["adapter-v1","adapter-v1","softmax"] -> "layers 0-1 adapter-v1, 2 softmax" (plus why, when nothing is gated). */
export function formatPolicyLine(policies: readonly string[]): string {
  const parts: string[] = [];
  for (let i = 0; i < policies.length; ) {
    let j = i;
    while (j + 1 < policies.length && policies[j + 1] === policies[i]) j++;
    parts.push(`${i === j ? i : `${i}-${j}`} ${policies[i]}`);
    i = j + 1;
  }
  const ungated = policies.length > 0 && policies.every((p) => p === 'softmax' || p === 'teacher');
  return `layers ${parts.join(', ')}` + (ungated ? ' (nothing is gated: softmax attention on the student weights; give --adapter or another --rest)' : '');
}

/** The student's policy line for a run: `what` names the run (e.g. `student`, `adapter`). */
export function studentPolicyLine(what: string, numLayers: number, adapter: { layers: readonly number[]; window?: number | null } | null, rest: RestPolicy): string {
  const name = adapter?.window ? (`adapter-window-${adapter.window}` as const) : 'adapter-v1';
  return `synaxim: ${what}: ${formatPolicyLine(studentPolicies(numLayers, adapter?.layers ?? null, rest, name))}\n`;
}
