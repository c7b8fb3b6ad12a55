/* The GPTQ table of the AVX512-BF16 ISA: kernels_int4_avx512.c's
 * dequantizations and f32 GEMV, plus the GEMV of `--dtype bfloat16`;
 * compiled with AVX512-BF16 flags (CMakeLists.txt) and reached only
 * through folo_cpu_int4_kernels_for.
 *
 * The bf16 GEMV gives the bits of dequant_bf16 followed by
 * kernels_avx512bf16.c's matmul_bf16, without writing the rows: a row's 32
 * columns come out of its group's rounded table (group_table_bf16) as the
 * one register `vdpbf16ps` multiplies with the token's rounded pairs
 * (bf16_round_tokens, the same instruction), one accumulator per (token,
 * row) over K in order, the tail +0 on both sides, reduced by reduce4 —
 * matmul_bf16's order for every batch size. Decode thus streams the 4-bit
 * codes alone, while prefill (panels through matmul_bf16) and decode stay
 * batch-invariant. tests/c/test_int4_kernels.c checks the equality. */
#include "backend/cpu/kernels_int4.h"

#if defined(__x86_64__)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__AVX512BF16__)
#error "kernels_int4_avx512bf16.c needs -mavx512f -mavx512bw -mavx512vl -mavx512bf16"
#endif

#include "backend/cpu/bf16_avx512.h"
#include "backend/cpu/kernels_int4_avx512.h"
#include "backend/cpu/reduce_avx512.h"

#define TILE_ROWS 4
/* How far ahead a GEMV tile prefetches: the same columns of the rows
 * PREFETCH_TILES tiles on, which follow in memory, into L2, whose queue
 * keeps more misses in flight than L1's. Zen4, one thread, a [3072 x 1024]
 * linear from memory: 17.7 G weights/s prefetching into L1 at any
 * distance, 21-25 into L2 at 4-32 tiles, 32 with the codes in cache. */
#define PREFETCH_TILES 8

/* y[t, r0 + r] for t < n_tokens (a constant once inlined), r < n_rows; xb:
 * the tokens rounded, rows of Kp. */
static inline __attribute__((always_inline)) void
gemv_tile(float *y, size_t ldy, const uint16_t *xb, int Kp, const folo_qlinear *l, int r0,
          int n_rows, int n_tokens, int mode) {
    int K = l->K, G = l->group_size;
    row_view v[TILE_ROWS];
    tile_rows(v, TILE_ROWS, l, r0, n_rows);
    size_t ahead = (size_t)PREFETCH_TILES * TILE_ROWS * l->row_bytes;
    __m512 acc[FOLO_CPU_INT4_GEMV_TOKENS][TILE_ROWS];
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++)
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) acc[t][r] = _mm512_setzero_ps();
    if (mode == READ_TABLE) {
        /* K is whole groups of whole 32-column blocks: no tails. */
        for (int g = 0; g < l->n_groups; g++) {
            __m512i table[TILE_ROWS];
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++) {
                /* vcvtneps2bf16 rounds as group_table_bf16 does: a weight
                 * is never an f32 denormal (f16 scale, integer code) */
                __m256i once = (__m256i)_mm512_cvtneps_pbh(group_table(&v[r], g));
                table[r] = _mm512_inserti64x4(_mm512_castsi256_si512(once), once, 1);
            }
            for (int k = g * G; k < (g + 1) * G; k += PAIRS) {
#pragma GCC unroll 8
                for (int r = 0; r < TILE_ROWS; r++) {
                    _mm_prefetch((const char *)v[r].codes + k / 2 + ahead, _MM_HINT_T1);
                    __m512bh w = (__m512bh)lookup32_bf16(v[r].codes, k, table[r]);
#pragma GCC unroll 8
                    for (int t = 0; t < n_tokens; t++)
                        acc[t][r] = _mm512_dpbf16_ps(
                            acc[t][r], (__m512bh)_mm512_loadu_si512(xb + (size_t)t * Kp + k), w);
                }
            }
        }
    } else if (mode == READ_BYTES) {
        for (int g = 0; g < l->n_groups; g++) {
            for (int k = g * G; k < (g + 1) * G; k += PAIRS) {
#pragma GCC unroll 8
                for (int r = 0; r < TILE_ROWS; r++) {
                    _mm_prefetch((const char *)v[r].codes + k + ahead, _MM_HINT_T1);
                    __m512 f[2];
                    bytes32(f, v[r].codes, k, _mm512_set1_ps(v[r].zeros[g]),
                            _mm512_set1_ps(v[r].scales[g]));
                    /* the second operand fills the low 16 (as the table's
                     * rounding, exact to round_bf16 on these weights) */
                    __m512bh w = _mm512_cvtne2ps_pbh(f[1], f[0]);
#pragma GCC unroll 8
                    for (int t = 0; t < n_tokens; t++)
                        acc[t][r] = _mm512_dpbf16_ps(
                            acc[t][r], (__m512bh)_mm512_loadu_si512(xb + (size_t)t * Kp + k), w);
                }
            }
        }
    } else {
        for (int k = 0; k < K; k += PAIRS) {
            __mmask16 m0 = lanes_below(K - k), m1 = lanes_below(K - k - 16);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++) {
                __m512bh w = (__m512bh)dequant32_bf16(&v[r], l, k, m0, m1);
#pragma GCC unroll 8
                for (int t = 0; t < n_tokens; t++)
                    acc[t][r] = _mm512_dpbf16_ps(
                        acc[t][r], (__m512bh)_mm512_loadu_si512(xb + (size_t)t * Kp + k), w);
            }
        }
    }
    __mmask8 row_mask = (__mmask8)((1u << n_rows) - 1u);
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++)
        _mm_mask_storeu_ps(y + (size_t)t * ldy + r0, row_mask,
                           reduce4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]));
}

/* gemv_tile with each token count its own unrolled copy and the read mode
 * chosen once. */
static void gemv_tile_n(float *y, size_t ldy, const uint16_t *xb, int Kp, const folo_qlinear *l,
                        int r0, int n_rows, int n_tokens, int mode) {
#define GEMV_CASE(T)                                                                  \
    case T:                                                                           \
        if (mode == READ_TABLE) gemv_tile(y, ldy, xb, Kp, l, r0, n_rows, T, READ_TABLE); \
        else if (mode == READ_BYTES)                                                  \
            gemv_tile(y, ldy, xb, Kp, l, r0, n_rows, T, READ_BYTES);                  \
        else gemv_tile(y, ldy, xb, Kp, l, r0, n_rows, T, READ_ANY);                   \
        break;
    switch (n_tokens) {
        GEMV_CASE(1)
        GEMV_CASE(2)
        GEMV_CASE(3)
        GEMV_CASE(4)
        GEMV_CASE(5)
        GEMV_CASE(FOLO_CPU_INT4_GEMV_TOKENS)
    }
#undef GEMV_CASE
}

static void gemv_bf16_int4_avx512bf16(float *y, size_t ldy, const float *x, int n_tokens,
                                      const folo_qlinear *l, int row_begin, int row_end,
                                      float *scratch) {
    int Kp = bf16_padded(l->K), mode = read_mode(l);
    uint16_t *xb = (uint16_t *)scratch; /* [n_tokens, Kp] */
    bf16_round_tokens(xb, x, n_tokens, l->K);
    for (int r0 = row_begin; r0 < row_end; r0 += TILE_ROWS) {
        int n_rows = row_end - r0 < TILE_ROWS ? row_end - r0 : TILE_ROWS;
        gemv_tile_n(y, ldy, xb, Kp, l, r0, n_rows, n_tokens, mode);
    }
}

/* ---- the table: AVX-512's kernels, this GEMV ----------------------------- */

static void dequant_avx512bf16(float *rows, const folo_qlinear *l, int row_begin, int n_rows) {
    folo_cpu_int4_kernels_avx512.dequant(rows, l, row_begin, n_rows);
}

static void gemv_avx512bf16(float *y, size_t ldy, const float *x, int n_tokens,
                            const folo_qlinear *l, int row_begin, int row_end) {
    folo_cpu_int4_kernels_avx512.gemv(y, ldy, x, n_tokens, l, row_begin, row_end);
}

static void dequant_bf16_avx512bf16(uint16_t *rows, const folo_qlinear *l, int row_begin,
                                    int n_rows) {
    folo_cpu_int4_kernels_avx512.dequant_bf16(rows, l, row_begin, n_rows);
}

const folo_cpu_int4_kernels folo_cpu_int4_kernels_avx512bf16 = {
    .dequant = dequant_avx512bf16,
    .gemv = gemv_avx512bf16,
    .dequant_bf16 = dequant_bf16_avx512bf16,
    .gemv_bf16 = gemv_bf16_int4_avx512bf16,
};
#endif
