/* Offline throughput through the C API, as vLLM's benchmark_throughput.py:
 * N synthetic requests (K text tokens, one or more pseudo-random RGB images,
 * exactly L output tokens with ignore_eos) handed to one vd_llm_generate
 * call; only that call is timed. Prompts use the family's chat format and
 * image placeholder, picked from config.json "architectures".
 * Usage: bench/throughput --model DIR [options]; --help lists them. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ME "bench/throughput"
#include "bench/util.h"
#include "bench/common.h"
#include "vllmd/llm.h"
#include "vllmd/tokenizer.h"

typedef struct opts {
	const char *model, *tokenizer, *plugin_dir, *device, *dtype, *kv_cache_dtype;
	const char *prompt_template, *output_json;
	long num_prompts, input_len, output_len, warmup;
	long width, height, num_images;
	long max_num_seqs, max_num_batched_tokens, max_model_len, block_size, num_threads;
	long long kv_cache_memory;
	double gpu_memory_utilization;
	int enable_prefix_caching, enforce_eager;
	unsigned long long seed;
} opts;

static void usage(FILE *f)
{
	fputs("usage: bench/throughput --model DIR [options]\n"
	      "\n"
	      "Offline throughput of vd_llm_generate on synthetic multimodal requests\n"
	      "(options named as vLLM's benchmarks/benchmark_throughput.py).\n"
	      "\n"
	      "  --model DIR                  checkpoint directory (required)\n"
	      "  --tokenizer DIR              tokenizer directory (default: --model)\n"
	      "  --plugin-dir DIR             model-family plugins (default: installed dir)\n"
	      "  --device auto|cpu|cuda       compute backend (auto)\n"
	      "  --dtype auto|float32|bfloat16|float16|float|half   (auto)\n"
	      "  --kv-cache-dtype auto|fp8|fp8_e4m3   KV-cache element type (auto)\n"
	      "  --num-prompts N              timed requests (1000)\n"
	      "  --warmup N                   untimed requests run first (8)\n"
	      "  --input-len K                text tokens per prompt (32)\n"
	      "  --output-len L               output tokens per request, ignore_eos (128)\n"
	      "  --image-size S | WxH         synthetic RGB image size; 0 = text only (336)\n"
	      "  --num-images N               images per prompt (1)\n"
	      "  --prompt-template T          prompt with {text} and the image placeholders;\n"
	      "                               \\n is a newline (default: from architectures)\n"
	      "  --max-num-seqs N             (engine default 256)\n"
	      "  --max-num-batched-tokens N   (0 = auto)\n"
	      "  --max-model-len N            (0 = the model's)\n"
	      "  --block-size N               KV block size in tokens (16)\n"
	      "  --kv-cache-memory SIZE       bytes, or 8G, 512MiB, 1.5GB (0 = auto)\n"
	      "  --gpu-memory-utilization F   (0.9)\n"
	      "  --enable-prefix-caching, --no-enable-prefix-caching   (off)\n"
	      "  --enforce-eager              no step graphs (CUDA graphs) for decode steps\n"
	      "  --num-threads N              CPU threads (0 = all)\n"
	      "  --seed N                     engine and image seed (0)\n"
	      "  --output-json FILE           write the results and options as JSON\n"
	      "  -h, --help\n",
	      f);
}

/* ------------------------------------------------------------ option parsing */

/* Bytes from "8589934592", "8G", "512MiB", "1.5GB" with vllmd's (and vLLM's)
 * convention: K/M/G/T and KiB.. are powers of 1024, k/m/g/t and kB.. of 1000. */
static int parse_size(const char *s, long long *out)
{
	static const struct { const char *unit; double mult; } units[] = {
		{ "", 1 }, { "B", 1 },
		{ "k", 1e3 }, { "kB", 1e3 }, { "KB", 1e3 }, { "K", 1024.0 }, { "KiB", 1024.0 },
		{ "m", 1e6 }, { "MB", 1e6 }, { "M", 1048576.0 }, { "MiB", 1048576.0 },
		{ "g", 1e9 }, { "GB", 1e9 }, { "G", 1073741824.0 }, { "GiB", 1073741824.0 },
		{ "t", 1e12 }, { "TB", 1e12 }, { "T", 1099511627776.0 }, { "TiB", 1099511627776.0 },
	};
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !(v >= 0) || s[0] == '-' || s[0] == '+')
		return bad("kv-cache-memory", s, "want bytes, or a number with K/M/G/T, KiB.., kB..");
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			v *= units[i].mult;
			if (v > 9.2e18)
				break;
			*out = (long long)(v + 0.5);
			return 0;
		}
	}
	return bad("kv-cache-memory", s, "want bytes, or a number with K/M/G/T, KiB.., kB..");
}

static int one_of(const char *opt, const char *s, const char *const *choices)
{
	for (int i = 0; choices[i]; i++)
		if (strcmp(s, choices[i]) == 0)
			return 0;
	return bad(opt, s, "not one of the choices (see --help)");
}

enum {
	O_MODEL = 256, O_TOKENIZER, O_PLUGIN_DIR, O_DEVICE, O_DTYPE, O_NUM_PROMPTS, O_WARMUP,
	O_INPUT_LEN, O_OUTPUT_LEN, O_IMAGE_SIZE, O_NUM_IMAGES, O_TEMPLATE, O_MAX_NUM_SEQS,
	O_MAX_BATCHED, O_MAX_MODEL_LEN, O_BLOCK_SIZE, O_KV_MEM, O_GPU_UTIL, O_PREFIX,
	O_NO_PREFIX, O_EAGER, O_THREADS, O_SEED, O_OUTPUT_JSON, O_KV_DTYPE,
};

static int parse_args(int argc, char **argv, opts *o)
{
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, O_MODEL },
		{ "tokenizer", required_argument, NULL, O_TOKENIZER },
		{ "plugin-dir", required_argument, NULL, O_PLUGIN_DIR },
		{ "device", required_argument, NULL, O_DEVICE },
		{ "dtype", required_argument, NULL, O_DTYPE },
		{ "kv-cache-dtype", required_argument, NULL, O_KV_DTYPE },
		{ "num-prompts", required_argument, NULL, O_NUM_PROMPTS },
		{ "warmup", required_argument, NULL, O_WARMUP },
		{ "input-len", required_argument, NULL, O_INPUT_LEN },
		{ "output-len", required_argument, NULL, O_OUTPUT_LEN },
		{ "image-size", required_argument, NULL, O_IMAGE_SIZE },
		{ "num-images", required_argument, NULL, O_NUM_IMAGES },
		{ "prompt-template", required_argument, NULL, O_TEMPLATE },
		{ "max-num-seqs", required_argument, NULL, O_MAX_NUM_SEQS },
		{ "max-num-batched-tokens", required_argument, NULL, O_MAX_BATCHED },
		{ "max-model-len", required_argument, NULL, O_MAX_MODEL_LEN },
		{ "block-size", required_argument, NULL, O_BLOCK_SIZE },
		{ "kv-cache-memory", required_argument, NULL, O_KV_MEM },
		{ "gpu-memory-utilization", required_argument, NULL, O_GPU_UTIL },
		{ "enable-prefix-caching", no_argument, NULL, O_PREFIX },
		{ "no-enable-prefix-caching", no_argument, NULL, O_NO_PREFIX },
		{ "enforce-eager", no_argument, NULL, O_EAGER },
		{ "num-threads", required_argument, NULL, O_THREADS },
		{ "seed", required_argument, NULL, O_SEED },
		{ "output-json", required_argument, NULL, O_OUTPUT_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const devices[] = { "auto", "cpu", "cuda", NULL };
	static const char *const dtypes[] = { "auto", "float32", "bfloat16", "float16", "float",
					      "half", NULL };
	static const char *const kv_dtypes[] = { "auto", "fp8", "fp8_e4m3", NULL };
	int c;

	*o = (opts){ .device = "auto", .dtype = "auto", .kv_cache_dtype = "auto",
		     .num_prompts = 1000, .warmup = 8,
		     .input_len = 32, .output_len = 128, .width = 336, .height = 336,
		     .num_images = 1, .max_num_seqs = 256, .block_size = 16,
		     .gpu_memory_utilization = 0.9 };
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		int rc = 0;

		switch (c) {
		case O_MODEL: o->model = optarg; break;
		case O_TOKENIZER: o->tokenizer = optarg; break;
		case O_PLUGIN_DIR: o->plugin_dir = optarg; break;
		case O_DEVICE: rc = one_of("device", optarg, devices); o->device = optarg; break;
		case O_DTYPE: rc = one_of("dtype", optarg, dtypes); o->dtype = optarg; break;
		case O_KV_DTYPE:
			rc = one_of("kv-cache-dtype", optarg, kv_dtypes);
			o->kv_cache_dtype = optarg;
			break;
		case O_NUM_PROMPTS: rc = parse_long("num-prompts", optarg, 1, 10000000, &o->num_prompts); break;
		case O_WARMUP: rc = parse_long("warmup", optarg, 0, 1000000, &o->warmup); break;
		case O_INPUT_LEN: rc = parse_long("input-len", optarg, 0, 10000000, &o->input_len); break;
		case O_OUTPUT_LEN: rc = parse_long("output-len", optarg, 1, 10000000, &o->output_len); break;
		case O_IMAGE_SIZE: rc = parse_image_size(optarg, &o->width, &o->height); break;
		case O_NUM_IMAGES: rc = parse_long("num-images", optarg, 0, 64, &o->num_images); break;
		case O_TEMPLATE: o->prompt_template = optarg; break;
		case O_MAX_NUM_SEQS: rc = parse_long("max-num-seqs", optarg, 1, 1 << 20, &o->max_num_seqs); break;
		case O_MAX_BATCHED: rc = parse_long("max-num-batched-tokens", optarg, 0, 1 << 30, &o->max_num_batched_tokens); break;
		case O_MAX_MODEL_LEN: rc = parse_long("max-model-len", optarg, 0, 1 << 30, &o->max_model_len); break;
		case O_BLOCK_SIZE: rc = parse_long("block-size", optarg, 1, 1 << 16, &o->block_size); break;
		case O_KV_MEM: rc = parse_size(optarg, &o->kv_cache_memory); break;
		case O_GPU_UTIL: {
			char *end;

			errno = 0;
			o->gpu_memory_utilization = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o->gpu_memory_utilization > 0) ||
			    o->gpu_memory_utilization > 1)
				rc = bad("gpu-memory-utilization", optarg, "want a number in (0, 1]");
			break;
		}
		case O_PREFIX: o->enable_prefix_caching = 1; break;
		case O_NO_PREFIX: o->enable_prefix_caching = 0; break;
		case O_EAGER: o->enforce_eager = 1; break;
		case O_THREADS: rc = parse_long("num-threads", optarg, 0, 4096, &o->num_threads); break;
		case O_SEED: rc = parse_u64("seed", optarg, &o->seed); break;
		case O_OUTPUT_JSON: o->output_json = optarg; break;
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
	if (!o->model) {
		fprintf(stderr, ME ": --model DIR is required (see --help)\n");
		return -1;
	}
	if (o->width == 0)
		o->num_images = 0;
	if (o->num_images == 0)
		o->width = o->height = 0;
	return 0;
}

/* ------------------------------------------------------------ prompts */

/* The user's template with "\n" escapes turned into newlines. */
static char *user_template(const char *t)
{
	sbuf b = { 0 };

	for (; *t; t++) {
		if (t[0] == '\\' && t[1] == 'n') {
			sb_put(&b, "\n", 1);
			t++;
		} else {
			sb_put(&b, t, 1);
		}
	}
	sb_put(&b, "", 0);
	return b.s;
}

/* Tokens of the prompt, or -1 (message printed). */
static long count_tokens(const vd_tokenizer *tok, const char *prompt)
{
	int32_t *ids = NULL;
	size_t n = 0;

	if (vd_tokenizer_encode(tok, prompt, strlen(prompt), true, &ids, &n) != VD_OK) {
		fprintf(stderr, ME ": tokenize: %s\n", vd_error_message());
		return -1;
	}
	free(ids);
	return (long)n;
}

/* Number of words whose text adds k tokens to the prompt (or the closest);
 * *text_tokens is what that count adds. Without a tokenizer: k words. */
static long calibrate_words(const char *dir, const char *tmpl, long k, long *text_tokens,
			    bool *exact)
{
	char tj[4096], tc[4096];
	vd_tokenizer *tok = NULL;
	long base, best = k, best_n = -1, w = k;

	*text_tokens = -1;
	*exact = false;
	snprintf(tj, sizeof(tj), "%s/tokenizer.json", dir);
	snprintf(tc, sizeof(tc), "%s/tokenizer_config.json", dir);
	if (vd_tokenizer_load(tj, tc, &tok) != VD_OK &&
	    vd_tokenizer_load(tj, NULL, &tok) != VD_OK) {
		fprintf(stderr, ME ": warning: no tokenizer in %s (%s); using %ld words "
				"of text, the measured prompt length is reported\n",
			dir, vd_error_message(), k);
		return k;
	}
	{
		char *p = bench_fill(tmpl, 0);

		base = count_tokens(tok, p);
		free(p);
	}
	for (int iter = 0; base >= 0 && iter < 16 && w >= 0; iter++) {
		char *p = bench_fill(tmpl, w);
		long n = count_tokens(tok, p);

		free(p);
		if (n < 0)
			break;
		n -= base;
		if (best_n < 0 || labs(n - k) < labs(best_n - k)) {
			best = w;
			best_n = n;
		}
		if (n == k)
			break;
		w += k - n;
	}
	vd_tokenizer_destroy(tok);
	*text_tokens = best_n;
	*exact = best_n == k;
	return best;
}

/* ------------------------------------------------------------ images */

/* ------------------------------------------------------------ running */

typedef struct totals {
	long long prompt_tokens, output_tokens;
} totals;

/* Every output must be VD_OK with exactly `want` tokens; prints the first
 * few that are not and returns their number. */
static long check_outputs(const vd_output *outs, long n, long want, totals *t)
{
	long failed = 0;

	for (long i = 0; i < n; i++) {
		const vd_output *o = &outs[i];
		int got = o->n_completions > 0 ? o->completions[0].n_tokens : 0;

		t->prompt_tokens += o->n_prompt_tokens;
		t->output_tokens += got;
		if (o->status == VD_OK && o->n_completions == 1 && got == want)
			continue;
		if (failed++ < 5) {
			if (o->status != VD_OK)
				fprintf(stderr, ME ": request %ld failed: %s: %s\n", i,
					vd_status_str(o->status), o->error ? o->error : "");
			else
				fprintf(stderr, ME ": request %ld made %d tokens, not %ld "
						"(finish %s; prompt %d tokens: does --max-model-len "
						"leave room?)\n",
					i, got, want,
					o->n_completions ? vd_finish_reason_str(o->completions[0].finish_reason)
							 : "none",
					o->n_prompt_tokens);
		}
	}
	return failed;
}

/* Requests [first, first + n) of the pool; prompt is shared. */
static void make_requests(const opts *o, const char *prompt, const uint8_t *pool,
			  vd_image_input *imgs, vd_request *reqs, long first, long n)
{
	for (long i = 0; i < n; i++) {
		vd_request *r = &reqs[i];

		vd_request_init(r);
		r->prompt = prompt;
		r->params.max_tokens = (int)o->output_len;
		r->params.ignore_eos = true;
		for (long j = 0; j < o->num_images; j++) {
			long k = (first + i) * o->num_images + j;
			vd_image_input *im = &imgs[i * o->num_images + j];

			*im = (vd_image_input){ .kind = VD_IMAGE_RGB, .rgb = pool + (size_t)k * 3,
						.width = (int)o->width, .height = (int)o->height };
		}
		r->images = o->num_images ? &imgs[i * o->num_images] : NULL;
		r->n_images = (int)o->num_images;
	}
}

static int write_json(const opts *o, const char *arch, const char *tmpl, long text_tokens,
		      double elapsed, const totals *t)
{
	cJSON *j = cJSON_CreateObject(), *a = cJSON_CreateObject();
	double n = (double)o->num_prompts;
	char *txt;

	cJSON_AddNumberToObject(j, "elapsed_time", elapsed);
	cJSON_AddNumberToObject(j, "num_requests", n);
	cJSON_AddNumberToObject(j, "total_num_tokens", (double)(t->prompt_tokens + t->output_tokens));
	cJSON_AddNumberToObject(j, "total_prompt_tokens", (double)t->prompt_tokens);
	cJSON_AddNumberToObject(j, "total_output_tokens", (double)t->output_tokens);
	cJSON_AddNumberToObject(j, "requests_per_second", n / elapsed);
	cJSON_AddNumberToObject(j, "tokens_per_second",
				(double)(t->prompt_tokens + t->output_tokens) / elapsed);
	cJSON_AddNumberToObject(j, "output_tokens_per_second", (double)t->output_tokens / elapsed);
	cJSON_AddNumberToObject(j, "mean_prompt_tokens", (double)t->prompt_tokens / n);
	cJSON_AddNumberToObject(j, "text_tokens_per_prompt", (double)text_tokens);
	cJSON_AddStringToObject(j, "architecture", arch);
	cJSON_AddStringToObject(j, "prompt_template", tmpl);
	cJSON_AddStringToObject(a, "model", o->model);
	cJSON_AddStringToObject(a, "device", o->device);
	cJSON_AddStringToObject(a, "dtype", o->dtype);
	cJSON_AddNumberToObject(a, "num_prompts", n);
	cJSON_AddNumberToObject(a, "warmup", (double)o->warmup);
	cJSON_AddNumberToObject(a, "input_len", (double)o->input_len);
	cJSON_AddNumberToObject(a, "output_len", (double)o->output_len);
	cJSON_AddNumberToObject(a, "image_width", (double)o->width);
	cJSON_AddNumberToObject(a, "image_height", (double)o->height);
	cJSON_AddNumberToObject(a, "num_images", (double)o->num_images);
	cJSON_AddNumberToObject(a, "max_num_seqs", (double)o->max_num_seqs);
	cJSON_AddNumberToObject(a, "max_num_batched_tokens", (double)o->max_num_batched_tokens);
	cJSON_AddNumberToObject(a, "max_model_len", (double)o->max_model_len);
	cJSON_AddNumberToObject(a, "block_size", (double)o->block_size);
	cJSON_AddNumberToObject(a, "kv_cache_memory", (double)o->kv_cache_memory);
	cJSON_AddNumberToObject(a, "gpu_memory_utilization", o->gpu_memory_utilization);
	cJSON_AddBoolToObject(a, "enable_prefix_caching", o->enable_prefix_caching);
	cJSON_AddBoolToObject(a, "enforce_eager", o->enforce_eager);
	cJSON_AddStringToObject(a, "kv_cache_dtype", o->kv_cache_dtype);
	cJSON_AddNumberToObject(a, "num_threads", (double)o->num_threads);
	cJSON_AddNumberToObject(a, "seed", (double)o->seed);
	cJSON_AddItemToObject(j, "args", a);
	txt = cJSON_Print(j);
	cJSON_Delete(j);
	return write_text(o->output_json, txt);
}

int main(int argc, char **argv)
{
	opts o;
	vd_engine_args ea;
	vd_llm *llm = NULL;
	vd_request *reqs = NULL;
	vd_image_input *imgs = NULL;
	vd_output *outs = NULL;
	uint8_t *pool = NULL;
	char arch[256] = "", *tmpl = NULL, *prompt = NULL;
	long words, text_tokens, n_req, failed;
	bool exact;
	totals t = { 0 }, tw = { 0 };
	double t0, elapsed;
	int rc = 1, prc;

	if ((prc = parse_args(argc, argv, &o)) != 0)
		return prc > 0 ? 0 : 2;
	if (o.prompt_template) {
		tmpl = user_template(o.prompt_template);
		if (!strstr(tmpl, "{text}") || strstr(strstr(tmpl, "{text}") + 1, "{text}")) {
			fprintf(stderr, ME ": --prompt-template needs {text} exactly once\n");
			free(tmpl);
			return 2;
		}
		snprintf(arch, sizeof(arch), "--prompt-template");
	} else if (!(tmpl = bench_family_template(o.model, (int)o.num_images, arch, sizeof(arch)))) {
		return 2;
	}
	words = calibrate_words(o.tokenizer ? o.tokenizer : o.model, tmpl, o.input_len,
				&text_tokens, &exact);
	if (text_tokens >= 0 && !exact)
		fprintf(stderr, ME ": warning: no word count gives exactly %ld text "
				"tokens; using %ld words = %ld tokens\n",
			o.input_len, words, text_tokens);
	prompt = bench_fill(tmpl, words);

	vd_engine_args_init(&ea);
	ea.model = o.model;
	ea.tokenizer = o.tokenizer;
	ea.plugin_dir = o.plugin_dir;
	ea.device = o.device;
	ea.dtype = o.dtype;
	ea.max_model_len = (int)o.max_model_len;
	ea.limit_images = o.num_images > 0 ? (int)o.num_images : 1;
	ea.max_num_seqs = (int)o.max_num_seqs;
	ea.max_num_batched_tokens = (int)o.max_num_batched_tokens;
	ea.block_size = (int)o.block_size;
	ea.kv_cache_memory = o.kv_cache_memory;
	ea.gpu_memory_utilization = o.gpu_memory_utilization;
	ea.enable_prefix_caching = o.enable_prefix_caching;
	ea.enforce_eager = o.enforce_eager;
	ea.kv_cache_dtype = o.kv_cache_dtype;
	ea.num_threads = (int)o.num_threads;
	ea.seed = o.seed;
	ea.show_progress = false;

	n_req = o.num_prompts > o.warmup ? o.num_prompts : o.warmup;
	if (o.num_images > 0 &&
	    !(pool = bench_image_pool(o.width, o.height, (o.num_prompts + o.warmup) * o.num_images, o.seed))) {
		fprintf(stderr, ME ": out of memory for the images\n");
		goto out;
	}
	reqs = calloc((size_t)n_req, sizeof(*reqs));
	imgs = calloc((size_t)(n_req * o.num_images) + 1, sizeof(*imgs));
	if (!reqs || !imgs) {
		fprintf(stderr, ME ": out of memory for %ld requests\n", n_req);
		goto out;
	}
	if (vd_llm_create(&ea, &llm) != VD_OK) {
		fprintf(stderr, ME ": cannot load %s: %s\n", o.model, vd_error_message());
		goto out;
	}

	/* warmup: the last images of the pool, so none repeats in the timed run */
	if (o.warmup > 0) {
		make_requests(&o, prompt, pool, imgs, reqs, o.num_prompts, o.warmup);
		if (vd_llm_generate(llm, reqs, (int)o.warmup, &outs) != VD_OK) {
			fprintf(stderr, ME ": warmup: %s\n", vd_error_message());
			goto out;
		}
		failed = check_outputs(outs, o.warmup, o.output_len, &tw);
		vd_outputs_free(outs, (int)o.warmup);
		outs = NULL;
		if (failed) {
			fprintf(stderr, ME ": %ld of %ld warmup requests failed\n", failed,
				o.warmup);
			goto out;
		}
	}

	make_requests(&o, prompt, pool, imgs, reqs, 0, o.num_prompts);
	t0 = now();
	if (vd_llm_generate(llm, reqs, (int)o.num_prompts, &outs) != VD_OK) {
		fprintf(stderr, ME ": generate: %s\n", vd_error_message());
		goto out;
	}
	elapsed = now() - t0;
	failed = check_outputs(outs, o.num_prompts, o.output_len, &t);
	if (failed) {
		fprintf(stderr, ME ": %ld of %ld requests failed or made the wrong number "
				"of tokens\n",
			failed, o.num_prompts);
		goto out;
	}

	printf("Model: %s (%s)\n", o.model, arch);
	printf("Requests: %ld (+%ld warmup), %ld image(s) of %ldx%ld each, %ld output tokens each\n",
	       o.num_prompts, o.warmup, o.num_images, o.width, o.height, o.output_len);
	if (text_tokens >= 0)
		printf("Text tokens per prompt: %ld (asked %ld)\n", text_tokens, o.input_len);
	else
		printf("Text words per prompt: %ld (no tokenizer to count them)\n", words);
	printf("Mean prompt tokens (after image expansion): %.1f\n",
	       (double)t.prompt_tokens / (double)o.num_prompts);
	printf("Total prompt tokens: %lld, total output tokens: %lld\n", t.prompt_tokens,
	       t.output_tokens);
	printf("Elapsed: %.3f s\n", elapsed);
	printf("Throughput: %.2f requests/s, %.2f total tokens/s, %.2f output tokens/s\n",
	       (double)o.num_prompts / elapsed,
	       (double)(t.prompt_tokens + t.output_tokens) / elapsed,
	       (double)t.output_tokens / elapsed);
	if (o.output_json && write_json(&o, arch, tmpl, text_tokens, elapsed, &t) != 0)
		goto out;
	rc = 0;
out:
	if (outs)
		vd_outputs_free(outs, (int)o.num_prompts);
	vd_llm_destroy(llm);
	free(reqs);
	free(imgs);
	free(pool);
	free(prompt);
	free(tmpl);
	return rc;
}
