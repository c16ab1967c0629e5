/* Tensors: a typed, shaped view of memory on one device.
 * A vd_tensor never frees what it points at by itself: owned tensors are
 * released with the backend that allocated them (vd_ops.free). Shapes are
 * row-major; stride[] is in elements and describes the layout of data. */
#ifndef VLLMD_TENSOR_H
#define VLLMD_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vd_dtype {
	VD_DTYPE_F32 = 0,
	VD_DTYPE_F16 = 1,
	VD_DTYPE_BF16 = 2,
	VD_DTYPE_I32 = 3,
	VD_DTYPE_I64 = 4,
	VD_DTYPE_U8 = 5,
	/* OCP FP8 E4M3 ("e4m3fn": no infinities, 0x7f/0xff NaN, max 448);
	 * storage only (KV caches): backends convert it, ops do not compute in it */
	VD_DTYPE_F8E4M3 = 6,
} vd_dtype;

typedef enum vd_device_kind {
	VD_DEVICE_CPU = 0,
	VD_DEVICE_CUDA = 1,
} vd_device_kind;

#define VD_MAX_DIMS 4

typedef struct vd_tensor {
	vd_dtype dtype;
	vd_device_kind device;
	int ndim;
	int64_t shape[VD_MAX_DIMS];
	int64_t stride[VD_MAX_DIMS]; /* elements, not bytes */
	void *data;                  /* first element */
	void *alloc;                 /* backend allocation handle; NULL = view */
} vd_tensor;

/* Small helpers are inline so plugins (which never link libvllmd) can use
 * them too. */

/* Size in bytes of one element of dtype. */
static inline size_t vd_dtype_size(vd_dtype t)
{
	switch (t) {
	case VD_DTYPE_F32: return 4;
	case VD_DTYPE_F16: return 2;
	case VD_DTYPE_BF16: return 2;
	case VD_DTYPE_I32: return 4;
	case VD_DTYPE_I64: return 8;
	case VD_DTYPE_U8: return 1;
	case VD_DTYPE_F8E4M3: return 1;
	}
	return 0;
}

/* Number of elements (product of shape). */
static inline int64_t vd_tensor_numel(const vd_tensor *t)
{
	int64_t n = 1;

	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

/* True when stride[] is the packed row-major layout of shape[]. */
static inline int vd_tensor_is_contiguous(const vd_tensor *t)
{
	int64_t expect = 1;

	for (int i = t->ndim - 1; i >= 0; i--) {
		if (t->shape[i] != 1 && t->stride[i] != expect)
			return 0;
		expect *= t->shape[i];
	}
	return 1;
}

/* Fill shape and packed strides; data/alloc untouched. ndim <= VD_MAX_DIMS. */
static inline void vd_tensor_set_shape(vd_tensor *t, int ndim, const int64_t *shape)
{
	int64_t s = 1;

	t->ndim = ndim;
	for (int i = VD_MAX_DIMS - 1; i >= 0; i--) {
		t->shape[i] = i < ndim ? shape[i] : 1;
		t->stride[i] = s;
		if (i < ndim)
			s *= shape[i];
	}
}

/* A view of rows [row0, row0+nrows) along dim 0. Borrowed from t. */
static inline vd_tensor vd_tensor_rows(const vd_tensor *t, int64_t row0, int64_t nrows)
{
	vd_tensor v = *t;

	v.alloc = NULL;
	v.shape[0] = nrows;
	v.data = (char *)t->data + row0 * t->stride[0] * (int64_t)vd_dtype_size(t->dtype);
	return v;
}

/* A (T, H, D) view of columns [col0, col0 + H*D) of a 2-D (T, C) tensor,
 * e.g. the q, k or v part of a fused qkv buffer. Borrowed from buf. */
static inline vd_tensor vd_tensor_heads(const vd_tensor *buf, int64_t col0, int64_t H, int64_t D)
{
	vd_tensor v = *buf;

	v.alloc = NULL;
	v.ndim = 3;
	v.shape[1] = H;
	v.shape[2] = D;
	v.stride[1] = D;
	v.stride[2] = 1;
	v.data = (char *)buf->data + col0 * (int64_t)vd_dtype_size(buf->dtype);
	return v;
}

/* "f32", "bf16", ...; never NULL. */
static inline const char *vd_dtype_name(vd_dtype t)
{
	switch (t) {
	case VD_DTYPE_F32: return "f32";
	case VD_DTYPE_F16: return "f16";
	case VD_DTYPE_BF16: return "bf16";
	case VD_DTYPE_I32: return "i32";
	case VD_DTYPE_I64: return "i64";
	case VD_DTYPE_U8: return "u8";
	case VD_DTYPE_F8E4M3: return "fp8_e4m3";
	}
	return "?";
}

/* Scalar conversions used by every backend's oracle code. */
float vd_bf16_to_f32(uint16_t h);
uint16_t vd_f32_to_bf16(float f); /* round to nearest even */
float vd_f16_to_f32(uint16_t h);
uint16_t vd_f32_to_f16(float f);  /* round to nearest even */
float vd_fp8e4m3_to_f32(uint8_t b);  /* exact; NaN for 0x7f and 0xff */
/* Round to nearest even, saturating to +-448 (NaN gives 0x7f): the
 * conversion of CUDA's cvt.rn.satfinite.e4m3x2.f32. */
uint8_t vd_f32_to_fp8e4m3(float f);

#ifdef __cplusplus
}
#endif
#endif
