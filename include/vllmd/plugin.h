/* THE plugin ABI. A model-family plugin is a shared object (llava.so, ...)
 * exporting one symbol, VD_PLUGIN_ENTRY_SYMBOL, of type vd_plugin_entry_fn.
 * The core calls it once with its host API table; the plugin returns a
 * descriptor listing the families it serves.
 *
 * Versioning: VD_PLUGIN_ABI_MAJOR changes break the ABI and a plugin of
 * another major is refused; VD_PLUGIN_ABI_MINOR grows when members are
 * appended to a table (never reordered or removed). Every struct starts with
 * struct_size so either side can tell which members the other one has.
 * A plugin includes only the headers in include/vllmd/ and calls the core only through
 * vd_host_api; it never links libvllmd. */
#ifndef VLLMD_PLUGIN_H
#define VLLMD_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "vllmd/image.h"
#include "vllmd/json.h"
#include "vllmd/models.h"
#include "vllmd/ops.h"
#include "vllmd/status.h"
#include "vllmd/tensor.h"
#include "vllmd/tokenizer.h"
#include "vllmd/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VD_PLUGIN_ABI_MAJOR 1
#define VD_PLUGIN_ABI_MINOR 3 /* 1: vd_prompt_in.add_special_tokens
				* 2: qwen2 vit
				* 3: image_resize_crop; expand runs on the
				*    input stage's worker threads, concurrently
				*    (an older plugin's expand is serialized by
				*    the core); the core checks embeddings'
				*    width before check_embeds */
#define VD_PLUGIN_ENTRY_SYMBOL "vd_plugin_entry"
#define VD_PLUGIN_MAGIC 0x766c6d64u /* "vlmd" */

/* ------------------------------------------------------- multimodal items */

typedef enum vd_mm_kind {
	VD_MM_PIXELS = 0, /* processed pixels: run vision tower + projector */
	VD_MM_EMBEDS = 1, /* precomputed projected embeddings: run neither */
} vd_mm_kind;

#define VD_MM_META_MAX 8

/* One image after processing. The plugin's process_image fills it; pixel and
 * embedding data are malloc'ed and owned by the item (the core frees them
 * with free()). meta is family-defined: Qwen2-VL (t, h, w) patch grid,
 * Phi-3.5-V (padded height, padded width, crops). */
typedef struct vd_mm_item {
	uint32_t struct_size;
	vd_mm_kind kind;
	vd_tensor pixels;        /* host f32, family-defined shape (PIXELS) */
	vd_tensor embeds;        /* host f32 (num_tokens, hidden) (EMBEDS) */
	int64_t meta[VD_MM_META_MAX];
	int n_meta;
	int32_t num_tokens;      /* placeholder rows this image fills */
	uint8_t hash[32];        /* content hash, set by the core */
} vd_mm_item;

/* Per-request processor overrides (vLLM's mm_processor_kwargs). Unset = -1. */
typedef struct vd_mm_kwargs {
	uint32_t struct_size;
	int64_t min_pixels;
	int64_t max_pixels;
	int num_crops;
} vd_mm_kwargs;

/* ---------------------------------------------------------- expansion */

/* The prompt handed to the expander: text (to be tokenized, the family
 * decides how) or token ids already containing the family's image tokens,
 * plus its images in prompt order. */
typedef struct vd_prompt_in {
	uint32_t struct_size;
	const char *text;            /* NUL-terminated or NULL */
	const int32_t *ids;          /* used when text is NULL */
	int32_t n_ids;
	const vd_mm_item *const *items;
	int n_items;
	bool add_special_tokens;     /* tokenize text with BOS etc. (chat: no,
				      * the template wrote them) */
} vd_prompt_in;

/* Output of expansion; built through the vd_host_api exp_* functions. Opaque
 * to plugins: the core owns it. */
typedef struct vd_expansion vd_expansion;

/* ---------------------------------------------------------- host API */

typedef enum vd_log_level {
	VD_LOG_DEBUG = 0,
	VD_LOG_INFO = 1,
	VD_LOG_WARN = 2,
	VD_LOG_ERROR = 3,
} vd_log_level;

/* What the core offers a plugin. Append-only: new members go at the end with
 * the ABI minor at which they appeared. */
typedef struct vd_host_api {
	uint32_t struct_size;
	uint32_t abi_major;
	uint32_t abi_minor;

	/* errors and logs (minor 0) */
	vd_status (*errorf)(vd_status s, const char *fmt, ...)
		__attribute__((format(printf, 2, 3)));
	void (*log)(vd_log_level level, const char *fmt, ...)
		__attribute__((format(printf, 2, 3)));

	/* JSON config access (minor 0): see vllmd/json.h */
	const vd_json *(*json_get)(const vd_json *node, const char *path);
	vd_status (*json_int)(const vd_json *node, const char *path, int64_t def, int64_t *out);
	vd_status (*json_num)(const vd_json *node, const char *path, double def, double *out);
	vd_status (*json_bool)(const vd_json *node, const char *path, bool def, bool *out);
	vd_status (*json_str)(const vd_json *node, const char *path, const char *def,
			      const char **out);
	int (*json_len)(const vd_json *n);
	const vd_json *(*json_at)(const vd_json *n, int i);
	double (*json_number_value)(const vd_json *n, double def);
	const char *(*json_string_value)(const vd_json *n);

	/* weights (minor 0): see vllmd/weights.h */
	vd_status (*weights_get)(const vd_weights *w, const char *name, vd_tensor *out);
	bool (*weights_has)(const vd_weights *w, const char *name);

	/* tokenizer (minor 0): see vllmd/tokenizer.h */
	vd_status (*tokenize)(const vd_tokenizer *t, const char *text, size_t len,
			      bool add_special, int32_t **ids, size_t *n);
	int32_t (*token_to_id)(const vd_tokenizer *t, const char *token);

	/* images (minor 0): see vllmd/image.h */
	vd_status (*image_resize)(const vd_image *in, int width, int height,
				  vd_resample filter, vd_image *out);
	vd_status (*image_crop)(const vd_image *in, int left, int top, int width,
				int height, const uint8_t fill[3], vd_image *out);
	void (*image_to_planes)(const vd_image *img, float rescale, const float mean[3],
				const float std[3], float *out);
	void (*image_free)(vd_image *img);

	/* models (minor 0): see vllmd/models.h */
	vd_status (*decoder_spec_from_hf)(const vd_json *text_cfg, const char *model_type,
					  vd_decoder_spec *spec);
	vd_status (*clip_config_from_hf)(const vd_json *vision_cfg, vd_clip_config *cfg);
	vd_status (*clip_create)(vd_backend *be, const vd_weights *w, const char *prefix,
				 const vd_clip_config *cfg, int run_layers, vd_clip **out);
	void (*clip_destroy)(vd_clip *c);
	vd_status (*clip_forward)(vd_clip *c, const float *pixels, int n, vd_tensor *out);

	/* expansion builders (minor 0) */
	/* Append n token ids. */
	vd_status (*exp_push)(vd_expansion *e, const int32_t *ids, int64_t n);
	/* Append n copies of placeholder token `id` as the rows of image
	 * `item` (index into vd_prompt_in.items). Images must be pushed in
	 * order, each once. */
	vd_status (*exp_push_image)(vd_expansion *e, int item, int32_t id, int64_t n);
	/* Give positions explicitly: returns a (ndim, n_tokens) buffer to fill,
	 * valid until the next exp_* call; call after all tokens are pushed.
	 * delta: decode position = token index + delta (M-RoPE). Without this
	 * call positions are 0..n-1. */
	int32_t *(*exp_positions)(vd_expansion *e, int ndim, int32_t delta);
	/* Number of tokens pushed so far. */
	int64_t (*exp_len)(const vd_expansion *e);

	/* Qwen2-VL vision transformer (minor 2): see vllmd/models.h */
	vd_status (*qwen2_vit_config_from_hf)(const vd_json *vision_cfg, vd_qwen2_vit_config *cfg);
	vd_status (*qwen2_vit_create)(vd_backend *be, const vd_weights *w, const char *prefix,
				      const vd_qwen2_vit_config *cfg, vd_qwen2_vit **out);
	void (*qwen2_vit_destroy)(vd_qwen2_vit *v);
	vd_status (*qwen2_vit_forward)(vd_qwen2_vit *v, const float *pixels,
				       const int64_t *grid_thw, int n, vd_tensor *out);
	vd_status (*qwen2_vit_merge)(vd_qwen2_vit *v, const vd_tensor *x, vd_tensor *out);

	/* images (minor 3): see vllmd/image.h */
	vd_status (*image_resize_crop)(const vd_image *in, int width, int height,
				       vd_resample filter, int left, int top, int crop_w,
				       int crop_h, const uint8_t fill[3], vd_image *out);
} vd_host_api;

/* ---------------------------------------------------------- model context */

/* What a family gets to build a model: all borrowed, valid for the model's
 * life. */
typedef struct vd_model_ctx {
	uint32_t struct_size;
	const char *model_dir;
	const vd_json *config;        /* config.json */
	const vd_json *preprocessor;  /* preprocessor_config.json or NULL */
	const vd_weights *weights;
	const vd_tokenizer *tokenizer;
	vd_backend *backend;
} vd_model_ctx;

/* Multimodal facts a family states at create time. */
typedef struct vd_mm_limits {
	uint32_t struct_size;
	int max_images;              /* most images per prompt the family takes */
	int32_t max_tokens_per_image;/* worst case, for memory profiling */
	int embed_dim;               /* projected embedding width (LM hidden) */
} vd_mm_limits;

/* ---------------------------------------------------------- family */

typedef struct vd_family {
	uint32_t struct_size;
	const char *name;                  /* "llava" */
	const char *const *architectures;  /* NULL-terminated HF names */

	/* Read ctx->config, load vision weights, describe the text decoder
	 * (spec->prefix, lm_head, ...) and the multimodal limits. *state is
	 * the family's; freed by destroy. */
	vd_status (*create)(const vd_host_api *host, const vd_model_ctx *ctx,
			    void **state, vd_decoder_spec *spec, vd_mm_limits *limits);
	void (*destroy)(void *state);

	/* Image processor: RGB image -> item (pixels, meta, num_tokens).
	 * kw may be NULL. Called from the input stage's worker threads,
	 * concurrently: must be thread-safe. */
	vd_status (*process_image)(void *state, const vd_image *img,
				   const vd_mm_kwargs *kw, vd_mm_item *out);
	/* Validate a precomputed-embeddings item (item->embeds and meta set by
	 * the caller) and set num_tokens. From ABI minor 3 the core has
	 * checked that item->embeds is (rows, limits.embed_dim). Called from
	 * worker threads, like process_image. */
	vd_status (*check_embeds)(void *state, vd_mm_item *item);

	/* Vision tower: n PIXELS items -> features, a backend tensor allocated
	 * here and owned by the caller; layout is the family's own. */
	vd_status (*vision_tower)(void *state, const vd_mm_item *const *items, int n,
				  vd_tensor *features);
	/* Projector: features of the same n items -> embeddings (sum of
	 * num_tokens, embed_dim), allocated here, owned by the caller. */
	vd_status (*projector)(void *state, const vd_mm_item *const *items, int n,
			       const vd_tensor *features, vd_tensor *embeds);

	/* Placeholder text for the image_index-th (1-based) image part of a chat
	 * message, written into buf (NUL-terminated). */
	vd_status (*placeholder)(void *state, int image_index, char *buf, size_t cap);
	/* Expand a prompt into final ids (image rows marked) and positions.
	 * Called from the input stage's worker threads, concurrently, from ABI
	 * minor 3: must be thread-safe (read-only state; the host's tokenizer
	 * and exp_* calls are). */
	vd_status (*expand)(void *state, const vd_prompt_in *in, vd_expansion *out);
} vd_family;

/* What the entry point returns. */
typedef struct vd_plugin_desc {
	uint32_t struct_size;
	uint32_t magic;       /* VD_PLUGIN_MAGIC */
	uint32_t abi_major;   /* VD_PLUGIN_ABI_MAJOR the plugin was built with */
	uint32_t abi_minor;
	const char *name;     /* "llava" */
	const char *version;  /* the plugin's own version string */
	int n_families;
	const vd_family *const *families;
} vd_plugin_desc;

typedef const vd_plugin_desc *(*vd_plugin_entry_fn)(const vd_host_api *host);

/* Define the entry point of a plugin:
 *   VD_PLUGIN_DEFINE(llava_entry)  where
 *   static const vd_plugin_desc *llava_entry(const vd_host_api *host); */
#define VD_PLUGIN_DEFINE(fn)                                                  \
	__attribute__((visibility("default"))) const vd_plugin_desc *         \
	vd_plugin_entry(const vd_host_api *host);                             \
	const vd_plugin_desc *vd_plugin_entry(const vd_host_api *host)        \
	{                                                                     \
		return fn(host);                                              \
	}

#ifdef __cplusplus
}
#endif
#endif
