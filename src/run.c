/*
 * run.c - sweeps as the database records them (sync_runs)
 */
#include "config.h"

#include "run.h"

#include "cursor.h"
#include "db.h"
#include "mem.h"
#include "settings.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool
run_join(struct db *db, int64_t instance_id, int interval, bool force, int64_t *run_id,
	 bool *resumed, double *wait_seconds)
{
	static const char sql[] = "SELECT run_id, resumed, wait_seconds "
				  "FROM sync_run_join($1::bigint, $2::integer, $3::boolean)";
	char id[24], secs[16];
	const char *params[3] = {id, secs, force ? "t" : "f"};
	PGresult *res;
	bool ok;

	snprintf(id, sizeof(id), "%" PRId64, instance_id);
	snprintf(secs, sizeof(secs), "%d", interval);
	res = db_exec_prepared(db, "sync_run_join", sql, 3, params);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK);
	if (ok && PQntuples(res) != 1) {
		db_set_error(db, "sync_run_join() returned %d rows, not one", PQntuples(res));
		ok = false;
	}
	if (ok) {
		*run_id = PQgetisnull(res, 0, 0) ? 0 : strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		*resumed = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
		*wait_seconds = strtod(PQgetvalue(res, 0, 2), NULL);
	}
	PQclear(res);
	return ok;
}

bool
run_finish(struct db *db, int64_t run_id, unsigned requests, unsigned retries,
	   struct run_totals *out)
{
	static const char sql[] =
		"SELECT users_ok, users_failed, pages, rows_received, rows_inserted, rows_updated, "
		"rows_unchanged, rows_deleted, rows_rejected, http_requests, http_retries "
		"FROM sync_run_finish($1::bigint, $2::integer, $3::integer)";
	long *fields[] = {&out->users_ok, &out->users_failed, &out->pages,     &out->received,
			  &out->inserted, &out->updated,      &out->unchanged, &out->deleted,
			  &out->rejected, &out->requests,     &out->retries};
	const int n_fields = (int)(sizeof(fields) / sizeof(fields[0]));
	char run[24], req[16], ret[16];
	const char *params[3] = {run, req, ret};
	PGresult *res;
	bool ok;

	snprintf(run, sizeof(run), "%" PRId64, run_id);
	snprintf(req, sizeof(req), "%u", requests);
	snprintf(ret, sizeof(ret), "%u", retries);
	res = PQexecParams(db_conn(db), sql, 3, NULL, params, NULL, NULL, 0);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK);
	if (ok && (PQntuples(res) != 1 || PQnfields(res) != n_fields)) {
		db_set_error(db, "sweep %" PRId64 " is not in sync_runs", run_id);
		ok = false;
	}
	for (int i = 0; ok && i < n_fields; i++)
		*fields[i] = strtol(PQgetvalue(res, 0, i), NULL, 10);
	PQclear(res);
	return ok;
}

bool
run_record_config(struct db *db, int interval_seconds, const struct settings_service *services,
		  size_t n_services)
{
	static const char sql[] = "SELECT sync_record_config($1::integer, $2::text[], $3::text[])";
	struct buf services_list, users;
	char interval[16];
	const char *params[3] = {interval, NULL, NULL};
	PGresult *res;
	bool ok;

	ok = cursor_user_arrays(services, n_services, &services_list, &users);
	if (!ok) {
		db_set_error(db, "the list of users is too long to record");
	} else {
		snprintf(interval, sizeof(interval), "%d", interval_seconds);
		params[1] = buf_str(&services_list);
		params[2] = buf_str(&users);
		res = PQexecParams(db_conn(db), sql, 3, NULL, params, NULL, NULL, 0);
		ok = db_result_ok(db, res, PGRES_TUPLES_OK);
		PQclear(res);
	}
	buf_free(&services_list);
	buf_free(&users);
	return ok;
}

bool
run_prune(struct db *db, int days, int batch, bool (*go_on)(void *arg), void *arg, long *deleted)
{
	static const char sql[] = "SELECT sync_prune($1::integer, $2::integer)";
	char d[16], b[16];
	const char *params[2] = {d, b};
	long n = 1;

	snprintf(d, sizeof(d), "%d", days);
	snprintf(b, sizeof(b), "%d", batch);
	*deleted = 0;
	while (n > 0 && go_on(arg)) {
		PGresult *res = PQexecParams(db_conn(db), sql, 2, NULL, params, NULL, NULL, 0);

		if (!db_result_ok(db, res, PGRES_TUPLES_OK)) {
			PQclear(res);
			return false;
		}
		n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
		*deleted += n;
		PQclear(res);
	}
	return true;
}

bool
run_is_finished(struct db *db, int64_t run_id, bool *finished)
{
	static const char sql[] =
		"SELECT finished_at IS NOT NULL FROM sync_runs WHERE run_id = $1::bigint";
	char run[24];
	const char *params[1] = {run};
	PGresult *res;
	bool ok;

	snprintf(run, sizeof(run), "%" PRId64, run_id);
	res = PQexecParams(db_conn(db), sql, 1, NULL, params, NULL, NULL, 0);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK);
	if (ok)
		*finished = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return ok;
}
