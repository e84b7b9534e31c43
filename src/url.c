/*
 * url.c - building and checking the API's URLs
 */
#include "config.h"

#include "url.h"

#include "hash.h"
#include "mem.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <curl/curl.h>
#include <stdio.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool
is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

char *
url_encode_segment(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t len = strlen(s), o = 0;
	char *out = xmalloc(len * 3 + 1);
	/* "." and ".." would be taken as dot-segments and squashed away. */
	bool only_dots = len <= 2 && strspn(s, ".") == len;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (is_unreserved(c) && !only_dots) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return out;
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *
url_decode_segment(const char *s)
{
	size_t len = strlen(s), o = 0;
	char *out = xmalloc(len + 1);

	for (size_t i = 0; i < len; i++) {
		int hi, lo;

		if (s[i] != '%') {
			out[o++] = s[i];
			continue;
		}
		hi = i + 2 < len ? hex_value(s[i + 1]) : -1;
		lo = hi >= 0 ? hex_value(s[i + 2]) : -1;
		if (lo < 0 || (hi == 0 && lo == 0)) {
			free(out);
			return NULL;
		}
		out[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	out[o] = '\0';
	return out;
}

bool
url_is_loopback_host(const char *host)
{
	struct in_addr v4;
	struct in6_addr v6;
	char bare[64];
	size_t len = strlen(host);

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &v4) == 1)
		return (ntohl(v4.s_addr) >> 24) == 127;
	if (len >= 2 && len < sizeof(bare) && host[0] == '[' && host[len - 1] == ']') {
		memcpy(bare, host + 1, len - 2);
		bare[len - 2] = '\0';
		host = bare;
	}
	if (inet_pton(AF_INET6, host, &v6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&v6);
	return false;
}

/* An origin: scheme and host (and port), with no path, query or fragment. */
struct origin {
	char *scheme, *host;
};

static void
origin_free(struct origin *o)
{
	curl_free(o->scheme);
	curl_free(o->host);
}

/* Reads u as an origin; user information only if allow_user. */
static bool
origin_get(CURLU *u, bool allow_user, struct origin *o, char *err, size_t errsz)
{
	char *path = NULL, *part = NULL;
	bool ok = false;

	memset(o, 0, sizeof(*o));
	if (curl_url_get(u, CURLUPART_SCHEME, &o->scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &o->host, 0) != CURLUE_OK)
		snprintf(err, errsz, "no scheme or host");
	else if (!allow_user && curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK)
		snprintf(err, errsz, "user information is not allowed in the URL");
	else if (curl_url_get(u, CURLUPART_QUERY, &part, 0) == CURLUE_OK ||
		 curl_url_get(u, CURLUPART_FRAGMENT, &part, 0) == CURLUE_OK)
		snprintf(err, errsz, "a query or fragment is not allowed");
	else if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && strcmp(path, "/") != 0)
		snprintf(err, errsz, "a path is not allowed (give scheme, host and port only)");
	else
		ok = true;
	curl_free(path);
	curl_free(part);
	return ok;
}

/* Where the credentials may go: https://, or http:// to a loopback host (tests). */
static bool
base_ok(CURLU *u, char *err, size_t errsz)
{
	struct origin o;
	bool ok = origin_get(u, false, &o, err, errsz);

	if (ok && strcmp(o.scheme, "http") == 0) {
		ok = url_is_loopback_host(o.host);
		if (!ok)
			snprintf(err, errsz,
				 "http:// is allowed only to a loopback host; use https://");
	} else if (ok && strcmp(o.scheme, "https") != 0) {
		snprintf(err, errsz, "scheme must be https");
		ok = false;
	}
	origin_free(&o);
	return ok;
}

static bool
proxy_ok(CURLU *u, char *err, size_t errsz)
{
	static const char *const schemes[] = {"http", "https", "socks5", "socks5h"};
	struct origin o;
	bool ok = origin_get(u, true, &o, err, errsz), known = false;

	for (size_t i = 0; ok && i < sizeof(schemes) / sizeof(schemes[0]); i++)
		known = known || strcmp(o.scheme, schemes[i]) == 0;
	if (ok && !known) {
		snprintf(err, errsz, "scheme must be http, https, socks5 or socks5h");
		ok = false;
	}
	origin_free(&o);
	return ok;
}

static bool
check_url(const char *url, unsigned flags, bool (*parts_ok)(CURLU *, char *, size_t), char *err,
	  size_t errsz)
{
	CURLU *u = curl_url();
	bool ok;

	if (u == NULL) {
		snprintf(err, errsz, "out of memory");
		return false;
	}
	if (curl_url_set(u, CURLUPART_URL, url, flags) != CURLUE_OK) {
		snprintf(err, errsz, "not a valid absolute URL");
		ok = false;
	} else {
		ok = parts_ok(u, err, errsz);
	}
	curl_url_cleanup(u);
	return ok;
}

bool
url_check_base(const char *base, char *err, size_t errsz)
{
	return check_url(base, 0, base_ok, err, errsz);
}

bool
url_check_proxy(const char *proxy, char *err, size_t errsz)
{
	return check_url(proxy, CURLU_NON_SUPPORT_SCHEME, proxy_ok, err, errsz);
}

char *
url_join(const char *base, const char *rest)
{
	size_t base_len = strlen(base);

	if (base_len > 0 && base[base_len - 1] == '/')
		base_len--;
	return xasprintf("%.*s%s", (int)base_len, base, rest);
}

char *
url_service(const char *base, const char *version, const char *service_sid, const char *rest)
{
	char *path = xasprintf("/%s/Services/%s%s", version, service_sid, rest);
	char *url = url_join(base, path);

	free(path);
	return url;
}

char *
url_user_listing(const char *base, const char *version, const char *service_sid, const char *user,
		 const char *listing, int page_size)
{
	char *enc = url_encode_segment(user);
	char *rest = xasprintf("/Users/%s/%s?PageSize=%d", enc, listing, page_size);
	char *path = service_sid == NULL ? xasprintf("/%s%s", version, rest) : NULL;
	char *url = service_sid == NULL ? url_join(base, path)
					: url_service(base, version, service_sid, rest);

	free(path);

	free(enc);
	free(rest);
	return url;
}

char *
url_first_page(const char *base, const char *version, const char *service_sid, const char *user,
	       int page_size)
{
	return url_user_listing(base, version, service_sid, user, "Channels", page_size);
}

struct url_parts {
	char *scheme, *host, *port, *path;
};

static bool
split_url(const char *url, struct url_parts *out)
{
	CURLU *u = curl_url();
	bool ok;

	memset(out, 0, sizeof(*out));
	if (u == NULL)
		return false;
	ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	     curl_url_get(u, CURLUPART_SCHEME, &out->scheme, 0) == CURLUE_OK &&
	     curl_url_get(u, CURLUPART_HOST, &out->host, 0) == CURLUE_OK &&
	     curl_url_get(u, CURLUPART_PORT, &out->port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
	     curl_url_get(u, CURLUPART_PATH, &out->path, 0) == CURLUE_OK;
	curl_url_cleanup(u);
	return ok;
}

static void
free_parts(struct url_parts *p)
{
	curl_free(p->scheme);
	curl_free(p->host);
	curl_free(p->port);
	curl_free(p->path);
}

/* Compares two paths segment by segment, each percent-decoded. */
static bool
same_path(const char *a, const char *b)
{
	while (*a != '\0' || *b != '\0') {
		size_t la = strcspn(a, "/"), lb = strcspn(b, "/");
		char *sa = xstrndup(a, la), *sb = xstrndup(b, lb);
		char *da = url_decode_segment(sa), *db = url_decode_segment(sb);
		bool same = da != NULL && db != NULL && strcmp(da, db) == 0;

		free(sa);
		free(sb);
		free(da);
		free(db);
		if (!same || (a[la] == '/') != (b[lb] == '/'))
			return false;
		a += la + (a[la] == '/');
		b += lb + (b[lb] == '/');
	}
	return true;
}

bool
url_same_listing(const char *next, const char *first)
{
	struct url_parts n = {0}, f = {0};
	bool ok;

	ok = split_url(next, &n) && split_url(first, &f) && strcmp(n.scheme, f.scheme) == 0 &&
	     strcasecmp(n.host, f.host) == 0 && strcmp(n.port, f.port) == 0 &&
	     same_path(n.path, f.path);
	free_parts(&n);
	free_parts(&f);
	return ok;
}

struct url_seen {
	size_t n, capacity;
	uint64_t hashes[]; /* capacity of them */
};

struct url_seen *
url_seen_new(size_t capacity)
{
	struct url_seen *s = xcalloc(1, sizeof(*s) + capacity * sizeof(s->hashes[0]));

	s->capacity = capacity;
	return s;
}

void
url_seen_free(struct url_seen *s)
{
	free(s);
}

void
url_seen_clear(struct url_seen *s)
{
	s->n = 0;
}

void
url_seen_add(struct url_seen *s, const char *url)
{
	if (s->n < s->capacity)
		s->hashes[s->n++] = hash_str(url);
}

bool
url_seen_has(const struct url_seen *s, const char *url)
{
	uint64_t h = hash_str(url);

	for (size_t i = 0; i < s->n; i++) {
		if (s->hashes[i] == h)
			return true;
	}
	return false;
}

bool
url_label_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 32 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
			return false;
	}
	return true;
}

char *
url_regional(const char *base, const char *region, const char *edge)
{
	static const char domain[] = ".twilio.com";
	const char *host = strstr(base, "://");
	const char *host_end, *dot;
	char *product = NULL, *url;
	const char *have_region = NULL, *have_edge = NULL;
	char *labels[3] = {NULL, NULL, NULL};
	size_t n = 0;

	if (host == NULL)
		return xstrdup(base);
	host += 3;
	host_end = host + strcspn(host, ":/");
	if ((size_t)(host_end - host) <= strlen(domain) ||
	    strncasecmp(host_end - strlen(domain), domain, strlen(domain)) != 0)
		return xstrdup(base); /* not Twilio's (a test's loopback server, say) */
	/* product[.edge][.region].twilio.com: the labels before the domain */
	for (const char *p = host; p < host_end - strlen(domain) && n < 3; p = dot + 1) {
		dot = memchr(p, '.', (size_t)(host_end - strlen(domain) - p));
		if (dot == NULL)
			dot = host_end - strlen(domain);
		labels[n++] = xasprintf("%.*s", (int)(dot - p), p);
	}
	product = labels[0];
	if (n == 2)
		have_region = labels[1];
	else if (n == 3) {
		have_edge = labels[1];
		have_region = labels[2];
	}
	edge = edge != NULL && edge[0] != '\0' ? edge : have_edge;
	region = region != NULL && region[0] != '\0' ? region : have_region;
	if (region == NULL && edge != NULL)
		region = "us1"; /* an edge needs a region: Twilio's default */
	url = xasprintf("%.*s%s%s%s%s%s%s", (int)(host - base), base, product, edge ? "." : "",
			edge ? edge : "", region ? "." : "", region ? region : "",
			host_end - strlen(domain));
	for (size_t i = 0; i < 3; i++)
		free(labels[i]);
	return url;
}
