/* Shared by the benchmark programs that drive the engine (throughput,
 * latency, vision): the family's prompt for an image + text workload and
 * synthetic images. Header-only; include bench/util.h first. */
#ifndef VLLMD_BENCH_COMMON_H
#define VLLMD_BENCH_COMMON_H

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef VLLMD_BENCH_UTIL_H
#error "include bench/util.h before bench/common.h"
#endif

/* The chat prompt of the model's family with n_img placeholders and a {text}
 * slot; NULL (message printed) for an architecture we have no format for. */
static inline char *bench_family_template(const char *model, int n_img, char *arch, size_t arch_cap)
{
	char path[4096], *json;
	cJSON *cfg, *a;
	sbuf b = { 0 };

	snprintf(path, sizeof(path), "%s/config.json", model);
	if (!(json = read_file(path))) {
		fprintf(stderr, ME ": cannot read %s: %s\n", path, strerror(errno));
		return NULL;
	}
	cfg = cJSON_Parse(json);
	free(json);
	if (!cfg) {
		fprintf(stderr, ME ": %s is not valid JSON\n", path);
		return NULL;
	}
	a = cJSON_GetObjectItemCaseSensitive(cfg, "architectures");
	a = cJSON_IsArray(a) ? cJSON_GetArrayItem(a, 0) : NULL;
	snprintf(arch, arch_cap, "%s", cJSON_IsString(a) ? a->valuestring : "");
	cJSON_Delete(cfg);
	if (strcmp(arch, "LlavaForConditionalGeneration") == 0) {
		sb_puts(&b, "USER: ");
		for (int i = 0; i < n_img; i++)
			sb_puts(&b, "<image>\n");
		sb_puts(&b, "{text}\nASSISTANT:");
	} else if (strcmp(arch, "Phi3VForCausalLM") == 0) {
		sb_puts(&b, "<|user|>\n");
		for (int i = 0; i < n_img; i++) {
			char ph[32];

			snprintf(ph, sizeof(ph), "<|image_%d|>\n", i + 1);
			sb_puts(&b, ph);
		}
		sb_puts(&b, "{text}<|end|>\n<|assistant|>\n");
	} else if (strcmp(arch, "Qwen2VLForConditionalGeneration") == 0) {
		sb_puts(&b, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
			    "<|im_start|>user\n");
		for (int i = 0; i < n_img; i++)
			sb_puts(&b, "<|vision_start|><|image_pad|><|vision_end|>");
		sb_puts(&b, "{text}<|im_end|>\n<|im_start|>assistant\n");
	} else {
		fprintf(stderr, ME ": %s/config.json: no prompt format for architecture "
				"'%s'; pass --prompt-template with {text} and the image placeholders\n",
			model, arch);
		return NULL;
	}
	return b.s;
}

/* Template with {text} replaced by `words` repetitions of "hi". */
static inline char *bench_fill(const char *tmpl, long words)
{
	const char *slot = strstr(tmpl, "{text}");
	sbuf b = { 0 };

	sb_put(&b, tmpl, (size_t)(slot - tmpl));
	for (long i = 0; i < words; i++)
		sb_puts(&b, i ? " hi" : "hi");
	sb_puts(&b, slot + 6);
	return b.s;
}

/* Pixels for `count` distinct images of w x h: image k is the window that
 * starts k pixels into one pseudo-random RGB stream seeded by seed, so no two
 * images are equal (each has its own content hash for the encoder and prefix
 * caches) while memory stays one image plus `count` pixels. (bytes) */
static inline uint8_t *bench_image_pool(long w, long h, long count, uint64_t seed)
{
	size_t n = (size_t)(w * h + count) * 3, i = 0;
	uint8_t *p = malloc(n + 8);
	uint64_t s = seed ^ 0x5eed1234abcdull;

	if (!p)
		return NULL;
	while (i < n) {
		uint64_t r = splitmix64(&s);

		memcpy(p + i, &r, 8);
		i += 8;
	}
	return p;
}

#endif
