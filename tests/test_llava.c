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

#include "core/engine.h"
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

/* Decode steps replayed as step graphs (CUDA graphs, padded batches) give
 * what running every op gives: the same greedy tokens and, in f32, the same
 * logprobs up to the order of float sums. Nine requests of different prompt
 * and output lengths finish at different steps, so the decode batch shrinks
 * through several graph sizes and their padding. On the CPU the backend's
 * test mode (VD_CPU_STEP_GRAPHS=1) runs the same padded graph batches op by
 * op, so the engine's side of graphs is checked there too. */
static vd_output *run_graph_case(int eager)
{
	const char *data = getenv("VD_TEST_DATA") ? getenv("VD_TEST_DATA") : "tests/data";
	static char dir[4096], img[4200];
	static char prompts[9][160];
	vd_engine_args a;
	vd_llm *llm = NULL;
	vd_request r[9];
	vd_image_input in = { 0 };
	vd_output *o = NULL;

	snprintf(dir, sizeof(dir), "%s/models/llava-tiny-a", data);
	snprintf(img, sizeof(img), "%s/models/images/small.png", data);
	vd_engine_args_init(&a);
	a.model = dir;
	a.plugin_dir = getenv("VD_PLUGIN_DIR");
	a.device = golden_device();
	a.dtype = "float32";
	a.enforce_eager = eager;
	a.num_threads = 2;
	if (!eager)
		setenv("VD_CPU_STEP_GRAPHS", "1", 1);
	ck_assert_msg(vd_llm_create(&a, &llm) == VD_OK, "create: %s", vd_error_message());
	unsetenv("VD_CPU_STEP_GRAPHS");
	in = (vd_image_input){ .kind = VD_IMAGE_PATH, .path = img };
	for (int i = 0; i < 9; i++) {
		vd_request_init(&r[i]);
		snprintf(prompts[i], sizeof(prompts[i]), "USER: %s%.*s\nASSISTANT:",
			 i % 3 ? "<image>\n" : "", 1 + 7 * i, "describe the picture in a few words "
			 "and then a few more words about its colours and shapes please");
		r[i].prompt = prompts[i];
		r[i].images = i % 3 ? &in : NULL;
		r[i].n_images = i % 3 ? 1 : 0;
		r[i].params.temperature = 0.0f;
		r[i].params.ignore_eos = true;
		r[i].params.max_tokens = 3 + 4 * i;
		r[i].params.logprobs = 0;
	}
	ck_assert_int_eq(vd_llm_generate(llm, r, 9, &o), VD_OK);
	{
		vd_engine_stats st;

		vd_engine_get_stats(vd_llm_engine(llm), &st);
		/* 9 sequences, then fewer as they finish: most steps decode only */
		if (eager)
			ck_assert_int_eq(st.graph_steps, 0);
		else
			ck_assert_int_gt(st.graph_steps, 20);
	}
	vd_llm_destroy(llm);
	return o;
}

START_TEST(test_graphs_match_eager)
{
	vd_output *g = run_graph_case(0), *e = run_graph_case(1);
	double worst = 0.0;

	for (int i = 0; i < 9; i++) {
		const vd_completion *kg = &g[i].completions[0], *ke = &e[i].completions[0];
		double d = fabs(kg->cumulative_logprob - ke->cumulative_logprob);

		ck_assert_msg(g[i].status == VD_OK && e[i].status == VD_OK, "request %d failed", i);
		ck_assert_int_eq(kg->n_tokens, 3 + 4 * i);
		ck_assert_int_eq(ke->n_tokens, kg->n_tokens);
		for (int t = 0; t < kg->n_tokens; t++)
			ck_assert_msg(kg->token_ids[t] == ke->token_ids[t],
				      "request %d token %d: %d with graphs, %d without", i, t,
				      kg->token_ids[t], ke->token_ids[t]);
		ck_assert_msg(d < 1e-3 * kg->n_tokens, "request %d: cumulative logprob %.6f vs %.6f",
			      i, kg->cumulative_logprob, ke->cumulative_logprob);
		if (d > worst)
			worst = d;
	}
	printf("step graphs vs op by op on %s: same tokens, max |d cumulative logprob| = %.2e\n",
	       golden_device(), worst);
	vd_outputs_free(g, 9);
	vd_outputs_free(e, 9);
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
	tcase_add_test(tc, test_graphs_match_eager);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
