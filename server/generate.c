/* JSONL front end of the offline API. Each line is parsed into a vd_request
 * (all strings and arrays it borrows live in the parsed line, kept until the
 * outputs are written); all valid lines run in one vd_llm_generate call. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "server/generate.h"
#include "vllmd/weights.h"

typedef struct line_req {
	int line;
	cJSON *json;            /* owns everything the request borrows */
	char *error;            /* parse error, or NULL */
	vd_request req;
	vd_image_input *images;
	int32_t *ids;
	const char **stop;
	int32_t *stop_ids;
	float **embeds;         /* converted image embeddings, one per image */
	int n_embeds;
	int out_index;          /* into the outputs of generate, -1 if error */
} line_req;

static char *errf(const char *fmt, const char *a)
{
	size_t n = strlen(fmt) + (a ? strlen(a) : 0) + 1;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, fmt, a ? a : "");
	return p;
}

static int get_int(const cJSON *o, const char *k, int64_t *v, char **err)
{
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, k);

	if (!n || cJSON_IsNull(n))
		return 0;
	if (!cJSON_IsNumber(n) || n->valuedouble != floor(n->valuedouble) ||
	    fabs(n->valuedouble) > 9.2e18) {
		*err = errf("sampling_params.%s must be an integer", k);
		return -1;
	}
	*v = (int64_t)n->valuedouble;
	return 1;
}

static int get_num(const cJSON *o, const char *k, float *v, char **err)
{
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, k);

	if (!n || cJSON_IsNull(n))
		return 0;
	if (!cJSON_IsNumber(n)) {
		*err = errf("sampling_params.%s must be a number", k);
		return -1;
	}
	/* beyond float's range: an infinity, which the checks refuse */
	*v = n->valuedouble > FLT_MAX ? INFINITY : n->valuedouble < -FLT_MAX ? -INFINITY
							 : (float)n->valuedouble;
	return 1;
}

static int get_bool(const cJSON *o, const char *k, bool *v, char **err)
{
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, k);

	if (!n || cJSON_IsNull(n))
		return 0;
	if (!cJSON_IsBool(n)) {
		*err = errf("sampling_params.%s must be true or false", k);
		return -1;
	}
	*v = cJSON_IsTrue(n);
	return 1;
}

static const char *const known_params[] = {
	"n", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
	"repetition_penalty", "seed", "max_tokens", "min_tokens", "ignore_eos", "logprobs",
	"prompt_logprobs", "stop", "stop_token_ids", "skip_special_tokens",
	"include_stop_str_in_output", NULL
};

static int parse_params(line_req *L, const cJSON *sp)
{
	vd_sampling_params *p = &L->req.params;
	char **err = &L->error;
	int64_t v;
	const cJSON *it;

	if (!sp)
		return 0;
	if (!cJSON_IsObject(sp)) {
		*err = errf("sampling_params must be an object", NULL);
		return -1;
	}
	cJSON_ArrayForEach(it, sp) {
		int ok = 0;

		for (int i = 0; known_params[i]; i++)
			ok |= !strcmp(it->string, known_params[i]);
		if (!ok) {
			*err = errf("unknown sampling parameter '%s'", it->string);
			return -1;
		}
	}
	if (get_num(sp, "temperature", &p->temperature, err) < 0 ||
	    get_num(sp, "top_p", &p->top_p, err) < 0 || get_num(sp, "min_p", &p->min_p, err) < 0 ||
	    get_num(sp, "presence_penalty", &p->presence_penalty, err) < 0 ||
	    get_num(sp, "frequency_penalty", &p->frequency_penalty, err) < 0 ||
	    get_num(sp, "repetition_penalty", &p->repetition_penalty, err) < 0 ||
	    get_bool(sp, "ignore_eos", &p->ignore_eos, err) < 0 ||
	    get_bool(sp, "skip_special_tokens", &p->skip_special_tokens, err) < 0 ||
	    get_bool(sp, "include_stop_str_in_output", &p->include_stop_str_in_output, err) < 0)
		return -1;
	/* only the types here: the input stage checks the values (one set of
	 * rules for every way in, vd_sampling_params_check) */
#define INT_PARAM(key, field)                                                          \
	switch (get_int(sp, key, &v, err)) {                                           \
	case -1: return -1;                                                            \
	case 1:                                                                        \
		if (sizeof(p->field) < sizeof(v) && (v < INT32_MIN || v > INT32_MAX)) { \
			*err = errf("sampling_params.%s is out of range", key);        \
			return -1;                                                     \
		}                                                                      \
		p->field = (__typeof__(p->field))v;                                    \
		break;                                                                 \
	default: break;                                                                \
	}
	INT_PARAM("n", n)
	INT_PARAM("top_k", top_k)
	INT_PARAM("seed", seed)
	INT_PARAM("max_tokens", max_tokens)
	INT_PARAM("min_tokens", min_tokens)
	INT_PARAM("logprobs", logprobs)
	INT_PARAM("prompt_logprobs", prompt_logprobs)
#undef INT_PARAM
	it = cJSON_GetObjectItemCaseSensitive(sp, "stop");
	if (it && !cJSON_IsNull(it)) {
		int n = cJSON_IsString(it) ? 1 : cJSON_GetArraySize(it);
		const cJSON *s;
		int k = 0;

		if (!cJSON_IsString(it) && !cJSON_IsArray(it)) {
			*err = errf("sampling_params.stop must be a string or a list of strings", NULL);
			return -1;
		}
		L->stop = calloc((size_t)n + 1, sizeof(char *));
		if (!L->stop)
			return -1;
		if (cJSON_IsString(it)) {
			L->stop[k++] = it->valuestring;
		} else {
			cJSON_ArrayForEach(s, it) {
				if (!cJSON_IsString(s)) {
					*err = errf("sampling_params.stop must hold strings", NULL);
					return -1;
				}
				L->stop[k++] = s->valuestring;
			}
		}
		p->stop = L->stop;
	}
	it = cJSON_GetObjectItemCaseSensitive(sp, "stop_token_ids");
	if (it && !cJSON_IsNull(it)) {
		int n = cJSON_GetArraySize(it), k = 0;
		const cJSON *s;

		if (!cJSON_IsArray(it)) {
			*err = errf("sampling_params.stop_token_ids must be a list of integers", NULL);
			return -1;
		}
		L->stop_ids = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
		if (!L->stop_ids)
			return -1;
		cJSON_ArrayForEach(s, it) {
			if (!cJSON_IsNumber(s)) {
				*err = errf("sampling_params.stop_token_ids must hold integers", NULL);
				return -1;
			}
			L->stop_ids[k++] = (int32_t)s->valuedouble;
		}
		p->stop_token_ids = L->stop_ids;
		p->n_stop_token_ids = n;
	}
	return 0;
}

/* {"image_embeds": "file.safetensors"}: a file holding image_embeds
 * (rows, hidden) or (1, rows, hidden) in any float dtype, and optionally
 * image_grid_thw (1, 3) or (3) as Qwen2-VL needs it. */
static int load_embeds(line_req *L, const cJSON *obj, vd_image_input *in)
{
	const cJSON *path = cJSON_GetObjectItemCaseSensitive(obj, "image_embeds");
	vd_weights *w = NULL;
	vd_tensor e, g;
	float *buf = NULL;
	float **nl;
	int64_t rows, hidden, n;
	int rc = -1;

	if (!cJSON_IsString(path)) {
		L->error = errf("an image object needs \"image_embeds\": a .safetensors path", NULL);
		return -1;
	}
	if (vd_weights_open_file(path->valuestring, &w) != VD_OK ||
	    vd_weights_get(w, "image_embeds", &e) != VD_OK) {
		L->error = errf("image embeddings: %s", vd_error_message());
		goto out;
	}
	if (e.ndim == 3 && e.shape[0] == 1) {
		rows = e.shape[1];
		hidden = e.shape[2];
	} else if (e.ndim == 2) {
		rows = e.shape[0];
		hidden = e.shape[1];
	} else {
		L->error = errf("image_embeds in %s must be (rows, hidden)", path->valuestring);
		goto out;
	}
	if (e.dtype != VD_DTYPE_F32 && e.dtype != VD_DTYPE_BF16 && e.dtype != VD_DTYPE_F16) {
		L->error = errf("image_embeds in %s must be a float tensor", path->valuestring);
		goto out;
	}
	n = rows * hidden;
	buf = malloc((size_t)n * sizeof(float));
	nl = realloc(L->embeds, (size_t)(L->n_embeds + 1) * sizeof(*nl));
	if (!buf || !nl) {
		free(buf);
		goto out;
	}
	L->embeds = nl;
	L->embeds[L->n_embeds++] = buf;
	for (int64_t i = 0; i < n; i++)
		buf[i] = e.dtype == VD_DTYPE_F32 ? ((const float *)e.data)[i]
			 : e.dtype == VD_DTYPE_BF16 ? vd_bf16_to_f32(((const uint16_t *)e.data)[i])
			 : vd_f16_to_f32(((const uint16_t *)e.data)[i]);
	*in = (vd_image_input){ .kind = VD_IMAGE_EMBEDS, .embeds = buf, .rows = rows, .hidden = hidden };
	if (vd_weights_has(w, "image_grid_thw") && vd_weights_get(w, "image_grid_thw", &g) == VD_OK) {
		if (vd_tensor_numel(&g) != 3 || (g.dtype != VD_DTYPE_I64 && g.dtype != VD_DTYPE_I32)) {
			L->error = errf("image_grid_thw in %s must hold 3 integers", path->valuestring);
			goto out;
		}
		for (int k = 0; k < 3; k++)
			in->embed_meta[k] = g.dtype == VD_DTYPE_I64 ? ((const int64_t *)g.data)[k]
								   : ((const int32_t *)g.data)[k];
		in->n_embed_meta = 3;
	}
	rc = 0;
out:
	vd_weights_close(w);
	return rc;
}

static int parse_images(line_req *L, const cJSON *mm)
{
	const cJSON *img, *it;
	int n, k = 0;

	if (!mm || cJSON_IsNull(mm))
		return 0;
	if (!cJSON_IsObject(mm)) {
		L->error = errf("multi_modal_data must be an object", NULL);
		return -1;
	}
	cJSON_ArrayForEach(it, mm) {
		if (strcmp(it->string, "image")) {
			L->error = errf("multi_modal_data: modality '%s' is not supported (only image)",
					it->string);
			return -1;
		}
	}
	img = cJSON_GetObjectItemCaseSensitive(mm, "image");
	if (!img)
		return 0;
	n = cJSON_IsArray(img) ? cJSON_GetArraySize(img) : 1;
	L->images = calloc((size_t)(n ? n : 1), sizeof(*L->images));
	if (!L->images)
		return -1;
	if (cJSON_IsArray(img)) {
		cJSON_ArrayForEach(it, img) {
			if (cJSON_IsObject(it)) {
				if (load_embeds(L, it, &L->images[k++]) < 0)
					return -1;
				continue;
			}
			if (!cJSON_IsString(it)) {
				L->error = errf("multi_modal_data.image entries must be file paths or "
						"{\"image_embeds\": file} objects", NULL);
				return -1;
			}
			L->images[k].kind = VD_IMAGE_PATH;
			L->images[k++].path = it->valuestring;
		}
	} else if (cJSON_IsString(img)) {
		L->images[k].kind = VD_IMAGE_PATH;
		L->images[k++].path = img->valuestring;
	} else if (cJSON_IsObject(img)) {
		if (load_embeds(L, img, &L->images[k++]) < 0)
			return -1;
	} else {
		L->error = errf("multi_modal_data.image must be a path, a list of paths or an "
				"{\"image_embeds\": file} object", NULL);
		return -1;
	}
	L->req.images = L->images;
	L->req.n_images = k;
	return 0;
}

static int parse_line(line_req *L, const char *text)
{
	const cJSON *p, *ids, *rid, *kw;

	vd_request_init(&L->req);
	L->json = cJSON_Parse(text);
	if (!L->json || !cJSON_IsObject(L->json)) {
		L->error = errf("line is not a JSON object", NULL);
		return -1;
	}
	p = cJSON_GetObjectItemCaseSensitive(L->json, "prompt");
	ids = cJSON_GetObjectItemCaseSensitive(L->json, "prompt_token_ids");
	rid = cJSON_GetObjectItemCaseSensitive(L->json, "request_id");
	if (p && !cJSON_IsString(p)) {
		L->error = errf("prompt must be a string", NULL);
		return -1;
	}
	if (cJSON_IsString(p)) {
		L->req.prompt = p->valuestring;
	} else if (cJSON_IsArray(ids)) {
		int n = cJSON_GetArraySize(ids), k = 0;
		const cJSON *t;

		L->ids = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
		if (!L->ids)
			return -1;
		cJSON_ArrayForEach(t, ids) {
			if (!cJSON_IsNumber(t) || t->valuedouble < 0 || t->valuedouble > 2147483647.0 ||
			    t->valuedouble != floor(t->valuedouble)) {
				L->error = errf("prompt_token_ids must be non-negative integers", NULL);
				return -1;
			}
			L->ids[k++] = (int32_t)t->valuedouble;
		}
		L->req.prompt_token_ids = L->ids;
		L->req.n_prompt_token_ids = n;
	} else {
		L->error = errf("a request needs \"prompt\" (string) or \"prompt_token_ids\" (list)", NULL);
		return -1;
	}
	if (cJSON_IsString(rid))
		L->req.request_id = rid->valuestring;
	kw = cJSON_GetObjectItemCaseSensitive(L->json, "mm_processor_kwargs");
	if (cJSON_IsObject(kw)) {
		const cJSON *v;

		if ((v = cJSON_GetObjectItemCaseSensitive(kw, "num_crops")) && cJSON_IsNumber(v))
			L->req.num_crops = (int)v->valuedouble;
		if ((v = cJSON_GetObjectItemCaseSensitive(kw, "min_pixels")) && cJSON_IsNumber(v))
			L->req.min_pixels = (int64_t)v->valuedouble;
		if ((v = cJSON_GetObjectItemCaseSensitive(kw, "max_pixels")) && cJSON_IsNumber(v))
			L->req.max_pixels = (int64_t)v->valuedouble;
	}
	if (parse_images(L, cJSON_GetObjectItemCaseSensitive(L->json, "multi_modal_data")) < 0)
		return -1;
	return parse_params(L, cJSON_GetObjectItemCaseSensitive(L->json, "sampling_params"));
}

static cJSON *lps_json(const vd_position_logprobs *lp, int n, int first_null)
{
	cJSON *arr = cJSON_CreateArray();

	for (int i = 0; i < n; i++) {
		cJSON *d;

		if (i == 0 && first_null) {
			cJSON_AddItemToArray(arr, cJSON_CreateNull());
			continue;
		}
		d = cJSON_CreateObject();
		for (int j = 0; j < lp[i].n; j++) {
			char key[16];
			cJSON *e = cJSON_CreateObject();

			snprintf(key, sizeof(key), "%d", lp[i].entries[j].token_id);
			cJSON_AddNumberToObject(e, "logprob", lp[i].entries[j].logprob);
			cJSON_AddNumberToObject(e, "rank", lp[i].entries[j].rank);
			cJSON_AddStringToObject(e, "decoded_token",
						lp[i].entries[j].decoded ? lp[i].entries[j].decoded : "");
			cJSON_AddItemToObject(d, key, e);
		}
		cJSON_AddItemToArray(arr, d);
	}
	return arr;
}

static cJSON *output_json(const vd_output *o)
{
	cJSON *j = cJSON_CreateObject();
	cJSON *outs = cJSON_CreateArray();

	cJSON_AddStringToObject(j, "request_id", o->request_id);
	if (o->prompt)
		cJSON_AddStringToObject(j, "prompt", o->prompt);
	else
		cJSON_AddNullToObject(j, "prompt");
	cJSON_AddItemToObject(j, "prompt_token_ids",
			      cJSON_CreateIntArray(o->prompt_token_ids, o->n_prompt_tokens));
	if (o->prompt_logprobs)
		cJSON_AddItemToObject(j, "prompt_logprobs",
				      lps_json(o->prompt_logprobs, o->n_prompt_tokens, 1));
	else
		cJSON_AddNullToObject(j, "prompt_logprobs");
	for (int i = 0; i < o->n_completions; i++) {
		const vd_completion *c = &o->completions[i];
		cJSON *cj = cJSON_CreateObject();

		cJSON_AddNumberToObject(cj, "index", c->index);
		cJSON_AddStringToObject(cj, "text", c->text ? c->text : "");
		cJSON_AddItemToObject(cj, "token_ids", cJSON_CreateIntArray(c->token_ids, c->n_tokens));
		if (c->logprobs) {
			cJSON_AddNumberToObject(cj, "cumulative_logprob", c->cumulative_logprob);
			cJSON_AddItemToObject(cj, "logprobs", lps_json(c->logprobs, c->n_tokens, 0));
		} else {
			cJSON_AddNullToObject(cj, "cumulative_logprob");
			cJSON_AddNullToObject(cj, "logprobs");
		}
		cJSON_AddStringToObject(cj, "finish_reason", vd_finish_reason_str(c->finish_reason));
		if (c->stop_reason)
			cJSON_AddStringToObject(cj, "stop_reason", c->stop_reason);
		else if (c->stop_token >= 0)
			cJSON_AddNumberToObject(cj, "stop_reason", c->stop_token);
		else
			cJSON_AddNullToObject(cj, "stop_reason");
		cJSON_AddItemToArray(outs, cj);
	}
	cJSON_AddItemToObject(j, "outputs", outs);
	cJSON_AddBoolToObject(j, "finished", 1);
	return j;
}

static int write_json(FILE *out, cJSON *j)
{
	char *s = cJSON_PrintUnformatted(j);
	int rc = -1;

	if (s) {
		rc = fprintf(out, "%s\n", s) < 0 ? -1 : 0;
		free(s);
	}
	cJSON_Delete(j);
	return rc;
}

static cJSON *error_json(int line, const char *request_id, const char *msg, const char *type)
{
	cJSON *j = cJSON_CreateObject();
	cJSON *e = cJSON_CreateObject();

	cJSON_AddNumberToObject(j, "line", line);
	if (request_id)
		cJSON_AddStringToObject(j, "request_id", request_id);
	cJSON_AddStringToObject(e, "message", msg);
	cJSON_AddStringToObject(e, "type", type);
	cJSON_AddNumberToObject(e, "code", 400);
	cJSON_AddItemToObject(j, "error", e);
	return j;
}

vd_status vd_generate_jsonl(vd_llm *llm, FILE *in, FILE *out, int *n_failed)
{
	line_req *L = NULL;
	vd_request *reqs = NULL;
	vd_output *outs = NULL;
	int n = 0, cap = 0, nreq = 0, lineno = 0;
	char *buf = NULL;
	size_t bcap = 0;
	ssize_t len;
	vd_status st = VD_OK;

	*n_failed = 0;
	while ((len = getline(&buf, &bcap, in)) >= 0) {
		lineno++;
		while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
			buf[--len] = '\0';
		if (len == 0 || strspn(buf, " \t") == (size_t)len)
			continue;
		if (n == cap) {
			line_req *nl = realloc(L, (size_t)(cap = cap ? 2 * cap : 64) * sizeof(*L));

			if (!nl) {
				st = vd_errorf(VD_ERR_NOMEM, "out of memory reading requests");
				goto out;
			}
			L = nl;
		}
		memset(&L[n], 0, sizeof(L[n]));
		L[n].line = lineno;
		L[n].out_index = -1;
		if (parse_line(&L[n], buf) < 0 && !L[n].error)
			L[n].error = errf("out of memory parsing the line", NULL);
		n++;
	}
	if (ferror(in)) {
		st = vd_errorf(VD_ERR_IO, "error reading the input");
		goto out;
	}
	reqs = calloc((size_t)(n ? n : 1), sizeof(*reqs));
	if (!reqs) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++)
		if (!L[i].error) {
			L[i].out_index = nreq;
			reqs[nreq++] = L[i].req;
		}
	st = vd_llm_generate(llm, reqs, nreq, &outs);
	if (st != VD_OK)
		goto out;
	for (int i = 0; i < n; i++) {
		cJSON *j;

		if (L[i].error) {
			j = error_json(L[i].line, NULL, L[i].error, "BadRequestError");
			(*n_failed)++;
		} else if (outs[L[i].out_index].status != VD_OK) {
			const vd_output *o = &outs[L[i].out_index];

			j = error_json(L[i].line, o->request_id, o->error ? o->error : "failed",
				       o->status == VD_ERR_INVALID_ARG || o->status == VD_ERR_LIMIT ||
				       o->status == VD_ERR_FORMAT || o->status == VD_ERR_NOT_FOUND
				       ? "BadRequestError" : "InternalServerError");
			(*n_failed)++;
		} else {
			j = output_json(&outs[L[i].out_index]);
		}
		if (write_json(out, j) < 0) {
			st = vd_errorf(VD_ERR_IO, "error writing the output");
			goto out;
		}
	}
	fflush(out);
out:
	vd_outputs_free(outs, nreq);
	for (int i = 0; i < n; i++) {
		cJSON_Delete(L[i].json);
		free(L[i].error);
		free(L[i].images);
		free(L[i].ids);
		free(L[i].stop);
		free(L[i].stop_ids);
		for (int k = 0; k < L[i].n_embeds; k++)
			free(L[i].embeds[k]);
		free(L[i].embeds);
	}
	free(L);
	free(reqs);
	free(buf);
	return st;
}
