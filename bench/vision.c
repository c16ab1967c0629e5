/* bench/vision: images per second through a family's vision tower and
 * projector alone (the image-encoding half of a multimodal prefill).
 *
 *   bench/vision --model DIR [--device cuda] [--dtype auto] [--batch-size 64]
 *                [--image-size 336] [--num-iters 10] [--num-iters-warmup 3]
 *                [--plugin-dir DIR] [--output-json FILE]
 *
 * Images are synthetic (different pseudo-random pixels each), processed once
 * by the family's image processor; the timed loop is vision_tower +
 * projector over the whole batch, synchronised at the end of each pass. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ME "bench/vision"
#include "bench/util.h"
#include "bench/common.h"
#include "core/mm.h"
#include "core/registry.h"
#include "kernels/backend.h"
#include "vllmd/llm.h"
#include "vllmd/tokenizer.h"
#include "vllmd/weights.h"

typedef struct opts {
	const char *model, *device, *dtype, *plugin_dir, *json;
	int batch, size, iters, warmup;
} opts;

static int usage(const char *why)
{
	if (why)
		fprintf(stderr, "bench/vision: %s\n", why);
	fprintf(stderr, "usage: bench/vision --model DIR [--device auto|cpu|cuda] [--dtype D] "
			"[--batch-size N] [--image-size S] [--num-iters N] [--num-iters-warmup N] "
			"[--plugin-dir DIR] [--output-json FILE]\n");
	return 2;
}

static int parse(int argc, char **argv, opts *o)
{
	*o = (opts){ .device = "auto", .dtype = "auto", .batch = 64, .size = 336, .iters = 10,
		     .warmup = 3 };
	for (int i = 1; i < argc; i++) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		long n = 0;

		if (!strcmp(k, "-h") || !strcmp(k, "--help"))
			return usage(NULL);
		if (!v)
			return usage("every option takes a value");
		i++;
		if (!strcmp(k, "--model"))
			o->model = v;
		else if (!strcmp(k, "--device"))
			o->device = v;
		else if (!strcmp(k, "--dtype"))
			o->dtype = v;
		else if (!strcmp(k, "--plugin-dir"))
			o->plugin_dir = v;
		else if (!strcmp(k, "--output-json"))
			o->json = v;
		else if (!strcmp(k, "--batch-size") && !parse_long(k + 2, v, 1, 1 << 16, &n))
			o->batch = (int)n;
		else if (!strcmp(k, "--image-size") && !parse_long(k + 2, v, 1, 16384, &n))
			o->size = (int)n;
		else if (!strcmp(k, "--num-iters") && !parse_long(k + 2, v, 1, 1 << 20, &n))
			o->iters = (int)n;
		else if (!strcmp(k, "--num-iters-warmup") && !parse_long(k + 2, v, 0, 1 << 20, &n))
			o->warmup = (int)n;
		else
			return n ? 2 : usage("unknown option or bad value");
	}
	if (!o->model)
		return usage("--model is required");
	return 0;
}

static int fail(const char *what)
{
	fprintf(stderr, "bench/vision: %s: %s\n", what, vd_error_message());
	return 1;
}

int main(int argc, char **argv)
{
	opts o;
	char p1[4200], p2[4200];
	vd_backend *be = NULL;
	vd_json *config = NULL, *preproc = NULL;
	vd_weights *w = NULL;
	vd_tokenizer *tok = NULL;
	vd_registry *reg = NULL;
	const vd_family *fam = NULL;
	void *state = NULL;
	vd_decoder_spec spec = { .struct_size = sizeof(spec) };
	vd_mm_limits limits = { .struct_size = sizeof(limits) };
	vd_model_ctx ctx;
	vd_mm_item *items = NULL;
	const vd_mm_item **ptrs = NULL;
	uint8_t *pool;
	int64_t rows = 0;
	double t0, dt = 0.0;
	int rc = parse(argc, argv, &o);

	if (rc)
		return rc;
	if (vd_backend_create(vd_backend_resolve_device(o.device), 0, &be) != VD_OK)
		return fail("backend");
	snprintf(p1, sizeof(p1), "%s/config.json", o.model);
	snprintf(p2, sizeof(p2), "%s/preprocessor_config.json", o.model);
	if (vd_json_load_file(p1, &config) != VD_OK || vd_json_load_file(p2, &preproc) != VD_OK)
		return fail("config");
	if (vd_backend_set_dtype(be, o.dtype,
				 vd_json_string_value(vd_json_get(config, "torch_dtype"))) != VD_OK)
		return fail("dtype");
	if (vd_weights_open_dir(o.model, &w) != VD_OK)
		return fail("weights");
	snprintf(p1, sizeof(p1), "%s/tokenizer.json", o.model);
	snprintf(p2, sizeof(p2), "%s/tokenizer_config.json", o.model);
	if (vd_tokenizer_load(p1, p2, &tok) != VD_OK)
		return fail("tokenizer");
	if (vd_registry_create(o.plugin_dir ? o.plugin_dir : getenv("VD_PLUGIN_DIR"), &reg) !=
		    VD_OK ||
	    vd_registry_find(reg, vd_json_get(config, "architectures"), &fam) != VD_OK)
		return fail("plugin");
	ctx = (vd_model_ctx){ .struct_size = sizeof(ctx), .model_dir = o.model, .config = config,
			      .preprocessor = preproc, .weights = w, .tokenizer = tok,
			      .backend = be };
	if (fam->create(vd_host_api_get(), &ctx, &state, &spec, &limits) != VD_OK)
		return fail("family");
	items = calloc((size_t)o.batch, sizeof(*items));
	ptrs = calloc((size_t)o.batch, sizeof(*ptrs));
	if (!items || !ptrs)
		return fail("memory");
	pool = bench_image_pool(o.size, o.size, o.batch, 1);
	if (!pool)
		return fail("memory");
	for (int i = 0; i < o.batch; i++) {
		vd_image_input in = { .kind = VD_IMAGE_RGB, .rgb = pool + 3 * (size_t)i,
				      .width = o.size, .height = o.size };

		if (vd_mm_prepare(fam, state, &in, NULL, 0, &items[i]) != VD_OK)
			return fail("image processor");
		ptrs[i] = &items[i];
		rows += items[i].num_tokens;
	}
	free(pool);
	for (int it = 0; it < o.warmup + o.iters; it++) {
		vd_tensor feats = { 0 }, emb = { 0 };

		t0 = now();
		if (fam->vision_tower(state, ptrs, o.batch, &feats) != VD_OK ||
		    fam->projector(state, ptrs, o.batch, &feats, &emb) != VD_OK ||
		    be->ops->sync(be) != VD_OK)
			return fail("vision tower");
		if (it >= o.warmup)
			dt += now() - t0;
		be->ops->free(be, &feats);
		be->ops->free(be, &emb);
	}
	printf("vision: %s on %s (%s), batch %d of %dx%d images, %lld embedding rows per batch\n",
	       fam->name, be->ops->name, vd_dtype_name(be->dtype), o.batch, o.size, o.size,
	       (long long)rows);
	printf("Throughput: %.1f images/s (%.2f ms per batch, mean of %d)\n",
	       o.batch * o.iters / dt, 1e3 * dt / o.iters, o.iters);
	if (o.json) {
		FILE *f = fopen(o.json, "w");

		if (!f)
			return fail("output json");
		fprintf(f,
			"{\"family\": \"%s\", \"device\": \"%s\", \"dtype\": \"%s\", "
			"\"batch_size\": %d, \"image_size\": %d, \"num_iters\": %d, "
			"\"images_per_s\": %.3f, \"ms_per_batch\": %.4f}\n",
			fam->name, be->ops->name, vd_dtype_name(be->dtype), o.batch, o.size, o.iters,
			o.batch * o.iters / dt, 1e3 * dt / o.iters);
		fclose(f);
	}
	for (int i = 0; i < o.batch; i++)
		vd_mm_item_free(&items[i]);
	free(items);
	free(ptrs);
	fam->destroy(state);
	vd_registry_destroy(reg);
	vd_tokenizer_destroy(tok);
	vd_weights_close(w);
	vd_json_free(config);
	vd_json_free(preproc);
	vd_backend_destroy(be);
	return 0;
}
