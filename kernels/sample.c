/* sample_full on the host. The steps and their rounding are those ops.h
 * states, so that the GPU kernels can match them: penalties in f32 without
 * fused multiply-adds, tempering in f32, min_p in logit space, top_k/top_p
 * over the order (tempered logit desc, id asc), the top_p mass in exact
 * int64 units, and the Gumbel-max draw in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/sample.h"

size_t vd_cpu_sample_scratch_bytes(int32_t V)
{
	return (size_t)V * (2 * sizeof(float) + sizeof(int32_t));
}

/* qsort has no context argument in C11; calls run one at a time per
 * thread, so the key lives in a thread-local. */
static _Thread_local const float *tl_key;

static int by_key_desc(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

	if (tl_key[x] != tl_key[y])
		return tl_key[x] > tl_key[y] ? -1 : 1;
	return x < y ? -1 : x > y;
}

void vd_cpu_apply_history(float *pen, int32_t V, const vd_sample_row *r,
			  const vd_sample_hist *hist)
{
	int rep = r->repetition_penalty != 1.0f && r->repetition_penalty > 0.0f;
	int freq = r->frequency_penalty != 0.0f || r->presence_penalty != 0.0f;

	for (int32_t i = 0; i < r->n_hist; i++) {
		const vd_sample_hist *h = &hist[i];
		float v, t;

		if (h->token < 0 || h->token >= V)
			continue;
		v = pen[h->token];
		if (h->flags & VD_HIST_BANNED) {
			pen[h->token] = -INFINITY;
			continue;
		}
		if (rep && (h->flags & VD_HIST_SEEN))
			v = v > 0.0f ? v / r->repetition_penalty : v * r->repetition_penalty;
		if (freq && h->count > 0.0f) {
			t = r->frequency_penalty * h->count;
			t = t + r->presence_penalty;
			v = v - t;
		}
		pen[h->token] = v;
	}
}

int32_t vd_cpu_sample_row(const float *x, int32_t V, const vd_sample_row *r,
			  const vd_sample_hist *hist, void *scratch)
{
	float *pen = scratch;
	float *t = pen + V;
	int32_t *idx = (int32_t *)(t + V);
	float tmax = -INFINITY;
	int32_t best = -1;
	double best_v = -INFINITY, inv;

	memcpy(pen, x, (size_t)V * sizeof(float));
	vd_cpu_apply_history(pen, V, r, hist);
	if (r->temperature < 1e-5f) {
		best = 0;
		for (int32_t i = 1; i < V; i++)
			if (pen[i] > pen[best])
				best = i;
		return best;
	}
	for (int32_t i = 0; i < V; i++) {
		t[i] = pen[i] / r->temperature;
		if (t[i] > tmax)
			tmax = t[i];
	}
	if (r->min_p_log > -INFINITY)
		for (int32_t i = 0; i < V; i++)
			if (t[i] - tmax < r->min_p_log)
				t[i] = -INFINITY;
	if ((r->top_k > 0 && r->top_k < V) || (r->top_p > 0.0f && r->top_p < 1.0f)) {
		int32_t keep = V;

		for (int32_t i = 0; i < V; i++)
			idx[i] = i;
		tl_key = t;
		qsort(idx, (size_t)V, sizeof(*idx), by_key_desc);
		if (r->top_k > 0 && r->top_k < V)
			keep = r->top_k;
		if (r->top_p > 0.0f && r->top_p < 1.0f) {
			/* the shortest prefix of the top-k survivors whose mass
			 * reaches top_p */
			int64_t total = 0, prefix = 0;

			for (int32_t i = 0; i < keep; i++)
				total += vd_top_p_weight(t[idx[i]], tmax);
			for (int32_t i = 0; i < keep && total > 0; i++) {
				prefix += vd_top_p_weight(t[idx[i]], tmax);
				if ((double)prefix / (double)total >= (double)r->top_p) {
					keep = i + 1;
					break;
				}
			}
		}
		for (int32_t i = keep; i < V; i++)
			t[idx[i]] = -INFINITY;
	}
	/* the draw reads the untempered penalised logits, scaled in double */
	inv = 1.0 / (double)r->temperature;
	for (int32_t i = 0; i < V; i++) {
		double v;

		if (t[i] == -INFINITY)
			continue;
		v = (double)pen[i] * inv + vd_gumbel(r->key, i);
		if (best < 0 || v > best_v) {
			best_v = v;
			best = i;
		}
	}
	return best < 0 ? 0 : best;
}

void vd_cpu_logprobs(const float *x, int32_t V, int32_t chosen, int k, float *chosen_lp,
		     int32_t *chosen_rank, int32_t *top_ids, float *top_lps)
{
	float mx = -INFINITY;
	double sum = 0.0;
	float lse;
	int32_t rank = 1;

	for (int32_t i = 0; i < V; i++)
		if (x[i] > mx)
			mx = x[i];
	for (int32_t i = 0; i < V; i++)
		sum += exp((double)x[i] - mx);
	lse = mx + (float)log(sum);
	for (int32_t i = 0; i < V; i++)
		if (x[i] > x[chosen])
			rank++;
	*chosen_lp = x[chosen] - lse;
	*chosen_rank = rank;
	/* top-k by repeated selection (k is small): pick j is the best entry
	 * strictly after pick j-1 in the order (x desc, id asc) */
	for (int j = 0; j < k && j < V; j++) {
		int32_t best = -1;

		for (int32_t i = 0; i < V; i++) {
			if (j > 0) {
				float pl = x[top_ids[j - 1]];

				if (x[i] > pl || (x[i] == pl && i <= top_ids[j - 1]))
					continue;
			}
			if (best < 0 || x[i] > x[best])
				best = i;
		}
		if (best < 0)
			break;
		top_ids[j] = best;
		top_lps[j] = x[best] - lse;
	}
}
