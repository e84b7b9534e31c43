/*
 * url.h - building and checking the API's URLs
 */
#ifndef CHATSYNC_URL_H
#define CHATSYNC_URL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Percent-encodes s as one URL path segment: every byte but the unreserved
 * characters (A-Z a-z 0-9 - . _ ~) becomes %XX, and so do the dots of a
 * segment made only of dots ("." or ".."), which would otherwise be removed
 * as dot-segments.  Returns a string the caller owns.
 */
char *url_encode_segment(const char *s);

/*
 * Reverses url_encode_segment.  Returns a string the caller owns, or NULL if
 * s holds a malformed escape or an encoded NUL.
 */
char *url_decode_segment(const char *s);

/* True for localhost, ::1 / [::1] and any address in 127.0.0.0/8. */
bool url_is_loopback_host(const char *host);

/*
 * Checks that base is fit to receive the account's credentials: https://,
 * or http:// to a loopback host; no user info, query or fragment; an empty
 * path.  On failure writes the reason into err.
 */
bool url_check_base(const char *base, char *err, size_t errsz) __attribute__((warn_unused_result));

/*
 * Checks a proxy URL: http://, https://, socks5:// or socks5h://, a host,
 * an optional port, nothing else.  On failure writes the reason into err.
 */
bool url_check_proxy(const char *proxy, char *err, size_t errsz)
	__attribute__((warn_unused_result));

/*
 * A resource of a service: BASE/VERSION/Services/SERVICE followed by rest
 * (a path and query already encoded, e.g. "/Users?PageSize=1000", or "");
 * version is the API's ("v1", "v2").  base must have passed url_check_base.
 * Returns a string the caller owns.
 */
char *url_service(const char *base, const char *version, const char *service_sid, const char *rest);

/* base (a trailing '/' tolerated) followed by rest ("/v1/Configuration").  The caller owns it. */
char *url_join(const char *base, const char *rest);

/*
 * The first page of a user's channel list:
 * BASE/VERSION/Services/SERVICE/Users/USER/Channels?PageSize=N with USER
 * encoded.  base must have passed url_check_base (a trailing '/' is
 * tolerated).  Returns a string the caller owns.
 */
char *url_first_page(const char *base, const char *version, const char *service_sid,
		     const char *user, int page_size);

/*
 * The same for the user's listing of another kind: listing is the last
 * segment of the path, "Channels" or "Conversations".  With service_sid
 * NULL, the listing of the account's default service:
 * BASE/VERSION/Users/USER/LISTING?PageSize=N.
 */
char *url_user_listing(const char *base, const char *version, const char *service_sid,
		       const char *user, const char *listing, int page_size);

/*
 * True if next is a page of the same listing as first: same scheme, host
 * and port, and the same path segment by segment once percent-decoded.
 * This keeps credentials from following a next_page_url anywhere else.
 */
bool url_same_listing(const char *next, const char *first) __attribute__((warn_unused_result));

/* Is s a region or an edge name: lowercase letters, digits and '-', 1 to 32? */
bool url_label_ok(const char *s);

/*
 * base with its host moved to a region and an edge, as Twilio's helper
 * libraries do: PRODUCT[.EDGE][.REGION].twilio.com becomes
 * PRODUCT.EDGE.REGION.twilio.com, each given one (NULL or "": none) in
 * place of the host's own, an edge without a region in us1.  A host not
 * under twilio.com is left alone.  Returns a string the caller owns.
 */
char *url_regional(const char *base, const char *region, const char *edge);

/*
 * The pages of one listing fetched so far, by hash, to tell a
 * next_page_url that leads back to one of them (a loop).  Past capacity
 * pages are no longer remembered; limits.max_pages ends such listings.
 */
struct url_seen;

/* Returns an empty set the caller owns. */
struct url_seen *url_seen_new(size_t capacity);
void url_seen_free(struct url_seen *s);
void url_seen_clear(struct url_seen *s);
void url_seen_add(struct url_seen *s, const char *url);
bool url_seen_has(const struct url_seen *s, const char *url);

#endif
