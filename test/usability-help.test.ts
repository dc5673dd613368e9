/**
 * `synaxim CMD --help`, as a new user reads it: every command shows at least one example, and no
 * help shows a meaningless default (`compare`'s `[default: []]`).
 */
import { describe, expect, it } from 'vitest';
import { COMMANDS } from '../src/cli/commands/index.ts';
import { synaxim } from './helpers/usabilityCli.ts';

const names = COMMANDS.map((c) => String(c.command).split(' ')[0]!);

describe('--help of every command', () => {
  it('lists the commands we check', () => {
    expect(names).toEqual(expect.arrayContaining(['inspect', 'convert', 'import-llama2c', 'fixture', 'forward', 'generate', 'distill', 'eval', 'compare', 'demo', 'bench', 'models']));
  });
  for (const name of names) {
    it(`${name} --help has an example and no empty default`, () => {
      const r = synaxim([name, '--help']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/\nExamples:\n\s+synaxim \S+/);
      const examples = r.stdout.slice(r.stdout.indexOf('\nExamples:'));
      expect(examples).toContain(`synaxim ${name}`);
      expect(r.stdout).not.toContain('[default: []]');
    });
  }
});
