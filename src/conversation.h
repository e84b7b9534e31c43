/*
 * conversation.h - what an entry of a user's conversations listing holds
 *
 * GET /v1/Services/{IS}/Users/{U}/Conversations on the Conversations API
 * (and /v1/Users/{U}/Conversations for the account's default service): one
 * entry per conversation the user takes part in, stored in
 * user_conversations.
 */
#ifndef CHATSYNC_CONVERSATION_H
#define CHATSYNC_CONVERSATION_H

#include "page_parser.h"

#include <stdbool.h>

struct page_batch;

/* The columns of a page of conversations, as sync_conversations_page() takes them. */
enum conversation_column {
	CONVERSATION_SID,
	CONVERSATION_ACCOUNT,
	CONVERSATION_PARTICIPANT,
	CONVERSATION_STATE,
	CONVERSATION_NOTIFICATION_LEVEL,
	CONVERSATION_UNREAD,
	CONVERSATION_LAST_READ,
	CONVERSATION_FRIENDLY_NAME,
	CONVERSATION_UNIQUE_NAME,
	CONVERSATION_CREATED_BY,
	CONVERSATION_DATE_CREATED,
	CONVERSATION_DATE_UPDATED,
	CONVERSATION_DATE_INACTIVE,
	CONVERSATION_DATE_CLOSED,
	CONVERSATION_URL,
	CONVERSATION_CONVERSATION_URL,
	CONVERSATION_PARTICIPANT_URL,
	CONVERSATION_COLUMNS,
};

extern const struct page_schema conversation_schema;

/* A new batch of CONVERSATION_COLUMNS columns (page_batch_free frees it). */
struct page_batch *conversation_batch_new(void);

/*
 * Adds entry e of a page of conversation_schema to b.  A date that is not
 * one is stored as NULL and counted as drifted.  *drifted gets the schema's
 * fields (bit i: field i) whose value had an unexpected type or value.
 * False if the batch is full.
 */
bool conversation_batch_add(struct page_batch *b, const struct page_entry *e, unsigned *drifted)
	__attribute__((warn_unused_result));

/* The entry's chat_service_sid (borrowed from e), or NULL. */
const char *conversation_service_sid(const struct page_entry *e);

/* The name of field bit (1u << i) of conversation_schema, as the API spells it. */
const char *conversation_field_name(unsigned bit);

#endif
