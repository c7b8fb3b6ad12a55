/* The stub backend: the vtable of backend.h with no model behind it.
 *
 * Its forward writes, for every logit row, zeros with a single 1 at token
 * (position + 1) mod V, so greedy decoding is deterministic, and it holds no
 * KV memory at all. It exists to measure what the engine itself costs per
 * step (scheduling, batch building, sampling, output processing) with the
 * forward pass taken out (bench/engine_overhead.c). It checks only what it
 * reads: row indices and positions. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/alloc.h"

typedef struct stub_backend {
    folo_backend base; /* first, so a folo_backend * is a stub_backend * */
    int vocab_size;
} stub_backend;

static int stub_forward(folo_backend *base, const folo_batch *batch, float *logits,
                        folo_error *err) {
    const stub_backend *b = (const stub_backend *)base;
    for (int r = 0; r < batch->n_logit_rows; r++) {
        int t = batch->logit_rows[r];
        if (t < 0 || t >= batch->n_tokens)
            return folo_fail(err, "batch: logit row %d is token %d of %d", r, t, batch->n_tokens);
        float *row = logits + (size_t)r * b->vocab_size; /* [V] */
        memset(row, 0, (size_t)b->vocab_size * sizeof(float));
        row[(batch->positions[t] + 1) % b->vocab_size] = 1.0f;
    }
    folo_batch_fill_argmax(batch, logits, b->vocab_size);
    return 0;
}

static int stub_copy_blocks(folo_backend *base, const folo_kv_copy *copies, int n_copies,
                            folo_error *err) {
    for (int i = 0; i < n_copies; i++)
        if (copies[i].src < 0 || copies[i].src >= base->kv_n_blocks || copies[i].dst < 0 ||
            copies[i].dst >= base->kv_n_blocks)
            return folo_fail(err, "copy_blocks: pair %d (%d -> %d) outside the pool of %d blocks",
                             i, copies[i].src, copies[i].dst, base->kv_n_blocks);
    return 0;
}

static void stub_destroy(folo_backend *base) { free(base); }

folo_backend *folo_backend_stub_create(const folo_config *config, const folo_backend_options *opt,
                                       folo_error *err) {
    if (opt->kv_n_blocks < 1) {
        folo_fail(err, "stub backend: kv_n_blocks must be at least 1 (got %d)", opt->kv_n_blocks);
        return NULL;
    }
    stub_backend *b = folo_calloc(1, sizeof *b);
    b->base.name = "stub";
    b->base.kv_block_size = opt->kv_block_size > 0 ? opt->kv_block_size : 16;
    b->base.kv_n_blocks = opt->kv_n_blocks;
    b->base.forward = stub_forward;
    b->base.copy_blocks = stub_copy_blocks;
    b->base.destroy = stub_destroy;
    b->vocab_size = config->vocab_size;
    return &b->base;
}
