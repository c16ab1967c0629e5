/* Pillow-compatible resampling of packed 8-bit RGB pixels, behind
 * vd_image_resize and vd_image_resize_crop. Internal to core/: callers go
 * through include/vllmd/image.h. Results are bit-exact with Pillow's
 * Image.resize(size, filter) (no box, no reducing_gap) for NEAREST, BILINEAR
 * and BICUBIC on RGB images, for any window of the resized image: only the
 * window's pixels are computed, from only the input rows and columns they
 * read, so memory and time follow the window, not the resized size. */
#ifndef VLLMD_CORE_RESAMPLE_H
#define VLLMD_CORE_RESAMPLE_H

#include <stdbool.h>
#include <stdint.h>
#include "vllmd/image.h"
#include "vllmd/status.h"

/* NEAREST steps its source coordinate one output pixel at a time, as
 * Pillow does (the rounding of that sum is the result), so a window far
 * from the origin costs a step per skipped pixel: resized sides beyond this
 * are refused for NEAREST (VD_ERR_LIMIT). */
#define VD_RESAMPLE_NEAREST_MAX_SIDE (1 << 24)

/* The window (x0, y0, cw, ch) of in (ih, iw, 3) resized to (oh, ow), into
 * out (ch, cw, 3). Both borrowed; out must hold cw*ch*3 bytes and must not
 * overlap in. Sizes > 0 and the window inside (0, 0, ow, oh) (checked by the
 * caller). Scratch memory: the filter weights of the window's columns and
 * rows ((cw + ch) * taps int32, taps about 4 * input/output + 1 when
 * shrinking, 5 when growing) and one filter's height of window rows
 * (taps * cw * 3 bytes). Returns VD_ERR_NOMEM when scratch memory cannot be
 * had, VD_ERR_INVALID_ARG for an unknown filter, VD_ERR_LIMIT as above. */
vd_status vd_resample_rgb_window(const uint8_t *in, int iw, int ih, int ow, int oh,
				 int x0, int y0, int cw, int ch, vd_resample filter,
				 uint8_t *out);

/* The whole image: vd_resample_rgb_window with the window (0, 0, ow, oh). */
vd_status vd_resample_rgb(const uint8_t *in, int iw, int ih, uint8_t *out,
			  int ow, int oh, vd_resample filter);

/* Whether the AVX2 kernels are used (true by default where the CPU has
 * AVX2). Tests turn them off to check the plain C kernels against Pillow
 * too; both give the same bytes. Not thread-safe: call before resampling. */
void vd_resample_use_simd(bool on);
bool vd_resample_simd_active(void);

#endif
