/*
 * db.h - the PostgreSQL connection
 */
#ifndef CHATSYNC_DB_H
#define CHATSYNC_DB_H

#include <libpq-fe.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct db;
struct buf;

/*
 * Every fallible function returns false (or NULL) and leaves the reason in
 * db_error(); the caller, who knows what it was doing, logs it once.
 */

/*
 * Connects with conninfo (empty: libpq's PG* environment) and sets
 * search_path to schema.  Returns a connection the caller owns, or NULL
 * with the reason in err.
 */
struct db *db_open(const char *conninfo, const char *schema, char *err, size_t errsz)
	__attribute__((warn_unused_result));
void db_close(struct db *db);

/* The libpq connection (borrowed). */
PGconn *db_conn(struct db *db);

/* The schema, already quoted as an SQL identifier (borrowed). */
const char *db_schema_ident(const struct db *db);

/*
 * Why the last call on db failed: the first line of the server's or
 * libpq's message, without its "ERROR:" (borrowed until the next call).
 */
const char *db_error(const struct db *db);

/* Records a reason of the caller's, for a result that is not what it expected. */
void db_set_error(struct db *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs a command that returns no rows. */
bool db_exec(struct db *db, const char *sql) __attribute__((warn_unused_result));

/*
 * Runs a script of commands that return no rows (a migration, say; one of
 * comments only does nothing), calling
 * tick(arg) about every second until it ends, so that a long one keeps the
 * service manager informed.  tick may be NULL.
 */
bool db_exec_ticking(struct db *db, const char *sql, void (*tick)(void *arg), void *arg)
	__attribute__((warn_unused_result));

/* True if res is a successful result of the expected kind; otherwise records why. */
bool db_result_ok(struct db *db, const PGresult *res, ExecStatusType want)
	__attribute__((warn_unused_result));

/*
 * Runs sql with params as a statement prepared once per connection under
 * name (statements are prepared again after a reconnect).  The result is
 * the caller's to PQclear; NULL only if preparing failed.
 */
PGresult *db_exec_prepared(struct db *db, const char *name, const char *sql, int nparams,
			   const char *const *params) __attribute__((warn_unused_result));

/*
 * Appends s (NULL: a NULL element) to b as the next element of a text array
 * literal that b holds open ("{" and the elements so far); false if b is full.
 */
bool db_array_add_text(struct buf *b, const char *s) __attribute__((warn_unused_result));

/*
 * Reads a one-dimensional array as PostgreSQL writes it in text ("{a,"b c",NULL}")
 * into *items, a new array of *n strings (NULL for a NULL element) that the caller
 * frees with db_array_free().  False, with nothing allocated, if lit is not such a literal.
 */
bool db_array_parse(const char *lit, char ***items, size_t *n) __attribute__((warn_unused_result));
void db_array_free(char **items, size_t n);

/*
 * Asynchronous use, for the writer connections and the claims of the
 * control connection: sends a prepared statement (it is prepared first,
 * synchronously, the first time on each connection) and returns at once.
 * One statement at a time; another statement run on the connection
 * meanwhile first waits for its result, which db_collect() then returns.
 */
bool db_send_prepared(struct db *db, const char *name, const char *sql, int nparams,
		      const char *const *params) __attribute__((warn_unused_result));

/* True while the result of a statement sent with db_send_prepared has not been collected. */
bool db_busy(const struct db *db);

/* The socket to wait on while busy (for poll). */
int db_socket(const struct db *db);

/*
 * Collects the result of the statement in flight if it has arrived, without
 * waiting (wait = false) or waiting for it (wait = true).  Returns false
 * while it has not arrived.  *res is then the caller's to PQclear; NULL if
 * the connection failed.
 */
bool db_collect(struct db *db, bool wait, PGresult **res);

/* Asks the server to cancel the statement db is running (its result then reports the cancel). */
bool db_cancel(struct db *db) __attribute__((warn_unused_result));

/* True while the connection is usable, as far as libpq knows. */
bool db_connected(struct db *db);

/*
 * After a statement failed: true if the connection still answers (so the
 * failure was the statement's own), false if it is lost.  Costs a round
 * trip, so call it only on failure.  db_error() keeps the first failure's
 * reason.
 */
bool db_alive(struct db *db);

/*
 * Reopens a lost connection with the same parameters; the new session works
 * for the same instance.
 */
bool db_reconnect(struct db *db) __attribute__((warn_unused_result));

/*
 * The session works for instance instance_id (see sql/012_leases.sql), named
 * name: it carries the id in the setting chatsync.instance, and
 * "chatsyncd/NAME" as application_name; so does every session after a
 * reconnect.
 */
bool db_set_instance(struct db *db, int64_t instance_id, const char *name)
	__attribute__((warn_unused_result));

/*
 * For an idle connection: reads what the server sent (for a backend that was
 * terminated, the news of it) and tells whether the connection is gone.
 * Cheap: no round trip.
 */
bool db_gone(struct db *db);

#endif
