/* The CUDA backend against its CPU twin (needs a GPU; labelled "gpu").
 *
 * Kernels: each launcher of backend/cuda/kernels.h on fresh random inputs
 * with sizes that leave tails (rows not a multiple of the block, head_dim
 * not a multiple of 32), outputs poisoned with NaN before the launch so an
 * unwritten element fails, compared with the plain-C kernels of
 * backend/cpu/kernels.h by relative L2 error ‖gpu − cpu‖ / ‖cpu‖.
 * Tolerances follow the number formats: f32 paths ~1e-5, bf16 outputs 1e-2.
 *
 * Forward: the tiny model ($FOLO_TEST_MODEL, f32, and a bf16 copy made here)
 * on the CUDA backend against the CPU backend (relative L2 of every
 * position's logits ≤ 2e-2, argmax mostly equal); a flat batch mixing
 * prefill chunks and decodes of three sequences gives what each sequence
 * gets alone; copy_blocks gives a copied block the same contents; malformed
 * batches are refused with an error. GPTQ: the 4-bit matmul against the
 * stored layout's dequantization (gptq_random.h), and with
 * $FOLO_TEST_GPTQ_MODEL (a GPTQ checkpoint of the tiny model) the same
 * forward checks on it. Without a GPU it exits 77 (skipped). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/kernels.h"
#include "backend/single_seq.h"
#include "check.h"
#include "mixed_step.h"
#include "core/dtype.h"
#include "gptq_random.h"
#include "model/make_model.h"
#include "model/model.h"
#include "sample/sampler.h"

#define SKIP_EXIT_CODE 77

/* Infrastructure failures (allocation, copies) end the test at once. */
#define CUDA_OK(call)                                                                              \
    do {                                                                                           \
        cudaError_t rc_ = (call);                                                                  \
        if (rc_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                          \
                    cudaGetErrorString(rc_));                                                      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* ---- helpers --------------------------------------------------------------- */

static double uniform(void) { /* [0, 1) */
    return (double)(rng_next() >> 11) * 0x1.0p-53;
}

static float *random_f32(size_t n, float scale) {
    float *x = malloc(n * sizeof(float));
    fill_random(x, n, scale);
    return x;
}

/* Rounds x to bf16 in place and returns the bf16 copy. */
static uint16_t *to_bf16(float *x, size_t n) {
    uint16_t *h = malloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) {
        h[i] = folo_f32_to_bf16(x[i]);
        x[i] = folo_bf16_to_f32(h[i]);
    }
    return h;
}

static void *dev_upload(const void *host, size_t bytes) {
    void *d;
    CUDA_OK(cudaMalloc(&d, bytes));
    CUDA_OK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return d;
}

/* A device buffer of `bytes` filled with 0xFF: NaN as f32 and as bf16. */
static void *dev_poisoned(size_t bytes) {
    void *d;
    CUDA_OK(cudaMalloc(&d, bytes));
    CUDA_OK(cudaMemset(d, 0xFF, bytes));
    return d;
}

static float *download_f32(const float *d, size_t n) {
    float *h = malloc(n * sizeof(float));
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

static float *download_bf16(const uint16_t *d, size_t n) {
    uint16_t *raw = malloc(n * sizeof(uint16_t));
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(raw, d, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = folo_bf16_to_f32(raw[i]);
    free(raw);
    return h;
}

/* ‖got − ref‖ / ‖ref‖ over n floats; infinity when got holds a NaN. */
static double rel_l2(const float *got, const float *ref, size_t n) {
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i])) return INFINITY;
        double d = (double)got[i] - ref[i];
        diff += d * d;
        norm += (double)ref[i] * ref[i];
    }
    return norm > 0.0 ? sqrt(diff / norm) : sqrt(diff);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

#define CHECK_REL(name, got, ref, n, tol)                                                          \
    do {                                                                                           \
        double rel_ = rel_l2((got), (ref), (n));                                                   \
        printf("  %-44s rel L2 %.3g (tol %.0e)\n", (name), rel_, (double)(tol));                   \
        CHECK_MSG(rel_ <= (tol), "%s: relative L2 error %g over %g", (name), rel_, (double)(tol)); \
    } while (0)

/* ---- kernels --------------------------------------------------------------- */

static void test_embed(void) {
    int V = 1000, H = 100, T = 37;
    float *table = random_f32((size_t)V * H, 1.0f);
    uint16_t *table_bf16 = to_bf16(table, (size_t)V * H);
    int32_t ids[37];
    for (int t = 0; t < T; t++) ids[t] = (int32_t)(uniform() * V);
    uint16_t *d_table = dev_upload(table_bf16, (size_t)V * H * 2);
    int32_t *d_ids = dev_upload(ids, sizeof ids);
    float *d_x = dev_poisoned((size_t)T * H * 4);
    folo_error err = {{0}};
    CHECK_MSG(folo_cuda_embed(d_x, d_table, d_ids, T, H, 0, &err) == 0, "%s", err.message);
    float *x = download_f32(d_x, (size_t)T * H);
    float *ref = malloc((size_t)T * H * 4);
    for (int t = 0; t < T; t++) memcpy(ref + (size_t)t * H, table + (size_t)ids[t] * H, H * 4);
    CHECK_REL("embed", x, ref, (size_t)T * H, 0.0);
    free(table), free(table_bf16), free(x), free(ref);
    cudaFree(d_table), cudaFree(d_ids), cudaFree(d_x);
}

/* Plain, fused with the residual add, and gathering rows (the final norm). */
static void test_rmsnorm(void) {
    int T = 37, H = 1000, R = 5;
    float eps = 1e-6f;
    float *x = random_f32((size_t)T * H, 2.0f), *res = random_f32((size_t)T * H, 1.0f);
    float *w = random_f32((size_t)H, 1.5f);
    int32_t rows[5] = {36, 0, 17, 17, 3};
    float *d_w = dev_upload(w, (size_t)H * 4), *d_res = dev_upload(res, (size_t)T * H * 4);
    int32_t *d_rows = dev_upload(rows, sizeof rows);
    uint16_t *d_out = dev_poisoned((size_t)T * H * 2);
    float *ref = malloc((size_t)T * H * 4), *sum = malloc((size_t)T * H * 4);
    for (size_t i = 0; i < (size_t)T * H; i++) sum[i] = x[i] + res[i];
    folo_error err = {{0}};

    float *d_x = dev_upload(x, (size_t)T * H * 4);
    CHECK_MSG(folo_cuda_rmsnorm(d_out, d_x, NULL, NULL, T, d_w, H, eps, 0, &err) == 0, "%s",
              err.message);
    float *out = download_bf16(d_out, (size_t)T * H);
    for (int t = 0; t < T; t++) folo_cpu_rmsnorm(ref + (size_t)t * H, x + (size_t)t * H, w, H, eps);
    CHECK_REL("rmsnorm", out, ref, (size_t)T * H, 1e-2);
    free(out);

    CUDA_OK(cudaMemset(d_out, 0xFF, (size_t)T * H * 2));
    CHECK_MSG(folo_cuda_rmsnorm(d_out, d_x, d_res, NULL, T, d_w, H, eps, 0, &err) == 0, "%s",
              err.message);
    out = download_bf16(d_out, (size_t)T * H);
    float *x_after = download_f32(d_x, (size_t)T * H);
    for (int t = 0; t < T; t++)
        folo_cpu_rmsnorm(ref + (size_t)t * H, sum + (size_t)t * H, w, H, eps);
    CHECK_REL("residual add + rmsnorm", out, ref, (size_t)T * H, 1e-2);
    CHECK_REL("residual add: x updated", x_after, sum, (size_t)T * H, 0.0);
    free(out), free(x_after);

    CUDA_OK(cudaMemcpy(d_x, x, (size_t)T * H * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(d_out, 0xFF, (size_t)T * H * 2));
    CHECK_MSG(folo_cuda_rmsnorm(d_out, d_x, d_res, d_rows, R, d_w, H, eps, 0, &err) == 0, "%s",
              err.message);
    out = download_bf16(d_out, (size_t)R * H);
    x_after = download_f32(d_x, (size_t)T * H);
    for (int r = 0; r < R; r++)
        folo_cpu_rmsnorm(ref + (size_t)r * H, sum + (size_t)rows[r] * H, w, H, eps);
    CHECK_REL("residual add + rmsnorm of gathered rows", out, ref, (size_t)R * H, 1e-2);
    CHECK_REL("gathered rows: x left as it was", x_after, x, (size_t)T * H, 0.0);
    free(out), free(x_after);

    free(x), free(res), free(w), free(ref), free(sum);
    cudaFree(d_w), cudaFree(d_res), cudaFree(d_rows), cudaFree(d_out), cudaFree(d_x);
}

static void test_qk_norm_rope_cache(int D) {
    int T = 29, Hq = 4, Hkv = 2, n_heads = Hq + 2 * Hkv, n_slots = 64, half = D / 2;
    float eps = 1e-6f;
    size_t row = (size_t)n_heads * D, cache_elems = (size_t)n_slots * Hkv * D;
    float *qkv = random_f32((size_t)T * row, 3.0f);
    float *q_norm = random_f32((size_t)D, 1.5f), *k_norm = random_f32((size_t)D, 1.5f);
    float *inv_freq = malloc((size_t)half * 4);
    folo_cpu_rope_inv_freq(inv_freq, D, 1e6);
    int32_t positions[29], slots[29];
    for (int t = 0; t < T; t++) {
        positions[t] = (int32_t)(uniform() * 40000);
        slots[t] = (t * 37 + 5) % n_slots; /* distinct, scattered */
    }
    float *d_qkv = dev_upload(qkv, (size_t)T * row * 4);
    float *d_qn = dev_upload(q_norm, (size_t)D * 4), *d_kn = dev_upload(k_norm, (size_t)D * 4);
    float *d_freq = dev_upload(inv_freq, (size_t)half * 4);
    int32_t *d_pos = dev_upload(positions, sizeof positions),
            *d_slots = dev_upload(slots, sizeof slots);
    uint16_t *d_k = dev_poisoned(cache_elems * 2), *d_v = dev_poisoned(cache_elems * 2);
    folo_error err = {{0}};
    CHECK_MSG(folo_cuda_qk_norm_rope_cache(d_qkv, d_k, d_v, d_qn, d_kn, d_freq, d_pos, d_slots, T,
                                           Hq, Hkv, D, eps, 0, &err) == 0,
              "%s", err.message);
    float *got_qkv = download_f32(d_qkv, (size_t)T * row);
    float *got_k = download_bf16(d_k, cache_elems), *got_v = download_bf16(d_v, cache_elems);

    size_t kv_row = (size_t)Hkv * D;
    float *ref_q = malloc((size_t)T * Hq * D * 4), *gpu_q = malloc((size_t)T * Hq * D * 4);
    float *ref_k = malloc((size_t)T * kv_row * 4), *gpu_k = malloc((size_t)T * kv_row * 4);
    float *ref_v = malloc((size_t)T * kv_row * 4), *gpu_v = malloc((size_t)T * kv_row * 4);
    float *cos_half = malloc((size_t)half * 4), *sin_half = malloc((size_t)half * 4);
    for (int t = 0; t < T; t++) {
        const float *src = qkv + (size_t)t * row;
        float *q = ref_q + (size_t)t * Hq * D, *k = ref_k + (size_t)t * kv_row;
        for (int h = 0; h < Hq; h++) folo_cpu_rmsnorm(q + h * D, src + h * D, q_norm, D, eps);
        for (int h = 0; h < Hkv; h++)
            folo_cpu_rmsnorm(k + h * D, src + (Hq + h) * D, k_norm, D, eps);
        folo_cpu_rope_cos_sin(cos_half, sin_half, positions[t], inv_freq, half);
        folo_cpu_rope(q, Hq, D, cos_half, sin_half);
        folo_cpu_rope(k, Hkv, D, cos_half, sin_half);
        for (size_t i = 0; i < kv_row; i++) {
            k[i] = folo_bf16_to_f32(folo_f32_to_bf16(k[i]));
            ref_v[(size_t)t * kv_row + i] =
                folo_bf16_to_f32(folo_f32_to_bf16(src[(size_t)(Hq + Hkv) * D + i]));
        }
        memcpy(gpu_q + (size_t)t * Hq * D, got_qkv + (size_t)t * row, (size_t)Hq * D * 4);
        memcpy(gpu_k + (size_t)t * kv_row, got_k + (size_t)slots[t] * kv_row, kv_row * 4);
        memcpy(gpu_v + (size_t)t * kv_row, got_v + (size_t)slots[t] * kv_row, kv_row * 4);
    }
    char name[64];
    snprintf(name, sizeof name, "q norm + rope, in place (D=%d)", D);
    CHECK_REL(name, gpu_q, ref_q, (size_t)T * Hq * D, 1e-5);
    snprintf(name, sizeof name, "k norm + rope into the cache (D=%d)", D);
    CHECK_REL(name, gpu_k, ref_k, (size_t)T * kv_row, 1e-2);
    snprintf(name, sizeof name, "v into the cache (D=%d)", D);
    CHECK_REL(name, gpu_v, ref_v, (size_t)T * kv_row, 0.0);
    /* The v part of qkv is read only, and slots no token maps stay as they were. */
    int touched = 0;
    for (int s = 0; s < n_slots; s++) {
        int mapped = 0;
        for (int t = 0; t < T; t++) mapped |= slots[t] == s;
        if (!mapped)
            for (size_t i = 0; i < kv_row; i++)
                touched +=
                    !isnan(got_k[(size_t)s * kv_row + i]) || !isnan(got_v[(size_t)s * kv_row + i]);
    }
    CHECK_MSG(touched == 0, "%d cache elements of unmapped slots were written", touched);

    free(qkv), free(q_norm), free(k_norm), free(inv_freq), free(got_qkv), free(got_k), free(got_v);
    free(ref_q), free(gpu_q), free(ref_k), free(gpu_k), free(ref_v), free(gpu_v);
    free(cos_half), free(sin_half);
    cudaFree(d_qkv), cudaFree(d_qn), cudaFree(d_kn), cudaFree(d_freq), cudaFree(d_pos);
    cudaFree(d_slots), cudaFree(d_k), cudaFree(d_v);
}

/* The CPU kernels' cache layout, [block, Hkv, block_size, D], of a CUDA
 * cache of n_blocks blocks, [slot, Hkv, D]. */
static float *cpu_cache_layout(const float *cache, int n_blocks, int block_size, int Hkv, int D) {
    float *out = malloc((size_t)n_blocks * block_size * Hkv * D * sizeof(float));
    for (int blk = 0; blk < n_blocks; blk++)
        for (int off = 0; off < block_size; off++)
            for (int h = 0; h < Hkv; h++)
                memcpy(out + (((size_t)blk * Hkv + h) * block_size + off) * D,
                       cache + (((size_t)blk * block_size + off) * Hkv + h) * D,
                       (size_t)D * sizeof(float));
    return out;
}

/* Four sequences of different lengths over scattered blocks; each has its
 * last n_new positions as query tokens (a prefill chunk, or a decode when
 * 1), all in one flat batch. Both kernels run on it: the decode one, with
 * the context bound max_ctx exact and loose (as graphs pass it: more
 * splits, some of them empty), and, where it takes D, the tiled one. Rows
 * of the tiled kernel past a tile's tokens, and keys past the context, must
 * not leak in: the output is poisoned first and every query's context ends
 * mid-block. */
static void test_attention(int D, int block_size, int Hq, int Hkv, const int seq_len[4],
                           const int n_new[4]) {
    enum { N_SEQS = 4, MAX_BLOCKS = 80 }; /* 300 tokens in blocks of 4 take 75 */
    int n_heads = Hq + 2 * Hkv;
    int n_blocks = N_SEQS * MAX_BLOCKS, n_slots = n_blocks * block_size;
    int32_t tables[N_SEQS * MAX_BLOCKS], seq_starts[N_SEQS + 1] = {0};
    for (int i = 0; i < n_blocks; i++) tables[i] = (int32_t)((i * 53 + 11) % n_blocks);
    for (int s = 0; s < N_SEQS; s++) seq_starts[s + 1] = seq_starts[s] + n_new[s];
    int T = seq_starts[N_SEQS];
    int32_t *positions = malloc((size_t)T * 4), *token_seq = malloc((size_t)T * 4);
    for (int s = 0, t = 0; s < N_SEQS; s++)
        for (int j = 0; j < n_new[s]; j++, t++) {
            positions[t] = seq_len[s] - n_new[s] + j;
            token_seq[t] = s;
        }
    size_t cache_elems = (size_t)n_slots * Hkv * D, row = (size_t)n_heads * D;
    float *k = random_f32(cache_elems, 1.0f), *v = random_f32(cache_elems, 1.0f);
    uint16_t *k_bf16 = to_bf16(k, cache_elems), *v_bf16 = to_bf16(v, cache_elems);
    float *k_cpu = cpu_cache_layout(k, n_blocks, block_size, Hkv, D);
    float *v_cpu = cpu_cache_layout(v, n_blocks, block_size, Hkv, D);
    float *qkv = random_f32((size_t)T * row, 2.0f);
    /* The kernels' split: every sequence tiled (min_rows 1), or only those of
     * 16 tokens or more, the others' tokens to the decode kernel. */
    int32_t *tiles[2], *decode_tokens[2], *d_tiles[2], *d_decode[2];
    int n_tiles[2], n_decode[2];
    for (int split = 0; split < 2; split++) {
        tiles[split] = malloc(2 * sizeof(int32_t) * folo_cuda_attention_max_tiles(T, N_SEQS));
        decode_tokens[split] = malloc(sizeof(int32_t) * T);
        n_tiles[split] = folo_cuda_attention_tiles(seq_starts, N_SEQS, split ? 16 : 1, tiles[split],
                                               decode_tokens[split], &n_decode[split]);
    }

    uint16_t *d_k = dev_upload(k_bf16, cache_elems * 2), *d_v = dev_upload(v_bf16, cache_elems * 2);
    float *d_qkv = dev_upload(qkv, (size_t)T * row * 4);
    int32_t *d_tables = dev_upload(tables, sizeof tables);
    int32_t *d_pos = dev_upload(positions, (size_t)T * 4),
            *d_seq = dev_upload(token_seq, (size_t)T * 4);
    for (int split = 0; split < 2; split++) {
        d_tiles[split] = dev_upload(tiles[split], 2 * sizeof(int32_t) * (n_tiles[split] ? n_tiles[split] : 1));
        d_decode[split] = dev_upload(decode_tokens[split], sizeof(int32_t) * T);
    }
    float *ref = malloc((size_t)T * Hq * D * 4);
    float scale = 1.0f / sqrtf((float)D);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < Hq; h++)
            folo_cpu_attention(ref + ((size_t)t * Hq + h) * D,
                               qkv + (size_t)t * row + (size_t)h * D, k_cpu, v_cpu, FOLO_DTYPE_F32,
                               tables + token_seq[t] * MAX_BLOCKS, positions[t] + 1, block_size,
                               Hkv, h / (Hq / Hkv), D, scale);
    int max_ctx = 0;
    for (int s = 0; s < N_SEQS; s++) max_ctx = seq_len[s] > max_ctx ? seq_len[s] : max_ctx;
    float *d_partials = dev_poisoned((size_t)FOLO_CUDA_ATTN_PARTIALS * (D + 2) * sizeof(float));
    /* Variants: decode kernel alone (context bound exact, then loose), tiled
     * alone, tiled and decode kernels sharing the batch. */
    for (int variant = 0; variant < 2 + 2 * folo_cuda_attention_tiled_ok(D); variant++) {
        int tiled = variant >= 2, split = variant - 2;
        int bound = variant == 1 ? MAX_BLOCKS * block_size : max_ctx;
        uint16_t *d_out = dev_poisoned((size_t)T * Hq * D * 2);
        folo_error err = {{0}};
        CHECK_MSG(folo_cuda_attention(d_out, d_qkv, d_k, d_v, d_tables, MAX_BLOCKS, d_seq, d_pos,
                                      bound, tiled ? d_tiles[split] : NULL, tiled ? n_tiles[split] : 0,
                                      tiled ? d_decode[split] : NULL, tiled ? n_decode[split] : T,
                                      d_partials, Hq, Hkv, D, block_size, 0, &err) == 0,
                  "%s", err.message);
        float *out = download_bf16(d_out, (size_t)T * Hq * D);
        char name[112];
        snprintf(name, sizeof name, "%s attention (D=%d, block %d, %d/%d heads, %d+%d+%d+%d new%s)",
                 variant == 3 ? "tiled+decode" : tiled ? "tiled" : "decode", D, block_size, Hq,
                 Hkv, n_new[0], n_new[1], n_new[2], n_new[3], variant == 1 ? ", loose" : "");
        /* The tiled kernel rounds Q and P to bf16: a little more error. */
        CHECK_REL(name, out, ref, (size_t)T * Hq * D, tiled ? 2e-2 : 1e-2);
        free(out);
        cudaFree(d_out);
    }

    free(positions), free(token_seq), free(k), free(v), free(k_bf16), free(v_bf16), free(qkv);
    free(k_cpu), free(v_cpu), free(ref);
    for (int split = 0; split < 2; split++) {
        free(tiles[split]), free(decode_tokens[split]);
        cudaFree(d_tiles[split]), cudaFree(d_decode[split]);
    }
    cudaFree(d_k), cudaFree(d_v), cudaFree(d_qkv), cudaFree(d_tables), cudaFree(d_pos);
    cudaFree(d_seq), cudaFree(d_partials);
}

/* The device argmax against folo_argmax: random rows, ties (the lowest id
 * wins), NaN (never wins; a row of NaN gives 0), a row of -inf. */
static void test_argmax(void) {
    enum { R = 6, V = 151936 };
    float *x = random_f32((size_t)R * V, 5.0f);
    x[1 * V + 7000] = x[1 * V + 90000] = x[1 * V + 150000] = 50.0f;
    for (int i = 0; i < V; i++) x[2 * (size_t)V + i] = NAN;
    for (int i = 0; i < V; i++) x[3 * (size_t)V + i] = -INFINITY;
    x[4 * V + 0] = NAN, x[4 * V + 12345] = 60.0f, x[4 * V + 12346] = NAN;
    x[5 * V + V - 1] = 70.0f;
    float *d_x = dev_upload(x, (size_t)R * V * sizeof(float));
    int32_t *d_out = dev_poisoned(R * sizeof(int32_t)), out[R];
    folo_error err = {{0}};
    CHECK_MSG(folo_cuda_argmax(d_out, d_x, R, V, 0, &err) == 0, "%s", err.message);
    CUDA_OK(cudaMemcpy(out, d_out, sizeof out, cudaMemcpyDeviceToHost));
    int agree = 0;
    for (int r = 0; r < R; r++) {
        int32_t want = folo_argmax(x + (size_t)r * V, V);
        CHECK_MSG(out[r] == want, "argmax row %d: device %d, host %d", r, out[r], want);
        agree += out[r] == want;
    }
    CHECK(out[1] == 7000 && out[2] == 0 && out[3] == 0 && out[4] == 12345 && out[5] == V - 1);
    printf("  %-44s %d/%d rows as folo_argmax\n", "argmax (ties, NaN, -inf)", agree, R);
    free(x);
    cudaFree(d_x), cudaFree(d_out);
}

static void test_silu_mul(void) {
    int T = 13, I = 1000;
    float *gate_up = random_f32((size_t)T * 2 * I, 4.0f);
    float *d_gu = dev_upload(gate_up, (size_t)T * 2 * I * 4);
    uint16_t *d_out = dev_poisoned((size_t)T * I * 2);
    folo_error err = {{0}};
    CHECK_MSG(folo_cuda_silu_mul(d_out, d_gu, T, I, 0, &err) == 0, "%s", err.message);
    float *out = download_bf16(d_out, (size_t)T * I);
    float *ref = malloc((size_t)T * I * 4), *up = malloc((size_t)I * 4);
    for (int t = 0; t < T; t++) {
        memcpy(ref + (size_t)t * I, gate_up + (size_t)t * 2 * I, (size_t)I * 4);
        memcpy(up, gate_up + (size_t)t * 2 * I + I, (size_t)I * 4);
        folo_cpu_silu_mul(ref + (size_t)t * I, up, (size_t)I);
    }
    CHECK_REL("silu(gate) * up", out, ref, (size_t)T * I, 1e-2);
    free(gate_up), free(out), free(ref), free(up);
    cudaFree(d_gu), cudaFree(d_out);
}

static void test_gemm(cublasHandle_t cublas, int T, int N, int K) {
    float *x = random_f32((size_t)T * K, 1.0f), *w = random_f32((size_t)N * K, 1.0f);
    uint16_t *x_bf16 = to_bf16(x, (size_t)T * K), *w_bf16 = to_bf16(w, (size_t)N * K);
    uint16_t *d_x = dev_upload(x_bf16, (size_t)T * K * 2),
             *d_w = dev_upload(w_bf16, (size_t)N * K * 2);
    float *d_y = dev_poisoned((size_t)T * N * 4);
    folo_error err = {{0}};
    CHECK_MSG(folo_cuda_gemm(cublas, d_y, d_x, d_w, T, N, K, &err) == 0, "%s", err.message);
    float *y = download_f32(d_y, (size_t)T * N), *ref = malloc((size_t)T * N * 4);
    float *rows_f32 = malloc((size_t)FOLO_CPU_MATMUL_ROWS * K * 4);
    folo_cpu_matmul(ref, (size_t)N, x, T, K, w_bf16, FOLO_DTYPE_BF16, 0, N, rows_f32);
    char name[64];
    snprintf(name, sizeof name, "gemm bf16 -> f32 (T=%d, N=%d, K=%d)", T, N, K);
    CHECK_REL(name, y, ref, (size_t)T * N, 1e-4);
    free(x), free(w), free(x_bf16), free(w_bf16), free(y), free(ref), free(rows_f32);
    cudaFree(d_x), cudaFree(d_w), cudaFree(d_y);
}

/* A GPTQ linear (gptq_random.h) through folo_cuda_gptq_matmul against the
 * stored layout's dequantization in double: the GEMV (T <= 8 rows) keeps
 * the f32 weights, the wide path rounds them to bf16 first, and the
 * reference does the same. The output has a wider row stride than N, and
 * the columns past N must stay as poisoned. */
static void test_gptq_matmul(cublasHandle_t cublas, int N, int K, int G, int act_order,
                             int zeros_minus_one, int T) {
    stored_linear s;
    make_linear(&s, N, K, G, act_order);
    folo_quant_config q = {.gptq = true, .bits = 4, .group_size = G, .desc_act = act_order != 0,
                           .zeros_minus_one = zeros_minus_one != 0};
    folo_qlinear l;
    folo_error err = {{0}};
    CHECK_MSG(folo_gptq_repack(&l, s.parts, &q, "w.g_idx", "test", &err) == 0, "%s", err.message);
    float *w = malloc(sizeof(float) * (size_t)N * K);
    dequant_stored(w, &s, zeros_minus_one);
    if (T > FOLO_CUDA_GPTQ_GEMV_TOKENS)
        for (size_t i = 0; i < (size_t)N * K; i++) w[i] = folo_bf16_to_f32(folo_f32_to_bf16(w[i]));
    float *x = random_f32((size_t)T * K, 1.0f);
    uint16_t *x_bf16 = to_bf16(x, (size_t)T * K);

    int ldy = N + 5;
    void *d_w;
    CUDA_OK(cudaMalloc(&d_w, folo_cuda_qlinear_bytes(&l)));
    folo_cuda_qlinear dw;
    CHECK_MSG(folo_cuda_qlinear_upload(&dw, d_w, &l, &err) == 0, "%s", err.message);
    uint16_t *d_x = dev_upload(x_bf16, (size_t)T * K * 2);
    float *d_y = dev_poisoned((size_t)T * ldy * 4);
    uint16_t *d_dequant = dev_poisoned(FOLO_CUDA_GPTQ_DEQUANT_ELEMS * 2);
    CHECK_MSG(folo_cuda_gptq_matmul(cublas, d_y, ldy, d_x, T, &dw, d_dequant, 0, &err) == 0, "%s",
              err.message);
    float *y = download_f32(d_y, (size_t)T * ldy);
    float *got = malloc(sizeof(float) * (size_t)T * N), *ref = malloc(sizeof(float) * (size_t)T * N);
    int stride_kept = 1;
    for (int t = 0; t < T; t++) {
        for (int n = 0; n < N; n++) {
            double sum = 0.0;
            for (int k = 0; k < K; k++) sum += (double)w[(size_t)n * K + k] * x[(size_t)t * K + k];
            ref[(size_t)t * N + n] = (float)sum;
            got[(size_t)t * N + n] = y[(size_t)t * ldy + n];
        }
        for (int n = N; n < ldy; n++) stride_kept &= isnan(y[(size_t)t * ldy + n]) != 0;
    }
    char name[96];
    snprintf(name, sizeof name, "gptq N=%d K=%d G=%d%s%s T=%d", N, K, G, act_order ? " act" : "",
             zeros_minus_one ? " v1" : " v2", T);
    CHECK_REL(name, got, ref, (size_t)T * N, T > FOLO_CUDA_GPTQ_GEMV_TOKENS ? 1e-4 : 1e-5);
    CHECK_MSG(stride_kept, "%s: wrote past its N columns", name);
    free(w), free(x), free(x_bf16), free(y), free(got), free(ref);
    cudaFree(d_w), cudaFree(d_x), cudaFree(d_y), cudaFree(d_dequant);
    folo_qlinear_free(&l);
    free_linear(&s);
}

/* ---- the whole forward ----------------------------------------------------- */

#define BLOCK_SIZE 4
#define N_SEQS 3
#define PROMPT_LEN 40

static folo_backend *make_backend(const char *device, const folo_model *m, int n_blocks) {
    folo_error err = {{0}};
    folo_backend_options bo = {
        .n_threads = 2, .kv_block_size = BLOCK_SIZE, .kv_n_blocks = n_blocks};
    folo_backend *b = strcmp(device, "cuda") == 0 ? folo_backend_cuda_create(m, &bo, &err)
                                                  : folo_backend_cpu_create(m, &bo, &err);
    CHECK_MSG(b != NULL, "%s backend: %s", device, err.message);
    return b;
}

/* Logits [n_ids, V] of ids run alone on a fresh backend, every position. */
static float *run_alone(const char *device, const folo_model *m, const int32_t *ids, int n_ids) {
    int V = m->config.vocab_size;
    folo_backend *b = make_backend(device, m, folo_single_seq_blocks(n_ids, BLOCK_SIZE));
    if (!b) return NULL;
    float *logits = calloc((size_t)n_ids * V, sizeof(float));
    folo_single_seq seq;
    folo_single_seq_init(&seq, n_ids, BLOCK_SIZE);
    folo_error err = {{0}};
    const folo_batch *batch = folo_single_seq_step(&seq, ids, n_ids, true);
    CHECK_MSG(folo_backend_forward(b, batch, logits, &err) == 0, "%s: %s", device, err.message);
    folo_single_seq_free(&seq);
    folo_backend_destroy(b);
    return logits;
}

static void test_forward_vs_cpu(const char *label, const folo_model *m, const int32_t *ids) {
    int V = m->config.vocab_size;
    float *cpu = run_alone("cpu", m, ids, PROMPT_LEN), *gpu = run_alone("cuda", m, ids, PROMPT_LEN);
    if (!cpu || !gpu) {
        free(cpu), free(gpu);
        return;
    }
    double worst = 0.0;
    int same = 0;
    for (int p = 0; p < PROMPT_LEN; p++) {
        double rel = rel_l2(gpu + (size_t)p * V, cpu + (size_t)p * V, (size_t)V);
        if (!(rel <= worst)) worst = rel;
        same += argmax(gpu + (size_t)p * V, V) == argmax(cpu + (size_t)p * V, V);
    }
    printf("  %-44s worst rel L2 %.3g, argmax equal %d/%d\n", label, worst, same, PROMPT_LEN);
    CHECK_MSG(worst <= 2e-2, "%s: worst relative L2 %g over 2e-2", label, worst);
    CHECK_MSG(same >= PROMPT_LEN * 9 / 10, "%s: argmax equal at only %d of %d positions", label,
              same, PROMPT_LEN);
    free(cpu), free(gpu);
}

static void test_mixed_batch(const folo_model *m, const int32_t *ids) {
    static const int seq_len[N_SEQS] = {11, 23, 5};
    int V = m->config.vocab_size;
    const int32_t *seq_ids[N_SEQS] = {ids, ids + 11, ids + 34};
    float *alone[N_SEQS];
    for (int s = 0; s < N_SEQS; s++) alone[s] = run_alone("cuda", m, seq_ids[s], seq_len[s]);
    int32_t tables[N_SEQS * 6] = {
        13, 2, 7, -1, -1, -1, 5, 11, 1, 9, 3, 14, 6, 12, -1, -1, -1, -1,
    };
    folo_backend *b = make_backend("cuda", m, 16);
    if (!b || !alone[0] || !alone[1] || !alone[2]) goto done;
    /* Prefill chunks of A and B; then A's last chunk, B's decode and all of
     * C; then two decodes of B alone. */
    static const int plan[][N_SEQS][2] = {
        {{0, 7}, {0, 20}, {0, 0}},
        {{7, 11}, {20, 21}, {0, 5}},
        {{0, 0}, {21, 22}, {0, 0}},
        {{0, 0}, {22, 23}, {0, 0}},
    };
    float *logits = calloc((size_t)64 * V, sizeof(float));
    double worst = 0.0;
    folo_error err = {{0}};
    for (size_t k = 0; k < sizeof plan / sizeof plan[0]; k++) {
        mixed_step st = {0};
        for (int s = 0; s < N_SEQS; s++)
            if (plan[k][s][1] > plan[k][s][0])
                step_add(&st, s, seq_ids[s], plan[k][s][0], plan[k][s][1], tables, 6,
                         BLOCK_SIZE);
        int32_t step_tables[N_SEQS * 6];
        for (int i = 0; i < st.n_seqs; i++)
            memcpy(step_tables + i * 6, tables + st.seq_index[i] * 6, 6 * sizeof(int32_t));
        folo_batch batch = {
            .n_tokens = st.n_tokens,
            .token_ids = st.ids,
            .positions = st.positions,
            .slot_mapping = st.slots,
            .n_seqs = st.n_seqs,
            .seq_starts = st.seq_starts,
            .seq_lens = st.seq_lens,
            .block_tables = step_tables,
            .max_blocks_per_seq = 6,
            .n_logit_rows = st.n_tokens,
            .logit_rows = st.logit_rows,
        };
        CHECK_MSG(folo_backend_forward(b, &batch, logits, &err) == 0, "step %zu: %s", k,
                  err.message);
        for (int i = 0; i < st.n_seqs; i++)
            for (int t = st.seq_starts[i]; t < st.seq_starts[i + 1]; t++) {
                double rel =
                    rel_l2(logits + (size_t)t * V,
                           alone[st.seq_index[i]] + (size_t)st.positions[t] * V, (size_t)V);
                if (!(rel <= worst)) worst = rel;
            }
    }
    printf("  %-44s worst rel L2 %.3g (tol 1e-02)\n", "mixed batch vs each sequence alone", worst);
    CHECK_MSG(worst <= 1e-2, "mixed batch differs from the sequences alone by %g", worst);
    free(logits);
done:
    folo_backend_destroy(b);
    for (int s = 0; s < N_SEQS; s++) free(alone[s]);
}

/* Decode steps replayed from CUDA graphs against the same steps launched
 * eagerly on a second backend: five sequences (3 to 250 prompt tokens,
 * each in its own 80 blocks) decode 24 steps with the running set changing
 * every step (3 to 5 sequences: padded to ladder sizes 4 and 8), one of
 * them crossing 256 tokens (64 blocks: the block-table width doubles, a new
 * graph), and every other step greedy on the graphed side (argmax only).
 * Logits must agree, and each argmax must be the eager row's argmax or
 * within the measured logit error of it (a near-tie). */
static void test_graphs(const folo_model *m) {
    enum { N = 5, BLOCKS_PER_SEQ = 80, STEPS = 24 }; /* 320 tokens in blocks of 4 */
    static const int prompt[N] = {3, 40, 100, 250, 7};
    int V = m->config.vocab_size;
    folo_backend *graphed = make_backend("cuda", m, N * BLOCKS_PER_SEQ);
    folo_error err = {{0}};
    folo_backend_options bo = {.kv_block_size = BLOCK_SIZE, .kv_n_blocks = N * BLOCKS_PER_SEQ,
                               .eager = true};
    folo_backend *eager = folo_backend_cuda_create(m, &bo, &err);
    CHECK_MSG(eager != NULL, "%s", err.message);
    if (!graphed || !eager) goto done;
    int32_t tables[N * BLOCKS_PER_SEQ], len[N], ids[512], positions[512], slots[512];
    int32_t seq_starts[N + 1], seq_lens[N], rows[N], argmax[N];
    uint8_t argmax_only[N];
    float *logits[2] = {calloc((size_t)N * V, sizeof(float)), calloc((size_t)N * V, sizeof(float))};
    for (int i = 0; i < N * BLOCKS_PER_SEQ; i++) tables[i] = i;
    for (int i = 0; i < 512; i++) ids[i] = (int32_t)(uniform() * 151643);
    folo_backend *both[2] = {graphed, eager};
    for (int s = 0; s < N; s++) { /* each prompt alone, on both backends */
        for (int p = 0; p < prompt[s]; p++)
            positions[p] = p, slots[p] = tables[s * BLOCKS_PER_SEQ + p / BLOCK_SIZE] * BLOCK_SIZE +
                                         p % BLOCK_SIZE;
        int32_t starts[2] = {0, prompt[s]}, row = prompt[s] - 1;
        len[s] = prompt[s];
        folo_batch pre = {.n_tokens = prompt[s], .token_ids = ids, .positions = positions,
                          .slot_mapping = slots, .n_seqs = 1, .seq_starts = starts,
                          .seq_lens = &len[s], .block_tables = tables + s * BLOCKS_PER_SEQ,
                          .max_blocks_per_seq = BLOCKS_PER_SEQ, .n_logit_rows = 1,
                          .logit_rows = &row};
        for (int k = 0; k < 2; k++)
            CHECK_MSG(folo_backend_forward(both[k], &pre, logits[k], &err) == 0, "%s",
                      err.message);
    }
    double worst = 0.0;
    int argmax_checked = 0;
    for (int step = 0; step < STEPS; step++) {
        int n = 0, width = 1;
        int32_t step_tables[N * BLOCKS_PER_SEQ];
        for (int s = 0; s < N; s++) {
            if ((step + s) % 4 == 0 && s != 3) continue; /* sits this step out */
            int pos = len[s];
            seq_starts[n] = n;
            ids[n] = ids[(step * 7 + s) % 512];
            positions[n] = pos;
            slots[n] = tables[s * BLOCKS_PER_SEQ + pos / BLOCK_SIZE] * BLOCK_SIZE + pos % BLOCK_SIZE;
            seq_lens[n] = pos + 1;
            rows[n] = n;
            argmax_only[n] = step % 2;
            if (pos / BLOCK_SIZE + 1 > width) width = pos / BLOCK_SIZE + 1;
            len[s]++;
            n++;
        }
        for (int i = 0, s = 0; s < N; s++) {
            if ((step + s) % 4 == 0 && s != 3) continue;
            memcpy(step_tables + (size_t)i * width, tables + s * BLOCKS_PER_SEQ,
                   (size_t)width * sizeof(int32_t));
            i++;
        }
        seq_starts[n] = n;
        for (int k = 0; k < 2; k++) {
            folo_batch dec = {.n_tokens = n, .token_ids = ids, .positions = positions,
                              .slot_mapping = slots, .n_seqs = n, .seq_starts = seq_starts,
                              .seq_lens = seq_lens, .block_tables = step_tables,
                              .max_blocks_per_seq = width, .n_logit_rows = n, .logit_rows = rows,
                              .argmax_only = k == 0 ? argmax_only : NULL, .argmax = argmax};
            CHECK_MSG(folo_backend_forward(both[k], &dec, logits[k], &err) == 0, "step %d: %s",
                      step, err.message);
        }
        for (int r = 0; r < n; r++) {
            const float *ref = logits[1] + (size_t)r * V;
            if (argmax_only[r]) {
                int want = folo_argmax(ref, V);
                CHECK_MSG(argmax[r] == want || ref[argmax[r]] >= ref[want] - 1e-2f,
                          "step %d row %d: graphed argmax %d (%g), eager %d (%g)", step, r,
                          argmax[r], ref[argmax[r]], want, ref[want]);
                argmax_checked++;
            } else {
                double rel = rel_l2(logits[0] + (size_t)r * V, ref, (size_t)V);
                worst = rel > worst ? rel : worst;
            }
        }
    }
    printf("  %-44s worst rel L2 %.3g, %d argmax checked\n", "decode graphs vs eager launches",
           worst, argmax_checked);
    CHECK_MSG(worst <= 1e-3, "graphed decode differs from eager by %g", worst);
    free(logits[0]), free(logits[1]);
done:
    folo_backend_destroy(graphed);
    folo_backend_destroy(eager);
}

/* A decode over copies of a sequence's blocks equals one over the originals. */
static void test_copy_blocks(const folo_model *m, const int32_t *ids) {
    int V = m->config.vocab_size, n = 7;
    folo_backend *b = make_backend("cuda", m, 8);
    if (!b) return;
    folo_error err = {{0}};
    int32_t original[2] = {0, 1}, copied[2] = {4, 5}, seq_starts[2] = {0, 0}, len = 0;
    int32_t positions[8], slots[8], row = 0;
    float *logits = calloc((size_t)2 * V, sizeof(float));
    for (int p = 0; p < 8; p++) positions[p] = p, slots[p] = p;
    folo_batch prefill = {.n_tokens = n,
                          .token_ids = ids,
                          .positions = positions,
                          .slot_mapping = slots,
                          .n_seqs = 1,
                          .seq_starts = seq_starts,
                          .seq_lens = &len,
                          .block_tables = original,
                          .max_blocks_per_seq = 2,
                          .n_logit_rows = 0,
                          .logit_rows = NULL};
    seq_starts[1] = n, len = n;
    CHECK_MSG(folo_backend_forward(b, &prefill, NULL, &err) == 0, "%s", err.message);
    folo_kv_copy copies[2] = {{0, 4}, {1, 5}};
    CHECK_MSG(folo_backend_copy_blocks(b, copies, 2, &err) == 0, "%s", err.message);

    int32_t slot_original = 1 * BLOCK_SIZE + 3, slot_copied = 5 * BLOCK_SIZE + 3;
    folo_batch decode = {.n_tokens = 1,
                         .token_ids = ids + n,
                         .positions = positions + n,
                         .slot_mapping = &slot_copied,
                         .n_seqs = 1,
                         .seq_starts = seq_starts,
                         .seq_lens = &len,
                         .block_tables = copied,
                         .max_blocks_per_seq = 2,
                         .n_logit_rows = 1,
                         .logit_rows = &row};
    seq_starts[1] = 1, len = n + 1;
    CHECK_MSG(folo_backend_forward(b, &decode, logits, &err) == 0, "%s", err.message);
    decode.slot_mapping = &slot_original;
    decode.block_tables = original;
    CHECK_MSG(folo_backend_forward(b, &decode, logits + V, &err) == 0, "%s", err.message);
    CHECK_MSG(memcmp(logits, logits + V, (size_t)V * sizeof(float)) == 0,
              "decode over copied blocks differs (rel L2 %g)",
              rel_l2(logits, logits + V, (size_t)V));

    /* A greedy row: only its argmax comes back, the same as the host's pick
     * from the full row, and the logits buffer is left alone. */
    uint8_t argmax_only = 1;
    int32_t argmax = -1;
    decode.argmax_only = &argmax_only;
    decode.argmax = &argmax;
    memset(logits + V, 0xFF, (size_t)V * sizeof(float));
    CHECK_MSG(folo_backend_forward(b, &decode, logits + V, &err) == 0, "%s", err.message);
    CHECK_MSG(argmax == folo_argmax(logits, V), "device argmax %d, host argmax %d", argmax,
              folo_argmax(logits, V));
    CHECK_MSG(isnan(logits[V]) && isnan(logits[2 * V - 1]),
              "an argmax-only row's logits were copied back");
    decode.argmax_only = NULL;
    decode.argmax = NULL;

    folo_kv_copy bad = {0, 8};
    CHECK(folo_backend_copy_blocks(b, &bad, 1, &err) != 0);
    CHECK(strstr(err.message, "outside the pool") != NULL);
    /* A slot that disagrees with the block table is refused before any kernel runs. */
    decode.slot_mapping = &slot_copied;
    CHECK(folo_backend_forward(b, &decode, logits, &err) != 0);
    CHECK(strstr(err.message, "does not match its block table") != NULL);
    free(logits);
    folo_backend_destroy(b);
}

int main(void) {
    if (folo_cuda_device_count() < 1) {
        printf("test_cuda_backend: no CUDA device, skipped\n");
        return SKIP_EXIT_CODE;
    }
    struct cudaDeviceProp prop;
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    rng_seed(15);

    printf("kernels vs the CPU kernels:\n");
    test_embed();
    test_rmsnorm();
    test_qk_norm_rope_cache(16);
    test_qk_norm_rope_cache(96);
    test_qk_norm_rope_cache(128);
    static const int decode_len[4] = {1, 17, 100, 300}, decode_new[4] = {1, 17, 1, 9};
    static const int prefill_len[4] = {70, 17, 130, 300}, prefill_new[4] = {70, 1, 129, 200};
    test_attention(16, 4, 4, 2, decode_len, decode_new);
    test_attention(128, 16, 4, 2, decode_len, decode_new);
    test_attention(80, 5, 4, 2, decode_len, decode_new);
    /* KV groups of 8, 4 and 3 query heads (3: the decode kernel's per-head form) */
    test_attention(128, 16, 8, 1, decode_len, decode_new);
    test_attention(64, 16, 8, 2, decode_len, decode_new);
    test_attention(128, 8, 6, 2, decode_len, decode_new);
    test_attention(16, 4, 4, 2, prefill_len, prefill_new);
    test_attention(128, 16, 4, 2, prefill_len, prefill_new);
    test_attention(80, 5, 4, 2, prefill_len, prefill_new);
    test_attention(72, 16, 4, 2, prefill_len, prefill_new); /* not a multiple of 16: decode kernel only */
    test_silu_mul();
    test_argmax();
    cublasHandle_t cublas;
    CHECK(cublasCreate(&cublas) == CUBLAS_STATUS_SUCCESS);
    test_gemm(cublas, 1, 300, 200);
    test_gemm(cublas, 7, 1024, 1000);
    test_gemm(cublas, 64, 333, 128);
    /* GPTQ: the GEMV's grouping paths (32-column blocks in one group; per
     * column through g_idx: act-order, or groups not a multiple of 32, with
     * a K tail), 1..8 rows; the dequantize + GEMM path, one chunk and two. */
    test_gptq_matmul(cublas, 96, 256, 128, 0, 1, 1);
    test_gptq_matmul(cublas, 96, 256, 32, 0, 0, 3);
    test_gptq_matmul(cublas, 64, 384, 32, 1, 0, 5);
    test_gptq_matmul(cublas, 40, 200, -1, 0, 1, 8);
    test_gptq_matmul(cublas, 48, 72, 24, 1, 1, 2);
    test_gptq_matmul(cublas, 1024, 3072, 128, 1, 1, 4);
    test_gptq_matmul(cublas, 72, 96, 32, 1, 0, 33);
    test_gptq_matmul(cublas, 3000, 1024, 128, 0, 1, 9);
    test_gptq_matmul(cublas, 20000, 1024, 128, 0, 1, 12);
    cublasDestroy(cublas);

    const char *model_dir = getenv("FOLO_TEST_MODEL");
    const char *tokenizer_dir = getenv("FOLO_TOKENIZER_DIR");
    if (!model_dir || !tokenizer_dir) {
        fprintf(stderr, "FOLO_TEST_MODEL and FOLO_TOKENIZER_DIR must be set\n");
        return 1;
    }
    folo_error err = {{0}};
    folo_model *f32 = folo_model_load(model_dir, &err);
    CHECK_MSG(f32 != NULL, "%s", err.message);
    char bf16_dir[] = "/tmp/folo-gpu-test-XXXXXX";
    CHECK(mkdtemp(bf16_dir) != NULL);
    folo_make_model_opts mo = {.preset = "tiny",
                               .dtype = FOLO_DTYPE_BF16,
                               .seed = 7,
                               .n_shards = 1,
                               .tokenizer_dir = tokenizer_dir,
                               .out_dir = bf16_dir};
    CHECK_MSG(folo_make_model(&mo, &err) == 0, "%s", err.message);
    folo_model *bf16 = folo_model_load(bf16_dir, &err);
    CHECK_MSG(bf16 != NULL, "%s", err.message);
    if (f32 && bf16) {
        int32_t ids[PROMPT_LEN];
        for (int i = 0; i < PROMPT_LEN; i++) ids[i] = (int32_t)(uniform() * 151643);
        printf("forward vs the CPU backend:\n");
        test_forward_vs_cpu("tiny bf16: cuda vs cpu logits", bf16, ids);
        test_forward_vs_cpu("tiny f32 (bf16 on the GPU): cuda vs cpu", f32, ids);
        test_mixed_batch(bf16, ids);
        test_copy_blocks(bf16, ids);
        test_graphs(bf16);
    }
    folo_model_free(f32);
    folo_model_free(bf16);
    /* A GPTQ 4-bit checkpoint of the tiny model, when the caller made one
     * (scripts/gpu-check.sh does, with folo quantize). */
    const char *gptq_dir = getenv("FOLO_TEST_GPTQ_MODEL");
    if (gptq_dir && *gptq_dir) {
        folo_model *gptq = folo_model_load(gptq_dir, &err);
        CHECK_MSG(gptq != NULL, "%s", err.message);
        if (gptq) {
            int32_t ids[PROMPT_LEN];
            for (int i = 0; i < PROMPT_LEN; i++) ids[i] = (int32_t)(uniform() * 151643);
            printf("GPTQ forward vs the CPU backend (%s):\n", gptq_dir);
            test_forward_vs_cpu("tiny GPTQ: cuda vs cpu logits", gptq, ids);
            test_mixed_batch(gptq, ids);
            test_graphs(gptq);
        }
        folo_model_free(gptq);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", bf16_dir);
    CHECK(system(cmd) == 0);
    CUDA_OK(cudaDeviceSynchronize());
    return check_summary("test_cuda_backend");
}
