/* The input stage: the one way into the engine for every caller (the
 * offline API and `vllmd generate`, the daemon's connections). A pool of
 * worker threads turns each vd_request into a vd_prepared: the request
 * checked once (prompt, images, sampling parameters), every image read and
 * decoded (files, encoded bytes), passed through the family's process_image
 * and hashed (precomputed embeddings checked and hashed), and the prompt
 * tokenized and expanded (placeholder rows, positions). The engine's thread
 * then only admits prepared requests, schedules and steps.
 *
 * Thread-safe: any thread may submit. Workers touch nothing but the request
 * they prepare and the family's process_image/check_embeds/expand, which
 * the plugin contract makes thread-safe (expand from plugin ABI minor 3;
 * an older plugin's expand runs under a lock). */
#ifndef VD_INPUT_H
#define VD_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/expansion.h"
#include "vllmd/llm.h"
#include "vllmd/plugin.h"

/* A request ready for the engine. */
typedef struct vd_prepared {
	vd_status status;      /* VD_OK, or why the request cannot run */
	char *error;           /* the message when status != VD_OK; owned */
	vd_request req;        /* the caller's request; its pointers are borrowed
				* until the request finishes */
	vd_mm_item *items;     /* (n_items) processed images, prompt order; owned */
	int n_items;
	vd_expansion exp;      /* the expanded prompt; owned */
	size_t stop_lookback;  /* longest stop string */
	/* seconds spent on it: image decode, processing (+ hashing), prompt */
	double t_decode, t_process, t_prompt;
} vd_prepared;

/* Free p and all it owns; NULL is a no-op. */
void vd_prepared_free(vd_prepared *p);

/* What preparing needs of the loaded model. Borrowed: it must outlive the
 * stage. */
typedef struct vd_input_model {
	const vd_family *fam;
	void *fam_state;
	int32_t vocab_size;
	int embed_dim;           /* width of precomputed embeddings (the family's
				  * limits.embed_dim); 0 = unchecked */
	int max_model_len;
	int limit_images;        /* images per prompt */
	int64_t max_image_pixels;/* decoded-image cap; 0 = none */
	bool serial_expand;      /* the family's expand may not run concurrently */
} vd_input_model;

typedef struct vd_input vd_input;

/* Start n_workers threads (0: one per online core). */
vd_status vd_input_create(const vd_input_model *m, int n_workers, vd_input **out);
/* Finish the requests queued so far, then stop the workers. NULL is a
 * no-op. */
void vd_input_destroy(vd_input *in);
int vd_input_num_workers(const vd_input *in);

/* Called on a worker thread when a request is prepared; p is the callee's
 * (vd_prepared_free, or hand it to vd_engine_add), NULL when the worker ran
 * out of memory. */
typedef void (*vd_input_done_fn)(void *ctx, int64_t tag, vd_prepared *p);

/* Queue r (borrowed until done runs) to be prepared; done(ctx, tag, p) is
 * called exactly once. VD_ERR_NOMEM, and done is not called, when r cannot
 * be queued. */
vd_status vd_input_submit(vd_input *in, const vd_request *r, int64_t tag, vd_input_done_fn done,
			  void *ctx);

/* Prepare r on the pool and wait for it, for a thread that has nothing else
 * to do meanwhile (a connection's thread). VD_OK with *out set (owned by the
 * caller; (*out)->status says whether the request may run), or VD_ERR_NOMEM
 * with *out NULL. */
vd_status vd_input_prepare(vd_input *in, const vd_request *r, vd_prepared **out);

/* What the stage has done since it started (VD_PROFILE). Times are summed
 * over the workers. */
typedef struct vd_input_stats {
	int64_t requests, images;
	double decode_s, process_s, prompt_s;
	double busy_s;           /* workers' wall time preparing */
	int workers;
} vd_input_stats;

void vd_input_get_stats(vd_input *in, vd_input_stats *s);

#endif
