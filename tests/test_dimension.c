/*
 * test_dimension.c - the service, users and channels listings, parsed and
 * batched as they are sent to the database
 */
#include "config.h"

#include "dimension.h"
#include "page_batch.h"
#include "page_parser.h"
#include "twilio.h"

#include "tap.h"

#include <stdio.h>
#include <string.h>

#define IS1 "IS00000000000000000000000000000001"
#define US1 "US00000000000000000000000000000001"
#define US2 "US00000000000000000000000000000002"
#define CH1 "CH00000000000000000000000000000001"

struct sink {
	enum dimension d;
	struct page_batch *batch;
	bool store_attributes;
	unsigned drifted; /* of every entry, together */
	unsigned rejected;
	char reject[128];
};

static bool
add(void *arg, const struct page_entry *e, const char *reject)
{
	struct sink *k = arg;
	unsigned drifted;

	if (reject != NULL) {
		k->rejected++;
		snprintf(k->reject, sizeof(k->reject), "%s", reject);
		return true;
	}
	if (!dimension_batch_add(k->d, k->batch, e, k->store_attributes, &drifted))
		return false;
	k->drifted |= drifted;
	return true;
}

/* Parses body as a page of listing d into k's batch; false if the page is bad. */
static bool
parse(struct sink *k, enum dimension d, const char *body, bool store_attributes)
{
	struct page_parser *p;
	bool ok;

	memset(k, 0, sizeof(*k));
	k->d = d;
	k->store_attributes = store_attributes;
	k->batch = dimension_batch_new(d);
	/* 1 MB a page, 4 KB a string, 32 levels, 1000 entries */
	p = page_parser_new(dimension_schema(d),
			    &(struct page_parser_limits){1 << 20, 4096, 32, 1000}, add, k);
	ok = page_parser_feed(p, body, strlen(body)) && page_parser_finish(p);
	if (!ok)
		printf("# parse error: %s\n", page_parser_error(p));
	page_parser_free(p);
	return ok;
}

static const char users_page[] =
	"{\"users\": [{\"sid\": \"" US1 "\", \"account_sid\": \"ACx\", \"service_sid\": \"" IS1
	"\", \"identity\": \"alice \\\"a\\\"\", \"friendly_name\": null, \"role_sid\": \"RLx\","
	" \"attributes\": \"{\\\"k\\\": 1}\", \"is_online\": true, \"is_notifiable\": false,"
	" \"date_created\": \"2016-03-24T21:05:50Z\", \"date_updated\": \"yesterday\","
	" \"joined_channels_count\": 3, \"links\": {\"user_channels\": \"u\"}, \"url\": \"u\"},"
	" {\"sid\": \"" US2 "\", \"identity\": \"bob\", \"is_online\": 1,"
	" \"joined_channels_count\": \"2\", \"date_created\": \"2016-03-24T21:05:50.123+01:00\"},"
	" {\"sid\": \"XX1\", \"identity\": \"nobody\"}],"
	" \"meta\": {\"key\": \"users\", \"next_page_url\": null}}";

static void
test_users(void)
{
	struct sink k;

	ok(parse(&k, DIMENSION_USERS, users_page, false), "users: a page parses");
	is_int((long long)page_batch_rows(k.batch), 2, "users: two entries batched");
	is_int(k.rejected, 1, "users: an entry without a User SID is rejected");
	is_str(k.reject, "sid is not a User SID", "users: ... saying why");
	is_str(page_batch_column(k.batch, 0), "{\"" US1 "\",\"" US2 "\"}", "users: the SIDs");
	is_str(page_batch_column(k.batch, 2), "{\"alice \\\"a\\\"\",\"bob\"}",
	       "users: identities, quoted for an array literal");
	is_str(page_batch_column(k.batch, 3), "{NULL,NULL}", "users: a null name is NULL");
	is_str(page_batch_column(k.batch, 5), "{3,NULL}",
	       "users: joined_channels_count; a string instead of a number is NULL");
	is_str(page_batch_column(k.batch, 6), "{1,NULL}",
	       "users: is_online as 1; a number instead of a boolean is NULL");
	is_str(page_batch_column(k.batch, 7), "{0,NULL}", "users: is_notifiable false as 0");
	is_str(page_batch_column(k.batch, 8), "{NULL,NULL}",
	       "users: attributes are left out unless configured");
	is_str(page_batch_column(k.batch, 9),
	       "{\"2016-03-24T21:05:50Z\",\"2016-03-24T21:05:50.123+01:00\"}",
	       "users: dates as the API writes them");
	is_str(page_batch_column(k.batch, 10), "{NULL,NULL}",
	       "users: a date that is not one is NULL");
	ok((k.drifted & (1u << 10)) && (k.drifted & (1u << 5)) && (k.drifted & (1u << 6)),
	   "users: the bad date, the string count and the number boolean are flagged");
	page_batch_free(k.batch);

	ok(parse(&k, DIMENSION_USERS, users_page, true), "users: parses with attributes kept");
	is_str(page_batch_column(k.batch, 8), "{\"{\\\"k\\\": 1}\",NULL}",
	       "users: sync.store_attributes keeps them");
	page_batch_free(k.batch);

	ok(!parse(&k, DIMENSION_USERS, "{\"channels\": [], \"meta\": {\"key\": \"channels\"}}",
		  false),
	   "users: a page of another listing is refused");
	page_batch_free(k.batch);
}

static void
test_channels(void)
{
	struct sink k;

	ok(parse(&k, DIMENSION_CHANNELS,
		 "{\"channels\": [{\"sid\": \"" CH1 "\", \"friendly_name\": \"General\","
		 " \"unique_name\": \"general\", \"type\": \"private\", \"created_by\": \"alice\","
		 " \"members_count\": 4, \"messages_count\": 10, \"attributes\": \"{}\","
		 " \"date_created\": \"2016-03-24T21:05:50Z\", \"date_updated\": null}],"
		 " \"meta\": {\"key\": \"channels\", \"next_page_url\": \"next\"}}",
		 false),
	   "channels: a page parses");
	is_str(page_batch_column(k.batch, 3), "{\"private\"}", "channels: the type");
	is_str(page_batch_column(k.batch, 5), "{4}", "channels: members_count");
	is_str(page_batch_column(k.batch, 6), "{10}", "channels: messages_count");
	is_str(page_batch_column(k.batch, 9), "{NULL}", "channels: a null date");
	page_batch_free(k.batch);
}

static void
test_service(void)
{
	struct sink k;

	ok(parse(&k, DIMENSION_SERVICE,
		 "{\"sid\": \"" IS1 "\", \"account_sid\": \"ACx\", \"friendly_name\": \"Chat\","
		 " \"limits\": {\"channel_members\": 100},"
		 " \"date_created\": \"2016-03-24T21:05:50Z\", \"links\": {\"users\": \"u\"}}",
		 false),
	   "service: the response is one entry, without meta");
	is_int((long long)page_batch_rows(k.batch), 1, "service: one entry");
	is_str(page_batch_column(k.batch, 2), "{\"Chat\"}", "service: its name");
	page_batch_free(k.batch);

	ok(!parse(&k, DIMENSION_SERVICE, "[1]", false), "service: an array is refused");
	page_batch_free(k.batch);
}

static void
test_dates(void)
{
	ok(twilio_date_valid("2016-03-24T21:05:50Z"), "date: UTC");
	ok(twilio_date_valid("2016-03-24T21:05:50.5-07:30"), "date: fraction and offset");
	ok(!twilio_date_valid("2016-03-24 21:05:50Z"), "date: a space for T");
	ok(!twilio_date_valid("2016-13-24T21:05:50Z"), "date: month 13");
	ok(!twilio_date_valid("2016-03-24T21:05:50"), "date: no zone");
	ok(!twilio_date_valid("2016-03-24T21:05:50.Z"), "date: an empty fraction");
	ok(!twilio_date_valid("2016-03-24T21:05:50+0100"), "date: an offset without colon");
	ok(!twilio_date_valid(""), "date: empty");
}

int
main(void)
{
	test_users();
	test_channels();
	test_service();
	test_dates();
	return tap_done();
}
