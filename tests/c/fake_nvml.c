/* A stand-in for libnvidia-ml.so.1 with fixed, known figures (fake_nvml.h),
 * so that the path from NVML to folo's numbers is tested on machines
 * without a GPU: gpu_stats loads it through FOLO_NVML_LIBRARY. It
 * implements exactly the entry points of src/core/nvml_abi.h, checked
 * against those declarations, and counts nvmlInit_v2 against nvmlShutdown
 * (fake_nvml_live_inits) so a test can see that every handle shuts down. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/nvml_abi.h"
#include "fake_nvml.h"

struct nvmlDevice_st {
    int index;
};

static struct nvmlDevice_st devices[2] = {{0}, {1}};
static atomic_int live_inits;
static atomic_ullong memory_queries0, utilization_queries0;

int fake_nvml_live_inits(void);
int fake_nvml_live_inits(void) {
    return atomic_load(&live_inits);
}

static int mode_is(const char *mode) {
    const char *m = getenv("FAKE_NVML_MODE");
    return m && strcmp(m, mode) == 0;
}

nvmlReturn_t nvmlInit_v2(void) {
    if (mode_is("no-driver")) return NVML_ERROR_DRIVER_NOT_LOADED;
    atomic_fetch_add(&live_inits, 1);
    atomic_store(&memory_queries0, 0);
    atomic_store(&utilization_queries0, 0);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void) {
    atomic_fetch_sub(&live_inits, 1);
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_DRIVER_NOT_LOADED: return FAKE_NVML_DRIVER_NOT_LOADED;
    }
    return "Unknown Error";
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *device_count) {
    *device_count = mode_is("no-gpu") ? 0 : 2;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (index >= 2) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devices[index];
    return NVML_SUCCESS;
}

/* What the processes use (the reservation apart), and the total. */
static void memory_of(nvmlDevice_t device, unsigned long long *used, unsigned long long *total) {
    if (device->index == 0) {
        *total = FAKE_NVML_TOTAL0;
        *used = FAKE_NVML_USED0 + atomic_fetch_add(&memory_queries0, 1) * FAKE_NVML_USED0_STEP;
    } else {
        *total = FAKE_NVML_TOTAL1;
        *used = FAKE_NVML_USED1;
    }
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    memory_of(device, &memory->used, &memory->total);
    memory->used += FAKE_NVML_RESERVED;
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

#ifndef FAKE_NVML_V1_ONLY
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    if (memory->version != nvmlMemory_v2) return NVML_ERROR_INVALID_ARGUMENT;
    memory_of(device, &memory->used, &memory->total);
    memory->reserved = FAKE_NVML_RESERVED;
    memory->free = memory->total - memory->used - memory->reserved;
    return NVML_SUCCESS;
}
#endif

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    static const unsigned gpu[2] = FAKE_NVML_UTIL0_GPU, mem[2] = FAKE_NVML_UTIL0_MEMORY;
    if (device->index != 0) return NVML_ERROR_NOT_SUPPORTED;
    unsigned long long k = atomic_fetch_add(&utilization_queries0, 1) % 2;
    utilization->gpu = gpu[k];
    utilization->memory = mem[k];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    const char *s = device->index == 0 ? FAKE_NVML_NAME0 : FAKE_NVML_NAME1;
    if (strlen(s) >= length) return NVML_ERROR_INVALID_ARGUMENT;
    strcpy(name, s);
    return NVML_SUCCESS;
}
