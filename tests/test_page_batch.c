/*
 * test_page_batch.c - the array literals a page is sent as, and its digest
 */
#include "config.h"

#include "db.h"
#include "mem.h"
#include "page_batch.h"

#include "tap.h"

#include <string.h>

#define CH1 "CH00000000000000000000000000000001"
#define CH2 "CH00000000000000000000000000000002"
#define AC1 "AC00000000000000000000000000000001"
#define MB1 "MB00000000000000000000000000000001"

static struct membership
row(const char *channel, const char *status, long long unread)
{
	struct membership m = {
		.channel_sid = channel,
		.account_sid = AC1,
		.member_sid = MB1,
		.status = status,
		.has_last_consumed_message_index = true,
		.last_consumed_message_index = 5,
		.has_unread_messages_count = unread >= 0,
		.unread_messages_count = unread,
		.channel_url = "https://x/a\"b",
		.member_url = NULL,
	};
	return m;
}

static void
test_array_literals(void)
{
	struct buf b;

	buf_init(&b, 64);
	ok(buf_append(&b, "{", 1), "literal: opened");
	ok(db_array_add_text(&b, "plain"), "literal: a plain element");
	ok(db_array_add_text(&b, "quote\" and back\\slash"), "literal: quote and backslash");
	ok(db_array_add_text(&b, NULL), "literal: a NULL element");
	ok(db_array_add_text(&b, ""), "literal: an empty string");
	ok(db_array_add_text(&b, "NULL"), "literal: the string NULL");
	is_str(buf_str(&b), "{\"plain\",\"quote\\\" and back\\\\slash\",NULL,\"\",\"NULL\"",
	       "literal: elements quoted, escaped and comma-separated; NULL bare, \"NULL\" quoted");
	ok(!db_array_add_text(&b, "0123456789012345678901234567890123456789"),
	   "literal: an element past the cap is refused");
	buf_free(&b);

	buf_init(&b, 64);
	ok(buf_append(&b, "{", 1) && db_array_add_text(&b, "\"\"\\") &&
		   db_array_add_text(&b, "a\\\"b\\"),
	   "literal: elements of quotes and backslashes only, and ending in one");
	is_str(buf_str(&b), "{\"\\\"\\\"\\\\\",\"a\\\\\\\"b\\\\\"",
	       "literal: each quote and backslash escaped, runs of them too");
	buf_free(&b);
}

/* lit parsed: its elements joined by "|", NULL as <null>; or "refused". */
static const char *
parsed(const char *lit, char *out, size_t outsz)
{
	char **items;
	size_t n, used = 0;

	if (!db_array_parse(lit, &items, &n))
		return "refused";
	out[0] = '\0';
	for (size_t i = 0; i < n; i++)
		used += (size_t)snprintf(out + used, outsz - used, "%s%s", i > 0 ? "|" : "",
					 items[i] != NULL ? items[i] : "<null>");
	db_array_free(items, n);
	return out;
}

static void
test_array_parse(void)
{
	struct buf b;
	char out[256];

	is_str(parsed("{}", out, sizeof(out)), "", "parse: an empty array");
	is_str(parsed("{50,50,20}", out, sizeof(out)), "50|50|20", "parse: bare elements");
	is_str(parsed("{NULL,null,\"NULL\"}", out, sizeof(out)), "<null>|<null>|NULL",
	       "parse: NULL bare in any case is NULL, quoted it is a string");
	is_str(parsed("{\"http://h/a?b=1&c=d,e\",\"\",\"x \\\"y\\\\\"}", out, sizeof(out)),
	       "http://h/a?b=1&c=d,e||x \"y\\",
	       "parse: quoted elements with a comma, empty, escapes");
	is_str(parsed("{\"{}\",a b}", out, sizeof(out)), "{}|a b",
	       "parse: braces inside quotes, a space in a bare element");
	static const char *const bad[] = {
		"",	"50",	 "{",	     "{a",    "{a,}",	 "{,a}",
		"{a}x", "{\"a}", "{\"a\"b}", "{{a}}", "{a,{b}}", "{\"a\\\"}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		is_str(parsed(bad[i], out, sizeof(out)), "refused", "parse: \"%s\" is refused",
		       bad[i]);

	/* What db_array_add_text() writes reads back as it was. */
	buf_init(&b, 256);
	ok(buf_append(&b, "{", 1) && db_array_add_text(&b, "a,b") && db_array_add_text(&b, NULL) &&
		   db_array_add_text(&b, "q\"\\") && db_array_add_text(&b, "NULL") &&
		   buf_append(&b, "}", 1),
	   "parse: a literal written by db_array_add_text()");
	is_str(parsed(buf_str(&b), out, sizeof(out)), "a,b|<null>|q\"\\|NULL",
	       "parse: reads back every element as written");
	buf_free(&b);
}

static void
test_columns(void)
{
	struct page_batch *b = page_batch_new();
	struct membership m = row(CH1, "joined", 5);

	is_str(page_batch_column(b, PAGE_BATCH_CHANNEL), "{}", "batch: an empty column is {}");
	page_batch_reopen(b);
	ok(page_batch_add(b, &m), "batch: a row is added");
	m = row(CH2, NULL, -1);
	m.notification_level = "muted";
	ok(page_batch_add(b, &m), "batch: a second row is added");
	is_int((long long)page_batch_rows(b), 2, "batch: two rows");
	is_str(page_batch_column(b, PAGE_BATCH_CHANNEL), "{\"" CH1 "\",\"" CH2 "\"}",
	       "batch: the channel column");
	is_str(page_batch_column(b, PAGE_BATCH_NOTIFICATION_LEVEL), "{NULL,\"muted\"}",
	       "batch: the notification level, NULL without one");
	is_str(page_batch_column(b, PAGE_BATCH_STATUS), "{\"joined\",NULL}",
	       "batch: a missing status is NULL");
	is_str(page_batch_column(b, PAGE_BATCH_UNREAD), "{5,NULL}",
	       "batch: a missing count is NULL");
	is_str(page_batch_column(b, PAGE_BATCH_CHANNEL_URL),
	       "{\"https://x/a\\\"b\",\"https://x/a\\\"b\"}", "batch: a quote is escaped");
	page_batch_reopen(b);
	m = row(CH1, "invited", 0);
	ok(page_batch_add(b, &m), "batch: rows can be added after reopening");
	is_str(page_batch_column(b, PAGE_BATCH_UNREAD), "{5,NULL,0}",
	       "batch: and the literal goes on where it was");
	page_batch_reset(b);
	is_int((long long)page_batch_rows(b), 0, "batch: reset empties it");
	is_str(page_batch_column(b, PAGE_BATCH_MEMBER), "{}", "batch: and its columns");
	page_batch_free(b);
	page_batch_free(NULL);
	ok(true, "page_batch_free(NULL) does nothing");
}

static void
digest_of(const struct membership *rows, size_t n, char out[33])
{
	struct page_batch *b = page_batch_new();

	for (size_t i = 0; i < n; i++) {
		if (!page_batch_add(b, &rows[i]))
			break;
	}
	page_batch_digest(b, out);
	page_batch_free(b);
}

static void
test_digest(void)
{
	struct membership one[] = {row(CH1, "joined", -1)};
	struct membership two[] = {row(CH1, "joined", 1), row(CH2, "invited", 2)};
	struct membership swapped[] = {row(CH2, "invited", 2), row(CH1, "joined", 1)};
	char d1[33], d2[33], closed[33];
	struct page_batch *b;

	one[0].has_unread_messages_count = false;
	digest_of(one, 1, d1);
	/* Pinned: digests are stored on the cursors, so the algorithm must not drift. */
	is_str(d1, "8b8decb02aedb60e7a5bff8a85d427ea", "digest: a known row gives the known value");
	digest_of(NULL, 0, d2);
	is_str(d2, "402f2151657449585568a04a3f24b91e",
	       "digest: an empty page gives the known value");

	digest_of(two, 2, d1);
	digest_of(two, 2, d2);
	is_str(d1, d2, "digest: equal rows give equal digests");
	digest_of(swapped, 2, d2);
	ok(strcmp(d1, d2) != 0, "digest: the order of rows counts");
	two[1].unread_messages_count = 3;
	digest_of(two, 2, d2);
	ok(strcmp(d1, d2) != 0, "digest: one changed count changes it");
	two[1].unread_messages_count = 2;
	two[1].status = "";
	digest_of(two, 2, d2);
	ok(strcmp(d1, d2) != 0, "digest: an empty status differs from another");
	two[1].status = NULL;
	digest_of(two, 2, closed);
	ok(strcmp(d2, closed) != 0, "digest: a NULL status differs from an empty one");

	b = page_batch_new();
	ok(page_batch_add(b, &one[0]), "digest: a row for the open/closed check");
	page_batch_digest(b, d1);
	(void)page_batch_column(b, PAGE_BATCH_CHANNEL);
	page_batch_digest(b, closed);
	is_str(closed, d1, "digest: the same whether the literals are open or closed");
	page_batch_free(b);
}

int
main(void)
{
	test_array_literals();
	test_array_parse();
	test_columns();
	test_digest();
	return tap_done();
}
