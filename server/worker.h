/* The engine thread of the daemon and the requests it serves. HTTP threads
 * build a vd_srv_req, have the input stage prepare it (vd_input_prepare:
 * images decoded and processed, prompt expanded), submit it and then wait
 * on it (whole answer) or read it as it grows (streaming); the engine
 * thread alone touches the engine's state.
 * A request is freed when both sides let go of it (vd_srv_req_release). */
#ifndef VD_SERVER_WORKER_H
#define VD_SERVER_WORKER_H

#include <pthread.h>
#include <stdbool.h>

#include "core/engine.h"

/* What one completion has produced and the reader has not taken yet. */
typedef struct vd_srv_chan {
	char *text;              /* pending text */
	size_t len, cap;
	int n_tokens;            /* tokens available in out.completions[i] */
	bool finished;
	vd_finish_reason reason;
} vd_srv_chan;

typedef struct vd_srv_req {
	/* filled by the HTTP side before vd_worker_submit; everything req
	 * points at is owned here (see owned_*) */
	vd_request req;
	void *owned[64];
	int n_owned;
	vd_prepared *prep;       /* req, prepared by the input stage; the engine
				  * takes it at admission */
	vd_output out;
	/* progress, under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	vd_srv_chan *chan;       /* (n completions) */
	int n_chan;
	bool done;               /* the engine is finished with it */
	bool abort_asked;
	int refs;
	/* timings (seconds, monotonic) */
	double t_arrival, t_first_token, t_last_token;
	int64_t n_itl;
} vd_srv_req;

/* A new request with n completions; refs = 1 (the caller). */
vd_srv_req *vd_srv_req_new(int n);
/* Let go of r; the last holder frees it. */
void vd_srv_req_release(vd_srv_req *r);
/* Remember p (malloc'ed) to free with r. Returns p, or NULL when full. */
void *vd_srv_req_own(vd_srv_req *r, void *p);

typedef struct vd_worker vd_worker;

typedef struct vd_worker_stats {
	vd_engine_stats engine;
	int64_t requests_total, requests_failed, requests_aborted;
} vd_worker_stats;

/* Start the engine thread (the worker does not own e). */
vd_status vd_worker_start(vd_engine *e, vd_worker **out);
/* Queue r for admission (takes a reference). VD_ERR_LIMIT, and r is not
 * queued, when max_in_flight requests (submitted and not finished) are
 * already in flight; max_in_flight <= 0 = no cap. */
vd_status vd_worker_submit(vd_worker *w, vd_srv_req *r, int max_in_flight);
/* Ask the engine to stop r (client gone); safe at any time. */
void vd_worker_abort(vd_worker *w, vd_srv_req *r);
/* Wait until r is done or the client went away (fd polled); returns
 * whether it is done. */
bool vd_worker_wait(vd_srv_req *r, int client_fd);
/* Count a request refused before it was submitted (it failed
 * preparation) with the received and failed ones. */
void vd_worker_note_rejected(vd_worker *w);
/* Requests admitted or queued and not finished. */
int vd_worker_in_flight(vd_worker *w);
void vd_worker_get_stats(vd_worker *w, vd_worker_stats *s);
/* Stop the thread after the queue and the engine are empty. */
void vd_worker_stop(vd_worker *w);

#endif
