/* Check tests for server/net_policy.c: which addresses image fetches may
 * reach, every special-use range and the IPv6 forms that carry an IPv4
 * address, and the parsing of allowed_media_networks. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "server/net_policy.h"

static vd_net_addr addr(const char *text)
{
	vd_net_addr a;

	ck_assert_msg(vd_net_addr_parse(text, &a), "'%s' does not parse", text);
	return a;
}

/* text is refused with no allowed networks, and its kind contains want. */
static void expect_blocked(const char *text, const char *want)
{
	vd_net_addr a = addr(text);
	const char *why = NULL;

	ck_assert_msg(!vd_net_allowed(NULL, 0, &a, &why), "%s is allowed", text);
	ck_assert_msg(why && strstr(why, want), "%s: kind '%s' lacks '%s'", text,
		      why ? why : "(null)", want);
}

static void expect_public(const char *text)
{
	vd_net_addr a = addr(text);
	const char *why = "unset";

	ck_assert_msg(vd_net_allowed(NULL, 0, &a, &why), "%s refused as %s", text, why);
	ck_assert_ptr_null(why);
}

START_TEST(test_ipv4_ranges)
{
	expect_blocked("127.0.0.1", "loopback");
	expect_blocked("127.255.255.254", "loopback");
	expect_blocked("0.0.0.0", "unspecified");
	expect_blocked("0.1.2.3", "unspecified");
	expect_blocked("10.0.0.1", "private");
	expect_blocked("172.16.0.1", "private");
	expect_blocked("172.31.255.255", "private");
	expect_blocked("192.168.1.1", "private");
	expect_blocked("100.64.0.1", "carrier-grade NAT");
	expect_blocked("100.127.255.255", "carrier-grade NAT");
	expect_blocked("169.254.169.254", "link-local");
	expect_blocked("169.254.0.1", "link-local");
	expect_blocked("224.0.0.1", "multicast");
	expect_blocked("239.255.255.250", "multicast");
	expect_blocked("255.255.255.255", "broadcast");
	expect_blocked("240.0.0.1", "reserved");
	expect_blocked("192.0.2.1", "documentation");
	expect_blocked("198.18.0.1", "benchmarking");
	/* the neighbours of each range are public */
	expect_public("8.8.8.8");
	expect_public("1.1.1.1");
	expect_public("11.0.0.1");
	expect_public("172.15.255.255");
	expect_public("172.32.0.0");
	expect_public("100.63.255.255");
	expect_public("100.128.0.0");
	expect_public("169.253.255.255");
	expect_public("192.167.255.255");
	expect_public("223.255.255.255");
	expect_public("126.255.255.255");
	expect_public("128.0.0.0");
}
END_TEST

START_TEST(test_ipv6_ranges)
{
	expect_blocked("::1", "loopback");
	expect_blocked("::", "unspecified");
	expect_blocked("[::1]", "loopback");
	expect_blocked("fc00::1", "unique local");
	expect_blocked("fd12:3456::1", "unique local");
	expect_blocked("fe80::1", "link-local");
	expect_blocked("febf::1", "link-local");
	expect_blocked("fec0::1", "site-local");
	expect_blocked("ff02::1", "multicast");
	expect_blocked("2001:db8::1", "documentation");
	expect_blocked("2001::1", "Teredo");
	expect_blocked("100::1", "discard");
	expect_blocked("64:ff9b:1::1", "NAT64");
	/* IPv4 carried in IPv6: judged by the IPv4 address */
	expect_blocked("::ffff:127.0.0.1", "loopback");
	expect_blocked("::ffff:7f00:1", "loopback");
	expect_blocked("::ffff:10.1.2.3", "private");
	expect_blocked("::ffff:169.254.169.254", "link-local");
	expect_blocked("::ffff:0.0.0.0", "unspecified");
	expect_blocked("64:ff9b::127.0.0.1", "loopback");
	expect_blocked("64:ff9b::a00:1", "private");
	expect_blocked("64:ff9b::a9fe:a9fe", "link-local");
	expect_blocked("2002:7f00:1::", "loopback");
	expect_blocked("2002:c0a8:101::1", "private");
	expect_blocked("::127.0.0.1", "IPv4-compatible");
	expect_blocked("::ffff:0:127.0.0.1", "IPv4-translated");
	expect_public("2606:4700:4700::1111");
	expect_public("2a00:1450:4001::200e");
	expect_public("::ffff:8.8.8.8");
	expect_public("64:ff9b::808:808");
	expect_public("2002:808:808::1");
}
END_TEST

START_TEST(test_addr_parse)
{
	vd_net_addr a;
	char text[64];

	/* Only canonical literals: curl normalises other IPv4 spellings first. */
	ck_assert(!vd_net_addr_parse("localhost", &a));
	ck_assert(!vd_net_addr_parse("2130706433", &a));
	ck_assert(!vd_net_addr_parse("", &a));
	ck_assert(!vd_net_addr_parse("[]", &a));
	ck_assert(!vd_net_addr_parse("1.2.3.4.5", &a));
	ck_assert(vd_net_addr_parse("[2001:db8::1]", &a));
	ck_assert_int_eq(a.family, AF_INET6);
	vd_net_addr_str(&a, text, sizeof(text));
	ck_assert_str_eq(text, "2001:db8::1");
	a = addr("::ffff:127.0.0.1");
	vd_net_addr_str(&a, text, sizeof(text));
	ck_assert_str_eq(text, "::ffff:127.0.0.1");
}
END_TEST

START_TEST(test_allowed_networks)
{
	const char *items[] = { "127.0.0.0/8,::1/128", " 10.1.0.0/16  fd00::/8", "192.168.1.7" };
	vd_net *nets;
	int n;
	vd_net_addr a;
	const char *why;

	ck_assert_int_eq(vd_net_parse_list(items, 3, &nets, &n), VD_OK);
	ck_assert_int_eq(n, 5);
	a = addr("127.0.0.1");
	ck_assert(vd_net_allowed(nets, n, &a, &why));
	ck_assert_str_eq(why, "loopback"); /* still said, though allowed */
	a = addr("127.9.9.9");
	ck_assert(vd_net_allowed(nets, n, &a, NULL));
	a = addr("::ffff:127.0.0.1"); /* the same host, mapped */
	ck_assert(vd_net_allowed(nets, n, &a, NULL));
	a = addr("::1");
	ck_assert(vd_net_allowed(nets, n, &a, NULL));
	a = addr("10.1.255.1");
	ck_assert(vd_net_allowed(nets, n, &a, NULL));
	a = addr("10.2.0.1");
	ck_assert(!vd_net_allowed(nets, n, &a, NULL));
	a = addr("fd00:1::1");
	ck_assert(vd_net_allowed(nets, n, &a, NULL));
	a = addr("fe80::1");
	ck_assert(!vd_net_allowed(nets, n, &a, NULL));
	a = addr("192.168.1.7");
	ck_assert(vd_net_allowed(nets, n, &a, NULL));
	a = addr("192.168.1.8");
	ck_assert(!vd_net_allowed(nets, n, &a, NULL));
	/* NAT64 reaches a gateway, not the host: not allowed by 127.0.0.0/8 */
	a = addr("64:ff9b::7f00:1");
	ck_assert(!vd_net_allowed(nets, n, &a, NULL));
	free(nets);

	{
		const char *all[] = { "0.0.0.0/0", "::/0" };

		ck_assert_int_eq(vd_net_parse_list(all, 2, &nets, &n), VD_OK);
		a = addr("169.254.169.254");
		ck_assert(vd_net_allowed(nets, n, &a, NULL));
		a = addr("fe80::1");
		ck_assert(vd_net_allowed(nets, n, &a, NULL));
		free(nets);
	}
	ck_assert_int_eq(vd_net_parse_list(NULL, 0, &nets, &n), VD_OK);
	ck_assert_int_eq(n, 0);
	ck_assert_ptr_null(nets);
}
END_TEST

static void expect_bad(const char *item, const char *want)
{
	vd_net *nets = (vd_net *)1;
	int n = 7;

	ck_assert_int_eq(vd_net_parse_list(&item, 1, &nets, &n), VD_ERR_INVALID_ARG);
	ck_assert_ptr_null(nets);
	ck_assert_int_eq(n, 0);
	ck_assert_msg(strstr(vd_error_message(), want), "'%s': message '%s' lacks '%s'", item,
		      vd_error_message(), want);
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "allowed_media_networks"));
}

START_TEST(test_bad_networks)
{
	expect_bad("10.0.0.0/33", "0 to 32");
	expect_bad("::/129", "0 to 128");
	expect_bad("10.0.0.0/", "0 to 32");
	expect_bad("10.0.0.0/-1", "0 to 32");
	expect_bad("10.0.0.0/8x", "0 to 32");
	expect_bad("10.0.0.1/8", "bits set past the prefix");
	expect_bad("localhost", "not an IPv4 or IPv6 address");
	expect_bad("127.0.0.0/8,example.com", "'example.com'");
	expect_bad("0x7f000001/32", "not an IPv4");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("net_policy");
	TCase *tc = tcase_create("policy");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_ipv4_ranges);
	tcase_add_test(tc, test_ipv6_ranges);
	tcase_add_test(tc, test_addr_parse);
	tcase_add_test(tc, test_allowed_networks);
	tcase_add_test(tc, test_bad_networks);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
