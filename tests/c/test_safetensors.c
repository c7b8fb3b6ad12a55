/* Safetensors parsing and writing, config.json validation, and model loading.
 *
 * Each malformed kind is built in memory and must fail with one message
 * naming the file and the tensor or field; the writer's output must parse
 * back to the same table; a sharded, untied make-model checkpoint must hold
 * the same bytes as the tied single-file one made from the same seed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/alloc.h"
#include "core/file.h"
#include "model/config.h"
#include "model/make_model.h"
#include "model/model.h"
#include "model/safetensors.h"

#define PATH "mem.safetensors"

/* A safetensors image: the header JSON, then data_bytes bytes of 0x5a. */
static uint8_t *build(const char *header, size_t data_bytes, size_t *size) {
    size_t n = strlen(header);
    *size = 8 + n + data_bytes;
    uint8_t *buf = folo_calloc(*size + 1, 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    memset(buf + 8 + n, 0x5a, data_bytes);
    return buf;
}

/* Parsing must fail, and the message must name the file and hold `want`. */
static void expect_fail_bytes(const uint8_t *buf, size_t size, const char *want, int line) {
    folo_st_header h;
    folo_error err = {{0}};
    int rc = folo_st_parse(&h, buf, size, PATH, &err);
    CHECK_MSG(rc != 0, "line %d: parse succeeded, expected '%s'", line, want);
    CHECK_MSG(strstr(err.message, PATH) && strstr(err.message, want) && !strchr(err.message, '\n'),
              "line %d: message '%s' lacks '%s'", line, err.message, want);
    if (rc == 0) folo_st_header_free(&h);
}

static void expect_fail(const char *header, size_t data_bytes, const char *want, int line) {
    size_t size;
    uint8_t *buf = build(header, data_bytes, &size);
    expect_fail_bytes(buf, size, want, line);
    free(buf);
}
#define EXPECT_FAIL(header, data_bytes, want) expect_fail(header, data_bytes, want, __LINE__)

static void test_valid(void) {
    const char *header =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
        "\"empty\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[32,32]},"
        "\"scalar\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[40,44]}}   ";
    size_t size;
    uint8_t *buf = build(header, 44, &size);
    folo_st_header h;
    folo_error err = {{0}};
    CHECK_MSG(folo_st_parse(&h, buf, size, PATH, &err) == 0, "%s", err.message);
    size_t start = 8 + strlen(header);
    CHECK(h.n_tensors == 4);
    const folo_st_tensor *a = folo_st_find(&h, "a"), *b = folo_st_find(&h, "b");
    const folo_st_tensor *scalar = folo_st_find(&h, "scalar");
    CHECK(a && a->dtype == FOLO_DTYPE_F32 && a->n_dims == 2 && a->shape[0] == 2 &&
          a->shape[1] == 3 && a->offset == start && a->bytes == 24);
    CHECK(b && b->dtype == FOLO_DTYPE_BF16 && b->offset == start + 24 && b->bytes == 8);
    CHECK(scalar && scalar->n_dims == 0 && scalar->bytes == 4 && scalar->offset == start + 40);
    CHECK(folo_st_find(&h, "__metadata__") == NULL && folo_st_find(&h, "c") == NULL);
    CHECK_STR(h.tensors[0].name, "a"); /* header order is kept */
    folo_st_header_free(&h);
    free(buf);
}

static void test_invalid(void) {
    static const uint8_t short_file[4] = {1, 0, 0, 0};
    expect_fail_bytes(short_file, sizeof short_file, "too short", __LINE__);

    size_t size;
    uint8_t *buf = build("{}", 0, &size);
    buf[0] = 200; /* header length past the end */
    expect_fail_bytes(buf, size, "past the end", __LINE__);
    free(buf);

    /* An absurd length inside a file big enough to hold it (untouched pages). */
    size_t big = (size_t)FOLO_ST_MAX_HEADER_BYTES + 16;
    uint8_t *huge = folo_calloc(big, 1);
    uint64_t n = FOLO_ST_MAX_HEADER_BYTES + 1;
    for (int i = 0; i < 8; i++) huge[i] = (uint8_t)(n >> (8 * i));
    expect_fail_bytes(huge, big, "limit", __LINE__);
    free(huge);

    EXPECT_FAIL("{\"a\": {\"dtype\": ", 0, "not valid JSON");
    EXPECT_FAIL("", 0, "not valid JSON");
    EXPECT_FAIL("[1, 2]", 0, "not a JSON object");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "duplicate");
    EXPECT_FAIL("{\"__metadata__\": 3}", 0, "__metadata__");
    EXPECT_FAIL("{\"w\": 3}", 0, "'w'");
    EXPECT_FAIL("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w': missing or non-string \"dtype\"");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                "'w': unknown dtype 'F64'");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}", 4, "'w': missing or non-array \"shape\"");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "'w': shape[0]");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, "'w': shape[0]");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                "'w': shape has 5 dimensions");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}",
                4, "'w': shape [4611686018427387904, 4] is too large");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "'w': \"data_offsets\"");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "'w': \"data_offsets\"");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "'w': \"data_offsets\"");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8,
                "'w': shape [2] of F32 needs 8 bytes but data_offsets [0, 4] span 4");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8,
                "'w': data_offsets [4, 12] lie outside the 8-byte data section");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                "tensors 'w' and 'v' have overlapping data_offsets");
}

static char *make_temp_dir(void) {
    char tmpl[] = "/tmp/folo-test-st-XXXXXX";
    char *dir = mkdtemp(tmpl);
    return dir ? folo_strdup(dir) : NULL;
}

static void remove_dir(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

static void test_round_trip(const char *dir) {
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {0x3f80, 0x4000, 0xbf80};
    folo_st_tensor t[2] = {
        {.name = "layer.a", .dtype = FOLO_DTYPE_F32, .n_dims = 2, .shape = {2, 3}},
        {.name = "b", .dtype = FOLO_DTYPE_BF16, .n_dims = 1, .shape = {3}},
    };
    const void *data[2] = {a, b};
    char *path = folo_path_join(dir, "rt.safetensors");
    folo_error err = {{0}};
    CHECK_MSG(folo_st_write(path, t, data, 2, &err) == 0, "%s", err.message);
    folo_mapped_file f;
    CHECK_MSG(folo_file_map(&f, path, &err) == 0, "%s", err.message);
    folo_st_header h;
    CHECK_MSG(folo_st_parse(&h, f.data, f.size, path, &err) == 0, "%s", err.message);
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; i--) header_bytes = header_bytes << 8 | f.data[i];
    CHECK(header_bytes % 8 == 0);
    CHECK(h.n_tensors == 2);
    const folo_st_tensor *ra = folo_st_find(&h, "layer.a"), *rb = folo_st_find(&h, "b");
    CHECK(ra && ra->n_dims == 2 && ra->shape[1] == 3 && memcmp(f.data + ra->offset, a, sizeof a) == 0);
    CHECK(rb && rb->dtype == FOLO_DTYPE_BF16 && memcmp(f.data + rb->offset, b, sizeof b) == 0);
    CHECK(ra && ra->offset % 8 == 0);
    CHECK(f.size == 8 + header_bytes + sizeof a + sizeof b);
    folo_st_header_free(&h);
    folo_file_unmap(&f);

    t[1].name = "layer.a";
    CHECK(folo_st_write(path, t, data, 2, &err) != 0 && strstr(err.message, "'layer.a' appears twice"));
    free(path);
}

/* ----------------------------------------------------------------- config */

static const char *k_qwen3_0_6b =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"attention_bias\": false,"
    " \"attention_dropout\": 0.0, \"bos_token_id\": 151643, \"eos_token_id\": 151645,"
    " \"head_dim\": 128, \"hidden_act\": \"silu\", \"hidden_size\": 1024,"
    " \"initializer_range\": 0.02, \"intermediate_size\": 3072,"
    " \"max_position_embeddings\": 40960, \"max_window_layers\": 28, \"model_type\": \"qwen3\","
    " \"num_attention_heads\": 16, \"num_hidden_layers\": 28, \"num_key_value_heads\": 8,"
    " \"rms_norm_eps\": 1e-06, \"rope_scaling\": null, \"rope_theta\": 1000000,"
    " \"sliding_window\": null, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\","
    " \"transformers_version\": \"4.51.0\", \"use_cache\": true, \"use_sliding_window\": false,"
    " \"vocab_size\": 151936}";

static void test_config_valid(void) {
    folo_config c;
    folo_error err = {{0}};
    CHECK_MSG(folo_config_parse(&c, k_qwen3_0_6b, "config.json", &err) == 0, "%s", err.message);
    CHECK(c.hidden_size == 1024 && c.intermediate_size == 3072 && c.n_layers == 28);
    CHECK(c.n_heads == 16 && c.n_kv_heads == 8 && c.head_dim == 128 && c.vocab_size == 151936);
    CHECK(c.max_position_embeddings == 40960 && c.rope_theta == 1e6 && c.rms_norm_eps == 1e-6f);
    CHECK(c.tie_word_embeddings && c.torch_dtype == FOLO_DTYPE_BF16 && c.bos_token_id == 151643);
    CHECK(c.n_eos_token_ids == 1 && c.eos_token_ids[0] == 151645);

    /* Minimal: defaults fill in; head_dim = H / Hq. */
    const char *minimal = "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                          " \"num_attention_heads\": 4, \"vocab_size\": 100}";
    CHECK_MSG(folo_config_parse(&c, minimal, "config.json", &err) == 0, "%s", err.message);
    CHECK(c.head_dim == 16 && c.n_kv_heads == 4 && c.rope_theta == 10000.0 && c.rms_norm_eps == 1e-6f);
    CHECK(!c.tie_word_embeddings && c.bos_token_id == -1 && c.n_eos_token_ids == 0);
    CHECK(c.torch_dtype == FOLO_DTYPE_F32 && c.max_position_embeddings == 32768);

    /* transformers 5.x spelling: dtype, rope_parameters, layer_types; eos list; null bos. */
    const char *v5 = "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2,"
                     " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 32,"
                     " \"vocab_size\": 100, \"dtype\": \"float16\", \"bos_token_id\": null,"
                     " \"eos_token_id\": [7, 9], \"layer_types\": [\"full_attention\", \"full_attention\"],"
                     " \"rope_parameters\": {\"rope_theta\": 5000.0, \"rope_type\": \"default\"}}";
    CHECK_MSG(folo_config_parse(&c, v5, "config.json", &err) == 0, "%s", err.message);
    CHECK(c.head_dim == 32 && c.rope_theta == 5000.0 && c.torch_dtype == FOLO_DTYPE_F16);
    CHECK(c.bos_token_id == -1 && c.n_eos_token_ids == 2 && c.eos_token_ids[1] == 9);
}

/* Replaces the first `"key": <value>` of the 0.6B config by `replacement`
 * (or removes the field when replacement is NULL) and expects a failure
 * whose message holds `want`. */
static void expect_config_fail(const char *key, const char *replacement, const char *want, int line) {
    char text[4096], pattern[128];
    snprintf(pattern, sizeof pattern, "\"%s\": ", key);
    const char *at = strstr(k_qwen3_0_6b, pattern);
    FOLO_ASSERT(at);
    const char *value_end = at + strlen(pattern);
    int depth = 0;
    while (*value_end && (depth > 0 || (*value_end != ',' && *value_end != '}'))) {
        depth += *value_end == '[' ? 1 : *value_end == ']' ? -1 : 0;
        value_end++;
    }
    if (replacement)
        snprintf(text, sizeof text, "%.*s%s%s", (int)(at - k_qwen3_0_6b), k_qwen3_0_6b,
                 replacement, value_end);
    else
        snprintf(text, sizeof text, "%.*s\"unused\": 0%s", (int)(at - k_qwen3_0_6b), k_qwen3_0_6b,
                 value_end);
    folo_config c;
    folo_error err = {{0}};
    int rc = folo_config_parse(&c, text, "dir/config.json", &err);
    CHECK_MSG(rc != 0, "line %d: config accepted", line);
    CHECK_MSG(strstr(err.message, "dir/config.json") && strstr(err.message, want),
              "line %d: message '%s' lacks '%s'", line, err.message, want);
}
#define CONFIG_FAIL(key, replacement, want) expect_config_fail(key, replacement, want, __LINE__)

static void test_config_invalid(void) {
    CONFIG_FAIL("hidden_size", NULL, "required field \"hidden_size\" is missing");
    CONFIG_FAIL("vocab_size", NULL, "required field \"vocab_size\" is missing");
    CONFIG_FAIL("hidden_size", "\"hidden_size\": \"1024\"", "\"hidden_size\" must be an integer");
    CONFIG_FAIL("hidden_size", "\"hidden_size\": 1024.5", "\"hidden_size\" must be an integer");
    CONFIG_FAIL("hidden_size", "\"hidden_size\": 0", "\"hidden_size\" is 0");
    CONFIG_FAIL("intermediate_size", "\"intermediate_size\": -3", "\"intermediate_size\" is -3");
    CONFIG_FAIL("num_hidden_layers", "\"num_hidden_layers\": 0", "\"num_hidden_layers\" is 0");
    CONFIG_FAIL("vocab_size", "\"vocab_size\": 0", "\"vocab_size\" is 0");
    CONFIG_FAIL("num_key_value_heads", "\"num_key_value_heads\": 3", "not a multiple of \"num_key_value_heads\"");
    CONFIG_FAIL("head_dim", "\"head_dim\": 127", "\"head_dim\" (127) must be even");
    CONFIG_FAIL("head_dim", "\"head_dim\": 0", "\"head_dim\" is 0");
    CONFIG_FAIL("rms_norm_eps", "\"rms_norm_eps\": 0", "\"rms_norm_eps\"");
    CONFIG_FAIL("rms_norm_eps", "\"rms_norm_eps\": -1e-6", "\"rms_norm_eps\"");
    CONFIG_FAIL("rms_norm_eps", "\"rms_norm_eps\": \"small\"", "\"rms_norm_eps\" must be a finite number");
    CONFIG_FAIL("rope_theta", "\"rope_theta\": 0", "\"rope_theta\"");
    CONFIG_FAIL("rope_theta", "\"rope_theta\": -5", "\"rope_theta\"");
    CONFIG_FAIL("rope_scaling", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}", "\"rope_scaling\" asks for a RoPE type");
    CONFIG_FAIL("tie_word_embeddings", "\"tie_word_embeddings\": 1", "\"tie_word_embeddings\" must be true or false");
    CONFIG_FAIL("torch_dtype", "\"torch_dtype\": \"int8\"", "\"torch_dtype\"");
    CONFIG_FAIL("eos_token_id", "\"eos_token_id\": 200000", "\"eos_token_id\"[0]");
    CONFIG_FAIL("eos_token_id", "\"eos_token_id\": [1, \"x\"]", "\"eos_token_id\"[1]");
    CONFIG_FAIL("eos_token_id", "\"eos_token_id\": \"</s>\"", "\"eos_token_id\" must be an integer or a list");
    CONFIG_FAIL("bos_token_id", "\"bos_token_id\": [1]", "\"bos_token_id\" must be an integer");
    CONFIG_FAIL("attention_bias", "\"attention_bias\": true", "\"attention_bias\"");
    CONFIG_FAIL("use_sliding_window", "\"use_sliding_window\": true", "\"use_sliding_window\"");
    CONFIG_FAIL("model_type", "\"model_type\": \"llama\"", "\"model_type\" is \"llama\"");
    CONFIG_FAIL("hidden_act", "\"hidden_act\": \"gelu\"", "\"hidden_act\"");

    folo_config c;
    folo_error err = {{0}};
    CHECK(folo_config_parse(&c, "{\"hidden_size\": ", "x/config.json", &err) != 0 &&
          strstr(err.message, "x/config.json: not valid JSON"));
    CHECK(folo_config_parse(&c, "[]", "x/config.json", &err) != 0 &&
          strstr(err.message, "x/config.json: not a JSON object"));
    const char *no_head_dim = "{\"hidden_size\": 60, \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                              " \"num_attention_heads\": 8, \"vocab_size\": 100}";
    CHECK(folo_config_parse(&c, no_head_dim, "x/config.json", &err) != 0 &&
          strstr(err.message, "\"head_dim\" is absent"));
    CHECK(folo_config_load(&c, "/nonexistent-folo-dir", &err) != 0 &&
          strstr(err.message, "/nonexistent-folo-dir/config.json"));
}

/* ------------------------------------------------------------------ model */

static int same_bytes(const folo_tensor *a, const folo_tensor *b) {
    size_t bytes = folo_dtype_size(a->dtype);
    for (int d = 0; d < a->n_dims; d++) bytes *= (size_t)a->shape[d];
    return a->dtype == b->dtype && a->n_dims == b->n_dims && memcmp(a->data, b->data, bytes) == 0;
}

static void test_model(const char *dir) {
    const char *tiny_dir = getenv("FOLO_TEST_MODEL");
    const char *tokenizer_dir = getenv("FOLO_TOKENIZER_DIR");
    if (!tiny_dir || !tokenizer_dir) {
        printf("FOLO_TEST_MODEL or FOLO_TOKENIZER_DIR unset: model tests skipped\n");
        return;
    }
    folo_error err = {{0}};
    folo_model *tied = folo_model_load(tiny_dir, &err);
    CHECK_MSG(tied != NULL, "%s", err.message);
    if (!tied) return;
    const folo_config *c = &tied->config;
    CHECK(c->n_layers == 2 && c->hidden_size == 64 && c->head_dim == 16 && c->vocab_size == 151936);
    CHECK(tied->lm_head.data == tied->embed.data);
    CHECK(tied->embed.shape[0] == 151936 && tied->embed.shape[1] == 64);
    CHECK(tied->layers[1].wq.shape[0] == 64 && tied->layers[1].wk.shape[0] == 32);
    CHECK(tied->layers[0].w_down.shape[0] == 64 && tied->layers[0].w_down.shape[1] == 192);
    CHECK(tied->generation.do_sample && tied->generation.top_k == 20 &&
          tied->generation.n_eos_token_ids == 2);

    /* Same seed, three shards, untied: the same bytes, plus a head. */
    char *out = folo_path_join(dir, "sharded");
    folo_make_model_opts o = {.preset = "tiny", .dtype = FOLO_DTYPE_F32, .seed = 7, .n_shards = 3,
                              .untied = true, .tokenizer_dir = tokenizer_dir, .out_dir = out,
                              .n_threads = 2};
    CHECK_MSG(folo_make_model(&o, &err) == 0, "%s", err.message);
    folo_model *sharded = folo_model_load(out, &err);
    CHECK_MSG(sharded != NULL, "%s", err.message);
    if (sharded) {
        CHECK(!sharded->config.tie_word_embeddings && sharded->lm_head.data != sharded->embed.data);
        CHECK(same_bytes(&sharded->embed, &tied->embed));
        CHECK(same_bytes(&sharded->final_norm, &tied->final_norm));
        CHECK(same_bytes(&sharded->layers[1].w_up, &tied->layers[1].w_up));
        CHECK(same_bytes(&sharded->layers[0].q_norm, &tied->layers[0].q_norm));
        CHECK(!same_bytes(&sharded->lm_head, &sharded->embed));
        CHECK(sharded->weight_bytes == tied->weight_bytes + (size_t)151936 * 64 * 4);
        folo_model_free(sharded);
    }
    /* A missing shard is named. */
    char *shard = folo_path_join(out, "model-00002-of-00003.safetensors");
    CHECK(unlink(shard) == 0);
    CHECK(folo_model_load(out, &err) == NULL && strstr(err.message, "model-00002-of-00003.safetensors"));
    free(shard);
    free(out);
    folo_model_free(tied);
}

int main(void) {
    test_valid();
    test_invalid();
    test_config_valid();
    test_config_invalid();
    char *dir = make_temp_dir();
    CHECK(dir != NULL);
    if (dir) {
        test_round_trip(dir);
        test_model(dir);
        remove_dir(dir);
        free(dir);
    }
    return check_summary("test_safetensors");
}
