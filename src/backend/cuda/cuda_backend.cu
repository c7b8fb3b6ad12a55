/* The CUDA backend: the Qwen3 forward pass of DESIGN §4 on one GPU, over a
 * flat batch of tokens from several sequences, behind the vtable of
 * backend/backend.h. It computes what the CPU backend computes
 * (cpu/cpu_backend.c is the reference the GPU tests compare with), in the
 * number formats of cuda/kernels.h: bf16 weights, KV cache and matmul
 * inputs, f32 everywhere else.
 *
 * It owns, all allocated at creation:
 *   - the weights, one device allocation, uploaded once: each layer's q, k,
 *     v projections stacked into one [(Hq + 2·Hkv)·D, H] matrix and gate/up
 *     into one [2I, H] (one matmul each), every matrix bf16 (f32 and f16
 *     checkpoints rounded to bf16 on upload), norm weights f32; a tied
 *     lm_head is the embedding itself. A GPTQ checkpoint's linears stay
 *     4-bit, each apart in the repacked rows of model/gptq.h, multiplied by
 *     cuda/gptq.cu into the same outputs (q, k, v side by side as the fused
 *     matmul leaves them);
 *   - the paged KV pool, bf16, K and V each [L, n_slots, Hkv, D] with
 *     slot = block · block_size + offset;
 *   - the activation scratch for min(KV slots, max_batch_tokens or
 *     DEFAULT_MAX_TOKENS) tokens, the logits buffer and the batch metadata
 *     buffers; each grows only when a batch needs more, so the steady-state
 *     step allocates nothing;
 *   - a stream, a cuBLAS handle and its workspace;
 *   - the CUDA graphs of decode steps, captured as batch sizes are met.
 *
 * A forward checks the batch on the host (ids, positions, slots and block
 * tables in range, slot_mapping consistent with the block tables) so that
 * no kernel indexes out of bounds, sends its metadata in one copy, runs the
 * layers (the residual add of each block is fused into the norm that
 * follows it), and copies back the logits of logit_rows, or only the argmax
 * of the rows that ask for no more (folo_batch.argmax_only). Every
 * call ends with the stream synchronized, so the host buffers it was given
 * may be reused as soon as it returns, and a failure leaves nothing in
 * flight. Called by the engine's model runner and the single-sequence tools
 * through backend/device.h; it never sees requests. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/common.cuh"

extern "C" {
#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "core/alloc.h"
#include "core/dtype.h"
#include "core/log.h"
#include "core/timer.h"
}

/* Batch size the scratch is first sized for when the pool holds more slots. */
#define DEFAULT_MAX_TOKENS 1024
/* Elements converted to bf16 on the host per upload copy (f32/f16 weights). */
#define UPLOAD_CHUNK ((size_t)4 << 20)
/* cuBLAS workspace: given once, so no matmul allocates. */
#define CUBLAS_WORKSPACE_BYTES ((size_t)32 << 20)
/* Alignment of every buffer carved out of a device allocation. */
#define DEVICE_ALIGN 256

/* A layer's linears in checkpoint order (a GPTQ model keeps them apart). */
enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, N_LINEARS };

typedef struct cuda_layer {
    uint16_t *w_qkv;     /* [(Hq + 2·Hkv)·D, H] bf16: q rows, then k, then v */
    uint16_t *w_o;       /* [H, Hq·D] bf16 */
    uint16_t *w_gate_up; /* [2I, H] bf16: gate rows, then up rows */
    uint16_t *w_down;    /* [H, I] bf16 */
    /* GPTQ models instead (the bf16 matrices above are then NULL): */
    void *q_bytes[N_LINEARS];          /* device bytes of each linear */
    folo_cuda_qlinear q[N_LINEARS];    /* views of them, set at upload */
    float *input_norm;   /* [H] */
    float *post_norm;    /* [H] */
    float *q_norm;       /* [D] */
    float *k_norm;       /* [D] */
} cuda_layer;

/* Activations of one forward (device), row-major over the batch's tokens. */
typedef struct cuda_scratch {
    int cap_tokens; /* rows every buffer below holds */
    void *block;    /* the one allocation they point into */
    size_t bytes;
    float *x;       /* [T, H] residual stream */
    float *y;       /* [T, H] attention / MLP output, added into x by the next norm */
    float *qkv;     /* [T, (Hq + 2·Hkv)·D] fused projection output; q normed and roped in place */
    float *gate_up; /* [T, 2I] */
    uint16_t *h;    /* [T, H] bf16 normed input of the next matmul */
    uint16_t *att;  /* [T, Hq·D] bf16 attention output */
    uint16_t *act;  /* [T, I] bf16 silu(gate) · up */
    float *attn_partials; /* [FOLO_CUDA_ATTN_PARTIALS, D + 2] split decode shares */
} cuda_scratch;

/* Device views of one batch's metadata, all inside meta_dev, and the sizes
 * the kernels are launched with (a graphed decode's are padded). */
typedef struct cuda_batch_meta {
    int n_tokens, n_logit_rows, max_blocks_per_seq;
    int max_ctx; /* a bound on every token's position + 1 */
    const int32_t *token_ids;    /* [T] */
    const int32_t *positions;    /* [T] */
    const int32_t *slot_mapping; /* [T] */
    const int32_t *token_seq;    /* [T] sequence index of each token */
    const int32_t *logit_rows;   /* [R] */
    const int32_t *block_tables; /* [n_seqs, max_blocks_per_seq] */
    const int32_t *tiles;         /* [n_tiles, 2] the tiled attention kernel's query tiles */
    int n_tiles;
    const int32_t *decode_tokens; /* [n_decode] the decode kernel's; NULL: 0..n_decode-1 */
    int n_decode;
} cuda_batch_meta;

/* A sequence with this many tokens in a batch takes the tiled (tensor-core)
 * attention kernel; the tokens of the others, the decode kernel. */
#define TILED_ATTENTION_MIN_ROWS 16

/* Decode steps (one token per sequence, every token a logit row) of up to
 * GRAPH_MAX_SEQS sequences replay a CUDA graph captured for the batch
 * padded up the ladder 1, 2, 4, 8, 16, 24, ... (steps of 8, as vLLM's) and
 * for block tables padded to a power-of-two width of at least
 * GRAPH_MIN_TABLE: the whole forward is one launch instead of ~10 per
 * layer. A graph is captured the first time its (batch, width) is met. */
#define GRAPH_MAX_SEQS 512
#define GRAPH_MIN_TABLE 16
#define GRAPH_LADDER (3 + GRAPH_MAX_SEQS / 8) /* 1, 2, 4, then 8..512 by 8 */
#define GRAPH_WIDTHS 24                       /* table widths 2^4 .. 2^27 */

typedef struct cuda_graph {
    cudaGraphExec_t exec; /* NULL until captured */
} cuda_graph;

typedef struct cuda_backend {
    folo_backend base; /* first, so a folo_backend * is a cuda_backend * */
    const folo_model *model;
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *cublas_workspace; /* [CUBLAS_WORKSPACE_BYTES] */
    int n_slots; /* (kv_n_blocks + 1) · kv_block_size: a spare block past the pool
                    takes the K and V of a graphed decode's padding tokens */
    void *weight_block;     /* the one allocation every weight below points into */
    size_t weight_bytes;
    cuda_layer *layers; /* [L] (host array of device pointers) */
    uint16_t *embed;    /* [V, H] bf16 */
    uint16_t *lm_head;  /* [V, H] bf16; == embed when tied; NULL when quantized */
    void *lm_head_q_bytes;        /* a GPTQ lm_head's device bytes, else NULL */
    folo_cuda_qlinear lm_head_q;  /* its view */
    bool gptq;                    /* the decoder linears are GPTQ 4-bit */
    uint16_t *dequant;  /* [FOLO_CUDA_GPTQ_DEQUANT_ELEMS] bf16 GPTQ rows of a wide matmul */
    float *final_norm;  /* [H] */
    float *inv_freq;    /* [D/2] RoPE inverse frequencies */
    uint16_t *k_cache;  /* [L, n_slots, Hkv, D] bf16 */
    uint16_t *v_cache;  /* [L, n_slots, Hkv, D] bf16 */
    cuda_scratch s;
    float *logits; /* [logits_cap_rows, V] device */
    int logits_cap_rows;
    int32_t *argmax_dev;  /* [logits_cap_rows] each logit row's argmax */
    int32_t *argmax_host; /* [logits_cap_rows] pinned copy of the same */
    int32_t *meta_dev;  /* [meta_cap] batch metadata (layout: upload_batch) */
    int32_t *meta_host; /* [meta_cap] pinned staging of the same */
    size_t meta_cap;
    bool eager;                                     /* no graphs (--enforce-eager) */
    cuda_graph graphs[GRAPH_LADDER][GRAPH_WIDTHS]; /* decode graphs by (size, width) */
    int n_graphs;
    double graph_capture_s; /* spent capturing them */
} cuda_backend;

/* ---- device memory ------------------------------------------------------- */

static int device_alloc(void **ptr, size_t bytes, const char *what, folo_error *err) {
    cudaError_t rc = cudaMalloc(ptr, bytes);
    if (rc != cudaSuccess) {
        *ptr = NULL;
        cudaGetLastError();
        return folo_fail(err, "cuda backend: cannot allocate %zu bytes of device memory for %s: %s",
                         bytes, what, cudaGetErrorString(rc));
    }
    return 0;
}

/* Carves aligned buffers out of one allocation: a first pass with base NULL
 * only counts the bytes. */
typedef struct carver {
    char *base;
    size_t used;
} carver;

static void *carve(carver *c, size_t bytes) {
    size_t offset = (c->used + DEVICE_ALIGN - 1) & ~(size_t)(DEVICE_ALIGN - 1);
    c->used = offset + bytes;
    return c->base ? c->base + offset : NULL;
}

/* ---- weights ------------------------------------------------------------- */

/* The layer's linears in LIN_ order. */
static void layer_linears(const folo_layer_weights *src, const folo_tensor *out[N_LINEARS]) {
    out[LIN_Q] = &src->wq, out[LIN_K] = &src->wk, out[LIN_V] = &src->wv, out[LIN_O] = &src->wo;
    out[LIN_GATE] = &src->w_gate, out[LIN_UP] = &src->w_up, out[LIN_DOWN] = &src->w_down;
}

static void carve_weights(cuda_backend *b, carver *c) {
    const folo_config *cfg = &b->model->config;
    size_t H = cfg->hidden_size, I = cfg->intermediate_size, D = cfg->head_dim;
    size_t V = cfg->vocab_size, Hq = cfg->n_heads, Hkv = cfg->n_kv_heads;
    size_t bf16 = sizeof(uint16_t);
    for (int layer = 0; layer < cfg->n_layers; layer++) {
        cuda_layer *w = &b->layers[layer];
        if (b->gptq) {
            const folo_tensor *lin[N_LINEARS];
            layer_linears(&b->model->layers[layer], lin);
            for (int i = 0; i < N_LINEARS; i++)
                w->q_bytes[i] = carve(c, folo_cuda_qlinear_bytes(lin[i]->quant));
        } else {
            w->w_qkv = (uint16_t *)carve(c, (Hq + 2 * Hkv) * D * H * bf16);
            w->w_o = (uint16_t *)carve(c, H * Hq * D * bf16);
            w->w_gate_up = (uint16_t *)carve(c, 2 * I * H * bf16);
            w->w_down = (uint16_t *)carve(c, H * I * bf16);
        }
        w->input_norm = (float *)carve(c, H * sizeof(float));
        w->post_norm = (float *)carve(c, H * sizeof(float));
        w->q_norm = (float *)carve(c, D * sizeof(float));
        w->k_norm = (float *)carve(c, D * sizeof(float));
    }
    b->embed = (uint16_t *)carve(c, V * H * bf16);
    if (b->model->lm_head.quant)
        b->lm_head_q_bytes = carve(c, folo_cuda_qlinear_bytes(b->model->lm_head.quant));
    else
        b->lm_head = cfg->tie_word_embeddings ? b->embed : (uint16_t *)carve(c, V * H * bf16);
    b->final_norm = (float *)carve(c, H * sizeof(float));
    b->inv_freq = (float *)carve(c, D / 2 * sizeof(float));
}

/* Host buffers for converting f32/f16 weights on their way up. */
typedef struct upload_staging {
    float *f32;     /* [UPLOAD_CHUNK] */
    uint16_t *bf16; /* [UPLOAD_CHUNK] */
} upload_staging;

/* dst [n] bf16 on the device = tensor t's first n elements, rounded to bf16
 * (to nearest even, as PyTorch's .to(bfloat16)) unless already bf16. */
static int upload_bf16(uint16_t *dst, const folo_tensor *t, size_t n, upload_staging *st,
                       folo_error *err) {
    if (t->dtype == FOLO_DTYPE_BF16) {
        CUDA_CHECK(cudaMemcpy(dst, t->data, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
        return 0;
    }
    size_t elem = folo_dtype_size(t->dtype);
    for (size_t first = 0; first < n; first += UPLOAD_CHUNK) {
        size_t count = n - first < UPLOAD_CHUNK ? n - first : UPLOAD_CHUNK;
        folo_to_f32(t->dtype, (const char *)t->data + first * elem, st->f32, count);
        for (size_t i = 0; i < count; i++) st->bf16[i] = folo_f32_to_bf16(st->f32[i]);
        CUDA_CHECK(
            cudaMemcpy(dst + first, st->bf16, count * sizeof(uint16_t), cudaMemcpyHostToDevice));
    }
    return 0;
}

/* dst [n] f32 on the device = tensor t (a norm weight, n <= UPLOAD_CHUNK). */
static int upload_f32(float *dst, const folo_tensor *t, size_t n, upload_staging *st,
                      folo_error *err) {
    folo_to_f32(t->dtype, t->data, st->f32, n);
    CUDA_CHECK(cudaMemcpy(dst, st->f32, n * sizeof(float), cudaMemcpyHostToDevice));
    return 0;
}

static size_t numel(const folo_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= (size_t)t->shape[i];
    return n;
}

static int upload_layer(cuda_backend *b, int layer, upload_staging *st, folo_error *err) {
    const folo_config *cfg = &b->model->config;
    const folo_layer_weights *src = &b->model->layers[layer];
    cuda_layer *w = &b->layers[layer];
    size_t H = cfg->hidden_size, D = cfg->head_dim;
    int rc = 0;
    if (b->gptq) {
        const folo_tensor *lin[N_LINEARS];
        layer_linears(src, lin);
        for (int i = 0; rc == 0 && i < N_LINEARS; i++)
            rc = folo_cuda_qlinear_upload(&w->q[i], w->q_bytes[i], lin[i]->quant, err);
    } else {
        /* Stacked matrices: each part's rows follow the previous part's. */
        size_t q_elems = numel(&src->wq), k_elems = numel(&src->wk);
        size_t gate_elems = numel(&src->w_gate);
        rc = upload_bf16(w->w_qkv, &src->wq, q_elems, st, err) != 0 ||
             upload_bf16(w->w_qkv + q_elems, &src->wk, k_elems, st, err) != 0 ||
             upload_bf16(w->w_qkv + q_elems + k_elems, &src->wv, numel(&src->wv), st, err) != 0 ||
             upload_bf16(w->w_o, &src->wo, numel(&src->wo), st, err) != 0 ||
             upload_bf16(w->w_gate_up, &src->w_gate, gate_elems, st, err) != 0 ||
             upload_bf16(w->w_gate_up + gate_elems, &src->w_up, numel(&src->w_up), st, err) != 0 ||
             upload_bf16(w->w_down, &src->w_down, numel(&src->w_down), st, err) != 0;
    }
    if (rc != 0 || upload_f32(w->input_norm, &src->input_norm, H, st, err) != 0 ||
        upload_f32(w->post_norm, &src->post_norm, H, st, err) != 0 ||
        upload_f32(w->q_norm, &src->q_norm, D, st, err) != 0 ||
        upload_f32(w->k_norm, &src->k_norm, D, st, err) != 0)
        return folo_fail_prefix(err, "uploading layer %d", layer);
    return 0;
}

static int upload_weights(cuda_backend *b, folo_error *err) {
    const folo_model *m = b->model;
    const folo_config *cfg = &m->config;
    b->layers = (cuda_layer *)folo_calloc((size_t)cfg->n_layers, sizeof *b->layers);
    carver count = {NULL, 0};
    carve_weights(b, &count);
    if (device_alloc(&b->weight_block, count.used, "the weights", err) != 0) return -1;
    b->weight_bytes = count.used;
    carver place = {(char *)b->weight_block, 0};
    carve_weights(b, &place);

    upload_staging st;
    st.f32 = (float *)folo_alloc_large(UPLOAD_CHUNK * sizeof(float));
    st.bf16 = (uint16_t *)folo_alloc_large(UPLOAD_CHUNK * sizeof(uint16_t));
    int rc = 0;
    if (!st.f32 || !st.bf16)
        rc = folo_fail(err, "cuda backend: cannot allocate the upload staging buffers");
    for (int layer = 0; rc == 0 && layer < cfg->n_layers; layer++)
        rc = upload_layer(b, layer, &st, err);
    if (rc == 0) rc = upload_bf16(b->embed, &m->embed, numel(&m->embed), &st, err);
    if (rc == 0 && m->lm_head.quant)
        rc = folo_cuda_qlinear_upload(&b->lm_head_q, b->lm_head_q_bytes, m->lm_head.quant, err);
    else if (rc == 0 && !cfg->tie_word_embeddings)
        rc = upload_bf16(b->lm_head, &m->lm_head, numel(&m->lm_head), &st, err);
    if (rc == 0) rc = upload_f32(b->final_norm, &m->final_norm, (size_t)cfg->hidden_size, &st, err);
    if (rc == 0) {
        folo_cpu_rope_inv_freq(st.f32, cfg->head_dim, cfg->rope_theta);
        cudaError_t copy = cudaMemcpy(
            b->inv_freq, st.f32, (size_t)cfg->head_dim / 2 * sizeof(float), cudaMemcpyHostToDevice);
        if (copy != cudaSuccess)
            rc = folo_fail(err, "cuda backend: uploading RoPE frequencies: %s",
                           cudaGetErrorString(copy));
    }
    folo_free_large(st.f32);
    folo_free_large(st.bf16);
    return rc;
}

/* ---- scratch and metadata ------------------------------------------------ */

static void carve_scratch(cuda_scratch *s, const folo_config *cfg, carver *c) {
    size_t T = (size_t)s->cap_tokens, H = cfg->hidden_size, I = cfg->intermediate_size;
    size_t D = cfg->head_dim, Hq = cfg->n_heads, Hkv = cfg->n_kv_heads;
    s->x = (float *)carve(c, T * H * sizeof(float));
    s->y = (float *)carve(c, T * H * sizeof(float));
    s->qkv = (float *)carve(c, T * (Hq + 2 * Hkv) * D * sizeof(float));
    s->gate_up = (float *)carve(c, T * 2 * I * sizeof(float));
    s->h = (uint16_t *)carve(c, T * H * sizeof(uint16_t));
    s->att = (uint16_t *)carve(c, T * Hq * D * sizeof(uint16_t));
    s->act = (uint16_t *)carve(c, T * I * sizeof(uint16_t));
    s->attn_partials = (float *)carve(c, FOLO_CUDA_ATTN_PARTIALS * (D + 2) * sizeof(float));
}

/* The activation peak the memory plan counts: the scratch, cuBLAS's
 * workspace, the logits and a GPTQ model's dequantization buffer. */
static void count_scratch_bytes(cuda_backend *b) {
    b->base.scratch_bytes =
        b->s.bytes + CUBLAS_WORKSPACE_BYTES +
        (size_t)b->logits_cap_rows * b->model->config.vocab_size * sizeof(float) +
        (b->dequant ? FOLO_CUDA_GPTQ_DEQUANT_ELEMS * sizeof(uint16_t) : 0);
}

/* Graphs hold the addresses of the scratch, logits and metadata buffers:
 * when one of them moves, every graph goes. */
static void drop_graphs(cuda_backend *b) {
    for (int i = 0; i < GRAPH_LADDER; i++)
        for (int j = 0; j < GRAPH_WIDTHS; j++)
            if (b->graphs[i][j].exec) {
                cudaGraphExecDestroy(b->graphs[i][j].exec);
                b->graphs[i][j].exec = NULL;
            }
    b->n_graphs = 0;
}

static int ensure_scratch(cuda_backend *b, int n_tokens, folo_error *err) {
    if (n_tokens <= b->s.cap_tokens) return 0;
    drop_graphs(b);
    cuda_scratch grown = b->s;
    grown.cap_tokens = n_tokens;
    carver count = {NULL, 0};
    carve_scratch(&grown, &b->model->config, &count);
    if (device_alloc(&grown.block, count.used, "activations", err) != 0) return -1;
    cudaFree(b->s.block);
    grown.bytes = count.used;
    carver place = {(char *)grown.block, 0};
    carve_scratch(&grown, &b->model->config, &place);
    b->s = grown;
    count_scratch_bytes(b);
    return 0;
}

static int ensure_logits(cuda_backend *b, int n_rows, folo_error *err) {
    if (n_rows <= b->logits_cap_rows) return 0;
    drop_graphs(b);
    size_t V = (size_t)b->model->config.vocab_size;
    void *grown, *ids, *host;
    if (device_alloc(&grown, (size_t)n_rows * V * sizeof(float), "logits", err) != 0) return -1;
    if (device_alloc(&ids, (size_t)n_rows * sizeof(int32_t), "argmax", err) != 0) {
        cudaFree(grown);
        return -1;
    }
    cudaError_t rc = cudaMallocHost(&host, (size_t)n_rows * sizeof(int32_t));
    if (rc != cudaSuccess) {
        cudaFree(grown);
        cudaFree(ids);
        return folo_fail(err, "cuda backend: cannot allocate pinned memory for the argmax: %s",
                         cudaGetErrorString(rc));
    }
    cudaFree(b->logits);
    cudaFree(b->argmax_dev);
    cudaFreeHost(b->argmax_host);
    b->logits = (float *)grown;
    b->argmax_dev = (int32_t *)ids;
    b->argmax_host = (int32_t *)host;
    b->logits_cap_rows = n_rows;
    count_scratch_bytes(b);
    return 0;
}

static int ensure_meta(cuda_backend *b, size_t n_ints, folo_error *err) {
    if (n_ints <= b->meta_cap) return 0;
    drop_graphs(b);
    void *dev, *host;
    if (device_alloc(&dev, n_ints * sizeof(int32_t), "batch metadata", err) != 0) return -1;
    cudaError_t rc = cudaMallocHost(&host, n_ints * sizeof(int32_t));
    if (rc != cudaSuccess) {
        cudaFree(dev);
        return folo_fail(err, "cuda backend: cannot allocate %zu bytes of pinned memory: %s",
                         n_ints * sizeof(int32_t), cudaGetErrorString(rc));
    }
    cudaFree(b->meta_dev);
    cudaFreeHost(b->meta_host);
    b->meta_dev = (int32_t *)dev;
    b->meta_host = (int32_t *)host;
    b->meta_cap = n_ints;
    return 0;
}

/* Packs the batch's arrays (and each token's sequence index) into the pinned
 * buffer as [ids T | positions T | slots T | token_seq T | logit_rows R |
 * block_tables n_seqs·max_blocks | attention tiles | decode tokens] and
 * sends them in one copy. */
static int upload_batch(cuda_backend *b, const folo_batch *batch, cuda_batch_meta *m,
                        folo_error *err) {
    size_t T = (size_t)batch->n_tokens, R = (size_t)batch->n_logit_rows;
    size_t table_ints = (size_t)batch->n_seqs * batch->max_blocks_per_seq;
    int longest = 0;
    for (int seq = 0; seq < batch->n_seqs; seq++)
        if (batch->seq_starts[seq + 1] - batch->seq_starts[seq] > longest)
            longest = batch->seq_starts[seq + 1] - batch->seq_starts[seq];
    int tiled = longest >= TILED_ATTENTION_MIN_ROWS &&
                folo_cuda_attention_tiled_ok(b->model->config.head_dim);
    size_t tile_ints =
        tiled ? 2 * (size_t)folo_cuda_attention_max_tiles(batch->n_tokens, batch->n_seqs) : 0;
    size_t n_ints = 4 * T + R + table_ints + tile_ints + (tiled ? T : 0);
    if (ensure_meta(b, n_ints, err) != 0) return -1;
    int32_t *host = b->meta_host;
    memcpy(host, batch->token_ids, T * sizeof(int32_t));
    memcpy(host + T, batch->positions, T * sizeof(int32_t));
    memcpy(host + 2 * T, batch->slot_mapping, T * sizeof(int32_t));
    for (int seq = 0; seq < batch->n_seqs; seq++)
        for (int t = batch->seq_starts[seq]; t < batch->seq_starts[seq + 1]; t++)
            host[3 * T + (size_t)t] = seq;
    if (R > 0) memcpy(host + 4 * T, batch->logit_rows, R * sizeof(int32_t));
    memcpy(host + 4 * T + R, batch->block_tables, table_ints * sizeof(int32_t));
    int32_t *tiles = host + 4 * T + R + table_ints, *decode_tokens = tiles + tile_ints;
    m->n_tiles = 0;
    m->n_decode = batch->n_tokens;
    if (tiled) {
        m->n_tiles = folo_cuda_attention_tiles(batch->seq_starts, batch->n_seqs,
                                               TILED_ATTENTION_MIN_ROWS, tiles, decode_tokens,
                                               &m->n_decode);
        n_ints = 4 * T + R + table_ints + tile_ints + (size_t)m->n_decode;
    }
    CUDA_CHECK(cudaMemcpyAsync(b->meta_dev, host, n_ints * sizeof(int32_t), cudaMemcpyHostToDevice,
                               b->stream));
    const int32_t *dev = b->meta_dev;
    m->token_ids = dev;
    m->positions = dev + T;
    m->slot_mapping = dev + 2 * T;
    m->token_seq = dev + 3 * T;
    m->logit_rows = dev + 4 * T;
    m->block_tables = dev + 4 * T + R;
    m->tiles = dev + 4 * T + R + table_ints;
    m->decode_tokens = tiled ? m->tiles + tile_ints : NULL;
    m->n_tokens = batch->n_tokens;
    m->n_logit_rows = batch->n_logit_rows;
    m->max_blocks_per_seq = batch->max_blocks_per_seq;
    m->max_ctx = 1;
    for (int seq = 0; seq < batch->n_seqs; seq++)
        if (batch->seq_lens[seq] > m->max_ctx) m->max_ctx = batch->seq_lens[seq];
    return 0;
}

/* ---- the forward pass ---------------------------------------------------- */

/* y[:, :N] (row stride ldy) = x · Wᵀ for a GPTQ linear W [N, K]. */
static int gptq_linear(cuda_backend *b, float *y, int ldy, const uint16_t *x, int T,
                       const folo_cuda_qlinear *w, folo_error *err) {
    return folo_cuda_gptq_matmul(b->cublas, y, ldy, x, T, w, b->dequant, b->stream, err);
}

/* DESIGN §4 steps 1-7 for one layer. On entry x holds the residual stream
 * and, after the first layer, y the previous MLP's output still to be
 * added; on exit y holds this layer's MLP output. */
static int run_layer(cuda_backend *b, int layer, const cuda_batch_meta *m, folo_error *err) {
    const folo_config *c = &b->model->config;
    const cuda_layer *w = &b->layers[layer];
    cuda_scratch *s = &b->s;
    cudaStream_t st = b->stream;
    int T = m->n_tokens, H = c->hidden_size, I = c->intermediate_size, D = c->head_dim;
    int Hq = c->n_heads, Hkv = c->n_kv_heads;
    float eps = c->rms_norm_eps;
    size_t layer_elems = (size_t)b->n_slots * Hkv * D;
    uint16_t *k_cache = b->k_cache + (size_t)layer * layer_elems; /* [n_slots, Hkv, D] */
    uint16_t *v_cache = b->v_cache + (size_t)layer * layer_elems; /* [n_slots, Hkv, D] */

    int QKV = (Hq + 2 * Hkv) * D;
    if (folo_cuda_rmsnorm(s->h, s->x, layer > 0 ? s->y : NULL, NULL, T, w->input_norm, H, eps, st,
                          err) != 0 ||
        (b->gptq ? gptq_linear(b, s->qkv, QKV, s->h, T, &w->q[LIN_Q], err) != 0 ||
                       gptq_linear(b, s->qkv + Hq * D, QKV, s->h, T, &w->q[LIN_K], err) != 0 ||
                       gptq_linear(b, s->qkv + (Hq + Hkv) * D, QKV, s->h, T, &w->q[LIN_V], err) != 0
                 : folo_cuda_gemm(b->cublas, s->qkv, s->h, w->w_qkv, T, QKV, H, err) != 0) ||
        folo_cuda_qk_norm_rope_cache(s->qkv, k_cache, v_cache, w->q_norm, w->k_norm, b->inv_freq,
                                     m->positions, m->slot_mapping, T, Hq, Hkv, D, eps, st,
                                     err) != 0 ||
        folo_cuda_attention(s->att, s->qkv, k_cache, v_cache, m->block_tables,
                            m->max_blocks_per_seq, m->token_seq, m->positions, m->max_ctx,
                            m->tiles, m->n_tiles, m->decode_tokens, m->n_decode,
                            s->attn_partials, Hq, Hkv, D, b->base.kv_block_size, st,
                            err) != 0 ||
        (b->gptq ? gptq_linear(b, s->y, H, s->att, T, &w->q[LIN_O], err)
                 : folo_cuda_gemm(b->cublas, s->y, s->att, w->w_o, T, H, Hq * D, err)) != 0 ||
        folo_cuda_rmsnorm(s->h, s->x, s->y, NULL, T, w->post_norm, H, eps, st, err) != 0 ||
        (b->gptq ? gptq_linear(b, s->gate_up, 2 * I, s->h, T, &w->q[LIN_GATE], err) != 0 ||
                       gptq_linear(b, s->gate_up + I, 2 * I, s->h, T, &w->q[LIN_UP], err) != 0
                 : folo_cuda_gemm(b->cublas, s->gate_up, s->h, w->w_gate_up, T, 2 * I, H, err) !=
                       0) ||
        folo_cuda_silu_mul(s->act, s->gate_up, T, I, st, err) != 0 ||
        (b->gptq ? gptq_linear(b, s->y, H, s->act, T, &w->q[LIN_DOWN], err)
                 : folo_cuda_gemm(b->cublas, s->y, s->act, w->w_down, T, H, I, err)) != 0)
        return folo_fail_prefix(err, "layer %d", layer);
    return 0;
}

/* The kernels of one forward, all on the stream (capturable): embedding,
 * the layers, the final norm and lm_head of the logit rows, and their
 * argmax when asked. */
static int launch_forward(cuda_backend *b, const cuda_batch_meta *m, bool argmax,
                          folo_error *err) {
    const folo_config *c = &b->model->config;
    int T = m->n_tokens, R = m->n_logit_rows, H = c->hidden_size, V = c->vocab_size;
    if (folo_cuda_embed(b->s.x, b->embed, m->token_ids, T, H, b->stream, err) != 0) return -1;
    for (int layer = 0; layer < c->n_layers; layer++)
        if (run_layer(b, layer, m, err) != 0) return -1;
    if (R == 0) return 0;
    /* The last residual add and the final norm, for the logit rows only. */
    if (folo_cuda_rmsnorm(b->s.h, b->s.x, b->s.y, m->logit_rows, R, b->final_norm, H,
                          c->rms_norm_eps, b->stream, err) != 0 ||
        (b->lm_head ? folo_cuda_gemm(b->cublas, b->logits, b->s.h, b->lm_head, R, V, H, err)
                    : gptq_linear(b, b->logits, V, b->s.h, R, &b->lm_head_q, err)) != 0)
        return -1;
    if (argmax && folo_cuda_argmax(b->argmax_dev, b->logits, R, V, b->stream, err) != 0)
        return -1;
    return 0;
}

/* Sends the logit rows back: the argmax of the rows argmax_only asks for,
 * the logits of the others, a run of consecutive rows per copy. */
static int copy_back(cuda_backend *b, const folo_batch *batch, float *logits, folo_error *err) {
    int R = batch->n_logit_rows, V = b->model->config.vocab_size;
    if (batch->argmax_only && R > 0)
        CUDA_CHECK(cudaMemcpyAsync(b->argmax_host, b->argmax_dev, (size_t)R * sizeof(int32_t),
                                   cudaMemcpyDeviceToHost, b->stream));
    size_t row_bytes = (size_t)V * sizeof(float);
    for (int r = 0; r < R;) {
        if (batch->argmax_only && batch->argmax_only[r]) {
            r++;
            continue;
        }
        int end = r + 1;
        while (end < R && !(batch->argmax_only && batch->argmax_only[end])) end++;
        CUDA_CHECK(cudaMemcpyAsync(logits + (size_t)r * V, b->logits + (size_t)r * V,
                                   (size_t)(end - r) * row_bytes, cudaMemcpyDeviceToHost,
                                   b->stream));
        r = end;
    }
    return 0;
}

/* ---- decode graphs ------------------------------------------------------- */

static int ladder_index(int n_seqs) {
    return n_seqs <= 1 ? 0 : n_seqs <= 2 ? 1 : n_seqs <= 4 ? 2 : 2 + (n_seqs + 7) / 8;
}
static int ladder_size(int index) { return index < 3 ? 1 << index : 8 * (index - 2); }

/* A decode: one token per sequence, each a logit row, in order. */
static bool graphable(const cuda_backend *b, const folo_batch *batch) {
    if (b->eager || batch->n_tokens != batch->n_seqs || batch->n_tokens > GRAPH_MAX_SEQS ||
        batch->n_logit_rows != batch->n_tokens)
        return false;
    for (int r = 0; r < batch->n_logit_rows; r++)
        if (batch->logit_rows[r] != r) return false;
    return true;
}

/* upload_batch for a decode padded to B tokens and tables of width W: the
 * padding tokens are token 0 at position 0 of a sequence of their own whose
 * table points at the spare block past the pool, where their K and V go. */
static int upload_decode(cuda_backend *b, const folo_batch *batch, int B, int W,
                         cuda_batch_meta *m, folo_error *err) {
    int n = batch->n_tokens, spare = b->base.kv_n_blocks, bs = b->base.kv_block_size;
    size_t n_ints = 5 * (size_t)B + (size_t)B * W;
    if (ensure_meta(b, n_ints, err) != 0) return -1;
    int32_t *ids = b->meta_host, *pos = ids + B, *slots = pos + B, *seq = slots + B;
    int32_t *rows = seq + B, *tables = rows + B;
    for (int t = 0; t < B; t++) {
        bool real = t < n;
        ids[t] = real ? batch->token_ids[t] : 0;
        pos[t] = real ? batch->positions[t] : 0;
        slots[t] = real ? batch->slot_mapping[t] : spare * bs;
        seq[t] = real ? t : n;
        rows[t] = t;
    }
    for (int s = 0; s < B; s++) {
        int32_t *row = tables + (size_t)s * W;
        if (s < n) {
            memcpy(row, batch->block_tables + (size_t)s * batch->max_blocks_per_seq,
                   (size_t)batch->max_blocks_per_seq * sizeof(int32_t));
            for (int k = batch->max_blocks_per_seq; k < W; k++) row[k] = spare;
        } else {
            for (int k = 0; k < W; k++) row[k] = spare;
        }
    }
    CUDA_CHECK(cudaMemcpyAsync(b->meta_dev, b->meta_host, n_ints * sizeof(int32_t),
                               cudaMemcpyHostToDevice, b->stream));
    const int32_t *dev = b->meta_dev;
    *m = (cuda_batch_meta){.n_tokens = B,
                           .n_logit_rows = B,
                           .max_blocks_per_seq = W,
                           .max_ctx = W * bs,
                           .token_ids = dev,
                           .positions = dev + B,
                           .slot_mapping = dev + 2 * B,
                           .token_seq = dev + 3 * B,
                           .logit_rows = dev + 4 * B,
                           .block_tables = dev + 5 * B,
                           .tiles = NULL,
                           .n_tiles = 0,
                           .decode_tokens = NULL,
                           .n_decode = B};
    return 0;
}

/* Captures the forward of meta m into an executable graph. */
static int capture(cuda_backend *b, const cuda_batch_meta *m, cudaGraphExec_t *exec,
                   folo_error *err) {
    double t0 = folo_now_s();
    CUDA_CHECK(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal));
    int rc = launch_forward(b, m, true, err);
    cudaGraph_t graph = NULL;
    cudaError_t end = cudaStreamEndCapture(b->stream, &graph);
    if (rc == 0 && end != cudaSuccess)
        rc = folo_fail(err, "cuda backend: capturing a decode graph: %s", cudaGetErrorString(end));
    if (rc == 0) {
        cudaError_t inst = cudaGraphInstantiate(exec, graph, 0);
        if (inst != cudaSuccess)
            rc = folo_fail(err, "cuda backend: instantiating a decode graph: %s",
                           cudaGetErrorString(inst));
    }
    if (graph) cudaGraphDestroy(graph);
    b->graph_capture_s += folo_now_s() - t0;
    return rc;
}

static int run_decode_graph(cuda_backend *b, const folo_batch *batch, float *logits,
                            folo_error *err) {
    int li = ladder_index(batch->n_tokens), B = ladder_size(li);
    int wi = 0;
    while ((GRAPH_MIN_TABLE << wi) < batch->max_blocks_per_seq) wi++;
    int W = GRAPH_MIN_TABLE << wi;
    if (wi >= GRAPH_WIDTHS) return folo_fail(err, "cuda backend: block table of %d blocks",
                                             batch->max_blocks_per_seq);
    if (ensure_scratch(b, B, err) != 0 || ensure_logits(b, B, err) != 0) return -1;
    cuda_batch_meta m;
    if (upload_decode(b, batch, B, W, &m, err) != 0) return -1;
    cuda_graph *g = &b->graphs[li][wi];
    if (!g->exec) {
        if (capture(b, &m, &g->exec, err) != 0) return -1;
        b->n_graphs++;
        folo_log(FOLO_LOG_DEBUG, "cuda backend: decode graph %d (batch %d, table %d) captured",
                 b->n_graphs, B, W);
    }
    CUDA_CHECK(cudaGraphLaunch(g->exec, b->stream));
    return copy_back(b, batch, logits, err);
}

/* Captures the ladder's graphs up to max_seqs sequences at the narrowest
 * table width, replaying each once over padding tokens alone (they write
 * only the spare block), so the first decodes of a run find them ready;
 * wider tables are captured when contexts grow. */
static int capture_ladder(cuda_backend *b, int max_seqs, folo_error *err) {
    if (b->eager || max_seqs < 1) return 0;
    if (max_seqs > GRAPH_MAX_SEQS) max_seqs = GRAPH_MAX_SEQS;
    folo_batch none;
    memset(&none, 0, sizeof none); /* no real tokens: all padding */
    for (int li = 0; li <= ladder_index(max_seqs); li++) {
        int B = ladder_size(li);
        if (ensure_scratch(b, B, err) != 0 || ensure_logits(b, B, err) != 0) return -1;
    }
    double t0 = folo_now_s();
    for (int li = 0; li <= ladder_index(max_seqs); li++) {
        cuda_batch_meta m;
        if (upload_decode(b, &none, ladder_size(li), GRAPH_MIN_TABLE, &m, err) != 0 ||
            capture(b, &m, &b->graphs[li][0].exec, err) != 0)
            return -1;
        b->n_graphs++;
        CUDA_CHECK(cudaGraphLaunch(b->graphs[li][0].exec, b->stream));
    }
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    folo_log(FOLO_LOG_INFO, "cuda backend: %d decode graphs (batch 1..%d) captured in %.0f ms",
             b->n_graphs, ladder_size(ladder_index(max_seqs)), (folo_now_s() - t0) * 1e3);
    return 0;
}

static int run_forward(cuda_backend *b, const folo_batch *batch, float *logits, folo_error *err) {
    if (graphable(b, batch)) return run_decode_graph(b, batch, logits, err);
    if (ensure_scratch(b, batch->n_tokens, err) != 0 ||
        ensure_logits(b, batch->n_logit_rows, err) != 0)
        return -1;
    cuda_batch_meta m = {};
    if (upload_batch(b, batch, &m, err) != 0 ||
        launch_forward(b, &m, batch->argmax_only != NULL, err) != 0)
        return -1;
    return copy_back(b, batch, logits, err);
}

static int cuda_forward(folo_backend *base, const folo_batch *batch, float *logits,
                        folo_error *err) {
    cuda_backend *b = (cuda_backend *)base;
    if (folo_batch_validate(batch, b->model->config.vocab_size, b->base.kv_block_size,
                            b->base.kv_n_blocks, logits, err) != 0)
        return -1;
    int rc = run_forward(b, batch, logits, err);
    cudaError_t sync = cudaStreamSynchronize(b->stream);
    if (rc == 0 && sync != cudaSuccess)
        rc = folo_fail(err, "cuda backend: forward failed: %s", cudaGetErrorString(sync));
    if (rc == 0 && batch->argmax_only)
        for (int r = 0; r < batch->n_logit_rows; r++)
            if (batch->argmax_only[r]) batch->argmax[r] = b->argmax_host[r];
    return rc;
}

/* Copy-on-write of shared blocks: K and V of every layer, block by block,
 * ordered on the stream before the next forward. */
static int cuda_copy_blocks(folo_backend *base, const folo_kv_copy *copies, int n_copies,
                            folo_error *err) {
    cuda_backend *b = (cuda_backend *)base;
    const folo_config *c = &b->model->config;
    int n_blocks = base->kv_n_blocks;
    for (int i = 0; i < n_copies; i++)
        if (copies[i].src < 0 || copies[i].src >= n_blocks || copies[i].dst < 0 ||
            copies[i].dst >= n_blocks)
            return folo_fail(err, "copy_blocks: pair %d (%d -> %d) outside the pool of %d blocks",
                             i, copies[i].src, copies[i].dst, n_blocks);
    size_t block_elems = (size_t)base->kv_block_size * c->n_kv_heads * c->head_dim;
    size_t layer_elems = (size_t)b->n_slots * c->n_kv_heads * c->head_dim;
    size_t bytes = block_elems * sizeof(uint16_t);
    for (int layer = 0; layer < c->n_layers; layer++) {
        for (int i = 0; i < n_copies; i++) {
            size_t src = layer * layer_elems + (size_t)copies[i].src * block_elems;
            size_t dst = layer * layer_elems + (size_t)copies[i].dst * block_elems;
            CUDA_CHECK(cudaMemcpyAsync(b->k_cache + dst, b->k_cache + src, bytes,
                                       cudaMemcpyDeviceToDevice, b->stream));
            CUDA_CHECK(cudaMemcpyAsync(b->v_cache + dst, b->v_cache + src, bytes,
                                       cudaMemcpyDeviceToDevice, b->stream));
        }
    }
    return 0;
}

/* ---- creation ------------------------------------------------------------ */

static void cuda_destroy(folo_backend *base) {
    cuda_backend *b = (cuda_backend *)base;
    if (b->stream) cudaStreamSynchronize(b->stream);
    drop_graphs(b);
    if (b->cublas) cublasDestroy(b->cublas);
    if (b->stream) cudaStreamDestroy(b->stream);
    cudaFree(b->cublas_workspace);
    cudaFree(b->weight_block);
    cudaFree(b->dequant);
    cudaFree(b->k_cache);
    cudaFree(b->v_cache);
    cudaFree(b->s.block);
    cudaFree(b->logits);
    cudaFree(b->argmax_dev);
    cudaFreeHost(b->argmax_host);
    cudaFree(b->meta_dev);
    cudaFreeHost(b->meta_host);
    free(b->layers);
    free(b);
}

int folo_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: not sticky, but clear it */
        return 0;
    }
    return n;
}

/* Device memory kept free past the plan for what is allocated afterwards
 * outside our buffers: graph instantiation, cuBLAS's handles, the driver. */
#define PLAN_RESERVE_BYTES ((size_t)512 << 20)

/* --gpu-memory-utilization: with the weights and the activations in place,
 * the KV pool gets util × total, less everything in use on the device now
 * (ours and other processes') and PLAN_RESERVE_BYTES. Sets the pool's
 * blocks; the start-up log shows every part. */
static int plan_kv(cuda_backend *b, double util, folo_error *err) {
    const folo_config *c = &b->model->config;
    size_t free_bytes, total;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    double budget = util * (double)total, in_use = (double)(total - free_bytes);
    int bs = b->base.kv_block_size;
    size_t block_bytes = 2 * (size_t)c->n_layers * bs * c->n_kv_heads * c->head_dim * sizeof(uint16_t);
    double kv = budget - in_use - (double)PLAN_RESERVE_BYTES;
    long long n_blocks = kv > 0 ? (long long)(kv / (double)block_bytes) - 1 : 0; /* - the spare */
    if (n_blocks > INT32_MAX / bs - 1) n_blocks = INT32_MAX / bs - 1;
    folo_log(FOLO_LOG_INFO,
             "cuda memory plan: %.2f GB device x %.2f = %.2f GB; in use %.2f GB (weights %.2f, "
             "activations %.2f, CUDA and other processes %.2f), reserve %.2f; KV cache %.2f GB",
             (double)total / 1e9, util, budget / 1e9, in_use / 1e9,
             (double)b->weight_bytes / 1e9, (double)b->base.scratch_bytes / 1e9,
             (in_use - (double)b->weight_bytes - (double)b->base.scratch_bytes) / 1e9,
             (double)PLAN_RESERVE_BYTES / 1e9, n_blocks > 0 ? n_blocks * (double)block_bytes / 1e9 : 0);
    if (n_blocks < 1)
        return folo_fail(err,
                         "cuda backend: --gpu-memory-utilization %.2f of %.2f GB leaves no room "
                         "for the KV cache (%.2f GB already in use); raise it, or lower "
                         "--max-batched-tokens",
                         util, (double)total / 1e9, in_use / 1e9);
    b->base.kv_n_blocks = (int)n_blocks;
    b->n_slots = (int)(n_blocks + 1) * bs;
    return 0;
}

static int cuda_init(cuda_backend *b, const folo_backend_options *opt, folo_error *err) {
    const folo_config *c = &b->model->config;
    CUDA_CHECK(cudaSetDevice(0));
    CUDA_CHECK(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&b->cublas));
    CUBLAS_CHECK(cublasSetStream(b->cublas, b->stream));
    if (device_alloc(&b->cublas_workspace, CUBLAS_WORKSPACE_BYTES, "the cuBLAS workspace", err))
        return -1;
    CUBLAS_CHECK(cublasSetWorkspace(b->cublas, b->cublas_workspace, CUBLAS_WORKSPACE_BYTES));

    if (upload_weights(b, err) != 0) return -1;
    if ((b->gptq || b->model->lm_head.quant) &&
        device_alloc((void **)&b->dequant, FOLO_CUDA_GPTQ_DEQUANT_ELEMS * sizeof(uint16_t),
                     "GPTQ dequantization", err) != 0)
        return -1;

    /* The activations of the largest batch and the logits of the largest
     * decode step, allocated once now: with no allocator behind them their
     * peak is what is held from here on. */
    int cap = opt->max_batch_tokens > 0 ? opt->max_batch_tokens : DEFAULT_MAX_TOKENS;
    if (!opt->gpu_memory_utilization && b->n_slots < cap) cap = b->n_slots;
    int rows = opt->max_seqs > 0 ? opt->max_seqs : 1;
    if (!b->eager && rows <= GRAPH_MAX_SEQS) rows = ladder_size(ladder_index(rows));
    if (ensure_scratch(b, cap, err) != 0 || ensure_logits(b, rows, err) != 0) return -1;
    if (opt->gpu_memory_utilization > 0 && plan_kv(b, opt->gpu_memory_utilization, err) != 0)
        return -1;

    size_t cache_bytes =
        (size_t)c->n_layers * b->n_slots * c->n_kv_heads * c->head_dim * sizeof(uint16_t);
    if (device_alloc((void **)&b->k_cache, cache_bytes, "the K cache", err) != 0 ||
        device_alloc((void **)&b->v_cache, cache_bytes, "the V cache", err) != 0)
        return -1;
    b->base.kv_bytes = 2 * cache_bytes;
    if (capture_ladder(b, opt->max_seqs, err) != 0) return -1;

    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    folo_log(FOLO_LOG_INFO,
             "cuda backend: %s (sm_%d%d), weights %.2f GB %s, activations %.2f GB, KV pool "
             "%.2f GB (%d blocks of %d = %d tokens)",
             prop.name, prop.major, prop.minor, (double)b->weight_bytes / 1e9,
             b->gptq ? "GPTQ 4-bit linears, bf16 embedding" : "bf16",
             (double)b->base.scratch_bytes / 1e9, (double)b->base.kv_bytes / 1e9,
             b->base.kv_n_blocks, b->base.kv_block_size,
             b->base.kv_n_blocks * b->base.kv_block_size);
    return 0;
}

folo_backend *folo_backend_cuda_create(const folo_model *model, const folo_backend_options *opt,
                                       folo_error *err) {
    const folo_config *c = &model->config;
    int block_size = opt->kv_block_size > 0 ? opt->kv_block_size : 16;
    if (opt->naive_attention) {
        /* The materialized-score baseline is the seeds' CPU M1 stage
         * (docs/switches.md); on the GPU the comparison is made on --device cpu. */
        folo_fail(err, "cuda backend: --attention naive is a CPU-only baseline "
                       "(docs/switches.md); run it with --device cpu");
        return NULL;
    }
    if (opt->kv_n_blocks < 1 && !(opt->kv_n_blocks == 0 && opt->gpu_memory_utilization > 0)) {
        folo_fail(err, "cuda backend: kv_n_blocks must be at least 1 (got %d), or 0 with a "
                       "gpu_memory_utilization", opt->kv_n_blocks);
        return NULL;
    }
    if ((long long)(opt->kv_n_blocks + 1) * block_size > INT32_MAX) {
        folo_fail(err, "cuda backend: %d blocks of %d tokens overflow the slot index",
                  opt->kv_n_blocks, block_size);
        return NULL;
    }
    if (c->head_dim % 2 != 0 || c->head_dim > FOLO_CUDA_MAX_HEAD_DIM || c->n_kv_heads < 1 ||
        c->n_heads % c->n_kv_heads != 0) {
        folo_fail(err,
                  "cuda backend: unsupported head layout (head_dim %d, at most %d and even; %d "
                  "query heads, %d kv heads)",
                  c->head_dim, FOLO_CUDA_MAX_HEAD_DIM, c->n_heads, c->n_kv_heads);
        return NULL;
    }
    if (folo_cuda_device_count() < 1) {
        folo_fail(err, "cuda backend: no CUDA device is available (no GPU, or no driver)");
        return NULL;
    }
    cuda_backend *b = (cuda_backend *)folo_calloc(1, sizeof *b);
    b->base.name = "cuda";
    b->base.kv_block_size = block_size;
    b->base.kv_n_blocks = opt->kv_n_blocks;
    b->base.forward = cuda_forward;
    b->base.copy_blocks = cuda_copy_blocks;
    b->base.destroy = cuda_destroy;
    b->model = model;
    b->gptq = c->quant.gptq;
    b->n_slots = (opt->kv_n_blocks + 1) * block_size;
    b->eager = opt->eager;
    if (cuda_init(b, opt, err) != 0) {
        cuda_destroy(&b->base);
        return NULL;
    }
    return &b->base;
}
