/* Text helpers for the tokenizer: growable buffers and string lists, UTF-8
 * validation/decoding/lossy repair, the GPT-2 byte-level alphabet, literal and
 * regex patterns (Oniguruma syntax as HF writes it, run on PCRE2), and a
 * string -> id hash map. Pure functions of their inputs; no global state. */
#include "core/tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- buffers ---------------------------------------------------------- */

vd_status vd_tok_buf_append(vd_tok_buf *b, const void *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", cap);
		b->p = p;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return VD_OK;
}

void vd_tok_buf_free(vd_tok_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

vd_status vd_tok_ids_push(vd_tok_ids *a, int32_t id)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		int32_t *v = realloc(a->v, cap * sizeof(*v));
		if (!v)
			return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory (%zu ids)", cap);
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n++] = id;
	return VD_OK;
}

vd_status vd_tok_list_push(vd_tok_list *l, const char *s, size_t n)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		size_t *e = realloc(l->end, cap * sizeof(*e));
		if (!e)
			return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory (%zu strings)", cap);
		l->end = e;
		l->cap = cap;
	}
	vd_status st = vd_tok_buf_append(&l->buf, s, n);
	if (st)
		return st;
	l->end[l->n++] = l->buf.len;
	return VD_OK;
}

vd_status vd_tok_list_extend_last(vd_tok_list *l, const char *s, size_t n)
{
	vd_status st = vd_tok_buf_append(&l->buf, s, n);
	if (st)
		return st;
	l->end[l->n - 1] = l->buf.len;
	return VD_OK;
}

void vd_tok_list_clear(vd_tok_list *l)
{
	l->n = 0;
	l->buf.len = 0;
}

void vd_tok_list_free(vd_tok_list *l)
{
	vd_tok_buf_free(&l->buf);
	free(l->end);
	l->end = NULL;
	l->n = l->cap = 0;
}

/* ---- UTF-8 ------------------------------------------------------------ */

/* Allowed range of the second byte after lead byte c, and the sequence
 * length; 0 for bytes that cannot start a sequence (Unicode Table 3-7). */
static int utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi)
{
	*lo = 0x80;
	*hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		return 2;
	if (c == 0xE0) {
		*lo = 0xA0;
		return 3;
	}
	if (c == 0xED) {
		*hi = 0x9F;
		return 3;
	}
	if (c >= 0xE1 && c <= 0xEF)
		return 3;
	if (c == 0xF0) {
		*lo = 0x90;
		return 4;
	}
	if (c == 0xF4) {
		*hi = 0x8F;
		return 4;
	}
	if (c >= 0xF1 && c <= 0xF3)
		return 4;
	return 0;
}

/* Length of the valid sequence at s[i] or, when invalid, -(length of the
 * maximal subpart to replace by one U+FFFD). */
static long utf8_step(const unsigned char *s, size_t n, size_t i)
{
	unsigned char lo, hi;
	if (s[i] < 0x80)
		return 1;
	int len = utf8_lead(s[i], &lo, &hi);
	if (!len)
		return -1;
	size_t j = i + 1;
	if (j >= n || s[j] < lo || s[j] > hi)
		return -1;
	for (j++; j < i + (size_t)len; j++)
		if (j >= n || s[j] < 0x80 || s[j] > 0xBF)
			return -(long)(j - i);
	return len;
}

bool vd_tok_utf8_valid(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		long k = utf8_step(u, n, i);
		if (k < 0)
			return false;
		i += (size_t)k;
	}
	return true;
}

size_t vd_tok_utf8_len(unsigned char c)
{
	if (c < 0xC0)
		return 1;
	if (c < 0xE0)
		return 2;
	if (c < 0xF0)
		return 3;
	return 4;
}

uint32_t vd_tok_utf8_next(const char *s, size_t *i)
{
	const unsigned char *u = (const unsigned char *)s + *i;
	size_t len = vd_tok_utf8_len(u[0]);
	uint32_t cp;
	switch (len) {
	case 1:
		cp = u[0];
		break;
	case 2:
		cp = (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F);
		break;
	case 3:
		cp = (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F);
		break;
	default:
		cp = (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 |
		     (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
		break;
	}
	*i += len;
	return cp;
}

size_t vd_tok_utf8_put(uint32_t cp, char out[4])
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

vd_status vd_tok_utf8_lossy(const char *s, size_t n, vd_tok_buf *out)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t run = 0; /* start of the pending valid run */
	vd_status st;
	for (size_t i = 0; i < n;) {
		long k = u[i] < 0x80 ? 1 : utf8_step(u, n, i);
		if (k > 0) {
			i += (size_t)k;
			continue;
		}
		if ((st = vd_tok_buf_append(out, s + run, i - run)) ||
		    (st = vd_tok_buf_append(out, "\xEF\xBF\xBD", 3)))
			return st;
		i += (size_t)-k;
		run = i;
	}
	return vd_tok_buf_append(out, s + run, n - run);
}

bool vd_tok_is_space(uint32_t cp)
{
	return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
	       cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
	       cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool vd_tok_is_word(uint32_t cp)
{
	switch (utf8proc_category((utf8proc_int32_t)cp)) {
	case UTF8PROC_CATEGORY_LU:
	case UTF8PROC_CATEGORY_LL:
	case UTF8PROC_CATEGORY_LT:
	case UTF8PROC_CATEGORY_LM:
	case UTF8PROC_CATEGORY_LO:
	case UTF8PROC_CATEGORY_MN:
	case UTF8PROC_CATEGORY_MC:
	case UTF8PROC_CATEGORY_ME:
	case UTF8PROC_CATEGORY_ND:
	case UTF8PROC_CATEGORY_NL:
	case UTF8PROC_CATEGORY_PC:
		return true;
	default:
		return false;
	}
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes (!..~, ¡..¬, ®..ÿ) stand
 * for themselves; the other 68 bytes, in increasing order, get 256, 257, ... */
uint32_t vd_tok_byte_cp(unsigned char b)
{
	if (b <= 0x20)
		return 256u + b;
	if (b >= 0x7F && b <= 0xA0)
		return 256u + 33 + (b - 0x7Fu);
	if (b == 0xAD)
		return 256u + 67;
	return b;
}

int vd_tok_char_byte(uint32_t cp)
{
	if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
		return (int)cp;
	if (cp >= 256 && cp <= 256 + 32)
		return (int)(cp - 256);
	if (cp >= 256 + 33 && cp <= 256 + 66)
		return (int)(cp - 256 - 33 + 0x7F);
	if (cp == 256 + 67)
		return 0xAD;
	return -1;
}

/* ---- patterns ------------------------------------------------------------ */

/* Oniguruma (Ruby syntax, as HF's onig crate compiles) differs from PCRE2 in
 * what \s means: White_Space, which includes U+0085 that PCRE2's UCP \s lacks.
 * Other escapes and constructs used by HF tokenizers ((?i:..), lookahead,
 * \p{..}, possessive quantifiers) mean the same in both. */
static char *translate_regex(const char *s, size_t n, size_t *out_len)
{
	size_t cap = n * 8 + 1, k = 0;
	char *o = malloc(cap);
	if (!o)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\' && i + 1 < n && (s[i + 1] == 's' || s[i + 1] == 'S')) {
			const char *rep = s[i + 1] == 's' ? "\\p{White_Space}" : "\\P{White_Space}";
			memcpy(o + k, rep, strlen(rep));
			k += strlen(rep);
			i++;
		} else if (s[i] == '\\' && i + 1 < n) {
			o[k++] = s[i++];
			o[k++] = s[i];
		} else {
			o[k++] = s[i];
		}
	}
	o[k] = '\0';
	*out_len = k;
	return o;
}

vd_status vd_tok_pattern_init(vd_tok_pattern *p, const char *s, size_t n, bool is_regex,
			      const char *what)
{
	memset(p, 0, sizeof(*p));
	if (!is_regex) {
		p->lit = malloc(n + 1);
		if (!p->lit)
			return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		memcpy(p->lit, s, n);
		p->lit[n] = '\0';
		p->lit_len = n;
		return VD_OK;
	}
	size_t tn;
	char *t = translate_regex(s, n, &tn);
	if (!t)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	int err;
	PCRE2_SIZE off;
	p->re = pcre2_compile((PCRE2_SPTR)t, tn, PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err,
			      &off, NULL);
	free(t);
	if (!p->re) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(err, msg, sizeof(msg));
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "tokenizer: %s regex %.*s cannot be compiled (%s at offset %zu)",
				 what, (int)n, s, (const char *)msg, (size_t)off);
	}
	/* JIT is an optimisation only: without it the interpreter is used. */
	(void)pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE);
	return VD_OK;
}

void vd_tok_pattern_free(vd_tok_pattern *p)
{
	free(p->lit);
	pcre2_code_free(p->re);
	memset(p, 0, sizeof(*p));
}

pcre2_match_data *vd_tok_match_data(void)
{
	return pcre2_match_data_create(1, NULL);
}

int vd_tok_pattern_find(const vd_tok_pattern *p, pcre2_match_data *md, const char *s,
			size_t n, size_t from, size_t *ms, size_t *me)
{
	if (!p->re) {
		if (!p->lit_len || from >= n)
			return 0;
		const char *hit = memmem(s + from, n - from, p->lit, p->lit_len);
		if (!hit)
			return 0;
		*ms = (size_t)(hit - s);
		*me = *ms + p->lit_len;
		return 1;
	}
	/* Empty matches are skipped one character at a time, as HF drops the
	 * empty splits they would make. */
	for (size_t pos = from; pos <= n;) {
		int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
		if (rc == PCRE2_ERROR_NOMATCH)
			return 0;
		if (rc < 0)
			return -1;
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		if (ov[1] > ov[0]) {
			*ms = ov[0];
			*me = ov[1];
			return 1;
		}
		if (ov[0] >= n)
			return 0;
		pos = ov[0] + vd_tok_utf8_len((unsigned char)s[ov[0]]);
	}
	return 0;
}

vd_status vd_tok_pattern_replace(const vd_tok_pattern *p, pcre2_match_data *md,
				 const char *s, size_t n, const char *content,
				 size_t content_len, vd_tok_buf *out)
{
	size_t pos = 0, ms, me;
	vd_status st;
	int rc;
	while ((rc = vd_tok_pattern_find(p, md, s, n, pos, &ms, &me)) == 1) {
		if ((st = vd_tok_buf_append(out, s + pos, ms - pos)) ||
		    (st = vd_tok_buf_append(out, content, content_len)))
			return st;
		pos = me;
	}
	if (rc < 0)
		return vd_errorf(VD_ERR_LIMIT, "tokenizer: regex match limit hit on a %zu-byte string",
				 n);
	return vd_tok_buf_append(out, s + pos, n - pos);
}

/* ---- string -> id map ------------------------------------------------------ */

uint32_t vd_tok_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

vd_status vd_tok_strmap_init(vd_tok_strmap *m, size_t expected, const char *const *keys,
			     const uint32_t *key_len)
{
	size_t cap = 16;
	while (cap < expected * 2)
		cap *= 2;
	memset(m, 0, sizeof(*m));
	m->slot_hash = malloc(cap * sizeof(*m->slot_hash));
	m->slot_id = malloc(cap * sizeof(*m->slot_id));
	if (!m->slot_hash || !m->slot_id) {
		vd_tok_strmap_free(m);
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory (hash of %zu)", cap);
	}
	for (size_t i = 0; i < cap; i++)
		m->slot_id[i] = -1;
	m->keys = keys;
	m->key_len = key_len;
	m->mask = cap - 1;
	return VD_OK;
}

void vd_tok_strmap_put(vd_tok_strmap *m, int32_t id)
{
	const char *k = m->keys[id];
	uint32_t kl = m->key_len[id], h = vd_tok_hash(k, kl);
	for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
		int32_t o = m->slot_id[i];
		if (o < 0 || (m->slot_hash[i] == h && m->key_len[o] == kl &&
			      !memcmp(m->keys[o], k, kl))) {
			m->slot_hash[i] = h;
			m->slot_id[i] = id;
			return;
		}
	}
}

int32_t vd_tok_strmap_get(const vd_tok_strmap *m, const char *s, size_t n)
{
	if (!m->slot_id)
		return -1;
	uint32_t h = vd_tok_hash(s, n);
	for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
		int32_t o = m->slot_id[i];
		if (o < 0)
			return -1;
		if (m->slot_hash[i] == h && m->key_len[o] == n && !memcmp(m->keys[o], s, n))
			return o;
	}
}

void vd_tok_strmap_free(vd_tok_strmap *m)
{
	free(m->slot_hash);
	free(m->slot_id);
	memset(m, 0, sizeof(*m));
}
