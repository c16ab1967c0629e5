/* Check tests for core/io/image.c, its decoders and core/io/resample.c. Reference
 * pixels come from PIL: tests/image_ref.py (run once with /usr/bin/python3,
 * PIL and numpy) writes images and expected outputs into a temporary
 * directory. Resizes and windows of resizes must be bit-exact with Pillow,
 * with the AVX2 kernels and without; the CLIP pipeline within 1 uint8 step;
 * every decode (JPEG of every kind, WebP, PNG/GIF/BMP of every mode) equal
 * to what vLLM's media loader makes with PIL: 0 levels of difference. */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/io/hash.h"
#include "core/io/image_codec.h"
#include "core/io/resample.h"
#include "vllmd/image.h"

#define CLIP_SIZE 336

static const float clip_mean[3] = { 0.48145466f, 0.4578275f, 0.40821073f };
static const float clip_std[3] = { 0.26862954f, 0.26130258f, 0.27577711f };

static char ref_dir[PATH_MAX];    /* reference data, made once per run */
static char ref_error[4 * PATH_MAX]; /* why the reference data is missing */
static const char *prog_path = ""; /* argv[0], to find image_ref.py */

/* ---- reference data ---- */

static const char *ref_script(void)
{
	static char buf[PATH_MAX];
	char prog[PATH_MAX];
	const char *srcdir = getenv("srcdir");
	const char *env = getenv("VD_IMAGE_REF");

	if (env)
		return env;
	if (srcdir) {
		snprintf(buf, sizeof(buf), "%s/tests/image_ref.py", srcdir);
		if (access(buf, R_OK) == 0)
			return buf;
		snprintf(buf, sizeof(buf), "%s/image_ref.py", srcdir);
		if (access(buf, R_OK) == 0)
			return buf;
	}
	snprintf(prog, sizeof(prog), "%s", prog_path);
	snprintf(buf, sizeof(buf), "%s/image_ref.py", dirname(prog));
	if (access(buf, R_OK) == 0)
		return buf;
	return "tests/image_ref.py";
}

static void ref_setup(void)
{
	char cmd[3 * PATH_MAX], line[512];
	const char *script = ref_script();
	FILE *p;
	int rc;

	snprintf(ref_dir, sizeof(ref_dir), "%s/vd_test_image.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(ref_dir)) {
		snprintf(ref_error, sizeof(ref_error), "mkdtemp %s: %s", ref_dir,
			 strerror(errno));
		ref_dir[0] = '\0';
		return;
	}
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s' '%s' 2>&1", script, ref_dir);
	p = popen(cmd, "r");
	if (!p) {
		snprintf(ref_error, sizeof(ref_error), "popen %s: %s", cmd, strerror(errno));
		return;
	}
	while (fgets(line, sizeof(line), p))
		fputs(line, stderr);
	rc = pclose(p);
	if (rc != 0)
		snprintf(ref_error, sizeof(ref_error), "%s failed (status %d): needs "
			 "/usr/bin/python3 with PIL and numpy", cmd, rc);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void ref_teardown(void)
{
	if (ref_dir[0])
		nftw(ref_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void require_ref(void)
{
	ck_assert_msg(ref_error[0] == '\0', "no reference data: %s", ref_error);
}

static char *ref_path(const char *name)
{
	static char buf[2 * PATH_MAX];

	snprintf(buf, sizeof(buf), "%s/%s", ref_dir, name);
	return buf;
}

/* Whole file into a new buffer (caller frees); aborts the test if missing. */
static uint8_t *read_ref(const char *name, size_t *len)
{
	FILE *f = fopen(ref_path(name), "rb");
	uint8_t *buf;
	long n;

	ck_assert_msg(f != NULL, "cannot open %s", ref_path(name));
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n > 0 ? (size_t)n : 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* A .raw file: int32 width, int32 height, (h, w, 3) uint8. */
static void read_raw(const char *name, vd_image *img)
{
	size_t len;
	uint8_t *buf = read_ref(name, &len);
	int32_t wh[2];

	ck_assert_uint_ge(len, 8);
	memcpy(wh, buf, 8);
	ck_assert_uint_eq(len, 8 + (size_t)wh[0] * wh[1] * 3);
	ck_assert_int_eq(vd_image_from_rgb(buf + 8, wh[0], wh[1], img), VD_OK);
	free(buf);
}

/* Largest per-channel difference between two images of the same size. */
static int max_diff(const vd_image *a, const vd_image *b)
{
	int m = 0;

	ck_assert_int_eq(a->width, b->width);
	ck_assert_int_eq(a->height, b->height);
	for (size_t i = 0; i < (size_t)a->width * a->height * 3; i++) {
		int d = abs((int)a->data[i] - (int)b->data[i]);

		if (d > m)
			m = d;
	}
	return m;
}

/* Manifest lines starting with kind, one at a time: returns 0 at the end. */
static int next_case(FILE *f, const char *kind, char fields[4][128])
{
	char line[512], k[32];

	while (fgets(line, sizeof(line), f)) {
		memset(fields, 0, 4 * 128);
		if (sscanf(line, "%31s %127s %127s %127s %127s", k, fields[0], fields[1],
			   fields[2], fields[3]) >= 2 && strcmp(k, kind) == 0)
			return 1;
	}
	return 0;
}

static FILE *open_manifest(void)
{
	FILE *f;

	require_ref();
	f = fopen(ref_path("manifest.txt"), "r");
	ck_assert_msg(f != NULL, "no manifest in %s", ref_dir);
	return f;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- resize ---- */

static vd_resample filter_named(const char *name)
{
	return strcmp(name, "BICUBIC") == 0 ? VD_RESAMPLE_BICUBIC
	     : strcmp(name, "BILINEAR") == 0 ? VD_RESAMPLE_BILINEAR
	     : VD_RESAMPLE_NEAREST;
}

/* Every resize case, with the kernels simd selects; returns the cases run. */
static int resize_cases(bool simd)
{
	char fields[4][128], name[160];
	int cases = 0, mismatched = 0, worst = 0;
	FILE *f = open_manifest();

	vd_resample_use_simd(simd);
	while (next_case(f, "resize", fields)) {
		vd_image in, want, got;
		int d;

		read_raw(fields[2], &in);
		snprintf(name, sizeof(name), "%s.out.raw", fields[0]);
		read_raw(name, &want);
		ck_assert_int_eq(vd_image_resize(&in, want.width, want.height,
						 filter_named(fields[1]), &got), VD_OK);
		d = max_diff(&got, &want);
		if (d) {
			mismatched++;
			fprintf(stderr, "resize %s %dx%d -> %dx%d: max diff %d\n", fields[0],
				in.width, in.height, want.width, want.height, d);
		}
		worst = d > worst ? d : worst;
		cases++;
		vd_image_free(&in);
		vd_image_free(&want);
		vd_image_free(&got);
	}
	fclose(f);
	vd_resample_use_simd(true);
	printf("resize parity (%s kernels): %d cases vs PIL, %d differ, max diff %d\n",
	       simd ? "AVX2 where the CPU has it" : "C", cases, mismatched, worst);
	ck_assert_int_eq(mismatched, 0);
	return cases;
}

START_TEST(test_resize_parity)
{
	ck_assert_int_ge(resize_cases(true), 60);
	ck_assert_int_ge(resize_cases(false), 60);
}
END_TEST

/* A window of a resize, with fill outside, equals PIL's resize then crop,
 * however far the resized image reaches (30x11200 strips of a 3x1000 image). */
START_TEST(test_window_parity)
{
	static const uint8_t fill[3] = { 9, 99, 199 };
	char fields[10][128], name[160], line[512], k[32];
	int cases = 0;
	FILE *f = open_manifest();

	for (int pass = 0; pass < 2; pass++) {
		vd_resample_use_simd(pass == 0);
		rewind(f);
		while (fgets(line, sizeof(line), f)) {
			vd_image in, want, got;
			int ow, oh, left, top, cw, ch, d;

			if (sscanf(line, "%31s %127s %127s %127s %d %d %d %d %d %d", k, fields[0],
				   fields[1], fields[2], &ow, &oh, &left, &top, &cw, &ch) != 10 ||
			    strcmp(k, "window") != 0)
				continue;
			read_raw(fields[2], &in);
			snprintf(name, sizeof(name), "%s.out.raw", fields[0]);
			read_raw(name, &want);
			ck_assert_msg(vd_image_resize_crop(&in, ow, oh, filter_named(fields[1]), left,
							   top, cw, ch, fill, &got) == VD_OK,
				      "%s: %s", fields[0], vd_error_message());
			d = max_diff(&got, &want);
			ck_assert_msg(d == 0, "window %s (%dx%d of %dx%d at %d,%d, %s kernels) "
				      "differs from PIL by %d", fields[0], cw, ch, ow, oh, left, top,
				      pass == 0 ? "SIMD" : "C", d);
			cases++;
			vd_image_free(&in);
			vd_image_free(&want);
			vd_image_free(&got);
		}
	}
	vd_resample_use_simd(true);
	fclose(f);
	printf("window parity: %d cases vs PIL resize + crop, all equal\n", cases);
	ck_assert_int_ge(cases, 60);
}
END_TEST

START_TEST(test_resize_args)
{
	uint8_t px[12] = { 0 };
	vd_image in, out = { 0 };

	ck_assert_int_eq(vd_image_from_rgb(px, 2, 2, &in), VD_OK);
	ck_assert_int_eq(vd_image_resize(&in, 0, 5, VD_RESAMPLE_BICUBIC, &out),
			 VD_ERR_INVALID_ARG);
	ck_assert_ptr_null(out.data);
	ck_assert_int_eq(vd_image_resize(&in, 3, 3, (vd_resample)7, &out),
			 VD_ERR_INVALID_ARG);
	ck_assert_ptr_null(out.data);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "filter"));
	ck_assert_int_eq(vd_image_resize(NULL, 3, 3, VD_RESAMPLE_BICUBIC, &out),
			 VD_ERR_INVALID_ARG);
	/* NEAREST steps through every skipped pixel: sides past 2^24 refused. */
	ck_assert_int_eq(vd_image_resize_crop(&in, 1 << 25, 2, VD_RESAMPLE_NEAREST, 100, 0, 2, 2,
					      px, &out), VD_ERR_LIMIT);
	ck_assert_ptr_null(out.data);
	/* A crop wholly outside the resized image is all fill. */
	ck_assert_int_eq(vd_image_resize_crop(&in, 4, 4, VD_RESAMPLE_BICUBIC, 10, 10, 2, 1,
					      (const uint8_t[3]){ 1, 2, 3 }, &out), VD_OK);
	ck_assert_mem_eq(out.data, "\x01\x02\x03\x01\x02\x03", 6);
	vd_image_free(&out);
	ck_assert_int_eq(vd_image_resize_crop(&in, 4, 4, VD_RESAMPLE_BICUBIC, 0, 0, 0, 1, px, &out),
			 VD_ERR_INVALID_ARG);
	vd_image_free(&in);
}
END_TEST

/* ---- CLIP preprocessing composed from the public calls ---- */

static void clip_preprocess(const vd_image *img, vd_image *crop, float *planes)
{
	static const uint8_t black[3] = { 0, 0, 0 };
	int w = img->width, h = img->height, nw, nh;
	vd_image r;

	/* shortest edge to 336, long edge int(336 * long / short) */
	if (w <= h) {
		nw = CLIP_SIZE;
		nh = (int)(CLIP_SIZE * (double)h / w);
	} else {
		nh = CLIP_SIZE;
		nw = (int)(CLIP_SIZE * (double)w / h);
	}
	ck_assert_int_eq(vd_image_resize(img, nw, nh, VD_RESAMPLE_BICUBIC, &r), VD_OK);
	ck_assert_int_eq(vd_image_crop(&r, (int)((nw - CLIP_SIZE) / 2.0),
				       (int)((nh - CLIP_SIZE) / 2.0), CLIP_SIZE, CLIP_SIZE,
				       black, crop), VD_OK);
	vd_image_to_planes(crop, 1.0f / 255.0f, clip_mean, clip_std, planes);
	vd_image_free(&r);
}

START_TEST(test_clip_pipeline)
{
	char fields[4][128], name[160];
	size_t n = 3 * CLIP_SIZE * CLIP_SIZE, len;
	float *got = malloc(n * sizeof(float));
	int cases = 0, worst_px = 0;
	double worst = 0;
	FILE *f = open_manifest();

	ck_assert_ptr_nonnull(got);
	while (next_case(f, "clip", fields)) {
		vd_image in, want_crop, crop;
		float *want;
		double d = 0;
		int dpx;

		snprintf(name, sizeof(name), "%s.in.raw", fields[0]);
		read_raw(name, &in);
		snprintf(name, sizeof(name), "%s.crop.raw", fields[0]);
		read_raw(name, &want_crop);
		snprintf(name, sizeof(name), "%s.out.f32", fields[0]);
		want = (float *)read_ref(name, &len);
		ck_assert_uint_eq(len, n * sizeof(float));

		clip_preprocess(&in, &crop, got);
		dpx = max_diff(&crop, &want_crop);
		for (size_t i = 0; i < n; i++)
			d = fmax(d, fabs((double)got[i] - want[i]));
		printf("clip %dx%d: max uint8 diff %d, max normalized diff %.3g\n",
		       in.width, in.height, dpx, d);
		ck_assert_int_le(dpx, 1);
		ck_assert_double_le(d, 0.02);
		worst = fmax(worst, d);
		worst_px = dpx > worst_px ? dpx : worst_px;
		cases++;
		vd_image_free(&in);
		vd_image_free(&want_crop);
		vd_image_free(&crop);
		free(want);
	}
	fclose(f);
	free(got);
	printf("clip pipeline: %d images, max uint8 diff %d, max normalized diff %.3g\n",
	       cases, worst_px, worst);
	ck_assert_int_ge(cases, 6);
}
END_TEST

/* Times the CLIP path on a 1024x768 image (result checked by the test above). */
START_TEST(test_clip_speed)
{
	size_t n = (size_t)1024 * 768 * 3;
	uint8_t *px = malloc(n);
	float *planes = malloc(3 * CLIP_SIZE * CLIP_SIZE * sizeof(float));
	vd_image img, crop;
	int reps = 20;
	double t0, dt;

	ck_assert_ptr_nonnull(px);
	ck_assert_ptr_nonnull(planes);
	for (size_t i = 0; i < n; i++)
		px[i] = (uint8_t)(i * 2654435761u >> 13);
	ck_assert_int_eq(vd_image_from_rgb(px, 1024, 768, &img), VD_OK);
	t0 = now_s();
	for (int i = 0; i < reps; i++) {
		clip_preprocess(&img, &crop, planes);
		ck_assert_int_eq(crop.width, CLIP_SIZE);
		vd_image_free(&crop);
	}
	dt = (now_s() - t0) / reps;
	/* reported, not asserted: speed is measured in bench/, not here */
	printf("clip preprocess 1024x768: %.2f ms per image\n", dt * 1e3);
	vd_image_free(&img);
	free(px);
	free(planes);
}
END_TEST

/* ---- crop and planes ---- */

START_TEST(test_crop)
{
	/* 3x2 image, pixel (x, y) = (10x + y, 100 + x, 200 + y) */
	uint8_t px[2 * 3 * 3];
	const uint8_t fill[3] = { 255, 254, 253 };
	vd_image img, out;

	for (int y = 0; y < 2; y++)
		for (int x = 0; x < 3; x++) {
			uint8_t *p = px + (y * 3 + x) * 3;

			p[0] = (uint8_t)(10 * x + y);
			p[1] = (uint8_t)(100 + x);
			p[2] = (uint8_t)(200 + y);
		}
	ck_assert_int_eq(vd_image_from_rgb(px, 3, 2, &img), VD_OK);

	ck_assert_int_eq(vd_image_crop(&img, 1, 1, 2, 1, fill, &out), VD_OK);
	ck_assert_int_eq(out.width, 2);
	ck_assert_int_eq(out.height, 1);
	ck_assert_mem_eq(out.data, px + (1 * 3 + 1) * 3, 6);
	vd_image_free(&out);

	/* Overhanging on every side: the image sits at (1, 1) in a 5x4 frame. */
	ck_assert_int_eq(vd_image_crop(&img, -1, -1, 5, 4, fill, &out), VD_OK);
	for (int y = 0; y < 4; y++)
		for (int x = 0; x < 5; x++) {
			const uint8_t *p = out.data + (y * 5 + x) * 3;
			int inside = x >= 1 && x <= 3 && y >= 1 && y <= 2;

			if (inside)
				ck_assert_mem_eq(p, px + ((y - 1) * 3 + (x - 1)) * 3, 3);
			else
				ck_assert_mem_eq(p, fill, 3);
		}
	vd_image_free(&out);

	/* Entirely outside, and at the far end of int: all fill, no overflow. */
	ck_assert_int_eq(vd_image_crop(&img, INT_MAX - 1, -5, 2, 2, fill, &out), VD_OK);
	for (int i = 0; i < 4; i++)
		ck_assert_mem_eq(out.data + i * 3, fill, 3);
	vd_image_free(&out);
	ck_assert_int_eq(vd_image_crop(&img, INT_MIN, 0, 3, 1, fill, &out), VD_OK);
	ck_assert_mem_eq(out.data, fill, 3);
	vd_image_free(&out);

	ck_assert_int_eq(vd_image_crop(&img, 0, 0, 0, 1, fill, &out), VD_ERR_INVALID_ARG);
	ck_assert_ptr_null(out.data);
	vd_image_free(&img);
}
END_TEST

START_TEST(test_to_planes)
{
	const uint8_t px[6] = { 0, 128, 255, 17, 200, 3 };
	vd_image img;
	float planes[6];

	ck_assert_int_eq(vd_image_from_rgb(px, 2, 1, &img), VD_OK);
	vd_image_to_planes(&img, 1.0f / 255.0f, clip_mean, clip_std, planes);
	for (int c = 0; c < 3; c++)
		for (int i = 0; i < 2; i++) {
			double want = (px[i * 3 + c] / 255.0 - clip_mean[c]) / clip_std[c];
			float got = planes[c * 2 + i];

			ck_assert_double_le(fabs(got - want), 1e-6 * fmax(1.0, fabs(want)));
		}
	vd_image_free(&img);
}
END_TEST

START_TEST(test_from_rgb_and_free)
{
	const uint8_t px[3] = { 1, 2, 3 };
	vd_image img = { 0 };

	vd_image_free(&img);
	vd_image_free(NULL);
	ck_assert_int_eq(vd_image_from_rgb(px, 1, 1, &img), VD_OK);
	ck_assert_ptr_ne(img.data, px);
	ck_assert_mem_eq(img.data, px, 3);
	vd_image_free(&img);
	ck_assert_ptr_null(img.data);
	ck_assert_int_eq(img.width, 0);
	ck_assert_int_eq(vd_image_from_rgb(NULL, 1, 1, &img), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(vd_image_from_rgb(px, -1, 1, &img), VD_ERR_INVALID_ARG);
}
END_TEST

/* ---- decode ---- */

START_TEST(test_decode_parity)
{
	char fields[4][128], name[160];
	int cases = 0, jpeg = 0, webp = 0;
	FILE *f = open_manifest();

	while (next_case(f, "decode", fields)) {
		size_t len;
		uint8_t *bytes = read_ref(fields[1], &len);
		vd_image want, got;
		int d;

		snprintf(name, sizeof(name), "%s.rgb.raw", fields[0]);
		read_raw(name, &want);
		ck_assert_msg(vd_image_decode(bytes, len, 0, &got) == VD_OK, "%s: %s",
			      fields[1], vd_error_message());
		d = max_diff(&got, &want);
		printf("decode %-24s %dx%d: max diff %d\n", fields[0], got.width, got.height, d);
		ck_assert_msg(d == 0, "%s differs from PIL + vLLM's conversion by %d", fields[1], d);
		cases++;
		jpeg += strstr(fields[1], ".jpg") != NULL;
		webp += strstr(fields[1], ".webp") != NULL;
		vd_image_free(&want);
		vd_image_free(&got);
		free(bytes);
	}
	fclose(f);
	printf("decode parity: %d files (%d JPEG, %d WebP) equal to PIL, 0 levels apart\n",
	       cases, jpeg, webp);
	ck_assert_int_ge(cases, 60);
	ck_assert_int_ge(jpeg, 20);
	ck_assert_int_ge(webp, 8);
}
END_TEST

/* vLLM's rgba_to_rgb: PIL's paste onto white with the alpha as mask. */
START_TEST(test_rgba_onto_white)
{
	uint8_t px[] = { 1, 2, 3, 4, 1, 2, 3, 255, 10, 20, 30, 0, 0, 128, 255, 128 };

	vd_rgba_onto_white(px, 4);
	ck_assert_mem_eq(px, "\xfb\xfb\xfb", 3);          /* the (1,2,3,a=4) */
	ck_assert_mem_eq(px + 3, "\x01\x02\x03", 3);      /* opaque: unchanged */
	ck_assert_mem_eq(px + 6, "\xff\xff\xff", 3);      /* clear: white */
	ck_assert_mem_eq(px + 9, "\x7f\xbf\xff", 3);      /* half: between */
}
END_TEST

START_TEST(test_load_file)
{
	vd_image want, got;

	require_ref();
	read_raw("png_rgb.rgb.raw", &want);
	ck_assert_int_eq(vd_image_load(ref_path("png_rgb.png"), 0, &got), VD_OK);
	ck_assert_int_eq(max_diff(&got, &want), 0);
	vd_image_free(&got);
	vd_image_free(&want);
}
END_TEST

/* Decoding file name must fail with st and a message containing each of the
 * NULL-terminated substrings. */
static void expect_refusal(const char *name, int64_t cap, vd_status st, ...)
{
	size_t len;
	uint8_t *bytes = read_ref(name, &len);
	vd_image out = { 7, 7, (uint8_t *)bytes }; /* junk: decode must zero it */
	vd_status got = vd_image_decode(bytes, len, cap, &out);
	const char *msg = vd_error_message(), *want;
	va_list ap;

	printf("%-20s -> %s: %s\n", name, vd_status_str(got), msg);
	ck_assert_msg(got == st, "%s: got %s (%s), want %s", name, vd_status_str(got),
		      msg, vd_status_str(st));
	ck_assert_ptr_null(out.data);
	ck_assert_int_eq(out.width, 0);
	va_start(ap, st);
	while ((want = va_arg(ap, const char *)))
		ck_assert_msg(strstr(msg, want), "%s: message \"%s\" lacks \"%s\"", name,
			      msg, want);
	va_end(ap);
	free(bytes);
}

START_TEST(test_refuse_truncated)
{
	require_ref();
	expect_refusal("trunc_half.png", 0, VD_ERR_FORMAT, "truncated PNG", NULL);
	expect_refusal("trunc_no_iend.png", 0, VD_ERR_FORMAT, "truncated PNG", "IEND", NULL);
	expect_refusal("trunc_60.jpg", 0, VD_ERR_FORMAT, "truncated JPEG", NULL);
	expect_refusal("trunc_no_eoi.jpg", 0, VD_ERR_FORMAT, "truncated JPEG", "FFD9", NULL);
	expect_refusal("trunc.gif", 0, VD_ERR_FORMAT, "truncated GIF", NULL);
	expect_refusal("trunc.bmp", 0, VD_ERR_FORMAT, "truncated BMP", NULL);
}
END_TEST

START_TEST(test_refuse_other_formats)
{
	vd_image out;

	require_ref();
	expect_refusal("trunc.webp", 0, VD_ERR_FORMAT, "WebP", NULL);
	expect_refusal("image.tiff", 0, VD_ERR_FORMAT, "TIFF", "JPEG, PNG, WebP", NULL);
	expect_refusal("image.avif_like", 0, VD_ERR_FORMAT, "AVIF", NULL);
	expect_refusal("random.bin", 0, VD_ERR_FORMAT, "unrecognised", "4096 bytes", NULL);
	/* What the data says is never quoted: it may be a fetched page. */
	expect_refusal("text.txt", 0, VD_ERR_FORMAT, "text", "28 bytes", NULL);
	ck_assert_ptr_null(strstr(vd_error_message(), "hello"));
	ck_assert_int_eq(vd_image_decode("", 0, 0, &out), VD_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "empty"));
	ck_assert_int_eq(vd_image_decode("\xff\xd8", 2, 0, &out), VD_ERR_FORMAT);
	ck_assert_int_eq(vd_image_decode("GIF89a", 6, 0, &out), VD_ERR_FORMAT);
	ck_assert_int_eq(vd_image_decode(NULL, 5, 0, &out), VD_ERR_INVALID_ARG);
}
END_TEST

START_TEST(test_pixel_cap)
{
	require_ref();
	/* Refused from the header: the file's pixel data is a few bytes, so
	 * without the cap the same file fails later, in the decoder. */
	expect_refusal("huge_10000.png", 1000000, VD_ERR_LIMIT, "10000x10000",
		       "1000000", "max_image_pixels", NULL);
	expect_refusal("huge_10000.png", 0, VD_ERR_FORMAT, "PNG", NULL);
	expect_refusal("huge.jpg", 1000000, VD_ERR_LIMIT, "50000x40000",
		       "max_image_pixels", NULL);
	/* Dimensions near INT_MAX: refused, never multiplied into an overflow. */
	expect_refusal("absurd.png", 0, VD_ERR_LIMIT, "PNG", NULL);
	expect_refusal("absurd.png", 1000000, VD_ERR_LIMIT, NULL);
}
END_TEST

START_TEST(test_load_errors)
{
	const char *missing = "/nonexistent-dir/no-such-image.png";
	vd_image out;

	ck_assert_int_eq(vd_image_load(missing, 0, &out), VD_ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), missing));
	ck_assert_ptr_null(out.data);
	require_ref();
	ck_assert_int_eq(vd_image_load(ref_path("trunc_half.png"), 0, &out), VD_ERR_FORMAT);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "trunc_half.png"));
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "truncated PNG"));
	ck_assert_int_eq(vd_image_load(ref_dir, 0, &out), VD_ERR_IO);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), ref_dir));
}
END_TEST

/* Content hashes are SHA-256 (FIPS 180-2 vectors), whether fed at once or
 * in pieces: cache keys do not depend on how the bytes arrive. */
START_TEST(test_content_hash)
{
	static const char *abc = "abc";
	static const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	static const uint8_t want_abc[VD_HASH_BYTES] = {
		0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
		0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
		0xf2, 0x00, 0x15, 0xad };
	static const uint8_t want_two[VD_HASH_BYTES] = {
		0x24, 0x8d, 0x6a, 0x61, 0xd2, 0x06, 0x38, 0xb8, 0xe5, 0xc0, 0x26, 0x93, 0x0c, 0x3e,
		0x60, 0x39, 0xa3, 0x3c, 0xe4, 0x59, 0x64, 0xff, 0x21, 0x67, 0xf6, 0xec, 0xed, 0xd4,
		0x19, 0xdb, 0x06, 0xc1 };
	uint8_t got[VD_HASH_BYTES];
	vd_hash h;

	ck_assert_int_eq(vd_hash_init(&h), VD_OK);
	vd_hash_update(&h, abc, 3);
	vd_hash_final(&h, got);
	ck_assert_mem_eq(got, want_abc, VD_HASH_BYTES);
	ck_assert_int_eq(vd_hash_init(&h), VD_OK);
	for (size_t i = 0; i < strlen(two); i += 5)
		vd_hash_update(&h, two + i, strlen(two) - i < 5 ? strlen(two) - i : 5);
	vd_hash_final(&h, got);
	ck_assert_mem_eq(got, want_two, VD_HASH_BYTES);
	ck_assert_int_eq(vd_hash_init(&h), VD_OK);
	vd_hash_abort(&h);
	vd_hash_abort(&h); /* a second abort is a no-op */
}
END_TEST

static Suite *image_suite(void)
{
	Suite *s = suite_create("image");
	TCase *tc = tcase_create("image");

	tcase_add_unchecked_fixture(tc, ref_setup, ref_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_resize_parity);
	tcase_add_test(tc, test_window_parity);
	tcase_add_test(tc, test_resize_args);
	tcase_add_test(tc, test_clip_pipeline);
	tcase_add_test(tc, test_clip_speed);
	tcase_add_test(tc, test_crop);
	tcase_add_test(tc, test_to_planes);
	tcase_add_test(tc, test_from_rgb_and_free);
	tcase_add_test(tc, test_decode_parity);
	tcase_add_test(tc, test_rgba_onto_white);
	tcase_add_test(tc, test_load_file);
	tcase_add_test(tc, test_refuse_truncated);
	tcase_add_test(tc, test_refuse_other_formats);
	tcase_add_test(tc, test_pixel_cap);
	tcase_add_test(tc, test_load_errors);
	tcase_add_test(tc, test_content_hash);
	suite_add_tcase(s, tc);
	return s;
}

int main(int argc, char **argv)
{
	SRunner *sr = srunner_create(image_suite());
	int failed;

	(void)argc;
	prog_path = argv[0];
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
