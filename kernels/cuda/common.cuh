/* The CUDA backend's internal header, shared by its translation units (one
 * per op family, as ggml-cuda is laid out): includes, the error macros, the
 * backend context, the device helpers every kernel uses (dtype loads and
 * stores, FP8, warp and block sums), the operand views and checks, the step
 * graphs' signature and GRAPH_* macros, and the host functions the units
 * share. Nothing here is part of vllmd's API (kernels/cuda/cuda_backend.h). */
#ifndef VLLMD_KERNELS_CUDA_COMMON_CUH
#define VLLMD_KERNELS_CUDA_COMMON_CUH

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>
#if __has_include(<cudnn.h>)
#include <cudnn.h>
#include <dlfcn.h>
#define VD_HAVE_CUDNN 1
#endif
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <mma.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/sample.h"
#include "kernels/operands.h"
#include "kernels/patch_conv.h"

/* ------------------------------------------------------------ error checks */

/* Every CUDA/cuBLAS call goes through these, so a failure names the call
 * and its place: "cuda_backend.cu:123: cuda error cudaErrorX (text) in call". */
#define CUDA_TRY(call)                                                                     \
	do {                                                                               \
		cudaError_t e_ = (call);                                                   \
		if (e_ != cudaSuccess)                                                     \
			return cuda_fail(e_, __FILE__, __LINE__, #call);                   \
	} while (0)

#define CUBLAS_TRY(call)                                                                   \
	do {                                                                               \
		cublasStatus_t s_ = (call);                                                \
		if (s_ != CUBLAS_STATUS_SUCCESS)                                           \
			return vd_errorf(VD_ERR_BACKEND, "%s:%d: cublas error %s in %s",   \
					 __FILE__, __LINE__, cublasGetStatusString(s_),    \
					 #call);                                           \
	} while (0)

/* After a kernel launch: catches bad launch configurations at once;
 * faults inside the kernel surface at the next sync (VD_CUDA_SYNC=1 makes
 * that the end of the same op). */
#define LAUNCHED() CUDA_TRY(cudaGetLastError())

#define TRY(expr)                                                                          \
	do {                                                                               \
		vd_status t_ = (expr);                                                     \
		if (t_ != VD_OK)                                                           \
			return t_;                                                         \
	} while (0)

/* A failed CUDA call as a vd_status naming the call and its place. */
vd_status cuda_fail(cudaError_t e, const char *file, int line, const char *call);

/* ------------------------------------------------------------ context */

/* Kinds of host index arrays; each keeps its own device copy so the copy is
 * skipped when an op gets the same bytes as last time. */
enum { IDX_ROPE, IDX_ATTN, IDX_SLOTS, IDX_SEGS, IDX_ROWS, IDX_SAMPLE, IDX_COUNT };

typedef struct idx_buf {
	char *dev;     /* device copy of the last bytes sent */
	size_t cap;    /* bytes allocated at dev */
	char *shadow;  /* host copy of the same bytes */
	size_t len;    /* valid bytes in dev/shadow; 0 = nothing cached */
} idx_buf;

/* Step graphs (graph_begin/graph_end). A graph's index arrays live in one
 * arena (pinned host twin + device, fixed addresses that the recorded kernels
 * read); each put_index of the step takes the next slot of the graph's
 * layout, or reuses the latest slot of its kind when the bytes are the same
 * (every layer of a step sends the same metadata). */
enum { GM_OFF, GM_CAPTURE, GM_REPLAY };
#define G_MAX 64
#define G_ARENA (16u << 20)

typedef struct g_slot {
	int kind;
	int same_as; /* earlier slot with the same bytes, or -1 */
	size_t off, bytes;
} g_slot;

typedef struct cu_graph {
	bool made;   /* captured and instantiated */
	bool broken; /* capture failed (or kept differing): op by op from now on */
	int redone;  /* recordings dropped because a replay differed */
	cudaGraphExec_t exec;
	g_slot *slots;
	int nslots, cap;
	size_t used;  /* arena bytes of the layout */
	uint64_t sig; /* the ops' operands folded, as recorded */
} cu_graph;

typedef struct cu_ctx {
	int device;
	int num_sms;
	bool tf32;
	bool debug_sync;
	cudaStream_t stream;
	cublasHandle_t blas;
	cublasLtHandle_t lt;          /* NULL: linear never takes the cuBLASLt path */
	void *lt_ws;                  /* LT_WORKSPACE bytes: cuBLAS's and cuBLASLt's workspace */
	struct lt_plan *lt_tab;       /* (LT_SLOTS) */
	cudaMemPool_t pool;
	pthread_mutex_t mu; /* one op at a time: staging and scratch are shared */

	/* Pinned staging ring in two halves: a half is written again only
	 * after the event recorded when it was last left has completed, so the
	 * host never overwrites bytes an async copy still reads. Each host
	 * byte has a device twin at the same offset for uploads that convert. */
	char *ring_h, *ring_d;
	size_t ring_half;
	int ring_cur;
	size_t ring_off;
	cudaEvent_t ring_ev[2];
	bool ring_ev_set[2];

	void *scratch; /* device scratch of one op, stream-ordered */
	size_t scratch_cap;
	idx_buf idx[IDX_COUNT];
	char *blob; /* host buffer where ops assemble index arrays */
	size_t blob_cap;
	void **retired; /* scratch buffers a graph may still read (freed at the end) */
	struct {
		const char *p;
		size_t n;
	} *pinned;      /* host_alloc blocks: upload copies from them directly */
	int n_pinned;
	int n_retired;

	int gmode;  /* GM_OFF, or recording / replaying graph gid */
	int gid, gpos;
	bool gfail; /* the step cannot be (or was not) recorded as the graph */
	uint64_t gsig;
	size_t gused;
	int glast[IDX_COUNT]; /* latest new slot of each kind in this step */
	int n_made;           /* graphs instantiated and alive */
	char *ga_h, *ga_d;    /* arena (G_ARENA bytes each) */
	cudaEvent_t ga_ev;    /* after the arena's last upload */
	bool ga_ev_set;
	cu_graph graphs[G_MAX];

	/* VD_CUDA_PROFILE=1: every op synchronises before and after, and its
	 * wall time is added up by op name; printed when the backend goes */
	bool prof;
	double prof_t0;
	int prof_n;
	struct {
		const char *op;
		double sec;
		long calls;
	} prof_tab[32];

	/* VD_CUDA_HOST_SAMPLING=1 (tests): the table without sample_full, so
	 * the engine samples on the host and tests compare the two paths */
	vd_ops test_ops;

	/* patch_conv (conv_cudnn.cuh): cuDNN, opened on first use, and the
	 * plans of the shapes seen */
	int dnn_state;       /* 0 not tried, 1 open, -1 unavailable */
	struct dnn_api *dnn;
#ifdef VD_HAVE_CUDNN
	cudnnHandle_t dnn_h;
#endif
	char dnn_why[128];   /* why cuDNN is unavailable */
	char dnn_path[160];  /* how the last call ran */
	struct patch_plan *patch_plans;
	int patch_next;
	struct patch_choice *patch_choices;
	int choice_next;
} cu_ctx;

static inline double host_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline cu_ctx *ctx_of(vd_backend *be)
{
	return (cu_ctx *)be->ctx;
}

/* Holds the backend's lock for one op and makes its GPU current on the
 * calling thread (ops may come from a thread other than the creator's). */
struct op_scope {
	cu_ctx *c;
	explicit op_scope(cu_ctx *ctx) : c(ctx)
	{
		pthread_mutex_lock(&c->mu);
		if (c->prof) {
			cudaStreamSynchronize(c->stream);
			c->prof_t0 = host_now();
		}
	}
	~op_scope() { pthread_mutex_unlock(&c->mu); }
};

#define ENTER(be)                                                                          \
	cu_ctx *c = ctx_of(be);                                                            \
	op_scope scope_(c);                                                                \
	CUDA_TRY(cudaSetDevice(c->device))

static inline size_t align_up(size_t n, size_t a)
{
	return (n + a - 1) / a * a;
}

/* Shared host functions of the context (cuda_backend.cu). */

/* End of an op: with VD_CUDA_SYNC=1 wait, so a kernel fault is blamed on
 * the op that queued it; VD_CUDA_PROFILE=1 adds its time to its name. */
vd_status op_done(cu_ctx *c, const char *op);
/* Stream-ordered device memory from the backend's pool. */
vd_status dev_alloc(cu_ctx *c, size_t bytes, void **out);
/* Device scratch of at least bytes, valid until the next scratch() call. */
vd_status scratch(cu_ctx *c, size_t bytes, void **out);
/* bytes of pinned staging (host *h) with its device twin (*d). */
vd_status ring_take(cu_ctx *c, size_t bytes, char **h, char **d);
/* A zeroed host blob of bytes where an op lays out its index arrays. */
vd_status blob_get(cu_ctx *c, size_t bytes, char **out);
/* The first bytes of c->blob on the device as *dev, a buffer of kind
 * `kind` valid until the next put_index of that kind (no copy when the
 * bytes are those of the last call). */
vd_status put_index(cu_ctx *c, int kind, size_t bytes, const char **dev);
/* put_index inside a step graph (graphs.cu). */
vd_status put_graph(cu_ctx *c, int kind, size_t bytes, const char **dev);
/* Whether the environment variable name is set to something other than 0. */
bool env_on(const char *name);
/* cuBLAS, cuBLASLt and their workspace of a new context, and their release
 * once the stream is idle (gemm.cu). */
vd_status gemm_init(cu_ctx *c);
void gemm_free(cu_ctx *c);
/* The cuDNN plans of patch_conv (conv.cu). */
void patch_plans_free(cu_ctx *c);

/* ------------------------------------------------------------ device helpers */

/* FP8 E4M3 <-> f32: exact up, round to nearest even and saturate down
 * (cvt.rn.satfinite on sm_89+, the same rounding in software before), as
 * vd_f32_to_fp8e4m3 on the host. */
__device__ __forceinline__ float fp8_to_f(uint8_t b)
{
	return __half2float(__half(__nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)b, __NV_E4M3)));
}

__device__ __forceinline__ uint8_t f_to_fp8(float v)
{
	return (uint8_t)__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
}

/* Element i of float dtype dt at p, as f32 (the dtype is uniform across a
 * kernel, so the branch costs little in these memory-bound kernels). */
__device__ __forceinline__ float ldf(const void *p, int dt, int64_t i)
{
	if (dt == VD_DTYPE_F32)
		return ((const float *)p)[i];
	if (dt == VD_DTYPE_BF16)
		return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
	if (dt == VD_DTYPE_F8E4M3)
		return fp8_to_f(((const uint8_t *)p)[i]);
	return __half2float(((const __half *)p)[i]);
}

/* Store v rounded to nearest even in dtype dt. */
__device__ __forceinline__ void stf(void *p, int dt, int64_t i, float v)
{
	if (dt == VD_DTYPE_F32)
		((float *)p)[i] = v;
	else if (dt == VD_DTYPE_BF16)
		((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
	else if (dt == VD_DTYPE_F8E4M3)
		((uint8_t *)p)[i] = f_to_fp8(v);
	else
		((__half *)p)[i] = __float2half_rn(v);
}

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_fp8_e4m3 v) { return fp8_to_f(v.__x); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v)
{
	return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* 16 bytes of 8 bf16/f16 elements to and from f32 (the dtype is picked by
 * the type of the unused pointer argument). */
__device__ __forceinline__ void unpack8(const uint4 &u, float *f, const __nv_bfloat16 *)
{
	const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __bfloat1622float2(h[i]);

		f[2 * i] = t.x;
		f[2 * i + 1] = t.y;
	}
}

__device__ __forceinline__ void unpack8(const uint4 &u, float *f, const __half *)
{
	const __half2 *h = (const __half2 *)&u;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __half22float2(h[i]);

		f[2 * i] = t.x;
		f[2 * i + 1] = t.y;
	}
}

__device__ __forceinline__ uint4 pack8(const float *f, const __nv_bfloat16 *)
{
	uint4 u;
	__nv_bfloat162 *h = (__nv_bfloat162 *)&u;

#pragma unroll
	for (int i = 0; i < 4; i++)
		h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
	return u;
}

__device__ __forceinline__ uint4 pack8(const float *f, const __half *)
{
	uint4 u;
	__half2 *h = (__half2 *)&u;

#pragma unroll
	for (int i = 0; i < 4; i++)
		h[i] = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
	return u;
}

/* Sum of v over the block (blockDim.x a multiple of 32); sh holds 32 floats. */
static __device__ __forceinline__ float block_sum(float v, float *sh)
{
	int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;

	v = warp_sum(v);
	if (lane == 0)
		sh[wid] = v;
	__syncthreads();
	v = threadIdx.x < (blockDim.x >> 5) ? sh[lane] : 0.0f;
	if (wid == 0)
		v = warp_sum(v);
	if (threadIdx.x == 0)
		sh[0] = v;
	__syncthreads();
	v = sh[0];
	__syncthreads();
	return v;
}

/* ------------------------------------------------------------ tensor views */

/* The shared operand views (kernels/operands.h), passed to kernels by value:
 * rows (n, c) rs apart; (T, H, D) heads; a KV cache (num_blocks,
 * block_size, heads, head_dim). */
typedef vd_rows_view rv;
typedef vd_heads_view hv;
typedef vd_cache_view cv;

/* The shared operand checks with this backend's rules. */
static inline const vd_operand_rules RULES = {
	"cuda", VD_DEVICE_CUDA,
	(1u << VD_DTYPE_F32) | (1u << VD_DTYPE_BF16) | (1u << VD_DTYPE_F16), "f32, bf16 or f16",
	256,
};

/* Up to 4-D strided view, front-padded to 4 dims with size-1 dims. */
typedef struct sv {
	void *p;
	int dt;
	int64_t shape[4], stride[4];
} sv;


static inline vd_status check_t(const vd_tensor *t, const char *op, const char *what, bool floats)
{
	return vd_operand_check(&RULES, t, op, what, floats);
}

static inline vd_status get_rows(const vd_tensor *t, const char *op, const char *what, rv *out)
{
	return vd_operand_rows(&RULES, t, op, what, out);
}

static inline vd_status get_vec(const vd_tensor *t, int64_t c, const char *op, const char *what, rv *out)
{
	return vd_operand_vec(&RULES, t, c, op, what, out);
}

static inline vd_status get_heads(const vd_tensor *t, const char *op, const char *what, hv *out)
{
	return vd_operand_heads(&RULES, t, op, what, out);
}

static inline vd_status get_cache(const vd_tensor *t, const char *op, const char *what, cv *out)
{
	return vd_operand_cache(&RULES, t, op, what, out);
}

static inline sv get_strided(const vd_tensor *t)
{
	sv v;
	int pad = 4 - t->ndim;

	v.p = t->data;
	v.dt = t->dtype;
	for (int d = 0; d < 4; d++) {
		v.shape[d] = d < pad ? 1 : t->shape[d - pad];
		v.stride[d] = d < pad ? 0 : t->stride[d - pad];
	}
	return v;
}

static inline vd_status same_rows(const rv *a, const rv *b, const char *op, const char *an,
			   const char *bn)
{
	return vd_operand_same_rows(&RULES, a, b, op, an, bn);
}

static inline vd_status check_convertible(vd_dtype from, vd_dtype to, const char *op)
{
	return vd_operand_convertible(&RULES, from, to, op);
}

/* Grid for kernels over (rows, cols): x covers columns in blocks of 256,
 * y covers rows (kernels loop when there are more than 65535). */
static inline dim3 grid_rc(int64_t n, int64_t c)
{
	return dim3((unsigned)((c + 255) / 256), (unsigned)(n < 65535 ? n : 65535));
}

static inline vd_status check_grid(int64_t n, int64_t c, const char *op)
{
	if (n > INT32_MAX || (c + 255) / 256 > INT32_MAX)
		return vd_errorf(VD_ERR_LIMIT, "cuda %s: (%lld, %lld) is too large for one launch", op,
				 (long long)n, (long long)c);
	return VD_OK;
}

/* A packed 2-D (n, c) strided view of p. */
static inline sv packed2(void *p, vd_dtype dt, int64_t n, int64_t c)
{
	sv v = { p, (int)dt, { 1, 1, n, c }, { 0, 0, c, 1 } };

	return v;
}

/* The packed layout of s's shape at p in dtype dt. */
static inline sv packed_like(const sv *s, void *p, vd_dtype dt)
{
	sv v = *s;
	int64_t st = 1;

	v.p = p;
	v.dt = (int)dt;
	for (int k = 3; k >= 0; k--) {
		v.stride[k] = st;
		st *= s->shape[k];
	}
	return v;
}

static inline sv rows_sv(const rv *r)
{
	sv v = { r->p, r->dt, { 1, 1, r->n, r->c }, { 0, 0, r->rs, 1 } };

	return v;
}

/* dst = src over 4-D strided views of the same shape, converting floats
 * (cuda_backend.cu). */
vd_status launch_copy(cu_ctx *c, const sv *s, const sv *d);
/* out[patch, (c, ky, kx)] = img[c, py p + ky, px p + kx]: p x p patches
 * of img (C, H, W) dims 1..3, npw patches a row (elementwise.cu). */
vd_status launch_im2patch(cu_ctx *c, const sv *img, const rv *out, int p, int64_t npw);
/* y = x w^T (+ b) on c's stream, the operands checked (gemm.cu). */
vd_status linear_run(cu_ctx *c, const rv &xr, const rv &wr, const rv *bp, const rv &yr);

/* ------------------------------------------------------------ step graphs */

/* The step signature: every op folds in its name and operands (pointers,
 * shapes, strides, dtypes, the scalars that pick its launches), so a replay
 * that would launch anything else is refused. */
static inline void gmix(cu_ctx *c, uint64_t v)
{
	c->gsig = (c->gsig ^ v) * 0x100000001b3ull;
	c->gsig ^= c->gsig >> 29;
}

static inline uint64_t gval(const void *p) { return (uintptr_t)p; }
static inline uint64_t gval(int64_t v) { return (uint64_t)v; }
static inline uint64_t gval(int v) { return (uint64_t)(int64_t)v; }

template <typename... A> static inline void gmix_all(cu_ctx *c, const A &...v)
{
	(gmix(c, gval(v)), ...);
}

static inline void gnote(cu_ctx *c, const rv &r) { gmix_all(c, r.p, r.dt, r.n, r.c, r.rs); }
static inline void gnote(cu_ctx *c, const hv &h) { gmix_all(c, h.p, h.dt, h.t, h.h, h.d, h.st, h.sh); }

static inline void gnote(cu_ctx *c, const cv &v)
{
	gmix_all(c, v.p, v.dt, v.nb, v.bs, v.h, v.d, v.sb, v.ss, v.sh);
}

static inline void gnote(cu_ctx *c, const sv &v)
{
	gmix_all(c, v.p, v.dt);
	for (int i = 0; i < 4; i++)
		gmix_all(c, v.shape[i], v.stride[i]);
}

static inline void gnote(cu_ctx *c, int64_t v) { gmix(c, (uint64_t)v); }
static inline void gnote(cu_ctx *c, int v) { gmix(c, (uint64_t)(int64_t)v); }

static inline void gnote(cu_ctx *c, float v)
{
	uint32_t u;

	memcpy(&u, &v, sizeof(u));
	gmix(c, u);
}

template <typename... A> static inline void gnote_all(cu_ctx *c, const char *op, const A &...a)
{
	gmix(c, (uintptr_t)op);
	(gnote(c, a), ...);
}

/* At the top of an op (after ENTER): its operands join the signature. */
#define GRAPH_OP(op, ...)                                                                  \
	do {                                                                               \
		if (c->gmode)                                                              \
			gnote_all(c, op, __VA_ARGS__);                                     \
	} while (0)

/* Before an op's first launch: a replay stops here (the graph launches). */
#define GRAPH_SKIP()                                                                       \
	do {                                                                               \
		if (c->gmode == GM_REPLAY)                                                 \
			return VD_OK;                                                      \
	} while (0)

/* Ops that cannot be part of a step graph (host transfers, syncs, memory). */
#define GRAPH_FORBID(op)                                                                   \
	do {                                                                               \
		if (c->gmode) {                                                            \
			c->gfail = true;                                                   \
			return vd_errorf(VD_ERR_UNSUPPORTED,                               \
					 "cuda %s: not allowed inside a step graph", op);  \
		}                                                                          \
	} while (0)

/* ------------------------------------------------------------ the ops */

/* Each unit's ops, for the ops table (cuda_backend.cu). */

/* gemm.cu */
vd_status cu_linear(vd_backend *be, const vd_tensor *x, const vd_tensor *w, const vd_tensor *b,
		    vd_tensor *y);

/* elementwise.cu */
vd_status cu_add(vd_backend *be, const vd_tensor *a, const vd_tensor *b, vd_tensor *y);
vd_status cu_rmsnorm(vd_backend *be, const vd_tensor *x, const vd_tensor *w, float eps,
		     vd_tensor *y);
vd_status cu_add_rmsnorm(vd_backend *be, vd_tensor *r, const vd_tensor *x, const vd_tensor *w,
			 float eps, vd_tensor *y);
vd_status cu_layernorm(vd_backend *be, const vd_tensor *x, const vd_tensor *w, const vd_tensor *b,
		       float eps, vd_tensor *y);
vd_status cu_act(vd_backend *be, vd_act kind, const vd_tensor *x, vd_tensor *y);
vd_status cu_silu_mul(vd_backend *be, const vd_tensor *x, vd_tensor *y);
vd_status cu_scale(vd_backend *be, const vd_tensor *x, float s, vd_tensor *y);
vd_status cu_rope(vd_backend *be, vd_tensor *x, const int32_t *positions, const vd_rope *r);
vd_status cu_embed(vd_backend *be, const vd_tensor *table, const int32_t *ids, int64_t n,
		   vd_tensor *out);
vd_status cu_scatter_rows(vd_backend *be, const vd_tensor *src, const int32_t *rows, int64_t n,
			  vd_tensor *dst);
vd_status cu_gather_rows(vd_backend *be, const vd_tensor *src, const int32_t *rows, int64_t n,
			 vd_tensor *dst);
vd_status cu_im2patch(vd_backend *be, const vd_tensor *img, int p, vd_tensor *out);
vd_status cu_zero(vd_backend *be, vd_tensor *t);

/* attention.cu */
vd_status cu_paged_attention(vd_backend *be, const vd_tensor *q, const vd_tensor *k_cache,
			     const vd_tensor *v_cache, const vd_attn_meta *meta, float scale,
			     vd_tensor *out);
vd_status cu_cache_write(vd_backend *be, const vd_tensor *k, const vd_tensor *v,
			 vd_tensor *k_cache, vd_tensor *v_cache, const vd_attn_meta *meta);
vd_status cu_attention_segments(vd_backend *be, const vd_tensor *q, const vd_tensor *k,
				const vd_tensor *v, const int32_t *cu, int nseg, float scale,
				vd_tensor *out);

/* sample.cu */
vd_status cu_sample(vd_backend *be, const vd_tensor *x, const float *temps, const uint64_t *keys,
		    int32_t *out);
vd_status cu_sample_full(vd_backend *be, const vd_tensor *x, const vd_sample_args *sa);

/* conv.cu */
vd_status cu_patch_conv(vd_backend *be, const vd_tensor *x, int nd, const int64_t *size,
			const int64_t *kernel, const vd_tensor *w, vd_tensor *y);

/* graphs.cu */
vd_status cu_graph_begin(vd_backend *be, int id);
vd_status cu_graph_end(vd_backend *be, int *ran);

#endif
