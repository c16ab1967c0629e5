/* Backend dispatch by name; the only place that knows every backend. */
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

vd_status vd_backend_create(const char *name, int num_threads, vd_backend **out)
{
	if (!name || !out)
		return vd_errorf(VD_ERR_INVALID_ARG, "backend: name and out are required");
	*out = NULL;
	if (strcmp(name, "cpu") == 0)
		return vd_cpu_backend_create(num_threads, out);
	if (strcmp(name, "cuda") == 0)
		return vd_cuda_backend_create(0, out);
	if (strncmp(name, "cuda:", 5) == 0) {
		char *end;
		long dev = strtol(name + 5, &end, 10);

		if (end == name + 5 || *end || dev < 0 || dev > 1024)
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "backend \"%s\": expected cuda:<device number>", name);
		return vd_cuda_backend_create((int)dev, out);
	}
	return vd_errorf(VD_ERR_INVALID_ARG, "backend \"%s\" is unknown: use \"cpu\" or \"cuda\"",
			 name);
}

void vd_backend_destroy(vd_backend *be)
{
	if (!be)
		return;
	if (be->device == VD_DEVICE_CUDA)
		vd_cuda_backend_destroy(be);
	else
		vd_cpu_backend_destroy(be);
}

vd_dtype vd_backend_compute_dtype(const vd_backend *be)
{
	return be->device == VD_DEVICE_CPU ? VD_DTYPE_F32 : VD_DTYPE_BF16;
}
