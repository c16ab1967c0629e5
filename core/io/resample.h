/* Pillow-compatible resampling of packed 8-bit RGB pixels, behind
 * vd_image_resize. Internal to core/: callers go through include/vllmd/image.h.
 * Results are bit-exact with Pillow's Image.resize(size, filter) (no box, no
 * reducing_gap) for NEAREST, BILINEAR and BICUBIC on RGB images. */
#ifndef VLLMD_CORE_RESAMPLE_H
#define VLLMD_CORE_RESAMPLE_H

#include <stdint.h>
#include "vllmd/image.h"
#include "vllmd/status.h"

/* Resample in (ih, iw, 3) into out (oh, ow, 3); both borrowed, out must hold
 * ow*oh*3 bytes and must not overlap in. All sizes > 0 (checked by the
 * caller). Returns VD_ERR_NOMEM when scratch memory cannot be had,
 * VD_ERR_INVALID_ARG for an unknown filter. */
vd_status vd_resample_rgb(const uint8_t *in, int iw, int ih, uint8_t *out,
			  int ow, int oh, vd_resample filter);

#endif
