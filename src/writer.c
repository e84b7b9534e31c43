/*
 * writer.c - writes one page of memberships and advances the cursor
 *
 * A page goes to the server as one call of the sync_page() function (see
 * sql/), its columns as array literals, so a page costs one round trip.
 */
#include "config.h"

#include "writer.h"

#include "db.h"
#include "log.h"
#include "mem.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum column {
	COL_CHANNEL,
	COL_ACCOUNT,
	COL_MEMBER,
	COL_STATUS,
	COL_LCMI,
	COL_UNREAD,
	COL_CHANNEL_URL,
	COL_MEMBER_URL,
	COL_COUNT,
};

/* Each column is an array literal under construction: "{a,b,NULL". */
struct page_batch {
	struct buf col[COL_COUNT];
	size_t rows;
};

static const char unchanged_sql[] =
	"SELECT sync_listing_unchanged($1::bigint, $2::text, $3::text, $4::text, $5::integer, "
	"$6::integer, $7::integer, $8::integer)";

static const char sync_page_sql[] =
	"SELECT inserted, updated, unchanged, deleted FROM sync_page("
	"$1::bigint, $2::text, $3::text, $4::boolean, $5::text, $6::text[], $7::text[], "
	"$8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::text[], $13::text[], "
	"$14::integer, $15::integer, $16::integer, $17::text)";

struct page_batch *
page_batch_new(void)
{
	struct page_batch *b = xcalloc(1, sizeof(*b));

	/* A page of at most 1000 entries of bounded strings: far below this cap. */
	for (int i = 0; i < COL_COUNT; i++)
		buf_init(&b->col[i], (size_t)1 << 30);
	page_batch_reset(b);
	return b;
}

void
page_batch_free(struct page_batch *b)
{
	if (b == NULL)
		return;
	for (int i = 0; i < COL_COUNT; i++)
		buf_free(&b->col[i]);
	free(b);
}

void
page_batch_reset(struct page_batch *b)
{
	for (int i = 0; i < COL_COUNT; i++) {
		buf_reset(&b->col[i]);
		if (!buf_append(&b->col[i], "{", 1))
			abort();
	}
	b->rows = 0;
}

size_t
page_batch_rows(const struct page_batch *b)
{
	return b->rows;
}

static void
append_checked(struct buf *col, const char *data, size_t len)
{
	/* The cap is far beyond any page the parser lets through. */
	if (!buf_append(col, data, len)) {
		log_error("page batch overflow");
		abort();
	}
}

static void
add_text(struct page_batch *b, enum column c, const char *s)
{
	/* The cap is far beyond any page the parser lets through. */
	if (!db_array_add_text(&b->col[c], s)) {
		log_error("page batch overflow");
		abort();
	}
}

static void
add_int(struct page_batch *b, enum column c, bool has, long long v)
{
	char num[32];
	int n;

	if (b->rows > 0)
		append_checked(&b->col[c], ",", 1);
	if (!has) {
		append_checked(&b->col[c], "NULL", 4);
		return;
	}
	n = snprintf(num, sizeof(num), "%lld", v);
	append_checked(&b->col[c], num, (size_t)n);
}

void
page_batch_add(struct page_batch *b, const struct membership *m)
{
	add_text(b, COL_CHANNEL, m->channel_sid);
	add_text(b, COL_ACCOUNT, m->account_sid);
	add_text(b, COL_MEMBER, m->member_sid);
	add_text(b, COL_STATUS, m->status);
	add_int(b, COL_LCMI, m->has_last_consumed_message_index, m->last_consumed_message_index);
	add_int(b, COL_UNREAD, m->has_unread_messages_count, m->unread_messages_count);
	add_text(b, COL_CHANNEL_URL, m->channel_url);
	add_text(b, COL_MEMBER_URL, m->member_url);
	b->rows++;
}

/*
 * A 128-bit digest of the page's rows (two FNV-1a passes with different
 * bases, each finished with a 64-bit mixer), as 32 hex digits.  It lets the
 * server skip an unchanged one-page listing; accidental equality of two
 * different listings is a 2^-128 event.
 */
void
page_batch_digest(const struct page_batch *b, char out[33])
{
	uint64_t h[2] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull};

	for (int c = 0; c < COL_COUNT; c++) {
		const unsigned char *p = (const unsigned char *)buf_str(&b->col[c]);

		for (size_t i = 0; i <= b->col[c].len; i++) { /* the NUL separates columns */
			h[0] = (h[0] ^ p[i]) * 0x100000001b3ull;
			h[1] = (h[1] ^ p[i]) * 0x100000001b3ull + 1;
		}
	}
	for (int k = 0; k < 2; k++) {
		h[k] ^= h[k] >> 33;
		h[k] *= 0xff51afd7ed558ccdull;
		h[k] ^= h[k] >> 33;
		h[k] *= 0xc4ceb9fe1a85ec53ull;
		h[k] ^= h[k] >> 33;
	}
	snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, h[0], h[1]);
}

static void
read_counts(const PGresult *res, struct writer_counts *out)
{
	out->inserted = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	out->updated = strtol(PQgetvalue(res, 0, 1), NULL, 10);
	out->unchanged = strtol(PQgetvalue(res, 0, 2), NULL, 10);
	out->deleted = strtol(PQgetvalue(res, 0, 3), NULL, 10);
}

bool
writer_send_page(struct db *db, struct page_batch *b, const struct writer_page *page)
{
	char run_id[24], rejected[16], requests[16], retries[16];
	const char *params[17];
	bool ok;

	snprintf(run_id, sizeof(run_id), "%" PRId64, page->run_id);
	snprintf(rejected, sizeof(rejected), "%u", page->rejected);
	snprintf(requests, sizeof(requests), "%u", page->requests);
	snprintf(retries, sizeof(retries), "%u", page->retries);
	/* Close each array literal for the call, and reopen it afterwards. */
	for (int i = 0; i < COL_COUNT; i++)
		append_checked(&b->col[i], "}", 1);
	params[0] = run_id;
	params[1] = page->service_sid;
	params[2] = page->user;
	params[3] = page->first_page ? "t" : "f";
	params[4] = page->next_url;
	for (int i = 0; i < COL_COUNT; i++)
		params[5 + i] = buf_str(&b->col[i]);
	params[13] = rejected;
	params[14] = requests;
	params[15] = retries;
	params[16] = page->digest;
	/* libpq copies the parameters into its output buffer before this returns. */
	ok = db_send_prepared(db, "sync_page", sync_page_sql, 17, params);
	for (int i = 0; i < COL_COUNT; i++)
		b->col[i].data[--b->col[i].len] = '\0';
	return ok;
}

bool
writer_page_result(struct db *db, PGresult *res, struct writer_counts *out)
{
	bool ok = db_result_ok(db, res, PGRES_TUPLES_OK, "writing a page") && PQntuples(res) == 1;

	if (ok)
		read_counts(res, out);
	PQclear(res);
	return ok;
}

bool
writer_send_unchanged(struct db *db, const struct page_batch *b, const struct writer_page *page)
{
	char run_id[24], received[24], rejected[16], requests[16], retries[16];
	const char *params[8] = {run_id,   page->service_sid, page->user, page->digest,
				 received, rejected,	      requests,	  retries};

	snprintf(run_id, sizeof(run_id), "%" PRId64, page->run_id);
	snprintf(received, sizeof(received), "%zu", b->rows);
	snprintf(rejected, sizeof(rejected), "%u", page->rejected);
	snprintf(requests, sizeof(requests), "%u", page->requests);
	snprintf(retries, sizeof(retries), "%u", page->retries);
	return db_send_prepared(db, "sync_listing_unchanged", unchanged_sql, 8, params);
}

bool
writer_unchanged_result(struct db *db, PGresult *res, bool *applied, struct writer_counts *out)
{
	bool ok = db_result_ok(db, res, PGRES_TUPLES_OK, "recording an unchanged listing") &&
		  PQntuples(res) == 1;

	if (ok) {
		*applied = !PQgetisnull(res, 0, 0);
		memset(out, 0, sizeof(*out));
		if (*applied)
			out->unchanged = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	}
	PQclear(res);
	return ok;
}
