/* bench_backend: times one backend's forward directly, with no tokenizer,
 * sampler or engine around it, for scripts/gpu-check.sh.
 *
 *   bench_backend MODEL_DIR DEVICE PROMPT_LENS DECODE_STEPS REPEATS
 *   e.g. bench_backend models/qwen3-0.6b cuda 128,512,2048 256 5
 *
 * Prefill: a fresh sequence of N random ids in one forward with the logits
 * of its last token (what TTFT costs inside the backend), REPEATS times
 * after one warm-up; the median and the minimum are reported. Decode:
 * after a 128-token prefill, DECODE_STEPS forwards of one token each,
 * greedy (only the argmax comes back, as the engine asks for greedy
 * requests): batch 1, as a single stream decodes; the median step time and
 * tokens/s, once as the backend runs by default (CUDA graphs on cuda) and
 * once with a second backend made with `eager` (every kernel launched
 * each step), so the graphs' gain is measured in the same run. Every
 * forward returns with the device synchronized, so host clocks time it
 * whole. Prints one JSON object on stdout. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/device.h"
#include "backend/single_seq.h"
#include "core/timer.h"
#include "model/model.h"

#define BLOCK_SIZE 16
#define DECODE_CONTEXT 128
#define MAX_LENS 16

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* "128,512,2048" into lens; the count, or -1 when malformed. */
static int parse_lens(const char *text, int lens[MAX_LENS]) {
    int n = 0;
    const char *p = text;
    while (n < MAX_LENS) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1 << 20 || (*end != ',' && *end != '\0')) return -1;
        lens[n++] = (int)v;
        if (*end == '\0') return n;
        p = end + 1;
    }
    return -1;
}

/* Runs ids[0..n) as a fresh sequence in one forward; returns seconds. */
static double time_prefill(folo_backend *b, const int32_t *ids, int n, float *logits,
                           folo_error *err, int *rc) {
    folo_single_seq seq;
    folo_single_seq_init(&seq, n, BLOCK_SIZE);
    double start = folo_now_s();
    *rc = folo_backend_forward(b, folo_single_seq_step(&seq, ids, n, false), logits, err);
    double elapsed = folo_now_s() - start;
    folo_single_seq_free(&seq);
    return elapsed;
}

/* Median seconds of decode_steps greedy one-token forwards after a
 * DECODE_CONTEXT-token prefill, or -1 with rc set. */
static double time_decode(folo_backend *b, const int32_t *ids, int decode_steps, float *logits,
                          double *samples, folo_error *err, int *rc) {
    folo_single_seq seq;
    folo_single_seq_init(&seq, DECODE_CONTEXT + decode_steps, BLOCK_SIZE);
    *rc = folo_backend_forward(b, folo_single_seq_step(&seq, ids, DECODE_CONTEXT, false), logits,
                               err);
    folo_single_seq_commit(&seq);
    uint8_t argmax_only = 1;
    int32_t argmax;
    for (int s = 0; s < decode_steps && *rc == 0; s++) {
        folo_batch step = *folo_single_seq_step(&seq, ids + DECODE_CONTEXT + s, 1, false);
        step.argmax_only = &argmax_only;
        step.argmax = &argmax;
        double start = folo_now_s();
        *rc = folo_backend_forward(b, &step, logits, err);
        samples[s] = folo_now_s() - start;
        folo_single_seq_commit(&seq);
    }
    folo_single_seq_free(&seq);
    return *rc == 0 ? median(samples, decode_steps) : -1;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: bench_backend MODEL_DIR DEVICE PROMPT_LENS DECODE_STEPS REPEATS\n");
        return 2;
    }
    const char *device = argv[2];
    int lens[MAX_LENS], n_lens = parse_lens(argv[3], lens);
    int decode_steps = atoi(argv[4]), repeats = atoi(argv[5]);
    if (n_lens < 1 || decode_steps < 1 || repeats < 1) {
        fprintf(stderr, "bench_backend: bad prompt lengths, decode steps or repeats\n");
        return 2;
    }
    folo_error err = {{0}};
    folo_model *m = folo_model_load(argv[1], &err);
    if (!m) {
        fprintf(stderr, "bench_backend: %s\n", err.message);
        return 1;
    }
    int max_tokens = DECODE_CONTEXT + decode_steps;
    for (int i = 0; i < n_lens; i++)
        if (lens[i] > max_tokens) max_tokens = lens[i];
    folo_backend_options bo = {.kv_block_size = BLOCK_SIZE,
                               .kv_n_blocks = folo_single_seq_blocks(max_tokens, BLOCK_SIZE),
                               .max_batch_tokens = max_tokens};
    folo_backend *b = folo_backend_create(device, m, &bo, &err);
    if (!b) {
        fprintf(stderr, "bench_backend: %s\n", err.message);
        folo_model_free(m);
        return 1;
    }
    int32_t *ids = malloc((size_t)max_tokens * sizeof *ids);
    srand(1);
    for (int i = 0; i < max_tokens; i++) ids[i] = rand() % 151643;
    float *logits = malloc((size_t)m->config.vocab_size * sizeof(float)); /* [1, V] */
    double *samples =
        malloc((size_t)(repeats > decode_steps ? repeats : decode_steps) * sizeof(double));
    int rc = 0;

    printf("{\"device\": \"%s\", \"model\": \"%s\", \"prefill\": [", b->name, argv[1]);
    for (int i = 0; i < n_lens && rc == 0; i++) {
        time_prefill(b, ids, lens[i], logits, &err, &rc); /* warm-up */
        for (int r = 0; r < repeats && rc == 0; r++)
            samples[r] = time_prefill(b, ids, lens[i], logits, &err, &rc);
        if (rc != 0) break;
        double med = median(samples, repeats);
        printf("%s{\"tokens\": %d, \"median_ms\": %.4f, \"min_ms\": %.4f}", i ? ", " : "", lens[i],
               med * 1e3, samples[0] * 1e3);
    }
    double med = rc == 0 ? time_decode(b, ids, decode_steps, logits, samples, &err, &rc) : -1;
    if (rc == 0)
        printf("], \"decode\": {\"context\": %d, \"steps\": %d, \"median_ms\": %.4f, "
               "\"tokens_per_s\": %.2f}",
               DECODE_CONTEXT, decode_steps, med * 1e3, 1.0 / med);
    if (rc == 0 && strcmp(b->name, "cuda") == 0) {
        folo_backend_destroy(b);
        bo.eager = true;
        b = folo_backend_create(device, m, &bo, &err);
        rc = b ? 0 : -1;
        med = rc == 0 ? time_decode(b, ids, decode_steps, logits, samples, &err, &rc) : -1;
        if (rc == 0)
            printf(", \"decode_eager\": {\"median_ms\": %.4f, \"tokens_per_s\": %.2f}", med * 1e3,
                   1.0 / med);
    }
    printf("%s}\n", rc == 0 ? "" : "]");
    if (rc != 0) fprintf(stderr, "bench_backend: %s\n", err.message);
    free(ids), free(logits), free(samples);
    folo_backend_destroy(b);
    folo_model_free(m);
    return rc != 0 ? 1 : 0;
}
