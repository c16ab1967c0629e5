/* Special-use address ranges and the allow list (contracts in net_policy.h).
 * The ranges follow IANA's IPv4 and IPv6 special-purpose address registries:
 * every range there that is not globally reachable is refused. IPv6 forms
 * that carry an IPv4 address (mapped, NAT64, 6to4) are judged by that
 * address, so ::ffff:127.0.0.1 and 64:ff9b::a00:1 are refused with 127/8
 * and 10/8, while 64:ff9b::8.8.8.8 (a public host behind NAT64) is not. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "server/net_policy.h"

struct vd_special {
	const char *net;   /* "ADDRESS/PREFIX" */
	const char *kind;  /* NULL: judged by the embedded IPv4 address */
	int v4_at;         /* offset of the embedded IPv4 address (kind NULL) */
};

static const struct vd_special special4[] = {
	{ "0.0.0.0/8", "unspecified (\"this network\")", 0 },
	{ "10.0.0.0/8", "private (RFC 1918)", 0 },
	{ "100.64.0.0/10", "shared carrier-grade NAT (RFC 6598)", 0 },
	{ "127.0.0.0/8", "loopback", 0 },
	{ "169.254.0.0/16", "link-local", 0 },
	{ "172.16.0.0/12", "private (RFC 1918)", 0 },
	{ "192.0.0.0/24", "IETF protocol assignment", 0 },
	{ "192.0.2.0/24", "documentation (TEST-NET-1)", 0 },
	{ "192.88.99.0/24", "6to4 relay anycast", 0 },
	{ "192.168.0.0/16", "private (RFC 1918)", 0 },
	{ "198.18.0.0/15", "benchmarking", 0 },
	{ "198.51.100.0/24", "documentation (TEST-NET-2)", 0 },
	{ "203.0.113.0/24", "documentation (TEST-NET-3)", 0 },
	{ "224.0.0.0/4", "multicast", 0 },
	{ "240.0.0.0/4", "reserved (or broadcast)", 0 },
};

/* First match wins: the exact addresses come before the ranges holding them. */
static const struct vd_special special6[] = {
	{ "::/128", "unspecified", 0 },
	{ "::1/128", "loopback", 0 },
	{ "::ffff:0:0/96", NULL, 12 },              /* IPv4-mapped */
	{ "::ffff:0:0:0/96", "IPv4-translated", 0 },
	{ "::/96", "IPv4-compatible (deprecated)", 0 },
	{ "64:ff9b::/96", NULL, 12 },               /* NAT64 */
	{ "64:ff9b:1::/48", "local-use NAT64", 0 },
	{ "100::/64", "discard-only", 0 },
	{ "2001:db8::/32", "documentation", 0 },
	{ "2001::/23", "IETF protocol assignment (Teredo, ORCHID)", 0 },
	{ "2002::/16", NULL, 2 },                   /* 6to4 */
	{ "3fff::/20", "documentation", 0 },
	{ "fc00::/7", "unique local (ULA)", 0 },
	{ "fe80::/10", "link-local", 0 },
	{ "fec0::/10", "site-local (deprecated)", 0 },
	{ "ff00::/8", "multicast", 0 },
};

static int addr_len(int family)
{
	return family == AF_INET ? 4 : 16;
}

bool vd_net_addr_parse(const char *text, vd_net_addr *out)
{
	char buf[INET6_ADDRSTRLEN + 2];
	size_t n = strlen(text);

	memset(out, 0, sizeof(*out));
	if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
		text++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, text, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = AF_INET6;
		return true;
	}
	return false;
}

/* Whether the first prefix bits of a and b are equal. */
static bool prefix_eq(const uint8_t *a, const uint8_t *b, int prefix)
{
	int whole = prefix / 8, rest = prefix % 8;

	if (memcmp(a, b, (size_t)whole) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[whole] ^ b[whole]) & (0xff << (8 - rest)) & 0xff) == 0;
}

static bool in_net(const vd_net *net, const vd_net_addr *a)
{
	return net->base.family == a->family && prefix_eq(net->base.addr, a->addr, net->prefix);
}

/* "ADDRESS[/PREFIX]" (len bytes of s) into *net; NULL or the reason. */
static const char *parse_net(const char *s, size_t len, vd_net *net)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash;
	long prefix;
	char *end;
	int max;

	if (len >= sizeof(buf))
		return "too long to be a network";
	memcpy(buf, s, len);
	buf[len] = '\0';
	slash = strchr(buf, '/');
	if (slash)
		buf[slash - buf] = '\0';
	if (!vd_net_addr_parse(buf, &net->base))
		return "not an IPv4 or IPv6 address";
	max = addr_len(net->base.family) * 8;
	net->prefix = max;
	if (slash) {
		errno = 0;
		prefix = strtol(slash + 1, &end, 10);
		if (slash[1] == '\0' || *end != '\0' || errno || prefix < 0 || prefix > max ||
		    !isdigit((unsigned char)slash[1]))
			return net->base.family == AF_INET ? "the prefix must be 0 to 32"
							   : "the prefix must be 0 to 128";
		net->prefix = (int)prefix;
	}
	for (int bit = net->prefix; bit < max; bit++)
		if (net->base.addr[bit / 8] & (0x80 >> (bit % 8)))
			return "it has address bits set past the prefix (write the network "
			       "address, e.g. 10.0.0.0/8)";
	return NULL;
}

vd_status vd_net_parse_list(const char *const *items, int n_items, vd_net **out, int *n_out)
{
	vd_net *nets = NULL, *grown;
	int n = 0, cap = 0;

	*out = NULL;
	*n_out = 0;
	for (int i = 0; i < n_items; i++) {
		const char *p = items[i];

		while (p && *p) {
			size_t len;
			const char *why;

			while (*p == ',' || isspace((unsigned char)*p))
				p++;
			len = strcspn(p, ", \t\r\n");
			if (len == 0)
				break;
			if (n == cap) {
				cap = cap ? cap * 2 : 8;
				grown = realloc(nets, (size_t)cap * sizeof(*nets));
				if (!grown) {
					free(nets);
					return vd_errorf(VD_ERR_NOMEM, "out of memory for "
							 "allowed_media_networks");
				}
				nets = grown;
			}
			why = parse_net(p, len, &nets[n]);
			if (why) {
				vd_status st = vd_errorf(VD_ERR_INVALID_ARG,
							 "allowed_media_networks: '%.*s' is not a "
							 "network: %s", (int)(len > 64 ? 64 : len),
							 p, why);

				free(nets);
				return st;
			}
			n++;
			p += len;
		}
	}
	*out = nets;
	*n_out = n;
	return VD_OK;
}

/* A table entry's network (the tables are constants: they parse). */
static vd_net table_net(const char *text)
{
	vd_net net;

	memset(&net, 0, sizeof(net));
	parse_net(text, strlen(text), &net);
	return net;
}

const char *vd_net_special(const vd_net_addr *a)
{
	size_t i;

	if (a->family == AF_INET) {
		for (i = 0; i < sizeof(special4) / sizeof(special4[0]); i++) {
			vd_net net = table_net(special4[i].net);

			if (in_net(&net, a))
				return special4[i].kind;
		}
		return NULL;
	}
	for (i = 0; i < sizeof(special6) / sizeof(special6[0]); i++) {
		vd_net net = table_net(special6[i].net);

		if (!in_net(&net, a))
			continue;
		if (special6[i].kind == NULL) {
			vd_net_addr v4 = { .family = AF_INET };

			memcpy(v4.addr, a->addr + special6[i].v4_at, 4);
			return vd_net_special(&v4);
		}
		return special6[i].kind;
	}
	return NULL;
}

/* The other spelling of the same host: a.b.c.d <-> ::ffff:a.b.c.d. */
static bool mapped_twin(const vd_net_addr *a, vd_net_addr *twin)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(twin, 0, sizeof(*twin));
	if (a->family == AF_INET) {
		twin->family = AF_INET6;
		memcpy(twin->addr, mapped, 12);
		memcpy(twin->addr + 12, a->addr, 4);
		return true;
	}
	if (memcmp(a->addr, mapped, 12) != 0)
		return false;
	twin->family = AF_INET;
	memcpy(twin->addr, a->addr + 12, 4);
	return true;
}

bool vd_net_allowed(const vd_net *allowed, int n, const vd_net_addr *a, const char **why)
{
	const char *kind = vd_net_special(a);
	vd_net_addr twin;
	bool has_twin = mapped_twin(a, &twin);

	if (why)
		*why = kind;
	if (!kind)
		return true;
	for (int i = 0; i < n; i++)
		if (in_net(&allowed[i], a) || (has_twin && in_net(&allowed[i], &twin)))
			return true;
	return false;
}

void vd_net_addr_str(const vd_net_addr *a, char *buf, size_t cap)
{
	char text[INET6_ADDRSTRLEN];

	if (!inet_ntop(a->family, a->addr, text, sizeof(text)))
		snprintf(text, sizeof(text), "(address family %d)", a->family);
	snprintf(buf, cap, "%s", text);
}
