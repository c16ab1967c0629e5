/* One pre-LayerNorm transformer encoder block, as both vision towers use it
 * (CLIP ViT-L/14, the Qwen2-VL ViT):
 *   x += proj(attention(ln1(x)))     full attention inside each image
 *   x += fc2(act(fc1(ln2(x))))
 * with an optional rotary embedding on q and k (Qwen2-VL). The towers load
 * their own weight names into a vd_vit_block; the forward is shared. */
#ifndef VD_MODELS_VIT_BLOCK_H
#define VD_MODELS_VIT_BLOCK_H

#include "vllmd/ops.h"

typedef struct vd_vit_block {
	vd_tensor ln1_w, ln1_b, ln2_w, ln2_b; /* (E) */
	vd_tensor qkv_w, qkv_b;               /* (3E, E), (3E): rows q | k | v */
	vd_tensor out_w, out_b;               /* (E, E), (E) */
	vd_tensor fc1_w, fc1_b;               /* (F, E), (F) */
	vd_tensor fc2_w, fc2_b;               /* (E, F), (E) */
} vd_vit_block;

/* Work buffers of one forward over R rows, owned by the caller: h (R, E),
 * qkv (R, 3E), attn (R, E), f (R, F). */
typedef struct vd_vit_bufs {
	vd_tensor *h, *qkv, *attn, *f;
} vd_vit_bufs;

/* The shape of the block: E = heads * head dim; segments cu (nseg + 1 row
 * offsets, host) bound the attention; rope_pos/rope (or NULL) rotate q and
 * k. x (R, E) is updated in place. */
typedef struct vd_vit_args {
	int64_t heads, head_dim;
	float eps;
	vd_act act;
	const int32_t *cu;
	int nseg;
	const int32_t *rope_pos;
	const vd_rope *rope;
} vd_vit_args;

vd_status vd_vit_block_forward(vd_backend *be, const vd_vit_block *b, const vd_vit_args *a,
			       const vd_vit_bufs *bufs, vd_tensor *x);

/* Free the block's tensors (safe on a zeroed block). */
void vd_vit_block_free(vd_backend *be, vd_vit_block *b);

#endif
