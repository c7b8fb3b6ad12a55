/* The figures the fake NVML library (fake_nvml.c) reports, shared with the
 * tests that check folo reports exactly them (tests/python/
 * test_server_gpu_metrics.py repeats them).
 *
 * Device 0 changes with every query, so that a reader that caches, or a
 * sampler that keeps the wrong peak or mean, is caught: the k-th memory
 * query since nvmlInit_v2 (k = 0, 1, ...) reports FAKE_NVML_USED0 +
 * k x FAKE_NVML_USED0_STEP bytes used, and the k-th utilization query
 * FAKE_NVML_UTIL0_GPU[k % 2] and FAKE_NVML_UTIL0_MEMORY[k % 2] percent.
 * Device 1 is fixed and, like a MIG slice, does not report utilization.
 * The driver reserves FAKE_NVML_RESERVED bytes of each device, which
 * nvmlDeviceGetMemoryInfo counts as used and nvmlDeviceGetMemoryInfo_v2
 * does not; built with FAKE_NVML_V1_ONLY (libfake_nvml_v1.so) the library
 * is an older driver's, without the _v2 call. FAKE_NVML_MODE=no-driver
 * makes nvmlInit_v2 fail, no-gpu makes the device count 0. */
#ifndef FOLO_TESTS_FAKE_NVML_H
#define FOLO_TESTS_FAKE_NVML_H

#define FAKE_NVML_NAME0 "NVIDIA H100 80GB HBM3"
#define FAKE_NVML_TOTAL0 85520809984ULL
#define FAKE_NVML_USED0 1073741824ULL
#define FAKE_NVML_USED0_STEP 1048576ULL
#define FAKE_NVML_UTIL0_GPU {10, 30}
#define FAKE_NVML_UTIL0_MEMORY {5, 15}

#define FAKE_NVML_NAME1 "NVIDIA H200"
#define FAKE_NVML_TOTAL1 150754820096ULL
#define FAKE_NVML_USED1 4242424242ULL

#define FAKE_NVML_RESERVED 503316480ULL

/* The error string of NVML_ERROR_DRIVER_NOT_LOADED, as NVML words it. */
#define FAKE_NVML_DRIVER_NOT_LOADED "Driver Not Loaded"

#endif
