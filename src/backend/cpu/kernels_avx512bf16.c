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
 * reduced by the same tree.
 *
 * matmul_bf16_panels multiplies the same tokens with the backend's copy of
 * the weights as row panels (kernels.h), lanes as rows and no reduction
 * (below); its own order, batch-invariant the same way. */
#include "backend/cpu/kernels.h"

#if defined(__x86_64__)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__AVX512BF16__)
#error "kernels_avx512bf16.c needs -mavx512f -mavx512bw -mavx512vl -mavx512bf16"
#endif

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/bf16_avx512.h"
#include "backend/cpu/math_avx512.h"
#include "backend/cpu/reduce_avx512.h"

#define TILE_ROWS FOLO_CPU_MATMUL_ROWS
#define TILE_TOKENS 6
#define PANEL_TOKENS 8 /* tokens of a panel tile (below) */
/* Rounded activations of a token block: within a 1 MiB L2 beside the
 * weight rows; at least MIN_BLOCK_TOKENS tokens, so that the weights of a
 * 512-token prefill come from memory a few times at most. */
#define TOKEN_BLOCK_BYTES (512 * 1024)
#define MIN_BLOCK_TOKENS 96 /* 16 row tiles, 12 panel tiles */
/* How far ahead of its loads a tile prefetches each weight row (the
 * hardware prefetcher alone keeps too few lines in flight; on Zen4 a
 * single token's row stream reached 28-32 GB/s with 4 KiB, 26-30 with 8 KiB
 * and 22 with none). */
#define PREFETCH_BYTES 4096

_Static_assert(TILE_ROWS == 4, "a tile reduces its rows with reduce4");

/* A prefetch into L1 (l1) or L2: a branch, as the hint must be a constant
 * even where the caller's is one only once inlined (-O0). */
static inline __attribute__((always_inline)) void prefetch_to(const void *p, int l1) {
    if (l1)
        _mm_prefetch((const char *)p, _MM_HINT_T0);
    else
        _mm_prefetch((const char *)p, _MM_HINT_T1);
}

/* Tokens a block rounds at once, whole tiles of `tile` tokens. */
static int block_tokens(int K, int tile) {
    int block = TOKEN_BLOCK_BYTES / (bf16_padded(K) * 2) / tile * tile;
    return block < MIN_BLOCK_TOKENS ? MIN_BLOCK_TOKENS : block;
}

/* Floats of one block of rounded tokens, for either tile. */
static size_t matmul_bf16_scratch(int K) {
    int rows = block_tokens(K, TILE_TOKENS), panels = block_tokens(K, PANEL_TOKENS);
    return (size_t)(rows > panels ? rows : panels) * bf16_padded(K) / 2;
}

/* y[t, r] = xb_t · w_r for t < n_tokens, r < n_rows (both constants once
 * inlined, n_rows <= rows); xb rows of stride Kp, w: row pointers [K],
 * each prefetched `prefetch` bytes ahead of its loads (into L1 for a single
 * row, L2 for a group). */
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
            prefetch_to((const char *)(w[r] + k) + prefetch, rows == 1);
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
    int Kp = bf16_padded(K), block = block_tokens(K, TILE_TOKENS);
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
                /* every tile prefetches the next group of rows, the same
                 * columns, into L2 (whose misses in flight outnumber L1's:
                 * 16 sequences' decode steps 106-110 -> 94 ms on Zen4
                 * against prefetching into L1). The first tile's alone
                 * leave lines behind, which the later tiles' catch: 16
                 * sequences' decode 172 -> 237 tokens/s, 64 sequences'
                 * +5-8 %, prefill unchanged (Zen4, weights in huge pages,
                 * alternating runs) */
                tile_n(y + (size_t)(t0 + t) * ldy + r0, ldy, xb + (size_t)t * Kp, Kp, K, rows,
                       n_rows, n, (size_t)TILE_ROWS * K * sizeof(uint16_t));
            }
        }
    }
}

/* ---- matmul_bf16 on row panels ------------------------------------------- */

/* The weights the backend copies at start-up, as row panels (kernels.h): a
 * pair of columns of a panel's 32 rows is two registers, 16 rows each. A
 * tile broadcasts one pair of each of its PANEL_TOKENS tokens and
 * multiplies it with both, so the lanes are rows and a (token, row)'s dot
 * product runs down one lane over K in order: no reduction, each register
 * stored as it stands; any batch size sums the same way. A panel is one
 * stream in memory; every tile prefetches the same columns of the next
 * panel into L2, as the row tiles above do for their next group. */
_Static_assert(FOLO_CPU_PANEL_ROWS == 32, "a pair of a panel's columns is two registers");

/* y[t, r] for t < n_tokens (a constant once inlined) and the rows m0 / m1
 * keep of the panel's two halves; xb: the tokens rounded, as pairs, rows of
 * Kp2; panel: [K2][32] pairs, the next panel right after it. */
static inline __attribute__((always_inline)) void
panel_tile(float *y, size_t ldy, const uint32_t *xb, int Kp2, int K2, const uint32_t *panel,
           __mmask16 m0, __mmask16 m1, const int n_tokens) {
    __m512 acc[PANEL_TOKENS][2];
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    size_t next = n_tokens == 1 ? PREFETCH_BYTES / sizeof(uint32_t)
                                : (size_t)K2 * FOLO_CPU_PANEL_ROWS;
    for (int c = 0; c < K2; c++) {
        const uint32_t *p = panel + (size_t)c * FOLO_CPU_PANEL_ROWS;
        prefetch_to(p + next, n_tokens == 1);
        prefetch_to(p + next + 16, n_tokens == 1);
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(p);
        __m512bh w1 = (__m512bh)_mm512_loadu_si512(p + 16);
#pragma GCC unroll 8
        for (int t = 0; t < n_tokens; t++) {
            __m512bh xv = (__m512bh)_mm512_set1_epi32((int)xb[(size_t)t * Kp2 + c]);
            acc[t][0] = _mm512_dpbf16_ps(acc[t][0], xv, w0);
            acc[t][1] = _mm512_dpbf16_ps(acc[t][1], xv, w1);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++) {
        _mm512_mask_storeu_ps(y + (size_t)t * ldy, m0, acc[t][0]);
        _mm512_mask_storeu_ps(y + (size_t)t * ldy + 16, m1, acc[t][1]);
    }
}

static void panel_tile_n(float *y, size_t ldy, const uint32_t *xb, int Kp2, int K2,
                         const uint32_t *panel, __mmask16 m0, __mmask16 m1, int n_tokens) {
    switch (n_tokens) {
    case 1: panel_tile(y, ldy, xb, Kp2, K2, panel, m0, m1, 1); break;
    case 2: panel_tile(y, ldy, xb, Kp2, K2, panel, m0, m1, 2); break;
    case 3: panel_tile(y, ldy, xb, Kp2, K2, panel, m0, m1, 3); break;
    case 4: panel_tile(y, ldy, xb, Kp2, K2, panel, m0, m1, 4); break;
    case 5: panel_tile(y, ldy, xb, Kp2, K2, panel, m0, m1, 5); break;
    case 6: panel_tile(y, ldy, xb, Kp2, K2, panel, m0, m1, 6); break;
    case 7: panel_tile(y, ldy, xb, Kp2, K2, panel, m0, m1, 7); break;
    default: panel_tile(y, ldy, xb, Kp2, K2, panel, m0, m1, PANEL_TOKENS); break;
    }
}

/* kernels.h's matmul_bf16_panels. */
static void matmul_bf16_panels_avx512bf16(float *y, size_t ldy, const float *x, int n_tokens,
                                          int K, const void *w, folo_dtype w_dtype,
                                          int row_begin, int row_end, float *scratch) {
    (void)w_dtype; /* FOLO_DTYPE_BF16 */
    int Kp2 = bf16_padded(K) / 2, K2 = (K + 1) / 2, block = block_tokens(K, PANEL_TOKENS);
    uint16_t *xb = (uint16_t *)scratch; /* [block, Kp] */
    for (int t0 = 0; t0 < n_tokens; t0 += block) {
        int nt = n_tokens - t0 < block ? n_tokens - t0 : block;
        bf16_round_tokens(xb, x + (size_t)t0 * K, nt, K);
        for (int r0 = row_begin; r0 < row_end; r0 += FOLO_CPU_PANEL_ROWS) {
            const uint32_t *panel =
                (const uint32_t *)w + (size_t)(r0 / FOLO_CPU_PANEL_ROWS) * K2 * FOLO_CPU_PANEL_ROWS;
            __mmask16 m0 = lanes_below(row_end - r0), m1 = lanes_below(row_end - r0 - 16);
            for (int t = 0; t < nt; t += PANEL_TOKENS) {
                int n = nt - t < PANEL_TOKENS ? nt - t : PANEL_TOKENS;
                panel_tile_n(y + (size_t)(t0 + t) * ldy + r0, ldy,
                             (const uint32_t *)xb + (size_t)t * Kp2, Kp2, K2, panel, m0, m1, n);
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

static void rmsnorm_avx512bf16(float *out, const float *x, const float *weight, int n, float eps) {
    folo_cpu_kernels_avx512.rmsnorm(out, x, weight, n, eps);
}

/* ---- attention on vdpbf16ps -------------------------------------------- */

/* A bf16 cache's attention as two small matrix products per tile of
 * ATT_KEYS keys, for all the queries of a kv head at once, reading the cache
 * in the layout kernels.h gives it (no copy, no transpose):
 *
 * - scores S = Q·Kᵀ with the keys across the lanes: a register of a key
 *   region holds one column pair of 16 positions, and one `vdpbf16ps`
 *   multiplies one pair of a query (broadcast) with it. No horizontal sums:
 *   lane j of a query's two registers is key j's score, summed over the
 *   pairs in order. Up to QK_QUERIES queries share each load;
 * - the online softmax of each query's 32 scores in those registers, the
 *   block's maxima, rescalings and denominators eight queries to a
 *   register (reduce8: no scalar exp, no call that spills the scores); the
 *   probabilities P rounded to bf16 (the denominator sums them in f32, as
 *   FlashAttention does);
 * - the value update O = O·rescale + P·V, again on `vdpbf16ps`: a
 *   register of a value region holds 16 columns of one pair of positions,
 *   multiplied with that pair of a query's probabilities (broadcast);
 *   PV_QUERIES queries × PV_REGS registers of columns per pass.
 *
 * A query's bits never depend on the others: its lanes, its pairs, its
 * keys in order; keys it may not see score -inf (probability +0, which
 * adds nothing to the finite values), keys past the group's context are
 * never read. So a query alone gives the result it gets in any group. */
#define ATT_KEYS FOLO_CPU_ATTN_TILE
#define QK_QUERIES 8
#define PV_QUERIES 6
#define PV_REGS 4

_Static_assert(ATT_KEYS == 32, "a query's tile of scores is two registers");
_Static_assert(QK_QUERIES == 8, "reduce8 reduces a block of queries");
_Static_assert(FOLO_CPU_KV_BF16_BLOCK == 16, "a register of keys is 16 positions of a block");

/* Per query of a group: the online softmax's state, and the tile's
 * probabilities and rescaling. */
typedef struct att_state {
    const uint32_t *q; /* [pairs] the query as bf16 pairs */
    float *out;        /* [head_dim] Σ e^(score - max) · v, then the result */
    int n;             /* keys of the tile it sees */
    float max;         /* max score seen so far */
    float denom;       /* Σ e^(score - max) */
    float rescale;     /* e^(old max - new max) of this tile */
    uint32_t p[ATT_KEYS / 2]; /* e^(score - max) of the tile's keys as bf16 pairs, +0 past n */
} att_state;

/* Lane of query i's result in reduce8's. */
#define REDUCE8_LANE(i) (4 * ((i) % 4) + 2 * ((i) / 4))

/* The max (max != 0, a constant once inlined) or the sum of each of v[0..7]
 * over its 16 lanes, v[i]'s at lane REDUCE8_LANE(i): the tree of
 * _mm512_reduce_max_ps and _mm512_reduce_add_ps (halves, then quarters,
 * then the two lanes' pairs, then the lanes), so each result has the bits
 * that reducing its register alone gives, and eight reductions share a
 * quarter of the shuffles and none of the latency chain. */
static inline __attribute__((always_inline)) __m512 reduce8(const __m512 v[8], const int max) {
#define REDUCE8_OP(a, b) (max ? _mm512_max_ps(a, b) : _mm512_add_ps(a, b))
    __m512 h[4], q[2];
    for (int j = 0; j < 4; j++) /* [v[2j] halves combined | v[2j+1]'s] */
        h[j] = REDUCE8_OP(_mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int j = 0; j < 2; j++) /* quarter k: v[4j + k]'s quarters combined */
        q[j] = REDUCE8_OP(_mm512_shuffle_f32x4(h[2 * j], h[2 * j + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_f32x4(h[2 * j], h[2 * j + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* quarter k: lanes 0-1 v[k]'s pairs, lanes 2-3 v[4 + k]'s */
    __m512 p = REDUCE8_OP(_mm512_shuffle_ps(q[0], q[1], _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_ps(q[0], q[1], _MM_SHUFFLE(3, 2, 3, 2)));
    return REDUCE8_OP(p, _mm512_permute_ps(p, _MM_SHUFFLE(2, 3, 0, 1)));
#undef REDUCE8_OP
}

/* Lane `lane` of v in every lane. */
static inline __m512 lane_of(__m512 v, int lane) {
    return _mm512_permutexvar_ps(_mm512_set1_epi32(lane), v);
}

/* Scores, softmax and probabilities of one tile for nq (a constant once
 * inlined) queries; their maxima, rescalings and denominators a register
 * at a time (reduce8). next_k, unless NULL: the next tile's two key
 * regions, `pairs` lines each, which go into L2 a line of each per column
 * pair, spread over the sums rather than asked for at once (tile_values
 * does the same with the value regions; on the Zen4 a 16-sequence decode's
 * attention read its cache at 22-23 GB/s with the whole next tile asked
 * for at a tile's start, 25-26 with it spread over the scores, 29-30 over
 * the scores and the values). */
static inline __attribute__((always_inline)) void
tile_scores(att_state *const *st, const int nq, const uint32_t *const kh[2], int block_size,
            int pairs, float scale, const char *const next_k[2]) {
    __m512 s[QK_QUERIES][2];
    for (int i = 0; i < nq; i++) s[i][0] = s[i][1] = _mm512_setzero_ps();
    for (int c = 0; c < pairs; c++) {
        if (next_k) {
            _mm_prefetch(next_k[0] + (size_t)c * block_size * 4, _MM_HINT_T1);
            _mm_prefetch(next_k[1] + (size_t)c * block_size * 4, _MM_HINT_T1);
        }
        __m512bh k0 = (__m512bh)_mm512_loadu_si512(kh[0] + (size_t)c * block_size);
        __m512bh k1 = (__m512bh)_mm512_loadu_si512(kh[1] + (size_t)c * block_size);
#pragma GCC unroll 8
        for (int i = 0; i < nq; i++) {
            __m512bh qv = (__m512bh)_mm512_set1_epi32((int)st[i]->q[c]);
            s[i][0] = _mm512_dpbf16_ps(s[i][0], qv, k0);
            s[i][1] = _mm512_dpbf16_ps(s[i][1], qv, k1);
        }
    }
    __m512 minus_inf = _mm512_set1_ps(-INFINITY), scale_v = _mm512_set1_ps(scale);
    __m512 v[QK_QUERIES]; /* each query's larger score per lane, then its e0 + e1 */
    __m512 prev_max = minus_inf, prev_denom = _mm512_setzero_ps();
    for (int i = 0; i < QK_QUERIES; i++) {
        if (i >= nq) {
            v[i] = v[0]; /* a lane no query reads */
            continue;
        }
        __mmask16 lane = (__mmask16)(1u << REDUCE8_LANE(i));
        s[i][0] = _mm512_mask_mul_ps(minus_inf, lanes_below(st[i]->n), s[i][0], scale_v);
        s[i][1] = _mm512_mask_mul_ps(minus_inf, lanes_below(st[i]->n - 16), s[i][1], scale_v);
        v[i] = _mm512_max_ps(s[i][0], s[i][1]);
        prev_max = _mm512_mask_mov_ps(prev_max, lane, _mm512_set1_ps(st[i]->max));
        prev_denom = _mm512_mask_mov_ps(prev_denom, lane, _mm512_set1_ps(st[i]->denom));
    }
    __m512 new_max = _mm512_max_ps(reduce8(v, 1), prev_max);
    __m512 rescale = exp16(_mm512_sub_ps(prev_max, new_max)); /* 0 on the first tile */
    for (int i = 0; i < nq; i++) {
        __m512 m = lane_of(new_max, REDUCE8_LANE(i));
        __m512 e0 = exp16(_mm512_sub_ps(s[i][0], m)), e1 = exp16(_mm512_sub_ps(s[i][1], m));
        _mm512_storeu_si512(st[i]->p, (__m512i)_mm512_cvtne2ps_pbh(e1, e0)); /* keys 0-15 low */
        v[i] = _mm512_add_ps(e0, e1);
    }
    __m512 denom = _mm512_add_ps(_mm512_mul_ps(prev_denom, rescale), reduce8(v, 0));
    _Alignas(64) float max_l[16], rescale_l[16], denom_l[16];
    _mm512_store_ps(max_l, new_max);
    _mm512_store_ps(rescale_l, rescale);
    _mm512_store_ps(denom_l, denom);
    for (int i = 0; i < nq; i++) {
        st[i]->max = max_l[REDUCE8_LANE(i)];
        st[i]->rescale = rescale_l[REDUCE8_LANE(i)];
        st[i]->denom = denom_l[REDUCE8_LANE(i)];
    }
}

/* acc += p[pair] · v over PV_REGS registers of columns for nq queries, vrow
 * the value region's row of the pair's two positions, odd (a constant) when
 * the second may not have been written: its halves are read as +0. */
static inline __attribute__((always_inline)) void
pair_values(__m512 acc[PV_QUERIES][PV_REGS], att_state *const *st, const int nq, int pair,
            const uint32_t *vrow, const __mmask16 m[PV_REGS], const int odd) {
    __m512bh v[PV_REGS];
#pragma GCC unroll 4
    for (int c = 0; c < PV_REGS; c++) {
        __m512i x = _mm512_maskz_loadu_epi32(m[c], vrow + 16 * c);
        v[c] = (__m512bh)(odd ? _mm512_maskz_mov_epi16(0x55555555u, x) : x);
    }
#pragma GCC unroll 6
    for (int i = 0; i < nq; i++) {
        __m512bh p = (__m512bh)_mm512_set1_epi32((int)st[i]->p[pair]);
#pragma GCC unroll 4
        for (int c = 0; c < PV_REGS; c++) acc[i][c] = _mm512_dpbf16_ps(acc[i][c], p, v[c]);
    }
}

/* out = out · rescale + Σ_j p[j] · v[j] over the tile's first n_keys keys,
 * pair m of them at vp[m] [head_dim] (a value region's row of position
 * pairs), for nq (a constant once inlined) queries; past a query's own keys
 * its p is +0, which adds +0 (an odd last key's partner, which may not
 * have been written, is read as +0). next_v, unless NULL: the next tile's
 * two value regions, into L2 two lines of each per pair and pass (the
 * head_dim / 4 iterations of a whole tile cover head_dim / 2 lines). */
static inline __attribute__((always_inline)) void
tile_values(att_state *const *st, const int nq, const uint32_t *const *vp, int n_keys,
            int head_dim, const char *const next_v[2]) {
    for (int d0 = 0; d0 < head_dim; d0 += PV_REGS * 16) {
        __mmask16 m[PV_REGS];
        __m512 acc[PV_QUERIES][PV_REGS];
        for (int c = 0; c < PV_REGS; c++) m[c] = lanes_below(head_dim - d0 - 16 * c);
#pragma GCC unroll 6
        for (int i = 0; i < nq; i++) {
            __m512 r = _mm512_set1_ps(st[i]->rescale);
#pragma GCC unroll 4
            for (int c = 0; c < PV_REGS; c++)
                acc[i][c] = _mm512_mul_ps(
                    _mm512_maskz_loadu_ps(m[c], st[i]->out + d0 + 16 * c), r);
        }
        int pair = 0;
        for (; pair < n_keys / 2; pair++) {
            if (next_v) {
                size_t line = ((size_t)(d0 / (PV_REGS * 16)) * (ATT_KEYS / 2) + pair) * 128;
                _mm_prefetch(next_v[0] + line, _MM_HINT_T1);
                _mm_prefetch(next_v[0] + line + 64, _MM_HINT_T1);
                _mm_prefetch(next_v[1] + line, _MM_HINT_T1);
                _mm_prefetch(next_v[1] + line + 64, _MM_HINT_T1);
            }
            pair_values(acc, st, nq, pair, vp[pair] + d0, m, 0);
        }
        if (n_keys % 2) pair_values(acc, st, nq, pair, vp[pair] + d0, m, 1);
#pragma GCC unroll 6
        for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
            for (int c = 0; c < PV_REGS; c++)
                _mm512_mask_storeu_ps(st[i]->out + d0 + 16 * c, m[c], acc[i][c]);
    }
}

/* The register blocks of one tile: the scores in blocks of QK_QUERIES
 * queries, then the values in blocks of PV_QUERIES, each block's length a
 * constant for the compiler; the first block of each prefetches the next
 * tile's key regions (next[0..1]) and value regions (next[2..3]) unless
 * next is NULL. */
static void tile_queries(att_state *const *st, int n_active, const uint32_t *const kh[2],
                         int block_size, int pairs, float scale, const uint32_t *const *vp,
                         int head_dim, const char *const next[4]) {
    for (int i = 0; i < n_active; i += QK_QUERIES) {
        att_state *const *b = st + i;
        const char *const *k = i == 0 ? next : NULL;
        switch (n_active - i < QK_QUERIES ? n_active - i : QK_QUERIES) {
        case 1: tile_scores(b, 1, kh, block_size, pairs, scale, k); break;
        case 2: tile_scores(b, 2, kh, block_size, pairs, scale, k); break;
        case 3: tile_scores(b, 3, kh, block_size, pairs, scale, k); break;
        case 4: tile_scores(b, 4, kh, block_size, pairs, scale, k); break;
        case 5: tile_scores(b, 5, kh, block_size, pairs, scale, k); break;
        case 6: tile_scores(b, 6, kh, block_size, pairs, scale, k); break;
        case 7: tile_scores(b, 7, kh, block_size, pairs, scale, k); break;
        default: tile_scores(b, 8, kh, block_size, pairs, scale, k); break;
        }
    }
    for (int i = 0; i < n_active; i += PV_QUERIES) {
        att_state *const *b = st + i;
        int nq = n_active - i < PV_QUERIES ? n_active - i : PV_QUERIES, n_keys = 0;
        for (int k = 0; k < nq; k++) n_keys = b[k]->n > n_keys ? b[k]->n : n_keys;
        const char *const *v = i == 0 && next ? next + 2 : NULL;
        switch (nq) {
        case 1: tile_values(b, 1, vp, n_keys, head_dim, v); break;
        case 2: tile_values(b, 2, vp, n_keys, head_dim, v); break;
        case 3: tile_values(b, 3, vp, n_keys, head_dim, v); break;
        case 4: tile_values(b, 4, vp, n_keys, head_dim, v); break;
        case 5: tile_values(b, 5, vp, n_keys, head_dim, v); break;
        default: tile_values(b, 6, vp, n_keys, head_dim, v); break;
        }
    }
}

/* Where one sequence's kv head lives in a layer's bf16 cache. */
typedef struct kv_head_at {
    const void *k_cache, *v_cache;
    const int32_t *block_table;
    int block_size, n_kv_heads, kv_head, head_dim;
} kv_head_at;

/* The first element (as u32 pairs) of position p's region, and p's offset in it. */
static inline size_t region_at(const kv_head_at *at, int p, int *offset) {
    *offset = p % at->block_size;
    return (folo_cpu_cache_row(at->block_table, p, at->block_size, at->n_kv_heads, at->kv_head) -
            (size_t)*offset) * at->head_dim / 2;
}

/* 16 keys from position p (p % 16 == 0): column pair c at + c * block_size. */
static inline const uint32_t *keys_at(const kv_head_at *at, int p) {
    int o;
    size_t region = region_at(at, p, &o);
    return (const uint32_t *)at->k_cache + region + o;
}

/* The values of positions p and p + 1 (p even), column d at + d. */
static inline const uint32_t *values_at(const kv_head_at *at, int p) {
    int o;
    size_t region = region_at(at, p, &o);
    return (const uint32_t *)at->v_cache + region + (size_t)(o / 2) * at->head_dim;
}

/* One tile (keys p0 and on, up to max_ctx) of one kv head for its
 * n_queries queries: their scores, softmax and values, the next tile's
 * regions prefetched. */
static void attend_tile(const kv_head_at *at, att_state *st, const int *n_ctx, int n_queries,
                        int p0, int max_ctx, int pairs, float scale) {
    int n_tile = max_ctx - p0 < ATT_KEYS ? max_ctx - p0 : ATT_KEYS;
    /* a half past the context reads the first again: its lanes are masked */
    const uint32_t *kh[2] = {keys_at(at, p0), keys_at(at, n_tile > 16 ? p0 + 16 : p0)};
    const uint32_t *vp[ATT_KEYS / 2]; /* [(n_tile + 1) / 2] */
    for (int m = 0; m < (n_tile + 1) / 2; m++)
        vp[m] = m % 8 == 0 ? values_at(at, p0 + 2 * m) : vp[m - 1] + at->head_dim;
    /* the next tile's regions, scattered over the pool, into L2 as the
     * scores and values are summed (tile_scores, tile_values): keys then
     * values; a half past the context repeats the first, and the last tile
     * has none */
    int p1 = p0 + ATT_KEYS, p2 = p1 + 16 < max_ctx ? p1 + 16 : p1;
    const char *next[4] = {NULL}, *const *prefetch = p1 < max_ctx ? next : NULL;
    if (prefetch) {
        next[0] = (const char *)keys_at(at, p1), next[1] = (const char *)keys_at(at, p2);
        next[2] = (const char *)values_at(at, p1), next[3] = (const char *)values_at(at, p2);
    }
    att_state *active[FOLO_CPU_ATTN_QUERIES];
    int n_active = 0;
    for (int i = 0; i < n_queries; i++) {
        int n = n_ctx[i] - p0 < n_tile ? n_ctx[i] - p0 : n_tile;
        if (n <= 0) continue;
        st[i].n = n;
        active[n_active++] = &st[i];
    }
    tile_queries(active, n_active, kh, at->block_size, pairs, scale, vp, at->head_dim, prefetch);
}

/* kernels.h's attention_group on a bf16 cache (queries holding bf16
 * values); an f32 cache goes to AVX-512's. The tiles are the outer loop and
 * the kv heads the inner one: a block holds its kv heads' regions one after
 * the other (kernels.h), so a tile of all a sequence's heads reads them in
 * the cache's order rather than one head's regions n_kv_heads apart
 * (docs/performance.md, "Decode attention over all of a sequence's kv
 * heads", for what that order bought and what it did not). */
static void attention_group_avx512bf16(float *const *out, const float *const *q, const int *n_ctx,
                                       int n_queries, const void *k_cache, const void *v_cache,
                                       folo_dtype kv_dtype, const int32_t *block_table,
                                       int block_size, int n_kv_heads, const int *kv_head,
                                       int head_dim, float scale) {
    if (kv_dtype != FOLO_DTYPE_BF16) {
        folo_cpu_kernels_avx512.attention_group(out, q, n_ctx, n_queries, k_cache, v_cache,
                                                kv_dtype, block_table, block_size, n_kv_heads,
                                                kv_head, head_dim, scale);
        return;
    }
    int Dp = bf16_padded(head_dim), pairs = head_dim / 2; /* head_dim is even */
    _Alignas(64) uint16_t qb[FOLO_CPU_ATTN_QUERIES * FOLO_CPU_MAX_HEAD_DIM]; /* [n_queries, Dp] */
    att_state state[FOLO_CPU_ATTN_QUERIES];
    /* runs of one kv head: queries run[r] to run[r + 1] - 1, context run_ctx[r] */
    int run[FOLO_CPU_ATTN_QUERIES + 1], run_ctx[FOLO_CPU_ATTN_QUERIES], n_runs = 0, max_ctx = 0;
    for (int i = 0; i < n_queries; i++) {
        bf16_round_tokens(qb + (size_t)i * Dp, q[i], 1, head_dim); /* exact: q is bf16 */
        state[i] = (att_state){.q = (const uint32_t *)(qb + (size_t)i * Dp), .out = out[i],
                               .max = -INFINITY};
        memset(out[i], 0, (size_t)head_dim * sizeof(float));
        if (i == 0 || kv_head[i] != kv_head[i - 1]) run[n_runs] = i, run_ctx[n_runs++] = 0;
        if (n_ctx[i] > run_ctx[n_runs - 1]) run_ctx[n_runs - 1] = n_ctx[i];
        if (n_ctx[i] > max_ctx) max_ctx = n_ctx[i];
    }
    run[n_runs] = n_queries;
    for (int p0 = 0; p0 < max_ctx; p0 += ATT_KEYS) {
        for (int r = 0; r < n_runs; r++) {
            if (p0 >= run_ctx[r]) continue;
            const kv_head_at at = {k_cache,    v_cache,         block_table, block_size,
                                   n_kv_heads, kv_head[run[r]], head_dim};
            attend_tile(&at, state + run[r], n_ctx + run[r], run[r + 1] - run[r], p0,
                        run_ctx[r], pairs, scale);
        }
    }
    for (int i = 0; i < n_queries; i++) {
        __m512 inv = _mm512_set1_ps(1.0f / state[i].denom);
        for (int d = 0; d < head_dim; d += 16) {
            __mmask16 m = lanes_below(head_dim - d);
            _mm512_mask_storeu_ps(out[i] + d, m,
                                  _mm512_mul_ps(_mm512_maskz_loadu_ps(m, out[i] + d), inv));
        }
    }
}

const folo_cpu_kernels folo_cpu_kernels_avx512bf16 = {
    .name = "avx512bf16",
    .matmul = matmul_avx512bf16,
    .matmul_bf16 = matmul_bf16_avx512bf16,
    .matmul_bf16_panels = matmul_bf16_panels_avx512bf16,
    .matmul_scratch_floats = matmul_scratch_avx512bf16,
    .silu_mul = silu_mul_avx512bf16,
    .rmsnorm = rmsnorm_avx512bf16,
    .attention_group = attention_group_avx512bf16,
};

#endif
