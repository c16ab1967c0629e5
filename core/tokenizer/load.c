/* Loading a Hugging Face tokenizer.json (+ tokenizer_config.json) into the
 * compiled pipeline of tokenizer_internal.h: normalizer, pre-tokenizer and
 * decoder chains (Sequences flattened), post-processor template, added
 * tokens with their matchers, id table, BOS/EOS and chat template. Anything
 * outside the supported set is VD_ERR_UNSUPPORTED naming the piece. */
#include "vllmd/tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/tokenizer/internal.h"

/* The GPT-2 split that ByteLevel applies when use_regex is true. */
#define GPT2_REGEX \
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static vd_status read_file(const char *path, const char *what, char **out, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return vd_errorf(VD_ERR_IO, "open %s %s: %s",
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

static vd_status load_scheme(const cJSON *o, const char *what, vd_tok_prepend *out)
{
	const cJSON *s = item(o, "prepend_scheme");
	*out = VD_TOK_PREPEND_ALWAYS;
	if (cJSON_IsString(s)) {
		if (!strcmp(s->valuestring, "first"))
			*out = VD_TOK_PREPEND_FIRST;
		else if (!strcmp(s->valuestring, "never"))
			*out = VD_TOK_PREPEND_NEVER;
		else if (strcmp(s->valuestring, "always"))
			return vd_errorf(VD_ERR_UNSUPPORTED, "tokenizer.json: %s prepend_scheme %s is not supported",
					 what, s->valuestring);
	}
	if (!bool_or(o, "add_prefix_space", true))
		*out = VD_TOK_PREPEND_NEVER;
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
	vd_tok_norm_step *grown = realloc(t->norm, (t->n_norm + 1) * sizeof(*t->norm));
	if (!grown)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	t->norm = grown;
	/* Counted before its parts load so that destroy frees them on error. */
	vd_tok_norm_step *s = &t->norm[t->n_norm++];
	memset(s, 0, sizeof(*s));
	if (unicode) {
		s->kind = VD_TOK_NORM_UNICODE;
		s->form = UTF8PROC_STABLE |
			  (ty[strlen(ty) - 1] == 'C' ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE);
		if (ty[2] == 'K')
			s->form |= UTF8PROC_COMPAT;
		return VD_OK;
	}
	s->kind = prepend ? VD_TOK_NORM_PREPEND : VD_TOK_NORM_REPLACE;
	s->str_len = strlen(v->valuestring);
	vd_status st = dup_str(v->valuestring, s->str_len, &s->str);
	if (!st && replace)
		st = load_pattern(item(o, "pattern"), "Replace normalizer", &s->pat);
	return st;
}

static vd_status load_split_behavior(const cJSON *o, vd_tok_behavior *b)
{
	static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
					    "MergedWithNext", "Contiguous"};
	const cJSON *v = item(o, "behavior");
	for (int i = 0; cJSON_IsString(v) && i < 5; i++)
		if (!strcmp(v->valuestring, names[i])) {
			*b = (vd_tok_behavior)i;
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
	vd_tok_pre_step *grown = realloc(t->pre, (t->n_pre + 1) * sizeof(*t->pre));
	if (!grown)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	t->pre = grown;
	vd_tok_pre_step *s = &t->pre[t->n_pre++];
	memset(s, 0, sizeof(*s));
	vd_status st;
	if (!strcmp(ty, "Split")) {
		s->kind = VD_TOK_PRE_SPLIT;
		s->invert = bool_or(o, "invert", false);
		if ((st = load_split_behavior(o, &s->behavior)))
			return st;
		return load_pattern(item(o, "pattern"), "Split pre-tokenizer", &s->pat);
	}
	if (!strcmp(ty, "ByteLevel")) {
		s->kind = VD_TOK_PRE_BYTELEVEL;
		s->add_prefix_space = bool_or(o, "add_prefix_space", true);
		s->use_regex = bool_or(o, "use_regex", true);
		if (!s->use_regex)
			return VD_OK;
		return vd_tok_pattern_init(&s->pat, GPT2_REGEX, strlen(GPT2_REGEX), true,
					   "ByteLevel pre-tokenizer");
	}
	s->kind = VD_TOK_PRE_METASPACE;
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
	vd_tok_dec_step *grown = realloc(t->dec, (t->n_dec + 1) * sizeof(*t->dec));
	if (!grown)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	t->dec = grown;
	vd_tok_dec_step *s = &t->dec[t->n_dec++];
	memset(s, 0, sizeof(*s));
	s->kind = (vd_tok_dec_kind)kind;
	t->dec_byte_fallback |= s->kind == VD_TOK_DEC_BYTE_FALLBACK;
	vd_status st = VD_OK;
	const cJSON *v;
	vd_tok_prepend scheme;
	switch (s->kind) {
	case VD_TOK_DEC_REPLACE:
		v = item(o, "content");
		if (!cJSON_IsString(v))
			return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: Replace decoder without content");
		s->content_len = strlen(v->valuestring);
		if (!(st = dup_str(v->valuestring, s->content_len, &s->content)))
			st = load_pattern(item(o, "pattern"), "Replace decoder", &s->pat);
		break;
	case VD_TOK_DEC_STRIP:
		if ((st = load_char(o, "content", "Strip decoder", &s->cp)))
			break;
		v = item(o, "start");
		s->start = cJSON_IsNumber(v) && v->valuedouble > 0 ? (size_t)v->valuedouble : 0;
		v = item(o, "stop");
		s->stop = cJSON_IsNumber(v) && v->valuedouble > 0 ? (size_t)v->valuedouble : 0;
		break;
	case VD_TOK_DEC_METASPACE:
		if (!(st = load_char(o, "replacement", "Metaspace decoder", &s->cp)) &&
		    !(st = load_scheme(o, "Metaspace decoder", &scheme)))
			s->prepend = scheme != VD_TOK_PREPEND_NEVER;
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
			t->tmpl[t->n_tmpl++] = VD_TOK_TMPL_SEQ;
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
		vd_tok_added *a = &t->added[t->n_added++];
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
		vd_tok_added *a = &t->added[i];
		const char *s;
		size_t n;
		if (!a->normalized || !t->n_norm)
			continue;
		if (!(st = vd_tok_normalize(t, md, a->content, a->len, bufs, &s, &n)))
			st = dup_str(s, n, &a->norm);
		a->norm_len = n;
	}
	vd_tok_buf_free(&bufs[0]);
	vd_tok_buf_free(&bufs[1]);
	pcre2_match_data_free(md);
	if (st)
		return st;
	vd_tok_matcher *ms[2] = {&t->raw, &t->normd};
	for (int k = 0; k < 2; k++) {
		vd_tok_matcher *m = ms[k];
		m->use_norm = k == 1;
		m->idx = malloc((t->n_added ? t->n_added : 1) * sizeof(*m->idx));
		if (!m->idx)
			return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		/* Counting sort by first byte; insertion within a bucket keeps the
		 * longest first (few added tokens share a first byte). */
		uint32_t count[256] = {0};
		for (size_t i = 0; i < t->n_added; i++) {
			const vd_tok_added *a = &t->added[i];
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
			const vd_tok_added *a = &t->added[i];
			const char *p = m->use_norm && a->norm ? a->norm : a->content;
			size_t len = m->use_norm && a->norm ? a->norm_len : a->len;
			if (a->normalized != m->use_norm || !len)
				continue;
			unsigned char b = (unsigned char)p[0];
			uint32_t j = fill[b]++;
			while (j > m->lo[b]) {
				const vd_tok_added *o = &t->added[m->idx[j - 1]];
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
		const vd_tok_added *a = &t->added[i];
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
		t->tmpl[t->n_tmpl++] = VD_TOK_TMPL_SEQ;
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
		if (t->tmpl[i] != VD_TOK_TMPL_SEQ && t->tmpl[i] >= t->n_ids) {
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
