/* The shape contract of the patch_conv op (vllmd/ops.h), checked the same
 * way by every backend. */
#ifndef VLLMD_KERNELS_PATCH_CONV_H
#define VLLMD_KERNELS_PATCH_CONV_H

#include "vllmd/ops.h"
#include "vllmd/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* VD_ERR_INVALID_ARG (message prefixed by who) unless x is packed and
 * holds whole samples of size[0] channels by size[1..nd], kernel[nd]
 * divides each spatial size, w is (O, C k..) and y (B L, O); then *B
 * samples, *L patches a sample and *K kernel elements a channel. */
static inline vd_status vd_check_patch_conv(const vd_tensor *x, int nd, const int64_t *size,
					    const int64_t *kernel, const vd_tensor *w,
					    const vd_tensor *y, const char *who, int64_t *B,
					    int64_t *L, int64_t *K)
{
	int64_t per = 1;

	if ((nd != 2 && nd != 3) || !size || !kernel || w->ndim != 2 || y->ndim != 2 ||
	    !vd_tensor_is_contiguous(x) || size[0] <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "%s: x packed, 2 or 3 spatial dims, w and y 2-D", who);
	*L = 1;
	*K = 1;
	for (int i = 0; i < nd; i++) {
		if (kernel[i] <= 0 || size[1 + i] <= 0 || size[1 + i] % kernel[i])
			return vd_errorf(VD_ERR_INVALID_ARG, "%s: kernel %lld does not divide %lld",
					 who, (long long)kernel[i], (long long)size[1 + i]);
		*L *= size[1 + i] / kernel[i];
		*K *= kernel[i];
		per *= size[1 + i];
	}
	*B = vd_tensor_numel(x) / (size[0] * per);
	if (*B * size[0] * per != vd_tensor_numel(x))
		return vd_errorf(VD_ERR_INVALID_ARG, "%s: x does not hold whole samples", who);
	if (w->shape[1] != size[0] * *K || y->shape[0] != *B * *L || y->shape[1] != w->shape[0])
		return vd_errorf(VD_ERR_INVALID_ARG, "%s: w must be (O, %lld) and y (%lld, O)", who,
				 (long long)(size[0] * *K), (long long)(*B * *L));
	return VD_OK;
}

#ifdef __cplusplus
}
#endif
#endif
