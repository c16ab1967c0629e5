/* The output of a family's prompt expansion: final token ids, where each
 * image's placeholder rows are, and the position of every token (1-D, or the
 * 3-D M-RoPE rows). Built by plugins through the host API exp_* functions;
 * the core owns it. */
#ifndef VD_EXPANSION_H
#define VD_EXPANSION_H

#include "vllmd/plugin.h"

typedef struct vd_placeholder {
	int item;        /* index of the image in the prompt */
	int64_t offset;  /* first row in ids */
	int64_t length;  /* rows (= the item's num_tokens) */
} vd_placeholder;

struct vd_expansion {
	int32_t *ids;
	int64_t n, cap;
	vd_placeholder *ph;
	int n_ph, cap_ph;
	int32_t *positions; /* (pos_ndim, n) or NULL = 0..n-1 */
	int pos_ndim;
	int32_t pos_delta;  /* decode position = index + pos_delta */
};

void vd_expansion_init(vd_expansion *e);
void vd_expansion_free(vd_expansion *e);
/* Builders (the host API exposes these to plugins). */
vd_status vd_expansion_push(vd_expansion *e, const int32_t *ids, int64_t n);
vd_status vd_expansion_push_image(vd_expansion *e, int item, int32_t id, int64_t n);
int32_t *vd_expansion_positions(vd_expansion *e, int ndim, int32_t delta);
int64_t vd_expansion_len(const vd_expansion *e);
/* Check the result against the items: every item placed exactly once, in
 * order, with its num_tokens rows. */
vd_status vd_expansion_validate(const vd_expansion *e, const vd_mm_item *const *items,
				int n_items);

#endif
