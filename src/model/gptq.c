/* Repacking GPTQ linears, and packing them for writers; see gptq.h for both
 * layouts.
 *
 * The repack walks qweight in its stored order (K/8 rows of N words) and
 * scatters each word's eight codes into eight consecutive columns of one
 * output row, so the mapped tensor is read once, front to back. */
#include "model/gptq.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

const char *const folo_gptq_suffixes[FOLO_GPTQ_PARTS] = {"qweight", "qzeros", "scales", "g_idx"};

int folo_gptq_shape(int part, int64_t N, int64_t K, const folo_quant_config *q, int64_t *d0,
                    int64_t *d1, const char *linear, folo_error *err) {
    int64_t G = q->group_size < 0 ? K : q->group_size;
    int64_t per = 32 / q->bits; /* codes per int32 */
    if (K % per != 0 || N % per != 0)
        return folo_fail(err, "%s: a [%lld, %lld] linear; %d-bit GPTQ packs %lld codes per int32, "
                         "so both sizes must be multiples of %lld", linear, (long long)N,
                         (long long)K, q->bits, (long long)per, (long long)per);
    if (K % G != 0)
        return folo_fail(err, "%s: %lld input columns are not a multiple of group_size %lld",
                         linear, (long long)K, (long long)G);
    const int64_t shapes[FOLO_GPTQ_PARTS][2] = {
        {K / per, N}, {K / G, N / per}, {K / G, N}, {K, 0}};
    *d0 = shapes[part][0];
    *d1 = shapes[part][1];
    return 0;
}

/* Code i of a word's 32 / bits. */
static unsigned code_at(uint32_t word, int64_t i, int bits) {
    return (word >> (bits * (i % (32 / bits)))) & ((1u << bits) - 1u);
}

int folo_gptq_repack(folo_qlinear *out, const folo_tensor parts[FOLO_GPTQ_PARTS],
                     const folo_quant_config *q, const char *g_idx_name, const char *path,
                     folo_error *err) {
    const folo_tensor *scales = &parts[FOLO_GPTQ_SCALES];
    int64_t N = scales->shape[1], K = parts[FOLO_GPTQ_G_IDX].shape[0];
    int64_t n_groups = scales->shape[0], G = K / n_groups;
    const int32_t *g_idx = parts[FOLO_GPTQ_G_IDX].data;
    bool contiguous = true;
    for (int64_t k = 0; k < K; k++) {
        if (g_idx[k] < 0 || g_idx[k] >= n_groups)
            return folo_fail(err, "%s: tensor '%s' maps column %lld to group %d, outside [0, %lld)",
                             path, g_idx_name, (long long)k, g_idx[k], (long long)n_groups);
        contiguous = contiguous && g_idx[k] == k / G;
    }

    memset(out, 0, sizeof *out);
    out->n_rows = (int)N;
    out->bits = q->bits;
    out->K = (int)K;
    out->group_size = (int)G;
    out->n_groups = (int)n_groups;
    out->contiguous_groups = contiguous;
    out->row_bytes = (size_t)(K + 31) / 32 * 4 * (size_t)q->bits;
    size_t code_bytes = (size_t)N * out->row_bytes, group_floats = (size_t)N * (size_t)n_groups;
    out->bytes = code_bytes + 2 * group_floats * sizeof(float) + (size_t)K * sizeof(int32_t);
    out->codes = folo_alloc_large(code_bytes);
    out->scales = folo_alloc_large(group_floats * sizeof(float));
    out->zeros = folo_alloc_large(group_floats * sizeof(float));
    out->g_idx = folo_alloc_large((size_t)K * sizeof(int32_t));
    if (!out->codes || !out->scales || !out->zeros || !out->g_idx) {
        size_t bytes = out->bytes;
        folo_qlinear_free(out);
        return folo_fail(err, "%s: cannot allocate %zu bytes to repack the linear of '%s'", path,
                         bytes, g_idx_name);
    }
    memset(out->codes, 0, code_bytes); /* the padding columns up to K32 stay 0 */
    memcpy(out->g_idx, g_idx, (size_t)K * sizeof(int32_t));

    const uint32_t *words = parts[FOLO_GPTQ_QWEIGHT].data; /* [K / per, N] */
    int per = 32 / q->bits;
    for (int64_t kw = 0; kw < K / per; kw++) {
        for (int64_t n = 0; n < N; n++) {
            uint32_t word = words[kw * N + n];
            uint8_t *row = out->codes + (size_t)n * out->row_bytes;
            for (int i = 0; i < per; i++) {
                int64_t k = kw * per + i, j = k % 32;
                if (q->bits == 8)
                    row[k] = (uint8_t)code_at(word, i, 8);
                else
                    row[(k / 32) * 16 + 2 * (j % 8) + j / 16] |=
                        (uint8_t)(code_at(word, i, 4) << (j / 8 % 2 * 4));
            }
        }
    }

    const uint32_t *zero_words = parts[FOLO_GPTQ_QZEROS].data; /* [n_groups, N / per] */
    float *scale_row = folo_calloc((size_t)N, sizeof(float)); /* one group's scales, [N] */
    size_t scale_row_bytes = (size_t)N * folo_dtype_size(scales->dtype);
    for (int64_t g = 0; g < n_groups; g++) {
        folo_to_f32(scales->dtype, (const char *)scales->data + (size_t)g * scale_row_bytes,
                    scale_row, (size_t)N);
        for (int64_t n = 0; n < N; n++) {
            unsigned zero = code_at(zero_words[g * (N / per) + n / per], n, q->bits);
            out->zeros[n * n_groups + g] = (float)(zero + (q->zeros_minus_one ? 1u : 0u));
            out->scales[n * n_groups + g] = scale_row[n];
        }
    }
    free(scale_row);
    return 0;
}

void folo_qlinear_free(folo_qlinear *l) {
    folo_free_large(l->codes);
    folo_free_large(l->scales);
    folo_free_large(l->zeros);
    folo_free_large(l->g_idx);
    memset(l, 0, sizeof *l);
}

void folo_gptq_pack(int bits, const uint8_t *codes, const uint8_t *zeros, int64_t N, int64_t K,
                    int64_t n_groups, bool zeros_minus_one, uint32_t *qweight, uint32_t *qzeros) {
    int per = 32 / bits;
    uint32_t mask = (1u << bits) - 1u;
    for (int64_t kw = 0; kw < K / per; kw++)
        for (int64_t n = 0; n < N; n++) {
            const uint8_t *c = codes + n * K + kw * per;
            uint32_t word = 0;
            for (int i = 0; i < per; i++) word |= (uint32_t)(c[i] & mask) << (bits * i);
            qweight[kw * N + n] = word;
        }
    unsigned minus = zeros_minus_one ? 1u : 0u;
    for (int64_t g = 0; g < n_groups; g++)
        for (int64_t nw = 0; nw < N / per; nw++) {
            const uint8_t *z = zeros + g * N + nw * per;
            uint32_t word = 0;
            for (int i = 0; i < per; i++) word |= (uint32_t)((z[i] - minus) & mask) << (bits * i);
            qzeros[g * (N / per) + nw] = word;
        }
}
