/* Requests inside the engine. A group is one user request (prompt, images,
 * sampling params, its vd_output); a sequence is one of its n completions.
 * Each sequence is scheduled on its own; sequences of a group share the
 * expanded prompt and their common prefix through the prefix cache. */
#ifndef VD_REQUEST_H
#define VD_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "core/block_pool.h"
#include "core/expansion.h"
#include "core/sampler.h"
#include "vllmd/llm.h"
#include "vllmd/plugin.h"
#include "vllmd/tokenizer.h"

typedef enum vd_seq_state {
	VD_SEQ_WAITING = 0,
	VD_SEQ_RUNNING = 1,
	VD_SEQ_FINISHED = 2,
} vd_seq_state;

typedef struct vd_group vd_group;

typedef struct vd_seq {
	int64_t arrival;          /* FCFS order: smaller runs first */
	vd_group *group;
	int index;                /* completion index in the group */
	vd_seq_state state;

	/* tokens: the expanded prompt, then generated tokens */
	int32_t *tokens;
	int64_t n_tokens, cap_tokens, n_prompt;
	int64_t num_computed;     /* tokens whose KV is in the cache */

	/* KV blocks, in token order, and the hashes of its full blocks */
	int32_t *blocks;
	int32_t n_blocks, cap_blocks;
	vd_block_hash *hashes;
	int32_t n_hashes, cap_hashes;
	int32_t n_cached_blocks;  /* leading blocks already offered to the prefix cache */
	int64_t num_cached_tokens; /* prefix-cache hit at its last admission */
	int num_preemptions;

	/* encoder cache references held, one flag per image */
	bool *enc_held;

	/* sampling and output */
	vd_rng rng;
	vd_detok *detok;
	char *text;
	size_t text_len, text_cap;
	vd_completion *out;       /* points into the group's output */
	/* streaming: how much of the text and tokens the listener has seen */
	size_t emitted_text;
	int emitted_tokens;
} vd_seq;

struct vd_group {
	vd_request req;           /* the caller's request (borrowed pointers) */
	vd_sampling_params params;
	int user_index;           /* position in the caller's batch */
	vd_mm_item *items;
	int n_items;
	vd_expansion exp;         /* expanded prompt ids, positions, placeholders */
	vd_seq *seqs;             /* params.n sequences */
	int n_seqs, n_finished;
	vd_output *out;           /* the caller's output slot */
	void *user;               /* the caller's handle (streaming, abort) */
	size_t stop_lookback;     /* longest stop string */
};

/* Position row d of token t of a sequence (prompt positions come from the
 * expansion; generated tokens continue at t + delta). */
static inline int32_t vd_seq_position(const vd_seq *s, int d, int64_t t)
{
	const vd_expansion *x = &s->group->exp;

	if (!x->positions)
		return (int32_t)t;
	if (t < x->n)
		return x->positions[(int64_t)d * x->n + t];
	return (int32_t)(t + x->pos_delta);
}

#endif
