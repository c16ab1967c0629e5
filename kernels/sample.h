/* The host implementation of the sample_full op (vllmd/ops.h), one logits
 * row at a time: the oracle the GPU kernels are checked against, and what
 * the host sampler (core/sampler.c) and the CPU backend run.
 * Pure functions over host f32 rows; nothing here allocates. */
#ifndef VLLMD_KERNELS_SAMPLE_H
#define VLLMD_KERNELS_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "vllmd/ops.h"
#include "vllmd/status.h"

#ifdef __cplusplus
extern "C" {
#endif


/* Bytes of scratch vd_cpu_sample_row needs for rows of V entries. */
size_t vd_cpu_sample_scratch_bytes(int32_t V);

/* Ban, then the repetition penalty, then frequency and presence: the
 * history step of r over x (V) in place. */
void vd_cpu_apply_history(float *x, int32_t V, const vd_sample_row *r,
			  const vd_sample_hist *hist);

/* The token for logits x (V, unchanged) under r; hist holds the row's
 * r->n_hist history entries (hist[0] is the row's first). */
int32_t vd_cpu_sample_row(const float *x, int32_t V, const vd_sample_row *r,
			  const vd_sample_hist *hist, void *scratch);

/* Log-softmax statistics of raw logits x (V): the logprob and 1-based rank
 * of `chosen` (1 + entries strictly greater), and the top-k ids and
 * logprobs in the order (x desc, id asc). k may be 0. */
void vd_cpu_logprobs(const float *x, int32_t V, int32_t chosen, int k, float *chosen_lp,
		     int32_t *chosen_rank, int32_t *top_ids, float *top_lps);

/* Weight of a tempered logit t in the top_p mass (ops.h): exp(t - t_max)
 * in units of 2^-40, so sums are exact and order-free. */
static inline int64_t vd_top_p_weight(float t, float t_max)
{
	return t == -INFINITY ? 0 : llrint(exp((double)(t - t_max)) * 0x1.0p40);
}

/* The checks every backend's sample_full makes on a for x of M rows of N. */
static inline vd_status vd_check_sample_args(const vd_sample_args *a, int64_t M, int64_t N,
					     const char *who)
{
	int lp = 0;

	if (!a || a->struct_size < sizeof(*a) || !a->rows || !a->picks)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s: no rows or picks", who);
	if (N < 1 || N > INT32_MAX)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s: rows of %lld entries", who, (long long)N);
	if (a->n_hist < 0 || (a->n_hist > 0 && !a->hist) || a->lp_k < 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s: bad history or lp_k", who);
	for (int64_t m = 0; m < M; m++) {
		const vd_sample_row *r = &a->rows[m];

		if (r->hist_off < 0 || r->n_hist < 0 || r->hist_off > a->n_hist - r->n_hist)
			return vd_errorf(VD_ERR_INVALID_ARG, "%s: row %lld: history out of range",
					 who, (long long)m);
		if (r->logprobs > a->lp_k)
			return vd_errorf(VD_ERR_INVALID_ARG, "%s: row %lld: %d logprobs, lp_k %d",
					 who, (long long)m, (int)r->logprobs, (int)a->lp_k);
		if (!(r->temperature >= 0.0f) || isinf(r->temperature))
			return vd_errorf(VD_ERR_INVALID_ARG, "%s: row %lld: temperature", who,
					 (long long)m);
		lp |= r->logprobs >= 0;
	}
	for (int64_t i = 0; i < a->n_hist; i++)
		if (a->hist[i].token < 0 || a->hist[i].token >= N)
			return vd_errorf(VD_ERR_INVALID_ARG, "%s: history token %d out of range",
					 who, (int)a->hist[i].token);
	if (lp && (!a->chosen_lp || !a->chosen_rank || (a->lp_k > 0 && (!a->top_ids || !a->top_lps))))
		return vd_errorf(VD_ERR_INVALID_ARG, "%s: logprob outputs missing", who);
	return VD_OK;
}

#ifdef __cplusplus
}
#endif
#endif
