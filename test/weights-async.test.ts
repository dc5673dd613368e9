/**
 * The prefill's weight loading: safetensors float tensors read asynchronously straight into a
 * (reused) float32 array and widened in place (BF16, F16), HfWeights.layerAsync, and the native
 * prefill's pipeline that reads layer l+1 into layer l-1's arrays while layer l runs — all equal
 * to the plain synchronous reads, value for value.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SafetensorsFile, bytesToFloat32, requireFiniteWeights, writeSafetensors, type StTensorToWrite } from '../src/formats/safetensors.ts';
import { HfWeights } from '../src/formats/hfModel.ts';
import { fixtureConfig } from '../src/formats/fixture.ts';
import type { ModelWeights } from '../src/formats/weights.ts';
import { nativePrefill } from '../src/native/model.ts';
import { SynaximError } from '../src/util/errors.ts';
import { pseudoRandom } from '../src/util/random.ts';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weights-async-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Values with a wide exponent range, negatives, zeros and subnormals (every bit pattern class but NaN/Inf). */
function values(n: number, seed: number): Float32Array {
  const v = pseudoRandom(n, seed);
  for (let i = 0; i < n; i++) v[i] = i % 7 === 0 ? 0 : i % 11 === 0 ? -1e-40 : v[i]! * 10 ** ((i % 9) - 4);
  return v;
}

describe('SafetensorsFile float reads straight into float32 memory (readFloat32Into, readFloat32, readFloat32Rows)', () => {
  const sizes = [0, 1, 2, 7, 1000, 1001];
  for (const dtype of ['BF16', 'F16', 'F32', 'F64'] as const) {
    it(`${dtype}: equal to decoding the raw bytes, into a fresh or a reused (dirty) array, odd and even lengths, rows`, async () => {
      const tensors: Record<string, StTensorToWrite> = {};
      sizes.forEach((n, i) => (tensors[`t${n}`] = { dtype, shape: [n], data: values(n, 10 + i) }));
      const file = path.join(dir, `${dtype}.safetensors`);
      writeSafetensors(file, tensors);
      const f = SafetensorsFile.open(file);
      try {
        for (const n of sizes) {
          const want = bytesToFloat32(f.readBytes(`t${n}`), dtype, 'reference');
          expect(Array.from(f.readFloat32(`t${n}`))).toEqual(Array.from(want));
          if (n > 2) expect(Array.from(f.readFloat32Rows(`t${n}`, 1, n - 2))).toEqual(Array.from(want.subarray(1, n - 1)));
          expect(Array.from(await f.readFloat32Into(`t${n}`, new Float32Array(n)))).toEqual(Array.from(want));
          const dirty = new Float32Array(n).fill(123.5);
          const got = await f.readFloat32Into(`t${n}`, dirty);
          expect(got).toBe(dirty);
          expect(Array.from(got)).toEqual(Array.from(want));
        }
        await expect(f.readFloat32Into('t7', new Float32Array(6))).rejects.toThrow(/destination has 6 values, the tensor 7/);
      } finally {
        f.close();
      }
    });
  }

  for (const dtype of ['BF16', 'F16', 'F32'] as const) {
    for (const bad of [NaN, Infinity, -Infinity]) {
      it(`${dtype}: a ${bad} weight is refused with the readers' one-line message (flat index)`, async () => {
        const data = values(1001, 3);
        data[613] = bad;
        const file = path.join(dir, `bad-${dtype}-${bad}.safetensors`);
        writeSafetensors(file, { w: { dtype, shape: [1001], data } });
        const f = SafetensorsFile.open(file);
        try {
          // readFloat32 itself does not judge (the readers check): the bad value comes back as is.
          const plain = f.readFloat32('w');
          expect(plain[613]).toBe(bad);
          let expected = '';
          try {
            requireFiniteWeights(plain, file, 'w');
          } catch (e) {
            expected = (e as Error).message;
          }
          expect(expected).toMatch(/flat index 613/);
          const err = await f.readFloat32Into('w', new Float32Array(1001)).catch((e: unknown) => e);
          expect(err).toBeInstanceOf(SynaximError);
          expect((err as Error).message).toBe(expected);
        } finally {
          f.close();
        }
      });
    }
  }
});

/** A tiny BF16 HF checkpoint (the tiny fixture's shape, random weights). */
function writeBf16Checkpoint(out: string): void {
  const cfg = { ...fixtureConfig('tiny'), torch_dtype: 'bfloat16' } as Record<string, number | string | boolean | string[]>;
  const D = cfg.hidden_size as number;
  const I = cfg.intermediate_size as number;
  const V = cfg.vocab_size as number;
  const hd = cfg.head_dim as number;
  const q = (cfg.num_attention_heads as number) * hd;
  const kv = (cfg.num_key_value_heads as number) * hd;
  const tensors: Record<string, StTensorToWrite> = {};
  let seed = 100;
  const put = (name: string, shape: number[], scale: number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = pseudoRandom(n, seed++);
    for (let i = 0; i < n; i++) data[i] = shape.length === 1 ? 1 + 0.1 * data[i]! : data[i]! * scale;
    tensors[name] = { dtype: 'BF16', shape, data };
  };
  put('model.embed_tokens.weight', [V, D], 1);
  put('model.norm.weight', [D], 1);
  for (let l = 0; l < (cfg.num_hidden_layers as number); l++) {
    const p = `model.layers.${l}.`;
    put(p + 'input_layernorm.weight', [D], 1);
    put(p + 'post_attention_layernorm.weight', [D], 1);
    put(p + 'self_attn.q_proj.weight', [q, D], 2 / Math.sqrt(D));
    put(p + 'self_attn.k_proj.weight', [kv, D], 2 / Math.sqrt(D));
    put(p + 'self_attn.v_proj.weight', [kv, D], 2 / Math.sqrt(D));
    put(p + 'self_attn.o_proj.weight', [D, q], 2 / Math.sqrt(q));
    put(p + 'mlp.gate_proj.weight', [I, D], 2 / Math.sqrt(D));
    put(p + 'mlp.up_proj.weight', [I, D], 2 / Math.sqrt(D));
    put(p + 'mlp.down_proj.weight', [D, I], 2 / Math.sqrt(I));
  }
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'config.json'), JSON.stringify(cfg));
  writeSafetensors(path.join(out, 'model.safetensors'), tensors);
}

describe('HfWeights.layerAsync and the prefill pipeline (BF16 checkpoint)', () => {
  let w: HfWeights;
  beforeAll(() => {
    const out = path.join(dir, 'bf16-model');
    writeBf16Checkpoint(out);
    w = new HfWeights(out);
  });
  afterAll(() => w.close());

  it('layerAsync equals layer(), fresh and into the arrays of another layer', async () => {
    let reuse = null;
    for (let l = 0; l < w.config.numLayers; l++) {
      const want = w.layer(l);
      const got = await w.layerAsync(l, reuse);
      if (reuse) expect(got.q.data).toBe(reuse.q.data); // the arrays were reused, not reallocated
      for (const k of ['inputNorm', 'postNorm'] as const) expect(Array.from(got[k])).toEqual(Array.from(want[k]));
      for (const k of ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const) {
        expect([got[k].rows, got[k].cols]).toEqual([want[k].rows, want[k].cols]);
        expect(Array.from(got[k].data)).toEqual(Array.from(want[k].data));
      }
      reuse = got;
    }
  });

  it('nativePrefill through the pipelined reads equals it through plain synchronous reads (bit for bit)', async () => {
    // The same weights behind an object that is not an HfWeights: prefill then loads layer by layer, synchronously.
    const plain: ModelWeights = {
      config: w.config,
      dir: w.dir,
      format: w.format,
      storage: w.storage,
      embed: (ids) => w.embed(ids),
      layer: (i) => w.layer(i),
      lmHeadRows: (s, n) => w.lmHeadRows(s, n),
      finalNorm: () => w.finalNorm(),
      close: () => {},
    };
    const seqs = [
      [1, 5, 9, 200, 7, 3, 11, 12],
      [1, 44, 45, 46, 47, 48, 49, 50],
      [1, 300, 2],
    ];
    const a = await nativePrefill(w, seqs, { hidden: true });
    const b = await nativePrefill(plain, seqs, { hidden: true });
    seqs.forEach((_, s) => {
      expect(Array.from(a.logits[s]!)).toEqual(Array.from(b.logits[s]!));
      a.hidden![s]!.forEach((h, l) => expect(Array.from(h), `hidden ${l} of ${s}`).toEqual(Array.from(b.hidden![s]![l]!)));
    });
  });
});
