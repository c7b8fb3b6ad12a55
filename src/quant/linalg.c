/* Loading LAPACKE and BLAS at run time; see linalg.h. */
#include "quant/linalg.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

#define LAPACKE_LIBRARY "liblapacke.so.3"
#define BLAS_LIBRARY "libblas.so.3"
#define DEBIAN_PACKAGES "liblapacke-dev libopenblas-dev"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static folo_linalg g_table;
static folo_error g_reason; /* why the table is not there */
static int g_loaded;

static void *open_library(const char *env, const char *fallback) {
    const char *path = getenv(env);
    if (!path || !path[0]) path = fallback;
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        folo_fail(&g_reason,
                  "folo quantize needs LAPACKE and a BLAS at run time: %s (Debian: apt-get "
                  "install " DEBIAN_PACKAGES ")",
                  dlerror());
    return lib;
}

/* The entry point `name`, or NULL with the reason set. */
static void *entry(void *lib, const char *library, const char *name) {
    void *p = lib ? dlsym(lib, name) : NULL;
    if (lib && !p && !g_reason.message[0])
        folo_fail(&g_reason, "%s has no %s", library, name);
    return p;
}

static void load(void) {
    /* The handles stay open for the life of the process. */
    void *lapacke = open_library("FOLO_LAPACKE_LIBRARY", LAPACKE_LIBRARY);
    void *blas = lapacke ? open_library("FOLO_BLAS_LIBRARY", BLAS_LIBRARY) : NULL;
    /* POSIX lets a void * from dlsym become a function pointer. */
    g_table.dpotrf = (int (*)(int, char, int, double *, int))entry(lapacke, LAPACKE_LIBRARY,
                                                                   "LAPACKE_dpotrf");
    g_table.dpotri = (int (*)(int, char, int, double *, int))entry(lapacke, LAPACKE_LIBRARY,
                                                                   "LAPACKE_dpotri");
    g_table.dsyrk = (void (*)(int, int, int, int, int, double, const double *, int, double,
                              double *, int))entry(blas, BLAS_LIBRARY, "cblas_dsyrk");
    g_table.dgemm = (void (*)(int, int, int, int, int, int, double, const double *, int,
                              const double *, int, double, double *, int))entry(blas, BLAS_LIBRARY,
                                                                               "cblas_dgemm");
    /* optional: not an error when missing */
    g_table.set_threads = blas ? (void (*)(int))dlsym(blas, "openblas_set_num_threads") : NULL;
    g_loaded = !g_reason.message[0];
}

const folo_linalg *folo_linalg_get(folo_error *err) {
    pthread_once(&g_once, load);
    if (!g_loaded) {
        if (err) *err = g_reason;
        return NULL;
    }
    return &g_table;
}
