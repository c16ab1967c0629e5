/* The request lifecycle inside the engine: admission of a request (its
 * group of n sequences), streaming what each step produced to the
 * listener, sampled tokens into outputs with their stop checks, and the
 * ends: finished, failed or aborted, with every KV block and encoder
 * reference handed back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine_impl.h"
#include "core/mm.h"

/* The tokens q may not pick yet (EOS and stop ids before min_tokens) into
 * banned (room for MAX_EOS + 64); returns their count. */
int vd_requests_banned(const vd_engine *e, const vd_seq *q, int32_t *banned)
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

vd_status vd_engine_add(vd_engine *e, vd_prepared *p, int index, vd_output *out, void *user,
			bool *admitted)
{
	double t0 = e->prof.on ? prof_now() : 0.0;
	group_node *gn;
	vd_group *g;
	char idbuf[32];
	vd_status st;

	*admitted = false;
	memset(out, 0, sizeof(*out));
	if (!p)
		return fail_request(out, vd_errorf(VD_ERR_NOMEM, "out of memory preparing a request"));
	snprintf(idbuf, sizeof(idbuf), "%d", index);
	out->request_id = strdup(p->req.request_id ? p->req.request_id : idbuf);
	if (p->req.prompt)
		out->prompt = strdup(p->req.prompt);
	if (p->status != VD_OK) {
		st = p->status;
		out->status = st;
		out->error = p->error;
		p->error = NULL;
		vd_prepared_free(p);
		if (!out->request_id)
			return fail_request(out, vd_errorf(VD_ERR_NOMEM, "out of memory"));
		return st == VD_ERR_NOMEM ? st : VD_OK;
	}
	gn = calloc(1, sizeof(*gn));
	if (!gn || !out->request_id || (p->req.prompt && !out->prompt)) {
		free(gn);
		vd_prepared_free(p);
		return fail_request(out, vd_errorf(VD_ERR_NOMEM, "out of memory"));
	}
	/* the group takes what p owns: from here free_group frees it */
	g = &gn->g;
	g->req = p->req;
	g->params = p->req.params;
	g->items = p->items;
	g->n_items = p->n_items;
	g->exp = p->exp;
	g->stop_lookback = p->stop_lookback;
	p->items = NULL;
	p->n_items = 0;
	vd_expansion_init(&p->exp);
	vd_prepared_free(p);
	g->user_index = index;
	g->out = out;
	g->user = user;
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
	if (e->prof.on)
		e->prof.admit += prof_now() - t0;
	return VD_OK;
fail:
	st = fail_request(out, st);
	for (int i = 0; i < g->n_seqs; i++)
		if (g->seqs[i].state == VD_SEQ_WAITING)
			vd_scheduler_finish(&e->sched, &g->seqs[i]);
	free_group(e, gn);
	return st;
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

void vd_requests_free_finished(vd_engine *e)
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
vd_status vd_requests_postprocess(vd_engine *e, int n_logits, int *n_finished)
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
			n_banned = vd_requests_banned(e, q, banned);
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
