/*
 * test_cursor.c - where a user's listing stands, read from a cursor row
 *
 * The rows are built with libpq's result constructors, as the server would
 * send them: no database needed.
 */
#include "config.h"

#include "cursor.h"

#include "tap.h"

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#define DIGEST "0123456789abcdef0123456789abcdef"

/* One row: run_id, state, next_page_url, pages_done, digest; NULL values are SQL NULLs. */
static PGresult *
cursor_row(const char *run_id, const char *state, const char *next, const char *pages,
	   const char *digest)
{
	static const char *const names[] = {"run_id", "state", "next_page_url", "pages_done",
					    "listing_digest"};
	const char *values[] = {run_id, state, next, pages, digest};
	PGresAttDesc attrs[5];
	PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);

	memset(attrs, 0, sizeof(attrs));
	for (int i = 0; i < 5; i++) {
		attrs[i].name = (char *)names[i];
		attrs[i].format = 0;
		attrs[i].typlen = -1;
		attrs[i].atttypmod = -1;
	}
	if (res == NULL || !PQsetResultAttrs(res, 5, attrs))
		abort();
	for (int i = 0; i < 5; i++) {
		if (!PQsetvalue(res, 0, i, (char *)values[i],
				values[i] ? (int)strlen(values[i]) : -1))
			abort();
	}
	return res;
}

static void
read_row(PGresult *res, int64_t run_id, struct cursor_position *pos)
{
	cursor_position_from_row(res, 0, run_id, pos);
	PQclear(res);
}

static void
test_positions(void)
{
	struct cursor_position pos;

	read_row(cursor_row(NULL, NULL, NULL, NULL, NULL), 7, &pos);
	ok(pos.start == CURSOR_FIRST_PAGE, "no cursor: the listing starts at its first page");
	ok(pos.next_url == NULL && pos.pages_done == 0 && pos.digests == NULL,
	   "no cursor: no URL, no pages, no digest");

	read_row(cursor_row("7", "complete", NULL, "3", DIGEST), 7, &pos);
	ok(pos.start == CURSOR_SKIP, "finished in this sweep: skipped");
	cursor_position_free(&pos);

	read_row(cursor_row("7", "failed", "https://x/p2", "1", NULL), 7, &pos);
	ok(pos.start == CURSOR_SKIP,
	   "failed in this sweep: skipped too (the next sweep resumes it)");
	free(pos.next_url);

	read_row(cursor_row("6", "failed", "https://x/p2", "1", NULL), 7, &pos);
	ok(pos.start == CURSOR_RESUME, "failed in an earlier sweep mid-listing: resumed");
	is_str(pos.next_url, "https://x/p2", "and at its next page");
	is_int(pos.pages_done, 1, "with the pages it committed");
	free(pos.next_url);

	read_row(cursor_row("7", "running", "https://x/p4", "3", DIGEST "," DIGEST ",,"), 7, &pos);
	ok(pos.start == CURSOR_RESUME, "running in this sweep (a crash): resumed");
	is_int(pos.pages_done, 3, "at page 4");
	is_str(pos.digests, DIGEST "," DIGEST ",,",
	       "with the digests stored for its pages, to skip those unchanged");
	cursor_position_free(&pos);
	ok(pos.next_url == NULL && pos.digests == NULL, "cursor_position_free() frees both");

	read_row(cursor_row("6", "complete", NULL, "1", DIGEST), 7, &pos);
	ok(pos.start == CURSOR_FIRST_PAGE,
	   "complete in an earlier sweep: listed again from page 1");
	is_str(pos.digests, DIGEST, "with the digest of its last one-page listing");
	ok(pos.next_url == NULL, "and no URL to resume at");
	cursor_position_free(&pos);

	read_row(cursor_row("6", "complete", NULL, "4", ""), 7, &pos);
	ok(pos.digests == NULL, "no digest stored: none");
	is_int(pos.pages_done, 0, "a new listing has no pages done");
}

int
main(void)
{
	test_positions();
	return tap_done();
}
