/* Tokenizer tests: parity with Hugging Face tokenizers on the real Llama-2,
 * LLaVA (Llama-2 + <image>/<pad>, also as transformers 5 rebuilds it) and
 * Qwen2 tokenizer files over the
 * committed corpus (tests/data/tok/corpus.jsonl vs expected_*.jsonl, made by
 * scripts/tok-expected.js), incremental detokenization, special tokens,
 * added-token flags on a small synthetic tokenizer, errors, and speed.
 * Data: $VD_TEST_DATA (default tests/data); the tokenizer files come from
 * scripts/make-tokenizers.sh. */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vllmd/tokenizer.h"

/* llava_tf5 is LLaVA's tokenizer as transformers 5 rebuilds it (Metaspace
 * instead of Prepend/Replace); its expectations equal transformers'. */
enum { LLAMA2, LLAVA, LLAVA_TF5, QWEN2, N_MODELS };
static const char *const model_names[N_MODELS] = {"llama2", "llava", "llava_tf5", "qwen2"};

typedef struct line {
	char *text; /* corpus string (may hold NULs) */
	size_t len;
	int32_t *ids[N_MODELS]; /* expected ids */
	size_t n_ids[N_MODELS];
	char *dec[N_MODELS], *dec_skip[N_MODELS]; /* expected decodes */
	size_t dec_len[N_MODELS], dec_skip_len[N_MODELS];
} line;

static vd_tokenizer *g_tok[N_MODELS];
static char g_err[N_MODELS][1024];
static line *g_lines;
static size_t g_n_lines;
static char g_data_err[1024];

static const char *data_dir(void)
{
	const char *d = getenv("VD_TEST_DATA");
	return d && *d ? d : "tests/data";
}

static char *read_all(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 20, len = 0, k;
	char *p = malloc(cap + 1);
	while (p && (k = fread(p + len, 1, cap - len, f)) > 0) {
		len += k;
		if (len == cap) {
			char *q = realloc(p, 2 * cap + 1);
			if (!q) {
				free(p);
				p = NULL;
				break;
			}
			p = q;
			cap *= 2;
		}
	}
	fclose(f);
	if (p)
		p[len] = '\0';
	*n = len;
	return p;
}

static char *from_hex(const char *hex, size_t *n)
{
	size_t len = strlen(hex) / 2;
	char *out = malloc(len + 1);
	for (size_t i = 0; out && i < len; i++) {
		unsigned v;
		sscanf(hex + 2 * i, "%2x", &v);
		out[i] = (char)v;
	}
	if (out)
		out[len] = '\0';
	*n = len;
	return out;
}

/* A JSON text field, or its "<key>_hex" twin when present (texts with NUL). */
static char *text_field(const cJSON *o, const char *key, size_t *n)
{
	char hk[64];
	snprintf(hk, sizeof(hk), "%s_hex", key);
	const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, hk);
	if (cJSON_IsString(h))
		return from_hex(h->valuestring, n);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsString(v))
		return NULL;
	*n = strlen(v->valuestring);
	return strdup(v->valuestring);
}

/* Iterate the lines of a JSONL file: calls fn(index, object). */
static int each_jsonl(const char *path, int (*fn)(size_t, const cJSON *, int), int model)
{
	size_t n;
	char *all = read_all(path, &n);
	if (!all) {
		snprintf(g_data_err, sizeof(g_data_err),
			 "cannot read %s (committed test data; set VD_TEST_DATA to tests/data)", path);
		return -1;
	}
	size_t idx = 0;
	int rc = 0;
	for (char *p = all, *nl; *p && !rc; p = nl + 1) {
		nl = strchr(p, '\n');
		if (!nl)
			nl = p + strlen(p);
		*nl = '\0';
		cJSON *o = cJSON_Parse(p);
		if (!o) {
			snprintf(g_data_err, sizeof(g_data_err), "%s:%zu: bad JSON", path, idx + 1);
			rc = -1;
		} else {
			rc = fn(idx++, o, model);
			cJSON_Delete(o);
		}
		if (nl == all + n)
			break;
	}
	free(all);
	return rc;
}

static int add_corpus_line(size_t idx, const cJSON *o, int model)
{
	(void)model;
	line *grown = realloc(g_lines, (idx + 1) * sizeof(*g_lines));
	if (!grown)
		return -1;
	g_lines = grown;
	memset(&g_lines[idx], 0, sizeof(*g_lines));
	const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "hex");
	if (!cJSON_IsString(h))
		return -1;
	g_lines[idx].text = from_hex(h->valuestring, &g_lines[idx].len);
	g_n_lines = idx + 1;
	return 0;
}

static int add_expected_line(size_t idx, const cJSON *o, int m)
{
	if (idx >= g_n_lines) {
		snprintf(g_data_err, sizeof(g_data_err), "expected_%s.jsonl is longer than the corpus",
			 model_names[m]);
		return -1;
	}
	line *l = &g_lines[idx];
	const cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "ids"), *e;
	l->n_ids[m] = (size_t)cJSON_GetArraySize(ids);
	l->ids[m] = malloc((l->n_ids[m] + 1) * sizeof(int32_t));
	size_t k = 0;
	cJSON_ArrayForEach(e, ids) l->ids[m][k++] = (int32_t)e->valuedouble;
	l->dec[m] = text_field(o, "text", &l->dec_len[m]);
	l->dec_skip[m] = text_field(o, "text_skip", &l->dec_skip_len[m]);
	return l->dec[m] && l->dec_skip[m] ? 0 : -1;
}

static void setup_all(void)
{
	char a[4096], b[4096];
	for (int m = 0; m < N_MODELS; m++) {
		snprintf(a, sizeof(a), "%s/tok/%s/tokenizer.json", data_dir(), model_names[m]);
		snprintf(b, sizeof(b), "%s/tok/%s/tokenizer_config.json", data_dir(), model_names[m]);
		vd_status st = vd_tokenizer_load(a, b, &g_tok[m]);
		if (st)
			snprintf(g_err[m], sizeof(g_err[m]),
				 "%s tokenizer not loaded (%s: %s); scripts/make-tokenizers.sh makes it",
				 model_names[m], vd_status_str(st), vd_error_message());
	}
	snprintf(a, sizeof(a), "%s/tok/corpus.jsonl", data_dir());
	if (each_jsonl(a, add_corpus_line, 0))
		return;
	for (int m = 0; m < N_MODELS; m++) {
		snprintf(a, sizeof(a), "%s/tok/expected_%s.jsonl", data_dir(), model_names[m]);
		if (each_jsonl(a, add_expected_line, m))
			return;
	}
}

static void teardown_all(void)
{
	for (int m = 0; m < N_MODELS; m++) {
		vd_tokenizer_destroy(g_tok[m]);
		g_tok[m] = NULL;
	}
	for (size_t i = 0; i < g_n_lines; i++) {
		free(g_lines[i].text);
		for (int m = 0; m < N_MODELS; m++) {
			free(g_lines[i].ids[m]);
			free(g_lines[i].dec[m]);
			free(g_lines[i].dec_skip[m]);
		}
	}
	free(g_lines);
	g_lines = NULL;
	g_n_lines = 0;
}

static vd_tokenizer *tok(int m)
{
	ck_assert_msg(g_tok[m] != NULL, "%s", g_err[m]);
	return g_tok[m];
}

static void need_corpus(void)
{
	ck_assert_msg(!g_data_err[0], "%s", g_data_err);
	ck_assert_msg(g_n_lines >= 2000, "corpus has %zu lines, want >= 2000", g_n_lines);
	for (int m = 0; m < N_MODELS; m++)
		ck_assert_msg(g_lines[g_n_lines - 1].dec[m] != NULL,
			      "expected_%s.jsonl is shorter than the corpus", model_names[m]);
}

static bool utf8_ok(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		unsigned c = u[i];
		size_t len = c < 0x80 ? 1 : c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3
			   : c >= 0xF0 && c < 0xF5 ? 4 : 0;
		if (!len || i + len > n)
			return false;
		for (size_t k = 1; k < len; k++)
			if ((u[i + k] & 0xC0) != 0x80)
				return false;
		if ((c == 0xE0 && u[i + 1] < 0xA0) || (c == 0xED && u[i + 1] > 0x9F) ||
		    (c == 0xF0 && u[i + 1] < 0x90) || (c == 0xF4 && u[i + 1] > 0x8F))
			return false;
		i += len;
	}
	return true;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
	fprintf(stderr, "  %s (%zu):", what, n);
	for (size_t i = 0; i < n && i < 64; i++)
		fprintf(stderr, " %d", ids[i]);
	fprintf(stderr, n > 64 ? " ...\n" : "\n");
}

/* ---- parity over the corpus ---------------------------------------------- */

static void check_parity(int m)
{
	vd_tokenizer *t = tok(m);
	need_corpus();
	size_t bad_ids = 0, bad_dec = 0, bad_skip = 0;
	for (size_t i = 0; i < g_n_lines; i++) {
		const line *l = &g_lines[i];
		int32_t *ids;
		size_t n;
		vd_status st = vd_tokenizer_encode(t, l->text, l->len, true, &ids, &n);
		ck_assert_msg(st == VD_OK, "%s line %zu: encode: %s", model_names[m], i + 1,
			      vd_error_message());
		if (n != l->n_ids[m] || memcmp(ids, l->ids[m], n * sizeof(*ids))) {
			if (bad_ids++ < 5) {
				fprintf(stderr, "%s corpus line %zu: ids differ\n", model_names[m], i + 1);
				print_ids("want", l->ids[m], l->n_ids[m]);
				print_ids("got ", ids, n);
			}
		}
		char *d = NULL, *ds = NULL;
		ck_assert_int_eq(vd_tokenizer_decode(t, l->ids[m], l->n_ids[m], false, &d), VD_OK);
		ck_assert_int_eq(vd_tokenizer_decode(t, l->ids[m], l->n_ids[m], true, &ds), VD_OK);
		/* Texts with U+0000 compare up to it: decode returns a C string. */
		if (strcmp(d, l->dec[m]) && bad_dec++ < 5)
			fprintf(stderr, "%s corpus line %zu: decode differs\n  want: %s\n  got:  %s\n",
				model_names[m], i + 1, l->dec[m], d);
		if (strcmp(ds, l->dec_skip[m]) && bad_skip++ < 5)
			fprintf(stderr, "%s corpus line %zu: skip decode differs\n  want: %s\n  got:  %s\n",
				model_names[m], i + 1, l->dec_skip[m], ds);
		free(d);
		free(ds);
		free(ids);
	}
	ck_assert_msg(bad_ids == 0, "%s: %zu of %zu corpus lines encode differently from HF",
		      model_names[m], bad_ids, g_n_lines);
	ck_assert_msg(bad_dec == 0, "%s: %zu decodes differ from HF", model_names[m], bad_dec);
	ck_assert_msg(bad_skip == 0, "%s: %zu skip-special decodes differ from HF",
		      model_names[m], bad_skip);
}

START_TEST(test_parity_llama2) { check_parity(LLAMA2); }
END_TEST
START_TEST(test_parity_llava) { check_parity(LLAVA); }
END_TEST
START_TEST(test_parity_llava_tf5) { check_parity(LLAVA_TF5); }
END_TEST
START_TEST(test_parity_qwen2) { check_parity(QWEN2); }
END_TEST

/* ---- incremental detokenization ------------------------------------------ */

typedef struct sbuf {
	char *p;
	size_t n;
} sbuf;

static void sbuf_add(sbuf *b, const char *s)
{
	size_t k = strlen(s);
	b->p = realloc(b->p, b->n + k + 1);
	ck_assert_ptr_nonnull(b->p);
	memcpy(b->p + b->n, s, k + 1);
	b->n += k;
}

/* Stream gen through a detokenizer with prompt context; returns the
 * concatenated deltas + flush, asserting each delta is valid UTF-8. */
static char *stream(vd_tokenizer *t, bool skip, const int32_t *prompt, size_t np,
		    const int32_t *gen, size_t ng)
{
	vd_detok *d;
	ck_assert_int_eq(vd_detok_create(t, skip, prompt, np, &d), VD_OK);
	sbuf acc = {0};
	sbuf_add(&acc, "");
	const char *delta;
	for (size_t i = 0; i < ng; i++) {
		ck_assert_int_eq(vd_detok_push(d, gen[i], &delta), VD_OK);
		ck_assert_msg(utf8_ok(delta, strlen(delta)), "delta %zu is not valid UTF-8", i);
		sbuf_add(&acc, delta);
	}
	ck_assert_int_eq(vd_detok_flush(d, &delta), VD_OK);
	ck_assert(utf8_ok(delta, strlen(delta)));
	sbuf_add(&acc, delta);
	vd_detok_destroy(d);
	return acc.p;
}

static void check_detok(int m)
{
	vd_tokenizer *t = tok(m);
	need_corpus();
	size_t checked_ctx = 0;
	for (size_t i = 0; i < g_n_lines; i++) {
		const line *l = &g_lines[i];
		if (memchr(l->text, 0, l->len))
			continue; /* deltas are C strings */
		for (int skip = 0; skip < 2; skip++) {
			char *full;
			ck_assert_int_eq(vd_tokenizer_decode(t, l->ids[m], l->n_ids[m], skip, &full), VD_OK);
			char *got = stream(t, skip, NULL, 0, l->ids[m], l->n_ids[m]);
			ck_assert_msg(!strcmp(got, full),
				      "%s line %zu skip=%d: streamed \"%s\" != decoded \"%s\"",
				      model_names[m], i + 1, skip, got, full);
			free(got);
			free(full);
		}
		/* With the first third as prompt: the deltas are what decoding the
		 * prompt plus the generation adds to decoding the prompt alone. */
		size_t np = l->n_ids[m] / 3;
		char *a, *b;
		ck_assert_int_eq(vd_tokenizer_decode(t, l->ids[m], np, false, &a), VD_OK);
		ck_assert_int_eq(vd_tokenizer_decode(t, l->ids[m], l->n_ids[m], false, &b), VD_OK);
		if (!strncmp(a, b, strlen(a))) {
			char *got = stream(t, false, l->ids[m], np, l->ids[m] + np, l->n_ids[m] - np);
			ck_assert_msg(!strcmp(got, b + strlen(a)),
				      "%s line %zu: streamed \"%s\" after a prompt, want \"%s\"",
				      model_names[m], i + 1, got, b + strlen(a));
			free(got);
			checked_ctx++;
		}
		free(a);
		free(b);
	}
	ck_assert_msg(checked_ctx > g_n_lines * 9 / 10, "only %zu lines checked with a prompt",
		      checked_ctx);
}

START_TEST(test_detok_llama2) { check_detok(LLAMA2); }
END_TEST
START_TEST(test_detok_qwen2) { check_detok(QWEN2); }
END_TEST

/* Random ids: bytes split anywhere, invalid sequences, specials. */
START_TEST(test_detok_random)
{
	for (int m = 0; m < N_MODELS; m++) {
		vd_tokenizer *t = tok(m);
		unsigned seed = 12345;
		int32_t ids[48];
		int32_t nv = vd_tokenizer_vocab_size(t);
		for (int round = 0; round < 300; round++) {
			for (int i = 0; i < 48; i++) {
				seed = seed * 1103515245u + 12345u;
				unsigned r = seed >> 8;
				/* Half the ids from the byte tokens' neighbourhood. */
				ids[i] = (r & 1) ? (int32_t)(r % (unsigned)nv)
				       : m == QWEN2 ? (int32_t)(r % 256) : (int32_t)(3 + r % 256);
				/* No byte 0 (Llama <0x00>, byte-level U+0100): deltas are
				 * C strings. */
				if (ids[i] == 3 || strstr(vd_tokenizer_id_to_token(t, ids[i]), "\xC4\x80"))
					ids[i] = 4;
			}
			for (int skip = 0; skip < 2; skip++) {
				char *full;
				ck_assert_int_eq(vd_tokenizer_decode(t, ids, 48, skip, &full), VD_OK);
				char *got = stream(t, skip, NULL, 0, ids, 48);
				if (strcmp(got, full)) {
					print_ids("ids", ids, 48);
					ck_abort_msg("%s round %d skip %d: streamed \"%s\" != decoded \"%s\"",
						     model_names[m], round, skip, got, full);
				}
				free(got);
				free(full);
			}
		}
	}
}
END_TEST

/* vLLM keeps the space of the first generated word after a prompt. */
START_TEST(test_detok_prompt_space)
{
	vd_tokenizer *t = tok(LLAMA2);
	const char *p = "USER: hi ASSISTANT:";
	int32_t *pid, *gid;
	size_t np, ng;
	ck_assert_int_eq(vd_tokenizer_encode(t, p, strlen(p), true, &pid, &np), VD_OK);
	ck_assert_int_eq(vd_tokenizer_encode(t, "Hello there", 11, false, &gid, &ng), VD_OK);
	vd_detok *d;
	const char *delta;
	ck_assert_int_eq(vd_detok_create(t, true, pid, np, &d), VD_OK);
	ck_assert_int_eq(vd_detok_push(d, gid[0], &delta), VD_OK);
	ck_assert_str_eq(delta, " Hello");
	ck_assert_int_eq(vd_detok_push(d, gid[1], &delta), VD_OK);
	ck_assert_str_eq(delta, " there");
	ck_assert_int_eq(vd_detok_push(d, 2, &delta), VD_OK); /* </s>, skipped */
	ck_assert_str_eq(delta, "");
	/* an id past the tokenizer (padded model vocab) decodes to nothing */
	ck_assert_int_eq(vd_detok_push(d, 40000, &delta), VD_OK);
	ck_assert_str_eq(delta, "");
	ck_assert_int_eq(vd_detok_flush(d, &delta), VD_OK);
	ck_assert_str_eq(delta, "");
	vd_detok_destroy(d);
	/* Without a prompt the first word loses its space, as decode does. */
	char *got = stream(t, false, NULL, 0, gid, ng);
	ck_assert_str_eq(got, "Hello there");
	free(got);
	free(pid);
	free(gid);
}
END_TEST

/* An emoji in byte-fallback tokens: nothing until the character is whole. */
START_TEST(test_detok_holds_partial_utf8)
{
	vd_tokenizer *t = tok(LLAMA2);
	const char *s = "ok 🤗!";
	int32_t *ids;
	size_t n;
	ck_assert_int_eq(vd_tokenizer_encode(t, s, strlen(s), false, &ids, &n), VD_OK);
	/* ▁ok ▁ <0xF0> <0x9F> <0xA4> <0x97> ! */
	ck_assert_uint_eq(n, 7);
	vd_detok *d;
	const char *delta;
	sbuf acc = {0};
	sbuf_add(&acc, "");
	ck_assert_int_eq(vd_detok_create(t, false, NULL, 0, &d), VD_OK);
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(vd_detok_push(d, ids[i], &delta), VD_OK);
		if (i >= 2 && i <= 5)
			ck_assert_msg(!strchr(delta, '\xF0') && !strstr(delta, "\xEF\xBF\xBD"),
				      "partial emoji leaked at %zu", i);
		sbuf_add(&acc, delta);
	}
	ck_assert_int_eq(vd_detok_flush(d, &delta), VD_OK);
	sbuf_add(&acc, delta);
	ck_assert_str_eq(acc.p, s);
	free(acc.p);
	vd_detok_destroy(d);
	/* Cut before the last byte: flush gives what decode gives (U+FFFDs). */
	ck_assert_int_eq(vd_detok_create(t, false, NULL, 0, &d), VD_OK);
	acc = (sbuf){0};
	sbuf_add(&acc, "");
	for (size_t i = 0; i < 5; i++) {
		ck_assert_int_eq(vd_detok_push(d, ids[i], &delta), VD_OK);
		sbuf_add(&acc, delta);
	}
	ck_assert_str_eq(acc.p, "ok ");
	ck_assert_int_eq(vd_detok_flush(d, &delta), VD_OK);
	sbuf_add(&acc, delta);
	char *full;
	ck_assert_int_eq(vd_tokenizer_decode(t, ids, 5, false, &full), VD_OK);
	ck_assert_str_eq(acc.p, full);
	ck_assert_str_eq(full, "ok \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
	free(full);
	free(acc.p);
	vd_detok_destroy(d);
	free(ids);
}
END_TEST

/* ---- known ids and special tokens ------------------------------------------ */

static void expect_ids(vd_tokenizer *t, const char *s, bool add, const int32_t *want, size_t nw)
{
	int32_t *ids;
	size_t n;
	ck_assert_int_eq(vd_tokenizer_encode(t, s, strlen(s), add, &ids, &n), VD_OK);
	if (n != nw || (n && memcmp(ids, want, n * sizeof(*ids)))) {
		print_ids("want", want, nw);
		print_ids("got ", ids, n);
		ck_abort_msg("encode(\"%s\") differs", s);
	}
	free(ids);
}

START_TEST(test_known_ids)
{
	vd_tokenizer *l = tok(LLAMA2), *v = tok(LLAVA), *q = tok(QWEN2);
	ck_assert_int_eq(vd_tokenizer_token_to_id(l, "\xE2\x96\x81"), 29871);
	ck_assert_int_eq(vd_tokenizer_token_to_id(l, "\xE2\x96\x81US"), 3148);
	ck_assert_int_eq(vd_tokenizer_token_to_id(l, "<0x0A>"), 13);
	ck_assert_int_eq(vd_tokenizer_token_to_id(l, "<s>"), 1);
	ck_assert_int_eq(vd_tokenizer_token_to_id(l, "no such token"), -1);
	ck_assert_str_eq(vd_tokenizer_id_to_token(l, 3148), "\xE2\x96\x81US");
	ck_assert_ptr_null(vd_tokenizer_id_to_token(l, 32000));
	ck_assert_int_eq(vd_tokenizer_vocab_size(l), 32000);
	ck_assert_int_eq(vd_tokenizer_vocab_size(v), 32002);
	ck_assert_int_eq(vd_tokenizer_vocab_size(q), 151669);
	ck_assert_int_eq(vd_tokenizer_bos_id(l), 1);
	ck_assert_int_eq(vd_tokenizer_eos_id(l), 2);
	ck_assert_int_eq(vd_tokenizer_bos_id(q), -1);
	ck_assert_int_eq(vd_tokenizer_eos_id(q), 151645);
	ck_assert_ptr_null(vd_tokenizer_chat_template(l));
	ck_assert_ptr_nonnull(vd_tokenizer_chat_template(q));
	ck_assert_ptr_nonnull(strstr(vd_tokenizer_chat_template(q), "<|im_start|>"));
	ck_assert_int_eq(vd_tokenizer_token_to_id(v, "<image>"), 32000);
	ck_assert_int_eq(vd_tokenizer_token_to_id(v, "<pad>"), 32001);
	ck_assert(vd_tokenizer_is_special(v, 32000));
	ck_assert(vd_tokenizer_is_special(q, 151655));
	ck_assert(!vd_tokenizer_is_special(q, 151657)); /* <tool_call> */
	ck_assert(!vd_tokenizer_is_special(q, 9707));
	ck_assert(!vd_tokenizer_is_special(q, -1));

	static const int32_t llava_prompt[] = {1, 3148, 1001, 29901, 29871, 32000, 29871, 13};
	expect_ids(v, "USER: <image>\n", true, llava_prompt, 8);
	expect_ids(tok(LLAVA_TF5), "USER: <image>\n", true, llava_prompt, 8);
	/* A leading space: Prepend adds a second "▁", Metaspace does not. */
	static const int32_t sp_legacy[] = {1, 29871, 263}, sp_tf5[] = {1, 263};
	expect_ids(v, " a", true, sp_legacy, 3);
	expect_ids(tok(LLAVA_TF5), " a", true, sp_tf5, 2);
	static const int32_t hello[] = {1, 15043, 3186};
	expect_ids(l, "Hello world", true, hello, 3);
	expect_ids(l, "Hello world", false, hello + 1, 2);
	static const int32_t bos_only[] = {1};
	expect_ids(l, "", true, bos_only, 1);
	expect_ids(l, "", false, NULL, 0);
	expect_ids(q, "", true, NULL, 0);
	static const int32_t qchat[] = {151644, 872, 198, 151652, 151655, 151653, 6023, 151645};
	expect_ids(q, "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>",
		   true, qchat, 8);
}
END_TEST

START_TEST(test_skip_special)
{
	vd_tokenizer *q = tok(QWEN2), *v = tok(LLAVA);
	static const int32_t ids[] = {151644, 872, 198, 151657, 6023, 151645};
	char *s;
	ck_assert_int_eq(vd_tokenizer_decode(q, ids, 6, false, &s), VD_OK);
	ck_assert_str_eq(s, "<|im_start|>user\n<tool_call>hi<|im_end|>");
	free(s);
	ck_assert_int_eq(vd_tokenizer_decode(q, ids, 6, true, &s), VD_OK);
	ck_assert_str_eq(s, "user\n<tool_call>hi"); /* <tool_call> is not special */
	free(s);
	static const int32_t lids[] = {1, 3148, 1001, 29901, 29871, 32000, 15043, 2};
	ck_assert_int_eq(vd_tokenizer_decode(v, lids, 8, false, &s), VD_OK);
	ck_assert_str_eq(s, "<s> USER: <image> Hello</s>");
	free(s);
	ck_assert_int_eq(vd_tokenizer_decode(v, lids, 8, true, &s), VD_OK);
	ck_assert_str_eq(s, "USER:  Hello");
	free(s);
	ck_assert_int_eq(vd_tokenizer_decode(v, NULL, 0, true, &s), VD_OK);
	ck_assert_str_eq(s, "");
	free(s);
}
END_TEST

/* ---- synthetic tokenizer: added-token flags, other pipeline pieces --------- */

static char g_tmpdir[256];

static char *write_tmp(const char *name, const char *content)
{
	if (!g_tmpdir[0]) {
		snprintf(g_tmpdir, sizeof(g_tmpdir), "/tmp/vd_test_tok.XXXXXX");
		ck_assert_ptr_nonnull(mkdtemp(g_tmpdir));
	}
	char *path = malloc(512);
	snprintf(path, 512, "%s/%s", g_tmpdir, name);
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	fputs(content, f);
	fclose(f);
	return path;
}

/* Remove the file and its directory (one temporary file lives at a time). */
static void rm_tmp(char *path)
{
	unlink(path);
	free(path);
	rmdir(g_tmpdir);
	g_tmpdir[0] = '\0';
}

/* Byte-level BPE over a tiny alphabet: "a","b","c","ab","abc","Ġ","Ġab",
 * merges as pairs; added tokens with every flag. */
static const char *SYN_JSON =
	"{\"added_tokens\":["
	"{\"id\":7,\"content\":\"<L>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":false,\"normalized\":false,\"special\":true},"
	"{\"id\":8,\"content\":\"<R>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":true,\"normalized\":false,\"special\":true},"
	"{\"id\":9,\"content\":\"cab\",\"single_word\":true,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false},"
	"{\"id\":10,\"content\":\"<N>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":true,\"special\":false},"
	"{\"id\":11,\"content\":\"<L><R>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}],"
	"\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKC\"},"
	"{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"x+\"},\"content\":\"a\"}]},"
	"\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true},"
	"\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},"
	"{\"SpecialToken\":{\"id\":\"<R>\",\"type_id\":0}}],\"special_tokens\":{\"<R>\":{\"id\":\"<R>\",\"ids\":[8],\"tokens\":[\"<R>\"]}}},"
	"\"decoder\":{\"type\":\"ByteLevel\"},"
	"\"model\":{\"type\":\"BPE\",\"unk_token\":\"c\",\"fuse_unk\":true,\"byte_fallback\":false,"
	"\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"abc\":4,\"\\u0120\":5,\"\\u0120ab\":6,\"<\":12,\">\":13,\"N\":14,\"\\u0120a\":15},"
	"\"merges\":[[\"a\",\"b\"],[\"ab\",\"c\"],[\"\\u0120\",\"ab\"],[\"\\u0120\",\"a\"]]}}";

START_TEST(test_synthetic_pipeline)
{
	char *p = write_tmp("syn.json", SYN_JSON);
	vd_tokenizer *t;
	vd_status st = vd_tokenizer_load(p, NULL, &t);
	ck_assert_msg(st == VD_OK, "%s", vd_error_message());
	/* " ab" ByteLevel prefix space, merges: Ġ a b -> Ġ ab (rank 2 beats Ġa 3)
	 * -> Ġab; template appends <R>. "zz" is out of vocab: fused unk = "c". */
	static const int32_t w1[] = {6, 8};
	expect_ids(t, "ab", true, w1, 2);
	static const int32_t w2[] = {6, 5, 2};
	expect_ids(t, "ab zz", false, w2, 3);
	/* lstrip eats the spaces before <L>; rstrip eats those after <R>. */
	static const int32_t w3[] = {6, 7, 5, 8, 6};
	expect_ids(t, "ab  <L> <R>   ab", false, w3, 5);
	/* Longest match: "<L><R>" is one token. */
	static const int32_t w4[] = {11};
	expect_ids(t, "<L><R>", false, w4, 1);
	/* single_word: "cab" alone is the token, inside a word it is not. */
	static const int32_t w5[] = {5, 9, 5};
	expect_ids(t, " cab ", false, w5, 3);
	static const int32_t w6[] = {5, 2, 4};
	expect_ids(t, " cabc", false, w6, 3);
	/* NFKC folds the fullwidth ａ; Replace(Regex x+ -> a) runs after. */
	static const int32_t w7[] = {6, 15};
	expect_ids(t, "\xEF\xBD\x81" "b xxx", false, w7, 2);
	/* A normalized added token matches in the normalized text. */
	static const int32_t w8[] = {15, 10};
	expect_ids(t, "x<N>", false, w8, 2);
	char *s;
	static const int32_t d1[] = {6, 7, 5, 4, 8};
	ck_assert_int_eq(vd_tokenizer_decode(t, d1, 5, false, &s), VD_OK);
	ck_assert_str_eq(s, " ab<L> abc<R>");
	free(s);
	ck_assert_int_eq(vd_tokenizer_decode(t, d1, 5, true, &s), VD_OK);
	ck_assert_str_eq(s, " ab abc");
	free(s);
	/* a hole in the ids decodes to nothing */
	ck_assert_int_eq(vd_tokenizer_decode(t, (const int32_t[]){16}, 1, false, &s), VD_OK);
	ck_assert_str_eq(s, "");
	free(s);
	vd_tokenizer_destroy(t);
	rm_tmp(p);
}
END_TEST

/* Metaspace pre-tokenizer/decoder, Split behaviours, "a b" merges, no
 * decoder (tokens joined by spaces). */
START_TEST(test_synthetic_metaspace_split)
{
	const char *json =
		"{\"added_tokens\":[],\"normalizer\":null,"
		"\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
		"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Removed\",\"invert\":false},"
		"{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[0-9]\"},\"behavior\":\"MergedWithPrevious\",\"invert\":false},"
		"{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\",\"split\":true}]},"
		"\"post_processor\":null,"
		"\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\",\"split\":true},"
		"\"model\":{\"type\":\"BPE\",\"unk_token\":null,"
		"\"vocab\":{\"\\u2581\":0,\"a\":1,\"b\":2,\"1\":3,\"\\u2581a\":4,\"ab\":5,\"\\u2581ab\":6,\"ab1\":7},"
		"\"merges\":[\"a b\",\"\\u2581 ab\",\"\\u2581 a\",\"ab 1\"]}}";
	char *p = write_tmp("meta.json", json);
	vd_tokenizer *t;
	ck_assert_int_eq(vd_tokenizer_load(p, NULL, &t), VD_OK);
	/* "ab ab-ab1b": split on "-" (removed) -> "ab ab","ab1b"; digits merge
	 * with what precedes -> "ab ab","ab1","b"; metaspace: first piece gets
	 * ▁ (prepend_scheme first), spaces -> ▁ and split before each ▁. */
	static const int32_t w[] = {6, 6, 7, 2};
	expect_ids(t, "ab ab-ab1b", true, w, 4);
	char *s;
	ck_assert_int_eq(vd_tokenizer_decode(t, w, 4, false, &s), VD_OK);
	ck_assert_str_eq(s, "ab abab1b");
	free(s);
	vd_tokenizer_destroy(t);
	rm_tmp(p);

	/* No decoder: HF joins token strings with spaces. */
	const char *plain = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[]}}";
	p = write_tmp("plain.json", plain);
	ck_assert_int_eq(vd_tokenizer_load(p, NULL, &t), VD_OK);
	ck_assert_int_eq(vd_tokenizer_decode(t, (const int32_t[]){0, 1, 0}, 3, false, &s), VD_OK);
	ck_assert_str_eq(s, "a b a");
	free(s);
	static const int32_t ab[] = {0, 1};
	expect_ids(t, "ab", true, ab, 2);
	vd_tokenizer_destroy(t);
	rm_tmp(p);
}
END_TEST

/* ---- errors ----------------------------------------------------------------- */

static void expect_load_error(const char *json, vd_status want, const char *needle)
{
	char *p = write_tmp("bad.json", json);
	vd_tokenizer *t = (vd_tokenizer *)1;
	vd_status st = vd_tokenizer_load(p, NULL, &t);
	ck_assert_msg(st == want, "load gave %s, want %s (%s)", vd_status_str(st),
		      vd_status_str(want), vd_error_message());
	ck_assert_ptr_null(t);
	ck_assert_msg(strstr(vd_error_message(), needle), "message \"%s\" lacks \"%s\"",
		      vd_error_message(), needle);
	rm_tmp(p);
}

START_TEST(test_errors)
{
	vd_tokenizer *t = NULL;
	ck_assert_int_eq(vd_tokenizer_load("/nonexistent/tokenizer.json", NULL, &t), VD_ERR_IO);
	ck_assert_ptr_null(t);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "/nonexistent/tokenizer.json"));
	ck_assert_int_eq(vd_tokenizer_load(NULL, NULL, &t), VD_ERR_INVALID_ARG);
	expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {", VD_ERR_FORMAT, "not valid JSON");
	expect_load_error("[1, 2]", VD_ERR_FORMAT, "not a JSON object");
	expect_load_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", VD_ERR_UNSUPPORTED,
			  "WordPiece");
	expect_load_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", VD_ERR_UNSUPPORTED,
			  "Unigram");
	expect_load_error("{\"normalizer\": {\"type\": \"BertNormalizer\"}, \"model\": {\"type\": \"BPE\","
			  " \"vocab\": {\"a\": 0}, \"merges\": []}}",
			  VD_ERR_UNSUPPORTED, "BertNormalizer");
	expect_load_error("{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\","
			  " \"vocab\": {\"a\": 0}, \"merges\": []}}",
			  VD_ERR_UNSUPPORTED, "Whitespace");
	expect_load_error("{\"decoder\": {\"type\": \"CTC\"}, \"model\": {\"type\": \"BPE\","
			  " \"vocab\": {\"a\": 0}, \"merges\": []}}",
			  VD_ERR_UNSUPPORTED, "CTC");
	expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}",
			  VD_ERR_FORMAT, "not in the vocab");
	expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}",
			  VD_ERR_FORMAT, "bad id");
	expect_load_error("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"},"
			  " \"behavior\": \"Isolated\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0},"
			  " \"merges\": []}}",
			  VD_ERR_UNSUPPORTED, "regex");

	vd_tokenizer *q = tok(QWEN2);
	int32_t *ids = (int32_t *)1;
	size_t n = 7;
	static const char *const bad[] = {"\xff", "abc\xc3", "\xed\xa0\x80", "\xc0\xaf",
					  "\xf4\x90\x80\x80", "ok\x80ok"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		ck_assert_int_eq(vd_tokenizer_encode(q, bad[i], strlen(bad[i]), true, &ids, &n),
				 VD_ERR_INVALID_ARG);
		ck_assert_ptr_null(ids);
		ck_assert_uint_eq(n, 0);
	}
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "UTF-8"));
	/* ids with no token decode to nothing, as in HF */
	char *s = NULL, *s5 = NULL;
	ck_assert_int_eq(vd_tokenizer_decode(q, (const int32_t[]){5, 999999, -1}, 3, false, &s), VD_OK);
	ck_assert_int_eq(vd_tokenizer_decode(q, (const int32_t[]){5}, 1, false, &s5), VD_OK);
	ck_assert_str_eq(s, s5);
	free(s);
	free(s5);
	vd_detok *d;
	ck_assert_int_eq(vd_detok_create(q, false, (const int32_t[]){-5}, 1, &d), VD_OK);
	vd_detok_destroy(d);
	vd_tokenizer_destroy(NULL);
	vd_detok_destroy(NULL);
}
END_TEST

/* ---- speed ------------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* This thread's CPU seconds: unlike the wall clock, not stretched when
 * other work on a loaded machine preempts the test. */
static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds to encode the first `len` bytes of the corpus (joined, cut at
 * a character boundary), best of three. */
static double encode_best_time(vd_tokenizer *t, size_t len)
{
	char *big = malloc(len + 1);
	size_t k = 0;
	double best = 1e9;

	ck_assert_ptr_nonnull(big);
	for (size_t i = 0; k < len; i++) {
		const line *l = &g_lines[i % g_n_lines];
		for (size_t j = 0; j < l->len && k < len; j++)
			big[k++] = l->text[j] ? l->text[j] : ' ';
	}
	while (k > 0 && ((unsigned char)big[k - 1] & 0xC0) == 0x80)
		k--; /* do not end inside a character */
	if (k > 0 && (unsigned char)big[k - 1] >= 0xC0)
		k--;
	big[k] = '\0';
	for (int rep = 0; rep < 3; rep++) {
		int32_t *ids;
		size_t n;
		double t0 = cpu_s(), dt;

		ck_assert_int_eq(vd_tokenizer_encode(t, big, k, true, &ids, &n), VD_OK);
		dt = cpu_s() - t0;
		ck_assert_uint_gt(n, k / 16);
		best = dt < best ? dt : best;
		free(ids);
	}
	free(big);
	return best;
}

START_TEST(test_speed)
{
	need_corpus();
	static const int timed[] = {LLAMA2, QWEN2};
	for (int k = 0; k < 2; k++) {
		int m = timed[k];
		vd_tokenizer *t = tok(m);
		size_t tokens = 0, bytes = 0;
		double t0 = now_s();
		for (size_t i = 0; i < g_n_lines; i++) {
			int32_t *ids;
			size_t n;
			ck_assert_int_eq(vd_tokenizer_encode(t, g_lines[i].text, g_lines[i].len, true, &ids, &n),
					 VD_OK);
			tokens += n;
			bytes += g_lines[i].len;
			free(ids);
		}
		double dt = now_s() - t0;
		fprintf(stderr, "tokenizer %s: encoded %zu corpus bytes into %zu tokens in %.1f ms: %.2f M tokens/s\n",
			model_names[m], bytes, tokens, dt * 1e3, tokens / dt / 1e6);
		/* BPE is O(n log n): encoding 64 kB of mixed text must cost about 8x
		 * what 8 kB costs, where a quadratic slip costs 64x. The ratio of two
		 * CPU times (best of three each) is independent of the machine's
		 * speed and of its load; the 20 ms of slack absorbs cache effects. */
		double t_small = encode_best_time(t, 8192), t_big = encode_best_time(t, 65536);
		fprintf(stderr, "tokenizer %s: 8 kB in %.3f ms, 64 kB in %.3f ms (%.1fx)\n",
			model_names[m], t_small * 1e3, t_big * 1e3, t_big / t_small);
		ck_assert_msg(t_big < 24.0 * t_small + 0.020,
			      "64 kB took %.3f s against %.3f s for 8 kB: worse than linear", t_big,
			      t_small);
	}
}
END_TEST

static Suite *tokenizer_suite(void)
{
	Suite *s = suite_create("tokenizer");
	TCase *tc = tcase_create("real");
	tcase_add_unchecked_fixture(tc, setup_all, teardown_all);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_known_ids);
	tcase_add_test(tc, test_parity_llama2);
	tcase_add_test(tc, test_parity_llava);
	tcase_add_test(tc, test_parity_llava_tf5);
	tcase_add_test(tc, test_parity_qwen2);
	tcase_add_test(tc, test_skip_special);
	tcase_add_test(tc, test_detok_llama2);
	tcase_add_test(tc, test_detok_qwen2);
	tcase_add_test(tc, test_detok_random);
	tcase_add_test(tc, test_detok_prompt_space);
	tcase_add_test(tc, test_detok_holds_partial_utf8);
	tcase_add_test(tc, test_synthetic_pipeline);
	tcase_add_test(tc, test_synthetic_metaspace_split);
	tcase_add_test(tc, test_errors);
	tcase_add_test(tc, test_speed);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(tokenizer_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
