/* config.json and generation_config.json; see config.h.
 *
 * Both spellings transformers has written are accepted: `torch_dtype` (4.x)
 * or `dtype` (5.x), and a top-level `rope_theta` (4.x) or
 * `rope_parameters.rope_theta` (5.x). Anything the forward pass of DESIGN §4
 * cannot honour (biases, sliding windows, scaled RoPE, another activation or
 * architecture) is refused by name instead of being silently computed wrong. */
#include "model/config.h"

#include <jansson.h>
#include <limits.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/file.h"

/* The JSON object being read and the file it came from, for messages. */
typedef struct {
    const json_t *root;
    const char *path;
    folo_error *err;
} json_fields;

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* A field that is absent or null reads as absent. */
static const json_t *field(const json_fields *f, const char *key) {
    const json_t *v = json_object_get(f->root, key);
    return json_is_null(v) ? NULL : v;
}

static int missing(const json_fields *f, const char *key) {
    return folo_fail(f->err, "%s: required field \"%s\" is missing", f->path, key);
}

/* An integer in [lo, hi]; `def` when absent and not required. */
static int read_int(const json_fields *f, const char *key, int required, int def, long lo, long hi,
                    int *out) {
    const json_t *v = field(f, key);
    if (!v) {
        if (required) return missing(f, key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return folo_fail(f->err, "%s: \"%s\" must be an integer, got %s", f->path, key, json_kind(v));
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return folo_fail(f->err, "%s: \"%s\" is %lld, expected an integer in [%ld, %ld]", f->path,
                         key, (long long)x, lo, hi);
    *out = (int)x;
    return 0;
}

/* A finite number (integer or real); `def` when absent. */
static int read_number(const json_fields *f, const char *key, double def, double *out) {
    const json_t *v = field(f, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return folo_fail(f->err, "%s: \"%s\" must be a finite number, got %s", f->path, key,
                         json_kind(v));
    *out = json_number_value(v);
    return 0;
}

/* A number in (lo, hi] or [lo, hi] (lo_open picks), `def` when absent. */
static int read_ranged(const json_fields *f, const char *key, double def, double lo, int lo_open,
                       double hi, float *out) {
    double x;
    if (read_number(f, key, def, &x) != 0) return -1;
    if ((lo_open ? !(x > lo) : !(x >= lo)) || !(x <= hi))
        return folo_fail(f->err, "%s: \"%s\" is %g, expected a number in %c%g, %g]", f->path, key, x,
                         lo_open ? '(' : '[', lo, hi);
    *out = (float)x;
    return 0;
}

static int read_bool(const json_fields *f, const char *key, bool def, bool *out) {
    const json_t *v = field(f, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return folo_fail(f->err, "%s: \"%s\" must be true or false, got %s", f->path, key,
                         json_kind(v));
    *out = json_is_true(v);
    return 0;
}

/* `key` may be absent, or a string equal to `expected`. */
static int require_string(const json_fields *f, const char *key, const char *expected) {
    const json_t *v = field(f, key);
    if (!v) return 0;
    if (!json_is_string(v))
        return folo_fail(f->err, "%s: \"%s\" must be a string, got %s", f->path, key, json_kind(v));
    if (strcmp(json_string_value(v), expected) != 0)
        return folo_fail(f->err, "%s: \"%s\" is \"%s\"; only \"%s\" is supported", f->path, key,
                         json_string_value(v), expected);
    return 0;
}

/* eos_token_id: an integer or a list of integers, each in [0, vocab_size). */
static int read_token_list(const json_fields *f, const char *key, int vocab_size, int *ids, int *n) {
    const json_t *v = field(f, key);
    if (!v) return 0;
    json_t *list;
    if (json_is_integer(v)) list = json_pack("[O]", (json_t *)v);
    else if (json_is_array(v)) list = json_incref((json_t *)v);
    else return folo_fail(f->err, "%s: \"%s\" must be an integer or a list of integers, got %s",
                          f->path, key, json_kind(v));
    int rc = 0;
    size_t count = json_array_size(list);
    if (count > FOLO_MAX_EOS)
        rc = folo_fail(f->err, "%s: \"%s\" lists %zu ids (at most %d supported)", f->path, key,
                       count, FOLO_MAX_EOS);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        const json_t *id = json_array_get(list, i);
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= vocab_size)
            rc = folo_fail(f->err, "%s: \"%s\"[%zu] must be a token id in [0, %d)", f->path, key, i,
                           vocab_size);
        else ids[i] = (int)json_integer_value(id);
    }
    if (rc == 0) *n = (int)count;
    json_decref(list);
    return rc;
}

static int parse_dtype(const json_fields *f, folo_dtype *out) {
    const char *key = field(f, "dtype") ? "dtype" : "torch_dtype";
    const json_t *v = field(f, key);
    *out = FOLO_DTYPE_F32; /* transformers' default when nothing is declared */
    if (!v) return 0;
    static const struct {
        const char *name;
        folo_dtype dtype;
    } names[] = {{"bfloat16", FOLO_DTYPE_BF16}, {"float16", FOLO_DTYPE_F16},
                 {"half", FOLO_DTYPE_F16},      {"float32", FOLO_DTYPE_F32},
                 {"float", FOLO_DTYPE_F32}};
    if (json_is_string(v))
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strcmp(json_string_value(v), names[i].name) == 0) {
                *out = names[i].dtype;
                return 0;
            }
    return folo_fail(f->err, "%s: \"%s\" must be \"bfloat16\", \"float16\" or \"float32\"", f->path,
                     key);
}

/* RoPE: unscaled only. theta comes from the top level (transformers 4.x)
 * or from rope_parameters (5.x); 10000 when neither has it. */
static int parse_rope(const json_fields *f, double *theta) {
    const char *const keys[] = {"rope_scaling", "rope_parameters"};
    const json_t *params = NULL;
    for (int k = 0; k < 2; k++) {
        const json_t *v = field(f, keys[k]);
        if (!v) continue;
        if (!json_is_object(v))
            return folo_fail(f->err, "%s: \"%s\" must be an object or null, got %s", f->path,
                             keys[k], json_kind(v));
        const json_t *type = json_object_get(v, "rope_type");
        if (!type) type = json_object_get(v, "type");
        if (type && !(json_is_string(type) && strcmp(json_string_value(type), "default") == 0))
            return folo_fail(f->err, "%s: \"%s\" asks for a RoPE type other than \"default\"; "
                             "scaled RoPE is not supported", f->path, keys[k]);
        if (k == 1) params = v;
    }
    if (field(f, "rope_theta") || !params) return read_number(f, "rope_theta", 10000.0, theta);
    json_fields sub = {params, f->path, f->err};
    return read_number(&sub, "rope_theta", 10000.0, theta);
}

/* Architecture switches folo does not implement must be off. */
static int check_supported(const json_fields *f) {
    bool flag;
    if (require_string(f, "model_type", "qwen3") != 0 || require_string(f, "hidden_act", "silu") != 0)
        return -1;
    if (read_bool(f, "attention_bias", false, &flag) != 0) return -1;
    if (flag) return folo_fail(f->err, "%s: \"attention_bias\" true is not supported", f->path);
    if (read_bool(f, "use_sliding_window", false, &flag) != 0) return -1;
    if (flag) return folo_fail(f->err, "%s: \"use_sliding_window\" true is not supported", f->path);
    const json_t *types = field(f, "layer_types");
    if (types) {
        if (!json_is_array(types))
            return folo_fail(f->err, "%s: \"layer_types\" must be a list, got %s", f->path,
                             json_kind(types));
        for (size_t i = 0; i < json_array_size(types); i++) {
            const json_t *t = json_array_get(types, i);
            if (!json_is_string(t) || strcmp(json_string_value(t), "full_attention") != 0)
                return folo_fail(f->err, "%s: \"layer_types\"[%zu] must be \"full_attention\"",
                                 f->path, i);
        }
    }
    return 0;
}

#define MAX_DIM (1L << 20)

/* A string field, or `def` when absent (NULL when not a string, after an
 * error). */
static const char *read_string(const json_fields *f, const char *key, const char *def) {
    const json_t *v = field(f, key);
    if (!v) return def;
    if (!json_is_string(v)) {
        folo_fail(f->err, "%s: \"%s\" must be a string, got %s", f->path, key, json_kind(v));
        return NULL;
    }
    return json_string_value(v);
}

/* pattern compiled to match at the start of a subject (Python's re.match,
 * which vLLM and GPTQModel use), or NULL with *message set. */
static pcre2_code *compile_rule(const char *pattern, char *message, size_t size) {
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED,
                                   &code, &offset, NULL);
    if (!re) pcre2_get_error_message(code, (PCRE2_UCHAR *)message, size);
    return re;
}

int folo_quant_for(const folo_quant_config *q, const char *name, folo_quant_config *out) {
    *out = *q;
    out->n_rules = 0;
    for (int i = 0; i < q->n_rules; i++) {
        const folo_quant_rule *r = &q->rules[i];
        char message[128];
        pcre2_code *re = compile_rule(r->pattern, message, sizeof message);
        pcre2_match_data *md = re ? pcre2_match_data_create_from_pattern(re, NULL) : NULL;
        int matched = md && pcre2_match(re, (PCRE2_SPTR)name, PCRE2_ZERO_TERMINATED, 0, 0, md,
                                        NULL) >= 0;
        pcre2_match_data_free(md);
        pcre2_code_free(re);
        if (!matched) continue;
        if (r->skip) return 0;
        if (r->bits) out->bits = r->bits;
        if (r->group_size) out->group_size = r->group_size;
        if (r->desc_act >= 0) out->desc_act = r->desc_act;
        if (r->sym >= 0) out->sym = r->sym;
        return 1;
    }
    return 1;
}

/* "bits" (required, or 0 when absent) and "group_size" (0 when absent). */
static int read_bits(const json_fields *f, int required, int *bits) {
    *bits = 0;
    if (!required && !field(f, "bits")) return 0;
    if (read_int(f, "bits", 1, 0, INT_MIN, INT_MAX, bits) != 0) return -1;
    if (*bits != 4 && *bits != 8)
        return folo_fail(f->err, "%s: \"bits\" is %d; only 4- and 8-bit GPTQ are supported",
                         f->path, *bits);
    return 0;
}

static int read_group_size(const json_fields *f, int *group_size) {
    *group_size = 0;
    if (!field(f, "group_size")) return 0;
    if (read_int(f, "group_size", 1, 0, -1, MAX_DIM, group_size) != 0) return -1;
    if (*group_size == 0)
        return folo_fail(f->err, "%s: \"group_size\" is 0; expected -1 or a positive size",
                         f->path);
    return 0;
}

/* A boolean override: -1 when absent. */
static int read_override(const json_fields *f, const char *key, int *out) {
    bool value;
    *out = -1;
    if (!field(f, key)) return 0;
    if (read_bool(f, key, false, &value) != 0) return -1;
    *out = value;
    return 0;
}

/* GPTQModel's "dynamic": {"+:regex": {overrides}, "-:regex": {}, ...}. */
static int parse_rules(folo_quant_config *q, const json_fields *f) {
    const json_t *dynamic = field(f, "dynamic");
    if (!dynamic) return 0;
    if (!json_is_object(dynamic))
        return folo_fail(f->err, "%s: \"dynamic\" must be an object, got %s", f->path,
                         json_kind(dynamic));
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)dynamic, key, value) {
        if (q->n_rules == FOLO_QUANT_MAX_RULES)
            return folo_fail(f->err, "%s: \"dynamic\" has more than %d rules", f->path,
                             FOLO_QUANT_MAX_RULES);
        folo_quant_rule *r = &q->rules[q->n_rules++];
        r->skip = strncmp(key, "-:", 2) == 0;
        const char *pattern = strncmp(key, "-:", 2) == 0 || strncmp(key, "+:", 2) == 0 ? key + 2
                                                                                     : key;
        if (strlen(pattern) >= sizeof r->pattern)
            return folo_fail(f->err, "%s: \"dynamic\" rule \"%.40s...\" is longer than %zu bytes",
                             f->path, key, sizeof r->pattern - 1);
        strcpy(r->pattern, pattern);
        char message[128];
        pcre2_code *re = compile_rule(pattern, message, sizeof message);
        if (!re)
            return folo_fail(f->err, "%s: \"dynamic\" rule \"%s\" is not a valid regular "
                             "expression: %s", f->path, key, message);
        pcre2_code_free(re);
        if (!json_is_object(value))
            return folo_fail(f->err, "%s: \"dynamic\" rule \"%s\" must map to an object, got %s",
                             f->path, key, json_kind(value));
        /* the fields a loaded linear depends on; those that only steered
         * the quantizer are allowed and ignored */
        static const char *const quantizer_only[] = {"damp_percent", "damp_auto_increment",
                                                     "static_groups", "true_sequential", "mse"};
        const char *name;
        const json_t *v;
        json_object_foreach((json_t *)value, name, v) {
            bool known = !strcmp(name, "bits") || !strcmp(name, "group_size") ||
                         !strcmp(name, "desc_act") || !strcmp(name, "sym");
            for (size_t i = 0; i < sizeof quantizer_only / sizeof *quantizer_only; i++)
                known = known || !strcmp(name, quantizer_only[i]);
            if (!known)
                return folo_fail(f->err, "%s: \"dynamic\" rule \"%s\" overrides \"%s\", which "
                                 "is not supported (bits, group_size, desc_act, sym are)", f->path,
                                 key, name);
        }
        json_fields rule = {value, f->path, f->err};
        if (read_bits(&rule, 0, &r->bits) != 0 || read_group_size(&rule, &r->group_size) != 0 ||
            read_override(&rule, "desc_act", &r->desc_act) != 0 ||
            read_override(&rule, "sym", &r->sym) != 0)
            return folo_fail_prefix(f->err, "\"dynamic\" rule \"%s\"", key);
    }
    return 0;
}

/* The GPTQ fields of a quantization_config object or quantize_config.json
 * (f names the object). Both spellings GPTQModel has written are read:
 * `quant_method` and `checkpoint_format` (transformers, GPTQModel before
 * 5), or `method` and `format` (GPTQModel since). AutoGPTQ's older files
 * omit the method, so a missing one means gptq. */
static int parse_quant(folo_quant_config *q, const json_fields *f) {
    const char *method_key = field(f, "quant_method") ? "quant_method" : "method";
    const char *method = read_string(f, method_key, "gptq");
    if (!method) return -1;
    if (strcmp(method, "gptq") != 0)
        return folo_fail(f->err, "%s: \"%s\" is \"%s\"; only \"gptq\" is supported", f->path,
                         method_key, method);
    const char *format_key = field(f, "checkpoint_format") ? "checkpoint_format" : "format";
    const char *format = read_string(f, format_key, "gptq");
    const char *pack = read_string(f, "pack_dtype", "int32");
    if (!format || !pack) return -1;
    if (strcmp(format, "gptq") != 0 && strcmp(format, "gptq_v2") != 0)
        return folo_fail(f->err, "%s: \"%s\" is \"%s\"; only \"gptq\" and \"gptq_v2\" are "
                         "supported", f->path, format_key, format);
    if (strcmp(pack, "int32") != 0)
        return folo_fail(f->err, "%s: \"pack_dtype\" is \"%s\"; only \"int32\" is supported",
                         f->path, pack);
    bool marlin;
    if (read_bool(f, "is_marlin_format", false, &marlin) != 0) return -1;
    if (marlin)
        return folo_fail(f->err, "%s: \"is_marlin_format\" true is not supported", f->path);
    /* A list of which linears each block quantizes: a layout folo does not
     * read. */
    const json_t *modules = field(f, "modules_in_block_to_quantize");
    if (modules && !(json_is_array(modules) && json_array_size(modules) == 0))
        return folo_fail(f->err, "%s: \"modules_in_block_to_quantize\" (per-module "
                         "quantization) is not supported; \"dynamic\" is", f->path);
    if (read_bits(f, 1, &q->bits) != 0 || parse_rules(q, f) != 0) return -1;
    if (read_group_size(f, &q->group_size) != 0) return -1;
    if (!field(f, "group_size")) q->group_size = -1;
    q->zeros_minus_one = strcmp(format, "gptq") == 0;
    q->gptq = true;
    return read_bool(f, "desc_act", false, &q->desc_act) != 0 ||
                   read_bool(f, "sym", true, &q->sym) != 0 ||
                   read_bool(f, "lm_head", false, &q->lm_head) != 0
               ? -1
               : 0;
}

static int parse_fields(folo_config *c, const json_fields *f) {
    memset(c, 0, sizeof *c);
    if (check_supported(f) != 0) return -1;
    if (read_int(f, "hidden_size", 1, 0, 1, MAX_DIM, &c->hidden_size) != 0 ||
        read_int(f, "intermediate_size", 1, 0, 1, MAX_DIM, &c->intermediate_size) != 0 ||
        read_int(f, "num_hidden_layers", 1, 0, 1, 4096, &c->n_layers) != 0 ||
        read_int(f, "num_attention_heads", 1, 0, 1, 4096, &c->n_heads) != 0 ||
        read_int(f, "num_key_value_heads", 0, c->n_heads, 1, 4096, &c->n_kv_heads) != 0 ||
        read_int(f, "vocab_size", 1, 0, 1, 1L << 24, &c->vocab_size) != 0 ||
        read_int(f, "max_position_embeddings", 0, 32768, 1, INT_MAX, &c->max_position_embeddings) != 0)
        return -1;
    if (c->n_heads % c->n_kv_heads != 0)
        return folo_fail(f->err, "%s: \"num_attention_heads\" (%d) is not a multiple of "
                         "\"num_key_value_heads\" (%d)", f->path, c->n_heads, c->n_kv_heads);
    /* Without head_dim the heads split hidden_size (transformers' Qwen3Config
     * would assume 128 here; every released Qwen3 config states it). */
    if (!field(f, "head_dim") && c->hidden_size % c->n_heads != 0)
        return folo_fail(f->err, "%s: \"hidden_size\" (%d) is not a multiple of "
                         "\"num_attention_heads\" (%d) and \"head_dim\" is absent", f->path,
                         c->hidden_size, c->n_heads);
    if (read_int(f, "head_dim", 0, c->hidden_size / c->n_heads, 1, 4096, &c->head_dim) != 0)
        return -1;
    if (c->head_dim % 2 != 0)
        return folo_fail(f->err, "%s: \"head_dim\" (%d) must be even for RoPE", f->path, c->head_dim);

    double eps;
    if (read_number(f, "rms_norm_eps", 1e-6, &eps) != 0) return -1;
    if (!(eps > 0) || eps > 1)
        return folo_fail(f->err, "%s: \"rms_norm_eps\" is %g, expected a number in (0, 1]", f->path, eps);
    c->rms_norm_eps = (float)eps;
    if (parse_rope(f, &c->rope_theta) != 0) return -1;
    if (!(c->rope_theta > 0))
        return folo_fail(f->err, "%s: \"rope_theta\" is %g, expected a positive number", f->path,
                         c->rope_theta);
    if (read_bool(f, "tie_word_embeddings", false, &c->tie_word_embeddings) != 0 ||
        parse_dtype(f, &c->torch_dtype) != 0)
        return -1;

    if (read_int(f, "bos_token_id", 0, -1, 0, c->vocab_size - 1, &c->bos_token_id) != 0) return -1;
    const json_t *quant = field(f, "quantization_config");
    if (quant) {
        if (!json_is_object(quant))
            return folo_fail(f->err, "%s: \"quantization_config\" must be an object, got %s",
                             f->path, json_kind(quant));
        size_t len = strlen(f->path) + sizeof ".quantization_config";
        char *sub_path = folo_calloc(len, 1);
        snprintf(sub_path, len, "%s.quantization_config", f->path);
        json_fields sub = {quant, sub_path, f->err};
        int rc = parse_quant(&c->quant, &sub);
        free(sub_path);
        if (rc != 0) return -1;
    }
    return read_token_list(f, "eos_token_id", c->vocab_size, c->eos_token_ids, &c->n_eos_token_ids);
}

/* Parses `text` as a JSON object into *root; the error names `path`. */
static int load_object(json_t **root, const char *text, const char *path, folo_error *err) {
    json_error_t jerr;
    *root = json_loads(text, 0, &jerr);
    if (!*root)
        return folo_fail(err, "%s: not valid JSON: %s (line %d, column %d)", path, jerr.text,
                         jerr.line, jerr.column);
    if (!json_is_object(*root)) {
        json_decref(*root);
        return folo_fail(err, "%s: not a JSON object", path);
    }
    return 0;
}

int folo_config_parse(folo_config *cfg, const char *json_text, const char *path, folo_error *err) {
    json_t *root;
    if (load_object(&root, json_text, path, err) != 0) return -1;
    json_fields f = {root, path, err};
    int rc = parse_fields(cfg, &f);
    json_decref(root);
    return rc;
}

int folo_config_load(folo_config *cfg, const char *model_dir, folo_error *err) {
    char *path = folo_path_join(model_dir, "config.json");
    char *text = folo_file_read(path, NULL, err);
    int rc = text ? folo_config_parse(cfg, text, path, err) : -1;
    free(text);
    free(path);
    path = folo_path_join(model_dir, "quantize_config.json");
    if (rc == 0 && !cfg->quant.gptq && folo_file_exists(path)) {
        text = folo_file_read(path, NULL, err);
        json_t *root = NULL;
        rc = text ? load_object(&root, text, path, err) : -1;
        if (rc == 0) {
            json_fields f = {root, path, err};
            rc = parse_quant(&cfg->quant, &f);
            json_decref(root);
        }
        free(text);
    }
    free(path);
    return rc;
}

/* -------------------------------------------------- generation_config.json */

static int parse_generation(folo_generation_config *g, const folo_config *cfg, const json_fields *f) {
    /* Absent fields keep vLLM's neutral defaults (top_k off), because only
     * what the file states should change sampling. */
    if (read_bool(f, "do_sample", false, &g->do_sample) != 0 ||
        read_ranged(f, "temperature", 1.0, 0.0, 0, 1e6, &g->temperature) != 0 ||
        read_ranged(f, "top_p", 1.0, 0.0, 1, 1.0, &g->top_p) != 0 ||
        read_int(f, "top_k", 0, 0, 0, INT_MAX, &g->top_k) != 0 ||
        read_ranged(f, "min_p", 0.0, 0.0, 0, 1.0, &g->min_p) != 0 ||
        read_ranged(f, "repetition_penalty", 1.0, 0.0, 1, 1e6, &g->repetition_penalty) != 0)
        return -1;
    return read_token_list(f, "eos_token_id", cfg->vocab_size, g->eos_token_ids, &g->n_eos_token_ids);
}

int folo_generation_config_load(folo_generation_config *gen, const folo_config *cfg,
                                const char *model_dir, folo_error *err) {
    memset(gen, 0, sizeof *gen);
    gen->temperature = 1.0f;
    gen->top_p = 1.0f;
    gen->repetition_penalty = 1.0f;
    memcpy(gen->eos_token_ids, cfg->eos_token_ids, sizeof gen->eos_token_ids);
    gen->n_eos_token_ids = cfg->n_eos_token_ids;

    char *path = folo_path_join(model_dir, "generation_config.json");
    int rc = 0;
    if (folo_file_exists(path)) {
        char *text = folo_file_read(path, NULL, err);
        json_t *root = NULL;
        rc = text ? load_object(&root, text, path, err) : -1;
        if (rc == 0) {
            json_fields f = {root, path, err};
            rc = parse_generation(gen, cfg, &f);
            json_decref(root);
        }
        free(text);
    }
    free(path);
    return rc;
}
