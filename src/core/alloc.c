#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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

/* Buffers of 2 MiB and more start on a 2 MiB boundary and ask the kernel for
 * transparent huge pages (Linux's default THP mode, "madvise", gives them
 * only on request). A stream over 4 KiB pages pays a TLB walk every 4 KiB:
 * on the Zen4 of docs/performance.md a read over huge pages runs about 1.1x
 * faster than over 4 KiB pages, and 1.3x faster than over a file mapping.
 * The advice is only advice: where THP is off, the pages are 4 KiB. */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)

void *folo_alloc_large(size_t bytes) {
    if (bytes == 0) return NULL;
    size_t align = bytes >= HUGE_PAGE_BYTES ? HUGE_PAGE_BYTES : 64;
    size_t rounded = (bytes + align - 1) & ~(align - 1);
    void *p = aligned_alloc(align, rounded);
    if (!p) return NULL;
#if defined(MADV_HUGEPAGE)
    if (align == HUGE_PAGE_BYTES) (void)madvise(p, rounded, MADV_HUGEPAGE);
#endif
    memset(p, 0, rounded);
    return p;
}

void folo_free_large(void *ptr) { free(ptr); }
