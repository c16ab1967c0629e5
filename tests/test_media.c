/* Check tests for server/media.c. http(s) cases talk only to
 * tests/media_server.py, started once per run on 127.0.0.1 and 127.0.0.2
 * with ephemeral ports; it exits when its stdin pipe closes (main closes it,
 * and so does the kernel if this process dies) and after 15 minutes
 * regardless. The fetches that must reach it allow 127.0.0.1/32 (the SSRF
 * guard refuses loopback otherwise); the SSRF cases check with its request
 * counts that a refused fetch never reached it. file:// cases use a
 * temporary directory tree removed at exit. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "server/options.h"
#include "server/media.h"

/* Timing bounds, chosen far from what they separate so that the speed of the
 * machine cannot decide a test: a fetch the client must cut short meets a
 * server stalling 30 s and must end within STALL_CUT_S; N_THREADS fetches
 * of PAR_DELAY_MS each must overlap (one after another they take 12 s). */
#define STALL_CUT_S 10.0
#define PAR_DELAY_MS 1500
#define PAR_BOUND_S 6.0

static pid_t srv_pid = -1;
static int srv_stdin = -1;
static char base[64];             /* "http://127.0.0.1:<port>" */
static char base2[64];            /* "http://127.0.0.2:<port>": never to be reached unasked */
static const char *const local_only[] = { "127.0.0.1/32" };
static char srv_error[PATH_MAX + 128];
static const char *prog_path = "";
static char tmp_root[PATH_MAX];   /* file:// fixtures */

/* ---- helpers ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The bytes media_server.py's pattern(n, seed) produces. */
static uint8_t pattern_byte(size_t i, int seed)
{
	return (uint8_t)((i * 131 + (size_t)seed * 17 + 7) % 251);
}

static void assert_pattern(const uint8_t *p, size_t len, size_t n, int seed)
{
	ck_assert_uint_eq(len, n);
	for (size_t i = 0; i < n; i++)
		if (p[i] != pattern_byte(i, seed))
			ck_abort_msg("byte %zu is %u, want %u", i, p[i], pattern_byte(i, seed));
}

static const char *url(const char *path_and_query)
{
	static char buf[1024];

	ck_assert_msg(srv_pid > 0, "test server not running: %s", srv_error);
	snprintf(buf, sizeof(buf), "%s%s", base, path_and_query);
	return buf;
}

static vd_media_opts opts(void)
{
	vd_media_opts o = {
		.timeout_s = 5.0,
		.max_bytes = 1 << 20,
		.max_redirects = 3,
		.allowed_networks = local_only,
		.n_allowed_networks = 1,
	};
	return o;
}

static void assert_msg_has(const char *want)
{
	const char *m = vd_error_message();

	ck_assert_msg(strstr(m, want) != NULL, "message '%s' lacks '%s'", m, want);
}

/* Fetch expecting status want with want_msg in the message; *data stays NULL. */
static void expect_fail(const char *u, const vd_media_opts *o, vd_status want,
			const char *want_msg)
{
	uint8_t *data = (uint8_t *)1;
	size_t len = 7;
	vd_status st = vd_media_fetch(u, o, &data, &len);

	ck_assert_msg(st == want, "%s: got %s (%s), want %s", u, vd_status_str(st),
		      vd_error_message(), vd_status_str(want));
	ck_assert_ptr_null(data);
	ck_assert_uint_eq(len, 0);
	assert_msg_has(want_msg);
}

static void expect_bytes(const char *u, const vd_media_opts *o, const void *want,
			 size_t want_len)
{
	uint8_t *data = NULL;
	size_t len = 0;
	vd_status st = vd_media_fetch(u, o, &data, &len);

	ck_assert_msg(st == VD_OK, "%s: %s", u, vd_error_message());
	ck_assert_uint_eq(len, want_len);
	ck_assert_mem_eq(data, want, want_len);
	free(data);
}

/* ---- the local server ---- */

static const char *server_script(void)
{
	static char buf[PATH_MAX];
	char prog[PATH_MAX];
	const char *dirs[] = { getenv("VD_SRCDIR"), getenv("srcdir") };

	for (int i = 0; i < 2; i++) {
		if (dirs[i] == NULL)
			continue;
		snprintf(buf, sizeof(buf), "%s/tests/media_server.py", dirs[i]);
		if (access(buf, R_OK) == 0)
			return buf;
	}
	snprintf(prog, sizeof(prog), "%s", prog_path);
	snprintf(buf, sizeof(buf), "%s/media_server.py", dirname(prog));
	if (access(buf, R_OK) == 0)
		return buf;
	return "tests/media_server.py";
}

static void server_start(void)
{
	const char *script = server_script();
	int in[2], out[2];
	char line[64];
	ssize_t got = 0, r;
	struct pollfd pfd;
	double give_up = now_s() + 15.0;

	if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
		snprintf(srv_error, sizeof(srv_error), "pipe: %s", strerror(errno));
		return;
	}
	srv_pid = fork();
	if (srv_pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		execl("/usr/bin/python3", "python3", script, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	srv_stdin = in[1];
	if (srv_pid < 0) {
		snprintf(srv_error, sizeof(srv_error), "fork: %s", strerror(errno));
		close(out[0]);
		return;
	}
	/* The first line is the port. Bounded by give_up. */
	pfd.fd = out[0];
	pfd.events = POLLIN;
	while (got < (ssize_t)sizeof(line) - 1 && memchr(line, '\n', (size_t)got) == NULL &&
	       now_s() < give_up) {
		if (poll(&pfd, 1, 200) <= 0)
			continue;
		r = read(out[0], line + got, sizeof(line) - 1 - (size_t)got);
		if (r <= 0)
			break;
		got += r;
	}
	close(out[0]);
	line[got] = '\0';
	if (atoi(line) <= 0 || strchr(line, ' ') == NULL || atoi(strchr(line, ' ')) <= 0) {
		snprintf(srv_error, sizeof(srv_error),
			 "/usr/bin/python3 %s printed no port ('%s')", script, line);
		kill(srv_pid, SIGKILL);
		waitpid(srv_pid, NULL, 0);
		srv_pid = -1;
		return;
	}
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", atoi(line));
	snprintf(base2, sizeof(base2), "http://127.0.0.2:%d", atoi(strchr(line, ' ')));
}

/* Closing stdin makes the server exit; it gets 3 s before SIGKILL. */
static void server_stop(void)
{
	if (srv_stdin >= 0)
		close(srv_stdin);
	srv_stdin = -1;
	if (srv_pid <= 0)
		return;
	for (int i = 0; i < 30; i++) {
		if (waitpid(srv_pid, NULL, WNOHANG) == srv_pid) {
			srv_pid = -1;
			return;
		}
		usleep(100 * 1000);
	}
	kill(srv_pid, SIGKILL);
	waitpid(srv_pid, NULL, 0);
	srv_pid = -1;
}

/* ---- file fixtures ---- */

static void write_file(const char *dir, const char *name, size_t n, int seed)
{
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (f == NULL) {
		perror(path);
		return;
	}
	for (size_t i = 0; i < n; i++)
		fputc(pattern_byte(i, seed), f);
	fclose(f);
}

/* tmp_root/allowed/{img.bin, a b.bin, big.bin, empty.bin, sub/, inner -> img.bin,
 *                  escape -> ../outside/secret.bin}
 * tmp_root/outside/secret.bin
 * tmp_root/alias -> allowed */
static void files_setup(void)
{
	char p[PATH_MAX + 64];

	snprintf(tmp_root, sizeof(tmp_root), "%s/vd_test_media.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(tmp_root) == NULL) {
		perror("mkdtemp");
		tmp_root[0] = '\0';
		return;
	}
	snprintf(p, sizeof(p), "%s/allowed", tmp_root);
	mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/allowed/sub", tmp_root);
	mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/outside", tmp_root);
	mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/allowed", tmp_root);
	write_file(p, "img.bin", 3000, 1);
	write_file(p, "a b.bin", 10, 2);
	write_file(p, "big.bin", 5000, 3);
	write_file(p, "empty.bin", 0, 0);
	snprintf(p, sizeof(p), "%s/outside", tmp_root);
	write_file(p, "secret.bin", 100, 4);
	snprintf(p, sizeof(p), "%s/allowed/inner", tmp_root);
	if (symlink("img.bin", p) != 0)
		perror(p);
	snprintf(p, sizeof(p), "%s/allowed/escape", tmp_root);
	if (symlink("../outside/secret.bin", p) != 0)
		perror(p);
	snprintf(p, sizeof(p), "%s/alias", tmp_root);
	if (symlink("allowed", p) != 0)
		perror(p);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void files_teardown(void)
{
	if (tmp_root[0] != '\0')
		nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *file_url(const char *rel)
{
	static char buf[PATH_MAX + 64];

	ck_assert_msg(tmp_root[0] != '\0', "no temporary directory");
	snprintf(buf, sizeof(buf), "file://%s/%s", tmp_root, rel);
	return buf;
}

/* ---- http ---- */

START_TEST(test_http_ok)
{
	vd_media_opts o = opts();
	uint8_t *data = NULL;
	size_t len = 0;
	char u[128];

	ck_assert_int_eq(vd_media_fetch(url("/bytes?n=100000&seed=3"), &o, &data, &len), VD_OK);
	assert_pattern(data, len, 100000, 3);
	free(data);
	/* No Content-Length: the body runs to the end of the connection. */
	ck_assert_int_eq(vd_media_fetch(url("/nolen?n=70000&seed=4"), &o, &data, &len), VD_OK);
	assert_pattern(data, len, 70000, 4);
	free(data);
	/* Scheme names are case-insensitive. */
	snprintf(u, sizeof(u), "HTTP%s/bytes?n=10", base + 4);
	ck_assert_int_eq(vd_media_fetch(u, &o, &data, &len), VD_OK);
	assert_pattern(data, len, 10, 0);
	free(data);
}
END_TEST

START_TEST(test_http_user_agent)
{
	vd_media_opts o = opts();
	const char *want = "vllmd/" VD_VERSION;

	expect_bytes(url("/ua"), &o, want, strlen(want));
}
END_TEST

START_TEST(test_http_status)
{
	vd_media_opts o = opts();
	char u[128];

	expect_fail(url("/status?code=404"), &o, VD_ERR_IO, "HTTP 404");
	assert_msg_has("Failed to fetch image from http://127.0.0.1:");
	assert_msg_has("/status?code=404: HTTP 404");
	expect_fail(url("/status?code=500"), &o, VD_ERR_IO, "HTTP 500");
	/* A 2xx with nothing in it is no image. */
	expect_fail(url("/bytes?n=0"), &o, VD_ERR_INVALID_ARG, "no body");
	/* TLS to a plain-http port fails the handshake, cleanly. */
	snprintf(u, sizeof(u), "https%s/bytes", base + 4);
	expect_fail(u, &o, VD_ERR_IO, "Failed to fetch image from https://127.0.0.1:");
}
END_TEST

START_TEST(test_http_timeout)
{
	vd_media_opts o = opts();
	double t0;

	/* The server stalls 30 s; the fetch gives up after 0.5 s. The bound
	 * (STALL_CUT_S) is far from both, so a slow or loaded machine cannot
	 * fail this, and waiting out the server always does. */
	o.timeout_s = 0.5;
	t0 = now_s();
	expect_fail(url("/slow?delay=30"), &o, VD_ERR_TIMEOUT, "timed out after 0.5 s");
	ck_assert_msg(now_s() - t0 < STALL_CUT_S, "took %.2f s", now_s() - t0);
	assert_msg_has("VLLM_IMAGE_FETCH_TIMEOUT");
	assert_msg_has("/slow?delay=30");
	/* The deadline covers the whole fetch, not each hop. */
	t0 = now_s();
	expect_fail(url("/to?loc=/slow%3Fdelay%3D30"), &o, VD_ERR_TIMEOUT, "timed out");
	ck_assert_msg(now_s() - t0 < STALL_CUT_S, "took %.2f s", now_s() - t0);
}
END_TEST

START_TEST(test_http_refused)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	vd_media_opts o = opts();
	char u[64];
	int fd;

	/* A port that was just free: nothing listens there. */
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/x", ntohs(sa.sin_port));
	expect_fail(u, &o, VD_ERR_IO, u);
}
END_TEST

START_TEST(test_http_size_cap)
{
	vd_media_opts o = opts();
	uint8_t *data = NULL;
	size_t len = 0;
	double t0;

	o.max_bytes = 10000;
	/* The cap itself is allowed. */
	ck_assert_int_eq(vd_media_fetch(url("/bytes?n=10000"), &o, &data, &len), VD_OK);
	assert_pattern(data, len, 10000, 0);
	free(data);
	expect_fail(url("/bytes?n=10001"), &o, VD_ERR_LIMIT,
		    "more than 10000 bytes (max_image_bytes)");
	/* Refused from the Content-Length: the server then stalls for 30 s. */
	t0 = now_s();
	expect_fail(url("/bigcl?cl=100000000&hold=30"), &o, VD_ERR_LIMIT, "max_image_bytes");
	ck_assert_msg(now_s() - t0 < STALL_CUT_S, "took %.2f s", now_s() - t0);
	/* No Content-Length: cut once the bytes pass the cap, without waiting
	 * for the server to finish. */
	t0 = now_s();
	expect_fail(url("/nolen?n=50000&hold=30"), &o, VD_ERR_LIMIT, "more than 10000 bytes");
	ck_assert_msg(now_s() - t0 < STALL_CUT_S, "took %.2f s", now_s() - t0);
	ck_assert_int_eq(vd_media_fetch(url("/nolen?n=10000&seed=9"), &o, &data, &len), VD_OK);
	assert_pattern(data, len, 10000, 9);
	free(data);
}
END_TEST

START_TEST(test_http_redirects)
{
	vd_media_opts o = opts();
	uint8_t *data = NULL;
	size_t len = 0;

	/* Three hops (relative Locations, bodies on the 302s) within max 3. */
	ck_assert_int_eq(vd_media_fetch(url("/redir?n=3"), &o, &data, &len), VD_OK);
	assert_pattern(data, len, 1000, 5);
	free(data);
	expect_fail(url("/redir?n=4"), &o, VD_ERR_LIMIT, "too many redirects (max_redirects 3)");
	o.max_redirects = 0;
	expect_fail(url("/redir?n=1"), &o, VD_ERR_LIMIT, "too many redirects (max_redirects 0)");
	ck_assert_int_eq(vd_media_fetch(url("/redir?n=0"), &o, &data, &len), VD_OK);
	free(data);
	o.max_redirects = 3;
	expect_fail(url("/noloc"), &o, VD_ERR_IO, "HTTP 302 without a Location");
}
END_TEST

START_TEST(test_http_redirect_targets)
{
	const char *only_loopback[] = { "127.0.0.1" };
	vd_media_opts o = opts();
	char u[512];
	uint8_t *data = NULL;
	size_t len = 0;
	const char *port = strrchr(base, ':') + 1;

	/* Other schemes are refused whatever the domain list says. */
	expect_fail(url("/to?loc=ftp://127.0.0.1/x.png"), &o, VD_ERR_INVALID_ARG,
		    "redirect target 'ftp://127.0.0.1/x.png' is not http or https");
	expect_fail(url("/to?loc=file:///etc/passwd"), &o, VD_ERR_INVALID_ARG,
		    "is not http or https");
	expect_fail(url("/to?loc=gopher://127.0.0.1:70/"), &o, VD_ERR_INVALID_ARG,
		    "is not http or https");

	o.allowed_domains = only_loopback;
	o.n_allowed_domains = 1;
	ck_assert_int_eq(vd_media_fetch(url("/redir?n=2"), &o, &data, &len), VD_OK);
	free(data);
	snprintf(u, sizeof(u), "/to?loc=http://localhost:%s/bytes", port);
	expect_fail(url(u), &o, VD_ERR_INVALID_ARG,
		    "host 'localhost' is not in allowed_media_domains (after a redirect)");
	snprintf(u, sizeof(u), "http://localhost:%s/bytes", port);
	expect_fail(u, &o, VD_ERR_INVALID_ARG, "host 'localhost' is not in allowed_media_domains");
	/* The list matches whole host names, case-insensitively. */
	snprintf(u, sizeof(u), "http://127.0.0.10:%s/bytes", port);
	expect_fail(u, &o, VD_ERR_INVALID_ARG, "'127.0.0.10' is not in allowed_media_domains");
	{
		const char *upper[] = { "example.org", "LOCALHOST" };

		o.allowed_domains = upper;
		o.n_allowed_domains = 2;
		snprintf(u, sizeof(u), "http://127.0.0.1:%s/bytes", port);
		expect_fail(u, &o, VD_ERR_INVALID_ARG, "host '127.0.0.1'");
		snprintf(u, sizeof(u), "http://localhost:%s/bytes?n=5", port);
		o.timeout_s = 2.0;
		ck_assert_msg(vd_media_fetch(u, &o, &data, &len) == VD_OK, "%s", vd_error_message());
		assert_pattern(data, len, 5, 0);
		free(data);
	}
}
END_TEST

/* ---- SSRF guard ---- */

/* How many requests the server at b has served, asked through its /count
 * with loopback allowed. */
static long served(const char *b)
{
	static const char *const loopback[] = { "127.0.0.0/8" };
	vd_media_opts o = opts();
	char u[128], text[32];
	uint8_t *data = NULL;
	size_t len = 0;

	o.allowed_networks = loopback;
	snprintf(u, sizeof(u), "%s/count", b);
	ck_assert_msg(vd_media_fetch(u, &o, &data, &len) == VD_OK, "%s: %s", u,
		      vd_error_message());
	ck_assert_uint_lt(len, sizeof(text));
	memcpy(text, data, len);
	text[len] = '\0';
	free(data);
	return atol(text);
}

/* By default no spelling of the loopback server is fetched, and the server
 * sees no request: the refusal comes before any connection. */
START_TEST(test_ssrf_loopback_refused)
{
	static const char *const forms[] = {
		"http://127.0.0.1:%s/bytes", "http://2130706433:%s/bytes",
		"http://0x7f000001:%s/bytes", "http://0177.0.0.1:%s/bytes",
		"http://127.1:%s/bytes", "http://0x7f.0.0.1:%s/bytes",
		"http://[::ffff:127.0.0.1]:%s/bytes", "http://[::ffff:7f00:1]:%s/bytes",
		"http://localhost:%s/bytes", "http://LOCALHOST:%s/bytes",
		"http://0.0.0.0:%s/bytes", "http://0:%s/bytes", "http://[::1]:%s/bytes",
		"http://[::]:%s/bytes", "HTTP://127.0.0.1:%s/bytes",
		"http://user:pw@127.0.0.1:%s/bytes",
	};
	vd_media_opts o = opts();
	const char *port = strrchr(base, ':') + 1;
	long before = served(base), before2 = served(base2);
	char u[256];

	o.allowed_networks = NULL;
	o.n_allowed_networks = 0;
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		snprintf(u, sizeof(u), forms[i], port);
		expect_fail(u, &o, VD_ERR_INVALID_ARG, "which image fetches may not reach");
		assert_msg_has("--allowed-media-networks");
		ck_assert_msg(strstr(vd_error_message(), "loopback") ||
			      strstr(vd_error_message(), "unspecified"),
			      "%s: %s", u, vd_error_message());
	}
	expect_fail(url("/bytes"), &o, VD_ERR_INVALID_ARG, "127.0.0.1 is a loopback address");
	snprintf(u, sizeof(u), "http://localhost:%s/bytes", port);
	expect_fail(u, &o, VD_ERR_INVALID_ARG, "host 'localhost' resolves to");
	ck_assert_int_eq(served(base), before);
	ck_assert_int_eq(served(base2), before2);
}
END_TEST

/* Every blocked range, by literal address: refused at once with its kind
 * named; nothing is sent (a connection attempt to most of these would hang
 * until the 30 s deadline or fail with another message). */
START_TEST(test_ssrf_ranges_refused)
{
	static const char *const cases[][2] = {
		{ "http://10.0.0.1/x.png", "private" },
		{ "http://10.255.255.254:8080/x.png", "private" },
		{ "http://172.16.0.1/x.png", "private" },
		{ "http://172.31.1.1/x.png", "private" },
		{ "http://192.168.0.1/x.png", "private" },
		{ "http://100.64.0.1/x.png", "carrier-grade NAT" },
		{ "http://169.254.169.254/latest/meta-data/", "link-local" },
		{ "http://169.254.0.1/x.png", "link-local" },
		{ "http://2852039166/latest/meta-data/", "link-local" },  /* 169.254.169.254 */
		{ "http://0xa9fea9fe/latest/meta-data/", "link-local" },
		{ "http://224.0.0.1/x.png", "multicast" },
		{ "http://239.255.255.250/x.png", "multicast" },
		{ "http://255.255.255.255/x.png", "broadcast" },
		{ "http://0.0.0.0/x.png", "unspecified" },
		{ "http://198.18.0.1/x.png", "benchmarking" },
		{ "http://[fc00::1]/x.png", "unique local" },
		{ "http://[fd00:ec2::254]/latest/meta-data/", "unique local" },
		{ "http://[fe80::1]/x.png", "link-local" },
		{ "http://[ff02::1]/x.png", "multicast" },
		{ "http://[::ffff:10.0.0.1]/x.png", "private" },
		{ "http://[::ffff:169.254.169.254]/x.png", "link-local" },
		{ "http://[64:ff9b::a00:1]/x.png", "private" },
		{ "http://[64:ff9b::7f00:1]/x.png", "loopback" },
		{ "http://[2002:7f00:1::1]/x.png", "loopback" },
		{ "https://10.0.0.1/x.png", "private" },
	};
	vd_media_opts o = opts();
	double t0 = now_s();

	o.allowed_networks = NULL;
	o.n_allowed_networks = 0;
	o.timeout_s = 30.0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		expect_fail(cases[i][0], &o, VD_ERR_INVALID_ARG, "which image fetches may not reach");
		ck_assert_msg(strstr(vd_error_message(), cases[i][1]), "%s: '%s' lacks '%s'",
			      cases[i][0], vd_error_message(), cases[i][1]);
	}
	ck_assert_msg(now_s() - t0 < STALL_CUT_S, "took %.2f s", now_s() - t0);
}
END_TEST

/* A redirect into a blocked range is refused before it is followed; the
 * allow option lets the same target through. */
START_TEST(test_ssrf_redirects)
{
	static const char *const loopback[] = { "127.0.0.0/8" };
	vd_media_opts o = opts(); /* 127.0.0.1/32 only */
	const char *port2 = strrchr(base2, ':') + 1;
	long before2 = served(base2);
	uint8_t *data = NULL;
	size_t len = 0;
	char u[512];

	snprintf(u, sizeof(u), "/to?loc=http://127.0.0.2:%s/bytes", port2);
	expect_fail(url(u), &o, VD_ERR_INVALID_ARG, "127.0.0.2 is a loopback address (after a redirect)");
	snprintf(u, sizeof(u), "/to?loc=http://[::ffff:127.0.0.2]:%s/bytes", port2);
	expect_fail(url(u), &o, VD_ERR_INVALID_ARG, "(after a redirect)");
	snprintf(u, sizeof(u), "/to?loc=http://2130706434:%s/bytes", port2);
	expect_fail(url(u), &o, VD_ERR_INVALID_ARG, "127.0.0.2 is a loopback address");
	expect_fail(url("/to?loc=http://169.254.169.254/latest/meta-data/"), &o,
		    VD_ERR_INVALID_ARG, "169.254.169.254 is a link-local");
	expect_fail(url("/to?loc=http://10.1.2.3/x"), &o, VD_ERR_INVALID_ARG, "private");
	/* two hops in, then out */
	snprintf(u, sizeof(u), "/redir?n=1");
	ck_assert_int_eq(vd_media_fetch(url(u), &o, &data, &len), VD_OK);
	free(data);
	ck_assert_int_eq(served(base2), before2);

	/* Allowed: the same targets are fetched. */
	o.allowed_networks = loopback;
	snprintf(u, sizeof(u), "%s/bytes?n=10", base2);
	ck_assert_msg(vd_media_fetch(u, &o, &data, &len) == VD_OK, "%s", vd_error_message());
	assert_pattern(data, len, 10, 0);
	free(data);
	snprintf(u, sizeof(u), "/to?loc=http://127.0.0.2:%s/bytes%%3Fn%%3D12", port2);
	ck_assert_msg(vd_media_fetch(url(u), &o, &data, &len) == VD_OK, "%s", vd_error_message());
	assert_pattern(data, len, 12, 0);
	free(data);
	ck_assert_int_eq(served(base2), before2 + 2);
}
END_TEST

/* A closed port and a port that never answers (a listener whose accept
 * queue is full drops new SYNs, as a firewall would) give the same words. */
START_TEST(test_connect_failures_alike)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	vd_media_opts o = opts();
	char u[64], closed_msg[512], *c, *f;
	int lfd, cfd[4], fd;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	o.timeout_s = 1.0;
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/x", ntohs(sa.sin_port));
	expect_fail(u, &o, VD_ERR_IO, "could not connect to the host");
	c = strstr(vd_error_message(), ": could not");
	ck_assert_ptr_nonnull(c);
	snprintf(closed_msg, sizeof(closed_msg), "%s", c);

	sa.sin_port = 0;
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(lfd, 0);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	ck_assert_int_eq(listen(lfd, 0), 0);
	for (int i = 0; i < 4; i++) {
		cfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		ck_assert_int_ge(cfd[i], 0);
		connect(cfd[i], (struct sockaddr *)&sa, sizeof(sa));
	}
	usleep(100 * 1000);
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/x", ntohs(sa.sin_port));
	expect_fail(u, &o, VD_ERR_IO, "could not connect to the host");
	f = strstr(vd_error_message(), ": could not");
	ck_assert_ptr_nonnull(f);
	ck_assert_str_eq(f, closed_msg);
	for (int i = 0; i < 4; i++)
		close(cfd[i]);
	close(lfd);
}
END_TEST

/* ---- data: URLs ---- */

START_TEST(test_data_url)
{
	static const uint8_t png_magic[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
	vd_media_opts o = opts();

	expect_bytes("data:image/png;base64,iVBORw0KGgo=", &o, png_magic, 8);
	expect_bytes("data:image/jpeg;base64,QUJD", &o, "ABC", 3);
	expect_bytes("data:image/jpeg;base64,QUI=", &o, "AB", 2);
	expect_bytes("data:image/jpeg;base64,QQ==", &o, "A", 1);
	expect_bytes("data:image/jpeg;base64,QR==", &o, "A", 1);   /* as Python */
	expect_bytes("DATA:IMAGE/PNG;base64,QUJDRA==", &o, "ABCD", 4);
	expect_bytes("data:image/png;name=x.png;base64,QUJD", &o, "ABC", 3);
	expect_bytes("data:image/png;base64,+/+/", &o, "\xfb\xff\xbf", 3);
}
END_TEST

START_TEST(test_data_url_bad)
{
	vd_media_opts o = opts();
	static const char *const bad_b64[] = {
		"QUI",          /* padding missing */
		"QQ=",
		"Q===",
		"QU=I",         /* '=' inside */
		"QUJD=",        /* after a full group */
		"QUJD QUJD",    /* whitespace */
		"QUJD\nQUJD",
		"QUJ%2B",       /* percent-escapes are not decoded */
		"-_-_",         /* URL-safe alphabet */
		"====",
	};
	char u[128];

	for (size_t i = 0; i < sizeof(bad_b64) / sizeof(bad_b64[0]); i++) {
		snprintf(u, sizeof(u), "data:image/png;base64,%s", bad_b64[i]);
		expect_fail(u, &o, VD_ERR_INVALID_ARG, "invalid base64 in data URL");
		assert_msg_has("Failed to fetch image from a data: URL");
	}
	expect_fail("data:text/plain;base64,QUJD", &o, VD_ERR_INVALID_ARG,
		    "media type 'text/plain' of the data URL is not an image type");
	expect_fail("data:;base64,QUJD", &o, VD_ERR_INVALID_ARG, "is not an image type");
	expect_fail("data:image/;base64,QUJD", &o, VD_ERR_INVALID_ARG, "is not an image type");
	expect_fail("data:image/png,QUJD", &o, VD_ERR_INVALID_ARG, "only base64 data URLs");
	expect_fail("data:image/png;base64;x=y,QUJD", &o, VD_ERR_INVALID_ARG,
		    "only base64 data URLs");
	expect_fail("data:image/png;base64", &o, VD_ERR_INVALID_ARG, "missing ','");
	expect_fail("data:image/png;base64,", &o, VD_ERR_INVALID_ARG, "no image data");
	o.max_bytes = 3;
	expect_bytes("data:image/png;base64,QUJD", &o, "ABC", 3);
	expect_fail("data:image/png;base64,QUJDRA==", &o, VD_ERR_LIMIT,
		    "more than 3 bytes (max_image_bytes)");
}
END_TEST

/* ---- file: URLs ---- */

START_TEST(test_file_url)
{
	vd_media_opts o = opts();
	char allowed[PATH_MAX + 16], alias[PATH_MAX + 16], u[PATH_MAX + 64];
	uint8_t *data = NULL;
	size_t len = 0;

	expect_fail(file_url("allowed/img.bin"), &o, VD_ERR_INVALID_ARG,
		    "Cannot load local files without --allowed-local-media-path");
	snprintf(allowed, sizeof(allowed), "%s/allowed", tmp_root);
	o.allowed_local_path = allowed;
	ck_assert_int_eq(vd_media_fetch(file_url("allowed/img.bin"), &o, &data, &len), VD_OK);
	assert_pattern(data, len, 3000, 1);
	free(data);
	ck_assert_int_eq(vd_media_fetch(file_url("allowed/a%20b.bin"), &o, &data, &len), VD_OK);
	assert_pattern(data, len, 10, 2);
	free(data);
	/* A symlink that stays inside, a "." and a ".." that come back inside. */
	ck_assert_int_eq(vd_media_fetch(file_url("allowed/inner"), &o, &data, &len), VD_OK);
	assert_pattern(data, len, 3000, 1);
	free(data);
	ck_assert_int_eq(vd_media_fetch(file_url("allowed/./sub/../img.bin"), &o, &data, &len),
			 VD_OK);
	free(data);
	snprintf(u, sizeof(u), "file://localhost%s/allowed/img.bin", tmp_root);
	ck_assert_int_eq(vd_media_fetch(u, &o, &data, &len), VD_OK);
	free(data);
	/* The allowed directory named through a symlink works the same. */
	snprintf(alias, sizeof(alias), "%s/alias", tmp_root);
	o.allowed_local_path = alias;
	ck_assert_int_eq(vd_media_fetch(file_url("allowed/img.bin"), &o, &data, &len), VD_OK);
	free(data);
	ck_assert_int_eq(vd_media_fetch(file_url("alias/img.bin"), &o, &data, &len), VD_OK);
	free(data);
}
END_TEST

START_TEST(test_file_url_refused)
{
	vd_media_opts o = opts();
	char allowed[PATH_MAX + 16];

	snprintf(allowed, sizeof(allowed), "%s/allowed", tmp_root);
	o.allowed_local_path = allowed;
	expect_fail(file_url("outside/secret.bin"), &o, VD_ERR_INVALID_ARG,
		    "must be inside allowed_local_media_path");
	expect_fail(file_url("allowed/escape"), &o, VD_ERR_INVALID_ARG,
		    "must be inside allowed_local_media_path");
	expect_fail(file_url("allowed/../outside/secret.bin"), &o, VD_ERR_INVALID_ARG,
		    "must be inside allowed_local_media_path");
	expect_fail(file_url("allowed/sub/../../outside/secret.bin"), &o, VD_ERR_INVALID_ARG,
		    "must be inside");
	expect_fail(file_url("allowed/%2e%2e/outside/secret.bin"), &o, VD_ERR_INVALID_ARG,
		    "must be inside");
	/* The directory itself and things in it that are not files. */
	expect_fail(file_url("allowed"), &o, VD_ERR_INVALID_ARG, "must be inside");
	expect_fail(file_url("allowed/sub"), &o, VD_ERR_INVALID_ARG, "not a regular file");
	/* Missing files answer alike inside and outside. */
	expect_fail(file_url("allowed/nope.bin"), &o, VD_ERR_INVALID_ARG, "does not exist");
	expect_fail(file_url("outside/nope.bin"), &o, VD_ERR_INVALID_ARG, "does not exist");
	expect_fail(file_url("allowed/empty.bin"), &o, VD_ERR_INVALID_ARG, "empty");
	expect_fail("file://example.com/etc/passwd", &o, VD_ERR_INVALID_ARG,
		    "host 'example.com' is not local");
	expect_fail("file:/etc/passwd", &o, VD_ERR_INVALID_ARG, "file:///absolute/path");
	expect_fail("file:///", &o, VD_ERR_INVALID_ARG, "names no file");
	expect_fail(file_url("allowed/img%zz.bin"), &o, VD_ERR_INVALID_ARG, "percent-escape");
	expect_fail(file_url("allowed/img.bin%00.png"), &o, VD_ERR_INVALID_ARG, "percent-escape");
	o.max_bytes = 4999;
	expect_fail(file_url("allowed/big.bin"), &o, VD_ERR_LIMIT,
		    "more than 4999 bytes (max_image_bytes)");
	o.allowed_local_path = "/nonexistent/vd_media_dir";
	expect_fail(file_url("allowed/img.bin"), &o, VD_ERR_INVALID_ARG,
		    "allowed_local_media_path '/nonexistent/vd_media_dir'");
}
END_TEST

/* ---- other URLs and arguments ---- */

START_TEST(test_bad_urls)
{
	vd_media_opts o = opts();
	uint8_t *data;
	size_t len;

	expect_fail("", &o, VD_ERR_INVALID_ARG, "an empty URL: the URL must be an http(s), data");
	expect_fail("ftp://127.0.0.1/x.png", &o, VD_ERR_INVALID_ARG,
		    "the URL must be an http(s), data or file URL");
	expect_fail("gopher://127.0.0.1/", &o, VD_ERR_INVALID_ARG, "must be an http(s)");
	expect_fail("httpx://127.0.0.1/", &o, VD_ERR_INVALID_ARG, "must be an http(s)");
	expect_fail("127.0.0.1/image.png", &o, VD_ERR_INVALID_ARG, "must be an http(s)");
	expect_fail("http://", &o, VD_ERR_INVALID_ARG, "malformed URL");
	expect_fail("http://:80/x.png", &o, VD_ERR_INVALID_ARG, "malformed URL");
	expect_fail("http://127.0.0.1:99999/x", &o, VD_ERR_INVALID_ARG, "malformed URL");
	expect_fail("http://exa mple.com/x", &o, VD_ERR_INVALID_ARG, "malformed URL");
	/* Control bytes of a hostile URL never reach the message. */
	expect_fail("ftp://x/\r\nInjected: 1", &o, VD_ERR_INVALID_ARG, "ftp://x/??Injected: 1");

	ck_assert_int_eq(vd_media_fetch("data:image/png;base64,QUJD", NULL, &data, &len),
			 VD_ERR_INVALID_ARG);
	o.timeout_s = 0;
	expect_fail("data:image/png;base64,QUJD", &o, VD_ERR_INVALID_ARG, "image_fetch_timeout");
	o = opts();
	o.max_bytes = 0;
	expect_fail("data:image/png;base64,QUJD", &o, VD_ERR_INVALID_ARG, "max_image_bytes");
	o = opts();
	o.n_allowed_domains = 1;
	expect_fail("data:image/png;base64,QUJD", &o, VD_ERR_INVALID_ARG, "allowed_domains");
	ck_assert_int_eq(vd_media_fetch(NULL, &o, &data, &len), VD_ERR_INVALID_ARG);
}
END_TEST

START_TEST(test_opts_from_config)
{
	char *domains[] = { "a.example", "b.example" };
	char *nets[] = { "127.0.0.0/8,::1/128", "10.0.0.0/8" }, *bad[] = { "10.0.0.0/40" };
	vd_server_opts c;
	vd_media_opts o;

	memset(&c, 0, sizeof(c));
	c.image_fetch_timeout = 2.5;
	c.max_image_bytes = 12345;
	c.max_redirects = 7;
	c.allowed_local_media_path = "/srv/media";
	c.allowed_media_domains.items = domains;
	c.allowed_media_domains.n = 2;
	c.allowed_media_networks.items = nets;
	c.allowed_media_networks.n = 2;
	ck_assert_int_eq(vd_media_opts_from_config(&c, &o), VD_OK);
	ck_assert_int_eq(o.n_allowed_networks, 2);
	ck_assert_str_eq(o.allowed_networks[1], "10.0.0.0/8");
	ck_assert(o.timeout_s == 2.5);
	ck_assert_int_eq(o.max_bytes, 12345);
	ck_assert_int_eq(o.max_redirects, 7);
	ck_assert_str_eq(o.allowed_local_path, "/srv/media");
	ck_assert_int_eq(o.n_allowed_domains, 2);
	ck_assert_str_eq(o.allowed_domains[1], "b.example");
	c.allowed_media_networks.items = bad;
	c.allowed_media_networks.n = 1;
	ck_assert_int_eq(vd_media_opts_from_config(&c, &o), VD_ERR_INVALID_ARG);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "'10.0.0.0/40'"));
}
END_TEST

/* ---- concurrency ---- */

#define N_THREADS 8

typedef struct fetch_job {
	int seed;
	vd_status st;
	char msg[256];
	uint8_t *data;
	size_t len;
} fetch_job;

static void *fetch_thread(void *arg)
{
	fetch_job *j = arg;
	vd_media_opts o = opts();
	char u[128];

	snprintf(u, sizeof(u), "%s/delay?ms=%d&n=50000&seed=%d", base, PAR_DELAY_MS, j->seed);
	j->st = vd_media_fetch(u, &o, &j->data, &j->len);
	snprintf(j->msg, sizeof(j->msg), "%s", vd_error_message());
	return NULL;
}

START_TEST(test_threads)
{
	pthread_t th[N_THREADS];
	fetch_job jobs[N_THREADS];
	double t0 = now_s(), took;

	ck_assert_msg(srv_pid > 0, "test server not running: %s", srv_error);
	for (int i = 0; i < N_THREADS; i++) {
		memset(&jobs[i], 0, sizeof(jobs[i]));
		jobs[i].seed = 10 + i;
		ck_assert_int_eq(pthread_create(&th[i], NULL, fetch_thread, &jobs[i]), 0);
	}
	for (int i = 0; i < N_THREADS; i++)
		pthread_join(th[i], NULL);
	took = now_s() - t0;
	for (int i = 0; i < N_THREADS; i++) {
		ck_assert_msg(jobs[i].st == VD_OK, "thread %d: %s", i, jobs[i].msg);
		assert_pattern(jobs[i].data, jobs[i].len, 50000, 10 + i);
		free(jobs[i].data);
	}
	/* One after another would take N_THREADS x PAR_DELAY_MS. */
	ck_assert_msg(took < PAR_BOUND_S, "%d fetches of %d ms took %.2f s", N_THREADS, PAR_DELAY_MS,
		      took);
}
END_TEST

START_TEST(test_fetch_many)
{
	vd_media_opts o = opts();
	char u[N_THREADS][128];
	const char *urls[N_THREADS + 4];
	vd_media_result res[N_THREADS + 4];
	double t0, took;
	int i;

	ck_assert_msg(srv_pid > 0, "test server not running: %s", srv_error);
	for (i = 0; i < N_THREADS; i++) {
		snprintf(u[i], sizeof(u[i]), "%s/delay?ms=%d&n=30000&seed=%d", base, PAR_DELAY_MS,
			 20 + i);
		urls[i] = u[i];
	}
	t0 = now_s();
	ck_assert_msg(vd_media_fetch_many(urls, N_THREADS, &o, res) == VD_OK, "%s",
		      vd_error_message());
	took = now_s() - t0;
	for (i = 0; i < N_THREADS; i++) {
		ck_assert_int_eq(res[i].status, VD_OK);
		ck_assert_str_eq(res[i].error, "");
		assert_pattern(res[i].data, res[i].len, 30000, 20 + i);
	}
	ck_assert_msg(took < PAR_BOUND_S, "%d fetches of %d ms took %.2f s", N_THREADS, PAR_DELAY_MS,
		      took);
	vd_media_results_free(res, N_THREADS);
	ck_assert_ptr_null(res[0].data);

	/* A mix: each URL gets its own outcome; the call reports the first. */
	urls[0] = "data:image/png;base64,QUJD";
	snprintf(u[1], sizeof(u[1]), "%s/redir?n=2", base);
	urls[1] = u[1];
	snprintf(u[2], sizeof(u[2]), "%s/status?code=404", base);
	urls[2] = u[2];
	snprintf(u[3], sizeof(u[3]), "%s/slow?delay=30", base);
	urls[3] = u[3];
	urls[4] = "file:///etc/hostname";
	snprintf(u[5], sizeof(u[5]), "%s/redir?n=3", base);
	urls[5] = u[5];
	snprintf(u[6], sizeof(u[6]), "%s/nolen?n=70000&hold=30", base);
	urls[6] = u[6];
	o.timeout_s = 0.5;
	o.max_redirects = 2;
	o.max_bytes = 65536;
	t0 = now_s();
	ck_assert_int_eq(vd_media_fetch_many(urls, 7, &o, res), VD_ERR_IO);
	took = now_s() - t0;
	assert_msg_has("image 2: Failed to fetch image from");
	assert_msg_has("HTTP 404");
	ck_assert_int_eq(res[0].status, VD_OK);
	ck_assert_mem_eq(res[0].data, "ABC", 3);
	ck_assert_int_eq(res[1].status, VD_OK);
	assert_pattern(res[1].data, res[1].len, 1000, 5);
	ck_assert_int_eq(res[2].status, VD_ERR_IO);
	ck_assert_ptr_null(res[2].data);
	ck_assert_int_eq(res[3].status, VD_ERR_TIMEOUT);
	ck_assert_ptr_nonnull(strstr(res[3].error, "timed out after 0.5 s"));
	ck_assert_int_eq(res[4].status, VD_ERR_INVALID_ARG);
	ck_assert_ptr_nonnull(strstr(res[4].error, "--allowed-local-media-path"));
	ck_assert_int_eq(res[5].status, VD_ERR_LIMIT);
	ck_assert_ptr_nonnull(strstr(res[5].error, "max_redirects 2"));
	ck_assert_int_eq(res[6].status, VD_ERR_LIMIT);
	ck_assert_msg(took < STALL_CUT_S, "took %.2f s", took);
	vd_media_results_free(res, 7);

	ck_assert_int_eq(vd_media_fetch_many(urls, 0, &o, res), VD_OK);
	ck_assert_int_eq(vd_media_fetch_many(NULL, 2, &o, res), VD_ERR_INVALID_ARG);
	o.timeout_s = -1;
	ck_assert_int_eq(vd_media_fetch_many(urls, 2, &o, res), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(res[1].status, VD_ERR_INVALID_ARG);
	vd_media_results_free(res, 2);
}
END_TEST

START_TEST(test_global_init_nests)
{
	vd_media_opts o = opts();
	uint8_t *data = NULL;
	size_t len = 0;

	/* main holds one reference; these nest inside it. */
	ck_assert_int_eq(vd_media_global_init(), VD_OK);
	ck_assert_int_eq(vd_media_global_init(), VD_OK);
	vd_media_global_cleanup();
	vd_media_global_cleanup();
	ck_assert_int_eq(vd_media_fetch(url("/bytes?n=16"), &o, &data, &len), VD_OK);
	assert_pattern(data, len, 16, 0);
	free(data);
}
END_TEST

static Suite *media_suite(void)
{
	Suite *s = suite_create("media");
	TCase *http = tcase_create("http");
	TCase *local = tcase_create("local");
	TCase *conc = tcase_create("concurrency");

	tcase_add_test(http, test_http_ok);
	tcase_add_test(http, test_http_user_agent);
	tcase_add_test(http, test_http_status);
	tcase_add_test(http, test_http_timeout);
	tcase_add_test(http, test_http_refused);
	tcase_add_test(http, test_http_size_cap);
	tcase_add_test(http, test_http_redirects);
	tcase_add_test(http, test_http_redirect_targets);
	tcase_add_test(http, test_ssrf_loopback_refused);
	tcase_add_test(http, test_ssrf_ranges_refused);
	tcase_add_test(http, test_ssrf_redirects);
	tcase_add_test(http, test_connect_failures_alike);
	tcase_set_timeout(http, 30);
	suite_add_tcase(s, http);

	tcase_add_test(local, test_data_url);
	tcase_add_test(local, test_data_url_bad);
	tcase_add_test(local, test_file_url);
	tcase_add_test(local, test_file_url_refused);
	tcase_add_test(local, test_bad_urls);
	tcase_add_test(local, test_opts_from_config);
	tcase_set_timeout(local, 30);
	suite_add_tcase(s, local);

	tcase_add_test(conc, test_threads);
	tcase_add_test(conc, test_fetch_many);
	tcase_add_test(conc, test_global_init_nests);
	tcase_set_timeout(conc, 30);
	suite_add_tcase(s, conc);
	return s;
}

int main(int argc, char **argv)
{
	static const char *const proxies[] = {
		"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
	};
	SRunner *sr;
	int failed;

	(void)argc;
	prog_path = argv[0];
	/* Every request here must go straight to 127.0.0.1. */
	for (size_t i = 0; i < sizeof(proxies) / sizeof(proxies[0]); i++)
		unsetenv(proxies[i]);
	if (vd_media_global_init() != VD_OK) {
		fprintf(stderr, "%s\n", vd_error_message());
		return 1;
	}
	files_setup();
	server_start();
	if (srv_pid <= 0)
		fprintf(stderr, "test_media: %s\n", srv_error);
	sr = srunner_create(media_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	server_stop();
	files_teardown();
	vd_media_global_cleanup();
	return failed == 0 ? 0 : 1;
}
