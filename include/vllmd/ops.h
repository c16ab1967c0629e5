/* The compute interface: one ops table per backend (CPU, CUDA), reached
 * through an opaque vd_backend. Model code (models/, plugins) calls only
 * these ops, so it runs unchanged on every backend. The CPU backend is the
 * oracle: every other backend is tested against it op by op.
 *
 * Conventions: activations are f32 on the CPU backend (bf16/f16 elsewhere);
 * weights may be any float dtype the backend accepts at upload. Small index
 * arrays (token ids, rows, positions, attention metadata) are host pointers;
 * a device backend copies them as it needs. Ops return VD_OK or an error with
 * a message; an op a backend lacks is NULL only where marked optional. */
#ifndef VLLMD_OPS_H
#define VLLMD_OPS_H

#include <math.h>
#include <stdint.h>
#include "vllmd/status.h"
#include "vllmd/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VD_OPS_VERSION 1

typedef struct vd_backend vd_backend;

typedef enum vd_act {
	VD_ACT_GELU = 0,       /* exact erf GELU */
	VD_ACT_GELU_TANH = 1,  /* tanh approximation */
	VD_ACT_QUICK_GELU = 2, /* x * sigmoid(1.702 x) */
	VD_ACT_SILU = 3,
} vd_act;

/* Rotary embedding, rotate-half (NeoX) pairing of dims i and i + rot/2.
 * For token t and frequency i in [0, rot_dim/2):
 *   angle = positions[pos_row[i] * T + t] * inv_freq[table(t) * rot_dim/2 + i]
 * and x[i], x[i+rot/2] rotate by angle; cos and sin are scaled by mscale.
 * pos_row == NULL means row 0 for all i (plain 1-D RoPE); M-RoPE maps each i
 * to its section's row (t, h, w); the Qwen2-VL ViT maps halves to (h, w).
 * table(t) = table_idx ? table_idx[t] : 0 selects one of n_tables inv_freq
 * rows per token (Phi-3 longrope short/long factors). */
typedef struct vd_rope {
	int rot_dim;              /* rotated dims, <= head dim, even */
	int n_tables;             /* rows in inv_freq, >= 1 */
	const float *inv_freq;    /* (n_tables, rot_dim/2), host */
	const uint8_t *pos_row;   /* (rot_dim/2) or NULL, host */
	const int32_t *table_idx; /* (T) or NULL, host */
	float mscale;             /* 1.0 unless longrope/yarn attention factor */
} vd_rope;

/* Attention metadata of one flattened batch over the paged KV cache.
 * Sequence s owns query rows [query_start_loc[s], query_start_loc[s+1]);
 * its cache holds seq_lens[s] tokens after this step's writes, so its query
 * row j is at absolute position seq_lens[s] - q_len(s) + j and attends
 * causally to cache positions 0..that position. Token at absolute position
 * p of sequence s lives in slot block_tables[s*max_blocks+p/bs]*bs + p%bs.
 *
 *   block_tables row s:  [ 7 | 2 | 9 | . ]   bs = 16
 *   positions 0..15 -> block 7, 16..31 -> block 2, 32..47 -> block 9   */
typedef struct vd_attn_meta {
	int num_seqs;
	int num_tokens;                 /* query rows in the batch */
	const int32_t *query_start_loc; /* (num_seqs + 1) */
	const int32_t *seq_lens;        /* (num_seqs) */
	const int32_t *block_tables;    /* (num_seqs, max_blocks) */
	int max_blocks;
	int block_size;
	const int64_t *slot_mapping;    /* (num_tokens): where each new K/V goes */
	/* FP8 caches (VD_DTYPE_F8E4M3) hold x / scale and read back as
	 * stored * scale, one scale per layer for K and for V as vLLM keeps
	 * them; 0 means 1. Ignored for 16- and 32-bit caches. */
	float k_scale, v_scale;
} vd_attn_meta;

/* One logits row of the sample_full op, in vLLM V1's order: tokens the
 * history bans get -inf; then the repetition penalty (tokens seen in the
 * prompt or output: x > 0 ? x / r : x * r), then frequency and presence
 * (tokens in the output: x -= f * count + p, in that rounding order, no
 * fused multiply-add); greedy rows (temperature < 1e-5) take the first
 * maximum of that. Others divide by the temperature (t = x / T in f32),
 * drop t - max(t) < min_p_log (f32), keep the top_k first of the order
 * (t desc, id asc), then the shortest prefix of that order whose mass
 * reaches top_p, the mass summed exactly as int64 weights
 * llrint(exp((double)(t - t_max)) * 2^40) and compared as
 * (double)prefix / (double)total >= top_p, and draw as `sample` does
 * (untempered penalised x / T + g(key, j), double) over the survivors. */
typedef struct vd_sample_row {
	float temperature;        /* < 1e-5: greedy */
	float top_p;              /* in (0, 1): on */
	float min_p_log;          /* logf(min_p), or -INFINITY: off */
	float repetition_penalty; /* 1 or <= 0: off */
	float frequency_penalty;
	float presence_penalty;
	int32_t top_k;            /* in (0, N): on */
	int32_t logprobs;         /* k >= 0: logprob outputs wanted (k <= lp_k) */
	int64_t hist_off;         /* entries hist[hist_off .. hist_off + n_hist) */
	int32_t n_hist;
	int32_t pad_;
	uint64_t key;             /* noise key of the draw */
} vd_sample_row;

/* A token of a row's history; a row lists each token at most once. */
typedef struct vd_sample_hist {
	int32_t token;            /* in [0, N) */
	int32_t flags;            /* VD_HIST_BANNED, VD_HIST_SEEN */
	float count;              /* times in the output (frequency, presence) */
} vd_sample_hist;

#define VD_HIST_BANNED 1 /* -inf before anything else (min_tokens) */
#define VD_HIST_SEEN 2   /* in the prompt or output: repetition penalty */

typedef struct vd_sample_args {
	size_t struct_size;       /* sizeof(vd_sample_args) */
	const vd_sample_row *rows; /* one per row of x, host */
	const vd_sample_hist *hist; /* host */
	int64_t n_hist;
	int32_t lp_k;             /* stride of top_ids/top_lps; logprobs <= lp_k */
	/* outputs, host, complete when the op returns */
	int32_t *picks;           /* M */
	/* for rows with logprobs >= 0, from the raw (unpenalised) logits x:
	 * the pick's logprob and 1-based rank (1 + entries strictly greater),
	 * and the `logprobs` best ids and logprobs (x desc, id asc); may be
	 * NULL when no row asks */
	float *chosen_lp;         /* M */
	int32_t *chosen_rank;     /* M */
	int32_t *top_ids;         /* M * lp_k */
	float *top_lps;           /* M * lp_k */
} vd_sample_args;

typedef struct vd_ops {
	uint32_t struct_size; /* sizeof(vd_ops) of the build that filled it */
	uint32_t version;     /* VD_OPS_VERSION */
	const char *name;     /* "cpu", "cuda" */

	/* --- memory --- */
	/* Allocate an uninitialised packed tensor on this backend. */
	vd_status (*alloc)(vd_backend *be, vd_tensor *t, vd_dtype dtype, int ndim,
			   const int64_t *shape);
	/* Release t's allocation (no-op for views and zeroed tensors). */
	void (*free)(vd_backend *be, vd_tensor *t);
	/* Copy n host elements of src_dtype into dst (packed), converting to
	 * dst->dtype (float dtypes among themselves, or same-dtype ints). */
	vd_status (*upload)(vd_backend *be, vd_tensor *dst, const void *src,
			    vd_dtype src_dtype, int64_t n);
	/* Copy src (packed) to host as f32 (float dtypes) or its own int dtype. */
	vd_status (*download)(vd_backend *be, const vd_tensor *src, void *dst);
	/* dst = src, same shape; both may be strided views; dtype may convert. */
	vd_status (*copy)(vd_backend *be, const vd_tensor *src, vd_tensor *dst);
	/* Block until queued work is done (no-op on CPU). */
	vd_status (*sync)(vd_backend *be);

	/* --- dense math --- */
	/* y (M,N) = x (M,K) @ w (N,K)^T [+ b (N)]. */
	vd_status (*linear)(vd_backend *be, const vd_tensor *x, const vd_tensor *w,
			    const vd_tensor *b, vd_tensor *y);
	/* y = a + b, same shape; y may alias a or b. */
	vd_status (*add)(vd_backend *be, const vd_tensor *a, const vd_tensor *b,
			 vd_tensor *y);
	/* y (M,C) = x (M,C) / rms(x) * w (C). y may alias x. */
	vd_status (*rmsnorm)(vd_backend *be, const vd_tensor *x, const vd_tensor *w,
			     float eps, vd_tensor *y);
	/* Fused: r (M,C) += x; y = rmsnorm(r) * w. The residual stream r is
	 * updated in place. */
	vd_status (*add_rmsnorm)(vd_backend *be, vd_tensor *r, const vd_tensor *x,
				 const vd_tensor *w, float eps, vd_tensor *y);
	/* y (M,C) = layernorm(x) * w + b (b may be NULL). y may alias x. */
	vd_status (*layernorm)(vd_backend *be, const vd_tensor *x, const vd_tensor *w,
			       const vd_tensor *b, float eps, vd_tensor *y);
	/* y = act(x), same shape; y may alias x. */
	vd_status (*act)(vd_backend *be, vd_act kind, const vd_tensor *x, vd_tensor *y);
	/* y (M,F) = silu(x[:, :F]) * x[:, F:] for x (M,2F). */
	vd_status (*silu_mul)(vd_backend *be, const vd_tensor *x, vd_tensor *y);
	/* y = x * s (scalar); y may alias x. */
	vd_status (*scale)(vd_backend *be, const vd_tensor *x, float s, vd_tensor *y);

	/* --- positions --- */
	/* In place on x (T, H, D) (a strided view is fine); positions is
	 * (max pos_row + 1, T) int32 on host. */
	vd_status (*rope)(vd_backend *be, vd_tensor *x, const int32_t *positions,
			  const vd_rope *r);

	/* --- attention --- */
	/* Write k, v (T, Hkv, D) into k_cache, v_cache (num_blocks, block_size,
	 * Hkv, D) at meta->slot_mapping; slots < 0 are skipped. The caches are
	 * in the compute dtype or VD_DTYPE_F8E4M3 (each element x / k_scale or
	 * x / v_scale rounded to nearest even, saturated to +-448). */
	vd_status (*cache_write)(vd_backend *be, const vd_tensor *k, const vd_tensor *v,
				 vd_tensor *k_cache, vd_tensor *v_cache,
				 const vd_attn_meta *meta);
	/* out (T, H, D) = causal softmax(q K^T * scale) V over each sequence's
	 * cached tokens; q (T, H, D); GQA when H is a multiple of Hkv. FP8
	 * caches are read as stored * k_scale (K) and stored * v_scale (V). */
	vd_status (*paged_attention)(vd_backend *be, const vd_tensor *q,
				     const vd_tensor *k_cache, const vd_tensor *v_cache,
				     const vd_attn_meta *meta, float scale, vd_tensor *out);
	/* Full (non-causal) attention inside each segment [cu[i], cu[i+1]) of
	 * rows: vision towers. q, k, v, out (T, H, D); cu (nseg+1) host. */
	vd_status (*attention_segments)(vd_backend *be, const vd_tensor *q,
					const vd_tensor *k, const vd_tensor *v,
					const int32_t *cu, int nseg, float scale,
					vd_tensor *out);

	/* --- rows --- */
	/* out (n, C) = table (V, C)[ids]; ids outside [0,V) are an error. */
	vd_status (*embed)(vd_backend *be, const vd_tensor *table, const int32_t *ids,
			   int64_t n, vd_tensor *out);
	/* dst[rows[i]] = src[i] for i < n; src (n, C), dst (R, C). */
	vd_status (*scatter_rows)(vd_backend *be, const vd_tensor *src,
				  const int32_t *rows, int64_t n, vd_tensor *dst);
	/* dst[i] = src[rows[i]] for i < n; src (R, C), dst (n, C). */
	vd_status (*gather_rows)(vd_backend *be, const vd_tensor *src,
				 const int32_t *rows, int64_t n, vd_tensor *dst);
	/* Non-overlapping p x p patches of img (C, H, W) into out (H/p * W/p,
	 * C*p*p), row-major over patches, each patch (c, ky, kx) flattened:
	 * a stride-p convolution becomes linear() with the kernel as (N, C*p*p). */
	vd_status (*im2patch)(vd_backend *be, const vd_tensor *img, int p,
			      vd_tensor *out);

	/* --- memory, continued --- */
	/* Set every element of the packed tensor t to zero, committing its
	 * memory (KV caches are zeroed at start-up so memory use is known
	 * before the first request, not discovered as blocks are touched). */
	vd_status (*zero)(vd_backend *be, vd_tensor *t);

	/* --- sampling --- */
	/* Optional (NULL: the caller downloads logits and samples on the host).
	 * out[i] (host, M int32, complete when the op returns) = the token for
	 * row i of logits x (M, N):
	 *   temps == NULL or temps[i] <= 0: the first maximum (greedy);
	 *   else argmax_j of x[i][j] / temps[i] + g(keys[i], j), the Gumbel-max
	 *   trick (an exact draw from softmax(x[i] / temps[i])); ties go to the
	 *   lower j, -inf entries are never drawn. g(key, j) = -log(-log(u)) in
	 *   double with u = ((h >> 11) + 0.5) * 2^-53, h = vd_mix64(key + (j + 1)
	 *   * 0x9E3779B97F4A7C15), vd_mix64 the splitmix64 finaliser (below), so
	 *   every backend and the host sampler draw the same token for a key. */
	vd_status (*sample)(vd_backend *be, const vd_tensor *x, const float *temps,
			    const uint64_t *keys, int32_t *out);

	/* --- step graphs --- */
	/* Optional (NULL: every step runs op by op). The ops called between
	 * graph_begin(id) and graph_end form one step. The first time for an id
	 * they are recorded, not run; later, the ops only check their operands
	 * and stage their index arrays, and graph_end launches the recording.
	 * A step that may be replayed must call the same ops on the same
	 * tensors with index arrays of the same sizes each time (a decode step
	 * padded to a fixed batch); the values in the arrays may change.
	 * graph_begin fails with VD_ERR_UNSUPPORTED when graphs are off or this
	 * id could not be recorded before: run the step op by op. graph_end
	 * (always called after a successful graph_begin) launches the step and
	 * sets *ran = 1, or sets *ran = 0 when the step could not be recorded
	 * or differs from the recording; then nothing of it ran, and the caller
	 * runs the ops again outside a graph. Inside a graph, alloc, upload,
	 * download, sync, zero and sample fail. */
	vd_status (*graph_begin)(vd_backend *be, int id);
	vd_status (*graph_end)(vd_backend *be, int *ran);

	/* --- host staging --- */
	/* Optional (NULL: use malloc/free). Host memory that upload reads
	 * fastest (page-locked on a GPU: copied without a bounce buffer);
	 * upload from it still returns once the source may be reused. */
	vd_status (*host_alloc)(vd_backend *be, size_t bytes, void **out);
	void (*host_free)(vd_backend *be, void *p);

	/* --- sampling, continued --- */
	/* Optional (NULL: download the logits and sample on the host). Every
	 * row of x (M, N) f32 sampled with its own filters (vd_sample_row), the
	 * picks and logprobs written to the host arrays of a. The same inputs
	 * give the same picks as kernels/sample.h on the host (up to the
	 * last bit of libm's exp and log, which moves a pick only when a draw
	 * or a top_p mass lands within ~1e-12 of a tie). */
	vd_status (*sample_full)(vd_backend *be, const vd_tensor *x, const vd_sample_args *a);

	/* --- vision, continued --- */
	/* Optional (NULL, or VD_ERR_UNSUPPORTED for a call: use im2patch and
	 * linear). The patch embedding as one convolution whose stride is its
	 * kernel, no padding, no bias, through the backend's convolution
	 * library (cuDNN on the GPU). x is packed and holds B samples of
	 * size[0] channels by size[1] .. size[nd] (its shape may be any that
	 * packs them, e.g. (B, C, H, W), or (B, C T p p) for flattened
	 * patches); kernel[nd] divides each spatial size; w (O, C * k_1 * ..
	 * * k_nd) packed, read as (O, C, k_1 .. k_nd); y (B * S_1/k_1 * .. *
	 * S_nd/k_nd, O) packed, rows in (b, s_1 .. s_nd) order: one token per
	 * patch. nd is 2 (CLIP) or 3 (Qwen2-VL's temporal patches). x, w and y
	 * share one float dtype. */
	vd_status (*patch_conv)(vd_backend *be, const vd_tensor *x, int nd, const int64_t *size,
				const int64_t *kernel, const vd_tensor *w, vd_tensor *y);
} vd_ops;

/* splitmix64's finaliser: the hash behind the sampling noise of `sample`. */
static inline uint64_t vd_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Gumbel noise g(key, j) of the `sample` op. */
static inline double vd_gumbel(uint64_t key, int64_t j)
{
	uint64_t h = vd_mix64(key + (uint64_t)(j + 1) * 0x9e3779b97f4a7c15ull);
	double u = ((double)(h >> 11) + 0.5) * 0x1.0p-53;

	return -log(-log(u));
}

/* A backend handle: the ops and the backend's private context. `dtype` is
 * the compute dtype model code keeps weights, activations and the KV cache
 * in: set at creation (f32 on the CPU, bf16 on GPUs) and changed by the
 * engine (the `dtype` option) before any model tensor is allocated. */
struct vd_backend {
	const vd_ops *ops;
	void *ctx;
	vd_device_kind device;
	vd_dtype dtype;
};

#ifdef __cplusplus
}
#endif
#endif
