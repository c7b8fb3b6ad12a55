/* The KV block pool (src/kv/kv_cache.h): unit tests of each behaviour
 * (counts, prefix matches and their cap, hit counters, LRU eviction order,
 * copy-on-write after fork, all-or-nothing allocation, concurrent
 * duplicates, prefix caching off, the checker itself), then property tests:
 * random admit / step / fork / abort / finish / preempt sequences with
 * folo_kv_check after every operation, while the test plays the backend and
 * keeps a shadow of the token id written into every KV slot, so a prefix
 * hit that maps to the wrong content, a write into a shared or cached block
 * or a lost copy shows up as a slot holding the wrong token. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kv/kv_cache.h"

static void expect_valid(const folo_kv_pool *pool, const folo_kv_seq *const *seqs, int n_seqs) {
    folo_error err = {{0}};
    int rc = folo_kv_check(pool, seqs, n_seqs, &err);
    CHECK_MSG(rc == 0, "%s", err.message);
}

static folo_kv_stats stats_of(const folo_kv_pool *pool) {
    folo_kv_stats s;
    folo_kv_stats_get(pool, &s);
    return s;
}

static void iota(int32_t *t, int n, int32_t first) {
    for (int i = 0; i < n; i++) t[i] = first + i;
}

/* Admission and a one-step prefill of tokens[0..n): returns the matched tokens. */
static int prefill(folo_kv_pool *pool, folo_kv_seq *seq, const int32_t *tokens, int n) {
    int matched = folo_kv_match_prefix(pool, seq, tokens, n, n - 1);
    folo_kv_copy copies[1];
    int n_copies = 0;
    CHECK(folo_kv_allocate(pool, seq, n, matched, copies, &n_copies) == 0);
    CHECK(n_copies == 0);
    folo_kv_commit(pool, seq, tokens, n);
    return matched;
}

static bool same_tokens(const int32_t *a, const int32_t *b, int n) {
    return a && b && memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

/* ---- unit tests ----------------------------------------------------------- */

static void test_create_and_counts(void) {
    CHECK(folo_kv_pool_create(0, 16, true) == NULL);
    CHECK(folo_kv_pool_create(4, 0, true) == NULL);
    folo_kv_pool *pool = folo_kv_pool_create(10, 16, true);
    CHECK(folo_kv_block_size(pool) == 16);
    CHECK(folo_kv_blocks_for(pool, 0) == 0);
    CHECK(folo_kv_blocks_for(pool, 1) == 1);
    CHECK(folo_kv_blocks_for(pool, 16) == 1);
    CHECK(folo_kv_blocks_for(pool, 17) == 2);
    CHECK(folo_kv_available(pool) == 10);

    folo_kv_seq a;
    folo_kv_seq_init(&a);
    folo_kv_copy copies[1];
    int n_copies = 0;
    CHECK(folo_kv_blocks_needed(pool, &a, 35, 0) == 3);
    CHECK(folo_kv_allocate(pool, &a, 35, 0, copies, &n_copies) == 0);
    CHECK(a.n_blocks == 3 && n_copies == 0);
    folo_kv_stats s = stats_of(pool);
    CHECK(s.n_blocks == 10 && s.n_used == 3 && s.n_free == 7 && s.n_cached == 0);
    CHECK(folo_kv_available(pool) == 7);
    for (int i = 0; i < 3; i++) CHECK(folo_kv_block_ref(pool, a.blocks[i]) == 1);
    const folo_kv_seq *live[] = {&a};
    expect_valid(pool, live, 1);

    /* Growing to a size already covered takes nothing; one more token takes a block. */
    CHECK(folo_kv_allocate(pool, &a, 48, 35, copies, &n_copies) == 0);
    CHECK(a.n_blocks == 3);
    CHECK(folo_kv_allocate(pool, &a, 49, 48, copies, &n_copies) == 0);
    CHECK(a.n_blocks == 4 && stats_of(pool).n_used == 4);
    expect_valid(pool, live, 1);

    /* Never committed: nothing hashed, so everything returns to the free list. */
    folo_kv_release(pool, &a);
    s = stats_of(pool);
    CHECK(a.n_blocks == 0 && s.n_free == 10 && s.n_cached == 0 && s.n_used == 0);
    expect_valid(pool, NULL, 0);
    folo_kv_seq_free(&a);
    folo_kv_pool_free(pool);
}

static void test_prefix_match(void) {
    enum { BS = 4 };
    folo_kv_pool *pool = folo_kv_pool_create(32, BS, true);
    int32_t p[10];
    iota(p, 10, 100);
    folo_kv_seq a, b, c;
    folo_kv_seq_init(&a);
    folo_kv_seq_init(&b);
    folo_kv_seq_init(&c);

    CHECK(prefill(pool, &a, p, 10) == 0);                /* empty cache: a miss */
    CHECK(a.n_blocks == 3 && a.n_hashed == 2);
    CHECK(same_tokens(folo_kv_block_tokens(pool, a.blocks[0]), p, BS));
    CHECK(same_tokens(folo_kv_block_tokens(pool, a.blocks[1]), p + BS, BS));
    CHECK(folo_kv_block_tokens(pool, a.blocks[2]) == NULL); /* partial: never hashed */
    folo_kv_stats s = stats_of(pool);
    CHECK(s.queried_tokens == 10 && s.hit_tokens == 0);

    /* Full hit while a is alive: both full blocks shared. */
    CHECK(folo_kv_match_prefix(pool, &b, p, 10, 9) == 8);
    CHECK(b.n_blocks == 2 && b.n_hashed == 2 && b.last_hash == a.last_hash);
    CHECK(b.blocks[0] == a.blocks[0] && b.blocks[1] == a.blocks[1]);
    CHECK(folo_kv_block_ref(pool, a.blocks[0]) == 2);
    s = stats_of(pool);
    CHECK(s.queried_tokens == 20 && s.hit_tokens == 8);
    const folo_kv_seq *live[] = {&a, &b};
    expect_valid(pool, live, 2);
    folo_kv_release(pool, &b);

    /* The cap: at most max_tokens / block_size blocks. */
    CHECK(folo_kv_match_prefix(pool, &b, p, 10, 7) == 4);
    folo_kv_release(pool, &b);
    CHECK(folo_kv_match_prefix(pool, &b, p, 10, 3) == 0);
    CHECK(b.n_blocks == 0 && b.n_hashed == 0 && b.last_hash == 0);
    CHECK(folo_kv_match_prefix(pool, &b, p, 8, 8) == 8); /* a whole-block prompt, uncapped */
    folo_kv_release(pool, &b);
    CHECK(folo_kv_match_prefix(pool, &b, p, 8, 7) == 4); /* capped to leave a token */
    folo_kv_release(pool, &b);
    CHECK(folo_kv_match_prefix(pool, &b, p, 3, 100) == 0); /* shorter than a block */
    s = stats_of(pool);
    CHECK(s.queried_tokens == 20 + 10 + 10 + 8 + 8 + 3);
    CHECK(s.hit_tokens == 8 + 4 + 0 + 8 + 4 + 0);

    /* Partial prefixes: a difference in block 1 keeps block 0; in block 0, nothing. */
    int32_t q[10];
    memcpy(q, p, sizeof q);
    q[6] = 7;
    CHECK(folo_kv_match_prefix(pool, &c, q, 10, 9) == 4);
    CHECK(c.blocks[0] == a.blocks[0]);
    folo_kv_release(pool, &c);
    memcpy(q, p, sizeof q);
    q[0] = 7;
    CHECK(folo_kv_match_prefix(pool, &c, q, 10, 9) == 0);
    /* The same tokens shifted by one block are a different chain. */
    CHECK(folo_kv_match_prefix(pool, &c, p + BS, 6, 6) == 0);

    /* Released, a's full blocks stay cached and are hit from the LRU. */
    int32_t a0 = a.blocks[0], a1 = a.blocks[1];
    folo_kv_release(pool, &a);
    s = stats_of(pool);
    CHECK(s.n_cached == 2 && s.n_used == 0 && s.n_free == 30);
    CHECK(folo_kv_match_prefix(pool, &b, p, 10, 9) == 8);
    CHECK(b.blocks[0] == a0 && b.blocks[1] == a1);
    s = stats_of(pool);
    CHECK(s.n_cached == 0 && s.n_used == 2);
    const folo_kv_seq *live_b[] = {&b};
    expect_valid(pool, live_b, 1);
    folo_kv_release(pool, &b);
    expect_valid(pool, NULL, 0);
    folo_kv_seq_free(&a);
    folo_kv_seq_free(&b);
    folo_kv_seq_free(&c);
    folo_kv_pool_free(pool);
}

static void test_lru_eviction(void) {
    enum { BS = 2 };
    folo_kv_pool *pool = folo_kv_pool_create(6, BS, true);
    int32_t pa[7], pb[5], pc[4], pe[4];
    iota(pa, 7, 10);
    iota(pb, 5, 20);
    iota(pc, 4, 30);
    iota(pe, 4, 40);
    folo_kv_seq a, b, c, d, e;
    folo_kv_seq_init(&a);
    folo_kv_seq_init(&b);
    folo_kv_seq_init(&c);
    folo_kv_seq_init(&d);
    folo_kv_seq_init(&e);

    /* a computes 3 full blocks, b 2; both are released and stay cached. */
    prefill(pool, &a, pa, 6);
    int32_t ab[3];
    memcpy(ab, a.blocks, sizeof ab);
    folo_kv_release(pool, &a); /* LRU: a2 a1 a0 */
    prefill(pool, &b, pb, 4);
    int32_t bb[2];
    memcpy(bb, b.blocks, sizeof bb);
    folo_kv_release(pool, &b); /* LRU: a2 a1 a0 b1 b0 */
    folo_kv_stats s = stats_of(pool);
    CHECK(s.n_cached == 5 && s.n_free == 1 && s.evictions == 0);
    CHECK(folo_kv_available(pool) == 6);

    /* Two blocks: the free one, then the oldest cached, which is a's tail. */
    folo_kv_copy copies[1];
    int n_copies = 0;
    CHECK(folo_kv_allocate(pool, &c, 4, 0, copies, &n_copies) == 0);
    s = stats_of(pool);
    CHECK(s.evictions == 1 && s.n_cached == 4 && s.n_free == 0);
    CHECK(c.blocks[1] == ab[2]);
    CHECK(folo_kv_block_tokens(pool, ab[2]) == NULL);
    CHECK(folo_kv_block_tokens(pool, ab[1]) != NULL);
    const folo_kv_seq *live_c[] = {&c};
    expect_valid(pool, live_c, 1);

    /* The evicted block is no longer matched; its head still is. A hit
     * moves a0, a1 off the LRU; released again, they are the newest. */
    CHECK(folo_kv_match_prefix(pool, &d, pa, 7, 6) == 4);
    CHECK(d.blocks[0] == ab[0] && d.blocks[1] == ab[1]);
    folo_kv_release(pool, &d); /* LRU: b1 b0 a1 a0 */

    CHECK(folo_kv_allocate(pool, &e, 4, 0, copies, &n_copies) == 0);
    CHECK(stats_of(pool).evictions == 3);
    CHECK(folo_kv_block_tokens(pool, bb[0]) == NULL && folo_kv_block_tokens(pool, bb[1]) == NULL);
    CHECK(folo_kv_match_prefix(pool, &d, pb, 5, 4) == 0);
    CHECK(folo_kv_match_prefix(pool, &d, pa, 7, 6) == 4);
    const folo_kv_seq *live[] = {&c, &d, &e};
    expect_valid(pool, live, 3);

    /* Nothing free and nothing evictable: allocation fails. */
    folo_kv_seq f;
    folo_kv_seq_init(&f);
    CHECK(folo_kv_available(pool) == 0);
    CHECK(folo_kv_allocate(pool, &f, 1, 0, copies, &n_copies) == -1);
    CHECK(n_copies == 0 && f.n_blocks == 0);

    folo_kv_release(pool, &c);
    folo_kv_release(pool, &d);
    folo_kv_release(pool, &e);
    expect_valid(pool, NULL, 0);
    CHECK(stats_of(pool).n_used == 0);
    folo_kv_seq_free(&a);
    folo_kv_seq_free(&b);
    folo_kv_seq_free(&c);
    folo_kv_seq_free(&d);
    folo_kv_seq_free(&e);
    folo_kv_seq_free(&f);
    folo_kv_pool_free(pool);
}

static void test_copy_on_write(void) {
    enum { BS = 4 };
    folo_kv_pool *pool = folo_kv_pool_create(32, BS, true);
    int32_t t[12];
    iota(t, 12, 50);
    folo_kv_copy copies[4];
    int n_copies = 0;

    /* Forked mid-block: the child's first write copies the partial block;
     * the parent's block is then private again and is written in place. */
    folo_kv_seq p, ch;
    folo_kv_seq_init(&p);
    folo_kv_seq_init(&ch);
    prefill(pool, &p, t, 6);
    folo_kv_fork(pool, &p, &ch);
    CHECK(ch.n_blocks == 2 && ch.n_hashed == 1 && ch.last_hash == p.last_hash);
    CHECK(folo_kv_block_ref(pool, p.blocks[0]) == 2 && folo_kv_block_ref(pool, p.blocks[1]) == 2);
    const folo_kv_seq *live[] = {&p, &ch};
    expect_valid(pool, live, 2);
    int32_t p1 = p.blocks[1];
    CHECK(folo_kv_blocks_needed(pool, &ch, 7, 6) == 1);
    CHECK(folo_kv_allocate(pool, &ch, 7, 6, copies, &n_copies) == 0);
    CHECK(n_copies == 1 && copies[0].src == p1 && copies[0].dst == ch.blocks[1]);
    CHECK(ch.blocks[1] != p1 && ch.blocks[0] == p.blocks[0]);
    CHECK(folo_kv_block_ref(pool, p1) == 1 && folo_kv_block_ref(pool, p.blocks[0]) == 2);
    CHECK(folo_kv_allocate(pool, &p, 7, 6, copies, &n_copies) == 0);
    CHECK(n_copies == 1 && p.blocks[1] == p1);
    expect_valid(pool, live, 2);
    folo_kv_release(pool, &p);
    folo_kv_release(pool, &ch);

    /* Forked on a block boundary: the next token opens a new block, no copy. */
    n_copies = 0;
    prefill(pool, &p, t, 8);
    folo_kv_fork(pool, &p, &ch);
    CHECK(folo_kv_allocate(pool, &ch, 9, 8, copies, &n_copies) == 0);
    CHECK(n_copies == 0 && ch.n_blocks == 3);
    CHECK(ch.blocks[0] == p.blocks[0] && ch.blocks[1] == p.blocks[1]);
    expect_valid(pool, live, 2);
    folo_kv_release(pool, &p);
    folo_kv_release(pool, &ch);

    /* A shared block allocated ahead but holding nothing computed is
     * replaced by a fresh one without a copy. */
    CHECK(folo_kv_allocate(pool, &p, 8, 0, copies, &n_copies) == 0);
    folo_kv_commit(pool, &p, t, 4);
    folo_kv_fork(pool, &p, &ch);
    CHECK(folo_kv_blocks_needed(pool, &ch, 6, 4) == 1);
    CHECK(folo_kv_allocate(pool, &ch, 6, 4, copies, &n_copies) == 0);
    CHECK(n_copies == 0 && ch.blocks[1] != p.blocks[1] && ch.blocks[0] == p.blocks[0]);
    expect_valid(pool, live, 2);
    folo_kv_release(pool, &p);
    folo_kv_release(pool, &ch);

    /* After a prefix hit the writes start past the shared blocks: no copy. */
    prefill(pool, &p, t, 12);
    CHECK(prefill(pool, &ch, t, 12) == 8);
    CHECK(ch.blocks[0] == p.blocks[0] && ch.blocks[1] == p.blocks[1]);
    CHECK(ch.blocks[2] != p.blocks[2]);
    expect_valid(pool, live, 2);
    folo_kv_release(pool, &p);
    folo_kv_release(pool, &ch);
    expect_valid(pool, NULL, 0);
    folo_kv_seq_free(&p);
    folo_kv_seq_free(&ch);
    folo_kv_pool_free(pool);
}

static void test_all_or_nothing(void) {
    enum { BS = 4 };
    folo_kv_pool *pool = folo_kv_pool_create(4, BS, true);
    int32_t t[16];
    iota(t, 16, 1);
    folo_kv_copy copies[2] = {{-7, -7}, {-7, -7}};
    int n_copies = 0;
    folo_kv_seq a, b;
    folo_kv_seq_init(&a);
    folo_kv_seq_init(&b);

    CHECK(folo_kv_allocate(pool, &a, 12, 0, copies, &n_copies) == 0);
    CHECK(folo_kv_blocks_needed(pool, &b, 8, 0) == 2);
    CHECK(folo_kv_allocate(pool, &b, 8, 0, copies, &n_copies) == -1);
    CHECK(b.n_blocks == 0 && stats_of(pool).n_free == 1);
    CHECK(folo_kv_allocate(pool, &b, 4, 0, copies, &n_copies) == 0);
    folo_kv_release(pool, &a);
    folo_kv_release(pool, &b);

    /* Growth plus a copy, one block short: nothing moves. */
    prefill(pool, &a, t, 6);
    folo_kv_fork(pool, &a, &b);
    CHECK(folo_kv_available(pool) == 2);
    CHECK(folo_kv_blocks_needed(pool, &b, 13, 6) == 3);
    int32_t before[2] = {b.blocks[0], b.blocks[1]};
    folo_kv_stats s0 = stats_of(pool);
    CHECK(folo_kv_allocate(pool, &b, 13, 6, copies, &n_copies) == -1);
    folo_kv_stats s1 = stats_of(pool);
    CHECK(n_copies == 0 && copies[0].src == -7);
    CHECK(b.n_blocks == 2 && b.blocks[0] == before[0] && b.blocks[1] == before[1]);
    CHECK(s0.n_free == s1.n_free && s0.n_used == s1.n_used && s0.n_cached == s1.n_cached);
    CHECK(folo_kv_block_ref(pool, before[1]) == 2);
    const folo_kv_seq *live[] = {&a, &b};
    expect_valid(pool, live, 2);
    CHECK(folo_kv_blocks_needed(pool, &b, 12, 6) == 2);
    CHECK(folo_kv_allocate(pool, &b, 12, 6, copies, &n_copies) == 0);
    CHECK(n_copies == 1 && folo_kv_available(pool) == 0);
    expect_valid(pool, live, 2);
    folo_kv_release(pool, &a);
    folo_kv_release(pool, &b);
    CHECK(folo_kv_available(pool) == 4);
    folo_kv_seq_free(&a);
    folo_kv_seq_free(&b);
    folo_kv_pool_free(pool);
}

static void test_concurrent_duplicates(void) {
    enum { BS = 4 };
    folo_kv_pool *pool = folo_kv_pool_create(16, BS, true);
    int32_t t[12];
    iota(t, 12, 300);
    folo_kv_seq a, b, c, d;
    folo_kv_seq_init(&a);
    folo_kv_seq_init(&b);
    folo_kv_seq_init(&c);
    folo_kv_seq_init(&d);
    folo_kv_copy copies[1];
    int n_copies = 0;

    /* a and b are admitted before either has computed: both miss. */
    CHECK(folo_kv_match_prefix(pool, &a, t, 8, 7) == 0);
    CHECK(folo_kv_match_prefix(pool, &b, t, 8, 7) == 0);
    CHECK(folo_kv_allocate(pool, &a, 8, 0, copies, &n_copies) == 0);
    CHECK(folo_kv_allocate(pool, &b, 8, 0, copies, &n_copies) == 0);
    folo_kv_commit(pool, &a, t, 8);
    folo_kv_commit(pool, &b, t, 8);
    CHECK(b.n_hashed == 2 && b.last_hash == a.last_hash);
    CHECK(folo_kv_block_tokens(pool, a.blocks[1]) != NULL);
    CHECK(folo_kv_block_tokens(pool, b.blocks[0]) == NULL);
    CHECK(folo_kv_block_tokens(pool, b.blocks[1]) == NULL);
    const folo_kv_seq *live[] = {&a, &b, &c, &d};
    expect_valid(pool, live, 2);

    /* b goes on with new content: its block 2 is registered, chained by
     * hash through a's blocks, so a prompt matching all three gets
     * a0 a1 b2. */
    CHECK(folo_kv_allocate(pool, &b, 12, 8, copies, &n_copies) == 0);
    folo_kv_commit(pool, &b, t, 12);
    CHECK(b.n_hashed == 3 && folo_kv_block_tokens(pool, b.blocks[2]) != NULL);
    CHECK(folo_kv_match_prefix(pool, &c, t, 12, 12) == 12);
    CHECK(c.blocks[0] == a.blocks[0] && c.blocks[1] == a.blocks[1] && c.blocks[2] == b.blocks[2]);
    CHECK(folo_kv_match_prefix(pool, &d, t, 8, 8) == 8);
    expect_valid(pool, live, 4);

    /* Released, only registered blocks are cached; b's duplicates are freed. */
    folo_kv_release(pool, &a);
    folo_kv_release(pool, &c);
    folo_kv_release(pool, &d);
    folo_kv_release(pool, &b);
    folo_kv_stats s = stats_of(pool);
    CHECK(s.n_cached == 3 && s.n_free == 13 && s.n_used == 0);
    expect_valid(pool, NULL, 0);
    folo_kv_seq_free(&a);
    folo_kv_seq_free(&b);
    folo_kv_seq_free(&c);
    folo_kv_seq_free(&d);
    folo_kv_pool_free(pool);
}

static void test_prefix_caching_off(void) {
    folo_kv_pool *pool = folo_kv_pool_create(8, 4, false);
    int32_t t[10];
    iota(t, 10, 5);
    folo_kv_seq a, b;
    folo_kv_seq_init(&a);
    folo_kv_seq_init(&b);
    CHECK(prefill(pool, &a, t, 10) == 0);
    CHECK(a.n_hashed == 0 && a.last_hash == 0);
    CHECK(folo_kv_block_tokens(pool, a.blocks[0]) == NULL);
    CHECK(folo_kv_match_prefix(pool, &b, t, 10, 9) == 0 && b.n_blocks == 0);
    folo_kv_release(pool, &a);
    folo_kv_stats s = stats_of(pool);
    CHECK(s.n_free == 8 && s.n_cached == 0 && s.queried_tokens == 0 && s.hit_tokens == 0);
    CHECK(folo_kv_match_prefix(pool, &b, t, 10, 9) == 0);
    expect_valid(pool, NULL, 0);
    folo_kv_seq_free(&a);
    folo_kv_seq_free(&b);
    folo_kv_pool_free(pool);
}

/* The checker must see broken states, or the property tests prove nothing. */
/* Contiguous KV (docs/switches.md): a table that covers more than the
 * tokens computed so far (a sequence's whole reservation). After a fork,
 * each sample's first write takes private copies of every shared block
 * ahead of it at once, copying only the partly computed one; the full
 * blocks behind stay shared. */
static void test_whole_length_reservation(void) {
    folo_kv_pool *pool = folo_kv_pool_create(20, 4, false);
    folo_kv_seq parent, child;
    folo_kv_seq_init(&parent);
    folo_kv_seq_init(&child);
    folo_kv_copy copies[2];
    int n_copies = 0;
    /* 6 prompt tokens + 8 outputs: 14 tokens, 4 blocks up front. */
    CHECK(folo_kv_blocks_needed(pool, &parent, 14, 0) == 4);
    CHECK(folo_kv_allocate(pool, &parent, 14, 0, copies, &n_copies) == 0);
    CHECK(parent.n_blocks == 4 && n_copies == 0 && folo_kv_available(pool) == 16);
    /* Later steps of the prefill and decode need nothing more. */
    CHECK(folo_kv_blocks_needed(pool, &parent, 14, 6) == 0);
    folo_kv_fork(pool, &parent, &child);
    const folo_kv_seq *both[2] = {&parent, &child};
    expect_valid(pool, both, 2);
    /* Blocks 1..3 receive tokens 6..13 and are shared: three new blocks,
     * one copy (block 1 holds tokens 4 and 5). */
    CHECK(folo_kv_blocks_needed(pool, &parent, 14, 6) == 3);
    int32_t old1 = parent.blocks[1];
    CHECK(folo_kv_allocate(pool, &parent, 14, 6, copies, &n_copies) == 0);
    CHECK(n_copies == 1 && copies[0].src == old1 && copies[0].dst == parent.blocks[1]);
    CHECK(folo_kv_available(pool) == 13);
    n_copies = 0;
    CHECK(folo_kv_allocate(pool, &child, 14, 6, copies, &n_copies) == 0);
    CHECK(n_copies == 0 && child.blocks[1] == old1);
    CHECK(parent.blocks[0] == child.blocks[0] && folo_kv_block_ref(pool, parent.blocks[0]) == 2);
    for (int i = 1; i < 4; i++) CHECK(parent.blocks[i] != child.blocks[i]);
    expect_valid(pool, both, 2);
    folo_kv_release(pool, &parent);
    folo_kv_release(pool, &child);
    CHECK(folo_kv_available(pool) == 20);
    folo_kv_seq_free(&parent);
    folo_kv_seq_free(&child);
    folo_kv_pool_free(pool);
}

static void test_check_detects(void) {
    folo_kv_pool *pool = folo_kv_pool_create(8, 4, true);
    int32_t t[10];
    iota(t, 10, 5);
    folo_kv_seq a;
    folo_kv_seq_init(&a);
    prefill(pool, &a, t, 10);
    folo_error err = {{0}};
    const folo_kv_seq *live[] = {&a, &a};
    CHECK(folo_kv_check(pool, live, 1, &err) == 0);
    CHECK(folo_kv_check(pool, NULL, 0, &err) == -1);  /* refs without holders */
    CHECK(strstr(err.message, "ref") != NULL);
    CHECK(folo_kv_check(pool, live, 2, &err) == -1);  /* refs short of holders */

    folo_kv_seq bad = a;
    bad.last_hash ^= 1;
    const folo_kv_seq *live_bad[] = {&bad};
    CHECK(folo_kv_check(pool, live_bad, 1, &err) == -1);
    bad = a;
    int32_t dup[3] = {a.blocks[0], a.blocks[0], a.blocks[2]};
    bad.blocks = dup;
    CHECK(folo_kv_check(pool, live_bad, 1, &err) == -1);
    bad = a;
    int32_t swapped[3] = {a.blocks[1], a.blocks[0], a.blocks[2]};
    bad.blocks = swapped;
    CHECK(folo_kv_check(pool, live_bad, 1, &err) == -1); /* hash chain broken */

    folo_kv_release(pool, &a);
    CHECK(folo_kv_check(pool, NULL, 0, &err) == 0);
    folo_kv_seq_free(&a);
    folo_kv_pool_free(pool);
}

/* ---- property tests ---------------------------------------------------------- */

enum { MAX_SEQS = 8, MAX_TOKENS = 96, N_BASES = 3, BASE_LEN = 48 };

typedef struct sim_seq {
    bool live;
    folo_kv_seq kv;
    int32_t tokens[MAX_TOKENS]; /* prompt, then outputs */
    int n_tokens;
    int n_prompt;
    int n_computed;             /* tokens whose K/V are in the shadow */
} sim_seq;

typedef struct sim {
    folo_kv_pool *pool;
    int bs, n_blocks;
    bool prefix_caching;
    int32_t *shadow;            /* [n_blocks, bs] token id in each KV slot, -1 never written */
    uint8_t *held;              /* [n_blocks] scratch: block is in some live table */
    sim_seq seqs[MAX_SEQS];
    int32_t bases[N_BASES][BASE_LEN];
    uint64_t rng;
    long n_ops, n_hits, n_copies, n_alloc_failures, n_evictions;
} sim;

static uint32_t sim_rand(sim *s, uint32_t n) {
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return (uint32_t)((s->rng >> 16) % n);
}

/* Every invariant after an operation: the pool's own check, every computed
 * token of every live sequence still in its slot, every registered block's
 * slots holding the tokens the pool keeps for it, and the used count. */
static void sim_verify(sim *s) {
    const folo_kv_seq *live[MAX_SEQS];
    int n_live = 0;
    memset(s->held, 0, (size_t)s->n_blocks);
    int n_held = 0;
    for (int k = 0; k < MAX_SEQS; k++) {
        sim_seq *q = &s->seqs[k];
        if (!q->live) continue;
        live[n_live++] = &q->kv;
        for (int pos = 0; pos < q->n_computed; pos++) {
            int32_t b = q->kv.blocks[pos / s->bs];
            int32_t have = s->shadow[(size_t)b * s->bs + pos % s->bs];
            CHECK_MSG(have == q->tokens[pos], "op %ld seq %d pos %d: slot holds %d, want %d",
                      s->n_ops, k, pos, have, q->tokens[pos]);
        }
        for (int i = 0; i < q->kv.n_blocks; i++) {
            n_held += !s->held[q->kv.blocks[i]];
            s->held[q->kv.blocks[i]] = 1;
        }
    }
    folo_error err = {{0}};
    int rc = folo_kv_check(s->pool, live, n_live, &err);
    CHECK_MSG(rc == 0, "op %ld: %s", s->n_ops, err.message);
    for (int32_t b = 0; b < s->n_blocks; b++) {
        const int32_t *t = folo_kv_block_tokens(s->pool, b);
        if (t) CHECK_MSG(same_tokens(t, s->shadow + (size_t)b * s->bs, s->bs),
                         "op %ld: cached block %d's slots differ from its tokens", s->n_ops, b);
    }
    folo_kv_stats st = stats_of(s->pool);
    CHECK_MSG(st.n_used == n_held, "op %ld: %d used, %d held", s->n_ops, st.n_used, n_held);
    CHECK(st.n_used + st.n_free + st.n_cached == s->n_blocks);
}

static int sim_free_slot(sim *s) {
    for (int k = 0; k < MAX_SEQS; k++)
        if (!s->seqs[k].live) return k;
    return -1;
}

static int sim_pick_live(sim *s) {
    int k0 = (int)sim_rand(s, MAX_SEQS);
    for (int i = 0; i < MAX_SEQS; i++) {
        int k = (k0 + i) % MAX_SEQS;
        if (s->seqs[k].live) return k;
    }
    return -1;
}

/* Admission of seqs[k], whose tokens are set: the prefix match, checked
 * against the shadow and for completeness against the other live tables. */
static void sim_admit(sim *s, int k) {
    sim_seq *q = &s->seqs[k];
    int cap = sim_rand(s, 4) == 0 ? (int)sim_rand(s, (uint32_t)q->n_prompt + 1) : q->n_prompt - 1;
    int matched = folo_kv_match_prefix(s->pool, &q->kv, q->tokens, q->n_prompt, cap);
    q->live = true;
    q->n_computed = matched;
    s->n_hits += matched > 0;
    CHECK(matched % s->bs == 0 && matched <= cap && matched <= q->n_prompt);
    CHECK(q->kv.n_blocks == matched / s->bs && q->kv.n_hashed == q->kv.n_blocks);
    if (!s->prefix_caching) CHECK(matched == 0);
    for (int i = 0; i < q->kv.n_blocks; i++)
        CHECK_MSG(same_tokens(folo_kv_block_tokens(s->pool, q->kv.blocks[i]),
                              q->tokens + (size_t)i * s->bs, s->bs),
                  "op %ld: matched block %d holds other tokens", s->n_ops, q->kv.blocks[i]);
    /* A miss at block j is wrong when another live table holds blocks
     * 0..j with this prompt's tokens, all registered: block j is then in
     * the table under exactly the hash the match looked up. */
    int j = matched / s->bs;
    int span = (j + 1) * s->bs;
    if (!s->prefix_caching || span > (cap < q->n_prompt ? cap : q->n_prompt)) return;
    for (int o = 0; o < MAX_SEQS; o++) {
        sim_seq *r = &s->seqs[o];
        if (o == k || !r->live || r->kv.n_hashed <= j || !same_tokens(r->tokens, q->tokens, span))
            continue;
        bool registered = true;
        for (int i = 0; i <= j; i++)
            registered = registered && folo_kv_block_tokens(s->pool, r->kv.blocks[i]) != NULL;
        CHECK_MSG(!registered, "op %ld: seq %d missed block %d cached by seq %d", s->n_ops, k, j,
                  o);
    }
}

static void sim_new_request(sim *s, int k) {
    sim_seq *q = &s->seqs[k];
    const int32_t *base = s->bases[sim_rand(s, N_BASES)];
    int n_shared = (int)sim_rand(s, BASE_LEN + 1);
    int n_suffix = (int)sim_rand(s, 12);
    if (n_shared + n_suffix == 0) n_suffix = 1;
    memcpy(q->tokens, base, (size_t)n_shared * sizeof *base);
    for (int i = 0; i < n_suffix; i++) q->tokens[n_shared + i] = 1000 + (int32_t)sim_rand(s, 3);
    q->n_tokens = q->n_prompt = n_shared + n_suffix;
    sim_admit(s, k);
}

static void sim_finish(sim *s, int k) {
    folo_kv_release(s->pool, &s->seqs[k].kv);
    s->seqs[k].live = false;
}

/* Preemption by recompute: everything released, re-admitted with the whole
 * sequence as its prompt. */
static void sim_preempt(sim *s, int k) {
    sim_seq *q = &s->seqs[k];
    folo_kv_release(s->pool, &q->kv);
    q->n_prompt = q->n_tokens;
    sim_admit(s, k);
}

/* One engine step for seqs[k]: a prefill chunk or a decode, allocated,
 * copied, "computed" into the shadow and committed; sometimes aborted
 * after the allocation. */
static void sim_step(sim *s, int k) {
    sim_seq *q = &s->seqs[k];
    if (q->n_computed == q->n_tokens) {
        if (q->n_tokens == MAX_TOKENS) {
            sim_finish(s, k);
            return;
        }
        q->tokens[q->n_tokens++] = 1000 + (int32_t)sim_rand(s, 3); /* the sampled token */
    }
    int n_left = q->n_tokens - q->n_computed;
    int chunk = 1 + (int)sim_rand(s, 2 * (uint32_t)s->bs + 2);
    int n_total = q->n_computed + (chunk < n_left ? chunk : n_left);

    int32_t before[MAX_TOKENS];
    int n_before = q->kv.n_blocks;
    for (int i = 0; i < n_before; i++) before[i] = q->kv.blocks[i];
    int needed = folo_kv_blocks_needed(s->pool, &q->kv, n_total, q->n_computed);
    int available = folo_kv_available(s->pool);
    folo_kv_copy copies[2];
    int n_copies = 0;
    int64_t evictions = stats_of(s->pool).evictions;
    int rc = folo_kv_allocate(s->pool, &q->kv, n_total, q->n_computed, copies, &n_copies);
    CHECK_MSG((rc == 0) == (needed <= available), "op %ld: rc %d, needed %d, available %d",
              s->n_ops, rc, needed, available);
    if (rc != 0) {
        s->n_alloc_failures++;
        CHECK(n_copies == 0 && q->kv.n_blocks == n_before);
        for (int i = 0; i < n_before; i++) CHECK(q->kv.blocks[i] == before[i]);
        if (q->n_computed > 0 && sim_rand(s, 2)) sim_preempt(s, k);
        return;
    }
    s->n_evictions += stats_of(s->pool).evictions - evictions;
    CHECK(n_copies <= 1);
    int want_blocks = folo_kv_blocks_for(s->pool, n_total);
    CHECK(q->kv.n_blocks == (want_blocks > n_before ? want_blocks : n_before));
    int first_written = q->n_computed / s->bs;
    for (int i = 0; i < first_written && i < n_before; i++) CHECK(q->kv.blocks[i] == before[i]);
    for (int c = 0; c < n_copies; c++) {
        int i = first_written;
        CHECK_MSG(i < n_before && copies[c].src == before[i] && q->kv.blocks[i] == copies[c].dst &&
                  q->n_computed % s->bs != 0, "op %ld: copy of a wrong block", s->n_ops);
        memcpy(s->shadow + (size_t)copies[c].dst * s->bs, s->shadow + (size_t)copies[c].src * s->bs,
               (size_t)s->bs * sizeof *s->shadow);
        s->n_copies++;
    }
    if (sim_rand(s, 10) == 0) { /* aborted before the forward ran */
        sim_finish(s, k);
        return;
    }
    for (int pos = q->n_computed; pos < n_total; pos++) {
        int32_t b = q->kv.blocks[pos / s->bs];
        CHECK_MSG(folo_kv_block_ref(s->pool, b) == 1, "op %ld: write into shared block %d",
                  s->n_ops, b);
        CHECK_MSG(folo_kv_block_tokens(s->pool, b) == NULL, "op %ld: write into cached block %d",
                  s->n_ops, b);
        s->shadow[(size_t)b * s->bs + pos % s->bs] = q->tokens[pos];
    }
    q->n_computed = n_total;
    folo_kv_commit(s->pool, &q->kv, q->tokens, q->n_computed);
    int want_hashed = s->prefix_caching ? q->n_computed / s->bs : 0;
    CHECK(q->kv.n_hashed == want_hashed);
}

static void sim_fork(sim *s, int k) {
    int c = sim_free_slot(s);
    sim_seq *q = &s->seqs[k];
    if (c < 0 || q->n_computed != q->n_tokens) return;
    sim_seq *child = &s->seqs[c];
    folo_kv_fork(s->pool, &q->kv, &child->kv);
    memcpy(child->tokens, q->tokens, (size_t)q->n_tokens * sizeof *q->tokens);
    child->n_tokens = q->n_tokens;
    child->n_prompt = q->n_prompt;
    child->n_computed = q->n_computed;
    child->live = true;
}

static void sim_run(sim *s, int n_ops) {
    for (int op = 0; op < n_ops; op++, s->n_ops++) {
        uint32_t r = sim_rand(s, 100);
        int k = sim_pick_live(s);
        int slot = sim_free_slot(s);
        if (k < 0 || (r < 20 && slot >= 0)) sim_new_request(s, slot);
        else if (r < 75) sim_step(s, k);
        else if (r < 83) sim_fork(s, k);
        else if (r < 94) sim_finish(s, k);
        else sim_preempt(s, k);
        sim_verify(s);
    }
}

typedef struct sim_totals {
    long ops, hits, copies, alloc_failures, evictions;
} sim_totals;

static void property_run(int bs, int n_blocks, bool prefix_caching, uint64_t seed, int n_ops,
                         sim_totals *totals) {
    sim s;
    memset(&s, 0, sizeof s);
    s.bs = bs;
    s.n_blocks = n_blocks;
    s.prefix_caching = prefix_caching;
    s.rng = seed * 0x9e3779b97f4a7c15ULL + 1;
    s.pool = folo_kv_pool_create(n_blocks, bs, prefix_caching);
    s.shadow = malloc((size_t)n_blocks * bs * sizeof *s.shadow);
    s.held = malloc((size_t)n_blocks);
    for (size_t i = 0; i < (size_t)n_blocks * bs; i++) s.shadow[i] = -1;
    /* Bases share a "system prompt" of 10 tokens, then diverge; a small
     * alphabet makes equal blocks at different positions common. */
    for (int b = 0; b < N_BASES; b++)
        for (int i = 0; i < BASE_LEN; i++)
            s.bases[b][i] = i < 10 ? (int32_t)i % 4 : (int32_t)sim_rand(&s, 5) + 10 * b;
    for (int k = 0; k < MAX_SEQS; k++) folo_kv_seq_init(&s.seqs[k].kv);

    sim_run(&s, n_ops);

    for (int k = 0; k < MAX_SEQS; k++) {
        if (s.seqs[k].live) sim_finish(&s, k);
        folo_kv_seq_free(&s.seqs[k].kv);
    }
    folo_kv_stats st = stats_of(s.pool);
    CHECK(st.n_used == 0 && st.n_free + st.n_cached == n_blocks);
    if (!prefix_caching) CHECK(st.n_cached == 0 && st.hit_tokens == 0);
    expect_valid(s.pool, NULL, 0);
    totals->ops += s.n_ops;
    totals->hits += s.n_hits;
    totals->copies += s.n_copies;
    totals->alloc_failures += s.n_alloc_failures;
    totals->evictions += s.n_evictions;
    free(s.shadow);
    free(s.held);
    folo_kv_pool_free(s.pool);
}

static void test_properties(void) {
    static const struct { int bs, n_blocks; bool prefix_caching; } configs[] = {
        {1, 40, true}, {2, 28, true}, {4, 24, true}, {4, 48, true}, {16, 10, true}, {4, 24, false},
    };
    sim_totals t = {0};
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++)
        for (uint64_t seed = 1; seed <= 40; seed++)
            property_run(configs[c].bs, configs[c].n_blocks, configs[c].prefix_caching,
                         seed + 1000 * c, 2000, &t);
    printf("kv properties: %ld random operations, %ld prefix hits, %ld copies, "
           "%ld failed allocations, %ld evictions\n", t.ops, t.hits, t.copies, t.alloc_failures,
           t.evictions);
    /* The runs must reach the interesting paths, or they test little. */
    CHECK(t.hits > 1000 && t.copies > 100 && t.alloc_failures > 100 && t.evictions > 1000);
}

int main(void) {
    test_create_and_counts();
    test_prefix_match();
    test_lru_eviction();
    test_copy_on_write();
    test_all_or_nothing();
    test_concurrent_duplicates();
    test_prefix_caching_off();
    test_whole_length_reservation();
    test_check_detects();
    test_properties();
    return check_summary("test_kv_cache");
}
