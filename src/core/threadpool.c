/* The thread pool of threadpool.h.
 *
 * A run publishes (fn, ctx), sets `pending` to the number of workers and
 * bumps `generation`; each worker runs fn once per generation and counts
 * `pending` down; the caller returns when it reaches zero. A forward pass
 * opens about ten such regions per layer, so their cost matters: waking a
 * thread from a condition variable and waiting for it again costs tens of
 * microseconds (measured about 70 us per region on 2 cores), as much as a
 * decode-sized matmul. So both sides first spin for SPIN_US on the atomic
 * counters, which keeps a back-to-back region at about a microsecond, and
 * only then sleep on the condition variables, so an idle pool costs nothing.
 *
 * The mutex orders going to sleep against waking up: a run bumps
 * `generation` under it and a worker re-checks `generation` under it before
 * waiting, so no wake-up is lost; likewise the last worker signals `done`
 * under it and the caller re-checks `pending` under it before waiting. */
#include "core/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"

/* How long a worker waits for the next run, and the caller for its workers,
 * before sleeping. Longer than the gap between two regions of a forward,
 * short enough that an idle pool soon stops using the CPU. */
#define SPIN_US 200.0
/* Pause instructions between two looks at the clock while spinning. */
#define SPINS_PER_CLOCK 32

struct folo_pool {
    int n_threads;
    pthread_t *threads; /* [n_threads - 1] workers */
    pthread_mutex_t mutex;
    pthread_cond_t wake; /* workers wait for a new generation */
    pthread_cond_t done; /* the caller waits for pending == 0 */
    atomic_ulong generation;
    atomic_int pending;
    atomic_int quit;
    folo_pool_fn fn; /* written before generation is bumped, read after */
    void *ctx;
};

typedef struct {
    folo_pool *pool;
    int index;
} worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

/* Spins up to SPIN_US until generation differs from seen; returns it (seen
 * when the spin ran out). */
static unsigned long spin_for_generation(folo_pool *pool, unsigned long seen) {
    double deadline = now_us() + SPIN_US;
    for (;;) {
        for (int i = 0; i < SPINS_PER_CLOCK; i++) {
            unsigned long gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
            if (gen != seen) return gen;
            cpu_relax();
        }
        if (now_us() > deadline) return seen;
    }
}

/* Spins up to SPIN_US until pending is 0; returns whether it got there. */
static int spin_for_done(folo_pool *pool) {
    double deadline = now_us() + SPIN_US;
    for (;;) {
        for (int i = 0; i < SPINS_PER_CLOCK; i++) {
            if (atomic_load_explicit(&pool->pending, memory_order_acquire) == 0) return 1;
            cpu_relax();
        }
        if (now_us() > deadline) return 0;
    }
}

static void *worker_main(void *arg) {
    worker_arg *w = arg;
    folo_pool *pool = w->pool;
    int index = w->index;
    free(w);
    unsigned long seen = 0;
    for (;;) {
        unsigned long gen = spin_for_generation(pool, seen);
        if (gen == seen) {
            pthread_mutex_lock(&pool->mutex);
            while ((gen = atomic_load(&pool->generation)) == seen && !atomic_load(&pool->quit))
                pthread_cond_wait(&pool->wake, &pool->mutex);
            pthread_mutex_unlock(&pool->mutex);
        }
        if (atomic_load(&pool->quit)) return NULL;
        seen = gen;

        pool->fn(pool->ctx, index, pool->n_threads);

        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool->mutex);
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->mutex);
        }
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
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->quit, 0);
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
    atomic_store(&pool->quit, 1);
    atomic_fetch_add(&pool->generation, 1);
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
    pool->fn = fn;
    pool->ctx = ctx;
    atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_relaxed);
    pthread_mutex_lock(&pool->mutex);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);

    fn(ctx, 0, pool->n_threads);

    if (spin_for_done(pool)) return;
    pthread_mutex_lock(&pool->mutex);
    while (atomic_load(&pool->pending) > 0) pthread_cond_wait(&pool->done, &pool->mutex);
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
