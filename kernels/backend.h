/* Backend dispatch: create a compute backend by name ("cpu", "cuda") and
 * tell model code which dtype that backend computes in. The CUDA backend is
 * reached only when the build found CUDA (VD_HAVE_CUDA in config.h);
 * otherwise inline stand-ins here refuse it, so no caller needs an #ifdef. */
#ifndef VLLMD_KERNELS_BACKEND_H
#define VLLMD_KERNELS_BACKEND_H

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "vllmd/ops.h"
#include "vllmd/status.h"

#ifdef VD_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#else
/* Stand-ins with the CUDA backend's signatures for builds without CUDA. */
static inline vd_status vd_cuda_backend_create(int device, vd_backend **out)
{
	(void)device;
	(void)out;
	return vd_errorf(VD_ERR_UNSUPPORTED,
			 "backend \"cuda\": this vllmd was built without CUDA; "
			 "rebuild with ./configure --with-cuda, or use backend \"cpu\"");
}

static inline void vd_cuda_backend_destroy(vd_backend *be)
{
	(void)be;
}

static inline int vd_cuda_device_count(void)
{
	return 0;
}

static inline const char *vd_cuda_patch_conv_path(vd_backend *be)
{
	(void)be;
	return NULL;
}

static inline vd_status vd_cuda_mem_info(vd_backend *be, int64_t *free_bytes,
					 int64_t *total_bytes)
{
	(void)be;
	(void)free_bytes;
	(void)total_bytes;
	return vd_errorf(VD_ERR_UNSUPPORTED, "this vllmd was built without CUDA");
}
#endif

/* Create the backend called name: "cpu" (num_threads workers, 0 = all
 * online CPUs) or "cuda" / "cuda:N" (GPU N; num_threads unused). The caller
 * owns *out and frees it with vd_backend_destroy(). Unknown names are
 * VD_ERR_INVALID_ARG; "cuda" without CUDA support is VD_ERR_UNSUPPORTED. */
vd_status vd_backend_create(const char *name, int num_threads, vd_backend **out);

/* VD_OK when be's ops table is the one this core was built against: its
 * version is VD_OPS_VERSION and it is at least as long as this core's
 * vd_ops (the table is append-only). vd_backend_create checks every backend
 * it creates; VD_ERR_UNSUPPORTED names both versions otherwise. */
vd_status vd_backend_check_ops(const vd_backend *be);

/* Free a backend made by vd_backend_create(); NULL is a no-op. */
void vd_backend_destroy(vd_backend *be);

/* The dtype be keeps weights, activations and the KV cache in (be->dtype):
 * f32 on the CPU (the oracle stays exact), bf16 on GPUs unless changed with
 * vd_backend_set_dtype(). */
vd_dtype vd_backend_compute_dtype(const vd_backend *be);

/* Set the compute dtype from the `dtype` option ("auto", "float32",
 * "bfloat16", "float16"); ckpt_dtype is the checkpoint's torch_dtype (or
 * NULL) that "auto" follows on GPUs (float16 stays f16, anything else is
 * bf16). The CPU backend computes in f32 only: other dtypes are
 * VD_ERR_UNSUPPORTED there. Call before any model tensor is allocated. */
vd_status vd_backend_set_dtype(vd_backend *be, const char *dtype, const char *ckpt_dtype);

/* "auto" resolves to "cuda" when this build has CUDA and a GPU is present,
 * else "cpu". Other names are returned unchanged. */
const char *vd_backend_resolve_device(const char *name);

/* Device memory of a GPU backend: free and total bytes as the driver sees
 * them (memory this backend's pool holds counts as used). CPU backends are
 * VD_ERR_UNSUPPORTED. */
vd_status vd_backend_mem_info(vd_backend *be, int64_t *free_bytes, int64_t *total_bytes);

#endif
