/* Check suite for core/jinja/chat_template.c and its Jinja2 engine: golden parity
 * with Jinja2 3.1 as transformers sets it up (tests/data/templates/
 * expected.json, made by tests/chat_ref.py: every conf/ template and the
 * extra templates over many conversations, plus one template per construct),
 * the vd_tv API, error messages and locations, limits, concurrent renders.
 * Paths: $VD_SRCDIR (default .) is the repository root. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/jinja/chat_template.h"

static const char *srcdir(void)
{
	const char *d = getenv("VD_SRCDIR");
	return d && *d ? d : ".";
}

static char *slurp(const char *rel)
{
	char path[1024];
	FILE *f;
	long n;
	char *buf;

	snprintf(path, sizeof(path), "%s/%s", srcdir(), rel);
	f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s (set VD_SRCDIR to the repository root)", path);
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	ck_assert_int_ge(n, 0);
	ck_assert_int_eq(fseek(f, 0, SEEK_SET), 0);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = 0;
	fclose(f);
	return buf;
}

/* Compile src and render it with the JSON context; the status comes back and
 * *out holds the output (caller frees) on success. */
static vd_status render_json(const char *src, const char *ctx_json, char **out)
{
	vd_chat_template *t = NULL;
	cJSON *j = cJSON_Parse(ctx_json);
	vd_tv *ctx = NULL;
	vd_status st;

	ck_assert_msg(j != NULL, "bad test JSON: %s", ctx_json);
	ck_assert_int_eq(vd_tv_from_cjson(j, &ctx), VD_OK);
	*out = NULL;
	st = vd_chat_template_compile(src, &t);
	if (st == VD_OK)
		st = vd_chat_template_render(t, ctx, out);
	vd_chat_template_free(t);
	vd_tv_free(ctx);
	cJSON_Delete(j);
	return st;
}

static void expect_render(const char *src, const char *ctx_json, const char *want)
{
	char *out = NULL;
	vd_status st = render_json(src, ctx_json, &out);

	ck_assert_msg(st == VD_OK, "render of %s failed: %s", src, vd_error_message());
	ck_assert_str_eq(out, want);
	free(out);
}

/* ---- golden parity with Jinja2 ---- */

/* One case of expected.json; returns a description of the failure or NULL. */
static const char *run_case(const cJSON *c, const vd_chat_render_opts *opts, char *why, size_t n)
{
	const cJSON *tf = cJSON_GetObjectItem(c, "template_file");
	const cJSON *exp = cJSON_GetObjectItem(c, "expected");
	const cJSON *err = cJSON_GetObjectItem(c, "error");
	char *src = tf ? slurp(tf->valuestring) :
		    strdup(cJSON_GetObjectItem(c, "template")->valuestring);
	vd_chat_template *t = NULL;
	vd_tv *ctx = NULL;
	char *out = NULL;
	vd_status st;
	bool compiled = false;
	const char *res = NULL;

	ck_assert_ptr_nonnull(src);
	ck_assert_int_eq(vd_tv_from_cjson(cJSON_GetObjectItem(c, "context"), &ctx), VD_OK);
	st = vd_chat_template_compile(src, &t);
	if (st == VD_OK) {
		compiled = true;
		st = vd_chat_template_render_opts(t, ctx, opts, &out);
	}
	if (exp) {
		if (st != VD_OK) {
			snprintf(why, n, "failed: %s", vd_error_message());
			res = why;
		} else if (strcmp(out, exp->valuestring) != 0) {
			size_t k = 0;

			while (out[k] && out[k] == exp->valuestring[k])
				k++;
			snprintf(why, n, "output differs at byte %zu: got \"%.60s\" want \"%.60s\"", k,
				 out + k, exp->valuestring + k);
			res = why;
		}
	} else {
		const char *phase = cJSON_GetObjectItem(err, "phase")->valuestring;
		const char *type = cJSON_GetObjectItem(err, "type")->valuestring;
		const char *msg = cJSON_GetObjectItem(err, "message")->valuestring;

		if (st == VD_OK) {
			snprintf(why, n, "rendered \"%.60s\" where Jinja2 raised %s: %s", out, type, msg);
			res = why;
		} else if (!strcmp(type, "TemplateSyntaxError") &&
			   (compiled || strcmp(phase, "syntax") != 0 || st != VD_ERR_FORMAT)) {
			snprintf(why, n, "want a syntax error (%s), got: %s", msg, vd_error_message());
			res = why;
		} else if (!strcmp(type, "TemplateError") && strcmp(vd_error_message(), msg) != 0) {
			/* raise_exception: the template's message, verbatim */
			snprintf(why, n, "raise_exception message \"%s\", want \"%s\"",
				 vd_error_message(), msg);
			res = why;
		} else if (!strcmp(type, "UndefinedError") && !strstr(vd_error_message(), msg)) {
			snprintf(why, n, "undefined error \"%s\" does not say \"%s\"",
				 vd_error_message(), msg);
			res = why;
		}
	}
	free(out);
	free(src);
	vd_tv_free(ctx);
	vd_chat_template_free(t);
	return res;
}

START_TEST(test_golden_jinja2_parity)
{
	char *text = slurp("tests/data/templates/expected.json");
	cJSON *root = cJSON_Parse(text), *c;
	int total = 0, failed = 0, templates = 0;
	char why[512], first[700] = "";
	vd_chat_render_opts opts = { .fixed_now = true };

	ck_assert_msg(root != NULL, "expected.json does not parse");
	/* the goldens' strftime_now clock: a fixed instant, never today */
	ck_assert_msg(cJSON_IsNumber(cJSON_GetObjectItem(root, "now")),
		      "expected.json has no \"now\" (rerun tests/chat_ref.py)");
	opts.now = (int64_t)cJSON_GetObjectItem(root, "now")->valuedouble;
	cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
		const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
		const char *res = run_case(c, &opts, why, sizeof(why));

		total++;
		templates += cJSON_GetObjectItem(c, "template_file") != NULL;
		if (res) {
			fprintf(stderr, "chat template case %s: %s\n", name, res);
			if (!failed++)
				snprintf(first, sizeof(first), "%s: %s", name, res);
		}
	}
	/* the corpus really holds what the suite claims */
	ck_assert_int_ge(templates, 8 * 20);
	ck_assert_int_ge(total - templates, 200);
	ck_assert_msg(failed == 0, "%d of %d golden cases differ from Jinja2; first: %s",
		      failed, total, first);
	cJSON_Delete(root);
	free(text);
}
END_TEST

/* ---- the shipped templates on typical requests (facts of models.md) ---- */

static char *render_file(const char *rel, const char *ctx_json)
{
	char path[1024];
	vd_chat_template *t = NULL;
	cJSON *j = cJSON_Parse(ctx_json);
	vd_tv *ctx = NULL;
	char *out = NULL;

	snprintf(path, sizeof(path), "%s/%s", srcdir(), rel);
	ck_assert_msg(vd_chat_template_load_file(path, &t) == VD_OK, "%s", vd_error_message());
	ck_assert_int_eq(vd_tv_from_cjson(j, &ctx), VD_OK);
	ck_assert_msg(vd_chat_template_render(t, ctx, &out) == VD_OK, "%s", vd_error_message());
	vd_tv_free(ctx);
	cJSON_Delete(j);
	vd_chat_template_free(t);
	return out;
}

#define IMAGE_QUESTION \
	"{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\"}, " \
	"{\"type\": \"text\", \"text\": \"What is this?\"}]}], " \
	"\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}"

START_TEST(test_shipped_templates)
{
	char *out;

	out = render_file("conf/llava15.jinja", IMAGE_QUESTION);
	ck_assert_str_eq(out, "USER: <image>\nWhat is this? ASSISTANT:");
	free(out);
	out = render_file("conf/qwen2vl.jinja", IMAGE_QUESTION);
	ck_assert_str_eq(out, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
			 "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
			 "What is this?<|im_end|>\n<|im_start|>assistant\n");
	free(out);
	out = render_file("conf/phi3v.jinja",
			  "{\"messages\": [{\"role\": \"user\", \"content\": "
			  "\"<|image_1|>\\nWhat is this?\"}], \"add_generation_prompt\": true}");
	ck_assert_str_eq(out, "<|user|>\n<|image_1|>\nWhat is this?<|end|>\n<|assistant|>\n");
	free(out);
	out = render_file("conf/template_llava.jinja",
			  "{\"messages\": [{\"role\": \"system\", \"content\": \"SYS\"}, "
			  "{\"role\": \"user\", \"content\": \" <image>\\nhi \"}, "
			  "{\"role\": \"assistant\", \"content\": \"yo\"}, "
			  "{\"role\": \"user\", \"content\": \"q\"}], "
			  "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}");
	/* vLLM's examples/template_llava.jinja renders exactly this */
	ck_assert_str_eq(out, "\n<s>SYS\n\n        USER: <image>\nhi\n\n\n        ASSISTANT: yo</s>\n\n"
			 "\n        USER: q\n\n\n    ASSISTANT:\n");
	free(out);
}
END_TEST

/* ---- constructs (beyond the golden corpus) ---- */

START_TEST(test_whitespace_control)
{
	expect_render("{% for x in l %}\n  {{ x }}\n{% endfor %}\n", "{\"l\": [1, 2]}",
		      "  1\n  2\n");
	expect_render("{%- for x in l -%}\n  {{ x }}\n{%- endfor -%}", "{\"l\": [1, 2]}", "12");
	expect_render("  {% if true %}\n  x\n  {% endif %}\n", "{}", "  x\n");
	expect_render("a  {% if true %}b{% endif %}", "{}", "a  b");
	expect_render("{% raw %}{{ x }}{% endraw %}", "{}", "{{ x }}");
	expect_render("one\n{# gone #}\ntwo\n", "{}", "one\ntwo");
	expect_render("{% generation %}kept{% endgeneration %}", "{}", "kept");
}
END_TEST

START_TEST(test_expressions)
{
	const char *ctx = "{\"m\": {\"role\": \"user\", \"content\": \"  hi  \"}, \"l\": [3, 1, 2]}";

	expect_render("{{ m['role'] }}|{{ m.role.upper() }}|{{ m.content | trim }}|{{ m.nope }}|",
		      ctx, "user|USER|hi||");
	expect_render("{{ l[1:] }}{{ l[::-1] }}{{ l[-1] }}{{ l|sort }}{{ l|length }}", ctx,
		      "[1, 2][2, 1, 3]2[1, 2, 3]3");
	expect_render("{{ 7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 'a' ~ 1 }} {{ 0.1 + 0.2 }}",
		      "{}", "3 2 3.5 1024 a1 0.30000000000000004");
	expect_render("{{ 'x' if 'a' in 'cat' else 'y' }}{{ 1 is odd }}{{ none is none }}", "{}",
		      "xTrueTrue");
	expect_render("{{ {'k': ['é', 1.5, none, true]} | tojson }}", "{}",
		      "{\"k\": [\"é\", 1.5, null, true]}");
	expect_render("{% set ns = namespace(n=0) %}{% for x in l %}{% set ns.n = ns.n + x %}"
		      "{% endfor %}{{ ns.n }}", ctx, "6");
	expect_render("{% macro f(a, b='d') %}{{ a }}{{ b }}{% endmacro %}{{ f(1) }}{{ f(1, b=2) }}",
		      "{}", "1d12");
	expect_render("{% for x in l %}{% if x == 1 %}{% break %}{% endif %}{{ x }}{% endfor %}", ctx,
		      "3");
	expect_render("{% for k, v in m.items() %}{{ k }}={{ v|trim }};{% endfor %}", ctx,
		      "role=user;content=hi;");
}
END_TEST

/* ---- errors ---- */

static void expect_error(const char *src, const char *ctx_json, vd_status want,
			 const char *msg_part)
{
	char *out = NULL;
	vd_status st = render_json(src, ctx_json, &out);

	ck_assert_msg(st == want, "%s: status %s, want %s (%s)", src, vd_status_str(st),
		      vd_status_str(want), vd_error_message());
	ck_assert_msg(strstr(vd_error_message(), msg_part) != NULL,
		      "%s: message \"%s\" lacks \"%s\"", src, vd_error_message(), msg_part);
	ck_assert_ptr_null(out);
}

START_TEST(test_syntax_error_locations)
{
	expect_error("line one\n  {{ 1 + }}", "{}", VD_ERR_FORMAT, "line 2, column 10");
	expect_error("ok\nok\n{% for x in y %}\n{% endif %}", "{}", VD_ERR_FORMAT,
		     "line 4, column 4: Encountered unknown tag 'endif'");
	expect_error("{% if x %}\nnever closed", "{}", VD_ERR_FORMAT,
		     "Unexpected end of template");
	expect_error("{{ 'abc }}", "{}", VD_ERR_FORMAT, "line 1, column 4: unterminated string");
	expect_error("{# open", "{}", VD_ERR_FORMAT, "Missing end of comment tag");
	expect_error("{{ (1 }}", "{}", VD_ERR_FORMAT, "unexpected '}'");
	expect_error("{% frobnicate %}", "{}", VD_ERR_FORMAT, "unknown tag 'frobnicate'");
	expect_error("{% break %}", "{}", VD_ERR_FORMAT, "outside of a loop");
	/* column counts code points, not bytes */
	expect_error("ééé{{ 1 + }}", "{}", VD_ERR_FORMAT, "line 1, column 11");
}
END_TEST

START_TEST(test_unknown_filter_and_test)
{
	expect_error("\n\n  {{ x | shout }}", "{}", VD_ERR_FORMAT,
		     "line 3, column 10: No filter named 'shout'.");
	expect_error("{{ x is loud }}", "{}", VD_ERR_FORMAT, "No test named 'loud'.");
	/* inside an if, Jinja2 defers the check to when the branch runs */
	expect_render("{% if false %}{{ x | shout }}{% endif %}ok", "{}", "ok");
	expect_error("{% if true %}\n{{ x | shout }}{% endif %}", "{}", VD_ERR_INVALID_ARG,
		     "line 2: No filter named 'shout' found.");
	/* a filter named only at render time fails there */
	expect_error("{{ [1] | map('shout') | list }}", "{}", VD_ERR_INVALID_ARG,
		     "No filter named 'shout'.");
}
END_TEST

START_TEST(test_render_errors)
{
	char *out = NULL;

	/* raise_exception: exactly the template's message */
	ck_assert_int_eq(render_json("{% if true %}{{ raise_exception('Roles must alternate: ' ~ 2) }}"
				     "{% endif %}", "{}", &out), VD_ERR_INVALID_ARG);
	ck_assert_str_eq(vd_error_message(), "Roles must alternate: 2");
	ck_assert_ptr_null(out);
	expect_error("a\n{{ foo.bar }}", "{}", VD_ERR_INVALID_ARG,
		     "chat template line 2: 'foo' is undefined");
	expect_error("{{ m.content.strip() }}", "{\"m\": {}}", VD_ERR_INVALID_ARG,
		     "'dict object' has no attribute 'content'");
	expect_error("{{ 'a' + 1 }}", "{}", VD_ERR_INVALID_ARG,
		     "can only concatenate str (not \"int\") to str");
	expect_error("{{ [1].append(2) }}", "{}", VD_ERR_INVALID_ARG,
		     "access to attribute 'append' of 'list' object is unsafe.");
	expect_error("{{ x | tojson }}", "{}", VD_ERR_INVALID_ARG,
		     "Object of type Undefined is not JSON serializable");
	expect_error("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}", "{}",
		     VD_ERR_INVALID_ARG, "nested deeper than");
	expect_error("{{ range(200000) | length }}", "{}", VD_ERR_INVALID_ARG, "Range too big");
	/* the context must be a dict */
	{
		vd_chat_template *t;
		vd_tv *list = vd_tv_new_list();

		ck_assert_int_eq(vd_chat_template_compile("x", &t), VD_OK);
		ck_assert_int_eq(vd_chat_template_render(t, list, &out), VD_ERR_INVALID_ARG);
		ck_assert_ptr_null(out);
		vd_tv_free(list);
		vd_chat_template_free(t);
	}
}
END_TEST

START_TEST(test_nesting_limit)
{
	/* no template can recurse the parser or evaluator off the C stack */
	static const char *const unit[] = { "not ", "1 + ", "-", "x if y else " };

	for (size_t k = 0; k < sizeof(unit) / sizeof(unit[0]); k++) {
		size_t n = strlen(unit[k]), reps = 5000;
		char *src = malloc(reps * n + 16);

		ck_assert_ptr_nonnull(src);
		strcpy(src, "{{ ");
		for (size_t i = 0; i < reps; i++)
			memcpy(src + 3 + i * n, unit[k], n);
		strcpy(src + 3 + reps * n, "1 }}");
		expect_error(src, "{}", VD_ERR_FORMAT, "nests deeper than");
		free(src);
	}
	{
		size_t reps = 3000;
		char *src = malloc(reps * 32 + 1), *p = src; /* 18 + 12 bytes a level */

		ck_assert_ptr_nonnull(src);
		for (size_t i = 0; i < reps; i++)
			p += sprintf(p, "{%% for x in [1] %%}");
		for (size_t i = 0; i < reps; i++)
			p += sprintf(p, "{%% endfor %%}");
		expect_error(src, "{}", VD_ERR_FORMAT, "nests deeper than");
		free(src);
	}
	/* 150 nested loops are still fine */
	{
		char *src = malloc(150 * 32 + 16), *p = src;
		char *out = NULL;

		ck_assert_ptr_nonnull(src);
		for (int i = 0; i < 150; i++)
			p += sprintf(p, "{%% for x in [1] %%}");
		p += sprintf(p, "deep");
		for (int i = 0; i < 150; i++)
			p += sprintf(p, "{%% endfor %%}");
		ck_assert_int_eq(render_json(src, "{}", &out), VD_OK);
		ck_assert_str_eq(out, "deep");
		free(out);
		free(src);
	}
}
END_TEST

START_TEST(test_memory_limit)
{
	/* doubling a string 40 times wants a TiB: the render stops at its cap */
	expect_error("{% set ns = namespace(s='0123456789abcdef') %}{% for i in range(40) %}"
		     "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}", "{}",
		     VD_ERR_LIMIT, "MiB");
}
END_TEST

START_TEST(test_strftime_now)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		char want[64], *out = NULL;
		time_t now = time(NULL);
		struct tm tm;

		localtime_r(&now, &tm);
		strftime(want, sizeof(want), "%d %b %Y", &tm);
		ck_assert_int_eq(render_json("{{ strftime_now('%d %b %Y') }}", "{}", &out), VD_OK);
		if (!strcmp(out, want)) {
			free(out);
			return;
		}
		free(out); /* the date changed between the two reads */
	}
	ck_abort_msg("strftime_now does not give today's date");
}
END_TEST

START_TEST(test_strftime_fixed_now)
{
	/* a fixed instant renders in UTC, whatever TZ and the clock say */
	vd_chat_template *t = NULL;
	vd_tv *ctx = vd_tv_new_dict();
	vd_chat_render_opts opts = { .fixed_now = true, .now = 951782400 }; /* 2000-02-29 00:00 UTC */
	char *out = NULL;

	ck_assert_int_eq(vd_chat_template_compile("{{ strftime_now('%Y-%m-%d %H:%M %a') }}", &t),
			 VD_OK);
	ck_assert_int_eq(vd_chat_template_render_opts(t, ctx, &opts, &out), VD_OK);
	ck_assert_str_eq(out, "2000-02-29 00:00 Tue");
	free(out);
	opts.now = -1; /* one second before the epoch */
	ck_assert_int_eq(vd_chat_template_render_opts(t, ctx, &opts, &out), VD_OK);
	ck_assert_str_eq(out, "1969-12-31 23:59 Wed");
	free(out);
	vd_chat_template_free(t);
	vd_tv_free(ctx);
}
END_TEST

START_TEST(test_load_file_errors)
{
	vd_chat_template *t = (vd_chat_template *)1;

	ck_assert_int_eq(vd_chat_template_load_file("/nonexistent/dir/x.jinja", &t), VD_ERR_IO);
	ck_assert_ptr_null(t);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "/nonexistent/dir/x.jinja"));
	vd_chat_template_free(NULL);
}
END_TEST

/* ---- values ---- */

START_TEST(test_tv_api)
{
	vd_tv *d = vd_tv_new_dict(), *l = vd_tv_new_list();
	const vd_tv *v;
	size_t n;
	char *out = NULL;
	vd_chat_template *t;

	ck_assert_int_eq(vd_tv_dict_set(d, "b", vd_tv_new_int(1)), VD_OK);
	ck_assert_int_eq(vd_tv_dict_set(d, "a", vd_tv_new_string_len("x\0y", 3)), VD_OK);
	/* replacing keeps the key's place, as a Python dict does */
	ck_assert_int_eq(vd_tv_dict_set(d, "b", vd_tv_new_float(2.5)), VD_OK);
	ck_assert_int_eq(vd_tv_list_append(l, vd_tv_new_bool(true)), VD_OK);
	ck_assert_int_eq(vd_tv_list_append(l, vd_tv_new_none()), VD_OK);
	ck_assert_int_eq(vd_tv_list_append(l, NULL), VD_ERR_NOMEM);
	ck_assert_int_eq(vd_tv_list_append(d, vd_tv_new_int(3)), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(vd_tv_dict_set(d, "l", l), VD_OK);
	ck_assert_int_eq(vd_tv_kind_of(d), VD_TV_DICT);
	ck_assert_uint_eq(vd_tv_len(d), 3);
	v = vd_tv_dict_get(d, "a");
	ck_assert_ptr_nonnull(v);
	ck_assert_mem_eq(vd_tv_string(v, &n), "x\0y", 3);
	ck_assert_uint_eq(n, 3);
	ck_assert_ptr_null(vd_tv_dict_get(d, "zz"));
	ck_assert_int_eq(vd_tv_kind_of(vd_tv_dict_get(d, "b")), VD_TV_FLOAT);
	ck_assert_int_eq(vd_tv_kind_of(vd_tv_list_at(vd_tv_dict_get(d, "l"), 1)), VD_TV_NONE);
	ck_assert_ptr_null(vd_tv_list_at(vd_tv_dict_get(d, "l"), 2));
	ck_assert_int_eq(vd_chat_template_compile("{% for k in ctx %}{{ k }}{% endfor %}"
						  "{{ b }}{{ l }}", &t), VD_OK);
	{
		vd_tv *ctx = vd_tv_new_dict();

		/* the context holds d under "ctx" and its entries at the top */
		ck_assert_int_eq(vd_tv_dict_set(ctx, "b", vd_tv_new_float(2.5)), VD_OK);
		ck_assert_int_eq(vd_tv_dict_set(ctx, "l", vd_tv_new_list()), VD_OK);
		ck_assert_int_eq(vd_tv_dict_set(ctx, "ctx", d), VD_OK);
		ck_assert_int_eq(vd_chat_template_render(t, ctx, &out), VD_OK);
		ck_assert_str_eq(out, "bal2.5[]");
		free(out);
		vd_tv_free(ctx);
	}
	vd_chat_template_free(t);
	vd_tv_free(NULL);
}
END_TEST

START_TEST(test_tv_from_cjson)
{
	cJSON *j = cJSON_Parse("{\"i\": 3, \"neg\": -7, \"f\": 2.5, \"big\": 1e300, \"s\": \"é\","
			       " \"n\": null, \"t\": true, \"a\": [1, [2]], \"o\": {\"k\": \"v\"}}");
	vd_tv *v = NULL;
	char *out = NULL;
	vd_chat_template *t;

	ck_assert_int_eq(vd_tv_from_cjson(j, &v), VD_OK);
	ck_assert_int_eq(vd_tv_kind_of(vd_tv_dict_get(v, "i")), VD_TV_INT);
	ck_assert_int_eq(vd_tv_kind_of(vd_tv_dict_get(v, "f")), VD_TV_FLOAT);
	ck_assert_int_eq(vd_tv_kind_of(vd_tv_dict_get(v, "big")), VD_TV_FLOAT);
	ck_assert_int_eq(vd_tv_kind_of(vd_tv_dict_get(v, "n")), VD_TV_NONE);
	ck_assert_int_eq(vd_chat_template_compile("{{ i }} {{ neg }} {{ f }} {{ big }} {{ s }} {{ n }}"
						  " {{ t }} {{ a }} {{ o }}", &t), VD_OK);
	ck_assert_int_eq(vd_chat_template_render(t, v, &out), VD_OK);
	ck_assert_str_eq(out, "3 -7 2.5 1e+300 é None True [1, [2]] {'k': 'v'}");
	free(out);
	vd_chat_template_free(t);
	vd_tv_free(v);
	cJSON_Delete(j);
	ck_assert_int_eq(vd_tv_from_cjson(NULL, &v), VD_ERR_INVALID_ARG);
	ck_assert_ptr_null(v);
}
END_TEST

/* ---- threads ---- */

typedef struct {
	const vd_chat_template *t;
	const vd_tv *ctx;
	const char *want;
	int bad;
} thread_job;

static void *render_many(void *arg)
{
	thread_job *job = arg;

	for (int i = 0; i < 200; i++) {
		char *out = NULL;

		if (vd_chat_template_render(job->t, job->ctx, &out) != VD_OK ||
		    strcmp(out, job->want) != 0)
			job->bad++;
		free(out);
	}
	return NULL;
}

START_TEST(test_concurrent_renders)
{
	char path[1024], *want = NULL;
	vd_chat_template *t = NULL;
	cJSON *j = cJSON_Parse("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": "
			       "\"image\"}, {\"type\": \"text\", \"text\": \"a\"}]}, {\"role\": "
			       "\"assistant\", \"content\": \"b\"}, {\"role\": \"user\", \"content\": "
			       "\"c\"}], \"add_generation_prompt\": true, \"add_vision_id\": true}");
	vd_tv *ctx = NULL;
	pthread_t th[4];
	thread_job jobs[4];

	snprintf(path, sizeof(path), "%s/conf/qwen2vl.jinja", srcdir());
	ck_assert_int_eq(vd_chat_template_load_file(path, &t), VD_OK);
	ck_assert_int_eq(vd_tv_from_cjson(j, &ctx), VD_OK);
	ck_assert_int_eq(vd_chat_template_render(t, ctx, &want), VD_OK);
	ck_assert_ptr_nonnull(strstr(want, "Picture 1: <|vision_start|>"));
	for (int i = 0; i < 4; i++) {
		jobs[i] = (thread_job){ .t = t, .ctx = ctx, .want = want };
		ck_assert_int_eq(pthread_create(&th[i], NULL, render_many, &jobs[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
		ck_assert_int_eq(jobs[i].bad, 0);
	}
	free(want);
	vd_tv_free(ctx);
	cJSON_Delete(j);
	vd_chat_template_free(t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("chat_template");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_golden_jinja2_parity);
	tcase_add_test(tc, test_shipped_templates);
	tcase_add_test(tc, test_whitespace_control);
	tcase_add_test(tc, test_expressions);
	tcase_add_test(tc, test_syntax_error_locations);
	tcase_add_test(tc, test_unknown_filter_and_test);
	tcase_add_test(tc, test_render_errors);
	tcase_add_test(tc, test_nesting_limit);
	tcase_add_test(tc, test_memory_limit);
	tcase_add_test(tc, test_strftime_now);
	tcase_add_test(tc, test_strftime_fixed_now);
	tcase_add_test(tc, test_load_file_errors);
	tcase_add_test(tc, test_tv_api);
	tcase_add_test(tc, test_tv_from_cjson);
	tcase_add_test(tc, test_concurrent_renders);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
