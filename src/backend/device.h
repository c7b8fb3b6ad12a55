/* Device selection: the one place that turns a device name into a backend.
 *
 * "cpu" is always there. "cuda" needs a build with the CUDA backend
 * (FOLO_HAVE_CUDA) and a usable GPU at run time; asking for it otherwise is
 * an error that says which of the two is missing. "auto" (or NULL) picks
 * CUDA when both hold and the CPU otherwise, so one binary runs on machines
 * with and without a GPU. Called by the CLI commands and the engine's
 * creator; backends never call it. */
#ifndef FOLO_BACKEND_DEVICE_H
#define FOLO_BACKEND_DEVICE_H

#include "backend/backend.h"

/* 1 when `name` is "cpu", "cuda" or "auto". */
int folo_device_name_valid(const char *name);

/* The device "auto" would pick now: "cuda" or "cpu". */
const char *folo_device_resolve_auto(void);

folo_backend *folo_backend_create(const char *device, const folo_model *model,
                                  const folo_backend_options *opt, folo_error *err);

#endif
