/* CUDA backend against the CPU oracle, op by op, on random inputs at the
 * shapes of LLaVA-1.5-7B, CLIP ViT-L/14-336, Qwen2-VL-2B/7B (GQA, M-RoPE,
 * 2-D vision RoPE), Phi-3.5 (head dim 96, two longrope tables) and small odd
 * shapes, in f32 and bf16 (f16 too for the attention tile kernel). 16-bit
 * inputs are rounded before both backends see them, so only compute and
 * output rounding differ. Exits 77 (skip) when the machine has no CUDA
 * device. */
#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "vllmd/ops.h"

static vd_backend *cpu, *gpu;
static double t_start;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static const vd_dtype dtypes[] = { VD_DTYPE_F32, VD_DTYPE_BF16 };
#define NDT ((int)(sizeof(dtypes) / sizeof(dtypes[0])))

/* f32 tolerance on max|got - want| / max|want|; bf16/f16 are held to a
 * relative L2 error of 1e-2 instead. */
#define TOL 1e-4
#define TOL_MM 1e-3 /* linear, attention: long f32 reductions */

/* ------------------------------------------------------------ helpers */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float frand(void)
{
	/* xorshift64*: deterministic, uniform in [-1, 1) */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (float)((double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0 *
		       2.0 - 1.0);
}

static int irand(int n)
{
	return (int)((frand() + 1.0f) * 0.5f * (float)n) % n;
}

/* v as stored in dt (the value both backends will see). */
static float round_to(vd_dtype dt, float v)
{
	if (dt == VD_DTYPE_BF16)
		return vd_bf16_to_f32(vd_f32_to_bf16(v));
	if (dt == VD_DTYPE_F16)
		return vd_f16_to_f32(vd_f32_to_f16(v));
	return v;
}

static float *host_rand(int64_t n, float amp, vd_dtype dt)
{
	float *h = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));

	ck_assert_ptr_nonnull(h);
	for (int64_t i = 0; i < n; i++)
		h[i] = round_to(dt, amp * frand());
	return h;
}

/* The same logical tensor on both backends: f32 on the CPU, dt on the GPU. */
typedef struct pair {
	vd_tensor c, g;
} pair;

static pair pair_new(vd_dtype dt, int ndim, const int64_t *shape)
{
	pair p;

	ck_assert_int_eq(cpu->ops->alloc(cpu, &p.c, VD_DTYPE_F32, ndim, shape), VD_OK);
	ck_assert_int_eq(gpu->ops->alloc(gpu, &p.g, dt, ndim, shape), VD_OK);
	return p;
}

static void pair_set(pair *p, const float *h)
{
	int64_t n = vd_tensor_numel(&p->c);

	ck_assert_int_eq(cpu->ops->upload(cpu, &p->c, h, VD_DTYPE_F32, n), VD_OK);
	ck_assert_int_eq(gpu->ops->upload(gpu, &p->g, h, VD_DTYPE_F32, n), VD_OK);
}

static pair pair_rand(vd_dtype dt, int ndim, const int64_t *shape, float amp)
{
	pair p = pair_new(dt, ndim, shape);
	float *h = host_rand(vd_tensor_numel(&p.c), amp, dt);

	pair_set(&p, h);
	free(h);
	return p;
}

static pair rand2(vd_dtype dt, int64_t n, int64_t c, float amp)
{
	int64_t shape[2] = { n, c };

	return pair_rand(dt, 2, shape, amp);
}

static pair rand1(vd_dtype dt, int64_t n, float amp)
{
	return pair_rand(dt, 1, &n, amp);
}

static void pair_free(pair *p)
{
	cpu->ops->free(cpu, &p->c);
	gpu->ops->free(gpu, &p->g);
}

static float *download(vd_backend *be, const vd_tensor *t)
{
	int64_t n = vd_tensor_numel(t);
	float *h = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));

	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(be->ops->download(be, t, h), VD_OK);
	return h;
}

/* got vs want: f32 (and exact copies, tol 0) by max error relative to
 * max|want| <= tol; 16-bit dtypes by relative L2 error <= 1e-2. Prints
 * both metrics. */
static void compare(const float *got, const float *want, int64_t n, vd_dtype dt, double tol,
		    const char *what)
{
	double maxd = 0.0, maxw = 0.0, num = 0.0, den = 0.0, rel, l2;
	int64_t at = 0, bad = -1;

	/* no assertions inside the loop: each ck_assert costs a syscall */
	for (int64_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - want[i]);

		if (!isfinite(got[i]) && bad < 0)
			bad = i;
		if (d > maxd) {
			maxd = d;
			at = i;
		}
		if (fabs(want[i]) > maxw)
			maxw = fabs(want[i]);
		num += d * d;
		den += (double)want[i] * want[i];
	}
	ck_assert_msg(bad < 0, "%s: element %lld is %g", what, (long long)bad,
		      bad >= 0 ? (double)got[bad] : 0.0);
	rel = maxd / (maxw > 0.0 ? maxw : 1.0);
	l2 = sqrt(num) / (den > 0.0 ? sqrt(den) : 1.0);
	printf("%7.2fs %-46s %-4s max %.2e  l2 %.2e\n", now() - t_start, what, vd_dtype_name(dt),
	       rel, l2);
	if (dt == VD_DTYPE_F32 || tol == 0.0)
		ck_assert_msg(rel <= tol, "%s: element %lld got %.9g want %.9g (rel %.3g > %.3g)",
			      what, (long long)at, (double)got[at], (double)want[at], rel, tol);
	else
		ck_assert_msg(l2 <= 1e-2, "%s (%s): relative L2 error %.3g > 1e-2 (worst element %lld "
			      "got %.6g want %.6g)", what, vd_dtype_name(dt), l2, (long long)at,
			      (double)got[at], (double)want[at]);
}

/* Compare the GPU view g with the CPU view c of the same logical tensor. */
static void check_views(const vd_tensor *c, const vd_tensor *g, vd_dtype dt, double tol,
			const char *what)
{
	float *hc = download(cpu, c), *hg = download(gpu, g);

	ck_assert_int_eq(vd_tensor_numel(c), vd_tensor_numel(g));
	compare(hg, hc, vd_tensor_numel(c), dt, tol, what);
	free(hc);
	free(hg);
}

static void check_pair(const pair *p, vd_dtype dt, double tol, const char *what)
{
	check_views(&p->c, &p->g, dt, tol, what);
}

/* A (T, H, D) view of columns [col0, col0 + H D) of a 2-D (T, W) tensor. */
static vd_tensor heads_view(const vd_tensor *buf, int64_t col0, int64_t H, int64_t D)
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

static pair pair_heads(const pair *p, int64_t col0, int64_t H, int64_t D)
{
	pair v = { heads_view(&p->c, col0, H, D), heads_view(&p->g, col0, H, D) };

	return v;
}

/* A (rows, ncols) view of columns [col0, col0 + ncols) of a 2-D tensor. */
static vd_tensor cols_view(const vd_tensor *buf, int64_t col0, int64_t ncols)
{
	vd_tensor v = *buf;

	v.alloc = NULL;
	v.shape[1] = ncols;
	v.data = (char *)buf->data + col0 * (int64_t)vd_dtype_size(buf->dtype);
	return v;
}

static pair pair_cols(const pair *p, int64_t col0, int64_t ncols)
{
	pair v = { cols_view(&p->c, col0, ncols), cols_view(&p->g, col0, ncols) };

	return v;
}

#define BOTH(call_cpu, call_gpu)                                                        \
	do {                                                                            \
		ck_assert_int_eq((call_cpu), VD_OK);                                    \
		vd_status s_ = (call_gpu);                                              \
		ck_assert_msg(s_ == VD_OK, "cuda: %s: %s", vd_status_str(s_),           \
			      vd_error_message());                                      \
	} while (0)

/* --------------------------------------------------------- memory ops */

START_TEST(test_upload_download)
{
	const vd_dtype floats[] = { VD_DTYPE_F32, VD_DTYPE_BF16, VD_DTYPE_F16 };
	int64_t n = 5 << 20; /* 20 MiB of f32: several staging chunks */
	float *src = host_rand(n, 3.0f, VD_DTYPE_F32), *got = malloc(sizeof(float) * (size_t)n);
	uint16_t *h16 = malloc(sizeof(uint16_t) * (size_t)n);

	ck_assert_ptr_nonnull(got);
	ck_assert_ptr_nonnull(h16);
	for (int di = 0; di < 3; di++) {
		for (int si = 0; si < 3; si++) {
			vd_dtype dt = floats[di], st = floats[si];
			const void *from = src;
			vd_tensor t;
			int64_t bad = -1;

			if (st != VD_DTYPE_F32) {
				for (int64_t i = 0; i < n; i++)
					h16[i] = st == VD_DTYPE_BF16 ? vd_f32_to_bf16(src[i])
								     : vd_f32_to_f16(src[i]);
				from = h16;
			}
			ck_assert_int_eq(gpu->ops->alloc(gpu, &t, dt, 1, &n), VD_OK);
			ck_assert_int_eq(gpu->ops->upload(gpu, &t, from, st, n), VD_OK);
			ck_assert_int_eq(gpu->ops->download(gpu, &t, got), VD_OK);
			for (int64_t i = 0; i < n && bad < 0; i++)
				if (got[i] != round_to(dt, round_to(st, src[i])))
					bad = i;
			ck_assert_msg(bad < 0, "upload %s -> %s: element %lld got %g want %g",
				      vd_dtype_name(st), vd_dtype_name(dt), (long long)bad,
				      bad >= 0 ? (double)got[bad] : 0.0,
				      bad >= 0 ? (double)round_to(dt, round_to(st, src[bad])) : 0.0);
			gpu->ops->free(gpu, &t);
			ck_assert_ptr_null(t.alloc);
		}
	}
	/* from host_alloc (page-locked) memory: direct copies, same results,
	 * and the source may be rewritten as soon as upload returns */
	{
		float *pin = NULL;
		vd_tensor t, u;

		ck_assert_ptr_nonnull(gpu->ops->host_alloc);
		ck_assert_int_eq(gpu->ops->host_alloc(gpu, sizeof(float) * (size_t)n, (void **)&pin),
				 VD_OK);
		memcpy(pin, src, sizeof(float) * (size_t)n);
		ck_assert_int_eq(gpu->ops->alloc(gpu, &t, VD_DTYPE_F32, 1, &n), VD_OK);
		ck_assert_int_eq(gpu->ops->alloc(gpu, &u, VD_DTYPE_BF16, 1, &n), VD_OK);
		ck_assert_int_eq(gpu->ops->upload(gpu, &t, pin, VD_DTYPE_F32, n), VD_OK);
		ck_assert_int_eq(gpu->ops->upload(gpu, &u, pin, VD_DTYPE_F32, n), VD_OK);
		memset(pin, 0, sizeof(float) * (size_t)n);
		ck_assert_int_eq(gpu->ops->download(gpu, &t, got), VD_OK);
		ck_assert_mem_eq(got, src, sizeof(float) * (size_t)n);
		ck_assert_int_eq(gpu->ops->download(gpu, &u, got), VD_OK);
		for (int64_t i = 0; i < n; i++)
			if (got[i] != round_to(VD_DTYPE_BF16, src[i]))
				ck_abort_msg("pinned upload to bf16: element %lld", (long long)i);
		gpu->ops->free(gpu, &t);
		gpu->ops->free(gpu, &u);
		gpu->ops->host_free(gpu, pin);
	}
	/* integers travel unchanged */
	{
		int32_t i32[7] = { 0, -1, 7, INT32_MAX, INT32_MIN, 42, 3 }, o32[7];
		int64_t i64[3] = { -5, INT64_MAX, 1ll << 40 }, o64[3];
		uint8_t u8[5] = { 0, 1, 128, 255, 9 }, ou8[5];
		int64_t n7 = 7, n3 = 3, n5 = 5;
		vd_tensor a, b, c;

		ck_assert_int_eq(gpu->ops->alloc(gpu, &a, VD_DTYPE_I32, 1, &n7), VD_OK);
		ck_assert_int_eq(gpu->ops->alloc(gpu, &b, VD_DTYPE_I64, 1, &n3), VD_OK);
		ck_assert_int_eq(gpu->ops->alloc(gpu, &c, VD_DTYPE_U8, 1, &n5), VD_OK);
		ck_assert_int_eq(gpu->ops->upload(gpu, &a, i32, VD_DTYPE_I32, 7), VD_OK);
		ck_assert_int_eq(gpu->ops->upload(gpu, &b, i64, VD_DTYPE_I64, 3), VD_OK);
		ck_assert_int_eq(gpu->ops->upload(gpu, &c, u8, VD_DTYPE_U8, 5), VD_OK);
		ck_assert_int_eq(gpu->ops->download(gpu, &a, o32), VD_OK);
		ck_assert_int_eq(gpu->ops->download(gpu, &b, o64), VD_OK);
		ck_assert_int_eq(gpu->ops->download(gpu, &c, ou8), VD_OK);
		ck_assert_mem_eq(i32, o32, sizeof(i32));
		ck_assert_mem_eq(i64, o64, sizeof(i64));
		ck_assert_mem_eq(u8, ou8, sizeof(u8));
		ck_assert_int_eq(gpu->ops->upload(gpu, &a, src, VD_DTYPE_F32, 7), VD_ERR_UNSUPPORTED);
		gpu->ops->free(gpu, &a);
		gpu->ops->free(gpu, &b);
		gpu->ops->free(gpu, &c);
	}
	/* a strided view downloads packed */
	for (int d = 0; d < NDT; d++) {
		pair p = rand2(dtypes[d], 9, 50, 1.0f);
		pair v = pair_cols(&p, 7, 31);

		check_views(&v.c, &v.g, dtypes[d], 0.0, "download of a column slice");
		pair_free(&p);
	}
	free(src);
	free(got);
	free(h16);
}
END_TEST

START_TEST(test_copy)
{
	const vd_dtype floats[] = { VD_DTYPE_F32, VD_DTYPE_BF16, VD_DTYPE_F16 };

	for (int si = 0; si < 3; si++) {
		for (int di = 0; di < 3; di++) {
			vd_dtype st = floats[si], dt = floats[di];
			int64_t sshape[2] = { 13, 70 }, dshape[2] = { 13, 41 };
			float *h = host_rand(13 * 70, 2.0f, VD_DTYPE_F32), *got;
			vd_tensor s, d, sv, dv;
			int bad = 0;

			ck_assert_int_eq(gpu->ops->alloc(gpu, &s, st, 2, sshape), VD_OK);
			ck_assert_int_eq(gpu->ops->alloc(gpu, &d, dt, 2, dshape), VD_OK);
			ck_assert_int_eq(gpu->ops->upload(gpu, &s, h, VD_DTYPE_F32, 13 * 70), VD_OK);
			/* columns [5, 37) of s into columns [9, 41) of d */
			sv = cols_view(&s, 5, 32);
			dv = cols_view(&d, 9, 32);
			ck_assert_int_eq(gpu->ops->copy(gpu, &sv, &dv), VD_OK);
			got = download(gpu, &dv);
			for (int64_t r = 0; r < 13; r++)
				for (int64_t i = 0; i < 32; i++)
					if (got[r * 32 + i] != round_to(dt, round_to(st, h[r * 70 + 5 + i])))
						bad++;
			ck_assert_msg(bad == 0, "copy %s -> %s: %d elements differ", vd_dtype_name(st),
				      vd_dtype_name(dt), bad);
			free(got);
			free(h);
			gpu->ops->free(gpu, &s);
			gpu->ops->free(gpu, &d);
		}
	}
	/* a transposed 3-D view (H, T, D) of a packed (T, H, D) tensor */
	for (int k = 0; k < NDT; k++) {
		int64_t shape[3] = { 6, 5, 12 }, tshape[3] = { 5, 6, 12 };
		pair src = pair_rand(dtypes[k], 3, shape, 1.0f), dst = pair_new(dtypes[k], 3, tshape);
		pair tv = src;

		for (int b = 0; b < 2; b++) {
			vd_tensor *t = b ? &tv.g : &tv.c;

			t->alloc = NULL;
			t->shape[0] = 5;
			t->shape[1] = 6;
			t->stride[0] = 12;
			t->stride[1] = 5 * 12;
		}
		BOTH(cpu->ops->copy(cpu, &tv.c, &dst.c), gpu->ops->copy(gpu, &tv.g, &dst.g));
		check_pair(&dst, dtypes[k], 0.0, "copy of a transposed view");
		pair_free(&src);
		pair_free(&dst);
	}
	/* int32 strided copy */
	{
		int32_t h[24], got[8];
		int64_t shape[2] = { 4, 6 }, oshape[2] = { 4, 2 };
		vd_tensor s, d, v;

		for (int i = 0; i < 24; i++)
			h[i] = i * 1000 - 7;
		ck_assert_int_eq(gpu->ops->alloc(gpu, &s, VD_DTYPE_I32, 2, shape), VD_OK);
		ck_assert_int_eq(gpu->ops->alloc(gpu, &d, VD_DTYPE_I32, 2, oshape), VD_OK);
		ck_assert_int_eq(gpu->ops->upload(gpu, &s, h, VD_DTYPE_I32, 24), VD_OK);
		v = cols_view(&s, 3, 2);
		ck_assert_int_eq(gpu->ops->copy(gpu, &v, &d), VD_OK);
		ck_assert_int_eq(gpu->ops->download(gpu, &d, got), VD_OK);
		for (int r = 0; r < 4; r++)
			for (int i = 0; i < 2; i++)
				ck_assert_int_eq(got[r * 2 + i], h[r * 6 + 3 + i]);
		ck_assert_int_eq(gpu->ops->copy(gpu, &v, &(vd_tensor){ 0 }), VD_ERR_INVALID_ARG);
		gpu->ops->free(gpu, &s);
		gpu->ops->free(gpu, &d);
	}
}
END_TEST

/* ------------------------------------------------------------ dense math */

typedef struct lin_case {
	const char *name;
	int64_t M, K, N;
	bool bias;
} lin_case;

static void run_linear(const lin_case *lc, vd_dtype xdt, vd_dtype wdt, vd_dtype ydt, bool strided)
{
	char what[96];
	int64_t pad = strided ? 7 : 0;
	pair xb = rand2(xdt, lc->M, lc->K + pad, 1.0f), w = rand2(wdt, lc->N, lc->K, 0.5f);
	pair b = rand1(wdt, lc->N, 1.0f), yb = rand2(ydt, lc->M, lc->N + pad, 1.0f);
	pair x = strided ? pair_cols(&xb, 3, lc->K) : xb, y = strided ? pair_cols(&yb, 5, lc->N) : yb;
	vd_dtype worst = xdt != VD_DTYPE_F32 ? xdt : wdt != VD_DTYPE_F32 ? wdt : ydt;

	BOTH(cpu->ops->linear(cpu, &x.c, &w.c, lc->bias ? &b.c : NULL, &y.c),
	     gpu->ops->linear(gpu, &x.g, &w.g, lc->bias ? &b.g : NULL, &y.g));
	snprintf(what, sizeof(what), "linear %s x%s w%s y%s%s", lc->name, vd_dtype_name(xdt),
		 vd_dtype_name(wdt), vd_dtype_name(ydt), strided ? " strided" : "");
	/* the whole of yb: columns outside the view must be untouched */
	check_pair(&yb, worst, TOL_MM, what);
	pair_free(&xb);
	pair_free(&w);
	pair_free(&b);
	pair_free(&yb);
}

START_TEST(test_linear)
{
	static const lin_case cases[] = {
		{ "llava o_proj", 7, 4096, 4096, false },
		{ "llava down", 3, 11008, 4096, false },
		{ "llava gate_up", 2, 4096, 22016, false },
		{ "llava lm_head", 2, 4096, 32064, false },
		{ "clip fc1", 577, 1024, 4096, true },
		{ "clip patch", 576, 588, 1024, false },
		{ "qwen2vl-2b qkv", 5, 1536, 2048, true },
		{ "qwen2vl-7b qkv", 4, 3584, 4608, true },
		{ "phi3.5 qkv", 4, 3072, 9216, false },
		{ "odd", 3, 37, 19, true },
		{ "K=0", 2, 0, 5, true },
		/* decode batches: 1..8 rows take the GEMV kernel, 9 cuBLAS */
		{ "llava lm_head b1", 1, 4096, 32064, false },
		{ "decode b8 bias", 8, 4096, 4096, true },
		{ "decode b9", 9, 1024, 1024, false },
		{ "gemv odd N, bias", 1, 4096, 4097, true },
		{ "gemv wide", 1, 1536, 17000, true },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		for (int d = 0; d < NDT; d++)
			run_linear(&cases[i], dtypes[d], dtypes[d], dtypes[d], false);
	for (int d = 0; d < NDT; d++)
		run_linear(&cases[0], dtypes[d], dtypes[d], dtypes[d], true);
	/* mixed dtypes: bf16 features through an f32 projector, f32 output of
	 * bf16 weights, bf16 output of f32 weights */
	run_linear(&cases[4], VD_DTYPE_BF16, VD_DTYPE_F32, VD_DTYPE_F32, false);
	run_linear(&cases[6], VD_DTYPE_BF16, VD_DTYPE_BF16, VD_DTYPE_F32, true);
	run_linear(&cases[9], VD_DTYPE_F32, VD_DTYPE_F32, VD_DTYPE_BF16, false);
	run_linear(&cases[11], VD_DTYPE_BF16, VD_DTYPE_BF16, VD_DTYPE_F32, false); /* logits */
}
END_TEST

typedef struct row_case {
	const char *name;
	int64_t M, C;
} row_case;

static const row_case row_cases[] = {
	{ "llava", 7, 4096 },   { "clip", 577, 1024 },  { "qwen2vl-2b", 5, 1536 },
	{ "qwen2vl-7b", 9, 3584 }, { "phi3.5", 4, 3072 }, { "odd", 3, 37 },
};
#define NROW ((int)(sizeof(row_cases) / sizeof(row_cases[0])))

START_TEST(test_elementwise)
{
	static const vd_act acts[] = { VD_ACT_GELU, VD_ACT_GELU_TANH, VD_ACT_QUICK_GELU,
				       VD_ACT_SILU };
	static const char *act_names[] = { "gelu", "gelu_tanh", "quick_gelu", "silu" };
	char what[96];

	for (int i = 0; i < NROW; i++) {
		const row_case *rc = &row_cases[i];

		for (int d = 0; d < NDT; d++) {
			vd_dtype dt = dtypes[d];
			pair a = rand2(dt, rc->M, rc->C, 2.0f), b = rand2(dt, rc->M, rc->C, 2.0f);
			pair y = rand2(dt, rc->M, rc->C, 1.0f);
			pair gu = rand2(dt, rc->M, 2 * rc->C, 4.0f);

			BOTH(cpu->ops->add(cpu, &a.c, &b.c, &y.c), gpu->ops->add(gpu, &a.g, &b.g, &y.g));
			snprintf(what, sizeof(what), "add %s", rc->name);
			check_pair(&y, dt, TOL, what);
			/* y aliases a */
			BOTH(cpu->ops->add(cpu, &a.c, &b.c, &a.c), gpu->ops->add(gpu, &a.g, &b.g, &a.g));
			snprintf(what, sizeof(what), "add in place %s", rc->name);
			check_pair(&a, dt, TOL, what);
			BOTH(cpu->ops->scale(cpu, &b.c, 0.125f, &y.c),
			     gpu->ops->scale(gpu, &b.g, 0.125f, &y.g));
			snprintf(what, sizeof(what), "scale %s", rc->name);
			check_pair(&y, dt, TOL, what);
			for (int k = 0; k < 4; k++) {
				BOTH(cpu->ops->act(cpu, acts[k], &b.c, &y.c),
				     gpu->ops->act(gpu, acts[k], &b.g, &y.g));
				snprintf(what, sizeof(what), "act %s %s", act_names[k], rc->name);
				check_pair(&y, dt, TOL, what);
			}
			BOTH(cpu->ops->silu_mul(cpu, &gu.c, &y.c), gpu->ops->silu_mul(gpu, &gu.g, &y.g));
			snprintf(what, sizeof(what), "silu_mul %s", rc->name);
			check_pair(&y, dt, TOL, what);
			pair_free(&a);
			pair_free(&b);
			pair_free(&y);
			pair_free(&gu);
		}
	}
	/* MLP-sized silu_mul: LLaVA 11008, Qwen2-VL-2B 8960 */
	for (int d = 0; d < NDT; d++) {
		pair gu = rand2(dtypes[d], 6, 2 * 11008, 4.0f), y = rand2(dtypes[d], 6, 11008, 1.0f);
		pair gq = rand2(dtypes[d], 5, 2 * 8960, 4.0f), yq = rand2(dtypes[d], 5, 8960, 1.0f);

		BOTH(cpu->ops->silu_mul(cpu, &gu.c, &y.c), gpu->ops->silu_mul(gpu, &gu.g, &y.g));
		check_pair(&y, dtypes[d], TOL, "silu_mul llava mlp");
		BOTH(cpu->ops->silu_mul(cpu, &gq.c, &yq.c), gpu->ops->silu_mul(gpu, &gq.g, &yq.g));
		check_pair(&yq, dtypes[d], TOL, "silu_mul qwen2vl-2b mlp");
		pair_free(&gu);
		pair_free(&y);
		pair_free(&gq);
		pair_free(&yq);
	}
}
END_TEST

START_TEST(test_norms)
{
	char what[96];

	for (int i = 0; i < NROW; i++) {
		const row_case *rc = &row_cases[i];

		for (int d = 0; d < NDT; d++) {
			vd_dtype dt = dtypes[d];
			pair x = rand2(dt, rc->M, rc->C, 3.0f), r = rand2(dt, rc->M, rc->C, 3.0f);
			pair y = rand2(dt, rc->M, rc->C, 1.0f), w = rand1(dt, rc->C, 1.5f);
			pair b = rand1(dt, rc->C, 1.0f);

			BOTH(cpu->ops->rmsnorm(cpu, &x.c, &w.c, 1e-6f, &y.c),
			     gpu->ops->rmsnorm(gpu, &x.g, &w.g, 1e-6f, &y.g));
			snprintf(what, sizeof(what), "rmsnorm %s", rc->name);
			check_pair(&y, dt, TOL, what);
			BOTH(cpu->ops->add_rmsnorm(cpu, &r.c, &x.c, &w.c, 1e-5f, &y.c),
			     gpu->ops->add_rmsnorm(gpu, &r.g, &x.g, &w.g, 1e-5f, &y.g));
			snprintf(what, sizeof(what), "add_rmsnorm r %s", rc->name);
			check_pair(&r, dt, TOL, what);
			snprintf(what, sizeof(what), "add_rmsnorm y %s", rc->name);
			check_pair(&y, dt, TOL, what);
			/* y aliases x, as the decoder does between layers */
			BOTH(cpu->ops->add_rmsnorm(cpu, &r.c, &x.c, &w.c, 1e-5f, &x.c),
			     gpu->ops->add_rmsnorm(gpu, &r.g, &x.g, &w.g, 1e-5f, &x.g));
			snprintf(what, sizeof(what), "add_rmsnorm in place %s", rc->name);
			check_pair(&x, dt, TOL, what);
			BOTH(cpu->ops->layernorm(cpu, &r.c, &w.c, &b.c, 1e-5f, &y.c),
			     gpu->ops->layernorm(gpu, &r.g, &w.g, &b.g, 1e-5f, &y.g));
			snprintf(what, sizeof(what), "layernorm %s", rc->name);
			check_pair(&y, dt, TOL, what);
			BOTH(cpu->ops->layernorm(cpu, &r.c, &w.c, NULL, 1e-6f, &r.c),
			     gpu->ops->layernorm(gpu, &r.g, &w.g, NULL, 1e-6f, &r.g));
			snprintf(what, sizeof(what), "layernorm in place, no bias %s", rc->name);
			check_pair(&r, dt, TOL, what);
			pair_free(&x);
			pair_free(&r);
			pair_free(&y);
			pair_free(&w);
			pair_free(&b);
		}
	}
	/* a norm over a column slice (a row view with a wider row stride) */
	for (int d = 0; d < NDT; d++) {
		pair xb = rand2(dtypes[d], 6, 300, 2.0f), w = rand1(dtypes[d], 200, 1.0f);
		pair x = pair_cols(&xb, 50, 200);

		BOTH(cpu->ops->rmsnorm(cpu, &x.c, &w.c, 1e-6f, &x.c),
		     gpu->ops->rmsnorm(gpu, &x.g, &w.g, 1e-6f, &x.g));
		check_pair(&xb, dtypes[d], TOL, "rmsnorm on a column slice");
		pair_free(&xb);
		pair_free(&w);
	}
}
END_TEST

/* ------------------------------------------------------------ rope */

typedef struct rope_case {
	const char *name;
	int64_t T, H, Hkv, D;
	int rot;
	int kind;      /* 0 plain, 1 M-RoPE [16, 24, 24], 2 vision 2-D halves, 3 longrope */
	double theta;
	int max_pos;
} rope_case;

static void run_rope(const rope_case *rc, vd_dtype dt)
{
	int half = rc->rot / 2, nrows = rc->kind == 1 ? 3 : rc->kind == 2 ? 2 : 1;
	int n_tables = rc->kind == 3 ? 2 : 1;
	int64_t W = (rc->H + 2 * rc->Hkv) * rc->D;
	float *inv = malloc(sizeof(float) * (size_t)(n_tables * half));
	int32_t *pos = malloc(sizeof(int32_t) * (size_t)(nrows * rc->T));
	int32_t *tab = malloc(sizeof(int32_t) * (size_t)rc->T);
	uint8_t pos_row[256];
	pair qkv = rand2(dt, rc->T, W, 2.0f);
	pair q = pair_heads(&qkv, 0, rc->H, rc->D), k = pair_heads(&qkv, rc->H * rc->D, rc->Hkv, rc->D);
	vd_rope r = { rc->rot, n_tables, inv, NULL, NULL, 1.0f };
	char what[96];

	ck_assert(inv && pos && tab);
	for (int t = 0; t < n_tables; t++)
		for (int i = 0; i < half; i++) {
			/* vision RoPE: each half repeats the frequencies of rot/2 dims */
			int j = rc->kind == 2 ? i % (half / 2) : i;
			int dim = rc->kind == 2 ? rc->rot / 2 : rc->rot;
			double f = pow(rc->theta, -2.0 * j / dim);

			if (rc->kind == 3) /* longrope: per-dim rescale, short and long */
				f /= 1.0 + (t ? 4.0 : 0.5) * (frand() + 1.0);
			inv[t * half + i] = (float)f;
		}
	for (int i = 0; i < half; i++)
		pos_row[i] = (uint8_t)(rc->kind == 1 ? (i < 16 ? 0 : i < 40 ? 1 : 2)
						     : rc->kind == 2 ? (i < half / 2 ? 0 : 1) : 0);
	{
		/* text: consecutive positions after a random offset; M-RoPE and
		 * vision rows: independent positions per row */
		int base = irand(rc->max_pos);

		for (int64_t t = 0; t < rc->T; t++) {
			for (int row = 0; row < nrows; row++)
				pos[row * rc->T + t] = nrows == 1 ? (int32_t)(base + t) : irand(rc->max_pos);
			tab[t] = irand(2);
		}
	}
	if (rc->kind == 1 || rc->kind == 2)
		r.pos_row = pos_row;
	if (rc->kind == 3) {
		r.table_idx = tab;
		r.mscale = sqrtf(1.0f + logf(32.0f) / logf(4096.0f));
	}
	BOTH(cpu->ops->rope(cpu, &q.c, pos, &r), gpu->ops->rope(gpu, &q.g, pos, &r));
	BOTH(cpu->ops->rope(cpu, &k.c, pos, &r), gpu->ops->rope(gpu, &k.g, pos, &r));
	snprintf(what, sizeof(what), "rope %s (q, k of a qkv buffer)", rc->name);
	check_pair(&qkv, dt, TOL, what);
	pair_free(&qkv);
	free(inv);
	free(pos);
	free(tab);
}

START_TEST(test_rope)
{
	static const rope_case cases[] = {
		{ "llava", 9, 32, 32, 128, 128, 0, 10000.0, 4000 },
		{ "qwen2vl-7b mrope", 11, 28, 4, 128, 128, 1, 1e6, 30000 },
		{ "qwen2vl-2b mrope", 6, 12, 2, 128, 128, 1, 1e6, 3000 },
		{ "qwen2vl vit 2d", 64, 16, 0, 80, 80, 2, 10000.0, 100 },
		{ "phi3.5 longrope", 7, 32, 32, 96, 96, 3, 10000.0, 100000 },
		{ "partial rotary odd", 5, 3, 1, 40, 24, 0, 10000.0, 50 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		for (int d = 0; d < NDT; d++)
			run_rope(&cases[i], dtypes[d]);
}
END_TEST

/* Index arrays are cached on the device by content: the same host buffer
 * with new values must not reuse stale positions. */
START_TEST(test_rope_positions_change)
{
	int32_t pos[4] = { 0, 1, 2, 3 };
	float inv[4] = { 1.0f, 0.1f, 0.01f, 0.001f };
	vd_rope r = { 8, 1, inv, NULL, NULL, 1.0f };
	int64_t shape[3] = { 4, 2, 8 };
	pair x = pair_rand(VD_DTYPE_F32, 3, shape, 1.0f);

	BOTH(cpu->ops->rope(cpu, &x.c, pos, &r), gpu->ops->rope(gpu, &x.g, pos, &r));
	pos[2] = 1000;
	BOTH(cpu->ops->rope(cpu, &x.c, pos, &r), gpu->ops->rope(gpu, &x.g, pos, &r));
	inv[1] = 0.5f;
	BOTH(cpu->ops->rope(cpu, &x.c, pos, &r), gpu->ops->rope(gpu, &x.g, pos, &r));
	check_pair(&x, VD_DTYPE_F32, TOL, "rope after positions change in place");
	pair_free(&x);
}
END_TEST

/* ------------------------------------------------------------ attention */

typedef struct attn_cfg {
	const char *name;
	int64_t H, Hkv, D;
	int bs;
} attn_cfg;

static const attn_cfg attn_cfgs[] = {
	{ "llava", 32, 32, 128, 16 },    { "qwen2vl-7b", 28, 4, 128, 16 },
	{ "qwen2vl-2b", 12, 2, 128, 16 }, { "phi3.5", 32, 32, 96, 16 },
	{ "odd gqa d80", 6, 3, 80, 8 },  { "d256", 4, 1, 256, 16 },
	{ "d40 bs32", 5, 5, 40, 32 },
};

/* One sequence of a batch: ctx tokens already cached, q new ones. */
typedef struct seq_spec {
	int ctx, q;
} seq_spec;

/* A KV cache pair in FP8 E4M3 on both backends (each converts the same
 * random f32 values itself), or in f32 / dt as pair_rand makes it. */
static pair cache_pair(bool fp8, vd_dtype dt, const int64_t *shape)
{
	pair p;
	float *h;

	if (!fp8)
		return pair_rand(dt, 4, shape, 1.0f);
	ck_assert_int_eq(cpu->ops->alloc(cpu, &p.c, VD_DTYPE_F8E4M3, 4, shape), VD_OK);
	ck_assert_int_eq(gpu->ops->alloc(gpu, &p.g, VD_DTYPE_F8E4M3, 4, shape), VD_OK);
	h = host_rand(vd_tensor_numel(&p.c), 1.0f, VD_DTYPE_F32);
	pair_set(&p, h);
	free(h);
	return p;
}

/* Paged attention and cache_write over a batch of seqs. fp8: both caches
 * FP8 E4M3 with K scale kvs and V scale 1 / kvs: the cache bytes must be
 * the same on both backends (the same rounding of the same inputs). */
static void run_paged_kv(const attn_cfg *cfg, vd_dtype dt, const seq_spec *seqs, int nseq,
			 const char *label, bool fp8, float kvs)
{
	int32_t qsl[16], lens[16];
	int max_blocks = 0, total_blocks = 0, num_blocks, T = 0, P = 0, bs = cfg->bs;
	int32_t *perm, *tables;
	int64_t *slots_new, *slots_old;
	int64_t H = cfg->H, Hkv = cfg->Hkv, D = cfg->D, W = (H + 2 * Hkv) * D;
	char what[128];

	ck_assert_int_le(nseq, 15);
	qsl[0] = 0;
	for (int s = 0; s < nseq; s++) {
		int nb;

		lens[s] = seqs[s].ctx + seqs[s].q;
		qsl[s + 1] = qsl[s] + seqs[s].q;
		nb = (lens[s] + bs - 1) / bs;
		total_blocks += nb;
		if (nb > max_blocks)
			max_blocks = nb;
		P += seqs[s].ctx;
	}
	T = qsl[nseq];
	max_blocks += 2; /* unused table entries hold -1: never read */
	num_blocks = total_blocks + 5;
	perm = malloc(sizeof(int32_t) * (size_t)num_blocks);
	tables = malloc(sizeof(int32_t) * (size_t)(nseq * max_blocks));
	slots_new = malloc(sizeof(int64_t) * (size_t)T);
	slots_old = malloc(sizeof(int64_t) * (size_t)(P + 3));
	ck_assert(perm && tables && slots_new && slots_old);
	/* shuffled block ids */
	for (int i = 0; i < num_blocks; i++)
		perm[i] = i;
	for (int i = num_blocks - 1; i > 0; i--) {
		int j = irand(i + 1), t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	for (int s = 0, next = 0; s < nseq; s++)
		for (int b = 0; b < max_blocks; b++)
			tables[s * max_blocks + b] = b < (lens[s] + bs - 1) / bs ? perm[next++] : -1;
	{
		int po = 0;

		for (int s = 0; s < nseq; s++) {
			for (int p = 0; p < lens[s]; p++) {
				int64_t slot = (int64_t)tables[s * max_blocks + p / bs] * bs + p % bs;

				if (p < seqs[s].ctx)
					slots_old[po++] = slot;
				else
					slots_new[qsl[s] + p - seqs[s].ctx] = slot;
			}
		}
		/* padding rows are skipped */
		for (int i = 0; i < 3; i++)
			slots_old[po++] = -1;
	}
	{
		int64_t cshape[4] = { num_blocks, bs, Hkv, D };
		pair kc = cache_pair(fp8, dt, cshape), vc = cache_pair(fp8, dt, cshape);
		pair old = rand2(dt, P + 3, 2 * Hkv * D, 1.0f);
		pair ok = pair_heads(&old, 0, Hkv, D), ov = pair_heads(&old, Hkv * D, Hkv, D);
		pair qkv = rand2(dt, T, W, 1.5f), out = rand2(dt, T, H * D, 1.0f);
		pair q = pair_heads(&qkv, 0, H, D), k = pair_heads(&qkv, H * D, Hkv, D);
		pair v = pair_heads(&qkv, (H + Hkv) * D, Hkv, D), o = pair_heads(&out, 0, H, D);
		vd_attn_meta m_old = { 0, P + 3, NULL, NULL, NULL, 0, bs, slots_old, kvs, 1.0f / kvs };
		vd_attn_meta m = { nseq, T, qsl, lens, tables, max_blocks, bs, slots_new,
				   kvs, 1.0f / kvs };
		float scale = (float)(1.0 / sqrt((double)D));

		BOTH(cpu->ops->cache_write(cpu, &ok.c, &ov.c, &kc.c, &vc.c, &m_old),
		     gpu->ops->cache_write(gpu, &ok.g, &ov.g, &kc.g, &vc.g, &m_old));
		BOTH(cpu->ops->cache_write(cpu, &k.c, &v.c, &kc.c, &vc.c, &m),
		     gpu->ops->cache_write(gpu, &k.g, &v.g, &kc.g, &vc.g, &m));
		snprintf(what, sizeof(what), "cache_write %s %s%s k", cfg->name, label,
			 fp8 ? " fp8" : "");
		check_pair(&kc, fp8 ? VD_DTYPE_F32 : dt, 0.0, what);
		snprintf(what, sizeof(what), "cache_write %s %s%s v", cfg->name, label,
			 fp8 ? " fp8" : "");
		check_pair(&vc, fp8 ? VD_DTYPE_F32 : dt, 0.0, what);
		BOTH(cpu->ops->paged_attention(cpu, &q.c, &kc.c, &vc.c, &m, scale, &o.c),
		     gpu->ops->paged_attention(gpu, &q.g, &kc.g, &vc.g, &m, scale, &o.g));
		snprintf(what, sizeof(what), "paged_attention %s %s%s", cfg->name, label,
			 fp8 ? " fp8" : "");
		check_pair(&out, dt, TOL_MM, what);
		/* the same metadata again (the device copy is reused) */
		BOTH(cpu->ops->scale(cpu, &out.c, 0.0f, &out.c), gpu->ops->scale(gpu, &out.g, 0.0f, &out.g));
		BOTH(cpu->ops->paged_attention(cpu, &q.c, &kc.c, &vc.c, &m, scale, &o.c),
		     gpu->ops->paged_attention(gpu, &q.g, &kc.g, &vc.g, &m, scale, &o.g));
		snprintf(what, sizeof(what), "paged_attention again %s %s", cfg->name, label);
		check_pair(&out, dt, TOL_MM, what);
		pair_free(&kc);
		pair_free(&vc);
		pair_free(&old);
		pair_free(&qkv);
		pair_free(&out);
	}
	free(perm);
	free(tables);
	free(slots_new);
	free(slots_old);
}

static void run_paged(const attn_cfg *cfg, vd_dtype dt, const seq_spec *seqs, int nseq,
		      const char *label)
{
	run_paged_kv(cfg, dt, seqs, nseq, label, false, 1.0f);
}

START_TEST(test_paged_attention)
{
	/* mixed: long decodes, a prefill chunk after cached context, a fresh
	 * prefill, a decode at a block boundary, a first token, a prefill of
	 * several query tiles (the tensor-core kernel takes chunks of >= 16) */
	static const seq_spec mixed[] = { { 2100, 1 }, { 16, 1 }, { 250, 37 }, { 0, 23 },
					  { 2047, 1 }, { 0, 1 },  { 64, 130 } };
	/* decode only: few query rows, so the keys are split over blocks */
	static const seq_spec decode[] = { { 2100, 1 }, { 16, 1 }, { 2999, 1 }, { 0, 1 } };
	/* the same with shorter contexts, for the smaller configurations */
	static const seq_spec mixed_s[] = { { 300, 1 }, { 16, 1 }, { 50, 37 }, { 0, 23 },
					    { 127, 1 }, { 0, 1 },  { 64, 130 } };
	static const seq_spec decode_s[] = { { 300, 1 }, { 16, 1 }, { 511, 1 }, { 0, 1 } };
	/* long causal prefills: many query and key tiles, a fresh one and one
	 * whose diagonal runs through the middle of key tiles (ctx 1000) */
	static const seq_spec longp[] = { { 0, 700 }, { 1000, 300 } };
	static const attn_cfg d64 = { "d64 gqa", 8, 2, 64, 16 };

	for (size_t i = 0; i < sizeof(attn_cfgs) / sizeof(attn_cfgs[0]); i++) {
		bool big = i == 0 || i == 1 || i == 3; /* llava, qwen2vl-7b, phi3.5 */

		for (int d = 0; d < NDT; d++) {
			run_paged(&attn_cfgs[i], dtypes[d], big ? mixed : mixed_s, 7, "mixed");
			run_paged(&attn_cfgs[i], dtypes[d], big ? decode : decode_s, 4, "decode");
		}
	}
	for (int d = 0; d < NDT; d++) {
		run_paged(&attn_cfgs[2], dtypes[d], longp, 2, "long prefill"); /* qwen2vl-2b, d128 */
		run_paged(&attn_cfgs[4], dtypes[d], longp, 2, "long prefill"); /* d80, bs 8 */
		run_paged(&d64, dtypes[d], longp, 2, "long prefill");
	}
	/* the f16 build of the tile kernel */
	run_paged(&attn_cfgs[2], VD_DTYPE_F16, longp, 2, "long prefill");
}
END_TEST

START_TEST(test_paged_attention_fp8)
{
	/* FP8 E4M3 caches: the decode kernel (8-byte loads), the tile kernel
	 * (converted on the way into shared memory), the row kernel (head dim
	 * 256 and 40), unit and non-unit scales, bf16 and f16 queries */
	static const seq_spec mixed[] = { { 2100, 1 }, { 16, 1 }, { 250, 37 }, { 0, 23 },
					  { 2047, 1 }, { 0, 1 },  { 64, 130 } };
	static const seq_spec mixed_s[] = { { 300, 1 }, { 16, 1 }, { 50, 37 }, { 0, 23 },
					    { 127, 1 }, { 0, 1 },  { 64, 130 } };
	static const seq_spec decode[] = { { 2100, 1 }, { 16, 1 }, { 2999, 1 }, { 0, 1 } };
	static const seq_spec longp[] = { { 0, 700 }, { 1000, 300 } };

	for (size_t i = 0; i < sizeof(attn_cfgs) / sizeof(attn_cfgs[0]); i++) {
		bool big = i == 0 || i == 1 || i == 3;

		run_paged_kv(&attn_cfgs[i], VD_DTYPE_BF16, big ? mixed : mixed_s, 7, "mixed", true,
			     1.0f);
	}
	run_paged_kv(&attn_cfgs[0], VD_DTYPE_BF16, decode, 4, "decode scaled", true, 0.25f);
	run_paged_kv(&attn_cfgs[1], VD_DTYPE_F16, decode, 4, "decode", true, 1.0f);
	run_paged_kv(&attn_cfgs[2], VD_DTYPE_BF16, longp, 2, "long prefill scaled", true, 2.0f);
	run_paged_kv(&attn_cfgs[2], VD_DTYPE_F16, longp, 2, "long prefill", true, 1.0f);
}
END_TEST

static void run_segments(const char *name, int64_t H, int64_t Hkv, int64_t D, const int32_t *cu,
			 int nseg, vd_dtype dt)
{
	int64_t T = cu[nseg], W = (H + 2 * Hkv) * D;
	pair qkv = rand2(dt, T, W, 2.0f), out = rand2(dt, T, H * D, 1.0f);
	pair q = pair_heads(&qkv, 0, H, D), k = pair_heads(&qkv, H * D, Hkv, D);
	pair v = pair_heads(&qkv, (H + Hkv) * D, Hkv, D), o = pair_heads(&out, 0, H, D);
	float scale = (float)(1.0 / sqrt((double)D));
	char what[96];

	BOTH(cpu->ops->attention_segments(cpu, &q.c, &k.c, &v.c, cu, nseg, scale, &o.c),
	     gpu->ops->attention_segments(gpu, &q.g, &k.g, &v.g, cu, nseg, scale, &o.g));
	snprintf(what, sizeof(what), "attention_segments %s", name);
	check_pair(&out, dt, TOL_MM, what);
	pair_free(&qkv);
	pair_free(&out);
}

START_TEST(test_attention_segments)
{
	static const int32_t clip1[] = { 0, 577 }, clip2[] = { 0, 577, 1154 };
	static const int32_t vit[] = { 0, 64, 260, 276, 277 }, odd[] = { 0, 0, 33, 40 };
	/* the tile kernel at its other head dims, ragged last tiles, GQA */
	static const int32_t two[] = { 0, 577, 877 }, gqa[] = { 0, 200, 777 };

	for (int d = 0; d < NDT; d++) {
		run_segments("clip 1 image", 16, 16, 64, clip1, 1, dtypes[d]);
		run_segments("clip 2 images", 16, 16, 64, clip2, 2, dtypes[d]);
		run_segments("qwen2vl vit d80", 16, 16, 80, vit, 4, dtypes[d]);
		run_segments("odd gqa, empty segment", 6, 2, 48, odd, 3, dtypes[d]);
		run_segments("d128, 577 + 300 rows", 4, 4, 128, two, 2, dtypes[d]);
		run_segments("d96, 16 heads", 16, 16, 96, clip1, 1, dtypes[d]);
		run_segments("d64 gqa 8/2", 8, 2, 64, gqa, 2, dtypes[d]);
	}
	/* the f16 build of the tile kernel */
	run_segments("d128, 577 + 300 rows", 4, 4, 128, two, 2, VD_DTYPE_F16);
	run_segments("clip 1 image", 16, 16, 64, clip1, 1, VD_DTYPE_F16);
}
END_TEST

/* ------------------------------------------------------------ rows */

START_TEST(test_rows)
{
	for (int d = 0; d < NDT; d++) {
		vd_dtype dt = dtypes[d];
		pair table = rand2(dt, 32064, 4096, 1.0f), out = rand2(dt, 9, 4096, 1.0f);
		int32_t ids[9] = { 0, 32063, 1, 29871, 32000, 1, 0, 500, 13 };
		pair small = rand2(dt, 50, 33, 1.0f), sout = rand2(dt, 4, 33, 1.0f);
		int32_t sids[4] = { 49, 0, 49, 7 };
		pair img = rand2(dt, 576, 4096, 1.0f), text = rand2(dt, 600, 4096, 1.0f);
		int32_t *rows = malloc(sizeof(int32_t) * 576);
		pair back = rand2(dt, 576, 4096, 1.0f);

		ck_assert_ptr_nonnull(rows);
		BOTH(cpu->ops->embed(cpu, &table.c, ids, 9, &out.c),
		     gpu->ops->embed(gpu, &table.g, ids, 9, &out.g));
		check_pair(&out, dt, 0.0, "embed llava vocab");
		BOTH(cpu->ops->embed(cpu, &small.c, sids, 4, &sout.c),
		     gpu->ops->embed(gpu, &small.g, sids, 4, &sout.g));
		check_pair(&sout, dt, 0.0, "embed odd");
		/* LLaVA: 576 image rows after a 5-token prefix, as the engine does */
		for (int i = 0; i < 576; i++)
			rows[i] = 5 + i;
		BOTH(cpu->ops->scatter_rows(cpu, &img.c, rows, 576, &text.c),
		     gpu->ops->scatter_rows(gpu, &img.g, rows, 576, &text.g));
		check_pair(&text, dt, 0.0, "scatter_rows llava image rows");
		for (int i = 0; i < 576; i++)
			rows[i] = (i * 37) % 600;
		BOTH(cpu->ops->gather_rows(cpu, &text.c, rows, 576, &back.c),
		     gpu->ops->gather_rows(gpu, &text.g, rows, 576, &back.g));
		check_pair(&back, dt, 0.0, "gather_rows permuted");
		/* out-of-range ids fail before any launch and leave out alone */
		ids[3] = 32064;
		ck_assert_int_eq(gpu->ops->embed(gpu, &table.g, ids, 9, &out.g), VD_ERR_INVALID_ARG);
		ck_assert_ptr_nonnull(strstr(vd_error_message(), "outside"));
		ids[3] = -1;
		ck_assert_int_eq(gpu->ops->embed(gpu, &table.g, ids, 9, &out.g), VD_ERR_INVALID_ARG);
		rows[0] = 600;
		ck_assert_int_eq(gpu->ops->scatter_rows(gpu, &img.g, rows, 576, &text.g),
				 VD_ERR_INVALID_ARG);
		ck_assert_int_eq(gpu->ops->gather_rows(gpu, &text.g, rows, 576, &back.g),
				 VD_ERR_INVALID_ARG);
		check_pair(&out, dt, 0.0, "embed unchanged after a refused call");
		pair_free(&table);
		pair_free(&out);
		pair_free(&small);
		pair_free(&sout);
		pair_free(&img);
		pair_free(&text);
		pair_free(&back);
		free(rows);
	}
	/* f32 projector output into bf16 text embeddings */
	{
		pair src = rand2(VD_DTYPE_F32, 3, 64, 1.0f), dst = rand2(VD_DTYPE_BF16, 8, 64, 1.0f);
		int32_t rows[3] = { 6, 1, 3 };

		BOTH(cpu->ops->scatter_rows(cpu, &src.c, rows, 3, &dst.c),
		     gpu->ops->scatter_rows(gpu, &src.g, rows, 3, &dst.g));
		check_pair(&dst, VD_DTYPE_BF16, TOL, "scatter_rows f32 into bf16");
		pair_free(&src);
		pair_free(&dst);
	}
}
END_TEST

START_TEST(test_im2patch)
{
	for (int d = 0; d < NDT; d++) {
		vd_dtype dt = dtypes[d];
		int64_t clip_shape[3] = { 3, 336, 336 }, q_shape[3] = { 6, 28, 56 };
		int64_t odd_shape[3] = { 3, 31, 45 }, hwc_shape[3] = { 20, 30, 3 };
		pair clip = pair_rand(dt, 3, clip_shape, 1.0f), cout = rand2(dt, 576, 588, 1.0f);
		pair qi = pair_rand(dt, 3, q_shape, 1.0f), qout = rand2(dt, 8, 6 * 14 * 14, 1.0f);
		pair odd = pair_rand(dt, 3, odd_shape, 1.0f), oout = rand2(dt, 4 * 6, 3 * 49, 1.0f);
		pair hwc = pair_rand(dt, 3, hwc_shape, 1.0f), hout = rand2(dt, 4 * 6, 3 * 25, 1.0f);
		pair chw = hwc;

		BOTH(cpu->ops->im2patch(cpu, &clip.c, 14, &cout.c),
		     gpu->ops->im2patch(gpu, &clip.g, 14, &cout.g));
		check_pair(&cout, dt, 0.0, "im2patch clip 336/14");
		BOTH(cpu->ops->im2patch(cpu, &qi.c, 14, &qout.c),
		     gpu->ops->im2patch(gpu, &qi.g, 14, &qout.g));
		check_pair(&qout, dt, 0.0, "im2patch qwen2vl 2 frames");
		BOTH(cpu->ops->im2patch(cpu, &odd.c, 7, &oout.c),
		     gpu->ops->im2patch(gpu, &odd.g, 7, &oout.g));
		check_pair(&oout, dt, 0.0, "im2patch odd, edge dropped");
		/* (H, W, C) memory viewed as (C, H, W) */
		for (int b = 0; b < 2; b++) {
			vd_tensor *t = b ? &chw.g : &chw.c;

			t->alloc = NULL;
			t->shape[0] = 3;
			t->shape[1] = 20;
			t->shape[2] = 30;
			t->stride[0] = 1;
			t->stride[1] = 90;
			t->stride[2] = 3;
		}
		BOTH(cpu->ops->im2patch(cpu, &chw.c, 5, &hout.c),
		     gpu->ops->im2patch(gpu, &chw.g, 5, &hout.g));
		check_pair(&hout, dt, 0.0, "im2patch of an HWC view");
		pair_free(&clip);
		pair_free(&cout);
		pair_free(&qi);
		pair_free(&qout);
		pair_free(&odd);
		pair_free(&oout);
		pair_free(&hwc);
		pair_free(&hout);
	}
}
END_TEST

/* patch_conv against the CPU's im2patch-and-linear sums, in each form the
 * backend has (cuDNN, im2patch + GEMM) and as it picks for itself: CLIP's
 * 336/14 convolution over a batch, Qwen2-VL's temporal (2, 14, 14) patches
 * given as flattened rows, and an odd rectangular kernel (cuDNN only).
 * cuDNN must be there unless VD_CUDA_CUDNN=0. */
START_TEST(test_patch_conv)
{
	static const struct {
		const char *what;
		int nd;
		int64_t xshape[4], xdims, size[4], kernel[3], O, L;
		bool gemm;
	} cases[] = {
		{ "patch_conv clip 4 x 336/14", 2, { 4, 3, 336, 336 }, 4, { 3, 336, 336 }, { 14, 14 },
		  1024, 576, true },
		{ "patch_conv qwen2vl 1000 x (2, 14, 14)", 3, { 1000, 3 * 2 * 14 * 14 }, 2,
		  { 3, 2, 14, 14 }, { 2, 14, 14 }, 1280, 1, true },
		{ "patch_conv odd (28, 42) / (14, 7)", 2, { 2, 3, 28, 42 }, 4, { 3, 28, 42 }, { 14, 7 },
		  16, 12, false },
	};
	static const char *const forms[] = { "cudnn", "gemm", NULL };
	int off = getenv("VD_CUDA_CUDNN") && !strcmp(getenv("VD_CUDA_CUDNN"), "0");

	for (int d = 0; d < NDT; d++) {
		vd_dtype dt = dtypes[d];

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			int64_t K = cases[i].size[0], B = cases[i].xshape[0];
			pair x, w, y;

			for (int k = 0; k < cases[i].nd; k++)
				K *= cases[i].kernel[k];
			x = pair_rand(dt, (int)cases[i].xdims, cases[i].xshape, 1.0f);
			w = rand2(dt, cases[i].O, K, 0.05f);
			y = rand2(dt, B * cases[i].L, cases[i].O, 1.0f);
			ck_assert_int_eq(cpu->ops->patch_conv(cpu, &x.c, cases[i].nd, cases[i].size,
							      cases[i].kernel, &w.c, &y.c), VD_OK);
			for (int f = 0; f < 3; f++) {
				bool can = f == 0 ? !off : f == 1 ? cases[i].gemm : !off || cases[i].gemm;
				char what[96];
				vd_status st;

				if (forms[f])
					setenv("VD_CUDA_PATCH", forms[f], 1);
				st = gpu->ops->patch_conv(gpu, &x.g, cases[i].nd, cases[i].size,
							  cases[i].kernel, &w.g, &y.g);
				unsetenv("VD_CUDA_PATCH");
				snprintf(what, sizeof(what), "%s [%s]", cases[i].what,
					 forms[f] ? forms[f] : "auto");
				if (!can) {
					ck_assert_msg(st == VD_ERR_UNSUPPORTED, "%s: %d", what, st);
					continue;
				}
				ck_assert_msg(st == VD_OK, "%s: %s", what, vd_error_message());
				printf("%s %s: %s\n", what, vd_dtype_name(dt),
				       vd_cuda_patch_conv_path(gpu) ? vd_cuda_patch_conv_path(gpu) : "?");
				check_pair(&y, dt, TOL_MM, what);
			}
			pair_free(&x);
			pair_free(&w);
			pair_free(&y);
		}
	}
}
END_TEST

/* ------------------------------------------------------------ errors */

/* Picks: greedy rows the same index as the CPU oracle on the same (rounded)
 * values, ties to the lowest index; sampled rows (temperature, key) the same
 * Gumbel-max draw; at the vocabulary sizes of the three families. */
START_TEST(test_sample)
{
	static const int64_t shapes[][2] = { { 1, 32064 }, { 7, 151936 }, { 256, 32064 },
					     { 3, 5 }, { 2, 1 } };

	for (int di = 0; di < NDT; di++) {
		for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
			int64_t n = shapes[si][0], v = shapes[si][1];
			pair p = pair_new(dtypes[di], 2, shapes[si]);
			float *h = host_rand(n * v, 4.0f, dtypes[di]);
			int32_t *a = malloc(sizeof(int32_t) * (size_t)n);
			int32_t *b = malloc(sizeof(int32_t) * (size_t)n);
			float *temps = malloc(sizeof(float) * (size_t)n);
			uint64_t *keys = malloc(sizeof(uint64_t) * (size_t)n);
			int64_t differ = 0;

			ck_assert_ptr_nonnull(a);
			ck_assert_ptr_nonnull(b);
			ck_assert_ptr_nonnull(temps);
			ck_assert_ptr_nonnull(keys);
			/* row 0: a tie between two late columns; the lower must win */
			if (v > 4) {
				h[v - 3] = 100.0f;
				h[v - 1] = 100.0f;
			}
			pair_set(&p, h);
			ck_assert_int_eq(cpu->ops->sample(cpu, &p.c, NULL, NULL, a), VD_OK);
			ck_assert_int_eq(gpu->ops->sample(gpu, &p.g, NULL, NULL, b), VD_OK);
			for (int64_t m = 0; m < n; m++)
				ck_assert_msg(a[m] == b[m], "argmax %s (%lld, %lld) row %lld: cpu %d gpu %d",
					      vd_dtype_name(dtypes[di]), (long long)n, (long long)v,
					      (long long)m, a[m], b[m]);
			if (v > 4)
				ck_assert_int_eq(b[0], (int32_t)(v - 3));
			for (int64_t m = 0; m < n; m++) {
				temps[m] = m % 3 == 2 ? 0.0f : 0.7f + 0.1f * (float)(m % 5);
				keys[m] = 0x1234567ull * (uint64_t)(m + 1);
			}
			ck_assert_int_eq(cpu->ops->sample(cpu, &p.c, temps, keys, a), VD_OK);
			ck_assert_int_eq(gpu->ops->sample(gpu, &p.g, temps, keys, b), VD_OK);
			/* the same arithmetic in double on both sides: a different pick
			 * needs two scores within a rounding error of each other */
			for (int64_t m = 0; m < n; m++)
				differ += a[m] != b[m];
			ck_assert_msg(differ <= n / 100, "sample %s (%lld, %lld): %lld of %lld picks differ",
				      vd_dtype_name(dtypes[di]), (long long)n, (long long)v,
				      (long long)differ, (long long)n);
			free(a);
			free(b);
			free(temps);
			free(keys);
			free(h);
			pair_free(&p);
		}
	}
}
END_TEST

/* sample_full: the GPU's picks and logprobs against the host oracle on the
 * same rows, for every filter and their mixes, with penalties and banned
 * tokens, ties and -inf entries, at the vocabulary sizes of the three
 * families; 70 rows of Qwen2-VL's vocabulary run in two chunks. Greedy
 * rows, ranks and top ids must match exactly; a drawn pick may differ only
 * where libm's last bit moves a near-tie (none expected). */
static void sample_full_row(int64_t m, int32_t v, vd_sample_row *r, vd_sample_hist *hist,
			    int64_t *n_hist)
{
	static const float top_ps[] = { 0.0f, 0.3f, 0.9f, 0.99f };
	static const int32_t top_ks[] = { 0, 1, 5, 50 };
	int kind = (int)(m % 8);

	*r = (vd_sample_row){ .temperature = kind == 0 ? 0.0f : 0.5f + 0.25f * (float)(m % 4),
			      .top_p = top_ps[(m / 2) % 4],
			      .min_p_log = m % 5 == 1 ? logf(0.05f) : -INFINITY,
			      .repetition_penalty = 1.0f,
			      .top_k = top_ks[(m / 3) % 4],
			      .logprobs = m % 3 == 0 ? -1 : (int32_t)((m * 7) % 21),
			      .key = 0x9e3779b97f4a7c15ull * (uint64_t)(m + 11) };
	r->hist_off = *n_hist;
	if (m % 4 == 3 && v > 64) {
		/* history: distinct tokens, a few banned, output counts */
		int nh = 2 + (int)(m % 13);

		r->repetition_penalty = 1.3f;
		r->frequency_penalty = 0.25f;
		r->presence_penalty = 0.5f;
		for (int e = 0; e < nh; e++)
			hist[(*n_hist)++] = (vd_sample_hist){
				.token = (int32_t)((e * 7919 + m * 31) % v),
				.flags = e % 5 == 4 ? VD_HIST_BANNED : VD_HIST_SEEN,
				.count = (float)(e % 3) };
		r->n_hist = nh;
	}
}

START_TEST(test_sample_full)
{
	static const int64_t shapes[][2] = { { 16, 32064 }, { 70, 151936 }, { 64, 32000 },
					     { 9, 7 }, { 3, 1 } };

	for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
		int64_t n = shapes[si][0], v = shapes[si][1], n_hist = 0, drawn = 0, differ = 0;
		pair p = pair_new(VD_DTYPE_F32, 2, shapes[si]);
		float *h = host_rand(n * v, 4.0f, VD_DTYPE_F32);
		vd_sample_row *rows = calloc((size_t)n, sizeof(*rows));
		vd_sample_hist *hist = calloc((size_t)n * 16, sizeof(*hist));
		int32_t *pk[2], *rank[2], *ids[2];
		float *lp[2], *lps[2];
		vd_sample_args a[2];

		ck_assert_ptr_nonnull(rows);
		ck_assert_ptr_nonnull(hist);
		for (int b = 0; b < 2; b++) {
			pk[b] = calloc((size_t)n, sizeof(int32_t));
			rank[b] = calloc((size_t)n, sizeof(int32_t));
			lp[b] = calloc((size_t)n, sizeof(float));
			ids[b] = calloc((size_t)n * 20, sizeof(int32_t));
			lps[b] = calloc((size_t)n * 20, sizeof(float));
			ck_assert(pk[b] && rank[b] && lp[b] && ids[b] && lps[b]);
		}
		for (int64_t m = 0; m < n; m++) {
			float *row = h + m * v;

			sample_full_row(m, (int32_t)v, &rows[m], hist, &n_hist);
			if (rows[m].logprobs > v)
				rows[m].logprobs = (int32_t)v;
			/* ties (the sort must keep the lower id first) and -inf */
			for (int64_t j = 0; j + 40 < v && j < 4000; j += 40)
				row[j + 17] = row[j];
			if (v > 8) {
				row[v - 1] = -INFINITY;
				row[3] = -INFINITY;
				row[5] = 0.0f;
				row[6] = -0.0f;
			}
		}
		pair_set(&p, h);
		for (int b = 0; b < 2; b++)
			a[b] = (vd_sample_args){ .struct_size = sizeof(a[b]), .rows = rows, .hist = hist,
						 .n_hist = n_hist, .lp_k = 20, .picks = pk[b],
						 .chosen_lp = lp[b], .chosen_rank = rank[b],
						 .top_ids = ids[b], .top_lps = lps[b] };
		ck_assert_int_eq(cpu->ops->sample_full(cpu, &p.c, &a[0]), VD_OK);
		ck_assert_msg(gpu->ops->sample_full(gpu, &p.g, &a[1]) == VD_OK, "gpu: %s",
			      vd_error_message());
		for (int64_t m = 0; m < n; m++) {
			if (rows[m].temperature == 0.0f)
				ck_assert_msg(pk[0][m] == pk[1][m], "(%lld, %lld) greedy row %lld: cpu %d gpu %d",
					      (long long)n, (long long)v, (long long)m, pk[0][m], pk[1][m]);
			else
				drawn++, differ += pk[0][m] != pk[1][m];
			if (rows[m].logprobs < 0 || pk[0][m] != pk[1][m])
				continue;
			ck_assert_int_eq(rank[0][m], rank[1][m]);
			ck_assert_float_eq_tol(lp[0][m], lp[1][m], 1e-4f);
			for (int k = 0; k < rows[m].logprobs; k++) {
				ck_assert_int_eq(ids[0][m * 20 + k], ids[1][m * 20 + k]);
				ck_assert_float_eq_tol(lps[0][m * 20 + k], lps[1][m * 20 + k], 1e-4f);
			}
		}
		printf("sample_full (%lld, %lld): %lld of %lld drawn picks differ\n", (long long)n,
		       (long long)v, (long long)differ, (long long)drawn);
		ck_assert_msg(differ <= drawn / 100, "sample_full (%lld, %lld): %lld of %lld drawn "
			      "picks differ", (long long)n, (long long)v, (long long)differ,
			      (long long)drawn);
		/* the same call again draws the same tokens */
		ck_assert_int_eq(gpu->ops->sample_full(gpu, &p.g, &a[0]), VD_OK);
		ck_assert_mem_eq(pk[0], pk[1], sizeof(int32_t) * (size_t)n);
		for (int b = 0; b < 2; b++) {
			free(pk[b]);
			free(rank[b]);
			free(lp[b]);
			free(ids[b]);
			free(lps[b]);
		}
		free(rows);
		free(hist);
		free(h);
		pair_free(&p);
	}
	/* plain rows (greedy or a draw, nothing else) of small batches: the
	 * GPU splits each row over many blocks */
	for (int si = 0; si < 3; si++) {
		int64_t n = si == 0 ? 1 : si == 1 ? 3 : 8, v = si == 1 ? 32064 : 151936;
		int64_t shape[2] = { n, v };
		pair p = pair_new(VD_DTYPE_F32, 2, shape);
		float *h = host_rand(n * v, 4.0f, VD_DTYPE_F32);
		vd_sample_row rows[8];
		int32_t a[8], b[8];
		vd_sample_args sa = { .struct_size = sizeof(sa), .rows = rows, .picks = a };
		int differ = 0;

		for (int64_t m = 0; m < n; m++) {
			rows[m] = (vd_sample_row){ .temperature = m % 2 ? 0.9f : 0.0f,
						   .min_p_log = -INFINITY, .repetition_penalty = 1.0f,
						   .logprobs = -1, .key = 977u * (uint64_t)(m + 1) };
			h[m * v + v - 5] = 60.0f; /* a late tie for the greedy rows */
			h[m * v + v - 2] = 60.0f;
		}
		pair_set(&p, h);
		ck_assert_int_eq(cpu->ops->sample_full(cpu, &p.c, &sa), VD_OK);
		sa.picks = b;
		ck_assert_int_eq(gpu->ops->sample_full(gpu, &p.g, &sa), VD_OK);
		for (int64_t m = 0; m < n; m++) {
			if (m % 2 == 0)
				ck_assert_int_eq(b[m], (int32_t)(v - 5));
			differ += a[m] != b[m];
		}
		ck_assert_msg(differ == 0, "split rows (%lld, %lld): %d picks differ", (long long)n,
			      (long long)v, differ);
		free(h);
		pair_free(&p);
	}
}
END_TEST

START_TEST(test_errors)
{
	pair x = rand2(VD_DTYPE_F32, 4, 16, 1.0f), w = rand1(VD_DTYPE_F32, 16, 1.0f);
	pair w8 = rand1(VD_DTYPE_F32, 8, 1.0f);
	int64_t cshape[4] = { 2, 4, 1, 16 }, kshape[3] = { 2, 1, 16 }, bshape[3] = { 1, 1, 512 };
	pair kc = pair_rand(VD_DTYPE_F32, 4, cshape, 1.0f), vc = pair_rand(VD_DTYPE_F32, 4, cshape, 1.0f);
	pair k = pair_rand(VD_DTYPE_F32, 3, kshape, 1.0f), o = pair_rand(VD_DTYPE_F32, 3, kshape, 1.0f);
	pair big = pair_rand(VD_DTYPE_F32, 3, bshape, 1.0f);
	int64_t slots[2] = { 3, 8 };
	vd_attn_meta m = { 0, 2, NULL, NULL, NULL, 0, 4, slots, 1.0f, 1.0f };
	int32_t qsl[2] = { 0, 2 }, lens[1] = { 2 }, table[1] = { 2 }, pos[2] = { 0, 1 };
	int32_t tidx[2] = { 0, 2 }, cu[2] = { 0, 1 };
	vd_attn_meta pm = { 1, 2, qsl, lens, table, 1, 4, NULL, 1.0f, 1.0f };
	float inv[16] = { 0 };
	vd_rope r = { 16, 2, inv, NULL, tidx, 1.0f };
	vd_backend *none = NULL;

	/* a CPU tensor given to the GPU, a weight of the wrong length */
	ck_assert_int_eq(gpu->ops->rmsnorm(gpu, &x.c, &w.g, 1e-6f, &x.g), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(gpu->ops->rmsnorm(gpu, &x.g, &w8.g, 1e-6f, &x.g), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(gpu->ops->cache_write(gpu, &k.g, &k.g, &kc.g, &vc.g, &m), VD_ERR_INVALID_ARG);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "slot 8"));
	ck_assert_int_eq(gpu->ops->paged_attention(gpu, &k.g, &kc.g, &vc.g, &pm, 1.0f, &o.g),
			 VD_ERR_INVALID_ARG);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "outside the cache"));
	ck_assert_int_eq(gpu->ops->rope(gpu, &k.g, pos, &r), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(gpu->ops->attention_segments(gpu, &big.g, &big.g, &big.g, cu, 1, 1.0f,
						      &big.g), VD_ERR_UNSUPPORTED);
	ck_assert_int_eq(gpu->ops->act(gpu, (vd_act)99, &x.g, &x.g), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(vd_cuda_backend_create(vd_cuda_device_count(), &none), VD_ERR_INVALID_ARG);
	ck_assert_ptr_null(none);
	/* the backend still works after refused calls */
	slots[1] = 1;
	table[0] = 1;
	BOTH(cpu->ops->cache_write(cpu, &k.c, &k.c, &kc.c, &vc.c, &m),
	     gpu->ops->cache_write(gpu, &k.g, &k.g, &kc.g, &vc.g, &m));
	BOTH(cpu->ops->paged_attention(cpu, &k.c, &kc.c, &vc.c, &pm, 0.25f, &o.c),
	     gpu->ops->paged_attention(gpu, &k.g, &kc.g, &vc.g, &pm, 0.25f, &o.g));
	check_pair(&o, VD_DTYPE_F32, TOL_MM, "paged_attention after refused calls");
	ck_assert_int_eq(gpu->ops->sync(gpu), VD_OK);
	pair_free(&x);
	pair_free(&w);
	pair_free(&w8);
	pair_free(&kc);
	pair_free(&vc);
	pair_free(&k);
	pair_free(&o);
	pair_free(&big);
}
END_TEST

/* One case per op family, so CK_RUN_CASE=attention (say) runs one family,
 * e.g. under compute-sanitizer. */
static Suite *suite(void)
{
	Suite *s = suite_create("ops_cuda");
	TCase *mem = tcase_create("memory"), *dense = tcase_create("dense");
	TCase *rope = tcase_create("rope"), *attn = tcase_create("attention");
	TCase *rows = tcase_create("rows");

	tcase_add_test(mem, test_upload_download);
	tcase_add_test(mem, test_copy);
	tcase_add_test(dense, test_linear);
	tcase_add_test(dense, test_elementwise);
	tcase_add_test(dense, test_norms);
	tcase_add_test(rope, test_rope);
	tcase_add_test(rope, test_rope_positions_change);
	tcase_add_test(attn, test_paged_attention);
	tcase_add_test(attn, test_paged_attention_fp8);
	tcase_add_test(attn, test_attention_segments);
	tcase_add_test(rows, test_rows);
	tcase_add_test(rows, test_im2patch);
	tcase_add_test(rows, test_patch_conv);
	tcase_add_test(rows, test_sample);
	tcase_add_test(rows, test_sample_full);
	tcase_add_test(rows, test_errors);
	suite_add_tcase(s, mem);
	suite_add_tcase(s, dense);
	suite_add_tcase(s, rope);
	suite_add_tcase(s, attn);
	suite_add_tcase(s, rows);
	return s;
}

int main(void)
{
	SRunner *sr;
	int failed;
	vd_status st;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (vd_cuda_device_count() <= 0) {
		printf("SKIP: no CUDA device\n");
		return 77;
	}
	if (vd_cpu_backend_create(0, &cpu) != VD_OK) {
		fprintf(stderr, "cpu backend: %s\n", vd_error_message());
		return 1;
	}
	st = vd_cuda_backend_create(0, &gpu);
	if (st != VD_OK) {
		fprintf(stderr, "cuda backend: %s: %s\n", vd_status_str(st), vd_error_message());
		vd_cpu_backend_destroy(cpu);
		return 1;
	}
	t_start = now();
	sr = srunner_create(suite());
	/* CUDA cannot cross fork(): both backends live in this process */
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	vd_cuda_backend_destroy(gpu);
	vd_cpu_backend_destroy(cpu);
	return failed ? 1 : 0;
}
