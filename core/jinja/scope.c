/* Jinja2's compile-time symbol analysis (jinja2/idtracking.py, 3.1). The
 * evaluator's dynamic scope chain agrees with Jinja2 except for names a frame
 * assigns before any use that no enclosing frame knows: Jinja2 starts those
 * undefined, so a nested loop or macro reading one before the assignment
 * sees Undefined even when the context has that name. This pass finds them
 * (per frame-creating node) for the evaluator to bind at frame entry. */
#include <string.h>

#include "core/jinja/internal.h"

enum { K_PARAM, K_RESOLVE, K_ALIAS, K_UNDEF };

/* The Symbols of one frame (refs and their load kind, plus stores). */
typedef struct syms {
	const struct syms *parent;
	const char **names;
	int *kinds;
	size_t n, cap;
	const char **stores;
	size_t nstores, scap;
} syms;

typedef struct analyzer {
	vd_jarena *a;
	bool oom;
} analyzer;

static long find_here(const syms *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->names[i], name))
			return (long)i;
	return -1;
}

static bool find_ref(const syms *s, const char *name)
{
	for (; s; s = s->parent)
		if (find_here(s, name) >= 0)
			return true;
	return false;
}

static bool is_stored(const syms *s, const char *name)
{
	for (size_t i = 0; i < s->nstores; i++)
		if (!strcmp(s->stores[i], name))
			return true;
	return false;
}

/* Grow an arena array of elem-sized items to hold one more. */
static void *grow(analyzer *an, void *p, size_t n, size_t *cap, size_t elem)
{
	void *q;

	if (n < *cap)
		return p;
	*cap = *cap ? 2 * *cap : 8;
	q = vd_jarena_alloc(an->a, *cap * elem);
	if (!q) {
		an->oom = true;
		return NULL;
	}
	if (n)
		memcpy(q, p, n * elem);
	return q;
}

static void define(analyzer *an, syms *s, const char *name, int kind)
{
	long i = find_here(s, name);
	const char **names;
	int *kinds;
	size_t cap = s->cap;

	if (i >= 0) {
		s->kinds[i] = kind;
		return;
	}
	names = grow(an, (void *)s->names, s->n, &cap, sizeof(*names));
	cap = s->cap;
	kinds = grow(an, s->kinds, s->n, &cap, sizeof(*kinds));
	if (!names || !kinds)
		return;
	s->names = names;
	s->kinds = kinds;
	s->cap = cap;
	s->names[s->n] = name;
	s->kinds[s->n] = kind;
	s->n++;
}

static void add_store(analyzer *an, syms *s, const char *name)
{
	const char **stores;

	if (is_stored(s, name))
		return;
	stores = grow(an, (void *)s->stores, s->nstores, &s->scap, sizeof(*stores));
	if (!stores)
		return;
	s->stores = stores;
	s->stores[s->nstores++] = name;
}

static void load(analyzer *an, syms *s, const char *name)
{
	if (!find_ref(s, name))
		define(an, s, name, K_RESOLVE);
}

static void store(analyzer *an, syms *s, const char *name)
{
	add_store(an, s, name);
	if (find_here(s, name) >= 0)
		return;
	define(an, s, name, s->parent && find_ref(s->parent, name) ? K_ALIAS : K_UNDEF);
}

static void declare_param(analyzer *an, syms *s, const char *name)
{
	add_store(an, s, name);
	define(an, s, name, K_PARAM);
}

static syms copy_syms(analyzer *an, const syms *s)
{
	syms c = { .parent = s->parent };

	for (size_t i = 0; i < s->n; i++)
		define(an, &c, s->names[i], s->kinds[i]);
	for (size_t i = 0; i < s->nstores; i++)
		add_store(an, &c, s->stores[i]);
	return c;
}

/* Symbols.branch_update: merge the branches of an if; a name assigned in
 * only some of them starts from the context (or the enclosing frame). */
static void branch_update(analyzer *an, syms *s, const syms *br, size_t nb)
{
	const char *counted[256];
	int counts[256];
	size_t nc = 0;

	for (size_t b = 0; b < nb; b++)
		for (size_t i = 0; i < br[b].nstores; i++) {
			const char *name = br[b].stores[i];
			size_t k;

			if (is_stored(s, name))
				continue;
			for (k = 0; k < nc && strcmp(counted[k], name); k++)
				;
			if (k == nc) {
				if (nc == sizeof(counted) / sizeof(counted[0]))
					continue; /* beyond any real template */
				counted[nc] = name;
				counts[nc++] = 0;
			}
			counts[k]++;
		}
	for (size_t b = 0; b < nb; b++) {
		for (size_t i = 0; i < br[b].n; i++)
			define(an, s, br[b].names[i], br[b].kinds[i]);
		for (size_t i = 0; i < br[b].nstores; i++)
			add_store(an, s, br[b].stores[i]);
	}
	for (size_t k = 0; k < nc; k++) {
		if (counts[k] == (int)nb)
			continue;
		define(an, s, counted[k],
		       s->parent && find_ref(s->parent, counted[k]) ? K_ALIAS : K_RESOLVE);
	}
}

/* ---- FrameSymbolVisitor ---- */

static void visit_expr(analyzer *an, syms *s, const vd_jnode *n)
{
	if (!n)
		return;
	if (n->kind == VD_JN_NAME) {
		load(an, s, n->str);
		return;
	}
	visit_expr(an, s, n->a);
	visit_expr(an, s, n->b);
	visit_expr(an, s, n->c);
	for (size_t i = 0; i < n->nkids; i++)
		visit_expr(an, s, n->kids[i]);
	for (size_t i = 0; i < n->nkids2; i++)
		visit_expr(an, s, n->kids2[i]);
}

static void visit_target(analyzer *an, syms *s, const vd_jnode *t)
{
	if (t->kind == VD_JN_NAME) {
		store(an, s, t->str);
	} else if (t->kind == VD_JN_NSREF) {
		load(an, s, t->str);
	} else {
		for (size_t i = 0; i < t->nkids; i++)
			visit_target(an, s, t->kids[i]);
	}
}

static void visit_stmts(analyzer *an, syms *s, vd_jnode *const *body, size_t n);

/* An IF as Jinja2 holds it: test, body, the elif nodes (each with test and
 * body only), and the final else. My tree nests each elif in its parent's
 * else list. */
static void visit_if(analyzer *an, syms *s, const vd_jnode *n, bool elif_only)
{
	syms br[3];
	const vd_jnode *cur = n;

	visit_expr(an, s, n->a);
	br[0] = copy_syms(an, s);
	visit_stmts(an, &br[0], n->kids, n->nkids);
	br[1] = copy_syms(an, s);
	br[2] = copy_syms(an, s);
	if (!elif_only) {
		while (cur->nkids2 == 1 && (cur->kids2[0]->flags & VD_JIF_ELIF)) {
			cur = cur->kids2[0];
			visit_if(an, &br[1], cur, true);
		}
		visit_stmts(an, &br[2], cur->kids2, cur->nkids2);
	}
	branch_update(an, s, br, 3);
}

static void visit_stmt(analyzer *an, syms *s, const vd_jnode *n)
{
	switch (n->kind) {
	case VD_JN_OUTPUT:
		visit_expr(an, s, n->a);
		break;
	case VD_JN_IF:
		visit_if(an, s, n, false);
		break;
	case VD_JN_FOR:
		visit_expr(an, s, n->b); /* the body is a frame of its own */
		break;
	case VD_JN_SET:
		visit_expr(an, s, n->b);
		visit_target(an, s, n->a);
		break;
	case VD_JN_SETBLOCK:
		visit_target(an, s, n->a);
		break;
	case VD_JN_MACRO:
		store(an, s, n->str);
		break;
	case VD_JN_CALLBLOCK:
		visit_expr(an, s, n->a);
		break;
	case VD_JN_FILTERBLOCK:
		visit_expr(an, s, n->c);
		break;
	case VD_JN_WITH:
		for (size_t i = 0; i < n->nkids2; i++)
			visit_expr(an, s, n->kids2[i]);
		break;
	default:
		break;
	}
}

static void visit_stmts(analyzer *an, syms *s, vd_jnode *const *body, size_t n)
{
	for (size_t i = 0; i < n; i++)
		visit_stmt(an, s, body[i]);
}

/* ---- frames ---- */

static void frames_in(analyzer *an, const syms *s, vd_jnode *const *body, size_t n);

/* The names a frame's symbols leave undefined on entry. */
static void undef_set(analyzer *an, const syms *s, vd_jframe *out)
{
	size_t k = 0;

	for (size_t i = 0; i < s->n; i++)
		k += s->kinds[i] == K_UNDEF;
	out->n = 0;
	if (!k)
		return;
	out->names = vd_jarena_alloc(an->a, k * sizeof(*out->names));
	if (!out->names) {
		an->oom = true;
		return;
	}
	for (size_t i = 0; i < s->n; i++)
		if (s->kinds[i] == K_UNDEF)
			out->names[out->n++] = s->names[i];
}

static void params_of(analyzer *an, syms *s, const vd_jnode *t)
{
	if (t->kind == VD_JN_NAME) {
		declare_param(an, s, t->str);
		return;
	}
	for (size_t i = 0; i < t->nkids; i++)
		params_of(an, s, t->kids[i]);
}

/* Analyze one frame (params first, then the body), record its undefined
 * set, then the frames nested in it. */
static void frame(analyzer *an, const syms *parent, const vd_jnode *params,
		  const char *const *pnames, size_t npnames, vd_jnode *const *defaults,
		  size_t ndefaults, vd_jnode *const *body, size_t n, vd_jframe *out)
{
	syms s = { .parent = parent };

	if (params)
		params_of(an, &s, params);
	for (size_t i = 0; i < npnames; i++)
		declare_param(an, &s, pnames[i]);
	for (size_t i = 0; i < ndefaults; i++)
		visit_expr(an, &s, defaults[i]);
	visit_stmts(an, &s, body, n);
	undef_set(an, &s, out);
	frames_in(an, &s, body, n);
}

static void frames_in(analyzer *an, const syms *s, vd_jnode *const *body, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		vd_jnode *nd = body[i];

		switch (nd->kind) {
		case VD_JN_IF:
			frames_in(an, s, nd->kids, nd->nkids);
			frames_in(an, s, nd->kids2, nd->nkids2);
			break;
		case VD_JN_FOR:
			frame(an, s, nd->a, NULL, 0, NULL, 0, nd->kids, nd->nkids, &nd->frame);
			frame(an, s, NULL, NULL, 0, NULL, 0, nd->kids2, nd->nkids2, &nd->frame2);
			break;
		case VD_JN_MACRO:
		case VD_JN_CALLBLOCK:
			frame(an, s, NULL, nd->names, nd->nnames, nd->kids2, nd->nkids2, nd->kids,
			      nd->nkids, &nd->frame);
			break;
		case VD_JN_WITH:
			frame(an, s, NULL, nd->names, nd->nnames, NULL, 0, nd->kids, nd->nkids,
			      &nd->frame);
			break;
		case VD_JN_SETBLOCK:
		case VD_JN_FILTERBLOCK:
		case VD_JN_GENERATION:
			frame(an, s, NULL, NULL, 0, NULL, 0, nd->kids, nd->nkids, &nd->frame);
			break;
		default:
			break;
		}
	}
}

vd_status vd_jinja_analyze(vd_jarena *a, vd_jnode *const *body, size_t n, vd_jframe *root)
{
	analyzer an = { .a = a };

	frame(&an, NULL, NULL, NULL, 0, NULL, 0, body, n, root);
	if (an.oom)
		return vd_errorf(VD_ERR_NOMEM, "chat template: out of memory while compiling");
	return VD_OK;
}
