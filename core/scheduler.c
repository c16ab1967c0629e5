/* Scheduler. Invariants: a sequence is in exactly one of running/waiting
 * while unfinished; running holds sequences in admission order, so the last
 * one is the lowest priority and the first to be preempted. */
#include <stdlib.h>
#include <string.h>

#include "core/scheduler.h"

vd_status vd_scheduler_init(vd_scheduler *s, const vd_sched_config *cfg, vd_kv_cache *kv,
			    vd_encoder_cache *enc)
{
	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	s->kv = kv;
	s->enc = enc;
	return VD_OK;
}

void vd_scheduler_free(vd_scheduler *s)
{
	free(s->running);
	free(s->waiting);
	free(s->out.seqs);
	free(s->out.n_tokens);
	free(s->out.enc);
	free(s->hit_buf);
	memset(s, 0, sizeof(*s));
}

static vd_status grow(void **p, int *cap, int need, size_t elem)
{
	int c = *cap ? *cap : 16;
	void *np;

	if (need <= *cap)
		return VD_OK;
	while (c < need)
		c *= 2;
	np = realloc(*p, (size_t)c * elem);
	if (!np)
		return vd_errorf(VD_ERR_NOMEM, "out of memory in the scheduler");
	*p = np;
	*cap = c;
	return VD_OK;
}

static vd_status waiting_grow(vd_scheduler *s)
{
	int cap = s->cap_waiting ? 2 * s->cap_waiting : 64;
	vd_seq **w;

	if (s->n_waiting < s->cap_waiting)
		return VD_OK;
	w = malloc((size_t)cap * sizeof(*w));
	if (!w)
		return vd_errorf(VD_ERR_NOMEM, "out of memory in the scheduler");
	for (int i = 0; i < s->n_waiting; i++)
		w[i] = s->waiting[(s->w_head + i) % s->cap_waiting];
	free(s->waiting);
	s->waiting = w;
	s->w_head = 0;
	s->cap_waiting = cap;
	return VD_OK;
}

vd_status vd_scheduler_add(vd_scheduler *s, vd_seq *q)
{
	vd_status st = waiting_grow(s);

	if (st != VD_OK)
		return st;
	s->waiting[(s->w_head + s->n_waiting) % s->cap_waiting] = q;
	s->n_waiting++;
	q->state = VD_SEQ_WAITING;
	return VD_OK;
}

static vd_status push_front_waiting(vd_scheduler *s, vd_seq *q)
{
	vd_status st = waiting_grow(s);

	if (st != VD_OK)
		return st;
	s->w_head = (s->w_head + s->cap_waiting - 1) % s->cap_waiting;
	s->waiting[s->w_head] = q;
	s->n_waiting++;
	q->state = VD_SEQ_WAITING;
	return VD_OK;
}

static void release_encoder_refs(vd_scheduler *s, vd_seq *q)
{
	for (int i = 0; i < q->group->n_items; i++)
		if (q->enc_held[i]) {
			vd_encoder_cache_unref(s->enc, q->group->items[i].hash);
			q->enc_held[i] = false;
		}
}

static void preempt(vd_scheduler *s, vd_seq *q)
{
	vd_kv_release(s->kv, q);
	release_encoder_refs(s, q);
	q->num_computed = 0;
	q->num_preemptions++;
	s->num_preemptions++;
	push_front_waiting(s, q); /* room exists: it just left running */
}

/* Whether an image with this hash is already queued for encoding in the
 * step being planned (by another sequence showing the same image). */
static bool enc_queued(const vd_scheduler *s, const uint8_t hash[32])
{
	for (int j = 0; j < s->out.n_enc; j++)
		if (!memcmp(s->out.enc[j].seq->group->items[s->out.enc[j].item].hash, hash, 32))
			return true;
	return false;
}

/* Limit n_new so that every image overlapping [c, c+n_new) has embeddings:
 * cached (take a reference) or scheduled for encoding within *budget. */
static int64_t plan_images(vd_scheduler *s, vd_seq *q, int64_t n_new, int64_t *budget,
			   int *n_jobs)
{
	const vd_expansion *x = &q->group->exp;
	int64_t c = q->num_computed;

	*n_jobs = 0;
	for (int k = 0; k < x->n_ph; k++) {
		const vd_placeholder *ph = &x->ph[k];
		const vd_mm_item *it = &q->group->items[ph->item];

		if (ph->offset >= c + n_new || ph->offset + ph->length <= c)
			continue;
		if (q->enc_held[ph->item] || vd_encoder_cache_get(s->enc, it->hash) ||
		    enc_queued(s, it->hash))
			continue;
		if (it->num_tokens > *budget ||
		    !vd_encoder_cache_can_fit(s->enc, s->cfg.encoder_budget_rows - *budget +
						  it->num_tokens)) {
			/* stop before this image; later steps encode it */
			n_new = ph->offset > c ? ph->offset - c : 0;
			break;
		}
		*budget -= it->num_tokens;
		(*n_jobs)++;
	}
	return n_new;
}

/* Commit the encoder jobs and references of q for [c, c+n). */
static vd_status commit_images(vd_scheduler *s, vd_seq *q, int64_t n)
{
	const vd_expansion *x = &q->group->exp;
	int64_t c = q->num_computed;
	vd_status st;

	for (int k = 0; k < x->n_ph; k++) {
		const vd_placeholder *ph = &x->ph[k];
		const vd_mm_item *it = &q->group->items[ph->item];

		if (ph->offset >= c + n || ph->offset + ph->length <= c || q->enc_held[ph->item])
			continue;
		if (vd_encoder_cache_get(s->enc, it->hash)) {
			vd_encoder_cache_ref(s->enc, it->hash);
			q->enc_held[ph->item] = true;
			continue;
		}
		if (enc_queued(s, it->hash))
			continue; /* the engine refs it for q after encoding */
		st = grow((void **)&s->out.enc, &s->cap_enc, s->out.n_enc + 1, sizeof(vd_enc_job));
		if (st != VD_OK)
			return st;
		s->out.enc[s->out.n_enc++] = (vd_enc_job){ .seq = q, .item = ph->item };
	}
	return VD_OK;
}

static vd_status add_out(vd_scheduler *s, vd_seq *q, int64_t n)
{
	vd_status st = grow((void **)&s->out.seqs, &s->cap_out, s->out.n + 1, sizeof(vd_seq *));

	if (st == VD_OK) {
		int cap = s->cap_out;

		/* n_tokens grows with seqs */
		int64_t *nt = realloc(s->out.n_tokens, (size_t)cap * sizeof(int64_t));

		if (!nt)
			return vd_errorf(VD_ERR_NOMEM, "out of memory in the scheduler");
		s->out.n_tokens = nt;
		s->out.seqs[s->out.n] = q;
		s->out.n_tokens[s->out.n] = n;
		s->out.n++;
		s->out.total_tokens += n;
	}
	return st;
}

static void remove_running(vd_scheduler *s, int i)
{
	memmove(&s->running[i], &s->running[i + 1],
		(size_t)(s->n_running - i - 1) * sizeof(*s->running));
	s->n_running--;
}

vd_status vd_scheduler_schedule(vd_scheduler *s, const vd_sched_out **out)
{
	int64_t budget = s->cfg.max_num_batched_tokens;
	int64_t enc_budget = s->cfg.encoder_budget_rows;
	vd_status st;

	s->out.n = 0;
	s->out.n_enc = 0;
	s->out.total_tokens = 0;
	s->out.n_preempted = 0;
	*out = &s->out;

	/* 1. running sequences, oldest first */
	for (int i = 0; i < s->n_running && budget > 0;) {
		vd_seq *q = s->running[i];
		int64_t n_new = q->n_tokens - q->num_computed;
		int n_jobs;
		bool self_preempted = false;

		if (n_new > budget)
			n_new = budget;
		n_new = plan_images(s, q, n_new, &enc_budget, &n_jobs);
		if (n_new <= 0) {
			i++;
			continue;
		}
		while ((st = vd_kv_allocate(s->kv, q, n_new, NULL, 0)) == VD_ERR_LIMIT) {
			vd_seq *victim = s->running[s->n_running - 1];

			remove_running(s, s->n_running - 1);
			preempt(s, victim);
			s->out.n_preempted++;
			if (victim == q) {
				self_preempted = true;
				break;
			}
		}
		if (self_preempted)
			break;
		if (st != VD_OK)
			return st;
		st = commit_images(s, q, n_new);
		if (st == VD_OK)
			st = add_out(s, q, n_new);
		if (st != VD_OK)
			return st;
		budget -= n_new;
		i++;
	}

	/* 2. waiting sequences, unless this step had to preempt */
	while (!s->out.n_preempted && s->n_waiting > 0 && budget > 0 &&
	       s->n_running < s->cfg.max_num_seqs) {
		vd_seq *q = s->waiting[s->w_head];
		int32_t n_hit = 0;
		int64_t n_new;
		int n_jobs;
		int32_t max_hit = (int32_t)(q->n_tokens / s->kv->block_size) + 1;

		if (s->cfg.prefix_caching && q->group->params.prompt_logprobs < 0) {
			st = grow((void **)&s->hit_buf, &s->cap_hit, max_hit, sizeof(int32_t));
			if (st != VD_OK)
				return st;
			n_hit = vd_kv_find_prefix(s->kv, q, s->hit_buf, max_hit);
		}
		q->num_computed = (int64_t)n_hit * s->kv->block_size;
		n_new = q->n_tokens - q->num_computed;
		if (n_new > budget)
			n_new = budget;
		n_new = plan_images(s, q, n_new, &enc_budget, &n_jobs);
		if (n_new <= 0) {
			q->num_computed = 0;
			break;
		}
		q->num_computed = 0;
		st = vd_kv_allocate(s->kv, q, n_new, s->hit_buf, n_hit);
		if (st == VD_ERR_LIMIT)
			break;
		if (st != VD_OK)
			return st;
		q->num_computed = (int64_t)n_hit * s->kv->block_size;
		q->num_cached_tokens = q->num_computed;
		s->w_head = (s->w_head + 1) % s->cap_waiting;
		s->n_waiting--;
		st = grow((void **)&s->running, &s->cap_running, s->n_running + 1, sizeof(vd_seq *));
		if (st != VD_OK)
			return st;
		s->running[s->n_running++] = q;
		q->state = VD_SEQ_RUNNING;
		st = commit_images(s, q, n_new);
		if (st == VD_OK)
			st = add_out(s, q, n_new);
		if (st != VD_OK)
			return st;
		budget -= n_new;
	}
	return VD_OK;
}

void vd_scheduler_advance(vd_scheduler *s)
{
	for (int i = 0; i < s->out.n; i++) {
		vd_seq *q = s->out.seqs[i];
		const vd_expansion *x = &q->group->exp;

		q->num_computed += s->out.n_tokens[i];
		for (int k = 0; k < x->n_ph; k++) {
			const vd_placeholder *ph = &x->ph[k];

			if (q->enc_held[ph->item] && ph->offset + ph->length <= q->num_computed) {
				vd_encoder_cache_unref(s->enc, q->group->items[ph->item].hash);
				q->enc_held[ph->item] = false;
			}
		}
	}
}

void vd_scheduler_finish(vd_scheduler *s, vd_seq *q)
{
	for (int i = 0; i < s->n_running; i++)
		if (s->running[i] == q) {
			remove_running(s, i);
			break;
		}
	if (q->state == VD_SEQ_WAITING) {
		for (int i = 0; i < s->n_waiting; i++) {
			int at = (s->w_head + i) % s->cap_waiting;

			if (s->waiting[at] == q) {
				for (int j = i; j < s->n_waiting - 1; j++)
					s->waiting[(s->w_head + j) % s->cap_waiting] =
						s->waiting[(s->w_head + j + 1) % s->cap_waiting];
				s->n_waiting--;
				break;
			}
		}
	}
	vd_kv_release(s->kv, q);
	release_encoder_refs(s, q);
	q->state = VD_SEQ_FINISHED;
}

int vd_scheduler_num_running(const vd_scheduler *s)
{
	return s->n_running;
}

int vd_scheduler_num_waiting(const vd_scheduler *s)
{
	return s->n_waiting;
}
