/* Engine behaviour on the golden LLaVA checkpoints: a large mixed batch gives
 * exactly the greedy tokens of each request run alone (with chunked prefill
 * and a small step budget), a KV cache too small for the batch preempts and
 * still gives the same tokens, and the prefix cache hits for an identical
 * request but not for the same text with another image. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/engine.h"
#include "vllmd/llm.h"
#include "golden.h"

#define N_REQ 72

static const char *image_names[] = { "wide", "tall", "small", "square", "big" };
static char image_paths[5][4096];
static char model_dir[2][4096];

static void setup(void)
{
	const char *data = getenv("VD_TEST_DATA") ? getenv("VD_TEST_DATA") : "tests/data";

	for (int i = 0; i < 5; i++)
		snprintf(image_paths[i], sizeof(image_paths[i]), "%s/models/images/%s.png", data,
			 image_names[i]);
	snprintf(model_dir[0], sizeof(model_dir[0]), "%s/models/llava-tiny-a", data);
	snprintf(model_dir[1], sizeof(model_dir[1]), "%s/models/llava-tiny-b", data);
}

static vd_llm *make_llm(const char *dir, int64_t kv_bytes, int mnbt, int max_seqs, bool prefix)
{
	vd_engine_args a;
	vd_llm *llm = NULL;

	vd_engine_args_init(&a);
	a.model = dir;
	a.plugin_dir = getenv("VD_PLUGIN_DIR");
	golden_engine_args(&a);
	a.limit_images = 2;
	a.num_threads = 2;
	a.kv_cache_memory = kv_bytes;
	a.max_num_batched_tokens = mnbt;
	a.max_num_seqs = max_seqs;
	a.enable_prefix_caching = prefix;
	a.max_model_len = 256;
	ck_assert_msg(vd_llm_create(&a, &llm) == VD_OK, "create: %s", vd_error_message());
	return llm;
}

/* Request i of the mixed workload: prompt length, images and max_tokens
 * all vary with i. Strings live in bufs. */
static void make_request(int i, vd_request *r, vd_image_input img[2], char *buf, size_t cap)
{
	static const char *words[] = { "red", "boat", "quiet", "seven", "river", "glass", "moon" };
	int n_img = i % 3;
	size_t len;

	vd_request_init(r);
	len = (size_t)snprintf(buf, cap, "USER: %s", n_img == 2 ? "<image>\n<image>\n" :
					       n_img == 1 ? "<image>\n" : "");
	for (int w = 0; w < 1 + (i * 7) % 23; w++)
		len += (size_t)snprintf(buf + len, cap - len, "%s ", words[(i + w * 3) % 7]);
	snprintf(buf + len, cap - len, "?\nASSISTANT:");
	r->prompt = buf;
	for (int k = 0; k < n_img; k++) {
		img[k] = (vd_image_input){ .kind = VD_IMAGE_PATH, .path = image_paths[(i + 2 * k) % 5] };
	}
	r->images = img;
	r->n_images = n_img;
	r->params.temperature = 0.0f;
	r->params.ignore_eos = true;
	r->params.max_tokens = 1 + (i * 5) % 17;
}

typedef struct workload {
	vd_request r[N_REQ];
	vd_image_input img[N_REQ][2];
	char text[N_REQ][512];
} workload;

static workload *make_workload(void)
{
	workload *w = calloc(1, sizeof(*w));

	ck_assert_ptr_nonnull(w);
	for (int i = 0; i < N_REQ; i++)
		make_request(i, &w->r[i], w->img[i], w->text[i], sizeof(w->text[i]));
	return w;
}

static void assert_same_tokens(const vd_output *a, const vd_output *b, int i)
{
	ck_assert_msg(a->status == VD_OK && b->status == VD_OK, "request %d failed: %s / %s", i,
		      a->error ? a->error : "", b->error ? b->error : "");
	ck_assert_int_eq(a->n_prompt_tokens, b->n_prompt_tokens);
	ck_assert_int_eq(a->completions[0].n_tokens, b->completions[0].n_tokens);
	for (int t = 0; t < a->completions[0].n_tokens; t++)
		ck_assert_msg(a->completions[0].token_ids[t] == b->completions[0].token_ids[t],
			      "request %d token %d: batch %d, alone %d", i, t,
			      a->completions[0].token_ids[t], b->completions[0].token_ids[t]);
	ck_assert_str_eq(a->completions[0].text, b->completions[0].text);
}

/* The reference: each request alone in a fresh engine-sized batch of 1. */
static vd_output *run_alone(const char *dir, workload *w)
{
	vd_llm *llm = make_llm(dir, 0, 2048, 1, false);
	vd_output *alone = calloc(N_REQ, sizeof(*alone));

	ck_assert_ptr_nonnull(alone);
	for (int i = 0; i < N_REQ; i++) {
		vd_output *o = NULL;

		ck_assert_int_eq(vd_llm_generate(llm, &w->r[i], 1, &o), VD_OK);
		alone[i] = o[0];
		free(o);
	}
	vd_llm_destroy(llm);
	return alone;
}

START_TEST(test_batch_equals_alone)
{
	workload *w = make_workload();
	vd_output *alone = run_alone(model_dir[_i], w);
	/* a small step budget forces chunked prefill and mixed steps */
	vd_llm *llm = make_llm(model_dir[_i], 0, 48, 24, true);
	vd_output *batch = NULL;
	vd_engine_stats st;

	ck_assert_int_eq(vd_llm_generate(llm, w->r, N_REQ, &batch), VD_OK);
	for (int i = 0; i < N_REQ; i++)
		assert_same_tokens(&batch[i], &alone[i], i);
	vd_engine_get_stats(vd_llm_engine(llm), &st);
	ck_assert_int_eq(st.kv_blocks_free, st.kv_blocks); /* every block came back */
	vd_outputs_free(batch, N_REQ);
	vd_outputs_free(alone, N_REQ);
	vd_llm_destroy(llm);
	free(w);
}
END_TEST

START_TEST(test_preemption_same_output)
{
	workload *w = make_workload();
	vd_output *alone = run_alone(model_dir[0], w);
	/* llava-tiny-a: 2 layers x 4 kv heads x 8 dims x 16 tokens x 2 x f32
	 * = 8 KiB a block; 40 blocks hold a few sequences of the batch */
	vd_llm *llm = make_llm(model_dir[0], 40 * 8192, 256, 32, true);
	vd_output *batch = NULL;
	vd_engine_stats st;

	ck_assert_int_eq(vd_llm_generate(llm, w->r, N_REQ, &batch), VD_OK);
	vd_engine_get_stats(vd_llm_engine(llm), &st);
	ck_assert_int_eq(st.kv_blocks, 40);
	ck_assert_msg(st.preemptions > 0, "expected preemptions with 40 KV blocks");
	printf("small KV cache: %lld preemptions over %lld steps\n", (long long)st.preemptions,
	       (long long)st.steps);
	for (int i = 0; i < N_REQ; i++)
		assert_same_tokens(&batch[i], &alone[i], i);
	ck_assert_int_eq(st.kv_blocks_free, st.kv_blocks);
	vd_outputs_free(batch, N_REQ);
	vd_outputs_free(alone, N_REQ);
	vd_llm_destroy(llm);
	free(w);
}
END_TEST

static int64_t run_and_hits(vd_llm *llm, const vd_request *r, vd_output **o)
{
	vd_engine_stats a, b;

	vd_engine_get_stats(vd_llm_engine(llm), &a);
	ck_assert_int_eq(vd_llm_generate(llm, r, 1, o), VD_OK);
	ck_assert_int_eq((*o)[0].status, VD_OK);
	vd_engine_get_stats(vd_llm_engine(llm), &b);
	return b.prefix_hit_tokens - a.prefix_hit_tokens;
}

START_TEST(test_prefix_cache)
{
	vd_llm *llm = make_llm(model_dir[0], 0, 2048, 8, true);
	vd_request r;
	vd_image_input img = { .kind = VD_IMAGE_PATH, .path = image_paths[0] };
	vd_output *o1, *o2, *o3;
	int64_t h1, h2, h3;

	vd_request_init(&r);
	r.prompt = "USER: <image>\nDescribe every object in this picture, one by one, "
		   "with its colour and its size.\nASSISTANT:";
	r.images = &img;
	r.n_images = 1;
	r.params.temperature = 0.0f;
	r.params.max_tokens = 8;
	r.params.ignore_eos = true;
	h1 = run_and_hits(llm, &r, &o1);
	h2 = run_and_hits(llm, &r, &o2);
	ck_assert_int_eq(h1, 0);
	ck_assert_msg(h2 >= 32, "identical request hit only %lld tokens", (long long)h2);
	assert_same_tokens(&o1[0], &o2[0], 0);
	img.path = image_paths[1]; /* same text, another image */
	h3 = run_and_hits(llm, &r, &o3);
	ck_assert_int_eq(h3, 0);
	vd_outputs_free(o1, 1);
	vd_outputs_free(o2, 1);
	vd_outputs_free(o3, 1);
	vd_llm_destroy(llm);
}
END_TEST

START_TEST(test_n_and_seed)
{
	vd_llm *llm = make_llm(model_dir[0], 0, 2048, 8, true);
	vd_request r[2];
	vd_output *o = NULL, *o2 = NULL;

	for (int i = 0; i < 2; i++) {
		vd_request_init(&r[i]);
		r[i].prompt = "USER: Tell me a story about a lighthouse.\nASSISTANT:";
		r[i].params.temperature = 1.0f;
		r[i].params.seed = 1234;
		r[i].params.max_tokens = 10;
		r[i].params.ignore_eos = true;
	}
	r[0].params.n = 3;
	ck_assert_int_eq(vd_llm_generate(llm, r, 2, &o), VD_OK);
	ck_assert_int_eq(o[0].n_completions, 3);
	/* a seeded request draws the same tokens whatever runs beside it */
	ck_assert_int_eq(vd_llm_generate(llm, &r[1], 1, &o2), VD_OK);
	ck_assert_int_eq(o[1].completions[0].n_tokens, 10);
	for (int t = 0; t < 10; t++)
		ck_assert_int_eq(o[1].completions[0].token_ids[t], o2[0].completions[0].token_ids[t]);
	/* completion 0 of n=3 uses the same seed as the single request */
	for (int t = 0; t < 10; t++)
		ck_assert_int_eq(o[0].completions[0].token_ids[t], o2[0].completions[0].token_ids[t]);
	vd_outputs_free(o2, 1);
	/* asking for logprobs moves sampling from the backend's sample op to
	 * the host sampler: the same seed still draws the same tokens */
	r[1].params.logprobs = 2;
	ck_assert_int_eq(vd_llm_generate(llm, &r[1], 1, &o2), VD_OK);
	for (int t = 0; t < 10; t++)
		ck_assert_int_eq(o[1].completions[0].token_ids[t], o2[0].completions[0].token_ids[t]);
	vd_outputs_free(o, 2);
	vd_outputs_free(o2, 1);
	vd_llm_destroy(llm);
}
END_TEST

START_TEST(test_admission_errors)
{
	vd_llm *llm = make_llm(model_dir[0], 0, 2048, 8, true);
	vd_request r;
	vd_output *o = NULL;
	char *long_prompt = malloc(8000);

	ck_assert_ptr_nonnull(long_prompt);
	strcpy(long_prompt, "USER:");
	for (int i = 0; i < 300; i++)
		strcat(long_prompt, " boat");
	vd_request_init(&r);
	r.prompt = long_prompt;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	ck_assert_int_eq(o[0].status, VD_ERR_INVALID_ARG);
	ck_assert_msg(strstr(o[0].error, "is longer than the maximum model length of 256"), "%s",
		      o[0].error);
	vd_outputs_free(o, 1);
	free(long_prompt);
	vd_llm_destroy(llm);
}
END_TEST

START_TEST(test_stop_strings)
{
	vd_llm *llm = make_llm(model_dir[0], 0, 2048, 8, true);
	vd_request r;
	vd_output *o = NULL, *o2 = NULL;
	const char *stop[2] = { NULL, NULL };
	char want[256], stopbuf[16];
	const char *text;
	size_t len, cut;

	vd_request_init(&r);
	r.prompt = "USER: Count the boats in the harbour.\nASSISTANT:";
	r.params.temperature = 0.0f;
	r.params.max_tokens = 12;
	r.params.ignore_eos = true;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	text = o[0].completions[0].text;
	len = strlen(text);
	ck_assert_uint_gt(len, 12);
	/* a stop string straddling characters from the middle of the text */
	cut = len / 2;
	while (cut > 0 && ((unsigned char)text[cut] & 0xc0) == 0x80)
		cut--;
	snprintf(stopbuf, sizeof(stopbuf), "%.3s", text + cut);
	stop[0] = stopbuf;
	snprintf(want, sizeof(want), "%.*s", (int)(strstr(text, stopbuf) - text), text);
	r.params.stop = stop;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o2), VD_OK);
	ck_assert_str_eq(o2[0].completions[0].text, want);
	ck_assert_int_eq(o2[0].completions[0].finish_reason, VD_FINISH_STOP);
	ck_assert_str_eq(o2[0].completions[0].stop_reason, stopbuf);
	vd_outputs_free(o, 1);
	vd_outputs_free(o2, 1);
	/* stop_token_ids: stop at the 3rd greedy token */
	vd_request_init(&r);
	r.prompt = "USER: Count the boats in the harbour.\nASSISTANT:";
	r.params.temperature = 0.0f;
	r.params.max_tokens = 12;
	r.params.ignore_eos = true;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	r.params.stop_token_ids = &o[0].completions[0].token_ids[2];
	r.params.n_stop_token_ids = 1;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o2), VD_OK);
	ck_assert_int_le(o2[0].completions[0].n_tokens, 3);
	ck_assert_int_eq(o2[0].completions[0].finish_reason, VD_FINISH_STOP);
	vd_outputs_free(o, 1);
	vd_outputs_free(o2, 1);
	vd_llm_destroy(llm);
}
END_TEST

/* The prompt logprob of a token equals the generation logprob the same
 * prefix gave it, also when the prompt is prefilled in chunks. */
START_TEST(test_prompt_logprobs)
{
	vd_llm *llm = make_llm(model_dir[0], 0, 16, 8, true);
	vd_request r;
	vd_image_input img = { .kind = VD_IMAGE_PATH, .path = image_paths[2] };
	vd_output *o = NULL, *o2 = NULL;
	int32_t *ids;
	int n;

	vd_request_init(&r);
	r.prompt = "USER: <image>\nWhat colour is the sky?\nASSISTANT:";
	r.images = &img;
	r.n_images = 1;
	r.params.temperature = 0.0f;
	r.params.max_tokens = 1;
	r.params.logprobs = 0;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	ck_assert_int_eq(o[0].status, VD_OK);
	/* same prompt ids plus the generated token, images given again */
	n = o[0].n_prompt_tokens + 1;
	ids = malloc((size_t)n * sizeof(int32_t));
	memcpy(ids, o[0].prompt_token_ids, (size_t)(n - 1) * sizeof(int32_t));
	ids[n - 1] = o[0].completions[0].token_ids[0];
	/* prompt_token_ids carry the expanded image tokens: shrink the image
	 * run back to one placeholder as a user would write it */
	{
		int w = 0, seen = 0;

		for (int i = 0; i < n; i++) {
			if (ids[i] == 32000 && seen++)
				continue;
			ids[w++] = ids[i];
		}
		n = w;
	}
	vd_request_init(&r);
	r.prompt_token_ids = ids;
	r.n_prompt_token_ids = n;
	r.images = &img;
	r.n_images = 1;
	r.params.temperature = 0.0f;
	r.params.max_tokens = 1;
	r.params.prompt_logprobs = 2;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o2), VD_OK);
	ck_assert_msg(o2[0].status == VD_OK, "%s", o2[0].error);
	ck_assert_ptr_nonnull(o2[0].prompt_logprobs);
	ck_assert_int_eq(o2[0].prompt_logprobs[0].n, 0);
	{
		const vd_position_logprobs *last = &o2[0].prompt_logprobs[o2[0].n_prompt_tokens - 1];
		const vd_position_logprobs *gen = &o[0].completions[0].logprobs[0];

		ck_assert_int_eq(last->entries[0].token_id, gen->entries[0].token_id);
		ck_assert_float_eq_tol(last->entries[0].logprob, gen->entries[0].logprob, 1e-4);
		ck_assert_int_eq(last->entries[0].rank, 1);
	}
	free(ids);
	vd_outputs_free(o, 1);
	vd_outputs_free(o2, 1);
	vd_llm_destroy(llm);
}
END_TEST

/* Sampling on the backend (sample_full) gives what downloading the logits
 * and sampling on the host gives, for every filter: the same tokens for the
 * same seeds, and the same logprobs. Both runs use the same backend; the
 * second one has sample_full taken out (VD_CPU_HOST_SAMPLING=1, or
 * VD_CUDA_HOST_SAMPLING=1 on a GPU). */
static vd_output *run_sampling_case(int host)
{
	static const char *prompts[] = { "USER: <image>\nWhat is in the picture?\nASSISTANT:",
					 "USER: Tell me a story about a red boat.\nASSISTANT:" };
	vd_image_input img = { .kind = VD_IMAGE_PATH, .path = image_paths[2] };
	vd_request r[7];
	vd_output *o = NULL;
	vd_llm *llm;

	if (host) {
		setenv("VD_CPU_HOST_SAMPLING", "1", 1);
		setenv("VD_CUDA_HOST_SAMPLING", "1", 1);
	}
	llm = make_llm(model_dir[0], 0, 2048, 8, false);
	unsetenv("VD_CPU_HOST_SAMPLING");
	unsetenv("VD_CUDA_HOST_SAMPLING");
	for (int i = 0; i < 7; i++) {
		vd_sampling_params *p = &r[i].params;

		vd_request_init(&r[i]);
		r[i].prompt = prompts[i % 2];
		r[i].images = i % 2 ? NULL : &img;
		r[i].n_images = i % 2 ? 0 : 1;
		p->max_tokens = 12;
		p->seed = 100 + i;
		p->temperature = 0.7f + 0.1f * (float)i;
	}
	r[0].params.top_k = 5;
	r[0].params.logprobs = 3;
	r[1].params.top_p = 0.9f;
	r[2].params.min_p = 0.1f;
	r[2].params.logprobs = 0;
	r[3].params.repetition_penalty = 1.3f;
	r[3].params.frequency_penalty = 0.4f;
	r[3].params.presence_penalty = 0.2f;
	r[4].params.temperature = 0.0f; /* greedy over penalised logits */
	r[4].params.repetition_penalty = 1.5f;
	r[4].params.min_tokens = 6;
	r[4].params.logprobs = 2;
	r[5].params.top_k = 20;
	r[5].params.top_p = 0.8f;
	r[5].params.min_p = 0.05f;
	r[5].params.presence_penalty = 0.5f;
	r[5].params.n = 2;
	r[6].params.top_p = 0.5f;
	r[6].params.temperature = 2.0f;
	r[6].params.logprobs = 5;
	ck_assert_int_eq(vd_llm_generate(llm, r, 7, &o), VD_OK);
	vd_llm_destroy(llm);
	return o;
}

START_TEST(test_sampling_paths_agree)
{
	vd_output *dev = run_sampling_case(0), *host = run_sampling_case(1);
	int drawn_differ = 0;

	for (int i = 0; i < 7; i++) {
		ck_assert_msg(dev[i].status == VD_OK && host[i].status == VD_OK, "request %d: %s / %s",
			      i, dev[i].error ? dev[i].error : "", host[i].error ? host[i].error : "");
		ck_assert_int_eq(dev[i].n_completions, host[i].n_completions);
		for (int c = 0; c < dev[i].n_completions; c++) {
			const vd_completion *a = &dev[i].completions[c], *b = &host[i].completions[c];

			ck_assert_int_eq(a->n_tokens, b->n_tokens);
			for (int t = 0; t < a->n_tokens; t++)
				ck_assert_msg(a->token_ids[t] == b->token_ids[t],
					      "request %d.%d token %d: backend %d, host %d", i, c, t,
					      a->token_ids[t], b->token_ids[t]);
			ck_assert_int_eq(!a->logprobs, !b->logprobs);
			for (int t = 0; a->logprobs && t < a->n_tokens; t++) {
				ck_assert_int_eq(a->logprobs[t].n, b->logprobs[t].n);
				ck_assert_int_ge(a->logprobs[t].n, dev[i].completions[0].n_tokens ? 1 : 0);
				for (int k = 0; k < a->logprobs[t].n; k++) {
					const vd_logprob_entry *x = &a->logprobs[t].entries[k];
					const vd_logprob_entry *y = &b->logprobs[t].entries[k];

					ck_assert_int_eq(x->token_id, y->token_id);
					ck_assert_int_eq(x->rank, y->rank);
					ck_assert_double_eq_tol(x->logprob, y->logprob, 1e-4);
				}
			}
		}
	}
	/* request 4 is greedy and banned EOS for 6 tokens */
	ck_assert_int_ge(dev[4].completions[0].n_tokens, 6);
	/* the two samples of request 5 are different draws */
	for (int t = 0; t < dev[5].completions[0].n_tokens && t < dev[5].completions[1].n_tokens;
	     t++)
		drawn_differ |= dev[5].completions[0].token_ids[t] != dev[5].completions[1].token_ids[t];
	ck_assert_msg(drawn_differ || dev[5].completions[0].n_tokens != dev[5].completions[1].n_tokens,
		      "n = 2 drew the same sequence twice");
	vd_outputs_free(dev, 7);
	vd_outputs_free(host, 7);
}
END_TEST

/* The input stage prepares a request on its workers the same way every
 * time (ids, positions, image hashes), also many at once; a request that
 * fails preparation says why, owns nothing, and the engine refuses it with
 * that message. */
typedef struct collected {
	vd_prepared *p[16];
	int n;
} collected;

static void collect(void *ctx, int64_t tag, vd_prepared *p)
{
	collected *c = ctx;

	c->p[tag] = p;
	__atomic_add_fetch(&c->n, 1, __ATOMIC_SEQ_CST);
}

static vd_prepared *prepare_one(vd_input *in, const vd_request *r)
{
	vd_prepared *p = NULL;

	ck_assert_int_eq(vd_input_prepare(in, r, &p), VD_OK);
	ck_assert_ptr_nonnull(p);
	return p;
}

static void expect_refused(vd_input *in, const vd_request *r, const char *why)
{
	vd_prepared *p = prepare_one(in, r);

	ck_assert_int_ne(p->status, VD_OK);
	ck_assert_msg(p->error && strstr(p->error, why), "want '%s', got '%s'", why,
		      p->error ? p->error : "(none)");
	ck_assert_int_eq(p->n_items, 0);
	ck_assert_ptr_null(p->items);
	vd_prepared_free(p);
}

START_TEST(test_input_stage)
{
	vd_llm *llm = make_llm(model_dir[0], 0, 2048, 8, true);
	vd_engine *e = vd_llm_engine(llm);
	vd_input *in = vd_engine_input(e);
	vd_image_input img[3] = { { .kind = VD_IMAGE_PATH, .path = image_paths[0] },
				  { .kind = VD_IMAGE_PATH, .path = image_paths[1] },
				  { .kind = VD_IMAGE_PATH, .path = image_paths[2] } };
	static const int32_t ids[] = { 1, 3148, 1001, 99999 };
	collected c = { .n = 0 };
	vd_request r, bad;
	vd_prepared *ref;
	vd_output out;
	bool admitted = true;

	ck_assert_int_ge(vd_input_num_workers(in), 1);
	vd_request_init(&r);
	r.prompt = "USER: <image>\nWhat is this?\nASSISTANT:";
	r.images = img;
	r.n_images = 1;
	ref = prepare_one(in, &r);
	ck_assert_msg(ref->status == VD_OK, "%s", ref->error);
	ck_assert_int_eq(ref->n_items, 1);
	ck_assert_int_gt(ref->exp.n, ref->items[0].num_tokens);
	ck_assert_int_eq(ref->exp.n_ph, 1);
	for (int i = 0; i < 16; i++)
		ck_assert_int_eq(vd_input_submit(in, &r, i, collect, &c), VD_OK);
	while (__atomic_load_n(&c.n, __ATOMIC_SEQ_CST) < 16)
		usleep(1000);
	for (int i = 0; i < 16; i++) {
		vd_prepared *p = c.p[i];

		ck_assert_msg(p && p->status == VD_OK, "request %d", i);
		ck_assert_int_eq(p->exp.n, ref->exp.n);
		ck_assert_mem_eq(p->exp.ids, ref->exp.ids, (size_t)ref->exp.n * sizeof(int32_t));
		ck_assert_mem_eq(p->items[0].hash, ref->items[0].hash, sizeof(ref->items[0].hash));
		vd_prepared_free(p);
	}
	vd_prepared_free(ref);

	bad = r;
	bad.n_images = 3;
	expect_refused(in, &bad, "At most 2 image(s)");
	bad = r;
	bad.params.temperature = -1.0f;
	expect_refused(in, &bad, "temperature must be non-negative");
	bad = r;
	img[2].path = "/nonexistent/picture.png";
	bad.images = &img[2];
	expect_refused(in, &bad, "image 0: ");
	bad = r;
	bad.prompt = "USER: no image here\nASSISTANT:";
	expect_refused(in, &bad, "placeholder");
	bad = r;
	bad.prompt = NULL;
	bad.n_images = 0;
	bad.prompt_token_ids = ids;
	bad.n_prompt_token_ids = 4;
	expect_refused(in, &bad, "out of vocabulary");

	/* the engine refuses a failed request with its message */
	bad = r;
	bad.params.max_tokens = 0;
	ck_assert_int_eq(vd_engine_add(e, prepare_one(in, &bad), 7, &out, NULL, &admitted), VD_OK);
	ck_assert(!admitted);
	ck_assert_int_eq(out.status, VD_ERR_INVALID_ARG);
	ck_assert_ptr_nonnull(strstr(out.error, "max_tokens"));
	ck_assert_str_eq(out.request_id, "7");
	vd_output_clear(&out);
	vd_llm_destroy(llm);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("engine");
	TCase *tc = tcase_create("engine");
	SRunner *sr;
	int failed;

	setup();
	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, test_batch_equals_alone, 0, 2);
	tcase_add_test(tc, test_preemption_same_output);
	tcase_add_test(tc, test_prefix_cache);
	tcase_add_test(tc, test_n_and_seed);
	tcase_add_test(tc, test_admission_errors);
	tcase_add_test(tc, test_stop_strings);
	tcase_add_test(tc, test_prompt_logprobs);
	tcase_add_test(tc, test_sampling_paths_agree);
	tcase_add_test(tc, test_input_stage);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
