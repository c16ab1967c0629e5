/* Backend dispatch by name; the only place that knows every backend. */
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

vd_status vd_backend_check_ops(const vd_backend *be)
{
	const vd_ops *o = be && be->ops ? be->ops : NULL;

	if (!o)
		return vd_errorf(VD_ERR_INVALID_ARG, "backend: no ops table");
	if (o->version != VD_OPS_VERSION || o->struct_size < sizeof(vd_ops))
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "backend \"%s\": ops table version %u (%u bytes), this core needs "
				 "version %d (%zu bytes): rebuild the backend with this core",
				 o->name ? o->name : "?", (unsigned)o->version,
				 (unsigned)o->struct_size, VD_OPS_VERSION, sizeof(vd_ops));
	return VD_OK;
}

/* A created backend is handed out only when its ops table passes the check. */
static vd_status attach(vd_status st, vd_backend **out)
{
	if (st == VD_OK && (st = vd_backend_check_ops(*out)) != VD_OK) {
		vd_backend_destroy(*out);
		*out = NULL;
	}
	return st;
}

vd_status vd_backend_create(const char *name, int num_threads, vd_backend **out)
{
	if (!name || !out)
		return vd_errorf(VD_ERR_INVALID_ARG, "backend: name and out are required");
	*out = NULL;
	if (strcmp(name, "cpu") == 0)
		return attach(vd_cpu_backend_create(num_threads, out), out);
	if (strcmp(name, "cuda") == 0)
		return attach(vd_cuda_backend_create(0, out), out);
	if (strncmp(name, "cuda:", 5) == 0) {
		char *end;
		long dev = strtol(name + 5, &end, 10);

		if (end == name + 5 || *end || dev < 0 || dev > 1024)
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "backend \"%s\": expected cuda:<device number>", name);
		return attach(vd_cuda_backend_create((int)dev, out), out);
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
	return be->dtype;
}

vd_status vd_backend_set_dtype(vd_backend *be, const char *dtype, const char *ckpt_dtype)
{
	vd_dtype want;

	if (!dtype || !strcmp(dtype, "auto")) {
		if (be->device == VD_DEVICE_CPU)
			want = VD_DTYPE_F32;
		else
			want = ckpt_dtype && !strcmp(ckpt_dtype, "float16") ? VD_DTYPE_F16
									     : VD_DTYPE_BF16;
	} else if (!strcmp(dtype, "float32") || !strcmp(dtype, "float")) {
		want = VD_DTYPE_F32;
	} else if (!strcmp(dtype, "bfloat16")) {
		want = VD_DTYPE_BF16;
	} else if (!strcmp(dtype, "float16") || !strcmp(dtype, "half")) {
		want = VD_DTYPE_F16;
	} else {
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "dtype '%s' is not one of auto, float32, bfloat16, float16", dtype);
	}
	if (be->device == VD_DEVICE_CPU && want != VD_DTYPE_F32)
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "dtype %s: the CPU backend computes in float32 only; use dtype "
				 "float32 (or auto), or device cuda",
				 dtype);
	be->dtype = want;
	return VD_OK;
}

const char *vd_backend_resolve_device(const char *name)
{
	if (name && strcmp(name, "auto"))
		return name;
	return vd_cuda_device_count() > 0 ? "cuda" : "cpu";
}

vd_status vd_backend_mem_info(vd_backend *be, int64_t *free_bytes, int64_t *total_bytes)
{
	if (be->device != VD_DEVICE_CUDA)
		return vd_errorf(VD_ERR_UNSUPPORTED, "backend %s has no device memory to query",
				 be->ops->name);
	return vd_cuda_mem_info(be, free_bytes, total_bytes);
}
