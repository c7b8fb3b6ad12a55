/* config.json and generation_config.json of a Hugging Face Qwen3 checkpoint.
 *
 * Only the fields DESIGN §4 uses are read; each is validated (type and range)
 * and a failure names the file and the field. The sizes (hidden_size,
 * intermediate_size, num_hidden_layers, num_attention_heads, vocab_size) are
 * required; other absent fields take transformers' defaults
 * (num_key_value_heads = Hq, head_dim = H / Hq, rope_theta 10000,
 * rms_norm_eps 1e-6, max_position_embeddings 32768, untied, float32).
 * Features the forward pass lacks (biases, sliding windows, scaled RoPE)
 * are refused by name.
 *
 * A GPTQ checkpoint declares itself by `quantization_config` in config.json
 * (transformers' spelling, `quant_method: "gptq"`) or by a
 * quantize_config.json beside it (AutoGPTQ's and GPTQModel's file); when
 * both exist config.json's wins, as in transformers. Only 4-bit GPTQ with
 * int32 packing is supported; any other method, bit width, packing or
 * per-module override is an error naming the field (see docs/gptq.md). */
#ifndef FOLO_MODEL_CONFIG_H
#define FOLO_MODEL_CONFIG_H

#include <stdbool.h>

#include "core/dtype.h"
#include "core/error.h"

#define FOLO_MAX_EOS 8

/* One rule of GPTQModel's "dynamic" field: per-module overrides of the
 * quantization, as GPTQModel writes them and vLLM reads them. The key is a
 * regular expression matched at the start of a module's name
 * ("model.layers.3.mlp.up_proj", "lm_head"); "-:" before it excludes the
 * modules it matches (stored unquantized), "+:" or nothing overrides the
 * fields its object names. */
#define FOLO_QUANT_MAX_RULES 16
#define FOLO_QUANT_PATTERN_MAX 256
typedef struct folo_quant_rule {
    bool skip;                           /* "-:" */
    char pattern[FOLO_QUANT_PATTERN_MAX]; /* without its "+:" or "-:" */
    int bits;                            /* 0: not overridden */
    int group_size;                      /* 0: not overridden */
    int desc_act, sym;                   /* -1: not overridden */
} folo_quant_rule;

/* The quantization of every decoder linear (q, k, v, o, gate, up, down
 * projections), and of lm_head when `lm_head` is set, unless a rule of
 * `rules` says otherwise for a module (folo_quant_for). */
typedef struct folo_quant_config {
    bool gptq;                   /* false: the checkpoint is unquantized */
    int bits;                    /* 4 or 8 */
    int group_size;              /* G input columns per scale, or -1: one group per row */
    bool desc_act;               /* act-order: groups follow g_idx, not column order */
    bool sym;                    /* informative: asym checkpoints carry their zeros too */
    bool zeros_minus_one;        /* checkpoint_format "gptq": qzeros store zero - 1 */
    bool lm_head;                /* lm_head is quantized too */
    int n_rules;                 /* "dynamic", in the file's order */
    folo_quant_rule rules[FOLO_QUANT_MAX_RULES];
} folo_quant_config;

/* How the module `name` of a GPTQ checkpoint is stored: the first rule of
 * q whose pattern matches the start of name decides, as in vLLM; without
 * one, q itself. Returns 1 with *out (rules dropped) when the module is
 * quantized, 0 when a "-:" rule leaves it a float weight. */
int folo_quant_for(const folo_quant_config *q, const char *name, folo_quant_config *out);

typedef struct folo_config {
    int hidden_size;             /* H */
    int intermediate_size;       /* I */
    int n_layers;                /* L, num_hidden_layers */
    int n_heads;                 /* Hq, num_attention_heads */
    int n_kv_heads;              /* Hkv, num_key_value_heads */
    int head_dim;                /* D (may differ from H / Hq) */
    int vocab_size;              /* V */
    int max_position_embeddings; /* longest context, tokens */
    double rope_theta;
    float rms_norm_eps;
    bool tie_word_embeddings;
    folo_dtype torch_dtype;      /* declared dtype (tensors carry their own) */
    int bos_token_id;            /* -1 when null/absent */
    int eos_token_ids[FOLO_MAX_EOS];
    int n_eos_token_ids;
    folo_quant_config quant;     /* quantization_config / quantize_config.json */
} folo_config;

/* Sampling defaults of generation_config.json (absent file: all defaults). */
typedef struct folo_generation_config {
    bool do_sample;              /* false: greedy */
    float temperature;           /* 1.0 */
    float top_p;                 /* 1.0 */
    int top_k;                   /* 0 = off (transformers' 50 applies only with do_sample) */
    float min_p;                 /* 0.0 */
    float repetition_penalty;    /* 1.0 */
    int eos_token_ids[FOLO_MAX_EOS]; /* falls back to config.json's */
    int n_eos_token_ids;
} folo_generation_config;

/* Parses config.json text (path is for messages only). */
int folo_config_parse(folo_config *cfg, const char *json_text, const char *path, folo_error *err);
/* Reads config.json, then quantize_config.json when config.json has no
 * quantization_config. */
int folo_config_load(folo_config *cfg, const char *model_dir, folo_error *err);

/* Reads generation_config.json from model_dir when present; eos ids fall
 * back to cfg's. */
int folo_generation_config_load(folo_generation_config *gen, const folo_config *cfg,
                                const char *model_dir, folo_error *err);

#endif
