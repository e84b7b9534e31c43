/*
 * membership.h - one user's membership of one channel, as the API lists it
 *
 * Plain data passed from the page parser to the database writer.  NULL
 * strings and has_* == false mean the API gave null or nothing.
 */
#ifndef CHATSYNC_MEMBERSHIP_H
#define CHATSYNC_MEMBERSHIP_H

#include <stdbool.h>

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
};

#endif
