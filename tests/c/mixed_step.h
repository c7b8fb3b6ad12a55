/* A hand-built engine-like step for the backend tests: several sequences'
 * tokens (prefill chunks and decodes) in one flat batch over a shared KV
 * pool, every token a logit row, as the engine's model runner lays it out
 * (backend/backend.h). test_cpu_forward.c and tests/gpu/test_cuda_backend.c
 * check that such a step gives each sequence what it gets alone. */
#ifndef FOLO_TESTS_MIXED_STEP_H
#define FOLO_TESTS_MIXED_STEP_H

#include <stdint.h>

#define MIXED_STEP_MAX_TOKENS 64
#define MIXED_STEP_MAX_SEQS 8

typedef struct mixed_step {
    int n_tokens;
    int32_t ids[MIXED_STEP_MAX_TOKENS], positions[MIXED_STEP_MAX_TOKENS];
    int32_t slots[MIXED_STEP_MAX_TOKENS], logit_rows[MIXED_STEP_MAX_TOKENS];
    int n_seqs;
    int32_t seq_starts[MIXED_STEP_MAX_SEQS + 1], seq_lens[MIXED_STEP_MAX_SEQS];
    int32_t seq_index[MIXED_STEP_MAX_SEQS]; /* which sequence each batch entry is */
} mixed_step;

/* Appends tokens [from, to) of sequence s, whose blocks are row s of
 * tables [*, max_blocks], to the step. */
static inline void step_add(mixed_step *st, int s, const int32_t *ids, int from, int to,
                            const int32_t *tables, int max_blocks, int block_size) {
    if (st->n_seqs == 0) st->seq_starts[0] = 0;
    for (int p = from; p < to; p++) {
        int t = st->n_tokens++;
        st->ids[t] = ids[p];
        st->positions[t] = p;
        st->slots[t] = tables[s * max_blocks + p / block_size] * block_size + p % block_size;
        st->logit_rows[t] = t;
    }
    st->seq_index[st->n_seqs] = s;
    st->seq_lens[st->n_seqs] = to;
    st->seq_starts[++st->n_seqs] = st->n_tokens;
}

#endif
