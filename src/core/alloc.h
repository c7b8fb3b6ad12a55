/* One way to allocate.
 *
 * Small objects use folo_calloc/folo_realloc: allocation failure of a small
 * object is not a recoverable situation for a CLI or server, so they abort
 * with a message. Large buffers (weights, KV pools, activations) use
 * folo_alloc_large, which returns NULL so the caller can report memory
 * pressure as an error naming what it tried to allocate. */
#ifndef FOLO_CORE_ALLOC_H
#define FOLO_CORE_ALLOC_H

#include <stddef.h>

void *folo_calloc(size_t count, size_t size);
void *folo_realloc(void *ptr, size_t size);
char *folo_strdup(const char *s);
char *folo_strndup(const char *s, size_t n);

/* 64-byte aligned (2 MiB aligned and backed by huge pages where the kernel
 * has them, from 2 MiB up), zero-filled; NULL on failure (or bytes == 0).
 * Free with folo_free_large. */
void *folo_alloc_large(size_t bytes);
void folo_free_large(void *ptr);

#endif
