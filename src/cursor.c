/*
 * cursor.c - sweeps (sync_runs) and where each user's listing stands (sync_cursors)
 */
#include "config.h"

#include "cursor.h"

#include "db.h"
#include "log.h"
#include "mem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool
cursor_begin_run(struct db *db, int64_t *run_id, bool *resumed)
{
	static const char find_sql[] = "SELECT run_id FROM sync_runs WHERE finished_at IS NULL "
				       "ORDER BY run_id DESC LIMIT 1";
	static const char new_sql[] = "INSERT INTO sync_runs DEFAULT VALUES RETURNING run_id";
	PGresult *res = PQexec(db_conn(db), find_sql);
	bool ok = db_result_ok(db, res, PGRES_TUPLES_OK, "looking for an unfinished sweep");

	if (ok && PQntuples(res) == 1) {
		*resumed = true;
	} else if (ok) {
		PQclear(res);
		res = PQexec(db_conn(db), new_sql);
		ok = db_result_ok(db, res, PGRES_TUPLES_OK, "starting a sweep");
		*resumed = false;
	}
	if (ok)
		*run_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return ok;
}

/* Columns: run_id, state, next_page_url, pages_done, the digest; all NULL without a cursor. */
#define POSITION_COLUMNS                                                                           \
	"c.run_id, c.state, c.next_page_url, c.pages_done, "                                       \
	"CASE WHEN c.listing_rows IS NOT NULL THEN c.listing_digest END"

static void
read_position(const PGresult *res, int row, int64_t run_id, struct cursor_position *out)
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
	if (out->start == CURSOR_FIRST_PAGE) {
		out->pages_done = 0;
		if (!PQgetisnull(res, row, 4))
			snprintf(out->digest, sizeof(out->digest), "%s", PQgetvalue(res, row, 4));
	}
}

bool
cursor_positions(struct db *db, int64_t run_id, const char *service_sid,
		 const char *const *users, size_t n, struct cursor_position *out)
{
	static const char sql[] = "SELECT " POSITION_COLUMNS " "
				  "FROM unnest($2::text[]) WITH ORDINALITY AS u(user_sid, ord) "
				  "LEFT JOIN sync_cursors c "
				  "ON c.service_sid = $1 AND c.user_sid = u.user_sid ORDER BY u.ord";
	const char *params[2];
	struct buf list;
	PGresult *res;
	bool ok = true;

	buf_init(&list, (size_t)1 << 30);
	ok = buf_append(&list, "{", 1);
	for (size_t i = 0; ok && i < n; i++)
		ok = db_array_add_text(&list, users[i]);
	ok = ok && buf_append(&list, "}", 1);
	if (!ok) {
		buf_free(&list);
		log_error("reading cursors: the list of users is too long");
		return false;
	}
	params[0] = service_sid;
	params[1] = buf_str(&list);
	res = db_exec_prepared(db, "cursor_positions", sql, 2, params);
	buf_free(&list);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK, "reading cursors") &&
	     (size_t)PQntuples(res) == n;
	for (size_t i = 0; ok && i < n; i++)
		read_position(res, (int)i, run_id, &out[i]);
	PQclear(res);
	return ok;
}

bool
cursor_fail(struct db *db, int64_t run_id, const char *service_sid, const char *user,
	    const char *error, unsigned requests, unsigned retries)
{
	static const char sql[] = "SELECT sync_user_failed($1::bigint, $2, $3, $4, $5::integer, "
				  "$6::integer)";
	char run[24], req[16], ret[16];
	const char *params[6] = {run, service_sid, user, error, req, ret};
	PGresult *res;
	bool ok;

	snprintf(run, sizeof(run), "%" PRId64, run_id);
	snprintf(req, sizeof(req), "%u", requests);
	snprintf(ret, sizeof(ret), "%u", retries);
	res = db_exec_prepared(db, "cursor_fail", sql, 6, params);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK, "recording a user's failure");
	PQclear(res);
	return ok;
}

bool
cursor_note_error(struct db *db, int64_t run_id, const char *service_sid, const char *user,
		  const char *error)
{
	static const char sql[] =
		"INSERT INTO sync_cursors AS c (service_sid, user_sid, run_id, state, last_error, "
		"last_error_at) VALUES ($1, $2, $4::bigint, 'running', $3, now()) "
		"ON CONFLICT (service_sid, user_sid) DO UPDATE SET last_error = EXCLUDED.last_error, "
		"last_error_at = EXCLUDED.last_error_at, updated_at = now()";
	char run[24];
	const char *params[4] = {service_sid, user, error, run};
	PGresult *res;
	bool ok;

	snprintf(run, sizeof(run), "%" PRId64, run_id);
	res = db_exec_prepared(db, "cursor_note_error", sql, 4, params);
	ok = db_result_ok(db, res, PGRES_COMMAND_OK, "recording an error");
	PQclear(res);
	return ok;
}

bool
cursor_finish_run(struct db *db, int64_t run_id, unsigned requests, unsigned retries,
		  struct run_totals *out)
{
	static const char sql[] =
		"UPDATE sync_runs SET finished_at = now(), "
		"http_requests = http_requests + $2::integer, "
		"http_retries = http_retries + $3::integer WHERE run_id = $1::bigint "
		"RETURNING users_ok, users_failed, pages, rows_received, rows_inserted, "
		"rows_updated, rows_unchanged, rows_deleted, rows_rejected, http_requests, "
		"http_retries";
	long *fields[] = {&out->users_ok, &out->users_failed, &out->pages,     &out->received,
			  &out->inserted, &out->updated,      &out->unchanged, &out->deleted,
			  &out->rejected, &out->requests,     &out->retries};
	char run[24], req[16], ret[16];
	const char *params[3] = {run, req, ret};
	PGresult *res;
	bool ok;

	snprintf(run, sizeof(run), "%" PRId64, run_id);
	snprintf(req, sizeof(req), "%u", requests);
	snprintf(ret, sizeof(ret), "%u", retries);
	res = PQexecParams(db_conn(db), sql, 3, NULL, params, NULL, NULL, 0);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK, "finishing a sweep") && PQntuples(res) == 1;
	for (size_t i = 0; ok && i < sizeof(fields) / sizeof(fields[0]); i++)
		*fields[i] = strtol(PQgetvalue(res, 0, (int)i), NULL, 10);
	PQclear(res);
	return ok;
}
