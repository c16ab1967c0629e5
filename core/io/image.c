/* Image I/O and pixel helpers (include/vllmd/image.h): decode JPEG/PNG/BMP/
 * GIF/WebP to packed RGB as vLLM's media loader does (PIL's Image.open, then
 * convert_image_mode to RGB: images with transparency composited onto
 * white), Pillow-exact resizing (core/io/resample.c), crop with fill, and
 * float planes. JPEG and WebP go through libjpeg-turbo and libwebp
 * (core/io/image_jpeg.c, core/io/image_webp.c), the libraries PIL uses; PNG,
 * BMP and GIF through stb_image (core/io/stb_image_impl.c), with PIL's modes
 * applied here. Invariant: a decoded vd_image is fully present: truncated
 * files and images over the pixel cap are refused before any pixel is
 * decoded, since stb fills missing data silently. Messages never quote the
 * bytes: they may come from a fetched URL. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STBI_NO_STDIO
#include <stb/stb_image.h>

#include "core/io/image_codec.h"
#include "core/io/resample.h"
#include "vllmd/image.h"

#define VD_IMAGE_FORMATS "JPEG, PNG, WebP, BMP and GIF"
/* stb_image's STBI_MAX_DIMENSIONS default: it refuses larger sides. */
#define VD_MAX_SIDE (1u << 24)

enum vd_image_format {
	VD_FORMAT_UNKNOWN,
	VD_FORMAT_JPEG,
	VD_FORMAT_PNG,
	VD_FORMAT_BMP,
	VD_FORMAT_GIF,
	VD_FORMAT_WEBP,
};

static const char *const vd_format_names[] = {
	[VD_FORMAT_UNKNOWN] = "unknown",
	[VD_FORMAT_JPEG] = "JPEG",
	[VD_FORMAT_PNG] = "PNG",
	[VD_FORMAT_BMP] = "BMP",
	[VD_FORMAT_GIF] = "GIF",
	[VD_FORMAT_WEBP] = "WebP",
};

/* The first frame of a GIF as PIL sees it, for what stb does differently. */
struct vd_gif_frame {
	int x, y, w, h;            /* rectangle inside the logical screen */
	const uint8_t *palette;    /* (entries, 3) RGB: local table, else global */
	int entries;
	int transparent;           /* palette index, or -1 */
};

static uint32_t vd_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t vd_le32(const uint8_t *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static unsigned vd_le16(const uint8_t *p)
{
	return (unsigned)p[1] << 8 | p[0];
}

static bool vd_has_prefix(const uint8_t *b, size_t len, const void *magic, size_t n)
{
	return len >= n && memcmp(b, magic, n) == 0;
}

static enum vd_image_format vd_detect(const uint8_t *b, size_t len)
{
	if (vd_has_prefix(b, len, "\xff\xd8\xff", 3))
		return VD_FORMAT_JPEG;
	if (vd_has_prefix(b, len, "\x89PNG\r\n\x1a\n", 8))
		return VD_FORMAT_PNG;
	if (vd_has_prefix(b, len, "GIF87a", 6) || vd_has_prefix(b, len, "GIF89a", 6))
		return VD_FORMAT_GIF;
	if (vd_has_prefix(b, len, "BM", 2))
		return VD_FORMAT_BMP;
	if (len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
		return VD_FORMAT_WEBP;
	return VD_FORMAT_UNKNOWN;
}

/* Name a format we do not decode, so that the error tells the user what they
 * sent; NULL when the bytes match nothing we know. */
static const char *vd_unsupported_name(const uint8_t *b, size_t len)
{
	static const struct {
		size_t off, n;
		const char *magic, *name;
	} known[] = {
		{ 0, 4, "II*\0", "TIFF" },
		{ 0, 4, "MM\0*", "TIFF" },
		{ 0, 4, "II+\0", "BigTIFF" },
		{ 0, 12, "\0\0\0\x0cjP  \r\n\x87\n", "JPEG 2000" },
		{ 0, 4, "\xff\x4f\xff\x51", "JPEG 2000 codestream" },
		{ 0, 2, "\xff\x0a", "JPEG XL" },
		{ 0, 12, "\0\0\0\x0cJXL \r\n\x87\n", "JPEG XL" },
		{ 0, 4, "8BPS", "Photoshop PSD" },
		{ 0, 4, "qoif", "QOI" },
		{ 0, 4, "\0\0\1\0", "ICO" },
		{ 0, 4, "%PDF", "PDF" },
		{ 0, 4, "\x76\x2f\x31\x01", "OpenEXR" },
		{ 0, 10, "#?RADIANCE", "Radiance HDR" },
		{ 0, 4, "<svg", "SVG" },
		{ 0, 5, "<?xml", "XML (SVG?)" },
		{ 0, 9, "<!DOCTYPE", "HTML (an error page instead of the image?)" },
		{ 0, 5, "<html", "HTML (an error page instead of the image?)" },
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (len >= known[i].off + known[i].n &&
		    memcmp(b + known[i].off, known[i].magic, known[i].n) == 0)
			return known[i].name;
	if (len >= 12 && memcmp(b + 4, "ftyp", 4) == 0) {
		if (memcmp(b + 8, "avif", 4) == 0 || memcmp(b + 8, "avis", 4) == 0)
			return "AVIF";
		if (memcmp(b + 8, "hei", 3) == 0 || memcmp(b + 8, "mif1", 4) == 0 ||
		    memcmp(b + 8, "msf1", 4) == 0 || memcmp(b + 8, "hev", 3) == 0)
			return "HEIF/HEIC";
		return "ISO media (MP4/MOV/HEIF family)";
	}
	return NULL;
}

/* What the bytes are, without quoting them (they may be a fetched page). */
static vd_status vd_format_error(const uint8_t *b, size_t len)
{
	const char *name = vd_unsupported_name(b, len);
	size_t i, n = len < 64 ? len : 64;

	if (name)
		return vd_errorf(VD_ERR_FORMAT, "unsupported image format %s: vllmd decodes "
				 VD_IMAGE_FORMATS "; convert the image first", name);
	for (i = 0; i < n; i++)
		if (!(b[i] == '\t' || b[i] == '\n' || b[i] == '\r' || (b[i] >= 0x20 && b[i] < 0x7f)))
			break;
	if (i == n)
		return vd_errorf(VD_ERR_FORMAT, "not an image: the data is text (%zu bytes); "
				 "expected " VD_IMAGE_FORMATS " bytes", len);
	return vd_errorf(VD_ERR_FORMAT, "unrecognised image format (%zu bytes); vllmd "
			 "decodes " VD_IMAGE_FORMATS, len);
}

/* A PNG is complete when its chunks chain, each fully present, up to IEND. */
static vd_status vd_check_png(const uint8_t *b, size_t len)
{
	size_t p = 8;

	while (len - p >= 8) {
		uint32_t n = vd_be32(b + p);

		if (n > 0x7fffffffu)
			return vd_errorf(VD_ERR_FORMAT, "corrupt PNG: chunk at byte %zu "
					 "declares %u bytes", p, n);
		if (len - p - 8 < (size_t)n + 4)
			return vd_errorf(VD_ERR_FORMAT, "truncated PNG: the data ends inside "
					 "the chunk at byte %zu (%u bytes)", p, n);
		if (memcmp(b + p + 4, "IEND", 4) == 0)
			return VD_OK;
		p += 12 + (size_t)n;
	}
	return vd_errorf(VD_ERR_FORMAT, "truncated PNG: the data ends after %zu bytes "
			 "without an IEND chunk", len);
}

/* Offset of the marker that ends the entropy-coded data starting at p (len
 * if none): FF 00 is a stuffed byte, FF D0-D7 a restart, FF FF fill. */
static size_t vd_jpeg_skip_scan(const uint8_t *b, size_t len, size_t p)
{
	while (p + 1 < len) {
		uint8_t n = b[p + 1];

		if (b[p] != 0xff || n == 0xff)
			p++;
		else if (n == 0x00 || (n >= 0xd0 && n <= 0xd7))
			p += 2;
		else
			return p;
	}
	return len;
}

enum vd_jpeg_step { VD_JPEG_END, VD_JPEG_MARKER, VD_JPEG_BAD };

/* Step over the JPEG marker at *p, its fill bytes and its segment: *m is the
 * marker, *seg the offset of its segment (length bytes first). Segments are
 * skipped by their length, so the FFD9 of an EXIF thumbnail inside APP1 is
 * never seen. END: the data ran out; BAD: no marker at *p, or a bad length. */
static enum vd_jpeg_step vd_jpeg_marker(const uint8_t *b, size_t len, size_t *p,
					unsigned *m, size_t *seg)
{
	size_t n;

	if (*p >= len)
		return VD_JPEG_END;
	if (b[*p] != 0xff)
		return VD_JPEG_BAD;
	while (*p < len && b[*p] == 0xff)
		(*p)++;
	if (*p == len)
		return VD_JPEG_END;
	*m = b[(*p)++];
	*seg = *p;
	if (*m == 0xd9 || (*m >= 0xd0 && *m <= 0xd7) || *m == 0x01)
		return VD_JPEG_MARKER; /* markers without a segment */
	if (len - *p < 2)
		return VD_JPEG_END;
	n = (size_t)b[*p] << 8 | b[*p + 1];
	if (n < 2)
		return VD_JPEG_BAD;
	if (len - *p < n)
		return VD_JPEG_END;
	*p += n;
	return VD_JPEG_MARKER;
}

/* A JPEG is complete when its markers chain to EOI (FFD9) after the scans
 * (libjpeg would fill a missing end with grey, with only a warning). */
static vd_status vd_check_jpeg(const uint8_t *b, size_t len)
{
	size_t p = 2, seg;
	unsigned m;

	for (;;) {
		enum vd_jpeg_step r = vd_jpeg_marker(b, len, &p, &m, &seg);

		if (r == VD_JPEG_END)
			return vd_errorf(VD_ERR_FORMAT, "truncated JPEG: the data ends after "
					 "%zu bytes without the end-of-image marker (FFD9)", len);
		if (r == VD_JPEG_BAD)
			return vd_errorf(VD_ERR_FORMAT, "corrupt JPEG: bad marker or segment "
					 "at byte %zu", p);
		if (m == 0xd9)
			return VD_OK;
		if (m == 0xda) /* start of scan: entropy-coded data follows */
			p = vd_jpeg_skip_scan(b, len, p);
	}
}

/* Size from the frame header (SOFn), which precedes the first scan. */
static vd_status vd_jpeg_size(const uint8_t *b, size_t len, uint32_t *w, uint32_t *h)
{
	size_t p = 2, seg;
	unsigned m;

	for (;;) {
		enum vd_jpeg_step r = vd_jpeg_marker(b, len, &p, &m, &seg);

		if (r == VD_JPEG_END)
			return vd_errorf(VD_ERR_FORMAT, "truncated JPEG: the data ends after "
					 "%zu bytes, before the frame header", len);
		if (r == VD_JPEG_BAD)
			return vd_errorf(VD_ERR_FORMAT, "corrupt JPEG: bad marker or segment "
					 "at byte %zu", p);
		/* C4 (DHT), C8 (reserved) and CC (DAC) share the SOFn range. */
		if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
			if (p - seg < 8)
				return vd_errorf(VD_ERR_FORMAT, "corrupt JPEG: short frame "
						 "header at byte %zu", seg);
			*h = (uint32_t)b[seg + 3] << 8 | b[seg + 4];
			*w = (uint32_t)b[seg + 5] << 8 | b[seg + 6];
			return VD_OK;
		}
		if (m == 0xda || m == 0xd9)
			return vd_errorf(VD_ERR_FORMAT, "corrupt JPEG: no frame header "
					 "before byte %zu", seg);
	}
}

struct vd_bmp_header {
	uint64_t w, h;   /* absolute sizes: negative height means top-down rows */
	uint64_t bpp;
	uint64_t start;  /* first byte of pixel rows, at least past the headers */
	uint32_t comp;   /* 0 BI_RGB, 3 BI_BITFIELDS, 6 BI_ALPHABITFIELDS, else RLE/JPEG/PNG */
};

static vd_status vd_bmp_parse(const uint8_t *b, size_t len, struct vd_bmp_header *hd)
{
	uint32_t hsz;

	if (len < 26)
		goto truncated;
	hsz = vd_le32(b + 14);
	hd->comp = 0;
	if (hsz == 12) { /* OS/2 1.x core header: unsigned 16-bit sizes */
		hd->w = vd_le16(b + 18);
		hd->h = vd_le16(b + 20);
		hd->bpp = vd_le16(b + 24);
	} else {
		if (len < 34)
			goto truncated;
		hd->w = (uint64_t)llabs((long long)(int32_t)vd_le32(b + 18));
		hd->h = (uint64_t)llabs((long long)(int32_t)vd_le32(b + 22));
		hd->bpp = vd_le16(b + 28);
		hd->comp = vd_le32(b + 30);
	}
	hd->start = vd_le32(b + 10);
	if (hd->start < 14 + (uint64_t)hsz)
		hd->start = 14 + (uint64_t)hsz;
	return VD_OK;

truncated:
	return vd_errorf(VD_ERR_FORMAT, "truncated BMP: %zu bytes is less than its "
			 "header", len);
}

/* Uncompressed BMP pixel rows must all be present: stb would read zeros past
 * the end. Compressed kinds are left to stb, which refuses them. */
static vd_status vd_check_bmp(const uint8_t *b, size_t len)
{
	struct vd_bmp_header hd;
	uint64_t stride;
	vd_status st = vd_bmp_parse(b, len, &hd);

	if (st != VD_OK)
		return st;
	if (hd.comp != 0 && hd.comp != 3 && hd.comp != 6)
		return VD_OK;
	/* Sizes are at most 2^24 here (checked before), so nothing overflows. */
	stride = (hd.bpp * hd.w + 31) / 32 * 4;
	if (hd.start + stride * hd.h > len)
		return vd_errorf(VD_ERR_FORMAT, "truncated BMP: %llux%llu pixels at %llu "
				 "bits need %llu bytes, the data has %zu",
				 (unsigned long long)hd.w, (unsigned long long)hd.h,
				 (unsigned long long)hd.bpp,
				 (unsigned long long)(hd.start + stride * hd.h), len);
	return VD_OK;
}

/* Skip GIF data sub-blocks at *p up to and past their 0 terminator. */
static bool vd_gif_skip_blocks(const uint8_t *b, size_t len, size_t *p)
{
	while (*p < len) {
		size_t n = b[(*p)++];

		if (n == 0)
			return true;
		if (len - *p < n)
			return false;
		*p += n;
	}
	return false;
}

/* Walk a GIF to the end of its first image (all of its data blocks present)
 * and describe that frame as PIL reads it: the transparency index is the
 * one a graphic control extension sets before the image. */
static vd_status vd_scan_gif(const uint8_t *b, size_t len, struct vd_gif_frame *f)
{
	const uint8_t *global = NULL;
	int global_entries = 0;
	size_t p = 13;

	memset(f, 0, sizeof(*f));
	f->transparent = -1;
	if (len < 13)
		goto truncated;
	if (b[10] & 0x80) {
		global_entries = 2 << (b[10] & 7);
		global = b + p;
		if (len - p < (size_t)global_entries * 3)
			goto truncated;
		p += (size_t)global_entries * 3;
	}
	while (p < len) {
		unsigned tag = b[p++];

		if (tag == 0x21) { /* extension: label, then sub-blocks */
			if (p == len)
				goto truncated;
			if (b[p] == 0xf9 && len - p >= 6 && b[p + 1] >= 4 && (b[p + 2] & 1))
				f->transparent = b[p + 5];
			p++;
			if (!vd_gif_skip_blocks(b, len, &p))
				goto truncated;
		} else if (tag == 0x2c) { /* image descriptor */
			unsigned flags;

			if (len - p < 9)
				goto truncated;
			f->x = (int)vd_le16(b + p);
			f->y = (int)vd_le16(b + p + 2);
			f->w = (int)vd_le16(b + p + 4);
			f->h = (int)vd_le16(b + p + 6);
			flags = b[p + 8];
			p += 9;
			f->palette = global;
			f->entries = global_entries;
			if (flags & 0x80) {
				f->entries = 2 << (flags & 7);
				f->palette = b + p;
				if (len - p < (size_t)f->entries * 3)
					goto truncated;
				p += (size_t)f->entries * 3;
			}
			if (p == len) /* LZW minimum code size */
				goto truncated;
			p++;
			if (!vd_gif_skip_blocks(b, len, &p))
				goto truncated;
			return VD_OK;
		} else if (tag == 0x3b) {
			return vd_errorf(VD_ERR_FORMAT, "corrupt GIF: the file ends before "
					 "any image");
		} else {
			return vd_errorf(VD_ERR_FORMAT, "corrupt GIF: unknown block 0x%02x "
					 "at byte %zu", tag, p - 1);
		}
	}
truncated:
	return vd_errorf(VD_ERR_FORMAT, "truncated GIF: the data ends after %zu bytes, "
			 "inside the first image", len);
}

static void vd_gif_color(const struct vd_gif_frame *f, int idx, uint8_t rgb[3])
{
	if (idx >= 0 && idx < f->entries)
		memcpy(rgb, f->palette + 3 * idx, 3);
	else
		memset(rgb, 0, 3);
}

void vd_rgba_onto_white(uint8_t *px, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t *src = px + i * 4;
		int a = src[3], v[3];

		for (int c = 0; c < 3; c++) {
			/* PIL's BLEND(mask, out, in): DIV255(out * (255 - a) + in * a) */
			int t = 255 * (255 - a) + src[c] * a + 128;

			v[c] = ((t >> 8) + t) >> 8;
		}
		/* dst <= src: never overruns unread input */
		for (int c = 0; c < 3; c++)
			px[i * 3 + c] = (uint8_t)v[c];
	}
}

/* stb's first frame (h, w, 4) to RGB in place, as PIL opens it (mode P, or
 * L for a grey-ramp palette) and vLLM converts it: pixels outside the frame
 * rectangle hold the transparency index, or index 0 when there is none (stb
 * paints a background colour instead); with a transparency index the image
 * is composited onto white, so those pixels and the transparent ones are
 * white, and without one every pixel is its palette colour. */
static void vd_gif_to_rgb(uint8_t *px, int w, int h, const struct vd_gif_frame *f)
{
	static const uint8_t white[3] = { 255, 255, 255 };
	uint8_t outside[3];

	if (f->transparent >= 0)
		memcpy(outside, white, 3);
	else
		vd_gif_color(f, 0, outside);
	for (int y = 0; y < h; y++) {
		bool row_in = y >= f->y && y < f->y + f->h;

		for (int x = 0; x < w; x++) {
			size_t i = (size_t)y * w + x;
			const uint8_t *src = px + i * 4;
			uint8_t *dst = px + i * 3; /* dst <= src: never overruns unread input */

			if (!row_in || x < f->x || x >= f->x + f->w)
				memcpy(dst, outside, 3);
			else if (src[3] == 0)
				memcpy(dst, white, 3);
			else
				memmove(dst, src, 3);
		}
	}
}

/* Width and height as the header declares them, read without stb (whose
 * stbi_info reports no reason when a header is bad). */
static vd_status vd_header_size(enum vd_image_format fmt, const uint8_t *b, size_t len,
				uint32_t *w, uint32_t *h)
{
	struct vd_bmp_header bmp;
	vd_status st;

	switch (fmt) {
	case VD_FORMAT_PNG:
		if (len < 29)
			return vd_errorf(VD_ERR_FORMAT, "truncated PNG: %zu bytes is less "
					 "than its header", len);
		if (memcmp(b + 12, "IHDR", 4) != 0)
			return vd_errorf(VD_ERR_FORMAT, "corrupt PNG: the first chunk is "
					 "not IHDR");
		*w = vd_be32(b + 16);
		*h = vd_be32(b + 20);
		return VD_OK;
	case VD_FORMAT_GIF:
		if (len < 10)
			return vd_errorf(VD_ERR_FORMAT, "truncated GIF: %zu bytes is less "
					 "than its header", len);
		*w = vd_le16(b + 6);
		*h = vd_le16(b + 8);
		return VD_OK;
	case VD_FORMAT_BMP:
		st = vd_bmp_parse(b, len, &bmp);
		if (st != VD_OK)
			return st;
		/* Values from |int32|, at most 2^31: they fit. */
		*w = (uint32_t)bmp.w;
		*h = (uint32_t)bmp.h;
		return VD_OK;
	case VD_FORMAT_JPEG:
		return vd_jpeg_size(b, len, w, h);
	case VD_FORMAT_WEBP:
		return vd_webp_size(b, len, w, h);
	case VD_FORMAT_UNKNOWN:
		break;
	}
	return vd_errorf(VD_ERR_INTERNAL, "image decode: no header reader for format %d",
			 (int)fmt);
}

/* The status for a NULL from stb: its reason is set on every failure. */
static vd_status vd_stb_error(const char *name)
{
	const char *why = stbi_failure_reason();

	if (!why || strcmp(why, "outofmem") == 0)
		return vd_errorf(VD_ERR_NOMEM, "out of memory decoding a %s image", name);
	return vd_errorf(VD_ERR_FORMAT, "corrupt %s image: %s", name, why);
}

/* stb's pixels with comp channels (len checked <= INT_MAX by the caller). */
static vd_status vd_stb_load(const uint8_t *b, size_t len, int comp, const char *name,
			     vd_image *out)
{
	int w, h, n;

	out->data = stbi_load_from_memory(b, (int)len, &w, &h, &n, comp);
	if (!out->data)
		return vd_stb_error(name);
	out->width = w;
	out->height = h;
	return VD_OK;
}

/* The PNG facts PIL's mode depends on: IHDR depth and colour type, and
 * whether a tRNS chunk comes before the image data (its first 16-bit
 * value is a greyscale image's transparent level). The chunks were checked
 * complete by vd_check_png. */
struct vd_png_mode {
	int depth, ctype;
	bool trns;
	unsigned trns_grey;
};

static void vd_png_mode(const uint8_t *b, size_t len, struct vd_png_mode *m)
{
	size_t p = 8;

	m->depth = b[24];
	m->ctype = b[25];
	m->trns = false;
	m->trns_grey = 0;
	while (len - p >= 12) {
		uint32_t n = vd_be32(b + p);

		if (memcmp(b + p + 4, "IDAT", 4) == 0 || memcmp(b + p + 4, "IEND", 4) == 0)
			return;
		if (memcmp(b + p + 4, "tRNS", 4) == 0) {
			m->trns = true;
			if (n >= 2)
				m->trns_grey = (unsigned)b[p + 8] << 8 | b[p + 9];
			return;
		}
		p += 12 + (size_t)n;
	}
}

/* A PNG as PIL opens it and vLLM converts it to RGB:
 *   grey (1, 2, 4, 8 bits: mode 1 or L; 16 bits: mode I, saturated at 255)
 *     with a tRNS level: PIL's convert_transparent makes the pixels whose
 *     8-bit value equals the level's low byte transparent (for depths below
 *     8 and for 16 bits that compares a scaled or saturated pixel with the
 *     raw level, as PIL does), and they become white;
 *   RGB (a tRNS colour is ignored: the mode is already RGB): as stored,
 *     16 bits by their high byte;
 *   palette: its colours, with tRNS alphas composited onto white;
 *   grey+alpha, RGBA (16 bits by the high byte): composited onto white. */
static vd_status vd_png_decode(const uint8_t *b, size_t len, vd_image *out)
{
	struct vd_png_mode m;
	vd_status st;
	size_t n;

	vd_png_mode(b, len, &m);
	if (m.ctype == 2 || (m.ctype == 3 && !m.trns))
		return vd_stb_load(b, len, 3, "PNG", out);
	if (m.ctype == 3 || m.ctype == 4 || m.ctype == 6) {
		st = vd_stb_load(b, len, 4, "PNG", out);
		if (st == VD_OK)
			vd_rgba_onto_white(out->data, (size_t)out->width * out->height);
		return st;
	}
	if (m.depth == 16) {
		int w, h, comp;
		uint16_t *g = stbi_load_16_from_memory(b, (int)len, &w, &h, &comp, 1);

		if (!g)
			return vd_stb_error("PNG");
		n = (size_t)w * (size_t)h;
		out->data = malloc(n * 3);
		if (!out->data) {
			stbi_image_free(g);
			return vd_errorf(VD_ERR_NOMEM, "out of memory for a %dx%d image", w, h);
		}
		for (size_t i = 0; i < n; i++)
			out->data[i] = g[i] > 255 ? 255 : (uint8_t)g[i];
		stbi_image_free(g);
		out->width = w;
		out->height = h;
	} else {
		uint8_t *grey;

		st = vd_stb_load(b, len, 1, "PNG", out);
		if (st != VD_OK)
			return st;
		n = (size_t)out->width * out->height;
		grey = realloc(out->data, n * 3);
		if (!grey) {
			vd_image_free(out);
			return vd_errorf(VD_ERR_NOMEM, "out of memory for a %zu-pixel image", n);
		}
		out->data = grey;
	}
	/* (n) grey to (n, 3) RGB in place, from the end. */
	for (size_t i = n; i-- > 0;) {
		uint8_t v = out->data[i];

		if (m.trns && v == (m.trns_grey & 0xff))
			v = 255;
		memset(out->data + i * 3, v, 3);
	}
	return VD_OK;
}

vd_status vd_image_decode(const void *bytes, size_t len, int64_t max_pixels,
			  vd_image *out)
{
	const uint8_t *b = bytes;
	enum vd_image_format fmt;
	struct vd_gif_frame gif;
	const char *name;
	uint32_t hw = 0, hh = 0;
	vd_status st;

	if (!out || (!bytes && len))
		return vd_errorf(VD_ERR_INVALID_ARG, "image decode: NULL %s",
				 out ? "bytes" : "output image");
	memset(out, 0, sizeof(*out));
	if (len == 0)
		return vd_errorf(VD_ERR_FORMAT, "not an image: the data is empty (0 bytes)");
	fmt = vd_detect(b, len);
	if (fmt == VD_FORMAT_UNKNOWN)
		return vd_format_error(b, len);
	name = vd_format_names[fmt];
	if (len > INT_MAX) /* stb takes an int length */
		return vd_errorf(VD_ERR_LIMIT, "%s image of %zu bytes is too large: the "
				 "decoder reads at most %d bytes", name, len, INT_MAX);

	/* Size from the header alone, to refuse before any pixel is decoded. */
	st = vd_header_size(fmt, b, len, &hw, &hh);
	if (st != VD_OK)
		return st;
	if (hw == 0 || hh == 0)
		return vd_errorf(VD_ERR_FORMAT, "corrupt %s: the header declares a %ux%u "
				 "image", name, hw, hh);
	if (max_pixels > 0 && (uint64_t)hw * hh > (uint64_t)max_pixels)
		return vd_errorf(VD_ERR_LIMIT, "image of %ux%u = %llu pixels exceeds the "
				 "cap of %lld pixels; raise the max_image_pixels option to "
				 "accept it", hw, hh, (unsigned long long)hw * hh,
				 (long long)max_pixels);
	if (hw > VD_MAX_SIDE || hh > VD_MAX_SIDE)
		return vd_errorf(VD_ERR_LIMIT, "%s header declares %ux%u pixels, more than "
				 "the decoder's %u per side (corrupt header?)", name, hw, hh,
				 VD_MAX_SIDE);

	switch (fmt) {
	case VD_FORMAT_PNG:
		st = vd_check_png(b, len);
		if (st == VD_OK)
			st = vd_png_decode(b, len, out);
		break;
	case VD_FORMAT_JPEG:
		st = vd_check_jpeg(b, len);
		if (st == VD_OK)
			st = vd_jpeg_decode(b, len, out);
		break;
	case VD_FORMAT_WEBP:
		/* libwebp's demuxer refuses a file whose chunks are incomplete. */
		st = vd_webp_decode(b, len, out);
		break;
	case VD_FORMAT_BMP:
		st = vd_check_bmp(b, len);
		if (st == VD_OK)
			st = vd_stb_load(b, len, 3, name, out);
		break;
	default: /* GIF, the one format left; it keeps alpha for vd_gif_to_rgb */
		st = vd_scan_gif(b, len, &gif);
		if (st == VD_OK)
			st = vd_stb_load(b, len, 4, name, out);
		if (st == VD_OK)
			vd_gif_to_rgb(out->data, out->width, out->height, &gif);
		break;
	}
	if (st != VD_OK)
		vd_image_free(out);
	return st;
}

/* Read all of path into a new buffer (*buf owned by the caller). */
static vd_status vd_read_file(const char *path, uint8_t **buf, size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	uint8_t *data = NULL, *grown;
	vd_status st = VD_OK;
	FILE *f = fopen(path, "rb");

	*buf = NULL;
	*len = 0;
	if (!f)
		return vd_errorf(errno == ENOENT ? VD_ERR_NOT_FOUND : VD_ERR_IO,
				 "cannot open image file %s: %s", path, strerror(errno));
	for (;;) {
		if (!data || n == cap) {
			if (data)
				cap *= 2;
			grown = realloc(data, cap);
			if (!grown) {
				st = vd_errorf(VD_ERR_NOMEM, "out of memory reading image "
					       "file %s (%zu bytes so far)", path, n);
				goto err;
			}
			data = grown;
		}
		n += fread(data + n, 1, cap - n, f);
		if (ferror(f)) {
			st = vd_errorf(VD_ERR_IO, "cannot read image file %s: %s", path,
				       strerror(errno));
			goto err;
		}
		if (feof(f))
			break;
	}
	fclose(f);
	*buf = data;
	*len = n;
	return VD_OK;

err:
	free(data);
	fclose(f);
	return st;
}

vd_status vd_image_load(const char *path, int64_t max_pixels, vd_image *out)
{
	char why[1024];
	uint8_t *buf;
	size_t len;
	vd_status st;

	if (!path || !out)
		return vd_errorf(VD_ERR_INVALID_ARG, "image load: NULL %s",
				 path ? "output image" : "path");
	memset(out, 0, sizeof(*out));
	st = vd_read_file(path, &buf, &len);
	if (st != VD_OK)
		return st;
	st = vd_image_decode(buf, len, max_pixels, out);
	free(buf);
	if (st != VD_OK) {
		/* The message buffer is the destination too: copy it first. */
		snprintf(why, sizeof(why), "%s", vd_error_message());
		vd_errorf(st, "image file %s: %s", path, why);
	}
	return st;
}

static vd_status vd_image_check(const vd_image *img, const char *what)
{
	if (!img || !img->data || img->width <= 0 || img->height <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "%s: input image is empty or NULL", what);
	return VD_OK;
}

/* New (height, width, 3) pixels for out; sizes already checked positive. */
static vd_status vd_image_alloc(int width, int height, const char *what, vd_image *out)
{
	out->data = malloc((size_t)width * (size_t)height * 3);
	if (!out->data)
		return vd_errorf(VD_ERR_NOMEM, "%s: out of memory for a %dx%d image",
				 what, width, height);
	out->width = width;
	out->height = height;
	return VD_OK;
}

vd_status vd_image_from_rgb(const uint8_t *rgb, int width, int height, vd_image *out)
{
	vd_status st;

	if (!out)
		return vd_errorf(VD_ERR_INVALID_ARG, "image from rgb: NULL output image");
	memset(out, 0, sizeof(*out));
	if (!rgb || width <= 0 || height <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "image from rgb: need pixels and a "
				 "positive size, got %dx%d", width, height);
	st = vd_image_alloc(width, height, "image from rgb", out);
	if (st == VD_OK)
		memcpy(out->data, rgb, (size_t)width * (size_t)height * 3);
	return st;
}

void vd_image_free(vd_image *img)
{
	if (!img)
		return;
	free(img->data);
	img->data = NULL;
	img->width = 0;
	img->height = 0;
}

vd_status vd_image_resize(const vd_image *in, int width, int height,
			  vd_resample filter, vd_image *out)
{
	static const uint8_t black[3] = { 0, 0, 0 };

	return vd_image_resize_crop(in, width, height, filter, 0, 0, width, height,
				    black, out);
}

vd_status vd_image_resize_crop(const vd_image *in, int width, int height,
			       vd_resample filter, int left, int top, int crop_w,
			       int crop_h, const uint8_t fill[3], vd_image *out)
{
	int64_t x0, x1, y0, y1;
	vd_image win = { 0 };
	vd_status st;

	if (!out)
		return vd_errorf(VD_ERR_INVALID_ARG, "resize: NULL output image");
	memset(out, 0, sizeof(*out));
	st = vd_image_check(in, "resize");
	if (st != VD_OK)
		return st;
	if (width <= 0 || height <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "resize: target size %dx%d must be "
				 "positive", width, height);
	if (crop_w <= 0 || crop_h <= 0 || !fill)
		return vd_errorf(VD_ERR_INVALID_ARG, "resize: need a fill colour and a "
				 "positive crop size, got %dx%d", crop_w, crop_h);
	if (filter != VD_RESAMPLE_NEAREST && filter != VD_RESAMPLE_BILINEAR &&
	    filter != VD_RESAMPLE_BICUBIC)
		return vd_errorf(VD_ERR_INVALID_ARG, "resize: unknown filter %d "
				 "(use NEAREST, BILINEAR or BICUBIC)", (int)filter);
	/* The part of the crop inside the resized image, [x0, x1) x [y0, y1),
	 * in 64 bits so that left + crop_w cannot overflow. */
	x0 = left < 0 ? 0 : left;
	y0 = top < 0 ? 0 : top;
	x1 = (int64_t)left + crop_w < width ? (int64_t)left + crop_w : width;
	y1 = (int64_t)top + crop_h < height ? (int64_t)top + crop_h : height;
	if (x1 <= x0 || y1 <= y0)
		return vd_image_crop(in, INT_MIN, INT_MIN, crop_w, crop_h, fill, out);
	st = vd_image_alloc((int)(x1 - x0), (int)(y1 - y0), "resize", &win);
	if (st != VD_OK)
		return st;
	st = vd_resample_rgb_window(in->data, in->width, in->height, width, height,
				    (int)x0, (int)y0, win.width, win.height, filter, win.data);
	if (st == VD_OK && (win.width != crop_w || win.height != crop_h))
		st = vd_image_crop(&win, (int)(left - x0), (int)(top - y0), crop_w, crop_h,
				   fill, out);
	else if (st == VD_OK)
		*out = win;
	if (st != VD_OK || out->data != win.data)
		vd_image_free(&win);
	return st;
}

vd_status vd_image_crop(const vd_image *in, int left, int top, int width,
			int height, const uint8_t fill[3], vd_image *out)
{
	int64_t x0, x1;
	vd_status st;

	if (!out)
		return vd_errorf(VD_ERR_INVALID_ARG, "crop: NULL output image");
	memset(out, 0, sizeof(*out));
	st = vd_image_check(in, "crop");
	if (st != VD_OK)
		return st;
	if (width <= 0 || height <= 0 || !fill)
		return vd_errorf(VD_ERR_INVALID_ARG, "crop: need a fill colour and a "
				 "positive size, got %dx%d", width, height);
	st = vd_image_alloc(width, height, "crop", out);
	if (st != VD_OK)
		return st;

	/* Columns [x0, x1) of the output come from the image; the rest is fill.
	 * 64-bit so that left + width cannot overflow. */
	x0 = left < 0 ? -(int64_t)left : 0;
	if (x0 > width)
		x0 = width;
	x1 = (int64_t)in->width - left;
	if (x1 > width)
		x1 = width;
	if (x1 < x0)
		x1 = x0;
	for (int y = 0; y < height; y++) {
		int64_t sy = (int64_t)top + y;
		uint8_t *dst = out->data + (size_t)y * width * 3;
		int64_t a = x0, b = x1;

		if (sy < 0 || sy >= in->height)
			a = b = width;
		for (int64_t x = 0; x < a; x++)
			memcpy(dst + x * 3, fill, 3);
		if (b > a)
			memcpy(dst + a * 3, in->data + ((size_t)sy * in->width + (size_t)(left + a)) * 3,
			       (size_t)(b - a) * 3);
		for (int64_t x = b; x < width; x++)
			memcpy(dst + x * 3, fill, 3);
	}
	return VD_OK;
}

void vd_image_to_planes(const vd_image *img, float rescale, const float mean[3],
			const float std[3], float *out)
{
	size_t plane = (size_t)img->width * img->height;
	float lut[3][256];

	/* As the HF PIL path computes it: the rescale in double rounded to float32
	 * (numpy's astype after a float64 multiply), then float32 (x - mean) / std.
	 * Only 256 values per channel exist, so they are tabulated. */
	for (int c = 0; c < 3; c++)
		for (int v = 0; v < 256; v++)
			lut[c][v] = ((float)(v * (double)rescale) - mean[c]) / std[c];
	for (int c = 0; c < 3; c++) {
		float *dst = out + (size_t)c * plane;
		const uint8_t *src = img->data + c;

		for (size_t i = 0; i < plane; i++)
			dst[i] = lut[c][src[i * 3]];
	}
}
