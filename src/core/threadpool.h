/* A persistent pool of worker threads for data-parallel loops.
 *
 * folo_pool_run(pool, fn, ctx) calls fn(ctx, i, n) once on each of the n
 * threads (the caller is thread 0) and returns when all have finished; fn
 * splits its work by i. Threads are created once; between runs they spin
 * briefly (a forward's regions follow each other within microseconds), then
 * sleep, so a parallel region costs about a microsecond, not a thread
 * creation or a condition-variable wake-up. Not reentrant: one run at a time
 * per pool. */
#ifndef FOLO_CORE_THREADPOOL_H
#define FOLO_CORE_THREADPOOL_H

#include <stddef.h>

typedef struct folo_pool folo_pool;
typedef void (*folo_pool_fn)(void *ctx, int thread_index, int n_threads);

/* n_threads <= 0 picks the number of online CPUs. */
folo_pool *folo_pool_create(int n_threads);
void folo_pool_destroy(folo_pool *pool);
int folo_pool_size(const folo_pool *pool);
void folo_pool_run(folo_pool *pool, folo_pool_fn fn, void *ctx);

/* The [begin, end) share of n items for thread i of n_threads, in chunks
 * that are multiples of `align` (except the last). */
void folo_split(size_t n, size_t align, int i, int n_threads, size_t *begin, size_t *end);

#endif
