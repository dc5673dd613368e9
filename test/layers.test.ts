/**
 * The folders of src/ are layers (README "Layout"): each imports only from the folders below it, so
 * there is no import cycle between folders. Reads every relative import of every source file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../src/util/paths.ts';

/** Ground first. Folders on one rung (distill, eval) may not import each other. */
const LAYERS: string[][] = [['util'], ['formats'], ['runtime'], ['model'], ['native'], ['data'], ['report'], ['teacher'], ['engine'], ['distill', 'eval'], ['demo'], ['cli']];
const SRC = path.join(PROJECT_ROOT, 'src');
const rung = new Map(LAYERS.flatMap((folders, i) => folders.map((f) => [f, i] as const)));

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sourceFiles(p) : /\.(ts|mjs)$/.test(e.name) ? [p] : [];
  });
}

/** Every (importing folder, imported folder, file, specifier) across folders. */
function crossFolderImports(): { from: string; to: string; file: string; spec: string }[] {
  const out: { from: string; to: string; file: string; spec: string }[] = [];
  const pattern = /(?:from\s+|import\s*\(\s*|import\s+|new URL\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g;
  for (const file of sourceFiles(SRC)) {
    const from = path.relative(SRC, file).split(path.sep)[0]!;
    for (const m of fs.readFileSync(file, 'utf8').matchAll(pattern)) {
      const target = path.resolve(path.dirname(file), m[1]!);
      const rel = path.relative(SRC, target);
      if (rel.startsWith('..')) continue; // package.json and the like
      const to = rel.split(path.sep)[0]!;
      if (to !== from) out.push({ from, to, file: path.relative(PROJECT_ROOT, file), spec: m[1]! });
    }
  }
  return out;
}

describe('folders as layers', () => {
  it('every folder of src/ has its place in the order', () => {
    const folders = fs.readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    expect(folders.filter((f) => !rung.has(f))).toEqual([]);
  });

  it('each folder imports only from folders below it', () => {
    const imports = crossFolderImports();
    expect(imports.length).toBeGreaterThan(100); // the scan sees the imports at all
    const upward = imports.filter((i) => rung.get(i.to)! >= rung.get(i.from)!).map((i) => `${i.file}: ${i.spec} (${i.from} -> ${i.to})`);
    expect(upward).toEqual([]);
  });

  it('the product does not import the bench tier or the tests', () => {
    const bad = sourceFiles(SRC).filter((f) => !f.endsWith(path.join('cli', 'commands', 'bench.ts')) && /['"](\.\.\/)+(bench|test)\//.test(fs.readFileSync(f, 'utf8')));
    expect(bad.map((f) => path.relative(PROJECT_ROOT, f))).toEqual([]);
  });
});
