/* Tokenizer runtime over the compiled pipeline (load.c builds it),
 * following the Hugging Face `tokenizers` crate step by step: added tokens
 * are split out of the raw text (then out of the normalized text), the rest
 * is normalized, pre-tokenized and run through the BPE model; the template
 * adds BOS/EOS. Decoding runs the decoder chain over token strings; vd_detok
 * streams it. A tokenizer is read-only here, so threads may share it; all
 * scratch is per call. */
#include "vllmd/tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/tokenizer/internal.h"

/* vLLM's detokenizer starts from this many prompt tokens before read_offset
 * (INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET) and keeps 2 more as context. */
#define DETOK_OFFSET 5

/* ======================================================================== */
/* Encoding                                                                  */
/* ======================================================================== */

typedef struct range {
	size_t s, e;
	int32_t id; /* added token id, or -1 for text; for splits: 1 = match */
} range;

typedef struct ranges {
	range *v;
	size_t n, cap;
} ranges;

static vd_status ranges_push(ranges *r, size_t s, size_t e, int32_t id)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 32;
		range *v = realloc(r->v, cap * sizeof(*v));
		if (!v)
			return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n++] = (range){s, e, id};
	return VD_OK;
}

typedef struct enc_ctx {
	const vd_tokenizer *t;
	vd_tok_ids out;
	vd_tok_buf nbuf[2], tmp;
	vd_tok_list pl[2];
	ranges raw_seg, norm_seg, found, split;
	pcre2_match_data *md;
} enc_ctx;

static bool below_u0300(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0xCC)
			return false;
	return true;
}

vd_status vd_tok_normalize(const vd_tokenizer *t, pcre2_match_data *md, const char *s,
			   size_t n, vd_tok_buf bufs[2], const char **out, size_t *out_n)
{
	const char *cur = s;
	size_t cur_n = n;
	vd_status st;
	for (size_t i = 0; i < t->n_norm; i++) {
		const vd_tok_norm_step *ns = &t->norm[i];
		vd_tok_buf *o = &bufs[i & 1];
		o->len = 0;
		switch (ns->kind) {
		case VD_TOK_NORM_PREPEND:
			/* HF prepends only to non-empty strings. */
			if (cur_n && (st = vd_tok_buf_append(o, ns->str, ns->str_len)))
				return st;
			st = vd_tok_buf_append(o, cur, cur_n);
			break;
		case VD_TOK_NORM_REPLACE:
			st = vd_tok_pattern_replace(&ns->pat, md, cur, cur_n, ns->str, ns->str_len, o);
			break;
		default: {
			/* Text below U+0300 (lead bytes < 0xCC) is already NFC: it has
			 * no combining marks, Hangul jamo or other composables. */
			if (ns->form == (UTF8PROC_STABLE | UTF8PROC_COMPOSE) &&
			    below_u0300(cur, cur_n)) {
				st = vd_tok_buf_append(o, cur, cur_n);
				break;
			}
			utf8proc_uint8_t *dst = NULL;
			utf8proc_ssize_t k = cur_n ? utf8proc_map((const utf8proc_uint8_t *)cur,
								  (utf8proc_ssize_t)cur_n, &dst, ns->form)
						   : 0;
			if (k < 0)
				return vd_errorf(k == UTF8PROC_ERROR_NOMEM ? VD_ERR_NOMEM : VD_ERR_INVALID_ARG,
						 "tokenizer: Unicode normalization failed: %s",
						 utf8proc_errmsg(k));
			st = vd_tok_buf_append(o, dst, (size_t)k);
			free(dst);
			break;
		}
		}
		if (st)
			return st;
		cur = o->p;
		cur_n = o->len;
	}
	*out = cur;
	*out_n = cur_n;
	return VD_OK;
}

/* Start of the run of whitespace that ends s[0..end). */
static size_t space_run_start(const char *s, size_t end)
{
	while (end > 0) {
		size_t b = end - 1;
		while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80)
			b--;
		size_t i = b;
		if (!vd_tok_is_space(vd_tok_utf8_next(s, &i)))
			break;
		end = b;
	}
	return end;
}

static size_t space_run_end(const char *s, size_t n, size_t from)
{
	while (from < n) {
		size_t i = from;
		if (!vd_tok_is_space(vd_tok_utf8_next(s, &i)))
			break;
		from = i;
	}
	return from;
}

static bool word_before(const char *s, size_t end)
{
	if (!end)
		return false;
	size_t b = end - 1;
	while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80)
		b--;
	return vd_tok_is_word(vd_tok_utf8_next(s, &b));
}

static bool word_at(const char *s, size_t n, size_t at)
{
	return at < n && vd_tok_is_word(vd_tok_utf8_next(s, &at));
}

/* HF AddedVocabulary::find_matches: leftmost-longest matches of m's tokens,
 * honouring single_word, lstrip and rstrip; out covers all of s. */
static vd_status split_added(const vd_tokenizer *t, const vd_tok_matcher *m, const char *s,
			     size_t n, ranges *out)
{
	size_t done = 0, i = 0;
	vd_status st;
	out->n = 0;
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		const vd_tok_added *hit = NULL;
		size_t hit_len = 0;
		for (uint32_t k = m->lo[c]; k < m->lo[c + 1]; k++) {
			const vd_tok_added *a = &t->added[m->idx[k]];
			const char *p = m->use_norm && a->norm ? a->norm : a->content;
			size_t len = m->use_norm && a->norm ? a->norm_len : a->len;
			if (len <= n - i && !memcmp(s + i, p, len)) {
				hit = a;
				hit_len = len;
				break;
			}
		}
		if (!hit) {
			i += vd_tok_utf8_len(c);
			continue;
		}
		size_t ms = i, me = i + hit_len;
		if (hit->single_word && (word_before(s, ms) || word_at(s, n, me))) {
			i = me;
			continue;
		}
		if (hit->lstrip) {
			size_t ls = space_run_start(s, ms);
			ms = ls > done ? ls : done;
		}
		if (hit->rstrip)
			me = space_run_end(s, n, me);
		if (done < ms && (st = ranges_push(out, done, ms, -1)))
			return st;
		if ((st = ranges_push(out, ms, me, hit->id)))
			return st;
		done = i = me;
	}
	if (done < n)
		return ranges_push(out, done, n, -1);
	return VD_OK;
}

/* Split s by pattern p with an HF SplitDelimiterBehavior; the kept, non-empty
 * pieces land in c->split. */
static vd_status split_pattern(enc_ctx *c, const vd_tok_pattern *p, vd_tok_behavior b, bool invert,
			       const char *s, size_t n)
{
	ranges *f = &c->found, *o = &c->split;
	size_t pos = 0, ms, me;
	int rc;
	vd_status st;
	f->n = o->n = 0;
	while ((rc = vd_tok_pattern_find(p, c->md, s, n, pos, &ms, &me)) == 1) {
		if (pos < ms && (st = ranges_push(f, pos, ms, invert)))
			return st;
		if ((st = ranges_push(f, ms, me, !invert)))
			return st;
		pos = me;
	}
	if (rc < 0)
		return vd_errorf(VD_ERR_LIMIT, "tokenizer: regex match limit hit on a %zu-byte piece", n);
	if (pos < n && (st = ranges_push(f, pos, n, invert)))
		return st;
	bool prev_match = false;
	if (b == VD_TOK_B_MERGED_NEXT) {
		/* Folded from the right, as HF does. */
		for (size_t k = f->n; k-- > 0;) {
			range r = f->v[k];
			if (r.id && !prev_match && o->n)
				o->v[o->n - 1].s = r.s;
			else if ((st = ranges_push(o, r.s, r.e, 0)))
				return st;
			prev_match = r.id;
		}
		for (size_t k = 0; k < o->n / 2; k++) {
			range tmp = o->v[k];
			o->v[k] = o->v[o->n - 1 - k];
			o->v[o->n - 1 - k] = tmp;
		}
		return VD_OK;
	}
	for (size_t k = 0; k < f->n; k++) {
		range r = f->v[k];
		bool merge = (b == VD_TOK_B_MERGED_PREV && r.id && !prev_match) ||
			     (b == VD_TOK_B_CONTIGUOUS && r.id == prev_match);
		if (b == VD_TOK_B_REMOVED && r.id)
			;
		else if (merge && o->n)
			o->v[o->n - 1].e = r.e;
		else if ((st = ranges_push(o, r.s, r.e, 0)))
			return st;
		prev_match = r.id;
	}
	return VD_OK;
}

static vd_status push_bytelevel(vd_tok_list *l, const char *s, size_t n)
{
	vd_status st = vd_tok_list_push(l, "", 0);
	for (size_t i = 0; i < n && !st; i++) {
		char u[4];
		size_t k = vd_tok_utf8_put(vd_tok_byte_cp((unsigned char)s[i]), u);
		st = vd_tok_list_extend_last(l, u, k);
	}
	return st;
}

/* One pre-tokenizer step over every piece of in, appending to out. */
static vd_status pre_step_apply(enc_ctx *c, const vd_tok_pre_step *ps, const vd_tok_list *in,
				vd_tok_list *out, bool first_at_origin)
{
	vd_status st = VD_OK;
	for (size_t i = 0; i < in->n && !st; i++) {
		size_t n;
		const char *s = vd_tok_list_at(in, i, &n);
		switch (ps->kind) {
		case VD_TOK_PRE_SPLIT:
			if ((st = split_pattern(c, &ps->pat, ps->behavior, ps->invert, s, n)))
				break;
			for (size_t k = 0; k < c->split.n && !st; k++)
				st = vd_tok_list_push(out, s + c->split.v[k].s,
						      c->split.v[k].e - c->split.v[k].s);
			break;
		case VD_TOK_PRE_BYTELEVEL:
			c->tmp.len = 0;
			if (ps->add_prefix_space && (!n || s[0] != ' ') &&
			    (st = vd_tok_buf_append(&c->tmp, " ", 1)))
				break;
			if ((st = vd_tok_buf_append(&c->tmp, s, n)))
				break;
			s = c->tmp.p;
			n = c->tmp.len;
			if (!ps->use_regex) {
				st = push_bytelevel(out, s, n);
				break;
			}
			if ((st = split_pattern(c, &ps->pat, VD_TOK_B_ISOLATED, false, s, n)))
				break;
			for (size_t k = 0; k < c->split.n && !st; k++)
				st = push_bytelevel(out, s + c->split.v[k].s,
						    c->split.v[k].e - c->split.v[k].s);
			break;
		case VD_TOK_PRE_METASPACE: {
			c->tmp.len = 0;
			/* HF replaces spaces first, then checks the start. */
			bool starts = (n && s[0] == ' ') ||
				      (n >= ps->repl_len && !memcmp(s, ps->repl, ps->repl_len));
			if (!starts && (ps->scheme == VD_TOK_PREPEND_ALWAYS ||
					(ps->scheme == VD_TOK_PREPEND_FIRST && i == 0 && first_at_origin)) &&
			    (st = vd_tok_buf_append(&c->tmp, ps->repl, ps->repl_len)))
				break;
			for (size_t k = 0; k < n && !st; k++)
				st = s[k] == ' ' ? vd_tok_buf_append(&c->tmp, ps->repl, ps->repl_len)
						 : vd_tok_buf_append(&c->tmp, s + k, 1);
			if (st)
				break;
			s = c->tmp.p;
			n = c->tmp.len;
			if (!ps->split) {
				st = vd_tok_list_push(out, s, n);
				break;
			}
			if ((st = split_pattern(c, &ps->pat, VD_TOK_B_MERGED_NEXT, false, s, n)))
				break;
			for (size_t k = 0; k < c->split.n && !st; k++)
				st = vd_tok_list_push(out, s + c->split.v[k].s,
						      c->split.v[k].e - c->split.v[k].s);
			break;
		}
		}
	}
	return st;
}

/* Normalized text without added tokens -> pre-tokenizer -> model. */
static vd_status encode_piece(enc_ctx *c, const char *s, size_t n, bool at_origin)
{
	const vd_tokenizer *t = c->t;
	vd_status st;
	if (!t->n_pre)
		return vd_tok_bpe_encode(&t->bpe, s, n, &c->out);
	vd_tok_list *in = &c->pl[0], *out = &c->pl[1];
	vd_tok_list_clear(in);
	if ((st = vd_tok_list_push(in, s, n)))
		return st;
	for (size_t k = 0; k < t->n_pre; k++) {
		vd_tok_list_clear(out);
		if ((st = pre_step_apply(c, &t->pre[k], in, out, at_origin)))
			return st;
		vd_tok_list *sw = in;
		in = out;
		out = sw;
	}
	for (size_t i = 0; i < in->n; i++) {
		size_t wn;
		const char *w = vd_tok_list_at(in, i, &wn);
		if ((st = vd_tok_bpe_encode(&t->bpe, w, wn, &c->out)))
			return st;
	}
	return VD_OK;
}

/* A raw segment between non-normalized added tokens. */
static vd_status encode_segment(enc_ctx *c, const char *s, size_t n, bool at_origin)
{
	const vd_tokenizer *t = c->t;
	const char *ns;
	size_t nn;
	vd_status st = vd_tok_normalize(t, c->md, s, n, c->nbuf, &ns, &nn);
	if (st || !nn)
		return st;
	if ((st = split_added(t, &t->normd, ns, nn, &c->norm_seg)))
		return st;
	for (size_t k = 0; k < c->norm_seg.n; k++) {
		range r = c->norm_seg.v[k];
		if (r.id >= 0)
			st = vd_tok_ids_push(&c->out, r.id);
		else
			st = encode_piece(c, ns + r.s, r.e - r.s, at_origin && r.s == 0);
		if (st)
			return st;
	}
	return VD_OK;
}

vd_status vd_tokenizer_encode(const vd_tokenizer *t, const char *text, size_t len,
			      bool add_special, int32_t **ids, size_t *n)
{
	if (!t || (!text && len) || !ids || !n)
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_tokenizer_encode: NULL argument");
	*ids = NULL;
	*n = 0;
	if (!text)
		text = "";
	if (!vd_tok_utf8_valid(text, len))
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "vd_tokenizer_encode: input is not valid UTF-8 (%zu bytes)", len);
	enc_ctx c = {.t = t};
	vd_tok_ids res = {0};
	vd_status st = VD_OK;
	c.md = vd_tok_match_data();
	if (!c.md) {
		st = vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		goto out;
	}
	if ((st = split_added(t, &t->raw, text, len, &c.raw_seg)))
		goto out;
	for (size_t k = 0; k < c.raw_seg.n && !st; k++) {
		range r = c.raw_seg.v[k];
		if (r.id >= 0)
			st = vd_tok_ids_push(&c.out, r.id);
		else
			st = encode_segment(&c, text + r.s, r.e - r.s, r.s == 0);
	}
	if (st)
		goto out;
	if (!add_special || !t->has_tmpl) {
		res = c.out;
		c.out = (vd_tok_ids){0};
	} else {
		for (size_t k = 0; k < t->n_tmpl && !st; k++)
			if (t->tmpl[k] != VD_TOK_TMPL_SEQ)
				st = vd_tok_ids_push(&res, t->tmpl[k]);
			else
				for (size_t j = 0; j < c.out.n && !st; j++)
					st = vd_tok_ids_push(&res, c.out.v[j]);
	}
	/* Callers always get a buffer, even for no ids. */
	if (!st && !res.v && !(st = vd_tok_ids_push(&res, 0)))
		res.n = 0;
	if (!st) {
		*ids = res.v;
		*n = res.n;
		res.v = NULL;
	}
out:
	free(res.v);
	free(c.out.v);
	vd_tok_buf_free(&c.nbuf[0]);
	vd_tok_buf_free(&c.nbuf[1]);
	vd_tok_buf_free(&c.tmp);
	vd_tok_list_free(&c.pl[0]);
	vd_tok_list_free(&c.pl[1]);
	free(c.raw_seg.v);
	free(c.norm_seg.v);
	free(c.found.v);
	free(c.split.v);
	pcre2_match_data_free(c.md);
	return st;
}

/* ======================================================================== */
/* Decoding                                                                  */
/* ======================================================================== */

bool vd_tok_byte_token(const char *s, size_t n, unsigned char *b)
{
	static const char hex[] = "0123456789ABCDEFabcdef";
	if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>' || !s[3] || !s[4] ||
	    !strchr(hex, s[3]) || !strchr(hex, s[4]))
		return false;
	char h[3] = {s[3], s[4], 0};
	*b = (unsigned char)strtoul(h, NULL, 16);
	return true;
}

static vd_status flush_bytes(vd_tok_list *out, vd_tok_buf *bytes)
{
	vd_status st = VD_OK;
	if (!bytes->len)
		return VD_OK;
	if (vd_tok_utf8_valid(bytes->p, bytes->len))
		st = vd_tok_list_push(out, bytes->p, bytes->len);
	else /* HF: one U+FFFD per byte of an invalid run */
		for (size_t i = 0; i < bytes->len && !st; i++)
			st = vd_tok_list_push(out, "\xEF\xBF\xBD", 3);
	bytes->len = 0;
	return st;
}

static vd_status dec_step_apply(const vd_tok_dec_step *d, pcre2_match_data *md, const vd_tok_list *in,
				vd_tok_list *out, vd_tok_buf *tmp)
{
	vd_status st = VD_OK;
	tmp->len = 0;
	if (d->kind == VD_TOK_DEC_FUSE || d->kind == VD_TOK_DEC_BYTELEVEL) {
		for (size_t i = 0; i < in->n && !st; i++) {
			size_t n;
			const char *s = vd_tok_list_at(in, i, &n);
			if (d->kind == VD_TOK_DEC_FUSE) {
				st = vd_tok_buf_append(tmp, s, n);
				continue;
			}
			/* A token is byte-mapped only if all its chars are in the
			 * byte alphabet; otherwise (added tokens) its UTF-8 as is. */
			size_t mark = tmp->len;
			for (size_t k = 0; k < n && !st;) {
				int b = vd_tok_char_byte(vd_tok_utf8_next(s, &k));
				if (b < 0) {
					tmp->len = mark;
					st = vd_tok_buf_append(tmp, s, n);
					break;
				}
				char c = (char)b;
				st = vd_tok_buf_append(tmp, &c, 1);
			}
		}
		if (st)
			return st;
		if (d->kind == VD_TOK_DEC_FUSE)
			return vd_tok_list_push(out, tmp->p ? tmp->p : "", tmp->len);
		vd_tok_buf fixed = {0};
		if (!(st = vd_tok_utf8_lossy(tmp->p ? tmp->p : "", tmp->len, &fixed)))
			st = vd_tok_list_push(out, fixed.p ? fixed.p : "", fixed.len);
		vd_tok_buf_free(&fixed);
		return st;
	}
	for (size_t i = 0; i < in->n && !st; i++) {
		size_t n;
		const char *s = vd_tok_list_at(in, i, &n);
		unsigned char b;
		switch (d->kind) {
		case VD_TOK_DEC_REPLACE:
			tmp->len = 0;
			if (!(st = vd_tok_pattern_replace(&d->pat, md, s, n, d->content, d->content_len, tmp)))
				st = vd_tok_list_push(out, tmp->p, tmp->len);
			break;
		case VD_TOK_DEC_BYTE_FALLBACK:
			if (vd_tok_byte_token(s, n, &b)) {
				st = vd_tok_buf_append(tmp, &b, 1);
				break;
			}
			if (!(st = flush_bytes(out, tmp)))
				st = vd_tok_list_push(out, s, n);
			break;
		case VD_TOK_DEC_STRIP: {
			size_t a = 0, z = n, cut;
			for (size_t k = 0; k < d->start && a < n; k++) {
				cut = a;
				if (vd_tok_utf8_next(s, &cut) != d->cp)
					break;
				a = cut;
			}
			for (size_t k = 0; k < d->stop && z > a; k++) {
				size_t p = z - 1;
				while (p > a && ((unsigned char)s[p] & 0xC0) == 0x80)
					p--;
				cut = p;
				if (vd_tok_utf8_next(s, &cut) != d->cp)
					break;
				z = p;
			}
			st = vd_tok_list_push(out, s + a, z - a);
			break;
		}
		case VD_TOK_DEC_METASPACE: {
			char r[4];
			size_t rl = vd_tok_utf8_put(d->cp, r);
			if ((st = vd_tok_list_push(out, "", 0)))
				break;
			for (size_t k = 0; k < n && !st;) {
				if (n - k >= rl && !memcmp(s + k, r, rl)) {
					if (!(i == 0 && d->prepend))
						st = vd_tok_list_extend_last(out, " ", 1);
					k += rl;
				} else {
					st = vd_tok_list_extend_last(out, s + k, 1);
					k++;
				}
			}
			break;
		}
		default:
			break;
		}
	}
	if (!st && d->kind == VD_TOK_DEC_BYTE_FALLBACK)
		st = flush_bytes(out, tmp);
	return st;
}

/* Decode ids into out (appended). */
static vd_status decode_into(const vd_tokenizer *t, const int32_t *ids, size_t n,
			     bool skip_special, vd_tok_buf *out)
{
	vd_tok_list l[2];
	memset(l, 0, sizeof(l));
	vd_tok_buf tmp = {0};
	pcre2_match_data *md = NULL;
	vd_status st = VD_OK;
	size_t cur = 0;
	for (size_t i = 0; i < n; i++) {
		int32_t id = ids[i];
		/* ids without a token (a model vocabulary padded past the
		 * tokenizer's, placeholder ids) decode to nothing, as in HF */
		if (id < 0 || id >= t->n_ids || !t->id_tok[id])
			continue;
		if (skip_special && t->id_special[id])
			continue;
		if ((st = vd_tok_list_push(&l[0], t->id_tok[id], t->id_len[id])))
			goto out;
	}
	if (!t->has_decoder) {
		for (size_t i = 0; i < l[0].n && !st; i++) {
			size_t k;
			const char *s = vd_tok_list_at(&l[0], i, &k);
			if (i)
				st = vd_tok_buf_append(out, " ", 1);
			if (!st)
				st = vd_tok_buf_append(out, s, k);
		}
		goto out;
	}
	if (!(md = vd_tok_match_data())) {
		st = vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
		goto out;
	}
	for (size_t k = 0; k < t->n_dec; k++) {
		vd_tok_list_clear(&l[cur ^ 1]);
		if ((st = dec_step_apply(&t->dec[k], md, &l[cur], &l[cur ^ 1], &tmp)))
			goto out;
		cur ^= 1;
	}
	for (size_t i = 0; i < l[cur].n && !st; i++) {
		size_t k;
		const char *s = vd_tok_list_at(&l[cur], i, &k);
		st = vd_tok_buf_append(out, s, k);
	}
out:
	if (!st && !out->p)
		st = vd_tok_buf_append(out, "", 0);
	pcre2_match_data_free(md);
	vd_tok_buf_free(&tmp);
	vd_tok_list_free(&l[0]);
	vd_tok_list_free(&l[1]);
	return st;
}

vd_status vd_tokenizer_decode(const vd_tokenizer *t, const int32_t *ids, size_t n,
			      bool skip_special, char **text)
{
	if (!t || (!ids && n) || !text)
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_tokenizer_decode: NULL argument");
	*text = NULL;
	vd_tok_buf b = {0};
	vd_status st = decode_into(t, ids, n, skip_special, &b);
	if (st) {
		vd_tok_buf_free(&b);
		return st;
	}
	*text = b.p;
	return VD_OK;
}

/* ======================================================================== */
/* Lookups                                                                   */
/* ======================================================================== */

int32_t vd_tokenizer_token_to_id(const vd_tokenizer *t, const char *token)
{
	if (!t || !token)
		return -1;
	size_t n = strlen(token);
	int32_t id = vd_tok_strmap_get(&t->added_map, token, n);
	return id >= 0 ? id : vd_tok_strmap_get(&t->bpe.map, token, n);
}

const char *vd_tokenizer_id_to_token(const vd_tokenizer *t, int32_t id)
{
	return t && id >= 0 && id < t->n_ids ? t->id_tok[id] : NULL;
}

int32_t vd_tokenizer_vocab_size(const vd_tokenizer *t)
{
	return t ? t->n_ids : 0;
}

bool vd_tokenizer_is_special(const vd_tokenizer *t, int32_t id)
{
	return t && id >= 0 && id < t->n_ids && t->id_special[id];
}

int32_t vd_tokenizer_bos_id(const vd_tokenizer *t)
{
	return t ? t->bos_id : -1;
}

int32_t vd_tokenizer_eos_id(const vd_tokenizer *t)
{
	return t ? t->eos_id : -1;
}

const char *vd_tokenizer_chat_template(const vd_tokenizer *t)
{
	return t ? t->chat_template : NULL;
}

/* ======================================================================== */
/* Incremental detokenization                                                */
/* ======================================================================== */

/* vLLM's scheme: ids[prefix..read) were already turned into text; each push
 * decodes ids[prefix..] and emits what lies past decode(ids[prefix..read)),
 * unless that text ends in U+FFFD (an incomplete UTF-8 sequence so far) or
 * does not extend the prefix text; then it waits for more ids. With a
 * ByteFallback decoder it also waits while the last id is a <0xXX> token:
 * a further byte token joins its group and can turn a valid character into
 * U+FFFDs, which would contradict text already emitted. */
struct vd_detok {
	const vd_tokenizer *t;
	bool skip;
	vd_tok_ids ids; /* prompt context, then pushed ids */
	size_t n_ctx, prefix, read;
	vd_tok_buf emitted, delta, a, b;
};

/* A <0xXX> token under a ByteFallback decoder (ids must be valid). */
static bool is_byte_id(const vd_tokenizer *t, int32_t id)
{
	unsigned char b;
	return t->dec_byte_fallback && id >= 0 && id < t->n_ids && t->id_tok[id] &&
	       vd_tok_byte_token(t->id_tok[id], t->id_len[id], &b);
}

vd_status vd_detok_create(const vd_tokenizer *t, bool skip_special, const int32_t *prompt,
			  size_t n_prompt, vd_detok **out)
{
	if (!t || !out || (!prompt && n_prompt))
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_detok_create: NULL argument");
	*out = NULL;
	vd_detok *d = calloc(1, sizeof(*d));
	if (!d)
		return vd_errorf(VD_ERR_NOMEM, "tokenizer: out of memory");
	d->t = t;
	d->skip = skip_special;
	vd_status st = VD_OK;
	/* Like vLLM: the last OFFSET+2 prompt ids (specials dropped when
	 * skipping), prefix OFFSET back from their end; but neither may start
	 * inside a run of byte tokens, which ByteFallback decodes as a whole. */
	size_t from = n_prompt > DETOK_OFFSET + 2 ? n_prompt - (DETOK_OFFSET + 2) : 0;
	while (from > 0 && is_byte_id(t, prompt[from]) && is_byte_id(t, prompt[from - 1]))
		from--;
	for (size_t i = from; i < n_prompt && !st; i++) {
		int32_t id = prompt[i];
		if (id < 0 || id >= t->n_ids || !t->id_tok[id])
			continue; /* decodes to nothing, as in vd_tokenizer_decode */
		if (!(skip_special && t->id_special[id]))
			st = vd_tok_ids_push(&d->ids, id);
	}
	if (!st)
		st = vd_tok_buf_append(&d->delta, "", 0);
	if (st) {
		vd_detok_destroy(d);
		return st;
	}
	d->n_ctx = d->read = d->ids.n;
	d->prefix = d->ids.n > DETOK_OFFSET ? d->ids.n - DETOK_OFFSET : 0;
	while (d->prefix > 0 && is_byte_id(t, d->ids.v[d->prefix]) &&
	       is_byte_id(t, d->ids.v[d->prefix - 1]))
		d->prefix--;
	*out = d;
	return VD_OK;
}

void vd_detok_destroy(vd_detok *d)
{
	if (!d)
		return;
	free(d->ids.v);
	vd_tok_buf_free(&d->emitted);
	vd_tok_buf_free(&d->delta);
	vd_tok_buf_free(&d->a);
	vd_tok_buf_free(&d->b);
	free(d);
}

static bool ends_with_fffd(const vd_tok_buf *b)
{
	return b->len >= 3 && !memcmp(b->p + b->len - 3, "\xEF\xBF\xBD", 3);
}

static bool has_prefix(const vd_tok_buf *s, const char *p, size_t n)
{
	return s->len >= n && !memcmp(s->p, p, n);
}

/* a = decode(ids[prefix..read)), b = decode(ids[prefix..]). */
static vd_status detok_windows(vd_detok *d)
{
	vd_status st;
	d->a.len = d->b.len = 0;
	if ((st = decode_into(d->t, d->ids.v + d->prefix, d->read - d->prefix, d->skip, &d->a)))
		return st;
	return decode_into(d->t, d->ids.v + d->prefix, d->ids.n - d->prefix, d->skip, &d->b);
}

static vd_status set_delta(vd_detok *d, const char *s, size_t n)
{
	d->delta.len = 0;
	vd_status st = vd_tok_buf_append(&d->delta, s, n);
	if (!st)
		st = vd_tok_buf_append(&d->emitted, s, n);
	return st;
}

vd_status vd_detok_push(vd_detok *d, int32_t id, const char **delta)
{
	if (!d || !delta)
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_detok_push: NULL argument");
	*delta = "";
	d->delta.len = 0;
	d->delta.p[0] = '\0';
	if (id < 0 || id >= d->t->n_ids || !d->t->id_tok[id])
		return VD_OK; /* decodes to nothing, as in vd_tokenizer_decode */
	if (d->skip && d->t->id_special[id])
		return VD_OK;
	vd_status st = vd_tok_ids_push(&d->ids, id);
	if (!st)
		st = detok_windows(d);
	if (st)
		return st;
	if (d->b.len <= d->a.len || ends_with_fffd(&d->b) || !has_prefix(&d->b, d->a.p, d->a.len) ||
	    is_byte_id(d->t, id))
		return VD_OK;
	if ((st = set_delta(d, d->b.p + d->a.len, d->b.len - d->a.len)))
		return st;
	d->prefix = d->read;
	d->read = d->ids.n;
	*delta = d->delta.p;
	return VD_OK;
}

vd_status vd_detok_flush(vd_detok *d, const char **delta)
{
	if (!d || !delta)
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_detok_flush: NULL argument");
	*delta = "";
	d->delta.len = 0;
	d->delta.p[0] = '\0';
	/* What the whole stream should read: decode(context ++ pushed) past
	 * decode(context), or (when the two do not line up, e.g. the prompt
	 * ends inside a byte sequence the generation completes) decode(pushed).
	 * Emit its rest when our deltas are its start. */
	vd_status st;
	d->a.len = d->b.len = 0;
	if ((st = decode_into(d->t, d->ids.v, d->n_ctx, d->skip, &d->a)) ||
	    (st = decode_into(d->t, d->ids.v, d->ids.n, d->skip, &d->b)))
		return st;
	size_t skip = d->a.len;
	if (!has_prefix(&d->b, d->a.p, d->a.len)) {
		d->b.len = 0;
		if ((st = decode_into(d->t, d->ids.v + d->n_ctx, d->ids.n - d->n_ctx, d->skip, &d->b)))
			return st;
		skip = 0;
	}
	const char *full = d->b.p + skip;
	size_t full_n = d->b.len - skip;
	if (full_n >= d->emitted.len && !memcmp(full, d->emitted.p ? d->emitted.p : "", d->emitted.len)) {
		if ((st = set_delta(d, full + d->emitted.len, full_n - d->emitted.len)))
			return st;
	} else {
		/* Not a prefix (a decoder that rewrites earlier text): the window's
		 * pending rest is the best continuation of what was emitted. */
		if ((st = detok_windows(d)))
			return st;
		if (d->b.len > d->a.len && has_prefix(&d->b, d->a.p, d->a.len) &&
		    (st = set_delta(d, d->b.p + d->a.len, d->b.len - d->a.len)))
			return st;
	}
	d->prefix = d->read = d->ids.n;
	*delta = d->delta.p;
	return VD_OK;
}
