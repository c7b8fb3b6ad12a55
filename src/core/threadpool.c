#include "core/threadpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/alloc.h"

struct folo_pool {
    int n_threads;
    pthread_t *threads;      /* [n_threads - 1] workers */
    pthread_mutex_t mutex;
    pthread_cond_t wake;     /* workers wait for a new generation */
    pthread_cond_t done;     /* the caller waits for pending == 0 */
    unsigned long generation;
    int pending;
    int quit;
    folo_pool_fn fn;
    void *ctx;
};

typedef struct {
    folo_pool *pool;
    int index;
} worker_arg;

static void *worker_main(void *arg) {
    worker_arg *w = arg;
    folo_pool *pool = w->pool;
    int index = w->index;
    free(w);
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&pool->mutex);
        while (pool->generation == seen && !pool->quit) pthread_cond_wait(&pool->wake, &pool->mutex);
        if (pool->quit) {
            pthread_mutex_unlock(&pool->mutex);
            return NULL;
        }
        seen = pool->generation;
        folo_pool_fn fn = pool->fn;
        void *ctx = pool->ctx;
        pthread_mutex_unlock(&pool->mutex);

        fn(ctx, index, pool->n_threads);

        pthread_mutex_lock(&pool->mutex);
        if (--pool->pending == 0) pthread_cond_signal(&pool->done);
        pthread_mutex_unlock(&pool->mutex);
    }
}

folo_pool *folo_pool_create(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    folo_pool *pool = folo_calloc(1, sizeof *pool);
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    pool->threads = folo_calloc((size_t)n_threads, sizeof(pthread_t));
    for (int i = 1; i < n_threads; i++) {
        worker_arg *w = folo_calloc(1, sizeof *w);
        w->pool = pool;
        w->index = i;
        pthread_create(&pool->threads[i - 1], NULL, worker_main, w);
    }
    return pool;
}

void folo_pool_destroy(folo_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mutex);
    pool->quit = 1;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 1; i < pool->n_threads; i++) pthread_join(pool->threads[i - 1], NULL);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->done);
    free(pool->threads);
    free(pool);
}

int folo_pool_size(const folo_pool *pool) { return pool->n_threads; }

void folo_pool_run(folo_pool *pool, folo_pool_fn fn, void *ctx) {
    if (pool->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool->mutex);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->pending = pool->n_threads - 1;
    pool->generation++;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);

    fn(ctx, 0, pool->n_threads);

    pthread_mutex_lock(&pool->mutex);
    while (pool->pending > 0) pthread_cond_wait(&pool->done, &pool->mutex);
    pthread_mutex_unlock(&pool->mutex);
}

void folo_split(size_t n, size_t align, int i, int n_threads, size_t *begin, size_t *end) {
    if (align == 0) align = 1;
    size_t chunks = (n + align - 1) / align;
    size_t per = chunks / (size_t)n_threads, extra = chunks % (size_t)n_threads;
    size_t c0 = (size_t)i * per + ((size_t)i < extra ? (size_t)i : extra);
    size_t c1 = c0 + per + ((size_t)i < extra ? 1 : 0);
    *begin = c0 * align < n ? c0 * align : n;
    *end = c1 * align < n ? c1 * align : n;
}
