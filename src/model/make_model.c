/* Writing a synthetic Qwen3 checkpoint; see make_model.h.
 *
 * The tensors are planned first (names, shapes, which init), split across
 * shards, and each shard is streamed to disk: the threads of a pool take
 * fixed 64K-element chunks from a shared counter, draw the chunk's normals
 * into a private buffer, convert them to the target dtype and pwrite them in
 * place. Memory stays at one chunk per thread whatever the model size. */
#include "model/make_model.h"

#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/file.h"
#include "core/log.h"
#include "core/threadpool.h"
#include "core/timer.h"
#include "model/hf_dir.h"
#include "model/safetensors.h"

/* ------------------------------------------------------------------ presets */

typedef struct {
    const char *name;
    int hidden_size, intermediate_size, n_layers, n_heads, n_kv_heads, head_dim, vocab_size;
    int max_position_embeddings;
    double rope_theta, rms_norm_eps;
} preset;

static const preset k_presets[] = {
    {"tiny", 64, 192, 2, 4, 2, 16, 151936, 40960, 1e6, 1e-6},
    {"qwen3-0.6b", 1024, 3072, 28, 16, 8, 128, 151936, 40960, 1e6, 1e-6},
};
#define N_PRESETS (sizeof k_presets / sizeof k_presets[0])

const char *const folo_make_model_presets[] = {"tiny", "qwen3-0.6b", NULL};

static const preset *find_preset(const char *name) {
    for (size_t i = 0; i < N_PRESETS; i++)
        if (name && strcmp(k_presets[i].name, name) == 0) return &k_presets[i];
    return NULL;
}

int folo_make_model_has_preset(const char *name) { return find_preset(name) != NULL; }

/* Token ids of Qwen3's tokenizer. */
enum { BOS_ID = 151643, EOS_ID = 151645 };

/* ----------------------------------------------------------- random numbers */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t hash_name(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/* out[0..n) = mean + std·N(0, 1), by Marsaglia's polar method (Box-Muller
 * without the sine and cosine). */
static void fill_normal(uint64_t *state, float *out, size_t n, float mean, float std) {
    for (size_t i = 0; i < n; i += 2) {
        float u, v, s;
        do {
            uint64_t r = splitmix64(state);
            /* two 24-bit uniforms on [-1, 1), exact in float */
            u = (float)((int64_t)(r >> 40) - (1 << 23)) * 0x1p-23f;
            v = (float)((int64_t)(r & 0xffffff) - (1 << 23)) * 0x1p-23f;
            s = u * u + v * v;
        } while (s >= 1.0f || s == 0.0f);
        float m = sqrtf(-2.0f * logf(s) / s);
        out[i] = mean + std * u * m;
        if (i + 1 < n) out[i + 1] = mean + std * v * m;
    }
}

/* ------------------------------------------------------------ the tensors */

#define CHUNK_ELEMS ((size_t)1 << 16)

typedef struct {
    folo_st_tensor st;       /* name owned here */
    size_t n_elems;
    float mean, std;         /* N(mean, std²) */
    int shard;
} planned_tensor;

static void plan_add(planned_tensor *plan, int *n, const char *name, int64_t d0, int64_t d1,
                     folo_dtype dtype) {
    planned_tensor *t = &plan[(*n)++];
    memset(t, 0, sizeof *t);
    t->st.name = folo_strdup(name);
    t->st.dtype = dtype;
    t->st.n_dims = d1 ? 2 : 1;
    t->st.shape[0] = d0;
    t->st.shape[1] = d1;
    t->n_elems = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    int is_norm = d1 == 0;
    t->mean = is_norm ? 1.0f : 0.0f;
    t->std = is_norm ? 0.1f : 0.02f;
}

/* The Qwen3 weight table of DESIGN §4, in forward order. Returns the count. */
static int plan_tensors(const preset *p, const folo_make_model_opts *o, planned_tensor *plan) {
    const int64_t H = p->hidden_size, I = p->intermediate_size, D = p->head_dim;
    const int64_t q_dim = p->n_heads * D, kv_dim = p->n_kv_heads * D;
    int n = 0;
    plan_add(plan, &n, "model.embed_tokens.weight", p->vocab_size, H, o->dtype);
    for (int l = 0; l < p->n_layers; l++) {
        const struct {
            const char *suffix;
            int64_t d0, d1;
        } layer[] = {
            {"input_layernorm.weight", H, 0},     {"self_attn.q_proj.weight", q_dim, H},
            {"self_attn.k_proj.weight", kv_dim, H}, {"self_attn.v_proj.weight", kv_dim, H},
            {"self_attn.q_norm.weight", D, 0},    {"self_attn.k_norm.weight", D, 0},
            {"self_attn.o_proj.weight", H, q_dim}, {"post_attention_layernorm.weight", H, 0},
            {"mlp.gate_proj.weight", I, H},       {"mlp.up_proj.weight", I, H},
            {"mlp.down_proj.weight", H, I},
        };
        for (size_t k = 0; k < sizeof layer / sizeof layer[0]; k++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, layer[k].suffix);
            plan_add(plan, &n, name, layer[k].d0, layer[k].d1, o->dtype);
        }
    }
    plan_add(plan, &n, "model.norm.weight", H, 0, o->dtype);
    if (o->untied) plan_add(plan, &n, "lm_head.weight", p->vocab_size, H, o->dtype);
    return n;
}

/* ------------------------------------------------------- filling a shard */

typedef struct {
    int tensor;              /* index into the shard's writer */
    size_t chunk;            /* chunk index within the tensor */
} work_item;

typedef struct {
    folo_st_writer *writer;
    const planned_tensor *const *tensors; /* [writer->n_tensors] */
    const work_item *items;  /* [n_items] */
    size_t n_items;
    _Atomic size_t next;     /* next item to take */
    _Atomic size_t done_elems;
    uint64_t seed;
    folo_progress *progress;
    double progress_base;    /* elements written by earlier shards */
    folo_error *errors;      /* [n_threads] */
    _Atomic int failed;
} fill_job;

static void fill_worker(void *ctx, int thread, int n_threads) {
    fill_job *job = ctx;
    float *values = folo_alloc_large(CHUNK_ELEMS * sizeof(float));   /* (CHUNK_ELEMS) */
    uint16_t *halves = folo_alloc_large(CHUNK_ELEMS * sizeof(uint16_t)); /* (CHUNK_ELEMS) */
    if (!values || !halves) {
        folo_fail(&job->errors[thread], "out of memory for a %zu-element chunk", CHUNK_ELEMS);
        job->failed = 1;
    }
    for (;;) {
        size_t k = atomic_fetch_add(&job->next, 1);
        if (job->failed || k >= job->n_items) break;
        const work_item *item = &job->items[k];
        const planned_tensor *t = job->tensors[item->tensor];
        size_t begin = item->chunk * CHUNK_ELEMS;
        size_t n = t->n_elems - begin < CHUNK_ELEMS ? t->n_elems - begin : CHUNK_ELEMS;
        uint64_t state = job->seed ^ hash_name(t->st.name);
        state = splitmix64(&state) ^ (item->chunk * 0xd1b54a32d192ed03ull);
        fill_normal(&state, values, n, t->mean, t->std);
        const void *bytes = values;
        if (t->st.dtype == FOLO_DTYPE_BF16) {
            for (size_t i = 0; i < n; i++) halves[i] = folo_f32_to_bf16(values[i]);
            bytes = halves;
        } else if (t->st.dtype == FOLO_DTYPE_F16) {
            for (size_t i = 0; i < n; i++) halves[i] = folo_f32_to_f16(values[i]);
            bytes = halves;
        }
        size_t elem = folo_dtype_size(t->st.dtype);
        if (folo_st_writer_put(job->writer, item->tensor, begin * elem, bytes, n * elem,
                               &job->errors[thread]) != 0) {
            job->failed = 1;
            break;
        }
        size_t done = atomic_fetch_add(&job->done_elems, n) + n;
        if (thread == 0) folo_progress_update(job->progress, job->progress_base + (double)done);
    }
    folo_free_large(values);
    folo_free_large(halves);
}

static int write_shard(const char *path, planned_tensor **tensors, int n_tensors, uint64_t seed,
                       folo_pool *pool, folo_progress *progress, double *elems_written,
                       folo_error *err) {
    folo_st_tensor *st = folo_calloc((size_t)n_tensors, sizeof *st);
    size_t n_items = 0;
    for (int i = 0; i < n_tensors; i++) {
        st[i] = tensors[i]->st;
        n_items += (tensors[i]->n_elems + CHUNK_ELEMS - 1) / CHUNK_ELEMS;
    }
    folo_st_writer writer;
    int rc = folo_st_writer_open(&writer, path, st, n_tensors, err);
    free(st);
    if (rc != 0) return -1;

    work_item *items = folo_calloc(n_items + 1, sizeof *items);
    size_t k = 0;
    for (int i = 0; i < n_tensors; i++)
        for (size_t c = 0; c * CHUNK_ELEMS < tensors[i]->n_elems; c++) items[k++] = (work_item){i, c};
    int n_threads = folo_pool_size(pool);
    fill_job job = {.writer = &writer, .tensors = (const planned_tensor *const *)tensors,
                    .items = items, .n_items = n_items, .seed = seed, .progress = progress,
                    .progress_base = *elems_written};
    job.errors = folo_calloc((size_t)n_threads, sizeof *job.errors);
    folo_pool_run(pool, fill_worker, &job);
    if (job.failed) {
        for (int t = 0; t < n_threads; t++)
            if (job.errors[t].message[0]) {
                *err = job.errors[t];
                break;
            }
        rc = -1;
    }
    *elems_written += (double)job.done_elems;
    free(job.errors);
    free(items);
    if (folo_st_writer_close(&writer, rc == 0 ? err : NULL) != 0) rc = -1;
    return rc;
}

/* ------------------------------------------------------------ JSON files */

static const char *torch_dtype_name(folo_dtype t) {
    return t == FOLO_DTYPE_BF16 ? "bfloat16" : t == FOLO_DTYPE_F16 ? "float16" : "float32";
}

/* Every field of the released Qwen3-0.6B config.json, in its spelling. */
static json_t *config_json(const preset *p, const folo_make_model_opts *o) {
    return json_pack(
        "{s:[s], s:b, s:f, s:i, s:i, s:i, s:s, s:i, s:f, s:i, s:i, s:i, s:s, s:i, s:i, s:i, s:f,"
        " s:n, s:f, s:n, s:b, s:s, s:s, s:b, s:b, s:i}",
        "architectures", "Qwen3ForCausalLM", "attention_bias", 0, "attention_dropout", 0.0,
        "bos_token_id", BOS_ID, "eos_token_id", EOS_ID, "head_dim", p->head_dim, "hidden_act",
        "silu", "hidden_size", p->hidden_size, "initializer_range", 0.02, "intermediate_size",
        p->intermediate_size, "max_position_embeddings", p->max_position_embeddings,
        "max_window_layers", p->n_layers, "model_type", "qwen3", "num_attention_heads", p->n_heads,
        "num_hidden_layers", p->n_layers, "num_key_value_heads", p->n_kv_heads, "rms_norm_eps",
        p->rms_norm_eps, "rope_scaling", "rope_theta", p->rope_theta, "sliding_window",
        "tie_word_embeddings", !o->untied, "torch_dtype", torch_dtype_name(o->dtype),
        "transformers_version", "4.51.0", "use_cache", 1, "use_sliding_window", 0, "vocab_size",
        p->vocab_size);
}

static json_t *generation_config_json(void) {
    return json_pack("{s:i, s:b, s:[i, i], s:i, s:f, s:i, s:f, s:s}", "bos_token_id", BOS_ID,
                     "do_sample", 1, "eos_token_id", EOS_ID, BOS_ID, "pad_token_id", BOS_ID,
                     "temperature", 0.6, "top_k", 20, "top_p", 0.95, "transformers_version",
                     "4.51.0");
}

static int write_index(const char *dir, planned_tensor *plan, int n_tensors, int n_shards,
                       size_t total_bytes, folo_error *err) {
    json_t *map = json_object();
    for (int i = 0; i < n_tensors; i++) {
        char shard[64];
        snprintf(shard, sizeof shard, "model-%05d-of-%05d.safetensors", plan[i].shard + 1, n_shards);
        json_object_set_new(map, plan[i].st.name, json_string(shard));
    }
    json_t *root = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total_bytes,
                             "weight_map", map);
    return folo_hf_write_json(dir, "model.safetensors.index.json", root, err);
}

/* -------------------------------------------------------------- make-model */

static int write_weights(const folo_make_model_opts *o, planned_tensor *plan, int n_tensors,
                         folo_error *err) {
    size_t total_elems = 0;
    for (int i = 0; i < n_tensors; i++) {
        /* contiguous runs of tensors per shard, balanced by count */
        plan[i].shard = (int)((int64_t)i * o->n_shards / n_tensors);
        total_elems += plan[i].n_elems;
    }
    folo_pool *pool = folo_pool_create(o->n_threads);
    folo_progress progress;
    folo_progress_begin(&progress, "make-model", (double)total_elems);
    planned_tensor **members = folo_calloc((size_t)n_tensors, sizeof *members);
    double written = 0;
    int rc = 0;
    for (int s = 0; rc == 0 && s < o->n_shards; s++) {
        int n = 0;
        for (int i = 0; i < n_tensors; i++)
            if (plan[i].shard == s) members[n++] = &plan[i];
        char name[64];
        if (o->n_shards == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, o->n_shards);
        char *path = folo_path_join(o->out_dir, name);
        rc = write_shard(path, members, n, o->seed, pool, &progress, &written, err);
        free(path);
    }
    if (rc == 0) folo_progress_end(&progress);
    else if (progress.is_tty) fputc('\n', stderr);
    free(members);
    folo_pool_destroy(pool);
    return rc;
}

int folo_make_model(const folo_make_model_opts *o, folo_error *err) {
    const preset *p = find_preset(o->preset);
    if (!p) return folo_fail(err, "unknown preset '%s'", o->preset ? o->preset : "(null)");
    if (o->dtype != FOLO_DTYPE_F32 && o->dtype != FOLO_DTYPE_F16 && o->dtype != FOLO_DTYPE_BF16)
        return folo_fail(err, "dtype %s is not a float type", folo_dtype_name(o->dtype));
    double start_s = folo_now_s();

    int max_tensors = 3 + 11 * p->n_layers;
    planned_tensor *plan = folo_calloc((size_t)max_tensors, sizeof *plan);
    int n_tensors = plan_tensors(p, o, plan);
    size_t total_bytes = 0, n_params = 0;
    for (int i = 0; i < n_tensors; i++) {
        total_bytes += plan[i].n_elems * folo_dtype_size(o->dtype);
        n_params += plan[i].n_elems;
    }
    int rc = 0;
    if (o->n_shards < 1 || o->n_shards > n_tensors)
        rc = folo_fail(err, "--shards %d: the %s preset has %d tensors, so 1 to %d shards", o->n_shards,
                       p->name, n_tensors, n_tensors);
    /* config.json goes first and comes back last: until then the directory
     * does not read as a finished model. */
    if (rc == 0) rc = folo_mkdir_p(o->out_dir, err);
    if (rc == 0) rc = folo_hf_remove_stale(o->out_dir, "config.json", err);
    if (rc == 0) rc = folo_hf_remove_stale(o->out_dir, "model.safetensors.index.json", err);
    if (rc == 0 && o->n_shards > 1)
        rc = folo_hf_remove_stale(o->out_dir, "model.safetensors", err);
    if (rc == 0) rc = folo_hf_copy_tokenizer(o->tokenizer_dir, o->out_dir, err);
    if (rc == 0) rc = write_weights(o, plan, n_tensors, err);
    if (rc == 0 && o->n_shards > 1)
        rc = write_index(o->out_dir, plan, n_tensors, o->n_shards, total_bytes, err);
    if (rc == 0)
        rc = folo_hf_write_json(o->out_dir, "generation_config.json", generation_config_json(),
                                err);
    if (rc == 0) rc = folo_hf_write_json(o->out_dir, "config.json", config_json(p, o), err);
    if (rc == 0)
        folo_log(FOLO_LOG_INFO, "wrote %s: %s preset, %.1fM parameters, %.2f GB %s, %d file(s), %.1f s",
                 o->out_dir, p->name, (double)n_params / 1e6, (double)total_bytes / 1e9,
                 folo_dtype_name(o->dtype), o->n_shards, folo_now_s() - start_s);
    for (int i = 0; i < n_tensors; i++) free(plan[i].st.name);
    free(plan);
    return rc;
}
