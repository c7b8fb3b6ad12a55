/* Writing the GPTQ checkpoint; see checkpoint.h. */
#include "quant/checkpoint.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/file.h"
#include "folo.h"
#include "model/gptq.h"
#include "model/hf_dir.h"

/* ---- the tensor table ------------------------------------------------------- */

/* The tensors of model.safetensors, in the order of the file. */
typedef struct plan {
    folo_st_tensor *tensors; /* names owned */
    const void **data;       /* the float tensors' bytes; NULL for quantized parts */
    int n, cap;
} plan;

static int plan_add(plan *p, const char *name, folo_dtype dtype, int64_t d0, int64_t d1,
                    const void *data) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->tensors = folo_realloc(p->tensors, (size_t)p->cap * sizeof *p->tensors);
        p->data = folo_realloc(p->data, (size_t)p->cap * sizeof *p->data);
    }
    folo_st_tensor *t = &p->tensors[p->n];
    memset(t, 0, sizeof *t);
    t->name = folo_strdup(name);
    t->dtype = dtype;
    t->n_dims = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    p->data[p->n] = data;
    return p->n++;
}

static void plan_float(plan *p, const char *name, const folo_tensor *t) {
    plan_add(p, name, t->dtype, t->shape[0], t->n_dims == 2 ? t->shape[1] : 0, t->data);
}

/* Adds the four parts of linear `prefix` [N, K]; returns the first index. */
static int plan_linear(plan *p, const char *prefix, int64_t N, int64_t K, int bits,
                       int group_size, folo_error *err) {
    folo_quant_config q = {.gptq = true, .bits = bits, .group_size = group_size};
    int first = p->n;
    for (int part = 0; part < FOLO_GPTQ_PARTS; part++) {
        int64_t d0, d1;
        if (folo_gptq_shape(part, N, K, &q, &d0, &d1, prefix, err) != 0) return -1;
        char name[256];
        snprintf(name, sizeof name, "%s.%s", prefix, folo_gptq_suffixes[part]);
        plan_add(p, name, part == FOLO_GPTQ_SCALES ? FOLO_DTYPE_F16 : FOLO_DTYPE_I32, d0, d1,
                 NULL);
    }
    return first;
}

/* first_part [L, FOLO_N_LINEARS] and, with lm_head, *head_part: where
 * each quantized linear's parts start. */
static int plan_model(plan *p, const folo_model *m, int bits, int group_size, int head_bits,
                      int *first_part, int *head_part, folo_error *err) {
    const folo_config *c = &m->config;
    plan_float(p, "model.embed_tokens.weight", &m->embed);
    for (int l = 0; l < c->n_layers; l++) {
        folo_layer_weights *w = &m->layers[l];
        const struct {
            const char *suffix;
            const folo_tensor *norm; /* NULL: the next linear */
        } order[] = {
            {"input_layernorm.weight", &w->input_norm}, {NULL, NULL}, {NULL, NULL},
            {NULL, NULL}, {"self_attn.q_norm.weight", &w->q_norm},
            {"self_attn.k_norm.weight", &w->k_norm}, {NULL, NULL},
            {"post_attention_layernorm.weight", &w->post_norm}, {NULL, NULL}, {NULL, NULL},
            {NULL, NULL},
        };
        int id = 0;
        for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
            char name[192];
            if (order[i].norm) {
                snprintf(name, sizeof name, "model.layers.%d.%s", l, order[i].suffix);
                plan_float(p, name, order[i].norm);
                continue;
            }
            const folo_tensor *t = folo_layer_linear(w, (folo_linear_id)id);
            snprintf(name, sizeof name, "model.layers.%d.%s", l, folo_linear_names[id]);
            int first = plan_linear(p, name, t->shape[0], t->shape[1], bits, group_size, err);
            if (first < 0) return -1;
            first_part[l * FOLO_N_LINEARS + id++] = first;
        }
    }
    plan_float(p, "model.norm.weight", &m->final_norm);
    if (head_bits) {
        *head_part =
            plan_linear(p, "lm_head", c->vocab_size, c->hidden_size, head_bits, group_size, err);
        if (*head_part < 0) return -1;
    } else if (!c->tie_word_embeddings) {
        plan_float(p, "lm_head.weight", &m->lm_head);
    }
    return 0;
}

/* ---- writing ------------------------------------------------------------------ */

int folo_qcheckpoint_open(folo_qcheckpoint *c, const char *out_dir, const folo_model *m,
                          int bits, int group_size, int head_bits, folo_error *err) {
    memset(c, 0, sizeof *c);
    c->writer.fd = -1;
    c->out_dir = folo_strdup(out_dir);
    c->model = m;
    c->first_part = folo_calloc((size_t)m->config.n_layers * FOLO_N_LINEARS, sizeof(int));
    c->head_part = -1;
    c->head_bits = head_bits;
    plan p = {0};
    int rc = plan_model(&p, m, bits, group_size, head_bits, c->first_part, &c->head_part, err);
    c->tensors = p.tensors;
    c->n_tensors = p.n;
    if (rc == 0) rc = folo_mkdir_p(out_dir, err);
    if (rc == 0) rc = folo_hf_remove_stale(out_dir, "config.json", err);
    if (rc == 0) rc = folo_hf_remove_stale(out_dir, "model.safetensors.index.json", err);
    char *path = folo_path_join(out_dir, "model.safetensors");
    if (rc == 0) rc = folo_st_writer_open(&c->writer, path, p.tensors, p.n, err);
    for (int i = 0; rc == 0 && i < p.n; i++)
        if (p.data[i])
            rc = folo_st_writer_put(&c->writer, i, 0, p.data[i], c->writer.tensors[i].bytes, err);
    free(path);
    free(p.data);
    return rc;
}

/* Packs r and writes it into the four tensors from writer index `first`. */
static int put_parts(folo_qcheckpoint *c, int first, const folo_quant_result *r,
                     bool zeros_minus_one, folo_error *err) {
    int64_t N = r->N, K = r->K, n_groups = r->n_groups, per = 32 / r->bits;
    uint32_t *qweight = folo_alloc_large((size_t)(K / per * N) * sizeof(uint32_t));
    uint32_t *qzeros = folo_alloc_large((size_t)(n_groups * N / per) * sizeof(uint32_t));
    int rc = 0;
    if (!qweight || !qzeros)
        rc = folo_fail(err, "cannot allocate the packed tensors of a [%lld, %lld] linear",
                       (long long)N, (long long)K);
    if (rc == 0) {
        folo_gptq_pack(r->bits, r->codes, r->zeros, N, K, n_groups, zeros_minus_one, qweight,
                       qzeros);
        const void *parts[FOLO_GPTQ_PARTS] = {qweight, qzeros, r->scales, r->g_idx};
        for (int part = 0; rc == 0 && part < FOLO_GPTQ_PARTS; part++)
            rc = folo_st_writer_put(&c->writer, first + part, 0, parts[part],
                                    c->writer.tensors[first + part].bytes, err);
    }
    folo_free_large(qweight);
    folo_free_large(qzeros);
    return rc;
}

int folo_qcheckpoint_put(folo_qcheckpoint *c, int layer, folo_linear_id id,
                         const folo_quant_result *r, bool zeros_minus_one, folo_error *err) {
    return put_parts(c, c->first_part[layer * FOLO_N_LINEARS + id], r, zeros_minus_one, err);
}

int folo_qcheckpoint_put_head(folo_qcheckpoint *c, const folo_quant_result *r,
                              bool zeros_minus_one, folo_error *err) {
    FOLO_ASSERT(c->head_part >= 0);
    return put_parts(c, c->head_part, r, zeros_minus_one, err);
}

/* config.json's quantization_config (and quantize_config.json). */
static json_t *quantization_config(const folo_qcheckpoint_info *info, int head_bits) {
    bool lm_head = head_bits != 0;
    const folo_quant_params *q = &info->params;
    bool gptq = q->method == FOLO_QUANT_GPTQ;
    json_t *meta = json_pack("{s:[s], s:s}", "quantizer", "folo:" FOLO_VERSION, "method",
                             gptq ? "gptq" : "rtn");
    if (info->calib_path)
        json_object_set_new(meta, "calibration",
                            json_pack("{s:s, s:i, s:i, s:I}", "file", info->calib_path,
                                      "n_samples", info->n_samples, "seq_len", info->seq_len,
                                      "seed", (json_int_t)info->seed));
    json_t *qc = json_pack("{s:s, s:i, s:i, s:b, s:b, s:b, s:s, s:s, s:b, s:b, s:o}",
                           "quant_method", "gptq", "bits", q->bits, "group_size", q->group_size,
                           "desc_act", q->desc_act, "sym", q->sym, "lm_head", lm_head,
                           "checkpoint_format", info->format_v2 ? "gptq_v2" : "gptq",
                           "pack_dtype", "int32", "static_groups", q->static_groups,
                           "true_sequential", 1,
                           "meta", meta);
    if (gptq) json_object_set_new(qc, "damp_percent", json_real(q->damp));
    /* GPTQModel's per-module override, which vLLM reads too */
    if (head_bits && head_bits != q->bits)
        json_object_set_new(qc, "dynamic", json_pack("{s:{s:i}}", "+:lm_head", "bits", head_bits));
    return qc;
}

int folo_qcheckpoint_finish(folo_qcheckpoint *c, const folo_qcheckpoint_info *info,
                            folo_error *err) {
    int rc = folo_st_writer_close(&c->writer, err);
    const char *src = c->model->dir, *dst = c->out_dir;
    if (rc == 0) rc = folo_hf_copy_tokenizer(src, dst, err);
    if (rc == 0) rc = folo_hf_copy_file(src, dst, "generation_config.json", false, err);
    bool lm_head = c->head_part >= 0;
    if (rc == 0)
        rc = folo_hf_write_json(dst, "quantize_config.json",
                                quantization_config(info, c->head_bits), err);
    if (rc == 0) {
        char *path = folo_path_join(src, "config.json");
        json_error_t jerr;
        json_t *config = json_load_file(path, 0, &jerr);
        if (!json_is_object(config))
            rc = folo_fail(err, "%s: cannot read it back: %s", path, jerr.text);
        else
            json_object_set_new(config, "quantization_config",
                                quantization_config(info, c->head_bits));
        /* A quantized head is its own tensor: transformers would tie it back
         * to the float embedding. */
        if (rc == 0 && lm_head && c->model->config.tie_word_embeddings)
            json_object_set_new(config, "tie_word_embeddings", json_false());
        if (rc == 0) rc = folo_hf_write_json(dst, "config.json", config, err);
        else json_decref(config);
        free(path);
    }
    return rc;
}

void folo_qcheckpoint_free(folo_qcheckpoint *c) {
    folo_st_writer_close(&c->writer, NULL);
    for (int i = 0; i < c->n_tensors; i++) free(c->tensors[i].name);
    free(c->tensors);
    free(c->first_part);
    free(c->out_dir);
    memset(c, 0, sizeof *c);
}
