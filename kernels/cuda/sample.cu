/* Sampling on the GPU (vllmd/ops.h): sample (greedy or one Gumbel draw a
 * row) and sample_full. */
#include "kernels/cuda/common.cuh"

/* ------------------------------------------------------------ sampling */

__device__ __forceinline__ uint64_t d_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* One block per row: each thread scans a strided slice keeping its best
 * (score, index); a tree in shared memory keeps the larger score, and the
 * lower index among equals, so picks match the host's. Greedy rows score the
 * logit; sampled rows logit / T + Gumbel noise from the row's key (ops.h). */
__global__ void __launch_bounds__(512) k_sample(rv x, const float *temps, const uint64_t *keys,
						int32_t *out)
{
	__shared__ double sv[512];
	__shared__ int32_t si[512];
	int64_t m = blockIdx.x;
	float t = temps ? temps[m] : 0.0f;
	double best = -INFINITY, inv = t > 0.0f ? 1.0 / (double)t : 0.0;
	int32_t bi = INT32_MAX;

	for (int64_t j = threadIdx.x; j < x.c; j += blockDim.x) {
		float v = ldf(x.p, x.dt, m * x.rs + j);
		double sc;

		if (t > 0.0f) {
			uint64_t h;
			double u;

			if (v == -INFINITY)
				continue;
			h = d_mix64(keys[m] + (uint64_t)(j + 1) * 0x9e3779b97f4a7c15ull);
			u = ((double)(h >> 11) + 0.5) * 0x1.0p-53;
			sc = (double)v * inv - log(-log(u));
		} else {
			sc = (double)v;
		}
		if (bi == INT32_MAX || sc > best) {
			best = sc;
			bi = (int32_t)j;
		}
	}
	sv[threadIdx.x] = best;
	si[threadIdx.x] = bi;
	__syncthreads();
	for (unsigned h = blockDim.x / 2; h > 0; h >>= 1) {
		if (threadIdx.x < h) {
			double ov = sv[threadIdx.x + h];
			int32_t oi = si[threadIdx.x + h];

			if (oi != INT32_MAX &&
			    (si[threadIdx.x] == INT32_MAX || ov > sv[threadIdx.x] ||
			     (ov == sv[threadIdx.x] && oi < si[threadIdx.x]))) {
				sv[threadIdx.x] = ov;
				si[threadIdx.x] = oi;
			}
		}
		__syncthreads();
	}
	if (threadIdx.x == 0)
		out[m] = si[0] == INT32_MAX ? 0 : si[0];
}

vd_status cu_sample(vd_backend *be, const vd_tensor *x, const float *temps,
			   const uint64_t *keys, int32_t *out)
{
	rv xr;
	char *blob = NULL, *d;
	const char *dev;
	size_t o_keys, total;

	TRY(get_rows(x, "sample", "x", &xr));
	if (xr.c < 1 || xr.c > INT32_MAX - 1)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda sample: rows of %lld elements",
				 (long long)xr.c);
	if (temps && !keys)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda sample: temperatures need keys");
	TRY(check_grid(xr.n, 0, "sample"));
	ENTER(be);
	GRAPH_FORBID("sample");
	if (xr.n == 0)
		return VD_OK;
	o_keys = align_up(sizeof(float) * (size_t)xr.n, 16);
	total = o_keys + sizeof(uint64_t) * (size_t)xr.n;
	if (temps) {
		TRY(blob_get(c, total, &blob));
		memcpy(blob, temps, sizeof(float) * (size_t)xr.n);
		memcpy(blob + o_keys, keys, sizeof(uint64_t) * (size_t)xr.n);
		TRY(put_index(c, IDX_SAMPLE, total, &dev));
	}
	TRY(scratch(c, sizeof(int32_t) * (size_t)xr.n, (void **)&d));
	k_sample<<<(unsigned)xr.n, 512, 0, c->stream>>>(
		xr, temps ? (const float *)dev : NULL,
		temps ? (const uint64_t *)(dev + o_keys) : NULL, (int32_t *)d);
	LAUNCHED();
	CUDA_TRY(cudaMemcpyAsync(out, d, sizeof(int32_t) * (size_t)xr.n, cudaMemcpyDeviceToHost,
				 c->stream));
	CUDA_TRY(cudaStreamSynchronize(c->stream));
	return VD_OK;
}

/* sample_full (vllmd/ops.h) on the GPU: every filter of the host sampler
 * (kernels/sample.c) with its rounding, so seeded requests pick the same
 * tokens. *
 * Per call, with M rows of N logits:
 *   k_sf_prep     one block per row: penalties into a copy of the row (rows
 *                 with history), greedy argmax, tempering, min_p; rows
 *                 without top_k/top_p draw here; the others write their
 *                 tempered keys for the sort.
 *   segmented radix sort (CUB, stable: ties keep the lower id first) of the
 *                 rows with top_k or top_p, descending.
 *   k_sf_filter   one block per sorted row: top_k, the top_p prefix over the
 *                 exact int64 mass (a block scan), the draw over the prefix.
 *   k_sf_logprobs one block per row asking for logprobs, from the raw row.
 * Sums whose rounding could move a pick are exact (int64) or done as the
 * host does them; every multiply-add is written with _rn intrinsics so that
 * nvcc cannot fuse it where the host rounds twice. */

#define SF_THREADS 512

/* An argmax candidate: larger v wins, then the lower id; i < 0 is none. */
struct sf_best {
	double v;
	int32_t i;
};

struct sf_best_op {
	__device__ sf_best operator()(const sf_best &a, const sf_best &b) const
	{
		if (b.i < 0)
			return a;
		if (a.i < 0 || b.v > a.v || (b.v == a.v && b.i < a.i))
			return b;
		return a;
	}
};

struct sf_max_op {
	__device__ float operator()(float a, float b) const { return b > a ? b : a; }
};

typedef cub::BlockReduce<sf_best, SF_THREADS> sf_best_reduce;
typedef cub::BlockReduce<float, SF_THREADS> sf_float_reduce;
typedef cub::BlockReduce<double, SF_THREADS> sf_double_reduce;
typedef cub::BlockReduce<long long, SF_THREADS> sf_ll_reduce;
typedef cub::BlockReduce<int, SF_THREADS> sf_int_reduce;
typedef cub::BlockScan<long long, SF_THREADS> sf_ll_scan;

union sf_smem {
	sf_best_reduce::TempStorage best;
	sf_float_reduce::TempStorage f;
	sf_double_reduce::TempStorage d;
	sf_ll_reduce::TempStorage ll;
	sf_int_reduce::TempStorage i;
	sf_ll_scan::TempStorage scan;
};

/* The device side of one call: rows and history (index blob), per-row
 * slots, and the scratch buffers. */
struct sf_args {
	const vd_sample_row *rows;
	const vd_sample_hist *hist;
	/* rows go in chunks (bounded work arrays); slots count within one */
	const int32_t *hslot;  /* (M) row of pen with the penalised copy, or -1 */
	const int32_t *sslot;  /* (M) row of keys to sort, or -1 */
	const int32_t *smap;   /* (S) sorted row -> row, over all chunks */
	int64_t m0;            /* this chunk's first row */
	int32_t s0;            /* this chunk's first sorted row (index into smap) */
	const float *x;
	int64_t rs;            /* x's row stride */
	int32_t n;             /* entries per row */
	int32_t lp_k;
	float *pen;            /* (chunk, n) */
	float *keys;           /* (chunk, n) tempered keys for the sort */
	int32_t *ids;          /* (chunk, n) 0..n-1 for the sort */
	const float *skeys;    /* (chunk, n) sorted */
	const int32_t *sids;   /* (chunk, n) sorted */
	float *tmax;           /* (M) max tempered logit */
	int32_t *picks;        /* (M) */
	float *chosen_lp;      /* (M) */
	int32_t *chosen_rank;  /* (M) */
	int32_t *top_ids;      /* (M, lp_k) */
	float *top_lps;        /* (M, lp_k) */
};

/* The penalised, untempered row m. */
__device__ __forceinline__ const float *sf_row(const sf_args &a, int64_t m)
{
	int32_t h = a.hslot[m];

	return h >= 0 ? a.pen + (int64_t)h * a.n : a.x + m * a.rs;
}

/* Gumbel-max score of entry i: untempered x / T + g(key, i), in double,
 * rounded as the host rounds it (no fused multiply-add). */
__device__ __forceinline__ double sf_score(float v, double inv, uint64_t key, int32_t i)
{
	uint64_t h = d_mix64(key + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull);
	double u = ((double)(h >> 11) + 0.5) * 0x1.0p-53;

	return __dadd_rn(__dmul_rn((double)v, inv), -log(-log(u)));
}

/* The top_p weight of a tempered logit (kernels/sample.h). */
__device__ __forceinline__ long long sf_weight(float t, float tmax)
{
	return t == -INFINITY ? 0 : __double2ll_rn(exp((double)__fsub_rn(t, tmax)) * 0x1.0p40);
}

__global__ void __launch_bounds__(SF_THREADS) k_sf_prep(sf_args a)
{
	__shared__ sf_smem sm;
	__shared__ float s_tmax;
	int64_t m = a.m0 + blockIdx.x;
	const vd_sample_row r = a.rows[m];
	const float *p;
	int32_t n = a.n, s = a.sslot[m];
	float tmax = -INFINITY;
	double inv;
	sf_best best = { -INFINITY, -1 };
	bool minp = r.min_p_log > -INFINITY;

	if (a.hslot[m] >= 0) {
		float *w = a.pen + (int64_t)a.hslot[m] * n;
		const float *xr = a.x + m * a.rs;
		bool rep = r.repetition_penalty != 1.0f && r.repetition_penalty > 0.0f;
		bool freq = r.frequency_penalty != 0.0f || r.presence_penalty != 0.0f;

		for (int32_t i = threadIdx.x; i < n; i += blockDim.x)
			w[i] = xr[i];
		__syncthreads();
		/* each token at most once per row (ops.h): no two threads meet */
		for (int32_t e = threadIdx.x; e < r.n_hist; e += blockDim.x) {
			vd_sample_hist h = a.hist[r.hist_off + e];
			float v = w[h.token];

			if (h.flags & VD_HIST_BANNED) {
				w[h.token] = -INFINITY;
				continue;
			}
			if (rep && (h.flags & VD_HIST_SEEN))
				v = v > 0.0f ? __fdiv_rn(v, r.repetition_penalty)
					     : __fmul_rn(v, r.repetition_penalty);
			if (freq && h.count > 0.0f)
				v = __fsub_rn(v, __fadd_rn(__fmul_rn(r.frequency_penalty, h.count),
							   r.presence_penalty));
			w[h.token] = v;
		}
		__syncthreads();
	}
	p = sf_row(a, m);
	if (r.temperature < 1e-5f) {
		/* greedy: the first maximum of the penalised row */
		for (int32_t i = threadIdx.x; i < n; i += blockDim.x)
			best = sf_best_op()(best, sf_best{ (double)p[i], i });
		best = sf_best_reduce(sm.best).Reduce(best, sf_best_op());
		if (threadIdx.x == 0)
			a.picks[m] = best.i < 0 ? 0 : best.i;
		return;
	}
	for (int32_t i = threadIdx.x; i < n; i += blockDim.x)
		tmax = sf_max_op()(tmax, __fdiv_rn(p[i], r.temperature));
	tmax = sf_float_reduce(sm.f).Reduce(tmax, sf_max_op());
	if (threadIdx.x == 0) {
		s_tmax = tmax;
		a.tmax[m] = tmax;
	}
	__syncthreads();
	tmax = s_tmax;
	inv = 1.0 / (double)r.temperature;
	if (s >= 0) {
		/* keys for the sort: the tempered logit, -inf when min_p drops it;
		 * -0 made +0, which the radix order would put after +0 */
		float *k = a.keys + (int64_t)s * n;
		int32_t *id = a.ids + (int64_t)s * n;

		for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
			float t = __fdiv_rn(p[i], r.temperature);

			if (minp && __fsub_rn(t, tmax) < r.min_p_log)
				t = -INFINITY;
			k[i] = __fadd_rn(t, 0.0f);
			id[i] = i;
		}
		return;
	}
	for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
		float t = __fdiv_rn(p[i], r.temperature);

		if (t == -INFINITY || (minp && __fsub_rn(t, tmax) < r.min_p_log))
			continue;
		best = sf_best_op()(best, sf_best{ sf_score(p[i], inv, r.key, i), i });
	}
	best = sf_best_reduce(sm.best).Reduce(best, sf_best_op());
	if (threadIdx.x == 0)
		a.picks[m] = best.i < 0 ? 0 : best.i;
}

/* Plain rows (no history, no min_p, no sort) of a chunk with few rows:
 * each row split over gridDim.y blocks, each the best of its columns
 * (greedy: the first maximum; drawn: the Gumbel-max score), then
 * k_sf_pick folds the splits. Splitting keeps the GPU busy when a step has
 * one or a few rows over a 152k vocabulary. */
__global__ void __launch_bounds__(SF_THREADS) k_sf_split(sf_args a, sf_best *part)
{
	__shared__ sf_smem sm;
	int64_t m = a.m0 + blockIdx.x;
	const vd_sample_row r = a.rows[m];
	const float *p = a.x + m * a.rs;
	int32_t n = a.n, per = (n + gridDim.y - 1) / gridDim.y;
	int32_t c0 = blockIdx.y * per, c1 = c0 + per < n ? c0 + per : n;
	bool greedy = r.temperature < 1e-5f;
	double inv = greedy ? 0.0 : 1.0 / (double)r.temperature;
	sf_best best = { -INFINITY, -1 };

	for (int32_t i = c0 + threadIdx.x; i < c1; i += blockDim.x) {
		if (greedy) {
			best = sf_best_op()(best, sf_best{ (double)p[i], i });
		} else if (__fdiv_rn(p[i], r.temperature) != -INFINITY) {
			best = sf_best_op()(best, sf_best{ sf_score(p[i], inv, r.key, i), i });
		}
	}
	best = sf_best_reduce(sm.best).Reduce(best, sf_best_op());
	if (threadIdx.x == 0)
		part[blockIdx.x * gridDim.y + blockIdx.y] = best;
}

__global__ void k_sf_pick(sf_args a, const sf_best *part, int splits)
{
	int64_t m = a.m0 + blockIdx.x;
	sf_best best = { -INFINITY, -1 };

	if (threadIdx.x != 0)
		return;
	for (int j = 0; j < splits; j++)
		best = sf_best_op()(best, part[blockIdx.x * splits + j]);
	a.picks[m] = best.i < 0 ? 0 : best.i;
}

__global__ void __launch_bounds__(SF_THREADS) k_sf_filter(sf_args a)
{
	__shared__ sf_smem sm;
	__shared__ long long s_total;
	__shared__ int s_found;
	int32_t s = blockIdx.x, n = a.n;
	int64_t m = a.smap[a.s0 + s];
	const vd_sample_row r = a.rows[m];
	const float *k = a.skeys + (int64_t)s * n;
	const int32_t *id = a.sids + (int64_t)s * n;
	const float *p = sf_row(a, m);
	float tmax = a.tmax[m];
	int32_t keep = r.top_k > 0 && r.top_k < n ? r.top_k : n;
	double inv = 1.0 / (double)r.temperature;
	sf_best best = { -INFINITY, -1 };

	if (r.top_p > 0.0f && r.top_p < 1.0f) {
		long long total = 0, carry = 0;

		for (int32_t j = threadIdx.x; j < keep; j += blockDim.x)
			total += sf_weight(k[j], tmax);
		total = sf_ll_reduce(sm.ll).Sum(total);
		if (threadIdx.x == 0) {
			s_total = total;
			s_found = INT32_MAX;
		}
		__syncthreads();
		total = s_total;
		/* the shortest prefix whose mass reaches top_p: prefix sums chunk
		 * by chunk until one reaches it */
		for (int32_t base = 0; total > 0 && base < keep; base += blockDim.x) {
			int32_t j = base + (int32_t)threadIdx.x;
			long long w = j < keep ? sf_weight(k[j], tmax) : 0, incl, agg;

			__syncthreads();
			sf_ll_scan(sm.scan).InclusiveSum(w, incl, agg);
			incl += carry;
			carry += agg;
			if (j < keep && (double)incl / (double)total >= (double)r.top_p)
				atomicMin(&s_found, j);
			__syncthreads();
			if (s_found != INT32_MAX)
				break;
		}
		if (total > 0 && s_found != INT32_MAX)
			keep = s_found + 1;
	}
	for (int32_t j = threadIdx.x; j < keep; j += blockDim.x) {
		int32_t i;

		if (k[j] == -INFINITY)
			continue;
		i = id[j];
		best = sf_best_op()(best, sf_best{ sf_score(p[i], inv, r.key, i), i });
	}
	best = sf_best_reduce(sm.best).Reduce(best, sf_best_op());
	if (threadIdx.x == 0)
		a.picks[m] = best.i < 0 ? 0 : best.i;
}

__global__ void __launch_bounds__(SF_THREADS) k_sf_logprobs(sf_args a)
{
	__shared__ sf_smem sm;
	__shared__ float s_mx;
	__shared__ sf_best s_pick;
	int64_t m = a.m0 + blockIdx.x;
	int32_t n = a.n, kk = a.rows[m].logprobs, chosen = a.picks[m];
	const float *x = a.x + m * a.rs;
	float mx = -INFINITY, lse, xc = x[chosen];
	double sum = 0.0;
	int rank = 0;
	sf_best prev = { 0.0, -1 };

	if (kk < 0)
		return;
	for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
		mx = sf_max_op()(mx, x[i]);
		rank += x[i] > xc;
	}
	mx = sf_float_reduce(sm.f).Reduce(mx, sf_max_op());
	if (threadIdx.x == 0)
		s_mx = mx;
	__syncthreads();
	mx = s_mx;
	rank = sf_int_reduce(sm.i).Sum(rank);
	__syncthreads();
	for (int32_t i = threadIdx.x; i < n; i += blockDim.x)
		sum += exp((double)x[i] - (double)mx);
	sum = sf_double_reduce(sm.d).Sum(sum);
	if (threadIdx.x == 0) {
		lse = __fadd_rn(mx, (float)log(sum));
		a.chosen_lp[m] = __fsub_rn(xc, lse);
		a.chosen_rank[m] = rank + 1;
		s_mx = lse;
	}
	__syncthreads();
	lse = s_mx;
	/* top kk by repeated selection: each the best strictly after the last
	 * in the order (x desc, id asc) */
	for (int j = 0; j < kk; j++) {
		sf_best best = { -INFINITY, -1 };

		for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
			double v = (double)x[i];

			if (prev.i >= 0 && (v > prev.v || (v == prev.v && i <= prev.i)))
				continue;
			best = sf_best_op()(best, sf_best{ v, i });
		}
		__syncthreads();
		best = sf_best_reduce(sm.best).Reduce(best, sf_best_op());
		if (threadIdx.x == 0)
			s_pick = best;
		__syncthreads();
		prev = s_pick;
		if (prev.i < 0)
			break;
		if (threadIdx.x == 0) {
			a.top_ids[m * a.lp_k + j] = prev.i;
			a.top_lps[m * a.lp_k + j] = __fsub_rn(x[prev.i], lse);
		}
	}
}

/* The next bytes of a scratch layout at offset *at: base + *at, or NULL
 * when base is NULL (a pass that only measures the layout). */
static char *sf_take(char *base, size_t *at, size_t bytes)
{
	char *p = base ? base + *at : NULL;

	*at += align_up(bytes > 0 ? bytes : 1, 256);
	return p;
}

#define SF_MAX_SPLITS 64

/* Blocks per row for a chunk of plain rows (k_sf_split), or 1: the chunk
 * then runs on k_sf_prep. Splits fill about two blocks per SM, each over
 * 2,048 columns at least. */
static int sf_splits(const cu_ctx *c, const vd_sample_row *rows, int64_t n, int32_t N)
{
	int64_t want;

	for (int64_t m = 0; m < n; m++) {
		const vd_sample_row *r = &rows[m];
		bool drawn = r->temperature >= 1e-5f;

		if (r->n_hist > 0 || (drawn && (r->min_p_log > -INFINITY ||
						(r->top_k > 0 && r->top_k < N) ||
						(r->top_p > 0.0f && r->top_p < 1.0f))))
			return 1;
	}
	want = (2 * (int64_t)c->num_sms + n - 1) / n;
	if (want > N / 2048)
		want = N / 2048;
	if (want > SF_MAX_SPLITS)
		want = SF_MAX_SPLITS;
	return want > 1 ? (int)want : 1;
}

/* Work-array entries one chunk of rows may use (pen, keys, ids, sorted
 * copies: 16 bytes each), so a large batch over a large vocabulary stays
 * near 128 MiB of scratch. */
#define SF_CHUNK_ENTRIES (8 << 20)

vd_status cu_sample_full(vd_backend *be, const vd_tensor *x, const vd_sample_args *sa)
{
	rv xr;
	char *blob, *d;
	const char *dev;
	int64_t M, R, S = 0, Smax = 0;
	int32_t N, lpk;
	size_t o_hist, o_hslot, o_sslot, o_smap, o_seg, total, sort_bytes = 0;
	int32_t *hslot, *sslot, *smap, *seg;
	sf_args a;
	float *skeys;
	int32_t *sids;
	void *tmp;
	sf_best *part;
	int splits;
	bool any_lp = false;

	TRY(get_rows(x, "sample_full", "x", &xr));
	if (xr.dt != VD_DTYPE_F32)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda sample_full: x must be f32");
	TRY(vd_check_sample_args(sa, xr.n, xr.c, "cuda sample_full"));
	TRY(check_grid(xr.n, 0, "sample_full"));
	ENTER(be);
	GRAPH_FORBID("sample_full");
	M = xr.n;
	N = (int32_t)xr.c;
	lpk = sa->lp_k;
	if (M == 0)
		return VD_OK;
	R = SF_CHUNK_ENTRIES / N > 0 ? SF_CHUNK_ENTRIES / N : 1;
	if (R > M)
		R = M;
	/* the index blob: rows, history, slots, sort segments */
	o_hist = align_up(sizeof(vd_sample_row) * (size_t)M, 16);
	o_hslot = o_hist + align_up(sizeof(vd_sample_hist) * (size_t)sa->n_hist, 16);
	o_sslot = o_hslot + align_up(sizeof(int32_t) * (size_t)M, 16);
	o_smap = o_sslot + align_up(sizeof(int32_t) * (size_t)M, 16);
	o_seg = o_smap + align_up(sizeof(int32_t) * (size_t)M, 16);
	total = o_seg + sizeof(int32_t) * (size_t)(R + 1);
	TRY(blob_get(c, total, &blob));
	memcpy(blob, sa->rows, sizeof(vd_sample_row) * (size_t)M);
	if (sa->n_hist > 0)
		memcpy(blob + o_hist, sa->hist, sizeof(vd_sample_hist) * (size_t)sa->n_hist);
	hslot = (int32_t *)(blob + o_hslot);
	sslot = (int32_t *)(blob + o_sslot);
	smap = (int32_t *)(blob + o_smap);
	seg = (int32_t *)(blob + o_seg);
	for (int64_t m0 = 0; m0 < M; m0 += R) {
		int32_t h = 0, s = 0;

		for (int64_t m = m0; m < M && m < m0 + R; m++) {
			const vd_sample_row *r = &sa->rows[m];
			bool drawn = r->temperature >= 1e-5f;

			hslot[m] = r->n_hist > 0 ? h++ : -1;
			sslot[m] = -1;
			if (drawn && ((r->top_k > 0 && r->top_k < N) ||
				      (r->top_p > 0.0f && r->top_p < 1.0f))) {
				sslot[m] = s++;
				smap[S++] = (int32_t)m;
			}
			any_lp |= r->logprobs >= 0;
		}
		Smax = s > Smax ? s : Smax;
	}
	for (int64_t s = 0; s <= R; s++)
		seg[s] = (int32_t)(s * N);
	TRY(put_index(c, IDX_SAMPLE, total, &dev));
	if (Smax > 0)
		CUDA_TRY(cub::DeviceSegmentedRadixSort::SortPairsDescending(
			NULL, sort_bytes, (const float *)NULL, (float *)NULL, (const int32_t *)NULL,
			(int32_t *)NULL, (int)(Smax * N), (int)Smax, (const int32_t *)NULL,
			(const int32_t *)NULL, 0, 32, c->stream));
	memset(&a, 0, sizeof(a));
	a.rows = (const vd_sample_row *)dev;
	a.hist = (const vd_sample_hist *)(dev + o_hist);
	a.hslot = (const int32_t *)(dev + o_hslot);
	a.sslot = (const int32_t *)(dev + o_sslot);
	a.smap = (const int32_t *)(dev + o_smap);
	a.x = (const float *)xr.p;
	a.rs = xr.rs;
	a.n = N;
	a.lp_k = lpk;
	/* scratch: outputs (one copy back each), then one chunk's work arrays;
	 * the first pass measures the layout, the second lays it on d */
	d = NULL;
	for (int pass = 0; pass < 2; pass++) {
		size_t at = 0;

		a.picks = (int32_t *)sf_take(d, &at, sizeof(int32_t) * (size_t)M);
		a.chosen_lp = (float *)sf_take(d, &at, sizeof(float) * (size_t)M);
		a.chosen_rank = (int32_t *)sf_take(d, &at, sizeof(int32_t) * (size_t)M);
		a.top_ids = (int32_t *)sf_take(d, &at, sizeof(int32_t) * (size_t)(M * lpk));
		a.top_lps = (float *)sf_take(d, &at, sizeof(float) * (size_t)(M * lpk));
		a.tmax = (float *)sf_take(d, &at, sizeof(float) * (size_t)M);
		a.pen = (float *)sf_take(d, &at, sizeof(float) * (size_t)(R * N));
		a.keys = (float *)sf_take(d, &at, sizeof(float) * (size_t)(Smax * N));
		skeys = (float *)sf_take(d, &at, sizeof(float) * (size_t)(Smax * N));
		a.ids = (int32_t *)sf_take(d, &at, sizeof(int32_t) * (size_t)(Smax * N));
		sids = (int32_t *)sf_take(d, &at, sizeof(int32_t) * (size_t)(Smax * N));
		tmp = sf_take(d, &at, sort_bytes);
		part = (sf_best *)sf_take(d, &at, sizeof(sf_best) * (size_t)(R * SF_MAX_SPLITS));
		if (pass == 0)
			TRY(scratch(c, at, (void **)&d));
	}
	a.skeys = skeys;
	a.sids = sids;
	/* chunk by chunk: the penalised copies and sort keys of a chunk are
	 * used up before the next chunk writes them */
	for (int64_t m0 = 0, s0 = 0; m0 < M; m0 += R) {
		int64_t rows = M - m0 < R ? M - m0 : R, ns = 0;

		while (s0 + ns < S && smap[s0 + ns] < m0 + rows)
			ns++;
		a.m0 = m0;
		a.s0 = (int32_t)s0;
		splits = sf_splits(c, sa->rows + m0, rows, N);
		if (splits > 1) {
			k_sf_split<<<dim3((unsigned)rows, (unsigned)splits), SF_THREADS, 0, c->stream>>>(
				a, part);
			LAUNCHED();
			k_sf_pick<<<(unsigned)rows, 32, 0, c->stream>>>(a, part, splits);
		} else {
			k_sf_prep<<<(unsigned)rows, SF_THREADS, 0, c->stream>>>(a);
		}
		LAUNCHED();
		if (ns > 0) {
			size_t tb = sort_bytes;

			CUDA_TRY(cub::DeviceSegmentedRadixSort::SortPairsDescending(
				tmp, tb, a.keys, skeys, a.ids, sids, (int)(ns * N), (int)ns,
				(const int32_t *)(dev + o_seg), (const int32_t *)(dev + o_seg) + 1, 0,
				32, c->stream));
			k_sf_filter<<<(unsigned)ns, SF_THREADS, 0, c->stream>>>(a);
			LAUNCHED();
		}
		if (any_lp) {
			k_sf_logprobs<<<(unsigned)rows, SF_THREADS, 0, c->stream>>>(a);
			LAUNCHED();
		}
		s0 += ns;
	}
	CUDA_TRY(cudaMemcpyAsync(sa->picks, a.picks, sizeof(int32_t) * (size_t)M,
				 cudaMemcpyDeviceToHost, c->stream));
	if (any_lp) {
		CUDA_TRY(cudaMemcpyAsync(sa->chosen_lp, a.chosen_lp, sizeof(float) * (size_t)M,
					 cudaMemcpyDeviceToHost, c->stream));
		CUDA_TRY(cudaMemcpyAsync(sa->chosen_rank, a.chosen_rank, sizeof(int32_t) * (size_t)M,
					 cudaMemcpyDeviceToHost, c->stream));
		if (lpk > 0) {
			CUDA_TRY(cudaMemcpyAsync(sa->top_ids, a.top_ids,
						 sizeof(int32_t) * (size_t)(M * lpk),
						 cudaMemcpyDeviceToHost, c->stream));
			CUDA_TRY(cudaMemcpyAsync(sa->top_lps, a.top_lps,
						 sizeof(float) * (size_t)(M * lpk),
						 cudaMemcpyDeviceToHost, c->stream));
		}
	}
	CUDA_TRY(cudaStreamSynchronize(c->stream));
	return op_done(c, "sample_full");
}
