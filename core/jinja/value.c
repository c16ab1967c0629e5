/* Values of the Jinja2 engine with Python's semantics: the arena they live
 * in, truthiness, equality and ordering, str()/repr() (Python's shortest
 * float repr included), json.dumps as transformers' tojson calls it, and the
 * UTF-8 helpers that make strings sequences of code points. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "core/jinja/internal.h"

/* ---- arena ---- */

struct vd_jarena_chunk {
	vd_jarena_chunk *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

#define JARENA_CHUNK (64 * 1024)

void *vd_jarena_alloc_raw(vd_jarena *a, size_t n)
{
	vd_jarena_chunk *c = a->head;
	size_t need = (n + 15) & ~(size_t)15;
	void *p;

	if (need < n)
		return NULL;
	if (!c || c->cap - c->used < need) {
		size_t cap = need > JARENA_CHUNK ? need : JARENA_CHUNK;

		if (a->limit && a->total + cap > a->limit) {
			a->hit_limit = true;
			return NULL;
		}
		c = malloc(sizeof(*c) + cap);
		if (!c)
			return NULL;
		c->used = 0;
		c->cap = cap;
		c->next = a->head;
		a->head = c;
		a->total += cap;
	}
	p = c->data + c->used;
	c->used += need;
	return p;
}

void *vd_jarena_alloc(vd_jarena *a, size_t n)
{
	void *p = vd_jarena_alloc_raw(a, n);

	if (p)
		memset(p, 0, n);
	return p;
}

void vd_jarena_free(vd_jarena *a)
{
	vd_jarena_chunk *c = a->head;

	while (c) {
		vd_jarena_chunk *next = c->next;

		free(c);
		c = next;
	}
	a->head = NULL;
	a->total = 0;
}

char *vd_jarena_strndup(vd_jarena *a, const char *s, size_t n)
{
	char *p = vd_jarena_alloc_raw(a, n + 1);

	if (!p)
		return NULL;
	if (n)
		memcpy(p, s, n);
	p[n] = 0;
	return p;
}

/* ---- builders ---- */

vd_jv vd_jv_none(void)
{
	vd_jv v = { .kind = VD_JV_NONE };
	return v;
}

vd_jv vd_jv_bool(bool b)
{
	vd_jv v = { .kind = VD_JV_BOOL, .u.b = b };
	return v;
}

vd_jv vd_jv_int(int64_t i)
{
	vd_jv v = { .kind = VD_JV_INT, .u.i = i };
	return v;
}

vd_jv vd_jv_float(double f)
{
	vd_jv v = { .kind = VD_JV_FLOAT, .u.f = f };
	return v;
}

vd_jv vd_jv_str(const char *p, size_t n)
{
	vd_jv v = { .kind = VD_JV_STR };

	v.u.s.p = p ? p : "";
	v.u.s.n = n;
	return v;
}

vd_jlist *vd_jlist_new(vd_jarena *a, size_t cap)
{
	vd_jlist *l = vd_jarena_alloc(a, sizeof(*l));

	if (!l)
		return NULL;
	if (cap) {
		l->items = vd_jarena_alloc(a, cap * sizeof(vd_jv));
		if (!l->items)
			return NULL;
		l->cap = cap;
	}
	return l;
}

int vd_jlist_push(vd_jarena *a, vd_jlist *l, vd_jv v)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 4;
		vd_jv *items = vd_jarena_alloc(a, cap * sizeof(vd_jv));

		if (!items)
			return -1;
		if (l->n)
			memcpy(items, l->items, l->n * sizeof(vd_jv));
		l->items = items;
		l->cap = cap;
	}
	l->items[l->n++] = v;
	return 0;
}

vd_jdict *vd_jdict_new(vd_jarena *a, size_t cap)
{
	vd_jdict *d = vd_jarena_alloc(a, sizeof(*d));

	if (!d)
		return NULL;
	if (cap) {
		d->keys = vd_jarena_alloc(a, cap * sizeof(vd_jv));
		d->vals = vd_jarena_alloc(a, cap * sizeof(vd_jv));
		if (!d->keys || !d->vals)
			return NULL;
		d->cap = cap;
	}
	return d;
}

long vd_jdict_find(const vd_jdict *d, vd_jv key)
{
	for (size_t i = 0; i < d->n; i++)
		if (vd_jv_eq(d->keys[i], key))
			return (long)i;
	return -1;
}

long vd_jdict_find_str(const vd_jdict *d, const char *key, size_t n)
{
	for (size_t i = 0; i < d->n; i++) {
		const vd_jv *k = &d->keys[i];

		if (k->kind == VD_JV_STR && k->u.s.n == n && memcmp(k->u.s.p, key, n) == 0)
			return (long)i;
	}
	return -1;
}

int vd_jdict_set(vd_jarena *a, vd_jdict *d, vd_jv key, vd_jv val)
{
	long at = vd_jdict_find(d, key);

	if (at >= 0) {
		d->vals[at] = val;
		return 0;
	}
	if (d->n == d->cap) {
		size_t cap = d->cap ? 2 * d->cap : 4;
		vd_jv *keys = vd_jarena_alloc(a, cap * sizeof(vd_jv));
		vd_jv *vals = vd_jarena_alloc(a, cap * sizeof(vd_jv));

		if (!keys || !vals)
			return -1;
		if (d->n) {
			memcpy(keys, d->keys, d->n * sizeof(vd_jv));
			memcpy(vals, d->vals, d->n * sizeof(vd_jv));
		}
		d->keys = keys;
		d->vals = vals;
		d->cap = cap;
	}
	d->keys[d->n] = key;
	d->vals[d->n] = val;
	d->n++;
	return 0;
}

/* ---- buffers ---- */

static int buf_reserve(vd_jarena *a, vd_jbuf *b, size_t extra)
{
	size_t cap;
	char *p;

	if (b->cap - b->n > extra)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap - b->n <= extra)
		cap *= 2;
	p = vd_jarena_alloc_raw(a, cap);
	if (!p)
		return -1;
	if (b->n)
		memcpy(p, b->p, b->n);
	b->p = p;
	b->cap = cap;
	return 0;
}

int vd_jbuf_put(vd_jarena *a, vd_jbuf *b, const char *s, size_t n)
{
	if (buf_reserve(a, b, n))
		return -1;
	if (n)
		memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
	return 0;
}

int vd_jbuf_puts(vd_jarena *a, vd_jbuf *b, const char *s)
{
	return vd_jbuf_put(a, b, s, strlen(s));
}

int vd_jbuf_putc(vd_jarena *a, vd_jbuf *b, char c)
{
	return vd_jbuf_put(a, b, &c, 1);
}

static int buf_printf(vd_jarena *a, vd_jbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int buf_printf(vd_jarena *a, vd_jbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || buf_reserve(a, b, (size_t)n))
		return -1;
	va_start(ap, fmt);
	vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->n += (size_t)n;
	return 0;
}

/* ---- UTF-8 ---- */

int32_t vd_utf8_decode(const char *p, size_t n, size_t *len)
{
	const unsigned char *s = (const unsigned char *)p;
	int32_t cp;
	size_t need, i;

	if (s[0] < 0x80) {
		*len = 1;
		return s[0];
	}
	if ((s[0] & 0xe0) == 0xc0) {
		need = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		need = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		need = 4;
		cp = s[0] & 0x07;
	} else {
		*len = 1;
		return s[0];
	}
	if (need > n) {
		*len = 1;
		return s[0];
	}
	for (i = 1; i < need; i++) {
		if ((s[i] & 0xc0) != 0x80) {
			*len = 1;
			return s[0];
		}
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	*len = need;
	return cp;
}

int vd_utf8_encode(int32_t cp, char *out)
{
	unsigned char *o = (unsigned char *)out;

	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (unsigned char)(0xc0 | (cp >> 6));
		o[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xe0 | (cp >> 12));
		o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (unsigned char)(0xf0 | (cp >> 18));
	o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

size_t vd_utf8_len(const char *p, size_t n)
{
	size_t count = 0, i = 0, len;

	while (i < n) {
		vd_utf8_decode(p + i, n - i, &len);
		i += len;
		count++;
	}
	return count;
}

bool vd_py_isspace(int32_t cp)
{
	return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) ||
	       cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
	       (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
	       cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* ---- truthiness, equality, ordering ---- */

bool vd_jv_truthy(vd_jv v)
{
	switch (v.kind) {
	case VD_JV_MISSING:
	case VD_JV_UNDEF:
	case VD_JV_NONE: return false;
	case VD_JV_BOOL: return v.u.b;
	case VD_JV_INT: return v.u.i != 0;
	case VD_JV_FLOAT: return v.u.f != 0.0;
	case VD_JV_STR: return v.u.s.n != 0;
	case VD_JV_LIST: return v.u.list->n != 0;
	case VD_JV_DICT: return v.u.dict->n != 0;
	default: return true;
	}
}

bool vd_jv_is_number(vd_jv v)
{
	return v.kind == VD_JV_BOOL || v.kind == VD_JV_INT || v.kind == VD_JV_FLOAT;
}

static int64_t as_int(vd_jv v)
{
	return v.kind == VD_JV_BOOL ? (int64_t)v.u.b : v.u.i;
}

double vd_jv_as_double(vd_jv v)
{
	return v.kind == VD_JV_FLOAT ? v.u.f : (double)as_int(v);
}

/* Exact comparison of an int with a float, as Python does it: -1, 0, 1,
 * or 2 when f is NaN (unordered). */
static int cmp_int_float(int64_t i, double f)
{
	if (isnan(f))
		return 2;
	if (f >= 9223372036854775808.0)
		return -1;
	if (f < -9223372036854775808.0)
		return 1;
	{
		double fl = floor(f);
		int64_t fi = (int64_t)fl;

		if (i < fi)
			return -1;
		if (i > fi)
			return 1;
		return fl < f ? -1 : 0;
	}
}

/* Numbers: -1/0/1, or 2 when unordered (NaN). */
static int num_cmp(vd_jv a, vd_jv b)
{
	if (a.kind != VD_JV_FLOAT && b.kind != VD_JV_FLOAT) {
		int64_t x = as_int(a), y = as_int(b);
		return x < y ? -1 : x > y;
	}
	if (a.kind == VD_JV_FLOAT && b.kind == VD_JV_FLOAT) {
		if (isnan(a.u.f) || isnan(b.u.f))
			return 2;
		return a.u.f < b.u.f ? -1 : a.u.f > b.u.f;
	}
	if (a.kind == VD_JV_FLOAT) {
		int c = cmp_int_float(as_int(b), a.u.f);
		return c == 2 ? 2 : -c;
	}
	return cmp_int_float(as_int(a), b.u.f);
}

bool vd_jv_eq(vd_jv a, vd_jv b)
{
	if (vd_jv_is_number(a) && vd_jv_is_number(b))
		return num_cmp(a, b) == 0;
	if (a.kind != b.kind)
		return false;
	switch (a.kind) {
	case VD_JV_MISSING:
	case VD_JV_UNDEF:
	case VD_JV_NONE:
		return true;
	case VD_JV_STR:
		return a.u.s.n == b.u.s.n && memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0;
	case VD_JV_LIST:
		if (a.u.list->tuple != b.u.list->tuple || a.u.list->n != b.u.list->n)
			return false;
		for (size_t i = 0; i < a.u.list->n; i++)
			if (!vd_jv_eq(a.u.list->items[i], b.u.list->items[i]))
				return false;
		return true;
	case VD_JV_DICT:
		if (a.u.dict->n != b.u.dict->n)
			return false;
		for (size_t i = 0; i < a.u.dict->n; i++) {
			long j = vd_jdict_find(b.u.dict, a.u.dict->keys[i]);

			if (j < 0 || !vd_jv_eq(a.u.dict->vals[i], b.u.dict->vals[j]))
				return false;
		}
		return true;
	case VD_JV_NS: return a.u.dict == b.u.dict;
	case VD_JV_MACRO: return a.u.macro == b.u.macro;
	case VD_JV_LOOP: return a.u.loop == b.u.loop;
	case VD_JV_METHOD: return a.u.method == b.u.method;
	case VD_JV_FUNC: return a.u.func == b.u.func;
	default: return false;
	}
}

const char *vd_jv_type_name(vd_jv v)
{
	switch (v.kind) {
	case VD_JV_MISSING:
	case VD_JV_UNDEF: return "Undefined";
	case VD_JV_NONE: return "NoneType";
	case VD_JV_BOOL: return "bool";
	case VD_JV_INT: return "int";
	case VD_JV_FLOAT: return "float";
	case VD_JV_STR: return "str";
	case VD_JV_LIST: return v.u.list->tuple ? "tuple" : "list";
	case VD_JV_DICT: return "dict";
	case VD_JV_NS: return "Namespace";
	case VD_JV_MACRO: return "Macro";
	case VD_JV_LOOP: return "LoopContext";
	case VD_JV_METHOD: return "builtin_function_or_method";
	case VD_JV_FUNC: return "function";
	}
	return "object";
}

int vd_jv_cmp(vd_jv a, vd_jv b, int *out, const char **err)
{
	static _Thread_local char msg[128];

	if (vd_jv_is_number(a) && vd_jv_is_number(b)) {
		int c = num_cmp(a, b);

		/* NaN: every ordering test is false; report "not less" */
		*out = c == 2 ? 1 : c;
		return 0;
	}
	if (a.kind == VD_JV_STR && b.kind == VD_JV_STR) {
		size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
		int c = n ? memcmp(a.u.s.p, b.u.s.p, n) : 0;

		if (c == 0)
			c = a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n;
		*out = c < 0 ? -1 : c > 0;
		return 0;
	}
	if (a.kind == VD_JV_LIST && b.kind == VD_JV_LIST &&
	    a.u.list->tuple == b.u.list->tuple) {
		size_t i;

		for (i = 0; i < a.u.list->n && i < b.u.list->n; i++)
			if (!vd_jv_eq(a.u.list->items[i], b.u.list->items[i]))
				return vd_jv_cmp(a.u.list->items[i], b.u.list->items[i], out, err);
		*out = a.u.list->n < b.u.list->n ? -1 : a.u.list->n > b.u.list->n;
		return 0;
	}
	snprintf(msg, sizeof(msg), "'<' not supported between instances of '%s' and '%s'",
		 vd_jv_type_name(a), vd_jv_type_name(b));
	*err = msg;
	return 1;
}

/* ---- str / repr ---- */

/* repr(float) as Python prints it ("1.0", "1e+16", "0.1"); buf >= 32 bytes. */
static void float_repr(double f, char *buf)
{
	char tmp[40], digits[24];
	int p, exp, decpt, nd = 0;
	const char *s;
	char *o = buf;

	if (isnan(f)) {
		strcpy(buf, "nan");
		return;
	}
	if (isinf(f)) {
		strcpy(buf, f < 0 ? "-inf" : "inf");
		return;
	}
	/* The shortest precision that reads back exactly gives Python's digits
	 * (correctly rounded, as dtoa mode 0 picks them). */
	for (p = 1; p < 17; p++) {
		snprintf(tmp, sizeof(tmp), "%.*e", p - 1, f);
		if (strtod(tmp, NULL) == f)
			break;
	}
	if (p == 17)
		snprintf(tmp, sizeof(tmp), "%.16e", f);
	s = tmp;
	if (*s == '-') {
		*o++ = '-';
		s++;
	}
	for (; *s && *s != 'e'; s++)
		if (*s != '.')
			digits[nd++] = *s;
	exp = atoi(s + 1);
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = 0;
	decpt = exp + 1;
	if (decpt > -4 && decpt <= 16) {
		if (decpt <= 0) {
			o += sprintf(o, "0.");
			for (int i = 0; i < -decpt; i++)
				*o++ = '0';
			o += sprintf(o, "%s", digits);
		} else if (decpt >= nd) {
			o += sprintf(o, "%s", digits);
			for (int i = nd; i < decpt; i++)
				*o++ = '0';
			o += sprintf(o, ".0");
		} else {
			memcpy(o, digits, (size_t)decpt);
			o += decpt;
			*o++ = '.';
			o += sprintf(o, "%s", digits + decpt);
		}
	} else {
		*o++ = digits[0];
		if (nd > 1) {
			*o++ = '.';
			o += sprintf(o, "%s", digits + 1);
		}
		o += sprintf(o, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
	}
	*o = 0;
}

/* str.isprintable() for one code point. */
static bool py_isprintable(int32_t cp)
{
	if (cp < 0x80)
		return cp >= 0x20 && cp < 0x7f;
	switch (utf8proc_category(cp)) {
	case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF:
	case UTF8PROC_CATEGORY_CS: case UTF8PROC_CATEGORY_CO:
	case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL:
	case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
		return false;
	default:
		return true;
	}
}

static int repr_str(vd_jarena *a, vd_jbuf *b, const char *p, size_t n)
{
	char quote = '\'';
	size_t i, len;

	if (memchr(p, '\'', n) && !memchr(p, '"', n))
		quote = '"';
	if (vd_jbuf_putc(a, b, quote))
		return -1;
	for (i = 0; i < n; i += len) {
		int32_t cp = vd_utf8_decode(p + i, n - i, &len);
		int rc;

		if (cp == quote || cp == '\\')
			rc = buf_printf(a, b, "\\%c", (char)cp);
		else if (cp == '\t')
			rc = vd_jbuf_puts(a, b, "\\t");
		else if (cp == '\n')
			rc = vd_jbuf_puts(a, b, "\\n");
		else if (cp == '\r')
			rc = vd_jbuf_puts(a, b, "\\r");
		else if (py_isprintable(cp))
			rc = vd_jbuf_put(a, b, p + i, len);
		else if (cp < 0x100)
			rc = buf_printf(a, b, "\\x%02x", (unsigned)cp);
		else if (cp < 0x10000)
			rc = buf_printf(a, b, "\\u%04x", (unsigned)cp);
		else
			rc = buf_printf(a, b, "\\U%08x", (unsigned)cp);
		if (rc)
			return -1;
	}
	return vd_jbuf_putc(a, b, quote);
}

static int put_dict_items(vd_jarena *a, vd_jbuf *b, const vd_jdict *d)
{
	for (size_t i = 0; i < d->n; i++) {
		if ((i && vd_jbuf_puts(a, b, ", ")) || vd_jv_repr_to(a, b, d->keys[i]) ||
		    vd_jbuf_puts(a, b, ": ") || vd_jv_repr_to(a, b, d->vals[i]))
			return -1;
	}
	return 0;
}

static int str_or_repr(vd_jarena *a, vd_jbuf *b, vd_jv v, bool repr)
{
	char num[40];

	switch (v.kind) {
	case VD_JV_MISSING:
	case VD_JV_UNDEF:
		return repr ? vd_jbuf_puts(a, b, "Undefined") : 0;
	case VD_JV_NONE: return vd_jbuf_puts(a, b, "None");
	case VD_JV_BOOL: return vd_jbuf_puts(a, b, v.u.b ? "True" : "False");
	case VD_JV_INT: return buf_printf(a, b, "%lld", (long long)v.u.i);
	case VD_JV_FLOAT:
		float_repr(v.u.f, num);
		return vd_jbuf_puts(a, b, num);
	case VD_JV_STR:
		if (repr)
			return repr_str(a, b, v.u.s.p, v.u.s.n);
		return vd_jbuf_put(a, b, v.u.s.p, v.u.s.n);
	case VD_JV_LIST: {
		const vd_jlist *l = v.u.list;

		if (vd_jbuf_putc(a, b, l->tuple ? '(' : '['))
			return -1;
		for (size_t i = 0; i < l->n; i++)
			if ((i && vd_jbuf_puts(a, b, ", ")) || vd_jv_repr_to(a, b, l->items[i]))
				return -1;
		if (l->tuple && l->n == 1 && vd_jbuf_putc(a, b, ','))
			return -1;
		return vd_jbuf_putc(a, b, l->tuple ? ')' : ']');
	}
	case VD_JV_DICT:
		if (vd_jbuf_putc(a, b, '{') || put_dict_items(a, b, v.u.dict))
			return -1;
		return vd_jbuf_putc(a, b, '}');
	case VD_JV_NS:
		if (vd_jbuf_puts(a, b, "<Namespace {") || put_dict_items(a, b, v.u.dict))
			return -1;
		return vd_jbuf_puts(a, b, "}>");
	case VD_JV_MACRO: return vd_jbuf_puts(a, b, "<Macro>");
	case VD_JV_LOOP:
		return buf_printf(a, b, "<LoopContext %zu/%zu>", v.u.loop->index0 + 1,
				      v.u.loop->items->n);
	case VD_JV_METHOD: return vd_jbuf_puts(a, b, "<built-in method>");
	case VD_JV_FUNC: return vd_jbuf_puts(a, b, "<function>");
	}
	return 0;
}

int vd_jv_str_to(vd_jarena *a, vd_jbuf *b, vd_jv v)
{
	return str_or_repr(a, b, v, false);
}

int vd_jv_repr_to(vd_jarena *a, vd_jbuf *b, vd_jv v)
{
	return str_or_repr(a, b, v, true);
}

int vd_jv_to_str(vd_jarena *a, vd_jv v, vd_jv *out)
{
	vd_jbuf b = { 0 };

	if (v.kind == VD_JV_STR) {
		*out = v;
		return 0;
	}
	if (vd_jv_str_to(a, &b, v))
		return -1;
	*out = vd_jv_str(b.p, b.n);
	return 0;
}

/* ---- json.dumps ---- */

typedef struct json_opts {
	bool ensure_ascii, sort_keys;
	const char *indent, *item_sep, *key_sep;
	const char **err;
} json_opts;

static int json_str(vd_jarena *a, vd_jbuf *b, const char *p, size_t n, bool ascii)
{
	size_t i, len;

	if (vd_jbuf_putc(a, b, '"'))
		return -1;
	for (i = 0; i < n; i += len) {
		int32_t cp = vd_utf8_decode(p + i, n - i, &len);
		int rc;

		switch (cp) {
		case '"': rc = vd_jbuf_puts(a, b, "\\\""); break;
		case '\\': rc = vd_jbuf_puts(a, b, "\\\\"); break;
		case '\n': rc = vd_jbuf_puts(a, b, "\\n"); break;
		case '\r': rc = vd_jbuf_puts(a, b, "\\r"); break;
		case '\t': rc = vd_jbuf_puts(a, b, "\\t"); break;
		case '\b': rc = vd_jbuf_puts(a, b, "\\b"); break;
		case '\f': rc = vd_jbuf_puts(a, b, "\\f"); break;
		default:
			if (cp < 0x20)
				rc = buf_printf(a, b, "\\u%04x", (unsigned)cp);
			else if (!ascii || cp < 0x80)
				rc = vd_jbuf_put(a, b, p + i, len);
			else if (cp < 0x10000)
				rc = buf_printf(a, b, "\\u%04x", (unsigned)cp);
			else
				rc = buf_printf(a, b, "\\u%04x\\u%04x",
						    (unsigned)(0xd800 + ((cp - 0x10000) >> 10)),
						    (unsigned)(0xdc00 + ((cp - 0x10000) & 0x3ff)));
		}
		if (rc)
			return -1;
	}
	return vd_jbuf_putc(a, b, '"');
}

static int json_float(vd_jarena *a, vd_jbuf *b, double f)
{
	char num[40];

	if (isnan(f))
		return vd_jbuf_puts(a, b, "NaN");
	if (isinf(f))
		return vd_jbuf_puts(a, b, f < 0 ? "-Infinity" : "Infinity");
	float_repr(f, num);
	return vd_jbuf_puts(a, b, num);
}

static int json_newline(vd_jarena *a, vd_jbuf *b, const json_opts *o, int level)
{
	if (vd_jbuf_putc(a, b, '\n'))
		return -1;
	for (int i = 0; i < level; i++)
		if (vd_jbuf_puts(a, b, o->indent))
			return -1;
	return 0;
}

static int json_value(vd_jarena *a, vd_jbuf *b, vd_jv v, const json_opts *o, int level);

/* A dict key as json.dumps writes it; 1 when its type has no JSON form. */
static int json_key(vd_jarena *a, vd_jbuf *b, vd_jv k, const json_opts *o)
{
	static _Thread_local char msg[96];
	vd_jbuf tmp = { 0 };

	switch (k.kind) {
	case VD_JV_STR: return json_str(a, b, k.u.s.p, k.u.s.n, o->ensure_ascii);
	case VD_JV_BOOL: return vd_jbuf_puts(a, b, k.u.b ? "\"true\"" : "\"false\"");
	case VD_JV_NONE: return vd_jbuf_puts(a, b, "\"null\"");
	case VD_JV_INT: return buf_printf(a, b, "\"%lld\"", (long long)k.u.i);
	case VD_JV_FLOAT:
		if (json_float(a, &tmp, k.u.f))
			return -1;
		return buf_printf(a, b, "\"%s\"", tmp.p);
	default:
		snprintf(msg, sizeof(msg), "keys must be str, int, float, bool or None, not %s",
			 vd_jv_type_name(k));
		*o->err = msg;
		return 1;
	}
}

/* Stable insertion sort of key indexes (dicts in templates are small). */
static int sorted_keys(vd_jarena *a, const vd_jdict *d, size_t **out, const char **err)
{
	size_t *idx = vd_jarena_alloc(a, (d->n + 1) * sizeof(size_t));

	if (!idx)
		return -1;
	for (size_t i = 0; i < d->n; i++) {
		size_t j = i;

		idx[i] = i;
		while (j > 0) {
			int c;

			if (vd_jv_cmp(d->keys[i], d->keys[idx[j - 1]], &c, err))
				return 1;
			if (c >= 0)
				break;
			idx[j] = idx[j - 1];
			j--;
		}
		idx[j] = i;
	}
	*out = idx;
	return 0;
}

static int json_value(vd_jarena *a, vd_jbuf *b, vd_jv v, const json_opts *o, int level)
{
	static _Thread_local char msg[96];
	int rc;

	switch (v.kind) {
	case VD_JV_NONE: return vd_jbuf_puts(a, b, "null");
	case VD_JV_BOOL: return vd_jbuf_puts(a, b, v.u.b ? "true" : "false");
	case VD_JV_INT: return buf_printf(a, b, "%lld", (long long)v.u.i);
	case VD_JV_FLOAT: return json_float(a, b, v.u.f);
	case VD_JV_STR: return json_str(a, b, v.u.s.p, v.u.s.n, o->ensure_ascii);
	case VD_JV_LIST: {
		const vd_jlist *l = v.u.list;

		if (l->n == 0)
			return vd_jbuf_puts(a, b, "[]");
		if (vd_jbuf_putc(a, b, '['))
			return -1;
		for (size_t i = 0; i < l->n; i++) {
			if (i && vd_jbuf_puts(a, b, o->item_sep))
				return -1;
			if (o->indent && json_newline(a, b, o, level + 1))
				return -1;
			if ((rc = json_value(a, b, l->items[i], o, level + 1)))
				return rc;
		}
		if (o->indent && json_newline(a, b, o, level))
			return -1;
		return vd_jbuf_putc(a, b, ']');
	}
	case VD_JV_DICT: {
		const vd_jdict *d = v.u.dict;
		size_t *order = NULL;

		if (d->n == 0)
			return vd_jbuf_puts(a, b, "{}");
		if (o->sort_keys && (rc = sorted_keys(a, d, &order, o->err)))
			return rc;
		if (vd_jbuf_putc(a, b, '{'))
			return -1;
		for (size_t i = 0; i < d->n; i++) {
			size_t k = order ? order[i] : i;

			if (i && vd_jbuf_puts(a, b, o->item_sep))
				return -1;
			if (o->indent && json_newline(a, b, o, level + 1))
				return -1;
			if ((rc = json_key(a, b, d->keys[k], o)))
				return rc;
			if (vd_jbuf_puts(a, b, o->key_sep))
				return -1;
			if ((rc = json_value(a, b, d->vals[k], o, level + 1)))
				return rc;
		}
		if (o->indent && json_newline(a, b, o, level))
			return -1;
		return vd_jbuf_putc(a, b, '}');
	}
	default:
		snprintf(msg, sizeof(msg), "Object of type %s is not JSON serializable",
			 vd_jv_type_name(v));
		*o->err = msg;
		return 1;
	}
}

int vd_jv_json_to(vd_jarena *a, vd_jbuf *b, vd_jv v, bool ensure_ascii,
		  const char *indent, const char *item_sep, const char *key_sep,
		  bool sort_keys, const char **err)
{
	json_opts o = {
		.ensure_ascii = ensure_ascii, .sort_keys = sort_keys, .indent = indent,
		.item_sep = item_sep ? item_sep : (indent ? "," : ", "),
		.key_sep = key_sep ? key_sep : ": ", .err = err,
	};

	/* an empty buffer still has to hold a string */
	if (vd_jbuf_put(a, b, "", 0))
		return -1;
	return json_value(a, b, v, &o, 0);
}
