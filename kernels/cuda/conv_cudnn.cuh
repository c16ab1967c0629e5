/* patch_conv (vllmd/ops.h) through cuDNN: the patch-embedding convolutions
 * of the vision towers (2-D for CLIP, 3-D for Qwen2-VL's temporal patches).
 * Part of cuda_backend.cu's translation unit.
 *
 * cuDNN is opened with dlopen on the first call, so a machine without it
 * still runs every model: the op then answers VD_ERR_UNSUPPORTED and the
 * model code uses im2patch and linear, which compute the same thing.
 * The convolution runs in cuDNN's plain layout (NCHW / NCDHW, packed); its
 * output (B, O, L) is then transposed into the token rows (B L, O), a copy
 * of a few MB against a vision pass of tens of ms. VD_CUDA_CUDNN=0 turns the
 * op off (for A/B runs). */

#ifdef VD_HAVE_CUDNN

/* The cuDNN entry points the op uses, looked up in the library. */
struct dnn_api {
	void *lib;
	decltype(&cudnnGetVersion) GetVersion;
	decltype(&cudnnGetErrorString) GetErrorString;
	decltype(&cudnnCreate) Create;
	decltype(&cudnnDestroy) Destroy;
	decltype(&cudnnSetStream) SetStream;
	decltype(&cudnnCreateTensorDescriptor) CreateTensorDescriptor;
	decltype(&cudnnDestroyTensorDescriptor) DestroyTensorDescriptor;
	decltype(&cudnnSetTensorNdDescriptor) SetTensorNdDescriptor;
	decltype(&cudnnCreateFilterDescriptor) CreateFilterDescriptor;
	decltype(&cudnnDestroyFilterDescriptor) DestroyFilterDescriptor;
	decltype(&cudnnSetFilterNdDescriptor) SetFilterNdDescriptor;
	decltype(&cudnnCreateConvolutionDescriptor) CreateConvolutionDescriptor;
	decltype(&cudnnDestroyConvolutionDescriptor) DestroyConvolutionDescriptor;
	decltype(&cudnnSetConvolutionNdDescriptor) SetConvolutionNdDescriptor;
	decltype(&cudnnSetConvolutionMathType) SetConvolutionMathType;
	decltype(&cudnnGetConvolutionForwardAlgorithm_v7) GetConvolutionForwardAlgorithm_v7;
	decltype(&cudnnGetConvolutionForwardWorkspaceSize) GetConvolutionForwardWorkspaceSize;
	decltype(&cudnnConvolutionForward) ConvolutionForward;
};

/* The workspace cuDNN may ask for one call. */
#define DNN_MAX_WS ((size_t)256 << 20)

static void dnn_note(cu_ctx *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->dnn_path, sizeof(c->dnn_path), fmt, ap);
	va_end(ap);
}

/* Open cuDNN once per backend; false (with the reason noted) when it is
 * not there or is off. */
static bool dnn_open(cu_ctx *c)
{
	static const char *const names[] = { "libcudnn.so.9", "libcudnn.so" };
	dnn_api *d;
	void *lib = NULL;

	if (c->dnn_state)
		return c->dnn_state > 0;
	c->dnn_state = -1;
	if (getenv("VD_CUDA_CUDNN") && !strcmp(getenv("VD_CUDA_CUDNN"), "0")) {
		dnn_note(c, "cuDNN off (VD_CUDA_CUDNN=0)");
		return false;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !lib; i++)
		lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		dnn_note(c, "cuDNN not found (%s)", dlerror());
		return false;
	}
	d = (dnn_api *)calloc(1, sizeof(*d));
	if (!d) {
		dlclose(lib);
		dnn_note(c, "cuDNN: out of host memory");
		return false;
	}
	d->lib = lib;
#define DNN_SYM(name)                                                                      \
	if (!(*(void **)&d->name = dlsym(lib, "cudnn" #name))) {                           \
		dnn_note(c, "cuDNN lacks cudnn" #name);                                    \
		dlclose(lib);                                                              \
		free(d);                                                                   \
		return false;                                                              \
	}
	DNN_SYM(GetVersion)
	DNN_SYM(GetErrorString)
	DNN_SYM(Create)
	DNN_SYM(Destroy)
	DNN_SYM(SetStream)
	DNN_SYM(CreateTensorDescriptor)
	DNN_SYM(DestroyTensorDescriptor)
	DNN_SYM(SetTensorNdDescriptor)
	DNN_SYM(CreateFilterDescriptor)
	DNN_SYM(DestroyFilterDescriptor)
	DNN_SYM(SetFilterNdDescriptor)
	DNN_SYM(CreateConvolutionDescriptor)
	DNN_SYM(DestroyConvolutionDescriptor)
	DNN_SYM(SetConvolutionNdDescriptor)
	DNN_SYM(SetConvolutionMathType)
	DNN_SYM(GetConvolutionForwardAlgorithm_v7)
	DNN_SYM(GetConvolutionForwardWorkspaceSize)
	DNN_SYM(ConvolutionForward)
#undef DNN_SYM
	if (d->Create(&c->dnn_h) != CUDNN_STATUS_SUCCESS) {
		dnn_note(c, "cuDNN: cudnnCreate failed");
		dlclose(lib);
		free(d);
		return false;
	}
	d->SetStream(c->dnn_h, c->stream);
	c->dnn = d;
	c->dnn_state = 1;
	return true;
}

static void dnn_close(cu_ctx *c)
{
	if (!c->dnn)
		return;
	c->dnn->Destroy(c->dnn_h);
	dlclose(c->dnn->lib);
	free(c->dnn);
	c->dnn = NULL;
}

static bool dnn_dtype(vd_dtype dt, cudnnDataType_t *out)
{
	switch (dt) {
	case VD_DTYPE_F32:
		*out = CUDNN_DATA_FLOAT;
		return true;
	case VD_DTYPE_BF16:
		*out = CUDNN_DATA_BFLOAT16;
		return true;
	case VD_DTYPE_F16:
		*out = CUDNN_DATA_HALF;
		return true;
	default:
		return false;
	}
}

/* The convolution of one call, its descriptors made and freed here. */
static vd_status dnn_conv(cu_ctx *c, cudnnDataType_t dt, bool tensor_math, int nd,
			  const int *xdim, const int *wdim, const int *ydim, const void *x,
			  const void *w, void *y, void *ws, size_t ws_cap, int algo)
{
	const dnn_api *d = c->dnn;
	cudnnTensorDescriptor_t xd = NULL, yd = NULL;
	cudnnFilterDescriptor_t wd = NULL;
	cudnnConvolutionDescriptor_t cd = NULL;
	int xs[5], ys[5], pad[3] = { 0, 0, 0 }, stride[3], dil[3] = { 1, 1, 1 };
	float one = 1.0f, zero = 0.0f;
	cudnnStatus_t e;
	vd_status st = VD_OK;

	for (int i = 0; i < nd; i++)
		stride[i] = wdim[2 + i];
	xs[nd + 1] = ys[nd + 1] = 1;
	for (int i = nd; i >= 0; i--) {
		xs[i] = xs[i + 1] * xdim[i + 1];
		ys[i] = ys[i + 1] * ydim[i + 1];
	}
	if ((e = d->CreateTensorDescriptor(&xd)) || (e = d->CreateTensorDescriptor(&yd)) ||
	    (e = d->CreateFilterDescriptor(&wd)) || (e = d->CreateConvolutionDescriptor(&cd)) ||
	    (e = d->SetTensorNdDescriptor(xd, dt, nd + 2, xdim, xs)) ||
	    (e = d->SetTensorNdDescriptor(yd, dt, nd + 2, ydim, ys)) ||
	    (e = d->SetFilterNdDescriptor(wd, dt, CUDNN_TENSOR_NCHW, nd + 2, wdim)) ||
	    (e = d->SetConvolutionNdDescriptor(cd, nd, pad, stride, dil, CUDNN_CROSS_CORRELATION,
					       CUDNN_DATA_FLOAT)) ||
	    (e = d->SetConvolutionMathType(cd, tensor_math ? CUDNN_TENSOR_OP_MATH
							     : CUDNN_FMA_MATH)) ||
	    (e = d->ConvolutionForward(c->dnn_h, &one, xd, x, wd, w, cd,
				       (cudnnConvolutionFwdAlgo_t)algo, ws, ws_cap, &zero, yd, y)))
		st = vd_errorf(VD_ERR_BACKEND, "cuda patch_conv: cuDNN: %s", d->GetErrorString(e));
	if (cd)
		d->DestroyConvolutionDescriptor(cd);
	if (wd)
		d->DestroyFilterDescriptor(wd);
	if (yd)
		d->DestroyTensorDescriptor(yd);
	if (xd)
		d->DestroyTensorDescriptor(xd);
	return st;
}

/* cuDNN's first algorithm for this convolution that needs at most
 * DNN_MAX_WS of workspace, or -1; *ws its workspace. */
static int dnn_pick(cu_ctx *c, cudnnDataType_t dt, bool tensor_math, int nd, const int *xdim,
		    const int *wdim, const int *ydim, size_t *ws)
{
	const dnn_api *d = c->dnn;
	cudnnTensorDescriptor_t xd = NULL, yd = NULL;
	cudnnFilterDescriptor_t wd = NULL;
	cudnnConvolutionDescriptor_t cd = NULL;
	cudnnConvolutionFwdAlgoPerf_t perf[8];
	int xs[5], ys[5], pad[3] = { 0, 0, 0 }, stride[3], dil[3] = { 1, 1, 1 }, n = 0, algo = -1;

	for (int i = 0; i < nd; i++)
		stride[i] = wdim[2 + i];
	xs[nd + 1] = ys[nd + 1] = 1;
	for (int i = nd; i >= 0; i--) {
		xs[i] = xs[i + 1] * xdim[i + 1];
		ys[i] = ys[i + 1] * ydim[i + 1];
	}
	if (!d->CreateTensorDescriptor(&xd) && !d->CreateTensorDescriptor(&yd) &&
	    !d->CreateFilterDescriptor(&wd) && !d->CreateConvolutionDescriptor(&cd) &&
	    !d->SetTensorNdDescriptor(xd, dt, nd + 2, xdim, xs) &&
	    !d->SetTensorNdDescriptor(yd, dt, nd + 2, ydim, ys) &&
	    !d->SetFilterNdDescriptor(wd, dt, CUDNN_TENSOR_NCHW, nd + 2, wdim) &&
	    !d->SetConvolutionNdDescriptor(cd, nd, pad, stride, dil, CUDNN_CROSS_CORRELATION,
					   CUDNN_DATA_FLOAT) &&
	    !d->SetConvolutionMathType(cd, tensor_math ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH) &&
	    !d->GetConvolutionForwardAlgorithm_v7(c->dnn_h, xd, wd, cd, yd, 8, &n, perf)) {
		for (int i = 0; i < n; i++) {
			size_t need = 0;

			if (perf[i].status != CUDNN_STATUS_SUCCESS)
				continue;
			if (d->GetConvolutionForwardWorkspaceSize(c->dnn_h, xd, wd, cd, yd,
								  perf[i].algo, &need) ||
			    need > DNN_MAX_WS)
				continue;
			algo = (int)perf[i].algo;
			*ws = need;
			break;
		}
	}
	if (cd)
		d->DestroyConvolutionDescriptor(cd);
	if (wd)
		d->DestroyFilterDescriptor(wd);
	if (yd)
		d->DestroyTensorDescriptor(yd);
	if (xd)
		d->DestroyTensorDescriptor(xd);
	return algo;
}
#endif /* VD_HAVE_CUDNN */

static vd_status cu_patch_conv(vd_backend *be, const vd_tensor *x, int nd, const int64_t *size,
			       const int64_t *kernel, const vd_tensor *w, vd_tensor *y)
{
	int64_t B, C, O, L = 1, K = 1, per = 1;

	TRY(check_t(x, "patch_conv", "x", true));
	TRY(check_t(w, "patch_conv", "w", true));
	TRY(check_t(y, "patch_conv", "y", true));
	if ((nd != 2 && nd != 3) || !size || !kernel || w->ndim != 2 || y->ndim != 2 ||
	    size[0] <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda patch_conv: 2 or 3 spatial dims, w and y 2-D");
	if (!vd_tensor_is_contiguous(x) || !vd_tensor_is_contiguous(w) ||
	    !vd_tensor_is_contiguous(y) || x->dtype != w->dtype || x->dtype != y->dtype)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda patch_conv: x, w and y must be packed and of one dtype");
	C = size[0];
	O = w->shape[0];
	for (int i = 0; i < nd; i++) {
		if (kernel[i] <= 0 || size[1 + i] <= 0 || size[1 + i] % kernel[i])
			return vd_errorf(VD_ERR_INVALID_ARG,
					 "cuda patch_conv: kernel %lld does not divide %lld",
					 (long long)kernel[i], (long long)size[1 + i]);
		L *= size[1 + i] / kernel[i];
		K *= kernel[i];
		per *= size[1 + i];
	}
	B = vd_tensor_numel(x) / (C * per);
	if (B * C * per != vd_tensor_numel(x))
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda patch_conv: x does not hold whole samples");
	if (w->shape[1] != C * K || y->shape[0] != B * L || y->shape[1] != O)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda patch_conv: w must be (%lld, %lld) and y "
				 "(%lld, %lld)", (long long)O, (long long)(C * K),
				 (long long)(B * L), (long long)O);
#ifndef VD_HAVE_CUDNN
	(void)be;
	return vd_errorf(VD_ERR_UNSUPPORTED, "cuda patch_conv: built without cuDNN");
#else
	{
		cudnnDataType_t dt;
		int xdim[5], wdim[5], ydim[5], algo;
		size_t ws = 0, ybytes;
		char *d;
		bool tm;

		ENTER(be);
		GRAPH_FORBID("patch_conv");
		if (!dnn_open(c))
			return vd_errorf(VD_ERR_UNSUPPORTED, "cuda patch_conv: %s", c->dnn_path);
		if (!dnn_dtype(x->dtype, &dt))
			return vd_errorf(VD_ERR_UNSUPPORTED, "cuda patch_conv: dtype %s",
					 vd_dtype_name(x->dtype));
		if (B * L == 0 || O == 0)
			return VD_OK;
		if (vd_tensor_numel(x) > INT32_MAX || vd_tensor_numel(y) > INT32_MAX)
			return vd_errorf(VD_ERR_UNSUPPORTED, "cuda patch_conv: too large for cuDNN");
		xdim[0] = ydim[0] = (int)B;
		xdim[1] = wdim[1] = (int)C;
		wdim[0] = ydim[1] = (int)O;
		for (int i = 0; i < nd; i++) {
			xdim[2 + i] = (int)size[1 + i];
			wdim[2 + i] = (int)kernel[i];
			ydim[2 + i] = (int)(size[1 + i] / kernel[i]);
		}
		tm = x->dtype != VD_DTYPE_F32 || c->tf32;
		algo = dnn_pick(c, dt, tm, nd, xdim, wdim, ydim, &ws);
		if (algo < 0) {
			dnn_note(c, "cuDNN %zu: no algorithm for this shape", c->dnn->GetVersion());
			return vd_errorf(VD_ERR_UNSUPPORTED, "cuda patch_conv: %s", c->dnn_path);
		}
		/* the (B, O, L) output goes to scratch and is transposed into y,
		 * unless L is 1 and it already is y */
		ybytes = L > 1 ? align_up((size_t)vd_tensor_numel(y) * vd_dtype_size(y->dtype), 256)
			       : 0;
		TRY(scratch(c, ybytes + ws, (void **)&d));
		TRY(dnn_conv(c, dt, tm, nd, xdim, wdim, ydim, x->data, w->data,
			     L > 1 ? (void *)d : y->data, d + ybytes, ws, algo));
		if (L > 1) {
			sv s, t;

			s.p = d;
			t.p = y->data;
			s.dt = t.dt = y->dtype;
			s.shape[0] = t.shape[0] = 1;
			s.shape[1] = t.shape[1] = B;
			s.shape[2] = t.shape[2] = L;
			s.shape[3] = t.shape[3] = O;
			s.stride[0] = t.stride[0] = 0;
			s.stride[1] = t.stride[1] = L * O;
			s.stride[2] = 1;
			s.stride[3] = L;
			t.stride[2] = O;
			t.stride[3] = 1;
			TRY(launch_copy(c, &s, &t));
		}
		dnn_note(c, "cuDNN %zu, algo %d", c->dnn->GetVersion(), algo);
		return op_done(c, "patch_conv");
	}
#endif
}

const char *vd_cuda_patch_conv_path(vd_backend *be)
{
	cu_ctx *c = be ? ctx_of(be) : NULL;

	return c && c->dnn_path[0] ? c->dnn_path : NULL;
}
