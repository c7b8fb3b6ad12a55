/* The CPU backend: the Qwen3 forward pass of DESIGN §4 over a flat batch of
 * tokens from several sequences, behind the vtable of backend/backend.h.
 *
 * It owns
 *   - the paged KV pool, f32, K and V each [L, n_blocks, Hkv, block_size, D]
 *     (a token's slot is block * block_size + offset; within a block each
 *     kv head's positions are contiguous, see kernels.h), allocated once at
 *     creation;
 *   - f32 copies of the norm weights (a few KB);
 *   - a copy of the float linears and the lm_head in their stored dtype,
 *     in memory backed by 2 MiB pages (folo_alloc_large), made once at
 *     creation: weights streamed out of the file mapping read ~1.3x slower
 *     on Zen4 (docs/performance.md). Under bfloat16, on a kernel table with
 *     matmul_bf16_panels, the bf16 ones are copied as row panels (kernels.h),
 *     which that kernel multiplies without a horizontal sum. With
 *     weights_in_place the matmuls read the model's tensors where they lie
 *     instead (the quantizer's tables, which it swaps as it goes;
 *     --no-weight-copy);
 *   - the activation scratch, sized at creation for a worst-case batch of
 *     min(KV slots, max_batch_tokens or DEFAULT_MAX_TOKENS) tokens and grown
 *     only when a batch needs more, so the steady-state step allocates
 *     nothing;
 *   - a thread pool: matmuls split their output rows across threads,
 *     attention its (sequence, kv head, run of tokens) items;
 *   - with naive_attention, the score matrices of attention_naive.h, one
 *     per thread, grown on demand within naive_attention_bytes.
 *
 * A forward first checks the batch (ids, positions, slots and block tables
 * in range, slot_mapping consistent with the block tables), then per layer
 * writes every token's K and V to its slot before any token attends, so a
 * query sees the cached context of earlier steps and the tokens of this step
 * up to its own position. Only the rows in logit_rows go through the final
 * norm and lm_head. A token's logits do not depend on the rest of its
 * batch (kernels.h fixes the summation order), so batching and chunking
 * leave greedy outputs unchanged. Called by the engine's model runner and
 * the single-sequence tools (`folo run`, `folo logits`), and half a layer at
 * a time by the quantizer (cpu_backend.h); it never sees requests. */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/attention_naive.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/kernels_int4.h"
#include "core/alloc.h"
#include "core/threadpool.h"
#include "core/timer.h"

/* Batch size the scratch is first sized for when the pool holds more slots. */
#define DEFAULT_MAX_TOKENS 1024
/* The most weight matrices one parallel matmul region multiplies. */
#define MAX_FUSED_MATMULS 3
/* Matmuls of at most this many tokens are decode-sized: bound by the weight
 * stream (and, in kernels_avx512.c, run without packing their tokens), so
 * they are split in chunks of DECODE_CHUNK_ROWS rows (256 KiB of bf16
 * weights at K = 1024), a multiple of FOLO_CPU_PANEL_ROWS (and so of
 * FOLO_CPU_MATMUL_ROWS). Each call packs
 * its tokens again (kernels_amx.c): at 1 and 4 tokens on one core, chunks
 * of 128 rows streamed 5-25 % faster than 64 with AMX, 0-10 % with AVX-512,
 * and 256 no better than 128. */
#define DECODE_MAX_TOKENS 6
#define DECODE_CHUNK_ROWS 128
/* Bytes of the rows of a GPTQ linear dequantized per matmul call (f32, or
 * bf16 under --dtype bfloat16; kernels_int4.h; decode-sized calls take the
 * GEMV instead where the ISA has one). Each call packs its tokens again, so
 * a panel must be tall: at 512 tokens, f32 panels of 32 rows ran 25-30 %
 * slower than bf16, of 2 MiB (512 rows at K = 1024, 168 at K = 3072)
 * within 10 % (docs/gptq.md). */
#define INT4_PANEL_BYTES (2u << 20)

/* Per-layer norm weights converted to f32. */
typedef struct cpu_layer_norms {
    float *input; /* [H] */
    float *post;  /* [H] */
    float *q;     /* [D] */
    float *k;     /* [D] */
} cpu_layer_norms;

/* Activations of one forward, each row-major over the batch's tokens. */
typedef struct cpu_scratch {
    int cap_tokens; /* rows every buffer below holds */
    float *block;   /* the one allocation the buffers point into */
    size_t bytes;
    float *x;           /* [T, H] residual stream */
    float *h;           /* [T, H] normed input of a block / block output */
    float *q;           /* [T, Hq*D] */
    float *k;           /* [T, Hkv*D] */
    float *v;           /* [T, Hkv*D] */
    float *att;         /* [T, Hq*D] attention output per head */
    float *gate;        /* [T, I] */
    float *up;          /* [T, I] */
    float *rope_cos;    /* [T, D/2] at each token's position */
    float *rope_sin;    /* [T, D/2] */
    int32_t *kept;      /* [3T + 1] the last layer's batch of logit rows (logit_rows_batch) */
} cpu_scratch;

typedef struct cpu_backend {
    folo_backend base; /* first, so a folo_backend * is a cpu_backend * */
    const folo_model *model;
    folo_pool *pool;
    int n_threads;
    const folo_cpu_kernels *kernels; /* matmul and attention for this CPU (kernels.h) */
    const folo_cpu_int4_kernels *int4; /* GPTQ linears, same ISA (kernels_int4.h) */
    bool bf16_matmul;       /* bf16 weights meet bf16-rounded activations (matmul_bf16) */
    int n_slots;            /* kv_n_blocks * kv_block_size */
    void *k_cache;          /* [L, n_blocks, Hkv, block_size, D] of kv_dtype */
    void *v_cache;          /* [L, n_blocks, Hkv, block_size, D] of kv_dtype */
    folo_dtype kv_dtype;    /* f32, or bf16 with --dtype bfloat16 (rounded as written) */
    float *norm_block;      /* backing store of the norm weights below */
    cpu_layer_norms *norms; /* [L] */
    float *final_norm;      /* [H] */
    float *inv_freq;        /* [D/2] RoPE inverse frequencies */
    /* The weights the forward reads: the model's own tables with
     * weights_in_place, else the copies below (see the top). */
    const folo_layer_weights *layers; /* [L] */
    const folo_tensor *embed;
    const folo_tensor *lm_head;
    folo_layer_weights *copied_layers; /* [L] float linears into weight_block */
    folo_tensor copied_lm_head;        /* into weight_block; the embedding too when tied */
    void *weight_block;
    float *rows_f32;        /* [n_threads, rows_f32_stride] matmul scratch (kernels.h),
                               then INT4_PANEL_BYTES of dequantized rows of a GPTQ model */
    size_t rows_f32_stride; /* floats per thread in rows_f32 */
    cpu_scratch s;
    /* --attention naive (attention_naive.h): score matrices, one per thread,
     * grown to the largest a batch needs, within naive_budget bytes each */
    bool naive;
    size_t naive_budget;
    float *naive_scores;    /* [n_threads, naive_stride] */
    size_t naive_stride;    /* floats per thread in naive_scores */
} cpu_backend;

/* ---- parallel regions ---------------------------------------------------- */

/* y_i[T, N_i] = x[T, K] · w_iᵀ for up to MAX_FUSED_MATMULS weights sharing x,
 * then, on the rows each chunk computed (still in cache):
 *   silu_mul: y_0 = silu(y_0) ⊙ y_1 (the gate/up pair of the MLP, computed
 *             chunk by chunk together);
 *   residual: residual += y_0 (the block's output joins the stream).
 * Threads take chunks of rows from a shared counter, so one that starts late
 * (a busy core, a preemption) leaves its share to the others. A decode-sized
 * call uses small chunks (DECODE_CHUNK_ROWS); a larger one about one chunk
 * per thread, since each call packs its tokens once (kernels_avx512.c),
 * rounded to whole row panels. */
typedef struct matmul_job {
    cpu_backend *b;
    const float *x; /* [T, K] */
    int n_tokens;
    int K;
    int count;
    float *y[MAX_FUSED_MATMULS];             /* [T, N_i] */
    const folo_tensor *w[MAX_FUSED_MATMULS]; /* [N_i, K] */
    int silu_mul;
    float *residual;                     /* [T, N_0] or NULL */
    int chunk_rows[MAX_FUSED_MATMULS];   /* set by run_matmul */
    int n_chunks[MAX_FUSED_MATMULS];     /* set by run_matmul */
    atomic_int next_chunk;               /* chunks handed out so far */
} matmul_job;

/* Whether t (one of the weights the forward reads) is held as row panels:
 * every bf16 tensor of the copy, when place_weights packed them. */
static bool as_panels(const cpu_backend *b, const folo_tensor *t) {
    return b->base.weight_panels && t->dtype == FOLO_DTYPE_BF16;
}

static void matmul_rows(const matmul_job *job, int i, int begin, int end, float *scratch) {
    const folo_tensor *w = job->w[i];
    const folo_cpu_kernels *k = job->b->kernels;
    size_t ldy = (size_t)w->shape[0];
    if (!w->quant) {
        if (as_panels(job->b, w))
            k->matmul_bf16_panels(job->y[i], ldy, job->x, job->n_tokens, job->K, w->data,
                                  w->dtype, begin, end, scratch);
        else if (job->b->bf16_matmul && w->dtype == FOLO_DTYPE_BF16)
            k->matmul_bf16(job->y[i], ldy, job->x, job->n_tokens, job->K, w->data, w->dtype,
                           begin, end, scratch);
        else
            k->matmul(job->y[i], ldy, job->x, job->n_tokens, job->K, w->data, w->dtype, begin,
                      end, scratch);
        return;
    }
    /* GPTQ: decode in registers, or a panel of rows to f32 (bfloat16: to
     * bf16) and the float matmul (matmul_bf16) on it; the same bits either
     * way (kernels_int4.h), so a 4-bit model computes what its twin with f32
     * (bf16) weights does. */
    bool bf16 = job->b->bf16_matmul;
    const folo_cpu_int4_kernels *int4 = job->b->int4;
    if (job->n_tokens <= FOLO_CPU_INT4_GEMV_TOKENS) {
        if (bf16 && int4->gemv_bf16) {
            int4->gemv_bf16(job->y[i], ldy, job->x, job->n_tokens, w->quant, begin, end, scratch);
            return;
        }
        if (!bf16 && int4->gemv) {
            int4->gemv(job->y[i], ldy, job->x, job->n_tokens, w->quant, begin, end);
            return;
        }
    }
    size_t weight_bytes = bf16 ? sizeof(uint16_t) : sizeof(float);
    int panel_rows = (int)(INT4_PANEL_BYTES / weight_bytes / (size_t)job->K);
    panel_rows = panel_rows / FOLO_CPU_MATMUL_ROWS * FOLO_CPU_MATMUL_ROWS;
    if (panel_rows < FOLO_CPU_MATMUL_ROWS) panel_rows = FOLO_CPU_MATMUL_ROWS;
    float *rows = scratch + k->matmul_scratch_floats(job->K); /* [panel_rows, K] */
    for (int r0 = begin; r0 < end; r0 += panel_rows) {
        int n_rows = end - r0 < panel_rows ? end - r0 : panel_rows;
        float *y = job->y[i] + r0;
        if (bf16) {
            int4->dequant_bf16((uint16_t *)rows, w->quant, r0, n_rows);
            k->matmul_bf16(y, ldy, job->x, job->n_tokens, job->K, rows, FOLO_DTYPE_BF16, 0,
                           n_rows, scratch);
        } else {
            int4->dequant(rows, w->quant, r0, n_rows);
            k->matmul(y, ldy, job->x, job->n_tokens, job->K, rows, FOLO_DTYPE_F32, 0, n_rows,
                      scratch);
        }
    }
}

static void matmul_worker(void *ctx, int thread, int n_threads) {
    matmul_job *job = ctx;
    float *scratch = job->b->rows_f32 + (size_t)thread * job->b->rows_f32_stride;
    int n_parts = job->silu_mul ? 1 : job->count; /* silu_mul: y_1 rides with y_0 */
    for (;;) {
        int c = atomic_fetch_add_explicit(&job->next_chunk, 1, memory_order_relaxed), i = 0;
        while (i < n_parts && c >= job->n_chunks[i]) c -= job->n_chunks[i++];
        if (i == n_parts) return;
        int N = (int)job->w[i]->shape[0], begin = c * job->chunk_rows[i];
        int end = N - begin < job->chunk_rows[i] ? N : begin + job->chunk_rows[i];
        matmul_rows(job, i, begin, end, scratch);
        if (job->silu_mul) matmul_rows(job, 1, begin, end, scratch);
        for (int t = 0; t < job->n_tokens && (job->silu_mul || job->residual); t++) {
            float *y0 = job->y[0] + (size_t)t * N + begin;
            size_t n = (size_t)(end - begin);
            if (job->silu_mul)
                job->b->kernels->silu_mul(y0, job->y[1] + (size_t)t * N + begin, n);
            if (job->residual) folo_cpu_add(job->residual + (size_t)t * N + begin, y0, n);
        }
    }
}

static void run_matmul(cpu_backend *b, matmul_job *job) {
    for (int i = 0; i < job->count; i++) {
        int N = (int)job->w[i]->shape[0], rows;
        if (job->n_tokens <= DECODE_MAX_TOKENS) {
            rows = DECODE_CHUNK_ROWS;
        } else {
            rows = (N + b->n_threads - 1) / b->n_threads;
            rows = (rows + FOLO_CPU_PANEL_ROWS - 1) / FOLO_CPU_PANEL_ROWS * FOLO_CPU_PANEL_ROWS;
        }
        job->chunk_rows[i] = rows;
        job->n_chunks[i] = (N + rows - 1) / rows;
    }
    atomic_init(&job->next_chunk, 0);
    folo_pool_run(b->pool, matmul_worker, job);
}

/* y = x · wᵀ, then residual += y unless residual is NULL. */
static void matmul1(cpu_backend *b, float *y, const float *x, int n_tokens, const folo_tensor *w,
                    float *residual) {
    matmul_job job = {.b = b,
                      .x = x,
                      .n_tokens = n_tokens,
                      .K = (int)w->shape[1],
                      .count = 1,
                      .y = {y},
                      .w = {w},
                      .residual = residual};
    run_matmul(b, &job);
}

/* out[t] = rmsnorm(x[rows[t]]) · weight for t < n_rows (rows NULL: row t),
 * tokens split across threads. */
typedef struct rmsnorm_job {
    const folo_cpu_kernels *kernels;
    float *out;       /* [n_rows, n] */
    const float *x;   /* [*, n] */
    const int32_t *rows;
    int n_rows;
    const float *weight; /* [n] */
    int n;
    float eps;
} rmsnorm_job;

static void rmsnorm_worker(void *ctx, int thread, int n_threads) {
    const rmsnorm_job *job = ctx;
    size_t begin, end;
    folo_split((size_t)job->n_rows, 1, thread, n_threads, &begin, &end);
    for (size_t t = begin; t < end; t++) {
        size_t src = job->rows ? (size_t)job->rows[t] : t;
        job->kernels->rmsnorm(job->out + t * job->n, job->x + src * job->n, job->weight, job->n,
                              job->eps);
    }
}

static void rmsnorm_rows(cpu_backend *b, float *out, const float *x, const int32_t *rows,
                         int n_rows, const float *weight, int n, float eps) {
    rmsnorm_job job = {.kernels = b->kernels, .out = out, .x = x, .rows = rows,
                       .n_rows = n_rows, .weight = weight, .n = n, .eps = eps};
    folo_pool_run(b->pool, rmsnorm_worker, &job);
}

/* Per token: q/k head norms, RoPE on q and k, and K, V into the cache
 * (DESIGN §4 steps 3-4), fused in one pass, tokens split across threads. */
typedef struct qk_job {
    cpu_backend *b;
    const folo_batch *batch;
    const cpu_layer_norms *norms;
    void *k_cache; /* [n_blocks, Hkv, block_size, D] this layer, b->kv_dtype */
    void *v_cache; /* [n_blocks, Hkv, block_size, D] this layer, b->kv_dtype */
} qk_job;

static void qk_worker(void *ctx, int thread, int n_threads) {
    const qk_job *job = ctx;
    const folo_config *c = &job->b->model->config;
    const cpu_scratch *s = &job->b->s;
    int Hq = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, half = D / 2;
    float eps = c->rms_norm_eps;
    int block_size = job->b->base.kv_block_size;
    size_t begin, end;
    folo_split((size_t)job->batch->n_tokens, 1, thread, n_threads, &begin, &end);
    for (size_t t = begin; t < end; t++) {
        float *q = s->q + t * Hq * D;  /* [Hq, D] */
        float *k = s->k + t * Hkv * D; /* [Hkv, D] */
        for (int head = 0; head < Hq; head++)
            job->b->kernels->rmsnorm(q + head * D, q + head * D, job->norms->q, D, eps);
        for (int head = 0; head < Hkv; head++)
            job->b->kernels->rmsnorm(k + head * D, k + head * D, job->norms->k, D, eps);
        const float *cos_half = s->rope_cos + t * half, *sin_half = s->rope_sin + t * half;
        folo_cpu_rope(q, Hq, D, cos_half, sin_half);
        folo_cpu_rope(k, Hkv, D, cos_half, sin_half);
        /* bfloat16: QKᵀ is a bf16 dot product, as the keys are stored */
        if (job->b->kv_dtype == FOLO_DTYPE_BF16)
            for (int i = 0; i < Hq * D; i++) q[i] = folo_bf16_round(q[i]);
        int slot = job->batch->slot_mapping[t];
        const float *v = s->v + t * Hkv * D; /* [Hkv, D] */
        for (int head = 0; head < Hkv; head++) {
            size_t row =
                ((size_t)(slot / block_size) * Hkv + head) * block_size + slot % block_size;
            folo_cpu_kv_store(job->k_cache, job->v_cache, job->b->kv_dtype, row, block_size, D,
                              k + head * D, v + head * D);
        }
    }
}

/* Causal attention of every (token, query head) of the batch for one layer.
 * An item is a run of consecutive tokens of one sequence with some of its
 * kv heads and all the query heads that read them, at most
 * FOLO_CPU_ATTN_QUERIES queries, so the kernel reads each key and value
 * once for the item's queries:
 * - a sequence with more tokens than that takes one kv head per item, for
 *   runs of FOLO_CPU_ATTN_QUERIES / group tokens (prefill);
 * - one with fewer (decode) takes its tokens with Hkv / short_split kv
 *   heads per item, which a bf16 cache reads as one run per block. */
typedef struct attention_job {
    const cpu_backend *b;
    const folo_batch *batch;
    const void *k_cache; /* [n_blocks, Hkv, block_size, D] this layer, b->kv_dtype */
    const void *v_cache; /* [n_blocks, Hkv, block_size, D] this layer, b->kv_dtype */
    int short_split;     /* items per short sequence, a divisor of Hkv (attention_split) */
} attention_job;

/* Whether a sequence of n tokens has all its queries in one item. */
static bool short_sequence(int n, int n_heads) { return n * n_heads <= FOLO_CPU_ATTN_QUERIES; }

/* Items per short sequence: the fewest (a divisor of Hkv) that share out
 * evenly over the threads, or give each several. */
static int attention_split(const folo_batch *batch, int n_heads, int n_kv_heads, int n_threads) {
    int n_short = 0;
    for (int seq = 0; seq < batch->n_seqs; seq++) {
        int n = batch->seq_starts[seq + 1] - batch->seq_starts[seq];
        n_short += n > 0 && short_sequence(n, n_heads); /* the last layer's may be empty */
    }
    int split = 1;
    while (split < n_kv_heads && (n_kv_heads % split != 0 ||
                                  ((n_short * split) % n_threads != 0 &&
                                   n_short * split < 4 * n_threads)))
        split++;
    return split;
}

static void attention_worker(void *ctx, int thread, int n_threads) {
    const attention_job *job = ctx;
    const folo_batch *batch = job->batch;
    const folo_config *c = &job->b->model->config;
    const cpu_scratch *s = &job->b->s;
    int Hq = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, group = Hq / Hkv;
    float scale = 1.0f / sqrtf((float)D);
    float *out[FOLO_CPU_ATTN_QUERIES];
    const float *q[FOLO_CPU_ATTN_QUERIES];
    int n_ctx[FOLO_CPU_ATTN_QUERIES], kv_of[FOLO_CPU_ATTN_QUERIES];
    /* Items interleave across threads: late tokens of a prefill have long
     * contexts, and striding spreads them evenly. */
    int item = 0;
    for (int seq = 0; seq < batch->n_seqs; seq++) {
        const int32_t *table = batch->block_tables + (size_t)seq * batch->max_blocks_per_seq;
        int start = batch->seq_starts[seq], end = batch->seq_starts[seq + 1];
        bool is_short = short_sequence(end - start, Hq);
        int run = is_short ? end - start : FOLO_CPU_ATTN_QUERIES / group; /* tokens per item */
        int heads = is_short ? Hkv / job->short_split : 1;                /* kv heads per item */
        for (int t0 = start; t0 < end; t0 += run) {
            int t1 = end - t0 < run ? end : t0 + run;
            for (int kv0 = 0; kv0 < Hkv; kv0 += heads, item++) {
                if (item % n_threads != thread) continue;
                int n = 0;
                for (int kv_head = kv0; kv_head < kv0 + heads; kv_head++) {
                    for (int t = t0; t < t1; t++) {
                        for (int head = kv_head * group; head < (kv_head + 1) * group;
                             head++, n++) {
                            size_t offset = (size_t)t * Hq * D + (size_t)head * D;
                            out[n] = s->att + offset;
                            q[n] = s->q + offset;
                            n_ctx[n] = batch->positions[t] + 1;
                            kv_of[n] = kv_head;
                        }
                    }
                }
                job->b->kernels->attention_group(out, q, n_ctx, n, job->k_cache, job->v_cache,
                                                 job->b->kv_dtype, table,
                                                 job->b->base.kv_block_size, Hkv, kv_of, D,
                                                 scale);
            }
        }
    }
}

/* The same with naive attention: an item is one query head of one
 * sequence's tokens in the batch, its whole score matrix in the thread's
 * naive_scores. */
static void attention_naive_worker(void *ctx, int thread, int n_threads) {
    const attention_job *job = ctx;
    const folo_batch *batch = job->batch;
    const cpu_backend *b = job->b;
    const folo_config *c = &b->model->config;
    int Hq = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, group = Hq / Hkv;
    float scale = 1.0f / sqrtf((float)D);
    float *scores = b->naive_scores + (size_t)thread * b->naive_stride;
    int item = 0;
    for (int seq = 0; seq < batch->n_seqs; seq++) {
        const int32_t *table = batch->block_tables + (size_t)seq * batch->max_blocks_per_seq;
        int t0 = batch->seq_starts[seq], n = batch->seq_starts[seq + 1] - t0;
        if (n == 0) continue; /* a sequence the last layer keeps no row of */
        for (int head = 0; head < Hq; head++, item++) {
            if (item % n_threads != thread) continue;
            size_t offset = (size_t)t0 * Hq * D + (size_t)head * D;
            folo_cpu_attention_naive(b->s.att + offset, (size_t)Hq * D, b->s.q + offset,
                                     (size_t)Hq * D, batch->positions + t0, n,
                                     batch->seq_lens[seq], scores, job->k_cache, job->v_cache,
                                     b->kv_dtype,
                                     table, b->base.kv_block_size, Hkv, head / group, D, scale);
        }
    }
}

/* Grows the naive score matrices for the batch's largest sequence, or
 * fails when it exceeds the budget. */
static int ensure_naive_scores(cpu_backend *b, const folo_batch *batch, folo_error *err) {
    size_t need = 0;
    for (int seq = 0; seq < batch->n_seqs; seq++) {
        int n = batch->seq_starts[seq + 1] - batch->seq_starts[seq], ctx = batch->seq_lens[seq];
        size_t floats = (size_t)n * (size_t)ctx;
        if (floats * sizeof(float) > b->naive_budget)
            return folo_fail(err,
                             "naive attention: %d queries over a %d-token context need a %.1f MiB "
                             "score matrix per head, beyond the budget of %.1f MiB",
                             n, ctx, (double)(floats * sizeof(float)) / (1 << 20),
                             (double)b->naive_budget / (1 << 20));
        if (floats > need) need = floats;
    }
    if (need <= b->naive_stride) return 0;
    float *scores = folo_alloc_large((size_t)b->n_threads * need * sizeof(float));
    if (!scores)
        return folo_fail(err, "naive attention: cannot allocate %d score matrices of %zu bytes",
                         b->n_threads, need * sizeof(float));
    folo_free_large(b->naive_scores);
    b->base.scratch_bytes += (size_t)b->n_threads * (need - b->naive_stride) * sizeof(float);
    b->naive_scores = scores;
    b->naive_stride = need;
    return 0;
}

/* ---- the forward pass ---------------------------------------------------- */

static void embed_tokens(cpu_backend *b, const folo_batch *batch) {
    const folo_tensor *e = b->embed;
    int H = b->model->config.hidden_size;
    size_t row_bytes = (size_t)H * folo_dtype_size(e->dtype);
    for (int t = 0; t < batch->n_tokens; t++)
        folo_to_f32(e->dtype, (const char *)e->data + (size_t)batch->token_ids[t] * row_bytes,
                    b->s.x + (size_t)t * H, (size_t)H);
}

static void prepare_positions(cpu_backend *b, const folo_batch *batch) {
    int half = b->model->config.head_dim / 2;
    for (int t = 0; t < batch->n_tokens; t++)
        folo_cpu_rope_cos_sin(b->s.rope_cos + (size_t)t * half, b->s.rope_sin + (size_t)t * half,
                              batch->positions[t], b->inv_freq, half);
}

/* The batch's logit rows alone, as a batch of their own for the last
 * layer: past its K and V, which every token's later queries read, a
 * layer's output matters only for the rows whose logits are wanted, so
 * cpu_forward runs the last layer's attention, o-projection and MLP on those
 * rows alone (rows 0..R-1 of the scratch, keep_rows). Positions and
 * sequences are the rows' own (a sequence may keep no row), the block
 * tables the batch's. False when every token is a logit row, or the rows
 * are not in increasing token order (keep_rows moves each row down, to
 * its place at or before its own). Nothing else of the kept batch is read:
 * its token ids and slots are NULL. */
static bool logit_rows_batch(cpu_backend *b, const folo_batch *batch, folo_batch *kept) {
    int R = batch->n_logit_rows, T = batch->n_tokens;
    if (R == T) return false;
    for (int r = 1; r < R; r++)
        if (batch->logit_rows[r] <= batch->logit_rows[r - 1]) return false;
    int32_t *positions = b->s.kept, *rows = positions + T, *starts = rows + T; /* [n_seqs + 1] */
    int seq = 0;
    starts[0] = 0;
    for (int r = 0; r < R; r++) {
        int t = batch->logit_rows[r];
        while (t >= batch->seq_starts[seq + 1]) starts[++seq] = r;
        positions[r] = batch->positions[t];
        rows[r] = r;
    }
    while (seq < batch->n_seqs) starts[++seq] = R;
    *kept = (folo_batch){.n_tokens = R,
                         .positions = positions,
                         .n_seqs = batch->n_seqs,
                         .seq_starts = starts,
                         .seq_lens = batch->seq_lens,
                         .block_tables = batch->block_tables,
                         .max_blocks_per_seq = batch->max_blocks_per_seq,
                         .n_logit_rows = R,
                         .logit_rows = rows};
    return true;
}

/* Moves the queries and residual rows of the kept batch's tokens (the full
 * batch's logit rows) to rows 0..R-1. */
static void keep_rows(cpu_backend *b, const folo_batch *batch, const folo_batch *kept) {
    const folo_config *c = &b->model->config;
    size_t q_width = (size_t)c->n_heads * c->head_dim, H = (size_t)c->hidden_size;
    for (int r = 0; r < kept->n_tokens; r++) {
        size_t t = (size_t)batch->logit_rows[r];
        if (t == (size_t)r) continue;
        memcpy(b->s.q + r * q_width, b->s.q + t * q_width, q_width * sizeof(float));
        memcpy(b->s.x + r * H, b->s.x + t * H, H * sizeof(float));
    }
}

/* DESIGN §4 steps 1-6: h = rmsnorm(x); q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ;
 * per-head q/k norms; RoPE; K and V into the cache; x += attention · Woᵀ,
 * the last two for the tokens of `queries`: the batch, or its logit rows
 * (logit_rows_batch). Stops early at the input of q/k/v or o when `stop`
 * names it (cpu_backend.h) and returns that input; NULL after the whole
 * block. */
static const float *attention_block(cpu_backend *b, int layer, const folo_batch *batch,
                                    const folo_batch *queries, folo_cpu_tap stop) {
    const folo_config *c = &b->model->config;
    const folo_layer_weights *w = &b->layers[layer];
    const cpu_layer_norms *n = &b->norms[layer];
    cpu_scratch *s = &b->s;
    int T = batch->n_tokens, H = c->hidden_size, D = c->head_dim, Hkv = c->n_kv_heads;

    rmsnorm_rows(b, s->h, s->x, NULL, T, n->input, H, c->rms_norm_eps);
    if (stop == FOLO_CPU_TAP_QKV) return s->h;

    matmul_job qkv = {.b = b,
                      .x = s->h,
                      .n_tokens = T,
                      .K = H,
                      .count = 3,
                      .y = {s->q, s->k, s->v},
                      .w = {&w->wq, &w->wk, &w->wv}};
    run_matmul(b, &qkv);

    size_t layer_bytes = (size_t)b->n_slots * Hkv * D * folo_dtype_size(b->kv_dtype);
    char *k_cache = (char *)b->k_cache + (size_t)layer * layer_bytes; /* [n_blocks, Hkv, bs, D] */
    char *v_cache = (char *)b->v_cache + (size_t)layer * layer_bytes; /* [n_blocks, Hkv, bs, D] */
    qk_job qk = {.b = b, .batch = batch, .norms = n, .k_cache = k_cache, .v_cache = v_cache};
    folo_pool_run(b->pool, qk_worker, &qk);
    if (queries != batch) {
        keep_rows(b, batch, queries);
        if (queries->n_tokens == 0) return NULL;
    }

    attention_job att = {.b = b,
                         .batch = queries,
                         .k_cache = k_cache,
                         .v_cache = v_cache,
                         .short_split = attention_split(queries, c->n_heads, Hkv, b->n_threads)};
    folo_pool_run(b->pool, b->naive ? attention_naive_worker : attention_worker, &att);
    if (stop == FOLO_CPU_TAP_O) return s->att;

    matmul1(b, s->h, s->att, queries->n_tokens, &w->wo, s->x);
    return NULL;
}

/* DESIGN §4 step 7: h = rmsnorm(x); x += (silu(h·Wgateᵀ) ⊙ h·Wupᵀ) · Wdownᵀ.
 * Stops early at the input of gate/up or down when `stop` names it and
 * returns that input; NULL after the whole block. */
static const float *mlp_block(cpu_backend *b, int layer, const folo_batch *batch,
                              folo_cpu_tap stop) {
    const folo_config *c = &b->model->config;
    const folo_layer_weights *w = &b->layers[layer];
    cpu_scratch *s = &b->s;
    int T = batch->n_tokens, H = c->hidden_size;

    rmsnorm_rows(b, s->h, s->x, NULL, T, b->norms[layer].post, H, c->rms_norm_eps);
    if (stop == FOLO_CPU_TAP_GATE_UP) return s->h;
    matmul_job gate_up = {.b = b,
                          .x = s->h,
                          .n_tokens = T,
                          .K = H,
                          .count = 2,
                          .y = {s->gate, s->up},
                          .w = {&w->w_gate, &w->w_up},
                          .silu_mul = 1};
    run_matmul(b, &gate_up);
    if (stop == FOLO_CPU_TAP_DOWN) return s->gate;
    matmul1(b, s->h, s->gate, T, &w->w_down, s->x);
    return NULL;
}

/* logits [R, V] = norm(x[logit_rows]) · lm_headᵀ. */
static void lm_head(cpu_backend *b, const folo_batch *batch, float *logits) {
    const folo_config *c = &b->model->config;
    int H = c->hidden_size, R = batch->n_logit_rows;
    rmsnorm_rows(b, b->s.h, b->s.x, batch->logit_rows, R, b->final_norm, H, c->rms_norm_eps);
    matmul1(b, logits, b->s.h, R, b->lm_head, NULL);
}

/* ---- scratch ------------------------------------------------------------------ */

/* Floats of one buffer of `rows` rows of `width`, rounded to 64 bytes. */
static size_t buffer_floats(int rows, int width) {
    return ((size_t)rows * (size_t)width + 15) & ~(size_t)15;
}

/* Points the scratch buffers into one block for cap_tokens rows. */
static int scratch_alloc(cpu_scratch *s, const folo_config *c, int cap_tokens, folo_error *err) {
    int H = c->hidden_size, I = c->intermediate_size, D = c->head_dim;
    int q_width = c->n_heads * D, kv_width = c->n_kv_heads * D;
    struct {
        float **ptr;
        int width;
    } parts[] = {
        {&s->x, H},
        {&s->h, H},
        {&s->q, q_width},
        {&s->k, kv_width},
        {&s->v, kv_width},
        {&s->att, q_width},
        {&s->gate, I},
        {&s->up, I},
        {&s->rope_cos, D / 2},
        {&s->rope_sin, D / 2},
    };
    size_t n_parts = sizeof parts / sizeof parts[0];
    size_t total = 0;
    for (size_t i = 0; i < n_parts; i++) total += buffer_floats(cap_tokens, parts[i].width);
    float *block = folo_alloc_large(total * sizeof(float));
    if (!block)
        return folo_fail(err, "cpu backend: cannot allocate %zu bytes of activations for %d tokens",
                         total * sizeof(float), cap_tokens);
    folo_free_large(s->block);
    s->block = block;
    free(s->kept);
    s->kept = folo_calloc(3 * (size_t)cap_tokens + 1, sizeof(int32_t));
    s->bytes = total * sizeof(float);
    s->cap_tokens = cap_tokens;
    float *next = block;
    for (size_t i = 0; i < n_parts; i++) {
        *parts[i].ptr = next;
        next += buffer_floats(cap_tokens, parts[i].width);
    }
    return 0;
}

static int ensure_scratch(cpu_backend *b, int n_tokens, folo_error *err) {
    if (n_tokens <= b->s.cap_tokens) return 0;
    if (scratch_alloc(&b->s, &b->model->config, n_tokens, err) != 0) return -1;
    b->base.scratch_bytes = b->s.bytes + (size_t)b->n_threads *
                                             (b->rows_f32_stride + b->naive_stride) * sizeof(float);
    return 0;
}

static int cpu_forward(folo_backend *base, const folo_batch *batch, float *logits,
                       folo_error *err) {
    cpu_backend *b = (cpu_backend *)base;
    if (folo_batch_validate(batch, b->model->config.vocab_size, b->base.kv_block_size,
                            b->base.kv_n_blocks, logits, err) != 0)
        return -1;
    if (ensure_scratch(b, batch->n_tokens, err) != 0) return -1;
    if (b->naive && ensure_naive_scores(b, batch, err) != 0) return -1;
    embed_tokens(b, batch);
    prepare_positions(b, batch);
    int last = b->model->config.n_layers - 1;
    folo_batch kept;
    const folo_batch *rows = logit_rows_batch(b, batch, &kept) ? &kept : batch;
    for (int layer = 0; layer <= last; layer++) {
        const folo_batch *queries = layer == last ? rows : batch;
        attention_block(b, layer, batch, queries, FOLO_CPU_TAP_ATTENTION);
        if (queries->n_tokens > 0) mlp_block(b, layer, queries, FOLO_CPU_TAP_MLP);
    }
    if (rows->n_logit_rows > 0) lm_head(b, rows, logits);
    folo_batch_fill_argmax(batch, logits, b->model->config.vocab_size);
    return 0;
}

/* ---- one layer at a time (cpu_backend.h) ------------------------------------ */

/* Checks a batch for a layer run and grows the scratch for it. */
static int prepare_layer_batch(cpu_backend *b, const folo_batch *batch, folo_error *err) {
    FOLO_ASSERT(b->base.forward == cpu_forward);
    if (folo_batch_validate(batch, b->model->config.vocab_size, b->base.kv_block_size,
                            b->base.kv_n_blocks, NULL, err) != 0)
        return -1;
    if (ensure_scratch(b, batch->n_tokens, err) != 0) return -1;
    if (b->naive && ensure_naive_scores(b, batch, err) != 0) return -1;
    return 0;
}

int folo_cpu_embed(folo_backend *base, const folo_batch *batch, float *x, folo_error *err) {
    cpu_backend *b = (cpu_backend *)base;
    if (prepare_layer_batch(b, batch, err) != 0) return -1;
    embed_tokens(b, batch);
    memcpy(x, b->s.x, (size_t)batch->n_tokens * b->model->config.hidden_size * sizeof(float));
    return 0;
}

const float *folo_cpu_layer_run(folo_backend *base, const folo_batch *batch, int layer,
                                folo_cpu_tap tap, float *x, folo_error *err) {
    cpu_backend *b = (cpu_backend *)base;
    FOLO_ASSERT(layer >= 0 && layer < b->model->config.n_layers);
    if (prepare_layer_batch(b, batch, err) != 0) return NULL;
    size_t x_bytes = (size_t)batch->n_tokens * b->model->config.hidden_size * sizeof(float);
    memcpy(b->s.x, x, x_bytes);
    const float *input;
    if (tap <= FOLO_CPU_TAP_ATTENTION) {
        prepare_positions(b, batch);
        input = attention_block(b, layer, batch, batch, tap);
    } else {
        input = mlp_block(b, layer, batch, tap);
    }
    if (input) return input;
    memcpy(x, b->s.x, x_bytes);
    return x;
}

const float *folo_cpu_final_norm(folo_backend *base, const folo_batch *batch, const float *x,
                                 folo_error *err) {
    cpu_backend *b = (cpu_backend *)base;
    const folo_config *c = &b->model->config;
    if (prepare_layer_batch(b, batch, err) != 0) return NULL;
    rmsnorm_rows(b, b->s.h, x, NULL, batch->n_tokens, b->final_norm, c->hidden_size,
                 c->rms_norm_eps);
    return b->s.h;
}

/* Copy-on-write of shared blocks: K and V of every layer, block by block. */
static int cpu_copy_blocks(folo_backend *base, const folo_kv_copy *copies, int n_copies,
                           folo_error *err) {
    cpu_backend *b = (cpu_backend *)base;
    const folo_config *c = &b->model->config;
    int n_blocks = base->kv_n_blocks;
    size_t element = folo_dtype_size(b->kv_dtype);
    size_t block_bytes = (size_t)base->kv_block_size * c->n_kv_heads * c->head_dim * element;
    size_t layer_bytes = (size_t)b->n_slots * c->n_kv_heads * c->head_dim * element;
    for (int i = 0; i < n_copies; i++) {
        int32_t src = copies[i].src, dst = copies[i].dst;
        if (src < 0 || src >= n_blocks || dst < 0 || dst >= n_blocks)
            return folo_fail(err, "copy_blocks: pair %d (%d -> %d) outside the pool of %d blocks",
                             i, src, dst, n_blocks);
        for (int layer = 0; layer < c->n_layers; layer++) {
            char *k = (char *)b->k_cache + (size_t)layer * layer_bytes;
            char *v = (char *)b->v_cache + (size_t)layer * layer_bytes;
            memcpy(k + (size_t)dst * block_bytes, k + (size_t)src * block_bytes, block_bytes);
            memcpy(v + (size_t)dst * block_bytes, v + (size_t)src * block_bytes, block_bytes);
        }
    }
    return 0;
}

/* ---- creation ------------------------------------------------------------ */

static void cpu_destroy(folo_backend *base) {
    cpu_backend *b = (cpu_backend *)base;
    folo_pool_destroy(b->pool);
    folo_free_large(b->k_cache);
    folo_free_large(b->v_cache);
    folo_free_large(b->norm_block);
    folo_free_large(b->rows_f32);
    folo_free_large(b->s.block);
    free(b->s.kept);
    folo_free_large(b->naive_scores);
    free(b->norms);
    free(b->inv_freq);
    free(b->copied_layers);
    folo_free_large(b->weight_block);
    free(b);
}

static void norm_to_f32(float *dst, const folo_tensor *t, int n) {
    folo_to_f32(t->dtype, t->data, dst, (size_t)n);
}

/* The i-th tensor place_weights copies: the layers' linears, then the
 * lm_head (i == L · FOLO_N_LINEARS). */
static folo_tensor *copied_tensor(cpu_backend *b, int i) {
    if (i == b->model->config.n_layers * FOLO_N_LINEARS) return &b->copied_lm_head;
    return folo_layer_linear(&b->copied_layers[i / FOLO_N_LINEARS],
                             (folo_linear_id)(i % FOLO_N_LINEARS));
}

/* Bytes t takes in the weight block: its data (as row panels or as
 * stored), to the next 64-byte boundary. */
static size_t block_bytes(const cpu_backend *b, const folo_tensor *t) {
    size_t bytes = as_panels(b, t) ? folo_cpu_bf16_panels_bytes((int)t->shape[0],
                                                                (int)t->shape[1])
                                   : folo_tensor_bytes(t);
    return (bytes + 63) & ~(size_t)63;
}

/* Points layers, embed and lm_head at the model's tensors (in_place: the
 * caller may swap them later), or at copies of their tables whose float
 * linears and lm_head (GPTQ linears are already repacked in memory of their
 * own) lie in one weight_block, each at a 64-byte boundary, bf16 ones as
 * row panels where the kernels have matmul_bf16_panels; a tied embedding
 * (the lm_head's very tensor) reads the lm_head's copy unless that is
 * panels. */
static int place_weights(cpu_backend *b, bool in_place, folo_error *err) {
    const folo_model *m = b->model;
    int L = m->config.n_layers, n_tensors = L * FOLO_N_LINEARS + 1;
    b->layers = m->layers;
    b->embed = &m->embed;
    b->lm_head = &m->lm_head;
    if (in_place) return 0;
    b->copied_layers = folo_calloc((size_t)L, sizeof *b->copied_layers);
    memcpy(b->copied_layers, m->layers, (size_t)L * sizeof *b->copied_layers);
    b->copied_lm_head = m->lm_head;
    b->base.weight_panels = b->bf16_matmul && b->kernels->matmul_bf16_panels;

    double t0 = folo_now_s();
    size_t total = 0;
    for (int i = 0; i < n_tensors; i++) {
        const folo_tensor *t = copied_tensor(b, i);
        if (!t->quant) total += block_bytes(b, t);
    }
    b->weight_block = folo_alloc_large(total);
    if (!b->weight_block && total > 0)
        return folo_fail(err, "cpu backend: cannot allocate %zu bytes for its copy of the weights "
                         "(--no-weight-copy reads them where the model file is mapped)", total);
    char *next = b->weight_block;
    for (int i = 0; i < n_tensors; i++) {
        folo_tensor *t = copied_tensor(b, i);
        if (t->quant) continue;
        if (as_panels(b, t))
            folo_cpu_bf16_pack_panels(next, t->data, (int)t->shape[0], (int)t->shape[1]);
        else
            memcpy(next, t->data, folo_tensor_bytes(t));
        t->data = next;
        next += block_bytes(b, t);
    }
    b->layers = b->copied_layers;
    if (m->embed.data == m->lm_head.data && !as_panels(b, &m->lm_head))
        b->embed = &b->copied_lm_head;
    b->lm_head = &b->copied_lm_head;
    b->base.weight_copy_bytes = total;
    b->base.weight_copy_s = folo_now_s() - t0;
    return 0;
}

folo_backend *folo_backend_cpu_create(const folo_model *model, const folo_backend_options *opt,
                                      folo_error *err) {
    const folo_config *c = &model->config;
    int H = c->hidden_size, I = c->intermediate_size, D = c->head_dim, L = c->n_layers;
    int block_size = opt->kv_block_size > 0 ? opt->kv_block_size : 16;
    if (opt->kv_n_blocks < 1) {
        folo_fail(err, "cpu backend: kv_n_blocks must be at least 1 (got %d)", opt->kv_n_blocks);
        return NULL;
    }
    if ((int64_t)opt->kv_n_blocks * block_size > INT32_MAX) {
        folo_fail(err, "cpu backend: %d blocks of %d tokens overflow the slot index",
                  opt->kv_n_blocks, block_size);
        return NULL;
    }
    if (D % 2 != 0 || D > FOLO_CPU_MAX_HEAD_DIM || c->n_kv_heads < 1 ||
        c->n_heads % c->n_kv_heads != 0 ||
        c->n_heads / c->n_kv_heads > FOLO_CPU_ATTN_QUERIES) {
        folo_fail(err,
                  "cpu backend: unsupported head layout (head_dim %d, %d query heads, %d kv heads)",
                  D, c->n_heads, c->n_kv_heads);
        return NULL;
    }

    const folo_cpu_kernels *kernels = folo_cpu_kernels_select(err);
    if (!kernels) return NULL;
    bool bf16_matmul = opt->dtype == FOLO_COMPUTE_BFLOAT16;
    if (bf16_matmul && !kernels->matmul_bf16) {
        folo_fail(err,
                  "cpu backend: dtype bfloat16 needs a CPU with AVX512-BF16 (the %s kernels have "
                  "no bf16 dot product); use dtype float32",
                  kernels->name);
        return NULL;
    }
    if (bf16_matmul && block_size % FOLO_CPU_KV_BF16_BLOCK != 0) {
        folo_fail(err,
                  "cpu backend: dtype bfloat16 needs a block size that is a multiple of %d (its "
                  "cache holds 16 positions a register); got %d",
                  FOLO_CPU_KV_BF16_BLOCK, block_size);
        return NULL;
    }
    cpu_backend *b = folo_calloc(1, sizeof *b);
    b->kernels = kernels;
    b->int4 = folo_cpu_int4_kernels_for(kernels);
    b->bf16_matmul = bf16_matmul;
    b->base.name = "cpu";
    b->naive = opt->naive_attention;
    b->naive_budget = opt->naive_attention_bytes;
    b->base.kv_block_size = block_size;
    b->base.kv_n_blocks = opt->kv_n_blocks;
    b->base.forward = cpu_forward;
    b->base.copy_blocks = cpu_copy_blocks;
    b->base.destroy = cpu_destroy;
    b->model = model;
    b->pool = folo_pool_create(opt->n_threads);
    b->n_threads = folo_pool_size(b->pool);
    b->n_slots = opt->kv_n_blocks * block_size;

    b->kv_dtype = bf16_matmul ? FOLO_DTYPE_BF16 : FOLO_DTYPE_F32;
    size_t cache_bytes =
        (size_t)L * b->n_slots * c->n_kv_heads * D * folo_dtype_size(b->kv_dtype);
    b->k_cache = folo_alloc_large(cache_bytes);
    b->v_cache = folo_alloc_large(cache_bytes);
    if (!b->k_cache || !b->v_cache) {
        folo_fail(err, "cpu backend: cannot allocate the KV pool (2 x %zu bytes for %d blocks)",
                  cache_bytes, opt->kv_n_blocks);
        cpu_destroy(&b->base);
        return NULL;
    }
    b->base.kv_bytes = 2 * cache_bytes;

    size_t norm_floats = (size_t)L * (2 * H + 2 * D) + H;
    b->norm_block = folo_alloc_large(norm_floats * sizeof(float));
    b->norms = folo_calloc((size_t)L, sizeof *b->norms);
    b->inv_freq = folo_calloc((size_t)D / 2, sizeof(float));
    /* The matmul scratch for each inner size a matmul has: H, Hq·D, I. */
    int inner[3] = {H, c->n_heads * D, I};
    for (int i = 0; i < 3; i++) {
        size_t floats = b->kernels->matmul_scratch_floats(inner[i]);
        /* at least FOLO_CPU_MATMUL_ROWS rows, as matmul_rows takes */
        size_t panel_floats = INT4_PANEL_BYTES / sizeof(float);
        if ((size_t)FOLO_CPU_MATMUL_ROWS * inner[i] > panel_floats)
            panel_floats = (size_t)FOLO_CPU_MATMUL_ROWS * inner[i];
        if (model->n_qlinears > 0) floats += panel_floats;
        if (floats > b->rows_f32_stride) b->rows_f32_stride = floats;
    }
    b->rows_f32 = folo_alloc_large((size_t)b->n_threads * b->rows_f32_stride * sizeof(float));
    if (!b->norm_block || !b->rows_f32) {
        folo_fail(err, "cpu backend: cannot allocate norm weights and matmul rows");
        cpu_destroy(&b->base);
        return NULL;
    }
    float *next = b->norm_block;
    for (int layer = 0; layer < L; layer++) {
        const folo_layer_weights *w = &model->layers[layer];
        cpu_layer_norms *n = &b->norms[layer];
        n->input = next, next += H;
        n->post = next, next += H;
        n->q = next, next += D;
        n->k = next, next += D;
        norm_to_f32(n->input, &w->input_norm, H);
        norm_to_f32(n->post, &w->post_norm, H);
        norm_to_f32(n->q, &w->q_norm, D);
        norm_to_f32(n->k, &w->k_norm, D);
    }
    b->final_norm = next;
    norm_to_f32(b->final_norm, &model->final_norm, H);
    folo_cpu_rope_inv_freq(b->inv_freq, D, c->rope_theta);
    if (place_weights(b, opt->weights_in_place, err) != 0) {
        cpu_destroy(&b->base);
        return NULL;
    }

    int cap = opt->max_batch_tokens > 0 ? opt->max_batch_tokens : DEFAULT_MAX_TOKENS;
    if (b->n_slots < cap) cap = b->n_slots;
    if (ensure_scratch(b, cap, err) != 0) {
        cpu_destroy(&b->base);
        return NULL;
    }
    return &b->base;
}
