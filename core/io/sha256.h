/* SHA-256 (FIPS 180-4), used for content hashes of images and embeddings
 * (encoder cache and prefix-cache keys). Incremental: init, update*, final. */
#ifndef VD_SHA256_H
#define VD_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct vd_sha256 {
	uint32_t h[8];
	uint64_t len;      /* bytes hashed so far */
	uint8_t buf[64];
	size_t nbuf;
} vd_sha256_ctx;

void vd_sha256_init(vd_sha256_ctx *s);
void vd_sha256_update(vd_sha256_ctx *s, const void *data, size_t len);
void vd_sha256_final(vd_sha256_ctx *s, uint8_t out[32]);
/* One-shot convenience. */
void vd_sha256(const void *data, size_t len, uint8_t out[32]);

#endif
