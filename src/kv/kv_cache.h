/* The paged KV cache's bookkeeping (DESIGN §5): which block holds what.
 *
 * The backend owns the memory (n_blocks blocks of block_size token slots per
 * layer); this module owns only the ids. Every block is in exactly one state:
 *   free    - ref_count 0, no hash: on the free list;
 *   cached  - ref_count 0, with a hash: on the LRU list, reusable by a prefix
 *             match until the pool needs it (then evicted: hash dropped);
 *   owned   - ref_count > 0: in that many sequences' block tables.
 * A block becomes content-addressed once it is full and its tokens are
 * computed: its hash is chained over all tokens before it (the parent
 * block's hash and this block's token ids), and the token ids are kept so a
 * match is verified exactly, never trusted to the hash alone. A new
 * sequence reuses the longest run of leading blocks that match
 * (folo_kv_match_prefix). Blocks shared by several sequences (prefix hits,
 * forks for n > 1) are never written: a sequence about to write into a
 * shared block gets a private copy first (copy-on-write), returned as a
 * (src, dst) pair the backend must copy before the step runs. Within a step
 * the copies run in the order they were returned: a src freed later in the
 * same scheduling pass (its other owner preempted) can come back as a later
 * pair's dst, so the order is what keeps its content until it was read.
 *
 * Eviction order: a released sequence's blocks enter the LRU tail last block
 * first, so the tail of a prefix is evicted before its head (evicting a
 * head block would strand the blocks chained after it).
 *
 * Who calls it: the scheduler (allocate, release, match) and the engine
 * (commit after a forward, fork). It never touches tensors. Not
 * thread-safe: the engine thread owns it. */
#ifndef FOLO_KV_KV_CACHE_H
#define FOLO_KV_KV_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

typedef struct folo_kv_pool folo_kv_pool;

/* One sequence's view: its block table and how far it is hashed. */
typedef struct folo_kv_seq {
    int32_t *blocks;      /* [n_blocks] block ids, in position order (owned array) */
    int n_blocks;
    int cap_blocks;       /* allocated length of blocks */
    int n_hashed;         /* leading blocks that are full, computed and hashed (by a
                             prefix match or a commit); each is in the prefix table
                             unless an equal block was registered first */
    uint64_t last_hash;   /* hash of block n_hashed - 1 (0 when none) */
} folo_kv_seq;

typedef struct folo_kv_copy {
    int32_t src, dst;     /* block ids: copy every layer's K and V of src into dst */
} folo_kv_copy;

typedef struct folo_kv_stats {
    int n_blocks;         /* total */
    int n_free;           /* free list */
    int n_cached;         /* ref 0 with a hash (evictable) */
    int n_used;           /* ref > 0 */
    int64_t queried_tokens;   /* prompt tokens looked up by folo_kv_match_prefix */
    int64_t hit_tokens;       /* of those, served from the cache */
    int64_t evictions;
} folo_kv_stats;

/* NULL when n_blocks or block_size is not positive, or the pool's
 * bookkeeping (about block_size * 4 + 48 bytes a block) cannot be had. */
folo_kv_pool *folo_kv_pool_create(int n_blocks, int block_size, bool prefix_caching);
void folo_kv_pool_free(folo_kv_pool *pool);
int folo_kv_block_size(const folo_kv_pool *pool);
/* Blocks an allocation can still get: free + cached (evictable). */
int folo_kv_available(const folo_kv_pool *pool);
void folo_kv_stats_get(const folo_kv_pool *pool, folo_kv_stats *out);
/* Blocks that hold n_tokens tokens: ceil(n_tokens / block_size). */
int folo_kv_blocks_for(const folo_kv_pool *pool, int n_tokens);

void folo_kv_seq_init(folo_kv_seq *seq);
/* Frees only the array; the blocks must have been released. */
void folo_kv_seq_free(folo_kv_seq *seq);

/* At admission, on an empty seq: takes references on the longest run of
 * cached full blocks whose tokens equal tokens[0..), at most
 * (max_tokens / block_size) blocks, and returns the number of tokens they
 * cover (a multiple of block_size). Counts queried (n_tokens) and hit
 * tokens. With prefix caching off it returns 0 and counts nothing. Callers
 * pass max_tokens = n_tokens - 1 so the last prompt token is always
 * computed (its logits are needed). */
int folo_kv_match_prefix(folo_kv_pool *pool, folo_kv_seq *seq, const int32_t *tokens,
                         int n_tokens, int max_tokens);

/* Makes seq's table cover n_total tokens (allocating blocks, evicting the
 * least recently used cached ones when the free list is empty). The blocks
 * that will receive new tokens (positions n_computed .. n_total - 1) must be
 * private: an existing one that is shared is replaced by a fresh block, and
 * when it already holds computed tokens (only the block of position
 * n_computed can) the pair is appended to copies (room for *n_copies + 1
 * entries is the caller's; at most one per call). Requires
 * n_computed >= n_hashed * block_size. Returns 0, or -1 when the pool
 * cannot supply the blocks (seq, pool and copies unchanged). */
int folo_kv_allocate(folo_kv_pool *pool, folo_kv_seq *seq, int n_total, int n_computed,
                     folo_kv_copy *copies, int *n_copies);

/* Blocks folo_kv_allocate(pool, seq, n_total, n_computed, ...) would take
 * from the pool (new blocks plus copy-on-write replacements); it succeeds
 * exactly when this is <= folo_kv_available(pool). */
int folo_kv_blocks_needed(const folo_kv_pool *pool, const folo_kv_seq *seq, int n_total,
                          int n_computed);

/* After a forward computed tokens[0..n_computed) (tokens: the whole
 * sequence, prompt and output): hashes every newly full block and registers
 * it in the prefix table (no-op with prefix caching off). A block whose
 * content is already cached under another id stays unregistered (the table
 * keeps the first), and so is freed, not cached, on release. */
void folo_kv_commit(folo_kv_pool *pool, folo_kv_seq *seq, const int32_t *tokens, int n_computed);

/* Drops seq's references (last block first: blocks with a hash go to the
 * LRU tail, others to the free list) and empties its table. */
void folo_kv_release(folo_kv_pool *pool, folo_kv_seq *seq);

/* child (empty) shares every block of parent (references taken). */
void folo_kv_fork(folo_kv_pool *pool, const folo_kv_seq *parent, folo_kv_seq *child);

/* Inspection, for tests and debugging: a block's reference count, and its
 * block_size token ids while it is in the prefix table (NULL otherwise). */
int folo_kv_block_ref(const folo_kv_pool *pool, int32_t block);
const int32_t *folo_kv_block_tokens(const folo_kv_pool *pool, int32_t block);

/* Checks every invariant above against the given live sequences: each block
 * in exactly one state, ref counts equal to the number of tables holding the
 * block, list lengths and stats consistent, hash table entries pointing at
 * blocks that carry that hash, each sequence's hashed blocks chained.
 * Returns 0 or -1 with the first violation. */
int folo_kv_check(const folo_kv_pool *pool, const folo_kv_seq *const *seqs, int n_seqs,
                  folo_error *err);

#endif
