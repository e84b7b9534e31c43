/*
 * lease.c - several chatsyncd on one schema: instances and leases
 */
#include "config.h"

#include "lease.h"

#include "cursor.h"
#include "db.h"
#include "mem.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The one value of a statement that returns one row, or NULL (the error is db's). */
static PGresult *
one_row(struct db *db, const char *name, const char *sql, int nparams, const char *const *params)
{
	PGresult *res = db_exec_prepared(db, name, sql, nparams, params);

	if (!db_result_ok(db, res, PGRES_TUPLES_OK)) {
		PQclear(res);
		return NULL;
	}
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		db_set_error(db, "%s returned %d rows, not one", name, PQntuples(res));
		PQclear(res);
		return NULL;
	}
	return res;
}

bool
lease_register(struct db *db, const char *name, int seconds, int64_t *instance_id)
{
	static const char sql[] = "SELECT sync_instance_register($1, $2, $3::integer, "
				  "to_timestamp($4::double precision), $5::integer)";
	char host[256], pid[16], started[32], secs[16];
	const char *params[5] = {name, host, pid, started, secs};
	struct timespec now;
	PGresult *res;

	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = '\0';
	clock_gettime(CLOCK_REALTIME, &now);
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	snprintf(started, sizeof(started), "%lld.%03ld", (long long)now.tv_sec,
		 now.tv_nsec / 1000000);
	snprintf(secs, sizeof(secs), "%d", seconds);
	res = one_row(db, "sync_instance_register", sql, 5, params);
	if (res == NULL)
		return false;
	*instance_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return true;
}

bool
lease_heartbeat(struct db *db, int64_t instance_id, int seconds, bool stop, int *live)
{
	static const char sql[] =
		"SELECT sync_instance_heartbeat($1::bigint, $2::integer, $3::boolean)";
	char id[24], secs[16];
	const char *params[3] = {id, secs, stop ? "t" : "f"};
	PGresult *res;

	snprintf(id, sizeof(id), "%" PRId64, instance_id);
	snprintf(secs, sizeof(secs), "%d", seconds);
	res = one_row(db, "sync_instance_heartbeat", sql, 3, params);
	if (res == NULL)
		return false;
	*live = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return true;
}

/* The n users as a text[] literal in *list (freed by the caller on success); false if too long. */
static bool
users_array(struct db *db, const char *const *users, size_t n, struct buf *list)
{
	bool ok;

	buf_init(list, (size_t)1 << 30);
	ok = buf_append(list, "{", 1);
	for (size_t i = 0; ok && i < n; i++)
		ok = db_array_add_text(list, users[i]);
	if (ok && buf_append(list, "}", 1))
		return true;
	buf_free(list);
	db_set_error(db, "the list of %zu users is too long for one query", n);
	return false;
}

/*
 * Columns of a claim: a position's (see cursor_position_from_row), the
 * outcome, the token, the stored pages' entries and next pages.
 */
#define CLAIM_OUTCOME 5
#define CLAIM_TOKEN 6
#define CLAIM_ENTRIES 7
#define CLAIM_NEXT_URLS 8

/* An array column of a claim's row into *items (none if NULL); false if it is no array. */
static bool
claim_array(struct db *db, const PGresult *res, int row, int col, char ***items, size_t *n)
{
	*items = NULL;
	*n = 0;
	if (PQgetisnull(res, row, col) || db_array_parse(PQgetvalue(res, row, col), items, n))
		return true;
	db_set_error(db, "a claim returned \"%s\" as %s, not an array", PQgetvalue(res, row, col),
		     PQfname(res, col));
	return false;
}

/* Row row of a claim's result as an outcome and, if claimed, a position. */
static bool
read_claim(struct db *db, const PGresult *res, int row, int64_t run_id, enum lease_outcome *outcome,
	   struct cursor_position *pos)
{
	const char *what = PQgetvalue(res, row, CLAIM_OUTCOME);

	memset(pos, 0, sizeof(*pos));
	if (strcmp(what, "done") == 0) {
		*outcome = LEASE_DONE;
		return true;
	}
	if (strcmp(what, "pending") == 0) {
		*outcome = LEASE_PENDING;
		return true;
	}
	if (strcmp(what, "claimed") != 0 || PQgetisnull(res, row, CLAIM_TOKEN)) {
		db_set_error(db, "a claim returned \"%s\"", what);
		return false;
	}
	*outcome = LEASE_CLAIMED;
	cursor_position_from_row(res, row, run_id, pos);
	/* Claimed is due: a listing that finished in this sweep is never claimed. */
	if (pos->start == CURSOR_SKIP)
		pos->start = CURSOR_FIRST_PAGE;
	pos->lease = strtoll(PQgetvalue(res, row, CLAIM_TOKEN), NULL, 10);
	if (!claim_array(db, res, row, CLAIM_ENTRIES, &pos->entries, &pos->n_entries) ||
	    !claim_array(db, res, row, CLAIM_NEXT_URLS, &pos->next_urls, &pos->n_next_urls)) {
		cursor_position_free(pos);
		return false;
	}
	return true;
}

static const char claim_sql[] =
	"SELECT run_id, state, next_page_url, pages_done, digests, outcome, lease_token, entries, "
	"next_urls FROM sync_lease_claim($1::bigint, $2::bigint, $3::integer, $4, $5::text[], "
	"$6::integer) ORDER BY ord";

bool
lease_claim_send(struct db *db, int64_t run_id, int64_t instance_id, int seconds,
		 const char *service_sid, const char *const *users, size_t n, size_t limit)
{
	char run[24], id[24], secs[16], lim[16];
	const char *params[6] = {run, id, secs, service_sid, NULL, lim};
	struct buf list;
	bool ok;

	if (!users_array(db, users, n, &list))
		return false;
	snprintf(run, sizeof(run), "%" PRId64, run_id);
	snprintf(id, sizeof(id), "%" PRId64, instance_id);
	snprintf(secs, sizeof(secs), "%d", seconds);
	snprintf(lim, sizeof(lim), "%zu", limit < INT_MAX ? limit : INT_MAX);
	params[4] = buf_str(&list);
	/* libpq copies the parameters before this returns. */
	ok = db_send_prepared(db, "sync_lease_claim", claim_sql, 6, params);
	buf_free(&list);
	return ok;
}

bool
lease_claim_read(struct db *db, PGresult *res, int64_t run_id, size_t n,
		 enum lease_outcome *outcome, struct cursor_position *pos)
{
	bool ok = db_result_ok(db, res, PGRES_TUPLES_OK);

	if (ok && (size_t)PQntuples(res) != n) {
		db_set_error(db, "claimed %zu users, heard of %d", n, PQntuples(res));
		ok = false;
	}
	for (size_t i = 0; i < n; i++)
		memset(&pos[i], 0, sizeof(pos[i]));
	for (size_t i = 0; ok && i < n; i++)
		ok = read_claim(db, res, (int)i, run_id, &outcome[i], &pos[i]);
	if (!ok) {
		for (size_t i = 0; i < n; i++)
			cursor_position_free(&pos[i]);
	}
	PQclear(res);
	return ok;
}

bool
lease_claim_users(struct db *db, int64_t run_id, int64_t instance_id, int seconds,
		  const char *service_sid, const char *const *users, size_t n, size_t limit,
		  enum lease_outcome *outcome, struct cursor_position *pos)
{
	PGresult *res;

	if (!lease_claim_send(db, run_id, instance_id, seconds, service_sid, users, n, limit))
		return false;
	if (!db_collect(db, true, &res)) {
		db_set_error(db, "the claim's result never came");
		return false;
	}
	return lease_claim_read(db, res, run_id, n, outcome, pos);
}

bool
lease_claim_dimension(struct db *db, int64_t run_id, int64_t instance_id, int seconds,
		      const char *service_sid, enum dimension d, enum lease_outcome *outcome,
		      struct cursor_position *pos)
{
	static const char sql[] =
		"SELECT run_id, state, next_page_url, pages_done, NULL::text, outcome, lease_token "
		"FROM sync_dimension_claim($1::bigint, $2::bigint, $3::integer, $4, $5)";
	char run[24], id[24], secs[16];
	const char *params[5] = {run, id, secs, service_sid, dimension_name(d)};
	PGresult *res;
	bool ok;

	snprintf(run, sizeof(run), "%" PRId64, run_id);
	snprintf(id, sizeof(id), "%" PRId64, instance_id);
	snprintf(secs, sizeof(secs), "%d", seconds);
	res = one_row(db, "sync_dimension_claim", sql, 5, params);
	if (res == NULL)
		return false;
	ok = read_claim(db, res, 0, run_id, outcome, pos);
	PQclear(res);
	return ok;
}

/* The n keys as four array literals: services, users or listings, tokens, whether a listing. */
static bool
key_arrays(struct db *db, const struct lease_key *keys, size_t n, struct buf out[4])
{
	bool ok = true;

	for (int a = 0; a < 4; a++) {
		buf_init(&out[a], (size_t)1 << 28);
		ok = ok && buf_append(&out[a], "{", 1);
	}
	for (size_t i = 0; ok && i < n; i++) {
		char token[24];

		snprintf(token, sizeof(token), "%" PRId64, keys[i].token);
		ok = db_array_add_text(&out[0], keys[i].service_sid) &&
		     db_array_add_text(&out[1],
				       keys[i].dimension >= 0
					       ? dimension_name((enum dimension)keys[i].dimension)
					       : keys[i].user) &&
		     db_array_add_text(&out[2], token) &&
		     db_array_add_text(&out[3], keys[i].dimension >= 0 ? "t" : "f");
	}
	for (int a = 0; ok && a < 4; a++)
		ok = buf_append(&out[a], "}", 1);
	if (!ok)
		db_set_error(db, "%zu leases are too many to name in one query", n);
	return ok;
}

static void
free_arrays(struct buf arrays[4])
{
	for (int a = 0; a < 4; a++)
		buf_free(&arrays[a]);
}

bool
lease_renew(struct db *db, int64_t instance_id, int seconds, const struct lease_key *keys, size_t n,
	    bool *lost)
{
	static const char sql[] = "SELECT ord FROM sync_lease_renew($1::bigint, $2::integer, "
				  "$3::text[], $4::text[], $5::bigint[], $6::boolean[])";
	char id[24], secs[16];
	const char *params[6] = {id, secs};
	struct buf arrays[4];
	PGresult *res;
	bool ok;

	memset(lost, 0, n * sizeof(*lost));
	if (!key_arrays(db, keys, n, arrays)) {
		free_arrays(arrays);
		return false;
	}
	snprintf(id, sizeof(id), "%" PRId64, instance_id);
	snprintf(secs, sizeof(secs), "%d", seconds);
	for (int a = 0; a < 4; a++)
		params[2 + a] = buf_str(&arrays[a]);
	res = db_exec_prepared(db, "sync_lease_renew", sql, 6, params);
	free_arrays(arrays);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK);
	for (int i = 0; ok && i < PQntuples(res); i++) {
		long ord = strtol(PQgetvalue(res, i, 0), NULL, 10);

		if (ord >= 1 && (size_t)ord <= n)
			lost[ord - 1] = true;
	}
	PQclear(res);
	return ok;
}

bool
lease_release(struct db *db, int64_t instance_id, const struct lease_key *keys, size_t n)
{
	static const char sql[] = "SELECT sync_lease_release($1::bigint, $2::text[], $3::text[], "
				  "$4::bigint[], $5::boolean[])";
	char id[24];
	const char *params[5] = {id};
	struct buf arrays[4];
	PGresult *res;
	bool ok;

	if (!key_arrays(db, keys, n, arrays)) {
		free_arrays(arrays);
		return false;
	}
	snprintf(id, sizeof(id), "%" PRId64, instance_id);
	for (int a = 0; a < 4; a++)
		params[1 + a] = buf_str(&arrays[a]);
	res = db_exec_prepared(db, "sync_lease_release", sql, 5, params);
	free_arrays(arrays);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK);
	PQclear(res);
	return ok;
}

bool
lease_stalest_first(struct db *db, const char *service_sid, char **users, size_t n)
{
	static const char sql[] =
		"SELECT u.ord FROM unnest($2::text[]) WITH ORDINALITY AS u(user_sid, ord) "
		"LEFT JOIN sync_cursors c ON c.service_sid = $1 AND c.user_sid = u.user_sid "
		"ORDER BY c.last_complete_at ASC NULLS FIRST, u.ord";
	const char *params[2] = {service_sid, NULL};
	struct buf list;
	char **sorted;
	PGresult *res;
	bool ok;

	if (n < 2)
		return true;
	if (!users_array(db, (const char *const *)users, n, &list))
		return false;
	params[1] = buf_str(&list);
	res = db_exec_prepared(db, "sync_stalest_first", sql, 2, params);
	buf_free(&list);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK);
	if (ok && (size_t)PQntuples(res) != n) {
		db_set_error(db, "ordered %zu users, read %d", n, PQntuples(res));
		ok = false;
	}
	if (ok) {
		sorted = xcalloc(n, sizeof(*sorted));
		for (size_t i = 0; i < n; i++)
			sorted[i] = users[strtoul(PQgetvalue(res, (int)i, 0), NULL, 10) - 1];
		memcpy(users, sorted, n * sizeof(*users));
		free(sorted);
	}
	PQclear(res);
	return ok;
}

/* Is the instance of this row gone: the same name as ours, or a process of this host no more? */
static bool
instance_gone(const PGresult *res, int row, const char *name)
{
	long pid = strtol(PQgetvalue(res, row, 1), NULL, 10);

	if (name != NULL && strcmp(PQgetvalue(res, row, 3), name) == 0)
		return true;
	return strcmp(PQgetvalue(res, row, 2), "t") == 0 && pid > 0 && kill((pid_t)pid, 0) != 0 &&
	       errno == ESRCH;
}

bool
lease_reap(struct db *db, const char *name, size_t *reaped)
{
	static const char find_sql[] =
		"SELECT instance_id, pid, hostname = $1, name FROM sync_instances "
		"WHERE stopped_at IS NULL AND expires_at > now() "
		"AND (hostname = $1 OR name = $2)";
	static const char gone_sql[] = "SELECT sync_instance_gone($1::bigint)";
	char host[256];
	const char *params[2] = {host, name != NULL ? name : ""};
	PGresult *res;
	bool ok;

	*reaped = 0;
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = '\0';
	res = db_exec_prepared(db, "sync_instances_here", find_sql, 2, params);
	ok = db_result_ok(db, res, PGRES_TUPLES_OK);
	for (int i = 0; ok && i < PQntuples(res); i++) {
		const char *id = PQgetvalue(res, i, 0);
		PGresult *gone;

		if (!instance_gone(res, i, name))
			continue;
		gone = db_exec_prepared(db, "sync_instance_gone", gone_sql, 1, &id);
		ok = db_result_ok(db, gone, PGRES_TUPLES_OK);
		PQclear(gone);
		*reaped += ok;
	}
	PQclear(res);
	return ok;
}
