#include "backend/device.h"

#include <string.h>

#ifdef FOLO_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

int folo_device_name_valid(const char *name) {
    return name &&
           (strcmp(name, "cpu") == 0 || strcmp(name, "cuda") == 0 || strcmp(name, "auto") == 0);
}

const char *folo_device_resolve_auto(void) {
#ifdef FOLO_HAVE_CUDA
    if (folo_cuda_device_count() > 0) return "cuda";
#endif
    return "cpu";
}

folo_backend *folo_backend_create(const char *device, const folo_model *model,
                                  const folo_backend_options *opt, folo_error *err) {
    if (!device || strcmp(device, "auto") == 0) device = folo_device_resolve_auto();
    if (opt->dtype < FOLO_COMPUTE_AUTO || opt->dtype > FOLO_COMPUTE_BFLOAT16) {
        folo_fail(err, "dtype: %d is not a folo_compute_dtype", (int)opt->dtype);
        return NULL;
    }
    if (strcmp(device, "cpu") == 0) return folo_backend_cpu_create(model, opt, err);
    if (strcmp(device, "cuda") != 0) {
        folo_fail(err, "unknown device '%s' (expected cpu, cuda or auto)", device);
        return NULL;
    }
    if (opt->dtype == FOLO_COMPUTE_FLOAT32) {
        folo_fail(err, "dtype float32: the cuda backend multiplies bf16 activations (use auto or "
                       "bfloat16, or --device cpu)");
        return NULL;
    }
#ifdef FOLO_HAVE_CUDA
    if (folo_cuda_device_count() < 1) {
        folo_fail(err, "device cuda: no CUDA GPU is available on this machine (use --device cpu "
                       "or auto)");
        return NULL;
    }
    return folo_backend_cuda_create(model, opt, err);
#else
    folo_fail(err, "device cuda: this folo was built without the CUDA backend (it needs nvcc "
                   "at configure time and FOLO_CUDA=ON)");
    return NULL;
#endif
}
