/* qwen2vl.so: the Qwen2-VL family (Qwen2VLForConditionalGeneration).
 * Qwen2VLImageProcessor (smart_resize, bicubic, patchify in merge-block
 * order), the Qwen2-VL ViT and PatchMerger from models/, `<|image_pad|>`
 * expansion to t*h*w/4 rows and the 3-D M-RoPE positions of get_rope_index.
 * Reads the hub layout (model.*, visual.*) and the transformers >= 4.52 one
 * (model.language_model.*, model.visual.*). Talks to the core only through
 * vd_host_api. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vllmd/plugin.h"
#include "vllmd/plugin_util.h"

static const vd_host_api *H;

#define MAX_ASPECT 200.0
/* Most vision tokens (merged patches) one image may become, unless the
 * model's own max_pixels allows more: bounds what per-request min_pixels and
 * max_pixels can make preprocessing allocate (16384 is the most Qwen2-VL's
 * model card shows). */
#define MAX_IMAGE_TOKENS 16384

typedef struct qwen2vl {
	vd_backend *be;
	const vd_tokenizer *tok;
	vd_qwen2_vit *vit;
	vd_qwen2_vit_config vcfg;
	int32_t image_token;
	int embed_dim;
	/* preprocessor */
	int64_t min_pixels, max_pixels;
	int patch, merge, temporal;
	vd_plugin_image_norm norm;  /* resize, resample, rescale, normalize */
	vd_plugin_stage px; /* pixels of a vision batch */
} qwen2vl;

/* ---------------------------------------------------------------- config */

/* Qwen2VLImageProcessor defaults, then size {shortest_edge, longest_edge},
 * then min_pixels / max_pixels, which win as in transformers. */
static vd_status read_preprocessor(qwen2vl *m, const vd_json *pp)
{
	const vd_json *size = H->json_get(pp, "size");
	int64_t patch, merge, temporal;
	vd_status st;

	m->min_pixels = 56 * 56;
	m->max_pixels = 28 * 28 * 1280;
	st = H->json_int(size, "shortest_edge", m->min_pixels, &m->min_pixels);
	if (st == VD_OK)
		st = H->json_int(size, "longest_edge", m->max_pixels, &m->max_pixels);
	if (st == VD_OK)
		st = H->json_int(pp, "min_pixels", m->min_pixels, &m->min_pixels);
	if (st == VD_OK)
		st = H->json_int(pp, "max_pixels", m->max_pixels, &m->max_pixels);
	if (st == VD_OK)
		st = H->json_int(pp, "patch_size", 14, &patch);
	if (st == VD_OK)
		st = H->json_int(pp, "merge_size", 2, &merge);
	if (st == VD_OK)
		st = H->json_int(pp, "temporal_patch_size", 2, &temporal);
	if (st == VD_OK)
		st = vd_plugin_read_image_norm(H, pp, &m->norm);
	if (st != VD_OK)
		return st;
	if (patch != m->vcfg.patch_size || merge != m->vcfg.spatial_merge_size ||
	    temporal != m->vcfg.temporal_patch_size)
		return H->errorf(VD_ERR_FORMAT,
				 "qwen2vl: preprocessor patch/merge/temporal sizes %lld/%lld/%lld do not "
				 "match the vision config's %d/%d/%d", (long long)patch,
				 (long long)merge, (long long)temporal, m->vcfg.patch_size,
				 m->vcfg.spatial_merge_size, m->vcfg.temporal_patch_size);
	if (m->min_pixels <= 0 || m->max_pixels < m->min_pixels)
		return H->errorf(VD_ERR_FORMAT, "qwen2vl: min_pixels %lld / max_pixels %lld are invalid",
				 (long long)m->min_pixels, (long long)m->max_pixels);
	m->patch = (int)patch;
	m->merge = (int)merge;
	m->temporal = (int)temporal;
	return VD_OK;
}

/* transformers' smart_resize: both sides multiples of factor, area within
 * [min_pixels, max_pixels]. Python's round() rounds half to even, which is
 * nearbyint() in the default rounding mode. */
static vd_status smart_resize(int height, int width, int factor, int64_t min_pixels,
			      int64_t max_pixels, int *out_h, int *out_w)
{
	double h = height, w = width, f = factor;
	double hb, wb;

	if (height <= 0 || width <= 0)
		return H->errorf(VD_ERR_INVALID_ARG, "qwen2vl: image of %dx%d pixels", width, height);
	if ((h > w ? h / w : w / h) > MAX_ASPECT)
		return H->errorf(VD_ERR_INVALID_ARG,
				 "absolute aspect ratio must be smaller than %d, got %g", (int)MAX_ASPECT,
				 h > w ? h / w : w / h);
	hb = nearbyint(h / f) * f;
	wb = nearbyint(w / f) * f;
	if (hb * wb > (double)max_pixels) {
		double beta = sqrt(h * w / (double)max_pixels);

		hb = fmax(f, floor(h / beta / f) * f);
		wb = fmax(f, floor(w / beta / f) * f);
	} else if (hb * wb < (double)min_pixels) {
		double beta = sqrt((double)min_pixels / (h * w));

		hb = ceil(h * beta / f) * f;
		wb = ceil(w * beta / f) * f;
	}
	if (hb > 1 << 20 || wb > 1 << 20)
		return H->errorf(VD_ERR_LIMIT, "qwen2vl: resized image %gx%g is too large", wb, hb);
	*out_h = (int)hb;
	*out_w = (int)wb;
	return VD_OK;
}

/* Worst-case tokens per image under max_pixels: the area stays within
 * max_pixels except when a side is clamped up to one factor, where the other
 * side is at most sqrt(max_pixels * MAX_ASPECT). */
static int32_t worst_tokens(const qwen2vl *m)
{
	double f = m->patch * m->merge;
	double clamped = f * floor(sqrt((double)m->max_pixels * MAX_ASPECT) / f) * f;
	double area = fmax((double)m->max_pixels, clamped);

	return (int32_t)(area / (f * f));
}

/* ---------------------------------------------------------------- create */

static void qwen2vl_destroy(void *state)
{
	qwen2vl *m = state;

	if (!m)
		return;
	H->qwen2_vit_destroy(m->vit);
	vd_plugin_stage_free(&m->px, m->be);
	free(m);
}

/* Weight layouts: the hub's (model.*, visual.*) and transformers >= 4.52's
 * (model.language_model.*, model.visual.*). */
static const char *const lm_prefixes[] = { "model.", "model.language_model.", NULL };
static const char *const vis_prefixes[] = { "visual.", "model.visual." };

static vd_status qwen2vl_create(const vd_host_api *host, const vd_model_ctx *ctx, void **state,
				vd_decoder_spec *spec, vd_mm_limits *limits)
{
	const vd_json *cfg = ctx->config;
	const vd_json *tcfg = host->json_get(cfg, "text_config");
	const vd_json *vcfg = host->json_get(cfg, "vision_config");
	int64_t image_token;
	int layout = 0;
	qwen2vl *m;
	vd_status st;

	*state = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return host->errorf(VD_ERR_NOMEM, "out of memory");
	m->be = ctx->backend;
	m->tok = ctx->tokenizer;
	/* hub configs keep the text fields flat; transformers 5 nests them */
	if (!tcfg)
		tcfg = cfg;

	st = host->json_int(cfg, "image_token_id", 151655, &image_token);
	if (st == VD_OK)
		st = vd_plugin_probe_layout(host, ctx, "qwen2vl", lm_prefixes, "embed_tokens.weight",
					    &layout);
	if (st != VD_OK)
		goto fail;
	m->image_token = (int32_t)image_token;

	/* Text decoder with Qwen2-VL's text-config class defaults; the rope
	 * parser turns rope_scaling / rope_parameters mrope_section into M-RoPE. */
	st = host->decoder_spec_from_hf(tcfg, "qwen2_vl", spec);
	if (st != VD_OK)
		goto fail;
	if (spec->rope_type != VD_ROPE_MROPE) {
		st = host->errorf(VD_ERR_FORMAT, "qwen2vl: config has no rope mrope_section");
		goto fail;
	}
	spec->qkv_bias = true;
	snprintf(spec->prefix, sizeof(spec->prefix), "%s", lm_prefixes[layout]);
	st = vd_plugin_lm_head(host, ctx, tcfg, "lm_head.weight", spec);
	if (st == VD_OK)
		st = vd_plugin_vocab_size(host, cfg, spec);
	if (st != VD_OK)
		goto fail;
	m->embed_dim = spec->hidden_size;

	st = host->qwen2_vit_config_from_hf(vcfg, &m->vcfg);
	if (st != VD_OK)
		goto fail;
	if (m->vcfg.hidden_size != spec->hidden_size) {
		st = host->errorf(VD_ERR_FORMAT,
				  "qwen2vl: vision_config.hidden_size %d differs from the LLM's %d",
				  m->vcfg.hidden_size, spec->hidden_size);
		goto fail;
	}
	st = host->qwen2_vit_create(m->be, ctx->weights, vis_prefixes[layout], &m->vcfg, &m->vit);
	if (st != VD_OK)
		goto fail;
	st = read_preprocessor(m, ctx->preprocessor);
	if (st != VD_OK)
		goto fail;

	limits->max_images = 16;
	limits->max_tokens_per_image = worst_tokens(m);
	limits->embed_dim = m->embed_dim;
	*state = m;
	return VD_OK;
fail:
	qwen2vl_destroy(m);
	return st;
}

/* ---------------------------------------------------------------- images */

/* Planes (3, H, W) -> (gh * gw, C * T * p * p) patches: merge blocks in
 * raster order, their merge^2 patches in raster order, each patch laid out
 * [c][t][y][x] with the one frame copied into all T temporal slots. */
static void patchify(const qwen2vl *m, const float *planes, int H_, int W_, float *out)
{
	int p = m->patch, mg = m->merge, T = m->temporal;
	int gh = H_ / p, gw = W_ / p;
	size_t pp = (size_t)p * p;
	float *dst = out;

	for (int bh = 0; bh < gh / mg; bh++)
		for (int bw = 0; bw < gw / mg; bw++)
			for (int dy = 0; dy < mg; dy++)
				for (int dx = 0; dx < mg; dx++) {
					int y0 = (bh * mg + dy) * p, x0 = (bw * mg + dx) * p;

					for (int c = 0; c < 3; c++) {
						const float *src = planes + (size_t)c * H_ * W_;

						for (int t = 0; t < T; t++)
							for (int y = 0; y < p; y++)
								memcpy(dst + (size_t)t * pp + (size_t)y * p,
								       src + (size_t)(y0 + y) * W_ + x0,
								       (size_t)p * sizeof(float));
						dst += (size_t)T * pp;
					}
				}
}

static vd_status qwen2vl_process_image(void *state, const vd_image *img, const vd_mm_kwargs *kw,
				       vd_mm_item *out)
{
	qwen2vl *m = state;
	vd_image resized = { 0 };
	const vd_image *cur = img;
	int64_t min_px = m->min_pixels, max_px = m->max_pixels;
	int rh = img->height, rw = img->width, gh, gw;
	int64_t n_patches, dim, shape[2];
	float *planes = NULL;
	vd_status st;

	if (kw && kw->min_pixels > 0)
		min_px = kw->min_pixels;
	if (kw && kw->max_pixels > 0)
		max_px = kw->max_pixels;
	if (max_px < min_px)
		return H->errorf(VD_ERR_INVALID_ARG, "qwen2vl: max_pixels %lld is below min_pixels %lld",
				 (long long)max_px, (long long)min_px);
	if (m->norm.do_resize) {
		int64_t f = (int64_t)m->patch * m->merge;
		int64_t cap = MAX_IMAGE_TOKENS * f * f;

		st = smart_resize(img->height, img->width, (int)f, min_px, max_px, &rh, &rw);
		if (st != VD_OK)
			return st;
		if (cap < m->max_pixels)
			cap = m->max_pixels;
		if ((int64_t)rh * rw > cap)
			return H->errorf(VD_ERR_INVALID_ARG,
					 "qwen2vl: min_pixels/max_pixels resize this image to %dx%d "
					 "= %lld pixels, more than the %lld one image may use (%d "
					 "tokens, or the model's max_pixels when larger)", rw, rh,
					 (long long)rh * rw, (long long)cap, MAX_IMAGE_TOKENS);
		st = H->image_resize(img, rw, rh, m->norm.resample, &resized);
		if (st != VD_OK)
			return st;
		cur = &resized;
	}
	if (rh % (m->patch * m->merge) || rw % (m->patch * m->merge)) {
		st = H->errorf(VD_ERR_INVALID_ARG,
			       "qwen2vl: image %dx%d is not a multiple of %d (enable do_resize)", rw,
			       rh, m->patch * m->merge);
		goto out;
	}
	gh = rh / m->patch;
	gw = rw / m->patch;
	n_patches = (int64_t)gh * gw;
	dim = 3LL * m->temporal * m->patch * m->patch;
	planes = malloc((size_t)3 * rh * rw * sizeof(float));
	memset(out, 0, sizeof(*out));
	out->struct_size = sizeof(*out);
	out->pixels.data = malloc((size_t)(n_patches * dim) * sizeof(float));
	if (!planes || !out->pixels.data) {
		free(out->pixels.data);
		out->pixels.data = NULL;
		st = H->errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	H->image_to_planes(cur, m->norm.rescale, m->norm.mean, m->norm.std, planes);
	patchify(m, planes, rh, rw, out->pixels.data);
	out->kind = VD_MM_PIXELS;
	out->pixels.dtype = VD_DTYPE_F32;
	out->pixels.device = VD_DEVICE_CPU;
	shape[0] = n_patches;
	shape[1] = dim;
	vd_tensor_set_shape(&out->pixels, 2, shape);
	out->meta[0] = 1;
	out->meta[1] = gh;
	out->meta[2] = gw;
	out->n_meta = 3;
	out->num_tokens = (int32_t)(n_patches / (m->merge * m->merge));
	st = VD_OK;
out:
	free(planes);
	H->image_free(&resized);
	return st;
}

static vd_status qwen2vl_check_embeds(void *state, vd_mm_item *item)
{
	qwen2vl *m = state;
	int64_t t, gh, gw, rows;

	if (item->n_meta != 3)
		return H->errorf(VD_ERR_INVALID_ARG,
				 "Qwen2-VL image embeddings need their image_grid_thw (t, h, w)");
	t = item->meta[0];
	gh = item->meta[1];
	gw = item->meta[2];
	if (t <= 0 || gh <= 0 || gw <= 0 || gh % m->merge || gw % m->merge)
		return H->errorf(VD_ERR_INVALID_ARG,
				 "image_grid_thw (%lld, %lld, %lld) is invalid: positive, with h and w "
				 "multiples of %d", (long long)t, (long long)gh, (long long)gw, m->merge);
	rows = t * gh * gw / (m->merge * m->merge);
	/* the core checked the width (ABI minor 3) */
	if (item->embeds.shape[0] != rows)
		return H->errorf(VD_ERR_INVALID_ARG,
				 "image embeddings have %lld rows; image_grid_thw (%lld, %lld, %lld) "
				 "needs t*h*w/%d = %lld", (long long)item->embeds.shape[0],
				 (long long)t, (long long)gh, (long long)gw, m->merge * m->merge,
				 (long long)rows);
	if (rows > INT32_MAX)
		return H->errorf(VD_ERR_LIMIT, "image embeddings have too many rows");
	item->num_tokens = (int32_t)rows;
	return VD_OK;
}

/* features (sum of t*h*w, vision embed_dim): the vision blocks' output. */
static vd_status qwen2vl_vision_tower(void *state, const vd_mm_item *const *items, int n,
				      vd_tensor *features)
{
	qwen2vl *m = state;
	int64_t rows = 0, dim = 3LL * m->temporal * m->patch * m->patch;
	int64_t *grid = malloc(sizeof(int64_t) * 3 * (size_t)(n > 0 ? n : 1));
	float *px = NULL;
	vd_status st;

	if (!grid)
		return H->errorf(VD_ERR_NOMEM, "out of memory");
	for (int i = 0; i < n; i++) {
		const vd_mm_item *it = items[i];

		if (it->n_meta != 3 || it->pixels.ndim != 2 || it->pixels.shape[1] != dim ||
		    it->pixels.shape[0] != it->meta[0] * it->meta[1] * it->meta[2]) {
			free(grid);
			return H->errorf(VD_ERR_INVALID_ARG,
					 "qwen2vl: image %d's pixels do not match its grid", i);
		}
		memcpy(grid + 3 * i, it->meta, 3 * sizeof(int64_t));
		rows += it->pixels.shape[0];
	}
	px = vd_plugin_stage_floats(&m->px, m->be, (size_t)(rows * dim));
	if (!px) {
		free(grid);
		return H->errorf(VD_ERR_NOMEM, "out of memory");
	}
	for (int i = 0; i < n; i++) {
		int64_t k = items[i]->pixels.shape[0] * dim;

		if (vd_tensor_numel(&items[i]->pixels) != k) {
			free(grid);
			return H->errorf(VD_ERR_INVALID_ARG, "image %d: pixel tensor of another size", i);
		}
	}
	vd_plugin_gather_pixels(px, items, n);
	st = H->qwen2_vit_forward(m->vit, px, grid, n, features);
	free(grid);
	return st;
}

/* embeds (sum of num_tokens, hidden) = PatchMerger(features). */
static vd_status qwen2vl_projector(void *state, const vd_mm_item *const *items, int n,
				   const vd_tensor *features, vd_tensor *embeds)
{
	qwen2vl *m = state;

	(void)items;
	(void)n;
	return H->qwen2_vit_merge(m->vit, features, embeds);
}

/* ---------------------------------------------------------------- prompts */

#define PLACEHOLDER "<|vision_start|><|image_pad|><|vision_end|>"

static vd_status qwen2vl_placeholder(void *state, int image_index, char *buf, size_t cap)
{
	(void)state;
	(void)image_index;
	return vd_plugin_placeholder_text(H, PLACEHOLDER, buf, cap);
}

/* Each <|image_pad|> becomes its image's num_tokens rows. Positions follow
 * get_rope_index: a text token takes the next position on all three axes
 * (one past the largest so far); an image's merged grid (t, gh, gw) takes
 * (s + t, s + row, s + col) from its start s. Decoding continues at index +
 * delta with delta = max position + 1 - length. */
static vd_status qwen2vl_expand(void *state, const vd_prompt_in *in, vd_expansion *out)
{
	qwen2vl *m = state;
	int32_t *owned, *pos = NULL, *dst;
	const int32_t *ids;
	size_t n, run = 0;
	int64_t total = 0, k = 0, next = 0;
	int img = 0;
	vd_status st = vd_plugin_prompt_ids(H, m->tok, in, m->image_token, "<|image_pad|>", &ids,
					    &n, &owned);

	if (st != VD_OK)
		return st;
	total = (int64_t)n - in->n_items;
	for (int i = 0; i < in->n_items; i++) {
		const vd_mm_item *it = in->items[i];

		if (it->n_meta != 3 || it->num_tokens <= 0 ||
		    (int64_t)it->num_tokens * m->merge * m->merge != it->meta[0] * it->meta[1] * it->meta[2]) {
			st = H->errorf(VD_ERR_INVALID_ARG,
				       "qwen2vl: image %d has no grid (t, h, w) matching its %d tokens",
				       i, it->num_tokens);
			goto out;
		}
		total += it->num_tokens;
	}
	pos = malloc(sizeof(int32_t) * 3 * (size_t)(total > 0 ? total : 1));
	if (!pos) {
		st = H->errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i <= n && st == VD_OK; i++) {
		if (i < n && ids[i] != m->image_token)
			continue;
		st = H->exp_push(out, ids + run, (int64_t)(i - run));
		for (size_t j = run; j < i; j++, k++) {
			pos[k] = pos[total + k] = pos[2 * total + k] = (int32_t)next;
			next++;
		}
		if (st == VD_OK && i < n) {
			const vd_mm_item *it = in->items[img];
			int64_t t = it->meta[0], gh = it->meta[1] / m->merge, gw = it->meta[2] / m->merge;
			int64_t start = next, top = next;

			st = H->exp_push_image(out, img, m->image_token, it->num_tokens);
			for (int64_t a = 0; a < t; a++)
				for (int64_t b = 0; b < gh; b++)
					for (int64_t c = 0; c < gw; c++, k++) {
						pos[k] = (int32_t)(start + a);
						pos[total + k] = (int32_t)(start + b);
						pos[2 * total + k] = (int32_t)(start + c);
						if (start + a > top)
							top = start + a;
						if (start + b > top)
							top = start + b;
						if (start + c > top)
							top = start + c;
					}
			next = top + 1;
			img++;
		}
		run = i + 1;
	}
	if (st != VD_OK)
		goto out;
	if (k != total || H->exp_len(out) != total) {
		st = H->errorf(VD_ERR_INTERNAL, "qwen2vl: expansion length mismatch");
		goto out;
	}
	dst = H->exp_positions(out, 3, (int32_t)(next - total));
	if (!dst) {
		st = H->errorf(total ? VD_ERR_NOMEM : VD_ERR_INVALID_ARG,
			       total ? "out of memory" : "the prompt is empty");
		goto out;
	}
	memcpy(dst, pos, sizeof(int32_t) * 3 * (size_t)total);
out:
	free(pos);
	free(owned);
	return st;
}

/* ---------------------------------------------------------------- plugin */

static const char *const qwen2vl_archs[] = { "Qwen2VLForConditionalGeneration", NULL };

VD_PLUGIN_ONE_FAMILY(qwen2vl, "qwen2vl", qwen2vl_archs, 3, VD_HOST_API_THROUGH(qwen2_vit_merge), H)
