/* FP8 E4M3 KV cache against the compute-dtype cache, end to end on the tiny
 * checkpoints: the share of 64 greedy steps at which an engine with an FP8
 * cache picks the same token as one with the compute-dtype cache (f32 on
 * the CPU; bf16 on a GPU with VD_TEST_DTYPE=bfloat16), given the same
 * history.
 *
 * The history is the reference engine's own greedy continuation, teacher
 * forced: its 64 tokens are appended to the prompt's ids and both engines
 * score the whole sequence in one request (prompt_logprobs, whose top entry
 * is each position's greedy pick), so the two runs differ in the cache's
 * element type and nothing else (a free-running comparison would stop at
 * the first near-tie of these random-weight models, and a comparison of
 * decode steps against one prefill would count the kernels' rounding too).
 * Image placeholder runs in the expanded ids are shrunk back to one
 * placeholder token, as a user would write the prompt, and the images are
 * given again. The figures are printed; the share must be >= 95%. */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vllmd/llm.h"
#include "golden.h"

#define STEPS 64

typedef struct fp8_case {
	const char *model;   /* under models/ */
	const char *prompt;
	const char *image;   /* under models/images/, or NULL */
} fp8_case;

static const fp8_case cases[] = {
	{ "llava-tiny-a", "USER: <image>\nWhat is in this picture? Describe it.\nASSISTANT:", "wide.png" },
	{ "llava-tiny-a", "USER: Tell me a story about a cat and a dog.\nASSISTANT:", NULL },
	{ "llava-tiny-b", "USER: <image>\nWhat colour is the sky?\nASSISTANT:", "square.png" },
	{ "qwen2vl-tiny-a",
	  "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this.<|im_end|>\n"
	  "<|im_start|>assistant\n", "small.png" },
	{ "qwen2vl-tiny-b", "<|im_start|>user\nCount to ten.<|im_end|>\n<|im_start|>assistant\n",
	  NULL },
	{ "phi3v-tiny-a", "<|user|>\nName three rivers.<|end|>\n<|assistant|>\n", NULL },
};

static const char *data_dir(void)
{
	return getenv("VD_TEST_DATA") ? getenv("VD_TEST_DATA") : "tests/data";
}

static vd_llm *make_llm(const char *dir, const char *kv_dtype)
{
	vd_engine_args a;
	vd_llm *llm = NULL;

	vd_engine_args_init(&a);
	a.model = dir;
	a.plugin_dir = getenv("VD_PLUGIN_DIR");
	golden_engine_args(&a);
	a.kv_cache_dtype = kv_dtype;
	a.num_threads = 2;
	a.max_model_len = 384;
	a.kv_cache_memory = 64LL << 20;
	ck_assert_msg(vd_llm_create(&a, &llm) == VD_OK, "create %s (%s): %s", dir, kv_dtype,
		      vd_error_message());
	return llm;
}

/* The checkpoint's image placeholder id (-1 when it has none). */
static int32_t image_token(const char *dir)
{
	char path[4200], *text;
	FILE *f;
	long len;
	cJSON *j;
	int32_t id = -1;

	snprintf(path, sizeof(path), "%s/config.json", dir);
	f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	rewind(f);
	text = malloc((size_t)len + 1);
	ck_assert_ptr_nonnull(text);
	ck_assert_int_eq(fread(text, 1, (size_t)len, f), (size_t)len);
	text[len] = 0;
	fclose(f);
	j = cJSON_Parse(text);
	ck_assert_ptr_nonnull(j);
	for (const char *const *k = (const char *const[]){ "image_token_index", "image_token_id",
							     NULL };
	     *k; k++) {
		const cJSON *v = cJSON_GetObjectItem(j, *k);

		if (cJSON_IsNumber(v))
			id = (int32_t)v->valueint;
	}
	cJSON_Delete(j);
	free(text);
	return id;
}

/* The greedy pick at each of the last `steps` positions of ids (the last
 * one is the sampled token): the top prompt logprob entry there. */
static void score(vd_llm *llm, const int32_t *ids, int n, const vd_image_input *img,
		  int steps, int32_t *pick, const char *what)
{
	vd_request r;
	vd_output *o = NULL;

	vd_request_init(&r);
	r.prompt_token_ids = ids;
	r.n_prompt_token_ids = n;
	r.images = img;
	r.n_images = img ? 1 : 0;
	r.params.temperature = 0.0f;
	r.params.ignore_eos = true;
	r.params.max_tokens = 1;
	r.params.prompt_logprobs = 1;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	ck_assert_msg(o[0].status == VD_OK, "%s: %s", what, o[0].error);
	ck_assert_ptr_nonnull(o[0].prompt_logprobs);
	ck_assert_int_ge(o[0].n_prompt_tokens, steps - 1);
	for (int i = 0; i < steps - 1; i++) {
		const vd_position_logprobs *p =
			&o[0].prompt_logprobs[o[0].n_prompt_tokens - (steps - 1) + i];
		int best = 0;

		/* the entry of rank 1: the chosen token's own entry first, then
		 * the top one */
		ck_assert_int_ge(p->n, 1);
		for (int e = 1; e < p->n; e++)
			if (p->entries[e].rank < p->entries[best].rank)
				best = e;
		pick[i] = p->entries[best].token_id;
	}
	pick[steps - 1] = o[0].completions[0].token_ids[0];
	vd_outputs_free(o, 1);
}

START_TEST(test_fp8_agreement)
{
	int total = 0, agree = 0;

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const fp8_case *fc = &cases[c];
		char dir[4096], img_path[4200];
		vd_llm *ref = NULL, *f8 = NULL;
		vd_image_input img = { .kind = VD_IMAGE_PATH, .path = img_path };
		vd_request r;
		vd_output *o = NULL;
		int32_t *ids, ph, want[STEPS], got[STEPS];
		int n = 0, hits = 0, first_miss = -1, base;

		snprintf(dir, sizeof(dir), "%s/models/%s", data_dir(), fc->model);
		if (fc->image)
			snprintf(img_path, sizeof(img_path), "%s/models/images/%s", data_dir(),
				 fc->image);
		ref = make_llm(dir, "auto");
		vd_request_init(&r);
		r.prompt = fc->prompt;
		r.images = fc->image ? &img : NULL;
		r.n_images = fc->image ? 1 : 0;
		r.params.temperature = 0.0f;
		r.params.ignore_eos = true;
		r.params.max_tokens = STEPS;
		ck_assert_int_eq(vd_llm_generate(ref, &r, 1, &o), VD_OK);
		ck_assert_msg(o[0].status == VD_OK, "%s: %s", fc->model, o[0].error);
		ck_assert_int_eq(o[0].completions[0].n_tokens, STEPS);

		/* prompt ids with each placeholder run shrunk to one, then the
		 * continuation's first STEPS - 1 tokens */
		ph = image_token(dir);
		ids = malloc(sizeof(int32_t) * (size_t)(o[0].n_prompt_tokens + STEPS));
		ck_assert_ptr_nonnull(ids);
		for (int i = 0; i < o[0].n_prompt_tokens; i++) {
			int32_t t = o[0].prompt_token_ids[i];

			if (t == ph && n > 0 && ids[n - 1] == ph)
				continue;
			ids[n++] = t;
		}
		base = n;
		memcpy(ids + n, o[0].completions[0].token_ids, sizeof(int32_t) * (STEPS - 1));
		n += STEPS - 1;
		vd_outputs_free(o, 1);

		score(ref, ids, n, fc->image ? &img : NULL, STEPS, want, fc->model);
		vd_llm_destroy(ref);
		f8 = make_llm(dir, "fp8");
		score(f8, ids, n, fc->image ? &img : NULL, STEPS, got, fc->model);
		vd_llm_destroy(f8);
		for (int i = 0; i < STEPS; i++) {
			hits += got[i] == want[i];
			if (got[i] != want[i] && first_miss < 0)
				first_miss = i;
		}
		printf("fp8 kv %-15s %s image: %d of %d greedy steps agree with the %s cache "
		       "(first miss at step %d; prompt %d tokens)\n",
		       fc->model, fc->image ? "with" : "no", hits, STEPS,
		       golden_exact() ? "f32" : "bf16", first_miss, base);
		fflush(stdout);
		total += STEPS;
		agree += hits;
		free(ids);
	}
	printf("fp8 kv agreement: %d of %d steps (%.1f%%) on %s\n", agree, total,
	       100.0 * agree / total, golden_device());
	fflush(stdout);
	ck_assert_msg(agree * 100 >= total * 95, "FP8 agreement %d of %d is under 95%%", agree,
		      total);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kv_fp8");
	TCase *tc = tcase_create("agreement");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_fp8_agreement);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
