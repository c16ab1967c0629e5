/* Check suite for core/io/json.c: parsing, dotted paths, typed getters with
 * defaults and type errors, iteration, error offsets. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vllmd/json.h"

static const char *CONFIG_TEXT =
	"{\n"
	"  \"architectures\": [\"LlavaForConditionalGeneration\"],\n"
	"  \"image_token_index\": 32000,\n"
	"  \"tie_word_embeddings\": false,\n"
	"  \"rope_scaling\": null,\n"
	"  \"rms_norm_eps\": 1e-05,\n"
	"  \"float_int\": 4096.0,\n"
	"  \"half\": 1.5,\n"
	"  \"vision_config\": {\"hidden_size\": 1024, \"model_type\": \"clip_vision_model\",\n"
	"                     \"deep\": {\"x\": -7}},\n"
	"  \"big\": 1e300\n"
	"}\n";

static vd_json *parse_ok(const char *text)
{
	vd_json *j = NULL;

	ck_assert_int_eq(vd_json_parse(text, strlen(text), &j), VD_OK);
	ck_assert_ptr_nonnull(j);
	return j;
}

START_TEST(test_paths_and_getters)
{
	vd_json *j = parse_ok(CONFIG_TEXT);
	int64_t i;
	double d;
	bool b;
	const char *s;

	ck_assert_int_eq(vd_json_int(j, "image_token_index", 0, &i), VD_OK);
	ck_assert_int_eq(i, 32000);
	ck_assert_int_eq(vd_json_int(j, "vision_config.hidden_size", 0, &i), VD_OK);
	ck_assert_int_eq(i, 1024);
	ck_assert_int_eq(vd_json_int(j, "vision_config.deep.x", 0, &i), VD_OK);
	ck_assert_int_eq(i, -7);
	ck_assert_int_eq(vd_json_int(j, "float_int", 0, &i), VD_OK);
	ck_assert_int_eq(i, 4096);
	/* missing key, missing parent, JSON null: defaults */
	ck_assert_int_eq(vd_json_int(j, "num_hidden_layers", 32, &i), VD_OK);
	ck_assert_int_eq(i, 32);
	ck_assert_int_eq(vd_json_int(j, "text_config.num_hidden_layers", 40, &i), VD_OK);
	ck_assert_int_eq(i, 40);
	ck_assert_int_eq(vd_json_num(j, "rope_scaling", 2.5, &d), VD_OK);
	ck_assert_double_eq(d, 2.5);
	ck_assert_ptr_null(vd_json_get(j, "rope_scaling"));
	ck_assert_int_eq(vd_json_num(j, "rms_norm_eps", 0, &d), VD_OK);
	ck_assert_double_eq_tol(d, 1e-5, 1e-12);
	ck_assert_int_eq(vd_json_bool(j, "tie_word_embeddings", true, &b), VD_OK);
	ck_assert(!b);
	ck_assert_int_eq(vd_json_bool(j, "use_cache", true, &b), VD_OK);
	ck_assert(b);
	ck_assert_int_eq(vd_json_str(j, "vision_config.model_type", NULL, &s), VD_OK);
	ck_assert_str_eq(s, "clip_vision_model");
	ck_assert_int_eq(vd_json_str(j, "model_type", "llava", &s), VD_OK);
	ck_assert_str_eq(s, "llava");
	/* a path through a non-object is simply missing */
	ck_assert_ptr_null(vd_json_get(j, "image_token_index.x"));
	ck_assert_ptr_null(vd_json_get(NULL, "a"));
	ck_assert_ptr_eq(vd_json_get(j, ""), j);
	vd_json_free(j);
}
END_TEST

START_TEST(test_type_errors)
{
	vd_json *j = parse_ok(CONFIG_TEXT);
	int64_t i = 0;
	double d;
	bool b;
	const char *s;

	ck_assert_int_eq(vd_json_int(j, "half", 0, &i), VD_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "half"));
	ck_assert_int_eq(vd_json_int(j, "big", 0, &i), VD_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "big"));
	ck_assert_int_eq(vd_json_int(j, "vision_config.model_type", 0, &i), VD_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "vision_config.model_type"));
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "string"));
	ck_assert_int_eq(vd_json_num(j, "architectures", 0, &d), VD_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "architectures"));
	/* bools are true/false only, not 0/1 */
	ck_assert_int_eq(vd_json_bool(j, "image_token_index", false, &b), VD_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "image_token_index"));
	ck_assert_int_eq(vd_json_str(j, "vision_config", NULL, &s), VD_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "vision_config"));
	ck_assert_int_eq(vd_json_num(j, "tie_word_embeddings", 0, &d), VD_ERR_FORMAT);
	vd_json_free(j);
}
END_TEST

START_TEST(test_predicates_and_arrays)
{
	vd_json *j = parse_ok("{\"a\": [1, \"two\", true, null, {\"k\": 3}, [5]], \"n\": 2}");
	const vd_json *a = vd_json_get(j, "a");

	ck_assert(vd_json_is_object(j));
	ck_assert(vd_json_is_array(a));
	ck_assert_int_eq(vd_json_len(a), 6);
	ck_assert(vd_json_is_number(vd_json_at(a, 0)));
	ck_assert_double_eq(vd_json_number_value(vd_json_at(a, 0), -1), 1);
	ck_assert(vd_json_is_string(vd_json_at(a, 1)));
	ck_assert_str_eq(vd_json_string_value(vd_json_at(a, 1)), "two");
	ck_assert_ptr_null(vd_json_string_value(vd_json_at(a, 0)));
	ck_assert_double_eq(vd_json_number_value(vd_json_at(a, 1), -1), -1);
	ck_assert(vd_json_is_bool(vd_json_at(a, 2)));
	ck_assert(!vd_json_is_number(vd_json_at(a, 3)));
	ck_assert(vd_json_is_object(vd_json_at(a, 4)));
	ck_assert(vd_json_is_array(vd_json_at(a, 5)));
	ck_assert_ptr_null(vd_json_at(a, 6));
	ck_assert_ptr_null(vd_json_at(a, -1));
	/* backwards after forwards still works */
	ck_assert_str_eq(vd_json_string_value(vd_json_at(a, 1)), "two");
	ck_assert_int_eq(vd_json_len(vd_json_get(j, "n")), 0);
	ck_assert_int_eq(vd_json_len(NULL), 0);
	ck_assert_ptr_null(vd_json_at(NULL, 0));
	ck_assert(!vd_json_is_number(NULL));
	vd_json_free(j);
}
END_TEST

START_TEST(test_object_iteration_with_dotted_keys)
{
	vd_json *j = parse_ok("{\"model.layers.0.weight\": 1, \"b\": 2, \"c.d\": 3}");

	ck_assert_int_eq(vd_json_len(j), 3);
	ck_assert_str_eq(vd_json_key_at(j, 0), "model.layers.0.weight");
	ck_assert_str_eq(vd_json_key_at(j, 1), "b");
	ck_assert_str_eq(vd_json_key_at(j, 2), "c.d");
	ck_assert_ptr_null(vd_json_key_at(j, 3));
	ck_assert_double_eq(vd_json_number_value(vd_json_at(j, 2), 0), 3);
	/* dotted path cannot reach a dotted key: missing, not a crash */
	ck_assert_ptr_null(vd_json_get(j, "c.d"));
	vd_json_free(j);
}
END_TEST

/* Walk a large object both ways; the cursor must not return stale nodes
 * after one document is freed and another parsed. */
START_TEST(test_large_iteration_and_reuse)
{
	enum { N = 100000 };
	size_t cap = (size_t)N * 24 + 16, len = 0;
	char *text = malloc(cap);
	vd_json *j;

	ck_assert_ptr_nonnull(text);
	text[len++] = '{';
	for (int i = 0; i < N; i++)
		len += (size_t)snprintf(text + len, cap - len, "%s\"t%d\":%d", i ? "," : "", i, i);
	text[len++] = '}';
	ck_assert_int_eq(vd_json_parse(text, len, &j), VD_OK);
	ck_assert_int_eq(vd_json_len(j), N);
	for (int i = 0; i < N; i++) {
		char want[16];

		snprintf(want, sizeof(want), "t%d", i);
		ck_assert_str_eq(vd_json_key_at(j, i), want);
		ck_assert_double_eq(vd_json_number_value(vd_json_at(j, i), -1), i);
	}
	vd_json_free(j);
	free(text);

	j = parse_ok("{\"x\": 10, \"y\": 20}");
	ck_assert_int_eq(vd_json_len(j), 2);
	ck_assert_str_eq(vd_json_key_at(j, 1), "y");
	vd_json_free(j);
	j = parse_ok("{\"p\": 1, \"q\": 2, \"r\": 3}");
	ck_assert_int_eq(vd_json_len(j), 3);
	ck_assert_str_eq(vd_json_key_at(j, 1), "q");
	ck_assert_str_eq(vd_json_key_at(j, 2), "r");
	vd_json_free(j);
}
END_TEST

START_TEST(test_parse_errors)
{
	vd_json *j = (vd_json *)1;
	const char *bad = "{\n  \"a\": 1,\n  \"b\": tru\n}";

	ck_assert_int_eq(vd_json_parse(bad, strlen(bad), &j), VD_ERR_FORMAT);
	ck_assert_ptr_null(j);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "byte 19"));
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "line 3"));
	ck_assert_int_eq(vd_json_parse("", 0, &j), VD_ERR_FORMAT);
	ck_assert_int_eq(vd_json_parse("{} x", 4, &j), VD_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "byte 3"));
	ck_assert_int_eq(vd_json_parse("[1, 2", 5, &j), VD_ERR_FORMAT);
	/* trailing whitespace is fine; a length shorter than the string is honoured */
	ck_assert_int_eq(vd_json_parse("{\"a\":1}   \n", 11, &j), VD_OK);
	vd_json_free(j);
	ck_assert_int_eq(vd_json_parse("[1]garbage", 3, &j), VD_OK);
	ck_assert_int_eq(vd_json_len(j), 1);
	vd_json_free(j);
	vd_json_free(NULL);
}
END_TEST

/* A buffer with no NUL after it: ASan flags any read past len. */
START_TEST(test_unterminated_buffer)
{
	const char *src = "{\"a\": [1, 2, 3], \"s\": \"xyz\"}";
	size_t n = strlen(src);
	char *buf = malloc(n);
	vd_json *j;
	const char *s;

	ck_assert_ptr_nonnull(buf);
	memcpy(buf, src, n);
	ck_assert_int_eq(vd_json_parse(buf, n, &j), VD_OK);
	ck_assert_int_eq(vd_json_str(j, "s", NULL, &s), VD_OK);
	ck_assert_str_eq(s, "xyz");
	vd_json_free(j);
	ck_assert_int_eq(vd_json_parse(buf, n - 1, &j), VD_ERR_FORMAT);
	ck_assert_int_eq(vd_json_parse(buf, 8, &j), VD_ERR_FORMAT);
	free(buf);
}
END_TEST

START_TEST(test_load_file)
{
	char path[] = "/tmp/vd_test_json_XXXXXX";
	int fd = mkstemp(path);
	vd_json *j;
	int64_t v;
	FILE *f;

	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	fputs("{\"text_config\": {\"vocab_size\": 32064}}", f);
	fclose(f);
	ck_assert_int_eq(vd_json_load_file(path, &j), VD_OK);
	ck_assert_int_eq(vd_json_int(j, "text_config.vocab_size", 0, &v), VD_OK);
	ck_assert_int_eq(v, 32064);
	vd_json_free(j);

	f = fopen(path, "w");
	fputs("{\"a\": }", f);
	fclose(f);
	ck_assert_int_eq(vd_json_load_file(path, &j), VD_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), path));
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "byte 6"));
	unlink(path);

	ck_assert_int_eq(vd_json_load_file(path, &j), VD_ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), path));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_paths_and_getters);
	tcase_add_test(tc, test_type_errors);
	tcase_add_test(tc, test_predicates_and_arrays);
	tcase_add_test(tc, test_object_iteration_with_dotted_keys);
	tcase_add_test(tc, test_large_iteration_and_reuse);
	tcase_add_test(tc, test_parse_errors);
	tcase_add_test(tc, test_unterminated_buffer);
	tcase_add_test(tc, test_load_file);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
