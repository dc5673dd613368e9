/**
 * Export of a trained adapter: `OUT/symbiotic_adapter/` (written atomically by `writeAdapter`:
 * ours in safetensors and the SYNAXIM scripts' `symbiotic_adapter.pt`) with an
 * `adapter_config.json` that records everything needed to know what was trained on what: the base model (id, directory, content hash), every training option, the corpus (source, hash,
 * token count), the best loss, the backend, the wall time and the tool version.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PROJECT_ROOT } from '../util/paths.ts';
import { ADAPTER_DIR_NAME, writeAdapter, type Adapter } from '../formats/adapter.ts';

export function toolVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export interface ExportProvenance {
  baseModel: { name: string; id: string | null; studentDir: string; contentHash: string; format: string; storage: string; numLayers: number };
  teacher: { dir: string; contentHash: string; same: boolean };
  training: Record<string, unknown>;
  corpus: { source: string; hash: string; documents: number; sequences: number; trainSequences: number; heldOutSequences: number; seqLen: number; tokens: number; trainTokens: number; sequencesHash: string };
  bestLoss: number | null;
  bestEpoch: number | null;
  heldOut: { before: Record<string, number>; after: Record<string, number> };
  backend: { name: string; detail: string; tfjs: string };
  wallTimeSec: number;
}

/** adapter_config.json fields beyond the tensor description (writeAdapter adds those). */
export function adapterConfigExtras(p: ExportProvenance): Record<string, unknown> {
  return {
    base_model: p.baseModel.id ?? p.baseModel.name,
    // what PEFT-style tooling reads, and the SYNAXIM scripts' n_layers (= the base model's layers)
    base_model_name_or_path: p.baseModel.id ?? p.baseModel.name,
    n_layers: p.baseModel.numLayers,
    base_model_name: p.baseModel.name,
    base_model_dir: p.baseModel.studentDir,
    base_model_content_hash: p.baseModel.contentHash,
    base_model_format: p.baseModel.format,
    base_model_storage: p.baseModel.storage,
    base_model_num_layers: p.baseModel.numLayers,
    teacher_dir: p.teacher.dir,
    teacher_content_hash: p.teacher.contentHash,
    teacher_is_student_weights: p.teacher.same,
    best_loss: p.bestLoss,
    best_epoch: p.bestEpoch,
    training: p.training,
    corpus: {
      source: p.corpus.source,
      hash: p.corpus.hash,
      documents: p.corpus.documents,
      sequences: p.corpus.sequences,
      train_sequences: p.corpus.trainSequences,
      held_out_sequences: p.corpus.heldOutSequences,
      seq_len: p.corpus.seqLen,
      token_count: p.corpus.tokens,
      train_token_count: p.corpus.trainTokens,
      sequences_hash: p.corpus.sequencesHash,
    },
    held_out_mse: p.heldOut,
    backend: p.backend.name,
    backend_detail: p.backend.detail,
    tfjs_version: p.backend.tfjs,
    wall_time_s: Math.round(p.wallTimeSec * 1000) / 1000,
    tool: 'synaxim',
    tool_version: toolVersion(),
    created: new Date().toISOString(),
  };
}

/**
 * Write OUT/symbiotic_adapter atomically — adapter_model.safetensors, the scripts'
 * symbiotic_adapter.pt and adapter_config.json with both sets of keys; returns its path.
 */
export async function exportAdapter(outDir: string, adapter: Adapter, p: ExportProvenance): Promise<string> {
  const dir = path.join(outDir, ADAPTER_DIR_NAME);
  await writeAdapter(dir, adapter, adapterConfigExtras(p), { torch: true });
  return dir;
}
