/* Reasoning/content split of Qwen3 answers (see reasoning.h). */
#include "server/reasoning.h"

#include <string.h>

static const char k_open[] = "<think>";
static const char k_close[] = "</think>";

void folo_reasoning_init(folo_reasoning *r, bool thinking) {
    memset(r, 0, sizeof *r);
    r->thinking = thinking;
    r->closed = !thinking;
}

void folo_reasoning_free(folo_reasoning *r) { folo_buf_free(&r->held); }

/* The first occurrence of tag in [len] bytes, or NULL. */
static const char *find(const char *s, size_t len, const char *tag) {
    size_t n = strlen(tag);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(s + i, tag, n) == 0) return s + i;
    return NULL;
}

/* The length of the longest tail of s that is a proper prefix of tag. */
static size_t partial_tail(const char *s, size_t len, const char *tag) {
    size_t n = strlen(tag);
    for (size_t k = n - 1 < len ? n - 1 : len; k > 0; k--)
        if (memcmp(s + len - k, tag, k) == 0) return k;
    return 0;
}

void folo_reasoning_feed(folo_reasoning *r, const char *text, size_t len, bool last,
                         folo_buf *reasoning, folo_buf *content) {
    if (r->closed) {
        folo_buf_append(content, text, len);
        return;
    }
    folo_buf_append(&r->held, text, len);
    const char *s = folo_buf_str(&r->held);
    size_t n = r->held.len;
    const char *end = find(s, n, k_close);
    if (!r->opened) {
        const char *open = find(s, end ? (size_t)(end - s) : n, k_open);
        if (open) {
            /* Drop the tag: what the model wrote before it stays reasoning. */
            folo_buf_append(reasoning, s, (size_t)(open - s));
            s = open + strlen(k_open);
            n -= (size_t)(s - folo_buf_str(&r->held));
            r->opened = true;
        }
    }
    if (end) {
        folo_buf_append(reasoning, s, (size_t)(end - s));
        const char *rest = end + strlen(k_close);
        folo_buf_append(content, rest, n - (size_t)(rest - s));
        r->closed = true;
        folo_buf_free(&r->held);
        return;
    }
    size_t keep = 0;
    if (!last) {
        keep = partial_tail(s, n, k_close);
        size_t open_keep = r->opened ? 0 : partial_tail(s, n, k_open);
        if (open_keep > keep) keep = open_keep;
    }
    folo_buf_append(reasoning, s, n - keep);
    /* Move the kept tail to the front (it may overlap what it replaces). */
    folo_buf tail = {0};
    folo_buf_append(&tail, s + n - keep, keep);
    folo_buf_free(&r->held);
    r->held = tail;
}
