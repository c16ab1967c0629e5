/* Jinja2's built-in filters and tests (jinja2/filters.py, tests.py, 3.1) as
 * transformers configures them (tojson is json.dumps with ensure_ascii off),
 * the globals chat templates call (range, dict, namespace, raise_exception,
 * strftime_now), and the binding of positional/keyword arguments to a
 * built-in's parameters. Filters that return generators in Python (map,
 * select, unique, reverse, ...) return lists here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <utf8proc.h>

#include "core/jinja/internal.h"

#define ARENA (&r->arena)
#define UNUSED(x) (void)(x)

static bool given(vd_jv v)
{
	return v.kind != VD_JV_MISSING;
}

static bool given_not_none(vd_jv v)
{
	return v.kind != VD_JV_MISSING && v.kind != VD_JV_NONE;
}

static int ret_list(vd_jlist *l, vd_jv *out)
{
	out->kind = VD_JV_LIST;
	out->u.list = l;
	return 0;
}

static int to_str(vd_jrender *r, vd_jv v, vd_jv *out)
{
	return vd_jv_to_str(ARENA, v, out) ? vd_jinja_oom(r) : 0;
}

static int want_int(vd_jrender *r, const vd_jnode *at, vd_jv v, const char *what, int64_t *out)
{
	if (v.kind == VD_JV_INT || v.kind == VD_JV_BOOL) {
		*out = v.kind == VD_JV_BOOL ? v.u.b : v.u.i;
		return 0;
	}
	return vd_jinja_fail(r, at, "%s must be an integer, not %s", what, vd_jv_type_name(v));
}

/* Jinja's make_attrgetter: "a.b.0" looked up with item access part by part,
 * then `default` for an Undefined result and lower() when ignore_case. */
static int attr_get(vd_jrender *r, const vd_jnode *at, vd_jv item, vd_jv attribute,
		    vd_jv def, bool ignore_case, vd_jv *out)
{
	vd_jv v = item;

	if (attribute.kind == VD_JV_INT || attribute.kind == VD_JV_BOOL) {
		if (vd_jinja_getitem(r, at, v, attribute, &v))
			return -1;
	} else if (attribute.kind == VD_JV_STR) {
		const char *p = attribute.u.s.p, *end = p + attribute.u.s.n;

		while (p <= end) {
			const char *dot = memchr(p, '.', (size_t)(end - p));
			size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
			bool digits = n > 0 && n < 19;
			int64_t idx = 0;
			vd_jv key;

			/* a numeric part indexes (Jinja's int(part) when isdigit) */
			for (size_t k = 0; k < n && digits; k++) {
				digits = p[k] >= '0' && p[k] <= '9';
				idx = idx * 10 + (p[k] - '0');
			}
			key = digits ? vd_jv_int(idx) : vd_jv_str(p, n);
			if (vd_jinja_getitem(r, at, v, key, &v))
				return -1;
			if (!dot)
				break;
			p = dot + 1;
		}
	} else if (given_not_none(attribute)) {
		return vd_jinja_fail(r, at, "attribute must be a string or an integer");
	}
	if (v.kind == VD_JV_UNDEF && given_not_none(def))
		v = def;
	if (ignore_case && v.kind == VD_JV_STR)
		return vd_jstr_case(r, v, VD_JCASE_LOWER, out);
	*out = v;
	return 0;
}

/* Stable merge sort of idx[0..n) by keys (Python's sorted(), reverse kept
 * stable as Python does). */
static int sort_idx(vd_jrender *r, const vd_jnode *at, const vd_jv *keys, size_t *idx,
		    size_t *tmp, size_t n, bool reverse)
{
	size_t mid = n / 2, i = 0, j = mid, k = 0;

	if (n < 2)
		return 0;
	if (sort_idx(r, at, keys, idx, tmp, mid, reverse) ||
	    sort_idx(r, at, keys, idx + mid, tmp, n - mid, reverse))
		return -1;
	while (i < mid && j < n) {
		const char *err = NULL;
		int c;

		if (vd_jv_cmp(keys[idx[j]], keys[idx[i]], &c, &err))
			return vd_jinja_fail(r, at, "%s", err);
		/* take from the right only when it sorts strictly first */
		if (reverse ? c > 0 : c < 0)
			tmp[k++] = idx[j++];
		else
			tmp[k++] = idx[i++];
	}
	while (i < mid)
		tmp[k++] = idx[i++];
	while (j < n)
		tmp[k++] = idx[j++];
	memcpy(idx, tmp, n * sizeof(*idx));
	return 0;
}

static int sorted_list(vd_jrender *r, const vd_jnode *at, const vd_jv *items, const vd_jv *keys,
		       size_t n, bool reverse, vd_jv *out)
{
	size_t *idx = vd_jarena_alloc(ARENA, (n + 1) * sizeof(size_t));
	size_t *tmp = vd_jarena_alloc(ARENA, (n + 1) * sizeof(size_t));
	vd_jlist *l = vd_jlist_new(ARENA, n);

	if (!idx || !tmp || !l)
		return vd_jinja_oom(r);
	for (size_t i = 0; i < n; i++)
		idx[i] = i;
	if (sort_idx(r, at, keys, idx, tmp, n, reverse))
		return -1;
	for (size_t i = 0; i < n; i++)
		l->items[i] = items[idx[i]];
	l->n = n;
	return ret_list(l, out);
}

/* ---- filters ---- */

static int f_abs(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv v = argv[0];

	if (v.kind == VD_JV_FLOAT) {
		*out = vd_jv_float(fabs(v.u.f));
	} else if (v.kind == VD_JV_INT || v.kind == VD_JV_BOOL) {
		int64_t i = v.kind == VD_JV_BOOL ? v.u.b : v.u.i;

		if (i == INT64_MIN)
			return vd_jinja_fail(r, at, "integer result does not fit in 64 bits");
		*out = vd_jv_int(i < 0 ? -i : i);
	} else {
		return vd_jinja_fail(r, at, "bad operand type for abs(): '%s'", vd_jv_type_name(v));
	}
	return 0;
}

/* Python getattr only: a dict's keys are not attributes here. */
static int f_attr(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv obj = argv[0];
	char *name;
	int id;

	if (argv[1].kind != VD_JV_STR)
		return vd_jinja_fail(r, at, "attribute name must be a string");
	if (!(name = vd_jarena_strndup(ARENA, argv[1].u.s.p, argv[1].u.s.n)))
		return vd_jinja_oom(r);
	if (obj.kind == VD_JV_DICT && !vd_jinja_method(obj, name, &id)) {
		char msg[300];

		snprintf(msg, sizeof(msg), "'dict object' has no attribute '%.200s'", name);
		out->kind = VD_JV_UNDEF;
		out->u.undef = vd_jarena_strndup(ARENA, msg, strlen(msg));
		return out->u.undef ? 0 : vd_jinja_oom(r);
	}
	return vd_jinja_getattr(r, at, obj, name, argv[1].u.s.n, out);
}

static int f_batch(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *items;
	vd_jlist *res = vd_jlist_new(ARENA, 0), *cur = NULL;
	int64_t count = 0;

	if (!res)
		return vd_jinja_oom(r);
	if (want_int(r, at, argv[1], "linecount", &count) || vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	for (size_t i = 0; i < items->n; i++) {
		if (!cur || (int64_t)cur->n == count) {
			vd_jv lv = { .kind = VD_JV_LIST };

			if (!(cur = vd_jlist_new(ARENA, 0)))
				return vd_jinja_oom(r);
			lv.u.list = cur;
			if (vd_jlist_push(ARENA, res, lv))
				return vd_jinja_oom(r);
		}
		if (vd_jlist_push(ARENA, cur, items->items[i]))
			return vd_jinja_oom(r);
	}
	if (cur && given_not_none(argv[2]))
		while ((int64_t)cur->n < count)
			if (vd_jlist_push(ARENA, cur, argv[2]))
				return vd_jinja_oom(r);
	return ret_list(res, out);
}

static int f_capitalize(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	UNUSED(at);
	return vd_jstr_case(r, argv[0], VD_JCASE_CAPITALIZE, out);
}

static int f_default(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv v = argv[0];
	bool boolean = vd_jv_truthy(argv[2]);

	UNUSED(r);
	UNUSED(at);
	if (v.kind == VD_JV_UNDEF || (boolean && !vd_jv_truthy(v)))
		*out = given(argv[1]) ? argv[1] : vd_jv_str("", 0);
	else
		*out = v;
	return 0;
}

static int f_dictsort(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv v = argv[0], items, *keys;
	bool ci = !vd_jv_truthy(argv[1]), reverse = vd_jv_truthy(argv[3]);
	int pos = 0;
	const vd_jbuiltin *m;
	int id;

	if (given(argv[2])) {
		if (argv[2].kind == VD_JV_STR && argv[2].u.s.n == 5 && !memcmp(argv[2].u.s.p, "value", 5))
			pos = 1;
		else if (!(argv[2].kind == VD_JV_STR && argv[2].u.s.n == 3 &&
			   !memcmp(argv[2].u.s.p, "key", 3)))
			return vd_jinja_fail(r, at, "You can only sort by either \"key\" or \"value\"");
	}
	if (v.kind != VD_JV_DICT)
		return vd_jinja_fail(r, at, "dictsort needs a mapping, not %s", vd_jv_type_name(v));
	m = vd_jinja_method(v, "items", &id);
	if (m->fn(r, at, &v, &items))
		return -1;
	if (!(keys = vd_jarena_alloc(ARENA, (items.u.list->n + 1) * sizeof(vd_jv))))
		return vd_jinja_oom(r);
	for (size_t i = 0; i < items.u.list->n; i++) {
		vd_jv k = items.u.list->items[i].u.list->items[pos];

		if (ci && k.kind == VD_JV_STR && vd_jstr_case(r, k, VD_JCASE_LOWER, &k))
			return -1;
		keys[i] = k;
	}
	return sorted_list(r, at, items.u.list->items, keys, items.u.list->n, reverse, out);
}

static int f_escape(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv s;
	vd_jbuf b = { 0 };

	UNUSED(at);
	if (to_str(r, argv[0], &s))
		return -1;
	if (vd_jbuf_put(ARENA, &b, "", 0))
		return vd_jinja_oom(r);
	for (size_t i = 0; i < s.u.s.n; i++) {
		const char *rep = NULL;

		switch (s.u.s.p[i]) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '"': rep = "&#34;"; break;
		case '\'': rep = "&#39;"; break;
		default: break;
		}
		if (rep ? vd_jbuf_puts(ARENA, &b, rep) : vd_jbuf_putc(ARENA, &b, s.u.s.p[i]))
			return vd_jinja_oom(r);
	}
	*out = vd_jv_str(b.p, b.n);
	return 0;
}

static int f_first(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *items;

	if (vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	if (items->n) {
		*out = items->items[0];
		return 0;
	}
	out->kind = VD_JV_UNDEF;
	out->u.undef = "No first item, sequence was empty.";
	return 0;
}

static int f_last(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *items;

	if (vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	if (items->n) {
		*out = items->items[items->n - 1];
		return 0;
	}
	out->kind = VD_JV_UNDEF;
	out->u.undef = "No last item, sequence was empty.";
	return 0;
}

/* Python float(str): surrounding whitespace, sign, digits with single
 * underscores, inf/nan spellings; false when not a number. */
static bool parse_py_float(vd_jrender *r, vd_jv s, double *out)
{
	vd_jv t;
	char buf[128], *end;
	size_t k = 0;

	if (vd_jstr_strip(r, NULL, s, (vd_jv){ .kind = VD_JV_MISSING }, true, true, &t) ||
	    t.u.s.n == 0 || t.u.s.n >= sizeof(buf))
		return false;
	for (size_t i = 0; i < t.u.s.n; i++) {
		char c = t.u.s.p[i];

		if (c == '_') {
			if (i == 0 || i + 1 == t.u.s.n || !(t.u.s.p[i - 1] >= '0' && t.u.s.p[i - 1] <= '9') ||
			    !(t.u.s.p[i + 1] >= '0' && t.u.s.p[i + 1] <= '9'))
				return false;
			continue;
		}
		if (c == 'x' || c == 'X' || c == 'p' || c == 'P' || (unsigned char)c >= 0x80)
			return false;
		buf[k++] = c;
	}
	buf[k] = 0;
	*out = strtod(buf, &end);
	return *end == 0;
}

static int f_float(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv v = argv[0];
	double d;

	/* float(Undefined) raises, which float's fallback does not catch */
	if (v.kind == VD_JV_UNDEF)
		return vd_jinja_undef_fail(r, at, v);
	if (vd_jv_is_number(v)) {
		*out = vd_jv_float(vd_jv_as_double(v));
	} else if (v.kind == VD_JV_STR && parse_py_float(r, v, &d)) {
		*out = vd_jv_float(d);
	} else {
		*out = given(argv[1]) ? argv[1] : vd_jv_float(0.0);
	}
	return 0;
}

/* Python int(str, base) for base 10 and the prefixed bases; false when not
 * an integer. */
static bool parse_py_int(vd_jrender *r, vd_jv s, int base, int64_t *out)
{
	vd_jv t;
	char buf[80];
	size_t k = 0, i = 0;
	char *end;
	bool neg = false;
	unsigned long long v;

	if (vd_jstr_strip(r, NULL, s, (vd_jv){ .kind = VD_JV_MISSING }, true, true, &t) ||
	    t.u.s.n == 0 || t.u.s.n >= sizeof(buf))
		return false;
	if (t.u.s.p[0] == '+' || t.u.s.p[0] == '-') {
		neg = t.u.s.p[0] == '-';
		i = 1;
	}
	if (base == 16 && t.u.s.n - i > 2 && t.u.s.p[i] == '0' &&
	    (t.u.s.p[i + 1] == 'x' || t.u.s.p[i + 1] == 'X'))
		i += 2;
	for (; i < t.u.s.n; i++) {
		char c = t.u.s.p[i];

		if (c == '_' && k > 0 && i + 1 < t.u.s.n && t.u.s.p[i + 1] != '_')
			continue;
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
			return false;
		buf[k++] = c;
	}
	if (k == 0)
		return false;
	buf[k] = 0;
	v = strtoull(buf, &end, base);
	if (*end || v > (unsigned long long)INT64_MAX + neg)
		return false;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

static int f_int(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv v = argv[0];
	int64_t base = 10, i;
	double d;

	if (given(argv[2]) && want_int(r, at, argv[2], "base", &base))
		return -1;
	/* int(Undefined) raises, which int's fallback does not catch */
	if (v.kind == VD_JV_UNDEF)
		return vd_jinja_undef_fail(r, at, v);
	if (v.kind == VD_JV_INT || v.kind == VD_JV_BOOL) {
		*out = vd_jv_int(v.kind == VD_JV_BOOL ? v.u.b : v.u.i);
		return 0;
	}
	if (v.kind == VD_JV_FLOAT && isfinite(v.u.f) && fabs(v.u.f) < 9.2e18) {
		*out = vd_jv_int((int64_t)v.u.f);
		return 0;
	}
	if (v.kind == VD_JV_STR) {
		if (base >= 2 && base <= 36 && parse_py_int(r, v, (int)base, &i)) {
			*out = vd_jv_int(i);
			return 0;
		}
		/* int(float(value)) as the fallback */
		if (parse_py_float(r, v, &d) && isfinite(d) && fabs(d) < 9.2e18) {
			*out = vd_jv_int((int64_t)d);
			return 0;
		}
	}
	*out = given(argv[1]) ? argv[1] : vd_jv_int(0);
	return 0;
}

static int f_indent(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv s, ind;
	vd_jlist *lines;
	vd_jbuf b = { 0 }, pad = { 0 };
	bool first = vd_jv_truthy(argv[2]), blank = vd_jv_truthy(argv[3]);

	/* Jinja's indent appends "\n" to its input without str() */
	s = argv[0];
	if (s.kind == VD_JV_UNDEF)
		return vd_jinja_undef_fail(r, at, s);
	if (s.kind != VD_JV_STR)
		return vd_jinja_fail(r, at, "unsupported operand type(s) for +=: '%s' and 'str'",
				     vd_jv_type_name(s));
	ind = argv[1];
	if (ind.kind == VD_JV_STR) {
		if (vd_jbuf_put(ARENA, &pad, ind.u.s.p, ind.u.s.n))
			return vd_jinja_oom(r);
	} else {
		int64_t w = 4;

		if (given(ind) && want_int(r, at, ind, "width", &w))
			return -1;
		if (vd_jbuf_put(ARENA, &pad, "", 0))
			return vd_jinja_oom(r);
		for (int64_t k = 0; k < w; k++)
			if (vd_jbuf_putc(ARENA, &pad, ' '))
				return vd_jinja_oom(r);
	}
	/* s + "\n", split into lines as str.splitlines does */
	{
		vd_jbuf t = { 0 };

		if (vd_jbuf_put(ARENA, &t, s.u.s.p, s.u.s.n) || vd_jbuf_putc(ARENA, &t, '\n'))
			return vd_jinja_oom(r);
		if (vd_jstr_splitlines(r, vd_jv_str(t.p, t.n), &lines))
			return -1;
	}
	if (vd_jbuf_put(ARENA, &b, "", 0))
		return vd_jinja_oom(r);
	if (first && vd_jbuf_put(ARENA, &b, pad.p, pad.n))
		return vd_jinja_oom(r);
	for (size_t i = 0; i < lines->n; i++) {
		vd_jv line = lines->items[i];

		if (i && vd_jbuf_putc(ARENA, &b, '\n'))
			return vd_jinja_oom(r);
		if (i && (blank || line.u.s.n) && vd_jbuf_put(ARENA, &b, pad.p, pad.n))
			return vd_jinja_oom(r);
		if (vd_jbuf_put(ARENA, &b, line.u.s.p, line.u.s.n))
			return vd_jinja_oom(r);
	}
	*out = vd_jv_str(b.p, b.n);
	return 0;
}

static int f_items(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jbuiltin *m;
	int id;

	if (argv[0].kind == VD_JV_UNDEF) {
		vd_jlist *l = vd_jlist_new(ARENA, 0);

		return l ? ret_list(l, out) : vd_jinja_oom(r);
	}
	if (argv[0].kind != VD_JV_DICT)
		return vd_jinja_fail(r, at, "Can only get item pairs from a mapping.");
	m = vd_jinja_method(argv[0], "items", &id);
	return m->fn(r, at, argv, out);
}

static int f_join(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *items;
	vd_jv sep = vd_jv_str("", 0);
	vd_jbuf b = { 0 };

	if (given(argv[1]) && to_str(r, argv[1], &sep))
		return -1;
	if (vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	if (vd_jbuf_put(ARENA, &b, "", 0))
		return vd_jinja_oom(r);
	for (size_t i = 0; i < items->n; i++) {
		vd_jv it = items->items[i];

		if (given_not_none(argv[2]) &&
		    attr_get(r, at, it, argv[2], (vd_jv){ .kind = VD_JV_MISSING }, false, &it))
			return -1;
		if ((i && vd_jbuf_put(ARENA, &b, sep.u.s.p, sep.u.s.n)) ||
		    vd_jv_str_to(ARENA, &b, it))
			return vd_jinja_oom(r);
	}
	*out = vd_jv_str(b.p, b.n);
	return 0;
}

static int f_length(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv v = argv[0];

	switch (v.kind) {
	case VD_JV_UNDEF: *out = vd_jv_int(0); return 0;
	case VD_JV_STR: *out = vd_jv_int((int64_t)vd_utf8_len(v.u.s.p, v.u.s.n)); return 0;
	case VD_JV_LIST: *out = vd_jv_int((int64_t)v.u.list->n); return 0;
	case VD_JV_DICT: *out = vd_jv_int((int64_t)v.u.dict->n); return 0;
	case VD_JV_LOOP: *out = vd_jv_int((int64_t)v.u.loop->items->n); return 0;
	default:
		return vd_jinja_fail(r, at, "object of type '%s' has no len()", vd_jv_type_name(v));
	}
}

static int f_list(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *items;
	vd_jlist *l;

	if (vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	if (!(l = vd_jlist_new(ARENA, items->n)))
		return vd_jinja_oom(r);
	if (items->n)
		memcpy(l->items, items->items, items->n * sizeof(vd_jv));
	l->n = items->n;
	return ret_list(l, out);
}

static int f_lower(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	UNUSED(at);
	return vd_jstr_case(r, argv[0], VD_JCASE_LOWER, out);
}

static int f_upper(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	UNUSED(at);
	return vd_jstr_case(r, argv[0], VD_JCASE_UPPER, out);
}

static int f_title(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	UNUSED(at);
	return vd_jstr_case(r, argv[0], VD_JCASE_JTITLE, out);
}

/* map(attribute=..., default=...) or map('filter', args...). */
static int f_map(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *items, *extra = argv[1].u.list;
	const vd_jdict *kw = argv[2].u.dict;
	long ai = vd_jdict_find_str(kw, "attribute", 9), di = vd_jdict_find_str(kw, "default", 7);
	const vd_jbuiltin *f = NULL;
	vd_jlist *res;

	/* Jinja maps nothing, and checks no argument, when the input is falsy */
	if (!vd_jv_truthy(argv[0])) {
		if (!(res = vd_jlist_new(ARENA, 0)))
			return vd_jinja_oom(r);
		return ret_list(res, out);
	}
	if (vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	if (!(res = vd_jlist_new(ARENA, items->n)))
		return vd_jinja_oom(r);
	if (ai < 0) {
		char name[64];

		if (extra->n == 0 || extra->items[0].kind != VD_JV_STR)
			return vd_jinja_fail(r, at, "map requires a filter argument");
		snprintf(name, sizeof(name), "%.*s", (int)extra->items[0].u.s.n, extra->items[0].u.s.p);
		if (!(f = vd_jinja_filter(name)))
			return vd_jinja_fail(r, at, "No filter named '%s'.", name);
	}
	for (size_t i = 0; i < items->n; i++) {
		vd_jv v;

		if (f ? vd_jinja_apply_filter(r, at, f, items->items[i], extra->items + 1,
					      extra->n - 1, &v) :
		    attr_get(r, at, items->items[i], kw->vals[ai],
			     di >= 0 ? kw->vals[di] : (vd_jv){ .kind = VD_JV_MISSING }, false, &v))
			return -1;
		res->items[res->n++] = v;
	}
	return ret_list(res, out);
}

/* min/max: the first extreme item by key. */
static int min_max(vd_jrender *r, const vd_jnode *at, vd_jv *argv, bool want_max, vd_jv *out)
{
	const vd_jlist *items;
	bool ci = !vd_jv_truthy(argv[1]);
	vd_jv best_key = { .kind = VD_JV_MISSING };
	size_t best = 0;

	if (vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	if (items->n == 0) {
		out->kind = VD_JV_UNDEF;
		out->u.undef = "No aggregated item, sequence was empty.";
		return 0;
	}
	for (size_t i = 0; i < items->n; i++) {
		vd_jv k;
		const char *err = NULL;
		int c;

		if (attr_get(r, at, items->items[i], argv[2], (vd_jv){ .kind = VD_JV_MISSING }, ci, &k))
			return -1;
		if (i == 0) {
			best_key = k;
			continue;
		}
		if (vd_jv_cmp(k, best_key, &c, &err))
			return vd_jinja_fail(r, at, "%s", err);
		if (want_max ? c > 0 : c < 0) {
			best = i;
			best_key = k;
		}
	}
	*out = items->items[best];
	return 0;
}

static int f_max(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return min_max(r, at, argv, true, out);
}

static int f_min(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return min_max(r, at, argv, false, out);
}

static int f_replace(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv s, old, repl;
	int64_t count = -1;

	if (given_not_none(argv[3]) && want_int(r, at, argv[3], "count", &count))
		return -1;
	if (to_str(r, argv[0], &s) || to_str(r, argv[1], &old) || to_str(r, argv[2], &repl))
		return -1;
	return vd_jstr_replace(r, s, old, repl, count, out);
}

static int f_reverse(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *items;
	vd_jlist *l;

	if (argv[0].kind == VD_JV_STR) {
		const vd_jlist *chars;
		vd_jbuf b = { 0 };

		if (vd_jinja_iterate(r, at, argv[0], &chars))
			return -1;
		if (vd_jbuf_put(ARENA, &b, "", 0))
			return vd_jinja_oom(r);
		for (size_t i = chars->n; i-- > 0;)
			if (vd_jbuf_put(ARENA, &b, chars->items[i].u.s.p, chars->items[i].u.s.n))
				return vd_jinja_oom(r);
		*out = vd_jv_str(b.p, b.n);
		return 0;
	}
	if (vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	if (!(l = vd_jlist_new(ARENA, items->n)))
		return vd_jinja_oom(r);
	for (size_t i = 0; i < items->n; i++)
		l->items[i] = items->items[items->n - 1 - i];
	l->n = items->n;
	return ret_list(l, out);
}

static int f_round(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv v = argv[0];
	int64_t prec = 0;
	int method = 0; /* common, ceil, floor */
	double x, scale;

	if (given(argv[1]) && want_int(r, at, argv[1], "precision", &prec))
		return -1;
	if (given(argv[2])) {
		vd_jv m = argv[2];

		if (m.kind == VD_JV_STR && m.u.s.n == 4 && !memcmp(m.u.s.p, "ceil", 4))
			method = 1;
		else if (m.kind == VD_JV_STR && m.u.s.n == 5 && !memcmp(m.u.s.p, "floor", 5))
			method = 2;
		else if (!(m.kind == VD_JV_STR && m.u.s.n == 6 && !memcmp(m.u.s.p, "common", 6)))
			return vd_jinja_fail(r, at, "method must be common, ceil or floor");
	}
	if (!vd_jv_is_number(v))
		return vd_jinja_fail(r, at, "type %s doesn't define __round__ method",
				     vd_jv_type_name(v));
	if (method == 0 && v.kind != VD_JV_FLOAT) {
		/* round(int, n) stays an int (n >= 0 leaves it unchanged) */
		*out = vd_jv_int(v.kind == VD_JV_BOOL ? v.u.b : v.u.i);
		return 0;
	}
	x = vd_jv_as_double(v);
	if (method == 0) {
		if (prec >= 0 && prec <= 300 && isfinite(x)) {
			/* printf rounds the exact binary value half to even, as
			 * Python's correctly rounded round() does */
			char buf[400];

			snprintf(buf, sizeof(buf), "%.*f", (int)prec, x);
			*out = vd_jv_float(strtod(buf, NULL));
		} else if (isfinite(x)) {
			scale = pow(10.0, (double)-prec);
			*out = vd_jv_float(nearbyint(x / scale) * scale);
		} else {
			*out = vd_jv_float(x);
		}
		return 0;
	}
	scale = pow(10.0, (double)prec);
	*out = vd_jv_float((method == 1 ? ceil(x * scale) : floor(x * scale)) / scale);
	return 0;
}

static int f_safe(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	UNUSED(at);
	return to_str(r, argv[0], out);
}

/* select/reject/selectattr/rejectattr. */
static int select_common(vd_jrender *r, const vd_jnode *at, vd_jv *argv, bool by_attr,
			 bool keep, vd_jv *out)
{
	const vd_jlist *items, *extra = argv[1].u.list;
	const vd_jbuiltin *t = NULL;
	size_t first = by_attr ? 1 : 0;
	vd_jlist *res;
	vd_jv attr = { .kind = VD_JV_MISSING };

	/* Jinja selects nothing, and checks no argument, when the input is falsy */
	if (!vd_jv_truthy(argv[0])) {
		if (!(res = vd_jlist_new(ARENA, 0)))
			return vd_jinja_oom(r);
		return ret_list(res, out);
	}
	if (by_attr) {
		if (extra->n == 0)
			return vd_jinja_fail(r, at, "Missing parameter for attribute name");
		attr = extra->items[0];
	}
	if (extra->n > first) {
		char name[64];
		vd_jv tn = extra->items[first];

		if (tn.kind != VD_JV_STR)
			return vd_jinja_fail(r, at, "test name must be a string");
		snprintf(name, sizeof(name), "%.*s", (int)tn.u.s.n, tn.u.s.p);
		if (!(t = vd_jinja_test(name)))
			return vd_jinja_fail(r, at, "No test named '%s'.", name);
	}
	if (vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	if (!(res = vd_jlist_new(ARENA, items->n)))
		return vd_jinja_oom(r);
	for (size_t i = 0; i < items->n; i++) {
		vd_jv v = items->items[i];
		bool ok;

		if (by_attr && attr_get(r, at, v, attr, (vd_jv){ .kind = VD_JV_MISSING }, false, &v))
			return -1;
		if (t) {
			if (vd_jinja_apply_test(r, at, t, v, extra->items + first + 1,
						extra->n - first - 1, &ok))
				return -1;
		} else {
			ok = vd_jv_truthy(v);
		}
		if (ok == keep)
			res->items[res->n++] = items->items[i];
	}
	return ret_list(res, out);
}

static int f_select(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return select_common(r, at, argv, false, true, out);
}

static int f_reject(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return select_common(r, at, argv, false, false, out);
}

static int f_selectattr(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return select_common(r, at, argv, true, true, out);
}

static int f_rejectattr(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return select_common(r, at, argv, true, false, out);
}

static int f_sort(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *items;
	bool reverse = vd_jv_truthy(argv[1]), ci = !vd_jv_truthy(argv[2]);
	vd_jv *keys;

	if (vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	if (!(keys = vd_jarena_alloc(ARENA, (items->n + 1) * sizeof(vd_jv))))
		return vd_jinja_oom(r);
	for (size_t i = 0; i < items->n; i++)
		if (attr_get(r, at, items->items[i], argv[3], (vd_jv){ .kind = VD_JV_MISSING }, ci,
			     &keys[i]))
			return -1;
	return sorted_list(r, at, items->items, keys, items->n, reverse, out);
}

static int f_string(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	UNUSED(at);
	return to_str(r, argv[0], out);
}

static int f_sum(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *items;
	vd_jv acc = given(argv[2]) ? argv[2] : vd_jv_int(0);

	if (vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	for (size_t i = 0; i < items->n; i++) {
		vd_jv v = items->items[i];

		if (given_not_none(argv[1]) &&
		    attr_get(r, at, v, argv[1], (vd_jv){ .kind = VD_JV_MISSING }, false, &v))
			return -1;
		if (vd_jinja_binop(r, at, VD_JOP_ADD, acc, v, &acc))
			return -1;
	}
	*out = acc;
	return 0;
}

static int f_tojson(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv ind = argv[2], seps = argv[3];
	const char *indent = NULL, *item_sep = NULL, *key_sep = NULL, *err = NULL;
	vd_jbuf b = { 0 };
	int rc;

	if (ind.kind == VD_JV_STR) {
		if (!(indent = vd_jarena_strndup(ARENA, ind.u.s.p, ind.u.s.n)))
			return vd_jinja_oom(r);
	} else if (ind.kind == VD_JV_INT || ind.kind == VD_JV_BOOL) {
		int64_t w = ind.kind == VD_JV_BOOL ? ind.u.b : ind.u.i;
		char *sp;

		if (w < 0)
			w = 0;
		if (w > 1024 || !(sp = vd_jarena_alloc(ARENA, (size_t)w + 1)))
			return w > 1024 ? vd_jinja_fail(r, at, "tojson indent too large") : vd_jinja_oom(r);
		memset(sp, ' ', (size_t)w);
		indent = sp;
	} else if (given_not_none(ind)) {
		return vd_jinja_fail(r, at, "tojson indent must be an int or a string");
	}
	if (given_not_none(seps)) {
		if (seps.kind != VD_JV_LIST || seps.u.list->n != 2 ||
		    seps.u.list->items[0].kind != VD_JV_STR || seps.u.list->items[1].kind != VD_JV_STR)
			return vd_jinja_fail(r, at, "tojson separators must be a pair of strings");
		if (!(item_sep = vd_jarena_strndup(ARENA, seps.u.list->items[0].u.s.p,
						   seps.u.list->items[0].u.s.n)) ||
		    !(key_sep = vd_jarena_strndup(ARENA, seps.u.list->items[1].u.s.p,
						  seps.u.list->items[1].u.s.n)))
			return vd_jinja_oom(r);
	}
	rc = vd_jv_json_to(ARENA, &b, argv[0], vd_jv_truthy(argv[1]), indent, item_sep, key_sep,
			   vd_jv_truthy(argv[4]), &err);
	if (rc < 0)
		return vd_jinja_oom(r);
	if (rc > 0)
		return vd_jinja_fail(r, at, "%s", err);
	*out = vd_jv_str(b.p, b.n);
	return 0;
}

static int f_trim(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv s;

	if (to_str(r, argv[0], &s))
		return -1;
	return vd_jstr_strip(r, at, s, argv[1], true, true, out);
}

static int f_unique(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *items;
	bool ci = !vd_jv_truthy(argv[1]);
	vd_jlist *res, *seen;

	if (vd_jinja_iterate(r, at, argv[0], &items))
		return -1;
	if (!(res = vd_jlist_new(ARENA, items->n)) || !(seen = vd_jlist_new(ARENA, items->n)))
		return vd_jinja_oom(r);
	for (size_t i = 0; i < items->n; i++) {
		vd_jv k;
		bool dup = false;

		if (attr_get(r, at, items->items[i], argv[2], (vd_jv){ .kind = VD_JV_MISSING }, ci, &k))
			return -1;
		/* the keys go into a Python set */
		if ((k.kind == VD_JV_LIST && !k.u.list->tuple) || k.kind == VD_JV_DICT ||
		    k.kind == VD_JV_NS)
			return vd_jinja_fail(r, at, "unhashable type: '%s'", vd_jv_type_name(k));
		for (size_t j = 0; j < seen->n && !dup; j++)
			dup = vd_jv_eq(seen->items[j], k);
		if (dup)
			continue;
		seen->items[seen->n++] = k;
		res->items[res->n++] = items->items[i];
	}
	return ret_list(res, out);
}

static int f_wordcount(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv s;
	size_t i, len;
	int64_t words = 0;
	bool in_word = false;

	UNUSED(at);
	if (to_str(r, argv[0], &s))
		return -1;
	for (i = 0; i < s.u.s.n; i += len) {
		int32_t cp = vd_utf8_decode(s.u.s.p + i, s.u.s.n - i, &len);
		utf8proc_category_t c = utf8proc_category(cp);
		bool w = cp == '_' || (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_NO);

		if (w && !in_word)
			words++;
		in_word = w;
	}
	*out = vd_jv_int(words);
	return 0;
}

static const vd_jbuiltin FILTERS[] = {
	{ "abs", f_abs, { "value" }, false, false },
	{ "attr", f_attr, { "value", "name" }, false, false },
	{ "batch", f_batch, { "value", "linecount", "fill_with" }, false, false },
	{ "capitalize", f_capitalize, { "s" }, false, false },
	{ "count", f_length, { "obj" }, false, false },
	{ "d", f_default, { "value", "default_value", "boolean" }, false, false },
	{ "default", f_default, { "value", "default_value", "boolean" }, false, false },
	{ "dictsort", f_dictsort, { "value", "case_sensitive", "by", "reverse" }, false, false },
	{ "e", f_escape, { "s" }, false, false },
	{ "escape", f_escape, { "s" }, false, false },
	{ "first", f_first, { "seq" }, false, false },
	{ "float", f_float, { "value", "default" }, false, false },
	{ "indent", f_indent, { "s", "width", "first", "blank" }, false, false },
	{ "int", f_int, { "value", "default", "base" }, false, false },
	{ "items", f_items, { "value" }, false, false },
	{ "join", f_join, { "value", "d", "attribute" }, false, false },
	{ "last", f_last, { "seq" }, false, false },
	{ "length", f_length, { "obj" }, false, false },
	{ "list", f_list, { "value" }, false, false },
	{ "lower", f_lower, { "s" }, false, false },
	{ "map", f_map, { "value" }, true, true },
	{ "max", f_max, { "value", "case_sensitive", "attribute" }, false, false },
	{ "min", f_min, { "value", "case_sensitive", "attribute" }, false, false },
	{ "reject", f_reject, { "value" }, true, false },
	{ "rejectattr", f_rejectattr, { "value" }, true, false },
	{ "replace", f_replace, { "s", "old", "new", "count" }, false, false },
	{ "reverse", f_reverse, { "value" }, false, false },
	{ "round", f_round, { "value", "precision", "method" }, false, false },
	{ "safe", f_safe, { "value" }, false, false },
	{ "select", f_select, { "value" }, true, false },
	{ "selectattr", f_selectattr, { "value" }, true, false },
	{ "sort", f_sort, { "value", "reverse", "case_sensitive", "attribute" }, false, false },
	{ "string", f_string, { "value" }, false, false },
	{ "sum", f_sum, { "iterable", "attribute", "start" }, false, false },
	{ "title", f_title, { "s" }, false, false },
	{ "tojson", f_tojson, { "x", "ensure_ascii", "indent", "separators", "sort_keys" },
	  false, false },
	{ "trim", f_trim, { "value", "chars" }, false, false },
	{ "unique", f_unique, { "value", "case_sensitive", "attribute" }, false, false },
	{ "upper", f_upper, { "s" }, false, false },
	{ "wordcount", f_wordcount, { "s" }, false, false },
};

const vd_jbuiltin *vd_jinja_filter(const char *name)
{
	for (size_t i = 0; i < sizeof(FILTERS) / sizeof(FILTERS[0]); i++)
		if (!strcmp(FILTERS[i].name, name))
			return &FILTERS[i];
	return NULL;
}

/* ---- tests ---- */

#define TEST(fn, expr)                                                               \
	static int fn(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)  \
	{                                                                            \
		vd_jv v = argv[0];                                                   \
		UNUSED(v);                                                           \
		UNUSED(r);                                                           \
		UNUSED(at);                                                          \
		*out = vd_jv_bool(expr);                                             \
		return 0;                                                            \
	}

TEST(t_defined, v.kind != VD_JV_UNDEF)
TEST(t_undefined, v.kind == VD_JV_UNDEF)
TEST(t_none, v.kind == VD_JV_NONE)
TEST(t_boolean, v.kind == VD_JV_BOOL)
TEST(t_false, v.kind == VD_JV_BOOL && !v.u.b)
TEST(t_true, v.kind == VD_JV_BOOL && v.u.b)
TEST(t_integer, v.kind == VD_JV_INT)
TEST(t_float, v.kind == VD_JV_FLOAT)
TEST(t_number, vd_jv_is_number(v))
TEST(t_string, v.kind == VD_JV_STR)
TEST(t_mapping, v.kind == VD_JV_DICT)
TEST(t_iterable, v.kind == VD_JV_STR || v.kind == VD_JV_LIST || v.kind == VD_JV_DICT ||
		 v.kind == VD_JV_UNDEF || v.kind == VD_JV_LOOP)
TEST(t_sequence, v.kind == VD_JV_STR || v.kind == VD_JV_LIST || v.kind == VD_JV_DICT ||
		 v.kind == VD_JV_UNDEF)
TEST(t_callable, v.kind == VD_JV_MACRO || v.kind == VD_JV_METHOD || v.kind == VD_JV_FUNC ||
		 v.kind == VD_JV_UNDEF)
TEST(t_escaped, false) /* nothing is Markup here */

/* `is filter` / `is test`: whether a built-in of that name exists. */
static bool names_builtin(vd_jv v, const vd_jbuiltin *(*find)(const char *))
{
	char name[64];

	if (v.kind != VD_JV_STR || v.u.s.n >= sizeof(name) || memchr(v.u.s.p, 0, v.u.s.n))
		return false;
	memcpy(name, v.u.s.p, v.u.s.n);
	name[v.u.s.n] = 0;
	return find(name) != NULL;
}

TEST(t_filter, names_builtin(v, vd_jinja_filter))
TEST(t_test, names_builtin(v, vd_jinja_test))

/* odd/even/divisibleby through Python's % */
static int modulo(vd_jrender *r, const vd_jnode *at, vd_jv v, vd_jv d, vd_jv *m)
{
	if (!vd_jv_is_number(v) || !vd_jv_is_number(d))
		return vd_jinja_fail(r, at, "unsupported operand type(s) for %%: '%s' and '%s'",
				     vd_jv_type_name(v), vd_jv_type_name(d));
	return vd_jinja_binop(r, at, VD_JOP_MOD, v, d, m);
}

static int t_odd(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv m;

	if (modulo(r, at, argv[0], vd_jv_int(2), &m))
		return -1;
	*out = vd_jv_bool(vd_jv_eq(m, vd_jv_int(1)));
	return 0;
}

static int t_even(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv m;

	if (modulo(r, at, argv[0], vd_jv_int(2), &m))
		return -1;
	*out = vd_jv_bool(vd_jv_eq(m, vd_jv_int(0)));
	return 0;
}

static int t_divisibleby(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv m;

	if (modulo(r, at, argv[0], argv[1], &m))
		return -1;
	*out = vd_jv_bool(vd_jv_eq(m, vd_jv_int(0)));
	return 0;
}

static int t_sameas(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv a = argv[0], b = argv[1];
	bool same = a.kind == b.kind;

	UNUSED(r);
	UNUSED(at);
	if (same) {
		switch (a.kind) {
		case VD_JV_NONE: case VD_JV_UNDEF: case VD_JV_MISSING: break;
		case VD_JV_BOOL: same = a.u.b == b.u.b; break;
		case VD_JV_INT: same = a.u.i == b.u.i; break;
		case VD_JV_FLOAT: same = false; break;
		case VD_JV_STR: same = a.u.s.p == b.u.s.p && a.u.s.n == b.u.s.n; break;
		default: same = vd_jv_eq(a, b) && a.u.list == b.u.list; break;
		}
	}
	*out = vd_jv_bool(same);
	return 0;
}

static int t_lower(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv s, low;

	UNUSED(at);
	if (to_str(r, argv[0], &s) || vd_jstr_case(r, s, VD_JCASE_LOWER, &low))
		return -1;
	/* str.islower(): no uppercase letters and at least one cased one */
	{
		vd_jv up;

		if (vd_jstr_case(r, s, VD_JCASE_UPPER, &up))
			return -1;
		*out = vd_jv_bool(vd_jv_eq(s, low) && !vd_jv_eq(s, up));
	}
	return 0;
}

static int t_upper(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv s, low, up;

	UNUSED(at);
	if (to_str(r, argv[0], &s) || vd_jstr_case(r, s, VD_JCASE_LOWER, &low) ||
	    vd_jstr_case(r, s, VD_JCASE_UPPER, &up))
		return -1;
	*out = vd_jv_bool(vd_jv_eq(s, up) && !vd_jv_eq(s, low));
	return 0;
}

static int compare_test(vd_jrender *r, const vd_jnode *at, vd_jv *argv, int op, vd_jv *out)
{
	bool t;

	if (vd_jinja_compare(r, at, op, argv[0], argv[1], &t))
		return -1;
	*out = vd_jv_bool(t);
	return 0;
}

#define CMP_TEST(fn, op)                                                            \
	static int fn(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out) \
	{                                                                           \
		return compare_test(r, at, argv, op, out);                          \
	}
CMP_TEST(t_eq, VD_JOP_EQ)
CMP_TEST(t_ne, VD_JOP_NE)
CMP_TEST(t_lt, VD_JOP_LT)
CMP_TEST(t_le, VD_JOP_LE)
CMP_TEST(t_gt, VD_JOP_GT)
CMP_TEST(t_ge, VD_JOP_GE)
CMP_TEST(t_in, VD_JOP_IN)

static const vd_jbuiltin TESTS[] = {
	{ "!=", t_ne, { "a", "b" }, false, false },
	{ "<", t_lt, { "a", "b" }, false, false },
	{ "<=", t_le, { "a", "b" }, false, false },
	{ "==", t_eq, { "a", "b" }, false, false },
	{ ">", t_gt, { "a", "b" }, false, false },
	{ ">=", t_ge, { "a", "b" }, false, false },
	{ "boolean", t_boolean, { "value" }, false, false },
	{ "callable", t_callable, { "obj" }, false, false },
	{ "defined", t_defined, { "value" }, false, false },
	{ "divisibleby", t_divisibleby, { "value", "num" }, false, false },
	{ "eq", t_eq, { "a", "b" }, false, false },
	{ "equalto", t_eq, { "a", "b" }, false, false },
	{ "escaped", t_escaped, { "value" }, false, false },
	{ "even", t_even, { "value" }, false, false },
	{ "false", t_false, { "value" }, false, false },
	{ "filter", t_filter, { "value" }, false, false },
	{ "float", t_float, { "value" }, false, false },
	{ "ge", t_ge, { "a", "b" }, false, false },
	{ "greaterthan", t_gt, { "a", "b" }, false, false },
	{ "gt", t_gt, { "a", "b" }, false, false },
	{ "in", t_in, { "value", "seq" }, false, false },
	{ "integer", t_integer, { "value" }, false, false },
	{ "iterable", t_iterable, { "value" }, false, false },
	{ "le", t_le, { "a", "b" }, false, false },
	{ "lessthan", t_lt, { "a", "b" }, false, false },
	{ "lower", t_lower, { "value" }, false, false },
	{ "lt", t_lt, { "a", "b" }, false, false },
	{ "mapping", t_mapping, { "value" }, false, false },
	{ "ne", t_ne, { "a", "b" }, false, false },
	{ "none", t_none, { "value" }, false, false },
	{ "number", t_number, { "value" }, false, false },
	{ "odd", t_odd, { "value" }, false, false },
	{ "sameas", t_sameas, { "value", "other" }, false, false },
	{ "sequence", t_sequence, { "value" }, false, false },
	{ "string", t_string, { "value" }, false, false },
	{ "test", t_test, { "value" }, false, false },
	{ "true", t_true, { "value" }, false, false },
	{ "undefined", t_undefined, { "value" }, false, false },
	{ "upper", t_upper, { "value" }, false, false },
};

const vd_jbuiltin *vd_jinja_test(const char *name)
{
	for (size_t i = 0; i < sizeof(TESTS) / sizeof(TESTS[0]); i++)
		if (!strcmp(TESTS[i].name, name))
			return &TESTS[i];
	return NULL;
}

/* ---- globals ---- */

#define MAX_RANGE 100000

static int g_range(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	const vd_jlist *a = argv[1].u.list;
	int64_t v[3] = { 0, 0, 1 }, count;
	vd_jlist *l;

	if (a->n < 1 || a->n > 3)
		return vd_jinja_fail(r, at, "range expected 1 to 3 arguments, got %zu", a->n);
	for (size_t i = 0; i < a->n; i++) {
		int64_t x = 0;

		if (want_int(r, at, a->items[i], "range() argument", &x))
			return -1;
		v[a->n == 1 ? 1 : i] = x;
	}
	if (v[2] == 0)
		return vd_jinja_fail(r, at, "range() arg 3 must not be zero");
	if (v[2] > 0)
		count = v[1] > v[0] ? (v[1] - v[0] - 1) / v[2] + 1 : 0;
	else
		count = v[1] < v[0] ? (v[0] - v[1] - 1) / (-v[2]) + 1 : 0;
	if (count > MAX_RANGE)
		return vd_jinja_fail(r, at, "Range too big. The sandbox blocks ranges larger than "
				     "MAX_RANGE (%d).", MAX_RANGE);
	if (!(l = vd_jlist_new(ARENA, (size_t)count)))
		return vd_jinja_oom(r);
	for (int64_t i = 0; i < count; i++)
		l->items[i] = vd_jv_int(v[0] + i * v[2]);
	l->n = (size_t)count;
	return ret_list(l, out);
}

/* dict(mapping?, **kw) and namespace(mapping?, **kw). */
static int make_dict(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv_kind kind,
		     vd_jv *out)
{
	const vd_jlist *pos = argv[1].u.list;
	const vd_jdict *kw = argv[2].u.dict;
	vd_jdict *d = vd_jdict_new(ARENA, kw->n);

	if (!d)
		return vd_jinja_oom(r);
	if (pos->n > 1)
		return vd_jinja_fail(r, at, "expected at most 1 positional argument, got %zu", pos->n);
	if (pos->n) {
		vd_jv m = pos->items[0];

		if (m.kind != VD_JV_DICT)
			return vd_jinja_fail(r, at, "positional argument must be a mapping");
		for (size_t i = 0; i < m.u.dict->n; i++)
			if (vd_jdict_set(ARENA, d, m.u.dict->keys[i], m.u.dict->vals[i]))
				return vd_jinja_oom(r);
	}
	for (size_t i = 0; i < kw->n; i++)
		if (vd_jdict_set(ARENA, d, kw->keys[i], kw->vals[i]))
			return vd_jinja_oom(r);
	out->kind = kind;
	out->u.dict = d;
	return 0;
}

static int g_dict(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return make_dict(r, at, argv, VD_JV_DICT, out);
}

static int g_namespace(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	return make_dict(r, at, argv, VD_JV_NS, out);
}

static int g_raise_exception(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	vd_jv msg;

	UNUSED(at);
	UNUSED(out);
	if (to_str(r, argv[1], &msg))
		return -1;
	/* the template's own words, verbatim: they are meant for the user */
	r->err = vd_errorf(VD_ERR_INVALID_ARG, "%.*s", (int)msg.u.s.n, msg.u.s.p);
	return -1;
}

static int g_strftime_now(vd_jrender *r, const vd_jnode *at, vd_jv *argv, vd_jv *out)
{
	char fmt[256], *buf;
	time_t now = r->fixed_now ? (time_t)r->now : time(NULL);
	struct tm tm;
	size_t cap = 256, n;

	if (argv[1].kind != VD_JV_STR || argv[1].u.s.n >= sizeof(fmt))
		return vd_jinja_fail(r, at, "strftime_now needs a format string");
	memcpy(fmt, argv[1].u.s.p, argv[1].u.s.n);
	fmt[argv[1].u.s.n] = 0;
	if (r->fixed_now ? !gmtime_r(&now, &tm) : !localtime_r(&now, &tm))
		return vd_jinja_fail(r, at, "strftime_now: the clock's time cannot be represented");
	if (fmt[0] == 0) {
		*out = vd_jv_str("", 0);
		return 0;
	}
	for (;;) {
		if (!(buf = vd_jarena_alloc(ARENA, cap)))
			return vd_jinja_oom(r);
		n = strftime(buf, cap, fmt, &tm);
		if (n > 0 || cap >= 65536)
			break;
		cap *= 4;
	}
	*out = vd_jv_str(buf, n);
	return 0;
}

static const vd_jbuiltin GLOBALS[] = {
	{ "range", g_range, { "" }, true, false },
	{ "dict", g_dict, { "" }, true, true },
	{ "namespace", g_namespace, { "" }, true, true },
	{ "raise_exception", g_raise_exception, { "", "message" }, false, false },
	{ "strftime_now", g_strftime_now, { "", "format" }, false, false },
};

int vd_jinja_global_find(const char *name)
{
	for (size_t i = 0; i < sizeof(GLOBALS) / sizeof(GLOBALS[0]); i++)
		if (!strcmp(GLOBALS[i].name, name))
			return (int)i;
	return -1;
}

const vd_jbuiltin *vd_jinja_global(int id)
{
	return &GLOBALS[id];
}

/* ---- argument binding ---- */

int vd_jinja_call_builtin(vd_jrender *r, const vd_jnode *at, const vd_jbuiltin *b,
			  vd_jv self, const vd_jv *args, size_t nargs,
			  const char *const *kwn, const vd_jv *kwv, size_t nkw, vd_jv *out)
{
	vd_jv argv[VD_JBUILTIN_MAXARGS + 2];
	size_t np = 0;
	vd_jlist *extra = NULL;
	vd_jdict *kw = NULL;

	while (np < VD_JBUILTIN_MAXARGS && b->params[np])
		np++;
	for (size_t i = 0; i < VD_JBUILTIN_MAXARGS + 2; i++)
		argv[i].kind = VD_JV_MISSING;
	argv[0] = self;
	if (b->varargs) {
		if (!(extra = vd_jlist_new(ARENA, nargs)))
			return vd_jinja_oom(r);
		extra->tuple = true;
	}
	if (b->kwargs && !(kw = vd_jdict_new(ARENA, nkw)))
		return vd_jinja_oom(r);
	for (size_t i = 0; i < nargs; i++) {
		if (1 + i < np)
			argv[1 + i] = args[i];
		else if (extra)
			extra->items[extra->n++] = args[i];
		else
			return vd_jinja_fail(r, at, "'%s' takes at most %zu argument(s) (%zu given)",
					     b->name, np - 1, nargs);
	}
	for (size_t k = 0; k < nkw; k++) {
		size_t j;

		for (j = 1; j < np; j++)
			if (!strcmp(b->params[j], kwn[k]))
				break;
		if (j < np) {
			if (argv[j].kind != VD_JV_MISSING)
				return vd_jinja_fail(r, at, "'%s' got multiple values for argument '%s'",
						     b->name, kwn[k]);
			argv[j] = kwv[k];
		} else if (kw) {
			if (vd_jdict_set(ARENA, kw, vd_jv_str(kwn[k], strlen(kwn[k])), kwv[k]))
				return vd_jinja_oom(r);
		} else {
			return vd_jinja_fail(r, at, "'%s' got an unexpected keyword argument '%s'",
					     b->name, kwn[k]);
		}
	}
	if (extra) {
		argv[np].kind = VD_JV_LIST;
		argv[np].u.list = extra;
	}
	if (kw) {
		argv[np + (extra != NULL)].kind = VD_JV_DICT;
		argv[np + (extra != NULL)].u.dict = kw;
	}
	return b->fn(r, at, argv, out);
}
