/* phi3v.so: the Phi-3.5-vision family (Phi3VForCausalLM). HD transform
 * (transpose tall images, Pillow-bilinear resize, white padding to whole
 * tiles, torch-bicubic global image), CLIP over the global image and every
 * tile, 2x2 patch merge with a learnt separator after every row, glb_GN
 * between the tile and global parts, a GELU MLP projection, and
 * <|image_N|> expansion with a BOS per text chunk as the HF processor does.
 * Reads the hub Phi3V weight layout. Talks to the core only through
 * vd_host_api. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vllmd/plugin.h"
#include "vllmd/plugin_util.h"

static const vd_host_api *H;

#define PHI3V_IMAGE_TOKEN 32044 /* <|image|>: vLLM's placeholder id */
#define PHI3V_MAX_IMAGES 8
#define PHI3V_MAX_CROPS 64      /* per-request num_crops beyond this is refused */
#define CLIP_PREFIX "model.vision_embed_tokens.img_processor.vision_model."
#define VT_PREFIX "model.vision_embed_tokens."

typedef struct phi3v {
	vd_backend *be;
	const vd_tokenizer *tok;
	vd_clip *clip;
	vd_clip_config vcfg;
	int tile;             /* S: HD tile side = CLIP image_size */
	int grid;             /* G: patches per tile side */
	int num_crops;        /* preprocessor default */
	int max_crops;        /* the most crops one image may use (memory bound) */
	bool glb_first;       /* hd_transform_order "glb_sub" */
	int32_t image_token;
	int embed_dim;
	int32_t max_tokens;   /* worst case per image */
	float mean[3], std[3];
	/* projector */
	vd_tensor gn;         /* (8, C): sub_GN as 4 rows of C, then glb_GN */
	vd_tensor w0, b0, w2, b2;
	vd_plugin_stage px; /* pixels of a vision batch */
} phi3v;

/* ---------------------------------------------------------------- helpers */

static vd_status upload_weight(phi3v *m, const vd_weights *w, const char *name, vd_tensor *out)
{
	return vd_plugin_upload_weight(H, m->be, w, name, out);
}

/* models.md §2.2 step 11, with 144 = (G/2)^2 and 12 = G/2 in general. */
static int32_t token_count(const phi3v *m, int hc, int wc)
{
	int g = m->grid / 2;

	return (int32_t)((hc * wc + 1) * g * g + 1 + (hc + 1) * g);
}

/* The CLIP shape: img_processor.vision_config when the checkpoint gives one
 * (tiny test models), else the ViT-L/14-336 that the remote code hard-codes. */
static vd_status vision_config(const vd_json *cfg, vd_clip_config *out)
{
	const vd_json *vc = H->json_get(cfg, "img_processor.vision_config");

	if (vc)
		return H->clip_config_from_hf(vc, out);
	*out = (vd_clip_config){ .hidden_size = 1024, .intermediate_size = 4096, .num_layers = 24,
				 .num_heads = 16, .image_size = 336, .patch_size = 14,
				 .num_channels = 3, .layer_norm_eps = 1e-5f,
				 .hidden_act = VD_ACT_QUICK_GELU };
	return VD_OK;
}

/* embd_layer / img_processor options this implementation follows. */
static vd_status check_layout(const vd_json *cfg, bool *glb_first, int64_t *layer_idx)
{
	const char *order, *feature;
	bool hd, sep;
	vd_status st;

	st = H->json_str(cfg, "embd_layer.hd_transform_order", "glb_sub", &order);
	if (st == VD_OK)
		st = H->json_bool(cfg, "embd_layer.use_hd_transform", false, &hd);
	if (st == VD_OK)
		st = H->json_bool(cfg, "embd_layer.with_learnable_separator", false, &sep);
	if (st == VD_OK)
		st = H->json_str(cfg, "img_processor.type_feature", "patch", &feature);
	if (st == VD_OK)
		st = H->json_int(cfg, "img_processor.layer_idx", -2, layer_idx);
	if (st != VD_OK)
		return st;
	if (!hd || !sep)
		return H->errorf(VD_ERR_UNSUPPORTED, "phi3v: only embd_layer.use_hd_transform and "
				 "with_learnable_separator true are supported (Phi-3/3.5-vision)");
	if (strcmp(order, "sub_glb") && strcmp(order, "glb_sub"))
		return H->errorf(VD_ERR_UNSUPPORTED, "phi3v: hd_transform_order '%s' (want sub_glb or "
				 "glb_sub)", order);
	if (strcmp(feature, "patch"))
		return H->errorf(VD_ERR_UNSUPPORTED, "phi3v: img_processor.type_feature '%s' is not "
				 "supported (patch is)", feature);
	*glb_first = !strcmp(order, "glb_sub");
	return VD_OK;
}

/* ---------------------------------------------------------------- create */

static void phi3v_destroy(void *state)
{
	phi3v *m = state;

	if (!m)
		return;
	H->clip_destroy(m->clip);
	vd_plugin_free_tensors(m->be,
			       (vd_tensor *const[]){ &m->gn, &m->w0, &m->b0, &m->w2, &m->b2 }, 5);
	vd_plugin_stage_free(&m->px, m->be);
	free(m);
}

/* sub_GN (1,1,1,4C) and glb_GN (1,1,4C) as 8 rows of C, so that the
 * separators can be gathered together with the CLIP patch rows. */
static vd_status upload_separators(phi3v *m, const vd_weights *w)
{
	int C = m->vcfg.hidden_size;
	int64_t shape[2] = { 8, C };
	vd_tensor sub, glb, half;
	vd_status st;

	st = H->weights_get(w, VT_PREFIX "sub_GN", &sub);
	if (st == VD_OK)
		st = H->weights_get(w, VT_PREFIX "glb_GN", &glb);
	if (st != VD_OK)
		return st;
	if (vd_tensor_numel(&sub) != 4 * C || vd_tensor_numel(&glb) != 4 * C)
		return H->errorf(VD_ERR_FORMAT, "phi3v: sub_GN/glb_GN have %lld/%lld values, want 4 x "
				 "CLIP hidden = %d", (long long)vd_tensor_numel(&sub),
				 (long long)vd_tensor_numel(&glb), 4 * C);
	st = m->be->ops->alloc(m->be, &m->gn, m->be->dtype, 2, shape);
	if (st != VD_OK)
		return st;
	half = vd_tensor_rows(&m->gn, 0, 4);
	st = m->be->ops->upload(m->be, &half, sub.data, sub.dtype, 4 * C);
	if (st != VD_OK)
		return st;
	half = vd_tensor_rows(&m->gn, 4, 4);
	return m->be->ops->upload(m->be, &half, glb.data, glb.dtype, 4 * C);
}

static vd_status read_preprocessor(phi3v *m, const vd_json *pp)
{
	int64_t nc;
	vd_status st;

	/* Phi3VImageProcessor's class default is one crop. */
	st = H->json_int(pp, "num_crops", 1, &nc);
	if (st == VD_OK)
		st = vd_plugin_read_triplet(H, pp, "image_mean", vd_clip_mean, m->mean);
	if (st == VD_OK)
		st = vd_plugin_read_triplet(H, pp, "image_std", vd_clip_std, m->std);
	if (st != VD_OK)
		return st;
	if (nc < 1 || nc > PHI3V_MAX_CROPS)
		return H->errorf(VD_ERR_FORMAT, "preprocessor_config.json: num_crops %lld out of "
				 "range 1..%d", (long long)nc, PHI3V_MAX_CROPS);
	m->num_crops = (int)nc;
	return VD_OK;
}

static vd_status phi3v_create(const vd_host_api *host, const vd_model_ctx *ctx, void **state,
			      vd_decoder_spec *spec, vd_mm_limits *limits)
{
	const vd_json *cfg = ctx->config;
	int64_t layer_idx;
	int run_layers;
	phi3v *m;
	vd_status st;

	*state = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return host->errorf(VD_ERR_NOMEM, "out of memory");
	m->be = ctx->backend;
	m->tok = ctx->tokenizer;

	st = check_layout(cfg, &m->glb_first, &layer_idx);
	if (st != VD_OK)
		goto fail;

	/* Text decoder: the top-level config is a Phi3Config. */
	st = host->decoder_spec_from_hf(cfg, "phi3", spec);
	if (st != VD_OK)
		goto fail;
	snprintf(spec->prefix, sizeof(spec->prefix), "model.");
	/* The embedding may be stored only under the wte alias (models.md §1). */
	if (!host->weights_has(ctx->weights, "model.embed_tokens.weight") &&
	    host->weights_has(ctx->weights, VT_PREFIX "wte.weight"))
		snprintf(spec->embed_name, sizeof(spec->embed_name), VT_PREFIX "wte.weight");
	st = vd_plugin_lm_head(host, ctx, cfg, "lm_head.weight", spec);
	if (st != VD_OK)
		goto fail;

	/* Vision tower up to img_processor.layer_idx; post_layernorm unused. */
	st = vision_config(cfg, &m->vcfg);
	if (st != VD_OK)
		goto fail;
	run_layers = layer_idx < 0 ? m->vcfg.num_layers + 1 + (int)layer_idx : (int)layer_idx;
	if (run_layers < 0 || run_layers > m->vcfg.num_layers) {
		st = host->errorf(VD_ERR_FORMAT, "phi3v: img_processor.layer_idx %lld out of range "
				  "for %d CLIP layers", (long long)layer_idx, m->vcfg.num_layers);
		goto fail;
	}
	m->tile = m->vcfg.image_size;
	m->grid = m->vcfg.image_size / m->vcfg.patch_size;
	if (m->grid * m->vcfg.patch_size != m->tile || m->grid % 2) {
		st = host->errorf(VD_ERR_FORMAT, "phi3v: CLIP image_size %d / patch_size %d must give "
				  "an even patch grid for the 2x2 merge", m->tile, m->vcfg.patch_size);
		goto fail;
	}
	st = host->clip_create(m->be, ctx->weights, CLIP_PREFIX, &m->vcfg, run_layers, &m->clip);
	if (st != VD_OK)
		goto fail;

	/* Projection: Linear(4C -> D), GELU, Linear(D -> D). */
	st = upload_weight(m, ctx->weights, VT_PREFIX "img_projection.0.weight", &m->w0);
	if (st == VD_OK)
		st = upload_weight(m, ctx->weights, VT_PREFIX "img_projection.0.bias", &m->b0);
	if (st == VD_OK)
		st = upload_weight(m, ctx->weights, VT_PREFIX "img_projection.2.weight", &m->w2);
	if (st == VD_OK)
		st = upload_weight(m, ctx->weights, VT_PREFIX "img_projection.2.bias", &m->b2);
	if (st == VD_OK)
		st = upload_separators(m, ctx->weights);
	if (st != VD_OK)
		goto fail;
	if (m->w0.shape[1] != 4 * m->vcfg.hidden_size || m->w2.shape[0] != spec->hidden_size) {
		st = host->errorf(VD_ERR_FORMAT, "phi3v: img_projection maps %lld -> %lld but the "
				  "merged CLIP width is %d and the decoder hidden %d",
				  (long long)m->w0.shape[1], (long long)m->w2.shape[0],
				  4 * m->vcfg.hidden_size, spec->hidden_size);
		goto fail;
	}
	m->embed_dim = spec->hidden_size;

	st = read_preprocessor(m, ctx->preprocessor);
	if (st != VD_OK)
		goto fail;
	m->image_token = host->token_to_id(m->tok, "<|image|>");
	if (m->image_token < 0)
		m->image_token = PHI3V_IMAGE_TOKEN;

	/* A per-request num_crops may go up to 16 (the model card's single
	 * image value) or the configured value if larger; the tallest layout
	 * (hc = crops, wc = 1) is the worst case for the token count. */
	m->max_crops = m->num_crops > 16 ? m->num_crops : 16;
	m->max_tokens = token_count(m, m->max_crops, 1);
	limits->max_images = PHI3V_MAX_IMAGES;
	limits->max_tokens_per_image = m->max_tokens;
	limits->embed_dim = m->embed_dim;
	*state = m;
	return VD_OK;
fail:
	phi3v_destroy(m);
	return st;
}

/* ---------------------------------------------------------------- images */

/* out = in with rows and columns swapped (PIL Image.TRANSPOSE). */
static vd_status transpose_image(const vd_image *in, vd_image *out)
{
	out->width = in->height;
	out->height = in->width;
	out->data = malloc((size_t)in->width * (size_t)in->height * 3);
	if (!out->data)
		return H->errorf(VD_ERR_NOMEM, "out of memory");
	for (int y = 0; y < in->height; y++)
		for (int x = 0; x < in->width; x++)
			memcpy(out->data + ((size_t)x * out->width + y) * 3,
			       in->data + ((size_t)y * in->width + x) * 3, 3);
	return VD_OK;
}

/* Cubic convolution weights of torch's upsample_bicubic2d (A = -0.75) for
 * fraction t, in its float arithmetic. */
static void cubic_weights(float t, float w[4])
{
	const float A = -0.75f;
	float x;

	x = t + 1.0f;
	w[0] = ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
	x = t;
	w[1] = ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
	x = 1.0f - t;
	w[2] = ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
	x = 2.0f - t;
	w[3] = ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
}

/* Source taps (clamped to the border) and weights of output index i when
 * n_in samples are resized to n_out: align_corners False, no antialias. */
static void cubic_taps(int i, int n_in, int n_out, int idx[4], float w[4])
{
	float scale = (float)n_in / (float)n_out;
	float src = scale * ((float)i + 0.5f) - 0.5f;
	float f = floorf(src);
	float t = src - f;

	if (t < 0.0f)
		t = 0.0f;
	if (t > 1.0f)
		t = 1.0f;
	cubic_weights(t, w);
	for (int k = 0; k < 4; k++) {
		int j = (int)f - 1 + k;

		idx[k] = j < 0 ? 0 : j >= n_in ? n_in - 1 : j;
	}
}

/* F.interpolate(x, (S, S), mode="bicubic", align_corners=False) on float
 * planes: in (3, h, w) -> out (3, S, S). Rows are combined last, each as a
 * sum over its four column taps, in torch's order of accumulation. */
static void bicubic_planes(const float *in, int h, int w, int S, float *out)
{
	for (int c = 0; c < 3; c++) {
		const float *p = in + (size_t)c * h * w;

		for (int oy = 0; oy < S; oy++) {
			int iy[4];
			float wy[4];

			cubic_taps(oy, h, S, iy, wy);
			for (int ox = 0; ox < S; ox++) {
				int ix[4];
				float wx[4], acc = 0.0f;

				cubic_taps(ox, w, S, ix, wx);
				for (int a = 0; a < 4; a++) {
					const float *row = p + (size_t)iy[a] * w;
					float t = row[ix[0]] * wx[0];

					for (int b = 1; b < 4; b++)
						t += row[ix[b]] * wx[b];
					acc = a ? acc + t * wy[a] : t * wy[a];
				}
				out[((size_t)c * S + oy) * S + ox] = acc;
			}
		}
	}
}

/* The HD transform of models.md §2.2: returns the padded, normalized image
 * (3, H, W) with H and W multiples of S. *planes is malloc'ed. */
static vd_status hd_transform(const phi3v *m, const vd_image *img, int num_crops, float **planes,
			      int *H_out, int *W_out)
{
	static const uint8_t white[3] = { 255, 255, 255 };
	vd_image flipped = { 0 }, padded = { 0 }, back = { 0 };
	const vd_image *cur = img, *fin;
	bool transposed = img->width < img->height;
	int S = m->tile, w, h, scale, new_w, new_h, tar;
	double ratio;
	vd_status st;

	*planes = NULL;
	if (transposed) {
		st = transpose_image(img, &flipped);
		if (st != VD_OK)
			return st;
		cur = &flipped;
	}
	w = cur->width;
	h = cur->height;
	ratio = (double)w / (double)h;
	/* The largest scale with scale * ceil(scale / ratio) <= num_crops. */
	scale = 1;
	while (scale * ceil(scale / ratio) <= num_crops)
		scale++;
	scale--;
	new_w = scale * S;
	new_h = (int)((double)new_w / ratio);
	if (scale < 1 || new_h < 1) {
		st = H->errorf(VD_ERR_INVALID_ARG, "phi3v: a %dx%d image is too elongated for "
			       "num_crops %d", img->width, img->height, num_crops);
		goto out;
	}
	tar = (new_h + S - 1) / S * S;
	/* Resize and pad in one step (no resized copy). */
	st = H->image_resize_crop(cur, new_w, new_h, VD_RESAMPLE_BILINEAR, 0, -((tar - new_h) / 2),
				  new_w, tar, white, &padded);
	if (st != VD_OK)
		goto out;
	fin = &padded;
	if (transposed) {
		st = transpose_image(&padded, &back);
		if (st != VD_OK)
			goto out;
		fin = &back;
	}
	*planes = malloc((size_t)3 * fin->width * fin->height * sizeof(float));
	if (!*planes) {
		st = H->errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	H->image_to_planes(fin, 1.0f / 255.0f, m->mean, m->std, *planes);
	*H_out = fin->height;
	*W_out = fin->width;
out:
	H->image_free(&flipped);
	H->image_free(&padded);
	H->image_free(&back);
	return st;
}

/* pixels (1 + hc*wc, 3, S, S): the global image, then the tiles row-major.
 * meta: padded height, padded width, tiles. */
static vd_status phi3v_process_image(void *state, const vd_image *img, const vd_mm_kwargs *kw,
				     vd_mm_item *out)
{
	phi3v *m = state;
	int S = m->tile;
	int nc = kw && kw->num_crops > 0 ? kw->num_crops : m->num_crops;
	int Hp = 0, Wp = 0, hc, wc;
	float *hd = NULL, *px;
	size_t tile_sz = (size_t)S * S;
	int64_t shape[4];
	vd_status st;

	if (nc > m->max_crops)
		return H->errorf(VD_ERR_INVALID_ARG, "phi3v: num_crops %d exceeds this model's limit "
				 "of %d", nc, m->max_crops);
	st = hd_transform(m, img, nc, &hd, &Hp, &Wp);
	if (st != VD_OK)
		return st;
	hc = Hp / S;
	wc = Wp / S;
	memset(out, 0, sizeof(*out));
	out->struct_size = sizeof(*out);
	out->kind = VD_MM_PIXELS;
	out->pixels.dtype = VD_DTYPE_F32;
	out->pixels.device = VD_DEVICE_CPU;
	shape[0] = 1 + (int64_t)hc * wc;
	shape[1] = 3;
	shape[2] = S;
	shape[3] = S;
	vd_tensor_set_shape(&out->pixels, 4, shape);
	px = malloc((size_t)shape[0] * 3 * tile_sz * sizeof(float));
	if (!px) {
		free(hd);
		return H->errorf(VD_ERR_NOMEM, "out of memory");
	}
	out->pixels.data = px;
	bicubic_planes(hd, Hp, Wp, S, px);
	for (int r = 0; r < hc; r++)
		for (int c = 0; c < wc; c++) {
			float *dst = px + (size_t)(1 + r * wc + c) * 3 * tile_sz;

			for (int ch = 0; ch < 3; ch++)
				for (int y = 0; y < S; y++)
					memcpy(dst + (ch * tile_sz + (size_t)y * S),
					       hd + ((size_t)ch * Hp + (size_t)r * S + y) * Wp +
						       (size_t)c * S,
					       (size_t)S * sizeof(float));
		}
	free(hd);
	out->meta[0] = Hp;
	out->meta[1] = Wp;
	out->meta[2] = (int64_t)hc * wc;
	out->n_meta = 3;
	out->num_tokens = token_count(m, hc, wc);
	return VD_OK;
}

/* Precomputed embeddings are already projected (vLLM's image_embeds):
 * (num_tokens, hidden); with meta (padded h, w) their count is checked. */
static vd_status phi3v_check_embeds(void *state, vd_mm_item *item)
{
	phi3v *m = state;

	/* the core checked the width (ABI minor 3) */
	if (item->n_meta >= 2) {
		int32_t want = token_count(m, (int)(item->meta[0] / m->tile),
					   (int)(item->meta[1] / m->tile));

		if (item->meta[0] % m->tile || item->meta[1] % m->tile || item->meta[0] <= 0 ||
		    item->meta[1] <= 0 || item->embeds.shape[0] != want)
			return H->errorf(VD_ERR_INVALID_ARG, "image embeddings have %lld rows; an "
					 "image of padded size %lldx%lld needs %d",
					 (long long)item->embeds.shape[0], (long long)item->meta[0],
					 (long long)item->meta[1], want);
	}
	if (item->embeds.shape[0] < 1 || item->embeds.shape[0] > m->max_tokens)
		return H->errorf(VD_ERR_INVALID_ARG, "image embeddings have %lld rows (1..%d allowed)",
				 (long long)item->embeds.shape[0], m->max_tokens);
	item->num_tokens = (int32_t)item->embeds.shape[0];
	return VD_OK;
}

/* features: CLIP hidden states after the feature layer, (sum of (1 + tiles)
 * * (1 + G*G), C), each image's CLS row first, images in item order. */
static vd_status phi3v_vision_tower(void *state, const vd_mm_item *const *items, int n,
				    vd_tensor *features)
{
	phi3v *m = state;
	size_t per = (size_t)3 * m->tile * m->tile;
	int64_t total = 0;
	float *px;

	for (int i = 0; i < n; i++)
		total += items[i]->pixels.shape[0];
	px = vd_plugin_stage_floats(&m->px, m->be, (size_t)total * per);
	if (!px)
		return H->errorf(VD_ERR_NOMEM, "out of memory");
	for (int i = 0; i < n; i++) {
		if ((size_t)vd_tensor_numel(&items[i]->pixels) != (size_t)items[i]->pixels.shape[0] * per)
			return H->errorf(VD_ERR_INVALID_ARG, "image %d: pixel tensor of another size", i);
	}
	vd_plugin_gather_pixels(px, items, n);
	return H->clip_forward(m->clip, px, (int)total, features);
}

/* Row indices (into the CLIP rows with the 8 separator rows appended at
 * `sep`) of one image's tokens, 4 per token: each merged token stacks the
 * 2x2 patches r0c0, r0c1, r1c0, r1c1; a sub_GN token ends every row. */
static int32_t *push_grid(const phi3v *m, int32_t *o, int64_t base, int hc, int wc, int64_t sep)
{
	int G = m->grid, g = G / 2;
	int64_t per = 1 + (int64_t)G * G;

	for (int y = 0; y < hc * g; y++) {
		for (int x = 0; x < wc * g; x++) {
			int64_t img = base + (int64_t)(y / g) * wc + x / g;
			int py = 2 * (y % g), pxc = 2 * (x % g);

			for (int dy = 0; dy < 2; dy++)
				for (int dx = 0; dx < 2; dx++)
					*o++ = (int32_t)(img * per + 1 + (int64_t)(py + dy) * G + pxc + dx);
		}
		for (int k = 0; k < 4; k++)
			*o++ = (int32_t)(sep + k);
	}
	return o;
}

/* embeds = img_projection.2(GELU(img_projection.0(tokens))) where tokens
 * are, per image, [tile grid | glb_GN | global grid] (sub_glb order) built
 * by one gather over the CLIP rows and the separators. */
static vd_status phi3v_projector(void *state, const vd_mm_item *const *items, int n,
				 const vd_tensor *features, vd_tensor *embeds)
{
	phi3v *m = state;
	const vd_ops *o = m->be->ops;
	int C = m->vcfg.hidden_size;
	int64_t R = features->shape[0], T = 0, base = 0;
	int32_t *idx = NULL, *p;
	vd_tensor table = { 0 }, merged = { 0 }, mid = { 0 }, view;
	int64_t shape[2];
	vd_status st;

	for (int i = 0; i < n; i++)
		T += items[i]->num_tokens;
	idx = malloc((size_t)T * 4 * sizeof(*idx));
	if (!idx)
		return H->errorf(VD_ERR_NOMEM, "out of memory");
	p = idx;
	for (int i = 0; i < n; i++) {
		int hc = (int)(items[i]->meta[0] / m->tile), wc = (int)(items[i]->meta[1] / m->tile);
		int32_t *start = p;

		if (!m->glb_first)
			p = push_grid(m, p, base + 1, hc, wc, R);
		for (int k = 0; k < 4; k++)
			*p++ = (int32_t)(R + 4 + k);
		p = push_grid(m, p, base, 1, 1, R);
		if (m->glb_first)
			p = push_grid(m, p, base + 1, hc, wc, R);
		if ((p - start) / 4 != items[i]->num_tokens) {
			st = H->errorf(VD_ERR_INTERNAL, "phi3v: image %d laid out as %lld tokens, "
				       "expected %d", i, (long long)((p - start) / 4),
				       items[i]->num_tokens);
			goto out;
		}
		base += 1 + (int64_t)hc * wc;
	}
	if (base * (1 + (int64_t)m->grid * m->grid) != R) {
		st = H->errorf(VD_ERR_INTERNAL, "phi3v: %lld CLIP rows for %lld images", (long long)R,
			       (long long)base);
		goto out;
	}

	shape[0] = R + 8;
	shape[1] = C;
	st = o->alloc(m->be, &table, features->dtype, 2, shape);
	if (st != VD_OK)
		goto out;
	view = vd_tensor_rows(&table, 0, R);
	st = o->copy(m->be, features, &view);
	if (st == VD_OK) {
		view = vd_tensor_rows(&table, R, 8);
		st = o->copy(m->be, &m->gn, &view);
	}
	shape[0] = T * 4;
	if (st == VD_OK)
		st = o->alloc(m->be, &merged, features->dtype, 2, shape);
	if (st == VD_OK)
		st = o->gather_rows(m->be, &table, idx, T * 4, &merged);
	if (st != VD_OK)
		goto out;
	/* (4T, C) packed is (T, 4C): the four patches side by side. */
	shape[0] = T;
	shape[1] = 4 * (int64_t)C;
	vd_tensor_set_shape(&merged, 2, shape);
	shape[1] = m->w0.shape[0];
	st = o->alloc(m->be, &mid, m->be->dtype, 2, shape);
	if (st == VD_OK)
		st = o->linear(m->be, &merged, &m->w0, &m->b0, &mid);
	if (st == VD_OK)
		st = o->act(m->be, VD_ACT_GELU, &mid, &mid);
	shape[1] = m->w2.shape[0];
	if (st == VD_OK)
		st = o->alloc(m->be, embeds, m->be->dtype, 2, shape);
	if (st == VD_OK) {
		st = o->linear(m->be, &mid, &m->w2, &m->b2, embeds);
		if (st != VD_OK)
			o->free(m->be, embeds);
	}
out:
	o->free(m->be, &mid);
	o->free(m->be, &merged);
	o->free(m->be, &table);
	free(idx);
	return st;
}

/* ---------------------------------------------------------------- prompts */

static vd_status phi3v_placeholder(void *state, int image_index, char *buf, size_t cap)
{
	int n;

	(void)state;
	n = snprintf(buf, cap, "<|image_%d|>", image_index);
	if (n < 0 || (size_t)n >= cap)
		return H->errorf(VD_ERR_INVALID_ARG, "placeholder buffer too small");
	return VD_OK;
}

/* Length of an <|image_N|> tag at s (0 if none); its N in *num. */
static size_t match_tag(const char *s, long *num)
{
	const char *p;
	long v = 0;

	if (strncmp(s, "<|image_", 8))
		return 0;
	p = s + 8;
	if (*p < '0' || *p > '9')
		return 0;
	while (*p >= '0' && *p <= '9') {
		if (v < 1000000)
			v = v * 10 + (*p - '0');
		p++;
	}
	if (p[0] != '|' || p[1] != '>')
		return 0;
	*num = v;
	return (size_t)(p + 2 - s);
}

/* The HF processor's rules: tag numbers form 1..n and n is the number of
 * images. Images are placed in prompt order, each once, so the k-th tag
 * must be <|image_k|>. */
static vd_status check_tags(const char *text, int n_items)
{
	int count = 0;

	for (const char *s = text; *s; s++) {
		long num;
		size_t len = match_tag(s, &num);

		if (!len)
			continue;
		count++;
		if (num != count)
			return H->errorf(VD_ERR_INVALID_ARG,
					 "image tag %d of the prompt is <|image_%ld|>: tags must be "
					 "<|image_1|>, <|image_2|>, ... in order, each image once",
					 count, num);
		s += len - 1;
	}
	if (count != n_items)
		return H->errorf(VD_ERR_INVALID_ARG,
				 "the prompt has %d <|image_N|> tag(s) but %d image(s) were given",
				 count, n_items);
	return VD_OK;
}

/* Text: split on <|image_N|>, tokenize every chunk on its own (a BOS each,
 * as Phi3VProcessor does) and put each image's rows of the placeholder
 * token where its tag was. */
static vd_status expand_text(phi3v *m, const vd_prompt_in *in, bool special, vd_expansion *out)
{
	const char *s = in->text, *chunk = in->text;
	int img = 0;
	vd_status st;

	st = check_tags(in->text, in->n_items);
	if (st != VD_OK)
		return st;
	for (;; s++) {
		long num = 0;
		size_t len = *s ? match_tag(s, &num) : 0;
		int32_t *ids = NULL;
		size_t n = 0;

		if (*s && !len)
			continue;
		st = H->tokenize(m->tok, chunk, (size_t)(s - chunk), special, &ids, &n);
		if (st == VD_OK)
			st = H->exp_push(out, ids, (int64_t)n);
		free(ids);
		if (st != VD_OK || !*s)
			return st;
		st = H->exp_push_image(out, img, m->image_token, in->items[img]->num_tokens);
		if (st != VD_OK)
			return st;
		img++;
		s += len - 1;
		chunk = s + 1;
	}
}

/* Token ids: each run of the placeholder token holds the next images, one
 * after another with exactly their row counts; a run of one token stands
 * for one whole image. */
static vd_status expand_ids(phi3v *m, const vd_prompt_in *in, vd_expansion *out)
{
	int32_t tok = m->image_token;
	int64_t i = 0, n = in->n_ids, start = 0;
	int img = 0;
	vd_status st = VD_OK;

	while (i < n && st == VD_OK) {
		int64_t run = 0, left;

		if (in->ids[i] != tok) {
			i++;
			continue;
		}
		while (i + run < n && in->ids[i + run] == tok)
			run++;
		st = H->exp_push(out, in->ids + start, i - start);
		for (left = run; st == VD_OK && left > 0; img++) {
			int32_t k = img < in->n_items ? in->items[img]->num_tokens : 0;

			if (!k || (run > 1 && left < k))
				return H->errorf(VD_ERR_INVALID_ARG,
						 "prompt_token_ids: a run of %lld image token(s) %d does "
						 "not match the %d image(s) given and their token counts",
						 (long long)run, tok, in->n_items);
			st = H->exp_push_image(out, img, tok, k);
			left = run == 1 ? 0 : left - k;
		}
		i += run;
		start = i;
	}
	if (st == VD_OK)
		st = H->exp_push(out, in->ids + start, n - start);
	if (st == VD_OK && img != in->n_items)
		return H->errorf(VD_ERR_INVALID_ARG, "prompt_token_ids hold %d image(s) of token %d "
				 "but %d image(s) were given", img, tok, in->n_items);
	return st;
}

static vd_status phi3v_expand(void *state, const vd_prompt_in *in, vd_expansion *out)
{
	phi3v *m = state;
	/* The HF processor tokenizes every text chunk with BOS whatever the
	 * caller asked, and the Phi-3.5-V chat template writes none, so chat
	 * prompts get their BOS here too (in->add_special_tokens is ignored). */
	bool special = true;

	if (in->text)
		return expand_text(m, in, special, out);
	return expand_ids(m, in, out);
}

/* ---------------------------------------------------------------- plugin */

static const char *const phi3v_archs[] = { "Phi3VForCausalLM", NULL };

VD_PLUGIN_ONE_FAMILY(phi3v, "phi3v", phi3v_archs, 3, sizeof(vd_host_api), H)
