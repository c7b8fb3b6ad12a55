/* Inline helpers of the AVX-512 GPTQ kernels (kernels_int4_avx512.c,
 * kernels_int4_avx512bf16.c): reading a repacked row (model/gptq.h) 32
 * columns at a time, as f32 or as bf16. Include only from files compiled
 * with AVX-512 flags. */
#ifndef FOLO_BACKEND_CPU_KERNELS_INT4_AVX512_H
#define FOLO_BACKEND_CPU_KERNELS_INT4_AVX512_H

#include <immintrin.h>

#include "backend/cpu/lanes_avx512.h"
#include "model/gptq.h"

/* One row's view for dequantizing 16-column halves of 32-column blocks. */
typedef struct {
    const uint8_t *codes;  /* [K32 / 2] */
    const float *scales;   /* [n_groups] */
    const float *zeros;    /* [n_groups] */
} row_view;

static inline row_view row_at(const folo_qlinear *l, size_t n) {
    row_view v = {l->codes + n * l->row_bytes, l->scales + n * (size_t)l->n_groups,
                  l->zeros + n * (size_t)l->n_groups};
    return v;
}

/* The views of a GEMV tile's `tile` rows from r0, n_rows of them real (the
 * rest repeat the last, their results masked off). */
static inline void tile_rows(row_view *v, int tile, const folo_qlinear *l, int r0, int n_rows) {
    for (int r = 0; r < tile; r++) v[r] = row_at(l, (size_t)(r0 + (r < n_rows ? r : n_rows - 1)));
}

/* The codes of columns k .. k + 31 of a row in two vectors of 16 32-bit
 * lanes, lane c of half h holding column 16h + c in its low 4 bits (above
 * them, other columns' bits): the block's eight words in each half of
 * both vectors, shifted by 4 · (column / 8) (gptq.h). */
static inline void nibbles32(__m512i idx[2], const uint8_t *codes, int k) {
    __m512i words = _mm512_cvtepu16_epi32(
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(codes + k / 2))));
    idx[0] = _mm512_srlv_epi32(words, _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4,
                                                        4, 4));
    idx[1] = _mm512_srlv_epi32(words, _mm512_setr_epi32(8, 8, 8, 8, 8, 8, 8, 8, 12, 12, 12, 12,
                                                        12, 12, 12, 12));
}

/* Columns k .. k + 31 of a row as two vectors of 16 (any bits, any
 * groups): each lane's scale and zero gathered through g_idx, or
 * broadcast when the block lies in one group (contiguous groups of a
 * multiple of 32 columns); the lanes outside m0 and m1 (past K) +0. */
static inline void dequant32(__m512 w[2], const row_view *v, const folo_qlinear *l, int k,
                             __mmask16 m0, __mmask16 m1) {
    __m512i code[2];
    if (l->bits == 8) {
        code[0] = _mm512_maskz_cvtepu8_epi32(m0, _mm_maskz_loadu_epi8(m0, v->codes + k));
        code[1] = _mm512_maskz_cvtepu8_epi32(m1, _mm_maskz_loadu_epi8(m1, v->codes + k + 16));
    } else {
        nibbles32(code, v->codes, k);
        code[0] = _mm512_and_si512(code[0], _mm512_set1_epi32(15));
        code[1] = _mm512_and_si512(code[1], _mm512_set1_epi32(15));
    }
    bool one_group = l->contiguous_groups && l->group_size % 32 == 0;
    __mmask16 m[2] = {m0, m1};
    for (int half = 0; half < 2; half++) {
        __m512 scale, zero;
        if (one_group) {
            int g = k / l->group_size;
            scale = _mm512_set1_ps(v->scales[g]);
            zero = _mm512_set1_ps(v->zeros[g]);
        } else {
            __m512i g = _mm512_maskz_loadu_epi32(m[half], l->g_idx + k + 16 * half);
            scale = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m[half], g, v->scales, 4);
            zero = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m[half], g, v->zeros, 4);
        }
        w[half] = _mm512_maskz_mul_ps(m[half], _mm512_sub_ps(_mm512_cvtepi32_ps(code[half]), zero),
                                      scale);
    }
}

/* How a kernel reads a row, 32 columns at a time: in contiguous groups of
 * whole 32-column blocks, a block lies in one group, whose 16 values (4
 * bits) fit a register that the codes index (READ_TABLE), or whose scale
 * and zero serve the block's 32 bytes (READ_BYTES, 8 bits); otherwise each
 * column finds its group through g_idx (READ_ANY, dequant32). */
enum { READ_ANY, READ_TABLE, READ_BYTES };

static int read_mode(const folo_qlinear *l) {
    if (!l->contiguous_groups || l->group_size % 32 != 0) return READ_ANY;
    return l->bits == 4 ? READ_TABLE : READ_BYTES;
}

/* Columns k .. k + 31 of an 8-bit row whose block lies in one group of the
 * given zero and scale (READ_BYTES): (code − zero) · scale, as dequant32. */
static inline void bytes32(__m512 w[2], const uint8_t *codes, int k, __m512 zero, __m512 scale) {
    for (int half = 0; half < 2; half++) {
        __m512i code =
            _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + k + 16 * half)));
        w[half] = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(code), zero), scale);
    }
}

/* The 16 values (c − zero) · scale, c = 0..15, of group g of a row. */
static inline __m512 group_table(const row_view *v, int g) {
    const __m512 codes = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return _mm512_mul_ps(_mm512_sub_ps(codes, _mm512_set1_ps(v->zeros[g])),
                         _mm512_set1_ps(v->scales[g]));
}

/* Columns k .. k + 31 of a row through its group's table (READ_TABLE;
 * vpermps reads the low 4 bits of an index). */
static inline void lookup32(__m512 w[2], const uint8_t *codes, int k, __m512 table) {
    __m512i idx[2];
    nibbles32(idx, codes, k);
    w[0] = _mm512_permutexvar_ps(idx[0], table);
    w[1] = _mm512_permutexvar_ps(idx[1], table);
}

/* 16 f32 lanes rounded to bf16 as folo_f32_to_bf16 rounds them (to
 * nearest even; a NaN stays a quiet NaN). */
static inline __m256i round_bf16(__m512 f) {
    __m512i u = _mm512_castps_si512(f), high = _mm512_srli_epi32(u, 16);
    __m512i bias = _mm512_add_epi32(_mm512_and_si512(high, _mm512_set1_epi32(1)),
                                    _mm512_set1_epi32(0x7fff));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, high, _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

/* Group g's 16 values (group_table) rounded to bf16, twice: in words 0-15
 * and 16-31, so that vpermw, which reads the low 5 bits of an index, finds
 * a code's value whatever bit 4 of the index holds. */
static inline __m512i group_table_bf16(const row_view *v, int g) {
    __m256i once = round_bf16(group_table(v, g));
    return _mm512_inserti64x4(_mm512_castsi256_si512(once), once, 1);
}

/* Columns k .. k + 31 of a row as 32 bf16 through its group's
 * group_table_bf16: the block's 16 bytes in each 128-bit lane, lane L's
 * words shifted by 4L, so that word j holds column j's code in its low 4
 * bits (gptq.h); bit 4, another column's, picks the table's copy. */
static inline __m512i lookup32_bf16(const uint8_t *codes, int k, __m512i table) {
    __m512i block = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(codes + k / 2)));
    __m512i by_lane = _mm512_setr_epi64(0, 0, 0x0004000400040004, 0x0004000400040004,
                                        0x0008000800080008, 0x0008000800080008,
                                        0x000c000c000c000c, 0x000c000c000c000c);
    return _mm512_permutexvar_epi16(_mm512_srlv_epi16(block, by_lane), table);
}

/* Columns k .. k + 31 of a row as 32 bf16, each through its own group
 * (dequant32), the lanes outside m0 and m1 +0. */
static inline __m512i dequant32_bf16(const row_view *v, const folo_qlinear *l, int k,
                                     __mmask16 m0, __mmask16 m1) {
    __m512 w[2];
    dequant32(w, v, l, k, m0, m1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(round_bf16(w[0])), round_bf16(w[1]), 1);
}

#endif
