/* Stop strings over streamed text; the design is in stop.h.
 *
 * State: `held` is the text received but not yet released. Between calls it
 * is always a (possibly empty) proper prefix of some stop string, so it never
 * exceeds the longest stop string minus one byte, and the search on each feed
 * covers only held + the new chunk: an occurrence that started before `held`
 * would have made the released text end in a stop prefix, which the hold-back
 * rule never allows. */
#include "engine/stop.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

struct folo_stop_matcher {
    char **stops;        /* [n_stops] NUL-terminated copies */
    size_t *stop_bytes;  /* [n_stops] lengths; 0 for ignored empty strings */
    int n_stops;
    folo_buf held;       /* unreleased text */
    int stopped;         /* index of the stop string that fired, or -1 */
};

folo_stop_matcher *folo_stop_matcher_create(const char *const *stops, int n_stops) {
    folo_stop_matcher *m = folo_calloc(1, sizeof *m);
    m->stopped = -1;
    m->n_stops = n_stops > 0 ? n_stops : 0;
    if (m->n_stops > 0) {
        m->stops = folo_calloc((size_t)m->n_stops, sizeof *m->stops);
        m->stop_bytes = folo_calloc((size_t)m->n_stops, sizeof *m->stop_bytes);
        for (int i = 0; i < m->n_stops; i++) {
            m->stops[i] = folo_strdup(stops[i]);
            m->stop_bytes[i] = strlen(stops[i]);
        }
    }
    return m;
}

void folo_stop_matcher_free(folo_stop_matcher *m) {
    if (!m) return;
    for (int i = 0; i < m->n_stops; i++) free(m->stops[i]);
    free(m->stops);
    free(m->stop_bytes);
    folo_buf_free(&m->held);
    free(m);
}

/* Start of the first occurrence of needle in hay, or -1. */
static long find_bytes(const char *hay, size_t n_hay, const char *needle, size_t n_needle) {
    if (n_needle > n_hay) return -1;
    for (size_t i = 0; i + n_needle <= n_hay; i++) {
        if (hay[i] == needle[0] && memcmp(hay + i, needle, n_needle) == 0) return (long)i;
    }
    return -1;
}

/* Length of the longest suffix of text that is a proper prefix of a stop. */
static size_t held_suffix_bytes(const folo_stop_matcher *m, const char *text, size_t n_text) {
    size_t best = 0;
    for (int i = 0; i < m->n_stops; i++) {
        size_t n_stop = m->stop_bytes[i];
        size_t longest = n_stop > 0 ? n_stop - 1 : 0;
        if (longest > n_text) longest = n_text;
        for (size_t n = longest; n > best; n--) {
            if (memcmp(text + n_text - n, m->stops[i], n) == 0) {
                best = n;
                break;
            }
        }
    }
    return best;
}

int folo_stop_matcher_feed(folo_stop_matcher *m, const char *text, size_t n_bytes, folo_buf *out) {
    if (m->stopped >= 0) return m->stopped;
    folo_buf_append(&m->held, text, n_bytes);
    const char *held = folo_buf_str(&m->held);
    size_t n_held = m->held.len;

    /* The occurrence that completes first; ties go to the one starting first. */
    long best_start = -1;
    size_t best_end = 0;
    for (int i = 0; i < m->n_stops; i++) {
        if (m->stop_bytes[i] == 0) continue;
        long start = find_bytes(held, n_held, m->stops[i], m->stop_bytes[i]);
        if (start < 0) continue;
        size_t end = (size_t)start + m->stop_bytes[i];
        if (best_start < 0 || end < best_end || (end == best_end && start < best_start)) {
            best_start = start;
            best_end = end;
            m->stopped = i;
        }
    }
    if (m->stopped >= 0) {
        folo_buf_append(out, held, (size_t)best_start);
        folo_buf_clear(&m->held);
        return m->stopped;
    }

    size_t n_keep = held_suffix_bytes(m, held, n_held);
    folo_buf_append(out, held, n_held - n_keep);
    folo_buf_drop_front(&m->held, n_held - n_keep);
    return -1;
}

void folo_stop_matcher_flush(folo_stop_matcher *m, folo_buf *out) {
    if (m->stopped < 0) folo_buf_append(out, folo_buf_str(&m->held), m->held.len);
    folo_buf_clear(&m->held);
}

int folo_stop_matcher_stopped(const folo_stop_matcher *m) { return m->stopped; }
