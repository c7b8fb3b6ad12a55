/* The CPU backend's kernels: the blocks of the Qwen3 forward pass (DESIGN §4)
 * in plain, portable C, all arithmetic in f32, plus the table through which
 * the backend reaches them or their SIMD twins.
 *
 * Each kernel is single-threaded and works on the range it is given; the
 * backend (cpu_backend.c) splits ranges across its thread pool. Activations
 * are f32, row-major and contiguous; weights are used as stored (f32, f16 or
 * bf16, [out, in] row-major) and converted a few rows at a time, never as a
 * whole-model f32 copy.
 *
 * Summation order is part of the contract: every dot product of the
 * portable matmul sums in FOLO_CPU_LANES interleaved lanes (lane l takes
 * elements k with k % FOLO_CPU_LANES == l, in order) and then adds the lanes
 * left to right, whatever the number of tokens in the call. The SIMD matmuls
 * keep the same kind of promise with their own lane count (one vector
 * register of partial sums per dot product, reduced in a fixed order). So a
 * token's result does not depend on which other tokens share its batch:
 * greedy outputs are the same however requests are batched or chunked. The
 * ISAs differ from one another in the last bits (FMA rounds once, lanes
 * differ), so one process uses one table throughout.
 *
 * Dispatch: folo_cpu_kernels_select() picks the widest table this CPU runs
 * (AMX with AMX-BF16 and AVX512-BF16, else AVX-512 with BW/VL and
 * AVX512-BF16, else AVX-512, else AVX2 with FMA and F16C, else portable),
 * or the one the environment variable
 * FOLO_CPU_ISA=portable|avx2|avx512|avx512bf16|amx names. The SIMD tables
 * live in kernels_avx2.c, kernels_avx512.c, kernels_avx512bf16.c and
 * kernels_amx.c, each compiled with its own instruction-set flags and
 * reached only through this table.
 *
 * The KV cache of one layer is [n_blocks, Hkv, block_size, D] f32: position
 * p of a sequence is in block block_table[p / block_size] at offset
 * p % block_size, and within a block each kv head's positions are
 * contiguous, so attention reads one head's context in runs of block_size
 * rows rather than one row per page (folo_cpu_cache_row). Under `--dtype
 * bfloat16` the cache is bf16, each (block, kv head) region of block_size x
 * D elements laid out as its attention reads them (folo_cpu_kv_store): keys
 * as column pairs across positions, values as position pairs across
 * columns, so that one register holds one column pair of 16 keys, or one
 * pair of positions over 16 columns; block_size must be a multiple of
 * FOLO_CPU_KV_BF16_BLOCK. Both products of attention take bf16
 * inputs like every matmul of that mode: the queries are rounded (by the
 * backend, as it writes the keys) and so are the softmax's probabilities
 * before they multiply the values (by the kernels; the denominator sums
 * them unrounded).
 *
 * tests/c/test_cpu_kernels.c checks every portable kernel against a naive
 * double-precision twin, tests/c/test_cpu_isa.c every SIMD kernel against
 * the portable one. */
#ifndef FOLO_BACKEND_CPU_KERNELS_H
#define FOLO_BACKEND_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

/* Interleaved partial sums per dot product (see above). */
#define FOLO_CPU_LANES 8
/* Weight rows a matmul converts and consumes together; threads split rows
 * in multiples of it. */
#define FOLO_CPU_MATMUL_ROWS 4
/* Keys scored together between two rescalings of the online softmax. */
#define FOLO_CPU_ATTN_TILE 32
/* Largest head_dim the attention kernels take (a bf16 row is widened into
 * a buffer of this many floats); the backend refuses larger. */
#define FOLO_CPU_MAX_HEAD_DIM 512

/* The row of position p of kv head kv_head in one layer's cache (times
 * head_dim: its first element). */
static inline size_t folo_cpu_cache_row(const int32_t *block_table, int p, int block_size,
                                        int n_kv_heads, int kv_head) {
    return ((size_t)block_table[p / block_size] * n_kv_heads + kv_head) * block_size +
           p % block_size;
}

/* Positions a bf16 cache's block size must be a multiple of: a register of
 * keys is 16 positions of one block. */
#define FOLO_CPU_KV_BF16_BLOCK 16

/* Writes k [D] and v [D] as cache row `row` (folo_cpu_cache_row) of
 * k_cache / v_cache: f32 rows as they are; bf16 rounded to nearest even
 * into the region layout above, element (o, d) of the region at
 * [d / 2][o][d % 2] for keys and [o / 2][d][o % 2] for values, o = row %
 * block_size. */
void folo_cpu_kv_store(void *k_cache, void *v_cache, folo_dtype kv_dtype, size_t row,
                       int block_size, int head_dim, const float *k, const float *v);

/* Cache row `row` of a key (value = 0) or value cache as f32 [head_dim]:
 * the row itself when f32, else gathered from the bf16 layout into buf. */
const float *folo_cpu_kv_load(float *buf, const void *cache, folo_dtype kv_dtype, size_t row,
                              int block_size, int head_dim, int value);

/* out[i] = weight[i] * (x[i] / sqrt(mean(x²) + eps)) for i < n. out may be x. */
void folo_cpu_rmsnorm(float *out, const float *x, const float *weight, int n, float eps);

/* y[t, r] = Σ_k x[t, k] · w[r, k] for t < n_tokens and rows r in
 * [row_begin, row_end) of the weight w [n_rows, K] (dtype w_dtype).
 * x: [n_tokens, K]; y: row stride ldy floats, column r holds weight row r.
 * rows_f32: scratch of folo_cpu_matmul_scratch_floats(K) floats (unused for
 * f32). The SIMD twins need more (folo_cpu_kernels.matmul_scratch_floats). */
void folo_cpu_matmul(float *y, size_t ldy, const float *x, int n_tokens, int K, const void *w,
                     folo_dtype w_dtype, int row_begin, int row_end, float *rows_f32);

size_t folo_cpu_matmul_scratch_floats(int K);

/* folo_cpu_matmul with each x[t, k] first rounded to bf16 (to nearest even):
 * the matmul of `--dtype bfloat16`, whose SIMD twin (AVX512-BF16's
 * `vdpbf16ps`) multiplies bf16 pairs. This portable version is the
 * reference the tests hold the twin to; the twin sums in its own order, so
 * the two agree to f32 rounding, not bit for bit. rows_f32: scratch of
 * folo_cpu_matmul_scratch_floats(K) floats. */
void folo_cpu_matmul_bf16(float *y, size_t ldy, const float *x, int n_tokens, int K,
                          const void *w, folo_dtype w_dtype, int row_begin, int row_end,
                          float *rows_f32);

/* Row panels: the layout the backend copies bf16 weights into for a table
 * with matmul_bf16_panels. Panel p holds rows FOLO_CPU_PANEL_ROWS·p and
 * on; for each pair of columns (2c, 2c + 1) in order, its rows' pairs in
 * one run of FOLO_CPU_PANEL_ROWS 32-bit words: [ceil(K / 2)][rows][2]
 * bf16. Rows past n_rows and the column past an odd K are +0. */
#define FOLO_CPU_PANEL_ROWS 32

/* Bytes the panels of an [n_rows, K] weight take. */
size_t folo_cpu_bf16_panels_bytes(int n_rows, int K);

/* panels (folo_cpu_bf16_panels_bytes) = w [n_rows, K] bf16 as row panels. */
void folo_cpu_bf16_pack_panels(void *panels, const uint16_t *w, int n_rows, int K);

/* inv_freq[i] = 1 / theta^(2i / D) for i < D/2, rounded as transformers
 * rounds it (f32 exponent, f32 power, f32 division). */
void folo_cpu_rope_inv_freq(float *inv_freq, int head_dim, double theta);

/* cos/sin [D/2] of angle = pos · inv_freq[i], the product taken in f32. */
void folo_cpu_rope_cos_sin(float *cos_out, float *sin_out, int pos, const float *inv_freq,
                           int half_dim);

/* Rotate-half RoPE in place on vec [n_heads, D]: for i < D/2 the pair
 * (i, i + D/2) turns by the angle whose cos/sin are given ([D/2]). */
void folo_cpu_rope(float *vec, int n_heads, int head_dim, const float *cos_half,
                   const float *sin_half);

/* gate[i] = silu(gate[i]) · up[i], silu(g) = g / (1 + e^-g). */
void folo_cpu_silu_mul(float *gate, const float *up, size_t n);

/* x[i] += y[i] (the residual connection). */
void folo_cpu_add(float *x, const float *y, size_t n);

/* One query head of one token: out [D] = softmax(q·Kᵀ · scale) · V over the
 * n_ctx positions 0..n_ctx-1 of its sequence, kv head kv_head, read from the
 * layer's caches k_cache/v_cache [n_blocks, n_kv_heads, block_size, D] of
 * kv_dtype through block_table (position p lives in block
 * block_table[p / block_size] at offset p % block_size). Online softmax in
 * f32: keys are scored a tile at a time and the running maximum,
 * denominator and output are rescaled per tile, so no score row longer
 * than FOLO_CPU_ATTN_TILE exists. kv_dtype FOLO_DTYPE_BF16 (--dtype
 * bfloat16): rows widened exactly, q [D] holding bf16 values (the SIMD
 * twin multiplies it as bf16), each tile's probabilities rounded to bf16
 * before they multiply the values. n_ctx >= 1. */
void folo_cpu_attention(float *out, const float *q, const void *k_cache, const void *v_cache,
                        folo_dtype kv_dtype, const int32_t *block_table, int n_ctx, int block_size,
                        int n_kv_heads, int kv_head, int head_dim, float scale);

/* Causal attention of n_queries queries of one sequence (query heads of
 * its tokens): query i reads kv head kv_head[i] and q[i] [D], sees
 * positions 0..n_ctx[i]-1 and writes out[i] [D], all as folo_cpu_attention
 * does. The queries of one kv head are consecutive. Each query's result is
 * the same, bit for bit, as in a call with that query alone, so grouping
 * keeps batch invariance; a SIMD twin may reorder its loops so that a tile
 * of keys and values is read once for all the queries of its kv head, and
 * the kv heads of a block one after the other, as they lie in the cache.
 * n_queries <= FOLO_CPU_ATTN_QUERIES. */
#define FOLO_CPU_ATTN_QUERIES 32
void folo_cpu_attention_group(float *const *out, const float *const *q, const int *n_ctx,
                              int n_queries, const void *k_cache, const void *v_cache,
                              folo_dtype kv_dtype, const int32_t *block_table, int block_size,
                              int n_kv_heads, const int *kv_head, int head_dim, float scale);

/* ---- dispatch ------------------------------------------------------------ */

typedef enum folo_cpu_isa {
    FOLO_CPU_ISA_PORTABLE = 0,
    FOLO_CPU_ISA_AVX2,
    FOLO_CPU_ISA_AVX512,
    FOLO_CPU_ISA_AVX512BF16,
    FOLO_CPU_ISA_AMX,
    FOLO_CPU_ISA_COUNT
} folo_cpu_isa;

/* The kernels whose speed matters, with the signatures of the portable ones
 * above; the rest (RoPE, residual) cost a percent or two of a forward and
 * are always portable. */
typedef struct folo_cpu_kernels {
    const char *name; /* "portable", "avx2", "avx512", "avx512bf16", "amx" */
    void (*matmul)(float *y, size_t ldy, const float *x, int n_tokens, int K, const void *w,
                   folo_dtype w_dtype, int row_begin, int row_end, float *rows_f32);
    /* folo_cpu_matmul_bf16's twin for bf16 weights (w_dtype
     * FOLO_DTYPE_BF16, the only ones the backend gives it), batch-invariant
     * as matmul is; NULL where the ISA has no bf16 dot product (the backend
     * then refuses bfloat16). */
    void (*matmul_bf16)(float *y, size_t ldy, const float *x, int n_tokens, int K,
                        const void *w, folo_dtype w_dtype, int row_begin, int row_end,
                        float *rows_f32);
    /* matmul_bf16 on weights packed as row panels (w: the panels, w_dtype
     * FOLO_DTYPE_BF16; row_begin a multiple of FOLO_CPU_PANEL_ROWS), in an
     * order of its own: its results agree with matmul_bf16's to f32
     * rounding, and are batch-invariant among themselves. NULL: the backend
     * keeps the rows as stored. */
    void (*matmul_bf16_panels)(float *y, size_t ldy, const float *x, int n_tokens, int K,
                               const void *w, folo_dtype w_dtype, int row_begin, int row_end,
                               float *rows_f32);
    /* Floats of the rows_f32 scratch one matmul, matmul_bf16 or
     * matmul_bf16_panels call needs for inner size K (each thread its own). */
    size_t (*matmul_scratch_floats)(int K);
    void (*silu_mul)(float *gate, const float *up, size_t n);
    /* folo_cpu_rmsnorm's twin: the same double sum of squares in its own
     * order, so it agrees to the last bit of the f32 scale all but never */
    void (*rmsnorm)(float *out, const float *x, const float *weight, int n, float eps);
    void (*attention_group)(float *const *out, const float *const *q, const int *n_ctx,
                            int n_queries, const void *k_cache, const void *v_cache,
                            folo_dtype kv_dtype, const int32_t *block_table, int block_size,
                            int n_kv_heads, const int *kv_head, int head_dim, float scale);
} folo_cpu_kernels;

/* The table of one ISA, or NULL when this build or this CPU lacks it (for
 * AMX also when the kernel refuses the process the tile state). */
const folo_cpu_kernels *folo_cpu_kernels_for(folo_cpu_isa isa);

/* The widest table this CPU runs, or the one $FOLO_CPU_ISA names (an
 * unknown name or one the CPU lacks is an error). Logs the choice at debug
 * level the first time. */
const folo_cpu_kernels *folo_cpu_kernels_select(folo_error *err);

/* The SIMD tables, defined only on x86-64 (kernels_avx2.c, kernels_avx512.c,
 * kernels_amx.c); reach them through folo_cpu_kernels_for, which checks the
 * CPU first. */
extern const folo_cpu_kernels folo_cpu_kernels_avx2;
extern const folo_cpu_kernels folo_cpu_kernels_avx512;
extern const folo_cpu_kernels folo_cpu_kernels_avx512bf16;
extern const folo_cpu_kernels folo_cpu_kernels_amx;

#endif
