/* The CPU forward pass on the tiny model at $FOLO_TEST_MODEL: a flat batch of
 * several sequences (one continuing its prefill, one decoding from its
 * cache, one starting) gives the logits each sequence gets alone, for
 * every row or for some (the last layer then runs on those rows alone, and
 * on none in a step that wants no logits, yet writes every token's K and
 * V, which the later steps read); a prefill
 * fed in chunks gives the one-shot logits; malformed batches are refused
 * with an error, not a crash. Naive attention (--attention naive) equals the
 * online-softmax kernel within f32 rounding, kernel against kernel and in
 * whole forwards, and refuses a score matrix beyond its budget. The weights
 * read in place (no copy in huge pages) give the same logits, bit for bit;
 * with too little address space for that copy, creation fails naming it,
 * where the same limit leaves room for a backend without the copy. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/cpu/attention_naive.h"
#include "backend/cpu/kernels.h"
#include "backend/single_seq.h"
#include "check.h"
#include "mixed_step.h"
#include "model/model.h"

#define BLOCK_SIZE 4
#define N_SEQS 3

static const int k_seq_len[N_SEQS] = {11, 23, 5};

/* Largest |a - b| over n floats. */
static double max_abs_diff(const float *a, const float *b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= worst)) worst = d; /* NaN sticks */
    }
    return worst;
}

/* Logits [n_ids, V] of ids run alone, fed `chunk` tokens per forward, with
 * naive attention within naive_bytes when that is not 0, reading the model's
 * tensors in place when in_place. */
static float *run_alone_with(const folo_model *m, const int32_t *ids, int n_ids, int chunk,
                             size_t naive_bytes, bool in_place) {
    int V = m->config.vocab_size;
    folo_error err = {{0}};
    folo_backend_options bo = {.n_threads = 2,
                               .kv_block_size = BLOCK_SIZE,
                               .naive_attention = naive_bytes > 0,
                               .naive_attention_bytes = naive_bytes,
                               .weights_in_place = in_place};
    bo.kv_n_blocks = folo_single_seq_blocks(n_ids, BLOCK_SIZE);
    folo_backend *b = folo_backend_cpu_create(m, &bo, &err);
    CHECK_MSG(b != NULL, "%s", err.message);
    if (!b) return NULL;
    float *logits = calloc((size_t)n_ids * V, sizeof(float)); /* [n_ids, V] */
    folo_single_seq seq;
    folo_single_seq_init(&seq, n_ids, BLOCK_SIZE);
    for (int first = 0; first < n_ids; first += chunk) {
        int n = n_ids - first < chunk ? n_ids - first : chunk;
        const folo_batch *batch = folo_single_seq_step(&seq, ids + first, n, true);
        int rc = folo_backend_forward(b, batch, logits + (size_t)first * V, &err);
        CHECK_MSG(rc == 0, "%s", err.message);
        folo_single_seq_commit(&seq);
    }
    folo_single_seq_free(&seq);
    folo_backend_destroy(b);
    return logits;
}

static float *run_alone(const folo_model *m, const int32_t *ids, int n_ids, int chunk) {
    return run_alone_with(m, ids, n_ids, chunk, 0, false);
}

/* Which logit rows test_mixed_batch asks for. */
typedef enum {
    EVERY_ROW,
    SOME_ROWS,    /* each sequence's last token and, from 3 tokens on, its first;
                     none at all in the first step */
    SOME_REVERSED /* the same rows last to first */
} row_choice;

static void test_mixed_batch(const folo_model *m, int32_t *const ids[N_SEQS],
                             float *const alone[N_SEQS], row_choice choice) {
    int V = m->config.vocab_size;
    /* The three sequences' blocks ([N_SEQS, 6]), interleaved and out of
     * order in the pool; -1 marks entries past a sequence's length. */
    int32_t tables[N_SEQS * 6] = {
        13, 2, 7, -1, -1, -1, 5, 11, 1, 9, 3, 14, 6, 12, -1, -1, -1, -1,
    };
    folo_error err = {{0}};
    folo_backend_options bo = {.n_threads = 2, .kv_block_size = BLOCK_SIZE, .kv_n_blocks = 16};
    folo_backend *b = folo_backend_cpu_create(m, &bo, &err);
    CHECK_MSG(b != NULL, "%s", err.message);
    if (!b) return;

    /* Step 1: prefill chunks of A (7 tokens) and B (20 tokens).
     * Step 2: A finishes its prefill (4), B decodes one token, C prefills all 5.
     * Step 3: B decodes alone, twice over two steps. */
    static const int plan[][N_SEQS][2] = {
        {{0, 7}, {0, 20}, {0, 0}},
        {{7, 11}, {20, 21}, {0, 5}},
        {{0, 0}, {21, 22}, {0, 0}},
        {{0, 0}, {22, 23}, {0, 0}},
    };
    float *logits = calloc((size_t)64 * V, sizeof(float)); /* [n_tokens, V] */
    double worst = 0.0;
    for (size_t k = 0; k < sizeof plan / sizeof plan[0]; k++) {
        mixed_step st = {0};
        for (int s = 0; s < N_SEQS; s++)
            if (plan[k][s][1] > plan[k][s][0])
                step_add(&st, s, ids[s], plan[k][s][0], plan[k][s][1], tables, 6, BLOCK_SIZE);
        int32_t step_tables[N_SEQS * 6]; /* [n_seqs, 6] rows of the sequences present */
        for (int i = 0; i < st.n_seqs; i++)
            memcpy(step_tables + i * 6, tables + st.seq_index[i] * 6, 6 * sizeof(int32_t));
        int32_t rows[MIXED_STEP_MAX_TOKENS], seq_of[MIXED_STEP_MAX_TOKENS], n_rows = 0;
        for (int i = 0; i < st.n_seqs; i++) {
            int first = st.seq_starts[i], end = st.seq_starts[i + 1];
            for (int t = first; t < end; t++) {
                bool wanted = choice == EVERY_ROW ||
                              (k > 0 && (t == end - 1 || (t == first && end - first >= 3)));
                if (wanted) seq_of[n_rows] = st.seq_index[i], rows[n_rows++] = t;
            }
        }
        for (int r = 0; choice == SOME_REVERSED && r < n_rows / 2; r++) {
            int32_t t = rows[r], s = seq_of[r];
            rows[r] = rows[n_rows - 1 - r], seq_of[r] = seq_of[n_rows - 1 - r];
            rows[n_rows - 1 - r] = t, seq_of[n_rows - 1 - r] = s;
        }
        folo_batch batch = {
            .n_tokens = st.n_tokens,
            .token_ids = st.ids,
            .positions = st.positions,
            .slot_mapping = st.slots,
            .n_seqs = st.n_seqs,
            .seq_starts = st.seq_starts,
            .seq_lens = st.seq_lens,
            .block_tables = step_tables,
            .max_blocks_per_seq = 6,
            .n_logit_rows = n_rows,
            .logit_rows = rows,
        };
        int rc = folo_backend_forward(b, &batch, logits, &err);
        CHECK_MSG(rc == 0, "step %zu: %s", k, err.message);
        for (int r = 0; r < n_rows; r++) {
            double d = max_abs_diff(logits + (size_t)r * V,
                                    alone[seq_of[r]] + (size_t)st.positions[rows[r]] * V,
                                    (size_t)V);
            if (d > worst) worst = d;
        }
    }
    static const char *const names[] = {"every row", "some rows", "some rows reversed"};
    printf("mixed batch (%s) vs each sequence alone: max |diff| %g\n", names[choice], worst);
    CHECK_MSG(worst <= 1e-5, "mixed batch (%s) differs from sequences alone by %g",
              names[choice], worst);
    free(logits);
    folo_backend_destroy(b);
}

static void test_chunked(const folo_model *m, const int32_t *ids, int n_ids,
                         const float *one_shot) {
    int chunks[] = {1, 3, 4, 8};
    for (size_t i = 0; i < 4; i++) {
        float *got = run_alone(m, ids, n_ids, chunks[i]);
        if (!got) return;
        double d = max_abs_diff(got, one_shot, (size_t)n_ids * m->config.vocab_size);
        printf("chunk %d vs one-shot: max |diff| %g\n", chunks[i], d);
        CHECK_MSG(d <= 1e-5, "chunk %d differs from one-shot by %g", chunks[i], d);
        free(got);
    }
}

/* Malformed batches are errors with a message; the backend stays usable. */
static void test_bad_batches(const folo_model *m) {
    folo_error err = {{0}};
    folo_backend_options bo = {.n_threads = 1, .kv_block_size = BLOCK_SIZE, .kv_n_blocks = 2};
    folo_backend *b = folo_backend_cpu_create(m, &bo, &err);
    CHECK_MSG(b != NULL, "%s", err.message);
    if (!b) return;
    float *logits = calloc((size_t)2 * m->config.vocab_size, sizeof(float));
    int32_t ids[2] = {1, 2}, pos[2] = {0, 1}, slots[2] = {0, 1}, starts[2] = {0, 2}, lens[1] = {2};
    int32_t table[2] = {0, 1}, rows[1] = {1};
    folo_batch good = {.n_tokens = 2,
                       .token_ids = ids,
                       .positions = pos,
                       .slot_mapping = slots,
                       .n_seqs = 1,
                       .seq_starts = starts,
                       .seq_lens = lens,
                       .block_tables = table,
                       .max_blocks_per_seq = 2,
                       .n_logit_rows = 1,
                       .logit_rows = rows};
    CHECK(folo_backend_forward(b, &good, logits, &err) == 0);

    folo_batch bad = good;
    int32_t bad_ids[2] = {1, m->config.vocab_size};
    bad.token_ids = bad_ids;
    CHECK(folo_backend_forward(b, &bad, logits, &err) != 0 && strstr(err.message, "vocabulary"));
    bad = good;
    int32_t bad_slots[2] = {0, 5};
    bad.slot_mapping = bad_slots;
    CHECK(folo_backend_forward(b, &bad, logits, &err) != 0 && strstr(err.message, "slot"));
    bad = good;
    int32_t bad_table[2] = {0, 7};
    int32_t long_lens[1] = {6};
    bad.block_tables = bad_table;
    bad.seq_lens = long_lens;
    CHECK(folo_backend_forward(b, &bad, logits, &err) != 0 && strstr(err.message, "block table"));
    bad = good;
    int32_t bad_pos[2] = {0, 2};
    bad.positions = bad_pos;
    CHECK(folo_backend_forward(b, &bad, logits, &err) != 0 && strstr(err.message, "position"));
    bad = good;
    int32_t bad_starts[3] = {0, 5, 2}, two_lens[2] = {2, 2}, two_tables[4] = {0, 1, 0, 1};
    bad.n_seqs = 2;
    bad.seq_starts = bad_starts;
    bad.seq_lens = two_lens;
    bad.block_tables = two_tables;
    CHECK(folo_backend_forward(b, &bad, logits, &err) != 0 && strstr(err.message, "spans"));
    bad = good;
    int32_t bad_rows[1] = {2};
    bad.logit_rows = bad_rows;
    CHECK(folo_backend_forward(b, &bad, logits, &err) != 0 && strstr(err.message, "logit row"));
    CHECK(folo_backend_forward(b, &good, logits, &err) == 0);

    folo_backend_options none = {.n_threads = 1, .kv_block_size = BLOCK_SIZE, .kv_n_blocks = 0};
    CHECK(folo_backend_cpu_create(m, &none, &err) == NULL && strstr(err.message, "kv_n_blocks"));
    free(logits);
    folo_backend_destroy(b);
}

/* The two attention kernels on random queries over a random paged cache:
 * every query of a run of 20 tokens at positions 37..56, blocks shuffled. */
static void test_naive_kernel(void) {
    enum { D = 16, HKV = 2, BS = 4, N_CTX = 57, N_Q = 20, N_BLOCKS = 16 };
    float *k_cache = malloc(sizeof(float) * N_BLOCKS * HKV * BS * D);
    float *v_cache = malloc(sizeof(float) * N_BLOCKS * HKV * BS * D);
    float q[N_Q * D], online[N_Q * D], naive[N_Q * D];
    float *scores = malloc(sizeof(float) * N_Q * N_CTX);
    int32_t table[N_BLOCKS], positions[N_Q];
    uint32_t state = 777;
    for (int i = 0; i < N_BLOCKS * HKV * BS * D; i++) {
        state = state * 1664525u + 1013904223u;
        k_cache[i] = (float)(state >> 8) / (1 << 24) * 4.0f - 2.0f;
        state = state * 1664525u + 1013904223u;
        v_cache[i] = (float)(state >> 8) / (1 << 24) * 2.0f - 1.0f;
    }
    for (int i = 0; i < N_Q * D; i++) {
        state = state * 1664525u + 1013904223u;
        q[i] = (float)(state >> 8) / (1 << 24) * 4.0f - 2.0f;
    }
    for (int i = 0; i < N_BLOCKS; i++) table[i] = (i * 7 + 3) % N_BLOCKS;
    for (int i = 0; i < N_Q; i++) positions[i] = N_CTX - N_Q + i;
    float scale = 0.25f;
    double worst = 0.0;
    for (int kv_head = 0; kv_head < HKV; kv_head++) {
        for (int i = 0; i < N_Q; i++)
            folo_cpu_attention(online + i * D, q + i * D, k_cache, v_cache, FOLO_DTYPE_F32, table,
                               positions[i] + 1, BS, HKV, kv_head, D, scale);
        folo_cpu_attention_naive(naive, D, q, D, positions, N_Q, N_CTX, scores, k_cache, v_cache,
                                 FOLO_DTYPE_F32, table, BS, HKV, kv_head, D, scale);
        double d = max_abs_diff(naive, online, (size_t)N_Q * D);
        if (d > worst) worst = d;
    }
    printf("naive vs online attention kernel: max |diff| %g\n", worst);
    CHECK_MSG(worst <= 1e-5, "naive attention differs from online by %g", worst);
    free(k_cache);
    free(v_cache);
    free(scores);
}

/* Whole forwards with naive attention: one-shot and chunked prefills give
 * the online logits within f32 rounding and the same argmax at every
 * position; a score matrix over the budget is an error naming it. */
static void test_naive_forward(const folo_model *m, const int32_t *ids, int n_ids,
                               const float *online) {
    int V = m->config.vocab_size;
    size_t roomy = (size_t)n_ids * n_ids * sizeof(float);
    int chunks[] = {n_ids, 4};
    for (int c = 0; c < 2; c++) {
        float *got = run_alone_with(m, ids, n_ids, chunks[c], roomy, false);
        if (!got) return;
        double d = max_abs_diff(got, online, (size_t)n_ids * V);
        int argmax_differs = 0;
        for (int t = 0; t < n_ids; t++) {
            const float *a = got + (size_t)t * V, *b = online + (size_t)t * V;
            int ia = 0, ib = 0;
            for (int v = 1; v < V; v++) {
                if (a[v] > a[ia]) ia = v;
                if (b[v] > b[ib]) ib = v;
            }
            argmax_differs += ia != ib;
        }
        printf("naive attention, chunk %d vs online: max |diff| %g\n", chunks[c], d);
        CHECK_MSG(d <= 1e-4, "naive attention (chunk %d) differs by %g", chunks[c], d);
        CHECK_MSG(argmax_differs == 0, "naive attention (chunk %d): %d argmax differ", chunks[c],
                  argmax_differs);
        free(got);
    }
    /* One float short of the one-shot matrix: the whole prompt is refused,
     * chunks of 4 queries fit. */
    folo_error err = {{0}};
    folo_backend_options bo = {.n_threads = 2,
                               .kv_block_size = BLOCK_SIZE,
                               .kv_n_blocks = folo_single_seq_blocks(n_ids, BLOCK_SIZE),
                               .naive_attention = true,
                               .naive_attention_bytes = roomy - sizeof(float)};
    folo_backend *b = folo_backend_cpu_create(m, &bo, &err);
    CHECK_MSG(b != NULL, "%s", err.message);
    if (!b) return;
    float *logits = calloc((size_t)n_ids * V, sizeof(float));
    folo_single_seq seq;
    folo_single_seq_init(&seq, n_ids, BLOCK_SIZE);
    const folo_batch *batch = folo_single_seq_step(&seq, ids, n_ids, true);
    CHECK(folo_backend_forward(b, batch, logits, &err) != 0);
    char want[64];
    snprintf(want, sizeof want, "%d queries over a %d-token context", n_ids, n_ids);
    CHECK_MSG(strstr(err.message, want) && strstr(err.message, "budget"), "%s", err.message);
    folo_single_seq_free(&seq);
    free(logits);
    folo_backend_destroy(b);
    float *chunked = run_alone_with(m, ids, n_ids, 4, roomy - sizeof(float), false);
    CHECK(chunked != NULL && max_abs_diff(chunked, online, (size_t)n_ids * V) <= 1e-4);
    free(chunked);
}

#if !defined(__SANITIZE_ADDRESS__)
/* Bytes of address space this process holds (/proc/self/statm), 0 if unknown. */
static size_t address_space_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f && fscanf(f, "%lu", &pages) != 1) pages = 0;
    if (f) fclose(f);
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}
#endif

/* Memory pressure: an address-space limit with room for everything but the
 * weight copy. AddressSanitizer reserves terabytes of shadow memory, so
 * under it the limit cannot be set and the check is skipped. main keeps
 * glibc to one malloc arena: a thread's arena reserves 64 MiB of address
 * space up front, which a failed mmap would fall back on, so the outcome
 * would depend on which threads had allocated before. */
static void test_weight_copy_out_of_memory(const folo_model *m) {
#if defined(__SANITIZE_ADDRESS__)
    (void)m;
    printf("weight copy out of memory: skipped under AddressSanitizer\n");
#else
    folo_error err = {{0}};
    folo_backend_options bo = {.n_threads = 2, .kv_block_size = BLOCK_SIZE, .kv_n_blocks = 4,
                               .max_batch_tokens = 16, .weights_in_place = true};
    folo_backend *b = folo_backend_cpu_create(m, &bo, &err); /* starts the threads once */
    CHECK_MSG(b != NULL, "%s", err.message);
    folo_backend_destroy(b);
    size_t weights = m->weight_bytes, held = address_space_bytes();
    struct rlimit old;
    CHECK(held > 0 && getrlimit(RLIMIT_AS, &old) == 0);
    /* room for a backend without the copy (its threads' stacks included),
     * not for the copy */
    struct rlimit tight = {.rlim_cur = held + weights / 2, .rlim_max = old.rlim_max};
    CHECK(setrlimit(RLIMIT_AS, &tight) == 0);
    b = folo_backend_cpu_create(m, &bo, &err);
    CHECK_MSG(b != NULL, "in place under the limit: %s", err.message);
    folo_backend_destroy(b);
    bo.weights_in_place = false;
    b = folo_backend_cpu_create(m, &bo, &err);
    CHECK(b == NULL);
    CHECK_MSG(strstr(err.message, "copy of the weights") && strstr(err.message, "--no-weight-copy"),
              "%s", err.message);
    folo_backend_destroy(b);
    setrlimit(RLIMIT_AS, &old);
#endif
}

int main(void) {
    mallopt(M_ARENA_MAX, 1); /* see test_weight_copy_out_of_memory */
    const char *dir = getenv("FOLO_TEST_MODEL");
    if (!dir) {
        fprintf(stderr, "FOLO_TEST_MODEL is not set\n");
        return 1;
    }
    folo_error err = {{0}};
    folo_model *m = folo_model_load(dir, &err);
    CHECK_MSG(m != NULL, "%s", err.message);
    if (!m) return check_summary("test_cpu_forward");

    int32_t *ids[N_SEQS];
    float *alone[N_SEQS];
    uint32_t state = 12345;
    for (int s = 0; s < N_SEQS; s++) {
        ids[s] = malloc(sizeof(int32_t) * k_seq_len[s]);
        for (int i = 0; i < k_seq_len[s]; i++) {
            state = state * 1664525u + 1013904223u;
            ids[s][i] = (int32_t)(state % (uint32_t)m->config.vocab_size);
        }
        alone[s] = run_alone(m, ids[s], k_seq_len[s], k_seq_len[s]);
    }
    if (alone[0] && alone[1] && alone[2]) {
        test_chunked(m, ids[1], k_seq_len[1], alone[1]);
        test_mixed_batch(m, ids, alone, EVERY_ROW);
        test_mixed_batch(m, ids, alone, SOME_ROWS);
        test_mixed_batch(m, ids, alone, SOME_REVERSED);
        test_naive_forward(m, ids[1], k_seq_len[1], alone[1]);
        float *in_place = run_alone_with(m, ids[1], k_seq_len[1], k_seq_len[1], 0, true);
        CHECK(in_place && memcmp(in_place, alone[1],
                                 (size_t)k_seq_len[1] * m->config.vocab_size * sizeof(float)) == 0);
        free(in_place);
    }
    test_naive_kernel();
    test_bad_batches(m);
    test_weight_copy_out_of_memory(m);
    for (int s = 0; s < N_SEQS; s++) free(ids[s]), free(alone[s]);
    folo_model_free(m);
    return check_summary("test_cpu_forward");
}
