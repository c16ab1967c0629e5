/* Jinja2 lexer with trim_blocks and lstrip_blocks, following the rules of
 * jinja2/lexer.py (3.1) step by step: newlines normalized to \n and one
 * trailing newline dropped; `{%-`/`-%}` strip all whitespace, `{%+`/`+%}`
 * disable lstrip/trim; lstrip applies to block, comment and raw tags only;
 * string literals are unescaped like Python's unicode-escape codec. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jinja/internal.h"

typedef struct lexer {
	vd_jarena *a;
	const char *s; /* normalized source */
	size_t n;
	size_t pos;
	/* line/column cursor for positions at or after cur_pos */
	size_t cur_pos;
	int cur_line, cur_col;
	vd_jtok *toks;
	size_t ntoks, cap;
	bool line_starting;
	int balance[64]; /* open brackets inside a tag */
	int nbalance;
} lexer;

/* 1-based line and column (in code points) of byte offset pos. */
static void loc(lexer *lx, size_t pos, int *line, int *col)
{
	if (pos < lx->cur_pos) {
		lx->cur_pos = 0;
		lx->cur_line = 1;
		lx->cur_col = 1;
	}
	while (lx->cur_pos < pos) {
		unsigned char c = (unsigned char)lx->s[lx->cur_pos++];

		if (c == '\n') {
			lx->cur_line++;
			lx->cur_col = 1;
		} else if ((c & 0xc0) != 0x80) {
			lx->cur_col++;
		}
	}
	*line = lx->cur_line;
	*col = lx->cur_col;
}

static vd_status lex_fail(lexer *lx, size_t pos, const char *msg)
{
	int line, col;

	loc(lx, pos, &line, &col);
	return vd_errorf(VD_ERR_FORMAT, "chat template syntax error at line %d, column %d: %s",
			 line, col, msg);
}

static vd_status nomem(void)
{
	return vd_errorf(VD_ERR_NOMEM, "chat template: out of memory while lexing");
}

static vd_jtok *push(lexer *lx, vd_jtok_kind kind, size_t pos)
{
	vd_jtok *t;

	if (lx->ntoks == lx->cap) {
		size_t cap = lx->cap ? 2 * lx->cap : 256;
		vd_jtok *nt = vd_jarena_alloc(lx->a, cap * sizeof(*nt));

		if (!nt)
			return NULL;
		if (lx->ntoks)
			memcpy(nt, lx->toks, lx->ntoks * sizeof(*nt));
		lx->toks = nt;
		lx->cap = cap;
	}
	t = &lx->toks[lx->ntoks++];
	memset(t, 0, sizeof(*t));
	t->kind = kind;
	loc(lx, pos, &t->line, &t->col);
	return t;
}

/* Length of the Unicode whitespace run at p (regex \s*). */
static size_t ws_run(const lexer *lx, size_t p)
{
	size_t q = p, len;

	while (q < lx->n && vd_py_isspace(vd_utf8_decode(lx->s + q, lx->n - q, &len)))
		q += len;
	return q - p;
}

/* Whether s[from, to) is all whitespace (and non-empty). */
static bool all_space(const lexer *lx, size_t from, size_t to)
{
	size_t len;

	if (from >= to)
		return false;
	for (size_t q = from; q < to; q += len)
		if (!vd_py_isspace(vd_utf8_decode(lx->s + q, to - q, &len)))
			return false;
	return true;
}

/* Emit the text s[from, to) before a tag, applying the tag's whitespace
 * control (sign '-' or '+' or 0) and lstrip_blocks when lstrip_ok (block,
 * comment and raw tags, not {{ }}). */
static vd_status emit_text(lexer *lx, size_t from, size_t to, char sign, bool lstrip_ok)
{
	vd_jtok *t;

	if (sign == '-') {
		/* str.rstrip(): drop trailing whitespace code points */
		size_t end = to;

		while (end > from) {
			size_t start = end - 1, len;

			while (start > from && ((unsigned char)lx->s[start] & 0xc0) == 0x80)
				start--;
			if (!vd_py_isspace(vd_utf8_decode(lx->s + start, end - start, &len)))
				break;
			end = start;
		}
		to = end;
	} else if (sign != '+' && lstrip_ok) {
		size_t l_pos = from;

		for (size_t q = from; q < to; q++)
			if (lx->s[q] == '\n')
				l_pos = q + 1;
		if ((l_pos > from || lx->line_starting) && all_space(lx, l_pos, to))
			to = l_pos;
	}
	if (to == from)
		return VD_OK;
	t = push(lx, VD_JT_DATA, from);
	if (!t)
		return nomem();
	t->p = lx->s + from;
	t->n = to - from;
	return VD_OK;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Unescape a string literal body s[from, to) as Python's
 * .encode("ascii", "backslashreplace").decode("unicode-escape"). */
static vd_status unescape(lexer *lx, size_t from, size_t to, vd_jtok *t)
{
	const char *s = lx->s;
	/* an escaped non-ASCII character can double in size ("\\U0001f600") */
	char *out = vd_jarena_alloc(lx->a, 2 * (to - from) + 16), *o = out;
	size_t i = from, len;

	if (!out)
		return nomem();
	while (i < to) {
		int32_t cp;
		int nhex = 0;

		if (s[i] != '\\') {
			*o++ = s[i++];
			continue;
		}
		if (i + 1 >= to) {
			return lex_fail(lx, i, "\\ at end of string");
		}
		i++;
		switch (s[i]) {
		case '\n': i++; continue;
		case '\\': *o++ = '\\'; i++; continue;
		case '\'': *o++ = '\''; i++; continue;
		case '"': *o++ = '"'; i++; continue;
		case 'a': *o++ = '\a'; i++; continue;
		case 'b': *o++ = '\b'; i++; continue;
		case 'f': *o++ = '\f'; i++; continue;
		case 'n': *o++ = '\n'; i++; continue;
		case 'r': *o++ = '\r'; i++; continue;
		case 't': *o++ = '\t'; i++; continue;
		case 'v': *o++ = '\v'; i++; continue;
		case 'x': nhex = 2; break;
		case 'u': nhex = 4; break;
		case 'U': nhex = 8; break;
		default: break;
		}
		if (nhex) {
			cp = 0;
			for (int k = 1; k <= nhex; k++) {
				int h = i + (size_t)k < to ? hexval(s[i + (size_t)k]) : -1;

				if (h < 0)
					return lex_fail(lx, i - 1, "truncated escape sequence in string");
				cp = cp * 16 + h;
			}
			if (cp > 0x10ffff)
				return lex_fail(lx, i - 1, "illegal Unicode character in string");
			i += (size_t)nhex + 1;
			o += vd_utf8_encode(cp, o);
			continue;
		}
		if (s[i] >= '0' && s[i] <= '7') {
			cp = 0;
			for (int k = 0; k < 3 && i < to && s[i] >= '0' && s[i] <= '7'; k++)
				cp = cp * 8 + (s[i++] - '0');
			o += vd_utf8_encode(cp, o);
			continue;
		}
		if ((unsigned char)s[i] >= 0x80) {
			/* backslashreplace turned the character into \xNN/\uNNNN
			 * text, and the codec read the two backslashes as one */
			cp = vd_utf8_decode(s + i, to - i, &len);
			o += sprintf(o, cp < 0x100 ? "\\x%02x" : cp < 0x10000 ? "\\u%04x" :
				     "\\U%08x", (unsigned)cp);
			i += len;
			continue;
		}
		/* unknown escape: kept as written */
		*o++ = '\\';
	}
	*o = 0;
	t->p = out;
	t->n = (size_t)(o - out);
	return VD_OK;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

/* (\d+_)*\d+ at p: end offset, or p when absent. */
static size_t digits_us(const lexer *lx, size_t p)
{
	size_t q = p;

	if (q >= lx->n || !is_digit(lx->s[q]))
		return p;
	while (q < lx->n && is_digit(lx->s[q]))
		q++;
	while (q + 1 < lx->n && lx->s[q] == '_' && is_digit(lx->s[q + 1])) {
		q++;
		while (q < lx->n && is_digit(lx->s[q]))
			q++;
	}
	return q;
}

/* float_re at p: end offset or 0. */
static size_t match_float(const lexer *lx, size_t p)
{
	size_t q = digits_us(lx, p), r;

	if (q == p || (p > 0 && lx->s[p - 1] == '.'))
		return 0;
	/* fractional part */
	if (q < lx->n && lx->s[q] == '.' && (r = digits_us(lx, q + 1)) != q + 1) {
		size_t e = r;

		if (e < lx->n && (lx->s[e] == 'e' || lx->s[e] == 'E')) {
			size_t f = e + 1, g;

			if (f < lx->n && (lx->s[f] == '+' || lx->s[f] == '-'))
				f++;
			g = digits_us(lx, f);
			if (g != f)
				return g;
		}
		return r;
	}
	if (q < lx->n && (lx->s[q] == 'e' || lx->s[q] == 'E')) {
		size_t f = q + 1, g;

		if (f < lx->n && (lx->s[f] == '+' || lx->s[f] == '-'))
			f++;
		g = digits_us(lx, f);
		if (g != f)
			return g;
	}
	return 0;
}

/* integer_re at p: end offset or 0; base in *base. */
static size_t match_int(const lexer *lx, size_t p, int *base)
{
	const char *s = lx->s;
	size_t q;

	if (p + 1 < lx->n && s[p] == '0') {
		char k = s[p + 1];
		int b = (k == 'b' || k == 'B') ? 2 : (k == 'o' || k == 'O') ? 8 :
			(k == 'x' || k == 'X') ? 16 : 0;

		if (b) {
			q = p + 2;
			for (;;) {
				size_t r = q < lx->n && s[q] == '_' ? q + 1 : q;
				int h = r < lx->n ? hexval(s[r]) : -1;

				if (h < 0 || h >= b)
					break;
				q = r + 1;
			}
			if (q > p + 2) {
				*base = b;
				return q;
			}
		}
	}
	*base = 10;
	if (p >= lx->n || !is_digit(s[p]))
		return 0;
	q = p + 1;
	if (s[p] == '0') {
		while (q < lx->n && (s[q] == '0' || (s[q] == '_' && q + 1 < lx->n && s[q + 1] == '0')))
			q += s[q] == '_' ? 2 : 1;
		return q;
	}
	while (q < lx->n && (is_digit(s[q]) || (s[q] == '_' && q + 1 < lx->n && is_digit(s[q + 1]))))
		q += s[q] == '_' ? 2 : 1;
	return q;
}

static vd_status number_token(lexer *lx, size_t p, size_t end, bool is_float)
{
	char tmp[128];
	size_t k = 0;
	vd_jtok *t = push(lx, is_float ? VD_JT_FLOAT : VD_JT_INT, p);
	int base = 10;

	if (!t)
		return nomem();
	if (end - p >= sizeof(tmp))
		return lex_fail(lx, p, "number literal too long");
	for (size_t q = p; q < end; q++)
		if (lx->s[q] != '_')
			tmp[k++] = lx->s[q];
	tmp[k] = 0;
	if (is_float) {
		t->f = strtod(tmp, NULL);
		return VD_OK;
	}
	if (k > 2 && tmp[0] == '0' && !is_digit(tmp[1])) {
		char c = tmp[1];

		base = (c == 'b' || c == 'B') ? 2 : (c == 'o' || c == 'O') ? 8 : 16;
		memmove(tmp, tmp + 2, k - 1);
	}
	{
		char *endp;
		unsigned long long v = strtoull(tmp, &endp, base);

		if (v > INT64_MAX)
			return lex_fail(lx, p, "integer literal too large for 64 bits");
		t->i = (int64_t)v;
	}
	return VD_OK;
}

static const char *const OPERATORS[] = {
	"//", "**", "==", "!=", ">=", "<=",
	"+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}",
	">", "<", "=", ".", ":", "|", ",", ";",
};

/* End of a tag at p, or 0: `-%}` and `-}}` eat all following whitespace,
 * `%}` eats one newline (trim_blocks), `+%}` nothing. */
static size_t match_tag_end(const lexer *lx, size_t p, bool block)
{
	const char *s = lx->s + p;
	size_t left = lx->n - p;

	if (block) {
		if (left >= 3 && s[0] == '+' && s[1] == '%' && s[2] == '}')
			return p + 3;
		if (left >= 3 && s[0] == '-' && s[1] == '%' && s[2] == '}')
			return p + 3 + ws_run(lx, p + 3);
		if (left >= 2 && s[0] == '%' && s[1] == '}')
			return p + 2 + (left >= 3 && s[2] == '\n');
		return 0;
	}
	if (left >= 3 && s[0] == '-' && s[1] == '}' && s[2] == '}')
		return p + 3 + ws_run(lx, p + 3);
	if (left >= 2 && s[0] == '}' && s[1] == '}')
		return p + 2;
	return 0;
}

/* Tokens of a {% %} or {{ }} tag starting at lx->pos (after its opener). */
static vd_status lex_tag(lexer *lx, bool block)
{
	const char *s = lx->s;
	vd_status st;

	lx->nbalance = 0;
	while (lx->pos < lx->n) {
		size_t p = lx->pos, end, len;
		int base;

		if (lx->nbalance == 0 && (end = match_tag_end(lx, p, block))) {
			if (!push(lx, block ? VD_JT_BLOCK_END : VD_JT_VAR_END, p))
				return nomem();
			lx->line_starting = s[end - 1] == '\n';
			lx->pos = end;
			return VD_OK;
		}
		if (vd_py_isspace(vd_utf8_decode(s + p, lx->n - p, &len))) {
			lx->pos = p + ws_run(lx, p);
			continue;
		}
		if ((end = match_float(lx, p))) {
			if ((st = number_token(lx, p, end, true)))
				return st;
			lx->pos = end;
			continue;
		}
		if ((end = match_int(lx, p, &base))) {
			if ((st = number_token(lx, p, end, false)))
				return st;
			lx->pos = end;
			continue;
		}
		if (is_name_start(s[p])) {
			vd_jtok *t = push(lx, VD_JT_NAME, p);

			end = p + 1;
			while (end < lx->n && is_name_char(s[end]))
				end++;
			if (!t || !(t->p = vd_jarena_strndup(lx->a, s + p, end - p)))
				return nomem();
			t->n = end - p;
			lx->pos = end;
			continue;
		}
		if (s[p] == '\'' || s[p] == '"') {
			char q = s[p];
			vd_jtok *t;

			end = p + 1;
			while (end < lx->n && s[end] != q)
				end += s[end] == '\\' && end + 1 < lx->n ? 2 : 1;
			if (end >= lx->n)
				return lex_fail(lx, p, "unterminated string literal");
			t = push(lx, VD_JT_STRING, p);
			if (!t)
				return nomem();
			if ((st = unescape(lx, p + 1, end, t)))
				return st;
			lx->pos = end + 1;
			continue;
		}
		for (size_t k = 0; k < sizeof(OPERATORS) / sizeof(OPERATORS[0]); k++) {
			size_t ol = strlen(OPERATORS[k]);
			vd_jtok *t;
			char c = OPERATORS[k][0];

			if (lx->n - p < ol || memcmp(s + p, OPERATORS[k], ol) != 0)
				continue;
			if (ol == 1 && (c == '(' || c == '[' || c == '{')) {
				if (lx->nbalance == (int)(sizeof(lx->balance) / sizeof(lx->balance[0])))
					return lex_fail(lx, p, "brackets nested too deeply");
				lx->balance[lx->nbalance++] = c == '(' ? ')' : c == '[' ? ']' : '}';
			} else if (ol == 1 && (c == ')' || c == ']' || c == '}')) {
				char msg[64];

				if (lx->nbalance == 0) {
					snprintf(msg, sizeof(msg), "unexpected '%c'", c);
					return lex_fail(lx, p, msg);
				}
				if (lx->balance[--lx->nbalance] != c) {
					snprintf(msg, sizeof(msg), "unexpected '%c', expected '%c'", c,
						 lx->balance[lx->nbalance]);
					return lex_fail(lx, p, msg);
				}
			}
			t = push(lx, VD_JT_OP, p);
			if (!t)
				return nomem();
			t->p = OPERATORS[k];
			t->n = ol;
			lx->pos = p + ol;
			goto next;
		}
		{
			char msg[48];

			snprintf(msg, sizeof(msg), "unexpected char '%c'", s[p]);
			return lex_fail(lx, p, msg);
		}
next:;
	}
	return VD_OK; /* end of input inside a tag: the parser reports it */
}

/* `{%(-|+|)\s*raw\s*(-%}\s*|%})` at p: end offset or 0. */
static size_t match_raw_begin(const lexer *lx, size_t p)
{
	size_t q = p + 2;

	if (q < lx->n && (lx->s[q] == '-' || lx->s[q] == '+'))
		q++;
	q += ws_run(lx, q);
	if (lx->n - q < 3 || memcmp(lx->s + q, "raw", 3) != 0)
		return 0;
	q += 3;
	q += ws_run(lx, q);
	if (lx->n - q >= 3 && memcmp(lx->s + q, "-%}", 3) == 0)
		return q + 3 + ws_run(lx, q + 3);
	if (lx->n - q >= 2 && memcmp(lx->s + q, "%}", 2) == 0)
		return q + 2;
	return 0;
}

/* Body of {% raw %} from lx->pos up to {% endraw %}. */
static vd_status lex_raw(lexer *lx, size_t open_pos)
{
	for (size_t k = lx->pos; k + 1 < lx->n; k++) {
		size_t q, end;
		char sign = 0;

		if (lx->s[k] != '{' || lx->s[k + 1] != '%')
			continue;
		q = k + 2;
		if (q < lx->n && (lx->s[q] == '-' || lx->s[q] == '+'))
			sign = lx->s[q++];
		q += ws_run(lx, q);
		if (lx->n - q < 6 || memcmp(lx->s + q, "endraw", 6) != 0)
			continue;
		q += 6;
		q += ws_run(lx, q);
		end = match_tag_end(lx, q, true);
		if (!end)
			continue;
		{
			vd_status st = emit_text(lx, lx->pos, k, sign, true);

			if (st)
				return st;
		}
		lx->line_starting = lx->s[end - 1] == '\n';
		lx->pos = end;
		return VD_OK;
	}
	return lex_fail(lx, open_pos, "Missing end of raw directive");
}

/* Normalized copy of src: \r\n and \r become \n, one trailing newline goes. */
static char *normalize(vd_jarena *a, const char *src, size_t len, size_t *out_len)
{
	char *d = vd_jarena_alloc(a, len + 1);
	size_t n = 0;

	if (!d)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if (src[i] == '\r') {
			d[n++] = '\n';
			if (i + 1 < len && src[i + 1] == '\n')
				i++;
		} else {
			d[n++] = src[i];
		}
	}
	if (n && d[n - 1] == '\n')
		n--;
	d[n] = 0;
	*out_len = n;
	return d;
}

vd_status vd_jinja_lex(vd_jarena *a, const char *src, size_t len,
		       vd_jtok **toks, size_t *ntoks)
{
	lexer lx = { .a = a, .cur_line = 1, .cur_col = 1, .line_starting = true };
	vd_status st;

	lx.s = normalize(a, src, len, &lx.n);
	if (!lx.s)
		return nomem();
	while (lx.pos < lx.n) {
		size_t k, raw_end = 0;
		char kind = 0, sign = 0;

		/* the next tag opener */
		for (k = lx.pos; k + 1 < lx.n; k++) {
			char c = lx.s[k + 1];

			if (lx.s[k] == '{' && (c == '%' || c == '{' || c == '#')) {
				kind = c;
				break;
			}
		}
		if (!kind) {
			if ((st = emit_text(&lx, lx.pos, lx.n, 0, false)))
				return st;
			break;
		}
		if (k + 2 < lx.n && (lx.s[k + 2] == '-' || lx.s[k + 2] == '+'))
			sign = lx.s[k + 2];
		if (kind == '%')
			raw_end = match_raw_begin(&lx, k);
		if ((st = emit_text(&lx, lx.pos, k, sign, kind != '{')))
			return st;
		lx.pos = k + 2 + (sign != 0);
		if (raw_end) {
			lx.line_starting = lx.s[raw_end - 1] == '\n';
			lx.pos = raw_end;
			if ((st = lex_raw(&lx, k)))
				return st;
		} else if (kind == '#') {
			/* (.*?)((?:\+#}|\-#}\s*|#}\n?)) */
			const char *e = NULL;

			for (size_t q = lx.pos; q + 1 < lx.n; q++)
				if (lx.s[q] == '#' && lx.s[q + 1] == '}') {
					e = lx.s + q;
					break;
				}
			if (!e)
				return lex_fail(&lx, k, "Missing end of comment tag");
			{
				size_t q = (size_t)(e - lx.s), end = q + 2;

				if (q > lx.pos && lx.s[q - 1] == '-')
					end += ws_run(&lx, end);
				else if (!(q > lx.pos && lx.s[q - 1] == '+') && end < lx.n &&
					 lx.s[end] == '\n')
					end++;
				lx.line_starting = lx.s[end - 1] == '\n';
				lx.pos = end;
			}
		} else {
			bool block = kind == '%';

			if (!push(&lx, block ? VD_JT_BLOCK_BEGIN : VD_JT_VAR_BEGIN, k))
				return nomem();
			if ((st = lex_tag(&lx, block)))
				return st;
		}
	}
	if (!push(&lx, VD_JT_EOF, lx.n))
		return nomem();
	*toks = lx.toks;
	*ntoks = lx.ntoks;
	return VD_OK;
}
