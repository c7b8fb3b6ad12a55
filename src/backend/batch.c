/* Validation of a folo_batch against a backend's model and KV pool, shared
 * by every backend: a batch is checked before any kernel reads it, so a bad
 * batch is an error naming the offending field, never an out-of-bounds
 * access. */
#include <stdint.h>

#include "backend/backend.h"
#include "sample/sampler.h"

int folo_batch_validate(const folo_batch *batch, int vocab_size, int kv_block_size,
                        int kv_n_blocks, const float *logits, folo_error *err) {
    int bs = kv_block_size;
    if (batch->n_tokens < 1 || batch->n_seqs < 1 || batch->n_seqs > batch->n_tokens)
        return folo_fail(err, "batch: %d tokens in %d sequences (need 1 <= sequences <= tokens)",
                         batch->n_tokens, batch->n_seqs);
    if (!batch->token_ids || !batch->positions || !batch->slot_mapping || !batch->seq_starts ||
        !batch->seq_lens || !batch->block_tables)
        return folo_fail(err,
                         "batch: missing token, position, slot, sequence or block-table array");
    if (batch->max_blocks_per_seq < 1)
        return folo_fail(err, "batch: max_blocks_per_seq is %d", batch->max_blocks_per_seq);
    if (batch->n_logit_rows < 0 || batch->n_logit_rows > batch->n_tokens ||
        (batch->n_logit_rows > 0 && (!batch->logit_rows || !logits)))
        return folo_fail(err, "batch: %d logit rows for %d tokens (or no rows/logits buffer)",
                         batch->n_logit_rows, batch->n_tokens);
    if (batch->seq_starts[0] != 0 || batch->seq_starts[batch->n_seqs] != batch->n_tokens)
        return folo_fail(err, "batch: seq_starts must run from 0 to n_tokens (%d)",
                         batch->n_tokens);
    for (int seq = 0; seq < batch->n_seqs; seq++) {
        int start = batch->seq_starts[seq], end = batch->seq_starts[seq + 1];
        if (end <= start || end > batch->n_tokens)
            return folo_fail(err, "batch: sequence %d spans tokens %d..%d of %d", seq, start, end,
                             batch->n_tokens);
        int len = batch->seq_lens[seq];
        if (len < 1 || (int64_t)len > (int64_t)batch->max_blocks_per_seq * bs)
            return folo_fail(err, "batch: sequence %d length %d outside [1, %lld]", seq, len,
                             (long long)batch->max_blocks_per_seq * bs);
        const int32_t *table = batch->block_tables + (size_t)seq * batch->max_blocks_per_seq;
        for (int blk = 0; blk < (len + bs - 1) / bs; blk++)
            if (table[blk] < 0 || table[blk] >= kv_n_blocks)
                return folo_fail(
                    err, "batch: sequence %d block table entry %d is %d (pool has %d blocks)", seq,
                    blk, table[blk], kv_n_blocks);
        for (int t = start; t < end; t++) {
            int id = batch->token_ids[t], pos = batch->positions[t];
            if (id < 0 || id >= vocab_size)
                return folo_fail(err, "batch: token %d id %d outside the vocabulary [0, %d)", t, id,
                                 vocab_size);
            if (pos < 0 || pos >= len)
                return folo_fail(err,
                                 "batch: token %d position %d outside its sequence's length %d", t,
                                 pos, len);
            int32_t expected = table[pos / bs] * bs + pos % bs;
            if (batch->slot_mapping[t] != expected)
                return folo_fail(err,
                                 "batch: token %d slot %d does not match its block table (slot %d)",
                                 t, batch->slot_mapping[t], expected);
        }
    }
    for (int r = 0; r < batch->n_logit_rows; r++)
        if (batch->logit_rows[r] < 0 || batch->logit_rows[r] >= batch->n_tokens)
            return folo_fail(err, "batch: logit row %d is token %d of %d", r, batch->logit_rows[r],
                             batch->n_tokens);
    if (batch->argmax_only && !batch->argmax)
        return folo_fail(err, "batch: argmax_only is set but there is no argmax array");
    return 0;
}

void folo_batch_fill_argmax(const folo_batch *batch, const float *logits, int vocab_size) {
    if (!batch->argmax_only) return;
    for (int r = 0; r < batch->n_logit_rows; r++)
        if (batch->argmax_only[r])
            batch->argmax[r] = folo_argmax(logits + (size_t)r * vocab_size, vocab_size);
}
