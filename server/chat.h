/* Chat prompts for the OpenAI server: turn a Chat Completions `messages`
 * array into the prompt text through the model's chat template, with image
 * parts becoming the family's placeholders (content format "string") or
 * structured parts the template iterates over ("openai"), as vLLM's
 * --chat-template-content-format does. Collects the image URLs in order. */
#ifndef VD_SERVER_CHAT_H
#define VD_SERVER_CHAT_H

#include <cjson/cJSON.h>

#include "core/engine.h"

typedef struct vd_chat vd_chat;

/* Compile the template: the file at template_path, else the tokenizer's
 * chat_template (tok_template, may be NULL). content_format: 0 auto,
 * 1 string, 2 openai (the config's VD_CFG_CONTENT_* order). */
vd_status vd_chat_create(const char *template_path, const char *tok_template, int content_format,
			 const char *bos_token, const char *eos_token, vd_chat **out);
void vd_chat_destroy(vd_chat *c);

/* Render messages (a cJSON array, validated here: roles, content string or
 * parts of type text / image_url) into *prompt (malloc'ed). Image URLs in
 * order go to *urls (malloc'ed array of borrowed strings from messages),
 * *n_urls. The engine's family gives the placeholder text of each image.
 * Errors: VD_ERR_INVALID_ARG with a message for a 400. */
vd_status vd_chat_render(const vd_chat *c, const cJSON *messages, bool add_generation_prompt,
			 const vd_engine *e, char **prompt, const char ***urls, int *n_urls);

#endif
