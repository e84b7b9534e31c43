/*
 * dimension.h - the service, its users and its channels, as the API lists them
 *
 * What the entries of the three "dimension" listings hold, and how a page
 * of them is stored: one call of sync_service_row(), sync_users_page() or
 * sync_channels_page() (see sql/functions/sync_dimensions.sql), which also
 * moves the listing's cursor (sync_dimension_cursors) in the same
 * transaction.  The listings themselves are walked like a user's (see
 * listing.c).  It knows nothing of HTTP.
 */
#ifndef CHATSYNC_DIMENSION_H
#define CHATSYNC_DIMENSION_H

#include "page_parser.h"
#include "twilio.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cursor_error;
struct cursor_position;
struct db;
struct page_batch;
struct store_counts;
struct store_page;

enum dimension {
	DIMENSION_SERVICE,  /* GET /v1/Services/{IS}: one entry */
	DIMENSION_USERS,    /* GET /v1/Services/{IS}/Users */
	DIMENSION_CHANNELS, /* GET /v1/Services/{IS}/Channels, public and private */
	DIMENSIONS,
};

/* "service", "users" or "channels": the listing's name in sync_dimension_cursors. */
const char *dimension_name(enum dimension d);

/* What an entry of the listing holds. */
const struct page_schema *dimension_schema(enum dimension d);

/*
 * The listing's first page at base (see url_check_base) through the API
 * api, with the largest page it allows; the caller owns it.
 */
char *dimension_first_url(enum dimension d, const char *base, enum twilio_api api,
			  const char *service_sid);

/* Returns an empty batch for pages of the listing; the caller owns it. */
struct page_batch *dimension_batch_new(enum dimension d);

/*
 * Adds an entry to the batch.  Free text that Twilio marks as personal
 * data (attributes) is stored only with store_attributes.  A date that is
 * not one (see twilio_date_valid) is stored as NULL and flagged in
 * *drifted like a field of the wrong type.  False if the batch is past its
 * cap.
 */
bool dimension_batch_add(enum dimension d, struct page_batch *b, const struct page_entry *e,
			 bool store_attributes, unsigned *drifted)
	__attribute__((warn_unused_result));

/*
 * Sends a page of the listing, as page describes it (page->digest unused:
 * the batch's own is sent, so that a page the same as last time is not
 * compared again), to be stored with the listing's cursor in one
 * transaction, without waiting
 * (see db_send_prepared); the batch may be reused at once.  On failure the
 * reason is in db_error(db).
 */
bool dimension_send_page(struct db *db, enum dimension d, struct page_batch *b,
			 const struct store_page *page) __attribute__((warn_unused_result));

/*
 * Reads the outcome of a page sent with dimension_send_page from its result
 * (this function clears it).  out->refused: another chatsyncd holds the
 * schema, nothing was stored.  False, with the reason in db_error(db), if
 * the page was not stored.
 */
bool dimension_page_result(struct db *db, PGresult *res, struct store_counts *out)
	__attribute__((warn_unused_result));

/* Where the listing stands for the sweep run_id; out->next_url is the caller's. */
bool dimension_position(struct db *db, int64_t run_id, const char *service_sid, enum dimension d,
			struct cursor_position *out) __attribute__((warn_unused_result));

/*
 * Records that the listing failed in the sweep run_id: on its cursor, and
 * in sync_errors as user "@service", "@users" or "@channels".
 */
bool dimension_record_failure(struct db *db, int64_t run_id, const char *service_sid,
			      enum dimension d, const struct cursor_error *e)
	__attribute__((warn_unused_result));

/*
 * The users whose memberships a sweep lists for a service, in order: with
 * all, every user of its users listing not deleted; else users as
 * configured, each identity that the users listing knows replaced by its
 * User SID (what was stored under the identity moves to the SID), without
 * duplicates.  *out (n_out of them) is the caller's to free, each string
 * and the array.  On failure the reason is in db_error(db).
 */
bool dimension_resolve_users(struct db *db, const char *service_sid, char *const *users,
			     size_t n_users, bool all, char ***out, size_t *n_out)
	__attribute__((warn_unused_result));

#endif
