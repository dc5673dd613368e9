/** Where things live: the project root, the shared fixtures beside it, caches. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/**
 * `../shared` beside the project root: conformance fixtures (data, never copied into the project).
 * SYNAXIM_SHARED_DIR points elsewhere (tests use a missing directory to check that the suite skips
 * cleanly on a clone with nothing beside it).
 */
export const SHARED_DIR = path.resolve(PROJECT_ROOT, process.env.SYNAXIM_SHARED_DIR || path.join('..', 'shared'));
export function sharedAvailable(): boolean {
  return fs.existsSync(path.join(SHARED_DIR, 'fixtures'));
}
export const CONFIGS_DIR = path.join(PROJECT_ROOT, 'configs');
export function cacheDir(): string {
  return process.env.SYNAXIM_CACHE ?? path.join(PROJECT_ROOT, '.synaxim-cache');
}
