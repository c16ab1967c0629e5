/* Token sampling for one sequence row of logits, as vLLM's V1 sampler does:
 * penalties (repetition, frequency, presence) -> temperature -> min_p ->
 * top_k -> top_p -> greedy argmax or a seeded random draw. Also the logprob
 * bookkeeping (top-k with ranks) computed from the raw logits.
 * Pure functions over host f32 rows; the RNG lives with the sequence so a
 * seeded request draws the same tokens whatever else is in the batch. */
#ifndef VD_SAMPLER_H
#define VD_SAMPLER_H

#include <stdint.h>
#include "vllmd/llm.h"

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

/* True when p asks for greedy decoding. */
int vd_sampling_is_greedy(const vd_sampling_params *p);

/* Pick the next token from logits (V), which are modified in place
 * (penalties, temperature, filters). banned (n_banned ids, e.g. EOS before
 * min_tokens) get -inf first. scratch must hold 2*V floats + V int32. */
int32_t vd_sample_token(float *logits, int32_t V, const vd_sampling_params *p,
			const vd_sample_history *h, const int32_t *banned, int n_banned,
			vd_rng *rng, void *scratch);

/* Log-softmax statistics of raw logits (V): the logprob and 1-based rank of
 * `chosen`, and the top-k ids and logprobs in descending order (ties: lower
 * id first). k may be 0. */
void vd_logprobs(const float *logits, int32_t V, int32_t chosen, int k, float *chosen_lp,
		 int32_t *chosen_rank, int32_t *top_ids, float *top_lps);

#endif
