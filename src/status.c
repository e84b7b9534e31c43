/*
 * status.c - chatsyncd --status: how fresh each configured user is
 */
#include "config.h"

#include "status.h"

#include "cursor.h"
#include "db.h"
#include "log.h"
#include "mem.h"
#include "settings.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char users_sql[] =
	"SELECT u.service_sid, u.user_sid, "
	"       coalesce(to_char(c.last_complete_at, 'YYYY-MM-DD HH24:MI:SSOF'), 'never'), "
	"       coalesce(extract(epoch FROM now() - c.last_complete_at)::bigint, -1), "
	"       coalesce(c.state, '-'), "
	"       CASE WHEN c.next_page_url IS NOT NULL THEN (c.pages_done + 1)::text ELSE '-' END, "
	"       coalesce(c.last_error, '') "
	"  FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(service_sid, user_sid, ord) "
	"  LEFT JOIN sync_cursors c USING (service_sid, user_sid) "
	" ORDER BY u.ord";

static const char runs_sql[] =
	"SELECT run_id, to_char(started_at, 'YYYY-MM-DD HH24:MI:SSOF'), "
	"       coalesce(round(extract(epoch FROM finished_at - started_at)::numeric, 1)::text, "
	"                'unfinished'), "
	"       users_ok, users_failed, pages, rows_inserted, rows_updated, rows_deleted, "
	"       rows_rejected, http_requests "
	"  FROM sync_runs ORDER BY run_id DESC LIMIT 5";

static void
age_text(long long secs, char *out, size_t outsz)
{
	if (secs < 0)
		snprintf(out, outsz, "-");
	else if (secs < 120)
		snprintf(out, outsz, "%llds", secs);
	else if (secs < 7200)
		snprintf(out, outsz, "%lldm", secs / 60);
	else if (secs < 172800)
		snprintf(out, outsz, "%lldh", secs / 3600);
	else
		snprintf(out, outsz, "%lldd", secs / 86400);
}

/* Prints the users' lines; returns how many are stale, or -1 on error. */
static int
print_users(struct db *db, const struct settings *s, FILE *out)
{
	struct buf services, users;
	const char *params[2];
	PGresult *res;
	int stale = 0;

	if (!cursor_user_arrays(s->services, s->n_services, &services, &users)) {
		buf_free(&services);
		buf_free(&users);
		log_error("could not read the cursors: the list of users is too long");
		return -1;
	}
	params[0] = buf_str(&services);
	params[1] = buf_str(&users);
	res = PQexecParams(db_conn(db), users_sql, 2, NULL, params, NULL, NULL, 0);
	buf_free(&services);
	buf_free(&users);
	if (!db_result_ok(db, res, PGRES_TUPLES_OK)) {
		log_error("could not read the cursors: %s", db_error(db));
		PQclear(res);
		return -1;
	}
	fprintf(out, "%-34s  %-24s  %-22s  %6s  %-8s  %5s  %s\n", "SERVICE", "USER",
		"LAST COMPLETE", "AGE", "STATE", "PAGE", "LAST ERROR");
	for (int r = 0; r < PQntuples(res); r++) {
		long long age = strtoll(PQgetvalue(res, r, 3), NULL, 10);
		char esc[200], age_s[32];

		age_text(age, age_s, sizeof(age_s));
		if (age < 0 || age > 2LL * s->interval)
			stale++;
		fprintf(out, "%-34s  %-24s  %-22s  %6s  %-8s  %5s  %s\n", PQgetvalue(res, r, 0),
			log_escape(esc, sizeof(esc), PQgetvalue(res, r, 1)), PQgetvalue(res, r, 2),
			age_s, PQgetvalue(res, r, 4), PQgetvalue(res, r, 5), PQgetvalue(res, r, 6));
	}
	PQclear(res);
	return stale;
}

static bool
print_runs(struct db *db, FILE *out)
{
	PGresult *res = PQexec(db_conn(db), runs_sql);

	if (!db_result_ok(db, res, PGRES_TUPLES_OK)) {
		log_error("could not read sync_runs: %s", db_error(db));
		PQclear(res);
		return false;
	}
	fprintf(out, "\nRecent sweeps:\n%6s  %-22s  %10s  %6s  %6s  %7s  %9s  %9s  %9s  %8s  %8s\n",
		"RUN", "STARTED", "SECONDS", "OK", "FAILED", "PAGES", "INSERTED", "UPDATED",
		"DELETED", "REJECTED", "REQUESTS");
	for (int r = 0; r < PQntuples(res); r++)
		fprintf(out, "%6s  %-22s  %10s  %6s  %6s  %7s  %9s  %9s  %9s  %8s  %8s\n",
			PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), PQgetvalue(res, r, 2),
			PQgetvalue(res, r, 3), PQgetvalue(res, r, 4), PQgetvalue(res, r, 5),
			PQgetvalue(res, r, 6), PQgetvalue(res, r, 7), PQgetvalue(res, r, 8),
			PQgetvalue(res, r, 9), PQgetvalue(res, r, 10));
	PQclear(res);
	return true;
}

int
status_print(struct db *db, const struct settings *s, FILE *out)
{
	int stale = print_users(db, s, out);

	if (stale < 0 || !print_runs(db, out))
		return 2;
	if (stale > 0)
		fprintf(out, "\n%d of %zu users have no complete listing in the last %d s\n", stale,
			settings_user_count(s), 2 * s->interval);
	return stale > 0 ? 1 : 0;
}
