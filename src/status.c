/*
 * status.c - chatsyncd --status: how fresh each configured or discovered user is
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

/*
 * The users as configured ($1, $2), then those of the services with
 * users = "all" ($3) that their users listing holds.  An identity the users
 * listing knows has its cursor under its User SID (the rule of
 * sync_resolve_users()); one still under the identity is used until then.
 */
static const char users_sql[] =
	"WITH listed AS ("
	"  SELECT u.service_sid, u.user_sid, u.ord "
	"    FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(service_sid, user_sid, ord) "
	"  UNION ALL "
	"  SELECT d.service_sid, d.user_sid, "
	"         cardinality($1::text[]) + row_number() OVER (ORDER BY d.service_sid, d.user_sid) "
	"    FROM users d WHERE d.service_sid = ANY ($3::text[]) AND d.deleted_at IS NULL"
	") "
	"SELECT u.service_sid, u.user_sid, "
	"       coalesce(to_char(c.last_complete_at, 'YYYY-MM-DD HH24:MI:SSOF'), 'never'), "
	"       coalesce(extract(epoch FROM now() - c.last_complete_at)::bigint, -1), "
	"       coalesce(c.state, '-'), "
	"       CASE WHEN c.next_page_url IS NOT NULL THEN (c.pages_done + 1)::text ELSE '-' END, "
	"       coalesce(c.last_error, '') "
	"  FROM listed u "
	"  LEFT JOIN LATERAL ("
	"       SELECT r.user_sid FROM users r "
	"        WHERE r.service_sid = u.service_sid AND r.identity = u.user_sid "
	"          AND u.user_sid !~ '^US[0-9a-fA-F]{32}$' "
	"        ORDER BY r.deleted_at IS NULL DESC, r.updated_at DESC, r.user_sid DESC LIMIT 1"
	"  ) k ON true "
	"  LEFT JOIN LATERAL ("
	"       SELECT * FROM sync_cursors c "
	"        WHERE c.service_sid = u.service_sid AND c.user_sid IN (k.user_sid, u.user_sid) "
	"        ORDER BY c.user_sid = k.user_sid DESC LIMIT 1"
	"  ) c ON true "
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
	struct buf services, users, discovering;
	const char *params[3];
	PGresult *res;
	bool ok;
	int stale = 0;

	buf_init(&discovering, (size_t)1 << 20);
	ok = buf_append(&discovering, "{", 1);
	for (size_t i = 0; ok && i < s->n_services; i++) {
		if (s->services[i].all_users && s->services[i].sid != NULL)
			ok = db_array_add_text(&discovering, s->services[i].sid);
	}
	ok = ok && buf_append(&discovering, "}", 1);
	/* cursor_user_arrays initialises both buffers, whatever it returns. */
	ok = cursor_user_arrays(s->services, s->n_services, &services, &users) && ok;
	if (!ok) {
		buf_free(&discovering);
		buf_free(&services);
		buf_free(&users);
		log_error("could not read the cursors: the list of users is too long");
		return -1;
	}
	params[0] = buf_str(&services);
	params[1] = buf_str(&users);
	params[2] = buf_str(&discovering);
	res = PQexecParams(db_conn(db), users_sql, 3, NULL, params, NULL, NULL, 0);
	buf_free(&services);
	buf_free(&users);
	buf_free(&discovering);
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

/*
 * The instances heard of in the last day, newest first: live (heard of
 * within their lease), stopped or gone silent, with the sweep each works
 * on and the leases each holds.
 */
static const char instances_sql[] =
	"SELECT i.instance_id, i.name, i.hostname, i.pid, "
	"       to_char(i.started_at, 'YYYY-MM-DD HH24:MI:SSOF'), "
	"       extract(epoch FROM now() - i.heartbeat_at)::bigint || 's', "
	"       CASE WHEN i.stopped_at IS NOT NULL THEN 'stopped' "
	"            WHEN i.expires_at > now() THEN 'live' ELSE 'silent' END, "
	"       coalesce(i.run_id::text, '-'), "
	"       (SELECT count(*) FROM sync_cursors c "
	"         WHERE c.lease_instance = i.instance_id AND c.lease_expires_at > now()) "
	"  FROM sync_instances i "
	" WHERE i.heartbeat_at > now() - interval '1 day' "
	" ORDER BY i.instance_id DESC";

static bool
print_instances(struct db *db, FILE *out)
{
	PGresult *res = PQexec(db_conn(db), "SELECT to_regclass('sync_instances') IS NOT NULL");
	bool present =
		db_result_ok(db, res, PGRES_TUPLES_OK) && strcmp(PQgetvalue(res, 0, 0), "t") == 0;

	PQclear(res);
	if (!present)
		return true; /* a schema not migrated yet: no instance to show */
	res = PQexec(db_conn(db), instances_sql);
	if (!db_result_ok(db, res, PGRES_TUPLES_OK)) {
		log_error("could not read sync_instances: %s", db_error(db));
		PQclear(res);
		return false;
	}
	fprintf(out,
		"\nInstances heard of in the last day:\n%6s  %-32s  %-20s  %7s  %-22s  %9s  "
		"%-7s  %6s  %6s\n",
		"ID", "NAME", "HOST", "PID", "STARTED", "HEARD", "STATE", "SWEEP", "LEASES");
	for (int r = 0; r < PQntuples(res); r++)
		fprintf(out, "%6s  %-32s  %-20s  %7s  %-22s  %9s  %-7s  %6s  %6s\n",
			PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), PQgetvalue(res, r, 2),
			PQgetvalue(res, r, 3), PQgetvalue(res, r, 4), PQgetvalue(res, r, 5),
			PQgetvalue(res, r, 6), PQgetvalue(res, r, 7), PQgetvalue(res, r, 8));
	PQclear(res);
	return true;
}

int
status_print(struct db *db, const struct settings *s, FILE *out)
{
	int stale = print_users(db, s, out);

	if (stale < 0 || !print_runs(db, out) || !print_instances(db, out))
		return 2;
	if (stale > 0)
		fprintf(out, "\n%d users have no complete listing in the last %d s\n", stale,
			2 * s->interval);
	for (size_t i = 0; i < s->n_services; i++) {
		if (s->services[i].sid != NULL)
			continue;
		fprintf(out, "\nThe account's default conversation service is asked of the API "
			     "at each sweep:\nits users are not shown here (see the view "
			     "sync_health)\n");
	}
	return stale > 0 ? 1 : 0;
}
