/* Block pool. The free list is intrusive (prev/next indices in the block
 * array), so allocation, touch and free are O(1) per block. The hash map is
 * open addressing with linear probing and backward-shift deletion, sized to
 * twice the block count so it never fills. */
#include <stdlib.h>
#include <string.h>

#include "core/block_pool.h"

typedef struct block {
	int32_t ref;
	int32_t prev, next;   /* free-list links; -1 = none */
	bool in_free;
	bool cached;
	vd_block_hash hash;
} block;

struct vd_block_pool {
	block *b;
	int32_t n;
	int32_t head, tail;   /* free list */
	int32_t n_free;
	bool caching;
	int32_t *map;         /* slot -> block id, -1 empty */
	uint32_t map_mask;
};

static uint32_t slot_of(const vd_block_pool *p, const vd_block_hash *h)
{
	uint32_t v;

	memcpy(&v, h->b, sizeof(v));
	return v & p->map_mask;
}

static void list_push_tail(vd_block_pool *p, int32_t i)
{
	block *x = &p->b[i];

	x->prev = p->tail;
	x->next = -1;
	if (p->tail >= 0)
		p->b[p->tail].next = i;
	else
		p->head = i;
	p->tail = i;
	x->in_free = true;
	p->n_free++;
}

static void list_remove(vd_block_pool *p, int32_t i)
{
	block *x = &p->b[i];

	if (x->prev >= 0)
		p->b[x->prev].next = x->next;
	else
		p->head = x->next;
	if (x->next >= 0)
		p->b[x->next].prev = x->prev;
	else
		p->tail = x->prev;
	x->prev = x->next = -1;
	x->in_free = false;
	p->n_free--;
}

static void map_remove(vd_block_pool *p, int32_t id)
{
	uint32_t i = slot_of(p, &p->b[id].hash);

	while (p->map[i] != id) {
		if (p->map[i] < 0)
			return;
		i = (i + 1) & p->map_mask;
	}
	/* backward-shift: pull later entries of the probe run into the hole */
	for (;;) {
		uint32_t j = i;

		p->map[i] = -1;
		for (;;) {
			uint32_t home;

			j = (j + 1) & p->map_mask;
			if (p->map[j] < 0)
				goto done;
			home = slot_of(p, &p->b[p->map[j]].hash);
			/* entry at j may move to i if its home is not in (i, j] */
			if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
				break;
		}
		p->map[i] = p->map[j];
		i = j;
	}
done:
	p->b[id].cached = false;
}

vd_status vd_block_pool_create(int32_t num_blocks, bool enable_caching, vd_block_pool **out)
{
	vd_block_pool *p;
	uint32_t cap = 16;

	*out = NULL;
	if (num_blocks < 2)
		return vd_errorf(VD_ERR_INVALID_ARG, "the KV cache needs at least 2 blocks, got %d",
				 num_blocks);
	while (cap < 2u * (uint32_t)num_blocks)
		cap <<= 1;
	p = calloc(1, sizeof(*p));
	if (!p)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	p->b = calloc((size_t)num_blocks, sizeof(block));
	p->map = malloc(cap * sizeof(int32_t));
	if (!p->b || !p->map) {
		vd_block_pool_destroy(p);
		return vd_errorf(VD_ERR_NOMEM, "out of memory for %d KV blocks", num_blocks);
	}
	memset(p->map, 0xff, cap * sizeof(int32_t));
	p->map_mask = cap - 1;
	p->n = num_blocks;
	p->head = p->tail = -1;
	p->caching = enable_caching;
	p->b[0].ref = 1; /* the null block is never free */
	p->b[0].prev = p->b[0].next = -1;
	for (int32_t i = 1; i < num_blocks; i++)
		list_push_tail(p, i);
	*out = p;
	return VD_OK;
}

void vd_block_pool_destroy(vd_block_pool *p)
{
	if (!p)
		return;
	free(p->b);
	free(p->map);
	free(p);
}

int32_t vd_block_pool_num_blocks(const vd_block_pool *p)
{
	return p->n;
}

int32_t vd_block_pool_num_free(const vd_block_pool *p)
{
	return p->n_free;
}

double vd_block_pool_usage(const vd_block_pool *p)
{
	return 1.0 - (double)p->n_free / (double)(p->n - 1);
}

vd_status vd_block_pool_alloc(vd_block_pool *p, int32_t n, int32_t *out)
{
	if (n > p->n_free)
		return vd_errorf(VD_ERR_LIMIT, "KV cache: %d blocks wanted, %d free", n, p->n_free);
	for (int32_t k = 0; k < n; k++) {
		int32_t i = p->head;

		list_remove(p, i);
		if (p->b[i].cached)
			map_remove(p, i);
		p->b[i].ref = 1;
		out[k] = i;
	}
	return VD_OK;
}

void vd_block_pool_touch(vd_block_pool *p, const int32_t *blocks, int32_t n)
{
	for (int32_t k = 0; k < n; k++) {
		block *x = &p->b[blocks[k]];

		if (x->ref == 0 && x->in_free)
			list_remove(p, blocks[k]);
		x->ref++;
	}
}

void vd_block_pool_free(vd_block_pool *p, const int32_t *blocks, int32_t n)
{
	for (int32_t k = 0; k < n; k++) {
		int32_t i = blocks[k];

		if (i <= 0 || i >= p->n || p->b[i].ref <= 0)
			continue; /* the null block and double frees are ignored */
		if (--p->b[i].ref == 0)
			list_push_tail(p, i);
	}
}

int32_t vd_block_pool_lookup(const vd_block_pool *p, const vd_block_hash *h)
{
	uint32_t i;

	if (!p->caching)
		return -1;
	for (i = slot_of(p, h); p->map[i] >= 0; i = (i + 1) & p->map_mask)
		if (!memcmp(p->b[p->map[i]].hash.b, h->b, sizeof(h->b)))
			return p->map[i];
	return -1;
}

void vd_block_pool_cache(vd_block_pool *p, int32_t block_id, const vd_block_hash *h)
{
	uint32_t i;

	if (!p->caching || block_id <= 0 || p->b[block_id].cached ||
	    vd_block_pool_lookup(p, h) >= 0)
		return;
	p->b[block_id].hash = *h;
	p->b[block_id].cached = true;
	for (i = slot_of(p, h); p->map[i] >= 0; i = (i + 1) & p->map_mask)
		;
	p->map[i] = block_id;
}

void vd_block_pool_reset_cache(vd_block_pool *p)
{
	memset(p->map, 0xff, ((size_t)p->map_mask + 1) * sizeof(int32_t));
	for (int32_t i = 0; i < p->n; i++)
		p->b[i].cached = false;
}

int32_t vd_block_pool_ref(const vd_block_pool *p, int32_t block_id)
{
	return p->b[block_id].ref;
}

bool vd_block_pool_is_cached(const vd_block_pool *p, int32_t block_id)
{
	return p->b[block_id].cached;
}

int32_t vd_block_pool_free_order(const vd_block_pool *p, int32_t *out, int32_t cap)
{
	int32_t n = 0;

	for (int32_t i = p->head; i >= 0 && n < cap; i = p->b[i].next)
		out[n++] = i;
	return n;
}
