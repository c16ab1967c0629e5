/* Pillow-compatible resampling of packed RGB (see resample.h).
 * BILINEAR/BICUBIC follow Pillow's two-pass convolution (libImaging/Resample.c):
 * double-precision weights per output pixel, normalised to sum 1, turned into
 * 22-bit fixed point, summed in int32 and clipped to 8 bits after each pass.
 * NEAREST follows Pillow's affine scale path (libImaging/Geometry.c), which
 * steps a double source coordinate. Every expression below keeps Pillow's
 * operation order on purpose: reordering changes rounding and breaks parity. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/io/resample.h"

/* 8 bits of result, 2 bits of headroom for the negative lobes and overshoot
 * of the cubic, 32-bit accumulator: 32 - 8 - 2. */
#define VD_PRECISION_BITS (32 - 8 - 2)

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

/* Fixed-point weights of one pass: output pixel i reads `bounds[2i+1]` input
 * pixels starting at `bounds[2i]`, with weights k[i*ksize ...]. */
struct vd_coeffs {
	int ksize;
	int *bounds;  /* (out, 2) */
	int32_t *k;   /* (out, ksize) */
};

static void vd_coeffs_free(struct vd_coeffs *c)
{
	free(c->bounds);
	free(c->k);
	c->bounds = NULL;
	c->k = NULL;
}

/* Weights mapping in_size pixels onto out_size (Pillow's precompute_coeffs and
 * normalize_coeffs_8bpc, with the whole input as the box). */
static vd_status vd_coeffs_build(int in_size, int out_size,
				 const struct vd_filter *f, struct vd_coeffs *c)
{
	double scale, filterscale, support, ss;
	double *w = NULL;
	int xx, x;

	/* Pillow takes the box as float: (double)(float)in_size is what it divides. */
	filterscale = scale = (double)(float)in_size / out_size;
	if (filterscale < 1.0)
		filterscale = 1.0;
	/* Downscaling widens the kernel so that every input pixel contributes. */
	support = f->support * filterscale;
	if (support > INT_MAX / 4)
		return vd_errorf(VD_ERR_LIMIT, "resize: %d to %d pixels needs a filter "
				 "wider than %d taps", in_size, out_size, INT_MAX / 2);
	c->ksize = (int)ceil(support) * 2 + 1;
	c->bounds = malloc((size_t)out_size * 2 * sizeof(int));
	c->k = malloc((size_t)out_size * (size_t)c->ksize * sizeof(int32_t));
	w = malloc((size_t)c->ksize * sizeof(double));
	if (!c->bounds || !c->k || !w)
		goto err_nomem;

	ss = 1.0 / filterscale;
	for (xx = 0; xx < out_size; xx++) {
		double center = (xx + 0.5) * scale;
		double ww = 0.0, hi = center + support + 0.5;
		/* Truncation toward zero, then clamping, as Pillow rounds; the upper
		 * end is clamped before the conversion so that it cannot overflow. */
		int xmin = (int)(center - support + 0.5);
		int xmax = hi > in_size ? in_size : (int)hi;
		int32_t *k = &c->k[(size_t)xx * c->ksize];

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
		c->bounds[(size_t)xx * 2 + 0] = xmin;
		c->bounds[(size_t)xx * 2 + 1] = xmax;
	}
	free(w);
	return VD_OK;

err_nomem:
	free(w);
	vd_coeffs_free(c);
	return vd_errorf(VD_ERR_NOMEM, "resize: out of memory for %d filter weights",
			 out_size);
}

/* Pillow's clip8: the accumulator carries a rounding half, so the shift
 * rounds to nearest; out-of-range sums saturate. Negative sums are tested
 * first so that only non-negative values are shifted. */
static inline uint8_t vd_clip8(int32_t ss)
{
	if (ss < 0)
		return 0;
	ss >>= VD_PRECISION_BITS;
	return ss > 255 ? 255 : (uint8_t)ss;
}

/* Horizontal pass: rows [row0, row0 + rows) of in (iw wide) to out (ow wide). */
static void vd_pass_horizontal(const uint8_t *in, int iw, int row0, int rows,
			       uint8_t *out, int ow, const struct vd_coeffs *c)
{
	for (int yy = 0; yy < rows; yy++) {
		const uint8_t *src = in + (size_t)(row0 + yy) * iw * 3;
		uint8_t *dst = out + (size_t)yy * ow * 3;

		for (int xx = 0; xx < ow; xx++) {
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
}

/* Vertical pass over whole rows of w pixels. Integer sums do not depend on
 * the order of terms, so rows are accumulated one input row at a time
 * (acc holds w*3 int32) to read memory sequentially. */
static void vd_pass_vertical(const uint8_t *in, int w, uint8_t *out, int oh,
			     const struct vd_coeffs *c, int32_t *acc)
{
	size_t n = (size_t)w * 3;

	for (int yy = 0; yy < oh; yy++) {
		const int32_t *k = &c->k[(size_t)yy * c->ksize];
		int ymin = c->bounds[(size_t)yy * 2], count = c->bounds[(size_t)yy * 2 + 1];
		uint8_t *dst = out + (size_t)yy * n;

		for (size_t i = 0; i < n; i++)
			acc[i] = 1 << (VD_PRECISION_BITS - 1);
		for (int y = 0; y < count; y++) {
			const uint8_t *src = in + (size_t)(ymin + y) * n;
			int32_t kv = k[y];

			for (size_t i = 0; i < n; i++)
				acc[i] += src[i] * kv;
		}
		for (size_t i = 0; i < n; i++)
			dst[i] = vd_clip8(acc[i]);
	}
}

/* Pillow's ImagingResampleInner with the full image as box: a horizontal pass
 * over only the rows the vertical pass will read, then the vertical pass; a
 * pass whose size is unchanged is skipped. */
static vd_status vd_resample_conv(const uint8_t *in, int iw, int ih, uint8_t *out,
				  int ow, int oh, const struct vd_filter *f)
{
	struct vd_coeffs cv = { 0 }, ch = { 0 };
	uint8_t *tmp = NULL;
	int32_t *acc = NULL;
	int need_h = ow != iw, need_v = oh != ih;
	int row_first, row_last;
	vd_status st;

	st = vd_coeffs_build(ih, oh, f, &cv);
	if (st != VD_OK)
		return st;
	row_first = cv.bounds[0];
	row_last = cv.bounds[(size_t)oh * 2 - 2] + cv.bounds[(size_t)oh * 2 - 1];

	if (need_h) {
		st = vd_coeffs_build(iw, ow, f, &ch);
		if (st != VD_OK)
			goto out;
		if (!need_v) {
			/* Height unchanged: the rows read are all rows, straight to out. */
			vd_pass_horizontal(in, iw, 0, ih, out, ow, &ch);
			goto out;
		}
		tmp = malloc((size_t)ow * (size_t)(row_last - row_first) * 3);
		if (!tmp) {
			st = vd_errorf(VD_ERR_NOMEM, "resize: out of memory for a %dx%d buffer",
				       ow, row_last - row_first);
			goto out;
		}
		vd_pass_horizontal(in, iw, row_first, row_last - row_first, tmp, ow, &ch);
		for (int i = 0; i < oh; i++)
			cv.bounds[(size_t)i * 2] -= row_first;
		in = tmp;
	}
	acc = malloc((size_t)ow * 3 * sizeof(int32_t));
	if (!acc) {
		st = vd_errorf(VD_ERR_NOMEM, "resize: out of memory for a row of %d pixels", ow);
		goto out;
	}
	vd_pass_vertical(in, ow, out, oh, &cv, acc);

out:
	free(acc);
	free(tmp);
	vd_coeffs_free(&ch);
	vd_coeffs_free(&cv);
	return st;
}

/* Pillow's ImagingScaleAffine: source coordinate stepped in double from the
 * centre of the first output pixel; coordinates falling outside give black. */
static vd_status vd_resample_nearest(const uint8_t *in, int iw, int ih, uint8_t *out,
				     int ow, int oh)
{
	double ax = (double)(float)iw / ow, ay = (double)(float)ih / oh;
	double xo = ax * 0.5, yo = ay * 0.5;
	int *xin = malloc((size_t)ow * sizeof(int));

	if (!xin)
		return vd_errorf(VD_ERR_NOMEM, "resize: out of memory for %d columns", ow);
	for (int x = 0; x < ow; x++) {
		xin[x] = xo < 0.0 ? -1 : (int)xo;
		if (xin[x] >= iw)
			xin[x] = -1;
		xo += ax;
	}
	for (int y = 0; y < oh; y++) {
		int yi = yo < 0.0 ? -1 : (int)yo;
		uint8_t *dst = out + (size_t)y * ow * 3;

		if (yi < 0 || yi >= ih) {
			memset(dst, 0, (size_t)ow * 3);
		} else {
			const uint8_t *src = in + (size_t)yi * iw * 3;

			for (int x = 0; x < ow; x++) {
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

vd_status vd_resample_rgb(const uint8_t *in, int iw, int ih, uint8_t *out,
			  int ow, int oh, vd_resample filter)
{
	/* Pillow returns a copy when the size does not change, for every filter. */
	if (iw == ow && ih == oh) {
		memcpy(out, in, (size_t)iw * ih * 3);
		return VD_OK;
	}
	switch (filter) {
	case VD_RESAMPLE_NEAREST:
		return vd_resample_nearest(in, iw, ih, out, ow, oh);
	case VD_RESAMPLE_BILINEAR:
		return vd_resample_conv(in, iw, ih, out, ow, oh, &vd_filter_bilinear);
	case VD_RESAMPLE_BICUBIC:
		return vd_resample_conv(in, iw, ih, out, ow, oh, &vd_filter_bicubic);
	}
	return vd_errorf(VD_ERR_INVALID_ARG, "resize: unknown filter %d "
			 "(use NEAREST, BILINEAR or BICUBIC)", (int)filter);
}
