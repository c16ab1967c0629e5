/* Chat templates: Hugging Face chat templates (Jinja2) compiled once and
 * rendered byte for byte as transformers renders them (jinja2 3.1 sandbox,
 * trim_blocks + lstrip_blocks, loopcontrols, {% generation %}, tojson with
 * ensure_ascii=False, raise_exception, strftime_now). The render context is a
 * vd_tv tree, a JSON-like value. A compiled template is immutable: any number
 * of threads may render it at once; nothing here keeps global state. */
#ifndef VD_CHAT_TEMPLATE_H
#define VD_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vllmd/status.h"

struct cJSON;

/* ---- template values ---- */

typedef enum vd_tv_kind {
	VD_TV_NONE, VD_TV_BOOL, VD_TV_INT, VD_TV_FLOAT, VD_TV_STRING, VD_TV_LIST, VD_TV_DICT,
} vd_tv_kind;

/* A JSON-like value (Python None/bool/int/float/str/list/dict); dicts keep
 * insertion order and string keys. A tree owns its children. */
typedef struct vd_tv vd_tv;

/* Constructors: a new value owned by the caller (vd_tv_free), or NULL when
 * out of memory. Strings are copied (UTF-8; _len may hold any bytes but the
 * rendered output stops at a NUL). */
vd_tv *vd_tv_new_none(void);
vd_tv *vd_tv_new_bool(bool b);
vd_tv *vd_tv_new_int(int64_t i);
vd_tv *vd_tv_new_float(double f);
vd_tv *vd_tv_new_string(const char *s);
vd_tv *vd_tv_new_string_len(const char *s, size_t len);
vd_tv *vd_tv_new_list(void);
vd_tv *vd_tv_new_dict(void);

/* Append item to list. Takes item in every case (freed on failure), so
 * `vd_tv_list_append(l, vd_tv_new_int(1))` needs no NULL check: a NULL item
 * is reported as VD_ERR_NOMEM. */
vd_status vd_tv_list_append(vd_tv *list, vd_tv *item);
/* Set dict[key] = val (key copied). Takes val as vd_tv_list_append does.
 * An existing key keeps its position and gets the new value (Python dict). */
vd_status vd_tv_dict_set(vd_tv *dict, const char *key, vd_tv *val);
/* Free v and everything under it; NULL is a no-op. */
void vd_tv_free(vd_tv *v);

/* Readers; all borrow from v. */
vd_tv_kind vd_tv_kind_of(const vd_tv *v); /* v must not be NULL */
/* Items of a list, entries of a dict, bytes of a string; 0 otherwise. */
size_t vd_tv_len(const vd_tv *v);
/* Item i of a list; NULL when out of range or not a list. */
const vd_tv *vd_tv_list_at(const vd_tv *v, size_t i);
/* Value of key in a dict; NULL when absent or not a dict. */
const vd_tv *vd_tv_dict_get(const vd_tv *v, const char *key);
/* NUL-terminated bytes of a string (length in *len when len != NULL);
 * NULL when v is not a string. */
const char *vd_tv_string(const vd_tv *v, size_t *len);

/* Convert parsed JSON (an OpenAI `messages` array, `tools`, ...) into a new
 * tree in *out. Numbers become ints when integral and within +-2^53, floats
 * otherwise (cJSON does not keep "1.0" apart from "1"). */
vd_status vd_tv_from_cjson(const struct cJSON *json, vd_tv **out);

/* ---- templates ---- */

typedef struct vd_chat_template vd_chat_template;

/* Compile template source (NUL-terminated, UTF-8). Syntax errors, unknown
 * tags, filters and tests are VD_ERR_FORMAT with a message naming the line
 * and column ("chat template syntax error at line 3, column 12: ..."). */
vd_status vd_chat_template_compile(const char *src, vd_chat_template **out);
/* Read and compile a template file (the conf/ .jinja files); errors name the path. */
vd_status vd_chat_template_load_file(const char *path, vd_chat_template **out);
/* NULL is a no-op. */
void vd_chat_template_free(vd_chat_template *t);

/* Render t with context, a dict of template variables. transformers passes
 * messages, add_generation_prompt, tools (None when absent), documents
 * (None), the special tokens (bos_token, eos_token, ...) and any
 * chat_template_kwargs; undefined names render as "" as in Jinja2.
 * On success *out is a NUL-terminated string the caller frees with free().
 * Errors: raise_exception(msg) gives VD_ERR_INVALID_ARG with exactly msg as
 * the message; other render errors (using an undefined value, type errors,
 * ...) give VD_ERR_INVALID_ARG with "chat template line N: ..."; a render
 * that needs more than 256 MiB of working memory gives VD_ERR_LIMIT. */
vd_status vd_chat_template_render(const vd_chat_template *t, const vd_tv *context, char **out);

/* Options of one render; a zeroed struct (or NULL) gives the defaults. */
typedef struct vd_chat_render_opts {
	/* strftime_now's clock. false (the default, as transformers and vLLM
	 * render): the real clock, in local time. true: the instant `now`
	 * (seconds since the Unix epoch) in UTC, whatever the machine's clock
	 * and time zone -- for golden tests and reproducible prompts. */
	bool fixed_now;
	int64_t now;
} vd_chat_render_opts;

/* vd_chat_template_render with options (opts borrowed, may be NULL). */
vd_status vd_chat_template_render_opts(const vd_chat_template *t, const vd_tv *context,
				       const vd_chat_render_opts *opts, char **out);

#endif
