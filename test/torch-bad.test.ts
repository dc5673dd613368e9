/**
 * Hostile `symbiotic_adapter.pt` files through the real CLI (`synaxim eval --adapter` and
 * `synaxim inspect`): code-execution attempts in the pickle, malformed pickles, tensor views
 * outside their storages, zip tricks (bombs by declared size, duplicate/absolute/`..` names,
 * truncation, CRC) and bad values. Each: exit 1, one line `synaxim: error: <file>: <problem>`, no
 * stack, no hang, nothing executed. Files are built by hand (test/helpers/torchBytes.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeFixture } from '../src/formats/fixture.ts';
import { CliWorker, makeTempDir, problemLines } from './helpers/badFiles.ts';
import { bytesOf, crc32, f32Bytes, op, scriptsAdapter, stateDictPickle, tensorItem, torchFile, zipBytes, type TensorSpec, type ZipEntrySpec } from './helpers/torchBytes.ts';

const D = 64; // the tiny fixture's hidden size
const N = 2; // adapted layers
const PREFIX = 'symbiotic_adapter';
const MODULES = ['', 'gate_bias', 'gate_scale', 'output_scale', 'mix_alpha'];
const value = (name: string, j: number) => (name.startsWith('output_scale') ? 0.05 + 0.001 * j : name.startsWith('gate_scale') ? 1.25 : name.startsWith('mix_alpha') ? 0.4 : 0.125);

interface Built {
  /** symbiotic_adapter.pt bytes */
  pt: Uint8Array | null;
  config?: Record<string, unknown>;
  /** instead of writing pt: do this to the adapter directory */
  custom?: (dir: string) => void;
}
interface BadCase {
  name: string;
  build: (dir: string) => Built;
  problem: RegExp;
}

const pristine = () => scriptsAdapter(N, D, value);
const CONFIG = { engine: 'SYNAXIM', version: '0.1.1', base_model: 'tiny', D, n_layers: 4, train_layers: N, best_loss: 0.5, parameters: N * (D + 3) };
/** A file around a bare pickle (storages of the pristine adapter beside it). */
const withPickle = (bytes: number[] | Uint8Array): Built => ({ pt: torchFile(PREFIX, Uint8Array.from(bytes), pristine().storages, { align: 64 }) });
/** The pristine adapter with its tensor specs / storages edited. */
function edited(edit: (t: TensorSpec[], s: Record<string, Uint8Array>) => void, opts: { storage?: (s: Record<string, Uint8Array>) => void } = {}): Built {
  const { tensors, storages } = pristine();
  edit(tensors, storages);
  opts.storage?.(storages);
  return { pt: torchFile(PREFIX, stateDictPickle(tensors, { modules: MODULES }), storages, { align: 64 }) };
}
/** The pristine adapter's zip entries, edited. */
function zipEdited(edit: (entries: ZipEntrySpec[]) => void): Built {
  const { tensors, storages } = pristine();
  const entries: ZipEntrySpec[] = [{ name: `${PREFIX}/data.pkl`, data: stateDictPickle(tensors, { modules: MODULES }), align: 64 }];
  for (const [k, v] of Object.entries(storages)) entries.push({ name: `${PREFIX}/data/${k}`, data: v, align: 64 });
  entries.push({ name: `${PREFIX}/version`, data: bytesOf(0x33, 0x0a) });
  edit(entries);
  return { pt: zipBytes(entries) };
}
const pristineBytes = () => edited(() => {}).pt!;
const valid = (): number[] => Array.from(stateDictPickle(pristine().tensors, { modules: MODULES }));
/** The pristine state dict's items followed by `tail` instead of the _metadata BUILD. */
const itemsThen = (...tail: number[][]): number[] => [
  ...op.PROTO(2), ...op.GLOBAL('collections', 'OrderedDict'), ...op.EMPTY_TUPLE, ...op.REDUCE,
  ...op.MARK, ...pristine().tensors.flatMap(tensorItem), ...op.SETITEMS, ...tail.flat(),
];

const CASES: BadCase[] = [
  // ---- code execution attempts
  { name: 'os.system via GLOBAL + REDUCE', problem: /data\.pkl: refusing pickle global os\.system/,
    build: (dir) => withPickle([...op.PROTO(2), ...op.GLOBAL('os', 'system'), ...op.BINUNICODE(`touch ${dir}/pwned`), ...op.TUPLE1, ...op.REDUCE, ...op.STOP]) },
  { name: 'posix.system (what os.system pickles as on Linux)', problem: /refusing pickle global posix\.system/,
    build: (dir) => withPickle([...op.PROTO(2), ...op.GLOBAL('posix', 'system'), ...op.BINUNICODE(`touch ${dir}/pwned`), ...op.TUPLE1, ...op.REDUCE, ...op.STOP]) },
  { name: 'builtins.eval', problem: /refusing pickle global builtins\.eval/,
    build: () => withPickle([...op.PROTO(2), ...op.GLOBAL('builtins', 'eval'), ...op.BINUNICODE('1+1'), ...op.TUPLE1, ...op.REDUCE, ...op.STOP]) },
  { name: 'subprocess.Popen hidden after the tensors', problem: /refusing pickle global subprocess\.Popen/,
    build: () => withPickle(itemsThen(op.GLOBAL('subprocess', 'Popen'), op.STOP)) },
  { name: 'STACK_GLOBAL os system', problem: /refusing pickle global os\.system/,
    build: () => withPickle([...op.PROTO(4), ...op.BINUNICODE('os'), ...op.BINUNICODE('system'), ...op.STACK_GLOBAL, ...op.STOP]) },
  { name: '__reduce__ trick: REDUCE on an allowed non-callable global (torch.FloatStorage)', problem: /REDUCE \(a call\) of torch\.FloatStorage is not allowed/,
    build: () => withPickle([...op.PROTO(2), ...op.GLOBAL('torch', 'FloatStorage'), ...op.EMPTY_TUPLE, ...op.REDUCE, ...op.STOP]) },
  { name: '__reduce__ trick: REDUCE on a string', problem: /REDUCE \(a call\) of str is not allowed/,
    build: () => withPickle([...op.PROTO(2), ...op.BINUNICODE('os.system'), ...op.BINUNICODE('id'), ...op.TUPLE1, ...op.REDUCE, ...op.STOP]) },
  { name: 'OrderedDict called with arguments', problem: /collections\.OrderedDict is only built empty/,
    build: () => withPickle([...op.PROTO(2), ...op.GLOBAL('collections', 'OrderedDict'), ...op.BINUNICODE('x'), ...op.TUPLE1, ...op.REDUCE, ...op.STOP]) },
  { name: 'INST opcode (old-style instance creation)', problem: /unsupported pickle opcode 0x69 \(INST\)/,
    build: () => withPickle([...op.PROTO(2), ...op.MARK, 0x69, ...new TextEncoder().encode('os\nsystem\n'), ...op.STOP]) },
  { name: 'unknown opcode 0xff', problem: /unsupported pickle opcode 0xff/,
    build: () => withPickle([...op.PROTO(2), 0xff, ...op.STOP]) },
  { name: 'BUILD setting attributes on a plain dict', problem: /BUILD on a dict is not allowed/,
    build: () => withPickle([...op.PROTO(2), ...op.EMPTY_DICT, ...op.EMPTY_DICT, ...op.BUILD, ...op.STOP]) },
  { name: 'BUILD state with other attributes than _metadata', problem: /BUILD state may only set _metadata/,
    build: () => withPickle(itemsThen(op.EMPTY_DICT, op.BINUNICODE('__class__'), op.NONE, op.SETITEM, op.BUILD, op.STOP)) },
  // ---- malformed pickles
  { name: 'recursive list (appended to itself through the memo)', problem: /recursive structure: a list that contains itself/,
    build: () => withPickle([...op.PROTO(2), ...op.EMPTY_LIST, ...op.BINPUT(0), ...op.BINGET(0), ...op.APPEND, ...op.STOP]) },
  { name: 'recursive _metadata (dict -> list -> the dict)', problem: /recursive structure in _metadata/,
    build: () => withPickle(itemsThen(op.EMPTY_DICT, op.BINUNICODE('_metadata'), op.EMPTY_DICT, op.BINPUT(200), op.BINUNICODE('k'), op.EMPTY_LIST, op.BINGET(200), op.APPEND, op.SETITEM, op.SETITEM, op.BUILD, op.STOP)) },
  { name: 'memo read before written', problem: /memo entry 7 read before it was written/,
    build: () => withPickle([...op.PROTO(2), ...op.BINGET(7), ...op.STOP]) },
  { name: 'stack underflow', problem: /pickle stack underflow/,
    build: () => withPickle([...op.PROTO(2), ...op.REDUCE, ...op.STOP]) },
  { name: 'pickle without STOP (truncated)', problem: /pickle ends without STOP \(truncated\)/,
    build: () => withPickle(valid().slice(0, -1)) },
  { name: 'pickle cut inside an opcode argument', problem: /truncated pickle/,
    build: () => withPickle([...op.PROTO(2), 0x58, 0xff, 0xff, 0xff, 0x7f, 0x41]) },
  { name: 'pickle protocol 1', problem: /pickle protocol 1/,
    build: () => withPickle([...op.PROTO(1), ...op.NONE, ...op.STOP]) },
  { name: 'a 2^63 integer', problem: /integer .* is out of range/,
    build: () => withPickle([...op.PROTO(2), ...op.LONG1([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), ...op.STOP]) },
  { name: 'non-UTF-8 string', problem: /string is not valid UTF-8/,
    build: () => withPickle([...op.PROTO(2), 0x58, 2, 0, 0, 0, 0xc3, 0x28, ...op.STOP]) },
  { name: 'data.pkl holds a list, not a state dict', problem: /holds a List, not a state dict/,
    build: () => withPickle([...op.PROTO(2), ...op.EMPTY_LIST, ...op.STOP]) },
  // ---- tensors against their storages
  { name: 'storage shorter than its numel', problem: /tensor 'output_scale\.0': storage 'data\/4' has 16 bytes, but data\.pkl declares 64 float32 elements \(256 bytes\)/,
    build: () => edited(() => {}, { storage: (s) => void (s['4'] = s['4']!.subarray(0, 16)) }) },
  { name: 'storage offset out of range', problem: /tensor 'output_scale\.1': view \(offset 64, size \[64\], stride \[1\]\) reaches element 127 of a 64-element storage/,
    build: () => edited((t) => void (t[5]!.offset = 64)) },
  { name: 'size larger than the storage', problem: /reaches element 127 of a 64-element storage/,
    build: () => edited((t) => void (t[4]!.size = [128])) },
  { name: 'negative stride', problem: /tensor 'output_scale\.0': negative stride \[-1\]/,
    build: () => edited((t) => void (t[4]!.stride = [-1])) },
  { name: 'size and stride of different lengths', problem: /size has 1 dimensions, stride 2/,
    build: () => edited((t) => void (t[4]!.stride = [1, 1])) },
  { name: 'non-float dtype (torch.LongStorage)', problem: /tensor storage torch\.LongStorage is not a float type/,
    build: () => edited((t) => void (t[0]!.storage = 'LongStorage')) },
  { name: 'non-float dtype (torch.DoubleStorage)', problem: /torch\.DoubleStorage is not a float type/,
    build: () => edited((t) => void (t[2]!.storage = 'DoubleStorage')) },
  { name: 'the same storage key declared with two sizes', problem: /storage '0' is declared twice with different types or sizes/,
    build: () => edited((t) => void Object.assign(t[1]!, { key: '0', numel: 2 })) },
  { name: 'storage key that is a path', problem: /storage key "\.\.\/\.\.\/x" is not a plain name/,
    build: () => edited((t) => void (t[0]!.key = '../../x')) },
  // ---- values and shapes
  { name: 'NaN in output_scale', problem: /tensor 'output_scale\.1' \(adapted layer 1\) has a non-finite value \(NaN\) at 3/,
    build: () => edited((_t, s) => void (s['5'] = f32Bytes(Array.from({ length: D }, (_, j) => (j === 3 ? NaN : 0.1))))) },
  { name: 'Infinity in mix_alpha', problem: /tensor 'mix_alpha\.0' \(adapted layer 0\) is Infinity/,
    build: () => edited((_t, s) => void (s['6'] = f32Bytes([Infinity]))) },
  { name: 'wrong shape: output_scale [32] for D 64', problem: /tensor 'output_scale\.0' has shape \[32\], expected \[64\]/,
    build: () => edited((t, s) => { t[4]!.size = [32]; t[4]!.numel = 32; s['4'] = f32Bytes(new Array(32).fill(0.1)); }) },
  { name: 'wrong shape: gate_bias [2]', problem: /tensor 'gate_bias\.1' has shape \[2\], expected \[1\]/,
    build: () => edited((t, s) => { t[1]!.size = [2]; t[1]!.numel = 2; s['1'] = f32Bytes([0, 0]); }) },
  { name: 'a tensor missing from the state dict', problem: /missing tensor 'gate_scale\.1' \(adapted layer 1\)/,
    build: () => edited((t) => void t.splice(3, 1)) },
  { name: 'an unexpected tensor', problem: /unexpected tensor 'lora_A'/,
    build: () => edited((t, s) => { t.push({ name: 'lora_A', storage: 'FloatStorage', key: '99', numel: 1, offset: 0, size: [1], stride: [1] }); s['99'] = f32Bytes([1]); }) },
  { name: "config's train_layers disagrees with the state dict", problem: /adapter_config\.json: states 3 adapted layers .* symbiotic_adapter\.pt has 2/,
    build: () => ({ pt: pristineBytes(), config: { ...CONFIG, train_layers: 3 } }) },
  // ---- the zip container
  { name: 'missing storage record', problem: /storage record 'symbiotic_adapter\/data\/3' is missing/,
    build: () => zipEdited((e) => void e.splice(e.findIndex((x) => x.name.endsWith('/data/3')), 1)) },
  { name: 'missing data.pkl', problem: /no 'symbiotic_adapter\/data\.pkl' record/,
    build: () => zipEdited((e) => void e.splice(0, 1)) },
  { name: 'zip bomb by declared size (4 GB entry in a small file)', problem: /zip entry "symbiotic_adapter\/data\/0" declares 4294967280 bytes, more than the whole file/,
    build: () => zipEdited((e) => void (e[1]!.declaredSize = 0xfffffff0)) },
  { name: 'entry size past the central directory', problem: /declares 1000 bytes at \d+, past the end of the data/,
    build: () => zipEdited((e) => void (e[e.length - 1]!.declaredSize = 1000)) },
  { name: 'overlapping entries (a declared size that covers the next record)', problem: /zip entries "symbiotic_adapter\/data\.pkl" and "symbiotic_adapter\/data\/0" overlap/,
    build: () => zipEdited((e) => void (e[0]!.declaredSize = e[0]!.data.length + 100)) },
  { name: 'duplicate entries', problem: /zip has two entries named "symbiotic_adapter\/data\/0"/,
    build: () => zipEdited((e) => void e.push({ ...e[1]! })) },
  { name: 'absolute entry name', problem: /refusing zip with absolute entry name "\/etc\/passwd"/,
    build: () => zipEdited((e) => void e.push({ name: '/etc/passwd', data: bytesOf(1) })) },
  { name: "'..' entry name", problem: /entry name "symbiotic_adapter\/\.\.\/\.\.\/evil" has a '\.\.' or '\.' component/,
    build: () => zipEdited((e) => void e.push({ name: `${PREFIX}/../../evil`, data: bytesOf(1) })) },
  { name: 'entry outside the archive directory', problem: /zip entry "other\/x" is not under the archive directory 'symbiotic_adapter\/'/,
    build: () => zipEdited((e) => void e.push({ name: 'other/x', data: bytesOf(1) })) },
  { name: 'two central entries pointing at one local record', problem: /local header names/,
    build: () => zipEdited((e) => void (e[2]!.localOf = 1)) },
  { name: 'CRC mismatch', problem: /zip entry "symbiotic_adapter\/data\/4": CRC mismatch/,
    build: () => zipEdited((e) => void (e[5]!.crc = crc32(e[5]!.data) ^ 1)) },
  { name: 'deflate-compressed entry', problem: /is compressed \(method 8\)/,
    build: () => zipEdited((e) => void (e[0]!.method = 8)) },
  { name: 'file truncated to half', problem: /truncated or damaged zip file/,
    build: () => { const b = pristineBytes(); return { pt: b.subarray(0, b.length >> 1) }; } },
  { name: 'empty file', problem: /not a torch\.save zip file \(0 bytes, too short\)/,
    build: () => ({ pt: new Uint8Array(0) }) },
  { name: 'legacy (pre-1.6) torch.save file', problem: /legacy pre-1\.6 torch files are not supported/,
    build: () => ({ pt: bytesOf(0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, ...new Array(40).fill(0x2e)) }) },
  { name: '.pt bigger than any adapter (sparse 300 MB)', problem: /more than the 256 MiB limit for an adapter \.pt file|limit for an adapter \.pt file/,
    build: () => ({ pt: null, custom: (dir) => { const fd = fs.openSync(path.join(dir, 'symbiotic_adapter.pt'), 'w'); fs.ftruncateSync(fd, 300 * 1024 * 1024); fs.closeSync(fd); } }) },
  { name: '.pt is a symlink to /dev/zero', problem: /symbiotic_adapter\.pt: .*(not a regular file|device)/,
    build: () => ({ pt: null, custom: (dir) => fs.symlinkSync('/dev/zero', path.join(dir, 'symbiotic_adapter.pt')) }) },
];

let root = '';
let model = '';
let corpus = '';
const worker = new CliWorker();
beforeAll(async () => {
  root = makeTempDir('torch-bad');
  model = path.join(root, 'tiny');
  await makeFixture('tiny', model, { quiet: true });
  corpus = path.join(root, 'corpus.txt');
  fs.writeFileSync(corpus, 'Once upon a time there was a little cat who liked to play in the sun all day long.\n');
});
afterAll(() => {
  worker.close();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

let counter = 0;
function adapterDir(built: Built): string {
  const dir = path.join(root, `case-${String(++counter).padStart(3, '0')}`, 'symbiotic_adapter');
  fs.mkdirSync(dir, { recursive: true });
  if (built.pt) fs.writeFileSync(path.join(dir, 'symbiotic_adapter.pt'), built.pt);
  built.custom?.(dir);
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(built.config ?? CONFIG));
  return dir;
}

const COMMANDS = {
  eval: (dir: string) => ['eval', '--model', path.join(model, 'hf'), '--adapter', dir, '--corpus', corpus, '--context', '16', '--max-seqs', '1', '--workers', '1', '--backend', 'wasm', '--out', path.join(path.dirname(dir), 'out')],
  inspect: (dir: string) => ['inspect', dir],
};

describe('hostile symbiotic_adapter.pt files: one line naming the file, exit 1, no stack, nothing executed', () => {
  it(`has ${CASES.length} cases (20+)`, () => {
    expect(CASES.length).toBeGreaterThanOrEqual(20);
  });

  for (const c of CASES) {
    for (const cmd of ['eval', 'inspect'] as const) {
      it(`${c.name} [${cmd}]`, async () => {
        const dir = adapterDir(c.build(path.join(root, `case-${String(counter + 1).padStart(3, '0')}`)));
        const r = await worker.run(COMMANDS[cmd](dir), 60_000);
        expect(r.timedOut, 'hung').toBe(false);
        const lines = problemLines(r.stderr).filter((l) => !/^synaxim: (note|warning): /.test(l));
        expect(lines, r.stderr).toHaveLength(1);
        expect(lines[0]!.startsWith(`synaxim: error: ${dir}/`), lines[0]).toBe(true);
        expect(lines[0]).toMatch(c.problem);
        expect(r.stderr).not.toMatch(/^\s+at /m);
        expect(r.code).toBe(1);
        expect(fs.existsSync(path.join(path.dirname(dir), 'pwned')), 'the payload ran').toBe(false);
        expect(fs.existsSync(path.join(path.dirname(dir), 'out', 'report.json'))).toBe(false);
      });
    }
  }

  it("control: the pristine scripts' adapter passes eval and inspect", async () => {
    const dir = adapterDir({ pt: pristineBytes() });
    const ins = await worker.run(['inspect', dir], 60_000);
    expect(ins.code, ins.stderr).toBe(0);
    expect(ins.stdout).toMatch(/format: the SYNAXIM scripts' \(symbiotic_adapter\.pt\)/);
    expect(ins.stdout).toMatch(/adapted layers: 0, 1 \(2\); parameters: 134/);
    const ev = await worker.run(COMMANDS.eval(dir), 120_000);
    expect(ev.code, ev.stderr).toBe(0);
    expect(ev.stderr).toMatch(/synaxim: eval: note: adapter records no base_model_content_hash \(base_model tiny\)/);
    const report = JSON.parse(fs.readFileSync(path.join(path.dirname(dir), 'out', 'report.json'), 'utf8')) as { adapter: { format: string; layers: number[] } };
    expect(report.adapter).toMatchObject({ format: 'pt', layers: [0, 1] });
  });

  it('an adapter recorded for another base model: refused in one line, applied with --allow-other-base (warned, recorded in report.json and report.md)', async () => {
    const dir = adapterDir({ pt: pristineBytes(), config: { ...CONFIG, base_model_content_hash: 'sha256:' + '0'.repeat(64) } });
    const refused = await worker.run(COMMANDS.eval(dir), 120_000);
    expect(refused.code).toBe(1);
    // (the policy lines come first; the run stops at the check, before any tokens)
    expect(problemLines(refused.stderr).filter((l) => !/^synaxim: (engine|adapter|hybrid): layers /.test(l))).toEqual([
      expect.stringMatching(new RegExp(`^synaxim: error: ${dir}/adapter_config\\.json: adapter does not belong to this model: it was trained on a base model \\(tiny\\) with content hash sha256:0000.*; pass --allow-other-base to apply it anyway$`)),
    ]);
    const fwd = await worker.run(['forward', '--model', path.join(model, 'hf'), '--engine', 'student', '--adapter', dir, '--ids', '1,2', '--out', path.join(path.dirname(dir), 'fwd.safetensors')], 120_000);
    expect(fwd.code).toBe(1);
    expect(fwd.stderr).toMatch(/adapter does not belong to this model/);
    const allowed = await worker.run([...COMMANDS.eval(dir), '--allow-other-base'], 120_000);
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(allowed.stderr).toMatch(/synaxim: eval: warning: adapter applied to another base model \(--allow-other-base\)/);
    const out = path.join(path.dirname(dir), 'out');
    const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) as { adapter: { base_model: Record<string, unknown> } };
    expect(report.adapter.base_model).toMatchObject({ status: 'other-base', name: 'tiny', recorded_hash: 'sha256:' + '0'.repeat(64), model_hash: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) });
    expect(fs.readFileSync(path.join(out, 'report.md'), 'utf8')).toMatch(/adapter base model: \*\*other base model\*\* — adapter applied to another base model/);
  });
});
