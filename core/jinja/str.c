/* Python's str operations for the Jinja2 engine (case mapping with the
 * unconditional multi-character mappings of SpecialCasing.txt, strip, split,
 * replace, find, format) and the method tables of str, dict, list and the
 * loop object. Mutating list/dict methods are listed without a function:
 * the sandbox reports them unsafe. */
#include <stdio.h>
#include <string.h>

#include <utf8proc.h>

#include "core/jinja/internal.h"

#define ARENA (&r->arena)

/* ---- case mapping ---- */

/* Unconditional full mappings that differ from the simple ones. */
static const struct { int32_t cp; const char *upper, *title; } SPECIAL[] = {
	{ 0x00df, "SS", "Ss" },                  /* sharp s */
	{ 0x0149, "\xca\xbcN", "\xca\xbcN" },    /* n preceded by apostrophe */
	{ 0x01f0, "J\xcc\x8c", "J\xcc\x8c" },    /* j with caron */
	{ 0x0390, "\xce\x99\xcc\x88\xcc\x81", "\xce\x99\xcc\x88\xcc\x81" },
	{ 0x03b0, "\xce\xa5\xcc\x88\xcc\x81", "\xce\xa5\xcc\x88\xcc\x81" },
	{ 0x0587, "\xd4\xb5\xd5\x92", "\xd4\xb5\xd6\x82" },
	{ 0x1e96, "H\xcc\xb1", "H\xcc\xb1" },
	{ 0x1e97, "T\xcc\x88", "T\xcc\x88" },
	{ 0x1e98, "W\xcc\x8a", "W\xcc\x8a" },
	{ 0x1e99, "Y\xcc\x8a", "Y\xcc\x8a" },
	{ 0x1e9a, "A\xca\xbe", "A\xca\xbe" },
	{ 0xfb00, "FF", "Ff" }, { 0xfb01, "FI", "Fi" }, { 0xfb02, "FL", "Fl" },
	{ 0xfb03, "FFI", "Ffi" }, { 0xfb04, "FFL", "Ffl" },
	{ 0xfb05, "ST", "St" }, { 0xfb06, "ST", "St" },
};

static bool is_cased(int32_t cp)
{
	utf8proc_category_t c = utf8proc_category(cp);

	return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL ||
	       c == UTF8PROC_CATEGORY_LT;
}

static bool is_case_ignorable(int32_t cp)
{
	utf8proc_category_t c = utf8proc_category(cp);

	return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_ME ||
	       c == UTF8PROC_CATEGORY_CF || c == UTF8PROC_CATEGORY_LM ||
	       c == UTF8PROC_CATEGORY_SK || cp == '\'' || cp == '.' || cp == ':' ||
	       cp == 0x00b7 || cp == 0x2019;
}

/* Whether the capital sigma at byte i of s ends a word (Python lowercases it
 * to final sigma then): a cased letter before it and none after it, skipping
 * case-ignorable characters. */
static bool final_sigma(const char *s, size_t n, size_t i, size_t len)
{
	size_t j = i, k, l;
	bool before = false;

	while (j > 0) {
		int32_t cp;

		k = j - 1;
		while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
			k--;
		cp = vd_utf8_decode(s + k, j - k, &l);
		if (!is_case_ignorable(cp)) {
			before = is_cased(cp);
			break;
		}
		j = k;
	}
	if (!before)
		return false;
	for (j = i + len; j < n; j += l) {
		int32_t cp = vd_utf8_decode(s + j, n - j, &l);

		if (!is_case_ignorable(cp))
			return !is_cased(cp);
	}
	return true;
}

enum { TO_UPPER, TO_LOWER, TO_TITLE };

static int put_mapped(vd_jrender *r, vd_jbuf *b, const char *s, size_t n, size_t i,
		      size_t len, int32_t cp, int to)
{
	char enc[4];
	int32_t m;

	if (to != TO_LOWER) {
		for (size_t k = 0; k < sizeof(SPECIAL) / sizeof(SPECIAL[0]); k++)
			if (SPECIAL[k].cp == cp)
				return vd_jbuf_puts(ARENA, b, to == TO_UPPER ? SPECIAL[k].upper :
						    SPECIAL[k].title);
		m = to == TO_UPPER ? utf8proc_toupper(cp) : utf8proc_totitle(cp);
	} else if (cp == 0x0130) {
		return vd_jbuf_puts(ARENA, b, "i\xcc\x87"); /* I with dot above */
	} else if (cp == 0x03a3 && final_sigma(s, n, i, len)) {
		m = 0x03c2;
	} else {
		m = utf8proc_tolower(cp);
	}
	if (m == cp)
		return vd_jbuf_put(ARENA, b, s + i, len);
	return vd_jbuf_put(ARENA, b, enc, (size_t)vd_utf8_encode(m, enc));
}

static bool jtitle_sep(int32_t cp)
{
	return cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || vd_py_isspace(cp);
}

int vd_jstr_case(vd_jrender *r, vd_jv v, int mode, vd_jv *out)
{
	vd_jbuf b = { 0 };
	vd_jv sv;
	const char *s;
	size_t n, i, len;
	bool prev_cased = false, word_start = true;

	if (vd_jv_to_str(ARENA, v, &sv) || vd_jbuf_put(ARENA, &b, "", 0))
		return vd_jinja_oom(r);
	s = sv.u.s.p;
	n = sv.u.s.n;
	for (i = 0; i < n; i += len) {
		int32_t cp = vd_utf8_decode(s + i, n - i, &len);
		int to;

		switch (mode) {
		case VD_JCASE_UPPER: to = TO_UPPER; break;
		case VD_JCASE_LOWER: to = TO_LOWER; break;
		case VD_JCASE_TITLE:
			to = prev_cased ? TO_LOWER : TO_TITLE;
			prev_cased = is_cased(cp);
			break;
		case VD_JCASE_CAPITALIZE: to = i == 0 ? TO_TITLE : TO_LOWER; break;
		default:
			if (jtitle_sep(cp)) {
				word_start = true;
				to = TO_LOWER;
			} else {
				to = word_start ? TO_UPPER : TO_LOWER;
				word_start = false;
			}
			break;
		}
		if (put_mapped(r, &b, s, n, i, len, cp, to))
			return vd_jinja_oom(r);
	}
	*out = vd_jv_str(b.p, b.n);
	return 0;
}

/* ---- strip / replace / split ---- */

static bool in_chars(int32_t cp, vd_jv chars)
{
	size_t i, len;

	if (chars.kind != VD_JV_STR)
		return vd_py_isspace(cp);
	for (i = 0; i < chars.u.s.n; i += len)
		if (vd_utf8_decode(chars.u.s.p + i, chars.u.s.n - i, &len) == cp)
			return true;
	return false;
}

int vd_jstr_strip(vd_jrender *r, const vd_jnode *at, vd_jv s, vd_jv chars, bool left,
		  bool right, vd_jv *out)
{
	const char *p = s.u.s.p;
	size_t a = 0, b = s.u.s.n, len;

	if (chars.kind != VD_JV_STR && chars.kind != VD_JV_NONE && chars.kind != VD_JV_MISSING)
		return vd_jinja_fail(r, at, "strip arg must be None or str");
	if (left)
		while (a < b && in_chars(vd_utf8_decode(p + a, b - a, &len), chars))
			a += len;
	if (right)
		while (b > a) {
			size_t k = b - 1;

			while (k > a && ((unsigned char)p[k] & 0xc0) == 0x80)
				k--;
			if (!in_chars(vd_utf8_decode(p + k, b - k, &len), chars))
				break;
			b = k;
		}
	*out = vd_jv_str(p + a, b - a);
	return 0;
}

int vd_jstr_replace(vd_jrender *r, vd_jv s, vd_jv old, vd_jv repl, int64_t count, vd_jv *out)
{
	vd_jbuf b = { 0 };
	const char *p = s.u.s.p;
	size_t n = s.u.s.n, i = 0, len;
	int64_t done = 0;

	if (vd_jbuf_put(ARENA, &b, "", 0))
		return vd_jinja_oom(r);
	if (old.u.s.n == 0) {
		/* an empty pattern matches before every character and at the end */
		for (;;) {
			if ((count < 0 || done < count)) {
				if (vd_jbuf_put(ARENA, &b, repl.u.s.p, repl.u.s.n))
					return vd_jinja_oom(r);
				done++;
			}
			if (i >= n)
				break;
			vd_utf8_decode(p + i, n - i, &len);
			if (vd_jbuf_put(ARENA, &b, p + i, len))
				return vd_jinja_oom(r);
			i += len;
		}
		*out = vd_jv_str(b.p, b.n);
		return 0;
	}
	while (i < n) {
		const char *hit = (count < 0 || done < count) ?
				  memmem(p + i, n - i, old.u.s.p, old.u.s.n) : NULL;

		if (!hit) {
			if (vd_jbuf_put(ARENA, &b, p + i, n - i))
				return vd_jinja_oom(r);
			break;
		}
		if (vd_jbuf_put(ARENA, &b, p + i, (size_t)(hit - (p + i))) ||
		    vd_jbuf_put(ARENA, &b, repl.u.s.p, repl.u.s.n))
			return vd_jinja_oom(r);
		i = (size_t)(hit - p) + old.u.s.n;
		done++;
	}
	*out = vd_jv_str(b.p, b.n);
	return 0;
}

static bool is_line_break(int32_t cp)
{
	return cp == '\n' || cp == '\r' || cp == 0x0b || cp == 0x0c || cp == 0x1c ||
	       cp == 0x1d || cp == 0x1e || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
}

int vd_jstr_splitlines(vd_jrender *r, vd_jv s, vd_jlist **out)
{
	vd_jlist *l = vd_jlist_new(ARENA, 0);
	const char *p = s.u.s.p;
	size_t n = s.u.s.n, i = 0, start = 0, len;

	if (!l)
		return vd_jinja_oom(r);
	while (i < n) {
		int32_t cp = vd_utf8_decode(p + i, n - i, &len);

		if (!is_line_break(cp)) {
			i += len;
			continue;
		}
		if (vd_jlist_push(ARENA, l, vd_jv_str(p + start, i - start)))
			return vd_jinja_oom(r);
		i += len;
		if (cp == '\r' && i < n && p[i] == '\n')
			i++;
		start = i;
	}
	if (start < n && vd_jlist_push(ARENA, l, vd_jv_str(p + start, n - start)))
		return vd_jinja_oom(r);
	*out = l;
	return 0;
}

/* ---- str methods ---- */

static int ret_list(vd_jlist *l, vd_jv *out)
{
	out->kind = VD_JV_LIST;
	out->u.list = l;
	return 0;
}

static int need_str(vd_jrender *r, const vd_jnode *at, vd_jv v, const char *what)
{
	if (v.kind == VD_JV_STR)
		return 0;
	return vd_jinja_fail(r, at, "%s must be str, not %s", what, vd_jv_type_name(v));
}

static int opt_int(vd_jrender *r, const vd_jnode *at, vd_jv v, int64_t def, int64_t *out)
{
	if (v.kind == VD_JV_MISSING || v.kind == VD_JV_NONE) {
		*out = def;
		return 0;
	}
	if (v.kind == VD_JV_INT || v.kind == VD_JV_BOOL) {
		*out = v.kind == VD_JV_BOOL ? v.u.b : v.u.i;
		return 0;
	}
	return vd_jinja_fail(r, at, "'%s' object cannot be interpreted as an integer",
			     vd_jv_type_name(v));
}

static int m_upper(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	(void)at;
	return vd_jstr_case(r, argv[0], VD_JCASE_UPPER, out);
}

static int m_lower(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	(void)at;
	return vd_jstr_case(r, argv[0], VD_JCASE_LOWER, out);
}

static int m_title(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	(void)at;
	return vd_jstr_case(r, argv[0], VD_JCASE_TITLE, out);
}

static int m_capitalize(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	(void)at;
	return vd_jstr_case(r, argv[0], VD_JCASE_CAPITALIZE, out);
}

static int m_strip(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return vd_jstr_strip(r, at, argv[0], argv[1], true, true, out);
}

static int m_lstrip(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return vd_jstr_strip(r, at, argv[0], argv[1], true, false, out);
}

static int m_rstrip(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return vd_jstr_strip(r, at, argv[0], argv[1], false, true, out);
}

/* str.split / str.rsplit. */
static int split(vd_jrender *r, const vd_jnode *at, vd_jv *argv, bool from_right, vd_jv *out)
{
	vd_jv s = argv[0], sep = argv[1];
	const char *p = s.u.s.p;
	size_t n = s.u.s.n, len;
	int64_t maxsplit = -1;
	vd_jlist *l = vd_jlist_new(ARENA, 0);

	if (!l)
		return vd_jinja_oom(r);
	if (opt_int(r, at, argv[2], -1, &maxsplit))
		return -1;
	if (sep.kind == VD_JV_MISSING || sep.kind == VD_JV_NONE) {
		/* whitespace runs; pieces collected left to right, or right to
		 * left then reversed */
		size_t a = 0, b = n;
		int64_t done = 0;

		if (!from_right) {
			while (a < n) {
				size_t w;

				while (a < n && vd_py_isspace(vd_utf8_decode(p + a, n - a, &len)))
					a += len;
				if (a >= n)
					break;
				if (maxsplit >= 0 && done >= maxsplit) {
					/* the rest, trailing whitespace included */
					if (vd_jlist_push(ARENA, l, vd_jv_str(p + a, n - a)))
						return vd_jinja_oom(r);
					break;
				}
				w = a;
				while (w < n && !vd_py_isspace(vd_utf8_decode(p + w, n - w, &len)))
					w += len;
				if (vd_jlist_push(ARENA, l, vd_jv_str(p + a, w - a)))
					return vd_jinja_oom(r);
				done++;
				a = w;
			}
			return ret_list(l, out);
		}
		while (b > 0) {
			size_t w, k;

			for (;;) {
				if (b == 0)
					break;
				k = b - 1;
				while (k > 0 && ((unsigned char)p[k] & 0xc0) == 0x80)
					k--;
				if (!vd_py_isspace(vd_utf8_decode(p + k, b - k, &len)))
					break;
				b = k;
			}
			if (b == 0)
				break;
			if (maxsplit >= 0 && done >= maxsplit) {
				/* the rest, leading whitespace included */
				if (vd_jlist_push(ARENA, l, vd_jv_str(p, b)))
					return vd_jinja_oom(r);
				break;
			}
			w = b;
			while (w > 0) {
				k = w - 1;
				while (k > 0 && ((unsigned char)p[k] & 0xc0) == 0x80)
					k--;
				if (vd_py_isspace(vd_utf8_decode(p + k, w - k, &len)))
					break;
				w = k;
			}
			if (vd_jlist_push(ARENA, l, vd_jv_str(p + w, b - w)))
				return vd_jinja_oom(r);
			done++;
			b = w;
		}
	} else {
		int64_t done = 0;
		size_t a = 0, b = n;

		if (need_str(r, at, sep, "separator"))
			return -1;
		if (sep.u.s.n == 0)
			return vd_jinja_fail(r, at, "empty separator");
		if (!from_right) {
			for (;;) {
				const char *hit = (maxsplit < 0 || done < maxsplit) ?
						  memmem(p + a, n - a, sep.u.s.p, sep.u.s.n) : NULL;

				if (!hit) {
					if (vd_jlist_push(ARENA, l, vd_jv_str(p + a, n - a)))
						return vd_jinja_oom(r);
					return ret_list(l, out);
				}
				if (vd_jlist_push(ARENA, l, vd_jv_str(p + a, (size_t)(hit - (p + a)))))
					return vd_jinja_oom(r);
				a = (size_t)(hit - p) + sep.u.s.n;
				done++;
			}
		}
		for (;;) {
			size_t hit = (size_t)-1;

			if ((maxsplit < 0 || done < maxsplit) && b >= sep.u.s.n)
				for (size_t k = b - sep.u.s.n + 1; k-- > 0;)
					if (!memcmp(p + k, sep.u.s.p, sep.u.s.n)) {
						hit = k;
						break;
					}
			if (hit == (size_t)-1) {
				if (vd_jlist_push(ARENA, l, vd_jv_str(p, b)))
					return vd_jinja_oom(r);
				break;
			}
			if (vd_jlist_push(ARENA, l, vd_jv_str(p + hit + sep.u.s.n, b - hit - sep.u.s.n)))
				return vd_jinja_oom(r);
			b = hit;
			done++;
		}
	}
	/* rsplit collected right to left */
	for (size_t i = 0; i < l->n / 2; i++) {
		vd_jv t = l->items[i];

		l->items[i] = l->items[l->n - 1 - i];
		l->items[l->n - 1 - i] = t;
	}
	return ret_list(l, out);
}

static int m_split(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return split(r, at, argv, false, out);
}

static int m_rsplit(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return split(r, at, argv, true, out);
}

static int m_splitlines(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jlist *l;

	(void)at;
	if (vd_jstr_splitlines(r, argv[0], &l))
		return -1;
	return ret_list(l, out);
}

/* startswith/endswith with a str or a tuple of str. */
static int affix(vd_jrender *r, const vd_jnode *at, vd_jv *argv, bool end, vd_jv *out)
{
	vd_jv s = argv[0], x = argv[1];
	size_t count = x.kind == VD_JV_LIST ? x.u.list->n : 1;

	for (size_t i = 0; i < count; i++) {
		vd_jv a = x.kind == VD_JV_LIST ? x.u.list->items[i] : x;

		if (a.kind != VD_JV_STR)
			return vd_jinja_fail(r, at, "%s first arg must be str or a tuple of str, not %s",
					     end ? "endswith" : "startswith", vd_jv_type_name(a));
		if (a.u.s.n <= s.u.s.n &&
		    !memcmp(s.u.s.p + (end ? s.u.s.n - a.u.s.n : 0), a.u.s.p, a.u.s.n)) {
			*out = vd_jv_bool(true);
			return 0;
		}
	}
	*out = vd_jv_bool(false);
	return 0;
}

static int m_startswith(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return affix(r, at, argv, false, out);
}

static int m_endswith(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return affix(r, at, argv, true, out);
}

static int m_replace(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	int64_t count = -1;

	if (need_str(r, at, argv[1], "replace() argument 1") ||
	    need_str(r, at, argv[2], "replace() argument 2") ||
	    opt_int(r, at, argv[3], -1, &count))
		return -1;
	return vd_jstr_replace(r, argv[0], argv[1], argv[2], count, out);
}

/* find/rfind/count: code point index of sub, or the number of matches. */
static int search(vd_jrender *r, const vd_jnode *at, vd_jv *argv, int mode, vd_jv *out)
{
	vd_jv s = argv[0], sub = argv[1];
	const char *p = s.u.s.p, *hit = NULL;
	int64_t count = 0;

	if (need_str(r, at, sub, "substring"))
		return -1;
	if (mode == 2) {
		if (sub.u.s.n == 0) {
			*out = vd_jv_int((int64_t)vd_utf8_len(p, s.u.s.n) + 1);
			return 0;
		}
		for (size_t i = 0; i + sub.u.s.n <= s.u.s.n;) {
			const char *h = memmem(p + i, s.u.s.n - i, sub.u.s.p, sub.u.s.n);

			if (!h)
				break;
			count++;
			i = (size_t)(h - p) + sub.u.s.n;
		}
		*out = vd_jv_int(count);
		return 0;
	}
	if (mode == 0) {
		hit = memmem(p, s.u.s.n, sub.u.s.p, sub.u.s.n);
	} else if (sub.u.s.n <= s.u.s.n) {
		for (size_t k = s.u.s.n - sub.u.s.n + 1; k-- > 0;)
			if (!memcmp(p + k, sub.u.s.p, sub.u.s.n)) {
				hit = p + k;
				break;
			}
	}
	*out = vd_jv_int(hit ? (int64_t)vd_utf8_len(p, (size_t)(hit - p)) : -1);
	return 0;
}

static int m_find(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return search(r, at, argv, 0, out);
}

static int m_rfind(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return search(r, at, argv, 1, out);
}

static int m_count(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return search(r, at, argv, 2, out);
}

static int m_join(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *items;
	vd_jbuf b = { 0 };

	if (vd_jinja_iterate(r, at, argv[1], &items))
		return -1;
	if (vd_jbuf_put(ARENA, &b, "", 0))
		return vd_jinja_oom(r);
	for (size_t i = 0; i < items->n; i++) {
		vd_jv it = items->items[i];

		if (it.kind != VD_JV_STR)
			return vd_jinja_fail(r, at, "sequence item %zu: expected str instance, %s found",
					     i, vd_jv_type_name(it));
		if ((i && vd_jbuf_put(ARENA, &b, argv[0].u.s.p, argv[0].u.s.n)) ||
		    vd_jbuf_put(ARENA, &b, it.u.s.p, it.u.s.n))
			return vd_jinja_oom(r);
	}
	*out = vd_jv_str(b.p, b.n);
	return 0;
}

/* isdigit/isalpha/isalnum/isspace/islower/isupper. */
static int classify(vd_jv s, int what)
{
	size_t i, len;
	bool any_cased = false;

	if (s.u.s.n == 0)
		return 0;
	for (i = 0; i < s.u.s.n; i += len) {
		int32_t cp = vd_utf8_decode(s.u.s.p + i, s.u.s.n - i, &len);
		utf8proc_category_t c = utf8proc_category(cp);
		bool letter = c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
		bool digit = c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NO;

		switch (what) {
		case 0: if (!digit) return 0; break;
		case 1: if (!letter) return 0; break;
		case 2: if (!letter && !digit && c != UTF8PROC_CATEGORY_NL) return 0; break;
		case 3: if (!vd_py_isspace(cp)) return 0; break;
		case 4:
			if (c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LT)
				return 0;
			any_cased |= c == UTF8PROC_CATEGORY_LL;
			break;
		default:
			if (c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT)
				return 0;
			any_cased |= c == UTF8PROC_CATEGORY_LU;
			break;
		}
	}
	return what >= 4 ? any_cased : 1;
}

#define CLASSIFIER(fn, what)                                                        \
	static int fn(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out) \
	{                                                                           \
		(void)r;                                                            \
		(void)at;                                                           \
		*out = vd_jv_bool(classify(argv[0], what));                         \
		return 0;                                                           \
	}
CLASSIFIER(m_isdigit, 0)
CLASSIFIER(m_isalpha, 1)
CLASSIFIER(m_isalnum, 2)
CLASSIFIER(m_isspace, 3)
CLASSIFIER(m_islower, 4)
CLASSIFIER(m_isupper, 5)

/* str.format with {}, {0}, {name} and {{ }}; format specs and conversions
 * are refused. */
static int m_format(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv s = argv[0];
	const vd_jlist *pos = argv[1].u.list;
	const vd_jdict *kw = argv[2].u.dict;
	vd_jbuf b = { 0 };
	size_t i = 0, next = 0;
	const char *p = s.u.s.p;

	if (vd_jbuf_put(ARENA, &b, "", 0))
		return vd_jinja_oom(r);
	while (i < s.u.s.n) {
		size_t j;
		vd_jv v;

		if ((p[i] == '{' || p[i] == '}') && i + 1 < s.u.s.n && p[i + 1] == p[i]) {
			if (vd_jbuf_putc(ARENA, &b, p[i]))
				return vd_jinja_oom(r);
			i += 2;
			continue;
		}
		if (p[i] == '}')
			return vd_jinja_fail(r, at, "Single '}' encountered in format string");
		if (p[i] != '{') {
			if (vd_jbuf_putc(ARENA, &b, p[i++]))
				return vd_jinja_oom(r);
			continue;
		}
		for (j = i + 1; j < s.u.s.n && p[j] != '}'; j++)
			if (p[j] == ':' || p[j] == '!' || p[j] == '{' || p[j] == '[' || p[j] == '.')
				return vd_jinja_fail(r, at, "str.format: only {}, {N} and {name} "
						     "fields are supported");
		if (j >= s.u.s.n)
			return vd_jinja_fail(r, at, "Single '{' encountered in format string");
		if (j == i + 1 || (p[i + 1] >= '0' && p[i + 1] <= '9')) {
			size_t k = j == i + 1 ? next++ : (size_t)strtoull(p + i + 1, NULL, 10);

			if (k >= pos->n)
				return vd_jinja_fail(r, at, "Replacement index %zu out of range for "
						     "positional args tuple", k);
			v = pos->items[k];
		} else {
			long at_k = vd_jdict_find_str(kw, p + i + 1, j - i - 1);

			if (at_k < 0)
				return vd_jinja_fail(r, at, "str.format: missing argument '%.*s'",
						     (int)(j - i - 1), p + i + 1);
			v = kw->vals[at_k];
		}
		if (vd_jv_str_to(ARENA, &b, v))
			return vd_jinja_oom(r);
		i = j + 1;
	}
	*out = vd_jv_str(b.p, b.n);
	return 0;
}

/* Pad s (n bytes, w code points wide) to width, left-aligned when left. */
static int put_padded(vd_jrender *r, vd_jbuf *b, const char *s, size_t n, size_t w,
		      int64_t width, bool left)
{
	int64_t pad = width > (int64_t)w ? width - (int64_t)w : 0;

	if (!left)
		for (int64_t k = 0; k < pad; k++)
			if (vd_jbuf_putc(ARENA, b, ' '))
				return -1;
	if (vd_jbuf_put(ARENA, b, s, n))
		return -1;
	if (left)
		for (int64_t k = 0; k < pad; k++)
			if (vd_jbuf_putc(ARENA, b, ' '))
				return -1;
	return 0;
}

/* One %-conversion of a number through C's printf, which formats numbers
 * as Python's % does. */
static int percent_number(vd_jrender *r, const vd_jnode *at, vd_jbuf *b, const char *flags,
			  int64_t width, int64_t prec, char conv, vd_jv v)
{
	char fmt[32], num[512];
	int k = 0;

	if (!vd_jv_is_number(v))
		return vd_jinja_fail(r, at, "%%%c format: %s is required, not %s", conv,
				     strchr("xXoc", conv) ? "an integer" : "a real number",
				     vd_jv_type_name(v));
	if (strchr("xXo", conv) && v.kind == VD_JV_FLOAT)
		return vd_jinja_fail(r, at, "%%%c format: an integer is required, not float", conv);
	if (width > 400 || prec > 300)
		return vd_jinja_fail(r, at, "%% format: width or precision too big");
	fmt[k++] = '%';
	for (const char *f = flags; *f; f++)
		fmt[k++] = *f;
	if (width >= 0)
		k += snprintf(fmt + k, sizeof(fmt) - (size_t)k, "%lld", (long long)width);
	if (prec >= 0)
		k += snprintf(fmt + k, sizeof(fmt) - (size_t)k, ".%lld", (long long)prec);
	if (strchr("diuxXo", conv)) {
		int64_t i = v.kind == VD_JV_FLOAT ? (int64_t)v.u.f : v.kind == VD_JV_BOOL ? v.u.b :
			    v.u.i;

		if (v.kind == VD_JV_FLOAT && !(v.u.f > -9.2e18 && v.u.f < 9.2e18))
			return vd_jinja_fail(r, at, "cannot convert float to integer");
		if (conv == 'u' || conv == 'i')
			conv = 'd';
		snprintf(fmt + k, sizeof(fmt) - (size_t)k, "ll%c", conv);
		snprintf(num, sizeof(num), fmt, (long long)i);
	} else {
		snprintf(fmt + k, sizeof(fmt) - (size_t)k, "%c", conv);
		snprintf(num, sizeof(num), fmt, vd_jv_as_double(v));
	}
	return vd_jbuf_puts(ARENA, b, num) ? vd_jinja_oom(r) : 0;
}

int vd_jstr_percent(vd_jrender *r, const vd_jnode *at, vd_jv fmtv, vd_jv args, vd_jv *out)
{
	const char *p = fmtv.u.s.p;
	size_t n = fmtv.u.s.n, i = 0;
	bool is_tuple = args.kind == VD_JV_LIST && args.u.list->tuple;
	/* PyMapping_Check: dicts, lists and Undefined, never str or tuple */
	bool mapping = args.kind == VD_JV_DICT || args.kind == VD_JV_UNDEF ||
		       (args.kind == VD_JV_LIST && !is_tuple);
	int64_t arglen = is_tuple ? (int64_t)args.u.list->n : -1, argidx = is_tuple ? 0 : -2;
	vd_jbuf b = { 0 };

	if (vd_jbuf_put(ARENA, &b, "", 0))
		return vd_jinja_oom(r);
	while (i < n) {
		char flags[8] = "", conv;
		int nf = 0;
		int64_t width = -1, prec = -1;
		bool left = false;
		vd_jv v;

		if (p[i] != '%') {
			const char *pct = memchr(p + i, '%', n - i);
			size_t end = pct ? (size_t)(pct - p) : n;

			if (vd_jbuf_put(ARENA, &b, p + i, end - i))
				return vd_jinja_oom(r);
			i = end;
			continue;
		}
		if (++i >= n)
			return vd_jinja_fail(r, at, "incomplete format");
		v.kind = VD_JV_MISSING;
		if (p[i] == '(') {
			size_t close = i + 1;
			long k;

			while (close < n && p[close] != ')')
				close++;
			if (close >= n)
				return vd_jinja_fail(r, at, "incomplete format key");
			if (args.kind == VD_JV_UNDEF)
				return vd_jinja_undef_fail(r, at, args);
			if (args.kind != VD_JV_DICT)
				return vd_jinja_fail(r, at, "format requires a mapping");
			k = vd_jdict_find_str(args.u.dict, p + i + 1, close - i - 1);
			if (k < 0)
				return vd_jinja_fail(r, at, "KeyError: '%.*s'", (int)(close - i - 1), p + i + 1);
			v = args.u.dict->vals[k];
			i = close + 1;
		}
		while (i < n && strchr("-+ #0", p[i])) {
			if (p[i] == '-')
				left = true;
			if (nf < 6 && !strchr(flags, p[i]))
				flags[nf++] = p[i];
			i++;
		}
		if (i < n && p[i] >= '0' && p[i] <= '9') {
			width = 0;
			while (i < n && p[i] >= '0' && p[i] <= '9' && width < 100000)
				width = width * 10 + (p[i++] - '0');
		}
		if (i < n && p[i] == '.') {
			prec = 0;
			i++;
			while (i < n && p[i] >= '0' && p[i] <= '9' && prec < 100000)
				prec = prec * 10 + (p[i++] - '0');
		}
		while (i < n && strchr("hlL", p[i]))
			i++;
		if (i >= n)
			return vd_jinja_fail(r, at, "incomplete format");
		conv = p[i++];
		if (conv == '%') {
			if (vd_jbuf_putc(ARENA, &b, '%'))
				return vd_jinja_oom(r);
			continue;
		}
		if (!strchr("diouxXeEfFgGcrsa", conv))
			return vd_jinja_fail(r, at, "unsupported format character '%c'", conv);
		if (v.kind == VD_JV_MISSING) {
			if (arglen < 0) {
				if (argidx != -2)
					return vd_jinja_fail(r, at, "not enough arguments for format string");
				argidx = -1;
				v = args;
			} else if (argidx < arglen) {
				v = args.u.list->items[argidx++];
			} else {
				return vd_jinja_fail(r, at, "not enough arguments for format string");
			}
		}
		if (strchr("srac", conv)) {
			vd_jbuf t = { 0 };
			size_t w;

			if (conv == 'c') {
				char enc[4];
				int32_t cp;

				if (v.kind == VD_JV_STR && vd_utf8_len(v.u.s.p, v.u.s.n) == 1) {
					if (vd_jbuf_put(ARENA, &t, v.u.s.p, v.u.s.n))
						return vd_jinja_oom(r);
				} else if (v.kind == VD_JV_INT && v.u.i >= 0 && v.u.i <= 0x10ffff) {
					cp = (int32_t)v.u.i;
					if (vd_jbuf_put(ARENA, &t, enc, (size_t)vd_utf8_encode(cp, enc)))
						return vd_jinja_oom(r);
				} else {
					return vd_jinja_fail(r, at, "%%c requires int or char");
				}
			} else if (conv == 's' ? vd_jv_str_to(ARENA, &t, v) : vd_jv_repr_to(ARENA, &t, v)) {
				return vd_jinja_oom(r);
			}
			if (vd_jbuf_put(ARENA, &t, "", 0))
				return vd_jinja_oom(r);
			w = vd_utf8_len(t.p, t.n);
			if (prec >= 0 && conv != 'c' && (size_t)prec < w) {
				/* precision cuts a string to that many code points */
				size_t k = 0, len;

				for (int64_t c = 0; c < prec; c++) {
					vd_utf8_decode(t.p + k, t.n - k, &len);
					k += len;
				}
				t.n = k;
				w = (size_t)prec;
			}
			if (put_padded(r, &b, t.p, t.n, w, width, left))
				return vd_jinja_oom(r);
			continue;
		}
		if (percent_number(r, at, &b, flags, width, prec, conv, v))
			return -1;
	}
	if (argidx < arglen && !mapping)
		return vd_jinja_fail(r, at, "not all arguments converted during string formatting");
	*out = vd_jv_str(b.p, b.n);
	return 0;
}

/* ---- dict, list and loop methods ---- */

static int m_get(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	long i = vd_jdict_find(argv[0].u.dict, argv[1]);

	(void)r;
	(void)at;
	if (i >= 0)
		*out = argv[0].u.dict->vals[i];
	else
		*out = argv[2].kind == VD_JV_MISSING ? vd_jv_none() : argv[2];
	return 0;
}

/* dict.items(), keys() and values() as lists (what for-loops and filters
 * see of the views). */
static int dict_view(vd_jrender *r, const vd_jdict *d, int what, vd_jv *out)
{
	vd_jlist *l = vd_jlist_new(ARENA, d->n);

	if (!l)
		return vd_jinja_oom(r);
	for (size_t i = 0; i < d->n; i++) {
		if (what == 0) {
			vd_jlist *pair = vd_jlist_new(ARENA, 2);

			if (!pair)
				return vd_jinja_oom(r);
			pair->items[0] = d->keys[i];
			pair->items[1] = d->vals[i];
			pair->n = 2;
			pair->tuple = true;
			l->items[i].kind = VD_JV_LIST;
			l->items[i].u.list = pair;
		} else {
			l->items[i] = what == 1 ? d->keys[i] : d->vals[i];
		}
	}
	l->n = d->n;
	return ret_list(l, out);
}

static int m_items(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	(void)at;
	return dict_view(r, argv[0].u.dict, 0, out);
}

static int m_keys(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	(void)at;
	return dict_view(r, argv[0].u.dict, 1, out);
}

static int m_values(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	(void)at;
	return dict_view(r, argv[0].u.dict, 2, out);
}

static int m_index(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *l = argv[0].u.list;

	for (size_t i = 0; i < l->n; i++)
		if (vd_jv_eq(l->items[i], argv[1])) {
			*out = vd_jv_int((int64_t)i);
			return 0;
		}
	return vd_jinja_fail(r, at, "%s.index(x): x not in %s", vd_jv_type_name(argv[0]),
			     vd_jv_type_name(argv[0]));
}

static int m_list_count(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *l = argv[0].u.list;
	int64_t c = 0;

	(void)r;
	(void)at;
	for (size_t i = 0; i < l->n; i++)
		c += vd_jv_eq(l->items[i], argv[1]);
	*out = vd_jv_int(c);
	return 0;
}

static int m_cycle(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *args = argv[1].u.list;

	if (args->n == 0)
		return vd_jinja_fail(r, at, "no items for cycling given");
	*out = args->items[argv[0].u.loop->index0 % args->n];
	return 0;
}

/* ---- method table ---- */

enum { ON_STR, ON_DICT, ON_LIST, ON_LOOP };

static const struct method {
	int on;
	vd_jbuiltin b;
} METHODS[] = {
	{ ON_STR, { "upper", m_upper, { "self" }, false, false } },
	{ ON_STR, { "lower", m_lower, { "self" }, false, false } },
	{ ON_STR, { "title", m_title, { "self" }, false, false } },
	{ ON_STR, { "capitalize", m_capitalize, { "self" }, false, false } },
	{ ON_STR, { "strip", m_strip, { "self", "chars" }, false, false } },
	{ ON_STR, { "lstrip", m_lstrip, { "self", "chars" }, false, false } },
	{ ON_STR, { "rstrip", m_rstrip, { "self", "chars" }, false, false } },
	{ ON_STR, { "split", m_split, { "self", "sep", "maxsplit" }, false, false } },
	{ ON_STR, { "rsplit", m_rsplit, { "self", "sep", "maxsplit" }, false, false } },
	{ ON_STR, { "splitlines", m_splitlines, { "self" }, false, false } },
	{ ON_STR, { "startswith", m_startswith, { "self", "prefix" }, false, false } },
	{ ON_STR, { "endswith", m_endswith, { "self", "suffix" }, false, false } },
	{ ON_STR, { "replace", m_replace, { "self", "old", "new", "count" }, false, false } },
	{ ON_STR, { "find", m_find, { "self", "sub" }, false, false } },
	{ ON_STR, { "rfind", m_rfind, { "self", "sub" }, false, false } },
	{ ON_STR, { "count", m_count, { "self", "sub" }, false, false } },
	{ ON_STR, { "join", m_join, { "self", "iterable" }, false, false } },
	{ ON_STR, { "isdigit", m_isdigit, { "self" }, false, false } },
	{ ON_STR, { "isalpha", m_isalpha, { "self" }, false, false } },
	{ ON_STR, { "isalnum", m_isalnum, { "self" }, false, false } },
	{ ON_STR, { "isspace", m_isspace, { "self" }, false, false } },
	{ ON_STR, { "islower", m_islower, { "self" }, false, false } },
	{ ON_STR, { "isupper", m_isupper, { "self" }, false, false } },
	{ ON_STR, { "format", m_format, { "self" }, true, true } },
	{ ON_DICT, { "get", m_get, { "self", "key", "default" }, false, false } },
	{ ON_DICT, { "items", m_items, { "self" }, false, false } },
	{ ON_DICT, { "keys", m_keys, { "self" }, false, false } },
	{ ON_DICT, { "values", m_values, { "self" }, false, false } },
	{ ON_DICT, { "clear", NULL, { "self" }, false, false } },
	{ ON_DICT, { "pop", NULL, { "self" }, false, false } },
	{ ON_DICT, { "popitem", NULL, { "self" }, false, false } },
	{ ON_DICT, { "setdefault", NULL, { "self" }, false, false } },
	{ ON_DICT, { "update", NULL, { "self" }, false, false } },
	{ ON_LIST, { "index", m_index, { "self", "value" }, false, false } },
	{ ON_LIST, { "count", m_list_count, { "self", "value" }, false, false } },
	{ ON_LIST, { "append", NULL, { "self" }, false, false } },
	{ ON_LIST, { "clear", NULL, { "self" }, false, false } },
	{ ON_LIST, { "extend", NULL, { "self" }, false, false } },
	{ ON_LIST, { "insert", NULL, { "self" }, false, false } },
	{ ON_LIST, { "pop", NULL, { "self" }, false, false } },
	{ ON_LIST, { "remove", NULL, { "self" }, false, false } },
	{ ON_LIST, { "reverse", NULL, { "self" }, false, false } },
	{ ON_LIST, { "sort", NULL, { "self" }, false, false } },
	{ ON_LOOP, { "cycle", m_cycle, { "self" }, true, false } },
};

const vd_jbuiltin *vd_jinja_method(vd_jv self, const char *name, int *id)
{
	int on;

	switch (self.kind) {
	case VD_JV_STR: on = ON_STR; break;
	case VD_JV_DICT: on = ON_DICT; break;
	case VD_JV_LIST: on = ON_LIST; break;
	case VD_JV_LOOP: on = ON_LOOP; break;
	default: return NULL;
	}
	for (size_t i = 0; i < sizeof(METHODS) / sizeof(METHODS[0]); i++) {
		if (METHODS[i].on != on || strcmp(METHODS[i].b.name, name))
			continue;
		/* tuples have no mutators at all */
		if (on == ON_LIST && self.u.list->tuple && !METHODS[i].b.fn)
			return NULL;
		*id = (int)i;
		return &METHODS[i].b;
	}
	return NULL;
}

const vd_jbuiltin *vd_jinja_method_by_id(int id)
{
	return &METHODS[id].b;
}
