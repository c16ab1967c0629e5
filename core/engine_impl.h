/* The engine's state, shared by the files that implement it: engine.c
 * (create/destroy, caches, the step), model.c (loading a checkpoint through
 * its family plugin), batch.c (laying out and running one step's flattened
 * batch) and requests.c (admission and the request lifecycle: sampling
 * results into outputs, stops, streaming, aborts). Nothing outside those
 * files includes this; everyone else uses core/engine.h. */
#ifndef VD_ENGINE_IMPL_H
#define VD_ENGINE_IMPL_H

#include <time.h>

#include "core/encoder_cache.h"
#include "core/engine.h"
#include "core/kv_cache.h"
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

/* VD_PROFILE=1: where the engine's thread spends its wall time, printed to
 * stderr when the engine is destroyed with what the input stage did.
 * Encoder and decoder phases are synchronised with the backend so each is
 * charged its own GPU time. */
typedef struct step_prof {
	bool on;
	int64_t steps, decode_steps, tokens, enc_calls;
	double sched, enc, build, fwd, post, decode_fwd;
	double admit;                 /* admitting prepared requests */
	double input_wait;            /* waiting for the input stage */
} step_prof;

static inline double prof_now(void)
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
	vd_input_model input_model;   /* what the input stage reads */
	vd_input *input;

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

/* model.c: config, tokenizer, weights, the family plugin and its text
 * decoder, max_model_len, image limit, EOS ids (e->args set) / their release. */
vd_status vd_model_load(vd_engine *e);
void vd_model_unload(vd_engine *e);

/* batch.c: one step's batch. The plan sizes the step (tokens, sequences,
 * block-table width, logit rows) and picks a step graph; build lays out
 * ids, positions, slots, block tables and logit rows; forward runs the
 * decoder (and sampling, where the backend does it). */
typedef struct vd_batch_plan {
	int64_t T;       /* scheduled tokens */
	int64_t Tl;      /* rows laid out (T, or the graph's size) */
	int64_t maxb;    /* block-table columns the sequences need */
	int64_t mb;      /* block-table columns laid out */
	int64_t S;       /* sequences laid out (padding rows are sequences) */
	int P;           /* position rows (3 with M-RoPE) */
	int n_logits;    /* logit rows (an upper bound until built) */
	int gid;         /* step graph, or -1 */
} vd_batch_plan;

vd_status vd_batch_plan_step(vd_engine *e, const vd_sched_out *so, vd_batch_plan *p);
vd_status vd_batch_build(vd_engine *e, const vd_sched_out *so, vd_batch_plan *p);
vd_status vd_batch_forward(vd_engine *e, const vd_sched_out *so, const vd_batch_plan *p);
/* The forward of the largest step the scheduler may build (start-up). */
vd_status vd_batch_profile_step(vd_engine *e);
void vd_batch_free(vd_backend *be, step_bufs *b);

/* requests.c */
/* The tokens q may not pick yet (EOS and stop ids before min_tokens) into
 * banned (room for MAX_EOS + 64); returns their count. */
int vd_requests_banned(const vd_engine *e, const vd_seq *q, int32_t *banned);
/* Sample for every sequence that computed all its known tokens; fill
 * prompt logprobs; finish and stream. */
vd_status vd_requests_postprocess(vd_engine *e, int n_logits, int *n_finished);
/* Free the groups whose every sequence finished. */
void vd_requests_free_finished(vd_engine *e);

#endif
