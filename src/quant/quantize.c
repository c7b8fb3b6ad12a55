/* The quantization driver; see quantize.h for what it does and in which
 * order. This file owns the loop over layers and calibration windows; the
 * algorithm is in solver.c, the Hessians in hessian.c, the output in
 * checkpoint.c. */
#include "quant/quantize.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_backend.h"
#include "backend/single_seq.h"
#include "core/alloc.h"
#include "core/file.h"
#include "core/log.h"
#include "core/timer.h"
#include "model/gptq.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "quant/calib.h"
#include "quant/checkpoint.h"
#include "quant/hessian.h"
#include "tokenizer/tokenizer.h"

/* KV block size of the calibration backend. */
#define CALIB_BLOCK_SIZE 16

typedef struct quant_run {
    const folo_quantize_opts *o;
    folo_quant_params params;
    folo_model *src;              /* the float checkpoint, mapped */
    folo_model view;              /* src with `layers` below: what the backend runs */
    folo_layer_weights *layers;   /* [L] src's tables; a quantized linear points at its
                                     dequantized weights until its layer is done */
    const folo_linalg *la;        /* NULL for RTN without calibration */
    folo_qcheckpoint out;
    bool out_open;
    /* calibration (backend NULL without it) */
    folo_calib calib;
    folo_backend *backend;
    folo_single_seq seq;
    folo_batch batch;             /* the current window's, no logits */
    float *x;                     /* [n_samples · seq_len, H] hidden states */
    float *dump;                  /* [n_samples · seq_len, max K] when dumping */
    folo_quant_result results[FOLO_N_LINEARS]; /* the current layer's */
} quant_run;

static const char *const k_tap_names[] = {
    [FOLO_CPU_TAP_QKV] = "qkv", [FOLO_CPU_TAP_O] = "o", [FOLO_CPU_TAP_GATE_UP] = "gate_up",
    [FOLO_CPU_TAP_DOWN] = "down"};

/* ---- checks before any work ------------------------------------------------- */

/* The problems an argument or the model can have that would otherwise show
 * only after minutes of work. */
static int check(const quant_run *r, folo_error *err) {
    const folo_quantize_opts *o = r->o;
    const folo_config *c = &r->src->config;
    if (c->quant.gptq)
        return folo_fail(err, "%s is already quantized (its quantization_config says 4-bit "
                         "GPTQ); quantize the float checkpoint it came from", o->model_dir);
    char *src_real = realpath(o->model_dir, NULL), *out_real = realpath(o->out_dir, NULL);
    bool same = src_real && out_real && strcmp(src_real, out_real) == 0;
    free(src_real);
    free(out_real);
    if (same)
        return folo_fail(err, "--out %s is the model directory itself; write the quantized "
                         "checkpoint elsewhere", o->out_dir);
    if (r->params.method == FOLO_QUANT_GPTQ && !o->calib_path)
        return folo_fail(err, "GPTQ needs calibration text (--calib FILE)");
    if (r->params.desc_act && r->params.method != FOLO_QUANT_GPTQ)
        return folo_fail(err, "act-order (--desc-act) orders columns by the Hessian; it needs "
                         "GPTQ");
    if (r->params.static_groups && r->params.method != FOLO_QUANT_GPTQ)
        return folo_fail(err, "--static-groups fixes GPTQ's grids before its column loop; it "
                         "needs GPTQ");
    if (o->calib_path) {
        if (o->n_samples < 1 || o->seq_len < 1 || (int64_t)o->n_samples * o->seq_len > INT_MAX)
            return folo_fail(err, "%d calibration windows of %d tokens: both must be positive "
                             "and their product below 2^31", o->n_samples, o->seq_len);
        if (o->seq_len > c->max_position_embeddings)
            return folo_fail(err, "--seq-len %d exceeds the model's max_position_embeddings (%d)",
                             o->seq_len, c->max_position_embeddings);
    }
    folo_quant_config q = {.gptq = true, .bits = r->params.bits,
                           .group_size = r->params.group_size};
    for (int id = 0; id < FOLO_N_LINEARS; id++) {
        const folo_tensor *t = folo_layer_linear(&r->src->layers[0], (folo_linear_id)id);
        char name[64];
        snprintf(name, sizeof name, "model.layers.*.%s", folo_linear_names[id]);
        int64_t d0, d1;
        if (folo_gptq_shape(FOLO_GPTQ_QWEIGHT, t->shape[0], t->shape[1], &q, &d0, &d1, name,
                            err) != 0)
            return folo_fail_prefix(err, "--group-size %d", r->params.group_size);
    }
    int64_t d0, d1;
    q.bits = o->lm_head_bits;
    if (o->lm_head_bits && folo_gptq_shape(FOLO_GPTQ_QWEIGHT, c->vocab_size, c->hidden_size, &q,
                                           &d0, &d1, "lm_head", err) != 0)
        return folo_fail_prefix(err, "--lm-head");
    return 0;
}

/* ---- calibration --------------------------------------------------------------- */

static const folo_batch *window_batch(quant_run *r, int s) {
    const int32_t *ids = r->calib.ids + (size_t)s * r->calib.seq_len;
    /* Never committed: every window starts again at position 0, slot 0. */
    r->batch = *folo_single_seq_step(&r->seq, ids, r->calib.seq_len, false);
    r->batch.n_logit_rows = 0;
    return &r->batch;
}

static float *window_x(const quant_run *r, int s) {
    return r->x + (size_t)s * r->calib.seq_len * r->src->config.hidden_size;
}

/* Writes what a dump holds for one tap: "x" [rows, K]. */
static int dump_tap(quant_run *r, int layer, folo_cpu_tap tap, int K, folo_error *err) {
    char name[64];
    if (layer == r->src->config.n_layers) snprintf(name, sizeof name, "lm_head.safetensors");
    else snprintf(name, sizeof name, "layer.%d.%s.safetensors", layer, k_tap_names[tap]);
    char *path = folo_path_join(r->o->dump_dir, name);
    folo_st_tensor t = {.name = "x", .dtype = FOLO_DTYPE_F32, .n_dims = 2,
                        .shape = {(int64_t)r->calib.n_samples * r->calib.seq_len, K}};
    const void *data = r->dump;
    int rc = folo_st_write(path, &t, &data, 1, err);
    free(path);
    return rc;
}

/* h = the Hessian of the input at `tap` ([rows, K]) over every window; at
 * layer n_layers (after the last; tap ignored), of lm_head's input, the
 * final norm's output. */
static int collect(quant_run *r, int layer, folo_cpu_tap tap, int K, folo_hessian *h,
                   folo_error *err) {
    if (folo_hessian_init(h, K, r->la, err) != 0) return -1;
    int L = r->calib.seq_len;
    bool head = layer == r->src->config.n_layers;
    for (int s = 0; s < r->calib.n_samples; s++) {
        const folo_batch *batch = window_batch(r, s);
        const float *in = head ? folo_cpu_final_norm(r->backend, batch, window_x(r, s), err)
                               : folo_cpu_layer_run(r->backend, batch, layer, tap,
                                                    window_x(r, s), err);
        if (!in) return -1;
        folo_hessian_add(h, in, L);
        if (r->dump) memcpy(r->dump + (size_t)s * L * K, in, (size_t)L * K * sizeof(float));
    }
    folo_hessian_finish(h);
    return r->dump ? dump_tap(r, layer, tap, K, err) : 0;
}

/* Every window's hidden states through a whole half of the layer. */
static int advance(quant_run *r, int layer, folo_cpu_tap half, folo_error *err) {
    for (int s = 0; s < r->calib.n_samples; s++)
        if (!folo_cpu_layer_run(r->backend, window_batch(r, s), layer, half, window_x(r, s), err))
            return -1;
    return 0;
}

static int start_calibration(quant_run *r, folo_error *err) {
    const folo_quantize_opts *o = r->o;
    const folo_config *c = &r->src->config;
    folo_tokenizer *tok = folo_tokenizer_load(o->model_dir, err);
    if (!tok) return -1;
    int rc = folo_calib_load(&r->calib, o->calib_path, tok, o->n_samples, o->seq_len, o->seed,
                             err);
    folo_tokenizer_free(tok);
    if (rc != 0) return -1;
    size_t n_ids = (size_t)r->calib.n_samples * r->calib.seq_len;
    for (size_t i = 0; i < n_ids; i++)
        if (r->calib.ids[i] >= c->vocab_size)
            return folo_fail(err, "%s: the tokenizer gives token id %d, outside the model's "
                             "vocabulary of %d", o->calib_path, r->calib.ids[i], c->vocab_size);
    folo_log(FOLO_LOG_INFO, "quantize: calibration: %d windows of %d tokens from %s (%lld tokens)",
             r->calib.n_samples, r->calib.seq_len, o->calib_path, (long long)r->calib.n_stream);

    /* in place: quantize_linear swaps the view's tables as it goes */
    folo_backend_options bo = {.n_threads = o->n_threads, .kv_block_size = CALIB_BLOCK_SIZE,
                               .max_batch_tokens = r->calib.seq_len, .weights_in_place = true};
    bo.kv_n_blocks = folo_single_seq_blocks(r->calib.seq_len, CALIB_BLOCK_SIZE);
    r->backend = folo_backend_cpu_create(&r->view, &bo, err);
    if (!r->backend) return -1;
    folo_single_seq_init(&r->seq, r->calib.seq_len, CALIB_BLOCK_SIZE);
    size_t x_bytes = n_ids * (size_t)c->hidden_size * sizeof(float);
    r->x = folo_alloc_large(x_bytes);
    if (!r->x)
        return folo_fail(err, "cannot allocate %zu bytes for the hidden states of %zu "
                         "calibration tokens", x_bytes, n_ids);
    if (o->dump_dir) {
        int K_max = c->intermediate_size > c->n_heads * c->head_dim
                        ? c->intermediate_size : c->n_heads * c->head_dim;
        K_max = K_max > c->hidden_size ? K_max : c->hidden_size;
        r->dump = folo_alloc_large(n_ids * (size_t)K_max * sizeof(float));
        if (!r->dump) return folo_fail(err, "cannot allocate the dump of the calibration inputs");
        char *path = folo_path_join(o->dump_dir, "calib_ids.safetensors");
        folo_st_tensor t = {.name = "input_ids", .dtype = FOLO_DTYPE_I32, .n_dims = 2,
                            .shape = {r->calib.n_samples, r->calib.seq_len}};
        const void *data = r->calib.ids;
        rc = folo_mkdir_p(o->dump_dir, err);
        if (rc == 0) rc = folo_st_write(path, &t, &data, 1, err);
        free(path);
        if (rc != 0) return -1;
    }
    for (int s = 0; s < r->calib.n_samples; s++)
        if (folo_cpu_embed(r->backend, window_batch(r, s), window_x(r, s), err) != 0) return -1;
    return 0;
}

/* ---- one layer ------------------------------------------------------------------- */

/* Quantizes linear `id` of `layer` against H (NULL: none), writes it, and
 * lets the following steps run on its dequantized weights. */
static int quantize_linear(quant_run *r, int layer, folo_linear_id id, const double *H,
                           folo_error *err) {
    folo_tensor *t = folo_layer_linear(&r->layers[layer], id);
    char name[96];
    snprintf(name, sizeof name, "model.layers.%d.%s", layer, folo_linear_names[id]);
    folo_quant_result *res = &r->results[id];
    if (folo_quant_solve(res, &r->params, t, H, r->la, true, name, err) != 0) return -1;
    if (folo_qcheckpoint_put(&r->out, layer, id, res, !r->o->format_v2, err) != 0) return -1;
    *t = (folo_tensor){.data = res->dequant, .dtype = FOLO_DTYPE_F32, .n_dims = 2,
                       .shape = {res->N, res->K}};
    return 0;
}

/* Collects one Hessian and quantizes the linears [first, last] against it. */
static int quantize_step(quant_run *r, int layer, folo_cpu_tap tap, int K, folo_linear_id first,
                         folo_linear_id last, folo_error *err) {
    folo_hessian h;
    int rc = collect(r, layer, tap, K, &h, err);
    for (int id = first; rc == 0 && id <= (int)last; id++)
        rc = quantize_linear(r, layer, (folo_linear_id)id, h.h, err);
    folo_hessian_free(&h);
    return rc;
}

/* Quantizes the seven linears of `layer`; errors[id] is each one's relative
 * error (NaN without calibration). */
static int quantize_layer(quant_run *r, int layer, double *errors, folo_error *err) {
    const folo_config *c = &r->src->config;
    int rc = 0;
    if (!r->backend) {
        for (int id = 0; rc == 0 && id < FOLO_N_LINEARS; id++)
            rc = quantize_linear(r, layer, (folo_linear_id)id, NULL, err);
    } else {
        int H = c->hidden_size;
        rc = quantize_step(r, layer, FOLO_CPU_TAP_QKV, H, FOLO_LINEAR_Q, FOLO_LINEAR_V, err);
        if (rc == 0)
            rc = quantize_step(r, layer, FOLO_CPU_TAP_O, c->n_heads * c->head_dim,
                               FOLO_LINEAR_O, FOLO_LINEAR_O, err);
        if (rc == 0) rc = advance(r, layer, FOLO_CPU_TAP_ATTENTION, err);
        if (rc == 0)
            rc = quantize_step(r, layer, FOLO_CPU_TAP_GATE_UP, H, FOLO_LINEAR_GATE, FOLO_LINEAR_UP,
                               err);
        if (rc == 0)
            rc = quantize_step(r, layer, FOLO_CPU_TAP_DOWN, c->intermediate_size,
                               FOLO_LINEAR_DOWN, FOLO_LINEAR_DOWN, err);
        if (rc == 0) rc = advance(r, layer, FOLO_CPU_TAP_MLP, err);
    }
    /* The layer is behind us: its dequantized weights go, and its table
     * points at the source again rather than at freed memory. */
    for (int id = 0; id < FOLO_N_LINEARS; id++) {
        errors[id] = r->results[id].rel_error;
        folo_quant_result_free(&r->results[id]);
    }
    r->layers[layer] = r->src->layers[layer];
    return rc;
}

/* Quantizes lm_head [V, H] (--lm-head), tied to the embedding or not, on
 * the final norm's output of the hidden states through every quantized
 * layer, and writes it. No step runs on it later, so its Ŵ is not kept:
 * the solver goes through its rows a chunk at a time. *error: its relative
 * error (NaN without calibration). */
static int quantize_head(quant_run *r, double *error, folo_error *err) {
    const folo_config *c = &r->src->config;
    folo_hessian h = {0};
    folo_quant_result res = {0};
    folo_quant_params params = r->params;
    params.bits = r->o->lm_head_bits;
    int rc = r->backend ? collect(r, c->n_layers, FOLO_CPU_TAP_QKV, c->hidden_size, &h, err) : 0;
    if (rc == 0)
        rc = folo_quant_solve(&res, &params, &r->src->lm_head, r->backend ? h.h : NULL, r->la,
                              false, "lm_head", err);
    folo_hessian_free(&h);
    if (rc == 0) rc = folo_qcheckpoint_put_head(&r->out, &res, !r->o->format_v2, err);
    *error = res.rel_error;
    folo_quant_result_free(&res);
    return rc;
}

/* "q 1.23e-02  k ..." of the layer just quantized, or "" without errors. */
static void format_errors(const quant_run *r, const double *errors, char *out, size_t cap) {
    out[0] = '\0';
    if (!r->backend) return;
    size_t len = (size_t)snprintf(out, cap, "; ‖WX−ŴX‖²/‖WX‖²:");
    for (int id = 0; id < FOLO_N_LINEARS && len < cap; id++)
        len += (size_t)snprintf(out + len, cap - len, " %s %.3e", folo_linear_short_names[id],
                                errors[id]);
}

/* ---- the whole model --------------------------------------------------------------- */

static void run_free(quant_run *r) {
    for (int id = 0; id < FOLO_N_LINEARS; id++) folo_quant_result_free(&r->results[id]);
    folo_free_large(r->x);
    folo_free_large(r->dump);
    if (r->backend) folo_single_seq_free(&r->seq);
    folo_backend_destroy(r->backend);
    folo_calib_free(&r->calib);
    if (r->out_open) folo_qcheckpoint_free(&r->out);
    free(r->layers);
    folo_model_free(r->src);
}

int folo_quantize(const folo_quantize_opts *o, folo_error *err) {
    double start_s = folo_now_s();
    quant_run r = {.o = o, .params = o->params};
    r.params.min_zero_one = !o->format_v2;
    folo_model *src = folo_model_load(o->model_dir, err);
    if (!src) return -1;
    r.src = src;
    int rc = check(&r, err);
    if (rc != 0) {
        run_free(&r);
        return -1;
    }
    const folo_config *c = &src->config;
    r.layers = folo_calloc((size_t)c->n_layers, sizeof *r.layers);
    memcpy(r.layers, src->layers, (size_t)c->n_layers * sizeof *r.layers);
    r.view = *src;
    r.view.layers = r.layers;
    if (r.params.method == FOLO_QUANT_GPTQ || o->calib_path) {
        r.la = folo_linalg_get(err);
        if (!r.la) rc = -1;
        else if (o->n_threads > 0 && r.la->set_threads) r.la->set_threads(o->n_threads);
    }
    if (rc == 0 && !r.params.sym && !o->format_v2)
        folo_log(FOLO_LOG_WARN, "quantize: GPTQModel 7 refuses asymmetric checkpoints in format "
                 "gptq (which cannot store a zero of 0); folo loads them, and GPTQModel loads "
                 "--format gptq_v2");
    if (rc == 0 && o->calib_path) rc = start_calibration(&r, err);
    if (rc == 0) {
        rc = folo_qcheckpoint_open(&r.out, o->out_dir, src, r.params.bits, r.params.group_size,
                                   o->lm_head_bits, err);
        r.out_open = true;
    }
    for (int l = 0; rc == 0 && l < c->n_layers; l++) {
        double layer_start_s = folo_now_s(), errors[FOLO_N_LINEARS];
        rc = quantize_layer(&r, l, errors, err);
        if (rc != 0) break;
        char text[256];
        format_errors(&r, errors, text, sizeof text);
        double now_s = folo_now_s();
        folo_log(FOLO_LOG_INFO, "quantize: layer %d/%d in %.1f s (%.1f s in all)%s", l + 1,
                 c->n_layers, now_s - layer_start_s, now_s - start_s, text);
    }
    if (rc == 0 && o->lm_head_bits) {
        double head_start_s = folo_now_s(), error;
        rc = quantize_head(&r, &error, err);
        char text[96] = "";
        if (r.backend) snprintf(text, sizeof text, "; ‖WX−ŴX‖²/‖WX‖²: lm_head %.3e", error);
        double now_s = folo_now_s();
        if (rc == 0)
            folo_log(FOLO_LOG_INFO, "quantize: lm_head [%d, %d] (%d-bit) in %.1f s (%.1f s in "
                     "all)%s", c->vocab_size, c->hidden_size, o->lm_head_bits,
                     now_s - head_start_s, now_s - start_s, text);
    }
    folo_qcheckpoint_info info = {.params = r.params, .format_v2 = o->format_v2,
                                  .calib_path = o->calib_path, .n_samples = o->n_samples,
                                  .seq_len = o->seq_len, .seed = o->seed};
    if (rc == 0) rc = folo_qcheckpoint_finish(&r.out, &info, err);
    if (rc == 0)
        folo_log(FOLO_LOG_INFO, "quantize: wrote %s: %d linears%s, %s, group size %d, %s%s, "
                 "format %s, in %.1f s", o->out_dir, c->n_layers * FOLO_N_LINEARS,
                 !o->lm_head_bits ? "" : o->lm_head_bits == 8 ? " and lm_head (8-bit)" : " and lm_head",
                 r.params.method == FOLO_QUANT_GPTQ ? "GPTQ" : "round-to-nearest",
                 r.params.group_size, r.params.sym ? "symmetric" : "asymmetric",
                 r.params.desc_act ? ", act-order" : "", o->format_v2 ? "gptq_v2" : "gptq",
                 folo_now_s() - start_s);
    run_free(&r);
    return rc;
}
