/* The input stage (core/input.h): a FIFO of requests served by a fixed
 * pool of worker threads. Preparing is a pure function of the request and
 * the loaded model, so workers share nothing but the queue and the
 * statistics, both under the stage's mutex. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/input.h"
#include "core/mm.h"
#include "core/sampler.h"

typedef struct job {
	const vd_request *req;
	int64_t tag;
	vd_input_done_fn done;
	void *ctx;
	struct job *next;
} job;

struct vd_input {
	vd_input_model m;
	pthread_mutex_t mu;          /* the queue, stop, stats */
	pthread_cond_t cv;           /* a job was queued, or stop */
	job *head, *tail;
	bool stop;
	pthread_t *tids;
	int n_workers;
	pthread_mutex_t expand_mu;   /* serial_expand families */
	vd_input_stats stats;
};

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void vd_prepared_free(vd_prepared *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->n_items; i++)
		vd_mm_item_free(&p->items[i]);
	free(p->items);
	vd_expansion_free(&p->exp);
	free(p->error);
	free(p);
}

/* The request itself: a prompt, an image list the model takes, sampling
 * parameters in range, token ids in the vocabulary. */
static vd_status check_request(const vd_input_model *m, const vd_request *q)
{
	if (!q->prompt && (!q->prompt_token_ids || q->n_prompt_token_ids <= 0))
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "the request has neither a prompt nor prompt_token_ids");
	if (q->n_images < 0 || (q->n_images > 0 && !q->images))
		return vd_errorf(VD_ERR_INVALID_ARG, "bad image list");
	if (q->n_images > m->limit_images)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "At most %d image(s) may be provided in one prompt.", m->limit_images);
	for (int i = 0; !q->prompt && i < q->n_prompt_token_ids; i++)
		if (q->prompt_token_ids[i] >= m->vocab_size || q->prompt_token_ids[i] < 0)
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "prompt_token_ids[%d] = %d is out of vocabulary (size %d)", i,
					 q->prompt_token_ids[i], m->vocab_size);
	return vd_sampling_params_check(&q->params);
}

static vd_status prepare_images(const vd_input_model *m, vd_prepared *p)
{
	const vd_request *q = &p->req;
	vd_mm_kwargs kw = { .struct_size = sizeof(kw), .min_pixels = q->min_pixels,
			    .max_pixels = q->max_pixels, .num_crops = q->num_crops };

	if (q->n_images == 0)
		return VD_OK;
	p->items = calloc((size_t)q->n_images, sizeof(*p->items));
	if (!p->items)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	for (int i = 0; i < q->n_images; i++) {
		const vd_image_input *im = &q->images[i];
		vd_status st;

		/* every family's embeddings are as wide as its decoder (plugin
		 * ABI minor 3: the families no longer check it themselves) */
		if (im->kind == VD_IMAGE_EMBEDS && m->embed_dim > 0 && im->hidden != m->embed_dim)
			return vd_errorf(VD_ERR_INVALID_ARG, "image %d: image embeddings must be "
					 "(num_tokens, %d); got width %lld", i, m->embed_dim,
					 (long long)im->hidden);
		st = vd_mm_prepare_timed(m->fam, m->fam_state, im, &kw, m->max_image_pixels,
					 &p->items[i], &p->t_decode, &p->t_process);
		if (st != VD_OK)
			return vd_errorf(st, "image %d: %s", i, vd_error_message());
		p->n_items++;
	}
	return VD_OK;
}

/* Tokenize and expand the prompt (the family decides how), check it
 * against the images and the context length. */
static vd_status expand_prompt(vd_input *in, vd_prepared *p)
{
	const vd_input_model *m = &in->m;
	const vd_request *q = &p->req;
	const vd_mm_item **ptrs = NULL;
	vd_prompt_in pin;
	double t0 = mono();
	vd_status st;

	if (p->n_items > 0) {
		ptrs = malloc((size_t)p->n_items * sizeof(*ptrs));
		if (!ptrs)
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
		for (int i = 0; i < p->n_items; i++)
			ptrs[i] = &p->items[i];
	}
	pin = (vd_prompt_in){ .struct_size = sizeof(pin), .text = q->prompt,
			      .ids = q->prompt_token_ids, .n_ids = q->n_prompt_token_ids,
			      .items = ptrs, .n_items = p->n_items,
			      .add_special_tokens = q->add_special_tokens };
	if (m->serial_expand)
		pthread_mutex_lock(&in->expand_mu);
	st = m->fam->expand(m->fam_state, &pin, &p->exp);
	if (m->serial_expand)
		pthread_mutex_unlock(&in->expand_mu);
	if (st == VD_OK)
		st = vd_expansion_validate(&p->exp, ptrs, p->n_items);
	free(ptrs);
	p->t_prompt += mono() - t0;
	if (st != VD_OK)
		return st;
	if (p->exp.n >= m->max_model_len)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "The decoder prompt (length %lld) is longer than the maximum model "
				 "length of %d.", (long long)p->exp.n, m->max_model_len);
	return VD_OK;
}

/* Prepare r on this thread. NULL only when out of memory. */
static vd_prepared *prepare(vd_input *in, const vd_request *r)
{
	vd_prepared *p = calloc(1, sizeof(*p));
	vd_status st;

	if (!p)
		return NULL;
	p->req = *r;
	vd_expansion_init(&p->exp);
	st = check_request(&in->m, r);
	if (st == VD_OK)
		st = prepare_images(&in->m, p);
	if (st == VD_OK)
		st = expand_prompt(in, p);
	for (int i = 0; st == VD_OK && r->params.stop && r->params.stop[i]; i++)
		if (strlen(r->params.stop[i]) > p->stop_lookback)
			p->stop_lookback = strlen(r->params.stop[i]);
	p->status = st;
	if (st != VD_OK) {
		p->error = strdup(vd_error_message());
		for (int i = 0; i < p->n_items; i++)
			vd_mm_item_free(&p->items[i]);
		free(p->items);
		p->items = NULL;
		p->n_items = 0;
		vd_expansion_free(&p->exp);
		if (!p->error) {
			free(p);
			return NULL;
		}
	}
	return p;
}

static void *worker_main(void *arg)
{
	vd_input *in = arg;

	for (;;) {
		job *j;
		vd_prepared *p;
		double t0;

		pthread_mutex_lock(&in->mu);
		while (!in->head && !in->stop)
			pthread_cond_wait(&in->cv, &in->mu);
		if (!in->head) {
			pthread_mutex_unlock(&in->mu);
			return NULL;
		}
		j = in->head;
		in->head = j->next;
		if (!in->head)
			in->tail = NULL;
		pthread_mutex_unlock(&in->mu);

		t0 = mono();
		p = prepare(in, j->req);
		pthread_mutex_lock(&in->mu);
		in->stats.requests++;
		in->stats.busy_s += mono() - t0;
		if (p) {
			in->stats.images += p->n_items;
			in->stats.decode_s += p->t_decode;
			in->stats.process_s += p->t_process;
			in->stats.prompt_s += p->t_prompt;
		}
		pthread_mutex_unlock(&in->mu);
		j->done(j->ctx, j->tag, p);
		free(j);
	}
}

vd_status vd_input_create(const vd_input_model *m, int n_workers, vd_input **out)
{
	vd_input *in;
	long cores;

	*out = NULL;
	if (n_workers <= 0) {
		cores = sysconf(_SC_NPROCESSORS_ONLN);
		n_workers = cores > 0 ? (int)cores : 1;
	}
	in = calloc(1, sizeof(*in));
	if (!in || !(in->tids = calloc((size_t)n_workers, sizeof(*in->tids)))) {
		free(in);
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	}
	in->m = *m;
	pthread_mutex_init(&in->mu, NULL);
	pthread_cond_init(&in->cv, NULL);
	pthread_mutex_init(&in->expand_mu, NULL);
	for (int i = 0; i < n_workers; i++) {
		if (pthread_create(&in->tids[i], NULL, worker_main, in)) {
			vd_input_destroy(in);
			return vd_errorf(VD_ERR_INTERNAL, "cannot start input worker %d of %d", i + 1,
					 n_workers);
		}
		in->n_workers++;
	}
	in->stats.workers = n_workers;
	*out = in;
	return VD_OK;
}

void vd_input_destroy(vd_input *in)
{
	if (!in)
		return;
	pthread_mutex_lock(&in->mu);
	in->stop = true;
	pthread_cond_broadcast(&in->cv);
	pthread_mutex_unlock(&in->mu);
	for (int i = 0; i < in->n_workers; i++)
		pthread_join(in->tids[i], NULL);
	pthread_mutex_destroy(&in->expand_mu);
	pthread_cond_destroy(&in->cv);
	pthread_mutex_destroy(&in->mu);
	free(in->tids);
	free(in);
}

int vd_input_num_workers(const vd_input *in)
{
	return in->n_workers;
}

vd_status vd_input_submit(vd_input *in, const vd_request *r, int64_t tag, vd_input_done_fn done,
			  void *ctx)
{
	job *j = malloc(sizeof(*j));

	if (!j)
		return vd_errorf(VD_ERR_NOMEM, "out of memory queueing a request");
	*j = (job){ .req = r, .tag = tag, .done = done, .ctx = ctx };
	pthread_mutex_lock(&in->mu);
	if (in->tail)
		in->tail->next = j;
	else
		in->head = j;
	in->tail = j;
	pthread_cond_signal(&in->cv);
	pthread_mutex_unlock(&in->mu);
	return VD_OK;
}

/* vd_input_prepare's rendezvous with the worker. */
typedef struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	vd_prepared *p;
	bool done;
} waiter;

static void wake(void *ctx, int64_t tag, vd_prepared *p)
{
	waiter *w = ctx;

	(void)tag;
	pthread_mutex_lock(&w->mu);
	w->p = p;
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

vd_status vd_input_prepare(vd_input *in, const vd_request *r, vd_prepared **out)
{
	waiter w = { .p = NULL, .done = false };
	vd_status st;

	*out = NULL;
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	st = vd_input_submit(in, r, 0, wake, &w);
	if (st == VD_OK) {
		pthread_mutex_lock(&w.mu);
		while (!w.done)
			pthread_cond_wait(&w.cv, &w.mu);
		pthread_mutex_unlock(&w.mu);
		if (!w.p)
			st = vd_errorf(VD_ERR_NOMEM, "out of memory preparing a request");
		else
			*out = w.p;
	}
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
	return st;
}

void vd_input_get_stats(vd_input *in, vd_input_stats *s)
{
	pthread_mutex_lock(&in->mu);
	*s = in->stats;
	pthread_mutex_unlock(&in->mu);
}
