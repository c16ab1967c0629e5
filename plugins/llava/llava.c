/* llava.so: the LLaVA-1.5 family (LlavaForConditionalGeneration).
 * CLIP vision tower (feature layer and select strategy from config.json),
 * a two-layer MLP projector, and `<image>` placeholder expansion to the
 * tower's patch count. Reads weights in the llava-hf hub layout and in the
 * transformers >= 4.52 layout. Talks to the core only through vd_host_api. */
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vllmd/plugin.h"
#include "vllmd/plugin_util.h"

static const vd_host_api *H;

typedef struct llava {
	vd_backend *be;
	const vd_tokenizer *tok;
	vd_clip *clip;
	vd_clip_config vcfg;
	int32_t image_token;
	bool select_full;     /* vision_feature_select_strategy "full" keeps CLS */
	int tokens_per_image;
	int embed_dim;
	/* preprocessor */
	int shortest_edge;    /* resize target of the short side */
	int crop_w, crop_h;
	bool do_center_crop;
	vd_plugin_image_norm norm;  /* resize, resample, rescale, normalize */
	/* projector */
	vd_tensor w1, b1, w2, b2;
	vd_act proj_act;
	vd_plugin_stage px; /* pixels of a vision batch */
} llava;

/* ---------------------------------------------------------------- helpers */

static vd_status upload_weight(llava *m, const vd_weights *w, const char *name, vd_tensor *out)
{
	return vd_plugin_upload_weight(H, m->be, w, name, out);
}

static vd_status parse_act(const char *name, vd_act *out)
{
	if (!strcmp(name, "gelu"))
		*out = VD_ACT_GELU;
	else if (!strcmp(name, "gelu_pytorch_tanh") || !strcmp(name, "gelu_new"))
		*out = VD_ACT_GELU_TANH;
	else if (!strcmp(name, "quick_gelu"))
		*out = VD_ACT_QUICK_GELU;
	else if (!strcmp(name, "silu"))
		*out = VD_ACT_SILU;
	else
		return H->errorf(VD_ERR_UNSUPPORTED, "llava: projector_hidden_act '%s' is not supported",
				 name);
	return VD_OK;
}

/* size / crop_size in preprocessor_config.json: an int, or a dict with
 * shortest_edge or height/width. */
static vd_status read_size(const vd_json *pp, const char *key, int def, int *edge, int *h, int *w)
{
	const vd_json *n = H->json_get(pp, key);
	int64_t v;
	vd_status st;

	*edge = *h = *w = def;
	if (!n)
		return VD_OK;
	if (H->json_len(n) == 0 && H->json_number_value(n, -1) >= 0) {
		*edge = *h = *w = (int)H->json_number_value(n, def);
		return VD_OK;
	}
	st = H->json_int(n, "shortest_edge", -1, &v);
	if (st != VD_OK)
		return st;
	if (v > 0)
		*edge = *h = *w = (int)v;
	st = H->json_int(n, "height", *h, &v);
	if (st != VD_OK)
		return st;
	*h = (int)v;
	st = H->json_int(n, "width", *w, &v);
	if (st != VD_OK)
		return st;
	*w = (int)v;
	return VD_OK;
}

static vd_status read_preprocessor(llava *m, const vd_json *pp)
{
	int dummy_h, dummy_w;
	vd_status st;

	/* CLIPImageProcessor class defaults, then the file's values. */
	st = read_size(pp, "size", 224, &m->shortest_edge, &dummy_h, &dummy_w);
	if (st == VD_OK)
		st = read_size(pp, "crop_size", 224, &dummy_h, &m->crop_h, &m->crop_w);
	if (st == VD_OK)
		st = H->json_bool(pp, "do_center_crop", true, &m->do_center_crop);
	if (st == VD_OK)
		st = vd_plugin_read_image_norm(H, pp, &m->norm);
	return st;
}

/* ---------------------------------------------------------------- create */

/* Weight layouts: the llava-hf hub names, transformers 4.52-4.57 names, or
 * transformers 5 names (vision tower without the vision_model level). */
static const char *const lm_prefixes[] = { "language_model.model.", "model.language_model.", NULL };
static const char *const proj_prefixes[] = { "multi_modal_projector.",
					     "model.multi_modal_projector." };
static const char *const lm_heads[] = { "language_model.lm_head.weight", "lm_head.weight" };
static const char *const vision_prefixes[] = {
	"vision_tower.vision_model.",       /* llava-hf hub */
	"model.vision_tower.vision_model.", /* transformers 4.52 - 4.57 */
	"model.vision_tower.",              /* transformers 5 */
	NULL,
};

static void llava_destroy(void *state)
{
	llava *m = state;

	if (!m)
		return;
	H->clip_destroy(m->clip);
	vd_plugin_free_tensors(m->be, (vd_tensor *const[]){ &m->w1, &m->b1, &m->w2, &m->b2 }, 4);
	vd_plugin_stage_free(&m->px, m->be);
	free(m);
}

static vd_status llava_create(const vd_host_api *host, const vd_model_ctx *ctx, void **state,
			      vd_decoder_spec *spec, vd_mm_limits *limits)
{
	const vd_json *cfg = ctx->config;
	const vd_json *tcfg = host->json_get(cfg, "text_config");
	const vd_json *vcfg = host->json_get(cfg, "vision_config");
	const char *text_type, *strategy, *act, *proj_prefix;
	char name[256];
	int64_t image_token, feature_layer;
	bool proj_bias;
	int run_layers, patches, layout = 0, vis = 0;
	llava *m;
	vd_status st;

	*state = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return host->errorf(VD_ERR_NOMEM, "out of memory");
	m->be = ctx->backend;
	m->tok = ctx->tokenizer;

	if (host->json_len(host->json_get(cfg, "vision_feature_layer")) > 0) {
		st = host->errorf(VD_ERR_UNSUPPORTED,
				  "llava: a list of vision_feature_layer values is not supported");
		goto fail;
	}
	st = host->json_int(cfg, "image_token_index", 32000, &image_token);
	if (st == VD_OK && !host->json_get(cfg, "image_token_index"))
		st = host->json_int(cfg, "image_token_id", 32000, &image_token);
	if (st == VD_OK)
		st = host->json_int(cfg, "vision_feature_layer", -2, &feature_layer);
	if (st == VD_OK)
		st = host->json_str(cfg, "vision_feature_select_strategy", "default", &strategy);
	if (st == VD_OK)
		st = host->json_str(cfg, "projector_hidden_act", "gelu", &act);
	if (st == VD_OK)
		st = host->json_bool(cfg, "multimodal_projector_bias", true, &proj_bias);
	if (st == VD_OK)
		st = host->json_str(tcfg, "model_type", "llama", &text_type);
	if (st == VD_OK)
		st = parse_act(act, &m->proj_act);
	if (st != VD_OK)
		goto fail;
	if (strcmp(strategy, "default") && strcmp(strategy, "full")) {
		st = host->errorf(VD_ERR_UNSUPPORTED,
				  "llava: vision_feature_select_strategy '%s' (want default or full)",
				  strategy);
		goto fail;
	}
	m->select_full = !strcmp(strategy, "full");
	m->image_token = (int32_t)image_token;

	st = vd_plugin_probe_layout(host, ctx, "llava", lm_prefixes, "embed_tokens.weight", &layout);
	if (st == VD_OK)
		st = vd_plugin_probe_layout(host, ctx, "llava", vision_prefixes,
					    "embeddings.patch_embedding.weight", &vis);
	if (st != VD_OK)
		goto fail;
	proj_prefix = proj_prefixes[layout];

	/* Text decoder: text_config with the Llama defaults; a top-level
	 * vocab_size (llava-hf sets 32064) overrides text_config's. */
	st = host->decoder_spec_from_hf(tcfg, text_type, spec);
	if (st == VD_OK)
		st = vd_plugin_lm_head(host, ctx, tcfg, lm_heads[layout], spec);
	if (st == VD_OK)
		st = vd_plugin_vocab_size(host, cfg, spec);
	if (st != VD_OK)
		goto fail;
	snprintf(spec->prefix, sizeof(spec->prefix), "%s", lm_prefixes[layout]);

	/* Vision tower: run up to the feature layer; post_layernorm unused. */
	st = host->clip_config_from_hf(vcfg, &m->vcfg);
	if (st != VD_OK)
		goto fail;
	run_layers = feature_layer < 0 ? m->vcfg.num_layers + 1 + (int)feature_layer
				       : (int)feature_layer;
	if (run_layers < 0 || run_layers > m->vcfg.num_layers) {
		st = host->errorf(VD_ERR_FORMAT, "llava: vision_feature_layer %lld out of range for "
				  "%d CLIP layers", (long long)feature_layer, m->vcfg.num_layers);
		goto fail;
	}
	st = host->clip_create(m->be, ctx->weights, vision_prefixes[vis], &m->vcfg, run_layers,
			       &m->clip);
	if (st != VD_OK)
		goto fail;
	patches = (m->vcfg.image_size / m->vcfg.patch_size) * (m->vcfg.image_size / m->vcfg.patch_size);
	m->tokens_per_image = patches + (m->select_full ? 1 : 0);

	/* Projector. */
	snprintf(name, sizeof(name), "%slinear_1.weight", proj_prefix);
	st = upload_weight(m, ctx->weights, name, &m->w1);
	if (st == VD_OK) {
		snprintf(name, sizeof(name), "%slinear_2.weight", proj_prefix);
		st = upload_weight(m, ctx->weights, name, &m->w2);
	}
	if (st == VD_OK && proj_bias) {
		snprintf(name, sizeof(name), "%slinear_1.bias", proj_prefix);
		st = upload_weight(m, ctx->weights, name, &m->b1);
		if (st == VD_OK) {
			snprintf(name, sizeof(name), "%slinear_2.bias", proj_prefix);
			st = upload_weight(m, ctx->weights, name, &m->b2);
		}
	}
	if (st != VD_OK)
		goto fail;
	if (m->w1.shape[1] != m->vcfg.hidden_size || m->w2.shape[0] != spec->hidden_size) {
		st = host->errorf(VD_ERR_FORMAT,
				  "llava: projector maps %lld -> %lld but the towers are %d -> %d",
				  (long long)m->w1.shape[1], (long long)m->w2.shape[0],
				  m->vcfg.hidden_size, spec->hidden_size);
		goto fail;
	}
	m->embed_dim = spec->hidden_size;

	st = read_preprocessor(m, ctx->preprocessor);
	if (st != VD_OK)
		goto fail;
	if (m->crop_h != m->vcfg.image_size || m->crop_w != m->vcfg.image_size) {
		st = host->errorf(VD_ERR_FORMAT,
				  "llava: preprocessor crop %dx%d does not match the vision tower's "
				  "image_size %d", m->crop_w, m->crop_h, m->vcfg.image_size);
		goto fail;
	}

	limits->max_images = 64;
	limits->max_tokens_per_image = m->tokens_per_image;
	limits->embed_dim = m->embed_dim;
	*state = m;
	return VD_OK;
fail:
	llava_destroy(m);
	return st;
}

/* ---------------------------------------------------------------- images */

/* CLIPImageProcessor: resize the shortest edge (long side truncated as
 * transformers' get_resize_output_image_size), center crop, rescale,
 * normalize. The resize and the crop are one step that computes only the
 * crop's pixels (equal to resizing all, then cropping), so a 1000000x1 image,
 * whose resized size is 336000000x336, costs what a 336x336 one does. */
static vd_status llava_process_image(void *state, const vd_image *img, const vd_mm_kwargs *kw,
				     vd_mm_item *out)
{
	llava *m = state;
	vd_image cropped = { 0 };
	static const uint8_t black[3] = { 0, 0, 0 };
	int64_t shape[3] = { 3, m->crop_h, m->crop_w };
	int w = img->width, h = img->height, nw = w, nh = h;
	vd_status st = VD_OK;

	(void)kw;
	if (m->norm.do_resize) {
		int s = m->shortest_edge;
		double long_side = w <= h ? (double)s * h / w : (double)s * w / h;

		if (long_side >= (double)INT_MAX + 1.0)
			return H->errorf(VD_ERR_INVALID_ARG,
					 "llava: a %dx%d image is too elongated: resizing its short "
					 "side to %d makes the long side %.0f pixels (at most %d)",
					 w, h, s, long_side, INT_MAX);
		if (w <= h) {
			nw = s;
			nh = (int)long_side;
		} else {
			nh = s;
			nw = (int)long_side;
		}
	}
	if (m->do_center_crop) {
		int top = (int)((nh - m->crop_h) / 2.0);
		int left = (int)((nw - m->crop_w) / 2.0);

		st = H->image_resize_crop(img, nw, nh, m->norm.resample, left, top, m->crop_w,
					  m->crop_h, black, &cropped);
	} else if (nw != m->crop_w || nh != m->crop_h) {
		st = H->errorf(VD_ERR_INVALID_ARG, "llava: processed image is %dx%d, the tower "
			       "needs %dx%d", nw, nh, m->crop_w, m->crop_h);
	} else {
		st = H->image_resize(img, nw, nh, m->norm.resample, &cropped);
	}
	if (st != VD_OK)
		return st;
	memset(out, 0, sizeof(*out));
	out->struct_size = sizeof(*out);
	out->kind = VD_MM_PIXELS;
	out->pixels.dtype = VD_DTYPE_F32;
	out->pixels.device = VD_DEVICE_CPU;
	vd_tensor_set_shape(&out->pixels, 3, shape);
	out->pixels.data = malloc((size_t)(3 * m->crop_h * m->crop_w) * sizeof(float));
	if (!out->pixels.data) {
		st = H->errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	H->image_to_planes(&cropped, m->norm.rescale, m->norm.mean, m->norm.std, out->pixels.data);
	out->num_tokens = m->tokens_per_image;
out:
	H->image_free(&cropped);
	return st;
}

static vd_status llava_check_embeds(void *state, vd_mm_item *item)
{
	llava *m = state;

	/* the core checked the width (ABI minor 3) */
	if (item->embeds.shape[0] != m->tokens_per_image)
		return H->errorf(VD_ERR_INVALID_ARG,
				 "image embeddings have %lld rows; this model uses %d per image",
				 (long long)item->embeds.shape[0], m->tokens_per_image);
	item->num_tokens = m->tokens_per_image;
	return VD_OK;
}

/* features (n * tokens_per_image, vision hidden). */
static vd_status llava_vision_tower(void *state, const vd_mm_item *const *items, int n,
				    vd_tensor *features)
{
	llava *m = state;
	int S = m->vcfg.image_size;
	int P = (S / m->vcfg.patch_size) * (S / m->vcfg.patch_size);
	size_t per = (size_t)3 * S * S;
	float *px = vd_plugin_stage_floats(&m->px, m->be, per * (size_t)n);
	int32_t *rows = NULL;
	vd_tensor hidden = { 0 };
	int64_t shape[2];
	vd_status st;

	if (!px)
		return H->errorf(VD_ERR_NOMEM, "out of memory");
	for (int i = 0; i < n; i++)
		if ((size_t)vd_tensor_numel(&items[i]->pixels) != per)
			return H->errorf(VD_ERR_INVALID_ARG, "image %d: %lld pixel values, want %zu", i,
					 (long long)vd_tensor_numel(&items[i]->pixels), per);
	vd_plugin_gather_pixels(px, items, n);
	st = H->clip_forward(m->clip, px, n, &hidden);
	if (st != VD_OK)
		return st;
	if (m->select_full) {
		*features = hidden;
		return VD_OK;
	}
	/* "default" strategy: drop each image's CLS row. */
	rows = malloc((size_t)n * (size_t)P * sizeof(*rows));
	if (!rows) {
		st = H->errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++)
		for (int j = 0; j < P; j++)
			rows[i * P + j] = i * (P + 1) + 1 + j;
	shape[0] = (int64_t)n * P;
	shape[1] = m->vcfg.hidden_size;
	st = m->be->ops->alloc(m->be, features, hidden.dtype, 2, shape);
	if (st == VD_OK)
		st = m->be->ops->gather_rows(m->be, &hidden, rows, shape[0], features);
	if (st != VD_OK)
		m->be->ops->free(m->be, features);
out:
	free(rows);
	m->be->ops->free(m->be, &hidden);
	return st;
}

/* embeds = linear_2(act(linear_1(features))). */
static vd_status llava_projector(void *state, const vd_mm_item *const *items, int n,
				 const vd_tensor *features, vd_tensor *embeds)
{
	llava *m = state;
	const vd_ops *o = m->be->ops;
	vd_tensor mid = { 0 };
	int64_t rows = features->shape[0];
	int64_t s1[2] = { rows, m->w1.shape[0] };
	int64_t s2[2] = { rows, m->w2.shape[0] };
	vd_status st;

	(void)items;
	(void)n;
	st = o->alloc(m->be, &mid, m->be->dtype, 2, s1);
	if (st != VD_OK)
		return st;
	st = o->linear(m->be, features, &m->w1, m->b1.data ? &m->b1 : NULL, &mid);
	if (st == VD_OK)
		st = o->act(m->be, m->proj_act, &mid, &mid);
	if (st == VD_OK)
		st = o->alloc(m->be, embeds, m->be->dtype, 2, s2);
	if (st == VD_OK) {
		st = o->linear(m->be, &mid, &m->w2, m->b2.data ? &m->b2 : NULL, embeds);
		if (st != VD_OK)
			o->free(m->be, embeds);
	}
	o->free(m->be, &mid);
	return st;
}

/* ---------------------------------------------------------------- prompts */

static vd_status llava_placeholder(void *state, int image_index, char *buf, size_t cap)
{
	(void)state;
	(void)image_index;
	return vd_plugin_placeholder_text(H, "<image>", buf, cap);
}

/* Each `<image>` token of the prompt becomes num_tokens copies of itself,
 * one run per image in order, as LlavaProcessor does. */
static vd_status llava_expand(void *state, const vd_prompt_in *in, vd_expansion *out)
{
	llava *m = state;
	int32_t *owned;
	const int32_t *ids;
	size_t n, run = 0;
	int img = 0;
	vd_status st = vd_plugin_prompt_ids(H, m->tok, in, m->image_token, "<image>", &ids, &n,
					    &owned);

	if (st != VD_OK)
		return st;
	for (size_t i = 0; i <= n && st == VD_OK; i++) {
		if (i < n && ids[i] != m->image_token)
			continue;
		st = H->exp_push(out, ids + run, (int64_t)(i - run));
		if (st == VD_OK && i < n) {
			st = H->exp_push_image(out, img, m->image_token, in->items[img]->num_tokens);
			img++;
		}
		run = i + 1;
	}
	free(owned);
	return st;
}

/* ---------------------------------------------------------------- plugin */

static const char *const llava_archs[] = { "LlavaForConditionalGeneration", NULL };

VD_PLUGIN_ONE_FAMILY(llava, "llava", llava_archs, 3, sizeof(vd_host_api), H)
