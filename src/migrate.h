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

/* Built from the files sql/NNN_name.sql (see build-aux/embed-sql.sh), in version order. */
extern const struct migration migrations[];
extern const size_t n_migrations;

/*
 * Creates the schema if needed and applies every pending migration, in
 * order, in one transaction under an advisory lock, recording each in
 * schema_migrations.  Returns false on failure (nothing applied), with the
 * reason in db_error(db).
 * *applied, if not NULL, receives the number applied.  tick(arg), if not
 * NULL, is called about every second while a migration runs.
 */
bool migrate_apply(struct db *db, int *applied, void (*tick)(void *arg), void *arg)
	__attribute__((warn_unused_result));

#endif
