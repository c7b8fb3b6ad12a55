/* AVX-512 (F, BW, VL with FMA and F16C) twins of the matmul and attention
 * kernels of kernels.c; compiled with those flags alone (CMakeLists.txt) and
 * reached only through folo_cpu_kernels_for, which checks the CPU first.
 *
 * Matmul. Every dot product x_t · w_r has one 16-lane register of partial
 * sums: lane l takes the elements k with k % 16 == l, in order, by fused
 * multiply-add (the last, partial vector zero-padded), and the register is
 * reduced by reduce4's fixed tree. No other order exists in this file, so a
 * (token, row) result is the same whichever tile computes it:
 * batch-invariant, as kernels.h promises.
 *
 * Prefill (more than DIRECT_MAX_TOKENS tokens, or f32/f16 weights): tokens
 * are taken in blocks (TOKEN_BLOCK_BYTES of activations, at least
 * MIN_BLOCK_TOKENS), packed tile by tile so a tile reads one stream; within
 * a block each panel of TILE_ROWS weight rows is widened to f32 and packed
 * once into the scratch and then meets every tile of the block: a register
 * tile of TILE_TOKENS tokens x TILE_ROWS rows, 24 accumulators fed by 4 + 6
 * loads per 24 FMAs. Decode and small batches (at most DIRECT_MAX_TOKENS
 * tokens on bf16 weights) skip the packing and widen the weights in
 * registers (tile_bf16), tile after tile of TILE_TOKENS tokens over the same
 * rows: the same FMAs in the same order, so the same bits, and the weight
 * stream is not slowed by panel stores. A single token takes one row at a
 * time (one stream of weights; its register reduced by the same tree).
 *
 * Attention is kernels.c's online softmax: a tile's scores four keys at a
 * time (independent FMA chains), then the output row updated by the whole
 * tile with its columns held in registers; the queries of a group take
 * each key tile in turn, so it is read from memory once for all of them. */
#include "backend/cpu/kernels.h"

#if defined(__x86_64__)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__FMA__) || !defined(__F16C__)
#error "kernels_avx512.c needs -mavx512f -mavx512bw -mavx512vl -mfma -mf16c"
#endif

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/math_avx512.h"
#include "backend/cpu/reduce_avx512.h"

#define V 16 /* f32 lanes of a register */
#define TILE_ROWS FOLO_CPU_MATMUL_ROWS
#define TILE_TOKENS 6
/* Activation bytes of a token block, packed: well inside a 1-2 MiB L2,
 * leaving room for the weight panel and the outputs. */
#define TOKEN_BLOCK_BYTES (384 * 1024)
/* Fewest tokens a block holds even when their activations overflow the
 * bytes above (K = 3072): fewer would widen and re-read each weight panel
 * too often (measured: 96 tokens run the down projection ~10% faster than
 * 30). */
#define MIN_BLOCK_TOKENS (16 * TILE_TOKENS)

/* How far ahead of its loads a decode tile prefetches each weight row: the
 * hardware prefetcher alone keeps too few lines in flight for 4 interleaved
 * rows (measured 19-20 GB/s without, 22-23 with, against 27 for a plain
 * read loop). A prefetch past the matrix's end is harmless. */
#define PREFETCH_BYTES 4096
/* Most tokens a bf16 matmul widens its weights in registers for (tile_bf16,
 * one register tile of TILE_TOKENS tokens after another over the same 4
 * rows, which stay in L1) instead of packing a panel: there the panel's
 * stores and reloads cost more than widening again per tile. Measured on
 * one core: [3072, 1024] at 7-12 tokens 95-118 GFLOP/s against 65-88 with
 * the panel, [1024, 3072] 90-113 against 40-75; the 0.6B-shaped model's
 * batched decode, 1 thread, 0-4 % faster at 7-12 sequences, even at 16 and
 * 6 % slower at 24, where the panel is read by four tiles. */
#define DIRECT_MAX_TOKENS (2 * TILE_TOKENS)

_Static_assert(TILE_ROWS == 4, "a tile reduces its rows with reduce4");

static inline __mmask16 tail_mask(int n) { return (__mmask16)((1u << n) - 1u); }

/* ---- weight widening ----------------------------------------------------- */

/* 16 weights of a row from column k on (fewer at the tail, the rest +0),
 * widened to f32 exactly. */
static inline __m512 load_weights(const void *row, folo_dtype dtype, int k, int K) {
    __mmask16 m = K - k >= V ? (__mmask16)0xffff : tail_mask(K - k);
    if (dtype == FOLO_DTYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + k);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + k);
    return dtype == FOLO_DTYPE_BF16 ? bf16x16_to_f32(h) : _mm512_cvtph_ps(h);
}

/* panel [K16, TILE_ROWS, 16] = the rows (TILE_ROWS pointers [K]) in f32,
 * 16 columns of each row in turn, the tail padded with +0: one stream for
 * the tile to read. K16 = ceil(K / 16). */
static void pack_panel(float *panel, const void *const rows[TILE_ROWS], folo_dtype dtype, int K) {
    for (int k = 0; k < K; k += V, panel += TILE_ROWS * V)
        for (int r = 0; r < TILE_ROWS; r++)
            _mm512_storeu_ps(panel + r * V, load_weights(rows[r], dtype, k, K));
}

/* xp [K16, n_tokens, 16] = x [n_tokens, K] 16 columns of each token in
 * turn, the tail padded with +0. */
static void pack_tokens(float *xp, const float *x, int n_tokens, int K) {
    for (int k = 0; k < K; k += V) {
        __mmask16 m = K - k >= V ? (__mmask16)0xffff : tail_mask(K - k);
        for (int t = 0; t < n_tokens; t++, xp += V)
            _mm512_storeu_ps(xp, _mm512_maskz_loadu_ps(m, x + (size_t)t * K + k));
    }
}

/* ---- matmul -------------------------------------------------------------- */


/* y[t, r] = x_t · w_r for t < n_tokens (a constant once inlined), r < n_rows,
 * from packed tokens xp [K16, n_tokens, 16] and a packed panel
 * [K16, TILE_ROWS, 16]; y: row stride ldy, y[t, 0] is the first row's
 * column. The padding adds +0 · +0, as the masked tail loads of tile_bf16. */
static inline __attribute__((always_inline)) void
tile(float *y, size_t ldy, const float *xp, const float *panel, int K16, int n_rows,
     int n_tokens) {
    __m512 acc[TILE_TOKENS][TILE_ROWS];
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++)
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) acc[t][r] = _mm512_setzero_ps();
    for (int s = 0; s < K16; s++, xp += n_tokens * V, panel += TILE_ROWS * V) {
        __m512 wv[TILE_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) wv[r] = _mm512_loadu_ps(panel + r * V);
#pragma GCC unroll 8
        for (int t = 0; t < n_tokens; t++) {
            __m512 xv = _mm512_loadu_ps(xp + t * V);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++) acc[t][r] = _mm512_fmadd_ps(xv, wv[r], acc[t][r]);
        }
    }
    __mmask8 row_mask = (__mmask8)((1u << n_rows) - 1u);
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++)
        _mm_mask_storeu_ps(y + (size_t)t * ldy, row_mask,
                           reduce4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]));
}

/* tile() for bf16 weight rows widened in registers: the same FMAs in the
 * same order, so the same bits, without the round trip through the panel.
 * For calls of at most DIRECT_MAX_TOKENS tokens (decode, small batches),
 * where a panel would be read a few times and its stores would only slow
 * the weight stream. */
static inline __attribute__((always_inline)) void
tile_bf16(float *y, size_t ldy, const float *x, int K, const uint16_t *const *w, int n_rows,
          int n_tokens, int rows) {
    __m512 acc[TILE_TOKENS][TILE_ROWS];
#pragma GCC unroll 8
    for (int t = 0; t < n_tokens; t++)
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) acc[t][r] = _mm512_setzero_ps();
    int k = 0;
    for (; k + V <= K; k += V) {
        __m512 wv[TILE_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            _mm_prefetch((const char *)(w[r] + k) + PREFETCH_BYTES, _MM_HINT_T0);
            wv[r] = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(w[r] + k)));
        }
#pragma GCC unroll 8
        for (int t = 0; t < n_tokens; t++) {
            __m512 xv = _mm512_loadu_ps(x + (size_t)t * K + k);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) acc[t][r] = _mm512_fmadd_ps(xv, wv[r], acc[t][r]);
        }
    }
    if (k < K) {
        __mmask16 m = tail_mask(K - k);
        __m512 wv[TILE_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
            wv[r] = bf16x16_to_f32(_mm256_maskz_loadu_epi16(m, w[r] + k));
#pragma GCC unroll 8
        for (int t = 0; t < n_tokens; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)t * K + k);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) acc[t][r] = _mm512_fmadd_ps(xv, wv[r], acc[t][r]);
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

static void tile_bf16_n(float *y, size_t ldy, const float *x, int K,
                        const uint16_t *const w[TILE_ROWS], int n_rows, int n_tokens) {
    switch (n_tokens) {
    case 1: tile_bf16(y, ldy, x, K, w, n_rows, 1, TILE_ROWS); break;
    case 2: tile_bf16(y, ldy, x, K, w, n_rows, 2, TILE_ROWS); break;
    case 3: tile_bf16(y, ldy, x, K, w, n_rows, 3, TILE_ROWS); break;
    case 4: tile_bf16(y, ldy, x, K, w, n_rows, 4, TILE_ROWS); break;
    case 5: tile_bf16(y, ldy, x, K, w, n_rows, 5, TILE_ROWS); break;
    default: tile_bf16(y, ldy, x, K, w, n_rows, TILE_TOKENS, TILE_ROWS); break;
    }
}

/* One tile of 1..TILE_TOKENS tokens, each count its own unrolled copy. */
static void tile_n(float *y, size_t ldy, const float *xp, const float *panel, int K16, int n_rows,
                   int n_tokens) {
    switch (n_tokens) {
    case 1: tile(y, ldy, xp, panel, K16, n_rows, 1); break;
    case 2: tile(y, ldy, xp, panel, K16, n_rows, 2); break;
    case 3: tile(y, ldy, xp, panel, K16, n_rows, 3); break;
    case 4: tile(y, ldy, xp, panel, K16, n_rows, 4); break;
    case 5: tile(y, ldy, xp, panel, K16, n_rows, 5); break;
    default: tile(y, ldy, xp, panel, K16, n_rows, TILE_TOKENS); break;
    }
}

/* Tokens of a block for inner size K (a multiple of TILE_TOKENS). */
static int block_tokens(int K) {
    int block = TOKEN_BLOCK_BYTES / (K * (int)sizeof(float)) / TILE_TOKENS * TILE_TOKENS;
    return block < MIN_BLOCK_TOKENS ? MIN_BLOCK_TOKENS : block;
}

static size_t matmul_scratch_avx512(int K) {
    size_t k_padded = (size_t)(K + V - 1) / V * V;
    return (size_t)(TILE_ROWS + block_tokens(K)) * k_padded;
}

static void matmul_avx512(float *y, size_t ldy, const float *x, int n_tokens, int K, const void *w,
                          folo_dtype w_dtype, int row_begin, int row_end, float *scratch) {
    size_t row_bytes = (size_t)K * folo_dtype_size(w_dtype);
    if (w_dtype == FOLO_DTYPE_BF16 && n_tokens == 1) {
        /* one row at a time: one stream of weights, which the prefetchers
         * follow better than four (Zen4: 28-30 GB/s against 22) */
        for (int r = row_begin; r < row_end; r++) {
            const uint16_t *row = (const uint16_t *)w + (size_t)r * K;
            tile_bf16(y + r, ldy, x, K, &row, 1, 1, 1);
        }
        return;
    }
    if (w_dtype == FOLO_DTYPE_BF16 && n_tokens <= DIRECT_MAX_TOKENS) {
        for (int r0 = row_begin; r0 < row_end; r0 += TILE_ROWS) {
            int n_rows = row_end - r0 < TILE_ROWS ? row_end - r0 : TILE_ROWS;
            const uint16_t *rows[TILE_ROWS];
            for (int r = 0; r < TILE_ROWS; r++)
                rows[r] = (const uint16_t *)w + (size_t)(r0 + (r < n_rows ? r : n_rows - 1)) * K;
            for (int t = 0; t < n_tokens; t += TILE_TOKENS) {
                int nt = n_tokens - t < TILE_TOKENS ? n_tokens - t : TILE_TOKENS;
                tile_bf16_n(y + (size_t)t * ldy + r0, ldy, x + (size_t)t * K, K, rows, n_rows,
                            nt);
            }
        }
        return;
    }
    int K16 = (K + V - 1) / V, block = block_tokens(K);
    float *panel = scratch;                            /* [K16, TILE_ROWS, 16] */
    float *xp = scratch + (size_t)TILE_ROWS * K16 * V; /* [block / TILE_TOKENS][K16, tile, 16] */
    for (int t0 = 0; t0 < n_tokens; t0 += block) {
        int t_end = n_tokens - t0 < block ? n_tokens : t0 + block;
        for (int t = t0; t < t_end; t += TILE_TOKENS) {
            int nt = t_end - t < TILE_TOKENS ? t_end - t : TILE_TOKENS;
            pack_tokens(xp + (size_t)(t - t0) * K16 * V, x + (size_t)t * K, nt, K);
        }
        for (int r0 = row_begin; r0 < row_end; r0 += TILE_ROWS) {
            int n_rows = row_end - r0 < TILE_ROWS ? row_end - r0 : TILE_ROWS;
            const void *rows[TILE_ROWS];
            for (int r = 0; r < TILE_ROWS; r++)
                rows[r] =
                    (const char *)w + (size_t)(r0 + (r < n_rows ? r : n_rows - 1)) * row_bytes;
            pack_panel(panel, rows, w_dtype, K);
            /* The next panel's rows come from memory while this one's tiles
             * compute, a slice per tile, into L2: the hardware prefetcher
             * does not run that far ahead of a short read, and a burst of
             * prefetches into L1 would stall on its fill buffers (Zen4,
             * 16 sequences' decode steps: 209 -> 167-177 ms with L2). */
            int n_next = row_end - r0 - TILE_ROWS;
            n_next = n_next < 0 ? 0 : n_next < TILE_ROWS ? n_next : TILE_ROWS;
            const char *next =
                (const char *)w + (n_next > 0 ? (size_t)(r0 + TILE_ROWS) * row_bytes : 0);
            size_t next_bytes = (size_t)n_next * row_bytes, prefetched = 0;
            size_t slice = (next_bytes * TILE_TOKENS / (size_t)(t_end - t0) + 64) & ~(size_t)63;
            for (int t = t0; t < t_end; t += TILE_TOKENS) {
                int nt = t_end - t < TILE_TOKENS ? t_end - t : TILE_TOKENS;
                for (size_t end = prefetched + slice; prefetched < end && prefetched < next_bytes;
                     prefetched += 64)
                    _mm_prefetch(next + prefetched, _MM_HINT_T1);
                tile_n(y + (size_t)t * ldy + r0, ldy, xp + (size_t)(t - t0) * K16 * V, panel, K16,
                       n_rows, nt);
            }
        }
    }
}

/* ---- exp and SiLU ----------------------------------------------------------- */

static void silu_mul_avx512(float *gate, const float *up, size_t n) {
    __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += V) {
        __mmask16 m = n - i >= V ? (__mmask16)0xffff : tail_mask((int)(n - i));
        __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
        __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up + i)));
    }
}

/* ---- RMSNorm --------------------------------------------------------------- */

/* The sum of squares in double, as folo_cpu_rmsnorm (each square exact),
 * in two registers of 8 lanes; then the same f32 scale and products. */
static void rmsnorm_avx512(float *out, const float *x, const float *weight, int n, float eps) {
    __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
    for (int i = 0; i < n; i += V) {
        __m512 v = _mm512_maskz_loadu_ps(n - i >= V ? (__mmask16)0xffff : tail_mask(n - i), x + i);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi = _mm512_cvtps_pd(
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        acc0 = _mm512_fmadd_pd(lo, lo, acc0);
        acc1 = _mm512_fmadd_pd(hi, hi, acc1);
    }
    double sum_sq = _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
    __m512 inv_rms = _mm512_set1_ps(1.0f / sqrtf((float)(sum_sq / n) + eps));
    for (int i = 0; i < n; i += V) {
        __mmask16 m = n - i >= V ? (__mmask16)0xffff : tail_mask(n - i);
        __m512 xv = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv_rms);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, weight + i), xv));
    }
}

/* ---- attention ----------------------------------------------------------- */

/* Output columns one pass of the value update keeps in registers. */
#define OUT_REGS 8

/* q · k[j] for 4 keys: one 16-lane register of partial sums per key (4
 * independent FMA chains), reduced together by reduce4. */
static inline __attribute__((always_inline)) __m128 dot4(const float *q, const float *const k[4],
                                                         int n) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps()};
    for (int d = 0; d < n; d += V) {
        __mmask16 m = n - d >= V ? (__mmask16)0xffff : tail_mask(n - d);
        __m512 qv = _mm512_maskz_loadu_ps(m, q + d);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            acc[j] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k[j] + d), acc[j]);
    }
    return reduce4(acc[0], acc[1], acc[2], acc[3]);
}

/* out[d] = out[d] * rescale + Σ_j p[j] · v[j][d] for d < n, over n_keys
 * keys, with OUT_REGS registers of out held across all keys. */
static inline __attribute__((always_inline)) void
update_out(float *out, float rescale, const float *p, const float *const *v, int n_keys, int n) {
    __m512 r = _mm512_set1_ps(rescale);
    for (int d0 = 0; d0 < n; d0 += OUT_REGS * V) {
        __mmask16 m[OUT_REGS];
        __m512 acc[OUT_REGS];
#pragma GCC unroll 8
        for (int i = 0; i < OUT_REGS; i++) {
            int left = n - d0 - i * V;
            m[i] = left >= V ? (__mmask16)0xffff : left > 0 ? tail_mask(left) : 0;
            acc[i] = _mm512_mul_ps(_mm512_maskz_loadu_ps(m[i], out + d0 + i * V), r);
        }
        for (int j = 0; j < n_keys; j++) {
            __m512 pv = _mm512_set1_ps(p[j]);
#pragma GCC unroll 8
            for (int i = 0; i < OUT_REGS; i++)
                acc[i] =
                    _mm512_fmadd_ps(pv, _mm512_maskz_loadu_ps(m[i], v[j] + d0 + i * V), acc[i]);
        }
#pragma GCC unroll 8
        for (int i = 0; i < OUT_REGS; i++) _mm512_mask_storeu_ps(out + d0 + i * V, m[i], acc[i]);
    }
}

/* One tile of n keys for one query: scores, the online-softmax rescaling of
 * its running max, denominator and output row, and the output update. */
static inline __attribute__((always_inline)) void
attend_tile(float *out, const float *q, const float *const *k_row, const float *const *v_row, int n,
            int head_dim, float scale, float *running_max, float *denom) {
    float score[FOLO_CPU_ATTN_TILE]; /* [n] scores, then e^(score - new_max) */
    for (int j0 = 0; j0 < n; j0 += 4) {
        /* A short last group repeats its last key and keeps what it needs. */
        const float *k4[4];
        for (int j = 0; j < 4; j++) k4[j] = k_row[j0 + j < n ? j0 + j : n - 1];
        __mmask8 keep = (__mmask8)(n - j0 >= 4 ? 0xf : (1u << (n - j0)) - 1u);
        _mm_mask_storeu_ps(score + j0, keep, dot4(q, k4, head_dim));
    }
    float tile_max = -INFINITY;
    for (int j = 0; j < n; j++) {
        score[j] *= scale;
        if (score[j] > tile_max) tile_max = score[j];
    }
    float new_max = tile_max > *running_max ? tile_max : *running_max;
    float rescale = expf(*running_max - new_max); /* 0 on the first tile */
    *denom *= rescale;
    __m512 max_v = _mm512_set1_ps(new_max);
    for (int j = 0; j < n; j += V) {
        __mmask16 m = n - j >= V ? (__mmask16)0xffff : tail_mask(n - j);
        _mm512_mask_storeu_ps(score + j, m,
                              exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, score + j), max_v)));
    }
    for (int j = 0; j < n; j++) *denom += score[j];
    update_out(out, rescale, score, v_row, n, head_dim);
    *running_max = new_max;
}

/* The queries of one kv head. The key tile is the outer loop and the
 * queries the inner one, so a tile's keys and values come from memory once
 * and from L1 for the other queries; each query still sees exactly its own
 * tiles in order, so its result is the one it gets alone. */
static void attention_head_avx512(float *const *out, const float *const *q, const int *n_ctx,
                                  int n_queries, const void *k_cache, const void *v_cache,
                                  const int32_t *block_table, int block_size, int n_kv_heads,
                                  int kv_head, int head_dim, float scale) {
    float running_max[FOLO_CPU_ATTN_QUERIES]; /* [n_queries] max score seen so far */
    float denom[FOLO_CPU_ATTN_QUERIES];       /* [n_queries] Σ e^(score - running_max) */
    int max_ctx = 0;
    for (int i = 0; i < n_queries; i++) {
        running_max[i] = -INFINITY;
        denom[i] = 0.0f;
        memset(out[i], 0, (size_t)head_dim * sizeof(float)); /* Σ e^(score - running_max) · v */
        if (n_ctx[i] > max_ctx) max_ctx = n_ctx[i];
    }
    for (int p0 = 0; p0 < max_ctx; p0 += FOLO_CPU_ATTN_TILE) {
        int n_tile = max_ctx - p0 < FOLO_CPU_ATTN_TILE ? max_ctx - p0 : FOLO_CPU_ATTN_TILE;
        const float *k_row[FOLO_CPU_ATTN_TILE]; /* [n_tile] */
        const float *v_row[FOLO_CPU_ATTN_TILE]; /* [n_tile] */
        for (int j = 0; j < n_tile; j++) {
            size_t offset = folo_cpu_cache_row(block_table, p0 + j, block_size, n_kv_heads,
                                               kv_head) * head_dim;
            k_row[j] = (const float *)k_cache + offset;
            v_row[j] = (const float *)v_cache + offset;
        }
        /* The next tile's keys and values are scattered over blocks of
         * the pool, which the hardware prefetcher does not follow: ask
         * for them (into L2) while this tile computes. */
        int next_end = max_ctx - p0 > 2 * FOLO_CPU_ATTN_TILE ? p0 + 2 * FOLO_CPU_ATTN_TILE
                                                             : max_ctx;
        for (int pos = p0 + FOLO_CPU_ATTN_TILE; pos < next_end; pos++) {
            size_t offset = folo_cpu_cache_row(block_table, pos, block_size, n_kv_heads,
                                               kv_head) * head_dim;
            for (int d = 0; d < head_dim; d += V) {
                _mm_prefetch((const char *)((const float *)k_cache + offset + d), _MM_HINT_T1);
                _mm_prefetch((const char *)((const float *)v_cache + offset + d), _MM_HINT_T1);
            }
        }
        for (int i = 0; i < n_queries; i++) {
            int n = n_ctx[i] - p0 < n_tile ? n_ctx[i] - p0 : n_tile;
            if (n > 0)
                attend_tile(out[i], q[i], k_row, v_row, n, head_dim, scale, &running_max[i],
                            &denom[i]);
        }
    }
    for (int i = 0; i < n_queries; i++) {
        __m512 inv = _mm512_set1_ps(1.0f / denom[i]);
        for (int d = 0; d < head_dim; d += V) {
            __mmask16 m = head_dim - d >= V ? (__mmask16)0xffff : tail_mask(head_dim - d);
            _mm512_mask_storeu_ps(out[i] + d, m,
                                  _mm512_mul_ps(_mm512_maskz_loadu_ps(m, out[i] + d), inv));
        }
    }
}

/* kernels.h's attention_group, one kv head's queries at a time. An f32
 * cache only: a bf16 one (`--dtype bfloat16`) goes to
 * kernels_avx512bf16.c's attention, on CPUs that have it. */
static void attention_group_avx512(float *const *out, const float *const *q, const int *n_ctx,
                                   int n_queries, const void *k_cache, const void *v_cache,
                                   folo_dtype kv_dtype, const int32_t *block_table,
                                   int block_size, int n_kv_heads, const int *kv_head,
                                   int head_dim, float scale) {
    (void)kv_dtype; /* FOLO_DTYPE_F32: the backend gives bf16 caches only to bf16 tables */
    for (int i = 0, end; i < n_queries; i = end) {
        for (end = i + 1; end < n_queries && kv_head[end] == kv_head[i]; end++) continue;
        attention_head_avx512(out + i, q + i, n_ctx + i, end - i, k_cache, v_cache, block_table,
                              block_size, n_kv_heads, kv_head[i], head_dim, scale);
    }
}

const folo_cpu_kernels folo_cpu_kernels_avx512 = {
    .name = "avx512",
    .matmul = matmul_avx512,
    .matmul_scratch_floats = matmul_scratch_avx512,
    .silu_mul = silu_mul_avx512,
    .rmsnorm = rmsnorm_avx512,
    .attention_group = attention_group_avx512,
};

#endif
