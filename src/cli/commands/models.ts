/**
 * `synaxim models [--json]`: every registry name, where it was looked for (each models root), what
 * was found there and what a run would use — so that "model not found" can be checked before a run.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { lookupRegistryEntry, modelRoots, MODELS_CONFIG_DIR, readRegistryEntry, registryNames } from '../../data/registry.ts';

export interface ModelListing {
  name: string;
  description: string;
  base_model: string | null;
  /** Each models root in search order: the directory looked at and what it holds. */
  looked: { root: string; dir: string; exists: boolean; found: string[] }[];
  /** What a run uses (the first root with a usable layout), or null when the model is missing. */
  resolved: { student: string; teacher: string; tokenizer: string | null; source: string; note: string | null } | null;
  how_to_get: string;
}

export function listModels(roots = modelRoots()): ModelListing[] {
  return registryNames().map((name) => {
    const file = path.join(MODELS_CONFIG_DIR, `${name}.json`);
    const entry = readRegistryEntry(file);
    const lookups = roots.map((root) => lookupRegistryEntry(entry, file, root));
    const hit = lookups.find((l) => l.resolved !== null);
    return {
      name,
      description: entry.description,
      base_model: entry.baseModel,
      looked: lookups.map((l) => ({ root: l.root, dir: l.dir, exists: fs.existsSync(l.dir), found: l.found })),
      resolved: hit?.resolved
        ? { student: hit.resolved.studentDir, teacher: hit.resolved.teacherDir, tokenizer: hit.resolved.tokenizerDir, source: hit.resolved.source, note: hit.note }
        : null,
      how_to_get: entry.howToGet,
    };
  });
}

export function renderModelListing(models: ModelListing[]): string {
  const out: string[] = [];
  for (const m of models) {
    out.push(`${m.name}: ${m.resolved ? 'found' : 'missing'} — ${m.description}`);
    for (const l of m.looked) out.push(`  looked in ${l.dir}: ${l.found.length > 0 ? l.found.join(', ') : l.exists ? 'no model files' : 'no such directory'}`);
    if (m.resolved) {
      out.push(`  student ${m.resolved.student}`);
      out.push(`  teacher ${m.resolved.teacher === m.resolved.student ? 'the student itself' : m.resolved.teacher}`);
      out.push(`  tokenizer ${m.resolved.tokenizer ?? 'none'}`);
      if (m.resolved.note) out.push(`  note: ${m.resolved.note}`);
    } else out.push(`  how to get it: ${m.how_to_get}`);
    out.push('');
  }
  out.push('Models roots are searched in order: each entry of $SYNAXIM_MODELS (`:`-separated), then ./models.');
  return out.join('\n') + '\n';
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const command: CommandModule<any, any> = {
  command: 'models',
  describe: 'list the registry names (--model NAME), where each was looked for and what was found',
  builder: (y) =>
    y
      .option('json', { type: 'boolean', default: false, describe: 'print the listing as JSON' })
      .example('$0 models', 'which registry models are on disk, and how to get the others')
      .example('SYNAXIM_MODELS=/data/models $0 models --json', 'the same as JSON, searching /data/models first'),
  handler: (args) => {
    const models = listModels();
    process.stdout.write((args as unknown as { json: boolean }).json ? JSON.stringify({ roots: modelRoots(), models }, null, 2) + '\n' : renderModelListing(models));
  },
};
