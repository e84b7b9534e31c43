/*
 * test_url.c - unit tests for src/url.c: segment encoding, loopback hosts,
 * the base URL check, the first page URL and the same-listing check
 */
#include "config.h"

#include "url.h"

#include "tap.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVICE "IS0123456789abcdef0123456789abcdef"
#define OTHER_SERVICE "IS0123456789abcdef0123456789abcdee"

static bool
is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

static bool
is_upper_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

/* True if s holds only unreserved characters and %XX escapes. */
static bool
only_unreserved_or_escapes(const char *s)
{
	for (size_t i = 0; s[i] != '\0'; i++) {
		if (is_unreserved((unsigned char)s[i]))
			continue;
		if (s[i] != '%' || !is_upper_hex(s[i + 1]) || !is_upper_hex(s[i + 2]))
			return false;
		i += 2;
	}
	return true;
}

static void
test_round_trip(void)
{
	static const char *const ids[] = {
		"alice smith",
		"a/b",
		"user@example.com",
		"a+b",
		"100%",
		"what?",
		"#channel",
		"\xc3\xa9",		    /* é */
		"\xe6\x97\xa5\xe6\x9c\xac", /* 日本 */
		"Ren\xc3\xa9 / \xe6\x97\xa5\xe6\x9c\xac + x@y.z?q=1#frag %41",
		"plain-._~ID09",
		"",
	};

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		char *enc = url_encode_segment(ids[i]);
		char *dec = url_decode_segment(enc);

		ok(only_unreserved_or_escapes(enc),
		   "encoded \"%s\" is \"%s\": unreserved and %%XX only", ids[i], enc);
		is_str(dec, ids[i], "identity %zu (encoded %s) survives encode then decode", i,
		       enc);
		free(enc);
		free(dec);
	}
}

static void
test_encode_exact(void)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"a b", "a%20b"},
		{"a/b", "a%2Fb"},
		{"u@x", "u%40x"},
		{"a+b", "a%2Bb"},
		{"50%", "50%25"},
		{"q?#", "q%3F%23"},
		{"\xc3\xa9", "%C3%A9"},
		{"\xe6\x97\xa5\xe6\x9c\xac", "%E6%97%A5%E6%9C%AC"},
		{"AZaz09-._~", "AZaz09-._~"},
		{"", ""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *enc = url_encode_segment(cases[i].in);

		is_str(enc, cases[i].out, "url_encode_segment(\"%s\")", cases[i].in);
		free(enc);
	}
}

/* Every byte value but NUL, in one string, comes back unchanged. */
static void
test_all_bytes(void)
{
	char in[256];
	char *enc, *dec;

	for (int i = 1; i < 256; i++)
		in[i - 1] = (char)i;
	in[255] = '\0';
	enc = url_encode_segment(in);
	dec = url_decode_segment(enc);
	ok(only_unreserved_or_escapes(enc), "bytes 1..255 encode to unreserved and %%XX only");
	ok(dec != NULL && strcmp(dec, in) == 0, "bytes 1..255 survive encode then decode");
	free(enc);
	free(dec);
}

static void
test_decode(void)
{
	static const char *const bad[] = {"%",	 "%4",	"%zz", "%00",	"a%",
					  "a%4", "%g1", "%1g", "abc%2", "x%00y"};
	static const struct {
		const char *in, *out;
	} good[] = {
		{"a%2fb", "a/b"},   {"a%2Fb", "a/b"},	{"a+b", "a+b"}, {"%C3%a9", "\xc3\xa9"},
		{"%41%42c", "ABc"}, {"plain", "plain"}, {"", ""},
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *dec = url_decode_segment(bad[i]);

		ok(dec == NULL, "url_decode_segment(\"%s\") is refused", bad[i]);
		free(dec);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char *dec = url_decode_segment(good[i].in);

		is_str(dec, good[i].out, "url_decode_segment(\"%s\")", good[i].in);
		free(dec);
	}
}

static void
test_loopback(void)
{
	static const char *const yes[] = {"127.0.0.1", "127.255.255.254", "127.1.2.3", "::1",
					  "[::1]",     "localhost",	  "LOCALHOST", "LocalHost"};
	static const char *const no[] = {"128.0.0.1",
					 "10.0.0.1",
					 "126.255.255.255",
					 "0.0.0.0",
					 "example.com",
					 "127.0.0.1.example.com",
					 "localhost.example.com",
					 "::2",
					 "[::2]",
					 "::",
					 "[127.0.0.1]",
					 ""};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		ok(url_is_loopback_host(yes[i]), "\"%s\" is a loopback host", yes[i]);
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		ok(!url_is_loopback_host(no[i]), "\"%s\" is not a loopback host", no[i]);
}

static void
test_check_base(void)
{
	static const char *const accepted[] = {
		"https://ip-messaging.twilio.com",
		"https://chat.example.org:8443",
		"https://ip-messaging.twilio.com/",
		"http://127.0.0.1:8080",
		"http://127.0.0.1",
		"http://[::1]:9",
		"http://localhost",
		"http://localhost:5000/",
	};
	static const char *const refused[] = {
		"http://example.com",
		"http://10.0.0.1:8080",
		"http://127.0.0.1.example.com",
		"https://ip-messaging.twilio.com/v1",
		"https://ip-messaging.twilio.com/v1/Services",
		"http://127.0.0.1:8080/prefix",
		"https://ip-messaging.twilio.com?x=1",
		"https://ip-messaging.twilio.com/?x=1",
		"https://ip-messaging.twilio.com#frag",
		"https://user:pass@ip-messaging.twilio.com",
		"ftp://ip-messaging.twilio.com",
		"not a url",
		"",
	};
	char err[256];

	for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
		err[0] = '\0';
		ok(url_check_base(accepted[i], err, sizeof(err)), "base \"%s\" is accepted",
		   accepted[i]);
	}
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		bool res;

		err[0] = '\0';
		res = url_check_base(refused[i], err, sizeof(err));
		ok(!res && err[0] != '\0', "base \"%s\" is refused with a reason (\"%s\")",
		   refused[i], err);
	}
	err[0] = '\0';
	if (!url_check_base("http://example.com", err, sizeof(err)))
		ok(strstr(err, "https") != NULL, "plain http refusal points to https: \"%s\"", err);
	else
		ok(false, "plain http refusal points to https");
}

static void
test_first_page(void)
{
	char *u;

	u = url_first_page("https://chat.example.com", "v1", SERVICE, "alice", 50);
	is_str(u,
	       "https://chat.example.com/v1/Services/" SERVICE "/Users/alice/Channels?PageSize=50",
	       "first page URL for a plain identity");
	free(u);

	u = url_first_page("https://chat.example.com/", "v1", SERVICE, "alice", 50);
	is_str(u,
	       "https://chat.example.com/v1/Services/" SERVICE "/Users/alice/Channels?PageSize=50",
	       "a trailing slash on the base is tolerated");
	free(u);

	u = url_first_page("http://127.0.0.1:8080", "v1", SERVICE, "a/b c@d.e+f%?#\xc3\xa9", 1000);
	is_str(u,
	       "http://127.0.0.1:8080/v1/Services/" SERVICE
	       "/Users/a%2Fb%20c%40d.e%2Bf%25%3F%23%C3%A9/Channels?PageSize=1000",
	       "the identity is encoded as one path segment");
	free(u);

	u = url_first_page("http://[::1]:9/", "v1", SERVICE, "US0123456789abcdef0123456789abcdef",
			   1);
	is_str(u,
	       "http://[::1]:9/v1/Services/" SERVICE
	       "/Users/US0123456789abcdef0123456789abcdef/Channels?PageSize=1",
	       "a User SID and PageSize=1 on an IPv6 base");
	free(u);

	u = url_first_page("https://chat.twilio.com", "v2", SERVICE, "alice", 50);
	is_str(u,
	       "https://chat.twilio.com/v2/Services/" SERVICE "/Users/alice/Channels?PageSize=50",
	       "Chat v2: the version is the path's first segment");
	free(u);
	u = url_user_listing("https://conversations.twilio.com", "v1", SERVICE, "a/b",
			     "Conversations", 50);
	is_str(u,
	       "https://conversations.twilio.com/v1/Services/" SERVICE
	       "/Users/a%2Fb/Conversations?PageSize=50",
	       "Conversations: a user's conversations, the user encoded");
	free(u);
	u = url_user_listing("https://conversations.twilio.com/", "v1", NULL, "alice",
			     "Conversations", 50);
	is_str(u, "https://conversations.twilio.com/v1/Users/alice/Conversations?PageSize=50",
	       "the account's default conversation service: /v1/Users/...");
	free(u);
	u = url_join("http://127.0.0.1:9/", "/v1/Configuration");
	is_str(u, "http://127.0.0.1:9/v1/Configuration", "url_join: one slash between");
	free(u);
}

static void
test_same_listing(void)
{
	const char *first_ab =
		"https://chat.example.com/v1/Services/" SERVICE "/Users/a%2Fb/Channels?PageSize=50";
	char *first = url_first_page("https://chat.example.com", "v1", SERVICE, "alice@x.org", 50);
	char *first_local = url_first_page("http://127.0.0.1:8080", "v1", SERVICE, "bob", 50);
	static const char *const same[] = {
		"https://chat.example.com/v1/Services/" SERVICE
		"/Users/alice%40x.org/Channels?PageSize=50&Page=1&PageToken=PT1",
		"https://chat.example.com/v1/Services/" SERVICE "/Users/alice%40x.org/Channels",
	};
	static const char *const different[] = {
		"https://evil.example.com/v1/Services/" SERVICE
		"/Users/alice%40x.org/Channels?PageSize=50&PageToken=PT1",
		"https://chat.example.com:8443/v1/Services/" SERVICE
		"/Users/alice%40x.org/Channels?PageSize=50&PageToken=PT1",
		"http://chat.example.com/v1/Services/" SERVICE
		"/Users/alice%40x.org/Channels?PageSize=50&PageToken=PT1",
		"https://chat.example.com/v1/Services/" SERVICE
		"/Users/mallory/Channels?PageSize=50&PageToken=PT1",
		"https://chat.example.com/v1/Services/" OTHER_SERVICE
		"/Users/alice%40x.org/Channels?PageSize=50&PageToken=PT1",
		"https://chat.example.com/v1/Services/" SERVICE
		"/Users/alice%40x.org/Channels/extra?PageSize=50&PageToken=PT1",
		"https://chat.example.com/v1/Services/" SERVICE
		"/Users/alice%40x.org/Channels/?PageSize=50&PageToken=PT1",
		"https://chat.example.com/v2/Services/" SERVICE
		"/Users/alice%40x.org/Channels?PageSize=50&PageToken=PT1",
		"https://chat.example.com/v1/Services/" SERVICE "/Users/alice%40x.org",
		"not a url",
	};

	char *first_v2 =
		url_first_page("https://chat.twilio.com", "v2", SERVICE, "alice@x.org", 50);

	ok(url_same_listing("https://chat.twilio.com/v2/Services/" SERVICE
			    "/Users/alice%40x.org/Channels?PageSize=50&PageToken=PT1",
			    first_v2),
	   "Chat v2: a next page of the same v2 listing");
	ok(!url_same_listing("https://chat.twilio.com/v1/Services/" SERVICE
			     "/Users/alice%40x.org/Channels?PageSize=50&PageToken=PT1",
			     first_v2),
	   "Chat v2: a next page under /v1 on the same host is another listing");
	free(first_v2);
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
		ok(url_same_listing(same[i], first), "same listing: %s", same[i]);
	ok(url_same_listing("https://chat.example.com/v1/Services/" SERVICE
			    "/Users/alice%40x.org/Channels?PageSize=50&PageToken=PT2",
			    first),
	   "same listing with an extra PageToken");
	ok(url_same_listing("https://CHAT.example.com/v1/Services/" SERVICE
			    "/Users/alice%40x.org/Channels?PageToken=PT2",
			    first),
	   "the host compares without case");
	ok(url_same_listing("https://chat.example.com:443/v1/Services/" SERVICE
			    "/Users/alice%40x.org/Channels?PageToken=PT2",
			    first),
	   "an explicit default port is the same port");
	ok(url_same_listing("https://chat.example.com/v1/Services/" SERVICE
			    "/Users/alice@x.org/Channels?PageToken=PT2",
			    first),
	   "an unencoded '@' is the same segment as %%40");
	ok(url_same_listing("https://chat.example.com/v1/Services/" SERVICE
			    "/Users/a%2fb/Channels?PageSize=50&PageToken=PT1",
			    first_ab),
	   "percent escapes compare without case (%%2f vs %%2F)");
	ok(!url_same_listing("https://chat.example.com/v1/Services/" SERVICE
			     "/Users/alice%40X.org/Channels?PageSize=50",
			     first),
	   "a user differing only in case is another user");
	for (size_t i = 0; i < sizeof(different) / sizeof(different[0]); i++)
		ok(!url_same_listing(different[i], first), "another listing: %s", different[i]);

	ok(!url_same_listing("https://chat.example.com/v1/Services/" SERVICE
			     "/Users/a/b/Channels?PageSize=50&PageToken=PT1",
			     first_ab),
	   "user \"a/b\" (%%2F) is not the path .../Users/a/b/Channels");
	ok(!url_same_listing(first_ab, "https://chat.example.com/v1/Services/" SERVICE
				       "/Users/a/b/Channels?PageSize=50"),
	   "nor the other way round");

	ok(url_same_listing("http://127.0.0.1:8080/v1/Services/" SERVICE
			    "/Users/bob/Channels?PageSize=50&PageToken=x",
			    first_local),
	   "same listing on a loopback base with a port");
	ok(!url_same_listing("http://127.0.0.1:8081/v1/Services/" SERVICE
			     "/Users/bob/Channels?PageSize=50&PageToken=x",
			     first_local),
	   "another port on a loopback base");
	ok(!url_same_listing("http://localhost:8080/v1/Services/" SERVICE
			     "/Users/bob/Channels?PageSize=50&PageToken=x",
			     first_local),
	   "localhost is not the same host as 127.0.0.1");
	ok(url_same_listing(first, first), "a URL is the same listing as itself");
	free(first);
	free(first_local);
}

/*
 * An identity of "." or ".." passes url_encode_segment unchanged (dots are
 * unreserved), so url_first_page yields a dot-segment that URL normalization
 * (curl's, and url_same_listing's own) removes: user ".." would list
 * /v1/Services/IS.../Channels, the service's channels, not the user's.
 */
static void
test_dot_segments(void)
{
	const char *service_list =
		"https://chat.example.com/v1/Services/" SERVICE "/Channels?PageSize=50";
	char *dotdot = url_first_page("https://chat.example.com", "v1", SERVICE, "..", 50);
	char *dot = url_first_page("https://chat.example.com", "v1", SERVICE, ".", 50);
	char *dots3 = url_first_page("https://chat.example.com", "v1", SERVICE, "...", 50);

	is_str(dots3,
	       "https://chat.example.com/v1/Services/" SERVICE "/Users/.../Channels?PageSize=50",
	       "identity \"...\" is an ordinary segment");
	ok(strstr(dotdot, "/../") == NULL, "identity \"..\" is not a dot-segment in %s", dotdot);
	ok(!url_same_listing(service_list, dotdot),
	   "user \"..\" does not resolve to the service's channel list");
	ok(strstr(dot, "/./") == NULL, "identity \".\" is not a dot-segment in %s", dot);
	free(dotdot);
	free(dot);
	free(dots3);
}

static void
test_check_proxy(void)
{
	static const char *const good[] = {
		"http://proxy.example:3128",
		"https://proxy.example",
		"socks5://127.0.0.1:1080",
		"socks5h://[::1]:1080",
		"http://user:secret@proxy.example:3128/",
	};
	static const struct {
		const char *url, *why;
	} bad[] = {
		{"ftp://proxy.example", "scheme must be http, https, socks5 or socks5h"},
		{"proxy.example:3128", "not a valid absolute URL"},
		{"http://proxy.example/path",
		 "a path is not allowed (give scheme, host and port only)"},
		{"http://proxy.example/?q=1", "a query or fragment is not allowed"},
	};
	char err[128];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ok(url_check_proxy(good[i], err, sizeof(err)), "proxy: %s is accepted", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		ok(!url_check_proxy(bad[i].url, err, sizeof(err)), "proxy: %s is refused",
		   bad[i].url);
		is_str(err, bad[i].why, "proxy: %s: the reason", bad[i].url);
	}
}

static void
test_seen(void)
{
	struct url_seen *s = url_seen_new(2);

	ok(!url_seen_has(s, "https://x/p1"), "seen: nothing at first");
	url_seen_add(s, "https://x/p1");
	ok(url_seen_has(s, "https://x/p1"), "seen: a page fetched is remembered");
	ok(!url_seen_has(s, "https://x/p2"), "seen: another is not");
	url_seen_add(s, "https://x/p2");
	url_seen_add(s, "https://x/p3");
	ok(url_seen_has(s, "https://x/p2"), "seen: up to its capacity");
	ok(!url_seen_has(s, "https://x/p3"), "seen: and no further");
	url_seen_clear(s);
	ok(!url_seen_has(s, "https://x/p1"), "seen: cleared for the next listing");
	url_seen_free(s);
	url_seen_free(NULL);
	ok(true, "url_seen_free(NULL) does nothing");
}

/* url_regional(base, region, edge) is want. */
static void
regional(const char *base, const char *region, const char *edge, const char *want)
{
	char *got = url_regional(base, region, edge);

	is_str(got, want, "regional %s, region %s, edge %s", base, region ? region : "-",
	       edge ? edge : "-");
	free(got);
}

static void
test_regional(void)
{
	regional("https://ip-messaging.twilio.com", NULL, NULL, "https://ip-messaging.twilio.com");
	regional("https://ip-messaging.twilio.com", "ie1", NULL,
		 "https://ip-messaging.ie1.twilio.com");
	regional("https://ip-messaging.twilio.com", "au1", "sydney",
		 "https://ip-messaging.sydney.au1.twilio.com");
	regional("https://ip-messaging.twilio.com", "", "dublin",
		 "https://ip-messaging.dublin.us1.twilio.com");
	regional("https://ip-messaging.twilio.com/v1/Services/IS1/Users/u/Channels?PageSize=50",
		 "ie1", "dublin",
		 "https://ip-messaging.dublin.ie1.twilio.com/v1/Services/IS1/Users/u/Channels?"
		 "PageSize=50");
	regional("https://chat.sydney.au1.twilio.com/v2", NULL, NULL,
		 "https://chat.sydney.au1.twilio.com/v2");
	regional("https://chat.sydney.au1.twilio.com/v2", "ie1", NULL,
		 "https://chat.sydney.ie1.twilio.com/v2");
	regional("https://chat.au1.twilio.com/v2", NULL, "tokyo",
		 "https://chat.tokyo.au1.twilio.com/v2");
	regional("http://127.0.0.1:8080", "ie1", "dublin", "http://127.0.0.1:8080");
	regional("https://twilio.com.evil.example/v1", "ie1", NULL,
		 "https://twilio.com.evil.example/v1");
	ok(url_label_ok("us1") && url_label_ok("sao-paulo"), "region and edge names");
	ok(!url_label_ok("") && !url_label_ok("IE1") && !url_label_ok("a.b") &&
		   !url_label_ok("-x") && !url_label_ok("x/y"),
	   "not names: empty, upper case, a dot, a leading '-', a slash");
}

int
main(void)
{
	test_round_trip();
	test_encode_exact();
	test_all_bytes();
	test_decode();
	test_loopback();
	test_check_base();
	test_first_page();
	test_same_listing();
	test_dot_segments();
	test_check_proxy();
	test_seen();
	test_regional();
	return tap_done();
}
