/* The AVX512-BF16 table: AVX-512's kernels (kernels_avx512.c) plus the
 * matmul of `--dtype bfloat16` on `vdpbf16ps`; compiled with those flags
 * alone (CMakeLists.txt) and reached only through folo_cpu_kernels_for.
 *
 * folo_cpu_kernels.matmul_bf16 rounds the activations to bf16 (to nearest
 * even) and multiplies them with the bf16 weights as they are stored: one
 * `vdpbf16ps` takes 32 bf16 pairs of a weight row and a token, adds their
 * exact products into 16 f32 lanes, so a dot product costs half the
 * instructions of kernels_avx512.c's widen-and-FMA, and on a CPU that
 * issues it at the FMA rate (AMD Zen4) runs at twice the FLOP/s. The
 * rounding of the activations is the price: it is what llama.cpp and vLLM
 * do on bf16 weights, and what folo's CUDA backend does; kernels.h's
 * float32 path stays the default.
 *
 * Order: lane l of a dot product's one register takes the pairs of
 * elements k with k / 2 % 16 == l, in order (the pair's two products as the
 * instruction adds them), and reduce4 sums the lanes; one tile routine
 * computes every (token, row) the same way, so results are batch-invariant
 * as kernels.h promises. Tokens are rounded a block at a time into the
 * scratch, each token row padded with +0 to a multiple of 32; a register
 * tile is TILE_TOKENS tokens x TILE_ROWS weight rows, 24 accumulators fed
 * by 4 + 6 loads. Rows are the outer loop and a block's tokens the inner
 * one, so each weight row comes from memory once per block and from L1 for
 * the block's other tiles. A single token (batch-1 decode) takes the rows
 * one at a time instead, one stream of weights that the prefetchers follow
 * (Zen4: 30 GB/s against 25 for four interleaved rows); its register is
 * reduced by the same tree. */
#include "backend/cpu/kernels.h"

#if defined(__x86_64__)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__AVX512BF16__)
#error "kernels_avx512bf16.c needs -mavx512f -mavx512bw -mavx512vl -mavx512bf16"
#endif

#include <immintrin.h>

#include "backend/cpu/bf16_avx512.h"
#include "backend/cpu/reduce_avx512.h"

#define TILE_ROWS FOLO_CPU_MATMUL_ROWS
#define TILE_TOKENS 6
/* Rounded activations of a token block: within a 1 MiB L2 beside the
 * weight rows; at least MIN_BLOCK_TOKENS tokens, so that the weights of a
 * 512-token prefill come from memory a few times at most. */
#define TOKEN_BLOCK_BYTES (512 * 1024)
#define MIN_BLOCK_TOKENS (16 * TILE_TOKENS)
/* How far ahead of its loads a tile prefetches each weight row (the
 * hardware prefetcher alone keeps too few lines in flight; on Zen4 a
 * single token's row stream reached 28-32 GB/s with 4 KiB, 26-30 with 8 KiB
 * and 22 with none). */
#define PREFETCH_BYTES 4096

_Static_assert(TILE_ROWS == 4, "a tile reduces its rows with reduce4");

static int block_tokens(int K) {
    int block = TOKEN_BLOCK_BYTES / (bf16_padded(K) * 2) / TILE_TOKENS * TILE_TOKENS;
    return block < MIN_BLOCK_TOKENS ? MIN_BLOCK_TOKENS : block;
}

static size_t matmul_bf16_scratch(int K) {
    return (size_t)block_tokens(K) * bf16_padded(K) / 2; /* one block of rounded tokens */
}

/* y[t, r] = xb_t · w_r for t < n_tokens, r < n_rows (both constants once
 * inlined, n_rows <= rows); xb rows of stride Kp, w: row pointers [K]. */
static inline __attribute__((always_inline)) void
tile(float *y, size_t ldy, const uint16_t *xb, int Kp, int K, const uint16_t *const *w,
     int n_rows, int n_tokens, int rows, size_t prefetch) {
    __m512 acc[TILE_TOKENS][TILE_ROWS];
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++)
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) acc[t][r] = _mm512_setzero_ps();
    int k = 0;
    for (; k + PAIRS <= K; k += PAIRS) {
        __m512bh wv[TILE_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            if (prefetch)
                _mm_prefetch((const char *)(w[r] + k) + prefetch,
                             rows == 1 ? _MM_HINT_T0 : _MM_HINT_T1);
            wv[r] = (__m512bh)_mm512_loadu_si512(w[r] + k);
        }
#pragma GCC unroll 8
        for (int t = 0; t < n_tokens; t++) {
            __m512bh xv = (__m512bh)_mm512_loadu_si512(xb + (size_t)t * Kp + k);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) acc[t][r] = _mm512_dpbf16_ps(acc[t][r], xv, wv[r]);
        }
    }
    if (k < K) {
        __mmask32 m = (__mmask32)((1ull << (K - k)) - 1u);
        __m512bh wv[TILE_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) wv[r] = (__m512bh)_mm512_maskz_loadu_epi16(m, w[r] + k);
#pragma GCC unroll 8
        for (int t = 0; t < n_tokens; t++) {
            __m512bh xv = (__m512bh)_mm512_loadu_si512(xb + (size_t)t * Kp + k);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) acc[t][r] = _mm512_dpbf16_ps(acc[t][r], xv, wv[r]);
        }
    }
    __mmask8 row_mask = (__mmask8)((1u << n_rows) - 1u);
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++) {
        /* one row: the same tree, on copies of its register */
        __m128 sums = rows == 1 ? reduce4(acc[t][0], acc[t][0], acc[t][0], acc[t][0])
                                : reduce4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
        _mm_mask_storeu_ps(y + (size_t)t * ldy, row_mask, sums);
    }
}

static void tile_n(float *y, size_t ldy, const uint16_t *xb, int Kp, int K,
                   const uint16_t *const w[TILE_ROWS], int n_rows, int n_tokens,
                   size_t prefetch) {
    switch (n_tokens) {
    case 1: tile(y, ldy, xb, Kp, K, w, n_rows, 1, TILE_ROWS, prefetch); break;
    case 2: tile(y, ldy, xb, Kp, K, w, n_rows, 2, TILE_ROWS, prefetch); break;
    case 3: tile(y, ldy, xb, Kp, K, w, n_rows, 3, TILE_ROWS, prefetch); break;
    case 4: tile(y, ldy, xb, Kp, K, w, n_rows, 4, TILE_ROWS, prefetch); break;
    case 5: tile(y, ldy, xb, Kp, K, w, n_rows, 5, TILE_ROWS, prefetch); break;
    default: tile(y, ldy, xb, Kp, K, w, n_rows, TILE_TOKENS, TILE_ROWS, prefetch); break;
    }
}

/* A single token, one row at a time: one stream of weights. */
static void row_1(float *y, const uint16_t *xb, int Kp, int K, const uint16_t *w) {
    tile(y, 0, xb, Kp, K, &w, 1, 1, 1, PREFETCH_BYTES);
}

/* kernels.h's matmul_bf16 (bf16 weights only). */
static void matmul_bf16_avx512bf16(float *y, size_t ldy, const float *x, int n_tokens, int K,
                                   const void *w, folo_dtype w_dtype, int row_begin, int row_end,
                                   float *scratch) {
    (void)w_dtype; /* FOLO_DTYPE_BF16 */
    int Kp = bf16_padded(K), block = block_tokens(K);
    uint16_t *xb = (uint16_t *)scratch; /* [block, Kp] */
    if (n_tokens == 1) {
        bf16_round_tokens(xb, x, 1, K);
        for (int r = row_begin; r < row_end; r++)
            row_1(y + r, xb, Kp, K, (const uint16_t *)w + (size_t)r * K);
        return;
    }
    for (int t0 = 0; t0 < n_tokens; t0 += block) {
        int nt = n_tokens - t0 < block ? n_tokens - t0 : block;
        bf16_round_tokens(xb, x + (size_t)t0 * K, nt, K);
        for (int r0 = row_begin; r0 < row_end; r0 += TILE_ROWS) {
            int n_rows = row_end - r0 < TILE_ROWS ? row_end - r0 : TILE_ROWS;
            const uint16_t *rows[TILE_ROWS];
            for (int r = 0; r < TILE_ROWS; r++)
                rows[r] = (const uint16_t *)w + (size_t)(r0 + (r < n_rows ? r : n_rows - 1)) * K;
            for (int t = 0; t < nt; t += TILE_TOKENS) {
                int n = nt - t < TILE_TOKENS ? nt - t : TILE_TOKENS;
                /* the first tile reads the rows from memory: it prefetches
                 * the next group of rows, the same columns, into L2 (whose
                 * misses in flight outnumber L1's: 16 sequences' decode
                 * steps 106-110 -> 94 ms on Zen4 against prefetching into
                 * L1) */
                tile_n(y + (size_t)(t0 + t) * ldy + r0, ldy, xb + (size_t)t * Kp, Kp, K, rows,
                       n_rows, n, t == 0 ? (size_t)TILE_ROWS * K * sizeof(uint16_t) : 0);
            }
        }
    }
}

/* ---- the table: AVX-512's kernels, this matmul_bf16 ---------------------- */

static void matmul_avx512bf16(float *y, size_t ldy, const float *x, int n_tokens, int K,
                              const void *w, folo_dtype w_dtype, int row_begin, int row_end,
                              float *scratch) {
    folo_cpu_kernels_avx512.matmul(y, ldy, x, n_tokens, K, w, w_dtype, row_begin, row_end,
                                   scratch);
}

static size_t matmul_scratch_avx512bf16(int K) {
    size_t f32 = folo_cpu_kernels_avx512.matmul_scratch_floats(K);
    size_t bf16 = matmul_bf16_scratch(K);
    return f32 > bf16 ? f32 : bf16;
}

static void silu_mul_avx512bf16(float *gate, const float *up, size_t n) {
    folo_cpu_kernels_avx512.silu_mul(gate, up, n);
}

static void attention_group_avx512bf16(float *const *out, const float *const *q, const int *n_ctx,
                                       int n_queries, const void *k_cache, const void *v_cache,
                                       folo_dtype kv_dtype, const int32_t *block_table,
                                       int block_size, int n_kv_heads, int kv_head, int head_dim,
                                       float scale) {
    folo_cpu_kernels_avx512.attention_group(out, q, n_ctx, n_queries, k_cache, v_cache, kv_dtype,
                                            block_table, block_size, n_kv_heads, kv_head,
                                            head_dim, scale);
}

const folo_cpu_kernels folo_cpu_kernels_avx512bf16 = {
    .name = "avx512bf16",
    .matmul = matmul_avx512bf16,
    .matmul_bf16 = matmul_bf16_avx512bf16,
    .matmul_scratch_floats = matmul_scratch_avx512bf16,
    .silu_mul = silu_mul_avx512bf16,
    .attention_group = attention_group_avx512bf16,
};

#endif
