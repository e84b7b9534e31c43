/*
 * page_parser.h - streaming parser for one page of a user's channel list
 *
 * Feed it the response body in chunks of any size as they arrive; it calls
 * back once per channel entry and keeps only the entry being parsed, never
 * the page.  It knows nothing of HTTP or SQL.
 */
#ifndef CHATSYNC_PAGE_PARSER_H
#define CHATSYNC_PAGE_PARSER_H

#include "membership.h"

#include <stdbool.h>
#include <stddef.h>

struct page_parser_limits {
	size_t max_bytes;  /* whole response body */
	size_t max_string; /* any one string value or key */
	unsigned max_depth;
	size_t max_rows;
};

/* The name of a membership_field bit, as the API spells the field. */
const char *page_parser_field_name(unsigned field);

/*
 * Called for every complete entry.  row and its strings are borrowed until
 * the callback returns.  reject is NULL for a usable row, else the reason it
 * cannot be stored (e.g. no valid channel_sid).  Return false to stop
 * parsing; the page then fails with "stopped by the caller".
 */
typedef bool (*page_row_fn)(void *arg, const struct membership *row, const char *reject);

struct page_parser;

/* Returns a parser the caller owns (free with page_parser_free). */
struct page_parser *page_parser_new(const struct page_parser_limits *limits, page_row_fn on_row,
				    void *arg);
void page_parser_free(struct page_parser *p);

/* Makes the parser ready for a new page. */
void page_parser_reset(struct page_parser *p);

/* Parses the next chunk.  False once the page is known to be bad. */
bool page_parser_feed(struct page_parser *p, const char *data, size_t len)
	__attribute__((warn_unused_result));

/* Ends the page; false if it was bad or incomplete. */
bool page_parser_finish(struct page_parser *p) __attribute__((warn_unused_result));

/* Why the page is bad, e.g. "invalid JSON at byte 1234: ..." (borrowed). */
const char *page_parser_error(const struct page_parser *p);

/* After a successful finish: meta.next_page_url, or NULL on the last page (borrowed). */
const char *page_parser_next_url(const struct page_parser *p);

/*
 * After a successful finish: meta.url, the page's own URL as the API names
 * it, or NULL (borrowed).
 */
const char *page_parser_self_url(const struct page_parser *p);

/* Entries seen so far, usable or not. */
size_t page_parser_rows(const struct page_parser *p);

#endif
