/* The scoring of src/eval/perplexity.h against answers worked by hand on
 * two-token vocabularies (softmax of [0, ln 3] is [1/4, 3/4]), the
 * invariants that make it trustworthy (a row against itself gives KL 0
 * exactly; the thread count does not change a single bit of the summary),
 * and its refusals. tests/python/test_perplexity.py checks the whole
 * command against transformers and numpy. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/threadpool.h"
#include "eval/perplexity.h"

static void test_hand_worked(void) {
    folo_pool *pool = folo_pool_create(2);
    folo_ppl s;
    folo_error err = {{0}};
    CHECK(folo_ppl_init(&s, 2, 2, true, pool, &err) == 0);
    float ln3 = (float)log(3.0);
    /* Row 0: model [1/4, 3/4], base [1/2, 1/2] (argmax 0, the first of a
     * tie), target 1. Row 1: both [3/4, 1/4], target 0. */
    float model[4] = {0, ln3, ln3, 0};
    float base[4] = {0, 0, ln3, 0};
    int32_t targets[2] = {1, 0};
    CHECK(folo_ppl_add_rows(&s, model, base, targets, 2, &err) == 0);
    /* ln3 is rounded to f32: the exact answers use that value. */
    double p = exp(ln3) / (1 + exp(ln3)); /* 3/4 to f32 precision */
    double kl0 = 0.5 * log(0.5 / (1 - p)) + 0.5 * log(0.5 / p);
    CHECK_NEAR(s.positions[0].kl, kl0, 1e-15);
    CHECK_NEAR(kl0, 0.5 * log(4.0 / 3.0), 1e-7);
    CHECK_NEAR(s.positions[0].nll, -log(p), 1e-15);
    CHECK_NEAR(s.positions[0].nll_base, log(2.0), 1e-15);
    CHECK_NEAR(s.positions[0].delta_p, p - 0.5, 1e-15);
    CHECK(!s.positions[0].same_top);
    CHECK(s.positions[1].kl == 0 && s.positions[1].delta_p == 0 && s.positions[1].same_top);

    folo_ppl_summary sum;
    folo_ppl_summarize(&s, true, &sum);
    CHECK(sum.n == 2);
    CHECK_NEAR(sum.ppl, 1 / p, 1e-12);
    CHECK_NEAR(sum.ppl_err, 0, 1e-12); /* both NLLs equal */
    double nll_base_mean = (log(2.0) - log(p)) / 2;
    CHECK_NEAR(sum.ppl_base, exp(nll_base_mean), 1e-12);
    CHECK_NEAR(sum.ppl_ratio, exp(-log(p) - nll_base_mean), 1e-12);
    CHECK_NEAR(sum.kl_mean, kl0 / 2, 1e-15);
    CHECK_NEAR(sum.kl_err, kl0 / 2, 1e-15); /* sqrt((kl0^2/2 - kl0^2/4) / 1) */
    CHECK_NEAR(sum.kl_median, kl0 / 2, 1e-15);
    CHECK_NEAR(sum.kl_p90, 0.9 * kl0, 1e-15);
    CHECK_NEAR(sum.kl_p99, 0.99 * kl0, 1e-15);
    CHECK(sum.kl_max == s.positions[0].kl);
    CHECK_NEAR(sum.same_top, 0.5, 0);
    CHECK_NEAR(sum.same_top_err, 0.5, 1e-15);
    CHECK_NEAR(sum.delta_p_mean, (p - 0.5) / 2, 1e-15);
    CHECK_NEAR(sum.delta_p_rms, (p - 0.5) / sqrt(2.0), 1e-15);
    folo_ppl_free(&s);
    folo_pool_destroy(pool);
}

static void random_rows(float *x, int n, unsigned seed) {
    srand(seed);
    for (int i = 0; i < n; i++) x[i] = 8.0f * rand() / RAND_MAX - 4.0f;
}

/* Summaries of the same rows on pools of 1 and 3 threads, added in two
 * calls, are equal bit for bit; a row against itself has KL exactly 0. */
static void test_threads_and_self(void) {
    enum { V = 1000, ROWS = 37 };
    float *model = malloc(sizeof(float) * V * ROWS), *base = malloc(sizeof(float) * V * ROWS);
    int32_t targets[ROWS];
    random_rows(model, V * ROWS, 1);
    random_rows(base, V * ROWS, 2);
    for (int r = 0; r < ROWS; r++) targets[r] = (r * 131) % V;
    folo_ppl_summary sums[2];
    for (int t = 0; t < 2; t++) {
        folo_pool *pool = folo_pool_create(t == 0 ? 1 : 3);
        folo_ppl s;
        folo_error err = {{0}};
        CHECK(folo_ppl_init(&s, ROWS, V, true, pool, &err) == 0);
        CHECK(folo_ppl_add_rows(&s, model, base, targets, 20, &err) == 0);
        CHECK(folo_ppl_add_rows(&s, model + 20 * V, base + 20 * V, targets + 20, ROWS - 20,
                                &err) == 0);
        folo_ppl_summarize(&s, true, &sums[t]);
        folo_ppl_free(&s);

        CHECK(folo_ppl_init(&s, ROWS, V, true, pool, &err) == 0);
        CHECK(folo_ppl_add_rows(&s, model, model, targets, ROWS, &err) == 0);
        folo_ppl_summary self;
        folo_ppl_summarize(&s, true, &self);
        CHECK(self.kl_mean == 0 && self.kl_max == 0 && self.same_top == 1);
        CHECK(self.delta_p_rms == 0 && self.ppl == self.ppl_base && self.ppl_ratio == 1);
        folo_ppl_free(&s);
        folo_pool_destroy(pool);
    }
    CHECK(memcmp(&sums[0], &sums[1], sizeof sums[0]) == 0);
    CHECK(sums[0].kl_mean > 0 && sums[0].same_top < 1);
    free(model);
    free(base);
}

static void test_refusals(void) {
    folo_pool *pool = folo_pool_create(1);
    folo_ppl s;
    folo_error err = {{0}};
    float row[2] = {0, 0};
    int32_t target = 2;
    CHECK(folo_ppl_init(&s, 1, 2, false, pool, &err) == 0);
    CHECK(folo_ppl_add_rows(&s, row, NULL, &target, 1, &err) == -1);
    CHECK(strstr(err.message, "target token 2 (row 0) is outside the vocabulary [0, 2)"));
    target = 1;
    CHECK(folo_ppl_add_rows(&s, row, row, &target, 1, &err) == -1);
    CHECK(strstr(err.message, "base logits given"));
    CHECK(folo_ppl_add_rows(&s, row, NULL, &target, 1, &err) == 0);
    CHECK(folo_ppl_add_rows(&s, row, NULL, &target, 1, &err) == -1);
    CHECK(strstr(err.message, "1 more rows would pass the 1 positions reserved"));
    folo_ppl_summary sum;
    folo_ppl_summarize(&s, true, &sum);
    CHECK(sum.n == 1);
    CHECK_NEAR(sum.ppl, 2, 1e-12); /* uniform over two tokens */
    CHECK(sum.kl_mean == 0 && sum.ppl_base == 0);
    folo_ppl_free(&s);
    folo_pool_destroy(pool);
}

int main(void) {
    test_hand_worked();
    test_threads_and_self();
    test_refusals();
    return check_summary("test_perplexity_stats");
}
