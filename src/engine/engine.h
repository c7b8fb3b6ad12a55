/* The engine's internal entry points, beyond the public API of folo.h.
 *
 * folo_engine_create loads everything from a model directory; the
 * constructor here assembles an engine from parts the caller already has,
 * so a benchmark can put the stub backend (which computes nothing) under
 * the real scheduler, sampler and output processing, and tests can pick
 * the pool size exactly. */
#ifndef FOLO_ENGINE_ENGINE_H
#define FOLO_ENGINE_ENGINE_H

#include "backend/backend.h"
#include "folo.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

/* model and tok are borrowed (only model->config and model->generation are
 * read) and must outlive the engine; backend is owned from here on, even on
 * failure. The KV pool gets backend->kv_n_blocks blocks of
 * backend->kv_block_size tokens; opt->model_dir, block_size and
 * kv_memory_bytes are not read (n_threads sizes the sampling threads). */
folo_engine *folo_engine_create_from(const folo_model *model, const folo_tokenizer *tok,
                                     folo_backend *backend, const folo_engine_options *opt,
                                     folo_error *err);

/* Checks the scheduler's queues and the block pool's invariants
 * (folo_sched_check) between steps, on the engine thread; for tests. */
int folo_engine_check(folo_engine *e, folo_error *err);

#endif
