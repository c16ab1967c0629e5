/* Internals shared by the tokenizer's files (tokenizer.c: encode/decode/
 * detok; load.c: tokenizer.json; bpe.c: the model; text.c:
 * buffers, UTF-8, patterns, hash map) and the pipeline's compiled form.
 * Not a public API: nothing outside the files of core/tokenizer/
 * includes this. */
#ifndef VLLMD_TOKENIZER_INTERNAL_H
#define VLLMD_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "vllmd/status.h"
#include "vllmd/tokenizer.h"

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

/* ---- the tokenizer ------------------------------------------------------- */

/* Template marker for "the encoded sequence goes here". */
#define VD_TOK_TMPL_SEQ INT32_MIN

typedef enum { VD_TOK_NORM_PREPEND, VD_TOK_NORM_REPLACE, VD_TOK_NORM_UNICODE } vd_tok_norm_kind;

typedef struct vd_tok_norm_step {
	vd_tok_norm_kind kind;
	char *str; /* prepend text / replacement content */
	size_t str_len;
	vd_tok_pattern pat;
	int form; /* VD_TOK_NORM_UNICODE: utf8proc options */
} vd_tok_norm_step;

typedef enum { VD_TOK_PRE_SPLIT, VD_TOK_PRE_BYTELEVEL, VD_TOK_PRE_METASPACE } vd_tok_pre_kind;
/* HF SplitDelimiterBehavior, in the order of its names. */
typedef enum {
	VD_TOK_B_REMOVED,
	VD_TOK_B_ISOLATED,
	VD_TOK_B_MERGED_PREV,
	VD_TOK_B_MERGED_NEXT,
	VD_TOK_B_CONTIGUOUS
} vd_tok_behavior;
typedef enum { VD_TOK_PREPEND_ALWAYS, VD_TOK_PREPEND_FIRST, VD_TOK_PREPEND_NEVER } vd_tok_prepend;

typedef struct vd_tok_pre_step {
	vd_tok_pre_kind kind;
	vd_tok_pattern pat; /* Split pattern, GPT-2 regex, or the metaspace char */
	vd_tok_behavior behavior;
	bool invert, add_prefix_space, use_regex, split;
	vd_tok_prepend scheme;
	char repl[5]; /* metaspace replacement, UTF-8 */
	size_t repl_len;
} vd_tok_pre_step;

/* Decoder steps, in the order of their names in load.c. */
typedef enum {
	VD_TOK_DEC_REPLACE,
	VD_TOK_DEC_BYTE_FALLBACK,
	VD_TOK_DEC_FUSE,
	VD_TOK_DEC_STRIP,
	VD_TOK_DEC_BYTELEVEL,
	VD_TOK_DEC_METASPACE
} vd_tok_dec_kind;

typedef struct vd_tok_dec_step {
	vd_tok_dec_kind kind;
	vd_tok_pattern pat;
	char *content; /* Replace content */
	size_t content_len;
	uint32_t cp; /* Strip content / Metaspace replacement */
	size_t start, stop;
	bool prepend; /* Metaspace: the first token's replacement chars vanish */
} vd_tok_dec_step;

typedef struct vd_tok_added {
	int32_t id;
	char *content, *norm; /* norm: content normalized (normalized tokens) */
	size_t len, norm_len;
	bool single_word, lstrip, rstrip, normalized, special;
} vd_tok_added;

/* Leftmost-longest matcher over some added tokens: candidates indexed by
 * first byte, longest first. */
typedef struct vd_tok_matcher {
	uint32_t *idx; /* indices into added[] */
	uint32_t lo[257];
	bool use_norm;
} vd_tok_matcher;

struct vd_tokenizer {
	vd_tok_bpe bpe;
	vd_tok_norm_step *norm;
	size_t n_norm;
	vd_tok_pre_step *pre;
	size_t n_pre;
	vd_tok_dec_step *dec;
	size_t n_dec;
	bool has_decoder;
	bool dec_byte_fallback; /* the decoder has a ByteFallback step */
	vd_tok_added *added;
	size_t n_added;
	vd_tok_matcher raw, normd;
	int32_t n_ids;
	const char **id_tok; /* id -> token string (added content wins) */
	uint32_t *id_len;
	unsigned char *id_special;
	vd_tok_strmap added_map; /* keyed by added_keys[id] */
	const char **added_keys;
	uint32_t *added_key_len;
	int32_t *tmpl; /* single-sequence template, VD_TOK_TMPL_SEQ for $A */
	size_t n_tmpl;
	bool has_tmpl;
	int32_t bos_id, eos_id;
	char *chat_template;
};

/* Run the normalizer chain over s; *out points into bufs or at s. */
vd_status vd_tok_normalize(const vd_tokenizer *t, pcre2_match_data *md, const char *s,
			   size_t n, vd_tok_buf bufs[2], const char **out, size_t *out_n);
/* s is a byte-fallback token "<0xXX>"; its byte in *b. */
bool vd_tok_byte_token(const char *s, size_t n, unsigned char *b);

#endif
