/* Loading a model directory: config.json (and the optional preprocessor
 * and generation configs), the tokenizer, the weights, the family plugin
 * that serves the checkpoint's architectures, the family's state and the
 * text decoder it describes, then the limits and EOS ids the engine runs
 * with. Nothing here names a model family. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine_impl.h"

/* The KV cache's element type from the kv_cache_dtype argument. */
static vd_status resolve_kv_dtype(vd_engine *e)
{
	const char *k = e->args.kv_cache_dtype;

	if (!k || !strcmp(k, "auto")) {
		e->kv_dtype = vd_backend_compute_dtype(e->be);
		return VD_OK;
	}
	if (!strcmp(k, "fp8") || !strcmp(k, "fp8_e4m3")) {
		e->kv_dtype = VD_DTYPE_F8E4M3;
		return VD_OK;
	}
	return vd_errorf(VD_ERR_INVALID_ARG,
			 "kv_cache_dtype '%s' is not one of auto, fp8, fp8_e4m3 (fp8_e5m2 is not "
			 "supported)", k);
}

static char *path_join(const char *dir, const char *file)
{
	size_t n = strlen(dir) + strlen(file) + 2;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", dir, file);
	return p;
}

static int file_exists(const char *path)
{
	FILE *f = fopen(path, "rb");

	if (f)
		fclose(f);
	return f != NULL;
}

/* Optional JSON file: missing is fine (*out = NULL), corrupt is an error. */
static vd_status load_optional_json(const char *dir, const char *name, vd_json **out)
{
	char *p = path_join(dir, name);
	vd_status st = VD_OK;

	*out = NULL;
	if (!p)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	if (file_exists(p))
		st = vd_json_load_file(p, out);
	free(p);
	return st;
}

static void add_eos(vd_engine *e, int64_t id)
{
	for (int i = 0; i < e->n_eos; i++)
		if (e->eos[i] == id)
			return;
	if (e->n_eos < MAX_EOS && id >= 0)
		e->eos[e->n_eos++] = (int32_t)id;
}

/* eos_token_id may be an int or a list. */
static void add_eos_node(vd_engine *e, const vd_json *n)
{
	if (!n)
		return;
	if (vd_json_is_array(n)) {
		for (int i = 0; i < vd_json_len(n); i++)
			add_eos(e, (int64_t)vd_json_number_value(vd_json_at(n, i), -1));
	} else if (vd_json_is_number(n)) {
		add_eos(e, (int64_t)vd_json_number_value(n, -1));
	}
}

static const char *default_plugin_dir(void)
{
	const char *env = getenv("VD_PLUGIN_DIR");

	return env && *env ? env : VD_PLUGIN_DIR;
}

/* The checkpoint's stored dtype (torch_dtype, or dtype in transformers 5
 * configs), top level or in text_config; NULL when absent. */
static const char *checkpoint_dtype(const vd_json *config)
{
	static const char *const keys[] = { "torch_dtype", "dtype", "text_config.torch_dtype",
					    "text_config.dtype" };

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v = vd_json_string_value(vd_json_get(config, keys[i]));

		if (v)
			return v;
	}
	return NULL;
}

vd_status vd_model_load(vd_engine *e)
{
	const char *tok_dir;
	char *p1 = NULL, *p2 = NULL;
	const char *plugin_dir;
	vd_model_ctx ctx;
	vd_status st;

	p1 = path_join(e->model_dir, "config.json");
	if (!p1) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto fail;
	}
	st = vd_json_load_file(p1, &e->config);
	if (st != VD_OK)
		goto fail;
	st = vd_backend_set_dtype(e->be, e->args.dtype, checkpoint_dtype(e->config));
	if (st == VD_OK)
		st = resolve_kv_dtype(e);
	if (st != VD_OK)
		goto fail;
	st = load_optional_json(e->model_dir, "preprocessor_config.json", &e->preproc);
	if (st == VD_OK)
		st = load_optional_json(e->model_dir, "generation_config.json", &e->genconfig);
	if (st != VD_OK)
		goto fail;

	tok_dir = e->args.tokenizer ? e->args.tokenizer : e->model_dir;
	free(p1);
	p1 = path_join(tok_dir, "tokenizer.json");
	p2 = path_join(tok_dir, "tokenizer_config.json");
	if (!p1 || !p2) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto fail;
	}
	st = vd_tokenizer_load(p1, file_exists(p2) ? p2 : NULL, &e->tok);
	if (st != VD_OK)
		goto fail;
	st = vd_weights_open_dir(e->model_dir, &e->weights);
	if (st != VD_OK)
		goto fail;

	plugin_dir = e->args.plugin_dir ? e->args.plugin_dir : default_plugin_dir();
	st = vd_registry_create(plugin_dir, &e->reg);
	if (st == VD_OK)
		st = vd_registry_find(e->reg, vd_json_get(e->config, "architectures"), &e->fam);
	if (st != VD_OK)
		goto fail;

	ctx = (vd_model_ctx){
		.struct_size = sizeof(ctx),
		.model_dir = e->model_dir,
		.config = e->config,
		.preprocessor = e->preproc,
		.weights = e->weights,
		.tokenizer = e->tok,
		.backend = e->be,
	};
	e->spec.struct_size = sizeof(e->spec);
	e->limits.struct_size = sizeof(e->limits);
	st = e->fam->create(vd_host_api_get(), &ctx, &e->fam_state, &e->spec, &e->limits);
	if (st != VD_OK)
		goto fail;
	st = vd_decoder_create(e->be, e->weights, &e->spec, &e->dec);
	if (st != VD_OK)
		goto fail;

	e->max_model_len = e->spec.max_position_embeddings;
	if (e->args.max_model_len > 0) {
		if (e->args.max_model_len > e->spec.max_position_embeddings) {
			st = vd_errorf(VD_ERR_INVALID_ARG,
				       "max_model_len %d exceeds the model's max_position_embeddings %d",
				       e->args.max_model_len, e->spec.max_position_embeddings);
			goto fail;
		}
		e->max_model_len = e->args.max_model_len;
	}
	e->limit_images = e->args.limit_images > 0 ? e->args.limit_images : e->limits.max_images;
	if (e->limits.max_images == 0)
		e->limit_images = 0; /* a text-only family: no images, whatever the limit */
	if (e->limit_images > e->limits.max_images) {
		st = vd_errorf(VD_ERR_INVALID_ARG,
			       "limit_mm_per_prompt image=%d exceeds what the %s family supports (%d)",
			       e->limit_images, e->fam->name, e->limits.max_images);
		goto fail;
	}

	add_eos_node(e, vd_json_get(e->genconfig, "eos_token_id"));
	add_eos_node(e, vd_json_get(e->config, "eos_token_id"));
	add_eos_node(e, vd_json_get(e->config, "text_config.eos_token_id"));
	if (e->n_eos == 0)
		add_eos(e, vd_tokenizer_eos_id(e->tok));

	free(p1);
	free(p2);
	return VD_OK;
fail:
	free(p1);
	free(p2);
	return st;
}

void vd_model_unload(vd_engine *e)
{
	vd_decoder_destroy(e->dec);
	e->dec = NULL;
	if (e->fam && e->fam_state)
		e->fam->destroy(e->fam_state);
	e->fam_state = NULL;
	vd_registry_destroy(e->reg);
	e->reg = NULL;
	vd_weights_close(e->weights);
	e->weights = NULL;
	vd_tokenizer_destroy(e->tok);
	e->tok = NULL;
	vd_json_free(e->config);
	vd_json_free(e->preproc);
	vd_json_free(e->genconfig);
	e->config = e->preproc = e->genconfig = NULL;
}
