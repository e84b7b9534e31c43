/*
 * listen_addr.c - parsing "ADDR:PORT" listen addresses into socket addresses
 *
 * Only numeric addresses are accepted, so parsing never touches the
 * resolver and a listen address means the same thing at every start.
 */
#include "config.h"

#include "listen_addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* 0..65535 in 1 to 5 decimal digits and nothing else: no sign, space or 0x. */
static bool
parse_port(const char *s, unsigned *port)
{
	unsigned v = 0;
	size_t n;

	for (n = 0; isdigit((unsigned char)s[n]); n++) {
		if (n == 5)
			return false;
		v = v * 10 + (unsigned)(s[n] - '0');
	}
	if (n == 0 || s[n] != '\0' || v > 65535)
		return false;
	*port = v;
	return true;
}

/*
 * Splits "1.2.3.4:P" or "[v6]:P": copies the address into host (without the
 * brackets) and points *port at the port's text.  On failure sets *why.
 */
static bool
split(const char *text, char *host, size_t hostsz, const char **port, bool *v6, const char **why)
{
	const char *start = text, *end;

	*v6 = text[0] == '[';
	if (*v6) {
		start = text + 1;
		end = strchr(start, ']');
		if (end == NULL) {
			*why = "no closing bracket after the IPv6 address";
			return false;
		}
		if (end[1] != ':') {
			*why = "no colon and port after the bracketed address";
			return false;
		}
		*port = end + 2;
	} else {
		end = strchr(text, ':');
		if (end == NULL) {
			*why = "no colon and port after the address";
			return false;
		}
		/* A second colon means an unbracketed IPv6 address. */
		if (strchr(end + 1, ':') != NULL) {
			*why = "an IPv6 address must be in brackets";
			return false;
		}
		*port = end + 1;
	}
	if (end == start) {
		*why = "no address before the port";
		return false;
	}
	if ((size_t)(end - start) >= hostsz) {
		*why = "the address is too long";
		return false;
	}
	memcpy(host, start, (size_t)(end - start));
	host[end - start] = '\0';
	return true;
}

/* Fills ss from a numeric address and a port; on failure sets *why. */
static bool
fill_sockaddr(const char *host, bool v6, unsigned port, struct sockaddr_storage *ss, socklen_t *len,
	      const char **why)
{
	memset(ss, 0, sizeof(*ss));
	if (v6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
			*why = "not a numeric IPv6 address";
			return false;
		}
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
			*why = "not a numeric IPv4 address (host names are not resolved)";
			return false;
		}
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*len = sizeof(*sin);
	}
	return true;
}

bool
listen_addr_parse(const char *text, struct sockaddr_storage *addr, socklen_t *len, char *err,
		  size_t errsz)
{
	char host[INET6_ADDRSTRLEN + 1];
	struct sockaddr_storage ss;
	const char *port_text, *why = NULL;
	socklen_t ss_len;
	unsigned port;
	bool v6, ok = false;

	if (text == NULL) {
		why = "no address";
		goto out;
	}
	if (!split(text, host, sizeof(host), &port_text, &v6, &why))
		goto out;
	if (!parse_port(port_text, &port)) {
		why = "the port must be a number from 0 to 65535 (at most 5 digits)";
		goto out;
	}
	if (!fill_sockaddr(host, v6, port, &ss, &ss_len, &why))
		goto out;
	*addr = ss;
	*len = ss_len;
	ok = true;
out:
	if (!ok)
		snprintf(err, errsz, "%s", why);
	return ok;
}

bool
listen_addr_is_loopback(const struct sockaddr_storage *addr)
{
	if (addr->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;

		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (addr->ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)addr)->sin6_addr);
	return false;
}
