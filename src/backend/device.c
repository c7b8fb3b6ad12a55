#include "backend/device.h"

#include <string.h>

#include "model/gptq.h"

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

/* A GPTQ checkpoint as the CUDA kernels (cuda/gptq.cu) run it: every
 * decoder linear 4-bit, the head float or 4-bit. "dynamic" rules can leave
 * linears float or make them 8-bit (model/config.h); those run on the CPU. */
static int cuda_runs_gptq_layout(const folo_model *m, folo_error *err) {
    for (int layer = 0; layer < m->config.n_layers; layer++)
        for (int id = 0; id < FOLO_N_LINEARS; id++) {
            const folo_tensor *t = folo_layer_linear(&m->layers[layer], (folo_linear_id)id);
            if (!t->quant || t->quant->bits != 4)
                return folo_fail(err, "device cuda: layer %d's %s is %s; the CUDA GPTQ kernels "
                                 "run checkpoints whose every decoder linear is 4-bit (use "
                                 "--device cpu)", layer, strchr(folo_linear_names[id], '.') + 1,
                                 t->quant ? "8-bit" : "not quantized");
        }
    if (m->lm_head.quant && m->lm_head.quant->bits != 4)
        return folo_fail(err, "device cuda: lm_head is %d-bit; the CUDA GPTQ kernels read 4-bit "
                         "linears (use --device cpu)", m->lm_head.quant->bits);
    return 0;
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
    if (model->config.quant.gptq && cuda_runs_gptq_layout(model, err) != 0) return NULL;
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
