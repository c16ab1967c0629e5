/* The KV block pool: fixed-size blocks of KV cache, reference counted, with
 * an O(1) free list kept in eviction order and a map from block content hash
 * to cached block (the prefix cache). Block 0 is the reserved null block:
 * never handed out, used to pad block tables.
 *
 *   free list (head = evicted first)        hash map
 *   [b7] <-> [b3] <-> [b9] <-> ...          h(A)  -> b3   (cached, ref 0)
 *                                           h(AB) -> b5   (cached, ref 2)
 *
 * A block with ref_cnt 0 sits in the free list and may still be cached: a
 * prefix hit "touches" it back out of the list; allocation evicts it from the
 * map. Not thread-safe: the engine thread owns it. */
#ifndef VD_BLOCK_POOL_H
#define VD_BLOCK_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include "vllmd/status.h"

#define VD_BLOCK_HASH_BYTES 16

typedef struct vd_block_hash {
	uint8_t b[VD_BLOCK_HASH_BYTES];
} vd_block_hash;

typedef struct vd_block_pool vd_block_pool;

/* num_blocks includes the null block (so num_blocks - 1 are usable). */
vd_status vd_block_pool_create(int32_t num_blocks, bool enable_caching, vd_block_pool **out);
void vd_block_pool_destroy(vd_block_pool *p);

int32_t vd_block_pool_num_blocks(const vd_block_pool *p);
/* Blocks in the free list (ref 0, cached or not). */
int32_t vd_block_pool_num_free(const vd_block_pool *p);
/* Fraction of usable blocks in use (ref > 0). */
double vd_block_pool_usage(const vd_block_pool *p);

/* Take n blocks from the head of the free list (evicting cached ones from
 * the map), each with ref_cnt 1, into out. VD_ERR_LIMIT if fewer are free
 * (nothing taken). */
vd_status vd_block_pool_alloc(vd_block_pool *p, int32_t n, int32_t *out);
/* ref_cnt++ for each block, taking ref-0 blocks out of the free list
 * (prefix-cache hits). */
void vd_block_pool_touch(vd_block_pool *p, const int32_t *blocks, int32_t n);
/* ref_cnt-- for each block in the given order; blocks reaching 0 are
 * appended to the free list tail in that order (pass a sequence's blocks
 * last-first so its tail is evicted first). */
void vd_block_pool_free(vd_block_pool *p, const int32_t *blocks, int32_t n);

/* Cached block holding hash h, or -1. */
int32_t vd_block_pool_lookup(const vd_block_pool *p, const vd_block_hash *h);
/* Record that block holds content h. A block that is already cached, or a
 * hash another block already holds, is left as it is. */
void vd_block_pool_cache(vd_block_pool *p, int32_t block, const vd_block_hash *h);
/* Drop every cached hash (blocks stay where they are). */
void vd_block_pool_reset_cache(vd_block_pool *p);

int32_t vd_block_pool_ref(const vd_block_pool *p, int32_t block);
bool vd_block_pool_is_cached(const vd_block_pool *p, int32_t block);
/* Free-list order for tests: writes up to cap block ids head-first. */
int32_t vd_block_pool_free_order(const vd_block_pool *p, int32_t *out, int32_t cap);

#endif
