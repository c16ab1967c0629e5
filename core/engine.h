/* The engine: a loaded model (backend, plugin family, text decoder,
 * tokenizer, KV cache, encoder cache), its input stage, and the
 * continuous-batching loop that runs prepared requests through it.
 * Single-threaded: one thread owns an engine (the offline API's caller, or
 * the daemon's engine thread); only vd_engine_input's stage and the
 * read-only accessors below may be used from other threads. */
#ifndef VD_ENGINE_H
#define VD_ENGINE_H

#include <stdbool.h>
#include "core/input.h"
#include "vllmd/llm.h"
#include "vllmd/plugin.h"

typedef struct vd_engine vd_engine;

typedef struct vd_engine_stats {
	int64_t steps;
	int64_t preemptions;
	int64_t prompt_tokens, generation_tokens;
	int64_t prefix_query_tokens, prefix_hit_tokens;
	int64_t encoder_runs;          /* images through the vision tower */
	int64_t encoder_cache_hits;
	int64_t graph_steps;           /* decode steps run as step graphs */
	int kv_blocks, block_size;     /* usable blocks */
	int kv_blocks_free;
	int running, waiting;
} vd_engine_stats;

/* Load everything args names. Errors say which file or option was wrong. */
vd_status vd_engine_create(const vd_engine_args *args, vd_engine **out);
/* Aborts whatever is still in flight (their outputs finish as "abort"). */
void vd_engine_destroy(vd_engine *e);

/* The input stage that prepares this engine's requests (core/input.h):
 * safe to use from any thread while the engine lives. */
vd_input *vd_engine_input(vd_engine *e);

/* Admit prepared request p (the engine takes it, whatever happens) whose
 * output goes to *out (owned by the caller; filled as the request runs).
 * user is the caller's handle for streaming updates and vd_engine_abort
 * (may be NULL); index names the request when it has no request_id. A
 * request that failed preparation (or p NULL: out of memory) is not
 * admitted: out->status/out->error say why and *admitted is false. An
 * error return means the engine itself failed. */
vd_status vd_engine_add(vd_engine *e, vd_prepared *p, int index, vd_output *out, void *user,
			bool *admitted);

/* Charge seconds the engine's thread spent waiting for the input stage
 * (VD_PROFILE). */
void vd_engine_note_input_wait(vd_engine *e, double seconds);

/* Streaming. After each step the listener hears, per completion that made
 * progress, the new tokens and the new text. Text that could still turn
 * out to be the start of a stop string is held back, so a stop string is
 * never streamed. */
typedef struct vd_stream_update {
	void *user;                  /* as given to vd_engine_add */
	int index;                   /* completion index */
	const char *delta;           /* new text, delta_len bytes (not NUL-ended) */
	size_t delta_len;
	const int32_t *tokens;       /* new token ids */
	int n_tokens;
	const vd_position_logprobs *logprobs; /* (n_tokens) or NULL */
	bool finished;               /* this completion is done */
	vd_finish_reason finish_reason;
	bool request_finished;       /* every completion is done: out is final */
	const vd_output *out;
} vd_stream_update;

typedef void (*vd_stream_fn)(void *ctx, const vd_stream_update *u);

/* Set (or clear, fn NULL) the listener; called on the engine's thread. */
void vd_engine_set_listener(vd_engine *e, vd_stream_fn fn, void *ctx);

/* Finish the request admitted with `user` now: its completions end with
 * finish reason "abort", its KV blocks are freed, and the listener hears a
 * final update. VD_ERR_NOT_FOUND if no such request is running. */
vd_status vd_engine_abort(vd_engine *e, void *user);
/* Abort every request in flight (after an engine failure, or shutdown). */
void vd_engine_abort_all(vd_engine *e);
/* Run one step; *n_finished counts requests that finished in it. An error
 * return means the engine itself failed. */
vd_status vd_engine_step(vd_engine *e, int *n_finished);
bool vd_engine_has_unfinished(const vd_engine *e);
int vd_engine_num_unfinished(const vd_engine *e);
void vd_engine_get_stats(const vd_engine *e, vd_engine_stats *s);

/* The engine behind an offline-API handle (for tests and tools). */
vd_engine *vd_llm_engine(vd_llm *llm);

/* The family's placeholder text for the index-th (1-based) image of a chat
 * message. Safe from any thread. */
vd_status vd_engine_placeholder(const vd_engine *e, int index, char *buf, size_t cap);

const vd_tokenizer *vd_engine_tokenizer(const vd_engine *e);
const vd_family *vd_engine_family(const vd_engine *e);
int vd_engine_max_model_len(const vd_engine *e);
int vd_engine_max_num_seqs(const vd_engine *e);

#endif
