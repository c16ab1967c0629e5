/* Token sampling for one sequence row of logits, as vLLM's V1 sampler does:
 * penalties (repetition, frequency, presence) -> temperature -> min_p ->
 * top_k -> top_p -> greedy argmax or a seeded random draw. Also the logprob
 * bookkeeping (top-k with ranks) computed from the raw logits. The work
 * per row is kernels/sample.h's, the host side of the sample_full op;
 * this module turns request parameters into its rows. Pure functions over host f32 rows; the RNG lives with the sequence so a
 * seeded request draws the same tokens whatever else is in the batch. */
#ifndef VD_SAMPLER_H
#define VD_SAMPLER_H

#include <stddef.h>
#include <stdint.h>
#include "vllmd/llm.h"
#include "vllmd/ops.h"

/* xoshiro256** state. */
typedef struct vd_rng {
	uint64_t s[4];
} vd_rng;

void vd_rng_seed(vd_rng *r, uint64_t seed);
uint64_t vd_rng_next(vd_rng *r);
/* Uniform in [0, 1). */
double vd_rng_uniform(vd_rng *r);

/* Tokens seen so far, for penalties. Borrowed. */
typedef struct vd_sample_history {
	const int32_t *prompt;
	int64_t n_prompt;
	const int32_t *output;
	int64_t n_output;
} vd_sample_history;

/* The most completions one request may ask for, and the most logprobs (as
 * vLLM's default max_logprobs) per position. */
#define VD_MAX_N 128
#define VD_MAX_REQUEST_LOGPROBS 20

/* Check p with vLLM's SamplingParams rules, the one set of rules for every
 * way in: n in [1, VD_MAX_N]; temperature >= 0; top_p in (0, 1]; top_k -1,
 * 0 (off) or >= 1; min_p in [0, 1]; presence and frequency penalties in
 * [-2, 2]; repetition_penalty > 0; max_tokens >= 1; 0 <= min_tokens <=
 * max_tokens; logprobs and prompt_logprobs -1 (none) or up to
 * VD_MAX_REQUEST_LOGPROBS; no empty stop string; stop_token_ids given when
 * counted. VD_ERR_INVALID_ARG names the parameter, its value and what is
 * allowed. */
vd_status vd_sampling_params_check(const vd_sampling_params *p);

/* True when p asks for greedy decoding. */
int vd_sampling_is_greedy(const vd_sampling_params *p);

/* The op-level row (ops.h) for a request's parameters; a drawn row takes
 * one word of rng as its noise key (greedy rows take none). logprobs is
 * left -1: the caller fills it. */
void vd_sample_row_init(const vd_sampling_params *p, vd_rng *rng, vd_sample_row *r);

/* True when a row of p needs the tokens of its history (penalties). */
int vd_sampling_needs_history(const vd_sampling_params *p);

/* The history entries of one row into out (each token once): banned ids
 * (n_banned) flagged VD_HIST_BANNED, and when p's penalties need them the
 * tokens of h, flagged VD_HIST_SEEN with their output counts. mark (V)
 * must hold -1 everywhere and is left so. out needs room for
 * min(V, n_banned + n_prompt + n_output) entries. Returns the count. */
int32_t vd_sample_build_hist(const vd_sampling_params *p, const vd_sample_history *h,
			     const int32_t *banned, int n_banned, int32_t V, int32_t *mark,
			     vd_sample_hist *out);

/* Bytes of scratch vd_sample_token needs for V. */
size_t vd_sample_scratch_bytes(int32_t V);

/* Pick the next token from logits (V, unchanged) with p, as the
 * sample_full op does (kernels/sample.h): banned (n_banned ids, e.g.
 * EOS before min_tokens) first, then penalties over h, temperature, min_p,
 * top_k, top_p, and a draw keyed by one word of rng. scratch holds
 * vd_sample_scratch_bytes(V), its mark array (see above) zeroed to -1 by
 * the call itself. */
int32_t vd_sample_token(const float *logits, int32_t V, const vd_sampling_params *p,
			const vd_sample_history *h, const int32_t *banned, int n_banned,
			vd_rng *rng, void *scratch);

/* Log-softmax statistics of raw logits (V): the logprob and 1-based rank of
 * `chosen`, and the top-k ids and logprobs in descending order (ties: lower
 * id first). k may be 0. */
void vd_logprobs(const float *logits, int32_t V, int32_t chosen, int k, float *chosen_lp,
		 int32_t *chosen_rank, int32_t *top_ids, float *top_lps);

#endif
