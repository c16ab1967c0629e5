/* Internal interface of the Jinja2 engine behind core/jinja/chat_template.c:
 * values, arenas, the syntax tree, and the entry points of the lexer
 * (lex.c), parser (parse.c), symbol analysis (scope.c),
 * values (value.c), strings (str.c), evaluator (eval.c) and
 * built-ins (builtins.c). Nothing here leaves core/; a compiled tree is
 * immutable, and each render owns the arena its values live in. */
#ifndef VD_JINJA_INTERNAL_H
#define VD_JINJA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vllmd/status.h"

/* ---- arena: every allocation of a compile or a render, freed at once ---- */

typedef struct vd_jarena_chunk vd_jarena_chunk;
typedef struct vd_jarena {
	vd_jarena_chunk *head;
	size_t total; /* bytes held in chunks */
	size_t limit; /* allocation fails past this many bytes (0 = none) */
	bool hit_limit; /* an allocation failed because of limit, not malloc */
} vd_jarena;

/* Zeroed block of n bytes aligned for any type; NULL when malloc fails or
 * the arena would pass its limit. */
void *vd_jarena_alloc(vd_jarena *a, size_t n);
/* The same without the zeroing, for buffers the caller fills. */
void *vd_jarena_alloc_raw(vd_jarena *a, size_t n);
void vd_jarena_free(vd_jarena *a); /* every block at once; a is reusable */
/* Copy of n bytes plus a terminating NUL. */
char *vd_jarena_strndup(vd_jarena *a, const char *s, size_t n);

/* ---- values (Python objects as Jinja2 sees them) ---- */

typedef enum vd_jv_kind {
	VD_JV_MISSING, /* an argument that was not passed (never user visible) */
	VD_JV_UNDEF,   /* jinja2.Undefined; u.undef is the message its use raises */
	VD_JV_NONE,
	VD_JV_BOOL,
	VD_JV_INT,
	VD_JV_FLOAT,
	VD_JV_STR,     /* UTF-8, u.s.p need not be NUL-terminated */
	VD_JV_LIST,    /* list or tuple (u.list->tuple); immutable once built */
	VD_JV_DICT,    /* insertion-ordered; immutable once built */
	VD_JV_NS,      /* namespace(): the one mutable mapping (u.dict) */
	VD_JV_MACRO,
	VD_JV_LOOP,
	VD_JV_METHOD,  /* bound method of a built-in type (u.method) */
	VD_JV_FUNC,    /* global function (u.func: index into the globals table) */
} vd_jv_kind;

typedef struct vd_jlist vd_jlist;
typedef struct vd_jdict vd_jdict;
typedef struct vd_jmacro vd_jmacro;
typedef struct vd_jloop vd_jloop;
typedef struct vd_jmethod vd_jmethod;

typedef struct vd_jv {
	vd_jv_kind kind;
	union {
		bool b;
		int64_t i;
		double f;
		struct { const char *p; size_t n; } s;
		vd_jlist *list;
		vd_jdict *dict;
		vd_jmacro *macro;
		vd_jloop *loop;
		vd_jmethod *method;
		int func;
		const char *undef; /* NUL-terminated */
	} u;
} vd_jv;

struct vd_jlist { vd_jv *items; size_t n, cap; bool tuple; };
struct vd_jdict { vd_jv *keys, *vals; size_t n, cap; };
struct vd_jloop {
	const vd_jlist *items; /* after the loop's `if` filter */
	size_t index0;
};
struct vd_jmethod { vd_jv self; int id; /* index into the method table */ };

/* Scalar values, and containers allocated in the arena; allocating ones
 * return NULL or -1 when it is full (the caller reports VD_ERR_NOMEM/LIMIT
 * through vd_jinja_oom()). A list has room for cap items, n of them used. */
vd_jv vd_jv_none(void);
vd_jv vd_jv_bool(bool b);
vd_jv vd_jv_int(int64_t i);
vd_jv vd_jv_float(double f);
vd_jv vd_jv_str(const char *p, size_t n); /* borrows p */
vd_jlist *vd_jlist_new(vd_jarena *a, size_t cap);
int vd_jlist_push(vd_jarena *a, vd_jlist *l, vd_jv v); /* grows l as needed */
vd_jdict *vd_jdict_new(vd_jarena *a, size_t cap);
/* Insert or replace (keeping the original position), keys compared with
 * Python equality. */
int vd_jdict_set(vd_jarena *a, vd_jdict *d, vd_jv key, vd_jv val);
/* Index of key or -1. */
long vd_jdict_find(const vd_jdict *d, vd_jv key);
long vd_jdict_find_str(const vd_jdict *d, const char *key, size_t n);

/* Growable byte buffer in the arena (the old block is left behind when it
 * grows); p stays NUL-terminated after every append, which returns -1 when
 * the arena is full. */
typedef struct vd_jbuf { char *p; size_t n, cap; } vd_jbuf;
int vd_jbuf_put(vd_jarena *a, vd_jbuf *b, const char *s, size_t n);
int vd_jbuf_puts(vd_jarena *a, vd_jbuf *b, const char *s);
int vd_jbuf_putc(vd_jarena *a, vd_jbuf *b, char c);

/* Python semantics on values. */
bool vd_jv_truthy(vd_jv v);
bool vd_jv_eq(vd_jv a, vd_jv b);
bool vd_jv_is_number(vd_jv v);        /* bool, int or float (numbers.Number) */
double vd_jv_as_double(vd_jv v);      /* for numbers */
const char *vd_jv_type_name(vd_jv v); /* Python type name: 'str', 'int', ... */
/* Three-way ordering of a and b as Python's `<` would; 1 (and an error
 * message in *err) when the types are not orderable. */
int vd_jv_cmp(vd_jv a, vd_jv b, int *out, const char **err);
/* str(v) and repr(v) appended to b. */
int vd_jv_str_to(vd_jarena *a, vd_jbuf *b, vd_jv v);
int vd_jv_repr_to(vd_jarena *a, vd_jbuf *b, vd_jv v);
/* str(v) as a string value (strings are returned as they are). */
int vd_jv_to_str(vd_jarena *a, vd_jv v, vd_jv *out);
/* json.dumps(v, ensure_ascii, indent, separators, sort_keys) appended to b.
 * indent NULL = compact; item_sep/key_sep NULL = Python's defaults. Returns
 * 0, -1 for a full arena, or 1 with a TypeError message in *err. */
int vd_jv_json_to(vd_jarena *a, vd_jbuf *b, vd_jv v, bool ensure_ascii,
		  const char *indent, const char *item_sep, const char *key_sep,
		  bool sort_keys, const char **err);

/* UTF-8 helpers: strings are sequences of code points (Python str). */
size_t vd_utf8_len(const char *p, size_t n);     /* code points */
/* Decode one code point at p (n > 0 bytes left); invalid bytes decode as
 * themselves (one byte). Sets *len. */
int32_t vd_utf8_decode(const char *p, size_t n, size_t *len);
int vd_utf8_encode(int32_t cp, char *out);       /* bytes written (1-4) */
bool vd_py_isspace(int32_t cp);                  /* str.isspace() */

/* ---- syntax tree ---- */

typedef enum vd_jnode_kind {
	/* statements */
	VD_JN_DATA, VD_JN_OUTPUT, VD_JN_IF, VD_JN_FOR, VD_JN_SET, VD_JN_SETBLOCK,
	VD_JN_MACRO, VD_JN_CALLBLOCK, VD_JN_FILTERBLOCK, VD_JN_WITH,
	VD_JN_BREAK, VD_JN_CONTINUE, VD_JN_GENERATION,
	/* expressions */
	VD_JN_CONST, VD_JN_NAME, VD_JN_NSREF, VD_JN_GETATTR, VD_JN_GETITEM,
	VD_JN_SLICE, VD_JN_CALL, VD_JN_FILTER, VD_JN_TEST, VD_JN_NOT, VD_JN_NEG,
	VD_JN_POS, VD_JN_BINOP, VD_JN_AND, VD_JN_OR, VD_JN_CONCAT, VD_JN_COMPARE,
	VD_JN_OPERAND, VD_JN_CONDEXPR, VD_JN_LIST, VD_JN_TUPLE, VD_JN_DICT,
} vd_jnode_kind;

/* Binary and comparison operators (vd_jnode.op). */
enum {
	VD_JOP_ADD, VD_JOP_SUB, VD_JOP_MUL, VD_JOP_DIV, VD_JOP_FLOORDIV,
	VD_JOP_MOD, VD_JOP_POW,
	VD_JOP_EQ, VD_JOP_NE, VD_JOP_LT, VD_JOP_LE, VD_JOP_GT, VD_JOP_GE,
	VD_JOP_IN, VD_JOP_NOTIN,
};

/* Macro flags (vd_jnode.flags on VD_JN_MACRO / VD_JN_CALLBLOCK): the body
 * uses `varargs` / `kwargs`, so the macro accepts extra arguments. */
enum { VD_JMACRO_VARARGS = 1, VD_JMACRO_KWARGS = 2 };

typedef struct vd_jbuiltin vd_jbuiltin;
typedef struct vd_jnode vd_jnode;

/* Names a frame binds to Undefined when it is entered: those it assigns
 * before any use and that no enclosing frame knows (Jinja2's
 * VAR_LOAD_UNDEFINED), so that reads in nested loops and macros before the
 * assignment see Undefined rather than a context variable of that name. */
typedef struct vd_jframe {
	const char **names;
	size_t n;
} vd_jframe;

/* IF node flag: the node is an {% elif %} branch of the IF holding it. */
#define VD_JIF_ELIF 1

/* One node; which fields a kind uses:
 *  DATA str/slen | OUTPUT a | IF a, kids (body), kids2 (else)
 *  FOR a target, b iter, c filter or NULL, kids body, kids2 else
 *  SET a target (NAME, TUPLE of targets, NSREF), b value
 *  SETBLOCK a target, c filter chain or NULL, kids body
 *  MACRO str name, names/nnames params, kids2 defaults (nnames, NULL = none),
 *        kids body | CALLBLOCK as MACRO plus a the call expression
 *  FILTERBLOCK c filter chain, kids body | WITH names, kids2 values, kids body
 *  GENERATION kids body
 *  CONST cval | NAME str | NSREF str name, str2 attribute | GETATTR a, str
 *  GETITEM a, b | SLICE a start, b stop, c step (each may be NULL)
 *  CALL a callee, kids args, names/kids2 keyword args
 *  FILTER/TEST a input (NULL: the captured body of a block), str name,
 *        builtin, kids args, names/kids2 keyword args
 *  NOT/NEG/POS a | BINOP op, a, b | AND/OR a, b | CONCAT kids
 *  COMPARE a, kids (OPERAND: op, a) | CONDEXPR a test, b then, c else or NULL
 *  LIST/TUPLE kids | DICT kids keys, kids2 values */
struct vd_jnode {
	vd_jnode_kind kind;
	int op;
	int flags;
	int line, col;
	const char *str, *str2; /* NUL-terminated, in the template's arena */
	size_t slen;
	vd_jv cval;
	vd_jnode *a, *b, *c;
	vd_jnode **kids, **kids2;
	size_t nkids, nkids2;
	const char **names;
	size_t nnames;
	const vd_jbuiltin *builtin;
	vd_jframe frame;  /* FOR body, MACRO, CALLBLOCK, SETBLOCK, FILTERBLOCK,
			   * WITH, GENERATION */
	vd_jframe frame2; /* FOR else */
};

/* ---- lexer and parser ---- */

typedef enum vd_jtok_kind {
	VD_JT_EOF, VD_JT_DATA, VD_JT_VAR_BEGIN, VD_JT_VAR_END, VD_JT_BLOCK_BEGIN,
	VD_JT_BLOCK_END, VD_JT_NAME, VD_JT_STRING, VD_JT_INT, VD_JT_FLOAT,
	VD_JT_OP,
} vd_jtok_kind;

typedef struct vd_jtok {
	vd_jtok_kind kind;
	int line, col;
	const char *p; /* DATA/NAME/STRING (unescaped)/OP text, NUL-terminated */
	size_t n;
	int64_t i;
	double f;
} vd_jtok;

/* Tokenize src with Jinja2's lexer rules under trim_blocks and lstrip_blocks
 * (newlines normalized to \n, one trailing newline dropped). Tokens and their
 * text live in arena a. VD_ERR_FORMAT with line and column on bad input. */
vd_status vd_jinja_lex(vd_jarena *a, const char *src, size_t len,
		       vd_jtok **toks, size_t *ntoks);
/* Parse tokens into a statement list (arena a). Unknown tags are syntax
 * errors; so are unknown filters and tests outside if-statements and inline
 * if-expressions (inside them they fail when evaluated), as in Jinja2. */
vd_status vd_jinja_parse(vd_jarena *a, const vd_jtok *toks, size_t ntoks,
			 vd_jnode ***body, size_t *nbody);

/* Jinja2's symbol analysis (jinja2/idtracking.py): fill the vd_jframe sets
 * of every frame-creating node and *root for the template body. */
vd_status vd_jinja_analyze(vd_jarena *a, vd_jnode *const *body, size_t n, vd_jframe *root);

/* ---- built-ins ---- */

struct vd_jrender;
/* argv holds one slot per declared parameter (VD_JV_MISSING when not
 * passed) and, for variadic built-ins, a tuple of the extra positionals last. */
typedef int (*vd_jbuiltin_fn)(struct vd_jrender *r, const vd_jnode *at,
			      vd_jv *argv, vd_jv *out);

#define VD_JBUILTIN_MAXARGS 6
struct vd_jbuiltin {
	const char *name;
	vd_jbuiltin_fn fn;
	const char *params[VD_JBUILTIN_MAXARGS]; /* argv[0] is the input/self */
	bool varargs;
	bool kwargs; /* accepts any keyword (collected as a dict in the last slot) */
};

/* The filter / test of that name, or NULL. */
const vd_jbuiltin *vd_jinja_filter(const char *name);
const vd_jbuiltin *vd_jinja_test(const char *name);
/* Method `name` of v's type (id for vd_jinja_method_by_id), or NULL when
 * Python's attribute lookup would fail. A method without fn is one the
 * sandbox refuses (list.append, dict.update, ...). */
const vd_jbuiltin *vd_jinja_method(vd_jv self, const char *name, int *id);
const vd_jbuiltin *vd_jinja_method_by_id(int id);
/* Global functions (range, namespace, dict, raise_exception, strftime_now):
 * index of name or -1, and the function at an index. */
int vd_jinja_global_find(const char *name);
const vd_jbuiltin *vd_jinja_global(int id);

/* ---- strings (str.c) ---- */

enum {
	VD_JCASE_UPPER, VD_JCASE_LOWER,
	VD_JCASE_TITLE,      /* str.title() */
	VD_JCASE_CAPITALIZE, /* str.capitalize() */
	VD_JCASE_JTITLE,     /* Jinja's title filter: words split at -, space, ( { [ < */
};
/* Case mapping of str(v) with Python's full (multi-character) mappings. */
int vd_jstr_case(struct vd_jrender *r, vd_jv v, int mode, vd_jv *out);
/* str.strip/lstrip/rstrip: chars MISSING or None strips whitespace. */
int vd_jstr_strip(struct vd_jrender *r, const vd_jnode *at, vd_jv s, vd_jv chars, bool left,
		  bool right, vd_jv *out);
/* str.replace(old, new, count) with count < 0 meaning all. */
int vd_jstr_replace(struct vd_jrender *r, vd_jv s, vd_jv old, vd_jv repl, int64_t count,
		    vd_jv *out);
/* Python's printf-style fmt % args. */
int vd_jstr_percent(struct vd_jrender *r, const vd_jnode *at, vd_jv fmt, vd_jv args,
		    vd_jv *out);
/* str.splitlines() pieces of s (without line ends). */
int vd_jstr_splitlines(struct vd_jrender *r, vd_jv s, vd_jlist **out);

/* ---- evaluator ---- */

typedef struct vd_jscope vd_jscope;

typedef struct vd_jrender {
	vd_jarena arena;
	vd_jbuf *out;   /* where output goes now (captures swap it) */
	int depth;      /* macro call nesting */
	int loop_ctl;   /* pending break (1) / continue (2) */
	vd_status err;  /* status of the error being unwound */
	bool fixed_now; /* strftime_now formats `now` in UTC instead of the clock */
	int64_t now;    /* seconds since the Unix epoch */
} vd_jrender;

/* Record an error at node `at` ("chat template line N: ...") and return -1. */
int vd_jinja_fail(vd_jrender *r, const vd_jnode *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Record a failed arena allocation (NOMEM or LIMIT) and return -1. */
int vd_jinja_oom(vd_jrender *r);
/* Raise the error an Undefined carries. */
int vd_jinja_undef_fail(vd_jrender *r, const vd_jnode *at, vd_jv u);

/* Render body (whose frame is root) with ctx (a dict of context variables)
 * appended to r->out. */
int vd_jinja_exec(vd_jrender *r, vd_jnode *const *body, size_t n, const vd_jframe *root,
		  const vd_jdict *ctx);
/* Helpers the built-ins share with the evaluator. */
int vd_jinja_getattr(vd_jrender *r, const vd_jnode *at, vd_jv obj, const char *name,
		     size_t n, vd_jv *out);
int vd_jinja_getitem(vd_jrender *r, const vd_jnode *at, vd_jv obj, vd_jv key, vd_jv *out);
/* Items of an iterable (list/tuple, dict keys, string characters, empty for
 * Undefined) as a list; TypeError for anything else. */
int vd_jinja_iterate(vd_jrender *r, const vd_jnode *at, vd_jv v, const vd_jlist **out);
/* Python's a <op> b for the arithmetic VD_JOP_* (ADD..POW). */
int vd_jinja_binop(vd_jrender *r, const vd_jnode *at, int op, vd_jv a, vd_jv b, vd_jv *out);
/* Python's a <op> b for the comparison VD_JOP_* (EQ..NOTIN). */
int vd_jinja_compare(vd_jrender *r, const vd_jnode *at, int op, vd_jv a, vd_jv b, bool *out);
/* Apply a test by descriptor to v with extra positional args. */
int vd_jinja_apply_test(vd_jrender *r, const vd_jnode *at, const vd_jbuiltin *t,
			vd_jv v, const vd_jv *args, size_t nargs, bool *out);
/* Apply a filter by descriptor to v with extra positional args. */
int vd_jinja_apply_filter(vd_jrender *r, const vd_jnode *at, const vd_jbuiltin *f,
			  vd_jv v, const vd_jv *args, size_t nargs, vd_jv *out);
/* Bind args to a built-in's parameter slots and call it. */
int vd_jinja_call_builtin(vd_jrender *r, const vd_jnode *at, const vd_jbuiltin *b,
			  vd_jv self, const vd_jv *args, size_t nargs,
			  const char *const *kwn, const vd_jv *kwv, size_t nkw, vd_jv *out);

#endif
