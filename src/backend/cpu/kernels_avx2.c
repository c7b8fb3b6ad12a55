/* AVX2 (with FMA and F16C) twins of the matmul and attention kernels of
 * kernels.c, for x86-64 CPUs without AVX-512; compiled with those flags
 * alone (CMakeLists.txt) and reached only through folo_cpu_kernels_for,
 * which checks the CPU first. The design is kernels_avx512.c's at half the
 * width: one 8-lane register of partial sums per dot product (lane l takes
 * the elements k with k % 8 == l, in order, by fused multiply-add; the last,
 * partial vector through a mask), reduced in one fixed order, so a (token,
 * row) result is the same whichever tile computes it. With 16 registers the
 * tile is TILE_ROWS rows x 2 tokens: 8 accumulators, 4 weight vectors and
 * one activation vector. */
#include "backend/cpu/kernels.h"

#if defined(__x86_64__)
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "kernels_avx2.c needs -mavx2 -mfma -mf16c"
#endif

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/attention_online.h"

#define V 8 /* f32 lanes of a register */
#define TILE_ROWS FOLO_CPU_MATMUL_ROWS
#define TILE_TOKENS 2
/* Activation bytes of a token block, kept in L2 (see kernels_avx512.c). */
#define TOKEN_BLOCK_BYTES (256 * 1024)

/* Lanes [0, n) set, for maskload/maskstore; 0 <= n <= 8. */
static inline __m256i tail_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Σ of the 8 lanes, in one fixed order. */
static inline float reduce_add(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- weight widening ----------------------------------------------------- */

/* dst [K] f32 = src [K] bf16 or f16, exactly. */
static void widen_row(float *dst, const void *src, folo_dtype dtype, int K) {
    const uint16_t *h = src;
    int k = 0;
    if (dtype == FOLO_DTYPE_BF16) {
        for (; k + V <= K; k += V) {
            __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + k)));
            _mm256_storeu_ps(dst + k, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
        }
        for (; k < K; k++) dst[k] = folo_bf16_to_f32(h[k]);
    } else {
        for (; k + V <= K; k += V)
            _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + k))));
        for (; k < K; k++) dst[k] = folo_f16_to_f32(h[k]);
    }
}

/* ---- matmul -------------------------------------------------------------- */

/* y[t, r] = x_t · w[r] for t < n_tokens (a constant once inlined), r < n_rows;
 * shapes as in kernels_avx512.c. */
static inline __attribute__((always_inline)) void
tile(float *y, size_t ldy, const float *x, int K, const float *const w[TILE_ROWS], int n_rows,
     int n_tokens) {
    __m256 acc[TILE_TOKENS][TILE_ROWS];
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++)
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) acc[t][r] = _mm256_setzero_ps();
    int k = 0;
    for (; k + V <= K; k += V) {
        __m256 wv[TILE_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) wv[r] = _mm256_loadu_ps(w[r] + k);
#pragma GCC unroll 8
        for (int t = 0; t < n_tokens; t++) {
            __m256 xv = _mm256_loadu_ps(x + (size_t)t * K + k);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++) acc[t][r] = _mm256_fmadd_ps(xv, wv[r], acc[t][r]);
        }
    }
    if (k < K) {
        __m256i m = tail_mask(K - k);
        __m256 wv[TILE_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) wv[r] = _mm256_maskload_ps(w[r] + k, m);
#pragma GCC unroll 8
        for (int t = 0; t < n_tokens; t++) {
            __m256 xv = _mm256_maskload_ps(x + (size_t)t * K + k, m);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++) acc[t][r] = _mm256_fmadd_ps(xv, wv[r], acc[t][r]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++)
        for (int r = 0; r < n_rows; r++) y[(size_t)t * ldy + r] = reduce_add(acc[t][r]);
}

static size_t matmul_scratch_avx2(int K) { return (size_t)TILE_ROWS * K; }

static void matmul_avx2(float *y, size_t ldy, const float *x, int n_tokens, int K, const void *w,
                        folo_dtype w_dtype, int row_begin, int row_end, float *rows_f32) {
    size_t row_bytes = (size_t)K * folo_dtype_size(w_dtype);
    int block = TOKEN_BLOCK_BYTES / (K * (int)sizeof(float)) / TILE_TOKENS * TILE_TOKENS;
    if (block < TILE_TOKENS) block = TILE_TOKENS;
    for (int t0 = 0; t0 < n_tokens; t0 += block) {
        int t_end = n_tokens - t0 < block ? n_tokens : t0 + block;
        for (int r0 = row_begin; r0 < row_end; r0 += TILE_ROWS) {
            int n_rows = row_end - r0 < TILE_ROWS ? row_end - r0 : TILE_ROWS;
            const float *rows[TILE_ROWS];
            for (int r = 0; r < TILE_ROWS; r++) {
                int src = r < n_rows ? r : n_rows - 1;
                const char *row = (const char *)w + (size_t)(r0 + src) * row_bytes;
                if (w_dtype == FOLO_DTYPE_F32) {
                    rows[r] = (const float *)row;
                } else {
                    if (r < n_rows) widen_row(rows_f32 + (size_t)r * K, row, w_dtype, K);
                    rows[r] = rows_f32 + (size_t)src * K;
                }
            }
            int t = t0;
            for (; t + TILE_TOKENS <= t_end; t += TILE_TOKENS)
                tile(y + (size_t)t * ldy + r0, ldy, x + (size_t)t * K, K, rows, n_rows,
                     TILE_TOKENS);
            if (t < t_end)
                tile(y + (size_t)t * ldy + r0, ldy, x + (size_t)t * K, K, rows, n_rows, 1);
        }
    }
}

/* ---- attention ----------------------------------------------------------- */

static inline float dot(const float *a, const float *b, int n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int k = 0;
    for (; k + 2 * V <= n; k += 2 * V) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + V), _mm256_loadu_ps(b + k + V), acc1);
    }
    for (; k < n; k += V) {
        __m256i m = tail_mask(n - k < V ? n - k : V);
        acc0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + k, m), _mm256_maskload_ps(b + k, m), acc0);
    }
    return reduce_add(_mm256_add_ps(acc0, acc1));
}

/* y[d] = y[d] * scale + a * x[d] for d < n. */
static inline void scale_axpy(float *y, float scale, float a, const float *x, int n) {
    __m256 s = _mm256_set1_ps(scale), av = _mm256_set1_ps(a);
    for (int k = 0; k < n; k += V) {
        __m256i m = tail_mask(n - k < V ? n - k : V);
        __m256 yv = _mm256_mul_ps(_mm256_maskload_ps(y + k, m), s);
        _mm256_maskstore_ps(y + k, m, _mm256_fmadd_ps(av, _mm256_maskload_ps(x + k, m), yv));
    }
}

static void attention_group_avx2(float *const *out, const float *const *q, const int *n_ctx,
                                 int n_queries, const void *k_cache, const void *v_cache,
                                 folo_dtype kv_dtype, const int32_t *block_table, int block_size,
                                 int n_kv_heads, const int *kv_head, int head_dim,
                                 float scale) {
    for (int i = 0; i < n_queries; i++)
        folo_attention_online(out[i], q[i], k_cache, v_cache, kv_dtype, block_table, n_ctx[i],
                              block_size, n_kv_heads, kv_head[i], head_dim, scale, dot,
                              scale_axpy);
}

const folo_cpu_kernels folo_cpu_kernels_avx2 = {
    .name = "avx2",
    .matmul = matmul_avx2,
    .matmul_scratch_floats = matmul_scratch_avx2,
    .silu_mul = folo_cpu_silu_mul,
    .rmsnorm = folo_cpu_rmsnorm,
    .attention_group = attention_group_avx2,
};

#endif
