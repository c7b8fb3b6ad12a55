/* A loaded Qwen3 checkpoint: the config, the generation defaults and the
 * weight table, with every weight a read-only pointer into the mmap'd
 * safetensors file(s) (single file or sharded via model.safetensors.index.json).
 *
 * Loading validates everything the forward pass will rely on: every expected
 * tensor is present with the shape DESIGN §4 gives it and a float dtype
 * (F32, F16 or BF16); unexpected extra tensors are ignored. Errors name the
 * file and the tensor. */
#ifndef FOLO_MODEL_MODEL_H
#define FOLO_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"
#include "model/config.h"

typedef struct folo_tensor {
    const void *data;               /* into a mapping; row-major */
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

typedef struct folo_model {
    char *dir;                      /* model directory, owned */
    folo_config config;
    folo_generation_config generation;
    folo_tensor embed;              /* (V, H) model.embed_tokens.weight */
    folo_tensor final_norm;         /* (H) model.norm.weight */
    folo_tensor lm_head;            /* (V, H): lm_head.weight, or embed when tied */
    folo_layer_weights *layers;     /* [L] */
    size_t weight_bytes;            /* bytes of all used tensors (tied head once) */
    /* private: the mappings and parsed headers behind the pointers */
    struct folo_model_files *files;
} folo_model;

/* Loads dir/config.json, generation_config.json and the safetensors. */
folo_model *folo_model_load(const char *dir, folo_error *err);
void folo_model_free(folo_model *m);

#endif
