/*
 * db.c - the PostgreSQL connection
 */
#include "config.h"

#include "db.h"

#include "mem.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_PREPARED 32

struct db {
	PGconn *conn;
	char *schema_ident;
	const char *prepared[MAX_PREPARED]; /* names prepared on this connection */
	size_t n_prepared;
	bool busy; /* an asynchronous statement is in flight */
	/*
	 * Its result, read ahead of a statement run meanwhile (see settle()),
	 * when stashed: the next db_collect() returns it.
	 */
	PGresult *stashed;
	bool stashed_ready;
	int64_t instance_id; /* the instance this session works for; 0 before one is set */
	char *instance_name;
	char error[512];
};

/* libpq's messages end in a newline and may span lines: keep the first, without "ERROR:  ". */
static void
first_line(const char *msg, char *out, size_t outsz)
{
	size_t n;

	if (strncmp(msg, "ERROR:  ", 8) == 0)
		msg += 8;
	n = strcspn(msg, "\n");
	if (n >= outsz)
		n = outsz - 1;
	memcpy(out, msg, n);
	out[n] = '\0';
}

/* Keeps libpq's message on the connection as the reason of the failure. */
static void
conn_failed(struct db *db)
{
	first_line(PQerrorMessage(db->conn), db->error, sizeof(db->error));
}

void
db_set_error(struct db *db, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(db->error, sizeof(db->error), fmt, ap);
	va_end(ap);
}

const char *
db_error(const struct db *db)
{
	return db->error;
}

static void
ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* The session works for db->instance_id: chatsync.instance, and application_name. */
static bool
set_instance(struct db *db)
{
	char *name, *sql;
	bool ok;

	name = PQescapeLiteral(db->conn, db->instance_name, strlen(db->instance_name));
	if (name == NULL) {
		conn_failed(db);
		return false;
	}
	/* Both in one round trip; the second statement ends it, so it is the one checked. */
	sql = xasprintf("SELECT set_config('application_name', 'chatsyncd/' || %s, false); "
			"SET chatsync.instance TO '%" PRId64 "'",
			name, db->instance_id);
	PQfreemem(name);
	ok = db_exec(db, sql);
	free(sql);
	return ok;
}

bool
db_set_instance(struct db *db, int64_t instance_id, const char *name)
{
	free(db->instance_name);
	db->instance_name = xstrdup(name);
	db->instance_id = instance_id;
	return set_instance(db);
}

/*
 * Every new session: quiet notices, our schema first, fresh plans, and
 * commits that do not wait for the WAL flush.  That is safe here: a page's rows and its
 * cursor commit together, so a commit lost in a server crash loses both, and
 * the page is simply fetched again from the API.
 */
/* Reads the result of the statement in flight, to the end, so the connection is idle. */
static PGresult *
read_result(struct db *db)
{
	PGresult *res = PQgetResult(db->conn), *extra;

	for (extra = PQgetResult(db->conn); extra != NULL; extra = PQgetResult(db->conn))
		PQclear(extra);
	db->busy = false;
	return res;
}

/*
 * A statement is about to run while an asynchronous one is in flight: the
 * latter's result is waited for and kept for db_collect(), so that one
 * connection serves both.
 */
static void
settle(struct db *db)
{
	if (!db->busy)
		return;
	db->stashed = read_result(db);
	db->stashed_ready = true;
}

static bool
session_setup(struct db *db)
{
	char *sql;
	bool ok;

	db->n_prepared = 0;
	db->busy = false;
	PQclear(db->stashed);
	db->stashed = NULL;
	db->stashed_ready = false;
	PQsetNoticeProcessor(db->conn, ignore_notice, NULL);
	if (!db_exec(db, "SET synchronous_commit TO off"))
		return false;
	/*
	 * Whatever the role or the database says: leases are read under READ
	 * COMMITTED (a snapshot taken before a takeover would not see it), and
	 * an idle control connection between sweeps, a page of a large listing
	 * or a wait for a lock must not be cut short by a timeout.
	 */
	if (!db_exec(db, "SET default_transaction_isolation TO 'read committed'") ||
	    !db_exec(db, "SET idle_session_timeout TO 0") ||
	    !db_exec(db, "SET idle_in_transaction_session_timeout TO 0") ||
	    !db_exec(db, "SET statement_timeout TO 0") || !db_exec(db, "SET lock_timeout TO 0"))
		return false;
	/*
	 * Plan every statement with the tables as they are now: a generic plan
	 * cached while the tables were empty would scan them whole as they grow.
	 */
	if (!db_exec(db, "SET plan_cache_mode TO force_custom_plan"))
		return false;
	sql = xasprintf("SET search_path TO %s", db->schema_ident);
	ok = db_exec(db, sql);
	free(sql);
	return ok && (db->instance_id == 0 || set_instance(db));
}

struct db *
db_open(const char *conninfo, const char *schema, char *err, size_t errsz)
{
	/*
	 * TCP keepalives and a user timeout, so that a connection lost without
	 * a word (a NAT timeout, a host gone) is noticed in about two minutes,
	 * and a connect that gets no answer gives up after 10 s (within the
	 * watchdog's interval); before dbname, so that the configured conninfo
	 * may say otherwise.
	 */
	const char *const keys[] = {
		"keepalives",	    "keepalives_idle",		 "keepalives_interval",
		"keepalives_count", "tcp_user_timeout",		 "connect_timeout",
		"dbname",	    "fallback_application_name", NULL};
	const char *const values[] = {"1",  "60",     "10",	   "6", "120000",
				      "10", conninfo, "chatsyncd", NULL};
	struct db *db = xcalloc(1, sizeof(*db));
	char *ident;

	db->conn = PQconnectdbParams(keys, values, 1);
	if (PQstatus(db->conn) != CONNECTION_OK) {
		conn_failed(db);
		goto fail;
	}
	ident = PQescapeIdentifier(db->conn, schema, strlen(schema));
	if (ident == NULL) {
		conn_failed(db);
		goto fail;
	}
	db->schema_ident = xstrdup(ident);
	PQfreemem(ident);
	if (!session_setup(db))
		goto fail;
	return db;
fail:
	snprintf(err, errsz, "%s", db->error);
	db_close(db);
	return NULL;
}

void
db_close(struct db *db)
{
	if (db != NULL) {
		PQclear(db->stashed);
		PQfinish(db->conn);
		free(db->schema_ident);
		free(db->instance_name);
	}
	free(db);
}

bool
db_reconnect(struct db *db)
{
	PQreset(db->conn);
	if (PQstatus(db->conn) != CONNECTION_OK) {
		conn_failed(db);
		return false;
	}
	return session_setup(db);
}

bool
db_gone(struct db *db)
{
	if (PQstatus(db->conn) != CONNECTION_OK)
		return true;
	if (!PQconsumeInput(db->conn)) {
		conn_failed(db);
		return true;
	}
	return PQstatus(db->conn) != CONNECTION_OK;
}

PGconn *
db_conn(struct db *db)
{
	settle(db);
	return db->conn;
}

const char *
db_schema_ident(const struct db *db)
{
	return db->schema_ident;
}

bool
db_result_ok(struct db *db, const PGresult *res, ExecStatusType want)
{
	if (res != NULL && PQresultStatus(res) == want)
		return true;
	if (res != NULL && PQresultErrorMessage(res)[0] != '\0')
		first_line(PQresultErrorMessage(res), db->error, sizeof(db->error));
	else if (res != NULL)
		db_set_error(db, "unexpected result %s", PQresStatus(PQresultStatus(res)));
	else
		conn_failed(db);
	return false;
}

bool
db_exec(struct db *db, const char *sql)
{
	PGresult *res;

	settle(db);
	res = PQexec(db->conn, sql);
	bool ok = db_result_ok(db, res, PGRES_COMMAND_OK);

	PQclear(res);
	return ok;
}

/* Waits up to ms for input on the connection; false if poll itself failed. */
static bool
wait_readable(struct db *db, int ms)
{
	struct pollfd pfd = {.fd = PQsocket(db->conn), .events = POLLIN};

	if (poll(&pfd, 1, ms) >= 0 || errno == EINTR)
		return true;
	db_set_error(db, "could not wait for the server: %s", strerror(errno));
	return false;
}

bool
db_exec_ticking(struct db *db, const char *sql, void (*tick)(void *arg), void *arg)
{
	PGresult *res, *last = NULL;
	bool ok = true, waiting = true;

	settle(db);
	if (!PQsendQuery(db->conn, sql)) {
		conn_failed(db);
		return false;
	}
	/*
	 * Read every result, so the connection is idle again; the first failure
	 * is the one kept.  Before each, wait in one-second steps, ticking: a
	 * script's statements come back one by one, each after its own run.
	 */
	for (;;) {
		while (waiting && PQisBusy(db->conn)) {
			waiting = wait_readable(db, 1000) && PQconsumeInput(db->conn);
			if (!waiting && ok) {
				conn_failed(db);
				ok = false;
			}
			if (tick != NULL)
				tick(arg);
		}
		res = PQgetResult(db->conn);
		if (res == NULL)
			break;
		if (ok && PQresultStatus(res) != PGRES_COMMAND_OK &&
		    PQresultStatus(res) != PGRES_EMPTY_QUERY)
			ok = db_result_ok(db, res, PGRES_COMMAND_OK);
		PQclear(last);
		last = res;
	}
	if (ok && last == NULL)
		ok = db_result_ok(db, NULL, PGRES_COMMAND_OK);
	PQclear(last);
	return ok;
}

static bool
is_prepared(const struct db *db, const char *name)
{
	for (size_t i = 0; i < db->n_prepared; i++) {
		if (db->prepared[i] == name || strcmp(db->prepared[i], name) == 0)
			return true;
	}
	return false;
}

static bool
prepare_once(struct db *db, const char *name, const char *sql, int nparams)
{
	PGresult *res;
	bool ok;

	settle(db);
	if (is_prepared(db, name))
		return true;
	res = PQprepare(db->conn, name, sql, nparams, NULL);
	ok = db_result_ok(db, res, PGRES_COMMAND_OK);
	PQclear(res);
	if (ok && db->n_prepared < MAX_PREPARED)
		db->prepared[db->n_prepared++] = name;
	return ok;
}

PGresult *
db_exec_prepared(struct db *db, const char *name, const char *sql, int nparams,
		 const char *const *params)
{
	if (!prepare_once(db, name, sql, nparams))
		return NULL;
	return PQexecPrepared(db->conn, name, nparams, params, NULL, NULL, 0);
}

bool
db_send_prepared(struct db *db, const char *name, const char *sql, int nparams,
		 const char *const *params)
{
	if (!prepare_once(db, name, sql, nparams))
		return false;
	if (!PQsendQueryPrepared(db->conn, name, nparams, params, NULL, NULL, 0)) {
		conn_failed(db);
		return false;
	}
	db->busy = true;
	return true;
}

bool
db_busy(const struct db *db)
{
	return db->busy || db->stashed_ready;
}

int
db_socket(const struct db *db)
{
	return PQsocket(db->conn);
}

bool
db_collect(struct db *db, bool wait, PGresult **res)
{
	*res = NULL;
	if (db->stashed_ready) {
		*res = db->stashed;
		db->stashed = NULL;
		db->stashed_ready = false;
		return true;
	}
	if (!db->busy)
		return false;
	if (!wait && (!PQconsumeInput(db->conn) || PQisBusy(db->conn))) {
		if (PQstatus(db->conn) == CONNECTION_OK)
			return false;
	}
	/* One result per statement; read on to the end so the connection is idle again. */
	*res = read_result(db);
	return true;
}

bool
db_connected(struct db *db)
{
	return PQstatus(db->conn) == CONNECTION_OK;
}

bool
db_alive(struct db *db)
{
	PGresult *res;
	bool ok;

	if (!db_connected(db))
		return false;
	settle(db);
	res = PQexec(db->conn, "SELECT 1");
	ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	PQclear(res);
	return ok && PQstatus(db->conn) == CONNECTION_OK;
}

bool
db_cancel(struct db *db)
{
	PGcancel *cancel = PQgetCancel(db->conn);
	bool ok;

	if (cancel == NULL) {
		db_set_error(db, "no connection to cancel on");
		return false;
	}
	ok = PQcancel(cancel, db->error, (int)sizeof(db->error)) == 1;
	PQfreeCancel(cancel);
	return ok;
}

bool
db_array_add_text(struct buf *b, const char *s)
{
	if (b->len > 1 && !buf_append(b, ",", 1))
		return false;
	if (s == NULL)
		return buf_append(b, "NULL", 4);
	if (!buf_append(b, "\"", 1))
		return false;
	/* Runs without a quote or a backslash go in whole (most strings are one run). */
	for (;;) {
		size_t run = strcspn(s, "\"\\");

		if (!buf_append(b, s, run))
			return false;
		if (s[run] == '\0')
			return buf_append(b, "\"", 1);
		if (!buf_append(b, "\\", 1) || !buf_append(b, s + run, 1))
			return false;
		s += run + 1;
	}
}

/* One element at *p (quoted or bare); advances *p past it.  NULL in *out for NULL. */
static bool
array_element(const char **p, char **out)
{
	const char *s = *p;
	struct buf b;

	*out = NULL;
	if (*s == '"') {
		buf_init(&b, SIZE_MAX / 2);
		for (s++; *s != '"'; s++) {
			if (*s == '\\')
				s++;
			if (*s == '\0' || !buf_append(&b, s, 1)) {
				buf_free(&b);
				return false;
			}
		}
		*out = buf_take(&b);
		buf_free(&b);
		*p = s + 1;
		return true;
	}
	size_t len = strcspn(s, ",}");

	if (len == 0 || s[len] == '\0' || memchr(s, '"', len) != NULL ||
	    memchr(s, '{', len) != NULL)
		return false;
	if (!(len == 4 && strncasecmp(s, "NULL", 4) == 0))
		*out = xstrndup(s, len);
	*p = s + len;
	return true;
}

bool
db_array_parse(const char *lit, char ***items, size_t *n)
{
	const char *p = lit;
	char **list = NULL;
	size_t count = 0;

	*items = NULL;
	*n = 0;
	if (lit == NULL || *p++ != '{')
		return false;
	if (*p == '}' && p[1] == '\0')
		return true;
	for (;;) {
		char *item;

		if (!array_element(&p, &item)) {
			db_array_free(list, count);
			return false;
		}
		list = xrealloc(list, (count + 1) * sizeof(*list));
		list[count++] = item;
		if (*p == '}' && p[1] == '\0')
			break;
		if (*p++ != ',') {
			db_array_free(list, count);
			return false;
		}
	}
	*items = list;
	*n = count;
	return true;
}

void
db_array_free(char **items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(items[i]);
	free(items);
}
