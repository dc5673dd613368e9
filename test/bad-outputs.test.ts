/**
 * Bad outputs (issue 14, section 2 and the disk-full/read-only item of section 3): no command
 * destroys what it did not create, and a full or read-only disk is a user condition.
 *
 * Refusals (table below): every case builds its files in a fresh case directory, runs the real CLI
 * (through main() in a long-lived worker, CliWorker; a few also as their own `node bin/synaxim.js`
 * process) and asserts: exit 1; exactly one `synaxim: error:` line naming the output path and the
 * problem; no stack trace; and not one byte changed anywhere — the case directory and the model it
 * reads hash the same before and after (no file lost or changed, nothing new, no temporaries).
 * Controls run the same commands with --overwrite: they succeed, replace only the command's own
 * files and keep the user's; a run that fails mid-way with --overwrite keeps the old output whole.
 *
 * Disk full (ENOSPC) and read-only file system (EROFS) are tested for real on a 64 KiB tmpfs and a
 * read-only bind mount when this process may mount (root in a container usually may); otherwise
 * those cases skip with a message, and the same conditions are injected into fs.writeSync in-process.
 */
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { reportError } from '../src/cli/main.ts';
import { makeFixture } from '../src/formats/fixture.ts';
import { isTempName, writeDirAtomic, writeFileAtomic, writeFilesAtomic } from '../src/util/atomic.ts';
import { SynaximError } from '../src/util/errors.ts';
import { checkOutput } from '../src/util/outputs.ts';
import { PROJECT_ROOT } from '../src/util/paths.ts';
import { acquireDirLock, LOCK_FILE } from '../src/distill/lock.ts';
import { initialAdapter, writeAdapter } from '../src/formats/adapter.ts';
import { CliWorker, editJson, makeTempDir, problemLines, runCli, type CliResult } from './helpers/badFiles.ts';

const CASE_TIMEOUT_MS = 60_000;
const root = makeTempDir('bad-outputs');
const MODEL = path.join(root, 'tiny'); // hf/ and symb-int4/
const HF = path.join(MODEL, 'hf');
const CORPUS = path.join(root, 'corpus.jsonl');
const ADAPTER = path.join(root, 'adapter');
const REPORT = path.join(root, 'report'); // an eval report (compare's input)
let worker: CliWorker;

beforeAll(async () => {
  await makeFixture('tiny', MODEL, { quiet: true });
  const words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'and', 'looked', 'at', 'small', 'bird', 'in', 'tree'];
  const docs = Array.from({ length: 6 }, (_, d) => JSON.stringify({ text: Array.from({ length: 90 }, (_, i) => words[(i * 7 + d * 3) % words.length]).join(' ') }));
  fs.writeFileSync(CORPUS, docs.join('\n') + '\n');
  await writeAdapter(ADAPTER, initialAdapter([0, 1], 64), {});
  worker = new CliWorker();
  const r = await worker.run(['eval', '--model', MODEL, '--corpus', CORPUS, '--context', '64', '--out', REPORT, '--quiet', '--backend', 'wasm', '--workers', '1'], 120_000);
  expect(r.code, r.stderr).toBe(0);
}, 180_000);

afterAll(() => {
  worker?.close();
  for (const m of mounts.reverse()) unmount(m);
  fs.rmSync(root, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Snapshots: every entry under a directory, files by content hash, links by target.

function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    const abs = path.join(dir, rel);
    const st = fs.lstatSync(abs);
    if (st.isSymbolicLink()) out[rel] = `link -> ${fs.readlinkSync(abs)}`;
    else if (st.isDirectory()) {
      out[rel + '/'] = 'dir';
      for (const n of fs.readdirSync(abs).sort()) walk(path.join(rel, n));
    } else out[rel] = crypto.createHash('sha256').update(fs.readFileSync(abs)).digest('hex');
  };
  if (fs.existsSync(dir)) walk('');
  return out;
}

/** `node ARGS` from the project root, to completion. */
function runNode(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

const tempsUnder = (dir: string): string[] => Object.keys(snapshot(dir)).filter((rel) => rel.split(path.sep).some((n) => isTempName(n.replace(/\/$/, ''))));

/** The one-line error contract: exit 1, one `synaxim: error: <file>: <what>` line, no stack. */
function expectOneLine(r: CliResult, file: string, what: RegExp, fileIsPrefix = false): void {
  // Informational lines a command prints before it fails (`synaxim distill: corpus …`) are fine.
  const lines = problemLines(r.stderr).filter((l) => /error/i.test(l) || !/^synaxim[ :]/.test(l));
  expect(r.code, r.stderr).toBe(1);
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]!.startsWith(`synaxim: error: ${file}${fileIsPrefix ? '' : ': '}`), lines[0]).toBe(true);
  expect(lines[0]).toMatch(what);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  expect(r.stderr).not.toMatch(/internal error/);
}

/** `fn` throws a SynaximError (a user error: one line, exit 1) about `file` saying `words`. */
function expectUserError(fn: () => unknown, file: string, words: string): void {
  let thrown: unknown = null;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown).toBeInstanceOf(SynaximError);
  expect((thrown as SynaximError).message).toBe(`${file}: ${words}`);
}

// ---------------------------------------------------------------------------------------------
// Refusals

interface Case {
  name: string;
  /** Build the case's files in `dir`; return the CLI arguments and the path the error must name. */
  build: (dir: string) => { args: string[]; names: string };
  error: RegExp;
  /** Also run as its own process (bin/synaxim.js), which must print the same line. */
  process?: boolean;
}

const write = (file: string, text = 'user data\n') => {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
};
const copyModel = (dir: string) => {
  const m = path.join(dir, 'model');
  fs.cpSync(HF, m, { recursive: true });
  return m;
};
const forward = (model: string, out: string, ...more: string[]) => ['forward', '--model', model, '--ids', '1,2,3', '--out', out, '--backend', 'wasm', ...more];
const evalArgs = (out: string, ...more: string[]) => ['eval', '--model', MODEL, '--corpus', CORPUS, '--context', '64', '--out', out, '--quiet', '--backend', 'wasm', ...more];

const CASES: Case[] = [
  {
    name: 'fixture into a non-empty directory (`fixture .` would have wiped it)',
    build: (dir) => (write(path.join(dir, 'README.md')), { args: ['fixture', dir], names: dir }),
    error: /OUT is not empty \(README\.md\); pass --overwrite/,
    process: true,
  },
  {
    name: 'fixture over an earlier fixture',
    build: (dir) => (fs.cpSync(MODEL, path.join(dir, 'fx'), { recursive: true }), { args: ['fixture', path.join(dir, 'fx')], names: path.join(dir, 'fx') }),
    error: /holds an earlier output \(symb-int4\); pass --overwrite/,
  },
  {
    name: 'forward --out onto the model weights',
    build: (dir) => {
      const m = copyModel(dir);
      return { args: forward(m, path.join(m, 'model.safetensors')), names: path.join(m, 'model.safetensors') };
    },
    error: /--out is inside the input model directory .*; write the output elsewhere/,
    process: true,
  },
  {
    name: 'forward --out onto the model weights, with --overwrite',
    build: (dir) => {
      const m = copyModel(dir);
      return { args: forward(m, path.join(m, 'model.safetensors'), '--overwrite'), names: path.join(m, 'model.safetensors') };
    },
    error: /--out is inside the input model directory/,
  },
  {
    name: 'forward --out equal to an existing file',
    build: (dir) => ({ args: forward(HF, write(path.join(dir, 'logits.safetensors'))), names: path.join(dir, 'logits.safetensors') }),
    error: /the file exists; pass --overwrite to replace it/,
  },
  {
    name: 'forward --out is a symlink to the model weights',
    build: (dir) => {
      const m = copyModel(dir);
      fs.symlinkSync(path.join(m, 'model.safetensors'), path.join(dir, 'out.safetensors'));
      return { args: forward(m, path.join(dir, 'out.safetensors'), '--overwrite'), names: path.join(dir, 'out.safetensors') };
    },
    error: /is the input model directory|inside the input model directory/,
  },
  {
    name: 'forward --out through a symlinked directory into the model',
    build: (dir) => {
      const m = copyModel(dir);
      fs.symlinkSync(m, path.join(dir, 'link'));
      return { args: forward(m, path.join(dir, 'link', 'new.safetensors')), names: path.join(dir, 'link', 'new.safetensors') };
    },
    error: /inside the input model directory/,
  },
  {
    name: 'forward --out is a dangling symlink into the model directory',
    build: (dir) => {
      const m = copyModel(dir);
      fs.symlinkSync(path.join(m, 'not-yet.safetensors'), path.join(dir, 'out.safetensors'));
      return { args: forward(m, path.join(dir, 'out.safetensors')), names: path.join(dir, 'out.safetensors') };
    },
    error: /inside the input model directory/,
  },
  {
    name: 'forward --out is a directory',
    build: (dir) => (fs.mkdirSync(path.join(dir, 'd')), { args: forward(HF, path.join(dir, 'd'), '--overwrite'), names: path.join(dir, 'd') }),
    error: /--out is a directory; give a file name/,
  },
  {
    name: 'forward --out inside the adapter directory',
    build: (dir) => {
      const a = path.join(dir, 'adapter');
      fs.cpSync(ADAPTER, a, { recursive: true });
      return { args: forward(path.join(MODEL, 'symb-int4'), path.join(a, 'adapter_model.safetensors'), '--engine', 'student', '--adapter', a, '--overwrite'), names: path.join(a, 'adapter_model.safetensors') };
    },
    error: /inside the adapter directory/,
  },
  {
    name: 'convert into a directory holding other files',
    build: (dir) => (write(path.join(dir, 'out', 'README.md')), { args: ['convert', HF, path.join(dir, 'out'), '--quantize', 'int8', '--quiet'], names: path.join(dir, 'out') }),
    error: /OUT_DIR is not empty \(README\.md\); pass --overwrite/,
  },
  {
    name: 'convert over an earlier conversion',
    build: (dir) => (fs.cpSync(path.join(MODEL, 'symb-int4'), path.join(dir, 'out'), { recursive: true }), { args: ['convert', HF, path.join(dir, 'out'), '--quantize', 'int8', '--quiet'], names: path.join(dir, 'out') }),
    error: /holds an earlier output \(config\.symb\.json\); pass --overwrite/,
  },
  {
    name: 'convert into the input directory',
    build: (dir) => {
      const m = copyModel(dir);
      return { args: ['convert', m, m, '--quantize', 'int8', '--overwrite'], names: m };
    },
    error: /OUT_DIR is the input checkpoint directory .* itself/,
  },
  {
    name: 'convert into a subdirectory of the input',
    build: (dir) => {
      const m = copyModel(dir);
      return { args: ['convert', m, path.join(m, 'symb'), '--quantize', 'int8'], names: path.join(m, 'symb') };
    },
    error: /OUT_DIR is inside the input checkpoint directory/,
  },
  {
    name: 'convert into the directory that contains the input (the model dir’s parent)',
    build: (dir) => (copyModel(dir), { args: ['convert', path.join(dir, 'model'), dir, '--quantize', 'int8', '--overwrite'], names: dir }),
    error: /OUT_DIR contains the input checkpoint directory/,
  },
  {
    name: 'import-llama2c onto its own input directory',
    build: (dir) => {
      write(path.join(dir, 'model.bin'), 'x');
      write(path.join(dir, 'tok.bin'), 'x');
      return { args: ['import-llama2c', path.join(dir, 'model.bin'), path.join(dir, 'tok.bin'), dir, '--overwrite'], names: dir };
    },
    error: /OUT contains the input checkpoint/,
  },
  {
    name: 'import-llama2c into a non-empty directory',
    build: (dir) => {
      write(path.join(dir, 'in', 'model.bin'), 'x');
      write(path.join(dir, 'in', 'tok.bin'), 'x');
      write(path.join(dir, 'out', 'notes.txt'));
      return { args: ['import-llama2c', path.join(dir, 'in', 'model.bin'), path.join(dir, 'in', 'tok.bin'), path.join(dir, 'out')], names: path.join(dir, 'out') };
    },
    error: /OUT is not empty \(notes\.txt\)/,
  },
  {
    name: 'eval --out onto an earlier report',
    build: (dir) => (fs.cpSync(REPORT, path.join(dir, 'r'), { recursive: true }), { args: evalArgs(path.join(dir, 'r')), names: path.join(dir, 'r') }),
    error: /--out holds an earlier output \(report\.json\); pass --overwrite/,
    process: true,
  },
  {
    name: 'eval --out inside the model directory',
    build: (dir) => {
      fs.cpSync(MODEL, path.join(dir, 'tiny'), { recursive: true });
      const out = path.join(dir, 'tiny', 'hf', 'reports');
      return { args: ['eval', '--model', path.join(dir, 'tiny'), '--suite', 'smoke', '--out', out, '--backend', 'wasm'], names: out };
    },
    error: /--out is inside the input model directory/,
  },
  {
    name: 'eval --out is the model directory’s parent',
    build: (dir) => {
      fs.cpSync(MODEL, path.join(dir, 'tiny'), { recursive: true });
      return { args: ['eval', '--model', path.join(dir, 'tiny'), '--suite', 'smoke', '--out', dir, '--backend', 'wasm', '--overwrite'], names: dir };
    },
    error: /--out contains the input model directory/,
  },
  {
    name: 'eval --out contains the corpus',
    build: (dir) => {
      const c = path.join(dir, 'corpus.jsonl');
      fs.copyFileSync(CORPUS, c);
      return { args: ['eval', '--model', MODEL, '--corpus', c, '--context', '64', '--out', dir, '--backend', 'wasm', '--overwrite'], names: dir };
    },
    error: /--out contains the corpus/,
  },
  {
    name: 'eval --out is the adapter directory',
    build: (dir) => {
      const a = path.join(dir, 'adapter');
      fs.cpSync(ADAPTER, a, { recursive: true });
      return { args: ['eval', '--model', MODEL, '--adapter', a, '--suite', 'smoke', '--out', a, '--backend', 'wasm', '--overwrite'], names: a };
    },
    error: /--out is the adapter directory .* itself/,
  },
  {
    name: 'compare --out onto a report it reads',
    build: (dir) => {
      const r = path.join(dir, 'r');
      fs.cpSync(REPORT, r, { recursive: true });
      return { args: ['compare', r, '--out', r, '--overwrite'], names: r };
    },
    error: /--out is the report it compares .* itself/,
  },
  {
    name: 'compare --out onto an earlier comparison',
    build: (dir) => {
      write(path.join(dir, 'cmp', 'compare.json'), '{}');
      return { args: ['compare', REPORT, '--out', path.join(dir, 'cmp')], names: path.join(dir, 'cmp') };
    },
    error: /holds an earlier output \(compare\.json\)/,
  },
  {
    name: 'bench --out a directory of the user’s',
    build: (dir) => (write(path.join(dir, 'README.md')), { args: ['bench', '--preset', 'tiny', '--out', dir, '--backend', 'wasm'], names: dir }),
    error: /--out is not empty \(README\.md\)/,
  },
  {
    name: 'bench --out inside the Magnus model directory',
    build: (dir) => {
      fs.cpSync(MODEL, path.join(dir, 'magnus'), { recursive: true });
      const out = path.join(dir, 'magnus', 'bench');
      return { args: ['bench', '--preset', 'tiny', '--sections', 'gate', '--magnus', path.join(dir, 'magnus'), '--out', out, '--backend', 'wasm'], names: out };
    },
    error: /--out is inside the Magnus model directory/,
  },
  {
    name: 'demo --out onto an earlier demo',
    build: (dir) => {
      for (const d of ['model', 'adapter-trained', 'eval-trained', 'compare']) fs.mkdirSync(path.join(dir, 'out', d), { recursive: true });
      return { args: ['demo', '--out', path.join(dir, 'out'), '--backend', 'wasm'], names: path.join(dir, 'out') };
    },
    error: /--out holds an earlier output \(compare\); pass --overwrite/,
  },
  {
    name: 'demo --out a directory of the user’s',
    build: (dir) => (write(path.join(dir, 'out', 'notes.txt')), { args: ['demo', '--out', path.join(dir, 'out'), '--backend', 'wasm'], names: path.join(dir, 'out') }),
    error: /--out is not empty \(notes\.txt\)/,
  },
  {
    name: 'distill --out inside the model directory',
    build: (dir) => {
      fs.cpSync(MODEL, path.join(dir, 'tiny'), { recursive: true });
      const out = path.join(dir, 'tiny', 'symb-int4', 'run');
      return { args: ['distill', '--model', path.join(dir, 'tiny'), '--layers', '0', '--epochs', '0', '--out', out, '--backend', 'wasm'], names: out };
    },
    error: /--out is inside the input model directory/,
  },
  {
    name: 'distill --out contains the corpus',
    build: (dir) => {
      const c = path.join(dir, 'corpus.jsonl');
      fs.copyFileSync(CORPUS, c);
      return { args: ['distill', '--model', MODEL, '--layers', '0', '--epochs', '0', '--corpus', c, '--out', dir, '--overwrite', '--backend', 'wasm'], names: dir };
    },
    error: /--out contains the corpus/,
  },
  {
    name: 'distill --out onto an earlier adapter',
    build: (dir) => (fs.cpSync(ADAPTER, path.join(dir, 'symbiotic_adapter'), { recursive: true }), { args: ['distill', '--model', MODEL, '--layers', '0', '--epochs', '0', '--out', dir, '--backend', 'wasm'], names: dir }),
    error: /--out holds an earlier output \(symbiotic_adapter\); pass --overwrite/,
  },
  {
    name: 'eval --out through a symlink onto an earlier report',
    build: (dir) => {
      fs.cpSync(REPORT, path.join(dir, 'r'), { recursive: true });
      fs.symlinkSync(path.join(dir, 'r'), path.join(dir, 'link'));
      return { args: evalArgs(path.join(dir, 'link')), names: path.join(dir, 'link') };
    },
    error: /--out holds an earlier output \(report\.json\)/,
  },
  {
    name: 'distill --out a directory of the user’s',
    build: (dir) => (write(path.join(dir, 'thesis.tex')), { args: ['distill', '--model', MODEL, '--layers', '0', '--epochs', '0', '--out', dir, '--backend', 'wasm'], names: dir }),
    error: /--out is not empty \(thesis\.tex\); pass --overwrite/,
  },
];

describe('outputs that would destroy inputs or earlier outputs are refused, changing nothing', () => {
  for (const [i, c] of CASES.entries()) {
    it(c.name, async () => {
      const dir = path.join(root, `case-${i}`);
      fs.mkdirSync(dir);
      const { args, names } = c.build(dir);
      const before = { dir: snapshot(dir), model: snapshot(MODEL), report: snapshot(REPORT) };
      const r = await worker.run(args, CASE_TIMEOUT_MS);
      expectOneLine(r, names, c.error);
      expect(snapshot(dir), 'case directory').toEqual(before.dir);
      expect(snapshot(MODEL), 'model directory').toEqual(before.model);
      expect(snapshot(REPORT), 'report').toEqual(before.report);
      if (c.process) {
        const p = await runCli(args, CASE_TIMEOUT_MS);
        expect(problemLines(p.stderr)).toEqual(problemLines(r.stderr));
        expect(p.code).toBe(1);
        expect(snapshot(dir)).toEqual(before.dir);
      }
    }, 2 * CASE_TIMEOUT_MS);
  }
  it(`covers at least 20 cases (${CASES.length})`, () => expect(CASES.length).toBeGreaterThanOrEqual(20));
});

// ---------------------------------------------------------------------------------------------
// --overwrite: only the command's own files are replaced

describe('--overwrite replaces only what the command writes', () => {
  const withoutReadme = (s: Record<string, string>) => Object.fromEntries(Object.entries(s).filter(([k]) => !k.startsWith('README.md')));

  it('convert --overwrite into a directory with a README and an earlier conversion: README kept, conversion new', async () => {
    const dir = path.join(root, 'ow-convert');
    const fresh = path.join(dir, 'fresh');
    const out = path.join(dir, 'out');
    expect((await worker.run(['convert', HF, fresh, '--quantize', 'int8', '--quiet'])).code).toBe(0);
    fs.cpSync(path.join(MODEL, 'symb-int4'), out, { recursive: true }); // an earlier (int4) conversion
    const readme = write(path.join(out, 'README.md'), 'my notes\n');
    const r = await worker.run(['convert', HF, out, '--quantize', 'int8', '--quiet', '--overwrite']);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(readme, 'utf8')).toBe('my notes\n');
    expect(withoutReadme(snapshot(out))).toEqual(snapshot(fresh)); // exactly a fresh int8 conversion besides README.md
    expect(tempsUnder(dir)).toEqual([]);
  });

  it('convert --overwrite that fails mid-way (a tensor of the wrong shape) keeps the old conversion and the README', async () => {
    const dir = path.join(root, 'ow-convert-fail');
    const bad = copyModel(dir);
    editJson(path.join(bad, 'config.json'), (j) => void (j.intermediate_size = 172)); // the MLP tensors no longer fit
    const out = path.join(dir, 'out');
    fs.cpSync(path.join(MODEL, 'symb-int4'), out, { recursive: true });
    write(path.join(out, 'README.md'), 'my notes\n');
    const before = snapshot(out);
    const r = await worker.run(['convert', bad, out, '--quantize', 'int8', '--quiet', '--overwrite']);
    expectOneLine(r, path.join(bad, 'model.safetensors'), /has shape .* but config\.json implies/);
    expect(snapshot(out)).toEqual(before);
    expect(tempsUnder(dir)).toEqual([]);
  });

  it('fixture --overwrite into a directory with user files keeps them', async () => {
    const dir = path.join(root, 'ow-fixture');
    write(path.join(dir, 'README.md'), 'keep\n');
    fs.mkdirSync(path.join(dir, 'data'));
    write(path.join(dir, 'data', 'x.txt'), 'keep too\n');
    const r = await worker.run(['fixture', dir, '--overwrite']);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readdirSync(dir).sort()).toEqual(['README.md', 'data', 'hf', 'symb-int4']);
    expect(fs.readFileSync(path.join(dir, 'data', 'x.txt'), 'utf8')).toBe('keep too\n');
    expect(snapshot(path.join(dir, 'hf'))).toEqual(snapshot(HF)); // the same deterministic model
  });

  it('compare --overwrite replaces compare.* only; forward --overwrite replaces its file', async () => {
    const dir = path.join(root, 'ow-compare');
    write(path.join(dir, 'compare.json'), '{}');
    write(path.join(dir, 'notes.md'), 'keep\n');
    const r = await worker.run(['compare', REPORT, '--out', dir, '--overwrite', '--quiet']);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readdirSync(dir).sort()).toEqual(['compare.html', 'compare.json', 'compare.md', 'notes.md']);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'compare.json'), 'utf8')).baseline).toBeTruthy();
    const f = write(path.join(dir, 'logits.safetensors'), 'old');
    const r2 = await worker.run(forward(HF, f, '--overwrite'));
    expect(r2.code, r2.stderr).toBe(0);
    expect(fs.readFileSync(f).readBigUInt64LE(0) > 0n).toBe(true); // a safetensors header now, not 'old'
  });
});

// ---------------------------------------------------------------------------------------------
// Disk full, read-only: injected (always) and real (when this process may mount)

describe('disk full and read-only file system, injected into fs.writeSync', () => {
  const errno = (code: string, message: string) => Object.assign(new Error(`${code}: ${message}, write`), { code, errno: -28, syscall: 'write' });

  it.each([
    ['ENOSPC', 'no space left on device'],
    ['EROFS', 'read-only file system'],
    ['EACCES', 'permission denied'],
    ['EDQUOT', 'disk quota exceeded'],
  ])('writeFileAtomic: %s becomes one line naming the target; the old file and no temporary are left', (code, words) => {
    const dir = path.join(root, `inject-${code}`);
    const target = write(path.join(dir, 'out.json'), 'old\n');
    const spy = vi.spyOn(fs, 'writeSync').mockImplementation(() => {
      throw errno(code, words);
    });
    try {
      expectUserError(() => writeFileAtomic(target, 'new\n'), target, words);
    } finally {
      spy.mockRestore();
    }
    expect(fs.readdirSync(dir)).toEqual(['out.json']);
    expect(fs.readFileSync(target, 'utf8')).toBe('old\n');
  });

  it('writeFilesAtomic (eval/compare reports): a write failing on the second file keeps the whole old report', () => {
    const dir = path.join(root, 'inject-report');
    for (const f of ['report.md', 'report.html', 'report.json']) write(path.join(dir, f), `old ${f}\n`);
    const before = snapshot(dir);
    let calls = 0;
    const real = fs.writeSync;
    const spy = vi.spyOn(fs, 'writeSync').mockImplementation(((...a: Parameters<typeof fs.writeSync>) => {
      if (++calls === 2) throw errno('ENOSPC', 'no space left on device');
      return (real as (...x: unknown[]) => number)(...a);
    }) as typeof fs.writeSync);
    try {
      expect(() => writeFilesAtomic(dir, ['report.md', 'report.html', 'report.json'].map((name) => ({ name, data: `new ${name}\n` })), 'report.json')).toThrow(/report\.html: no space left on device/);
    } finally {
      spy.mockRestore();
    }
    expect(snapshot(dir)).toEqual(before);
  });

  it('the distill lock: a lock file that cannot be written is removed, not left empty', () => {
    const dir = path.join(root, 'inject-lock');
    const spy = vi.spyOn(fs, 'writeSync').mockImplementation(() => {
      throw errno('ENOSPC', 'no space left on device');
    });
    try {
      expectUserError(() => acquireDirLock(dir), path.join(dir, LOCK_FILE), 'no space left on device');
    } finally {
      spy.mockRestore();
    }
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('writeDirAtomic: a failure inside names the output path, not the temporary; the old directory stays', async () => {
    const dir = path.join(root, 'inject-dir');
    const out = path.join(dir, 'out');
    write(path.join(out, 'a.symb'), 'old');
    const spy = vi.spyOn(fs, 'writeSync').mockImplementation(() => {
      throw errno('ENOSPC', 'no space left on device');
    });
    try {
      const e = await writeDirAtomic(out, (tmp) => writeFileAtomic(path.join(tmp, 'a.symb'), 'new')).then(() => null, (x: unknown) => x);
      expectUserError(() => {
        if (e) throw e;
      }, path.join(out, 'a.symb'), 'no space left on device');
    } finally {
      spy.mockRestore();
    }
    expect(fs.readdirSync(dir)).toEqual(['out']);
    expect(fs.readFileSync(path.join(out, 'a.symb'), 'utf8')).toBe('old');
  });

  it('reportError: an errno error without a path (as writeSync throws) is a user condition, exit 1, never "internal error"', () => {
    const chunks: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(((s: string) => (chunks.push(String(s)), true)) as typeof process.stderr.write);
    let code: number;
    try {
      code = reportError(errno('ENOSPC', 'no space left on device'), false);
    } finally {
      spy.mockRestore();
    }
    expect(code).toBe(1);
    expect(chunks.join('')).toBe('synaxim: error: no space left on device (write)\n');
  });

  it('checkOutput compares real paths: a sibling with a common prefix is not "inside"', () => {
    const dir = path.join(root, 'prefix');
    fs.mkdirSync(path.join(dir, 'model'), { recursive: true });
    expect(() => checkOutput({ out: path.join(dir, 'model-out'), flag: '--out', kind: 'dir', overwrite: false, inputs: [{ path: path.join(dir, 'model'), what: 'model' }] })).not.toThrow();
    expect(() => checkOutput({ out: path.join(dir, 'model', 'x'), flag: '--out', kind: 'dir', overwrite: false, inputs: [{ path: path.join(dir, 'model'), what: 'model' }] })).toThrow(/inside the model/);
  });
});

const mounts: string[] = [];
function unmount(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'ignore' });
  } catch {
    // already gone
  }
}
/** Mount a tmpfs of `size` at `dir` (or a read-only bind of `dir` onto itself); false when not permitted here. */
function tryMount(dir: string, how: { tmpfs: string } | { readOnly: true }): boolean {
  fs.mkdirSync(dir, { recursive: true });
  try {
    if ('tmpfs' in how) execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${how.tmpfs}`, 'tmpfs', dir], { stdio: 'ignore' });
    else {
      execFileSync('mount', ['--bind', dir, dir], { stdio: 'ignore' });
      mounts.push(dir);
      execFileSync('mount', ['-o', 'remount,ro,bind', dir], { stdio: 'ignore' });
      return true;
    }
  } catch {
    return false;
  }
  mounts.push(dir);
  return true;
}
const NO_MOUNT = 'skipped: this process may not mount a tmpfs or a read-only bind (not root, or no CAP_SYS_ADMIN); the injected cases above cover the same paths';

describe('disk full and read-only file system, for real (tmpfs of 64 KiB, read-only bind mount)', () => {
  const ids = Array.from({ length: 80 }, (_, i) => 1 + (i % 200)).join(','); // 80 tokens of logits + hidden states: > 64 KiB

  /** Run on a fresh mount: one line naming a path under `named`; the mount holds exactly what it held before. */
  const full = async (ctx: { skip: (note?: string) => void }, name: string, size: string, prepare: (mnt: string) => void | Promise<void>, args: (mnt: string) => string[], named: (mnt: string) => string, what: RegExp) => {
    const mnt = path.join(root, `mnt-${name}`);
    if (!tryMount(mnt, { tmpfs: size })) {
      console.warn(NO_MOUNT);
      return ctx.skip(NO_MOUNT);
    }
    await prepare(mnt);
    const before = snapshot(mnt);
    const r = await worker.run(args(mnt), CASE_TIMEOUT_MS);
    expectOneLine(r, named(mnt), what, true);
    expect(snapshot(mnt)).toEqual(before);
    return r;
  };

  it('eval --out on a full disk: one line, no report, no per-token file, no temporaries, no empty directory', async (ctx) => {
    await full(ctx, 'eval', '64k', () => {}, (m) => evalArgs(path.join(m, 'ev')), (m) => path.join(m, 'ev'), /: no space left on device$/);
  });

  it('eval --overwrite onto an earlier report on a disk that fills up: the earlier report stays whole', async (ctx) => {
    await full(ctx, 'eval-ow', '400k', (m) => fs.cpSync(REPORT, path.join(m, 'ev'), { recursive: true }), (m) => evalArgs(path.join(m, 'ev'), '--overwrite'), (m) => path.join(m, 'ev'), /: no space left on device$/);
  });

  it('forward --out on a full disk (also as its own process)', async (ctx) => {
    const r = await full(ctx, 'forward', '64k', () => {}, (m) => forward(HF, path.join(m, 'f.safetensors'), '--hidden').map((a) => (a === '1,2,3' ? ids : a)), (m) => path.join(m, 'f.safetensors'), /: no space left on device$/);
    if (!r) return;
    const m = path.join(root, 'mnt-forward');
    const p = await runCli(forward(HF, path.join(m, 'f.safetensors'), '--hidden').map((a) => (a === '1,2,3' ? ids : a)), CASE_TIMEOUT_MS);
    expectOneLine(p, path.join(m, 'f.safetensors'), /: no space left on device$/, true);
    expect(fs.readdirSync(m)).toEqual([]);
  });

  it('convert on a full disk names the output file, leaves no temporary directory', async (ctx) => {
    await full(ctx, 'convert', '64k', () => {}, (m) => ['convert', HF, path.join(m, 'c'), '--quantize', 'fp32', '--quiet'], (m) => path.join(m, 'c'), /: no space left on device$/);
  });

  it('convert --overwrite over an earlier conversion and a README on a disk too small for both: both stay', async (ctx) => {
    await full(
      ctx, 'convert-ow', '450k',
      async (m) => {
        const r = await worker.run(['convert', HF, path.join(m, 'c'), '--quantize', 'int8', '--quiet']);
        expect(r.code, r.stderr).toBe(0);
        write(path.join(m, 'c', 'README.md'), 'mine\n');
      },
      (m) => ['convert', HF, path.join(m, 'c'), '--quantize', 'int8', '--quiet', '--overwrite'],
      (m) => path.join(m, 'c'),
      /no space left on device$/,
    );
  });

  it('fixture on a full disk', async (ctx) => {
    await full(ctx, 'fixture', '64k', () => {}, (m) => ['fixture', path.join(m, 'fx')], (m) => path.join(m, 'fx'), /no space left on device$/);
  });

  it('distill on a disk with no room for its lock file: one line, no empty lock left', async (ctx) => {
    await full(
      ctx, 'distill', '64k',
      (m) => {
        // Fill the disk to the last byte.
        const fd = fs.openSync(path.join(m, 'filler'), 'w');
        try {
          for (;;) fs.writeSync(fd, Buffer.alloc(4096));
        } catch {
          // full
        } finally {
          fs.closeSync(fd);
        }
        fs.mkdirSync(path.join(m, 'run'));
      },
      (m) => ['distill', '--model', MODEL, '--layers', '0', '--epochs', '0', '--corpus', CORPUS, '--seq-len', '32', '--out', path.join(m, 'run'), '--backend', 'wasm', '--no-cache'],
      (m) => path.join(m, 'run', LOCK_FILE),
      /: no space left on device$/,
    );
  });

  it('eval, forward and convert into a read-only file system: one line "read-only file system", exit 1', async (ctx) => {
    const ro = path.join(root, 'mnt-ro');
    fs.mkdirSync(ro, { recursive: true });
    if (!tryMount(ro, { readOnly: true })) {
      console.warn(NO_MOUNT);
      return ctx.skip(NO_MOUNT);
    }
    for (const [args, named] of [
      [evalArgs(path.join(ro, 'ev')), path.join(ro, 'ev')],
      [forward(HF, path.join(ro, 'f.safetensors')), path.join(ro, 'f.safetensors')],
      [['convert', HF, path.join(ro, 'c'), '--quantize', 'int8', '--quiet'], ro],
    ] as const) {
      const r = await worker.run([...args], CASE_TIMEOUT_MS);
      expect(r.code, r.stderr).toBe(1);
      const lines = problemLines(r.stderr);
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^synaxim: error: ${named.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\S*: read-only file system$`));
      expect(fs.readdirSync(ro)).toEqual([]);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// kill -9 while --overwrite merges our files into a directory that holds the user's

describe('kill -9 during an --overwrite write into a directory with user files', () => {
  /** A child that writes a .symb-like output with writeDirAtomic and SIGKILLs itself before its k-th rename/remove (0: never). */
  const child = (target: string, killAt: number) => {
    const script = path.join(root, `merge-child-${killAt}.mts`);
    fs.writeFileSync(
      script,
      `import fs from 'node:fs';
import path from 'node:path';
import { writeDirAtomic, writeFileAtomic } from ${JSON.stringify(path.join(PROJECT_ROOT, 'src/util/atomic.ts'))};
let n = 0;
for (const name of ['renameSync', 'rmSync']) {
  const orig = (fs as unknown as Record<string, (...a: unknown[]) => unknown>)[name]!;
  (fs as unknown as Record<string, unknown>)[name] = (...a: unknown[]) => {
    if (++n === ${killAt}) process.kill(process.pid, 'SIGKILL');
    return orig.apply(fs, a);
  };
}
await writeDirAtomic(${JSON.stringify(target)}, (tmp) => {
  for (const f of ['a.symb', 'b.symb', 'layers/x.symb']) writeFileAtomic(path.join(tmp, f), 'new ' + f);
  writeFileAtomic(path.join(tmp, 'config.symb.json'), 'new config');
}, { isOurs: (f) => f.endsWith('.symb') || f === 'layers' || f === 'config.symb.json', marker: 'config.symb.json' });
process.stdout.write('OPS ' + n + '\\n');
`,
    );
    return runNode(['--import', 'tsx', script]);
  };
  const OLD: Record<string, string> = { 'a.symb': 'old a.symb', 'b.symb': 'old b.symb', 'layers/x.symb': 'old layers/x.symb', 'stale.symb': 'old stale', 'config.symb.json': 'old config' };
  const NEW: Record<string, string> = { 'a.symb': 'new a.symb', 'b.symb': 'new b.symb', 'layers/x.symb': 'new layers/x.symb', 'config.symb.json': 'new config' };
  const prepare = (target: string) => {
    for (const [f, text] of Object.entries(OLD)) write(path.join(target, f), text);
    write(path.join(target, 'README.md'), 'mine\n');
  };
  const files = (target: string) =>
    Object.fromEntries(
      (fs.readdirSync(target, { recursive: true }) as string[])
        .filter((f) => fs.statSync(path.join(target, f)).isFile() && !f.split(path.sep).some((p) => isTempName(p)))
        .map((f) => [f, fs.readFileSync(path.join(target, f), 'utf8')]),
    );

  it('every kill point leaves the user file, whole files only, and a marker only beside the files it describes; a rerun completes', async () => {
    const dry = path.join(root, 'merge-dry', 'out');
    prepare(dry);
    const d = await child(dry, 0);
    expect(d.code, d.stderr).toBe(0);
    expect(files(dry)).toEqual({ ...NEW, 'README.md': 'mine\n' });
    const ops = Number(/OPS (\d+)/.exec(d.stdout)![1]);
    const states = new Set<string>();
    for (let k = 1; k <= ops; k++) {
      const target = path.join(root, `merge-${k}`, 'out');
      prepare(target);
      const r = await child(target, k);
      expect(r.signal, r.stderr).toBe('SIGKILL');
      const got = files(target);
      expect(got['README.md']).toBe('mine\n');
      for (const [f, text] of Object.entries(got)) if (f !== 'README.md') expect([OLD[f], NEW[f]], f).toContain(text);
      if (got['config.symb.json'] === 'new config') expect(got).toEqual({ ...NEW, 'README.md': 'mine\n' });
      if (got['config.symb.json'] === 'old config') expect(got).toEqual({ ...OLD, 'README.md': 'mine\n' });
      states.add(got['config.symb.json'] ?? 'no marker');
      // The next write (the command run again) completes and leaves no temporaries.
      const again = await child(target, 0);
      expect(again.code, again.stderr).toBe(0);
      expect(files(target)).toEqual({ ...NEW, 'README.md': 'mine\n' });
      expect(tempsUnder(path.dirname(target))).toEqual([]);
    }
    expect([...states].sort()).toEqual(['new config', 'no marker', 'old config']);
  }, 300_000);
});
