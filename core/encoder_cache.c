/* Encoder cache as a small array of entries with linear lookup: a step
 * touches few images and the cache holds a bounded number of them. */
#include <stdlib.h>
#include <string.h>

#include "core/encoder_cache.h"

typedef struct entry {
	uint8_t hash[32];
	vd_tensor emb;
	int refs;
	uint64_t last_use;
} entry;

struct vd_encoder_cache {
	vd_backend *be;
	int64_t capacity, rows;
	entry *e;
	int n, cap;
	uint64_t clock;
	int64_t hits;
};

vd_status vd_encoder_cache_create(vd_backend *be, int64_t capacity_rows, vd_encoder_cache **out)
{
	vd_encoder_cache *c = calloc(1, sizeof(*c));

	*out = NULL;
	if (!c)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	c->be = be;
	c->capacity = capacity_rows;
	*out = c;
	return VD_OK;
}

void vd_encoder_cache_destroy(vd_encoder_cache *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++)
		c->be->ops->free(c->be, &c->e[i].emb);
	free(c->e);
	free(c);
}

static int find(const vd_encoder_cache *c, const uint8_t hash[32])
{
	for (int i = 0; i < c->n; i++)
		if (!memcmp(c->e[i].hash, hash, 32))
			return i;
	return -1;
}

const vd_tensor *vd_encoder_cache_get(vd_encoder_cache *c, const uint8_t hash[32])
{
	int i = find(c, hash);

	if (i < 0)
		return NULL;
	c->e[i].last_use = ++c->clock;
	c->hits++;
	return &c->e[i].emb;
}

static int64_t evictable_rows(const vd_encoder_cache *c)
{
	int64_t r = 0;

	for (int i = 0; i < c->n; i++)
		if (c->e[i].refs == 0)
			r += c->e[i].emb.shape[0];
	return r;
}

bool vd_encoder_cache_can_fit(const vd_encoder_cache *c, int64_t rows)
{
	return c->rows - evictable_rows(c) + rows <= c->capacity;
}

static void evict_one(vd_encoder_cache *c)
{
	int victim = -1;

	for (int i = 0; i < c->n; i++)
		if (c->e[i].refs == 0 && (victim < 0 || c->e[i].last_use < c->e[victim].last_use))
			victim = i;
	if (victim < 0)
		return;
	c->rows -= c->e[victim].emb.shape[0];
	c->be->ops->free(c->be, &c->e[victim].emb);
	c->e[victim] = c->e[--c->n];
}

vd_status vd_encoder_cache_put(vd_encoder_cache *c, const uint8_t hash[32], vd_tensor *emb)
{
	int64_t rows = emb->shape[0];

	if (!vd_encoder_cache_can_fit(c, rows)) {
		c->be->ops->free(c->be, emb);
		return vd_errorf(VD_ERR_LIMIT, "encoder cache full (%lld of %lld rows)",
				 (long long)c->rows, (long long)c->capacity);
	}
	while (c->rows + rows > c->capacity)
		evict_one(c);
	if (c->n == c->cap) {
		int cap = c->cap ? 2 * c->cap : 16;
		entry *e = realloc(c->e, (size_t)cap * sizeof(*e));

		if (!e) {
			c->be->ops->free(c->be, emb);
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
		}
		c->e = e;
		c->cap = cap;
	}
	memcpy(c->e[c->n].hash, hash, 32);
	c->e[c->n].emb = *emb;
	c->e[c->n].refs = 1;
	c->e[c->n].last_use = ++c->clock;
	c->n++;
	c->rows += rows;
	memset(emb, 0, sizeof(*emb));
	return VD_OK;
}

void vd_encoder_cache_ref(vd_encoder_cache *c, const uint8_t hash[32])
{
	int i = find(c, hash);

	if (i >= 0)
		c->e[i].refs++;
}

void vd_encoder_cache_unref(vd_encoder_cache *c, const uint8_t hash[32])
{
	int i = find(c, hash);

	if (i >= 0 && c->e[i].refs > 0)
		c->e[i].refs--;
}

int64_t vd_encoder_cache_rows(const vd_encoder_cache *c)
{
	return c->rows;
}

int64_t vd_encoder_cache_hits(const vd_encoder_cache *c)
{
	return c->hits;
}

int64_t vd_encoder_cache_entries(const vd_encoder_cache *c)
{
	return c->n;
}
