/* Online serving benchmark against a running vllmd (or any OpenAI-compatible
 * server), as vLLM's benchmark_serving.py: N streaming chat requests with
 * synthetic PNG images (data: URLs), sent on a Poisson schedule by one thread
 * through libcurl's multi interface; per request TTFT, ITL, TPOT and E2E are
 * taken from the SSE stream and the output length from its usage chunk.
 * Usage: bench/serving [options]; --help lists them. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* stb is third-party code: its warnings are silenced here only. */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

#define ME "bench/serving"
#include "bench/util.h"

typedef struct opts {
	const char *host, *base_url, *endpoint, *model, *api_key, *result_file;
	long port, num_prompts, max_concurrency, input_len, output_len;
	long width, height, num_images;
	int jpeg;            /* --image-format jpeg */
	double request_rate; /* INFINITY = all at once */
	unsigned long long seed;
} opts;

static void usage(FILE *f)
{
	fputs("usage: bench/serving [options]\n"
	      "\n"
	      "Online serving benchmark against a running OpenAI-compatible server\n"
	      "(options named as vLLM's benchmarks/benchmark_serving.py). Streams every\n"
	      "request and measures TTFT, TPOT, ITL and end-to-end latency.\n"
	      "\n"
	      "  --host HOST                server host (127.0.0.1)\n"
	      "  --port N                   server port (8000)\n"
	      "  --base-url URL             e.g. http://gpu1:8000 (overrides --host/--port)\n"
	      "  --endpoint PATH            /v1/chat/completions (default), or\n"
	      "                             /v1/completions for text only\n"
	      "  --model NAME               served model name (default: GET /v1/models)\n"
	      "  --api-key KEY              bearer token (default: $OPENAI_API_KEY)\n"
	      "  --num-prompts N            requests (1000)\n"
	      "  --request-rate R           requests/s, Poisson arrivals; inf = all at once (inf)\n"
	      "  --max-concurrency C        most requests in flight (default: no cap)\n"
	      "  --input-len K              words of text per prompt, \"hi hi ...\" (32)\n"
	      "  --output-len L             output tokens: max_tokens = min_tokens = L and\n"
	      "                             ignore_eos (128)\n"
	      "  --image-size S | WxH       synthetic image size; 0 = text only (336)\n"
	      "  --image-format png|jpeg    png: pseudo-random pixels, lossless (default);\n"
	      "                             jpeg: a smooth pseudo-random picture at quality\n"
	      "                             90, about the size of a photo's JPEG\n"
	      "  --num-images N             images per prompt (1)\n"
	      "  --seed N                   arrival times and image pixels (0)\n"
	      "  --result-file FILE         write the results as JSON\n"
	      "  -h, --help\n"
	      "\n"
	      "Every request body (with its base64 images) is built before the clock starts.\n",
	      f);
}

/* ------------------------------------------------------------ option parsing */

enum {
	O_HOST = 256, O_PORT, O_BASE_URL, O_ENDPOINT, O_MODEL, O_API_KEY, O_NUM_PROMPTS,
	O_RATE, O_MAX_CONC, O_INPUT_LEN, O_OUTPUT_LEN, O_IMAGE_SIZE, O_NUM_IMAGES, O_SEED,
	O_RESULT, O_IMAGE_FORMAT,
};

static int parse_args(int argc, char **argv, opts *o)
{
	static const struct option longopts[] = {
		{ "host", required_argument, NULL, O_HOST },
		{ "port", required_argument, NULL, O_PORT },
		{ "base-url", required_argument, NULL, O_BASE_URL },
		{ "endpoint", required_argument, NULL, O_ENDPOINT },
		{ "model", required_argument, NULL, O_MODEL },
		{ "api-key", required_argument, NULL, O_API_KEY },
		{ "num-prompts", required_argument, NULL, O_NUM_PROMPTS },
		{ "request-rate", required_argument, NULL, O_RATE },
		{ "max-concurrency", required_argument, NULL, O_MAX_CONC },
		{ "input-len", required_argument, NULL, O_INPUT_LEN },
		{ "output-len", required_argument, NULL, O_OUTPUT_LEN },
		{ "image-size", required_argument, NULL, O_IMAGE_SIZE },
		{ "image-format", required_argument, NULL, O_IMAGE_FORMAT },
		{ "num-images", required_argument, NULL, O_NUM_IMAGES },
		{ "seed", required_argument, NULL, O_SEED },
		{ "result-file", required_argument, NULL, O_RESULT },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (opts){ .host = "127.0.0.1", .port = 8000, .endpoint = "/v1/chat/completions",
		     .num_prompts = 1000, .input_len = 32, .output_len = 128, .width = 336,
		     .height = 336, .num_images = 1, .request_rate = INFINITY };
	o->api_key = getenv("OPENAI_API_KEY");
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		int rc = 0;

		switch (c) {
		case O_HOST: o->host = optarg; break;
		case O_PORT: rc = parse_long("port", optarg, 1, 65535, &o->port); break;
		case O_BASE_URL: o->base_url = optarg; break;
		case O_ENDPOINT:
			o->endpoint = optarg;
			if (optarg[0] != '/')
				rc = bad("endpoint", optarg, "want a path starting with /");
			break;
		case O_MODEL: o->model = optarg; break;
		case O_API_KEY: o->api_key = optarg; break;
		case O_NUM_PROMPTS: rc = parse_long("num-prompts", optarg, 1, 10000000, &o->num_prompts); break;
		case O_RATE: {
			char *end;

			if (strcmp(optarg, "inf") == 0) {
				o->request_rate = INFINITY;
				break;
			}
			errno = 0;
			o->request_rate = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o->request_rate > 0) ||
			    isinf(o->request_rate))
				rc = bad("request-rate", optarg, "want a positive number or inf");
			break;
		}
		case O_MAX_CONC: rc = parse_long("max-concurrency", optarg, 1, 1000000, &o->max_concurrency); break;
		case O_INPUT_LEN: rc = parse_long("input-len", optarg, 0, 10000000, &o->input_len); break;
		case O_OUTPUT_LEN: rc = parse_long("output-len", optarg, 1, 10000000, &o->output_len); break;
		case O_IMAGE_SIZE: rc = parse_image_size(optarg, &o->width, &o->height); break;
		case O_IMAGE_FORMAT:
			if (strcmp(optarg, "png") && strcmp(optarg, "jpeg"))
				rc = bad("image-format", optarg, "want png or jpeg");
			o->jpeg = !strcmp(optarg, "jpeg");
			break;
		case O_NUM_IMAGES: rc = parse_long("num-images", optarg, 0, 64, &o->num_images); break;
		case O_SEED: rc = parse_u64("seed", optarg, &o->seed); break;
		case O_RESULT: o->result_file = optarg; break;
		case 'h': usage(stdout); return 1;
		default:
			fprintf(stderr, ME ": see --help for the options\n");
			return -1;
		}
		if (rc)
			return -1;
	}
	if (optind < argc) {
		fprintf(stderr, ME ": unexpected argument '%s' (see --help)\n", argv[optind]);
		return -1;
	}
	if (o->width == 0)
		o->num_images = 0;
	if (o->num_images == 0)
		o->width = o->height = 0;
	return 0;
}

/* ------------------------------------------------------------ helpers */

/* Growable byte string; out-of-memory is fatal (a benchmark has nothing to save). */
/* Uniform in (0, 1]. */
static double uniform01(uint64_t *s)
{
	return ((double)(splitmix64(s) >> 11) + 1.0) * 0x1.0p-53;
}

static void enc_sink(void *ctx, void *data, int size)
{
	if (size > 0)
		sb_put(ctx, data, (size_t)size);
}

static void base64(sbuf *out, const unsigned char *p, size_t n)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char q[4];

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
			     (i + 2 < n ? p[i + 2] : 0);

		q[0] = tab[v >> 18 & 63];
		q[1] = tab[v >> 12 & 63];
		q[2] = i + 1 < n ? tab[v >> 6 & 63] : '=';
		q[3] = i + 2 < n ? tab[v & 63] : '=';
		sb_put(out, q, 4);
	}
}

/* A data URL of a w x h image drawn from seed: every request gets its own
 * image, so no server cache can reuse one. PNG: pseudo-random pixels.
 * JPEG: smooth colour waves with a little noise (a photo-like picture of a
 * photo-like size; pure noise would make 2 MB JPEGs). */
static char *image_data_url(long w, long h, uint64_t seed, int jpeg)
{
	size_t n = (size_t)(w * h * 3);
	unsigned char *px = xrealloc(NULL, n + 8);
	sbuf enc = { 0 }, url = { 0 };
	int ok;

	if (jpeg) {
		double f[6];

		for (int k = 0; k < 6; k++)
			f[k] = 0.002 + 0.02 * uniform01(&seed);
		for (long y = 0; y < h; y++)
			for (long x = 0; x < w; x++)
				for (int c = 0; c < 3; c++) {
					double v = 128 + 60 * sin(f[c] * (double)x + c) +
						   50 * cos(f[c + 3] * (double)y - c) +
						   16 * (uniform01(&seed) - 0.5);

					px[(y * w + x) * 3 + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
				}
		ok = stbi_write_jpg_to_func(enc_sink, &enc, (int)w, (int)h, 3, px, 90);
	} else {
		for (size_t i = 0; i < n; i += 8) {
			uint64_t r = splitmix64(&seed);

			memcpy(px + i, &r, 8);
		}
		ok = stbi_write_png_to_func(enc_sink, &enc, (int)w, (int)h, 3, px, (int)(w * 3));
	}
	if (!ok) {
		fprintf(stderr, ME ": image encoding failed\n");
		exit(1);
	}
	free(px);
	sb_puts(&url, jpeg ? "data:image/jpeg;base64," : "data:image/png;base64,");
	base64(&url, (unsigned char *)enc.s, enc.len);
	free(enc.s);
	return url.s;
}

/* ------------------------------------------------------------ requests */

typedef struct req {
	long idx;
	char *body;
	double arrival;          /* scheduled send time, s after start */
	double t_sent, t_last, ttft, e2e;
	double *itl;             /* (n_itl) gaps between content chunks, s */
	long n_itl, cap_itl;
	long prompt_tokens, output_tokens; /* from the usage chunk; -1 = none */
	long http;
	bool chat;               /* chat deltas, else completions text */
	bool got_done, ok;
	char *err;               /* why it failed, or NULL */
	sbuf in;                 /* SSE bytes not yet parsed, or an error body */
	CURL *h;
	char curl_err[CURL_ERROR_SIZE];
} req;

typedef struct bench {
	opts o;
	bool chat;
	char *url;
	struct curl_slist *headers;
	req *reqs;
} bench;

static void set_err(req *r, const char *fmt, const char *a, const char *b)
{
	size_t n;

	if (r->err)
		return;
	n = strlen(fmt) + strlen(a) + strlen(b) + 1;
	r->err = xrealloc(NULL, n);
	snprintf(r->err, n, fmt, a, b);
}

/* One SSE `data:` payload. */
static void on_event(req *r, const char *data, double t, bool chat)
{
	cJSON *j, *e, *u, *ch;
	const cJSON *c = NULL;

	if (strcmp(data, "[DONE]") == 0) {
		r->got_done = true;
		return;
	}
	if (!(j = cJSON_Parse(data))) {
		set_err(r, "unparsable SSE data: %.200s%s", data, "");
		return;
	}
	if ((e = cJSON_GetObjectItemCaseSensitive(j, "error"))) {
		cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");

		set_err(r, "error event: %s%s", cJSON_IsString(m) ? m->valuestring : "(no message)", "");
	}
	ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
	if (ch) {
		if (chat)
			c = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ch, "delta"),
							     "content");
		else
			c = cJSON_GetObjectItemCaseSensitive(ch, "text");
	}
	/* as vLLM: a token event is a chunk with non-empty text */
	if (cJSON_IsString(c) && c->valuestring[0]) {
		if (r->ttft == 0) {
			r->ttft = t - r->t_sent;
		} else {
			if (r->n_itl == r->cap_itl) {
				r->cap_itl = r->cap_itl ? r->cap_itl * 2 : 64;
				r->itl = xrealloc(r->itl, sizeof(double) * (size_t)r->cap_itl);
			}
			r->itl[r->n_itl++] = t - r->t_last;
		}
		r->t_last = t;
	}
	u = cJSON_GetObjectItemCaseSensitive(j, "usage");
	if (cJSON_IsObject(u)) {
		cJSON *p = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
		cJSON *g = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");

		if (cJSON_IsNumber(p))
			r->prompt_tokens = (long)p->valuedouble;
		if (cJSON_IsNumber(g))
			r->output_tokens = (long)g->valuedouble;
	}
	cJSON_Delete(j);
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ctx)
{
	req *r = ctx;
	size_t n = size * nmemb, start = 0;
	double t = now();

	if (r->http == 0)
		curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &r->http);
	if (r->http != 200) {
		if (r->in.len < 4096)
			sb_put(&r->in, p, n);
		return n;
	}
	sb_put(&r->in, p, n);
	/* parse whole lines; keep a partial last line for the next call */
	for (size_t i = 0; i < r->in.len; i++) {
		if (r->in.s[i] != '\n')
			continue;
		r->in.s[i] = '\0';
		if (i > start && r->in.s[i - 1] == '\r')
			r->in.s[i - 1] = '\0';
		if (strncmp(r->in.s + start, "data:", 5) == 0) {
			const char *d = r->in.s + start + 5;

			while (*d == ' ')
				d++;
			on_event(r, d, t, r->chat);
		}
		start = i + 1;
	}
	memmove(r->in.s, r->in.s + start, r->in.len - start);
	r->in.len -= start;
	return n;
}

static char *request_body(const opts *o, bool chat, const char *model, long idx)
{
	cJSON *b = cJSON_CreateObject(), *so;
	sbuf text = { 0 };
	char *s;

	sb_puts(&text, "");
	for (long i = 0; i < o->input_len; i++)
		sb_puts(&text, i ? " hi" : "hi");
	cJSON_AddStringToObject(b, "model", model);
	if (chat) {
		cJSON *msgs = cJSON_AddArrayToObject(b, "messages"), *m = cJSON_CreateObject();
		cJSON *content = cJSON_AddArrayToObject(m, "content");

		cJSON_AddStringToObject(m, "role", "user");
		for (long j = 0; j < o->num_images; j++) {
			cJSON *part = cJSON_CreateObject(), *iu;
			char *url = image_data_url(o->width, o->height,
						   o->seed * 0x100000001b3ull + (uint64_t)(idx * 64 + j) + 1,
						   o->jpeg);

			cJSON_AddStringToObject(part, "type", "image_url");
			iu = cJSON_AddObjectToObject(part, "image_url");
			cJSON_AddStringToObject(iu, "url", url);
			free(url);
			cJSON_AddItemToArray(content, part);
		}
		{
			cJSON *part = cJSON_CreateObject();

			cJSON_AddStringToObject(part, "type", "text");
			cJSON_AddStringToObject(part, "text", text.s);
			cJSON_AddItemToArray(content, part);
		}
		cJSON_AddItemToArray(msgs, m);
	} else {
		cJSON_AddStringToObject(b, "prompt", text.s);
	}
	free(text.s);
	cJSON_AddNumberToObject(b, "max_tokens", (double)o->output_len);
	cJSON_AddNumberToObject(b, "min_tokens", (double)o->output_len);
	cJSON_AddBoolToObject(b, "ignore_eos", true);
	cJSON_AddNumberToObject(b, "temperature", 0);
	cJSON_AddBoolToObject(b, "stream", true);
	so = cJSON_AddObjectToObject(b, "stream_options");
	cJSON_AddBoolToObject(so, "include_usage", true);
	s = cJSON_PrintUnformatted(b);
	cJSON_Delete(b);
	if (!s) {
		fprintf(stderr, ME ": out of memory building request bodies\n");
		exit(1);
	}
	return s;
}

static int start_request(bench *b, CURLM *m, req *r)
{
	if (!(r->h = curl_easy_init()))
		return -1;
	curl_easy_setopt(r->h, CURLOPT_URL, b->url);
	curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, b->headers);
	curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, r->body);
	curl_easy_setopt(r->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(r->body));
	curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(r->h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->h, CURLOPT_PRIVATE, r);
	curl_easy_setopt(r->h, CURLOPT_ERRORBUFFER, r->curl_err);
	curl_easy_setopt(r->h, CURLOPT_CONNECTTIMEOUT, 30L);
	curl_easy_setopt(r->h, CURLOPT_NOSIGNAL, 1L);
	r->t_sent = now();
	if (curl_multi_add_handle(m, r->h) != CURLM_OK) {
		curl_easy_cleanup(r->h);
		r->h = NULL;
		return -1;
	}
	return 0;
}

static void finish_request(CURLM *m, req *r, CURLcode res)
{
	double t = now();
	char code[32];

	r->e2e = t - r->t_sent;
	if (r->http == 0)
		curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &r->http);
	snprintf(code, sizeof(code), "%ld", r->http);
	if (res != CURLE_OK)
		set_err(r, "transfer failed: %s%s",
			r->curl_err[0] ? r->curl_err : curl_easy_strerror(res), "");
	else if (r->http != 200)
		set_err(r, "HTTP %s: %.300s", code, r->in.s ? r->in.s : "");
	else if (!r->got_done)
		set_err(r, "the stream ended without data: [DONE]%s%s", "", "");
	else if (r->output_tokens < 0)
		set_err(r, "no usage chunk in the stream (stream_options.include_usage)%s%s", "", "");
	r->ok = !r->err;
	curl_multi_remove_handle(m, r->h);
	curl_easy_cleanup(r->h);
	r->h = NULL;
	free(r->in.s);
	r->in = (sbuf){ 0 };
}

/* ------------------------------------------------------------ statistics */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

typedef struct stats {
	double mean, median, std, p90, p99;
} stats;

/* numpy's percentile (linear interpolation) of a sorted array */
static double percentile(const double *v, long n, double p)
{
	double x = p / 100.0 * (double)(n - 1);
	long lo = (long)floor(x);

	if (lo + 1 >= n)
		return v[n - 1];
	return v[lo] + (v[lo + 1] - v[lo]) * (x - (double)lo);
}

/* Sorts v in place; values in seconds, stats in ms. */
static stats summarize(double *v, long n)
{
	stats s = { 0 };
	double sum = 0, sq = 0;

	if (n == 0)
		return s;
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	for (long i = 0; i < n; i++)
		sum += v[i];
	s.mean = sum / (double)n;
	for (long i = 0; i < n; i++)
		sq += (v[i] - s.mean) * (v[i] - s.mean);
	s.std = sqrt(sq / (double)n) * 1e3;
	s.mean *= 1e3;
	s.median = percentile(v, n, 50) * 1e3;
	s.p90 = percentile(v, n, 90) * 1e3;
	s.p99 = percentile(v, n, 99) * 1e3;
	return s;
}

static void rule(const char *title, char c)
{
	int n = (int)strlen(title), pad = 50 - n, left = pad / 2;

	for (int i = 0; i < left; i++)
		putchar(c);
	fputs(title, stdout);
	for (int i = 0; i < pad - left; i++)
		putchar(c);
	putchar('\n');
}

static void print_stats(const char *title, const char *name, stats s)
{
	char k[64];

	rule(title, '-');
	snprintf(k, sizeof(k), "Mean %s (ms):", name);
	printf("%-40s %-10.2f\n", k, s.mean);
	snprintf(k, sizeof(k), "Median %s (ms):", name);
	printf("%-40s %-10.2f\n", k, s.median);
	snprintf(k, sizeof(k), "P90 %s (ms):", name);
	printf("%-40s %-10.2f\n", k, s.p90);
	snprintf(k, sizeof(k), "P99 %s (ms):", name);
	printf("%-40s %-10.2f\n", k, s.p99);
}

static void add_stats(cJSON *j, const char *name, stats s)
{
	char k[64];

	snprintf(k, sizeof(k), "mean_%s_ms", name);
	cJSON_AddNumberToObject(j, k, s.mean);
	snprintf(k, sizeof(k), "median_%s_ms", name);
	cJSON_AddNumberToObject(j, k, s.median);
	snprintf(k, sizeof(k), "std_%s_ms", name);
	cJSON_AddNumberToObject(j, k, s.std);
	snprintf(k, sizeof(k), "p90_%s_ms", name);
	cJSON_AddNumberToObject(j, k, s.p90);
	snprintf(k, sizeof(k), "p99_%s_ms", name);
	cJSON_AddNumberToObject(j, k, s.p99);
}

/* ------------------------------------------------------------ main parts */

/* The first model GET /v1/models lists (malloc'ed), or NULL with a message. */
static char *ask_model(const char *base, struct curl_slist *headers)
{
	CURL *h = curl_easy_init();
	sbuf body = { 0 }, url = { 0 };
	char err[CURL_ERROR_SIZE] = "", *name = NULL;
	long http = 0;
	CURLcode res;
	cJSON *j = NULL, *id;

	if (!h)
		return NULL;
	sb_puts(&url, base);
	sb_puts(&url, "/v1/models");
	sb_puts(&body, "");
	curl_easy_setopt(h, CURLOPT_URL, url.s);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	{
		FILE *f = open_memstream(&body.s, &body.len);

		free(body.s);
		body.s = NULL;
		if (!f) {
			curl_easy_cleanup(h);
			free(url.s);
			return NULL;
		}
		curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
		res = curl_easy_perform(h);
		fclose(f);
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
	curl_easy_cleanup(h);
	if (res != CURLE_OK || http != 200) {
		fprintf(stderr, ME ": GET %s to learn the model name: %s; is the server up? "
				"(or pass --model)\n",
			url.s, res != CURLE_OK ? (err[0] ? err : curl_easy_strerror(res)) : body.s);
		goto out;
	}
	j = cJSON_Parse(body.s);
	id = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "data"), 0), "id");
	if (!cJSON_IsString(id)) {
		fprintf(stderr, ME ": GET %s: no data[0].id in %.200s (pass --model)\n", url.s, body.s);
		goto out;
	}
	name = strdup(id->valuestring);
out:
	cJSON_Delete(j);
	free(body.s);
	free(url.s);
	return name;
}

static int write_result(const bench *b, const char *model, double duration, long completed,
			long long in_tok, long long out_tok, stats ttft, stats tpot, stats itl,
			stats e2e)
{
	const opts *o = &b->o;
	cJSON *j = cJSON_CreateObject();
	char *txt;

	cJSON_AddStringToObject(j, "backend", "openai-chat");
	cJSON_AddStringToObject(j, "base_url", b->url);
	cJSON_AddStringToObject(j, "model_id", model);
	cJSON_AddNumberToObject(j, "num_prompts", (double)o->num_prompts);
	if (isinf(o->request_rate))
		cJSON_AddStringToObject(j, "request_rate", "inf");
	else
		cJSON_AddNumberToObject(j, "request_rate", o->request_rate);
	if (o->max_concurrency)
		cJSON_AddNumberToObject(j, "max_concurrency", (double)o->max_concurrency);
	else
		cJSON_AddNullToObject(j, "max_concurrency");
	cJSON_AddNumberToObject(j, "input_len", (double)o->input_len);
	cJSON_AddNumberToObject(j, "output_len", (double)o->output_len);
	cJSON_AddNumberToObject(j, "image_width", (double)o->width);
	cJSON_AddNumberToObject(j, "image_height", (double)o->height);
	cJSON_AddNumberToObject(j, "num_images", (double)o->num_images);
	cJSON_AddStringToObject(j, "image_format", o->jpeg ? "jpeg" : "png");
	cJSON_AddNumberToObject(j, "seed", (double)o->seed);
	cJSON_AddNumberToObject(j, "duration", duration);
	cJSON_AddNumberToObject(j, "completed", (double)completed);
	cJSON_AddNumberToObject(j, "failed", (double)(o->num_prompts - completed));
	cJSON_AddNumberToObject(j, "total_input_tokens", (double)in_tok);
	cJSON_AddNumberToObject(j, "total_output_tokens", (double)out_tok);
	cJSON_AddNumberToObject(j, "request_throughput", (double)completed / duration);
	cJSON_AddNumberToObject(j, "output_throughput", (double)out_tok / duration);
	cJSON_AddNumberToObject(j, "total_token_throughput", (double)(in_tok + out_tok) / duration);
	add_stats(j, "ttft", ttft);
	add_stats(j, "tpot", tpot);
	add_stats(j, "itl", itl);
	add_stats(j, "e2el", e2e);
	/* per request, in request order, seconds as vLLM */
	{
		cJSON *il = cJSON_AddArrayToObject(j, "input_lens");
		cJSON *ol = cJSON_AddArrayToObject(j, "output_lens");
		cJSON *tf = cJSON_AddArrayToObject(j, "ttfts");
		cJSON *el = cJSON_AddArrayToObject(j, "e2els");
		cJSON *it = cJSON_AddArrayToObject(j, "itls");
		cJSON *er = cJSON_AddArrayToObject(j, "errors");

		for (long i = 0; i < o->num_prompts; i++) {
			const req *r = &b->reqs[i];

			cJSON_AddItemToArray(il, cJSON_CreateNumber((double)r->prompt_tokens));
			cJSON_AddItemToArray(ol, cJSON_CreateNumber((double)r->output_tokens));
			cJSON_AddItemToArray(tf, cJSON_CreateNumber(r->ttft));
			cJSON_AddItemToArray(el, cJSON_CreateNumber(r->e2e));
			cJSON_AddItemToArray(it, cJSON_CreateDoubleArray(r->itl ? r->itl : &r->e2e,
									 (int)r->n_itl));
			cJSON_AddItemToArray(er, cJSON_CreateString(r->err ? r->err : ""));
		}
	}
	txt = cJSON_Print(j);
	cJSON_Delete(j);
	return write_text(o->result_file, txt);
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	bench b = { 0 };
	opts *o = &b.o;
	sbuf base = { 0 }, url = { 0 }, auth = { 0 };
	char *model = NULL;
	CURLM *m = NULL;
	long next = 0, inflight = 0, finished = 0, completed = 0, mismatched = 0, first_err = -1;
	long n_itl = 0, n_tpot = 0;
	long long in_tok = 0, out_tok = 0;
	double *ttfts = NULL, *tpots = NULL, *itls = NULL, *e2es = NULL;
	double t0, start, duration;
	uint64_t rs;
	int rc = 1, prc;

	if ((prc = parse_args(argc, argv, o)) != 0)
		return prc > 0 ? 0 : 2;
	{
		size_t el = strlen(o->endpoint);

		b.chat = el >= 17 && strcmp(o->endpoint + el - 17, "/chat/completions") == 0;
		if (!b.chat && !(el >= 12 && strcmp(o->endpoint + el - 12, "/completions") == 0)) {
			fprintf(stderr, ME ": --endpoint %s: want a .../chat/completions or "
					".../completions path\n",
				o->endpoint);
			return 2;
		}
		if (!b.chat && o->num_images > 0) {
			fprintf(stderr, ME ": --endpoint %s takes no images; use "
					"/v1/chat/completions or --image-size 0\n",
				o->endpoint);
			return 2;
		}
	}
	/* random pixels do not compress: spend no time trying (filter 0, least effort) */
	stbi_write_force_png_filter = 0;
	stbi_write_png_compression_level = 1;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, ME ": curl_global_init failed\n");
		return 1;
	}
	raise_fd_limit();
	if (o->base_url) {
		sb_puts(&base, o->base_url);
		while (base.len > 0 && base.s[base.len - 1] == '/')
			base.s[--base.len] = '\0';
	} else {
		char hp[300];

		snprintf(hp, sizeof(hp), "http://%s%s%s:%ld", strchr(o->host, ':') ? "[" : "", o->host,
			 strchr(o->host, ':') ? "]" : "", o->port);
		sb_puts(&base, hp);
	}
	sb_puts(&url, base.s);
	sb_puts(&url, o->endpoint);
	b.url = url.s;
	b.headers = curl_slist_append(b.headers, "Content-Type: application/json");
	b.headers = curl_slist_append(b.headers, "Expect:");
	if (o->api_key && o->api_key[0]) {
		sb_puts(&auth, "Authorization: Bearer ");
		sb_puts(&auth, o->api_key);
		b.headers = curl_slist_append(b.headers, auth.s);
	}
	if (!b.headers) {
		fprintf(stderr, ME ": out of memory\n");
		goto out;
	}
	if (o->model) {
		model = strdup(o->model);
	} else if (!(model = ask_model(base.s, b.headers))) {
		goto out;
	}

	/* every body and arrival time before the clock starts */
	t0 = now();
	b.reqs = xrealloc(NULL, sizeof(req) * (size_t)o->num_prompts);
	memset(b.reqs, 0, sizeof(req) * (size_t)o->num_prompts);
	rs = o->seed ^ 0xa5a5a5a5deadbeefull;
	for (long i = 0; i < o->num_prompts; i++) {
		req *r = &b.reqs[i];

		r->idx = i;
		r->chat = b.chat;
		r->prompt_tokens = r->output_tokens = -1;
		r->body = request_body(o, b.chat, model, i);
		if (i > 0)
			r->arrival = b.reqs[i - 1].arrival +
				     (isinf(o->request_rate) ? 0 : -log(uniform01(&rs)) / o->request_rate);
	}
	printf("Model: %s at %s\n", model, b.url);
	printf("Prepared %ld requests (%ld image(s) of %ldx%ld, %ld words, %ld output tokens) "
	       "in %.2f s; body %.1f KiB\n",
	       o->num_prompts, o->num_images, o->width, o->height, o->input_len, o->output_len,
	       now() - t0, (double)strlen(b.reqs[0].body) / 1024.0);
	if (isinf(o->request_rate))
		printf("Traffic request rate: inf\n");
	else
		printf("Traffic request rate: %g (Poisson, seed %llu)\n", o->request_rate, o->seed);
	if (o->max_concurrency)
		printf("Maximum request concurrency: %ld\n", o->max_concurrency);
	fflush(stdout);

	if (!(m = curl_multi_init())) {
		fprintf(stderr, ME ": curl_multi_init failed\n");
		goto out;
	}
	start = now();
	while (finished < o->num_prompts) {
		double t = now() - start;
		int running, left;
		long wait_ms = 100;
		CURLMsg *msg;

		while (next < o->num_prompts && b.reqs[next].arrival <= t &&
		       (!o->max_concurrency || inflight < o->max_concurrency)) {
			req *r = &b.reqs[next++];

			if (start_request(&b, m, r) != 0) {
				set_err(r, "could not start the transfer (curl)%s%s", "", "");
				r->e2e = 0;
				finished++;
				continue;
			}
			inflight++;
		}
		if (curl_multi_perform(m, &running) != CURLM_OK) {
			fprintf(stderr, ME ": curl_multi_perform failed\n");
			goto out;
		}
		while ((msg = curl_multi_info_read(m, &left))) {
			req *r;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
			finish_request(m, r, msg->data.result);
			inflight--;
			finished++;
			wait_ms = 0; /* a slot opened: launch at once */
		}
		if (next < o->num_prompts && (!o->max_concurrency || inflight < o->max_concurrency)) {
			double d = (b.reqs[next].arrival - (now() - start)) * 1e3;

			if (d < (double)wait_ms)
				wait_ms = d > 0 ? (long)ceil(d) : 0;
		}
		if (wait_ms > 0 && curl_multi_poll(m, NULL, 0, (int)wait_ms, NULL) != CURLM_OK) {
			fprintf(stderr, ME ": curl_multi_poll failed\n");
			goto out;
		}
	}
	duration = now() - start;

	ttfts = xrealloc(NULL, sizeof(double) * (size_t)o->num_prompts);
	tpots = xrealloc(NULL, sizeof(double) * (size_t)o->num_prompts);
	e2es = xrealloc(NULL, sizeof(double) * (size_t)o->num_prompts);
	for (long i = 0; i < o->num_prompts; i++)
		n_itl += b.reqs[i].ok ? b.reqs[i].n_itl : 0;
	itls = xrealloc(NULL, sizeof(double) * (size_t)n_itl);
	n_itl = 0;
	for (long i = 0; i < o->num_prompts; i++) {
		req *r = &b.reqs[i];

		if (!r->ok) {
			if (first_err < 0)
				first_err = i;
			continue;
		}
		in_tok += r->prompt_tokens > 0 ? r->prompt_tokens : 0;
		out_tok += r->output_tokens;
		mismatched += r->output_tokens != o->output_len;
		ttfts[completed] = r->ttft;
		e2es[completed] = r->e2e;
		if (r->output_tokens > 1)
			tpots[n_tpot++] = (r->e2e - r->ttft) / (double)(r->output_tokens - 1);
		memcpy(itls + n_itl, r->itl, sizeof(double) * (size_t)r->n_itl);
		n_itl += r->n_itl;
		completed++;
	}
	{
		stats sttft, stpot, sitl, se2e;

		/* summarize() sorts these copies; the per-request values stay in b.reqs */
		sttft = summarize(ttfts, completed);
		stpot = summarize(tpots, n_tpot);
		sitl = summarize(itls, n_itl);
		se2e = summarize(e2es, completed);
		rule(" Serving Benchmark Result ", '=');
		printf("%-40s %-10ld\n", "Successful requests:", completed);
		printf("%-40s %-10ld\n", "Failed requests:", o->num_prompts - completed);
		printf("%-40s %-10.2f\n", "Benchmark duration (s):", duration);
		printf("%-40s %-10lld\n", "Total input tokens:", in_tok);
		printf("%-40s %-10lld\n", "Total generated tokens:", out_tok);
		printf("%-40s %-10.2f\n", "Request throughput (req/s):", (double)completed / duration);
		printf("%-40s %-10.2f\n", "Output token throughput (tok/s):", (double)out_tok / duration);
		printf("%-40s %-10.2f\n", "Total Token throughput (tok/s):",
		       (double)(in_tok + out_tok) / duration);
		print_stats("Time to First Token", "TTFT", sttft);
		print_stats("Time per Output Token (excl. 1st token)", "TPOT", stpot);
		print_stats("Inter-token Latency", "ITL", sitl);
		print_stats("End-to-end Latency", "E2EL", se2e);
		rule("", '=');
		if (mismatched)
			printf("Warning: %ld successful request(s) made a number of output tokens other "
			       "than --output-len %ld\n",
			       mismatched, o->output_len);
		if (first_err >= 0)
			printf("First error (request %ld): %s\n", first_err, b.reqs[first_err].err);
		if (o->result_file && write_result(&b, model, duration, completed, in_tok, out_tok,
						   sttft, stpot, sitl, se2e) != 0)
			goto out;
	}
	rc = completed == o->num_prompts ? 0 : 1;
out:
	for (long i = 0; b.reqs && i < o->num_prompts; i++) {
		req *r = &b.reqs[i];

		if (r->h) {
			curl_multi_remove_handle(m, r->h);
			curl_easy_cleanup(r->h);
		}
		free(r->body);
		free(r->itl);
		free(r->err);
		free(r->in.s);
	}
	if (m)
		curl_multi_cleanup(m);
	free(b.reqs);
	free(ttfts);
	free(tpots);
	free(itls);
	free(e2es);
	free(model);
	curl_slist_free_all(b.headers);
	free(auth.s);
	free(url.s);
	free(base.s);
	curl_global_cleanup();
	return rc;
}
