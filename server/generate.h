/* `vllmd generate`: offline batch inference over a JSONL file, one request
 * per line in vLLM's shapes, one RequestOutput-shaped line per request. */
#ifndef VD_SERVER_GENERATE_H
#define VD_SERVER_GENERATE_H

#include <stdio.h>
#include "vllmd/llm.h"

/* Read requests from in, run them all through llm, write one JSON line per
 * input line to out, in input order. A bad line yields
 * {"line": N, "error": {"message", "type", "code"}} and the rest still run.
 * Returns VD_OK unless reading/writing or the engine failed; *n_failed
 * counts lines that produced an error object. */
vd_status vd_generate_jsonl(vd_llm *llm, FILE *in, FILE *out, int *n_failed);

#endif
