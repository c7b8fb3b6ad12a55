/* Synthetic checkpoints: a Hugging Face-layout Qwen3 directory with random
 * weights and the real tokenizer, so every part of folo (and transformers,
 * the oracle) can run with no download.
 *
 * What is written: config.json with every field the released Qwen3-0.6B
 * config has, generation_config.json with Qwen3's sampling defaults,
 * model.safetensors (or N shards and model.safetensors.index.json), and the
 * tokenizer files copied byte for byte. config.json is written last, so a
 * directory holding one is complete (cli_model_dir relies on that).
 *
 * Weights are N(0, 0.02²) and norm weights 1 + 0.1·N(0, 1). The random
 * stream is cut into fixed chunks, each seeded from (seed, tensor name,
 * chunk index), so the bytes depend only on the seed and the preset: not on
 * the thread count, the sharding, or tying (the embedding of an untied
 * model equals the tied model's). Called by `folo make-model` and tests. */
#ifndef FOLO_MODEL_MAKE_MODEL_H
#define FOLO_MODEL_MAKE_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

typedef struct folo_make_model_opts {
    const char *preset;        /* "tiny" or "qwen3-0.6b" */
    folo_dtype dtype;          /* F32, F16 or BF16 */
    uint64_t seed;
    int n_shards;              /* 1: model.safetensors; more: model-0000k-of-0000N.safetensors */
    bool untied;               /* write lm_head.weight and tie_word_embeddings false */
    const char *tokenizer_dir; /* holds tokenizer.json and tokenizer_config.json */
    const char *out_dir;       /* created when missing; files in it are replaced */
    int n_threads;             /* <= 0: every online CPU */
} folo_make_model_opts;

/* Names of the presets, NULL-terminated, for usage messages. */
extern const char *const folo_make_model_presets[];

/* 1 when `name` is a preset. */
int folo_make_model_has_preset(const char *name);

int folo_make_model(const folo_make_model_opts *opts, folo_error *err);

#endif
