/* Small helpers the benchmark programs share: option values with clear
 * errors, a growable string, wall-clock time, a seeded hash RNG and reading
 * a file. Header-only (each program is one file); define ME, the program's
 * name for messages, before including it. Depends on libc alone, so the
 * HTTP client (bench/serving) can use it without the engine. */
#ifndef VLLMD_BENCH_UTIL_H
#define VLLMD_BENCH_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef ME
#error "define ME (the program's name) before including bench/util.h"
#endif

/* Report a bad option value; returns -1 for the parser to pass up. */
static inline int bad(const char *opt, const char *val, const char *want)
{
	fprintf(stderr, ME ": --%s '%s': %s\n", opt, val, want);
	return -1;
}

static inline int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		char want[96];

		snprintf(want, sizeof(want), "want an integer in [%ld, %ld]", lo, hi);
		return bad(opt, s, want);
	}
	*out = v;
	return 0;
}

static inline int parse_u64(const char *opt, const char *s, unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return bad(opt, s, "want a non-negative integer");
	return 0;
}

/* "336" (square) or "640x480" (width x height); "0" = no image. */
static inline int parse_image_size(const char *s, long *w, long *h)
{
	char *end;
	long a, b;

	errno = 0;
	a = strtol(s, &end, 10);
	if (errno || end == s || a < 0 || a > 16384)
		return bad("image-size", s, "want S or WxH, sizes in [0, 16384]");
	if (!*end) {
		*w = *h = a;
		return 0;
	}
	if (*end != 'x' && *end != 'X')
		return bad("image-size", s, "want S or WxH, sizes in [0, 16384]");
	b = strtol(end + 1, &end, 10);
	if (errno || *end || b < 1 || b > 16384 || a < 1)
		return bad("image-size", s, "want S or WxH, sizes in [1, 16384] (or 0)");
	*w = a;
	*h = b;
	return 0;
}

/* Growable string; out-of-memory is fatal (a benchmark has nothing to save). */
typedef struct sbuf {
	char *s;
	size_t len, cap;
} sbuf;

static inline void *xrealloc(void *p, size_t n)
{
	if (!(p = realloc(p, n ? n : 1))) {
		fprintf(stderr, ME ": out of memory\n");
		exit(1);
	}
	return p;
}

static inline void sb_put(sbuf *b, const void *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->s = xrealloc(b->s, b->cap);
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static inline void sb_puts(sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

/* Seconds on the monotonic clock. */
static inline double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Write txt and a newline to path, then free txt; txt == NULL means the
 * caller ran out of memory building it. Errors are printed; returns 0 or -1. */
static inline int write_text(const char *path, char *txt)
{
	FILE *f;
	int rc = 0;

	if (!txt || !(f = fopen(path, "w"))) {
		fprintf(stderr, ME ": cannot write %s: %s\n", path,
			txt ? strerror(errno) : "out of memory");
		free(txt);
		return -1;
	}
	if (fprintf(f, "%s\n", txt) < 0)
		rc = -1;
	if (fclose(f) != 0)
		rc = -1;
	if (rc)
		fprintf(stderr, ME ": writing %s: %s\n", path, strerror(errno));
	free(txt);
	return rc;
}

/* The whole file, NUL-terminated (malloc'd), or NULL with errno set. */
static inline char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1))) {
		if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		} else {
			buf[n] = '\0';
		}
	}
	fclose(f);
	return buf;
}

#endif
