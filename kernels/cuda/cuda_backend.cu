/* CUDA backend: every op of vllmd/ops.h on one GPU, all work queued on one
 * stream that the backend owns, so ops are ordered without extra syncs.
 * Tensors come from a stream-ordered memory pool; host index arrays go
 * through pinned staging into per-kind device buffers (reused when the same
 * metadata comes again, as in every layer of one step). This unit holds the
 * context, memory and copy ops, staging and the backend's lifecycle; the op
 * families are in gemm.cu, elementwise.cu, attention.cu, sample.cu, conv.cu
 * and graphs.cu, which share common.cuh. Kernels accumulate in f32 whatever
 * the storage dtype (f32, bf16, f16). Layouts accepted are the CPU
 * oracle's (kernels/operands.h). */
#include "kernels/cuda/common.cuh"

vd_status cuda_fail(cudaError_t e, const char *file, int line, const char *call)
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

/* End of an op: with VD_CUDA_SYNC=1 wait, so a kernel fault is blamed on
 * the op that queued it. */
vd_status op_done(cu_ctx *c, const char *op)
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

vd_status dev_alloc(cu_ctx *c, size_t bytes, void **out)
{
	CUDA_TRY(cudaMallocFromPoolAsync(out, bytes > 0 ? bytes : 256, c->pool, c->stream));
	return VD_OK;
}

/* Device scratch of at least bytes, valid until the next scratch() call;
 * stream order keeps earlier users of the old buffer safe. */
vd_status scratch(cu_ctx *c, size_t bytes, void **out)
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
vd_status ring_take(cu_ctx *c, size_t bytes, char **h, char **d)
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
vd_status blob_get(cu_ctx *c, size_t bytes, char **out)
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
vd_status put_index(cu_ctx *c, int kind, size_t bytes, const char **dev)
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

vd_status launch_copy(cu_ctx *c, const sv *s, const sv *d)
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

bool env_on(const char *name)
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
	gemm_free(c);
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
	TRY(gemm_init(c));
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
