/*
 * store.h - stores one page of a user's listing and advances the cursor
 *
 * Committing a page applies its rows, the deletions a last page implies,
 * the cursor's advance and the run's counters in a single transaction: one
 * call of sync_page() for memberships, or of sync_conversations_page() for
 * conversations (see sql/).  It knows nothing of JSON or HTTP.  Pages
 * are sent without waiting, so that the transfers go on meanwhile.
 */
#ifndef CHATSYNC_STORE_H
#define CHATSYNC_STORE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

struct db;
struct page_batch;

/* What a page is, besides its rows. */
struct store_page {
	int64_t run_id;
	const char *service_sid;
	const char *user;
	bool first_page;      /* the first page of the user's listing */
	unsigned page_no;     /* its number in the listing, from 1 */
	const char *next_url; /* NULL: the listing's last page */
	size_t rows;	      /* its entries: parsed, or as stored if its body was the stored one */
	unsigned rejected;    /* entries that could not be stored, of this page and those skipped */
	unsigned requests;    /* HTTP requests to count in the run */
	unsigned retries;
	const char *digest; /* page_batch_digest() of the page, or NULL */
	/*
	 * The pages before it that the listing skipped as unchanged (see
	 * sql/013_listing_pages.sql): how many, and their entries.
	 */
	unsigned skipped_pages, skipped_rows;
	/*
	 * On a last page, a text[] literal: the digest of each page before it
	 * that was skipped, by number, NULL for one that was sent (NULL: none
	 * skipped).
	 */
	const char *earlier;
	/*
	 * A text[] literal of the digests of all the listing's pages, when
	 * every one equals the stored one: the listing is then sent as
	 * unchanged, without its rows (store_send_unchanged()); else NULL.
	 */
	const char *unchanged;
	bool conversations; /* a page of conversations (conversation.h), not of memberships */
	int64_t lease;	    /* the listing's lease token (see sql/012_leases.sql); 0: none */
};

struct store_counts {
	long inserted, updated, unchanged, deleted;
	/*
	 * The listing's lease was taken over by another chatsyncd: nothing was
	 * applied, and the page must be dropped quietly.
	 */
	bool refused;
};

/* A lease token as a statement's parameter, written in buf: NULL for 0 (none). */
const char *store_lease_param(char *buf, size_t size, int64_t lease);

/*
 * Sends the batch, as described by page, to be committed on db without
 * waiting (see db_send_prepared); the batch may be reused at once.  On
 * failure the reason is in db_error(db).
 */
bool store_send_page(struct db *db, struct page_batch *b, const struct store_page *page)
	__attribute__((warn_unused_result));

/*
 * Reads the outcome of a page sent with store_send_page from its result
 * (collected with db_collect; this function clears it).  False, with the
 * reason in db_error(db), if the page was not committed.
 */
bool store_page_result(struct db *db, PGresult *res, struct store_counts *out)
	__attribute__((warn_unused_result));

/*
 * Sends (without waiting) the cursor's advance for a listing whose pages'
 * digests (page->unchanged) are those stored for the user, without the rows:
 * see sync_listing_unchanged() in sql/.  The received entries are those of
 * the last page's batch b and of the pages skipped.
 */
bool store_send_unchanged(struct db *db, const struct store_page *page)
	__attribute__((warn_unused_result));

/*
 * Reads (and frees) the answer to store_send_unchanged().  *applied false:
 * the stored digests are not those, nothing was done, and the last page
 * must be sent whole with store_send_page().
 */
bool store_unchanged_result(struct db *db, PGresult *res, bool *applied, struct store_counts *out)
	__attribute__((warn_unused_result));

#endif
