/* The scheduler (vLLM V1's model): every step it hands out a token budget.
 * Each sequence has num_computed catching up to n_tokens; running sequences
 * go first (a decode needs 1 token, a partial prefill the rest of its chunk),
 * then waiting ones in FCFS order while budget, max_num_seqs and KV blocks
 * allow. There are no prefill/decode phases: a long prompt simply takes
 * several steps (chunked prefill). When KV blocks run out, the newest
 * running sequence is preempted (blocks freed, recomputed later) and goes
 * back to the front of the waiting queue.
 *
 * Images: a step that covers part of an image's placeholder rows needs its
 * embeddings; uncached images are encoded in that step within the encoder
 * budget (in rows), otherwise the chunk stops just before the image. */
#ifndef VD_SCHEDULER_H
#define VD_SCHEDULER_H

#include "core/encoder_cache.h"
#include "core/kv_cache.h"
#include "core/request.h"

typedef struct vd_sched_config {
	int max_num_seqs;
	int64_t max_num_batched_tokens;
	int64_t encoder_budget_rows;
	bool prefix_caching;
} vd_sched_config;

/* One image to encode this step. */
typedef struct vd_enc_job {
	vd_seq *seq;
	int item;
} vd_enc_job;

typedef struct vd_sched_out {
	vd_seq **seqs;         /* scheduled, in batch order */
	int64_t *n_tokens;     /* tokens of each, starting at its num_computed */
	int n;
	vd_enc_job *enc;       /* images to encode before the forward pass */
	int n_enc;
	int64_t total_tokens;
	int n_preempted;
} vd_sched_out;

typedef struct vd_scheduler {
	vd_sched_config cfg;
	vd_kv_cache *kv;
	vd_encoder_cache *enc;
	vd_seq **running;
	int n_running, cap_running;
	vd_seq **waiting;      /* ring buffer */
	int w_head, n_waiting, cap_waiting;
	/* output buffers reused every step */
	vd_sched_out out;
	int cap_out, cap_enc;
	int32_t *hit_buf;
	int32_t cap_hit;
	int64_t num_preemptions; /* since start, for logs and metrics */
} vd_scheduler;

vd_status vd_scheduler_init(vd_scheduler *s, const vd_sched_config *cfg, vd_kv_cache *kv,
			    vd_encoder_cache *enc);
void vd_scheduler_free(vd_scheduler *s);

/* Queue a new sequence at the back of the waiting queue. */
vd_status vd_scheduler_add(vd_scheduler *s, vd_seq *q);
/* Plan one step. The result (owned by s) is valid until the next call. */
vd_status vd_scheduler_schedule(vd_scheduler *s, const vd_sched_out **out);
/* After the step ran: advance num_computed of every scheduled sequence and
 * release encoder references whose rows are all computed. */
void vd_scheduler_advance(vd_scheduler *s);
/* Remove a finished (or aborted) sequence: frees its blocks and encoder
 * references. */
void vd_scheduler_finish(vd_scheduler *s, vd_seq *q);

int vd_scheduler_num_running(const vd_scheduler *s);
int vd_scheduler_num_waiting(const vd_scheduler *s);

#endif
