/* Jinja2 parser: tokens from lex.c into the tree of internal.h,
 * with the grammar and precedence of jinja2/parser.py (3.1): condexpr < or <
 * and < not < compare < +,- < ~ < *,/,//,% < ** < unary < postfix/filters.
 * Tags: if/elif/else, for (else, `if` clause), set (block and namespace
 * forms), macro, call, filter, with, print, break/continue (loopcontrols)
 * and generation (transformers' AssistantTracker). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/jinja/internal.h"

typedef struct nvec { vd_jnode **p; size_t n, cap; } nvec;

typedef struct parser {
	vd_jarena *a;
	const vd_jtok *t;
	size_t n, pos;
	int loop_depth;
	vd_jnode *macro;          /* innermost macro/call block being parsed */
	const char *tags[64];     /* open block tags, for error messages */
	int ntags;
	const char *const *ends;  /* end tags the innermost body waits for */
	int depth;                /* recursion of the descent, bounded */
	vd_status err;
} parser;

/* Deeper nesting than this is refused, so that no template can exhaust the
 * C stack of the parser or the evaluator. */
#define MAX_NESTING 200

static const vd_jtok *cur(const parser *p) { return &p->t[p->pos]; }
static const vd_jtok *look(const parser *p)
{
	return p->pos + 1 < p->n ? &p->t[p->pos + 1] : &p->t[p->n - 1];
}
static void advance(parser *p) { if (p->pos + 1 < p->n) p->pos++; }

static bool is_op(const vd_jtok *t, const char *op)
{
	return t->kind == VD_JT_OP && strcmp(t->p, op) == 0;
}

static bool is_name(const vd_jtok *t, const char *name)
{
	return t->kind == VD_JT_NAME && strcmp(t->p, name) == 0;
}

static const char *describe(const vd_jtok *t, char *buf, size_t n)
{
	switch (t->kind) {
	case VD_JT_EOF: return "end of template";
	case VD_JT_DATA: return "template data";
	case VD_JT_VAR_BEGIN: return "begin of print statement";
	case VD_JT_VAR_END: return "end of print statement";
	case VD_JT_BLOCK_BEGIN: return "begin of statement block";
	case VD_JT_BLOCK_END: return "end of statement block";
	case VD_JT_STRING: return "string";
	case VD_JT_INT: return "integer";
	case VD_JT_FLOAT: return "float";
	default:
		snprintf(buf, n, "%s", t->p);
		return buf;
	}
}

static void *fail_at(parser *p, const vd_jtok *t, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void *fail_at(parser *p, const vd_jtok *t, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (p->err)
		return NULL; /* keep the first message */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	p->err = vd_errorf(VD_ERR_FORMAT, "chat template syntax error at line %d, column %d: %s",
			   t->line, t->col, msg);
	return NULL;
}

static void *oom(parser *p)
{
	if (!p->err)
		p->err = vd_errorf(VD_ERR_NOMEM, "chat template: out of memory while parsing");
	return NULL;
}

static vd_jnode *node(parser *p, vd_jnode_kind kind, const vd_jtok *at)
{
	vd_jnode *nd = vd_jarena_alloc(p->a, sizeof(*nd));

	if (!nd)
		return oom(p);
	nd->kind = kind;
	nd->line = at->line;
	nd->col = at->col;
	return nd;
}

static int nvec_push(parser *p, nvec *v, vd_jnode *nd)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? 2 * v->cap : 4;
		vd_jnode **q = vd_jarena_alloc(p->a, cap * sizeof(*q));

		if (!q) {
			oom(p);
			return -1;
		}
		if (v->n)
			memcpy(q, v->p, v->n * sizeof(*q));
		v->p = q;
		v->cap = cap;
	}
	v->p[v->n++] = nd;
	return 0;
}

/* Names array in the arena from a growable list. */
static int names_push(parser *p, const char ***names, size_t *n, size_t *cap, const char *s)
{
	if (*n == *cap) {
		size_t c = *cap ? 2 * *cap : 4;
		const char **q = vd_jarena_alloc(p->a, c * sizeof(*q));

		if (!q) {
			oom(p);
			return -1;
		}
		if (*n)
			memcpy(q, *names, *n * sizeof(*q));
		*names = q;
		*cap = c;
	}
	(*names)[(*n)++] = s;
	return 0;
}

static bool expect_op(parser *p, const char *op)
{
	char buf[64];

	if (is_op(cur(p), op)) {
		advance(p);
		return true;
	}
	fail_at(p, cur(p), "expected token '%s', got '%s'", op, describe(cur(p), buf, sizeof(buf)));
	return false;
}

static bool expect_kind(parser *p, vd_jtok_kind kind, const char *what)
{
	char buf[64];

	if (cur(p)->kind == kind) {
		advance(p);
		return true;
	}
	fail_at(p, cur(p), "expected token '%s', got '%s'", what, describe(cur(p), buf, sizeof(buf)));
	return false;
}

static const vd_jtok *expect_name(parser *p)
{
	const vd_jtok *t = cur(p);
	char buf[64];

	if (t->kind != VD_JT_NAME)
		return fail_at(p, t, "expected token 'name', got '%s'", describe(t, buf, sizeof(buf)));
	advance(p);
	return t;
}

/* ---- expressions ---- */

static bool enter(parser *p);
static bool link(parser *p, int *links);
static vd_jnode *leave(parser *p, int links, vd_jnode *nd);
static vd_jnode *parse_expression(parser *p, bool with_condexpr);
static vd_jnode *parse_tuple(parser *p, bool simplified, bool with_condexpr,
			     const char *extra_end, bool explicit_parens);
static vd_jnode *parse_unary(parser *p, bool with_filter);
static vd_jnode *parse_postfix(parser *p, vd_jnode *nd);
static vd_jnode *parse_filter_expr(parser *p, vd_jnode *nd);

static vd_jnode *parse_primary(parser *p)
{
	const vd_jtok *t = cur(p);
	vd_jnode *nd;
	char buf[64];

	switch (t->kind) {
	case VD_JT_NAME:
		if (!(nd = node(p, VD_JN_CONST, t)))
			return NULL;
		if (!strcmp(t->p, "true") || !strcmp(t->p, "True")) {
			nd->cval = vd_jv_bool(true);
		} else if (!strcmp(t->p, "false") || !strcmp(t->p, "False")) {
			nd->cval = vd_jv_bool(false);
		} else if (!strcmp(t->p, "none") || !strcmp(t->p, "None")) {
			nd->cval = vd_jv_none();
		} else {
			nd->kind = VD_JN_NAME;
			nd->str = t->p;
			nd->slen = t->n;
			if (p->macro) {
				if (!strcmp(t->p, "varargs"))
					p->macro->flags |= VD_JMACRO_VARARGS;
				else if (!strcmp(t->p, "kwargs"))
					p->macro->flags |= VD_JMACRO_KWARGS;
			}
		}
		advance(p);
		return nd;
	case VD_JT_STRING: {
		/* adjacent literals concatenate */
		vd_jbuf b = { 0 };

		if (!(nd = node(p, VD_JN_CONST, t)))
			return NULL;
		while (cur(p)->kind == VD_JT_STRING) {
			if (vd_jbuf_put(p->a, &b, cur(p)->p, cur(p)->n))
				return oom(p);
			advance(p);
		}
		nd->cval = vd_jv_str(b.p, b.n);
		return nd;
	}
	case VD_JT_INT:
	case VD_JT_FLOAT:
		if (!(nd = node(p, VD_JN_CONST, t)))
			return NULL;
		nd->cval = t->kind == VD_JT_INT ? vd_jv_int(t->i) : vd_jv_float(t->f);
		advance(p);
		return nd;
	case VD_JT_OP:
		if (is_op(t, "(")) {
			advance(p);
			nd = parse_tuple(p, false, true, NULL, true);
			if (!nd || !expect_op(p, ")"))
				return NULL;
			return nd;
		}
		if (is_op(t, "[")) {
			nvec items = { 0 };

			if (!(nd = node(p, VD_JN_LIST, t)))
				return NULL;
			advance(p);
			while (!is_op(cur(p), "]")) {
				vd_jnode *it;

				if (items.n && !expect_op(p, ","))
					return NULL;
				if (is_op(cur(p), "]"))
					break;
				if (!(it = parse_expression(p, true)) || nvec_push(p, &items, it))
					return NULL;
			}
			advance(p);
			nd->kids = items.p;
			nd->nkids = items.n;
			return nd;
		}
		if (is_op(t, "{")) {
			nvec keys = { 0 }, vals = { 0 };

			if (!(nd = node(p, VD_JN_DICT, t)))
				return NULL;
			advance(p);
			while (!is_op(cur(p), "}")) {
				vd_jnode *k, *v;

				if (keys.n && !expect_op(p, ","))
					return NULL;
				if (is_op(cur(p), "}"))
					break;
				if (!(k = parse_expression(p, true)) || !expect_op(p, ":") ||
				    !(v = parse_expression(p, true)) ||
				    nvec_push(p, &keys, k) || nvec_push(p, &vals, v))
					return NULL;
			}
			advance(p);
			nd->kids = keys.p;
			nd->kids2 = vals.p;
			nd->nkids = keys.n;
			nd->nkids2 = vals.n;
			return nd;
		}
		break;
	default:
		break;
	}
	return fail_at(p, t, "unexpected '%s'", describe(t, buf, sizeof(buf)));
}

static bool is_tuple_end(const parser *p, const char *extra_end)
{
	const vd_jtok *t = cur(p);

	if (t->kind == VD_JT_VAR_END || t->kind == VD_JT_BLOCK_END || is_op(t, ")"))
		return true;
	return extra_end && is_name(t, extra_end);
}

static vd_jnode *parse_tuple(parser *p, bool simplified, bool with_condexpr,
			     const char *extra_end, bool explicit_parens)
{
	const vd_jtok *start = cur(p);
	nvec items = { 0 };
	bool is_tuple = false;
	vd_jnode *nd;
	char buf[64];

	for (;;) {
		vd_jnode *it;

		if (items.n && !expect_op(p, ","))
			return NULL;
		if (is_tuple_end(p, extra_end))
			break;
		it = simplified ? parse_primary(p) : parse_expression(p, with_condexpr);
		if (!it || nvec_push(p, &items, it))
			return NULL;
		if (is_op(cur(p), ","))
			is_tuple = true;
		else
			break;
	}
	if (!is_tuple) {
		if (items.n)
			return items.p[0];
		if (!explicit_parens)
			return fail_at(p, cur(p), "Expected an expression, got '%s'",
				       describe(cur(p), buf, sizeof(buf)));
	}
	if (!(nd = node(p, VD_JN_TUPLE, start)))
		return NULL;
	nd->kids = items.p;
	nd->nkids = items.n;
	return nd;
}

/* Call arguments after '(': positional then keyword (name=value). */
static bool parse_call_args(parser *p, vd_jnode *nd)
{
	nvec args = { 0 }, kwv = { 0 };
	const char **kwn = NULL;
	size_t nkw = 0, kwcap = 0;
	const vd_jtok *open = cur(p);

	if (!expect_op(p, "("))
		return false;
	while (!is_op(cur(p), ")")) {
		vd_jnode *v;

		if (args.n + nkw) {
			if (!expect_op(p, ","))
				return false;
			if (is_op(cur(p), ")"))
				break;
		}
		if (is_op(cur(p), "*") || is_op(cur(p), "**")) {
			fail_at(p, cur(p), "*args and **kwargs in calls are not supported");
			return false;
		}
		if (cur(p)->kind == VD_JT_NAME && is_op(look(p), "=")) {
			const char *name = cur(p)->p;

			advance(p);
			advance(p);
			if (!(v = parse_expression(p, true)) || nvec_push(p, &kwv, v) ||
			    names_push(p, &kwn, &nkw, &kwcap, name))
				return false;
		} else {
			if (nkw) {
				fail_at(p, open, "invalid syntax for function call expression");
				return false;
			}
			if (!(v = parse_expression(p, true)) || nvec_push(p, &args, v))
				return false;
		}
	}
	advance(p);
	nd->kids = args.p;
	nd->nkids = args.n;
	nd->kids2 = kwv.p;
	nd->nkids2 = kwv.n;
	nd->names = kwn;
	nd->nnames = nkw;
	return true;
}

/* A dotted name after | or `is`. */
static const char *dotted_name(parser *p, const vd_jtok **at)
{
	const vd_jtok *t = expect_name(p);
	vd_jbuf b = { 0 };

	if (!t)
		return NULL;
	*at = t;
	if (!is_op(cur(p), "."))
		return t->p;
	if (vd_jbuf_puts(p->a, &b, t->p))
		return oom(p);
	while (is_op(cur(p), ".")) {
		advance(p);
		if (!(t = expect_name(p)))
			return NULL;
		if (vd_jbuf_putc(p->a, &b, '.') || vd_jbuf_puts(p->a, &b, t->p))
			return oom(p);
	}
	return b.p;
}

/* One or more `|name(args)`; input may be NULL (filter blocks), and
 * start_inline means the first name has no leading '|'. Each filter is a
 * link of the caller's chain (*links; the caller releases them). */
static vd_jnode *parse_filter(parser *p, vd_jnode *input, bool start_inline, int *links)
{
	while (is_op(cur(p), "|") || start_inline) {
		const vd_jtok *at;
		const char *name;
		vd_jnode *nd;

		if (!start_inline)
			advance(p);
		start_inline = false;
		if (!link(p, links) || !(name = dotted_name(p, &at)) ||
		    !(nd = node(p, VD_JN_FILTER, at)))
			return NULL;
		nd->str = name;
		nd->a = input;
		/* unknown names are checked after parsing (check_names) */
		nd->builtin = vd_jinja_filter(name);
		if (is_op(cur(p), "(") && !parse_call_args(p, nd))
			return NULL;
		input = nd;
	}
	return input;
}

static vd_jnode *parse_test(parser *p, vd_jnode *input)
{
	const vd_jtok *is_tok = cur(p), *at;
	bool negated = false;
	const char *name;
	vd_jnode *nd;

	advance(p);
	if (is_name(cur(p), "not")) {
		advance(p);
		negated = true;
	}
	if (!(name = dotted_name(p, &at)) || !(nd = node(p, VD_JN_TEST, at)))
		return NULL;
	nd->str = name;
	nd->a = input;
	nd->builtin = vd_jinja_test(name);
	if (is_op(cur(p), "(")) {
		if (!parse_call_args(p, nd))
			return NULL;
	} else {
		const vd_jtok *t = cur(p);
		bool arg = t->kind == VD_JT_NAME || t->kind == VD_JT_STRING ||
			   t->kind == VD_JT_INT || t->kind == VD_JT_FLOAT ||
			   is_op(t, "(") || is_op(t, "[") || is_op(t, "{");

		if (arg && !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and")) {
			vd_jnode *v;

			if (is_name(t, "is"))
				return fail_at(p, t, "You cannot chain multiple tests with is");
			if (!(v = parse_primary(p)) || !(v = parse_postfix(p, v)))
				return NULL;
			if (!(nd->kids = vd_jarena_alloc(p->a, sizeof(vd_jnode *))))
				return oom(p);
			nd->kids[0] = v;
			nd->nkids = 1;
		}
	}
	if (negated) {
		vd_jnode *n = node(p, VD_JN_NOT, is_tok);

		if (!n)
			return NULL;
		n->a = nd;
		return n;
	}
	return nd;
}

/* Subscript contents: an expression or a slice a:b:c. */
static vd_jnode *parse_subscribed(parser *p)
{
	const vd_jtok *at = cur(p);
	vd_jnode *start = NULL, *sl;

	if (!is_op(cur(p), ":")) {
		if (!(start = parse_expression(p, true)))
			return NULL;
		if (!is_op(cur(p), ":"))
			return start;
	}
	advance(p);
	if (!(sl = node(p, VD_JN_SLICE, at)))
		return NULL;
	sl->a = start;
	if (!is_op(cur(p), ":") && !is_op(cur(p), "]") && !is_op(cur(p), ",")) {
		if (!(sl->b = parse_expression(p, true)))
			return NULL;
	}
	if (is_op(cur(p), ":")) {
		advance(p);
		if (!is_op(cur(p), "]") && !is_op(cur(p), ",")) {
			if (!(sl->c = parse_expression(p, true)))
				return NULL;
		}
	}
	return sl;
}

static vd_jnode *parse_postfix(parser *p, vd_jnode *nd)
{
	int links = 0;

	for (;;) {
		const vd_jtok *t = cur(p);

		if ((is_op(t, ".") || is_op(t, "[") || is_op(t, "(")) && !link(p, &links))
			return leave(p, links, NULL);
		if (is_op(t, ".")) {
			const vd_jtok *attr;
			vd_jnode *g;

			advance(p);
			attr = cur(p);
			if (attr->kind == VD_JT_NAME) {
				if (!(g = node(p, VD_JN_GETATTR, t)))
					return NULL;
				g->a = nd;
				g->str = attr->p;
				g->slen = attr->n;
			} else if (attr->kind == VD_JT_INT) {
				vd_jnode *k;

				if (!(g = node(p, VD_JN_GETITEM, t)) || !(k = node(p, VD_JN_CONST, attr)))
					return NULL;
				k->cval = vd_jv_int(attr->i);
				g->a = nd;
				g->b = k;
			} else {
				return fail_at(p, attr, "expected name or number");
			}
			advance(p);
			nd = g;
		} else if (is_op(t, "[")) {
			nvec args = { 0 };
			vd_jnode *g;

			advance(p);
			while (!is_op(cur(p), "]")) {
				vd_jnode *s;

				if (args.n && !expect_op(p, ","))
					return NULL;
				if (!(s = parse_subscribed(p)) || nvec_push(p, &args, s))
					return NULL;
			}
			advance(p);
			if (!(g = node(p, VD_JN_GETITEM, t)))
				return NULL;
			g->a = nd;
			if (args.n == 1) {
				g->b = args.p[0];
			} else {
				if (!(g->b = node(p, VD_JN_TUPLE, t)))
					return NULL;
				g->b->kids = args.p;
				g->b->nkids = args.n;
			}
			nd = g;
		} else if (is_op(t, "(")) {
			vd_jnode *c = node(p, VD_JN_CALL, t);

			if (!c)
				return NULL;
			c->a = nd;
			if (!parse_call_args(p, c))
				return NULL;
			nd = c;
		} else {
			return leave(p, links, nd);
		}
	}
}

static vd_jnode *parse_filter_expr(parser *p, vd_jnode *nd)
{
	int links = 0;

	for (;;) {
		const vd_jtok *t = cur(p);

		if (is_op(t, "|")) {
			nd = parse_filter(p, nd, false, &links);
		} else if (is_name(t, "is")) {
			nd = link(p, &links) ? parse_test(p, nd) : NULL;
		} else if (is_op(t, "(")) {
			vd_jnode *c;

			if (!link(p, &links) || !(c = node(p, VD_JN_CALL, t)))
				return NULL;
			c->a = nd;
			if (!parse_call_args(p, c))
				return NULL;
			nd = c;
		} else {
			return leave(p, links, nd);
		}
		if (!nd)
			return NULL;
	}
}

static bool enter(parser *p)
{
	if (++p->depth > MAX_NESTING) {
		fail_at(p, cur(p), "the template nests deeper than %d levels", MAX_NESTING);
		return false;
	}
	return true;
}

/* Each link of an operator or postfix chain nests the tree one level more:
 * count it as a level too, released with leave(p, links) after the chain. */
static bool link(parser *p, int *links)
{
	++*links;
	return enter(p);
}

static vd_jnode *leave(parser *p, int links, vd_jnode *nd)
{
	p->depth -= links;
	return nd;
}

static vd_jnode *parse_unary_inner(parser *p, bool with_filter);

static vd_jnode *parse_unary(parser *p, bool with_filter)
{
	vd_jnode *nd = enter(p) ? parse_unary_inner(p, with_filter) : NULL;

	p->depth--;
	return nd;
}

static vd_jnode *parse_unary_inner(parser *p, bool with_filter)
{
	const vd_jtok *t = cur(p);
	vd_jnode *nd;

	if (is_op(t, "-") || is_op(t, "+")) {
		advance(p);
		if (!(nd = node(p, is_op(t, "-") ? VD_JN_NEG : VD_JN_POS, t)))
			return NULL;
		if (!(nd->a = parse_unary(p, false)))
			return NULL;
	} else if (!(nd = parse_primary(p))) {
		return NULL;
	}
	if (!(nd = parse_postfix(p, nd)))
		return NULL;
	return with_filter ? parse_filter_expr(p, nd) : nd;
}

static vd_jnode *binop(parser *p, const vd_jtok *at, int op, vd_jnode *l, vd_jnode *r)
{
	vd_jnode *nd;

	if (!l || !r || !(nd = node(p, VD_JN_BINOP, at)))
		return NULL;
	nd->op = op;
	nd->a = l;
	nd->b = r;
	return nd;
}

static vd_jnode *parse_pow(parser *p)
{
	vd_jnode *l = parse_unary(p, true);
	int links = 0;

	while (l && is_op(cur(p), "**")) {
		const vd_jtok *at = cur(p);

		advance(p);
		if (!link(p, &links))
			return leave(p, links, NULL);
		l = binop(p, at, VD_JOP_POW, l, parse_unary(p, true));
	}
	return leave(p, links, l);
}

static vd_jnode *parse_math2(parser *p)
{
	vd_jnode *l = parse_pow(p);
	int links = 0;

	for (;;) {
		const vd_jtok *at = cur(p);
		int op;

		if (!l)
			return leave(p, links, NULL);
		if (is_op(at, "*"))
			op = VD_JOP_MUL;
		else if (is_op(at, "/"))
			op = VD_JOP_DIV;
		else if (is_op(at, "//"))
			op = VD_JOP_FLOORDIV;
		else if (is_op(at, "%"))
			op = VD_JOP_MOD;
		else
			return leave(p, links, l);
		advance(p);
		if (!link(p, &links))
			return leave(p, links, NULL);
		l = binop(p, at, op, l, parse_pow(p));
	}
}

static vd_jnode *parse_concat(parser *p)
{
	const vd_jtok *at = cur(p);
	nvec args = { 0 };
	vd_jnode *first = parse_math2(p), *nd;

	if (!first || !is_op(cur(p), "~"))
		return first;
	if (nvec_push(p, &args, first))
		return NULL;
	while (is_op(cur(p), "~")) {
		vd_jnode *x;

		advance(p);
		if (!(x = parse_math2(p)) || nvec_push(p, &args, x))
			return NULL;
	}
	if (!(nd = node(p, VD_JN_CONCAT, at)))
		return NULL;
	nd->kids = args.p;
	nd->nkids = args.n;
	return nd;
}

static vd_jnode *parse_math1(parser *p)
{
	vd_jnode *l = parse_concat(p);
	int links = 0;

	for (;;) {
		const vd_jtok *at = cur(p);
		int op;

		if (!l)
			return leave(p, links, NULL);
		if (is_op(at, "+"))
			op = VD_JOP_ADD;
		else if (is_op(at, "-"))
			op = VD_JOP_SUB;
		else
			return leave(p, links, l);
		advance(p);
		if (!link(p, &links))
			return leave(p, links, NULL);
		l = binop(p, at, op, l, parse_concat(p));
	}
}

static vd_jnode *parse_compare(parser *p)
{
	const vd_jtok *at = cur(p);
	vd_jnode *first = parse_math1(p), *nd;
	nvec ops = { 0 };

	if (!first)
		return NULL;
	for (;;) {
		const vd_jtok *t = cur(p);
		vd_jnode *operand;
		int op;

		if (is_op(t, "=="))
			op = VD_JOP_EQ;
		else if (is_op(t, "!="))
			op = VD_JOP_NE;
		else if (is_op(t, "<"))
			op = VD_JOP_LT;
		else if (is_op(t, "<="))
			op = VD_JOP_LE;
		else if (is_op(t, ">"))
			op = VD_JOP_GT;
		else if (is_op(t, ">="))
			op = VD_JOP_GE;
		else if (is_name(t, "in"))
			op = VD_JOP_IN;
		else if (is_name(t, "not") && is_name(look(p), "in"))
			op = VD_JOP_NOTIN;
		else
			break;
		advance(p);
		if (op == VD_JOP_NOTIN)
			advance(p);
		if (!(operand = node(p, VD_JN_OPERAND, t)))
			return NULL;
		operand->op = op;
		if (!(operand->a = parse_math1(p)) || nvec_push(p, &ops, operand))
			return NULL;
	}
	if (!ops.n)
		return first;
	if (!(nd = node(p, VD_JN_COMPARE, at)))
		return NULL;
	nd->a = first;
	nd->kids = ops.p;
	nd->nkids = ops.n;
	return nd;
}

static vd_jnode *parse_not(parser *p)
{
	if (is_name(cur(p), "not")) {
		vd_jnode *nd = node(p, VD_JN_NOT, cur(p));
		bool ok;

		advance(p);
		if (!nd || !enter(p)) {
			p->depth--;
			return NULL;
		}
		ok = (nd->a = parse_not(p)) != NULL;
		p->depth--;
		return ok ? nd : NULL;
	}
	return parse_compare(p);
}

static vd_jnode *parse_and(parser *p)
{
	vd_jnode *l = parse_not(p);
	int links = 0;

	while (l && is_name(cur(p), "and")) {
		vd_jnode *nd = node(p, VD_JN_AND, cur(p));

		advance(p);
		if (!nd || !link(p, &links) || !(nd->b = parse_not(p)))
			return leave(p, links, NULL);
		nd->a = l;
		l = nd;
	}
	return leave(p, links, l);
}

static vd_jnode *parse_or(parser *p)
{
	vd_jnode *l = parse_and(p);
	int links = 0;

	while (l && is_name(cur(p), "or")) {
		vd_jnode *nd = node(p, VD_JN_OR, cur(p));

		advance(p);
		if (!nd || !link(p, &links) || !(nd->b = parse_and(p)))
			return leave(p, links, NULL);
		nd->a = l;
		l = nd;
	}
	return leave(p, links, l);
}

static vd_jnode *parse_condexpr(parser *p)
{
	vd_jnode *e1 = parse_or(p);
	int links = 0;

	while (e1 && is_name(cur(p), "if")) {
		vd_jnode *nd = node(p, VD_JN_CONDEXPR, cur(p));

		advance(p);
		if (!nd || !link(p, &links) || !(nd->a = parse_or(p)))
			return leave(p, links, NULL);
		nd->b = e1;
		if (is_name(cur(p), "else")) {
			advance(p);
			if (!(nd->c = parse_expression(p, true)))
				return leave(p, links, NULL);
		}
		e1 = nd;
	}
	return leave(p, links, e1);
}

static vd_jnode *parse_expression(parser *p, bool with_condexpr)
{
	vd_jnode *nd = NULL;

	if (enter(p))
		nd = with_condexpr ? parse_condexpr(p) : parse_or(p);
	p->depth--;
	return nd;
}

/* ---- statements ---- */

static bool parse_body(parser *p, const char *const *ends, nvec *out);

/* Whether t can be assigned to: a name or a (nested) tuple of names. */
static bool assignable(const vd_jnode *t)
{
	if (t->kind == VD_JN_NAME)
		return true;
	if (t->kind != VD_JN_TUPLE)
		return false;
	for (size_t i = 0; i < t->nkids; i++)
		if (!assignable(t->kids[i]))
			return false;
	return true;
}

/* Target of for/set: a name or a (nested) tuple of names. */
static vd_jnode *parse_target(parser *p, const char *extra_end)
{
	const vd_jtok *at = cur(p);
	vd_jnode *t = parse_tuple(p, true, true, extra_end, false);

	if (!t)
		return NULL;
	if (!assignable(t))
		return fail_at(p, at, "can't assign to %s",
			       t->kind == VD_JN_CONST ? "'const'" : "this target");
	return t;
}

/* `( a, b=default, ... )` of macro and call blocks. */
static bool parse_signature(parser *p, vd_jnode *nd)
{
	nvec defs = { 0 };
	size_t cap = 0;
	bool any_default = false;

	if (!expect_op(p, "("))
		return false;
	while (!is_op(cur(p), ")")) {
		const vd_jtok *name;
		vd_jnode *def = NULL;

		if (nd->nnames && !expect_op(p, ","))
			return false;
		if (!(name = expect_name(p)))
			return false;
		if (is_op(cur(p), "=")) {
			advance(p);
			if (!(def = parse_expression(p, true)))
				return false;
			any_default = true;
		} else if (any_default) {
			fail_at(p, name, "non-default argument follows default argument");
			return false;
		}
		if (names_push(p, &nd->names, &nd->nnames, &cap, name->p) ||
		    nvec_push(p, &defs, def))
			return false;
	}
	advance(p);
	nd->kids2 = defs.p;
	nd->nkids2 = defs.n;
	return true;
}

static const char *const END_IF[] = { "elif", "else", "endif", NULL };
static const char *const END_ENDIF[] = { "endif", NULL };
static const char *const END_FOR[] = { "endfor", "else", NULL };
static const char *const END_ENDFOR[] = { "endfor", NULL };
static const char *const END_SET[] = { "endset", NULL };
static const char *const END_MACRO[] = { "endmacro", NULL };
static const char *const END_CALL[] = { "endcall", NULL };
static const char *const END_FILTER[] = { "endfilter", NULL };
static const char *const END_WITH[] = { "endwith", NULL };
static const char *const END_GEN[] = { "endgeneration", NULL };

/* Body of a block tag: expects the end of the opening tag, then statements
 * up to one of ends; leaves the end tag's name as the current token. */
static bool block_body(parser *p, const char *const *ends, vd_jnode ***kids, size_t *n)
{
	nvec body = { 0 };

	if (!expect_kind(p, VD_JT_BLOCK_END, "end of statement block"))
		return false;
	if (!parse_body(p, ends, &body))
		return false;
	*kids = body.p;
	*n = body.n;
	return true;
}

/* Consume the end tag name that block_body stopped at. */
static void end_tag(parser *p)
{
	advance(p);
}

static vd_jnode *parse_if(parser *p, const vd_jtok *at)
{
	vd_jnode *nd = node(p, VD_JN_IF, at);

	if (!nd || !(nd->a = parse_tuple(p, false, false, NULL, false)) ||
	    !block_body(p, END_IF, &nd->kids, &nd->nkids))
		return NULL;
	if (is_name(cur(p), "elif")) {
		const vd_jtok *elif = cur(p);
		vd_jnode *inner;

		advance(p);
		/* each elif nests one level deeper in the tree */
		inner = enter(p) ? parse_if(p, elif) : NULL;
		p->depth--;
		if (!inner)
			return NULL;
		if (!(nd->kids2 = vd_jarena_alloc(p->a, sizeof(vd_jnode *))))
			return oom(p);
		inner->flags |= VD_JIF_ELIF;
		nd->kids2[0] = inner;
		nd->nkids2 = 1;
		return nd; /* the innermost elif consumed endif */
	}
	if (is_name(cur(p), "else")) {
		advance(p);
		if (!block_body(p, END_ENDIF, &nd->kids2, &nd->nkids2))
			return NULL;
	}
	end_tag(p);
	return nd;
}

static vd_jnode *parse_for(parser *p, const vd_jtok *at)
{
	vd_jnode *nd = node(p, VD_JN_FOR, at);
	bool ok;

	if (!nd || !(nd->a = parse_target(p, "in")))
		return NULL;
	if (!is_name(cur(p), "in"))
		return fail_at(p, cur(p), "expected token 'in'");
	advance(p);
	if (!(nd->b = parse_tuple(p, false, false, "recursive", false)))
		return NULL;
	if (is_name(cur(p), "if")) {
		advance(p);
		if (!(nd->c = parse_expression(p, true)))
			return NULL;
	}
	if (is_name(cur(p), "recursive"))
		return fail_at(p, cur(p), "recursive for loops are not supported");
	p->loop_depth++;
	ok = block_body(p, END_FOR, &nd->kids, &nd->nkids);
	p->loop_depth--;
	if (!ok)
		return NULL;
	if (is_name(cur(p), "else")) {
		/* break/continue in the else branch act on an outer loop */
		advance(p);
		if (!block_body(p, END_ENDFOR, &nd->kids2, &nd->nkids2))
			return NULL;
	}
	end_tag(p);
	return nd;
}

static vd_jnode *parse_set(parser *p, const vd_jtok *at)
{
	vd_jnode *nd = node(p, VD_JN_SET, at);

	if (!nd)
		return NULL;
	if (cur(p)->kind == VD_JT_NAME && is_op(look(p), ".")) {
		const vd_jtok *ns = cur(p), *attr;

		advance(p);
		advance(p);
		if (!(attr = expect_name(p)) || !(nd->a = node(p, VD_JN_NSREF, ns)))
			return NULL;
		nd->a->str = ns->p;
		nd->a->str2 = attr->p;
	} else if (!(nd->a = parse_target(p, NULL))) {
		return NULL;
	}
	if (is_op(cur(p), "=")) {
		advance(p);
		if (!(nd->b = parse_tuple(p, false, true, NULL, false)))
			return NULL;
		return nd;
	}
	nd->kind = VD_JN_SETBLOCK;
	if (is_op(cur(p), "|")) {
		int links = 0;

		if (!(nd->c = parse_filter(p, NULL, false, &links)))
			return NULL;
		leave(p, links, NULL);
	}
	if (!block_body(p, END_SET, &nd->kids, &nd->nkids))
		return NULL;
	end_tag(p);
	return nd;
}

/* Macro and call-block bodies: loops outside do not reach in. */
static bool macro_body(parser *p, vd_jnode *nd, const char *const *ends)
{
	vd_jnode *outer = p->macro;
	int depth = p->loop_depth;
	bool ok;

	p->macro = nd;
	p->loop_depth = 0;
	ok = block_body(p, ends, &nd->kids, &nd->nkids);
	p->macro = outer;
	p->loop_depth = depth;
	if (ok)
		end_tag(p);
	return ok;
}

static vd_jnode *parse_macro(parser *p, const vd_jtok *at)
{
	vd_jnode *nd = node(p, VD_JN_MACRO, at);
	const vd_jtok *name;

	if (!nd || !(name = expect_name(p)))
		return NULL;
	nd->str = name->p;
	if (!parse_signature(p, nd) || !macro_body(p, nd, END_MACRO))
		return NULL;
	return nd;
}

static vd_jnode *parse_call_block(parser *p, const vd_jtok *at)
{
	vd_jnode *nd = node(p, VD_JN_CALLBLOCK, at);

	if (!nd)
		return NULL;
	nd->str = "caller";
	if (is_op(cur(p), "(") && !parse_signature(p, nd))
		return NULL;
	if (!(nd->a = parse_expression(p, true)))
		return NULL;
	if (nd->a->kind != VD_JN_CALL)
		return fail_at(p, at, "expected call");
	if (!macro_body(p, nd, END_CALL))
		return NULL;
	return nd;
}

static vd_jnode *parse_with(parser *p, const vd_jtok *at)
{
	vd_jnode *nd = node(p, VD_JN_WITH, at);
	nvec vals = { 0 };
	size_t cap = 0;

	if (!nd)
		return NULL;
	while (cur(p)->kind != VD_JT_BLOCK_END) {
		const vd_jtok *name;
		vd_jnode *v;

		if (nd->nnames && !expect_op(p, ","))
			return NULL;
		if (!(name = expect_name(p)) || !expect_op(p, "=") ||
		    !(v = parse_expression(p, true)) ||
		    names_push(p, &nd->names, &nd->nnames, &cap, name->p) || nvec_push(p, &vals, v))
			return NULL;
	}
	nd->kids2 = vals.p;
	nd->nkids2 = vals.n;
	if (!block_body(p, END_WITH, &nd->kids, &nd->nkids))
		return NULL;
	end_tag(p);
	return nd;
}

static vd_jnode *parse_statement_inner(parser *p);

static vd_jnode *parse_statement(parser *p)
{
	vd_jnode *nd = enter(p) ? parse_statement_inner(p) : NULL;

	p->depth--;
	return nd;
}

static vd_jnode *parse_statement_inner(parser *p)
{
	const vd_jtok *t = cur(p);
	char buf[64];
	vd_jnode *nd = NULL;
	bool pushed = false;

	if (t->kind != VD_JT_NAME)
		return fail_at(p, t, "tag name expected, got '%s'", describe(t, buf, sizeof(buf)));
	if (p->ntags < (int)(sizeof(p->tags) / sizeof(p->tags[0]))) {
		p->tags[p->ntags++] = t->p;
		pushed = true;
	}
	advance(p);
	if (!strcmp(t->p, "if")) {
		nd = parse_if(p, t);
	} else if (!strcmp(t->p, "for")) {
		nd = parse_for(p, t);
	} else if (!strcmp(t->p, "set")) {
		nd = parse_set(p, t);
	} else if (!strcmp(t->p, "macro")) {
		nd = parse_macro(p, t);
	} else if (!strcmp(t->p, "call")) {
		nd = parse_call_block(p, t);
	} else if (!strcmp(t->p, "filter")) {
		int links = 0;

		if ((nd = node(p, VD_JN_FILTERBLOCK, t)) &&
		    (nd->c = parse_filter(p, NULL, true, &links)) &&
		    leave(p, links, nd) && block_body(p, END_FILTER, &nd->kids, &nd->nkids))
			end_tag(p);
		else
			nd = NULL;
	} else if (!strcmp(t->p, "with")) {
		nd = parse_with(p, t);
	} else if (!strcmp(t->p, "print")) {
		if ((nd = node(p, VD_JN_OUTPUT, t)) && !(nd->a = parse_expression(p, true)))
			nd = NULL;
	} else if (!strcmp(t->p, "break") || !strcmp(t->p, "continue")) {
		if (p->loop_depth == 0)
			fail_at(p, t, "'%s' outside of a loop", t->p);
		else
			nd = node(p, t->p[0] == 'b' ? VD_JN_BREAK : VD_JN_CONTINUE, t);
	} else if (!strcmp(t->p, "generation")) {
		if ((nd = node(p, VD_JN_GENERATION, t)) &&
		    block_body(p, END_GEN, &nd->kids, &nd->nkids))
			end_tag(p);
		else
			nd = NULL;
	} else if (!strcmp(t->p, "block") || !strcmp(t->p, "extends") ||
		   !strcmp(t->p, "include") || !strcmp(t->p, "import") ||
		   !strcmp(t->p, "from") || !strcmp(t->p, "autoescape")) {
		fail_at(p, t, "tag '%s' is not supported in chat templates", t->p);
	} else {
		if (pushed)
			p->ntags--;
		pushed = false;
		if (p->ends) {
			char want[160] = "";

			for (int i = 0; p->ends[i]; i++) {
				size_t l = strlen(want);

				snprintf(want + l, sizeof(want) - l, "%s'%s'", i ? " or " : "", p->ends[i]);
			}
			fail_at(p, t, "Encountered unknown tag '%s'. Jinja was looking for the following "
				"tags: %s. The innermost block that needs to be closed is '%s'.",
				t->p, want, p->ntags ? p->tags[p->ntags - 1] : "?");
		} else {
			fail_at(p, t, "Encountered unknown tag '%s'.", t->p);
		}
	}
	if (pushed)
		p->ntags--;
	if (!nd)
		return NULL;
	if (!expect_kind(p, VD_JT_BLOCK_END, "end of statement block"))
		return NULL;
	return nd;
}

/* Statements until one of ends (NULL: end of template). Stops with the end
 * tag's name as the current token. */
static bool parse_body(parser *p, const char *const *ends, nvec *out)
{
	const char *const *outer = p->ends;

	p->ends = ends;
	for (;;) {
		const vd_jtok *t = cur(p);
		vd_jnode *nd;

		if (t->kind == VD_JT_EOF) {
			if (ends) {
				char want[160] = "";

				for (int i = 0; ends[i]; i++) {
					size_t l = strlen(want);

					snprintf(want + l, sizeof(want) - l, "%s'%s'", i ? " or " : "",
						 ends[i]);
				}
				fail_at(p, t, "Unexpected end of template. Jinja was looking for the "
					"following tags: %s. The innermost block that needs to be "
					"closed is '%s'.", want, p->ntags ? p->tags[p->ntags - 1] : "?");
				return false;
			}
			break;
		}
		if (t->kind == VD_JT_DATA) {
			if (!(nd = node(p, VD_JN_DATA, t)))
				return false;
			nd->str = t->p;
			nd->slen = t->n;
			advance(p);
		} else if (t->kind == VD_JT_VAR_BEGIN) {
			advance(p);
			if (!(nd = node(p, VD_JN_OUTPUT, t)) ||
			    !(nd->a = parse_tuple(p, false, true, NULL, false)) ||
			    !expect_kind(p, VD_JT_VAR_END, "end of print statement"))
				return false;
		} else if (t->kind == VD_JT_BLOCK_BEGIN) {
			advance(p);
			if (ends && cur(p)->kind == VD_JT_NAME) {
				for (int i = 0; ends[i]; i++)
					if (!strcmp(cur(p)->p, ends[i])) {
						p->ends = outer;
						return true;
					}
			}
			if (!(nd = parse_statement(p)))
				return false;
		} else {
			char buf[64];

			fail_at(p, t, "unexpected '%s'", describe(t, buf, sizeof(buf)));
			return false;
		}
		if (nvec_push(p, out, nd))
			return false;
	}
	p->ends = outer;
	return true;
}

/* Unknown filters and tests fail the compile, as Jinja2's code generator
 * reports them, except inside if-statements and conditional expressions
 * (its "soft" frames), where they fail only when evaluated. */
static bool check_names(parser *p, const vd_jnode *n, bool soft);

static bool check_list(parser *p, vd_jnode *const *kids, size_t n, bool soft)
{
	for (size_t i = 0; i < n; i++)
		if (kids[i] && !check_names(p, kids[i], soft))
			return false;
	return true;
}

static bool check_names(parser *p, const vd_jnode *n, bool soft)
{
	if (!n)
		return true;
	switch (n->kind) {
	case VD_JN_IF:
	case VD_JN_CONDEXPR:
		soft = true;
		break;
	case VD_JN_FILTER:
	case VD_JN_TEST:
		if (!n->builtin && !soft) {
			vd_jtok at = { .line = n->line, .col = n->col };

			fail_at(p, &at, "No %s named '%s'.", n->kind == VD_JN_FILTER ? "filter" : "test",
				n->str);
			return false;
		}
		break;
	case VD_JN_FOR:
		/* the iterable is evaluated in the enclosing frame, the rest in
		 * the loop's own */
		return check_names(p, n->b, soft) && check_names(p, n->c, false) &&
		       check_list(p, n->kids, n->nkids, false) &&
		       check_list(p, n->kids2, n->nkids2, false);
	case VD_JN_CALLBLOCK:
		return check_names(p, n->a, soft) && check_list(p, n->kids, n->nkids, false) &&
		       check_list(p, n->kids2, n->nkids2, false);
	case VD_JN_WITH:
		return check_list(p, n->kids2, n->nkids2, soft) &&
		       check_list(p, n->kids, n->nkids, false);
	case VD_JN_MACRO:
	case VD_JN_SETBLOCK:
	case VD_JN_FILTERBLOCK:
	case VD_JN_GENERATION:
		soft = false;
		break;
	default:
		break;
	}
	return check_names(p, n->a, soft) && check_names(p, n->b, soft) &&
	       check_names(p, n->c, soft) && check_list(p, n->kids, n->nkids, soft) &&
	       check_list(p, n->kids2, n->nkids2, soft);
}

vd_status vd_jinja_parse(vd_jarena *a, const vd_jtok *toks, size_t ntoks,
			 vd_jnode ***body, size_t *nbody)
{
	parser p = { .a = a, .t = toks, .n = ntoks };
	nvec out = { 0 };

	if (!parse_body(&p, NULL, &out) || p.err || !check_list(&p, out.p, out.n, false))
		return p.err ? p.err : vd_errorf(VD_ERR_INTERNAL, "chat template: parser failed");
	*body = out.p;
	*nbody = out.n;
	return VD_OK;
}
