/* Unit tests of the tokenizer (src/tokenizer/tokenizer.c) and of the JSON
 * writer the chat format uses (src/tokenizer/chat_json.c):
 *   - the streaming detokenizer never emits part of a UTF-8 character, for
 *     every prefix of multi-byte texts cut into single-byte tokens, and its
 *     output equals the whole-sequence decode;
 *   - special and added tokens with the real Qwen3 tokenizer;
 *   - invalid UTF-8 input is an error naming the byte offset;
 *   - a small synthetic tokenizer.json, written with merges as "a b"
 *     strings and as ["a", "b"] pairs, gives the ids Hugging Face
 *     `tokenizers` gives for it (expected values computed with tokenizers
 *     0.23), including lstrip/rstrip, single_word and normalized added
 *     tokens;
 *   - malformed tokenizer files fail with errors that name the field. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/alloc.h"
#include "core/file.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

/* Whether s[0..n) is entirely valid UTF-8 (no partial character). */
static bool valid_utf8(const char *s, size_t n) {
    json_t *probe = json_stringn(s, n); /* Jansson validates UTF-8 */
    bool ok = probe != NULL;
    json_decref(probe);
    return ok;
}

static int32_t *encode(const folo_tokenizer *tok, const char *text, int *n) {
    int32_t *ids = NULL;
    folo_error err;
    if (folo_tokenizer_encode(tok, text, strlen(text), &ids, n, &err) != 0) {
        fprintf(stderr, "encode failed: %s\n", err.message);
        *n = 0;
    }
    return ids;
}

static bool ids_equal(const int32_t *got, int n_got, const int32_t *want, int n_want) {
    return n_got == n_want && (n_got == 0 || memcmp(got, want, (size_t)n_got * sizeof *got) == 0);
}

/* ------------------------------------------------- streaming decoding --- */

/* Ids of the single-byte tokens spelling text byte by byte, so that every
 * multi-byte character arrives split over several tokens. */
static int32_t *byte_token_ids(const folo_tokenizer *tok, const char *text, int *n) {
    size_t len = strlen(text);
    int32_t *ids = folo_calloc(len + 1, sizeof *ids);
    for (size_t i = 0; i < len; i++) {
        char byte[2] = {text[i], 0};
        ids[i] = folo_tokenizer_token_id(tok, byte);
    }
    *n = (int)len;
    return ids;
}

static void check_stream(const folo_tokenizer *tok, const int32_t *ids, int n, const char *label) {
    folo_buf whole = {0};
    folo_tokenizer_decode(tok, ids, n, false, &whole);
    folo_detokenizer d;
    folo_detokenizer_init(&d, tok, false);
    folo_buf streamed = {0};
    for (int k = 0; k < n; k++) {
        folo_detokenizer_push(&d, ids[k], &streamed);
        CHECK_MSG(valid_utf8(folo_buf_str(&streamed), streamed.len),
                  "%s: partial character after %d tokens", label, k + 1);
        CHECK_MSG(streamed.len <= whole.len &&
                      memcmp(streamed.data ? streamed.data : "", whole.data, streamed.len) == 0,
                  "%s: stream is not a prefix of the whole decode after %d tokens", label, k + 1);
        /* Ending the stream here equals decoding this prefix at once. */
        folo_detokenizer copy = d;
        folo_buf ended = {0}, prefix = {0};
        folo_buf_append(&ended, folo_buf_str(&streamed), streamed.len);
        folo_detokenizer_flush(&copy, &ended);
        folo_tokenizer_decode(tok, ids, k + 1, false, &prefix);
        CHECK_MSG(ended.len == prefix.len && memcmp(ended.data, prefix.data, ended.len) == 0,
                  "%s: flush after %d tokens differs from decoding the prefix", label, k + 1);
        folo_buf_free(&ended);
        folo_buf_free(&prefix);
    }
    folo_detokenizer_flush(&d, &streamed);
    CHECK_MSG(streamed.len == whole.len && memcmp(folo_buf_str(&streamed), whole.data, whole.len) == 0,
              "%s: stream differs from the whole decode", label);
    folo_buf_free(&whole);
    folo_buf_free(&streamed);
}

static void test_streaming(const folo_tokenizer *tok) {
    static const char *const texts[] = {
        "你好，世界！自然语言处理。",
        "日本語のテキストとカタカナ",
        "안녕하세요 👋🏽 Привет مرحبا नमस्ते",
        "👨\u200d👩\u200d👧\u200d👦 family, 🏳️\u200d🌈 flag, 🇯🇵 ok",
        "plain ascii only",
        "mixed é ü ß 𝐀 𐌀 \u00a0 end",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int n;
        int32_t *ids = encode(tok, texts[i], &n);
        check_stream(tok, ids, n, texts[i]);
        folo_buf out = {0};
        folo_tokenizer_decode(tok, ids, n, false, &out);
        CHECK_STR(folo_buf_str(&out), texts[i]);
        folo_buf_free(&out);
        free(ids);
        ids = byte_token_ids(tok, texts[i], &n);
        bool all_found = true;
        for (int k = 0; k < n; k++) all_found = all_found && ids[k] >= 0;
        CHECK_MSG(all_found, "%s: a byte has no token", texts[i]);
        check_stream(tok, ids, n, texts[i]);
        free(ids);
    }
}

/* Invalid and truncated sequences become one U+FFFD per maximal subpart;
 * the stream holds an unfinished character until flush. */
static void test_replacement(const folo_tokenizer *tok) {
    int32_t e4 = folo_tokenizer_token_id(tok, "\xE4"); /* first byte of 你 (E4 BD A0) */
    int32_t bd = folo_tokenizer_token_id(tok, "\xBD");
    int32_t ff = folo_tokenizer_token_id(tok, "\xFF");
    int32_t a = folo_tokenizer_token_id(tok, "a");
    CHECK(e4 >= 0 && bd >= 0 && ff >= 0 && a >= 0);
    struct {
        int32_t ids[4];
        int n;
        const char *want;
    } cases[] = {
        {{e4, bd}, 2, "\xEF\xBF\xBD"},
        {{e4, a}, 2, "\xEF\xBF\xBD" "a"},
        {{ff, a}, 2, "\xEF\xBF\xBD" "a"},
        {{e4, bd, e4, a}, 4, "\xEF\xBF\xBD\xEF\xBF\xBD" "a"},
        {{bd, bd}, 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        folo_buf out = {0};
        folo_tokenizer_decode(tok, cases[i].ids, cases[i].n, false, &out);
        CHECK_STR(folo_buf_str(&out), cases[i].want);
        folo_buf_free(&out);
        check_stream(tok, cases[i].ids, cases[i].n, "replacement case");
    }
    folo_detokenizer d;
    folo_detokenizer_init(&d, tok, false);
    folo_buf out = {0};
    folo_detokenizer_push(&d, e4, &out);
    folo_detokenizer_push(&d, bd, &out);
    CHECK(out.len == 0 && d.n_pending == 2);
    folo_detokenizer_flush(&d, &out);
    CHECK_STR(folo_buf_str(&out), "\xEF\xBF\xBD");
    CHECK(d.n_pending == 0);
    folo_buf_free(&out);
}

/* ------------------------------------------------------ special tokens --- */

static void test_special_tokens(const folo_tokenizer *tok) {
    CHECK(folo_tokenizer_n_vocab(tok) == 151669);
    CHECK(folo_tokenizer_token_id(tok, "<|endoftext|>") == 151643);
    CHECK(folo_tokenizer_token_id(tok, "<|im_start|>") == 151644);
    CHECK(folo_tokenizer_token_id(tok, "<|im_end|>") == 151645);
    CHECK(folo_tokenizer_token_id(tok, "<think>") == 151667);
    CHECK(folo_tokenizer_token_id(tok, "</think>") == 151668);
    CHECK(folo_tokenizer_token_id(tok, "<|not_a_token|>") == -1);
    CHECK(folo_tokenizer_token_id(tok, " the") == 279); /* model tokens by their raw bytes */
    CHECK(folo_tokenizer_is_special(tok, 151645));
    CHECK(folo_tokenizer_is_special(tok, 151643));
    CHECK(!folo_tokenizer_is_special(tok, 151667)); /* <think> is not special */
    CHECK(!folo_tokenizer_is_special(tok, 151657)); /* <tool_call> neither */
    CHECK(!folo_tokenizer_is_special(tok, 279));
    CHECK(!folo_tokenizer_is_special(tok, -1) && !folo_tokenizer_is_special(tok, 1 << 30));

    size_t n_bytes;
    const char *bytes = folo_tokenizer_token_bytes(tok, 151645, &n_bytes);
    CHECK(bytes && n_bytes == 10 && memcmp(bytes, "<|im_end|>", 10) == 0);
    bytes = folo_tokenizer_token_bytes(tok, 279, &n_bytes);
    CHECK(bytes && n_bytes == 4 && memcmp(bytes, " the", 4) == 0);
    CHECK(folo_tokenizer_token_bytes(tok, 151669, &n_bytes) == NULL && n_bytes == 0);

    int n;
    int32_t *ids = encode(tok, "<|im_start|>user\nhi<|im_end|><think>x</think>", &n);
    const int32_t want[] = {151644, 872, 198, 6023, 151645, 151667, 87, 151668};
    CHECK(ids_equal(ids, n, want, 8));
    folo_buf out = {0};
    folo_tokenizer_decode(tok, ids, n, true, &out);
    CHECK_STR(folo_buf_str(&out), "user\nhi<think>x</think>");
    folo_buf_clear(&out);
    folo_tokenizer_decode(tok, ids, n, false, &out);
    CHECK_STR(folo_buf_str(&out), "<|im_start|>user\nhi<|im_end|><think>x</think>");
    folo_buf_free(&out);
    free(ids);

    ids = encode(tok, "", &n);
    CHECK(ids != NULL && n == 0);
    free(ids);
}

static void test_invalid_utf8(const folo_tokenizer *tok) {
    struct {
        const char *text;
        size_t offset;
    } cases[] = {
        {"ab\xFF" "cd", 2}, {"ok \xE4\xBD", 3}, {"\xC0\xAF", 0}, {"x\xED\xA0\x80", 1},
        {"\xE4\xBD\xA0\x80", 3}, {"\xF4\x90\x80\x80", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids = (int32_t *)&ids; /* must be reset to NULL on failure */
        int n = 7;
        folo_error err = {{0}};
        int rc = folo_tokenizer_encode(tok, cases[i].text, strlen(cases[i].text), &ids, &n, &err);
        char want[64];
        snprintf(want, sizeof want, "invalid UTF-8 at byte offset %zu", cases[i].offset);
        CHECK(rc == -1 && ids == NULL && n == 0);
        CHECK_MSG(strstr(err.message, want) != NULL, "'%s' lacks '%s'", err.message, want);
    }
}

/* ------------------------------------------------ synthetic tokenizers --- */

static json_t *synthetic_json(bool merges_as_pairs) {
    static const char *const merges[][2] = {
        {"a", "b"}, {"ab", "c"}, {"\xC4\xA0", "a"}, {"\xC3\x83", "\xC2\xA9"}, {"\xC4\xA0" "a", "b"},
    };
    json_t *list = json_array();
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++) {
        if (merges_as_pairs) {
            json_array_append_new(list, json_pack("[s, s]", merges[i][0], merges[i][1]));
        } else {
            char text[32];
            snprintf(text, sizeof text, "%s %s", merges[i][0], merges[i][1]);
            json_array_append_new(list, json_string(text));
        }
    }
    /* Byte-level spellings: U+0120 is ' ', U+00C3 U+00A9 are the bytes of é. */
    json_t *vocab = json_pack(
        "{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}",
        "a", 0, "b", 1, "c", 2, "\xC4\xA0", 3, "ab", 4, "abc", 5, "\xC4\xA0" "a", 6, "\xC3\x83", 7,
        "\xC2\xA9", 8, "\xC3\x83\xC2\xA9", 9, "\xC4\xA0" "ab", 10, "<", 11, ">", 12, "x", 13, "q", 14,
        "e", 15, "\xC3\x8C", 16, "\xC4\xA3", 17);
    json_t *added = json_pack(
        "[{s:i, s:s, s:b, s:b, s:b, s:b, s:b}, {s:i, s:s, s:b, s:b, s:b, s:b, s:b},"
        " {s:i, s:s, s:b, s:b, s:b, s:b, s:b}, {s:i, s:s, s:b, s:b, s:b, s:b, s:b}]",
        "id", 18, "content", "<x>", "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1,
        "id", 19, "content", "<y>", "single_word", 0, "lstrip", 1, "rstrip", 1, "normalized", 0, "special", 0,
        "id", 20, "content", "\xC3\xA9", "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 1, "special", 0,
        "id", 21, "content", "qq", "single_word", 1, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 0);
    return json_pack(
        "{s:o, s:{s:s}, s:{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b}]}, s:n,"
        " s:{s:s, s:b, s:b}, s:{s:s, s:n, s:n, s:b, s:b, s:o, s:o}}",
        "added_tokens", added, "normalizer", "type", "NFC", "pre_tokenizer", "type", "Sequence",
        "pretokenizers", "type", "Split", "pattern", "Regex", " ?[a-z]+| ?[^a-z\\s]+|\\s+",
        "behavior", "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0,
        "use_regex", 0, "post_processor", "decoder", "type", "ByteLevel", "add_prefix_space", 0,
        "use_regex", 0, "model", "type", "BPE", "dropout", "unk_token", "byte_fallback", 0,
        "ignore_merges", 0, "vocab", vocab, "merges", list);
}

static char *write_tokenizer(const char *dir, json_t *doc) {
    char *path = folo_path_join(dir, "tokenizer.json");
    CHECK(json_dump_file(doc, path, 0) == 0);
    return path;
}

static void test_synthetic(const char *dir, bool merges_as_pairs) {
    json_t *doc = synthetic_json(merges_as_pairs);
    char *path = write_tokenizer(dir, doc);
    json_decref(doc);
    folo_error err = {{0}};
    folo_tokenizer *tok = folo_tokenizer_load(dir, &err);
    CHECK_MSG(tok != NULL, "%s", err.message);
    if (!tok) {
        free(path);
        return;
    }
    /* Expected ids: tokenizers 0.23 on the same file. */
    struct {
        const char *text;
        int32_t ids[8];
        int n;
    } cases[] = {
        {"abc abcab", {5, 3, 5, 4}, 4},
        {"ab ab", {4, 3, 4}, 3},
        {"xab abx ab", {13, 4, 3, 4, 13, 3, 4}, 7},
        {"a<x>b", {0, 18, 1}, 3},
        {"a  <y>  b", {0, 19, 1}, 3},     /* lstrip and rstrip take the spaces */
        {"e\xCC\x81 \xC3\xA9", {20, 3, 20}, 3}, /* normalized: e + U+0301 -> é */
        {"cab", {2, 4}, 2},
        {"zz", {0}, 0},                   /* bytes with no token are dropped */
        {"<x><y>", {18, 19}, 2},
        {"abab", {4, 4}, 2},
        {"qq", {21}, 1},
        {"a qq b", {0, 3, 21, 3, 1}, 5},
        {"aqq", {0, 14, 14}, 3},          /* single_word: not inside a word */
        {"qqa", {14, 14, 0}, 3},
        {"qq qqq", {21, 3, 14, 14, 14}, 5},
        {"<<x>>", {11, 18, 12}, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n;
        int32_t *ids = encode(tok, cases[i].text, &n);
        CHECK_MSG(ids_equal(ids, n, cases[i].ids, cases[i].n), "%s merges: '%s' (got %d ids)",
                  merges_as_pairs ? "pair" : "string", cases[i].text, n);
        free(ids);
    }
    /* "é" as an added token decodes through the byte alphabet to the lone
     * byte 0xE9, as tokenizers' ByteLevel decoder does: U+FFFD. */
    const int32_t ids[] = {18, 0, 19, 20, 9, 7};
    folo_buf out = {0};
    folo_tokenizer_decode(tok, ids, 6, true, &out);
    CHECK_STR(folo_buf_str(&out), "a<y>\xEF\xBF\xBD\xC3\xA9\xEF\xBF\xBD");
    folo_buf_clear(&out);
    folo_tokenizer_decode(tok, ids, 6, false, &out);
    CHECK_STR(folo_buf_str(&out), "<x>a<y>\xEF\xBF\xBD\xC3\xA9\xEF\xBF\xBD");
    folo_buf_free(&out);
    CHECK(folo_tokenizer_is_special(tok, 18) && !folo_tokenizer_is_special(tok, 19));
    folo_tokenizer_free(tok);
    unlink(path);
    free(path);
}

/* Each broken file fails to load with a message naming what is wrong. */
static void test_bad_files(const char *dir) {
    char *path = folo_path_join(dir, "tokenizer.json");
    folo_error err = {{0}};

    json_t *doc = synthetic_json(false);
    json_array_append_new(json_object_get(json_object_get(doc, "model"), "merges"),
                          json_string("a zz"));
    json_dump_file(doc, path, 0);
    json_decref(doc);
    CHECK(folo_tokenizer_load(dir, &err) == NULL);
    CHECK_MSG(strstr(err.message, "model.merges[5]") && strstr(err.message, "\"zz\" is not in model.vocab"),
              "%s", err.message);

    doc = synthetic_json(false);
    json_array_append_new(json_object_get(json_object_get(doc, "model"), "merges"),
                          json_string("abc"));
    json_dump_file(doc, path, 0);
    json_decref(doc);
    CHECK(folo_tokenizer_load(dir, &err) == NULL);
    CHECK_MSG(strstr(err.message, "model.merges[5]") != NULL, "%s", err.message);

    doc = synthetic_json(true);
    json_object_set_new(json_object_get(doc, "normalizer"), "type", json_string("NFKC"));
    json_dump_file(doc, path, 0);
    json_decref(doc);
    CHECK(folo_tokenizer_load(dir, &err) == NULL);
    CHECK_MSG(strstr(err.message, "normalizer.type 'NFKC'") != NULL, "%s", err.message);

    doc = synthetic_json(true);
    json_t *split = json_array_get(json_object_get(json_object_get(doc, "pre_tokenizer"),
                                                   "pretokenizers"), 0);
    json_object_set_new(json_object_get(split, "pattern"), "Regex", json_string("(unclosed"));
    json_dump_file(doc, path, 0);
    json_decref(doc);
    CHECK(folo_tokenizer_load(dir, &err) == NULL);
    CHECK_MSG(strstr(err.message, "Split pattern") != NULL, "%s", err.message);

    doc = synthetic_json(true);
    json_object_set_new(json_object_get(json_object_get(doc, "model"), "vocab"), "zz",
                        json_string("7"));
    json_dump_file(doc, path, 0);
    json_decref(doc);
    CHECK(folo_tokenizer_load(dir, &err) == NULL);
    CHECK_MSG(strstr(err.message, "model.vocab[\"zz\"]") != NULL, "%s", err.message);

    CHECK(folo_file_write(path, "{\"model\": [", 11, &err) == 0);
    CHECK(folo_tokenizer_load(dir, &err) == NULL);
    CHECK_MSG(strstr(err.message, "tokenizer.json") && strstr(err.message, "line 1"), "%s",
              err.message);

    unlink(path);
    CHECK(folo_tokenizer_load(dir, &err) == NULL);
    CHECK_MSG(strstr(err.message, "tokenizer.json") != NULL, "%s", err.message);
    free(path);
}

/* ------------------------------------------------- tojson (chat_json) --- */

static void test_python_json(void) {
    struct {
        double x;
        const char *want; /* Python's json.dumps(x) */
    } floats[] = {
        {0.1, "0.1"},           {1e16, "1e+16"},      {1e15, "1000000000000000.0"},
        {1e-05, "1e-05"},       {0.0001, "0.0001"},   {1.5e300, "1.5e+300"},
        {123456789.123, "123456789.123"}, {2.5, "2.5"}, {-0.0, "-0.0"},
        {5e-324, "5e-324"},     {1.7976931348623157e308, "1.7976931348623157e+308"},
        {100.0, "100.0"},       {-1.25e-7, "-1.25e-07"}, {1.0 / 3, "0.3333333333333333"},
    };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        json_t *v = json_real(floats[i].x);
        folo_buf out = {0};
        folo_chat_write_json(v, &out);
        CHECK_STR(folo_buf_str(&out), floats[i].want);
        folo_buf_free(&out);
        json_decref(v);
    }
    json_t *v = json_pack("{s:[i, b, n, s]}", "k\"\n", 1, 1, "é\t\x01/");
    json_object_set_new(v, "e", json_object());
    json_object_set_new(v, "f", json_array());
    folo_buf out = {0};
    folo_chat_write_json(v, &out);
    CHECK_STR(folo_buf_str(&out),
              "{\"k\\\"\\n\": [1, true, null, \"\xC3\xA9\\t\\u0001/\"], \"e\": {}, \"f\": []}");
    folo_buf_free(&out);
    json_decref(v);
}

static const char *tokenizer_dir(void) {
    const char *env = getenv("FOLO_TOKENIZER_DIR");
    return env && *env ? env : "models/qwen3-tokenizer";
}

int main(void) {
    folo_error err = {{0}};
    folo_tokenizer *tok = folo_tokenizer_load(tokenizer_dir(), &err);
    CHECK_MSG(tok != NULL, "%s", err.message);
    if (tok) {
        test_streaming(tok);
        test_replacement(tok);
        test_special_tokens(tok);
        test_invalid_utf8(tok);
        folo_tokenizer_free(tok);
    }
    char dir[] = "/tmp/folo-test-tokenizer-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    test_synthetic(dir, false);
    test_synthetic(dir, true);
    test_bad_files(dir);
    rmdir(dir);
    test_python_json();
    return check_summary("test_tokenizer");
}
