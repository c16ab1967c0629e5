/* OpenAI API over the engine. Each HTTP request runs on its connection's
 * thread: parse the JSON, render the chat template, fetch image URLs, have
 * the input stage check and prepare the request (images decoded and
 * processed, prompt expanded), submit it to the engine thread, then either
 * wait for the whole answer or stream chunks as the engine produces them. A client that goes
 * away aborts its request, which frees its KV blocks. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "server/chat.h"
#include "server/http.h"
#include "server/media.h"
#include "server/openai.h"
#include "server/worker.h"

#define N_BUCKETS 12
static const double buckets[N_BUCKETS] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };

typedef struct histo {
	uint64_t count[N_BUCKETS + 1];
	double sum;
	uint64_t n;
} histo;

typedef struct app {
	const vd_config *cfg;
	const vd_server_opts *opts;
	vd_engine *engine;
	vd_worker *worker;
	vd_chat *chat;
	vd_media_opts media;
	const char *model_name;      /* first served name */
	int max_model_len;
	int max_in_flight;           /* more get 503 */
	atomic_bool draining;
	pthread_mutex_t mu;          /* metrics below */
	histo ttft, itl, e2e, fetch, decode, process;
	uint64_t http_requests, prompt_tokens, gen_tokens;
	uint64_t status_count[6];    /* 1xx..5xx */
	int64_t id_counter;
} app;

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void observe(app *a, histo *h, double v)
{
	int i = 0;

	pthread_mutex_lock(&a->mu);
	while (i < N_BUCKETS && v > buckets[i])
		i++;
	h->count[i]++;
	h->sum += v;
	h->n++;
	pthread_mutex_unlock(&a->mu);
}

/* ------------------------------------------------------------ responses */

static void set_json(vd_http_resp *rs, int status, cJSON *j)
{
	rs->status = status;
	rs->content_type = "application/json";
	rs->body = cJSON_PrintUnformatted(j);
	rs->body_len = rs->body ? strlen(rs->body) : 0;
	cJSON_Delete(j);
}

static const char *error_type(int status)
{
	switch (status) {
	case 400: return "BadRequestError";
	case 401: return "AuthenticationError";
	case 404: return "NotFoundError";
	case 413: return "BadRequestError";
	case 503: return "ServiceUnavailableError";
	default: return "InternalServerError";
	}
}

static void set_error(vd_http_resp *rs, int status, const char *msg)
{
	cJSON *j = cJSON_CreateObject();
	cJSON *e = cJSON_AddObjectToObject(j, "error");

	cJSON_AddStringToObject(e, "message", msg);
	cJSON_AddStringToObject(e, "type", error_type(status));
	cJSON_AddNullToObject(e, "param");
	cJSON_AddNumberToObject(e, "code", status);
	set_json(rs, status, j);
}

static int status_of(vd_status st)
{
	switch (st) {
	case VD_OK: return 200;
	case VD_ERR_INVALID_ARG:
	case VD_ERR_FORMAT:
	case VD_ERR_LIMIT:
	case VD_ERR_TIMEOUT:
	case VD_ERR_NOT_FOUND:
	case VD_ERR_UNSUPPORTED:
	case VD_ERR_IO:
		return 400;
	default:
		return 500;
	}
}

/* ------------------------------------------------------------ parsing */

typedef struct parsed {
	bool chat, stream, include_usage;
	bool logprobs;       /* chat: logprobs true; completions: logprobs >= 0 */
	int top_logprobs;
	bool echo;
} parsed;

static const cJSON *get(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return v && !cJSON_IsNull(v) ? v : NULL;
}

/* A number (any finite value: the input stage checks ranges); *err set on
 * a value of another type. */
static bool num_field(const cJSON *o, const char *k, double *out, char *err, size_t cap)
{
	const cJSON *v = get(o, k);

	if (!v)
		return true;
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
		snprintf(err, cap, "'%s' must be a number", k);
		return false;
	}
	*out = v->valuedouble;
	return true;
}

/* An integer that fits the field it goes to, [lo, hi]. */
static bool int_field(const cJSON *o, const char *k, double lo, double hi, int64_t *out,
		      char *err, size_t cap)
{
	double d = (double)*out;

	if (!get(o, k))
		return true;
	if (!num_field(o, k, &d, err, cap))
		return false;
	if (d != floor(d)) {
		snprintf(err, cap, "'%s' must be an integer", k);
		return false;
	}
	if (d < lo || d > hi) {
		snprintf(err, cap, "'%s' is out of range", k);
		return false;
	}
	*out = (int64_t)d;
	return true;
}

/* d as a float; beyond float's range, an infinity (the checks refuse it). */
static float to_float(double d)
{
	return d > FLT_MAX ? INFINITY : d < -FLT_MAX ? -INFINITY : (float)d;
}

/* Sampling parameters of a chat or completions request. */
static bool parse_sampling(app *a, vd_srv_req *r, const cJSON *b, parsed *p, char *err, size_t cap)
{
	vd_sampling_params *sp = &r->req.params;
	double t = 1.0, top_p = 1.0, min_p = 0, pp = 0, fp = 0, rp = 1.0;
	int64_t n = 1, mt = -1, mct = -1, seed = -1, top_k = 0, min_tokens = 0, lp = -1;
	const cJSON *v;

	/* types only: the input stage checks the values, with the same rules
	 * for every way in (vd_sampling_params_check) */
	if (!num_field(b, "temperature", &t, err, cap) || !num_field(b, "top_p", &top_p, err, cap) ||
	    !num_field(b, "min_p", &min_p, err, cap) ||
	    !num_field(b, "presence_penalty", &pp, err, cap) ||
	    !num_field(b, "frequency_penalty", &fp, err, cap) ||
	    !num_field(b, "repetition_penalty", &rp, err, cap) ||
	    !int_field(b, "n", INT_MIN, INT_MAX, &n, err, cap) ||
	    !int_field(b, "max_tokens", INT_MIN, INT_MAX, &mt, err, cap) ||
	    !int_field(b, "max_completion_tokens", INT_MIN, INT_MAX, &mct, err, cap) ||
	    !int_field(b, "seed", -9.2e18, 9.2e18, &seed, err, cap) ||
	    !int_field(b, "top_k", INT_MIN, INT_MAX, &top_k, err, cap) ||
	    !int_field(b, "min_tokens", INT_MIN, INT_MAX, &min_tokens, err, cap))
		return false;
	sp->temperature = to_float(t);
	sp->top_p = to_float(top_p);
	sp->min_p = to_float(min_p);
	sp->presence_penalty = to_float(pp);
	sp->frequency_penalty = to_float(fp);
	sp->repetition_penalty = to_float(rp);
	sp->n = (int)n;
	sp->seed = seed;
	sp->top_k = (int)top_k;
	sp->min_tokens = (int)min_tokens;
	if (get(b, "max_completion_tokens"))
		mt = mct;
	/* chat without a limit may run to the context length, as vLLM does;
	 * a limit past it is clamped to it */
	if (!get(b, "max_tokens") && !get(b, "max_completion_tokens"))
		mt = p->chat ? a->max_model_len : 16;
	sp->max_tokens = (int)(mt < a->max_model_len ? mt : a->max_model_len);
	if ((v = get(b, "ignore_eos")) && cJSON_IsBool(v))
		sp->ignore_eos = cJSON_IsTrue(v);
	if ((v = get(b, "skip_special_tokens")) && cJSON_IsBool(v))
		sp->skip_special_tokens = cJSON_IsTrue(v);
	if (p->chat) {
		if ((v = get(b, "logprobs"))) {
			if (!cJSON_IsBool(v)) {
				snprintf(err, cap, "'logprobs' must be true or false");
				return false;
			}
			p->logprobs = cJSON_IsTrue(v);
		}
		lp = 0;
		if (!int_field(b, "top_logprobs", 0, INT_MAX, &lp, err, cap))
			return false;
		if (get(b, "top_logprobs") && !p->logprobs) {
			snprintf(err, cap, "'top_logprobs' needs 'logprobs': true");
			return false;
		}
		p->top_logprobs = (int)lp;
		sp->logprobs = p->logprobs ? (int)lp : -1;
	} else {
		if (!int_field(b, "logprobs", 0, INT_MAX, &lp, err, cap))
			return false;
		p->logprobs = lp >= 0;
		p->top_logprobs = (int)lp;
		sp->logprobs = (int)lp;
		if ((v = get(b, "echo")) && cJSON_IsTrue(v)) {
			snprintf(err, cap, "'echo' is not supported");
			return false;
		}
	}
	if ((v = get(b, "stop"))) {
		int k = 0;
		const cJSON *s;
		const char **stop;

		if (!cJSON_IsString(v) && !cJSON_IsArray(v)) {
			snprintf(err, cap, "'stop' must be a string or a list of strings");
			return false;
		}
		stop = vd_srv_req_own(r, calloc((size_t)(cJSON_IsString(v) ? 2 : cJSON_GetArraySize(v) + 1),
						sizeof(char *)));
		if (!stop) {
			snprintf(err, cap, "out of memory");
			return false;
		}
		if (cJSON_IsString(v)) {
			stop[k++] = vd_srv_req_own(r, strdup(v->valuestring));
		} else {
			cJSON_ArrayForEach(s, v) {
				if (!cJSON_IsString(s)) {
					snprintf(err, cap, "'stop' must be a list of strings");
					return false;
				}
				stop[k++] = vd_srv_req_own(r, strdup(s->valuestring));
			}
		}
		sp->stop = stop;
	}
	if ((v = get(b, "stream"))) {
		if (!cJSON_IsBool(v)) {
			snprintf(err, cap, "'stream' must be true or false");
			return false;
		}
		p->stream = cJSON_IsTrue(v);
	}
	if ((v = get(b, "stream_options")) && (v = get(v, "include_usage")))
		p->include_usage = cJSON_IsTrue(v);
	return true;
}

/* Fetch every image URL of the request at once, on this connection's
 * thread (network I/O); *res (n, owned by the caller) holds the bytes. */
static vd_status fetch_images(app *a, const char **urls, int n, vd_media_result **res)
{
	double t0 = mono();
	vd_status st;

	*res = calloc((size_t)(n > 0 ? n : 1), sizeof(**res));
	if (!*res)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	st = vd_media_fetch_many(urls, n, &a->media, *res);
	observe(a, &a->fetch, mono() - t0);
	return st;
}

/* Have the input stage prepare r (images from the fetched bytes res,
 * decoded, processed and hashed; the prompt tokenized and expanded) and
 * wait for it. The bytes are not needed afterwards. */
static vd_status prepare(app *a, vd_srv_req *r, const vd_media_result *res, int n)
{
	vd_image_input *imgs = NULL;
	vd_status st;

	if (n > 0) {
		imgs = calloc((size_t)n, sizeof(*imgs));
		if (!imgs)
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
		for (int i = 0; i < n; i++)
			imgs[i] = (vd_image_input){ .kind = VD_IMAGE_BYTES, .bytes = res[i].data,
						    .len = res[i].len };
	}
	r->req.images = imgs;
	r->req.n_images = n;
	st = vd_input_prepare(vd_engine_input(a->engine), &r->req, &r->prep);
	r->req.images = NULL;
	r->req.n_images = 0;
	free(imgs);
	if (st != VD_OK)
		return st;
	r->prep->req.images = NULL; /* consumed: only its items are used from here */
	r->prep->req.n_images = 0;
	if (r->prep->n_items > 0) {
		observe(a, &a->decode, r->prep->t_decode);
		observe(a, &a->process, r->prep->t_process);
	}
	return VD_OK;
}

/* ------------------------------------------------------------ output JSON */

static cJSON *logprobs_json(const app *a, const vd_completion *c, int from, int to, bool chat)
{
	cJSON *o = cJSON_CreateObject();
	(void)a;

	if (chat) {
		cJSON *content = cJSON_AddArrayToObject(o, "content");

		for (int i = from; i < to; i++) {
			const vd_position_logprobs *p = &c->logprobs[i];
			cJSON *e = cJSON_CreateObject(), *top = cJSON_CreateArray();

			cJSON_AddStringToObject(e, "token", p->entries[0].decoded ? p->entries[0].decoded : "");
			cJSON_AddNumberToObject(e, "logprob", p->entries[0].logprob);
			cJSON_AddNullToObject(e, "bytes");
			for (int k = 1; k < p->n || (p->n == 1 && k == 1 && 0); k++) {
				cJSON *t = cJSON_CreateObject();

				cJSON_AddStringToObject(t, "token", p->entries[k].decoded ? p->entries[k].decoded : "");
				cJSON_AddNumberToObject(t, "logprob", p->entries[k].logprob);
				cJSON_AddNullToObject(t, "bytes");
				cJSON_AddItemToArray(top, t);
			}
			cJSON_AddItemToObject(e, "top_logprobs", top);
			cJSON_AddItemToArray(content, e);
		}
	} else {
		cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
		cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
		cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");

		for (int i = from; i < to; i++) {
			const vd_position_logprobs *p = &c->logprobs[i];
			cJSON *t = cJSON_CreateObject();

			cJSON_AddItemToArray(toks, cJSON_CreateString(p->entries[0].decoded ? p->entries[0].decoded : ""));
			cJSON_AddItemToArray(lps, cJSON_CreateNumber(p->entries[0].logprob));
			for (int k = 0; k < p->n; k++)
				cJSON_AddNumberToObject(t, p->entries[k].decoded ? p->entries[k].decoded : "",
							p->entries[k].logprob);
			cJSON_AddItemToArray(tops, t);
		}
	}
	return o;
}

static const char *finish_str(vd_finish_reason r)
{
	const char *s = vd_finish_reason_str(r);

	return s ? s : "stop";
}

static cJSON *usage_json(const vd_output *o)
{
	cJSON *u = cJSON_CreateObject();
	int gen = 0;

	for (int i = 0; i < o->n_completions; i++)
		gen += o->completions[i].n_tokens;
	cJSON_AddNumberToObject(u, "prompt_tokens", o->n_prompt_tokens);
	cJSON_AddNumberToObject(u, "total_tokens", o->n_prompt_tokens + gen);
	cJSON_AddNumberToObject(u, "completion_tokens", gen);
	return u;
}

static cJSON *head_json(app *a, const char *id, bool chat, bool chunk)
{
	cJSON *j = cJSON_CreateObject();

	cJSON_AddStringToObject(j, "id", id);
	cJSON_AddStringToObject(j, "object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
						  : "text_completion");
	cJSON_AddNumberToObject(j, "created", (double)time(NULL));
	cJSON_AddStringToObject(j, "model", a->model_name);
	return j;
}

static cJSON *full_json(app *a, const char *id, const vd_srv_req *r, const parsed *p)
{
	cJSON *j = head_json(a, id, p->chat, false);
	cJSON *choices = cJSON_AddArrayToObject(j, "choices");

	for (int i = 0; i < r->out.n_completions; i++) {
		const vd_completion *c = &r->out.completions[i];
		cJSON *ch = cJSON_CreateObject();

		cJSON_AddNumberToObject(ch, "index", i);
		if (p->chat) {
			cJSON *m = cJSON_AddObjectToObject(ch, "message");

			cJSON_AddStringToObject(m, "role", "assistant");
			cJSON_AddStringToObject(m, "content", c->text ? c->text : "");
		} else {
			cJSON_AddStringToObject(ch, "text", c->text ? c->text : "");
		}
		if (p->logprobs && c->logprobs)
			cJSON_AddItemToObject(ch, "logprobs", logprobs_json(a, c, 0, c->n_tokens, p->chat));
		else
			cJSON_AddNullToObject(ch, "logprobs");
		cJSON_AddStringToObject(ch, "finish_reason", finish_str(c->finish_reason));
		if (c->stop_reason)
			cJSON_AddStringToObject(ch, "stop_reason", c->stop_reason);
		else if (c->stop_token >= 0)
			cJSON_AddNumberToObject(ch, "stop_reason", c->stop_token);
		else
			cJSON_AddNullToObject(ch, "stop_reason");
		cJSON_AddItemToArray(choices, ch);
	}
	cJSON_AddItemToObject(j, "usage", usage_json(&r->out));
	return j;
}

/* ------------------------------------------------------------ streaming */

typedef struct stream {
	app *a;
	vd_srv_req *r;
	parsed p;
	char id[64];
	char *buf;             /* pending SSE bytes */
	size_t len, off, cap;
	int *sent_tokens;      /* per completion */
	bool *sent_role, *sent_final;
	bool sent_usage, sent_done;
	int client_fd;
} stream;

static void sse(stream *s, cJSON *j)
{
	char *txt = cJSON_PrintUnformatted(j);
	size_t n;

	cJSON_Delete(j);
	if (!txt)
		return;
	n = strlen(txt) + 8;
	if (s->len + n > s->cap) {
		size_t cap = (s->len + n) * 2;
		char *b = realloc(s->buf, cap);

		if (!b) {
			free(txt);
			return;
		}
		s->buf = b;
		s->cap = cap;
	}
	s->len += (size_t)sprintf(s->buf + s->len, "data: %s\n\n", txt);
	free(txt);
}

static cJSON *chunk_choice(stream *s, int i, cJSON *choices)
{
	cJSON *ch = cJSON_CreateObject();

	(void)s;
	cJSON_AddNumberToObject(ch, "index", i);
	cJSON_AddItemToArray(choices, ch);
	return ch;
}

/* Turn what the engine produced since last time into SSE events; called
 * with r->mu held. */
static void drain_events(stream *s)
{
	vd_srv_req *r = s->r;

	for (int i = 0; i < r->n_chan; i++) {
		vd_srv_chan *c = &r->chan[i];
		bool role = s->p.chat && !s->sent_role[i];
		bool text = c->len > 0;
		bool fin = c->finished && !s->sent_final[i];
		int from = s->sent_tokens[i], to = c->n_tokens;
		cJSON *j, *choices, *ch;

		if (!role && !text && !fin && from == to)
			continue;
		j = head_json(s->a, s->id, s->p.chat, true);
		choices = cJSON_AddArrayToObject(j, "choices");
		ch = chunk_choice(s, i, choices);
		if (s->p.chat) {
			cJSON *d = cJSON_AddObjectToObject(ch, "delta");

			if (role)
				cJSON_AddStringToObject(d, "role", "assistant");
			cJSON_AddStringToObject(d, "content", c->text ? c->text : "");
		} else {
			cJSON_AddStringToObject(ch, "text", c->text ? c->text : "");
		}
		if (s->p.logprobs && r->out.completions && r->out.completions[i].logprobs && to > from)
			cJSON_AddItemToObject(ch, "logprobs",
					      logprobs_json(s->a, &r->out.completions[i], from, to, s->p.chat));
		else
			cJSON_AddNullToObject(ch, "logprobs");
		if (fin)
			cJSON_AddStringToObject(ch, "finish_reason", finish_str(c->reason));
		else
			cJSON_AddNullToObject(ch, "finish_reason");
		if (s->p.include_usage)
			cJSON_AddNullToObject(j, "usage");
		sse(s, j);
		s->sent_role[i] = true;
		s->sent_tokens[i] = to;
		if (fin)
			s->sent_final[i] = true;
		c->len = 0;
		if (c->text)
			c->text[0] = '\0';
	}
}

static ssize_t stream_read(void *ctx, char *buf, size_t max)
{
	stream *s = ctx;
	vd_srv_req *r = s->r;
	size_t n;

	while (s->off == s->len) {
		s->off = s->len = 0;
		if (s->sent_done)
			return VD_HTTP_STREAM_END;
		pthread_mutex_lock(&r->mu);
		for (;;) {
			bool any = false;

			for (int i = 0; i < r->n_chan; i++)
				any |= r->chan[i].len > 0 || r->chan[i].n_tokens > s->sent_tokens[i] ||
				       (r->chan[i].finished && !s->sent_final[i]);
			if (any || r->done)
				break;
			{
				struct timespec ts;

				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_nsec += 200 * 1000 * 1000;
				if (ts.tv_nsec >= 1000000000) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000;
				}
				pthread_cond_timedwait(&r->cv, &r->mu, &ts);
			}
			if (vd_http_client_gone(s->client_fd)) {
				pthread_mutex_unlock(&r->mu);
				return VD_HTTP_STREAM_END;
			}
		}
		drain_events(s);
		if (r->done) {
			if (r->out.status != VD_OK) {
				cJSON *j = cJSON_CreateObject();
				cJSON *e = cJSON_AddObjectToObject(j, "error");

				cJSON_AddStringToObject(e, "message", r->out.error ? r->out.error : "failed");
				cJSON_AddStringToObject(e, "type", error_type(status_of(r->out.status)));
				cJSON_AddNumberToObject(e, "code", status_of(r->out.status));
				sse(s, j);
			} else if (s->p.include_usage && !s->sent_usage) {
				cJSON *j = head_json(s->a, s->id, s->p.chat, true);

				cJSON_AddArrayToObject(j, "choices");
				cJSON_AddItemToObject(j, "usage", usage_json(&r->out));
				sse(s, j);
				s->sent_usage = true;
			}
			pthread_mutex_unlock(&r->mu);
			if (s->len + 16 <= s->cap || (s->buf = realloc(s->buf, s->cap = s->len + 16))) {
				memcpy(s->buf + s->len, "data: [DONE]\n\n", 14);
				s->len += 14;
			}
			s->sent_done = true;
		} else {
			pthread_mutex_unlock(&r->mu);
		}
	}
	n = s->len - s->off < max ? s->len - s->off : max;
	memcpy(buf, s->buf + s->off, n);
	s->off += n;
	return (ssize_t)n;
}

static void record_done(app *a, vd_srv_req *r)
{
	double now = mono();
	int gen = 0;

	for (int i = 0; i < r->out.n_completions; i++)
		gen += r->out.completions[i].n_tokens;
	if (r->t_first_token > 0)
		observe(a, &a->ttft, r->t_first_token - r->t_arrival);
	if (r->n_itl > 0)
		observe(a, &a->itl, (r->t_last_token - r->t_first_token) / (double)r->n_itl);
	observe(a, &a->e2e, now - r->t_arrival);
	pthread_mutex_lock(&a->mu);
	a->prompt_tokens += (uint64_t)r->out.n_prompt_tokens;
	a->gen_tokens += (uint64_t)gen;
	pthread_mutex_unlock(&a->mu);
}

static void stream_done(void *ctx, bool client_gone)
{
	stream *s = ctx;
	bool done;

	pthread_mutex_lock(&s->r->mu);
	done = s->r->done;
	pthread_mutex_unlock(&s->r->mu);
	if (!done || client_gone)
		vd_worker_abort(s->a->worker, s->r);
	else
		record_done(s->a, s->r);
	vd_srv_req_release(s->r);
	free(s->buf);
	free(s->sent_tokens);
	free(s->sent_role);
	free(s->sent_final);
	free(s);
}

/* ------------------------------------------------------------ handlers */

static bool serves_model(const app *a, const char *name);

static void handle_generate(app *a, const vd_http_req *rq, vd_http_resp *rs, bool chat)
{
	cJSON *b = cJSON_ParseWithLength(rq->body, rq->body_len);
	const cJSON *v;
	vd_srv_req *r = NULL;
	parsed p = { .chat = chat };
	char err[512] = "", id[64];
	const char **urls = NULL;
	int n_urls = 0, n_media = 0;
	vd_media_result *media = NULL;
	vd_status st;

	if (!b || !cJSON_IsObject(b)) {
		set_error(rs, 400, "The request body is not a JSON object.");
		goto out;
	}
	v = get(b, "model");
	if (v && (!cJSON_IsString(v) || !serves_model(a, v->valuestring))) {
		char msg[512];

		snprintf(msg, sizeof(msg), "The model `%s` does not exist.",
			 cJSON_IsString(v) ? v->valuestring : "?");
		set_error(rs, 404, msg);
		goto out;
	}
	v = get(b, "n");
	r = vd_srv_req_new(v && cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= 128
			   ? (int)v->valuedouble : 1);
	if (!r) {
		set_error(rs, 500, "out of memory");
		goto out;
	}
	if (!parse_sampling(a, r, b, &p, err, sizeof(err))) {
		set_error(rs, 400, err);
		goto out;
	}
	if (chat) {
		char *prompt = NULL;

		v = get(b, "messages");
		if (!v || !cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0) {
			set_error(rs, 400, "'messages' must be a non-empty list.");
			goto out;
		}
		st = vd_chat_render(a->chat, v, true, a->engine, &prompt, &urls, &n_urls);
		if (st != VD_OK) {
			set_error(rs, status_of(st), vd_error_message());
			goto out;
		}
		r->req.prompt = vd_srv_req_own(r, prompt);
		r->req.add_special_tokens = false; /* the template wrote BOS */
		if (n_urls > a->cfg->limit_mm_per_prompt.image && a->cfg->limit_mm_per_prompt.image >= 0) {
			snprintf(err, sizeof(err), "At most %lld image(s) may be provided in one request.",
				 (long long)a->cfg->limit_mm_per_prompt.image);
			set_error(rs, 400, err);
			goto out;
		}
		st = fetch_images(a, urls, n_urls, &media);
		n_media = media ? n_urls : 0;
		if (st != VD_OK) {
			set_error(rs, status_of(st), vd_error_message());
			goto out;
		}
	} else {
		v = get(b, "prompt");
		if (v && cJSON_IsString(v)) {
			r->req.prompt = vd_srv_req_own(r, strdup(v->valuestring));
		} else if (v && cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0 &&
			   cJSON_IsNumber(cJSON_GetArrayItem(v, 0))) {
			int n = cJSON_GetArraySize(v), k = 0;
			int32_t *ids = vd_srv_req_own(r, malloc((size_t)n * sizeof(int32_t)));
			const cJSON *t;

			cJSON_ArrayForEach(t, v) {
				if (!ids || !cJSON_IsNumber(t) || t->valuedouble < 0) {
					set_error(rs, 400, "'prompt' token ids must be non-negative integers.");
					goto out;
				}
				ids[k++] = (int32_t)t->valuedouble;
			}
			r->req.prompt_token_ids = ids;
			r->req.n_prompt_token_ids = n;
		} else {
			set_error(rs, 400, "'prompt' must be a string or a list of token ids.");
			goto out;
		}
	}
	pthread_mutex_lock(&a->mu);
	snprintf(id, sizeof(id), "%s-%lld", chat ? "chatcmpl" : "cmpl", (long long)++a->id_counter);
	pthread_mutex_unlock(&a->mu);
	r->req.request_id = vd_srv_req_own(r, strdup(id));
	/* everything that can be checked is checked before the answer starts */
	st = prepare(a, r, media, n_media);
	vd_media_results_free(media, n_media);
	free(media);
	media = NULL;
	if (st == VD_OK && r->prep->status != VD_OK) {
		vd_worker_note_rejected(a->worker);
		set_error(rs, status_of(r->prep->status), r->prep->error);
		goto out;
	}
	if (st != VD_OK) {
		set_error(rs, status_of(st), vd_error_message());
		goto out;
	}
	if (atomic_load(&a->draining)) {
		set_error(rs, 503, "The server is shutting down.");
		goto out;
	}
	st = vd_worker_submit(a->worker, r, a->max_in_flight);
	if (st != VD_OK) {
		set_error(rs, st == VD_ERR_LIMIT ? 503 : 500, vd_error_message());
		goto out;
	}
	if (p.stream) {
		stream *s = calloc(1, sizeof(*s));

		if (!s || !(s->sent_tokens = calloc((size_t)r->n_chan, sizeof(int))) ||
		    !(s->sent_role = calloc((size_t)r->n_chan, sizeof(bool))) ||
		    !(s->sent_final = calloc((size_t)r->n_chan, sizeof(bool)))) {
			if (s) {
				free(s->sent_tokens);
				free(s->sent_role);
			}
			free(s);
			vd_worker_abort(a->worker, r);
			set_error(rs, 500, "out of memory");
			goto out;
		}
		s->a = a;
		s->r = r;
		s->p = p;
		s->client_fd = rq->client_fd;
		snprintf(s->id, sizeof(s->id), "%s", id);
		rs->status = 200;
		rs->content_type = "text/event-stream";
		rs->stream = stream_read;
		rs->stream_done = stream_done;
		rs->stream_ctx = s;
		r = NULL; /* the stream holds our reference now */
		goto out;
	}
	if (!vd_worker_wait(r, rq->client_fd)) {
		vd_worker_abort(a->worker, r);
		set_error(rs, 400, "the client went away");
		goto out;
	}
	if (r->out.status != VD_OK) {
		set_error(rs, status_of(r->out.status), r->out.error ? r->out.error : "failed");
		goto out;
	}
	record_done(a, r);
	set_json(rs, 200, full_json(a, id, r, &p));
out:
	vd_media_results_free(media, n_media);
	free(media);
	free(urls);
	vd_srv_req_release(r);
	cJSON_Delete(b);
}

static void handle_models(app *a, vd_http_resp *rs)
{
	cJSON *j = cJSON_CreateObject();
	cJSON *data;

	cJSON_AddStringToObject(j, "object", "list");
	data = cJSON_AddArrayToObject(j, "data");
	for (int i = 0; i < a->opts->served_model_name.n; i++) {
		cJSON *m = cJSON_CreateObject();

		cJSON_AddStringToObject(m, "id", a->opts->served_model_name.items[i]);
		cJSON_AddStringToObject(m, "object", "model");
		cJSON_AddNumberToObject(m, "created", (double)time(NULL));
		cJSON_AddStringToObject(m, "owned_by", "vllmd");
		cJSON_AddStringToObject(m, "root", a->cfg->model);
		cJSON_AddNumberToObject(m, "max_model_len", a->max_model_len);
		cJSON_AddItemToArray(data, m);
	}
	set_json(rs, 200, j);
}

static void put_histo(char **p, size_t *len, size_t *cap, const char *name, const char *help,
		      const histo *h)
{
	char line[256];
	uint64_t cum = 0;

	snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (int pass = 0; pass < N_BUCKETS + 3; pass++) {
		size_t n;

		if (pass > 0 && pass <= N_BUCKETS) {
			cum += h->count[pass - 1];
			snprintf(line, sizeof(line), "%s_bucket{le=\"%g\"} %llu\n", name, buckets[pass - 1],
				 (unsigned long long)cum);
		} else if (pass == N_BUCKETS + 1) {
			snprintf(line, sizeof(line), "%s_bucket{le=\"+Inf\"} %llu\n%s_count %llu\n", name,
				 (unsigned long long)h->n, name, (unsigned long long)h->n);
		} else if (pass == N_BUCKETS + 2) {
			snprintf(line, sizeof(line), "%s_sum %g\n", name, h->sum);
		}
		n = strlen(line);
		if (*len + n + 1 > *cap) {
			size_t c = (*len + n + 1) * 2;
			char *q = realloc(*p, c);

			if (!q)
				return;
			*p = q;
			*cap = c;
		}
		memcpy(*p + *len, line, n + 1);
		*len += n;
	}
}

static void handle_metrics(app *a, vd_http_resp *rs)
{
	vd_worker_stats ws;
	char *p = NULL;
	size_t len = 0, cap = 0;
	char head[2048];
	app snap;

	vd_worker_get_stats(a->worker, &ws);
	pthread_mutex_lock(&a->mu);
	snap = *a;
	pthread_mutex_unlock(&a->mu);
	snprintf(head, sizeof(head),
		 "# HELP vllm:num_requests_running Requests in the engine.\n"
		 "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running %d\n"
		 "# HELP vllm:num_requests_waiting Requests waiting for admission.\n"
		 "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting %d\n"
		 "# HELP vllm:kv_cache_usage_perc Fraction of KV blocks in use.\n"
		 "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc %g\n"
		 "# HELP vllm:prefix_cache_queries_total Prompt tokens looked up in the prefix cache.\n"
		 "# TYPE vllm:prefix_cache_queries_total counter\nvllm:prefix_cache_queries_total %lld\n"
		 "# HELP vllm:prefix_cache_hits_total Prompt tokens found in the prefix cache.\n"
		 "# TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total %lld\n"
		 "# HELP vllm:num_preemptions_total Preemptions.\n"
		 "# TYPE vllm:num_preemptions_total counter\nvllm:num_preemptions_total %lld\n"
		 "# HELP vllm:request_success_total Requests received.\n"
		 "# TYPE vllm:request_success_total counter\nvllm:request_success_total %lld\n"
		 "# HELP vllm:request_failure_total Requests that failed.\n"
		 "# TYPE vllm:request_failure_total counter\nvllm:request_failure_total %lld\n"
		 "# HELP vllm:prompt_tokens_total Prompt tokens processed.\n"
		 "# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total %llu\n"
		 "# HELP vllm:generation_tokens_total Tokens generated.\n"
		 "# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total %llu\n",
		 ws.engine.running, ws.engine.waiting,
		 ws.engine.kv_blocks ? 1.0 - (double)ws.engine.kv_blocks_free / ws.engine.kv_blocks : 0.0,
		 (long long)ws.engine.prefix_query_tokens, (long long)ws.engine.prefix_hit_tokens,
		 (long long)ws.engine.preemptions, (long long)ws.requests_total,
		 (long long)ws.requests_failed, (unsigned long long)snap.prompt_tokens,
		 (unsigned long long)snap.gen_tokens);
	cap = strlen(head) + 8192;
	p = malloc(cap);
	if (!p) {
		set_error(rs, 500, "out of memory");
		return;
	}
	len = strlen(head);
	memcpy(p, head, len + 1);
	put_histo(&p, &len, &cap, "vllm:time_to_first_token_seconds", "Time to first token.", &snap.ttft);
	put_histo(&p, &len, &cap, "vllm:inter_token_latency_seconds", "Time between tokens.", &snap.itl);
	put_histo(&p, &len, &cap, "vllm:e2e_request_latency_seconds", "Request latency.", &snap.e2e);
	put_histo(&p, &len, &cap, "vllmd:image_fetch_seconds",
		  "Time to fetch a request's images (concurrently).", &snap.fetch);
	put_histo(&p, &len, &cap, "vllmd:image_decode_seconds",
		  "Time to decode a request's images (input stage).", &snap.decode);
	put_histo(&p, &len, &cap, "vllmd:image_process_seconds",
		  "Time to preprocess a request's images (the family's resize/normalize, "
		  "hashing; input stage).", &snap.process);
	rs->status = 200;
	rs->content_type = "text/plain; version=0.0.4";
	rs->body = p;
	rs->body_len = len;
}

static bool serves_model(const app *a, const char *name)
{
	for (int i = 0; i < a->opts->served_model_name.n; i++)
		if (!strcmp(a->opts->served_model_name.items[i], name))
			return true;
	return !strcmp(a->cfg->model, name);
}

static bool authorized(const app *a, const vd_http_req *rq)
{
	const char *k = a->opts->api_key;

	if (!k || !*k)
		return true;
	return rq->authorization && !strncmp(rq->authorization, "Bearer ", 7) &&
	       !strcmp(rq->authorization + 7, k);
}

static void handle(void *arg, const vd_http_req *rq, vd_http_resp *rs)
{
	app *a = arg;
	bool get = !strcmp(rq->method, "GET"), post = !strcmp(rq->method, "POST");

	pthread_mutex_lock(&a->mu);
	a->http_requests++;
	pthread_mutex_unlock(&a->mu);
	if (!strncmp(rq->path, "/v1/", 4) && !authorized(a, rq)) {
		set_error(rs, 401, "Unauthorized: a valid API key is required (Authorization: Bearer ...).");
		return;
	}
	if (get && !strcmp(rq->path, "/health")) {
		rs->status = atomic_load(&a->draining) ? 503 : 200;
		return;
	}
	if (get && !strcmp(rq->path, "/version")) {
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "version", VD_VERSION);
		set_json(rs, 200, j);
		return;
	}
	if (get && !strcmp(rq->path, "/v1/models")) {
		handle_models(a, rs);
		return;
	}
	if (get && !strcmp(rq->path, "/metrics")) {
		handle_metrics(a, rs);
		return;
	}
	if (post && !strcmp(rq->path, "/v1/chat/completions")) {
		handle_generate(a, rq, rs, true);
		return;
	}
	if (post && !strcmp(rq->path, "/v1/completions")) {
		handle_generate(a, rq, rs, false);
		return;
	}
	{
		char msg[512];

		snprintf(msg, sizeof(msg), "Not found: %s %s", rq->method, rq->path);
		set_error(rs, 404, msg);
	}
}

/* ------------------------------------------------------------ lifecycle */

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	got_signal = sig;
}

/* What the serve loop saw last time it looked, for housekeeping. */
typedef struct quiet_state {
	uint64_t requests;           /* a->http_requests */
	int connections;             /* open connections */
	bool trimmed;                /* trimmed since the last change */
} quiet_state;

/* Once a second on the main thread. glibc keeps the memory a burst freed
 * in its arenas; the engine's part is freed when the engine drains, the
 * connection threads' part only when their keep-alive connections close,
 * seconds later. So hand free pages back (malloc_trim) once nothing is in
 * flight and neither the request count nor the open connections changed
 * for a whole tick, and not again until they do. */
static void housekeeping(app *a, vd_http_server *http, quiet_state *q)
{
	uint64_t requests;
	int connections = vd_http_active(http);

	pthread_mutex_lock(&a->mu);
	requests = a->http_requests;
	pthread_mutex_unlock(&a->mu);
	if (requests != q->requests || connections != q->connections) {
		q->requests = requests;
		q->connections = connections;
		q->trimmed = false;
		return;
	}
	if (q->trimmed || vd_worker_in_flight(a->worker) > 0)
		return;
#ifdef __GLIBC__
	malloc_trim(0);
#endif
	q->trimmed = true;
}

int vd_serve(const vd_config *c, const vd_server_opts *s)
{
	app a = { .cfg = c, .opts = s };
	vd_engine_args ea;
	vd_http_server *http = NULL;
	vd_http_opts ho;
	struct sigaction sa = { .sa_handler = on_signal };
	quiet_state hk = { 0 };
	const vd_tokenizer *tok;
	int rc = 1;
	vd_status st;

	pthread_mutex_init(&a.mu, NULL);
#ifdef __GLIBC__
	/* One connection thread per request, so a burst runs hundreds of
	 * threads. With several arenas, what a burst freed stays in them: glibc
	 * returns a non-main arena's free top only past its trim threshold,
	 * which it raises to twice the largest mmap'ed block freed so far, and
	 * malloc_trim() does not touch that top at all. One arena (the main
	 * heap) is trimmed whole by malloc_trim(); threads still allocate small
	 * blocks from their own caches without the lock (docs/SERVER.md). */
	mallopt(M_ARENA_MAX, 1);
#endif
	vd_config_to_engine_args(c, &ea);
	st = vd_media_opts_from_config(s, &a.media);
	if (st == VD_OK)
		st = vd_media_global_init();
	if (st == VD_OK)
		st = vd_engine_create(&ea, &a.engine);
	if (st != VD_OK) {
		fprintf(stderr, "vllmd: %s\n", vd_error_message());
		goto out;
	}
	a.model_name = s->served_model_name.n ? s->served_model_name.items[0] : c->model;
	a.max_model_len = vd_engine_max_model_len(a.engine);
	{
		int64_t seqs = vd_engine_max_num_seqs(a.engine);
		int64_t waiting = s->max_waiting_requests > 0 ? s->max_waiting_requests : 16 * seqs;

		a.max_in_flight = seqs + waiting < INT_MAX ? (int)(seqs + waiting) : INT_MAX;
	}
	tok = vd_engine_tokenizer(a.engine);
	{
		int32_t bos = vd_tokenizer_bos_id(tok), eos = vd_tokenizer_eos_id(tok);

		st = vd_chat_create(s->chat_template, vd_tokenizer_chat_template(tok),
				    s->chat_template_content_format,
				    bos >= 0 ? vd_tokenizer_id_to_token(tok, bos) : "",
				    eos >= 0 ? vd_tokenizer_id_to_token(tok, eos) : "", &a.chat);
	}
	if (st != VD_OK) {
		fprintf(stderr, "vllmd: %s\n", vd_error_message());
		goto out;
	}
	st = vd_worker_start(a.engine, &a.worker);
	if (st != VD_OK) {
		fprintf(stderr, "vllmd: %s\n", vd_error_message());
		goto out;
	}
	ho = (vd_http_opts){ .host = s->host, .port = (int)s->port,
			     .max_body = (size_t)s->max_request_body_bytes,
			     .keep_alive_s = (unsigned)s->timeout_keep_alive, .handler = handle, .app = &a };
	st = vd_http_start(&ho, &http);
	if (st != VD_OK) {
		fprintf(stderr, "vllmd: %s\n", vd_error_message());
		goto out;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	fprintf(stderr, "vllmd: serving %s (%s) on http://%s:%d\n", a.model_name, c->model, s->host,
		vd_http_port(http));
	fflush(stderr);
	while (!got_signal) {
		sleep(1); /* a signal cuts it short */
		housekeeping(&a, http, &hk);
	}
	/* drain: stop accepting, let in-flight requests finish */
	fprintf(stderr, "vllmd: signal %d: draining %d request(s)\n", (int)got_signal,
		vd_worker_in_flight(a.worker));
	atomic_store(&a.draining, true);
	vd_http_quiesce(http);
	for (int i = 0; i < 60000 && vd_worker_in_flight(a.worker) > 0; i++)
		usleep(10000);
	/* let the last responses flush; idle keep-alive connections just close */
	for (int i = 0; i < 30 && vd_http_active(http) > 0; i++)
		usleep(10000);
	rc = 0;
out:
	vd_http_stop(http);
	vd_worker_stop(a.worker);
	vd_chat_destroy(a.chat);
	vd_engine_destroy(a.engine);
	vd_media_global_cleanup();
	pthread_mutex_destroy(&a.mu);
	return rc;
}
