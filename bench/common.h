/* Shared by the benchmark programs: wall-clock time, the family's prompt
 * for an image + text workload, and synthetic test images. Header-only;
 * bench programs are single files. */
#ifndef VLLMD_BENCH_COMMON_H
#define VLLMD_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vllmd/json.h"

static inline double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The architecture of the checkpoint in dir ("LlavaForConditionalGeneration"
 * ...) copied into buf; "" when config.json cannot be read. */
static inline void bench_architecture(const char *dir, char *buf, size_t cap)
{
	char path[4200];
	vd_json *cfg = NULL;
	const char *a;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "%s/config.json", dir);
	if (vd_json_load_file(path, &cfg) != VD_OK)
		return;
	a = vd_json_string_value(vd_json_at(vd_json_get(cfg, "architectures"), 0));
	if (a)
		snprintf(buf, cap, "%s", a);
	vd_json_free(cfg);
}

/* A prompt in the family's chat format with n_images image placeholders and
 * `words` repetitions of " hi" as the text (about one token each). Returns a
 * malloc'd string, or NULL for an unknown architecture. */
static inline char *bench_prompt(const char *arch, int n_images, int words)
{
	size_t cap = 256 + (size_t)n_images * 64 + (size_t)words * 3;
	char *p = malloc(cap);
	size_t n = 0;
	int phi = strstr(arch, "Phi3V") != NULL, qwen = strstr(arch, "Qwen2VL") != NULL;

	if (!p)
		return NULL;
	if (!phi && !qwen && !strstr(arch, "Llava")) {
		free(p);
		return NULL;
	}
	n += (size_t)snprintf(p + n, cap - n, "%s",
			      qwen  ? "<|im_start|>user\n"
			      : phi ? "<|user|>\n"
				    : "USER: ");
	for (int i = 0; i < n_images; i++) {
		if (qwen)
			n += (size_t)snprintf(p + n, cap - n,
					      "<|vision_start|><|image_pad|><|vision_end|>");
		else if (phi)
			n += (size_t)snprintf(p + n, cap - n, "<|image_%d|>\n", i + 1);
		else
			n += (size_t)snprintf(p + n, cap - n, "<image>\n");
	}
	for (int i = 0; i < words; i++)
		n += (size_t)snprintf(p + n, cap - n, " hi");
	snprintf(p + n, cap - n, "%s",
		 qwen  ? "<|im_end|>\n<|im_start|>assistant\n"
		 : phi ? "<|end|>\n<|assistant|>\n"
		       : "\nASSISTANT:");
	return p;
}

/* Deterministic pseudo-random RGB pixels (h, w, 3), different per seed. */
static inline uint8_t *bench_image(int w, int h, uint64_t seed)
{
	uint8_t *px = malloc((size_t)w * (size_t)h * 3);
	uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;

	if (!px)
		return NULL;
	for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		px[i] = (uint8_t)(s >> 24);
	}
	return px;
}

#endif
