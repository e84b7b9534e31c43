/*
 * page_parser.h - streaming parser for one page of a listing of the API
 *
 * Feed it the response body in chunks of any size as they arrive; it calls
 * back once per entry and keeps only the entry being parsed, never the
 * page.  What an entry holds is described by a schema (see membership.h
 * and dimension.h), so the memberships, the users and the channels are
 * read by the same code.  It knows nothing of HTTP or SQL.
 */
#ifndef CHATSYNC_PAGE_PARSER_H
#define CHATSYNC_PAGE_PARSER_H

#include <stdbool.h>
#include <stddef.h>

struct page_parser_limits {
	size_t max_bytes;  /* whole response body */
	size_t max_string; /* any one string value or key */
	unsigned max_depth;
	size_t max_rows;
};

enum page_field_type {
	PAGE_FIELD_STRING,
	PAGE_FIELD_INTEGER,
	PAGE_FIELD_BOOLEAN,
	PAGE_FIELD_OBJECT, /* holds the fields named "NAME.key" (one level) */
};

struct page_field {
	const char *name; /* as the API spells it; "links.channel" is "channel" in "links" */
	enum page_field_type type;
};

/* The most fields a schema may have. */
#define PAGE_MAX_FIELDS 24

struct page_schema {
	/*
	 * The array of entries, also what meta.key must say ("channels");
	 * NULL: the response is one entry, without meta.
	 */
	const char *key;
	/* fields[0] is a string, the entry's SID: an entry without a valid one is rejected */
	const char *sid_prefix; /* "CH" */
	const char *sid_kind;	/* "a Channel SID", for the reason of a rejection */
	const struct page_field *fields;
	unsigned n_fields; /* at most PAGE_MAX_FIELDS */
};

/*
 * One entry.  A field that the API gave as null, did not give, or gave with
 * an unexpected type (then flagged in drifted) is NULL, or has[i] false.
 */
struct page_entry {
	const char *str[PAGE_MAX_FIELDS]; /* string fields */
	long long num[PAGE_MAX_FIELDS];	  /* integer fields, and booleans as 0 or 1 */
	bool has[PAGE_MAX_FIELDS];	  /* num[i] is set */
	unsigned drifted;		  /* bit i: field i had an unexpected type */
};

/*
 * Called for every complete entry.  e and its strings are borrowed until
 * the callback returns.  reject is NULL for a usable entry, else the reason
 * it cannot be stored (e.g. no valid SID).  Return false to stop parsing;
 * the page then fails with "stopped by the caller".
 */
typedef bool (*page_row_fn)(void *arg, const struct page_entry *e, const char *reject);

struct page_parser;

/*
 * Returns a parser the caller owns (free with page_parser_free), for pages
 * of schema (which must outlive it).
 */
struct page_parser *page_parser_new(const struct page_schema *schema,
				    const struct page_parser_limits *limits, page_row_fn on_row,
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
