/**
 * A small deterministic fuzzer over the model files (issue 7 item 1): seeded random bit flips
 * (anywhere, or concentrated in the first bytes where the structure lives), truncations and
 * insertions of model.safetensors, .symb files, config.json, config.symb.json and tokenizer.json
 * of the tiny fixture. Each mutated file must either load with every weight finite, or fail with a
 * SynaximError — one line, naming a file of the model — never another exception, never a hang.
 *
 * (JSON files also get number literals replaced by hostile values: 0, -1, 1e300, null, "7", ...)
 * Every iteration runs the in-process API (openModel + every tensor of every layer, the embedding
 * and the output projection; parseHfConfig / parseSymbConfig; loadTokenizer + encode/decode).
 * Every CLI_EVERY-th iteration also runs the CLI (`forward`, or `generate --prompt` for the
 * tokenizer) through CliWorker, and every PROCESS_EVERY-th as its own `node bin/synaxim.js`
 * process: exit 0 with finite logits, or exit 1 with one error line naming a file — never exit 2.
 * The iteration counts are printed (they go in the README).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeFixture } from '../src/formats/fixture.ts';
import { SynaximError } from '../src/util/errors.ts';
import { parseHfConfig, parseSymbConfig, readJsonFile } from '../src/formats/config.ts';
import { openModel } from '../src/formats/openModel.ts';
import { readAllFloat32 } from '../src/formats/safetensors.ts';
import { loadTokenizer } from '../src/formats/tokenizer.ts';
import type { ModelWeights } from '../src/formats/weights.ts';
import { CliWorker, copyDir, makeTempDir, mutate, problemLines, rng, runCli, type CliResult } from './helpers/badFiles.ts';

// CI runs the fixed seed and count; set SYNAXIM_FUZZ_SEED / SYNAXIM_FUZZ_ITERATIONS to explore further.
const SEED = Number(process.env.SYNAXIM_FUZZ_SEED ?? 20240607);
const ITERATIONS = Number(process.env.SYNAXIM_FUZZ_ITERATIONS ?? 150);
const CLI_EVERY = 3;
const PROCESS_EVERY = 30;
/**
 * An in-process iteration on the tiny model takes milliseconds. A tokenizer.json whose vocab names
 * id 10^8 takes seconds (@huggingface/tokenizers' get_vocab walks 0 … max id; reported), so the
 * limit only catches hangs (it is no speed check: a loaded machine must give the same verdict);
 * slow iterations are printed.
 */
const ITERATION_LIMIT_S = 300;
const CLI_TIMEOUT_MS = 30_000;

type Target = { name: string; model: 'hf' | 'symb'; file: string; kind: 'weights' | 'config' | 'tokenizer' };
const TARGETS: Target[] = [
  { name: 'model.safetensors', model: 'hf', file: 'model.safetensors', kind: 'weights' },
  { name: 'attn_q.symb (int4)', model: 'symb', file: 'layers/layer_01/attn_q.symb', kind: 'weights' },
  { name: 'embeddings.symb (int4)', model: 'symb', file: 'embeddings.symb', kind: 'weights' },
  { name: 'norm_mlp.symb (fp16)', model: 'symb', file: 'layers/layer_02/norm_mlp.symb', kind: 'weights' },
  { name: 'config.json', model: 'hf', file: 'config.json', kind: 'config' },
  { name: 'config.symb.json', model: 'symb', file: 'config.symb.json', kind: 'config' },
  { name: 'tokenizer.json', model: 'hf', file: 'tokenizer.json', kind: 'tokenizer' },
];

let root = '';
let work: Record<'hf' | 'symb', string> = { hf: '', symb: '' };
const worker = new CliWorker();

beforeAll(async () => {
  root = makeTempDir('fuzz');
  const fixture = path.join(root, 'fixture');
  await makeFixture('tiny', fixture, { quiet: true });
  work = { hf: path.join(root, 'work', 'hf'), symb: path.join(root, 'work', 'symb') };
  copyDir(path.join(fixture, 'hf'), work.hf);
  copyDir(path.join(fixture, 'symb-int4'), work.symb);
});

afterAll(() => {
  worker.close();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

function expectFinite(values: Float32Array, what: string): void {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i]!)) throw new Error(`${what}: non-finite value ${values[i]} at ${i} was handed out`);
}

/** Everything a run reads from a model: config, every layer, final norm, every embedding and lm_head row. */
function readWholeModel(dir: string): void {
  let w: ModelWeights | null = null;
  try {
    w = openModel(dir);
    const c = w.config;
    expectFinite(w.embed(Array.from({ length: c.vocabSize }, (_, i) => i)), 'embed');
    for (let l = 0; l < c.numLayers; l++) {
      for (const [k, v] of Object.entries(w.layer(l))) {
        if (v === null) continue;
        expectFinite(v instanceof Float32Array ? v : v.data, `layer ${l} ${k}`);
      }
    }
    expectFinite(w.finalNorm(), 'final norm');
    expectFinite(w.lmHeadRows(0, c.vocabSize).data, 'lm_head');
  } finally {
    w?.close();
  }
}

async function exercise(t: Target): Promise<void> {
  const dir = work[t.model];
  if (t.kind === 'tokenizer') {
    const tok = await loadTokenizer(dir);
    const ids = tok.encode('Once upon a time, there was a little girl.');
    tok.decode(ids);
    for (let i = 1; i < ids.length; i++) tok.decodeToken(ids.slice(0, i), ids[i]!);
    return;
  }
  if (t.kind === 'config') {
    const file = path.join(dir, t.file);
    if (t.model === 'hf') parseHfConfig(readJsonFile(file), file);
    else parseSymbConfig(readJsonFile(file), file);
  }
  readWholeModel(dir);
}

function cliArgs(t: Target, out: string): string[] {
  const dir = work[t.model];
  if (t.kind === 'tokenizer') return ['generate', '--model', dir, '--prompt', 'Once upon', '--max-tokens', '2', '--backend', 'wasm'];
  return ['forward', '--model', dir, '--ids', '1,2,3,200,319', '--out', out, '--backend', 'wasm'];
}

/**
 * Outcomes that break the contract for reasons outside the model readers, reported to the lead:
 * counted and printed, not failed, until their fix lands (then delete the entry and the fuzzer
 * holds the line).
 */
const KNOWN_GAPS: { id: string; why: string; matches: (t: Target, what: string) => boolean }[] = [
  {
    id: 'non-finite logits',
    why: 'a corrupt but finite int4/int8 scale (e.g. 1e37) gives finite weights whose activations overflow; forward exits 0 with NaN logits (needs the activation guard of issue 7 item 3)',
    matches: (t, what) => t.kind === 'weights' && /exit 0 with non-finite logits/.test(what),
  },
  {
    id: 'tokenizer ids beyond the model vocabulary',
    why: 'a tokenizer.json with ids >= the model vocab_size loads; the prompt is then refused naming --prompt, not tokenizer.json (generate should compare vocab sizes at load)',
    matches: (t, what) => t.kind === 'tokenizer' && /names no file of the model: synaxim: error: --prompt: token id \d+ at position \d+ is outside the vocabulary/.test(what),
  },
];

interface Problem {
  iteration: number;
  target: string;
  mutation: string;
  what: string;
}

/** The CLI's outcome must be success with finite logits, or exit 1 with one line naming a file of the model. */
function checkCli(r: CliResult, t: Target, out: string): string | null {
  if (r.timedOut) return 'CLI hung';
  if (r.code === 0) {
    if (t.kind === 'tokenizer') return null;
    if (!fs.existsSync(out)) return 'exit 0 but no output file';
    const logits = readAllFloat32(out).logits!.data;
    for (const v of logits) if (!Number.isFinite(v)) return `exit 0 with non-finite logits (${v})`;
    return null;
  }
  const lines = problemLines(r.stderr);
  if (r.code !== 1) return `exit ${r.code}: ${r.stderr}`;
  if (lines.length !== 1 || !lines[0]!.startsWith('synaxim: error: ')) return `not one error line: ${r.stderr}`;
  if (/^\s+at /m.test(r.stderr)) return `stack trace: ${r.stderr}`;
  if (!lines[0]!.includes(work[t.model])) return `error names no file of the model: ${lines[0]}`;
  if (fs.existsSync(out)) return 'failed but left an output file';
  return null;
}

describe('fuzz: mutated model files load cleanly or fail with one SynaximError line naming a file', () => {
  it(`${ITERATIONS} seeded mutations (seed ${SEED})`, async () => {
    const random = rng(SEED);
    const problems: Problem[] = [];
    const gapCounts = new Map<string, number>();
    const outcomes = { ok: 0, synaximError: 0, cli: 0, cliOk: 0, process: 0 };
    const byTarget = new Map<string, number>();
    const outFile = path.join(root, 'out', 'logits.safetensors');
    fs.mkdirSync(path.dirname(outFile), { recursive: true });
    let slowest = 0;

    for (let iteration = 0; iteration < ITERATIONS; iteration++) {
      const t = TARGETS[iteration % TARGETS.length]!;
      byTarget.set(t.name, (byTarget.get(t.name) ?? 0) + 1);
      const file = path.join(work[t.model], t.file);
      const original = fs.readFileSync(file);
      const m = mutate(original, random, t.kind === 'weights' ? 64 : 512, t.kind !== 'weights');
      const note = (what: string) => {
        const gap = KNOWN_GAPS.find((g) => g.matches(t, what));
        if (gap) gapCounts.set(gap.id, (gapCounts.get(gap.id) ?? 0) + 1);
        else problems.push({ iteration, target: t.name, mutation: m.detail, what });
      };
      fs.writeFileSync(file, m.bytes);
      try {
        const t0 = performance.now();
        try {
          await exercise(t);
          outcomes.ok++;
        } catch (e) {
          if (!(e instanceof SynaximError)) note(`threw ${(e as Error)?.name}: ${(e as Error)?.message}\n${(e as Error)?.stack?.split('\n').slice(1, 4).join('\n')}`);
          else {
            outcomes.synaximError++;
            if (e.message.includes('\n')) note(`multi-line message: ${e.message}`);
            if (!e.message.includes(work[t.model])) note(`message names no file of the model: ${e.message}`);
          }
        }
        const seconds = (performance.now() - t0) / 1000;
        slowest = Math.max(slowest, seconds);
        if (seconds > ITERATION_LIMIT_S) note(`took ${seconds.toFixed(1)} s`);
        if (seconds > 1) console.log(`fuzz: slow iteration #${iteration} ${t.name} (${m.detail}): ${seconds.toFixed(2)} s`);

        if (iteration % CLI_EVERY === 0) {
          fs.rmSync(outFile, { force: true });
          const r = await worker.run(cliArgs(t, outFile), CLI_TIMEOUT_MS);
          outcomes.cli++;
          if (r.code === 0) outcomes.cliOk++;
          const bad = checkCli(r, t, outFile);
          if (bad) note(`CLI: ${bad}`);
        }
        if (iteration % PROCESS_EVERY === 0) {
          fs.rmSync(outFile, { force: true });
          const r = await runCli(cliArgs(t, outFile), CLI_TIMEOUT_MS);
          outcomes.process++;
          const bad = checkCli(r, t, outFile);
          if (bad) note(`CLI process: ${bad}`);
        }
      } finally {
        fs.writeFileSync(file, original);
      }
    }

    console.log(
      `fuzz: ${ITERATIONS} iterations (seed ${SEED}; ${[...byTarget].map(([k, v]) => `${k} ${v}`).join(', ')}): ` +
        `${outcomes.ok} loaded cleanly, ${outcomes.synaximError} SynaximError; ` +
        `${outcomes.cli} also through the CLI (${outcomes.cliOk} exit 0), ${outcomes.process} as separate processes; ` +
        `slowest in-process iteration ${slowest.toFixed(2)} s`,
    );
    for (const g of KNOWN_GAPS) {
      if (gapCounts.get(g.id)) console.log(`fuzz: KNOWN GAP '${g.id}' hit ${gapCounts.get(g.id)} time(s): ${g.why}`);
    }
    expect(problems, problems.map((p) => `#${p.iteration} ${p.target} (${p.mutation}): ${p.what}`).join('\n')).toEqual([]);
  });
});
