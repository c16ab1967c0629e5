/* Attention on the GPU (vllmd/ops.h): cache_write, paged_attention over the
 * paged KV cache (bf16/f16 or FP8 E4M3) and attention_segments for the
 * vision towers. The decode kernel (decode_attn.cuh), the WMMA tile kernel
 * and the mma.sync tile kernel (flash_mma.cuh), and the row kernel for what
 * neither takes. */
#include "kernels/cuda/common.cuh"

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

vd_status cu_paged_attention(vd_backend *be, const vd_tensor *q, const vd_tensor *k_cache,
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

vd_status cu_cache_write(vd_backend *be, const vd_tensor *k, const vd_tensor *v,
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

vd_status cu_attention_segments(vd_backend *be, const vd_tensor *q, const vd_tensor *k,
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

