/* JPEG decoding through libjpeg-turbo, the library PIL uses, with PIL's
 * settings (Pillow's JpegImagePlugin.py and libImaging/JpegDecode.c): the
 * mode comes from the frame's component count (1 L, 3 RGB, 4 CMYK); libjpeg
 * guesses the stored colour space (JFIF, Adobe transform, component ids);
 * out_color_space is the mode; the DCT method and fancy upsampling are
 * libjpeg's defaults (ISLOW, on), since PIL sets neither unless draft() is
 * called, which Image.open does not. CMYK is read Adobe-inverted ("CMYK;I")
 * and converted as PIL's cmyk2rgb. Warnings (corrupt entropy data) are
 * ignored as PIL ignores them; errors end the decode. The only module that
 * includes libjpeg. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "core/io/image_codec.h"

struct vd_jpeg_err {
	struct jpeg_error_mgr pub;
	jmp_buf jump;
	char why[JMSG_LENGTH_MAX];
};

/* Decoder state that must survive a longjmp out of libjpeg. */
struct vd_jpeg {
	struct jpeg_decompress_struct cinfo;
	struct vd_jpeg_err err;
	int comps, w, h;
	bool nomem;
	uint8_t *px;    /* (h, w, 3) result */
	uint8_t *row;   /* one scanline of the decoder's output */
};

static void vd_jpeg_error_exit(j_common_ptr cinfo)
{
	struct vd_jpeg_err *e = (struct vd_jpeg_err *)cinfo->err;

	(*cinfo->err->format_message)(cinfo, e->why);
	longjmp(e->jump, 1);
}

static void vd_jpeg_no_output(j_common_ptr cinfo)
{
	(void)cinfo;
}

/* PIL's MULDIV255: a * b / 255 rounded, in integers. */
static inline int vd_muldiv255(int a, int b)
{
	int t = a * b + 128;

	return ((t >> 8) + t) >> 8;
}

/* One CMYK;I scanline to RGB: PIL inverts the stored values (Adobe
 * convention), c = 255 - stored, then cmyk2rgb: with nk = 255 - k,
 * c' = nk - c * nk / 255. */
static void vd_cmyk_row(const uint8_t *in, uint8_t *out, int w)
{
	for (int x = 0; x < w; x++, in += 4, out += 3) {
		int nk = in[3]; /* 255 - (255 - stored k) */

		for (int c = 0; c < 3; c++) {
			int v = nk - vd_muldiv255(255 - in[c], nk);

			out[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
		}
	}
}

/* The libjpeg part of the decode: every value it sets lives in *j, so
 * nothing is lost to the longjmp of an error. False on an error, with
 * j->err.why set; j->px holds the pixels on success. */
static bool vd_jpeg_run(struct vd_jpeg *j, const uint8_t *b, size_t len)
{
	struct jpeg_decompress_struct *ci = &j->cinfo;

	if (setjmp(j->err.jump))
		return false;
	jpeg_create_decompress(ci);
	jpeg_mem_src(ci, b, (unsigned long)len);
	/* As PIL: tables-only datastreams before the image are skipped (a few:
	 * at the end of the data libjpeg would report tables forever). */
	for (int i = 0; jpeg_read_header(ci, FALSE) == JPEG_HEADER_TABLES_ONLY; i++) {
		if (i == 8) {
			snprintf(j->err.why, sizeof(j->err.why), "no image after %d tables-only "
				 "datastreams", i + 1);
			return false;
		}
	}
	j->comps = ci->num_components;
	if (j->comps != 1 && j->comps != 3 && j->comps != 4) {
		snprintf(j->err.why, sizeof(j->err.why), "%d colour components (PIL reads "
			 "1, 3 or 4)", j->comps);
		return false;
	}
	ci->out_color_space = j->comps == 1 ? JCS_GRAYSCALE : j->comps == 3 ? JCS_RGB : JCS_CMYK;
	jpeg_start_decompress(ci);
	j->w = (int)ci->output_width;
	j->h = (int)ci->output_height;
	j->px = malloc((size_t)j->w * (size_t)j->h * 3);
	j->row = malloc((size_t)j->w * (size_t)j->comps);
	if (!j->px || !j->row) {
		j->nomem = true;
		return false;
	}
	while (ci->output_scanline < ci->output_height) {
		uint8_t *dst = j->px + (size_t)ci->output_scanline * j->w * 3;
		JSAMPROW rows[1] = { j->comps == 3 ? dst : j->row };

		jpeg_read_scanlines(ci, rows, 1);
		if (j->comps == 1)
			for (int x = 0; x < j->w; x++)
				memset(dst + (size_t)x * 3, j->row[x], 3);
		else if (j->comps == 4)
			vd_cmyk_row(j->row, dst, j->w);
	}
	jpeg_finish_decompress(ci);
	return true;
}

vd_status vd_jpeg_decode(const uint8_t *b, size_t len, vd_image *out)
{
	struct vd_jpeg *j = calloc(1, sizeof(*j));
	vd_status st = VD_OK;

	memset(out, 0, sizeof(*out));
	if (!j)
		return vd_errorf(VD_ERR_NOMEM, "out of memory decoding a JPEG image");
	j->cinfo.err = jpeg_std_error(&j->err.pub);
	j->err.pub.error_exit = vd_jpeg_error_exit;
	j->err.pub.output_message = vd_jpeg_no_output;
	if (vd_jpeg_run(j, b, len)) {
		out->width = j->w;
		out->height = j->h;
		out->data = j->px;
		j->px = NULL;
	} else if (j->nomem || strstr(j->err.why, "Insufficient memory")) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory decoding a %dx%d JPEG image",
			       j->w, j->h);
	} else {
		st = vd_errorf(VD_ERR_FORMAT, "corrupt or unsupported JPEG image: %s",
			       j->err.why);
	}
	jpeg_destroy_decompress(&j->cinfo);
	free(j->row);
	free(j->px);
	free(j);
	return st;
}
