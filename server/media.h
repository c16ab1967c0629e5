/* Media fetching for image_url content parts, as vLLM's MediaConnector does:
 * http(s) through libcurl (deadline, byte cap, redirect cap, domain
 * allow-list on every hop), base64 data: URLs, and file:// URLs confined to
 * allowed_local_media_path. Returns the encoded bytes; the caller decodes
 * them (vd_image_decode). Only this module includes libcurl; every fetch has
 * its own easy handle, so fetches may run on any number of threads at once.
 * SSRF guard: every socket a fetch opens, for the first URL and for every
 * redirect, is checked against the network policy (server/net_policy.h)
 * before it connects, on the very address it connects to, so a DNS answer
 * cannot change between the check and the connection; IP-literal hosts are
 * refused before libcurl runs. No proxy is used, whatever the environment
 * says (the policy must see the real destination). */
#ifndef VD_SERVER_MEDIA_H
#define VD_SERVER_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#include "vllmd/status.h"

struct vd_server_opts;

/* Limits of one fetch. Everything is borrowed for the duration of the call. */
typedef struct vd_media_opts {
	double timeout_s;        /* whole http(s) fetch incl. redirects; > 0 */
	int64_t max_bytes;       /* most encoded bytes, any scheme; > 0 */
	int max_redirects;       /* redirects followed; 0 = none, >= 0 */
	const char *allowed_local_path; /* directory for file:// URLs; NULL or
					 * "" = file:// URLs are refused */
	const char *const *allowed_domains; /* exact host names (case-insensitive);
					     * n_allowed_domains == 0 = any host */
	int n_allowed_domains;
	const char *const *allowed_networks; /* networks allowed besides public
					      * addresses: "127.0.0.0/8,::1/128"
					      * (vd_net_parse_list); 0 = none */
	int n_allowed_networks;
} vd_media_opts;

/* One URL's outcome in vd_media_fetch_many. */
typedef struct vd_media_result {
	vd_status status;        /* VD_OK or the error of this URL */
	uint8_t *data;           /* owned (free()); NULL unless status == VD_OK */
	size_t len;
	char error[512];         /* the message when status != VD_OK, else "" */
} vd_media_result;

/* Initialise libcurl for the process. Call from one thread before any
 * fetch (libcurl's global init is not thread-safe on every version); calls
 * nest, each needing a vd_media_global_cleanup. Errors: VD_ERR_BACKEND. */
vd_status vd_media_global_init(void);

/* Undo one vd_media_global_init; the last one releases libcurl. Call when
 * no fetch is running. */
void vd_media_global_cleanup(void);

/* Fill o from the daemon's options (image_fetch_timeout, max_image_bytes,
 * max_redirects, allowed_local_media_path, allowed_media_domains,
 * allowed_media_networks). o borrows c's strings: keep c alive while o is
 * used. VD_ERR_INVALID_ARG when allowed_media_networks does not parse
 * (the message names the entry), so a daemon refuses it at start-up. */
vd_status vd_media_opts_from_config(const struct vd_server_opts *c, vd_media_opts *o);

/* Fetch the encoded image that url names:
 *   http://, https://  GET with User-Agent "vllmd/<version>"; only http(s)
 *                      on every hop; redirects followed by hand so each target
 *                      is checked (scheme, allowed_domains, network policy)
 *                      before it is contacted; a non-2xx final status is an
 *                      error.
 *   data:image/<type>[;param]...;base64,<b64>  strict base64 (no whitespace,
 *                      '=' padding required, nothing after it).
 *   file:///abs/path   only under o->allowed_local_path after resolving
 *                      symlinks and "..", regular files only.
 * Schemes are case-insensitive. On success *data (malloc'ed, owned by the
 * caller, never NULL) holds *len >= 1 bytes. On error *data is NULL, *len 0
 * and the message reads "Failed to fetch image from <url>: <reason>":
 *   VD_ERR_INVALID_ARG  malformed URL, unsupported scheme, bad data URL,
 *                       host not in allowed_domains, host's address in a
 *                       blocked range (says which kind and names the
 *                       option), file outside the allowed directory or
 *                       file:// not enabled, no bytes, bad allowed_networks
 *   VD_ERR_TIMEOUT      the deadline passed after the connection was made
 *                       (names the option)
 *   VD_ERR_LIMIT        more than max_bytes, too many redirects
 *   VD_ERR_IO           could not connect (one message for refused,
 *                       unreachable and timed out, so a reply does not tell
 *                       a closed port from a filtered one), DNS or TLS
 *                       failure, HTTP status not 2xx ("HTTP 404"),
 *                       unreadable file
 * Messages never quote fetched bytes.
 *   VD_ERR_NOMEM; VD_ERR_BACKEND when libcurl lacks a needed option
 * Thread-safe once vd_media_global_init has returned. */
vd_status vd_media_fetch(const char *url, const vd_media_opts *o,
			 uint8_t **data, size_t *len);

/* Fetch n URLs concurrently (http(s) transfers share one curl multi handle
 * on the calling thread; data: and file: URLs are read in place), each under
 * the same rules and deadline as vd_media_fetch. out[0..n) is overwritten
 * and owned by the caller (release with vd_media_results_free), whatever is
 * returned. Returns VD_OK when every URL succeeded; otherwise the status of
 * the lowest-index failed URL with the message "image <i>: <its message>".
 * Errors of the call itself (VD_ERR_INVALID_ARG for n < 0 or NULLs,
 * VD_ERR_BACKEND when libcurl's multi interface fails) mark every URL not
 * yet finished with that status. Thread-safe like vd_media_fetch. */
vd_status vd_media_fetch_many(const char *const *urls, int n,
			      const vd_media_opts *o, vd_media_result *out);

/* Free the data of out[0..n); out itself stays the caller's. NULL is a no-op. */
void vd_media_results_free(vd_media_result *out, int n);

#endif
