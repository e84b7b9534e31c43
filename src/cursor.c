/*
 * cursor.c - where each user's listing stands (sync_cursors)
 */
#include "config.h"

#include "cursor.h"

#include "db.h"
#include "mem.h"
#include "settings.h"
#include "store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Columns: run_id, state, next_page_url, pages_done, the digest; all NULL without a cursor. */
#define POSITION_COLUMNS                                                                           \
	"c.run_id, c.state, c.next_page_url, c.pages_done, "                                       \
	"CASE WHEN c.listing_rows IS NOT NULL THEN c.listing_digest END"

void
cursor_position_from_row(const PGresult *res, int row, int64_t run_id, struct cursor_position *out)
{
	int64_t row_run;
	const char *state;
	bool has_next;

	memset(out, 0, sizeof(*out));
	out->start = CURSOR_FIRST_PAGE;
	if (PQgetisnull(res, row, 0))
		return; /* no cursor yet */
	row_run = strtoll(PQgetvalue(res, row, 0), NULL, 10);
	state = PQgetvalue(res, row, 1);
	has_next = !PQgetisnull(res, row, 2);
	out->pages_done = (unsigned)strtoul(PQgetvalue(res, row, 3), NULL, 10);
	if (row_run == run_id && strcmp(state, "running") != 0)
		out->start = CURSOR_SKIP;
	else if (has_next)
		out->start = CURSOR_RESUME;
	if (out->start == CURSOR_RESUME)
		out->next_url = xstrdup(PQgetvalue(res, row, 2));
	if (out->start == CURSOR_FIRST_PAGE)
		out->pages_done = 0;
	if (!PQgetisnull(res, row, 4) && PQgetvalue(res, row, 4)[0] != '\0')
		out->digests = xstrdup(PQgetvalue(res, row, 4));
}

void
cursor_position_free(struct cursor_position *pos)
{
	free(pos->next_url);
	free(pos->digests);
	pos->next_url = pos->digests = NULL;
	db_array_free(pos->entries, pos->n_entries);
	db_array_free(pos->next_urls, pos->n_next_urls);
	pos->entries = pos->next_urls = NULL;
	pos->n_entries = pos->n_next_urls = 0;
}

bool
cursor_call_error(struct db *db, const char *name, const char *sql, int64_t run_id,
		  const char *service_sid, const char *who, const struct cursor_error *e)
{
	char run[24], req[16], ret[16], page[16], lease[24];
	const char *params[9] = {
		run,	    service_sid, who,
		e->message, e->kind,	 e->page > 0 ? page : NULL,
		req,	    ret,	 store_lease_param(lease, sizeof(lease), e->lease)};
	PGresult *res;
	bool ok;

	snprintf(run, sizeof(run), "%" PRId64, run_id);
	snprintf(page, sizeof(page), "%u", e->page);
	snprintf(req, sizeof(req), "%u", e->requests);
	snprintf(ret, sizeof(ret), "%u", e->retries);
	res = db_exec_prepared(db, name, sql, 9, params);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK);
	PQclear(res);
	return ok;
}

bool
cursor_record_error(struct db *db, int64_t run_id, const char *service_sid, const char *user,
		    const struct cursor_error *e, bool ends_listing)
{
	/*
	 * The failure of a listing counts its requests; a note does not, and
	 * only names $7 and $8 so that both statements take the same eight
	 * parameters.
	 */
	static const char fail_sql[] = "SELECT sync_user_failed($1::bigint, $2, $3, $4, "
				       "$7::integer, $8::integer, $5, $6::integer, $9::bigint)";
	static const char note_sql[] = "SELECT sync_user_error($1::bigint, $2, $3, $4, $5, "
				       "$6::integer, $9::bigint) WHERE $7::integer IS NOT NULL "
				       "AND $8::integer IS NOT NULL";

	if (ends_listing)
		return cursor_call_error(db, "cursor_fail", fail_sql, run_id, service_sid, user, e);
	return cursor_call_error(db, "cursor_note_error", note_sql, run_id, service_sid, user, e);
}

bool
cursor_user_arrays(const struct settings_service *list, size_t n, struct buf *services,
		   struct buf *users)
{
	bool ok;

	buf_init(services, (size_t)1 << 30);
	buf_init(users, (size_t)1 << 30);
	ok = buf_append(services, "{", 1) && buf_append(users, "{", 1);
	for (size_t i = 0; ok && i < n; i++) {
		/* The default conversation service before a sweep has learnt its SID. */
		if (list[i].sid == NULL)
			continue;
		for (size_t j = 0; ok && j < list[i].n_users; j++)
			ok = db_array_add_text(services, list[i].sid) &&
			     db_array_add_text(users, list[i].users[j]);
	}
	return ok && buf_append(services, "}", 1) && buf_append(users, "}", 1);
}
