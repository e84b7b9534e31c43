/*
 * cursor.c - sweeps (sync_runs) and where each user's listing stands (sync_cursors)
 */
#include "config.h"

#include "cursor.h"

#include "db.h"
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

static void
read_position(const PGresult *res, int64_t run_id, struct cursor_position *out)
{
	int64_t row_run = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	const char *state = PQgetvalue(res, 0, 1);
	bool has_next = !PQgetisnull(res, 0, 2);

	out->pages_done = (unsigned)strtoul(PQgetvalue(res, 0, 3), NULL, 10);
	if (row_run == run_id && strcmp(state, "running") != 0)
		out->start = CURSOR_SKIP;
	else if (has_next)
		out->start = CURSOR_RESUME;
	if (out->start == CURSOR_RESUME)
		out->next_url = xstrdup(PQgetvalue(res, 0, 2));
	if (out->start == CURSOR_FIRST_PAGE) {
		out->pages_done = 0;
		if (!PQgetisnull(res, 0, 4))
			snprintf(out->digest, sizeof(out->digest), "%s", PQgetvalue(res, 0, 4));
	}
}

bool
cursor_position(struct db *db, int64_t run_id, const char *service_sid, const char *user,
		struct cursor_position *out)
{
	static const char sql[] =
		"SELECT run_id, state, next_page_url, pages_done, "
		"CASE WHEN listing_rows IS NOT NULL THEN listing_digest END "
		"FROM sync_cursors WHERE service_sid = $1 AND user_sid = $2";
	const char *params[2] = {service_sid, user};
	PGresult *res;
	bool ok;

	memset(out, 0, sizeof(*out));
	out->start = CURSOR_FIRST_PAGE;
	res = db_exec_prepared(db, "cursor_position", sql, 2, params);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK, "reading a cursor");
	if (ok && PQntuples(res) == 1)
		read_position(res, run_id, out);
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
