/*
 * membership.c - what an entry of a user's channel list holds
 */
#include "config.h"

#include "membership.h"
#include "twilio.h"

#include <string.h>

/* In the order of enum membership_field. */
static const struct page_field fields[] = {
	{"channel_sid", PAGE_FIELD_STRING},
	{"account_sid", PAGE_FIELD_STRING},
	{"service_sid", PAGE_FIELD_STRING},
	{"member_sid", PAGE_FIELD_STRING},
	{"status", PAGE_FIELD_STRING},
	{"last_consumed_message_index", PAGE_FIELD_INTEGER},
	{"unread_messages_count", PAGE_FIELD_INTEGER},
	{"links", PAGE_FIELD_OBJECT},
	{"links.channel", PAGE_FIELD_STRING},
	{"links.member", PAGE_FIELD_STRING},
	{"notification_level", PAGE_FIELD_STRING},
};

enum {
	F_CHANNEL,
	F_ACCOUNT,
	F_SERVICE,
	F_MEMBER,
	F_STATUS,
	F_LCMI,
	F_UNREAD,
	F_LINKS,
	F_CURL,
	F_MURL,
	F_LEVEL
};

const struct page_schema membership_schema = {
	.key = "channels",
	.sid_prefix = "CH",
	.sid_kind = "a Channel SID",
	.fields = fields,
	.n_fields = sizeof(fields) / sizeof(fields[0]),
};

void
membership_from_entry(const struct page_entry *e, struct membership *m)
{
	m->channel_sid = e->str[F_CHANNEL];
	m->account_sid = e->str[F_ACCOUNT];
	m->service_sid = e->str[F_SERVICE];
	m->member_sid = e->str[F_MEMBER];
	m->status = twilio_status_normalize(e->str[F_STATUS]);
	m->has_last_consumed_message_index = e->has[F_LCMI];
	m->last_consumed_message_index = e->num[F_LCMI];
	m->has_unread_messages_count = e->has[F_UNREAD];
	m->unread_messages_count = e->num[F_UNREAD];
	m->channel_url = e->str[F_CURL];
	m->member_url = e->str[F_MURL];
	m->notification_level = e->str[F_LEVEL];
	m->drifted = e->drifted;
}

const char *
membership_field_name(unsigned field)
{
	for (unsigned i = 0; i < membership_schema.n_fields; i++) {
		if (field == 1u << i)
			return fields[i].name;
	}
	return "?";
}
