/* Engine: loads a model directory through its family plugin and runs
 * requests with continuous batching. Each step: the scheduler picks token
 * counts per sequence, images whose rows are due get encoded into the
 * encoder cache, all scheduled tokens run as ONE flattened batch through the
 * decoder over the paged KV cache, and sequences that completed their known
 * tokens sample the next one. Nothing here names a model family. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/encoder_cache.h"
#include "core/engine.h"
#include "core/expansion.h"
#include "core/kv_cache.h"
#include "core/mm.h"
#include "core/output.h"
#include "core/registry.h"
#include "core/request.h"
#include "core/sampler.h"
#include "core/scheduler.h"
#include "kernels/backend.h"
#include "vllmd/models.h"

#define MAX_EOS 16

/* Growable buffers for building one step's batch. */
typedef struct step_bufs {
	int32_t *ids, *pos, *rope_table, *qsl, *seq_lens, *block_tables, *logit_rows;
	int64_t *slots;
	int64_t cap_tokens, cap_seqs, cap_bt, cap_logits;
	int32_t *img_rows;
	int64_t cap_img;
	/* for each logit row: the sequence and what it is for */
	vd_seq **lrow_seq;
	int64_t *lrow_prompt_pos; /* prompt position whose logprob it gives; -1 = sample */
	/* sampling on the backend (sample_full) */
	bool use_picks;           /* this step's rows all sample on the backend */
	vd_sample_row *srows;     /* per logit row */
	int32_t *picks;           /* per logit row: the token picked */
	float *lp_chosen;         /* per logit row: its logprob and rank */
	int32_t *lp_rank;
	int32_t *lp_ids;          /* per logit row: VD_MAX_LOGPROBS best ids, logprobs */
	float *lp_vals;
	vd_sample_hist *hist;     /* the rows' history entries */
	int64_t n_hist, cap_hist;
	int32_t *mark;            /* (V) -1 between uses: vd_sample_build_hist's map */
	float *host_logits;
	int64_t cap_host;
	void *scratch;            /* host sampler scratch */
	/* backend tensors kept across steps (re-allocating them every step
	 * fragments the host heap): hidden rows and logits */
	vd_tensor x, logits;
} step_bufs;

typedef struct group_node {
	vd_group g;                   /* first member: a vd_group * is its node */
	struct group_node *prev, *next;
	bool linked;
} group_node;

/* VLLMD_PROFILE=1: where engine steps spend their wall time, printed to
 * stderr when the engine is destroyed. Encoder and decoder phases are
 * synchronised with the backend so each is charged its own GPU time. */
typedef struct step_prof {
	bool on;
	int64_t steps, decode_steps, tokens, enc_calls;
	double sched, enc, build, fwd, post, decode_fwd;
} step_prof;

static double prof_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct vd_engine {
	step_prof prof;
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
	vd_rng rng;                   /* draws for unseeded requests */
	int64_t arrival;

	vd_kv_cache kv;
	vd_dtype kv_dtype;            /* the compute dtype or VD_DTYPE_F8E4M3 */
	vd_encoder_cache *enc;
	vd_scheduler sched;
	vd_output_ctx octx;
	step_bufs b;
	group_node *groups;           /* live requests */
	int n_groups;
	vd_engine_stats stats;
	vd_stream_fn listener;
	void *listener_ctx;

	/* step graphs of decode-only steps (ops graph_begin/graph_end): a
	 * decode batch of n sequences is padded to the smallest size >= n, and
	 * graph id i replays batches of graph_sizes[i] sequences with block
	 * tables of graph_maxb columns */
	int graph_sizes[64];
	int n_graph_sizes;
	int64_t graph_maxb;
};

/* vLLM's max_seq_len_to_capture: longer contexts run op by op */
#define GRAPH_MAX_LEN 8192

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
	const char *env = getenv("VLLMD_PLUGIN_DIR");

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

/* KV blocks from the memory budget, the encoder cache, the scheduler, and a
 * profiling forward of the largest step so its workspace exists (and memory
 * failures show) at start-up rather than mid-run. */
static vd_status profile_step(vd_engine *e);

/* KV cache of `blocks` usable blocks (+ the null block), the encoder cache
 * and the scheduler, then the profiling step unless it already ran (its
 * step buffers are kept, and it touches only the null block). */
static vd_status build_caches(vd_engine *e, int64_t blocks, int bs, int64_t max_seqs, int64_t mnbt,
			      bool profile)
{
	int64_t enc_budget = mnbt > e->limits.max_tokens_per_image ? mnbt
								   : e->limits.max_tokens_per_image;
	vd_sched_config sc;
	vd_status st;

	if (blocks + 1 > INT32_MAX / bs)
		blocks = INT32_MAX / bs - 1;
	st = vd_kv_cache_init(&e->kv, e->be, (int)blocks + 1, bs, e->spec.num_layers,
			      e->spec.num_kv_heads, e->spec.head_dim, e->kv_dtype,
			      e->args.enable_prefix_caching);
	if (st != VD_OK)
		return st;
	st = vd_encoder_cache_create(e->be, 4 * enc_budget, &e->enc);
	if (st != VD_OK)
		return st;
	sc = (vd_sched_config){ .max_num_seqs = (int)max_seqs, .max_num_batched_tokens = mnbt,
				.encoder_budget_rows = enc_budget,
				.prefix_caching = e->args.enable_prefix_caching };
	st = vd_scheduler_init(&e->sched, &sc, &e->kv, e->enc);
	if (st != VD_OK)
		return st;
	e->octx = (vd_output_ctx){ .tok = e->tok, .eos = e->eos, .n_eos = e->n_eos,
				   .max_model_len = e->max_model_len,
				   .vocab_size = e->spec.vocab_size };
	e->stats.kv_blocks = (int)blocks;
	e->stats.block_size = bs;
	return profile ? profile_step(e) : VD_OK;
}

static void drop_caches(vd_engine *e)
{
	vd_scheduler_free(&e->sched);
	memset(&e->sched, 0, sizeof(e->sched));
	vd_encoder_cache_destroy(e->enc);
	e->enc = NULL;
	if (e->kv.pool)
		vd_kv_cache_free(&e->kv);
	memset(&e->kv, 0, sizeof(e->kv));
}

/* Decode batch sizes that get a step graph, as vLLM captures them: 1, 2, 4,
 * then every 8 up to 256 and every 16 up to 512, none above max_num_seqs. */
static void init_graphs(vd_engine *e)
{
	int maxs = e->sched.cfg.max_num_seqs;
	int64_t len = e->max_model_len < GRAPH_MAX_LEN ? e->max_model_len : GRAPH_MAX_LEN;

	e->n_graph_sizes = 0;
	if (e->args.enforce_eager || !e->be->ops->graph_begin || !e->be->ops->graph_end)
		return;
	e->graph_maxb = (len + e->kv.block_size - 1) / e->kv.block_size;
	for (int n = 1; n <= maxs && n <= 512 && e->n_graph_sizes < 64;
	     n = n < 8 ? (n < 4 ? 2 * n : 8) : n < 256 ? n + 8 : n + 16)
		e->graph_sizes[e->n_graph_sizes++] = n;
}

static vd_status init_caches(vd_engine *e)
{
	int bs = e->args.block_size > 0 ? e->args.block_size : 16;
	int64_t block_bytes = vd_kv_block_bytes(e->spec.num_layers, bs, e->spec.num_kv_heads,
						e->spec.head_dim, e->kv_dtype);
	int64_t per_seq = (e->max_model_len + bs - 1) / bs;
	int64_t max_seqs = e->args.max_num_seqs > 0 ? e->args.max_num_seqs : 256;
	int64_t mnbt = e->args.max_num_batched_tokens > 0 ? e->args.max_num_batched_tokens : 2048;
	int64_t blocks;
	bool profiled = false;
	vd_status st;

	if (e->args.kv_cache_memory > 0) {
		blocks = e->args.kv_cache_memory / block_bytes;
	} else if (e->be->device == VD_DEVICE_CUDA) {
		/* vLLM's rule: profile the largest step with one sequence's worth
		 * of blocks, then give KV blocks whatever keeps the GPU's use at
		 * gpu_memory_utilization of its memory. A reserve covers what the
		 * profiled step does not (vision tower activations, sampling). */
		double util = e->args.gpu_memory_utilization > 0 ? e->args.gpu_memory_utilization
								 : 0.9;
		int64_t fr, tot, reserve, avail;

		if (util > 1.0)
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "gpu_memory_utilization %.3f is above 1.0", util);
		st = build_caches(e, per_seq, bs, max_seqs, mnbt, true);
		if (st == VD_OK)
			st = e->be->ops->sync(e->be);
		if (st == VD_OK)
			st = vd_backend_mem_info(e->be, &fr, &tot);
		if (st != VD_OK)
			return st;
		drop_caches(e);
		profiled = true;
		reserve = tot / 100 > (256LL << 20) ? tot / 100 : (256LL << 20);
		avail = (int64_t)(util * (double)tot) - (tot - fr) + (per_seq + 1) * block_bytes -
			reserve;
		blocks = avail > 0 ? avail / block_bytes : 0;
		if (blocks < per_seq)
			return vd_errorf(VD_ERR_NOMEM,
					 "gpu_memory_utilization %.2f of %.1f GiB leaves %.2f GiB for "
					 "the KV cache after the weights and a profiled step; one "
					 "sequence of max_model_len %d needs %.2f GiB: raise "
					 "gpu_memory_utilization or lower max_model_len / "
					 "max_num_batched_tokens",
					 util, (double)tot / (1 << 30),
					 (double)(avail > 0 ? avail : 0) / (1 << 30), e->max_model_len,
					 (double)(per_seq * block_bytes) / (1 << 30));
	} else {
		/* CPU default: every sequence at full length, capped at 1 GiB */
		blocks = max_seqs * per_seq;
		if (blocks * block_bytes > (1LL << 30))
			blocks = (1LL << 30) / block_bytes;
		if (blocks < per_seq)
			blocks = per_seq;
	}
	if (blocks < per_seq)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "kv_cache_memory %lld bytes holds %lld KV blocks of %d tokens; one "
				 "sequence of max_model_len %d needs %lld (%lld bytes): raise "
				 "kv_cache_memory or lower max_model_len",
				 (long long)e->args.kv_cache_memory, (long long)blocks, bs,
				 e->max_model_len, (long long)per_seq, (long long)(per_seq * block_bytes));
	return build_caches(e, blocks, bs, max_seqs, mnbt, !profiled);
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
	/* a caller built against an older vd_engine_args passes fewer fields:
	 * the rest keep their defaults */
	vd_engine_args_init(&e->args);
	memcpy(&e->args, args, args->struct_size > 0 && args->struct_size < sizeof(*args)
				       ? args->struct_size : sizeof(*args));
	e->args.struct_size = sizeof(e->args);
	e->prof.on = getenv("VLLMD_PROFILE") && strcmp(getenv("VLLMD_PROFILE"), "0");
	e->model_dir = strdup(args->model);
	if (!e->model_dir) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto fail;
	}
	vd_rng_seed(&e->rng, args->seed);
	e->arrival = 0;

	if (args->device && strcmp(args->device, "auto") && strcmp(args->device, "cpu") &&
	    strcmp(args->device, "cuda")) {
		st = vd_errorf(VD_ERR_INVALID_ARG, "device '%s' is not one of auto, cpu, cuda",
			       args->device);
		goto fail;
	}
	st = vd_backend_create(vd_backend_resolve_device(args->device), args->num_threads, &e->be);
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
	st = vd_backend_set_dtype(e->be, args->dtype, checkpoint_dtype(e->config));
	if (st == VD_OK)
		st = resolve_kv_dtype(e);
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

	st = init_caches(e);
	if (st != VD_OK)
		goto fail;
	init_graphs(e);
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

/* ------------------------------------------------------------ step buffers */

static void free_step_bufs(vd_backend *be, step_bufs *b)
{
	be->ops->free(be, &b->x);
	be->ops->free(be, &b->logits);
	free(b->ids);
	free(b->pos);
	free(b->rope_table);
	free(b->qsl);
	free(b->seq_lens);
	free(b->block_tables);
	free(b->logit_rows);
	free(b->slots);
	free(b->img_rows);
	free(b->lrow_seq);
	free(b->lrow_prompt_pos);
	free(b->srows);
	free(b->picks);
	free(b->lp_chosen);
	free(b->lp_rank);
	free(b->lp_ids);
	free(b->lp_vals);
	free(b->hist);
	free(b->mark);
	free(b->host_logits);
	free(b->scratch);
	memset(b, 0, sizeof(*b));
}

/* realloc *p to hold n elements of size sz when *cap < n. */
static vd_status need(void *pp, int64_t *cap, int64_t n, size_t sz)
{
	void **p = pp;
	void *q;

	if (n <= *cap)
		return VD_OK;
	q = realloc(*p, (size_t)n * sz);
	if (!q)
		return vd_errorf(VD_ERR_NOMEM, "out of memory building a batch of %lld", (long long)n);
	*p = q;
	*cap = n;
	return VD_OK;
}

static vd_status size_step_bufs(vd_engine *e, int64_t T, int64_t n, int64_t maxb, int64_t nl)
{
	step_bufs *b = &e->b;
	int64_t c;
	int64_t V = e->spec.vocab_size;
	vd_status st = VD_OK;

	if (T > b->cap_tokens) {
		int64_t cap = T;

		c = b->cap_tokens;
		st = need(&b->ids, &c, cap, sizeof(int32_t));
		c = b->cap_tokens;
		if (st == VD_OK)
			st = need(&b->pos, &c, 3 * cap, sizeof(int32_t));
		c = b->cap_tokens;
		if (st == VD_OK)
			st = need(&b->rope_table, &c, cap, sizeof(int32_t));
		c = b->cap_tokens;
		if (st == VD_OK)
			st = need(&b->slots, &c, cap, sizeof(int64_t));
		c = b->cap_tokens;
		if (st == VD_OK)
			st = need(&b->img_rows, &c, cap, sizeof(int32_t));
		if (st != VD_OK)
			return st;
		b->cap_tokens = cap;
	}
	if (n + 1 > b->cap_seqs) {
		c = b->cap_seqs;
		st = need(&b->qsl, &c, n + 1, sizeof(int32_t));
		c = b->cap_seqs;
		if (st == VD_OK)
			st = need(&b->seq_lens, &c, n + 1, sizeof(int32_t));
		if (st != VD_OK)
			return st;
		b->cap_seqs = n + 1;
	}
	st = need(&b->block_tables, &b->cap_bt, n * maxb, sizeof(int32_t));
	if (st != VD_OK)
		return st;
	if (nl > b->cap_logits) {
		c = b->cap_logits;
		st = need(&b->logit_rows, &c, nl, sizeof(int32_t));
		c = b->cap_logits;
		if (st == VD_OK)
			st = need(&b->lrow_seq, &c, nl, sizeof(vd_seq *));
		c = b->cap_logits;
		if (st == VD_OK)
			st = need(&b->lrow_prompt_pos, &c, nl, sizeof(int64_t));
		c = b->cap_logits;
		if (st == VD_OK)
			st = need(&b->srows, &c, nl, sizeof(vd_sample_row));
		c = b->cap_logits;
		if (st == VD_OK)
			st = need(&b->picks, &c, nl, sizeof(int32_t));
		c = b->cap_logits;
		if (st == VD_OK)
			st = need(&b->lp_chosen, &c, nl, sizeof(float));
		c = b->cap_logits;
		if (st == VD_OK)
			st = need(&b->lp_rank, &c, nl, sizeof(int32_t));
		c = b->cap_logits;
		if (st == VD_OK)
			st = need(&b->lp_ids, &c, nl * VD_MAX_LOGPROBS, sizeof(int32_t));
		c = b->cap_logits;
		if (st == VD_OK)
			st = need(&b->lp_vals, &c, nl * VD_MAX_LOGPROBS, sizeof(float));
		if (st != VD_OK)
			return st;
		b->cap_logits = nl;
	}
	st = need(&b->host_logits, &b->cap_host, nl * V, sizeof(float));
	if (st == VD_OK && !b->mark) {
		b->scratch = malloc(vd_sample_scratch_bytes((int32_t)V));
		b->mark = malloc((size_t)V * sizeof(int32_t));
		if (!b->mark || !b->scratch)
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
		for (int64_t i = 0; i < V; i++)
			b->mark[i] = -1;
	}
	return st;
}

/* Make t (a backend tensor kept across steps) hold at least rows x cols. */
static vd_status ensure_rows(vd_engine *e, vd_tensor *t, int64_t rows, int64_t cols, vd_dtype dt)
{
	int64_t shape[2];

	if (t->data && t->shape[0] >= rows && t->shape[1] == cols)
		return VD_OK;
	shape[0] = t->data && rows < t->shape[0] * 3 / 2 ? t->shape[0] * 3 / 2 : rows;
	shape[1] = cols;
	e->be->ops->free(e->be, t);
	memset(t, 0, sizeof(*t));
	return e->be->ops->alloc(e->be, t, dt, 2, shape);
}

/* Embeddings, image rows and the decoder over the batch in e->b, logits
 * into `logits`. Image rows: each overlap of a placeholder run of seqs
 * (NULL: none) with the scheduled chunk. */
static vd_status forward_batch(vd_engine *e, int64_t T, int n_seqs, int64_t maxb, int n_logits,
			       const vd_seq *const *seqs, const int64_t *n_sched, vd_tensor *x,
			       vd_tensor *logits)
{
	const vd_ops *o = e->be->ops;
	step_bufs *b = &e->b;
	vd_attn_meta meta;
	vd_status st;

	st = vd_decoder_embed(e->dec, b->ids, T, x);
	/* image rows: each overlap of a placeholder run with a scheduled chunk */
	for (int i = 0, off = 0; st == VD_OK && seqs && i < n_seqs; off += (int)n_sched[i], i++) {
		const vd_seq *q = seqs[i];
		const vd_expansion *xp = &q->group->exp;
		int64_t c = q->num_computed, k = n_sched[i];

		for (int p = 0; st == VD_OK && p < xp->n_ph; p++) {
			const vd_placeholder *ph = &xp->ph[p];
			int64_t lo = c > ph->offset ? c : ph->offset;
			int64_t hi = c + k < ph->offset + ph->length ? c + k : ph->offset + ph->length;
			const vd_tensor *emb;
			vd_tensor src;

			if (lo >= hi)
				continue;
			emb = vd_encoder_cache_get(e->enc, q->group->items[ph->item].hash);
			if (!emb) {
				st = vd_errorf(VD_ERR_INTERNAL, "image %d embeddings missing from the "
					       "encoder cache", ph->item);
				break;
			}
			src = vd_tensor_rows(emb, lo - ph->offset, hi - lo);
			for (int64_t r = lo; r < hi; r++)
				b->img_rows[r - lo] = (int32_t)(off + (r - c));
			st = o->scatter_rows(e->be, &src, b->img_rows, hi - lo, x);
		}
	}
	if (st != VD_OK)
		return st;
	meta = (vd_attn_meta){ .num_seqs = n_seqs, .num_tokens = (int)T, .query_start_loc = b->qsl,
			       .seq_lens = b->seq_lens, .block_tables = b->block_tables,
			       .max_blocks = (int)maxb, .block_size = e->kv.block_size,
			       .slot_mapping = b->slots, .k_scale = 1.0f, .v_scale = 1.0f };
	return vd_decoder_forward(e->dec, x, b->pos,
				  e->spec.rope_type == VD_ROPE_LONGROPE ? b->rope_table : NULL, &meta,
				  e->kv.k, e->kv.v, b->logit_rows, n_logits, logits);
}

/* Run the decoder over a batch described in e->b; logits (n_logits, V) land
 * in b->host_logits, or picked tokens in b->picks. gid >= 0: a padded
 * decode batch that runs as step graph gid when the backend can. */
static vd_status run_decoder(vd_engine *e, int64_t T, int n_seqs, int64_t maxb, int n_logits,
			     const vd_seq *const *seqs, const int64_t *n_sched, int gid)
{
	const vd_ops *o = e->be->ops;
	step_bufs *b = &e->b;
	vd_tensor x, logits;
	bool done = false;
	vd_status st;

	st = ensure_rows(e, &b->x, T, e->spec.hidden_size, vd_backend_compute_dtype(e->be));
	if (st == VD_OK)
		st = ensure_rows(e, &b->logits, n_logits, e->spec.vocab_size, VD_DTYPE_F32);
	if (st != VD_OK)
		return st;
	x = vd_tensor_rows(&b->x, 0, T);
	logits = vd_tensor_rows(&b->logits, 0, n_logits);
	if (gid >= 0 && o->graph_begin(e->be, gid) == VD_OK) {
		int ran = 0;
		vd_status sf = forward_batch(e, T, n_seqs, maxb, n_logits, NULL, NULL, &x, &logits);
		vd_status se = o->graph_end(e->be, &ran);

		/* not recorded or not the recording: nothing ran, so run it op by op */
		done = sf == VD_OK && se == VD_OK && ran;
		e->stats.graph_steps += done;
	}
	st = done ? VD_OK : forward_batch(e, T, n_seqs, maxb, n_logits, seqs, n_sched, &x, &logits);
	if (st == VD_OK && b->use_picks) {
		vd_sample_args a = { .struct_size = sizeof(a), .rows = b->srows, .hist = b->hist,
				     .n_hist = b->n_hist, .lp_k = VD_MAX_LOGPROBS,
				     .picks = b->picks, .chosen_lp = b->lp_chosen,
				     .chosen_rank = b->lp_rank, .top_ids = b->lp_ids,
				     .top_lps = b->lp_vals };

		st = o->sample_full(e->be, &logits, &a);
	} else if (st == VD_OK)
		st = o->download(e->be, &logits, b->host_logits);
	return st;
}

/* The tokens q may not pick yet (EOS and stop ids before min_tokens) into
 * banned (room for MAX_EOS + 64); returns their count. */
static int banned_tokens(const vd_engine *e, const vd_seq *q, int32_t *banned)
{
	const vd_sampling_params *p = &q->group->params;
	int n = 0;

	if (q->out->n_tokens >= p->min_tokens)
		return 0;
	for (int i = 0; i < e->n_eos && !p->ignore_eos; i++)
		banned[n++] = e->eos[i];
	for (int i = 0; i < p->n_stop_token_ids && n < MAX_EOS + 64; i++)
		banned[n++] = p->stop_token_ids[i];
	return n;
}

/* The sample_full row of logit row r (a sampling row of q): its filters,
 * noise key, logprob count and history entries. */
static vd_status build_sample_row(vd_engine *e, int r, vd_seq *q)
{
	step_bufs *b = &e->b;
	const vd_sampling_params *p = &q->group->params;
	int32_t V = e->spec.vocab_size, banned[MAX_EOS + 64];
	int n_banned = banned_tokens(e, q, banned);
	int64_t room = n_banned;
	vd_sample_row *sr = &b->srows[r];
	vd_sample_history h = { .prompt = q->tokens, .n_prompt = q->n_prompt,
				.output = q->tokens + q->n_prompt,
				.n_output = q->n_tokens - q->n_prompt };
	vd_status st;

	vd_sample_row_init(p, &q->rng, sr);
	sr->logprobs = p->logprobs < 0 ? -1 : p->logprobs < VD_MAX_LOGPROBS ? p->logprobs
									    : VD_MAX_LOGPROBS;
	if (vd_sampling_needs_history(p))
		room += q->n_tokens;
	if (room > V)
		room = V;
	st = need(&b->hist, &b->cap_hist, b->n_hist + room, sizeof(vd_sample_hist));
	if (st != VD_OK)
		return st;
	sr->hist_off = b->n_hist;
	sr->n_hist = vd_sample_build_hist(p, &h, banned, n_banned, V, b->mark, b->hist + b->n_hist);
	b->n_hist += sr->n_hist;
	return VD_OK;
}

/* A forward of the largest step the scheduler may build (the token budget,
 * with logits for max_num_seqs rows), writing only into the null block, so
 * workspaces reach their peak size now and memory use does not creep up
 * under the first heavy load. */
static vd_status profile_step(vd_engine *e)
{
	step_bufs *b = &e->b;
	int64_t T = e->sched.cfg.max_num_batched_tokens;
	int64_t bs = e->kv.block_size;
	int64_t nl = e->sched.cfg.max_num_seqs;
	vd_status st;

	if (T > e->max_model_len)
		T = e->max_model_len;
	if (nl > T)
		nl = T;
	st = size_step_bufs(e, T, 1, (T + bs - 1) / bs, nl);
	if (st != VD_OK)
		return st;
	for (int64_t i = 0; i < T; i++) {
		b->ids[i] = 0;
		b->pos[i] = (int32_t)i;
		b->pos[T + i] = (int32_t)i;
		b->pos[2 * T + i] = (int32_t)i;
		b->rope_table[i] = 0;
		b->slots[i] = i % bs; /* block 0: the null block */
	}
	for (int64_t i = 0; i < (T + bs - 1) / bs; i++)
		b->block_tables[i] = 0;
	for (int64_t i = 0; i < nl; i++)
		b->logit_rows[i] = (int32_t)(T - nl + i);
	b->qsl[0] = 0;
	b->qsl[1] = (int32_t)T;
	b->seq_lens[0] = (int32_t)T;
	/* every row sampled with a sort (top_p) and logprobs: the sampler's
	 * work arrays reach their peak now too */
	b->use_picks = e->be->ops->sample_full != NULL;
	b->n_hist = 0;
	for (int64_t i = 0; i < nl; i++)
		b->srows[i] = (vd_sample_row){ .temperature = 1.0f, .top_p = 0.5f,
					       .min_p_log = -INFINITY, .repetition_penalty = 1.0f,
					       .logprobs = 0, .key = (uint64_t)i };
	st = run_decoder(e, T, 1, (T + bs - 1) / bs, (int)nl, NULL, NULL, -1);
	b->use_picks = false;
	if (st != VD_OK)
		return vd_errorf(st, "profiling a step of %lld tokens failed: %s (lower "
				 "max_num_batched_tokens or max_model_len)", (long long)T,
				 vd_error_message());
	return VD_OK;
}

/* ------------------------------------------------------------ requests */

/* Tell the listener what q produced since it last heard. */
static void emit(vd_engine *e, vd_seq *q)
{
	bool fin = q->state == VD_SEQ_FINISHED;
	const char *text = fin ? q->out->text : q->text;
	size_t len = fin ? (text ? strlen(text) : 0) : q->text_len;
	size_t safe = len, hold = q->group->stop_lookback ? q->group->stop_lookback - 1 : 0;
	vd_stream_update u;

	if (!e->listener)
		return;
	if (!fin)
		safe = len > hold ? len - hold : 0;
	/* never split a UTF-8 sequence */
	while (safe > q->emitted_text && safe < len && ((unsigned char)text[safe] & 0xc0) == 0x80)
		safe--;
	if (safe < q->emitted_text)
		safe = q->emitted_text;
	u = (vd_stream_update){
		.user = q->group->user,
		.index = q->index,
		.delta = text ? text + q->emitted_text : "",
		.delta_len = safe - q->emitted_text,
		.tokens = q->out->token_ids + q->emitted_tokens,
		.n_tokens = q->out->n_tokens - q->emitted_tokens,
		.logprobs = q->out->logprobs ? q->out->logprobs + q->emitted_tokens : NULL,
		.finished = fin,
		.finish_reason = q->out->finish_reason,
		.request_finished = q->group->n_finished == q->group->n_seqs,
		.out = q->group->out,
	};
	if (!fin && u.delta_len == 0 && u.n_tokens == 0)
		return;
	q->emitted_text = safe;
	q->emitted_tokens = q->out->n_tokens;
	e->listener(e->listener_ctx, &u);
}

void vd_engine_set_listener(vd_engine *e, vd_stream_fn fn, void *ctx)
{
	e->listener = fn;
	e->listener_ctx = ctx;
}

static void free_group(vd_engine *e, group_node *gn)
{
	vd_group *g = &gn->g;

	for (int i = 0; i < g->n_seqs; i++) {
		vd_seq *q = &g->seqs[i];

		vd_output_release(q);
		free(q->tokens);
		free(q->blocks);
		free(q->hashes);
		free(q->enc_held);
	}
	free(g->seqs);
	for (int i = 0; i < g->n_items; i++)
		vd_mm_item_free(&g->items[i]);
	free(g->items);
	vd_expansion_free(&g->exp);
	if (gn->linked) {
		if (gn->prev)
			gn->prev->next = gn->next;
		else
			e->groups = gn->next;
		if (gn->next)
			gn->next->prev = gn->prev;
		e->n_groups--;
	}
	free(gn);
}

static void abort_group(vd_engine *e, group_node *gn)
{
	vd_group *g = &gn->g;

	for (int i = 0; i < g->n_seqs; i++) {
		vd_seq *q = &g->seqs[i];

		if (q->state == VD_SEQ_FINISHED)
			continue;
		vd_scheduler_finish(&e->sched, q);
		if (!q->out->text) {
			q->out->text = q->text ? q->text : strdup("");
			q->text = NULL;
		}
		q->out->finish_reason = VD_FINISH_ABORT;
		g->n_finished++;
		emit(e, q);
	}
	free_group(e, gn);
}

vd_status vd_engine_abort(vd_engine *e, void *user)
{
	for (group_node *gn = e->groups; gn; gn = gn->next)
		if (gn->g.user == user && gn->g.n_finished < gn->g.n_seqs) {
			abort_group(e, gn);
			return VD_OK;
		}
	return vd_errorf(VD_ERR_NOT_FOUND, "no running request with that handle");
}

void vd_engine_abort_all(vd_engine *e)
{
	while (e->groups)
		abort_group(e, e->groups);
}

static vd_status fail_request(vd_output *out, vd_status st)
{
	out->status = st;
	free(out->error);
	out->error = strdup(vd_error_message());
	return st == VD_ERR_NOMEM ? st : VD_OK;
}

/* Decode/process images (unless g->items came prepared), expand the
 * prompt, check the limits. */
static vd_status prepare_group(vd_engine *e, vd_group *g)
{
	const vd_request *q = &g->req;
	vd_mm_kwargs kw = { .struct_size = sizeof(kw), .min_pixels = q->min_pixels,
			    .max_pixels = q->max_pixels, .num_crops = q->num_crops };
	const vd_mm_item **ptrs = NULL;
	bool prepared = g->items != NULL;
	int n_images = prepared ? g->n_items : q->n_images;
	vd_prompt_in in;
	vd_status st;

	if (!q->prompt && (!q->prompt_token_ids || q->n_prompt_token_ids <= 0))
		return vd_errorf(VD_ERR_INVALID_ARG, "the request has neither a prompt nor prompt_token_ids");
	if (!prepared && (q->n_images < 0 || (q->n_images > 0 && !q->images)))
		return vd_errorf(VD_ERR_INVALID_ARG, "bad image list");
	if (n_images > e->limit_images)
		return vd_errorf(VD_ERR_INVALID_ARG, "At most %d image(s) may be provided in one prompt.",
				 e->limit_images);
	if (g->params.n < 1 || g->params.max_tokens < 1 || g->params.temperature < 0 ||
	    g->params.top_p <= 0 || g->params.top_p > 1 || g->params.min_tokens < 0 ||
	    g->params.logprobs > 64 || g->params.prompt_logprobs > 64)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "sampling parameters out of range (n >= 1, max_tokens >= 1, "
				 "temperature >= 0, 0 < top_p <= 1, min_tokens >= 0, logprobs <= 64)");
	if (n_images > 0) {
		if (!prepared)
			g->items = calloc((size_t)n_images, sizeof(*g->items));
		ptrs = calloc((size_t)n_images, sizeof(*ptrs));
		if (!g->items || !ptrs) {
			free(ptrs);
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
		}
	}
	for (int i = 0; prepared && i < n_images; i++)
		ptrs[i] = &g->items[i];
	for (int i = 0; !prepared && i < n_images; i++) {
		st = vd_mm_prepare(e->fam, e->fam_state, &q->images[i], &kw, e->args.max_image_pixels,
				   &g->items[i]);
		if (st != VD_OK) {
			free(ptrs);
			return vd_errorf(st, "image %d: %s", i, vd_error_message());
		}
		ptrs[i] = &g->items[i];
		g->n_items++;
	}
	if (!q->prompt) {
		for (int i = 0; i < q->n_prompt_token_ids; i++)
			if (q->prompt_token_ids[i] >= e->spec.vocab_size || q->prompt_token_ids[i] < 0) {
				free(ptrs);
				return vd_errorf(VD_ERR_INVALID_ARG,
						 "prompt_token_ids[%d] = %d is out of vocabulary (size %d)",
						 i, q->prompt_token_ids[i], e->spec.vocab_size);
			}
	}
	vd_expansion_init(&g->exp);
	in = (vd_prompt_in){ .struct_size = sizeof(in), .text = q->prompt,
			     .ids = q->prompt_token_ids, .n_ids = q->n_prompt_token_ids,
			     .items = ptrs, .n_items = g->n_items,
			     .add_special_tokens = q->add_special_tokens };
	st = e->fam->expand(e->fam_state, &in, &g->exp);
	if (st == VD_OK)
		st = vd_expansion_validate(&g->exp, ptrs, g->n_items);
	free(ptrs);
	if (st != VD_OK)
		return st;
	if (g->exp.n >= e->max_model_len)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "The decoder prompt (length %lld) is longer than the maximum model "
				 "length of %d.", (long long)g->exp.n, e->max_model_len);
	for (int i = 0; g->params.stop && g->params.stop[i]; i++)
		if (strlen(g->params.stop[i]) > g->stop_lookback)
			g->stop_lookback = strlen(g->params.stop[i]);
	return VD_OK;
}

static vd_status init_seq(vd_engine *e, vd_group *g, int i)
{
	vd_seq *q = &g->seqs[i];
	int64_t n = g->exp.n;

	q->arrival = e->arrival++;
	q->group = g;
	q->index = i;
	q->n_prompt = n;
	q->n_tokens = n;
	q->cap_tokens = n + g->params.max_tokens + 1;
	q->tokens = malloc((size_t)q->cap_tokens * sizeof(int32_t));
	q->enc_held = calloc((size_t)(g->n_items ? g->n_items : 1), sizeof(bool));
	if (!q->tokens || !q->enc_held)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	memcpy(q->tokens, g->exp.ids, (size_t)n * sizeof(int32_t));
	if (g->params.seed >= 0)
		vd_rng_seed(&q->rng, (uint64_t)g->params.seed + (uint64_t)i);
	else
		vd_rng_seed(&q->rng, vd_rng_next(&e->rng));
	q->out = &g->out->completions[i];
	return vd_output_start(&e->octx, q);
}

vd_status vd_engine_prepare_image(const vd_engine *e, const vd_image_input *in,
				  const vd_mm_kwargs *kw, vd_mm_item *out)
{
	if (in->kind == VD_IMAGE_EMBEDS) {
		memset(out, 0, sizeof(*out));
		return vd_errorf(VD_ERR_INVALID_ARG, "precomputed image embeddings are checked at "
				 "admission: pass them in vd_request.images");
	}
	return vd_mm_prepare(e->fam, e->fam_state, in, kw, e->args.max_image_pixels, out);
}

vd_status vd_engine_add_request(vd_engine *e, const vd_request *r, int index, vd_output *out,
				void *user, bool *admitted)
{
	return vd_engine_add_prepared(e, r, NULL, 0, index, out, user, admitted);
}

vd_status vd_engine_add_prepared(vd_engine *e, const vd_request *r, vd_mm_item *items,
				 int n_items, int index, vd_output *out, void *user,
				 bool *admitted)
{
	group_node *gn;
	vd_group *g;
	char idbuf[32];
	vd_status st;

	*admitted = false;
	memset(out, 0, sizeof(*out));
	snprintf(idbuf, sizeof(idbuf), "%d", index);
	out->request_id = strdup(r->request_id ? r->request_id : idbuf);
	if (r->prompt)
		out->prompt = strdup(r->prompt);
	gn = calloc(1, sizeof(*gn));
	if (gn && n_items > 0) {
		/* take the items now: from here free_group frees them */
		gn->g.items = malloc((size_t)n_items * sizeof(*items));
		if (gn->g.items) {
			memcpy(gn->g.items, items, (size_t)n_items * sizeof(*items));
			memset(items, 0, (size_t)n_items * sizeof(*items));
			gn->g.n_items = n_items;
		}
	}
	if (!gn || !out->request_id || (r->prompt && !out->prompt) ||
	    (n_items > 0 && !gn->g.items)) {
		for (int i = 0; i < n_items; i++)
			vd_mm_item_free(&items[i]);
		if (gn)
			free_group(e, gn);
		return fail_request(out, vd_errorf(VD_ERR_NOMEM, "out of memory"));
	}
	g = &gn->g;
	g->req = *r;
	g->params = r->params;
	g->user_index = index;
	g->out = out;
	g->user = user;
	st = prepare_group(e, g);
	if (st != VD_OK)
		goto fail;
	out->n_prompt_tokens = (int)g->exp.n;
	out->prompt_token_ids = malloc((size_t)g->exp.n * sizeof(int32_t));
	out->completions = calloc((size_t)g->params.n, sizeof(*out->completions));
	g->seqs = calloc((size_t)g->params.n, sizeof(*g->seqs));
	if (g->params.prompt_logprobs >= 0)
		out->prompt_logprobs = calloc((size_t)g->exp.n, sizeof(*out->prompt_logprobs));
	if (!out->prompt_token_ids || !out->completions || !g->seqs ||
	    (g->params.prompt_logprobs >= 0 && !out->prompt_logprobs)) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto fail;
	}
	memcpy(out->prompt_token_ids, g->exp.ids, (size_t)g->exp.n * sizeof(int32_t));
	out->n_completions = g->params.n;
	for (int i = 0; i < g->params.n; i++) {
		g->n_seqs = i + 1;
		st = init_seq(e, g, i);
		if (st != VD_OK)
			goto fail;
	}
	for (int i = 0; i < g->n_seqs; i++) {
		st = vd_scheduler_add(&e->sched, &g->seqs[i]);
		if (st != VD_OK)
			goto fail;
	}
	gn->next = e->groups;
	if (e->groups)
		e->groups->prev = gn;
	e->groups = gn;
	gn->linked = true;
	e->n_groups++;
	e->stats.prompt_tokens += g->exp.n;
	*admitted = true;
	return VD_OK;
fail:
	st = fail_request(out, st);
	for (int i = 0; i < g->n_seqs; i++)
		if (g->seqs[i].state == VD_SEQ_WAITING)
			vd_scheduler_finish(&e->sched, &g->seqs[i]);
	free_group(e, gn);
	return st;
}

/* ------------------------------------------------------------ the step */

/* Encode this step's images in one batch and store each in the encoder
 * cache; then give every scheduled sequence its references. */
static vd_status run_encoders(vd_engine *e, const vd_sched_out *so)
{
	const vd_ops *o = e->be->ops;
	const vd_mm_item **items;
	vd_tensor feats = { 0 }, emb = { 0 };
	int64_t off = 0;
	vd_status st = VD_OK;

	if (so->n_enc == 0)
		return VD_OK;
	items = malloc((size_t)so->n_enc * sizeof(*items));
	if (!items)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	for (int j = 0; j < so->n_enc; j++)
		items[j] = &so->enc[j].seq->group->items[so->enc[j].item];
	/* embeddings given by the caller need no tower: upload them; pixels go
	 * through vision tower + projector together */
	for (int j = 0; st == VD_OK && j < so->n_enc; j++) {
		int64_t shape[2] = { items[j]->num_tokens, e->spec.hidden_size };
		vd_tensor one = { 0 };

		if (items[j]->kind != VD_MM_EMBEDS)
			continue;
		st = o->alloc(e->be, &one, vd_backend_compute_dtype(e->be), 2, shape);
		if (st == VD_OK)
			st = o->upload(e->be, &one, items[j]->embeds.data, VD_DTYPE_F32,
				       vd_tensor_numel(&items[j]->embeds));
		if (st == VD_OK)
			st = vd_encoder_cache_put(e->enc, items[j]->hash, &one);
		else
			o->free(e->be, &one);
		if (st == VD_OK)
			so->enc[j].seq->enc_held[so->enc[j].item] = true;
	}
	{
		int n_px = 0;

		for (int j = 0; j < so->n_enc; j++)
			if (items[j]->kind == VD_MM_PIXELS)
				items[n_px++] = items[j];
		if (st == VD_OK && n_px > 0) {
			st = e->fam->vision_tower(e->fam_state, items, n_px, &feats);
			if (st == VD_OK)
				st = e->fam->projector(e->fam_state, items, n_px, &feats, &emb);
			e->stats.encoder_runs += n_px;
		}
		for (int j = 0, k = 0; st == VD_OK && j < so->n_enc; j++) {
			const vd_mm_item *it = &so->enc[j].seq->group->items[so->enc[j].item];
			int64_t shape[2] = { it->num_tokens, e->spec.hidden_size };
			vd_tensor one = { 0 }, src;

			if (it->kind != VD_MM_PIXELS)
				continue;
			if (items[k++] != it || off + it->num_tokens > emb.shape[0]) {
				st = vd_errorf(VD_ERR_INTERNAL, "%s projector gave %lld rows, the images "
					       "need more", e->fam->name, (long long)emb.shape[0]);
				break;
			}
			src = vd_tensor_rows(&emb, off, it->num_tokens);
			off += it->num_tokens;
			st = o->alloc(e->be, &one, vd_backend_compute_dtype(e->be), 2, shape);
			if (st == VD_OK)
				st = o->copy(e->be, &src, &one);
			if (st == VD_OK)
				st = vd_encoder_cache_put(e->enc, it->hash, &one);
			else
				o->free(e->be, &one);
			if (st == VD_OK)
				so->enc[j].seq->enc_held[so->enc[j].item] = true;
		}
		if (st == VD_OK && n_px > 0 && off != emb.shape[0])
			st = vd_errorf(VD_ERR_INTERNAL, "%s projector gave %lld rows for images of %lld",
				       e->fam->name, (long long)emb.shape[0], (long long)off);
	}
	o->free(e->be, &feats);
	o->free(e->be, &emb);
	free(items);
	if (st != VD_OK)
		return st;
	/* sequences sharing an image encoded for another one this step */
	for (int i = 0; i < so->n; i++) {
		vd_seq *q = so->seqs[i];
		const vd_expansion *x = &q->group->exp;
		int64_t c = q->num_computed, k = so->n_tokens[i];

		for (int p = 0; p < x->n_ph; p++) {
			const vd_placeholder *ph = &x->ph[p];

			if (q->enc_held[ph->item] || ph->offset >= c + k || ph->offset + ph->length <= c)
				continue;
			vd_encoder_cache_ref(e->enc, q->group->items[ph->item].hash);
			q->enc_held[ph->item] = true;
		}
	}
	return VD_OK;
}

/* Finished groups are freed after the whole step's rows are processed:
 * later rows may still name their sequences. */
static void finish_seq(vd_engine *e, vd_seq *q, int *n_finished)
{
	vd_scheduler_finish(&e->sched, q);
	vd_output_release(q);
	if (++q->group->n_finished == q->group->n_seqs)
		(*n_finished)++;
}

static void free_finished_groups(vd_engine *e)
{
	group_node *gn = e->groups;

	while (gn) {
		group_node *next = gn->next;

		if (gn->g.n_finished == gn->g.n_seqs)
			free_group(e, gn);
		gn = next;
	}
}

/* A request failed after admission (its output could not be produced):
 * record why, finish all its sequences. Engine-level failures (memory,
 * backend, internal) are returned instead. */
static vd_status fail_group(vd_engine *e, vd_group *g, vd_status st, int *n_finished)
{
	if (st == VD_ERR_NOMEM || st == VD_ERR_BACKEND || st == VD_ERR_INTERNAL)
		return st;
	g->out->status = st;
	free(g->out->error);
	g->out->error = strdup(vd_error_message());
	for (int i = 0; i < g->n_seqs; i++) {
		vd_seq *q = &g->seqs[i];

		if (q->state == VD_SEQ_FINISHED)
			continue;
		q->out->finish_reason = VD_FINISH_ABORT;
		if (!q->out->text) {
			q->out->text = q->text ? q->text : strdup("");
			q->text = NULL;
		}
		vd_scheduler_finish(&e->sched, q);
		vd_output_release(q);
		if (++g->n_finished == g->n_seqs)
			(*n_finished)++;
		emit(e, q);
	}
	return VD_OK;
}

/* Sample for every sequence that computed all its known tokens; fill
 * prompt logprobs. */
static vd_status postprocess(vd_engine *e, int n_logits, int *n_finished)
{
	step_bufs *b = &e->b;
	int32_t V = e->spec.vocab_size;
	vd_status st = VD_OK;

	for (int r = 0; r < n_logits && st == VD_OK; r++) {
		vd_seq *q = b->lrow_seq[r];
		float *row = b->host_logits + (size_t)r * (size_t)V;
		const vd_sampling_params *p = &q->group->params;
		int32_t banned[MAX_EOS + 64];
		int n_banned;
		vd_sample_history h;
		vd_token_lp pre;
		int32_t tok;
		bool done;

		if (q->state == VD_SEQ_FINISHED)
			continue; /* its request failed earlier in this loop */
		if (b->lrow_prompt_pos[r] >= 0) {
			int64_t pp = b->lrow_prompt_pos[r];

			st = vd_output_fill_logprobs(&e->octx, row, q->tokens[pp], p->prompt_logprobs,
						     &q->group->out->prompt_logprobs[pp], NULL);
			if (st != VD_OK)
				st = fail_group(e, q->group, st, n_finished);
			continue;
		}

		if (b->use_picks) {
			tok = b->picks[r];
			pre = (vd_token_lp){ .lp = b->lp_chosen[r], .rank = b->lp_rank[r],
					     .k = b->srows[r].logprobs,
					     .top_ids = b->lp_ids + (size_t)r * VD_MAX_LOGPROBS,
					     .top_lps = b->lp_vals + (size_t)r * VD_MAX_LOGPROBS };
		} else {
			n_banned = banned_tokens(e, q, banned);
			h = (vd_sample_history){ .prompt = q->tokens, .n_prompt = q->n_prompt,
						 .output = q->tokens + q->n_prompt,
						 .n_output = q->n_tokens - q->n_prompt };
			tok = vd_sample_token(row, V, p, &h, banned, n_banned, &q->rng, b->scratch);
		}
		q->tokens[q->n_tokens++] = tok;
		e->stats.generation_tokens++;
		st = vd_output_append(&e->octx, q, tok, row,
				      b->use_picks && p->logprobs >= 0 ? &pre : NULL, &done);
		if (st != VD_OK) {
			st = fail_group(e, q->group, st, n_finished);
			continue;
		}
		if (done)
			finish_seq(e, q, n_finished);
		emit(e, q);
	}
	return st;
}

/* The step graph for this step, or -1: a decode-only step (every sequence
 * feeds its last generated token and wants its logits) of at most the largest
 * graph size, with contexts a graph's block table holds. */
static int graph_for_step(const vd_engine *e, const vd_sched_out *so, int64_t T, int64_t maxb,
			  int n_logits)
{
	if (e->n_graph_sizes == 0 || T != so->n || n_logits != so->n || maxb > e->graph_maxb)
		return -1;
	for (int i = 0; i < so->n; i++) {
		const vd_seq *q = so->seqs[i];

		if (q->num_computed < q->n_prompt || q->num_computed + 1 != q->n_tokens)
			return -1;
	}
	for (int i = 0; i < e->n_graph_sizes; i++)
		if (e->graph_sizes[i] >= so->n)
			return i;
	return -1;
}

/* Rows n..B-1 of a graph step: one-token sequences of the null block whose
 * K/V are not written (slot -1) and whose picks are ignored. */
static void pad_graph_batch(vd_engine *e, int n, int64_t B, int64_t mb)
{
	step_bufs *b = &e->b;

	for (int64_t i = n; i < B; i++) {
		b->qsl[i] = (int32_t)i;
		b->seq_lens[i] = 1;
		b->ids[i] = 0;
		for (int d = 0; d < 3; d++)
			b->pos[d * B + i] = 0;
		b->rope_table[i] = 0;
		b->slots[i] = -1;
		for (int64_t j = 0; j < mb; j++)
			b->block_tables[i * mb + j] = 0;
		b->logit_rows[i] = (int32_t)i;
		b->srows[i] = (vd_sample_row){ .logprobs = -1 };
	}
	b->qsl[B] = (int32_t)B;
}

vd_status vd_engine_step(vd_engine *e, int *n_finished)
{
	const vd_sched_out *so;
	step_bufs *b = &e->b;
	int64_t maxb = 1, T, off = 0, Tl, mb, S;
	int n_logits = 0, P = 1, gid;
	int orig = e->spec.original_max_position_embeddings;
	vd_status st;

	double t0 = e->prof.on ? prof_now() : 0.0, t1 = 0.0, t2 = 0.0, t3 = 0.0;

	*n_finished = 0;
	st = vd_scheduler_schedule(&e->sched, &so);
	if (st != VD_OK)
		return st;
	if (so->n == 0) {
		if (vd_scheduler_num_waiting(&e->sched) > 0 && vd_scheduler_num_running(&e->sched) == 0)
			return vd_errorf(VD_ERR_INTERNAL,
					 "the scheduler cannot admit the next request into an empty "
					 "engine (KV blocks or encoder budget too small)");
		return VD_OK;
	}
	e->stats.steps++;
	T = so->total_tokens;
	for (int i = 0; i < so->n; i++) {
		const vd_seq *q = so->seqs[i];

		if (q->n_blocks > maxb)
			maxb = q->n_blocks;
		if (q->group->exp.positions && q->group->exp.pos_ndim > P)
			P = q->group->exp.pos_ndim;
		n_logits += q->num_computed + so->n_tokens[i] == q->n_tokens;
		if (q->group->params.prompt_logprobs >= 0 && q->index == 0)
			n_logits += (int)so->n_tokens[i];
	}
	if (e->prof.on)
		t1 = prof_now();
	/* a graph step lays the batch out at the graph's size: positions rows of
	 * Tl, block tables of mb columns */
	gid = graph_for_step(e, so, T, maxb, n_logits);
	Tl = gid >= 0 ? e->graph_sizes[gid] : T;
	mb = gid >= 0 ? e->graph_maxb : maxb;
	S = gid >= 0 ? Tl : so->n; /* sequences (padding rows are sequences) */
	/* n_logits is an upper bound here, recounted as the batch is built */
	st = size_step_bufs(e, Tl, S, mb, gid >= 0 ? (int)Tl : n_logits);
	if (st == VD_OK)
		st = run_encoders(e, so);
	if (st == VD_OK && e->prof.on)
		st = e->be->ops->sync(e->be);
	if (st != VD_OK)
		return st;
	if (e->prof.on) {
		t2 = prof_now();
		e->prof.sched += t1 - t0;
		e->prof.enc += t2 - t1;
	}

	n_logits = 0;
	for (int i = 0; i < so->n; i++) {
		vd_seq *q = so->seqs[i];
		int64_t c = q->num_computed, k = so->n_tokens[i];
		int pd = q->group->exp.positions ? q->group->exp.pos_ndim : 1;

		b->qsl[i] = (int32_t)off;
		b->seq_lens[i] = (int32_t)(c + k);
		for (int64_t j = 0; j < k; j++) {
			int64_t p = c + j;

			b->ids[off + j] = q->tokens[p];
			for (int d = 0; d < P; d++)
				b->pos[d * Tl + off + j] = vd_seq_position(q, d < pd ? d : pd - 1, p);
			b->rope_table[off + j] = (p + 1 > q->n_prompt ? p + 1 : q->n_prompt) > orig;
			b->slots[off + j] = vd_kv_slot(&e->kv, q, p);
			if (q->group->params.prompt_logprobs >= 0 && q->index == 0 &&
			    p + 1 < q->n_prompt) {
				b->logit_rows[n_logits] = (int32_t)(off + j);
				b->lrow_seq[n_logits] = q;
				b->lrow_prompt_pos[n_logits++] = p + 1;
			}
		}
		for (int64_t j = 0; j < mb; j++)
			b->block_tables[i * mb + j] = j < q->n_blocks ? q->blocks[j] : 0;
		if (c + k == q->n_tokens) {
			b->logit_rows[n_logits] = (int32_t)(off + k - 1);
			b->lrow_seq[n_logits] = q;
			b->lrow_prompt_pos[n_logits++] = -1;
		}
		off += k;
	}
	b->qsl[so->n] = (int32_t)T;
	/* rows sample on the backend unless one gives prompt logprobs (those
	 * need the logits on the host, so the whole step goes there) */
	b->use_picks = e->be->ops->sample_full != NULL;
	for (int r = 0; r < n_logits && b->use_picks; r++)
		b->use_picks = b->lrow_prompt_pos[r] < 0;
	b->n_hist = 0;
	for (int r = 0; r < n_logits && b->use_picks && st == VD_OK; r++)
		st = build_sample_row(e, r, b->lrow_seq[r]);
	if (st != VD_OK)
		return st;
	/* placeholder ids may lie outside the vocabulary; their rows are
	 * overwritten by image embeddings */
	for (int64_t t = 0; t < T; t++)
		if (b->ids[t] < 0 || b->ids[t] >= e->spec.vocab_size)
			b->ids[t] = 0;
	if (e->prof.on) {
		t3 = prof_now();
		e->prof.build += t3 - t2;
	}
	if (gid >= 0)
		pad_graph_batch(e, so->n, Tl, mb);
	st = run_decoder(e, Tl, (int)S, mb, gid >= 0 ? (int)Tl : n_logits,
			 gid >= 0 ? NULL : (const vd_seq *const *)so->seqs, so->n_tokens, gid);
	if (st != VD_OK)
		return st;
	if (e->prof.on) {
		double t4 = prof_now();

		e->prof.fwd += t4 - t3;
		e->prof.steps++;
		e->prof.tokens += T;
		if (T == so->n) {
			e->prof.decode_steps++;
			e->prof.decode_fwd += t4 - t3;
		}
		t3 = t4;
	}
	vd_scheduler_advance(&e->sched);
	st = postprocess(e, n_logits, n_finished);
	if (e->prof.on)
		e->prof.post += prof_now() - t3;
	if (*n_finished)
		free_finished_groups(e);
	return st;
}

void vd_engine_destroy(vd_engine *e)
{
	if (!e)
		return;
	vd_engine_abort_all(e);
	if (e->prof.on && e->prof.steps > 0) {
		const step_prof *p = &e->prof;

		fprintf(stderr,
			"vllmd profile: %lld steps (%lld decode-only, %lld as graphs), %.1f tokens/step; "
			"schedule %.3f s, encoders %.3f s, batch build %.3f s, decoder %.3f s "
			"(decode-only steps %.3f s, %.2f ms each), sample+output %.3f s\n",
			(long long)p->steps, (long long)p->decode_steps, (long long)e->stats.graph_steps,
			(double)p->tokens / (double)p->steps, p->sched, p->enc, p->build, p->fwd,
			p->decode_fwd, p->decode_steps ? 1e3 * p->decode_fwd / p->decode_steps : 0.0,
			p->post);
	}
	if (e->be)
		free_step_bufs(e->be, &e->b);
	vd_scheduler_free(&e->sched);
	vd_encoder_cache_destroy(e->enc);
	if (e->kv.pool)
		vd_kv_cache_free(&e->kv);
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

vd_status vd_engine_placeholder(const vd_engine *e, int index, char *buf, size_t cap)
{
	if (!e->fam->placeholder)
		return vd_errorf(VD_ERR_UNSUPPORTED, "the %s family takes no images", e->fam->name);
	return e->fam->placeholder(e->fam_state, index, buf, cap);
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

int vd_engine_max_num_seqs(const vd_engine *e)
{
	return e->sched.cfg.max_num_seqs;
}

bool vd_engine_has_unfinished(const vd_engine *e)
{
	return e->n_groups > 0;
}

int vd_engine_num_unfinished(const vd_engine *e)
{
	return e->n_groups;
}

void vd_engine_get_stats(const vd_engine *e, vd_engine_stats *s)
{
	*s = e->stats;
	s->preemptions = e->sched.num_preemptions;
	s->prefix_query_tokens = e->kv.prefix_queries;
	s->prefix_hit_tokens = e->kv.prefix_hits;
	s->encoder_cache_hits = e->enc ? vd_encoder_cache_hits(e->enc) : 0;
	s->kv_blocks_free = e->kv.pool ? vd_block_pool_num_free(e->kv.pool) : 0;
	s->running = vd_scheduler_num_running(&e->sched);
	s->waiting = vd_scheduler_num_waiting(&e->sched);
}
