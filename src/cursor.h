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
	/*
	 * The digests of the pages stored for the listing, comma-separated by
	 * page number ("" for a page without one), or NULL; the caller owns it.
	 */
	char *digests;
	/*
	 * Of the same pages, when a claim read them: the entries each listed
	 * ("" or NULL when unknown) and the next page each named (NULL: none, or
	 * unknown), n_pages of each; the caller owns them.
	 */
	char **entries;
	char **next_urls;
	size_t n_entries, n_next_urls;
	int64_t lease; /* the token of the lease this process holds on it; 0: none */
};

/* Frees what pos owns (next_url, digests, entries, next_urls). */
void cursor_position_free(struct cursor_position *pos);

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
	int64_t lease; /* the listing's lease token; 0: none */
};

/*
 * Calls sql, prepared as name: a function that records an error, given
 * $1 run_id, $2 service_sid, $3 who (the user, or the listing), $4 the
 * message, $5 the kind, $6 the page (NULL for 0), $7 the requests and $8
 * the retries, $9 the lease token (see sql/functions/sync_user_failed.sql).
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
 * pages_done, the pages' digests, all NULL for a user without a cursor)
 * as the position of a user in the sweep run_id.  out->next_url and
 * out->digests are the caller's.
 */
void cursor_position_from_row(const PGresult *res, int row, int64_t run_id,
			      struct cursor_position *out);

#endif
