/* The in-process engine driver of the bench modes (see driver.h). */
#include "bench/driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/timer.h"

void folo_bench_steps_add(folo_bench_steps *dst, const folo_bench_steps *src) {
    dst->n_prefill_steps += src->n_prefill_steps;
    dst->n_decode_steps += src->n_decode_steps;
    dst->prefill_s += src->prefill_s;
    dst->decode_s += src->decode_s;
    if (src->peak_blocks_used > 0 && src->peak_blocks_used >= dst->peak_blocks_used) {
        dst->peak_blocks_used = src->peak_blocks_used;
        dst->peak_tokens_stored = src->peak_tokens_stored;
    }
    dst->stored_token_steps += src->stored_token_steps;
    dst->held_token_steps += src->held_token_steps;
}

void folo_bench_driver_init(folo_bench_driver *d, folo_engine *engine, folo_bench_record *records,
                            int cap, bool keep_outputs, folo_progress *bar, int *n_done) {
    memset(d, 0, sizeof *d);
    d->engine = engine;
    d->cap = cap;
    d->records = records;
    d->n_tokens = folo_calloc((size_t)cap, sizeof *d->n_tokens);
    d->arrival_s = folo_calloc((size_t)cap, sizeof *d->arrival_s);
    if (keep_outputs) {
        d->output_ids = folo_calloc((size_t)cap, sizeof *d->output_ids);
        d->n_output_ids = folo_calloc((size_t)cap, sizeof *d->n_output_ids);
    }
    d->bar = bar;
    d->n_done = n_done;
}

void folo_bench_driver_free(folo_bench_driver *d) {
    if (d->output_ids)
        for (int i = 0; i < d->cap; i++) free(d->output_ids[i]);
    free(d->output_ids);
    free(d->n_output_ids);
    free(d->n_tokens);
    free(d->arrival_s);
    memset(d, 0, sizeof *d);
}

int folo_bench_driver_add(folo_bench_driver *d, const folo_bench_request *r, double arrival_s,
                          folo_error *err) {
    FOLO_ASSERT(d->n_added < d->cap);
    folo_request_params params = folo_request_params_default();
    params.max_tokens = r->max_tokens;
    params.ignore_eos = true;
    uint64_t id;
    if (folo_engine_add_tokens(d->engine, r->prompt, r->n_prompt, &params, &id, err))
        return folo_fail_prefix(err, "request %d", d->n_added);
    if (d->n_added == 0) d->first_id = id;
    FOLO_ASSERT(id == d->first_id + (uint64_t)d->n_added);
    d->arrival_s[d->n_added++] = arrival_s;
    return 0;
}

/* Fills the record (and the kept ids) of request `index`, finished by out. */
static void finish(folo_bench_driver *d, int index, const folo_output *out) {
    const folo_request_metrics *m = out->metrics;
    folo_bench_record *r = &d->records[index];
    r->ok = out->finish_reason == FOLO_FINISH_STOP || out->finish_reason == FOLO_FINISH_LENGTH;
    if (!r->ok)
        snprintf(r->error, sizeof r->error, "engine finished the request by %s",
                 out->finish_reason == FOLO_FINISH_ERROR ? "an error" : "an abort");
    r->n_prompt_tokens = m->n_prompt_tokens;
    r->arrival_s = d->arrival_s[index] > 0 ? d->arrival_s[index] : m->arrival_s;
    r->first_scheduled_s = m->first_scheduled_s;
    r->first_token_s = m->first_token_s;
    r->finish_s = m->finish_s;
    folo_bench_record_set_times(r, m->token_times_s, m->n_output_tokens);
    if (d->output_ids) {
        size_t bytes = (size_t)out->n_all_token_ids * sizeof(int32_t);
        d->output_ids[index] = folo_calloc((size_t)out->n_all_token_ids, sizeof(int32_t));
        memcpy(d->output_ids[index], out->all_token_ids, bytes);
        d->n_output_ids[index] = out->n_all_token_ids;
    }
    d->n_finished++;
    if (d->bar && d->n_done) folo_progress_update(d->bar, ++*d->n_done);
}

int folo_bench_driver_step(folo_bench_driver *d, folo_error *err) {
    folo_engine_stats before, after;
    folo_engine_get_stats(d->engine, &before);
    const folo_output *outs;
    int n_outs;
    double t0 = folo_now_s();
    if (folo_engine_step(d->engine, &outs, &n_outs, err)) return -1;
    double step_s = folo_now_s() - t0;
    folo_engine_get_stats(d->engine, &after);
    folo_bench_steps *s = &d->steps;
    int64_t scheduled = after.n_scheduled_tokens - before.n_scheduled_tokens;
    int64_t sampled = after.n_output_tokens - before.n_output_tokens;
    if (scheduled > sampled) {
        s->n_prefill_steps++;
        s->prefill_s += step_s;
    } else if (scheduled > 0) {
        s->n_decode_steps++;
        s->decode_s += step_s;
    }
    for (int i = 0; i < n_outs; i++) {
        const folo_output *out = &outs[i];
        uint64_t index = out->request_id - d->first_id;
        FOLO_ASSERT(index < (uint64_t)d->n_added);
        d->n_tokens[index] = out->n_all_token_ids;
        if (out->finish_reason != FOLO_FINISH_NONE) finish(d, (int)index, out);
    }
    if (after.kv_blocks_used > 0 && after.kv_blocks_used >= s->peak_blocks_used) {
        s->peak_blocks_used = after.kv_blocks_used;
        s->peak_tokens_stored = after.kv_tokens_stored;
    }
    s->stored_token_steps += (double)after.kv_tokens_stored;
    s->held_token_steps += (double)after.kv_blocks_used * after.kv_block_size;
    return 0;
}

int folo_bench_driver_finish(folo_bench_driver *d, folo_error *err) {
    while (d->n_finished < d->n_added)
        if (folo_bench_driver_step(d, err)) return -1;
    return 0;
}

int folo_bench_driver_run_timed(folo_bench_driver *d, const folo_bench_request *requests, int n,
                                double *t0_s, folo_error *err) {
    double t0 = *t0_s = folo_now_s();
    int next = 0;
    while (next < n || d->n_finished < d->n_added) {
        double now = folo_now_s() - t0;
        for (; next < n && requests[next].send_at_s <= now; next++)
            if (folo_bench_driver_add(d, &requests[next], t0 + requests[next].send_at_s, err))
                return -1;
        if (d->n_finished < d->n_added) {
            if (folo_bench_driver_step(d, err)) return -1;
        } else if (next < n) {
            folo_sleep_until_s(t0 + requests[next].send_at_s);
        }
    }
    return 0;
}
