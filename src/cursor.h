/*
 * cursor.h - sweeps (sync_runs) and where each user's listing stands (sync_cursors)
 */
#ifndef CHATSYNC_CURSOR_H
#define CHATSYNC_CURSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct db;

/*
 * Resumes the newest unfinished sweep, or starts a new one.  *resumed tells
 * which.
 */
bool cursor_begin_run(struct db *db, int64_t *run_id, bool *resumed)
	__attribute__((warn_unused_result));

enum cursor_start {
	CURSOR_SKIP,	  /* the user already finished in this sweep */
	CURSOR_FIRST_PAGE, /* start the listing from its first page */
	CURSOR_RESUME,	  /* continue the listing at next_url */
};

struct cursor_position {
	enum cursor_start start;
	char *next_url;	   /* for CURSOR_RESUME; the caller owns it */
	unsigned pages_done; /* pages of the listing already committed */
	char digest[33];     /* the last one-page listing's digest ("" if none) */
};

/*
 * Reads where n users' listings of one service stand for the sweep run_id,
 * in one round trip: out[i] is users[i]'s.
 */
bool cursor_positions(struct db *db, int64_t run_id, const char *service_sid,
		      const char *const *users, size_t n, struct cursor_position *out)
	__attribute__((warn_unused_result));

/* Records that the user's listing failed in this sweep; its position is kept. */
bool cursor_fail(struct db *db, int64_t run_id, const char *service_sid, const char *user,
		 const char *error, unsigned requests, unsigned retries)
	__attribute__((warn_unused_result));

/*
 * Records an error on the user's cursor without ending its part in the
 * sweep run_id (so a resumed sweep tries it again).
 */
bool cursor_note_error(struct db *db, int64_t run_id, const char *service_sid, const char *user,
		       const char *error) __attribute__((warn_unused_result));

struct run_totals {
	long users_ok, users_failed, pages;
	long received, inserted, updated, unchanged, deleted, rejected;
	long requests, retries;
};

/* Marks the sweep finished, adding requests not yet counted, and reads its totals. */
bool cursor_finish_run(struct db *db, int64_t run_id, unsigned requests, unsigned retries,
		       struct run_totals *out) __attribute__((warn_unused_result));

#endif
