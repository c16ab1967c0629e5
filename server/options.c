/* The daemon's option table (server/options.h), in the one format of
 * core/config.h: YAML key (vLLM's name), flag, type, default, help. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/options.h"

#define OFF(field) offsetof(vd_server_opts, field)

static const vd_config_choice content_choices[] = {
	{ "auto", VD_CFG_CONTENT_AUTO }, { "string", VD_CFG_CONTENT_STRING },
	{ "openai", VD_CFG_CONTENT_OPENAI }, { NULL, 0 },
};
static const vd_config_choice log_choices[] = {
	{ "trace", VD_CFG_LOG_TRACE }, { "debug", VD_CFG_LOG_DEBUG },
	{ "info", VD_CFG_LOG_INFO },   { "warning", VD_CFG_LOG_WARNING },
	{ "error", VD_CFG_LOG_ERROR }, { "critical", VD_CFG_LOG_CRITICAL },
	{ NULL, 0 },
};

static const vd_config_option options[] = {
	{ .key = "served_model_name", .flag = "--served-model-name",
	  .type = VD_CONFIG_STRING_LIST, .offset = OFF(served_model_name),
	  .help = "Name(s) the API accepts in a request's \"model\" field; the first is the "
		  "one /v1/models reports. Default: the model path." },
	/* chat */
	{ .key = "chat_template", .flag = "--chat-template", .type = VD_CONFIG_STRING,
	  .offset = OFF(chat_template),
	  .help = "Jinja chat template file (or the template text itself). Default: the "
		  "tokenizer's chat_template." },
	{ .key = "chat_template_content_format", .flag = "--chat-template-content-format",
	  .type = VD_CONFIG_CHOICE, .def = "auto", .offset = OFF(chat_template_content_format),
	  .choices = content_choices,
	  .help = "How message content reaches the template: string (text parts joined), "
		  "openai (the list of parts), auto = detected from the template." },
	/* server */
	{ .key = "host", .flag = "--host", .type = VD_CONFIG_STRING, .def = "0.0.0.0",
	  .offset = OFF(host), .help = "Address the HTTP server listens on." },
	{ .key = "port", .flag = "--port", .type = VD_CONFIG_INT, .def = "8000",
	  .offset = OFF(port), VD_CONFIG_RANGE(0, 65535),
	  .help = "TCP port of the HTTP server; 0 = any free port." },
	{ .key = "api_key", .flag = "--api-key", .type = VD_CONFIG_STRING, .env = "VLLM_API_KEY",
	  .offset = OFF(api_key),
	  .help = "When set, /v1 requests must carry 'Authorization: Bearer <key>'." },
	{ .key = "disable_log_requests", .flag = "--disable-log-requests", .type = VD_CONFIG_BOOL,
	  .def = "false", .offset = OFF(disable_log_requests),
	  .help = "Do not log a line for each request." },
	{ .key = "log_level", .flag = "--log-level", .alias = "uvicorn_log_level",
	  .type = VD_CONFIG_CHOICE, .def = "info", .offset = OFF(log_level),
	  .choices = log_choices, .help = "Least severe log messages printed." },
	{ .key = "max_request_body_bytes", .flag = "--max-request-body-bytes",
	  .type = VD_CONFIG_SIZE, .def = "64MiB", .offset = OFF(max_request_body_bytes),
	  VD_CONFIG_AT_LEAST(1),
	  .help = "Largest HTTP request body accepted (base64 images included); larger "
		  "requests get HTTP 413." },
	{ .key = "timeout_keep_alive", .flag = "--timeout-keep-alive", .type = VD_CONFIG_INT,
	  .def = "5", .env = "VLLM_HTTP_TIMEOUT_KEEP_ALIVE", .offset = OFF(timeout_keep_alive),
	  VD_CONFIG_RANGE(1, 86400),
	  .help = "Seconds an idle keep-alive connection stays open waiting for its next "
		  "request (uvicorn's timeout_keep_alive); each open connection holds a "
		  "thread." },
	{ .key = "max_waiting_requests", .flag = "--max-waiting-requests", .type = VD_CONFIG_INT,
	  .def = "0", .offset = OFF(max_waiting_requests), VD_CONFIG_RANGE(0, 1073741824),
	  .help = "Most requests that may wait beyond the max_num_seqs the engine runs at "
		  "once; a request arriving with max_num_seqs + max_waiting_requests in "
		  "flight gets HTTP 503 (server overloaded). 0 = 16 x max_num_seqs." },
	/* media */
	{ .key = "image_fetch_timeout", .flag = "--image-fetch-timeout", .type = VD_CONFIG_FLOAT,
	  .def = "5", .env = "VLLM_IMAGE_FETCH_TIMEOUT", .offset = OFF(image_fetch_timeout),
	  VD_CONFIG_RANGE(0, 86400), .min_open = true,
	  .help = "Seconds allowed for fetching one image URL." },
	{ .key = "allowed_local_media_path", .flag = "--allowed-local-media-path",
	  .type = VD_CONFIG_STRING, .offset = OFF(allowed_local_media_path),
	  .help = "Directory whose files file:// image URLs may read; unset = file:// URLs "
		  "are refused." },
	{ .key = "allowed_media_domains", .flag = "--allowed-media-domains",
	  .type = VD_CONFIG_STRING_LIST, .offset = OFF(allowed_media_domains),
	  .help = "When set, image URLs are fetched only from these domains." },
	{ .key = "allowed_media_networks", .flag = "--allowed-media-networks",
	  .type = VD_CONFIG_STRING_LIST, .offset = OFF(allowed_media_networks),
	  .help = "Networks image URLs may reach besides public addresses, as "
		  "ADDRESS/PREFIX separated by commas or spaces (127.0.0.0/8,::1/128). "
		  "Unset: loopback, private (RFC 1918, CGNAT), link-local (cloud "
		  "metadata), multicast, unspecified, reserved, IPv6 ULA and "
		  "link-local addresses, and their IPv4-mapped and NAT64 forms, are "
		  "refused for the URL and every redirect. 0.0.0.0/0,::/0 allows all." },
	{ .key = "max_image_bytes", .flag = "--max-image-bytes", .type = VD_CONFIG_SIZE,
	  .def = "32MiB", .offset = OFF(max_image_bytes), VD_CONFIG_AT_LEAST(1),
	  .help = "Largest encoded image (downloaded or base64-decoded) accepted." },
	{ .key = "max_redirects", .flag = "--max-redirects", .type = VD_CONFIG_INT, .def = "3",
	  .offset = OFF(max_redirects), VD_CONFIG_RANGE(0, 50),
	  .help = "HTTP redirects followed when fetching an image URL." },
};

const vd_config_option *vd_server_options(int *n)
{
	*n = (int)(sizeof(options) / sizeof(options[0]));
	return options;
}

vd_status vd_server_config_init(vd_config *c, vd_server_opts *s)
{
	int n;
	const vd_config_option *o = vd_server_options(&n);

	return vd_config_init_ext(c, o, n, s,
				  "Server options (`vllmd generate` accepts them and ignores them)");
}

#ifndef VD_DATA_DIR
#define VD_DATA_DIR "/usr/local/share/vllmd"
#endif

/* path if it is a file; else, when relative, the first file of that name
 * in the --config file's directory or the data directory. NULL when none
 * is (or out of memory). */
static char *find_beside(const char *path, const char *config_path)
{
	const char *dirs[2] = { NULL, VD_DATA_DIR };
	size_t dir_len[2] = { 0, strlen(VD_DATA_DIR) };
	const char *slash = config_path ? strrchr(config_path, '/') : NULL;

	if (access(path, F_OK) == 0 || path[0] == '/')
		return NULL;
	if (slash != NULL) {
		dirs[0] = config_path;
		dir_len[0] = (size_t)(slash - config_path);
	}
	for (int i = 0; i < 2; i++) {
		size_t n = dir_len[i] + strlen(path) + 2;
		char *p;

		if (dirs[i] == NULL || (p = malloc(n)) == NULL)
			continue;
		snprintf(p, n, "%.*s/%s", (int)dir_len[i], dirs[i], path);
		if (access(p, F_OK) == 0)
			return p;
		free(p);
	}
	return NULL;
}

vd_status vd_server_opts_finalize(vd_server_opts *s, const vd_config *c)
{
	const char *t = s->chat_template;

	/* a template file named relative to the YAML that names it, or one
	 * installed with vllmd; template text given inline is left alone */
	if (t && !strstr(t, "{{") && !strstr(t, "{%")) {
		char *found = find_beside(t, c->config_path);

		if (found) {
			free(s->chat_template);
			s->chat_template = found;
		}
	}
	if (s->served_model_name.n == 0 && c->model)
		return vd_config_strlist_push(&s->served_model_name, c->model);
	return VD_OK;
}
