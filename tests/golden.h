/* Golden-test helpers shared by the family tests: which backend a test runs
 * on, and the comparison of greedy steps against a transformers reference.
 *
 * Environment: VD_TEST_DEVICE (cpu by default; cuda on a GPU machine) and
 * VD_TEST_DTYPE (auto by default: f32 on the CPU, bf16 on CUDA). In f32 the
 * check is strict: identical greedy tokens, every reference top-k logprob
 * within GOLDEN_TOL_F32 and at the same rank. In bf16/f16 rounding moves
 * logprobs by ~1e-2 and can swap near-tied tokens, so the check allows
 * GOLDEN_TOL_HALF, and a different greedy token only where the reference
 * itself was near a tie there (the sequences then diverge and the rest of the
 * case is not compared: the step and the tie are printed). */
#ifndef VLLMD_TESTS_GOLDEN_H
#define VLLMD_TESTS_GOLDEN_H

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vllmd/llm.h"

#define GOLDEN_TOL_F32 2e-3
#define GOLDEN_TOL_HALF 0.1

static inline const char *golden_device(void)
{
	const char *d = getenv("VD_TEST_DEVICE");

	return d && *d ? d : "cpu";
}

static inline const char *golden_dtype(void)
{
	const char *d = getenv("VD_TEST_DTYPE");

	return d && *d ? d : "auto";
}

/* True when the test computes in f32 (CPU, or dtype float32 on a GPU). */
static inline int golden_exact(void)
{
	return !strcmp(golden_device(), "cpu") || !strcmp(golden_dtype(), "float32");
}

static inline double golden_tol(void)
{
	return golden_exact() ? GOLDEN_TOL_F32 : GOLDEN_TOL_HALF;
}

/* Point engine args at the test's backend and dtype. */
static inline void golden_engine_args(vd_engine_args *a)
{
	a->device = golden_device();
	a->dtype = golden_dtype();
}

/* Reference logprob of token id at one step (its "top" list), or NAN. */
static inline double golden_ref_logprob(const cJSON *step, int id)
{
	const cJSON *e;

	cJSON_ArrayForEach(e, cJSON_GetObjectItem(step, "top")) {
		if (cJSON_GetArrayItem(e, 0)->valueint == id)
			return cJSON_GetArrayItem(e, 1)->valuedouble;
	}
	return NAN;
}

/* Compare completion k with the reference steps (each {"token", "top":
 * [[id, logprob], ...]}). Returns the largest |logprob difference|. */
static inline double golden_check_steps(const char *what, const vd_completion *k,
					const cJSON *steps)
{
	const int exact = golden_exact();
	const double tol = golden_tol();
	const cJSON *t;
	double worst = 0.0;
	int i = 0;

	ck_assert_int_eq(k->n_tokens, cJSON_GetArraySize(steps));
	cJSON_ArrayForEach(t, steps) {
		const cJSON *top = cJSON_GetObjectItem(t, "top"), *e;
		const vd_position_logprobs *lp = &k->logprobs[i];
		int want_tok = cJSON_GetObjectItem(t, "token")->valueint;
		int n_top = cJSON_GetArraySize(top), j = 0;
		double last = cJSON_GetArrayItem(cJSON_GetArrayItem(top, n_top - 1), 1)->valuedouble;
		double first = cJSON_GetArrayItem(cJSON_GetArrayItem(top, 0), 1)->valuedouble;

		cJSON_ArrayForEach(e, top) {
			int id = cJSON_GetArrayItem(e, 0)->valueint, found = 0;
			double want = cJSON_GetArrayItem(e, 1)->valuedouble;

			for (int q = 0; q < lp->n; q++) {
				double d = fabs(lp->entries[q].logprob - want);

				if (lp->entries[q].token_id != id)
					continue;
				found = 1;
				ck_assert_msg(d <= tol, "%s step %d: logprob of %d is %f, reference %f",
					      what, i, id, lp->entries[q].logprob, want);
				if (d > worst)
					worst = d;
				if (exact)
					ck_assert_int_eq(lp->entries[q].rank, j + 1);
			}
			/* near the top-k cut a half-precision run may list another
			 * token instead */
			ck_assert_msg(found || (!exact && want - last <= 2 * tol),
				      "%s step %d: reference top-%d token %d missing", what, i, j + 1,
				      id);
			j++;
		}
		if (k->token_ids[i] != want_tok) {
			double ours = golden_ref_logprob(t, k->token_ids[i]);

			ck_assert_msg(!exact && !isnan(ours) && first - ours <= 2 * tol,
				      "%s step %d: token %d, reference %d", what, i, k->token_ids[i],
				      want_tok);
			printf("%s: diverged at step %d on a near-tie (reference logprobs %.4f vs "
			       "%.4f); later steps not compared\n",
			       what, i, first, ours);
			break;
		}
		i++;
	}
	return worst;
}

#endif
