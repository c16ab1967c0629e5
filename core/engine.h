/* The engine: a loaded model (backend, plugin family, text decoder,
 * tokenizer, KV cache) and the loop that runs requests through it.
 * Requests run one at a time in this version: each gets its image
 * embeddings, a prefill over its whole prompt and a decode loop through the
 * paged KV cache. The continuous-batching scheduler replaces run_one. */
#ifndef VD_ENGINE_H
#define VD_ENGINE_H

#include "vllmd/llm.h"
#include "vllmd/plugin.h"

typedef struct vd_engine vd_engine;

/* Load everything args names. Errors say which file or option was wrong. */
vd_status vd_engine_create(const vd_engine_args *args, vd_engine **out);
void vd_engine_destroy(vd_engine *e);

/* Run request r (index = its position in the batch, used for default ids)
 * to completion into out. A bad request sets out->status/out->error and
 * returns VD_OK; an error return means the engine itself failed. */
vd_status vd_engine_run_one(vd_engine *e, const vd_request *r, int index, vd_output *out);

const vd_tokenizer *vd_engine_tokenizer(const vd_engine *e);
const vd_family *vd_engine_family(const vd_engine *e);
int vd_engine_max_model_len(const vd_engine *e);

#endif
