/* Conveniences for family plugins, built only on the public headers: the
 * boilerplate every single-family plugin needs (descriptor, entry point with
 * its host-ABI check) and uploading a checkpoint tensor in the backend's
 * compute dtype. Header-only: nothing here is part of the ABI. */
#ifndef VLLMD_PLUGIN_UTIL_H
#define VLLMD_PLUGIN_UTIL_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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

/* The items' pixels (host f32, each tensor whole) one after another into
 * dst, on the calling thread. (A copy split over threads was measured on
 * the 2-core CPU machine and gained nothing: 64 CLIP images, 86.7 MB, took
 * 8.2 ms on one thread and 10.8 ms on two, mean of 30; it was removed with
 * its VD_STAGE_THREADS switch.) */
static inline void vd_plugin_gather_pixels(float *dst, const vd_mm_item *const *items, int n)
{
	char *at = (char *)dst;

	for (int i = 0; i < n; i++) {
		size_t bytes = (size_t)vd_tensor_numel(&items[i]->pixels) * sizeof(float);

		memcpy(at, items[i]->pixels.data, bytes);
		at += bytes;
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

#ifdef __cplusplus
}
#endif
#endif
