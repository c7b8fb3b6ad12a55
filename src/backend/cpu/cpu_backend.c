/* The CPU backend: the Qwen3 forward pass of DESIGN §4 over a flat batch of
 * tokens from several sequences, behind the vtable of backend/backend.h.
 *
 * It owns
 *   - the paged KV pool, f32, K and V each [L, n_blocks, block_size, Hkv, D]
 *     (a slot = block * block_size + offset indexes [n_slots, Hkv, D] of a
 *     layer), allocated once at creation;
 *   - f32 copies of the norm weights (a few KB; the big matrices are read
 *     where the model mapped them, in their stored dtype);
 *   - the activation scratch, sized at creation for a worst-case batch of
 *     min(KV slots, DEFAULT_MAX_TOKENS) tokens and grown only when a batch
 *     needs more, so the steady-state step allocates nothing;
 *   - a thread pool: matmuls split their output rows across threads,
 *     attention its (token, query head) items.
 *
 * A forward first checks the batch (ids, positions, slots and block tables
 * in range, slot_mapping consistent with the block tables), then per layer
 * writes every token's K and V to its slot before any token attends, so a
 * query sees the cached context of earlier steps and the tokens of this step
 * up to its own position. Only the rows in logit_rows go through the final
 * norm and lm_head. A token's logits do not depend on the rest of its
 * batch (kernels.h fixes the summation order), so batching and chunking
 * leave greedy outputs unchanged. Called by the engine's model runner and
 * the single-sequence tools (`folo run`, `folo logits`); it never sees
 * requests. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "core/alloc.h"
#include "core/threadpool.h"

/* Batch size the scratch is first sized for when the pool holds more slots. */
#define DEFAULT_MAX_TOKENS 1024
/* The most weight matrices one parallel matmul region multiplies. */
#define MAX_FUSED_MATMULS 3

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
    int32_t *token_seq; /* [T] sequence index of each token */
} cpu_scratch;

typedef struct cpu_backend {
    folo_backend base; /* first, so a folo_backend * is a cpu_backend * */
    const folo_model *model;
    folo_pool *pool;
    int n_threads;
    int n_slots;            /* kv_n_blocks * kv_block_size */
    float *k_cache;         /* [L, n_slots, Hkv, D] */
    float *v_cache;         /* [L, n_slots, Hkv, D] */
    float *norm_block;      /* backing store of the norm weights below */
    cpu_layer_norms *norms; /* [L] */
    float *final_norm;      /* [H] */
    float *inv_freq;        /* [D/2] RoPE inverse frequencies */
    float *rows_f32;        /* [n_threads, FOLO_CPU_MATMUL_ROWS * max K] converted weight rows */
    size_t rows_f32_stride; /* floats per thread in rows_f32 */
    cpu_scratch s;
} cpu_backend;

/* ---- parallel regions ---------------------------------------------------- */

/* y_i[T, N_i] = x[T, K] · w_iᵀ for up to MAX_FUSED_MATMULS weights sharing x. */
typedef struct matmul_job {
    cpu_backend *b;
    const float *x; /* [T, K] */
    int n_tokens;
    int K;
    int count;
    float *y[MAX_FUSED_MATMULS];             /* [T, N_i] */
    const folo_tensor *w[MAX_FUSED_MATMULS]; /* [N_i, K] */
} matmul_job;

static void matmul_worker(void *ctx, int thread, int n_threads) {
    const matmul_job *job = ctx;
    float *rows_f32 = job->b->rows_f32 + (size_t)thread * job->b->rows_f32_stride;
    for (int i = 0; i < job->count; i++) {
        const folo_tensor *w = job->w[i];
        int n_rows = (int)w->shape[0];
        size_t begin, end;
        folo_split((size_t)n_rows, FOLO_CPU_MATMUL_ROWS, thread, n_threads, &begin, &end);
        if (begin < end)
            folo_cpu_matmul(job->y[i], (size_t)n_rows, job->x, job->n_tokens, job->K, w->data,
                            w->dtype, (int)begin, (int)end, rows_f32);
    }
}

static void matmul1(cpu_backend *b, float *y, const float *x, int n_tokens, const folo_tensor *w) {
    matmul_job job = {.b = b,
                      .x = x,
                      .n_tokens = n_tokens,
                      .K = (int)w->shape[1],
                      .count = 1,
                      .y = {y},
                      .w = {w}};
    folo_pool_run(b->pool, matmul_worker, &job);
}

/* Causal attention of every (token, query head) of the batch for one layer. */
typedef struct attention_job {
    const cpu_backend *b;
    const folo_batch *batch;
    const float *k_cache; /* [n_slots, Hkv, D] this layer */
    const float *v_cache; /* [n_slots, Hkv, D] this layer */
} attention_job;

static void attention_worker(void *ctx, int thread, int n_threads) {
    const attention_job *job = ctx;
    const folo_config *c = &job->b->model->config;
    const cpu_scratch *s = &job->b->s;
    int Hq = c->n_heads, D = c->head_dim, group = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)D);
    int n_items = job->batch->n_tokens * Hq;
    /* Items interleave across threads: late tokens of a prefill have long
     * contexts, and striding spreads them evenly. */
    for (int item = thread; item < n_items; item += n_threads) {
        int t = item / Hq, head = item % Hq;
        int seq = s->token_seq[t];
        const int32_t *table =
            job->batch->block_tables + (size_t)seq * job->batch->max_blocks_per_seq;
        size_t offset = (size_t)t * Hq * D + (size_t)head * D;
        folo_cpu_attention(s->att + offset, s->q + offset, job->k_cache, job->v_cache, table,
                           job->batch->positions[t] + 1, job->b->base.kv_block_size, c->n_kv_heads,
                           head / group, D, scale);
    }
}

/* ---- the forward pass ---------------------------------------------------- */

static void embed_tokens(cpu_backend *b, const folo_batch *batch) {
    const folo_tensor *e = &b->model->embed;
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
    for (int seq = 0; seq < batch->n_seqs; seq++)
        for (int t = batch->seq_starts[seq]; t < batch->seq_starts[seq + 1]; t++)
            b->s.token_seq[t] = seq;
}

/* DESIGN §4 steps 1-6: h = rmsnorm(x); q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ;
 * per-head q/k norms; RoPE; K and V into the cache; x += attention · Woᵀ. */
static void attention_block(cpu_backend *b, int layer, const folo_batch *batch) {
    const folo_config *c = &b->model->config;
    const folo_layer_weights *w = &b->model->layers[layer];
    const cpu_layer_norms *n = &b->norms[layer];
    cpu_scratch *s = &b->s;
    int T = batch->n_tokens, H = c->hidden_size, D = c->head_dim, half = D / 2;
    int Hq = c->n_heads, Hkv = c->n_kv_heads;
    float eps = c->rms_norm_eps;

    for (int t = 0; t < T; t++)
        folo_cpu_rmsnorm(s->h + (size_t)t * H, s->x + (size_t)t * H, n->input, H, eps);

    matmul_job qkv = {.b = b,
                      .x = s->h,
                      .n_tokens = T,
                      .K = H,
                      .count = 3,
                      .y = {s->q, s->k, s->v},
                      .w = {&w->wq, &w->wk, &w->wv}};
    folo_pool_run(b->pool, matmul_worker, &qkv);

    size_t slot_floats = (size_t)Hkv * D;
    size_t layer_floats = (size_t)b->n_slots * slot_floats;
    float *k_cache = b->k_cache + (size_t)layer * layer_floats; /* [n_slots, Hkv, D] */
    float *v_cache = b->v_cache + (size_t)layer * layer_floats; /* [n_slots, Hkv, D] */
    for (int t = 0; t < T; t++) {
        float *q = s->q + (size_t)t * Hq * D;  /* [Hq, D] */
        float *k = s->k + (size_t)t * Hkv * D; /* [Hkv, D] */
        for (int head = 0; head < Hq; head++)
            folo_cpu_rmsnorm(q + head * D, q + head * D, n->q, D, eps);
        for (int head = 0; head < Hkv; head++)
            folo_cpu_rmsnorm(k + head * D, k + head * D, n->k, D, eps);
        const float *cos_half = s->rope_cos + (size_t)t * half,
                    *sin_half = s->rope_sin + (size_t)t * half;
        folo_cpu_rope(q, Hq, D, cos_half, sin_half);
        folo_cpu_rope(k, Hkv, D, cos_half, sin_half);
        size_t slot = (size_t)batch->slot_mapping[t];
        memcpy(k_cache + slot * slot_floats, k, slot_floats * sizeof(float));
        memcpy(v_cache + slot * slot_floats, s->v + (size_t)t * slot_floats,
               slot_floats * sizeof(float));
    }

    attention_job att = {.b = b, .batch = batch, .k_cache = k_cache, .v_cache = v_cache};
    folo_pool_run(b->pool, attention_worker, &att);

    matmul1(b, s->h, s->att, T, &w->wo);
    folo_cpu_add(s->x, s->h, (size_t)T * H);
}

/* DESIGN §4 step 7: h = rmsnorm(x); x += (silu(h·Wgateᵀ) ⊙ h·Wupᵀ) · Wdownᵀ. */
static void mlp_block(cpu_backend *b, int layer, const folo_batch *batch) {
    const folo_config *c = &b->model->config;
    const folo_layer_weights *w = &b->model->layers[layer];
    cpu_scratch *s = &b->s;
    int T = batch->n_tokens, H = c->hidden_size, I = c->intermediate_size;

    for (int t = 0; t < T; t++)
        folo_cpu_rmsnorm(s->h + (size_t)t * H, s->x + (size_t)t * H, b->norms[layer].post, H,
                         c->rms_norm_eps);
    matmul_job gate_up = {.b = b,
                          .x = s->h,
                          .n_tokens = T,
                          .K = H,
                          .count = 2,
                          .y = {s->gate, s->up},
                          .w = {&w->w_gate, &w->w_up}};
    folo_pool_run(b->pool, matmul_worker, &gate_up);
    folo_cpu_silu_mul(s->gate, s->up, (size_t)T * I);
    matmul1(b, s->h, s->gate, T, &w->w_down);
    folo_cpu_add(s->x, s->h, (size_t)T * H);
}

/* logits [R, V] = norm(x[logit_rows]) · lm_headᵀ. */
static void lm_head(cpu_backend *b, const folo_batch *batch, float *logits) {
    const folo_config *c = &b->model->config;
    int H = c->hidden_size, R = batch->n_logit_rows;
    for (int r = 0; r < R; r++)
        folo_cpu_rmsnorm(b->s.h + (size_t)r * H, b->s.x + (size_t)batch->logit_rows[r] * H,
                         b->final_norm, H, c->rms_norm_eps);
    matmul1(b, logits, b->s.h, R, &b->model->lm_head);
}

/* ---- batch checks and scratch -------------------------------------------- */

static int validate_batch(const cpu_backend *b, const folo_batch *batch, const float *logits,
                          folo_error *err) {
    const folo_config *c = &b->model->config;
    int bs = b->base.kv_block_size;
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
    for (int seq = 0; seq < batch->n_seqs; seq++)
        if (batch->seq_starts[seq + 1] <= batch->seq_starts[seq] ||
            batch->seq_starts[seq + 1] > batch->n_tokens)
            return folo_fail(err, "batch: sequence %d spans tokens %d..%d of %d", seq,
                             batch->seq_starts[seq], batch->seq_starts[seq + 1], batch->n_tokens);
    for (int seq = 0; seq < batch->n_seqs; seq++) {
        int start = batch->seq_starts[seq], end = batch->seq_starts[seq + 1];
        int len = batch->seq_lens[seq];
        if (len < 1 || (int64_t)len > (int64_t)batch->max_blocks_per_seq * bs)
            return folo_fail(err, "batch: sequence %d length %d outside [1, %lld]", seq, len,
                             (long long)batch->max_blocks_per_seq * bs);
        const int32_t *table = batch->block_tables + (size_t)seq * batch->max_blocks_per_seq;
        for (int blk = 0; blk < (len + bs - 1) / bs; blk++)
            if (table[blk] < 0 || table[blk] >= b->base.kv_n_blocks)
                return folo_fail(
                    err, "batch: sequence %d block table entry %d is %d (pool has %d blocks)", seq,
                    blk, table[blk], b->base.kv_n_blocks);
        for (int t = start; t < end; t++) {
            int id = batch->token_ids[t], pos = batch->positions[t];
            if (id < 0 || id >= c->vocab_size)
                return folo_fail(err, "batch: token %d id %d outside the vocabulary [0, %d)", t, id,
                                 c->vocab_size);
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
    return 0;
}

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
    size_t total = buffer_floats(cap_tokens, 1); /* token_seq, int32 */
    for (size_t i = 0; i < n_parts; i++) total += buffer_floats(cap_tokens, parts[i].width);
    float *block = folo_alloc_large(total * sizeof(float));
    if (!block)
        return folo_fail(err, "cpu backend: cannot allocate %zu bytes of activations for %d tokens",
                         total * sizeof(float), cap_tokens);
    folo_free_large(s->block);
    s->block = block;
    s->bytes = total * sizeof(float);
    s->cap_tokens = cap_tokens;
    float *next = block;
    for (size_t i = 0; i < n_parts; i++) {
        *parts[i].ptr = next;
        next += buffer_floats(cap_tokens, parts[i].width);
    }
    s->token_seq = (int32_t *)next;
    return 0;
}

static int ensure_scratch(cpu_backend *b, int n_tokens, folo_error *err) {
    if (n_tokens <= b->s.cap_tokens) return 0;
    if (scratch_alloc(&b->s, &b->model->config, n_tokens, err) != 0) return -1;
    b->base.scratch_bytes = b->s.bytes + (size_t)b->n_threads * b->rows_f32_stride * sizeof(float);
    return 0;
}

static int cpu_forward(folo_backend *base, const folo_batch *batch, float *logits,
                       folo_error *err) {
    cpu_backend *b = (cpu_backend *)base;
    if (validate_batch(b, batch, logits, err) != 0) return -1;
    if (ensure_scratch(b, batch->n_tokens, err) != 0) return -1;
    embed_tokens(b, batch);
    prepare_positions(b, batch);
    for (int layer = 0; layer < b->model->config.n_layers; layer++) {
        attention_block(b, layer, batch);
        mlp_block(b, layer, batch);
    }
    if (batch->n_logit_rows > 0) lm_head(b, batch, logits);
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
    free(b->norms);
    free(b->inv_freq);
    free(b);
}

static void norm_to_f32(float *dst, const folo_tensor *t, int n) {
    folo_to_f32(t->dtype, t->data, dst, (size_t)n);
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
    if (D % 2 != 0 || c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads != 0) {
        folo_fail(err,
                  "cpu backend: unsupported head layout (head_dim %d, %d query heads, %d kv heads)",
                  D, c->n_heads, c->n_kv_heads);
        return NULL;
    }

    cpu_backend *b = folo_calloc(1, sizeof *b);
    b->base.name = "cpu";
    b->base.kv_block_size = block_size;
    b->base.kv_n_blocks = opt->kv_n_blocks;
    b->base.forward = cpu_forward;
    b->base.destroy = cpu_destroy;
    b->model = model;
    b->pool = folo_pool_create(opt->n_threads);
    b->n_threads = folo_pool_size(b->pool);
    b->n_slots = opt->kv_n_blocks * block_size;

    size_t cache_bytes = (size_t)L * b->n_slots * c->n_kv_heads * D * sizeof(float);
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
    int max_k = H > I ? H : I;
    if (c->n_heads * D > max_k) max_k = c->n_heads * D;
    b->rows_f32_stride = (size_t)FOLO_CPU_MATMUL_ROWS * max_k;
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

    int cap = b->n_slots < DEFAULT_MAX_TOKENS ? b->n_slots : DEFAULT_MAX_TOKENS;
    if (ensure_scratch(b, cap, err) != 0) {
        cpu_destroy(&b->base);
        return NULL;
    }
    return &b->base;
}
