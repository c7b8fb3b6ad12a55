/* GPTQ 4- and 8-bit linears: the repack of model/gptq.c and the kernels of
 * kernels_int4*.c against a dequantization written straight from the
 * stored layout (gptq.h), on random codes, zeros and scales for shapes with
 * column tails past the last full 32, every group size the formats use (32,
 * 64, 128, per channel) and odd ones (8, 24), contiguous and act-order
 * (permuted) g_idx, and both zero conventions:
 *   - every table's dequantization gives the reference's bits exactly
 *     ((code − zero) · scale is one f32 rounding), for any row range, and
 *     its bf16 dequantization those bits rounded by folo_f32_to_bf16;
 *   - every SIMD GEMV gives, for 1..6 tokens and a row range with a partial
 *     tile, the same bits as dequantization followed by its ISA's float
 *     matmul (the prefill path), which makes decode and prefill agree; the
 *     bf16 GEMV the same bits as the bf16 rows through matmul_bf16.
 * Also the checks the loader relies on: shapes that cannot be packed,
 * g_idx out of range; and that folo_gptq_pack, the writers' packing, is the
 * inverse of reading the stored words. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels_int4.h"
#include "check.h"
#include "core/dtype.h"
#include "gptq_random.h"
#include "model/gptq.h"
#include "test_random.h"

/* The codes and true zeros read from the stored words pack back into the
 * same words. */
static void check_pack(const stored_linear *s, int zeros_minus_one) {
    int N = s->N, K = s->K, b = s->bits, per = 32 / b;
    unsigned mask = (1u << b) - 1u;
    uint8_t *codes = malloc((size_t)N * K);           /* [N, K] */
    uint8_t *zeros = malloc((size_t)s->n_groups * N); /* [n_groups, N] */
    uint32_t *qweight = malloc(sizeof *qweight * (size_t)K / per * N);
    uint32_t *qzeros = malloc(sizeof *qzeros * (size_t)s->n_groups * N / per);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            codes[(size_t)n * K + k] = (s->qweight[(k / per) * N + n] >> (b * (k % per))) & mask;
    /* (8-bit format "gptq": a stored 255 is a true zero of 256, which wraps
     * to 0 in a byte and back to 255 when packed) */
    for (int g = 0; g < s->n_groups; g++)
        for (int n = 0; n < N; n++)
            zeros[g * N + n] =
                (uint8_t)(((s->qzeros[g * (N / per) + n / per] >> (b * (n % per))) & mask) +
                          (zeros_minus_one ? 1u : 0u));
    folo_gptq_pack(b, codes, zeros, N, K, s->n_groups, zeros_minus_one != 0, qweight, qzeros);
    CHECK_MSG(memcmp(qweight, s->qweight, sizeof *qweight * (size_t)K / per * N) == 0 &&
                  memcmp(qzeros, s->qzeros, sizeof *qzeros * (size_t)s->n_groups * N / per) == 0,
              "pack: N %d K %d G %d v1 %d bits %d", N, K, s->G, zeros_minus_one, b);
    free(codes);
    free(zeros);
    free(qweight);
    free(qzeros);
}

/* int4->gemv against the float matmul of k on the dequantized rows w [N, K]
 * (bf16: int4->gemv_bf16 against k->matmul_bf16 on the rows rounded to
 * bf16, w16), rows [begin, end), bit for bit. */
static void check_gemv(const folo_cpu_kernels *k, const folo_cpu_int4_kernels *int4,
                       const folo_qlinear *l, const float *w, const uint16_t *w16, int bf16,
                       int begin, int end) {
    int N = l->n_rows, K = l->K, T = FOLO_CPU_INT4_GEMV_TOKENS;
    float *x = malloc(sizeof(float) * (size_t)T * K);     /* [T, K] */
    float *y = malloc(sizeof(float) * (size_t)T * N);     /* [T, N] gemv */
    float *y_ref = malloc(sizeof(float) * (size_t)T * N); /* [T, N] float matmul */
    float *scratch = malloc(sizeof(float) * k->matmul_scratch_floats(K));
    fill_random(x, (size_t)T * K, 1.0f);
    for (int n_tokens = 1; n_tokens <= T; n_tokens++) {
        for (int i = 0; i < T * N; i++) y[i] = y_ref[i] = 7.0f;
        if (bf16) {
            int4->gemv_bf16(y, (size_t)N, x, n_tokens, l, begin, end, scratch);
            k->matmul_bf16(y_ref, (size_t)N, x, n_tokens, K, w16, FOLO_DTYPE_BF16, begin, end,
                           scratch);
        } else {
            int4->gemv(y, (size_t)N, x, n_tokens, l, begin, end);
            k->matmul(y_ref, (size_t)N, x, n_tokens, K, w, FOLO_DTYPE_F32, begin, end, scratch);
        }
        CHECK_MSG(memcmp(y, y_ref, sizeof(float) * (size_t)T * N) == 0,
                  "%s gemv%s: %d tokens, N %d K %d G %d", k->name, bf16 ? "_bf16" : "", n_tokens,
                  N, K, l->group_size);
    }
    free(x);
    free(y);
    free(y_ref);
    free(scratch);
}

static void test_shape(int N, int K, int group_size, int act_order, int zeros_minus_one,
                       int bits) {
    stored_linear s;
    make_linear_bits(&s, N, K, group_size, act_order, bits);
    folo_quant_config q = {.gptq = true, .bits = bits, .group_size = group_size,
                           .desc_act = act_order != 0, .zeros_minus_one = zeros_minus_one != 0};
    for (int p = 0; p < FOLO_GPTQ_PARTS; p++) {
        int64_t d0, d1;
        folo_error err = {0};
        CHECK(folo_gptq_shape(p, N, K, &q, &d0, &d1, "linear", &err) == 0);
        CHECK(d0 == s.parts[p].shape[0] && d1 == s.parts[p].shape[1]);
    }
    check_pack(&s, zeros_minus_one);
    folo_qlinear l;
    folo_error err = {0};
    int rc = folo_gptq_repack(&l, s.parts, &q, "linear.g_idx", "test", &err);
    CHECK_MSG(rc == 0, "%s", err.message);
    if (rc != 0) {
        free_linear(&s);
        return;
    }
    CHECK(l.contiguous_groups == (!act_order || s.n_groups == 1));

    float *want = malloc(sizeof(float) * (size_t)N * K);
    float *got = malloc(sizeof(float) * (size_t)N * K);
    uint16_t *want16 = malloc(sizeof(uint16_t) * (size_t)N * K);
    uint16_t *got16 = malloc(sizeof(uint16_t) * (size_t)N * K);
    dequant_stored(want, &s, zeros_minus_one);
    for (size_t i = 0; i < (size_t)N * K; i++) want16[i] = folo_f32_to_bf16(want[i]);
    for (int isa = 0; isa < FOLO_CPU_ISA_COUNT; isa++) {
        const folo_cpu_kernels *k = folo_cpu_kernels_for((folo_cpu_isa)isa);
        if (!k) continue;
        const folo_cpu_int4_kernels *int4 = folo_cpu_int4_kernels_for(k);
        /* All rows at once, then a range starting past row 0. */
        int4->dequant(got, &l, 0, N);
        int4->dequant_bf16(got16, &l, 0, N);
        CHECK_MSG(memcmp(got, want, sizeof(float) * (size_t)N * K) == 0 &&
                      memcmp(got16, want16, sizeof(uint16_t) * (size_t)N * K) == 0,
                  "%s: N %d K %d G %d act-order %d v1 %d bits %d", k->name, N, K, group_size,
                  act_order, zeros_minus_one, bits);
        int begin = N / 3, n_rows = N - begin - 1;
        memset(got, 0, sizeof(float) * (size_t)N * K);
        memset(got16, 0, sizeof(uint16_t) * (size_t)N * K);
        int4->dequant(got, &l, begin, n_rows);
        int4->dequant_bf16(got16, &l, begin, n_rows);
        CHECK(memcmp(got, want + (size_t)begin * K, sizeof(float) * (size_t)n_rows * K) == 0);
        CHECK(memcmp(got16, want16 + (size_t)begin * K, sizeof(uint16_t) * (size_t)n_rows * K) ==
              0);
        if (int4->gemv) check_gemv(k, int4, &l, want, want16, 0, begin, begin + n_rows);
        if (int4->gemv_bf16) check_gemv(k, int4, &l, want, want16, 1, begin, begin + n_rows);
    }
    free(want);
    free(got);
    free(want16);
    free(got16);
    folo_qlinear_free(&l);
    free_linear(&s);
}

static void test_errors(void) {
    folo_quant_config q = {.gptq = true, .bits = 4, .group_size = 128};
    int64_t d0, d1;
    folo_error err = {0};
    CHECK(folo_gptq_shape(FOLO_GPTQ_QWEIGHT, 64, 100, &q, &d0, &d1, "model.x", &err) != 0);
    CHECK(strstr(err.message, "model.x") && strstr(err.message, "multiples of 8"));
    folo_quant_config q8 = {.gptq = true, .bits = 8, .group_size = -1};
    CHECK(folo_gptq_shape(FOLO_GPTQ_QWEIGHT, 64, 100, &q8, &d0, &d1, "model.x", &err) == 0 &&
          d0 == 25 && d1 == 64);
    q8.group_size = 32;
    CHECK(folo_gptq_shape(FOLO_GPTQ_QZEROS, 64, 96, &q8, &d0, &d1, "model.x", &err) == 0 &&
          d0 == 3 && d1 == 16);
    CHECK(folo_gptq_shape(FOLO_GPTQ_QWEIGHT, 64, 98, &q8, &d0, &d1, "model.z", &err) != 0);
    CHECK(strstr(err.message, "model.z") && strstr(err.message, "multiples of 4"));
    CHECK(folo_gptq_shape(FOLO_GPTQ_SCALES, 64, 192, &q, &d0, &d1, "model.y", &err) != 0);
    CHECK(strstr(err.message, "group_size 128"));

    stored_linear s;
    make_linear(&s, 16, 64, 32, 0);
    s.g_idx[5] = 2; /* two groups: 0 and 1 */
    folo_qlinear l;
    CHECK(folo_gptq_repack(&l, s.parts, &q, "m.g_idx", "file.safetensors", &err) != 0);
    CHECK_MSG(strstr(err.message, "file.safetensors") && strstr(err.message, "'m.g_idx'") &&
                  strstr(err.message, "column 5"),
              "%s", err.message);
    free_linear(&s);
}

int main(void) {
    rng_seed(14);
    const int groups[] = {32, 64, 128, -1, 8, 24};
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        for (int act_order = 0; act_order < 2; act_order++) {
            for (int v1 = 0; v1 < 2; v1++) {
                int G = groups[g];
                /* K: whole 32-column blocks, and a tail of 8 or 16 past them. */
                int Ks[3] = {G > 0 ? 4 * G : 256, G > 0 ? 3 * G : 200, G > 0 ? 5 * G : 40};
                for (int i = 0; i < 3; i++) {
                    test_shape(24, Ks[i], G, act_order, v1, 4);
                    test_shape(24, Ks[i], G, act_order, v1, 8);
                }
            }
        }
    }
    test_errors();
    return check_summary("test_int4_kernels");
}
