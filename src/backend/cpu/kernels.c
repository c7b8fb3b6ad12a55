/* Plain C kernels of the CPU forward pass and the ISA dispatch; see
 * kernels.h for the contract.
 *
 * The inner loops are written over fixed-size lane arrays (FOLO_CPU_LANES
 * partial sums) so that a compiler vectorizes them without reassociating
 * floating-point sums, which it may not do on its own. */
#include "backend/cpu/kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/attention_online.h"
#include "core/log.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define LANES FOLO_CPU_LANES
/* Weight rows the portable matmul consumes together (of the
 * FOLO_CPU_MATMUL_ROWS its scratch holds): 2 tokens x 2 rows of lane
 * arrays is what a compiler keeps in registers without SIMD flags. */
#define ROWS 2

/* ---- lane helpers -------------------------------------------------------- */

static inline float lanes_sum(const float acc[LANES]) {
    float s = acc[0];
    for (int l = 1; l < LANES; l++) s += acc[l];
    return s;
}

/* Σ a[k]·b[k] in the lane order of kernels.h. */
static float dot_lanes(const float *a, const float *b, int n) {
    float acc[LANES] = {0};
    int k = 0;
    for (; k + LANES <= n; k += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += a[k + l] * b[k + l];
    for (int l = 0; k + l < n; l++) acc[l] += a[k + l] * b[k + l];
    return lanes_sum(acc);
}

/* y[k] = y[k] · scale + a · x[k], in fixed blocks a compiler vectorizes. */
static void scale_axpy_lanes(float *y, float scale, float a, const float *x, int n) {
    int k = 0;
    for (; k + LANES <= n; k += LANES)
        for (int l = 0; l < LANES; l++) y[k + l] = y[k + l] * scale + a * x[k + l];
    for (; k < n; k++) y[k] = y[k] * scale + a * x[k];
}

/* ---- rmsnorm ------------------------------------------------------------- */

void folo_cpu_rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    /* The mean of squares is one number per row; accumulating it in double
     * makes it at least as accurate as PyTorch's pairwise f32 sum. */
    double sum_sq = 0.0;
    for (int i = 0; i < n; i++) sum_sq += (double)x[i] * (double)x[i];
    float inv_rms = 1.0f / sqrtf((float)(sum_sq / n) + eps);
    for (int i = 0; i < n; i++) out[i] = weight[i] * (x[i] * inv_rms);
}

/* ---- matmul -------------------------------------------------------------- */

/* out[t][r] = x_t · rows[r] for two tokens. */
static void dot_2x_rows(float out[2][ROWS], const float *x0, const float *x1,
                        const float *const rows[ROWS], int K) {
    float acc[2][ROWS][LANES] = {{{0}}};
    int k = 0;
    for (; k + LANES <= K; k += LANES) {
        for (int r = 0; r < ROWS; r++) {
            const float *w = rows[r] + k;
            for (int l = 0; l < LANES; l++) {
                acc[0][r][l] += x0[k + l] * w[l];
                acc[1][r][l] += x1[k + l] * w[l];
            }
        }
    }
    for (int l = 0; k + l < K; l++) {
        for (int r = 0; r < ROWS; r++) {
            acc[0][r][l] += x0[k + l] * rows[r][k + l];
            acc[1][r][l] += x1[k + l] * rows[r][k + l];
        }
    }
    for (int r = 0; r < ROWS; r++) {
        out[0][r] = lanes_sum(acc[0][r]);
        out[1][r] = lanes_sum(acc[1][r]);
    }
}

/* out[r] = x0 · rows[r] for one token, in the same order as dot_2x_rows. */
static void dot_1x_rows(float out[ROWS], const float *x0, const float *const rows[ROWS], int K) {
    for (int r = 0; r < ROWS; r++) out[r] = dot_lanes(x0, rows[r], K);
}

/* Weight row [K] to f32. bf16 widens in fixed blocks, which compilers turn
 * into vector shifts; the weight stream of a decode step passes through here. */
static void row_to_f32(float *dst, const void *src, folo_dtype dtype, int K) {
    if (dtype != FOLO_DTYPE_BF16) {
        folo_to_f32(dtype, src, dst, (size_t)K);
        return;
    }
    const uint16_t *bf16 = src;
    int k = 0;
    for (; k + LANES <= K; k += LANES)
        for (int l = 0; l < LANES; l++) dst[k + l] = folo_bf16_to_f32(bf16[k + l]);
    for (; k < K; k++) dst[k] = folo_bf16_to_f32(bf16[k]);
}

void folo_cpu_matmul(float *y, size_t ldy, const float *x, int n_tokens, int K, const void *w,
                     folo_dtype w_dtype, int row_begin, int row_end, float *rows_f32) {
    size_t row_bytes = (size_t)K * folo_dtype_size(w_dtype);
    for (int r0 = row_begin; r0 < row_end; r0 += ROWS) {
        int n_rows = row_end - r0 < ROWS ? row_end - r0 : ROWS;
        /* Each weight row is converted once and then meets every token; a
         * short last group repeats its last row and stores only n_rows. */
        const float *rows[ROWS];
        for (int r = 0; r < ROWS; r++) {
            int src = r < n_rows ? r : n_rows - 1;
            const char *row = (const char *)w + (size_t)(r0 + src) * row_bytes;
            if (w_dtype == FOLO_DTYPE_F32) {
                rows[r] = (const float *)row;
            } else {
                if (r < n_rows) row_to_f32(rows_f32 + (size_t)r * K, row, w_dtype, K);
                rows[r] = rows_f32 + (size_t)src * K;
            }
        }
        int t = 0;
        for (; t + 2 <= n_tokens; t += 2) {
            float out[2][ROWS];
            dot_2x_rows(out, x + (size_t)t * K, x + (size_t)(t + 1) * K, rows, K);
            memcpy(y + (size_t)t * ldy + r0, out[0], (size_t)n_rows * sizeof(float));
            memcpy(y + (size_t)(t + 1) * ldy + r0, out[1], (size_t)n_rows * sizeof(float));
        }
        if (t < n_tokens) {
            float out[ROWS];
            dot_1x_rows(out, x + (size_t)t * K, rows, K);
            memcpy(y + (size_t)t * ldy + r0, out, (size_t)n_rows * sizeof(float));
        }
    }
}

/* ROWS converted weight rows, then one rounded token for the bf16 matmul. */
size_t folo_cpu_matmul_scratch_floats(int K) { return (size_t)(ROWS + 1) * K; }

void folo_cpu_matmul_bf16(float *y, size_t ldy, const float *x, int n_tokens, int K,
                          const void *w, folo_dtype w_dtype, int row_begin, int row_end,
                          float *rows_f32) {
    float *xr = rows_f32 + (size_t)ROWS * K; /* [K] one token, rounded */
    for (int t = 0; t < n_tokens; t++) {
        const float *xt = x + (size_t)t * K;
        for (int k = 0; k < K; k++) xr[k] = folo_bf16_round(xt[k]);
        folo_cpu_matmul(y + (size_t)t * ldy, ldy, xr, 1, K, w, w_dtype, row_begin, row_end,
                        rows_f32);
    }
}

size_t folo_cpu_bf16_panels_bytes(int n_rows, int K) {
    size_t panels = ((size_t)n_rows + FOLO_CPU_PANEL_ROWS - 1) / FOLO_CPU_PANEL_ROWS;
    return panels * (size_t)((K + 1) / 2) * FOLO_CPU_PANEL_ROWS * sizeof(uint32_t);
}

/* Pairs of columns panel packing moves at once: a cache line of each row
 * in, FOLO_CPU_PANEL_ROWS lines out, all within L1. */
#define PACK_PAIRS 16

void folo_cpu_bf16_pack_panels(void *panels, const uint16_t *w, int n_rows, int K) {
    int pairs = (K + 1) / 2;
    uint32_t *out = panels;
    for (int r0 = 0; r0 < n_rows; r0 += FOLO_CPU_PANEL_ROWS) {
        for (int c0 = 0; c0 < pairs; c0 += PACK_PAIRS) {
            int n_pairs = pairs - c0 < PACK_PAIRS ? pairs - c0 : PACK_PAIRS;
            bool whole = r0 + FOLO_CPU_PANEL_ROWS <= n_rows && n_pairs == PACK_PAIRS &&
                         2 * (c0 + n_pairs) <= K;
            for (int r = r0; r < r0 + FOLO_CPU_PANEL_ROWS; r++) {
                const uint16_t *row = w + (size_t)r * K;
                uint32_t *dst = out + (size_t)c0 * FOLO_CPU_PANEL_ROWS + (r - r0);
                if (whole) {
                    for (int c = 0; c < PACK_PAIRS; c++)
                        dst[(size_t)c * FOLO_CPU_PANEL_ROWS] =
                            row[2 * (c0 + c)] | (uint32_t)row[2 * (c0 + c) + 1] << 16;
                    continue;
                }
                for (int c = c0; c < c0 + n_pairs; c++, dst += FOLO_CPU_PANEL_ROWS) {
                    uint32_t lo = r < n_rows ? row[2 * c] : 0;
                    uint32_t hi = r < n_rows && 2 * c + 1 < K ? row[2 * c + 1] : 0;
                    *dst = lo | hi << 16;
                }
            }
        }
        out += (size_t)pairs * FOLO_CPU_PANEL_ROWS;
    }
}

/* ---- RoPE ---------------------------------------------------------------- */

void folo_cpu_rope_inv_freq(float *inv_freq, int head_dim, double theta) {
    for (int i = 0; i < head_dim / 2; i++) {
        float exponent = (float)(2 * i) / (float)head_dim;
        float power = (float)pow(theta, (double)exponent);
        inv_freq[i] = 1.0f / power;
    }
}

void folo_cpu_rope_cos_sin(float *cos_out, float *sin_out, int pos, const float *inv_freq,
                           int half_dim) {
    for (int i = 0; i < half_dim; i++) {
        float angle = (float)pos * inv_freq[i];
        cos_out[i] = cosf(angle);
        sin_out[i] = sinf(angle);
    }
}

void folo_cpu_rope(float *vec, int n_heads, int head_dim, const float *cos_half,
                   const float *sin_half) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cos_half[i] - b * sin_half[i];
            v[i + half] = b * cos_half[i] + a * sin_half[i];
        }
    }
}

/* ---- elementwise --------------------------------------------------------- */

void folo_cpu_silu_mul(float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void folo_cpu_add(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* ---- attention ----------------------------------------------------------- */

/* Index of element (o, d) in a bf16 region of the key or value cache. */
static size_t kv_bf16_index(int o, int d, int block_size, int head_dim, int value) {
    return value ? ((size_t)(o / 2) * head_dim + d) * 2 + o % 2
                 : ((size_t)(d / 2) * block_size + o) * 2 + d % 2;
}

void folo_cpu_kv_store(void *k_cache, void *v_cache, folo_dtype kv_dtype, size_t row,
                       int block_size, int head_dim, const float *k, const float *v) {
    if (kv_dtype == FOLO_DTYPE_F32) {
        memcpy((float *)k_cache + row * head_dim, k, (size_t)head_dim * sizeof(float));
        memcpy((float *)v_cache + row * head_dim, v, (size_t)head_dim * sizeof(float));
        return;
    }
    int o = (int)(row % (size_t)block_size);
    uint16_t *kr = (uint16_t *)k_cache + (row - (size_t)o) * head_dim;
    uint16_t *vr = (uint16_t *)v_cache + (row - (size_t)o) * head_dim;
    for (int d = 0; d < head_dim; d++) {
        kr[kv_bf16_index(o, d, block_size, head_dim, 0)] = folo_f32_to_bf16(k[d]);
        vr[kv_bf16_index(o, d, block_size, head_dim, 1)] = folo_f32_to_bf16(v[d]);
    }
}

const float *folo_cpu_kv_load(float *buf, const void *cache, folo_dtype kv_dtype, size_t row,
                              int block_size, int head_dim, int value) {
    if (kv_dtype == FOLO_DTYPE_F32) return (const float *)cache + row * head_dim;
    int o = (int)(row % (size_t)block_size);
    const uint16_t *region = (const uint16_t *)cache + (row - (size_t)o) * head_dim;
    for (int d = 0; d < head_dim; d++)
        buf[d] = folo_bf16_to_f32(region[kv_bf16_index(o, d, block_size, head_dim, value)]);
    return buf;
}

void folo_cpu_attention(float *out, const float *q, const void *k_cache, const void *v_cache,
                        folo_dtype kv_dtype, const int32_t *block_table, int n_ctx, int block_size,
                        int n_kv_heads, int kv_head, int head_dim, float scale) {
    folo_attention_online(out, q, k_cache, v_cache, kv_dtype, block_table, n_ctx, block_size,
                          n_kv_heads, kv_head, head_dim, scale, dot_lanes, scale_axpy_lanes);
}

void folo_cpu_attention_group(float *const *out, const float *const *q, const int *n_ctx,
                              int n_queries, const void *k_cache, const void *v_cache,
                              folo_dtype kv_dtype, const int32_t *block_table, int block_size,
                              int n_kv_heads, const int *kv_head, int head_dim, float scale) {
    for (int i = 0; i < n_queries; i++)
        folo_cpu_attention(out[i], q[i], k_cache, v_cache, kv_dtype, block_table, n_ctx[i],
                           block_size, n_kv_heads, kv_head[i], head_dim, scale);
}

/* ---- dispatch ------------------------------------------------------------ */

static const folo_cpu_kernels k_portable = {
    .name = "portable",
    .matmul = folo_cpu_matmul,
    .matmul_bf16 = folo_cpu_matmul_bf16,
    .matmul_scratch_floats = folo_cpu_matmul_scratch_floats,
    .silu_mul = folo_cpu_silu_mul,
    .rmsnorm = folo_cpu_rmsnorm,
    .attention_group = folo_cpu_attention_group,
};

static const char *const k_isa_names[FOLO_CPU_ISA_COUNT] = {"portable", "avx2", "avx512",
                                                            "avx512bf16", "amx"};

#if defined(__x86_64__) && defined(__GNUC__)
/* F16C (half-precision conversions), which clang's __builtin_cpu_supports
 * does not name: CPUID leaf 1, ECX. The OS saves the registers it uses
 * whenever AVX2 is reported usable, which is checked alongside. */
static int cpu_has_f16c(void) {
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}

/* AVX512-BF16: CPUID leaf 7 subleaf 1, EAX bit 5. */
static int cpu_has_avx512bf16(void) {
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 5)) != 0;
}

/* AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22), and Linux's
 * leave to use the tile data (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA,
 * kernels since 5.16; the grant holds for every thread of the process). */
static int amx_permitted(void) {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 24)) ||
        !(edx & (1u << 22)))
        return 0;
#if defined(__linux__)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                   18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0;
#endif
}
#endif

const folo_cpu_kernels *folo_cpu_kernels_for(folo_cpu_isa isa) {
    switch (isa) {
    case FOLO_CPU_ISA_PORTABLE:
        return &k_portable;
#if defined(__x86_64__) && defined(__GNUC__)
    case FOLO_CPU_ISA_AVX2:
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c())
            return &folo_cpu_kernels_avx2;
        return NULL;
    case FOLO_CPU_ISA_AVX512:
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma") &&
            cpu_has_f16c())
            return &folo_cpu_kernels_avx512;
        return NULL;
    case FOLO_CPU_ISA_AVX512BF16:
        if (folo_cpu_kernels_for(FOLO_CPU_ISA_AVX512) && cpu_has_avx512bf16())
            return &folo_cpu_kernels_avx512bf16;
        return NULL;
    case FOLO_CPU_ISA_AMX:
        if (folo_cpu_kernels_for(FOLO_CPU_ISA_AVX512BF16) && amx_permitted())
            return &folo_cpu_kernels_amx;
        return NULL;
#endif
    default:
        return NULL;
    }
}

const folo_cpu_kernels *folo_cpu_kernels_select(folo_error *err) {
    static atomic_int logged; /* log the choice once per process, not per backend */
    const char *forced = getenv("FOLO_CPU_ISA");
    const folo_cpu_kernels *k = NULL;
    if (forced && *forced) {
        int isa = 0;
        while (isa < FOLO_CPU_ISA_COUNT && strcmp(forced, k_isa_names[isa]) != 0)
            isa++;
        if (isa == FOLO_CPU_ISA_COUNT) {
            folo_fail(err, "FOLO_CPU_ISA=%s: expected portable, avx2, avx512, avx512bf16 or amx",
                      forced);
            return NULL;
        }
        k = folo_cpu_kernels_for((folo_cpu_isa)isa);
        if (!k) {
            folo_fail(err, "FOLO_CPU_ISA=%s: this CPU or build lacks it", forced);
            return NULL;
        }
    } else {
        for (int isa = FOLO_CPU_ISA_COUNT - 1; !k; isa--)
            k = folo_cpu_kernels_for((folo_cpu_isa)isa);
    }
    if (!atomic_exchange(&logged, 1)) {
        folo_log(FOLO_LOG_DEBUG, "cpu kernels: %s%s", k->name,
                 forced && *forced ? " (FOLO_CPU_ISA)" : "");
    }
    return k;
}
