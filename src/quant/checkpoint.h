/* The checkpoint `folo quantize` writes: a Hugging Face model directory in
 * the GPTQ layout that GPTQModel and AutoGPTQ write and folo, vLLM and
 * transformers load (model/gptq.h, docs/gptq.md).
 *
 *   model.safetensors       every tensor of the float checkpoint but the
 *                           decoder linears, copied byte for byte (the
 *                           embedding, the norms, an untied lm_head, which
 *                           stays float: lm_head false), and per linear
 *                           qweight, qzeros, scales (F16) and g_idx; with
 *                           a quantized head, lm_head is such a linear
 *                           (lm_head true) and the embedding still float
 *   config.json             the source's, with quantization_config added
 *                           and, with a quantized head,
 *                           tie_word_embeddings false (written last: until
 *                           then the directory does not read as a model)
 *   quantize_config.json    the same quantization_config, for GPTQModel
 *   generation_config.json  and the tokenizer files, copied
 *
 * The safetensors header is written when the checkpoint is opened, from the
 * model's shapes, and each linear's tensors are written in place as soon as
 * it is quantized, so no more than one layer's results are ever held. */
#ifndef FOLO_QUANT_CHECKPOINT_H
#define FOLO_QUANT_CHECKPOINT_H

#include <stdbool.h>

#include "core/error.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "quant/solver.h"

/* What config.json's quantization_config records. */
typedef struct folo_qcheckpoint_info {
    folo_quant_params params;
    bool format_v2;          /* checkpoint_format "gptq_v2" (true zeros) rather than "gptq" */
    const char *calib_path;  /* NULL without calibration */
    int n_samples, seq_len;
    unsigned long long seed;
} folo_qcheckpoint_info;

typedef struct folo_qcheckpoint {
    char *out_dir;           /* owned */
    const folo_model *model; /* the float source */
    folo_st_tensor *tensors; /* [n_tensors] model.safetensors' table, names owned */
    int n_tensors;
    folo_st_writer writer;   /* borrows the names */
    int *first_part;         /* [L, FOLO_N_LINEARS] writer index of each linear's qweight */
    int head_part;           /* writer index of lm_head.qweight, or -1: the head stays float */
    int head_bits;           /* the quantized head's bits (4 or 8), or 0 */
} folo_qcheckpoint;

/* Creates out_dir, removes a stale config.json and index, opens
 * model.safetensors with every tensor's place and copies the float ones;
 * the decoder linears at bits and group_size; head_bits (4 or 8; 0: the
 * head stays float): the head is one of the quantized linears, at those
 * bits. */
int folo_qcheckpoint_open(folo_qcheckpoint *c, const char *out_dir, const folo_model *m,
                          int bits, int group_size, int head_bits, folo_error *err);
/* Writes the four tensors of a layer's linear. */
int folo_qcheckpoint_put(folo_qcheckpoint *c, int layer, folo_linear_id id,
                         const folo_quant_result *r, bool zeros_minus_one, folo_error *err);
/* Writes the four tensors of lm_head (opened with lm_head). */
int folo_qcheckpoint_put_head(folo_qcheckpoint *c, const folo_quant_result *r,
                              bool zeros_minus_one, folo_error *err);
/* Closes model.safetensors and writes the JSON and tokenizer files,
 * config.json last. */
int folo_qcheckpoint_finish(folo_qcheckpoint *c, const folo_qcheckpoint_info *info,
                            folo_error *err);
/* Releases c (after finish, or instead of it on failure). */
void folo_qcheckpoint_free(folo_qcheckpoint *c);

#endif
