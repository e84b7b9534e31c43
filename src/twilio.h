/*
 * twilio.h - Twilio's vocabulary: SIDs, membership statuses, APIs, error bodies
 *
 * What the API's documents define, in one place, so that the parser, the
 * configuration and the sweep agree on it.
 */
#ifndef CHATSYNC_TWILIO_H
#define CHATSYNC_TWILIO_H

#include <stdbool.h>
#include <stddef.h>

/*
 * True if s is a SID of the kind prefix names ("AC", "IS", "CH", "US"...):
 * the two letters, then 32 hexadecimal digits.  NULL is not a SID.
 */
bool twilio_sid_valid(const char *s, const char *prefix);

/* True for the membership statuses the API documents: joined, invited, not_participating. */
bool twilio_status_known(const char *status);

/*
 * A status in the one vocabulary chatsync stores: Chat v2 spells
 * not_participating "notParticipating".  Returns status itself, or a static
 * string in its place.
 */
const char *twilio_status_normalize(const char *status);

/* The APIs a service's memberships are listed through (sync.services[].api). */
enum twilio_api {
	TWILIO_API_IP_MESSAGING_V1,
	TWILIO_API_CHAT_V2,
	TWILIO_API_CONVERSATIONS,
};

struct twilio_api_info {
	const char *name;	   /* as configured: "ip_messaging_v1" */
	const char *host;	   /* its base URL: "https://ip-messaging.twilio.com" */
	const char *version;	   /* the first segment of its paths: "v1" */
	int max_page_size;	   /* PageSize of a user's channels, at most */
	int max_listing_page_size; /* PageSize of the users and channels listings, at most */
	/*
	 * What a user's listing lists, the last segment of its path: "Channels"
	 * (memberships, into user_channels) or "Conversations" (into
	 * user_conversations).
	 */
	const char *user_listing;
	bool conversations; /* a user's listing is of conversations */
	bool has_channels;  /* the service's channels can be listed (the channels dimension) */
};

const struct twilio_api_info *twilio_api_info(enum twilio_api api);

/* Finds the API named name; false if there is none of that name. */
bool twilio_api_parse(const char *name, enum twilio_api *api);

/*
 * True if s is a date as the API writes them, ISO 8601 with a zone:
 * "2015-07-30T20:00:00Z" (fractions of a second and "+hh:mm" allowed).
 */
bool twilio_date_valid(const char *s);

/*
 * Describes an HTTP error for a person: "HTTP 404", or, when body is
 * Twilio's {"code": N, "message": "..."} error, "HTTP 404 (Twilio error
 * 20404: ...)" with the message reduced to printable ASCII, so that a body
 * cannot forge log lines.  *code is the Twilio error code, 0 if none.
 */
void twilio_describe_error(long status, const char *body, long *code, char *out, size_t outsz);

/* Copies the printable ASCII of s into out, replacing anything else with '?'. */
void twilio_printable(char *out, size_t outsz, const char *s);

#endif
