/* The elementwise, norm, activation, rope and row ops of the CUDA backend
 * (vllmd/ops.h): memory-bound kernels, vectorised to 16-byte accesses where
 * the views allow. */
#include "kernels/cuda/common.cuh"

/* ------------------------------------------------------------ elementwise and norms */

/* y = a + b over row views of any float dtypes; y may alias a or b. */
__global__ void k_add(rv a, rv b, rv y)
{
	int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;

	if (j >= y.c)
		return;
	for (int64_t m = blockIdx.y; m < y.n; m += gridDim.y)
		stf(y.p, y.dt, m * y.rs + j, ldf(a.p, a.dt, m * a.rs + j) + ldf(b.p, b.dt, m * b.rs + j));
}

/* Vectorised forms of the elementwise kernels: 8 elements (16 bytes) per
 * thread, for views of one 16-bit dtype with 16-byte aligned rows whose
 * lengths and strides are multiples of 8 (every activation of the models). */
static bool vec8_ok(const rv *v, int dt)
{
	return v->dt == dt && dt != VD_DTYPE_F32 && !(v->c & 7) && !(v->rs & 7) &&
	       !((uintptr_t)v->p & 15);
}

static unsigned vec8_blocks(const cu_ctx *c, int64_t total)
{
	int64_t b = (total + 255) / 256, cap = 16LL * c->num_sms;

	return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}

template <typename T>
__global__ void k_add8(rv a, rv b, rv y)
{
	int64_t c8 = y.c / 8, total = y.n * c8;

	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t m = i / c8, j = i % c8 * 8;
		uint4 ua = *(const uint4 *)((const T *)a.p + m * a.rs + j);
		uint4 ub = *(const uint4 *)((const T *)b.p + m * b.rs + j);
		float fa[8], fb[8];

		unpack8(ua, fa, (const T *)NULL);
		unpack8(ub, fb, (const T *)NULL);
#pragma unroll
		for (int e = 0; e < 8; e++)
			fa[e] += fb[e];
		*(uint4 *)((T *)y.p + m * y.rs + j) = pack8(fa, (const T *)NULL);
	}
}

vd_status cu_add(vd_backend *be, const vd_tensor *a, const vd_tensor *b, vd_tensor *y)
{
	rv ar, br, yr;

	TRY(get_rows(a, "add", "a", &ar));
	TRY(get_rows(b, "add", "b", &br));
	TRY(get_rows(y, "add", "y", &yr));
	TRY(same_rows(&ar, &br, "add", "a", "b"));
	TRY(same_rows(&ar, &yr, "add", "a", "y"));
	TRY(check_grid(yr.n, yr.c, "add"));
	ENTER(be);
	GRAPH_OP("add", ar, br, yr);
	GRAPH_SKIP();
	if (yr.n == 0 || yr.c == 0)
		return VD_OK;
	if (vec8_ok(&ar, yr.dt) && vec8_ok(&br, yr.dt) && vec8_ok(&yr, yr.dt)) {
		unsigned nb = vec8_blocks(c, yr.n * (yr.c / 8));

		if (yr.dt == VD_DTYPE_BF16)
			k_add8<__nv_bfloat16><<<nb, 256, 0, c->stream>>>(ar, br, yr);
		else
			k_add8<__half><<<nb, 256, 0, c->stream>>>(ar, br, yr);
	} else {
		k_add<<<grid_rc(yr.n, yr.c), 256, 0, c->stream>>>(ar, br, yr);
	}
	LAUNCHED();
	return op_done(c, "add");
}

/* Norm kernels: one block per row. Each thread loads NORM_BATCH elements
 * (j0 + k * blockDim.x) before using any, so their memory latencies
 * overlap; the row is kept in shared memory (f32) for the later passes. */
#define NORM_BATCH 4

static unsigned norm_threads(int64_t c)
{
	int64_t t = ((c + NORM_BATCH - 1) / NORM_BATCH + 31) / 32 * 32;

	return (unsigned)(t < 128 ? 128 : t > 1024 ? 1024 : t);
}

/* v rounded to dtype dt and back: what a store of v to dt keeps. */
__device__ __forceinline__ float round_as(int dt, float v)
{
	if (dt == VD_DTYPE_BF16)
		return __bfloat162float(__float2bfloat16_rn(v));
	if (dt == VD_DTYPE_F16)
		return __half2float(__float2half_rn(v));
	return v;
}

/* y = w * (x / rms(x)), as HF RMSNorm in f32. With r.p set (add_rmsnorm),
 * r += x first and the norm is of r as stored, so a bf16 residual is
 * normalised exactly as it was rounded. y may alias x: x is read before
 * the barrier in block_sum that precedes y's writes. */
__global__ void __launch_bounds__(1024) k_rmsnorm(rv x, rv r, rv w, rv y, float eps)
{
	extern __shared__ float row[]; /* (c) */
	__shared__ float sh[32];
	int64_t m = blockIdx.x, c = x.c, step = (int64_t)blockDim.x * NORM_BATCH;
	float ss = 0.0f, inv;

	for (int64_t j0 = threadIdx.x; j0 < c; j0 += step) {
		float a[NORM_BATCH], b[NORM_BATCH];

#pragma unroll
		for (int k = 0; k < NORM_BATCH; k++) {
			int64_t j = j0 + (int64_t)k * blockDim.x;

			a[k] = j < c ? ldf(x.p, x.dt, m * x.rs + j) : 0.0f;
			b[k] = j < c && r.p ? ldf(r.p, r.dt, m * r.rs + j) : 0.0f;
		}
#pragma unroll
		for (int k = 0; k < NORM_BATCH; k++) {
			int64_t j = j0 + (int64_t)k * blockDim.x;
			float v = a[k];

			if (j >= c)
				continue;
			if (r.p) {
				v = round_as(r.dt, a[k] + b[k]);
				stf(r.p, r.dt, m * r.rs + j, v);
			}
			row[j] = v;
			ss += v * v;
		}
	}
	ss = block_sum(ss, sh);
	inv = 1.0f / sqrtf(ss / (float)c + eps);
	for (int64_t j0 = threadIdx.x; j0 < c; j0 += step) {
		float wv[NORM_BATCH];

#pragma unroll
		for (int k = 0; k < NORM_BATCH; k++) {
			int64_t j = j0 + (int64_t)k * blockDim.x;

			wv[k] = j < c ? ldf(w.p, w.dt, j) : 0.0f;
		}
#pragma unroll
		for (int k = 0; k < NORM_BATCH; k++) {
			int64_t j = j0 + (int64_t)k * blockDim.x;

			if (j < c)
				stf(y.p, y.dt, m * y.rs + j, wv[k] * (row[j] * inv));
		}
	}
}

/* y = (x - mean) / sqrt(var + eps) * w + b: two-pass biased variance over
 * the row in shared memory, as torch. y may alias x. */
__global__ void __launch_bounds__(1024) k_layernorm(rv x, rv w, rv b, rv y, float eps)
{
	extern __shared__ float row[]; /* (c) */
	__shared__ float sh[32];
	int64_t m = blockIdx.x, c = x.c, step = (int64_t)blockDim.x * NORM_BATCH;
	float sum = 0.0f, var = 0.0f, mean, rstd;

	for (int64_t j0 = threadIdx.x; j0 < c; j0 += step) {
		float a[NORM_BATCH];

#pragma unroll
		for (int k = 0; k < NORM_BATCH; k++) {
			int64_t j = j0 + (int64_t)k * blockDim.x;

			a[k] = j < c ? ldf(x.p, x.dt, m * x.rs + j) : 0.0f;
		}
#pragma unroll
		for (int k = 0; k < NORM_BATCH; k++) {
			int64_t j = j0 + (int64_t)k * blockDim.x;

			if (j < c)
				row[j] = a[k];
			sum += a[k];
		}
	}
	mean = block_sum(sum, sh) / (float)c;
	for (int64_t j = threadIdx.x; j < c; j += blockDim.x)
		var += (row[j] - mean) * (row[j] - mean);
	rstd = 1.0f / sqrtf(block_sum(var, sh) / (float)c + eps);
	for (int64_t j0 = threadIdx.x; j0 < c; j0 += step) {
		float wv[NORM_BATCH], bv[NORM_BATCH];

#pragma unroll
		for (int k = 0; k < NORM_BATCH; k++) {
			int64_t j = j0 + (int64_t)k * blockDim.x;

			wv[k] = j < c ? ldf(w.p, w.dt, j) : 0.0f;
			bv[k] = j < c && b.p ? ldf(b.p, b.dt, j) : 0.0f;
		}
#pragma unroll
		for (int k = 0; k < NORM_BATCH; k++) {
			int64_t j = j0 + (int64_t)k * blockDim.x;

			if (j < c)
				stf(y.p, y.dt, m * y.rs + j, (row[j] - mean) * rstd * wv[k] + bv[k]);
		}
	}
}

/* Warp-per-row forms of the norms for rows of up to NW_MAX_C elements in
 * one 16-bit dtype (vec8_ok views, packed weights): 8 rows per block, each
 * lane holds up to NW_MAX_C / 256 chunks of 8 elements in registers, and
 * the reductions are shuffles. Same arithmetic as the block kernels above. */
#define NW_MAX_C 2048
#define NW_ROWS 8
#define NW_CHUNKS (NW_MAX_C / 256)

template <typename T>
__global__ void __launch_bounds__(NW_ROWS * 32) k_rmsnorm_w(rv x, rv r, rv w, rv y, float eps)
{
	int lane = threadIdx.x & 31, c8 = (int)(x.c / 8);
	int64_t m = (int64_t)blockIdx.x * NW_ROWS + (threadIdx.x >> 5);
	float v[NW_CHUNKS][8], ss = 0.0f, inv;

	if (m >= x.n)
		return;
#pragma unroll
	for (int u = 0; u < NW_CHUNKS; u++) {
		int i = lane + 32 * u;

		if (i >= c8)
			break;
		unpack8(*(const uint4 *)((const T *)x.p + m * x.rs + i * 8), v[u], (const T *)NULL);
		if (r.p) {
			float a[8];
			T *rp = (T *)r.p + m * r.rs + i * 8;

			unpack8(*(const uint4 *)rp, a, (const T *)NULL);
#pragma unroll
			for (int e = 0; e < 8; e++)
				v[u][e] = round_as(r.dt, v[u][e] + a[e]);
			*(uint4 *)rp = pack8(v[u], (const T *)NULL);
		}
#pragma unroll
		for (int e = 0; e < 8; e++)
			ss += v[u][e] * v[u][e];
	}
	inv = 1.0f / sqrtf(warp_sum(ss) / (float)x.c + eps);
#pragma unroll
	for (int u = 0; u < NW_CHUNKS; u++) {
		int i = lane + 32 * u;
		float wv[8], o[8];

		if (i >= c8)
			break;
		unpack8(*(const uint4 *)((const T *)w.p + i * 8), wv, (const T *)NULL);
#pragma unroll
		for (int e = 0; e < 8; e++)
			o[e] = wv[e] * (v[u][e] * inv);
		*(uint4 *)((T *)y.p + m * y.rs + i * 8) = pack8(o, (const T *)NULL);
	}
}

template <typename T>
__global__ void __launch_bounds__(NW_ROWS * 32) k_layernorm_w(rv x, rv w, rv b, rv y, float eps)
{
	int lane = threadIdx.x & 31, c8 = (int)(x.c / 8);
	int64_t m = (int64_t)blockIdx.x * NW_ROWS + (threadIdx.x >> 5);
	float v[NW_CHUNKS][8], sum = 0.0f, var = 0.0f, mean, rstd;

	if (m >= x.n)
		return;
#pragma unroll
	for (int u = 0; u < NW_CHUNKS; u++) {
		int i = lane + 32 * u;

		if (i >= c8)
			break;
		unpack8(*(const uint4 *)((const T *)x.p + m * x.rs + i * 8), v[u], (const T *)NULL);
#pragma unroll
		for (int e = 0; e < 8; e++)
			sum += v[u][e];
	}
	mean = warp_sum(sum) / (float)x.c;
#pragma unroll
	for (int u = 0; u < NW_CHUNKS; u++) {
		if (lane + 32 * u >= c8)
			break;
#pragma unroll
		for (int e = 0; e < 8; e++)
			var += (v[u][e] - mean) * (v[u][e] - mean);
	}
	rstd = 1.0f / sqrtf(warp_sum(var) / (float)x.c + eps);
#pragma unroll
	for (int u = 0; u < NW_CHUNKS; u++) {
		int i = lane + 32 * u;
		float wv[8], bv[8], o[8];

		if (i >= c8)
			break;
		unpack8(*(const uint4 *)((const T *)w.p + i * 8), wv, (const T *)NULL);
		if (b.p)
			unpack8(*(const uint4 *)((const T *)b.p + i * 8), bv, (const T *)NULL);
#pragma unroll
		for (int e = 0; e < 8; e++)
			o[e] = (v[u][e] - mean) * rstd * wv[e] + (b.p ? bv[e] : 0.0f);
		*(uint4 *)((T *)y.p + m * y.rs + i * 8) = pack8(o, (const T *)NULL);
	}
}

/* Whether the warp-per-row kernels take these views (b, r may be absent). */
static bool norm_w_fits(const rv *x, const rv *y, const rv *w, const rv *b, const rv *r)
{
	int dt = x->dt;

	return x->c <= NW_MAX_C && vec8_ok(x, dt) && vec8_ok(y, dt) && vec8_ok(w, dt) &&
	       (!b->p || vec8_ok(b, dt)) && (!r->p || vec8_ok(r, dt));
}

/* Shared memory for a row of c floats; over 48 KiB needs an opt-in. */
static vd_status norm_smem(const void *kernel, int64_t c, const char *op, size_t *bytes)
{
	*bytes = sizeof(float) * (size_t)c;
	if (*bytes > 227u * 1024)
		return vd_errorf(VD_ERR_UNSUPPORTED, "cuda %s: rows of %lld elements are too wide", op,
				 (long long)c);
	if (*bytes > 48u * 1024)
		CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
					      (int)*bytes));
	return VD_OK;
}

vd_status cu_rmsnorm(vd_backend *be, const vd_tensor *x, const vd_tensor *w, float eps,
			    vd_tensor *y)
{
	rv xr, yr, wr, none = { NULL, 0, 0, 0, 0 };
	size_t smem;

	TRY(get_rows(x, "rmsnorm", "x", &xr));
	TRY(get_rows(y, "rmsnorm", "y", &yr));
	TRY(same_rows(&xr, &yr, "rmsnorm", "x", "y"));
	TRY(get_vec(w, xr.c, "rmsnorm", "w", &wr));
	TRY(check_grid(xr.n, 0, "rmsnorm"));
	ENTER(be);
	GRAPH_OP("rmsnorm", xr, yr, wr, eps);
	GRAPH_SKIP();
	if (xr.n == 0)
		return VD_OK;
	if (norm_w_fits(&xr, &yr, &wr, &none, &none)) {
		unsigned nb = (unsigned)((xr.n + NW_ROWS - 1) / NW_ROWS);

		if (xr.dt == VD_DTYPE_BF16)
			k_rmsnorm_w<__nv_bfloat16><<<nb, NW_ROWS * 32, 0, c->stream>>>(xr, none, wr, yr, eps);
		else
			k_rmsnorm_w<__half><<<nb, NW_ROWS * 32, 0, c->stream>>>(xr, none, wr, yr, eps);
		LAUNCHED();
		return op_done(c, "rmsnorm");
	}
	TRY(norm_smem((const void *)k_rmsnorm, xr.c, "rmsnorm", &smem));
	k_rmsnorm<<<(unsigned)xr.n, norm_threads(xr.c), smem, c->stream>>>(xr, none, wr, yr, eps);
	LAUNCHED();
	return op_done(c, "rmsnorm");
}

vd_status cu_add_rmsnorm(vd_backend *be, vd_tensor *r, const vd_tensor *x,
				const vd_tensor *w, float eps, vd_tensor *y)
{
	rv rr, xr, yr, wr, none = { NULL, 0, 0, 0, 0 };
	size_t smem;

	TRY(get_rows(r, "add_rmsnorm", "r", &rr));
	TRY(get_rows(x, "add_rmsnorm", "x", &xr));
	TRY(get_rows(y, "add_rmsnorm", "y", &yr));
	TRY(same_rows(&rr, &xr, "add_rmsnorm", "r", "x"));
	TRY(same_rows(&rr, &yr, "add_rmsnorm", "r", "y"));
	TRY(get_vec(w, xr.c, "add_rmsnorm", "w", &wr));
	TRY(check_grid(xr.n, 0, "add_rmsnorm"));
	ENTER(be);
	GRAPH_OP("add_rmsnorm", rr, xr, yr, wr, eps);
	GRAPH_SKIP();
	if (xr.n == 0)
		return VD_OK;
	if (norm_w_fits(&xr, &yr, &wr, &none, &rr)) {
		unsigned nb = (unsigned)((xr.n + NW_ROWS - 1) / NW_ROWS);

		if (xr.dt == VD_DTYPE_BF16)
			k_rmsnorm_w<__nv_bfloat16><<<nb, NW_ROWS * 32, 0, c->stream>>>(xr, rr, wr, yr, eps);
		else
			k_rmsnorm_w<__half><<<nb, NW_ROWS * 32, 0, c->stream>>>(xr, rr, wr, yr, eps);
		LAUNCHED();
		return op_done(c, "add_rmsnorm");
	}
	TRY(norm_smem((const void *)k_rmsnorm, xr.c, "add_rmsnorm", &smem));
	k_rmsnorm<<<(unsigned)xr.n, norm_threads(xr.c), smem, c->stream>>>(xr, rr, wr, yr, eps);
	LAUNCHED();
	return op_done(c, "add_rmsnorm");
}

vd_status cu_layernorm(vd_backend *be, const vd_tensor *x, const vd_tensor *w,
			      const vd_tensor *b, float eps, vd_tensor *y)
{
	rv xr, yr, wr, br = { NULL, 0, 0, 0, 0 };
	size_t smem;

	TRY(get_rows(x, "layernorm", "x", &xr));
	TRY(get_rows(y, "layernorm", "y", &yr));
	TRY(same_rows(&xr, &yr, "layernorm", "x", "y"));
	TRY(get_vec(w, xr.c, "layernorm", "w", &wr));
	if (b)
		TRY(get_vec(b, xr.c, "layernorm", "b", &br));
	TRY(check_grid(xr.n, 0, "layernorm"));
	ENTER(be);
	GRAPH_OP("layernorm", xr, yr, wr, br, eps);
	GRAPH_SKIP();
	if (xr.n == 0)
		return VD_OK;
	if (norm_w_fits(&xr, &yr, &wr, &br, &br)) {
		unsigned nb = (unsigned)((xr.n + NW_ROWS - 1) / NW_ROWS);

		if (xr.dt == VD_DTYPE_BF16)
			k_layernorm_w<__nv_bfloat16><<<nb, NW_ROWS * 32, 0, c->stream>>>(xr, wr, br, yr, eps);
		else
			k_layernorm_w<__half><<<nb, NW_ROWS * 32, 0, c->stream>>>(xr, wr, br, yr, eps);
		LAUNCHED();
		return op_done(c, "layernorm");
	}
	TRY(norm_smem((const void *)k_layernorm, xr.c, "layernorm", &smem));
	k_layernorm<<<(unsigned)xr.n, norm_threads(xr.c), smem, c->stream>>>(xr, wr, br, yr, eps);
	LAUNCHED();
	return op_done(c, "layernorm");
}

__device__ __forceinline__ float act_one(int kind, float x)
{
	switch (kind) {
	case VD_ACT_GELU:
		return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
	case VD_ACT_GELU_TANH:
		return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
	case VD_ACT_QUICK_GELU:
		return x / (1.0f + expf(-1.702f * x));
	default:
		return x / (1.0f + expf(-x));
	}
}

/* mode 0: y = act(x); 1: y = silu(x[:, :F]) * x[:, F:]; 2: y = x * s. */
__global__ void k_pointwise(rv x, rv y, int mode, int kind, float s)
{
	int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;

	if (j >= y.c)
		return;
	for (int64_t m = blockIdx.y; m < y.n; m += gridDim.y) {
		float v = ldf(x.p, x.dt, m * x.rs + j);

		if (mode == 0)
			v = act_one(kind, v);
		else if (mode == 1)
			v = act_one(VD_ACT_SILU, v) * ldf(x.p, x.dt, m * x.rs + y.c + j);
		else
			v *= s;
		stf(y.p, y.dt, m * y.rs + j, v);
	}
}

/* k_pointwise on 8 elements per thread (see vec8_ok); silu_mul reads the
 * gate at column j and the up projection at y.c + j. */
template <typename T>
__global__ void k_pointwise8(rv x, rv y, int mode, int kind, float s)
{
	int64_t c8 = y.c / 8, total = y.n * c8;

	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t m = i / c8, j = i % c8 * 8;
		float v[8], u[8];

		unpack8(*(const uint4 *)((const T *)x.p + m * x.rs + j), v, (const T *)NULL);
		if (mode == 1)
			unpack8(*(const uint4 *)((const T *)x.p + m * x.rs + y.c + j), u,
				(const T *)NULL);
#pragma unroll
		for (int e = 0; e < 8; e++)
			v[e] = mode == 0 ? act_one(kind, v[e])
			     : mode == 1 ? act_one(VD_ACT_SILU, v[e]) * u[e]
					 : v[e] * s;
		*(uint4 *)((T *)y.p + m * y.rs + j) = pack8(v, (const T *)NULL);
	}
}

static vd_status pointwise(vd_backend *be, const vd_tensor *x, vd_tensor *y, int mode, int kind,
			   float s, const char *op)
{
	rv xr, yr;

	TRY(get_rows(x, op, "x", &xr));
	TRY(get_rows(y, op, "y", &yr));
	if (mode == 1) {
		if (xr.n != yr.n || xr.c != 2 * yr.c)
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "cuda silu_mul: x (%lld, %lld) must be (M, 2F) for y (%lld, %lld)",
					 (long long)xr.n, (long long)xr.c, (long long)yr.n,
					 (long long)yr.c);
	} else {
		TRY(same_rows(&xr, &yr, op, "x", "y"));
	}
	TRY(check_grid(yr.n, yr.c, op));
	ENTER(be);
	GRAPH_OP(op, xr, yr, mode, kind, s);
	GRAPH_SKIP();
	if (yr.n == 0 || yr.c == 0)
		return VD_OK;
	if (vec8_ok(&xr, yr.dt) && vec8_ok(&yr, yr.dt)) {
		unsigned nb = vec8_blocks(c, yr.n * (yr.c / 8));

		if (yr.dt == VD_DTYPE_BF16)
			k_pointwise8<__nv_bfloat16><<<nb, 256, 0, c->stream>>>(xr, yr, mode, kind, s);
		else
			k_pointwise8<__half><<<nb, 256, 0, c->stream>>>(xr, yr, mode, kind, s);
	} else {
		k_pointwise<<<grid_rc(yr.n, yr.c), 256, 0, c->stream>>>(xr, yr, mode, kind, s);
	}
	LAUNCHED();
	return op_done(c, op);
}

vd_status cu_act(vd_backend *be, vd_act kind, const vd_tensor *x, vd_tensor *y)
{
	if (kind != VD_ACT_GELU && kind != VD_ACT_GELU_TANH && kind != VD_ACT_QUICK_GELU &&
	    kind != VD_ACT_SILU)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda act: unknown activation %d", (int)kind);
	return pointwise(be, x, y, 0, kind, 0.0f, "act");
}

vd_status cu_silu_mul(vd_backend *be, const vd_tensor *x, vd_tensor *y)
{
	return pointwise(be, x, y, 1, VD_ACT_SILU, 0.0f, "silu_mul");
}

vd_status cu_scale(vd_backend *be, const vd_tensor *x, float s, vd_tensor *y)
{
	return pointwise(be, x, y, 2, VD_ACT_SILU, s, "scale");
}

/* ------------------------------------------------------------ rope */

/* One block per token: the token's cos/sin (rot/2 of them) into shared
 * memory, then every head's pairs (i, i + rot/2) rotate. */
template <typename T>
__global__ void k_rope(T *x, int64_t ntok, int heads, int64_t st, int64_t sh, int half,
		       const int32_t *pos, const uint8_t *pos_row, const float *inv_freq,
		       const int32_t *table_idx, float mscale)
{
	extern __shared__ float cs[]; /* cos (half) | sin (half) */
	int64_t t = blockIdx.x;
	const float *inv = inv_freq + (int64_t)(table_idx ? table_idx[t] : 0) * half;

	for (int i = threadIdx.x; i < half; i += blockDim.x) {
		int row = pos_row ? pos_row[i] : 0;
		float a = (float)pos[row * ntok + t] * inv[i], sn, co;

		sincosf(a, &sn, &co);
		cs[i] = co * mscale;
		cs[half + i] = sn * mscale;
	}
	__syncthreads();
	for (int j = threadIdx.x; j < heads * half; j += blockDim.x) {
		int h = j / half, i = j % half;
		T *v = x + t * st + h * sh;
		float x1 = to_f(v[i]), x2 = to_f(v[i + half]);

		v[i] = from_f<T>(x1 * cs[i] - x2 * cs[half + i]);
		v[i + half] = from_f<T>(x2 * cs[i] + x1 * cs[half + i]);
	}
}

template <typename T>
static void launch_rope(cu_ctx *c, const hv *x, int half, const int32_t *pos,
			const uint8_t *pos_row, const float *inv, const int32_t *tab, float mscale)
{
	k_rope<T><<<(unsigned)x->t, 128, 2 * half * sizeof(float), c->stream>>>(
		(T *)x->p, x->t, (int)x->h, x->st, x->sh, half, pos, pos_row, inv, tab, mscale);
}

/* x: (T, H, D) view; positions, inv_freq, pos_row and table_idx are host
 * arrays copied as one blob (skipped when the same as the last rope's). */
vd_status cu_rope(vd_backend *be, vd_tensor *x, const int32_t *positions, const vd_rope *r)
{
	hv xh;
	int half, nrows = 1;
	size_t o_pos = 0, o_row, o_inv, o_tab, total;
	char *blob = NULL;
	const char *dev;
	const int32_t *pos, *tab;
	const uint8_t *row;
	const float *inv;

	TRY(get_heads(x, "rope", "x", &xh));
	if (!r || !r->inv_freq || r->rot_dim <= 0 || r->rot_dim % 2 || r->rot_dim > xh.d ||
	    r->n_tables < 1)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda rope: rot_dim must be even in (0, %lld] with >= 1 inv_freq table",
				 (long long)xh.d);
	if (!positions && xh.t > 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda rope: positions is NULL");
	if (r->table_idx)
		for (int64_t t = 0; t < xh.t; t++)
			if (r->table_idx[t] < 0 || r->table_idx[t] >= r->n_tables)
				return vd_errorf(VD_ERR_INVALID_ARG,
						 "cuda rope: table_idx[%lld] = %d outside [0, %d)",
						 (long long)t, r->table_idx[t], r->n_tables);
	if (xh.t > INT32_MAX || xh.h * (r->rot_dim / 2) > INT32_MAX)
		return vd_errorf(VD_ERR_LIMIT, "cuda rope: too many tokens or heads");
	half = r->rot_dim / 2;
	if (r->pos_row)
		for (int i = 0; i < half; i++)
			if (r->pos_row[i] + 1 > nrows)
				nrows = r->pos_row[i] + 1;
	ENTER(be);
	GRAPH_OP("rope", xh, half, nrows, r->n_tables, r->mscale, (int)(r->pos_row != NULL),
		 (int)(r->table_idx != NULL));
	if (xh.t == 0 || xh.h == 0)
		return VD_OK;
	o_row = align_up(o_pos + sizeof(int32_t) * (size_t)nrows * (size_t)xh.t, 16);
	o_inv = align_up(o_row + (size_t)half, 16);
	o_tab = align_up(o_inv + sizeof(float) * (size_t)r->n_tables * (size_t)half, 16);
	total = o_tab + sizeof(int32_t) * (size_t)xh.t;
	TRY(blob_get(c, total, &blob));
	memcpy(blob + o_pos, positions, sizeof(int32_t) * (size_t)nrows * (size_t)xh.t);
	if (r->pos_row)
		memcpy(blob + o_row, r->pos_row, (size_t)half);
	memcpy(blob + o_inv, r->inv_freq, sizeof(float) * (size_t)r->n_tables * (size_t)half);
	if (r->table_idx)
		memcpy(blob + o_tab, r->table_idx, sizeof(int32_t) * (size_t)xh.t);
	TRY(put_index(c, IDX_ROPE, total, &dev));
	GRAPH_SKIP();
	pos = (const int32_t *)(dev + o_pos);
	row = r->pos_row ? (const uint8_t *)(dev + o_row) : NULL;
	inv = (const float *)(dev + o_inv);
	tab = r->table_idx ? (const int32_t *)(dev + o_tab) : NULL;
	if (xh.dt == VD_DTYPE_F32)
		launch_rope<float>(c, &xh, half, pos, row, inv, tab, r->mscale);
	else if (xh.dt == VD_DTYPE_BF16)
		launch_rope<__nv_bfloat16>(c, &xh, half, pos, row, inv, tab, r->mscale);
	else
		launch_rope<__half>(c, &xh, half, pos, row, inv, tab, r->mscale);
	LAUNCHED();
	return op_done(c, "rope");
}

/* ------------------------------------------------------------ rows */

/* dst[didx ? didx[i] : i] = src[sidx ? sidx[i] : i] for i < n rows. */
__global__ void k_rows(rv s, const int32_t *sidx, rv d, const int32_t *didx, int64_t n)
{
	int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;

	if (j >= s.c)
		return;
	for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
		int64_t si = sidx ? sidx[i] : i, di = didx ? didx[i] : i;

		stf(d.p, d.dt, di * d.rs + j, ldf(s.p, s.dt, si * s.rs + j));
	}
}

/* Checks ids on the host (they are host memory) and queues the copy. */
static vd_status copy_rows(vd_backend *be, const rv *s, const rv *d, const int32_t *ids,
			   int64_t n, int64_t limit, bool ids_index_src, const char *op,
			   const char *what)
{
	char *blob = NULL;
	const char *dev;

	if (!ids && n > 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda %s: %s is NULL", op, what);
	for (int64_t i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= limit)
			return vd_errorf(VD_ERR_INVALID_ARG, "cuda %s: %s[%lld] = %d outside [0, %lld)",
					 op, what, (long long)i, ids[i], (long long)limit);
	TRY(check_grid(n, s->c, op));
	ENTER(be);
	if (n == 0 || s->c == 0)
		return VD_OK;
	TRY(blob_get(c, sizeof(int32_t) * (size_t)n, &blob));
	memcpy(blob, ids, sizeof(int32_t) * (size_t)n);
	TRY(put_index(c, IDX_ROWS, sizeof(int32_t) * (size_t)n, &dev));
	GRAPH_OP(op, *s, *d, n, (int)ids_index_src);
	GRAPH_SKIP();
	k_rows<<<grid_rc(n, s->c), 256, 0, c->stream>>>(*s, ids_index_src ? (const int32_t *)dev : NULL,
						       *d, ids_index_src ? NULL : (const int32_t *)dev, n);
	LAUNCHED();
	return op_done(c, op);
}

vd_status cu_embed(vd_backend *be, const vd_tensor *table, const int32_t *ids, int64_t n,
			  vd_tensor *out)
{
	rv t, o;

	TRY(get_rows(table, "embed", "table", &t));
	TRY(get_rows(out, "embed", "out", &o));
	if (n < 0 || o.n != n || o.c != t.c)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda embed: out must be (%lld, %lld)",
				 (long long)n, (long long)t.c);
	return copy_rows(be, &t, &o, ids, n, t.n, true, "embed", "ids");
}

vd_status cu_scatter_rows(vd_backend *be, const vd_tensor *src, const int32_t *rows,
				 int64_t n, vd_tensor *dst)
{
	rv s, d;

	TRY(get_rows(src, "scatter_rows", "src", &s));
	TRY(get_rows(dst, "scatter_rows", "dst", &d));
	if (n < 0 || s.n != n || s.c != d.c)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda scatter_rows: src (%lld, %lld) vs dst columns %lld",
				 (long long)s.n, (long long)s.c, (long long)d.c);
	return copy_rows(be, &s, &d, rows, n, d.n, false, "scatter_rows", "rows");
}

vd_status cu_gather_rows(vd_backend *be, const vd_tensor *src, const int32_t *rows,
				int64_t n, vd_tensor *dst)
{
	rv s, d;

	TRY(get_rows(src, "gather_rows", "src", &s));
	TRY(get_rows(dst, "gather_rows", "dst", &d));
	if (n < 0 || d.n != n || s.c != d.c)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda gather_rows: dst (%lld, %lld) vs src columns %lld",
				 (long long)d.n, (long long)d.c, (long long)s.c);
	return copy_rows(be, &s, &d, rows, n, s.n, true, "gather_rows", "rows");
}

/* out[patch, (c, ky, kx)] = img[c, py*p + ky, px*p + kx], one thread per
 * output element; img (C, H, W) with any strides (dims 1..3 of the sv). */
__global__ void k_im2patch(sv img, rv out, int p, int64_t npw)
{
	int64_t total = out.n * out.c;

	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t pi = i / out.c, col = i % out.c;
		int64_t ch = col / (p * p), ky = col / p % p, kx = col % p;
		int64_t y = pi / npw * p + ky, x = pi % npw * p + kx;

		stf(out.p, out.dt, pi * out.rs + col,
		    ldf(img.p, img.dt, ch * img.stride[1] + y * img.stride[2] + x * img.stride[3]));
	}
}

vd_status launch_im2patch(cu_ctx *c, const sv *img, const rv *out, int p, int64_t npw)
{
	int64_t total = out->n * out->c;

	if (total == 0)
		return VD_OK;
	k_im2patch<<<(unsigned)((total + 255) / 256 < 65536 ? (total + 255) / 256 : 65536), 256, 0,
		     c->stream>>>(*img, *out, p, npw);
	LAUNCHED();
	return VD_OK;
}

/* img: (C, H, W), any strides and float dtype; trailing pixels that do
 * not fill a patch are dropped, as a stride-p convolution does. */
vd_status cu_im2patch(vd_backend *be, const vd_tensor *img, int p, vd_tensor *out)
{
	rv o;
	int64_t nph, npw, total;
	sv s;

	TRY(check_t(img, "im2patch", "img", true));
	TRY(get_rows(out, "im2patch", "out", &o));
	if (img->ndim != 3 || p <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda im2patch: img must be (C, H, W) and p > 0");
	nph = img->shape[1] / p;
	npw = img->shape[2] / p;
	if (o.n != nph * npw || o.c != img->shape[0] * p * p)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda im2patch: out must be (%lld, %lld), got (%lld, %lld)",
				 (long long)(nph * npw), (long long)(img->shape[0] * p * p),
				 (long long)o.n, (long long)o.c);
	ENTER(be);
	total = o.n * o.c;
	if (total == 0)
		return VD_OK;
	s = get_strided(img);
	GRAPH_OP("im2patch", s, o, p);
	GRAPH_SKIP();
	TRY(launch_im2patch(c, &s, &o, p, npw));
	return op_done(c, "im2patch");
}

vd_status cu_zero(vd_backend *be, vd_tensor *t)
{
	ENTER(be);
	GRAPH_FORBID("zero");
	if (!vd_tensor_is_contiguous(t))
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda zero: the tensor must be packed");
	CUDA_TRY(cudaMemsetAsync(t->data, 0, (size_t)vd_tensor_numel(t) * vd_dtype_size(t->dtype),
				 c->stream));
	return op_done(c, "zero");
}

