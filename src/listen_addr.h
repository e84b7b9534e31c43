/*
 * listen_addr.h - parsing "ADDR:PORT" listen addresses into socket addresses
 *
 * Pure parsing: no sockets are opened and nothing is logged.  The config
 * loader uses it to validate a key (and to refuse a remote address unless
 * allowed), the metrics listener to bind.
 */
#ifndef CHATSYNC_LISTEN_ADDR_H
#define CHATSYNC_LISTEN_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/*
 * Parses text as "ADDR:PORT": ADDR is a numeric IPv4 address ("127.0.0.1")
 * or a numeric IPv6 address in brackets ("[::1]"), PORT is 0..65535 in at
 * most 5 decimal digits (0 asks for any free port).  On success fills *addr
 * and *len (the length of the sockaddr_in or sockaddr_in6 inside) and
 * returns true.  On failure leaves *addr and *len alone and writes the
 * reason into err (errsz bytes, always terminated); the caller logs it.
 * A NULL text is refused.
 */
bool listen_addr_parse(const char *text, struct sockaddr_storage *addr, socklen_t *len, char *err,
		       size_t errsz) __attribute__((warn_unused_result));

/*
 * Whether addr (from listen_addr_parse) is a loopback address: 127.0.0.0/8
 * or ::1, the numeric addresses url_is_loopback_host accepts.  Anything
 * else, including the wildcards 0.0.0.0 and ::, and IPv4-mapped addresses
 * (::ffff:127.0.0.1), is not.
 */
bool listen_addr_is_loopback(const struct sockaddr_storage *addr);

#endif
