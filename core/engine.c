/* Engine: loads a model directory through its family plugin (model.c) and
 * runs requests with continuous batching. Each step: the scheduler picks
 * token counts per sequence, images whose rows are due get encoded into
 * the encoder cache, all scheduled tokens run as ONE flattened batch
 * through the decoder over the paged KV cache (batch.c), and sequences
 * that completed their known tokens sample the next one (requests.c).
 * Nothing here names a model family. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine_impl.h"
#include "core/expansion.h"

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
	return profile ? vd_batch_profile_step(e) : VD_OK;
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
	e->prof.on = getenv("VD_PROFILE") && strcmp(getenv("VD_PROFILE"), "0");
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
	if (st == VD_OK)
		st = vd_model_load(e);
	if (st != VD_OK)
		goto fail;
	st = init_caches(e);
	if (st != VD_OK)
		goto fail;
	init_graphs(e);
	e->input_model = (vd_input_model){
		.fam = e->fam, .fam_state = e->fam_state, .vocab_size = e->spec.vocab_size,
		.embed_dim = e->limits.embed_dim,
		.max_model_len = e->max_model_len, .limit_images = e->limit_images,
		.max_image_pixels = args->max_image_pixels,
		.serial_expand = vd_registry_abi_minor(e->reg, e->fam) < 3,
	};
	st = vd_input_create(&e->input_model, args->input_workers, &e->input);
	if (st != VD_OK)
		goto fail;
	*out = e;
	return VD_OK;
fail:
	vd_engine_destroy(e);
	return st;
}

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

/* Charge the wall time since *t to *bucket (VD_PROFILE). */
static void prof_lap(vd_engine *e, double *t, double *bucket)
{
	double now;

	if (!e->prof.on)
		return;
	now = prof_now();
	*bucket += now - *t;
	*t = now;
}

/* The forward pass's lap, counted apart for decode-only steps. */
static void prof_forward(vd_engine *e, double *t, int64_t tokens, bool decode_only)
{
	double fwd = 0.0;

	prof_lap(e, t, &fwd);
	e->prof.fwd += fwd;
	e->prof.steps++;
	e->prof.tokens += tokens;
	if (decode_only) {
		e->prof.decode_steps++;
		e->prof.decode_fwd += fwd;
	}
}

vd_status vd_engine_step(vd_engine *e, int *n_finished)
{
	const vd_sched_out *so;
	vd_batch_plan plan;
	double t = e->prof.on ? prof_now() : 0.0;
	vd_status st;

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
	st = vd_batch_plan_step(e, so, &plan);
	prof_lap(e, &t, &e->prof.sched);
	if (st == VD_OK)
		st = run_encoders(e, so);
	if (st == VD_OK && e->prof.on)
		st = e->be->ops->sync(e->be); /* charge the encoders their GPU time */
	prof_lap(e, &t, &e->prof.enc);
	if (st == VD_OK)
		st = vd_batch_build(e, so, &plan);
	prof_lap(e, &t, &e->prof.build);
	if (st == VD_OK)
		st = vd_batch_forward(e, so, &plan);
	if (st != VD_OK)
		return st;
	prof_forward(e, &t, plan.T, plan.T == so->n);
	vd_scheduler_advance(&e->sched);
	st = vd_requests_postprocess(e, plan.n_logits, n_finished);
	prof_lap(e, &t, &e->prof.post);
	if (*n_finished)
		vd_requests_free_finished(e);
	return st;
}

/* The VD_PROFILE report: the engine thread's time, then the input stage's. */
static void print_profile(const vd_engine *e, const vd_input_stats *in)
{
	const step_prof *p = &e->prof;

	fprintf(stderr,
		"vllmd profile: %lld steps (%lld decode-only, %lld as graphs), %.1f tokens/step; "
		"schedule %.3f s, encoders %.3f s, batch build %.3f s, decoder %.3f s "
		"(decode-only steps %.3f s, %.2f ms each), sample+output %.3f s\n",
		(long long)p->steps, (long long)p->decode_steps, (long long)e->stats.graph_steps,
		p->steps ? (double)p->tokens / (double)p->steps : 0.0, p->sched, p->enc, p->build,
		p->fwd, p->decode_fwd, p->decode_steps ? 1e3 * p->decode_fwd / p->decode_steps : 0.0,
		p->post);
	fprintf(stderr,
		"vllmd profile: engine thread besides steps: admitting requests %.3f s, waiting "
		"for the input stage %.3f s\n", p->admit, p->input_wait);
	fprintf(stderr,
		"vllmd profile: input stage, on its %d worker threads: %lld requests, %lld images; "
		"image decode %.3f s, image processing + hashing %.3f s, prompts %.3f s; "
		"%.3f s busy (summed over workers)\n", in->workers, (long long)in->requests,
		(long long)in->images, in->decode_s, in->process_s, in->prompt_s, in->busy_s);
}

void vd_engine_destroy(vd_engine *e)
{
	vd_input_stats in = { 0 };

	if (!e)
		return;
	/* the stage's workers call the family: stop them before it goes */
	if (e->input)
		vd_input_get_stats(e->input, &in);
	vd_input_destroy(e->input);
	e->input = NULL;
	vd_engine_abort_all(e);
	if (e->prof.on && (e->prof.steps > 0 || in.requests > 0))
		print_profile(e, &in);
	if (e->be)
		vd_batch_free(e->be, &e->b);
	vd_scheduler_free(&e->sched);
	vd_encoder_cache_destroy(e->enc);
	if (e->kv.pool)
		vd_kv_cache_free(&e->kv);
	vd_model_unload(e);
	vd_backend_destroy(e->be);
	free(e->model_dir);
	free(e);
}

vd_input *vd_engine_input(vd_engine *e)
{
	return e->input;
}

void vd_engine_note_input_wait(vd_engine *e, double seconds)
{
	e->prof.input_wait += seconds;
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
