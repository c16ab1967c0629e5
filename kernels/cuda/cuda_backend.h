/* The CUDA compute backend: every op of vllmd/ops.h on one GPU, one stream.
 * Tensors live in device memory (f32, bf16 or f16 floats; int dtypes for
 * copies); linear runs on cuBLAS, everything else on kernels of
 * cuda_backend.cu. This header is plain C so C11 code can include it; it
 * exists only in builds with CUDA (VD_HAVE_CUDA). */
#ifndef VLLMD_KERNELS_CUDA_BACKEND_H
#define VLLMD_KERNELS_CUDA_BACKEND_H

#include "vllmd/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices this process can use; 0 when there is no driver,
 * no device or any error (never fails, sets no message). */
int vd_cuda_device_count(void);

/* Create a backend on GPU `device` (0-based) with its own stream, cuBLAS
 * handle and memory pool. No device is VD_ERR_UNSUPPORTED, a bad index
 * VD_ERR_INVALID_ARG, CUDA failures VD_ERR_BACKEND. The caller owns *out
 * and frees it with vd_cuda_backend_destroy(). Environment: VD_CUDA_SYNC=1
 * synchronises after every op so a failing kernel is reported by the op
 * that launched it; VD_CUDA_TF32=1 lets f32 linear use TF32 tensor cores. */
vd_status vd_cuda_backend_create(int device, vd_backend **out);

/* Free and total bytes of the backend's GPU as cudaMemGetInfo reports them
 * (memory held by this backend's pool counts as used). */
vd_status vd_cuda_mem_info(vd_backend *be, int64_t *free_bytes, int64_t *total_bytes);

/* How the last patch_conv ran: "cuDNN <version>, algo <n>", or why it
 * could not (cuDNN not found, shape unsupported, VD_CUDA_CUDNN=0); NULL
 * before the first call. Borrowed from the backend. */
const char *vd_cuda_patch_conv_path(vd_backend *be);

/* Wait for queued work and free the backend; tensors it allocated must
 * already be freed. NULL is a no-op. */
void vd_cuda_backend_destroy(vd_backend *be);

#ifdef __cplusplus
}
#endif
#endif
