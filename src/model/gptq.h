/* GPTQ 4- and 8-bit linears: the checkpoint layout GPTQModel and AutoGPTQ write
 * (and vLLM and transformers load), validated and repacked at load into
 * the row layout the CPU kernels read.
 *
 * Stored layout of a linear y = x · Wᵀ with W [N, K] (N outputs, K inputs,
 * G = group_size, or K when group_size is -1; n_groups = K / G):
 *   qweight  I32 [K/8, N]        W's 4-bit codes packed down K: code of
 *                                (k, n) in qweight[k/8, n] bits 4·(k%8)..+3
 *   qzeros   I32 [n_groups, N/8] zero points packed across N: zero of
 *                                (g, n) in qzeros[g, n/8] bits 4·(n%8)..+3;
 *                                format "gptq" stores zero − 1, "gptq_v2"
 *                                the zero itself
 * (8 bits: 4 codes a word, qweight [K/4, N] and qzeros [n_groups, N/4],
 * code (k, n) in bits 8·(k%4)..+7)
 *   scales   F16 [n_groups, N]
 *   g_idx    I32 [K]             the group of each input column; k / G
 *                                unless desc_act reordered the columns
 * and W[n, k] = (code(k, n) − zero(g, n)) · scale(g, n) with g = g_idx[k],
 * the subtraction exact and the product one f32 rounding: the value
 * GPTQModel's and transformers' dequantization give, in f32.
 *
 * Repacked layout (folo_qlinear), one row per output, so a kernel reads
 * W's rows as it reads a float matrix: each row is K32 / 2 bytes
 * (K32 = K rounded up to 32), 16 bytes per 32 columns. A block is eight
 * little-endian 16-bit words; word i holds columns i, i + 8, i + 16 and
 * i + 24 of the block in its nibbles 0 to 3 (column j: byte
 * 2·(j % 8) + j / 16, the high nibble when j / 8 is odd). So a 16-byte
 * load repeated in each 128-bit lane of a vector and shifted by 4·lane
 * puts consecutive columns in consecutive words (the bf16 kernels), or
 * widened to 32-bit lanes and shifted by 4·(lane / 8) the 16 columns of a
 * half block (the f32 ones), with no shuffle between lanes. An 8-bit
 * row is K32 bytes, byte k holding column k. The scales and true zero
 * points (f32) are per row, per group. Built by
 * folo_gptq_repack from the mapped tensors; the model owns the copy. */
#ifndef FOLO_MODEL_GPTQ_H
#define FOLO_MODEL_GPTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "model/config.h"
#include "model/model.h"

typedef struct folo_qlinear {
    int n_rows;             /* N, outputs */
    int bits;               /* 4 or 8 */
    int K;                  /* inputs */
    int group_size;         /* G: columns per group (K for one group per row) */
    int n_groups;           /* K / G */
    bool contiguous_groups; /* g_idx[k] == k / G for every k */
    size_t row_bytes;       /* K32 · bits / 8 */
    uint8_t *codes;         /* [N, row_bytes] codes, layout above */
    float *scales;          /* [N, n_groups] */
    float *zeros;           /* [N, n_groups] true zero points, 0..2^bits */
    int32_t *g_idx;         /* [K] group of each column, in [0, n_groups) */
    size_t bytes;           /* of the four arrays above */
} folo_qlinear;

/* The four stored tensors of a linear, in the order of this enum. */
enum { FOLO_GPTQ_QWEIGHT, FOLO_GPTQ_QZEROS, FOLO_GPTQ_SCALES, FOLO_GPTQ_G_IDX, FOLO_GPTQ_PARTS };
extern const char *const folo_gptq_suffixes[FOLO_GPTQ_PARTS]; /* "qweight", ... */

/* The stored shape of part `part` of an [N, K] linear ([d0, d1], d1 = 0
 * for a vector) at q->bits; the loader checks it and the dtype (I32,
 * scales a float) before repacking. Fails, naming the linear, when N or K
 * cannot be packed (not multiples of 32 / bits, or K not a multiple of
 * group_size). */
int folo_gptq_shape(int part, int64_t N, int64_t K, const folo_quant_config *q, int64_t *d0,
                    int64_t *d1, const char *linear, folo_error *err);

/* Fills *out with a repacked copy of the checked parts, at q->bits. g_idx entries are
 * range-checked here; an error names g_idx_name and path. */
int folo_gptq_repack(folo_qlinear *out, const folo_tensor parts[FOLO_GPTQ_PARTS],
                     const folo_quant_config *q, const char *g_idx_name, const char *path,
                     folo_error *err);
void folo_qlinear_free(folo_qlinear *l);

/* The inverse, for writers (src/quant/): packs the codes [N, K]
 * (0..2^bits − 1) into qweight [K·bits/32, N] and the true zero points
 * [n_groups, N] (the same range; at least 1 when zeros_minus_one, format
 * "gptq") into qzeros [n_groups, N·bits/32], both as the little-endian
 * int32 words of the stored layout above. N and K are multiples of
 * 32 / bits. */
void folo_gptq_pack(int bits, const uint8_t *codes, const uint8_t *zeros, int64_t N, int64_t K,
                    int64_t n_groups, bool zeros_minus_one, uint32_t *qweight, uint32_t *qzeros);

#endif
