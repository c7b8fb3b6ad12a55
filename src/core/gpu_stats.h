/* Device memory and utilization of the machine's NVIDIA GPUs, read through
 * NVML (the driver's management library, the source of nvidia-smi's
 * figures), for /metrics and the engine's and benchmarks' reports.
 *
 * The library is loaded with dlopen when a handle is opened, never linked,
 * so the binary runs where there is no driver: folo_gpu_stats_open always
 * returns a handle, and on such a machine it reports no device and a
 * one-line reason. FOLO_NVML_LIBRARY names another library file to load
 * instead of libnvidia-ml.so.1 (the tests' fake, tests/c/fake_nvml.c).
 *
 * Devices are NVML's indices (nvidia-smi's order, all GPUs of the machine,
 * whatever CUDA_VISIBLE_DEVICES hides from CUDA). Memory is the device's,
 * not this process's: every process's allocations.
 *
 * Thread safety: a handle does not change after open, and NVML's calls are
 * thread-safe, so any number of threads may sample one handle; open and
 * close are the owner's. Each handle initializes NVML once and shuts it
 * down once (NVML counts them), so independent handles coexist. */
#ifndef FOLO_CORE_GPU_STATS_H
#define FOLO_CORE_GPU_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

#define FOLO_GPU_NAME_BYTES 96

typedef struct folo_gpu_sample {
    int index;                        /* the device's NVML index */
    char name[FOLO_GPU_NAME_BYTES];   /* e.g. "NVIDIA H100 80GB HBM3" */
    /* What every process has allocated, as nvidia-smi shows it (drivers
     * before R510 count the driver's own reservation in too). */
    uint64_t memory_used_bytes;
    uint64_t memory_total_bytes;
    /* Utilization, in percent of the driver's last sample period (1/6 s to
     * 1 s by product); some devices (MIG slices) do not report it. */
    bool has_utilization;
    int gpu_util_pct;                 /* 0..100: a kernel was running */
    int memory_util_pct;              /* 0..100: device memory was read or written */
} folo_gpu_sample;

typedef struct folo_gpu_stats folo_gpu_stats;

/* Loads NVML and counts the devices. Never NULL. */
folo_gpu_stats *folo_gpu_stats_open(void);
/* The number of devices; 0 when NVML is unavailable. */
int folo_gpu_stats_count(const folo_gpu_stats *g);
/* Why there is no device (library missing, no driver, no GPU), one line;
 * NULL when there is one. */
const char *folo_gpu_stats_unavailable_reason(const folo_gpu_stats *g);
/* Reads device (0 .. count-1) now. -1 with err naming the device and the
 * NVML error when its memory cannot be read. */
int folo_gpu_stats_sample(const folo_gpu_stats *g, int device, folo_gpu_sample *out,
                          folo_error *err);
void folo_gpu_stats_close(folo_gpu_stats *g);

/* ---- a sampler for a benchmark's duration --------------------------------
 *
 * folo_gpu_sampler_start samples the device at once and then every
 * period_ms on a thread of its own; folo_gpu_sampler_stop takes a last
 * sample, joins the thread, frees the sampler and reports the run. The
 * first and last samples are the caller's, so a run shorter than the period
 * still has two. */

typedef struct folo_gpu_usage {
    char name[FOLO_GPU_NAME_BYTES];
    uint64_t memory_total_bytes;
    uint64_t peak_memory_used_bytes;  /* over the samples */
    int n_samples;                    /* samples whose memory was read */
    int n_utilization_samples;        /* of those, with utilization (0: none reported) */
    double mean_gpu_util_pct;         /* over n_utilization_samples */
    double mean_memory_util_pct;
} folo_gpu_usage;

typedef struct folo_gpu_sampler folo_gpu_sampler;

/* Never NULL; on a machine without NVML the sampler runs no thread and its
 * stop reports why. period_ms >= 1. */
folo_gpu_sampler *folo_gpu_sampler_start(int device, int period_ms);
/* Stops and frees the sampler. -1 with err (the reason) when no sample
 * could be taken. */
int folo_gpu_sampler_stop(folo_gpu_sampler *s, folo_gpu_usage *out, folo_error *err);

#endif
