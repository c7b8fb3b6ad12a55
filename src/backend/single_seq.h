/* Batches for one sequence over a contiguous block table (blocks 0, 1, 2,
 * ...): how single-request tools (`folo run`, `folo logits`) drive a backend
 * directly, without the engine's scheduler. Each step appends n_ids tokens
 * after the ones already cached and asks for the logits of the last token
 * (or of every token). */
#ifndef FOLO_BACKEND_SINGLE_SEQ_H
#define FOLO_BACKEND_SINGLE_SEQ_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"

typedef struct folo_single_seq {
    int capacity;             /* tokens the sequence may hold */
    int n_cached;             /* tokens already written to the KV cache */
    int32_t *positions;       /* [capacity] */
    int32_t *slots;           /* [capacity] */
    int32_t *logit_rows;      /* [capacity] */
    int32_t *block_table;     /* [max_blocks] = 0, 1, 2, ... */
    int max_blocks;
    int32_t seq_starts[2];
    int32_t seq_len;
    folo_batch batch;
} folo_single_seq;

/* Blocks needed for `capacity` tokens at `block_size`. */
int folo_single_seq_blocks(int capacity, int block_size);
void folo_single_seq_init(folo_single_seq *s, int capacity, int block_size);
void folo_single_seq_free(folo_single_seq *s);
/* The batch that appends ids[0..n_ids) (n_cached + n_ids <= capacity);
 * logits for every new token when all_logits, else for the last one. The
 * caller runs it, then calls folo_single_seq_commit. */
const folo_batch *folo_single_seq_step(folo_single_seq *s, const int32_t *ids, int n_ids,
                                       bool all_logits);
void folo_single_seq_commit(folo_single_seq *s);

#endif
