/*
 * membership.h - one user's membership of one channel, as the API lists it
 *
 * Plain data passed from the page parser to the page batch.  NULL strings
 * and has_* == false mean the API gave null, nothing, or a value of an
 * unexpected type (then flagged in drifted).
 */
#ifndef CHATSYNC_MEMBERSHIP_H
#define CHATSYNC_MEMBERSHIP_H

#include "page_parser.h"

#include <stdbool.h>

/*
 * The fields of an entry, as bits: which ones the API sent with a type
 * other than the documented one (see struct membership.drifted).  Bit i is
 * field i of membership_schema.
 */
enum membership_field {
	MEMBERSHIP_CHANNEL_SID = 1u << 0,
	MEMBERSHIP_ACCOUNT_SID = 1u << 1,
	MEMBERSHIP_SERVICE_SID = 1u << 2,
	MEMBERSHIP_MEMBER_SID = 1u << 3,
	MEMBERSHIP_STATUS = 1u << 4,
	MEMBERSHIP_LAST_CONSUMED = 1u << 5,
	MEMBERSHIP_UNREAD = 1u << 6,
	MEMBERSHIP_LINKS = 1u << 7,
	MEMBERSHIP_CHANNEL_URL = 1u << 8,
	MEMBERSHIP_MEMBER_URL = 1u << 9,
	MEMBERSHIP_NOTIFICATION_LEVEL = 1u << 10,
};

struct membership {
	const char *channel_sid;
	const char *account_sid;
	const char *service_sid;
	const char *member_sid;
	const char *status;
	bool has_last_consumed_message_index;
	long long last_consumed_message_index;
	bool has_unread_messages_count;
	long long unread_messages_count;
	const char *channel_url;
	const char *member_url;
	const char *notification_level; /* Chat v2: default or muted; NULL through v1 */
	/*
	 * Fields (enum membership_field bits) whose value had an unexpected
	 * type: each is NULL here.  An entry with a valid channel_sid is a
	 * membership that exists whatever its other fields hold.
	 */
	unsigned drifted;
};

/* A page of a user's channel list: GET /v1/Services/{IS}/Users/{U}/Channels. */
extern const struct page_schema membership_schema;

/* The membership an entry of membership_schema holds; its strings stay e's. */
void membership_from_entry(const struct page_entry *e, struct membership *m);

/* The name of a membership_field bit, as the API spells the field ("links.channel"). */
const char *membership_field_name(unsigned field);

#endif
