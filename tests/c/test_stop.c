/* Stop-string matcher tests: what is released after each chunk, where the
 * output ends, which stop string fired, and that the result does not depend
 * on how the text was cut into chunks. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "core/buf.h"
#include "engine/stop.h"

typedef struct {
    char text[256]; /* everything released, feeds and flush */
    int stopped;    /* index of the stop that fired, or -1 */
} stop_run;

/* Feeds the chunks in order (stopping early as a caller would), then flushes. */
static stop_run run_chunks(const char *const *stops, int n_stops, const char *const *chunks, int n_chunks) {
    folo_stop_matcher *m = folo_stop_matcher_create(stops, n_stops);
    folo_buf out = {0};
    stop_run r = {.stopped = -1};
    for (int i = 0; i < n_chunks && r.stopped < 0; i++)
        r.stopped = folo_stop_matcher_feed(m, chunks[i], strlen(chunks[i]), &out);
    folo_stop_matcher_flush(m, &out);
    CHECK(folo_stop_matcher_stopped(m) == r.stopped);
    snprintf(r.text, sizeof r.text, "%s", folo_buf_str(&out));
    folo_buf_free(&out);
    folo_stop_matcher_free(m);
    return r;
}

/* The same text cut into 1-byte chunks. */
static stop_run run_bytes(const char *const *stops, int n_stops, const char *text) {
    folo_stop_matcher *m = folo_stop_matcher_create(stops, n_stops);
    folo_buf out = {0};
    stop_run r = {.stopped = -1};
    for (size_t i = 0; text[i] && r.stopped < 0; i++) r.stopped = folo_stop_matcher_feed(m, text + i, 1, &out);
    folo_stop_matcher_flush(m, &out);
    snprintf(r.text, sizeof r.text, "%s", folo_buf_str(&out));
    folo_buf_free(&out);
    folo_stop_matcher_free(m);
    return r;
}

/* Feeds one chunk and returns what it released (for hold-back checks). */
static const char *feed_released(folo_stop_matcher *m, const char *chunk, folo_buf *out, int *stopped) {
    folo_buf_clear(out);
    *stopped = folo_stop_matcher_feed(m, chunk, strlen(chunk), out);
    return folo_buf_str(out);
}

static void test_one_chunk(void) {
    const char *stops[] = {"STOP"};
    const char *chunks[] = {"hello STOP world"};
    stop_run r = run_chunks(stops, 1, chunks, 1);
    CHECK_STR(r.text, "hello ");
    CHECK(r.stopped == 0);
}

static void test_across_chunks(void) {
    const char *stops[] = {"STOP"};
    const char *chunks[] = {"hel", "lo S", "T", "OP wor", "ld"};
    stop_run r = run_chunks(stops, 1, chunks, 5);
    CHECK_STR(r.text, "hello ");
    CHECK(r.stopped == 0);

    /* Hold-back: only the possible beginning of "STOP" is kept. */
    folo_stop_matcher *m = folo_stop_matcher_create(stops, 1);
    folo_buf out = {0};
    int stopped;
    CHECK_STR(feed_released(m, "abc ST", &out, &stopped), "abc ");
    CHECK(stopped == -1);
    CHECK_STR(feed_released(m, "O", &out, &stopped), "");
    CHECK_STR(feed_released(m, "x S", &out, &stopped), "STOx ");
    CHECK_STR(feed_released(m, "TOP and more", &out, &stopped), "");
    CHECK(stopped == 0);
    /* After a stop, nothing more comes out. */
    CHECK_STR(feed_released(m, "later", &out, &stopped), "");
    CHECK(stopped == 0);
    folo_buf_clear(&out);
    folo_stop_matcher_flush(m, &out);
    CHECK_STR(folo_buf_str(&out), "");
    folo_buf_free(&out);
    folo_stop_matcher_free(m);
}

static void test_at_start(void) {
    const char *stops[] = {"<|im_end|>"};
    const char *whole[] = {"<|im_end|>trailing"};
    stop_run r = run_chunks(stops, 1, whole, 1);
    CHECK_STR(r.text, "");
    CHECK(r.stopped == 0);
    r = run_bytes(stops, 1, "<|im_end|>trailing");
    CHECK_STR(r.text, "");
    CHECK(r.stopped == 0);
}

static void test_overlapping_prefixes(void) {
    const char *stops[] = {"ab"};
    folo_stop_matcher *m = folo_stop_matcher_create(stops, 1);
    folo_buf out = {0};
    int stopped;
    CHECK_STR(feed_released(m, "a", &out, &stopped), "");
    CHECK_STR(feed_released(m, "a", &out, &stopped), "a");
    CHECK_STR(feed_released(m, "b", &out, &stopped), "");
    CHECK(stopped == 0);
    folo_buf_free(&out);
    folo_stop_matcher_free(m);

    const char *whole[] = {"aab"};
    stop_run r = run_chunks(stops, 1, whole, 1);
    CHECK_STR(r.text, "a");

    /* A self-overlapping stop: the held text must be the longest candidate. */
    const char *aab[] = {"aab"};
    r = run_bytes(aab, 1, "xaaab!");
    CHECK_STR(r.text, "xa");
    CHECK(r.stopped == 0);
    const char *abab[] = {"abac"};
    r = run_bytes(abab, 1, "ababac");
    CHECK_STR(r.text, "ab");
}

static void test_several_stops(void) {
    const char *stops[] = {"END", "\n\n"};
    const char *chunks[] = {"line1\n", "\nline2 END"};
    stop_run r = run_chunks(stops, 2, chunks, 2);
    CHECK_STR(r.text, "line1");
    CHECK(r.stopped == 1);

    /* The stop that completes first wins, whatever the chunking: "b" is
     * complete before "abc" could be. */
    const char *first_done[] = {"abc", "b"};
    const char *one[] = {"xabc"};
    r = run_chunks(first_done, 2, one, 1);
    CHECK_STR(r.text, "xa");
    CHECK(r.stopped == 1);
    r = run_bytes(first_done, 2, "xabc");
    CHECK_STR(r.text, "xa");
    CHECK(r.stopped == 1);

    /* Completing on the same byte: the longer (earlier-starting) one wins. */
    const char *same_end[] = {"b", "ab"};
    const char *xab[] = {"xab"};
    r = run_chunks(same_end, 2, xab, 1);
    CHECK_STR(r.text, "x");
    CHECK(r.stopped == 1);
}

static void test_flush_releases_partial(void) {
    const char *stops[] = {"STOP"};
    folo_stop_matcher *m = folo_stop_matcher_create(stops, 1);
    folo_buf out = {0};
    int stopped;
    CHECK_STR(feed_released(m, "the ST", &out, &stopped), "the ");
    folo_buf_clear(&out);
    folo_stop_matcher_flush(m, &out);
    CHECK_STR(folo_buf_str(&out), "ST");
    CHECK(folo_stop_matcher_stopped(m) == -1);
    folo_buf_free(&out);
    folo_stop_matcher_free(m);

    const char *chunks[] = {"ST", "AR"};
    stop_run r = run_chunks(stops, 1, chunks, 2);
    CHECK_STR(r.text, "STAR");
    CHECK(r.stopped == -1);
}

static void test_utf8(void) {
    const char *stops[] = {"\xe3\x80\x82", "\xe7\xbb\x88\xe6\xad\xa2"}; /* "。", "终止" */
    const char *text = "\xe4\xbd\xa0\xe5\xa5\xbd\xe7\xbb\x88\xe7\x82\xb9\xe3\x80\x82\xe4\xb8\x96"; /* 你好终点。世 */
    stop_run r = run_bytes(stops, 2, text);
    CHECK_STR(r.text, "\xe4\xbd\xa0\xe5\xa5\xbd\xe7\xbb\x88\xe7\x82\xb9"); /* 你好终点 */
    CHECK(r.stopped == 0);

    /* A chunk ending inside a multi-byte stop: those bytes are held, and the
     * released text never ends inside a character. */
    folo_stop_matcher *m = folo_stop_matcher_create(stops, 2);
    folo_buf out = {0};
    int stopped;
    CHECK_STR(feed_released(m, "ok \xe7\xbb", &out, &stopped), "ok ");
    CHECK_STR(feed_released(m, "\x88", &out, &stopped), "");
    CHECK_STR(feed_released(m, "\xe6\xad\xa2 rest", &out, &stopped), "");
    CHECK(stopped == 1);
    folo_buf_free(&out);
    folo_stop_matcher_free(m);

    const char *accent[] = {"caf\xc3\xa9!"}; /* "café!" */
    const char *chunks[] = {"un caf", "\xc3", "\xa9", " noir"};
    r = run_chunks(accent, 1, chunks, 4);
    CHECK_STR(r.text, "un caf\xc3\xa9 noir");
    CHECK(r.stopped == -1);
}

static void test_no_stops(void) {
    folo_stop_matcher *m = folo_stop_matcher_create(NULL, 0);
    folo_buf out = {0};
    int stopped;
    CHECK_STR(feed_released(m, "anything at all", &out, &stopped), "anything at all");
    CHECK(stopped == -1);
    folo_buf_clear(&out);
    folo_stop_matcher_flush(m, &out);
    CHECK_STR(folo_buf_str(&out), "");
    folo_buf_free(&out);
    folo_stop_matcher_free(m);

    const char *empty[] = {""}; /* ignored */
    const char *chunks[] = {"abc"};
    stop_run r = run_chunks(empty, 1, chunks, 1);
    CHECK_STR(r.text, "abc");
    CHECK(r.stopped == -1);
}

/* Brute force from the definition: the occurrence that ends first, then
 * starts first; the output is the text before it. */
static stop_run reference(const char *const *stops, int n_stops, const char *text) {
    stop_run r = {.stopped = -1};
    size_t n_text = strlen(text), best_end = SIZE_MAX, best_start = 0;
    for (int i = 0; i < n_stops; i++) {
        const char *hit = strstr(text, stops[i]);
        if (!hit) continue;
        size_t start = (size_t)(hit - text), end = start + strlen(stops[i]);
        if (end < best_end || (end == best_end && start < best_start)) {
            best_end = end;
            best_start = start;
            r.stopped = i;
        }
    }
    size_t n_out = r.stopped >= 0 ? best_start : n_text;
    memcpy(r.text, text, n_out);
    r.text[n_out] = '\0';
    return r;
}

static void test_chunking_invariance(void) {
    const char *stops[] = {"abca", "cab", "bb", "aaab"};
    uint64_t state = 99;
    int mismatches = 0;
    for (int t = 0; t < 2000; t++) {
        char text[41];
        int n = 1 + (int)((state = state * 6364136223846793005ull + 1) >> 59);
        for (int i = 0; i < n; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            text[i] = "abcd"[(state >> 33) % 4];
        }
        text[n] = '\0';
        int n_stops = 1 + t % 4;
        stop_run expect = reference(stops, n_stops, text);
        /* Random cuts into chunks. */
        char pieces[40][41];
        const char *chunks[40];
        int n_chunks = 0;
        for (int at = 0; at < n;) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            int len = 1 + (int)((state >> 40) % 5);
            if (at + len > n) len = n - at;
            memcpy(pieces[n_chunks], text + at, (size_t)len);
            pieces[n_chunks][len] = '\0';
            chunks[n_chunks] = pieces[n_chunks];
            n_chunks++;
            at += len;
        }
        stop_run got = run_chunks(stops, n_stops, chunks, n_chunks);
        stop_run bytes = run_bytes(stops, n_stops, text);
        if (strcmp(got.text, expect.text) != 0 || got.stopped != expect.stopped ||
            strcmp(bytes.text, expect.text) != 0 || bytes.stopped != expect.stopped) {
            mismatches++;
            fprintf(stderr, "text '%s' (%d stops): expected '%s'/%d, chunks '%s'/%d, bytes '%s'/%d\n", text,
                    n_stops, expect.text, expect.stopped, got.text, got.stopped, bytes.text, bytes.stopped);
        }
    }
    CHECK(mismatches == 0);
}

int main(void) {
    test_one_chunk();
    test_across_chunks();
    test_at_start();
    test_overlapping_prefixes();
    test_several_stops();
    test_flush_releases_partial();
    test_utf8();
    test_no_stops();
    test_chunking_invariance();
    return check_summary("test_stop");
}
