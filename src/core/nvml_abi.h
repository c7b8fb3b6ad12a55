/* The part of NVIDIA's management library (NVML, nvml.h) that folo uses,
 * declared here because nvml.h ships with the driver's development files,
 * not with every CUDA toolkit (this build machine's has none), and folo
 * never links the library: gpu_stats.c loads it with dlopen. The types,
 * values and signatures are those of nvml.h (the _v2 entry points of NVML
 * 10 and later); tests/c/fake_nvml.c implements them for the tests.
 *
 * Each entry point is declared through a function type, so the loader's
 * pointers (nvml_init_fn *) and the fake's definitions are checked against
 * the same declaration. */
#ifndef FOLO_CORE_NVML_ABI_H
#define FOLO_CORE_NVML_ABI_H

/* nvmlReturn_t: 0 is success; only the codes folo or its fake name. */
typedef enum nvmlReturn_enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
} nvmlReturn_t;

typedef struct nvmlDevice_st *nvmlDevice_t;

typedef struct nvmlMemory_st {
    unsigned long long total; /* bytes */
    unsigned long long free;  /* bytes */
    unsigned long long used;  /* bytes allocated by all processes (and the driver) */
} nvmlMemory_t;

/* nvmlDeviceGetMemoryInfo_v2's (drivers from R510 on): `used` leaves out
 * what the driver reserves for itself, as nvidia-smi shows it, where the
 * first version's counts it. */
typedef struct nvmlMemory_v2_st {
    unsigned int version;     /* nvmlMemory_v2 */
    unsigned long long total; /* bytes */
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

/* NVML_STRUCT_VERSION(Memory, 2): the struct's size and its version. */
#define nvmlMemory_v2 ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))

/* Percent of the driver's last sample period (1/6 s to 1 s by product). */
typedef struct nvmlUtilization_st {
    unsigned int gpu;    /* a kernel was running */
    unsigned int memory; /* device memory was being read or written */
} nvmlUtilization_t;

/* Long enough for any device name (NVML_DEVICE_NAME_V2_BUFFER_SIZE). */
#define NVML_DEVICE_NAME_V2_BUFFER_SIZE 96

typedef nvmlReturn_t nvml_init_fn(void);
typedef nvmlReturn_t nvml_shutdown_fn(void);
typedef const char *nvml_error_string_fn(nvmlReturn_t result);
typedef nvmlReturn_t nvml_device_get_count_fn(unsigned int *device_count);
typedef nvmlReturn_t nvml_device_get_handle_by_index_fn(unsigned int index,
                                                        nvmlDevice_t *device);
typedef nvmlReturn_t nvml_device_get_memory_info_fn(nvmlDevice_t device, nvmlMemory_t *memory);
typedef nvmlReturn_t nvml_device_get_memory_info_v2_fn(nvmlDevice_t device,
                                                       nvmlMemory_v2_t *memory);
typedef nvmlReturn_t nvml_device_get_utilization_rates_fn(nvmlDevice_t device,
                                                          nvmlUtilization_t *utilization);
typedef nvmlReturn_t nvml_device_get_name_fn(nvmlDevice_t device, char *name,
                                             unsigned int length);

nvml_init_fn nvmlInit_v2;
nvml_shutdown_fn nvmlShutdown;
nvml_error_string_fn nvmlErrorString;
nvml_device_get_count_fn nvmlDeviceGetCount_v2;
nvml_device_get_handle_by_index_fn nvmlDeviceGetHandleByIndex_v2;
nvml_device_get_memory_info_fn nvmlDeviceGetMemoryInfo;
nvml_device_get_memory_info_v2_fn nvmlDeviceGetMemoryInfo_v2;
nvml_device_get_utilization_rates_fn nvmlDeviceGetUtilizationRates;
nvml_device_get_name_fn nvmlDeviceGetName;

#endif
