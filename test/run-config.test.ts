/**
 * The frozen distill run config (src/distill/runConfig.ts): every default in one place, and the
 * resume fingerprint and exported `training` block byte-for-byte what checkpoints and
 * adapter_config.json have always held (a checkpoint of an earlier version must still resume).
 * And the one interrupt handler (src/util/interrupt.ts) of distill, eval and sweep.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { buildRunConfig, DISTILL_DEFAULTS, distillPhases, resumeFingerprint, trainingBlock, trainOptions } from '../src/distill/runConfig.ts';
import { INTERRUPTED_EXIT_CODE, watchInterrupts } from '../src/util/interrupt.ts';

const HASHES = { student: 'sha256:s', teacher: 'sha256:t', sequences: 'q' };

describe('distill run config', () => {
  it('applies every default once and is frozen', () => {
    const rc = buildRunConfig({ model: 'm', layers: [3, 1, 3], out: 'o' }, 5);
    expect(Object.isFrozen(rc)).toBe(true);
    expect(Object.isFrozen(rc.layers)).toBe(true);
    expect(rc.layers).toEqual([1, 3]);
    expect(rc).toMatchObject({ seqLen: 64, epochs: 30, totalEpochs: 30, lr: 1e-2, loss: 'mse', patience: 5, student: 'adapter-v1', window: null, weightDecay: 0.01, gradClip: 1, batchSize: 8, input: 'student', mlpGrad: 'exact', rest: 'engine', seed: 0, heldOutFraction: 0.1, chunkSize: null, maxSeqs: null, cache: true, withKl: false });
    expect(rc.seqLen).toBe(DISTILL_DEFAULTS.seqLen);
    // kl: its own epochs and lr; mse+kl: the KL phase's defaults
    expect(buildRunConfig({ model: 'm', layers: [0], out: 'o', loss: 'kl' }, 5)).toMatchObject({ epochs: 10, lr: 0.1, withKl: true });
    const both = buildRunConfig({ model: 'm', layers: [0], out: 'o', loss: 'mse+kl', epochs: 2 }, 5);
    expect(both.phases).toEqual([{ loss: 'mse', epochs: 2, lr: 0.01 }, { loss: 'kl', epochs: 5, lr: 0.1 }]);
    expect(both.totalEpochs).toBe(7);
    expect(distillPhases({ loss: 'mse+kl', epochs: 2, lr: 0.01 })).toEqual(both.phases);
    expect(trainOptions(both)).toMatchObject({ layers: [0], epochs: 7, lr: 0.01, patience: 5, chunkSize: undefined, window: null });
  });

  it('refuses what a user can get wrong, naming the flag', () => {
    const base = { model: 'm', layers: [0], out: 'o' };
    expect(() => buildRunConfig({ ...base, layers: [7] }, 5)).toThrow(/--layers: 7 out of range \(the model has 5 layers: 0\.\.4\)/);
    expect(() => buildRunConfig({ ...base, epochs: -1 }, 5)).toThrow(/--epochs must be a non-negative integer/);
    expect(() => buildRunConfig({ ...base, klLr: 0.1 }, 5)).toThrow(/--kl-epochs and --kl-lr set the KL phase of --loss mse\+kl/);
    expect(() => buildRunConfig({ ...base, heldOutFraction: 1 }, 5)).toThrow(/--held-out must be a fraction in \[0, 1\)/);
    expect(() => buildRunConfig({ ...base, workers: 2 }, 5)).toThrow(/--workers > 1 needs --input teacher/);
  });

  it('the resume fingerprint is the one checkpoints have always stored (keys and order)', () => {
    // As written by the checkpoint of `distill --layers 0-1 --seq-len 32 --epochs 1` before the run config existed.
    const stored =
      '{"student_hash":"sha256:s","teacher_hash":"sha256:t","sequences_hash":"q","seq_len":32,"layers":[0,1],"epochs":1,"lr":0.01,"weight_decay":0.01,"grad_clip":1,"batch_size":8,"input":"student","mlp_grad":"exact","rest":"engine","seed":0,"chunk_size":null,"held_out_fraction":0.1,"loss":"mse","phases":[{"loss":"mse","epochs":1,"lr":0.01}],"patience":5,"student":"adapter-v1","window":null}';
    const rc = buildRunConfig({ model: 'm', layers: [1, 0], out: 'o', seqLen: 32, epochs: 1 }, 5);
    expect(JSON.stringify(resumeFingerprint(rc, HASHES))).toBe(stored);
    // mse+kl: epochs is the total over the phases
    const kl = buildRunConfig({ model: 'm', layers: [1, 3], out: 'o', seqLen: 32, epochs: 1, loss: 'mse+kl', klEpochs: 1 }, 5);
    expect(resumeFingerprint(kl, HASHES)).toMatchObject({ epochs: 2, loss: 'mse+kl', phases: [{ loss: 'mse', epochs: 1, lr: 0.01 }, { loss: 'kl', epochs: 1, lr: 0.1 }] });
  });

  it('the training block is the one adapter_config.json has always held (keys and order)', () => {
    // As exported by `distill --layers 2 --seq-len 32 --max-seqs 16 --epochs 2 --student adapter-window --window 4
    // --input teacher --held-out 0.2 --chunk-size 8 --batch-size 4` before the run config existed.
    const exported =
      '{"student":"adapter-window","window":4,"loss":"mse","objective":"2 epochs mean over trained layers of MSE(student layer output, teacher hidden state) at lr 0.01","phases":[{"loss":"mse","epochs":2,"lr":0.01}],"patience":5,"best_epoch_selected_by":"held-out MSE","stopped_early_after_epoch":[],"phase_bests":[],"epochs":2,"lr":0.01,"optimizer":"AdamW","weight_decay":0.01,"betas":[0.9,0.999],"eps":1e-8,"schedule":"cosine","grad_clip":1,"batch_size":4,"steps":8,"input":"teacher","mlp_grad":"exact","rest":"engine","seed":0,"seq_len":32,"max_seqs":16,"held_out_fraction":0.2,"chunk_size":8,"gate_form":"chunked-parallel","resumed":false}';
    const rc = buildRunConfig(
      { model: 'm', layers: [2], out: 'o', seqLen: 32, maxSeqs: 16, epochs: 2, student: 'adapter-window', window: 4, input: 'teacher', heldOutFraction: 0.2, chunkSize: 8, batchSize: 4 },
      5,
    );
    const block = trainingBlock(rc, { selectedBy: 'held-out MSE', state: { stoppedEarly: [], phaseBests: [], globalStep: 8 }, resumed: false });
    expect(JSON.stringify(block)).toBe(exported);
    // adapter-v1: no window key at all
    expect('window' in trainingBlock(buildRunConfig({ model: 'm', layers: [0], out: 'o' }, 5), { selectedBy: 'x', state: { stoppedEarly: [], phaseBests: [], globalStep: 0 }, resumed: true })).toBe(false);
  });
});

describe('interrupt handler', () => {
  afterEach(() => vi.restoreAllMocks());

  it('first signal raises the flag and says so; a second exits 130; stop() removes the handlers', () => {
    const writes: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => (writes.push(String(s)), true));
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const before = process.listenerCount('SIGINT');
    const w = watchInterrupts({ first: 'finishing\n', second: 'aborting\n' });
    expect(process.listenerCount('SIGINT')).toBe(before + 1);
    expect(process.listenerCount('SIGTERM')).toBeGreaterThan(0);
    expect(w.interrupted()).toBe(false);
    process.emit('SIGTERM');
    expect(w.interrupted()).toBe(true);
    expect(writes).toEqual(['finishing\n']);
    expect(exit).not.toHaveBeenCalled();
    process.emit('SIGINT');
    expect(writes).toEqual(['finishing\n', 'aborting\n']);
    expect(exit).toHaveBeenCalledWith(INTERRUPTED_EXIT_CODE);
    w.stop();
    expect(process.listenerCount('SIGINT')).toBe(before);
  });
});
