/* The daemon's engine thread. Submissions and aborts arrive through a
 * mutex-protected queue; the thread admits them, steps the engine while it
 * has work and sleeps on a condition variable otherwise. The engine's
 * listener copies each step's deltas into the request's channel and wakes
 * its HTTP thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/http.h"
#include "server/worker.h"

struct vd_worker {
	vd_engine *e;
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	vd_srv_req **subq;     /* submissions */
	int n_sub, cap_sub;
	vd_srv_req **abq;      /* aborts */
	int n_ab, cap_ab;
	bool stop;
	int in_flight;
	vd_worker_stats stats; /* snapshot, under mu */
	char fatal[512];       /* the engine failed: every request gets this */
};

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

vd_srv_req *vd_srv_req_new(int n)
{
	vd_srv_req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->chan = calloc((size_t)(n > 0 ? n : 1), sizeof(*r->chan));
	if (!r->chan) {
		free(r);
		return NULL;
	}
	r->n_chan = n > 0 ? n : 1;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	r->refs = 1;
	r->t_arrival = mono();
	vd_request_init(&r->req);
	return r;
}

void *vd_srv_req_own(vd_srv_req *r, void *p)
{
	if (!p || r->n_owned == (int)(sizeof(r->owned) / sizeof(r->owned[0]))) {
		free(p);
		return NULL;
	}
	r->owned[r->n_owned++] = p;
	return p;
}

void vd_srv_req_release(vd_srv_req *r)
{
	int left;

	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	left = --r->refs;
	pthread_mutex_unlock(&r->mu);
	if (left > 0)
		return;
	for (int i = 0; i < r->n_chan; i++)
		free(r->chan[i].text);
	free(r->chan);
	for (int i = 0; i < r->n_owned; i++)
		free(r->owned[i]);
	vd_prepared_free(r->prep);
	vd_output_clear(&r->out);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r);
}

/* The engine is done with r: wake the reader, drop the engine's ref. */
static void finish_req(vd_worker *w, vd_srv_req *r)
{
	pthread_mutex_lock(&r->mu);
	r->done = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_mutex_lock(&w->mu);
	w->in_flight--;
	pthread_mutex_unlock(&w->mu);
	vd_srv_req_release(r);
}

static void on_update(void *ctx, const vd_stream_update *u)
{
	vd_worker *w = ctx;
	vd_srv_req *r = u->user;
	vd_srv_chan *c;
	double now = mono();

	pthread_mutex_lock(&r->mu);
	c = &r->chan[u->index < r->n_chan ? u->index : 0];
	if (u->delta_len) {
		if (c->len + u->delta_len + 1 > c->cap) {
			size_t cap = (c->len + u->delta_len + 1) * 2;
			char *t = realloc(c->text, cap);

			if (t) {
				c->text = t;
				c->cap = cap;
			}
		}
		if (c->len + u->delta_len + 1 <= c->cap) {
			memcpy(c->text + c->len, u->delta, u->delta_len);
			c->len += u->delta_len;
			c->text[c->len] = '\0';
		}
	}
	if (u->n_tokens) {
		if (r->t_first_token == 0)
			r->t_first_token = now;
		else
			r->n_itl += u->n_tokens;
		r->t_last_token = now;
	}
	c->n_tokens += u->n_tokens;
	if (u->finished) {
		c->finished = true;
		c->reason = u->finish_reason;
	}
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	if (u->request_finished) {
		if (u->out->status != VD_OK) {
			pthread_mutex_lock(&w->mu);
			w->stats.requests_failed++;
			pthread_mutex_unlock(&w->mu);
		}
		finish_req(w, r);
	}
}

static void *engine_main(void *arg)
{
	vd_worker *w = arg;
	vd_srv_req **sub = NULL, **ab = NULL;
	int cap_sub = 0, cap_ab = 0;

	for (;;) {
		int n_sub, n_ab, k = 0;
		vd_status st = VD_OK;

		pthread_mutex_lock(&w->mu);
		while (!w->n_sub && !w->n_ab && !vd_engine_has_unfinished(w->e) && !w->stop)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->stop && !w->n_sub && !w->n_ab && !vd_engine_has_unfinished(w->e)) {
			pthread_mutex_unlock(&w->mu);
			break;
		}
		if (w->n_sub > cap_sub) {
			free(sub);
			cap_sub = w->cap_sub;
			sub = malloc((size_t)cap_sub * sizeof(*sub));
		}
		if (w->n_ab > cap_ab) {
			free(ab);
			cap_ab = w->cap_ab;
			ab = malloc((size_t)cap_ab * sizeof(*ab));
		}
		n_sub = w->n_sub;
		n_ab = w->n_ab;
		if ((n_sub && !sub) || (n_ab && !ab)) {
			pthread_mutex_unlock(&w->mu);
			continue; /* out of memory: try again next round */
		}
		if (n_sub)
			memcpy(sub, w->subq, (size_t)n_sub * sizeof(*sub));
		if (n_ab)
			memcpy(ab, w->abq, (size_t)n_ab * sizeof(*ab));
		w->n_sub = w->n_ab = 0;
		pthread_mutex_unlock(&w->mu);

		for (int i = 0; i < n_sub; i++) {
			vd_srv_req *r = sub[i];
			bool admitted = false, aborted;

			pthread_mutex_lock(&r->mu);
			aborted = r->abort_asked;
			pthread_mutex_unlock(&r->mu);
			if (aborted || w->fatal[0]) {
				r->out.status = aborted ? VD_ERR_INVALID_ARG : VD_ERR_BACKEND;
				r->out.error = strdup(aborted ? "the client went away" : w->fatal);
				finish_req(w, r);
				continue;
			}
			st = vd_engine_add(w->e, r->prep, 0, &r->out, r, &admitted);
			r->prep = NULL;
			if (!admitted) {
				pthread_mutex_lock(&w->mu);
				w->stats.requests_failed++;
				pthread_mutex_unlock(&w->mu);
				finish_req(w, r);
			}
		}
		for (int i = 0; i < n_ab; i++) {
			if (vd_engine_abort(w->e, ab[i]) == VD_OK) {
				pthread_mutex_lock(&w->mu);
				w->stats.requests_aborted++;
				pthread_mutex_unlock(&w->mu);
			}
			vd_srv_req_release(ab[i]);
		}
		if (st == VD_OK && vd_engine_has_unfinished(w->e))
			st = vd_engine_step(w->e, &k);
		if (st != VD_OK && !w->fatal[0]) {
			/* the engine itself failed: fail everything in flight */
			snprintf(w->fatal, sizeof(w->fatal), "%s", vd_error_message());
			fprintf(stderr, "vllmd: engine failure: %s\n", w->fatal);
			vd_engine_abort_all(w->e);
		}
		pthread_mutex_lock(&w->mu);
		vd_engine_get_stats(w->e, &w->stats.engine);
		pthread_mutex_unlock(&w->mu);
	}
	free(sub);
	free(ab);
	return NULL;
}

vd_status vd_worker_start(vd_engine *e, vd_worker **out)
{
	vd_worker *w = calloc(1, sizeof(*w));

	*out = NULL;
	if (!w)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	w->e = e;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	vd_engine_set_listener(e, on_update, w);
	if (pthread_create(&w->tid, NULL, engine_main, w)) {
		free(w);
		return vd_errorf(VD_ERR_INTERNAL, "cannot start the engine thread");
	}
	*out = w;
	return VD_OK;
}

static vd_status push(vd_srv_req ***q, int *n, int *cap, vd_srv_req *r)
{
	if (*n == *cap) {
		int c = *cap ? 2 * *cap : 64;
		vd_srv_req **p = realloc(*q, (size_t)c * sizeof(*p));

		if (!p)
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
		*q = p;
		*cap = c;
	}
	(*q)[(*n)++] = r;
	return VD_OK;
}

vd_status vd_worker_submit(vd_worker *w, vd_srv_req *r, int max_in_flight)
{
	vd_status st;

	pthread_mutex_lock(&w->mu);
	if (max_in_flight > 0 && w->in_flight >= max_in_flight) {
		pthread_mutex_unlock(&w->mu);
		return vd_errorf(VD_ERR_LIMIT, "The server is overloaded (%d requests in flight); "
				 "try again later.", max_in_flight);
	}
	pthread_mutex_lock(&r->mu);
	r->refs++;
	pthread_mutex_unlock(&r->mu);
	st = push(&w->subq, &w->n_sub, &w->cap_sub, r);
	if (st == VD_OK) {
		w->in_flight++;
		w->stats.requests_total++;
		pthread_cond_signal(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
	if (st != VD_OK)
		vd_srv_req_release(r);
	return st;
}

void vd_worker_abort(vd_worker *w, vd_srv_req *r)
{
	bool done;

	pthread_mutex_lock(&r->mu);
	done = r->done;
	r->abort_asked = true;
	if (!done)
		r->refs++;
	pthread_mutex_unlock(&r->mu);
	if (done)
		return;
	pthread_mutex_lock(&w->mu);
	if (push(&w->abq, &w->n_ab, &w->cap_ab, r) == VD_OK)
		pthread_cond_signal(&w->cv);
	else
		vd_srv_req_release(r);
	pthread_mutex_unlock(&w->mu);
}

bool vd_worker_wait(vd_srv_req *r, int client_fd)
{
	bool done;

	pthread_mutex_lock(&r->mu);
	while (!r->done) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&r->cv, &r->mu, &ts);
		if (!r->done && vd_http_client_gone(client_fd))
			break;
	}
	done = r->done;
	pthread_mutex_unlock(&r->mu);
	return done;
}

void vd_worker_note_rejected(vd_worker *w)
{
	pthread_mutex_lock(&w->mu);
	w->stats.requests_total++;
	w->stats.requests_failed++;
	pthread_mutex_unlock(&w->mu);
}

int vd_worker_in_flight(vd_worker *w)
{
	int n;

	pthread_mutex_lock(&w->mu);
	n = w->in_flight;
	pthread_mutex_unlock(&w->mu);
	return n;
}

void vd_worker_get_stats(vd_worker *w, vd_worker_stats *s)
{
	pthread_mutex_lock(&w->mu);
	*s = w->stats;
	pthread_mutex_unlock(&w->mu);
}

void vd_worker_stop(vd_worker *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->tid, NULL);
	vd_engine_set_listener(w->e, NULL, NULL);
	free(w->subq);
	free(w->abq);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}
