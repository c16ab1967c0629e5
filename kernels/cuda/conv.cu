/* patch_conv (vllmd/ops.h): the patch-embedding convolutions of the vision
 * towers (2-D for CLIP, 3-D for Qwen2-VL's temporal patches), through cuDNN
 * or as im2patch and a GEMM, whichever is faster for the shape.
 *
 * - cuDNN is opened with dlopen on the first call, so a machine without it
 *   still runs every model (on the GEMM form).
 * - The convolution runs in cuDNN's plain layout (NCHW / NCDHW, packed),
 *   with the algorithm cuDNN's own timing finds fastest; its output
 *   (B, O, L) is then transposed into the token rows (B L, O).
 * - The first call of a shape times both forms (three runs each) and keeps
 *   the faster; the plan (descriptors, algorithm, choice) is kept per shape.
 * - VD_CUDA_PATCH=cudnn or =gemm forces one form (tests, A/B runs);
 *   VD_CUDA_CUDNN=0 never opens cuDNN. */
#include "kernels/cuda/common.cuh"

/* One shape's plan: its cuDNN descriptors and algorithm, and which form
 * runs it. */
typedef struct patch_plan {
	bool used;
	int dt, nd;
	int xdim[5], wdim[5], ydim[5];
	int64_t L, K;              /* patches per sample, kernel elements */
	void *xd, *yd, *wd, *cd;   /* cuDNN descriptors */
	int algo;                  /* cuDNN's algorithm, or -1: no cuDNN form */
	size_t ws;                 /* its workspace */
} patch_plan;

/* The form a convolution takes whatever the batch: decided once, on the
 * first batch seen, by timing both. The engine's encoder batches vary, so
 * deciding per batch size would time (and ask cuDNN) again and again. */
typedef struct patch_choice {
	bool used;
	int dt, nd, C, O;
	int size[3], kernel[3];
	int form;                  /* 1 cuDNN, 2 im2patch + GEMM */
	float ms_dnn, ms_gemm;     /* the timings it was decided on */
} patch_choice;

#define PATCH_PLANS 8
#define PATCH_CHOICES 16

static bool env_is(const char *name, const char *value)
{
	const char *v = getenv(name);

	return v && !strcmp(v, value);
}

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
	decltype(&cudnnFindConvolutionForwardAlgorithm) FindConvolutionForwardAlgorithm;
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

/* Open cuDNN once per backend; false (with the reason kept in dnn_why)
 * when it is not there or is off. */
static bool dnn_open(cu_ctx *c)
{
	static const char *const names[] = { "libcudnn.so.9", "libcudnn.so" };
	dnn_api *d;
	void *lib = NULL;

	if (c->dnn_state)
		return c->dnn_state > 0;
	c->dnn_state = -1;
	if (env_is("VD_CUDA_CUDNN", "0")) {
		snprintf(c->dnn_why, sizeof(c->dnn_why), "cuDNN off (VD_CUDA_CUDNN=0)");
		return false;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !lib; i++)
		lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		snprintf(c->dnn_why, sizeof(c->dnn_why), "cuDNN not found (%s)", dlerror());
		return false;
	}
	d = (dnn_api *)calloc(1, sizeof(*d));
	if (!d) {
		dlclose(lib);
		snprintf(c->dnn_why, sizeof(c->dnn_why), "cuDNN: out of host memory");
		return false;
	}
	d->lib = lib;
#define DNN_SYM(name)                                                                      \
	if (!(*(void **)&d->name = dlsym(lib, "cudnn" #name))) {                           \
		snprintf(c->dnn_why, sizeof(c->dnn_why), "cuDNN lacks cudnn" #name);       \
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
	DNN_SYM(FindConvolutionForwardAlgorithm)
	DNN_SYM(GetConvolutionForwardAlgorithm_v7)
	DNN_SYM(GetConvolutionForwardWorkspaceSize)
	DNN_SYM(ConvolutionForward)
#undef DNN_SYM
	if (d->Create(&c->dnn_h) != CUDNN_STATUS_SUCCESS) {
		snprintf(c->dnn_why, sizeof(c->dnn_why), "cuDNN: cudnnCreate failed");
		dlclose(lib);
		free(d);
		return false;
	}
	d->SetStream(c->dnn_h, c->stream);
	c->dnn = d;
	c->dnn_state = 1;
	return true;
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

static void dnn_plan_drop(cu_ctx *c, patch_plan *p)
{
	const dnn_api *d = c->dnn;

	if (!d)
		return;
	if (p->cd)
		d->DestroyConvolutionDescriptor((cudnnConvolutionDescriptor_t)p->cd);
	if (p->wd)
		d->DestroyFilterDescriptor((cudnnFilterDescriptor_t)p->wd);
	if (p->yd)
		d->DestroyTensorDescriptor((cudnnTensorDescriptor_t)p->yd);
	if (p->xd)
		d->DestroyTensorDescriptor((cudnnTensorDescriptor_t)p->xd);
	p->xd = p->yd = p->wd = p->cd = NULL;
}

/* The descriptors of p's convolution and its algorithm within DNN_MAX_WS
 * of workspace: the one cuDNN's own timing finds fastest (find), or its
 * heuristics' first choice (cheap, for a shape already decided). p->algo
 * stays -1 when there is none. */
static void dnn_plan_make(cu_ctx *c, patch_plan *p, bool find)
{
	const dnn_api *d = c->dnn;
	cudnnDataType_t dt;
	cudnnTensorDescriptor_t xd = NULL, yd = NULL;
	cudnnFilterDescriptor_t wd = NULL;
	cudnnConvolutionDescriptor_t cd = NULL;
	cudnnConvolutionFwdAlgoPerf_t perf[8];
	int xs[5], ys[5], pad[3] = { 0, 0, 0 }, stride[3], dil[3] = { 1, 1, 1 }, n = 0, nd = p->nd;
	bool tm = p->dt != VD_DTYPE_F32 || c->tf32;

	p->algo = -1;
	if (!dnn_dtype((vd_dtype)p->dt, &dt))
		return;
	for (int i = 0; i < nd; i++)
		stride[i] = p->wdim[2 + i];
	xs[nd + 1] = ys[nd + 1] = 1;
	for (int i = nd; i >= 0; i--) {
		xs[i] = xs[i + 1] * p->xdim[i + 1];
		ys[i] = ys[i + 1] * p->ydim[i + 1];
	}
	if (d->CreateTensorDescriptor(&xd) || !(p->xd = xd) || d->CreateTensorDescriptor(&yd) ||
	    !(p->yd = yd) || d->CreateFilterDescriptor(&wd) || !(p->wd = wd) ||
	    d->CreateConvolutionDescriptor(&cd) || !(p->cd = cd) ||
	    d->SetTensorNdDescriptor(xd, dt, nd + 2, p->xdim, xs) ||
	    d->SetTensorNdDescriptor(yd, dt, nd + 2, p->ydim, ys) ||
	    d->SetFilterNdDescriptor(wd, dt, CUDNN_TENSOR_NCHW, nd + 2, p->wdim) ||
	    d->SetConvolutionNdDescriptor(cd, nd, pad, stride, dil, CUDNN_CROSS_CORRELATION,
					  CUDNN_DATA_FLOAT) ||
	    d->SetConvolutionMathType(cd, tm ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH) ||
	    (find ? d->FindConvolutionForwardAlgorithm(c->dnn_h, xd, wd, cd, yd, 8, &n, perf)
		  : d->GetConvolutionForwardAlgorithm_v7(c->dnn_h, xd, wd, cd, yd, 8, &n, perf)))
		return;
	for (int i = 0; i < n; i++) {
		size_t need = 0;

		if (perf[i].status != CUDNN_STATUS_SUCCESS)
			continue;
		if (d->GetConvolutionForwardWorkspaceSize(c->dnn_h, xd, wd, cd, yd, perf[i].algo,
							  &need) ||
		    need > DNN_MAX_WS)
			continue;
		p->algo = (int)perf[i].algo;
		p->ws = need;
		return;
	}
}

/* The cuDNN form: convolve into scratch (or y when L is 1), then transpose
 * (B, O, L) into the rows (B L, O). */
static vd_status dnn_run(cu_ctx *c, const patch_plan *p, const void *x, const void *w, void *y)
{
	const dnn_api *d = c->dnn;
	float one = 1.0f, zero = 0.0f;
	int64_t B = p->xdim[0], O = p->wdim[0], L = p->L;
	size_t ybytes = L > 1 ? align_up((size_t)(B * L * O) * vd_dtype_size((vd_dtype)p->dt), 256)
			      : 0;
	char *s = NULL;
	cudnnStatus_t e;

	TRY(scratch(c, ybytes + p->ws, (void **)&s));
	e = d->ConvolutionForward(c->dnn_h, &one, (cudnnTensorDescriptor_t)p->xd, x,
				  (cudnnFilterDescriptor_t)p->wd, w,
				  (cudnnConvolutionDescriptor_t)p->cd,
				  (cudnnConvolutionFwdAlgo_t)p->algo, s + ybytes, p->ws, &zero,
				  (cudnnTensorDescriptor_t)p->yd, L > 1 ? (void *)s : y);
	if (e != CUDNN_STATUS_SUCCESS)
		return vd_errorf(VD_ERR_BACKEND, "cuda patch_conv: cuDNN: %s", d->GetErrorString(e));
	if (L > 1) {
		sv a, b;

		a.p = s;
		b.p = y;
		a.dt = b.dt = p->dt;
		a.shape[0] = b.shape[0] = 1;
		a.shape[1] = b.shape[1] = B;
		a.shape[2] = b.shape[2] = L;
		a.shape[3] = b.shape[3] = O;
		a.stride[0] = b.stride[0] = 0;
		a.stride[1] = b.stride[1] = L * O;
		a.stride[2] = 1;
		a.stride[3] = L;
		b.stride[2] = O;
		b.stride[3] = 1;
		TRY(launch_copy(c, &a, &b));
	}
	return VD_OK;
}
#endif /* VD_HAVE_CUDNN */

/* The GEMM form: the patches of each sample gathered into rows (2-D,
 * square kernel) or taken as they are (3-D with one patch per sample),
 * then one GEMM with w. */
static bool gemm_form_ok(const patch_plan *p)
{
	return (p->nd == 2 && p->wdim[2] == p->wdim[3]) || (p->nd == 3 && p->L == 1);
}

static vd_status gemm_run(cu_ctx *c, const patch_plan *p, const void *x, const void *w, void *y)
{
	int64_t B = p->xdim[0], C = p->xdim[1], O = p->wdim[0], L = p->L, K = p->K;
	rv wr = { (void *)w, p->dt, O, C * K, C * K }, yr = { y, p->dt, B * L, O, O };
	rv pr = { (void *)x, p->dt, B * L, C * K, C * K };

	if (p->nd == 2) {
		int64_t H = p->xdim[2], W = p->xdim[3], k = p->wdim[2], es = vd_dtype_size((vd_dtype)p->dt);
		char *s;

		TRY(scratch(c, (size_t)(B * L * C * K * es), (void **)&s));
		pr.p = s;
		for (int64_t b = 0; b < B; b++) {
			sv img;
			rv o = { s + b * L * C * K * es, p->dt, L, C * K, C * K };

			img.p = (char *)x + b * C * H * W * es;
			img.dt = p->dt;
			img.shape[0] = 1;
			img.shape[1] = C;
			img.shape[2] = H;
			img.shape[3] = W;
			img.stride[0] = 0;
			img.stride[1] = H * W;
			img.stride[2] = W;
			img.stride[3] = 1;
			TRY(launch_im2patch(c, &img, &o, (int)k, W / k));
		}
	}
	return linear_run(c, pr, wr, NULL, yr);
}

typedef vd_status (*patch_fn)(cu_ctx *c, const patch_plan *p, const void *x, const void *w,
			      void *y);

/* Milliseconds a form takes, after one untimed run. */
static vd_status time_form(cu_ctx *c, patch_fn f, const patch_plan *p, const void *x,
			   const void *w, void *y, float *ms)
{
	cudaEvent_t e[2] = { NULL, NULL };
	vd_status st = f(c, p, x, w, y);
	cudaError_t ce = cudaSuccess;

	if (st == VD_OK && (ce = cudaEventCreate(&e[0])) == cudaSuccess &&
	    (ce = cudaEventCreate(&e[1])) == cudaSuccess &&
	    (ce = cudaEventRecord(e[0], c->stream)) == cudaSuccess) {
		for (int i = 0; i < 3 && st == VD_OK; i++)
			st = f(c, p, x, w, y);
		if (st == VD_OK && (ce = cudaEventRecord(e[1], c->stream)) == cudaSuccess &&
		    (ce = cudaEventSynchronize(e[1])) == cudaSuccess &&
		    (ce = cudaEventElapsedTime(ms, e[0], e[1])) == cudaSuccess)
			*ms /= 3.0f;
	}
	for (int i = 0; i < 2; i++)
		if (e[i])
			cudaEventDestroy(e[i]);
	if (st == VD_OK && ce != cudaSuccess)
		st = cuda_fail(ce, __FILE__, __LINE__, "timing patch_conv");
	return st;
}

/* The cuDNN plan of a shape (batch included), made when new. */
static vd_status patch_plan_get(cu_ctx *c, const patch_plan *key, bool find, patch_plan **out)
{
	patch_plan *p;

	if (!c->patch_plans) {
		c->patch_plans = (patch_plan *)calloc(PATCH_PLANS, sizeof(patch_plan));
		if (!c->patch_plans)
			return vd_errorf(VD_ERR_NOMEM, "cuda patch_conv: out of host memory");
	}
	for (int i = 0; i < PATCH_PLANS; i++) {
		p = &c->patch_plans[i];
		if (p->used && p->dt == key->dt && p->nd == key->nd &&
		    !memcmp(p->xdim, key->xdim, sizeof(p->xdim)) &&
		    !memcmp(p->wdim, key->wdim, sizeof(p->wdim))) {
			*out = p;
			return VD_OK;
		}
	}
	p = &c->patch_plans[c->patch_next];
	c->patch_next = (c->patch_next + 1) % PATCH_PLANS;
#ifdef VD_HAVE_CUDNN
	dnn_plan_drop(c, p);
#endif
	*p = *key;
	p->used = true;
	p->algo = -1;
#ifdef VD_HAVE_CUDNN
	if (dnn_open(c))
		dnn_plan_make(c, p, find);
#endif
	*out = p;
	return VD_OK;
}

/* The choice entry of a convolution (batch left out), *fresh when new. */
static vd_status patch_choice_get(cu_ctx *c, const patch_plan *key, patch_choice **out)
{
	patch_choice k, *e;

	if (!c->patch_choices) {
		c->patch_choices = (patch_choice *)calloc(PATCH_CHOICES, sizeof(patch_choice));
		if (!c->patch_choices)
			return vd_errorf(VD_ERR_NOMEM, "cuda patch_conv: out of host memory");
	}
	memset(&k, 0, sizeof(k));
	k.used = true;
	k.dt = key->dt;
	k.nd = key->nd;
	k.C = key->xdim[1];
	k.O = key->wdim[0];
	for (int i = 0; i < key->nd; i++) {
		k.size[i] = key->xdim[2 + i];
		k.kernel[i] = key->wdim[2 + i];
	}
	for (int i = 0; i < PATCH_CHOICES; i++) {
		e = &c->patch_choices[i];
		if (e->used && e->dt == k.dt && e->nd == k.nd && e->C == k.C && e->O == k.O &&
		    !memcmp(e->size, k.size, sizeof(k.size)) &&
		    !memcmp(e->kernel, k.kernel, sizeof(k.kernel))) {
			*out = e;
			return VD_OK;
		}
	}
	e = &c->patch_choices[c->choice_next];
	c->choice_next = (c->choice_next + 1) % PATCH_CHOICES;
	*e = k;
	*out = e;
	return VD_OK;
}

void patch_plans_free(cu_ctx *c)
{
	for (int i = 0; c->patch_plans && i < PATCH_PLANS; i++) {
#ifdef VD_HAVE_CUDNN
		dnn_plan_drop(c, &c->patch_plans[i]);
#endif
	}
	free(c->patch_plans);
	c->patch_plans = NULL;
	free(c->patch_choices);
	c->patch_choices = NULL;
#ifdef VD_HAVE_CUDNN
	if (c->dnn) {
		c->dnn->Destroy(c->dnn_h);
		dlclose(c->dnn->lib);
		free(c->dnn);
		c->dnn = NULL;
	}
#endif
}

vd_status cu_patch_conv(vd_backend *be, const vd_tensor *x, int nd, const int64_t *size,
			       const int64_t *kernel, const vd_tensor *w, vd_tensor *y)
{
	int64_t B = 0, C, O, L = 0, K = 0;
	patch_plan key, *p;
	patch_choice *ch;
	int form, force;
	bool dnn_ok, gemm_ok;

	TRY(check_t(x, "patch_conv", "x", true));
	TRY(check_t(w, "patch_conv", "w", true));
	TRY(check_t(y, "patch_conv", "y", true));
	TRY(vd_check_patch_conv(x, nd, size, kernel, w, y, "cuda patch_conv", &B, &L, &K));
	if (!vd_tensor_is_contiguous(w) ||
	    !vd_tensor_is_contiguous(y) || x->dtype != w->dtype || x->dtype != y->dtype)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "cuda patch_conv: x, w and y must be packed and of one dtype");
	C = size[0];
	O = w->shape[0];
	if (vd_tensor_numel(x) > INT32_MAX || vd_tensor_numel(y) > INT32_MAX || O > INT32_MAX)
		return vd_errorf(VD_ERR_UNSUPPORTED, "cuda patch_conv: too large");
	ENTER(be);
	GRAPH_FORBID("patch_conv");
	if (B * L == 0 || O == 0)
		return VD_OK;
	memset(&key, 0, sizeof(key));
	key.dt = x->dtype;
	key.nd = nd;
	key.L = L;
	key.K = K;
	key.algo = -1;
	key.xdim[0] = key.ydim[0] = (int)B;
	key.xdim[1] = key.wdim[1] = (int)C;
	key.wdim[0] = key.ydim[1] = (int)O;
	for (int i = 0; i < nd; i++) {
		key.xdim[2 + i] = (int)size[1 + i];
		key.wdim[2 + i] = (int)kernel[i];
		key.ydim[2 + i] = (int)(size[1 + i] / kernel[i]);
	}
	TRY(patch_choice_get(c, &key, &ch));
	gemm_ok = gemm_form_ok(&key);
	force = env_is("VD_CUDA_PATCH", "cudnn") ? 1 : env_is("VD_CUDA_PATCH", "gemm") ? 2 : 0;
	form = force ? force : ch->form;
	/* a cuDNN plan for this batch unless the GEMM form is already chosen */
	p = &key;
	if (form != 2)
		TRY(patch_plan_get(c, &key, form == 0, &p));
	dnn_ok = p->algo >= 0;
	if ((force == 1 && !dnn_ok) || (force == 2 && !gemm_ok) ||
	    (form == 0 && !dnn_ok && !gemm_ok))
		return vd_errorf(VD_ERR_UNSUPPORTED, "cuda patch_conv: %s",
				 force != 2 && !dnn_ok ? (c->dnn_why[0] ? c->dnn_why
								       : "cuDNN has no algorithm")
						       : "no GEMM form for this shape");
	if (form == 1 && !dnn_ok)
		return vd_errorf(VD_ERR_BACKEND, "cuda patch_conv: cuDNN lost its algorithm");
	if (!form) {
#ifdef VD_HAVE_CUDNN
		if (dnn_ok && gemm_ok) {
			TRY(time_form(c, dnn_run, p, x->data, w->data, y->data, &ch->ms_dnn));
			TRY(time_form(c, gemm_run, p, x->data, w->data, y->data, &ch->ms_gemm));
			ch->form = ch->ms_dnn <= ch->ms_gemm ? 1 : 2;
		} else {
			ch->form = dnn_ok ? 1 : 2;
		}
#else
		ch->form = 2;
#endif
		form = ch->form;
	}
#ifdef VD_HAVE_CUDNN
	if (form == 1) {
		TRY(dnn_run(c, p, x->data, w->data, y->data));
		if (force)
			dnn_note(c, "cuDNN %zu algo %d (VD_CUDA_PATCH)", c->dnn->GetVersion(), p->algo);
		else
			dnn_note(c, "cuDNN %zu algo %d (chosen at %.3f ms against im2patch+GEMM "
				 "%.3f ms)", c->dnn->GetVersion(), p->algo, ch->ms_dnn, ch->ms_gemm);
		return op_done(c, "patch_conv");
	}
#endif
	TRY(gemm_run(c, &key, x->data, w->data, y->data));
	if (force)
		dnn_note(c, "im2patch+GEMM (VD_CUDA_PATCH)");
	else
		dnn_note(c, "im2patch+GEMM (chosen at %.3f ms against cuDNN %.3f ms)", ch->ms_gemm,
			 ch->ms_dnn);
	return op_done(c, "patch_conv");
}

const char *vd_cuda_patch_conv_path(vd_backend *be)
{
	cu_ctx *c = be ? ctx_of(be) : NULL;

	return c && c->dnn_path[0] ? c->dnn_path : NULL;
}
