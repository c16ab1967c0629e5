/* The daemon's options: the OpenAI API's model names, the chat template,
 * where and how the HTTP server listens, and how image URLs are fetched.
 * What the engine reads stays in core/config.h; this table joins it
 * (vd_config_init_ext), so YAML files, flags and --help treat both alike,
 * and `vllmd generate` accepts these options and ignores them. */
#ifndef VD_SERVER_OPTIONS_H
#define VD_SERVER_OPTIONS_H

#include "core/config.h"

enum { VD_CFG_CONTENT_AUTO, VD_CFG_CONTENT_STRING, VD_CFG_CONTENT_OPENAI };
enum {
	VD_CFG_LOG_TRACE, VD_CFG_LOG_DEBUG, VD_CFG_LOG_INFO, VD_CFG_LOG_WARNING,
	VD_CFG_LOG_ERROR, VD_CFG_LOG_CRITICAL,
};

/* Strings and lists are owned (NULL = unset) and freed with the vd_config
 * they were registered with; sizes are bytes. */
typedef struct vd_server_opts {
	vd_config_strlist served_model_name;
	/* chat */
	char *chat_template;
	int chat_template_content_format; /* VD_CFG_CONTENT_* */
	/* server */
	char *host;
	int64_t port;
	char *api_key;
	bool disable_log_requests;
	int log_level;                   /* VD_CFG_LOG_* */
	int64_t max_request_body_bytes;
	int64_t timeout_keep_alive;      /* seconds */
	int64_t max_waiting_requests;    /* beyond max_num_seqs; 0 = 16 x that */
	/* media */
	double image_fetch_timeout;      /* seconds */
	char *allowed_local_media_path;
	vd_config_strlist allowed_media_domains; /* empty = any domain */
	vd_config_strlist allowed_media_networks; /* beyond public addresses; empty = none */
	int64_t max_image_bytes;
	int64_t max_redirects;
} vd_server_opts;

/* The daemon's option table; *n receives its length. */
const vd_config_option *vd_server_options(int *n);

/* vd_config_init_ext(c, the daemon's table, s): c and s reset to their
 * defaults, s's options joined to c's. */
vd_status vd_server_config_init(vd_config *c, vd_server_opts *s);

/* After every source is applied (and vd_config_finalize): the API serves
 * the model path when no served_model_name is given; a chat_template file
 * that is not where it is named (relative to the working directory) is
 * looked for beside the --config file, then in vllmd's data directory. */
vd_status vd_server_opts_finalize(vd_server_opts *s, const vd_config *c);

#endif
