/* Tokenizer loaded from a Hugging Face tokenizer.json (+ tokenizer_config.json):
 * BPE with the SentencePiece-style normalizer and byte fallback (Llama-2),
 * and byte-level BPE with a regex split and NFC (Qwen2); added and special
 * tokens; decoding; incremental decoding. Implemented in core/tokenizer/.
 * A loaded tokenizer is immutable and safe to share across threads. */
#ifndef VLLMD_TOKENIZER_H
#define VLLMD_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "vllmd/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vd_tokenizer vd_tokenizer;

/* Load tokenizer.json; config_path (tokenizer_config.json) may be NULL and
 * supplies add_bos_token/add_eos_token, bos/eos token names and
 * chat_template when present. Unsupported pipeline pieces are
 * VD_ERR_UNSUPPORTED naming the piece. */
vd_status vd_tokenizer_load(const char *json_path, const char *config_path,
			    vd_tokenizer **out);
void vd_tokenizer_destroy(vd_tokenizer *t);

/* Encode len bytes of UTF-8 text. add_special applies the post-processor
 * (e.g. Llama-2's BOS) as HF `encode(text, add_special_tokens=...)` does.
 * Added/special tokens in the text are matched as HF does. *ids is
 * malloc'ed; the caller frees it. Invalid UTF-8 is VD_ERR_INVALID_ARG. */
vd_status vd_tokenizer_encode(const vd_tokenizer *t, const char *text, size_t len,
			      bool add_special, int32_t **ids, size_t *n);
/* Decode ids to text as HF `decode(ids, skip_special_tokens=...)`.
 * *text is malloc'ed and NUL-terminated. Ids with no token (a model
 * vocabulary padded past the tokenizer's, placeholder ids) decode to
 * nothing, as HF tokenizers does. */
vd_status vd_tokenizer_decode(const vd_tokenizer *t, const int32_t *ids, size_t n,
			      bool skip_special, char **text);
/* Id of an exact token string (vocab or added), or -1. */
int32_t vd_tokenizer_token_to_id(const vd_tokenizer *t, const char *token);
/* Token string of id (borrowed), or NULL. */
const char *vd_tokenizer_id_to_token(const vd_tokenizer *t, int32_t id);
/* One past the largest id (vocab + added tokens). */
int32_t vd_tokenizer_vocab_size(const vd_tokenizer *t);
bool vd_tokenizer_is_special(const vd_tokenizer *t, int32_t id);
/* From tokenizer_config.json / added tokens; -1 when absent. */
int32_t vd_tokenizer_bos_id(const vd_tokenizer *t);
int32_t vd_tokenizer_eos_id(const vd_tokenizer *t);
/* chat_template string from tokenizer_config.json, or NULL (borrowed). */
const char *vd_tokenizer_chat_template(const vd_tokenizer *t);

/* Incremental detokenizer for one sequence: push tokens one at a time and
 * get the newly completed text. Never emits a partial UTF-8 sequence; the
 * concatenation of all deltas (plus vd_detok_flush) equals
 * vd_tokenizer_decode of all pushed ids (with the same skip_special). */
typedef struct vd_detok vd_detok;
/* prompt ids (may be NULL/0) give the decoder its left context, as vLLM's
 * detokenizer does, so leading-space handling matches; with a prompt the
 * deltas + flush equal decode(prompt ++ pushed) past decode(prompt) (e.g.
 * Llama's first word keeps its space) rather than decode(pushed). */
vd_status vd_detok_create(const vd_tokenizer *t, bool skip_special,
			  const int32_t *prompt, size_t n_prompt, vd_detok **out);
void vd_detok_destroy(vd_detok *d);
/* Push one id; *delta (borrowed until the next call) is the new text, possibly
 * "". */
vd_status vd_detok_push(vd_detok *d, int32_t id, const char **delta);
/* Text held back at the end (an incomplete UTF-8 tail decodes as U+FFFD,
 * as HF does). Borrowed until the next call. */
vd_status vd_detok_flush(vd_detok *d, const char **delta);

#ifdef __cplusplus
}
#endif
#endif
