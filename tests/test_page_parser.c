/*
 * test_page_parser.c - unit tests for src/page_parser.c, the streaming
 * parser of one page of a user's channel list
 *
 * The same page must give the same rows however it is cut into chunks, so
 * a realistic page is fed whole, a byte at a time and in many random splits,
 * and every run is compared field by field with the expected rows.
 */
#include "config.h"

#include "membership.h"
#include "page_parser.h"

#include "tap.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACCOUNT "AC0123456789abcdef0123456789abcdef"
#define SERVICE "IS0123456789abcdef0123456789abcdef"
#define CH1 "CH00000000000000000000000000000001"
#define CH2 "CH00000000000000000000000000000002"
#define CH3 "CH00000000000000000000000000000003"
#define CH4 "CH0123456789ABCDEFabcdef0123456789" /* mixed-case hex */
#define MB1 "MB00000000000000000000000000000001"
#define MB3 "MBaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define LINK "https://chat.twilio.com/v2/Services/" SERVICE "/Channels/"
#define NEXT                                                                                       \
	"https://chat.twilio.com/v1/Services/" SERVICE                                             \
	"/Users/alice%40example.com/Channels?PageSize=50&Page=1&PageToken=PT1"

/* A page with every field, nulls, and unknown fields at every level. */
static const char page_json[] =
	"{\n"
	"  \"preamble\": {\"channels\": [{\"channel_sid\": \"" CH3 "\"}], \"n\": [1, 2.5, -3e2,"
	" true, false, null, [[]], {}]},\n"
	"  \"channels\": [\n"
	"    {\n"
	"      \"extra_head\": {\"channel_sid\": \"CHffffffffffffffffffffffffffffffff\"},\n"
	"      \"account_sid\": \"" ACCOUNT "\",\n"
	"      \"service_sid\": \"" SERVICE "\",\n"
	"      \"channel_sid\": \"" CH1 "\",\n"
	"      \"member_sid\": \"" MB1 "\",\n"
	"      \"status\": \"joined\",\n"
	"      \"last_consumed_message_index\": 41,\n"
	"      \"unread_messages_count\": 3,\n"
	"      \"links\": {\n"
	"        \"channel\": \"" LINK CH1 "\",\n"
	"        \"member\": \"" LINK CH1 "/Members/" MB1 "\",\n"
	"        \"extra\": {\"channel\": \"not this\", \"member\": [\"nor this\"]}\n"
	"      },\n"
	"      \"url\": \"https://chat.twilio.com/v2/Services/" SERVICE "/Users/alice/Channels/" CH1
	"\",\n"
	"      \"attributes\": {\"status\": \"left\", "
	"\"deep\": [{\"a\": [1, [2, {\"b\": null}]]}]},\n"
	"      \"notification_level\": \"default\",\n"
	"      \"flags\": [true, false, null, 1.5, \"s\"]\n"
	"    },\n"
	"    {\n"
	"      \"account_sid\": null,\n"
	"      \"service_sid\": null,\n"
	"      \"channel_sid\": \"" CH2 "\",\n"
	"      \"member_sid\": null,\n"
	"      \"status\": null,\n"
	"      \"last_consumed_message_index\": null,\n"
	"      \"unread_messages_count\": null,\n"
	"      \"links\": null,\n"
	"      \"url\": null\n"
	"    },\n"
	"    {\"channel_sid\": \"" CH3 "\", \"account_sid\": \"" ACCOUNT
	"\", \"service_sid\": \"" SERVICE "\", \"member_sid\": \"" MB3
	"\", \"status\": \"in\\\"vi\\\\ted \\u00e9\\u65e5\\/\","
	" \"last_consumed_message_index\": 0, \"unread_messages_count\": -7,"
	" \"links\": {\"channel\": null, \"member\": \"" LINK CH3 "/Members/" MB3 "\"}},\n"
	"    {\"links\": {\"channel\": \"" LINK CH4
	"\"}, \"unread_messages_count\": 9223372036854775807,"
	" \"last_consumed_message_index\": -9223372036854775807, \"channel_sid\": \"" CH4 "\"}\n"
	"  ],\n"
	"  \"meta\": {\n"
	"    \"page\": 0,\n"
	"    \"page_size\": 50,\n"
	"    \"first_page_url\": \"https://chat.twilio.com/v1/Services/" SERVICE
	"/Users/alice%40example.com/Channels?PageSize=50&Page=0\",\n"
	"    \"previous_page_url\": null,\n"
	"    \"extra\": {\"key\": \"members\", \"next_page_url\": \"https://evil.example.com/\"},\n"
	"    \"url\": \"https://chat.twilio.com/v1/Services/" SERVICE
	"/Users/alice%40example.com/Channels?PageSize=50&Page=0\",\n"
	"    \"next_page_url\": \"" NEXT "\",\n"
	"    \"key\": \"channels\",\n"
	"    \"more\": [true, false, null, 0.0, {\"key\": \"other\"}]\n"
	"  },\n"
	"  \"trailer\": [{\"meta\": {\"key\": \"other\", \"next_page_url\": null}},"
	" {\"channels\": [{}]}]\n"
	"}\n";

/* One recorded callback: copies of the row's fields and the reject reason. */
struct rec {
	char *channel_sid, *account_sid, *service_sid, *member_sid, *status;
	bool has_lcmi, has_unread;
	long long lcmi, unread;
	char *channel_url, *member_url;
	unsigned drifted;
	char *reject;
};

struct recorder {
	struct rec *rows;
	size_t n;
	size_t stop_at; /* return false from the call with this 1-based number; 0 never */
};

static char *
dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static bool
record(void *arg, const struct page_entry *e, const char *reject)
{
	struct recorder *r = arg;
	struct membership row, *m = &row;
	struct rec *x;

	membership_from_entry(e, m);
	r->rows = realloc(r->rows, (r->n + 1) * sizeof(*r->rows));
	if (r->rows == NULL)
		abort();
	x = &r->rows[r->n++];
	x->channel_sid = dup_or_null(m->channel_sid);
	x->account_sid = dup_or_null(m->account_sid);
	x->service_sid = dup_or_null(m->service_sid);
	x->member_sid = dup_or_null(m->member_sid);
	x->status = dup_or_null(m->status);
	x->has_lcmi = m->has_last_consumed_message_index;
	x->lcmi = m->last_consumed_message_index;
	x->has_unread = m->has_unread_messages_count;
	x->unread = m->unread_messages_count;
	x->channel_url = dup_or_null(m->channel_url);
	x->member_url = dup_or_null(m->member_url);
	x->drifted = m->drifted;
	x->reject = dup_or_null(reject);
	return r->stop_at == 0 || r->n < r->stop_at;
}

static void
recorder_clear(struct recorder *r)
{
	for (size_t i = 0; i < r->n; i++) {
		struct rec *x = &r->rows[i];

		free(x->channel_sid);
		free(x->account_sid);
		free(x->service_sid);
		free(x->member_sid);
		free(x->status);
		free(x->channel_url);
		free(x->member_url);
		free(x->reject);
	}
	free(r->rows);
	r->rows = NULL;
	r->n = 0;
}

static bool
same_str(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Compares every field of two recorded rows; names the first difference. */
static const char *
rec_diff(const struct rec *a, const struct rec *b)
{
	if (!same_str(a->channel_sid, b->channel_sid))
		return "channel_sid";
	if (!same_str(a->account_sid, b->account_sid))
		return "account_sid";
	if (!same_str(a->service_sid, b->service_sid))
		return "service_sid";
	if (!same_str(a->member_sid, b->member_sid))
		return "member_sid";
	if (!same_str(a->status, b->status))
		return "status";
	if (a->has_lcmi != b->has_lcmi || (a->has_lcmi && a->lcmi != b->lcmi))
		return "last_consumed_message_index";
	if (a->has_unread != b->has_unread || (a->has_unread && a->unread != b->unread))
		return "unread_messages_count";
	if (!same_str(a->channel_url, b->channel_url))
		return "links.channel";
	if (!same_str(a->member_url, b->member_url))
		return "links.member";
	if ((a->reject == NULL) != (b->reject == NULL))
		return "reject";
	return NULL;
}

static const struct rec expected_rows[] = {
	{
		.channel_sid = CH1,
		.account_sid = ACCOUNT,
		.service_sid = SERVICE,
		.member_sid = MB1,
		.status = "joined",
		.has_lcmi = true,
		.lcmi = 41,
		.has_unread = true,
		.unread = 3,
		.channel_url = LINK CH1,
		.member_url = LINK CH1 "/Members/" MB1,
	},
	{
		.channel_sid = CH2,
	},
	{
		.channel_sid = CH3,
		.account_sid = ACCOUNT,
		.service_sid = SERVICE,
		.member_sid = MB3,
		.status = "in\"vi\\ted \xc3\xa9\xe6\x97\xa5/",
		.has_lcmi = true,
		.lcmi = 0,
		.has_unread = true,
		.unread = -7,
		.member_url = LINK CH3 "/Members/" MB3,
	},
	{
		.channel_sid = CH4,
		.has_lcmi = true,
		.lcmi = -INT64_MAX,
		.has_unread = true,
		.unread = INT64_MAX,
		.channel_url = LINK CH4,
	},
};

#define N_EXPECTED (sizeof(expected_rows) / sizeof(expected_rows[0]))

static const struct page_parser_limits roomy = {
	.max_bytes = 1 << 20,
	.max_string = 4096,
	.max_depth = 32,
	.max_rows = 1000,
};

/* The outcome of parsing one body. */
struct run {
	struct recorder rec;
	bool ok;	  /* every feed and the finish succeeded */
	bool feed_failed; /* a feed returned false (else finish did, if !ok) */
	size_t fed;	  /* bytes handed over before the failing feed */
	char *next_url;
	char *error;
	size_t rows; /* page_parser_rows() at the end */
};

static void
run_clear(struct run *r)
{
	recorder_clear(&r->rec);
	free(r->next_url);
	free(r->error);
	memset(r, 0, sizeof(*r));
}

/* Deterministic PRNG (xorshift64*), so a failing split can be replayed. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

/*
 * Feeds body to p in chunks: chunk > 0 is a fixed size, chunk == 0 random
 * sizes from 1 to max_random.  Then finishes.
 */
static void
run_parser(struct page_parser *p, struct run *r, const char *body, size_t len, size_t chunk,
	   size_t max_random)
{
	size_t off = 0;

	r->ok = true;
	while (off < len) {
		size_t n = chunk > 0 ? chunk : 1 + (size_t)(rng() % max_random);

		if (n > len - off)
			n = len - off;
		if (!page_parser_feed(p, body + off, n)) {
			r->ok = false;
			r->feed_failed = true;
			r->fed = off;
			break;
		}
		off += n;
	}
	if (r->ok && !page_parser_finish(p))
		r->ok = false;
	if (r->ok)
		r->next_url = dup_or_null(page_parser_next_url(p));
	else
		r->error = strdup(page_parser_error(p));
	r->rows = page_parser_rows(p);
}

static void
parse(struct run *r, const struct page_parser_limits *limits, const char *body, size_t len,
      size_t chunk, size_t max_random)
{
	struct page_parser *p;

	memset(r, 0, sizeof(*r));
	p = page_parser_new(&membership_schema, limits, record, &r->rec);
	run_parser(p, r, body, len, chunk, max_random);
	page_parser_free(p);
}

/* Empty when the recorded rows are exactly the expected ones, else why not. */
static void
compare_rows(const struct recorder *got, const struct rec *want, size_t n_want, char *why,
	     size_t whysz)
{
	why[0] = '\0';
	if (got->n != n_want) {
		snprintf(why, whysz, "%zu rows, want %zu", got->n, n_want);
		return;
	}
	for (size_t i = 0; i < n_want; i++) {
		const char *d = rec_diff(&got->rows[i], &want[i]);

		if (d != NULL) {
			snprintf(why, whysz, "row %zu differs in %s", i, d);
			return;
		}
	}
}

static void
check_page(const char *desc, const struct run *r)
{
	char why[128];

	ok(r->ok, "%s: the page parses", desc);
	if (!r->ok)
		printf("#   error: %s\n", r->error ? r->error : "(none)");
	compare_rows(&r->rec, expected_rows, N_EXPECTED, why, sizeof(why));
	if (!ok(why[0] == '\0', "%s: every field of every row as expected", desc))
		printf("#   %s\n", why);
	is_str(r->next_url, NEXT, "%s: next_page_url", desc);
	is_int(r->rows, N_EXPECTED, "%s: page_parser_rows", desc);
}

static void
test_whole_and_bytewise(void)
{
	size_t len = strlen(page_json);
	struct run r;

	parse(&r, &roomy, page_json, len, len, 0);
	check_page("whole page", &r);
	for (size_t i = 0; i < r.rec.n && i < N_EXPECTED; i++)
		ok(r.rec.rows[i].reject == NULL, "row %zu is usable (reject is NULL)", i);
	run_clear(&r);

	parse(&r, &roomy, page_json, len, 1, 0);
	check_page("one byte at a time", &r);
	run_clear(&r);

	parse(&r, &roomy, page_json, len, 7, 0);
	check_page("seven bytes at a time", &r);
	run_clear(&r);
}

static void
test_random_splits(void)
{
	size_t len = strlen(page_json);
	int bad = 0, first_bad = -1;
	char why[128] = "";

	for (int i = 0; i < 200; i++) {
		size_t max_random = 1 + (size_t)(rng() % (len / 2));
		struct run r;

		parse(&r, &roomy, page_json, len, 0, max_random);
		compare_rows(&r.rec, expected_rows, N_EXPECTED, why, sizeof(why));
		if (!r.ok || why[0] != '\0' || !same_str(r.next_url, NEXT) ||
		    r.rows != N_EXPECTED) {
			if (bad++ == 0) {
				first_bad = i;
				printf("#   split %d: %s %s\n", i, r.ok ? "" : r.error, why);
			}
		}
		run_clear(&r);
	}
	ok(bad == 0, "200 random splits give the same rows and next_page_url (first bad: %d)",
	   first_bad);
}

static void
test_empty_feeds(void)
{
	size_t len = strlen(page_json), half = len / 2;
	struct page_parser *p;
	struct recorder rec = {0};
	bool all;

	p = page_parser_new(&membership_schema, &roomy, record, &rec);
	all = page_parser_feed(p, page_json, 0) && page_parser_feed(p, page_json, half) &&
	      page_parser_feed(p, page_json + half, 0) &&
	      page_parser_feed(p, page_json + half, len - half) && page_parser_finish(p);
	ok(all, "zero-length feeds are harmless");
	is_int(rec.n, N_EXPECTED, "zero-length feeds: all rows");
	page_parser_free(p);
	recorder_clear(&rec);
}

static void
test_next_url(void)
{
	static const struct {
		const char *body, *next, *desc;
	} cases[] = {
		{"{\"channels\":[],\"meta\":{\"key\":\"channels\",\"next_page_url\":null}}", NULL,
		 "next_page_url null"},
		{"{\"channels\":[],\"meta\":{\"key\":\"channels\"}}", NULL, "no next_page_url"},
		{"{\"meta\":{\"next_page_url\":\"https://x/y?PageToken=a\\u0026b\",\"key\":"
		 "\"channels\"},\"channels\":[]}",
		 "https://x/y?PageToken=a&b", "meta before channels, escaped next_page_url"},
		{"{\"channels\":[],\"meta\":{}}", NULL, "empty meta"},
		{"  {\"channels\" : [ ] , \"meta\" : { \"next_page_url\" : \"\" } }  ", "",
		 "an empty next_page_url string, with whitespace"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct run r;

		parse(&r, &roomy, cases[i].body, strlen(cases[i].body), strlen(cases[i].body), 0);
		ok(r.ok, "%s: parses", cases[i].desc);
		is_str(r.next_url, cases[i].next, "%s: next_page_url", cases[i].desc);
		is_int(r.rec.n, 0, "%s: no rows", cases[i].desc);
		run_clear(&r);
	}
}

/* Entries that cannot be stored are reported as such; the page still parses. */
/*
 * An entry whose channel cannot be identified is rejected; one whose
 * channel_sid is valid is a membership that exists, whatever type its other
 * fields have: those fields are NULL and flagged, the entry is kept (so a
 * type change on Twilio's side can never mark memberships deleted).
 */
static void
test_rejected_rows(void)
{
	static const char body[] =
		"{\"channels\":[\n"
		"{\"channel_sid\":\"" CH1 "\",\"status\":\"joined\"},\n"
		"{\"status\":\"joined\"},\n"
		"{\"channel_sid\":null,\"status\":\"joined\"},\n"
		"{\"channel_sid\":\"CHnot-a-sid\",\"status\":\"joined\"},\n"
		"{\"channel_sid\":\"XX00000000000000000000000000000001\"},\n"
		"{\"channel_sid\":\"CH000000000000000000000000000000011\"},\n"
		"{\"channel_sid\":\"CH0000000000000000000000000000000g\"},\n"
		"{\"channel_sid\":5},\n"
		"{\"channel_sid\":\"" CH2 "\",\"status\":7,\"unread_messages_count\":3},\n"
		"{\"channel_sid\":\"" CH2
		"\",\"status\":\"joined\",\"unread_messages_count\":\"5\"},\n"
		"{\"channel_sid\":\"" CH2 "\",\"links\":\"str\"},\n"
		"{\"channel_sid\":\"" CH2 "\",\"last_consumed_message_index\":1.5},\n"
		"{\"channel_sid\":\"" CH2 "\",\"status\":true},\n"
		"{\"channel_sid\":\"" CH2 "\",\"member_sid\":{\"sid\":\"MB\"}},\n"
		"{\"channel_sid\":\"" CH2 "\",\"account_sid\":[\"" ACCOUNT "\"]},\n"
		"{\"channel_sid\":\"" CH2 "\",\"links\":{\"channel\":7,\"member\":\"" LINK
		"m\"}},\n"
		"{\"channel_sid\":\"" CH3 "\",\"status\":\"left\",\"unread_messages_count\":2}\n"
		"],\"meta\":{\"key\":\"channels\",\"next_page_url\":null}}";
	static const struct {
		const char *what;
		bool rejected;
		unsigned drifted;
	} want[] = {
		{"a usable entry", false, 0},
		{"no channel_sid", true, 0},
		{"null channel_sid", true, 0},
		{"malformed channel_sid", true, 0},
		{"channel_sid with another prefix", true, 0},
		{"channel_sid one digit too long", true, 0},
		{"channel_sid not hex", true, 0},
		{"channel_sid a number", true, 0},
		{"status: 7", false, MEMBERSHIP_STATUS},
		{"unread_messages_count: \"5\"", false, MEMBERSHIP_UNREAD},
		{"links: \"str\"", false, MEMBERSHIP_LINKS},
		{"last_consumed_message_index: 1.5", false, MEMBERSHIP_LAST_CONSUMED},
		{"status: true", false, MEMBERSHIP_STATUS},
		{"member_sid an object", false, MEMBERSHIP_MEMBER_SID},
		{"account_sid an array", false, MEMBERSHIP_ACCOUNT_SID},
		{"links.channel a number", false, MEMBERSHIP_CHANNEL_URL},
		{"a usable entry", false, 0},
	};
	size_t n = sizeof(want) / sizeof(want[0]);
	struct run r;

	for (int pass = 0; pass < 2; pass++) {
		const char *how = pass == 0 ? "whole" : "bytewise";

		parse(&r, &roomy, body, strlen(body), pass == 0 ? strlen(body) : 1, 0);
		ok(r.ok, "entries (%s): finish still succeeds", how);
		if (!r.ok)
			printf("#   error: %s\n", r.error);
		is_int(r.rec.n, n, "entries (%s): every entry is reported", how);
		if (r.rec.n == n) {
			for (size_t i = 0; i < n; i++) {
				const struct rec *x = &r.rec.rows[i];

				ok((x->reject != NULL) == want[i].rejected,
				   "entries (%s): %s is %s (%s)", how, want[i].what,
				   want[i].rejected ? "rejected" : "kept",
				   x->reject ? x->reject : "-");
				is_int(x->drifted, want[i].drifted,
				       "entries (%s): %s: fields flagged", how, want[i].what);
			}
			is_str(r.rec.rows[7].reject, "channel_sid is not a string",
			       "entries (%s): a number for channel_sid says so", how);
			ok(r.rec.rows[8].status == NULL && r.rec.rows[8].has_unread &&
				   r.rec.rows[8].unread == 3,
			   "entries (%s): status 7 is NULL, the valid count is kept", how);
			ok(!r.rec.rows[9].has_unread && r.rec.rows[9].status != NULL &&
				   strcmp(r.rec.rows[9].status, "joined") == 0,
			   "entries (%s): unread \"5\" is NULL, the valid status is kept", how);
			ok(r.rec.rows[15].channel_url == NULL && r.rec.rows[15].member_url != NULL,
			   "entries (%s): links.channel 7 is NULL, links.member is kept", how);
			ok(r.rec.rows[11].has_lcmi == false,
			   "entries (%s): an index of 1.5 is NULL", how);
			is_str(r.rec.rows[n - 1].status, "left", "entries (%s): last row status",
			       how);
			ok(r.rec.rows[n - 1].has_unread && r.rec.rows[n - 1].unread == 2,
			   "entries (%s): last row count", how);
			ok(r.rec.rows[1].channel_sid == NULL && r.rec.rows[2].channel_sid == NULL,
			   "entries (%s): missing and null channel_sid are NULL", how);
		}
		is_int(r.rows, n, "entries (%s): page_parser_rows counts them all", how);
		run_clear(&r);
	}
	is_str(membership_field_name(MEMBERSHIP_UNREAD), "unread_messages_count",
	       "field names: as the API spells them");
	is_str(membership_field_name(MEMBERSHIP_CHANNEL_URL), "links.channel",
	       "field names: links by their path");
}

/* The N of "... at byte N", or -1. */
static long long
error_byte(const char *error)
{
	const char *at = error ? strstr(error, "at byte ") : NULL;
	char *end;
	long long n;

	if (at == NULL)
		return -1;
	n = strtoll(at + 8, &end, 10);
	return end == at + 8 ? -1 : n;
}

#define SOME_ROWS ((size_t)-1) /* a prefix of expected_rows */

struct bad_page {
	const char *desc;
	const char *body;
	size_t len; /* 0: strlen(body) */
	struct page_parser_limits limits;
	bool at_finish;	  /* fails only at page_parser_finish */
	const char *want; /* in the error message */
	const char *near; /* N must lie within [offset of near, its end + 1]; NULL: at the end */
	size_t rows;	  /* callbacks expected before the failure */
};

/* Parses a bad page with one chunking and checks how it fails. */
static void
check_bad(const struct bad_page *b, size_t chunk, const char *how)
{
	size_t len = b->len ? b->len : strlen(b->body);
	size_t lo = len, hi = len;
	struct run r;
	long long at;

	if (b->near != NULL) {
		const char *w = strstr(b->body, b->near);

		if (w == NULL) {
			printf("Bail out! \"%s\" is not in the body of \"%s\"\n", b->near, b->desc);
			exit(99);
		}
		lo = (size_t)(w - b->body);
		hi = lo + strlen(b->near) + 1;
	}
	parse(&r, &b->limits, b->body, len, chunk, 0);
	ok(!r.ok, "%s (%s): the page fails", b->desc, how);
	ok(b->at_finish ? !r.feed_failed : r.feed_failed, "%s (%s): %s returns false", b->desc, how,
	   b->at_finish ? "page_parser_finish" : "page_parser_feed");
	if (!ok(r.error != NULL && strstr(r.error, b->want) != NULL,
		"%s (%s): the error says \"%s\"", b->desc, how, b->want))
		printf("#   error: %s\n", r.error ? r.error : "(null)");
	at = error_byte(r.error);
	if (!ok(at >= (long long)lo && at <= (long long)hi, "%s (%s): at byte %lld, in %zu..%zu",
		b->desc, how, at, lo, hi))
		printf("#   error: %s\n", r.error ? r.error : "(null)");
	if (b->rows == SOME_ROWS) {
		char why[128];

		compare_rows(&r.rec, expected_rows, r.rec.n < N_EXPECTED ? r.rec.n : N_EXPECTED,
			     why, sizeof(why));
		ok(r.rec.n < N_EXPECTED && why[0] == '\0',
		   "%s (%s): the rows before the failure are the expected ones (%zu)", b->desc, how,
		   r.rec.n);
	} else {
		is_int(r.rec.n, b->rows, "%s (%s): rows called back before the failure", b->desc,
		       how);
	}
	run_clear(&r);
}

static void
test_bad_pages(void)
{
	static const struct page_parser_limits small = {
		.max_bytes = 1 << 16,
		.max_string = 40,
		.max_depth = 4,
		.max_rows = 2,
	};
	static char truncated[sizeof(page_json)];
	const struct bad_page bad[] = {
		{"malformed JSON", "{\"channels\":[},\"meta\":{\"key\":\"channels\"}}", 0, roomy,
		 false, "invalid JSON", "}", 0},
		{"malformed JSON after a row",
		 "{\"channels\":[{\"channel_sid\":\"" CH1 "\"} {\"x\":1}],\"meta\":{}}", 0, roomy,
		 false, "invalid JSON", " {", 1},
		{"a bare word", "{\"channels\":[],\"meta\":{\"key\":channels}}", 0, roomy, false,
		 "invalid JSON", "channels}", 0},
		{"trailing garbage", "{\"channels\":[],\"meta\":{\"key\":\"channels\"}} x", 0,
		 roomy, false, "invalid JSON", " x", 0},
		{"truncated body", truncated, 0, roomy, true, "invalid JSON", NULL, SOME_ROWS},
		{"empty body", "", 0, roomy, true, "", NULL, 0},
		{"top-level array", "[{\"channels\":[],\"meta\":{\"key\":\"channels\"}}]", 0, roomy,
		 false, "not an object", "[", 0},
		{"top-level string", "\"channels\"", 0, roomy, false, "not an object",
		 "\"channels\"", 0},
		{"channels an object", "{\"channels\":{\"a\":[]},\"meta\":{\"key\":\"channels\"}}",
		 0, roomy, false, "\"channels\"", "{\"a\"", 0},
		{"channels a string", "{\"channels\":\"none\",\"meta\":{\"key\":\"channels\"}}", 0,
		 roomy, false, "\"channels\"", "\"none\"", 0},
		{"channels null", "{\"channels\":null,\"meta\":{\"key\":\"channels\"}}", 0, roomy,
		 false, "\"channels\"", "null", 0},
		{"an entry that is not an object",
		 "{\"channels\":[\"" CH1 "\"],\"meta\":{\"key\":\"channels\"}}", 0, roomy, false,
		 "not an object", "\"" CH1 "\"", 0},
		{"no channels", "{\"meta\":{\"key\":\"channels\"}}", 0, roomy, true, "channels",
		 NULL, 0},
		{"missing meta", "{\"channels\":[{\"channel_sid\":\"" CH1 "\"}]}", 0, roomy, true,
		 "meta", NULL, 1},
		{"meta not an object", "{\"channels\":[],\"meta\":[\"channels\"]}", 0, roomy, false,
		 "meta", "[\"channels\"]", 0},
		{"meta.key not channels", "{\"channels\":[],\"meta\":{\"key\":\"members\"}}", 0,
		 roomy, true, "meta.key", NULL, 0},
		{"next_page_url not a string",
		 "{\"channels\":[],\"meta\":{\"next_page_url\":5,\"key\":\"channels\"}}", 0, roomy,
		 false, "next_page_url", "5", 0},
		{"string over max_string",
		 "{\"channels\":[{\"channel_sid\":\"" CH1
		 "\",\"status\":\"0123456789012345678901234567890123456789x\"}],\"meta\":{}}",
		 0, small, false, "longer than 40", "\"0123456789012345678901234567890123456789x\"",
		 0},
		{"unknown string over max_string",
		 "{\"x\":\"0123456789012345678901234567890123456789x\","
		 "\"channels\":[],\"meta\":{}}",
		 0, small, false, "longer than 40", "\"0123456789012345678901234567890123456789x\"",
		 0},
		{"key over max_string",
		 "{\"channels\":[],\"0123456789012345678901234567890123456789x\":1,\"meta\":{}}", 0,
		 small, false, "longer than 40", "\"0123456789012345678901234567890123456789x\"",
		 0},
		{"nesting over max_depth",
		 "{\"channels\":[{\"channel_sid\":\"" CH1 "\",\"a\":{\"b\":[1]}}],\"meta\":{}}", 0,
		 small, false, "nested deeper than 4", "[1", 0},
		{"nesting over max_depth outside channels",
		 "{\"channels\":[],\"x\":[[[[]]]],\"meta\":{}}", 0, small, false,
		 "nested deeper than 4", "[[]", 0},
		{"more rows than max_rows",
		 "{\"channels\":[{\"channel_sid\":\"" CH1 "\"},{\"channel_sid\":\"" CH2
		 "\"},{\"channel_sid\":\"" CH3 "\"}],\"meta\":{}}",
		 0, small, false, "more than 2 entries", "\"" CH3 "\"}", 2},
		{"integer overflow",
		 "{\"channels\":[{\"channel_sid\":\"" CH1
		 "\",\"unread_messages_count\":99999999999999999999}],\"meta\":{}}",
		 0, roomy, false, "overflow", "99999999999999999999", 0},
		{"negative integer overflow",
		 "{\"channels\":[],\"meta\":{\"page\":-99999999999999999999,\"key\":\"channels\"}}",
		 0, roomy, false, "overflow", "-99999999999999999999", 0},
	};

	memcpy(truncated, page_json, sizeof(page_json) / 2);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const struct bad_page *b = &bad[i];
		size_t len = b->len ? b->len : strlen(b->body);

		check_bad(b, len ? len : 1, "whole");
		check_bad(b, 1, "bytewise");
		check_bad(b, 5, "5-byte chunks");
	}
}

/*
 * More than max_bytes fails at page_parser_feed, however the body is cut,
 * and the position reported is where the limit is crossed: at most
 * max_bytes and no less than what was accepted.
 */
static void
test_max_bytes(void)
{
	static const char body[] =
		"{\"channels\":[{\"channel_sid\":\"" CH1 "\"},{\"channel_sid\":\"" CH2 "\"}],"
		"\"meta\":{\"key\":\"channels\"}}";
	struct page_parser_limits lim = roomy;
	size_t len = strlen(body);
	static const size_t chunks[] = {0, 1, 7, 40, 64};

	lim.max_bytes = len;
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		struct run r;

		parse(&r, &lim, body, len, chunks[c] ? chunks[c] : len, 0);
		ok(r.ok, "a body of exactly max_bytes (%zu) parses (chunks of %zu)", len,
		   chunks[c] ? chunks[c] : len);
		run_clear(&r);
	}

	lim.max_bytes = 60;
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		size_t chunk = chunks[c] ? chunks[c] : len;
		struct run r;
		long long at;

		parse(&r, &lim, body, len, chunk, 0);
		ok(!r.ok && r.feed_failed, "over max_bytes (chunks of %zu): page_parser_feed fails",
		   chunk);
		ok(r.error != NULL && strstr(r.error, "larger than 60") != NULL,
		   "over max_bytes (chunks of %zu): the error says so (%s)", chunk,
		   r.error ? r.error : "(null)");
		at = error_byte(r.error);
		/*
		 * Bug: the limit check runs before yajl_parse, when
		 * yajl_get_bytes_consumed() still counts the previous chunk, which
		 * p->offset already holds: N = offset + previous chunk.
		 */
		if (r.fed == 0)
			ok(at >= 0 && at <= 60,
			   "over max_bytes (chunks of %zu): at byte %lld, in 0..60", chunk, at);
		else
			ok(at >= (long long)r.fed && at <= 60,
			   "over max_bytes (chunks of %zu): at byte %lld, in %zu..60", chunk, at,
			   r.fed);
		run_clear(&r);
	}
}

/* Exactly at each limit is still fine. */
static void
test_limits_boundary(void)
{
	static const struct page_parser_limits lim = {
		.max_bytes = 1 << 16,
		.max_string = 40,
		.max_depth = 4,
		.max_rows = 2,
	};
	static const char body[] =
		"{\"channels\":[{\"channel_sid\":\"" CH1 "\",\"links\":{\"channel\":"
		"\"0123456789012345678901234567890123456789\"}},{\"channel_sid\":\"" CH2 "\"}],"
		"\"0123456789012345678901234567890123456789\":[[]],"
		"\"meta\":{\"key\":\"channels\"}}";
	static const char nul[] = "{\"channels\":[{\"channel_sid\":\"" CH1
				  "\",\"status\":\"a\\u0000b\"}],\"meta\":{\"key\":\"channels\"}}";
	struct run r;

	parse(&r, &lim, body, strlen(body), strlen(body), 0);
	ok(r.ok, "a 40-byte string and key, depth 4 and 2 rows pass limits of 40, 4 and 2");
	if (!r.ok)
		printf("#   error: %s\n", r.error);
	ok(r.rec.n == 2 &&
		   same_str(r.rec.rows[0].channel_url, "0123456789012345678901234567890123456789"),
	   "the 40-byte links.channel arrives whole");
	run_clear(&r);

	parse(&r, &roomy, nul, strlen(nul), 1, 0);
	ok(!(r.ok && r.rec.n == 1 && r.rec.rows[0].reject == NULL),
	   "a status holding \\u0000 is not stored cut short (%s)", r.ok ? "page ok" : r.error);
	run_clear(&r);
}

/* The callback returning false stops the page at that entry. */
static void
test_stop(void)
{
	size_t len = strlen(page_json);
	static const size_t chunks[] = {0, 1, 13};

	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		size_t chunk = chunks[c] ? chunks[c] : len;
		struct page_parser *p;
		struct run r;
		bool again;

		memset(&r, 0, sizeof(r));
		r.rec.stop_at = 2;
		p = page_parser_new(&membership_schema, &roomy, record, &r.rec);
		run_parser(p, &r, page_json, len, chunk, 0);
		ok(!r.ok && r.feed_failed, "stop (chunks of %zu): page_parser_feed returns false",
		   chunk);
		is_int(r.rec.n, 2,
		       "stop (chunks of %zu): no callback after the one returning false", chunk);
		ok(r.error != NULL && strstr(r.error, "stopped by the caller") != NULL,
		   "stop (chunks of %zu): error \"%s\"", chunk, r.error ? r.error : "(null)");
		again = page_parser_feed(p, "  ", 2);
		ok(!again, "stop (chunks of %zu): later feeds keep failing", chunk);
		again = page_parser_finish(p);
		ok(!again, "stop (chunks of %zu): finish fails too", chunk);
		is_str(page_parser_error(p), r.error, "stop (chunks of %zu): the first error stays",
		       chunk);
		is_int(r.rec.n, 2, "stop (chunks of %zu): still no more callbacks", chunk);
		page_parser_free(p);
		run_clear(&r);
	}
}

/* One parser, several pages: reset forgets everything about the last one. */
static void
test_reset(void)
{
	static const char bad[] =
		"{\"channels\":[{\"channel_sid\":\"" CH1 "\"}],\"meta\":{\"key\":[";
	static const char last[] = "{\"channels\":[{\"channel_sid\":\"" CH3
				   "\",\"status\":\"left\"}],\"meta\":{\"key\":\"channels\"}}";
	static const char nometa[] = "{\"channels\":[]}";
	size_t len = strlen(page_json);
	struct recorder rec = {0};
	struct page_parser *p = page_parser_new(&membership_schema, &roomy, record, &rec);
	char why[128];
	bool res;

	res = page_parser_feed(p, page_json, len) && page_parser_finish(p);
	ok(res, "reset: first page parses");
	is_str(page_parser_next_url(p), NEXT, "reset: first page's next_page_url");
	compare_rows(&rec, expected_rows, N_EXPECTED, why, sizeof(why));
	ok(why[0] == '\0', "reset: first page's rows %s", why);
	recorder_clear(&rec);

	page_parser_reset(p);
	is_int(page_parser_rows(p), 0, "reset: no rows counted after reset");
	res = page_parser_feed(p, last, strlen(last)) && page_parser_finish(p);
	ok(res, "reset: a second page parses on the same parser");
	ok(page_parser_next_url(p) == NULL, "reset: the old next_page_url is forgotten");
	is_int(page_parser_rows(p), 1, "reset: second page has one row");
	ok(rec.n == 1 && strcmp(rec.rows[0].channel_sid, CH3) == 0 && rec.rows[0].reject == NULL &&
		   rec.rows[0].account_sid == NULL && !rec.rows[0].has_unread &&
		   strcmp(rec.rows[0].status, "left") == 0,
	   "reset: the second page's row carries nothing from the first");
	recorder_clear(&rec);

	page_parser_reset(p);
	res = page_parser_feed(p, bad, strlen(bad)) && page_parser_finish(p);
	ok(!res, "reset: a truncated third page fails");
	page_parser_reset(p);
	is_str(page_parser_error(p), "", "reset: the error is cleared");
	res = page_parser_feed(p, nometa, strlen(nometa)) && page_parser_finish(p);
	ok(!res && strstr(page_parser_error(p), "meta") != NULL,
	   "reset: meta seen on an earlier page does not count for this one");
	recorder_clear(&rec);

	page_parser_reset(p);
	res = true;
	for (size_t i = 0; i < len && res; i++)
		res = page_parser_feed(p, page_json + i, 1);
	res = res && page_parser_finish(p);
	ok(res, "reset: after a failure the parser takes a full page again, bytewise");
	compare_rows(&rec, expected_rows, N_EXPECTED, why, sizeof(why));
	ok(why[0] == '\0', "reset: the rows are right again %s", why);
	is_str(page_parser_next_url(p), NEXT, "reset: and so is next_page_url");
	recorder_clear(&rec);

	page_parser_free(p);
	page_parser_free(NULL);
	ok(true, "page_parser_free(NULL) does nothing");
}

int
main(void)
{
	test_whole_and_bytewise();
	test_random_splits();
	test_empty_feeds();
	test_next_url();
	test_rejected_rows();
	test_bad_pages();
	test_max_bytes();
	test_limits_boundary();
	test_stop();
	test_reset();
	return tap_done();
}
