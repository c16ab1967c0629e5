/* The operand checks of the ops table (vllmd/ops.h), written once for every
 * backend: a backend states its rules (its name for messages, its device,
 * the float dtypes its ops compute in) and gets back plain views of the
 * operands, or an error whose message starts "<backend> <op>: <operand>".
 * Only layouts are checked here; what an op computes stays in the backend.
 * Pure functions: no allocation, no device access. */
#ifndef VLLMD_KERNELS_OPERANDS_H
#define VLLMD_KERNELS_OPERANDS_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "vllmd/ops.h"
#include "vllmd/status.h"
#include "vllmd/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vd_operand_rules {
	const char *backend;     /* "cpu", "cuda": first word of every message */
	vd_device_kind device;   /* operands must live there */
	uint32_t compute;        /* dtypes ops compute in: bits 1u << vd_dtype */
	const char *compute_str; /* the same for messages: "f32", "f32, bf16 or f16" */
	int64_t max_head_dim;    /* attention's largest head dim; 0 = no limit */
} vd_operand_rules;

/* The views below are plain C structs (the CUDA backend passes them to its
 * kernels by value); p is the first element, dt a vd_dtype, strides in
 * elements. */

/* n rows of c elements, rs elements apart: packed tensors, vd_tensor_rows()
 * slices, column slices of a wider matrix. */
typedef struct vd_rows_view {
	void *p;
	int dt;
	int64_t n, c, rs;
} vd_rows_view;

/* (T, H, D) with a contiguous head dim and any T and H strides. */
typedef struct vd_heads_view {
	void *p;
	int dt;
	int64_t t, h, d, st, sh;
} vd_heads_view;

/* A paged KV cache (num_blocks, block_size, heads, head_dim) with a
 * contiguous head dim; dt is a compute dtype or VD_DTYPE_F8E4M3. */
typedef struct vd_cache_view {
	void *p;
	int dt;
	int64_t nb, bs, h, d, sb, ss, sh;
} vd_cache_view;

/* Contracts, in the order of the definitions below:
 * - vd_dtype_is_float: f32, bf16, f16, the dtypes ops may compute in;
 *   vd_dtype_is_float_storage: those and FP8 E4M3, which memory ops and KV
 *   caches take; vd_dtype_is_known: every dtype of vllmd/tensor.h.
 * - vd_operand_check: t is on the backend's device with data for its
 *   elements and 1..4 dims, in a compute dtype (compute) or any known dtype.
 * - vd_operand_rows: a row view of t (compute dtype): contiguous last dim,
 *   the leading dims collapsing into rows with one stride, rows not
 *   overlapping; vd_operand_vec: exactly one row of c elements (weights,
 *   biases); vd_operand_same_rows: a and b have the same rows and columns.
 * - vd_operand_heads: a (T, H, D) view (compute dtype); vd_operand_cache: a
 *   KV-cache view (compute dtype or FP8 E4M3); vd_operand_qkv_heads: out
 *   has q's shape and q's heads are a multiple of kv_h heads of q's dim (at
 *   most max_head_dim).
 * - vd_operand_convertible: equal dtypes, or float storage dtypes both.
 * - vd_operand_attn_meta: the batch layout of m for T query rows over a
 *   cache of num_blocks blocks of block_size: query_start_loc runs 0..T,
 *   each sequence's queries fit its seq_len, its blocks fit the table and
 *   the cache; fills tok_seq (T: each query row's sequence) and *max_ctx
 *   (the longest seq_len).
 * - vd_operand_kv_scales: the scales an FP8 cache applies (0 in meta means
 *   1); 1 and 1 for other caches.
 * Inline (as patch_conv.h), so that the CUDA archive, linked after the core
 * library, needs nothing from it. */

static inline bool vd_dtype_is_float(vd_dtype t)
{
	return t == VD_DTYPE_F32 || t == VD_DTYPE_F16 || t == VD_DTYPE_BF16;
}

static inline bool vd_dtype_is_float_storage(vd_dtype t)
{
	return vd_dtype_is_float(t) || t == VD_DTYPE_F8E4M3;
}

static inline bool vd_dtype_is_known(vd_dtype t)
{
	return vd_dtype_is_float_storage(t) || t == VD_DTYPE_I32 || t == VD_DTYPE_I64 ||
	       t == VD_DTYPE_U8;
}

static inline bool vd_operand_computes_in(const vd_operand_rules *r, vd_dtype t)
{
	return (unsigned)t < 32 && (r->compute >> (unsigned)t) & 1u;
}

/* The shape and data checks of vd_operand_check, any dtype. */
static inline vd_status vd_operand_layout(const vd_operand_rules *r, const vd_tensor *t,
					  const char *op, const char *what)
{
	if (!t)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s %s: %s is NULL", r->backend, op, what);
	if (t->device != r->device)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s %s: %s is not a %s tensor", r->backend, op,
				 what, r->device == VD_DEVICE_CPU ? "CPU" : "CUDA");
	if (t->ndim < 1 || t->ndim > VD_MAX_DIMS)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s %s: %s has %d dims", r->backend, op, what,
				 t->ndim);
	if (!t->data && vd_tensor_numel(t) > 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s %s: %s has no data", r->backend, op, what);
	return VD_OK;
}

static inline vd_status vd_operand_check(const vd_operand_rules *r, const vd_tensor *t,
					 const char *op, const char *what, bool compute)
{
	vd_status st = vd_operand_layout(r, t, op, what);

	if (st)
		return st;
	if (compute ? !vd_operand_computes_in(r, t->dtype) : !vd_dtype_is_known(t->dtype))
		return vd_errorf(VD_ERR_UNSUPPORTED, "%s %s: %s has dtype %s; expected %s",
				 r->backend, op, what, vd_dtype_name(t->dtype),
				 compute ? r->compute_str : "a known dtype");
	return VD_OK;
}

static inline vd_status vd_operand_rows(const vd_operand_rules *r, const vd_tensor *t,
					const char *op, const char *what, vd_rows_view *out)
{
	vd_status st = vd_operand_check(r, t, op, what, true);
	int last, inner = -1;

	memset(out, 0, sizeof(*out)); /* an error leaves a zero view */
	if (st)
		return st;
	last = t->ndim - 1;
	/* plain assignments: this header is C and C++ (nvcc) alike */
	out->p = t->data;
	out->dt = (int)t->dtype;
	out->n = 1;
	out->c = t->shape[last];
	for (int d = 0; d < last; d++)
		out->n *= t->shape[d];
	if (out->c > 1 && t->stride[last] != 1)
		return vd_errorf(VD_ERR_UNSUPPORTED, "%s %s: %s must have a contiguous last dim",
				 r->backend, op, what);
	out->rs = out->c;
	/* dims of size 1 do not constrain the layout */
	for (int d = last - 1; d >= 0; d--) {
		if (t->shape[d] == 1)
			continue;
		if (inner < 0)
			out->rs = t->stride[d];
		else if (t->stride[d] != t->stride[inner] * t->shape[inner])
			return vd_errorf(VD_ERR_UNSUPPORTED,
					 "%s %s: %s is not a row view (dim %d stride %lld)",
					 r->backend, op, what, d, (long long)t->stride[d]);
		inner = d;
	}
	if (out->n > 1 && out->rs < out->c)
		return vd_errorf(VD_ERR_UNSUPPORTED, "%s %s: %s has overlapping rows", r->backend, op,
				 what);
	return VD_OK;
}

static inline vd_status vd_operand_vec(const vd_operand_rules *r, const vd_tensor *t, int64_t c,
				       const char *op, const char *what, vd_rows_view *out)
{
	vd_status st = vd_operand_rows(r, t, op, what, out);

	if (st)
		return st;
	if (out->n != 1 || out->c != c)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "%s %s: %s must have %lld elements, got (%lld, %lld)", r->backend,
				 op, what, (long long)c, (long long)out->n, (long long)out->c);
	return VD_OK;
}

static inline vd_status vd_operand_same_rows(const vd_operand_rules *r, const vd_rows_view *a,
					     const vd_rows_view *b, const char *op, const char *an,
					     const char *bn)
{
	if (a->n != b->n || a->c != b->c)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "%s %s: %s (%lld, %lld) and %s (%lld, %lld) differ", r->backend, op,
				 an, (long long)a->n, (long long)a->c, bn, (long long)b->n,
				 (long long)b->c);
	return VD_OK;
}

static inline vd_status vd_operand_heads(const vd_operand_rules *r, const vd_tensor *t,
					 const char *op, const char *what, vd_heads_view *out)
{
	vd_status st = vd_operand_check(r, t, op, what, true);

	memset(out, 0, sizeof(*out)); /* an error leaves a zero view */
	if (st)
		return st;
	if (t->ndim != 3)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s %s: %s must be (T, H, D), got %d dims",
				 r->backend, op, what, t->ndim);
	if (t->shape[2] > 1 && t->stride[2] != 1)
		return vd_errorf(VD_ERR_UNSUPPORTED, "%s %s: %s must have a contiguous head dim",
				 r->backend, op, what);
	out->p = t->data;
	out->dt = (int)t->dtype;
	out->t = t->shape[0];
	out->h = t->shape[1];
	out->d = t->shape[2];
	out->st = t->stride[0];
	out->sh = t->stride[1];
	return VD_OK;
}

static inline vd_status vd_operand_cache(const vd_operand_rules *r, const vd_tensor *t,
					 const char *op, const char *what, vd_cache_view *out)
{
	vd_status st = vd_operand_layout(r, t, op, what);

	memset(out, 0, sizeof(*out)); /* an error leaves a zero view */
	if (st)
		return st;
	if (!vd_operand_computes_in(r, t->dtype) && t->dtype != VD_DTYPE_F8E4M3)
		return vd_errorf(VD_ERR_UNSUPPORTED, "%s %s: %s has dtype %s; expected %s or fp8_e4m3",
				 r->backend, op, what, vd_dtype_name(t->dtype), r->compute_str);
	if (t->ndim != 4)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "%s %s: %s must be (blocks, block_size, heads, head_dim), got %d dims",
				 r->backend, op, what, t->ndim);
	if (t->shape[3] > 1 && t->stride[3] != 1)
		return vd_errorf(VD_ERR_UNSUPPORTED, "%s %s: %s must have a contiguous head dim",
				 r->backend, op, what);
	out->p = t->data;
	out->dt = (int)t->dtype;
	out->nb = t->shape[0];
	out->bs = t->shape[1];
	out->h = t->shape[2];
	out->d = t->shape[3];
	out->sb = t->stride[0];
	out->ss = t->stride[1];
	out->sh = t->stride[2];
	return VD_OK;
}

static inline vd_status vd_operand_qkv_heads(const vd_operand_rules *r, const vd_heads_view *q,
					     int64_t kv_h, int64_t kv_d, const vd_heads_view *out,
					     const char *op)
{
	if (out->t != q->t || out->h != q->h || out->d != q->d)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s %s: out must have q's shape", r->backend, op);
	if (kv_d != q->d || kv_h <= 0 || q->h % kv_h)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "%s %s: %lld query heads of dim %lld vs %lld kv heads of dim %lld",
				 r->backend, op, (long long)q->h, (long long)q->d, (long long)kv_h,
				 (long long)kv_d);
	if (r->max_head_dim > 0 && q->d > r->max_head_dim)
		return vd_errorf(VD_ERR_UNSUPPORTED, "%s %s: head dim %lld > %lld", r->backend, op,
				 (long long)q->d, (long long)r->max_head_dim);
	return VD_OK;
}

static inline vd_status vd_operand_convertible(const vd_operand_rules *r, vd_dtype from,
					       vd_dtype to, const char *op)
{
	if (!vd_dtype_is_known(from) || !vd_dtype_is_known(to))
		return vd_errorf(VD_ERR_INVALID_ARG, "%s %s: unknown dtype", r->backend, op);
	if (from == to || (vd_dtype_is_float_storage(from) && vd_dtype_is_float_storage(to)))
		return VD_OK;
	return vd_errorf(VD_ERR_UNSUPPORTED, "%s %s: cannot convert %s to %s", r->backend, op,
			 vd_dtype_name(from), vd_dtype_name(to));
}

static inline vd_status vd_operand_attn_meta(const vd_operand_rules *r, const vd_attn_meta *m,
					     int64_t T, int64_t num_blocks, int64_t block_size,
					     const char *op, int32_t *tok_seq, int64_t *max_ctx)
{
	const char *be = r->backend;

	if (m->num_tokens != T || m->num_seqs < 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s %s: meta has %d tokens, q has %lld", be, op,
				 m->num_tokens, (long long)T);
	if (m->block_size != block_size || block_size <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s %s: meta block_size %d, cache has %lld", be,
				 op, m->block_size, (long long)block_size);
	if (m->query_start_loc[0] != 0 || m->query_start_loc[m->num_seqs] != T)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "%s %s: query_start_loc must run from 0 to num_tokens", be, op);
	*max_ctx = 0;
	for (int s = 0; s < m->num_seqs; s++) {
		int32_t q0 = m->query_start_loc[s], q1 = m->query_start_loc[s + 1];
		int64_t len = m->seq_lens[s], nblk = (len + block_size - 1) / block_size;

		if (q1 < q0 || q1 - q0 > len)
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "%s %s: sequence %d has %d queries but seq_len %lld", be, op,
					 s, q1 - q0, (long long)len);
		if (nblk > m->max_blocks || (nblk > 0 && !m->block_tables))
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "%s %s: sequence %d needs %lld blocks, table has %d", be, op,
					 s, (long long)nblk, m->max_blocks);
		for (int64_t b = 0; b < nblk; b++) {
			int32_t blk = m->block_tables[(int64_t)s * m->max_blocks + b];

			if (blk < 0 || blk >= num_blocks)
				return vd_errorf(VD_ERR_INVALID_ARG,
						 "%s %s: sequence %d block %lld = %d outside the cache",
						 be, op, s, (long long)b, blk);
		}
		for (int32_t t = q0; t < q1; t++)
			tok_seq[t] = s;
		if (len > *max_ctx)
			*max_ctx = len;
	}
	return VD_OK;
}

static inline void vd_operand_kv_scales(const vd_attn_meta *m, int cache_dt, float *k_scale,
					float *v_scale)
{
	bool fp8 = cache_dt == VD_DTYPE_F8E4M3;

	*k_scale = fp8 && m && m->k_scale != 0.0f ? m->k_scale : 1.0f;
	*v_scale = fp8 && m && m->v_scale != 0.0f ? m->v_scale : 1.0f;
}

/* alloc's arguments: t, a known dtype, 0..4 dims of sizes >= 0 whose count
 * times 8 fits int64; *n is the element count. */
static inline vd_status vd_operand_alloc(const vd_operand_rules *r, const vd_tensor *t,
					 vd_dtype dtype, int ndim, const int64_t *shape,
					 int64_t *n)
{
	*n = 1;
	if (!t || !vd_dtype_is_known(dtype) || ndim < 0 || ndim > VD_MAX_DIMS ||
	    (ndim > 0 && !shape))
		return vd_errorf(VD_ERR_INVALID_ARG, "%s alloc: bad tensor, dtype or ndim %d",
				 r->backend, ndim);
	for (int d = 0; d < ndim; d++) {
		if (shape[d] < 0 || (shape[d] > 0 && *n > INT64_MAX / 8 / shape[d]))
			return vd_errorf(VD_ERR_INVALID_ARG, "%s alloc: bad shape[%d] = %lld",
					 r->backend, d, (long long)shape[d]);
		*n *= shape[d];
	}
	return VD_OK;
}

/* A packed tensor of the backend's device over its allocation p. */
static inline vd_tensor vd_operand_packed(const vd_operand_rules *r, vd_dtype dtype, int ndim,
					  const int64_t *shape, void *p)
{
	vd_tensor z;

	memset(&z, 0, sizeof(z));
	z.dtype = dtype;
	z.device = r->device;
	vd_tensor_set_shape(&z, ndim, shape);
	z.data = p;
	z.alloc = p;
	return z;
}

#ifdef __cplusplus
}
#endif
#endif
