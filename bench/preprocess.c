/* bench/preprocess: images per second per core through LLaVA-1.5's image
 * input path, decode + preprocess, side by side with PIL in the same run.
 *
 *   bench/preprocess [--image FILE] [--reps N] [--rounds R] [--output-json FILE]
 *
 * vllmd's side is what llava.so does with the engine's calls: vd_image_decode
 * (libjpeg-turbo), vd_image_resize_crop (short side to 336, bicubic, centre
 * 336x336 crop, computing only the crop) and vd_image_to_planes (CLIP mean
 * and std): (3, 336, 336) float32. PIL's side is bench/pil_preprocess.py:
 * PIL decode, resize, crop, numpy normalisation. Both run on one core (this
 * process pins itself to the CPU it starts on; the Python child inherits
 * it), R rounds each, alternating so that a busy machine slows both alike;
 * the best round of each is reported with their ratio. The two results are
 * compared: they must be the same floats (to 1e-6).
 * Without --image, a 1024x768 photo-like JPEG (quality 90, 4:2:0) made by
 * python3-pil is used. */
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vllmd/image.h"

#define SIZE 336

static const float mean[3] = { 0.48145466f, 0.4578275f, 0.40821073f };
static const float stdv[3] = { 0.26862954f, 0.26130258f, 0.27577711f };

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc(n > 0 ? (size_t)n : 1);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return b;
}

/* llava_process_image's steps for a decoded image. */
static int preprocess(const uint8_t *bytes, size_t len, float *planes)
{
	vd_image img, crop;
	int w, h, nw, nh;

	if (vd_image_decode(bytes, len, 0, &img) != VD_OK)
		return -1;
	w = img.width;
	h = img.height;
	if (w <= h) {
		nw = SIZE;
		nh = (int)((double)SIZE * h / w);
	} else {
		nh = SIZE;
		nw = (int)((double)SIZE * w / h);
	}
	if (vd_image_resize_crop(&img, nw, nh, VD_RESAMPLE_BICUBIC, (int)((nw - SIZE) / 2.0),
				 (int)((nh - SIZE) / 2.0), SIZE, SIZE, (const uint8_t[3]){ 0, 0, 0 },
				 &crop) != VD_OK) {
		vd_image_free(&img);
		return -1;
	}
	vd_image_to_planes(&crop, 1.0f / 255.0f, mean, stdv, planes);
	vd_image_free(&crop);
	vd_image_free(&img);
	return 0;
}

/* The PIL side: ms per image, from bench/pil_preprocess.py. */
static double pil_round(const char *script, const char *image, int reps, const char *planes_out)
{
	char cmd[8192], line[256];
	double ms = -1;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "
		 "'%s' '%s' %d %s%s%s", script, image, reps, planes_out ? "'" : "",
		 planes_out ? planes_out : "", planes_out ? "'" : "");
	p = popen(cmd, "r");
	if (!p)
		return -1;
	while (fgets(line, sizeof(line), p))
		sscanf(line, "ms_per_image %lf", &ms);
	if (pclose(p) != 0)
		return -1;
	return ms;
}

static const char *script_path(const char *argv0)
{
	static char buf[4096];
	const char *src = getenv("VD_SRCDIR");
	const char *slash = strrchr(argv0, '/');

	if (src) {
		snprintf(buf, sizeof(buf), "%s/bench/pil_preprocess.py", src);
		if (access(buf, R_OK) == 0)
			return buf;
	}
	snprintf(buf, sizeof(buf), "%.*s/../../bench/pil_preprocess.py",
		 slash ? (int)(slash - argv0) : 1, slash ? argv0 : ".");
	if (access(buf, R_OK) == 0)
		return buf;
	return "bench/pil_preprocess.py";
}

/* A 1024x768 photo-like JPEG (gradient, disc, noise), as python3-pil writes it. */
static int make_jpeg(const char *path)
{
	char cmd[4096];

	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c '\n"
		 "import numpy as np\nfrom PIL import Image\n"
		 "rng = np.random.RandomState(7)\nh, w = 768, 1024\n"
		 "y, x = np.mgrid[0:h, 0:w]\n"
		 "a = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1)\n"
		 "d = (x - w / 2) ** 2 + (y - h / 2) ** 2 < (h / 3) ** 2\n"
		 "a[d] = 255 - a[d]\n"
		 "a = np.clip(a + rng.randint(-12, 13, a.shape), 0, 255).astype(np.uint8)\n"
		 "Image.fromarray(a).save(\"%s\", quality=90)\n'", path);
	return system(cmd);
}

int main(int argc, char **argv)
{
	const char *image = NULL, *json = NULL, *script = script_path(argv[0]);
	char tmp_img[] = "/tmp/vd_bench_XXXXXX.jpg", tmp_planes[] = "/tmp/vd_bench_XXXXXX.f32";
	int reps = 100, rounds = 3, fd;
	double best_vd = 1e30, best_pil = 1e30, maxd = 0;
	uint8_t *bytes;
	float *planes, *ref;
	size_t len, rlen;
	cpu_set_t one;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--image") && i + 1 < argc)
			image = argv[++i];
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			reps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--output-json") && i + 1 < argc)
			json = argv[++i];
		else {
			fprintf(stderr, "usage: bench/preprocess [--image FILE] [--reps N] "
				"[--rounds R] [--output-json FILE]\n");
			return 2;
		}
	}
	if (reps < 1 || rounds < 1) {
		fprintf(stderr, "bench/preprocess: --reps and --rounds must be >= 1\n");
		return 2;
	}
	/* One core: this process and the Python child. */
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu() < 0 ? 0 : sched_getcpu(), &one);
	sched_setaffinity(0, sizeof(one), &one);
	if (!image) {
		fd = mkstemps(tmp_img, 4);
		if (fd < 0 || make_jpeg(tmp_img) != 0) {
			fprintf(stderr, "bench/preprocess: cannot make the test JPEG with python3-pil\n");
			return 1;
		}
		close(fd);
		image = tmp_img;
	}
	fd = mkstemps(tmp_planes, 4);
	if (fd >= 0)
		close(fd);
	bytes = slurp(image, &len);
	planes = malloc((size_t)3 * SIZE * SIZE * sizeof(float));
	if (!bytes || !planes || preprocess(bytes, len, planes) != 0) {
		fprintf(stderr, "bench/preprocess: %s: %s\n", image, vd_error_message());
		return 1;
	}
	for (int r = 0; r < rounds; r++) {
		double t0 = now_s(), vd, pil;

		for (int i = 0; i < reps; i++)
			preprocess(bytes, len, planes);
		vd = (now_s() - t0) / reps * 1e3;
		pil = pil_round(script, image, reps, r == 0 ? tmp_planes : NULL);
		if (pil < 0) {
			fprintf(stderr, "bench/preprocess: %s failed (python3-pil, numpy?)\n", script);
			return 1;
		}
		printf("round %d: vllmd %.3f ms/image, PIL %.3f ms/image\n", r + 1, vd, pil);
		best_vd = fmin(best_vd, vd);
		best_pil = fmin(best_pil, pil);
	}
	ref = (float *)slurp(tmp_planes, &rlen);
	if (!ref || rlen != (size_t)3 * SIZE * SIZE * sizeof(float)) {
		fprintf(stderr, "bench/preprocess: no planes from the PIL side\n");
		return 1;
	}
	for (size_t i = 0; i < (size_t)3 * SIZE * SIZE; i++)
		maxd = fmax(maxd, fabs((double)planes[i] - ref[i]));
	printf("image %s (%zu bytes), one core: vllmd %.3f ms (%.1f images/s), PIL + numpy "
	       "%.3f ms (%.1f images/s): %.2fx; max |difference| of the planes %.2g\n",
	       image == tmp_img ? "1024x768 JPEG q90" : image, len, best_vd, 1e3 / best_vd,
	       best_pil, 1e3 / best_pil, best_pil / best_vd, maxd);
	if (json) {
		FILE *f = fopen(json, "w");

		if (f) {
			fprintf(f, "{\"vllmd_ms\": %.4f, \"pil_ms\": %.4f, \"speedup\": %.3f, "
				"\"max_abs_diff\": %.3g, \"reps\": %d, \"rounds\": %d}\n", best_vd,
				best_pil, best_pil / best_vd, maxd, reps, rounds);
			fclose(f);
		}
	}
	unlink(tmp_planes);
	if (image == tmp_img)
		unlink(tmp_img);
	free(ref);
	free(planes);
	free(bytes);
	return maxd <= 1e-6 ? 0 : 1;
}
