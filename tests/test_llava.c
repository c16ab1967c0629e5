/* Golden parity of the LLaVA family against transformers 5.17: for each tiny
 * checkpoint under tests/data/models and each case of its reference.json,
 * run the offline API (greedy, 12 tokens, top-5 logprobs) and require the
 * expanded prompt ids and every greedy token to be identical and every top-5
 * logprob to be within 2e-3 of the reference. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "vllmd/llm.h"
#include "golden.h"


static const char *models[] = { "llava-tiny-a", "llava-tiny-b" };

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

static void check_model(const char *name)
{
	const char *data = getenv("VD_TEST_DATA") ? getenv("VD_TEST_DATA") : "tests/data";
	char dir[4096], path[4200];
	vd_engine_args a;
	vd_llm *llm = NULL;
	cJSON *ref;
	const cJSON *cases, *c;
	int n_cases, ci = 0;
	vd_request *reqs;
	vd_image_input *imgs;
	char (*img_paths)[4200];
	vd_output *outs = NULL;
	double worst = 0.0;

	snprintf(dir, sizeof(dir), "%s/models/%s", data, name);
	snprintf(path, sizeof(path), "%s/reference.json", dir);
	{
		char *txt = slurp(path);

		ref = cJSON_Parse(txt);
		free(txt);
	}
	ck_assert_ptr_nonnull(ref);
	cases = cJSON_GetObjectItem(ref, "cases");
	n_cases = cJSON_GetArraySize(cases);
	ck_assert_int_ge(n_cases, 3);

	vd_engine_args_init(&a);
	a.model = dir;
	a.plugin_dir = getenv("VD_PLUGIN_DIR");
	golden_engine_args(&a);
	a.limit_images = 4;
	a.num_threads = 2;
	ck_assert_msg(vd_llm_create(&a, &llm) == VD_OK, "create %s: %s", name, vd_error_message());

	reqs = calloc((size_t)n_cases, sizeof(*reqs));
	imgs = calloc((size_t)n_cases * 4, sizeof(*imgs));
	img_paths = calloc((size_t)n_cases * 4, sizeof(*img_paths));
	ck_assert_ptr_nonnull(reqs);
	ck_assert_ptr_nonnull(imgs);
	ck_assert_ptr_nonnull(img_paths);
	cJSON_ArrayForEach(c, cases) {
		vd_request *r = &reqs[ci];
		const cJSON *im;
		int k = 0;

		vd_request_init(r);
		r->prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
		r->params.temperature = 0.0f;
		r->params.max_tokens = cJSON_GetObjectItem(ref, "steps")->valueint;
		r->params.ignore_eos = true;
		r->params.logprobs = cJSON_GetObjectItem(ref, "topk")->valueint;
		cJSON_ArrayForEach(im, cJSON_GetObjectItem(c, "images")) {
			vd_image_input *in = &imgs[ci * 4 + k];

			snprintf(img_paths[ci * 4 + k], sizeof(img_paths[0]), "%s/%s", dir, im->valuestring);
			in->kind = VD_IMAGE_PATH;
			in->path = img_paths[ci * 4 + k];
			k++;
		}
		r->images = &imgs[ci * 4];
		r->n_images = k;
		ci++;
	}
	ck_assert_int_eq(vd_llm_generate(llm, reqs, n_cases, &outs), VD_OK);

	ci = 0;
	cJSON_ArrayForEach(c, cases) {
		const vd_output *o = &outs[ci];
		const cJSON *exp = cJSON_GetObjectItem(c, "expanded_ids");
		const cJSON *steps = cJSON_GetObjectItem(c, "steps");
		const vd_completion *k;
		int i = 0;
		const cJSON *t;

		ck_assert_msg(o->status == VD_OK, "%s case %d: %s", name, ci, o->error);
		ck_assert_int_eq(o->n_prompt_tokens, cJSON_GetArraySize(exp));
		cJSON_ArrayForEach(t, exp) {
			ck_assert_msg(o->prompt_token_ids[i] == t->valueint,
				      "%s case %d: expanded id %d is %d, reference %d", name, ci, i,
				      o->prompt_token_ids[i], t->valueint);
			i++;
		}
		k = &o->completions[0];
		{
			char what[128];
			double d;

			snprintf(what, sizeof(what), "%s case %d", name, ci);
			d = golden_check_steps(what, k, steps);
			if (d > worst)
				worst = d;
		}
		ci++;
	}
	printf("%s: %d cases match transformers; max |dlogprob| = %.2e\n", name, n_cases, worst);
	vd_outputs_free(outs, n_cases);
	free(reqs);
	free(imgs);
	free(img_paths);
	vd_llm_destroy(llm);
	cJSON_Delete(ref);
}

START_TEST(test_parity)
{
	check_model(models[_i]);
}
END_TEST

START_TEST(test_too_many_images)
{
	const char *data = getenv("VD_TEST_DATA") ? getenv("VD_TEST_DATA") : "tests/data";
	char dir[4096], img[4200];
	vd_engine_args a;
	vd_llm *llm = NULL;
	vd_request r;
	vd_image_input in[2];
	vd_output *o = NULL;

	snprintf(dir, sizeof(dir), "%s/models/llava-tiny-a", data);
	snprintf(img, sizeof(img), "%s/models/images/small.png", data);
	vd_engine_args_init(&a);
	a.model = dir;
	a.plugin_dir = getenv("VD_PLUGIN_DIR");
	golden_engine_args(&a);
	a.limit_images = 1;
	ck_assert_int_eq(vd_llm_create(&a, &llm), VD_OK);
	vd_request_init(&r);
	r.prompt = "USER: <image>\n<image>\nHi\nASSISTANT:";
	in[0] = (vd_image_input){ .kind = VD_IMAGE_PATH, .path = img };
	in[1] = in[0];
	r.images = in;
	r.n_images = 2;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	ck_assert_int_eq(o[0].status, VD_ERR_INVALID_ARG);
	ck_assert_str_eq(o[0].error, "At most 1 image(s) may be provided in one prompt.");
	vd_outputs_free(o, 1);

	/* placeholder count must match the images */
	vd_request_init(&r);
	r.prompt = "USER: no image tag\nASSISTANT:";
	r.images = in;
	r.n_images = 1;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	ck_assert_int_eq(o[0].status, VD_ERR_INVALID_ARG);
	ck_assert_ptr_nonnull(strstr(o[0].error, "0 <image> placeholder(s)"));
	vd_outputs_free(o, 1);

	/* a missing image file names the path */
	vd_request_init(&r);
	r.prompt = "USER: <image>\nHi\nASSISTANT:";
	in[0].path = "/nonexistent/cat.png";
	r.images = in;
	r.n_images = 1;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	ck_assert_int_ne(o[0].status, VD_OK);
	ck_assert_ptr_nonnull(strstr(o[0].error, "/nonexistent/cat.png"));
	vd_outputs_free(o, 1);
	vd_llm_destroy(llm);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("llava");
	TCase *tc = tcase_create("golden");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, test_parity, 0, (int)(sizeof(models) / sizeof(models[0])));
	tcase_add_test(tc, test_too_many_images);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
