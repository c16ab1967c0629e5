/* FP8 E4M3 KV cache against the compute-dtype cache, end to end on the tiny
 * checkpoints: the share of 64 greedy steps at which the FP8 engine picks
 * the token the reference engine (auto cache: f32 on the CPU, bf16 on a GPU
 * with VD_TEST_DTYPE=bfloat16) picked, given the same history.
 *
 * The history is teacher-forced: the reference's 64 tokens are appended to
 * the prompt's ids and the FP8 engine scores them with prompt_logprobs, so
 * step i compares the two caches on the same i tokens (a free-running
 * comparison would stop at the first near-tie of these random-weight
 * models). Image placeholder runs in the expanded ids are shrunk back to one
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

START_TEST(test_fp8_agreement)
{
	int total = 0, agree = 0;

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const fp8_case *fc = &cases[c];
		char dir[4096], img_path[4200];
		vd_llm *ref = NULL, *f8 = NULL;
		vd_image_input img = { .kind = VD_IMAGE_PATH, .path = img_path };
		vd_request r;
		vd_output *o = NULL, *o8 = NULL;
		int32_t *ids, ph;
		int n = 0, hits = 0, first_miss = -1;

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
		vd_llm_destroy(ref);

		/* prompt ids with each placeholder run shrunk to one, then the
		 * reference's first STEPS - 1 tokens */
		ph = image_token(dir);
		ids = malloc(sizeof(int32_t) * (size_t)(o[0].n_prompt_tokens + STEPS));
		ck_assert_ptr_nonnull(ids);
		for (int i = 0; i < o[0].n_prompt_tokens; i++) {
			int32_t t = o[0].prompt_token_ids[i];

			if (t == ph && n > 0 && ids[n - 1] == ph)
				continue;
			ids[n++] = t;
		}
		int base = n;
		memcpy(ids + n, o[0].completions[0].token_ids, sizeof(int32_t) * (STEPS - 1));
		n += STEPS - 1;

		f8 = make_llm(dir, "fp8");
		vd_request_init(&r);
		r.prompt_token_ids = ids;
		r.n_prompt_token_ids = n;
		r.images = fc->image ? &img : NULL;
		r.n_images = fc->image ? 1 : 0;
		r.params.temperature = 0.0f;
		r.params.ignore_eos = true;
		r.params.max_tokens = 1;
		r.params.prompt_logprobs = 1;
		ck_assert_int_eq(vd_llm_generate(f8, &r, 1, &o8), VD_OK);
		ck_assert_msg(o8[0].status == VD_OK, "%s fp8: %s", fc->model, o8[0].error);
		ck_assert_ptr_nonnull(o8[0].prompt_logprobs);
		/* the expanded prompt of the FP8 run ends with the forced tokens */
		ck_assert_int_ge(o8[0].n_prompt_tokens, STEPS - 1);
		for (int i = 0; i < STEPS; i++) {
			bool same;

			if (i < STEPS - 1) {
				const vd_position_logprobs *p =
					&o8[0].prompt_logprobs[o8[0].n_prompt_tokens - (STEPS - 1) + i];

				ck_assert_int_ge(p->n, 1);
				ck_assert_int_eq(p->entries[0].token_id, o[0].completions[0].token_ids[i]);
				same = p->entries[0].rank == 1;
			} else {
				same = o8[0].completions[0].token_ids[0] ==
				       o[0].completions[0].token_ids[STEPS - 1];
			}
			hits += same;
			if (!same && first_miss < 0)
				first_miss = i;
		}
		printf("fp8 kv %-15s %s image: %d of %d greedy steps agree with the %s cache "
		       "(first miss at step %d; prompt %d tokens)\n",
		       fc->model, fc->image ? "with" : "no", hits, STEPS,
		       golden_exact() ? "f32" : "bf16", first_miss, base);
		fflush(stdout);
		total += STEPS;
		agree += hits;
		vd_outputs_free(o, 1);
		vd_outputs_free(o8, 1);
		vd_llm_destroy(f8);
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
