/* The offline inference API: vLLM's LLM.generate in C.
 *
 *   vd_engine_args a; vd_engine_args_init(&a); a.model = "llava-1.5-7b-hf";
 *   vd_llm *llm; vd_llm_create(&a, &llm);
 *   vd_request req = {0}; vd_request_init(&req);
 *   req.prompt = "USER: <image>\nWhat is this?\nASSISTANT:";
 *   vd_image_input img = { .kind = VD_IMAGE_PATH, .path = "cat.jpg" };
 *   req.images = &img; req.n_images = 1;
 *   vd_output *out; vd_llm_generate(llm, &req, 1, &out);
 *   puts(out[0].completions[0].text);
 *   vd_outputs_free(out, 1); vd_llm_destroy(llm);
 *
 * Every request gets its own status and message in its vd_output: a bad
 * request fails alone and the others still run. */
#ifndef VLLMD_LLM_H
#define VLLMD_LLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "vllmd/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vd_llm vd_llm;

/* Engine arguments, vLLM's names. Strings are borrowed for vd_llm_create. */
typedef struct vd_engine_args {
	uint32_t struct_size;
	const char *model;           /* checkpoint directory */
	const char *tokenizer;       /* NULL = model */
	const char *plugin_dir;      /* NULL = built-in default */
	const char *device;          /* "auto", "cpu", "cuda" */
	const char *dtype;           /* "auto", "float32", "bfloat16", "float16" */
	int max_model_len;           /* 0 = from the model config */
	int limit_images;            /* limit_mm_per_prompt image; 0 = family max */
	int max_num_seqs;
	int max_num_batched_tokens;  /* 0 = auto */
	int block_size;
	int64_t kv_cache_memory;     /* bytes; 0 = auto */
	double gpu_memory_utilization;
	bool enable_prefix_caching;
	int num_threads;             /* CPU threads; 0 = all */
	int64_t max_image_pixels;
	uint64_t seed;
	bool show_progress;          /* progress bar on stderr */
	bool enforce_eager;          /* no step graphs: every step op by op */
	int input_workers;           /* threads preparing requests (images,
				      * prompts); 0 = one per core */
	/* the KV-cache element type: "auto" (the compute dtype) or "fp8" /
	 * "fp8_e4m3" (OCP E4M3, half the bytes of bf16, scale 1 as vLLM uses
	 * without calibrated scales) */
	const char *kv_cache_dtype;
} vd_engine_args;

void vd_engine_args_init(vd_engine_args *a);

/* Load model, tokenizer and plugin. On failure *out is NULL and the message
 * (vd_error_message) says what was wrong. */
vd_status vd_llm_create(const vd_engine_args *args, vd_llm **out);
void vd_llm_destroy(vd_llm *llm);

typedef struct vd_sampling_params {
	uint32_t struct_size;
	int n;                   /* completions per prompt (1) */
	float temperature;       /* 0 = greedy (1.0 default) */
	float top_p;             /* 1.0 */
	int top_k;               /* -1 or 0 = off */
	float min_p;             /* 0 */
	float presence_penalty;
	float frequency_penalty;
	float repetition_penalty;/* 1.0 */
	int64_t seed;            /* -1 = none */
	int max_tokens;          /* 16 as vLLM */
	int min_tokens;
	bool ignore_eos;
	int logprobs;            /* -1 = none; k >= 0: sampled + top-k */
	int prompt_logprobs;     /* -1 = none */
	const char *const *stop; /* NULL-terminated stop strings, or NULL */
	const int32_t *stop_token_ids;
	int n_stop_token_ids;
	bool skip_special_tokens;/* true */
	bool include_stop_str_in_output;
} vd_sampling_params;

void vd_sampling_params_init(vd_sampling_params *p);

typedef enum vd_image_kind {
	VD_IMAGE_PATH = 0,   /* path: a file to decode */
	VD_IMAGE_BYTES = 1,  /* bytes/len: an encoded image */
	VD_IMAGE_RGB = 2,    /* rgb: (height, width, 3) packed pixels, taken as they
			      * are (the HF processors' convert_rgb leaves RGB as is) */
	VD_IMAGE_EMBEDS = 3, /* embeds: (rows, hidden) projected embeddings */
} vd_image_kind;

#define VD_IMAGE_META_MAX 8

/* One multi_modal_data image. All pointers borrowed for the call. */
typedef struct vd_image_input {
	vd_image_kind kind;
	const char *path;
	const void *bytes;
	size_t len;
	const uint8_t *rgb;
	int width, height;
	const float *embeds;
	int64_t rows, hidden;
	/* with EMBEDS: what the model family needs beside the rows to place
	 * them, in its order (its image processor's per-image metadata, e.g.
	 * the (t, h, w) patch grid that vLLM passes as image_grid_thw);
	 * n_embed_meta 0 = none */
	int64_t embed_meta[VD_IMAGE_META_MAX];
	int n_embed_meta;
} vd_image_input;

typedef struct vd_request {
	uint32_t struct_size;
	const char *request_id;        /* NULL = assigned ("0", "1", ...) */
	const char *prompt;            /* text, or NULL when ids are given */
	const int32_t *prompt_token_ids;
	int n_prompt_token_ids;
	const vd_image_input *images;
	int n_images;
	vd_sampling_params params;
	bool add_special_tokens;       /* tokenize prompt with BOS (true);
					* chat prompts from a template: false */
	int num_crops;                 /* mm_processor_kwargs; -1 = default */
	int64_t min_pixels, max_pixels;/* mm_processor_kwargs; -1 = default */
} vd_request;

void vd_request_init(vd_request *r);

typedef enum vd_finish_reason {
	VD_FINISH_NONE = 0,
	VD_FINISH_STOP = 1,    /* EOS, stop string or stop token */
	VD_FINISH_LENGTH = 2,  /* max_tokens or max_model_len */
	VD_FINISH_ABORT = 3,
} vd_finish_reason;

typedef struct vd_logprob_entry {
	int32_t token_id;
	float logprob;
	int32_t rank;           /* 1 = most likely */
	char *decoded;          /* owned */
} vd_logprob_entry;

/* Logprobs at one position: the chosen token first, then the top-k. */
typedef struct vd_position_logprobs {
	int n;
	vd_logprob_entry *entries; /* owned */
} vd_position_logprobs;

typedef struct vd_completion {
	int index;
	char *text;                   /* owned */
	int32_t *token_ids;           /* owned */
	int n_tokens;
	double cumulative_logprob;
	vd_position_logprobs *logprobs; /* (n_tokens) or NULL; owned */
	vd_finish_reason finish_reason;
	char *stop_reason;            /* matched stop string, or NULL; owned */
	int32_t stop_token;           /* matched stop token id, or -1 */
} vd_completion;

typedef struct vd_output {
	vd_status status;             /* VD_OK or why this request failed */
	char *error;                  /* message when status != VD_OK; owned */
	char *request_id;             /* owned */
	char *prompt;                 /* owned; NULL when ids were given */
	int32_t *prompt_token_ids;    /* after placeholder expansion; owned */
	int n_prompt_tokens;
	vd_position_logprobs *prompt_logprobs; /* (n_prompt_tokens) or NULL */
	int n_completions;
	vd_completion *completions;   /* owned */
} vd_output;

/* Run n requests to completion. *outs is an array of n outputs in request
 * order, owned by the caller (vd_outputs_free). Returns VD_OK when the
 * engine ran, even if single requests failed (see each status); an error
 * return means the engine itself failed. */
vd_status vd_llm_generate(vd_llm *llm, const vd_request *reqs, int n, vd_output **outs);
void vd_outputs_free(vd_output *outs, int n);
/* Free what one output owns (not the struct itself) and zero it. */
void vd_output_clear(vd_output *o);

/* Name of a finish reason as vLLM prints it: "stop", "length", "abort". */
const char *vd_finish_reason_str(vd_finish_reason r);

#ifdef __cplusplus
}
#endif
#endif
