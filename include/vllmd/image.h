/* Images as the engine sees them: 8-bit interleaved RGB in host memory, and
 * the float pixel planes that image processors produce from them.
 * Implemented in core/io/image.c; plugins reach these through vd_host_api. */
#ifndef VLLMD_IMAGE_H
#define VLLMD_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include "vllmd/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* (height, width, 3) uint8, row-major, interleaved RGB. Owns data (free()). */
typedef struct vd_image {
	int width;
	int height;
	uint8_t *data;
} vd_image;

typedef enum vd_resample {
	VD_RESAMPLE_NEAREST = 0,  /* PIL.Image.NEAREST */
	VD_RESAMPLE_BILINEAR = 2, /* PIL.Image.BILINEAR, antialiased */
	VD_RESAMPLE_BICUBIC = 3,  /* PIL.Image.BICUBIC (a = -0.5), antialiased */
} vd_resample;

/* Decode an encoded image (JPEG, PNG, WebP, BMP, GIF; the first frame of
 * an animation) to RGB, as vLLM's media loader does with PIL: Image.open,
 * then convert_image_mode(image, "RGB"), so an image with transparency
 * (RGBA, LA, a palette or grey tRNS, a GIF's transparent index) is pasted
 * onto white; EXIF orientation is not applied. Equal to PIL pixel for pixel
 * (JPEG through libjpeg-turbo with PIL's settings, WebP through libwebp).
 * Images whose width*height exceeds max_pixels (0 = no cap) are refused from
 * the header, before any pixel is decoded. Other formats, truncated or
 * corrupt data: VD_ERR_FORMAT with a message that names the format but
 * never quotes the data. out->data is owned by out. */
vd_status vd_image_decode(const void *bytes, size_t len, int64_t max_pixels,
			  vd_image *out);
/* Read a file and decode it as above; errors name the path. */
vd_status vd_image_load(const char *path, int64_t max_pixels, vd_image *out);
/* Wrap a copy of packed RGB pixels (h, w, 3). */
vd_status vd_image_from_rgb(const uint8_t *rgb, int width, int height, vd_image *out);
/* Free out's pixels; safe on a zeroed image. */
void vd_image_free(vd_image *img);

/* Resize like Pillow's Image.resize(size, filter) on an RGB image (separable
 * convolution, support scaled when downsampling, 8-bit fixed-point rounding
 * as Pillow does). out is new and owned by the caller. */
vd_status vd_image_resize(const vd_image *in, int width, int height,
			  vd_resample filter, vd_image *out);
/* vd_image_resize to (width, height), then vd_image_crop of the rectangle
 * (left, top, crop_w, crop_h) with fill[3] outside the resized image, pixel
 * for pixel; only the pixels of the crop are computed, so memory and time
 * follow the crop and the input, never the resized size (a 1000000x1 image
 * resized to 336000000x336 and cropped to 336x336 costs a 336x336 image).
 * Scratch beyond out: the filter weights of the crop's columns and rows and
 * a few rows of the crop (core/io/resample.h). out is new. Errors as
 * vd_image_resize, and VD_ERR_LIMIT for NEAREST past 2^24 pixels a side. */
vd_status vd_image_resize_crop(const vd_image *in, int width, int height,
			       vd_resample filter, int left, int top, int crop_w,
			       int crop_h, const uint8_t fill[3], vd_image *out);
/* Crop the rectangle (left, top, width, height); parts outside the image are
 * filled with fill[3]. out is new. */
vd_status vd_image_crop(const vd_image *in, int left, int top, int width,
			int height, const uint8_t fill[3], vd_image *out);
/* Convert to (3, H, W) float planes: v = (px * rescale - mean[c]) / std[c].
 * out must hold 3*H*W floats. */
void vd_image_to_planes(const vd_image *img, float rescale, const float mean[3],
			const float std[3], float *out);

#ifdef __cplusplus
}
#endif
#endif
