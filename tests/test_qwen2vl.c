/* Golden parity of the Qwen2-VL family against transformers 5.17 on the tiny
 * checkpoints under tests/data/models/qwen2vl-tiny-{a,b}: the family's own
 * expansion (ids, image grids, 3-D M-RoPE positions and delta) and vision
 * tower + merger against reference.json / stages.safetensors, then the
 * offline API (greedy, 12 tokens, top-5 logprobs within 2e-3), smart_resize
 * with per-request pixel limits, the
 * precomputed-embeddings path, its shape errors, and batched == single. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/expansion.h"
#include "core/mm.h"
#include "core/registry.h"
#include "kernels/backend.h"
#include "vllmd/llm.h"
#include "golden.h"

#define MAX_IMG 4

static const char *models[] = { "qwen2vl-tiny-a", "qwen2vl-tiny-b" };

static const char *data_dir(void)
{
	return getenv("VD_TEST_DATA") ? getenv("VD_TEST_DATA") : "tests/data";
}

static cJSON *load_ref(const char *dir)
{
	char path[4300];
	FILE *f;
	long n;
	char *buf;
	cJSON *ref;

	snprintf(path, sizeof(path), "%s/reference.json", dir);
	f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	ref = cJSON_Parse(buf);
	free(buf);
	ck_assert_ptr_nonnull(ref);
	return ref;
}

static vd_llm *make_llm(const char *dir)
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

/* A request for case c: greedy, the reference's steps and top-k. */
static void fill_request(const char *dir, const cJSON *ref, const cJSON *c, vd_request *r,
			 vd_image_input *imgs, char (*paths)[4300])
{
	const cJSON *im;
	int k = 0;

	vd_request_init(r);
	r->prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
	r->params.temperature = 0.0f;
	r->params.max_tokens = cJSON_GetObjectItem(ref, "steps")->valueint;
	r->params.ignore_eos = true;
	r->params.logprobs = cJSON_GetObjectItem(ref, "topk")->valueint;
	cJSON_ArrayForEach(im, cJSON_GetObjectItem(c, "images")) {
		ck_assert_int_lt(k, MAX_IMG);
		snprintf(paths[k], sizeof(paths[0]), "%s/%s", dir, im->valuestring);
		imgs[k] = (vd_image_input){ .kind = VD_IMAGE_PATH, .path = paths[k] };
		k++;
	}
	r->images = imgs;
	r->n_images = k;
}

/* Greedy tokens and top-k logprobs against the reference (golden.h);
 * returns the largest logprob difference. */
static double check_steps(const char *what, const cJSON *c, const vd_output *o)
{
	ck_assert_msg(o->status == VD_OK, "%s: %s", what, o->error);
	return golden_check_steps(what, &o->completions[0], cJSON_GetObjectItem(c, "steps"));
}

/* ------------------------------------------------- the family, directly */

typedef struct fam_env {
	vd_backend *be;
	vd_json *config, *preproc;
	vd_weights *w;
	vd_tokenizer *tok;
	vd_registry *reg;
	const vd_family *fam;
	void *state;
	vd_decoder_spec spec;
	vd_mm_limits limits;
} fam_env;

static void fam_open(fam_env *f, const char *dir)
{
	char p1[4300], p2[4300];
	vd_model_ctx ctx;

	memset(f, 0, sizeof(*f));
	ck_assert_msg(vd_backend_create(golden_device(), 2, &f->be) == VD_OK, "%s",
		      vd_error_message());
	ck_assert_msg(vd_backend_set_dtype(f->be, golden_dtype(), NULL) == VD_OK, "%s",
		      vd_error_message());
	snprintf(p1, sizeof(p1), "%s/config.json", dir);
	ck_assert_int_eq(vd_json_load_file(p1, &f->config), VD_OK);
	snprintf(p1, sizeof(p1), "%s/preprocessor_config.json", dir);
	ck_assert_int_eq(vd_json_load_file(p1, &f->preproc), VD_OK);
	ck_assert_int_eq(vd_weights_open_dir(dir, &f->w), VD_OK);
	snprintf(p1, sizeof(p1), "%s/tokenizer.json", dir);
	snprintf(p2, sizeof(p2), "%s/tokenizer_config.json", dir);
	ck_assert_msg(vd_tokenizer_load(p1, p2, &f->tok) == VD_OK, "%s", vd_error_message());
	ck_assert_int_eq(vd_registry_create(getenv("VD_PLUGIN_DIR"), &f->reg), VD_OK);
	ck_assert_msg(vd_registry_find(f->reg, vd_json_get(f->config, "architectures"), &f->fam) ==
		      VD_OK, "%s", vd_error_message());
	ck_assert_str_eq(f->fam->name, "qwen2vl");
	ctx = (vd_model_ctx){ .struct_size = sizeof(ctx), .model_dir = dir, .config = f->config,
			      .preprocessor = f->preproc, .weights = f->w, .tokenizer = f->tok,
			      .backend = f->be };
	f->limits.struct_size = sizeof(f->limits);
	ck_assert_msg(f->fam->create(vd_host_api_get(), &ctx, &f->state, &f->spec, &f->limits) ==
		      VD_OK, "%s", vd_error_message());
}

static void fam_close(fam_env *f)
{
	f->fam->destroy(f->state);
	vd_registry_destroy(f->reg);
	vd_tokenizer_destroy(f->tok);
	vd_weights_close(f->w);
	vd_json_free(f->config);
	vd_json_free(f->preproc);
	vd_backend_destroy(f->be);
}

static void expect_ints(const char *what, const cJSON *want, const int32_t *got, int64_t n)
{
	const cJSON *t;
	int64_t i = 0;

	ck_assert_int_eq(cJSON_GetArraySize(want), n);
	cJSON_ArrayForEach(t, want) {
		ck_assert_msg(got[i] == t->valueint, "%s[%lld] is %d, reference %d", what,
			      (long long)i, got[i], t->valueint);
		i++;
	}
}

/* Largest |a - b| over n floats of a backend tensor and a stored one. */
static double max_diff(vd_backend *be, const vd_tensor *got, const vd_weights *st,
		       const char *name, int64_t rows, int64_t cols)
{
	vd_tensor ref;
	float *host = malloc(sizeof(float) * (size_t)(rows * cols));
	double worst = 0.0;

	ck_assert_ptr_nonnull(host);
	ck_assert_int_eq(vd_weights_get(st, name, &ref), VD_OK);
	ck_assert_int_eq(ref.dtype, VD_DTYPE_F32);
	ck_assert_int_eq(ref.shape[0], rows);
	ck_assert_int_eq(ref.shape[1], cols);
	ck_assert_int_eq(got->shape[0], rows);
	ck_assert_int_eq(got->shape[1], cols);
	ck_assert_int_eq(be->ops->download(be, got, host), VD_OK);
	for (int64_t i = 0; i < rows * cols; i++)
		if (fabs(host[i] - ((const float *)ref.data)[i]) > worst)
			worst = fabs(host[i] - ((const float *)ref.data)[i]);
	free(host);
	return worst;
}

START_TEST(test_expand_and_vision)
{
	const char *name = models[_i];
	char dir[4096], paths[MAX_IMG][4300], sp[4300];
	cJSON *ref;
	const cJSON *c;
	fam_env f;
	int ci = 0;

	snprintf(dir, sizeof(dir), "%s/models/%s", data_dir(), name);
	ref = load_ref(dir);
	fam_open(&f, dir);
	ck_assert_int_eq(f.spec.rope_type, VD_ROPE_MROPE);
	ck_assert_int_eq(f.limits.embed_dim, f.spec.hidden_size);
	ck_assert_int_ge(f.limits.max_tokens_per_image, 64);
	cJSON_ArrayForEach(c, cJSON_GetObjectItem(ref, "cases")) {
		vd_mm_item items[MAX_IMG];
		const vd_mm_item *ptrs[MAX_IMG];
		vd_mm_kwargs kw = { .struct_size = sizeof(kw), .min_pixels = -1, .max_pixels = -1,
				    .num_crops = -1 };
		const cJSON *im, *grids = cJSON_GetObjectItem(c, "image_grid_thw");
		const cJSON *pos = cJSON_GetObjectItem(c, "mrope_positions");
		vd_expansion e;
		vd_prompt_in in;
		char what[128];
		int k = 0;

		cJSON_ArrayForEach(im, cJSON_GetObjectItem(c, "images")) {
			vd_image_input ii = { .kind = VD_IMAGE_PATH, .path = paths[k] };

			snprintf(paths[k], sizeof(paths[0]), "%s/%s", dir, im->valuestring);
			ck_assert_msg(vd_mm_prepare(f.fam, f.state, &ii, &kw, 0, &items[k]) == VD_OK,
				      "%s", vd_error_message());
			for (int d = 0; d < 3; d++)
				ck_assert_int_eq(items[k].meta[d],
						 cJSON_GetArrayItem(cJSON_GetArrayItem(grids, k), d)->valueint);
			ptrs[k] = &items[k];
			k++;
		}
		vd_expansion_init(&e);
		in = (vd_prompt_in){ .struct_size = sizeof(in),
				     .text = cJSON_GetObjectItem(c, "prompt")->valuestring,
				     .items = ptrs, .n_items = k, .add_special_tokens = true };
		ck_assert_msg(f.fam->expand(f.state, &in, &e) == VD_OK, "%s", vd_error_message());
		ck_assert_int_eq(vd_expansion_validate(&e, ptrs, k), VD_OK);
		snprintf(what, sizeof(what), "%s case %d ids", name, ci);
		expect_ints(what, cJSON_GetObjectItem(c, "expanded_ids"), e.ids, e.n);
		ck_assert_int_eq(e.pos_ndim, 3);
		ck_assert_ptr_nonnull(e.positions);
		for (int a = 0; a < 3; a++) {
			snprintf(what, sizeof(what), "%s case %d positions[%d]", name, ci, a);
			expect_ints(what, cJSON_GetArrayItem(pos, a), e.positions + a * e.n, e.n);
		}
		ck_assert_int_eq(e.pos_delta, cJSON_GetObjectItem(c, "rope_delta")->valueint);

		if (ci == 0) {
			/* pixels, vision blocks and merger against the stages */
			vd_weights *st;
			vd_tensor px, feats = { 0 }, emb = { 0 };
			double dpx = 0.0, dblk, dmrg;
			int64_t N = items[0].pixels.shape[0], D = items[0].pixels.shape[1];

			snprintf(sp, sizeof(sp), "%s/stages.safetensors", dir);
			ck_assert_int_eq(vd_weights_open_file(sp, &st), VD_OK);
			ck_assert_int_eq(vd_weights_get(st, "pixel_values", &px), VD_OK);
			ck_assert_int_eq(px.shape[0], N);
			ck_assert_int_eq(px.shape[1], D);
			for (int64_t i = 0; i < N * D; i++) {
				double d = fabs(((float *)items[0].pixels.data)[i] -
						((const float *)px.data)[i]);
				dpx = d > dpx ? d : dpx;
			}
			ck_assert_int_eq(f.fam->vision_tower(f.state, ptrs, 1, &feats), VD_OK);
			dblk = max_diff(f.be, &feats, st, "vision_blocks_out", N, feats.shape[1]);
			ck_assert_int_eq(f.fam->projector(f.state, ptrs, 1, &feats, &emb), VD_OK);
			dmrg = max_diff(f.be, &emb, st, "vision_merger_out", items[0].num_tokens,
					f.spec.hidden_size);
			printf("%s: pixels max diff %.4f, vision blocks %.2e, merger %.2e\n", name,
			       dpx, dblk, dmrg);
			/* PIL-path resampling may differ by about one uint8 step */
			ck_assert_double_le(dpx, 0.035);
			ck_assert_double_le(dmrg, 0.05);
			f.be->ops->free(f.be, &feats);
			f.be->ops->free(f.be, &emb);
			vd_weights_close(st);
		}
		vd_expansion_free(&e);
		for (int i = 0; i < k; i++)
			vd_mm_item_free(&items[i]);
		ci++;
	}
	ck_assert_int_ge(ci, 6);
	fam_close(&f);
	cJSON_Delete(ref);
}
END_TEST

/* smart_resize through per-request min/max_pixels (values checked with
 * transformers 5.17, models.md §2.3), and the aspect-ratio refusal. */
START_TEST(test_smart_resize)
{
	static const int cases[][4] = { { 100, 150, 112, 140 }, { 28, 28, 56, 56 },
					{ 500, 20, 504, 28 }, { 1000, 1000, 980, 980 },
					{ 333, 777, 336, 784 }, { 70, 42, 56, 56 } };
	char dir[4096];
	fam_env f;
	vd_mm_kwargs kw = { .struct_size = sizeof(kw), .min_pixels = 56 * 56,
			    .max_pixels = 28 * 28 * 1280, .num_crops = -1 };
	uint8_t *rgb = calloc((size_t)1000 * 1000 * 3, 1);
	vd_mm_item it;

	ck_assert_ptr_nonnull(rgb);
	snprintf(dir, sizeof(dir), "%s/models/%s", data_dir(), models[0]);
	fam_open(&f, dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		vd_image_input in = { .kind = VD_IMAGE_RGB, .rgb = rgb, .height = cases[i][0],
				      .width = cases[i][1] };

		ck_assert_msg(vd_mm_prepare(f.fam, f.state, &in, &kw, 0, &it) == VD_OK, "%s",
			      vd_error_message());
		ck_assert_int_eq(it.meta[0], 1);
		ck_assert_int_eq(it.meta[1], cases[i][2] / 14);
		ck_assert_int_eq(it.meta[2], cases[i][3] / 14);
		ck_assert_int_eq(it.num_tokens, cases[i][2] * cases[i][3] / (28 * 28));
		ck_assert_int_eq(it.pixels.shape[0], (int64_t)cases[i][2] * cases[i][3] / (14 * 14));
		ck_assert_int_eq(it.pixels.shape[1], 3 * 2 * 14 * 14);
		vd_mm_item_free(&it);
	}
	/* a per-request max_pixels overrides the fixture's 28*28*64 */
	{
		vd_image_input in = { .kind = VD_IMAGE_RGB, .rgb = rgb, .height = 300, .width = 400 };
		vd_mm_kwargs small = { .struct_size = sizeof(small), .min_pixels = -1,
				       .max_pixels = 28 * 28 * 16, .num_crops = -1 };

		ck_assert_int_eq(vd_mm_prepare(f.fam, f.state, &in, NULL, 0, &it), VD_OK);
		ck_assert_int_eq(it.meta[1], 12);
		ck_assert_int_eq(it.meta[2], 18);
		vd_mm_item_free(&it);
		ck_assert_int_eq(vd_mm_prepare(f.fam, f.state, &in, &small, 0, &it), VD_OK);
		ck_assert_int_eq(it.meta[1], 6);
		ck_assert_int_eq(it.meta[2], 8);
		ck_assert_int_eq(it.num_tokens, 12);
		vd_mm_item_free(&it);
	}
	{
		vd_image_input in = { .kind = VD_IMAGE_RGB, .rgb = rgb, .height = 2, .width = 500 };

		ck_assert_int_eq(vd_mm_prepare(f.fam, f.state, &in, &kw, 0, &it), VD_ERR_INVALID_ARG);
		ck_assert_ptr_nonnull(strstr(vd_error_message(), "aspect ratio"));
		vd_mm_item_free(&it);
	}
	{
		/* per-request pixels past 16384 tokens: refused, not allocated */
		vd_image_input in = { .kind = VD_IMAGE_RGB, .rgb = rgb, .height = 100, .width = 100 };
		vd_mm_kwargs huge = { .struct_size = sizeof(huge), .min_pixels = 28LL * 28 * 20000,
				      .max_pixels = 28LL * 28 * 30000, .num_crops = -1 };

		ck_assert_int_eq(vd_mm_prepare(f.fam, f.state, &in, &huge, 0, &it), VD_ERR_INVALID_ARG);
		ck_assert_ptr_nonnull(strstr(vd_error_message(), "16384 tokens"));
		vd_mm_item_free(&it);
	}
	fam_close(&f);
	free(rgb);
}
END_TEST

/* ------------------------------------------------------ the offline API */

START_TEST(test_parity_and_batching)
{
	const char *name = models[_i];
	char dir[4096], (*paths)[MAX_IMG][4300];
	cJSON *ref;
	const cJSON *cases, *c;
	int n_cases, ci = 0;
	vd_request *reqs;
	vd_image_input (*imgs)[MAX_IMG];
	vd_output *outs = NULL;
	vd_llm *llm;
	double worst = 0.0;

	snprintf(dir, sizeof(dir), "%s/models/%s", data_dir(), name);
	ref = load_ref(dir);
	cases = cJSON_GetObjectItem(ref, "cases");
	n_cases = cJSON_GetArraySize(cases);
	ck_assert_int_ge(n_cases, 6);
	llm = make_llm(dir);
	reqs = calloc((size_t)n_cases, sizeof(*reqs));
	imgs = calloc((size_t)n_cases, sizeof(*imgs));
	paths = calloc((size_t)n_cases, sizeof(*paths));
	ck_assert(reqs && imgs && paths);
	cJSON_ArrayForEach(c, cases) {
		fill_request(dir, ref, c, &reqs[ci], imgs[ci], paths[ci]);
		ci++;
	}
	/* one batch mixes requests with one, two and no images */
	ck_assert_int_eq(vd_llm_generate(llm, reqs, n_cases, &outs), VD_OK);
	ci = 0;
	cJSON_ArrayForEach(c, cases) {
		char what[128];
		double d;

		snprintf(what, sizeof(what), "%s case %d (batched)", name, ci);
		ck_assert_msg(outs[ci].status == VD_OK, "%s: %s", what, outs[ci].error);
		expect_ints(what, cJSON_GetObjectItem(c, "expanded_ids"), outs[ci].prompt_token_ids,
			    outs[ci].n_prompt_tokens);
		d = check_steps(what, c, &outs[ci]);
		worst = d > worst ? d : worst;
		ci++;
	}
	/* single runs give the same tokens and logprobs as the batch */
	ci = 0;
	cJSON_ArrayForEach(c, cases) {
		vd_output *one = NULL;
		const vd_completion *a, *b;

		ck_assert_int_eq(vd_llm_generate(llm, &reqs[ci], 1, &one), VD_OK);
		ck_assert_msg(one->status == VD_OK, "%s", one->error);
		a = &one->completions[0];
		b = &outs[ci].completions[0];
		ck_assert_int_eq(a->n_tokens, b->n_tokens);
		for (int i = 0; i < a->n_tokens; i++) {
			ck_assert_int_eq(a->token_ids[i], b->token_ids[i]);
			ck_assert_double_le(fabs(a->logprobs[i].entries[0].logprob -
						 b->logprobs[i].entries[0].logprob), 1e-4);
		}
		vd_outputs_free(one, 1);
		ci++;
	}
	printf("%s: %d cases match transformers (batched and single); max |dlogprob| = %.2e\n",
	       name, n_cases, worst);
	vd_outputs_free(outs, n_cases);
	free(reqs);
	free(imgs);
	free(paths);
	vd_llm_destroy(llm);
	cJSON_Delete(ref);
}
END_TEST

START_TEST(test_embeds)
{
	const char *name = models[_i];
	char dir[4096], sp[4300];
	cJSON *ref;
	const cJSON *c0;
	vd_weights *st;
	vd_tensor emb, grid;
	vd_llm *llm;
	vd_request r;
	vd_image_input in;
	vd_output *o = NULL;
	double worst;

	snprintf(dir, sizeof(dir), "%s/models/%s", data_dir(), name);
	ref = load_ref(dir);
	c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "cases"), 0);
	snprintf(sp, sizeof(sp), "%s/stages.safetensors", dir);
	ck_assert_int_eq(vd_weights_open_file(sp, &st), VD_OK);
	ck_assert_int_eq(vd_weights_get(st, "image_embeds", &emb), VD_OK);
	ck_assert_int_eq(vd_weights_get(st, "image_grid_thw", &grid), VD_OK);
	ck_assert_int_eq(emb.dtype, VD_DTYPE_F32);
	ck_assert_int_eq(grid.dtype, VD_DTYPE_I64);
	llm = make_llm(dir);

	vd_request_init(&r);
	r.prompt = cJSON_GetObjectItem(c0, "prompt")->valuestring;
	r.params.temperature = 0.0f;
	r.params.max_tokens = cJSON_GetObjectItem(ref, "steps")->valueint;
	r.params.ignore_eos = true;
	r.params.logprobs = cJSON_GetObjectItem(ref, "topk")->valueint;
	in = (vd_image_input){ .kind = VD_IMAGE_EMBEDS, .embeds = emb.data, .rows = emb.shape[0],
			       .hidden = emb.shape[1] };
	memcpy(in.embed_meta, grid.data, 3 * sizeof(int64_t));
	in.n_embed_meta = 3;
	r.images = &in;
	r.n_images = 1;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	expect_ints("embeds ids", cJSON_GetObjectItem(c0, "expanded_ids"), o->prompt_token_ids,
		    o->n_prompt_tokens);
	worst = check_steps("embeds path", c0, o);
	printf("%s: embedding input matches the pixel path; max |dlogprob| = %.2e\n", name, worst);
	vd_outputs_free(o, 1);

	/* one row short of t*h*w/4 */
	in.rows = emb.shape[0] - 1;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	ck_assert_int_eq(o->status, VD_ERR_INVALID_ARG);
	ck_assert_msg(strstr(o->error, "rows") && strstr(o->error, "image_grid_thw"), "%s",
		      o->error);
	vd_outputs_free(o, 1);
	/* wrong width */
	in.rows = emb.shape[0] * 2;
	in.hidden = emb.shape[1] / 2;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	ck_assert_int_eq(o->status, VD_ERR_INVALID_ARG);
	ck_assert_msg(strstr(o->error, "width"), "%s", o->error);
	vd_outputs_free(o, 1);
	/* no grid */
	in.rows = emb.shape[0];
	in.hidden = emb.shape[1];
	in.n_embed_meta = 0;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	ck_assert_int_eq(o->status, VD_ERR_INVALID_ARG);
	ck_assert_msg(strstr(o->error, "image_grid_thw"), "%s", o->error);
	vd_outputs_free(o, 1);
	/* placeholder count must match the images */
	r.prompt = "<|im_start|>user\nno image here<|im_end|>\n";
	in.n_embed_meta = 3;
	ck_assert_int_eq(vd_llm_generate(llm, &r, 1, &o), VD_OK);
	ck_assert_int_eq(o->status, VD_ERR_INVALID_ARG);
	ck_assert_msg(strstr(o->error, "0 <|image_pad|> placeholder(s)"), "%s", o->error);
	vd_outputs_free(o, 1);

	vd_llm_destroy(llm);
	vd_weights_close(st);
	cJSON_Delete(ref);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("qwen2vl");
	TCase *tc = tcase_create("golden");
	int nm = (int)(sizeof(models) / sizeof(models[0]));
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, test_expand_and_vision, 0, nm);
	tcase_add_test(tc, test_smart_resize);
	tcase_add_loop_test(tc, test_parity_and_batching, 0, nm);
	tcase_add_loop_test(tc, test_embeds, 0, nm);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
