/* The inner loops of core/resample.c: one output row of the horizontal pass
 * and one of the vertical pass, in plain C (resample.c, the reference) and
 * with AVX2 (resample_avx2.c, used when the CPU has it). Both compute
 * Pillow's integer sums exactly, so they give the same bytes. Internal. */
#ifndef VLLMD_CORE_RESAMPLE_KERNELS_H
#define VLLMD_CORE_RESAMPLE_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 8 bits of result, 2 bits of headroom for the negative lobes and overshoot
 * of the cubic, 32-bit accumulator: 32 - 8 - 2. */
#define VD_PRECISION_BITS (32 - 8 - 2)

/* The fixed-point weights of one pass over a window of n outputs: output i
 * reads bounds[2i+1] inputs from bounds[2i], with weights k[i*ksize ...]. */
typedef struct vd_weights {
	int n;
	int ksize;
	int *bounds;   /* (n, 2) */
	int32_t *k;    /* (n, ksize) */
	/* AVX2 layout of k (resample_avx2.c), or NULL: per output, groups of
	 * four taps, each as two vectors of 16 int16 (low and high 16 bits of
	 * the weights, duplicated per channel). */
	int groups;    /* ceil(ksize / 4) */
	int16_t *k16;  /* (n, groups, 2, 16) */
} vd_weights;

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

/* One row of the horizontal pass: dst (w->n, 3) from src, a row of RGB
 * pixels. The AVX2 kernel reads up to 13 bytes past the last pixel a
 * weight touches: src must stay readable that far. */
void vd_hrow_c(const uint8_t *src, uint8_t *dst, const vd_weights *w);

/* One row of the vertical pass: dst[i] = clip8(sum_t rows[t][i] * k[t]) for
 * i < n, using acc (n int32) as scratch. */
void vd_vrow_c(const uint8_t *const *rows, const int32_t *k, int taps, size_t n,
	       int32_t *acc, uint8_t *dst);

#if defined(__x86_64__) && defined(__GNUC__)
#define VD_RESAMPLE_HAVE_AVX2 1
bool vd_resample_cpu_avx2(void);
/* Fill w->groups and w->k16 (malloc'ed; freed by the caller). VD_ERR_NOMEM
 * as false. */
bool vd_weights_pack_avx2(vd_weights *w);
void vd_hrow_avx2(const uint8_t *src, uint8_t *dst, const vd_weights *w);
void vd_vrow_avx2(const uint8_t *const *rows, const int32_t *k, int taps, size_t n,
		  int32_t *acc, uint8_t *dst);
#else
#define VD_RESAMPLE_HAVE_AVX2 0
static inline bool vd_resample_cpu_avx2(void) { return false; }
static inline bool vd_weights_pack_avx2(vd_weights *w) { (void)w; return false; }
static inline void vd_hrow_avx2(const uint8_t *src, uint8_t *dst, const vd_weights *w)
{
	vd_hrow_c(src, dst, w);
}
static inline void vd_vrow_avx2(const uint8_t *const *rows, const int32_t *k, int taps,
				size_t n, int32_t *acc, uint8_t *dst)
{
	vd_vrow_c(rows, k, taps, n, acc, dst);
}
#endif

#endif
