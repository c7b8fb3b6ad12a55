/* Benchmark workloads (see dataset.h). */
#include "bench/dataset.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench/random.h"
#include "core/alloc.h"
#include "core/buf.h"

/* Streams of the seed, one per random choice. */
enum { STREAM_SHUFFLE = 1, STREAM_INPUT_LENS, STREAM_OUTPUT_LENS, STREAM_WORDS };

/* vLLM's sample_sharegpt_requests limits, tokens. */
#define SHAREGPT_MIN_LEN 4
#define SHAREGPT_MAX_PROMPT 1024
#define SHAREGPT_MAX_TOTAL 2048

void folo_bench_prompts_free(folo_bench_prompt *prompts, int n) {
    for (int i = 0; i < n; i++) free(prompts[i].text);
}

static int count_tokens(const folo_tokenizer *tok, const char *text, int *n, folo_error *err) {
    int32_t *ids;
    if (folo_tokenizer_encode(tok, text, strlen(text), &ids, n, err)) return -1;
    free(ids);
    return 0;
}

/* ---- ShareGPT ---------------------------------------------------------------- */

void folo_sharegpt_free(folo_sharegpt *s) {
    free(s->first_turn);
    free(s->texts);
    json_decref(s->root);
    memset(s, 0, sizeof *s);
}

int folo_sharegpt_load(folo_sharegpt *s, const char *path, folo_error *err) {
    memset(s, 0, sizeof *s);
    json_error_t jerr;
    s->root = json_load_file(path, 0, &jerr);
    if (!s->root)
        return folo_fail(err, "%s: not valid JSON (line %d, column %d: %s)", path, jerr.line,
                         jerr.column, jerr.text);
    if (!json_is_array(s->root)) {
        folo_sharegpt_free(s);
        return folo_fail(err, "%s: expected a JSON array of conversations", path);
    }
    size_t n_entries = json_array_size(s->root), n_texts = 0;
    s->first_turn = folo_calloc(n_entries + 1, sizeof *s->first_turn);
    for (size_t i = 0; i < n_entries; i++) {
        json_t *e = json_array_get(s->root, i);
        json_t *conv = json_is_object(e) ? json_object_get(e, "conversations") : NULL;
        if (!json_is_array(conv)) {
            folo_sharegpt_free(s);
            return folo_fail(err, "%s: entry %zu has no \"conversations\" array", path, i);
        }
        n_texts += json_array_size(conv);
        s->first_turn[i + 1] = n_texts;
    }
    s->texts = folo_calloc(n_texts + 1, sizeof *s->texts);
    for (size_t i = 0; i < n_entries; i++) {
        json_t *conv = json_object_get(json_array_get(s->root, i), "conversations");
        for (size_t turn = 0; turn < json_array_size(conv); turn++) {
            json_t *t = json_array_get(conv, turn);
            json_t *value = json_is_object(t) ? json_object_get(t, "value") : NULL;
            if (!json_is_string(value)) {
                folo_sharegpt_free(s);
                return folo_fail(err, "%s: entry %zu: turn %zu is not an object with a string "
                                 "\"value\"", path, i, turn);
            }
            s->texts[s->first_turn[i] + turn] = json_string_value(value);
        }
    }
    s->n_conversations = n_entries;
    return 0;
}

int folo_bench_sharegpt(const char *path, const folo_tokenizer *tok, int n, int output_len,
                        uint64_t seed, folo_bench_prompt *out, folo_error *err) {
    folo_sharegpt data;
    if (folo_sharegpt_load(&data, path, err) != 0) return -1;
    /* The conversations with a prompt and a reference completion. */
    size_t *order = folo_calloc(data.n_conversations + 1, sizeof *order), n_pairs = 0;
    for (size_t i = 0; i < data.n_conversations; i++)
        if (data.first_turn[i + 1] - data.first_turn[i] >= 2) order[n_pairs++] = i;
    folo_bench_rng rng;
    folo_bench_rng_seed(&rng, seed, STREAM_SHUFFLE);
    for (size_t i = n_pairs; i > 1; i--) {
        size_t j = (size_t)folo_bench_rng_below(&rng, i), t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    int rc = 0, n_kept = 0;
    for (size_t k = 0; k < n_pairs && n_kept < n; k++) {
        const char *prompt = data.texts[data.first_turn[order[k]]];
        const char *completion = data.texts[data.first_turn[order[k]] + 1];
        int prompt_len, completion_len = output_len;
        if (count_tokens(tok, prompt, &prompt_len, err) ||
            (output_len <= 0 && count_tokens(tok, completion, &completion_len, err))) {
            rc = folo_fail_prefix(err, "%s: entry %zu", path, order[k]);
            break;
        }
        if (prompt_len < SHAREGPT_MIN_LEN || prompt_len > SHAREGPT_MAX_PROMPT ||
            (output_len <= 0 && completion_len < SHAREGPT_MIN_LEN) ||
            prompt_len + completion_len > SHAREGPT_MAX_TOTAL)
            continue;
        out[n_kept++] = (folo_bench_prompt){folo_strdup(prompt), prompt_len, completion_len};
    }
    if (rc == 0 && n_kept < n)
        rc = folo_fail(err, "%s: only %d of its %zu conversations pass the length filters "
                       "(%d requested)", path, n_kept, n_pairs, n);
    if (rc != 0) folo_bench_prompts_free(out, n_kept);
    free(order);
    folo_sharegpt_free(&data);
    return rc;
}

/* ---- random ------------------------------------------------------------------ */

void folo_bench_length_bounds(int len, double range_ratio, int *lo, int *hi) {
    /* vLLM's RandomDataset: math.floor(len * (1 - r)) and
     * math.ceil(len * (1 + r)), in doubles as Python computes them. */
    double l = floor(len * (1 - range_ratio)), h = ceil(len * (1 + range_ratio));
    *lo = l < 1 ? 1 : l > FOLO_BENCH_MAX_LEN ? FOLO_BENCH_MAX_LEN : (int)l;
    *hi = h < *lo ? *lo : h > FOLO_BENCH_MAX_LEN ? FOLO_BENCH_MAX_LEN : (int)h;
}

/* One length for a prompt or output of nominal length len (>= 1). */
static int draw_length(folo_bench_rng *rng, const folo_bench_random_spec *spec, int len) {
    int64_t v = len;
    if (spec->dist == FOLO_BENCH_LENGTHS_UNIFORM) {
        int lo, hi;
        folo_bench_length_bounds(len, spec->range_ratio, &lo, &hi);
        v = lo + (int64_t)folo_bench_rng_below(rng, (uint64_t)(hi - lo + 1));
    } else if (spec->dist == FOLO_BENCH_LENGTHS_POISSON) {
        v = folo_bench_rng_poisson(rng, len);
    }
    return v < 1 ? 1 : v > FOLO_BENCH_MAX_LEN ? FOLO_BENCH_MAX_LEN : (int)v;
}

void folo_bench_random_lengths(const folo_bench_random_spec *spec, int n, uint64_t seed,
                               int *input_lens, int *output_lens) {
    folo_bench_rng in_rng, out_rng;
    folo_bench_rng_seed(&in_rng, seed, STREAM_INPUT_LENS);
    folo_bench_rng_seed(&out_rng, seed, STREAM_OUTPUT_LENS);
    for (int i = 0; i < n; i++) {
        input_lens[i] = draw_length(&in_rng, spec, spec->input_len);
        output_lens[i] = draw_length(&out_rng, spec, spec->output_len);
    }
}

/* The ids of single tokens " <ASCII letters>" that encode back to
 * themselves; *n_words their count. */
static int32_t *word_tokens(const folo_tokenizer *tok, int *n_words, folo_error *err) {
    int n_vocab = folo_tokenizer_n_vocab(tok), n = 0;
    int32_t *words = folo_calloc((size_t)n_vocab, sizeof *words);
    for (int32_t id = 0; id < n_vocab; id++) {
        size_t len;
        const char *bytes = folo_tokenizer_token_bytes(tok, id, &len);
        if (!bytes || len < 2 || bytes[0] != ' ' || folo_tokenizer_is_special(tok, id)) continue;
        size_t k = 1;
        while (k < len && ((bytes[k] | 0x20) >= 'a' && (bytes[k] | 0x20) <= 'z')) k++;
        if (k != len) continue;
        int32_t *ids;
        int n_ids;
        if (folo_tokenizer_encode(tok, bytes, len, &ids, &n_ids, err)) {
            free(words);
            return NULL;
        }
        if (n_ids == 1 && ids[0] == id) words[n++] = id;
        free(ids);
    }
    if (n == 0) {
        free(words);
        folo_fail(err, "the tokenizer has no single-token words (\" <letters>\") to build "
                       "random prompts from");
        return NULL;
    }
    *n_words = n;
    return words;
}

int folo_bench_random_prompts(const folo_tokenizer *tok, const folo_bench_random_spec *spec,
                              int n, uint64_t seed, folo_bench_prompt *out, folo_error *err) {
    int n_words;
    int32_t *words = word_tokens(tok, &n_words, err);
    if (!words) return -1;
    int *input_lens = folo_calloc((size_t)n, sizeof *input_lens);
    int *output_lens = folo_calloc((size_t)n, sizeof *output_lens);
    folo_bench_random_lengths(spec, n, seed, input_lens, output_lens);
    folo_bench_rng word_rng;
    folo_bench_rng_seed(&word_rng, seed, STREAM_WORDS);
    folo_buf text = {0};
    int rc = 0, i;
    for (i = 0; i < n; i++) {
        int len = input_lens[i];
        folo_buf_clear(&text);
        for (int t = 0; t < len; t++) {
            size_t n_bytes;
            int32_t id = words[folo_bench_rng_below(&word_rng, (uint64_t)n_words)];
            const char *bytes = folo_tokenizer_token_bytes(tok, id, &n_bytes);
            folo_buf_append(&text, bytes, n_bytes);
        }
        int n_tokens;
        if (count_tokens(tok, folo_buf_str(&text), &n_tokens, err)) {
            rc = -1;
            break;
        }
        if (n_tokens != len) {
            rc = folo_fail(err, "random prompt %d encodes to %d tokens instead of %d", i,
                           n_tokens, len);
            break;
        }
        out[i] = (folo_bench_prompt){folo_strdup(folo_buf_str(&text)), len, output_lens[i]};
    }
    if (rc != 0) folo_bench_prompts_free(out, i);
    folo_buf_free(&text);
    free(input_lens);
    free(output_lens);
    free(words);
    return rc;
}
