/* Chat prompts: validate OpenAI messages, normalise their content for the
 * template (string or structured parts, as vLLM's content formats), render.
 * Image parts are counted in order; their URLs are returned to the caller,
 * which fetches them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jinja/chat_template.h"
#include "server/chat.h"

struct vd_chat {
	vd_chat_template *t;
	bool openai_format;      /* template iterates over content parts */
	char *bos, *eos;
};

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1))) {
		if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		} else {
			buf[n] = '\0';
		}
	}
	fclose(f);
	return buf;
}

/* vLLM's "auto": a template that loops over message content (or tests its
 * type) wants structured parts; otherwise content is flattened to text. */
static bool wants_parts(const char *src)
{
	static const char *const marks[] = { "for content in message['content']",
					     "for content in message.content",
					     "message['content'] is string", "message.content is string",
					     "selectattr('type'", "selectattr(\"type\"", NULL };

	for (int i = 0; marks[i]; i++)
		if (strstr(src, marks[i]))
			return true;
	return false;
}

vd_status vd_chat_create(const char *template_path, const char *tok_template, int content_format,
			 const char *bos_token, const char *eos_token, vd_chat **out)
{
	vd_chat *c;
	char *src = NULL;
	const char *text = tok_template;
	vd_status st;

	*out = NULL;
	if (template_path) {
		/* as vLLM: a readable file, else the value is the template itself
		 * when it looks like one (has Jinja delimiters) */
		src = slurp(template_path);
		if (src) {
			text = src;
		} else if (strstr(template_path, "{{") || strstr(template_path, "{%")) {
			text = template_path;
			template_path = "(given inline)";
		} else {
			return vd_errorf(VD_ERR_NOT_FOUND,
					 "cannot read chat template file %s (a template given inline "
					 "must contain {{ or {%%)",
					 template_path);
		}
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		free(src);
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	}
	c->bos = strdup(bos_token ? bos_token : "");
	c->eos = strdup(eos_token ? eos_token : "");
	if (text) {
		st = vd_chat_template_compile(text, &c->t);
		if (st != VD_OK) {
			st = vd_errorf(st, "chat template %s: %s",
				       template_path ? template_path : "(tokenizer_config.json)",
				       vd_error_message());
			free(src);
			vd_chat_destroy(c);
			return st;
		}
		c->openai_format = content_format == 2 || (content_format == 0 && wants_parts(text));
	}
	free(src);
	*out = c;
	return VD_OK;
}

void vd_chat_destroy(vd_chat *c)
{
	if (!c)
		return;
	vd_chat_template_free(c->t);
	free(c->bos);
	free(c->eos);
	free(c);
}

static const char *const roles[] = { "system", "user", "assistant", "developer", "tool", NULL };

/* One message normalised into the template context. */
static vd_status add_message(const vd_chat *c, const cJSON *m, int mi, const vd_engine *e,
			     cJSON *out, const char ***urls, int *n_urls, int *cap_urls)
{
	const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
	const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
	cJSON *msg = cJSON_CreateObject();
	bool known = false;

	cJSON_AddItemToArray(out, msg);
	if (!cJSON_IsObject(m) || !cJSON_IsString(role))
		return vd_errorf(VD_ERR_INVALID_ARG, "messages[%d] needs a 'role' string", mi);
	for (int i = 0; roles[i]; i++)
		known |= !strcmp(roles[i], role->valuestring);
	if (!known)
		return vd_errorf(VD_ERR_INVALID_ARG, "messages[%d]: unknown role '%s'", mi,
				 role->valuestring);
	cJSON_AddStringToObject(msg, "role", role->valuestring);
	if (!content || cJSON_IsNull(content)) {
		cJSON_AddStringToObject(msg, "content", "");
		return VD_OK;
	}
	if (cJSON_IsString(content)) {
		cJSON_AddStringToObject(msg, "content", content->valuestring);
		return VD_OK;
	}
	if (!cJSON_IsArray(content))
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "messages[%d].content must be a string or a list of parts", mi);
	{
		cJSON *parts = c->openai_format ? cJSON_AddArrayToObject(msg, "content") : NULL;
		char *flat = NULL;
		size_t flen = 0;
		int img_in_msg = 0;
		const cJSON *p;
		char ph[256];
		/* "string" format: placeholders first, then the texts, joined by
		 * newlines (vLLM's order for models without inline placeholders) */
		char *phs = NULL;
		size_t plen = 0;

		cJSON_ArrayForEach(p, content) {
			const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");

			if (!cJSON_IsString(type)) {
				free(flat);
				free(phs);
				return vd_errorf(VD_ERR_INVALID_ARG, "messages[%d]: a content part has no 'type'",
						 mi);
			}
			if (!strcmp(type->valuestring, "text")) {
				const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
				size_t n;
				char *nf;

				if (!cJSON_IsString(t)) {
					free(flat);
					free(phs);
					return vd_errorf(VD_ERR_INVALID_ARG,
							 "messages[%d]: a text part needs 'text'", mi);
				}
				if (parts) {
					cJSON *q = cJSON_CreateObject();

					cJSON_AddStringToObject(q, "type", "text");
					cJSON_AddStringToObject(q, "text", t->valuestring);
					cJSON_AddItemToArray(parts, q);
					continue;
				}
				n = strlen(t->valuestring);
				nf = realloc(flat, flen + n + 2);
				if (!nf) {
					free(flat);
					free(phs);
					return vd_errorf(VD_ERR_NOMEM, "out of memory");
				}
				flat = nf;
				if (flen)
					flat[flen++] = '\n';
				memcpy(flat + flen, t->valuestring, n + 1);
				flen += n;
			} else if (!strcmp(type->valuestring, "image_url")) {
				const cJSON *iu = cJSON_GetObjectItemCaseSensitive(p, "image_url");
				const cJSON *url = cJSON_IsObject(iu) ? cJSON_GetObjectItemCaseSensitive(iu, "url")
								      : iu;
				vd_status st;

				if (!cJSON_IsString(url)) {
					free(flat);
					free(phs);
					return vd_errorf(VD_ERR_INVALID_ARG,
							 "messages[%d]: an image_url part needs image_url.url", mi);
				}
				if (*n_urls == *cap_urls) {
					int cap = *cap_urls ? 2 * *cap_urls : 4;
					const char **nu = realloc(*urls, (size_t)cap * sizeof(*nu));

					if (!nu) {
						free(flat);
						free(phs);
						return vd_errorf(VD_ERR_NOMEM, "out of memory");
					}
					*urls = nu;
					*cap_urls = cap;
				}
				(*urls)[(*n_urls)++] = url->valuestring;
				img_in_msg++;
				if (parts) {
					cJSON *q = cJSON_CreateObject();

					cJSON_AddStringToObject(q, "type", "image");
					cJSON_AddItemToArray(parts, q);
					continue;
				}
				st = vd_engine_placeholder(e, *n_urls, ph, sizeof(ph));
				if (st == VD_OK) {
					size_t n = strlen(ph);
					char *np = realloc(phs, plen + n + 2);

					if (!np) {
						st = vd_errorf(VD_ERR_NOMEM, "out of memory");
					} else {
						phs = np;
						memcpy(phs + plen, ph, n);
						plen += n;
						phs[plen++] = '\n';
						phs[plen] = '\0';
					}
				}
				if (st != VD_OK) {
					free(flat);
					free(phs);
					return st;
				}
			} else {
				free(flat);
				free(phs);
				return vd_errorf(VD_ERR_INVALID_ARG,
						 "messages[%d]: content part type '%s' is not supported "
						 "(text, image_url)", mi, type->valuestring);
			}
		}
		(void)img_in_msg;
		if (!parts) {
			size_t n = plen + flen + 1;
			char *all = malloc(n);

			if (!all) {
				free(flat);
				free(phs);
				return vd_errorf(VD_ERR_NOMEM, "out of memory");
			}
			snprintf(all, n, "%s%s", phs ? phs : "", flat ? flat : "");
			cJSON_AddStringToObject(msg, "content", all);
			free(all);
		}
		free(flat);
		free(phs);
	}
	return VD_OK;
}

vd_status vd_chat_render(const vd_chat *c, const cJSON *messages, bool add_generation_prompt,
			 const vd_engine *e, char **prompt, const char ***urls, int *n_urls)
{
	cJSON *ctx, *msgs;
	int cap_urls = 0, mi = 0;
	const cJSON *m;
	vd_status st = VD_OK;

	*prompt = NULL;
	*urls = NULL;
	*n_urls = 0;
	if (!c->t)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "this model's tokenizer has no chat template: pass --chat-template FILE "
				 "(conf/ has templates), or use /v1/completions");
	ctx = cJSON_CreateObject();
	msgs = cJSON_AddArrayToObject(ctx, "messages");
	cJSON_ArrayForEach(m, messages) {
		st = add_message(c, m, mi++, e, msgs, urls, n_urls, &cap_urls);
		if (st != VD_OK)
			break;
	}
	cJSON_AddBoolToObject(ctx, "add_generation_prompt", add_generation_prompt);
	cJSON_AddStringToObject(ctx, "bos_token", c->bos);
	cJSON_AddStringToObject(ctx, "eos_token", c->eos);
	cJSON_AddNullToObject(ctx, "tools");
	cJSON_AddNullToObject(ctx, "documents");
	if (st == VD_OK) {
		vd_tv *tv = NULL;

		st = vd_tv_from_cjson(ctx, &tv);
		if (st == VD_OK)
			st = vd_chat_template_render(c->t, tv, prompt);
		vd_tv_free(tv);
	}
	cJSON_Delete(ctx);
	if (st != VD_OK) {
		free(*urls);
		*urls = NULL;
		*n_urls = 0;
	}
	return st;
}
