/**
 * Weights as graph inputs (GraphBuilder `weightInputs`) and the SessionCache that lets one session
 * serve every layer of a kind: two layers' graphs are the same bytes, the session is created once,
 * and running it with each layer's weights fed equals that layer's own weight-bound session.
 */
import { describe, expect, it } from 'vitest';
import { benchConfig, SyntheticWeights, withShape } from '../bench/synthetic.ts';
import { initialState, sharedFeeds } from '../src/native/common.ts';
import { buildLayerGraph, softmaxPart, type LayerGraph } from '../src/native/layerGraph.ts';
import { loadNativeLayer } from '../src/native/layerWeights.ts';
import { GraphBuilder } from '../src/runtime/ort/graph.ts';
import { createSession, f32, ort, releaseSession, runSession, SessionCache, type OrtSession } from '../src/runtime/ort/session.ts';

const config = withShape({ ...benchConfig('small'), hiddenSize: 64, intermediateSize: 96, numHeads: 4, numKvHeads: 2, headDim: 16 }, { numLayers: 3, vocabSize: 50 });
const weights = new SyntheticWeights(config);
const B = 2;
const T = 5;
const h = f32(Float32Array.from({ length: B * T * config.hiddenSize }, (_, i) => Math.sin(0.37 * i)), [B, T, config.hiddenSize]);

async function run(session: OrtSession, g: LayerGraph): Promise<Float32Array> {
  const feeds: Record<string, ort.Tensor> = { ...sharedFeeds(g, config, [0, 1, 2, 3, 4]), h0: h };
  for (const w of g.weights ?? []) feeds[w.name] = f32(w.data as Float32Array, w.dims);
  for (const st of g.states) feeds[st.input] = initialState(st, B);
  return (await runSession(session, feeds, 'test')).h0_out!.data as Float32Array;
}

describe('weights as graph inputs', () => {
  it('GraphBuilder.weight: an initializer by default, an input fed from the host array with weightInputs', () => {
    const data = new Float32Array([1, 2, 3, 4, 5, 6]);
    const plain = new GraphBuilder('p');
    plain.weight('w', data, [2, 3]);
    expect(plain.weightFeeds).toEqual([]);
    expect(plain.initializerBytes).toBe(24);
    const fed = new GraphBuilder('f', { weightInputs: true });
    fed.weight('w', data, [2, 3]);
    expect(fed.initializerBytes).toBe(0);
    expect(fed.weightFeeds).toHaveLength(1);
    expect(fed.weightFeeds[0]!.data).toBe(data); // the host array itself, no copy
    expect(() => fed.weight('v', data, [4])).toThrow(/6 values for dims \[4\]/);
  });

  it('two layers build the same bytes; one cached session runs both and equals each layer bound as initializers', async () => {
    const cache = new SessionCache(2);
    try {
      const graphs = [0, 1, 2].map((l) => buildLayerGraph('kind', config, 'prefill', loadNativeLayer(weights, l), [softmaxPart], 0, { weightInputs: true }));
      expect(Buffer.from(graphs[1]!.bytes).equals(Buffer.from(graphs[0]!.bytes))).toBe(true);
      const sessions = await Promise.all(graphs.map((g) => cache.get(g.bytes, 'test', { noPrepack: true })));
      expect(sessions[1]).toBe(sessions[0]);
      expect(sessions[2]).toBe(sessions[0]);
      for (let l = 0; l < 3; l++) {
        const fed = await run(sessions[l]!, graphs[l]!);
        const bound = buildLayerGraph(`layer ${l}`, config, 'prefill', loadNativeLayer(weights, l), [softmaxPart], l);
        expect(bound.weights).toBeUndefined();
        const s = await createSession(bound.bytes, 'test', { noPrepack: true });
        try {
          const want = await run(s, bound);
          let maxDiff = 0;
          let maxAbs = 0;
          for (let i = 0; i < want.length; i++) {
            maxDiff = Math.max(maxDiff, Math.abs(fed[i]! - want[i]!));
            maxAbs = Math.max(maxAbs, Math.abs(want[i]!));
          }
          expect(maxAbs).toBeGreaterThan(0.1);
          expect(maxDiff / maxAbs, `layer ${l}`).toBeLessThan(1e-6);
        } finally {
          await releaseSession(s);
        }
      }
    } finally {
      await cache.releaseAll();
    }
  });

  it('SessionCache: other bytes or options give another session; the least recently used goes beyond the limit', async () => {
    const model = (scale: number) => {
      const b = new GraphBuilder('m');
      b.output(b.node('Mul', [b.input('x', 'float32', [2]), b.constF([scale], [1])]), 'float32', [2], 'y');
      return b.toBytes();
    };
    const x = f32(new Float32Array([1, 2]), [2]);
    const cache = new SessionCache(2);
    try {
      const a = await cache.get(model(2), 'a');
      expect(await cache.get(model(2), 'a again')).toBe(a);
      const b = await cache.get(model(3), 'b');
      expect(b).not.toBe(a);
      expect(Array.from((await runSession(b, { x }, 'b')).y!.data as Float32Array)).toEqual([3, 6]);
      const a1 = await cache.get(model(2), 'a, one thread', { threads: 1 });
      expect(a1).not.toBe(a); // a is now the least recently used of three: released
      expect(await cache.get(model(2), 'a, one thread', { threads: 1 })).toBe(a1);
      expect(await cache.get(model(3), 'b again')).toBe(b);
      expect(await cache.get(model(2), 'a once more')).not.toBe(a);
    } finally {
      await cache.releaseAll();
    }
  });
});
