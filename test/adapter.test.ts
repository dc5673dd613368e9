/** The adapter directory format: round trip, the exported bytes, and one-line errors. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SynaximError } from '../src/util/errors.ts';
import { parseHfConfig } from '../src/formats/config.ts';
import { SafetensorsFile, writeSafetensors } from '../src/formats/safetensors.ts';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  adapterParameterCount,
  initialAdapter,
  readAdapter,
  writeAdapter,
  type Adapter,
} from '../src/formats/adapter.ts';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'synaxim-adapter-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let n = 0;
const freshDir = () => path.join(tmpRoot, `case-${++n}`);

const model = parseHfConfig({
  architectures: ['LlamaForCausalLM'],
  hidden_size: 8,
  intermediate_size: 16,
  num_hidden_layers: 4,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 32,
});

function trained(): Adapter {
  const a = initialAdapter([0, 2, 3], 8);
  a.params.forEach((p, i) => {
    p.gateBias = -0.25 * (i + 1);
    p.gateScale = 1.5 + i;
    p.mixAlpha = 0.125 * i - 1;
    p.outputScale = Float32Array.from({ length: 8 }, (_, j) => 0.1 + 0.01 * j - i);
  });
  return a;
}

/** The thrown error is a one-line SynaximError naming `file`. */
function expectError(fn: () => unknown, file: string, pattern: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'should throw').toBeInstanceOf(SynaximError);
  const msg = (err as Error).message;
  expect(msg.startsWith(file + ': '), msg).toBe(true);
  expect(msg).toMatch(pattern);
  expect(msg.includes('\n')).toBe(false);
}

describe('initial adapter', () => {
  it('has the SYNAXIM scripts initial values', () => {
    const a = initialAdapter([1, 4], 6);
    expect(a.layers).toEqual([1, 4]);
    expect(a.params).toHaveLength(2);
    for (const p of a.params) {
      expect(p.gateBias).toBe(0);
      expect(p.gateScale).toBe(1);
      expect(p.mixAlpha).toBe(0.5);
      expect(Array.from(p.outputScale)).toEqual(new Array(6).fill(Math.fround(0.1)));
    }
    expect(adapterParameterCount(a)).toBe(2 * (3 + 6));
  });
});

describe('write + read', () => {
  it('round-trips exactly, with the PyTorch state-dict names as F32', async () => {
    const dir = freshDir();
    const a = trained();
    await writeAdapter(dir, a, { base_model: 'tiny', best_loss: 0.5 });
    const back = readAdapter(dir, model);
    expect(back.layers).toEqual([0, 2, 3]);
    expect(back.hiddenSize).toBe(8);
    back.params.forEach((p, i) => {
      expect(p.gateBias).toBe(Math.fround(a.params[i].gateBias));
      expect(p.gateScale).toBe(Math.fround(a.params[i].gateScale));
      expect(p.mixAlpha).toBe(Math.fround(a.params[i].mixAlpha));
      expect(Array.from(p.outputScale)).toEqual(Array.from(a.params[i].outputScale));
    });

    const st = SafetensorsFile.open(path.join(dir, ADAPTER_WEIGHTS_FILE));
    expect(st.names().sort()).toEqual(
      [0, 1, 2].flatMap((i) => [`gate_bias.${i}`, `gate_scale.${i}`, `mix_alpha.${i}`, `output_scale.${i}`]).sort(),
    );
    for (const name of st.names()) {
      expect(st.info(name).dtype).toBe('F32');
      expect(st.info(name).shape).toEqual(name.startsWith('output_scale') ? [8] : [1]);
    }
    expect(st.metadata).toEqual({ format: 'pt' });
    st.close();

    const cfg = JSON.parse(fs.readFileSync(path.join(dir, ADAPTER_CONFIG_FILE), 'utf8'));
    expect(cfg).toMatchObject({
      adapter_type: 'symbiotic_gate',
      semantics: 'adapter-v1',
      engine: 'SYNAXIM',
      hidden_size: 8,
      num_layers: 3,
      layers: [0, 2, 3],
      num_parameters: 3 * 11,
      base_model: 'tiny',
      best_loss: 0.5,
      // the SYNAXIM scripts' names for the same facts
      D: 8,
      train_layers: 3,
      parameters: 3 * 11,
    });
    // Nothing but the two files (atomic write leaves no temporaries).
    expect(fs.readdirSync(dir).sort()).toEqual([ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE]);
    expect(fs.readdirSync(path.dirname(dir)).filter((f) => f.includes('.tmp'))).toEqual([]);
  });

  it('reads a directory holding symbiotic_adapter/, and replaces an existing adapter atomically', async () => {
    const out = freshDir();
    const dir = path.join(out, 'symbiotic_adapter');
    await writeAdapter(dir, initialAdapter([1], 8));
    await writeAdapter(dir, trained());
    expect(readAdapter(out).layers).toEqual([0, 2, 3]);
  });

  it('refuses to write non-finite parameters', async () => {
    const a = trained();
    a.params[1].outputScale[3] = NaN;
    await expect(writeAdapter(freshDir(), a)).rejects.toThrow(/non-finite/);
  });
});

describe('clear errors', () => {
  async function written(mutate?: (dir: string) => void): Promise<string> {
    const dir = freshDir();
    await writeAdapter(dir, trained());
    mutate?.(dir);
    return dir;
  }
  const configOf = (dir: string) => path.join(dir, ADAPTER_CONFIG_FILE);
  const weightsOf = (dir: string) => path.join(dir, ADAPTER_WEIGHTS_FILE);
  function editConfig(dir: string, edit: (c: Record<string, unknown>) => void) {
    const c = JSON.parse(fs.readFileSync(configOf(dir), 'utf8'));
    edit(c);
    fs.writeFileSync(configOf(dir), JSON.stringify(c));
  }
  function rewriteWeights(dir: string, edit: (t: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>) => void) {
    const st = SafetensorsFile.open(weightsOf(dir));
    const t: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
    for (const name of st.names()) t[name] = { dtype: 'F32', shape: st.info(name).shape, data: st.readFloat32(name) };
    st.close();
    edit(t);
    writeSafetensors(weightsOf(dir), t);
  }

  it('missing directory / config', () => {
    const missing = path.join(tmpRoot, 'nope');
    expectError(() => readAdapter(missing), missing, /not found/);
    const empty = freshDir();
    fs.mkdirSync(empty);
    expectError(() => readAdapter(empty), configOf(empty), /not found/);
  });

  it('hidden_size that does not fit the model', async () => {
    const dir = await written();
    const other = { ...model, hiddenSize: 16 };
    expectError(() => readAdapter(dir, other), configOf(dir), /hidden_size 8 does not match the model's hidden size 16/);
  });

  it('layers outside the model', async () => {
    const dir = await written();
    expectError(() => readAdapter(dir, { ...model, numLayers: 3 }), configOf(dir), /layers 3 do not exist in the model \(3 layers/);
  });

  it('bad layer lists and hidden sizes in the config', async () => {
    const dir = await written((d) => editConfig(d, (c) => (c.layers = [0, 0, 1])));
    expectError(() => readAdapter(dir), configOf(dir), /lists layer 0 twice/);
    const dir2 = await written((d) => editConfig(d, (c) => delete c.layers));
    expectError(() => readAdapter(dir2), configOf(dir2), /'layers' must be a non-empty list/);
    const dir3 = await written((d) => editConfig(d, (c) => (c.hidden_size = '8')));
    expectError(() => readAdapter(dir3), configOf(dir3), /'hidden_size' must be a positive integer/);
    const dir4 = await written((d) => editConfig(d, (c) => (c.semantics = 'adapter-v2')));
    expectError(() => readAdapter(dir4), configOf(dir4), /unsupported adapter semantics/);
  });

  it('missing tensors', async () => {
    const dir = await written((d) => rewriteWeights(d, (t) => delete t['gate_scale.2']));
    expectError(() => readAdapter(dir), weightsOf(dir), /missing tensor 'gate_scale.2' \(adapted layer 3\)/);
    const dir2 = await written((d) => rewriteWeights(d, (t) => delete t['output_scale.0']));
    expectError(() => readAdapter(dir2), weightsOf(dir2), /missing tensor 'output_scale.0'/);
  });

  it('more tensors than listed layers, unknown tensors, wrong shapes', async () => {
    const dir = await written((d) => editConfig(d, (c) => (c.layers = [0, 2])));
    expectError(() => readAdapter(dir), weightsOf(dir), /'gate_bias.2' has no layer/);
    const dir2 = await written((d) => rewriteWeights(d, (t) => (t['lora_A'] = { dtype: 'F32', shape: [1], data: Float32Array.of(1) })));
    expectError(() => readAdapter(dir2), weightsOf(dir2), /unexpected tensor 'lora_A'/);
    const dir3 = await written((d) => rewriteWeights(d, (t) => (t['output_scale.1'] = { dtype: 'F32', shape: [4], data: new Float32Array(4) })));
    expectError(() => readAdapter(dir3), weightsOf(dir3), /'output_scale.1' has shape \[4\], expected \[8\]/);
    const dir4 = await written((d) => rewriteWeights(d, (t) => (t['mix_alpha.0'] = { dtype: 'F32', shape: [2], data: new Float32Array(2) })));
    expectError(() => readAdapter(dir4), weightsOf(dir4), /'mix_alpha.0' has shape \[2\], expected \[1\]/);
  });

  it('NaN / Inf parameters', async () => {
    const dir = await written((d) => rewriteWeights(d, (t) => (t['gate_bias.1'].data[0] = NaN)));
    expectError(() => readAdapter(dir), weightsOf(dir), /'gate_bias.1' \(adapted layer 2\) is NaN/);
    const dir2 = await written((d) => rewriteWeights(d, (t) => (t['output_scale.2'].data[5] = Infinity)));
    expectError(() => readAdapter(dir2), weightsOf(dir2), /'output_scale.2' .* non-finite value \(Infinity\) at 5/);
  });
});
