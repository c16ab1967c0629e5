/* Internals shared by the tokenizer's files (tokenizer.c, tok_text.c,
 * tok_bpe.c): growable buffers and string lists, UTF-8 and byte-level helpers,
 * literal/regex patterns, and the BPE model. Not a public API: nothing outside
 * core/tokenizer.c and core/tok_*.c includes this. */
#ifndef VLLMD_TOKENIZER_INTERNAL_H
#define VLLMD_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "vllmd/status.h"

/* ---- buffers ---------------------------------------------------------- */

/* Growable byte buffer; p is NUL-terminated whenever cap > 0. */
typedef struct vd_tok_buf {
	char *p;
	size_t len, cap;
} vd_tok_buf;

vd_status vd_tok_buf_append(vd_tok_buf *b, const void *s, size_t n);
void vd_tok_buf_free(vd_tok_buf *b);

/* Growable int32 vector. */
typedef struct vd_tok_ids {
	int32_t *v;
	size_t n, cap;
} vd_tok_ids;

vd_status vd_tok_ids_push(vd_tok_ids *a, int32_t id);

/* A list of strings stored back to back in one buffer: string i is
 * buf.p[start(i) .. end[i]) with start(0) = 0 and start(i) = end[i-1]. */
typedef struct vd_tok_list {
	vd_tok_buf buf;
	size_t *end;
	size_t n, cap;
} vd_tok_list;

vd_status vd_tok_list_push(vd_tok_list *l, const char *s, size_t n);
/* Append bytes to the last string of l (which must have one). */
vd_status vd_tok_list_extend_last(vd_tok_list *l, const char *s, size_t n);
void vd_tok_list_clear(vd_tok_list *l);
void vd_tok_list_free(vd_tok_list *l);
static inline const char *vd_tok_list_at(const vd_tok_list *l, size_t i, size_t *n)
{
	size_t s = i ? l->end[i - 1] : 0;
	*n = l->end[i] - s;
	return l->buf.p + s;
}

/* ---- UTF-8 and Unicode ------------------------------------------------ */

bool vd_tok_utf8_valid(const char *s, size_t n);
/* Decode the code point at s[*i] (s must be valid UTF-8) and advance *i. */
uint32_t vd_tok_utf8_next(const char *s, size_t *i);
/* Length of the code point starting with lead byte c (1 for stray bytes). */
size_t vd_tok_utf8_len(unsigned char c);
size_t vd_tok_utf8_put(uint32_t cp, char out[4]);
/* Append s decoded leniently: each maximal invalid subsequence becomes one
 * U+FFFD (Unicode "substitution of maximal subparts", as Rust's
 * String::from_utf8_lossy and WHATWG TextDecoder do). */
vd_status vd_tok_utf8_lossy(const char *s, size_t n, vd_tok_buf *out);
/* Unicode White_Space (what Oniguruma's and Rust regex's \s match). */
bool vd_tok_is_space(uint32_t cp);
/* Regex \w: letters, marks, decimal digits, connector punctuation. */
bool vd_tok_is_word(uint32_t cp);

/* GPT-2 byte-level alphabet: byte b is written as code point
 * vd_tok_byte_cp(b); vd_tok_char_byte(cp) is the inverse, or -1. */
uint32_t vd_tok_byte_cp(unsigned char b);
int vd_tok_char_byte(uint32_t cp);

/* ---- patterns (HF {"String": ...} / {"Regex": ...}) --------------------- */

typedef struct vd_tok_pattern {
	char *lit; /* literal string (NULL for a regex) */
	size_t lit_len;
	pcre2_code *re;
} vd_tok_pattern;

/* Build from a literal or an Oniguruma-style regex; the regex is translated
 * to PCRE2 (UTF, UCP, multiline like Ruby syntax; \s/\S as White_Space).
 * what names the owner in error messages. */
vd_status vd_tok_pattern_init(vd_tok_pattern *p, const char *s, size_t n, bool is_regex,
			      const char *what);
void vd_tok_pattern_free(vd_tok_pattern *p);
/* Find the first non-empty match in s[from..n) (s valid UTF-8); md is scratch
 * match data (unused for literals). Returns 1 and [*ms, *me) on a match, 0 on
 * none, -1 when the regex engine gave up (match or JIT stack limit). */
int vd_tok_pattern_find(const vd_tok_pattern *p, pcre2_match_data *md, const char *s,
			 size_t n, size_t from, size_t *ms, size_t *me);
/* Match data large enough for any pattern; NULL on OOM. */
pcre2_match_data *vd_tok_match_data(void);
/* Append s with every match of p replaced by content. */
vd_status vd_tok_pattern_replace(const vd_tok_pattern *p, pcre2_match_data *md,
				 const char *s, size_t n, const char *content,
				 size_t content_len, vd_tok_buf *out);

/* ---- string -> id hash map (keys borrowed from the caller) ------------- */

typedef struct vd_tok_strmap {
	uint32_t *slot_hash;
	int32_t *slot_id; /* -1 = empty */
	const char *const *keys; /* keys[id], NUL-terminated, borrowed */
	const uint32_t *key_len; /* key_len[id] */
	size_t mask;
} vd_tok_strmap;

uint32_t vd_tok_hash(const char *s, size_t n);
vd_status vd_tok_strmap_init(vd_tok_strmap *m, size_t expected, const char *const *keys,
			     const uint32_t *key_len);
/* Insert id (its key is keys[id]); an existing equal key is overwritten. */
void vd_tok_strmap_put(vd_tok_strmap *m, int32_t id);
int32_t vd_tok_strmap_get(const vd_tok_strmap *m, const char *s, size_t n);
void vd_tok_strmap_free(vd_tok_strmap *m);

/* ---- BPE model ----------------------------------------------------------- */

typedef struct vd_tok_merge_slot {
	uint64_t key; /* (left << 32 | right) + 1; 0 = empty */
	uint32_t rank;
	int32_t new_id;
} vd_tok_merge_slot;

typedef struct vd_tok_bpe {
	int32_t n_vocab; /* model ids are 0 .. n_vocab-1 */
	char **tok; /* tok[id], NUL-terminated, owned (one arena: tok[0]) */
	uint32_t *tok_len;
	char *arena;
	vd_tok_strmap map;
	vd_tok_merge_slot *merges;
	size_t merge_mask;
	int32_t unk_id; /* -1: none */
	int32_t byte_id[256]; /* <0xXX> tokens, -1 when absent */
	int32_t char_id[0x800]; /* id of each one- or two-byte character, or -1 */
	bool fuse_unk, byte_fallback, ignore_merges;
	/* No vocab token has "▁" after another character, so a word may be cut
	 * before each run of "▁" and the parts encoded alone (same result,
	 * small heaps): what makes Llama's pre-tokenizer-less text fast. */
	bool metaspace_cut;
	char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix */
} vd_tok_bpe;

/* Build the model from the "model" object of tokenizer.json (a cJSON node;
 * declared void to keep cJSON out of this header). */
vd_status vd_tok_bpe_load(vd_tok_bpe *m, const void *model_json);
void vd_tok_bpe_free(vd_tok_bpe *m);
/* Append the ids of one pre-tokenized word. */
vd_status vd_tok_bpe_encode(const vd_tok_bpe *m, const char *w, size_t n, vd_tok_ids *out);

#endif
