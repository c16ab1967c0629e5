/* Chat templates: the vd_tv value tree, cJSON conversion, and compile/render
 * on top of the Jinja2 engine in core/jinja_*.c. A compiled template owns one
 * arena (tokens and tree); each render builds its values in its own arena,
 * borrowing the context's strings, and frees it before returning. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/jinja/chat_template.h"
#include "core/jinja/internal.h"

#define RENDER_LIMIT ((size_t)256 << 20)

struct vd_tv {
	vd_tv_kind kind;
	union {
		bool b;
		int64_t i;
		double f;
		struct { char *p; size_t n; } s;
		struct { vd_tv **items; size_t n, cap; } l;
		struct { char **keys; vd_tv **vals; size_t n, cap; } d;
	} u;
};

struct vd_chat_template {
	vd_jarena arena;
	vd_jnode **body;
	size_t n;
	vd_jframe frame; /* of the template body */
};

/* ---- values ---- */

static vd_tv *tv_new(vd_tv_kind kind)
{
	vd_tv *v = calloc(1, sizeof(*v));

	if (v)
		v->kind = kind;
	return v;
}

vd_tv *vd_tv_new_none(void)
{
	return tv_new(VD_TV_NONE);
}

vd_tv *vd_tv_new_bool(bool b)
{
	vd_tv *v = tv_new(VD_TV_BOOL);

	if (v)
		v->u.b = b;
	return v;
}

vd_tv *vd_tv_new_int(int64_t i)
{
	vd_tv *v = tv_new(VD_TV_INT);

	if (v)
		v->u.i = i;
	return v;
}

vd_tv *vd_tv_new_float(double f)
{
	vd_tv *v = tv_new(VD_TV_FLOAT);

	if (v)
		v->u.f = f;
	return v;
}

vd_tv *vd_tv_new_string_len(const char *s, size_t len)
{
	vd_tv *v = tv_new(VD_TV_STRING);

	if (!v)
		return NULL;
	v->u.s.p = malloc(len + 1);
	if (!v->u.s.p) {
		free(v);
		return NULL;
	}
	if (len)
		memcpy(v->u.s.p, s, len);
	v->u.s.p[len] = 0;
	v->u.s.n = len;
	return v;
}

vd_tv *vd_tv_new_string(const char *s)
{
	return vd_tv_new_string_len(s, strlen(s));
}

vd_tv *vd_tv_new_list(void)
{
	return tv_new(VD_TV_LIST);
}

vd_tv *vd_tv_new_dict(void)
{
	return tv_new(VD_TV_DICT);
}

void vd_tv_free(vd_tv *v)
{
	if (!v)
		return;
	switch (v->kind) {
	case VD_TV_STRING:
		free(v->u.s.p);
		break;
	case VD_TV_LIST:
		for (size_t i = 0; i < v->u.l.n; i++)
			vd_tv_free(v->u.l.items[i]);
		free(v->u.l.items);
		break;
	case VD_TV_DICT:
		for (size_t i = 0; i < v->u.d.n; i++) {
			free(v->u.d.keys[i]);
			vd_tv_free(v->u.d.vals[i]);
		}
		free(v->u.d.keys);
		free(v->u.d.vals);
		break;
	default:
		break;
	}
	free(v);
}

vd_status vd_tv_list_append(vd_tv *list, vd_tv *item)
{
	if (!item)
		return vd_errorf(VD_ERR_NOMEM, "chat template value: out of memory");
	if (!list || list->kind != VD_TV_LIST) {
		vd_tv_free(item);
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_tv_list_append: not a list");
	}
	if (list->u.l.n == list->u.l.cap) {
		size_t cap = list->u.l.cap ? 2 * list->u.l.cap : 4;
		vd_tv **items = realloc(list->u.l.items, cap * sizeof(*items));

		if (!items) {
			vd_tv_free(item);
			return vd_errorf(VD_ERR_NOMEM, "chat template value: out of memory");
		}
		list->u.l.items = items;
		list->u.l.cap = cap;
	}
	list->u.l.items[list->u.l.n++] = item;
	return VD_OK;
}

vd_status vd_tv_dict_set(vd_tv *dict, const char *key, vd_tv *val)
{
	char *k;

	if (!val)
		return vd_errorf(VD_ERR_NOMEM, "chat template value: out of memory");
	if (!dict || dict->kind != VD_TV_DICT || !key) {
		vd_tv_free(val);
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_tv_dict_set: not a dict or no key");
	}
	for (size_t i = 0; i < dict->u.d.n; i++)
		if (!strcmp(dict->u.d.keys[i], key)) {
			vd_tv_free(dict->u.d.vals[i]);
			dict->u.d.vals[i] = val;
			return VD_OK;
		}
	if (dict->u.d.n == dict->u.d.cap) {
		size_t cap = dict->u.d.cap ? 2 * dict->u.d.cap : 4;
		char **keys = realloc(dict->u.d.keys, cap * sizeof(*keys));
		vd_tv **vals;

		if (!keys)
			goto nomem;
		dict->u.d.keys = keys;
		vals = realloc(dict->u.d.vals, cap * sizeof(*vals));
		if (!vals)
			goto nomem;
		dict->u.d.vals = vals;
		dict->u.d.cap = cap;
	}
	k = strdup(key);
	if (!k)
		goto nomem;
	dict->u.d.keys[dict->u.d.n] = k;
	dict->u.d.vals[dict->u.d.n] = val;
	dict->u.d.n++;
	return VD_OK;
nomem:
	vd_tv_free(val);
	return vd_errorf(VD_ERR_NOMEM, "chat template value: out of memory");
}

vd_tv_kind vd_tv_kind_of(const vd_tv *v)
{
	return v->kind;
}

size_t vd_tv_len(const vd_tv *v)
{
	switch (v ? v->kind : VD_TV_NONE) {
	case VD_TV_STRING: return v->u.s.n;
	case VD_TV_LIST: return v->u.l.n;
	case VD_TV_DICT: return v->u.d.n;
	default: return 0;
	}
}

const vd_tv *vd_tv_list_at(const vd_tv *v, size_t i)
{
	if (!v || v->kind != VD_TV_LIST || i >= v->u.l.n)
		return NULL;
	return v->u.l.items[i];
}

const vd_tv *vd_tv_dict_get(const vd_tv *v, const char *key)
{
	if (!v || v->kind != VD_TV_DICT)
		return NULL;
	for (size_t i = 0; i < v->u.d.n; i++)
		if (!strcmp(v->u.d.keys[i], key))
			return v->u.d.vals[i];
	return NULL;
}

const char *vd_tv_string(const vd_tv *v, size_t *len)
{
	if (!v || v->kind != VD_TV_STRING)
		return NULL;
	if (len)
		*len = v->u.s.n;
	return v->u.s.p;
}

/* ---- cJSON ---- */

static vd_tv *from_cjson(const cJSON *j)
{
	vd_tv *v;

	if (cJSON_IsNull(j))
		return vd_tv_new_none();
	if (cJSON_IsBool(j))
		return vd_tv_new_bool(cJSON_IsTrue(j));
	if (cJSON_IsString(j))
		return vd_tv_new_string(j->valuestring ? j->valuestring : "");
	if (cJSON_IsNumber(j)) {
		double d = j->valuedouble;

		if (d == floor(d) && fabs(d) <= 9007199254740992.0)
			return vd_tv_new_int((int64_t)d);
		return vd_tv_new_float(d);
	}
	if (cJSON_IsArray(j)) {
		if (!(v = vd_tv_new_list()))
			return NULL;
		for (const cJSON *c = j->child; c; c = c->next)
			if (vd_tv_list_append(v, from_cjson(c)))
				goto fail;
		return v;
	}
	if (cJSON_IsObject(j)) {
		if (!(v = vd_tv_new_dict()))
			return NULL;
		for (const cJSON *c = j->child; c; c = c->next)
			if (vd_tv_dict_set(v, c->string ? c->string : "", from_cjson(c)))
				goto fail;
		return v;
	}
	return NULL;
fail:
	vd_tv_free(v);
	return NULL;
}

/* Whether every node of j has a JSON type a vd_tv can hold. */
static bool cjson_supported(const cJSON *j)
{
	if (cJSON_IsArray(j) || cJSON_IsObject(j)) {
		for (const cJSON *c = j->child; c; c = c->next)
			if (!cjson_supported(c))
				return false;
		return true;
	}
	return cJSON_IsNull(j) || cJSON_IsBool(j) || cJSON_IsString(j) || cJSON_IsNumber(j);
}

vd_status vd_tv_from_cjson(const struct cJSON *json, vd_tv **out)
{
	*out = NULL;
	if (!json || !cjson_supported(json))
		return vd_errorf(VD_ERR_INVALID_ARG, "chat template value: unsupported JSON node "
				 "(raw or invalid)");
	*out = from_cjson(json);
	if (!*out)
		return vd_errorf(VD_ERR_NOMEM, "chat template value: out of memory");
	return VD_OK;
}

/* ---- compile ---- */

vd_status vd_chat_template_compile(const char *src, vd_chat_template **out)
{
	vd_chat_template *t;
	vd_jtok *toks;
	size_t ntoks;
	vd_status st;

	*out = NULL;
	if (!src)
		return vd_errorf(VD_ERR_INVALID_ARG, "chat template: no source");
	t = calloc(1, sizeof(*t));
	if (!t)
		return vd_errorf(VD_ERR_NOMEM, "chat template: out of memory");
	st = vd_jinja_lex(&t->arena, src, strlen(src), &toks, &ntoks);
	if (st)
		goto fail;
	st = vd_jinja_parse(&t->arena, toks, ntoks, &t->body, &t->n);
	if (st)
		goto fail;
	st = vd_jinja_analyze(&t->arena, t->body, t->n, &t->frame);
	if (st)
		goto fail;
	*out = t;
	return VD_OK;
fail:
	vd_chat_template_free(t);
	return st;
}

vd_status vd_chat_template_load_file(const char *path, vd_chat_template **out)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long size;
	vd_status st;

	*out = NULL;
	if (!f)
		return vd_errorf(VD_ERR_IO, "chat template %s: %s", path, strerror(errno));
	if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		st = vd_errorf(VD_ERR_IO, "chat template %s: cannot size the file", path);
		goto out;
	}
	buf = malloc((size_t)size + 1);
	if (!buf) {
		st = vd_errorf(VD_ERR_NOMEM, "chat template %s: out of memory", path);
		goto out;
	}
	if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
		st = vd_errorf(VD_ERR_IO, "chat template %s: short read", path);
		goto out;
	}
	buf[size] = 0;
	st = vd_chat_template_compile(buf, out);
	if (st)
		st = vd_errorf(st, "%s: %s", path, vd_error_message());
out:
	free(buf);
	fclose(f);
	return st;
}

void vd_chat_template_free(vd_chat_template *t)
{
	if (!t)
		return;
	vd_jarena_free(&t->arena);
	free(t);
}

/* ---- render ---- */

/* The context as engine values; strings are borrowed from the tree. */
static int to_jv(vd_jarena *a, const vd_tv *v, vd_jv *out)
{
	switch (v->kind) {
	case VD_TV_NONE: *out = vd_jv_none(); return 0;
	case VD_TV_BOOL: *out = vd_jv_bool(v->u.b); return 0;
	case VD_TV_INT: *out = vd_jv_int(v->u.i); return 0;
	case VD_TV_FLOAT: *out = vd_jv_float(v->u.f); return 0;
	case VD_TV_STRING: *out = vd_jv_str(v->u.s.p, v->u.s.n); return 0;
	case VD_TV_LIST: {
		vd_jlist *l = vd_jlist_new(a, v->u.l.n);

		if (!l)
			return -1;
		for (size_t i = 0; i < v->u.l.n; i++)
			if (to_jv(a, v->u.l.items[i], &l->items[i]))
				return -1;
		l->n = v->u.l.n;
		out->kind = VD_JV_LIST;
		out->u.list = l;
		return 0;
	}
	case VD_TV_DICT: {
		vd_jdict *d = vd_jdict_new(a, v->u.d.n);

		if (!d)
			return -1;
		/* keys are unique already: fill without the lookup of jdict_set */
		for (size_t i = 0; i < v->u.d.n; i++) {
			d->keys[i] = vd_jv_str(v->u.d.keys[i], strlen(v->u.d.keys[i]));
			if (to_jv(a, v->u.d.vals[i], &d->vals[i]))
				return -1;
		}
		d->n = v->u.d.n;
		out->kind = VD_JV_DICT;
		out->u.dict = d;
		return 0;
	}
	}
	return -1;
}

vd_status vd_chat_template_render(const vd_chat_template *t, const vd_tv *context, char **out)
{
	return vd_chat_template_render_opts(t, context, NULL, out);
}

vd_status vd_chat_template_render_opts(const vd_chat_template *t, const vd_tv *context,
				       const vd_chat_render_opts *opts, char **out)
{
	vd_jrender r = { .arena = { .limit = RENDER_LIMIT } };
	vd_jbuf buf = { 0 };
	vd_jv ctx;
	vd_status st = VD_OK;

	*out = NULL;
	if (!t || !context || context->kind != VD_TV_DICT)
		return vd_errorf(VD_ERR_INVALID_ARG, "chat template: the context must be a dict");
	if (to_jv(&r.arena, context, &ctx) || vd_jbuf_put(&r.arena, &buf, "", 0)) {
		vd_jinja_oom(&r);
		st = r.err;
		goto out;
	}
	r.out = &buf;
	if (opts && opts->fixed_now) {
		r.fixed_now = true;
		r.now = opts->now;
	}
	if (vd_jinja_exec(&r, t->body, t->n, &t->frame, ctx.u.dict)) {
		st = r.err ? r.err : vd_errorf(VD_ERR_INTERNAL, "chat template: render failed");
		goto out;
	}
	*out = malloc(buf.n + 1);
	if (!*out) {
		st = vd_errorf(VD_ERR_NOMEM, "chat template: out of memory");
		goto out;
	}
	memcpy(*out, buf.p, buf.n + 1);
out:
	vd_jarena_free(&r.arena);
	return st;
}
