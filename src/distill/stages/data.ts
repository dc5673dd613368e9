/** Distill stage 1: the corpus, tokenized into sequences and split into train and held out. */
import { checkSequences, defaultCorpus, readCorpus, splitHeldOut, tokenizeCorpus, type Corpus, type TokenizedCorpus } from '../../data/corpus.ts';
import { fail } from '../../util/errors.ts';
import { loadTokenizer } from '../../formats/tokenizer.ts';
import type { RunConfig } from '../runConfig.ts';
import type { DistillModels } from './models.ts';

export interface DistillData {
  corpus: Corpus;
  tok: TokenizedCorpus;
  /** Indices into tok.sequences. */
  train: number[];
  heldOut: number[];
}

export async function distillData(rc: RunConfig, m: DistillModels, log: (msg: string) => void): Promise<DistillData> {
  const c = m.student.config;
  if (!m.resolved.tokenizerDir) fail(m.resolved.studentDir, 'this model has no tokenizer.json (needed to tokenize the corpus)');
  const tokenizer = await loadTokenizer(m.resolved.tokenizerDir, { bosTokenId: c.bosTokenId, eosTokenIds: c.eosTokenIds, modelVocabSize: c.vocabSize });
  const corpus: Corpus = rc.corpus ? readCorpus(rc.corpus) : defaultCorpus();
  if (rc.seqLen > c.maxPositionEmbeddings) fail(null, `--seq-len ${rc.seqLen} exceeds the model's context (${c.maxPositionEmbeddings})`);
  const tok = tokenizeCorpus(corpus.documents, tokenizer, { seqLen: rc.seqLen, maxSeqs: rc.maxSeqs, addBos: true, source: corpus.source });
  checkSequences(tok.sequences, c.vocabSize, c.maxPositionEmbeddings, corpus.source);
  const all = tok.sequences.map((_, i) => i);
  const { train, heldOut } = splitHeldOut(all, { fraction: rc.heldOutFraction, seed: 0 });
  if (train.length === 0) fail(corpus.source, 'no training sequences left after the held-out split; add documents or lower --seq-len');
  log(`corpus ${corpus.source}: ${corpus.documents.length} documents -> ${tok.sequences.length} sequences × ${rc.seqLen} tokens (${tok.dropped} too short); ${train.length} train, ${heldOut.length} held out`);
  return { corpus, tok, train, heldOut };
}
