/*
 * store.c - stores one page of a user's listing and advances the cursor
 *
 * A page goes to the server as one call of the sync_page() function, or
 * sync_conversations_page() (see sql/), its columns as array literals, so a
 * page costs one round trip.
 */
#include "config.h"

#include "store.h"

#include "conversation.h"
#include "db.h"
#include "page_batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char unchanged_sql[] =
	"SELECT sync_listing_unchanged($1::bigint, $2::text, $3::text, $4::text[], $5::integer, "
	"$6::integer, $7::integer, $8::integer, $9::bigint)";

static const char sync_page_sql[] =
	"SELECT inserted, updated, unchanged, deleted FROM sync_page("
	"$1::bigint, $2::text, $3::text, $4::boolean, $5::text, $6::text[], $7::text[], "
	"$8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::text[], $13::text[], "
	"$15::integer, $16::integer, $17::integer, $18::text, $14::text[], $19::bigint, "
	"$20::integer, $21::text[], $22::integer, $23::integer)";

static const char sync_conversations_page_sql[] =
	"SELECT inserted, updated, unchanged, deleted FROM sync_conversations_page("
	"$1::bigint, $2::text, $3::text, $4::boolean, $5::text, $6::text[], $7::text[], "
	"$8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::text[], "
	"$14::text[], $15::text[], $16::timestamptz[], $17::timestamptz[], $18::timestamptz[], "
	"$19::timestamptz[], $20::text[], $21::text[], $22::text[], "
	"$23::integer, $24::integer, $25::integer, $26::text, $27::bigint, $28::integer, "
	"$29::text[], $30::integer, $31::integer)";

/*
 * A page's statement: the run, service, user, first page and next URL, its
 * columns, then nine (the rejected entries, the requests, the retries, the
 * digest, the lease token, the page's number, the digests of the pages
 * skipped, how many and their entries).
 */
struct page_statement {
	const char *name;
	const char *sql;
	unsigned columns;
};

static const struct page_statement memberships = {"sync_page", sync_page_sql, PAGE_BATCH_COLUMNS};
static const struct page_statement conversations = {"sync_conversations_page",
						    sync_conversations_page_sql,
						    CONVERSATION_COLUMNS};

#define FIRST_COLUMN_PARAM 5
#define MAX_PARAMS (FIRST_COLUMN_PARAM + CONVERSATION_COLUMNS + 9)

const char *
store_lease_param(char *buf, size_t size, int64_t lease)
{
	if (lease == 0)
		return NULL;
	snprintf(buf, size, "%" PRId64, lease);
	return buf;
}

static void
read_counts(const PGresult *res, struct store_counts *out)
{
	memset(out, 0, sizeof(*out));
	out->refused = PQgetisnull(res, 0, 0);
	if (out->refused)
		return;
	out->inserted = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	out->updated = strtol(PQgetvalue(res, 0, 1), NULL, 10);
	out->unchanged = strtol(PQgetvalue(res, 0, 2), NULL, 10);
	out->deleted = strtol(PQgetvalue(res, 0, 3), NULL, 10);
}

bool
store_send_page(struct db *db, struct page_batch *b, const struct store_page *page)
{
	const struct page_statement *st = page->conversations ? &conversations : &memberships;
	char run_id[24], rejected[16], requests[16], retries[16], lease[24], page_no[16];
	char skipped_pages[16], skipped_rows[16];
	const char *params[MAX_PARAMS];
	unsigned n = FIRST_COLUMN_PARAM;
	bool ok = true;

	snprintf(run_id, sizeof(run_id), "%" PRId64, page->run_id);
	snprintf(rejected, sizeof(rejected), "%u", page->rejected);
	snprintf(requests, sizeof(requests), "%u", page->requests);
	snprintf(retries, sizeof(retries), "%u", page->retries);
	snprintf(page_no, sizeof(page_no), "%u", page->page_no);
	snprintf(skipped_pages, sizeof(skipped_pages), "%u", page->skipped_pages);
	snprintf(skipped_rows, sizeof(skipped_rows), "%u", page->skipped_rows);
	params[0] = run_id;
	params[1] = page->service_sid;
	params[2] = page->user;
	params[3] = page->first_page ? "t" : "f";
	params[4] = page->next_url;
	for (unsigned i = 0; i < st->columns; i++) {
		params[n] = page_batch_column(b, i);
		ok = ok && params[n++] != NULL;
	}
	params[n++] = rejected;
	params[n++] = requests;
	params[n++] = retries;
	params[n++] = page->digest;
	params[n++] = store_lease_param(lease, sizeof(lease), page->lease);
	params[n++] = page->page_no > 0 ? page_no : NULL;
	params[n++] = page->earlier;
	params[n++] = skipped_pages;
	params[n++] = skipped_rows;
	if (!ok)
		db_set_error(db, "the page is too large to send");
	/* libpq copies the parameters into its output buffer before this returns. */
	ok = ok && db_send_prepared(db, st->name, st->sql, (int)n, params);
	page_batch_reopen(b);
	return ok;
}

bool
store_page_result(struct db *db, PGresult *res, struct store_counts *out)
{
	bool ok = db_result_ok(db, res, PGRES_TUPLES_OK);

	if (ok && PQntuples(res) != 1) {
		db_set_error(db, "the page's function returned %d rows, not one", PQntuples(res));
		ok = false;
	}
	if (ok)
		read_counts(res, out);
	PQclear(res);
	return ok;
}

bool
store_send_unchanged(struct db *db, const struct store_page *page)
{
	char run_id[24], received[24], rejected[16], requests[16], retries[16], lease[24];
	const char *params[9] = {run_id,
				 page->service_sid,
				 page->user,
				 page->unchanged,
				 received,
				 rejected,
				 requests,
				 retries,
				 store_lease_param(lease, sizeof(lease), page->lease)};

	snprintf(run_id, sizeof(run_id), "%" PRId64, page->run_id);
	snprintf(received, sizeof(received), "%zu", page->rows + page->skipped_rows);
	snprintf(rejected, sizeof(rejected), "%u", page->rejected);
	snprintf(requests, sizeof(requests), "%u", page->requests);
	snprintf(retries, sizeof(retries), "%u", page->retries);
	return db_send_prepared(db, "sync_listing_unchanged", unchanged_sql, 9, params);
}

bool
store_unchanged_result(struct db *db, PGresult *res, bool *applied, struct store_counts *out)
{
	bool ok = db_result_ok(db, res, PGRES_TUPLES_OK);

	if (ok && PQntuples(res) != 1) {
		db_set_error(db, "sync_listing_unchanged() returned %d rows, not one",
			     PQntuples(res));
		ok = false;
	}
	if (ok) {
		long v = PQgetisnull(res, 0, 0) ? 0 : strtol(PQgetvalue(res, 0, 0), NULL, 10);

		memset(out, 0, sizeof(*out));
		*applied = !PQgetisnull(res, 0, 0) && v >= 0;
		out->refused = v < 0; /* -1: fenced out */
		if (*applied)
			out->unchanged = v;
	}
	PQclear(res);
	return ok;
}
