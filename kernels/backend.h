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
#endif

/* Create the backend called name: "cpu" (num_threads workers, 0 = all
 * online CPUs) or "cuda" / "cuda:N" (GPU N; num_threads unused). The caller
 * owns *out and frees it with vd_backend_destroy(). Unknown names are
 * VD_ERR_INVALID_ARG; "cuda" without CUDA support is VD_ERR_UNSUPPORTED. */
vd_status vd_backend_create(const char *name, int num_threads, vd_backend **out);

/* Free a backend made by vd_backend_create(); NULL is a no-op. */
void vd_backend_destroy(vd_backend *be);

/* The dtype be keeps weights, activations and the KV cache in: f32 on the
 * CPU (the oracle stays exact), bf16 on GPUs. */
vd_dtype vd_backend_compute_dtype(const vd_backend *be);

#endif
