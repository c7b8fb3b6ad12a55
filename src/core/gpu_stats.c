/* GPU memory and utilization through NVML, loaded at run time (see
 * gpu_stats.h).
 *
 * Opening dlopens the library, looks up every entry point it needs (a
 * missing one means an NVML too old for the _v2 calls, reported by name;
 * nvmlDeviceGetMemoryInfo_v2, of R510 drivers on, is taken when present),
 * initializes NVML and counts the devices. Any failure leaves a handle with
 * no device, the library unloaded and the reason kept; nothing is retried,
 * since a driver does not appear while a process runs. */
#include "core/gpu_stats.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/nvml_abi.h"

#define NVML_LIBRARY "libnvidia-ml.so.1"

struct folo_gpu_stats {
    void *lib;               /* the dlopen handle; NULL when unavailable */
    int n_devices;
    folo_error reason;       /* why n_devices is 0 */
    nvml_shutdown_fn *shutdown;
    nvml_error_string_fn *error_string;
    nvml_device_get_handle_by_index_fn *get_handle;
    nvml_device_get_memory_info_fn *get_memory;
    nvml_device_get_memory_info_v2_fn *get_memory_v2; /* NULL before R510 drivers */
    nvml_device_get_utilization_rates_fn *get_utilization;
    nvml_device_get_name_fn *get_name;
};

/* The entry point name of the open library, or NULL with the reason set
 * (the first missing one is named). */
static void *entry(folo_gpu_stats *g, const char *path, const char *name) {
    void *p = dlsym(g->lib, name);
    if (!p && !g->reason.message[0])
        folo_fail(&g->reason, "%s has no %s (NVML older than version 10?)", path, name);
    return p;
}

/* Unloads the library of a handle that will report no device. */
static folo_gpu_stats *unavailable(folo_gpu_stats *g) {
    dlclose(g->lib);
    g->lib = NULL;
    return g;
}

folo_gpu_stats *folo_gpu_stats_open(void) {
    folo_gpu_stats *g = folo_calloc(1, sizeof *g);
    const char *path = getenv("FOLO_NVML_LIBRARY");
    if (!path || !path[0]) path = NVML_LIBRARY;
    g->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!g->lib) {
        folo_fail(&g->reason, "NVML not loaded: %s", dlerror());
        return g;
    }
    nvml_init_fn *init = (nvml_init_fn *)entry(g, path, "nvmlInit_v2");
    nvml_device_get_count_fn *get_count =
        (nvml_device_get_count_fn *)entry(g, path, "nvmlDeviceGetCount_v2");
    g->shutdown = (nvml_shutdown_fn *)entry(g, path, "nvmlShutdown");
    g->error_string = (nvml_error_string_fn *)entry(g, path, "nvmlErrorString");
    g->get_handle =
        (nvml_device_get_handle_by_index_fn *)entry(g, path, "nvmlDeviceGetHandleByIndex_v2");
    g->get_memory = (nvml_device_get_memory_info_fn *)entry(g, path, "nvmlDeviceGetMemoryInfo");
    g->get_memory_v2 =
        (nvml_device_get_memory_info_v2_fn *)dlsym(g->lib, "nvmlDeviceGetMemoryInfo_v2");
    g->get_utilization = (nvml_device_get_utilization_rates_fn *)entry(
        g, path, "nvmlDeviceGetUtilizationRates");
    g->get_name = (nvml_device_get_name_fn *)entry(g, path, "nvmlDeviceGetName");
    if (g->reason.message[0]) return unavailable(g);
    nvmlReturn_t rc = init();
    if (rc != NVML_SUCCESS) {
        folo_fail(&g->reason, "NVML did not start: %s", g->error_string(rc));
        return unavailable(g);
    }
    unsigned n = 0;
    rc = get_count(&n);
    if (rc != NVML_SUCCESS || n == 0) {
        if (rc != NVML_SUCCESS) folo_fail(&g->reason, "NVML: %s", g->error_string(rc));
        else folo_fail(&g->reason, "NVML sees no GPU");
        g->shutdown();
        return unavailable(g);
    }
    g->n_devices = (int)n;
    return g;
}

int folo_gpu_stats_count(const folo_gpu_stats *g) {
    return g->n_devices;
}

const char *folo_gpu_stats_unavailable_reason(const folo_gpu_stats *g) {
    return g->n_devices ? NULL : g->reason.message;
}

int folo_gpu_stats_sample(const folo_gpu_stats *g, int device, folo_gpu_sample *out,
                          folo_error *err) {
    memset(out, 0, sizeof *out);
    if (g->n_devices == 0) return folo_fail(err, "GPU %d: %s", device, g->reason.message);
    if (device < 0 || device >= g->n_devices)
        return folo_fail(err, "GPU %d: no such device (NVML sees %d)", device, g->n_devices);
    nvmlDevice_t dev;
    nvmlReturn_t rc = g->get_handle((unsigned)device, &dev);
    nvmlMemory_v2_t mem = {.version = nvmlMemory_v2};
    if (rc == NVML_SUCCESS && g->get_memory_v2) {
        rc = g->get_memory_v2(dev, &mem);
    } else if (rc == NVML_SUCCESS) {
        nvmlMemory_t mem_v1 = {0};
        rc = g->get_memory(dev, &mem_v1);
        mem.total = mem_v1.total;
        mem.used = mem_v1.used;
    }
    if (rc != NVML_SUCCESS)
        return folo_fail(err, "GPU %d: NVML: %s", device, g->error_string(rc));
    out->index = device;
    out->memory_used_bytes = mem.used;
    out->memory_total_bytes = mem.total;
    nvmlUtilization_t util;
    if (g->get_utilization(dev, &util) == NVML_SUCCESS) {
        out->has_utilization = true;
        out->gpu_util_pct = (int)util.gpu;
        out->memory_util_pct = (int)util.memory;
    }
    /* A name is a label, not a measurement: a device that will not give it
     * is still sampled. */
    if (g->get_name(dev, out->name, sizeof out->name) != NVML_SUCCESS) out->name[0] = '\0';
    out->name[sizeof out->name - 1] = '\0';
    return 0;
}

void folo_gpu_stats_close(folo_gpu_stats *g) {
    if (!g) return;
    if (g->lib) {
        g->shutdown();
        dlclose(g->lib);
    }
    free(g);
}

/* ---- the sampler ----------------------------------------------------------- */

struct folo_gpu_sampler {
    folo_gpu_stats *g;
    int device;
    int period_ms;
    /* Written by start, then the thread, then stop: never two at once
     * (pthread_create and pthread_join order them). */
    folo_gpu_usage usage;
    double gpu_util_sum_pct, memory_util_sum_pct;
    folo_error last_error;   /* the last failed sample's */
    bool has_thread;
    pthread_t thread;
    pthread_mutex_t mutex;   /* guards stopping */
    pthread_cond_t wake;     /* stopping was set */
    bool stopping;
};

static void take(folo_gpu_sampler *s) {
    folo_gpu_sample x;
    if (folo_gpu_stats_sample(s->g, s->device, &x, &s->last_error) != 0) return;
    folo_gpu_usage *u = &s->usage;
    if (u->n_samples == 0) memcpy(u->name, x.name, sizeof u->name);
    u->n_samples++;
    u->memory_total_bytes = x.memory_total_bytes;
    if (x.memory_used_bytes > u->peak_memory_used_bytes)
        u->peak_memory_used_bytes = x.memory_used_bytes;
    if (x.has_utilization) {
        u->n_utilization_samples++;
        s->gpu_util_sum_pct += x.gpu_util_pct;
        s->memory_util_sum_pct += x.memory_util_pct;
    }
}

static void *sampler_main(void *arg) {
    folo_gpu_sampler *s = arg;
    pthread_mutex_lock(&s->mutex);
    while (!s->stopping) {
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        long long ns = deadline.tv_nsec + (long long)s->period_ms * 1000000;
        deadline.tv_sec += (time_t)(ns / 1000000000);
        deadline.tv_nsec = (long)(ns % 1000000000);
        int rc = 0; /* 0: woken (perhaps spuriously); ETIMEDOUT: the period is over */
        while (!s->stopping && rc == 0) rc = pthread_cond_timedwait(&s->wake, &s->mutex, &deadline);
        if (s->stopping) break;
        /* NVML may take a millisecond or more: stop must not wait on it. */
        pthread_mutex_unlock(&s->mutex);
        take(s);
        pthread_mutex_lock(&s->mutex);
    }
    pthread_mutex_unlock(&s->mutex);
    return NULL;
}

folo_gpu_sampler *folo_gpu_sampler_start(int device, int period_ms) {
    folo_gpu_sampler *s = folo_calloc(1, sizeof *s);
    s->g = folo_gpu_stats_open();
    s->device = device;
    s->period_ms = period_ms > 0 ? period_ms : 1;
    pthread_mutex_init(&s->mutex, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &attr);
    pthread_condattr_destroy(&attr);
    take(s);
    /* Without the device every sample would fail the same way. */
    if (device >= 0 && device < folo_gpu_stats_count(s->g))
        s->has_thread = pthread_create(&s->thread, NULL, sampler_main, s) == 0;
    return s;
}

int folo_gpu_sampler_stop(folo_gpu_sampler *s, folo_gpu_usage *out, folo_error *err) {
    if (s->has_thread) {
        pthread_mutex_lock(&s->mutex);
        s->stopping = true;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->mutex);
        pthread_join(s->thread, NULL);
    }
    take(s);
    *out = s->usage;
    if (out->n_utilization_samples > 0) {
        out->mean_gpu_util_pct = s->gpu_util_sum_pct / out->n_utilization_samples;
        out->mean_memory_util_pct = s->memory_util_sum_pct / out->n_utilization_samples;
    }
    int rc = out->n_samples > 0 ? 0 : folo_fail(err, "%s", s->last_error.message);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mutex);
    folo_gpu_stats_close(s->g);
    free(s);
    return rc;
}
