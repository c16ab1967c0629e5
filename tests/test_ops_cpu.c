/* CPU backend ops against naive references written here (double precision
 * where it helps), on random inputs shaped like the models': GQA, batches
 * of sequences with different query and cache lengths, shuffled block
 * tables, skipped slots, M-RoPE and two-table RoPE, strided views. Also the
 * bf16/f16 conversions and thread-count independence. */
#include <check.h>
#include <math.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "vllmd/ops.h"

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state;

static float frand(void)
{
	/* xorshift64*: deterministic, uniform in [-1, 1) */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (float)((double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0 *
		       2.0 - 1.0);
}

static vd_backend *new_backend(int threads)
{
	vd_backend *be = NULL;

	ck_assert_int_eq(vd_cpu_backend_create(threads, &be), VD_OK);
	ck_assert_ptr_nonnull(be);
	return be;
}

static vd_tensor new_tensor(vd_backend *be, int ndim, int64_t d0, int64_t d1, int64_t d2,
			    int64_t d3)
{
	int64_t shape[4] = { d0, d1, d2, d3 };
	vd_tensor t;

	ck_assert_int_eq(be->ops->alloc(be, &t, VD_DTYPE_F32, ndim, shape), VD_OK);
	return t;
}

static vd_tensor new_rand(vd_backend *be, int ndim, int64_t d0, int64_t d1, int64_t d2,
			  int64_t d3)
{
	vd_tensor t = new_tensor(be, ndim, d0, d1, d2, d3);
	float *p = t.data;

	for (int64_t i = 0; i < vd_tensor_numel(&t); i++)
		p[i] = frand();
	return t;
}

static float *f32(const vd_tensor *t)
{
	return t->data;
}

/* A (T, H, D) view of columns [col0, col0 + H*D) of a 2-D (T, W) tensor. */
static vd_tensor heads_view(const vd_tensor *buf, int64_t col0, int64_t H, int64_t D)
{
	vd_tensor v = *buf;

	v.alloc = NULL;
	v.ndim = 3;
	v.shape[0] = buf->shape[0];
	v.shape[1] = H;
	v.shape[2] = D;
	v.stride[0] = buf->stride[0];
	v.stride[1] = D;
	v.stride[2] = 1;
	v.data = f32(buf) + col0;
	return v;
}

/* A (rows, ncols) view of columns [col0, col0 + ncols) of a 2-D tensor. */
static vd_tensor cols_view(const vd_tensor *buf, int64_t col0, int64_t ncols)
{
	vd_tensor v = *buf;

	v.alloc = NULL;
	v.shape[1] = ncols;
	v.data = f32(buf) + col0;
	return v;
}

static void assert_close(const float *got, const double *want, int64_t n, double tol,
			 const char *what)
{
	double worst = 0.0;
	int64_t at = -1;

	for (int64_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - want[i]) / (1.0 + fabs(want[i]));

		if (!(d <= worst)) {
			worst = d;
			at = i;
		}
	}
	ck_assert_msg(worst <= tol, "%s: element %lld got %.9g want %.9g (rel err %.3g > %.3g)", what,
		      (long long)at, at >= 0 ? got[at] : 0.0, at >= 0 ? want[at] : 0.0, worst, tol);
}

/* --------------------------------------------------------- conversions */

START_TEST(test_bf16_round_even)
{
	/* 1 + 2^-8 is half way between bf16 1.0 and 1 + 2^-7: ties go even */
	ck_assert_uint_eq(vd_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
	ck_assert_uint_eq(vd_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
	ck_assert_uint_eq(vd_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
	ck_assert_uint_eq(vd_f32_to_bf16(-2.0f), 0xc000);
	ck_assert(isnan(vd_bf16_to_f32(vd_f32_to_bf16(NAN))));
	/* every non-NaN bf16 survives f32 and back */
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = vd_bf16_to_f32((uint16_t)h);

		if (isnan(f))
			continue;
		ck_assert_uint_eq(vd_f32_to_bf16(f), h);
	}
}
END_TEST

START_TEST(test_f16_round_even)
{
	ck_assert_uint_eq(vd_f32_to_f16(1.0f), 0x3c00);
	ck_assert_uint_eq(vd_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
	ck_assert_uint_eq(vd_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
	ck_assert_uint_eq(vd_f32_to_f16(65504.0f), 0x7bff);
	ck_assert_uint_eq(vd_f32_to_f16(65520.0f), 0x7c00);
	ck_assert_uint_eq(vd_f32_to_f16(-65519.0f), 0xfbff);
	/* subnormals: 2^-25 ties to 0, 3 * 2^-25 ties to 2 * 2^-24 */
	ck_assert_uint_eq(vd_f32_to_f16(0x1p-25f), 0x0000);
	ck_assert_uint_eq(vd_f32_to_f16(3 * 0x1p-25f), 0x0002);
	ck_assert_uint_eq(vd_f32_to_f16(0x1p-24f), 0x0001);
	ck_assert(vd_f16_to_f32(0x0001) == 0x1p-24f);
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = vd_f16_to_f32((uint16_t)h);

		if (isnan(f))
			continue;
		ck_assert_uint_eq(vd_f32_to_f16(f), h);
	}
}
END_TEST

START_TEST(test_upload_download_copy)
{
	vd_backend *be = new_backend(3);
	const vd_ops *o = be->ops;
	int64_t shape[2] = { 3, 5 };
	float src[15], back[15];
	uint16_t half[15];
	vd_tensor b16, f, g, tv, h16;
	int32_t ids[4] = { 7, -1, 42, 3 }, ids_back[4];
	vd_tensor it;

	for (int i = 0; i < 15; i++)
		src[i] = frand() * 100.0f;
	/* f32 -> bf16 storage rounds to nearest even; download widens */
	ck_assert_int_eq(o->alloc(be, &b16, VD_DTYPE_BF16, 2, shape), VD_OK);
	ck_assert_int_eq(o->upload(be, &b16, src, VD_DTYPE_F32, 15), VD_OK);
	ck_assert_int_eq(o->download(be, &b16, back), VD_OK);
	for (int i = 0; i < 15; i++)
		ck_assert(back[i] == vd_bf16_to_f32(vd_f32_to_bf16(src[i])));
	/* f16 host data into f32 storage */
	for (int i = 0; i < 15; i++)
		half[i] = vd_f32_to_f16(src[i] / 100.0f);
	f = new_tensor(be, 2, 3, 5, 0, 0);
	ck_assert_int_eq(o->upload(be, &f, half, VD_DTYPE_F16, 15), VD_OK);
	for (int i = 0; i < 15; i++)
		ck_assert(f32(&f)[i] == vd_f16_to_f32(half[i]));
	/* copy of a transposed (strided) view, converting into f16 */
	tv = f;
	tv.alloc = NULL;
	tv.shape[0] = 5;
	tv.shape[1] = 3;
	tv.stride[0] = 1;
	tv.stride[1] = 5;
	shape[0] = 5;
	shape[1] = 3;
	ck_assert_int_eq(o->alloc(be, &h16, VD_DTYPE_F16, 2, shape), VD_OK);
	ck_assert_int_eq(o->copy(be, &tv, &h16), VD_OK);
	g = new_tensor(be, 2, 5, 3, 0, 0);
	ck_assert_int_eq(o->copy(be, &h16, &g), VD_OK);
	for (int r = 0; r < 5; r++)
		for (int c = 0; c < 3; c++)
			ck_assert(f32(&g)[r * 3 + c] == f32(&f)[c * 5 + r]);
	/* download of the strided view itself */
	ck_assert_int_eq(o->download(be, &tv, back), VD_OK);
	for (int r = 0; r < 5; r++)
		for (int c = 0; c < 3; c++)
			ck_assert(back[r * 3 + c] == f32(&f)[c * 5 + r]);
	/* integers travel unchanged; int <-> float is refused */
	shape[0] = 4;
	ck_assert_int_eq(o->alloc(be, &it, VD_DTYPE_I32, 1, shape), VD_OK);
	ck_assert_int_eq(o->upload(be, &it, ids, VD_DTYPE_I32, 4), VD_OK);
	ck_assert_int_eq(o->download(be, &it, ids_back), VD_OK);
	ck_assert_mem_eq(ids, ids_back, sizeof(ids));
	ck_assert_int_eq(o->upload(be, &it, src, VD_DTYPE_F32, 4), VD_ERR_UNSUPPORTED);
	ck_assert_int_eq(o->upload(be, &f, src, VD_DTYPE_F32, 16), VD_ERR_INVALID_ARG);
	o->free(be, &it);
	o->free(be, &h16);
	o->free(be, &g);
	o->free(be, &f);
	o->free(be, &b16);
	ck_assert_ptr_null(b16.alloc);
	o->free(be, &b16); /* freeing twice is a no-op */
	vd_cpu_backend_destroy(be);
}
END_TEST

/* ----------------------------------------------------------- dense math */

START_TEST(test_linear)
{
	vd_backend *be = new_backend(3);
	const vd_ops *o = be->ops;
	int64_t M = 13, K = 40, N = 24;
	/* x is a column slice of a wider buffer: a row view with stride 50 */
	vd_tensor xb = new_rand(be, 2, M, 50, 0, 0), x = cols_view(&xb, 7, K);
	vd_tensor w = new_rand(be, 2, N, K, 0, 0), b = new_rand(be, 1, N, 0, 0, 0);
	vd_tensor yb = new_rand(be, 2, M, N + 4, 0, 0), y = cols_view(&yb, 2, N);
	double *want = malloc(sizeof(double) * (size_t)(M * N));
	float *got = malloc(sizeof(float) * (size_t)(M * N));
	float guard = f32(&yb)[0];

	for (int64_t m = 0; m < M; m++)
		for (int64_t n = 0; n < N; n++) {
			double s = f32(&b)[n];

			for (int64_t k = 0; k < K; k++)
				s += (double)f32(&xb)[m * 50 + 7 + k] * f32(&w)[n * K + k];
			want[m * N + n] = s;
		}
	ck_assert_int_eq(o->linear(be, &x, &w, &b, &y), VD_OK);
	for (int64_t m = 0; m < M; m++)
		for (int64_t n = 0; n < N; n++)
			got[m * N + n] = f32(&yb)[m * (N + 4) + 2 + n];
	assert_close(got, want, M * N, 1e-5, "linear+bias");
	ck_assert(f32(&yb)[0] == guard); /* columns outside the view untouched */
	/* without bias */
	ck_assert_int_eq(o->linear(be, &x, &w, NULL, &y), VD_OK);
	for (int64_t m = 0; m < M; m++)
		for (int64_t n = 0; n < N; n++) {
			want[m * N + n] -= f32(&b)[n];
			got[m * N + n] = f32(&yb)[m * (N + 4) + 2 + n];
		}
	assert_close(got, want, M * N, 1e-5, "linear");
	/* shape mismatch is refused */
	ck_assert_int_eq(o->linear(be, &w, &w, NULL, &y), VD_ERR_INVALID_ARG);
	free(want);
	free(got);
	o->free(be, &xb);
	o->free(be, &w);
	o->free(be, &b);
	o->free(be, &yb);
	vd_cpu_backend_destroy(be);
}
END_TEST

START_TEST(test_norms)
{
	vd_backend *be = new_backend(3);
	const vd_ops *o = be->ops;
	int64_t M = 9, C = 96;
	vd_tensor x = new_rand(be, 2, M, C, 0, 0), w = new_rand(be, 1, C, 0, 0, 0);
	vd_tensor b = new_rand(be, 1, C, 0, 0, 0), y = new_tensor(be, 2, M, C, 0, 0);
	vd_tensor r = new_rand(be, 2, M, C, 0, 0), r0 = new_tensor(be, 2, M, C, 0, 0);
	double *want = malloc(sizeof(double) * (size_t)(M * C));
	double *rsum = malloc(sizeof(double) * (size_t)(M * C));
	float eps = 1e-5f;

	for (int64_t i = 0; i < M * C; i++)
		f32(&x)[i] *= 3.0f;
	memcpy(r0.data, r.data, sizeof(float) * (size_t)(M * C));
	/* rmsnorm */
	for (int64_t m = 0; m < M; m++) {
		double ss = 0;

		for (int64_t i = 0; i < C; i++)
			ss += (double)f32(&x)[m * C + i] * f32(&x)[m * C + i];
		for (int64_t i = 0; i < C; i++)
			want[m * C + i] = f32(&x)[m * C + i] / sqrt(ss / C + eps) * f32(&w)[i];
	}
	ck_assert_int_eq(o->rmsnorm(be, &x, &w, eps, &y), VD_OK);
	assert_close(f32(&y), want, M * C, 2e-6, "rmsnorm");
	/* add_rmsnorm: r += x; y = rmsnorm(r) */
	for (int64_t m = 0; m < M; m++) {
		double ss = 0;

		for (int64_t i = 0; i < C; i++) {
			rsum[m * C + i] = (double)f32(&r0)[m * C + i] + f32(&x)[m * C + i];
			ss += rsum[m * C + i] * rsum[m * C + i];
		}
		for (int64_t i = 0; i < C; i++)
			want[m * C + i] = rsum[m * C + i] / sqrt(ss / C + eps) * f32(&w)[i];
	}
	ck_assert_int_eq(o->add_rmsnorm(be, &r, &x, &w, eps, &y), VD_OK);
	assert_close(f32(&r), rsum, M * C, 1e-6, "add_rmsnorm residual");
	assert_close(f32(&y), want, M * C, 2e-6, "add_rmsnorm");
	/* layernorm with and without bias, in place */
	for (int pass = 0; pass < 2; pass++) {
		const vd_tensor *bias = pass == 0 ? &b : NULL;

		for (int64_t m = 0; m < M; m++) {
			double mu = 0, var = 0;

			for (int64_t i = 0; i < C; i++)
				mu += f32(&x)[m * C + i];
			mu /= C;
			for (int64_t i = 0; i < C; i++)
				var += (f32(&x)[m * C + i] - mu) * (f32(&x)[m * C + i] - mu);
			var /= C;
			for (int64_t i = 0; i < C; i++)
				want[m * C + i] = (f32(&x)[m * C + i] - mu) / sqrt(var + eps) *
							  f32(&w)[i] +
						  (bias ? f32(&b)[i] : 0.0);
		}
		memcpy(y.data, x.data, sizeof(float) * (size_t)(M * C));
		ck_assert_int_eq(o->layernorm(be, &y, &w, bias, eps, &y), VD_OK);
		assert_close(f32(&y), want, M * C, 2e-6, "layernorm");
	}
	/* a weight of the wrong length is refused */
	{
		vd_tensor short_w = w;

		short_w.shape[0] = C - 1;
		ck_assert_int_eq(o->rmsnorm(be, &x, &short_w, eps, &y), VD_ERR_INVALID_ARG);
	}
	free(want);
	free(rsum);
	o->free(be, &x);
	o->free(be, &w);
	o->free(be, &b);
	o->free(be, &y);
	o->free(be, &r);
	o->free(be, &r0);
	vd_cpu_backend_destroy(be);
}
END_TEST

static double ref_act(vd_act k, double x)
{
	switch (k) {
	case VD_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
	case VD_ACT_GELU_TANH:
		return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
	case VD_ACT_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
	case VD_ACT_SILU: return x / (1.0 + exp(-x));
	}
	return NAN;
}

START_TEST(test_elementwise)
{
	vd_backend *be = new_backend(3);
	const vd_ops *o = be->ops;
	int64_t M = 7, F = 33;
	vd_tensor a = new_rand(be, 2, M, 2 * F, 0, 0), b = new_rand(be, 2, M, 2 * F, 0, 0);
	vd_tensor y = new_tensor(be, 2, M, 2 * F, 0, 0), h = new_tensor(be, 2, M, F, 0, 0);
	double *want = malloc(sizeof(double) * (size_t)(M * 2 * F));
	vd_act kinds[4] = { VD_ACT_GELU, VD_ACT_GELU_TANH, VD_ACT_QUICK_GELU, VD_ACT_SILU };

	for (int64_t i = 0; i < M * 2 * F; i++)
		f32(&a)[i] *= 6.0f;
	for (int64_t i = 0; i < M * 2 * F; i++)
		want[i] = (double)f32(&a)[i] + f32(&b)[i];
	ck_assert_int_eq(o->add(be, &a, &b, &y), VD_OK);
	assert_close(f32(&y), want, M * 2 * F, 1e-7, "add");
	for (int k = 0; k < 4; k++) {
		for (int64_t i = 0; i < M * 2 * F; i++)
			want[i] = ref_act(kinds[k], f32(&a)[i]);
		ck_assert_int_eq(o->act(be, kinds[k], &a, &y), VD_OK);
		assert_close(f32(&y), want, M * 2 * F, 2e-6, "act");
	}
	for (int64_t m = 0; m < M; m++)
		for (int64_t i = 0; i < F; i++)
			want[m * F + i] = ref_act(VD_ACT_SILU, f32(&a)[m * 2 * F + i]) *
					  f32(&a)[m * 2 * F + F + i];
	ck_assert_int_eq(o->silu_mul(be, &a, &h), VD_OK);
	assert_close(f32(&h), want, M * F, 2e-6, "silu_mul");
	for (int64_t i = 0; i < M * 2 * F; i++)
		want[i] = (double)f32(&a)[i] * 0.125;
	ck_assert_int_eq(o->scale(be, &a, 0.125f, &a), VD_OK);
	assert_close(f32(&a), want, M * 2 * F, 0, "scale in place");
	/* add in place into a (shape mismatch refused) */
	ck_assert_int_eq(o->add(be, &a, &h, &a), VD_ERR_INVALID_ARG);
	free(want);
	o->free(be, &a);
	o->free(be, &b);
	o->free(be, &y);
	o->free(be, &h);
	vd_cpu_backend_destroy(be);
}
END_TEST

START_TEST(test_dtype_refused)
{
	vd_backend *be = new_backend(1);
	const vd_ops *o = be->ops;
	int64_t shape[2] = { 2, 4 };
	vd_tensor xb, w = new_rand(be, 1, 4, 0, 0, 0), y = new_tensor(be, 2, 2, 4, 0, 0);

	ck_assert_int_eq(o->alloc(be, &xb, VD_DTYPE_BF16, 2, shape), VD_OK);
	ck_assert_int_eq(o->rmsnorm(be, &xb, &w, 1e-6f, &y), VD_ERR_UNSUPPORTED);
	ck_assert(strstr(vd_error_message(), "bf16") != NULL);
	o->free(be, &xb);
	o->free(be, &w);
	o->free(be, &y);
	vd_cpu_backend_destroy(be);
}
END_TEST

/* ------------------------------------------------------------------ rope */

/* Reference rotation of one (T, H, D) element set held in a packed double
 * copy; pos is (rows, T). */
static void ref_rope(double *x, int64_t T, int64_t H, int64_t D, const int32_t *pos,
		     const vd_rope *r)
{
	int64_t half = r->rot_dim / 2;

	for (int64_t t = 0; t < T; t++)
		for (int64_t h = 0; h < H; h++) {
			double *v = x + (t * H + h) * D;

			for (int64_t i = 0; i < half; i++) {
				int row = r->pos_row ? r->pos_row[i] : 0;
				int tab = r->table_idx ? r->table_idx[t] : 0;
				double a = (double)pos[row * T + t] * r->inv_freq[tab * half + i];
				double c = cos(a) * r->mscale, s = sin(a) * r->mscale;
				double x1 = v[i], x2 = v[i + half];

				v[i] = x1 * c - x2 * s;
				v[i + half] = x2 * c + x1 * s;
			}
		}
}

/* Rope on the q or k slice of a fused (T, W) buffer and compare with the
 * reference; columns outside the slice must not change. */
static void check_rope(vd_backend *be, int64_t T, int64_t H, int64_t D, int64_t col0, int64_t W,
		       const int32_t *pos, const vd_rope *r, const char *what)
{
	vd_tensor buf = new_rand(be, 2, T, W, 0, 0), x = heads_view(&buf, col0, H, D);
	float *before = malloc(sizeof(float) * (size_t)(T * W));
	double *want = malloc(sizeof(double) * (size_t)(T * H * D));
	float *got = malloc(sizeof(float) * (size_t)(T * H * D));

	memcpy(before, buf.data, sizeof(float) * (size_t)(T * W));
	for (int64_t t = 0; t < T; t++)
		for (int64_t i = 0; i < H * D; i++)
			want[t * H * D + i] = before[t * W + col0 + i];
	ref_rope(want, T, H, D, pos, r);
	ck_assert_int_eq(be->ops->rope(be, &x, pos, r), VD_OK);
	for (int64_t t = 0; t < T; t++) {
		for (int64_t c = 0; c < W; c++)
			if (c < col0 || c >= col0 + H * D)
				ck_assert(f32(&buf)[t * W + c] == before[t * W + c]);
		for (int64_t i = 0; i < H * D; i++)
			got[t * H * D + i] = f32(&buf)[t * W + col0 + i];
	}
	/* angles are f32 products as in HF; positions up to ~3000 keep the
	 * difference to the double reference within a few 1e-4 */
	assert_close(got, want, T * H * D, 5e-4, what);
	free(before);
	free(want);
	free(got);
	be->ops->free(be, &buf);
}

START_TEST(test_rope_variants)
{
	vd_backend *be = new_backend(3);
	enum { T = 11, H = 4, HKV = 2, D = 16, HALF = D / 2 };
	int64_t W = (H + 2 * HKV) * D;
	int32_t pos[3 * T], table_idx[T];
	float inv[2 * HALF];
	uint8_t rows[HALF] = { 0, 0, 0, 1, 1, 1, 2, 2 }; /* M-RoPE sections [3, 3, 2] */
	vd_rope r = { .rot_dim = D, .n_tables = 1, .inv_freq = inv, .mscale = 1.0f };

	for (int i = 0; i < HALF; i++) {
		inv[i] = (float)pow(10000.0, -2.0 * i / D);
		inv[HALF + i] = inv[i] / (1.0f + (float)i); /* a second "long" table */
	}
	for (int t = 0; t < T; t++) {
		pos[t] = t * 297; /* large positions exercise the f32 angle */
		pos[T + t] = 3 * t + 1;
		pos[2 * T + t] = (t * 7) % 5;
		table_idx[t] = t % 2;
	}
	/* plain 1-D rope on q and on k of a fused qkv buffer */
	check_rope(be, T, H, D, 0, W, pos, &r, "rope q");
	check_rope(be, T, HKV, D, H * D, W, pos, &r, "rope k");
	/* partial rotary: dims >= rot_dim stay */
	r.rot_dim = D / 2;
	check_rope(be, T, H, D, 0, W, pos, &r, "rope partial");
	r.rot_dim = D;
	/* M-RoPE: frequency i reads positions row rows[i] */
	r.pos_row = rows;
	check_rope(be, T, H, D, 0, W, pos, &r, "mrope");
	r.pos_row = NULL;
	/* two tables chosen per token, with an attention factor */
	r.n_tables = 2;
	r.table_idx = table_idx;
	r.mscale = 1.19f;
	check_rope(be, T, HKV, D, H * D, W, pos, &r, "longrope");
	/* a table index out of range is refused */
	table_idx[3] = 2;
	{
		vd_tensor buf = new_rand(be, 2, T, W, 0, 0), x = heads_view(&buf, 0, H, D);

		ck_assert_int_eq(be->ops->rope(be, &x, pos, &r), VD_ERR_INVALID_ARG);
		be->ops->free(be, &buf);
	}
	vd_cpu_backend_destroy(be);
}
END_TEST

/* ------------------------------------------------------------- attention */

enum { NSEQ = 3, PH = 8, PHKV = 2, PD = 16, BS = 4, NBLK = 16, MAXB = 5 };

/* A batch: seq 0 prefill of 5, seq 1 decode at length 13, seq 2 a chunk of
 * 3 on top of 7 cached tokens. */
static const int32_t qsl[NSEQ + 1] = { 0, 5, 6, 9 };
static const int32_t seq_lens[NSEQ] = { 5, 13, 10 };
static const int32_t tables[NSEQ * MAXB] = {
	7, 2, -1, -1, -1,  /* seq 0: 2 blocks, out of order */
	11, 0, 5, 14, -1,  /* seq 1: 4 blocks */
	3, 9, 12, -1, -1,  /* seq 2: 3 blocks */
};

static int64_t slot_of(int s, int64_t p)
{
	return (int64_t)tables[s * MAXB + p / BS] * BS + p % BS;
}

/* Fill the history of every sequence (positions before its queries, plus
 * the skipped token) directly in the caches, and the new rows in k, v.
 * hist_k/hist_v (NSEQ, 13, PHKV, PD) get the reference K/V of every
 * position. Returns the attention metadata. */
static vd_attn_meta build_batch(vd_tensor *kc, vd_tensor *vc, const vd_tensor *k,
				const vd_tensor *v, int64_t *slots, double *hist_k,
				double *hist_v)
{
	vd_attn_meta m = { NSEQ, qsl[NSEQ], qsl, seq_lens, tables, MAXB, BS, slots, 1.0f, 1.0f };

	for (int s = 0; s < NSEQ; s++) {
		int64_t qlen = qsl[s + 1] - qsl[s];

		for (int64_t p = 0; p < seq_lens[s]; p++) {
			int64_t t = qsl[s] + p - (seq_lens[s] - qlen); /* query row or < qsl */
			bool is_new = t >= qsl[s];
			int64_t slot = slot_of(s, p);

			for (int h = 0; h < PHKV; h++)
				for (int e = 0; e < PD; e++) {
					float kv = frand(), vv = frand();
					float *kd = f32(kc) + slot * PHKV * PD + h * PD + e;
					float *vd = f32(vc) + slot * PHKV * PD + h * PD + e;
					double *hk = hist_k + ((s * 13 + p) * PHKV + h) * PD + e;
					double *hv = hist_v + ((s * 13 + p) * PHKV + h) * PD + e;

					if (is_new) {
						float *ks = (float *)k->data + t * k->stride[0] +
							    h * k->stride[1] + e;
						float *vs = (float *)v->data + t * v->stride[0] +
							    h * v->stride[1] + e;

						*ks = kv;
						*vs = vv;
					} else {
						*kd = kv;
						*vd = vv;
					}
					*hk = kv;
					*hv = vv;
				}
			if (is_new)
				slots[t] = slot;
		}
	}
	/* token 2 of seq 0 is already cached (a prefix hit): its slot is -1,
	 * the cache holds its history and the k/v rows carry garbage */
	slots[2] = -1;
	for (int h = 0; h < PHKV; h++)
		for (int e = 0; e < PD; e++) {
			int64_t slot = slot_of(0, 2);

			f32(kc)[slot * PHKV * PD + h * PD + e] = (float)hist_k[(2 * PHKV + h) * PD + e];
			f32(vc)[slot * PHKV * PD + h * PD + e] = (float)hist_v[(2 * PHKV + h) * PD + e];
			((float *)k->data)[2 * k->stride[0] + h * k->stride[1] + e] = 99.0f;
			((float *)v->data)[2 * v->stride[0] + h * v->stride[1] + e] = -99.0f;
		}
	return m;
}

static void ref_attention(const vd_tensor *q, const double *hist_k, const double *hist_v,
			  float scale, double *want)
{
	for (int s = 0; s < NSEQ; s++) {
		int64_t qlen = qsl[s + 1] - qsl[s];

		for (int64_t t = qsl[s]; t < qsl[s + 1]; t++) {
			int64_t pos = seq_lens[s] - qlen + (t - qsl[s]);

			for (int h = 0; h < PH; h++) {
				int kh = h / (PH / PHKV);
				double sc[13], mx = -INFINITY, sum = 0;
				const float *qv = (const float *)q->data + t * q->stride[0] +
						  h * q->stride[1];

				for (int64_t p = 0; p <= pos; p++) {
					const double *kv = hist_k + ((s * 13 + p) * PHKV + kh) * PD;

					sc[p] = 0;
					for (int e = 0; e < PD; e++)
						sc[p] += qv[e] * kv[e];
					sc[p] *= scale;
					mx = fmax(mx, sc[p]);
				}
				for (int64_t p = 0; p <= pos; p++)
					sum += (sc[p] = exp(sc[p] - mx));
				for (int e = 0; e < PD; e++) {
					double acc = 0;

					for (int64_t p = 0; p <= pos; p++)
						acc += sc[p] / sum *
						       hist_v[((s * 13 + p) * PHKV + kh) * PD + e];
					want[(t * PH + h) * PD + e] = acc;
				}
			}
		}
	}
}

/* Run cache_write + paged_attention with q, k, v as slices of one fused
 * buffer; return out packed (T, PH, PD) in got. */
static void run_paged(int threads, float *got, double *want)
{
	vd_backend *be = new_backend(threads);
	const vd_ops *o = be->ops;
	int64_t T = qsl[NSEQ], W = (PH + 2 * PHKV) * PD;
	vd_tensor buf, q, k, v, kc, vc, out;
	int64_t slots[9];
	double *hist_k = calloc(NSEQ * 13 * PHKV * PD, sizeof(double));
	double *hist_v = calloc(NSEQ * 13 * PHKV * PD, sizeof(double));
	vd_attn_meta m;
	float scale = 1.0f / sqrtf((float)PD);

	rng_state = 0x1234567u;
	buf = new_rand(be, 2, T, W, 0, 0);
	q = heads_view(&buf, 0, PH, PD);
	k = heads_view(&buf, PH * PD, PHKV, PD);
	v = heads_view(&buf, (PH + PHKV) * PD, PHKV, PD);
	kc = new_tensor(be, 4, NBLK, BS, PHKV, PD);
	vc = new_tensor(be, 4, NBLK, BS, PHKV, PD);
	memset(kc.data, 0, sizeof(float) * NBLK * BS * PHKV * PD);
	memset(vc.data, 0, sizeof(float) * NBLK * BS * PHKV * PD);
	out = new_tensor(be, 3, T, PH, PD, 0);
	m = build_batch(&kc, &vc, &k, &v, slots, hist_k, hist_v);
	ck_assert_int_eq(o->cache_write(be, &k, &v, &kc, &vc, &m), VD_OK);
	/* the skipped slot keeps its cached value */
	ck_assert(f32(&kc)[slot_of(0, 2) * PHKV * PD] == (float)hist_k[2 * PHKV * PD]);
	ck_assert_int_eq(o->paged_attention(be, &q, &kc, &vc, &m, scale, &out), VD_OK);
	memcpy(got, out.data, sizeof(float) * (size_t)(T * PH * PD));
	if (want)
		ref_attention(&q, hist_k, hist_v, scale, want);
	/* malformed metadata is refused */
	{
		int32_t bad_lens[NSEQ] = { 5, 13, 2 };
		vd_attn_meta bad = m;

		bad.seq_lens = bad_lens;
		ck_assert_int_eq(o->paged_attention(be, &q, &kc, &vc, &bad, scale, &out),
				 VD_ERR_INVALID_ARG);
		bad_lens[2] = 30; /* needs 8 blocks */
		ck_assert_int_eq(o->paged_attention(be, &q, &kc, &vc, &bad, scale, &out),
				 VD_ERR_INVALID_ARG);
		slots[4] = NBLK * BS;
		ck_assert_int_eq(o->cache_write(be, &k, &v, &kc, &vc, &m), VD_ERR_INVALID_ARG);
	}
	free(hist_k);
	free(hist_v);
	o->free(be, &buf);
	o->free(be, &kc);
	o->free(be, &vc);
	o->free(be, &out);
	vd_cpu_backend_destroy(be);
}

START_TEST(test_paged_attention)
{
	int64_t n = qsl[NSEQ] * PH * PD;
	float *got = malloc(sizeof(float) * (size_t)n), *got1 = malloc(sizeof(float) * (size_t)n);
	double *want = malloc(sizeof(double) * (size_t)n);

	run_paged(3, got, want);
	assert_close(got, want, n, 2e-6, "paged_attention");
	/* thread count does not change a bit */
	run_paged(1, got1, NULL);
	ck_assert_mem_eq(got, got1, sizeof(float) * (size_t)n);
	free(got);
	free(got1);
	free(want);
}
END_TEST

/* ---- FP8 E4M3 ---- */

/* The nearest E4M3 value of x by search over every finite code, ties to the
 * even code, |x| > 464 saturated: the definition vd_f32_to_fp8e4m3 must meet. */
static uint8_t fp8_by_search(float x)
{
	double ax = fabs((double)x), best_d = INFINITY;
	int best = 0;

	if (ax > 464.0)
		return (uint8_t)((signbit(x) ? 0x80 : 0) | 0x7e);
	for (int c = 0; c < 0x7f; c++) {
		double d = fabs((double)vd_fp8e4m3_to_f32((uint8_t)c) - ax);

		if (d < best_d || (d == best_d && !(c & 1))) {
			best_d = d;
			best = c;
		}
	}
	return (uint8_t)((signbit(x) ? 0x80 : 0) | best);
}

START_TEST(test_fp8_conversion)
{
	int bad = 0;

	/* every code: decodes to its value and encodes back (NaN apart) */
	for (int c = 0; c < 256; c++) {
		float v = vd_fp8e4m3_to_f32((uint8_t)c);

		if ((c & 0x7f) == 0x7f) {
			ck_assert(isnan(v));
			continue;
		}
		ck_assert_int_eq(vd_f32_to_fp8e4m3(v), c);
	}
	ck_assert(vd_fp8e4m3_to_f32(0x7e) == 448.0f && vd_fp8e4m3_to_f32(0x01) == 0x1p-9f);
	ck_assert(vd_fp8e4m3_to_f32(0x08) == 0x1p-6f && vd_fp8e4m3_to_f32(0xb8) == -1.0f);
	/* midpoints between neighbours tie to the even code; just above and
	 * below them round to the nearer one */
	for (int c = 0; c < 0x7e; c++) {
		float lo = vd_fp8e4m3_to_f32((uint8_t)c), hi = vd_fp8e4m3_to_f32((uint8_t)(c + 1));
		float mid = (lo + hi) / 2; /* exact in f32 */

		ck_assert_int_eq(vd_f32_to_fp8e4m3(mid), c & 1 ? c + 1 : c);
		ck_assert_int_eq(vd_f32_to_fp8e4m3(nextafterf(mid, 0.0f)), c);
		ck_assert_int_eq(vd_f32_to_fp8e4m3(nextafterf(mid, INFINITY)), c + 1);
		ck_assert_int_eq(vd_f32_to_fp8e4m3(-mid), 0x80 | (c & 1 ? c + 1 : c));
	}
	/* saturation, NaN, and values below half the smallest subnormal */
	ck_assert_int_eq(vd_f32_to_fp8e4m3(464.0f), 0x7e);
	ck_assert_int_eq(vd_f32_to_fp8e4m3(nextafterf(464.0f, INFINITY)), 0x7e);
	ck_assert_int_eq(vd_f32_to_fp8e4m3(1e30f), 0x7e);
	ck_assert_int_eq(vd_f32_to_fp8e4m3(-INFINITY), 0xfe);
	ck_assert_int_eq(vd_f32_to_fp8e4m3(NAN), 0x7f);
	ck_assert_int_eq(vd_f32_to_fp8e4m3(0x1p-10f), 0x00);
	ck_assert_int_eq(vd_f32_to_fp8e4m3(nextafterf(0x1p-10f, 1.0f)), 0x01);
	ck_assert_int_eq(vd_f32_to_fp8e4m3(-1e-30f), 0x80);
	/* random values over the whole range against the search */
	rng_state = 0x5eed;
	for (int i = 0; i < 200000; i++) {
		float x = ldexpf(frand(), (int)(frand() * 20.0f) - 4);

		bad += vd_f32_to_fp8e4m3(x) != fp8_by_search(x);
	}
	ck_assert_int_eq(bad, 0);
}
END_TEST

/* FP8 caches: cache_write stores x / scale rounded as vd_f32_to_fp8e4m3,
 * and paged_attention over them equals paged_attention over f32 caches
 * holding the dequantized values (stored * scale) bit for bit. */
START_TEST(test_paged_attention_fp8)
{
	vd_backend *be = new_backend(2);
	const vd_ops *o = be->ops;
	int64_t T = qsl[NSEQ], W = (PH + 2 * PHKV) * PD, n = NBLK * BS * PHKV * PD;
	int64_t cshape[4] = { NBLK, BS, PHKV, PD };
	vd_tensor buf, q, k, v, kc, vc, kc8, vc8, out, out8;
	int64_t slots[9];
	double *hist_k = calloc((size_t)(NSEQ * 13 * PHKV * PD), sizeof(double));
	double *hist_v = calloc((size_t)(NSEQ * 13 * PHKV * PD), sizeof(double));
	float *kd = malloc(sizeof(float) * (size_t)n);
	vd_attn_meta m;
	float scale = 1.0f / sqrtf((float)PD);

	rng_state = 0x7654321u;
	buf = new_rand(be, 2, T, W, 0, 0);
	q = heads_view(&buf, 0, PH, PD);
	k = heads_view(&buf, PH * PD, PHKV, PD);
	v = heads_view(&buf, (PH + PHKV) * PD, PHKV, PD);
	kc = new_tensor(be, 4, NBLK, BS, PHKV, PD);
	vc = new_tensor(be, 4, NBLK, BS, PHKV, PD);
	memset(kc.data, 0, sizeof(float) * (size_t)n);
	memset(vc.data, 0, sizeof(float) * (size_t)n);
	out = new_tensor(be, 3, T, PH, PD, 0);
	out8 = new_tensor(be, 3, T, PH, PD, 0);
	m = build_batch(&kc, &vc, &k, &v, slots, hist_k, hist_v);
	m.k_scale = 0.5f;
	m.v_scale = 2.0f;
	/* the history goes in through upload's conversion (no scale) */
	ck_assert_int_eq(o->alloc(be, &kc8, VD_DTYPE_F8E4M3, 4, cshape), VD_OK);
	ck_assert_int_eq(o->alloc(be, &vc8, VD_DTYPE_F8E4M3, 4, cshape), VD_OK);
	ck_assert_int_eq(o->upload(be, &kc8, kc.data, VD_DTYPE_F32, n), VD_OK);
	ck_assert_int_eq(o->upload(be, &vc8, vc.data, VD_DTYPE_F32, n), VD_OK);
	ck_assert_int_eq(o->cache_write(be, &k, &v, &kc8, &vc8, &m), VD_OK);
	for (int64_t t = 0; t < T; t++)
		for (int64_t j = 0; j < PHKV * PD; j++) {
			int64_t at = (slots[t] < 0 ? slot_of(0, 2) : slots[t]) * PHKV * PD + j;
			float kx = slots[t] < 0 ? f32(&kc)[at] : ((float *)k.data)[t * k.stride[0] + j] / 0.5f;
			float vx = slots[t] < 0 ? f32(&vc)[at] : ((float *)v.data)[t * v.stride[0] + j] / 2.0f;

			ck_assert_int_eq(((uint8_t *)kc8.data)[at], vd_f32_to_fp8e4m3(kx));
			ck_assert_int_eq(((uint8_t *)vc8.data)[at], vd_f32_to_fp8e4m3(vx));
		}
	for (int64_t i = 0; i < n; i++) {
		f32(&kc)[i] = vd_fp8e4m3_to_f32(((uint8_t *)kc8.data)[i]) * 0.5f;
		f32(&vc)[i] = vd_fp8e4m3_to_f32(((uint8_t *)vc8.data)[i]) * 2.0f;
	}
	ck_assert_int_eq(o->paged_attention(be, &q, &kc8, &vc8, &m, scale, &out8), VD_OK);
	ck_assert_int_eq(o->paged_attention(be, &q, &kc, &vc, &m, scale, &out), VD_OK);
	ck_assert_mem_eq(out.data, out8.data, sizeof(float) * (size_t)(T * PH * PD));
	/* one FP8 and one f32 cache are refused */
	ck_assert_int_eq(o->paged_attention(be, &q, &kc8, &vc, &m, scale, &out), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(o->cache_write(be, &k, &v, &kc, &vc8, &m), VD_ERR_INVALID_ARG);
	/* download and copy convert FP8 like any float dtype */
	ck_assert_int_eq(o->download(be, &kc8, kd), VD_OK);
	ck_assert_int_eq(o->copy(be, &kc8, &kc), VD_OK);
	for (int64_t i = 0; i < n; i++) {
		ck_assert(kd[i] == vd_fp8e4m3_to_f32(((uint8_t *)kc8.data)[i]));
		ck_assert(f32(&kc)[i] == kd[i]);
	}
	free(kd);
	free(hist_k);
	free(hist_v);
	o->free(be, &buf);
	o->free(be, &kc);
	o->free(be, &vc);
	o->free(be, &kc8);
	o->free(be, &vc8);
	o->free(be, &out);
	o->free(be, &out8);
	vd_cpu_backend_destroy(be);
}
END_TEST

START_TEST(test_attention_segments)
{
	vd_backend *be = new_backend(3);
	enum { T = 12, H = 6, HKV = 3, D = 8 };
	int32_t cu[4] = { 0, 5, 5, 12 }; /* includes an empty segment */
	vd_tensor q = new_rand(be, 3, T, H, D, 0), k = new_rand(be, 3, T, HKV, D, 0);
	vd_tensor v = new_rand(be, 3, T, HKV, D, 0), out = new_tensor(be, 3, T, H, D, 0);
	double want[T * H * D];
	float scale = 0.35f;

	for (int g = 0; g < 3; g++)
		for (int t = cu[g]; t < cu[g + 1]; t++)
			for (int h = 0; h < H; h++) {
				int kh = h / (H / HKV);
				double sc[T], mx = -INFINITY, sum = 0;

				for (int u = cu[g]; u < cu[g + 1]; u++) {
					sc[u] = 0;
					for (int e = 0; e < D; e++)
						sc[u] += (double)f32(&q)[(t * H + h) * D + e] *
							 f32(&k)[(u * HKV + kh) * D + e];
					sc[u] *= scale;
					mx = fmax(mx, sc[u]);
				}
				for (int u = cu[g]; u < cu[g + 1]; u++)
					sum += (sc[u] = exp(sc[u] - mx));
				for (int e = 0; e < D; e++) {
					double acc = 0;

					for (int u = cu[g]; u < cu[g + 1]; u++)
						acc += sc[u] / sum * f32(&v)[(u * HKV + kh) * D + e];
					want[(t * H + h) * D + e] = acc;
				}
			}
	ck_assert_int_eq(be->ops->attention_segments(be, &q, &k, &v, cu, 3, scale, &out), VD_OK);
	assert_close(f32(&out), want, T * H * D, 2e-6, "attention_segments");
	cu[3] = 11;
	ck_assert_int_eq(be->ops->attention_segments(be, &q, &k, &v, cu, 3, scale, &out),
			 VD_ERR_INVALID_ARG);
	be->ops->free(be, &q);
	be->ops->free(be, &k);
	be->ops->free(be, &v);
	be->ops->free(be, &out);
	vd_cpu_backend_destroy(be);
}
END_TEST

/* ------------------------------------------------------------------ rows */

START_TEST(test_rows)
{
	vd_backend *be = new_backend(2);
	const vd_ops *o = be->ops;
	enum { V = 10, C = 6 };
	vd_tensor table = new_rand(be, 2, V, C, 0, 0), out = new_tensor(be, 2, 4, C, 0, 0);
	vd_tensor dst = new_rand(be, 2, V, C, 0, 0), g = new_tensor(be, 2, 3, C, 0, 0);
	int32_t ids[4] = { 9, 0, 3, 9 }, bad[2] = { 1, 10 }, rows[3] = { 8, 2, 5 };
	float before[V * C];

	ck_assert_int_eq(o->embed(be, &table, ids, 4, &out), VD_OK);
	for (int i = 0; i < 4; i++)
		ck_assert_mem_eq(f32(&out) + i * C, f32(&table) + ids[i] * C, sizeof(float) * C);
	{
		vd_tensor g2 = vd_tensor_rows(&g, 0, 2);

		ck_assert_int_eq(o->embed(be, &table, bad, 2, &g2), VD_ERR_INVALID_ARG);
		ck_assert(strstr(vd_error_message(), "ids[1] = 10") != NULL);
	}
	/* scatter 3 rows of out into dst at rows[] */
	memcpy(before, dst.data, sizeof(before));
	{
		vd_tensor src = vd_tensor_rows(&out, 0, 3);

		ck_assert_int_eq(o->scatter_rows(be, &src, rows, 3, &dst), VD_OK);
	}
	for (int r = 0; r < V; r++) {
		int from = r == 8 ? 0 : r == 2 ? 1 : r == 5 ? 2 : -1;

		if (from < 0)
			ck_assert_mem_eq(f32(&dst) + r * C, before + r * C, sizeof(float) * C);
		else
			ck_assert_mem_eq(f32(&dst) + r * C, f32(&out) + from * C, sizeof(float) * C);
	}
	ck_assert_int_eq(o->gather_rows(be, &dst, rows, 3, &g), VD_OK);
	for (int i = 0; i < 3; i++)
		ck_assert_mem_eq(f32(&g) + i * C, f32(&dst) + rows[i] * C, sizeof(float) * C);
	rows[1] = -1;
	ck_assert_int_eq(o->gather_rows(be, &dst, rows, 3, &g), VD_ERR_INVALID_ARG);
	/* sample: greedy = first maximum of each row; with a temperature, the
	 * Gumbel-max draw of ops.h, never an -inf entry, and the same key draws
	 * the same token */
	{
		int32_t am[V], again[V];
		float temps[V];
		uint64_t keys[V];

		f32(&dst)[0 * C + 4] = 50.0f;
		f32(&dst)[0 * C + 2] = 50.0f;
		f32(&dst)[1 * C + 5] = 60.0f;
		ck_assert_int_eq(o->sample(be, &dst, NULL, NULL, am), VD_OK);
		ck_assert_int_eq(am[0], 2);
		ck_assert_int_eq(am[1], 5);
		for (int r = 2; r < V; r++) {
			int best = 0;

			for (int j = 1; j < C; j++)
				if (f32(&dst)[r * C + j] > f32(&dst)[r * C + best])
					best = j;
			ck_assert_int_eq(am[r], best);
		}
		for (int r = 0; r < V; r++) {
			temps[r] = r == 3 ? 0.0f : 1.0f;
			keys[r] = 1000u + (uint64_t)r;
		}
		for (int j = 0; j < C; j++)
			f32(&dst)[4 * C + j] = j == 1 ? 0.0f : -INFINITY;
		ck_assert_int_eq(o->sample(be, &dst, temps, keys, am), VD_OK);
		ck_assert_int_eq(o->sample(be, &dst, temps, keys, again), VD_OK);
		ck_assert_mem_eq(am, again, sizeof(am));
		ck_assert_int_eq(am[4], 1);
		for (int r = 0; r < V; r++) {
			double bs = -INFINITY;
			int best = 0;

			if (r == 3)
				continue;
			for (int j = 0; j < C; j++) {
				double v = (double)f32(&dst)[r * C + j] + vd_gumbel(keys[r], j);

				if (f32(&dst)[r * C + j] != -INFINITY && v > bs) {
					bs = v;
					best = j;
				}
			}
			ck_assert_int_eq(am[r], best);
		}
		ck_assert_int_eq(o->sample(be, &dst, temps, NULL, am), VD_ERR_INVALID_ARG);
	}
	/* sample_full: its rows agree with sample for plain rows; bad rows,
	 * history and logprob requests are refused */
	{
		vd_sample_row sr[V];
		vd_sample_hist hist[2] = { { .token = 1, .flags = VD_HIST_BANNED },
					   { .token = 2, .flags = VD_HIST_SEEN, .count = 1.0f } };
		int32_t am[V], pk[V], rank[V], ids[V * 2];
		float temps[V], lp[V], lps[V * 2];
		uint64_t keys[V];
		vd_sample_args sa = { .struct_size = sizeof(sa), .rows = sr, .hist = hist, .n_hist = 2,
				      .lp_k = 2, .picks = pk, .chosen_lp = lp, .chosen_rank = rank,
				      .top_ids = ids, .top_lps = lps };

		for (int r = 0; r < V; r++) {
			temps[r] = r == 3 ? 0.0f : 0.8f;
			keys[r] = 77u + (uint64_t)r;
			sr[r] = (vd_sample_row){ .temperature = temps[r], .min_p_log = -INFINITY,
						 .repetition_penalty = 1.0f, .logprobs = -1,
						 .key = keys[r] };
		}
		ck_assert_int_eq(o->sample(be, &dst, temps, keys, am), VD_OK);
		ck_assert_int_eq(o->sample_full(be, &dst, &sa), VD_OK);
		ck_assert_mem_eq(am, pk, sizeof(am));
		/* row 0: a 50 at column 2 banned by its history, then its logprobs */
		sr[0] = (vd_sample_row){ .temperature = 0.0f, .min_p_log = -INFINITY,
					 .repetition_penalty = 1.0f, .logprobs = 2, .n_hist = 2 };
		hist[0].token = 2;
		hist[0].flags = VD_HIST_BANNED;
		hist[1].token = 4;
		ck_assert_int_eq(o->sample_full(be, &dst, &sa), VD_OK);
		ck_assert_int_ne(pk[0], 2);
		ck_assert_int_eq(pk[0], 4); /* the other 50 (seen, no penalty set) */
		ck_assert_int_eq(rank[0], 1); /* none strictly greater on the raw logits */
		ck_assert_int_eq(ids[0], 2);
		ck_assert_int_eq(ids[1], 4);
		ck_assert_float_eq_tol(lps[0], lps[1], 1e-6f);
		sr[0].logprobs = 3;
		ck_assert_int_eq(o->sample_full(be, &dst, &sa), VD_ERR_INVALID_ARG);
		sr[0].logprobs = -1;
		hist[1].token = C;
		ck_assert_int_eq(o->sample_full(be, &dst, &sa), VD_ERR_INVALID_ARG);
		hist[1].token = 0;
		sr[0].n_hist = 3;
		ck_assert_int_eq(o->sample_full(be, &dst, &sa), VD_ERR_INVALID_ARG);
		sr[0].n_hist = 0;
		sr[1].temperature = NAN;
		ck_assert_int_eq(o->sample_full(be, &dst, &sa), VD_ERR_INVALID_ARG);
	}
	o->free(be, &table);
	o->free(be, &out);
	o->free(be, &dst);
	o->free(be, &g);
	vd_cpu_backend_destroy(be);
}
END_TEST

/* want (H/P * W/P, N) = the stride-P convolution of img (C, H, W) with
 * kern (N, C, P, P), the ragged edge dropped, in double. */
static void conv_ref(const float *img, int C, int H, int W, const float *kern, int N, int P,
		     double *want)
{
	for (int py = 0; py < H / P; py++)
		for (int px = 0; px < W / P; px++)
			for (int n = 0; n < N; n++) {
				double s = 0;

				for (int c = 0; c < C; c++)
					for (int ky = 0; ky < P; ky++)
						for (int kx = 0; kx < P; kx++)
							s += (double)img[(c * H + py * P + ky) * W + px * P + kx] *
							     kern[((n * C + c) * P + ky) * P + kx];
				want[(py * (W / P) + px) * N + n] = s;
			}
}

START_TEST(test_im2patch_conv)
{
	vd_backend *be = new_backend(3);
	const vd_ops *o = be->ops;
	enum { C = 3, H = 9, W = 13, P = 4, NPH = H / P, NPW = W / P, N = 5 };
	vd_tensor img = new_rand(be, 3, C, H, W, 0), patches = new_tensor(be, 2, NPH * NPW, C * P * P, 0, 0);
	vd_tensor kern = new_rand(be, 2, N, C * P * P, 0, 0), y = new_tensor(be, 2, NPH * NPW, N, 0, 0);
	double want[NPH * NPW * N];

	/* a stride-P convolution (dropping the ragged edge) == im2patch + linear */
	conv_ref(f32(&img), C, H, W, f32(&kern), N, P, want);
	ck_assert_int_eq(o->im2patch(be, &img, P, &patches), VD_OK);
	ck_assert(f32(&patches)[0] == f32(&img)[0]);
	ck_assert(f32(&patches)[P * P] == f32(&img)[H * W]); /* channel 1 of patch 0 */
	ck_assert(f32(&patches)[C * P * P + 1] == f32(&img)[P + 1]); /* patch 1, kx = 1 */
	ck_assert_int_eq(o->linear(be, &patches, &kern, NULL, &y), VD_OK);
	assert_close(f32(&y), want, NPH * NPW * N, 1e-5, "im2patch conv");
	ck_assert_int_eq(o->im2patch(be, &img, 5, &patches), VD_ERR_INVALID_ARG);
	/* patch_conv: the same sums over the whole (divisible) image, and for
	 * 3-D patches given as flattened rows it is linear itself */
	{
		vd_tensor img2 = new_rand(be, 3, C, NPH * P, NPW * P, 0);
		vd_tensor y2 = new_tensor(be, 2, NPH * NPW, N, 0, 0);
		vd_tensor rows = new_rand(be, 2, 6, C * 2 * P * P, 0, 0);
		vd_tensor k3 = new_rand(be, 2, N, C * 2 * P * P, 0, 0);
		vd_tensor y3 = new_tensor(be, 2, 6, N, 0, 0), y3l = new_tensor(be, 2, 6, N, 0, 0);
		double w3[6 * N];

		conv_ref(f32(&img2), C, NPH * P, NPW * P, f32(&kern), N, P, want);
		ck_assert_int_eq(o->patch_conv(be, &img2, 2, (const int64_t[]){ C, NPH * P, NPW * P },
					       (const int64_t[]){ P, P }, &kern, &y2), VD_OK);
		assert_close(f32(&y2), want, NPH * NPW * N, 1e-5, "patch_conv 2-D");
		ck_assert_int_eq(o->linear(be, &rows, &k3, NULL, &y3l), VD_OK);
		for (int i = 0; i < 6 * N; i++)
			w3[i] = f32(&y3l)[i];
		ck_assert_int_eq(o->patch_conv(be, &rows, 3, (const int64_t[]){ C, 2, P, P },
					       (const int64_t[]){ 2, P, P }, &k3, &y3), VD_OK);
		assert_close(f32(&y3), w3, 6 * N, 1e-6, "patch_conv 3-D");
		/* a kernel that does not divide, a y of the wrong size */
		ck_assert_int_eq(o->patch_conv(be, &img, 2, (const int64_t[]){ C, H, W },
					       (const int64_t[]){ P, P }, &kern, &y), VD_ERR_INVALID_ARG);
		ck_assert_int_eq(o->patch_conv(be, &img2, 2, (const int64_t[]){ C, NPH * P, NPW * P },
					       (const int64_t[]){ P, P }, &kern, &patches), VD_ERR_INVALID_ARG);
		o->free(be, &img2);
		o->free(be, &y2);
		o->free(be, &rows);
		o->free(be, &k3);
		o->free(be, &y3);
		o->free(be, &y3l);
	}
	o->free(be, &img);
	o->free(be, &patches);
	o->free(be, &kern);
	o->free(be, &y);
	vd_cpu_backend_destroy(be);
}
END_TEST

/* Same random inputs through 1 and 4 threads give identical bits. */
START_TEST(test_thread_independence)
{
	float *res[2];
	int threads[2] = { 1, 4 };
	enum { M = 37, C = 160 };

	for (int i = 0; i < 2; i++) {
		vd_backend *be = new_backend(threads[i]);
		vd_tensor x, w, y, z;

		rng_state = 42;
		x = new_rand(be, 2, M, C, 0, 0);
		w = new_rand(be, 1, C, 0, 0, 0);
		y = new_tensor(be, 2, M, C, 0, 0);
		z = new_tensor(be, 2, M, C, 0, 0);
		ck_assert_int_eq(be->ops->rmsnorm(be, &x, &w, 1e-6f, &y), VD_OK);
		ck_assert_int_eq(be->ops->act(be, VD_ACT_GELU, &y, &z), VD_OK);
		ck_assert_int_eq(be->ops->layernorm(be, &z, &w, &w, 1e-5f, &z), VD_OK);
		res[i] = malloc(sizeof(float) * M * C);
		memcpy(res[i], z.data, sizeof(float) * M * C);
		be->ops->free(be, &x);
		be->ops->free(be, &w);
		be->ops->free(be, &y);
		be->ops->free(be, &z);
		vd_cpu_backend_destroy(be);
	}
	ck_assert_mem_eq(res[0], res[1], sizeof(float) * M * C);
	free(res[0]);
	free(res[1]);
}
END_TEST

START_TEST(test_backend_dispatch)
{
	vd_backend *be = NULL;

	ck_assert_int_eq(vd_backend_create("cpu", 2, &be), VD_OK);
	ck_assert_str_eq(be->ops->name, "cpu");
	ck_assert_int_eq(be->ops->version, VD_OPS_VERSION);
	ck_assert_int_eq(vd_backend_compute_dtype(be), VD_DTYPE_F32);
	/* the dtype option: the CPU computes in f32 only */
	ck_assert_int_eq(vd_backend_set_dtype(be, "auto", "bfloat16"), VD_OK);
	ck_assert_int_eq(vd_backend_compute_dtype(be), VD_DTYPE_F32);
	ck_assert_int_eq(vd_backend_set_dtype(be, "float32", NULL), VD_OK);
	ck_assert_int_eq(vd_backend_set_dtype(be, "bfloat16", NULL), VD_ERR_UNSUPPORTED);
	ck_assert(strstr(vd_error_message(), "float32 only") != NULL);
	ck_assert_int_eq(vd_backend_set_dtype(be, "int4", NULL), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(vd_backend_compute_dtype(be), VD_DTYPE_F32);
	ck_assert_str_eq(vd_backend_resolve_device("cpu"), "cpu");
	vd_backend_destroy(be);
	vd_backend_destroy(NULL);
#ifndef VD_HAVE_CUDA
	ck_assert_int_eq(vd_backend_create("cuda", 0, &be), VD_ERR_UNSUPPORTED);
	ck_assert(strstr(vd_error_message(), "without CUDA") != NULL);
#endif
	ck_assert_int_eq(vd_backend_create("cuda:x", 0, &be), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(vd_backend_create("tpu", 0, &be), VD_ERR_INVALID_ARG);
	ck_assert_ptr_null(be);
	ck_assert_int_eq(vd_cpu_backend_create(-1, &be), VD_ERR_INVALID_ARG);
	/* an ops table of another version, or shorter than this core's, is refused */
	{
		vd_backend *cpu = new_backend(1), fake;
		vd_ops ops = *cpu->ops;

		fake = *cpu;
		fake.ops = &ops;
		ck_assert_int_eq(vd_backend_check_ops(&fake), VD_OK);
		ops.version = VD_OPS_VERSION + 1;
		ck_assert_int_eq(vd_backend_check_ops(&fake), VD_ERR_UNSUPPORTED);
		ck_assert(strstr(vd_error_message(), "ops table version") != NULL);
		ops.version = VD_OPS_VERSION;
		ops.struct_size = (uint32_t)offsetof(vd_ops, patch_conv);
		ck_assert_int_eq(vd_backend_check_ops(&fake), VD_ERR_UNSUPPORTED);
		vd_cpu_backend_destroy(cpu);
	}
}
END_TEST

static Suite *ops_suite(void)
{
	Suite *s = suite_create("ops_cpu");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_bf16_round_even);
	tcase_add_test(tc, test_f16_round_even);
	tcase_add_test(tc, test_upload_download_copy);
	tcase_add_test(tc, test_linear);
	tcase_add_test(tc, test_norms);
	tcase_add_test(tc, test_elementwise);
	tcase_add_test(tc, test_dtype_refused);
	tcase_add_test(tc, test_rope_variants);
	tcase_add_test(tc, test_paged_attention);
	tcase_add_test(tc, test_fp8_conversion);
	tcase_add_test(tc, test_paged_attention_fp8);
	tcase_add_test(tc, test_attention_segments);
	tcase_add_test(tc, test_rows);
	tcase_add_test(tc, test_im2patch_conv);
	tcase_add_test(tc, test_thread_independence);
	tcase_add_test(tc, test_backend_dispatch);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ops_suite());
	int failed;

	rng_state = 0x9e3779b97f4a7c15ull;
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
