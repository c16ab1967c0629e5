/* Sampling parameters into sample_full rows, following vLLM V1's order of
 * operations so that the same parameters mean the same thing here. Random
 * draws use the Gumbel-max trick (argmax of logit / T + Gumbel noise), which
 * samples exactly from the softmax; the noise is a hash of one RNG word and
 * the token id (ops.h), so a backend's sample ops make the same draw
 * without the logits leaving it. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/sampler.h"
#include "kernels/sample.h"
#include "vllmd/ops.h"

static vd_status bad(const char *name, double v, const char *want)
{
	return vd_errorf(VD_ERR_INVALID_ARG, "%s must be %s, got %.9g.", name, want, v);
}

vd_status vd_sampling_params_check(const vd_sampling_params *p)
{
	if (p->n < 1 || p->n > VD_MAX_N)
		return bad("n", p->n, "between 1 and 128");
	if (!(p->temperature >= 0.0f) || isinf(p->temperature))
		return bad("temperature", p->temperature, "non-negative");
	if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
		return bad("top_p", p->top_p, "in (0, 1]");
	if (p->top_k < -1)
		return bad("top_k", p->top_k, "-1 or 0 (disabled), or at least 1");
	if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
		return bad("min_p", p->min_p, "in [0, 1]");
	if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
		return bad("presence_penalty", p->presence_penalty, "in [-2, 2]");
	if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
		return bad("frequency_penalty", p->frequency_penalty, "in [-2, 2]");
	if (!(p->repetition_penalty > 0.0f) || isinf(p->repetition_penalty))
		return bad("repetition_penalty", p->repetition_penalty, "greater than 0");
	if (p->max_tokens < 1)
		return bad("max_tokens", p->max_tokens, "at least 1");
	if (p->min_tokens < 0)
		return bad("min_tokens", p->min_tokens, "greater than or equal to 0");
	if (p->min_tokens > p->max_tokens)
		return vd_errorf(VD_ERR_INVALID_ARG, "min_tokens must be less than or equal to "
				 "max_tokens=%d, got %d.", p->max_tokens, p->min_tokens);
	if (p->logprobs < -1 || p->logprobs > VD_MAX_REQUEST_LOGPROBS)
		return bad("logprobs", p->logprobs, "between 0 and 20 (or unset)");
	if (p->prompt_logprobs < -1 || p->prompt_logprobs > VD_MAX_REQUEST_LOGPROBS)
		return bad("prompt_logprobs", p->prompt_logprobs, "between 0 and 20 (or unset)");
	if (p->n_stop_token_ids < 0 || (p->n_stop_token_ids > 0 && !p->stop_token_ids))
		return vd_errorf(VD_ERR_INVALID_ARG, "stop_token_ids: %d ids without a list",
				 p->n_stop_token_ids);
	for (int i = 0; p->stop && p->stop[i]; i++)
		if (!p->stop[i][0])
			return vd_errorf(VD_ERR_INVALID_ARG, "stop cannot contain an empty string.");
	return VD_OK;
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void vd_rng_seed(vd_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

uint64_t vd_rng_next(vd_rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

double vd_rng_uniform(vd_rng *r)
{
	return (double)(vd_rng_next(r) >> 11) * 0x1.0p-53;
}

int vd_sampling_is_greedy(const vd_sampling_params *p)
{
	return p->temperature < 1e-5f;
}

void vd_sample_row_init(const vd_sampling_params *p, vd_rng *rng, vd_sample_row *r)
{
	int greedy = vd_sampling_is_greedy(p);

	*r = (vd_sample_row){
		.temperature = greedy ? 0.0f : p->temperature,
		.top_p = p->top_p,
		.min_p_log = p->min_p > 0.0f ? logf(p->min_p) : -INFINITY,
		.repetition_penalty = p->repetition_penalty,
		.frequency_penalty = p->frequency_penalty,
		.presence_penalty = p->presence_penalty,
		.top_k = p->top_k,
		.logprobs = -1,
		.key = greedy ? 0 : vd_rng_next(rng),
	};
}

int vd_sampling_needs_history(const vd_sampling_params *p)
{
	return (p->repetition_penalty != 1.0f && p->repetition_penalty > 0.0f) ||
	       p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
}

/* The entry of token t in out, added when new. */
static vd_sample_hist *hist_entry(int32_t t, int32_t *mark, vd_sample_hist *out, int32_t *n)
{
	if (mark[t] < 0) {
		mark[t] = *n;
		out[(*n)++] = (vd_sample_hist){ .token = t };
	}
	return &out[mark[t]];
}

int32_t vd_sample_build_hist(const vd_sampling_params *p, const vd_sample_history *h,
			     const int32_t *banned, int n_banned, int32_t V, int32_t *mark,
			     vd_sample_hist *out)
{
	int rep = p->repetition_penalty != 1.0f && p->repetition_penalty > 0.0f;
	int32_t n = 0;

	for (int i = 0; i < n_banned; i++)
		if (banned[i] >= 0 && banned[i] < V)
			hist_entry(banned[i], mark, out, &n)->flags |= VD_HIST_BANNED;
	if (vd_sampling_needs_history(p)) {
		for (int64_t i = 0; rep && i < h->n_prompt; i++)
			if (h->prompt[i] >= 0 && h->prompt[i] < V)
				hist_entry(h->prompt[i], mark, out, &n)->flags |= VD_HIST_SEEN;
		for (int64_t i = 0; i < h->n_output; i++)
			if (h->output[i] >= 0 && h->output[i] < V) {
				vd_sample_hist *e = hist_entry(h->output[i], mark, out, &n);

				e->flags |= VD_HIST_SEEN;
				e->count += 1.0f;
			}
	}
	for (int32_t i = 0; i < n; i++)
		mark[out[i].token] = -1;
	return n;
}

size_t vd_sample_scratch_bytes(int32_t V)
{
	return vd_cpu_sample_scratch_bytes(V) + (size_t)V * (sizeof(int32_t) + sizeof(vd_sample_hist));
}

int32_t vd_sample_token(const float *logits, int32_t V, const vd_sampling_params *p,
			const vd_sample_history *h, const int32_t *banned, int n_banned,
			vd_rng *rng, void *scratch)
{
	int32_t *mark = (int32_t *)((char *)scratch + vd_cpu_sample_scratch_bytes(V));
	vd_sample_hist *hist = (vd_sample_hist *)(mark + V);
	vd_sample_row r;

	for (int32_t i = 0; i < V; i++)
		mark[i] = -1;
	vd_sample_row_init(p, rng, &r);
	r.n_hist = vd_sample_build_hist(p, h, banned, n_banned, V, mark, hist);
	return vd_cpu_sample_row(logits, V, &r, hist, scratch);
}

void vd_logprobs(const float *logits, int32_t V, int32_t chosen, int k, float *chosen_lp,
		 int32_t *chosen_rank, int32_t *top_ids, float *top_lps)
{
	vd_cpu_logprobs(logits, V, chosen, k, chosen_lp, chosen_rank, top_ids, top_lps);
}
