/* Golden parity of the Phi-3.5-vision family against transformers 5.17 (CLIP
 * + Phi3ForCausalLM with longrope, and the HD-transform glue of
 * tests/gen/phi3v_reference.py): for each tiny checkpoint and each case of
 * its reference.json, run the offline API (greedy, 12 tokens, top-5
 * logprobs) and require the expanded ids (vLLM's 32044 form), the image
 * token counts, every greedy token and every top-5 logprob (within 2e-3) to
 * match, on the short and the long rope factors. Then the prompt-id path,
 * the num_crops override and the <|image_N|> error cases. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "vllmd/llm.h"
#include "golden.h"

#define MAX_IMG 4
#define IMAGE_TOKEN 32044

static const char *models[] = { "phi3v-tiny-a", "phi3v-tiny-b" };

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	long n;
	char *buf;

	ck_assert_msg(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static const char *data_dir(void)
{
	return getenv("VD_TEST_DATA") ? getenv("VD_TEST_DATA") : "tests/data";
}

static cJSON *load_ref(const char *dir)
{
	char path[4200];
	char *txt;
	cJSON *ref;

	snprintf(path, sizeof(path), "%s/reference.json", dir);
	txt = slurp(path);
	ref = cJSON_Parse(txt);
	free(txt);
	ck_assert_ptr_nonnull(ref);
	return ref;
}

static vd_llm *open_model(const char *dir)
{
	vd_engine_args a;
	vd_llm *llm = NULL;

	vd_engine_args_init(&a);
	a.model = dir;
	a.plugin_dir = getenv("VD_PLUGIN_DIR");
	golden_engine_args(&a);
	a.limit_images = MAX_IMG;
	a.num_threads = 2;
	ck_assert_msg(vd_llm_create(&a, &llm) == VD_OK, "create %s: %s", dir, vd_error_message());
	return llm;
}

/* Image inputs of a case; paths are stored in paths[MAX_IMG]. */
static int case_images(const char *dir, const cJSON *c, vd_image_input *in, char (*paths)[4200])
{
	const cJSON *im;
	int k = 0;

	cJSON_ArrayForEach(im, cJSON_GetObjectItem(c, "images")) {
		ck_assert_int_lt(k, MAX_IMG);
		snprintf(paths[k], sizeof(paths[0]), "%s/%s", dir, im->valuestring);
		memset(&in[k], 0, sizeof(in[k]));
		in[k].kind = VD_IMAGE_PATH;
		in[k].path = paths[k];
		k++;
	}
	return k;
}

/* (hc*wc + 1) g^2 + 1 + (hc + 1) g, g = patch grid / 2 (models.md §2.2). */
static int formula(int H, int W, int S, int G)
{
	int g = G / 2;

	return (H / S * (W / S) + 1) * g * g + 1 + (H / S + 1) * g;
}

/* The runs of the placeholder in ids must be the images' token counts. */
static void check_runs(const char *name, int ci, const vd_output *o, const cJSON *ref,
		       const cJSON *c)
{
	const cJSON *sizes = cJSON_GetObjectItem(c, "image_sizes");
	const cJSON *counts = cJSON_GetObjectItem(c, "image_tokens");
	int S = cJSON_GetObjectItem(ref, "tile_size")->valueint;
	int G = cJSON_GetObjectItem(ref, "patch_grid")->valueint;
	int img = 0;

	for (int i = 0; i < o->n_prompt_tokens;) {
		int run = 0;

		if (o->prompt_token_ids[i] != IMAGE_TOKEN) {
			i++;
			continue;
		}
		while (i + run < o->n_prompt_tokens && o->prompt_token_ids[i + run] == IMAGE_TOKEN)
			run++;
		ck_assert_msg(img < cJSON_GetArraySize(counts), "%s case %d: extra image run", name, ci);
		ck_assert_int_eq(run, cJSON_GetArrayItem(counts, img)->valueint);
		ck_assert_int_eq(run, formula(cJSON_GetArrayItem(cJSON_GetArrayItem(sizes, img), 0)->valueint,
					      cJSON_GetArrayItem(cJSON_GetArrayItem(sizes, img), 1)->valueint,
					      S, G));
		img++;
		i += run;
	}
	ck_assert_int_eq(img, cJSON_GetArraySize(cJSON_GetObjectItem(c, "images")));
}

/* Greedy tokens and top-5 logprobs against the reference (golden.h);
 * returns the worst logprob difference. */
static double check_steps(const char *name, int ci, const vd_output *o, const cJSON *c)
{
	char what[128];

	snprintf(what, sizeof(what), "%s case %d", name, ci);
	return golden_check_steps(what, &o->completions[0], cJSON_GetObjectItem(c, "steps"));
}

static void check_model(const char *name)
{
	char dir[4096];
	vd_llm *llm;
	cJSON *ref;
	const cJSON *cases, *c;
	int n_cases, ci = 0, n_long = 0;
	vd_request *reqs;
	vd_image_input *imgs;
	char (*paths)[4200];
	vd_output *outs = NULL;
	double worst = 0.0;

	snprintf(dir, sizeof(dir), "%s/models/%s", data_dir(), name);
	ref = load_ref(dir);
	cases = cJSON_GetObjectItem(ref, "cases");
	n_cases = cJSON_GetArraySize(cases);
	ck_assert_int_ge(n_cases, 3);
	llm = open_model(dir);

	reqs = calloc((size_t)n_cases, sizeof(*reqs));
	imgs = calloc((size_t)n_cases * MAX_IMG, sizeof(*imgs));
	paths = calloc((size_t)n_cases * MAX_IMG, sizeof(*paths));
	ck_assert_ptr_nonnull(reqs);
	ck_assert_ptr_nonnull(imgs);
	ck_assert_ptr_nonnull(paths);
	cJSON_ArrayForEach(c, cases) {
		vd_request *r = &reqs[ci];

		ck_assert_msg(!cJSON_GetObjectItem(c, "error"), "%s case %d has no reference", name, ci);
		vd_request_init(r);
		r->prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
		r->params.temperature = 0.0f;
		r->params.max_tokens = cJSON_GetObjectItem(ref, "steps")->valueint;
		r->params.ignore_eos = true;
		r->params.logprobs = cJSON_GetObjectItem(ref, "topk")->valueint;
		r->images = &imgs[ci * MAX_IMG];
		r->n_images = case_images(dir, c, &imgs[ci * MAX_IMG], &paths[ci * MAX_IMG]);
		n_long += !strcmp(cJSON_GetObjectItem(c, "rope_regime")->valuestring, "long");
		ci++;
	}
	ck_assert_msg(n_long >= 1, "%s: no case on the long rope factors", name);
	ck_assert_int_eq(vd_llm_generate(llm, reqs, n_cases, &outs), VD_OK);

	ci = 0;
	cJSON_ArrayForEach(c, cases) {
		const vd_output *o = &outs[ci];
		const cJSON *exp = cJSON_GetObjectItem(c, "expanded_ids_vllm"), *t;
		int i = 0;

		ck_assert_msg(o->status == VD_OK, "%s case %d: %s", name, ci, o->error);
		ck_assert_int_eq(o->n_prompt_tokens, cJSON_GetArraySize(exp));
		cJSON_ArrayForEach(t, exp) {
			ck_assert_msg(o->prompt_token_ids[i] == t->valueint,
				      "%s case %d: expanded id %d is %d, reference %d", name, ci, i,
				      o->prompt_token_ids[i], t->valueint);
			i++;
		}
		check_runs(name, ci, o, ref, c);
		{
			double w = check_steps(name, ci, o, c);

			if (w > worst)
				worst = w;
		}
		ci++;
	}
	printf("%s: %d cases (%d on long rope) match transformers; max |dlogprob| = %.2e\n",
	       name, n_cases, n_long, worst);
	vd_outputs_free(outs, n_cases);
	free(reqs);
	free(imgs);
	free(paths);
	vd_llm_destroy(llm);
	cJSON_Delete(ref);
}

START_TEST(test_parity)
{
	check_model(models[_i]);
}
END_TEST

/* The expanded ids given back as prompt_token_ids (full runs of 32044, and
 * runs collapsed to one token per image) give the same prompt and tokens. */
START_TEST(test_prompt_ids)
{
	char dir[4096], paths[MAX_IMG][4200];
	vd_image_input in[MAX_IMG];
	vd_request r[2];
	vd_output *o = NULL;
	const cJSON *c, *exp, *t;
	int32_t *full, *collapsed;
	int n = 0, nc = 0, n_img;
	vd_llm *llm;
	cJSON *ref;

	snprintf(dir, sizeof(dir), "%s/models/phi3v-tiny-a", data_dir());
	ref = load_ref(dir);
	c = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "cases"), 2); /* two images */
	exp = cJSON_GetObjectItem(c, "expanded_ids_vllm");
	full = malloc((size_t)cJSON_GetArraySize(exp) * sizeof(*full));
	collapsed = malloc((size_t)cJSON_GetArraySize(exp) * sizeof(*collapsed));
	ck_assert_ptr_nonnull(full);
	ck_assert_ptr_nonnull(collapsed);
	cJSON_ArrayForEach(t, exp) {
		full[n++] = t->valueint;
		if (t->valueint != IMAGE_TOKEN || collapsed[nc - 1] != IMAGE_TOKEN)
			collapsed[nc++] = t->valueint;
	}
	n_img = case_images(dir, c, in, paths);
	ck_assert_int_eq(n_img, 2);
	llm = open_model(dir);
	for (int k = 0; k < 2; k++) {
		vd_request_init(&r[k]);
		r[k].prompt_token_ids = k ? collapsed : full;
		r[k].n_prompt_token_ids = k ? nc : n;
		r[k].images = in;
		r[k].n_images = n_img;
		r[k].params.temperature = 0.0f;
		r[k].params.max_tokens = cJSON_GetObjectItem(ref, "steps")->valueint;
		r[k].params.ignore_eos = true;
		r[k].params.logprobs = cJSON_GetObjectItem(ref, "topk")->valueint;
	}
	ck_assert_int_eq(vd_llm_generate(llm, r, 2, &o), VD_OK);
	for (int k = 0; k < 2; k++) {
		ck_assert_msg(o[k].status == VD_OK, "ids request %d: %s", k, o[k].error);
		ck_assert_int_eq(o[k].n_prompt_tokens, n);
		ck_assert_mem_eq(o[k].prompt_token_ids, full, (size_t)n * sizeof(*full));
		check_steps("phi3v-tiny-a ids", 2, &o[k], c);
	}
	vd_outputs_free(o, 2);

	/* a run that fits no image */
	vd_request_init(&r[0]);
	r[0].prompt_token_ids = full;
	r[0].n_prompt_token_ids = n;
	r[0].images = in;
	r[0].n_images = 1;
	ck_assert_int_eq(vd_llm_generate(llm, r, 1, &o), VD_OK);
	ck_assert_int_eq(o[0].status, VD_ERR_INVALID_ARG);
	ck_assert_ptr_nonnull(strstr(o[0].error, "image token"));
	vd_outputs_free(o, 1);
	vd_llm_destroy(llm);
	free(full);
	free(collapsed);
	cJSON_Delete(ref);
}
END_TEST

/* mm_processor_kwargs num_crops changes the HD layout: a 150x100 image with
 * one crop is a single tile (hc = wc = 1). */
START_TEST(test_num_crops)
{
	char dir[4096], paths[MAX_IMG][4200];
	vd_image_input in[MAX_IMG];
	vd_request r;
	vd_output *o = NULL;
	const cJSON *c;
	vd_llm *llm;
	cJSON *ref;
	int runs = 0, G, S;

	snprintf(dir, sizeof(dir), "%s/models/phi3v-tiny-a", data_dir());
	ref = load_ref(dir);
	G = cJSON_GetObjectItem(ref, "patch_grid")->valueint;
	S = cJSON_GetObjectItem(ref, "tile_size")->valueint;
	c = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "cases"), 0);
	llm = open_model(dir);
	vd_request_init(&r);
	r.prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
	r.images = in;
	r.n_images = case_images(dir, c, in, paths);
	r.num_crops = 1;
	r.params.max_tokens = 1;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	ck_assert_msg(o[0].status == VD_OK, "%s", o[0].error);
	for (int i = 0; i < o[0].n_prompt_tokens; i++)
		runs += o[0].prompt_token_ids[i] == IMAGE_TOKEN;
	ck_assert_int_eq(runs, formula(S, S, S, G));
	ck_assert_int_eq(o[0].n_prompt_tokens,
			 cJSON_GetArraySize(cJSON_GetObjectItem(c, "expanded_ids_vllm")) -
				 cJSON_GetArrayItem(cJSON_GetObjectItem(c, "image_tokens"), 0)->valueint +
				 runs);
	vd_outputs_free(o, 1);
	vd_llm_destroy(llm);
	cJSON_Delete(ref);
}
END_TEST

/* <|image_N|> tags: 1..n in order, as many as images. */
START_TEST(test_tag_errors)
{
	static const struct {
		const char *prompt;
		int n_images;
		const char *msg;
	} bad[] = {
		{ "<|user|>\n<|image_1|>\n<|image_3|>\nHi<|end|>\n<|assistant|>\n", 2,
		  "tags must be <|image_1|>, <|image_2|>, ... in order" },
		{ "<|user|>\n<|image_2|>\n<|image_1|>\nHi<|end|>\n<|assistant|>\n", 2,
		  "tag 1 of the prompt is <|image_2|>" },
		{ "<|user|>\n<|image_1|>\n<|image_2|>\nHi<|end|>\n<|assistant|>\n", 1,
		  "2 <|image_N|> tag(s) but 1 image(s)" },
		{ "<|user|>\nHi<|end|>\n<|assistant|>\n", 1, "0 <|image_N|> tag(s) but 1 image(s)" },
	};
	char dir[4096], img[4200];
	vd_image_input in[2];
	vd_request r;
	vd_output *o = NULL;
	vd_llm *llm;

	snprintf(dir, sizeof(dir), "%s/models/phi3v-tiny-a", data_dir());
	snprintf(img, sizeof(img), "%s/models/images/img_56x56.png", data_dir());
	memset(in, 0, sizeof(in));
	in[0].kind = VD_IMAGE_PATH;
	in[0].path = img;
	in[1] = in[0];
	llm = open_model(dir);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vd_request_init(&r);
		r.prompt = bad[i].prompt;
		r.images = in;
		r.n_images = bad[i].n_images;
		ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
		ck_assert_int_eq(o[0].status, VD_ERR_INVALID_ARG);
		ck_assert_msg(strstr(o[0].error, bad[i].msg), "prompt %zu: error '%s'", i, o[0].error);
		vd_outputs_free(o, 1);
	}
	vd_llm_destroy(llm);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("phi3v");
	TCase *tc = tcase_create("golden");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, test_parity, 0, (int)(sizeof(models) / sizeof(models[0])));
	tcase_add_test(tc, test_prompt_ids);
	tcase_add_test(tc, test_num_crops);
	tcase_add_test(tc, test_tag_errors);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
