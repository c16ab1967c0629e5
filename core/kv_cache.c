/* KV-cache manager over the block pool. Hashes are computed lazily, one per
 * full block, and kept with the sequence so preemption and re-admission do
 * not rehash. */
#include <stdlib.h>
#include <string.h>

#include "core/kv_cache.h"
#include "core/io/hash.h"

int64_t vd_kv_block_bytes(int num_layers, int block_size, int kv_heads, int head_dim,
			  vd_dtype dtype)
{
	return 2LL * num_layers * block_size * kv_heads * head_dim * (int64_t)vd_dtype_size(dtype);
}

vd_status vd_kv_cache_init(vd_kv_cache *kv, vd_backend *be, int num_blocks, int block_size,
			   int num_layers, int kv_heads, int head_dim, vd_dtype dtype,
			   bool enable_prefix_caching)
{
	int64_t shape[4] = { num_blocks, block_size, kv_heads, head_dim };
	vd_status st;

	memset(kv, 0, sizeof(*kv));
	kv->be = be;
	kv->block_size = block_size;
	kv->num_blocks = num_blocks;
	kv->num_layers = num_layers;
	st = vd_block_pool_create(num_blocks, enable_prefix_caching, &kv->pool);
	if (st != VD_OK)
		return st;
	kv->k = calloc((size_t)num_layers, sizeof(vd_tensor));
	kv->v = calloc((size_t)num_layers, sizeof(vd_tensor));
	if (!kv->k || !kv->v) {
		vd_kv_cache_free(kv);
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	}
	for (int l = 0; l < num_layers; l++) {
		st = be->ops->alloc(be, &kv->k[l], dtype, 4, shape);
		if (st == VD_OK)
			st = be->ops->alloc(be, &kv->v[l], dtype, 4, shape);
		if (st == VD_OK)
			st = be->ops->zero(be, &kv->k[l]);
		if (st == VD_OK)
			st = be->ops->zero(be, &kv->v[l]);
		if (st != VD_OK) {
			vd_kv_cache_free(kv);
			return vd_errorf(st, "allocating the KV cache (%d blocks of %d tokens): %s",
					 num_blocks, block_size, vd_error_message());
		}
	}
	return VD_OK;
}

void vd_kv_cache_free(vd_kv_cache *kv)
{
	for (int l = 0; l < kv->num_layers && kv->k; l++) {
		kv->be->ops->free(kv->be, &kv->k[l]);
		kv->be->ops->free(kv->be, &kv->v[l]);
	}
	free(kv->k);
	free(kv->v);
	vd_block_pool_destroy(kv->pool);
	memset(kv, 0, sizeof(*kv));
}

/* Hash of block i of s from its parent's hash. */
static vd_status block_hash(const vd_kv_cache *kv, const vd_seq *s, int32_t i, vd_block_hash *out)
{
	const vd_expansion *x = &s->group->exp;
	int64_t lo = (int64_t)i * kv->block_size, hi = lo + kv->block_size;
	vd_hash c;
	uint8_t full[VD_HASH_BYTES];
	static const vd_block_hash zero;
	vd_status st = vd_hash_init(&c);

	if (st != VD_OK)
		return st;
	vd_hash_update(&c, i ? s->hashes[i - 1].b : zero.b, VD_BLOCK_HASH_BYTES);
	vd_hash_update(&c, s->tokens + lo, (size_t)kv->block_size * sizeof(int32_t));
	for (int k = 0; k < x->n_ph; k++) {
		const vd_placeholder *ph = &x->ph[k];

		if (ph->offset < hi && ph->offset + ph->length > lo)
			vd_hash_update(&c, s->group->items[ph->item].hash, 32);
	}
	vd_hash_final(&c, full);
	memcpy(out->b, full, VD_BLOCK_HASH_BYTES);
	return VD_OK;
}

/* Extend the hash list of s over its first n_full full blocks. */
static vd_status hash_blocks(const vd_kv_cache *kv, vd_seq *s, int32_t n_full)
{
	if (n_full > s->cap_hashes) {
		int32_t cap = s->cap_hashes ? s->cap_hashes : 8;
		vd_block_hash *h;

		while (cap < n_full)
			cap *= 2;
		h = realloc(s->hashes, (size_t)cap * sizeof(*h));
		if (!h)
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
		s->hashes = h;
		s->cap_hashes = cap;
	}
	for (; s->n_hashes < n_full; s->n_hashes++) {
		vd_status st = block_hash(kv, s, s->n_hashes, &s->hashes[s->n_hashes]);

		if (st != VD_OK)
			return st;
	}
	return VD_OK;
}

int32_t vd_kv_find_prefix(vd_kv_cache *kv, vd_seq *s, int32_t *hit, int32_t cap)
{
	int32_t n_full = (int32_t)((s->n_tokens - 1) / kv->block_size);
	int32_t n = 0;

	if (hash_blocks(kv, s, n_full) != VD_OK)
		return 0;
	while (n < n_full && n < cap) {
		int32_t b = vd_block_pool_lookup(kv->pool, &s->hashes[n]);

		if (b < 0)
			break;
		hit[n++] = b;
	}
	kv->prefix_queries += s->n_tokens;
	kv->prefix_hits += (int64_t)n * kv->block_size;
	return n;
}

static vd_status grow_blocks(vd_seq *s, int32_t need)
{
	int32_t cap;
	int32_t *b;

	if (need <= s->cap_blocks)
		return VD_OK;
	cap = s->cap_blocks ? s->cap_blocks : 8;
	while (cap < need)
		cap *= 2;
	b = realloc(s->blocks, (size_t)cap * sizeof(*b));
	if (!b)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	s->blocks = b;
	s->cap_blocks = cap;
	return VD_OK;
}

vd_status vd_kv_allocate(vd_kv_cache *kv, vd_seq *s, int64_t n_new, const int32_t *hit,
			 int32_t n_hit)
{
	int64_t total = s->num_computed + (int64_t)n_hit * kv->block_size + n_new;
	int32_t need = (int32_t)((total + kv->block_size - 1) / kv->block_size);
	int32_t n_alloc = need - s->n_blocks - n_hit;
	int32_t evictable = 0;
	int32_t n_full;
	vd_status st;

	/* hits sitting in the free list leave it when touched */
	for (int32_t i = 0; i < n_hit; i++)
		evictable += vd_block_pool_ref(kv->pool, hit[i]) == 0;
	if (n_alloc < 0)
		n_alloc = 0;
	if (n_alloc + evictable > vd_block_pool_num_free(kv->pool))
		return vd_errorf(VD_ERR_LIMIT, "KV cache full");
	st = grow_blocks(s, s->n_blocks + n_hit + n_alloc);
	if (st != VD_OK)
		return st;
	if (n_hit > 0) {
		vd_block_pool_touch(kv->pool, hit, n_hit);
		memcpy(s->blocks + s->n_blocks, hit, (size_t)n_hit * sizeof(int32_t));
		s->n_blocks += n_hit;
	}
	st = vd_block_pool_alloc(kv->pool, n_alloc, s->blocks + s->n_blocks);
	if (st != VD_OK)
		return vd_errorf(VD_ERR_INTERNAL, "block pool refused %d blocks it had", n_alloc);
	s->n_blocks += n_alloc;

	/* blocks whose every token is now known (computed or being computed)
	 * go into the prefix cache */
	n_full = (int32_t)(total / kv->block_size);
	if (n_full > s->n_tokens / kv->block_size)
		n_full = (int32_t)(s->n_tokens / kv->block_size);
	st = hash_blocks(kv, s, n_full);
	if (st != VD_OK)
		return st;
	for (; s->n_cached_blocks < n_full; s->n_cached_blocks++)
		vd_block_pool_cache(kv->pool, s->blocks[s->n_cached_blocks],
				    &s->hashes[s->n_cached_blocks]);
	return VD_OK;
}

void vd_kv_release(vd_kv_cache *kv, vd_seq *s)
{
	for (int32_t i = s->n_blocks - 1; i >= 0; i--)
		vd_block_pool_free(kv->pool, &s->blocks[i], 1);
	s->n_blocks = 0;
	s->n_cached_blocks = 0;
}
