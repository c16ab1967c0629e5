/* The CPU compute backend: every op of vllmd/ops.h in plain C on f32
 * activations (OpenBLAS for linear), threaded by a small worker pool that the
 * backend owns. It is the oracle other backends are tested against.
 * Strided inputs: every op takes row views (last dim contiguous, leading dims
 * one row stride); rope, cache_write and the attention ops take (T, H, D)
 * views with any row/head strides; copy, download and im2patch any strides. */
#ifndef VLLMD_KERNELS_CPU_BACKEND_H
#define VLLMD_KERNELS_CPU_BACKEND_H

#include "vllmd/ops.h"

/* Create a CPU backend with num_threads workers (0 = the number of online
 * CPUs; the calling thread counts as one). Results never depend on
 * num_threads. The caller owns *out and frees it with
 * vd_cpu_backend_destroy(). */
vd_status vd_cpu_backend_create(int num_threads, vd_backend **out);

/* Stop the workers and free the backend; tensors it allocated must already
 * be freed. NULL is a no-op. */
void vd_cpu_backend_destroy(vd_backend *be);

#endif
