/* KV-cache manager: gives each sequence the blocks its tokens need, finds the
 * longest cached prefix of a new sequence, and registers full blocks in the
 * prefix cache under chained hashes:
 *
 *   h(i) = SHA-256(h(i-1) | token ids of block i | hashes of the images whose
 *                  placeholder rows overlap block i)
 *
 * so the same text with another image never matches. Also owns the per-layer
 * K/V tensors on the backend. Engine thread only. */
#ifndef VD_KV_CACHE_H
#define VD_KV_CACHE_H

#include "core/block_pool.h"
#include "core/request.h"
#include "vllmd/ops.h"

typedef struct vd_kv_cache {
	vd_block_pool *pool;
	int block_size;
	int num_blocks;
	int num_layers;
	vd_tensor *k, *v;           /* (num_layers) of (num_blocks, bs, kv_heads, head_dim) */
	vd_backend *be;
	/* counters for logs and metrics */
	int64_t prefix_queries, prefix_hits; /* in tokens */
} vd_kv_cache;

/* Bytes one block takes over all layers (K and V). */
int64_t vd_kv_block_bytes(int num_layers, int block_size, int kv_heads, int head_dim,
			  vd_dtype dtype);

vd_status vd_kv_cache_init(vd_kv_cache *kv, vd_backend *be, int num_blocks, int block_size,
			   int num_layers, int kv_heads, int head_dim, vd_dtype dtype,
			   bool enable_prefix_caching);
void vd_kv_cache_free(vd_kv_cache *kv);

/* Longest run of cached full blocks at the start of s (never all of its
 * tokens: the last token is always recomputed). Writes up to cap block ids
 * to hit and returns how many. Updates the hash list of s. */
int32_t vd_kv_find_prefix(vd_kv_cache *kv, vd_seq *s, int32_t *hit, int32_t cap);

/* Make room for n_new more tokens of s after its n_hit prefix-hit blocks
 * (0 unless s is being admitted): touches the hits, allocates new blocks
 * and caches every block that becomes full. VD_ERR_LIMIT (nothing changed)
 * when not enough blocks are free. */
vd_status vd_kv_allocate(vd_kv_cache *kv, vd_seq *s, int64_t n_new, const int32_t *hit,
			 int32_t n_hit);

/* Give back all blocks of s (last block first, so a sequence's tail is
 * evicted before its head). */
void vd_kv_release(vd_kv_cache *kv, vd_seq *s);

/* Cache slot of token position p of s. */
static inline int64_t vd_kv_slot(const vd_kv_cache *kv, const vd_seq *s, int64_t p)
{
	return (int64_t)s->blocks[p / kv->block_size] * kv->block_size + p % kv->block_size;
}

#endif
