/* Sampling parameters, one by one: greedy, temperature, top_k, top_p, min_p
 * as distributions over many seeded draws; penalties against hand-computed
 * logits; banned tokens; seed reproducibility; logprob ranks. */
#include <check.h>
#include <math.h>
#include <string.h>

#include "core/sampler.h"
#include "kernels/sample.h"

#define V 4
#define DRAWS 40000

static _Alignas(16) unsigned char scratch[4096];

static void params(vd_sampling_params *p, float temp)
{
	vd_sampling_params_init(p);
	p->temperature = temp;
}

/* Frequencies of DRAWS samples from logits with p. */
static void histogram(const float *logits, const vd_sampling_params *p, uint64_t seed, double *f)
{
	vd_rng rng;
	vd_sample_history h = { 0 };

	vd_rng_seed(&rng, seed);
	memset(f, 0, V * sizeof(double));
	for (int i = 0; i < DRAWS; i++) {
		float l[V];

		memcpy(l, logits, sizeof(l));
		f[vd_sample_token(l, V, p, &h, NULL, 0, &rng, scratch)] += 1.0 / DRAWS;
	}
}

static void expect_dist(const double *f, const double *want)
{
	for (int i = 0; i < V; i++)
		ck_assert_msg(fabs(f[i] - want[i]) < 0.01, "token %d: freq %.4f want %.4f", i, f[i],
			      want[i]);
}

/* log of probabilities, so softmax gives them back */
static const float base[V] = { -0.693147f /* .5 */, -1.203973f /* .3 */,
			       -1.897120f /* .15 */, -2.995732f /* .05 */ };

START_TEST(test_greedy)
{
	vd_sampling_params p;
	vd_rng rng;
	vd_sample_history h = { 0 };
	float l[V] = { 0.1f, 2.0f, 2.0f, -1.0f };

	params(&p, 0.0f);
	vd_rng_seed(&rng, 1);
	ck_assert_uint_le(vd_sample_scratch_bytes(V), sizeof(scratch));
	ck_assert_int_eq(vd_sample_token(l, V, &p, &h, NULL, 0, &rng, scratch), 1); /* first max */
}
END_TEST

START_TEST(test_temperature)
{
	vd_sampling_params p;
	double f[V], want[V], z = 0;

	params(&p, 1.0f);
	histogram(base, &p, 7, f);
	expect_dist(f, (double[]){ 0.5, 0.3, 0.15, 0.05 });
	params(&p, 0.5f); /* p^2 renormalized */
	for (int i = 0; i < V; i++)
		z += want[i] = exp(2.0 * base[i]);
	for (int i = 0; i < V; i++)
		want[i] /= z;
	histogram(base, &p, 8, f);
	expect_dist(f, want);
}
END_TEST

START_TEST(test_top_k)
{
	vd_sampling_params p;
	double f[V];

	params(&p, 1.0f);
	p.top_k = 2;
	histogram(base, &p, 9, f);
	expect_dist(f, (double[]){ 0.625, 0.375, 0, 0 });
}
END_TEST

START_TEST(test_top_p)
{
	vd_sampling_params p;
	double f[V];

	params(&p, 1.0f);
	p.top_p = 0.7f; /* 0.5 + 0.3 reaches 0.7 */
	histogram(base, &p, 10, f);
	expect_dist(f, (double[]){ 0.625, 0.375, 0, 0 });
	p.top_p = 0.85f; /* needs the third */
	histogram(base, &p, 11, f);
	expect_dist(f, (double[]){ 0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0 });
}
END_TEST

START_TEST(test_min_p)
{
	vd_sampling_params p;
	double f[V];

	params(&p, 1.0f);
	p.min_p = 0.5f; /* keep p >= 0.25 */
	histogram(base, &p, 12, f);
	expect_dist(f, (double[]){ 0.625, 0.375, 0, 0 });
	p.min_p = 0.2f; /* keep p >= 0.1 */
	histogram(base, &p, 13, f);
	expect_dist(f, (double[]){ 0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0 });
}
END_TEST

START_TEST(test_penalties)
{
	vd_sampling_params p;
	vd_rng rng;
	int32_t prompt[] = { 0 }, output[] = { 1, 1, 3 }, mark[V] = { -1, -1, -1, -1 };
	vd_sample_history h = { .prompt = prompt, .n_prompt = 1, .output = output, .n_output = 3 };
	vd_sample_hist hist[V];
	vd_sample_row r;
	float l[V] = { 2.0f, -1.0f, 0.5f, 1.0f };

	params(&p, 0.0f);
	vd_rng_seed(&rng, 1);
	p.repetition_penalty = 2.0f;
	p.frequency_penalty = 0.5f;
	p.presence_penalty = 0.25f;
	vd_sample_row_init(&p, &rng, &r);
	r.n_hist = vd_sample_build_hist(&p, &h, NULL, 0, V, mark, hist);
	ck_assert_int_eq(r.n_hist, 3); /* 0 (prompt), 1 (twice), 3 */
	for (int i = 0; i < V; i++)
		ck_assert_int_eq(mark[i], -1); /* left as found */
	vd_cpu_apply_history(l, V, &r, hist);
	/* repetition (prompt + output): 0: 2/2=1; 1: -1*2=-2; 3: 1/2=0.5;
	 * then frequency/presence on output counts: 1 (x2): -2-1-0.25; 3: 0.5-0.5-0.25 */
	ck_assert_float_eq_tol(l[0], 1.0f, 1e-6f);
	ck_assert_float_eq_tol(l[1], -3.25f, 1e-6f);
	ck_assert_float_eq_tol(l[2], 0.5f, 1e-6f);
	ck_assert_float_eq_tol(l[3], -0.25f, 1e-6f);
	/* greedy over the penalised logits: token 0 (1.0) beats 2 (0.5) */
	l[0] = 2.0f, l[1] = -1.0f, l[2] = 0.5f, l[3] = 1.0f;
	ck_assert_int_eq(vd_sample_token(l, V, &p, &h, NULL, 0, &rng, scratch), 0);
	p.repetition_penalty = 8.0f; /* 0: 2/8 = 0.25 < 0.5 */
	ck_assert_int_eq(vd_sample_token(l, V, &p, &h, NULL, 0, &rng, scratch), 2);
	ck_assert_float_eq(l[0], 2.0f); /* logits unchanged */
}
END_TEST

START_TEST(test_banned_and_seed)
{
	vd_sampling_params p;
	vd_rng a, b;
	vd_sample_history h = { 0 };
	int32_t banned[] = { 0 };
	int same = 1;

	params(&p, 1.0f);
	vd_rng_seed(&a, 42);
	vd_rng_seed(&b, 42);
	for (int i = 0; i < 200; i++) {
		float l1[V], l2[V];
		int32_t t1, t2;

		memcpy(l1, base, sizeof(l1));
		memcpy(l2, base, sizeof(l2));
		t1 = vd_sample_token(l1, V, &p, &h, banned, 1, &a, scratch);
		t2 = vd_sample_token(l2, V, &p, &h, banned, 1, &b, scratch);
		ck_assert_int_ne(t1, 0);
		same &= t1 == t2;
	}
	ck_assert(same);
	vd_rng_seed(&b, 43);
	same = 1;
	vd_rng_seed(&a, 42);
	for (int i = 0; i < 50; i++) {
		float l1[V], l2[V];

		memcpy(l1, base, sizeof(l1));
		memcpy(l2, base, sizeof(l2));
		same &= vd_sample_token(l1, V, &p, &h, NULL, 0, &a, scratch) ==
			vd_sample_token(l2, V, &p, &h, NULL, 0, &b, scratch);
	}
	ck_assert(!same);
}
END_TEST

START_TEST(test_logprobs)
{
	float lp;
	int32_t rank, ids[3];
	float lps[3];

	vd_logprobs(base, V, 2, 3, &lp, &rank, ids, lps);
	ck_assert_float_eq_tol(lp, logf(0.15f), 1e-5f);
	ck_assert_int_eq(rank, 3);
	ck_assert_int_eq(ids[0], 0);
	ck_assert_int_eq(ids[1], 1);
	ck_assert_int_eq(ids[2], 2);
	ck_assert_float_eq_tol(lps[0], logf(0.5f), 1e-5f);
	ck_assert_float_eq_tol(lps[1], logf(0.3f), 1e-5f);
}
END_TEST

/* One set of rules for every way in: each parameter out of range is
 * refused by name; the defaults and the edges of each range pass. */
#define EXPECT_BAD(stmt, name)                                                                 \
	do {                                                                                   \
		vd_sampling_params_init(&p);                                                   \
		stmt;                                                                          \
		ck_assert_int_eq(vd_sampling_params_check(&p), VD_ERR_INVALID_ARG);            \
		ck_assert_msg(strstr(vd_error_message(), name), "%s", vd_error_message());     \
	} while (0)
#define EXPECT_OK(stmt)                                                                        \
	do {                                                                                   \
		vd_sampling_params_init(&p);                                                   \
		stmt;                                                                          \
		ck_assert_msg(vd_sampling_params_check(&p) == VD_OK, "%s", vd_error_message()); \
	} while (0)

START_TEST(test_params_check)
{
	static const char *const empty_stop[] = { "ok", "", NULL };
	vd_sampling_params p;

	EXPECT_OK((void)0);
	EXPECT_BAD(p.n = 0, "n must be");
	EXPECT_BAD(p.n = VD_MAX_N + 1, "n must be");
	EXPECT_BAD(p.temperature = -0.5f, "temperature");
	EXPECT_BAD(p.temperature = NAN, "temperature");
	EXPECT_BAD(p.top_p = 0.0f, "top_p");
	EXPECT_BAD(p.top_p = 1.5f, "top_p");
	EXPECT_BAD(p.top_k = -2, "top_k");
	EXPECT_BAD(p.min_p = 1.5f, "min_p");
	EXPECT_BAD(p.presence_penalty = 2.5f, "presence_penalty");
	EXPECT_BAD(p.frequency_penalty = -3.0f, "frequency_penalty");
	EXPECT_BAD(p.repetition_penalty = 0.0f, "repetition_penalty");
	EXPECT_BAD(p.max_tokens = 0, "max_tokens");
	EXPECT_BAD(p.min_tokens = -1, "min_tokens");
	EXPECT_BAD((p.min_tokens = 20, p.max_tokens = 10), "min_tokens");
	EXPECT_BAD(p.logprobs = VD_MAX_REQUEST_LOGPROBS + 1, "logprobs");
	EXPECT_BAD(p.prompt_logprobs = -2, "prompt_logprobs");
	EXPECT_BAD(p.stop = empty_stop, "empty string");
	EXPECT_BAD(p.n_stop_token_ids = 2, "stop_token_ids");
	EXPECT_OK((p.n = VD_MAX_N, p.temperature = 0.0f, p.top_p = 1.0f, p.top_k = -1));
	EXPECT_OK((p.min_p = 1.0f, p.presence_penalty = -2.0f, p.frequency_penalty = 2.0f));
	EXPECT_OK((p.min_tokens = 16, p.max_tokens = 16, p.logprobs = 0, p.prompt_logprobs = 20));
	EXPECT_OK((p.temperature = 7.5f, p.top_k = 1, p.seed = -9));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sampler");
	TCase *tc = tcase_create("sampler");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_greedy);
	tcase_add_test(tc, test_temperature);
	tcase_add_test(tc, test_top_k);
	tcase_add_test(tc, test_top_p);
	tcase_add_test(tc, test_min_p);
	tcase_add_test(tc, test_penalties);
	tcase_add_test(tc, test_banned_and_seed);
	tcase_add_test(tc, test_logprobs);
	tcase_add_test(tc, test_params_check);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
