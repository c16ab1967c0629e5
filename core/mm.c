/* Multimodal input preparation. Decoding and processing are pure functions
 * of the input, so the content hash covers the decoded pixels (or the
 * embedding bytes and grid) plus the processor overrides: equal hashes mean
 * equal placeholder embeddings. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/mm.h"
#include "core/io/hash.h"

void vd_mm_item_free(vd_mm_item *it)
{
	if (!it)
		return;
	free(it->pixels.data);
	free(it->embeds.data);
	memset(it, 0, sizeof(*it));
}

static vd_status prepare_embeds(const vd_family *fam, void *fs, const vd_image_input *in,
				vd_mm_item *out)
{
	size_t bytes;
	int64_t shape[2] = { in->rows, in->hidden };
	vd_hash h;
	vd_status st;

	if (!in->embeds || in->rows <= 0 || in->hidden <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "image embeddings need data and a (rows, hidden) shape; got (%lld, %lld)",
				 (long long)in->rows, (long long)in->hidden);
	if (!fam->check_embeds)
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "the %s family does not take precomputed image embeddings", fam->name);
	bytes = (size_t)in->rows * (size_t)in->hidden * sizeof(float);
	out->kind = VD_MM_EMBEDS;
	out->embeds.dtype = VD_DTYPE_F32;
	out->embeds.device = VD_DEVICE_CPU;
	vd_tensor_set_shape(&out->embeds, 2, shape);
	out->embeds.data = malloc(bytes);
	if (!out->embeds.data)
		return vd_errorf(VD_ERR_NOMEM, "out of memory copying image embeddings");
	memcpy(out->embeds.data, in->embeds, bytes);
	if (in->n_embed_meta < 0 || in->n_embed_meta > VD_MM_META_MAX)
		return vd_errorf(VD_ERR_INVALID_ARG, "image embeddings carry %d metadata values "
				 "(at most %d)", in->n_embed_meta, VD_MM_META_MAX);
	out->n_meta = in->n_embed_meta;
	memcpy(out->meta, in->embed_meta, (size_t)in->n_embed_meta * sizeof(int64_t));
	st = fam->check_embeds(fs, out);
	if (st == VD_OK)
		st = vd_hash_init(&h);
	if (st != VD_OK)
		return st;
	vd_hash_update(&h, "embeds", 6);
	vd_hash_update(&h, shape, sizeof(shape));
	vd_hash_update(&h, out->meta, sizeof(out->meta));
	vd_hash_update(&h, in->embeds, bytes);
	vd_hash_final(&h, out->hash);
	return VD_OK;
}

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

vd_status vd_mm_prepare(const vd_family *fam, void *fs, const vd_image_input *in,
			const vd_mm_kwargs *kw, int64_t max_pixels, vd_mm_item *out)
{
	double t_decode = 0.0, t_process = 0.0;

	return vd_mm_prepare_timed(fam, fs, in, kw, max_pixels, out, &t_decode, &t_process);
}

vd_status vd_mm_prepare_timed(const vd_family *fam, void *fs, const vd_image_input *in,
			      const vd_mm_kwargs *kw, int64_t max_pixels, vd_mm_item *out,
			      double *t_decode, double *t_process)
{
	vd_image img = { 0 };
	vd_hash h;
	int32_t dims[2];
	double t0 = mono(), t1;
	vd_status st;

	memset(out, 0, sizeof(*out));
	out->struct_size = sizeof(*out);
	switch (in->kind) {
	case VD_IMAGE_EMBEDS:
		st = prepare_embeds(fam, fs, in, out);
		if (st != VD_OK)
			vd_mm_item_free(out);
		*t_process += mono() - t0;
		return st;
	case VD_IMAGE_PATH:
		if (!in->path)
			return vd_errorf(VD_ERR_INVALID_ARG, "image input has no path");
		st = vd_image_load(in->path, max_pixels, &img);
		break;
	case VD_IMAGE_BYTES:
		if (!in->bytes || !in->len)
			return vd_errorf(VD_ERR_INVALID_ARG, "image input has no bytes");
		st = vd_image_decode(in->bytes, in->len, max_pixels, &img);
		break;
	case VD_IMAGE_RGB:
		if (!in->rgb || in->width <= 0 || in->height <= 0)
			return vd_errorf(VD_ERR_INVALID_ARG, "RGB image input needs pixels and a size");
		if (max_pixels > 0 && (int64_t)in->width * in->height > max_pixels)
			return vd_errorf(VD_ERR_LIMIT,
					 "image of %dx%d pixels exceeds the limit of %lld "
					 "(raise max_image_pixels)", in->width, in->height,
					 (long long)max_pixels);
		st = vd_image_from_rgb(in->rgb, in->width, in->height, &img);
		break;
	default:
		return vd_errorf(VD_ERR_INVALID_ARG, "unknown image input kind %d", (int)in->kind);
	}
	t1 = mono();
	*t_decode += t1 - t0;
	if (st != VD_OK)
		return st;
	if (!fam->process_image) {
		st = vd_errorf(VD_ERR_UNSUPPORTED, "the %s family takes no images", fam->name);
		goto out;
	}
	st = fam->process_image(fs, &img, kw, out);
	if (st != VD_OK) {
		vd_mm_item_free(out);
		goto out;
	}
	out->struct_size = sizeof(*out);
	st = vd_hash_init(&h);
	if (st != VD_OK) {
		vd_mm_item_free(out);
		goto out;
	}
	dims[0] = img.width;
	dims[1] = img.height;
	vd_hash_update(&h, "pixels", 6);
	vd_hash_update(&h, dims, sizeof(dims));
	if (kw) {
		int64_t k[3] = { kw->min_pixels, kw->max_pixels, kw->num_crops };

		vd_hash_update(&h, k, sizeof(k));
	}
	vd_hash_update(&h, img.data, (size_t)img.width * (size_t)img.height * 3);
	vd_hash_final(&h, out->hash);
out:
	vd_image_free(&img);
	*t_process += mono() - t1;
	return st;
}
