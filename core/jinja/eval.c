/* Jinja2 evaluator: walks the tree with Python's semantics for operators,
 * lookups (jinja2.sandbox: list/dict mutators are unsafe) and Undefined
 * (printing or iterating it is fine, using it raises); a fresh frame per loop
 * iteration, macros close over their defining frame, if-blocks share theirs,
 * names from scope.c start Undefined. Every value lives in the
 * render's arena until the render ends. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/jinja/internal.h"

struct vd_jscope {
	vd_jscope *parent;
	const vd_jdict *dict; /* the context frame reads a dict */
	const char **names;
	vd_jv *vals;
	size_t n, cap;
};

struct vd_jmacro {
	const vd_jnode *def; /* MACRO or CALLBLOCK node */
	vd_jscope *closure;
};

enum { LOOP_BREAK = 1, LOOP_CONTINUE = 2 };
/* Macro recursion bound: deep enough for recursive schema printers, shallow
 * enough for a small thread stack. */
#define MAX_DEPTH 100

static int eval(vd_jrender *r, vd_jscope *s, const vd_jnode *n, vd_jv *out);
static int exec_body(vd_jrender *r, vd_jscope *s, vd_jnode *const *body, size_t n);

int vd_jinja_fail(vd_jrender *r, const vd_jnode *at, const char *fmt, ...)
{
	char msg[900];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (at)
		r->err = vd_errorf(VD_ERR_INVALID_ARG, "chat template line %d: %s", at->line, msg);
	else
		r->err = vd_errorf(VD_ERR_INVALID_ARG, "chat template: %s", msg);
	return -1;
}

int vd_jinja_oom(vd_jrender *r)
{
	if (r->arena.hit_limit)
		r->err = vd_errorf(VD_ERR_LIMIT, "chat template: rendering needed more than %zu MiB",
				   r->arena.limit >> 20);
	else
		r->err = vd_errorf(VD_ERR_NOMEM, "chat template: out of memory while rendering");
	return -1;
}

int vd_jinja_undef_fail(vd_jrender *r, const vd_jnode *at, vd_jv u)
{
	return vd_jinja_fail(r, at, "%s", u.kind == VD_JV_UNDEF && u.u.undef ? u.u.undef :
			     "value is undefined");
}

/* An Undefined carrying a formatted message. */
static int make_undef(vd_jrender *r, vd_jv *out, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int make_undef(vd_jrender *r, vd_jv *out, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	out->kind = VD_JV_UNDEF;
	out->u.undef = vd_jarena_strndup(&r->arena, msg, strlen(msg));
	return out->u.undef ? 0 : vd_jinja_oom(r);
}

/* jinja2.utils.object_type_repr, as Undefined messages use it. */
static const char *obj_repr(vd_jv v, char *buf, size_t n)
{
	if (v.kind == VD_JV_NONE)
		return "None";
	snprintf(buf, n, "%s object", vd_jv_type_name(v));
	return buf;
}

/* Python's "'x'" spelling of a name inside messages (no escapes needed for
 * the identifiers and keys that reach here). */
static int undef_attr(vd_jrender *r, vd_jv obj, const char *name, size_t n, vd_jv *out)
{
	char tb[64];

	return make_undef(r, out, "'%s' has no attribute '%.*s'", obj_repr(obj, tb, sizeof(tb)),
			  (int)(n > 200 ? 200 : n), name);
}

static int undef_elem(vd_jrender *r, vd_jv obj, vd_jv key, vd_jv *out)
{
	char tb[64];
	vd_jbuf b = { 0 };

	if (vd_jv_repr_to(&r->arena, &b, key))
		return vd_jinja_oom(r);
	return make_undef(r, out, "%s has no element %.200s", obj_repr(obj, tb, sizeof(tb)), b.p);
}

/* ---- scopes ---- */

static vd_jscope *scope_new(vd_jrender *r, vd_jscope *parent)
{
	vd_jscope *s = vd_jarena_alloc(&r->arena, sizeof(*s));

	if (s)
		s->parent = parent;
	return s;
}

static int scope_set(vd_jrender *r, vd_jscope *s, const char *name, vd_jv v);

/* A new frame under parent with the names of f bound to Undefined. */
static vd_jscope *frame_new(vd_jrender *r, vd_jscope *parent, const vd_jframe *f)
{
	vd_jscope *s = scope_new(r, parent);

	if (!s) {
		vd_jinja_oom(r);
		return NULL;
	}
	for (size_t i = 0; i < f->n; i++) {
		vd_jv u;

		if (make_undef(r, &u, "'%s' is undefined", f->names[i]) ||
		    scope_set(r, s, f->names[i], u))
			return NULL;
	}
	return s;
}

static int scope_set(vd_jrender *r, vd_jscope *s, const char *name, vd_jv v)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->names[i], name)) {
			s->vals[i] = v;
			return 0;
		}
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 4;
		const char **names = vd_jarena_alloc(&r->arena, cap * sizeof(*names));
		vd_jv *vals = vd_jarena_alloc(&r->arena, cap * sizeof(*vals));

		if (!names || !vals)
			return vd_jinja_oom(r);
		if (s->n) {
			memcpy(names, s->names, s->n * sizeof(*names));
			memcpy(vals, s->vals, s->n * sizeof(*vals));
		}
		s->names = names;
		s->vals = vals;
		s->cap = cap;
	}
	s->names[s->n] = name;
	s->vals[s->n] = v;
	s->n++;
	return 0;
}

static bool scope_get(const vd_jscope *s, const char *name, size_t len, vd_jv *out)
{
	for (; s; s = s->parent) {
		if (s->dict) {
			long i = vd_jdict_find_str(s->dict, name, len);

			if (i >= 0) {
				*out = s->dict->vals[i];
				return true;
			}
			continue;
		}
		for (size_t i = s->n; i-- > 0;)
			if (!strcmp(s->names[i], name)) {
				*out = s->vals[i];
				return true;
			}
	}
	return false;
}

static int lookup(vd_jrender *r, vd_jscope *s, const vd_jnode *n, vd_jv *out)
{
	int g;

	if (scope_get(s, n->str, n->slen, out))
		return 0;
	if ((g = vd_jinja_global_find(n->str)) >= 0) {
		out->kind = VD_JV_FUNC;
		out->u.func = g;
		return 0;
	}
	return make_undef(r, out, "'%s' is undefined", n->str);
}

/* ---- lookups ---- */

static int loop_attr(vd_jrender *r, const vd_jloop *lp, const char *name, vd_jv *out)
{
	size_t len = lp->items->n, i = lp->index0;

	if (!strcmp(name, "index"))
		*out = vd_jv_int((int64_t)i + 1);
	else if (!strcmp(name, "index0"))
		*out = vd_jv_int((int64_t)i);
	else if (!strcmp(name, "revindex"))
		*out = vd_jv_int((int64_t)(len - i));
	else if (!strcmp(name, "revindex0"))
		*out = vd_jv_int((int64_t)(len - i - 1));
	else if (!strcmp(name, "first"))
		*out = vd_jv_bool(i == 0);
	else if (!strcmp(name, "last"))
		*out = vd_jv_bool(i + 1 == len);
	else if (!strcmp(name, "length"))
		*out = vd_jv_int((int64_t)len);
	else if (!strcmp(name, "depth"))
		*out = vd_jv_int(1); /* recursive loops are not supported */
	else if (!strcmp(name, "depth0"))
		*out = vd_jv_int(0);
	else if (!strcmp(name, "previtem")) {
		if (i == 0)
			return make_undef(r, out, "there is no previous item");
		*out = lp->items->items[i - 1];
	} else if (!strcmp(name, "nextitem")) {
		if (i + 1 >= len)
			return make_undef(r, out, "there is no next item");
		*out = lp->items->items[i + 1];
	} else {
		return 1;
	}
	return 0;
}

int vd_jinja_getattr(vd_jrender *r, const vd_jnode *at, vd_jv obj, const char *name,
		     size_t n, vd_jv *out)
{
	const vd_jbuiltin *m;
	int id;

	if (obj.kind == VD_JV_UNDEF)
		return vd_jinja_undef_fail(r, at, obj);
	m = vd_jinja_method(obj, name, &id);
	if (m) {
		vd_jmethod *bm;

		if (!m->fn)
			return make_undef(r, out, "access to attribute '%s' of '%s' object is unsafe.",
					  name, vd_jv_type_name(obj));
		bm = vd_jarena_alloc(&r->arena, sizeof(*bm));
		if (!bm)
			return vd_jinja_oom(r);
		bm->self = obj;
		bm->id = id;
		out->kind = VD_JV_METHOD;
		out->u.method = bm;
		return 0;
	}
	if (obj.kind == VD_JV_DICT || obj.kind == VD_JV_NS) {
		long i = vd_jdict_find_str(obj.u.dict, name, n);

		if (i >= 0) {
			*out = obj.u.dict->vals[i];
			return 0;
		}
	} else if (obj.kind == VD_JV_LOOP) {
		int rc = loop_attr(r, obj.u.loop, name, out);

		if (rc <= 0)
			return rc;
	}
	return undef_attr(r, obj, name, n, out);
}

/* Python's slice.indices(): start, step and item count of s[a:b:c]. */
static int slice_indices(vd_jrender *r, const vd_jnode *at, vd_jv va, vd_jv vb, vd_jv vc,
			 int64_t len, int64_t *start, int64_t *step, int64_t *count)
{
	int64_t a, b, c = 1;
	const vd_jv *parts[3] = { &va, &vb, &vc };

	for (int k = 0; k < 3; k++) {
		vd_jv p = *parts[k];

		if (p.kind != VD_JV_MISSING && p.kind != VD_JV_NONE &&
		    p.kind != VD_JV_INT && p.kind != VD_JV_BOOL)
			return vd_jinja_fail(r, at, "slice indices must be integers or None, not %s",
					     vd_jv_type_name(p));
	}
	if (vc.kind == VD_JV_INT || vc.kind == VD_JV_BOOL)
		c = vc.kind == VD_JV_BOOL ? vc.u.b : vc.u.i;
	if (c < -INT64_MAX)
		c = -INT64_MAX; /* same items; keeps -c defined */
	if (c == 0)
		return vd_jinja_fail(r, at, "slice step cannot be zero");
	if (va.kind == VD_JV_INT || va.kind == VD_JV_BOOL) {
		a = va.kind == VD_JV_BOOL ? va.u.b : va.u.i;
		if (a < 0) {
			a += len;
			if (a < 0)
				a = c < 0 ? -1 : 0;
		} else if (a >= len) {
			a = c < 0 ? len - 1 : len;
		}
	} else {
		a = c < 0 ? len - 1 : 0;
	}
	if (vb.kind == VD_JV_INT || vb.kind == VD_JV_BOOL) {
		b = vb.kind == VD_JV_BOOL ? vb.u.b : vb.u.i;
		if (b < 0) {
			b += len;
			if (b < 0)
				b = c < 0 ? -1 : 0;
		} else if (b >= len) {
			b = c < 0 ? len - 1 : len;
		}
	} else {
		b = c < 0 ? -1 : len;
	}
	if (c > 0)
		*count = b > a ? (b - a - 1) / c + 1 : 0;
	else
		*count = b < a ? (a - b - 1) / (-c) + 1 : 0;
	*start = a;
	*step = c;
	return 0;
}

/* Byte offsets of every code point of s, plus the end (n + 1 entries). */
static size_t *cp_offsets(vd_jrender *r, const char *p, size_t n, size_t *ncp)
{
	size_t count = vd_utf8_len(p, n), i = 0, k = 0, len;
	size_t *off = vd_jarena_alloc(&r->arena, (count + 1) * sizeof(size_t));

	if (!off)
		return NULL;
	while (i < n) {
		off[k++] = i;
		vd_utf8_decode(p + i, n - i, &len);
		i += len;
	}
	off[k] = n;
	*ncp = count;
	return off;
}

static int do_slice(vd_jrender *r, const vd_jnode *at, vd_jv obj, vd_jv a, vd_jv b, vd_jv c,
		    vd_jv *out)
{
	int64_t start, step, count;

	if (obj.kind == VD_JV_LIST) {
		const vd_jlist *l = obj.u.list;
		vd_jlist *res;

		if (slice_indices(r, at, a, b, c, (int64_t)l->n, &start, &step, &count))
			return -1;
		if (!(res = vd_jlist_new(&r->arena, (size_t)count)))
			return vd_jinja_oom(r);
		for (int64_t k = 0; k < count; k++)
			res->items[k] = l->items[start + k * step];
		res->n = (size_t)count;
		res->tuple = l->tuple;
		out->kind = VD_JV_LIST;
		out->u.list = res;
		return 0;
	}
	if (obj.kind == VD_JV_STR) {
		size_t ncp, *off = cp_offsets(r, obj.u.s.p, obj.u.s.n, &ncp);
		vd_jbuf buf = { 0 };

		if (!off)
			return vd_jinja_oom(r);
		if (slice_indices(r, at, a, b, c, (int64_t)ncp, &start, &step, &count))
			return -1;
		if (vd_jbuf_put(&r->arena, &buf, "", 0))
			return vd_jinja_oom(r);
		for (int64_t k = 0; k < count; k++) {
			size_t i = (size_t)(start + k * step);

			if (vd_jbuf_put(&r->arena, &buf, obj.u.s.p + off[i], off[i + 1] - off[i]))
				return vd_jinja_oom(r);
		}
		*out = vd_jv_str(buf.p, buf.n);
		return 0;
	}
	if (obj.kind == VD_JV_UNDEF)
		return vd_jinja_undef_fail(r, at, obj);
	/* slices compile to a plain Python subscript: no Undefined fallback */
	if (obj.kind == VD_JV_DICT)
		return vd_jinja_fail(r, at, "unhashable type: 'slice'");
	return vd_jinja_fail(r, at, "'%s' object is not subscriptable", vd_jv_type_name(obj));
}

int vd_jinja_getitem(vd_jrender *r, const vd_jnode *at, vd_jv obj, vd_jv key, vd_jv *out)
{
	if (obj.kind == VD_JV_UNDEF)
		return vd_jinja_undef_fail(r, at, obj);
	if (obj.kind == VD_JV_DICT) {
		long i = vd_jdict_find(obj.u.dict, key);

		if (i >= 0) {
			*out = obj.u.dict->vals[i];
			return 0;
		}
	} else if ((obj.kind == VD_JV_LIST || obj.kind == VD_JV_STR) &&
		   (key.kind == VD_JV_INT || key.kind == VD_JV_BOOL)) {
		int64_t i = key.kind == VD_JV_BOOL ? key.u.b : key.u.i;

		if (obj.kind == VD_JV_LIST) {
			int64_t len = (int64_t)obj.u.list->n;

			if (i < 0)
				i += len;
			if (i >= 0 && i < len) {
				*out = obj.u.list->items[i];
				return 0;
			}
		} else {
			size_t ncp, *off = cp_offsets(r, obj.u.s.p, obj.u.s.n, &ncp);

			if (!off)
				return vd_jinja_oom(r);
			if (i < 0)
				i += (int64_t)ncp;
			if (i >= 0 && i < (int64_t)ncp) {
				*out = vd_jv_str(obj.u.s.p + off[i], off[i + 1] - off[i]);
				return 0;
			}
		}
	}
	/* a failed item lookup with a string key falls back to the attribute */
	if (key.kind == VD_JV_STR) {
		char *name = vd_jarena_strndup(&r->arena, key.u.s.p, key.u.s.n);

		if (!name)
			return vd_jinja_oom(r);
		return vd_jinja_getattr(r, at, obj, name, key.u.s.n, out);
	}
	return undef_elem(r, obj, key, out);
}

int vd_jinja_iterate(vd_jrender *r, const vd_jnode *at, vd_jv v, const vd_jlist **out)
{
	vd_jlist *l;

	switch (v.kind) {
	case VD_JV_LIST:
		*out = v.u.list;
		return 0;
	case VD_JV_UNDEF:
		if (!(l = vd_jlist_new(&r->arena, 0)))
			return vd_jinja_oom(r);
		*out = l;
		return 0;
	case VD_JV_DICT:
		if (!(l = vd_jlist_new(&r->arena, v.u.dict->n)))
			return vd_jinja_oom(r);
		if (v.u.dict->n)
			memcpy(l->items, v.u.dict->keys, v.u.dict->n * sizeof(vd_jv));
		l->n = v.u.dict->n;
		*out = l;
		return 0;
	case VD_JV_STR: {
		size_t i = 0, len;

		if (!(l = vd_jlist_new(&r->arena, v.u.s.n)))
			return vd_jinja_oom(r);
		while (i < v.u.s.n) {
			vd_utf8_decode(v.u.s.p + i, v.u.s.n - i, &len);
			l->items[l->n++] = vd_jv_str(v.u.s.p + i, len);
			i += len;
		}
		*out = l;
		return 0;
	}
	default:
		return vd_jinja_fail(r, at, "'%s' object is not iterable", vd_jv_type_name(v));
	}
}

/* ---- operators ---- */

static int64_t ival(vd_jv v)
{
	return v.kind == VD_JV_BOOL ? (int64_t)v.u.b : v.u.i;
}

static bool is_intlike(vd_jv v)
{
	return v.kind == VD_JV_INT || v.kind == VD_JV_BOOL;
}

static const char *op_name(int op)
{
	static const char *const names[] = { "+", "-", "*", "/", "//", "%", "**" };
	return names[op];
}

static int overflow(vd_jrender *r, const vd_jnode *at)
{
	return vd_jinja_fail(r, at, "integer result does not fit in 64 bits");
}

/* Python's float divmod (Objects/floatobject.c float_divmod). */
static void float_divmod(double vx, double wx, double *floordiv, double *mod)
{
	double m = fmod(vx, wx), div = (vx - m) / wx;

	if (m != 0.0) {
		if ((wx < 0) != (m < 0)) {
			m += wx;
			div -= 1.0;
		}
	} else {
		m = copysign(0.0, wx);
	}
	if (div != 0.0) {
		double fd = floor(div);

		if (div - fd > 0.5)
			fd += 1.0;
		div = fd;
	} else {
		div = copysign(0.0, vx / wx);
	}
	*floordiv = div;
	*mod = m;
}

static int repeat(vd_jrender *r, vd_jv seq, int64_t times, vd_jv *out)
{
	if (times < 0)
		times = 0;
	if (seq.kind == VD_JV_STR) {
		vd_jbuf b = { 0 };

		if (vd_jbuf_put(&r->arena, &b, "", 0))
			return vd_jinja_oom(r);
		for (int64_t k = 0; k < times; k++)
			if (vd_jbuf_put(&r->arena, &b, seq.u.s.p, seq.u.s.n))
				return vd_jinja_oom(r);
		*out = vd_jv_str(b.p, b.n);
		return 0;
	}
	{
		vd_jlist *l = vd_jlist_new(&r->arena, 0);

		if (!l)
			return vd_jinja_oom(r);
		for (int64_t k = 0; k < times; k++)
			for (size_t i = 0; i < seq.u.list->n; i++)
				if (vd_jlist_push(&r->arena, l, seq.u.list->items[i]))
					return vd_jinja_oom(r);
		l->tuple = seq.u.list->tuple;
		out->kind = VD_JV_LIST;
		out->u.list = l;
		return 0;
	}
}

int vd_jinja_binop(vd_jrender *r, const vd_jnode *at, int op, vd_jv a, vd_jv b, vd_jv *out)
{
	/* str % Undefined is fine: Undefined passes for an (empty) mapping */
	if (op == VD_JOP_MOD && a.kind == VD_JV_STR)
		return vd_jstr_percent(r, at, a, b, out);
	if (a.kind == VD_JV_UNDEF)
		return vd_jinja_undef_fail(r, at, a);
	if (b.kind == VD_JV_UNDEF)
		return vd_jinja_undef_fail(r, at, b);
	if (vd_jv_is_number(a) && vd_jv_is_number(b)) {
		bool ints = is_intlike(a) && is_intlike(b);
		int64_t x = ints ? ival(a) : 0, y = ints ? ival(b) : 0, z;
		double fx = vd_jv_as_double(a), fy = vd_jv_as_double(b), fd, fm;

		switch (op) {
		case VD_JOP_ADD:
			if (!ints) { *out = vd_jv_float(fx + fy); return 0; }
			if (__builtin_add_overflow(x, y, &z)) return overflow(r, at);
			*out = vd_jv_int(z);
			return 0;
		case VD_JOP_SUB:
			if (!ints) { *out = vd_jv_float(fx - fy); return 0; }
			if (__builtin_sub_overflow(x, y, &z)) return overflow(r, at);
			*out = vd_jv_int(z);
			return 0;
		case VD_JOP_MUL:
			if (!ints) { *out = vd_jv_float(fx * fy); return 0; }
			if (__builtin_mul_overflow(x, y, &z)) return overflow(r, at);
			*out = vd_jv_int(z);
			return 0;
		case VD_JOP_DIV:
			if (fy == 0.0)
				return vd_jinja_fail(r, at, "division by zero");
			*out = vd_jv_float(fx / fy);
			return 0;
		case VD_JOP_FLOORDIV:
		case VD_JOP_MOD:
			if (ints) {
				int64_t q, m;

				if (y == 0)
					return vd_jinja_fail(r, at, op == VD_JOP_MOD ? "integer modulo by zero" :
							     "integer division or modulo by zero");
				if (x == INT64_MIN && y == -1) {
					if (op == VD_JOP_FLOORDIV)
						return overflow(r, at);
					*out = vd_jv_int(0);
					return 0;
				}
				q = x / y;
				m = x % y;
				if (m != 0 && ((m < 0) != (y < 0))) {
					q -= 1;
					m += y;
				}
				*out = vd_jv_int(op == VD_JOP_FLOORDIV ? q : m);
				return 0;
			}
			if (fy == 0.0)
				return vd_jinja_fail(r, at, op == VD_JOP_MOD ? "float modulo" :
						     "float floor division by zero");
			float_divmod(fx, fy, &fd, &fm);
			*out = vd_jv_float(op == VD_JOP_FLOORDIV ? fd : fm);
			return 0;
		case VD_JOP_POW:
			if (ints && y >= 0) {
				int64_t acc = 1, base = x;

				for (int64_t e = y; e > 0; e >>= 1) {
					if ((e & 1) && __builtin_mul_overflow(acc, base, &acc))
						return overflow(r, at);
					if (e > 1 && __builtin_mul_overflow(base, base, &base))
						return overflow(r, at);
				}
				*out = vd_jv_int(acc);
				return 0;
			}
			if (fx == 0.0 && fy < 0)
				return vd_jinja_fail(r, at, "0.0 cannot be raised to a negative power");
			*out = vd_jv_float(pow(fx, fy));
			return 0;
		default:
			break;
		}
	}
	if (op == VD_JOP_ADD) {
		if (a.kind == VD_JV_STR && b.kind == VD_JV_STR) {
			char *p = vd_jarena_alloc_raw(&r->arena, a.u.s.n + b.u.s.n + 1);

			if (!p)
				return vd_jinja_oom(r);
			if (a.u.s.n)
				memcpy(p, a.u.s.p, a.u.s.n);
			if (b.u.s.n)
				memcpy(p + a.u.s.n, b.u.s.p, b.u.s.n);
			p[a.u.s.n + b.u.s.n] = 0;
			*out = vd_jv_str(p, a.u.s.n + b.u.s.n);
			return 0;
		}
		if (a.kind == VD_JV_LIST && b.kind == VD_JV_LIST &&
		    a.u.list->tuple == b.u.list->tuple) {
			vd_jlist *l = vd_jlist_new(&r->arena, a.u.list->n + b.u.list->n);

			if (!l)
				return vd_jinja_oom(r);
			if (a.u.list->n)
				memcpy(l->items, a.u.list->items, a.u.list->n * sizeof(vd_jv));
			if (b.u.list->n)
				memcpy(l->items + a.u.list->n, b.u.list->items,
				       b.u.list->n * sizeof(vd_jv));
			l->n = a.u.list->n + b.u.list->n;
			l->tuple = a.u.list->tuple;
			out->kind = VD_JV_LIST;
			out->u.list = l;
			return 0;
		}
		if (a.kind == VD_JV_STR || a.kind == VD_JV_LIST)
			return vd_jinja_fail(r, at, "can only concatenate %s (not \"%s\") to %s",
					     vd_jv_type_name(a), vd_jv_type_name(b), vd_jv_type_name(a));
	}
	if (op == VD_JOP_MUL) {
		if ((a.kind == VD_JV_STR || a.kind == VD_JV_LIST) && is_intlike(b))
			return repeat(r, a, ival(b), out);
		if ((b.kind == VD_JV_STR || b.kind == VD_JV_LIST) && is_intlike(a))
			return repeat(r, b, ival(a), out);
		if (a.kind == VD_JV_STR || a.kind == VD_JV_LIST || b.kind == VD_JV_STR ||
		    b.kind == VD_JV_LIST)
			return vd_jinja_fail(r, at, "can't multiply sequence by non-int of type '%s'",
					     vd_jv_type_name(a.kind == VD_JV_STR || a.kind == VD_JV_LIST ?
							     b : a));
	}
	return vd_jinja_fail(r, at, "unsupported operand type(s) for %s: '%s' and '%s'",
			     op_name(op), vd_jv_type_name(a), vd_jv_type_name(b));
}

/* Python refuses lists, dicts and namespaces as dict keys. */
static int unhashable(vd_jrender *r, const vd_jnode *at, vd_jv key)
{
	if ((key.kind == VD_JV_LIST && !key.u.list->tuple) || key.kind == VD_JV_DICT ||
	    key.kind == VD_JV_NS)
		return vd_jinja_fail(r, at, "unhashable type: '%s'", vd_jv_type_name(key));
	return 0;
}

static int contains(vd_jrender *r, const vd_jnode *at, vd_jv item, vd_jv seq, bool *out)
{
	switch (seq.kind) {
	case VD_JV_STR:
		if (item.kind != VD_JV_STR)
			return vd_jinja_fail(r, at, "'in <string>' requires string as left operand, not %s",
					     vd_jv_type_name(item));
		*out = item.u.s.n == 0 ||
		       memmem(seq.u.s.p, seq.u.s.n, item.u.s.p, item.u.s.n) != NULL;
		return 0;
	case VD_JV_LIST:
		*out = false;
		for (size_t i = 0; i < seq.u.list->n && !*out; i++)
			*out = vd_jv_eq(item, seq.u.list->items[i]);
		return 0;
	case VD_JV_DICT:
		if (unhashable(r, at, item))
			return -1;
		*out = vd_jdict_find(seq.u.dict, item) >= 0;
		return 0;
	case VD_JV_UNDEF:
		*out = false;
		return 0;
	default:
		return vd_jinja_fail(r, at, "argument of type '%s' is not iterable",
				     vd_jv_type_name(seq));
	}
}

int vd_jinja_compare(vd_jrender *r, const vd_jnode *at, int op, vd_jv a, vd_jv b, bool *out)
{
	const char *err = NULL;
	int c;

	switch (op) {
	case VD_JOP_EQ: *out = vd_jv_eq(a, b); return 0;
	case VD_JOP_NE: *out = !vd_jv_eq(a, b); return 0;
	case VD_JOP_IN: return contains(r, at, a, b, out);
	case VD_JOP_NOTIN:
		if (contains(r, at, a, b, out))
			return -1;
		*out = !*out;
		return 0;
	default:
		break;
	}
	if (a.kind == VD_JV_UNDEF)
		return vd_jinja_undef_fail(r, at, a);
	if (b.kind == VD_JV_UNDEF)
		return vd_jinja_undef_fail(r, at, b);
	if (vd_jv_cmp(a, b, &c, &err)) {
		static const char *const sym[] = { "<", "<=", ">", ">=" };
		const char *s = sym[op - VD_JOP_LT];

		return vd_jinja_fail(r, at, "'%s' not supported between instances of '%s' and '%s'",
				     s, vd_jv_type_name(a), vd_jv_type_name(b));
	}
	/* NaN compares unordered: every ordering is false */
	if ((a.kind == VD_JV_FLOAT && isnan(a.u.f)) || (b.kind == VD_JV_FLOAT && isnan(b.u.f))) {
		*out = false;
		return 0;
	}
	switch (op) {
	case VD_JOP_LT: *out = c < 0; break;
	case VD_JOP_LE: *out = c <= 0; break;
	case VD_JOP_GT: *out = c > 0; break;
	default: *out = c >= 0; break;
	}
	return 0;
}

/* ---- calls ---- */

static int call_macro(vd_jrender *r, const vd_jnode *at, vd_jmacro *m, const vd_jv *args,
		      size_t nargs, const char *const *kwn, const vd_jv *kwv, size_t nkw,
		      vd_jv *out)
{
	const vd_jnode *def = m->def;
	vd_jscope *s = frame_new(r, m->closure, &def->frame);
	vd_jbuf buf = { 0 }, *saved = r->out;
	bool *bound;
	vd_jlist *varargs = NULL;
	vd_jdict *kwargs = NULL;
	const char *mname = def->kind == VD_JN_MACRO ? def->str : "caller";
	int rc;

	if (!s)
		return -1;
	if (!(bound = vd_jarena_alloc(&r->arena, def->nnames + 1)))
		return vd_jinja_oom(r);
	if (r->depth >= MAX_DEPTH)
		return vd_jinja_fail(r, at, "macro calls nested deeper than %d", MAX_DEPTH);
	if (def->flags & VD_JMACRO_VARARGS) {
		if (!(varargs = vd_jlist_new(&r->arena, 0)))
			return vd_jinja_oom(r);
		varargs->tuple = true;
	}
	if ((def->flags & VD_JMACRO_KWARGS) && !(kwargs = vd_jdict_new(&r->arena, 0)))
		return vd_jinja_oom(r);
	for (size_t i = 0; i < nargs; i++) {
		if (i < def->nnames) {
			if (scope_set(r, s, def->names[i], args[i]))
				return -1;
			bound[i] = true;
		} else if (varargs) {
			if (vd_jlist_push(&r->arena, varargs, args[i]))
				return vd_jinja_oom(r);
		} else {
			return vd_jinja_fail(r, at, "macro '%s' takes not more than %zu argument(s)",
					     mname, def->nnames);
		}
	}
	for (size_t k = 0; k < nkw; k++) {
		size_t i;

		for (i = 0; i < def->nnames; i++)
			if (!strcmp(def->names[i], kwn[k]))
				break;
		if (i < def->nnames) {
			if (bound[i])
				return vd_jinja_fail(r, at, "macro '%s' got multiple values for argument '%s'",
						     mname, kwn[k]);
			bound[i] = true;
			if (scope_set(r, s, def->names[i], kwv[k]))
				return -1;
		} else if (!strcmp(kwn[k], "caller")) {
			if (scope_set(r, s, "caller", kwv[k]))
				return -1;
		} else if (kwargs) {
			if (vd_jdict_set(&r->arena, kwargs, vd_jv_str(kwn[k], strlen(kwn[k])), kwv[k]))
				return vd_jinja_oom(r);
		} else {
			return vd_jinja_fail(r, at, "macro '%s' takes no keyword argument '%s'",
					     mname, kwn[k]);
		}
	}
	/* defaults are evaluated in the call's frame, after the passed arguments */
	for (size_t i = 0; i < def->nnames; i++) {
		vd_jv v;

		if (bound[i])
			continue;
		if (def->kids2[i]) {
			if (eval(r, s, def->kids2[i], &v))
				return -1;
		} else if (make_undef(r, &v, "parameter '%s' was not provided", def->names[i])) {
			return -1;
		}
		if (scope_set(r, s, def->names[i], v))
			return -1;
	}
	if (varargs) {
		vd_jv v = { .kind = VD_JV_LIST, .u.list = varargs };

		if (scope_set(r, s, "varargs", v))
			return -1;
	}
	if (kwargs) {
		vd_jv v = { .kind = VD_JV_DICT, .u.dict = kwargs };

		if (scope_set(r, s, "kwargs", v))
			return -1;
	}
	if (vd_jbuf_put(&r->arena, &buf, "", 0))
		return vd_jinja_oom(r);
	r->out = &buf;
	r->depth++;
	rc = exec_body(r, s, def->kids, def->nkids);
	r->depth--;
	r->out = saved;
	if (rc)
		return rc;
	*out = vd_jv_str(buf.p, buf.n);
	return 0;
}

/* Call a callable value with positional and keyword arguments. */
static int call_value(vd_jrender *r, const vd_jnode *at, vd_jv fn, const vd_jv *args,
		      size_t nargs, const char *const *kwn, const vd_jv *kwv, size_t nkw,
		      vd_jv *out)
{
	vd_jv none = { .kind = VD_JV_MISSING };

	switch (fn.kind) {
	case VD_JV_UNDEF:
		return vd_jinja_undef_fail(r, at, fn);
	case VD_JV_MACRO:
		return call_macro(r, at, fn.u.macro, args, nargs, kwn, kwv, nkw, out);
	case VD_JV_METHOD:
		return vd_jinja_call_builtin(r, at, vd_jinja_method_by_id(fn.u.method->id),
					     fn.u.method->self, args, nargs, kwn, kwv, nkw, out);
	case VD_JV_FUNC:
		return vd_jinja_call_builtin(r, at, vd_jinja_global(fn.u.func), none, args, nargs,
					     kwn, kwv, nkw, out);
	default:
		return vd_jinja_fail(r, at, "'%s' object is not callable", vd_jv_type_name(fn));
	}
}

/* Evaluated positional and keyword arguments of a CALL/FILTER/TEST node. */
static int eval_args(vd_jrender *r, vd_jscope *s, const vd_jnode *n, vd_jv **args, vd_jv **kwv)
{
	*args = vd_jarena_alloc(&r->arena, (n->nkids + 1) * sizeof(vd_jv));
	*kwv = vd_jarena_alloc(&r->arena, (n->nkids2 + 1) * sizeof(vd_jv));
	if (!*args || !*kwv)
		return vd_jinja_oom(r);
	for (size_t i = 0; i < n->nkids; i++)
		if (eval(r, s, n->kids[i], &(*args)[i]))
			return -1;
	for (size_t i = 0; i < n->nkids2; i++)
		if (eval(r, s, n->kids2[i], &(*kwv)[i]))
			return -1;
	return 0;
}

int vd_jinja_apply_test(vd_jrender *r, const vd_jnode *at, const vd_jbuiltin *t,
			vd_jv v, const vd_jv *args, size_t nargs, bool *out)
{
	vd_jv res;

	if (vd_jinja_call_builtin(r, at, t, v, args, nargs, NULL, NULL, 0, &res))
		return -1;
	*out = vd_jv_truthy(res);
	return 0;
}

int vd_jinja_apply_filter(vd_jrender *r, const vd_jnode *at, const vd_jbuiltin *f,
			  vd_jv v, const vd_jv *args, size_t nargs, vd_jv *out)
{
	return vd_jinja_call_builtin(r, at, f, v, args, nargs, NULL, NULL, 0, out);
}

/* A filter chain; the innermost input of a block filter is `input`. */
static int eval_filter(vd_jrender *r, vd_jscope *s, const vd_jnode *n, const vd_jv *input,
		       vd_jv *out)
{
	vd_jv v, *args, *kwv;

	if (n->a) {
		if (n->a->kind == VD_JN_FILTER ? eval_filter(r, s, n->a, input, &v) :
		    eval(r, s, n->a, &v))
			return -1;
	} else {
		v = *input;
	}
	if (!n->builtin)
		return vd_jinja_fail(r, n, "No filter named '%s' found.", n->str);
	if (eval_args(r, s, n, &args, &kwv))
		return -1;
	return vd_jinja_call_builtin(r, n, n->builtin, v, args, n->nkids,
				     (const char *const *)n->names, kwv, n->nkids2, out);
}

/* ---- expressions ---- */

static int make_list(vd_jrender *r, vd_jscope *s, const vd_jnode *n, bool tuple, vd_jv *out)
{
	vd_jlist *l = vd_jlist_new(&r->arena, n->nkids);

	if (!l)
		return vd_jinja_oom(r);
	for (size_t i = 0; i < n->nkids; i++)
		if (eval(r, s, n->kids[i], &l->items[i]))
			return -1;
	l->n = n->nkids;
	l->tuple = tuple;
	out->kind = VD_JV_LIST;
	out->u.list = l;
	return 0;
}

static int eval(vd_jrender *r, vd_jscope *s, const vd_jnode *n, vd_jv *out)
{
	vd_jv a, b, *args, *kwv;
	bool t;

	switch (n->kind) {
	case VD_JN_CONST:
		*out = n->cval;
		return 0;
	case VD_JN_NAME:
		return lookup(r, s, n, out);
	case VD_JN_GETATTR:
		if (eval(r, s, n->a, &a))
			return -1;
		return vd_jinja_getattr(r, n, a, n->str, n->slen, out);
	case VD_JN_GETITEM:
		if (eval(r, s, n->a, &a))
			return -1;
		if (n->b->kind == VD_JN_SLICE) {
			vd_jv parts[3] = { { .kind = VD_JV_MISSING }, { .kind = VD_JV_MISSING },
					   { .kind = VD_JV_MISSING } };
			const vd_jnode *sub[3] = { n->b->a, n->b->b, n->b->c };

			for (int k = 0; k < 3; k++)
				if (sub[k] && eval(r, s, sub[k], &parts[k]))
					return -1;
			return do_slice(r, n, a, parts[0], parts[1], parts[2], out);
		}
		if (eval(r, s, n->b, &b))
			return -1;
		return vd_jinja_getitem(r, n, a, b, out);
	case VD_JN_CALL:
		if (eval(r, s, n->a, &a) || eval_args(r, s, n, &args, &kwv))
			return -1;
		return call_value(r, n, a, args, n->nkids, (const char *const *)n->names, kwv,
				     n->nkids2, out);
	case VD_JN_FILTER:
		return eval_filter(r, s, n, NULL, out);
	case VD_JN_TEST:
		if (eval(r, s, n->a, &a))
			return -1;
		if (!n->builtin)
			return vd_jinja_fail(r, n, "No test named '%s' found.", n->str);
		if (eval_args(r, s, n, &args, &kwv))
			return -1;
		if (vd_jinja_call_builtin(r, n, n->builtin, a, args, n->nkids,
					  (const char *const *)n->names, kwv, n->nkids2, &b))
			return -1;
		*out = vd_jv_bool(vd_jv_truthy(b));
		return 0;
	case VD_JN_NOT:
		if (eval(r, s, n->a, &a))
			return -1;
		*out = vd_jv_bool(!vd_jv_truthy(a));
		return 0;
	case VD_JN_NEG:
	case VD_JN_POS:
		if (eval(r, s, n->a, &a))
			return -1;
		if (a.kind == VD_JV_UNDEF)
			return vd_jinja_undef_fail(r, n, a);
		if (!vd_jv_is_number(a))
			return vd_jinja_fail(r, n, "bad operand type for unary %c: '%s'",
					     n->kind == VD_JN_NEG ? '-' : '+', vd_jv_type_name(a));
		if (n->kind == VD_JN_POS) {
			*out = a.kind == VD_JV_BOOL ? vd_jv_int(a.u.b) : a;
		} else if (a.kind == VD_JV_FLOAT) {
			*out = vd_jv_float(-a.u.f);
		} else {
			int64_t i = ival(a);

			if (i == INT64_MIN)
				return overflow(r, n);
			*out = vd_jv_int(-i);
		}
		return 0;
	case VD_JN_BINOP:
		if (eval(r, s, n->a, &a) || eval(r, s, n->b, &b))
			return -1;
		return vd_jinja_binop(r, n, n->op, a, b, out);
	case VD_JN_AND:
	case VD_JN_OR:
		if (eval(r, s, n->a, &a))
			return -1;
		if (vd_jv_truthy(a) == (n->kind == VD_JN_OR)) {
			*out = a;
			return 0;
		}
		return eval(r, s, n->b, out);
	case VD_JN_CONCAT: {
		vd_jbuf buf = { 0 };

		if (vd_jbuf_put(&r->arena, &buf, "", 0))
			return vd_jinja_oom(r);
		for (size_t i = 0; i < n->nkids; i++) {
			if (eval(r, s, n->kids[i], &a))
				return -1;
			if (vd_jv_str_to(&r->arena, &buf, a))
				return vd_jinja_oom(r);
		}
		*out = vd_jv_str(buf.p, buf.n);
		return 0;
	}
	case VD_JN_COMPARE:
		if (eval(r, s, n->a, &a))
			return -1;
		for (size_t i = 0; i < n->nkids; i++) {
			if (eval(r, s, n->kids[i]->a, &b) ||
			    vd_jinja_compare(r, n->kids[i], n->kids[i]->op, a, b, &t))
				return -1;
			if (!t) {
				*out = vd_jv_bool(false);
				return 0;
			}
			a = b;
		}
		*out = vd_jv_bool(true);
		return 0;
	case VD_JN_CONDEXPR:
		if (eval(r, s, n->a, &a))
			return -1;
		if (vd_jv_truthy(a))
			return eval(r, s, n->b, out);
		if (n->c)
			return eval(r, s, n->c, out);
		return make_undef(r, out, "the inline if-expression on line %d evaluated to false "
				  "and no else section was defined.", n->line);
	case VD_JN_LIST:
		return make_list(r, s, n, false, out);
	case VD_JN_TUPLE:
		return make_list(r, s, n, true, out);
	case VD_JN_DICT: {
		vd_jdict *d = vd_jdict_new(&r->arena, n->nkids);

		if (!d)
			return vd_jinja_oom(r);
		for (size_t i = 0; i < n->nkids; i++) {
			if (eval(r, s, n->kids[i], &a) || eval(r, s, n->kids2[i], &b) ||
			    unhashable(r, n->kids[i], a))
				return -1;
			if (vd_jdict_set(&r->arena, d, a, b))
				return vd_jinja_oom(r);
		}
		out->kind = VD_JV_DICT;
		out->u.dict = d;
		return 0;
	}
	default:
		return vd_jinja_fail(r, n, "internal error: statement used as expression");
	}
}

/* ---- statements ---- */

/* Bind a value to a NAME or (nested) TUPLE target, unpacking as Python. */
static int assign(vd_jrender *r, vd_jscope *s, const vd_jnode *target, vd_jv v)
{
	const vd_jlist *items;

	if (target->kind == VD_JN_NAME)
		return scope_set(r, s, target->str, v);
	if (v.kind == VD_JV_UNDEF)
		return vd_jinja_undef_fail(r, target, v);
	if (vd_jinja_iterate(r, target, v, &items))
		return -1;
	if (items->n < target->nkids)
		return vd_jinja_fail(r, target, "not enough values to unpack (expected %zu, got %zu)",
				     target->nkids, items->n);
	if (items->n > target->nkids)
		return vd_jinja_fail(r, target, "too many values to unpack (expected %zu)",
				     target->nkids);
	for (size_t i = 0; i < target->nkids; i++)
		if (assign(r, s, target->kids[i], items->items[i]))
			return -1;
	return 0;
}

static int exec_for(vd_jrender *r, vd_jscope *s, const vd_jnode *n)
{
	const vd_jlist *items;
	vd_jlist *kept;
	vd_jloop *lp;
	vd_jv it;
	bool completed = false;

	if (eval(r, s, n->b, &it) || vd_jinja_iterate(r, n->b, it, &items))
		return -1;
	if (n->c) {
		/* the loop's `if` clause filters before loop.index/length count */
		if (!(kept = vd_jlist_new(&r->arena, items->n)))
			return vd_jinja_oom(r);
		for (size_t i = 0; i < items->n; i++) {
			vd_jscope *f = scope_new(r, s);
			vd_jv c;

			if (!f)
				return vd_jinja_oom(r);
			if (assign(r, f, n->a, items->items[i]) || eval(r, f, n->c, &c))
				return -1;
			if (vd_jv_truthy(c))
				kept->items[kept->n++] = items->items[i];
		}
		items = kept;
	}
	if (!(lp = vd_jarena_alloc(&r->arena, sizeof(*lp))))
		return vd_jinja_oom(r);
	lp->items = items;
	for (size_t i = 0; i < items->n; i++) {
		vd_jscope *f = frame_new(r, s, &n->frame);
		vd_jv lv = { .kind = VD_JV_LOOP, .u.loop = lp };

		if (!f)
			return -1;
		lp->index0 = i;
		if (assign(r, f, n->a, items->items[i]) || scope_set(r, f, "loop", lv) ||
		    exec_body(r, f, n->kids, n->nkids))
			return -1;
		/* Jinja2 clears its "else" flag at the end of the body, so an
		 * iteration cut short by break or continue does not count */
		completed |= !r->loop_ctl;
		if (r->loop_ctl == LOOP_BREAK) {
			r->loop_ctl = 0;
			break;
		}
		r->loop_ctl = 0;
	}
	if (!completed && n->nkids2) {
		vd_jscope *f = frame_new(r, s, &n->frame2);

		return f ? exec_body(r, f, n->kids2, n->nkids2) : -1;
	}
	return 0;
}

/* Render the body of a set or filter block into a fresh string, in a frame
 * of its own. */
static int capture(vd_jrender *r, vd_jscope *s, const vd_jnode *n, vd_jv *out)
{
	vd_jbuf buf = { 0 }, *saved = r->out;
	vd_jscope *f = frame_new(r, s, &n->frame);
	int rc;

	if (!f)
		return -1;
	if (vd_jbuf_put(&r->arena, &buf, "", 0))
		return vd_jinja_oom(r);
	r->out = &buf;
	rc = exec_body(r, f, n->kids, n->nkids);
	r->out = saved;
	if (rc)
		return rc;
	*out = vd_jv_str(buf.p, buf.n);
	return 0;
}

static int exec_stmt(vd_jrender *r, vd_jscope *s, const vd_jnode *n)
{
	vd_jv v, w;

	switch (n->kind) {
	case VD_JN_DATA:
		return vd_jbuf_put(&r->arena, r->out, n->str, n->slen) ? vd_jinja_oom(r) : 0;
	case VD_JN_OUTPUT:
		if (eval(r, s, n->a, &v))
			return -1;
		return vd_jv_str_to(&r->arena, r->out, v) ? vd_jinja_oom(r) : 0;
	case VD_JN_IF:
		if (eval(r, s, n->a, &v))
			return -1;
		if (vd_jv_truthy(v))
			return exec_body(r, s, n->kids, n->nkids);
		return exec_body(r, s, n->kids2, n->nkids2);
	case VD_JN_FOR:
		return exec_for(r, s, n);
	case VD_JN_SET:
		if (eval(r, s, n->b, &v))
			return -1;
		if (n->a->kind == VD_JN_NSREF) {
			vd_jnode name = { .kind = VD_JN_NAME, .str = n->a->str,
					  .slen = strlen(n->a->str), .line = n->line };

			if (lookup(r, s, &name, &w))
				return -1;
			if (w.kind != VD_JV_NS)
				return vd_jinja_fail(r, n, "cannot assign attribute on non-namespace object");
			if (vd_jdict_set(&r->arena, w.u.dict,
					 vd_jv_str(n->a->str2, strlen(n->a->str2)), v))
				return vd_jinja_oom(r);
			return 0;
		}
		return assign(r, s, n->a, v);
	case VD_JN_SETBLOCK:
		if (capture(r, s, n, &v))
			return -1;
		if (n->c && eval_filter(r, s, n->c, &v, &v))
			return -1;
		return assign(r, s, n->a, v);
	case VD_JN_FILTERBLOCK:
		if (capture(r, s, n, &v) || eval_filter(r, s, n->c, &v, &v))
			return -1;
		return vd_jv_str_to(&r->arena, r->out, v) ? vd_jinja_oom(r) : 0;
	case VD_JN_MACRO: {
		vd_jmacro *m = vd_jarena_alloc(&r->arena, sizeof(*m));

		if (!m)
			return vd_jinja_oom(r);
		m->def = n;
		m->closure = s;
		v.kind = VD_JV_MACRO;
		v.u.macro = m;
		return scope_set(r, s, n->str, v);
	}
	case VD_JN_CALLBLOCK: {
		const vd_jnode *call = n->a;
		vd_jmacro *m = vd_jarena_alloc(&r->arena, sizeof(*m));
		vd_jv fn, *args, *kwv, *kw2;
		const char **kwn;

		if (!m)
			return vd_jinja_oom(r);
		m->def = n;
		m->closure = s;
		if (eval(r, s, call->a, &fn) || eval_args(r, s, call, &args, &kwv))
			return -1;
		kwn = vd_jarena_alloc(&r->arena, (call->nkids2 + 1) * sizeof(*kwn));
		kw2 = vd_jarena_alloc(&r->arena, (call->nkids2 + 1) * sizeof(*kw2));
		if (!kwn || !kw2)
			return vd_jinja_oom(r);
		for (size_t i = 0; i < call->nkids2; i++) {
			kwn[i] = call->names[i];
			kw2[i] = kwv[i];
		}
		kwn[call->nkids2] = "caller";
		kw2[call->nkids2].kind = VD_JV_MACRO;
		kw2[call->nkids2].u.macro = m;
		if (call_value(r, call, fn, args, call->nkids, kwn, kw2, call->nkids2 + 1, &v))
			return -1;
		return vd_jv_str_to(&r->arena, r->out, v) ? vd_jinja_oom(r) : 0;
	}
	case VD_JN_WITH: {
		vd_jscope *f = frame_new(r, s, &n->frame);

		if (!f)
			return -1;
		for (size_t i = 0; i < n->nnames; i++) {
			if (eval(r, s, n->kids2[i], &v) || scope_set(r, f, n->names[i], v))
				return -1;
		}
		return exec_body(r, f, n->kids, n->nkids);
	}
	case VD_JN_GENERATION: {
		/* AssistantTracker renders its body as a call block: own frame */
		vd_jscope *f = frame_new(r, s, &n->frame);

		if (!f)
			return -1;
		return exec_body(r, f, n->kids, n->nkids);
	}
	case VD_JN_BREAK:
		r->loop_ctl = LOOP_BREAK;
		return 0;
	case VD_JN_CONTINUE:
		r->loop_ctl = LOOP_CONTINUE;
		return 0;
	default:
		return vd_jinja_fail(r, n, "internal error: expression used as statement");
	}
}

static int exec_body(vd_jrender *r, vd_jscope *s, vd_jnode *const *body, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (exec_stmt(r, s, body[i]))
			return -1;
		if (r->loop_ctl)
			return 0;
	}
	return 0;
}

int vd_jinja_exec(vd_jrender *r, vd_jnode *const *body, size_t n, const vd_jframe *root,
		  const vd_jdict *ctx)
{
	vd_jscope *ctx_frame = scope_new(r, NULL), *top;

	if (!ctx_frame)
		return vd_jinja_oom(r);
	ctx_frame->dict = ctx;
	if (!(top = frame_new(r, ctx_frame, root)))
		return -1;
	return exec_body(r, top, body, n);
}
