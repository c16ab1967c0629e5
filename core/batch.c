/* One step's batch: the flattened rows of every scheduled sequence (ids,
 * positions, KV slots, block tables, the rows whose logits are needed),
 * padded to a captured size when the step replays as a step graph, run
 * through the decoder over the paged KV cache; the per-row sampling
 * filters when the backend samples. Buffers are kept and grown across
 * steps. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine_impl.h"

void vd_batch_free(vd_backend *be, step_bufs *b)
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

/* The sample_full row of logit row r (a sampling row of q): its filters,
 * noise key, logprob count and history entries. */
static vd_status build_sample_row(vd_engine *e, int r, vd_seq *q)
{
	step_bufs *b = &e->b;
	const vd_sampling_params *p = &q->group->params;
	int32_t V = e->spec.vocab_size, banned[MAX_EOS + 64];
	int n_banned = vd_requests_banned(e, q, banned);
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
vd_status vd_batch_profile_step(vd_engine *e)
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

vd_status vd_batch_plan_step(vd_engine *e, const vd_sched_out *so, vd_batch_plan *p)
{
	*p = (vd_batch_plan){ .T = so->total_tokens, .maxb = 1, .P = 1 };
	for (int i = 0; i < so->n; i++) {
		const vd_seq *q = so->seqs[i];

		if (q->n_blocks > p->maxb)
			p->maxb = q->n_blocks;
		if (q->group->exp.positions && q->group->exp.pos_ndim > p->P)
			p->P = q->group->exp.pos_ndim;
		p->n_logits += q->num_computed + so->n_tokens[i] == q->n_tokens;
		if (q->group->params.prompt_logprobs >= 0 && q->index == 0)
			p->n_logits += (int)so->n_tokens[i];
	}
	/* a graph step lays the batch out at the graph's size: positions rows of
	 * Tl, block tables of mb columns */
	p->gid = graph_for_step(e, so, p->T, p->maxb, p->n_logits);
	p->Tl = p->gid >= 0 ? e->graph_sizes[p->gid] : p->T;
	p->mb = p->gid >= 0 ? e->graph_maxb : p->maxb;
	p->S = p->gid >= 0 ? p->Tl : so->n;
	/* n_logits is an upper bound here, recounted as the batch is built */
	return size_step_bufs(e, p->Tl, p->S, p->mb, p->gid >= 0 ? (int)p->Tl : p->n_logits);
}

vd_status vd_batch_build(vd_engine *e, const vd_sched_out *so, vd_batch_plan *pl)
{
	step_bufs *b = &e->b;
	int64_t off = 0, T = pl->T, Tl = pl->Tl, mb = pl->mb;
	int n_logits = 0, P = pl->P;
	int orig = e->spec.original_max_position_embeddings;
	vd_status st = VD_OK;

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
	/* placeholder ids may lie outside the vocabulary; their rows are
	 * overwritten by image embeddings */
	for (int64_t t = 0; t < T; t++)
		if (b->ids[t] < 0 || b->ids[t] >= e->spec.vocab_size)
			b->ids[t] = 0;
	pl->n_logits = n_logits;
	return st;
}

vd_status vd_batch_forward(vd_engine *e, const vd_sched_out *so, const vd_batch_plan *p)
{
	if (p->gid >= 0)
		pad_graph_batch(e, so->n, p->Tl, p->mb);
	return run_decoder(e, p->Tl, (int)p->S, p->mb, p->gid >= 0 ? (int)p->Tl : p->n_logits,
			   p->gid >= 0 ? NULL : (const vd_seq *const *)so->seqs, so->n_tokens, p->gid);
}
