/*
 * membership.h - one user's membership of one channel, as the API lists it
 *
 * Plain data passed from the page parser to the page batch.  NULL strings
 * and has_* == false mean the API gave null, nothing, or a value of an
 * unexpected type (then flagged in drifted).
 */
#ifndef CHATSYNC_MEMBERSHIP_H
#define CHATSYNC_MEMBERSHIP_H

#include <stdbool.h>

/*
 * The fields of an entry, as bits: which ones the API sent with a type
 * other than the documented one (see struct membership.drifted).
 */
enum membership_field {
	MEMBERSHIP_ACCOUNT_SID = 1u << 0,
	MEMBERSHIP_SERVICE_SID = 1u << 1,
	MEMBERSHIP_MEMBER_SID = 1u << 2,
	MEMBERSHIP_STATUS = 1u << 3,
	MEMBERSHIP_LAST_CONSUMED = 1u << 4,
	MEMBERSHIP_UNREAD = 1u << 5,
	MEMBERSHIP_CHANNEL_URL = 1u << 6,
	MEMBERSHIP_MEMBER_URL = 1u << 7,
	MEMBERSHIP_LINKS = 1u << 8,
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
	/*
	 * Fields (enum membership_field bits) whose value had an unexpected
	 * type: each is NULL here.  An entry with a valid channel_sid is a
	 * membership that exists whatever its other fields hold.
	 */
	unsigned drifted;
};

#endif
