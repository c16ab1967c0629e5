/* Bounded preprocessing: images of extreme shape through each family's
 * whole image path (the engine's input stage: decode, process, hash) on the
 * tiny checkpoints. A PNG whose IHDR says 100000x1 or 1000000x1 (and the
 * tall twins) must end, with a result or a 400-class refusal, far faster
 * than the 5.5 s and 81 s it took when LLaVA resized the whole strip, with
 * a peak RSS growth under 50 MB (it took 1.4 GB and 11.5 GB). The PNGs are
 * written here with stored (uncompressed) deflate blocks. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/engine.h"
#include "core/input.h"
#include "vllmd/llm.h"

/* A time far from both sides: the old path took 5.5 s for the smallest
 * case; the bounded one takes milliseconds (tens under sanitizers). It is
 * the process's CPU time (the input stage's workers do the work), which a
 * loaded machine does not stretch as it stretches the wall clock. */
#define TIME_BOUND_S 1.0
#define RSS_BOUND_KB (50 * 1024)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- a PNG writer: stored deflate, enough for tests ---- */

static uint32_t crc_table[256];

static uint32_t crc32_of(const uint8_t *p, size_t n, uint32_t c)
{
	if (!crc_table[1])
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t v = i;

			for (int k = 0; k < 8; k++)
				v = v & 1 ? 0xedb88320u ^ (v >> 1) : v >> 1;
			crc_table[i] = v;
		}
	c = ~c;
	for (size_t i = 0; i < n; i++)
		c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
	return ~c;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Append a chunk (type + data) at *at; returns the new end. */
static uint8_t *chunk(uint8_t *at, const char *type, const uint8_t *data, size_t n)
{
	put32(at, (uint32_t)n);
	memcpy(at + 4, type, 4);
	if (n)
		memcpy(at + 8, data, n);
	put32(at + 8 + n, crc32_of(at + 4, n + 4, 0));
	return at + 12 + n;
}

/* An 8-bit RGB PNG of w x h whose pixel (x, y) is (x, y, x + y) mod 256. */
static uint8_t *make_png(uint32_t w, uint32_t h, size_t *len)
{
	size_t row = 1 + (size_t)w * 3, raw_n = row * h;
	size_t blocks = (raw_n + 65534) / 65535, z_n = 2 + raw_n + 5 * blocks + 4;
	uint8_t *raw = malloc(raw_n), *z = malloc(z_n), *png = malloc(z_n + 64), *p;
	uint8_t ihdr[13];
	uint32_t a = 1, b = 0;
	size_t zi = 0;

	ck_assert(raw && z && png);
	for (uint32_t y = 0; y < h; y++) {
		uint8_t *r = raw + y * row;

		r[0] = 0;
		for (uint32_t x = 0; x < w; x++) {
			r[1 + x * 3] = (uint8_t)x;
			r[2 + x * 3] = (uint8_t)y;
			r[3 + x * 3] = (uint8_t)(x + y);
		}
	}
	z[zi++] = 0x78;
	z[zi++] = 0x01;
	for (size_t off = 0; off < raw_n; off += 65535) {
		size_t n = raw_n - off < 65535 ? raw_n - off : 65535;

		z[zi++] = off + n == raw_n; /* BFINAL, BTYPE 00 */
		z[zi++] = (uint8_t)n;
		z[zi++] = (uint8_t)(n >> 8);
		z[zi++] = (uint8_t)~n;
		z[zi++] = (uint8_t)(~n >> 8);
		memcpy(z + zi, raw + off, n);
		zi += n;
	}
	for (size_t i = 0; i < raw_n; i++) {
		a = (a + raw[i]) % 65521;
		b = (b + a) % 65521;
	}
	put32(z + zi, b << 16 | a);
	zi += 4;
	put32(ihdr, w);
	put32(ihdr + 4, h);
	memcpy(ihdr + 8, "\x08\x02\x00\x00\x00", 5);
	memcpy(png, "\x89PNG\r\n\x1a\n", 8);
	p = chunk(png + 8, "IHDR", ihdr, 13);
	p = chunk(p, "IDAT", z, zi);
	p = chunk(p, "IEND", NULL, 0);
	*len = (size_t)(p - png);
	free(raw);
	free(z);
	return png;
}

/* ---- memory ---- */

static long status_kb(const char *key)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, strlen(key)) == 0)
			v = atol(line + strlen(key));
	fclose(f);
	return v;
}

/* Start a new peak-RSS window (Linux: writing 5 to clear_refs resets
 * VmHWM to the current RSS). False where that is not allowed. */
static bool reset_peak(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	bool ok;

	if (!f)
		return false;
	ok = fputs("5", f) >= 0;
	return fclose(f) == 0 && ok;
}

/* ---- the cases ---- */

struct shape {
	uint32_t w, h;
};

static const struct shape shapes[] = {
	{ 100000, 1 }, { 1000000, 1 }, { 1, 100000 }, { 1, 1000000 },
};

/* Prepare each extreme image with the family of model dir; want is the
 * status for every shape, want_msg a part of the message on refusal. */
/* Each shape as the one image of a request through the engine's input stage
 * (decode, the family's process_image, hashing, the prompt's expansion). */
static void run_family(const char *model, const char *prompt, vd_status want,
		       const char *want_msg)
{
	const char *data = getenv("VD_TEST_DATA") ? getenv("VD_TEST_DATA") : "tests/data";
	char dir[4096];
	vd_engine_args a;
	vd_engine *e = NULL;

	snprintf(dir, sizeof(dir), "%s/models/%s", data, model);
	vd_engine_args_init(&a);
	a.model = dir;
	a.plugin_dir = getenv("VD_PLUGIN_DIR");
	a.device = "cpu";
	a.num_threads = 1;
	ck_assert_msg(vd_engine_create(&a, &e) == VD_OK, "%s: %s", model, vd_error_message());
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		size_t len;
		uint8_t *png = make_png(shapes[i].w, shapes[i].h, &len);
		vd_image_input in = { .kind = VD_IMAGE_BYTES, .bytes = png, .len = len };
		vd_request r;
		vd_prepared *pr = NULL;
		bool peak_ok = reset_peak();
		long rss0 = status_kb("VmRSS:"), grew;
		double t0 = now_s(), took;
		vd_status st;

		vd_request_init(&r);
		r.prompt = prompt;
		r.images = &in;
		r.n_images = 1;
		ck_assert_int_eq(vd_input_prepare(vd_engine_input(e), &r, &pr), VD_OK);
		st = pr->status;
		if (st != VD_OK)
			vd_errorf(st, "%s", pr->error);

		took = now_s() - t0;
		grew = status_kb("VmHWM:") - rss0;
		printf("%s %ux%u (PNG %zu bytes): %s in %.1f ms, peak RSS +%ld KiB%s%s%s\n",
		       model, shapes[i].w, shapes[i].h, len, vd_status_str(st), took * 1e3, grew,
		       peak_ok ? "" : " (peak not resettable)", st == VD_OK ? "" : ": ",
		       st == VD_OK ? "" : vd_error_message());
		ck_assert_msg(st == want, "%s %ux%u: %s (%s), want %s", model, shapes[i].w,
			      shapes[i].h, vd_status_str(st), vd_error_message(), vd_status_str(want));
		if (st == VD_OK) {
			ck_assert_int_eq(pr->n_items, 1);
			ck_assert_int_gt(pr->items[0].num_tokens, 0);
			ck_assert_ptr_nonnull(pr->items[0].pixels.data);
		} else {
			ck_assert_msg(strstr(vd_error_message(), want_msg), "message '%s' lacks '%s'",
				      vd_error_message(), want_msg);
		}
		ck_assert_msg(took < TIME_BOUND_S, "%s %ux%u took %.2f s", model, shapes[i].w,
			      shapes[i].h, took);
		if (peak_ok)
			ck_assert_msg(grew < RSS_BOUND_KB, "%s %ux%u grew peak RSS by %ld KiB", model,
				      shapes[i].w, shapes[i].h, grew);
		vd_prepared_free(pr);
		free(png);
	}
	vd_engine_destroy(e);
}

/* LLaVA resizes the short side to 336 and keeps the centre 336x336: the
 * result exists and is computed from that window alone. */
START_TEST(test_llava_strips)
{
	run_family("llava-tiny-a", "USER: <image>\nWhat is this?\nASSISTANT:", VD_OK, NULL);
}
END_TEST

/* Qwen2-VL refuses an aspect ratio over 200, as transformers' smart_resize. */
START_TEST(test_qwen2vl_strips)
{
	run_family("qwen2vl-tiny-a",
		   "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n",
		   VD_ERR_INVALID_ARG, "aspect ratio must be smaller than 200");
}
END_TEST

/* Phi-3.5-V's HD transform would make the short side 0 pixels. */
START_TEST(test_phi3v_strips)
{
	run_family("phi3v-tiny-a", "<|user|>\n<|image_1|>\nHi<|end|>\n<|assistant|>\n",
		   VD_ERR_INVALID_ARG, "too elongated");
}
END_TEST

/* A strip whose resized long side would pass INT_MAX is refused with a
 * 400-class error, not overflowed: the tiny checkpoint resizes the short
 * side to 56, and 38400000 x 56 = 2.15e9 (at LLaVA-1.5's 336, a 6.4e6
 * pixel strip). Raw pixels: the PNG decoder's sides stop at 2^24. */
START_TEST(test_llava_past_int_max)
{
	const char *data = getenv("VD_TEST_DATA") ? getenv("VD_TEST_DATA") : "tests/data";
	size_t w = 38400000;
	uint8_t *rgb = calloc(w * 3, 1);
	char dir[4096];
	vd_engine_args a;
	vd_engine *e = NULL;
	vd_image_input in = { .kind = VD_IMAGE_RGB, .rgb = rgb, .width = (int)w, .height = 1 };
	vd_request r;
	vd_prepared *pr = NULL;

	ck_assert_ptr_nonnull(rgb);
	snprintf(dir, sizeof(dir), "%s/models/llava-tiny-a", data);
	vd_engine_args_init(&a);
	a.model = dir;
	a.plugin_dir = getenv("VD_PLUGIN_DIR");
	a.device = "cpu";
	a.num_threads = 1;
	ck_assert_msg(vd_engine_create(&a, &e) == VD_OK, "%s", vd_error_message());
	vd_request_init(&r);
	r.prompt = "USER: <image>\nHi\nASSISTANT:";
	r.images = &in;
	r.n_images = 1;
	ck_assert_int_eq(vd_input_prepare(vd_engine_input(e), &r, &pr), VD_OK);
	ck_assert_int_eq(pr->status, VD_ERR_INVALID_ARG);
	ck_assert_ptr_nonnull(strstr(pr->error, "too elongated"));
	ck_assert_ptr_nonnull(strstr(pr->error, "38400000x1"));
	vd_prepared_free(pr);
	vd_engine_destroy(e);
	free(rgb);
}
END_TEST

/* The writer above makes a PNG the decoder reads back. */
START_TEST(test_png_writer)
{
	size_t len;
	uint8_t *png = make_png(5, 3, &len);
	vd_image img;

	ck_assert_int_eq(vd_image_decode(png, len, 0, &img), VD_OK);
	ck_assert_int_eq(img.width, 5);
	ck_assert_int_eq(img.height, 3);
	ck_assert_mem_eq(img.data + (2 * 5 + 4) * 3, "\x04\x02\x06", 3);
	vd_image_free(&img);
	free(png);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("preprocess");
	TCase *tc = tcase_create("bounded");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_png_writer);
	tcase_add_test(tc, test_llava_strips);
	tcase_add_test(tc, test_qwen2vl_strips);
	tcase_add_test(tc, test_phi3v_strips);
	tcase_add_test(tc, test_llava_past_int_max);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
