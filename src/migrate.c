/*
 * migrate.c - schema migrations
 */
#include "config.h"

#include "migrate.h"

#include "db.h"
#include "log.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* 1: the migrations' lock is taken, 0: another session holds it, -1: failed. */
static int
try_lock(struct db *db)
{
	static const char lock_sql[] =
		"SELECT pg_try_advisory_xact_lock(hashtext('chatsync.migrate.' || "
		"current_setting('search_path')))";
	PGresult *res = PQexec(db_conn(db), lock_sql);
	int got = -1;

	if (db_result_ok(db, res, PGRES_TUPLES_OK))
		got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return got;
}

/* How often a process waiting for the migrations' lock tries it again. */
#define LOCK_RETRY_MS 100

/*
 * Serialises migrations of one schema between processes: while another
 * holds the lock, it is tried again every LOCK_RETRY_MS, and
 * waiting(arg, first) is called at once, then every second and after a
 * signal, until it returns false (a stop: the reason is then empty).
 */
static bool
lock_and_prepare(struct db *db, bool (*waiting)(void *arg, bool first), void *arg)
{
	char *sql;
	bool ok, interrupted = false;
	int got;

	if (!db_exec(db, "BEGIN"))
		return false;
	for (unsigned tries = 0; (got = try_lock(db)) == 0; tries++) {
		struct timespec pause = {0, LOCK_RETRY_MS * 1000000L};

		/* A signal (a stop?) that cut the last pause short is asked about at once. */
		if ((tries % (1000 / LOCK_RETRY_MS) == 0 || interrupted) && waiting != NULL &&
		    !waiting(arg, tries == 0)) {
			db_set_error(db, "%s", "");
			return false;
		}
		interrupted = nanosleep(&pause, NULL) != 0;
	}
	if (got < 0)
		return false;
	sql = xasprintf("CREATE SCHEMA IF NOT EXISTS %s", db_schema_ident(db));
	ok = db_exec(db, sql);
	free(sql);
	return ok && db_exec(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
				 " version integer PRIMARY KEY,"
				 " name text NOT NULL,"
				 " applied_at timestamptz NOT NULL DEFAULT now())");
}

static int
current_version(struct db *db)
{
	PGresult *res =
		PQexec(db_conn(db), "SELECT coalesce(max(version), 0) FROM schema_migrations");
	int v = -1;

	if (db_result_ok(db, res, PGRES_TUPLES_OK))
		v = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return v;
}

struct ticker {
	void (*tick)(void *arg);
	void *arg;
};

/*
 * Runs the statements of one file (one that holds only comments does
 * nothing), ticking while it runs; a failure's reason names what.
 */
static bool
exec_script(struct db *db, const char *sql, const char *what, const struct ticker *t)
{
	char why[512];

	if (db_exec_ticking(db, sql, t->tick, t->arg))
		return true;
	snprintf(why, sizeof(why), "%s", db_error(db));
	db_set_error(db, "%s: %s", what, why);
	return false;
}

static bool
apply_one(struct db *db, const struct migration *m, const struct ticker *t)
{
	const char *params[2];
	char version[16], what[128];
	PGresult *res;
	bool ok;

	snprintf(what, sizeof(what), "migration %s", m->name);
	if (!exec_script(db, m->sql, what, t))
		return false;
	snprintf(version, sizeof(version), "%d", m->version);
	params[0] = version;
	params[1] = m->name;
	res = PQexecParams(db_conn(db),
			   "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, NULL,
			   params, NULL, NULL, 0);
	ok = db_result_ok(db, res, PGRES_COMMAND_OK);
	PQclear(res);
	if (ok)
		log_info("applied migration %s", m->name);
	return ok;
}

static bool
apply_pending(struct db *db, int *applied, const struct ticker *t)
{
	int have = current_version(db);
	int newest = n_migrations ? migrations[n_migrations - 1].version : 0;

	if (have < 0)
		return false;
	if (have > newest) {
		db_set_error(
			db,
			"database schema is at version %d, newer than this chatsyncd knows (%d)",
			have, newest);
		return false;
	}
	for (size_t i = 0; i < n_migrations; i++) {
		if (migrations[i].version <= have)
			continue;
		if (!apply_one(db, &migrations[i], t))
			return false;
		(*applied)++;
	}
	return true;
}

/* Every function and view, as this chatsyncd writes them, after the migrations. */
static bool
apply_functions(struct db *db, const struct ticker *t)
{
	char what[128];

	for (size_t i = 0; i < n_function_scripts; i++) {
		snprintf(what, sizeof(what), "applying sql/%s", function_scripts[i].name);
		if (!exec_script(db, function_scripts[i].sql, what, t))
			return false;
	}
	return true;
}

/*
 * State that the sweeps keep (migration 009) and that a database migrated
 * from an earlier version must first have rebuilt from the history it holds:
 * once, in the migrations' transaction, so that the analyst views answer
 * from the start.
 */
static bool
rebuild_kept_state(struct db *db, const struct ticker *t)
{
	static const char sql[] =
		"DO $rebuild$ BEGIN\n"
		"    PERFORM sync_rebuild_kept_state() FROM sync_kept_state WHERE NOT rebuilt;\n"
		"END $rebuild$";

	return exec_script(db, sql, "rebuilding the kept state from the history", t);
}

/*
 * A migration that changes what a view reads drops the view, and
 * 004_current_versions turned the table user_channel_history into a view of
 * that name: the function scripts create such a view anew, without the grants
 * it had.  save_readers() notes, for the rest of the transaction, who may
 * SELECT from each relation of the schema before the migrations;
 * restore_readers() grants SELECT on each view that is not the relation it
 * was then to the same roles.
 */
static bool
save_readers(struct db *db)
{
	static const char sql[] =
		"SELECT set_config('chatsync.migrate_readers',"
		"                  coalesce(json_agg(r)::text, '[]'), true)"
		"  FROM (SELECT DISTINCT c.oid AS relid, c.relname, a.grantee"
		"          FROM pg_class c, aclexplode(c.relacl) a"
		"         WHERE c.relnamespace = (SELECT oid FROM pg_namespace"
		"                                  WHERE nspname = current_schema())"
		"           AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner) r";
	PGresult *res = PQexec(db_conn(db), sql);
	bool ok = db_result_ok(db, res, PGRES_TUPLES_OK);

	PQclear(res);
	return ok;
}

static bool
restore_readers(struct db *db)
{
	static const char sql[] =
		"DO $keep$\n"
		"DECLARE\n"
		"    r record;\n"
		"BEGIN\n"
		"    FOR r IN SELECT DISTINCT v.oid::regclass AS rel, s.grantee\n"
		"               FROM json_to_recordset(\n"
		"                        current_setting('chatsync.migrate_readers')::json)\n"
		"                    AS s(relid oid, relname name, grantee oid)\n"
		"               JOIN pg_class v ON v.relname = s.relname AND v.relkind = 'v'\n"
		"                AND v.relnamespace = (SELECT oid FROM pg_namespace\n"
		"                                       WHERE nspname = current_schema())\n"
		"              WHERE v.oid <> s.relid\n"
		"    LOOP\n"
		"        EXECUTE format('GRANT SELECT ON %s TO %s', r.rel,\n"
		"                       CASE WHEN r.grantee = 0 THEN 'PUBLIC'\n"
		"                            ELSE r.grantee::regrole::text END);\n"
		"    END LOOP;\n"
		"END\n"
		"$keep$";

	static const struct ticker none = {NULL, NULL};

	return exec_script(db, sql, "granting SELECT on the views again", &none);
}

bool
migrate_apply(struct db *db, int *applied, const struct migrate_hooks *hooks)
{
	static const struct migrate_hooks none;
	const struct migrate_hooks *h = hooks != NULL ? hooks : &none;
	const struct ticker t = {h->tick, h->arg};
	int count = 0;
	bool ok;

	ok = lock_and_prepare(db, h->waiting, h->arg) &&
	     (h->locked == NULL || (h->locked(h->arg), true)) && save_readers(db) &&
	     apply_pending(db, &count, &t) && apply_functions(db, &t) &&
	     rebuild_kept_state(db, &t) && restore_readers(db) && db_exec(db, "COMMIT");
	if (!ok && db_connected(db)) {
		char why[512];

		/* The reason is the failure's; a failed rollback ends the session anyway. */
		snprintf(why, sizeof(why), "%s", db_error(db));
		if (!db_exec(db, "ROLLBACK"))
			db_set_error(db, "%s (and the rollback failed)", why);
		else
			db_set_error(db, "%s", why);
	}
	if (applied != NULL)
		*applied = ok ? count : 0;
	return ok;
}
