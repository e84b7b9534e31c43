/*
 * fake_twilio.c - a fake of Twilio's user-channel lists for tests
 *
 * Serves GET /v1/Services/{ServiceSid}/Users/{UserSid}/Channels (IP Messaging
 * v1) on loopback only, with deterministic data derived from (seed, service,
 * user, slot), Twilio-style paging, HTTP basic auth and injectable faults.  It
 * serves the dimensions too, consistent with those memberships: the service
 * (/v1/Services/{ServiceSid}), its users (.../Users, from --users and
 * --user-count) and the channels of their memberships (.../Channels).  Every
 * path is served under /v2 as well, as Chat v2 serves it: the same data, with
 * v2's PageSize bounds, fields, status spelling and URLs.  Conversations v1
 * serves the memberships as a user's conversations, in a service or in the
 * account's default one, beside its /v1/Configuration.  With --dump and
 * --dump-* it prints instead the data set it would serve (through the API that
 * --api names), in PostgreSQL COPY text format, so that tests can compare it
 * with what the daemon stored.  With --cache-bodies (for the benchmark) it
 * renders a page once and serves it again from memory.
 *
 * Run with --help for the options.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#define PROGNAME "fake_twilio"
#define DEFAULT_LISTEN "127.0.0.1:0"
#define DEFAULT_ACCOUNT_SID "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DEFAULT_AUTH_TOKEN "test-token"
#define LINK_BASE "https://ip-messaging.twilio.com/v1/Services/"
#define V2_LINK_BASE "https://chat.twilio.com/v2/Services/"
#define CONVERSATIONS_BASE "https://conversations.twilio.com/v1"
#define DEFAULT_CHAT_SERVICE_SID "IS00000000000000000000000000000def"
#define FOREIGN_HOST "127.0.0.2"
#define ERROR_INFO_BASE "https://www.twilio.com/docs/errors/"

#define STR_(x) #x
#define STR(x) STR_(x)

#define MAX_CHANNELS 100000
#define MAX_USERS 100000
/* The channel types of the Type filter, as bits. */
#define TYPE_PUBLIC 1u
#define TYPE_PRIVATE 2u
#define MAX_PAGE_SIZE 1000
/* Chat v2's PageSize bounds: a user's channels, and the users and channels listings. */
#define V2_MAX_MEMBERSHIPS_PAGE_SIZE 50
#define V2_MAX_LISTING_PAGE_SIZE 100
/* Conversations' PageSize bound of a user's conversations. */
#define CONVERSATIONS_MAX_PAGE_SIZE 50
#define DEFAULT_PAGE_SIZE 50
#define MAX_PAGE 100000000
#define MAX_LATENCY_MS 600000
#define MAX_FAULT_RATES 8
#define MAX_THREADS 64
#define DEFAULT_THREADS 4
#define COUNTER_BUCKETS 4096
#define COUNTER_TAG_RATE (-1L)
#define TOKEN_FILE_MAX 4096
/* Rough sizes of one channel entry in JSON, to size a page body once. */
#define ENTRY_JSON_ESTIMATE 640
#define EXTRA_JSON_ESTIMATE 400
/*
 * The deep and longstr faults: beyond chatsyncd's default limits.max_depth
 * (32) and max_string (65536).
 */
#define DEEP_NESTING 100
#define LONG_STRING_BYTES 100000

/* Unknown fields added by --extra-fields; a client must skip all of them. */
#define EXTRA_ENTRY_HEAD                                                                           \
	"\"friendly_name\":\"brace } bracket ] quote \\\" backslash \\\\ "                         \
	"\\u00e9 \\ud83d\\ude00\",\"date_created\":\"2015-07-30T20:00:00Z\","
#define EXTRA_ENTRY_ATTRIBUTES                                                                     \
	",\"attributes\":{\"x\":[1,2.5,{\"y\":null}],\"z\":true,\"n\":-1.5e3,\"e\":{},"            \
	"\"s\":\"[{\\\"not\\\":\\\"json\\\"}]\"},\"roles\":[]"
/* Unknown fields that --extra-fields adds to the service, a user or a channel. */
#define EXTRA_DIMENSION_FIELDS                                                                     \
	",\"extra\":{\"x\":[1,2.5,{\"y\":null}],\"z\":true,\"n\":-1.5e3,\"e\":{},"                 \
	"\"s\":\"[{\\\"not\\\":\\\"json\\\"}]\"},\"roles\":[]"
#define EXTRA_META_HEAD "\"total\":null,\"extra\":{\"a\":[{\"b\":[]}],\"c\":\"\\u00e9\\\"\\\\\"},"
#define EXTRA_META_TAIL ",\"more\":[true,false,null,0.0,{\"key\":\"channels\"}]"

/* ---------------------------------------------------------------------------
 * Memory and growable buffers
 */

static void
out_of_memory(void)
{
	fputs(PROGNAME ": out of memory\n", stderr);
	exit(70);
}

static void *
xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (p == NULL)
		out_of_memory();
	return p;
}

static void *
xrealloc(void *ptr, size_t size)
{
	void *p = realloc(ptr, size ? size : 1);

	if (p == NULL)
		out_of_memory();
	return p;
}

static char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

/* A growable, always NUL-terminated byte buffer; all of it zero is empty. */
struct buf {
	char *data;
	size_t len;
	size_t cap;
};

static void
buf_reserve(struct buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;
	size_t cap = b->cap ? b->cap : 256;

	if (need <= b->cap)
		return;
	while (cap < need)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

static void
buf_add(struct buf *b, const char *s, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void
buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void
buf_addc(struct buf *b, char c)
{
	buf_reserve(b, 1);
	b->data[b->len++] = c;
	b->data[b->len] = '\0';
}

static void
buf_add_u64(struct buf *b, uint64_t v)
{
	char tmp[24];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	buf_add(b, tmp + i, sizeof(tmp) - i);
}

/* Hands the contents over to the caller (to free()) and empties b. */
static char *
buf_take(struct buf *b)
{
	char *data;

	buf_reserve(b, 0);
	data = b->data;
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	return data;
}

static void
buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

static void
buf_add_json_string(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	buf_addc(b, '"');
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			buf_addc(b, '\\');
			buf_addc(b, (char)c);
		} else if (c < 0x20) {
			char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

			buf_add(b, esc, sizeof(esc));
		} else {
			buf_addc(b, (char)c);
		}
	}
	buf_addc(b, '"');
}

/* PostgreSQL COPY text format: backslash, tab, newline and CR escaped. */
static void
buf_add_copy_text(struct buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\')
			buf_adds(b, "\\\\");
		else if (*s == '\t')
			buf_adds(b, "\\t");
		else if (*s == '\n')
			buf_adds(b, "\\n");
		else if (*s == '\r')
			buf_adds(b, "\\r");
		else
			buf_addc(b, *s);
	}
}

static bool
is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

/* Percent-encodes s as one path segment, keeping only unreserved characters. */
static void
buf_add_pct_segment(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (is_unreserved(c)) {
			buf_addc(b, (char)c);
		} else {
			char esc[3] = {'%', hex[c >> 4], hex[c & 15]};

			buf_add(b, esc, sizeof(esc));
		}
	}
}

/* ---------------------------------------------------------------------------
 * Small parsers
 */

static int
hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Whether the n bytes at s start with %XX. */
static bool
is_pct_escape(const char *s, size_t n)
{
	return n >= 3 && s[0] == '%' && hex_value((unsigned char)s[1]) >= 0 &&
	       hex_value((unsigned char)s[2]) >= 0;
}

/*
 * Percent-decodes the n bytes at s into a new string (caller frees).  A '%'
 * not followed by two hex digits stays as it is.  Returns NULL if the result
 * would contain a NUL byte.
 */
static char *
pct_decode(const char *s, size_t n, bool plus_is_space)
{
	char *out = xmalloc(n + 1);
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '%' && is_pct_escape(s + i, n - i)) {
			c = (unsigned char)(hex_value((unsigned char)s[i + 1]) * 16 +
					    hex_value((unsigned char)s[i + 2]));
			i += 2;
		} else if (c == '+' && plus_is_space) {
			c = ' ';
		}
		if (c == '\0') {
			free(out);
			return NULL;
		}
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return out;
}

/* Parses a plain decimal number (digits only) no greater than max. */
static bool
parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (s == NULL || *s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (v > (max - (uint64_t)(*s - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

static bool
is_service_sid(const char *s)
{
	if (strlen(s) != 34 || s[0] != 'I' || s[1] != 'S')
		return false;
	for (size_t i = 2; i < 34; i++) {
		if (hex_value((unsigned char)s[i]) < 0)
			return false;
	}
	return true;
}

static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decodes base64 into a new buffer (caller frees); NULL if s is not base64. */
static char *
b64_decode(const char *s, size_t *out_len)
{
	size_t n = strlen(s);
	char *out = xmalloc(n / 4 * 3 + 4);
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	bool padding = false;

	for (size_t i = 0; i < n; i++) {
		int v = b64_value((unsigned char)s[i]);

		if (s[i] == '=') {
			padding = true;
			continue;
		}
		if (v < 0 || padding) {
			free(out);
			return NULL;
		}
		acc = ((acc << 6) | (uint32_t)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	out[o] = '\0';
	*out_len = o;
	return out;
}

/* ---------------------------------------------------------------------------
 * Configuration
 */

enum fault_kind {
	FAULT_429,
	FAULT_429R,
	FAULT_500,
	FAULT_503,
	FAULT_400,
	FAULT_403,
	FAULT_404,
	FAULT_MALFORMED,
	FAULT_SHAPE,
	FAULT_NOMETA,
	FAULT_TRUNCATE,
	FAULT_CUT,
	FAULT_REDIRECT,
	FAULT_BADROW,
	FAULT_ODDSTATUS,
	FAULT_LOOP,
	FAULT_FOREIGN,
	FAULT_DEEP,
	FAULT_LONGSTR,
	FAULT_TYPEDRIFT,
};

/* How a fault kind is matched: by a request counter, always, or by page. */
enum fault_match {
	MATCH_COUNT,
	MATCH_ALWAYS,
	MATCH_PAGE,
};

static const struct {
	const char *name;
	enum fault_kind kind;
	enum fault_match match;
	bool modifier; /* changes a normal page instead of replacing the response */
} fault_kinds[] = {
	{"429", FAULT_429, MATCH_COUNT, false},
	{"429r", FAULT_429R, MATCH_COUNT, false},
	{"500", FAULT_500, MATCH_COUNT, false},
	{"503", FAULT_503, MATCH_COUNT, false},
	{"400", FAULT_400, MATCH_COUNT, false},
	{"403", FAULT_403, MATCH_COUNT, false},
	{"cut", FAULT_CUT, MATCH_COUNT, false},
	{"404", FAULT_404, MATCH_ALWAYS, false},
	{"malformed", FAULT_MALFORMED, MATCH_PAGE, false},
	{"shape", FAULT_SHAPE, MATCH_PAGE, false},
	{"nometa", FAULT_NOMETA, MATCH_PAGE, false},
	{"truncate", FAULT_TRUNCATE, MATCH_PAGE, false},
	{"redirect", FAULT_REDIRECT, MATCH_PAGE, false},
	{"badrow", FAULT_BADROW, MATCH_PAGE, true},
	{"oddstatus", FAULT_ODDSTATUS, MATCH_PAGE, true},
	{"loop", FAULT_LOOP, MATCH_PAGE, true},
	{"foreign", FAULT_FOREIGN, MATCH_PAGE, true},
	{"deep", FAULT_DEEP, MATCH_PAGE, true},
	{"longstr", FAULT_LONGSTR, MATCH_PAGE, true},
	{"typedrift", FAULT_TYPEDRIFT, MATCH_PAGE, true},
};

#define N_FAULT_KINDS (sizeof(fault_kinds) / sizeof(fault_kinds[0]))

/* What a request asks for. */
enum endpoint {
	EP_MEMBERSHIPS,	  /* /vN/Services/{S}/Users/{U}/Channels, or .../Conversations */
	EP_SERVICE,	  /* /vN/Services/{S} */
	EP_USERS,	  /* /vN/Services/{S}/Users */
	EP_CHANNELS,	  /* /vN/Services/{S}/Channels */
	EP_CONFIGURATION, /* /v1/Configuration (Conversations) */
};

#define N_ENDPOINTS (EP_CONFIGURATION + 1)

/* The APIs served, each under its own version segment: the same data, each in its dialect. */
enum api {
	API_IP_MESSAGING_V1,
	API_CHAT_V2,
	API_CONVERSATIONS_V1,
};

/*
 * Conversations shares /v1 with IP Messaging: it answers a user's
 * conversations and /v1/Configuration there, IP Messaging everything else
 * (the service, users and channels keep IP Messaging's dialect).
 */
static const struct api_spec {
	enum api id;
	const char *name;	       /* as --api takes it */
	const char *version;	       /* the first path segment */
	const char *link_base;	       /* of resource URLs and links, before the service SID */
	const char *memberships;       /* the collection of a user's memberships */
	const char *memberships_key;   /* the key of their array */
	uint64_t max_memberships_page; /* PageSize bound of .../Users/{U}/<memberships> */
	uint64_t max_listing_page;     /* of .../Users and .../Channels */
	const char *not_participating; /* the spelling of that status, NULL without statuses */
} apis[] = {
	{API_IP_MESSAGING_V1, "ip_messaging_v1", "v1", LINK_BASE, "Channels", "channels",
	 MAX_PAGE_SIZE, MAX_PAGE_SIZE, "not_participating"},
	{API_CHAT_V2, "chat_v2", "v2", V2_LINK_BASE, "Channels", "channels",
	 V2_MAX_MEMBERSHIPS_PAGE_SIZE, V2_MAX_LISTING_PAGE_SIZE, "notParticipating"},
	{API_CONVERSATIONS_V1, "conversations", "v1", CONVERSATIONS_BASE "/Services/",
	 "Conversations", "conversations", CONVERSATIONS_MAX_PAGE_SIZE, MAX_PAGE_SIZE, NULL},
};

#define N_APIS (sizeof(apis) / sizeof(apis[0]))

/* The names that stand for a dimension endpoint in faults and the request log. */
static const char *const pseudo_users[] = {
	[EP_MEMBERSHIPS] = NULL,
	[EP_SERVICE] = "@service",
	[EP_USERS] = "@users",
	[EP_CHANNELS] = "@channels",
	[EP_CONFIGURATION] = "@configuration",
};

static bool
is_pseudo_user(const char *name)
{
	for (size_t i = 0; i < sizeof(pseudo_users) / sizeof(pseudo_users[0]); i++) {
		if (pseudo_users[i] != NULL && strcmp(pseudo_users[i], name) == 0)
			return true;
	}
	return false;
}

struct fault {
	enum fault_kind kind;
	enum fault_match match;
	bool modifier;
	char *user;    /* "*" matches every request, a pseudo-user its dimension endpoint */
	bool any_page; /* ARG was "*" */
	uint64_t arg;  /* request count or page index */
	bool on_page;  /* a count fault given as N@PAGE: counts requests for that page only */
	uint64_t page;
};

struct fault_rate {
	unsigned status;
	double probability;
};

/* A user of the service, from --users or --user-count. */
struct user {
	char *identity;
	uint64_t hash; /* of the seed and the identity: the SID and the user's dimension data */
	char sid[35];
};

struct config {
	char *listen;
	const char *port_file;
	char *account_sid;
	char *auth_token;
	uint64_t seed;
	uint64_t channels;
	uint64_t variant;
	uint64_t bump; /* --bump: the slot + 1, 0 for none */
	uint64_t latency_ms;
	uint64_t fault_seed;
	uint64_t threads;
	const char *log_path;
	struct fault *faults;
	size_t n_faults;
	struct fault_rate rates[MAX_FAULT_RATES];
	size_t n_rates;
	bool extra_fields;
	bool cache_bodies; /* --cache-bodies: a page rendered once per Host and target */
	const char **dump_users;
	size_t n_dump;
	const char *service;
	const char *default_service; /* the account's default conversation service */
	uint64_t switch_after;	     /* --default-service-switch: listings served before */
	const char *switch_to;	     /* the default after them, or NULL */
	bool dump_unscoped; /* --dump of the default service's /v1/Users/{U}/Conversations */
	uint64_t dump_page_size;
	const struct api_spec *api; /* whose dialect the dumps print */
	bool dump_service;
	bool dump_user_rows;
	bool dump_channel_rows;
	struct user *users; /* in listing order: --users first, then --user-count */
	size_t n_users;
	uint64_t user_count;
	const struct user **by_sid; /* the users sorted by SID */
};

static void
config_init(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->listen = xstrdup(DEFAULT_LISTEN);
	cfg->account_sid = xstrdup(DEFAULT_ACCOUNT_SID);
	cfg->auth_token = xstrdup(DEFAULT_AUTH_TOKEN);
	cfg->seed = 1;
	cfg->channels = 20;
	cfg->threads = DEFAULT_THREADS;
	cfg->dump_page_size = DEFAULT_PAGE_SIZE;
	cfg->default_service = DEFAULT_CHAT_SERVICE_SID;
	cfg->api = &apis[API_IP_MESSAGING_V1];
}

static void
config_free(struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_faults; i++)
		free(cfg->faults[i].user);
	free(cfg->faults);
	for (size_t i = 0; i < cfg->n_users; i++)
		free(cfg->users[i].identity);
	free(cfg->users);
	free(cfg->by_sid);
	free(cfg->dump_users);
	free(cfg->listen);
	free(cfg->account_sid);
	free(cfg->auth_token);
}

/* The help text is laid out as it is printed. */
/* clang-format off */
static void
usage(FILE *out)
{
	fputs("usage: " PROGNAME " [OPTION]...\n"
	      "Fake of Twilio's IP Messaging v1: a user's channels (memberships) at\n"
	      "GET /v1/Services/{ServiceSid}/Users/{UserSid}/Channels, and the dimensions:\n"
	      "the service at /v1/Services/{ServiceSid}, its users at .../Users and its\n"
	      "channels at .../Channels[?Type=public|private[&Type=...]].  The same paths\n"
	      "under /v2 serve the same data as Chat v2 does (see Chat v2 below), and\n"
	      "Conversations v1 serves it as a user's conversations at\n"
	      "/v1/Services/{ChatServiceSid}/Users/{UserSid}/Conversations and\n"
	      "/v1/Users/{UserSid}/Conversations, with /v1/Configuration (see Conversations).\n\n"
	      "  --listen ADDR:PORT      loopback address to listen on (default " DEFAULT_LISTEN
	      ";\n"
	      "                          port 0 picks a free port; [::1]:PORT for IPv6)\n"
	      "  --port-file FILE        write the chosen port and a newline to FILE\n"
	      "  --account-sid SID       basic-auth user (default " DEFAULT_ACCOUNT_SID ")\n"
	      "  --auth-token TOKEN      basic-auth password (default " DEFAULT_AUTH_TOKEN ")\n"
	      "  --auth-token-file FILE  read the auth token from FILE\n"
	      "  --seed N                data seed (default 1)\n"
	      "  --channels M            channel slots per user, 0..100000 (default 20)\n"
	      "  --variant V             data variant (default 0): V > 0 removes the memberships\n"
	      "                          of slots i % 10 == V % 10 and changes others; renames\n"
	      "                          the service, users k % 3 == V % 3 and channels\n"
	      "                          i % 5 == V % 5 (appending \" (variant V)\"); odd V\n"
	      "                          deletes users k % 4 == 3 and channels i % 20 == V % 10,\n"
	      "                          even V none: V=1 renames and deletes, V=2 brings those\n"
	      "                          back (k: a user's index in the set, i: a slot)\n"
	      "  --bump SLOT             raise by one the unread count of every user's\n"
	      "                          membership in slot SLOT (from 0): one page changes\n"
	      "  --users ID[,ID]...      users of the service, listed in this order (repeatable;\n"
	      "                          an identity may not contain ',' nor start with '@')\n"
	      "  --user-count N          N more users after those: user-0001 .. user-N\n"
	      "  --latency-ms MS         delay every response by MS milliseconds\n"
	      "  --threads N             worker threads when latency is 0 (default 4)\n"
	      "  --log FILE              append status, user, page, target per request\n"
	      "  --fault KIND:USER:ARG   inject a fault (repeatable); USER: a user as requested\n"
	      "                          (identity or SID) for its memberships, '*' for every\n"
	      "                          request, or @service, @users, @channels,\n"
	      "                          @configuration for a dimension (whose page is 0 for\n"
	      "                          @service and @configuration):\n"
	      "                          429, 429r, 500, 503, 400, 403, cut with ARG = number of\n"
	      "                          requests, or N@PAGE for the first N requests of PAGE;\n"
	      "                          404 (ARG ignored); malformed, shape, nometa, truncate,\n"
	      "                          redirect, badrow, oddstatus, loop, foreign, deep,\n"
	      "                          longstr, typedrift with ARG = page or '*'\n"
	      "                          typedrift: every entry's status a number and its\n"
	      "                          unread_messages_count a string\n"
	      "                          400: an expired PageToken; cut: a transfer cut short;\n"
	      "                          redirect: 302 to " FOREIGN_HOST " on the same port;\n"
	      "                          deep: an entry nested " STR(DEEP_NESTING) " levels deep;\n"
	      "                          longstr: an entry with a " STR(LONG_STRING_BYTES) "-byte\n"
	      "                          string\n"
	      "  --fault-rate KIND=P[,KIND=P]  random 429/500/503 with probability P\n"
	      "  --fault-seed N          seed of the random faults (default 0)\n"
	      "  --extra-fields          add unknown fields to entries and meta\n"
	      "  --cache-bodies          bench only: serve repeated pages without rendering\n"
	      "                          them again (a page's body is kept per Host and\n"
	      "                          target; not with --fault, --fault-rate or\n"
	      "                          --default-service-switch)\n"
	      "  --dump USER             print USER's expected rows and exit (repeatable)\n"
	      "  --service IS...         the service of --dump\n"
	      "  --default-service IS... the account's default conversation service (default\n"
	      "                          " DEFAULT_CHAT_SERVICE_SID ")\n"
	      "  --default-service-switch N:IS...\n"
	      "                          after N listings at /v1/Users/{U}/Conversations the\n"
	      "                          default is IS..., there and at /v1/Configuration\n"
	      "  --page-size N           page size that --dump assumes for oddstatus faults\n"
	      "                          (default 50; at most 50 with --api chat_v2 or\n"
	      "                          conversations)\n"
	      "  --dump-service          print the service's expected row and exit\n"
	      "  --dump-users            print the listed users' expected rows and exit\n"
	      "  --dump-channels         print the channels' expected rows, both types, and exit\n"
	      "  --api NAME              the API whose answers the dumps print: ip_messaging_v1\n"
	      "                          (default), chat_v2 or conversations (--dump only;\n"
	      "                          without --service that of the default service); the\n"
	      "                          server answers all three\n"
	      "  -h, --help              show this help\n",
	      out);
	fputs("\nUsers: a user's SID is US and 32 hex digits from a hash of the seed and its\n"
	      "identity; /Users/{SID}/Channels serves the memberships of\n"
	      "/Users/{identity}/Channels (also for a user the variant deleted).  Any other\n"
	      "identity has memberships too.\n"
	      "Channels: user k's membership in slot i is in the channel of slot i of k, created\n"
	      "by k, private if i % 3 == 2, with members_count 1 if that membership is joined.\n"
	      "Without Type the channel listing has the public channels only.\n"
	      "Faults on the dimensions: the count kinds, 404, malformed, shape, truncate and\n"
	      "redirect; nometa, badrow, loop and foreign on @users and @channels; deep,\n"
	      "longstr and typedrift on all four; oddstatus on memberships only.  There deep\n"
	      "and longstr add the fields extra_nesting and extra_string; typedrift serves\n"
	      "is_online and read_status_enabled as numbers, type and default_inactive_timer as\n"
	      "7, joined_channels_count, members_count and typing_indicator_timeout as strings.\n"
	      "Chat v2 (/v2/...): PageSize 1.." STR(V2_MAX_MEMBERSHIPS_PAGE_SIZE)
	      " for a user's channels, 1.." STR(V2_MAX_LISTING_PAGE_SIZE) " for the users and\n"
	      "channels (1.." STR(MAX_PAGE_SIZE) " in v1); resource URLs and links on\n"
	      V2_LINK_BASE ".  A user's channels add user_sid\n"
	      "(the SID of the identity asked for, or the SID asked for), url and\n"
	      "notification_level (muted if i % 4 == 3), and spell not_participating\n"
	      "notParticipating; users add a user_bindings link, channels webhooks and\n"
	      "last_message links; the service has no webhooks but pre_webhook_retry_count,\n"
	      "post_webhook_retry_count, media and a bindings link.  Page URLs point back at\n"
	      "the fake under /v2; faults, their counters, latency and the log are shared by\n"
	      "both versions.\n"
	      "Conversations (/v1/.../Conversations): PageSize 1.."
	      STR(CONVERSATIONS_MAX_PAGE_SIZE) ".  Conversation i of a user\n"
	      "is the channel of slot i: conversation_sid its SID, participant_sid the member\n"
	      "SID, unread_messages_count and last_read_message_index the membership's,\n"
	      "friendly_name, unique_name, attributes and date_created the channel's,\n"
	      "created_by the user's identity; user_sid and notification_level as in Chat v2.\n"
	      "conversation_state is active, inactive or closed by slot; a variant's change of\n"
	      "a membership (i % 7 == V % 7, which raises its unread count) moves it to the\n"
	      "next state and bumps date_updated.  timers holds date_inactive and date_closed\n"
	      "for some active slots, date_closed alone for some inactive ones, else nothing.\n"
	      "URLs and links are on " CONVERSATIONS_BASE ", under\n"
	      "/Services/{ChatServiceSid} but for /v1/Users/{UserSid}/Conversations, which\n"
	      "lists the default service's (--default-service); page URLs point back at the\n"
	      "fake.  /v1/Configuration names that service and a messaging service, no timers.\n"
	      "A user's faults and their counters, the variant and the log apply to its\n"
	      "conversations as to its channels: oddstatus makes a conversation_state archived,\n"
	      "typedrift makes it 7 and unread_messages_count a string, deep, longstr and\n"
	      "--extra-fields add fields at the end of an entry as on a dimension.\n"
	      "/v1/Services/{S} and its Users and Channels stay IP Messaging's.\n"
	      "Dumps print tab-separated lines in COPY text format: --dump service_sid, user,\n"
	      "channel_sid, account_sid, member_sid, status (spelled as in v1 for both APIs),\n"
	      "last_consumed_message_index, unread_messages_count, channel_url, member_url, and\n"
	      "with --api chat_v2 notification_level last, with --api conversations\n"
	      "service_sid, user, conversation_sid, account_sid, participant_sid,\n"
	      "conversation_state, notification_level, unread_messages_count,\n"
	      "last_read_message_index, friendly_name, unique_name, created_by, date_created,\n"
	      "date_updated, date_inactive, date_closed (\\N without that timer), url,\n"
	      "conversation_url, participant_url; --dump-service sid, account_sid,\n"
	      "friendly_name, date_created, date_updated, default_service_role_sid,\n"
	      "default_channel_role_sid, default_channel_creator_role_sid, read_status_enabled,\n"
	      "reachability_enabled, typing_indicator_timeout, consumption_report_interval,\n"
	      "url; --dump-users service_sid, sid, identity, account_sid, friendly_name,\n"
	      "role_sid, attributes, is_online, is_notifiable, joined_channels_count,\n"
	      "date_created, date_updated, url; --dump-channels service_sid, sid, account_sid,\n"
	      "friendly_name, unique_name, attributes, type, created_by, members_count,\n"
	      "messages_count, date_created, date_updated, url.  The URLs are those of the API\n"
	      "of --api.  All need --service (but --dump with --api conversations); several\n"
	      "print in that order, memberships last.\n",
	      out);
}
/* clang-format on */

static bool
parse_number_option(const char *name, const char *value, uint64_t max, uint64_t *out)
{
	if (parse_u64(value, max, out))
		return true;
	fprintf(stderr, PROGNAME ": invalid value for --%s: \"%s\" (expected 0..%" PRIu64 ")\n",
		name, value, max);
	return false;
}

static bool
lookup_fault_kind(const char *name, size_t len, struct fault *f)
{
	for (size_t i = 0; i < N_FAULT_KINDS; i++) {
		if (strlen(fault_kinds[i].name) == len &&
		    memcmp(fault_kinds[i].name, name, len) == 0) {
			f->kind = fault_kinds[i].kind;
			f->match = fault_kinds[i].match;
			f->modifier = fault_kinds[i].modifier;
			return true;
		}
	}
	return false;
}

/* Parses the N@PAGE argument of a count fault. */
static bool
parse_count_on_page(const char *arg, struct fault *f)
{
	const char *at = strchr(arg, '@');
	char *count = xstrndup(arg, (size_t)(at - arg));
	bool ok = parse_u64(count, MAX_PAGE, &f->arg) && parse_u64(at + 1, MAX_PAGE, &f->page);

	free(count);
	f->on_page = true;
	return ok;
}

/* Parses KIND:USER:ARG; USER is everything between the first and last colon. */
static bool
parse_fault(const char *spec, struct fault *f)
{
	const char *first = strchr(spec, ':');
	const char *last = strrchr(spec, ':');
	const char *arg;
	bool ok = true;

	memset(f, 0, sizeof(*f));
	if (first == NULL || first == last || last == first + 1)
		goto bad;
	if (!lookup_fault_kind(spec, (size_t)(first - spec), f))
		goto bad;
	arg = last + 1;
	if (f->match == MATCH_PAGE && strcmp(arg, "*") == 0)
		f->any_page = true;
	else if (f->match == MATCH_COUNT && strchr(arg, '@') != NULL)
		ok = parse_count_on_page(arg, f);
	else
		ok = parse_u64(arg, MAX_PAGE, &f->arg);
	if (!ok)
		goto bad;
	f->user = xstrndup(first + 1, (size_t)(last - first - 1));
	if (f->user[0] == '@' && !is_pseudo_user(f->user)) {
		fprintf(stderr,
			PROGNAME ": unknown pseudo-user \"%s\" (@service, @users, @channels, "
				 "@configuration)\n",
			f->user);
		free(f->user);
		return false;
	}
	return true;
bad:
	fprintf(stderr, PROGNAME ": invalid fault \"%s\" (expected KIND:USER:ARG)\n", spec);
	return false;
}

static bool
add_fault(struct config *cfg, const char *spec)
{
	struct fault f;

	if (!parse_fault(spec, &f))
		return false;
	cfg->faults = xrealloc(cfg->faults, (cfg->n_faults + 1) * sizeof(*cfg->faults));
	cfg->faults[cfg->n_faults++] = f;
	return true;
}

static bool
parse_fault_rate_item(const char *item, struct fault_rate *rate)
{
	const char *eq = strchr(item, '=');
	char *end = NULL;
	uint64_t status;
	char *kind;
	bool ok;

	if (eq == NULL)
		return false;
	kind = xstrndup(item, (size_t)(eq - item));
	ok = parse_u64(kind, 999, &status) && (status == 429 || status == 500 || status == 503);
	free(kind);
	if (!ok || eq[1] == '\0')
		return false;
	errno = 0;
	rate->probability = strtod(eq + 1, &end);
	if (errno != 0 || *end != '\0' || !(rate->probability >= 0.0 && rate->probability <= 1.0))
		return false;
	rate->status = (unsigned)status;
	return true;
}

static bool
add_fault_rates(struct config *cfg, const char *spec)
{
	char *copy = xstrdup(spec);
	char *item = copy;
	bool ok = true;

	while (ok && item != NULL) {
		char *comma = strchr(item, ',');

		if (comma != NULL)
			*comma = '\0';
		ok = cfg->n_rates < MAX_FAULT_RATES &&
		     parse_fault_rate_item(item, &cfg->rates[cfg->n_rates]);
		if (ok)
			cfg->n_rates++;
		item = comma != NULL ? comma + 1 : NULL;
	}
	free(copy);
	if (!ok)
		fprintf(stderr,
			PROGNAME ": invalid --fault-rate \"%s\" (expected 429=P,500=P,503=P)\n",
			spec);
	return ok;
}

/* Reads a small file and strips trailing whitespace; NULL on error. */
static char *
read_token_file(const char *path)
{
	struct buf b = {0};
	char chunk[512];
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		fprintf(stderr, PROGNAME ": could not open \"%s\": %s\n", path, strerror(errno));
		return NULL;
	}
	for (;;) {
		size_t n = fread(chunk, 1, sizeof(chunk), f);

		if (n == 0 || b.len + n > TOKEN_FILE_MAX)
			break;
		buf_add(&b, chunk, n);
	}
	fclose(f);
	while (b.len > 0 && strchr(" \t\r\n", b.data[b.len - 1]) != NULL)
		b.data[--b.len] = '\0';
	if (b.len == 0) {
		fprintf(stderr, PROGNAME ": auth token file \"%s\" is empty\n", path);
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b);
}

static void
replace_string(char **slot, char *value)
{
	free(*slot);
	*slot = value;
}

static void
append_user(struct config *cfg, char *identity)
{
	cfg->users = xrealloc(cfg->users, (cfg->n_users + 1) * sizeof(*cfg->users));
	memset(&cfg->users[cfg->n_users], 0, sizeof(*cfg->users));
	cfg->users[cfg->n_users++].identity = identity;
}

/* Adds the comma-separated identities of --users; '@' starts a pseudo-user, not an identity. */
static bool
add_users(struct config *cfg, const char *list)
{
	const char *p = list;

	for (;;) {
		const char *comma = strchr(p, ',');
		size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);

		if (n == 0 || p[0] == '@' || cfg->n_users >= MAX_USERS) {
			fprintf(stderr,
				PROGNAME
				": invalid --users \"%s\" (expected IDENTITY[,IDENTITY]..., "
				"none empty or starting with '@', at most %d in all)\n",
				list, MAX_USERS);
			return false;
		}
		append_user(cfg, xstrndup(p, n));
		if (comma == NULL)
			return true;
		p = comma + 1;
	}
}

enum {
	OPT_LISTEN = 256,
	OPT_PORT_FILE,
	OPT_ACCOUNT_SID,
	OPT_AUTH_TOKEN,
	OPT_AUTH_TOKEN_FILE,
	OPT_SEED,
	OPT_CHANNELS,
	OPT_VARIANT,
	OPT_BUMP,
	OPT_LATENCY_MS,
	OPT_THREADS,
	OPT_LOG,
	OPT_FAULT,
	OPT_FAULT_RATE,
	OPT_FAULT_SEED,
	OPT_EXTRA_FIELDS,
	OPT_CACHE_BODIES,
	OPT_DUMP,
	OPT_SERVICE,
	OPT_PAGE_SIZE,
	OPT_USERS,
	OPT_USER_COUNT,
	OPT_DUMP_SERVICE,
	OPT_DUMP_USERS,
	OPT_DUMP_CHANNELS,
	OPT_API,
	OPT_DEFAULT_SERVICE,
	OPT_DEFAULT_SERVICE_SWITCH,
};

static const struct option long_options[] = {
	{"listen", required_argument, NULL, OPT_LISTEN},
	{"port-file", required_argument, NULL, OPT_PORT_FILE},
	{"account-sid", required_argument, NULL, OPT_ACCOUNT_SID},
	{"auth-token", required_argument, NULL, OPT_AUTH_TOKEN},
	{"auth-token-file", required_argument, NULL, OPT_AUTH_TOKEN_FILE},
	{"seed", required_argument, NULL, OPT_SEED},
	{"channels", required_argument, NULL, OPT_CHANNELS},
	{"variant", required_argument, NULL, OPT_VARIANT},
	{"bump", required_argument, NULL, OPT_BUMP},
	{"latency-ms", required_argument, NULL, OPT_LATENCY_MS},
	{"threads", required_argument, NULL, OPT_THREADS},
	{"log", required_argument, NULL, OPT_LOG},
	{"fault", required_argument, NULL, OPT_FAULT},
	{"fault-rate", required_argument, NULL, OPT_FAULT_RATE},
	{"fault-seed", required_argument, NULL, OPT_FAULT_SEED},
	{"extra-fields", no_argument, NULL, OPT_EXTRA_FIELDS},
	{"cache-bodies", no_argument, NULL, OPT_CACHE_BODIES},
	{"dump", required_argument, NULL, OPT_DUMP},
	{"service", required_argument, NULL, OPT_SERVICE},
	{"page-size", required_argument, NULL, OPT_PAGE_SIZE},
	{"users", required_argument, NULL, OPT_USERS},
	{"user-count", required_argument, NULL, OPT_USER_COUNT},
	{"dump-service", no_argument, NULL, OPT_DUMP_SERVICE},
	{"dump-users", no_argument, NULL, OPT_DUMP_USERS},
	{"dump-channels", no_argument, NULL, OPT_DUMP_CHANNELS},
	{"api", required_argument, NULL, OPT_API},
	{"default-service", required_argument, NULL, OPT_DEFAULT_SERVICE},
	{"default-service-switch", required_argument, NULL, OPT_DEFAULT_SERVICE_SWITCH},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

/* --default-service-switch N:IS */
static bool
parse_default_switch(struct config *cfg, const char *arg)
{
	const char *colon = strchr(arg, ':');
	char count[32];

	if (colon != NULL && (size_t)(colon - arg) < sizeof(count) && is_service_sid(colon + 1)) {
		memcpy(count, arg, (size_t)(colon - arg));
		count[colon - arg] = '\0';
		if (parse_u64(count, UINT32_MAX, &cfg->switch_after)) {
			cfg->switch_to = colon + 1;
			return true;
		}
	}
	fprintf(stderr,
		PROGNAME ": invalid value for --default-service-switch: \"%s\" (expected N:IS + 32 "
			 "hex)\n",
		arg);
	return false;
}

static bool
apply_string_option(struct config *cfg, int opt, const char *arg)
{
	char *token;

	switch (opt) {
	case OPT_LISTEN:
		replace_string(&cfg->listen, xstrdup(arg));
		return true;
	case OPT_PORT_FILE:
		cfg->port_file = arg;
		return true;
	case OPT_ACCOUNT_SID:
		replace_string(&cfg->account_sid, xstrdup(arg));
		return true;
	case OPT_AUTH_TOKEN:
		replace_string(&cfg->auth_token, xstrdup(arg));
		return true;
	case OPT_AUTH_TOKEN_FILE:
		token = read_token_file(arg);
		if (token == NULL)
			return false;
		replace_string(&cfg->auth_token, token);
		return true;
	case OPT_LOG:
		cfg->log_path = arg;
		return true;
	case OPT_SERVICE:
		cfg->service = arg;
		return true;
	case OPT_DEFAULT_SERVICE:
		cfg->default_service = arg;
		if (is_service_sid(arg))
			return true;
		fprintf(stderr,
			PROGNAME
			": invalid value for --default-service: \"%s\" (expected IS + 32 hex)\n",
			arg);
		return false;
	case OPT_DEFAULT_SERVICE_SWITCH:
		return parse_default_switch(cfg, arg);
	default:
		return false;
	}
}

static bool
apply_number_option(struct config *cfg, int opt, const char *arg)
{
	switch (opt) {
	case OPT_SEED:
		return parse_number_option("seed", arg, UINT64_MAX, &cfg->seed);
	case OPT_CHANNELS:
		return parse_number_option("channels", arg, MAX_CHANNELS, &cfg->channels);
	case OPT_VARIANT:
		return parse_number_option("variant", arg, 1000000, &cfg->variant);
	case OPT_BUMP:
		if (!parse_number_option("bump", arg, MAX_CHANNELS - 1, &cfg->bump))
			return false;
		cfg->bump++;
		return true;
	case OPT_LATENCY_MS:
		return parse_number_option("latency-ms", arg, MAX_LATENCY_MS, &cfg->latency_ms);
	case OPT_THREADS:
		return parse_number_option("threads", arg, MAX_THREADS, &cfg->threads) &&
		       cfg->threads > 0;
	case OPT_FAULT_SEED:
		return parse_number_option("fault-seed", arg, UINT64_MAX, &cfg->fault_seed);
	case OPT_PAGE_SIZE:
		return parse_number_option("page-size", arg, MAX_PAGE_SIZE, &cfg->dump_page_size) &&
		       cfg->dump_page_size > 0;
	case OPT_USER_COUNT:
		return parse_number_option("user-count", arg, MAX_USERS, &cfg->user_count);
	default:
		return false;
	}
}

/* The API whose name is name, or NULL. */
static const struct api_spec *
find_api(const char *name)
{
	for (size_t i = 0; i < N_APIS; i++) {
		if (strcmp(apis[i].name, name) == 0)
			return &apis[i];
	}
	return NULL;
}

static bool
set_api(struct config *cfg, const char *name)
{
	cfg->api = find_api(name);
	if (cfg->api != NULL)
		return true;
	fprintf(stderr,
		PROGNAME ": invalid value for --api: \"%s\" (expected ip_messaging_v1, chat_v2 or "
			 "conversations)\n",
		name);
	return false;
}

static bool
apply_option(struct config *cfg, int opt, const char *arg)
{
	switch (opt) {
	case OPT_FAULT:
		return add_fault(cfg, arg);
	case OPT_FAULT_RATE:
		return add_fault_rates(cfg, arg);
	case OPT_EXTRA_FIELDS:
		cfg->extra_fields = true;
		return true;
	case OPT_CACHE_BODIES:
		cfg->cache_bodies = true;
		return true;
	case OPT_DUMP:
		cfg->dump_users = xrealloc(cfg->dump_users, (cfg->n_dump + 1) * sizeof(char *));
		cfg->dump_users[cfg->n_dump++] = arg;
		return true;
	case OPT_USERS:
		return add_users(cfg, arg);
	case OPT_DUMP_SERVICE:
		cfg->dump_service = true;
		return true;
	case OPT_DUMP_USERS:
		cfg->dump_user_rows = true;
		return true;
	case OPT_DUMP_CHANNELS:
		cfg->dump_channel_rows = true;
		return true;
	case OPT_API:
		return set_api(cfg, arg);
	case OPT_SEED:
	case OPT_CHANNELS:
	case OPT_VARIANT:
	case OPT_BUMP:
	case OPT_LATENCY_MS:
	case OPT_THREADS:
	case OPT_FAULT_SEED:
	case OPT_PAGE_SIZE:
	case OPT_USER_COUNT:
		return apply_number_option(cfg, opt, arg);
	default:
		return apply_string_option(cfg, opt, arg);
	}
}

static bool
wants_dump(const struct config *cfg)
{
	return cfg->n_dump > 0 || cfg->dump_service || cfg->dump_user_rows ||
	       cfg->dump_channel_rows;
}

/*
 * --api conversations dumps a user's conversations only (the service, users
 * and channels are IP Messaging's), and without --service those of the
 * default service, as /v1/Users/{U}/Conversations lists them.
 */
static bool
check_conversations_dump(struct config *cfg)
{
	if (cfg->dump_service || cfg->dump_user_rows || cfg->dump_channel_rows) {
		fputs(PROGNAME ": --api conversations dumps a user's conversations only (--dump)\n",
		      stderr);
		return false;
	}
	if (cfg->service == NULL) {
		cfg->service = cfg->default_service;
		cfg->dump_unscoped = true;
	}
	return true;
}

/*
 * The first option given whose answers to the same target change from one
 * request to the next, or NULL: --cache-bodies would keep the first answer.
 */
static const char *
varying_option(const struct config *cfg)
{
	if (cfg->n_faults > 0)
		return "--fault";
	if (cfg->n_rates > 0)
		return "--fault-rate";
	if (cfg->switch_to != NULL)
		return "--default-service-switch";
	return NULL;
}

/* Returns 0 to go on, or an exit status + 1 (1 after --help, 3 on error). */
static int
parse_args(int argc, char **argv, struct config *cfg)
{
	const char *conflict;

	for (;;) {
		int opt = getopt_long(argc, argv, "h", long_options, NULL);

		if (opt == -1)
			break;
		if (opt == 'h') {
			usage(stdout);
			return 1;
		}
		if (opt == '?' || !apply_option(cfg, opt, optarg))
			return 3;
	}
	if (optind < argc) {
		fprintf(stderr, PROGNAME ": unexpected argument \"%s\"\n", argv[optind]);
		return 3;
	}
	if (cfg->api->id == API_CONVERSATIONS_V1 && !check_conversations_dump(cfg))
		return 3;
	conflict = cfg->cache_bodies ? varying_option(cfg) : NULL;
	if (conflict != NULL) {
		fprintf(stderr,
			PROGNAME ": --cache-bodies cannot be combined with %s: its answers to the "
				 "same target vary between requests\n",
			conflict);
		return 3;
	}
	if (wants_dump(cfg) && (cfg->service == NULL || !is_service_sid(cfg->service))) {
		fputs(PROGNAME ": --dump needs --service with a valid service SID (IS + 32 hex)\n",
		      stderr);
		return 3;
	}
	if (cfg->dump_page_size > cfg->api->max_memberships_page) {
		fprintf(stderr,
			PROGNAME ": invalid value for --page-size: %" PRIu64
				 " (%s allows 1..%" PRIu64 ")\n",
			cfg->dump_page_size, cfg->api->name, cfg->api->max_memberships_page);
		return 3;
	}
	return 0;
}

/* ---------------------------------------------------------------------------
 * Deterministic data
 */

enum salt {
	SALT_CHANNEL_HI = 1,
	SALT_CHANNEL_LO,
	SALT_MEMBER_HI,
	SALT_MEMBER_LO,
	SALT_STATUS,
	SALT_INDEX,
	SALT_UNREAD,
	SALT_FAULT,
	SALT_SID_HI,
	SALT_SID_LO,
	SALT_FLAGS,
	SALT_CREATED,
	SALT_UPDATED,
	SALT_COUNT,
	SALT_ROLE,
	SALT_END, /* slot_word() keeps four bits for the salt */
};

_Static_assert(SALT_END <= 16, "a salt must fit in four bits");

static uint64_t
mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t
fnv1a(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t
fnv1a_str(uint64_t h, const char *s)
{
	return fnv1a(h, s, strlen(s) + 1); /* the NUL separates fields */
}

static uint64_t
slot_word(uint64_t base, uint64_t slot, enum salt salt)
{
	return mix64(base ^ mix64((slot << 4) | (uint64_t)salt));
}

/* The present slots of one (seed, service, user, channels, variant). */
struct dataset {
	uint64_t base;
	uint64_t variant;
	uint64_t bump; /* as struct config's */
	uint64_t slots;
	uint64_t present;
};

static void
dataset_init(struct dataset *ds, const struct config *cfg, const char *service, const char *user)
{
	uint64_t removed = 0;
	uint64_t r = cfg->variant % 10;

	ds->base = fnv1a_str(fnv1a_str(0xcbf29ce484222325ULL ^ mix64(cfg->seed), service), user);
	ds->variant = cfg->variant;
	ds->bump = cfg->bump;
	ds->slots = cfg->channels;
	if (cfg->variant > 0 && cfg->channels > r)
		removed = (cfg->channels - 1 - r) / 10 + 1;
	ds->present = cfg->channels - removed;
}

/* The slot of the j-th present entry: variant V > 0 skips slots with i % 10 == V % 10. */
static uint64_t
dataset_slot(const struct dataset *ds, uint64_t j)
{
	uint64_t r = ds->variant % 10;
	uint64_t m = j % 9;

	if (ds->variant == 0)
		return j;
	return j / 9 * 10 + (m >= r ? m + 1 : m);
}

/* A conversation's state, in Conversations: its membership's channel seen as a conversation. */
enum conversation_state {
	STATE_ACTIVE,
	STATE_INACTIVE,
	STATE_CLOSED,
};

static const char *const conversation_states[] = {
	[STATE_ACTIVE] = "active",
	[STATE_INACTIVE] = "inactive",
	[STATE_CLOSED] = "closed",
};

/* The status (or conversation_state) of the oddstatus fault: none of the API's. */
#define ODD_STATUS "archived"

struct entry {
	uint64_t slot;
	char channel_sid[35];
	char member_sid[35];
	const char *status; /* NULL is JSON null */
	bool channel_null;
	bool member_null;
	bool index_null;
	bool links_null;
	bool deep;    /* carries a field nested DEEP_NESTING levels */
	bool longstr; /* carries a string field of LONG_STRING_BYTES bytes */
	bool drift;   /* status (conversation_state) a number, unread_messages_count a string */
	bool muted;   /* Chat v2's notification_level: muted, else default */
	bool odd;     /* the oddstatus fault: status and conversation_state ODD_STATUS */
	enum conversation_state state;
	uint64_t last_consumed;
	uint64_t unread;
};

static void
format_sid(char *out, const char *prefix, uint64_t hi, uint64_t lo, bool upper)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";

	out[0] = prefix[0];
	out[1] = prefix[1];
	for (int i = 0; i < 16; i++) {
		out[2 + i] = digits[(hi >> (60 - 4 * i)) & 15];
		out[18 + i] = digits[(lo >> (60 - 4 * i)) & 15];
	}
	out[34] = '\0';
}

/*
 * The hash behind a user's SID and data: of the seed and the identity only,
 * the same in every service (0x5553, "US", sets it apart from the hashes of
 * the data sets).
 */
static uint64_t
user_hash(const struct config *cfg, const char *identity)
{
	return fnv1a_str(0xcbf29ce484222325ULL ^ mix64(cfg->seed ^ 0x5553), identity);
}

/* The SID of the user whose hash (user_hash()) is hash, into out (35 bytes). */
static void
format_user_sid(char *out, uint64_t hash)
{
	format_sid(out, "US", slot_word(hash, 0, SALT_SID_HI), slot_word(hash, 0, SALT_SID_LO),
		   false);
}

static int
compare_identity(const void *a, const void *b)
{
	return strcmp((*(const struct user *const *)a)->identity,
		      (*(const struct user *const *)b)->identity);
}

static int
compare_sid(const void *a, const void *b)
{
	return strcmp((*(const struct user *const *)a)->sid, (*(const struct user *const *)b)->sid);
}

/*
 * Sorts pointers to the users into sorted by compare; returns the first of
 * two users that compare equal, or NULL if there are none.
 */
static const struct user *
sort_users(const struct config *cfg, const struct user **sorted,
	   int (*compare)(const void *, const void *))
{
	for (size_t i = 0; i < cfg->n_users; i++)
		sorted[i] = &cfg->users[i];
	qsort(sorted, cfg->n_users, sizeof(*sorted), compare);
	for (size_t i = 1; i < cfg->n_users; i++) {
		if (compare(&sorted[i - 1], &sorted[i]) == 0)
			return sorted[i - 1];
	}
	return NULL;
}

/*
 * Completes the user set once the options are read: the identities of
 * --user-count, every user's SID, the index by SID.  False (after saying
 * why) if two users share an identity or a SID.
 */
static bool
users_finish(struct config *cfg)
{
	const struct user *twice;
	char name[32];

	if (cfg->n_users + cfg->user_count > MAX_USERS) {
		fprintf(stderr, PROGNAME ": more than %d users\n", MAX_USERS);
		return false;
	}
	for (uint64_t i = 1; i <= cfg->user_count; i++) {
		snprintf(name, sizeof(name), "user-%04" PRIu64, i);
		append_user(cfg, xstrdup(name));
	}
	for (size_t k = 0; k < cfg->n_users; k++) {
		struct user *u = &cfg->users[k];

		u->hash = user_hash(cfg, u->identity);
		format_user_sid(u->sid, u->hash);
	}
	cfg->by_sid = xmalloc(cfg->n_users * sizeof(*cfg->by_sid));
	twice = sort_users(cfg, cfg->by_sid, compare_identity);
	if (twice != NULL) {
		fprintf(stderr, PROGNAME ": user \"%s\" given twice\n", twice->identity);
		return false;
	}
	twice = sort_users(cfg, cfg->by_sid, compare_sid);
	if (twice != NULL) {
		fprintf(stderr, PROGNAME ": two users have the SID %s\n", twice->sid);
		return false;
	}
	return true;
}

/* The user whose SID is sid, or NULL. */
static const struct user *
user_by_sid(const struct config *cfg, const char *sid)
{
	struct user key;
	const struct user *keyp = &key;
	const struct user **found;

	if (strlen(sid) != 34 || cfg->n_users == 0)
		return NULL;
	memcpy(key.sid, sid, sizeof(key.sid));
	found = bsearch(&keyp, cfg->by_sid, cfg->n_users, sizeof(*cfg->by_sid), compare_sid);
	return found != NULL ? *found : NULL;
}

/*
 * The identity whose memberships a request for user serves: that of the
 * user whose SID it is, else user itself (any identity has memberships).
 * Borrowed from cfg or user.
 */
static const char *
resolve_user(const struct config *cfg, const char *user)
{
	const struct user *u = user_by_sid(cfg, user);

	return u != NULL ? u->identity : user;
}

/* Whether variant V > 0 changes the membership of slot: i % 7 == V % 7. */
static bool
slot_changed(uint64_t variant, uint64_t slot)
{
	return variant > 0 && slot % 7 == variant % 7;
}

/*
 * The membership of slot; a change of the variant raises its unread count
 * and index and moves its conversation to the next state.
 */
static void
make_entry(const struct dataset *ds, uint64_t slot, struct entry *e)
{
	static const char *const statuses[] = {"joined", "invited", "not_participating"};
	static const enum conversation_state states[] = {STATE_ACTIVE, STATE_ACTIVE, STATE_INACTIVE,
							 STATE_CLOSED};
	uint64_t b = ds->base;
	uint64_t status_word = slot_word(b, slot, SALT_STATUS);

	memset(e, 0, sizeof(*e));
	e->slot = slot;
	format_sid(e->channel_sid, "CH", slot_word(b, slot, SALT_CHANNEL_HI),
		   slot_word(b, slot, SALT_CHANNEL_LO), slot % 3 == 0);
	format_sid(e->member_sid, "MB", slot_word(b, slot, SALT_MEMBER_HI),
		   slot_word(b, slot, SALT_MEMBER_LO), slot % 3 == 1);
	e->status = statuses[status_word % 3];
	e->state = states[(status_word >> 32) % 4];
	e->last_consumed = slot_word(b, slot, SALT_INDEX) % 1000;
	e->unread = slot_word(b, slot, SALT_UNREAD) % 50;
	e->index_null = slot % 13 == 5;
	e->links_null = slot % 17 == 7;
	e->member_null = slot % 19 == 11;
	e->muted = slot % 4 == 3;
	if (e->member_null)
		e->status = NULL;
	if (ds->bump == slot + 1)
		e->unread++;
	if (slot_changed(ds->variant, slot)) {
		e->unread += ds->variant;
		if (!e->index_null)
			e->last_consumed += ds->variant;
		e->state = (e->state + 1) % 3;
	}
}

/* The oddstatus fault on e. */
static void
mark_odd(struct entry *e)
{
	e->status = ODD_STATUS;
	e->odd = true;
}

static const char *
conversation_state_name(const struct entry *e)
{
	return e->odd ? ODD_STATUS : conversation_states[e->state];
}

/*
 * Whether f applies to a request of endpoint for user (a pseudo-user for a
 * dimension): "*" matches all, a pseudo-user only its endpoint, any other
 * name only the memberships of that user.
 */
static bool
fault_user_matches(const struct fault *f, enum endpoint endpoint, const char *user)
{
	if (strcmp(f->user, "*") == 0)
		return true;
	if ((endpoint == EP_MEMBERSHIPS) == is_pseudo_user(f->user))
		return false;
	return strcmp(f->user, user) == 0;
}

static bool
fault_page_matches(const struct fault *f, uint64_t page)
{
	return f->any_page || f->arg == page;
}

static bool
has_modifier(const struct config *cfg, enum fault_kind kind, enum endpoint endpoint,
	     const char *user, uint64_t page)
{
	for (size_t i = 0; i < cfg->n_faults; i++) {
		const struct fault *f = &cfg->faults[i];

		if (f->kind == kind && fault_user_matches(f, endpoint, user) &&
		    fault_page_matches(f, page))
			return true;
	}
	return false;
}

/* ---------------------------------------------------------------------------
 * Dimensions: the service, its users and its channels
 *
 * The users are those of --users and --user-count, the same for every
 * service.  The channels are those of the users' memberships: user k's
 * membership in slot i is in the channel of slot i of user k's data set,
 * created by user k, private if i % 3 == 2.  A variant V > 0 renames the
 * service, users with k % 3 == V % 3 and channels with i % 5 == V % 5; an
 * odd V deletes users with k % 4 == 3 and channels with i % 20 == V % 10
 * (whose memberships V removes too), an even V deletes none.
 */

#define DATE_BASE 1420070400 /* 2015-01-01T00:00:00Z */
#define DATE_SPAN (3 * 365 * 86400)
#define UPDATE_SPAN (90 * 86400)
#define SERVICE_USER_CHANNELS 250
#define SERVICE_CHANNEL_MEMBERS 100
#define SERVICE_TYPING_TIMEOUT 5
#define SERVICE_CONSUMPTION_INTERVAL 10
#define SERVICE_MEDIA_LIMIT_MB 150
#define DATE_LEN 21

/* The roles of a service, in the order role_sid() takes them. */
enum role {
	ROLE_SERVICE_USER,
	ROLE_SERVICE_ADMIN,
	ROLE_CHANNEL_USER,
	ROLE_CHANNEL_ADMIN,
};

static bool
user_renamed(const struct config *cfg, size_t k)
{
	return cfg->variant > 0 && k % 3 == cfg->variant % 3;
}

/* The number of users the listing holds in this variant. */
static size_t
users_listed(const struct config *cfg)
{
	return cfg->variant % 2 == 1 ? cfg->n_users - cfg->n_users / 4 : cfg->n_users;
}

/* The index of the j-th user listed: an odd variant deletes those with k % 4 == 3. */
static size_t
listed_user(const struct config *cfg, size_t j)
{
	return cfg->variant % 2 == 1 ? j / 3 * 4 + j % 3 : j;
}

static bool
channel_deleted(const struct config *cfg, uint64_t slot)
{
	return cfg->variant % 2 == 1 && slot % 20 == cfg->variant % 10;
}

static bool
channel_renamed(const struct config *cfg, uint64_t slot)
{
	return cfg->variant > 0 && slot % 5 == cfg->variant % 5;
}

static bool
channel_private(uint64_t slot)
{
	return slot % 3 == 2;
}

/* Whether the membership of slot is in the variant's data set (see dataset_slot()). */
static bool
membership_present(const struct config *cfg, uint64_t slot)
{
	return cfg->variant == 0 || slot % 10 != cfg->variant % 10;
}

static bool
entry_joined(const struct entry *e)
{
	return e->status != NULL && strcmp(e->status, "joined") == 0;
}

static uint64_t
service_hash(const struct config *cfg, const char *service)
{
	return fnv1a_str(0xcbf29ce484222325ULL ^ mix64(cfg->seed), service);
}

static void
role_sid(char *out, uint64_t service_hash, enum role role)
{
	format_sid(out, "RL", slot_word(service_hash, 2 * (uint64_t)role, SALT_ROLE),
		   slot_word(service_hash, 2 * (uint64_t)role + 1, SALT_ROLE), false);
}

static void
format_date(char *out, uint64_t seconds)
{
	time_t t = (time_t)seconds;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, DATE_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * Creation and update dates from (hash, slot); an update bump of seconds
 * for a change.  Returns the update time.
 */
static uint64_t
make_dates(uint64_t hash, uint64_t slot, uint64_t bump, char *created, char *updated)
{
	uint64_t c = DATE_BASE + slot_word(hash, slot, SALT_CREATED) % DATE_SPAN;
	uint64_t u = c + slot_word(hash, slot, SALT_UPDATED) % UPDATE_SPAN + bump;

	format_date(created, c);
	format_date(updated, u);
	return u;
}

/* Appends " (variant V)" to a renamed dimension's name. */
static void
add_variant_suffix(struct buf *b, const struct config *cfg)
{
	buf_adds(b, " (variant ");
	buf_add_u64(b, cfg->variant);
	buf_addc(b, ')');
}

struct service_row {
	struct buf friendly_name;
	char date_created[DATE_LEN];
	char date_updated[DATE_LEN];
	char roles[4][35]; /* indexed by enum role */
	uint64_t user_channels;
};

static void
make_service_row(const struct config *cfg, const char *service, struct service_row *r)
{
	uint64_t h = service_hash(cfg, service);

	memset(r, 0, sizeof(*r));
	buf_adds(&r->friendly_name, "Chat service ");
	buf_add_u64(&r->friendly_name, h % 10000);
	if (cfg->variant > 0)
		add_variant_suffix(&r->friendly_name, cfg);
	make_dates(h, 0, cfg->variant * 3600, r->date_created, r->date_updated);
	for (int i = 0; i < 4; i++)
		role_sid(r->roles[i], h, (enum role)i);
	r->user_channels =
		cfg->channels > SERVICE_USER_CHANNELS ? cfg->channels : SERVICE_USER_CHANNELS;
}

struct user_row {
	const struct user *user;
	struct buf friendly_name;
	bool name_null;
	char role_sid[35];
	struct buf attributes; /* a JSON document, served as a string */
	bool is_online;
	bool is_notifiable;
	bool notifiable_null;
	char date_created[DATE_LEN];
	char date_updated[DATE_LEN];
	uint64_t joined; /* the user's memberships with status joined */
};

/* The number of memberships of identity in service whose status is joined. */
static uint64_t
joined_count(const struct config *cfg, const char *service, const char *identity)
{
	struct dataset ds;
	uint64_t n = 0;

	dataset_init(&ds, cfg, service, identity);
	for (uint64_t j = 0; j < ds.present; j++) {
		struct entry e;

		make_entry(&ds, dataset_slot(&ds, j), &e);
		if (entry_joined(&e))
			n++;
	}
	return n;
}

static void
user_friendly_name(const struct config *cfg, size_t k, struct user_row *r)
{
	const char *identity = r->user->identity;

	r->name_null = k % 7 == 6 && !user_renamed(cfg, k);
	if (r->name_null)
		return;
	if (k % 8 == 5) {
		buf_adds(&r->friendly_name, "Zo\xc3\xab \"");
		buf_adds(&r->friendly_name, identity);
		buf_adds(&r->friendly_name, "\"\tO'Brien \\o/");
	} else if (k % 7 == 6) {
		buf_adds(&r->friendly_name, identity);
	} else {
		buf_adds(&r->friendly_name, "User ");
		buf_adds(&r->friendly_name, identity);
	}
	if (user_renamed(cfg, k))
		add_variant_suffix(&r->friendly_name, cfg);
}

/* User k of the set, as service lists it; free with user_row_free(). */
static void
make_user_row(const struct config *cfg, const char *service, size_t k, struct user_row *r)
{
	uint64_t flags;

	memset(r, 0, sizeof(*r));
	r->user = &cfg->users[k];
	flags = slot_word(r->user->hash, 0, SALT_FLAGS);
	user_friendly_name(cfg, k, r);
	role_sid(r->role_sid, service_hash(cfg, service),
		 k % 10 == 0 ? ROLE_SERVICE_ADMIN : ROLE_SERVICE_USER);
	if (k % 6 == 1) {
		buf_adds(&r->attributes, "{}");
	} else {
		buf_adds(&r->attributes, "{\"department\":\"d");
		buf_add_u64(&r->attributes, k % 4);
		buf_adds(&r->attributes, "\",\"index\":");
		buf_add_u64(&r->attributes, k);
		buf_addc(&r->attributes, '}');
	}
	r->is_online = (flags & 1) != 0;
	r->is_notifiable = (flags & 2) != 0;
	r->notifiable_null = k % 5 == 3;
	make_dates(r->user->hash, 0, user_renamed(cfg, k) ? cfg->variant * 3600 : 0,
		   r->date_created, r->date_updated);
	r->joined = joined_count(cfg, service, r->user->identity);
}

static void
user_row_free(struct user_row *r)
{
	buf_free(&r->friendly_name);
	buf_free(&r->attributes);
}

struct channel_row {
	const char *creator; /* the identity of the user whose membership it is */
	uint64_t slot;
	struct entry e; /* the creator's membership: the channel SID, its status */
	struct buf friendly_name;
	bool name_null;
	struct buf unique_name;
	bool unique_null;
	struct buf attributes; /* a JSON document, served as a string */
	bool is_private;
	char date_created[DATE_LEN];
	char date_updated[DATE_LEN];
	uint64_t members;
	uint64_t messages;
};

static void
channel_names(const struct config *cfg, struct channel_row *r)
{
	const char *identity = r->creator;
	uint64_t i = r->slot;
	bool renamed = channel_renamed(cfg, i);

	r->name_null = i % 8 == 7 && !renamed;
	if (i % 6 == 4) {
		buf_adds(&r->friendly_name, "Caf\xc3\xa9 \"");
		buf_add_u64(&r->friendly_name, i);
		buf_adds(&r->friendly_name, "\"\tof ");
		buf_adds(&r->friendly_name, identity);
		buf_adds(&r->friendly_name, " \\o/");
	} else if (!r->name_null) {
		buf_adds(&r->friendly_name, "Channel ");
		buf_add_u64(&r->friendly_name, i);
		buf_adds(&r->friendly_name, " of ");
		buf_adds(&r->friendly_name, identity);
	}
	if (renamed)
		add_variant_suffix(&r->friendly_name, cfg);
	r->unique_null = i % 4 == 3;
	if (!r->unique_null) {
		buf_adds(&r->unique_name, identity);
		buf_adds(&r->unique_name, "-ch");
		buf_add_u64(&r->unique_name, i);
	}
}

/*
 * The channel of slot in the memberships of identity (borrowed: it must
 * outlive r); free with channel_row_free().
 */
static void
make_channel_row(const struct config *cfg, const char *service, const char *identity, uint64_t slot,
		 struct channel_row *r)
{
	struct dataset ds;
	bool renamed = channel_renamed(cfg, slot);

	memset(r, 0, sizeof(*r));
	r->creator = identity;
	r->slot = slot;
	dataset_init(&ds, cfg, service, identity);
	make_entry(&ds, slot, &r->e);
	channel_names(cfg, r);
	if (slot % 5 == 0) {
		buf_adds(&r->attributes, "{}");
	} else {
		buf_adds(&r->attributes, "{\"topic\":\"t");
		buf_add_u64(&r->attributes, slot % 7);
		buf_adds(&r->attributes, "\",\"slot\":");
		buf_add_u64(&r->attributes, slot);
		buf_addc(&r->attributes, '}');
	}
	r->is_private = channel_private(slot);
	make_dates(ds.base, slot, renamed ? cfg->variant * 3600 : 0, r->date_created,
		   r->date_updated);
	r->members = membership_present(cfg, slot) && entry_joined(&r->e) ? 1 : 0;
	r->messages = slot_word(ds.base, slot, SALT_COUNT) % 1000 + (renamed ? cfg->variant : 0);
}

static void
channel_row_free(struct channel_row *r)
{
	buf_free(&r->friendly_name);
	buf_free(&r->unique_name);
	buf_free(&r->attributes);
}

/* ---------------------------------------------------------------------------
 * Conversations: a user's memberships as conversations
 *
 * Conversation i of a user is the channel of slot i of its memberships: the
 * same SID, names, attributes and creation date; its participant is the
 * member, its unread count and last read index the membership's.  The
 * state is drawn per slot (active twice as often as inactive or closed); a
 * variant's change of a membership moves it to the next state and bumps its
 * date_updated.  Timers: some active conversations have both dates, some
 * inactive ones date_closed, the rest none.
 */

#define TIMER_SPAN (30 * 86400)

struct conversation {
	struct channel_row ch;	      /* names, attributes, dates and the membership */
	char date_inactive[DATE_LEN]; /* "" when the timers have none */
	char date_closed[DATE_LEN];
};

static void
conversation_timers(uint64_t hash, uint64_t updated, struct conversation *c)
{
	uint64_t w = mix64(slot_word(hash, c->ch.slot, SALT_UPDATED) ^ 0x74696d657273);
	uint64_t inactive = updated + 3600 + (w >> 8) % TIMER_SPAN;
	uint64_t closed = inactive + 3600 + (w >> 32) % TIMER_SPAN;

	if ((w & 1) == 0 || c->ch.e.state == STATE_CLOSED)
		return;
	if (c->ch.e.state == STATE_ACTIVE)
		format_date(c->date_inactive, inactive);
	format_date(c->date_closed, closed);
}

/*
 * The conversation of e, a membership of identity in service (borrowed: it
 * must outlive c), e's flags kept; free with conversation_free().
 */
static void
make_conversation(const struct config *cfg, const char *service, const char *identity,
		  const struct entry *e, struct conversation *c)
{
	struct dataset ds;
	bool changed = slot_changed(cfg->variant, e->slot) || channel_renamed(cfg, e->slot);
	uint64_t updated;

	memset(c, 0, sizeof(*c));
	make_channel_row(cfg, service, identity, e->slot, &c->ch);
	c->ch.e = *e;
	dataset_init(&ds, cfg, service, identity);
	updated = make_dates(ds.base, e->slot, changed ? cfg->variant * 3600 : 0,
			     c->ch.date_created, c->ch.date_updated);
	conversation_timers(ds.base, updated, c);
}

static void
conversation_free(struct conversation *c)
{
	channel_row_free(&c->ch);
}

/*
 * Conversations' URLs of a service's resources: under /v1/Services/{S}, or
 * right under /v1 for the default service asked for without its SID.
 */
static void
add_conversations_scope(struct buf *b, const char *service, bool unscoped)
{
	buf_adds(b, CONVERSATIONS_BASE);
	if (!unscoped) {
		buf_adds(b, "/Services/");
		buf_adds(b, service);
	}
}

/* The URLs of a user's conversation: its own, its conversation's, its participant's. */
struct conversation_urls {
	struct buf url;
	struct buf conversation;
	struct buf participant;
};

static void
make_conversation_urls(struct conversation_urls *u, const char *service, bool unscoped,
		       const char *user_sid, const struct entry *e)
{
	memset(u, 0, sizeof(*u));
	add_conversations_scope(&u->url, service, unscoped);
	buf_adds(&u->url, "/Users/");
	buf_adds(&u->url, user_sid);
	buf_adds(&u->url, "/Conversations/");
	buf_adds(&u->url, e->channel_sid);
	add_conversations_scope(&u->conversation, service, unscoped);
	buf_adds(&u->conversation, "/Conversations/");
	buf_adds(&u->conversation, e->channel_sid);
	buf_add(&u->participant, u->conversation.data, u->conversation.len);
	buf_adds(&u->participant, "/Participants/");
	buf_adds(&u->participant, e->member_sid);
}

static void
conversation_urls_free(struct conversation_urls *u)
{
	buf_free(&u->url);
	buf_free(&u->conversation);
	buf_free(&u->participant);
}

/* The default messaging service of the account, into out (35 bytes). */
static void
messaging_service_sid(char *out, const struct config *cfg)
{
	uint64_t h = fnv1a_str(0xcbf29ce484222325ULL ^ mix64(cfg->seed ^ 0x4d47), cfg->account_sid);

	format_sid(out, "MG", slot_word(h, 0, SALT_SID_HI), slot_word(h, 0, SALT_SID_LO), false);
}

/*
 * The channel slots listed for the types asked for, in order, into slots
 * (caller frees); their number in *n.  Every user has the same.
 */
static uint64_t *
listed_slots(const struct config *cfg, unsigned types, uint64_t *n)
{
	uint64_t *slots = xmalloc(cfg->channels * sizeof(*slots));

	*n = 0;
	for (uint64_t i = 0; i < cfg->channels; i++) {
		unsigned type = channel_private(i) ? TYPE_PRIVATE : TYPE_PUBLIC;

		if ((types & type) != 0 && !channel_deleted(cfg, i))
			slots[(*n)++] = i;
	}
	return slots;
}

/* ---------------------------------------------------------------------------
 * --dump
 */

static void
add_copy_field(struct buf *b, const char *value, bool is_null)
{
	buf_addc(b, '\t');
	if (is_null)
		buf_adds(b, "\\N");
	else
		buf_add_copy_text(b, value);
}

/* A tab and the URL of the API's link base + the service + collection + sid. */
static void
add_copy_link(struct buf *b, const struct config *cfg, const char *collection, const char *sid)
{
	buf_addc(b, '\t');
	buf_adds(b, cfg->api->link_base);
	buf_adds(b, cfg->service);
	buf_adds(b, collection);
	buf_adds(b, sid);
}

/*
 * One membership as --dump prints it, the status in IP Messaging v1's
 * spelling whatever the API; Chat v2 adds notification_level last.
 */
static void
add_dump_line(struct buf *b, const struct config *cfg, const char *user, const struct entry *e)
{
	char num[24];

	buf_add_copy_text(b, cfg->service);
	add_copy_field(b, user, false);
	add_copy_field(b, e->channel_sid, false);
	add_copy_field(b, cfg->account_sid, false);
	add_copy_field(b, e->member_sid, e->member_null);
	add_copy_field(b, e->status, e->status == NULL);
	snprintf(num, sizeof(num), "%" PRIu64, e->last_consumed);
	add_copy_field(b, num, e->index_null);
	snprintf(num, sizeof(num), "%" PRIu64, e->unread);
	add_copy_field(b, num, false);
	if (e->links_null) {
		buf_adds(b, "\t\\N\t\\N");
	} else {
		add_copy_link(b, cfg, "/Channels/", e->channel_sid);
		add_copy_link(b, cfg, "/Channels/", e->channel_sid);
		buf_adds(b, "/Members/");
		buf_adds(b, e->member_sid);
	}
	if (cfg->api->id == API_CHAT_V2)
		add_copy_field(b, e->muted ? "muted" : "default", false);
	buf_addc(b, '\n');
}

/* A user as --dump names it: the name given, its identity, that identity's SID. */
struct named_user {
	const char *name;
	const char *identity;
	char sid[35];
};

/*
 * One conversation as --dump prints it with --api conversations:
 * service_sid, user_sid (the user as named), conversation_sid, account_sid,
 * participant_sid, conversation_state, notification_level,
 * unread_messages_count, last_read_message_index, friendly_name,
 * unique_name, created_by, date_created, date_updated, date_inactive,
 * date_closed, url, conversation_url, participant_url.
 */
static void
add_conversation_dump_line(struct buf *b, const struct config *cfg, const struct named_user *u,
			   const struct entry *e)
{
	struct conversation c;
	struct conversation_urls urls;
	char num[24];

	make_conversation(cfg, cfg->service, u->identity, e, &c);
	make_conversation_urls(&urls, cfg->service, cfg->dump_unscoped, u->sid, e);
	buf_add_copy_text(b, cfg->service);
	add_copy_field(b, u->name, false);
	add_copy_field(b, e->channel_sid, false);
	add_copy_field(b, cfg->account_sid, false);
	add_copy_field(b, e->member_sid, false);
	add_copy_field(b, conversation_state_name(e), false);
	add_copy_field(b, e->muted ? "muted" : "default", false);
	snprintf(num, sizeof(num), "%" PRIu64, e->unread);
	add_copy_field(b, num, false);
	snprintf(num, sizeof(num), "%" PRIu64, e->last_consumed);
	add_copy_field(b, num, e->index_null);
	add_copy_field(b, c.ch.friendly_name.data, c.ch.name_null);
	add_copy_field(b, c.ch.unique_name.data, c.ch.unique_null);
	add_copy_field(b, u->identity, false);
	add_copy_field(b, c.ch.date_created, false);
	add_copy_field(b, c.ch.date_updated, false);
	add_copy_field(b, c.date_inactive, c.date_inactive[0] == '\0');
	add_copy_field(b, c.date_closed, c.date_closed[0] == '\0');
	add_copy_field(b, urls.url.data, false);
	add_copy_field(b, urls.conversation.data, false);
	add_copy_field(b, urls.participant.data, false);
	buf_addc(b, '\n');
	conversation_urls_free(&urls);
	conversation_free(&c);
}

/* Writes b to stdout and empties it. */
static bool
write_dump(struct buf *b)
{
	bool ok = b->len == 0 || fwrite(b->data, 1, b->len, stdout) == b->len;

	buf_free(b);
	return ok;
}

/* The memberships of user, or with --api conversations its conversations. */
static bool
dump_user(const struct config *cfg, const char *user)
{
	struct named_user u = {user, resolve_user(cfg, user), ""};
	struct dataset ds;
	struct buf b = {0};

	format_user_sid(u.sid, user_hash(cfg, u.identity));
	dataset_init(&ds, cfg, cfg->service, u.identity);
	for (uint64_t j = 0; j < ds.present; j++) {
		struct entry e;
		uint64_t page = j / cfg->dump_page_size;

		make_entry(&ds, dataset_slot(&ds, j), &e);
		if (j % cfg->dump_page_size == 0 &&
		    has_modifier(cfg, FAULT_ODDSTATUS, EP_MEMBERSHIPS, user, page))
			mark_odd(&e);
		if (cfg->api->id == API_CONVERSATIONS_V1)
			add_conversation_dump_line(&b, cfg, &u, &e);
		else
			add_dump_line(&b, cfg, user, &e);
	}
	return write_dump(&b);
}

static void
add_copy_u64(struct buf *b, uint64_t value)
{
	buf_addc(b, '\t');
	buf_add_u64(b, value);
}

static void
add_copy_bool(struct buf *b, bool value, bool is_null)
{
	add_copy_field(b, value ? "t" : "f", is_null);
}

/*
 * The service: sid, account_sid, friendly_name, date_created, date_updated,
 * default_service_role_sid, default_channel_role_sid,
 * default_channel_creator_role_sid, read_status_enabled,
 * reachability_enabled, typing_indicator_timeout,
 * consumption_report_interval, url.
 */
static bool
dump_service(const struct config *cfg)
{
	struct service_row r;
	struct buf b = {0};

	make_service_row(cfg, cfg->service, &r);
	buf_add_copy_text(&b, cfg->service);
	add_copy_field(&b, cfg->account_sid, false);
	add_copy_field(&b, r.friendly_name.data, false);
	add_copy_field(&b, r.date_created, false);
	add_copy_field(&b, r.date_updated, false);
	add_copy_field(&b, r.roles[ROLE_SERVICE_USER], false);
	add_copy_field(&b, r.roles[ROLE_CHANNEL_USER], false);
	add_copy_field(&b, r.roles[ROLE_CHANNEL_ADMIN], false);
	add_copy_bool(&b, true, false);
	add_copy_bool(&b, false, false);
	add_copy_u64(&b, SERVICE_TYPING_TIMEOUT);
	add_copy_u64(&b, SERVICE_CONSUMPTION_INTERVAL);
	add_copy_link(&b, cfg, "", "");
	buf_addc(&b, '\n');
	buf_free(&r.friendly_name);
	return write_dump(&b);
}

/*
 * The users listed, in order: service_sid, sid, identity, account_sid,
 * friendly_name, role_sid, attributes, is_online, is_notifiable,
 * joined_channels_count, date_created, date_updated, url.
 */
static bool
dump_user_rows(const struct config *cfg)
{
	struct buf b = {0};

	for (size_t j = 0; j < users_listed(cfg); j++) {
		struct user_row r;

		make_user_row(cfg, cfg->service, listed_user(cfg, j), &r);
		buf_add_copy_text(&b, cfg->service);
		add_copy_field(&b, r.user->sid, false);
		add_copy_field(&b, r.user->identity, false);
		add_copy_field(&b, cfg->account_sid, false);
		add_copy_field(&b, r.friendly_name.data, r.name_null);
		add_copy_field(&b, r.role_sid, false);
		add_copy_field(&b, r.attributes.data, false);
		add_copy_bool(&b, r.is_online, false);
		add_copy_bool(&b, r.is_notifiable, r.notifiable_null);
		add_copy_u64(&b, r.joined);
		add_copy_field(&b, r.date_created, false);
		add_copy_field(&b, r.date_updated, false);
		add_copy_link(&b, cfg, "/Users/", r.user->sid);
		buf_addc(&b, '\n');
		user_row_free(&r);
	}
	return write_dump(&b);
}

static void
add_channel_dump_line(struct buf *b, const struct config *cfg, const struct channel_row *r)
{
	buf_add_copy_text(b, cfg->service);
	add_copy_field(b, r->e.channel_sid, false);
	add_copy_field(b, cfg->account_sid, false);
	add_copy_field(b, r->friendly_name.data, r->name_null);
	add_copy_field(b, r->unique_name.data, r->unique_null);
	add_copy_field(b, r->attributes.data, false);
	add_copy_field(b, r->is_private ? "private" : "public", false);
	add_copy_field(b, r->creator, false);
	add_copy_u64(b, r->members);
	add_copy_u64(b, r->messages);
	add_copy_field(b, r->date_created, false);
	add_copy_field(b, r->date_updated, false);
	add_copy_link(b, cfg, "/Channels/", r->e.channel_sid);
	buf_addc(b, '\n');
}

/*
 * The channels of both types, in the order Type=public&Type=private lists
 * them: service_sid, sid, account_sid, friendly_name, unique_name,
 * attributes, type, created_by, members_count, messages_count,
 * date_created, date_updated, url.
 */
static bool
dump_channel_rows(const struct config *cfg)
{
	uint64_t per_user;
	uint64_t *slots = listed_slots(cfg, TYPE_PUBLIC | TYPE_PRIVATE, &per_user);
	struct buf b = {0};
	bool ok = true;

	for (size_t k = 0; ok && k < cfg->n_users; k++) {
		for (uint64_t i = 0; i < per_user; i++) {
			struct channel_row r;

			make_channel_row(cfg, cfg->service, cfg->users[k].identity, slots[i], &r);
			add_channel_dump_line(&b, cfg, &r);
			channel_row_free(&r);
		}
		ok = write_dump(&b);
	}
	free(slots);
	return ok;
}

static bool
run_dumps(const struct config *cfg)
{
	if (cfg->dump_service && !dump_service(cfg))
		return false;
	if (cfg->dump_user_rows && !dump_user_rows(cfg))
		return false;
	if (cfg->dump_channel_rows && !dump_channel_rows(cfg))
		return false;
	for (size_t i = 0; i < cfg->n_dump; i++) {
		if (!dump_user(cfg, cfg->dump_users[i]))
			return false;
	}
	return true;
}

/* Prints the service, the users, the channels, then the memberships asked for. */
static int
run_dump(const struct config *cfg)
{
	if (!run_dumps(cfg)) {
		fprintf(stderr, PROGNAME ": could not write to stdout: %s\n", strerror(errno));
		return 1;
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, PROGNAME ": could not write to stdout: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}

/* ---------------------------------------------------------------------------
 * Thread-safe counters keyed by (tag, string)
 */

struct counter {
	struct counter *next;
	long tag;
	uint64_t value;
	char key[];
};

struct counter_map {
	pthread_mutex_t lock;
	struct counter *buckets[COUNTER_BUCKETS];
};

static void
counter_map_init(struct counter_map *m)
{
	memset(m->buckets, 0, sizeof(m->buckets));
	pthread_mutex_init(&m->lock, NULL);
}

static void
counter_map_destroy(struct counter_map *m)
{
	for (size_t i = 0; i < COUNTER_BUCKETS; i++) {
		struct counter *c = m->buckets[i];

		while (c != NULL) {
			struct counter *next = c->next;

			free(c);
			c = next;
		}
	}
	pthread_mutex_destroy(&m->lock);
}

static struct counter *
counter_find(struct counter_map *m, size_t bucket, long tag, const char *key)
{
	for (struct counter *c = m->buckets[bucket]; c != NULL; c = c->next) {
		if (c->tag == tag && strcmp(c->key, key) == 0)
			return c;
	}
	return NULL;
}

/* Increments the counter of (tag, key) and returns its value before that. */
static uint64_t
counter_next(struct counter_map *m, long tag, const char *key)
{
	size_t len = strlen(key);
	size_t bucket = (size_t)(mix64(fnv1a(0xcbf29ce484222325ULL ^ (uint64_t)tag, key, len)) %
				 COUNTER_BUCKETS);
	struct counter *c;
	uint64_t value;

	pthread_mutex_lock(&m->lock);
	c = counter_find(m, bucket, tag, key);
	if (c == NULL) {
		c = xmalloc(sizeof(*c) + len + 1);
		c->tag = tag;
		c->value = 0;
		memcpy(c->key, key, len + 1);
		c->next = m->buckets[bucket];
		m->buckets[bucket] = c;
	}
	value = c->value++;
	pthread_mutex_unlock(&m->lock);
	return value;
}

/* ---------------------------------------------------------------------------
 * Kept page bodies (--cache-bodies), keyed by the Host header and the raw target
 */

#define BODY_CACHE_BUCKETS 65536 /* a power of two; the bench keeps tens of thousands */

struct kept_body {
	struct kept_body *next;
	uint64_t hash;
	char *body;
	size_t len;
	char key[];
};

struct body_cache {
	pthread_rwlock_t lock;
	struct kept_body *buckets[BODY_CACHE_BUCKETS];
	size_t renders; /* under lock: pages rendered, the bodies and the races lost */
	size_t bodies;	/* kept */
	size_t bytes;
	atomic_uint_fast64_t hits;
};

static struct body_cache *
body_cache_new(void)
{
	struct body_cache *c = xmalloc(sizeof(*c));

	memset(c->buckets, 0, sizeof(c->buckets));
	c->renders = 0;
	c->bodies = 0;
	c->bytes = 0;
	atomic_init(&c->hits, 0);
	pthread_rwlock_init(&c->lock, NULL);
	return c;
}

/* Frees the cache and every body in it; no response may still be sending one. */
static void
body_cache_free(struct body_cache *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < BODY_CACHE_BUCKETS; i++) {
		struct kept_body *k = c->buckets[i];

		while (k != NULL) {
			struct kept_body *next = k->next;

			free(k->body);
			free(k);
			k = next;
		}
	}
	pthread_rwlock_destroy(&c->lock);
	free(c);
}

static uint64_t
body_key_hash(const char *key)
{
	return mix64(fnv1a_str(0xcbf29ce484222325ULL, key));
}

/* The entry of key in its bucket, or NULL; the caller holds the lock. */
static struct kept_body *
body_cache_lookup(struct body_cache *c, const char *key, uint64_t hash)
{
	for (struct kept_body *k = c->buckets[hash % BODY_CACHE_BUCKETS]; k != NULL; k = k->next) {
		if (k->hash == hash && strcmp(k->key, key) == 0)
			return k;
	}
	return NULL;
}

/*
 * The body kept for key, counted as a hit, or NULL.  Borrowed: it stays
 * until body_cache_free(), as every entry does.
 */
static const struct kept_body *
body_cache_find(struct body_cache *c, const char *key)
{
	uint64_t hash = body_key_hash(key);
	struct kept_body *k;

	pthread_rwlock_rdlock(&c->lock);
	k = body_cache_lookup(c, key, hash);
	pthread_rwlock_unlock(&c->lock);
	if (k != NULL)
		atomic_fetch_add(&c->hits, 1);
	return k;
}

/*
 * Keeps the body in b (taken, b left empty) for key and returns the entry
 * (borrowed, as from body_cache_find()).  If another thread kept one for key
 * meanwhile, that one wins and this body is freed: both are the same bytes.
 */
static const struct kept_body *
body_cache_keep(struct body_cache *c, const char *key, struct buf *b)
{
	uint64_t hash = body_key_hash(key);
	size_t key_len = strlen(key);
	struct kept_body *k;

	pthread_rwlock_wrlock(&c->lock);
	c->renders++;
	k = body_cache_lookup(c, key, hash);
	if (k == NULL) {
		k = xmalloc(sizeof(*k) + key_len + 1);
		memcpy(k->key, key, key_len + 1);
		k->hash = hash;
		k->len = b->len;
		k->body = buf_take(b);
		k->next = c->buckets[hash % BODY_CACHE_BUCKETS];
		c->buckets[hash % BODY_CACHE_BUCKETS] = k;
		c->bodies++;
		c->bytes += k->len;
	}
	pthread_rwlock_unlock(&c->lock);
	buf_free(b);
	return k;
}

/*
 * One line on stderr, for the tests and the bench: hits and renders add up to
 * the pages served through the cache, the bodies and bytes are what it keeps.
 */
static void
body_cache_report(struct body_cache *c)
{
	if (c == NULL)
		return;
	pthread_rwlock_rdlock(&c->lock);
	fprintf(stderr,
		PROGNAME ": cache: %" PRIuFAST64 " hits, %zu renders, %zu bodies, %zu bytes\n",
		atomic_load(&c->hits), c->renders, c->bodies, c->bytes);
	pthread_rwlock_unlock(&c->lock);
}

/* ---------------------------------------------------------------------------
 * The server
 */

struct server {
	const struct config *cfg;
	int log_fd;
	unsigned port;
	char authority[INET6_ADDRSTRLEN + 10]; /* ADDR:PORT, used without a Host header */
	char *credentials;		       /* "sid:token" */
	size_t credentials_len;
	char *account_json; /* the account SID as a JSON string */
	struct counter_map counters;
	struct body_cache *cache;	     /* with --cache-bodies, else NULL */
	atomic_uint_fast64_t default_listed; /* listings of the default service served */
	pthread_mutex_t stop_lock;
	pthread_cond_t stop_cond;
	bool stopping;
};

/* Per-request state kept by MHD between callbacks. */
struct request {
	char *target;
	bool started; /* the access handler has seen the headers */
};

/* One request being answered. */
struct exchange {
	struct server *srv;
	struct MHD_Connection *conn;
	const char *target;	    /* raw, as received */
	char *path;		    /* raw path, without the query */
	const char *query;	    /* raw query, without '?' ("" if none) */
	const struct api_spec *api; /* the API of the route */
	enum endpoint endpoint;
	bool unscoped;	      /* the path named no service: the default conversation service */
	char *service;	      /* decoded, NULL until the route matched */
	char *user;	      /* decoded (a pseudo-user for a dimension), NULL until then */
	const char *identity; /* whose memberships: user, or the identity of its SID */
	char user_sid[35];    /* the SID of that identity */
	unsigned types;	      /* the channel types listed: TYPE_PUBLIC | TYPE_PRIVATE */
	bool have_page;
	uint64_t page;
	uint64_t page_size;
	struct buf url_path;  /* /VERSION[/Services/S]/Users/U/Channels (...), re-encoded */
	struct buf url_query; /* what page URLs carry before PageSize ("Type=private&") */
};

struct page_plan {
	bool nometa;
	bool truncate;
	bool badrow;
	bool oddstatus;
	bool loop;
	bool foreign;
	bool deep;
	bool longstr;
	bool typedrift;
};

static void
wait_latency(struct server *srv)
{
	struct timespec deadline;
	uint64_t ms = srv->cfg->latency_ms;

	if (ms == 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += (time_t)(ms / 1000);
	deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&srv->stop_lock);
	while (!srv->stopping) {
		if (pthread_cond_timedwait(&srv->stop_cond, &srv->stop_lock, &deadline) ==
		    ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&srv->stop_lock);
}

/* Appends one log line with a single write(); control bytes of the target become %XX. */
static void
log_request(struct exchange *ex, unsigned status)
{
	static const char hex[] = "0123456789ABCDEF";
	struct buf b = {0};

	if (ex->srv->log_fd < 0)
		return;
	buf_add_u64(&b, status);
	buf_addc(&b, '\t');
	if (ex->user != NULL)
		buf_add_copy_text(&b, ex->user);
	else
		buf_addc(&b, '-');
	buf_addc(&b, '\t');
	if (ex->have_page)
		buf_add_u64(&b, ex->page);
	else
		buf_addc(&b, '-');
	buf_addc(&b, '\t');
	for (const char *p = ex->target; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		char esc[3] = {'%', hex[c >> 4], hex[c & 15]};

		if (c < 0x20 || c == 0x7f)
			buf_add(&b, esc, sizeof(esc));
		else
			buf_addc(&b, (char)c);
	}
	buf_addc(&b, '\n');
	if (write(ex->srv->log_fd, b.data, b.len) != (ssize_t)b.len)
		fprintf(stderr, PROGNAME ": could not write the request log: %s\n",
			strerror(errno));
	buf_free(&b);
}

/* Logs, waits for the latency, queues and releases resp. */
static enum MHD_Result
respond(struct exchange *ex, unsigned status, struct MHD_Response *resp)
{
	enum MHD_Result ret;

	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	wait_latency(ex->srv);
	log_request(ex, status);
	ret = MHD_queue_response(ex->conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
respond_buf(struct exchange *ex, unsigned status, struct buf *b)
{
	size_t len = b->len;
	char *data = buf_take(b);
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);

	if (resp == NULL) {
		free(data);
		return MHD_NO;
	}
	return respond(ex, status, resp);
}

static enum MHD_Result
respond_text(struct exchange *ex, unsigned status, const char *text)
{
	struct buf b = {0};

	buf_adds(&b, text);
	return respond_buf(ex, status, &b);
}

/* A Twilio error body, with an optional extra header. */
static enum MHD_Result
respond_error(struct exchange *ex, unsigned status, unsigned code, const char *message,
	      const char *header, const char *header_value)
{
	struct buf b = {0};
	struct MHD_Response *resp;
	size_t len;
	char *data;

	buf_adds(&b, "{\"code\":");
	buf_add_u64(&b, code);
	buf_adds(&b, ",\"message\":");
	buf_add_json_string(&b, message);
	buf_adds(&b, ",\"more_info\":\"" ERROR_INFO_BASE);
	buf_add_u64(&b, code);
	buf_adds(&b, "\",\"status\":");
	buf_add_u64(&b, status);
	buf_addc(&b, '}');
	len = b.len;
	data = buf_take(&b);
	resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(data);
		return MHD_NO;
	}
	if (header != NULL)
		MHD_add_response_header(resp, header, header_value);
	return respond(ex, status, resp);
}

static enum MHD_Result
respond_not_found(struct exchange *ex)
{
	struct buf msg = {0};
	enum MHD_Result ret;

	buf_adds(&msg, "The requested resource ");
	buf_adds(&msg, ex->path);
	buf_adds(&msg, " was not found");
	ret = respond_error(ex, MHD_HTTP_NOT_FOUND, 20404, msg.data, NULL, NULL);
	buf_free(&msg);
	return ret;
}

static enum MHD_Result
respond_status_fault(struct exchange *ex, unsigned status, bool retry_after)
{
	switch (status) {
	case MHD_HTTP_TOO_MANY_REQUESTS:
		return respond_error(ex, status, 20429, "Too Many Requests",
				     retry_after ? MHD_HTTP_HEADER_RETRY_AFTER : NULL, "1");
	case MHD_HTTP_SERVICE_UNAVAILABLE:
		return respond_error(ex, status, 20500, "Service Unavailable", NULL, NULL);
	case MHD_HTTP_FORBIDDEN:
		return respond_error(ex, status, 20403, "Forbidden", NULL, NULL);
	case MHD_HTTP_BAD_REQUEST:
		return respond_error(ex, status, 21481, "Invalid PageToken", NULL, NULL);
	default:
		return respond_error(ex, status, 20500, "Internal Server Error", NULL, NULL);
	}
}

#define MAX_SEGMENTS 6

/*
 * Splits the raw path into its decoded segments (caller frees them); 0 if
 * it does not start with '/', has more than MAX_SEGMENTS or decodes to NUL.
 */
static size_t
split_path(const char *path, char **seg)
{
	const char *p = path + 1;
	size_t n = 0;

	if (path[0] != '/')
		return 0;
	for (;;) {
		const char *end = strchr(p, '/');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);

		if (n == MAX_SEGMENTS)
			break;
		seg[n] = pct_decode(p, len, false);
		if (seg[n] == NULL)
			break;
		n++;
		if (end == NULL)
			return n;
		p = end + 1;
	}
	while (n > 0)
		free(seg[--n]);
	return 0;
}

/* The API whose version segment is version, or NULL. */
static const struct api_spec *
api_of_version(const char *version)
{
	for (size_t i = 0; i < N_APIS; i++) {
		if (strcmp(apis[i].version, version) == 0)
			return &apis[i];
	}
	return NULL;
}

/* What a path names: the API, the endpoint, and which segments name the service and the user. */
struct route {
	const struct api_spec *api;
	enum endpoint endpoint;
	int service; /* -1: the default conversation service */
	int user;    /* -1: a pseudo-user */
};

static enum endpoint
route_endpoint(char **seg, size_t n, bool *ok)
{
	*ok = n >= 3 && strcmp(seg[1], "Services") == 0;
	if (n == 3)
		return EP_SERVICE;
	if (n == 4 && strcmp(seg[3], "Users") == 0)
		return EP_USERS;
	if (n == 4 && strcmp(seg[3], "Channels") == 0)
		return EP_CHANNELS;
	*ok = *ok && n == 6 && strcmp(seg[3], "Users") == 0 && seg[4][0] != '\0' &&
	      strcmp(seg[5], "Channels") == 0;
	return EP_MEMBERSHIPS;
}

/* The four routes under each version of Chat: IP Messaging's /v1 and Chat v2's /v2. */
static bool
route_chat(char **seg, size_t n, struct route *r)
{
	bool ok;

	r->api = api_of_version(seg[0]);
	r->endpoint = route_endpoint(seg, n, &ok);
	r->service = 2;
	r->user = r->endpoint == EP_MEMBERSHIPS ? 4 : -1;
	return ok && r->api != NULL;
}

/*
 * The routes of Conversations under /v1: /Configuration, and a user's
 * conversations in a service or (/v1/Users/{U}/Conversations) in the
 * default one.
 */
static bool
route_conversations(char **seg, size_t n, struct route *r)
{
	bool in_service = n == 6 && strcmp(seg[1], "Services") == 0;
	size_t u = in_service ? 4 : 2;

	r->api = &apis[API_CONVERSATIONS_V1];
	r->service = in_service ? 2 : -1;
	r->user = -1;
	if (strcmp(seg[0], r->api->version) != 0)
		return false;
	if (n == 2 && strcmp(seg[1], "Configuration") == 0) {
		r->endpoint = EP_CONFIGURATION;
		return true;
	}
	if ((n != 4 && !in_service) || strcmp(seg[u - 1], "Users") != 0 || seg[u][0] == '\0' ||
	    strcmp(seg[u + 1], r->api->memberships) != 0)
		return false;
	r->endpoint = EP_MEMBERSHIPS;
	r->user = (int)u;
	return true;
}

/*
 * The account's default conversation service as of this request; a listing
 * at /v1/Users/{U}/Conversations counts towards --default-service-switch.
 */
static const char *
default_service_now(struct server *srv, bool listing)
{
	const struct config *cfg = srv->cfg;
	uint_fast64_t served = listing ? atomic_fetch_add(&srv->default_listed, 1)
				       : atomic_load(&srv->default_listed);

	return cfg->switch_to != NULL && served >= cfg->switch_after ? cfg->switch_to
								     : cfg->default_service;
}

/* Takes the route's service and user (or pseudo-user) out of seg. */
static void
take_route(struct exchange *ex, char **seg, const struct route *r)
{
	const struct config *cfg = ex->srv->cfg;

	ex->api = r->api;
	ex->endpoint = r->endpoint;
	ex->unscoped = r->service < 0;
	if (ex->unscoped) {
		ex->service = xstrdup(default_service_now(ex->srv, r->endpoint == EP_MEMBERSHIPS));
	} else {
		ex->service = seg[r->service];
		seg[r->service] = NULL;
	}
	if (r->user < 0) {
		ex->user = xstrdup(pseudo_users[ex->endpoint]);
		return;
	}
	ex->user = seg[r->user];
	seg[r->user] = NULL;
	ex->identity = resolve_user(cfg, ex->user);
	format_user_sid(ex->user_sid, user_hash(cfg, ex->identity));
}

/*
 * Matches the path against the routes of every API; sets api, endpoint,
 * unscoped, service, user, identity and user_sid.
 */
static bool
parse_route(struct exchange *ex)
{
	char *seg[MAX_SEGMENTS];
	size_t n = split_path(ex->path, seg);
	struct route r;
	bool ok = n > 0 && (route_conversations(seg, n, &r) || route_chat(seg, n, &r));

	if (ok)
		take_route(ex, seg, &r);
	for (size_t i = 0; i < n; i++)
		free(seg[i]);
	return ok;
}

static bool
check_auth(struct exchange *ex)
{
	const char *h = MHD_lookup_connection_value(ex->conn, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_AUTHORIZATION);
	size_t len = 0;
	char *decoded;
	bool ok;

	if (h == NULL || strncasecmp(h, "Basic ", 6) != 0)
		return false;
	h += 6;
	while (*h == ' ')
		h++;
	decoded = b64_decode(h, &len);
	if (decoded == NULL)
		return false;
	ok = len == ex->srv->credentials_len && memcmp(decoded, ex->srv->credentials, len) == 0;
	free(decoded);
	return ok;
}

struct query {
	char *page_size;
	char *page;
	char *page_token;
	unsigned types; /* each Type given */
	bool bad_type;	/* a Type neither public nor private */
};

static void
query_free(struct query *q)
{
	free(q->page_size);
	free(q->page);
	free(q->page_token);
}

static void
query_set(struct query *q, const char *item, size_t n)
{
	const char *eq = memchr(item, '=', n);
	size_t klen = eq != NULL ? (size_t)(eq - item) : n;
	char *key = pct_decode(item, klen, true);
	char *value = eq != NULL ? pct_decode(eq + 1, n - klen - 1, true) : xstrdup("");
	char **slot = NULL;

	if (key != NULL && value != NULL && strcmp(key, "Type") == 0) {
		if (strcmp(value, "public") == 0)
			q->types |= TYPE_PUBLIC;
		else if (strcmp(value, "private") == 0)
			q->types |= TYPE_PRIVATE;
		else
			q->bad_type = true;
	}
	if (key != NULL && strcmp(key, "PageSize") == 0)
		slot = &q->page_size;
	else if (key != NULL && strcmp(key, "Page") == 0)
		slot = &q->page;
	else if (key != NULL && strcmp(key, "PageToken") == 0)
		slot = &q->page_token;
	if (slot != NULL && value != NULL)
		replace_string(slot, value);
	else
		free(value);
	free(key);
}

/* Reads PageSize, Page and PageToken (the last of each wins) and every Type from the raw query. */
static void
query_parse(const char *s, struct query *q)
{
	memset(q, 0, sizeof(*q));
	while (*s != '\0') {
		const char *amp = strchr(s, '&');
		size_t n = amp != NULL ? (size_t)(amp - s) : strlen(s);

		if (n > 0)
			query_set(q, s, n);
		s += n;
		if (*s == '&')
			s++;
	}
}

/*
 * Validates the paging parameters, PageSize within the API's bound for the
 * endpoint; on error queues a 400 and returns false.
 */
static bool
check_paging(struct exchange *ex, const struct query *q, enum MHD_Result *ret)
{
	char expected[32];

	uint64_t max = ex->endpoint == EP_MEMBERSHIPS ? ex->api->max_memberships_page
						      : ex->api->max_listing_page;
	char message[64];

	ex->page_size = DEFAULT_PAGE_SIZE;
	ex->page = 0;
	if (q->page_size != NULL &&
	    (!parse_u64(q->page_size, max, &ex->page_size) || ex->page_size == 0)) {
		snprintf(message, sizeof(message),
			 "Invalid PageSize: must be an integer between 1 and %" PRIu64, max);
		*ret = respond_error(ex, MHD_HTTP_BAD_REQUEST, 20001, message, NULL, NULL);
		return false;
	}
	if (q->page != NULL && !parse_u64(q->page, MAX_PAGE, &ex->page)) {
		*ret = respond_error(ex, MHD_HTTP_BAD_REQUEST, 20001,
				     "Invalid Page: must be a non-negative integer", NULL, NULL);
		return false;
	}
	snprintf(expected, sizeof(expected), "PT%" PRIu64, ex->page);
	if ((ex->page > 0 || q->page_token != NULL) &&
	    (q->page_token == NULL || strcmp(q->page_token, expected) != 0)) {
		*ret = respond_error(ex, MHD_HTTP_BAD_REQUEST, 21481, "Invalid PageToken", NULL,
				     NULL);
		return false;
	}
	ex->have_page = true;
	return true;
}

/*
 * The Type filter of the channel listing: public only unless Type says
 * otherwise, as Twilio does; on error queues a 400 and returns false.
 */
static bool
check_types(struct exchange *ex, const struct query *q, enum MHD_Result *ret)
{
	if (q->bad_type) {
		*ret = respond_error(ex, MHD_HTTP_BAD_REQUEST, 20001,
				     "Invalid Type: must be public or private", NULL, NULL);
		return false;
	}
	ex->types = q->types != 0 ? q->types : TYPE_PUBLIC;
	if (q->types & TYPE_PUBLIC)
		buf_adds(&ex->url_query, "Type=public&");
	if (q->types & TYPE_PRIVATE)
		buf_adds(&ex->url_query, "Type=private&");
	return true;
}

/* Random 429/500/503 from --fault-rate: a hash of the target and its attempt number. */
static unsigned
pick_rate_fault(struct exchange *ex)
{
	const struct config *cfg = ex->srv->cfg;
	uint64_t attempt;
	uint64_t h;

	if (cfg->n_rates == 0)
		return 0;
	attempt = counter_next(&ex->srv->counters, COUNTER_TAG_RATE, ex->target);
	h = fnv1a_str(0xcbf29ce484222325ULL ^ mix64(cfg->fault_seed), ex->target);
	for (size_t i = 0; i < cfg->n_rates; i++) {
		uint64_t draw = slot_word(h ^ mix64(attempt), i, SALT_FAULT);
		double u = (double)(draw >> 11) * 0x1.0p-53;

		if (u < cfg->rates[i].probability)
			return cfg->rates[i].status;
	}
	return 0;
}

static bool
fault_fires(struct exchange *ex, size_t index)
{
	const struct fault *f = &ex->srv->cfg->faults[index];

	if (f->modifier || !fault_user_matches(f, ex->endpoint, ex->user))
		return false;
	switch (f->match) {
	case MATCH_COUNT:
		if (f->on_page && ex->page != f->page)
			return false;
		return counter_next(&ex->srv->counters,
				    (long)index * N_ENDPOINTS + (long)ex->endpoint,
				    ex->user) < f->arg;
	case MATCH_PAGE:
		return fault_page_matches(f, ex->page);
	default:
		return true;
	}
}

/* The first non-modifier fault that fires, in the order given, or NULL. */
static const struct fault *
pick_fault(struct exchange *ex)
{
	for (size_t i = 0; i < ex->srv->cfg->n_faults; i++) {
		if (fault_fires(ex, i))
			return &ex->srv->cfg->faults[i];
	}
	return NULL;
}

static void
plan_modifiers(struct exchange *ex, struct page_plan *plan)
{
	const struct config *cfg = ex->srv->cfg;
	enum endpoint ep = ex->endpoint;

	plan->badrow = has_modifier(cfg, FAULT_BADROW, ep, ex->user, ex->page);
	plan->oddstatus = has_modifier(cfg, FAULT_ODDSTATUS, ep, ex->user, ex->page);
	plan->loop = has_modifier(cfg, FAULT_LOOP, ep, ex->user, ex->page);
	plan->foreign = has_modifier(cfg, FAULT_FOREIGN, ep, ex->user, ex->page);
	plan->deep = has_modifier(cfg, FAULT_DEEP, ep, ex->user, ex->page);
	plan->longstr = has_modifier(cfg, FAULT_LONGSTR, ep, ex->user, ex->page);
	plan->typedrift = has_modifier(cfg, FAULT_TYPEDRIFT, ep, ex->user, ex->page);
}

static const char *
request_host(struct exchange *ex)
{
	const char *host =
		MHD_lookup_connection_value(ex->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);

	return host != NULL && *host != '\0' ? host : ex->srv->authority;
}

/* The key of the array a listing returns, the same in its meta. */
static const char *
listing_key(const struct exchange *ex)
{
	if (ex->endpoint == EP_USERS)
		return "users";
	return ex->endpoint == EP_MEMBERSHIPS ? ex->api->memberships_key : "channels";
}

/* Appends the JSON string of the URL of page k at origin ("http://host"). */
static void
add_page_url(struct buf *b, struct exchange *ex, const char *origin, uint64_t k)
{
	struct buf url = {0};

	buf_adds(&url, origin);
	buf_add(&url, ex->url_path.data, ex->url_path.len);
	buf_addc(&url, '?');
	if (ex->url_query.len > 0)
		buf_add(&url, ex->url_query.data, ex->url_query.len);
	buf_adds(&url, "PageSize=");
	buf_add_u64(&url, ex->page_size);
	buf_adds(&url, "&Page=");
	buf_add_u64(&url, k);
	if (k > 0) {
		buf_adds(&url, "&PageToken=PT");
		buf_add_u64(&url, k);
	}
	buf_add_json_string(b, url.data);
	buf_free(&url);
}

static void
add_links(struct buf *b, const struct exchange *ex, const struct entry *e)
{
	buf_adds(b, ",\"links\":");
	if (e->links_null || e->channel_null) {
		buf_adds(b, "null");
		return;
	}
	buf_adds(b, "{\"channel\":\"");
	buf_adds(b, ex->api->link_base);
	buf_adds(b, ex->service);
	buf_adds(b, "/Channels/");
	buf_adds(b, e->channel_sid);
	buf_adds(b, "\",\"member\":\"");
	buf_adds(b, ex->api->link_base);
	buf_adds(b, ex->service);
	buf_adds(b, "/Channels/");
	buf_adds(b, e->channel_sid);
	buf_adds(b, "/Members/");
	buf_adds(b, e->member_sid);
	buf_adds(b, "\"}");
}

static void
add_quoted_or_null(struct buf *b, const char *name, const char *value, bool is_null)
{
	buf_adds(b, name);
	if (is_null) {
		buf_adds(b, "null");
		return;
	}
	buf_addc(b, '"');
	buf_adds(b, value);
	buf_addc(b, '"');
}

/*
 * The unknown fields of --extra-fields at the end of an entry; for IP
 * Messaging v1 a url too, which Chat v2 has already sent as a known field.
 */
static void
add_extra_entry_tail(struct buf *b, const struct exchange *ex, const struct entry *e)
{
	size_t skip = strlen("/v1/Services/") + strlen(ex->service); /* leaves /Users/U/Channels */

	if (ex->api->id == API_CHAT_V2) {
		buf_adds(b, EXTRA_ENTRY_ATTRIBUTES);
		return;
	}
	buf_adds(b, ",\"url\":\"" LINK_BASE);
	buf_adds(b, ex->service);
	buf_add(b, ex->url_path.data + skip, ex->url_path.len - skip);
	buf_addc(b, '/');
	buf_adds(b, e->channel_sid);
	buf_addc(b, '"');
	buf_adds(b, EXTRA_ENTRY_ATTRIBUTES);
}

/*
 * The unknown fields of the deep and longstr faults: well-formed JSON,
 * beyond the client's limits.
 */
static void
add_hostile_fields(struct buf *b, const char *deep_key, const char *long_key, bool deep,
		   bool longstr)
{
	if (deep) {
		buf_adds(b, deep_key);
		for (int i = 0; i < DEEP_NESTING; i++)
			buf_addc(b, '[');
		for (int i = 0; i < DEEP_NESTING; i++)
			buf_addc(b, ']');
	}
	if (longstr) {
		buf_adds(b, long_key);
		buf_addc(b, '"');
		buf_reserve(b, LONG_STRING_BYTES + 1);
		memset(b->data + b->len, 'x', LONG_STRING_BYTES);
		b->len += LONG_STRING_BYTES;
		buf_addc(b, '"');
	}
}

/* A status as the API spells it: not_participating is notParticipating in Chat v2. */
static const char *
status_spelling(const struct exchange *ex, const char *status)
{
	if (status != NULL && strcmp(status, "not_participating") == 0)
		return ex->api->not_participating;
	return status;
}

/* Chat v2's fields after the links: the entry's own URL and its notification_level. */
static void
add_v2_entry_tail(struct buf *b, const struct exchange *ex, const struct entry *e)
{
	buf_adds(b, ",\"url\":");
	if (e->channel_null) {
		buf_adds(b, "null");
	} else {
		buf_addc(b, '"');
		buf_adds(b, ex->api->link_base);
		buf_adds(b, ex->service);
		buf_adds(b, "/Users/");
		buf_adds(b, ex->user_sid);
		buf_adds(b, "/Channels/");
		buf_adds(b, e->channel_sid);
		buf_addc(b, '"');
	}
	buf_adds(b, e->muted ? ",\"notification_level\":\"muted\""
			     : ",\"notification_level\":\"default\"");
}

/* What the modifier faults do to one dimension entry. */
struct row_faults {
	bool deep;
	bool longstr;
	bool drift;
};

static void
add_string_field(struct buf *b, const char *name, const char *value, bool is_null)
{
	buf_adds(b, name);
	if (is_null)
		buf_adds(b, "null");
	else
		buf_add_json_string(b, value);
}

static void
add_u64_field(struct buf *b, const char *name, uint64_t value, bool as_string)
{
	buf_adds(b, name);
	if (as_string)
		buf_addc(b, '"');
	buf_add_u64(b, value);
	if (as_string)
		buf_addc(b, '"');
}

static void
add_bool_field(struct buf *b, const char *name, bool value, bool as_number)
{
	buf_adds(b, name);
	if (as_number)
		buf_adds(b, value ? "1" : "0");
	else
		buf_adds(b, value ? "true" : "false");
}

/* The fields every dimension entry may end with: unknown ones, and those of deep and longstr. */
static void
add_dimension_tail(struct buf *b, const struct exchange *ex, const struct row_faults *rf)
{
	if (ex->srv->cfg->extra_fields)
		buf_adds(b, EXTRA_DIMENSION_FIELDS);
	add_hostile_fields(b, ",\"extra_nesting\":", ",\"extra_string\":", rf->deep, rf->longstr);
}

static void
add_timers(struct buf *b, const struct conversation *c)
{
	bool inactive = c->date_inactive[0] != '\0';

	buf_adds(b, ",\"timers\":{");
	if (inactive)
		add_string_field(b, "\"date_inactive\":", c->date_inactive, false);
	if (c->date_closed[0] != '\0')
		add_string_field(b, inactive ? ",\"date_closed\":" : "\"date_closed\":",
				 c->date_closed, false);
	buf_addc(b, '}');
}

/* A conversation entry's url and links; null without a conversation SID (badrow). */
static void
add_conversation_links(struct buf *b, const struct exchange *ex, const struct entry *e)
{
	struct conversation_urls u;

	if (e->channel_null) {
		buf_adds(b, ",\"url\":null,\"links\":null");
		return;
	}
	make_conversation_urls(&u, ex->service, ex->unscoped, ex->user_sid, e);
	add_string_field(b, ",\"url\":", u.url.data, false);
	add_string_field(b, ",\"links\":{\"participant\":", u.participant.data, false);
	add_string_field(b, ",\"conversation\":", u.conversation.data, false);
	buf_addc(b, '}');
	conversation_urls_free(&u);
}

/*
 * A user's conversation, its fields in the spec's order.  The unknown
 * fields of --extra-fields, deep and longstr come last, as on a dimension:
 * those of a channel entry are known fields here.
 */
static void
add_conversation_json(struct buf *b, const struct exchange *ex, const struct entry *e)
{
	struct row_faults rf = {e->deep, e->longstr, e->drift};
	struct conversation c;

	make_conversation(ex->srv->cfg, ex->service, ex->identity, e, &c);
	buf_adds(b, "{\"account_sid\":");
	buf_adds(b, ex->srv->account_json);
	add_string_field(b, ",\"chat_service_sid\":", ex->service, false);
	add_string_field(b, ",\"conversation_sid\":", e->channel_sid, e->channel_null);
	add_u64_field(b, ",\"unread_messages_count\":", e->unread, e->drift);
	buf_adds(b, ",\"last_read_message_index\":");
	if (e->index_null)
		buf_adds(b, "null");
	else
		buf_add_u64(b, e->last_consumed);
	add_string_field(b, ",\"participant_sid\":", e->member_sid, false);
	add_string_field(b, ",\"user_sid\":", ex->user_sid, false);
	add_string_field(b, ",\"friendly_name\":", c.ch.friendly_name.data, c.ch.name_null);
	if (e->drift)
		buf_adds(b, ",\"conversation_state\":7");
	else
		add_string_field(b, ",\"conversation_state\":", conversation_state_name(e), false);
	add_timers(b, &c);
	add_string_field(b, ",\"attributes\":", c.ch.attributes.data, false);
	add_string_field(b, ",\"date_created\":", c.ch.date_created, false);
	add_string_field(b, ",\"date_updated\":", c.ch.date_updated, false);
	add_string_field(b, ",\"created_by\":", ex->identity, false);
	add_string_field(b, ",\"notification_level\":", e->muted ? "muted" : "default", false);
	add_string_field(b, ",\"unique_name\":", c.ch.unique_name.data, c.ch.unique_null);
	add_conversation_links(b, ex, e);
	add_dimension_tail(b, ex, &rf);
	buf_addc(b, '}');
	conversation_free(&c);
}

static void
add_channel_entry_json(struct buf *b, const struct exchange *ex, const struct entry *e)
{
	bool extra = ex->srv->cfg->extra_fields;
	bool v2 = ex->api->id == API_CHAT_V2;

	buf_addc(b, '{');
	if (extra)
		buf_adds(b, EXTRA_ENTRY_HEAD);
	buf_adds(b, "\"account_sid\":");
	buf_adds(b, ex->srv->account_json);
	add_quoted_or_null(b, ",\"service_sid\":", ex->service, false);
	add_quoted_or_null(b, ",\"channel_sid\":", e->channel_sid, e->channel_null);
	if (v2)
		add_quoted_or_null(b, ",\"user_sid\":", ex->user_sid, false);
	add_quoted_or_null(b, ",\"member_sid\":", e->member_sid, e->member_null);
	if (e->drift)
		buf_adds(b, ",\"status\":7");
	else
		add_quoted_or_null(b, ",\"status\":", status_spelling(ex, e->status),
				   e->status == NULL);
	buf_adds(b, ",\"last_consumed_message_index\":");
	if (e->index_null)
		buf_adds(b, "null");
	else
		buf_add_u64(b, e->last_consumed);
	buf_adds(b, ",\"unread_messages_count\":");
	if (e->drift)
		buf_addc(b, '"');
	buf_add_u64(b, e->unread);
	if (e->drift)
		buf_addc(b, '"');
	add_links(b, ex, e);
	if (v2)
		add_v2_entry_tail(b, ex, e);
	if (extra)
		add_extra_entry_tail(b, ex, e);
	add_hostile_fields(b, ",\"attributes\":", ",\"friendly_name\":", e->deep, e->longstr);
	buf_addc(b, '}');
}

static void
add_entry_json(struct buf *b, const struct exchange *ex, const struct entry *e)
{
	if (ex->api->id == API_CONVERSATIONS_V1)
		add_conversation_json(b, ex, e);
	else
		add_channel_entry_json(b, ex, e);
}

/* Adds the comma before every array item but the first. */
static void
add_separator(struct buf *b, uint64_t *items)
{
	if (*items > 0)
		buf_addc(b, ',');
	(*items)++;
}

/* The two bad entries of a badrow fault: a null and an invalid channel SID. */
static void
add_bad_rows(struct buf *b, const struct exchange *ex, const struct dataset *ds, uint64_t *items)
{
	struct entry e;

	make_entry(ds, ds->slots + 1000, &e);
	e.channel_null = true;
	add_separator(b, items);
	add_entry_json(b, ex, &e);
	make_entry(ds, ds->slots + 1001, &e);
	snprintf(e.channel_sid, sizeof(e.channel_sid), "%s", "CHnot-a-sid");
	e.links_null = true;
	add_separator(b, items);
	add_entry_json(b, ex, &e);
}

static void
add_channels(struct buf *b, const struct exchange *ex, const struct dataset *ds,
	     const struct page_plan *plan)
{
	uint64_t first = ex->page * ex->page_size;
	uint64_t end = first + ex->page_size < ds->present ? first + ex->page_size : ds->present;
	uint64_t count = first < end ? end - first : 0;
	uint64_t items = 0;
	size_t per_entry =
		ENTRY_JSON_ESTIMATE + (ex->srv->cfg->extra_fields ? EXTRA_JSON_ESTIMATE : 0);

	buf_reserve(b, (size_t)(count + 2) * per_entry + 2048);
	buf_addc(b, '"');
	buf_adds(b, listing_key(ex));
	buf_adds(b, "\":[");
	for (uint64_t j = 0; j < count; j++) {
		struct entry e;

		if (plan->badrow && j == count / 2)
			add_bad_rows(b, ex, ds, &items);
		make_entry(ds, dataset_slot(ds, first + j), &e);
		if (plan->oddstatus && j == 0)
			mark_odd(&e);
		e.deep = plan->deep && j == 0;
		e.longstr = plan->longstr && j == 0;
		e.drift = plan->typedrift;
		add_separator(b, &items);
		add_entry_json(b, ex, &e);
	}
	if (plan->badrow && count == 0)
		add_bad_rows(b, ex, ds, &items);
	buf_addc(b, ']');
}

static void
add_next_url(struct buf *b, struct exchange *ex, uint64_t total, const struct page_plan *plan,
	     const char *origin)
{
	char foreign[48];

	if (plan->loop) {
		add_page_url(b, ex, origin, 0);
	} else if (plan->foreign) {
		snprintf(foreign, sizeof(foreign), "http://" FOREIGN_HOST ":%u", ex->srv->port);
		add_page_url(b, ex, foreign, ex->page + 1);
	} else if ((ex->page + 1) * ex->page_size < total) {
		add_page_url(b, ex, origin, ex->page + 1);
	} else {
		buf_adds(b, "null");
	}
}

static void
add_meta(struct buf *b, struct exchange *ex, uint64_t total, const struct page_plan *plan)
{
	bool extra = ex->srv->cfg->extra_fields;
	struct buf origin = {0};

	buf_adds(&origin, "http://");
	buf_adds(&origin, request_host(ex));
	buf_adds(b, ",\"meta\":{");
	if (extra)
		buf_adds(b, EXTRA_META_HEAD);
	buf_adds(b, "\"page\":");
	buf_add_u64(b, ex->page);
	buf_adds(b, ",\"page_size\":");
	buf_add_u64(b, ex->page_size);
	buf_adds(b, ",\"first_page_url\":");
	add_page_url(b, ex, origin.data, 0);
	buf_adds(b, ",\"previous_page_url\":");
	if (ex->page > 0)
		add_page_url(b, ex, origin.data, ex->page - 1);
	else
		buf_adds(b, "null");
	buf_adds(b, ",\"url\":");
	add_page_url(b, ex, origin.data, ex->page);
	buf_adds(b, ",\"next_page_url\":");
	add_next_url(b, ex, total, plan, origin.data);
	buf_adds(b, ",\"key\":\"");
	buf_adds(b, listing_key(ex));
	buf_addc(b, '"');
	if (extra)
		buf_adds(b, EXTRA_META_TAIL);
	buf_addc(b, '}');
	buf_free(&origin);
}

struct truncated {
	char *data;
	size_t len;
};

static ssize_t
truncated_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct truncated *t = cls;
	size_t n;

	if (pos >= t->len)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	n = t->len - (size_t)pos < max ? t->len - (size_t)pos : max;
	memcpy(out, t->data + pos, n);
	return (ssize_t)n;
}

static void
truncated_free(void *cls)
{
	struct truncated *t = cls;

	free(t->data);
	free(t);
}

/* Sends the first half of the body chunked, then aborts the connection. */
static enum MHD_Result
respond_truncated(struct exchange *ex, struct buf *b)
{
	struct truncated *t = xmalloc(sizeof(*t));
	struct MHD_Response *resp;

	t->len = b->len / 2;
	t->data = buf_take(b);
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, &truncated_read, t,
						 &truncated_free);
	if (resp == NULL) {
		truncated_free(t);
		return MHD_NO;
	}
	return respond(ex, MHD_HTTP_OK, resp);
}

/* Ends a listing's body with its meta. */
static void
finish_listing(struct exchange *ex, struct buf *b, uint64_t total, const struct page_plan *plan)
{
	if (!plan->nometa)
		add_meta(b, ex, total, plan);
	buf_addc(b, '}');
}

static void
render_memberships(struct exchange *ex, const struct page_plan *plan, struct buf *b)
{
	struct dataset ds;

	dataset_init(&ds, ex->srv->cfg, ex->service, ex->identity);
	buf_addc(b, '{');
	add_channels(b, ex, &ds, plan);
	finish_listing(ex, b, ds.present, plan);
}

/* Appends the JSON string of the API's link base + the service + collection + sid + sub. */
static void
add_link(struct buf *b, const struct exchange *ex, const char *collection, const char *sid,
	 const char *sub)
{
	struct buf url = {0};

	buf_adds(&url, ex->api->link_base);
	buf_adds(&url, ex->service);
	buf_adds(&url, collection);
	buf_adds(&url, sid);
	buf_adds(&url, sub);
	buf_add_json_string(b, url.data);
	buf_free(&url);
}

/*
 * The service; Chat v2 has no webhooks object, and adds the webhooks' retry
 * counts, media and a bindings link.
 */
static void
add_service_json(struct buf *b, const struct exchange *ex, const struct service_row *r,
		 const struct row_faults *rf)
{
	bool v2 = ex->api->id == API_CHAT_V2;

	add_string_field(b, "{\"sid\":", ex->service, false);
	buf_adds(b, ",\"account_sid\":");
	buf_adds(b, ex->srv->account_json);
	add_string_field(b, ",\"friendly_name\":", r->friendly_name.data, false);
	add_string_field(b, ",\"date_created\":", r->date_created, false);
	add_string_field(b, ",\"date_updated\":", r->date_updated, false);
	add_string_field(b, ",\"default_service_role_sid\":", r->roles[ROLE_SERVICE_USER], false);
	add_string_field(b, ",\"default_channel_role_sid\":", r->roles[ROLE_CHANNEL_USER], false);
	add_string_field(b, ",\"default_channel_creator_role_sid\":", r->roles[ROLE_CHANNEL_ADMIN],
			 false);
	add_bool_field(b, ",\"read_status_enabled\":", true, rf->drift);
	add_bool_field(b, ",\"reachability_enabled\":", false, false);
	add_u64_field(b, ",\"typing_indicator_timeout\":", SERVICE_TYPING_TIMEOUT, rf->drift);
	add_u64_field(b, ",\"consumption_report_interval\":", SERVICE_CONSUMPTION_INTERVAL, false);
	add_u64_field(b, ",\"limits\":{\"channel_members\":", SERVICE_CHANNEL_MEMBERS, false);
	add_u64_field(b, ",\"user_channels\":", r->user_channels, false);
	buf_addc(b, '}');
	if (!v2)
		buf_adds(b, ",\"webhooks\":{}");
	buf_adds(b, ",\"pre_webhook_url\":null,\"post_webhook_url\":null,"
		    "\"webhook_method\":null,\"webhook_filters\":[]");
	if (v2)
		buf_adds(b, ",\"pre_webhook_retry_count\":0,\"post_webhook_retry_count\":0");
	buf_adds(b, ",\"notifications\":{"
		    "\"added_to_channel\":{\"enabled\":false},"
		    "\"invited_to_channel\":{\"enabled\":false},"
		    "\"new_message\":{\"enabled\":false},"
		    "\"removed_from_channel\":{\"enabled\":false}}");
	if (v2)
		buf_adds(b, ",\"media\":{\"size_limit_mb\":" STR(
				    SERVICE_MEDIA_LIMIT_MB) ",\"compatibility_message\":null}");
	buf_adds(b, ",\"url\":");
	add_link(b, ex, "", "", "");
	buf_adds(b, ",\"links\":{\"channels\":");
	add_link(b, ex, "/Channels", "", "");
	buf_adds(b, ",\"roles\":");
	add_link(b, ex, "/Roles", "", "");
	buf_adds(b, ",\"users\":");
	add_link(b, ex, "/Users", "", "");
	if (v2) {
		buf_adds(b, ",\"bindings\":");
		add_link(b, ex, "/Bindings", "", "");
	}
	buf_addc(b, '}');
	add_dimension_tail(b, ex, rf);
	buf_addc(b, '}');
}

static void
add_user_json(struct buf *b, const struct exchange *ex, const struct user_row *r,
	      const struct row_faults *rf)
{
	const char *sid = r->user->sid;

	add_string_field(b, "{\"sid\":", sid, false);
	buf_adds(b, ",\"account_sid\":");
	buf_adds(b, ex->srv->account_json);
	add_string_field(b, ",\"service_sid\":", ex->service, false);
	add_string_field(b, ",\"identity\":", r->user->identity, false);
	add_string_field(b, ",\"friendly_name\":", r->friendly_name.data, r->name_null);
	add_string_field(b, ",\"role_sid\":", r->role_sid, false);
	add_string_field(b, ",\"attributes\":", r->attributes.data, false);
	add_bool_field(b, ",\"is_online\":", r->is_online, rf->drift);
	buf_adds(b, ",\"is_notifiable\":");
	buf_adds(b, r->notifiable_null ? "null" : r->is_notifiable ? "true" : "false");
	add_string_field(b, ",\"date_created\":", r->date_created, false);
	add_string_field(b, ",\"date_updated\":", r->date_updated, false);
	add_u64_field(b, ",\"joined_channels_count\":", r->joined, rf->drift);
	buf_adds(b, ",\"links\":{\"user_channels\":");
	add_link(b, ex, "/Users/", sid, "/Channels");
	if (ex->api->id == API_CHAT_V2) {
		buf_adds(b, ",\"user_bindings\":");
		add_link(b, ex, "/Users/", sid, "/Bindings");
	}
	buf_adds(b, "},\"url\":");
	add_link(b, ex, "/Users/", sid, "");
	add_dimension_tail(b, ex, rf);
	buf_addc(b, '}');
}

/*
 * Chat v2's further links of a channel: its webhooks and its last message,
 * null when it has none; the message's SID follows from the channel's and
 * the count of its messages.
 */
static void
add_v2_channel_links(struct buf *b, const struct exchange *ex, const struct channel_row *r)
{
	uint64_t h = fnv1a_str(0xcbf29ce484222325ULL ^ mix64(r->messages), r->e.channel_sid);
	char message_sid[35];
	char sub[48];

	buf_adds(b, ",\"webhooks\":");
	add_link(b, ex, "/Channels/", r->e.channel_sid, "/Webhooks");
	buf_adds(b, ",\"last_message\":");
	if (r->messages == 0) {
		buf_adds(b, "null");
		return;
	}
	format_sid(message_sid, "IM", mix64(h), mix64(h ^ 0x494d), false);
	snprintf(sub, sizeof(sub), "/Messages/%s", message_sid);
	add_link(b, ex, "/Channels/", r->e.channel_sid, sub);
}

static void
add_channel_json(struct buf *b, const struct exchange *ex, const struct channel_row *r,
		 const struct row_faults *rf)
{
	const char *sid = r->e.channel_sid;

	add_string_field(b, "{\"sid\":", sid, false);
	buf_adds(b, ",\"account_sid\":");
	buf_adds(b, ex->srv->account_json);
	add_string_field(b, ",\"service_sid\":", ex->service, false);
	add_string_field(b, ",\"friendly_name\":", r->friendly_name.data, r->name_null);
	add_string_field(b, ",\"unique_name\":", r->unique_name.data, r->unique_null);
	add_string_field(b, ",\"attributes\":", r->attributes.data, false);
	if (rf->drift)
		buf_adds(b, ",\"type\":7");
	else
		add_string_field(b, ",\"type\":", r->is_private ? "private" : "public", false);
	add_string_field(b, ",\"date_created\":", r->date_created, false);
	add_string_field(b, ",\"date_updated\":", r->date_updated, false);
	add_string_field(b, ",\"created_by\":", r->creator, false);
	add_u64_field(b, ",\"members_count\":", r->members, rf->drift);
	add_u64_field(b, ",\"messages_count\":", r->messages, false);
	buf_adds(b, ",\"url\":");
	add_link(b, ex, "/Channels/", sid, "");
	buf_adds(b, ",\"links\":{\"members\":");
	add_link(b, ex, "/Channels/", sid, "/Members");
	buf_adds(b, ",\"messages\":");
	add_link(b, ex, "/Channels/", sid, "/Messages");
	buf_adds(b, ",\"invites\":");
	add_link(b, ex, "/Channels/", sid, "/Invites");
	if (ex->api->id == API_CHAT_V2)
		add_v2_channel_links(b, ex, r);
	buf_addc(b, '}');
	add_dimension_tail(b, ex, rf);
	buf_addc(b, '}');
}

/* The two bad entries of a badrow fault on a dimension: a null and an invalid SID. */
static void
add_dimension_bad_rows(struct buf *b, const struct exchange *ex, uint64_t *items)
{
	for (int i = 0; i < 2; i++) {
		add_separator(b, items);
		buf_adds(b, "{\"sid\":");
		if (i == 0)
			buf_adds(b, "null");
		else
			buf_adds(b,
				 ex->endpoint == EP_USERS ? "\"USnot-a-sid\"" : "\"CHnot-a-sid\"");
		buf_adds(b, ",\"account_sid\":");
		buf_adds(b, ex->srv->account_json);
		add_string_field(b, ",\"service_sid\":", ex->service, false);
		buf_addc(b, '}');
	}
}

/* The entries of the page asked for out of total: the first, and how many. */
static void
page_window(const struct exchange *ex, uint64_t total, uint64_t *first, uint64_t *count)
{
	uint64_t end;

	*first = ex->page * ex->page_size;
	end = *first + ex->page_size < total ? *first + ex->page_size : total;
	*count = *first < end ? end - *first : 0;
}

static void
render_service(struct exchange *ex, const struct page_plan *plan, struct buf *b)
{
	struct row_faults rf = {plan->deep, plan->longstr, plan->typedrift};
	struct service_row r;

	make_service_row(ex->srv->cfg, ex->service, &r);
	add_service_json(b, ex, &r, &rf);
	buf_free(&r.friendly_name);
}

/*
 * Conversations' configuration of the account, as the spec's example has
 * it, no timers set; typedrift serves default_inactive_timer as a number.
 */
static void
render_configuration(struct exchange *ex, const struct page_plan *plan, struct buf *b)
{
	struct row_faults rf = {plan->deep, plan->longstr, plan->typedrift};
	char messaging[35];

	messaging_service_sid(messaging, ex->srv->cfg);
	buf_adds(b, "{\"account_sid\":");
	buf_adds(b, ex->srv->account_json);
	add_string_field(b, ",\"default_chat_service_sid\":", ex->service, false);
	add_string_field(b, ",\"default_messaging_service_sid\":", messaging, false);
	buf_adds(b,
		 rf.drift ? ",\"default_inactive_timer\":7" : ",\"default_inactive_timer\":null");
	buf_adds(b, ",\"default_closed_timer\":null");
	buf_adds(b, ",\"url\":\"" CONVERSATIONS_BASE "/Configuration\"");
	buf_adds(b, ",\"links\":{\"service\":\"" CONVERSATIONS_BASE "/Services/");
	buf_adds(b, ex->service);
	buf_adds(b, "/Configuration\",\"webhooks\":\"" CONVERSATIONS_BASE
		    "/Configuration/Webhooks\"}");
	add_dimension_tail(b, ex, &rf);
	buf_addc(b, '}');
}

static void
render_users(struct exchange *ex, const struct page_plan *plan, struct buf *b)
{
	const struct config *cfg = ex->srv->cfg;
	uint64_t total = users_listed(cfg);
	uint64_t first, count, items = 0;

	page_window(ex, total, &first, &count);
	buf_adds(b, "{\"users\":[");
	for (uint64_t j = 0; j < count; j++) {
		struct row_faults rf = {plan->deep && j == 0, plan->longstr && j == 0,
					plan->typedrift};
		struct user_row r;

		if (plan->badrow && j == count / 2)
			add_dimension_bad_rows(b, ex, &items);
		make_user_row(cfg, ex->service, listed_user(cfg, (size_t)(first + j)), &r);
		add_separator(b, &items);
		add_user_json(b, ex, &r, &rf);
		user_row_free(&r);
	}
	if (plan->badrow && count == 0)
		add_dimension_bad_rows(b, ex, &items);
	buf_addc(b, ']');
	finish_listing(ex, b, total, plan);
}

static void
render_channels(struct exchange *ex, const struct page_plan *plan, struct buf *b)
{
	const struct config *cfg = ex->srv->cfg;
	uint64_t per_user;
	uint64_t *slots = listed_slots(cfg, ex->types, &per_user);
	uint64_t total = per_user * cfg->n_users;
	uint64_t first, count, items = 0;

	page_window(ex, total, &first, &count);
	buf_adds(b, "{\"channels\":[");
	for (uint64_t j = 0; j < count; j++) {
		struct row_faults rf = {plan->deep && j == 0, plan->longstr && j == 0,
					plan->typedrift};
		uint64_t n = first + j;
		struct channel_row r;

		if (plan->badrow && j == count / 2)
			add_dimension_bad_rows(b, ex, &items);
		make_channel_row(cfg, ex->service, cfg->users[n / per_user].identity,
				 slots[n % per_user], &r);
		add_separator(b, &items);
		add_channel_json(b, ex, &r, &rf);
		channel_row_free(&r);
	}
	if (plan->badrow && count == 0)
		add_dimension_bad_rows(b, ex, &items);
	buf_addc(b, ']');
	free(slots);
	finish_listing(ex, b, total, plan);
}

/* Appends the body of the page asked for, as the plan shapes it, to b. */
static void
render_page(struct exchange *ex, const struct page_plan *plan, struct buf *b)
{
	switch (ex->endpoint) {
	case EP_SERVICE:
		render_service(ex, plan, b);
		break;
	case EP_USERS:
		render_users(ex, plan, b);
		break;
	case EP_CHANNELS:
		render_channels(ex, plan, b);
		break;
	case EP_CONFIGURATION:
		render_configuration(ex, plan, b);
		break;
	case EP_MEMBERSHIPS:
	default:
		render_memberships(ex, plan, b);
		break;
	}
}

static enum MHD_Result
serve_page(struct exchange *ex, const struct page_plan *plan)
{
	struct buf b = {0};

	render_page(ex, plan, &b);
	if (plan->truncate)
		return respond_truncated(ex, &b);
	return respond_buf(ex, MHD_HTTP_OK, &b);
}

/*
 * A page with --cache-bodies (and so no fault): its body as first rendered
 * for this Host and target (page URLs carry the Host), sent from the kept
 * bytes without a copy.
 */
static enum MHD_Result
serve_kept_page(struct exchange *ex, const struct page_plan *plan)
{
	struct body_cache *cache = ex->srv->cache;
	const struct kept_body *k;
	struct MHD_Response *resp;
	struct buf key = {0};

	buf_adds(&key, request_host(ex));
	buf_addc(&key, '\n');
	buf_adds(&key, ex->target);
	k = body_cache_find(cache, key.data);
	if (k == NULL) {
		struct buf b = {0};

		render_page(ex, plan, &b);
		k = body_cache_keep(cache, key.data, &b);
	}
	buf_free(&key);
	resp = MHD_create_response_from_buffer(k->len, k->body, MHD_RESPMEM_PERSISTENT);
	if (resp == NULL)
		return MHD_NO;
	return respond(ex, MHD_HTTP_OK, resp);
}

static enum MHD_Result
respond_malformed(struct exchange *ex)
{
	struct buf b = {0};

	buf_adds(&b, "{\"");
	buf_adds(&b, listing_key(ex));
	buf_adds(&b, "\":[{\"account_sid\":");
	buf_adds(&b, ex->srv->account_json);
	buf_adds(&b, ",\"channel_sid\": tru}, {\"meta\":{\"page\":");
	return respond_buf(ex, MHD_HTTP_OK, &b);
}

/* A 302 to the same target on another loopback address, where no request may ever arrive. */
static enum MHD_Result
respond_redirect(struct exchange *ex)
{
	struct buf location = {0};
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;
	char origin[48];

	if (resp == NULL)
		return MHD_NO;
	snprintf(origin, sizeof(origin), "http://" FOREIGN_HOST ":%u", ex->srv->port);
	buf_adds(&location, origin);
	buf_adds(&location, ex->target);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, location.data);
	ret = respond(ex, MHD_HTTP_FOUND, resp);
	buf_free(&location);
	return ret;
}

static enum MHD_Result
serve_fault(struct exchange *ex, const struct fault *f, struct page_plan *plan)
{
	switch (f->kind) {
	case FAULT_429:
	case FAULT_429R:
		return respond_status_fault(ex, MHD_HTTP_TOO_MANY_REQUESTS, f->kind == FAULT_429R);
	case FAULT_500:
		return respond_status_fault(ex, MHD_HTTP_INTERNAL_SERVER_ERROR, false);
	case FAULT_503:
		return respond_status_fault(ex, MHD_HTTP_SERVICE_UNAVAILABLE, false);
	case FAULT_403:
		return respond_status_fault(ex, MHD_HTTP_FORBIDDEN, false);
	case FAULT_400:
		return respond_status_fault(ex, MHD_HTTP_BAD_REQUEST, false);
	case FAULT_REDIRECT:
		return respond_redirect(ex);
	case FAULT_404:
		return respond_not_found(ex);
	case FAULT_MALFORMED:
		return respond_malformed(ex);
	case FAULT_SHAPE:
		return respond_text(ex, MHD_HTTP_OK, "[1,2,3]");
	case FAULT_NOMETA:
		plan->nometa = true;
		return serve_page(ex, plan);
	case FAULT_TRUNCATE:
	case FAULT_CUT:
	default:
		plan->truncate = true;
		return serve_page(ex, plan);
	}
}

/* The path of the resource, re-encoded, as page URLs and links carry it. */
static void
set_url_path(struct exchange *ex)
{
	buf_addc(&ex->url_path, '/');
	buf_adds(&ex->url_path, ex->api->version);
	if (!ex->unscoped) {
		buf_adds(&ex->url_path, "/Services/");
		buf_adds(&ex->url_path, ex->service);
	}
	if (ex->endpoint == EP_CONFIGURATION)
		buf_adds(&ex->url_path, "/Configuration");
	if (ex->endpoint == EP_USERS || ex->endpoint == EP_MEMBERSHIPS)
		buf_adds(&ex->url_path, "/Users");
	if (ex->endpoint == EP_MEMBERSHIPS) {
		buf_addc(&ex->url_path, '/');
		buf_add_pct_segment(&ex->url_path, ex->user);
		buf_addc(&ex->url_path, '/');
		buf_adds(&ex->url_path, ex->api->memberships);
	}
	if (ex->endpoint == EP_CHANNELS)
		buf_adds(&ex->url_path, "/Channels");
}

/* Reads the query: paging for the listings, Type for the channels; false after queuing a 400. */
static bool
check_query(struct exchange *ex, enum MHD_Result *ret)
{
	struct query q;
	bool ok = true;

	query_parse(ex->query, &q);
	if (ex->endpoint != EP_SERVICE && ex->endpoint != EP_CONFIGURATION)
		ok = check_paging(ex, &q, ret);
	if (ok && ex->endpoint == EP_CHANNELS)
		ok = check_types(ex, &q, ret);
	query_free(&q);
	return ok;
}

static enum MHD_Result
serve(struct exchange *ex, const char *method)
{
	struct page_plan plan = {0};
	const struct fault *f;
	enum MHD_Result ret;
	unsigned status;
	bool route_ok = parse_route(ex);

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 || !route_ok || !is_service_sid(ex->service))
		return respond_not_found(ex);
	if (!check_auth(ex))
		return respond_error(ex, MHD_HTTP_UNAUTHORIZED, 20003, "Authenticate",
				     MHD_HTTP_HEADER_WWW_AUTHENTICATE,
				     "Basic realm=\"Twilio API\"");
	if (!check_query(ex, &ret))
		return ret;
	status = pick_rate_fault(ex);
	if (status != 0)
		return respond_status_fault(ex, status, false);
	set_url_path(ex);
	plan_modifiers(ex, &plan);
	f = pick_fault(ex);
	if (f != NULL)
		return serve_fault(ex, f, &plan);
	if (ex->srv->cache != NULL)
		return serve_kept_page(ex, &plan);
	return serve_page(ex, &plan);
}

static void
exchange_init(struct exchange *ex, struct server *srv, struct MHD_Connection *conn,
	      const char *target)
{
	const char *qmark = strchr(target, '?');
	size_t path_len = qmark != NULL ? (size_t)(qmark - target) : strlen(target);

	memset(ex, 0, sizeof(*ex));
	ex->srv = srv;
	ex->conn = conn;
	ex->target = target;
	ex->path = xstrndup(target, path_len);
	ex->query = qmark != NULL ? qmark + 1 : "";
}

static void
exchange_clear(struct exchange *ex)
{
	free(ex->path);
	free(ex->service);
	free(ex->user);
	buf_free(&ex->url_path);
	buf_free(&ex->url_query);
}

/*
 * MHD access handler: answers once the whole request (any body ignored) has
 * been read, so that MHD can keep the connection alive.
 */
static enum MHD_Result
handle_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
	       const char *version, const char *upload_data, size_t *upload_data_size,
	       void **req_cls)
{
	struct request *req = *req_cls;
	struct exchange ex;
	enum MHD_Result ret;

	(void)version;
	(void)upload_data;
	if (req != NULL && !req->started) {
		req->started = true;
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	exchange_init(&ex, cls, conn, req != NULL ? req->target : url);
	ret = serve(&ex, method);
	exchange_clear(&ex);
	return ret;
}

/* MHD URI log callback: keeps the raw target, query included. */
static void *
remember_target(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct request *req = xmalloc(sizeof(*req));

	(void)cls;
	(void)conn;
	req->target = xstrdup(uri);
	req->started = false;
	return req;
}

static void
request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
		  enum MHD_RequestTerminationCode toe)
{
	struct request *req = *req_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (req != NULL) {
		free(req->target);
		free(req);
	}
	*req_cls = NULL;
}

/* MHD unescape callback: leaves the path raw so that %2F stays inside a segment. */
static size_t
keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	return strlen(s);
}

/* ---------------------------------------------------------------------------
 * Startup and shutdown
 */

struct listen_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	int family;
	char host[INET6_ADDRSTRLEN];
};

static bool
parse_listen_host(const char *host, uint64_t port, struct listen_addr *la)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&la->ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&la->ss;

	memset(la, 0, sizeof(*la));
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		la->family = AF_INET;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		la->len = sizeof(*sin);
		inet_ntop(AF_INET, &sin->sin_addr, la->host, sizeof(la->host));
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		la->family = AF_INET6;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		la->len = sizeof(*sin6);
		inet_ntop(AF_INET6, &sin6->sin6_addr, la->host, sizeof(la->host));
		return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
	}
	return false;
}

/* Parses ADDR:PORT or [ADDR]:PORT and insists on a loopback address. */
static bool
parse_listen(const char *spec, struct listen_addr *la)
{
	const char *colon = strrchr(spec, ':');
	const char *host_start = spec;
	size_t host_len;
	uint64_t port;
	char *host;
	bool ok;

	if (colon == NULL || !parse_u64(colon + 1, 65535, &port))
		goto bad;
	host_len = (size_t)(colon - spec);
	if (spec[0] == '[' && host_len >= 2 && spec[host_len - 1] == ']') {
		host_start++;
		host_len -= 2;
	}
	host = xstrndup(host_start, host_len);
	ok = parse_listen_host(host, port, la);
	free(host);
	if (ok)
		return true;
	fprintf(stderr, PROGNAME ": refusing to listen on \"%s\": not a numeric loopback address\n",
		spec);
	return false;
bad:
	fprintf(stderr, PROGNAME ": invalid --listen \"%s\" (expected ADDR:PORT)\n", spec);
	return false;
}

static int
open_listener(struct listen_addr *la, unsigned *port)
{
	int one = 1;
	int fd = socket(la->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (la->family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&la->ss, la->len) != 0 || listen(fd, 1024) != 0)
		goto fail;
	la->len = sizeof(la->ss);
	if (getsockname(fd, (struct sockaddr *)&la->ss, &la->len) != 0)
		goto fail;
	*port = la->family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&la->ss)->sin6_port)
				       : ntohs(((struct sockaddr_in *)&la->ss)->sin_port);
	return fd;
fail:
	fprintf(stderr, PROGNAME ": could not listen on %s: %s\n", la->host, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static bool
write_port_file(const char *path, unsigned port)
{
	struct buf tmp = {0};
	char line[16];
	int len = snprintf(line, sizeof(line), "%u\n", port);
	bool ok = false;
	int fd;

	buf_adds(&tmp, path);
	buf_adds(&tmp, ".tmp");
	fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		ok = write(fd, line, (size_t)len) == len;
		ok = close(fd) == 0 && ok;
		ok = ok && rename(tmp.data, path) == 0;
	}
	if (!ok)
		fprintf(stderr, PROGNAME ": could not write port file \"%s\": %s\n", path,
			strerror(errno));
	buf_free(&tmp);
	return ok;
}

static void
server_init(struct server *srv, const struct config *cfg)
{
	struct buf b = {0};
	pthread_condattr_t attr;

	memset(srv, 0, sizeof(*srv));
	srv->cfg = cfg;
	srv->log_fd = -1;
	buf_adds(&b, cfg->account_sid);
	buf_addc(&b, ':');
	buf_adds(&b, cfg->auth_token);
	srv->credentials_len = b.len;
	srv->credentials = buf_take(&b);
	buf_add_json_string(&b, cfg->account_sid);
	srv->account_json = buf_take(&b);
	counter_map_init(&srv->counters);
	if (cfg->cache_bodies)
		srv->cache = body_cache_new();
	pthread_mutex_init(&srv->stop_lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&srv->stop_cond, &attr);
	pthread_condattr_destroy(&attr);
}

static void
server_destroy(struct server *srv)
{
	if (srv->log_fd >= 0)
		close(srv->log_fd);
	free(srv->credentials);
	free(srv->account_json);
	counter_map_destroy(&srv->counters);
	body_cache_free(srv->cache);
	pthread_cond_destroy(&srv->stop_cond);
	pthread_mutex_destroy(&srv->stop_lock);
}

static void
server_stop_waiters(struct server *srv)
{
	pthread_mutex_lock(&srv->stop_lock);
	srv->stopping = true;
	pthread_cond_broadcast(&srv->stop_cond);
	pthread_mutex_unlock(&srv->stop_lock);
}

/*
 * Without latency a small pool of epoll threads serves everything; with
 * latency each connection gets its own thread, so that waiting requests do
 * not hold up one another.
 */
static struct MHD_Daemon *
start_daemon(struct server *srv, int listen_fd, int family)
{
	unsigned flags =
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ITC | MHD_USE_ERROR_LOG;
	enum MHD_OPTION pool_option = MHD_OPTION_THREAD_POOL_SIZE;

	if (family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (srv->cfg->latency_ms > 0) {
		flags |= MHD_USE_THREAD_PER_CONNECTION;
		pool_option = MHD_OPTION_END;
	}
	return MHD_start_daemon(flags, 0, NULL, NULL, &handle_request, srv,
				MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd,
				MHD_OPTION_URI_LOG_CALLBACK, &remember_target, srv,
				MHD_OPTION_UNESCAPE_CALLBACK, &keep_escaped, srv,
				MHD_OPTION_NOTIFY_COMPLETED, &request_completed, srv,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
				MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
				/* must stay last: MHD_OPTION_END ends the list early */
				pool_option, (unsigned int)srv->cfg->threads, MHD_OPTION_END);
}

static bool
announce(struct server *srv, const struct listen_addr *la)
{
	if (la->family == AF_INET6)
		snprintf(srv->authority, sizeof(srv->authority), "[%s]:%u", la->host, srv->port);
	else
		snprintf(srv->authority, sizeof(srv->authority), "%s:%u", la->host, srv->port);
	if (srv->cfg->port_file != NULL && !write_port_file(srv->cfg->port_file, srv->port))
		return false;
	printf("listening on http://%s\n", srv->authority);
	return fflush(stdout) == 0;
}

static void
wait_for_signal(void)
{
	sigset_t set;
	int sig = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	while (sigwait(&set, &sig) != 0)
		;
}

/* Blocks SIGINT and SIGTERM in every thread, so that only sigwait() sees them. */
static void
block_signals(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static bool
open_log(struct server *srv)
{
	if (srv->cfg->log_path == NULL)
		return true;
	srv->log_fd = open(srv->cfg->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (srv->log_fd >= 0)
		return true;
	fprintf(stderr, PROGNAME ": could not open log \"%s\": %s\n", srv->cfg->log_path,
		strerror(errno));
	return false;
}

static int
run_server(const struct config *cfg)
{
	struct server srv;
	struct listen_addr la;
	struct MHD_Daemon *daemon = NULL;
	int listen_fd = -1;
	int status = 1;

	if (!parse_listen(cfg->listen, &la))
		return 2;
	block_signals();
	server_init(&srv, cfg);
	if (!open_log(&srv))
		goto out;
	listen_fd = open_listener(&la, &srv.port);
	if (listen_fd < 0)
		goto out;
	daemon = start_daemon(&srv, listen_fd, la.family);
	if (daemon == NULL) {
		fputs(PROGNAME ": could not start the HTTP daemon\n", stderr);
		close(listen_fd);
		goto out;
	}
	if (!announce(&srv, &la))
		goto out;
	wait_for_signal();
	status = 0;
out:
	server_stop_waiters(&srv);
	if (daemon != NULL) {
		MHD_stop_daemon(daemon);
		body_cache_report(srv.cache);
	}
	server_destroy(&srv);
	return status;
}

int
main(int argc, char **argv)
{
	struct config cfg;
	int status;

	config_init(&cfg);
	status = parse_args(argc, argv, &cfg);
	if (status == 0 && !users_finish(&cfg))
		status = 3;
	if (status != 0) {
		config_free(&cfg);
		return status - 1;
	}
	if (wants_dump(&cfg))
		status = run_dump(&cfg);
	else
		status = run_server(&cfg);
	config_free(&cfg);
	return status;
}
