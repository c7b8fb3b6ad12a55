/* AVX-512 twins of the GPTQ kernels of kernels_int4.h; compiled with
 * AVX-512 flags alone (CMakeLists.txt) and reached only through
 * folo_cpu_int4_kernels_for, which checks the CPU first.
 *
 * Dequantization. One 16-byte load holds 32 columns (gptq.h): zero-extended
 * to 16 lanes, its low nibbles are columns 0-15 and its high ones 16-31.
 * Each lane computes (code − zero) · scale as the portable loop does (an
 * exact subtraction, one rounding), so the rows are the same bits. With
 * contiguous groups of a multiple of 32 columns (the common layout, K then
 * a multiple of 32 too) the 16 values a row's group can take are computed
 * once per group into a register, and each block's codes index it
 * (vpermps): one shuffle per 16 weights instead of convert, subtract and
 * multiply. Otherwise (act-order, odd group sizes) each lane gathers its
 * group's scale and zero through g_idx.
 *
 * bf16 rows (`--dtype bfloat16`) round each such f32 value as
 * folo_f32_to_bf16 does, in integer lanes; a group's table is rounded once
 * and looked up 32 columns at a time (vpermw), the nibbles spread to words
 * by one shift per half.
 *
 * Decode GEMV. For at most FOLO_CPU_INT4_GEMV_TOKENS tokens the dequantized
 * weights stay in registers and feed the FMAs directly: per (token, row)
 * one 16-lane register of partial sums, lane l taking the columns
 * k % 16 == l in order, the last partial vector zero-padded on both sides,
 * reduced by the fixed tree of reduce4 (reduce_avx512.h). That is exactly what
 * kernels_avx512.c's float matmul does with the dequantized rows (its tile
 * and reduce4), so decode and prefill give the same bits and batch
 * invariance holds across the two paths (tests/c/test_int4_kernels.c
 * checks the equality). */
#include "backend/cpu/kernels_int4.h"

#if defined(__x86_64__)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__FMA__)
#error "kernels_int4_avx512.c needs -mavx512f -mavx512bw -mavx512vl -mfma"
#endif

#include "backend/cpu/kernels_int4_avx512.h"
#include "backend/cpu/reduce_avx512.h"

#define TILE_ROWS 4
/* How far ahead a GEMV tile prefetches: the same columns of the next
 * tile's rows, which follow this tile's in memory. */
#define PREFETCH_TILES 1

static void dequant_int4_avx512(float *rows, const folo_qlinear *l, int row_begin, int n_rows) {
    int K = l->K, G = l->group_size;
    int mode = read_mode(l);
    for (int r = 0; r < n_rows; r++) {
        row_view v = row_at(l, (size_t)(row_begin + r));
        float *out = rows + (size_t)r * K;
        if (mode != READ_ANY) {
            for (int g = 0; g < l->n_groups; g++) {
                __m512 table = mode == READ_TABLE ? group_table(&v, g) : _mm512_setzero_ps();
                __m512 zero = _mm512_set1_ps(v.zeros[g]), scale = _mm512_set1_ps(v.scales[g]);
                for (int k = g * G; k < (g + 1) * G; k += 32) {
                    __m512 w[2];
                    if (mode == READ_TABLE) lookup32(w, v.codes, k, table);
                    else bytes32(w, v.codes, k, zero, scale);
                    _mm512_storeu_ps(out + k, w[0]);
                    _mm512_storeu_ps(out + k + 16, w[1]);
                }
            }
            continue;
        }
        for (int k = 0; k < K; k += 32) {
            __mmask16 m0 = lanes_below(K - k), m1 = lanes_below(K - k - 16);
            __m512 w[2];
            dequant32(w, &v, l, k, m0, m1);
            _mm512_mask_storeu_ps(out + k, m0, w[0]);
            if (m1) _mm512_mask_storeu_ps(out + k + 16, m1, w[1]);
        }
    }
}

static void dequant_bf16_int4_avx512(uint16_t *rows, const folo_qlinear *l, int row_begin,
                                     int n_rows) {
    int K = l->K, G = l->group_size, mode = read_mode(l);
    for (int r = 0; r < n_rows; r++) {
        row_view v = row_at(l, (size_t)(row_begin + r));
        uint16_t *out = rows + (size_t)r * K;
        if (mode == READ_TABLE) {
            for (int g = 0; g < l->n_groups; g++) {
                __m512i table = group_table_bf16(&v, g);
                for (int k = g * G; k < (g + 1) * G; k += 32)
                    _mm512_storeu_si512(out + k, lookup32_bf16(v.codes, k, table));
            }
            continue;
        }
        if (mode == READ_BYTES) {
            for (int g = 0; g < l->n_groups; g++) {
                __m512 zero = _mm512_set1_ps(v.zeros[g]), scale = _mm512_set1_ps(v.scales[g]);
                for (int k = g * G; k < (g + 1) * G; k += 32) {
                    __m512 w[2];
                    bytes32(w, v.codes, k, zero, scale);
                    _mm512_storeu_si512(out + k, _mm512_inserti64x4(_mm512_castsi256_si512(
                                                                        round_bf16(w[0])),
                                                                    round_bf16(w[1]), 1));
                }
            }
            continue;
        }
        for (int k = 0; k < K; k += 32) {
            __mmask16 m0 = lanes_below(K - k), m1 = lanes_below(K - k - 16);
            _mm512_mask_storeu_epi16(out + k, (__mmask32)m0 | (__mmask32)m1 << 16,
                                     dequant32_bf16(&v, l, k, m0, m1));
        }
    }
}

/* acc[t][r] += x_t[k .. k + 31] · w (two vectors, the second left out
 * when m1 is 0) for t < n_tokens: one row's weights used while in
 * registers. */
static inline __attribute__((always_inline)) void
fma_block(__m512 acc[][TILE_ROWS], int r, const __m512 w[2], const float *x, int K, int k,
          __mmask16 m0, __mmask16 m1, int n_tokens) {
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++) {
        const float *xt = x + (size_t)t * K + k;
        acc[t][r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, xt), w[0], acc[t][r]);
        if (m1) acc[t][r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, xt + 16), w[1], acc[t][r]);
    }
}

/* y[t, r0 + r] for t < n_tokens (a constant once inlined), r < n_rows. */
static inline __attribute__((always_inline)) void
gemv_tile(float *y, size_t ldy, const float *x, const folo_qlinear *l, int r0, int n_rows,
          int n_tokens, int mode) {
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
            __m512 table[TILE_ROWS];
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++) table[r] = group_table(&v[r], g);
            for (int k = g * G; k < (g + 1) * G; k += 32) {
#pragma GCC unroll 8
                for (int r = 0; r < TILE_ROWS; r++) {
                    _mm_prefetch((const char *)v[r].codes + k / 2 + ahead, _MM_HINT_T0);
                    __m512 w[2];
                    lookup32(w, v[r].codes, k, table[r]);
                    fma_block(acc, r, w, x, K, k, (__mmask16)0xffff, (__mmask16)0xffff, n_tokens);
                }
            }
        }
    } else if (mode == READ_BYTES) {
        for (int g = 0; g < l->n_groups; g++) {
            for (int k = g * G; k < (g + 1) * G; k += 32) {
#pragma GCC unroll 8
                for (int r = 0; r < TILE_ROWS; r++) {
                    _mm_prefetch((const char *)v[r].codes + k + ahead, _MM_HINT_T0);
                    __m512 w[2];
                    bytes32(w, v[r].codes, k, _mm512_set1_ps(v[r].zeros[g]),
                            _mm512_set1_ps(v[r].scales[g]));
                    fma_block(acc, r, w, x, K, k, (__mmask16)0xffff, (__mmask16)0xffff, n_tokens);
                }
            }
        }
    } else {
        for (int k = 0; k < K; k += 32) {
            __mmask16 m0 = lanes_below(K - k), m1 = lanes_below(K - k - 16);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++) {
                __m512 w[2];
                dequant32(w, &v[r], l, k, m0, m1);
                fma_block(acc, r, w, x, K, k, m0, m1, n_tokens);
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
static void gemv_tile_n(float *y, size_t ldy, const float *x, const folo_qlinear *l, int r0,
                        int n_rows, int n_tokens, int mode) {
#define GEMV_CASE(T)                                                              \
    case T:                                                                       \
        if (mode == READ_TABLE) gemv_tile(y, ldy, x, l, r0, n_rows, T, READ_TABLE); \
        else if (mode == READ_BYTES) gemv_tile(y, ldy, x, l, r0, n_rows, T, READ_BYTES); \
        else gemv_tile(y, ldy, x, l, r0, n_rows, T, READ_ANY);                    \
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

static void gemv_int4_avx512(float *y, size_t ldy, const float *x, int n_tokens,
                             const folo_qlinear *l, int row_begin, int row_end) {
    int mode = read_mode(l);
    for (int r0 = row_begin; r0 < row_end; r0 += TILE_ROWS) {
        int n_rows = row_end - r0 < TILE_ROWS ? row_end - r0 : TILE_ROWS;
        gemv_tile_n(y, ldy, x, l, r0, n_rows, n_tokens, mode);
    }
}

const folo_cpu_int4_kernels folo_cpu_int4_kernels_avx512 = {
    .dequant = dequant_int4_avx512,
    .gemv = gemv_int4_avx512,
    .dequant_bf16 = dequant_bf16_int4_avx512,
    .gemv_bf16 = NULL,
};
#endif
