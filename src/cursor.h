/*
 * cursor.h - where each user's listing stands (sync_cursors)
 */
#ifndef CHATSYNC_CURSOR_H
#define CHATSYNC_CURSOR_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct db;

enum cursor_start {
	CURSOR_SKIP,	   /* the user already finished in this sweep */
	CURSOR_FIRST_PAGE, /* start the listing from its first page */
	CURSOR_RESUME,	   /* continue the listing at next_url */
};

struct cursor_position {
	enum cursor_start start;
	char *next_url;	     /* for CURSOR_RESUME; the caller owns it */
	unsigned pages_done; /* pages of the listing already committed */
	char digest[33];     /* the last one-page listing's digest ("" if none) */
};

/*
 * Reads where n users' listings of one service stand for the sweep run_id,
 * in one round trip: out[i] is users[i]'s.  On failure the reason is in
 * db_error(db).
 */
bool cursor_positions(struct db *db, int64_t run_id, const char *service_sid,
		      const char *const *users, size_t n, struct cursor_position *out)
	__attribute__((warn_unused_result));

struct buf;
struct settings_service;

/*
 * Every user of the n services as two parallel text[] literals, the
 * services' SIDs and the users, for a query over all of them.  Initialises both buffers
 * (the caller frees them, whatever the outcome); false if they grow past
 * their cap.
 */
bool cursor_user_arrays(const struct settings_service *list, size_t n, struct buf *services,
			struct buf *users) __attribute__((warn_unused_result));

/* An error to record for a user, on its cursor and in sync_errors. */
struct cursor_error {
	const char *message;
	const char *kind; /* "http 404", "transport", "parse", "limit", "url", "database", "auth" */
	unsigned page;	  /* of the listing; 0: before any */
	unsigned requests; /* HTTP requests and retries not yet counted in the run */
	unsigned retries;
};

/*
 * Calls sql, prepared as name: a function that records an error, given
 * $1 run_id, $2 service_sid, $3 who (the user, or the listing), $4 the
 * message, $5 the kind, $6 the page (NULL for 0), $7 the requests and $8
 * the retries (see sql/functions/sync_user_failed.sql).
 */
bool cursor_call_error(struct db *db, const char *name, const char *sql, int64_t run_id,
		       const char *service_sid, const char *who, const struct cursor_error *e)
	__attribute__((warn_unused_result));

/*
 * Records e on the user's cursor and in sync_errors.  With ends_listing the
 * user's listing failed in the sweep run_id (its position is kept, and e's
 * requests and retries are counted in the run); without, the error is noted
 * and the user is tried again when the sweep resumes.  On failure the
 * reason is in db_error(db).
 */
bool cursor_record_error(struct db *db, int64_t run_id, const char *service_sid, const char *user,
			 const struct cursor_error *e, bool ends_listing)
	__attribute__((warn_unused_result));

/*
 * Reads one row of a cursor query (columns: run_id, state, next_page_url,
 * pages_done, the digest, all NULL for a user without a cursor) as the
 * position of a user in the sweep run_id.  out->next_url is the caller's.
 */
void cursor_position_from_row(const PGresult *res, int row, int64_t run_id,
			      struct cursor_position *out);

/*
 * The positions of the users about to start, read ahead: users start in
 * order, so when a user's position is not at hand, that user's and the
 * next CURSOR_LOOKAHEAD - 1 are read in one query.  No one else moves
 * those cursors before their users start.
 */
#define CURSOR_LOOKAHEAD 64
struct cursor_lookahead;

/* Returns an empty read-ahead the caller owns. */
struct cursor_lookahead *cursor_lookahead_new(void);
void cursor_lookahead_free(struct cursor_lookahead *la);

/* Forgets what was read ahead (after a reconnect, say: the cursors may have moved). */
void cursor_lookahead_drop(struct cursor_lookahead *la);

/*
 * The position of users[user_index] of the service numbered service_key
 * (users holds that service's n_users users); out->next_url is then the
 * caller's.  On failure the reason is in db_error(db).
 */
bool cursor_lookahead_get(struct cursor_lookahead *la, struct db *db, int64_t run_id,
			  size_t service_key, const char *service_sid, const char *const *users,
			  size_t n_users, size_t user_index, struct cursor_position *out)
	__attribute__((warn_unused_result));

#endif
