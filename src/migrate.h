/*
 * migrate.h - schema migrations
 */
#ifndef CHATSYNC_MIGRATE_H
#define CHATSYNC_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>

struct db;

struct migration {
	int version;
	const char *name;
	const char *sql;
};

struct schema_script {
	const char *name;
	const char *sql;
};

/* Built from the files sql/NNN_name.sql (see build-aux/embed-sql.sh), in version order. */
extern const struct migration migrations[];
extern const size_t n_migrations;

/*
 * Built from the files sql/functions/name.sql, in the order Makefile.am
 * lists them: each function and view, written with CREATE OR REPLACE.
 */
extern const struct schema_script function_scripts[];
extern const size_t n_function_scripts;

/*
 * Creates the schema if needed, applies every pending migration, in order,
 * recording each in schema_migrations, then applies every function script,
 * all in one transaction under an advisory lock.  A view that is new (or
 * created again) is granted SELECT to whoever could read the relation of that
 * name before.  A schema newer than these migrations is refused.  Returns
 * false on failure (nothing applied), with the reason in db_error(db).
 * *applied, if not NULL, receives the number of migrations applied.
 * hooks may be NULL, and so may each of its members.
 */
struct migrate_hooks {
	/*
	 * Every second while another process holds the lock (first: the first
	 * time); false ends the wait.
	 */
	bool (*waiting)(void *arg, bool first);
	void (*locked)(void *arg); /* once the lock is held, before anything is applied */
	void (*tick)(void *arg);   /* about every second while a script runs */
	void *arg;
};

/* A wait that waiting() ended returns false with an empty reason. */
bool migrate_apply(struct db *db, int *applied, const struct migrate_hooks *hooks)
	__attribute__((warn_unused_result));

#endif
