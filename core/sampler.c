/* Sampling, following vLLM V1's order of operations so that the same
 * parameters mean the same thing here. Random draws use the Gumbel-max trick
 * (argmax of logit / T + Gumbel noise), which samples exactly from the
 * softmax; the noise is a hash of one RNG word and the token id (ops.h), so a
 * backend's sample op makes the same draw without the logits leaving it. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/sampler.h"
#include "vllmd/ops.h"

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

static int32_t argmax(const float *x, int32_t V)
{
	int32_t best = 0;

	for (int32_t i = 1; i < V; i++)
		if (x[i] > x[best])
			best = i;
	return best;
}

static void apply_penalties(float *logits, int32_t V, const vd_sampling_params *p,
			    const vd_sample_history *h, float *counts)
{
	int rep = p->repetition_penalty != 1.0f && p->repetition_penalty > 0.0f;
	int freq = p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;

	if (!rep && !freq)
		return;
	if (rep) {
		/* seen in prompt or output: shrink toward "less likely" */
		memset(counts, 0, (size_t)V * sizeof(float));
		for (int64_t i = 0; i < h->n_prompt; i++)
			if (h->prompt[i] >= 0 && h->prompt[i] < V)
				counts[h->prompt[i]] = 1.0f;
		for (int64_t i = 0; i < h->n_output; i++)
			if (h->output[i] >= 0 && h->output[i] < V)
				counts[h->output[i]] = 1.0f;
		for (int32_t i = 0; i < V; i++)
			if (counts[i] > 0.0f)
				logits[i] = logits[i] > 0.0f ? logits[i] / p->repetition_penalty
							     : logits[i] * p->repetition_penalty;
	}
	if (freq) {
		memset(counts, 0, (size_t)V * sizeof(float));
		for (int64_t i = 0; i < h->n_output; i++)
			if (h->output[i] >= 0 && h->output[i] < V)
				counts[h->output[i]] += 1.0f;
		for (int32_t i = 0; i < V; i++)
			if (counts[i] > 0.0f)
				logits[i] -= p->frequency_penalty * counts[i] + p->presence_penalty;
	}
}

/* probs = softmax(logits) into out; returns max prob. */
static float softmax(const float *logits, int32_t V, float *out)
{
	float mx = -INFINITY, maxp = 0.0f;
	double sum = 0.0;

	for (int32_t i = 0; i < V; i++)
		if (logits[i] > mx)
			mx = logits[i];
	for (int32_t i = 0; i < V; i++) {
		out[i] = logits[i] == -INFINITY ? 0.0f : expf(logits[i] - mx);
		sum += out[i];
	}
	for (int32_t i = 0; i < V; i++) {
		out[i] = (float)(out[i] / sum);
		if (out[i] > maxp)
			maxp = out[i];
	}
	return maxp;
}

/* qsort has no context argument in C11; callers run one at a time per
 * thread, so the key lives in a thread-local. */
static _Thread_local const float *tl_key;

static int by_key_desc(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

	if (tl_key[x] != tl_key[y])
		return tl_key[x] > tl_key[y] ? -1 : 1;
	return x < y ? -1 : x > y;
}

static void sort_desc(int32_t *idx, int32_t V, const float *key)
{
	for (int32_t i = 0; i < V; i++)
		idx[i] = i;
	tl_key = key;
	qsort(idx, (size_t)V, sizeof(*idx), by_key_desc);
}

int32_t vd_sample_token(float *logits, int32_t V, const vd_sampling_params *p,
			const vd_sample_history *h, const int32_t *banned, int n_banned,
			vd_rng *rng, void *scratch)
{
	float *probs = scratch;
	float *tmp = probs + V;
	int32_t *idx = (int32_t *)(tmp + V);
	const float *raw = logits;
	int32_t best = -1;
	double best_score = -INFINITY, inv;
	uint64_t key;

	for (int i = 0; i < n_banned; i++)
		if (banned[i] >= 0 && banned[i] < V)
			logits[banned[i]] = -INFINITY;
	apply_penalties(logits, V, p, h, tmp);
	if (vd_sampling_is_greedy(p))
		return argmax(logits, V);

	/* the filters work on a tempered copy; the draw reads the untempered
	 * logits (raw) so that it scales them as the sample op does */
	inv = 1.0 / (double)p->temperature;
	for (int32_t i = 0; i < V; i++)
		tmp[i] = logits[i] / p->temperature;
	raw = logits;
	logits = tmp;
	if (p->min_p > 0.0f) {
		float thresh = softmax(logits, V, probs) * p->min_p;

		for (int32_t i = 0; i < V; i++)
			if (probs[i] < thresh)
				logits[i] = -INFINITY;
	}
	if ((p->top_k > 0 && p->top_k < V) || (p->top_p > 0.0f && p->top_p < 1.0f)) {
		int32_t keep = V;

		sort_desc(idx, V, logits);
		if (p->top_k > 0 && p->top_k < V)
			keep = p->top_k;
		if (p->top_p > 0.0f && p->top_p < 1.0f) {
			/* smallest prefix (of the top-k survivors) whose mass reaches top_p */
			double mass = 0.0, total = 0.0;
			float mx = logits[idx[0]];

			for (int32_t i = 0; i < keep; i++)
				total += logits[idx[i]] == -INFINITY ? 0.0 : exp(logits[idx[i]] - mx);
			for (int32_t i = 0; i < keep; i++) {
				mass += (logits[idx[i]] == -INFINITY ? 0.0 : exp(logits[idx[i]] - mx)) / total;
				if (mass >= p->top_p) {
					keep = i + 1;
					break;
				}
			}
		}
		for (int32_t i = keep; i < V; i++)
			logits[idx[i]] = -INFINITY;
	}
	/* the draw: Gumbel-max over the survivors with noise keyed by one word
	 * of the sequence's RNG, computed exactly as the backends' sample op
	 * does (ops.h), so the host and a GPU pick the same token */
	key = vd_rng_next(rng);
	for (int32_t i = 0; i < V; i++) {
		double v;

		if (logits[i] == -INFINITY)
			continue;
		v = (double)raw[i] * inv + vd_gumbel(key, i);
		if (best < 0 || v > best_score) {
			best_score = v;
			best = i;
		}
	}
	return best < 0 ? 0 : best;
}

void vd_logprobs(const float *logits, int32_t V, int32_t chosen, int k, float *chosen_lp,
		 int32_t *chosen_rank, int32_t *top_ids, float *top_lps)
{
	float mx = -INFINITY;
	double sum = 0.0;
	float lse;
	int32_t rank = 1;

	for (int32_t i = 0; i < V; i++)
		if (logits[i] > mx)
			mx = logits[i];
	for (int32_t i = 0; i < V; i++)
		sum += exp((double)logits[i] - mx);
	lse = mx + (float)log(sum);
	for (int32_t i = 0; i < V; i++)
		if (logits[i] > logits[chosen])
			rank++;
	*chosen_lp = logits[chosen] - lse;
	*chosen_rank = rank;
	/* top-k by repeated selection (k is small): the j-th pick is the best
	 * element ordered strictly after pick j-1 in (logit desc, id asc). */
	for (int j = 0; j < k && j < V; j++) {
		int32_t best = -1;

		for (int32_t i = 0; i < V; i++) {
			if (j > 0) {
				float pl = logits[top_ids[j - 1]];

				if (logits[i] > pl || (logits[i] == pl && i <= top_ids[j - 1]))
					continue;
			}
			if (best < 0 || logits[i] > logits[best])
				best = i;
		}
		if (best < 0)
			break;
		top_ids[j] = best;
		top_lps[j] = logits[best] - lse;
	}
}
