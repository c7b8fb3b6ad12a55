/* The Qwen3 reasoning parser of folo serve (src/server/reasoning.c): each
 * answer splits into the expected reasoning and content, the same whether
 * it comes whole, in two deltas cut at every byte, or one byte at a time
 * (tags split across tokens). Oracle: the split vLLM's Qwen3ReasoningParser
 * gives these texts. */
#include "check.h"
#include "server/reasoning.h"

typedef struct split_case {
    bool thinking;
    const char *text;
    const char *reasoning;
    const char *content;
} split_case;

static const split_case k_cases[] = {
    {true, "<think>\nabc\n</think>\n\nhello", "\nabc\n", "\n\nhello"},
    {true, "abc</think>xyz", "abc", "xyz"},
    {true, "cut short, still thinking <th", "cut short, still thinking <th", ""},
    {true, "a < b </thin", "a < b </thin", ""},
    {true, "", "", ""},
    {true, "x</think>", "x", ""},
    {true, "<think>a</think>b</think>c<think>", "a", "b</think>c<think>"},
    {true, "<<think>>", "<>", ""},
    {true, "héllo</think>wörld", "héllo", "wörld"},
    {false, "<think>a</think>b", "", "<think>a</think>b"},
    {false, "plain", "", "plain"},
};

/* Feeds text cut at the given positions ([n_cuts] ascending). */
static void run(const split_case *c, const size_t *cuts, int n_cuts, folo_buf *reasoning,
                folo_buf *content) {
    folo_reasoning r;
    folo_reasoning_init(&r, c->thinking);
    size_t len = strlen(c->text), at = 0;
    for (int i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : len;
        folo_reasoning_feed(&r, c->text + at, to - at, i == n_cuts, reasoning, content);
        at = to;
    }
    folo_reasoning_free(&r);
}

static void expect(const split_case *c, const size_t *cuts, int n_cuts) {
    folo_buf reasoning = {0}, content = {0};
    run(c, cuts, n_cuts, &reasoning, &content);
    CHECK_MSG(strcmp(folo_buf_str(&reasoning), c->reasoning) == 0 &&
                  strcmp(folo_buf_str(&content), c->content) == 0,
              "'%s' in %d cuts (first %zu): reasoning '%s', content '%s'", c->text, n_cuts,
              n_cuts ? cuts[0] : 0, folo_buf_str(&reasoning), folo_buf_str(&content));
    folo_buf_free(&reasoning);
    folo_buf_free(&content);
}

int main(void) {
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) {
        const split_case *c = &k_cases[i];
        size_t len = strlen(c->text);
        expect(c, NULL, 0);
        for (size_t cut = 0; cut <= len; cut++) expect(c, &cut, 1);
        size_t bytes[64];
        for (size_t b = 0; b < len; b++) bytes[b] = b + 1;
        expect(c, bytes, (int)len);
    }
    return check_summary("test_reasoning");
}
