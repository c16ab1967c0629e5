/* The Qwen2-VL vision transformer over the ops table: patch embedding as a
 * linear over the processor's flattened (C, T, p, p) patches, pre-LN blocks
 * with 2-D (h, w) rotary and full attention inside each frame, QuickGELU
 * MLPs, and the PatchMerger that joins each 2x2 block of patches into one
 * LLM embedding. Patches arrive in merge-block order, so a merge block is
 * merge^2 consecutive rows. Scratch buffers are allocated per call. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "models/vit_block.h"
#include "vllmd/models.h"

typedef vd_vit_block vit_block;

struct vd_qwen2_vit {
	vd_backend *be;
	vd_qwen2_vit_config cfg;
	vd_dtype dtype;
	int64_t patch_dim;        /* C * T * p * p */
	vd_tensor patch_w;        /* (embed, patch_dim) */
	vit_block *blocks;        /* depth */
	vd_tensor lnq_w, lnq_b;   /* (embed) */
	vd_tensor m0_w, m0_b;     /* (4 embed, 4 embed), (4 embed) for merge 2 */
	vd_tensor m2_w, m2_b;     /* (hidden, 4 embed), (hidden) */
	/* rotary: rot_dim = head_dim; frequency i < head_dim/4 reads the h row,
	 * the rest the w row, both with the same head_dim/4 inverse freqs */
	float *inv_freq;          /* (head_dim / 2) */
	uint8_t *pos_row;         /* (head_dim / 2) */
	vd_rope rope;
};

vd_status vd_qwen2_vit_config_from_hf(const vd_json *vc, vd_qwen2_vit_config *cfg)
{
	int64_t v[8];
	static const char *const keys[8] = { "depth", "embed_dim", "hidden_size", "num_heads",
					     "in_chans", "patch_size", "temporal_patch_size",
					     "spatial_merge_size" };
	static const int64_t defs[8] = { 32, 1280, 3584, 16, 3, 14, 2, 2 };
	double ratio;
	const char *act;
	vd_qwen2_vit_config c;
	vd_status st;

	if (!cfg)
		return vd_errorf(VD_ERR_INVALID_ARG, "qwen2 vit config: cfg is NULL");
	for (int i = 0; i < 8; i++) {
		/* transformers 5 writes in_channels; hub files in_chans */
		int64_t def = defs[i];

		if (i == 4 && (st = vd_json_int(vc, "in_channels", def, &def)))
			return st;
		if ((st = vd_json_int(vc, keys[i], def, &v[i])))
			return st;
		if (v[i] <= 0 || v[i] > INT32_MAX)
			return vd_errorf(VD_ERR_FORMAT, "qwen2 vit config: %s = %lld must be positive",
					 keys[i], (long long)v[i]);
	}
	if ((st = vd_json_num(vc, "mlp_ratio", 4.0, &ratio)) ||
	    (st = vd_json_str(vc, "hidden_act", "quick_gelu", &act)))
		return st;
	memset(&c, 0, sizeof(c));
	c.depth = (int)v[0];
	c.embed_dim = (int)v[1];
	c.hidden_size = (int)v[2];
	c.num_heads = (int)v[3];
	c.in_chans = (int)v[4];
	c.patch_size = (int)v[5];
	c.temporal_patch_size = (int)v[6];
	c.spatial_merge_size = (int)v[7];
	c.mlp_dim = (int)(c.embed_dim * ratio); /* int(embed_dim * mlp_ratio) */
	c.layer_norm_eps = 1e-6f;
	if (!strcmp(act, "quick_gelu"))
		c.hidden_act = VD_ACT_QUICK_GELU;
	else if (!strcmp(act, "gelu"))
		c.hidden_act = VD_ACT_GELU;
	else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh"))
		c.hidden_act = VD_ACT_GELU_TANH;
	else if (!strcmp(act, "silu"))
		c.hidden_act = VD_ACT_SILU;
	else
		return vd_errorf(VD_ERR_UNSUPPORTED, "qwen2 vit hidden_act '%s' is not supported", act);
	if (c.mlp_dim <= 0 || c.embed_dim % c.num_heads || (c.embed_dim / c.num_heads) % 4)
		return vd_errorf(VD_ERR_FORMAT,
				 "qwen2 vit config: embed_dim %d over %d heads must give a head dim "
				 "divisible by 4 (2-D rotary)", c.embed_dim, c.num_heads);
	*cfg = c;
	return VD_OK;
}

static vd_status alloc2(vd_qwen2_vit *v, vd_tensor *t, int64_t rows, int64_t cols)
{
	int64_t shape[2] = { rows, cols };

	return v->be->ops->alloc(v->be, t, v->dtype, cols > 0 ? 2 : 1, cols > 0 ? shape : &rows);
}

/* Allocate dst (rows, cols) (cols == 0: a vector) and fill it from
 * <prefix><key>, which must hold rows * cols elements with shape[0] == rows
 * (the Conv3d kernel arrives folded as (embed, C, T, p*p)). */
static vd_status load_new(vd_qwen2_vit *v, const vd_weights *w, const char *prefix,
			  const char *key, int64_t rows, int64_t cols, vd_tensor *dst)
{
	char name[512];
	vd_tensor src;
	vd_status st;

	snprintf(name, sizeof(name), "%s%s", prefix, key);
	if ((st = vd_weights_get(w, name, &src)))
		return st;
	if (src.shape[0] != rows || vd_tensor_numel(&src) != rows * (cols > 0 ? cols : 1) ||
	    (cols == 0 && src.ndim != 1))
		return vd_errorf(VD_ERR_FORMAT, "weight %s: %lld elements (dim 0 = %lld), expected "
				 "(%lld, %lld)", name, (long long)vd_tensor_numel(&src),
				 (long long)src.shape[0], (long long)rows, (long long)cols);
	if ((st = alloc2(v, dst, rows, cols)))
		return st;
	return v->be->ops->upload(v->be, dst, src.data, src.dtype, vd_tensor_numel(&src));
}

static vd_status load_block(vd_qwen2_vit *v, const vd_weights *w, const char *prefix, int l)
{
	vit_block *B = &v->blocks[l];
	int64_t E = v->cfg.embed_dim, F = v->cfg.mlp_dim;
	char base[600];
	vd_status st;

	snprintf(base, sizeof(base), "%sblocks.%d.", prefix, l);
	if ((st = load_new(v, w, base, "norm1.weight", E, 0, &B->ln1_w)) ||
	    (st = load_new(v, w, base, "norm1.bias", E, 0, &B->ln1_b)) ||
	    (st = load_new(v, w, base, "norm2.weight", E, 0, &B->ln2_w)) ||
	    (st = load_new(v, w, base, "norm2.bias", E, 0, &B->ln2_b)) ||
	    (st = load_new(v, w, base, "attn.qkv.weight", 3 * E, E, &B->qkv_w)) ||
	    (st = load_new(v, w, base, "attn.qkv.bias", 3 * E, 0, &B->qkv_b)) ||
	    (st = load_new(v, w, base, "attn.proj.weight", E, E, &B->out_w)) ||
	    (st = load_new(v, w, base, "attn.proj.bias", E, 0, &B->out_b)) ||
	    (st = load_new(v, w, base, "mlp.fc1.weight", F, E, &B->fc1_w)) ||
	    (st = load_new(v, w, base, "mlp.fc1.bias", F, 0, &B->fc1_b)) ||
	    (st = load_new(v, w, base, "mlp.fc2.weight", E, F, &B->fc2_w)) ||
	    (st = load_new(v, w, base, "mlp.fc2.bias", E, 0, &B->fc2_b)))
		return st;
	return VD_OK;
}

vd_status vd_qwen2_vit_create(vd_backend *be, const vd_weights *w, const char *prefix,
			      const vd_qwen2_vit_config *cfg, vd_qwen2_vit **out)
{
	vd_qwen2_vit *v;
	int64_t E, M, hd, quarter;
	vd_status st;

	if (!be || !w || !prefix || !cfg || !out)
		return vd_errorf(VD_ERR_INVALID_ARG, "qwen2 vit create: NULL argument");
	*out = NULL;
	if (cfg->embed_dim <= 0 || cfg->num_heads <= 0 || cfg->embed_dim % cfg->num_heads ||
	    (cfg->embed_dim / cfg->num_heads) % 4 || cfg->depth < 0 || cfg->mlp_dim <= 0 ||
	    cfg->hidden_size <= 0 || cfg->spatial_merge_size <= 0 || cfg->patch_size <= 0 ||
	    cfg->temporal_patch_size <= 0 || cfg->in_chans <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "qwen2 vit create: invalid config");
	v = calloc(1, sizeof(*v));
	if (!v)
		return vd_errorf(VD_ERR_NOMEM, "qwen2 vit create: out of memory");
	v->be = be;
	v->cfg = *cfg;
	v->dtype = vd_backend_compute_dtype(be);
	E = cfg->embed_dim;
	M = E * cfg->spatial_merge_size * cfg->spatial_merge_size;
	hd = E / cfg->num_heads;
	quarter = hd / 4;
	v->patch_dim = (int64_t)cfg->in_chans * cfg->temporal_patch_size * cfg->patch_size *
		       cfg->patch_size;
	v->blocks = calloc((size_t)(cfg->depth > 0 ? cfg->depth : 1), sizeof(vit_block));
	v->inv_freq = malloc(sizeof(float) * (size_t)(hd / 2));
	v->pos_row = malloc((size_t)(hd / 2));
	if (!v->blocks || !v->inv_freq || !v->pos_row) {
		st = vd_errorf(VD_ERR_NOMEM, "qwen2 vit create: out of memory");
		goto fail;
	}
	/* VisionRotaryEmbedding(head_dim / 2), theta 10000, in f32 */
	for (int64_t i = 0; i < quarter; i++) {
		float f = 1.0f / powf(10000.0f, (float)(2 * i) / (float)(hd / 2));

		v->inv_freq[i] = v->inv_freq[quarter + i] = f;
		v->pos_row[i] = 0;
		v->pos_row[quarter + i] = 1;
	}
	v->rope = (vd_rope){ .rot_dim = (int)hd, .n_tables = 1, .inv_freq = v->inv_freq,
			     .pos_row = v->pos_row, .mscale = 1.0f };
	if ((st = load_new(v, w, prefix, "patch_embed.proj.weight", E, v->patch_dim, &v->patch_w)))
		goto fail;
	for (int l = 0; l < cfg->depth; l++)
		if ((st = load_block(v, w, prefix, l)))
			goto fail;
	if ((st = load_new(v, w, prefix, "merger.ln_q.weight", E, 0, &v->lnq_w)) ||
	    (st = load_new(v, w, prefix, "merger.ln_q.bias", E, 0, &v->lnq_b)) ||
	    (st = load_new(v, w, prefix, "merger.mlp.0.weight", M, M, &v->m0_w)) ||
	    (st = load_new(v, w, prefix, "merger.mlp.0.bias", M, 0, &v->m0_b)) ||
	    (st = load_new(v, w, prefix, "merger.mlp.2.weight", cfg->hidden_size, M, &v->m2_w)) ||
	    (st = load_new(v, w, prefix, "merger.mlp.2.bias", cfg->hidden_size, 0, &v->m2_b)))
		goto fail;
	*out = v;
	return VD_OK;

fail:
	vd_qwen2_vit_destroy(v);
	return st;
}

void vd_qwen2_vit_destroy(vd_qwen2_vit *v)
{
	const vd_ops *o;

	if (!v)
		return;
	o = v->be->ops;
	if (v->blocks) {
		for (int l = 0; l < v->cfg.depth; l++)
			vd_vit_block_free(v->be, &v->blocks[l]);
		free(v->blocks);
	}
	o->free(v->be, &v->patch_w);
	o->free(v->be, &v->lnq_w);
	o->free(v->be, &v->lnq_b);
	o->free(v->be, &v->m0_w);
	o->free(v->be, &v->m0_b);
	o->free(v->be, &v->m2_w);
	o->free(v->be, &v->m2_b);
	free(v->inv_freq);
	free(v->pos_row);
	free(v);
}

/* The Conv3d patch embedding of px (N, C T p p) into x (N, E): the
 * backend's convolution over N samples of (C, T, p, p), or linear when the
 * backend has none for it; both are the same sums. */
static vd_status patch_embed(vd_qwen2_vit *v, const vd_tensor *px, vd_tensor *x)
{
	const vd_ops *o = v->be->ops;
	int64_t T = v->cfg.temporal_patch_size, p = v->cfg.patch_size;
	int64_t kernel[3] = { T, p, p };
	int64_t size[4] = { v->cfg.in_chans, T, p, p };
	vd_status st;

	if (o->patch_conv) {
		st = o->patch_conv(v->be, px, 3, size, kernel, &v->patch_w, x);
		if (st != VD_ERR_UNSUPPORTED)
			return st;
	}
	return o->linear(v->be, px, &v->patch_w, NULL, x);
}

/* Rotary (h, w) positions (2, N) and frame boundaries cu (frames + 1) of
 * n images, patches in merge-block order as rot_pos_emb enumerates them:
 * for each frame, merge blocks in raster order, inside a block raster. */
static void layout(const int64_t *thw, int n, int64_t N, int m, int32_t *pos,
			int32_t *cu, int *n_frames)
{
	int64_t r = 0;
	int f = 0;

	cu[0] = 0;
	for (int i = 0; i < n; i++) {
		int64_t t = thw[3 * i], h = thw[3 * i + 1], w = thw[3 * i + 2];

		for (int64_t tt = 0; tt < t; tt++) {
			for (int64_t bh = 0; bh < h / m; bh++)
				for (int64_t bw = 0; bw < w / m; bw++)
					for (int dy = 0; dy < m; dy++)
						for (int dx = 0; dx < m; dx++, r++) {
							pos[r] = (int32_t)(bh * m + dy);
							pos[N + r] = (int32_t)(bw * m + dx);
						}
			cu[++f] = (int32_t)r;
		}
	}
	*n_frames = f;
}

vd_status vd_qwen2_vit_forward(vd_qwen2_vit *v, const float *pixels, const int64_t *grid_thw,
			       int n, vd_tensor *out)
{
	vd_backend *be;
	const vd_ops *o;
	int64_t N = 0, frames = 0, E, H, D;
	int m, nf = 0;
	int32_t *pos = NULL, *cu = NULL;
	vd_tensor px = { 0 }, x = { 0 }, h = { 0 }, qkv = { 0 }, attn = { 0 }, f = { 0 };
	vd_status st;

	if (!v || !pixels || !grid_thw || n <= 0 || !out)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "qwen2 vit forward: pixels, grid_thw, n > 0 and out are required");
	be = v->be;
	o = be->ops;
	m = v->cfg.spatial_merge_size;
	E = v->cfg.embed_dim;
	H = v->cfg.num_heads;
	D = E / H;
	for (int i = 0; i < n; i++) {
		int64_t t = grid_thw[3 * i], gh = grid_thw[3 * i + 1], gw = grid_thw[3 * i + 2];

		if (t <= 0 || gh <= 0 || gw <= 0 || gh % m || gw % m)
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "qwen2 vit forward: image %d grid (%lld, %lld, %lld) must be "
					 "positive with h, w multiples of %d", i, (long long)t,
					 (long long)gh, (long long)gw, m);
		N += t * gh * gw;
		frames += t;
	}
	if (N > INT32_MAX / 2)
		return vd_errorf(VD_ERR_LIMIT, "qwen2 vit forward: %lld patches are too many",
				 (long long)N);
	pos = malloc(sizeof(int32_t) * (size_t)(2 * N));
	cu = malloc(sizeof(int32_t) * (size_t)(frames + 1));
	if (!pos || !cu) {
		st = vd_errorf(VD_ERR_NOMEM, "qwen2 vit forward: out of memory");
		goto out;
	}
	layout(grid_thw, n, N, m, pos, cu, &nf);
	{
		int64_t pshape[2] = { N, v->patch_dim };

		if ((st = o->alloc(be, &px, v->dtype, 2, pshape)) ||
		    (st = o->upload(be, &px, pixels, VD_DTYPE_F32, N * v->patch_dim)))
			goto out;
	}
	if ((st = alloc2(v, &x, N, E)) || (st = alloc2(v, &h, N, E)) ||
	    (st = alloc2(v, &qkv, N, 3 * E)) || (st = alloc2(v, &attn, N, E)) ||
	    (st = alloc2(v, &f, N, v->cfg.mlp_dim)) ||
	    (st = patch_embed(v, &px, &x)))
		goto out;
	{
		vd_vit_args va = { .heads = H, .head_dim = D, .eps = v->cfg.layer_norm_eps,
				   .act = v->cfg.hidden_act,
				   .cu = cu, .nseg = nf, .rope_pos = pos, .rope = &v->rope };
		vd_vit_bufs bufs = { .h = &h, .qkv = &qkv, .attn = &attn, .f = &f };

		for (int l = 0; l < v->cfg.depth; l++)
			if ((st = vd_vit_block_forward(be, &v->blocks[l], &va, &bufs, &x)))
				goto out;
	}
	*out = x;
	memset(&x, 0, sizeof(x));
out:
	o->free(be, &px);
	o->free(be, &x);
	o->free(be, &h);
	o->free(be, &qkv);
	o->free(be, &attn);
	o->free(be, &f);
	free(pos);
	free(cu);
	return st;
}

vd_status vd_qwen2_vit_merge(vd_qwen2_vit *v, const vd_tensor *x, vd_tensor *out)
{
	vd_backend *be;
	const vd_ops *o;
	int64_t E, G, N;
	vd_tensor h = { 0 }, hv, mid = { 0 };
	vd_status st;

	if (!v || !x || !out)
		return vd_errorf(VD_ERR_INVALID_ARG, "qwen2 vit merge: NULL argument");
	be = v->be;
	o = be->ops;
	E = v->cfg.embed_dim;
	G = (int64_t)v->cfg.spatial_merge_size * v->cfg.spatial_merge_size;
	if (x->ndim != 2 || x->shape[1] != E || x->shape[0] % G)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "qwen2 vit merge: x must be (N, %lld) with N a multiple of %lld",
				 (long long)E, (long long)G);
	N = x->shape[0];
	if ((st = alloc2(v, &h, N, E)) ||
	    (st = o->layernorm(be, x, &v->lnq_w, &v->lnq_b, v->cfg.layer_norm_eps, &h)))
		goto out;
	/* the packed (N, E) rows viewed as (N / G, G E): one row per merge block */
	hv = h;
	hv.alloc = NULL;
	hv.shape[0] = N / G;
	hv.shape[1] = G * E;
	hv.stride[0] = G * E;
	hv.stride[1] = 1;
	if ((st = alloc2(v, &mid, N / G, G * E)) ||
	    (st = o->linear(be, &hv, &v->m0_w, &v->m0_b, &mid)) ||
	    (st = o->act(be, VD_ACT_GELU, &mid, &mid)) ||
	    (st = alloc2(v, out, N / G, v->cfg.hidden_size)))
		goto out;
	if ((st = o->linear(be, &mid, &v->m2_w, &v->m2_b, out)))
		o->free(be, out);
out:
	o->free(be, &h);
	o->free(be, &mid);
	return st;
}
