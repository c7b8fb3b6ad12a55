/* Loading a Qwen3 checkpoint; see model.h.
 *
 * The steps: config.json and generation_config.json; then the safetensors
 * file(s) are mapped read-only and their headers validated (a sharded
 * checkpoint names its files in model.safetensors.index.json's weight_map);
 * then every tensor DESIGN §4 needs is looked up, its dtype and shape
 * checked against the config, and bound as a pointer into its mapping.
 * Nothing is copied but GPTQ linears, repacked by gptq.c: the model owns
 * the mappings and the repacked copies and frees them last. */
#include "model/model.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/file.h"
#include "core/log.h"
#include "core/timer.h"
#include "model/gptq.h"
#include "model/safetensors.h"

const char *const folo_linear_names[FOLO_N_LINEARS] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
const char *const folo_linear_short_names[FOLO_N_LINEARS] = {"q",    "k",  "v",   "o",
                                                              "gate", "up", "down"};

folo_tensor *folo_layer_linear(const folo_layer_weights *w, folo_linear_id id) {
    const folo_tensor *const t[FOLO_N_LINEARS] = {&w->wq, &w->wk,     &w->wv,  &w->wo,
                                                  &w->w_gate, &w->w_up, &w->w_down};
    return (folo_tensor *)t[id];
}

size_t folo_tensor_bytes(const folo_tensor *t) {
    size_t n = folo_dtype_size(t->dtype);
    for (int d = 0; d < t->n_dims; d++) n *= (size_t)t->shape[d];
    return n;
}

struct folo_model_files {
    int n_files;
    folo_mapped_file *maps;   /* [n_files] */
    folo_st_header *headers;  /* [n_files], parsed from maps[i] */
};

/* Where tensors are looked up while loading. */
typedef struct {
    struct folo_model_files *files;
    const char *dir;          /* the model directory */
    json_t *weight_map;       /* name -> shard file name; NULL for a single file */
    const char *index_path;   /* for messages, when sharded */
    const char *bound_path;   /* the file of the last tensor bound */
    size_t weight_bytes;
    folo_error *err;
} loader;

/* Maps and parses one safetensors file as files->maps[n_files]. */
static int add_file(struct folo_model_files *files, const char *path, folo_error *err) {
    int i = files->n_files;
    files->maps = folo_realloc(files->maps, (size_t)(i + 1) * sizeof *files->maps);
    files->headers = folo_realloc(files->headers, (size_t)(i + 1) * sizeof *files->headers);
    if (folo_file_map(&files->maps[i], path, err) != 0) return -1;
    if (folo_st_parse(&files->headers[i], files->maps[i].data, files->maps[i].size, path, err) != 0) {
        folo_file_unmap(&files->maps[i]);
        return -1;
    }
    files->n_files++;
    return 0;
}

static int file_index(const struct folo_model_files *files, const char *path) {
    for (int i = 0; i < files->n_files; i++)
        if (strcmp(files->maps[i].path, path) == 0) return i;
    return -1;
}

/* Reads model.safetensors.index.json and maps every shard its weight_map
 * names, in order of first mention. */
static int open_shards(loader *ld, const char *index_path) {
    folo_error *err = ld->err;
    char *text = folo_file_read(index_path, NULL, err);
    if (!text) return -1;
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    free(text);
    if (!root)
        return folo_fail(err, "%s: not valid JSON: %s (line %d, column %d)", index_path, jerr.text,
                         jerr.line, jerr.column);
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        json_decref(root);
        return folo_fail(err, "%s: \"weight_map\" is missing or not an object", index_path);
    }
    ld->weight_map = json_incref(map);
    json_decref(root);

    const char *name;
    json_t *file;
    json_object_foreach(map, name, file) {
        const char *shard = json_string_value(file);
        if (!shard || !*shard || strchr(shard, '/') || strcmp(shard, "..") == 0 ||
            strcmp(shard, ".") == 0)
            return folo_fail(err, "%s: weight_map entry for '%s' is not a file name in the model "
                             "directory", index_path, name);
        char *path = folo_path_join(ld->dir, shard);
        int rc = 0;
        if (file_index(ld->files, path) < 0) {
            if (!folo_file_exists(path))
                rc = folo_fail(err, "%s: shard named in model.safetensors.index.json is missing",
                               path);
            else
                rc = add_file(ld->files, path, err);
        }
        free(path);
        if (rc != 0) return -1;
    }
    if (ld->files->n_files == 0) return folo_fail(err, "%s: \"weight_map\" is empty", index_path);
    return 0;
}

/* Finds `name`; on success *file is the index of the file holding it. */
static const folo_st_tensor *find_tensor(loader *ld, const char *name, int *file) {
    if (!ld->weight_map) {
        *file = 0;
        const folo_st_tensor *t = folo_st_find(&ld->files->headers[0], name);
        if (!t) folo_fail(ld->err, "%s: missing tensor '%s'", ld->files->maps[0].path, name);
        return t;
    }
    const char *shard = json_string_value(json_object_get(ld->weight_map, name));
    if (!shard) {
        folo_fail(ld->err, "%s: weight_map has no tensor '%s'", ld->index_path, name);
        return NULL;
    }
    char *path = folo_path_join(ld->dir, shard);
    *file = file_index(ld->files, path);
    free(path);
    FOLO_ASSERT(*file >= 0); /* open_shards mapped every file the weight_map names */
    const folo_st_tensor *t = folo_st_find(&ld->files->headers[*file], name);
    if (!t)
        folo_fail(ld->err, "%s: missing tensor '%s' (model.safetensors.index.json places it here)",
                  ld->files->maps[*file].path, name);
    return t;
}

static void format_shape(char *out, size_t cap, int n_dims, const int64_t *shape) {
    size_t len = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < n_dims && len < cap; d++)
        len += (size_t)snprintf(out + len, cap - len, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (len < cap) snprintf(out + len, cap - len, "]");
}

/* Looks up `name`, checks it is a float tensor (an I32 one when int32) of
 * shape [d0] (d1 == 0) or [d0, d1], and points *out at its bytes. */
static int bind_typed(loader *ld, folo_tensor *out, const char *name, int64_t d0, int64_t d1,
                      bool int32) {
    int file;
    const folo_st_tensor *t = find_tensor(ld, name, &file);
    if (!t) return -1;
    const char *path = ld->files->maps[file].path;
    ld->bound_path = path;
    if (int32 && t->dtype != FOLO_DTYPE_I32)
        return folo_fail(ld->err, "%s: tensor '%s' has dtype %s; GPTQ stores it as I32", path,
                         name, folo_dtype_name(t->dtype));
    if (!int32 && t->dtype != FOLO_DTYPE_F32 && t->dtype != FOLO_DTYPE_F16 &&
        t->dtype != FOLO_DTYPE_BF16)
        return folo_fail(ld->err, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
                         path, name, folo_dtype_name(t->dtype));
    int64_t want[2] = {d0, d1};
    int want_dims = d1 ? 2 : 1;
    if (t->n_dims != want_dims || t->shape[0] != d0 || (want_dims == 2 && t->shape[1] != d1)) {
        char got_s[160], want_s[64];
        format_shape(got_s, sizeof got_s, t->n_dims, t->shape);
        format_shape(want_s, sizeof want_s, want_dims, want);
        return folo_fail(ld->err, "%s: tensor '%s' has shape %s, expected %s", path, name, got_s,
                         want_s);
    }
    /* The kernels read elements in place, so each must be naturally aligned
     * (the mapping is page-aligned; the reference writer keeps offsets so). */
    if (t->offset % folo_dtype_size(t->dtype) != 0)
        return folo_fail(ld->err, "%s: tensor '%s' data is not aligned to its %zu-byte elements",
                         path, name, folo_dtype_size(t->dtype));
    memset(out, 0, sizeof *out);
    out->data = ld->files->maps[file].data + t->offset;
    out->dtype = t->dtype;
    out->n_dims = t->n_dims;
    memcpy(out->shape, t->shape, sizeof t->shape[0] * (size_t)t->n_dims);
    ld->weight_bytes += t->bytes;
    return 0;
}

static int bind(loader *ld, folo_tensor *out, const char *name, int64_t d0, int64_t d1) {
    return bind_typed(ld, out, name, d0, d1, false);
}

/* Binds the GPTQ linear `prefix` (prefix.qweight, .qzeros, .scales, .g_idx)
 * of shape [N, K], repacked into the model's next qlinear, at the bits and
 * groups the checkpoint's rules give it (folo_quant_for); a module a "-:"
 * rule excludes is the float prefix.weight. */
static int bind_gptq(loader *ld, folo_model *m, folo_tensor *out, const char *prefix, int64_t N,
                     int64_t K) {
    folo_quant_config module;
    const folo_quant_config *q = &module;
    if (!folo_quant_for(&m->config.quant, prefix, &module)) {
        char name[160];
        snprintf(name, sizeof name, "%s.weight", prefix);
        return bind(ld, out, name, N, K);
    }
    folo_tensor parts[FOLO_GPTQ_PARTS];
    char name[160];
    size_t stored_bytes = ld->weight_bytes;
    for (int p = 0; p < FOLO_GPTQ_PARTS; p++) {
        int64_t d0, d1;
        if (folo_gptq_shape(p, N, K, q, &d0, &d1, prefix, ld->err) != 0) return -1;
        snprintf(name, sizeof name, "%s.%s", prefix, folo_gptq_suffixes[p]);
        if (bind_typed(ld, &parts[p], name, d0, d1, p != FOLO_GPTQ_SCALES) != 0) return -1;
    }
    folo_qlinear *l = &m->qlinears[m->n_qlinears];
    if (folo_gptq_repack(l, parts, q, name, ld->bound_path, ld->err) != 0) return -1;
    m->n_qlinears++;
    /* What a forward reads is the repacked copy, not the stored tensors. */
    ld->weight_bytes = stored_bytes + l->bytes;
    memset(out, 0, sizeof *out);
    out->quant = l;
    out->dtype = FOLO_DTYPE_I32;
    out->n_dims = 2;
    out->shape[0] = N;
    out->shape[1] = K;
    return 0;
}

static int bind_layer(loader *ld, folo_model *m, int l, folo_layer_weights *w) {
    const folo_config *c = &m->config;
    const int64_t H = c->hidden_size, I = c->intermediate_size, D = c->head_dim;
    const int64_t q_dim = (int64_t)c->n_heads * D, kv_dim = (int64_t)c->n_kv_heads * D;
    const struct {
        folo_tensor *dst;
        const char *suffix;
        int64_t d0, d1;
    } table[] = {
        {&w->input_norm, "input_layernorm.weight", H, 0},
        {&w->wq, "self_attn.q_proj.weight", q_dim, H},
        {&w->wk, "self_attn.k_proj.weight", kv_dim, H},
        {&w->wv, "self_attn.v_proj.weight", kv_dim, H},
        {&w->wo, "self_attn.o_proj.weight", H, q_dim},
        {&w->q_norm, "self_attn.q_norm.weight", D, 0},
        {&w->k_norm, "self_attn.k_norm.weight", D, 0},
        {&w->post_norm, "post_attention_layernorm.weight", H, 0},
        {&w->w_gate, "mlp.gate_proj.weight", I, H},
        {&w->w_up, "mlp.up_proj.weight", I, H},
        {&w->w_down, "mlp.down_proj.weight", H, I},
    };
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%d.%s", l, table[k].suffix);
        int rc;
        if (c->quant.gptq && table[k].d1 != 0) {
            /* A linear: "....q_proj.weight" is stored as "....q_proj.qweight" etc. */
            name[strlen(name) - strlen(".weight")] = '\0';
            rc = bind_gptq(ld, m, table[k].dst, name, table[k].d0, table[k].d1);
        } else {
            rc = bind(ld, table[k].dst, name, table[k].d0, table[k].d1);
        }
        if (rc != 0) return -1;
    }
    return 0;
}

static int load_weights(folo_model *m, loader *ld) {
    const folo_config *c = &m->config;
    const int64_t V = c->vocab_size, H = c->hidden_size;
    char *index_path = folo_path_join(m->dir, "model.safetensors.index.json");
    char *single_path = folo_path_join(m->dir, "model.safetensors");
    int rc;
    ld->index_path = index_path;
    if (folo_file_exists(index_path))
        rc = open_shards(ld, index_path);
    else if (!folo_file_exists(single_path))
        rc = folo_fail(ld->err, "%s: missing (and there is no model.safetensors.index.json)",
                       single_path);
    else
        rc = add_file(ld->files, single_path, ld->err);

    if (rc == 0) rc = bind(ld, &m->embed, "model.embed_tokens.weight", V, H);
    if (rc == 0) rc = bind(ld, &m->final_norm, "model.norm.weight", H, 0);
    double repack_start = folo_now_s();
    if (c->quant.gptq) /* 7 linears a layer and lm_head */
        m->qlinears = folo_calloc((size_t)c->n_layers * 7 + 1, sizeof *m->qlinears);
    if (rc == 0) {
        /* Tied: transformers reuses the embedding and ignores any stored head;
         * a quantized head is its own tensor whatever the tie says. */
        if (c->quant.lm_head) rc = bind_gptq(ld, m, &m->lm_head, "lm_head", V, H);
        else if (c->tie_word_embeddings) m->lm_head = m->embed;
        else rc = bind(ld, &m->lm_head, "lm_head.weight", V, H);
    }
    m->layers = folo_calloc((size_t)c->n_layers, sizeof *m->layers);
    for (int l = 0; rc == 0 && l < c->n_layers; l++) rc = bind_layer(ld, m, l, &m->layers[l]);
    m->weight_bytes = ld->weight_bytes;
    if (rc == 0 && c->quant.gptq) {
        int eight = 0;
        for (int i = 0; i < m->n_qlinears; i++) eight += m->qlinears[i].bits == 8;
        char mix[48] = "";
        if (eight) snprintf(mix, sizeof mix, ", %d of them 8-bit", eight);
        folo_log(FOLO_LOG_INFO, "gptq: repacked %d linears (%d-bit, group size %d%s%s) in %.2f s",
                 m->n_qlinears, c->quant.bits, c->quant.group_size,
                 c->quant.desc_act ? ", act-order" : "", mix, folo_now_s() - repack_start);
    }
    free(index_path);
    free(single_path);
    return rc;
}

folo_model *folo_model_load(const char *dir, folo_error *err) {
    folo_model *m = folo_calloc(1, sizeof *m);
    m->dir = folo_strdup(dir);
    m->files = folo_calloc(1, sizeof *m->files);
    loader ld = {.files = m->files, .dir = m->dir, .err = err};
    int rc = folo_config_load(&m->config, dir, err);
    if (rc == 0) rc = folo_generation_config_load(&m->generation, &m->config, dir, err);
    if (rc == 0) rc = load_weights(m, &ld);
    json_decref(ld.weight_map);
    if (rc != 0) {
        folo_model_free(m);
        return NULL;
    }
    return m;
}

void folo_model_free(folo_model *m) {
    if (!m) return;
    for (int i = 0; i < m->files->n_files; i++) {
        folo_st_header_free(&m->files->headers[i]);
        folo_file_unmap(&m->files->maps[i]);
    }
    free(m->files->maps);
    free(m->files->headers);
    free(m->files);
    for (int i = 0; i < m->n_qlinears; i++) folo_qlinear_free(&m->qlinears[i]);
    free(m->qlinears);
    free(m->layers);
    free(m->dir);
    free(m);
}
