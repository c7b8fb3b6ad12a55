/* The backend interface: what the engine asks of a device, and nothing more.
 *
 * A backend owns the weights in its preferred form and the paged KV cache
 * (n_blocks blocks of block_size token slots per layer). It sees a flat
 * batch of tokens with per-sequence metadata, never a request: decodes and
 * prefill chunks of several sequences share one forward. For every token it
 * writes K and V to the token's slot (slot_mapping), then attends over the
 * sequence's context through its block table; it returns logits only for the
 * rows the batch asks for. Backends: cpu (always), cuda (when built). */
#ifndef FOLO_BACKEND_BACKEND_H
#define FOLO_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "folo.h"
#include "kv/kv_cache.h"
#include "model/model.h"

typedef struct folo_batch {
    int n_tokens;                  /* tokens in this step, all sequences */
    const int32_t *token_ids;      /* [n_tokens] */
    const int32_t *positions;      /* [n_tokens] position of each token in its sequence */
    const int32_t *slot_mapping;   /* [n_tokens] KV slot = block * block_size + offset */
    int n_seqs;
    const int32_t *seq_starts;     /* [n_seqs + 1] offsets of each sequence's tokens */
    const int32_t *seq_lens;       /* [n_seqs] context length after this step (cached + new) */
    const int32_t *block_tables;   /* [n_seqs, max_blocks_per_seq] block ids, row-major */
    int max_blocks_per_seq;
    int n_logit_rows;              /* rows of logits wanted */
    const int32_t *logit_rows;     /* [n_logit_rows] indices into the flat tokens */
    /* Rows whose sampler needs only the argmax (greedy, no penalties, no
     * logprobs): when argmax_only is not NULL, each row r with
     * argmax_only[r] set gets argmax[r] = folo_argmax of its logits, and its
     * logits may be left unwritten, so a GPU backend copies back 4 bytes
     * instead of a row of V floats. NULL: every row's logits, no argmax. */
    const uint8_t *argmax_only;    /* [n_logit_rows] or NULL */
    int32_t *argmax;               /* [n_logit_rows] when argmax_only is set */
} folo_batch;

typedef struct folo_backend_options {
    int n_threads;                 /* <= 0: all online CPUs */
    int kv_block_size;             /* tokens per block (default 16) */
    int kv_n_blocks;               /* blocks in the pool */
    int max_batch_tokens;          /* largest batch expected (sizes the scratch); <= 0: a default */
    bool naive_attention;          /* materialize each head's score matrix (the seeds' M1
                                      baseline; cpu only, cuda refuses it) */
    size_t naive_attention_bytes;  /* the largest score matrix it may hold per head; a batch
                                      needing more fails naming both */
    bool weights_in_place;         /* cpu: the matmuls read the model's tensors where they
                                      lie (its file mapping, or tables the caller swaps)
                                      instead of the backend's copy in huge pages */
    folo_compute_dtype dtype;      /* what bf16 weights' matmuls multiply: cpu auto and
                                      float32: f32 activations; bfloat16: rounded to bf16,
                                      as cuda always does (float32 there is refused) */
    bool eager;                    /* cuda: launch every kernel of every step, no CUDA
                                      graphs (vLLM's --enforce-eager) */
    int max_seqs;                  /* cuda: decode graphs for batches up to this many
                                      sequences are captured at creation (0: none) */
    double gpu_memory_utilization; /* cuda with kv_n_blocks 0: the KV pool takes what this
                                      share of the device's memory leaves once the
                                      weights and the activations are in place */
} folo_backend_options;

typedef struct folo_backend folo_backend;
struct folo_backend {
    const char *name;              /* "cpu", "cuda" */
    int kv_block_size;
    int kv_n_blocks;
    size_t kv_bytes;               /* bytes of the KV pool */
    size_t scratch_bytes;          /* bytes of activation buffers (their peak) */
    size_t weight_copy_bytes;      /* cpu: bytes of its copy of the weights (0: in place) */
    double weight_copy_s;          /* cpu: seconds that copy took at creation */
    bool weight_panels;            /* cpu: its bf16 weights copied as row panels */
    /* Runs the batch; writes logits [n_logit_rows, V] (f32). */
    int (*forward)(folo_backend *b, const folo_batch *batch, float *logits, folo_error *err);
    /* Copies every layer's K and V of block copies[i].src into copies[i].dst
     * (copy-on-write of shared blocks); run before the forward that writes
     * the dst blocks. */
    int (*copy_blocks)(folo_backend *b, const folo_kv_copy *copies, int n_copies, folo_error *err);
    void (*destroy)(folo_backend *b);
};

/* Checks a batch against a backend's vocabulary and KV pool (every index in
 * range, slots agreeing with the block tables); every backend calls it
 * before its kernels read the batch. logits may be NULL when no rows are
 * asked for. */
int folo_batch_validate(const folo_batch *batch, int vocab_size, int kv_block_size,
                        int kv_n_blocks, const float *logits, folo_error *err);
/* argmax[r] of the rows argmax_only asks for, from logits [n_logit_rows, V]
 * on the host: how the CPU backends answer it. */
void folo_batch_fill_argmax(const folo_batch *batch, const float *logits, int vocab_size);

folo_backend *folo_backend_cpu_create(const folo_model *model, const folo_backend_options *opt,
                                      folo_error *err);
/* A backend that computes nothing: its logits make token (position + 1) mod
 * V the argmax of each row, at once. For measuring the engine's own cost
 * per step (bench/engine_overhead.c) and scheduling tests; needs only the
 * model's config. */
folo_backend *folo_backend_stub_create(const folo_config *config, const folo_backend_options *opt,
                                       folo_error *err);

static inline int folo_backend_forward(folo_backend *b, const folo_batch *batch, float *logits,
                                       folo_error *err) {
    return b->forward(b, batch, logits, err);
}
static inline int folo_backend_copy_blocks(folo_backend *b, const folo_kv_copy *copies,
                                           int n_copies, folo_error *err) {
    return n_copies > 0 ? b->copy_blocks(b, copies, n_copies, err) : 0;
}
static inline void folo_backend_destroy(folo_backend *b) {
    if (b) b->destroy(b);
}

#endif
