/* linear (vllmd/ops.h) on the GPU: cuBLAS with f32 accumulation, cached
 * cuBLASLt plans with the bias in the epilogue, and the batch-1 GEMV kernel. */
#include "kernels/cuda/common.cuh"

/* ------------------------------------------------------------ dense math */

/* y[m, :] = b (or 0 when b is NULL): the C operand of a beta = 1 GEMM. */
__global__ void k_fill_rows(rv y, const void *b, int bdt)
{
	int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;

	if (j >= y.c)
		return;
	for (int64_t m = blockIdx.y; m < y.n; m += gridDim.y)
		stf(y.p, y.dt, m * y.rs + j, b ? ldf(b, bdt, j) : 0.0f);
}

static cudaDataType_t blas_type(int dt)
{
	return dt == VD_DTYPE_F32 ? CUDA_R_32F : dt == VD_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

/* The two non-cuBLAS paths of cu_linear: cached cuBLASLt plans with the bias
 * in the epilogue, and the batch-1 GEMV kernel. */

/* cuBLASLt plans of linear with a bias (vision towers, biased qkv): the
 * bias is added in the GEMM's epilogue instead of a fill pass and a beta = 1
 * read of y. A plan (descriptors and the heuristic's algorithm) is kept per
 * shape, strides, dtypes and pointer alignments, in a small hash table. */
#define LT_SLOTS 256
#define LT_WORKSPACE (32u << 20)

typedef struct lt_key {
	int32_t m, n, k, lda, ldb, ldc;
	int32_t wdt, xdt, ydt, bdt;
	int32_t align_w, align_x, align_y;
} lt_key;

typedef struct lt_plan {
	lt_key key;
	bool used, ok;
	cublasLtMatmulDesc_t op;
	cublasLtMatrixLayout_t la, lb, lc;
	cublasLtMatmulAlgo_t algo;
} lt_plan;

static int ptr_align(const void *p)
{
	uintptr_t u = (uintptr_t)p;
	int a = 256;

	while (a > 1 && (u & (uintptr_t)(a - 1)))
		a >>= 1;
	return a;
}

static void lt_plan_drop(lt_plan *p)
{
	if (p->op)
		cublasLtMatmulDescDestroy(p->op);
	if (p->la)
		cublasLtMatrixLayoutDestroy(p->la);
	if (p->lb)
		cublasLtMatrixLayoutDestroy(p->lb);
	if (p->lc)
		cublasLtMatrixLayoutDestroy(p->lc);
	memset(p, 0, sizeof(*p));
}

/* Descriptors for y^T (N, M) = w (as A, read transposed) x^T, column-major
 * as in cu_linear, with the bias epilogue; p->ok = false when cuBLASLt has
 * no algorithm for it (the caller then takes the cublasGemmEx path). */
static void lt_plan_make(cu_ctx *c, lt_plan *p, const lt_key *k)
{
	cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
	cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
	cudaDataType_t bt = blas_type(k->bdt);
	cublasLtMatmulPreference_t pref = NULL;
	cublasLtMatmulHeuristicResult_t res;
	size_t ws = LT_WORKSPACE;
	uint32_t aw = (uint32_t)k->align_w, ax = (uint32_t)k->align_x, ay = (uint32_t)k->align_y;
	int nres = 0;

	memset(p, 0, sizeof(*p));
	p->key = *k;
	p->used = true;
	if (cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) ||
	    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)) ||
	    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)) ||
	    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)) ||
	    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
					   sizeof(bt)) ||
	    cublasLtMatrixLayoutCreate(&p->la, blas_type(k->wdt), (uint64_t)k->k, (uint64_t)k->n,
				       k->lda) ||
	    cublasLtMatrixLayoutCreate(&p->lb, blas_type(k->xdt), (uint64_t)k->k, (uint64_t)k->m,
				       k->ldb) ||
	    cublasLtMatrixLayoutCreate(&p->lc, blas_type(k->ydt), (uint64_t)k->n, (uint64_t)k->m,
				       k->ldc) ||
	    cublasLtMatmulPreferenceCreate(&pref) ||
	    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
						 sizeof(ws)) ||
	    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw,
						 sizeof(aw)) ||
	    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ax,
						 sizeof(ax)) ||
	    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ay,
						 sizeof(ay)) ||
	    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ay,
						 sizeof(ay)) ||
	    cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, 1, &res,
					   &nres) ||
	    nres < 1) {
		if (pref)
			cublasLtMatmulPreferenceDestroy(pref);
		lt_plan_drop(p);
		p->key = *k;
		p->used = true;
		return;
	}
	cublasLtMatmulPreferenceDestroy(pref);
	p->algo = res.algo;
	p->ok = true;
}

static lt_plan *lt_plan_get(cu_ctx *c, const lt_key *k)
{
	uint64_t h = 1469598103934665603ull;
	const unsigned char *b = (const unsigned char *)k;
	lt_plan *p;

	for (size_t i = 0; i < sizeof(*k); i++)
		h = (h ^ b[i]) * 1099511628211ull;
	for (int probe = 0; probe < 8; probe++) {
		p = &c->lt_tab[(h + (uint64_t)probe) % LT_SLOTS];
		if (p->used && !memcmp(&p->key, k, sizeof(*k)))
			return p;
		if (!p->used) {
			lt_plan_make(c, p, k);
			return p;
		}
	}
	p = &c->lt_tab[h % LT_SLOTS]; /* full run of probes: replace the home slot */
	lt_plan_drop(p);
	lt_plan_make(c, p, k);
	return p;
}

/* y = x w^T + b through a cuBLASLt plan; *ran = false when there is none
 * for these operands (then nothing was queued). */
static vd_status lt_linear(cu_ctx *c, const rv *w, const rv *x, const rv *b, const rv *y, bool *ran)
{
	lt_key k;
	lt_plan *p;
	float alpha = 1.0f, beta = 0.0f;
	const void *bias = b->p;

	*ran = false;
	if (!c->lt || !c->lt_tab || (uintptr_t)b->p & 15 || w->dt == VD_DTYPE_F32 || x->dt != w->dt ||
	    y->dt != w->dt)
		return VD_OK;
	memset(&k, 0, sizeof(k));
	k = (lt_key){ (int32_t)x->n, (int32_t)w->n, (int32_t)x->c, (int32_t)w->rs, (int32_t)x->rs,
		      (int32_t)y->rs, w->dt, x->dt, y->dt, b->dt, ptr_align(w->p), ptr_align(x->p),
		      ptr_align(y->p) };
	p = lt_plan_get(c, &k);
	if (!p->ok)
		return VD_OK;
	if (cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
					   sizeof(bias)))
		return VD_OK;
	CUBLAS_TRY(cublasLtMatmul(c->lt, p->op, &alpha, w->p, p->la, x->p, p->lb, &beta, y->p, p->lc,
				  y->p, p->lc, &p->algo, c->lt_ws, LT_WORKSPACE, c->stream));
	*ran = true;
	return VD_OK;
}

/* linear of one row (batch-1 decode): bound by the weight bytes, which
 * cuBLAS streams at ~3.2-3.9 TB/s at these shapes on an H200 against ~4.2
 * here. WPR warps share an output column n (a weight row), each taking every
 * WPR-th 16-byte chunk of it, GEMV_UNROLL loads in flight that bypass L1;
 * x comes through L1. Narrow layers (N < 16384) use 4 warps a column so the
 * GPU holds enough loads in flight. f32 accumulation; bias and output dtype
 * as cu_linear. (More rows re-read x per weight chunk and fall far behind
 * cuBLAS: 0.9 TB/s at 8 rows.) */
#define GEMV_WARPS 8
#define GEMV_UNROLL 4

__device__ __forceinline__ uint4 ld_stream(const void *p)
{
	uint4 v;

	asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
		     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
		     : "l"(p));
	return v;
}

template <typename T, int WPR>
__global__ void __launch_bounds__(GEMV_WARPS * 32) k_gemv(rv x, rv w, rv b, rv y)
{
	constexpr int ROWS = GEMV_WARPS / WPR;
	__shared__ float part[GEMV_WARPS];
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = warp % WPR;
	int64_t n = (int64_t)blockIdx.x * ROWS + warp / WPR, k8 = w.c / 8;
	const T *wrow = (const T *)w.p + n * w.rs, *X = (const T *)x.p;
	float acc = 0.0f;

	if (n < w.n) {
		for (int64_t base = (int64_t)sub * 32; base < k8; base += 32 * WPR * GEMV_UNROLL) {
			uint4 wu[GEMV_UNROLL];

#pragma unroll
			for (int u = 0; u < GEMV_UNROLL; u++) {
				int64_t i = base + (int64_t)u * 32 * WPR + lane;

				wu[u] = i < k8 ? ld_stream(wrow + i * 8) : make_uint4(0, 0, 0, 0);
			}
#pragma unroll
			for (int u = 0; u < GEMV_UNROLL; u++) {
				int64_t i = base + (int64_t)u * 32 * WPR + lane;
				float wf[8], xf[8];

				if (i >= k8)
					break;
				unpack8(wu[u], wf, (const T *)NULL);
				unpack8(*(const uint4 *)(X + i * 8), xf, (const T *)NULL);
#pragma unroll
				for (int e = 0; e < 8; e++)
					acc += wf[e] * xf[e];
			}
		}
	}
	acc = warp_sum(acc);
	if (WPR > 1) {
		if (lane == 0)
			part[warp] = acc;
		__syncthreads();
		if (lane != 0 || sub != 0)
			return;
		for (int j = 1; j < WPR; j++)
			acc += part[warp + j];
	}
	if (lane == 0 && n < w.n)
		stf(y.p, y.dt, n, acc + (b.p ? ldf(b.p, b.dt, n) : 0.0f));
}

template <typename T>
static void launch_gemv_t(cu_ctx *c, const rv *x, const rv *w, const rv *b, const rv *y)
{
	if (w->n < 16384)
		k_gemv<T, 4><<<(unsigned)((w->n + 1) / 2), GEMV_WARPS * 32, 0, c->stream>>>(*x, *w, *b, *y);
	else
		k_gemv<T, 1><<<(unsigned)((w->n + 7) / 8), GEMV_WARPS * 32, 0, c->stream>>>(*x, *w, *b, *y);
}

/* Whether k_gemv takes this linear: one row of x in w's 16-bit dtype, K a
 * multiple of 8, 16-byte aligned rows (VD_CUDA_GEMV=0: never). */
static bool gemv_fits(const rv *x, const rv *w)
{
	static int off = -1;

	if (off < 0) {
		const char *e = getenv("VD_CUDA_GEMV");

		off = e && !strcmp(e, "0");
	}
	return !off && x->n == 1 && w->dt != VD_DTYPE_F32 && x->dt == w->dt && !(w->c & 7) &&
	       !(w->rs & 7) && !(((uintptr_t)x->p | (uintptr_t)w->p) & 15) && w->n <= 0x7fffffffLL;
}

/* The work of linear after its checks: y = x w^T (+ b) on c's stream.
 * Also used by ops that contain a GEMM (patch_conv). */
vd_status linear_run(cu_ctx *c, const rv &xr, const rv &wr, const rv *bp, const rv &yr)
{
	rv br = { NULL, 0, 0, 0, 0 };
	const void *b = bp;
	float alpha = 1.0f, beta;
	bool direct;
	size_t xbytes = 0, ybytes = 0;
	char *tmp = NULL;
	rv xa, ya;

	if (bp)
		br = *bp;
	if (xr.n == 0 || wr.n == 0)
		return VD_OK;
	/* one row: the GEMV kernel writes y in any float dtype, no staging */
	if (xr.c > 0 && gemv_fits(&xr, &wr)) {
		if (wr.dt == VD_DTYPE_BF16)
			launch_gemv_t<__nv_bfloat16>(c, &xr, &wr, &br, &yr);
		else
			launch_gemv_t<__half>(c, &xr, &wr, &br, &yr);
		LAUNCHED();
		return VD_OK;
	}
	direct = wr.dt == VD_DTYPE_F32 ? yr.dt == VD_DTYPE_F32 : (yr.dt == wr.dt || yr.dt == VD_DTYPE_F32);
	if (xr.dt != wr.dt && xr.c > 0)
		xbytes = align_up((size_t)(xr.n * xr.c) * vd_dtype_size((vd_dtype)wr.dt), 256);
	if (!direct)
		ybytes = (size_t)(yr.n * yr.c) * sizeof(float);
	if (xbytes + ybytes > 0)
		TRY(scratch(c, xbytes + ybytes, (void **)&tmp));
	xa = xr;
	if (xbytes) {
		sv s = rows_sv(&xr), d = packed2(tmp, (vd_dtype)wr.dt, xr.n, xr.c);

		TRY(launch_copy(c, &s, &d));
		xa = (rv){ tmp, wr.dt, xr.n, xr.c, xr.c };
	}
	ya = direct ? yr : (rv){ tmp + xbytes, VD_DTYPE_F32, yr.n, yr.c, yr.c };
	if (b && direct && xr.c > 0 && !xbytes) {
		bool ran;

		TRY(lt_linear(c, &wr, &xa, &br, &ya, &ran));
		if (ran)
			return VD_OK;
	}
	beta = 0.0f;
	if (b || xr.c == 0) {
		k_fill_rows<<<grid_rc(ya.n, ya.c), 256, 0, c->stream>>>(ya, br.p, br.dt);
		LAUNCHED();
		beta = 1.0f;
	}
	if (xr.c > 0)
		CUBLAS_TRY(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)wr.n, (int)xr.n,
					(int)xr.c, &alpha, wr.p, blas_type(wr.dt), (int)wr.rs, xa.p,
					blas_type(xa.dt), (int)xa.rs, &beta, ya.p, blas_type(ya.dt),
					(int)ya.rs,
					wr.dt == VD_DTYPE_F32 && c->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
									 : CUBLAS_COMPUTE_32F,
					CUBLAS_GEMM_DEFAULT));
	if (!direct) {
		sv s = rows_sv(&ya), d = rows_sv(&yr);

		TRY(launch_copy(c, &s, &d));
	}
	return VD_OK;
}

/* y (M,N) = x (M,K) w (N,K)^T + b, f32 accumulation. cuBLAS is column-major,
 * so it computes y^T = w x^T: A = w read transposed (lda = w row stride),
 * B = x (ldb = x row stride), C = y (ldc = y row stride). Dtypes may mix:
 * x is converted to w's dtype when they differ, and y goes through f32
 * scratch when cuBLAS cannot write it directly. */
vd_status cu_linear(vd_backend *be, const vd_tensor *x, const vd_tensor *w,
			   const vd_tensor *b, vd_tensor *y)
{
	rv xr, wr, yr, br = { NULL, 0, 0, 0, 0 };

	TRY(get_rows(x, "linear", "x", &xr));
	TRY(get_rows(w, "linear", "w", &wr));
	TRY(get_rows(y, "linear", "y", &yr));
	if (xr.c != wr.c || yr.n != xr.n || yr.c != wr.n)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda linear: x (%lld, %lld) @ w (%lld, %lld)^T -> y (%lld, %lld) mismatch",
				 (long long)xr.n, (long long)xr.c, (long long)wr.n, (long long)wr.c,
				 (long long)yr.n, (long long)yr.c);
	if (b)
		TRY(get_vec(b, wr.n, "linear", "b", &br));
	if (xr.c > INT32_MAX || xr.n > INT32_MAX || wr.n > INT32_MAX || xr.rs > INT32_MAX ||
	    wr.rs > INT32_MAX || yr.rs > INT32_MAX)
		return vd_errorf(VD_ERR_UNSUPPORTED, "cuda linear: dimensions exceed cuBLAS int range");
	TRY(check_grid(yr.n, yr.c, "linear"));
	ENTER(be);
	GRAPH_OP("linear", xr, wr, yr, br);
	GRAPH_SKIP();
	TRY(linear_run(c, xr, wr, b ? &br : NULL, yr));
	return op_done(c, "linear");
}


/* ------------------------------------------------------------ lifecycle */

vd_status gemm_init(cu_ctx *c)
{
	CUBLAS_TRY(cublasCreate(&c->blas));
	CUBLAS_TRY(cublasSetStream(c->blas, c->stream));
	CUBLAS_TRY(cublasSetMathMode(c->blas, c->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
	/* one workspace for cuBLAS and cuBLASLt (same stream): set, not left to
	 * cuBLAS, so recording a step graph allocates nothing */
	TRY(dev_alloc(c, LT_WORKSPACE, &c->lt_ws));
	CUBLAS_TRY(cublasSetWorkspace(c->blas, c->lt_ws, LT_WORKSPACE));
	/* cuBLASLt is an optimisation: without it linear uses cublasGemmEx */
	if (!env_on("VD_CUDA_NO_LT") && cublasLtCreate(&c->lt) == CUBLAS_STATUS_SUCCESS) {
		c->lt_tab = (lt_plan *)calloc(LT_SLOTS, sizeof(lt_plan));
		if (!c->lt_tab)
			return vd_errorf(VD_ERR_NOMEM, "cuda backend: out of host memory");
	}
	return VD_OK;
}

void gemm_free(cu_ctx *c)
{
	if (c->lt_ws)
		cudaFree(c->lt_ws);
	c->lt_ws = NULL;
	if (c->lt_tab)
		for (int i = 0; i < LT_SLOTS; i++)
			lt_plan_drop(&c->lt_tab[i]);
	free(c->lt_tab);
	c->lt_tab = NULL;
	if (c->lt)
		cublasLtDestroy(c->lt);
	if (c->blas)
		cublasDestroy(c->blas);
}
