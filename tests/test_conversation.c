/*
 * test_conversation.c - a page of a user's conversations, parsed and batched
 * as it is sent to sync_conversations_page()
 */
#include "config.h"

#include "conversation.h"
#include "page_batch.h"
#include "page_parser.h"

#include "tap.h"

#include <stdio.h>
#include <string.h>

#define IS1 "IS00000000000000000000000000000001"
#define US1 "US00000000000000000000000000000001"
#define CH1 "CH00000000000000000000000000000001"
#define CH2 "CH00000000000000000000000000000002"
#define MB1 "MB00000000000000000000000000000001"
#define AC1 "AC00000000000000000000000000000001"
#define HOST "https://conversations.twilio.com/v1"

struct sink {
	struct page_batch *batch;
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
	if (!conversation_batch_add(k->batch, e, &drifted))
		return false;
	k->drifted |= drifted;
	return true;
}

/* Parses body into k's batch (which the caller frees); false if the page is bad. */
static bool
parse(struct sink *k, const char *body)
{
	struct page_parser *p;
	bool ok;

	memset(k, 0, sizeof(*k));
	k->batch = conversation_batch_new();
	/* 1 MB a page, 4 KB a string, 32 levels, 1000 entries */
	p = page_parser_new(&conversation_schema,
			    &(struct page_parser_limits){1 << 20, 4096, 32, 1000}, add, k);
	ok = page_parser_feed(p, body, strlen(body)) && page_parser_finish(p);
	if (!ok)
		printf("# parse error: %s\n", page_parser_error(p));
	page_parser_free(p);
	return ok;
}

/* The spec's example entry, then one with nulls, a bad date and a string count. */
static const char page[] =
	"{\"conversations\": [{\"account_sid\": \"" AC1 "\", \"chat_service_sid\": \"" IS1 "\","
	" \"conversation_sid\": \"" CH1 "\", \"unread_messages_count\": 100,"
	" \"last_read_message_index\": 100, \"participant_sid\": \"" MB1 "\","
	" \"user_sid\": \"" US1 "\", \"friendly_name\": \"friendly_name\","
	" \"conversation_state\": \"inactive\", \"timers\": {\"date_inactive\":"
	" \"2015-12-16T22:19:38Z\", \"date_closed\": \"2015-12-16T22:28:38Z\"},"
	" \"attributes\": \"{}\", \"date_created\": \"2015-07-30T20:00:00Z\","
	" \"date_updated\": \"2015-07-30T20:00:00Z\", \"created_by\": \"created_by\","
	" \"notification_level\": \"default\", \"unique_name\": \"unique_name\","
	" \"url\": \"" HOST "/Users/" US1 "/Conversations/" CH1 "\","
	" \"links\": {\"participant\": \"" HOST "/Conversations/" CH1 "/Participants/" MB1 "\","
	" \"conversation\": \"" HOST "/Conversations/" CH1 "\"}},"
	" {\"conversation_sid\": \"" CH2 "\", \"unread_messages_count\": \"7\","
	" \"last_read_message_index\": null, \"conversation_state\": \"active\","
	" \"notification_level\": \"muted\", \"timers\": {}, \"unique_name\": null,"
	" \"date_created\": \"not a date\", \"links\": null},"
	" {\"conversation_sid\": \"XX1\"}],"
	" \"meta\": {\"key\": \"conversations\", \"page\": 0, \"page_size\": 50,"
	" \"next_page_url\": null}}";

static unsigned
field_bit(const char *name)
{
	for (unsigned i = 0; i < conversation_schema.n_fields; i++) {
		if (strcmp(conversation_schema.fields[i].name, name) == 0)
			return 1u << i;
	}
	return 0;
}

static void
test_page(void)
{
	struct sink k;

	ok(parse(&k, page), "a page of conversations parses");
	is_int((long long)page_batch_rows(k.batch), 2, "two entries batched");
	is_int(k.rejected, 1, "an entry without a Conversation SID is rejected");
	ok(strstr(k.reject, "Conversation SID") != NULL, "... saying why");
	is_str(page_batch_column(k.batch, CONVERSATION_SID), "{\"" CH1 "\",\"" CH2 "\"}",
	       "the conversation SIDs");
	is_str(page_batch_column(k.batch, CONVERSATION_ACCOUNT), "{\"" AC1 "\",NULL}",
	       "the account");
	is_str(page_batch_column(k.batch, CONVERSATION_PARTICIPANT), "{\"" MB1 "\",NULL}",
	       "the participant");
	is_str(page_batch_column(k.batch, CONVERSATION_STATE), "{\"inactive\",\"active\"}",
	       "the conversation's state");
	is_str(page_batch_column(k.batch, CONVERSATION_NOTIFICATION_LEVEL),
	       "{\"default\",\"muted\"}", "the notification level");
	is_str(page_batch_column(k.batch, CONVERSATION_UNREAD), "{100,NULL}",
	       "unread_messages_count; a string instead of a number is NULL");
	is_str(page_batch_column(k.batch, CONVERSATION_LAST_READ), "{100,NULL}",
	       "last_read_message_index; null is NULL");
	is_str(page_batch_column(k.batch, CONVERSATION_FRIENDLY_NAME), "{\"friendly_name\",NULL}",
	       "the conversation's name");
	is_str(page_batch_column(k.batch, CONVERSATION_UNIQUE_NAME), "{\"unique_name\",NULL}",
	       "its unique name");
	is_str(page_batch_column(k.batch, CONVERSATION_CREATED_BY), "{\"created_by\",NULL}",
	       "who created it");
	is_str(page_batch_column(k.batch, CONVERSATION_DATE_CREATED),
	       "{\"2015-07-30T20:00:00Z\",NULL}", "date_created; a date that is not one is NULL");
	is_str(page_batch_column(k.batch, CONVERSATION_DATE_INACTIVE),
	       "{\"2015-12-16T22:19:38Z\",NULL}", "the timers' date_inactive; none in {}");
	is_str(page_batch_column(k.batch, CONVERSATION_DATE_CLOSED),
	       "{\"2015-12-16T22:28:38Z\",NULL}", "the timers' date_closed");
	is_str(page_batch_column(k.batch, CONVERSATION_URL),
	       "{\"" HOST "/Users/" US1 "/Conversations/" CH1 "\",NULL}", "the entry's URL");
	is_str(page_batch_column(k.batch, CONVERSATION_CONVERSATION_URL),
	       "{\"" HOST "/Conversations/" CH1 "\",NULL}", "the conversation's URL");
	is_str(page_batch_column(k.batch, CONVERSATION_PARTICIPANT_URL),
	       "{\"" HOST "/Conversations/" CH1 "/Participants/" MB1 "\",NULL}",
	       "the participant's URL");
	is_int(k.drifted, field_bit("unread_messages_count") | field_bit("date_created"),
	       "the string count and the bad date are flagged, nothing else");
	is_str(conversation_field_name(field_bit("timers.date_closed")), "timers.date_closed",
	       "a field is named as the API nests it");
	page_batch_free(k.batch);
}

static void
test_refused(void)
{
	struct sink k;

	ok(!parse(&k, "{\"channels\": [], \"meta\": {\"key\": \"channels\"}}"),
	   "a page of channels is not one of conversations");
	page_batch_free(k.batch);
	ok(parse(&k, "{\"conversations\": [{\"conversation_sid\": \"" CH1
		     "\", \"timers\": [1]}], \"meta\": {\"key\": \"conversations\"}}"),
	   "timers that are not an object: the page still parses");
	is_int(k.drifted, field_bit("timers"), "... and timers is flagged");
	is_str(page_batch_column(k.batch, CONVERSATION_DATE_INACTIVE), "{NULL}",
	       "... its dates NULL");
	page_batch_free(k.batch);
}

int
main(void)
{
	test_page();
	test_refused();
	return tap_done();
}
