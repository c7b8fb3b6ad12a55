#include "backend/single_seq.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

int folo_single_seq_blocks(int capacity, int block_size) {
    return (capacity + block_size - 1) / block_size;
}

void folo_single_seq_init(folo_single_seq *s, int capacity, int block_size) {
    memset(s, 0, sizeof *s);
    s->capacity = capacity;
    s->max_blocks = folo_single_seq_blocks(capacity, block_size);
    s->positions = folo_calloc((size_t)capacity, sizeof(int32_t));
    s->slots = folo_calloc((size_t)capacity, sizeof(int32_t));
    s->logit_rows = folo_calloc((size_t)capacity, sizeof(int32_t));
    s->block_table = folo_calloc((size_t)s->max_blocks, sizeof(int32_t));
    for (int b = 0; b < s->max_blocks; b++) s->block_table[b] = b;
    /* Block b holds positions [b*block_size, (b+1)*block_size), so with the
     * identity table a token's slot is its position. */
    for (int p = 0; p < capacity; p++) s->positions[p] = s->slots[p] = p;
}

void folo_single_seq_free(folo_single_seq *s) {
    free(s->positions);
    free(s->slots);
    free(s->logit_rows);
    free(s->block_table);
    memset(s, 0, sizeof *s);
}

const folo_batch *folo_single_seq_step(folo_single_seq *s, const int32_t *ids, int n_ids,
                                       bool all_logits) {
    int start = s->n_cached;
    s->seq_starts[0] = 0;
    s->seq_starts[1] = n_ids;
    s->seq_len = start + n_ids;
    int n_rows = all_logits ? n_ids : 1;
    for (int i = 0; i < n_rows; i++) s->logit_rows[i] = all_logits ? i : n_ids - 1;
    s->batch = (folo_batch){
        .n_tokens = n_ids,
        .token_ids = ids,
        .positions = s->positions + start,
        .slot_mapping = s->slots + start,
        .n_seqs = 1,
        .seq_starts = s->seq_starts,
        .seq_lens = &s->seq_len,
        .block_tables = s->block_table,
        .max_blocks_per_seq = s->max_blocks,
        .n_logit_rows = n_rows,
        .logit_rows = s->logit_rows,
    };
    return &s->batch;
}

void folo_single_seq_commit(folo_single_seq *s) { s->n_cached = s->seq_len; }
