/* The decoders behind vd_image_decode (core/image.c), one per library, and
 * the mode conversion they share. Internal to core/. Each decoder returns
 * what PIL's Image.open(bytes) followed by vLLM's conversion to RGB gives:
 * packed RGB, images with an alpha channel composited onto white. The
 * caller has checked the size from the header against the pixel cap. */
#ifndef VLLMD_CORE_IMAGE_CODEC_H
#define VLLMD_CORE_IMAGE_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include "vllmd/image.h"
#include "vllmd/status.h"

/* JPEG through libjpeg-turbo with PIL's settings (core/image_jpeg.c):
 * greyscale, YCbCr/RGB and CMYK/YCCK (Adobe-inverted, as PIL reads every
 * 4-channel JPEG) files; EXIF orientation is not applied. Corrupt data:
 * VD_ERR_FORMAT naming libjpeg's reason. out->data is owned by out. */
vd_status vd_jpeg_decode(const uint8_t *b, size_t len, vd_image *out);

/* Width and height of a WebP file (the canvas of an animated one). */
vd_status vd_webp_size(const uint8_t *b, size_t len, uint32_t *w, uint32_t *h);
/* The first frame of a WebP through libwebp's animation decoder, as PIL's
 * WebPImagePlugin reads it; a file with alpha is composited onto white. */
vd_status vd_webp_decode(const uint8_t *b, size_t len, vd_image *out);

/* (n, 4) RGBA to (n, 3) RGB in place, composited onto white as vLLM's
 * rgba_to_rgb does (PIL's paste with the alpha as mask):
 * c' = (255 * (255 - a) + c * a) / 255, rounded as PIL's DIV255. */
void vd_rgba_onto_white(uint8_t *px, size_t n);

#endif
