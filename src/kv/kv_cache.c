/* The block pool behind kv_cache.h.
 *
 * Implementation notes:
 * - Per-block state lives in parallel arrays indexed by block id. The free
 *   list and the LRU list are intrusive doubly-linked lists threaded through
 *   one pair of prev/next arrays: a block with ref 0 is on exactly one of
 *   them (the LRU when it is registered in the prefix table), a block with
 *   ref > 0 on neither. Allocation pops the free list's head, or evicts the
 *   LRU head when the free list is empty; both O(1).
 * - The prefix table is open addressing with linear probing over block ids,
 *   sized at creation to a power of two >= 2 * n_blocks (load <= 1/2), with
 *   backward-shift deletion so no tombstones build up. At most one entry per
 *   hash: the first block registered with some content keeps the entry; an
 *   equal block computed concurrently by another sequence stays unregistered.
 * - A block "hashed" (KV_HASHED) has its hash, parent hash and token ids
 *   stored; a block "registered" (KV_REGISTERED, implies hashed) is also in
 *   the table. Only registered blocks are cached on release. A match accepts
 *   a table entry only when the stored parent hash equals the hash of the
 *   block matched before it and the stored token ids equal the prompt's, so
 *   a wrong match needs two different whole prefixes with equal 64-bit
 *   chained hashes, not a collision of one block's hash.
 * - No allocation after creation except growing a sequence's block array
 *   (doubling) and the scratch arrays of folo_kv_check. */
#include "kv/kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

enum { KV_HASHED = 1, KV_REGISTERED = 2 };

typedef struct kv_list {
    int32_t head, tail;   /* block ids, -1 when empty */
    int count;
} kv_list;

struct folo_kv_pool {
    int n_blocks;
    int block_size;
    bool prefix_caching;
    int32_t *ref;           /* [n_blocks] number of block tables holding the block */
    uint8_t *flags;         /* [n_blocks] KV_HASHED | KV_REGISTERED */
    int32_t *prev, *next;   /* [n_blocks] links of the free list or the LRU, -1 at ends */
    uint64_t *hash;         /* [n_blocks] chained hash (valid when hashed) */
    uint64_t *parent_hash;  /* [n_blocks] hash of the block before it, 0 for the first */
    int32_t *tokens;        /* [n_blocks, block_size] token ids (valid when hashed) */
    int32_t *table;         /* [table_cap] block ids, -1 empty */
    uint64_t table_mask;    /* table_cap - 1 */
    int table_count;
    kv_list free_list;      /* ref 0, not registered */
    kv_list lru;            /* ref 0, registered; head = least recently released */
    int64_t queried_tokens, hit_tokens, evictions;
};

/* ---- hashing ----------------------------------------------------------- */

/* splitmix64's finalizer: a bijection on 64 bits with good avalanche. */
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Never 0, so 0 can mean "no parent". */
static uint64_t chain_hash(uint64_t parent, const int32_t *tokens, int n_tokens) {
    uint64_t h = mix64(parent ^ 0x9e3779b97f4a7c15ULL);
    for (int i = 0; i < n_tokens; i++) h = mix64(h ^ (uint32_t)tokens[i]) + 0x9e3779b97f4a7c15ULL;
    return h ? h : 1;
}

/* ---- intrusive lists ----------------------------------------------------- */

static void list_init(kv_list *l) {
    l->head = l->tail = -1;
    l->count = 0;
}

static void list_push_tail(folo_kv_pool *p, kv_list *l, int32_t b) {
    p->prev[b] = l->tail;
    p->next[b] = -1;
    if (l->tail >= 0) p->next[l->tail] = b;
    else l->head = b;
    l->tail = b;
    l->count++;
}

static void list_remove(folo_kv_pool *p, kv_list *l, int32_t b) {
    if (p->prev[b] >= 0) p->next[p->prev[b]] = p->next[b];
    else l->head = p->next[b];
    if (p->next[b] >= 0) p->prev[p->next[b]] = p->prev[b];
    else l->tail = p->prev[b];
    p->prev[b] = p->next[b] = -1;
    l->count--;
}

/* ---- prefix table -------------------------------------------------------- */

/* Slot of the entry for hash h, or -1. */
static int64_t table_find_slot(const folo_kv_pool *p, uint64_t h) {
    for (uint64_t i = h & p->table_mask;; i = (i + 1) & p->table_mask) {
        int32_t b = p->table[i];
        if (b < 0) return -1;
        if (p->hash[b] == h) return (int64_t)i;
    }
}

static int32_t table_find(const folo_kv_pool *p, uint64_t h) {
    int64_t slot = table_find_slot(p, h);
    return slot < 0 ? -1 : p->table[slot];
}

/* Block b is hashed and its hash is not in the table. */
static void table_insert(folo_kv_pool *p, int32_t b) {
    uint64_t i = p->hash[b] & p->table_mask;
    while (p->table[i] >= 0) i = (i + 1) & p->table_mask;
    p->table[i] = b;
    p->table_count++;
}

/* Removes registered block b's entry; later entries of its probe run move
 * back into the hole when their home slot allows it. */
static void table_remove(folo_kv_pool *p, int32_t b) {
    int64_t found = table_find_slot(p, p->hash[b]);
    FOLO_ASSERT(found >= 0 && p->table[found] == b);
    uint64_t hole = (uint64_t)found;
    for (uint64_t i = (hole + 1) & p->table_mask; p->table[i] >= 0; i = (i + 1) & p->table_mask) {
        uint64_t home = p->hash[p->table[i]] & p->table_mask;
        /* The entry at i may fill the hole unless its home lies cyclically
         * in (hole, i]. */
        bool home_after_hole = ((i - home) & p->table_mask) < ((i - hole) & p->table_mask);
        if (!home_after_hole) {
            p->table[hole] = p->table[i];
            hole = i;
        }
    }
    p->table[hole] = -1;
    p->table_count--;
}

/* ---- pool ---------------------------------------------------------------- */

folo_kv_pool *folo_kv_pool_create(int n_blocks, int block_size, bool prefix_caching) {
    if (n_blocks <= 0 || block_size <= 0) return NULL;
    uint64_t table_cap = 8;
    while (table_cap < 2 * (uint64_t)n_blocks) table_cap *= 2;
    folo_kv_pool *p = folo_calloc(1, sizeof *p);
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->prefix_caching = prefix_caching;
    size_t n = (size_t)n_blocks;
    p->ref = folo_alloc_large(n * sizeof *p->ref);
    p->flags = folo_alloc_large(n * sizeof *p->flags);
    p->prev = folo_alloc_large(n * sizeof *p->prev);
    p->next = folo_alloc_large(n * sizeof *p->next);
    p->hash = folo_alloc_large(n * sizeof *p->hash);
    p->parent_hash = folo_alloc_large(n * sizeof *p->parent_hash);
    p->tokens = folo_alloc_large(n * (size_t)block_size * sizeof *p->tokens);
    p->table = folo_alloc_large(table_cap * sizeof *p->table);
    if (!p->ref || !p->flags || !p->prev || !p->next || !p->hash || !p->parent_hash ||
        !p->tokens || !p->table) {
        folo_kv_pool_free(p);
        return NULL;
    }
    p->table_mask = table_cap - 1;
    memset(p->table, 0xff, table_cap * sizeof *p->table); /* all -1 */
    list_init(&p->free_list);
    list_init(&p->lru);
    for (int32_t b = 0; b < n_blocks; b++) list_push_tail(p, &p->free_list, b);
    return p;
}

void folo_kv_pool_free(folo_kv_pool *pool) {
    if (!pool) return;
    folo_free_large(pool->ref);
    folo_free_large(pool->flags);
    folo_free_large(pool->prev);
    folo_free_large(pool->next);
    folo_free_large(pool->hash);
    folo_free_large(pool->parent_hash);
    folo_free_large(pool->tokens);
    folo_free_large(pool->table);
    free(pool);
}

int folo_kv_block_size(const folo_kv_pool *pool) { return pool->block_size; }

int folo_kv_available(const folo_kv_pool *pool) {
    return pool->free_list.count + pool->lru.count;
}

int folo_kv_blocks_for(const folo_kv_pool *pool, int n_tokens) {
    if (n_tokens <= 0) return 0;
    return (int)(((int64_t)n_tokens + pool->block_size - 1) / pool->block_size);
}

void folo_kv_stats_get(const folo_kv_pool *pool, folo_kv_stats *out) {
    out->n_blocks = pool->n_blocks;
    out->n_free = pool->free_list.count;
    out->n_cached = pool->lru.count;
    out->n_used = pool->n_blocks - pool->free_list.count - pool->lru.count;
    out->queried_tokens = pool->queried_tokens;
    out->hit_tokens = pool->hit_tokens;
    out->evictions = pool->evictions;
}

int folo_kv_block_ref(const folo_kv_pool *pool, int32_t block) {
    FOLO_ASSERT(block >= 0 && block < pool->n_blocks);
    return pool->ref[block];
}

const int32_t *folo_kv_block_tokens(const folo_kv_pool *pool, int32_t block) {
    FOLO_ASSERT(block >= 0 && block < pool->n_blocks);
    if (!(pool->flags[block] & KV_REGISTERED)) return NULL;
    return pool->tokens + (size_t)block * pool->block_size;
}

/* A block for exclusive use (ref 1): the free list's head, else the least
 * recently used cached block, evicted. The caller checked availability. */
static int32_t take_block(folo_kv_pool *p) {
    int32_t b;
    if (p->free_list.count > 0) {
        b = p->free_list.head;
        list_remove(p, &p->free_list, b);
    } else {
        b = p->lru.head;
        FOLO_ASSERT(b >= 0);
        list_remove(p, &p->lru, b);
        table_remove(p, b);
        p->evictions++;
    }
    p->flags[b] = 0;
    p->ref[b] = 1;
    return b;
}

/* Drops one reference; at 0 the block becomes cached or free. */
static void put_block(folo_kv_pool *p, int32_t b) {
    FOLO_ASSERT(p->ref[b] > 0);
    if (--p->ref[b] > 0) return;
    if (p->flags[b] & KV_REGISTERED) {
        list_push_tail(p, &p->lru, b);
    } else {
        p->flags[b] = 0;
        list_push_tail(p, &p->free_list, b);
    }
}

/* ---- sequences ------------------------------------------------------------ */

void folo_kv_seq_init(folo_kv_seq *seq) { memset(seq, 0, sizeof *seq); }

void folo_kv_seq_free(folo_kv_seq *seq) {
    free(seq->blocks);
    folo_kv_seq_init(seq);
}

static void seq_reserve(folo_kv_seq *seq, int n_blocks) {
    if (n_blocks <= seq->cap_blocks) return;
    int cap = seq->cap_blocks ? seq->cap_blocks : 4;
    while (cap < n_blocks) cap *= 2;
    seq->blocks = folo_realloc(seq->blocks, (size_t)cap * sizeof *seq->blocks);
    seq->cap_blocks = cap;
}

int folo_kv_match_prefix(folo_kv_pool *pool, folo_kv_seq *seq, const int32_t *tokens,
                         int n_tokens, int max_tokens) {
    FOLO_ASSERT(seq->n_blocks == 0);
    if (!pool->prefix_caching || n_tokens <= 0) return 0;
    pool->queried_tokens += n_tokens;
    int bs = pool->block_size;
    int limit = max_tokens < n_tokens ? max_tokens : n_tokens;
    int max_blocks = limit > 0 ? limit / bs : 0;
    uint64_t h = 0;
    int n = 0;
    while (n < max_blocks) {
        const int32_t *t = tokens + (size_t)n * bs;
        uint64_t hn = chain_hash(h, t, bs);
        int32_t b = table_find(pool, hn);
        if (b < 0 || pool->parent_hash[b] != h ||
            memcmp(pool->tokens + (size_t)b * bs, t, (size_t)bs * sizeof *t) != 0)
            break;
        if (pool->ref[b] == 0) list_remove(pool, &pool->lru, b);
        pool->ref[b]++;
        seq_reserve(seq, n + 1);
        seq->blocks[n++] = b;
        h = hn;
    }
    seq->n_blocks = n;
    seq->n_hashed = n;
    seq->last_hash = h;
    pool->hit_tokens += (int64_t)n * bs;
    return n * bs;
}

/* Existing blocks of seq that receive tokens at positions n_computed ..
 * n_total - 1: indices [*first, *end). */
static void write_range(const folo_kv_pool *pool, const folo_kv_seq *seq, int n_total,
                        int n_computed, int *first, int *end) {
    *first = n_computed / pool->block_size;
    int want = folo_kv_blocks_for(pool, n_total);
    *end = n_total > n_computed ? (want < seq->n_blocks ? want : seq->n_blocks) : *first;
    if (*end < *first) *end = *first;
}

int folo_kv_blocks_needed(const folo_kv_pool *pool, const folo_kv_seq *seq, int n_total,
                          int n_computed) {
    int want = folo_kv_blocks_for(pool, n_total);
    int needed = want > seq->n_blocks ? want - seq->n_blocks : 0;
    int first, end;
    write_range(pool, seq, n_total, n_computed, &first, &end);
    for (int i = first; i < end; i++) needed += pool->ref[seq->blocks[i]] > 1;
    return needed;
}

int folo_kv_allocate(folo_kv_pool *pool, folo_kv_seq *seq, int n_total, int n_computed,
                     folo_kv_copy *copies, int *n_copies) {
    FOLO_ASSERT(n_computed >= 0 && n_computed >= seq->n_hashed * pool->block_size);
    if (folo_kv_blocks_needed(pool, seq, n_total, n_computed) > folo_kv_available(pool)) return -1;
    int want = folo_kv_blocks_for(pool, n_total);
    seq_reserve(seq, want);
    int first, end;
    write_range(pool, seq, n_total, n_computed, &first, &end);
    for (int i = first; i < end; i++) {
        int32_t src = seq->blocks[i];
        if (pool->ref[src] == 1) continue;
        int32_t dst = take_block(pool);
        if ((int64_t)i * pool->block_size < n_computed) {
            copies[*n_copies] = (folo_kv_copy){.src = src, .dst = dst};
            (*n_copies)++;
        }
        put_block(pool, src);
        seq->blocks[i] = dst;
    }
    while (seq->n_blocks < want) seq->blocks[seq->n_blocks++] = take_block(pool);
    return 0;
}

void folo_kv_commit(folo_kv_pool *pool, folo_kv_seq *seq, const int32_t *tokens, int n_computed) {
    if (!pool->prefix_caching) return;
    int bs = pool->block_size;
    int n_full = n_computed / bs < seq->n_blocks ? n_computed / bs : seq->n_blocks;
    for (int i = seq->n_hashed; i < n_full; i++) {
        int32_t b = seq->blocks[i];
        const int32_t *t = tokens + (size_t)i * bs;
        uint64_t h = chain_hash(seq->last_hash, t, bs);
        if (pool->flags[b] & KV_HASHED) {
            /* Shared by a fork and already committed by the other owner: the
             * same tokens must give the same hash. */
            FOLO_ASSERT(pool->hash[b] == h && pool->parent_hash[b] == seq->last_hash);
        } else {
            pool->hash[b] = h;
            pool->parent_hash[b] = seq->last_hash;
            memcpy(pool->tokens + (size_t)b * bs, t, (size_t)bs * sizeof *t);
            pool->flags[b] = KV_HASHED;
            if (table_find(pool, h) < 0) {
                table_insert(pool, b);
                pool->flags[b] |= KV_REGISTERED;
            }
        }
        seq->last_hash = h;
        seq->n_hashed = i + 1;
    }
}

void folo_kv_release(folo_kv_pool *pool, folo_kv_seq *seq) {
    for (int i = seq->n_blocks - 1; i >= 0; i--) put_block(pool, seq->blocks[i]);
    seq->n_blocks = 0;
    seq->n_hashed = 0;
    seq->last_hash = 0;
}

void folo_kv_fork(folo_kv_pool *pool, const folo_kv_seq *parent, folo_kv_seq *child) {
    FOLO_ASSERT(child->n_blocks == 0);
    seq_reserve(child, parent->n_blocks);
    for (int i = 0; i < parent->n_blocks; i++) {
        int32_t b = parent->blocks[i];
        FOLO_ASSERT(pool->ref[b] > 0);
        pool->ref[b]++;
        child->blocks[i] = b;
    }
    child->n_blocks = parent->n_blocks;
    child->n_hashed = parent->n_hashed;
    child->last_hash = parent->last_hash;
}

/* ---- invariants ------------------------------------------------------------ */

/* Walks list l, marking each block with `mark` in on_list; fails on a broken
 * link, a cycle, a block already on a list, or a wrong count. */
static int check_list(const folo_kv_pool *p, const kv_list *l, uint8_t mark, uint8_t *on_list,
                      const char *name, folo_error *err) {
    int n = 0;
    int32_t prev = -1;
    for (int32_t b = l->head; b >= 0; b = p->next[b]) {
        if (b >= p->n_blocks) return folo_fail(err, "kv: %s list links block %d", name, b);
        if (on_list[b]) return folo_fail(err, "kv: block %d twice on the lists (%s)", b, name);
        if (p->prev[b] != prev)
            return folo_fail(err, "kv: %s list: prev of block %d is %d, want %d", name, b,
                             p->prev[b], prev);
        on_list[b] = mark;
        prev = b;
        n++;
    }
    if (l->tail != prev)
        return folo_fail(err, "kv: %s list tail %d, last block %d", name, l->tail, prev);
    if (n != l->count)
        return folo_fail(err, "kv: %s list holds %d blocks, count %d", name, n, l->count);
    return 0;
}

static int check_seq(const folo_kv_pool *p, const folo_kv_seq *s, int k, int32_t *refs,
                     int32_t *last_seen, folo_error *err) {
    if (s->n_blocks < 0 || s->n_blocks > s->cap_blocks || (s->n_blocks > 0 && !s->blocks))
        return folo_fail(err, "kv: seq %d: n_blocks %d, cap %d", k, s->n_blocks, s->cap_blocks);
    if (s->n_hashed < 0 || s->n_hashed > s->n_blocks)
        return folo_fail(err, "kv: seq %d: n_hashed %d of %d blocks", k, s->n_hashed, s->n_blocks);
    if (!p->prefix_caching && s->n_hashed != 0)
        return folo_fail(err, "kv: seq %d: %d hashed blocks with prefix caching off", k,
                         s->n_hashed);
    uint64_t parent = 0;
    for (int i = 0; i < s->n_blocks; i++) {
        int32_t b = s->blocks[i];
        if (b < 0 || b >= p->n_blocks) return folo_fail(err, "kv: seq %d: block id %d", k, b);
        if (last_seen[b] == k) return folo_fail(err, "kv: seq %d holds block %d twice", k, b);
        last_seen[b] = k;
        refs[b]++;
        if (i < s->n_hashed) {
            if (!(p->flags[b] & KV_HASHED))
                return folo_fail(err, "kv: seq %d: hashed block %d (index %d) has no hash", k,
                                 b, i);
            if (p->parent_hash[b] != parent)
                return folo_fail(err, "kv: seq %d: block %d (index %d) not chained to its parent",
                                 k, b, i);
            parent = p->hash[b];
        }
    }
    if (s->last_hash != parent)
        return folo_fail(err, "kv: seq %d: last_hash does not match block %d's hash", k,
                         s->n_hashed - 1);
    return 0;
}

static int check_blocks(const folo_kv_pool *p, const int32_t *refs, const uint8_t *on_list,
                        folo_error *err) {
    int n_registered = 0;
    for (int32_t b = 0; b < p->n_blocks; b++) {
        uint8_t f = p->flags[b];
        if (p->ref[b] != refs[b])
            return folo_fail(err, "kv: block %d: ref %d, held by %d tables", b, p->ref[b], refs[b]);
        if ((f & KV_REGISTERED) && !(f & KV_HASHED))
            return folo_fail(err, "kv: block %d registered without a hash", b);
        if (!p->prefix_caching && f)
            return folo_fail(err, "kv: block %d hashed with prefix caching off", b);
        uint8_t want = p->ref[b] > 0 ? 0 : (f & KV_REGISTERED) ? 2 : 1;
        if (on_list[b] != want)
            return folo_fail(err, "kv: block %d (ref %d, flags %d) on list %d, want %d", b,
                             p->ref[b], f, on_list[b], want);
        if (p->ref[b] == 0 && !(f & KV_REGISTERED) && f)
            return folo_fail(err, "kv: free block %d keeps a hash", b);
        if (f & KV_HASHED) {
            const int32_t *t = p->tokens + (size_t)b * p->block_size;
            if (chain_hash(p->parent_hash[b], t, p->block_size) != p->hash[b])
                return folo_fail(err, "kv: block %d: hash does not match its tokens", b);
        }
        if (f & KV_REGISTERED) {
            n_registered++;
            if (table_find(p, p->hash[b]) != b)
                return folo_fail(err, "kv: registered block %d not found under its hash", b);
        }
    }
    if (n_registered != p->table_count)
        return folo_fail(err, "kv: %d registered blocks, %d table entries", n_registered,
                         p->table_count);
    int n_entries = 0;
    for (uint64_t i = 0; i <= p->table_mask; i++) {
        int32_t b = p->table[i];
        if (b < 0) continue;
        n_entries++;
        if (b >= p->n_blocks || !(p->flags[b] & KV_REGISTERED))
            return folo_fail(err, "kv: table slot %llu holds unregistered block %d",
                             (unsigned long long)i, b);
    }
    if (n_entries != p->table_count)
        return folo_fail(err, "kv: table holds %d entries, count %d", n_entries, p->table_count);
    return 0;
}

int folo_kv_check(const folo_kv_pool *pool, const folo_kv_seq *const *seqs, int n_seqs,
                  folo_error *err) {
    size_t n = (size_t)pool->n_blocks;
    int32_t *refs = folo_calloc(n, sizeof *refs);           /* [n_blocks] tables holding it */
    int32_t *last_seen = folo_calloc(n, sizeof *last_seen); /* [n_blocks] last seq holding it */
    uint8_t *on_list = folo_calloc(n, sizeof *on_list);     /* [n_blocks] 0 none, 1 free, 2 LRU */
    for (size_t b = 0; b < n; b++) last_seen[b] = -1;
    int rc = check_list(pool, &pool->free_list, 1, on_list, "free", err);
    if (rc == 0) rc = check_list(pool, &pool->lru, 2, on_list, "LRU", err);
    for (int k = 0; rc == 0 && k < n_seqs; k++)
        rc = check_seq(pool, seqs[k], k, refs, last_seen, err);
    if (rc == 0) rc = check_blocks(pool, refs, on_list, err);
    free(refs);
    free(last_seen);
    free(on_list);
    return rc;
}
