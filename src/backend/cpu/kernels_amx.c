/* AMX twin of the bf16 matmul (Intel Advanced Matrix Extensions: AMX-TILE
 * and AMX-BF16); compiled with those flags and AVX-512's (CMakeLists.txt)
 * and reached only through folo_cpu_kernels_for, which checks the CPU and
 * asks Linux for the tile state first. Everything else in the table (f32 and
 * f16 weights, SiLU·up, attention) is the AVX-512 table's.
 *
 * Why: on a CPU with AMX one core runs `tdpbf16ps` (a 16 x 16 x 32 bf16
 * product into f32 tiles) at about 3.6 TFLOP/s, twenty times its f32 FMA
 * (docs/performance.md), so prefill and batched decode stop being bound by
 * arithmetic.
 *
 * Exactness. AMX multiplies bf16 by bf16; the weights are bf16 already, the
 * activations are f32. Each activation is split in two bf16 numbers, hi =
 * bf16(x) and lo = bf16(x - hi), so that hi + lo carries 16 of x's 24
 * significant bits (a relative error below 2^-16), and w·x is computed as
 * w·hi + w·lo: every product of two bf16 numbers is exact in f32 and the
 * sums are f32. The result is as close to the f32 matmul as the AVX-512 one
 * is (tests/c/test_cpu_isa.c), not the same bits.
 *
 * Batch invariance. A dot product x_t · w_r is accumulated in one element of
 * an f32 tile, 32 columns of K at a time in order, hi before lo; the tile
 * unit computes an element from its row of A and its column of B alone, so
 * how many rows and tokens share the tile, or which tile shape the call
 * uses, does not change the bits: a token's result is the same in a batch of
 * 1 or 512, as kernels.h promises. Decode therefore runs on AMX too.
 *
 * Layout. The weights are the A operand, read in place: a tile is 16 rows x
 * 32 columns of the row-major [N, K] bf16 matrix (a row stride of 2K
 * bytes), so nothing is repacked at load. The tokens are the B operand, in
 * the pair-interleaved ("VNNI") layout AMX wants: row i of a B tile holds,
 * for each of 16 tokens, the pair of columns (2i, 2i + 1). Each call packs
 * a block of tokens that way (a 16 x 16 transpose of 32-bit pairs), hi and
 * lo; a C tile holds 16 rows x 16 tokens and is transposed back on its way
 * to y [tokens, rows]. A single token needs neither transpose: its pairs
 * are one B row of stride 4, and its C column is y's row.
 *
 * Shapes. Tiles 0-3 accumulate, 4-5 hold weights, 6-7 the hi and lo tokens.
 * Beyond 16 tokens a step takes 32 rows against two groups of 16, so that
 * each weight tile meets four token tiles. Up to 16 tokens (decode, small
 * batches), bound by the weight stream, a step takes 16 rows against the
 * group: 16 rows of 2K bytes are read side by side, and more (64 were
 * tried) ran the down projection (K = 3072) at 7 GB/s on one core against
 * 13 for 16 rows and 11-12 for AVX-512's GEMV, each row prefetched
 * PREFETCH_BYTES ahead. Tails of rows and tokens take one 16 x 16 tile with
 * fewer rows or columns configured. K must be a multiple of 32 (every Qwen3
 * size is); any other K goes to the AVX-512 matmul. */
#include "backend/cpu/kernels.h"

#if defined(__x86_64__)
/* GCC spells the AMX macros __AMX_TILE__, clang __AMXTILE__. */
#if !(defined(__AMX_TILE__) || defined(__AMXTILE__)) || \
    !(defined(__AMX_BF16__) || defined(__AMXBF16__)) || !defined(__AVX512BF16__)
#error "kernels_amx.c needs -mamx-tile -mamx-bf16 -mavx512bf16 (and AVX-512's flags)"
#endif

#include <immintrin.h>
#include <string.h>

#define TILE 16    /* rows of a tile, and tokens of a token group */
#define KSTEP 32   /* columns of K one tile product takes */
/* Packed token bytes a call holds (hi and lo, 4 bytes per column): inside
 * the 2 MiB L2 with room for weight tiles. A block holds at least 32 tokens,
 * at most 256; at K = 1024 that is 256 tokens, at 3072 64. */
#define TOKEN_BLOCK_BYTES (1u << 20)
#define MIN_BLOCK_TOKENS 32
#define MAX_BLOCK_TOKENS 256
/* How far ahead a weight tile's rows are prefetched, bytes of each row
 * (512 beat 1024-4096 with 16 rows in flight; more floods the L1). */
#define PREFETCH_BYTES 512

/* The tile configuration (Intel SDM, LDTILECFG): palette 1, 16 tiles'
 * bytes per row and rows. */
typedef struct tile_config {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Tiles 0-3: C [n_rows, n_tokens] f32; 4-5: A [n_rows, KSTEP] bf16; 6-7:
 * B [KSTEP / 2, n_tokens] bf16 pairs. Loaded only when the shape changes. */
static void configure(int *current, int n_rows, int n_tokens) {
    int shape = n_rows * 64 + n_tokens;
    if (*current == shape) return;
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 4; i++) {
        c.rows[i] = (uint8_t)n_rows;
        c.colsb[i] = (uint16_t)(n_tokens * 4);
    }
    for (int i = 4; i < 6; i++) {
        c.rows[i] = (uint8_t)n_rows;
        c.colsb[i] = KSTEP * 2;
    }
    for (int i = 6; i < 8; i++) {
        c.rows[i] = KSTEP / 2;
        c.colsb[i] = (uint16_t)(n_tokens * 4);
    }
    /* GCC's _tile_loadconfig tells the compiler it reads 8 bytes; the
     * barrier keeps the stores to the other 56. */
    __asm__ __volatile__("" : : "r"(&c) : "memory");
    _tile_loadconfig(&c);
    *current = shape;
}

/* r[i][j] <- r[j][i] for 16 registers of 16 32-bit lanes: four rounds that
 * swap the off-diagonal blocks of 8, 4, 2 and 1. */
static inline void transpose16(__m512i r[TILE]) {
    static const int dist[4] = {8, 4, 2, 1};
    for (int s = 0; s < 4; s++) {
        int d = dist[s];
        int lo[TILE], hi[TILE];
        for (int j = 0; j < TILE; j++) {
            lo[j] = (j & d) ? TILE + j - d : j;
            hi[j] = (j & d) ? TILE + j : j + d;
        }
        __m512i ilo = _mm512_loadu_si512(lo), ihi = _mm512_loadu_si512(hi);
        for (int i = 0; i < TILE; i++) {
            if (i & d) continue;
            __m512i a = r[i], b = r[i + d];
            r[i] = _mm512_permutex2var_epi32(a, ilo, b);
            r[i + d] = _mm512_permutex2var_epi32(a, ihi, b);
        }
    }
}

/* Bytes of the packed tokens of one group (hi and lo tiles per K step). */
static size_t group_bytes(int K) { return (size_t)(K / KSTEP) * 2 * 1024; }

/* The row stride in bytes of a packed group's B tiles: a single token's
 * pairs are one row of 16 (decode: no transpose), others a full tile. */
static size_t group_stride(int n_tokens) { return n_tokens == 1 ? 4 : 64; }

/* packed [K / KSTEP][hi, lo][KSTEP / 2][TILE] 32-bit pairs = the n_tokens
 * (<= TILE) tokens of x [n_tokens, K] split in hi and lo bf16, as B tiles
 * of row stride group_stride(n_tokens); missing tokens are +0. */
static void pack_group(uint32_t *packed, const float *x, int n_tokens, int K) {
    for (int k = 0; k < K; k += KSTEP, packed += 2 * 256) {
        __m512i hi[TILE], lo[TILE];
        for (int t = 0; t < TILE; t++) {
            if (t >= n_tokens) {
                hi[t] = lo[t] = _mm512_setzero_si512();
                continue;
            }
            const float *row = x + (size_t)t * K + k;
            __m512 x0 = _mm512_loadu_ps(row), x1 = _mm512_loadu_ps(row + 16);
            __m256i h0 = (__m256i)_mm512_cvtneps_pbh(x0), h1 = (__m256i)_mm512_cvtneps_pbh(x1);
            __m512 f0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h0), 16));
            __m512 f1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h1), 16));
            hi[t] = _mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1);
            lo[t] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(x1, f1), _mm512_sub_ps(x0, f0));
        }
        if (n_tokens == 1) {
            _mm512_storeu_si512(packed, hi[0]);
            _mm512_storeu_si512(packed + 256, lo[0]);
            continue;
        }
        transpose16(hi);
        transpose16(lo);
        for (int i = 0; i < TILE; i++) {
            _mm512_storeu_si512(packed + i * TILE, hi[i]);
            _mm512_storeu_si512(packed + 256 + i * TILE, lo[i]);
        }
    }
}

/* y[t, r0 + i] = c[i][t] for i < n_rows, t < n_tokens: a C tile [16 rows,
 * 16 tokens] stored in c, transposed to y's token rows. */
static void store_c(float *y, size_t ldy, float *c, int n_rows, int n_tokens) {
    __m512i r[TILE];
    for (int i = 0; i < TILE; i++) r[i] = _mm512_loadu_si512(c + i * TILE);
    transpose16(r);
    __mmask16 m = (__mmask16)((1u << n_rows) - 1u);
    for (int t = 0; t < n_tokens; t++)
        _mm512_mask_storeu_epi32(y + (size_t)t * ldy, m, r[t]);
}

static inline void prefetch_rows(const char *w, size_t stride, int n_rows) {
    for (int i = 0; i < n_rows; i++) _mm_prefetch(w + (size_t)i * stride, _MM_HINT_T0);
}

/* The two products. w: the first weight row's column 0; stride: bytes per
 * weight row; b: the packed token group(s), bstride their B tiles' row
 * stride; c: [TILE, TILE] f32 scratch. */

/* n_rows (<= 16) rows x one group of n_tokens (configured). */
static void product_1x1(float *y, size_t ldy, const char *w, size_t stride, const uint32_t *b,
                        size_t bstride, int K, int n_rows, int n_tokens, float *c) {
    _tile_zero(0);
    for (int k = 0; k < K; k += KSTEP, b += 512) {
        prefetch_rows(w + 2 * k + PREFETCH_BYTES, stride, n_rows);
        _tile_loadd(4, w + 2 * k, stride);
        _tile_loadd(6, b, bstride);
        _tile_loadd(7, b + 256, bstride);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(0, 4, 7);
    }
    if (n_tokens == 1) {
        _tile_stored(0, y, 4); /* one token: the tile's column is y's row */
        return;
    }
    _tile_stored(0, c, 64);
    store_c(y, ldy, c, n_rows, n_tokens);
}

/* 32 rows x two full groups of 16 tokens (b0, b1; configured 16 x 16). */
static void product_2x2(float *y, size_t ldy, const char *w, size_t stride, const uint32_t *b0,
                        const uint32_t *b1, int K, float *c) {
    const char *w1 = w + TILE * stride;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k = 0; k < K; k += KSTEP, b0 += 512, b1 += 512) {
        prefetch_rows(w + 2 * k + PREFETCH_BYTES, stride, 2 * TILE);
        _tile_loadd(4, w + 2 * k, stride);
        _tile_loadd(5, w1 + 2 * k, stride);
        _tile_loadd(6, b0, 64);
        _tile_loadd(7, b0 + 256, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(0, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(2, 5, 7);
        _tile_loadd(6, b1, 64);
        _tile_loadd(7, b1 + 256, 64);
        _tile_dpbf16ps(1, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(3, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, 64);
    store_c(y, ldy, c, TILE, TILE);
    _tile_stored(1, c, 64);
    store_c(y + TILE * ldy, ldy, c, TILE, TILE);
    _tile_stored(2, c, 64);
    store_c(y + TILE, ldy, c, TILE, TILE);
    _tile_stored(3, c, 64);
    store_c(y + TILE * ldy + TILE, ldy, c, TILE, TILE);
}

static int block_tokens(int K) {
    int n = (int)(TOKEN_BLOCK_BYTES / ((size_t)K * 4)) / TILE * TILE;
    if (n < MIN_BLOCK_TOKENS) n = MIN_BLOCK_TOKENS;
    return n > MAX_BLOCK_TOKENS ? MAX_BLOCK_TOKENS : n;
}

/* Floats matmul_amx needs (at least AVX-512's, which it falls back to). */
static size_t matmul_scratch_f32(int K) {
    size_t avx512 = folo_cpu_kernels_avx512.matmul_scratch_floats(K);
    size_t own = (size_t)(block_tokens(K) / TILE) * group_bytes(K) / sizeof(float) + TILE * TILE;
    return own > avx512 ? own : avx512;
}

/* matmul_amx's, then a block of rounded tokens for matmul_bf16_amx. */
static size_t matmul_scratch_amx(int K) {
    return matmul_scratch_f32(K) + (size_t)block_tokens(K) * K;
}

/* One block of n_tokens (<= block_tokens(K)) tokens, packed in groups at
 * packed, against rows [r, end). */
static void block_rows(float *y, size_t ldy, const uint32_t *packed, int n_tokens, int K,
                       const char *w, int r, int end, float *c, int *shape) {
    size_t stride = (size_t)K * 2, gsize = group_bytes(K) / sizeof(uint32_t);
    int n_groups = (n_tokens + TILE - 1) / TILE, full = n_tokens / TILE;
    int last = n_tokens - (n_groups - 1) * TILE; /* tokens of the last group */
    while (r < end) {
        const char *wr = w + (size_t)r * stride;
        float *yr = y + r;
        if (n_groups > 1 && end - r >= 2 * TILE) {
            int g = 0;
            if (full >= 2) configure(shape, TILE, TILE);
            for (; g + 1 < full; g += 2)
                product_2x2(yr + (size_t)g * TILE * ldy, ldy, wr, stride, packed + g * gsize,
                            packed + (g + 1) * gsize, K, c);
            for (; g < n_groups; g++) {
                int nt = g < full ? TILE : last;
                configure(shape, TILE, nt);
                for (int h = 0; h < 2; h++)
                    product_1x1(yr + (size_t)g * TILE * ldy + h * TILE, ldy,
                                wr + (size_t)h * TILE * stride, stride, packed + g * gsize,
                                group_stride(nt), K, TILE, nt, c);
            }
            r += 2 * TILE;
        } else {
            int nr = end - r < TILE ? end - r : TILE;
            for (int g = 0; g < n_groups; g++) {
                int nt = g < full ? TILE : last;
                configure(shape, nr, nt);
                product_1x1(yr + (size_t)g * TILE * ldy, ldy, wr, stride, packed + g * gsize,
                            group_stride(nt), K, nr, nt, c);
            }
            r += nr;
        }
    }
}

static void matmul_amx(float *y, size_t ldy, const float *x, int n_tokens, int K, const void *w,
                       folo_dtype w_dtype, int row_begin, int row_end, float *scratch) {
    if (w_dtype != FOLO_DTYPE_BF16 || K % KSTEP != 0) {
        folo_cpu_kernels_avx512.matmul(y, ldy, x, n_tokens, K, w, w_dtype, row_begin, row_end,
                                       scratch);
        return;
    }
    int block = block_tokens(K), shape = -1;
    size_t gsize = group_bytes(K) / sizeof(uint32_t);
    uint32_t *packed = (uint32_t *)scratch;
    float *c = scratch + (size_t)(block / TILE) * gsize; /* [TILE, TILE] */
    for (int t0 = 0; t0 < n_tokens; t0 += block) {
        int nt = n_tokens - t0 < block ? n_tokens - t0 : block;
        for (int g = 0; g * TILE < nt; g++) {
            int n = nt - g * TILE < TILE ? nt - g * TILE : TILE;
            pack_group(packed + g * gsize, x + (size_t)(t0 + g * TILE) * K, n, K);
        }
        block_rows(y + (size_t)t0 * ldy, ldy, packed, nt, K, w, row_begin, row_end, c, &shape);
    }
    _tile_release();
}

/* matmul_bf16 (kernels.h): the tokens rounded to bf16 a block at a time,
 * then matmul_amx on them. Its lo halves are then +0, so the tile products
 * give exactly the bf16 activations' products with f32 sums: the semantics
 * of --dtype bfloat16 at the tile unit's rate (`vdpbf16ps` is slower than
 * the f32 FMA on the Xeons that have AMX). */
static void matmul_bf16_amx(float *y, size_t ldy, const float *x, int n_tokens, int K,
                            const void *w, folo_dtype w_dtype, int row_begin, int row_end,
                            float *scratch) {
    int block = block_tokens(K);
    float *xr = scratch + matmul_scratch_f32(K); /* [block, K] */
    for (int t0 = 0; t0 < n_tokens; t0 += block) {
        int nt = n_tokens - t0 < block ? n_tokens - t0 : block;
        const float *xt = x + (size_t)t0 * K;
        for (size_t i = 0; i < (size_t)nt * K; i++)
            xr[i] = folo_bf16_round(xt[i]);
        matmul_amx(y + (size_t)t0 * ldy, ldy, xr, nt, K, w, w_dtype, row_begin, row_end,
                   scratch);
    }
}

static void silu_mul_amx(float *gate, const float *up, size_t n) {
    folo_cpu_kernels_avx512.silu_mul(gate, up, n);
}

static void rmsnorm_amx(float *out, const float *x, const float *weight, int n, float eps) {
    folo_cpu_kernels_avx512.rmsnorm(out, x, weight, n, eps);
}

static void attention_group_amx(float *const *out, const float *const *q, const int *n_ctx,
                                int n_queries, const void *k_cache, const void *v_cache,
                                folo_dtype kv_dtype, const int32_t *block_table, int block_size,
                                int n_kv_heads, const int *kv_head, int head_dim,
                                float scale) {
    folo_cpu_kernels_avx512bf16.attention_group(out, q, n_ctx, n_queries, k_cache, v_cache,
                                                kv_dtype, block_table, block_size, n_kv_heads,
                                                kv_head, head_dim, scale);
}

const folo_cpu_kernels folo_cpu_kernels_amx = {
    .name = "amx",
    .matmul = matmul_amx,
    .matmul_bf16 = matmul_bf16_amx,
    .matmul_scratch_floats = matmul_scratch_amx,
    .silu_mul = silu_mul_amx,
    .rmsnorm = rmsnorm_amx,
    .attention_group = attention_group_amx,
};

#endif
