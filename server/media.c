/* Media fetching (contracts in media.h). curl never follows a Location by
 * itself: each redirect target is checked (scheme, allowed domains, a
 * literal address against the network policy, hop count, deadline left)
 * before it is contacted, and every socket curl opens goes through
 * open_checked, which applies the network policy to the address it is
 * about to connect to. A fetch owns its easy handle and its buffer; fetches
 * share nothing but libcurl's global state, so any number may run at once.
 * Buffers never grow past max_bytes. Messages are vllmd's own words, never
 * curl's error buffer (it names addresses and ports) or fetched bytes. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "server/options.h"
#include "server/media.h"
#include "server/net_policy.h"

#define USER_AGENT "vllmd/" VD_VERSION
#define MIN_BUF (64 * 1024)

static pthread_mutex_t global_lock = PTHREAD_MUTEX_INITIALIZER;
static int global_refs;

vd_status vd_media_global_init(void)
{
	vd_status st = VD_OK;
	CURLcode rc;

	pthread_mutex_lock(&global_lock);
	if (global_refs == 0) {
		rc = curl_global_init(CURL_GLOBAL_DEFAULT);
		if (rc != CURLE_OK)
			st = vd_errorf(VD_ERR_BACKEND, "libcurl initialisation failed: %s",
				       curl_easy_strerror(rc));
	}
	if (st == VD_OK)
		global_refs++;
	pthread_mutex_unlock(&global_lock);
	return st;
}

void vd_media_global_cleanup(void)
{
	pthread_mutex_lock(&global_lock);
	if (global_refs > 0 && --global_refs == 0)
		curl_global_cleanup();
	pthread_mutex_unlock(&global_lock);
}

vd_status vd_media_opts_from_config(const struct vd_server_opts *c, vd_media_opts *o)
{
	vd_net *nets;
	int n;
	vd_status st;

	o->timeout_s = c->image_fetch_timeout;
	o->max_bytes = c->max_image_bytes;
	o->max_redirects = (int)c->max_redirects;
	o->allowed_local_path = c->allowed_local_media_path;
	o->allowed_domains = (const char *const *)c->allowed_media_domains.items;
	o->n_allowed_domains = c->allowed_media_domains.n;
	o->allowed_networks = (const char *const *)c->allowed_media_networks.items;
	o->n_allowed_networks = c->allowed_media_networks.n;
	st = vd_net_parse_list(o->allowed_networks, o->n_allowed_networks, &nets, &n);
	free(nets);
	return st;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool has_scheme(const char *url, const char *scheme)
{
	size_t n = strlen(scheme);

	return strncasecmp(url, scheme, n) == 0 && url[n] == ':';
}

/* The URL as messages show it: a data: payload is never echoed (it can be
 * megabytes), long URLs are cut, control bytes become '?' so a hostile URL
 * cannot forge lines in logs. */
static void url_for_msg(const char *url, char *buf, size_t n)
{
	size_t i, len = strlen(url);

	if (len == 0) {
		snprintf(buf, n, "an empty URL");
		return;
	}
	if (has_scheme(url, "data")) {
		snprintf(buf, n, "a data: URL");
		return;
	}
	for (i = 0; i < len && i + 4 < n; i++)
		buf[i] = (unsigned char)url[i] < 0x20 || url[i] == 0x7f ? '?' : url[i];
	if (i < len)
		memcpy(buf + i - 3, "...", 3);
	buf[i] = '\0';
}

__attribute__((format(printf, 3, 4)))
static vd_status failf(vd_status s, const char *url, const char *fmt, ...)
{
	char shown[192], reason[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	url_for_msg(url, shown, sizeof(shown));
	return vd_errorf(s, "Failed to fetch image from %s: %s", shown, reason);
}

static vd_status too_big(const char *url, const vd_media_opts *o)
{
	return failf(VD_ERR_LIMIT, url, "more than %lld bytes (max_image_bytes)",
		     (long long)o->max_bytes);
}

static vd_status check_opts(const vd_media_opts *o)
{
	if (o == NULL)
		return vd_errorf(VD_ERR_INVALID_ARG, "media fetch: options are required");
	if (!(o->timeout_s > 0) || !isfinite(o->timeout_s))
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "media fetch: image_fetch_timeout must be > 0 (got %g)",
				 o->timeout_s);
	if (o->max_bytes <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "media fetch: max_image_bytes must be > 0 (got %lld)",
				 (long long)o->max_bytes);
	if (o->max_redirects < 0)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "media fetch: max_redirects must be >= 0 (got %d)",
				 o->max_redirects);
	if (o->n_allowed_domains < 0 || (o->n_allowed_domains > 0 && o->allowed_domains == NULL))
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "media fetch: allowed_domains is NULL or its count negative");
	if (o->n_allowed_networks < 0 ||
	    (o->n_allowed_networks > 0 && o->allowed_networks == NULL))
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "media fetch: allowed_networks is NULL or its count negative");
	return VD_OK;
}

/* ------------------------------------------------------------- data: URLs */

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* data:[<mediatype>][;param]*;base64,<data>, split as vLLM does (first ',',
 * then the last ';' before it must end in "base64"). The payload is checked
 * like pybase64.b64decode(validate=True): standard alphabet only, no
 * whitespace, no percent-decoding, length a multiple of 4, at most two '='
 * and only at the end. Unlike vLLM, which lets PIL judge the bytes, the
 * media type must be image/<x>: a non-image payload is refused up front. */
static vd_status data_url_fetch(const char *url, const vd_media_opts *o,
				uint8_t **data, size_t *len)
{
	const char *spec = url + 5, *comma, *semi, *b64;
	size_t mt_len, n, pad, i, out_len, j;
	uint8_t *out;
	uint32_t acc;

	comma = strchr(spec, ',');
	if (comma == NULL)
		return failf(VD_ERR_INVALID_ARG, url, "invalid data URL: missing ','");
	semi = memrchr(spec, ';', (size_t)(comma - spec));
	if (semi == NULL || comma - (semi + 1) != 6 || strncmp(semi + 1, "base64", 6) != 0)
		return failf(VD_ERR_INVALID_ARG, url,
			     "only base64 data URLs are supported (data:image/png;base64,...)");
	mt_len = strcspn(spec, ";");
	if (mt_len <= 6 || strncasecmp(spec, "image/", 6) != 0)
		return failf(VD_ERR_INVALID_ARG, url,
			     "media type '%.*s' of the data URL is not an image type (image/...)",
			     (int)(mt_len > 64 ? 64 : mt_len), spec);

	b64 = comma + 1;
	n = strlen(b64);
	if (n % 4 != 0)
		return failf(VD_ERR_INVALID_ARG, url,
			     "invalid base64 in data URL: length %zu is not a multiple of 4 "
			     "(missing '=' padding?)", n);
	pad = 0;
	while (pad < 2 && pad < n && b64[n - 1 - pad] == '=')
		pad++;
	for (i = 0; i < n - pad; i++) {
		unsigned char c = (unsigned char)b64[i];

		if (b64_value(c) < 0)
			return failf(VD_ERR_INVALID_ARG, url,
				     "invalid base64 in data URL: byte 0x%02x at offset %zu",
				     c, i);
	}
	out_len = n / 4 * 3 - pad;
	if (out_len == 0)
		return failf(VD_ERR_INVALID_ARG, url, "the data URL holds no image data");
	if ((uint64_t)out_len > (uint64_t)o->max_bytes)
		return too_big(url, o);
	/* n/4*3 rather than out_len: the last quad writes 3 bytes before the
	 * padding trims them. */
	out = malloc(n / 4 * 3);
	if (out == NULL)
		return vd_errorf(VD_ERR_NOMEM, "data URL: out of memory for %zu bytes", out_len);
	for (i = 0, j = 0; i < n; i += 4, j += 3) {
		acc = 0;
		for (size_t k = 0; k < 4; k++) {
			int v = b64_value((unsigned char)b64[i + k]);

			acc = acc << 6 | (uint32_t)(v < 0 ? 0 : v);
		}
		out[j] = (uint8_t)(acc >> 16);
		out[j + 1] = (uint8_t)(acc >> 8);
		out[j + 2] = (uint8_t)acc;
	}
	*data = out;
	*len = out_len;
	return VD_OK;
}

/* ------------------------------------------------------------- file: URLs */

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The percent-decoded path of file://[localhost]/path[?q][#f] in a new
 * string; the query and fragment are ignored, as urllib's url2pathname does. */
static vd_status file_url_path(const char *url, char **path)
{
	const char *p = url + 5, *host, *end;
	char *out, *q;

	*path = NULL;
	if (strncmp(p, "//", 2) != 0)
		return failf(VD_ERR_INVALID_ARG, url,
			     "a file URL must look like file:///absolute/path");
	host = p + 2;
	p = host + strcspn(host, "/?#");
	if (p != host && !(p - host == 9 && strncasecmp(host, "localhost", 9) == 0))
		return failf(VD_ERR_INVALID_ARG, url, "file URL host '%.*s' is not local",
			     (int)(p - host > 64 ? 64 : p - host), host);
	end = p + strcspn(p, "?#");
	if (*p != '/' || end == p + 1)
		return failf(VD_ERR_INVALID_ARG, url, "the file URL names no file");
	out = malloc((size_t)(end - p) + 1);
	if (out == NULL)
		return vd_errorf(VD_ERR_NOMEM, "file URL: out of memory");
	for (q = out; p < end; p++) {
		if (*p == '%') {
			int hi = p + 1 < end ? hex_value(p[1]) : -1;
			int lo = p + 2 < end ? hex_value(p[2]) : -1;

			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				free(out);
				return failf(VD_ERR_INVALID_ARG, url,
					     "bad percent-escape in the file URL");
			}
			*q++ = (char)(hi << 4 | lo);
			p += 2;
		} else {
			*q++ = *p;
		}
	}
	*q = '\0';
	*path = out;
	return VD_OK;
}

/* realpath() both sides, so a symlink or ".." that leaves the directory is
 * refused, and the file must lie strictly below it (vLLM: the directory is
 * one of the resolved path's parents). A path that does not resolve gets
 * the same answer inside or outside, so the error reveals nothing about
 * files outside the directory. The resolved path is then opened with
 * O_NOFOLLOW; a component swapped for a symlink between the two steps is
 * not caught (vLLM has the same window). */
static vd_status file_url_fetch(const char *url, const vd_media_opts *o,
				uint8_t **data, size_t *len)
{
	char *path = NULL, *dir = NULL, *real = NULL;
	uint8_t *buf = NULL;
	size_t dlen, got = 0;
	struct stat sb;
	int fd = -1;
	vd_status st;

	if (o->allowed_local_path == NULL || o->allowed_local_path[0] == '\0')
		return failf(VD_ERR_INVALID_ARG, url,
			     "Cannot load local files without --allowed-local-media-path");
	st = file_url_path(url, &path);
	if (st != VD_OK)
		return st;
	dir = realpath(o->allowed_local_path, NULL);
	if (dir == NULL) {
		st = failf(VD_ERR_INVALID_ARG, url, "allowed_local_media_path '%s': %s",
			   o->allowed_local_path, strerror(errno));
		goto out;
	}
	real = realpath(path, NULL);
	if (real == NULL) {
		st = failf(VD_ERR_INVALID_ARG, url,
			   "the file does not exist or is not readable under "
			   "allowed_local_media_path '%s'", dir);
		goto out;
	}
	dlen = strcmp(dir, "/") == 0 ? 0 : strlen(dir);
	if (strncmp(real, dir, dlen) != 0 || real[dlen] != '/' || real[dlen + 1] == '\0') {
		st = failf(VD_ERR_INVALID_ARG, url,
			   "the file path must be inside allowed_local_media_path '%s'", dir);
		goto out;
	}
	/* O_NONBLOCK: opening a FIFO must not wait for a writer. */
	fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &sb) != 0) {
		st = failf(VD_ERR_IO, url, "cannot open the file: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		st = failf(VD_ERR_INVALID_ARG, url, "not a regular file");
		goto out;
	}
	if (sb.st_size > o->max_bytes) {
		st = too_big(url, o);
		goto out;
	}
	if (sb.st_size == 0) {
		st = failf(VD_ERR_INVALID_ARG, url, "the file is empty");
		goto out;
	}
	buf = malloc((size_t)sb.st_size);
	if (buf == NULL) {
		st = vd_errorf(VD_ERR_NOMEM, "file URL: out of memory for %lld bytes",
			       (long long)sb.st_size);
		goto out;
	}
	/* Reads at most the size fstat saw: a file that grows meanwhile is cut,
	 * so the cap holds without a second check. */
	while (got < (size_t)sb.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			st = failf(VD_ERR_IO, url, "read: %s", strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	if (got == 0) {
		st = failf(VD_ERR_INVALID_ARG, url, "the file is empty");
		goto out;
	}
	*data = buf;
	*len = got;
	buf = NULL;
	st = VD_OK;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(real);
	free(dir);
	free(path);
	return st;
}

/* ------------------------------------------------------------- http(s) */

enum { STOP_NONE, STOP_STATUS, STOP_SIZE, STOP_NOMEM };
enum { BODY_UNKNOWN, BODY_KEEP, BODY_SKIP };

/* One http(s) fetch: its handle, deadline, hop count and body so far. */
typedef struct http_xfer {
	CURL *h;
	const vd_media_opts *o;
	const char *url;          /* as the caller gave it, for messages */
	double deadline;          /* CLOCK_MONOTONIC seconds */
	int redirects;            /* hops followed so far */
	bool in_multi;            /* added to a multi handle (fetch_many) */
	bool pending;             /* fetch_many: started, no result recorded */
	int stop;                 /* STOP_*: why write_body ended the hop */
	int body_mode;            /* BODY_*: this hop's body is kept or skipped */
	uint64_t seen;            /* body bytes of this hop, kept or not */
	uint8_t *body;
	size_t len, cap;          /* cap <= max_bytes */
	vd_net *nets;             /* allowed networks, parsed from o */
	int n_nets;
	char host[256];           /* host of this hop, for messages */
	int opened, refused;      /* sockets asked for this hop; refused by policy */
	const char *refused_kind; /* the last refused address: its kind */
	char refused_addr[64];    /*   and its text */
} http_xfer;

/* Decide at a hop's first body byte what its body is for: a 2xx body is
 * the image; a 3xx body is read and dropped (libcurl computes the redirect
 * URL only for a transfer that completes); any other status ends the hop at
 * once. Returns false to stop the transfer. */
static bool body_start(http_xfer *x)
{
	long code = 0;
	curl_off_t cl = -1;
	uint8_t *p;

	curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
	if (code >= 300 && code <= 399) {
		x->body_mode = BODY_SKIP;
		return true;
	}
	if (code < 200 || code > 299) {
		x->stop = STOP_STATUS;
		return false;
	}
	x->body_mode = BODY_KEEP;
	curl_easy_getinfo(x->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
	if (cl > 0 && (uint64_t)cl <= (uint64_t)x->o->max_bytes && (size_t)cl > x->cap) {
		p = realloc(x->body, (size_t)cl);
		if (p == NULL) {
			x->stop = STOP_NOMEM;
			return false;
		}
		x->body = p;
		x->cap = (size_t)cl;
	}
	return true;
}

/* Body bytes of the final response of a hop. No hop reads past max_bytes,
 * whether or not a Content-Length announced them (libcurl refuses a larger
 * Content-Length itself: CURLOPT_MAXFILESIZE_LARGE). */
static size_t write_body(char *ptr, size_t size, size_t nmemb, void *user)
{
	http_xfer *x = user;
	size_t n = size * nmemb, want;
	uint64_t max = (uint64_t)x->o->max_bytes;
	uint8_t *p;

	if (x->body_mode == BODY_UNKNOWN && !body_start(x))
		return 0;
	if ((uint64_t)n > max - x->seen) {
		x->stop = STOP_SIZE;
		return 0;
	}
	x->seen += n;
	if (x->body_mode == BODY_SKIP)
		return n;
	if (x->len + n > x->cap) {
		want = x->cap * 2;
		if (want < x->len + n)
			want = x->len + n;
		if (want < MIN_BUF)
			want = MIN_BUF;
		if ((uint64_t)want > max)
			want = (size_t)max;
		p = realloc(x->body, want);
		if (p == NULL) {
			x->stop = STOP_NOMEM;
			return 0;
		}
		x->body = p;
		x->cap = want;
	}
	memcpy(x->body + x->len, ptr, n);
	x->len += n;
	return n;
}

/* Only http and https may be requested. PROTOCOLS_STR replaced the bitmask
 * in libcurl 7.85, which deprecates the old option. No REDIR_PROTOCOLS:
 * curl never follows a redirect itself here (see check_target). */
#if LIBCURL_VERSION_NUM >= 0x075500
static CURLcode allow_http_only(CURL *h)
{
	return curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
}
#else
static CURLcode allow_http_only(CURL *h)
{
	return curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
}
#endif

static bool domain_allowed(const vd_media_opts *o, const char *host)
{
	size_t n = strlen(host);
	int i;

	/* curl keeps the brackets of an IPv6 literal; the list names bare addresses. */
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		host++;
		n -= 2;
	}
	for (i = 0; i < o->n_allowed_domains; i++) {
		const char *d = o->allowed_domains[i];

		if (d != NULL && strlen(d) == n && strncasecmp(d, host, n) == 0)
			return true;
	}
	return false;
}

/* The refusal of an address the network policy blocks. host is the name
 * the URL gave (NULL when it was the address itself). */
static vd_status refused(const http_xfer *x, const char *host, const char *addr,
			 const char *kind, bool redirect)
{
	char who[320];

	if (host && strcmp(host, addr) != 0)
		snprintf(who, sizeof(who), "host '%.100s' resolves to %s, a", host, addr);
	else
		snprintf(who, sizeof(who), "%s is a", addr);
	return failf(VD_ERR_INVALID_ARG, x->url,
		     "%s %s address%s, which image fetches may not reach (an operator can "
		     "allow its network with --allowed-media-networks)", who, kind,
		     redirect ? " (after a redirect)" : "");
}

/* Whether target (the first URL or a redirect's) may be requested: it
 * parses, is http(s), has a host, the host is allowed, and an IP-literal
 * host is an address the policy lets fetches reach (hostnames are judged
 * by open_checked on every address they resolve to). Parsed with curl's own
 * parser so the host checked is the host curl connects to: curl also
 * normalises the other IPv4 spellings (2130706433, 0x7f.1, 0177.0.0.1) to
 * a dotted quad. Records the host in x->host for later messages. */
static vd_status check_target(http_xfer *x, const char *target, bool redirect)
{
	char *scheme = NULL, *host = NULL, shown[192], what[224], addr_text[64];
	CURLU *u = curl_url();
	vd_status st = VD_OK;
	vd_net_addr addr;
	const char *kind;

	if (u == NULL)
		return vd_errorf(VD_ERR_NOMEM, "media fetch: out of memory");
	/* The message already names the URL the caller gave; only a redirect
	 * target needs showing. */
	url_for_msg(target, shown, sizeof(shown));
	if (redirect)
		snprintf(what, sizeof(what), "redirect target '%s'", shown);
	else
		snprintf(what, sizeof(what), "URL");
	if (curl_url_set(u, CURLUPART_URL, target, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
		st = failf(VD_ERR_INVALID_ARG, x->url, "malformed %s", what);
		goto out;
	}
	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
		st = failf(VD_ERR_INVALID_ARG, x->url, "%s is not http or https", what);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
		st = failf(VD_ERR_INVALID_ARG, x->url, "%s has no host", what);
		goto out;
	}
	snprintf(x->host, sizeof(x->host), "%s", host);
	if (x->o->n_allowed_domains > 0 && !domain_allowed(x->o, host)) {
		st = failf(VD_ERR_INVALID_ARG, x->url,
			   "host '%.100s' is not in allowed_media_domains%s", host,
			   redirect ? " (after a redirect)" : "");
		goto out;
	}
	if (vd_net_addr_parse(host, &addr) && !vd_net_allowed(x->nets, x->n_nets, &addr, &kind)) {
		vd_net_addr_str(&addr, addr_text, sizeof(addr_text));
		st = refused(x, NULL, addr_text, kind, redirect);
	}
out:
	curl_free(host);
	curl_free(scheme);
	curl_url_cleanup(u);
	return st;
}

/* CURLOPT_OPENSOCKETFUNCTION: curl is about to connect to sa (after its own
 * DNS resolution, for each address it tries). The policy is applied to
 * exactly that address; a refused one never gets a socket, so no packet
 * is sent to it, and curl moves on to the next address or fails. */
static curl_socket_t open_checked(void *clientp, curlsocktype purpose, struct curl_sockaddr *sa)
{
	http_xfer *x = clientp;
	struct sockaddr_storage ss;
	vd_net_addr a = { 0 };
	const char *kind = "non-IP";
	int fd;

	(void)purpose;
	x->opened++;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, &sa->addr, sa->addrlen < sizeof(ss) ? sa->addrlen : sizeof(ss));
	if (sa->family == AF_INET && sa->addrlen >= sizeof(struct sockaddr_in)) {
		a.family = AF_INET;
		memcpy(a.addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
	} else if (sa->family == AF_INET6 && sa->addrlen >= sizeof(struct sockaddr_in6)) {
		a.family = AF_INET6;
		memcpy(a.addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
	}
	if (a.family == 0 || !vd_net_allowed(x->nets, x->n_nets, &a, &kind)) {
		x->refused++;
		x->refused_kind = kind;
		if (a.family)
			vd_net_addr_str(&a, x->refused_addr, sizeof(x->refused_addr));
		else
			snprintf(x->refused_addr, sizeof(x->refused_addr), "an address");
		return CURL_SOCKET_BAD;
	}
	fd = socket(sa->family, sa->socktype | SOCK_CLOEXEC, sa->protocol);
	return fd < 0 ? CURL_SOCKET_BAD : fd;
}

static void http_free(http_xfer *x)
{
	curl_easy_cleanup(x->h);
	free(x->body);
	free(x->nets);
	x->h = NULL;
	x->body = NULL;
	x->nets = NULL;
}

/* A handle with everything but the URL and the timeouts; checks x->url.
 * On error x is still safe to http_free. */
static vd_status http_init(http_xfer *x, const char *url, const vd_media_opts *o)
{
	CURL *h;
	vd_status st;

	memset(x, 0, sizeof(*x));
	x->o = o;
	x->url = url;
	x->deadline = now_s() + o->timeout_s;
	st = vd_net_parse_list(o->allowed_networks, o->n_allowed_networks, &x->nets, &x->n_nets);
	if (st != VD_OK)
		return st;
	h = x->h = curl_easy_init();
	if (h == NULL)
		return vd_errorf(VD_ERR_NOMEM, "media fetch: cannot create a curl handle");
	/* NOSIGNAL: timeouts must not use SIGALRM in a threaded process.
	 * PROXY "": no proxy, even one named in the environment, since the
	 * policy must judge the destination itself. */
	if (curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEDATA, x) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PRIVATE, x) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_checked) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, x) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROXY, "") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_USERAGENT, USER_AGENT) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_bytes) != CURLE_OK ||
	    allow_http_only(h) != CURLE_OK)
		return vd_errorf(VD_ERR_BACKEND,
				 "media fetch: libcurl %s lacks an option vllmd needs",
				 curl_version());
	return check_target(x, url, false);
}

static vd_status timed_out(const http_xfer *x)
{
	return failf(VD_ERR_TIMEOUT, x->url,
		     "timed out after %g s (image_fetch_timeout, env VLLM_IMAGE_FETCH_TIMEOUT)",
		     x->o->timeout_s);
}

/* Point the handle at target with the time left before the deadline. */
static vd_status http_hop_start(http_xfer *x, const char *target)
{
	double left = x->deadline - now_s();
	long ms;

	if (left <= 0)
		return timed_out(x);
	/* Clamped so the conversion stays defined where long is 32 bits. */
	ms = left < INT_MAX / 1000.0 ? (long)ceil(left * 1000.0) : (long)INT_MAX;
	if (curl_easy_setopt(x->h, CURLOPT_URL, target) != CURLE_OK ||
	    curl_easy_setopt(x->h, CURLOPT_TIMEOUT_MS, ms) != CURLE_OK ||
	    curl_easy_setopt(x->h, CURLOPT_CONNECTTIMEOUT_MS, ms) != CURLE_OK)
		return vd_errorf(VD_ERR_NOMEM, "media fetch: out of memory");
	x->len = 0;
	x->seen = 0;
	x->stop = STOP_NONE;
	x->body_mode = BODY_UNKNOWN;
	x->opened = x->refused = 0;
	return VD_OK;
}

/* A failed transfer in words a client can act on. Every way of not getting
 * a connection (refused, unreachable, timed out while connecting) reads
 * the same, so a reply does not tell a closed port from a filtered one;
 * when every address the host resolved to was refused by the policy, that
 * is what the message says. */
static vd_status curl_failure(const http_xfer *x, CURLcode rc)
{
	long sent = 0;

	curl_easy_getinfo(x->h, CURLINFO_REQUEST_SIZE, &sent);
	if ((rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT) && sent == 0) {
		if (x->opened > 0 && x->refused == x->opened)
			return refused(x, x->host, x->refused_addr, x->refused_kind,
				       x->redirects > 0);
		return failf(VD_ERR_IO, x->url, "could not connect to the host%s (connection "
			     "refused, unreachable or timed out)",
			     x->redirects > 0 ? " (after a redirect)" : "");
	}
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		return timed_out(x);
	case CURLE_FILESIZE_EXCEEDED:
		return too_big(x->url, x->o);
	case CURLE_OUT_OF_MEMORY:
		return vd_errorf(VD_ERR_NOMEM, "media fetch: libcurl out of memory");
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return failf(VD_ERR_INVALID_ARG, x->url, "%s", curl_easy_strerror(rc));
	case CURLE_COULDNT_RESOLVE_HOST:
		return failf(VD_ERR_IO, x->url, "could not resolve the host name '%.100s'",
			     x->host);
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
		return failf(VD_ERR_IO, x->url, "the TLS handshake with the host failed (%s)",
			     curl_easy_strerror(rc));
	case CURLE_GOT_NOTHING:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
		return failf(VD_ERR_IO, x->url, "the connection ended before a complete response");
	case CURLE_WEIRD_SERVER_REPLY:
		return failf(VD_ERR_IO, x->url, "the host's reply is not HTTP");
	default:
		return failf(VD_ERR_IO, x->url, "%s", curl_easy_strerror(rc));
	}
}

/* Judge a finished hop. VD_OK with *next == NULL: x->body holds the image.
 * VD_OK with *next set (owned): the checked redirect target to request. */
static vd_status http_hop_end(http_xfer *x, CURLcode rc, char **next)
{
	char *loc = NULL;
	long code = 0;
	vd_status st;

	*next = NULL;
	if (x->stop == STOP_SIZE)
		return too_big(x->url, x->o);
	if (x->stop == STOP_NOMEM)
		return vd_errorf(VD_ERR_NOMEM, "media fetch: out of memory for the body");
	if (rc != CURLE_OK && x->stop != STOP_STATUS)
		return curl_failure(x, rc);
	curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
	if (code >= 300 && code <= 399) {
		curl_easy_getinfo(x->h, CURLINFO_REDIRECT_URL, &loc);
		if (loc == NULL)
			return failf(VD_ERR_IO, x->url, "HTTP %ld without a Location", code);
		if (x->redirects >= x->o->max_redirects)
			return failf(VD_ERR_LIMIT, x->url, "too many redirects (max_redirects %d)",
				     x->o->max_redirects);
		st = check_target(x, loc, true);
		if (st != VD_OK)
			return st;
		*next = strdup(loc);
		if (*next == NULL)
			return vd_errorf(VD_ERR_NOMEM, "media fetch: out of memory");
		x->redirects++;
		return VD_OK;
	}
	if (code < 200 || code > 299)
		return failf(VD_ERR_IO, x->url, "HTTP %ld", code);
	if (x->len == 0)
		return failf(VD_ERR_INVALID_ARG, x->url, "the response has no body");
	return VD_OK;
}

/* Hand the body to the caller, trimmed to its length. */
static void http_take_body(http_xfer *x, uint8_t **data, size_t *len)
{
	uint8_t *p = realloc(x->body, x->len);

	*data = p != NULL ? p : x->body;
	*len = x->len;
	x->body = NULL;
	x->cap = x->len = 0;
}

static vd_status http_fetch(const char *url, const vd_media_opts *o,
			    uint8_t **data, size_t *len)
{
	http_xfer x;
	char *target = NULL, *next;
	vd_status st;

	st = http_init(&x, url, o);
	/* Ends: each pass either finishes or spends one of max_redirects. */
	while (st == VD_OK) {
		st = http_hop_start(&x, target != NULL ? target : url);
		if (st != VD_OK)
			break;
		st = http_hop_end(&x, curl_easy_perform(x.h), &next);
		free(target);
		target = next;
		if (st == VD_OK && target == NULL) {
			http_take_body(&x, data, len);
			break;
		}
	}
	free(target);
	http_free(&x);
	return st;
}

/* ------------------------------------------------------------- entry points */

static bool is_http(const char *url)
{
	return has_scheme(url, "http") || has_scheme(url, "https");
}

vd_status vd_media_fetch(const char *url, const vd_media_opts *o,
			 uint8_t **data, size_t *len)
{
	vd_status st;

	if (data == NULL || len == NULL || url == NULL)
		return vd_errorf(VD_ERR_INVALID_ARG, "vd_media_fetch: url, data and len are required");
	*data = NULL;
	*len = 0;
	st = check_opts(o);
	if (st != VD_OK)
		return st;
	if (is_http(url))
		return http_fetch(url, o, data, len);
	if (has_scheme(url, "data"))
		return data_url_fetch(url, o, data, len);
	if (has_scheme(url, "file"))
		return file_url_fetch(url, o, data, len);
	return failf(VD_ERR_INVALID_ARG, url,
		     "the URL must be an http(s), data or file URL");
}

static void record(vd_media_result *r, vd_status st)
{
	r->status = st;
	if (st != VD_OK)
		snprintf(r->error, sizeof(r->error), "%s", vd_error_message());
}

/* Drive the transfers in xs[] that are in m until each has a result.
 * Returns VD_ERR_BACKEND if the multi interface itself fails. */
static vd_status run_multi(CURLM *m, http_xfer *xs, int n, int active,
			   const vd_media_opts *o, vd_media_result *out)
{
	double hard_stop = now_s() + o->timeout_s + 5.0;
	CURLMcode mc = CURLM_OK;
	int running, queued, i;

	/* Ends: every transfer carries a curl timeout within its deadline;
	 * hard_stop only guards against a libcurl that ignores it. */
	while (active > 0 && mc == CURLM_OK) {
		CURLMsg *msg;

		mc = curl_multi_perform(m, &running);
		while (mc == CURLM_OK && (msg = curl_multi_info_read(m, &queued)) != NULL) {
			CURL *h = msg->easy_handle;
			CURLcode rc = msg->data.result;
			char *priv = NULL, *next;
			http_xfer *x;
			vd_status st;

			if (msg->msg != CURLMSG_DONE)
				continue;
			/* msg dies with remove_handle: h and rc were copied. */
			curl_easy_getinfo(h, CURLINFO_PRIVATE, &priv);
			x = (http_xfer *)priv;
			curl_multi_remove_handle(m, h);
			x->in_multi = false;
			st = http_hop_end(x, rc, &next);
			if (st == VD_OK && next != NULL) {
				st = http_hop_start(x, next);
				free(next);
				if (st == VD_OK) {
					mc = curl_multi_add_handle(m, h);
					x->in_multi = mc == CURLM_OK;
					continue;
				}
			}
			i = (int)(x - xs);
			if (st == VD_OK)
				http_take_body(x, &out[i].data, &out[i].len);
			record(&out[i], st);
			x->pending = false;
			active--;
		}
		if (mc != CURLM_OK || active == 0)
			break;
		if (now_s() > hard_stop) {
			vd_errorf(VD_ERR_TIMEOUT, "Failed to fetch image: libcurl overran the deadline");
			for (i = 0; i < n; i++)
				if (xs[i].pending)
					record(&out[i], VD_ERR_TIMEOUT);
			return VD_OK;
		}
		mc = curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	if (mc == CURLM_OK)
		return VD_OK;
	return vd_errorf(VD_ERR_BACKEND, "media fetch: libcurl multi failed: %s",
			 curl_multi_strerror(mc));
}

vd_status vd_media_fetch_many(const char *const *urls, int n,
			      const vd_media_opts *o, vd_media_result *out)
{
	http_xfer *xs = NULL;
	CURLM *m = NULL;
	int i, active = 0;
	vd_status st;

	if (n < 0 || (n > 0 && (urls == NULL || out == NULL)))
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "vd_media_fetch_many: urls and out are required, n >= 0");
	if (n == 0)
		return VD_OK;
	memset(out, 0, sizeof(*out) * (size_t)n);
	st = check_opts(o);
	if (st == VD_OK) {
		xs = calloc((size_t)n, sizeof(*xs));
		m = curl_multi_init();
		if (xs == NULL || m == NULL)
			st = vd_errorf(VD_ERR_NOMEM, "media fetch: out of memory");
	}
	if (st != VD_OK) {
		for (i = 0; i < n; i++)
			record(&out[i], st);
		goto out;
	}
	/* data: and file: first, so their work does not eat into the http
	 * deadlines, which start when the transfers are set up. */
	for (i = 0; i < n; i++)
		if (urls[i] == NULL || !is_http(urls[i]))
			record(&out[i], vd_media_fetch(urls[i], o, &out[i].data, &out[i].len));
	for (i = 0; i < n; i++) {
		if (urls[i] == NULL || !is_http(urls[i]))
			continue;
		st = http_init(&xs[i], urls[i], o);
		if (st == VD_OK)
			st = http_hop_start(&xs[i], urls[i]);
		if (st == VD_OK && curl_multi_add_handle(m, xs[i].h) != CURLM_OK)
			st = vd_errorf(VD_ERR_BACKEND, "media fetch: curl_multi_add_handle failed");
		if (st != VD_OK) {
			record(&out[i], st);
			continue;
		}
		xs[i].in_multi = xs[i].pending = true;
		active++;
	}
	if (active > 0 && run_multi(m, xs, n, active, o, out) != VD_OK)
		for (i = 0; i < n; i++)
			if (xs[i].pending)
				record(&out[i], VD_ERR_BACKEND);
out:
	for (i = 0; xs != NULL && i < n; i++) {
		if (xs[i].in_multi)
			curl_multi_remove_handle(m, xs[i].h);
		http_free(&xs[i]);
	}
	curl_multi_cleanup(m);
	free(xs);
	for (i = 0; i < n; i++)
		if (out[i].status != VD_OK)
			return vd_errorf(out[i].status, "image %d: %s", i, out[i].error);
	return VD_OK;
}

void vd_media_results_free(vd_media_result *out, int n)
{
	int i;

	for (i = 0; out != NULL && i < n; i++) {
		free(out[i].data);
		out[i].data = NULL;
		out[i].len = 0;
	}
}
