/*
 * conversation.c - what an entry of a user's conversations listing holds
 */
#include "config.h"

#include "conversation.h"

#include "page_batch.h"
#include "twilio.h"

#include <stddef.h>

/* The fields of an entry (twilio_conversations_v1.json), the SID first. */
static const struct page_field fields[] = {
	{"conversation_sid", PAGE_FIELD_STRING},
	{"account_sid", PAGE_FIELD_STRING},
	{"chat_service_sid", PAGE_FIELD_STRING},
	{"participant_sid", PAGE_FIELD_STRING},
	{"user_sid", PAGE_FIELD_STRING},
	{"conversation_state", PAGE_FIELD_STRING},
	{"notification_level", PAGE_FIELD_STRING},
	{"unread_messages_count", PAGE_FIELD_INTEGER},
	{"last_read_message_index", PAGE_FIELD_INTEGER},
	{"friendly_name", PAGE_FIELD_STRING},
	{"unique_name", PAGE_FIELD_STRING},
	{"created_by", PAGE_FIELD_STRING},
	{"date_created", PAGE_FIELD_STRING},
	{"date_updated", PAGE_FIELD_STRING},
	{"timers", PAGE_FIELD_OBJECT},
	{"timers.date_inactive", PAGE_FIELD_STRING},
	{"timers.date_closed", PAGE_FIELD_STRING},
	{"url", PAGE_FIELD_STRING},
	{"links", PAGE_FIELD_OBJECT},
	{"links.participant", PAGE_FIELD_STRING},
	{"links.conversation", PAGE_FIELD_STRING},
};

enum {
	F_SID,
	F_ACCOUNT,
	F_SERVICE,
	F_PARTICIPANT,
	F_USER,
	F_STATE,
	F_LEVEL,
	F_UNREAD,
	F_LAST_READ,
	F_FRIENDLY_NAME,
	F_UNIQUE_NAME,
	F_CREATED_BY,
	F_DATE_CREATED,
	F_DATE_UPDATED,
	F_TIMERS,
	F_DATE_INACTIVE,
	F_DATE_CLOSED,
	F_URL,
	F_LINKS,
	F_PARTICIPANT_URL,
	F_CONVERSATION_URL,
	N_FIELDS
};

const struct page_schema conversation_schema = {
	.key = "conversations",
	.sid_prefix = "CH",
	.sid_kind = "a Conversation SID",
	.fields = fields,
	.n_fields = N_FIELDS,
};

/* The column of each text field stored, in the order of enum conversation_column. */
static const struct {
	unsigned column;
	unsigned field;
} text_columns[] = {
	{CONVERSATION_SID, F_SID},
	{CONVERSATION_ACCOUNT, F_ACCOUNT},
	{CONVERSATION_PARTICIPANT, F_PARTICIPANT},
	{CONVERSATION_STATE, F_STATE},
	{CONVERSATION_NOTIFICATION_LEVEL, F_LEVEL},
	{CONVERSATION_FRIENDLY_NAME, F_FRIENDLY_NAME},
	{CONVERSATION_UNIQUE_NAME, F_UNIQUE_NAME},
	{CONVERSATION_CREATED_BY, F_CREATED_BY},
	{CONVERSATION_URL, F_URL},
	{CONVERSATION_CONVERSATION_URL, F_CONVERSATION_URL},
	{CONVERSATION_PARTICIPANT_URL, F_PARTICIPANT_URL},
};

static const struct {
	unsigned column;
	unsigned field;
} date_columns[] = {
	{CONVERSATION_DATE_CREATED, F_DATE_CREATED},
	{CONVERSATION_DATE_UPDATED, F_DATE_UPDATED},
	{CONVERSATION_DATE_INACTIVE, F_DATE_INACTIVE},
	{CONVERSATION_DATE_CLOSED, F_DATE_CLOSED},
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct page_batch *
conversation_batch_new(void)
{
	return page_batch_new_columns(CONVERSATION_COLUMNS);
}

bool
conversation_batch_add(struct page_batch *b, const struct page_entry *e, unsigned *drifted)
{
	*drifted = e->drifted;
	for (size_t i = 0; i < N(text_columns); i++)
		page_batch_add_text(b, text_columns[i].column, e->str[text_columns[i].field]);
	for (size_t i = 0; i < N(date_columns); i++) {
		const char *v = e->str[date_columns[i].field];

		if (v != NULL && !twilio_date_valid(v)) {
			*drifted |= 1u << date_columns[i].field;
			v = NULL;
		}
		page_batch_add_text(b, date_columns[i].column, v);
	}
	page_batch_add_int(b, CONVERSATION_UNREAD, e->has[F_UNREAD], e->num[F_UNREAD]);
	page_batch_add_int(b, CONVERSATION_LAST_READ, e->has[F_LAST_READ], e->num[F_LAST_READ]);
	return page_batch_end_row(b);
}

const char *
conversation_service_sid(const struct page_entry *e)
{
	return e->str[F_SERVICE];
}

const char *
conversation_field_name(unsigned bit)
{
	for (unsigned i = 0; i < N_FIELDS; i++) {
		if (bit == 1u << i)
			return fields[i].name;
	}
	return "?";
}
