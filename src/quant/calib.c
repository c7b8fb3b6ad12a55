/* Calibration windows; see calib.h. */
#include "quant/calib.h"

#include <stdlib.h>
#include <string.h>

#include "bench/dataset.h"
#include "bench/random.h"
#include "core/alloc.h"
#include "core/file.h"

/* The seed's stream for window offsets (bench/random.h). */
#define STREAM_OFFSETS 1

/* A growing token stream. */
typedef struct {
    int32_t *ids;
    int64_t n, cap;
} stream;

static int append_text(stream *s, const folo_tokenizer *tok, const char *text, folo_error *err) {
    int32_t *ids;
    int n;
    if (folo_tokenizer_encode(tok, text, strlen(text), &ids, &n, err) != 0) return -1;
    if (s->n + n > s->cap) {
        s->cap = (s->n + n) * 2;
        s->ids = folo_realloc(s->ids, (size_t)s->cap * sizeof *s->ids);
    }
    memcpy(s->ids + s->n, ids, (size_t)n * sizeof *ids);
    s->n += n;
    free(ids);
    return 0;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int tokenize_file(stream *s, const char *path, const folo_tokenizer *tok,
                         folo_error *err) {
    if (!ends_with(path, ".json")) {
        char *text = folo_file_read(path, NULL, err);
        if (!text) return -1;
        int rc = append_text(s, tok, text, err);
        free(text);
        return rc != 0 ? folo_fail_prefix(err, "%s", path) : 0;
    }
    folo_sharegpt data;
    if (folo_sharegpt_load(&data, path, err) != 0) return -1;
    int rc = 0;
    size_t n_turns = data.first_turn[data.n_conversations];
    for (size_t i = 0; i < n_turns && rc == 0; i++) {
        rc = append_text(s, tok, data.texts[i], err);
        if (rc == 0) rc = append_text(s, tok, "\n\n", err);
    }
    folo_sharegpt_free(&data);
    return rc != 0 ? folo_fail_prefix(err, "%s", path) : 0;
}

int folo_calib_load(folo_calib *c, const char *path, const folo_tokenizer *tok, int n_samples,
                    int seq_len, uint64_t seed, folo_error *err) {
    memset(c, 0, sizeof *c);
    stream s = {0};
    if (tokenize_file(&s, path, tok, err) != 0) {
        free(s.ids);
        return -1;
    }
    if (s.n < seq_len) {
        free(s.ids);
        return folo_fail(err, "%s: %lld tokens, fewer than one calibration window of "
                         "--seq-len %d", path, (long long)s.n, seq_len);
    }
    c->n_samples = n_samples;
    c->seq_len = seq_len;
    c->n_stream = s.n;
    c->ids = folo_calloc((size_t)n_samples * (size_t)seq_len, sizeof *c->ids);
    folo_bench_rng rng;
    folo_bench_rng_seed(&rng, seed, STREAM_OFFSETS);
    for (int i = 0; i < n_samples; i++) {
        uint64_t start = folo_bench_rng_below(&rng, (uint64_t)(s.n - seq_len) + 1);
        memcpy(c->ids + (size_t)i * seq_len, s.ids + start, (size_t)seq_len * sizeof *s.ids);
    }
    free(s.ids);
    return 0;
}

void folo_calib_free(folo_calib *c) {
    free(c->ids);
    memset(c, 0, sizeof *c);
}
