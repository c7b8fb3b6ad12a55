#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

static void reserve(folo_buf *b, size_t extra) {
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    b->data = folo_realloc(b->data, cap);
    b->cap = cap;
}

void folo_buf_append(folo_buf *b, const void *bytes, size_t n) {
    reserve(b, n);
    if (n) memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void folo_buf_puts(folo_buf *b, const char *s) { folo_buf_append(b, s, strlen(s)); }

void folo_buf_printf(folo_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void folo_buf_clear(folo_buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void folo_buf_drop_front(folo_buf *b, size_t n) {
    if (n == 0) return;
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void folo_buf_free(folo_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

const char *folo_buf_str(const folo_buf *b) { return b->data ? b->data : ""; }
