/* libmicrohttpd glue: collects bodies, calls the handler once per request,
 * turns its response into an MHD response (buffer or blocking callback).
 * Invariant: each connection's state lives from the first access-handler
 * call until the completion notification, which frees it. A connection's
 * inactivity timeout is REQUEST_TIMEOUT_S while a request is in progress
 * and keep_alive_s otherwise (before its first request and between
 * requests), as uvicorn's timeout_keep_alive. */
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "server/http.h"

/* Inactivity allowed while a request is being received or answered. */
#define REQUEST_TIMEOUT_S 600u

struct vd_http_server {
	struct MHD_Daemon *d;
	vd_http_opts o;
	int port;
	atomic_int active;
};

typedef struct conn {
	char *body;
	size_t len, cap;
	bool too_big;
} conn;

typedef struct stream_ctx {
	vd_http_resp r;
	bool ended;
} stream_ctx;

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	stream_ctx *s = cls;
	ssize_t n;

	(void)pos;
	if (s->ended)
		return MHD_CONTENT_READER_END_OF_STREAM;
	n = s->r.stream(s->r.stream_ctx, buf, max);
	if (n == VD_HTTP_STREAM_END) {
		s->ended = true;
		return MHD_CONTENT_READER_END_OF_STREAM;
	}
	return n;
}

static void stream_free(void *cls)
{
	stream_ctx *s = cls;

	if (s->r.stream_done)
		s->r.stream_done(s->r.stream_ctx, !s->ended);
	free(s);
}

static enum MHD_Result send_resp(struct MHD_Connection *c, vd_http_resp *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (r->stream) {
		stream_ctx *s = calloc(1, sizeof(*s));

		if (!s)
			return MHD_NO;
		s->r = *r;
		resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader,
							 s, stream_free);
		if (!resp) {
			stream_free(s);
			return MHD_NO;
		}
		MHD_add_response_header(resp, "Cache-Control", "no-cache");
	} else {
		resp = MHD_create_response_from_buffer(r->body_len, r->body ? r->body : (char *)"",
						       r->body ? MHD_RESPMEM_MUST_FREE
							       : MHD_RESPMEM_PERSISTENT);
		if (!resp) {
			free(r->body);
			return MHD_NO;
		}
	}
	MHD_add_response_header(resp, "Content-Type",
				r->content_type ? r->content_type : "application/json");
	ret = MHD_queue_response(c, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	vd_http_server *s = cls;
	conn *k = *con_cls;
	vd_http_req rq;
	vd_http_resp rs = { .status = 200 };
	const union MHD_ConnectionInfo *ci;

	(void)version;
	if (!k) {
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");

		k = calloc(1, sizeof(*k));
		if (!k)
			return MHD_NO;
		*con_cls = k;
		MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, REQUEST_TIMEOUT_S);
		if (cl && strtoull(cl, NULL, 10) > s->o.max_body)
			k->too_big = true;
		return MHD_YES;
	}
	if (*upload_size) {
		if (!k->too_big && k->len + *upload_size <= s->o.max_body) {
			if (k->len + *upload_size + 1 > k->cap) {
				size_t cap = (k->len + *upload_size + 1) * 2;
				char *b = realloc(k->body, cap < s->o.max_body + 1 ? cap : s->o.max_body + 1);

				if (!b)
					return MHD_NO;
				k->body = b;
				k->cap = cap < s->o.max_body + 1 ? cap : s->o.max_body + 1;
			}
			memcpy(k->body + k->len, upload, *upload_size);
			k->len += *upload_size;
		} else {
			k->too_big = true;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (k->too_big) {
		static const char msg[] = "{\"error\":{\"message\":\"The request body is larger than "
					  "max_request_body_bytes.\",\"type\":\"BadRequestError\","
					  "\"param\":null,\"code\":413}}";

		rs.status = 413;
		rs.body = strdup(msg);
		rs.body_len = rs.body ? strlen(msg) : 0;
		return send_resp(c, &rs);
	}
	if (!k->body)
		k->body = calloc(1, 1);
	if (!k->body)
		return MHD_NO;
	k->body[k->len] = '\0';
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	rq = (vd_http_req){
		.method = method,
		.path = url,
		.authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"),
		.body = k->body,
		.body_len = k->len,
		.client_fd = ci ? ci->connect_fd : -1,
	};
	s->o.handler(s->o.app, &rq, &rs);
	return send_resp(c, &rs);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	vd_http_server *s = cls;
	conn *k = *con_cls;

	(void)toe;
	/* idle now: a keep-alive connection waits keep_alive_s for the next
	 * request, then closes and its thread ends */
	MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, s->o.keep_alive_s);
	if (k) {
		free(k->body);
		free(k);
		*con_cls = NULL;
	}
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	vd_http_server *s = cls;

	(void)c;
	(void)socket_context;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
		atomic_fetch_add(&s->active, 1);
	else
		atomic_fetch_sub(&s->active, 1);
}

/* Most open connections: the open-file limit (soft raised to hard) less 64
 * for the engine's own files, within [64, 4096]. */
static unsigned connection_limit(void)
{
	struct rlimit rl;
	rlim_t n = 1024;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		if (rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
			getrlimit(RLIMIT_NOFILE, &rl);
		}
		n = rl.rlim_cur;
	}
	if (n > 4096 + 64)
		n = 4096 + 64;
	return n > 128 ? (unsigned)(n - 64) : 64;
}

vd_status vd_http_start(const vd_http_opts *o, vd_http_server **out)
{
	vd_http_server *s;
	struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICHOST, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai = NULL;
	char port[16];
	const union MHD_DaemonInfo *di;
	/* poll(), not select(): with select() libmicrohttpd refuses any
	 * connection whose socket is numbered FD_SETSIZE (1024) or more, however
	 * few connections are open. The connection limit follows the open-file
	 * limit (raised to its hard maximum), leaving room for the engine's own
	 * files, up to 4096 connection threads. */
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
			 MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
	int rc;

	*out = NULL;
	if (o->keep_alive_s == 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "the keep-alive timeout must be at least 1 s");
	snprintf(port, sizeof(port), "%d", o->port);
	rc = getaddrinfo(o->host && *o->host ? o->host : "0.0.0.0", port, &hints, &ai);
	if (rc)
		return vd_errorf(VD_ERR_INVALID_ARG, "host '%s' is not a numeric address: %s", o->host,
				 gai_strerror(rc));
	s = calloc(1, sizeof(*s));
	if (!s) {
		freeaddrinfo(ai);
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	}
	s->o = *o;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	s->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, s,
				MHD_OPTION_SOCK_ADDR, ai->ai_addr,
				MHD_OPTION_CONNECTION_LIMIT, connection_limit(),
				MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
				MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
				MHD_OPTION_CONNECTION_TIMEOUT, o->keep_alive_s,
				MHD_OPTION_END);
	freeaddrinfo(ai);
	if (!s->d) {
		free(s);
		return vd_errorf(VD_ERR_IO, "cannot listen on %s:%d (in use, or not allowed?)",
				 o->host, o->port);
	}
	di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	s->port = di ? di->port : o->port;
	*out = s;
	return VD_OK;
}

int vd_http_port(const vd_http_server *s)
{
	return s->port;
}

void vd_http_quiesce(vd_http_server *s)
{
	MHD_socket fd = MHD_quiesce_daemon(s->d);

	if (fd != MHD_INVALID_SOCKET)
		close(fd);
}

int vd_http_active(const vd_http_server *s)
{
	return atomic_load(&s->active);
}

void vd_http_stop(vd_http_server *s)
{
	if (!s)
		return;
	MHD_stop_daemon(s->d);
	free(s);
}

bool vd_http_client_gone(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
	char c;

	if (fd < 0)
		return false;
	if (poll(&p, 1, 0) <= 0)
		return false;
	if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
		return true;
	/* readable: more request bytes (pipelining) or EOF */
	return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}
