/* Tokenizer from a Hugging Face tokenizer.json, following the `tokenizers`
 * crate step by step: added tokens are split out of the raw text (then out of
 * the normalized text), the rest is normalized, pre-tokenized and run through
 * the BPE model; the post-processor template adds BOS/EOS. Decoding runs the
 * decoder chain over token strings. Everything is read-only after load, so a
 * tokenizer may be shared by threads; per-call scratch lives on the stack. */
#include "vllmd/tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/tokenizer_internal.h"

/* The GPT-2 split that ByteLevel applies when use_regex is true. */
#define GPT2_REGEX \
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
/* Template marker for "the encoded sequence goes here". */
#define TMPL_SEQ INT32_MIN
/* vLLM's detokenizer starts from this many prompt tokens before read_offset
 * (INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET) and keeps 2 more as context. */
#define DETOK_OFFSET 5

typedef enum { NORM_PREPEND, NORM_REPLACE, NORM_UNICODE } norm_kind;

typedef struct norm_step {
	norm_kind kind;
	char *str; /* prepend text / replacement content */
	size_t str_len;
	vd_tok_pattern pat;
	utf8proc_option_t form; /* NORM_UNICODE */
} norm_step;

typedef enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE } pre_kind;
typedef enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS } behavior;
typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } prepend_scheme;

typedef struct pre_step {
	pre_kind kind;
	vd_tok_pattern pat; /* Split pattern, GPT-2 regex, or the metaspace char */
	behavior behavior;
	bool invert, add_prefix_space, use_regex, split;
	prepend_scheme scheme;
	char repl[5]; /* metaspace replacement, UTF-8 */
	size_t repl_len;
} pre_step;

typedef enum { DEC_REPLACE, DEC_BYTE_FALLBACK, DEC_FUSE, DEC_STRIP, DEC_BYTELEVEL, DEC_METASPACE } dec_kind;

typedef struct dec_step {
	dec_kind kind;
	vd_tok_pattern pat;
	char *content; /* Replace content */
	size_t content_len;
	uint32_t cp; /* Strip content / Metaspace replacement */
	size_t start, stop;
	bool prepend; /* Metaspace: the first token's replacement chars vanish */
} dec_step;

typedef struct added_tok {
	int32_t id;
	char *content, *norm; /* norm: content normalized (normalized tokens) */
	size_t len, norm_len;
	bool single_word, lstrip, rstrip, normalized, special;
} added_tok;

/* Leftmost-longest matcher over some added tokens: candidates indexed by
 * first byte, longest first. */
typedef struct matcher {
	uint32_t *idx; /* indices into added[] */
	uint32_t lo[257];
	bool use_norm;
} matcher;

struct vd_tokenizer {
	vd_tok_bpe bpe;
	norm_step *norm;
	size_t n_norm;
	pre_step *pre;
	size_t n_pre;
	dec_step *dec;
	size_t n_dec;
	bool has_decoder;
	bool dec_byte_fallback; /* the decoder has a ByteFallback step */
	added_tok *added;
	size_t n_added;
	matcher raw, normd;
	int32_t n_ids;
	const char **id_tok; /* id -> token string (added content wins) */
	uint32_t *id_len;
	unsigned char *id_special;
	vd_tok_strmap added_map; /* keyed by added_keys[id] */
	const char **added_keys;
	uint32_t *added_key_len;
	int32_t *tmpl; /* single-sequence template, TMPL_SEQ for $A */
	size_t n_tmpl;
	bool has_tmpl;
	int32_t bos_id, eos_id;
	char *chat_template;
};

/* ======================================================================== */
/* Loading                                                                   */
/* ======================================================================== */

static vd_status read_file(const char *path, const char *what, char **out, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return vd_errorf(VD_ERR_IO, "open %s %s: %s (run scripts/make-tokenizers.sh for the test tokenizers)",
				 what, path, strerror(errno));
	vd_tok_buf b = {0};
	char chunk[65536];
	size_t k;
	vd_status st = VD_OK;
	while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if ((st = vd_tok_buf_append(&b, chunk, k)))
			break;
	if (!st && ferror(f))
		st = vd_errorf(VD_ERR_IO, "read %s %s: %s", what, path, strerror(errno));
	fclose(f);
	if (!st && !b.p)
		st = vd_tok_buf_append(&b, "", 0);
	if (st) {
		vd_tok_buf_free(&b);
		return st;
	}
	*out = b.p;
	*n = b.len;
	return VD_OK;
}

static vd_status parse_json(const char *path, const char *what, cJSON **out)
{
	char *text;
	size_t n;
	vd_status st = read_file(path, what, &text, &n);
	if (st)
		return st;
	const char *end = NULL;
	*out = cJSON_ParseWithLengthOpts(text, n, &end, false);
	if (!*out) {
		size_t at = end ? (size_t)(end - text) : 0;
		st = vd_errorf(VD_ERR_FORMAT, "%s %s is not valid JSON (error near byte %zu)", what,
			       path, at);
	} else if (!cJSON_IsObject(*out)) {
		cJSON_Delete(*out);
		*out = NULL;
		st = vd_errorf(VD_ERR_FORMAT, "%s %s: top level is not a JSON object", what, path);
	}
	free(text);
	return st;
}

static const cJSON *item(const cJSON *o, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(o, key);
}

static const char *type_of(const cJSON *o)
{
	const cJSON *t = item(o, "type");
	return cJSON_IsString(t) ? t->valuestring : "(no type)";
}

static bool bool_or(const cJSON *o, const char *key, bool dflt)
{
	const cJSON *v = item(o, key);
	return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static vd_status dup_str(const char *s, size_t n, char **out)
{
	*out = malloc(n + 1);
	if (!*out)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	memcpy(*out, s, n);
	(*out)[n] = '\0';
	return VD_OK;
}

/* {"String": s} or {"Regex": r}. */
static vd_status load_pattern(const cJSON *o, const char *what, vd_tok_pattern *p)
{
	const cJSON *s = item(o, "String"), *r = item(o, "Regex");
	if (cJSON_IsString(s))
		return vd_tok_pattern_init(p, s->valuestring, strlen(s->valuestring), false, what);
	if (cJSON_IsString(r))
		return vd_tok_pattern_init(p, r->valuestring, strlen(r->valuestring), true, what);
	return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: %s pattern is not {String|Regex}", what);
}

/* A single-character string field (Strip content, Metaspace replacement). */
static vd_status load_char(const cJSON *o, const char *key, const char *what, uint32_t *cp)
{
	const cJSON *v = item(o, key);
	size_t i = 0, n = cJSON_IsString(v) ? strlen(v->valuestring) : 0;
	if (n && vd_tok_utf8_valid(v->valuestring, n)) {
		*cp = vd_tok_utf8_next(v->valuestring, &i);
		if (i == n)
			return VD_OK;
	}
	return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: %s.%s is not one character", what, key);
}

static vd_status load_scheme(const cJSON *o, const char *what, prepend_scheme *out)
{
	const cJSON *s = item(o, "prepend_scheme");
	*out = PREPEND_ALWAYS;
	if (cJSON_IsString(s)) {
		if (!strcmp(s->valuestring, "first"))
			*out = PREPEND_FIRST;
		else if (!strcmp(s->valuestring, "never"))
			*out = PREPEND_NEVER;
		else if (strcmp(s->valuestring, "always"))
			return vd_errorf(VD_ERR_UNSUPPORTED, "tokenizer.json: %s prepend_scheme %s",
					 what, s->valuestring);
	}
	if (!bool_or(o, "add_prefix_space", true))
		*out = PREPEND_NEVER;
	return VD_OK;
}

static vd_status load_normalizer(vd_tokenizer *t, const cJSON *o)
{
	if (!o || cJSON_IsNull(o))
		return VD_OK;
	const char *ty = type_of(o);
	if (!strcmp(ty, "Sequence")) {
		const cJSON *e;
		vd_status st;
		cJSON_ArrayForEach(e, item(o, "normalizers"))
			if ((st = load_normalizer(t, e)))
				return st;
		return VD_OK;
	}
	bool prepend = !strcmp(ty, "Prepend"), replace = !strcmp(ty, "Replace");
	bool unicode = !strcmp(ty, "NFC") || !strcmp(ty, "NFD") || !strcmp(ty, "NFKC") ||
		       !strcmp(ty, "NFKD");
	if (!prepend && !replace && !unicode)
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "tokenizer.json: normalizer %s is not supported (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD)",
				 ty);
	const cJSON *v = item(o, prepend ? "prepend" : "content");
	if (!unicode && !cJSON_IsString(v))
		return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: %s normalizer without %s", ty,
				 prepend ? "prepend" : "content");
	norm_step *grown = realloc(t->norm, (t->n_norm + 1) * sizeof(*t->norm));
	if (!grown)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	t->norm = grown;
	/* Counted before its parts load so that destroy frees them on error. */
	norm_step *s = &t->norm[t->n_norm++];
	memset(s, 0, sizeof(*s));
	if (unicode) {
		s->kind = NORM_UNICODE;
		s->form = UTF8PROC_STABLE |
			  (ty[strlen(ty) - 1] == 'C' ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE);
		if (ty[2] == 'K')
			s->form |= UTF8PROC_COMPAT;
		return VD_OK;
	}
	s->kind = prepend ? NORM_PREPEND : NORM_REPLACE;
	s->str_len = strlen(v->valuestring);
	vd_status st = dup_str(v->valuestring, s->str_len, &s->str);
	if (!st && replace)
		st = load_pattern(item(o, "pattern"), "Replace normalizer", &s->pat);
	return st;
}

static vd_status load_split_behavior(const cJSON *o, behavior *b)
{
	static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
					    "MergedWithNext", "Contiguous"};
	const cJSON *v = item(o, "behavior");
	for (int i = 0; cJSON_IsString(v) && i < 5; i++)
		if (!strcmp(v->valuestring, names[i])) {
			*b = (behavior)i;
			return VD_OK;
		}
	return vd_errorf(VD_ERR_UNSUPPORTED, "tokenizer.json: Split behavior %s is not supported",
			 cJSON_IsString(v) ? v->valuestring : "(missing)");
}

static vd_status load_pre_tokenizer(vd_tokenizer *t, const cJSON *o)
{
	if (!o || cJSON_IsNull(o))
		return VD_OK;
	const char *ty = type_of(o);
	if (!strcmp(ty, "Sequence")) {
		const cJSON *e;
		vd_status st;
		cJSON_ArrayForEach(e, item(o, "pretokenizers"))
			if ((st = load_pre_tokenizer(t, e)))
				return st;
		return VD_OK;
	}
	if (strcmp(ty, "Split") && strcmp(ty, "ByteLevel") && strcmp(ty, "Metaspace"))
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "tokenizer.json: pre-tokenizer %s is not supported (supported: Sequence, Split, ByteLevel, Metaspace)",
				 ty);
	pre_step *grown = realloc(t->pre, (t->n_pre + 1) * sizeof(*t->pre));
	if (!grown)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	t->pre = grown;
	pre_step *s = &t->pre[t->n_pre++];
	memset(s, 0, sizeof(*s));
	vd_status st;
	if (!strcmp(ty, "Split")) {
		s->kind = PRE_SPLIT;
		s->invert = bool_or(o, "invert", false);
		if ((st = load_split_behavior(o, &s->behavior)))
			return st;
		return load_pattern(item(o, "pattern"), "Split pre-tokenizer", &s->pat);
	}
	if (!strcmp(ty, "ByteLevel")) {
		s->kind = PRE_BYTELEVEL;
		s->add_prefix_space = bool_or(o, "add_prefix_space", true);
		s->use_regex = bool_or(o, "use_regex", true);
		if (!s->use_regex)
			return VD_OK;
		return vd_tok_pattern_init(&s->pat, GPT2_REGEX, strlen(GPT2_REGEX), true,
					   "ByteLevel pre-tokenizer");
	}
	s->kind = PRE_METASPACE;
	uint32_t cp;
	if ((st = load_char(o, "replacement", "Metaspace", &cp)) ||
	    (st = load_scheme(o, "Metaspace", &s->scheme)))
		return st;
	s->repl_len = vd_tok_utf8_put(cp, s->repl);
	s->split = bool_or(o, "split", true);
	return vd_tok_pattern_init(&s->pat, s->repl, s->repl_len, false, "Metaspace");
}

static vd_status load_decoder(vd_tokenizer *t, const cJSON *o)
{
	if (!o || cJSON_IsNull(o))
		return VD_OK;
	t->has_decoder = true;
	const char *ty = type_of(o);
	if (!strcmp(ty, "Sequence")) {
		const cJSON *e;
		vd_status st;
		cJSON_ArrayForEach(e, item(o, "decoders"))
			if ((st = load_decoder(t, e)))
				return st;
		return VD_OK;
	}
	static const char *const names[] = {"Replace", "ByteFallback", "Fuse",
					    "Strip", "ByteLevel", "Metaspace"};
	int kind = -1;
	for (int i = 0; i < 6; i++)
		if (!strcmp(ty, names[i]))
			kind = i;
	if (kind < 0)
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "tokenizer.json: decoder %s is not supported (supported: Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace)",
				 ty);
	dec_step *grown = realloc(t->dec, (t->n_dec + 1) * sizeof(*t->dec));
	if (!grown)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	t->dec = grown;
	dec_step *s = &t->dec[t->n_dec++];
	memset(s, 0, sizeof(*s));
	s->kind = (dec_kind)kind;
	t->dec_byte_fallback |= s->kind == DEC_BYTE_FALLBACK;
	vd_status st = VD_OK;
	const cJSON *v;
	prepend_scheme scheme;
	switch (s->kind) {
	case DEC_REPLACE:
		v = item(o, "content");
		if (!cJSON_IsString(v))
			return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: Replace decoder without content");
		s->content_len = strlen(v->valuestring);
		if (!(st = dup_str(v->valuestring, s->content_len, &s->content)))
			st = load_pattern(item(o, "pattern"), "Replace decoder", &s->pat);
		break;
	case DEC_STRIP:
		if ((st = load_char(o, "content", "Strip decoder", &s->cp)))
			break;
		v = item(o, "start");
		s->start = cJSON_IsNumber(v) && v->valuedouble > 0 ? (size_t)v->valuedouble : 0;
		v = item(o, "stop");
		s->stop = cJSON_IsNumber(v) && v->valuedouble > 0 ? (size_t)v->valuedouble : 0;
		break;
	case DEC_METASPACE:
		if (!(st = load_char(o, "replacement", "Metaspace decoder", &s->cp)) &&
		    !(st = load_scheme(o, "Metaspace decoder", &scheme)))
			s->prepend = scheme != PREPEND_NEVER;
		break;
	default:
		break;
	}
	return st;
}

/* Post-processor: TemplateProcessing gives the single-sequence template;
 * ByteLevel only trims offsets, which we do not track. */
static vd_status load_post_processor(vd_tokenizer *t, const cJSON *o)
{
	if (!o || cJSON_IsNull(o))
		return VD_OK;
	const char *ty = type_of(o);
	if (!strcmp(ty, "ByteLevel"))
		return VD_OK;
	if (!strcmp(ty, "Sequence")) {
		const cJSON *e;
		vd_status st;
		cJSON_ArrayForEach(e, item(o, "processors"))
			if ((st = load_post_processor(t, e)))
				return st;
		return VD_OK;
	}
	if (strcmp(ty, "TemplateProcessing"))
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "tokenizer.json: post-processor %s is not supported (supported: TemplateProcessing, ByteLevel, Sequence)",
				 ty);
	const cJSON *single = item(o, "single"), *specials = item(o, "special_tokens"), *e;
	if (!cJSON_IsArray(single))
		return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: TemplateProcessing without single");
	free(t->tmpl);
	t->tmpl = NULL;
	t->n_tmpl = 0;
	t->has_tmpl = true;
	cJSON_ArrayForEach(e, single)
	{
		const cJSON *sp = item(e, "SpecialToken"), *sq = item(e, "Sequence");
		const cJSON *ids = NULL, *id;
		if (sp) {
			const cJSON *name = item(sp, "id");
			const cJSON *def = cJSON_IsString(name) ? item(specials, name->valuestring) : NULL;
			ids = item(def, "ids");
			if (!cJSON_IsArray(ids))
				return vd_errorf(VD_ERR_FORMAT,
						 "tokenizer.json: template special token %s has no ids",
						 cJSON_IsString(name) ? name->valuestring : "?");
		} else if (!sq) {
			return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: bad TemplateProcessing item");
		}
		size_t add = ids ? (size_t)cJSON_GetArraySize(ids) : 1;
		int32_t *grown = realloc(t->tmpl, (t->n_tmpl + add + 1) * sizeof(*grown));
		if (!grown)
			return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		t->tmpl = grown;
		if (!ids) {
			t->tmpl[t->n_tmpl++] = TMPL_SEQ;
			continue;
		}
		cJSON_ArrayForEach(id, ids)
		{
			if (!cJSON_IsNumber(id) || id->valuedouble < 0)
				return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: bad template token id");
			t->tmpl[t->n_tmpl++] = (int32_t)id->valuedouble;
		}
	}
	return VD_OK;
}

static vd_status load_added_tokens(vd_tokenizer *t, const cJSON *arr)
{
	if (!arr || cJSON_IsNull(arr))
		return VD_OK;
	if (!cJSON_IsArray(arr))
		return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: added_tokens is not an array");
	size_t n = (size_t)cJSON_GetArraySize(arr);
	t->added = calloc(n ? n : 1, sizeof(*t->added));
	if (!t->added)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	const cJSON *e;
	cJSON_ArrayForEach(e, arr)
	{
		const cJSON *c = item(e, "content"), *id = item(e, "id");
		if (!cJSON_IsString(c) || !cJSON_IsNumber(id) || id->valuedouble < 0 ||
		    id->valuedouble >= (1 << 24))
			return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: added token %zu is malformed",
					 t->n_added);
		added_tok *a = &t->added[t->n_added++];
		a->id = (int32_t)id->valuedouble;
		a->len = strlen(c->valuestring);
		a->special = bool_or(e, "special", false);
		a->single_word = bool_or(e, "single_word", false);
		a->lstrip = bool_or(e, "lstrip", false);
		a->rstrip = bool_or(e, "rstrip", false);
		a->normalized = bool_or(e, "normalized", !a->special);
		vd_status st = dup_str(c->valuestring, a->len, &a->content);
		if (st)
			return st;
	}
	return VD_OK;
}

static vd_status normalize(const vd_tokenizer *t, pcre2_match_data *md, const char *s,
			   size_t n, vd_tok_buf bufs[2], const char **out, size_t *out_n);

/* Normalized tokens match against normalized text, so their pattern is their
 * content run through the normalizer (e.g. Llama's Prepend makes "▁<x>"). */
static vd_status build_matchers(vd_tokenizer *t)
{
	pcre2_match_data *md = vd_tok_match_data();
	vd_tok_buf bufs[2] = {{0}, {0}};
	vd_status st = VD_OK;
	if (!md)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	for (size_t i = 0; i < t->n_added && !st; i++) {
		added_tok *a = &t->added[i];
		const char *s;
		size_t n;
		if (!a->normalized || !t->n_norm)
			continue;
		if (!(st = normalize(t, md, a->content, a->len, bufs, &s, &n)))
			st = dup_str(s, n, &a->norm);
		a->norm_len = n;
	}
	vd_tok_buf_free(&bufs[0]);
	vd_tok_buf_free(&bufs[1]);
	pcre2_match_data_free(md);
	if (st)
		return st;
	matcher *ms[2] = {&t->raw, &t->normd};
	for (int k = 0; k < 2; k++) {
		matcher *m = ms[k];
		m->use_norm = k == 1;
		m->idx = malloc((t->n_added ? t->n_added : 1) * sizeof(*m->idx));
		if (!m->idx)
			return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		/* Counting sort by first byte; insertion within a bucket keeps the
		 * longest first (few added tokens share a first byte). */
		uint32_t count[256] = {0};
		for (size_t i = 0; i < t->n_added; i++) {
			const added_tok *a = &t->added[i];
			size_t len = m->use_norm ? (a->norm ? a->norm_len : a->len) : a->len;
			if (a->normalized == m->use_norm && len)
				count[(unsigned char)(m->use_norm && a->norm ? a->norm : a->content)[0]]++;
		}
		m->lo[0] = 0;
		for (int b = 0; b < 256; b++)
			m->lo[b + 1] = m->lo[b] + count[b];
		uint32_t fill[256];
		memcpy(fill, m->lo, sizeof(fill));
		for (size_t i = 0; i < t->n_added; i++) {
			const added_tok *a = &t->added[i];
			const char *p = m->use_norm && a->norm ? a->norm : a->content;
			size_t len = m->use_norm && a->norm ? a->norm_len : a->len;
			if (a->normalized != m->use_norm || !len)
				continue;
			unsigned char b = (unsigned char)p[0];
			uint32_t j = fill[b]++;
			while (j > m->lo[b]) {
				const added_tok *o = &t->added[m->idx[j - 1]];
				size_t olen = m->use_norm && o->norm ? o->norm_len : o->len;
				if (olen >= len)
					break;
				m->idx[j] = m->idx[j - 1];
				j--;
			}
			m->idx[j] = (uint32_t)i;
		}
	}
	return VD_OK;
}

/* id -> token table (added content overrides the model's string) and the
 * added-token map used by token_to_id. */
static vd_status build_id_table(vd_tokenizer *t)
{
	int32_t n = t->bpe.n_vocab;
	for (size_t i = 0; i < t->n_added; i++)
		if (t->added[i].id >= n)
			n = t->added[i].id + 1;
	t->n_ids = n;
	t->id_tok = calloc((size_t)n + 1, sizeof(*t->id_tok));
	t->id_len = calloc((size_t)n + 1, sizeof(*t->id_len));
	t->id_special = calloc((size_t)n + 1, 1);
	t->added_keys = calloc((size_t)n + 1, sizeof(*t->added_keys));
	t->added_key_len = calloc((size_t)n + 1, sizeof(*t->added_key_len));
	if (!t->id_tok || !t->id_len || !t->id_special || !t->added_keys || !t->added_key_len)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	for (int32_t i = 0; i < t->bpe.n_vocab; i++) {
		t->id_tok[i] = t->bpe.tok[i];
		t->id_len[i] = t->bpe.tok_len[i];
	}
	vd_status st = vd_tok_strmap_init(&t->added_map, t->n_added, t->added_keys,
					  t->added_key_len);
	if (st)
		return st;
	for (size_t i = 0; i < t->n_added; i++) {
		const added_tok *a = &t->added[i];
		t->id_tok[a->id] = t->added_keys[a->id] = a->content;
		t->id_len[a->id] = t->added_key_len[a->id] = (uint32_t)a->len;
		t->id_special[a->id] = a->special;
		vd_tok_strmap_put(&t->added_map, a->id);
	}
	return VD_OK;
}

/* "<s>" or {"content": "<s>", ...} -> its id, or -1. */
static int32_t config_token(const vd_tokenizer *t, const cJSON *cfg, const char *key)
{
	const cJSON *v = item(cfg, key);
	if (cJSON_IsObject(v))
		v = item(v, "content");
	return cJSON_IsString(v) ? vd_tokenizer_token_to_id(t, v->valuestring) : -1;
}

/* transformers rebuilds Llama-style templates from add_bos_token /
 * add_eos_token; do the same when the config sets either explicitly. */
static vd_status apply_config(vd_tokenizer *t, const cJSON *cfg, bool tmpl_ok)
{
	vd_status st;
	t->bos_id = config_token(t, cfg, "bos_token");
	t->eos_id = config_token(t, cfg, "eos_token");
	const cJSON *ab = item(cfg, "add_bos_token"), *ae = item(cfg, "add_eos_token");
	if (tmpl_ok && (cJSON_IsBool(ab) || cJSON_IsBool(ae))) {
		bool bos = cJSON_IsTrue(ab) && t->bos_id >= 0, eos = cJSON_IsTrue(ae) && t->eos_id >= 0;
		free(t->tmpl);
		t->tmpl = malloc(3 * sizeof(*t->tmpl));
		if (!t->tmpl)
			return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		t->n_tmpl = 0;
		t->has_tmpl = true;
		if (bos)
			t->tmpl[t->n_tmpl++] = t->bos_id;
		t->tmpl[t->n_tmpl++] = TMPL_SEQ;
		if (eos)
			t->tmpl[t->n_tmpl++] = t->eos_id;
	}
	const cJSON *ct = item(cfg, "chat_template"), *e;
	if (cJSON_IsArray(ct)) {
		/* [{"name": ..., "template": ...}]: the "default" one, else the first. */
		const cJSON *pick = NULL;
		cJSON_ArrayForEach(e, ct)
		{
			const cJSON *name = item(e, "name");
			if (!pick || (cJSON_IsString(name) && !strcmp(name->valuestring, "default")))
				pick = e;
		}
		ct = item(pick, "template");
	}
	if (cJSON_IsString(ct) &&
	    (st = dup_str(ct->valuestring, strlen(ct->valuestring), &t->chat_template)))
		return st;
	return VD_OK;
}

vd_status vd_tokenizer_load(const char *json_path, const char *config_path, vd_tokenizer **out)
{
	if (!json_path || !out)
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_tokenizer_load: json_path and out are required");
	*out = NULL;
	cJSON *root = NULL, *cfg = NULL;
	vd_status st = parse_json(json_path, "tokenizer", &root);
	if (st)
		return st;
	if (config_path && (st = parse_json(config_path, "tokenizer config", &cfg)))
		goto out_json;
	vd_tokenizer *t = calloc(1, sizeof(*t));
	if (!t) {
		st = vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		goto out_json;
	}
	t->bos_id = t->eos_id = -1;
	const cJSON *model = item(root, "model");
	if (!cJSON_IsObject(model)) {
		st = vd_errorf(VD_ERR_FORMAT, "%s: no \"model\" object", json_path);
		goto fail;
	}
	const char *mt = type_of(model);
	if (strcmp(mt, "BPE") && !(item(model, "merges") && !item(model, "type"))) {
		st = vd_errorf(VD_ERR_UNSUPPORTED,
			       "%s: model type %s is not supported (only BPE is)", json_path, mt);
		goto fail;
	}
	const cJSON *post = item(root, "post_processor");
	bool tmpl_ok = !post || cJSON_IsNull(post) || !strcmp(type_of(post), "TemplateProcessing");
	if ((st = vd_tok_bpe_load(&t->bpe, model)) ||
	    (st = load_normalizer(t, item(root, "normalizer"))) ||
	    (st = load_pre_tokenizer(t, item(root, "pre_tokenizer"))) ||
	    (st = load_decoder(t, item(root, "decoder"))) ||
	    (st = load_post_processor(t, post)) ||
	    (st = load_added_tokens(t, item(root, "added_tokens"))) ||
	    (st = build_matchers(t)) || (st = build_id_table(t)) ||
	    (cfg && (st = apply_config(t, cfg, tmpl_ok))))
		goto fail;
	for (size_t i = 0; i < t->n_tmpl; i++)
		if (t->tmpl[i] != TMPL_SEQ && t->tmpl[i] >= t->n_ids) {
			st = vd_errorf(VD_ERR_FORMAT, "%s: template token id %d is out of the vocab",
				       json_path, t->tmpl[i]);
			goto fail;
		}
	*out = t;
	goto out_json;
fail:
	vd_tokenizer_destroy(t);
out_json:
	cJSON_Delete(cfg);
	cJSON_Delete(root);
	return st;
}

void vd_tokenizer_destroy(vd_tokenizer *t)
{
	if (!t)
		return;
	vd_tok_bpe_free(&t->bpe);
	for (size_t i = 0; i < t->n_norm; i++) {
		free(t->norm[i].str);
		vd_tok_pattern_free(&t->norm[i].pat);
	}
	free(t->norm);
	for (size_t i = 0; i < t->n_pre; i++)
		vd_tok_pattern_free(&t->pre[i].pat);
	free(t->pre);
	for (size_t i = 0; i < t->n_dec; i++) {
		free(t->dec[i].content);
		vd_tok_pattern_free(&t->dec[i].pat);
	}
	free(t->dec);
	for (size_t i = 0; i < t->n_added; i++) {
		free(t->added[i].content);
		free(t->added[i].norm);
	}
	free(t->added);
	free(t->raw.idx);
	free(t->normd.idx);
	free(t->id_tok);
	free(t->id_len);
	free(t->id_special);
	vd_tok_strmap_free(&t->added_map);
	free(t->added_keys);
	free(t->added_key_len);
	free(t->tmpl);
	free(t->chat_template);
	free(t);
}

/* ======================================================================== */
/* Encoding                                                                  */
/* ======================================================================== */

typedef struct range {
	size_t s, e;
	int32_t id; /* added token id, or -1 for text; for splits: 1 = match */
} range;

typedef struct ranges {
	range *v;
	size_t n, cap;
} ranges;

static vd_status ranges_push(ranges *r, size_t s, size_t e, int32_t id)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 32;
		range *v = realloc(r->v, cap * sizeof(*v));
		if (!v)
			return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n++] = (range){s, e, id};
	return VD_OK;
}

typedef struct enc_ctx {
	const vd_tokenizer *t;
	vd_tok_ids out;
	vd_tok_buf nbuf[2], tmp;
	vd_tok_list pl[2];
	ranges raw_seg, norm_seg, found, split;
	pcre2_match_data *md;
} enc_ctx;

static bool below_u0300(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0xCC)
			return false;
	return true;
}

static vd_status normalize(const vd_tokenizer *t, pcre2_match_data *md, const char *s,
			   size_t n, vd_tok_buf bufs[2], const char **out, size_t *out_n)
{
	const char *cur = s;
	size_t cur_n = n;
	vd_status st;
	for (size_t i = 0; i < t->n_norm; i++) {
		const norm_step *ns = &t->norm[i];
		vd_tok_buf *o = &bufs[i & 1];
		o->len = 0;
		switch (ns->kind) {
		case NORM_PREPEND:
			/* HF prepends only to non-empty strings. */
			if (cur_n && (st = vd_tok_buf_append(o, ns->str, ns->str_len)))
				return st;
			st = vd_tok_buf_append(o, cur, cur_n);
			break;
		case NORM_REPLACE:
			st = vd_tok_pattern_replace(&ns->pat, md, cur, cur_n, ns->str, ns->str_len, o);
			break;
		default: {
			/* Text below U+0300 (lead bytes < 0xCC) is already NFC: it has
			 * no combining marks, Hangul jamo or other composables. */
			if (ns->form == (UTF8PROC_STABLE | UTF8PROC_COMPOSE) &&
			    below_u0300(cur, cur_n)) {
				st = vd_tok_buf_append(o, cur, cur_n);
				break;
			}
			utf8proc_uint8_t *dst = NULL;
			utf8proc_ssize_t k = cur_n ? utf8proc_map((const utf8proc_uint8_t *)cur,
								  (utf8proc_ssize_t)cur_n, &dst, ns->form)
						   : 0;
			if (k < 0)
				return vd_errorf(k == UTF8PROC_ERROR_NOMEM ? VD_ERR_NOMEM : VD_ERR_INVALID_ARG,
						 "tokenizer: Unicode normalization failed: %s",
						 utf8proc_errmsg(k));
			st = vd_tok_buf_append(o, dst, (size_t)k);
			free(dst);
			break;
		}
		}
		if (st)
			return st;
		cur = o->p;
		cur_n = o->len;
	}
	*out = cur;
	*out_n = cur_n;
	return VD_OK;
}

/* Start of the run of whitespace that ends s[0..end). */
static size_t space_run_start(const char *s, size_t end)
{
	while (end > 0) {
		size_t b = end - 1;
		while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80)
			b--;
		size_t i = b;
		if (!vd_tok_is_space(vd_tok_utf8_next(s, &i)))
			break;
		end = b;
	}
	return end;
}

static size_t space_run_end(const char *s, size_t n, size_t from)
{
	while (from < n) {
		size_t i = from;
		if (!vd_tok_is_space(vd_tok_utf8_next(s, &i)))
			break;
		from = i;
	}
	return from;
}

static bool word_before(const char *s, size_t end)
{
	if (!end)
		return false;
	size_t b = end - 1;
	while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80)
		b--;
	return vd_tok_is_word(vd_tok_utf8_next(s, &b));
}

static bool word_at(const char *s, size_t n, size_t at)
{
	return at < n && vd_tok_is_word(vd_tok_utf8_next(s, &at));
}

/* HF AddedVocabulary::find_matches: leftmost-longest matches of m's tokens,
 * honouring single_word, lstrip and rstrip; out covers all of s. */
static vd_status split_added(const vd_tokenizer *t, const matcher *m, const char *s,
			     size_t n, ranges *out)
{
	size_t done = 0, i = 0;
	vd_status st;
	out->n = 0;
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		const added_tok *hit = NULL;
		size_t hit_len = 0;
		for (uint32_t k = m->lo[c]; k < m->lo[c + 1]; k++) {
			const added_tok *a = &t->added[m->idx[k]];
			const char *p = m->use_norm && a->norm ? a->norm : a->content;
			size_t len = m->use_norm && a->norm ? a->norm_len : a->len;
			if (len <= n - i && !memcmp(s + i, p, len)) {
				hit = a;
				hit_len = len;
				break;
			}
		}
		if (!hit) {
			i += vd_tok_utf8_len(c);
			continue;
		}
		size_t ms = i, me = i + hit_len;
		if (hit->single_word && (word_before(s, ms) || word_at(s, n, me))) {
			i = me;
			continue;
		}
		if (hit->lstrip) {
			size_t ls = space_run_start(s, ms);
			ms = ls > done ? ls : done;
		}
		if (hit->rstrip)
			me = space_run_end(s, n, me);
		if (done < ms && (st = ranges_push(out, done, ms, -1)))
			return st;
		if ((st = ranges_push(out, ms, me, hit->id)))
			return st;
		done = i = me;
	}
	if (done < n)
		return ranges_push(out, done, n, -1);
	return VD_OK;
}

/* Split s by pattern p with an HF SplitDelimiterBehavior; the kept, non-empty
 * pieces land in c->split. */
static vd_status split_pattern(enc_ctx *c, const vd_tok_pattern *p, behavior b, bool invert,
			       const char *s, size_t n)
{
	ranges *f = &c->found, *o = &c->split;
	size_t pos = 0, ms, me;
	int rc;
	vd_status st;
	f->n = o->n = 0;
	while ((rc = vd_tok_pattern_find(p, c->md, s, n, pos, &ms, &me)) == 1) {
		if (pos < ms && (st = ranges_push(f, pos, ms, invert)))
			return st;
		if ((st = ranges_push(f, ms, me, !invert)))
			return st;
		pos = me;
	}
	if (rc < 0)
		return vd_errorf(VD_ERR_LIMIT, "tokenizer: regex match limit hit on a %zu-byte piece", n);
	if (pos < n && (st = ranges_push(f, pos, n, invert)))
		return st;
	bool prev_match = false;
	if (b == B_MERGED_NEXT) {
		/* Folded from the right, as HF does. */
		for (size_t k = f->n; k-- > 0;) {
			range r = f->v[k];
			if (r.id && !prev_match && o->n)
				o->v[o->n - 1].s = r.s;
			else if ((st = ranges_push(o, r.s, r.e, 0)))
				return st;
			prev_match = r.id;
		}
		for (size_t k = 0; k < o->n / 2; k++) {
			range tmp = o->v[k];
			o->v[k] = o->v[o->n - 1 - k];
			o->v[o->n - 1 - k] = tmp;
		}
		return VD_OK;
	}
	for (size_t k = 0; k < f->n; k++) {
		range r = f->v[k];
		bool merge = (b == B_MERGED_PREV && r.id && !prev_match) ||
			     (b == B_CONTIGUOUS && r.id == prev_match);
		if (b == B_REMOVED && r.id)
			;
		else if (merge && o->n)
			o->v[o->n - 1].e = r.e;
		else if ((st = ranges_push(o, r.s, r.e, 0)))
			return st;
		prev_match = r.id;
	}
	return VD_OK;
}

static vd_status push_bytelevel(vd_tok_list *l, const char *s, size_t n)
{
	vd_status st = vd_tok_list_push(l, "", 0);
	for (size_t i = 0; i < n && !st; i++) {
		char u[4];
		size_t k = vd_tok_utf8_put(vd_tok_byte_cp((unsigned char)s[i]), u);
		st = vd_tok_list_extend_last(l, u, k);
	}
	return st;
}

/* One pre-tokenizer step over every piece of in, appending to out. */
static vd_status pre_step_apply(enc_ctx *c, const pre_step *ps, const vd_tok_list *in,
				vd_tok_list *out, bool first_at_origin)
{
	vd_status st = VD_OK;
	for (size_t i = 0; i < in->n && !st; i++) {
		size_t n;
		const char *s = vd_tok_list_at(in, i, &n);
		switch (ps->kind) {
		case PRE_SPLIT:
			if ((st = split_pattern(c, &ps->pat, ps->behavior, ps->invert, s, n)))
				break;
			for (size_t k = 0; k < c->split.n && !st; k++)
				st = vd_tok_list_push(out, s + c->split.v[k].s,
						      c->split.v[k].e - c->split.v[k].s);
			break;
		case PRE_BYTELEVEL:
			c->tmp.len = 0;
			if (ps->add_prefix_space && (!n || s[0] != ' ') &&
			    (st = vd_tok_buf_append(&c->tmp, " ", 1)))
				break;
			if ((st = vd_tok_buf_append(&c->tmp, s, n)))
				break;
			s = c->tmp.p;
			n = c->tmp.len;
			if (!ps->use_regex) {
				st = push_bytelevel(out, s, n);
				break;
			}
			if ((st = split_pattern(c, &ps->pat, B_ISOLATED, false, s, n)))
				break;
			for (size_t k = 0; k < c->split.n && !st; k++)
				st = push_bytelevel(out, s + c->split.v[k].s,
						    c->split.v[k].e - c->split.v[k].s);
			break;
		case PRE_METASPACE: {
			c->tmp.len = 0;
			/* HF replaces spaces first, then checks the start. */
			bool starts = (n && s[0] == ' ') ||
				      (n >= ps->repl_len && !memcmp(s, ps->repl, ps->repl_len));
			if (!starts && (ps->scheme == PREPEND_ALWAYS ||
					(ps->scheme == PREPEND_FIRST && i == 0 && first_at_origin)) &&
			    (st = vd_tok_buf_append(&c->tmp, ps->repl, ps->repl_len)))
				break;
			for (size_t k = 0; k < n && !st; k++)
				st = s[k] == ' ' ? vd_tok_buf_append(&c->tmp, ps->repl, ps->repl_len)
						 : vd_tok_buf_append(&c->tmp, s + k, 1);
			if (st)
				break;
			s = c->tmp.p;
			n = c->tmp.len;
			if (!ps->split) {
				st = vd_tok_list_push(out, s, n);
				break;
			}
			if ((st = split_pattern(c, &ps->pat, B_MERGED_NEXT, false, s, n)))
				break;
			for (size_t k = 0; k < c->split.n && !st; k++)
				st = vd_tok_list_push(out, s + c->split.v[k].s,
						      c->split.v[k].e - c->split.v[k].s);
			break;
		}
		}
	}
	return st;
}

/* Normalized text without added tokens -> pre-tokenizer -> model. */
static vd_status encode_piece(enc_ctx *c, const char *s, size_t n, bool at_origin)
{
	const vd_tokenizer *t = c->t;
	vd_status st;
	if (!t->n_pre)
		return vd_tok_bpe_encode(&t->bpe, s, n, &c->out);
	vd_tok_list *in = &c->pl[0], *out = &c->pl[1];
	vd_tok_list_clear(in);
	if ((st = vd_tok_list_push(in, s, n)))
		return st;
	for (size_t k = 0; k < t->n_pre; k++) {
		vd_tok_list_clear(out);
		if ((st = pre_step_apply(c, &t->pre[k], in, out, at_origin)))
			return st;
		vd_tok_list *sw = in;
		in = out;
		out = sw;
	}
	for (size_t i = 0; i < in->n; i++) {
		size_t wn;
		const char *w = vd_tok_list_at(in, i, &wn);
		if ((st = vd_tok_bpe_encode(&t->bpe, w, wn, &c->out)))
			return st;
	}
	return VD_OK;
}

/* A raw segment between non-normalized added tokens. */
static vd_status encode_segment(enc_ctx *c, const char *s, size_t n, bool at_origin)
{
	const vd_tokenizer *t = c->t;
	const char *ns;
	size_t nn;
	vd_status st = normalize(t, c->md, s, n, c->nbuf, &ns, &nn);
	if (st || !nn)
		return st;
	if ((st = split_added(t, &t->normd, ns, nn, &c->norm_seg)))
		return st;
	for (size_t k = 0; k < c->norm_seg.n; k++) {
		range r = c->norm_seg.v[k];
		if (r.id >= 0)
			st = vd_tok_ids_push(&c->out, r.id);
		else
			st = encode_piece(c, ns + r.s, r.e - r.s, at_origin && r.s == 0);
		if (st)
			return st;
	}
	return VD_OK;
}

vd_status vd_tokenizer_encode(const vd_tokenizer *t, const char *text, size_t len,
			      bool add_special, int32_t **ids, size_t *n)
{
	if (!t || (!text && len) || !ids || !n)
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_tokenizer_encode: NULL argument");
	*ids = NULL;
	*n = 0;
	if (!text)
		text = "";
	if (!vd_tok_utf8_valid(text, len))
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "vd_tokenizer_encode: input is not valid UTF-8 (%zu bytes)", len);
	enc_ctx c = {.t = t};
	vd_tok_ids res = {0};
	vd_status st = VD_OK;
	c.md = vd_tok_match_data();
	if (!c.md) {
		st = vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		goto out;
	}
	if ((st = split_added(t, &t->raw, text, len, &c.raw_seg)))
		goto out;
	for (size_t k = 0; k < c.raw_seg.n && !st; k++) {
		range r = c.raw_seg.v[k];
		if (r.id >= 0)
			st = vd_tok_ids_push(&c.out, r.id);
		else
			st = encode_segment(&c, text + r.s, r.e - r.s, r.s == 0);
	}
	if (st)
		goto out;
	if (!add_special || !t->has_tmpl) {
		res = c.out;
		c.out = (vd_tok_ids){0};
	} else {
		for (size_t k = 0; k < t->n_tmpl && !st; k++)
			if (t->tmpl[k] != TMPL_SEQ)
				st = vd_tok_ids_push(&res, t->tmpl[k]);
			else
				for (size_t j = 0; j < c.out.n && !st; j++)
					st = vd_tok_ids_push(&res, c.out.v[j]);
	}
	/* Callers always get a buffer, even for no ids. */
	if (!st && !res.v && !(st = vd_tok_ids_push(&res, 0)))
		res.n = 0;
	if (!st) {
		*ids = res.v;
		*n = res.n;
		res.v = NULL;
	}
out:
	free(res.v);
	free(c.out.v);
	vd_tok_buf_free(&c.nbuf[0]);
	vd_tok_buf_free(&c.nbuf[1]);
	vd_tok_buf_free(&c.tmp);
	vd_tok_list_free(&c.pl[0]);
	vd_tok_list_free(&c.pl[1]);
	free(c.raw_seg.v);
	free(c.norm_seg.v);
	free(c.found.v);
	free(c.split.v);
	pcre2_match_data_free(c.md);
	return st;
}

/* ======================================================================== */
/* Decoding                                                                  */
/* ======================================================================== */

static bool byte_token(const char *s, size_t n, unsigned char *b)
{
	static const char hex[] = "0123456789ABCDEFabcdef";
	if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>' || !s[3] || !s[4] ||
	    !strchr(hex, s[3]) || !strchr(hex, s[4]))
		return false;
	char h[3] = {s[3], s[4], 0};
	*b = (unsigned char)strtoul(h, NULL, 16);
	return true;
}

static vd_status flush_bytes(vd_tok_list *out, vd_tok_buf *bytes)
{
	vd_status st = VD_OK;
	if (!bytes->len)
		return VD_OK;
	if (vd_tok_utf8_valid(bytes->p, bytes->len))
		st = vd_tok_list_push(out, bytes->p, bytes->len);
	else /* HF: one U+FFFD per byte of an invalid run */
		for (size_t i = 0; i < bytes->len && !st; i++)
			st = vd_tok_list_push(out, "\xEF\xBF\xBD", 3);
	bytes->len = 0;
	return st;
}

static vd_status dec_step_apply(const dec_step *d, pcre2_match_data *md, const vd_tok_list *in,
				vd_tok_list *out, vd_tok_buf *tmp)
{
	vd_status st = VD_OK;
	tmp->len = 0;
	if (d->kind == DEC_FUSE || d->kind == DEC_BYTELEVEL) {
		for (size_t i = 0; i < in->n && !st; i++) {
			size_t n;
			const char *s = vd_tok_list_at(in, i, &n);
			if (d->kind == DEC_FUSE) {
				st = vd_tok_buf_append(tmp, s, n);
				continue;
			}
			/* A token is byte-mapped only if all its chars are in the
			 * byte alphabet; otherwise (added tokens) its UTF-8 as is. */
			size_t mark = tmp->len;
			for (size_t k = 0; k < n && !st;) {
				int b = vd_tok_char_byte(vd_tok_utf8_next(s, &k));
				if (b < 0) {
					tmp->len = mark;
					st = vd_tok_buf_append(tmp, s, n);
					break;
				}
				char c = (char)b;
				st = vd_tok_buf_append(tmp, &c, 1);
			}
		}
		if (st)
			return st;
		if (d->kind == DEC_FUSE)
			return vd_tok_list_push(out, tmp->p ? tmp->p : "", tmp->len);
		vd_tok_buf fixed = {0};
		if (!(st = vd_tok_utf8_lossy(tmp->p ? tmp->p : "", tmp->len, &fixed)))
			st = vd_tok_list_push(out, fixed.p ? fixed.p : "", fixed.len);
		vd_tok_buf_free(&fixed);
		return st;
	}
	for (size_t i = 0; i < in->n && !st; i++) {
		size_t n;
		const char *s = vd_tok_list_at(in, i, &n);
		unsigned char b;
		switch (d->kind) {
		case DEC_REPLACE:
			tmp->len = 0;
			if (!(st = vd_tok_pattern_replace(&d->pat, md, s, n, d->content, d->content_len, tmp)))
				st = vd_tok_list_push(out, tmp->p, tmp->len);
			break;
		case DEC_BYTE_FALLBACK:
			if (byte_token(s, n, &b)) {
				st = vd_tok_buf_append(tmp, &b, 1);
				break;
			}
			if (!(st = flush_bytes(out, tmp)))
				st = vd_tok_list_push(out, s, n);
			break;
		case DEC_STRIP: {
			size_t a = 0, z = n, cut;
			for (size_t k = 0; k < d->start && a < n; k++) {
				cut = a;
				if (vd_tok_utf8_next(s, &cut) != d->cp)
					break;
				a = cut;
			}
			for (size_t k = 0; k < d->stop && z > a; k++) {
				size_t p = z - 1;
				while (p > a && ((unsigned char)s[p] & 0xC0) == 0x80)
					p--;
				cut = p;
				if (vd_tok_utf8_next(s, &cut) != d->cp)
					break;
				z = p;
			}
			st = vd_tok_list_push(out, s + a, z - a);
			break;
		}
		case DEC_METASPACE: {
			char r[4];
			size_t rl = vd_tok_utf8_put(d->cp, r);
			if ((st = vd_tok_list_push(out, "", 0)))
				break;
			for (size_t k = 0; k < n && !st;) {
				if (n - k >= rl && !memcmp(s + k, r, rl)) {
					if (!(i == 0 && d->prepend))
						st = vd_tok_list_extend_last(out, " ", 1);
					k += rl;
				} else {
					st = vd_tok_list_extend_last(out, s + k, 1);
					k++;
				}
			}
			break;
		}
		default:
			break;
		}
	}
	if (!st && d->kind == DEC_BYTE_FALLBACK)
		st = flush_bytes(out, tmp);
	return st;
}

/* Decode ids into out (appended). */
static vd_status decode_into(const vd_tokenizer *t, const int32_t *ids, size_t n,
			     bool skip_special, vd_tok_buf *out)
{
	vd_tok_list l[2];
	memset(l, 0, sizeof(l));
	vd_tok_buf tmp = {0};
	pcre2_match_data *md = NULL;
	vd_status st = VD_OK;
	size_t cur = 0;
	for (size_t i = 0; i < n; i++) {
		int32_t id = ids[i];
		if (id < 0 || id >= t->n_ids || !t->id_tok[id]) {
			st = vd_errorf(VD_ERR_INVALID_ARG,
				       "tokenizer: id %d at position %zu is not in the vocabulary (size %d)",
				       id, i, t->n_ids);
			goto out;
		}
		if (skip_special && t->id_special[id])
			continue;
		if ((st = vd_tok_list_push(&l[0], t->id_tok[id], t->id_len[id])))
			goto out;
	}
	if (!t->has_decoder) {
		for (size_t i = 0; i < l[0].n && !st; i++) {
			size_t k;
			const char *s = vd_tok_list_at(&l[0], i, &k);
			if (i)
				st = vd_tok_buf_append(out, " ", 1);
			if (!st)
				st = vd_tok_buf_append(out, s, k);
		}
		goto out;
	}
	if (!(md = vd_tok_match_data())) {
		st = vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		goto out;
	}
	for (size_t k = 0; k < t->n_dec; k++) {
		vd_tok_list_clear(&l[cur ^ 1]);
		if ((st = dec_step_apply(&t->dec[k], md, &l[cur], &l[cur ^ 1], &tmp)))
			goto out;
		cur ^= 1;
	}
	for (size_t i = 0; i < l[cur].n && !st; i++) {
		size_t k;
		const char *s = vd_tok_list_at(&l[cur], i, &k);
		st = vd_tok_buf_append(out, s, k);
	}
out:
	if (!st && !out->p)
		st = vd_tok_buf_append(out, "", 0);
	pcre2_match_data_free(md);
	vd_tok_buf_free(&tmp);
	vd_tok_list_free(&l[0]);
	vd_tok_list_free(&l[1]);
	return st;
}

vd_status vd_tokenizer_decode(const vd_tokenizer *t, const int32_t *ids, size_t n,
			      bool skip_special, char **text)
{
	if (!t || (!ids && n) || !text)
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_tokenizer_decode: NULL argument");
	*text = NULL;
	vd_tok_buf b = {0};
	vd_status st = decode_into(t, ids, n, skip_special, &b);
	if (st) {
		vd_tok_buf_free(&b);
		return st;
	}
	*text = b.p;
	return VD_OK;
}

/* ======================================================================== */
/* Lookups                                                                   */
/* ======================================================================== */

int32_t vd_tokenizer_token_to_id(const vd_tokenizer *t, const char *token)
{
	if (!t || !token)
		return -1;
	size_t n = strlen(token);
	int32_t id = vd_tok_strmap_get(&t->added_map, token, n);
	return id >= 0 ? id : vd_tok_strmap_get(&t->bpe.map, token, n);
}

const char *vd_tokenizer_id_to_token(const vd_tokenizer *t, int32_t id)
{
	return t && id >= 0 && id < t->n_ids ? t->id_tok[id] : NULL;
}

int32_t vd_tokenizer_vocab_size(const vd_tokenizer *t)
{
	return t ? t->n_ids : 0;
}

bool vd_tokenizer_is_special(const vd_tokenizer *t, int32_t id)
{
	return t && id >= 0 && id < t->n_ids && t->id_special[id];
}

int32_t vd_tokenizer_bos_id(const vd_tokenizer *t)
{
	return t ? t->bos_id : -1;
}

int32_t vd_tokenizer_eos_id(const vd_tokenizer *t)
{
	return t ? t->eos_id : -1;
}

const char *vd_tokenizer_chat_template(const vd_tokenizer *t)
{
	return t ? t->chat_template : NULL;
}

/* ======================================================================== */
/* Incremental detokenization                                                */
/* ======================================================================== */

/* vLLM's scheme: ids[prefix..read) were already turned into text; each push
 * decodes ids[prefix..] and emits what lies past decode(ids[prefix..read)),
 * unless that text ends in U+FFFD (an incomplete UTF-8 sequence so far) or
 * does not extend the prefix text; then it waits for more ids. With a
 * ByteFallback decoder it also waits while the last id is a <0xXX> token:
 * a further byte token joins its group and can turn a valid character into
 * U+FFFDs, which would contradict text already emitted. */
struct vd_detok {
	const vd_tokenizer *t;
	bool skip;
	vd_tok_ids ids; /* prompt context, then pushed ids */
	size_t n_ctx, prefix, read;
	vd_tok_buf emitted, delta, a, b;
};

/* A <0xXX> token under a ByteFallback decoder (ids must be valid). */
static bool is_byte_id(const vd_tokenizer *t, int32_t id)
{
	unsigned char b;
	return t->dec_byte_fallback && id >= 0 && id < t->n_ids && t->id_tok[id] &&
	       byte_token(t->id_tok[id], t->id_len[id], &b);
}

vd_status vd_detok_create(const vd_tokenizer *t, bool skip_special, const int32_t *prompt,
			  size_t n_prompt, vd_detok **out)
{
	if (!t || !out || (!prompt && n_prompt))
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_detok_create: NULL argument");
	*out = NULL;
	vd_detok *d = calloc(1, sizeof(*d));
	if (!d)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	d->t = t;
	d->skip = skip_special;
	vd_status st = VD_OK;
	/* Like vLLM: the last OFFSET+2 prompt ids (specials dropped when
	 * skipping), prefix OFFSET back from their end; but neither may start
	 * inside a run of byte tokens, which ByteFallback decodes as a whole. */
	size_t from = n_prompt > DETOK_OFFSET + 2 ? n_prompt - (DETOK_OFFSET + 2) : 0;
	while (from > 0 && is_byte_id(t, prompt[from]) && is_byte_id(t, prompt[from - 1]))
		from--;
	for (size_t i = from; i < n_prompt && !st; i++) {
		int32_t id = prompt[i];
		if (id < 0 || id >= t->n_ids || !t->id_tok[id])
			st = vd_errorf(VD_ERR_INVALID_ARG, "vd_detok_create: prompt id %d is not in the vocabulary",
				       id);
		else if (!(skip_special && t->id_special[id]))
			st = vd_tok_ids_push(&d->ids, id);
	}
	if (!st)
		st = vd_tok_buf_append(&d->delta, "", 0);
	if (st) {
		vd_detok_destroy(d);
		return st;
	}
	d->n_ctx = d->read = d->ids.n;
	d->prefix = d->ids.n > DETOK_OFFSET ? d->ids.n - DETOK_OFFSET : 0;
	while (d->prefix > 0 && is_byte_id(t, d->ids.v[d->prefix]) &&
	       is_byte_id(t, d->ids.v[d->prefix - 1]))
		d->prefix--;
	*out = d;
	return VD_OK;
}

void vd_detok_destroy(vd_detok *d)
{
	if (!d)
		return;
	free(d->ids.v);
	vd_tok_buf_free(&d->emitted);
	vd_tok_buf_free(&d->delta);
	vd_tok_buf_free(&d->a);
	vd_tok_buf_free(&d->b);
	free(d);
}

static bool ends_with_fffd(const vd_tok_buf *b)
{
	return b->len >= 3 && !memcmp(b->p + b->len - 3, "\xEF\xBF\xBD", 3);
}

static bool has_prefix(const vd_tok_buf *s, const char *p, size_t n)
{
	return s->len >= n && !memcmp(s->p, p, n);
}

/* a = decode(ids[prefix..read)), b = decode(ids[prefix..]). */
static vd_status detok_windows(vd_detok *d)
{
	vd_status st;
	d->a.len = d->b.len = 0;
	if ((st = decode_into(d->t, d->ids.v + d->prefix, d->read - d->prefix, d->skip, &d->a)))
		return st;
	return decode_into(d->t, d->ids.v + d->prefix, d->ids.n - d->prefix, d->skip, &d->b);
}

static vd_status set_delta(vd_detok *d, const char *s, size_t n)
{
	d->delta.len = 0;
	vd_status st = vd_tok_buf_append(&d->delta, s, n);
	if (!st)
		st = vd_tok_buf_append(&d->emitted, s, n);
	return st;
}

vd_status vd_detok_push(vd_detok *d, int32_t id, const char **delta)
{
	if (!d || !delta)
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_detok_push: NULL argument");
	*delta = "";
	d->delta.len = 0;
	d->delta.p[0] = '\0';
	if (id < 0 || id >= d->t->n_ids || !d->t->id_tok[id])
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_detok_push: id %d is not in the vocabulary",
				 id);
	if (d->skip && d->t->id_special[id])
		return VD_OK;
	vd_status st = vd_tok_ids_push(&d->ids, id);
	if (!st)
		st = detok_windows(d);
	if (st)
		return st;
	if (d->b.len <= d->a.len || ends_with_fffd(&d->b) || !has_prefix(&d->b, d->a.p, d->a.len) ||
	    is_byte_id(d->t, id))
		return VD_OK;
	if ((st = set_delta(d, d->b.p + d->a.len, d->b.len - d->a.len)))
		return st;
	d->prefix = d->read;
	d->read = d->ids.n;
	*delta = d->delta.p;
	return VD_OK;
}

vd_status vd_detok_flush(vd_detok *d, const char **delta)
{
	if (!d || !delta)
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_detok_flush: NULL argument");
	*delta = "";
	d->delta.len = 0;
	d->delta.p[0] = '\0';
	/* What the whole stream should read: decode(context ++ pushed) past
	 * decode(context), or (when the two do not line up, e.g. the prompt
	 * ends inside a byte sequence the generation completes) decode(pushed).
	 * Emit its rest when our deltas are its start. */
	vd_status st;
	d->a.len = d->b.len = 0;
	if ((st = decode_into(d->t, d->ids.v, d->n_ctx, d->skip, &d->a)) ||
	    (st = decode_into(d->t, d->ids.v, d->ids.n, d->skip, &d->b)))
		return st;
	size_t skip = d->a.len;
	if (!has_prefix(&d->b, d->a.p, d->a.len)) {
		d->b.len = 0;
		if ((st = decode_into(d->t, d->ids.v + d->n_ctx, d->ids.n - d->n_ctx, d->skip, &d->b)))
			return st;
		skip = 0;
	}
	const char *full = d->b.p + skip;
	size_t full_n = d->b.len - skip;
	if (full_n >= d->emitted.len && !memcmp(full, d->emitted.p ? d->emitted.p : "", d->emitted.len)) {
		if ((st = set_delta(d, full + d->emitted.len, full_n - d->emitted.len)))
			return st;
	} else {
		/* Not a prefix (a decoder that rewrites earlier text): the window's
		 * pending rest is the best continuation of what was emitted. */
		if ((st = detok_windows(d)))
			return st;
		if (d->b.len > d->a.len && has_prefix(&d->b, d->a.p, d->a.len) &&
		    (st = set_delta(d, d->b.p + d->a.len, d->b.len - d->a.len)))
			return st;
	}
	d->prefix = d->read = d->ids.n;
	*delta = d->delta.p;
	return VD_OK;
}
