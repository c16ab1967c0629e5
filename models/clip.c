/* The CLIP vision transformer (LLaVA's and Phi-3.5-V's tower) over the ops
 * table: patch conv as im2patch + linear, class token, position embeddings,
 * pre_layrnorm, then pre-LN encoder layers with full attention inside each
 * image. Only the first run_layers layers are loaded and run; post_layernorm
 * is never used. Scratch buffers are allocated per forward call. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "models/vit_block.h"
#include "vllmd/models.h"

typedef vd_vit_block clip_layer;

struct vd_clip {
	vd_backend *be;
	vd_clip_config cfg;
	vd_dtype dtype;
	int run_layers;
	int64_t num_patches;      /* (S / p)^2 per image */
	vd_tensor patch_w;        /* (hidden, C p p), the conv kernel flattened */
	vd_tensor class_emb;      /* (1, hidden) */
	vd_tensor pos_emb;        /* (1 + num_patches, hidden) */
	vd_tensor pre_w, pre_b;   /* (hidden) */
	clip_layer *layers;       /* run_layers */
};

vd_status vd_clip_config_from_hf(const vd_json *vc, vd_clip_config *cfg)
{
	int64_t v[7];
	static const char *const keys[7] = { "hidden_size", "intermediate_size",
					     "num_hidden_layers", "num_attention_heads",
					     "image_size", "patch_size", "num_channels" };
	static const int64_t defs[7] = { 768, 3072, 12, 12, 224, 32, 3 };
	const char *act;
	double eps;
	vd_clip_config c;
	vd_status st;

	if (!cfg)
		return vd_errorf(VD_ERR_INVALID_ARG, "clip config: cfg is NULL");
	for (int i = 0; i < 7; i++) {
		if ((st = vd_json_int(vc, keys[i], defs[i], &v[i])))
			return st;
		if (v[i] <= 0 || v[i] > INT32_MAX)
			return vd_errorf(VD_ERR_FORMAT, "clip config: %s = %lld must be positive",
					 keys[i], (long long)v[i]);
	}
	if ((st = vd_json_num(vc, "layer_norm_eps", 1e-5, &eps)) ||
	    (st = vd_json_str(vc, "hidden_act", "quick_gelu", &act)))
		return st;
	c = (vd_clip_config){ (int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4], (int)v[5],
			      (int)v[6], (float)eps, VD_ACT_QUICK_GELU };
	if (!strcmp(act, "quick_gelu"))
		c.hidden_act = VD_ACT_QUICK_GELU;
	else if (!strcmp(act, "gelu"))
		c.hidden_act = VD_ACT_GELU;
	else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh"))
		c.hidden_act = VD_ACT_GELU_TANH;
	else if (!strcmp(act, "silu"))
		c.hidden_act = VD_ACT_SILU;
	else
		return vd_errorf(VD_ERR_UNSUPPORTED, "clip hidden_act '%s' is not supported", act);
	if (c.hidden_size % c.num_heads)
		return vd_errorf(VD_ERR_FORMAT, "clip config: hidden_size %d is not a multiple of %d heads",
				 c.hidden_size, c.num_heads);
	*cfg = c;
	return VD_OK;
}

/* Upload checkpoint tensor <prefix><key>, which must have shape[0..ndim),
 * into dst from row row0 on (a vector dst counts elements as rows). */
static vd_status load(vd_clip *c, const vd_weights *w, const char *prefix, const char *key,
		      int ndim, const int64_t *shape, vd_tensor *dst, int64_t row0)
{
	char name[512];
	vd_tensor src, view;
	vd_status st;

	snprintf(name, sizeof(name), "%s%s", prefix, key);
	if ((st = vd_weights_get(w, name, &src)))
		return st;
	if (src.ndim != ndim)
		return vd_errorf(VD_ERR_FORMAT, "weight %s has %d dims, expected %d", name, src.ndim,
				 ndim);
	for (int i = 0; i < ndim; i++)
		if (src.shape[i] != shape[i])
			return vd_errorf(VD_ERR_FORMAT, "weight %s: dim %d is %lld, expected %lld",
					 name, i, (long long)src.shape[i], (long long)shape[i]);
	view = vd_tensor_rows(dst, row0, vd_tensor_numel(&src) / (dst->ndim > 1 ? dst->shape[1] : 1));
	return c->be->ops->upload(c->be, &view, src.data, src.dtype, vd_tensor_numel(&src));
}

static vd_status alloc2(vd_clip *c, vd_tensor *t, int64_t rows, int64_t cols)
{
	int64_t shape[2] = { rows, cols };

	return c->be->ops->alloc(c->be, t, c->dtype, cols > 0 ? 2 : 1, cols > 0 ? shape : &rows);
}

/* Allocate dst (rows, cols) (cols == 0: a vector) and load one tensor of
 * that shape into it. */
static vd_status load_new(vd_clip *c, const vd_weights *w, const char *prefix, const char *key,
			  int64_t rows, int64_t cols, vd_tensor *dst)
{
	int64_t shape[2] = { rows, cols };
	vd_status st = alloc2(c, dst, rows, cols);

	return st ? st : load(c, w, prefix, key, cols > 0 ? 2 : 1, shape, dst, 0);
}

static vd_status load_layer(vd_clip *c, const vd_weights *w, const char *prefix, int l)
{
	clip_layer *L = &c->layers[l];
	int64_t hid = c->cfg.hidden_size, F = c->cfg.intermediate_size;
	int64_t wshape[2] = { hid, hid };
	static const char *const qkv[3] = { "q_proj", "k_proj", "v_proj" };
	char base[600], key[128];
	vd_status st;

	snprintf(base, sizeof(base), "%sencoder.layers.%d.", prefix, l);
	if ((st = load_new(c, w, base, "layer_norm1.weight", hid, 0, &L->ln1_w)) ||
	    (st = load_new(c, w, base, "layer_norm1.bias", hid, 0, &L->ln1_b)) ||
	    (st = load_new(c, w, base, "layer_norm2.weight", hid, 0, &L->ln2_w)) ||
	    (st = load_new(c, w, base, "layer_norm2.bias", hid, 0, &L->ln2_b)) ||
	    (st = alloc2(c, &L->qkv_w, 3 * hid, hid)) || (st = alloc2(c, &L->qkv_b, 3 * hid, 0)))
		return st;
	for (int i = 0; i < 3; i++) {
		snprintf(key, sizeof(key), "self_attn.%s.weight", qkv[i]);
		if ((st = load(c, w, base, key, 2, wshape, &L->qkv_w, i * hid)))
			return st;
		snprintf(key, sizeof(key), "self_attn.%s.bias", qkv[i]);
		if ((st = load(c, w, base, key, 1, wshape, &L->qkv_b, i * hid)))
			return st;
	}
	if ((st = load_new(c, w, base, "self_attn.out_proj.weight", hid, hid, &L->out_w)) ||
	    (st = load_new(c, w, base, "self_attn.out_proj.bias", hid, 0, &L->out_b)) ||
	    (st = load_new(c, w, base, "mlp.fc1.weight", F, hid, &L->fc1_w)) ||
	    (st = load_new(c, w, base, "mlp.fc1.bias", F, 0, &L->fc1_b)) ||
	    (st = load_new(c, w, base, "mlp.fc2.weight", hid, F, &L->fc2_w)) ||
	    (st = load_new(c, w, base, "mlp.fc2.bias", hid, 0, &L->fc2_b)))
		return st;
	return VD_OK;
}

vd_status vd_clip_create(vd_backend *be, const vd_weights *w, const char *prefix,
			 const vd_clip_config *cfg, int run_layers, vd_clip **out)
{
	vd_clip *c;
	int64_t hid, C, p, np;
	vd_status st;

	if (!be || !w || !prefix || !cfg || !out)
		return vd_errorf(VD_ERR_INVALID_ARG, "clip create: NULL argument");
	*out = NULL;
	if (cfg->hidden_size <= 0 || cfg->num_heads <= 0 || cfg->hidden_size % cfg->num_heads ||
	    cfg->patch_size <= 0 || cfg->image_size < cfg->patch_size || cfg->num_channels <= 0 ||
	    cfg->intermediate_size <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "clip create: invalid config");
	if (run_layers < 0 || run_layers > cfg->num_layers)
		return vd_errorf(VD_ERR_INVALID_ARG, "clip create: run_layers %d outside [0, %d]",
				 run_layers, cfg->num_layers);
	c = calloc(1, sizeof(*c));
	if (!c)
		return vd_errorf(VD_ERR_NOMEM, "clip create: out of memory");
	c->be = be;
	c->cfg = *cfg;
	c->dtype = vd_backend_compute_dtype(be);
	c->run_layers = run_layers;
	hid = cfg->hidden_size;
	C = cfg->num_channels;
	p = cfg->patch_size;
	np = (int64_t)(cfg->image_size / cfg->patch_size) * (cfg->image_size / cfg->patch_size);
	c->num_patches = np;
	c->layers = calloc((size_t)(run_layers > 0 ? run_layers : 1), sizeof(clip_layer));
	if (!c->layers) {
		st = vd_errorf(VD_ERR_NOMEM, "clip create: out of memory");
		goto fail;
	}
	{
		int64_t conv[4] = { hid, C, p, p }, cls[1] = { hid };

		if ((st = alloc2(c, &c->patch_w, hid, C * p * p)) ||
		    (st = load(c, w, prefix, "embeddings.patch_embedding.weight", 4, conv,
			       &c->patch_w, 0)) ||
		    (st = alloc2(c, &c->class_emb, 1, hid)) ||
		    (st = load(c, w, prefix, "embeddings.class_embedding", 1, cls, &c->class_emb, 0)) ||
		    (st = load_new(c, w, prefix, "embeddings.position_embedding.weight", 1 + np, hid,
				   &c->pos_emb)) ||
		    (st = load_new(c, w, prefix, "pre_layrnorm.weight", hid, 0, &c->pre_w)) ||
		    (st = load_new(c, w, prefix, "pre_layrnorm.bias", hid, 0, &c->pre_b)))
			goto fail;
	}
	for (int l = 0; l < run_layers; l++)
		if ((st = load_layer(c, w, prefix, l)))
			goto fail;
	*out = c;
	return VD_OK;

fail:
	vd_clip_destroy(c);
	return st;
}

void vd_clip_destroy(vd_clip *c)
{
	const vd_ops *o;

	if (!c)
		return;
	o = c->be->ops;
	if (c->layers) {
		for (int l = 0; l < c->run_layers; l++)
			vd_vit_block_free(c->be, &c->layers[l]);
		free(c->layers);
	}
	o->free(c->be, &c->patch_w);
	o->free(c->be, &c->class_emb);
	o->free(c->be, &c->pos_emb);
	o->free(c->be, &c->pre_w);
	o->free(c->be, &c->pre_b);
	free(c);
}

/* The scratch of one forward call. */
typedef struct clip_scratch {
	vd_tensor img;     /* (n, C, S, S) */
	vd_tensor patches; /* (n P, C p p) */
	vd_tensor emb;     /* (n P, hidden) */
	vd_tensor h;       /* (R, hidden) */
	vd_tensor qkv;     /* (R, 3 hidden) */
	vd_tensor attn;    /* (R, hidden) */
	vd_tensor f;       /* (R, inter) */
	int32_t *rows;     /* (n P) destination row of each patch embedding */
	int32_t *cu;       /* (n + 1) image boundaries */
} clip_scratch;

/* The patch embeddings of n images in s->img as im2patch and linear, into
 * s->emb. */
static vd_status patches_linear(vd_clip *c, clip_scratch *s, int n)
{
	vd_backend *be = c->be;
	const vd_ops *o = be->ops;
	int64_t C = c->cfg.num_channels, p = c->cfg.patch_size, P = c->num_patches;
	int64_t pshape[2] = { n * P, C * p * p };
	vd_status st;

	if ((st = o->alloc(be, &s->patches, c->dtype, 2, pshape)))
		return st;
	for (int i = 0; i < n; i++) {
		vd_tensor im = vd_tensor_rows(&s->img, i, 1), pr = vd_tensor_rows(&s->patches, i * P, P);

		/* drop the leading image dim: (C, S, S) */
		im.ndim = 3;
		memmove(im.shape, im.shape + 1, 3 * sizeof(int64_t));
		memmove(im.stride, im.stride + 1, 3 * sizeof(int64_t));
		if ((st = o->im2patch(be, &im, (int)p, &pr)))
			return st;
	}
	return o->linear(be, &s->patches, &c->patch_w, NULL, &s->emb);
}

/* Embeddings of n images into x (R, hidden): CLS then patches per image,
 * plus position embeddings, then pre_layrnorm. */
static vd_status embed_images(vd_clip *c, clip_scratch *s, const float *pixels, int n,
			      vd_tensor *x)
{
	vd_backend *be = c->be;
	const vd_ops *o = be->ops;
	int64_t C = c->cfg.num_channels, S = c->cfg.image_size, p = c->cfg.patch_size;
	int64_t P = c->num_patches, hid = c->cfg.hidden_size;
	int64_t img_shape[4] = { n, C, S, S };
	int64_t eshape[2] = { n * P, hid };
	vd_status st;

	if ((st = o->alloc(be, &s->img, c->dtype, 4, img_shape)) ||
	    (st = o->upload(be, &s->img, pixels, VD_DTYPE_F32, n * C * S * S)) ||
	    (st = o->alloc(be, &s->emb, c->dtype, 2, eshape)))
		return st;
	for (int i = 0; i < n; i++)
		for (int64_t j = 0; j < P; j++)
			s->rows[i * P + j] = (int32_t)(i * (1 + P) + 1 + j);
	/* the patch convolution: the backend's own (cuDNN), or im2patch and
	 * linear, which are the same sums */
	st = o->patch_conv ? o->patch_conv(be, &s->img, 2, (const int64_t[]){ C, S, S },
					   (const int64_t[]){ p, p }, &c->patch_w, &s->emb)
			   : VD_ERR_UNSUPPORTED;
	if (st == VD_ERR_UNSUPPORTED)
		st = patches_linear(c, s, n);
	if (st != VD_OK ||
	    (st = o->scatter_rows(be, &s->emb, s->rows, n * P, x)))
		return st;
	for (int i = 0; i < n; i++) {
		int32_t cls_row = (int32_t)(i * (1 + P));
		vd_tensor xi = vd_tensor_rows(x, i * (1 + P), 1 + P);

		if ((st = o->scatter_rows(be, &c->class_emb, &cls_row, 1, x)) ||
		    (st = o->add(be, &xi, &c->pos_emb, &xi)))
			return st;
	}
	return o->layernorm(be, x, &c->pre_w, &c->pre_b, c->cfg.layer_norm_eps, x);
}

static vd_status run_layer(vd_clip *c, const clip_layer *L, clip_scratch *s, int n, vd_tensor *x)
{
	int64_t H = c->cfg.num_heads;
	vd_vit_args a = { .heads = H, .head_dim = c->cfg.hidden_size / H,
			  .eps = c->cfg.layer_norm_eps, .act = c->cfg.hidden_act, .cu = s->cu,
			  .nseg = n };
	vd_vit_bufs bufs = { .h = &s->h, .qkv = &s->qkv, .attn = &s->attn, .f = &s->f };

	return vd_vit_block_forward(c->be, L, &a, &bufs, x);
}

vd_status vd_clip_forward(vd_clip *c, const float *pixels, int n, vd_tensor *out)
{
	vd_backend *be;
	const vd_ops *o;
	clip_scratch s;
	vd_tensor x;
	int64_t R, hid, shape[2];
	vd_status st;

	if (!c || !pixels || n <= 0 || !out)
		return vd_errorf(VD_ERR_INVALID_ARG, "clip forward: pixels, n > 0 and out are required");
	be = c->be;
	o = be->ops;
	memset(&s, 0, sizeof(s));
	memset(&x, 0, sizeof(x));
	hid = c->cfg.hidden_size;
	R = (int64_t)n * (1 + c->num_patches);
	if (R > INT32_MAX)
		return vd_errorf(VD_ERR_LIMIT, "clip forward: %d images are too many rows", n);
	s.rows = malloc(sizeof(int32_t) * (size_t)(n * c->num_patches));
	s.cu = malloc(sizeof(int32_t) * (size_t)(n + 1));
	if (!s.rows || !s.cu) {
		st = vd_errorf(VD_ERR_NOMEM, "clip forward: out of memory");
		goto out;
	}
	for (int i = 0; i <= n; i++)
		s.cu[i] = (int32_t)(i * (1 + c->num_patches));
	shape[0] = R;
	shape[1] = hid;
	if ((st = o->alloc(be, &x, c->dtype, 2, shape)) ||
	    (st = alloc2(c, &s.h, R, hid)) || (st = alloc2(c, &s.qkv, R, 3 * hid)) ||
	    (st = alloc2(c, &s.attn, R, hid)) ||
	    (st = alloc2(c, &s.f, R, c->cfg.intermediate_size)) ||
	    (st = embed_images(c, &s, pixels, n, &x)))
		goto out;
	for (int l = 0; l < c->run_layers; l++)
		if ((st = run_layer(c, &c->layers[l], &s, n, &x)))
			goto out;
	*out = x;
	memset(&x, 0, sizeof(x));
out:
	o->free(be, &x);
	o->free(be, &s.img);
	o->free(be, &s.patches);
	o->free(be, &s.emb);
	o->free(be, &s.h);
	o->free(be, &s.qkv);
	o->free(be, &s.attn);
	o->free(be, &s.f);
	free(s.rows);
	free(s.cu);
	return st;
}
