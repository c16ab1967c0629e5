/* FlashAttention-2 style tile kernel on raw mma.sync (included by
 * cuda_backend.cu after k_flash; same arguments, tiles and results).
 *
 * A block takes FL_M = 64 query rows of one sequence (or segment) and one
 * head; each of its four warps owns 16 rows. Q comes once through shared
 * memory into registers as mma A fragments; K and V pass through shared
 * memory FM_N keys at a time with cp.async, double-buffered so the next
 * tile loads while the current one is computed. Scores S = Q K^T, the
 * online softmax state (row max m, row sum l) and the output accumulator O
 * all stay in registers; P goes from the S accumulators straight into the
 * A fragments of O += P V, with no trip through shared memory.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16 with 16-bit A/B and f32 C/D;
 * g = lane / 4, c = lane % 4; every 32-bit register holds two 16-bit
 * elements, the lower column (A) or row (B) in the low half):
 *   A (16 x 16, row): a0 = (row g,     cols 2c, 2c+1)
 *                     a1 = (row g + 8, cols 2c, 2c+1)
 *                     a2 = (row g,     cols 2c+8, 2c+9)
 *                     a3 = (row g + 8, cols 2c+8, 2c+9)
 *   B (16 x 8, col):  b0 = (rows 2c, 2c+1 of col g), b1 = (rows 2c+8, 2c+9 of col g)
 *   C, D (16 x 8):    d0, d1 = (row g, cols 2c, 2c+1), d2, d3 = (row g + 8, same cols)
 * ldmatrix .x4: lanes 8i .. 8i+7 give the addresses of rows 0..7 of 8 x 8
 * matrix i (16 bytes a row); register i of lane l receives matrix i's
 * elements (row l/4, cols 2(l%4), 2(l%4)+1). With .trans it receives
 * (rows 2(l%4), 2(l%4)+1 of col l/4) instead.
 * So, with K and V stored a key per shared row:
 *   Q A fragment: matrices (rows 0-7, cols 0-7), (rows 8-15, cols 0-7),
 *     (rows 0-7, cols 8-15), (rows 8-15, cols 8-15): lane l points at row
 *     l % 16, col 8 (l / 16).
 *   K^T B fragments (B[k][n] = K[n][k], plain ldmatrix of K rows): matrices
 *     (keys 0-7, dims 0-7), (keys 0-7, dims 8-15), (keys 8-15, dims 0-7),
 *     (keys 8-15, dims 8-15) give b0, b1 of keys 0-7 and b0, b1 of keys
 *     8-15: lane l points at key l % 8 + 8 (l / 16), dim 8 ((l / 8) % 2).
 *   V B fragments (B[k][n] = V[k][n], ldmatrix .trans of V rows): matrices
 *     (keys 0-7, dims 0-7), (keys 8-15, dims 0-7), (keys 0-7, dims 8-15),
 *     (keys 8-15, dims 8-15) give b0, b1 of dims 0-7 and of dims 8-15:
 *     lane l points at key l % 16, dim 8 (l / 16).
 *   P A fragment of keys 16k .. 16k+15 from the S accumulators of key
 *     tiles 2k and 2k+1 (8 keys each): a0 = S[2k].d0,d1, a1 = S[2k].d2,d3,
 *     a2 = S[2k+1].d0,d1, a3 = S[2k+1].d2,d3.
 * A lane thus holds rows g and g + 8 of its warp's 16; the four lanes of a
 * quad (same g) share those rows, so row max and sum reduce over
 * __shfl_xor 1 and 2.
 *
 * Shared rows are D + 8 elements (16 bytes of padding): the eight 16-byte
 * rows one ldmatrix phase reads then fall in eight different bank groups
 * for every D here (row strides 144, 176, 208, 272 bytes). */
#define FM_N 64 /* keys per tile */

static_assert(FM_N == FL_M, "Q is staged in a K buffer of FM_N rows");

template <int D, bool PAGED> struct fm_layout {
	static constexpr int LD = D + 8;               /* elements per shared row */
	static constexpr uint32_t TILE = FM_N * LD * 2; /* bytes of one K or V tile */
	/* K, V of two stages; paged: then the cache rows of two tiles' keys */
	static constexpr uint32_t ROWS = 4 * TILE;
	static constexpr size_t bytes = ROWS + (PAGED ? 2 * FM_N * sizeof(longlong2) : 0);
	/* blocks per SM that the registers are budgeted for: three (168
	 * registers a thread) where that does not spill, else two (255);
	 * ptxas left to itself spills a little at D = 64 */
	static constexpr int MIN_BLOCKS = D == 64 || (D == 80 && !PAGED) ? 3 : 2;
};

/* Two floats rounded to nearest into one register, lo in the low half. */
template <typename T> __device__ __forceinline__ uint32_t fm_pack(float lo, float hi);

template <> __device__ __forceinline__ uint32_t fm_pack<__nv_bfloat16>(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
	uint32_t u;

	memcpy(&u, &v, sizeof(u));
	return u;
}

template <> __device__ __forceinline__ uint32_t fm_pack<__half>(float lo, float hi)
{
	__half2 v = __floats2half2_rn(lo, hi);
	uint32_t u;

	memcpy(&u, &v, sizeof(u));
	return u;
}

__device__ __forceinline__ uint32_t fm_saddr(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes from global src to shared dst; zeros when !ok (src unread). */
__device__ __forceinline__ void fm_cp16(uint32_t dst, const void *src, bool ok)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst),
		     "l"(__cvta_generic_to_global(src)), "r"(ok ? 16 : 0)
		     : "memory");
}

/* 16 bytes from registers to shared dst. */
__device__ __forceinline__ void fm_st16(uint32_t dst, uint4 v)
{
	asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(dst), "r"(v.x), "r"(v.y),
		     "r"(v.z), "r"(v.w)
		     : "memory");
}

/* 8 FP8 E4M3 elements (8 bytes) as 8 elements of T (16 bytes), exactly:
 * every E4M3 value is an f16 and a bf16 value too. */
template <typename T> __device__ __forceinline__ uint4 fm_fp8x8(uint2 u);

template <> __device__ __forceinline__ uint4 fm_fp8x8<__half>(uint2 u)
{
	const __nv_fp8x2_storage_t *p = (const __nv_fp8x2_storage_t *)&u;
	uint32_t r[4];

#pragma unroll
	for (int i = 0; i < 4; i++) {
		__half2_raw h = __nv_cvt_fp8x2_to_halfraw2(p[i], __NV_E4M3);

		memcpy(&r[i], &h, sizeof(r[i]));
	}
	return make_uint4(r[0], r[1], r[2], r[3]);
}

template <> __device__ __forceinline__ uint4 fm_fp8x8<__nv_bfloat16>(uint2 u)
{
	const __nv_fp8x2_storage_t *p = (const __nv_fp8x2_storage_t *)&u;
	uint32_t r[4];

#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(p[i], __NV_E4M3)));
		__nv_bfloat162 b = __float22bfloat162_rn(f);

		memcpy(&r[i], &b, sizeof(r[i]));
	}
	return make_uint4(r[0], r[1], r[2], r[3]);
}

/* Every cp.async of this thread has landed. */
__device__ __forceinline__ void fm_cp_wait()
{
	asm volatile("cp.async.wait_all;\n" ::: "memory");
}

__device__ __forceinline__ void fm_ldsm(uint32_t r[4], uint32_t addr)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(addr)
		     : "memory");
}

__device__ __forceinline__ void fm_ldsm_t(uint32_t r[4], uint32_t addr)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(addr)
		     : "memory");
}

/* d += a b for one m16n8k16 tile (layouts above). */
template <typename T>
__device__ __forceinline__ void fm_mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void fm_mma<__nv_bfloat16>(float d[4], const uint32_t a[4], uint32_t b0,
							uint32_t b1)
{
	asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
	    "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
	    : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void fm_mma<__half>(float d[4], const uint32_t a[4], uint32_t b0,
						 uint32_t b1)
{
	asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
	    "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
	    : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* 2^x on the SFU; 2^-inf = 0. */
__device__ __forceinline__ float fm_exp2(float x)
{
	float y;

	asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
	return y;
}

/* T: the type of q, out and the tiles in shared memory; KT: the type of K
 * and V in memory, T or (paged only) FP8 E4M3, which is converted to T on
 * its way into shared memory by plain loads and stores instead of cp.async. */
template <typename T, typename KT, int D, bool PAGED>
__global__ void __launch_bounds__(FL_WARPS * 32, (fm_layout<D, PAGED>::MIN_BLOCKS))
	k_flash_mma(attn_args a)
{
	typedef fm_layout<D, PAGED> L;
	constexpr int C8 = D / 8;                           /* 16-byte chunks of a row */
	constexpr int PER = FM_N * C8 / (FL_WARPS * 32); /* chunks of a tile per thread */
	extern __shared__ __align__(128) unsigned char fm_smem[];
	const T *Q = (const T *)a.q;
	const KT *K = (const KT *)a.k, *V = (const KT *)a.v;
	int s = a.tiles[2 * blockIdx.x], q0 = a.tiles[2 * blockIdx.x + 1];
	int h = blockIdx.y, kh = h / a.group;
	int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
	int64_t first = a.starts[s];
	int qlen = a.starts[s + 1] - a.starts[s];
	int nq = qlen - q0 < FL_M ? qlen - q0 : FL_M;
	/* causal: row r of the tile is at absolute position pos0 + r and sees
	 * keys 0 .. pos0 + r; the tile's last row sees nkeys keys. Segments:
	 * every row sees the segment's qlen keys. */
	int pos0 = PAGED ? a.seq_lens[s] - qlen + q0 : 0;
	int nkeys = PAGED ? pos0 + nq : qlen;
	int ntile = (nkeys + FM_N - 1) / FM_N;
	/* shared: stage i holds K at 2i TILE and V at (2i + 1) TILE; Q passes
	 * through stage 1's K before the first tile of stage 1 is loaded.
	 * Paged: rows[(t % 2) FM_N + r] = k and v element offsets of key
	 * t FM_N + r's cache row, looked up two tiles ahead, so the block
	 * table's latency and the division by the block size stay off the
	 * loads. */
	uint32_t sm = fm_saddr(fm_smem), qs = sm + 2 * L::TILE;
	longlong2 *rows = (longlong2 *)(fm_smem + L::ROWS);
	/* per-lane ldmatrix offsets (bytes) of the layouts above */
	uint32_t a_off = ((lane & 15) * L::LD + (lane >> 4) * 8) * 2;
	uint32_t k_off = (((lane & 7) + (lane >> 4) * 8) * L::LD + ((lane >> 3) & 1) * 8) * 2;
	const KT *Kh = K + kh * a.k_sh, *Vh = V + kh * a.v_sh;
	const int32_t *table = PAGED ? a.tables + (int64_t)s * a.max_blocks : NULL;
	float sl = a.scale * 1.4426950408889634f; /* scores in log2 units */
	float o[D / 8][4], m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.0f, 0.0f };
	uint32_t qf[D / 16][4];

	/* paged: key t FM_N + tid sits in slot off of cache block blk */
	auto store_row = [&](int t, int blk, int off) {
		rows[(t & 1) * FM_N + tid] = make_longlong2(blk * a.k_s0 + off * a.k_s1,
							    blk * a.v_s0 + off * a.v_s1);
	};
	/* keys kb .. kb + FM_N - 1 (tile t) into stage t % 2; keys past nkeys
	 * are zeros: finite scores that the mask drops, and zero rows of V */
	auto load_kv = [&](int t) {
		uint32_t ks = sm + 2 * (t & 1) * L::TILE, vs = ks + L::TILE;
		int kb = t * FM_N;

#pragma unroll
		for (int u = 0; u < PER; u++) {
			int i = tid + u * FL_WARPS * 32, r = i / C8, ch = i % C8;
			bool ok = kb + r < nkeys;
			const KT *kp = K, *vp = V;
			uint32_t so = (uint32_t)(r * L::LD + ch * 8) * 2;

			if (ok) {
				if (PAGED) {
					longlong2 ro = rows[(t & 1) * FM_N + r];

					kp = Kh + ro.x + ch * 8;
					vp = Vh + ro.y + ch * 8;
				} else {
					kp = Kh + (first + kb + r) * a.k_s0 + ch * 8;
					vp = Vh + (first + kb + r) * a.v_s0 + ch * 8;
				}
			}
			if constexpr (sizeof(KT) == 1) {
				uint2 kr = make_uint2(0, 0), vr = make_uint2(0, 0);

				if (ok) {
					kr = *(const uint2 *)kp;
					vr = *(const uint2 *)vp;
				}
				fm_st16(ks + so, fm_fp8x8<T>(kr));
				fm_st16(vs + so, fm_fp8x8<T>(vr));
			} else {
				fm_cp16(ks + so, kp, ok);
				fm_cp16(vs + so, vp, ok);
			}
		}
	};

	if (PAGED) {
		for (int t = 0; t < 2 && t < ntile; t++)
			if (tid < FM_N) {
				int key = t * FM_N + tid;

				if (key < nkeys)
					store_row(t, table[key / a.bs], key % a.bs);
			}
		__syncthreads();
	}
#pragma unroll
	for (int u = 0; u < PER; u++) {
		int i = tid + u * FL_WARPS * 32, r = i / C8, ch = i % C8;
		const T *qp = r < nq ? Q + (first + q0 + r) * a.q_st + h * a.q_sh + ch * 8 : Q;

		fm_cp16(qs + (uint32_t)(r * L::LD + ch * 8) * 2, qp, r < nq);
	}
	load_kv(0);
	fm_cp_wait();
	__syncthreads();
#pragma unroll
	for (int kk = 0; kk < D / 16; kk++)
		fm_ldsm(qf[kk], qs + warp * 16 * L::LD * 2 + a_off + kk * 32);
#pragma unroll
	for (int n = 0; n < D / 8; n++)
#pragma unroll
		for (int e = 0; e < 4; e++)
			o[n][e] = 0.0f;
	__syncthreads(); /* Q is in registers: stage 1 may be loaded */

	for (int j = 0; j < ntile; j++) {
		int kb = j * FM_N;
		uint32_t ks = sm + 2 * (j & 1) * L::TILE, vs = ks + L::TILE;
		/* rows past nq and, causal, keys above the diagonal of all the
		 * warp's rows are skipped */
		bool busy = warp * 16 < nq && (!PAGED || kb <= pos0 + warp * 16 + 15);
		/* paged: block-table entry of key (j + 2) FM_N + tid, fetched
		 * now and stored after the math into the rows slot of tile j,
		 * whose last reader, load_kv(j), came before the last barrier */
		bool look = PAGED && tid < FM_N && (j + 2) * FM_N + tid < nkeys;
		int nblk = 0, noff = 0;

		if (j + 1 < ntile)
			load_kv(j + 1);
		if (look) {
			nblk = table[((j + 2) * FM_N + tid) / a.bs];
			noff = ((j + 2) * FM_N + tid) % a.bs;
		}
		if (busy) {
			float sc[FM_N / 8][4], mx[2] = { -INFINITY, -INFINITY }, mu[2], al[2];

#pragma unroll
			for (int n = 0; n < FM_N / 8; n++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					sc[n][e] = 0.0f;
			/* S (16 x FM_N) = Q K^T, 16 keys per ldmatrix */
#pragma unroll
			for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
				for (int np = 0; np < FM_N / 16; np++) {
					uint32_t b[4];

					fm_ldsm(b, ks + np * 16 * L::LD * 2 + k_off + kk * 32);
					fm_mma<T>(sc[2 * np], qf[kk], b[0], b[1]);
					fm_mma<T>(sc[2 * np + 1], qf[kk], b[2], b[3]);
				}
#pragma unroll
			for (int n = 0; n < FM_N / 8; n++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					sc[n][e] *= sl;
			/* mask keys past the segment, or past the position of some
			 * row of the warp (a warp-uniform branch) */
			if (PAGED ? kb + FM_N - 1 > pos0 + warp * 16 : kb + FM_N > nkeys) {
#pragma unroll
				for (int n = 0; n < FM_N / 8; n++)
#pragma unroll
					for (int e = 0; e < 4; e++) {
						int key = kb + n * 8 + 2 * c + (e & 1);
						int lim = PAGED ? pos0 + warp * 16 + g + (e >> 1) * 8 + 1 : nkeys;

						if (key >= lim)
							sc[n][e] = -INFINITY;
					}
			}
			/* online softmax: row max over the quad, rescale, P */
#pragma unroll
			for (int n = 0; n < FM_N / 8; n++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					mx[e >> 1] = fmaxf(mx[e >> 1], sc[n][e]);
#pragma unroll
			for (int r = 0; r < 2; r++) {
				float mn;

				mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
				mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
				mn = fmaxf(m[r], mx[r]);
				/* a row without visible keys so far keeps l = 0, O = 0 */
				mu[r] = mn == -INFINITY ? 0.0f : mn;
				al[r] = fm_exp2(m[r] - mu[r]);
				m[r] = mn;
				l[r] *= al[r]; /* this lane's part of the row sum */
			}
#pragma unroll
			for (int n = 0; n < FM_N / 8; n++)
#pragma unroll
				for (int e = 0; e < 4; e++) {
					sc[n][e] = fm_exp2(sc[n][e] - mu[e >> 1]);
					l[e >> 1] += sc[n][e];
				}
#pragma unroll
			for (int n = 0; n < D / 8; n++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					o[n][e] *= al[e >> 1];
			/* O (16 x D) += P V, 16 keys by 16 dims per ldmatrix */
#pragma unroll
			for (int kk = 0; kk < FM_N / 16; kk++) {
				uint32_t p[4] = { fm_pack<T>(sc[2 * kk][0], sc[2 * kk][1]),
						  fm_pack<T>(sc[2 * kk][2], sc[2 * kk][3]),
						  fm_pack<T>(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
						  fm_pack<T>(sc[2 * kk + 1][2], sc[2 * kk + 1][3]) };

#pragma unroll
				for (int dp = 0; dp < D / 16; dp++) {
					uint32_t b[4];

					fm_ldsm_t(b, vs + kk * 16 * L::LD * 2 + a_off + dp * 32);
					fm_mma<T>(o[2 * dp], p, b[0], b[1]);
					fm_mma<T>(o[2 * dp + 1], p, b[2], b[3]);
				}
			}
		}
		if (look)
			store_row(j + 2, nblk, noff);
		if (j + 1 < ntile) {
			fm_cp_wait();
			__syncthreads(); /* tile j + 1 is in; tile j is no longer read */
		}
	}

	/* O / l through shared memory into 16-byte row stores. Stage ntile & 1
	 * is free: its last reads came before the barrier of the loop's
	 * second-to-last iteration (or it held only Q), and no load into it
	 * follows, so each warp stages its own 16 rows there without a block
	 * barrier. */
	{
		T *os = (T *)(fm_smem + 2 * (ntile & 1) * L::TILE) + warp * 16 * L::LD;
		float inv[2];

#pragma unroll
		for (int r = 0; r < 2; r++) {
			l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
			l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
			inv[r] = l[r] > 0.0f ? a.v_scale / l[r] : 0.0f;
		}
#pragma unroll
		for (int n = 0; n < D / 8; n++)
#pragma unroll
			for (int r = 0; r < 2; r++) {
				uint32_t v = fm_pack<T>(o[n][2 * r] * inv[r], o[n][2 * r + 1] * inv[r]);

				memcpy(os + (g + 8 * r) * L::LD + n * 8 + 2 * c, &v, sizeof(v));
			}
		__syncwarp();
#pragma unroll
		for (int u = 0; u < 16 * C8 / 32; u++) {
			int i = lane + 32 * u, r = i / C8, ch = i % C8, row = warp * 16 + r;

			if (row < nq)
				*(uint4 *)((T *)a.out + (first + q0 + row) * a.o_st + h * a.o_sh + ch * 8) =
					*(const uint4 *)(os + r * L::LD + ch * 8);
		}
	}
}

template <typename T, typename KT, int D, bool PAGED>
static vd_status launch_flash_mma_d(cu_ctx *c, const attn_args *a, int ntiles)
{
	static bool ready[64];
	int dev = c->device;

	/* shared memory beyond 48 KiB is opted into once per device */
	if (dev < 0 || dev >= 64 || !ready[dev]) {
		CUDA_TRY(cudaFuncSetAttribute(k_flash_mma<T, KT, D, PAGED>,
					      cudaFuncAttributeMaxDynamicSharedMemorySize,
					      (int)fm_layout<D, PAGED>::bytes));
		if (dev >= 0 && dev < 64)
			ready[dev] = true;
	}
	k_flash_mma<T, KT, D, PAGED><<<dim3((unsigned)ntiles, (unsigned)a->heads), FL_WARPS * 32,
				       fm_layout<D, PAGED>::bytes, c->stream>>>(*a);
	LAUNCHED();
	return VD_OK;
}

template <typename T, typename KT, bool PAGED>
static vd_status launch_flash_mma_t(cu_ctx *c, const attn_args *a, int ntiles)
{
	switch (a->d) {
	case 64: return launch_flash_mma_d<T, KT, 64, PAGED>(c, a, ntiles);
	case 80: return launch_flash_mma_d<T, KT, 80, PAGED>(c, a, ntiles);
	case 96: return launch_flash_mma_d<T, KT, 96, PAGED>(c, a, ntiles);
	default: return launch_flash_mma_d<T, KT, 128, PAGED>(c, a, ntiles);
	}
}
