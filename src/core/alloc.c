#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *check(void *p, size_t bytes) {
    if (!p && bytes) {
        fprintf(stderr, "folo: out of memory allocating %zu bytes\n", bytes);
        abort();
    }
    return p;
}

void *folo_calloc(size_t count, size_t size) {
    return check(calloc(count ? count : 1, size ? size : 1), count * size);
}

void *folo_realloc(void *ptr, size_t size) {
    return check(realloc(ptr, size ? size : 1), size);
}

char *folo_strdup(const char *s) { return folo_strndup(s, strlen(s)); }

char *folo_strndup(const char *s, size_t n) {
    char *d = folo_calloc(n + 1, 1);
    memcpy(d, s, n);
    return d;
}

void *folo_alloc_large(size_t bytes) {
    if (bytes == 0) return NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

void folo_free_large(void *ptr) { free(ptr); }
