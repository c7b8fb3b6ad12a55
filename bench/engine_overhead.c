/* The engine's own cost per step, with the forward pass taken out.
 *
 * The real engine (scheduler, block pool, batch building, sampling, output
 * processing with incremental detokenization) runs over the stub backend,
 * which answers every forward at once with one-hot logits over Qwen3's
 * vocabulary (V = 151936). R requests with 32-token prompts are added and
 * prefilled; then the steady state, every running sequence decoding one
 * token per step, is timed over --steps steps, for R = 1, 64 and 256 and
 * for greedy and random (temperature 0.8, top-p 0.95) sampling. Reported
 * per step, in microseconds: the total, and its phases from
 * folo_engine_stats (schedule, prepare = building the flat batch,
 * forward = the stub writing R logit rows, sample, output). What the engine
 * adds to a real forward is total - forward. Prints a table, then one JSON
 * line per row.
 *
 * usage: engine_overhead [--steps N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/timer.h"
#include "engine/engine.h"
#include "tokenizer/tokenizer.h"

#define PROMPT_TOKENS 32

typedef struct row {
    int n_seqs;
    const char *sampling;
    double total_us, schedule_us, prepare_us, forward_us, sample_us, output_us;
} row;

/* Qwen3-0.6B's config, as far as the engine reads it. */
static folo_model fake_model(void) {
    folo_model m;
    memset(&m, 0, sizeof m);
    m.config.vocab_size = 151936;
    m.config.max_position_embeddings = 40960;
    m.config.n_eos_token_ids = 2;
    m.config.eos_token_ids[0] = 151645;
    m.config.eos_token_ids[1] = 151643;
    m.generation.n_eos_token_ids = 2;
    m.generation.eos_token_ids[0] = 151645;
    m.generation.eos_token_ids[1] = 151643;
    return m;
}

static int measure(const folo_model *model, const folo_tokenizer *tok, int n_seqs, bool greedy,
                   int steps, row *out) {
    int max_tokens = steps + 8;
    folo_backend_options bo = {
        .kv_block_size = 16,
        .kv_n_blocks = n_seqs * ((PROMPT_TOKENS + max_tokens) / 16 + 2),
    };
    folo_error err = {{0}};
    folo_backend *backend = folo_backend_stub_create(&model->config, &bo, &err);
    folo_engine_options eo = {.max_num_batched_tokens = 8192, .max_num_seqs = n_seqs};
    folo_engine *e = backend ? folo_engine_create_from(model, tok, backend, &eo, &err) : NULL;
    if (!e) {
        fprintf(stderr, "engine_overhead: %s\n", err.message);
        return -1;
    }
    folo_request_params p = folo_request_params_default();
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    if (!greedy) {
        p.sampling.temperature = 0.8f;
        p.sampling.top_p = 0.95f;
        p.sampling.seed = 1;
        p.sampling.has_seed = true;
    }
    int32_t prompt[PROMPT_TOKENS];
    for (int r = 0; r < n_seqs; r++) {
        for (int i = 0; i < PROMPT_TOKENS; i++) prompt[i] = 1000 + 37 * r + i;
        if (folo_engine_add_tokens(e, prompt, PROMPT_TOKENS, &p, NULL, &err) != 0) {
            fprintf(stderr, "engine_overhead: %s\n", err.message);
            folo_engine_destroy(e);
            return -1;
        }
    }
    const folo_output *outs;
    int n_outs;
    /* Prefill (one step) and a few decodes to warm every buffer. */
    for (int i = 0; i < 4; i++) folo_engine_step(e, &outs, &n_outs, &err);
    folo_engine_stats before, after;
    folo_engine_get_stats(e, &before);
    double t0 = folo_now_s();
    for (int i = 0; i < steps; i++) folo_engine_step(e, &outs, &n_outs, &err);
    double wall_s = folo_now_s() - t0;
    folo_engine_get_stats(e, &after);
    double per_step_us = 1e6 / steps;
    *out = (row){
        .n_seqs = n_seqs,
        .sampling = greedy ? "greedy" : "random",
        .total_us = wall_s * per_step_us,
        .schedule_us = (after.schedule_s - before.schedule_s) * per_step_us,
        .prepare_us = (after.prepare_s - before.prepare_s) * per_step_us,
        .forward_us = (after.forward_s - before.forward_s) * per_step_us,
        .sample_us = (after.sample_s - before.sample_s) * per_step_us,
        .output_us = (after.output_s - before.output_s) * per_step_us,
    };
    folo_engine_destroy(e);
    return 0;
}

int main(int argc, char **argv) {
    int steps = 200;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
            steps = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: engine_overhead [--steps N]\n");
            return 2;
        }
    }
    if (steps < 1) steps = 1;
    folo_log_set_level(FOLO_LOG_WARN);
    const char *tok_dir = getenv("FOLO_TOKENIZER_DIR");
    folo_error err = {{0}};
    folo_tokenizer *tok =
        folo_tokenizer_load(tok_dir ? tok_dir : FOLO_SOURCE_DIR "/models/qwen3-tokenizer", &err);
    if (!tok) {
        fprintf(stderr, "engine_overhead: %s\n", err.message);
        return 1;
    }
    folo_model model = fake_model();
    static const int k_seqs[] = {1, 64, 256};
    row rows[6];
    int n_rows = 0;
    for (int g = 0; g < 2; g++)
        for (int i = 0; i < 3; i++)
            if (measure(&model, tok, k_seqs[i], g == 0, steps, &rows[n_rows]) == 0) n_rows++;
    printf("engine overhead per decode step (stub backend, V = %d, %d steps)\n",
           model.config.vocab_size, steps);
    printf("%6s %8s %10s %10s %10s %10s %10s %10s %12s %12s\n", "seqs", "sampling", "total_us",
           "schedule", "prepare", "forward", "sample", "output", "engine_us", "us_per_seq");
    for (int i = 0; i < n_rows; i++) {
        const row *r = &rows[i];
        double engine_us = r->total_us - r->forward_us;
        printf("%6d %8s %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f %12.1f %12.2f\n", r->n_seqs,
               r->sampling, r->total_us, r->schedule_us, r->prepare_us, r->forward_us,
               r->sample_us, r->output_us, engine_us, engine_us / r->n_seqs);
    }
    for (int i = 0; i < n_rows; i++) {
        const row *r = &rows[i];
        printf("{\"bench\": \"engine_overhead\", \"seqs\": %d, \"sampling\": \"%s\", "
               "\"total_us\": %.1f, \"schedule_us\": %.1f, \"prepare_us\": %.1f, "
               "\"forward_us\": %.1f, \"sample_us\": %.1f, \"output_us\": %.1f, "
               "\"engine_us\": %.1f}\n",
               r->n_seqs, r->sampling, r->total_us, r->schedule_us, r->prepare_us, r->forward_us,
               r->sample_us, r->output_us, r->total_us - r->forward_us);
    }
    folo_tokenizer_free(tok);
    return 0;
}
