/* The offline API (include/vllmd/llm.h): argument defaults as vLLM has them,
 * generate over many requests with a progress bar, and output ownership. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/engine.h"
#include "vllmd/llm.h"

struct vd_llm {
	vd_engine *engine;
	bool show_progress;
};

void vd_engine_args_init(vd_engine_args *a)
{
	memset(a, 0, sizeof(*a));
	a->struct_size = sizeof(*a);
	a->device = "auto";
	a->dtype = "auto";
	a->kv_cache_dtype = "auto";
	a->limit_images = 1;
	a->max_num_seqs = 256;
	a->block_size = 16;
	a->gpu_memory_utilization = 0.9;
	a->enable_prefix_caching = true;
	a->max_image_pixels = 89478485; /* PIL's MAX_IMAGE_PIXELS */
	a->input_workers = 0;
}

void vd_sampling_params_init(vd_sampling_params *p)
{
	memset(p, 0, sizeof(*p));
	p->struct_size = sizeof(*p);
	p->n = 1;
	p->temperature = 1.0f;
	p->top_p = 1.0f;
	p->top_k = 0;
	p->repetition_penalty = 1.0f;
	p->seed = -1;
	p->max_tokens = 16;
	p->logprobs = -1;
	p->prompt_logprobs = -1;
	p->skip_special_tokens = true;
}

void vd_request_init(vd_request *r)
{
	memset(r, 0, sizeof(*r));
	r->struct_size = sizeof(*r);
	vd_sampling_params_init(&r->params);
	r->add_special_tokens = true;
	r->num_crops = -1;
	r->min_pixels = -1;
	r->max_pixels = -1;
}

vd_status vd_llm_create(const vd_engine_args *args, vd_llm **out)
{
	vd_llm *llm;
	vd_status st;

	*out = NULL;
	llm = calloc(1, sizeof(*llm));
	if (!llm)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	st = vd_engine_create(args, &llm->engine);
	if (st != VD_OK) {
		free(llm);
		return st;
	}
	llm->show_progress = args->show_progress;
	*out = llm;
	return VD_OK;
}

void vd_llm_destroy(vd_llm *llm)
{
	if (!llm)
		return;
	vd_engine_destroy(llm->engine);
	free(llm);
}

/* Peak resident set size of this process in KiB (VmHWM), or -1. */
static long peak_rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmHWM:", 6)) {
			kib = strtol(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return kib;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void progress(int done, int n, long long toks, double t0)
{
	double dt = now_s() - t0;
	int width = 30, fill = n ? done * width / n : width;

	fprintf(stderr, "\rProcessed prompts: %3d%% |", n ? done * 100 / n : 100);
	for (int i = 0; i < width; i++)
		fputc(i < fill ? '#' : ' ', stderr);
	fprintf(stderr, "| %d/%d [%.1fs, output %.1f toks/s]", done, n, dt,
		dt > 0 ? (double)toks / dt : 0.0);
	if (done == n)
		fputc('\n', stderr);
	fflush(stderr);
}

/* Prepared requests coming back from the input stage, by request index. */
typedef struct arrivals {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	vd_prepared **ready;    /* (n) */
	bool *arrived;          /* (n): ready[i] is set (NULL = out of memory) */
	int n_back;             /* callbacks so far */
} arrivals;

static void on_prepared(void *ctx, int64_t tag, vd_prepared *p)
{
	arrivals *a = ctx;

	pthread_mutex_lock(&a->mu);
	a->ready[tag] = p;
	a->arrived[tag] = true;
	a->n_back++;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

/* Request i, prepared; the wait is charged to the engine's profile. */
static vd_prepared *take(arrivals *a, vd_engine *e, int i)
{
	double t0 = now_s();
	vd_prepared *p;

	pthread_mutex_lock(&a->mu);
	while (!a->arrived[i])
		pthread_cond_wait(&a->cv, &a->mu);
	p = a->ready[i];
	a->ready[i] = NULL;
	pthread_mutex_unlock(&a->mu);
	vd_engine_note_input_wait(e, now_s() - t0);
	return p;
}

/* Wait for every submitted request's callback, freeing what was not
 * taken (after an engine failure). */
static void drain(arrivals *a, int n_submitted)
{
	pthread_mutex_lock(&a->mu);
	while (a->n_back < n_submitted)
		pthread_cond_wait(&a->cv, &a->mu);
	pthread_mutex_unlock(&a->mu);
	for (int i = 0; i < n_submitted; i++)
		vd_prepared_free(a->ready[i]);
}

/* All requests go through the engine together, but at most a window of
 * them is admitted at a time (a few times max_num_seqs), so memory stays
 * bounded however long the input is. The input stage prepares requests
 * ahead of admission (the whole first window, then a few per worker); the
 * engine admits them in request order, exactly as many at each point as
 * when it prepared them itself, so batches (and outputs) do not depend on
 * how fast the workers are. */
vd_status vd_llm_generate(vd_llm *llm, const vd_request *reqs, int n, vd_output **outs)
{
	vd_engine *e = llm->engine;
	vd_input *in = vd_engine_input(e);
	int window = 2 * vd_engine_max_num_seqs(e) + 16;
	int ahead = 2 * vd_input_num_workers(in);
	int next_sub = 0, next = 0, done = 0;
	long long toks = 0;
	double t0 = now_s(), last = 0;
	vd_engine_stats before, after;
	arrivals a = { .n_back = 0 };
	vd_output *o;
	vd_status st = VD_OK;

	*outs = NULL;
	if (n < 0 || (n > 0 && !reqs))
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_llm_generate: bad request array");
	o = calloc((size_t)(n > 0 ? n : 1), sizeof(*o));
	a.ready = calloc((size_t)(n > 0 ? n : 1), sizeof(*a.ready));
	a.arrived = calloc((size_t)(n > 0 ? n : 1), sizeof(*a.arrived));
	if (!o || !a.ready || !a.arrived) {
		free(o);
		free(a.ready);
		free(a.arrived);
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	}
	pthread_mutex_init(&a.mu, NULL);
	pthread_cond_init(&a.cv, NULL);
	vd_engine_get_stats(e, &before);
	while (done < n && st == VD_OK) {
		int k = 0;

		while (next < n && vd_engine_num_unfinished(e) < window && st == VD_OK) {
			bool admitted;

			/* keep the stage ahead of admission */
			while (st == VD_OK && next_sub < n &&
			       next_sub - next < window - vd_engine_num_unfinished(e) + ahead) {
				st = vd_input_submit(in, &reqs[next_sub], next_sub, on_prepared, &a);
				next_sub += st == VD_OK;
			}
			if (st != VD_OK)
				break;
			st = vd_engine_add(e, take(&a, e, next), next, &o[next], NULL, &admitted);
			next++;
			done += !admitted;
		}
		if (st != VD_OK || !vd_engine_has_unfinished(e))
			continue;
		st = vd_engine_step(e, &k);
		done += k;
		if (llm->show_progress && (k || done == n) && (now_s() - last > 0.2 || done == n)) {
			vd_engine_get_stats(e, &after);
			toks = after.generation_tokens - before.generation_tokens;
			progress(done, n, toks, t0);
			last = now_s();
		}
	}
	drain(&a, next_sub);
	pthread_cond_destroy(&a.cv);
	pthread_mutex_destroy(&a.mu);
	free(a.ready);
	free(a.arrived);
	if (st != VD_OK) {
		vd_engine_abort_all(e);
		vd_outputs_free(o, n);
		return st;
	}
	vd_engine_get_stats(e, &after);
	if (llm->show_progress)
		fprintf(stderr, "vllmd: %lld steps, %lld preemptions, prefix cache hit rate %.1f%%, "
			"%lld images encoded, peak RSS %.1f MiB\n", (long long)(after.steps - before.steps),
			(long long)(after.preemptions - before.preemptions),
			after.prefix_query_tokens > before.prefix_query_tokens ?
			100.0 * (double)(after.prefix_hit_tokens - before.prefix_hit_tokens) /
			(double)(after.prefix_query_tokens - before.prefix_query_tokens) : 0.0,
			(long long)(after.encoder_runs - before.encoder_runs),
			peak_rss_kib() / 1024.0);
	*outs = o;
	return VD_OK;
}

vd_engine *vd_llm_engine(vd_llm *llm)
{
	return llm->engine;
}

static void free_lps(vd_position_logprobs *lp, int n)
{
	if (!lp)
		return;
	for (int i = 0; i < n; i++) {
		for (int j = 0; j < lp[i].n; j++)
			free(lp[i].entries[j].decoded);
		free(lp[i].entries);
	}
	free(lp);
}

void vd_outputs_free(vd_output *outs, int n)
{
	if (!outs)
		return;
	for (int i = 0; i < n; i++)
		vd_output_clear(&outs[i]);
	free(outs);
}

void vd_output_clear(vd_output *o)
{
	free(o->error);
	free(o->request_id);
	free(o->prompt);
	free(o->prompt_token_ids);
	free_lps(o->prompt_logprobs, o->n_prompt_tokens);
	for (int c = 0; c < o->n_completions; c++) {
		vd_completion *k = &o->completions[c];

		free(k->text);
		free(k->token_ids);
		free_lps(k->logprobs, k->n_tokens);
		free(k->stop_reason);
	}
	free(o->completions);
	memset(o, 0, sizeof(*o));
}

const char *vd_finish_reason_str(vd_finish_reason r)
{
	switch (r) {
	case VD_FINISH_STOP: return "stop";
	case VD_FINISH_LENGTH: return "length";
	case VD_FINISH_ABORT: return "abort";
	case VD_FINISH_NONE: break;
	}
	return NULL;
}
