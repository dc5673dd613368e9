/**
 * Bad inputs to the commands that run for a long time (issue 7 item 1, second half): adapter
 * directories and corpora given to `eval` and `distill`, suite files, and the flags that size a run.
 * The model files themselves are bad-input.test.ts's job; here the model is always a good one (the
 * tiny fixture, made once; a subset also on a copy of ../shared/models/stories260k when it exists).
 *
 * Every case writes its bad file or directory into a fresh case directory, runs the CLI through
 * main() in a long-lived worker process (CliWorker; every SUBPROCESS_EVERY-th case also as its own
 * `node bin/synaxim.js` process, which must print the same line), and asserts what the CLI promises:
 *   - exit code 1;
 *   - exactly one `synaxim: error:` line, naming the offending file (or flag) and the problem, and
 *     nothing else on stderr but the informational lines a command prints before it fails;
 *   - no stack trace (only --debug shows one);
 *   - nothing in --out that was not there before: no report.json, no symbiotic_adapter/, no
 *     distill report, no temporary file or lock left behind;
 *   - done in seconds (the worker is killed, and the case fails, after CASE_TIMEOUT_MS).
 * Controls: the pristine adapter, corpus and suite run to completion through the same path, so each
 * failure is the hostile edit's doing.
 *
 * No command reads token ids from a corpus or a suite file (corpora are text: JSONL with a "text"
 * field or plain text; suites name corpora), so "ids outside the vocabulary" can only come from the
 * tokenizer: a tokenizer.json with ids beyond the model's vocabulary is refused before any corpus is
 * read (cases below); `forward --ids` / `generate --prompt-ids` are bad-input.test.ts's.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeFixture } from '../src/formats/fixture.ts';
import { SHARED_DIR, sharedAvailable } from '../src/util/paths.ts';
import { ADAPTER_CONFIG_FILE, ADAPTER_DIR_NAME, ADAPTER_WEIGHTS_FILE, initialAdapter, writeAdapter, type Adapter } from '../src/formats/adapter.ts';
import {
  CliWorker,
  copyDir,
  editJson,
  editSafetensorsHeader,
  makeTempDir,
  mapLimit,
  readRawSafetensors,
  runCli,
  setF32Element,
  tensorEntry,
  tensorsByOffset,
  truncateFile,
  writeRawSafetensors,
  type CliResult,
  dropTensor,
  addTensor,
} from './helpers/badFiles.ts';

/**
 * Only catches hangs (a case takes seconds at most idle): generous, so that a loaded machine gives
 * the same verdict. CliWorker and runCli add COLD_START_MS for process start-up on top.
 */
const CASE_TIMEOUT_MS = 120_000;
const LANES = 2;
const SUBPROCESS_EVERY = 19;

type Command = 'eval' | 'distill';

/** What a case's regexes may depend on: the model under test. */
interface Facts {
  numLayers: number;
  hiddenSize: number;
  maxPositions: number;
  vocabSize: number;
}

/** One case's directory and the helpers its setup uses. */
interface CaseDir {
  dir: string;
  /** The model the command runs on (shared, read-only; `copyModel` cases get their own copy). */
  model: string;
  out: string;
  facts: Facts;
  /** Write a file under the case directory (parents made); returns its absolute path. */
  write: (rel: string, content: string | Uint8Array) => string;
  /** A copy of the pristine adapter (layers 0 and 2) at `rel`; returns its directory. */
  adapter: (rel?: string) => string;
  /** The pristine corpus, copied to `rel`; returns its path. */
  corpus: (rel?: string) => string;
}

/** Flags a case sets over the command's defaults (null removes a default; '' is a bare boolean flag). */
type Flags = Record<string, string | null>;

interface BadCase {
  name: string;
  cmd: Command;
  /** Give the case its own copy of the model (at `model/`, for cases that break it). */
  copyModel?: boolean;
  setup: (k: CaseDir) => Flags | Promise<Flags>;
  /** What the error line must name: a flag ('--layers'), or a path relative to the case directory ('' = the case directory). */
  names: string;
  problem: RegExp | ((f: Facts) => RegExp);
  /** Also run on a copy of stories260k (when ../shared exists). */
  real?: boolean;
}

const GOOD_CORPUS = [
  'Once upon a time there was a little cat who liked to play in the garden with a red ball.',
  'Tom went to the park with his dog. They saw a bird in a tree and sang a happy song together.',
  'Lily found a shiny key under the old box. She opened the door and saw a big cake on the table.',
  'The fox and the rabbit were good friends. Every day they ran to the river and looked at the fish.',
]
  .map((text) => JSON.stringify({ text }))
  .join('\n') + '\n';

const DEFAULTS: Record<Command, Flags> = {
  eval: { '--corpus': 'GOOD', '--context': '16', '--workers': '1' },
  distill: { '--layers': '0-1', '--corpus': 'GOOD', '--seq-len': '8', '--epochs': '1', '--batch-size': '2', '--no-cache': '' },
};

const W = ADAPTER_WEIGHTS_FILE;
const CFG = ADAPTER_CONFIG_FILE;
/** eval with a copy of the pristine adapter, after `edit` on its directory (which may add flags). */
const withAdapter = (edit: (a: string, k: CaseDir) => void | Flags) => (k: CaseDir): Flags => {
  const a = k.adapter();
  return { ...(edit(a, k) ?? {}), '--adapter': a };
};
const aw = (a: string) => path.join(a, W);
const ac = (a: string) => path.join(a, CFG);

/** Replace a tensor's shape and bytes (F32 zeros of the new shape), keeping the file valid. */
function reshapeTensor(file: string, name: string, shape: number[]): void {
  dropTensor(file, name);
  addTensor(file, name, shape);
}

/** A suite file `suite/s.json` beside a good corpus `suite/c.jsonl` (fields over a good suite). */
function suite(k: CaseDir, fields: Record<string, unknown>, text?: string): Flags {
  k.corpus('suite/c.jsonl');
  const file = k.write('suite/s.json', text ?? JSON.stringify({ name: 'bad', context: 16, corpora: ['c.jsonl'], metrics: ['ppl', 'kld'], ...fields }, null, 2));
  return { '--suite': file, '--corpus': null, '--context': null };
}

const corpusCase = (cmd: Command, name: string, file: string, content: string | Uint8Array, problem: RegExp, real = false): BadCase => ({
  name: `corpus: ${name}`,
  cmd,
  names: file,
  problem,
  real,
  setup: (k) => ({ '--corpus': k.write(file, content) }),
});

/** [name, file, content, problem, also on stories260k?] — each runs through eval and distill. */
const CORPUS_CASES: [string, string, string | Uint8Array, RegExp, boolean?][] = [
  ['empty .jsonl file', 'c.jsonl', '', /corpus is empty \(no documents with text\)/],
  ['empty .txt file', 'c.txt', '', /corpus is empty/],
  ['only blank lines (plain text)', 'c.txt', '\n\n   \n\t\n\r\n', /corpus is empty/],
  ['only blank lines (.jsonl)', 'c.jsonl', '\n  \n\n', /corpus is empty/],
  ['every "text" blank', 'c.jsonl', '{"text": ""}\n{"text": "   \\n "}\n', /corpus is empty/],
  ['a bad JSON line (line 3)', 'c.jsonl', '{"text": "one two"}\n{"text": "three"}\n{"text": oops}\n{"text": "four"}\n', /line 3: invalid JSON/, true],
  ['a bad JSON line after blank lines (line 6; CRLF)', 'c.jsonl', '{"text": "a b c"}\r\n\r\n\r\n{"text": "d"}\r\n\r\n{"text": "e"\r\n', /line 6: invalid JSON/],
  ['a truncated last line (line 2)', 'c.jsonl', '{"text": "a whole line"}\n{"text": "cut he', /line 2: invalid JSON/],
  ['a bad JSON line with a terminal escape (error stays one clean line)', 'c.jsonl', '{"text": "ok"}\n{"text": \u001b[2J\u0007}\n', /line 2: invalid JSON \([^\u0000-\u001f]*\)$/],
  ['a JSONL line without "text" (line 2)', 'c.jsonl', '{"text": "fine"}\n{"body": "no text here"}\n', /line 2: missing string field "text"/],
  ['"text" is a number (line 1)', 'c.jsonl', '{"text": 42}\n', /line 1: field "text" must be a string, got number/],
  ['"text" is null (line 2)', 'c.jsonl', '{"text": "x"}\n{"text": null}\n', /line 2: field "text" must be a string, got null/],
  ['"text" is a list (line 1)', 'c.jsonl', '{"text": ["a", "b"]}\n', /line 1: field "text" must be a string, got an array/],
  ['a JSONL line that is a list (line 2)', 'c.jsonl', '{"text": "x"}\n["text", "y"]\n', /line 2: expected a JSON object with a "text" field/],
  ['a JSONL line that is a string', 'c.jsonl', '"just a string"\n', /line 1: expected a JSON object/],
  ['not UTF-8', 'c.txt', Uint8Array.from([0x4f, 0x6e, 0x63, 0x65, 0xff, 0xfe, 0x20, 0x75, 0x70, 0x6f, 0x6e]), /corpus is not valid UTF-8 text/],
];

const CASES: BadCase[] = [
  // ---- adapter directories (eval --adapter) -------------------------------------------------
  { name: 'adapter: hidden_size does not fit the model (32, tensors [32])', cmd: 'eval', names: `adapter/${CFG}`, real: true,
    problem: (f) => new RegExp(`adapter hidden_size 32 does not match the model's hidden size ${f.hiddenSize}`),
    setup: async (k) => { const a = path.join(k.dir, 'adapter'); await writeAdapter(a, initialAdapter([0, 1], 32)); return { '--adapter': a }; } },
  { name: 'adapter: hidden_size in the config disagrees with its tensors', cmd: 'eval', names: `adapter/${W}`, problem: /tensor 'output_scale.0' has shape \[64\], expected \[128\] \(hidden_size in adapter_config.json\)/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.hidden_size = 128))) },
  { name: 'adapter: hidden_size 0', cmd: 'eval', names: `adapter/${CFG}`, problem: /'hidden_size' must be a positive integer, got 0/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.hidden_size = 0))) },
  { name: 'adapter: hidden_size a string', cmd: 'eval', names: `adapter/${CFG}`, problem: /'hidden_size' must be a positive integer, got "64"/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.hidden_size = '64'))) },
  { name: 'adapter: hidden_size missing', cmd: 'eval', names: `adapter/${CFG}`, problem: /'hidden_size' must be a positive integer, got undefined/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void delete j.hidden_size)) },
  { name: 'adapter: a layer beyond the model', cmd: 'eval', names: `adapter/${CFG}`, real: true,
    problem: (f) => new RegExp(`adapter layers ${f.numLayers + 3} do not exist in the model \\(${f.numLayers} layers: 0\\.\\.${f.numLayers - 1}\\)`),
    setup: withAdapter((a, k) => editJson(ac(a), (j) => void (j.layers = [0, k.facts.numLayers + 3]))) },
  { name: 'adapter: layer equal to the layer count (off by one)', cmd: 'eval', names: `adapter/${CFG}`, problem: /adapter layers 4 do not exist in the model \(4 layers: 0\.\.3\)/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.layers = [0, 4]))) },
  { name: 'adapter: a layer listed twice', cmd: 'eval', names: `adapter/${CFG}`, problem: /'layers' lists layer 2 twice/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.layers = [2, 2]))) },
  { name: 'adapter: layers not a list (a range string)', cmd: 'eval', names: `adapter/${CFG}`, problem: /'layers' must be a non-empty list of layer indices, got "0-2"/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.layers = '0-2'))) },
  { name: 'adapter: layers a number', cmd: 'eval', names: `adapter/${CFG}`, problem: /'layers' must be a non-empty list of layer indices, got 2/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.layers = 2))) },
  { name: 'adapter: layers an empty list', cmd: 'eval', names: `adapter/${CFG}`, problem: /'layers' must be a non-empty list of layer indices, got \[\]/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.layers = []))) },
  { name: 'adapter: layers missing', cmd: 'eval', names: `adapter/${CFG}`, problem: /'layers' must be a non-empty list of layer indices, got undefined/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void delete j.layers)) },
  { name: 'adapter: a negative layer', cmd: 'eval', names: `adapter/${CFG}`, problem: /'layers' entries must be non-negative integers, got -1/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.layers = [0, -1]))) },
  { name: 'adapter: a fractional layer', cmd: 'eval', names: `adapter/${CFG}`, problem: /'layers' entries must be non-negative integers, got 1.5/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.layers = [0, 1.5]))) },
  { name: 'adapter: a layer as a string', cmd: 'eval', names: `adapter/${CFG}`, problem: /'layers' entries must be non-negative integers, got "2"/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.layers = [0, '2']))) },
  { name: 'adapter: more layers in the config than tensors', cmd: 'eval', names: `adapter/${W}`, problem: /missing tensor 'output_scale.2' \(adapted layer 3\)/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.layers = [0, 2, 3]))) },
  { name: 'adapter: NaN gate_bias', cmd: 'eval', names: `adapter/${W}`, problem: /tensor 'gate_bias.1' \(adapted layer 2\) is NaN/, real: true,
    setup: withAdapter((a) => setF32Element(aw(a), 'gate_bias.1', 0, NaN)) },
  { name: 'adapter: +Inf mix_alpha', cmd: 'eval', names: `adapter/${W}`, problem: /tensor 'mix_alpha.0' \(adapted layer 0\) is Infinity/,
    setup: withAdapter((a) => setF32Element(aw(a), 'mix_alpha.0', 0, Infinity)) },
  { name: 'adapter: -Inf gate_scale', cmd: 'eval', names: `adapter/${W}`, problem: /tensor 'gate_scale.1' \(adapted layer 2\) is -Infinity/,
    setup: withAdapter((a) => setF32Element(aw(a), 'gate_scale.1', 0, -Infinity)) },
  { name: 'adapter: NaN in output_scale', cmd: 'eval', names: `adapter/${W}`, problem: /tensor 'output_scale.1' \(adapted layer 2\) has a non-finite value \(NaN\) at 17/,
    setup: withAdapter((a) => setF32Element(aw(a), 'output_scale.1', 17, NaN)) },
  { name: 'adapter: Inf in the last output_scale entry', cmd: 'eval', names: `adapter/${W}`, problem: /tensor 'output_scale.0' \(adapted layer 0\) has a non-finite value \(Infinity\) at 63/,
    setup: withAdapter((a) => setF32Element(aw(a), 'output_scale.0', 63, Infinity)) },
  { name: 'adapter: gate_bias.1 missing', cmd: 'eval', names: `adapter/${W}`, problem: /missing tensor 'gate_bias.1' \(adapted layer 2\)/,
    setup: withAdapter((a) => dropTensor(aw(a), 'gate_bias.1')) },
  { name: 'adapter: output_scale.0 missing', cmd: 'eval', names: `adapter/${W}`, problem: /missing tensor 'output_scale.0' \(adapted layer 0\)/,
    setup: withAdapter((a) => dropTensor(aw(a), 'output_scale.0')) },
  { name: 'adapter: mix_alpha.1 missing', cmd: 'eval', names: `adapter/${W}`, problem: /missing tensor 'mix_alpha.1' \(adapted layer 2\)/,
    setup: withAdapter((a) => dropTensor(aw(a), 'mix_alpha.1')) },
  { name: 'adapter: an extra tensor of a third layer', cmd: 'eval', names: `adapter/${W}`, problem: /tensor 'gate_bias.2' has no layer: adapter_config.json lists 2 adapted layers \(0, 2\)/,
    setup: withAdapter((a) => addTensor(aw(a), 'gate_bias.2', [1])) },
  { name: 'adapter: an extra tensor of another kind (LoRA)', cmd: 'eval', names: `adapter/${W}`, problem: /unexpected tensor 'lora_A.weight'/,
    setup: withAdapter((a) => addTensor(aw(a), 'lora_A.weight', [4, 64])) },
  { name: 'adapter: output_scale with shape [8, 8]', cmd: 'eval', names: `adapter/${W}`, problem: /tensor 'output_scale.1' has shape \[8, 8\], expected \[64\]/,
    setup: withAdapter((a) => editSafetensorsHeader(aw(a), (h) => void (tensorEntry(h, 'output_scale.1').shape = [8, 8]))) },
  { name: 'adapter: output_scale with 63 values', cmd: 'eval', names: `adapter/${W}`, problem: /tensor 'output_scale.0' has shape \[63\], expected \[64\]/,
    setup: withAdapter((a) => reshapeTensor(aw(a), 'output_scale.0', [63])) },
  { name: 'adapter: gate_scale with 2 values', cmd: 'eval', names: `adapter/${W}`, problem: /tensor 'gate_scale.0' has shape \[2\], expected \[1\]/,
    setup: withAdapter((a) => reshapeTensor(aw(a), 'gate_scale.0', [2])) },
  { name: 'adapter: mix_alpha with shape [1, 1]', cmd: 'eval', names: `adapter/${W}`, problem: /tensor 'mix_alpha.1' has shape \[1, 1\], expected \[1\]/,
    setup: withAdapter((a) => editSafetensorsHeader(aw(a), (h) => void (tensorEntry(h, 'mix_alpha.1').shape = [1, 1]))) },
  { name: 'adapter: an integer dtype for a parameter', cmd: 'eval', names: `adapter/${W}`, problem: /gate_bias.0.*I32/,
    setup: withAdapter((a) => editSafetensorsHeader(aw(a), (h) => void (tensorEntry(h, 'gate_bias.0').dtype = 'I32'))) },
  { name: 'adapter: finite but huge parameters (the run overflows float32 and stops, naming where)', cmd: 'eval', names: "configuration 'adapter'",
    problem: /produced a non-finite logit .* in document 0 .*; the first non-finite activation .* is in layer 0 .*no report written/,
    setup: withAdapter((a) => {
      for (let j = 0; j < 64; j++) setF32Element(aw(a), 'output_scale.0', j, 3e38);
      setF32Element(aw(a), 'mix_alpha.0', 0, 30);
      return { '--configurations': 'adapter' };
    }) },
  { name: 'adapter: adapter_config.json missing', cmd: 'eval', names: `adapter/${CFG}`, problem: /file not found/,
    setup: withAdapter((a) => fs.rmSync(ac(a))) },
  { name: 'adapter: adapter_config.json invalid JSON', cmd: 'eval', names: `adapter/${CFG}`, problem: /invalid JSON/,
    setup: withAdapter((a) => fs.writeFileSync(ac(a), '{"layers": [0, 2], "hidden_size": 64,')) },
  { name: 'adapter: adapter_config.json empty', cmd: 'eval', names: `adapter/${CFG}`, problem: /invalid JSON/,
    setup: withAdapter((a) => fs.writeFileSync(ac(a), '')) },
  { name: 'adapter: adapter_config.json a JSON list', cmd: 'eval', names: `adapter/${CFG}`, problem: /must be a JSON object/,
    setup: withAdapter((a) => fs.writeFileSync(ac(a), '[0, 2]')) },
  { name: 'adapter: unknown semantics', cmd: 'eval', names: `adapter/${CFG}`, problem: /unsupported adapter semantics "adapter-v9"/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.semantics = 'adapter-v9'))) },
  { name: 'adapter: unknown adapter_type', cmd: 'eval', names: `adapter/${CFG}`, problem: /unsupported adapter_type "lora"/,
    setup: withAdapter((a) => editJson(ac(a), (j) => void (j.adapter_type = 'lora'))) },
  { name: 'adapter: adapter_model.safetensors missing', cmd: 'eval', names: `adapter/${W}`, problem: /file not found/,
    setup: withAdapter((a) => fs.rmSync(aw(a))) },
  { name: 'adapter: adapter_model.safetensors truncated in the data', cmd: 'eval', names: `adapter/${W}`, problem: /run past the end of the file/,
    setup: withAdapter((a) => truncateFile(aw(a), fs.statSync(aw(a)).size - 4)) },
  { name: 'adapter: adapter_model.safetensors truncated in the header', cmd: 'eval', names: `adapter/${W}`, problem: /header length \d+ runs past the end of the file \(40 bytes\)/,
    setup: withAdapter((a) => truncateFile(aw(a), 40)) },
  { name: 'adapter: adapter_model.safetensors empty', cmd: 'eval', names: `adapter/${W}`, problem: /too small to be a safetensors file \(0 bytes\)/,
    setup: withAdapter((a) => truncateFile(aw(a), 0)) },
  { name: 'adapter: adapter_model.safetensors is a directory', cmd: 'eval', names: `adapter/${W}`, problem: /not a regular file/,
    setup: withAdapter((a) => { fs.rmSync(aw(a)); fs.mkdirSync(aw(a)); }) },
  { name: 'adapter: a run directory holding a broken symbiotic_adapter/', cmd: 'eval', names: `run/${ADAPTER_DIR_NAME}/${W}`, problem: /missing tensor 'gate_scale.0'/,
    setup: (k) => { const a = k.adapter(`run/${ADAPTER_DIR_NAME}`); dropTensor(aw(a), 'gate_scale.0'); return { '--adapter': path.dirname(a) }; } },
  { name: 'adapter: the directory does not exist', cmd: 'eval', names: 'nowhere', problem: /adapter directory not found/,
    setup: (k) => ({ '--adapter': path.join(k.dir, 'nowhere') }) },
  { name: 'adapter: --adapter names a file', cmd: 'eval', names: `adapter/${W}`, problem: /not a directory \(expected an adapter directory/,
    setup: (k) => ({ '--adapter': aw(k.adapter()) }) },
  { name: 'adapter: --adapter is an empty directory', cmd: 'eval', names: `empty/${CFG}`, problem: /file not found/,
    setup: (k) => { fs.mkdirSync(path.join(k.dir, 'empty')); return { '--adapter': path.join(k.dir, 'empty') }; } },

  // ---- corpora (eval --corpus and distill --corpus) -----------------------------------------
  ...CORPUS_CASES.flatMap(([name, file, content, problem, real]) => (['eval', 'distill'] as const).map((cmd) => corpusCase(cmd, name, file, content, problem, real))),
  { name: 'corpus: the file does not exist', cmd: 'eval', names: 'missing.jsonl', problem: /file not found/,
    setup: (k) => ({ '--corpus': path.join(k.dir, 'missing.jsonl') }) },
  { name: 'corpus: the file does not exist', cmd: 'distill', names: 'missing.jsonl', problem: /corpus file not found/,
    setup: (k) => ({ '--corpus': path.join(k.dir, 'missing.jsonl') }) },
  { name: 'corpus: a directory', cmd: 'eval', names: 'dir.jsonl', problem: /is a directory, expected a corpus file/,
    setup: (k) => { fs.mkdirSync(path.join(k.dir, 'dir.jsonl')); return { '--corpus': path.join(k.dir, 'dir.jsonl') }; } },
  { name: 'corpus: a directory', cmd: 'distill', names: 'dir.jsonl', problem: /is a directory, expected a corpus file/,
    setup: (k) => { fs.mkdirSync(path.join(k.dir, 'dir.jsonl')); return { '--corpus': path.join(k.dir, 'dir.jsonl') }; } },
  { name: 'corpus: every document shorter than --seq-len', cmd: 'distill', names: 'short.jsonl', real: true,
    problem: /no document has at least 64 tokens \(3 too short\); lower --seq-len or use longer documents/,
    setup: (k) => ({ '--corpus': k.write('short.jsonl', '{"text": "Hi."}\n{"text": "A cat."}\n{"text": "The end."}\n'), '--seq-len': '64' }) },
  { name: 'corpus: every document shorter than --seq-len (plain text, one word each)', cmd: 'distill', names: 'short.txt', problem: /no document has at least 32 tokens \(2 too short\)/,
    setup: (k) => ({ '--corpus': k.write('short.txt', 'Hello\n\nworld\n'), '--seq-len': '32' }) },

  // ---- ids outside the vocabulary (only a tokenizer can produce them) -------------------------
  { name: 'ids: tokenizer.json maps a token to an id beyond the model vocabulary', cmd: 'eval', copyModel: true, names: 'model/hf/tokenizer.json',
    problem: /added token id 999 is outside the model's vocabulary 0\.\.319 \(not this model's tokenizer\)/,
    setup: (k) => { addTokenBeyondVocab(path.join(k.model, 'hf', 'tokenizer.json'), 999); return { '--corpus': k.write('c.jsonl', '{"text": "a <evil> b c d e f g h i j k"}\n') }; } },
  { name: 'ids: tokenizer.json maps a token to an id beyond the model vocabulary', cmd: 'distill', copyModel: true, names: 'model/hf/tokenizer.json',
    problem: /added token id 999 is outside the model's vocabulary 0\.\.319/,
    setup: (k) => { addTokenBeyondVocab(path.join(k.model, 'hf', 'tokenizer.json'), 999); return {}; } },

  // ---- flags that size the run ----------------------------------------------------------------
  { name: '--context beyond the model\'s max positions', cmd: 'eval', names: '--context', real: true,
    problem: (f) => new RegExp(`--context ${f.maxPositions + 1} is longer than the model's max_position_embeddings \\(${f.maxPositions}\\)`),
    setup: (k) => ({ '--context': String(k.facts.maxPositions + 1) }) },
  { name: '--context 1', cmd: 'eval', names: '--context', problem: /--context must be an integer ≥ 2, got 1/, setup: () => ({ '--context': '1' }) },
  { name: '--context negative', cmd: 'eval', names: '--context', problem: /--context must be an integer ≥ 2, got -5/, setup: () => ({ '--context': '-5' }) },
  { name: '--context not a number', cmd: 'eval', names: '--context', problem: /--context must be an integer ≥ 2, got NaN/, setup: () => ({ '--context': 'lots' }) },
  { name: '--max-seqs 0', cmd: 'eval', names: '--max-seqs', problem: /--max-seqs must be a positive integer, got 0/, setup: () => ({ '--max-seqs': '0' }) },
  { name: '--stride equal to --context', cmd: 'eval', names: '--stride', problem: /--stride must be an integer in 1\.\.15/, setup: () => ({ '--stride': '16' }) },
  { name: '--token-budget negative', cmd: 'eval', names: '--token-budget', problem: /--token-budget must be a positive integer/, setup: () => ({ '--token-budget': '-3' }) },
  { name: '--configurations with an unknown name', cmd: 'eval', names: '--configurations', problem: /--configurations: unknown 'hybird'/, setup: () => ({ '--configurations': 'engine,hybird' }) },
  { name: '--configurations adapter without --adapter', cmd: 'eval', names: "configuration 'adapter'", problem: /does not apply here \(it needs --adapter\)/, setup: () => ({ '--configurations': 'adapter' }) },
  { name: '--suite and --corpus together', cmd: 'eval', names: '--suite', problem: /--suite and --corpus exclude each other/, setup: (k) => ({ '--suite': 'smoke', '--context': null, '--corpus': k.corpus() }) },
  { name: '--context without --corpus', cmd: 'eval', names: '--context', problem: /--context goes with --corpus/, setup: () => ({ '--corpus': null }) },
  { name: '--suite names no built-in suite', cmd: 'eval', names: '--suite', problem: /--suite: unknown suite 'smokey'/, setup: () => ({ '--suite': 'smokey', '--corpus': null, '--context': null }) },
  { name: '--out is a file', cmd: 'eval', names: 'taken', problem: /taken: --out: this is a file, not a directory$/,
    setup: (k) => { k.out = k.write('taken', 'not a directory'); return {}; } },
  { name: '--out is under a file', cmd: 'eval', names: 'taken', problem: /taken: --out .*taken\/sub: cannot make a directory under a file$/,
    setup: (k) => { k.write('taken', 'x'); k.out = path.join(k.dir, 'taken', 'sub'); return {}; } },
  { name: '--out is a file', cmd: 'distill', names: 'taken', problem: /taken: --out: this is a file, not a directory$/,
    setup: (k) => { k.out = k.write('taken', 'not a directory'); return {}; } },
  { name: '--layers out of range', cmd: 'distill', names: '--layers', real: true,
    problem: (f) => new RegExp(`--layers: ${f.numLayers} out of range \\(the model has ${f.numLayers} layers: 0\\.\\.${f.numLayers - 1}\\)`),
    setup: (k) => ({ '--layers': `0,${k.facts.numLayers}` }) },
  { name: '--layers a range running past the model (shown as a range)', cmd: 'distill', names: '--layers', problem: /--layers: 4-4000 out of range \(the model has 4 layers: 0\.\.3\)$/,
    setup: () => ({ '--layers': '2-4000' }) },
  { name: '--layers 0-100000000 (no huge expansion, no hang)', cmd: 'distill', names: '--layers', problem: /--layers: layer 100000000 is beyond any model \(at most 4096 layers\)/,
    setup: () => ({ '--layers': '0-100000000' }) },
  { name: '--layers 3-1 (reversed range)', cmd: 'distill', names: '--layers', problem: /--layers: range '3-1' is reversed/, setup: () => ({ '--layers': '3-1' }) },
  { name: '--layers -1', cmd: 'distill', names: '--layers', problem: /--layers: '-1' is not a layer index, a range like 0-7, all, first-N or last-N/, setup: () => ({ '--layers': '-1' }) },
  { name: '--layers not a list', cmd: 'distill', names: '--layers', problem: /--layers: 'every' is not a layer index, a range like 0-7, all, first-N or last-N/, setup: () => ({ '--layers': 'every' }) },
  { name: '--layers first-N beyond the model', cmd: 'distill', names: '--layers', problem: /--layers: 'first-9' asks for 9 layers; the model has \d+/, setup: () => ({ '--layers': 'first-9' }) },
  { name: '--layers empty', cmd: 'distill', names: '--layers', problem: /--layers: no layers given/, setup: () => ({ '--layers': ',' }) },
  { name: '--seq-len beyond the model\'s max positions', cmd: 'distill', names: '--seq-len', problem: /--seq-len 4096 exceeds the model's context \(512\)/, setup: () => ({ '--seq-len': '4096' }) },
  { name: '--seq-len 1', cmd: 'distill', names: '--seq-len', problem: /--seq-len must be an integer ≥ 2, got 1/, setup: () => ({ '--seq-len': '1' }) },
  { name: '--seq-len fractional', cmd: 'distill', names: '--seq-len', problem: /--seq-len must be an integer, got 8.5/, setup: () => ({ '--seq-len': '8.5' }) },
  { name: '--max-seqs 0', cmd: 'distill', names: '--max-seqs', problem: /--max-seqs must be a positive integer, got 0/, setup: () => ({ '--max-seqs': '0' }) },
  { name: '--epochs negative', cmd: 'distill', names: '--epochs', problem: /--epochs must be a non-negative integer, got -1/, setup: () => ({ '--epochs': '-1' }) },
  { name: '--lr 0', cmd: 'distill', names: '--lr', problem: /--lr must be a positive number, got 0/, setup: () => ({ '--lr': '0' }) },
  { name: '--lr not a number', cmd: 'distill', names: '--lr', problem: /--lr must be a positive number, got NaN/, setup: () => ({ '--lr': 'fast' }) },
  { name: '--batch-size 0', cmd: 'distill', names: '--batch-size', problem: /--batch-size must be a positive integer, got 0/, setup: () => ({ '--batch-size': '0' }) },
  { name: '--held-out 1 (nothing left to train on)', cmd: 'distill', names: '--held-out', problem: /--held-out must be a fraction in \[0, 1\), got 1/, setup: () => ({ '--held-out': '1' }) },
  { name: '--held-out negative', cmd: 'distill', names: '--held-out', problem: /--held-out must be a fraction in \[0, 1\), got -0.5/, setup: () => ({ '--held-out': '-0.5' }) },
  { name: '--chunk-size 0', cmd: 'distill', names: '--chunk-size', problem: /--chunk-size must be a positive integer/, setup: () => ({ '--chunk-size': '0' }) },
  { name: '--resume with no checkpoint', cmd: 'distill', names: 'out/checkpoint.safetensors', problem: /nothing to resume: no checkpoint here/,
    setup: () => ({ '--resume': '' }) },
  { name: '--resume with a truncated checkpoint', cmd: 'distill', names: 'out/checkpoint.safetensors', problem: /runs past the end of the file/,
    setup: (k) => { k.write('out/checkpoint.safetensors', Buffer.concat([Buffer.from([200, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"a":')])); return { '--resume': '' }; } },
  { name: 'a checkpoint of an earlier run in --out, without --resume', cmd: 'distill', names: 'out/checkpoint.safetensors', problem: /a checkpoint of an earlier run is here; pass --resume to continue it or --overwrite/,
    setup: (k) => { k.write('out/checkpoint.safetensors', 'x'); return {}; } },

  // ---- suite files (eval --suite FILE) --------------------------------------------------------
  { name: 'suite: invalid JSON', cmd: 'eval', names: 'suite/s.json', problem: /invalid JSON/, setup: (k) => suite(k, {}, '{"context": 16, "corpora": ["c.jsonl"],') },
  { name: 'suite: invalid JSON with control characters (error stays one clean line)', cmd: 'eval', names: 'suite/s.json', problem: /invalid JSON \([^\u0000-\u001f]*\)$/,
    setup: (k) => suite(k, {}, '{"context": 16,\n "corpora": [\u001b[31m"c.jsonl"]}') },
  { name: 'suite: a JSON list', cmd: 'eval', names: 'suite/s.json', problem: /a suite must be a JSON object/, setup: (k) => suite(k, {}, '[]') },
  { name: 'suite: unknown metric', cmd: 'eval', names: 'suite/s.json', problem: /'metrics': unknown entry "bleu" \(known: ppl, kld/, setup: (k) => suite(k, { metrics: ['ppl', 'bleu'] }) },
  { name: 'suite: metrics not a list', cmd: 'eval', names: 'suite/s.json', problem: /'metrics' must be a non-empty list/, setup: (k) => suite(k, { metrics: 'ppl' }) },
  { name: 'suite: negative context', cmd: 'eval', names: 'suite/s.json', problem: /'context' must be an integer ≥ 2, got -16/, setup: (k) => suite(k, { context: -16 }) },
  { name: 'suite: context a string', cmd: 'eval', names: 'suite/s.json', problem: /'context' must be an integer ≥ 2, got "16"/, setup: (k) => suite(k, { context: '16' }) },
  { name: 'suite: context missing', cmd: 'eval', names: 'suite/s.json', problem: /missing required field 'context'/, setup: (k) => suite(k, { context: undefined }) },
  { name: 'suite: context beyond the model', cmd: 'eval', names: 'suite/s.json', problem: /context 513 is longer than the model's max_position_embeddings \(512\)/, setup: (k) => suite(k, { context: 513 }) },
  { name: 'suite: stride not below context', cmd: 'eval', names: 'suite/s.json', problem: /'stride' \(16\) must be smaller than 'context' \(16\)/, setup: (k) => suite(k, { stride: 16 }) },
  { name: 'suite: max_seqs 0', cmd: 'eval', names: 'suite/s.json', problem: /'max_seqs' must be an integer ≥ 1, got 0/, setup: (k) => suite(k, { max_seqs: 0 }) },
  { name: 'suite: unknown field (typo)', cmd: 'eval', names: 'suite/s.json', problem: /unknown field 'contxt'/, setup: (k) => suite(k, { contxt: 16 }) },
  { name: 'suite: unknown configuration', cmd: 'eval', names: 'suite/s.json', problem: /'configurations': unknown entry "student"/, setup: (k) => suite(k, { configurations: ['student'] }) },
  { name: 'suite: concatenate not a boolean', cmd: 'eval', names: 'suite/s.json', problem: /'concatenate' must be true or false/, setup: (k) => suite(k, { concatenate: 'yes' }) },
  { name: 'suite: memory_contexts with 0', cmd: 'eval', names: 'suite/s.json', problem: /'memory_contexts' must be a non-empty list of positive integers/, setup: (k) => suite(k, { memory_contexts: [128, 0] }) },
  { name: 'suite: corpora empty', cmd: 'eval', names: 'suite/s.json', problem: /'corpora' must be a non-empty list/, setup: (k) => suite(k, { corpora: [] }) },
  { name: 'suite: corpus path escaping its directory (../../x.jsonl)', cmd: 'eval', names: 'suite/s.json', real: true,
    problem: /corpus path "\.\.\/\.\.\/x\.jsonl" escapes the suite's directory/,
    setup: (k) => { k.corpus('x.jsonl'); return suite(k, { corpora: ['../../x.jsonl'] }); } },
  { name: 'suite: corpus path with .. in the middle', cmd: 'eval', names: 'suite/s.json', problem: /corpus path "sub\/\.\.\/\.\.\/x\.jsonl" escapes the suite's directory/,
    setup: (k) => { k.corpus('x.jsonl'); return suite(k, { corpora: [{ path: 'sub/../../x.jsonl' }] }); } },
  { name: 'suite: absolute corpus path', cmd: 'eval', names: 'suite/s.json', problem: /corpus path "\/etc\/passwd" escapes the suite's directory/,
    setup: (k) => suite(k, { corpora: ['/etc/passwd'] }) },
  { name: 'suite: corpus a symlink pointing outside', cmd: 'eval', names: 'suite/s.json', problem: /corpus path "link\.jsonl" is a link that leads outside the suite's directory/,
    setup: (k) => { const outside = k.corpus('outside/secret.jsonl'); const r = suite(k, { corpora: ['link.jsonl'] }); fs.symlinkSync(outside, path.join(k.dir, 'suite', 'link.jsonl')); return r; } },
  { name: 'suite: corpus under a symlinked directory pointing outside', cmd: 'eval', names: 'suite/s.json', problem: /corpus path "data\/secret\.jsonl" is a link that leads outside/,
    setup: (k) => { k.corpus('outside/secret.jsonl'); const r = suite(k, { corpora: ['data/secret.jsonl'] }); fs.symlinkSync('../outside', path.join(k.dir, 'suite', 'data')); return r; } },
  { name: 'suite: corpus path empty', cmd: 'eval', names: 'suite/s.json', problem: /corpus path must be a non-empty string/, setup: (k) => suite(k, { corpora: [''] }) },
  { name: 'suite: corpus entry with both path and builtin', cmd: 'eval', names: 'suite/s.json', problem: /corpora\[0\] needs exactly one of 'path' and 'builtin'/,
    setup: (k) => suite(k, { corpora: [{ path: 'c.jsonl', builtin: 'default' }] }) },
  { name: 'suite: unknown built-in corpus', cmd: 'eval', names: 'suite/s.json', problem: /corpora\[0\]: unknown built-in corpus "wikitext"/, setup: (k) => suite(k, { corpora: [{ builtin: 'wikitext' }] }) },
  { name: 'suite: max_docs 0', cmd: 'eval', names: 'suite/s.json', problem: /'max_docs' must be an integer ≥ 1, got 0/, setup: (k) => suite(k, { corpora: [{ path: 'c.jsonl', max_docs: 0 }] }) },
  { name: 'suite: a corpus that does not exist', cmd: 'eval', names: 'suite/gone.jsonl', problem: /corpus file not found/, setup: (k) => suite(k, { corpora: ['gone.jsonl'] }) },
  { name: 'suite: a corpus with a bad JSON line (line 2)', cmd: 'eval', names: 'suite/bad.jsonl', problem: /line 2: invalid JSON/,
    setup: (k) => { k.write('suite/bad.jsonl', '{"text": "fine words here"}\n{"text": \n'); return suite(k, { corpora: ['c.jsonl', 'bad.jsonl'] }); } },
  { name: 'suite: a corpus that is empty', cmd: 'eval', names: 'suite/empty.txt', problem: /corpus is empty/,
    setup: (k) => { k.write('suite/empty.txt', '\n\n'); return suite(k, { corpora: ['empty.txt'] }); } },
  { name: 'suite: a corpus symlink loop', cmd: 'eval', names: 'suite/loop.jsonl', problem: /is a symlink loop/,
    setup: (k) => { const r = suite(k, { corpora: ['loop.jsonl'] }); fs.symlinkSync('loop.jsonl', path.join(k.dir, 'suite', 'loop.jsonl')); return r; } },
  { name: 'suite: the suite file does not exist', cmd: 'eval', names: 'suite/none.json', problem: /file not found/,
    setup: (k) => ({ ...suite(k, {}), '--suite': path.join(k.dir, 'suite', 'none.json') }) },
];

/** Add a token with `id` (beyond the model's vocabulary) to a tokenizer.json's added tokens. */
function addTokenBeyondVocab(file: string, id: number): void {
  editJson(file, (j) => {
    const added = (j.added_tokens as unknown[] | undefined) ?? [];
    added.push({ id, content: '<evil>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    j.added_tokens = added;
  });
}

// ---------------------------------------------------------------------------------------------

interface ModelUnderTest {
  tag: string;
  dir: string;
  facts: Facts;
  /** A pristine adapter (layers 0 and 2) for this model. */
  adapter: string;
}

let root = '';
let goodCorpus = '';
let tiny: ModelUnderTest;
let stories: ModelUnderTest | null = null;
let caseCounter = 0;
const workers: CliWorker[] = [];
const worker = (lane: number) => (workers[lane] ??= new CliWorker());

function factsOf(hfDir: string): Facts {
  const c = JSON.parse(fs.readFileSync(path.join(hfDir, 'config.json'), 'utf8')) as Record<string, number>;
  return { numLayers: c.num_hidden_layers!, hiddenSize: c.hidden_size!, maxPositions: c.max_position_embeddings!, vocabSize: c.vocab_size! };
}

/** A pristine adapter with distinct, finite values (so a NaN written into it is the only problem). */
async function pristineAdapter(dir: string, hiddenSize: number): Promise<void> {
  const a: Adapter = initialAdapter([0, 2], hiddenSize);
  a.params.forEach((p, i) => {
    p.gateBias = 0.25 * (i + 1);
    p.gateScale = 1.5;
    p.mixAlpha = 0.4;
    p.outputScale = p.outputScale.map((_, j) => 0.05 + 0.001 * j);
  });
  await writeAdapter(dir, a, { base_model: 'test' });
}

async function modelUnderTest(tag: string, dir: string): Promise<ModelUnderTest> {
  const facts = factsOf(path.join(dir, 'hf'));
  const adapter = path.join(root, `adapter-${tag}`);
  await pristineAdapter(adapter, facts.hiddenSize);
  return { tag, dir, facts, adapter };
}

beforeAll(async () => {
  root = makeTempDir('bad-runs');
  goodCorpus = path.join(root, 'good.jsonl');
  fs.writeFileSync(goodCorpus, GOOD_CORPUS);
  const fixture = path.join(root, 'tiny');
  await makeFixture('tiny', fixture, { quiet: true });
  tiny = await modelUnderTest('tiny', fixture);
  if (sharedAvailable()) {
    const copy = path.join(root, 'stories260k');
    for (const sub of ['hf', 'symb-int4']) copyDir(path.join(SHARED_DIR, 'models', 'stories260k', sub), path.join(copy, sub));
    // the shared files are read-only; the copy must be removable (and copyModel cases edit it)
    for (const f of fs.readdirSync(copy, { recursive: true, withFileTypes: true })) {
      if (!f.isSymbolicLink()) fs.chmodSync(path.join(f.parentPath, f.name), f.isDirectory() ? 0o755 : 0o644);
    }
    stories = await modelUnderTest('stories260k', copy);
  }
});

afterAll(() => {
  for (const w of workers) w.close();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

/** Every file and directory under `dir` (relative paths, sorted); [] when it does not exist. */
function listing(dir: string): string[] {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).map(String).sort();
}

interface CaseRun {
  r: CliResult;
  k: CaseDir;
  outBefore: string[];
  setupError: unknown;
}

async function prepare(c: BadCase, m: ModelUnderTest): Promise<{ k: CaseDir; args: string[]; setupError: unknown }> {
  const dir = path.join(root, `case-${String(++caseCounter).padStart(3, '0')}`);
  fs.mkdirSync(dir, { recursive: true });
  const write = (rel: string, content: string | Uint8Array) => {
    const f = path.join(dir, rel);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, content);
    return f;
  };
  const k: CaseDir = {
    dir,
    model: m.dir,
    out: path.join(dir, 'out'),
    facts: m.facts,
    write,
    adapter: (rel = 'adapter') => {
      const a = path.join(dir, rel);
      copyDir(m.adapter, a);
      return a;
    },
    corpus: (rel = 'corpus.jsonl') => write(rel, GOOD_CORPUS),
  };
  if (c.copyModel) {
    copyDir(m.dir, path.join(dir, 'model'));
    k.model = path.join(dir, 'model');
  }
  let flags: Flags = {};
  let setupError: unknown = null;
  try {
    flags = await c.setup(k);
  } catch (e) {
    setupError = e;
  }
  const merged: Flags = { ...DEFAULTS[c.cmd], ...flags };
  const args = [c.cmd, '--model', k.model, '--out', k.out, '--backend', 'wasm'];
  for (const [flag, value] of Object.entries(merged)) {
    if (value === null) continue;
    args.push(flag);
    if (value !== '') args.push(value === 'GOOD' ? goodCorpus : value);
  }
  return { k, args, setupError };
}

async function runCase(c: BadCase, m: ModelUnderTest, run: (args: string[]) => Promise<CliResult>): Promise<CaseRun> {
  const { k, args, setupError } = await prepare(c, m);
  const none: CliResult = { code: null, signal: null, stdout: '', stderr: '', seconds: 0, timedOut: false };
  if (setupError) return { r: none, k, outBefore: [], setupError };
  const outBefore = listing(k.out);
  // a value that starts with '-' goes as `--flag=value` (else yargs may take it for a flag)
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i]!.startsWith('--') && i + 1 < args.length && /^-\d/.test(args[i + 1]!)) {
      joined.push(`${args[i]}=${args[i + 1]}`);
      i++;
    } else joined.push(args[i]!);
  }
  return { r: await run(joined), k, outBefore, setupError: null };
}

/** Lines a command may print on stderr before it fails: the backend line, log and progress lines. */
// (`synaxim: <student|engine|adapter|hybrid>: layers …`: the attention-policy line of src/engine/policyLine.ts)
const INFO_LINE = /^(synaxim: backend \S+ \(|synaxim distill: (model|corpus) |synaxim: eval: |eval: \d+\/\d+ |synaxim: [a-z][\w-]*: layers \d)/;

/** What the CLI promised, checked on one run; returns the error line with the case directory replaced. */
function expectCleanFailure(c: BadCase, run: CaseRun): string {
  const { r, k, outBefore, setupError } = run;
  expect(setupError, 'test setup').toBeNull();
  const context = `${c.cmd}: ${c.name}\nstderr:\n${r.stderr}\nstdout:\n${r.stdout.slice(0, 500)}`;
  expect(r.timedOut, `hung (killed after ${CASE_TIMEOUT_MS} ms): ${context}`).toBe(false);
  expect(r.code, context).toBe(1);
  const lines = r.stderr.split('\n').filter((l) => l.length > 0);
  const errors = lines.filter((l) => l.startsWith('synaxim: error: '));
  expect(errors, context).toHaveLength(1);
  expect(lines.filter((l) => !l.startsWith('synaxim: error: ') && !INFO_LINE.test(l)), `only informational lines besides the error: ${context}`).toEqual([]);
  expect(r.stderr).not.toMatch(/internal error/);
  expect(r.stderr, 'no stack trace without --debug').not.toMatch(/^\s+at /m);
  const line = errors[0]!;
  const named = c.names.startsWith('--') || c.names.startsWith('configuration') ? c.names : path.join(k.dir, c.names);
  expect(line, `names ${named}: ${context}`).toContain(named);
  expect(line, context).toMatch(typeof c.problem === 'function' ? c.problem(k.facts) : c.problem);
  // nothing written that looks like (or is part of) a finished run
  expect(fs.existsSync(path.join(k.out, 'report.json')), 'no report.json').toBe(false);
  expect(fs.existsSync(path.join(k.out, ADAPTER_DIR_NAME, ADAPTER_WEIGHTS_FILE)), 'no adapter').toBe(false);
  expect(listing(k.out), `--out holds only what was there before: ${context}`).toEqual(outBefore);
  return line.split(k.dir).join('<case>');
}

let results: Promise<{ inWorker: CaseRun[]; subprocess: Map<number, CaseRun>; real: CaseRun[] }> | null = null;
const REAL_CASES = CASES.filter((c) => c.real);
function allResults() {
  results ??= (async () => {
    const sample = CASES.map((c, i) => ({ c, i })).filter(({ i }) => i % SUBPROCESS_EVERY === 0);
    const [inWorker, sub] = await Promise.all([
      mapLimit(CASES, LANES, (c, _i, lane) => runCase(c, tiny, (args) => worker(lane).run(args, CASE_TIMEOUT_MS))),
      mapLimit(sample, 1, ({ c }) => runCase(c, tiny, (args) => runCli(args, CASE_TIMEOUT_MS))),
    ]);
    const model = stories;
    const real = model ? await mapLimit(REAL_CASES, LANES, (c, _i, lane) => runCase(c, model, (args) => worker(lane).run(args, CASE_TIMEOUT_MS))) : [];
    return { inWorker, subprocess: new Map(sample.map(({ i }, k) => [i, sub[k]!])), real };
  })();
  return results;
}

describe('bad runs: adapters, corpora, suites and run flags give one clear line, exit 1, no stack, nothing written, no hang', () => {
  it(`covers ${CASES.length} hostile inputs to eval and distill`, async () => {
    const { inWorker, subprocess } = await allResults();
    const slowest = Math.max(...inWorker.map((x) => x.r.seconds));
    const slowestProcess = Math.max(...[...subprocess.values()].map((x) => x.r.seconds));
    const count = (cmd: Command) => CASES.filter((c) => c.cmd === cmd).length;
    console.log(
      `bad-runs suite: ${CASES.length} cases (eval ${count('eval')}, distill ${count('distill')}) through the CLI (slowest ${slowest.toFixed(2)} s); ` +
        `${subprocess.size} also as separate processes (slowest ${slowestProcess.toFixed(1)} s)` +
        (stories ? `; ${REAL_CASES.length} also on stories260k` : '; stories260k subset skipped (../shared not available)'),
    );
    expect(CASES.length).toBeGreaterThanOrEqual(100);
  });

  CASES.forEach((c, i) => {
    it(`${c.cmd}: ${c.name}${i % SUBPROCESS_EVERY === 0 ? ' [+ own process]' : ''}`, async () => {
      const { inWorker, subprocess } = await allResults();
      const line = expectCleanFailure(c, inWorker[i]!);
      const own = subprocess.get(i);
      if (own) expect(expectCleanFailure(c, own), 'the same line from a fresh `node bin/synaxim.js` process').toBe(line);
    });
  });
});

describe.skipIf(!sharedAvailable())('bad runs on a real model (a copy of ../shared/models/stories260k)', () => {
  REAL_CASES.forEach((c, i) => {
    it(`${c.cmd}: ${c.name}`, async () => {
      const { real } = await allResults();
      expectCleanFailure(c, real[i]!);
    });
  });
});
if (!sharedAvailable()) console.log('bad-runs: stories260k subset skipped: ../shared/models/stories260k not found');

describe('controls: the pristine adapter, corpus and suite run through the same path', () => {
  it('eval with the adapter (ad-hoc corpus and a suite file), and distill, exit 0 and write complete outputs', async () => {
    const controls: BadCase[] = [
      { name: 'eval + adapter', cmd: 'eval', names: '', problem: /x/, setup: (k) => ({ '--adapter': k.adapter(), '--configurations': 'engine,adapter,hybrid', '--window': 'none' }) },
      { name: 'eval + suite', cmd: 'eval', names: '', problem: /x/, setup: (k) => suite(k, {}) },
      { name: 'eval + plain-text corpus', cmd: 'eval', names: '', problem: /x/, setup: (k) => ({ '--corpus': k.write('c.txt', GOOD_CORPUS.split('\n').map((l) => l && JSON.parse(l).text).join('\n\n')) }) },
      { name: 'distill', cmd: 'distill', names: '', problem: /x/, setup: () => ({}) },
    ];
    const runs = await mapLimit(controls, LANES, (c, _i, lane) => runCase(c, tiny, (args) => worker(lane).run(args, CASE_TIMEOUT_MS)));
    for (const [i, { r, k, setupError }] of runs.entries()) {
      expect(setupError).toBeNull();
      expect(r.code, `${controls[i]!.name}: ${r.stderr}`).toBe(0);
      if (controls[i]!.cmd === 'eval') {
        const report = JSON.parse(fs.readFileSync(path.join(k.out, 'report.json'), 'utf8')) as { configurations: { name: string; ppl: number }[] };
        for (const conf of report.configurations) expect(Number.isFinite(conf.ppl), conf.name).toBe(true);
        if (i === 0) expect(report.configurations.map((x) => x.name)).toEqual(['teacher', 'engine', 'adapter', 'hybrid']);
      } else {
        expect(fs.existsSync(path.join(k.out, ADAPTER_DIR_NAME, ADAPTER_WEIGHTS_FILE))).toBe(true);
        expect(fs.readdirSync(k.out).filter((f) => f.startsWith('.'))).toEqual([]); // no lock or temp file left
      }
    }
  });

  it('--debug adds the stack trace to the same one-line message', async () => {
    const c = CASES.find((x) => x.name === 'adapter: NaN gate_bias')!;
    const run = await runCase(c, tiny, (args) => worker(0).run([...args, '--debug'], CASE_TIMEOUT_MS));
    expect(run.r.code).toBe(1);
    expect(run.r.stderr).toMatch(/synaxim: error: .*tensor 'gate_bias.1' \(adapted layer 2\) is NaN/);
    expect(run.r.stderr).toMatch(/^\s+at /m);
  });
});
