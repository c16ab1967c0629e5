/* Pillow-compatible resampling of packed RGB (see resample.h).
 * BILINEAR/BICUBIC follow Pillow's two-pass convolution (libImaging/Resample.c):
 * double-precision weights per output pixel, normalised to sum 1, turned into
 * 22-bit fixed point, summed in int32 and clipped to 8 bits after each pass.
 * Each output pixel depends only on its own weights, so a window of the
 * resized image is computed alone: weights for its columns and rows only,
 * horizontal rows made on demand into a ring one filter high, then the
 * vertical pass. NEAREST follows Pillow's affine scale path
 * (libImaging/Geometry.c), which steps a double source coordinate. Every
 * expression below keeps Pillow's operation order on purpose: reordering
 * changes rounding and breaks parity. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/io/resample.h"
#include "core/io/resample_kernels.h"

struct vd_filter {
	double (*fn)(double x);
	double support; /* half-width at scale 1, in input pixels */
};

static double vd_bilinear(double x)
{
	if (x < 0.0)
		x = -x;
	if (x < 1.0)
		return 1.0 - x;
	return 0.0;
}

/* Keys cubic with a = -0.5, written as Pillow writes it. */
static double vd_bicubic(double x)
{
	const double a = -0.5;

	if (x < 0.0)
		x = -x;
	if (x < 1.0)
		return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
	if (x < 2.0)
		return (((x - 5) * x + 8) * x - 4) * a;
	return 0.0;
}

static const struct vd_filter vd_filter_bilinear = { vd_bilinear, 1.0 };
static const struct vd_filter vd_filter_bicubic = { vd_bicubic, 2.0 };

static bool use_simd = true;

void vd_resample_use_simd(bool on)
{
	use_simd = on;
}

bool vd_resample_simd_active(void)
{
	return use_simd && vd_resample_cpu_avx2();
}

static void vd_weights_free(vd_weights *w)
{
	free(w->bounds);
	free(w->k);
	free(w->k16);
	memset(w, 0, sizeof(*w));
}

/* Weights of outputs [o0, o0 + n) when in_size pixels map onto out_size
 * (Pillow's precompute_coeffs and normalize_coeffs_8bpc, with the whole input
 * as the box), laid out for the AVX2 kernels too when simd is set. */
static vd_status vd_weights_build(int in_size, int out_size, int o0, int n,
				  const struct vd_filter *f, bool simd, vd_weights *c)
{
	double scale, filterscale, support, ss;
	double *w = NULL;
	int xx, x;

	memset(c, 0, sizeof(*c));
	/* Pillow takes the box as float: (double)(float)in_size is what it divides. */
	filterscale = scale = (double)(float)in_size / out_size;
	if (filterscale < 1.0)
		filterscale = 1.0;
	/* Downscaling widens the kernel so that every input pixel contributes. */
	support = f->support * filterscale;
	if (support > INT_MAX / 4)
		return vd_errorf(VD_ERR_LIMIT, "resize: %d to %d pixels needs a filter "
				 "wider than %d taps", in_size, out_size, INT_MAX / 2);
	c->n = n;
	c->ksize = (int)ceil(support) * 2 + 1;
	c->bounds = malloc((size_t)n * 2 * sizeof(int));
	c->k = malloc((size_t)n * (size_t)c->ksize * sizeof(int32_t));
	w = malloc((size_t)c->ksize * sizeof(double));
	if (!c->bounds || !c->k || !w)
		goto err_nomem;

	ss = 1.0 / filterscale;
	for (int i = 0; i < n; i++) {
		double center, ww = 0.0, hi;
		int xmin, xmax;
		int32_t *k = &c->k[(size_t)i * c->ksize];

		xx = o0 + i;
		center = (xx + 0.5) * scale;
		hi = center + support + 0.5;
		/* Truncation toward zero, then clamping, as Pillow rounds; the upper
		 * end is clamped before the conversion so that it cannot overflow. */
		xmin = (int)(center - support + 0.5);
		xmax = hi > in_size ? in_size : (int)hi;
		if (xmin < 0)
			xmin = 0;
		/* xmax - xmin <= 2*support + 1 <= ksize, so w[] cannot overflow. */
		xmax -= xmin;
		for (x = 0; x < xmax; x++) {
			w[x] = f->fn((x + xmin - center + 0.5) * ss);
			ww += w[x];
		}
		for (x = 0; x < xmax; x++) {
			double v = w[x];

			if (ww != 0.0)
				v /= ww;
			k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << VD_PRECISION_BITS))
				     : (int32_t)(0.5 + v * (1 << VD_PRECISION_BITS));
		}
		for (; x < c->ksize; x++)
			k[x] = 0;
		c->bounds[(size_t)i * 2 + 0] = xmin;
		c->bounds[(size_t)i * 2 + 1] = xmax;
	}
	free(w);
	if (simd && !vd_weights_pack_avx2(c)) {
		vd_weights_free(c);
		return vd_errorf(VD_ERR_NOMEM, "resize: out of memory for %d filter weights", n);
	}
	return VD_OK;

err_nomem:
	free(w);
	vd_weights_free(c);
	return vd_errorf(VD_ERR_NOMEM, "resize: out of memory for %d filter weights", n);
}

void vd_hrow_c(const uint8_t *src, uint8_t *dst, const vd_weights *c)
{
	for (int xx = 0; xx < c->n; xx++) {
		const int32_t *k = &c->k[(size_t)xx * c->ksize];
		const uint8_t *p = src + (size_t)c->bounds[(size_t)xx * 2] * 3;
		int n = c->bounds[(size_t)xx * 2 + 1];
		int32_t s0 = 1 << (VD_PRECISION_BITS - 1);
		int32_t s1 = s0, s2 = s0;

		for (int x = 0; x < n; x++) {
			s0 += p[x * 3 + 0] * k[x];
			s1 += p[x * 3 + 1] * k[x];
			s2 += p[x * 3 + 2] * k[x];
		}
		dst[(size_t)xx * 3 + 0] = vd_clip8(s0);
		dst[(size_t)xx * 3 + 1] = vd_clip8(s1);
		dst[(size_t)xx * 3 + 2] = vd_clip8(s2);
	}
}

/* Integer sums do not depend on the order of terms, so the rows are
 * accumulated one input row at a time, reading memory sequentially. */
void vd_vrow_c(const uint8_t *const *rows, const int32_t *k, int taps, size_t n,
	       int32_t *acc, uint8_t *dst)
{
	for (size_t i = 0; i < n; i++)
		acc[i] = 1 << (VD_PRECISION_BITS - 1);
	for (int t = 0; t < taps; t++) {
		const uint8_t *src = rows[t];
		int32_t kv = k[t];

		for (size_t i = 0; i < n; i++)
			acc[i] += src[i] * kv;
	}
	for (size_t i = 0; i < n; i++)
		dst[i] = vd_clip8(acc[i]);
}

/* Source rows for the horizontal pass. The AVX2 kernel reads up to 13
 * bytes past the last pixel it uses: a row with at least 16 bytes of the
 * image after it is read in place, the last rows of the image from a
 * padded copy. */
struct vd_src {
	const uint8_t *in;
	int iw, ih;
	bool simd;
	uint8_t *pad;  /* padded copy of row pad_row, or NULL */
	int pad_row;
};

static const uint8_t *vd_src_row(struct vd_src *s, int r)
{
	size_t stride = (size_t)s->iw * 3;

	if (!s->simd || (size_t)(s->ih - 1 - r) * stride >= 16)
		return s->in + (size_t)r * stride;
	if (!s->pad) {
		s->pad = calloc(stride + 32, 1);
		if (!s->pad)
			return NULL;
		s->pad_row = -1;
	}
	if (s->pad_row != r) {
		memcpy(s->pad, s->in + (size_t)r * stride, stride);
		s->pad_row = r;
	}
	return s->pad;
}

/* Pillow's ImagingResampleInner with the full image as box, for the window
 * (x0, y0, cw, ch): a pass whose size is unchanged is skipped (its window is
 * copied), as Pillow skips it. */
static vd_status vd_resample_conv(const uint8_t *in, int iw, int ih, int ow, int oh,
				  int x0, int y0, int cw, int ch,
				  const struct vd_filter *f, uint8_t *out)
{
	bool simd = vd_resample_simd_active();
	bool need_h = ow != iw, need_v = oh != ih;
	struct vd_src src = { .in = in, .iw = iw, .ih = ih, .simd = simd && need_h };
	size_t rowb = (size_t)cw * 3;
	vd_weights cv = { 0 }, chw = { 0 };
	uint8_t *ring = NULL;
	const uint8_t **rows = NULL;
	int *held = NULL;
	int32_t *acc = NULL;
	vd_status st = VD_OK;

	if (need_h) {
		st = vd_weights_build(iw, ow, x0, cw, f, simd, &chw);
		if (st != VD_OK)
			return st;
	}
	if (!need_v) {
		for (int yy = 0; yy < ch; yy++) {
			const uint8_t *s = vd_src_row(&src, y0 + yy);

			if (!s)
				goto nomem;
			if (!need_h)
				memcpy(out + yy * rowb, s + (size_t)x0 * 3, rowb);
			else if (simd)
				vd_hrow_avx2(s, out + yy * rowb, &chw);
			else
				vd_hrow_c(s, out + yy * rowb, &chw);
		}
		goto out;
	}

	st = vd_weights_build(ih, oh, y0, ch, f, false, &cv);
	if (st != VD_OK)
		goto out;
	rows = malloc((size_t)cv.ksize * sizeof(*rows));
	acc = malloc(rowb * sizeof(*acc));
	if (!rows || !acc)
		goto nomem;
	if (need_h) {
		/* Ring of horizontal rows, one filter high: the vertical windows
		 * of successive output rows only move down, and each holds at
		 * most ksize rows, so a row is made once and dropped when no
		 * later output row can read it. */
		ring = malloc((size_t)cv.ksize * rowb);
		held = malloc((size_t)cv.ksize * sizeof(*held));
		if (!ring || !held)
			goto nomem;
		for (int i = 0; i < cv.ksize; i++)
			held[i] = -1;
	}
	for (int yy = 0; yy < ch; yy++) {
		int ymin = cv.bounds[(size_t)yy * 2], count = cv.bounds[(size_t)yy * 2 + 1];

		for (int t = 0; t < count; t++) {
			int r = ymin + t, slot = r % cv.ksize;
			uint8_t *dst;
			const uint8_t *s;

			if (!need_h) {
				rows[t] = in + ((size_t)r * iw + (size_t)x0) * 3;
				continue;
			}
			dst = ring + (size_t)slot * rowb;
			if (held[slot] != r) {
				s = vd_src_row(&src, r);
				if (!s)
					goto nomem;
				if (simd)
					vd_hrow_avx2(s, dst, &chw);
				else
					vd_hrow_c(s, dst, &chw);
				held[slot] = r;
			}
			rows[t] = dst;
		}
		if (simd)
			vd_vrow_avx2(rows, &cv.k[(size_t)yy * cv.ksize], count, rowb, acc,
				     out + yy * rowb);
		else
			vd_vrow_c(rows, &cv.k[(size_t)yy * cv.ksize], count, rowb, acc,
				  out + yy * rowb);
	}
	goto out;

nomem:
	st = vd_errorf(VD_ERR_NOMEM, "resize: out of memory for a %d-pixel-wide window", cw);
out:
	free(src.pad);
	free(acc);
	free(rows);
	free(held);
	free(ring);
	vd_weights_free(&cv);
	vd_weights_free(&chw);
	return st;
}

/* Pillow's ImagingScaleAffine: source coordinate stepped in double from the
 * centre of the first output pixel; coordinates falling outside give black.
 * The coordinates of a window are the same sums, so the steps before it
 * are taken too. */
static vd_status vd_resample_nearest(const uint8_t *in, int iw, int ih, int ow, int oh,
				     int x0, int y0, int cw, int ch, uint8_t *out)
{
	double ax = (double)(float)iw / ow, ay = (double)(float)ih / oh;
	double xo = ax * 0.5, yo = ay * 0.5;
	int *xin;

	if (ow > VD_RESAMPLE_NEAREST_MAX_SIDE || oh > VD_RESAMPLE_NEAREST_MAX_SIDE)
		return vd_errorf(VD_ERR_LIMIT, "resize: NEAREST to %dx%d pixels: a side over "
				 "%d is refused", ow, oh, VD_RESAMPLE_NEAREST_MAX_SIDE);
	xin = malloc((size_t)cw * sizeof(int));
	if (!xin)
		return vd_errorf(VD_ERR_NOMEM, "resize: out of memory for %d columns", cw);
	for (int x = 0; x < x0; x++)
		xo += ax;
	for (int y = 0; y < y0; y++)
		yo += ay;
	for (int x = 0; x < cw; x++) {
		xin[x] = xo < 0.0 ? -1 : (int)xo;
		if (xin[x] >= iw)
			xin[x] = -1;
		xo += ax;
	}
	for (int y = 0; y < ch; y++) {
		int yi = yo < 0.0 ? -1 : (int)yo;
		uint8_t *dst = out + (size_t)y * cw * 3;

		if (yi < 0 || yi >= ih) {
			memset(dst, 0, (size_t)cw * 3);
		} else {
			const uint8_t *src = in + (size_t)yi * iw * 3;

			for (int x = 0; x < cw; x++) {
				if (xin[x] < 0)
					memset(dst + (size_t)x * 3, 0, 3);
				else
					memcpy(dst + (size_t)x * 3, src + (size_t)xin[x] * 3, 3);
			}
		}
		yo += ay;
	}
	free(xin);
	return VD_OK;
}

vd_status vd_resample_rgb_window(const uint8_t *in, int iw, int ih, int ow, int oh,
				 int x0, int y0, int cw, int ch, vd_resample filter,
				 uint8_t *out)
{
	/* Pillow returns a copy when the size does not change, for every filter. */
	if (iw == ow && ih == oh) {
		for (int y = 0; y < ch; y++)
			memcpy(out + (size_t)y * cw * 3, in + ((size_t)(y0 + y) * iw + x0) * 3,
			       (size_t)cw * 3);
		return VD_OK;
	}
	switch (filter) {
	case VD_RESAMPLE_NEAREST:
		return vd_resample_nearest(in, iw, ih, ow, oh, x0, y0, cw, ch, out);
	case VD_RESAMPLE_BILINEAR:
		return vd_resample_conv(in, iw, ih, ow, oh, x0, y0, cw, ch,
					&vd_filter_bilinear, out);
	case VD_RESAMPLE_BICUBIC:
		return vd_resample_conv(in, iw, ih, ow, oh, x0, y0, cw, ch,
					&vd_filter_bicubic, out);
	}
	return vd_errorf(VD_ERR_INVALID_ARG, "resize: unknown filter %d "
			 "(use NEAREST, BILINEAR or BICUBIC)", (int)filter);
}

vd_status vd_resample_rgb(const uint8_t *in, int iw, int ih, uint8_t *out,
			  int ow, int oh, vd_resample filter)
{
	return vd_resample_rgb_window(in, iw, ih, ow, oh, 0, 0, ow, oh, filter, out);
}
