/* A minimal HTTP/1.1 server for the daemon, on libmicrohttpd (the only
 * module that includes it). One thread per connection, so handlers may block
 * while the engine works; an idle keep-alive connection is closed after
 * keep_alive_s, so its thread does not outlive the load that opened it.
 * Request bodies are collected up to a cap (413 beyond it); responses are a
 * whole body or a blocking stream (SSE). */
#ifndef VD_SERVER_HTTP_H
#define VD_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "vllmd/status.h"

typedef struct vd_http_server vd_http_server;

typedef struct vd_http_req {
	const char *method;
	const char *path;          /* without the query string */
	const char *authorization; /* the Authorization header, or NULL */
	const char *body;          /* NUL-terminated copy of the body */
	size_t body_len;
	int client_fd;             /* to notice a client that went away */
} vd_http_req;

/* A stream writes up to max bytes into buf and returns how many (> 0),
 * blocking until it has some; VD_HTTP_STREAM_END when done. */
#define VD_HTTP_STREAM_END ((ssize_t)-1)
typedef ssize_t (*vd_http_stream_fn)(void *ctx, char *buf, size_t max);
/* Called once when the stream's response is gone; client_gone is true
 * when the connection closed before the stream ended. */
typedef void (*vd_http_stream_done_fn)(void *ctx, bool client_gone);

typedef struct vd_http_resp {
	int status;
	const char *content_type;   /* static string */
	char *body;                 /* malloc'ed; the server frees it */
	size_t body_len;
	vd_http_stream_fn stream;   /* instead of body */
	vd_http_stream_done_fn stream_done;
	void *stream_ctx;
} vd_http_resp;

/* Handle one complete request; fill rs (status 200 by default). Runs on the
 * connection's thread. */
typedef void (*vd_http_handler)(void *app, const vd_http_req *rq, vd_http_resp *rs);

typedef struct vd_http_opts {
	const char *host;           /* "0.0.0.0", "127.0.0.1", "::" ... */
	int port;                   /* 0 = any free port */
	size_t max_body;            /* bigger bodies get 413 */
	unsigned keep_alive_s;      /* an idle keep-alive connection (no
				     * request in progress) is closed after
				     * this many seconds; > 0 */
	vd_http_handler handler;
	void *app;
} vd_http_opts;

vd_status vd_http_start(const vd_http_opts *o, vd_http_server **out);
/* The port actually bound. */
int vd_http_port(const vd_http_server *s);
/* Stop accepting connections (draining keeps the open ones). */
void vd_http_quiesce(vd_http_server *s);
/* Connections still open. */
int vd_http_active(const vd_http_server *s);
/* Stop and free; open connections are closed. NULL is a no-op. */
void vd_http_stop(vd_http_server *s);

/* Whether the peer of a connection's socket has hung up. */
bool vd_http_client_gone(int fd);

#endif
