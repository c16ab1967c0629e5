/* Multimodal inputs: turn a user's image (file, encoded bytes, RGB pixels or
 * precomputed embeddings) into a processed vd_mm_item through the family's
 * image processor, with a content hash for the caches. */
#ifndef VD_MM_H
#define VD_MM_H

#include "vllmd/llm.h"
#include "vllmd/plugin.h"

/* Decode/process `in` for family fam (state fs). max_pixels caps decoded
 * images (0 = none). On success *out owns its buffers (vd_mm_item_free). */
vd_status vd_mm_prepare(const vd_family *fam, void *fs, const vd_image_input *in,
			const vd_mm_kwargs *kw, int64_t max_pixels, vd_mm_item *out);
/* The same, adding the seconds spent decoding and processing (family's
 * processor and the hash) to *t_decode and *t_process. */
vd_status vd_mm_prepare_timed(const vd_family *fam, void *fs, const vd_image_input *in,
			      const vd_mm_kwargs *kw, int64_t max_pixels, vd_mm_item *out,
			      double *t_decode, double *t_process);
/* Free an item's pixel/embedding buffers; safe on a zeroed item. */
void vd_mm_item_free(vd_mm_item *it);

#endif
