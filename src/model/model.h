/* A loaded Qwen3 checkpoint: the config, the generation defaults and the
 * weight table, with every weight a read-only pointer into the mmap'd
 * safetensors file(s) (single file or sharded via model.safetensors.index.json).
 *
 * Loading validates everything the forward pass will rely on: every expected
 * tensor is present with the shape DESIGN §4 gives it and a float dtype
 * (F32, F16 or BF16); unexpected extra tensors are ignored. Errors name the
 * file and the tensor.
 *
 * A GPTQ checkpoint (config.quant.gptq) stores every decoder linear, and
 * lm_head when config.quant.lm_head, as qweight/qzeros/scales/g_idx
 * (gptq.h); those are checked, repacked into memory the model owns (the
 * time is logged), and their folo_tensor points at the repacked linear
 * through `quant` instead of `data`. */
#ifndef FOLO_MODEL_MODEL_H
#define FOLO_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"
#include "model/config.h"

struct folo_qlinear;

typedef struct folo_tensor {
    const void *data;               /* into a mapping; row-major (NULL when quant) */
    const struct folo_qlinear *quant; /* a GPTQ linear (gptq.h), shape [N, K]; else NULL */
    folo_dtype dtype;
    int n_dims;
    int64_t shape[4];
} folo_tensor;

typedef struct folo_layer_weights {
    folo_tensor input_norm;         /* (H) */
    folo_tensor wq;                 /* (Hq*D, H) */
    folo_tensor wk;                 /* (Hkv*D, H) */
    folo_tensor wv;                 /* (Hkv*D, H) */
    folo_tensor wo;                 /* (H, Hq*D) */
    folo_tensor q_norm;             /* (D) */
    folo_tensor k_norm;             /* (D) */
    folo_tensor post_norm;          /* (H) */
    folo_tensor w_gate;             /* (I, H) */
    folo_tensor w_up;               /* (I, H) */
    folo_tensor w_down;             /* (H, I) */
} folo_layer_weights;

/* The seven linears of a decoder layer, in the order GPTQ quantizes them. */
typedef enum folo_linear_id {
    FOLO_LINEAR_Q, FOLO_LINEAR_K, FOLO_LINEAR_V, FOLO_LINEAR_O,
    FOLO_LINEAR_GATE, FOLO_LINEAR_UP, FOLO_LINEAR_DOWN, FOLO_N_LINEARS
} folo_linear_id;

/* "self_attn.q_proj", ..., "mlp.down_proj" */
extern const char *const folo_linear_names[FOLO_N_LINEARS];
/* Short names for tables: "q", "k", "v", "o", "gate", "up", "down". */
extern const char *const folo_linear_short_names[FOLO_N_LINEARS];

/* The tensor of linear `id` in a layer's weights (writable when w is, as
 * the quantizer's working copy is; the way strchr treats its string). */
folo_tensor *folo_layer_linear(const folo_layer_weights *w, folo_linear_id id);

/* Bytes of a float tensor's data: its elements times its dtype's size. */
size_t folo_tensor_bytes(const folo_tensor *t);

typedef struct folo_model {
    char *dir;                      /* model directory, owned */
    folo_config config;
    folo_generation_config generation;
    folo_tensor embed;              /* (V, H) model.embed_tokens.weight */
    folo_tensor final_norm;         /* (H) model.norm.weight */
    folo_tensor lm_head;            /* (V, H): lm_head.weight, or embed when tied */
    folo_layer_weights *layers;     /* [L] */
    size_t weight_bytes;            /* bytes of all used tensors (tied head once; GPTQ
                                       linears as repacked) */
    struct folo_qlinear *qlinears;  /* [n_qlinears] the repacked GPTQ linears, owned */
    int n_qlinears;
    /* private: the mappings and parsed headers behind the pointers */
    struct folo_model_files *files;
} folo_model;

/* Loads dir/config.json, generation_config.json and the safetensors. */
folo_model *folo_model_load(const char *dir, folo_error *err);
void folo_model_free(folo_model *m);

#endif
