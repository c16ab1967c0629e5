/* Scheduler decisions without a model: token budget and chunked prefill,
 * running-before-waiting order, max_num_seqs, preemption of the newest
 * sequence when KV blocks run out (and its return to the queue front),
 * and chunks that stop before an image the encoder budget cannot take. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "core/scheduler.h"
#include "kernels/backend.h"

typedef struct fixture {
	vd_backend *be;
	vd_kv_cache kv;
	vd_encoder_cache *enc;
	vd_scheduler s;
	vd_group g[8];
	vd_seq q[8];
	vd_mm_item items[8];
	bool held[8][2];
} fixture;

static fixture *make(int blocks, int64_t budget, int max_seqs, int64_t enc_budget)
{
	fixture *f = calloc(1, sizeof(*f));
	vd_sched_config c = { .max_num_seqs = max_seqs, .max_num_batched_tokens = budget,
			      .encoder_budget_rows = enc_budget, .prefix_caching = false };

	ck_assert_int_eq(vd_backend_create("cpu", 1, &f->be), VD_OK);
	ck_assert_int_eq(vd_kv_cache_init(&f->kv, f->be, blocks + 1, 4, 1, 1, 2, VD_DTYPE_F32, false),
			 VD_OK);
	ck_assert_int_eq(vd_encoder_cache_create(f->be, 4 * enc_budget, &f->enc), VD_OK);
	ck_assert_int_eq(vd_scheduler_init(&f->s, &c, &f->kv, f->enc), VD_OK);
	return f;
}

/* Sequence i with a prompt of n tokens; img_at >= 0 puts an image of
 * img_len rows there. */
static vd_seq *add(fixture *f, int i, int64_t n, int64_t img_at, int64_t img_len)
{
	vd_group *g = &f->g[i];
	vd_seq *q = &f->q[i];

	vd_expansion_init(&g->exp);
	for (int64_t t = 0; t < n; t++) {
		int32_t id = (int32_t)(t + 100 * i);

		if (t == img_at) {
			ck_assert_int_eq(vd_expansion_push_image(&g->exp, 0, 7, img_len), VD_OK);
			t += img_len - 1;
			continue;
		}
		ck_assert_int_eq(vd_expansion_push(&g->exp, &id, 1), VD_OK);
	}
	if (img_at >= 0) {
		f->items[i].num_tokens = (int32_t)img_len;
		f->items[i].hash[0] = (uint8_t)(i + 1);
		g->items = &f->items[i];
		g->n_items = 1;
	}
	vd_sampling_params_init(&g->params);
	q->group = g;
	q->arrival = i;
	q->n_prompt = q->n_tokens = g->exp.n;
	q->cap_tokens = g->exp.n + 64;
	q->tokens = malloc((size_t)q->cap_tokens * sizeof(int32_t));
	memcpy(q->tokens, g->exp.ids, (size_t)g->exp.n * sizeof(int32_t));
	q->enc_held = f->held[i];
	ck_assert_int_eq(vd_scheduler_add(&f->s, q), VD_OK);
	return q;
}

static void destroy(fixture *f)
{
	for (int i = 0; i < 8; i++) {
		vd_expansion_free(&f->g[i].exp);
		free(f->q[i].tokens);
		free(f->q[i].blocks);
		free(f->q[i].hashes);
	}
	vd_scheduler_free(&f->s);
	vd_encoder_cache_destroy(f->enc);
	vd_kv_cache_free(&f->kv);
	vd_backend_destroy(f->be);
	free(f);
}

/* Pretend every sequence that finished its known tokens sampled one. */
static void step_done(fixture *f, const vd_sched_out *o)
{
	vd_scheduler_advance(&f->s);
	for (int i = 0; i < o->n; i++)
		if (o->seqs[i]->num_computed == o->seqs[i]->n_tokens)
			o->seqs[i]->tokens[o->seqs[i]->n_tokens++] = 1;
}

static int64_t tokens_of(const vd_sched_out *o, const vd_seq *q)
{
	for (int i = 0; i < o->n; i++)
		if (o->seqs[i] == q)
			return o->n_tokens[i];
	return 0;
}

START_TEST(test_budget_and_chunking)
{
	fixture *f = make(64, 16, 8, 64);
	vd_seq *a = add(f, 0, 10, -1, 0), *b = add(f, 1, 10, -1, 0), *c = add(f, 2, 10, -1, 0);
	const vd_sched_out *o;

	ck_assert_int_eq(vd_scheduler_schedule(&f->s, &o), VD_OK);
	ck_assert_int_eq(o->total_tokens, 16);
	ck_assert_int_eq(tokens_of(o, a), 10);
	ck_assert_int_eq(tokens_of(o, b), 6); /* chunked */
	ck_assert_int_eq(tokens_of(o, c), 0);
	step_done(f, o);
	ck_assert_int_eq(a->n_tokens, 11);
	ck_assert_int_eq(b->num_computed, 6);
	/* running first: a decodes 1, b finishes its prompt (4), c gets the rest */
	ck_assert_int_eq(vd_scheduler_schedule(&f->s, &o), VD_OK);
	ck_assert_ptr_eq(o->seqs[0], a);
	ck_assert_int_eq(tokens_of(o, a), 1);
	ck_assert_int_eq(tokens_of(o, b), 4);
	ck_assert_int_eq(tokens_of(o, c), 10);
	ck_assert_int_eq(o->total_tokens, 15);
	destroy(f);
}
END_TEST

START_TEST(test_max_num_seqs)
{
	fixture *f = make(64, 100, 2, 64);
	const vd_sched_out *o;

	add(f, 0, 5, -1, 0);
	add(f, 1, 5, -1, 0);
	add(f, 2, 5, -1, 0);
	ck_assert_int_eq(vd_scheduler_schedule(&f->s, &o), VD_OK);
	ck_assert_int_eq(o->n, 2);
	ck_assert_int_eq(vd_scheduler_num_waiting(&f->s), 1);
	destroy(f);
}
END_TEST

START_TEST(test_preempts_newest)
{
	/* 6 blocks of 4 tokens; three prompts of 8 take 2 blocks each; the
	 * first decode step needs a third block for a: c (newest) is preempted */
	fixture *f = make(6, 64, 8, 64);
	vd_seq *a = add(f, 0, 8, -1, 0), *b = add(f, 1, 8, -1, 0), *c = add(f, 2, 8, -1, 0);
	const vd_sched_out *o;

	ck_assert_int_eq(vd_scheduler_schedule(&f->s, &o), VD_OK);
	ck_assert_int_eq(o->n, 3);
	ck_assert_int_eq(vd_block_pool_num_free(f->kv.pool), 0);
	step_done(f, o);
	ck_assert_int_eq(vd_scheduler_schedule(&f->s, &o), VD_OK);
	ck_assert_int_eq(o->n_preempted, 1);
	ck_assert_int_eq(c->state, VD_SEQ_WAITING);
	ck_assert_int_eq(c->num_computed, 0);
	ck_assert_int_eq(c->n_blocks, 0);
	ck_assert_int_eq(tokens_of(o, a), 1);
	ck_assert_int_eq(tokens_of(o, b), 1);
	ck_assert_int_eq(f->s.num_preemptions, 1);
	/* c keeps its sampled token and recomputes all 9 tokens later */
	ck_assert_int_eq(c->n_tokens, 9);
	step_done(f, o);
	vd_scheduler_finish(&f->s, a);
	ck_assert_int_eq(vd_scheduler_schedule(&f->s, &o), VD_OK);
	ck_assert_int_eq(tokens_of(o, c), 9);
	destroy(f);
}
END_TEST

START_TEST(test_stops_before_unencodable_image)
{
	/* encoder budget 6 rows < image of 8 rows: the chunk ends before it */
	fixture *f = make(64, 64, 8, 6);
	vd_seq *a = add(f, 0, 20, 5, 8);
	const vd_sched_out *o;

	ck_assert_int_eq(vd_scheduler_schedule(&f->s, &o), VD_OK);
	ck_assert_int_eq(tokens_of(o, a), 5);
	ck_assert_int_eq(o->n_enc, 0);
	destroy(f);
}
END_TEST

START_TEST(test_encodes_image_in_chunk)
{
	fixture *f = make(64, 64, 8, 8);
	vd_seq *a = add(f, 0, 20, 5, 8);
	const vd_sched_out *o;

	ck_assert_int_eq(vd_scheduler_schedule(&f->s, &o), VD_OK);
	ck_assert_int_eq(tokens_of(o, a), 20);
	ck_assert_int_eq(o->n_enc, 1);
	ck_assert_ptr_eq(o->enc[0].seq, a);
	destroy(f);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("scheduler");
	TCase *tc = tcase_create("decisions");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_budget_and_chunking);
	tcase_add_test(tc, test_max_num_seqs);
	tcase_add_test(tc, test_preempts_newest);
	tcase_add_test(tc, test_stops_before_unencodable_image);
	tcase_add_test(tc, test_encodes_image_in_chunk);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
