/*
 * page_batch.c - one page of memberships, gathered as it is parsed
 */
#include "config.h"

#include "page_batch.h"

#include "db.h"
#include "hash.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>

/* A page of at most 1000 entries of bounded strings stays far below this. */
#define COLUMN_CAP ((size_t)1 << 30)

/* Each column is an array literal under construction: "{a,b,NULL". */
struct page_batch {
	struct buf *col;
	unsigned n_cols;
	size_t rows;
	bool closed;   /* each literal ends in "}" */
	bool overflow; /* an append went past COLUMN_CAP */
};

struct page_batch *
page_batch_new_columns(unsigned n_columns)
{
	struct page_batch *b = xcalloc(1, sizeof(*b));

	b->n_cols = n_columns;
	b->col = xcalloc(n_columns, sizeof(*b->col));
	for (unsigned i = 0; i < n_columns; i++)
		buf_init(&b->col[i], COLUMN_CAP);
	page_batch_reset(b);
	return b;
}

struct page_batch *
page_batch_new(void)
{
	return page_batch_new_columns(PAGE_BATCH_COLUMNS);
}

void
page_batch_free(struct page_batch *b)
{
	if (b == NULL)
		return;
	for (unsigned i = 0; i < b->n_cols; i++)
		buf_free(&b->col[i]);
	free(b->col);
	free(b);
}

static void
append(struct page_batch *b, unsigned c, const char *data, size_t len)
{
	if (!buf_append(&b->col[c], data, len))
		b->overflow = true;
}

void
page_batch_reset(struct page_batch *b)
{
	for (unsigned i = 0; i < b->n_cols; i++) {
		buf_reset(&b->col[i]);
		append(b, i, "{", 1);
	}
	b->rows = 0;
	b->closed = false;
	b->overflow = false;
}

size_t
page_batch_rows(const struct page_batch *b)
{
	return b->rows;
}

void
page_batch_add_text(struct page_batch *b, unsigned c, const char *s)
{
	page_batch_reopen(b);
	if (!db_array_add_text(&b->col[c], s))
		b->overflow = true;
}

void
page_batch_add_int(struct page_batch *b, unsigned c, bool has, long long v)
{
	char num[32];
	int n;

	page_batch_reopen(b);
	if (b->rows > 0)
		append(b, c, ",", 1);
	if (!has) {
		append(b, c, "NULL", 4);
		return;
	}
	n = snprintf(num, sizeof(num), "%lld", v);
	append(b, c, num, (size_t)n);
}

bool
page_batch_end_row(struct page_batch *b)
{
	b->rows++;
	return !b->overflow;
}

bool
page_batch_add(struct page_batch *b, const struct membership *m)
{
	page_batch_add_text(b, PAGE_BATCH_CHANNEL, m->channel_sid);
	page_batch_add_text(b, PAGE_BATCH_ACCOUNT, m->account_sid);
	page_batch_add_text(b, PAGE_BATCH_MEMBER, m->member_sid);
	page_batch_add_text(b, PAGE_BATCH_STATUS, m->status);
	page_batch_add_int(b, PAGE_BATCH_LAST_CONSUMED, m->has_last_consumed_message_index,
			   m->last_consumed_message_index);
	page_batch_add_int(b, PAGE_BATCH_UNREAD, m->has_unread_messages_count,
			   m->unread_messages_count);
	page_batch_add_text(b, PAGE_BATCH_CHANNEL_URL, m->channel_url);
	page_batch_add_text(b, PAGE_BATCH_MEMBER_URL, m->member_url);
	page_batch_add_text(b, PAGE_BATCH_NOTIFICATION_LEVEL, m->notification_level);
	return page_batch_end_row(b);
}

const char *
page_batch_column(struct page_batch *b, unsigned c)
{
	if (!b->closed) {
		for (unsigned i = 0; i < b->n_cols; i++)
			append(b, i, "}", 1);
		b->closed = true;
	}
	return b->overflow ? NULL : buf_str(&b->col[c]);
}

void
page_batch_reopen(struct page_batch *b)
{
	if (!b->closed)
		return;
	for (unsigned i = 0; i < b->n_cols; i++) {
		if (b->col[i].len > 0 && b->col[i].data[b->col[i].len - 1] == '}')
			b->col[i].data[--b->col[i].len] = '\0';
	}
	b->closed = false;
}

void
page_batch_digest(const struct page_batch *b, char out[33])
{
	struct hash_digest d;

	hash_digest_init(&d);
	for (unsigned c = 0; c < b->n_cols; c++) {
		/* Open literals, each with its NUL, which separates the columns. */
		size_t len = b->col[c].len - (b->closed ? 1 : 0);

		hash_digest_add(&d, buf_str(&b->col[c]), len);
		hash_digest_add(&d, "", 1);
	}
	hash_digest_hex(&d, out);
}
