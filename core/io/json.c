/* Read-only JSON documents on cJSON: a vd_json is a cJSON node cast to an
 * opaque type, so no other module sees cJSON. Nodes never change after
 * parsing. Index access (vd_json_at, vd_json_key_at, vd_json_len) goes through
 * a per-thread cursor so that walking a 150k-entry vocab in order is O(n), not
 * O(n^2); every vd_json_free() invalidates all cursors (generation counter). */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "vllmd/json.h"

#define J(n) ((const cJSON *)(n))

/* Bumped by every free, so a cursor never follows a pointer into a freed
 * document even when a new node reuses the address. */
static atomic_uint_fast64_t json_generation;

/* Last index position reached in one array/object, per thread. */
static _Thread_local struct {
	uint_fast64_t gen;
	const cJSON *parent;
	const cJSON *item; /* child number `index` of parent */
	int index;
	int len;           /* -1 until counted */
} cursor;

static int is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* Line and column (1-based) of byte offset off in text. */
static void line_col(const char *text, size_t off, int *line, int *col)
{
	int l = 1, c = 1;

	for (size_t i = 0; i < off; i++) {
		if (text[i] == '\n') {
			l++;
			c = 1;
		} else {
			c++;
		}
	}
	*line = l;
	*col = c;
}

/* Parse with `what` (a path or "JSON text") named in errors. */
static vd_status parse_named(const char *what, const char *text, size_t len, vd_json **out)
{
	const char *end = NULL;
	cJSON *root;
	size_t off;
	int line, col;

	*out = NULL;
	if (len == 0)
		return vd_errorf(VD_ERR_FORMAT, "%s: empty input, expected a JSON value", what);
	/* The length-bounded parser never reads past len, so text need not be
	 * NUL-terminated (safetensors headers sit inside a mapping). */
	root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (root == NULL) {
		off = end != NULL && end >= text ? (size_t)(end - text) : 0;
		if (off > len)
			off = len;
		line_col(text, off, &line, &col);
		return vd_errorf(VD_ERR_FORMAT,
				 "%s: invalid JSON at byte %zu (line %d, column %d)", what,
				 off, line, col);
	}
	off = (size_t)(end - text);
	while (off < len && is_space(text[off]))
		off++;
	if (off < len) {
		cJSON_Delete(root);
		line_col(text, off, &line, &col);
		return vd_errorf(VD_ERR_FORMAT,
				 "%s: unexpected data after the JSON value at byte %zu "
				 "(line %d, column %d)", what, off, line, col);
	}
	*out = (vd_json *)root;
	return VD_OK;
}

vd_status vd_json_parse(const char *text, size_t len, vd_json **out)
{
	if (text == NULL || out == NULL)
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_json_parse: NULL argument");
	return parse_named("JSON text", text, len, out);
}

vd_status vd_json_load_file(const char *path, vd_json **out)
{
	vd_status st;
	FILE *f;
	char *buf = NULL;
	long size;

	*out = NULL;
	f = fopen(path, "rb");
	if (f == NULL)
		return vd_errorf(errno == ENOENT ? VD_ERR_NOT_FOUND : VD_ERR_IO,
				 "%s: cannot open: %s", path, strerror(errno));
	if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
		st = vd_errorf(VD_ERR_IO, "%s: cannot determine size: %s", path, strerror(errno));
		goto out_close;
	}
	buf = malloc((size_t)size + 1);
	if (buf == NULL) {
		st = vd_errorf(VD_ERR_NOMEM, "%s: out of memory reading %ld bytes", path, size);
		goto out_close;
	}
	if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
		st = vd_errorf(VD_ERR_IO, "%s: short read", path);
		goto out_free;
	}
	buf[size] = '\0';
	st = parse_named(path, buf, (size_t)size, out);
out_free:
	free(buf);
out_close:
	fclose(f);
	return st;
}

void vd_json_free(vd_json *root)
{
	if (root == NULL)
		return;
	atomic_fetch_add(&json_generation, 1);
	cJSON_Delete((cJSON *)root);
}

/* Direct child `key` (key_len bytes, not NUL-terminated) of an object. */
static const cJSON *child_n(const cJSON *obj, const char *key, size_t key_len)
{
	if (!cJSON_IsObject(obj))
		return NULL;
	for (const cJSON *c = obj->child; c != NULL; c = c->next) {
		if (c->string != NULL && strncmp(c->string, key, key_len) == 0 &&
		    c->string[key_len] == '\0')
			return c;
	}
	return NULL;
}

/* Node at path, JSON null included (the typed getters tell null apart). */
static const cJSON *walk(const cJSON *n, const char *path)
{
	const char *p = path;

	if (path == NULL)
		return n;
	while (n != NULL && *p != '\0') {
		const char *dot = strchr(p, '.');
		size_t k = dot != NULL ? (size_t)(dot - p) : strlen(p);

		n = child_n(n, p, k);
		p += k;
		if (*p == '.')
			p++;
	}
	return n;
}

const vd_json *vd_json_get(const vd_json *node, const char *path)
{
	const cJSON *n = walk(J(node), path);

	return cJSON_IsNull(n) ? NULL : (const vd_json *)n;
}

bool vd_json_is_number(const vd_json *n) { return cJSON_IsNumber(J(n)); }
bool vd_json_is_string(const vd_json *n) { return cJSON_IsString(J(n)); }
bool vd_json_is_bool(const vd_json *n) { return cJSON_IsBool(J(n)); }
bool vd_json_is_array(const vd_json *n) { return cJSON_IsArray(J(n)); }
bool vd_json_is_object(const vd_json *n) { return cJSON_IsObject(J(n)); }

static const char *kind_name(const cJSON *n)
{
	if (cJSON_IsBool(n))
		return "a boolean";
	if (cJSON_IsNumber(n))
		return "a number";
	if (cJSON_IsString(n))
		return "a string";
	if (cJSON_IsArray(n))
		return "an array";
	if (cJSON_IsObject(n))
		return "an object";
	return "an unknown value";
}

static vd_status wrong_type(const char *path, const cJSON *n, const char *want)
{
	return vd_errorf(VD_ERR_FORMAT, "JSON key '%s' is %s, expected %s",
			 path != NULL ? path : "", kind_name(n), want);
}

vd_status vd_json_int(const vd_json *node, const char *path, int64_t def, int64_t *out)
{
	const cJSON *n = walk(J(node), path);
	double v;

	*out = def;
	if (n == NULL || cJSON_IsNull(n))
		return VD_OK;
	if (!cJSON_IsNumber(n))
		return wrong_type(path, n, "an integer");
	v = n->valuedouble;
	/* 2^63 is exactly representable; anything at or past it overflows */
	if (!isfinite(v) || v >= 9223372036854775808.0 || v < -9223372036854775808.0)
		return vd_errorf(VD_ERR_FORMAT, "JSON key '%s' is %g, out of the 64-bit range",
				 path != NULL ? path : "", v);
	if ((double)(int64_t)v != v)
		return vd_errorf(VD_ERR_FORMAT, "JSON key '%s' is %g, expected an integer",
				 path != NULL ? path : "", v);
	*out = (int64_t)v;
	return VD_OK;
}

vd_status vd_json_num(const vd_json *node, const char *path, double def, double *out)
{
	const cJSON *n = walk(J(node), path);

	*out = def;
	if (n == NULL || cJSON_IsNull(n))
		return VD_OK;
	if (!cJSON_IsNumber(n))
		return wrong_type(path, n, "a number");
	*out = n->valuedouble;
	return VD_OK;
}

vd_status vd_json_bool(const vd_json *node, const char *path, bool def, bool *out)
{
	const cJSON *n = walk(J(node), path);

	*out = def;
	if (n == NULL || cJSON_IsNull(n))
		return VD_OK;
	if (!cJSON_IsBool(n))
		return wrong_type(path, n, "true or false");
	*out = cJSON_IsTrue(n);
	return VD_OK;
}

vd_status vd_json_str(const vd_json *node, const char *path, const char *def,
		      const char **out)
{
	const cJSON *n = walk(J(node), path);

	*out = def;
	if (n == NULL || cJSON_IsNull(n))
		return VD_OK;
	if (!cJSON_IsString(n))
		return wrong_type(path, n, "a string");
	*out = n->valuestring;
	return VD_OK;
}

/* Point the cursor at parent (resetting it when it was elsewhere or stale). */
static void cursor_on(const cJSON *parent)
{
	uint_fast64_t gen = atomic_load(&json_generation);

	if (cursor.parent == parent && cursor.gen == gen)
		return;
	cursor.gen = gen;
	cursor.parent = parent;
	cursor.item = parent->child;
	cursor.index = 0;
	cursor.len = -1;
}

/* i-th child of an array or object; the cursor makes ascending walks O(1). */
static const cJSON *child_at(const cJSON *parent, int i)
{
	const cJSON *c;
	int k;

	if (!(cJSON_IsArray(parent) || cJSON_IsObject(parent)) || i < 0)
		return NULL;
	cursor_on(parent);
	if (cursor.item != NULL && i >= cursor.index) {
		c = cursor.item;
		k = cursor.index;
	} else {
		c = parent->child;
		k = 0;
	}
	while (c != NULL && k < i) {
		c = c->next;
		k++;
	}
	if (c != NULL) {
		cursor.item = c;
		cursor.index = k;
	}
	return c;
}

int vd_json_len(const vd_json *n)
{
	const cJSON *p = J(n);
	int len = 0;

	if (!(cJSON_IsArray(p) || cJSON_IsObject(p)))
		return 0;
	cursor_on(p);
	if (cursor.len >= 0)
		return cursor.len;
	for (const cJSON *c = p->child; c != NULL; c = c->next)
		len++;
	cursor.len = len;
	return len;
}

const vd_json *vd_json_at(const vd_json *n, int i)
{
	return (const vd_json *)child_at(J(n), i);
}

double vd_json_number_value(const vd_json *n, double def)
{
	return cJSON_IsNumber(J(n)) ? J(n)->valuedouble : def;
}

const char *vd_json_string_value(const vd_json *n)
{
	return cJSON_IsString(J(n)) ? J(n)->valuestring : NULL;
}

const char *vd_json_key_at(const vd_json *obj, int i)
{
	const cJSON *c;

	if (!cJSON_IsObject(J(obj)))
		return NULL;
	c = child_at(J(obj), i);
	return c != NULL ? c->string : NULL;
}
