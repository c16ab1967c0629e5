/* The decode attention kernel of the CUDA backend, included by
 * cuda_backend.cu after the row kernel (it shares attn_args and
 * k_attn_combine). */

/* Decode rows over the paged cache (bandwidth-bound). One block per (query
 * row, kv head, split) serves the `group` query heads that share the kv
 * head, so each K/V byte is read once per group. A split takes an equal
 * share of its row's keys (so one launch shape fits every context, as a
 * step graph needs), dec_sub<G>::N keys a round:
 *   1. scores q.k * scale into shared memory (G, N): TPK threads per
 *      key, 16 bytes (8 elements) each, 128 / TPK keys per pass, DEC_UNROLL
 *      passes of loads in flight before any is used;
 *   2. per head, a warp folds the scores into the running max and sum
 *      (online softmax) and turns them into p = exp(s - max);
 *   3. the P V accumulators (G heads x 8 dims per thread, in registers) are
 *      rescaled to the new max and take the keys' V rows.
 * At the end the accumulators are reduced over the keys of a warp with
 * shuffles, then over warps in shared memory; one split writes out, several
 * write k_attn_combine's partials. Splits without keys write max -inf and
 * sum 0 (combine gives them weight 0). */
#define DEC_THREADS 128
#define DEC_WARPS (DEC_THREADS / 32)
#define DEC_UNROLL 4
/* keys per round: shared scores of 8-16 KiB, so contexts up to 2048 keys
 * (512 for groups of 8) take one round */
template <int G> struct dec_sub {
	static constexpr int N = G <= 2 ? 2048 : G == 4 ? 1024 : 512;
};

__device__ __forceinline__ float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* Eight cache elements of type KT as one load: 16 bytes of bf16/f16, 8 of
 * FP8 E4M3. */
template <typename KT> struct dec_vec { typedef uint4 type; };
template <> struct dec_vec<__nv_fp8_e4m3> { typedef uint2 type; };

__device__ __forceinline__ void dec_zero(uint4 &u) { u = make_uint4(0, 0, 0, 0); }
__device__ __forceinline__ void dec_zero(uint2 &u) { u = make_uint2(0, 0); }

/* 8 FP8 E4M3 elements (8 bytes) to f32, two at a time through f16. */
__device__ __forceinline__ void unpack8(const uint2 &u, float *f, const __nv_fp8_e4m3 *)
{
	const __nv_fp8x2_storage_t *p = (const __nv_fp8x2_storage_t *)&u;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		__half2 h = __half2(__nv_cvt_fp8x2_to_halfraw2(p[i], __NV_E4M3));
		float2 t = __half22float2(h);

		f[2 * i] = t.x;
		f[2 * i + 1] = t.y;
	}
}

/* One thread's DEC_UNROLL loads of 8 elements of a round's K or V rows:
 * keys i0, i0 + KL, ... of the round starting at key s0, through the block
 * table (zeros past nk or past the head dim). */
template <int KL, typename KT>
__device__ __forceinline__ void dec_load(typename dec_vec<KT>::type *u, const KT *P, int64_t s_blk,
					 int64_t s_slot, const int32_t *table, int bs, int64_t s0,
					 int i0, int nk, bool dim_ok)
{
	typedef typename dec_vec<KT>::type V8;

#pragma unroll
	for (int x = 0; x < DEC_UNROLL; x++) {
		int i = i0 + x * KL;

		dec_zero(u[x]);
		if (i < nk && dim_ok) {
			int64_t key = s0 + i, blk = table[key / bs];

			u[x] = *(const V8 *)(P + blk * s_blk + (key % bs) * s_slot);
		}
	}
}

/* T: the query and output type; KT: the cache's (T, or FP8 E4M3). */
template <typename T, typename KT, int TPK, int G>
__global__ void __launch_bounds__(DEC_THREADS) k_decode(attn_args a, int kvh)
{
	typedef typename dec_vec<KT>::type V8;
	constexpr int KL = DEC_THREADS / TPK, SUB = dec_sub<G>::N; /* keys per pass, per round */
	__shared__ float sc[G][SUB];
	__shared__ float wsum[DEC_WARPS][G][TPK * 8];
	__shared__ float s_m[G], s_l[G], s_f[G]; /* running max, sum; this round's rescale */
	int r = (int)(blockIdx.x / kvh), kh = (int)(blockIdx.x % kvh);
	int64_t t = a.rows ? a.rows[r] : r;
	int s = a.tok_seq[t], ng = a.group;
	int tid = threadIdx.x, c8 = tid % TPK, kl = tid / TPK, lane = tid & 31, warp = tid >> 5;
	int64_t q0 = a.starts[s], qlen = a.starts[s + 1] - q0;
	/* causal: query row j of the chunk sits at seq_len - qlen + j */
	int64_t n = a.seq_lens[s] - qlen + (t - q0) + 1;
	int64_t chunk = (n + a.nsplit - 1) / a.nsplit;
	int64_t k0 = blockIdx.y * chunk, k1 = n < k0 + chunk ? n : k0 + chunk;
	bool dim_ok = c8 * 8 < a.d;
	const int32_t *table = a.tables + (int64_t)s * a.max_blocks;
	const KT *K = (const KT *)a.k + kh * a.k_sh + c8 * 8;
	const KT *V = (const KT *)a.v + kh * a.v_sh + c8 * 8;
	float q[G][8], acc[G][8];

	if (tid < G) {
		s_m[tid] = -INFINITY;
		s_l[tid] = 0.0f;
	}
#pragma unroll
	for (int g = 0; g < G; g++) {
#pragma unroll
		for (int e = 0; e < 8; e++) {
			q[g][e] = 0.0f;
			acc[g][e] = 0.0f;
		}
		if (g < ng && dim_ok) {
			const T *qp = (const T *)a.q + t * a.q_st + (int64_t)(kh * ng + g) * a.q_sh + c8 * 8;

			unpack8(*(const uint4 *)qp, q[g], (const T *)NULL);
#pragma unroll
			for (int e = 0; e < 8; e++)
				q[g][e] *= a.scale;
		}
	}
	__syncthreads();
	for (int64_t s0 = k0; s0 < k1; s0 += SUB) {
		int nk = (int)(k1 - s0 < SUB ? k1 - s0 : SUB);

		/* 1: scores; every lane of a warp runs the same passes (shuffles) */
		for (int base = 0; base < nk; base += KL * DEC_UNROLL) {
			V8 u[DEC_UNROLL];

			dec_load<KL>(u, K, a.k_s0, a.k_s1, table, a.bs, s0, base + kl, nk, dim_ok);
#pragma unroll
			for (int x = 0; x < DEC_UNROLL; x++) {
				int i = base + x * KL + kl;
				float kf[8];

				unpack8(u[x], kf, (const KT *)NULL);
#pragma unroll
				for (int g = 0; g < G; g++) {
					float d = 0.0f;

#pragma unroll
					for (int e = 0; e < 8; e++)
						d += q[g][e] * kf[e];
#pragma unroll
					for (int o = TPK / 2; o > 0; o >>= 1)
						d += __shfl_xor_sync(0xffffffffu, d, o);
					if (c8 == 0 && i < nk && g < ng)
						sc[g][i] = d;
				}
			}
		}
		__syncthreads();
		/* 2: online softmax, one warp per head */
		for (int g = warp; g < ng; g += DEC_WARPS) {
			float m = -INFINITY, l = 0.0f, mo = s_m[g], mn;

			for (int i = lane; i < nk; i += 32)
				m = fmaxf(m, sc[g][i]);
			mn = fmaxf(mo, warp_max(m));
			for (int i = lane; i < nk; i += 32) {
				float p = __expf(sc[g][i] - mn);

				sc[g][i] = p;
				l += p;
			}
			l = warp_sum(l);
			__syncwarp(); /* every lane read s_m[g] before lane 0 rewrites it */
			if (lane == 0) {
				float f = mo == -INFINITY ? 0.0f : __expf(mo - mn);

				s_f[g] = f;
				s_l[g] = s_l[g] * f + l;
				s_m[g] = mn;
			}
		}
		__syncthreads();
		/* 3: P V */
#pragma unroll
		for (int g = 0; g < G; g++) {
			float f = g < ng ? s_f[g] : 0.0f;

#pragma unroll
			for (int e = 0; e < 8; e++)
				acc[g][e] *= f;
		}
		for (int base = 0; base < nk; base += KL * DEC_UNROLL) {
			V8 u[DEC_UNROLL];

			dec_load<KL>(u, V, a.v_s0, a.v_s1, table, a.bs, s0, base + kl, nk, dim_ok);
#pragma unroll
			for (int x = 0; x < DEC_UNROLL; x++) {
				int i = base + x * KL + kl;
				float vf[8];

				if (i >= nk)
					continue;
				unpack8(u[x], vf, (const KT *)NULL);
#pragma unroll
				for (int g = 0; g < G; g++) {
					float p = g < ng ? sc[g][i] : 0.0f;

#pragma unroll
					for (int e = 0; e < 8; e++)
						acc[g][e] += p * vf[e];
				}
			}
		}
		__syncthreads(); /* sc is rewritten by the next round */
	}
	/* lanes with the same dims (c8) hold different keys: fold them */
#pragma unroll
	for (int g = 0; g < G; g++)
#pragma unroll
		for (int e = 0; e < 8; e++)
#pragma unroll
			for (int o = 16; o >= TPK; o >>= 1)
				acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
	if (lane < TPK)
#pragma unroll
		for (int g = 0; g < G; g++)
#pragma unroll
			for (int e = 0; e < 8; e++)
				wsum[warp][g][c8 * 8 + e] = acc[g][e];
	__syncthreads();
	for (int idx = tid; idx < ng * TPK * 8; idx += DEC_THREADS) {
		int g = idx / (TPK * 8), dd = idx % (TPK * 8), h = kh * ng + g;
		float o = 0.0f;

		if (dd >= a.d)
			continue;
#pragma unroll
		for (int w = 0; w < DEC_WARPS; w++)
			o += wsum[w][g][dd];
		o *= a.v_scale;
		if (a.nsplit == 1)
			stf(a.out, a.o_dt, t * a.o_st + h * a.o_sh + dd, s_l[g] > 0.0f ? o / s_l[g] : 0.0f);
		else
			a.part[(((int64_t)r * a.heads + h) * a.nsplit + blockIdx.y) * (a.d + 2) + dd] = o;
	}
	if (a.nsplit > 1 && tid < ng) {
		float *p = a.part + (((int64_t)r * a.heads + kh * ng + tid) * a.nsplit + blockIdx.y) *
					    (a.d + 2);

		p[a.d] = s_m[tid];
		p[a.d + 1] = s_l[tid];
	}
}

template <typename T, typename KT, int TPK>
static void launch_decode_t(cu_ctx *c, dim3 grid, const attn_args *a, int kvh, int G)
{
	if (G == 1)
		k_decode<T, KT, TPK, 1><<<grid, DEC_THREADS, 0, c->stream>>>(*a, kvh);
	else if (G == 2)
		k_decode<T, KT, TPK, 2><<<grid, DEC_THREADS, 0, c->stream>>>(*a, kvh);
	else if (G == 4)
		k_decode<T, KT, TPK, 4><<<grid, DEC_THREADS, 0, c->stream>>>(*a, kvh);
	else
		k_decode<T, KT, TPK, 8><<<grid, DEC_THREADS, 0, c->stream>>>(*a, kvh);
}

/* The head-dim split (8 or 16 threads a key) for query type T, cache KT. */
template <typename T, typename KT>
static void launch_decode_d(cu_ctx *c, dim3 grid, const attn_args *a, int kvh, int G)
{
	if (a->d <= 64)
		launch_decode_t<T, KT, 8>(c, grid, a, kvh, G);
	else
		launch_decode_t<T, KT, 16>(c, grid, a, kvh, G);
}

/* Paged attention of nrows decode rows (a->rows) on k_decode; *done = false
 * when the shapes are not its (f32, head dim > 128 or not a multiple of 8,
 * groups > 8, unaligned rows): the caller then uses k_attention. Splits
 * only fill the GPU when rows are few; max_ctx bounds the contexts (64
 * keys at least per split). */
static vd_status run_decode(cu_ctx *c, attn_args *a, int kv_dt, int64_t nrows, int64_t max_ctx,
			    const int64_t *kv_strides, bool *done)
{
	static int off = -1;
	int kvh = a->heads / a->group, G = a->group <= 1 ? 1 : a->group <= 2 ? 2 : a->group <= 4 ? 4 : 8;
	int64_t blocks = nrows * kvh, nsplit, by_len;

	*done = false;
	if (off < 0) {
		const char *e = getenv("VD_CUDA_DECODE");

		off = e && !strcmp(e, "0");
	}
	if (off || kv_dt == VD_DTYPE_F32 || a->q_dt == VD_DTYPE_F32 ||
	    (kv_dt != VD_DTYPE_F8E4M3 && a->q_dt != kv_dt) || a->d % 8 || a->d > 128 ||
	    a->group > 8 || ((uintptr_t)a->q | (uintptr_t)a->k | (uintptr_t)a->v) & 15 ||
	    (a->q_st | a->q_sh) & 7 || blocks > INT32_MAX)
		return VD_OK;
	for (int i = 0; i < 6; i++)
		if (kv_strides[i] & 7)
			return VD_OK;
	nsplit = (8LL * c->num_sms + blocks - 1) / blocks;
	by_len = (max_ctx + 63) / 64;
	if (nsplit > by_len)
		nsplit = by_len;
	if (nsplit > ATT_MAX_SPLIT)
		nsplit = ATT_MAX_SPLIT;
	if (nsplit < 1)
		nsplit = 1;
	a->nsplit = (int)nsplit;
	a->chunk = 0; /* k_decode divides each row's own keys */
	a->part = NULL;
	if (nsplit > 1)
		TRY(scratch(c, sizeof(float) * (size_t)(nrows * a->heads * nsplit * (a->d + 2)),
			    (void **)&a->part));
	dim3 grid((unsigned)blocks, (unsigned)nsplit);
	if (kv_dt == VD_DTYPE_F8E4M3)
		a->q_dt == VD_DTYPE_BF16
			? launch_decode_d<__nv_bfloat16, __nv_fp8_e4m3>(c, grid, a, kvh, G)
			: launch_decode_d<__half, __nv_fp8_e4m3>(c, grid, a, kvh, G);
	else if (kv_dt == VD_DTYPE_BF16)
		launch_decode_d<__nv_bfloat16, __nv_bfloat16>(c, grid, a, kvh, G);
	else
		launch_decode_d<__half, __half>(c, grid, a, kvh, G);
	LAUNCHED();
	if (nsplit > 1) {
		k_attn_combine<<<(unsigned)(nrows * a->heads), 128, 0, c->stream>>>(*a);
		LAUNCHED();
	}
	*done = true;
	return VD_OK;
}
