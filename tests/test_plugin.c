/* Plugin registry: loading the real plugins, refusing a wrong ABI major and
 * a file without the entry point, and naming the architecture when no
 * plugin serves a checkpoint. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/registry.h"
#include "vllmd/plugin_util.h"

static char plugin_dir[4096], test_plugins[4096];

static void setup_dirs(void)
{
	const char *pd = getenv("VD_PLUGIN_DIR");
	const char *bd = getenv("VD_BUILDDIR");

	snprintf(plugin_dir, sizeof(plugin_dir), "%s", pd ? pd : "build-plugins");
	snprintf(test_plugins, sizeof(test_plugins), "%s/tests/plugins/.libs", bd ? bd : ".");
}

static vd_json *arch_list(const char *json)
{
	vd_json *j = NULL;

	ck_assert_int_eq(vd_json_parse(json, strlen(json), &j), VD_OK);
	return j;
}

START_TEST(test_loads_llava)
{
	vd_registry *r = NULL;
	const vd_family *f = NULL;
	vd_json *a = arch_list("[\"LlavaForConditionalGeneration\"]");

	ck_assert_int_eq(vd_registry_create(plugin_dir, &r), VD_OK);
	ck_assert_int_ge(vd_registry_count(r), 1);
	ck_assert_int_eq(vd_registry_find(r, a, &f), VD_OK);
	ck_assert_ptr_nonnull(f);
	ck_assert_str_eq(f->name, "llava");
	vd_json_free(a);
	vd_registry_destroy(r);
}
END_TEST

START_TEST(test_no_plugin_for_arch)
{
	vd_registry *r = NULL;
	const vd_family *f = NULL;
	vd_json *a = arch_list("[\"MambaForCausalLM\"]");

	ck_assert_int_eq(vd_registry_create(plugin_dir, &r), VD_OK);
	ck_assert_int_eq(vd_registry_find(r, a, &f), VD_ERR_NOT_FOUND);
	ck_assert_ptr_null(f);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "no plugin serves architecture MambaForCausalLM"));
	vd_json_free(a);
	vd_registry_destroy(r);
}
END_TEST

START_TEST(test_refuses_other_abi_major)
{
	vd_registry *r = NULL;
	char path[4200];
	char msg[256];

	snprintf(path, sizeof(path), "%s/badabi.so", test_plugins);
	ck_assert_int_eq(vd_registry_create(plugin_dir, &r), VD_OK);
	ck_assert_int_eq(vd_registry_load(r, path), VD_ERR_ABI);
	snprintf(msg, sizeof(msg), "ABI major %d, this vllmd needs %d", VD_PLUGIN_ABI_MAJOR + 1,
		 VD_PLUGIN_ABI_MAJOR);
	ck_assert_msg(strstr(vd_error_message(), msg), "message: %s", vd_error_message());
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "badabi.so"));
	vd_registry_destroy(r);
}
END_TEST

START_TEST(test_refuses_missing_entry)
{
	vd_registry *r = NULL;
	char path[4200];

	snprintf(path, sizeof(path), "%s/noentry.so", test_plugins);
	ck_assert_int_eq(vd_registry_create(plugin_dir, &r), VD_OK);
	ck_assert_int_eq(vd_registry_load(r, path), VD_ERR_ABI);
	ck_assert_msg(strstr(vd_error_message(), "no 'vd_plugin_entry' symbol"), "message: %s",
		      vd_error_message());
	vd_registry_destroy(r);
}
END_TEST

START_TEST(test_dir_scan_skips_refused)
{
	/* the test plugin dir holds only refused plugins: the registry still
	 * opens, with no plugins and both refusals recorded */
	vd_registry *r = NULL;

	ck_assert_int_eq(vd_registry_create(test_plugins, &r), VD_OK);
	ck_assert_int_eq(vd_registry_count(r), 0);
	ck_assert_ptr_nonnull(strstr(vd_registry_refusals(r), "badabi.so"));
	ck_assert_ptr_nonnull(strstr(vd_registry_refusals(r), "noentry.so"));
	vd_registry_destroy(r);
}
END_TEST

/* vd_plugin_gather_pixels: the items' pixels end to end, the same on
 * several threads (a 24 MB batch of odd-sized items) as on one. */
START_TEST(test_gather_pixels)
{
	enum { N = 5 };
	static const int64_t len[N] = { 1000003, 2500001, 7, 1999999, 750000 };
	vd_mm_item it[N];
	const vd_mm_item *ptrs[N];
	int64_t total = 0, at = 0;
	float *a, *b;

	for (int i = 0; i < N; i++) {
		float *p = malloc(sizeof(float) * (size_t)len[i]);

		ck_assert_ptr_nonnull(p);
		for (int64_t j = 0; j < len[i]; j++)
			p[j] = (float)(i * 10000000 + j);
		memset(&it[i], 0, sizeof(it[i]));
		it[i].pixels = (vd_tensor){ .data = p, .dtype = VD_DTYPE_F32, .ndim = 1,
					    .shape = { len[i] }, .stride = { 1 } };
		ptrs[i] = &it[i];
		total += len[i];
	}
	a = malloc(sizeof(float) * (size_t)total);
	b = malloc(sizeof(float) * (size_t)total);
	ck_assert(a && b);
	setenv("VD_STAGE_THREADS", "4", 1);
	vd_plugin_gather_pixels(a, ptrs, N);
	setenv("VD_STAGE_THREADS", "1", 1);
	vd_plugin_gather_pixels(b, ptrs, N);
	ck_assert_mem_eq(a, b, sizeof(float) * (size_t)total);
	unsetenv("VD_STAGE_THREADS"); /* the default: a thread per core, up to 8 */
	memset(a, 0, sizeof(float) * (size_t)total);
	vd_plugin_gather_pixels(a, ptrs, N);
	ck_assert_mem_eq(a, b, sizeof(float) * (size_t)total);
	for (int i = 0; i < N; i++) {
		ck_assert_mem_eq(a + at, it[i].pixels.data, sizeof(float) * (size_t)len[i]);
		at += len[i];
		free(it[i].pixels.data);
	}
	free(a);
	free(b);
}
END_TEST

START_TEST(test_missing_dir)
{
	vd_registry *r = NULL;

	ck_assert_int_eq(vd_registry_create("/nonexistent/plugins", &r), VD_ERR_NOT_FOUND);
	ck_assert_ptr_null(r);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "/nonexistent/plugins"));
}
END_TEST

/* The scaffolding helpers of plugin_util.h: a processor config's shared
 * fields with their class defaults, the weight-layout probe, the output
 * layer with tied embeddings, the padded vocabulary. */
START_TEST(test_plugin_helpers)
{
	const vd_host_api *H = vd_host_api_get();
	vd_json *pp = arch_list("{\"do_normalize\": false, \"rescale_factor\": 0.5, "
				"\"resample\": 2}");
	vd_json *bad = arch_list("{\"resample\": 1}");
	vd_json *cfg = arch_list("{\"vocab_size\": 100, \"tie_word_embeddings\": true, "
				 "\"text_config\": {\"tie_word_embeddings\": false}}");
	static const char *const prefixes[] = { "a.", "b.", NULL };
	static const char *const lms[] = { "model.language_model.", "language_model.model.", NULL };
	const char *data = getenv("VD_TEST_DATA") ? getenv("VD_TEST_DATA") : "tests/data";
	char dir[4096];
	vd_plugin_image_norm n;
	vd_decoder_spec spec = { .vocab_size = 32 };
	vd_weights *w = NULL;
	vd_model_ctx ctx;
	int which = -1;

	snprintf(dir, sizeof(dir), "%s/models/llava-tiny-a", data);
	ck_assert_int_eq(vd_weights_open_dir(dir, &w), VD_OK);
	ctx = (vd_model_ctx){ .struct_size = sizeof(ctx), .model_dir = dir, .config = cfg,
			      .weights = w };

	ck_assert_int_eq(vd_plugin_read_image_norm(H, NULL, &n), VD_OK);
	ck_assert(n.do_resize && n.resample == VD_RESAMPLE_BICUBIC);
	ck_assert_float_eq(n.rescale, 1.0f / 255.0f);
	ck_assert_float_eq(n.mean[0], vd_clip_mean[0]);
	ck_assert_int_eq(vd_plugin_read_image_norm(H, pp, &n), VD_OK);
	ck_assert(n.resample == VD_RESAMPLE_BILINEAR);
	ck_assert_float_eq(n.rescale, 0.5f);
	ck_assert(n.mean[1] == 0.0f && n.std[2] == 1.0f);
	ck_assert_int_eq(vd_plugin_read_image_norm(H, bad, &n), VD_ERR_UNSUPPORTED);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "resample 1"));

	/* the hub layout of the tiny LLaVA; no layout: every name looked for is
	 * in the refusal */
	ck_assert_int_eq(vd_plugin_probe_layout(H, &ctx, "fam", lms, "embed_tokens.weight", &which),
			 VD_OK);
	ck_assert_int_eq(which, 1);
	ck_assert_int_eq(vd_plugin_probe_layout(H, &ctx, "fam", prefixes, "x.weight", &which),
			 VD_ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "'a.x.weight', 'b.x.weight'"));

	/* the text config's tie_word_embeddings (false) wins over the top
	 * level's; a head the checkpoint lacks leaves the embeddings to serve */
	ck_assert_int_eq(vd_plugin_lm_head(H, &ctx, vd_json_get(cfg, "text_config"),
					   "language_model.lm_head.weight", &spec), VD_OK);
	ck_assert_str_eq(spec.lm_head, "language_model.lm_head.weight");
	ck_assert_int_eq(vd_plugin_lm_head(H, &ctx, vd_json_get(cfg, "text_config"), "lm_head.weight",
					   &spec), VD_OK);
	ck_assert_str_eq(spec.lm_head, "");
	ck_assert_int_eq(vd_plugin_lm_head(H, &ctx, NULL, "language_model.lm_head.weight", &spec),
			 VD_OK);
	ck_assert_str_eq(spec.lm_head, ""); /* tied at the top level */
	ck_assert_int_eq(vd_plugin_vocab_size(H, cfg, &spec), VD_OK);
	ck_assert_int_eq(spec.vocab_size, 100);
	vd_weights_close(w);
	vd_json_free(pp);
	vd_json_free(bad);
	vd_json_free(cfg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("plugin");
	TCase *tc = tcase_create("registry");
	SRunner *sr;
	int failed;

	setup_dirs();
	tcase_add_test(tc, test_loads_llava);
	tcase_add_test(tc, test_no_plugin_for_arch);
	tcase_add_test(tc, test_refuses_other_abi_major);
	tcase_add_test(tc, test_refuses_missing_entry);
	tcase_add_test(tc, test_dir_scan_skips_refused);
	tcase_add_test(tc, test_missing_dir);
	tcase_add_test(tc, test_gather_pixels);
	tcase_add_test(tc, test_plugin_helpers);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
