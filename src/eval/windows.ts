/** The eval's first stage: a suite's corpora tokenized and cut into windows, then into batches. */
import type { ResolvedModel } from '../data/registry.ts';
import { checkSequences, encodePrefix, sha256Hex, type Corpus } from '../data/corpus.ts';
import { buildWindows, docTokensNeeded, readSuiteCorpora, type EvalWindow, type Suite } from '../data/suite.ts';
import type { ModelConfig } from '../formats/config.ts';
import { loadTokenizer } from '../formats/tokenizer.ts';
import { fail } from '../util/errors.ts';

/** Tokenize a suite's corpora and cut them into windows. */
export async function prepareWindows(
  suite: Suite,
  resolved: ResolvedModel,
  config: ModelConfig,
): Promise<{ windows: EvalWindow[]; corpora: Corpus[]; documents: number; tokenizerFile: string }> {
  if (!resolved.tokenizerDir) {
    fail(resolved.studentDir, 'this model has no tokenizer.json (neither beside the teacher nor in the .symb tokenizer/ directory); evaluation needs one to read the corpus');
  }
  if (suite.context > config.maxPositionEmbeddings) {
    const flags = suite.source === 'flags';
    fail(flags ? null : suite.source, `${flags ? '--' : ''}context ${suite.context} is longer than the model's max_position_embeddings (${config.maxPositionEmbeddings})`);
  }
  const tokenizer = await loadTokenizer(resolved.tokenizerDir, { bosTokenId: config.bosTokenId, eosTokenIds: config.eosTokenIds, modelVocabSize: config.vocabSize });
  const corpora = readSuiteCorpora(suite);
  const bos = tokenizer.bosId ?? config.bosTokenId;
  const docs: number[][] = [];
  // Tokenize lazily: with one window per document and a cap, stop once enough documents are in hand.
  const lazy = suite.stride === null && !suite.concatenate;
  let nonEmpty = 0;
  let scoredSoFar = 0;
  const enough = () =>
    lazy && ((suite.maxSeqs !== null && nonEmpty >= suite.maxSeqs) || (suite.tokenBudget !== null && scoredSoFar >= suite.tokenBudget));
  const perDoc = docTokensNeeded(suite);
  outer: for (const c of corpora) {
    for (const text of c.documents) {
      if (enough()) break outer;
      const ids = encodePrefix(tokenizer, text, perDoc); // a long document: only the tokens its windows use
      docs.push(ids);
      const withBos = ids.length + (bos === null ? 0 : 1);
      if (withBos >= 2) nonEmpty++;
      scoredSoFar += Math.max(0, Math.min(withBos, suite.context) - 1);
    }
  }
  const windows = buildWindows(docs, { bos, context: suite.context, stride: suite.stride, maxSeqs: suite.maxSeqs, tokenBudget: suite.tokenBudget });
  if (windows.length === 0) fail(corpora[0]?.source ?? null, 'no document yields a token to score');
  checkSequences(
    windows.map((w) => Int32Array.from(w.ids)),
    config.vocabSize,
    config.maxPositionEmbeddings,
    tokenizer.file,
  );
  return { windows, corpora, documents: new Set(windows.map((w) => w.doc)).size, tokenizerFile: tokenizer.file };
}

/** Hash of the windows the models saw (ids and scored ranges): equal hashes = same tokens. */
export function windowsHash(windows: EvalWindow[]): string {
  const parts = windows.map((w) => `${w.firstScored}:${w.ids.join(',')}`);
  return `sha256:${sha256Hex(parts.join('\n'))}`;
}

/** Split windows into batches of at most `maxTokens` tokens (at least one window each). */
export function batchWindows(windows: EvalWindow[], maxTokens: number): EvalWindow[][] {
  const batches: EvalWindow[][] = [];
  let cur: EvalWindow[] = [];
  let tokens = 0;
  for (const w of windows) {
    if (cur.length > 0 && tokens + w.ids.length > maxTokens) {
      batches.push(cur);
      cur = [];
      tokens = 0;
    }
    cur.push(w);
    tokens += w.ids.length;
  }
  if (cur.length > 0) batches.push(cur);
  return batches;
}
