/* SHA-256 through OpenSSL's EVP interface (the low-level SHA256_* calls are
 * deprecated in OpenSSL 3). The digest is the same as any SHA-256, so cache
 * keys do not depend on which library computed them. */
#include <openssl/evp.h>

#include "core/io/hash.h"

vd_status vd_hash_init(vd_hash *h)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	h->ctx = NULL;
	if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(c);
		return vd_errorf(VD_ERR_NOMEM, "cannot start a SHA-256 hash (libcrypto)");
	}
	h->ctx = c;
	return VD_OK;
}

void vd_hash_update(vd_hash *h, const void *data, size_t len)
{
	EVP_DigestUpdate(h->ctx, data, len);
}

void vd_hash_final(vd_hash *h, uint8_t out[VD_HASH_BYTES])
{
	unsigned int n = VD_HASH_BYTES;

	EVP_DigestFinal_ex(h->ctx, out, &n);
	vd_hash_abort(h);
}

void vd_hash_abort(vd_hash *h)
{
	EVP_MD_CTX_free(h->ctx);
	h->ctx = NULL;
}
