/* Engine: loads a model directory through its family plugin and runs
 * requests. Everything model-specific arrives through the plugin (image
 * processing, vision tower, projector, expansion) or the generic decoder
 * spec; nothing here names a model family. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine.h"
#include "core/expansion.h"
#include "core/mm.h"
#include "core/registry.h"
#include "core/sampler.h"
#include "kernels/backend.h"
#include "vllmd/models.h"

#define MAX_EOS 16

struct vd_engine {
	vd_engine_args args;
	char *model_dir;
	vd_backend *be;
	vd_registry *reg;
	const vd_family *fam;
	void *fam_state;
	vd_json *config, *preproc, *genconfig;
	vd_weights *weights;
	vd_tokenizer *tok;
	vd_decoder *dec;
	vd_decoder_spec spec;
	vd_mm_limits limits;
	int max_model_len;
	int limit_images;
	int32_t eos[MAX_EOS];
	int n_eos;
	/* KV cache for one sequence: blocks 0..num_blocks-1 in order */
	int block_size, num_blocks;
	vd_tensor *k_cache, *v_cache; /* (num_layers) */
	int32_t *block_table;
	vd_rng rng;                   /* draws for unseeded requests */
};

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
	const char *env = getenv("VLLMD_PLUGIN_DIR");

	return env && *env ? env : VD_PLUGIN_DIR;
}

static vd_status alloc_kv(vd_engine *e)
{
	const vd_ops *o = e->be->ops;
	int L = e->spec.num_layers;
	int64_t shape[4] = { 0, 0, e->spec.num_kv_heads, e->spec.head_dim };
	vd_status st;

	e->block_size = e->args.block_size > 0 ? e->args.block_size : 16;
	e->num_blocks = (e->max_model_len + e->block_size - 1) / e->block_size;
	shape[0] = e->num_blocks;
	shape[1] = e->block_size;
	e->k_cache = calloc((size_t)L, sizeof(vd_tensor));
	e->v_cache = calloc((size_t)L, sizeof(vd_tensor));
	e->block_table = malloc((size_t)e->num_blocks * sizeof(int32_t));
	if (!e->k_cache || !e->v_cache || !e->block_table)
		return vd_errorf(VD_ERR_NOMEM, "out of memory for the KV cache tables");
	for (int i = 0; i < e->num_blocks; i++)
		e->block_table[i] = i;
	for (int l = 0; l < L; l++) {
		st = o->alloc(e->be, &e->k_cache[l], VD_DTYPE_F32, 4, shape);
		if (st == VD_OK)
			st = o->alloc(e->be, &e->v_cache[l], VD_DTYPE_F32, 4, shape);
		if (st != VD_OK)
			return st;
	}
	return VD_OK;
}

vd_status vd_engine_create(const vd_engine_args *args, vd_engine **out)
{
	vd_engine *e;
	const char *tok_dir;
	char *p1 = NULL, *p2 = NULL;
	const char *plugin_dir;
	vd_model_ctx ctx;
	vd_status st;

	*out = NULL;
	if (!args || !args->model)
		return vd_errorf(VD_ERR_INVALID_ARG, "no model given (set model / --model)");
	e = calloc(1, sizeof(*e));
	if (!e)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	e->args = *args;
	e->model_dir = strdup(args->model);
	if (!e->model_dir) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto fail;
	}
	vd_rng_seed(&e->rng, args->seed);

	if (args->device && strcmp(args->device, "auto") && strcmp(args->device, "cpu") &&
	    strcmp(args->device, "cuda")) {
		st = vd_errorf(VD_ERR_INVALID_ARG, "device '%s' is not one of auto, cpu, cuda",
			       args->device);
		goto fail;
	}
	st = vd_backend_create(args->device && !strcmp(args->device, "cuda") ? "cuda" : "cpu",
			       args->num_threads, &e->be);
	if (st != VD_OK)
		goto fail;

	p1 = path_join(e->model_dir, "config.json");
	if (!p1) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto fail;
	}
	st = vd_json_load_file(p1, &e->config);
	if (st != VD_OK)
		goto fail;
	st = load_optional_json(e->model_dir, "preprocessor_config.json", &e->preproc);
	if (st == VD_OK)
		st = load_optional_json(e->model_dir, "generation_config.json", &e->genconfig);
	if (st != VD_OK)
		goto fail;

	tok_dir = args->tokenizer ? args->tokenizer : e->model_dir;
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

	plugin_dir = args->plugin_dir ? args->plugin_dir : default_plugin_dir();
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
	if (args->max_model_len > 0) {
		if (args->max_model_len > e->spec.max_position_embeddings) {
			st = vd_errorf(VD_ERR_INVALID_ARG,
				       "max_model_len %d exceeds the model's max_position_embeddings %d",
				       args->max_model_len, e->spec.max_position_embeddings);
			goto fail;
		}
		e->max_model_len = args->max_model_len;
	}
	e->limit_images = args->limit_images > 0 ? args->limit_images : e->limits.max_images;
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

	st = alloc_kv(e);
	if (st != VD_OK)
		goto fail;
	free(p1);
	free(p2);
	*out = e;
	return VD_OK;
fail:
	free(p1);
	free(p2);
	vd_engine_destroy(e);
	return st;
}

void vd_engine_destroy(vd_engine *e)
{
	if (!e)
		return;
	if (e->be) {
		for (int l = 0; e->k_cache && l < e->spec.num_layers; l++) {
			e->be->ops->free(e->be, &e->k_cache[l]);
			e->be->ops->free(e->be, &e->v_cache[l]);
		}
	}
	free(e->k_cache);
	free(e->v_cache);
	free(e->block_table);
	vd_decoder_destroy(e->dec);
	if (e->fam && e->fam_state)
		e->fam->destroy(e->fam_state);
	vd_registry_destroy(e->reg);
	vd_weights_close(e->weights);
	vd_tokenizer_destroy(e->tok);
	vd_json_free(e->config);
	vd_json_free(e->preproc);
	vd_json_free(e->genconfig);
	vd_backend_destroy(e->be);
	free(e->model_dir);
	free(e);
}

const vd_tokenizer *vd_engine_tokenizer(const vd_engine *e)
{
	return e->tok;
}

const vd_family *vd_engine_family(const vd_engine *e)
{
	return e->fam;
}

int vd_engine_max_model_len(const vd_engine *e)
{
	return e->max_model_len;
}

/* ------------------------------------------------------------ one request */

/* The state of one request while it runs. */
typedef struct run {
	vd_engine *e;
	const vd_request *r;
	vd_mm_item *items;
	const vd_mm_item **item_ptrs;
	int n_items;
	vd_expansion exp;
	vd_tensor img_embeds;   /* (sum of image rows, hidden) */
	int32_t *img_rows;      /* prompt rows of img_embeds' rows */
	int64_t n_img_rows;
} run;

static void run_free(run *r)
{
	for (int i = 0; i < r->n_items; i++)
		vd_mm_item_free(&r->items[i]);
	free(r->items);
	free(r->item_ptrs);
	vd_expansion_free(&r->exp);
	if (r->e)
		r->e->be->ops->free(r->e->be, &r->img_embeds);
	free(r->img_rows);
}

static vd_status prepare(run *R)
{
	vd_engine *e = R->e;
	const vd_request *q = R->r;
	vd_mm_kwargs kw = { .struct_size = sizeof(kw), .min_pixels = q->min_pixels,
			    .max_pixels = q->max_pixels, .num_crops = q->num_crops };
	vd_prompt_in in;
	vd_status st;

	if (!q->prompt && (!q->prompt_token_ids || q->n_prompt_token_ids <= 0))
		return vd_errorf(VD_ERR_INVALID_ARG, "the request has neither a prompt nor prompt_token_ids");
	if (q->n_images > e->limit_images)
		return vd_errorf(VD_ERR_INVALID_ARG, "At most %d image(s) may be provided in one prompt.",
				 e->limit_images);
	if (q->n_images > 0) {
		R->items = calloc((size_t)q->n_images, sizeof(*R->items));
		R->item_ptrs = calloc((size_t)q->n_images, sizeof(*R->item_ptrs));
		if (!R->items || !R->item_ptrs)
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
	}
	for (int i = 0; i < q->n_images; i++) {
		st = vd_mm_prepare(e->fam, e->fam_state, &q->images[i], &kw,
				   e->args.max_image_pixels, &R->items[i]);
		if (st != VD_OK)
			return vd_errorf(st, "image %d: %s", i, vd_error_message());
		R->item_ptrs[i] = &R->items[i];
		R->n_items++;
	}
	if (!q->prompt) {
		int32_t V = e->spec.vocab_size;

		for (int i = 0; i < q->n_prompt_token_ids; i++)
			if (q->prompt_token_ids[i] >= V)
				return vd_errorf(VD_ERR_INVALID_ARG,
						 "prompt_token_ids[%d] = %d is out of vocabulary (size %d)",
						 i, q->prompt_token_ids[i], V);
	}
	vd_expansion_init(&R->exp);
	in = (vd_prompt_in){ .struct_size = sizeof(in), .text = q->prompt,
			     .ids = q->prompt_token_ids, .n_ids = q->n_prompt_token_ids,
			     .items = R->item_ptrs, .n_items = R->n_items };
	st = e->fam->expand(e->fam_state, &in, &R->exp);
	if (st == VD_OK)
		st = vd_expansion_validate(&R->exp, R->item_ptrs, R->n_items);
	if (st != VD_OK)
		return st;
	if (R->exp.n >= e->max_model_len)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "The decoder prompt (length %lld) is longer than the maximum model "
				 "length of %d.", (long long)R->exp.n, e->max_model_len);
	return VD_OK;
}

/* Vision tower + projector for pixel items, uploads for embedding items,
 * all rows gathered in prompt order into img_embeds. */
static vd_status encode_images(run *R)
{
	vd_engine *e = R->e;
	const vd_ops *o = e->be->ops;
	int64_t total = 0, off = 0;
	int64_t shape[2] = { 0, e->spec.hidden_size };
	vd_status st = VD_OK;

	for (int i = 0; i < R->n_items; i++)
		total += R->items[i].num_tokens;
	if (total == 0)
		return VD_OK;
	shape[0] = total;
	st = o->alloc(e->be, &R->img_embeds, VD_DTYPE_F32, 2, shape);
	if (st != VD_OK)
		return st;
	R->img_rows = malloc((size_t)total * sizeof(int32_t));
	if (!R->img_rows)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	for (int i = 0; i < R->n_items; i++) {
		vd_mm_item *it = &R->items[i];
		vd_tensor dst = vd_tensor_rows(&R->img_embeds, off, it->num_tokens);
		const vd_placeholder *ph = &R->exp.ph[i];

		if (it->kind == VD_MM_EMBEDS) {
			st = o->upload(e->be, &dst, it->embeds.data, VD_DTYPE_F32,
				       vd_tensor_numel(&it->embeds));
		} else {
			vd_tensor feats = { 0 }, emb = { 0 };
			const vd_mm_item *one[1] = { it };

			st = e->fam->vision_tower(e->fam_state, one, 1, &feats);
			if (st == VD_OK)
				st = e->fam->projector(e->fam_state, one, 1, &feats, &emb);
			if (st == VD_OK && emb.shape[0] != it->num_tokens)
				st = vd_errorf(VD_ERR_INTERNAL,
					       "%s projector gave %lld rows for an image of %d tokens",
					       e->fam->name, (long long)emb.shape[0], it->num_tokens);
			if (st == VD_OK)
				st = o->copy(e->be, &emb, &dst);
			o->free(e->be, &feats);
			o->free(e->be, &emb);
		}
		if (st != VD_OK)
			return st;
		for (int64_t j = 0; j < it->num_tokens; j++)
			R->img_rows[off + j] = (int32_t)(ph->offset + j);
		off += it->num_tokens;
	}
	R->n_img_rows = total;
	return VD_OK;
}

/* Run rows [start, start+T) of `ids` (positions given) through the decoder
 * with the cache holding `start` tokens before; logits for the requested
 * rows (relative to start). */
static vd_status forward(run *R, const int32_t *ids, int64_t start, int64_t T,
			 const int32_t *positions, const int32_t *logit_rows, int n_logits,
			 vd_tensor *logits, int with_images)
{
	vd_engine *e = R->e;
	const vd_ops *o = e->be->ops;
	int64_t shape[2] = { T, e->spec.hidden_size };
	vd_tensor x = { 0 };
	int32_t *emb_ids = malloc((size_t)T * sizeof(int32_t));
	int64_t *slots = malloc((size_t)T * sizeof(int64_t));
	int32_t qsl[2] = { 0, (int32_t)T };
	int32_t seq_len = (int32_t)(start + T);
	vd_attn_meta meta;
	vd_status st;

	if (!emb_ids || !slots) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	/* placeholder ids may be outside the vocabulary (negative): their rows
	 * are overwritten by image embeddings, so embed token 0 there */
	for (int64_t i = 0; i < T; i++) {
		emb_ids[i] = ids[i] < 0 || ids[i] >= e->spec.vocab_size ? 0 : ids[i];
		slots[i] = start + i;
	}
	st = o->alloc(e->be, &x, VD_DTYPE_F32, 2, shape);
	if (st == VD_OK)
		st = vd_decoder_embed(e->dec, emb_ids, T, &x);
	if (st == VD_OK && with_images && R->n_img_rows)
		st = o->scatter_rows(e->be, &R->img_embeds, R->img_rows, R->n_img_rows, &x);
	if (st != VD_OK)
		goto out;
	meta = (vd_attn_meta){ .num_seqs = 1, .num_tokens = (int)T, .query_start_loc = qsl,
			       .seq_lens = &seq_len, .block_tables = e->block_table,
			       .max_blocks = e->num_blocks, .block_size = e->block_size,
			       .slot_mapping = slots };
	st = vd_decoder_forward(e->dec, &x, positions, NULL, &meta, e->k_cache, e->v_cache,
				logit_rows, n_logits, logits);
out:
	o->free(e->be, &x);
	free(emb_ids);
	free(slots);
	return st;
}

/* Positions (P, T) for rows [start, start+T) of a sequence. */
static vd_status positions_for(const vd_expansion *x, int64_t start, int64_t T, int32_t **out)
{
	int P = x->positions ? x->pos_ndim : 1;
	int32_t *p = malloc((size_t)P * (size_t)T * sizeof(int32_t));

	*out = p;
	if (!p)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	for (int d = 0; d < P; d++)
		for (int64_t i = 0; i < T; i++) {
			int64_t t = start + i;

			p[d * T + i] = t < x->n && x->positions ? x->positions[d * x->n + t]
							       : (int32_t)(t + (x->positions ? x->pos_delta : 0));
		}
	return VD_OK;
}

static char *dup_text(const char *s, size_t n)
{
	char *p = malloc(n + 1);

	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

static vd_status fill_logprobs(vd_engine *e, const float *row, int32_t V, int32_t chosen, int k,
			       vd_position_logprobs *out, double *chosen_lp_out)
{
	int32_t top_ids[64];
	float top_lps[64];
	float lp;
	int32_t rank;
	int n = 0;

	if (k > 64)
		k = 64;
	vd_logprobs(row, V, chosen, k, &lp, &rank, top_ids, top_lps);
	if (chosen_lp_out)
		*chosen_lp_out = lp;
	out->entries = calloc((size_t)k + 1, sizeof(*out->entries));
	if (!out->entries)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	out->entries[n++] = (vd_logprob_entry){ .token_id = chosen, .logprob = lp, .rank = rank };
	for (int j = 0; j < k; j++)
		if (top_ids[j] != chosen)
			out->entries[n++] = (vd_logprob_entry){ .token_id = top_ids[j],
								 .logprob = top_lps[j], .rank = j + 1 };
	out->n = n;
	for (int j = 0; j < n; j++) {
		vd_status st = vd_tokenizer_decode(e->tok, &out->entries[j].token_id, 1, false,
						   &out->entries[j].decoded);
		if (st != VD_OK)
			return st;
	}
	return VD_OK;
}

static int is_eos(const vd_engine *e, int32_t t)
{
	for (int i = 0; i < e->n_eos; i++)
		if (e->eos[i] == t)
			return 1;
	return 0;
}

/* Earliest occurrence of any stop string in text at or after `from`. */
static const char *find_stop(const char *const *stop, const char *text, size_t from,
			     size_t *pos)
{
	const char *hit = NULL;
	size_t best = (size_t)-1;

	for (int i = 0; stop && stop[i]; i++) {
		const char *p;

		if (!stop[i][0])
			continue;
		p = strstr(text + from, stop[i]);
		if (p && (size_t)(p - text) < best) {
			best = (size_t)(p - text);
			hit = stop[i];
		}
	}
	*pos = best;
	return hit;
}

static size_t max_stop_len(const char *const *stop)
{
	size_t m = 0;

	for (int i = 0; stop && stop[i]; i++)
		if (strlen(stop[i]) > m)
			m = strlen(stop[i]);
	return m;
}

/* Generate one completion after a fresh prefill. */
static vd_status complete(run *R, int index, vd_completion *c, vd_output *out)
{
	vd_engine *e = R->e;
	const vd_sampling_params *p = &R->r->params;
	const vd_ops *o = e->be->ops;
	int32_t V = e->spec.vocab_size;
	int64_t n_prompt = R->exp.n;
	int max_new = p->max_tokens;
	int want_prompt_lp = p->prompt_logprobs >= 0 && index == 0;
	int n_logits = want_prompt_lp ? (int)n_prompt : 1;
	int32_t *rows = malloc((size_t)n_logits * sizeof(int32_t));
	int32_t *seq = malloc((size_t)(n_prompt + max_new + 1) * sizeof(int32_t));
	float *host = malloc((size_t)n_logits * (size_t)V * sizeof(float));
	void *scratch = malloc((size_t)V * (2 * sizeof(float) + sizeof(int32_t)));
	int64_t lshape[2] = { n_logits, V };
	vd_tensor logits = { 0 };
	int32_t *pos = NULL;
	vd_detok *dt = NULL;
	char *text = NULL;
	size_t text_len = 0, text_cap = 0;
	size_t stop_lookback = max_stop_len(p->stop);
	vd_rng rng;
	vd_status st;

	c->index = index;
	c->stop_token = -1;
	if (!rows || !seq || !host || !scratch) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (p->seed >= 0)
		vd_rng_seed(&rng, (uint64_t)p->seed + (uint64_t)index);
	else
		vd_rng_seed(&rng, vd_rng_next(&e->rng));
	if (n_prompt + max_new > e->max_model_len)
		max_new = e->max_model_len - (int)n_prompt;
	memcpy(seq, R->exp.ids, (size_t)n_prompt * sizeof(int32_t));
	for (int i = 0; i < n_logits; i++)
		rows[i] = want_prompt_lp ? i : (int32_t)n_prompt - 1;
	c->token_ids = malloc((size_t)(max_new + 1) * sizeof(int32_t));
	if (p->logprobs >= 0)
		c->logprobs = calloc((size_t)max_new + 1, sizeof(*c->logprobs));
	if (!c->token_ids || (p->logprobs >= 0 && !c->logprobs)) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	st = vd_detok_create(e->tok, p->skip_special_tokens, R->exp.ids, (size_t)n_prompt, &dt);
	if (st != VD_OK)
		goto out;

	/* prefill */
	st = o->alloc(e->be, &logits, VD_DTYPE_F32, 2, lshape);
	if (st == VD_OK)
		st = positions_for(&R->exp, 0, n_prompt, &pos);
	if (st == VD_OK)
		st = forward(R, seq, 0, n_prompt, pos, rows, n_logits, &logits, 1);
	if (st == VD_OK)
		st = o->download(e->be, &logits, host);
	if (st != VD_OK)
		goto out;
	if (want_prompt_lp) {
		out->prompt_logprobs = calloc((size_t)n_prompt, sizeof(*out->prompt_logprobs));
		if (!out->prompt_logprobs) {
			st = vd_errorf(VD_ERR_NOMEM, "out of memory");
			goto out;
		}
		for (int64_t i = 1; i < n_prompt && st == VD_OK; i++)
			st = fill_logprobs(e, host + (size_t)(i - 1) * (size_t)V, V, seq[i],
					   p->prompt_logprobs, &out->prompt_logprobs[i], NULL);
		if (st != VD_OK)
			goto out;
		memmove(host, host + (size_t)(n_prompt - 1) * (size_t)V, (size_t)V * sizeof(float));
	}

	c->finish_reason = VD_FINISH_LENGTH;
	for (int step = 0; step < max_new; step++) {
		float *row = host;
		int32_t banned[MAX_EOS + 64];
		int n_banned = 0;
		vd_sample_history h = { .prompt = seq, .n_prompt = n_prompt,
					.output = c->token_ids, .n_output = c->n_tokens };
		float *work = (float *)scratch;
		int32_t tok;
		const char *delta;
		double lp;

		if (step < p->min_tokens) {
			for (int i = 0; i < e->n_eos && !p->ignore_eos; i++)
				banned[n_banned++] = e->eos[i];
			for (int i = 0; i < p->n_stop_token_ids && n_banned < MAX_EOS + 64; i++)
				banned[n_banned++] = p->stop_token_ids[i];
		}
		/* logprobs come from the raw logits; sampling modifies a copy */
		if (p->logprobs >= 0) {
			memcpy(work + V, row, (size_t)V * sizeof(float));
		}
		tok = vd_sample_token(row, V, p, &h, banned, n_banned, &rng, scratch);
		if (p->logprobs >= 0) {
			st = fill_logprobs(e, work + V, V, tok, p->logprobs,
					   &c->logprobs[c->n_tokens], &lp);
			if (st != VD_OK)
				goto out;
			c->cumulative_logprob += lp;
		}
		c->token_ids[c->n_tokens++] = tok;
		seq[n_prompt + step] = tok;

		if (!p->ignore_eos && is_eos(e, tok)) {
			c->finish_reason = VD_FINISH_STOP;
			break;
		}
		{
			int stop_tok = 0;

			for (int i = 0; i < p->n_stop_token_ids; i++)
				stop_tok |= p->stop_token_ids[i] == tok;
			if (stop_tok) {
				c->finish_reason = VD_FINISH_STOP;
				c->stop_token = tok;
				break;
			}
		}
		st = vd_detok_push(dt, tok, &delta);
		if (st != VD_OK)
			goto out;
		if (*delta) {
			size_t dl = strlen(delta);
			size_t from = text_len > stop_lookback ? text_len - stop_lookback : 0;
			size_t at;
			const char *hit;

			if (text_len + dl + 1 > text_cap) {
				char *nt;

				text_cap = (text_len + dl + 1) * 2;
				nt = realloc(text, text_cap);
				if (!nt) {
					st = vd_errorf(VD_ERR_NOMEM, "out of memory");
					goto out;
				}
				text = nt;
			}
			memcpy(text + text_len, delta, dl + 1);
			text_len += dl;
			hit = find_stop(p->stop, text, from, &at);
			if (hit) {
				text_len = p->include_stop_str_in_output ? at + strlen(hit) : at;
				text[text_len] = '\0';
				c->finish_reason = VD_FINISH_STOP;
				c->stop_reason = strdup(hit);
				break;
			}
		}
		if (step + 1 == max_new)
			break;
		/* decode step: one token at position n_prompt + step */
		free(pos);
		pos = NULL;
		st = positions_for(&R->exp, n_prompt + step, 1, &pos);
		if (st == VD_OK) {
			int32_t zero = 0;
			vd_tensor one = vd_tensor_rows(&logits, 0, 1);

			st = forward(R, &seq[n_prompt + step], n_prompt + step, 1, pos, &zero, 1, &one, 0);
			if (st == VD_OK)
				st = o->download(e->be, &one, host);
		}
		if (st != VD_OK)
			goto out;
	}
	if (!c->stop_reason && c->finish_reason != VD_FINISH_STOP) {
		const char *tail;

		st = vd_detok_flush(dt, &tail);
		if (st == VD_OK && *tail) {
			size_t tl = strlen(tail);
			char *nt = realloc(text, text_len + tl + 1);

			if (!nt) {
				st = vd_errorf(VD_ERR_NOMEM, "out of memory");
				goto out;
			}
			text = nt;
			memcpy(text + text_len, tail, tl + 1);
			text_len += tl;
		}
	}
	c->text = text ? text : dup_text("", 0);
	text = NULL;
	if (!c->text)
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
out:
	free(text);
	vd_detok_destroy(dt);
	o->free(e->be, &logits);
	free(pos);
	free(rows);
	free(seq);
	free(host);
	free(scratch);
	return st;
}

vd_status vd_engine_run_one(vd_engine *e, const vd_request *q, int index, vd_output *out)
{
	run R = { .e = e, .r = q };
	char idbuf[32];
	int n = q->params.n > 0 ? q->params.n : 1;
	vd_status st;

	memset(out, 0, sizeof(*out));
	snprintf(idbuf, sizeof(idbuf), "%d", index);
	out->request_id = strdup(q->request_id ? q->request_id : idbuf);
	if (q->prompt)
		out->prompt = strdup(q->prompt);
	st = prepare(&R);
	if (st == VD_OK)
		st = encode_images(&R);
	if (st == VD_OK) {
		out->n_prompt_tokens = (int)R.exp.n;
		out->prompt_token_ids = malloc((size_t)R.exp.n * sizeof(int32_t));
		out->completions = calloc((size_t)n, sizeof(*out->completions));
		if (!out->prompt_token_ids || !out->completions)
			st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		else
			memcpy(out->prompt_token_ids, R.exp.ids, (size_t)R.exp.n * sizeof(int32_t));
	}
	for (int i = 0; st == VD_OK && i < n; i++) {
		st = complete(&R, i, &out->completions[i], out);
		out->n_completions = i + 1;
	}
	if (st != VD_OK) {
		out->status = st;
		out->error = strdup(vd_error_message());
	}
	run_free(&R);
	/* per-request failures are reported in out; only an internal or device
	 * failure stops the engine */
	return st == VD_ERR_BACKEND || st == VD_ERR_INTERNAL ? st : VD_OK;
}
