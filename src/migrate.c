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

/* Serialises migrations of one schema between processes. */
static bool
lock_and_prepare(struct db *db)
{
	static const char lock_sql[] =
		"SELECT pg_advisory_xact_lock(hashtext('chatsync.migrate.' || "
		"current_setting('search_path')))";
	PGresult *res;
	char *sql;
	bool ok;

	if (!db_exec(db, "BEGIN"))
		return false;
	res = PQexec(db_conn(db), lock_sql);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK);
	PQclear(res);
	if (!ok)
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
	PGresult *res = PQexec(db_conn(db), "SELECT coalesce(max(version), 0) FROM schema_migrations");
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

static bool
apply_one(struct db *db, const struct migration *m, const struct ticker *t)
{
	const char *params[2];
	char version[16], what[512];
	PGresult *res;
	bool ok;

	ok = db_exec_ticking(db, m->sql, t->tick, t->arg);
	if (!ok) {
		snprintf(what, sizeof(what), "%s", db_error(db));
		db_set_error(db, "migration %s: %s", m->name, what);
		return false;
	}
	snprintf(version, sizeof(version), "%d", m->version);
	params[0] = version;
	params[1] = m->name;
	res = PQexecParams(db_conn(db), "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
			   2, NULL, params, NULL, NULL, 0);
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
		db_set_error(db, "database schema is at version %d, newer than this chatsyncd knows (%d)",
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

bool
migrate_apply(struct db *db, int *applied, void (*tick)(void *arg), void *arg)
{
	const struct ticker t = {tick, arg};
	int count = 0;
	bool ok;

	ok = lock_and_prepare(db) && apply_pending(db, &count, &t) && db_exec(db, "COMMIT");
	if (!ok && db_connected(db)) {
		char why[512];

		/* The reason is the failure's, not the rollback's; a failed rollback ends the session anyway. */
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
