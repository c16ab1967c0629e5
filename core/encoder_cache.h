/* Encoder cache: projected image embeddings on the backend, keyed by image
 * content hash, shared by every sequence that shows the same image. Entries
 * are reference counted by the sequences that still need their rows; an
 * entry nobody references stays cached (LRU) until room is needed. The
 * budget is in embedding rows. Engine thread only. */
#ifndef VD_ENCODER_CACHE_H
#define VD_ENCODER_CACHE_H

#include <stdbool.h>
#include <stdint.h>
#include "vllmd/ops.h"

typedef struct vd_encoder_cache vd_encoder_cache;

vd_status vd_encoder_cache_create(vd_backend *be, int64_t capacity_rows, vd_encoder_cache **out);
void vd_encoder_cache_destroy(vd_encoder_cache *c);

/* The cached embeddings for hash (borrowed), or NULL. */
const vd_tensor *vd_encoder_cache_get(vd_encoder_cache *c, const uint8_t hash[32]);
/* Whether rows more rows fit after evicting unreferenced entries. */
bool vd_encoder_cache_can_fit(const vd_encoder_cache *c, int64_t rows);
/* Store emb (the cache takes it) under hash with one reference. Evicts
 * unreferenced entries as needed; VD_ERR_LIMIT if it still does not fit
 * (emb is freed then). */
vd_status vd_encoder_cache_put(vd_encoder_cache *c, const uint8_t hash[32], vd_tensor *emb);
/* Take / drop one reference to a cached entry. */
void vd_encoder_cache_ref(vd_encoder_cache *c, const uint8_t hash[32]);
void vd_encoder_cache_unref(vd_encoder_cache *c, const uint8_t hash[32]);

int64_t vd_encoder_cache_rows(const vd_encoder_cache *c);    /* rows held */
int64_t vd_encoder_cache_hits(const vd_encoder_cache *c);    /* get() hits */
int64_t vd_encoder_cache_entries(const vd_encoder_cache *c);

#endif
