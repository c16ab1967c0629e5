/* Writes the JPEG fixtures in tests/data/images/ that python3-pil cannot
 * write itself (tests/image_ref.py makes the others at test time): colour
 * spaces and codings a JPEG encoder may choose that PIL's encoder never
 * does. tests/test_image.c decodes them with vllmd and with PIL and wants
 * the same pixels. Run from the top of the tree:
 *   cc -O2 tests/gen/jpeg_fixtures.c -ljpeg -o /tmp/jf && /tmp/jf tests/data/images
 * Deterministic: the same bytes on every run with the same libjpeg. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#define W 53
#define H 37

/* A smooth gradient, a hard-edged disc and a little hashed noise, as
 * image_ref.py's photo(): content that exercises the IDCT and upsampling. */
static void pixels(int comps, unsigned char *px)
{
	for (int y = 0; y < H; y++)
		for (int x = 0; x < W; x++) {
			int disc = (x - W / 2) * (x - W / 2) + (y - H / 2) * (y - H / 2) < 144;
			unsigned noise = (unsigned)(x * 73856093u ^ y * 19349663u) >> 27;

			for (int c = 0; c < comps; c++) {
				int v = c == 0 ? x * 255 / (W - 1) : c == 1 ? y * 255 / (H - 1)
					: c == 2 ? (x + y) * 255 / (W + H - 2) : 40 + x;

				if (disc)
					v = 255 - v;
				v += (int)noise - 8;
				px[((size_t)y * W + x) * comps + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
			}
		}
}

struct fixture {
	const char *name;
	J_COLOR_SPACE in, stored;
	int adobe;            /* write the Adobe APP14 marker */
	int jfif;             /* write the JFIF APP0 marker */
	int restart;          /* restart interval in MCUs, 0 = none */
	int arith;            /* arithmetic coding */
	int h0, v0;           /* sampling factors of the first component */
	int progressive;
};

static const struct fixture fixtures[] = {
	{ "adobe_rgb.jpg", JCS_RGB, JCS_RGB, 1, 0, 0, 0, 1, 1, 0 },
	{ "ycck.jpg", JCS_CMYK, JCS_YCCK, 1, 0, 0, 0, 2, 2, 0 },
	{ "cmyk_no_adobe.jpg", JCS_CMYK, JCS_CMYK, 0, 0, 0, 0, 1, 1, 0 },
	{ "restart_420.jpg", JCS_RGB, JCS_YCbCr, 0, 1, 3, 0, 2, 2, 0 },
	{ "arith_420.jpg", JCS_RGB, JCS_YCbCr, 0, 1, 0, 1, 2, 2, 0 },
	{ "sub_440.jpg", JCS_RGB, JCS_YCbCr, 0, 1, 0, 0, 1, 2, 0 },
	{ "sub_411.jpg", JCS_RGB, JCS_YCbCr, 0, 1, 0, 0, 4, 1, 0 },
	{ "progressive_422.jpg", JCS_RGB, JCS_YCbCr, 0, 1, 0, 0, 2, 1, 1 },
};

static int write_one(const char *dir, const struct fixture *f)
{
	struct jpeg_compress_struct ci;
	struct jpeg_error_mgr err;
	int comps = f->in == JCS_CMYK ? 4 : 3;
	unsigned char *px = malloc((size_t)W * H * comps);
	char path[4096];
	FILE *out;

	if (!px)
		return 1;
	snprintf(path, sizeof(path), "%s/%s", dir, f->name);
	out = fopen(path, "wb");
	if (!out) {
		perror(path);
		free(px);
		return 1;
	}
	pixels(comps, px);
	ci.err = jpeg_std_error(&err);
	jpeg_create_compress(&ci);
	jpeg_stdio_dest(&ci, out);
	ci.image_width = W;
	ci.image_height = H;
	ci.input_components = comps;
	ci.in_color_space = f->in;
	jpeg_set_defaults(&ci);
	jpeg_set_colorspace(&ci, f->stored);
	jpeg_set_quality(&ci, 90, TRUE);
	ci.write_Adobe_marker = f->adobe;
	ci.write_JFIF_header = f->jfif;
	ci.restart_interval = (unsigned)f->restart;
	ci.arith_code = f->arith;
	ci.comp_info[0].h_samp_factor = f->h0;
	ci.comp_info[0].v_samp_factor = f->v0;
	for (int c = 1; c < ci.num_components; c++) {
		ci.comp_info[c].h_samp_factor = 1;
		ci.comp_info[c].v_samp_factor = 1;
	}
	if (f->in == JCS_CMYK) /* K keeps full resolution in YCCK, as C and Y */
		ci.comp_info[3].h_samp_factor = ci.comp_info[3].v_samp_factor = f->h0;
	if (f->progressive)
		jpeg_simple_progression(&ci);
	jpeg_start_compress(&ci, TRUE);
	while (ci.next_scanline < ci.image_height) {
		JSAMPROW row = px + (size_t)ci.next_scanline * W * comps;

		jpeg_write_scanlines(&ci, &row, 1);
	}
	jpeg_finish_compress(&ci);
	jpeg_destroy_compress(&ci);
	fclose(out);
	free(px);
	printf("wrote %s\n", path);
	return 0;
}

int main(int argc, char **argv)
{
	int bad = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
		return 2;
	}
	for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++)
		bad |= write_one(argv[1], &fixtures[i]);
	return bad;
}
