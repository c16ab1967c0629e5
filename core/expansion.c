/* Prompt expansion buffers. Plugins append tokens and image placeholder runs;
 * the core validates that every image got exactly its rows before a request
 * is admitted, so a buggy plugin fails one request, not the engine. */
#include <stdlib.h>
#include <string.h>

#include "core/expansion.h"

void vd_expansion_init(vd_expansion *e)
{
	memset(e, 0, sizeof(*e));
	e->pos_ndim = 1;
}

void vd_expansion_free(vd_expansion *e)
{
	if (!e)
		return;
	free(e->ids);
	free(e->ph);
	free(e->positions);
	vd_expansion_init(e);
}

static vd_status grow_ids(vd_expansion *e, int64_t extra)
{
	int64_t need = e->n + extra;
	int32_t *p;
	int64_t cap;

	if (need <= e->cap)
		return VD_OK;
	cap = e->cap ? e->cap : 64;
	while (cap < need)
		cap *= 2;
	p = realloc(e->ids, (size_t)cap * sizeof(*p));
	if (!p)
		return vd_errorf(VD_ERR_NOMEM, "out of memory expanding a prompt of %lld tokens",
				 (long long)need);
	e->ids = p;
	e->cap = cap;
	return VD_OK;
}

vd_status vd_expansion_push(vd_expansion *e, const int32_t *ids, int64_t n)
{
	vd_status st;

	if (n < 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "expansion: negative token count");
	st = grow_ids(e, n);
	if (st != VD_OK)
		return st;
	if (n)
		memcpy(e->ids + e->n, ids, (size_t)n * sizeof(*ids));
	e->n += n;
	return VD_OK;
}

vd_status vd_expansion_push_image(vd_expansion *e, int item, int32_t id, int64_t n)
{
	vd_status st;

	if (n <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "expansion: image %d has %lld rows", item,
				 (long long)n);
	if (e->n_ph == e->cap_ph) {
		int cap = e->cap_ph ? 2 * e->cap_ph : 4;
		vd_placeholder *p = realloc(e->ph, (size_t)cap * sizeof(*p));

		if (!p)
			return vd_errorf(VD_ERR_NOMEM, "out of memory expanding a prompt");
		e->ph = p;
		e->cap_ph = cap;
	}
	st = grow_ids(e, n);
	if (st != VD_OK)
		return st;
	e->ph[e->n_ph++] = (vd_placeholder){ .item = item, .offset = e->n, .length = n };
	for (int64_t i = 0; i < n; i++)
		e->ids[e->n + i] = id;
	e->n += n;
	return VD_OK;
}

int32_t *vd_expansion_positions(vd_expansion *e, int ndim, int32_t delta)
{
	int32_t *p;

	if (ndim < 1 || ndim > 3 || e->n == 0)
		return NULL;
	p = realloc(e->positions, (size_t)ndim * (size_t)e->n * sizeof(*p));
	if (!p)
		return NULL;
	e->positions = p;
	e->pos_ndim = ndim;
	e->pos_delta = delta;
	return p;
}

int64_t vd_expansion_len(const vd_expansion *e)
{
	return e->n;
}

vd_status vd_expansion_validate(const vd_expansion *e, const vd_mm_item *const *items,
				int n_items)
{
	if (e->n == 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "the prompt is empty after expansion");
	if (e->n_ph != n_items)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "the prompt has %d image placeholder(s) but %d image(s) were given",
				 e->n_ph, n_items);
	for (int i = 0; i < e->n_ph; i++) {
		if (e->ph[i].item != i)
			return vd_errorf(VD_ERR_INTERNAL,
					 "expansion placed image %d at slot %d (out of order)",
					 e->ph[i].item, i);
		if (e->ph[i].length != items[i]->num_tokens)
			return vd_errorf(VD_ERR_INTERNAL,
					 "expansion gave image %d %lld rows, its processor said %d",
					 i, (long long)e->ph[i].length, items[i]->num_tokens);
	}
	return VD_OK;
}
