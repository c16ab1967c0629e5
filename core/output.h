/* Output processing for one sequence: append a sampled token, keep the
 * incremental detokenization, apply stop conditions (EOS, stop token ids,
 * stop strings matched across token boundaries and never emitted,
 * max_tokens, max_model_len) and fill logprobs, writing into the
 * sequence's vd_completion. */
#ifndef VD_OUTPUT_H
#define VD_OUTPUT_H

#include "core/request.h"

typedef struct vd_output_ctx {
	const vd_tokenizer *tok;
	const int32_t *eos;
	int n_eos;
	int64_t max_model_len;
	int32_t vocab_size;
} vd_output_ctx;

/* Prepare q's completion (token/logprob buffers, detokenizer). */
vd_status vd_output_start(const vd_output_ctx *c, vd_seq *q);
/* Record token tok sampled from raw (un-processed) logits row. Sets
 * *finished when q is done (and finalizes its text). */
vd_status vd_output_append(const vd_output_ctx *c, vd_seq *q, int32_t tok, const float *raw,
			   bool *finished);
/* Logprobs entry for token `chosen` from raw logits row; k top entries. */
vd_status vd_output_fill_logprobs(const vd_output_ctx *c, const float *raw, int32_t chosen,
				  int k, vd_position_logprobs *out, double *chosen_lp);
/* Free q's working state (detokenizer, text buffer if not handed over). */
void vd_output_release(vd_seq *q);

#endif
