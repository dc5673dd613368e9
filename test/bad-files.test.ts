/**
 * Hostile files (issue 14 §3): files that are not what their names say — FIFOs, devices,
 * directories, symlinks out of the model directory, loops, dangling links, 0-byte and absurdly
 * large files, a model too wide for the backend, a tokenizer far bigger than the model's
 * vocabulary, corpora and suites that are FIFOs or the wrong shape. Every case builds its files in
 * a temporary directory, runs the real CLI (`node bin/synaxim.js`) as its own process, and checks:
 *   - exit 1, and stderr is one `synaxim: error: <file>: <problem>` line (besides the informational
 *     `synaxim: backend ...` line), naming the file and the problem, with no stack trace;
 *   - nothing of the content of files outside the model directory reaches stdout or stderr;
 *   - it finishes (the child is killed after a generous timeout that only catches hangs: a FIFO
 *     opened for reading blocks forever);
 *   - its peak RSS stays within 1 GiB (measured by GNU time's %M around the child; where
 *     /usr/bin/time is missing the RSS check is skipped, and says so).
 * No wall-clock assertion anywhere.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeFixture } from '../src/formats/fixture.ts';
import { PROJECT_ROOT } from '../src/util/paths.ts';
import { CLI, copyDir, editJson, makeTempDir, problemLines, readRawSafetensors, shardCheckpoint, writeRawSafetensors } from './helpers/badFiles.ts';

/** Kill a case after this long: only a hang gets near it (a cold start under load takes < 1 min). */
const HANG_MS = 180_000;
const RSS_LIMIT_KB = 1024 * 1024;
const LANES = 2;
const TIME = '/usr/bin/time';
const haveTime = fs.existsSync(TIME);
/** Written into every file outside the model directory: it must never show in the output. */
const SECRET = 'TOP-SECRET-7f3a9c';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Peak RSS of the CLI process in KiB (null: not measurable here). */
  maxRssKb: number | null;
}

/**
 * Run the CLI as its own process group (so a hung child and everything under it can be killed),
 * under GNU time for the child's peak RSS.
 */
function runMeasured(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const argv = haveTime ? [TIME, '-q', '-f', '@@maxrss_kb=%M', process.execPath, CLI, ...args] : [process.execPath, CLI, ...args];
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: PROJECT_ROOT,
      env: { ...process.env, SYNAXIM_MODELS: '', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, HANG_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const m = /@@maxrss_kb=(\d+)\s*$/.exec(stderr);
      const clean = stderr.replace(/^@@maxrss_kb=\d+\s*$/m, '').replace(/^Command (exited with non-zero status|terminated by signal) .*$/m, '');
      resolve({ code, stdout, stderr: clean, timedOut, maxRssKb: m ? Number(m[1]) : null });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Case directories

interface CaseDir {
  dir: string;
  /** The model directory (a copy of the fixture). */
  model: string;
  /** A directory beside the model: files here are "outside"; each holds SECRET. */
  outside: string;
  out: string;
  /** Write a file (relative to dir), returning its path. */
  write(rel: string, content: string | Uint8Array): string;
  /** A file outside the model holding SECRET (and invalid JSON, so a parse error would quote it). */
  secretFile(name?: string): string;
  fifo(rel: string): string;
}

type Base = 'hf' | 'symb' | 'sharded';

interface BadCase {
  name: string;
  base?: Base;
  /** Build the hostile files; returns the CLI arguments. */
  setup: (k: CaseDir) => string[];
  /** The file the error line must name (absolute, from the case directory). */
  names: (k: CaseDir) => string;
  problem: RegExp;
}

let root = '';
let fixture = '';
let counter = 0;

function caseDir(base: Base): CaseDir {
  const dir = path.join(root, `case-${String(++counter).padStart(3, '0')}`);
  const model = path.join(dir, 'model');
  const outside = path.join(dir, 'outside');
  const out = path.join(dir, 'out');
  fs.mkdirSync(outside, { recursive: true });
  fs.mkdirSync(out, { recursive: true });
  copyDir(path.join(fixture, base === 'symb' ? 'symb-int4' : 'hf'), model);
  if (base === 'sharded') shardCheckpoint(model, 10);
  const k: CaseDir = {
    dir,
    model,
    outside,
    out,
    write(rel, content) {
      const f = path.join(dir, rel);
      fs.mkdirSync(path.dirname(f), { recursive: true });
      fs.writeFileSync(f, content);
      return f;
    },
    secretFile(name = 'secret.json') {
      return k.write(`outside/${name}`, `${SECRET} {"not": json, "vocab": 1}\n`);
    },
    fifo(rel) {
      const f = path.join(dir, rel);
      fs.rmSync(f, { recursive: true, force: true });
      mkfifo(f);
      return f;
    },
  };
  return k;
}

/** mkfifo(1): Node has no mkfifo of its own. */
function mkfifo(file: string): void {
  if (spawnSync('mkfifo', [file]).status !== 0) throw new Error(`mkfifo ${file} failed`);
}

/** Replace `rel` in the model by a symlink to `target`. */
function link(k: CaseDir, rel: string, target: string): void {
  const f = path.join(k.model, rel);
  fs.rmSync(f, { recursive: true, force: true });
  fs.symlinkSync(target, f);
}

// ---------------------------------------------------------------------------------------------
// Commands

const M = (k: CaseDir, rel = '') => path.join(k.model, rel);
const inspect = (k: CaseDir) => ['inspect', k.model];
const generate = (k: CaseDir) => ['generate', '--model', k.model, '--prompt', 'Once upon', '--max-tokens', '2', '--backend', 'wasm'];
const forward = (k: CaseDir) => ['forward', '--model', k.model, '--ids', '1,2,3', '--out', path.join(k.out, 'logits.safetensors'), '--backend', 'wasm'];
const convert = (k: CaseDir, ...extra: string[]) => ['convert', k.model, path.join(k.out, 'symb'), '--quantize', 'int4', '--group-size', '32', '--quiet', ...extra];
const evalOn = (k: CaseDir, corpus: string, ...extra: string[]) => ['eval', '--model', k.model, '--out', path.join(k.out, 'eval'), '--backend', 'wasm', '--corpus', corpus, '--context', '16', '--workers', '1', ...extra];
const distillOn = (k: CaseDir, corpus: string) =>
  ['distill', '--model', k.model, '--out', path.join(k.out, 'distill'), '--backend', 'wasm', '--layers', '0-1', '--corpus', corpus, '--seq-len', '8', '--epochs', '1', '--batch-size', '2', '--no-cache'];

const GOOD_CORPUS = ['Once upon a time there was a little cat who liked to play in the garden with a red ball.', 'Tom went to the park with his dog. They saw a bird in a tree and sang a happy song together.', 'Lily found a shiny key under the old box. She opened the door and saw a big cake on the table.']
  .map((text) => JSON.stringify({ text }))
  .join('\n') + '\n';

/** A sparse file of `size` bytes (no disk blocks): absurd sizes without writing them. */
function sparse(file: string, size: number, head = ''): void {
  fs.writeFileSync(file, head);
  fs.truncateSync(file, size);
}

/**
 * A valid model far too wide for the wasm backend: hidden 16384, one layer (7.5 GB of float32
 * weights). The weights are a sparse file (headers are real; data are holes, read as zeros).
 */
function wideModel(k: CaseDir): void {
  const D = 16384;
  const V = 320;
  editJson(M(k, 'config.json'), (j) => Object.assign(j, { hidden_size: D, intermediate_size: D, num_hidden_layers: 1, num_attention_heads: 128, num_key_value_heads: 128, head_dim: 128 }));
  const shapes: [string, number[]][] = [
    ['model.embed_tokens.weight', [V, D]],
    ['model.norm.weight', [D]],
    ['model.layers.0.input_layernorm.weight', [D]],
    ['model.layers.0.post_attention_layernorm.weight', [D]],
    ...(['q', 'k', 'v', 'o'] as const).map((p): [string, number[]] => [`model.layers.0.self_attn.${p}_proj.weight`, [D, D]]),
    ...(['gate', 'up', 'down'] as const).map((p): [string, number[]] => [`model.layers.0.mlp.${p}_proj.weight`, [D, D]]),
  ];
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, shape] of shapes) {
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const file = M(k, 'model.safetensors');
  writeRawSafetensors(file, header, new Uint8Array(0));
  fs.truncateSync(file, fs.statSync(file).size + offset);
}

/** A BPE tokenizer.json with `n` vocabulary entries (ids 0..n-1), the fixture's otherwise. */
function bigTokenizer(k: CaseDir, n: number): void {
  const file = M(k, 'tokenizer.json');
  const t = JSON.parse(fs.readFileSync(file, 'utf8')) as { model: { vocab: Record<string, number> } };
  const vocab = t.model.vocab;
  for (let i = Object.keys(vocab).length; i < n; i++) vocab[`tok${i}`] = i;
  fs.writeFileSync(file, JSON.stringify(t));
}

/** Edit the safetensors header's text (raw), keeping the data. */
function rawHeader(k: CaseDir, edit: (text: string) => string): void {
  const file = M(k, 'model.safetensors');
  const raw = readRawSafetensors(file);
  writeRawSafetensors(file, edit(JSON.stringify(raw.header)), raw.data);
}

/** Progress and context lines eval and distill print before they read the corpus (as test/bad-runs.test.ts allows). */
const INFO_LINE = /^(synaxim distill: (model|corpus) |synaxim: eval: |synaxim: (engine|student): |eval: \d+\/\d+ )/;

const OUTSIDE = /resolves \(through a symlink\) to .*outside the model directory/;
const ST = 'model.safetensors';

const CASES: BadCase[] = [
  // ---- symlinks out of the model directory (content must never be quoted) ----------------------
  { name: 'tokenizer.json → a file outside the model (generate)', setup: (k) => (link(k, 'tokenizer.json', k.secretFile()), generate(k)), names: (k) => M(k, 'tokenizer.json'), problem: OUTSIDE },
  { name: 'tokenizer_config.json → a file outside the model (generate)', setup: (k) => (link(k, 'tokenizer_config.json', k.secretFile()), generate(k)), names: (k) => M(k, 'tokenizer_config.json'), problem: OUTSIDE },
  { name: 'config.json → a file outside the model (inspect)', setup: (k) => (link(k, 'config.json', k.secretFile()), inspect(k)), names: (k) => M(k, 'config.json'), problem: OUTSIDE },
  { name: 'config.json → a file outside the model, relative link (convert)', setup: (k) => (k.secretFile('config.json'), link(k, 'config.json', '../outside/config.json'), convert(k)), names: (k) => M(k, 'config.json'), problem: OUTSIDE },
  { name: 'tokenizer.json → /dev/zero (generate)', setup: (k) => (link(k, 'tokenizer.json', '/dev/zero'), generate(k)), names: (k) => M(k, 'tokenizer.json'), problem: OUTSIDE },
  { name: 'config.json → /dev/zero (inspect)', setup: (k) => (link(k, 'config.json', '/dev/zero'), inspect(k)), names: (k) => M(k, 'config.json'), problem: OUTSIDE },
  { name: '.symb tokenizer/tokenizer.json → outside (generate)', base: 'symb', setup: (k) => (link(k, 'tokenizer/tokenizer.json', k.secretFile()), generate(k)), names: (k) => M(k, 'tokenizer/tokenizer.json'), problem: OUTSIDE },
  { name: '.symb tokenizer directory → outside (generate)', base: 'symb',
    setup: (k) => { fs.renameSync(M(k, 'tokenizer'), path.join(k.outside, 'tok')); k.write('outside/tok/secret.txt', SECRET); link(k, 'tokenizer', path.join(k.outside, 'tok')); return generate(k); },
    names: (k) => M(k, 'tokenizer/tokenizer.json'), problem: OUTSIDE },
  { name: 'config.symb.json tokenizer_dir names a link out of the model (eval)', base: 'symb',
    setup: (k) => { fs.renameSync(M(k, 'tokenizer'), path.join(k.outside, 'tok')); fs.symlinkSync('../outside/tok', M(k, 'tok')); editJson(M(k, 'config.symb.json'), (j) => void (j.tokenizer_dir = 'tok')); return evalOn(k, k.write('c.jsonl', GOOD_CORPUS)); },
    names: (k) => M(k, 'tok/tokenizer.json'), problem: OUTSIDE },

  // ---- FIFOs: would block open() forever ----------------------------------------------------------
  { name: 'config.json is a FIFO (inspect)', setup: (k) => (k.fifo('model/config.json'), inspect(k)), names: (k) => M(k, 'config.json'), problem: /is a named pipe \(FIFO\), not a regular file/ },
  { name: 'config.symb.json is a FIFO (inspect)', base: 'symb', setup: (k) => (k.fifo('model/config.symb.json'), inspect(k)), names: (k) => M(k, 'config.symb.json'), problem: /is a named pipe \(FIFO\)/ },
  { name: 'tokenizer.json is a FIFO (generate)', setup: (k) => (k.fifo('model/tokenizer.json'), generate(k)), names: (k) => M(k, 'tokenizer.json'), problem: /is a named pipe \(FIFO\)/ },
  { name: 'tokenizer_config.json is a FIFO (generate)', setup: (k) => (k.fifo('model/tokenizer_config.json'), generate(k)), names: (k) => M(k, 'tokenizer_config.json'), problem: /is a named pipe \(FIFO\)/ },
  { name: 'model.safetensors is a FIFO (forward)', setup: (k) => (k.fifo(`model/${ST}`), forward(k)), names: (k) => M(k, ST), problem: /is a named pipe \(FIFO\)/ },
  { name: 'an index-named shard is a FIFO (inspect)', base: 'sharded', setup: (k) => (k.fifo('model/model-00002-of-00002.safetensors'), inspect(k)), names: (k) => M(k, 'model-00002-of-00002.safetensors'), problem: /is a named pipe \(FIFO\)/ },
  { name: 'the shard index is a FIFO (forward)', base: 'sharded', setup: (k) => (k.fifo('model/model.safetensors.index.json'), forward(k)), names: (k) => M(k, 'model.safetensors.index.json'), problem: /is a named pipe \(FIFO\)/ },
  { name: 'a .symb layer file is a FIFO (forward)', base: 'symb', setup: (k) => (k.fifo('model/layers/layer_00/attn_q.symb'), forward(k)), names: (k) => M(k, 'layers/layer_00/attn_q.symb'), problem: /is a named pipe \(FIFO\)/ },
  { name: 'adapter_config.json is a FIFO (eval --adapter)',
    setup: (k) => { const a = path.join(k.dir, 'adapter'); fs.mkdirSync(a); mkfifo(path.join(a, 'adapter_config.json')); fs.writeFileSync(path.join(a, 'adapter_model.safetensors'), ''); return evalOn(k, k.write('c.jsonl', GOOD_CORPUS), '--adapter', a); },
    names: (k) => path.join(k.dir, 'adapter', 'adapter_config.json'), problem: /is a named pipe \(FIFO\)/ },
  { name: 'the corpus is a FIFO (eval)', setup: (k) => evalOn(k, k.fifo('c.jsonl')), names: (k) => path.join(k.dir, 'c.jsonl'), problem: /is a named pipe \(FIFO\), not a corpus file/ },
  { name: 'the corpus is a FIFO (distill)', setup: (k) => distillOn(k, k.fifo('c.txt')), names: (k) => path.join(k.dir, 'c.txt'), problem: /is a named pipe \(FIFO\), not a corpus file/ },
  { name: 'the suite file is a FIFO (eval --suite)',
    setup: (k) => { k.write('suite/c.jsonl', GOOD_CORPUS); const s = k.fifo('suite/s.json'); return ['eval', '--model', k.model, '--out', path.join(k.out, 'eval'), '--backend', 'wasm', '--suite', s, '--workers', '1']; },
    names: (k) => path.join(k.dir, 'suite/s.json'), problem: /is a named pipe \(FIFO\), not a suite file/ },

  // ---- links that go nowhere, directories, empty files, absurd sizes -----------------------------
  { name: 'config.json is a symlink loop (inspect)', setup: (k) => (link(k, 'config.json', 'config.json'), inspect(k)), names: (k) => M(k, 'config.json'), problem: /symlink loop/ },
  { name: 'tokenizer.json is a dangling symlink (generate)', setup: (k) => (link(k, 'tokenizer.json', 'gone.json'), generate(k)), names: (k) => M(k, 'tokenizer.json'), problem: /is a symlink to a file that does not exist/ },
  { name: 'model.safetensors is a dangling symlink (forward)', setup: (k) => (link(k, ST, 'blobs/nothing'), forward(k)), names: (k) => M(k, ST), problem: /is a symlink to a file that does not exist/ },
  { name: 'a directory named config.json (inspect)', setup: (k) => (fs.rmSync(M(k, 'config.json')), fs.mkdirSync(M(k, 'config.json')), inspect(k)), names: (k) => M(k, 'config.json'), problem: /is a directory, not a regular file/ },
  { name: 'a directory named tokenizer.json (generate)', setup: (k) => (fs.rmSync(M(k, 'tokenizer.json')), fs.mkdirSync(M(k, 'tokenizer.json')), generate(k)), names: (k) => M(k, 'tokenizer.json'), problem: /is a directory, not a regular file/ },
  { name: '0-byte config.json (inspect)', setup: (k) => (fs.writeFileSync(M(k, 'config.json'), ''), inspect(k)), names: (k) => M(k, 'config.json'), problem: /invalid JSON/ },
  { name: '0-byte tokenizer.json (generate)', setup: (k) => (fs.writeFileSync(M(k, 'tokenizer.json'), ''), generate(k)), names: (k) => M(k, 'tokenizer.json'), problem: /invalid JSON/ },
  { name: '0-byte tokenizer_config.json (generate)', setup: (k) => (fs.writeFileSync(M(k, 'tokenizer_config.json'), ''), generate(k)), names: (k) => M(k, 'tokenizer_config.json'), problem: /invalid JSON/ },
  { name: 'a 5 GiB (sparse) config.json (inspect)', setup: (k) => (sparse(M(k, 'config.json'), 5 * 1024 ** 3, '{"a": "'), inspect(k)), names: (k) => M(k, 'config.json'), problem: /is 5\.0 GiB, more than the 4\.0 MiB limit for a JSON config/ },
  { name: 'a 3 GiB (sparse) tokenizer.json (generate)', setup: (k) => (sparse(M(k, 'tokenizer.json'), 3 * 1024 ** 3, '{'), generate(k)), names: (k) => M(k, 'tokenizer.json'), problem: /is 3\.0 GiB, more than the 64\.0 MiB limit for a tokenizer/ },
  { name: 'a 2 GiB (sparse) corpus (eval)', setup: (k) => { const c = path.join(k.dir, 'c.jsonl'); sparse(c, 2 * 1024 ** 3); return evalOn(k, c); }, names: (k) => path.join(k.dir, 'c.jsonl'), problem: /is 2\.0 GiB, more than the 1\.0 GiB limit for a corpus/ },
  { name: 'a BOM before a JSON config (inspect)', setup: (k) => (fs.writeFileSync(M(k, 'config.json'), '\ufeff' + fs.readFileSync(M(k, 'config.json'), 'utf8')), inspect(k)), names: (k) => M(k, 'config.json'), problem: /byte-order mark/ },

  // ---- safetensors headers the reference reader refuses ------------------------------------------
  { name: 'safetensors header declares 2^63 bytes (inspect)', setup: (k) => { const b = fs.readFileSync(M(k, ST)); b.writeBigUInt64LE(2n ** 63n); fs.writeFileSync(M(k, ST), b); return inspect(k); }, names: (k) => M(k, ST), problem: /exceeds the 100 MB limit/ },
  { name: 'safetensors header starts with a UTF-8 BOM (inspect)', setup: (k) => (rawHeader(k, (t) => '\ufeff' + t), inspect(k)), names: (k) => M(k, ST), problem: /header starts with a UTF-8 byte-order mark/ },
  { name: 'safetensors shape [0, 2^64] (inspect)', setup: (k) => (rawHeader(k, (t) => t.replace(/"shape":\[64\]/, '"shape":[0,18446744073709551616]')), inspect(k)), names: (k) => M(k, ST), problem: /shape must be a list of non-negative integers below 2\^53/ },
  { name: 'safetensors shape [2^40, 2^40, 0] (forward)', setup: (k) => (rawHeader(k, (t) => t.replace(/"shape":\[64\]/, '"shape":[1099511627776,1099511627776,0]')), forward(k)), names: (k) => M(k, ST), problem: /overflows \(more than 2\^53 bytes\)/ },
  { name: 'safetensors negative dim (inspect)', setup: (k) => (rawHeader(k, (t) => t.replace(/"shape":\[64\]/, '"shape":[-64]')), inspect(k)), names: (k) => M(k, ST), problem: /shape must be a list of non-negative integers/ },

  // ---- config values that are the wrong type ----------------------------------------------------------
  { name: 'tie_word_embeddings is the string "false" (inspect)', setup: (k) => (editJson(M(k, 'config.json'), (j) => void (j.tie_word_embeddings = 'false')), inspect(k)), names: (k) => M(k, 'config.json'), problem: /'tie_word_embeddings' must be true or false, got "false"/ },
  { name: 'attention_bias is the number 1 (forward)', setup: (k) => (editJson(M(k, 'config.json'), (j) => void (j.attention_bias = 1)), forward(k)), names: (k) => M(k, 'config.json'), problem: /'attention_bias' must be true or false, got 1/ },
  { name: 'config.symb.json tie_word_embeddings "no" (forward)', base: 'symb', setup: (k) => (editJson(M(k, 'config.symb.json'), (j) => void (j.tie_word_embeddings = 'no')), forward(k)), names: (k) => M(k, 'config.symb.json'), problem: /'tie_word_embeddings' must be true or false/ },
  { name: 'tokenizer_config.json add_bos_token "false" (generate)', setup: (k) => (editJson(M(k, 'tokenizer_config.json'), (j) => void (j.add_bos_token = 'false')), generate(k)), names: (k) => M(k, 'tokenizer_config.json'), problem: /'add_bos_token' must be true or false, got "false"/ },
  { name: '--group-size 1e12 (convert)', setup: (k) => convert(k).map((a) => (a === '32' ? '1e12' : a)), names: () => '--group-size', problem: /--group-size 1000000000000: expected an integer in 1\.\.1048576/ },

  // ---- sizes checked before the expensive work ------------------------------------------------------
  { name: 'a 300k-entry tokenizer for a 320-id model, refused before it is built (generate)', setup: (k) => (bigTokenizer(k, 300_000), generate(k)), names: (k) => M(k, 'tokenizer.json'), problem: /the tokenizer has 300000 vocabulary entries but the model's vocabulary is 320/ },
  { name: 'an added token id beyond the model vocabulary (generate)',
    setup: (k) => (editJson(M(k, 'tokenizer.json'), (j) => void (j.added_tokens as unknown[]).push({ id: 5000, content: '<x>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })), generate(k)),
    names: (k) => M(k, 'tokenizer.json'), problem: /added token id 5000 is outside the model's vocabulary 0\.\.319/ },
  { name: 'a valid model too wide for the wasm heap (hidden 16384, one layer; forward)', setup: (k) => (wideModel(k), forward(k)), names: (k) => M(k, 'config.json'), problem: /too big for this backend: one layer needs [\d.]+ GiB .*hidden_size 16384.*more than the 4\.0 GiB the wasm backend can address/ },
  { name: 'a valid model too wide for the wasm heap (hidden 16384, one layer; generate, every layer resident)', setup: (k) => (wideModel(k), generate(k)), names: (k) => M(k, 'config.json'), problem: /too big for this backend: its 1 layers and lm_head, all resident, need [\d.]+ GiB .*more than the 4\.0 GiB the wasm backend can address/ },

  // ---- corpora of the wrong shape ------------------------------------------------------------------
  { name: 'a .json corpus: an array whose element 1 has no "text" (eval)', setup: (k) => evalOn(k, k.write('c.json', '[{"text": "one two three four"}, {"body": "x"}]')), names: (k) => path.join(k.dir, 'c.json'), problem: /element 1: missing string field "text"/ },
  { name: 'a .json corpus that is one object (distill)', setup: (k) => distillOn(k, k.write('c.json', '{"data": [{"text": "a"}]}')), names: (k) => path.join(k.dir, 'c.json'), problem: /line 1: missing string field "text"/ },
  { name: 'a JSONL record without "text" on line 3 (eval)', setup: (k) => evalOn(k, k.write('c.jsonl', GOOD_CORPUS.split('\n').slice(0, 2).join('\n') + '\n{"content": "no text"}\n')), names: (k) => path.join(k.dir, 'c.jsonl'), problem: /line 3: missing string field "text"/ },
];

beforeAll(async () => {
  root = makeTempDir('bad-files');
  fixture = path.join(root, 'fixture');
  await makeFixture('tiny', fixture, { quiet: true });
}, 300_000);

afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

interface CaseResult {
  k: CaseDir;
  r: Run;
  setupError: unknown;
}

/** At most LANES CLI processes at a time (the machine has 2 shared cores). */
let freeLanes = LANES;
const waiting: (() => void)[] = [];
async function inLane<T>(job: () => Promise<T>): Promise<T> {
  if (freeLanes > 0) freeLanes--;
  else await new Promise<void>((resolve) => waiting.push(resolve));
  try {
    return await job();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else freeLanes++;
  }
}

/** Each case runs once, when a test first asks for it (so `-t NAME` runs only the cases it names). */
const results = new Map<number, Promise<CaseResult>>();
function resultOf(i: number): Promise<CaseResult> {
  let r = results.get(i);
  if (!r) {
    const c = CASES[i]!;
    r = inLane(async () => {
      const k = caseDir(c.base ?? 'hf');
      let args: string[];
      try {
        args = c.setup(k);
      } catch (e) {
        return { k, r: { code: null, stdout: '', stderr: '', timedOut: false, maxRssKb: null }, setupError: e };
      }
      return { k, r: await runMeasured(args), setupError: null };
    });
    results.set(i, r);
  }
  return r;
}

describe('hostile files: one line naming the file, exit 1, no stack, nothing from outside, no hang, ≤ 1 GiB', () => {
  it(`covers ${CASES.length} hostile files`, async () => {
    const all = await Promise.all(CASES.map((_, i) => resultOf(i)));
    const rss = all.map((x) => x.r.maxRssKb).filter((x): x is number => x !== null);
    console.log(
      `bad-files suite: ${CASES.length} cases, each its own CLI process; ` +
        (haveTime ? `peak RSS max ${(Math.max(...rss) / 1024).toFixed(0)} MiB` : `peak RSS not measured (${TIME} not found)`),
    );
    expect(CASES.length).toBeGreaterThanOrEqual(25);
  }, 30 * HANG_MS);

  CASES.forEach((c, i) => {
    it(c.name, async () => {
      const { k, r, setupError } = await resultOf(i);
      expect(setupError, 'test setup').toBeNull();
      const context = `${c.name}\nstderr:\n${r.stderr}\nstdout:\n${r.stdout.slice(0, 500)}`;
      expect(r.timedOut, `hung (killed after ${HANG_MS} ms): ${context}`).toBe(false);
      expect(r.code, context).toBe(1);
      const lines = problemLines(r.stderr).filter((l) => !INFO_LINE.test(l));
      expect(lines, context).toHaveLength(1);
      const line = lines[0]!;
      expect(line, context).toMatch(/^synaxim: error: /);
      expect(line).not.toMatch(/internal error/);
      expect(r.stderr, 'no stack trace without --debug').not.toMatch(/^\s+at /m);
      expect(line, 'names the file').toContain(c.names(k));
      expect(line).toMatch(c.problem);
      expect(r.stderr + r.stdout, 'nothing from outside the model directory').not.toContain(SECRET);
      if (r.maxRssKb !== null) expect(r.maxRssKb, `peak RSS ${r.maxRssKb} KiB`).toBeLessThan(RSS_LIMIT_KB);
    }, 30 * HANG_MS);
  });
});

describe('controls: what these checks must still let through', () => {
  it('the Hugging Face hub cache layout (snapshots/<rev>/* → ../../blobs/) loads config, weights and tokenizer (links to /, .. and nowhere beside them); a long-document corpus and a .json array corpus evaluate within 1 GiB', async () => {
    const k = caseDir('hf');
    const repo = path.join(k.dir, 'models--org--tiny');
    const snapshot = path.join(repo, 'snapshots', 'f00d');
    fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
    fs.mkdirSync(snapshot, { recursive: true });
    for (const f of fs.readdirSync(k.model)) {
      fs.renameSync(path.join(k.model, f), path.join(repo, 'blobs', `sha-${f}`));
      fs.symlinkSync(`../../blobs/sha-${f}`, path.join(snapshot, f));
    }
    // Links that are not the model's content: contentHash (eval's report) skips them, reads nothing through them.
    fs.symlinkSync('/', path.join(snapshot, 'root'));
    fs.symlinkSync('..', path.join(snapshot, 'up'));
    fs.symlinkSync('gone', path.join(snapshot, 'dangling.txt'));
    const gen = await runMeasured(['generate', '--model', snapshot, '--prompt', 'Once upon', '--max-tokens', '2', '--backend', 'wasm']);
    expect(gen.code, gen.stderr).toBe(0);

    // One 5 MB document (tokenized only as far as its window needs) beside normal ones.
    const long = k.write('long.jsonl', JSON.stringify({ text: 'the cat sat on the mat and looked at the bird. '.repeat(110_000) }) + '\n' + GOOD_CORPUS);
    const ev = await runMeasured(['eval', '--model', snapshot, '--out', path.join(k.out, 'ev-long'), '--backend', 'wasm', '--corpus', long, '--context', '16', '--workers', '1']);
    expect(ev.code, ev.stderr).toBe(0);
    if (ev.maxRssKb !== null) expect(ev.maxRssKb).toBeLessThan(RSS_LIMIT_KB);
    const arr = k.write('c.json', JSON.stringify(GOOD_CORPUS.trim().split('\n').map((l) => JSON.parse(l) as unknown)));
    const ej = await runMeasured(['eval', '--model', snapshot, '--out', path.join(k.out, 'ev-json'), '--backend', 'wasm', '--corpus', arr, '--context', '16', '--workers', '1']);
    expect(ej.code, ej.stderr).toBe(0);
    expect(fs.readdirSync(path.join(k.out, 'ev-json')).length).toBeGreaterThan(0);
  }, 3 * HANG_MS);
});
