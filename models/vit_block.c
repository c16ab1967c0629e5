/* The shared pre-LN encoder block of the vision towers (vit_block.h). */
#include <math.h>

#include "models/vit_block.h"

vd_status vd_vit_block_forward(vd_backend *be, const vd_vit_block *b, const vd_vit_args *a,
			       const vd_vit_bufs *bufs, vd_tensor *x)
{
	const vd_ops *o = be->ops;
	int64_t H = a->heads, D = a->head_dim, E = H * D;
	float scale = (float)(1.0 / sqrt((double)D));
	vd_tensor q = vd_tensor_heads(bufs->qkv, 0, H, D), k = vd_tensor_heads(bufs->qkv, E, H, D);
	vd_tensor v = vd_tensor_heads(bufs->qkv, 2 * E, H, D), qk = vd_tensor_heads(bufs->qkv, 0, 2 * H, D);
	vd_tensor a3 = vd_tensor_heads(bufs->attn, 0, H, D);
	vd_status st;

	/* h holds ln1(x), then the attention output before the add, then
	 * ln2(x), then the MLP output */
	if ((st = o->layernorm(be, x, &b->ln1_w, &b->ln1_b, a->eps, bufs->h)) ||
	    (st = o->linear(be, bufs->h, &b->qkv_w, &b->qkv_b, bufs->qkv)))
		return st;
	/* q and k are adjacent column blocks of qkv and rotate alike */
	if (a->rope && (st = o->rope(be, &qk, a->rope_pos, a->rope)))
		return st;
	if ((st = o->attention_segments(be, &q, &k, &v, a->cu, a->nseg, scale, &a3)) ||
	    (st = o->linear(be, bufs->attn, &b->out_w, &b->out_b, bufs->h)) ||
	    (st = o->add(be, x, bufs->h, x)) ||
	    (st = o->layernorm(be, x, &b->ln2_w, &b->ln2_b, a->eps, bufs->h)) ||
	    (st = o->linear(be, bufs->h, &b->fc1_w, &b->fc1_b, bufs->f)) ||
	    (st = o->act(be, a->act, bufs->f, bufs->f)) ||
	    (st = o->linear(be, bufs->f, &b->fc2_w, &b->fc2_b, bufs->h)))
		return st;
	return o->add(be, x, bufs->h, x);
}

void vd_vit_block_free(vd_backend *be, vd_vit_block *b)
{
	vd_tensor *ts[] = { &b->ln1_w, &b->ln1_b, &b->ln2_w, &b->ln2_b, &b->qkv_w, &b->qkv_b,
			    &b->out_w, &b->out_b, &b->fc1_w, &b->fc1_b, &b->fc2_w, &b->fc2_b };

	for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
		be->ops->free(be, ts[i]);
}
