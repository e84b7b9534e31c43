/*
 * writer.h - writes one page of memberships and advances the cursor
 *
 * Rows are gathered into a page_batch as they are parsed; committing the
 * batch applies them, the deletions a last page implies, the cursor's
 * advance and the run's counters in a single transaction.  It knows nothing
 * of JSON or HTTP.
 */
#ifndef CHATSYNC_WRITER_H
#define CHATSYNC_WRITER_H

#include "membership.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct db;
struct page_batch;

/* Returns an empty batch the caller owns. */
struct page_batch *page_batch_new(void);
void page_batch_free(struct page_batch *b);
void page_batch_reset(struct page_batch *b);
/* Copies m into the batch. */
void page_batch_add(struct page_batch *b, const struct membership *m);
size_t page_batch_rows(const struct page_batch *b);

/* A 128-bit digest of the batch's rows, as 32 hex digits and a NUL. */
void page_batch_digest(const struct page_batch *b, char out[33]);

struct writer_page {
	int64_t run_id;
	const char *service_sid;
	const char *user;
	bool first_page;      /* the first page of the user's listing */
	const char *next_url; /* NULL: the listing's last page */
	unsigned rejected;    /* entries of this page that could not be stored */
	unsigned requests;    /* HTTP requests to count in the run */
	unsigned retries;
	const char *digest;   /* page_batch_digest() of a whole one-page listing, else NULL */
};

struct writer_counts {
	long inserted, updated, unchanged, deleted;
};

/*
 * Sends the batch, as described by page, to be committed on db without
 * waiting (see db_send_prepared); the batch may be reused at once.  False if
 * it could not be sent.
 */
bool writer_send_page(struct db *db, struct page_batch *b, const struct writer_page *page)
	__attribute__((warn_unused_result));

/*
 * Reads the outcome of a page sent with writer_send_page from its result
 * (collected with db_collect; this function clears it).  Logs and returns
 * false if the page was not committed.
 */
bool writer_page_result(struct db *db, PGresult *res, struct writer_counts *out)
	__attribute__((warn_unused_result));

/*
 * Sends (without waiting) the cursor's advance for a one-page listing whose
 * digest is the one on the user's cursor, without the rows: see
 * sync_listing_unchanged() in sql/.
 */
bool writer_send_unchanged(struct db *db, const struct page_batch *b,
			   const struct writer_page *page) __attribute__((warn_unused_result));

/*
 * Reads (and frees) the answer to writer_send_unchanged().  *applied false:
 * the cursor no longer holds that digest, nothing was done, and the page
 * must be sent whole with writer_send_page().
 */
bool writer_unchanged_result(struct db *db, PGresult *res, bool *applied,
			     struct writer_counts *out) __attribute__((warn_unused_result));

#endif
