/* Output processing for one sequence: append a sampled token, keep the
 * incremental detokenization, apply stop conditions (EOS, stop token ids,
 * stop strings matched across token boundaries and never emitted,
 * max_tokens, max_model_len) and fill logprobs, writing into the
 * sequence's vd_completion. */
#ifndef VD_OUTPUT_H
#define VD_OUTPUT_H

#include "core/request.h"

/* The most top logprobs a position returns. */
#define VD_MAX_LOGPROBS 64

typedef struct vd_output_ctx {
	const vd_tokenizer *tok;
	const int32_t *eos;
	int n_eos;
	int64_t max_model_len;
	int32_t vocab_size;
} vd_output_ctx;

/* Prepare q's completion (token/logprob buffers, detokenizer). */
vd_status vd_output_start(const vd_output_ctx *c, vd_seq *q);
/* Logprob statistics of a token computed where it was sampled (the
 * sample_full op): its logprob and rank, and the k best (borrowed). */
typedef struct vd_token_lp {
	float lp;
	int32_t rank;
	int k;
	const int32_t *top_ids;
	const float *top_lps;
} vd_token_lp;

/* Record token tok sampled from raw (un-processed) logits row, or with its
 * logprobs already computed (pre; raw then unused and may be NULL). Sets
 * *finished when q is done (and finalizes its text). */
vd_status vd_output_append(const vd_output_ctx *c, vd_seq *q, int32_t tok, const float *raw,
			   const vd_token_lp *pre, bool *finished);
/* Logprobs entry for token `chosen` from raw logits row; k top entries. */
vd_status vd_output_fill_logprobs(const vd_output_ctx *c, const float *raw, int32_t chosen,
				  int k, vd_position_logprobs *out, double *chosen_lp);
/* Free q's working state (detokenizer, text buffer if not handed over). */
void vd_output_release(vd_seq *q);

#endif
