/* Conveniences for family plugins, built only on the public headers: the
 * scaffolding every family needs and would otherwise write again (the
 * descriptor and entry point with its host-ABI check; probing which weight
 * layout a checkpoint uses; the output layer and tied embeddings; the
 * vocabulary size; the preprocessor config fields CLIP-style processors
 * share; prompt ids and placeholder text; uploading a
 * checkpoint tensor in the backend's compute dtype; staging a vision batch's
 * pixels). Header-only: nothing here is part of the ABI. */
#ifndef VLLMD_PLUGIN_UTIL_H
#define VLLMD_PLUGIN_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vllmd/ops.h"
#include "vllmd/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Allocate *out on be in be->dtype with the shape of checkpoint tensor name
 * and upload it (converted from its stored dtype). The caller frees *out. */
static inline vd_status vd_plugin_upload_weight(const vd_host_api *host, vd_backend *be,
						const vd_weights *w, const char *name,
						vd_tensor *out)
{
	vd_tensor t;
	vd_status st = host->weights_get(w, name, &t);

	if (st != VD_OK)
		return st;
	st = be->ops->alloc(be, out, be->dtype, t.ndim, t.shape);
	if (st != VD_OK)
		return st;
	return be->ops->upload(be, out, t.data, t.dtype, vd_tensor_numel(&t));
}

/* A host buffer where a vision tower gathers its batch's pixels before the
 * upload, kept (and grown) across calls so a call does not fault in fresh
 * pages; page-locked when the backend offers host_alloc, so the upload is a
 * direct copy. Zero-initialise; vd_plugin_stage_free when done. */
typedef struct vd_plugin_stage {
	void *p;
	size_t cap;
	int pinned; /* p came from be->ops->host_alloc */
} vd_plugin_stage;

static inline void vd_plugin_stage_free(vd_plugin_stage *s, vd_backend *be)
{
	if (s->p && s->pinned)
		be->ops->host_free(be, s->p);
	else
		free(s->p);
	s->p = NULL;
	s->cap = 0;
	s->pinned = 0;
}

/* s's buffer with room for n floats (its contents are not kept when it
 * grows), or NULL when out of memory. */
static inline float *vd_plugin_stage_floats(vd_plugin_stage *s, vd_backend *be, size_t n)
{
	size_t bytes = n * sizeof(float), grain = (size_t)16 << 20;
	int has = be->ops->struct_size >= offsetof(vd_ops, host_free) + sizeof(be->ops->host_free) &&
		  be->ops->host_alloc && be->ops->host_free;

	if (bytes <= s->cap && s->p)
		return (float *)s->p;
	vd_plugin_stage_free(s, be);
	bytes = (bytes + grain - 1) / grain * grain;
	if (has && be->ops->host_alloc(be, bytes, &s->p) == VD_OK) {
		s->pinned = 1;
	} else {
		s->p = malloc(bytes);
		if (!s->p)
			return NULL;
	}
	s->cap = bytes;
	return (float *)s->p;
}

/* One thread's share of vd_plugin_gather_pixels: bytes [lo, hi) of the
 * concatenation of the items' pixels. */
typedef struct vd_plugin_gather_part {
	char *dst;
	const vd_mm_item *const *items;
	int n;
	size_t lo, hi;
} vd_plugin_gather_part;

static inline void *vd_plugin_gather_run(void *arg)
{
	const vd_plugin_gather_part *g = (const vd_plugin_gather_part *)arg;
	size_t at = 0;

	for (int i = 0; i < g->n && at < g->hi; i++) {
		size_t b = (size_t)vd_tensor_numel(&g->items[i]->pixels) * sizeof(float);
		size_t lo = g->lo > at ? g->lo : at, hi = g->hi < at + b ? g->hi : at + b;

		if (lo < hi)
			memcpy(g->dst + lo, (const char *)g->items[i]->pixels.data + (lo - at), hi - lo);
		at += b;
	}
	return NULL;
}

/* The items' pixels (host f32, each tensor whole) one after another into
 * dst. One thread's copy of 64 CLIP images (86 MB) into page-locked memory
 * takes several ms while the GPU waits, so batches of 16 MB and more copy
 * on up to 8 threads (one per core, 4 MB each at least): LLaVA's vision
 * benchmark went from 893 to 1,018 images/s on an H100 (docs/PERF.md,
 * 2026-12-07). VD_STAGE_THREADS=N sets the count (1 = the caller alone).
 * A thread that cannot start leaves its share to the caller. */
static inline void vd_plugin_gather_pixels(float *dst, const vd_mm_item *const *items, int n)
{
	enum { MAX_THREADS = 8 };
	vd_plugin_gather_part part[MAX_THREADS];
	pthread_t tid[MAX_THREADS];
	int started[MAX_THREADS] = { 0 };
	size_t total = 0;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	const char *env = getenv("VD_STAGE_THREADS");
	int t = env && *env ? atoi(env) : MAX_THREADS;

	for (int i = 0; i < n; i++)
		total += (size_t)vd_tensor_numel(&items[i]->pixels) * sizeof(float);
	if (t > MAX_THREADS)
		t = MAX_THREADS;
	if (cpus > 0 && t > cpus)
		t = (int)cpus;
	if ((size_t)t > total / ((size_t)4 << 20))
		t = (int)(total / ((size_t)4 << 20));
	if (total < ((size_t)16 << 20) || t < 1)
		t = 1;
	for (int k = 0; k < t; k++)
		part[k] = (vd_plugin_gather_part){ (char *)dst, items, n, total / (size_t)t * (size_t)k,
						   k + 1 == t ? total : total / (size_t)t * (size_t)(k + 1) };
	for (int k = 1; k < t; k++)
		started[k] = pthread_create(&tid[k], NULL, vd_plugin_gather_run, &part[k]) == 0;
	vd_plugin_gather_run(&part[0]);
	for (int k = 1; k < t; k++) {
		if (started[k])
			pthread_join(tid[k], NULL);
		else
			vd_plugin_gather_run(&part[k]);
	}
}

/* OpenAI CLIP's normalisation, the default image_mean / image_std of the
 * CLIP-style image processors (LLaVA, Phi-3.5-V, Qwen2-VL). */
static const float vd_clip_mean[3] = { 0.48145466f, 0.4578275f, 0.40821073f };
static const float vd_clip_std[3] = { 0.26862954f, 0.26130258f, 0.27577711f };

/* out = the per-channel triplet pp[key] of a preprocessor config: three
 * numbers, or one for all channels; def when the key is absent. Another
 * length is VD_ERR_FORMAT naming the key. */
static inline vd_status vd_plugin_read_triplet(const vd_host_api *host, const vd_json *pp,
					       const char *key, const float def[3], float out[3])
{
	const vd_json *n = host->json_get(pp, key);

	for (int i = 0; i < 3; i++)
		out[i] = def[i];
	if (!n)
		return VD_OK;
	if (host->json_len(n) == 1) {
		out[0] = out[1] = out[2] =
			(float)host->json_number_value(host->json_at(n, 0), def[0]);
		return VD_OK;
	}
	if (host->json_len(n) != 3)
		return host->errorf(VD_ERR_FORMAT,
				    "preprocessor_config.json: '%s' must have 3 values", key);
	for (int i = 0; i < 3; i++)
		out[i] = (float)host->json_number_value(host->json_at(n, i), def[i]);
	return VD_OK;
}

/* The fields CLIP-style image processors (CLIPImageProcessor,
 * Qwen2VLImageProcessor, ...) share, as the processor applies them. */
typedef struct vd_plugin_image_norm {
	bool do_resize;
	vd_resample resample;   /* nearest, bilinear or bicubic */
	float rescale;          /* rescale_factor, or 1 when do_rescale is false */
	float mean[3], std[3];  /* image_mean / image_std, or 0 / 1 when
				 * do_normalize is false */
} vd_plugin_image_norm;

/* Read do_resize, resample, do_rescale, rescale_factor, do_normalize,
 * image_mean and image_std from preprocessor_config.json pp (may be NULL),
 * each with the processor class default (true, bicubic, true, 1/255, true,
 * CLIP's mean and std). A resample other than nearest (0), bilinear (2) or
 * bicubic (3) is VD_ERR_UNSUPPORTED. */
static inline vd_status vd_plugin_read_image_norm(const vd_host_api *host, const vd_json *pp,
						  vd_plugin_image_norm *out)
{
	bool do_rescale, do_normalize;
	int64_t resample;
	double rescale;
	vd_status st;

	st = host->json_bool(pp, "do_resize", true, &out->do_resize);
	if (st == VD_OK)
		st = host->json_bool(pp, "do_rescale", true, &do_rescale);
	if (st == VD_OK)
		st = host->json_bool(pp, "do_normalize", true, &do_normalize);
	if (st == VD_OK)
		st = host->json_int(pp, "resample", VD_RESAMPLE_BICUBIC, &resample);
	if (st == VD_OK)
		st = host->json_num(pp, "rescale_factor", 1.0 / 255.0, &rescale);
	if (st == VD_OK)
		st = vd_plugin_read_triplet(host, pp, "image_mean", vd_clip_mean, out->mean);
	if (st == VD_OK)
		st = vd_plugin_read_triplet(host, pp, "image_std", vd_clip_std, out->std);
	if (st != VD_OK)
		return st;
	if (resample != VD_RESAMPLE_BICUBIC && resample != VD_RESAMPLE_BILINEAR &&
	    resample != VD_RESAMPLE_NEAREST)
		return host->errorf(VD_ERR_UNSUPPORTED,
				    "preprocessor_config.json: resample %lld is not supported "
				    "(0 nearest, 2 bilinear, 3 bicubic)", (long long)resample);
	out->resample = (vd_resample)resample;
	out->rescale = do_rescale ? (float)rescale : 1.0f;
	if (!do_normalize) {
		for (int i = 0; i < 3; i++) {
			out->mean[i] = 0.0f;
			out->std[i] = 1.0f;
		}
	}
	return VD_OK;
}

/* Which of a family's known weight layouts a checkpoint uses: the first of
 * prefixes[] (NULL-terminated) under which the weights hold
 * <prefix><probe>, as an index into prefixes. VD_ERR_NOT_FOUND naming the
 * family, the model directory and every name looked for otherwise. */
static inline vd_status vd_plugin_probe_layout(const vd_host_api *host, const vd_model_ctx *ctx,
					       const char *family, const char *const *prefixes,
					       const char *probe, int *which)
{
	char name[256], tried[768] = "";
	size_t used = 0;

	for (int i = 0; prefixes[i]; i++) {
		snprintf(name, sizeof(name), "%s%s", prefixes[i], probe);
		if (host->weights_has(ctx->weights, name)) {
			*which = i;
			return VD_OK;
		}
		if (used < sizeof(tried))
			used += (size_t)snprintf(tried + used, sizeof(tried) - used, "%s'%s'",
						 i ? ", " : "", name);
	}
	return host->errorf(VD_ERR_NOT_FOUND, "%s: %s has none of the weight layouts this family "
			    "reads (looked for %s)", family, ctx->model_dir, tried);
}

/* The text decoder's output layer: spec->lm_head = name when the
 * checkpoint holds it and the embeddings are not tied, else "" (the decoder
 * reuses the input embeddings). tie_word_embeddings is read from text_cfg,
 * or from the top-level config when text_cfg lacks it (false by default). */
static inline vd_status vd_plugin_lm_head(const vd_host_api *host, const vd_model_ctx *ctx,
					  const vd_json *text_cfg, const char *name,
					  vd_decoder_spec *spec)
{
	const vd_json *where = host->json_get(text_cfg, "tie_word_embeddings") ? text_cfg
									       : ctx->config;
	bool tie;
	vd_status st = host->json_bool(where, "tie_word_embeddings", false, &tie);

	if (st != VD_OK)
		return st;
	if (tie || !host->weights_has(ctx->weights, name))
		spec->lm_head[0] = '\0';
	else
		snprintf(spec->lm_head, sizeof(spec->lm_head), "%s", name);
	return VD_OK;
}

/* A top-level vocab_size (multimodal configs pad it, e.g. llava-hf's
 * 32064) overrides the one the text config gave spec. */
static inline vd_status vd_plugin_vocab_size(const vd_host_api *host, const vd_json *config,
					     vd_decoder_spec *spec)
{
	int64_t vocab;
	vd_status st = host->json_int(config, "vocab_size", spec->vocab_size, &vocab);

	if (st == VD_OK)
		spec->vocab_size = (int)vocab;
	return st;
}

/* The prompt's token ids: in->ids, or in->text tokenized with tok (with
 * BOS etc. unless the caller asked otherwise; vd_prompt_in's
 * add_special_tokens appeared in ABI minor 1), checked to hold one
 * image_token per image: VD_ERR_INVALID_ARG "the prompt has F <tag>
 * placeholder(s) (token T) but N image(s) were given" otherwise. On
 * success *owned is what the caller frees (NULL when the ids are
 * in->ids); on error there is nothing to free. */
static inline vd_status vd_plugin_prompt_ids(const vd_host_api *host, const vd_tokenizer *tok,
					     const vd_prompt_in *in, int32_t image_token,
					     const char *tag, const int32_t **ids, size_t *n,
					     int32_t **owned)
{
	bool special = in->struct_size > offsetof(vd_prompt_in, add_special_tokens) ?
		       in->add_special_tokens : true;
	int found = 0;
	vd_status st;

	*owned = NULL;
	*ids = in->ids;
	*n = (size_t)in->n_ids;
	if (in->text) {
		st = host->tokenize(tok, in->text, strlen(in->text), special, owned, n);
		if (st != VD_OK)
			return st;
		*ids = *owned;
	}
	for (size_t i = 0; i < *n; i++)
		found += (*ids)[i] == image_token;
	if (found == in->n_items)
		return VD_OK;
	free(*owned);
	*owned = NULL;
	return host->errorf(VD_ERR_INVALID_ARG,
			    "the prompt has %d %s placeholder(s) (token %d) but %d image(s) were "
			    "given", found, tag, image_token, in->n_items);
}

/* A fixed placeholder text into buf (cap bytes). */
static inline vd_status vd_plugin_placeholder_text(const vd_host_api *host, const char *text,
						   char *buf, size_t cap)
{
	if (cap < strlen(text) + 1)
		return host->errorf(VD_ERR_INVALID_ARG, "placeholder buffer too small");
	memcpy(buf, text, strlen(text) + 1);
	return VD_OK;
}

/* Whether the core's host table serves a plugin that needs host ABI minor
 * min_minor and min_size bytes of the table. */
static inline int vd_plugin_host_ok(const vd_host_api *host, uint32_t min_minor, size_t min_size)
{
	return host->abi_major == VD_PLUGIN_ABI_MAJOR && host->abi_minor >= min_minor &&
	       host->struct_size >= min_size;
}

/* The descriptor and entry point of a plugin serving one family `fam` (a
 * vd_family object). The entry refuses a core whose host ABI has another
 * major version, a minor below min_minor, or a host table smaller than
 * min_host_size bytes (the end of the last host entry the plugin calls);
 * otherwise it stores the host table in host_var and returns the descriptor. */
/* A vd_family's callbacks when they are named <prefix>_create,
 * <prefix>_destroy, ..., <prefix>_expand:
 *   static const vd_family llava_family = { .struct_size = sizeof(vd_family),
 *       .name = "llava", .architectures = llava_archs,
 *       VD_PLUGIN_FAMILY_CALLBACKS(llava) }; */
#define VD_PLUGIN_FAMILY_CALLBACKS(prefix)                                                  \
	.create = prefix##_create, .destroy = prefix##_destroy,                              \
	.process_image = prefix##_process_image, .check_embeds = prefix##_check_embeds,      \
	.vision_tower = prefix##_vision_tower, .projector = prefix##_projector,              \
	.placeholder = prefix##_placeholder, .expand = prefix##_expand

/* The bytes of the host table up to and including member m: the
 * min_host_size of a plugin whose newest host call is m. */
#define VD_HOST_API_THROUGH(m) (offsetof(vd_host_api, m) + sizeof(((vd_host_api *)0)->m))

/* Free each of the n backend tensors ts[i] (unallocated ones are fine). */
static inline void vd_plugin_free_tensors(vd_backend *be, vd_tensor *const *ts, int n)
{
	for (int i = 0; i < n; i++)
		be->ops->free(be, ts[i]);
}

#define VD_PLUGIN_SINGLE_FAMILY(fam, plugin_name, min_minor, min_host_size, host_var)       \
	static const vd_family *const vd_plugin_families_[] = { &(fam) };                    \
	static const vd_plugin_desc vd_plugin_desc_ = {                                      \
		.struct_size = sizeof(vd_plugin_desc),                                       \
		.magic = VD_PLUGIN_MAGIC,                                                    \
		.abi_major = VD_PLUGIN_ABI_MAJOR,                                            \
		.abi_minor = VD_PLUGIN_ABI_MINOR,                                            \
		.name = (plugin_name),                                                       \
		.version = "0.1.0",                                                          \
		.n_families = 1,                                                             \
		.families = vd_plugin_families_,                                             \
	};                                                                                   \
	static const vd_plugin_desc *vd_plugin_entry_(const vd_host_api *host)               \
	{                                                                                    \
		if (!vd_plugin_host_ok(host, (min_minor), (min_host_size)))                  \
			return NULL;                                                         \
		host_var = host;                                                             \
		return &vd_plugin_desc_;                                                     \
	}                                                                                    \
	VD_PLUGIN_DEFINE(vd_plugin_entry_)

/* A whole plugin of one family, named name (a string literal), serving the
 * NULL-terminated architectures archs, with callbacks named after prefix
 * (VD_PLUGIN_FAMILY_CALLBACKS) and the host checks of
 * VD_PLUGIN_SINGLE_FAMILY:
 *   static const char *const llava_archs[] = { "LlavaForConditionalGeneration", NULL };
 *   VD_PLUGIN_ONE_FAMILY(llava, "llava", llava_archs, 0, sizeof(vd_host_api), H) */
#define VD_PLUGIN_ONE_FAMILY(prefix, name_, archs_, min_minor, min_host_size, host_var)     \
	static const vd_family prefix##_family_ = {                                          \
		.struct_size = sizeof(vd_family),                                            \
		.name = (name_),                                                             \
		.architectures = (archs_),                                                   \
		VD_PLUGIN_FAMILY_CALLBACKS(prefix),                                          \
	};                                                                                   \
	VD_PLUGIN_SINGLE_FAMILY(prefix##_family_, name_, min_minor, min_host_size, host_var)

#ifdef __cplusplus
}
#endif
#endif
