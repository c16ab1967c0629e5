/* Content hashes for the caches: an image's or embedding's hash keys the
 * encoder cache and enters the chained block hashes of the prefix cache.
 * SHA-256 from OpenSSL's libcrypto, which runs on the CPU's SHA extensions
 * (or AVX2) where it has them. Incremental: init, update*, final; a hash
 * that is abandoned midway is released with vd_hash_abort. */
#ifndef VD_HASH_H
#define VD_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "vllmd/status.h"

#define VD_HASH_BYTES 32

typedef struct vd_hash {
	void *ctx; /* the library's running state, owned */
} vd_hash;

/* Start a hash. VD_ERR_NOMEM (h left empty) when the library cannot. */
vd_status vd_hash_init(vd_hash *h);
void vd_hash_update(vd_hash *h, const void *data, size_t len);
/* Write the digest to out and release h. */
void vd_hash_final(vd_hash *h, uint8_t out[VD_HASH_BYTES]);
/* Release h without a digest; a no-op on an empty or finished hash. */
void vd_hash_abort(vd_hash *h);

#endif
