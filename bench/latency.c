/* bench/latency: end-to-end latency of one batch through the offline API,
 * as vLLM's benchmark_latency.py, plus the decode step time derived from it.
 *
 *   bench/latency --model DIR [--batch-size 1] [--input-len 32]
 *                 [--output-len 128] [--image-size 336] [--num-iters 5]
 *                 [--num-iters-warmup 2] [--device auto] [--dtype auto]
 *                 [--max-num-batched-tokens N] [--max-model-len N]
 *                 [--plugin-dir DIR] [--output-json FILE]
 *
 * Each iteration generates exactly --output-len tokens (ignore_eos) for
 * --batch-size requests, each with its own synthetic image. The same batch is
 * also run with one output token (prefill only): the decode step time is
 * (latency(L) - latency(1)) / (L - 1). */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ME "bench/latency"
#include "bench/util.h"
#include "bench/common.h"
#include "vllmd/llm.h"

typedef struct opts {
	const char *model, *device, *dtype, *kv_dtype, *plugin_dir, *json;
	int batch, input_len, output_len, size, iters, warmup, mnbt, max_len;
	bool eager;
} opts;

static int usage(const char *why)
{
	if (why)
		fprintf(stderr, "bench/latency: %s\n", why);
	fprintf(stderr, "usage: bench/latency --model DIR [--batch-size N] [--input-len K] "
			"[--output-len L] [--image-size S|0] [--num-iters N] [--num-iters-warmup N] "
			"[--device D] [--dtype D] [--max-num-batched-tokens N] [--max-model-len N] "
			"[--plugin-dir DIR] [--output-json FILE] [--enforce-eager] "
			"[--kv-cache-dtype auto|fp8]\n");
	return 2;
}

static int parse(int argc, char **argv, opts *o)
{
	*o = (opts){ .device = "auto", .dtype = "auto", .kv_dtype = "auto", .batch = 1,
		     .input_len = 32,
		     .output_len = 128, .size = 336, .iters = 5, .warmup = 2 };
	for (int i = 1; i < argc; i++) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		static const struct {
			const char *name;
			size_t off;
			long lo, hi;
		} ints[] = {
			{ "--batch-size", offsetof(opts, batch), 1, 1 << 20 },
			{ "--input-len", offsetof(opts, input_len), 0, 1 << 20 },
			{ "--output-len", offsetof(opts, output_len), 2, 1 << 20 },
			{ "--image-size", offsetof(opts, size), 0, 16384 },
			{ "--num-iters", offsetof(opts, iters), 1, 1 << 20 },
			{ "--num-iters-warmup", offsetof(opts, warmup), 0, 1 << 20 },
			{ "--max-num-batched-tokens", offsetof(opts, mnbt), 0, 1 << 30 },
			{ "--max-model-len", offsetof(opts, max_len), 0, 1 << 30 },
		};
		size_t j;

		if (!strcmp(k, "-h") || !strcmp(k, "--help"))
			return usage(NULL);
		if (!strcmp(k, "--enforce-eager")) {
			o->eager = true;
			continue;
		}
		if (!v)
			return usage("every option takes a value");
		i++;
		if (!strcmp(k, "--model"))
			o->model = v;
		else if (!strcmp(k, "--device"))
			o->device = v;
		else if (!strcmp(k, "--dtype"))
			o->dtype = v;
		else if (!strcmp(k, "--kv-cache-dtype"))
			o->kv_dtype = v;
		else if (!strcmp(k, "--plugin-dir"))
			o->plugin_dir = v;
		else if (!strcmp(k, "--output-json"))
			o->json = v;
		else {
			long n;

			for (j = 0; j < sizeof(ints) / sizeof(ints[0]) && strcmp(k, ints[j].name); j++)
				;
			if (j == sizeof(ints) / sizeof(ints[0]))
				return usage("unknown option");
			if (parse_long(k + 2, v, ints[j].lo, ints[j].hi, &n))
				return 2;
			*(int *)((char *)o + ints[j].off) = (int)n;
		}
	}
	if (!o->model)
		return usage("--model is required");
	return 0;
}

/* Mean seconds of `iters` timed runs of the batch with max_tokens = L. */
static int time_batch(vd_llm *llm, vd_request *reqs, const opts *o, int L, int iters,
		      double *mean)
{
	double sum = 0.0;

	for (int b = 0; b < o->batch; b++)
		reqs[b].params.max_tokens = L;
	for (int it = 0; it < iters; it++) {
		vd_output *outs = NULL;
		double t0 = now();

		if (vd_llm_generate(llm, reqs, o->batch, &outs) != VD_OK) {
			fprintf(stderr, "bench/latency: generate: %s\n", vd_error_message());
			return 1;
		}
		sum += now() - t0;
		for (int b = 0; b < o->batch; b++) {
			if (outs[b].status != VD_OK || outs[b].completions[0].n_tokens != L) {
				fprintf(stderr, "bench/latency: request %d: %s\n", b,
					outs[b].status != VD_OK ? outs[b].error : "short output");
				vd_outputs_free(outs, o->batch);
				return 1;
			}
		}
		vd_outputs_free(outs, o->batch);
	}
	*mean = sum / iters;
	return 0;
}

int main(int argc, char **argv)
{
	opts o;
	vd_engine_args a;
	vd_llm *llm = NULL;
	vd_request *reqs;
	vd_image_input *imgs;
	uint8_t *pool;
	char arch[128], *tmpl, *prompt;
	double lat = 0.0, lat1 = 0.0, warm;
	int rc = parse(argc, argv, &o);

	if (rc)
		return rc;
	tmpl = bench_family_template(o.model, o.size > 0 ? 1 : 0, arch, sizeof(arch));
	if (!tmpl)
		return 1;
	prompt = bench_fill(tmpl, o.input_len);
	free(tmpl);
	vd_engine_args_init(&a);
	a.model = o.model;
	a.plugin_dir = o.plugin_dir;
	a.device = o.device;
	a.dtype = o.dtype;
	a.max_num_seqs = o.batch;
	a.max_num_batched_tokens = o.mnbt;
	a.max_model_len = o.max_len;
	a.enable_prefix_caching = false;
	a.enforce_eager = o.eager;
	a.kv_cache_dtype = o.kv_dtype;
	if (vd_llm_create(&a, &llm) != VD_OK) {
		fprintf(stderr, "bench/latency: %s\n", vd_error_message());
		return 1;
	}
	reqs = calloc((size_t)o.batch, sizeof(*reqs));
	imgs = calloc((size_t)o.batch, sizeof(*imgs));
	pool = o.size > 0 ? bench_image_pool(o.size, o.size, o.batch, 1) : NULL;
	if (!reqs || !imgs || (o.size > 0 && !pool))
		return 1;
	for (int b = 0; b < o.batch; b++) {
		vd_request_init(&reqs[b]);
		reqs[b].prompt = prompt;
		reqs[b].params.temperature = 0.0f;
		reqs[b].params.ignore_eos = true;
		if (o.size > 0) {
			/* image b: the window b pixels into the pool, all different */
			imgs[b] = (vd_image_input){ .kind = VD_IMAGE_RGB, .rgb = pool + 3 * (size_t)b,
						    .width = o.size, .height = o.size };
			reqs[b].images = &imgs[b];
			reqs[b].n_images = 1;
		}
	}
	rc = time_batch(llm, reqs, &o, o.output_len, o.warmup > 0 ? o.warmup : 1, &warm);
	if (!rc)
		rc = time_batch(llm, reqs, &o, o.output_len, o.iters, &lat);
	if (!rc)
		rc = time_batch(llm, reqs, &o, 1, o.iters, &lat1);
	if (!rc) {
		double step = (lat - lat1) / (o.output_len - 1);

		printf("latency: %s, batch %d, input %d text tokens%s, output %d tokens\n", arch,
		       o.batch, o.input_len, o.size > 0 ? " + one image" : "", o.output_len);
		printf("Avg latency: %.4f seconds (mean of %d)\n", lat, o.iters);
		printf("Prefill latency (1 output token): %.4f seconds\n", lat1);
		printf("Decode step: %.3f ms\n", 1e3 * step);
		if (o.json) {
			FILE *f = fopen(o.json, "w");

			if (!f) {
				fprintf(stderr, "bench/latency: cannot write %s\n", o.json);
				rc = 1;
			} else {
				fprintf(f,
					"{\"architecture\": \"%s\", \"batch_size\": %d, "
					"\"input_len\": %d, \"image_size\": %d, \"output_len\": %d, "
					"\"num_iters\": %d, \"avg_latency\": %.6f, "
					"\"prefill_latency\": %.6f, \"decode_step_ms\": %.4f, "
					"\"enforce_eager\": %s}\n",
					arch, o.batch, o.input_len, o.size, o.output_len, o.iters, lat,
					lat1, 1e3 * step, o.eager ? "true" : "false");
				fclose(f);
			}
		}
	}
	free(pool);
	free(imgs);
	free(reqs);
	free(prompt);
	vd_llm_destroy(llm);
	return rc;
}
