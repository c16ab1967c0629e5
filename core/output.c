/* Per-sequence output processing. Stop strings: the text is checked from
 * (longest stop - 1) bytes before the new delta, so a match spanning token
 * boundaries is found; the matched string and anything after it is cut. */
#include <stdlib.h>
#include <string.h>

#include "core/output.h"

vd_status vd_output_start(const vd_output_ctx *c, vd_seq *q)
{
	const vd_sampling_params *p = &q->group->params;
	int64_t cap = p->max_tokens + 1;

	q->out->index = q->index;
	q->out->stop_token = -1;
	q->out->token_ids = malloc((size_t)cap * sizeof(int32_t));
	if (!q->out->token_ids)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	if (p->logprobs >= 0) {
		q->out->logprobs = calloc((size_t)cap, sizeof(*q->out->logprobs));
		if (!q->out->logprobs)
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
	}
	return vd_detok_create(c->tok, p->skip_special_tokens, q->tokens, (size_t)q->n_prompt,
			       &q->detok);
}

/* The entries of one position: the chosen token, then the top k but it. */
static vd_status lp_entries(const vd_output_ctx *c, int32_t chosen, float lp, int32_t rank,
			    int k, const int32_t *top_ids, const float *top_lps,
			    vd_position_logprobs *out)
{
	int n = 0;

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
		vd_status st = vd_tokenizer_decode(c->tok, &out->entries[j].token_id, 1, false,
						   &out->entries[j].decoded);
		if (st != VD_OK)
			return st;
	}
	return VD_OK;
}

vd_status vd_output_fill_logprobs(const vd_output_ctx *c, const float *raw, int32_t chosen,
				  int k, vd_position_logprobs *out, double *chosen_lp)
{
	int32_t top_ids[VD_MAX_LOGPROBS];
	float top_lps[VD_MAX_LOGPROBS];
	float lp;
	int32_t rank;

	if (k > VD_MAX_LOGPROBS)
		k = VD_MAX_LOGPROBS;
	vd_logprobs(raw, c->vocab_size, chosen, k, &lp, &rank, top_ids, top_lps);
	if (chosen_lp)
		*chosen_lp = lp;
	return lp_entries(c, chosen, lp, rank, k, top_ids, top_lps, out);
}

static vd_status text_append(vd_seq *q, const char *s, size_t n)
{
	if (q->text_len + n + 1 > q->text_cap) {
		size_t cap = (q->text_len + n + 1) * 2;
		char *t = realloc(q->text, cap);

		if (!t)
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
		q->text = t;
		q->text_cap = cap;
	}
	memcpy(q->text + q->text_len, s, n);
	q->text_len += n;
	q->text[q->text_len] = '\0';
	return VD_OK;
}

/* Move the text into the completion. */
static vd_status finalize(vd_seq *q, vd_finish_reason why, bool flush)
{
	vd_status st = VD_OK;

	if (flush && q->detok) {
		const char *tail;

		st = vd_detok_flush(q->detok, &tail);
		if (st == VD_OK)
			st = text_append(q, tail, strlen(tail));
	}
	if (st == VD_OK && !q->text)
		st = text_append(q, "", 0);
	if (st != VD_OK)
		return st;
	q->out->text = q->text;
	q->text = NULL;
	q->out->finish_reason = why;
	return VD_OK;
}

static bool is_eos(const vd_output_ctx *c, int32_t t)
{
	for (int i = 0; i < c->n_eos; i++)
		if (c->eos[i] == t)
			return true;
	return false;
}

vd_status vd_output_append(const vd_output_ctx *c, vd_seq *q, int32_t tok, const float *raw,
			   const vd_token_lp *pre, bool *finished)
{
	const vd_sampling_params *p = &q->group->params;
	vd_completion *o = q->out;
	const char *delta;
	vd_status st;

	*finished = false;
	if (p->logprobs >= 0) {
		double lp;

		if (pre) {
			lp = pre->lp;
			st = lp_entries(c, tok, pre->lp, pre->rank,
					pre->k < VD_MAX_LOGPROBS ? pre->k : VD_MAX_LOGPROBS,
					pre->top_ids, pre->top_lps, &o->logprobs[o->n_tokens]);
		} else {
			st = vd_output_fill_logprobs(c, raw, tok, p->logprobs,
						     &o->logprobs[o->n_tokens], &lp);
		}
		if (st != VD_OK)
			return st;
		o->cumulative_logprob += lp;
	}
	o->token_ids[o->n_tokens++] = tok;

	if (!p->ignore_eos && is_eos(c, tok) && o->n_tokens > p->min_tokens) {
		*finished = true;
		return finalize(q, VD_FINISH_STOP, true);
	}
	for (int i = 0; i < p->n_stop_token_ids; i++)
		if (p->stop_token_ids[i] == tok && o->n_tokens > p->min_tokens) {
			o->stop_token = tok;
			*finished = true;
			return finalize(q, VD_FINISH_STOP, true);
		}
	st = vd_detok_push(q->detok, tok, &delta);
	if (st != VD_OK)
		return st;
	if (*delta) {
		size_t from = q->text_len > q->group->stop_lookback ?
			      q->text_len - q->group->stop_lookback : 0;
		size_t best = (size_t)-1;
		const char *hit = NULL;

		st = text_append(q, delta, strlen(delta));
		if (st != VD_OK)
			return st;
		for (int i = 0; p->stop && p->stop[i] && o->n_tokens > p->min_tokens; i++) {
			const char *at;

			if (!p->stop[i][0])
				continue;
			at = strstr(q->text + from, p->stop[i]);
			if (at && (size_t)(at - q->text) < best) {
				best = (size_t)(at - q->text);
				hit = p->stop[i];
			}
		}
		if (hit) {
			q->text_len = p->include_stop_str_in_output ? best + strlen(hit) : best;
			q->text[q->text_len] = '\0';
			o->stop_reason = strdup(hit);
			*finished = true;
			return finalize(q, VD_FINISH_STOP, false);
		}
	}
	if (o->n_tokens >= p->max_tokens || q->n_tokens >= c->max_model_len) {
		*finished = true;
		return finalize(q, VD_FINISH_LENGTH, true);
	}
	return VD_OK;
}

void vd_output_release(vd_seq *q)
{
	vd_detok_destroy(q->detok);
	q->detok = NULL;
	free(q->text);
	q->text = NULL;
}
