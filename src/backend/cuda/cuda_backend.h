/* The CUDA backend, for C callers: the Qwen3 forward pass on one NVIDIA GPU
 * behind the vtable of backend/backend.h. Declared only in builds with
 * FOLO_HAVE_CUDA; reach it through folo_backend_create (backend/device.h),
 * which picks a device at run time. */
#ifndef FOLO_BACKEND_CUDA_CUDA_BACKEND_H
#define FOLO_BACKEND_CUDA_CUDA_BACKEND_H

#include "backend/backend.h"

/* CUDA devices this process can use; 0 when there is none, no driver, or
 * the driver is too old for this build (never an error). */
int folo_cuda_device_count(void);

/* Uploads the model's weights (bf16 on the device; f32 and f16 checkpoints
 * are rounded to bf16), allocates the bf16 KV pool of opt->kv_n_blocks
 * blocks and the activation scratch on device 0. */
folo_backend *folo_backend_cuda_create(const folo_model *model, const folo_backend_options *opt,
                                       folo_error *err);

#endif
