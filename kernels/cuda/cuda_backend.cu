/* CUDA backend: every op of vllmd/ops.h on one GPU, all work queued on one
 * stream that the backend owns, so ops are ordered without extra syncs.
 * Tensors come from a stream-ordered memory pool; host index arrays go
 * through pinned staging into per-kind device buffers (reused when the same
 * metadata comes again, as in every layer of one step). linear is cuBLAS
 * with f32 accumulation; the rest are the kernels below, which accumulate
 * in f32 whatever the storage dtype (f32, bf16, f16). Layouts accepted are
 * the CPU oracle's (kernels/cpu/cpu_backend.c): row views, (T, H, D) views
 * with a contiguous head dim, any strides for copy/download/im2patch. */
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
#include "kernels/cpu/sample.h"
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

static vd_status cuda_fail(cudaError_t e, const char *file, int line, const char *call)
{
	/* out of memory is not sticky: clear it so later calls can proceed */
	if (e == cudaErrorMemoryAllocation) {
		cudaGetLastError();
		return vd_errorf(VD_ERR_NOMEM, "%s:%d: cuda out of memory in %s", file, line, call);
	}
	return vd_errorf(VD_ERR_BACKEND, "%s:%d: cuda error %s (%s) in %s", file, line,
			 cudaGetErrorName(e), cudaGetErrorString(e), call);
}

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

static double host_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static cu_ctx *ctx_of(vd_backend *be)
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

/* End of an op: with VD_CUDA_SYNC=1 wait, so a kernel fault is blamed on
 * the op that queued it. */
static vd_status op_done(cu_ctx *c, const char *op)
{
	if (c->prof) {
		int i = 0;

		cudaStreamSynchronize(c->stream);
		while (i < c->prof_n && strcmp(c->prof_tab[i].op, op))
			i++;
		if (i < 32) {
			if (i == c->prof_n) {
				c->prof_tab[i].op = op;
				c->prof_n++;
			}
			c->prof_tab[i].sec += host_now() - c->prof_t0;
			c->prof_tab[i].calls++;
		}
	}
	if (c->debug_sync) {
		cudaError_t e = cudaStreamSynchronize(c->stream);

		if (e != cudaSuccess)
			return vd_errorf(VD_ERR_BACKEND, "cuda %s: kernel failed: %s (%s)", op,
					 cudaGetErrorName(e), cudaGetErrorString(e));
	}
	return VD_OK;
}

static size_t align_up(size_t n, size_t a)
{
	return (n + a - 1) / a * a;
}

static vd_status dev_alloc(cu_ctx *c, size_t bytes, void **out)
{
	CUDA_TRY(cudaMallocFromPoolAsync(out, bytes > 0 ? bytes : 256, c->pool, c->stream));
	return VD_OK;
}

/* Device scratch of at least bytes, valid until the next scratch() call;
 * stream order keeps earlier users of the old buffer safe. */
static vd_status scratch(cu_ctx *c, size_t bytes, void **out)
{
	if (bytes > c->scratch_cap) {
		size_t cap = align_up(bytes > 2 * c->scratch_cap ? bytes : 2 * c->scratch_cap, 1 << 20);

		/* a recorded graph keeps reading the old buffer: retire it rather
		 * than free it. Outside graphs, stream order keeps earlier users
		 * safe. cudaMalloc, not the pool: pool calls on a stream being
		 * recorded would become nodes of the graph. */
		if (c->scratch && (c->gmode || c->n_made > 0)) {
			void **r = (void **)realloc(c->retired, sizeof(void *) * (size_t)(c->n_retired + 1));

			if (!r)
				return vd_errorf(VD_ERR_NOMEM, "cuda backend: out of host memory");
			c->retired = r;
			c->retired[c->n_retired++] = c->scratch;
		} else if (c->scratch) {
			CUDA_TRY(cudaStreamSynchronize(c->stream));
			CUDA_TRY(cudaFree(c->scratch));
		}
		c->scratch = NULL;
		c->scratch_cap = 0;
		CUDA_TRY(cudaMalloc(&c->scratch, cap));
		c->scratch_cap = cap;
	}
	*out = c->scratch;
	return VD_OK;
}

/* bytes of pinned staging (host *h) with its device twin (*d). */
static vd_status ring_take(cu_ctx *c, size_t bytes, char **h, char **d)
{
	bytes = align_up(bytes > 0 ? bytes : 1, 256);
	if (bytes > c->ring_half) {
		size_t half = align_up(bytes, 1 << 20);

		/* regrow: drain all copies that read the old ring first */
		CUDA_TRY(cudaStreamSynchronize(c->stream));
		CUDA_TRY(cudaFreeHost(c->ring_h));
		c->ring_h = NULL;
		CUDA_TRY(cudaFreeAsync(c->ring_d, c->stream));
		c->ring_d = NULL;
		c->ring_half = 0;
		CUDA_TRY(cudaHostAlloc((void **)&c->ring_h, 2 * half, cudaHostAllocDefault));
		TRY(dev_alloc(c, 2 * half, (void **)&c->ring_d));
		c->ring_half = half;
		c->ring_cur = 0;
		c->ring_off = 0;
		c->ring_ev_set[0] = c->ring_ev_set[1] = false;
	}
	if (c->ring_off + bytes > c->ring_half) {
		CUDA_TRY(cudaEventRecord(c->ring_ev[c->ring_cur], c->stream));
		c->ring_ev_set[c->ring_cur] = true;
		c->ring_cur ^= 1;
		if (c->ring_ev_set[c->ring_cur])
			CUDA_TRY(cudaEventSynchronize(c->ring_ev[c->ring_cur]));
		c->ring_off = 0;
	}
	*h = c->ring_h + (size_t)c->ring_cur * c->ring_half + c->ring_off;
	*d = c->ring_d + (size_t)c->ring_cur * c->ring_half + c->ring_off;
	c->ring_off += bytes;
	return VD_OK;
}

/* A zeroed host blob of bytes where an op lays out its index arrays. */
static vd_status blob_get(cu_ctx *c, size_t bytes, char **out)
{
	if (bytes > c->blob_cap) {
		size_t cap = align_up(bytes, 4096);
		char *p = (char *)realloc(c->blob, cap);

		if (!p)
			return vd_errorf(VD_ERR_NOMEM, "cuda backend: out of host memory for %zu bytes",
					 bytes);
		c->blob = p;
		c->blob_cap = cap;
	}
	memset(c->blob, 0, bytes);
	*out = c->blob;
	return VD_OK;
}

/* Make the first bytes of c->blob available on the device as *dev, a
 * buffer of kind `kind` that stays valid until the next put_index of the
 * same kind. Identical bytes to the last call of that kind cost no copy. */
static vd_status put_graph(cu_ctx *c, int kind, size_t bytes, const char **dev);

static vd_status put_index(cu_ctx *c, int kind, size_t bytes, const char **dev)
{
	idx_buf *b = &c->idx[kind];
	char *h, *d;

	if (c->gmode)
		return put_graph(c, kind, bytes, dev);
	if (b->len == bytes && bytes > 0 && memcmp(b->shadow, c->blob, bytes) == 0) {
		*dev = b->dev;
		return VD_OK;
	}
	b->len = 0;
	if (bytes > b->cap) {
		size_t cap = align_up(bytes > 2 * b->cap ? bytes : 2 * b->cap, 4096);
		char *sh = (char *)realloc(b->shadow, cap);

		if (!sh)
			return vd_errorf(VD_ERR_NOMEM, "cuda backend: out of host memory");
		b->shadow = sh;
		if (b->dev)
			CUDA_TRY(cudaFreeAsync(b->dev, c->stream));
		b->dev = NULL;
		b->cap = 0;
		TRY(dev_alloc(c, cap, (void **)&b->dev));
		b->cap = cap;
	}
	if (bytes > 0) {
		TRY(ring_take(c, bytes, &h, &d));
		memcpy(h, c->blob, bytes);
		CUDA_TRY(cudaMemcpyAsync(b->dev, h, bytes, cudaMemcpyHostToDevice, c->stream));
		memcpy(b->shadow, c->blob, bytes);
		b->len = bytes;
	}
	*dev = b->dev;
	return VD_OK;
}

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
__device__ float block_sum(float v, float *sh)
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
static const vd_operand_rules RULES = {
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

static bool env_on(const char *name);
#include "kernels/cuda/graphs.cuh"

static vd_status check_t(const vd_tensor *t, const char *op, const char *what, bool floats)
{
	return vd_operand_check(&RULES, t, op, what, floats);
}

static vd_status get_rows(const vd_tensor *t, const char *op, const char *what, rv *out)
{
	return vd_operand_rows(&RULES, t, op, what, out);
}

static vd_status get_vec(const vd_tensor *t, int64_t c, const char *op, const char *what, rv *out)
{
	return vd_operand_vec(&RULES, t, c, op, what, out);
}

static vd_status get_heads(const vd_tensor *t, const char *op, const char *what, hv *out)
{
	return vd_operand_heads(&RULES, t, op, what, out);
}

static vd_status get_cache(const vd_tensor *t, const char *op, const char *what, cv *out)
{
	return vd_operand_cache(&RULES, t, op, what, out);
}

static sv get_strided(const vd_tensor *t)
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

static vd_status same_rows(const rv *a, const rv *b, const char *op, const char *an,
			   const char *bn)
{
	return vd_operand_same_rows(&RULES, a, b, op, an, bn);
}

static vd_status check_convertible(vd_dtype from, vd_dtype to, const char *op)
{
	return vd_operand_convertible(&RULES, from, to, op);
}

/* Grid for kernels over (rows, cols): x covers columns in blocks of 256,
 * y covers rows (kernels loop when there are more than 65535). */
static dim3 grid_rc(int64_t n, int64_t c)
{
	return dim3((unsigned)((c + 255) / 256), (unsigned)(n < 65535 ? n : 65535));
}

static vd_status check_grid(int64_t n, int64_t c, const char *op)
{
	if (n > INT32_MAX || (c + 255) / 256 > INT32_MAX)
		return vd_errorf(VD_ERR_LIMIT, "cuda %s: (%lld, %lld) is too large for one launch", op,
				 (long long)n, (long long)c);
	return VD_OK;
}

/* ------------------------------------------------------------ copy kernels */

/* dst = src element-wise over a 4-D shape, any strides, converting floats;
 * int dtypes are moved as raw elements of their size. */
__global__ void k_copy(sv s, sv d, int64_t n, int es)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = i, so = 0, dof = 0;

		for (int k = 3; k >= 0; k--) {
			int64_t idx = r % s.shape[k];

			r /= s.shape[k];
			so += idx * s.stride[k];
			dof += idx * d.stride[k];
		}
		if (es == 0)
			stf(d.p, d.dt, dof, ldf(s.p, s.dt, so));
		else if (es == 1)
			((uint8_t *)d.p)[dof] = ((const uint8_t *)s.p)[so];
		else if (es == 4)
			((uint32_t *)d.p)[dof] = ((const uint32_t *)s.p)[so];
		else
			((uint64_t *)d.p)[dof] = ((const uint64_t *)s.p)[so];
	}
}

static vd_status launch_copy(cu_ctx *c, const sv *s, const sv *d)
{
	int64_t n = s->shape[0] * s->shape[1] * s->shape[2] * s->shape[3];
	int64_t blocks = (n + 255) / 256;
	int es = vd_dtype_is_float_storage((vd_dtype)s->dt) ? 0 : (int)vd_dtype_size((vd_dtype)s->dt);

	if (n == 0)
		return VD_OK;
	k_copy<<<(unsigned)(blocks < 65536 ? blocks : 65536), 256, 0, c->stream>>>(*s, *d, n, es);
	LAUNCHED();
	return VD_OK;
}

/* A packed 2-D (n, c) strided view of p. */
static sv packed2(void *p, vd_dtype dt, int64_t n, int64_t c)
{
	sv v = { p, (int)dt, { 1, 1, n, c }, { 0, 0, c, 1 } };

	return v;
}

/* The packed layout of s's shape at p in dtype dt. */
static sv packed_like(const sv *s, void *p, vd_dtype dt)
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

static sv rows_sv(const rv *r)
{
	sv v = { r->p, r->dt, { 1, 1, r->n, r->c }, { 0, 0, r->rs, 1 } };

	return v;
}

/* ------------------------------------------------------------ memory ops */

static vd_status cu_alloc(vd_backend *be, vd_tensor *t, vd_dtype dtype, int ndim,
			  const int64_t *shape)
{
	int64_t n;
	void *p = NULL;

	TRY(vd_operand_alloc(&RULES, t, dtype, ndim, shape, &n));
	ENTER(be);
	GRAPH_FORBID("alloc");
	if (cudaMallocFromPoolAsync(&p, n > 0 ? (size_t)n * vd_dtype_size(dtype) : 256, c->pool,
				    c->stream) != cudaSuccess) {
		cudaGetLastError();
		return vd_errorf(VD_ERR_NOMEM, "cuda alloc: out of GPU memory for %lld x %s",
				 (long long)n, vd_dtype_name(dtype));
	}
	*t = vd_operand_packed(&RULES, dtype, ndim, shape, p);
	return VD_OK;
}

static void cu_free(vd_backend *be, vd_tensor *t)
{
	if (!t || !t->alloc)
		return;
	{
		cu_ctx *c = ctx_of(be);
		op_scope scope(c);

		if (c->gmode)
			c->gfail = true; /* a graph must not own allocations */

		/* stream-ordered: queued kernels still reading t finish first */
		if (cudaSetDevice(c->device) != cudaSuccess ||
		    cudaFreeAsync(t->alloc, c->stream) != cudaSuccess)
			cudaGetLastError();
	}
	memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------ host staging */

/* Whether [p, p + n) lies in one host_alloc block. */
static bool is_pinned(const cu_ctx *c, const void *p, size_t n)
{
	const char *q = (const char *)p;

	for (int i = 0; i < c->n_pinned; i++)
		if (q >= c->pinned[i].p && q + n <= c->pinned[i].p + c->pinned[i].n)
			return true;
	return false;
}

static vd_status cu_host_alloc(vd_backend *be, size_t bytes, void **out)
{
	void *p = NULL, *grown;

	if (!out)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda host_alloc: out is NULL");
	*out = NULL;
	ENTER(be);
	GRAPH_FORBID("host_alloc");
	grown = realloc(c->pinned, sizeof(*c->pinned) * (size_t)(c->n_pinned + 1));
	if (!grown)
		return vd_errorf(VD_ERR_NOMEM, "cuda host_alloc: out of host memory");
	c->pinned = (decltype(c->pinned))grown;
	CUDA_TRY(cudaHostAlloc(&p, bytes > 0 ? bytes : 1, cudaHostAllocDefault));
	c->pinned[c->n_pinned].p = (const char *)p;
	c->pinned[c->n_pinned++].n = bytes;
	*out = p;
	return VD_OK;
}

static void cu_host_free(vd_backend *be, void *p)
{
	cu_ctx *c = ctx_of(be);
	op_scope scope(c);

	if (!p)
		return;
	for (int i = 0; i < c->n_pinned; i++)
		if (c->pinned[i].p == (const char *)p) {
			c->pinned[i] = c->pinned[--c->n_pinned];
			break;
		}
	if (cudaSetDevice(c->device) != cudaSuccess || cudaFreeHost(p) != cudaSuccess)
		cudaGetLastError();
}

/* Packed conversion of n elements (upload's second half). */
__global__ void k_convert(const void *src, int sdt, void *dst, int ddt, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		stf(dst, ddt, i, ldf(src, sdt, i));
}

/* dst packed; chunks go host -> pinned ring -> device (converted on the GPU
 * when dtypes differ). Returns once src may be reused by the caller. */
static vd_status cu_upload(vd_backend *be, vd_tensor *dst, const void *src, vd_dtype src_dtype,
			   int64_t n)
{
	size_t ses = vd_dtype_size(src_dtype), des;
	int64_t chunk;

	if (!dst || (!src && n > 0) || n < 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda upload: NULL tensor/source or n < 0");
	if (dst->device != VD_DEVICE_CUDA || !vd_tensor_is_contiguous(dst))
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda upload: dst must be a packed CUDA tensor");
	if (n > vd_tensor_numel(dst))
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda upload: %lld elements into a tensor of %lld",
				 (long long)n, (long long)vd_tensor_numel(dst));
	TRY(check_convertible(src_dtype, dst->dtype, "upload"));
	ENTER(be);
	GRAPH_FORBID("upload");
	des = vd_dtype_size(dst->dtype);
	chunk = (int64_t)(c->ring_half / ses);
	if (n > 0 && is_pinned(c, src, (size_t)n * ses)) {
		/* page-locked source: DMA straight from it (through the ring's
		 * device half when a conversion follows), then wait for the
		 * copies so the caller may reuse it */
		for (int64_t done = 0; done < n; done += chunk) {
			int64_t m = n - done < chunk ? n - done : chunk;
			const char *from = (const char *)src + done * (int64_t)ses;
			char *to = (char *)dst->data + done * (int64_t)des, *h, *d;

			if (src_dtype == dst->dtype) {
				CUDA_TRY(cudaMemcpyAsync(to, from, (size_t)m * ses, cudaMemcpyHostToDevice,
							 c->stream));
				continue;
			}
			TRY(ring_take(c, (size_t)m * ses, &h, &d));
			CUDA_TRY(cudaMemcpyAsync(d, from, (size_t)m * ses, cudaMemcpyHostToDevice,
						 c->stream));
			k_convert<<<(unsigned)((m + 255) / 256 < 65536 ? (m + 255) / 256 : 65536), 256,
				    0, c->stream>>>(d, src_dtype, to, dst->dtype, m);
			LAUNCHED();
		}
		CUDA_TRY(cudaStreamSynchronize(c->stream));
		return op_done(c, "upload");
	}
	for (int64_t done = 0; done < n; done += chunk) {
		int64_t m = n - done < chunk ? n - done : chunk;
		char *h, *d;
		char *to = (char *)dst->data + done * (int64_t)des;

		TRY(ring_take(c, (size_t)m * ses, &h, &d));
		memcpy(h, (const char *)src + done * (int64_t)ses, (size_t)m * ses);
		if (src_dtype == dst->dtype) {
			CUDA_TRY(cudaMemcpyAsync(to, h, (size_t)m * ses, cudaMemcpyHostToDevice,
						 c->stream));
			continue;
		}
		CUDA_TRY(cudaMemcpyAsync(d, h, (size_t)m * ses, cudaMemcpyHostToDevice, c->stream));
		k_convert<<<(unsigned)((m + 255) / 256 < 65536 ? (m + 255) / 256 : 65536), 256, 0,
			    c->stream>>>(d, src_dtype, to, dst->dtype, m);
		LAUNCHED();
	}
	return op_done(c, "upload");
}

/* src may be any strided view; dst is packed host memory, f32 for float
 * dtypes. Waits for the stream. */
static vd_status cu_download(vd_backend *be, const vd_tensor *src, void *dst)
{
	int64_t n;
	vd_dtype hdt;
	size_t bytes;

	if (!src || (!dst && vd_tensor_numel(src) > 0))
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda download: NULL tensor or destination");
	TRY(check_t(src, "download", "src", false));
	n = vd_tensor_numel(src);
	hdt = vd_dtype_is_float_storage(src->dtype) ? VD_DTYPE_F32 : src->dtype;
	bytes = (size_t)n * vd_dtype_size(hdt);
	ENTER(be);
	GRAPH_FORBID("download");
	if (n == 0)
		return VD_OK;
	if (src->dtype == hdt && vd_tensor_is_contiguous(src)) {
		CUDA_TRY(cudaMemcpyAsync(dst, src->data, bytes, cudaMemcpyDeviceToHost, c->stream));
	} else {
		void *tmp;
		sv s = get_strided(src), d;

		TRY(scratch(c, bytes, &tmp));
		d = packed_like(&s, tmp, hdt);
		TRY(launch_copy(c, &s, &d));
		CUDA_TRY(cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToHost, c->stream));
	}
	CUDA_TRY(cudaStreamSynchronize(c->stream));
	return VD_OK;
}

/* src and dst: any strided views of the same shape that do not overlap. */
static vd_status cu_copy(vd_backend *be, const vd_tensor *src, vd_tensor *dst)
{
	sv s, d;

	TRY(check_t(src, "copy", "src", false));
	TRY(check_t(dst, "copy", "dst", false));
	if (src->ndim != dst->ndim)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda copy: %d dims into %d dims", src->ndim,
				 dst->ndim);
	for (int k = 0; k < src->ndim; k++)
		if (src->shape[k] != dst->shape[k])
			return vd_errorf(VD_ERR_INVALID_ARG, "cuda copy: shape differs in dim %d", k);
	TRY(check_convertible(src->dtype, dst->dtype, "copy"));
	ENTER(be);
	s = get_strided(src);
	d = get_strided(dst);
	GRAPH_OP("copy", s, d);
	GRAPH_SKIP();
	if (vd_tensor_numel(src) == 0)
		return VD_OK;
	if (src->dtype == dst->dtype && vd_tensor_is_contiguous(src) &&
	    vd_tensor_is_contiguous(dst)) {
		CUDA_TRY(cudaMemcpyAsync(dst->data, src->data,
					 (size_t)vd_tensor_numel(src) * vd_dtype_size(src->dtype),
					 cudaMemcpyDeviceToDevice, c->stream));
		return op_done(c, "copy");
	}
	TRY(launch_copy(c, &s, &d));
	return op_done(c, "copy");
}

static vd_status cu_sync(vd_backend *be)
{
	ENTER(be);
	GRAPH_FORBID("sync");
	CUDA_TRY(cudaStreamSynchronize(c->stream));
	return VD_OK;
}

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

#include "kernels/cuda/gemm.cuh"

/* The work of linear after its checks: y = x w^T (+ b) on c's stream.
 * Also used by ops that contain a GEMM (patch_conv). */
static vd_status linear_run(cu_ctx *c, const rv &xr, const rv &wr, const rv *bp, const rv &yr)
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
static vd_status cu_linear(vd_backend *be, const vd_tensor *x, const vd_tensor *w,
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

static vd_status cu_add(vd_backend *be, const vd_tensor *a, const vd_tensor *b, vd_tensor *y)
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

static vd_status cu_rmsnorm(vd_backend *be, const vd_tensor *x, const vd_tensor *w, float eps,
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

static vd_status cu_add_rmsnorm(vd_backend *be, vd_tensor *r, const vd_tensor *x,
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

static vd_status cu_layernorm(vd_backend *be, const vd_tensor *x, const vd_tensor *w,
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

static vd_status cu_act(vd_backend *be, vd_act kind, const vd_tensor *x, vd_tensor *y)
{
	if (kind != VD_ACT_GELU && kind != VD_ACT_GELU_TANH && kind != VD_ACT_QUICK_GELU &&
	    kind != VD_ACT_SILU)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda act: unknown activation %d", (int)kind);
	return pointwise(be, x, y, 0, kind, 0.0f, "act");
}

static vd_status cu_silu_mul(vd_backend *be, const vd_tensor *x, vd_tensor *y)
{
	return pointwise(be, x, y, 1, VD_ACT_SILU, 0.0f, "silu_mul");
}

static vd_status cu_scale(vd_backend *be, const vd_tensor *x, float s, vd_tensor *y)
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
static vd_status cu_rope(vd_backend *be, vd_tensor *x, const int32_t *positions, const vd_rope *r)
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

/* ------------------------------------------------------------ attention */

#define ATT_WARPS 4
#define ATT_MAX_SPLIT 128

/* Everything an attention kernel needs; key i of query row t is found in
 * the paged cache through the block table (PAGED) or at row starts[s] + i
 * of k/v (segments). */
typedef struct attn_args {
	const void *q;
	int q_dt;
	int64_t q_st, q_sh;
	void *out;
	int o_dt;
	int64_t o_st, o_sh;
	const void *k, *v;        /* TC elements */
	int64_t k_s0, k_s1, k_sh; /* paged: block, slot, head strides; segments: row, 0, head */
	int64_t v_s0, v_s1, v_sh;
	int heads, group, d;
	float scale;
	const int32_t *tok_seq;  /* (T): sequence or segment of each query row */
	const int32_t *starts;   /* query_start_loc (S + 1) or cu (nseg + 1) */
	const int32_t *seq_lens; /* (S), paged */
	const int32_t *tables;   /* (S, max_blocks), paged */
	int max_blocks, bs;
	int64_t chunk; /* keys per split */
	int nsplit;
	float *part; /* (T H, nsplit, d + 2): acc | max | sum, when nsplit > 1 */
	const int32_t *rows;  /* k_attention: the query rows it takes (NULL = all) */
	const int32_t *tiles; /* tile kernels: (sequence, first query) of each tile */
	/* FP8 caches: every output (and partial) is multiplied by the V scale;
	 * the K scale is folded into `scale`. 1 otherwise. */
	float v_scale;
} attn_args;

/* Block (query row t*H + h, split y): 4 warps take keys round-robin from
 * the split's range, two at a time; each lane holds EPL elements of the
 * head dim (lane + 32 e), a warp reduces q.k with shuffles and keeps an
 * online softmax (max m, sum l, unnormalised acc) in f32. Warps then merge in
 * shared memory; one split writes out, several write partials that
 * k_attn_combine merges the same way. */
template <typename TC, int EPL, bool PAGED>
__global__ void __launch_bounds__(ATT_WARPS * 32) k_attention(attn_args a)
{
	__shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS], s_acc[ATT_WARPS][EPL * 32];
	int64_t row = blockIdx.x, t = a.rows ? a.rows[row / a.heads] : row / a.heads;
	int h = (int)(row % a.heads), kh = h / a.group;
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	int s = a.tok_seq[t];
	int64_t n, base = 0, k0, k1;
	const TC *K = (const TC *)a.k, *V = (const TC *)a.v;
	float q[EPL], acc[EPL], m = -INFINITY, l = 0.0f, M = -INFINITY, L = 0.0f, wt[ATT_WARPS];

	if (PAGED) {
		int64_t q0 = a.starts[s], qlen = a.starts[s + 1] - q0;

		/* causal: query row j of the chunk sits at seq_len - qlen + j */
		n = a.seq_lens[s] - qlen + (t - q0) + 1;
	} else {
		base = a.starts[s];
		n = a.starts[s + 1] - base;
	}
	k0 = blockIdx.y * a.chunk;
	k1 = n < k0 + a.chunk ? n : k0 + a.chunk;
#pragma unroll
	for (int e = 0; e < EPL; e++) {
		int idx = lane + 32 * e;

		q[e] = idx < a.d ? ldf(a.q, a.q_dt, t * a.q_st + h * a.q_sh + idx) : 0.0f;
		acc[e] = 0.0f;
	}
	/* two keys per step (i and i + ATT_WARPS): both rows are loaded before
	 * either is used, so the warp waits on memory once per pair */
	for (int64_t i = k0 + warp; i < k1; i += 2 * ATT_WARPS) {
		bool two = i + ATT_WARPS < k1;
		const TC *kp[2], *vp[2];
		float kv[2][EPL], vv[2][EPL], dot[2] = { 0.0f, 0.0f }, sc[2], mn, corr, p[2];

#pragma unroll
		for (int u = 0; u < 2; u++) {
			int64_t key = u && two ? i + ATT_WARPS : i;

			if (PAGED) {
				int64_t blk = a.tables[(int64_t)s * a.max_blocks + key / a.bs];
				int64_t off = key % a.bs;

				kp[u] = K + blk * a.k_s0 + off * a.k_s1 + kh * a.k_sh;
				vp[u] = V + blk * a.v_s0 + off * a.v_s1 + kh * a.v_sh;
			} else {
				kp[u] = K + (base + key) * a.k_s0 + kh * a.k_sh;
				vp[u] = V + (base + key) * a.v_s0 + kh * a.v_sh;
			}
		}
#pragma unroll
		for (int u = 0; u < 2; u++)
#pragma unroll
			for (int e = 0; e < EPL; e++) {
				int idx = lane + 32 * e;

				kv[u][e] = idx < a.d ? to_f(kp[u][idx]) : 0.0f;
				vv[u][e] = idx < a.d ? to_f(vp[u][idx]) : 0.0f;
			}
#pragma unroll
		for (int u = 0; u < 2; u++) {
#pragma unroll
			for (int e = 0; e < EPL; e++)
				dot[u] += q[e] * kv[u][e];
			sc[u] = warp_sum(dot[u]) * a.scale;
		}
		if (!two)
			sc[1] = -INFINITY;
		mn = fmaxf(m, fmaxf(sc[0], sc[1]));
		corr = expf(m - mn); /* 0 for the first keys (m = -inf) */
		p[0] = expf(sc[0] - mn);
		p[1] = two ? expf(sc[1] - mn) : 0.0f;
		l = l * corr + p[0] + p[1];
#pragma unroll
		for (int e = 0; e < EPL; e++)
			acc[e] = acc[e] * corr + p[0] * vv[0][e] + p[1] * vv[1][e];
		m = mn;
	}
	if (lane == 0) {
		s_m[warp] = m;
		s_l[warp] = l;
	}
#pragma unroll
	for (int e = 0; e < EPL; e++)
		s_acc[warp][lane + 32 * e] = acc[e];
	__syncthreads();
#pragma unroll
	for (int w = 0; w < ATT_WARPS; w++)
		M = fmaxf(M, s_m[w]);
#pragma unroll
	for (int w = 0; w < ATT_WARPS; w++) {
		wt[w] = s_m[w] == -INFINITY ? 0.0f : expf(s_m[w] - M); /* warps without keys */
		L += wt[w] * s_l[w];
	}
	for (int idx = threadIdx.x; idx < a.d; idx += blockDim.x) {
		float o = 0.0f;

#pragma unroll
		for (int w = 0; w < ATT_WARPS; w++)
			o += wt[w] * s_acc[w][idx];
		o *= a.v_scale;
		if (a.nsplit == 1)
			stf(a.out, a.o_dt, t * a.o_st + h * a.o_sh + idx, o / L);
		else
			a.part[(row * a.nsplit + blockIdx.y) * (a.d + 2) + idx] = o;
	}
	if (a.nsplit > 1 && threadIdx.x == 0) {
		a.part[(row * a.nsplit + blockIdx.y) * (a.d + 2) + a.d] = M;
		a.part[(row * a.nsplit + blockIdx.y) * (a.d + 2) + a.d + 1] = L;
	}
}

/* Merge the nsplit partials of query row blockIdx.x into out. */
__global__ void k_attn_combine(attn_args a)
{
	__shared__ float wt[ATT_MAX_SPLIT];
	__shared__ float inv_sum;
	int64_t row = blockIdx.x, t = a.rows ? a.rows[row / a.heads] : row / a.heads;
	int h = (int)(row % a.heads);
	const float *p = a.part + row * a.nsplit * (a.d + 2);

	if (threadIdx.x == 0) {
		float M = -INFINITY, L = 0.0f;

		for (int j = 0; j < a.nsplit; j++)
			M = fmaxf(M, p[j * (a.d + 2) + a.d]);
		for (int j = 0; j < a.nsplit; j++) {
			float mj = p[j * (a.d + 2) + a.d];

			wt[j] = mj == -INFINITY ? 0.0f : expf(mj - M); /* empty splits */
			L += wt[j] * p[j * (a.d + 2) + a.d + 1];
		}
		inv_sum = 1.0f / L;
	}
	__syncthreads();
	for (int idx = threadIdx.x; idx < a.d; idx += blockDim.x) {
		float o = 0.0f;

		for (int j = 0; j < a.nsplit; j++)
			o += wt[j] * p[j * (a.d + 2) + idx];
		stf(a.out, a.o_dt, t * a.o_st + h * a.o_sh + idx, o * inv_sum);
	}
}

template <typename TC, bool PAGED>
static void launch_attn_t(cu_ctx *c, dim3 grid, const attn_args *a)
{
	unsigned th = ATT_WARPS * 32;

	if (a->d <= 32)
		k_attention<TC, 1, PAGED><<<grid, th, 0, c->stream>>>(*a);
	else if (a->d <= 64)
		k_attention<TC, 2, PAGED><<<grid, th, 0, c->stream>>>(*a);
	else if (a->d <= 96)
		k_attention<TC, 3, PAGED><<<grid, th, 0, c->stream>>>(*a);
	else if (a->d <= 128)
		k_attention<TC, 4, PAGED><<<grid, th, 0, c->stream>>>(*a);
	else
		k_attention<TC, 8, PAGED><<<grid, th, 0, c->stream>>>(*a);
}


#include "kernels/cuda/decode_attn.cuh"

/* ------------------------------------------------ tensor-core attention */

/* Flash attention on tensor cores (WMMA, bf16/f16 in, f32 accumulation) for
 * tiles of up to FL_M query rows of one sequence and one head: Q stays in
 * shared memory while K and V pass through it FL_N keys at a time; each of
 * the four warps owns 16 query rows, computes S = Q K^T with WMMA, keeps an
 * online softmax (max, sum) in f32 and accumulates O += P V with WMMA into an
 * f32 tile in shared memory. PAGED: keys come through the block table and
 * the mask is causal; otherwise (vision towers) every key of the segment is
 * visible. Used for prefill chunks and vision segments; decode rows stay on
 * k_attention, which splits long contexts. k_flash_mma (flash_mma.cuh)
 * takes the same tiles with its state in registers and is the default;
 * this one is the fallback behind VD_CUDA_FLASH=wmma. */
#define FL_M 64
#define FL_N 64
#define FL_WARPS 4
#define FL_MIN_Q 16 /* query rows of a sequence from which the tile kernel pays */

template <int D> struct fl_layout {
	static constexpr int QLD = D + 8;  /* bf16/f16 rows of Q, K, V */
	static constexpr int SLD = FL_N + 4; /* f32 scores */
	static constexpr int PLD = FL_N + 8; /* bf16/f16 probabilities */
	static constexpr int OLD = D + 4;  /* f32 output accumulator */
	static constexpr size_t q_off = 0;
	static constexpr size_t k_off = q_off + (size_t)FL_M * QLD * 2;
	static constexpr size_t v_off = k_off + (size_t)FL_N * QLD * 2;
	static constexpr size_t s_off = v_off + (size_t)FL_N * QLD * 2;
	static constexpr size_t p_off = s_off + (size_t)FL_M * SLD * 4;
	static constexpr size_t o_off = p_off + (size_t)FL_M * PLD * 2;
	static constexpr size_t bytes = o_off + (size_t)FL_M * OLD * 4;
};

/* 16-byte row loads of n rows of D elements into shared rows of ld; rows past
 * n are zero. src(r) gives the global address of row r. */
template <typename T, int D, typename F>
__device__ __forceinline__ void fl_load_rows(T *dst, int ld, int n, F src)
{
	constexpr int C8 = D / 8;

	for (int i = threadIdx.x; i < FL_M * C8; i += FL_WARPS * 32) {
		int r = i / C8, c = i % C8;
		uint4 v = make_uint4(0, 0, 0, 0);

		if (r < n)
			v = *(const uint4 *)(src(r) + c * 8);
		*(uint4 *)(dst + (size_t)r * ld + c * 8) = v;
	}
}

template <typename T, int D, bool PAGED>
__global__ void __launch_bounds__(FL_WARPS * 32) k_flash(attn_args a)
{
	using namespace nvcuda;
	typedef fl_layout<D> L;
	extern __shared__ __align__(128) unsigned char fl_smem[];
	T *Qs = (T *)(fl_smem + L::q_off), *Ks = (T *)(fl_smem + L::k_off);
	T *Vs = (T *)(fl_smem + L::v_off), *Ps = (T *)(fl_smem + L::p_off);
	float *Ss = (float *)(fl_smem + L::s_off), *Os = (float *)(fl_smem + L::o_off);
	const T *Q = (const T *)a.q, *K = (const T *)a.k, *V = (const T *)a.v;
	int s = a.tiles[2 * blockIdx.x], q0 = a.tiles[2 * blockIdx.x + 1];
	int h = blockIdx.y, kh = h / a.group;
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	int64_t first = a.starts[s], qlen = a.starts[s + 1] - first;
	int nq = (int)(qlen - q0 < FL_M ? qlen - q0 : FL_M);
	/* causal: query j of the chunk is at absolute position ctx0 + j */
	int64_t ctx0 = PAGED ? a.seq_lens[s] - qlen : 0;
	int64_t nkeys = PAGED ? ctx0 + q0 + nq : qlen;
	int rr = lane >> 1, half = lane & 1, my = warp * 16 + rr;
	int64_t my_pos = ctx0 + q0 + my;
	float m = -INFINITY, l = 0.0f;
	T *Pw = Ps + (size_t)warp * 16 * L::PLD;
	float *Sw = Ss + (size_t)warp * 16 * L::SLD, *Ow = Os + (size_t)warp * 16 * L::OLD;

	fl_load_rows<T, D>(Qs, L::QLD, nq, [&](int r) {
		return Q + (first + q0 + r) * a.q_st + h * a.q_sh;
	});
	for (int i = threadIdx.x; i < FL_M * L::OLD; i += FL_WARPS * 32)
		Os[i] = 0.0f;
	for (int64_t kb = 0; kb < nkeys; kb += FL_N) {
		int nk = (int)(nkeys - kb < FL_N ? nkeys - kb : FL_N);

		__syncthreads(); /* the previous tile's K, V are no longer read */
		if (PAGED) {
			fl_load_rows<T, D>(Ks, L::QLD, nk, [&](int r) {
				int64_t key = kb + r, blk = a.tables[(int64_t)s * a.max_blocks + key / a.bs];
				return K + blk * a.k_s0 + (key % a.bs) * a.k_s1 + kh * a.k_sh;
			});
			fl_load_rows<T, D>(Vs, L::QLD, nk, [&](int r) {
				int64_t key = kb + r, blk = a.tables[(int64_t)s * a.max_blocks + key / a.bs];
				return V + blk * a.v_s0 + (key % a.bs) * a.v_s1 + kh * a.v_sh;
			});
		} else {
			fl_load_rows<T, D>(Ks, L::QLD, nk, [&](int r) {
				return K + (first + kb + r) * a.k_s0 + kh * a.k_sh;
			});
			fl_load_rows<T, D>(Vs, L::QLD, nk, [&](int r) {
				return V + (first + kb + r) * a.v_s0 + kh * a.v_sh;
			});
		}
		__syncthreads();

		/* S (16 x FL_N) = Q_w K^T */
		for (int n = 0; n < FL_N / 16; n++) {
			wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
			wmma::fill_fragment(acc, 0.0f);
#pragma unroll
			for (int k = 0; k < D / 16; k++) {
				wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
				wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;

				wmma::load_matrix_sync(fa, Qs + (size_t)warp * 16 * L::QLD + k * 16, L::QLD);
				wmma::load_matrix_sync(fb, Ks + (size_t)n * 16 * L::QLD + k * 16, L::QLD);
				wmma::mma_sync(acc, fa, fb, acc);
			}
			wmma::store_matrix_sync(Sw + n * 16, acc, L::SLD, wmma::mem_row_major);
		}
		__syncwarp();

		/* online softmax: two lanes per row, 32 columns each */
		{
			float v[32], tmax = -INFINITY, mn, alpha, sum = 0.0f;

#pragma unroll
			for (int j = 0; j < 32; j++) {
				int64_t key = kb + half * 32 + j;
				bool ok = key < kb + nk && my < nq && (!PAGED || key <= my_pos);

				v[j] = ok ? Sw[rr * L::SLD + half * 32 + j] * a.scale : -INFINITY;
				tmax = fmaxf(tmax, v[j]);
			}
			tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
			mn = fmaxf(m, tmax);
			alpha = m == -INFINITY ? 0.0f : __expf(m - mn);
#pragma unroll
			for (int j = 0; j < 32; j++) {
				float p = v[j] == -INFINITY ? 0.0f : __expf(v[j] - mn);

				sum += p;
				Pw[rr * L::PLD + half * 32 + j] = from_f<T>(p);
			}
			sum += __shfl_xor_sync(0xffffffffu, sum, 1);
			l = l * alpha + sum;
			if (mn != -INFINITY)
				m = mn;
			for (int c = half * (D / 2); c < (half + 1) * (D / 2); c++)
				Ow[rr * L::OLD + c] *= alpha;
		}
		__syncwarp();

		/* O_w (16 x D) += P_w V */
		for (int n = 0; n < D / 16; n++) {
			wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;

			wmma::load_matrix_sync(acc, Ow + n * 16, L::OLD, wmma::mem_row_major);
#pragma unroll
			for (int k = 0; k < FL_N / 16; k++) {
				wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
				wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;

				wmma::load_matrix_sync(fa, Pw + k * 16, L::PLD);
				wmma::load_matrix_sync(fb, Vs + (size_t)k * 16 * L::QLD + n * 16, L::QLD);
				wmma::mma_sync(acc, fa, fb, acc);
			}
			wmma::store_matrix_sync(Ow + n * 16, acc, L::OLD, wmma::mem_row_major);
		}
		__syncwarp();
	}
	if (my < nq) {
		float inv = l > 0.0f ? 1.0f / l : 0.0f;
		T *o = (T *)a.out + (first + q0 + my) * a.o_st + h * a.o_sh;

		for (int c = half * (D / 2); c < (half + 1) * (D / 2); c++)
			o[c] = from_f<T>(Ow[rr * L::OLD + c] * inv);
	}
}

template <typename T, int D, bool PAGED>
static vd_status launch_flash_d(cu_ctx *c, const attn_args *a, int ntiles)
{
	static bool ready[64];
	int dev = c->device;

	/* shared memory beyond 48 KiB is opted into once per device */
	if (dev < 0 || dev >= 64 || !ready[dev]) {
		CUDA_TRY(cudaFuncSetAttribute(k_flash<T, D, PAGED>,
					      cudaFuncAttributeMaxDynamicSharedMemorySize,
					      (int)fl_layout<D>::bytes));
		if (dev >= 0 && dev < 64)
			ready[dev] = true;
	}
	k_flash<T, D, PAGED><<<dim3((unsigned)ntiles, (unsigned)a->heads), FL_WARPS * 32,
			       fl_layout<D>::bytes, c->stream>>>(*a);
	LAUNCHED();
	return VD_OK;
}

template <typename T, bool PAGED>
static vd_status launch_flash_t(cu_ctx *c, const attn_args *a, int ntiles)
{
	switch (a->d) {
	case 64: return launch_flash_d<T, 64, PAGED>(c, a, ntiles);
	case 80: return launch_flash_d<T, 80, PAGED>(c, a, ntiles);
	case 96: return launch_flash_d<T, 96, PAGED>(c, a, ntiles);
	default: return launch_flash_d<T, 128, PAGED>(c, a, ntiles);
	}
}

#include "kernels/cuda/flash_mma.cuh"

/* The tile kernel, from VD_CUDA_FLASH: k_flash_mma unless it is "wmma"
 * (k_flash) or "0" (none: every row goes to k_attention). */
enum { FLASH_OFF, FLASH_MMA, FLASH_WMMA };

static int flash_mode(void)
{
	static int mode = -1;

	if (mode < 0) {
		const char *e = getenv("VD_CUDA_FLASH");

		if (e && !strcmp(e, "0"))
			mode = FLASH_OFF;
		else if (e && !strcmp(e, "wmma"))
			mode = FLASH_WMMA;
		else
			mode = FLASH_MMA;
	}
	return mode;
}

/* Whether the tile kernels can take this attention: 16-bit q and out of one
 * dtype, kv of that dtype (or FP8 E4M3 for k_flash_mma), a head dim they
 * are built for, 16-byte aligned rows. */
static bool flash_fits(const hv *q, const hv *o, int kv_dt, const void *k, const void *v,
		       const int64_t *kv_strides, int n_strides)
{
	bool fp8 = kv_dt == VD_DTYPE_F8E4M3;

	if (flash_mode() == FLASH_OFF || q->dt == VD_DTYPE_F32 || o->dt != q->dt ||
	    (kv_dt != q->dt && !fp8) || (fp8 && flash_mode() != FLASH_MMA))
		return false;
	if (q->d != 64 && q->d != 80 && q->d != 96 && q->d != 128)
		return false;
	if (((uintptr_t)q->p | (uintptr_t)o->p | (uintptr_t)k | (uintptr_t)v) & 15)
		return false;
	if ((q->st | q->sh | o->st | o->sh) & 7)
		return false;
	for (int i = 0; i < n_strides; i++)
		if (kv_strides[i] & 7)
			return false;
	return true;
}

template <bool PAGED>
static vd_status launch_flash(cu_ctx *c, const attn_args *a, int kv_dt, int ntiles)
{
	if (ntiles == 0)
		return VD_OK;
	if (PAGED && kv_dt == VD_DTYPE_F8E4M3) { /* flash_fits allows FLASH_MMA only */
		if (a->q_dt == VD_DTYPE_BF16)
			return launch_flash_mma_t<__nv_bfloat16, __nv_fp8_e4m3, PAGED>(c, a, ntiles);
		return launch_flash_mma_t<__half, __nv_fp8_e4m3, PAGED>(c, a, ntiles);
	}
	if (flash_mode() == FLASH_WMMA) {
		if (a->q_dt == VD_DTYPE_BF16)
			return launch_flash_t<__nv_bfloat16, PAGED>(c, a, ntiles);
		return launch_flash_t<__half, PAGED>(c, a, ntiles);
	}
	if (a->q_dt == VD_DTYPE_BF16)
		return launch_flash_mma_t<__nv_bfloat16, __nv_bfloat16, PAGED>(c, a, ntiles);
	return launch_flash_mma_t<__half, __half, PAGED>(c, a, ntiles);
}

/* Launch over rows = T*H query rows whose longest context is max_ctx.
 * When rows alone cannot fill the GPU (decode), the keys are split into
 * chunks of at least 128 over more blocks, then combined. */
template <bool PAGED>
static vd_status run_attention(cu_ctx *c, attn_args *a, int kv_dt, int64_t rows, int64_t max_ctx,
			       const char *op)
{
	int64_t want = (8LL * c->num_sms + rows - 1) / rows, by_len = (max_ctx + 127) / 128;
	int64_t nsplit = want < by_len ? want : by_len;

	if (rows > INT32_MAX)
		return vd_errorf(VD_ERR_LIMIT, "cuda %s: %lld query rows are too many", op,
				 (long long)rows);
	if (nsplit > ATT_MAX_SPLIT)
		nsplit = ATT_MAX_SPLIT;
	if (nsplit < 1)
		nsplit = 1;
	a->nsplit = (int)nsplit;
	a->chunk = (max_ctx + nsplit - 1) / nsplit;
	a->part = NULL;
	if (nsplit > 1)
		TRY(scratch(c, sizeof(float) * (size_t)(rows * nsplit * (a->d + 2)), (void **)&a->part));
	dim3 grid((unsigned)rows, (unsigned)nsplit);
	if (kv_dt == VD_DTYPE_F32)
		launch_attn_t<float, PAGED>(c, grid, a);
	else if (kv_dt == VD_DTYPE_BF16)
		launch_attn_t<__nv_bfloat16, PAGED>(c, grid, a);
	else if (kv_dt == VD_DTYPE_F8E4M3)
		launch_attn_t<__nv_fp8_e4m3, PAGED>(c, grid, a);
	else
		launch_attn_t<__half, PAGED>(c, grid, a);
	LAUNCHED();
	if (nsplit > 1) {
		k_attn_combine<<<(unsigned)rows, 128, 0, c->stream>>>(*a);
		LAUNCHED();
	}
	return op_done(c, op);
}

static vd_status check_qkv_heads(const hv *q, int64_t kv_h, int64_t kv_d, const hv *out,
				 const char *op)
{
	return vd_operand_qkv_heads(&RULES, q, kv_h, kv_d, out, op);
}

static vd_status cu_paged_attention(vd_backend *be, const vd_tensor *q, const vd_tensor *k_cache,
				    const vd_tensor *v_cache, const vd_attn_meta *meta, float scale,
				    vd_tensor *out)
{
	hv qh, oh;
	cv kc, vc;
	int64_t max_ctx = 0, S, tabn, nrows = 0;
	int ntiles = 0;
	size_t o_tok = 0, o_st, o_sl, o_tab, o_rows, o_tiles, total;
	char *blob = NULL;
	const char *dev;
	attn_args a;
	bool fp8;
	float k_scale, v_scale;

	TRY(get_heads(q, "paged_attention", "q", &qh));
	TRY(get_heads(out, "paged_attention", "out", &oh));
	TRY(get_cache(k_cache, "paged_attention", "k_cache", &kc));
	TRY(get_cache(v_cache, "paged_attention", "v_cache", &vc));
	if (kc.nb != vc.nb || kc.bs != vc.bs || kc.h != vc.h || kc.d != vc.d || kc.dt != vc.dt)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda paged_attention: k and v caches differ");
	TRY(check_qkv_heads(&qh, kc.h, kc.d, &oh, "paged_attention"));
	if (!meta || !meta->query_start_loc || (meta->num_seqs > 0 && !meta->seq_lens) ||
	    meta->max_blocks < 0)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda paged_attention: incomplete attention metadata");
	/* FP8: K's scale joins the score scale, V's multiplies the outputs */
	fp8 = kc.dt == VD_DTYPE_F8E4M3;
	vd_operand_kv_scales(meta, kc.dt, &k_scale, &v_scale);
	if (fp8 && qh.dt == VD_DTYPE_F32)
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "cuda paged_attention: an FP8 cache needs bf16 or f16 queries");
	ENTER(be);
	GRAPH_OP("paged_attention", qh, oh, kc, vc, scale, k_scale, v_scale, meta->max_blocks);
	S = meta->num_seqs;
	tabn = meta->block_tables ? S * meta->max_blocks : 0;
	o_st = align_up(o_tok + sizeof(int32_t) * (size_t)qh.t, 16);
	o_sl = align_up(o_st + sizeof(int32_t) * (size_t)(S + 1), 16);
	o_tab = align_up(o_sl + sizeof(int32_t) * (size_t)S, 16);
	o_rows = align_up(o_tab + sizeof(int32_t) * (size_t)tabn, 16);
	/* at most T / FL_M + S tiles of (sequence, first query) */
	o_tiles = align_up(o_rows + sizeof(int32_t) * (size_t)qh.t, 16);
	total = o_tiles + 2 * sizeof(int32_t) * (size_t)(qh.t / FL_M + S + 1);
	TRY(blob_get(c, total, &blob));
	TRY(vd_operand_attn_meta(&RULES, meta, qh.t, kc.nb, kc.bs, "paged_attention",
				 (int32_t *)(blob + o_tok), &max_ctx));
	if (qh.t == 0 || qh.h == 0)
		return VD_OK;
	memcpy(blob + o_st, meta->query_start_loc, sizeof(int32_t) * (size_t)(S + 1));
	memcpy(blob + o_sl, meta->seq_lens, sizeof(int32_t) * (size_t)S);
	if (tabn)
		memcpy(blob + o_tab, meta->block_tables, sizeof(int32_t) * (size_t)tabn);
	/* sequences with many query rows (prefill) go to the tensor-core tile
	 * kernel, the others (decode) to the row kernel */
	{
		int64_t strides[6] = { kc.sb, kc.ss, kc.sh, vc.sb, vc.ss, vc.sh };
		bool fl = flash_fits(&qh, &oh, kc.dt, kc.p, vc.p, strides, 6);
		int32_t *rows = (int32_t *)(blob + o_rows), *tiles = (int32_t *)(blob + o_tiles);

		for (int64_t sq = 0; sq < S; sq++) {
			int32_t q0 = meta->query_start_loc[sq], q1 = meta->query_start_loc[sq + 1];

			if (fl && q1 - q0 >= FL_MIN_Q) {
				for (int32_t j = 0; j < q1 - q0; j += FL_M) {
					tiles[2 * ntiles] = (int32_t)sq;
					tiles[2 * ntiles + 1] = j;
					ntiles++;
				}
			} else {
				for (int32_t t = q0; t < q1; t++)
					rows[nrows++] = t;
			}
		}
	}
	TRY(put_index(c, IDX_ATTN, total, &dev));
	GRAPH_OP("paged_attention launch", ntiles, nrows);
	GRAPH_SKIP();
	/* a graph's launches must serve every step it replays: split by the
	 * longest context the block table can hold, not this step's */
	if (c->gmode)
		max_ctx = (int64_t)meta->max_blocks * kc.bs;
	a = (attn_args){ qh.p, qh.dt, qh.st, qh.sh, oh.p, oh.dt, oh.st, oh.sh, kc.p, vc.p,
			 kc.sb, kc.ss, kc.sh, vc.sb, vc.ss, vc.sh, (int)qh.h, (int)(qh.h / kc.h),
			 (int)qh.d, scale * k_scale, (const int32_t *)(dev + o_tok),
			 (const int32_t *)(dev + o_st), (const int32_t *)(dev + o_sl),
			 (const int32_t *)(dev + o_tab), meta->max_blocks, (int)kc.bs, 0, 1, NULL,
			 nrows < qh.t ? (const int32_t *)(dev + o_rows) : NULL,
			 (const int32_t *)(dev + o_tiles), v_scale };
	TRY(launch_flash<true>(c, &a, kc.dt, ntiles));
	if (nrows == 0)
		return op_done(c, "paged_attention");
	{
		int64_t strides[6] = { kc.sb, kc.ss, kc.sh, vc.sb, vc.ss, vc.sh };
		bool done;

		TRY(run_decode(c, &a, kc.dt, nrows, max_ctx, strides, &done));
		if (done)
			return op_done(c, "paged_attention");
	}
	return run_attention<true>(c, &a, kc.dt, nrows * qh.h, max_ctx, "paged_attention");
}

/* One block per token: its K and V rows (all kv heads) into their slots.
 * FP8 caches store x / scale (scales are 1 for other caches). */
__global__ void k_cache_write(hv k, hv v, cv kc, cv vc, const int64_t *slots, float k_scale,
			      float v_scale)
{
	int64_t t = blockIdx.x, slot = slots[t], blk, off;

	if (slot < 0)
		return;
	blk = slot / kc.bs;
	off = slot % kc.bs;
	for (int64_t j = threadIdx.x; j < k.h * k.d; j += blockDim.x) {
		int64_t h = j / k.d, e = j % k.d;

		stf(kc.p, kc.dt, blk * kc.sb + off * kc.ss + h * kc.sh + e,
		    __fdiv_rn(ldf(k.p, k.dt, t * k.st + h * k.sh + e), k_scale));
		stf(vc.p, vc.dt, blk * vc.sb + off * vc.ss + h * vc.sh + e,
		    __fdiv_rn(ldf(v.p, v.dt, t * v.st + h * v.sh + e), v_scale));
	}
}

static vd_status cu_cache_write(vd_backend *be, const vd_tensor *k, const vd_tensor *v,
				vd_tensor *k_cache, vd_tensor *v_cache, const vd_attn_meta *meta)
{
	hv kh, vh;
	cv kc, vc;
	int64_t nslots;
	char *blob = NULL;
	const char *dev;
	float k_scale, v_scale;

	TRY(get_heads(k, "cache_write", "k", &kh));
	TRY(get_heads(v, "cache_write", "v", &vh));
	TRY(get_cache(k_cache, "cache_write", "k_cache", &kc));
	TRY(get_cache(v_cache, "cache_write", "v_cache", &vc));
	if (kh.t != vh.t || kh.h != vh.h || kh.d != vh.d || kc.nb != vc.nb || kc.bs != vc.bs ||
	    kc.h != kh.h || vc.h != kh.h || kc.d != kh.d || vc.d != kh.d || kc.dt != vc.dt)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda cache_write: k, v (T, Hkv, D) and caches (.., Hkv, D) disagree");
	vd_operand_kv_scales(meta, kc.dt, &k_scale, &v_scale);
	if (!meta || meta->num_tokens != kh.t || (kh.t > 0 && !meta->slot_mapping))
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda cache_write: meta must give slot_mapping for %lld tokens",
				 (long long)kh.t);
	if (kh.t > INT32_MAX)
		return vd_errorf(VD_ERR_LIMIT, "cuda cache_write: too many tokens");
	nslots = kc.nb * kc.bs;
	for (int64_t t = 0; t < kh.t; t++)
		if (meta->slot_mapping[t] >= nslots)
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "cuda cache_write: slot %lld of token %lld outside %lld slots",
					 (long long)meta->slot_mapping[t], (long long)t,
					 (long long)nslots);
	ENTER(be);
	GRAPH_OP("cache_write", kh, vh, kc, vc, k_scale, v_scale);
	if (kh.t == 0 || kh.h * kh.d == 0)
		return VD_OK;
	TRY(blob_get(c, sizeof(int64_t) * (size_t)kh.t, &blob));
	memcpy(blob, meta->slot_mapping, sizeof(int64_t) * (size_t)kh.t);
	TRY(put_index(c, IDX_SLOTS, sizeof(int64_t) * (size_t)kh.t, &dev));
	GRAPH_SKIP();
	k_cache_write<<<(unsigned)kh.t, 256, 0, c->stream>>>(kh, vh, kc, vc, (const int64_t *)dev,
							     k_scale, v_scale);
	LAUNCHED();
	return op_done(c, "cache_write");
}

static vd_status cu_attention_segments(vd_backend *be, const vd_tensor *q, const vd_tensor *k,
				       const vd_tensor *v, const int32_t *cu, int nseg, float scale,
				       vd_tensor *out)
{
	hv qh, kh, vh, oh;
	int64_t max_len = 0;
	int ntiles = 0;
	size_t o_st, o_tiles;
	char *blob = NULL;
	const char *dev;
	attn_args a;

	TRY(get_heads(q, "attention_segments", "q", &qh));
	TRY(get_heads(k, "attention_segments", "k", &kh));
	TRY(get_heads(v, "attention_segments", "v", &vh));
	TRY(get_heads(out, "attention_segments", "out", &oh));
	TRY(check_qkv_heads(&qh, kh.h, kh.d, &oh, "attention_segments"));
	if (kh.t != qh.t || vh.t != qh.t || vh.h != kh.h || vh.d != kh.d || vh.dt != kh.dt)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda attention_segments: q, k, v must have the same rows (k, v one dtype)");
	if (!cu || nseg < 0 || cu[0] != 0 || cu[nseg] != qh.t)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda attention_segments: cu must run from 0 to T = %lld",
				 (long long)qh.t);
	ENTER(be);
	GRAPH_OP("attention_segments", qh, kh, vh, oh, scale, nseg);
	o_st = align_up(sizeof(int32_t) * (size_t)qh.t, 16);
	o_tiles = align_up(o_st + sizeof(int32_t) * (size_t)(nseg + 1), 16);
	TRY(blob_get(c, o_tiles + 2 * sizeof(int32_t) * (size_t)(qh.t / FL_M + nseg + 1), &blob));
	for (int g = 0; g < nseg; g++) {
		if (cu[g + 1] < cu[g])
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "cuda attention_segments: cu decreases at segment %d", g);
		for (int32_t t = cu[g]; t < cu[g + 1]; t++)
			((int32_t *)blob)[t] = g;
		if (cu[g + 1] - cu[g] > max_len)
			max_len = cu[g + 1] - cu[g];
	}
	if (qh.t == 0 || qh.h == 0)
		return VD_OK;
	memcpy(blob + o_st, cu, sizeof(int32_t) * (size_t)(nseg + 1));
	{
		int64_t strides[4] = { kh.st, kh.sh, vh.st, vh.sh };

		if (flash_fits(&qh, &oh, kh.dt, kh.p, vh.p, strides, 4)) {
			int32_t *tiles = (int32_t *)(blob + o_tiles);

			for (int g = 0; g < nseg; g++)
				for (int32_t j = 0; j < cu[g + 1] - cu[g]; j += FL_M) {
					tiles[2 * ntiles] = g;
					tiles[2 * ntiles + 1] = j;
					ntiles++;
				}
		}
	}
	TRY(put_index(c, IDX_SEGS, o_tiles + 2 * sizeof(int32_t) * (size_t)ntiles, &dev));
	GRAPH_OP("attention_segments launch", ntiles, max_len);
	GRAPH_SKIP();
	a = (attn_args){ qh.p, qh.dt, qh.st, qh.sh, oh.p, oh.dt, oh.st, oh.sh, kh.p, vh.p,
			 kh.st, 0, kh.sh, vh.st, 0, vh.sh, (int)qh.h, (int)(qh.h / kh.h),
			 (int)qh.d, scale, (const int32_t *)dev, (const int32_t *)(dev + o_st),
			 NULL, NULL, 0, 1, 0, 1, NULL, NULL, (const int32_t *)(dev + o_tiles), 1.0f };
	if (ntiles > 0) {
		TRY(launch_flash<false>(c, &a, kh.dt, ntiles));
		return op_done(c, "attention_segments");
	}
	return run_attention<false>(c, &a, kh.dt, qh.t * qh.h, max_len, "attention_segments");
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

static vd_status cu_embed(vd_backend *be, const vd_tensor *table, const int32_t *ids, int64_t n,
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

static vd_status cu_scatter_rows(vd_backend *be, const vd_tensor *src, const int32_t *rows,
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

static vd_status cu_gather_rows(vd_backend *be, const vd_tensor *src, const int32_t *rows,
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

/* img: (C, H, W), any strides and float dtype; trailing pixels that do
 * not fill a patch are dropped, as a stride-p convolution does. */
static vd_status cu_im2patch(vd_backend *be, const vd_tensor *img, int p, vd_tensor *out)
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
	k_im2patch<<<(unsigned)((total + 255) / 256 < 65536 ? (total + 255) / 256 : 65536), 256, 0,
		     c->stream>>>(s, o, p, npw);
	LAUNCHED();
	return op_done(c, "im2patch");
}

static vd_status cu_zero(vd_backend *be, vd_tensor *t)
{
	ENTER(be);
	GRAPH_FORBID("zero");
	if (!vd_tensor_is_contiguous(t))
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda zero: the tensor must be packed");
	CUDA_TRY(cudaMemsetAsync(t->data, 0, (size_t)vd_tensor_numel(t) * vd_dtype_size(t->dtype),
				 c->stream));
	return op_done(c, "zero");
}

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

static vd_status cu_sample(vd_backend *be, const vd_tensor *x, const float *temps,
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

#include "kernels/cuda/sample.cuh"
#include "kernels/cuda/conv_cudnn.cuh"

/* ------------------------------------------------------------ lifecycle */

static const vd_ops cuda_ops = {
	/* .struct_size = */ sizeof(vd_ops),
	/* .version = */ VD_OPS_VERSION,
	/* .name = */ "cuda",
	/* .alloc = */ cu_alloc,
	/* .free = */ cu_free,
	/* .upload = */ cu_upload,
	/* .download = */ cu_download,
	/* .copy = */ cu_copy,
	/* .sync = */ cu_sync,
	/* .linear = */ cu_linear,
	/* .add = */ cu_add,
	/* .rmsnorm = */ cu_rmsnorm,
	/* .add_rmsnorm = */ cu_add_rmsnorm,
	/* .layernorm = */ cu_layernorm,
	/* .act = */ cu_act,
	/* .silu_mul = */ cu_silu_mul,
	/* .scale = */ cu_scale,
	/* .rope = */ cu_rope,
	/* .cache_write = */ cu_cache_write,
	/* .paged_attention = */ cu_paged_attention,
	/* .attention_segments = */ cu_attention_segments,
	/* .embed = */ cu_embed,
	/* .scatter_rows = */ cu_scatter_rows,
	/* .gather_rows = */ cu_gather_rows,
	/* .im2patch = */ cu_im2patch,
	/* .zero = */ cu_zero,
	/* .sample = */ cu_sample,
	/* .graph_begin = */ cu_graph_begin,
	/* .graph_end = */ cu_graph_end,
	/* .host_alloc = */ cu_host_alloc,
	/* .host_free = */ cu_host_free,
	/* .sample_full = */ cu_sample_full,
	/* .patch_conv = */ cu_patch_conv,
};

int vd_cuda_device_count(void)
{
	int n = 0;

	if (cudaGetDeviceCount(&n) != cudaSuccess) {
		cudaGetLastError();
		return 0;
	}
	return n;
}

static bool env_on(const char *name)
{
	const char *v = getenv(name);

	return v && *v && strcmp(v, "0") != 0;
}

/* Best-effort teardown of whatever part of c exists (create failures too). */
static void ctx_release(cu_ctx *c)
{
	if (c->prof && c->prof_n > 0) {
		double total = 0.0;

		for (int i = 0; i < c->prof_n; i++)
			total += c->prof_tab[i].sec;
		fprintf(stderr, "vllmd cuda profile (%.3f s in ops):", total);
		for (int i = 0; i < c->prof_n; i++)
			fprintf(stderr, " %s %.3f s/%ld", c->prof_tab[i].op, c->prof_tab[i].sec,
				c->prof_tab[i].calls);
		fputc('\n', stderr);
	}
	patch_plans_free(c);
	if (c->stream) {
		cudaSetDevice(c->device);
		cudaStreamSynchronize(c->stream);
		for (int k = 0; k < IDX_COUNT; k++) {
			if (c->idx[k].dev)
				cudaFreeAsync(c->idx[k].dev, c->stream);
			free(c->idx[k].shadow);
		}
		if (c->scratch)
			cudaFree(c->scratch);
		for (int i = 0; i < c->n_retired; i++)
			cudaFree(c->retired[i]);
		for (int i = 0; i < G_MAX; i++) {
			if (c->graphs[i].made)
				cudaGraphExecDestroy(c->graphs[i].exec);
			free(c->graphs[i].slots);
		}
		if (c->ga_d)
			cudaFree(c->ga_d);
		if (c->lt_ws)
			cudaFreeAsync(c->lt_ws, c->stream);
		if (c->ring_d)
			cudaFreeAsync(c->ring_d, c->stream);
		cudaStreamSynchronize(c->stream);
	}
	if (c->ring_h)
		cudaFreeHost(c->ring_h);
	if (c->ga_h)
		cudaFreeHost(c->ga_h);
	if (c->ga_ev)
		cudaEventDestroy(c->ga_ev);
	free(c->retired);
	free(c->pinned);
	for (int k = 0; k < 2; k++)
		if (c->ring_ev[k])
			cudaEventDestroy(c->ring_ev[k]);
	if (c->lt_tab)
		for (int i = 0; i < LT_SLOTS; i++)
			lt_plan_drop(&c->lt_tab[i]);
	free(c->lt_tab);
	if (c->lt)
		cublasLtDestroy(c->lt);
	if (c->blas)
		cublasDestroy(c->blas);
	if (c->pool)
		cudaMemPoolDestroy(c->pool);
	if (c->stream)
		cudaStreamDestroy(c->stream);
	cudaGetLastError();
	pthread_mutex_destroy(&c->mu);
	free(c->blob);
	free(c);
}

static vd_status ctx_init(cu_ctx *c, int device)
{
	cudaMemPoolProps props;
	uint64_t keep = UINT64_MAX;

	c->device = device;
	c->tf32 = env_on("VD_CUDA_TF32");
	c->debug_sync = env_on("VD_CUDA_SYNC");
	c->prof = env_on("VD_CUDA_PROFILE");
	CUDA_TRY(cudaSetDevice(device));
	CUDA_TRY(cudaDeviceGetAttribute(&c->num_sms, cudaDevAttrMultiProcessorCount, device));
	CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
	memset(&props, 0, sizeof(props));
	props.allocType = cudaMemAllocationTypePinned;
	props.location.type = cudaMemLocationTypeDevice;
	props.location.id = device;
	CUDA_TRY(cudaMemPoolCreate(&c->pool, &props));
	/* keep freed memory in the pool: steps free and re-allocate the same sizes */
	CUDA_TRY(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &keep));
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
	for (int k = 0; k < 2; k++)
		CUDA_TRY(cudaEventCreateWithFlags(&c->ring_ev[k], cudaEventDisableTiming));
	c->ring_half = 8u << 20;
	CUDA_TRY(cudaHostAlloc((void **)&c->ring_h, 2 * c->ring_half, cudaHostAllocDefault));
	TRY(dev_alloc(c, 2 * c->ring_half, (void **)&c->ring_d));
	CUDA_TRY(cudaStreamSynchronize(c->stream));
	return VD_OK;
}

vd_status vd_cuda_backend_create(int device, vd_backend **out)
{
	vd_backend *be;
	cu_ctx *c;
	int count = 0;
	cudaError_t e;
	vd_status st;

	if (!out)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda backend: out is NULL");
	*out = NULL;
	e = cudaGetDeviceCount(&count);
	if (e != cudaSuccess || count == 0) {
		cudaGetLastError();
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "cuda backend: no CUDA device (%s); use backend \"cpu\"",
				 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
	}
	if (device < 0 || device >= count)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda backend: device %d of %d does not exist",
				 device, count);
	be = (vd_backend *)calloc(1, sizeof(*be));
	c = (cu_ctx *)calloc(1, sizeof(*c));
	if (!be || !c) {
		free(be);
		free(c);
		return vd_errorf(VD_ERR_NOMEM, "cuda backend: out of memory");
	}
	pthread_mutex_init(&c->mu, NULL);
	st = ctx_init(c, device);
	if (st != VD_OK) {
		ctx_release(c);
		free(be);
		return st;
	}
	be->ops = &cuda_ops;
	if (env_on("VD_CUDA_HOST_SAMPLING")) {
		c->test_ops = cuda_ops;
		c->test_ops.sample_full = NULL;
		be->ops = &c->test_ops;
	}
	be->ctx = c;
	be->device = VD_DEVICE_CUDA;
	be->dtype = VD_DTYPE_BF16;
	*out = be;
	return VD_OK;
}

vd_status vd_cuda_mem_info(vd_backend *be, int64_t *free_bytes, int64_t *total_bytes)
{
	size_t fr = 0, tot = 0;

	CUDA_TRY(cudaSetDevice(ctx_of(be)->device));
	CUDA_TRY(cudaMemGetInfo(&fr, &tot));
	*free_bytes = (int64_t)fr;
	*total_bytes = (int64_t)tot;
	return VD_OK;
}

void vd_cuda_backend_destroy(vd_backend *be)
{
	if (!be)
		return;
	ctx_release(ctx_of(be));
	free(be);
}
