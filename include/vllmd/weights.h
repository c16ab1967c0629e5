/* Checkpoint weights: every tensor of a model directory's safetensors files
 * (model.safetensors, or shards listed in model.safetensors.index.json),
 * memory-mapped read-only. Implemented in core/io/safetensors.c. */
#ifndef VLLMD_WEIGHTS_H
#define VLLMD_WEIGHTS_H

#include <stdbool.h>
#include "vllmd/status.h"
#include "vllmd/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vd_weights vd_weights;

/* Open a model directory: model.safetensors.index.json when present (every
 * shard it names must exist), else model.safetensors. Each header is
 * validated (JSON, dtypes, offsets inside the file, no overlap): a corrupt
 * or truncated file is VD_ERR_FORMAT naming file and tensor. */
vd_status vd_weights_open_dir(const char *dir, vd_weights **out);
/* Open one .safetensors file (also used for image-embedding inputs). */
vd_status vd_weights_open_file(const char *path, vd_weights **out);
void vd_weights_close(vd_weights *w);

/* A host (CPU) view of tensor `name` in its stored dtype (f32/f16/bf16,
 * plus i32/i64/u8); valid until close. The memory is mapped read-only:
 * never write through out->data. Missing: VD_ERR_NOT_FOUND naming the
 * tensor and the directory. Other safetensors dtypes (BOOL, F64, I8, F8_*,
 * ...) are listed but refused here with VD_ERR_UNSUPPORTED. A tensor with
 * more than VD_MAX_DIMS dims comes back with its trailing dims folded into
 * the last one (Qwen2-VL's Conv3d weight [1280,3,2,14,14] -> [1280,3,2,196]). */
vd_status vd_weights_get(const vd_weights *w, const char *name, vd_tensor *out);
bool vd_weights_has(const vd_weights *w, const char *name);
/* Tensor names, in file order (shards in name order, then by data offset);
 * i in [0, count). */
int vd_weights_count(const vd_weights *w);
const char *vd_weights_name_at(const vd_weights *w, int i);

#ifdef __cplusplus
}
#endif
#endif
