/* The OpenAI-compatible daemon: routes (/v1/chat/completions,
 * /v1/completions, /v1/models, /health, /version, /metrics), request
 * validation, images from image_url parts, streaming (SSE) and whole
 * answers, OpenAI error JSON, and a draining shutdown. */
#ifndef VD_SERVER_OPENAI_H
#define VD_SERVER_OPENAI_H

#include "core/config.h"

/* Run the daemon for config c until SIGTERM/SIGINT; returns the exit code. */
int vd_serve(vd_config *c);

#endif
