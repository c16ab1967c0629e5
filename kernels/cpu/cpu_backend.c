/* CPU backend: every op of vllmd/ops.h in plain C, the oracle other backends
 * are tested against. Activations and stored weights are f32 (upload
 * converts); linear is OpenBLAS sgemm. A small worker pool splits each op
 * into fixed ranges of output elements, each computed by one thread with the
 * same code, so results never depend on the thread count. Accepted layouts:
 * "Tensor views" below. Ops may run on several threads; pool jobs queue. */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/sample.h"
#include "kernels/operands.h"
#include "kernels/patch_conv.h"

/* ------------------------------------------------------------ worker pool */

/* One job: fn runs on [begin, end) of the job's items as worker `worker`
 * (0 = the calling thread), so per-worker scratch can be indexed by it. */
typedef void (*task_fn)(void *arg, int64_t begin, int64_t end, int worker);

typedef struct cpu_ctx cpu_ctx;

typedef struct helper {
	cpu_ctx *ctx;
	int index; /* worker index, >= 1 */
	pthread_t tid;
} helper;

struct cpu_ctx {
	int nthreads;            /* workers, the calling thread included */
	helper *helpers;         /* nthreads - 1 */
	int started;             /* helpers whose thread runs */
	pthread_mutex_t run_mu;  /* one job at a time */
	pthread_mutex_t mu;      /* guards everything below */
	pthread_cond_t wake;     /* helpers wait for a new job_id */
	pthread_cond_t done;     /* the caller waits for running == 0 */
	uint64_t job_id;
	int running;             /* helpers still on the current job */
	bool stop;
	task_fn fn;
	void *arg;
	int64_t total;
	int nparts;
	vd_ops test_ops;         /* the table of a test mode (see below) */
};

static int64_t part_begin(int64_t total, int nparts, int i)
{
	return total * i / nparts;
}

static void *helper_main(void *p)
{
	helper *h = p;
	cpu_ctx *c = h->ctx;
	uint64_t seen = 0;

	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (!c->stop && c->job_id == seen)
			pthread_cond_wait(&c->wake, &c->mu);
		if (c->stop)
			break;
		seen = c->job_id;
		/* Helpers past nparts skip the job; they are not counted in
		 * running, so skipping (even a whole job) is harmless. */
		if (h->index >= c->nparts)
			continue;
		task_fn fn = c->fn;
		void *arg = c->arg;
		int64_t total = c->total;
		int nparts = c->nparts;

		pthread_mutex_unlock(&c->mu);
		fn(arg, part_begin(total, nparts, h->index),
		   part_begin(total, nparts, h->index + 1), h->index);
		pthread_mutex_lock(&c->mu);
		if (--c->running == 0)
			pthread_cond_signal(&c->done);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* Run fn over [0, total) split into at most nthreads contiguous parts of at
 * least `grain` items; returns when every part is done. */
static void pool_run(cpu_ctx *c, int64_t total, int64_t grain, task_fn fn, void *arg)
{
	int64_t parts = (total + grain - 1) / grain;

	if (total <= 0)
		return;
	if (parts > c->nthreads)
		parts = c->nthreads;
	if (parts <= 1) {
		fn(arg, 0, total, 0);
		return;
	}
	pthread_mutex_lock(&c->run_mu);
	pthread_mutex_lock(&c->mu);
	c->fn = fn;
	c->arg = arg;
	c->total = total;
	c->nparts = (int)parts;
	c->running = (int)parts - 1;
	c->job_id++;
	pthread_cond_broadcast(&c->wake);
	pthread_mutex_unlock(&c->mu);

	fn(arg, 0, part_begin(total, (int)parts, 1), 0);

	pthread_mutex_lock(&c->mu);
	while (c->running > 0)
		pthread_cond_wait(&c->done, &c->mu);
	pthread_mutex_unlock(&c->mu);
	pthread_mutex_unlock(&c->run_mu);
}

static cpu_ctx *ctx_of(vd_backend *be)
{
	return be->ctx;
}

/* ----------------------------------------------------------- tensor views */

/* Tensor views. Most ops take "row views": f32 tensors whose last dimension
 * is contiguous and whose leading dimensions collapse into rows with one row
 * stride (packed tensors, vd_tensor_rows() slices, column slices of a wider
 * matrix). Attention, rope and cache_write take (T, H, D) views with any
 * row and head strides (column slices of a fused qkv buffer); the KV cache
 * may have any strides over a contiguous head dim. copy, download and
 * im2patch take any strides. */

typedef struct rows {
	float *p;
	int64_t n, c; /* rows, columns */
	int64_t rs;   /* row stride in elements */
} rows;

typedef struct heads {
	float *p;
	int64_t t, h, d; /* (T, H, D) */
	int64_t st, sh;  /* strides of T and H; D is contiguous */
} heads;

typedef struct cache {
	void *p;              /* f32 elements, or FP8 E4M3 bytes when fp8 */
	bool fp8;
	int64_t nb, bs, h, d; /* (num_blocks, block_size, heads, head_dim) */
	int64_t sb, ss, sh;   /* strides of the first three dims */
} cache;

/* The shared operand checks (kernels/operands.h) with this backend's rules;
 * the adapters below turn their views into the f32 views above. */
static const vd_operand_rules RULES = {
	.backend = "cpu", .device = VD_DEVICE_CPU, .compute = 1u << VD_DTYPE_F32,
	.compute_str = "f32",
};

static vd_status check_f32(const vd_tensor *t, const char *op, const char *what)
{
	return vd_operand_check(&RULES, t, op, what, true);
}

static vd_status get_rows(const vd_tensor *t, const char *op, const char *what, rows *out)
{
	vd_rows_view v;
	vd_status st = vd_operand_rows(&RULES, t, op, what, &v);

	*out = (rows){ v.p, v.n, v.c, v.rs };
	return st;
}

/* A weight or bias vector of exactly c elements. */
static vd_status get_vec(const vd_tensor *t, int64_t c, const char *op, const char *what,
			 const float **out)
{
	vd_rows_view v;
	vd_status st = vd_operand_vec(&RULES, t, c, op, what, &v);

	*out = v.p;
	return st;
}

static vd_status get_heads(const vd_tensor *t, const char *op, const char *what, heads *out)
{
	vd_heads_view v;
	vd_status st = vd_operand_heads(&RULES, t, op, what, &v);

	*out = (heads){ v.p, v.t, v.h, v.d, v.st, v.sh };
	return st;
}

/* A KV cache: f32 (the compute dtype) or FP8 E4M3. */
static vd_status get_cache(const vd_tensor *t, const char *op, const char *what, cache *out)
{
	vd_cache_view v;
	vd_status st = vd_operand_cache(&RULES, t, op, what, &v);

	*out = (cache){ v.p, v.dt == VD_DTYPE_F8E4M3, v.nb, v.bs, v.h, v.d, v.sb, v.ss, v.sh };
	return st;
}

static vd_status same_rows(const rows *a, const rows *b, const char *op, const char *an,
			   const char *bn)
{
	vd_rows_view va = { .n = a->n, .c = a->c }, vb = { .n = b->n, .c = b->c };

	return vd_operand_same_rows(&RULES, &va, &vb, op, an, bn);
}

/* Rows per part so that a part holds at least ~16k elements of work. */
static int64_t row_grain(int64_t cols)
{
	int64_t g = 16384 / (cols > 0 ? cols : 1);

	return g > 0 ? g : 1;
}

/* ---------------------------------------------------------- dtypes, memory */

static float load_float(const void *p, vd_dtype t, int64_t i)
{
	switch (t) {
	case VD_DTYPE_F16: return vd_f16_to_f32(((const uint16_t *)p)[i]);
	case VD_DTYPE_BF16: return vd_bf16_to_f32(((const uint16_t *)p)[i]);
	case VD_DTYPE_F8E4M3: return vd_fp8e4m3_to_f32(((const uint8_t *)p)[i]);
	default: return ((const float *)p)[i];
	}
}

static void store_float(void *p, vd_dtype t, int64_t i, float v)
{
	switch (t) {
	case VD_DTYPE_F16: ((uint16_t *)p)[i] = vd_f32_to_f16(v); break;
	case VD_DTYPE_BF16: ((uint16_t *)p)[i] = vd_f32_to_bf16(v); break;
	case VD_DTYPE_F8E4M3: ((uint8_t *)p)[i] = vd_f32_to_fp8e4m3(v); break;
	default: ((float *)p)[i] = v; break;
	}
}

/* Convert or copy element si of src to element di of dst. Float dtypes
 * convert among themselves; other dtypes must match (checked by callers). */
static void move_elem(void *dst, vd_dtype dt, int64_t di, const void *src, vd_dtype st,
		      int64_t si)
{
	size_t es;

	if (vd_dtype_is_float_storage(dt)) {
		store_float(dst, dt, di, load_float(src, st, si));
		return;
	}
	es = vd_dtype_size(dt);
	memcpy((char *)dst + di * (int64_t)es, (const char *)src + si * (int64_t)es, es);
}

static vd_status check_convertible(vd_dtype from, vd_dtype to, const char *op)
{
	return vd_operand_convertible(&RULES, from, to, op);
}

static vd_status cpu_alloc(vd_backend *be, vd_tensor *t, vd_dtype dtype, int ndim,
			   const int64_t *shape)
{
	int64_t n;
	void *p = NULL;
	vd_status st = vd_operand_alloc(&RULES, t, dtype, ndim, shape, &n);

	(void)be;
	if (st)
		return st;
	/* 64-byte alignment suits BLAS; never 0 bytes so alloc is non-NULL */
	if (posix_memalign(&p, 64, n > 0 ? (size_t)n * vd_dtype_size(dtype) : 64) != 0)
		return vd_errorf(VD_ERR_NOMEM, "cpu alloc: out of memory for %lld x %s", (long long)n,
				 vd_dtype_name(dtype));
	*t = vd_operand_packed(&RULES, dtype, ndim, shape, p);
	return VD_OK;
}

static void cpu_free(vd_backend *be, vd_tensor *t)
{
	(void)be;
	if (!t || !t->alloc)
		return;
	free(t->alloc);
	memset(t, 0, sizeof(*t));
}

typedef struct upload_job {
	void *dst;
	vd_dtype dt;
	const void *src;
	vd_dtype st;
} upload_job;

static void upload_task(void *arg, int64_t b, int64_t e, int worker)
{
	const upload_job *j = arg;

	(void)worker;
	if (j->dt == j->st) {
		size_t es = vd_dtype_size(j->dt);

		memcpy((char *)j->dst + b * (int64_t)es, (const char *)j->src + b * (int64_t)es,
		       (size_t)(e - b) * es);
		return;
	}
	for (int64_t i = b; i < e; i++)
		store_float(j->dst, j->dt, i, load_float(j->src, j->st, i));
}

/* dst must be packed; the first n elements are written. */
static vd_status cpu_upload(vd_backend *be, vd_tensor *dst, const void *src, vd_dtype src_dtype,
			    int64_t n)
{
	upload_job j;
	vd_status st;

	if (!dst || (!src && n > 0) || n < 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu upload: NULL tensor/source or n < 0");
	if (dst->device != VD_DEVICE_CPU || !vd_tensor_is_contiguous(dst))
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu upload: dst must be a packed CPU tensor");
	if (n > vd_tensor_numel(dst))
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu upload: %lld elements into a tensor of %lld",
				 (long long)n, (long long)vd_tensor_numel(dst));
	st = check_convertible(src_dtype, dst->dtype, "upload");
	if (st)
		return st;
	j = (upload_job){ dst->data, dst->dtype, src, src_dtype };
	pool_run(ctx_of(be), n, 1 << 16, upload_task, &j);
	return VD_OK;
}

/* Offset in elements of row r of t, where rows enumerate every index of the
 * leading ndim-1 dims in row-major order. */
static int64_t row_offset(const vd_tensor *t, int64_t r)
{
	int64_t off = 0;

	for (int d = t->ndim - 2; d >= 0; d--) {
		off += (r % t->shape[d]) * t->stride[d];
		r /= t->shape[d];
	}
	return off;
}

static int64_t inner_len(const vd_tensor *t)
{
	return t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
}

static int64_t inner_stride(const vd_tensor *t)
{
	return t->ndim > 0 ? t->stride[t->ndim - 1] : 1;
}

typedef struct copy_job {
	const vd_tensor *src;
	const vd_tensor *dst; /* NULL: packed host buffer `host` */
	void *host;
	vd_dtype host_dtype;
} copy_job;

static void copy_task(void *arg, int64_t b, int64_t e, int worker)
{
	const copy_job *j = arg;
	const vd_tensor *s = j->src;
	int64_t len = inner_len(s), ss = inner_stride(s);

	(void)worker;
	for (int64_t r = b; r < e; r++) {
		int64_t so = row_offset(s, r);

		if (j->dst) {
			int64_t dof = row_offset(j->dst, r), ds = inner_stride(j->dst);

			for (int64_t i = 0; i < len; i++)
				move_elem(j->dst->data, j->dst->dtype, dof + i * ds, s->data,
					  s->dtype, so + i * ss);
		} else {
			for (int64_t i = 0; i < len; i++)
				move_elem(j->host, j->host_dtype, r * len + i, s->data, s->dtype,
					  so + i * ss);
		}
	}
}

static int64_t outer_rows(const vd_tensor *t)
{
	int64_t n = 1;

	for (int d = 0; d < t->ndim - 1; d++)
		n *= t->shape[d];
	return n;
}

/* src may be any strided view; dst is packed host memory. */
static vd_status cpu_download(vd_backend *be, const vd_tensor *src, void *dst)
{
	copy_job j;

	if (!src || (!dst && vd_tensor_numel(src) > 0))
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu download: NULL tensor or destination");
	if (src->device != VD_DEVICE_CPU || !vd_dtype_is_known(src->dtype))
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu download: src is not a CPU tensor");
	if (vd_tensor_numel(src) == 0)
		return VD_OK;
	j = (copy_job){ src, NULL, dst,
			vd_dtype_is_float_storage(src->dtype) ? VD_DTYPE_F32 : src->dtype };
	pool_run(ctx_of(be), outer_rows(src), row_grain(inner_len(src)), copy_task, &j);
	return VD_OK;
}

/* src and dst may be any strided views of the same shape; they must not
 * overlap. */
static vd_status cpu_copy(vd_backend *be, const vd_tensor *src, vd_tensor *dst)
{
	copy_job j;
	vd_status st;

	if (!src || !dst || src->device != VD_DEVICE_CPU || dst->device != VD_DEVICE_CPU)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu copy: NULL or non-CPU tensor");
	if (src->ndim != dst->ndim)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu copy: %d dims into %d dims", src->ndim,
				 dst->ndim);
	for (int d = 0; d < src->ndim; d++)
		if (src->shape[d] != dst->shape[d])
			return vd_errorf(VD_ERR_INVALID_ARG, "cpu copy: shape differs in dim %d", d);
	st = check_convertible(src->dtype, dst->dtype, "copy");
	if (st)
		return st;
	if (vd_tensor_numel(src) == 0)
		return VD_OK;
	j = (copy_job){ src, dst, NULL, dst->dtype };
	pool_run(ctx_of(be), outer_rows(src), row_grain(inner_len(src)), copy_task, &j);
	return VD_OK;
}

static vd_status cpu_zero(vd_backend *be, vd_tensor *t)
{
	(void)be;
	if (!vd_tensor_is_contiguous(t))
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu zero: the tensor must be packed");
	memset(t->data, 0, (size_t)vd_tensor_numel(t) * vd_dtype_size(t->dtype));
	return VD_OK;
}

static vd_status cpu_sample(vd_backend *be, const vd_tensor *x, const float *temps,
			    const uint64_t *keys, int32_t *out)
{
	rows r;
	vd_status st;

	(void)be;
	if ((st = get_rows(x, "sample", "x", &r)))
		return st;
	if (r.c < 1 || r.c > INT32_MAX)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu sample: rows of %lld elements",
				 (long long)r.c);
	if (temps && !keys)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu sample: temperatures need keys");
	for (int64_t m = 0; m < r.n; m++) {
		const float *row = (const float *)r.p + m * r.rs;
		int64_t best = 0;

		if (!temps || temps[m] <= 0.0f) {
			for (int64_t j = 1; j < r.c; j++)
				if (row[j] > row[best])
					best = j;
		} else {
			double bs = -INFINITY, inv = 1.0 / (double)temps[m];

			best = -1;
			for (int64_t j = 0; j < r.c; j++) {
				double v;

				if (row[j] == -INFINITY)
					continue;
				v = (double)row[j] * inv + vd_gumbel(keys[m], j);
				if (best < 0 || v > bs) {
					bs = v;
					best = j;
				}
			}
			if (best < 0)
				best = 0;
		}
		out[m] = (int32_t)best;
	}
	return VD_OK;
}

static vd_status cpu_sample_full(vd_backend *be, const vd_tensor *x, const vd_sample_args *a)
{
	rows r;
	void *scratch;
	vd_status st;

	(void)be;
	if ((st = get_rows(x, "sample_full", "x", &r)))
		return st;
	if ((st = vd_check_sample_args(a, r.n, r.c, "cpu sample_full")))
		return st;
	scratch = malloc(vd_cpu_sample_scratch_bytes((int32_t)r.c));
	if (!scratch)
		return vd_errorf(VD_ERR_NOMEM, "cpu sample_full: out of memory");
	for (int64_t m = 0; m < r.n; m++) {
		const float *row = (const float *)r.p + m * r.rs;
		const vd_sample_row *sr = &a->rows[m];

		a->picks[m] = vd_cpu_sample_row(row, (int32_t)r.c, sr, a->hist + sr->hist_off,
						scratch);
		if (sr->logprobs >= 0)
			vd_cpu_logprobs(row, (int32_t)r.c, a->picks[m], sr->logprobs,
					&a->chosen_lp[m], &a->chosen_rank[m],
					a->top_ids + m * a->lp_k, a->top_lps + m * a->lp_k);
	}
	free(scratch);
	return VD_OK;
}

static vd_status cpu_sync(vd_backend *be)
{
	(void)be;
	return VD_OK;
}

/* ------------------------------------------------------------ dense math */

/* x, w, y: row views. y must not overlap x or w. */
static vd_status cpu_linear(vd_backend *be, const vd_tensor *x, const vd_tensor *w,
			    const vd_tensor *b, vd_tensor *y)
{
	rows xr, wr, yr;
	const float *bias = NULL;
	vd_status st;

	(void)be;
	if ((st = get_rows(x, "linear", "x", &xr)) || (st = get_rows(w, "linear", "w", &wr)) ||
	    (st = get_rows(y, "linear", "y", &yr)))
		return st;
	if (xr.c != wr.c || yr.n != xr.n || yr.c != wr.n)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cpu linear: x (%lld, %lld) @ w (%lld, %lld)^T -> y (%lld, %lld) mismatch",
				 (long long)xr.n, (long long)xr.c, (long long)wr.n, (long long)wr.c,
				 (long long)yr.n, (long long)yr.c);
	if (b && (st = get_vec(b, wr.n, "linear", "b", &bias)))
		return st;
	if (xr.n == 0 || wr.n == 0)
		return VD_OK;
	if (xr.c > INT32_MAX || xr.n > INT32_MAX || wr.n > INT32_MAX || xr.rs > INT32_MAX ||
	    wr.rs > INT32_MAX || yr.rs > INT32_MAX)
		return vd_errorf(VD_ERR_UNSUPPORTED, "cpu linear: dimensions exceed BLAS int range");
	if (xr.c == 0) {
		for (int64_t m = 0; m < yr.n; m++)
			for (int64_t n = 0; n < yr.c; n++)
				yr.p[m * yr.rs + n] = bias ? bias[n] : 0.0f;
		return VD_OK;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)xr.n, (int)wr.n, (int)xr.c, 1.0f,
		    xr.p, (int)xr.rs, wr.p, (int)wr.rs, 0.0f, yr.p, (int)yr.rs);
	if (bias)
		for (int64_t m = 0; m < yr.n; m++)
			for (int64_t n = 0; n < yr.c; n++)
				yr.p[m * yr.rs + n] += bias[n];
	return VD_OK;
}

typedef struct rowwise_job {
	rows x, y, z;     /* inputs/outputs as each op defines */
	const float *w, *b;
	float eps;
	float s;
	vd_act act;
} rowwise_job;

static void add_task(void *arg, int64_t b, int64_t e, int worker)
{
	const rowwise_job *j = arg;

	(void)worker;
	for (int64_t r = b; r < e; r++) {
		const float *pa = j->x.p + r * j->x.rs, *pb = j->y.p + r * j->y.rs;
		float *pz = j->z.p + r * j->z.rs;

		for (int64_t i = 0; i < j->x.c; i++)
			pz[i] = pa[i] + pb[i];
	}
}

/* a, b, y: row views; y may alias a or b. */
static vd_status cpu_add(vd_backend *be, const vd_tensor *a, const vd_tensor *b, vd_tensor *y)
{
	rowwise_job j = { 0 };
	vd_status st;

	if ((st = get_rows(a, "add", "a", &j.x)) || (st = get_rows(b, "add", "b", &j.y)) ||
	    (st = get_rows(y, "add", "y", &j.z)) || (st = same_rows(&j.x, &j.y, "add", "a", "b")) ||
	    (st = same_rows(&j.x, &j.z, "add", "a", "y")))
		return st;
	pool_run(ctx_of(be), j.x.n, row_grain(j.x.c), add_task, &j);
	return VD_OK;
}

/* y = w * (x * rsqrt(mean(x^2) + eps)) for one row, as HF's RMSNorm in f32. */
static void rmsnorm_row(const float *x, const float *w, float eps, int64_t c, float *y)
{
	double ss = 0.0;
	float r;

	for (int64_t i = 0; i < c; i++)
		ss += (double)x[i] * x[i];
	r = 1.0f / sqrtf((float)(ss / (double)c) + eps);
	for (int64_t i = 0; i < c; i++)
		y[i] = w[i] * (x[i] * r);
}

static void rmsnorm_task(void *arg, int64_t b, int64_t e, int worker)
{
	const rowwise_job *j = arg;

	(void)worker;
	for (int64_t r = b; r < e; r++)
		rmsnorm_row(j->x.p + r * j->x.rs, j->w, j->eps, j->x.c, j->y.p + r * j->y.rs);
}

/* x, y: row views; y may alias x. */
static vd_status cpu_rmsnorm(vd_backend *be, const vd_tensor *x, const vd_tensor *w, float eps,
			     vd_tensor *y)
{
	rowwise_job j = { .eps = eps };
	vd_status st;

	if ((st = get_rows(x, "rmsnorm", "x", &j.x)) || (st = get_rows(y, "rmsnorm", "y", &j.y)) ||
	    (st = same_rows(&j.x, &j.y, "rmsnorm", "x", "y")) ||
	    (st = get_vec(w, j.x.c, "rmsnorm", "w", &j.w)))
		return st;
	pool_run(ctx_of(be), j.x.n, row_grain(j.x.c), rmsnorm_task, &j);
	return VD_OK;
}

static void add_rmsnorm_task(void *arg, int64_t b, int64_t e, int worker)
{
	const rowwise_job *j = arg;

	(void)worker;
	for (int64_t r = b; r < e; r++) {
		float *pr = j->z.p + r * j->z.rs;
		const float *px = j->x.p + r * j->x.rs;

		for (int64_t i = 0; i < j->x.c; i++)
			pr[i] += px[i];
		rmsnorm_row(pr, j->w, j->eps, j->x.c, j->y.p + r * j->y.rs);
	}
}

/* r, x, y: row views; y may alias x (each row of x is consumed first). */
static vd_status cpu_add_rmsnorm(vd_backend *be, vd_tensor *r, const vd_tensor *x,
				 const vd_tensor *w, float eps, vd_tensor *y)
{
	rowwise_job j = { .eps = eps };
	vd_status st;

	if ((st = get_rows(r, "add_rmsnorm", "r", &j.z)) ||
	    (st = get_rows(x, "add_rmsnorm", "x", &j.x)) ||
	    (st = get_rows(y, "add_rmsnorm", "y", &j.y)) ||
	    (st = same_rows(&j.z, &j.x, "add_rmsnorm", "r", "x")) ||
	    (st = same_rows(&j.z, &j.y, "add_rmsnorm", "r", "y")) ||
	    (st = get_vec(w, j.x.c, "add_rmsnorm", "w", &j.w)))
		return st;
	pool_run(ctx_of(be), j.x.n, row_grain(j.x.c), add_rmsnorm_task, &j);
	return VD_OK;
}

static void layernorm_task(void *arg, int64_t b, int64_t e, int worker)
{
	const rowwise_job *j = arg;
	int64_t c = j->x.c;

	(void)worker;
	for (int64_t r = b; r < e; r++) {
		const float *x = j->x.p + r * j->x.rs;
		float *y = j->y.p + r * j->y.rs;
		double sum = 0.0, var = 0.0;
		float mean, rstd;

		for (int64_t i = 0; i < c; i++)
			sum += x[i];
		mean = (float)(sum / (double)c);
		for (int64_t i = 0; i < c; i++) {
			double dx = (double)x[i] - mean;

			var += dx * dx;
		}
		/* biased variance, as torch.nn.LayerNorm */
		rstd = (float)(1.0 / sqrt(var / (double)c + (double)j->eps));
		for (int64_t i = 0; i < c; i++)
			y[i] = (x[i] - mean) * rstd * j->w[i] + (j->b ? j->b[i] : 0.0f);
	}
}

/* x, y: row views; y may alias x. */
static vd_status cpu_layernorm(vd_backend *be, const vd_tensor *x, const vd_tensor *w,
			       const vd_tensor *b, float eps, vd_tensor *y)
{
	rowwise_job j = { .eps = eps };
	vd_status st;

	if ((st = get_rows(x, "layernorm", "x", &j.x)) ||
	    (st = get_rows(y, "layernorm", "y", &j.y)) ||
	    (st = same_rows(&j.x, &j.y, "layernorm", "x", "y")) ||
	    (st = get_vec(w, j.x.c, "layernorm", "w", &j.w)) ||
	    (b && (st = get_vec(b, j.x.c, "layernorm", "b", &j.b))))
		return st;
	pool_run(ctx_of(be), j.x.n, row_grain(j.x.c), layernorm_task, &j);
	return VD_OK;
}

static float act_one(vd_act kind, float x)
{
	switch (kind) {
	case VD_ACT_GELU:
		return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
	case VD_ACT_GELU_TANH: {
		const float k = 0.7978845608028654f; /* sqrt(2/pi) */

		return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
	}
	case VD_ACT_QUICK_GELU:
		return x / (1.0f + expf(-1.702f * x));
	case VD_ACT_SILU:
		return x / (1.0f + expf(-x));
	}
	return x;
}

static void act_task(void *arg, int64_t b, int64_t e, int worker)
{
	const rowwise_job *j = arg;

	(void)worker;
	for (int64_t r = b; r < e; r++) {
		const float *x = j->x.p + r * j->x.rs;
		float *y = j->y.p + r * j->y.rs;

		for (int64_t i = 0; i < j->x.c; i++)
			y[i] = act_one(j->act, x[i]);
	}
}

/* x, y: row views; y may alias x. */
static vd_status cpu_act(vd_backend *be, vd_act kind, const vd_tensor *x, vd_tensor *y)
{
	rowwise_job j = { .act = kind };
	vd_status st;

	if (kind != VD_ACT_GELU && kind != VD_ACT_GELU_TANH && kind != VD_ACT_QUICK_GELU &&
	    kind != VD_ACT_SILU)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu act: unknown activation %d", (int)kind);
	if ((st = get_rows(x, "act", "x", &j.x)) || (st = get_rows(y, "act", "y", &j.y)) ||
	    (st = same_rows(&j.x, &j.y, "act", "x", "y")))
		return st;
	pool_run(ctx_of(be), j.x.n, row_grain(j.x.c), act_task, &j);
	return VD_OK;
}

static void silu_mul_task(void *arg, int64_t b, int64_t e, int worker)
{
	const rowwise_job *j = arg;
	int64_t f = j->y.c;

	(void)worker;
	for (int64_t r = b; r < e; r++) {
		const float *x = j->x.p + r * j->x.rs;
		float *y = j->y.p + r * j->y.rs;

		for (int64_t i = 0; i < f; i++)
			y[i] = act_one(VD_ACT_SILU, x[i]) * x[f + i];
	}
}

/* x, y: row views that must not overlap. */
static vd_status cpu_silu_mul(vd_backend *be, const vd_tensor *x, vd_tensor *y)
{
	rowwise_job j = { 0 };
	vd_status st;

	if ((st = get_rows(x, "silu_mul", "x", &j.x)) || (st = get_rows(y, "silu_mul", "y", &j.y)))
		return st;
	if (j.x.n != j.y.n || j.x.c != 2 * j.y.c)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cpu silu_mul: x (%lld, %lld) must be (M, 2F) for y (%lld, %lld)",
				 (long long)j.x.n, (long long)j.x.c, (long long)j.y.n,
				 (long long)j.y.c);
	pool_run(ctx_of(be), j.x.n, row_grain(j.x.c), silu_mul_task, &j);
	return VD_OK;
}

static void scale_task(void *arg, int64_t b, int64_t e, int worker)
{
	const rowwise_job *j = arg;

	(void)worker;
	for (int64_t r = b; r < e; r++) {
		const float *x = j->x.p + r * j->x.rs;
		float *y = j->y.p + r * j->y.rs;

		for (int64_t i = 0; i < j->x.c; i++)
			y[i] = x[i] * j->s;
	}
}

/* x, y: row views; y may alias x. */
static vd_status cpu_scale(vd_backend *be, const vd_tensor *x, float s, vd_tensor *y)
{
	rowwise_job j = { .s = s };
	vd_status st;

	if ((st = get_rows(x, "scale", "x", &j.x)) || (st = get_rows(y, "scale", "y", &j.y)) ||
	    (st = same_rows(&j.x, &j.y, "scale", "x", "y")))
		return st;
	pool_run(ctx_of(be), j.x.n, row_grain(j.x.c), scale_task, &j);
	return VD_OK;
}

/* -------------------------------------------------------------- positions */

typedef struct rope_job {
	heads x;
	const int32_t *pos; /* (rows, T) */
	const vd_rope *r;
	float *scratch;     /* (workers, rot_dim): cos | sin of one token */
} rope_job;

static void rope_task(void *arg, int64_t b, int64_t e, int worker)
{
	const rope_job *j = arg;
	const vd_rope *r = j->r;
	int64_t half = r->rot_dim / 2, T = j->x.t;
	float *cs = j->scratch + (int64_t)worker * r->rot_dim, *sn = cs + half;

	for (int64_t t = b; t < e; t++) {
		int64_t table = r->table_idx ? r->table_idx[t] : 0;
		const float *inv = r->inv_freq + table * half;

		for (int64_t i = 0; i < half; i++) {
			int64_t row = r->pos_row ? r->pos_row[i] : 0;
			/* the angle is rounded to f32 as HF's inv_freq @ positions */
			float a = (float)j->pos[row * T + t] * inv[i];

			cs[i] = cosf(a) * r->mscale;
			sn[i] = sinf(a) * r->mscale;
		}
		for (int64_t h = 0; h < j->x.h; h++) {
			float *v = j->x.p + t * j->x.st + h * j->x.sh;

			for (int64_t i = 0; i < half; i++) {
				float x1 = v[i], x2 = v[i + half];

				v[i] = x1 * cs[i] - x2 * sn[i];
				v[i + half] = x2 * cs[i] + x1 * sn[i];
			}
		}
	}
}

/* x: (T, H, D) view with any row/head strides. */
static vd_status cpu_rope(vd_backend *be, vd_tensor *x, const int32_t *positions, const vd_rope *r)
{
	cpu_ctx *c = ctx_of(be);
	rope_job j;
	vd_status st;

	if ((st = get_heads(x, "rope", "x", &j.x)))
		return st;
	if (!r || !r->inv_freq || r->rot_dim <= 0 || r->rot_dim % 2 || r->rot_dim > j.x.d ||
	    r->n_tables < 1)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cpu rope: rot_dim must be even in (0, %lld] with >= 1 inv_freq table",
				 (long long)j.x.d);
	if (!positions && j.x.t > 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu rope: positions is NULL");
	if (r->table_idx)
		for (int64_t t = 0; t < j.x.t; t++)
			if (r->table_idx[t] < 0 || r->table_idx[t] >= r->n_tables)
				return vd_errorf(VD_ERR_INVALID_ARG,
						 "cpu rope: table_idx[%lld] = %d outside [0, %d)",
						 (long long)t, r->table_idx[t], r->n_tables);
	if (j.x.t == 0)
		return VD_OK;
	j.pos = positions;
	j.r = r;
	j.scratch = malloc(sizeof(float) * (size_t)c->nthreads * (size_t)r->rot_dim);
	if (!j.scratch)
		return vd_errorf(VD_ERR_NOMEM, "cpu rope: out of memory");
	pool_run(c, j.x.t, 4, rope_task, &j);
	free(j.scratch);
	return VD_OK;
}

/* -------------------------------------------------------------- attention */

/* One query row against keys/values: scores, softmax, weighted sum.
 * key(i)/value(i) of the context are found through the job's layout. */
typedef struct attn_job {
	heads q, out;
	heads k, v;           /* attention_segments */
	cache kc, vc;         /* paged_attention */
	const vd_attn_meta *m;
	const int32_t *cu;    /* attention_segments: (nseg + 1) */
	const int32_t *tok_seq;
	int64_t group;        /* query heads per kv head */
	float scale;
	float k_scale, v_scale; /* FP8 caches: stored * scale */
	void *scratch;        /* per worker: see attn_scratch_bytes */
	int64_t ctx_cap;
} attn_job;

/* out_row = softmax(scale * q . K^T) V over n context rows given by
 * key/value pointers kp[i], vp[i] computed by the caller's loop. */
static void attend(const float *q, int64_t d, int64_t n, float scale, const float *const *kp,
		   const float *const *vp, float *sc, float *acc, float *out_row)
{
	float mx = -INFINITY;
	double sum = 0.0;
	float inv;

	for (int64_t i = 0; i < n; i++) {
		float dot = 0.0f;

		for (int64_t e = 0; e < d; e++)
			dot += q[e] * kp[i][e];
		sc[i] = dot * scale;
		if (sc[i] > mx)
			mx = sc[i];
	}
	for (int64_t i = 0; i < n; i++) {
		sc[i] = expf(sc[i] - mx);
		sum += sc[i];
	}
	inv = (float)(1.0 / sum);
	for (int64_t e = 0; e < d; e++)
		acc[e] = 0.0f;
	for (int64_t i = 0; i < n; i++) {
		float p = sc[i] * inv;

		for (int64_t e = 0; e < d; e++)
			acc[e] += p * vp[i][e];
	}
	for (int64_t e = 0; e < d; e++)
		out_row[e] = acc[e];
}

/* Per-worker scratch: key and value row pointers (ctx_cap each), scores
 * (ctx_cap floats), accumulator (D floats), and for FP8 caches the context's
 * K and V rows dequantized (ctx_cap x D floats each); rounded up to 64 bytes
 * so every worker's pointers stay aligned. */
static size_t attn_scratch_bytes(const attn_job *j)
{
	size_t n = 2 * sizeof(float *) * (size_t)j->ctx_cap +
		   sizeof(float) * (size_t)(j->ctx_cap + j->q.d);

	if (j->kc.fp8)
		n += 2 * sizeof(float) * (size_t)(j->ctx_cap * j->q.d);
	return (n + 63) / 64 * 64;
}

static void attn_worker_scratch(const attn_job *j, int worker, float **sc, float **acc,
				const float ***kp, const float ***vp)
{
	char *base = (char *)j->scratch + (size_t)worker * attn_scratch_bytes(j);

	*kp = (const float **)base;
	*vp = *kp + j->ctx_cap;
	*sc = (float *)(*vp + j->ctx_cap);
	*acc = *sc + j->ctx_cap;
}

/* Row (blk, off, kh) of cache c as f32: a pointer into an f32 cache, or the
 * FP8 row times scale written to buf (D floats). */
static const float *cache_row(const cache *c, int64_t blk, int64_t off, int64_t kh, float scale,
			      float *buf)
{
	int64_t at = blk * c->sb + off * c->ss + kh * c->sh;

	if (!c->fp8)
		return (const float *)c->p + at;
	for (int64_t e = 0; e < c->d; e++)
		buf[e] = vd_fp8e4m3_to_f32(((const uint8_t *)c->p)[at + e]) * scale;
	return buf;
}

static void paged_task(void *arg, int64_t b, int64_t e, int worker)
{
	const attn_job *j = arg;
	const vd_attn_meta *m = j->m;
	float *sc, *acc;
	const float **kp, **vp;

	attn_worker_scratch(j, worker, &sc, &acc, &kp, &vp);
	/* FP8 rows are dequantized after the accumulator */
	float *kbuf = acc + j->q.d, *vbuf = kbuf + j->ctx_cap * j->q.d;

	for (int64_t it = b; it < e; it++) {
		int64_t t = it / j->q.h, h = it % j->q.h, kh = h / j->group;
		int s = j->tok_seq[t];
		int64_t q0 = m->query_start_loc[s], qlen = m->query_start_loc[s + 1] - q0;
		/* absolute position of this query row; it sees 0..pos */
		int64_t pos = m->seq_lens[s] - qlen + (t - q0);
		const int32_t *table = m->block_tables + (int64_t)s * m->max_blocks;

		for (int64_t i = 0; i <= pos; i++) {
			int64_t blk = table[i / m->block_size], off = i % m->block_size;

			kp[i] = cache_row(&j->kc, blk, off, kh, j->k_scale, kbuf + i * j->q.d);
			vp[i] = cache_row(&j->vc, blk, off, kh, j->v_scale, vbuf + i * j->q.d);
		}
		attend(j->q.p + t * j->q.st + h * j->q.sh, j->q.d, pos + 1, j->scale, kp, vp, sc,
		       acc, j->out.p + t * j->out.st + h * j->out.sh);
	}
}

static vd_status run_attention(cpu_ctx *c, attn_job *j, task_fn fn, const char *op)
{
	j->scratch = malloc(attn_scratch_bytes(j) * (size_t)c->nthreads);
	if (!j->scratch)
		return vd_errorf(VD_ERR_NOMEM, "cpu %s: out of memory for scratch", op);
	pool_run(c, j->q.t * j->q.h, 1, fn, j);
	free(j->scratch);
	return VD_OK;
}

static vd_status check_qkv_heads(const heads *q, const heads *kv, const heads *out,
				 const char *op)
{
	vd_heads_view vq = { .t = q->t, .h = q->h, .d = q->d };
	vd_heads_view vo = { .t = out->t, .h = out->h, .d = out->d };

	return vd_operand_qkv_heads(&RULES, &vq, kv->h, kv->d, &vo, op);
}

/* q, out: (T, H, D) views; caches: 4-D with contiguous head dim. GQA query
 * head h reads kv head h / (H / Hkv). */
static vd_status cpu_paged_attention(vd_backend *be, const vd_tensor *q, const vd_tensor *k_cache,
				     const vd_tensor *v_cache, const vd_attn_meta *meta,
				     float scale, vd_tensor *out)
{
	attn_job j = { .m = meta, .scale = scale };
	heads kvh;
	int32_t *tok_seq = NULL;
	vd_status st;

	if ((st = get_heads(q, "paged_attention", "q", &j.q)) ||
	    (st = get_heads(out, "paged_attention", "out", &j.out)) ||
	    (st = get_cache(k_cache, "paged_attention", "k_cache", &j.kc)) ||
	    (st = get_cache(v_cache, "paged_attention", "v_cache", &j.vc)))
		return st;
	if (j.kc.nb != j.vc.nb || j.kc.bs != j.vc.bs || j.kc.h != j.vc.h || j.kc.d != j.vc.d ||
	    j.kc.fp8 != j.vc.fp8)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu paged_attention: k and v caches differ");
	vd_operand_kv_scales(meta, j.kc.fp8 ? VD_DTYPE_F8E4M3 : VD_DTYPE_F32, &j.k_scale,
			     &j.v_scale);
	kvh = (heads){ NULL, 0, j.kc.h, j.kc.d, 0, 0 };
	if ((st = check_qkv_heads(&j.q, &kvh, &j.out, "paged_attention")))
		return st;
	j.group = j.q.h / j.kc.h;
	tok_seq = malloc(sizeof(int32_t) * (size_t)(j.q.t > 0 ? j.q.t : 1));
	if (!tok_seq)
		return vd_errorf(VD_ERR_NOMEM, "cpu paged_attention: out of memory");
	st = vd_operand_attn_meta(&RULES, meta, j.q.t, j.kc.nb, j.kc.bs, "paged_attention", tok_seq,
				  &j.ctx_cap);
	if (st || j.q.t == 0)
		goto out;
	j.tok_seq = tok_seq;
	st = run_attention(ctx_of(be), &j, paged_task, "paged_attention");
out:
	free(tok_seq);
	return st;
}

/* k, v: (T, Hkv, D) views; caches as paged_attention. */
static vd_status cpu_cache_write(vd_backend *be, const vd_tensor *k, const vd_tensor *v,
				 vd_tensor *k_cache, vd_tensor *v_cache, const vd_attn_meta *meta)
{
	heads kh, vh;
	cache kc, vc;
	int64_t nslots;
	float k_scale, v_scale;
	vd_status st;

	(void)be;
	if ((st = get_heads(k, "cache_write", "k", &kh)) ||
	    (st = get_heads(v, "cache_write", "v", &vh)) ||
	    (st = get_cache(k_cache, "cache_write", "k_cache", &kc)) ||
	    (st = get_cache(v_cache, "cache_write", "v_cache", &vc)))
		return st;
	if (kh.t != vh.t || kh.h != vh.h || kh.d != vh.d || kc.nb != vc.nb || kc.bs != vc.bs ||
	    kc.h != kh.h || vc.h != kh.h || kc.d != kh.d || vc.d != kh.d || kc.fp8 != vc.fp8)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cpu cache_write: k, v (T, Hkv, D) and caches (.., Hkv, D) disagree");
	vd_operand_kv_scales(meta, kc.fp8 ? VD_DTYPE_F8E4M3 : VD_DTYPE_F32, &k_scale, &v_scale);
	if (!meta || meta->num_tokens != kh.t || (kh.t > 0 && !meta->slot_mapping))
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cpu cache_write: meta must give slot_mapping for %lld tokens",
				 (long long)kh.t);
	nslots = kc.nb * kc.bs;
	for (int64_t t = 0; t < kh.t; t++)
		if (meta->slot_mapping[t] >= nslots)
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "cpu cache_write: slot %lld of token %lld outside %lld slots",
					 (long long)meta->slot_mapping[t], (long long)t,
					 (long long)nslots);
	for (int64_t t = 0; t < kh.t; t++) {
		int64_t slot = meta->slot_mapping[t], blk, off;

		if (slot < 0)
			continue;
		blk = slot / kc.bs;
		off = slot % kc.bs;
		for (int64_t h = 0; h < kh.h; h++) {
			int64_t ko = blk * kc.sb + off * kc.ss + h * kc.sh;
			int64_t vo = blk * vc.sb + off * vc.ss + h * vc.sh;
			const float *ks = kh.p + t * kh.st + h * kh.sh, *vs = vh.p + t * vh.st + h * vh.sh;

			if (!kc.fp8) {
				memcpy((float *)kc.p + ko, ks, sizeof(float) * (size_t)kh.d);
				memcpy((float *)vc.p + vo, vs, sizeof(float) * (size_t)kh.d);
				continue;
			}
			/* division, not a multiply by the reciprocal: the CUDA
			 * kernel divides too, so both round alike */
			for (int64_t e = 0; e < kh.d; e++) {
				((uint8_t *)kc.p)[ko + e] = vd_f32_to_fp8e4m3(ks[e] / k_scale);
				((uint8_t *)vc.p)[vo + e] = vd_f32_to_fp8e4m3(vs[e] / v_scale);
			}
		}
	}
	return VD_OK;
}

static void segments_task(void *arg, int64_t b, int64_t e, int worker)
{
	const attn_job *j = arg;
	float *sc, *acc;
	const float **kp, **vp;

	attn_worker_scratch(j, worker, &sc, &acc, &kp, &vp);
	for (int64_t it = b; it < e; it++) {
		int64_t t = it / j->q.h, h = it % j->q.h, kh = h / j->group;
		int g = j->tok_seq[t];
		int64_t r0 = j->cu[g], n = j->cu[g + 1] - r0;

		for (int64_t i = 0; i < n; i++) {
			kp[i] = j->k.p + (r0 + i) * j->k.st + kh * j->k.sh;
			vp[i] = j->v.p + (r0 + i) * j->v.st + kh * j->v.sh;
		}
		attend(j->q.p + t * j->q.st + h * j->q.sh, j->q.d, n, j->scale, kp, vp, sc, acc,
		       j->out.p + t * j->out.st + h * j->out.sh);
	}
}

/* q, out: (T, H, D) views; k, v: (T, Hkv, D) views. */
static vd_status cpu_attention_segments(vd_backend *be, const vd_tensor *q, const vd_tensor *k,
					const vd_tensor *v, const int32_t *cu, int nseg,
					float scale, vd_tensor *out)
{
	attn_job j = { .cu = cu, .scale = scale };
	int32_t *tok_seg = NULL;
	vd_status st;

	if ((st = get_heads(q, "attention_segments", "q", &j.q)) ||
	    (st = get_heads(k, "attention_segments", "k", &j.k)) ||
	    (st = get_heads(v, "attention_segments", "v", &j.v)) ||
	    (st = get_heads(out, "attention_segments", "out", &j.out)) ||
	    (st = check_qkv_heads(&j.q, &j.k, &j.out, "attention_segments")))
		return st;
	if (j.k.t != j.q.t || j.v.t != j.q.t || j.v.h != j.k.h || j.v.d != j.k.d)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cpu attention_segments: q, k, v must have the same rows");
	if (!cu || nseg < 0 || cu[0] != 0 || cu[nseg] != j.q.t)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cpu attention_segments: cu must run from 0 to T = %lld",
				 (long long)j.q.t);
	j.group = j.q.h / j.k.h;
	tok_seg = malloc(sizeof(int32_t) * (size_t)(j.q.t > 0 ? j.q.t : 1));
	if (!tok_seg)
		return vd_errorf(VD_ERR_NOMEM, "cpu attention_segments: out of memory");
	for (int g = 0; g < nseg; g++) {
		if (cu[g + 1] < cu[g]) {
			st = vd_errorf(VD_ERR_INVALID_ARG,
				       "cpu attention_segments: cu decreases at segment %d", g);
			goto out;
		}
		for (int32_t t = cu[g]; t < cu[g + 1]; t++)
			tok_seg[t] = g;
		if (cu[g + 1] - cu[g] > j.ctx_cap)
			j.ctx_cap = cu[g + 1] - cu[g];
	}
	if (j.q.t == 0)
		goto out;
	j.tok_seq = tok_seg;
	st = run_attention(ctx_of(be), &j, segments_task, "attention_segments");
out:
	free(tok_seg);
	return st;
}

/* ------------------------------------------------------------------- rows */

/* Copy row src_rows[i] (or i) of s to row dst_rows[i] (or i) of d. */
static void copy_rows(const rows *s, const int32_t *src_rows, const rows *d,
		      const int32_t *dst_rows, int64_t n)
{
	for (int64_t i = 0; i < n; i++) {
		int64_t si = src_rows ? src_rows[i] : i, di = dst_rows ? dst_rows[i] : i;

		memmove(d->p + di * d->rs, s->p + si * s->rs, sizeof(float) * (size_t)s->c);
	}
}

static vd_status check_ids(const int32_t *ids, int64_t n, int64_t limit, const char *op,
			   const char *what)
{
	if (!ids && n > 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu %s: %s is NULL", op, what);
	for (int64_t i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= limit)
			return vd_errorf(VD_ERR_INVALID_ARG, "cpu %s: %s[%lld] = %d outside [0, %lld)",
					 op, what, (long long)i, ids[i], (long long)limit);
	return VD_OK;
}

/* table, out: row views. */
static vd_status cpu_embed(vd_backend *be, const vd_tensor *table, const int32_t *ids, int64_t n,
			   vd_tensor *out)
{
	rows t, o;
	vd_status st;

	(void)be;
	if ((st = get_rows(table, "embed", "table", &t)) || (st = get_rows(out, "embed", "out", &o)))
		return st;
	if (n < 0 || o.n != n || o.c != t.c)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu embed: out must be (%lld, %lld)",
				 (long long)n, (long long)t.c);
	if ((st = check_ids(ids, n, t.n, "embed", "ids")))
		return st;
	copy_rows(&t, ids, &o, NULL, n);
	return VD_OK;
}

/* src, dst: row views. */
static vd_status cpu_scatter_rows(vd_backend *be, const vd_tensor *src, const int32_t *rows_,
				  int64_t n, vd_tensor *dst)
{
	rows s, d;
	vd_status st;

	(void)be;
	if ((st = get_rows(src, "scatter_rows", "src", &s)) ||
	    (st = get_rows(dst, "scatter_rows", "dst", &d)))
		return st;
	if (n < 0 || s.n != n || s.c != d.c)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu scatter_rows: src (%lld, %lld) vs dst columns %lld",
				 (long long)s.n, (long long)s.c, (long long)d.c);
	if ((st = check_ids(rows_, n, d.n, "scatter_rows", "rows")))
		return st;
	copy_rows(&s, NULL, &d, rows_, n);
	return VD_OK;
}

/* src, dst: row views. */
static vd_status cpu_gather_rows(vd_backend *be, const vd_tensor *src, const int32_t *rows_,
				 int64_t n, vd_tensor *dst)
{
	rows s, d;
	vd_status st;

	(void)be;
	if ((st = get_rows(src, "gather_rows", "src", &s)) ||
	    (st = get_rows(dst, "gather_rows", "dst", &d)))
		return st;
	if (n < 0 || d.n != n || s.c != d.c)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu gather_rows: dst (%lld, %lld) vs src columns %lld",
				 (long long)d.n, (long long)d.c, (long long)s.c);
	if ((st = check_ids(rows_, n, s.n, "gather_rows", "rows")))
		return st;
	copy_rows(&s, rows_, &d, NULL, n);
	return VD_OK;
}

typedef struct patch_job {
	const vd_tensor *img;
	rows out;
	int64_t p, npw;
} patch_job;

static void im2patch_task(void *arg, int64_t b, int64_t e, int worker)
{
	const patch_job *j = arg;
	const float *img = j->img->data;
	int64_t C = j->img->shape[0], sc = j->img->stride[0], sy = j->img->stride[1],
		sx = j->img->stride[2], p = j->p;

	(void)worker;
	for (int64_t pi = b; pi < e; pi++) {
		int64_t y0 = pi / j->npw * p, x0 = pi % j->npw * p;
		float *dst = j->out.p + pi * j->out.rs;

		for (int64_t c = 0; c < C; c++)
			for (int64_t ky = 0; ky < p; ky++)
				for (int64_t kx = 0; kx < p; kx++)
					*dst++ = img[c * sc + (y0 + ky) * sy + (x0 + kx) * sx];
	}
}

/* img: (C, H, W) with any strides; out: row view. Trailing pixels that do
 * not fill a patch are dropped, as a stride-p convolution does. */
static vd_status cpu_im2patch(vd_backend *be, const vd_tensor *img, int p, vd_tensor *out)
{
	patch_job j = { .img = img, .p = p };
	int64_t nph;
	vd_status st;

	if ((st = check_f32(img, "im2patch", "img")) || (st = get_rows(out, "im2patch", "out", &j.out)))
		return st;
	if (img->ndim != 3 || p <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu im2patch: img must be (C, H, W) and p > 0");
	nph = img->shape[1] / p;
	j.npw = img->shape[2] / p;
	if (j.out.n != nph * j.npw || j.out.c != img->shape[0] * p * p)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu im2patch: out must be (%lld, %lld), got (%lld, %lld)",
				 (long long)(nph * j.npw), (long long)(img->shape[0] * p * p),
				 (long long)j.out.n, (long long)j.out.c);
	pool_run(ctx_of(be), j.out.n, 8, im2patch_task, &j);
	return VD_OK;
}

/* patch_conv: the patches gathered into rows (b, s..) x (c, k..), then
 * linear with w (O, C k..): the same sums as im2patch and linear. */
static vd_status cpu_patch_conv(vd_backend *be, const vd_tensor *x, int nd, const int64_t *size,
				const int64_t *kernel, const vd_tensor *w, vd_tensor *y)
{
	int64_t B = 0, C, L = 0, K = 0, out[3] = { 1, 1, 1 }, k[3] = { 1, 1, 1 }, S[3] = { 1, 1, 1 };
	int64_t pshape[2];
	const float *xs;
	float *pd;
	vd_tensor pt;
	vd_status st;

	if ((st = check_f32(x, "patch_conv", "x")) || (st = check_f32(w, "patch_conv", "w")) ||
	    (st = check_f32(y, "patch_conv", "y")))
		return st;
	if ((st = vd_check_patch_conv(x, nd, size, kernel, w, y, "cpu patch_conv", &B, &L, &K)))
		return st;
	C = size[0];
	/* 2-D as 3-D with a leading spatial dim of 1 */
	for (int i = 0; i < nd; i++) {
		int d = 3 - nd + i;

		k[d] = kernel[i];
		S[d] = size[1 + i];
		out[d] = S[d] / k[d];
	}
	pshape[0] = B * L;
	pshape[1] = C * K;
	if ((st = cpu_alloc(be, &pt, VD_DTYPE_F32, 2, pshape)))
		return st;
	xs = x->data;
	pd = pt.data;
	for (int64_t b = 0; b < B; b++)
		for (int64_t o0 = 0; o0 < out[0]; o0++)
			for (int64_t o1 = 0; o1 < out[1]; o1++)
				for (int64_t o2 = 0; o2 < out[2]; o2++)
					for (int64_t c = 0; c < C; c++)
						for (int64_t i0 = 0; i0 < k[0]; i0++)
							for (int64_t i1 = 0; i1 < k[1]; i1++) {
								const float *src = xs + (((b * C + c) * S[0] +
									o0 * k[0] + i0) * S[1] + o1 * k[1] + i1) *
									S[2] + o2 * k[2];

								memcpy(pd, src, sizeof(float) * (size_t)k[2]);
								pd += k[2];
							}
	st = cpu_linear(be, &pt, w, NULL, y);
	cpu_free(be, &pt);
	return st;
}

/* ------------------------------------------------------------- lifecycle */

static const vd_ops cpu_ops = {
	.struct_size = sizeof(vd_ops),
	.version = VD_OPS_VERSION,
	.name = "cpu",
	.alloc = cpu_alloc,
	.free = cpu_free,
	.upload = cpu_upload,
	.download = cpu_download,
	.copy = cpu_copy,
	.sync = cpu_sync,
	.linear = cpu_linear,
	.add = cpu_add,
	.rmsnorm = cpu_rmsnorm,
	.add_rmsnorm = cpu_add_rmsnorm,
	.layernorm = cpu_layernorm,
	.act = cpu_act,
	.silu_mul = cpu_silu_mul,
	.scale = cpu_scale,
	.rope = cpu_rope,
	.cache_write = cpu_cache_write,
	.paged_attention = cpu_paged_attention,
	.attention_segments = cpu_attention_segments,
	.embed = cpu_embed,
	.scatter_rows = cpu_scatter_rows,
	.gather_rows = cpu_gather_rows,
	.im2patch = cpu_im2patch,
	.zero = cpu_zero,
	.sample = cpu_sample,
	.sample_full = cpu_sample_full,
	.patch_conv = cpu_patch_conv,
};

/* Test modes, read when the backend is created:
 * - VD_CPU_STEP_GRAPHS=1: step graphs on the CPU. The oracle has nothing
 *   to record, so a "recorded" step runs as its ops are called and
 *   graph_end reports that it ran. The engine's padded graph batches then
 *   run on the CPU, where tests check them against op-by-op steps (and
 *   ASan checks their layout).
 * - VD_CPU_HOST_SAMPLING=1: no sample_full, so the engine downloads logits
 *   and samples on the host, for tests that compare the two paths. */
static vd_status cpu_graph_begin(vd_backend *be, int id)
{
	(void)be;
	if (id < 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu graph_begin: id %d < 0", id);
	return VD_OK;
}

static vd_status cpu_graph_end(vd_backend *be, int *ran)
{
	(void)be;
	if (!ran)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu graph_end: ran is NULL");
	*ran = 1;
	return VD_OK;
}

static bool env_on(const char *name)
{
	const char *v = getenv(name);

	return v && !strcmp(v, "1");
}

static void ctx_stop(cpu_ctx *c)
{
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_cond_broadcast(&c->wake);
	pthread_mutex_unlock(&c->mu);
	for (int i = 0; i < c->started; i++)
		pthread_join(c->helpers[i].tid, NULL);
	pthread_cond_destroy(&c->done);
	pthread_cond_destroy(&c->wake);
	pthread_mutex_destroy(&c->mu);
	pthread_mutex_destroy(&c->run_mu);
	free(c->helpers);
	free(c);
}

vd_status vd_cpu_backend_create(int num_threads, vd_backend **out)
{
	vd_backend *be = NULL;
	cpu_ctx *c = NULL;
	vd_status st;

	if (!out || num_threads < 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "cpu backend: num_threads must be >= 0");
	*out = NULL;
	if (num_threads == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		num_threads = n > 0 ? (int)n : 1;
	}
	be = calloc(1, sizeof(*be));
	c = calloc(1, sizeof(*c));
	if (!be || !c) {
		free(c);
		st = vd_errorf(VD_ERR_NOMEM, "cpu backend: out of memory");
		goto fail;
	}
	c->nthreads = num_threads;
	pthread_mutex_init(&c->run_mu, NULL);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->wake, NULL);
	pthread_cond_init(&c->done, NULL);
	c->helpers = calloc((size_t)num_threads, sizeof(helper));
	if (!c->helpers) {
		st = vd_errorf(VD_ERR_NOMEM, "cpu backend: out of memory");
		goto fail_ctx;
	}
	for (int i = 0; i < num_threads - 1; i++) {
		c->helpers[i].ctx = c;
		c->helpers[i].index = i + 1;
		if (pthread_create(&c->helpers[i].tid, NULL, helper_main, &c->helpers[i]) != 0) {
			st = vd_errorf(VD_ERR_BACKEND, "cpu backend: cannot start worker %d of %d",
				       i + 1, num_threads);
			goto fail_ctx;
		}
		c->started++;
	}
	be->ops = &cpu_ops;
	if (env_on("VD_CPU_STEP_GRAPHS") || env_on("VD_CPU_HOST_SAMPLING")) {
		c->test_ops = cpu_ops;
		if (env_on("VD_CPU_STEP_GRAPHS")) {
			c->test_ops.graph_begin = cpu_graph_begin;
			c->test_ops.graph_end = cpu_graph_end;
		}
		if (env_on("VD_CPU_HOST_SAMPLING"))
			c->test_ops.sample_full = NULL;
		be->ops = &c->test_ops;
	}
	be->ctx = c;
	be->device = VD_DEVICE_CPU;
	be->dtype = VD_DTYPE_F32;
	*out = be;
	return VD_OK;

fail_ctx:
	ctx_stop(c);
fail:
	free(be);
	return st;
}

void vd_cpu_backend_destroy(vd_backend *be)
{
	if (!be)
		return;
	ctx_stop(be->ctx);
	free(be);
}
