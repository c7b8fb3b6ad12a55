/* GPU stats through NVML loaded at run time (src/core/gpu_stats.h).
 *
 * Without a driver (this machine, CI) every call reports "unavailable" with
 * a one-line reason that says what is missing, over and over without a
 * crash or a leak. With the fake library (fake_nvml.c, path in
 * FOLO_FAKE_NVML; FOLO_FAKE_NVML_V1 an older driver's) the figures are
 * exactly the fake's, the sampler's peak
 * and mean follow from the number of samples it took, and every handle
 * shuts NVML down once. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "core/gpu_stats.h"
#include "fake_nvml.h"

static const char *fake_path;
static int (*fake_live_inits)(void);

static int one_line(const char *s) {
    return s && s[0] && !strchr(s, '\n');
}

/* Opening a library that is not NVML gives no device and the same reason
 * from every call, sampler included. */
static void check_unavailable(const char *library, const char *want_in_reason) {
    setenv("FOLO_NVML_LIBRARY", library, 1);
    for (int round = 0; round < 20; round++) {
        folo_gpu_stats *g = folo_gpu_stats_open();
        CHECK(folo_gpu_stats_count(g) == 0);
        const char *reason = folo_gpu_stats_unavailable_reason(g);
        CHECK_MSG(one_line(reason) && strstr(reason, want_in_reason), "reason '%s'", reason);
        folo_gpu_sample x;
        folo_error err = {{0}};
        x.memory_used_bytes = 1;
        CHECK(folo_gpu_stats_sample(g, 0, &x, &err) == -1);
        CHECK(x.memory_used_bytes == 0);
        CHECK_MSG(strstr(err.message, "GPU 0: ") == err.message && strstr(err.message, reason),
                  "'%s'", err.message);
        folo_gpu_stats_close(g);

        folo_gpu_sampler *s = folo_gpu_sampler_start(0, 1);
        folo_gpu_usage u;
        err.message[0] = '\0';
        CHECK(folo_gpu_sampler_stop(s, &u, &err) == -1);
        CHECK(u.n_samples == 0);
        CHECK_MSG(strstr(err.message, want_in_reason), "'%s'", err.message);
    }
    unsetenv("FOLO_NVML_LIBRARY");
}

static void test_without_nvml(void) {
    check_unavailable("/nonexistent/libnvidia-ml.so.1", "/nonexistent/libnvidia-ml.so.1");
    /* A library without NVML's entry points names the first one missing. */
    check_unavailable("libm.so.6", "libm.so.6 has no nvmlInit_v2");
    /* The real library, wherever this runs: a device, or a readable reason. */
    folo_gpu_stats *g = folo_gpu_stats_open();
    if (folo_gpu_stats_count(g) > 0) {
        CHECK(folo_gpu_stats_unavailable_reason(g) == NULL);
    } else {
        const char *reason = folo_gpu_stats_unavailable_reason(g);
        CHECK_MSG(one_line(reason) && strstr(reason, "NVML"), "reason '%s'", reason);
    }
    folo_gpu_stats_close(g);
    folo_gpu_stats_close(NULL);
}

static void test_fake_figures(void) {
    setenv("FOLO_NVML_LIBRARY", fake_path, 1);
    folo_gpu_stats *g = folo_gpu_stats_open();
    CHECK(folo_gpu_stats_count(g) == 2);
    CHECK(folo_gpu_stats_unavailable_reason(g) == NULL);
    CHECK(fake_live_inits() == 1);

    const int gpu0[2] = FAKE_NVML_UTIL0_GPU, mem0[2] = FAKE_NVML_UTIL0_MEMORY;
    folo_error err = {{0}};
    for (int k = 0; k < 4; k++) {
        folo_gpu_sample x;
        CHECK(folo_gpu_stats_sample(g, 0, &x, &err) == 0);
        CHECK_STR(x.name, FAKE_NVML_NAME0);
        CHECK(x.memory_total_bytes == FAKE_NVML_TOTAL0);
        CHECK(x.memory_used_bytes == FAKE_NVML_USED0 + (uint64_t)k * FAKE_NVML_USED0_STEP);
        CHECK(x.has_utilization);
        CHECK(x.gpu_util_pct == gpu0[k % 2]);
        CHECK(x.memory_util_pct == mem0[k % 2]);
    }
    folo_gpu_sample x;
    CHECK(folo_gpu_stats_sample(g, 1, &x, &err) == 0);
    CHECK_STR(x.name, FAKE_NVML_NAME1);
    CHECK(x.memory_total_bytes == FAKE_NVML_TOTAL1);
    CHECK(x.memory_used_bytes == FAKE_NVML_USED1);
    CHECK(!x.has_utilization && x.gpu_util_pct == 0 && x.memory_util_pct == 0);

    CHECK(folo_gpu_stats_sample(g, 2, &x, &err) == -1);
    CHECK_STR(err.message, "GPU 2: no such device (NVML sees 2)");
    CHECK(folo_gpu_stats_sample(g, -1, &x, &err) == -1);
    CHECK_STR(err.message, "GPU -1: no such device (NVML sees 2)");

    /* A second handle initializes NVML again; each close shuts it once. */
    folo_gpu_stats *g2 = folo_gpu_stats_open();
    CHECK(fake_live_inits() == 2);
    folo_gpu_stats_close(g2);
    CHECK(fake_live_inits() == 1);
    folo_gpu_stats_close(g);
    CHECK(fake_live_inits() == 0);

    /* A driver that does not start, and one that sees no GPU. */
    setenv("FAKE_NVML_MODE", "no-driver", 1);
    g = folo_gpu_stats_open();
    CHECK(folo_gpu_stats_count(g) == 0);
    CHECK_STR(folo_gpu_stats_unavailable_reason(g),
              "NVML did not start: " FAKE_NVML_DRIVER_NOT_LOADED);
    folo_gpu_stats_close(g);
    setenv("FAKE_NVML_MODE", "no-gpu", 1);
    g = folo_gpu_stats_open();
    CHECK(folo_gpu_stats_count(g) == 0);
    CHECK_STR(folo_gpu_stats_unavailable_reason(g), "NVML sees no GPU");
    folo_gpu_stats_close(g);
    CHECK(fake_live_inits() == 0);
    unsetenv("FAKE_NVML_MODE");
    unsetenv("FOLO_NVML_LIBRARY");
}

/* An older driver's library, without nvmlDeviceGetMemoryInfo_v2: the
 * first version's figures, the driver's reservation counted as used. */
static void test_fake_v1(void) {
    const char *path = getenv("FOLO_FAKE_NVML_V1");
    CHECK_MSG(path && path[0], "FOLO_FAKE_NVML_V1 (the fake library's path) is not set");
    if (!path || !path[0]) return;
    setenv("FOLO_NVML_LIBRARY", path, 1);
    folo_gpu_stats *g = folo_gpu_stats_open();
    CHECK(folo_gpu_stats_count(g) == 2);
    folo_gpu_sample x;
    folo_error err = {{0}};
    for (int k = 0; k < 2; k++) {
        CHECK(folo_gpu_stats_sample(g, 0, &x, &err) == 0);
        CHECK(x.memory_used_bytes ==
              FAKE_NVML_USED0 + FAKE_NVML_RESERVED + (uint64_t)k * FAKE_NVML_USED0_STEP);
        CHECK(x.memory_total_bytes == FAKE_NVML_TOTAL0);
    }
    CHECK(folo_gpu_stats_sample(g, 1, &x, &err) == 0);
    CHECK(x.memory_used_bytes == FAKE_NVML_USED1 + FAKE_NVML_RESERVED);
    CHECK(x.memory_total_bytes == FAKE_NVML_TOTAL1);
    folo_gpu_stats_close(g);
    unsetenv("FOLO_NVML_LIBRARY");
}

static void test_fake_sampler(void) {
    setenv("FOLO_NVML_LIBRARY", fake_path, 1);
    const int gpu0[2] = FAKE_NVML_UTIL0_GPU, mem0[2] = FAKE_NVML_UTIL0_MEMORY;
    folo_gpu_usage u;
    folo_error err = {{0}};

    /* A period longer than the run: the first and the last sample only. */
    folo_gpu_sampler *s = folo_gpu_sampler_start(0, 600000);
    CHECK(folo_gpu_sampler_stop(s, &u, &err) == 0);
    CHECK(u.n_samples == 2 && u.n_utilization_samples == 2);
    CHECK_STR(u.name, FAKE_NVML_NAME0);
    CHECK(u.memory_total_bytes == FAKE_NVML_TOTAL0);
    CHECK(u.peak_memory_used_bytes == FAKE_NVML_USED0 + FAKE_NVML_USED0_STEP);
    CHECK(u.mean_gpu_util_pct == (gpu0[0] + gpu0[1]) / 2.0);
    CHECK(u.mean_memory_util_pct == (mem0[0] + mem0[1]) / 2.0);

    /* Sampling every millisecond while the caller sleeps: however many
     * samples were taken, the peak is the last one's and the mean is that
     * of the alternating figures. */
    for (int round = 0; round < 5; round++) {
        s = folo_gpu_sampler_start(0, 1);
        nanosleep(&(struct timespec){.tv_nsec = 20 * 1000000}, NULL);
        CHECK(folo_gpu_sampler_stop(s, &u, &err) == 0);
        int n = u.n_samples, n_even = (n + 1) / 2, n_odd = n / 2;
        CHECK(n >= 2 && u.n_utilization_samples == n);
        CHECK(u.peak_memory_used_bytes ==
              FAKE_NVML_USED0 + (uint64_t)(n - 1) * FAKE_NVML_USED0_STEP);
        CHECK_NEAR(u.mean_gpu_util_pct, (double)(n_even * gpu0[0] + n_odd * gpu0[1]) / n, 1e-9);
        CHECK_NEAR(u.mean_memory_util_pct, (double)(n_even * mem0[0] + n_odd * mem0[1]) / n, 1e-9);
    }

    /* A device without utilization: memory only. */
    s = folo_gpu_sampler_start(1, 1);
    CHECK(folo_gpu_sampler_stop(s, &u, &err) == 0);
    CHECK(u.n_samples >= 2 && u.n_utilization_samples == 0);
    CHECK(u.peak_memory_used_bytes == FAKE_NVML_USED1);
    CHECK(u.mean_gpu_util_pct == 0 && u.mean_memory_util_pct == 0);

    s = folo_gpu_sampler_start(5, 1);
    CHECK(folo_gpu_sampler_stop(s, &u, &err) == -1);
    CHECK_STR(err.message, "GPU 5: no such device (NVML sees 2)");
    CHECK(fake_live_inits() == 0);
    unsetenv("FOLO_NVML_LIBRARY");
}

int main(void) {
    test_without_nvml();
    fake_path = getenv("FOLO_FAKE_NVML");
    CHECK_MSG(fake_path && fake_path[0], "FOLO_FAKE_NVML (the fake library's path) is not set");
    if (!fake_path || !fake_path[0]) return check_summary("test_gpu_stats");
    /* The test holds the fake open too, to read its count of live inits. */
    void *fake = dlopen(fake_path, RTLD_NOW | RTLD_LOCAL);
    CHECK_MSG(fake != NULL, "%s", fake ? "" : dlerror());
    if (fake) {
        fake_live_inits = (int (*)(void))dlsym(fake, "fake_nvml_live_inits");
        CHECK(fake_live_inits != NULL);
    }
    if (fake_live_inits) {
        test_fake_figures();
        test_fake_v1();
        test_fake_sampler();
    }
    if (fake) dlclose(fake);
    return check_summary("test_gpu_stats");
}
