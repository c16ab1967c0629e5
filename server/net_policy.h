/* The network half of the media SSRF policy: which addresses an image fetch
 * may connect to. Public unicast addresses are allowed; every special-use
 * range (loopback, private, CGNAT, link-local and cloud metadata, multicast,
 * unspecified, reserved, documentation, IPv6 ULA and link-local, and the
 * IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms of blocked IPv4
 * addresses) is refused unless it lies in a network the operator allows
 * (allowed_media_networks). Pure functions of their arguments: no I/O, no
 * libcurl (server/media.c applies the verdict to every socket it opens). */
#ifndef VD_SERVER_NET_POLICY_H
#define VD_SERVER_NET_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vllmd/status.h"

/* An address: family AF_INET (4 bytes of addr used) or AF_INET6 (16),
 * network byte order. */
typedef struct vd_net_addr {
	int family;
	uint8_t addr[16];
} vd_net_addr;

/* A network: an address with its host bits cleared and a prefix length
 * (0..32 for AF_INET, 0..128 for AF_INET6). */
typedef struct vd_net {
	vd_net_addr base;
	int prefix;
} vd_net;

/* Parse allowed networks: each of items[0..n_items) holds one or more of
 * "ADDRESS/PREFIX" or "ADDRESS" (a single host), separated by commas or
 * white space, e.g. "127.0.0.0/8,::1/128". Host bits set below the prefix
 * are refused (a typo guard: "10.0.0.1/8"). On success *out (malloc'ed,
 * owned by the caller; NULL when none) holds *n_out networks. Errors:
 * VD_ERR_INVALID_ARG naming the entry and what is wrong; VD_ERR_NOMEM. */
vd_status vd_net_parse_list(const char *const *items, int n_items, vd_net **out, int *n_out);

/* Parse one literal address ("10.1.2.3", "::1", "[fe80::1]"); false if
 * text is not one. Only dotted-quad IPv4: other spellings (2130706433,
 * 0x7f.1) are normalised by the URL parser before they get here. */
bool vd_net_addr_parse(const char *text, vd_net_addr *out);

/* What kind of special-use address a is ("loopback", "private (RFC 1918)",
 * ...), or NULL for a public unicast address. */
const char *vd_net_special(const vd_net_addr *a);

/* Whether a fetch may connect to a: public, or inside one of allowed[0..n).
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 host itself and
 * matches IPv4 networks too. When refused, *why (if not NULL) is the
 * special-use kind. */
bool vd_net_allowed(const vd_net *allowed, int n, const vd_net_addr *a, const char **why);

/* a as text ("127.0.0.1", "::ffff:7f00:1") into buf. */
void vd_net_addr_str(const vd_net_addr *a, char *buf, size_t cap);

#endif
