/* The OpenAI-compatible daemon: routes (/v1/chat/completions,
 * /v1/completions, /v1/models, /health, /version, /metrics), request
 * validation, images from image_url parts, streaming (SSE) and whole
 * answers, OpenAI error JSON, and a draining shutdown. */
#ifndef VD_SERVER_OPENAI_H
#define VD_SERVER_OPENAI_H

#include "core/config.h"
#include "server/options.h"

/* Run the daemon with the engine options c and the daemon's options s until
 * SIGTERM/SIGINT; returns the exit code. */
int vd_serve(const vd_config *c, const vd_server_opts *s);

#endif
