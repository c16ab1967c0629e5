/* BPE model of a Hugging Face tokenizer.json: vocab, ranked merges (either
 * "a b" strings or ["a", "b"] pairs), unk with fuse_unk, byte_fallback,
 * ignore_merges, continuing_subword_prefix/end_of_word_suffix. Encoding one
 * word follows HF's Word::merge_all: a min-heap of (rank, position) over
 * adjacent symbol pairs, stale entries skipped. The model is read-only after
 * load, so encoding is thread-safe. */
#include "core/tokenizer/internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VOCAB (1 << 24)
#define METASPACE "\xE2\x96\x81" /* U+2581 */

static vd_tok_merge_slot *merge_slot(const vd_tok_bpe *m, int32_t a, int32_t b, uint64_t *key)
{
	uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
	uint64_t h = k * 0x9E3779B97F4A7C15ull;
	*key = k;
	for (size_t i = (size_t)(h >> 32) & m->merge_mask;; i = (i + 1) & m->merge_mask)
		if (m->merges[i].key == k || m->merges[i].key == 0)
			return &m->merges[i];
}

static const vd_tok_merge_slot *merge_get(const vd_tok_bpe *m, int32_t a, int32_t b)
{
	uint64_t k;
	const vd_tok_merge_slot *s = merge_slot(m, a, b, &k);
	return s->key ? s : NULL;
}

static vd_status load_vocab(vd_tok_bpe *m, const cJSON *vocab)
{
	if (!cJSON_IsObject(vocab))
		return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: model.vocab is not an object");
	size_t total = 0;
	int32_t max_id = -1;
	const cJSON *e;
	cJSON_ArrayForEach(e, vocab)
	{
		double d = e->valuedouble;
		if (!cJSON_IsNumber(e) || d < 0 || d >= MAX_VOCAB || d != (double)(int32_t)d)
			return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: vocab entry %s has a bad id",
					 e->string);
		if ((int32_t)d > max_id)
			max_id = (int32_t)d;
		total += strlen(e->string) + 1;
	}
	m->n_vocab = max_id + 1;
	m->tok = calloc((size_t)m->n_vocab + 1, sizeof(*m->tok));
	m->tok_len = calloc((size_t)m->n_vocab + 1, sizeof(*m->tok_len));
	m->arena = malloc(total + 1);
	if (!m->tok || !m->tok_len || !m->arena)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory loading the vocab");
	vd_status st = vd_tok_strmap_init(&m->map, (size_t)m->n_vocab,
					  (const char *const *)m->tok, m->tok_len);
	if (st)
		return st;
	char *p = m->arena;
	cJSON_ArrayForEach(e, vocab)
	{
		int32_t id = (int32_t)e->valuedouble;
		size_t len = strlen(e->string);
		memcpy(p, e->string, len + 1);
		m->tok[id] = p;
		m->tok_len[id] = (uint32_t)len;
		vd_tok_strmap_put(&m->map, id);
		p += len + 1;
	}
	return VD_OK;
}

/* One merge rule "a b" or ["a", "b"] -> its two halves. */
static vd_status merge_parts(const cJSON *e, size_t rank, const char **a, size_t *na,
			     const char **b, size_t *nb)
{
	if (cJSON_IsString(e)) {
		const char *s = e->valuestring, *sp = strchr(s, ' ');
		if (sp && !strchr(sp + 1, ' ')) {
			*a = s;
			*na = (size_t)(sp - s);
			*b = sp + 1;
			*nb = strlen(sp + 1);
			return VD_OK;
		}
	} else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
		   cJSON_IsString(e->child) && cJSON_IsString(e->child->next)) {
		*a = e->child->valuestring;
		*na = strlen(*a);
		*b = e->child->next->valuestring;
		*nb = strlen(*b);
		return VD_OK;
	}
	return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: merge %zu is not \"a b\" or [a, b]",
			 rank + 1);
}

static vd_status load_merges(vd_tok_bpe *m, const cJSON *merges)
{
	if (!merges || cJSON_IsNull(merges))
		merges = NULL;
	else if (!cJSON_IsArray(merges))
		return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: model.merges is not an array");
	size_t n = merges ? (size_t)cJSON_GetArraySize(merges) : 0, cap = 16;
	while (cap < n * 2)
		cap *= 2;
	m->merges = calloc(cap, sizeof(*m->merges));
	if (!m->merges)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory (%zu merges)", n);
	m->merge_mask = cap - 1;
	size_t plen = m->prefix ? strlen(m->prefix) : 0, rank = 0;
	vd_tok_buf cat = {0};
	vd_status st = VD_OK;
	const cJSON *e;
	cJSON_ArrayForEach(e, merges)
	{
		const char *a = "", *b = "";
		size_t na = 0, nb = 0;
		if ((st = merge_parts(e, rank, &a, &na, &b, &nb)))
			break;
		int32_t ia = vd_tok_strmap_get(&m->map, a, na);
		int32_t ib = vd_tok_strmap_get(&m->map, b, nb);
		/* The merged token drops the right half's continuing-subword prefix. */
		size_t skip = nb >= plen && !memcmp(b, m->prefix ? m->prefix : "", plen) ? plen : 0;
		cat.len = 0;
		if ((st = vd_tok_buf_append(&cat, a, na)) ||
		    (st = vd_tok_buf_append(&cat, b + skip, nb - skip)))
			break;
		int32_t inew = vd_tok_strmap_get(&m->map, cat.p, cat.len);
		if (ia < 0 || ib < 0 || inew < 0) {
			st = vd_errorf(VD_ERR_FORMAT,
				       "tokenizer.json: merge %zu (%.*s %.*s) uses a token not in the vocab",
				       rank + 1, (int)na, a, (int)nb, b);
			break;
		}
		uint64_t key;
		vd_tok_merge_slot *s = merge_slot(m, ia, ib, &key);
		/* A repeated pair keeps its last rank, as HF's HashMap collect does. */
		s->key = key;
		s->rank = (uint32_t)rank;
		s->new_id = inew;
		rank++;
	}
	vd_tok_buf_free(&cat);
	return st;
}

static vd_status opt_string(const cJSON *model, const char *key, char **out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, key);
	*out = NULL;
	if (!v || cJSON_IsNull(v))
		return VD_OK;
	if (!cJSON_IsString(v))
		return vd_errorf(VD_ERR_FORMAT, "tokenizer.json: model.%s is not a string", key);
	if (!v->valuestring[0])
		return VD_OK; /* "" adds nothing, the same as absent */
	*out = strdup(v->valuestring);
	return *out ? VD_OK : vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
}

vd_status vd_tok_bpe_load(vd_tok_bpe *m, const void *model_json)
{
	const cJSON *model = model_json;
	vd_status st;
	memset(m, 0, sizeof(*m));
	m->unk_id = -1;
	for (int b = 0; b < 256; b++)
		m->byte_id[b] = -1;
	const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
	if (dropout && cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
		return vd_errorf(VD_ERR_UNSUPPORTED, "tokenizer.json: BPE dropout is not supported");
	if ((st = opt_string(model, "continuing_subword_prefix", &m->prefix)) ||
	    (st = opt_string(model, "end_of_word_suffix", &m->suffix)) ||
	    (st = load_vocab(m, cJSON_GetObjectItemCaseSensitive(model, "vocab"))) ||
	    (st = load_merges(m, cJSON_GetObjectItemCaseSensitive(model, "merges"))))
		goto fail;
	m->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));
	m->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
	m->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
	const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
	if (cJSON_IsString(unk))
		m->unk_id = vd_tok_strmap_get(&m->map, unk->valuestring, strlen(unk->valuestring));
	/* Characters below U+0800 are looked up by code point, not hashed. */
	for (uint32_t cp = 0; cp < 0x800; cp++) {
		char u[4];
		size_t k = vd_tok_utf8_put(cp, u);
		m->char_id[cp] = vd_tok_strmap_get(&m->map, u, k);
	}
	/* "▁" itself must be known, or unk fusing could span a cut. */
	m->metaspace_cut = vd_tok_strmap_get(&m->map, METASPACE, 3) >= 0;
	for (int32_t id = 0; id < m->n_vocab && m->metaspace_cut; id++) {
		const char *tk = m->tok[id], *hit;
		for (size_t at = 0; tk && (hit = strstr(tk + at, METASPACE)); at = (size_t)(hit - tk) + 1)
			if (hit > tk && (hit - tk < 3 || memcmp(hit - 3, METASPACE, 3)))
				m->metaspace_cut = false;
	}
	for (int b = 0; b < 256; b++) {
		char name[8];
		snprintf(name, sizeof(name), "<0x%02X>", b);
		m->byte_id[b] = vd_tok_strmap_get(&m->map, name, 6);
	}
	return VD_OK;
fail:
	vd_tok_bpe_free(m);
	return st;
}

void vd_tok_bpe_free(vd_tok_bpe *m)
{
	vd_tok_strmap_free(&m->map);
	free(m->tok);
	free(m->tok_len);
	free(m->arena);
	free(m->merges);
	free(m->prefix);
	free(m->suffix);
	memset(m, 0, sizeof(*m));
	m->unk_id = -1;
}

/* ---- encoding one word ---------------------------------------------------- */

typedef struct sym {
	int32_t id, prev, next;
	bool alive;
} sym;

typedef struct cand {
	uint64_t key; /* rank << 32 | position: lower merges first */
	int32_t new_id;
} cand;

static bool cand_less(const cand *x, const cand *y)
{
	return x->key < y->key;
}

static void heap_push(cand *h, size_t *n, cand c)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!cand_less(&c, &h[parent]))
			break;
		h[i] = h[parent];
		i = parent;
	}
	h[i] = c;
}

static cand heap_pop(cand *h, size_t *n)
{
	cand top = h[0], last = h[--*n];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, s = i;
		const cand *best = &last;
		if (l < *n && cand_less(&h[l], best)) {
			s = l;
			best = &h[l];
		}
		if (r < *n && cand_less(&h[r], best))
			s = r;
		if (s == i)
			break;
		h[i] = h[s];
		i = s;
	}
	if (*n)
		h[i] = last;
	return top;
}

static void push_pair(const vd_tok_bpe *m, const sym *s, int32_t pos, cand *h, size_t *nh)
{
	if (pos < 0 || s[pos].next < 0)
		return;
	const vd_tok_merge_slot *g = merge_get(m, s[pos].id, s[s[pos].next].id);
	if (g)
		heap_push(h, nh, (cand){(uint64_t)g->rank << 32 | (uint32_t)pos, g->new_id});
}

/* The initial symbols of w: one per character (with the subword prefix on
 * all but the first and the suffix on the last), byte tokens for characters
 * out of the vocab when byte_fallback is on, else unk (fused runs when
 * fuse_unk). Mirrors HF BPE::merge_word, including that a pending unk is
 * not flushed by byte-fallback tokens. */
static vd_status initial_symbols(const vd_tok_bpe *m, const char *w, size_t n, sym *s,
				 size_t *ns, vd_tok_buf *tmp)
{
	bool unk_pending = false;
	size_t k = 0;
	vd_status st;
	for (size_t i = 0; i < n;) {
		size_t j = i;
		vd_tok_utf8_next(w, &j);
		const char *c = w + i;
		size_t cl = j - i;
		bool first = i == 0, last = j == n;
		if ((!first && m->prefix) || (last && m->suffix)) {
			tmp->len = 0;
			if ((!first && m->prefix &&
			     (st = vd_tok_buf_append(tmp, m->prefix, strlen(m->prefix)))) ||
			    (st = vd_tok_buf_append(tmp, c, cl)) ||
			    (last && m->suffix &&
			     (st = vd_tok_buf_append(tmp, m->suffix, strlen(m->suffix)))))
				return st;
			c = tmp->p;
			cl = tmp->len;
		}
		int32_t id;
		if (c == w + i && cl <= 2) {
			size_t at = i;
			id = m->char_id[vd_tok_utf8_next(w, &at)];
		} else {
			id = vd_tok_strmap_get(&m->map, c, cl);
		}
		i = j;
		if (id >= 0) {
			if (unk_pending)
				s[k++].id = m->unk_id;
			unk_pending = false;
			s[k++].id = id;
			continue;
		}
		if (m->byte_fallback) {
			bool all = true;
			for (size_t b = 0; b < cl; b++)
				all = all && m->byte_id[(unsigned char)c[b]] >= 0;
			if (all) {
				for (size_t b = 0; b < cl; b++)
					s[k++].id = m->byte_id[(unsigned char)c[b]];
				continue;
			}
		}
		if (m->unk_id < 0)
			continue; /* no unk token: HF drops the character */
		if (unk_pending && !m->fuse_unk)
			s[k++].id = m->unk_id;
		unk_pending = true;
	}
	if (unk_pending)
		s[k++].id = m->unk_id;
	*ns = k;
	return VD_OK;
}

static vd_status encode_word(const vd_tok_bpe *m, const char *w, size_t n, vd_tok_ids *out);

vd_status vd_tok_bpe_encode(const vd_tok_bpe *m, const char *w, size_t n, vd_tok_ids *out)
{
	/* Affixes and ignore_merges look at the whole word: no cutting then. */
	if (!m->metaspace_cut || m->prefix || m->suffix || m->ignore_merges)
		return encode_word(m, w, n, out);
	size_t start = 0;
	vd_status st;
	for (size_t i = 1; i + 3 <= n; i++)
		if (!memcmp(w + i, METASPACE, 3) && (i < 3 || memcmp(w + i - 3, METASPACE, 3))) {
			if ((st = encode_word(m, w + start, i - start, out)))
				return st;
			start = i;
		}
	return encode_word(m, w + start, n - start, out);
}

static vd_status encode_word(const vd_tok_bpe *m, const char *w, size_t n, vd_tok_ids *out)
{
	if (!n)
		return VD_OK;
	if (m->ignore_merges) {
		int32_t id = vd_tok_strmap_get(&m->map, w, n);
		if (id >= 0)
			return vd_tok_ids_push(out, id);
	}
	/* At most one symbol per byte (plus affix bytes under byte fallback);
	 * each merge pushes at most two candidates. */
	size_t cap = n + (m->prefix ? strlen(m->prefix) * n : 0) + (m->suffix ? strlen(m->suffix) : 0);
	sym stack_s[128];
	cand stack_h[384];
	sym *s = cap <= 128 ? stack_s : malloc(cap * sizeof(*s));
	cand *h = cap <= 128 ? stack_h : malloc(3 * cap * sizeof(*h));
	vd_tok_buf tmp = {0};
	vd_status st = VD_OK;
	size_t ns = 0, nh = 0;
	if (!s || !h) {
		st = vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory (word of %zu bytes)", n);
		goto out;
	}
	if ((st = initial_symbols(m, w, n, s, &ns, &tmp)))
		goto out;
	for (size_t i = 0; i < ns; i++) {
		s[i].prev = (int32_t)i - 1;
		s[i].next = i + 1 < ns ? (int32_t)i + 1 : -1;
		s[i].alive = true;
	}
	for (size_t i = 0; i + 1 < ns; i++)
		push_pair(m, s, (int32_t)i, h, &nh);
	while (nh) {
		cand c = heap_pop(h, &nh);
		uint32_t pos = (uint32_t)c.key;
		sym *a = &s[pos];
		if (!a->alive || a->next < 0)
			continue;
		sym *b = &s[a->next];
		const vd_tok_merge_slot *g = merge_get(m, a->id, b->id);
		if (!g || g->new_id != c.new_id)
			continue; /* stale: one side merged since this was queued */
		a->id = c.new_id;
		b->alive = false;
		a->next = b->next;
		if (b->next >= 0)
			s[b->next].prev = (int32_t)pos;
		push_pair(m, s, a->prev, h, &nh);
		push_pair(m, s, (int32_t)pos, h, &nh);
	}
	for (size_t i = 0; i < ns && !st; i++)
		if (s[i].alive)
			st = vd_tok_ids_push(out, s[i].id);
out:
	if (s != stack_s)
		free(s);
	if (h != stack_h)
		free(h);
	vd_tok_buf_free(&tmp);
	return st;
}
