/*
 * fake_twilio.c - a fake of Twilio's IP Messaging v1 user-channel list for tests
 *
 * Serves GET /v1/Services/{ServiceSid}/Users/{UserSid}/Channels on loopback
 * only, with deterministic data derived from (seed, service, user, slot),
 * Twilio-style paging, HTTP basic auth and injectable faults.  With --dump it
 * prints instead the data set it would serve, in PostgreSQL COPY text format,
 * so that tests can compare it with what the daemon stored.
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
#define FOREIGN_HOST "127.0.0.2"
#define ERROR_INFO_BASE "https://www.twilio.com/docs/errors/"

#define STR_(x) #x
#define STR(x) STR_(x)

#define MAX_CHANNELS 100000
#define MAX_PAGE_SIZE 1000
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

struct fault {
	enum fault_kind kind;
	enum fault_match match;
	bool modifier;
	char *user;    /* "*" matches every user */
	bool any_page; /* ARG was "*" */
	uint64_t arg;  /* request count or page index */
	bool on_page;  /* a count fault given as N@PAGE: counts requests for that page only */
	uint64_t page;
};

struct fault_rate {
	unsigned status;
	double probability;
};

struct config {
	char *listen;
	const char *port_file;
	char *account_sid;
	char *auth_token;
	uint64_t seed;
	uint64_t channels;
	uint64_t variant;
	uint64_t latency_ms;
	uint64_t fault_seed;
	uint64_t threads;
	const char *log_path;
	struct fault *faults;
	size_t n_faults;
	struct fault_rate rates[MAX_FAULT_RATES];
	size_t n_rates;
	bool extra_fields;
	const char **dump_users;
	size_t n_dump;
	const char *service;
	uint64_t dump_page_size;
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
}

static void
config_free(struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_faults; i++)
		free(cfg->faults[i].user);
	free(cfg->faults);
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
	      "Fake of Twilio's GET /v1/Services/{ServiceSid}/Users/{UserSid}/Channels.\n\n"
	      "  --listen ADDR:PORT      loopback address to listen on (default " DEFAULT_LISTEN
	      ";\n"
	      "                          port 0 picks a free port; [::1]:PORT for IPv6)\n"
	      "  --port-file FILE        write the chosen port and a newline to FILE\n"
	      "  --account-sid SID       basic-auth user (default " DEFAULT_ACCOUNT_SID ")\n"
	      "  --auth-token TOKEN      basic-auth password (default " DEFAULT_AUTH_TOKEN ")\n"
	      "  --auth-token-file FILE  read the auth token from FILE\n"
	      "  --seed N                data seed (default 1)\n"
	      "  --channels M            channel slots per user, 0..100000 (default 20)\n"
	      "  --variant V             data variant: removes and changes memberships\n"
	      "                          (default 0)\n"
	      "  --latency-ms MS         delay every response by MS milliseconds\n"
	      "  --threads N             worker threads when latency is 0 (default 4)\n"
	      "  --log FILE              append status, user, page, target per request\n"
	      "  --fault KIND:USER:ARG   inject a fault (repeatable; USER may be '*'):\n"
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
	      "  --dump USER             print USER's expected rows and exit (repeatable)\n"
	      "  --service IS...         the service of --dump\n"
	      "  --page-size N           page size that --dump assumes for oddstatus faults\n"
	      "                          (default 50)\n"
	      "  -h, --help              show this help\n",
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

enum {
	OPT_LISTEN = 256,
	OPT_PORT_FILE,
	OPT_ACCOUNT_SID,
	OPT_AUTH_TOKEN,
	OPT_AUTH_TOKEN_FILE,
	OPT_SEED,
	OPT_CHANNELS,
	OPT_VARIANT,
	OPT_LATENCY_MS,
	OPT_THREADS,
	OPT_LOG,
	OPT_FAULT,
	OPT_FAULT_RATE,
	OPT_FAULT_SEED,
	OPT_EXTRA_FIELDS,
	OPT_DUMP,
	OPT_SERVICE,
	OPT_PAGE_SIZE,
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
	{"latency-ms", required_argument, NULL, OPT_LATENCY_MS},
	{"threads", required_argument, NULL, OPT_THREADS},
	{"log", required_argument, NULL, OPT_LOG},
	{"fault", required_argument, NULL, OPT_FAULT},
	{"fault-rate", required_argument, NULL, OPT_FAULT_RATE},
	{"fault-seed", required_argument, NULL, OPT_FAULT_SEED},
	{"extra-fields", no_argument, NULL, OPT_EXTRA_FIELDS},
	{"dump", required_argument, NULL, OPT_DUMP},
	{"service", required_argument, NULL, OPT_SERVICE},
	{"page-size", required_argument, NULL, OPT_PAGE_SIZE},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

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
	default:
		return false;
	}
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
	case OPT_DUMP:
		cfg->dump_users = xrealloc(cfg->dump_users, (cfg->n_dump + 1) * sizeof(char *));
		cfg->dump_users[cfg->n_dump++] = arg;
		return true;
	case OPT_SEED:
	case OPT_CHANNELS:
	case OPT_VARIANT:
	case OPT_LATENCY_MS:
	case OPT_THREADS:
	case OPT_FAULT_SEED:
	case OPT_PAGE_SIZE:
		return apply_number_option(cfg, opt, arg);
	default:
		return apply_string_option(cfg, opt, arg);
	}
}

/* Returns 0 to go on, or an exit status + 1 (1 after --help, 3 on error). */
static int
parse_args(int argc, char **argv, struct config *cfg)
{
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
	if (cfg->n_dump > 0 && (cfg->service == NULL || !is_service_sid(cfg->service))) {
		fputs(PROGNAME ": --dump needs --service with a valid service SID (IS + 32 hex)\n",
		      stderr);
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
};

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

struct entry {
	char channel_sid[35];
	char member_sid[35];
	const char *status; /* NULL is JSON null */
	bool channel_null;
	bool member_null;
	bool index_null;
	bool links_null;
	bool deep;    /* carries attributes nested DEEP_NESTING levels */
	bool longstr; /* carries a friendly_name of LONG_STRING_BYTES bytes */
	bool drift;   /* status as a number, unread_messages_count as a string */
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

static void
make_entry(const struct dataset *ds, uint64_t slot, struct entry *e)
{
	static const char *const statuses[] = {"joined", "invited", "not_participating"};
	uint64_t b = ds->base;

	memset(e, 0, sizeof(*e));
	format_sid(e->channel_sid, "CH", slot_word(b, slot, SALT_CHANNEL_HI),
		   slot_word(b, slot, SALT_CHANNEL_LO), slot % 3 == 0);
	format_sid(e->member_sid, "MB", slot_word(b, slot, SALT_MEMBER_HI),
		   slot_word(b, slot, SALT_MEMBER_LO), slot % 3 == 1);
	e->status = statuses[slot_word(b, slot, SALT_STATUS) % 3];
	e->last_consumed = slot_word(b, slot, SALT_INDEX) % 1000;
	e->unread = slot_word(b, slot, SALT_UNREAD) % 50;
	e->index_null = slot % 13 == 5;
	e->links_null = slot % 17 == 7;
	e->member_null = slot % 19 == 11;
	if (e->member_null)
		e->status = NULL;
	if (ds->variant > 0 && slot % 7 == ds->variant % 7) {
		e->unread += ds->variant;
		if (!e->index_null)
			e->last_consumed += ds->variant;
	}
}

static bool
fault_user_matches(const struct fault *f, const char *user)
{
	return strcmp(f->user, "*") == 0 || strcmp(f->user, user) == 0;
}

static bool
fault_page_matches(const struct fault *f, uint64_t page)
{
	return f->any_page || f->arg == page;
}

static bool
has_modifier(const struct config *cfg, enum fault_kind kind, const char *user, uint64_t page)
{
	for (size_t i = 0; i < cfg->n_faults; i++) {
		const struct fault *f = &cfg->faults[i];

		if (f->kind == kind && fault_user_matches(f, user) && fault_page_matches(f, page))
			return true;
	}
	return false;
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
	buf_addc(b, '\t');
	if (e->links_null) {
		buf_adds(b, "\\N\t\\N\n");
		return;
	}
	buf_adds(b, LINK_BASE);
	buf_adds(b, cfg->service);
	buf_adds(b, "/Channels/");
	buf_adds(b, e->channel_sid);
	buf_addc(b, '\t');
	buf_adds(b, LINK_BASE);
	buf_adds(b, cfg->service);
	buf_adds(b, "/Channels/");
	buf_adds(b, e->channel_sid);
	buf_adds(b, "/Members/");
	buf_adds(b, e->member_sid);
	buf_addc(b, '\n');
}

static bool
dump_user(const struct config *cfg, const char *user)
{
	struct dataset ds;
	struct buf b = {0};
	bool ok;

	dataset_init(&ds, cfg, cfg->service, user);
	for (uint64_t j = 0; j < ds.present; j++) {
		struct entry e;
		uint64_t page = j / cfg->dump_page_size;

		make_entry(&ds, dataset_slot(&ds, j), &e);
		if (j % cfg->dump_page_size == 0 && has_modifier(cfg, FAULT_ODDSTATUS, user, page))
			e.status = "archived";
		add_dump_line(&b, cfg, user, &e);
	}
	ok = b.len == 0 || fwrite(b.data, 1, b.len, stdout) == b.len;
	buf_free(&b);
	return ok;
}

static int
run_dump(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_dump; i++) {
		if (!dump_user(cfg, cfg->dump_users[i])) {
			fprintf(stderr, PROGNAME ": could not write to stdout: %s\n",
				strerror(errno));
			return 1;
		}
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
	const char *target; /* raw, as received */
	char *path;	    /* raw path, without the query */
	const char *query;  /* raw query, without '?' ("" if none) */
	char *service;	    /* decoded, NULL until the route matched */
	char *user;	    /* decoded, NULL until the route matched */
	bool have_page;
	uint64_t page;
	uint64_t page_size;
	struct buf url_path; /* /v1/Services/S/Users/U/Channels, re-encoded */
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

/* Takes the next segment of the raw path at *p, decoded; false if absent or containing NUL. */
static bool
next_segment(const char **p, bool last, char **out)
{
	const char *end = strchr(*p, '/');
	size_t n = end != NULL ? (size_t)(end - *p) : strlen(*p);

	if ((end == NULL) != last)
		return false;
	*out = pct_decode(*p, n, false);
	*p = end != NULL ? end + 1 : *p + n;
	return *out != NULL;
}

/* Splits /v1/Services/{S}/Users/{U}/Channels into decoded segments. */
static bool
parse_route(struct exchange *ex)
{
	static const char *const fixed[6] = {"v1", "Services", NULL, "Users", NULL, "Channels"};
	char *seg[6] = {NULL};
	const char *p = ex->path;
	bool ok = *p == '/';
	int i;

	p++;
	for (i = 0; ok && i < 6; i++) {
		ok = next_segment(&p, i == 5, &seg[i]);
		if (ok && fixed[i] != NULL)
			ok = strcmp(seg[i], fixed[i]) == 0;
	}
	if (ok && seg[4][0] != '\0') {
		ex->service = seg[2];
		ex->user = seg[4];
		seg[2] = NULL;
		seg[4] = NULL;
	}
	for (i = 0; i < 6; i++)
		free(seg[i]);
	return ex->user != NULL;
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

/* Reads PageSize, Page and PageToken from the raw query; the last of each wins. */
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

/* Validates the paging parameters; on error queues a 400 and returns false. */
static bool
check_paging(struct exchange *ex, const struct query *q, enum MHD_Result *ret)
{
	char expected[32];

	ex->page_size = DEFAULT_PAGE_SIZE;
	ex->page = 0;
	if (q->page_size != NULL &&
	    (!parse_u64(q->page_size, MAX_PAGE_SIZE, &ex->page_size) || ex->page_size == 0)) {
		*ret = respond_error(ex, MHD_HTTP_BAD_REQUEST, 20001,
				     "Invalid PageSize: must be an integer between 1 and 1000",
				     NULL, NULL);
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

	if (f->modifier || !fault_user_matches(f, ex->user))
		return false;
	switch (f->match) {
	case MATCH_COUNT:
		if (f->on_page && ex->page != f->page)
			return false;
		return counter_next(&ex->srv->counters, (long)index, ex->user) < f->arg;
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

	plan->badrow = has_modifier(cfg, FAULT_BADROW, ex->user, ex->page);
	plan->oddstatus = has_modifier(cfg, FAULT_ODDSTATUS, ex->user, ex->page);
	plan->loop = has_modifier(cfg, FAULT_LOOP, ex->user, ex->page);
	plan->foreign = has_modifier(cfg, FAULT_FOREIGN, ex->user, ex->page);
	plan->deep = has_modifier(cfg, FAULT_DEEP, ex->user, ex->page);
	plan->longstr = has_modifier(cfg, FAULT_LONGSTR, ex->user, ex->page);
	plan->typedrift = has_modifier(cfg, FAULT_TYPEDRIFT, ex->user, ex->page);
}

static const char *
request_host(struct exchange *ex)
{
	const char *host =
		MHD_lookup_connection_value(ex->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);

	return host != NULL && *host != '\0' ? host : ex->srv->authority;
}

/* Appends the JSON string of the URL of page k at origin ("http://host"). */
static void
add_page_url(struct buf *b, struct exchange *ex, const char *origin, uint64_t k)
{
	struct buf url = {0};

	buf_adds(&url, origin);
	buf_add(&url, ex->url_path.data, ex->url_path.len);
	buf_adds(&url, "?PageSize=");
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
	buf_adds(b, "{\"channel\":\"" LINK_BASE);
	buf_adds(b, ex->service);
	buf_adds(b, "/Channels/");
	buf_adds(b, e->channel_sid);
	buf_adds(b, "\",\"member\":\"" LINK_BASE);
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

static void
add_extra_entry_tail(struct buf *b, const struct exchange *ex, const struct entry *e)
{
	size_t skip = strlen("/v1/Services/") + strlen(ex->service); /* leaves /Users/U/Channels */

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
add_hostile_fields(struct buf *b, const struct entry *e)
{
	if (e->deep) {
		buf_adds(b, ",\"attributes\":");
		for (int i = 0; i < DEEP_NESTING; i++)
			buf_addc(b, '[');
		for (int i = 0; i < DEEP_NESTING; i++)
			buf_addc(b, ']');
	}
	if (e->longstr) {
		buf_adds(b, ",\"friendly_name\":\"");
		buf_reserve(b, LONG_STRING_BYTES + 1);
		memset(b->data + b->len, 'x', LONG_STRING_BYTES);
		b->len += LONG_STRING_BYTES;
		buf_addc(b, '"');
	}
}

static void
add_entry_json(struct buf *b, const struct exchange *ex, const struct entry *e)
{
	bool extra = ex->srv->cfg->extra_fields;

	buf_addc(b, '{');
	if (extra)
		buf_adds(b, EXTRA_ENTRY_HEAD);
	buf_adds(b, "\"account_sid\":");
	buf_adds(b, ex->srv->account_json);
	add_quoted_or_null(b, ",\"service_sid\":", ex->service, false);
	add_quoted_or_null(b, ",\"channel_sid\":", e->channel_sid, e->channel_null);
	add_quoted_or_null(b, ",\"member_sid\":", e->member_sid, e->member_null);
	if (e->drift)
		buf_adds(b, ",\"status\":7");
	else
		add_quoted_or_null(b, ",\"status\":", e->status, e->status == NULL);
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
	if (extra)
		add_extra_entry_tail(b, ex, e);
	add_hostile_fields(b, e);
	buf_addc(b, '}');
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
	buf_adds(b, "\"channels\":[");
	for (uint64_t j = 0; j < count; j++) {
		struct entry e;

		if (plan->badrow && j == count / 2)
			add_bad_rows(b, ex, ds, &items);
		make_entry(ds, dataset_slot(ds, first + j), &e);
		if (plan->oddstatus && j == 0)
			e.status = "archived";
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
add_next_url(struct buf *b, struct exchange *ex, const struct dataset *ds,
	     const struct page_plan *plan, const char *origin)
{
	char foreign[48];

	if (plan->loop) {
		add_page_url(b, ex, origin, 0);
	} else if (plan->foreign) {
		snprintf(foreign, sizeof(foreign), "http://" FOREIGN_HOST ":%u", ex->srv->port);
		add_page_url(b, ex, foreign, ex->page + 1);
	} else if ((ex->page + 1) * ex->page_size < ds->present) {
		add_page_url(b, ex, origin, ex->page + 1);
	} else {
		buf_adds(b, "null");
	}
}

static void
add_meta(struct buf *b, struct exchange *ex, const struct dataset *ds, const struct page_plan *plan)
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
	add_next_url(b, ex, ds, plan, origin.data);
	buf_adds(b, ",\"key\":\"channels\"");
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

static enum MHD_Result
serve_page(struct exchange *ex, const struct page_plan *plan)
{
	struct dataset ds;
	struct buf b = {0};

	dataset_init(&ds, ex->srv->cfg, ex->service, ex->user);
	buf_addc(&b, '{');
	add_channels(&b, ex, &ds, plan);
	if (!plan->nometa)
		add_meta(&b, ex, &ds, plan);
	buf_addc(&b, '}');
	if (plan->truncate)
		return respond_truncated(ex, &b);
	return respond_buf(ex, MHD_HTTP_OK, &b);
}

static enum MHD_Result
respond_malformed(struct exchange *ex)
{
	struct buf b = {0};

	buf_adds(&b, "{\"channels\":[{\"account_sid\":");
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

static enum MHD_Result
serve(struct exchange *ex, const char *method)
{
	struct page_plan plan = {0};
	const struct fault *f;
	struct query q;
	enum MHD_Result ret;
	unsigned status;
	bool route_ok = parse_route(ex);

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 || !route_ok || !is_service_sid(ex->service))
		return respond_not_found(ex);
	if (!check_auth(ex))
		return respond_error(ex, MHD_HTTP_UNAUTHORIZED, 20003, "Authenticate",
				     MHD_HTTP_HEADER_WWW_AUTHENTICATE,
				     "Basic realm=\"Twilio API\"");
	query_parse(ex->query, &q);
	route_ok = check_paging(ex, &q, &ret);
	query_free(&q);
	if (!route_ok)
		return ret;
	status = pick_rate_fault(ex);
	if (status != 0)
		return respond_status_fault(ex, status, false);
	buf_adds(&ex->url_path, "/v1/Services/");
	buf_adds(&ex->url_path, ex->service);
	buf_adds(&ex->url_path, "/Users/");
	buf_add_pct_segment(&ex->url_path, ex->user);
	buf_adds(&ex->url_path, "/Channels");
	plan_modifiers(ex, &plan);
	f = pick_fault(ex);
	if (f != NULL)
		return serve_fault(ex, f, &plan);
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
	if (daemon != NULL)
		MHD_stop_daemon(daemon);
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
	if (status != 0) {
		config_free(&cfg);
		return status - 1;
	}
	if (cfg.n_dump > 0)
		status = run_dump(&cfg);
	else
		status = run_server(&cfg);
	config_free(&cfg);
	return status;
}
