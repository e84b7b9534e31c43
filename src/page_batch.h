/*
 * page_batch.h - one page of entries, gathered as it is parsed
 *
 * Each column is kept as a PostgreSQL array literal, ready to be sent as a
 * parameter of sync_page() (or of the dimensions' functions), so storing a
 * page costs one round trip.  A batch made by page_batch_new() has the
 * columns of a page of memberships.
 */
#ifndef CHATSYNC_PAGE_BATCH_H
#define CHATSYNC_PAGE_BATCH_H

#include "membership.h"

#include <stdbool.h>
#include <stddef.h>

enum page_batch_column {
	PAGE_BATCH_CHANNEL,
	PAGE_BATCH_ACCOUNT,
	PAGE_BATCH_MEMBER,
	PAGE_BATCH_STATUS,
	PAGE_BATCH_LAST_CONSUMED,
	PAGE_BATCH_UNREAD,
	PAGE_BATCH_CHANNEL_URL,
	PAGE_BATCH_MEMBER_URL,
	PAGE_BATCH_NOTIFICATION_LEVEL,
	PAGE_BATCH_COLUMNS,
};

struct page_batch;

/* Returns an empty batch of memberships the caller owns. */
struct page_batch *page_batch_new(void);

/* Returns an empty batch of n_columns columns the caller owns. */
struct page_batch *page_batch_new_columns(unsigned n_columns);
void page_batch_free(struct page_batch *b);
void page_batch_reset(struct page_batch *b);

/* Copies m into the batch; false if the batch is past its cap (it is then unusable until reset). */
bool page_batch_add(struct page_batch *b, const struct membership *m)
	__attribute__((warn_unused_result));

/*
 * A row of any batch, a column at a time: each column gets one value (a
 * string or NULL; an integer, or NULL without has), then
 * page_batch_end_row, which returns false as page_batch_add does.
 */
void page_batch_add_text(struct page_batch *b, unsigned column, const char *s);
void page_batch_add_int(struct page_batch *b, unsigned column, bool has, long long v);
bool page_batch_end_row(struct page_batch *b) __attribute__((warn_unused_result));
size_t page_batch_rows(const struct page_batch *b);

/*
 * The column's array literal, closed ("{...}"); borrowed until the batch
 * changes.  NULL if the batch went past its cap.
 */
const char *page_batch_column(struct page_batch *b, unsigned column);

/* Reopens the literals closed by page_batch_column, so rows can be added again. */
void page_batch_reopen(struct page_batch *b);

/*
 * A 128-bit digest of the batch's rows, as 32 hex digits and a NUL: equal
 * for equal rows in equal order.  It lets the server skip an unchanged
 * one-page listing.
 */
void page_batch_digest(const struct page_batch *b, char out[33]);

#endif
