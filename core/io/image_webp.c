/* WebP decoding through libwebp, as PIL's WebPImagePlugin reads it: the
 * animation decoder (libwebpdemux) for every file, still or animated, with
 * its default options (RGBA, no threads), and the first frame on a
 * transparent canvas; the mode is RGBA when the bitstream features say the
 * file has alpha, else RGB. RGBA is composited onto white as vLLM converts
 * it. The only module that includes libwebp. */
#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

#include "core/io/image_codec.h"

static const char *vd_webp_status(VP8StatusCode s)
{
	switch (s) {
	case VP8_STATUS_OK: return "ok";
	case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
	case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
	case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
	case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
	case VP8_STATUS_SUSPENDED: return "suspended";
	case VP8_STATUS_USER_ABORT: return "aborted";
	case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data (truncated?)";
	}
	return "unknown error";
}

vd_status vd_webp_size(const uint8_t *b, size_t len, uint32_t *w, uint32_t *h)
{
	WebPBitstreamFeatures f;
	VP8StatusCode s = WebPGetFeatures(b, len, &f);

	if (s != VP8_STATUS_OK)
		return vd_errorf(VD_ERR_FORMAT, "corrupt WebP: %s", vd_webp_status(s));
	*w = (uint32_t)f.width;
	*h = (uint32_t)f.height;
	return VD_OK;
}

vd_status vd_webp_decode(const uint8_t *b, size_t len, vd_image *out)
{
	WebPData data = { .bytes = b, .size = len };
	WebPAnimDecoderOptions opt;
	WebPBitstreamFeatures f;
	WebPAnimDecoder *dec;
	WebPAnimInfo info;
	uint8_t *frame, *px;
	VP8StatusCode s;
	size_t n;
	int ts;

	memset(out, 0, sizeof(*out));
	s = WebPGetFeatures(b, len, &f);
	if (s != VP8_STATUS_OK)
		return vd_errorf(VD_ERR_FORMAT, "corrupt WebP: %s", vd_webp_status(s));
	if (!WebPAnimDecoderOptionsInit(&opt))
		return vd_errorf(VD_ERR_BACKEND, "libwebp: decoder options version mismatch");
	opt.color_mode = MODE_RGBA;
	opt.use_threads = 0;
	dec = WebPAnimDecoderNew(&data, &opt);
	if (!dec)
		return vd_errorf(VD_ERR_FORMAT, "corrupt or truncated WebP: libwebp cannot "
				 "parse it");
	if (!WebPAnimDecoderGetInfo(dec, &info) || info.canvas_width == 0 ||
	    info.canvas_height == 0 || !WebPAnimDecoderGetNext(dec, &frame, &ts)) {
		WebPAnimDecoderDelete(dec);
		return vd_errorf(VD_ERR_FORMAT, "corrupt WebP: its first frame does not decode");
	}
	n = (size_t)info.canvas_width * info.canvas_height;
	px = malloc(n * 4);
	if (!px) {
		WebPAnimDecoderDelete(dec);
		return vd_errorf(VD_ERR_NOMEM, "out of memory for a %ux%u WebP image",
				 info.canvas_width, info.canvas_height);
	}
	memcpy(px, frame, n * 4);
	WebPAnimDecoderDelete(dec);
	if (f.has_alpha) {
		vd_rgba_onto_white(px, n);
	} else {
		for (size_t i = 0; i < n; i++)
			memmove(px + i * 3, px + i * 4, 3);
	}
	out->width = (int)info.canvas_width;
	out->height = (int)info.canvas_height;
	out->data = realloc(px, n * 3);
	if (!out->data)
		out->data = px;
	return VD_OK;
}
