/*
 * test_listen_addr.c - unit tests for src/listen_addr.c: "ADDR:PORT" with a
 * numeric IPv4 or bracketed IPv6 address, what is refused, and the reasons
 * given for refusing it
 */
#include "config.h"

#include "listen_addr.h"

#include "tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static bool
parse(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
	char err[128];

	return listen_addr_parse(text, ss, len, err, sizeof(err));
}

static void
test_parse_valid(void)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	char text[INET6_ADDRSTRLEN];
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;

	ok(parse("127.0.0.1:9187", &ss, &len), "parse 127.0.0.1:9187");
	is_int(ss.ss_family, AF_INET, "127.0.0.1:9187 is IPv4");
	is_int(len, sizeof(struct sockaddr_in), "127.0.0.1:9187 length");
	is_int(ntohs(sin->sin_port), 9187, "127.0.0.1:9187 port");
	is_str(inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text)), "127.0.0.1",
	       "127.0.0.1:9187 address");

	ok(parse("[::1]:9187", &ss, &len), "parse [::1]:9187");
	is_int(ss.ss_family, AF_INET6, "[::1]:9187 is IPv6");
	is_int(len, sizeof(struct sockaddr_in6), "[::1]:9187 length");
	is_int(ntohs(sin6->sin6_port), 9187, "[::1]:9187 port");
	is_str(inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text)), "::1",
	       "[::1]:9187 address");

	ok(parse("0.0.0.0:0", &ss, &len) && ntohs(sin->sin_port) == 0,
	   "parse 0.0.0.0:0 (any free port)");
	ok(parse("[::]:65535", &ss, &len) && ntohs(sin6->sin6_port) == 65535, "parse [::]:65535");
	ok(parse("[::ffff:10.1.2.3]:80", &ss, &len) && ss.ss_family == AF_INET6,
	   "parse an IPv4-mapped IPv6 address");
	ok(parse("[2001:db8::42]:00080", &ss, &len) && ntohs(sin6->sin6_port) == 80,
	   "parse a port with leading zeros");
}

static void
test_parse_invalid(void)
{
	static const char *const bad[] = {
		"",
		":9187",
		"127.0.0.1",
		"127.0.0.1:",
		"127.0.0.1:65536",
		"127.0.0.1:100000",
		"127.0.0.1:999999999999999999999",
		"127.0.0.1:-1",
		"127.0.0.1:+80",
		"127.0.0.1: 80",
		"127.0.0.1:80 ",
		" 127.0.0.1:80",
		"127.0.0.1:0x50",
		"127.0.0.1:80:80",
		"256.0.0.1:80",
		"127.1:80",
		"localhost:9187",
		"::1:9187",
		"[::1]",
		"[::1]:",
		"[::1]9187",
		"[::1]:80:80",
		"[::1",
		"[]:80",
		"[127.0.0.1]:80",
		"[fe80::1%eth0]:80",
		"[::1]]:80",
		"*:9187",
	};
	struct sockaddr_storage ss;
	socklen_t len;
	char err[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		len = 12345;
		memset(&ss, 0x5a, sizeof(ss));
		err[0] = '\0';
		ok(!listen_addr_parse(bad[i], &ss, &len, err, sizeof(err)) && len == 12345 &&
			   ss.ss_family != AF_INET,
		   "reject \"%s\" and leave the outputs alone", bad[i]);
		ok(err[0] != '\0', "and say why (\"%s\")", err);
	}
	ok(!parse(NULL, &ss, &len), "reject NULL");
}

/* The reason for refusing text, or "(accepted)". */
static const char *
reason(const char *text, char *err, size_t errsz)
{
	struct sockaddr_storage ss;
	socklen_t len;

	if (listen_addr_parse(text, &ss, &len, err, errsz))
		snprintf(err, errsz, "(accepted)");
	return err;
}

static void
test_reasons(void)
{
	char err[128], tiny[8];

	is_str(reason(NULL, err, sizeof(err)), "no address", "NULL: no address");
	is_str(reason("127.0.0.1", err, sizeof(err)), "no colon and port after the address",
	       "a missing port");
	is_str(reason("::1:9187", err, sizeof(err)), "an IPv6 address must be in brackets",
	       "an unbracketed IPv6 address");
	is_str(reason("[::1", err, sizeof(err)), "no closing bracket after the IPv6 address",
	       "an unclosed bracket");
	is_str(reason("[::1]9187", err, sizeof(err)),
	       "no colon and port after the bracketed address", "no colon after the bracket");
	is_str(reason(":9187", err, sizeof(err)), "no address before the port", "an empty address");
	is_str(reason("[]:80", err, sizeof(err)), "no address before the port",
	       "an empty bracketed address");
	is_str(reason("[0000:0000:0000:0000:0000:0000:ffff:255.255.255.255]:80", err, sizeof(err)),
	       "the address is too long", "an address longer than any IPv6 address");
	is_str(reason("127.0.0.1:65536", err, sizeof(err)),
	       "the port must be a number from 0 to 65535 (at most 5 digits)", "a port too large");
	is_str(reason("localhost:9187", err, sizeof(err)),
	       "not a numeric IPv4 address (host names are not resolved)", "a host name");
	is_str(reason("[127.0.0.1]:80", err, sizeof(err)), "not a numeric IPv6 address",
	       "an IPv4 address in brackets");
	is_str(reason("localhost:9187", tiny, sizeof(tiny)), "not a n",
	       "the reason is cut to fit, and terminated");
}

int
main(void)
{
	test_parse_valid();
	test_parse_invalid();
	test_reasons();
	return tap_done();
}
