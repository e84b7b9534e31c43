/*
 * write_modes.c - one page as one unnest statement vs. a pipeline of row statements
 *
 * Writes the same synthetic memberships (users x channels, a page per user
 * of at most 1000 rows) into wm.user_channels twice over, once per mode:
 *
 *   unnest    per page one prepared INSERT ... SELECT FROM unnest() of array
 *             literals (as src/writer.c sends them), in autocommit;
 *   pipeline  per page, in libpq's pipeline mode: BEGIN, one prepared
 *             single-row INSERT per row, COMMIT, a sync, then the results.
 *
 * Both upsert with ON CONFLICT DO UPDATE ... WHERE the values differ.  Each
 * mode gets its own session and a fresh schema, loads the empty table
 * (initial), then writes the same data again (resync: nothing changes).
 * Prints a markdown table of wall time, client CPU and the server backend's
 * CPU per run.  Only the statement shape differs: no history, cursors or run
 * counters, as chatsyncd's sync_page() keeps.  See tests/bench/README.md.
 *
 * Usage: write_modes [--conninfo STR] [--users N] [--channels M] [--page-size P]
 */
#define _POSIX_C_SOURCE 200809L

#include <libpq-fe.h>

#ifndef LIBPQ_HAS_PIPELINING
#error "write_modes needs libpq 14 or later (pipeline mode)"
#endif

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define WARN_UNUSED __attribute__((warn_unused_result))

#define MAX_PAGE 1000
#define SID_LEN 34	    /* two letters and 32 hex digits */
#define CHANNEL_URL_LEN 128 /* BASE_URL "/Channels/" CH...: 114 */
#define MEMBER_URL_LEN (CHANNEL_URL_LEN + 48)
#define LITERAL_CAP ((size_t)64 << 20) /* far above a page's column */

#define SERVICE_SID "IS0123456789abcdef0123456789abcdef"
#define ACCOUNT_SID "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define STATUS "joined"
#define BASE_URL "https://chat.twilio.com/v2/Services/" SERVICE_SID

enum mode { MODE_UNNEST, MODE_PIPELINE, MODE_COUNT };
enum phase { PHASE_INITIAL, PHASE_RESYNC, PHASE_COUNT };

static const char *const mode_name[MODE_COUNT] = {"unnest", "pipeline"};
static const char *const phase_name[PHASE_COUNT] = {"initial", "resync"};

struct options {
	const char *conninfo;
	long users;
	long channels;
	long page_size;
};

/* One membership as text; an empty lcmi stands for NULL. */
struct member_row {
	char channel_sid[SID_LEN + 1];
	char member_sid[SID_LEN + 1];
	char lcmi[24];
	char unread[24];
	char channel_url[CHANNEL_URL_LEN];
	char member_url[MEMBER_URL_LEN];
};

struct page {
	char user_sid[SID_LEN + 1];
	size_t rows;
	struct member_row row[MAX_PAGE];
};

/* A growable array literal "{...}" with a hard cap. */
struct literal {
	char *data;
	size_t len;
	size_t alloc;
};

struct measure {
	double wall;	    /* s spent writing pages */
	double client_cpu;  /* s of this process's CPU while writing them */
	double backend_cpu; /* s of the server backend's CPU; < 0: unknown */
	long long written;  /* rows inserted or updated */
};

static const char table_ddl[] =
	"DROP SCHEMA IF EXISTS wm CASCADE;\n"
	"CREATE SCHEMA wm;\n"
	"CREATE TABLE wm.user_channels (\n"
	"    service_sid                 text        NOT NULL,\n"
	"    user_sid                    text        NOT NULL,\n"
	"    channel_sid                 text        NOT NULL,\n"
	"    account_sid                 text,\n"
	"    member_sid                  text,\n"
	"    status                      text,\n"
	"    last_consumed_message_index bigint,\n"
	"    unread_messages_count       bigint,\n"
	"    channel_url                 text,\n"
	"    member_url                  text,\n"
	"    first_seen_at               timestamptz NOT NULL DEFAULT now(),\n"
	"    updated_at                  timestamptz NOT NULL DEFAULT now(),\n"
	"    deleted_at                  timestamptz,\n"
	"    PRIMARY KEY (service_sid, user_sid, channel_sid)\n"
	");\n"
	"CREATE INDEX user_channels_channel_idx ON wm.user_channels (service_sid, channel_sid);\n";

#define UPSERT_COLUMNS                                                                             \
	"INSERT INTO wm.user_channels AS uc\n"                                                     \
	"       (service_sid, user_sid, channel_sid, account_sid, member_sid, status,\n"           \
	"        last_consumed_message_index, unread_messages_count, channel_url, member_url)\n"

#define UPSERT_CONFLICT                                                                            \
	"ON CONFLICT (service_sid, user_sid, channel_sid) DO UPDATE\n"                             \
	"   SET account_sid = EXCLUDED.account_sid,\n"                                             \
	"       member_sid = EXCLUDED.member_sid,\n"                                               \
	"       status = EXCLUDED.status,\n"                                                       \
	"       last_consumed_message_index = EXCLUDED.last_consumed_message_index,\n"             \
	"       unread_messages_count = EXCLUDED.unread_messages_count,\n"                         \
	"       channel_url = EXCLUDED.channel_url,\n"                                             \
	"       member_url = EXCLUDED.member_url,\n"                                               \
	"       updated_at = now(),\n"                                                             \
	"       deleted_at = NULL\n"                                                               \
	" WHERE (uc.account_sid, uc.member_sid, uc.status, uc.last_consumed_message_index,\n"      \
	"        uc.unread_messages_count, uc.channel_url, uc.member_url, uc.deleted_at)\n"        \
	"       IS DISTINCT FROM\n"                                                                \
	"       (EXCLUDED.account_sid, EXCLUDED.member_sid, EXCLUDED.status,\n"                    \
	"        EXCLUDED.last_consumed_message_index, EXCLUDED.unread_messages_count,\n"          \
	"        EXCLUDED.channel_url, EXCLUDED.member_url, NULL::timestamptz)"

static const char unnest_sql[] =
	UPSERT_COLUMNS "SELECT $1, $2, t.*\n"
		       "  FROM unnest($3::text[], $4::text[], $5::text[], $6::text[],\n"
		       "              $7::bigint[], $8::bigint[],\n"
		       "              $9::text[], $10::text[]) AS t\n" UPSERT_CONFLICT;

static const char row_sql[] =
	UPSERT_COLUMNS "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)\n" UPSERT_CONFLICT;

/* Rows and a hash sum of the ten synced columns, as tests/bench/run.sh compares tables. */
static const char fingerprint_sql[] =
	"SELECT count(*), coalesce(sum(hashtextextended(ROW(service_sid, user_sid, channel_sid,\n"
	"       account_sid, member_sid, status, last_consumed_message_index,\n"
	"       unread_messages_count, channel_url, member_url)::text, 0)::numeric), 0)\n"
	"  FROM wm.user_channels";

static void
usage(FILE *out)
{
	fprintf(out,
		"usage: write_modes [OPTION]...\n"
		"Writes users x channels synthetic memberships into wm.user_channels, a page\n"
		"per user, twice per mode (initial load, unchanged resync), and prints a\n"
		"markdown table.\n"
		"\n"
		"  unnest    per page one INSERT ... SELECT FROM unnest() of array literals\n"
		"  pipeline  per page BEGIN, one INSERT per row, COMMIT in libpq's pipeline mode\n"
		"\n"
		"  --conninfo STR   libpq connection string (default \"\": the PG* variables)\n"
		"  --users N        users, one page each (default 200)\n"
		"  --channels M     channels per user (default 500; pages split above\n"
		"                   --page-size)\n"
		"  --page-size P    rows per page, 1..%d (default %d)\n"
		"  -h, --help       this help\n"
		"\n"
		"Drops and recreates the schema wm.  The server must run on this machine for\n"
		"its backend's CPU to be read from /proc; otherwise that column shows \"-\".\n",
		MAX_PAGE, MAX_PAGE);
}

/* ------------------------------------------------------------ data */

/* splitmix64's finaliser: deterministic, well-spread hex digits. */
static uint64_t
mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* "XX" and 32 hex digits derived from (kind, n). */
static void
make_sid(char out[SID_LEN + 1], const char *prefix, uint64_t kind, uint64_t n)
{
	uint64_t key = (kind << 56) ^ n;

	snprintf(out, SID_LEN + 1, "%.2s%016" PRIx64 "%016" PRIx64, prefix, mix(key),
		 mix(key ^ 0x5bd1e9955bd1e995ull));
}

static void
fill_row(struct member_row *r, long user, long channel, long channels)
{
	uint64_t member = (uint64_t)user * (uint64_t)channels + (uint64_t)channel;

	make_sid(r->channel_sid, "CH", 1, (uint64_t)channel);
	make_sid(r->member_sid, "MB", 2, member);
	/* A member who has read nothing yet has no last consumed index. */
	if ((user + channel) % 7 == 0)
		r->lcmi[0] = '\0';
	else
		snprintf(r->lcmi, sizeof(r->lcmi), "%ld", (user * 31 + channel * 17) % 1000);
	snprintf(r->unread, sizeof(r->unread), "%ld", (user + 3 * channel) % 4);
	snprintf(r->channel_url, sizeof(r->channel_url), "%s/Channels/%s", BASE_URL,
		 r->channel_sid);
	snprintf(r->member_url, sizeof(r->member_url), "%s/Members/%s", r->channel_url,
		 r->member_sid);
}

/* The page of user (0-based) holding channels first .. first + rows - 1. */
static void
fill_page(struct page *p, long user, long first, size_t rows, long channels)
{
	make_sid(p->user_sid, "US", 0, (uint64_t)user);
	p->rows = rows;
	for (size_t i = 0; i < rows; i++)
		fill_row(&p->row[i], user, first + (long)i, channels);
}

/* ------------------------------------------------------------ array literals */

static void
literal_append(struct literal *l, const char *s, size_t n)
{
	if (l->len + n + 1 > l->alloc) {
		size_t want = l->alloc ? l->alloc : 4096;

		while (want < l->len + n + 1)
			want *= 2;
		if (want > LITERAL_CAP) {
			fprintf(stderr, "write_modes: array literal over %zu bytes\n", LITERAL_CAP);
			exit(1);
		}
		l->data = realloc(l->data, want);
		if (l->data == NULL) {
			fprintf(stderr, "write_modes: out of memory\n");
			exit(1);
		}
		l->alloc = want;
	}
	memcpy(l->data + l->len, s, n);
	l->len += n;
	l->data[l->len] = '\0';
}

/* Appends one element as src/writer.c does: quoted and escaped, or NULL. */
static void
literal_add(struct literal *l, bool first, const char *s)
{
	const char *run = s;

	literal_append(l, first ? "{" : ",", 1);
	if (s == NULL) {
		literal_append(l, "NULL", 4);
		return;
	}
	literal_append(l, "\"", 1);
	for (const char *p = s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\') {
			literal_append(l, run, (size_t)(p - run));
			literal_append(l, "\\", 1);
			run = p;
		}
	}
	literal_append(l, run, strlen(run));
	literal_append(l, "\"", 1);
}

/* ------------------------------------------------------------ measuring */

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* utime + stime of process pid in seconds, from /proc; -1 if unreadable. */
static double
process_cpu_seconds(int pid)
{
	char path[64], line[1024];
	unsigned long long utime, stime;
	const char *after;
	long tck = sysconf(_SC_CLK_TCK);
	FILE *f;
	bool ok;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	ok = fgets(line, sizeof(line), f) != NULL;
	fclose(f);
	/* The command name may hold spaces and parentheses: fields resume after the last ")". */
	after = ok ? strrchr(line, ')') : NULL;
	if (after == NULL || tck <= 0)
		return -1;
	/* state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
	if (sscanf(after + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
		   &stime) != 2)
		return -1;
	return (double)(utime + stime) / (double)tck;
}

/* ------------------------------------------------------------ the database */

static bool WARN_UNUSED
exec_ok(PGconn *conn, const char *sql, const char *what)
{
	PGresult *res = PQexec(conn, sql);
	bool ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;

	if (!ok)
		fprintf(stderr, "write_modes: could not %s: %s", what, PQerrorMessage(conn));
	PQclear(res);
	return ok;
}

static void
ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* A session as chatsyncd's: commits do not wait for the WAL flush.  NULL on failure. */
static PGconn *
connect_session(const char *conninfo)
{
	PGconn *conn = PQconnectdb(conninfo);

	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "write_modes: could not connect to the database: %s",
			PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeProcessor(conn, ignore_notice, NULL);
	if (!exec_ok(conn, "SET synchronous_commit TO off", "set synchronous_commit")) {
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/* A fresh schema wm and the mode's statement, prepared as "wm_upsert". */
static bool WARN_UNUSED
prepare_mode(PGconn *conn, enum mode mode)
{
	PGresult *res;
	bool ok;

	if (!exec_ok(conn, table_ddl, "create the schema wm"))
		return false;
	res = PQprepare(conn, "wm_upsert", mode == MODE_UNNEST ? unnest_sql : row_sql, 10, NULL);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		fprintf(stderr, "write_modes: could not prepare the %s statement: %s",
			mode_name[mode], PQerrorMessage(conn));
	PQclear(res);
	return ok;
}

/* Rows in wm.user_channels and their hash sum (the caller's buffer). */
static bool WARN_UNUSED
fingerprint(PGconn *conn, long long *rows, char *sum, size_t sumsz)
{
	PGresult *res = PQexec(conn, fingerprint_sql);
	bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;

	if (ok) {
		*rows = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		snprintf(sum, sumsz, "%s", PQgetvalue(res, 0, 1));
	} else {
		fprintf(stderr, "write_modes: could not count the rows of wm.user_channels: %s",
			PQerrorMessage(conn));
	}
	PQclear(res);
	return ok;
}

/* ------------------------------------------------------------ the two modes */

/* The row's ten parameters; NULL for a null. */
static void
row_params(const struct page *p, const struct member_row *r, const char *params[10])
{
	params[0] = SERVICE_SID;
	params[1] = p->user_sid;
	params[2] = r->channel_sid;
	params[3] = ACCOUNT_SID;
	params[4] = r->member_sid;
	params[5] = STATUS;
	params[6] = r->lcmi[0] != '\0' ? r->lcmi : NULL;
	params[7] = r->unread;
	params[8] = r->channel_url;
	params[9] = r->member_url;
}

/* One statement: the page's columns 3..10 as array literals. */
static bool WARN_UNUSED
write_unnest(PGconn *conn, const struct page *p, struct literal col[8], long long *written)
{
	const char *params[10], *row[10];
	PGresult *res;
	bool ok;

	for (int c = 0; c < 8; c++)
		col[c].len = 0;
	for (size_t i = 0; i < p->rows; i++) {
		row_params(p, &p->row[i], row);
		for (int c = 0; c < 8; c++)
			literal_add(&col[c], i == 0, row[c + 2]);
	}
	params[0] = SERVICE_SID;
	params[1] = p->user_sid;
	for (int c = 0; c < 8; c++) {
		literal_append(&col[c], "}", 1);
		params[c + 2] = col[c].data;
	}
	res = PQexecPrepared(conn, "wm_upsert", 10, params, NULL, NULL, 0);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (ok)
		*written += strtoll(PQcmdTuples(res), NULL, 10);
	else
		fprintf(stderr, "write_modes: could not write the page of user \"%s\" (unnest): %s",
			p->user_sid, PQerrorMessage(conn));
	PQclear(res);
	return ok;
}

/*
 * Queues BEGIN, a statement per row, COMMIT and a sync.  The connection is
 * blocking: when the socket is full, libpq reads the server's replies into
 * its input buffer while it waits to send (pqSendSome), so sending a whole
 * page before reading cannot deadlock.
 */
static bool WARN_UNUSED
send_pipeline(PGconn *conn, const struct page *p)
{
	const char *params[10];
	bool ok = PQsendQueryParams(conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) == 1;

	for (size_t i = 0; ok && i < p->rows; i++) {
		row_params(p, &p->row[i], params);
		ok = PQsendQueryPrepared(conn, "wm_upsert", 10, params, NULL, NULL, 0) == 1;
	}
	ok = ok && PQsendQueryParams(conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) == 1;
	return ok && PQpipelineSync(conn) == 1;
}

/*
 * Reads the results of n queued statements (each ends with a NULL) and the
 * sync.  The first error is kept in err; after it the server skips the rest
 * (PGRES_PIPELINE_ABORTED).
 */
static bool WARN_UNUSED
read_pipeline(PGconn *conn, size_t n, long long *written, char *err, size_t errsz)
{
	PGresult *res;
	bool ok = true;

	for (size_t i = 0; i < n; i++) {
		res = PQgetResult(conn);
		if (res == NULL) {
			snprintf(err, errsz, "%zu results missing\n", n - i);
			return false;
		}
		if (PQresultStatus(res) == PGRES_COMMAND_OK) {
			*written += strtoll(PQcmdTuples(res), NULL, 10);
		} else if (ok) {
			snprintf(err, errsz, "%s", PQresultErrorMessage(res));
			ok = false;
		}
		PQclear(res);
		res = PQgetResult(conn);
		if (res != NULL) {
			PQclear(res);
			snprintf(err, errsz, "more than one result for statement %zu\n", i + 1);
			return false;
		}
	}
	res = PQgetResult(conn);
	if (PQresultStatus(res) != PGRES_PIPELINE_SYNC && ok) {
		snprintf(err, errsz, "no pipeline sync: %s", PQerrorMessage(conn));
		ok = false;
	}
	PQclear(res);
	return ok;
}

/* BEGIN, one statement per row, COMMIT: the whole page sent, then read. */
static bool WARN_UNUSED
write_pipeline(PGconn *conn, const struct page *p, long long *written)
{
	char err[1024] = "";
	bool ok;

	if (PQenterPipelineMode(conn) != 1) {
		fprintf(stderr, "write_modes: could not enter pipeline mode: %s",
			PQerrorMessage(conn));
		return false;
	}
	ok = send_pipeline(conn, p);
	if (!ok)
		snprintf(err, sizeof(err), "%s", PQerrorMessage(conn));
	else
		ok = read_pipeline(conn, p->rows + 2, written, err, sizeof(err));
	if (ok && PQexitPipelineMode(conn) != 1) {
		snprintf(err, sizeof(err), "could not leave pipeline mode: %s",
			 PQerrorMessage(conn));
		ok = false;
	}
	if (!ok)
		fprintf(stderr,
			"write_modes: could not write the page of user \"%s\" (pipeline): %s",
			p->user_sid, err);
	return ok;
}

/* ------------------------------------------------------------ one run */

/* Writes every user's pages once in the given mode, timing only the writing. */
static bool WARN_UNUSED
run_once(PGconn *conn, enum mode mode, const struct options *opt, struct page *page,
	 struct literal col[8], struct measure *m)
{
	double cpu0 = process_cpu_seconds(PQbackendPID(conn)), cpu1;

	memset(m, 0, sizeof(*m));
	for (long u = 0; u < opt->users; u++) {
		for (long first = 0; first < opt->channels; first += opt->page_size) {
			long rows = opt->channels - first < opt->page_size ? opt->channels - first
									   : opt->page_size;
			double t0, c0;
			bool ok;

			fill_page(page, u, first, (size_t)rows, opt->channels);
			t0 = now_seconds();
			c0 = cpu_seconds();
			if (mode == MODE_UNNEST)
				ok = write_unnest(conn, page, col, &m->written);
			else
				ok = write_pipeline(conn, page, &m->written);
			m->client_cpu += cpu_seconds() - c0;
			m->wall += now_seconds() - t0;
			if (!ok)
				return false;
		}
	}
	cpu1 = process_cpu_seconds(PQbackendPID(conn));
	m->backend_cpu = cpu0 < 0 || cpu1 < 0 ? -1 : cpu1 - cpu0;
	return true;
}

/* Fails loudly unless the table holds users x channels rows and the run wrote what it should. */
static bool WARN_UNUSED
check_run(PGconn *conn, enum mode mode, enum phase phase, const struct options *opt,
	  const struct measure *m, char *sum, size_t sumsz)
{
	long long want = (long long)opt->users * opt->channels, rows;
	long long want_written = phase == PHASE_INITIAL ? want : 0;

	if (!fingerprint(conn, &rows, sum, sumsz))
		return false;
	if (rows != want) {
		fprintf(stderr,
			"write_modes: %s %s: wm.user_channels holds %lld rows, "
			"not %ld x %ld = %lld\n",
			mode_name[mode], phase_name[phase], rows, opt->users, opt->channels, want);
		return false;
	}
	if (m->written != want_written) {
		fprintf(stderr,
			"write_modes: %s %s: %lld rows inserted or updated, expected %lld\n",
			mode_name[mode], phase_name[phase], m->written, want_written);
		return false;
	}
	return true;
}

/*
 * Both runs of one mode in a session of its own, from a fresh schema; the
 * resync starts from a vacuumed, analyzed table.  sum receives the table's
 * hash sum after the resync.
 */
static bool WARN_UNUSED
run_mode(enum mode mode, const struct options *opt, struct measure m[PHASE_COUNT], char *sum,
	 size_t sumsz, int *server_version)
{
	struct page *page = calloc(1, sizeof(*page));
	struct literal col[8] = {{0}};
	PGconn *conn = connect_session(opt->conninfo);
	bool ok = page != NULL && conn != NULL && prepare_mode(conn, mode);

	if (page == NULL)
		fprintf(stderr, "write_modes: out of memory\n");
	if (conn != NULL)
		*server_version = PQserverVersion(conn);
	for (int ph = 0; ok && ph < PHASE_COUNT; ph++) {
		if (ph == PHASE_RESYNC)
			ok = exec_ok(conn, "VACUUM (ANALYZE) wm.user_channels",
				     "vacuum wm.user_channels");
		ok = ok && run_once(conn, mode, opt, page, col, &m[ph]);
		ok = ok && check_run(conn, mode, (enum phase)ph, opt, &m[ph], sum, sumsz);
	}
	for (int c = 0; c < 8; c++)
		free(col[c].data);
	free(page);
	PQfinish(conn);
	return ok;
}

/* ------------------------------------------------------------ the report */

/* "%.2f" of a / b, or "n/a" when either is unknown (negative) or b is 0. */
static void
print_ratio(double a, double b)
{
	if (a < 0 || b <= 0)
		printf("n/a");
	else
		printf("%.2f", a / b);
}

static void
print_row(const char *mode, const char *phase, long long rows, const struct measure *x)
{
	printf("| %s | %s | %lld | %.2f | %.0f | %.2f | ", mode, phase, rows, x->wall,
	       x->wall > 0 ? (double)rows / x->wall : 0, x->client_cpu);
	if (x->backend_cpu < 0)
		printf("- |\n");
	else
		printf("%.2f |\n", x->backend_cpu);
}

static void
print_report(const struct options *opt, struct measure m[MODE_COUNT][PHASE_COUNT], int v)
{
	long long rows = (long long)opt->users * opt->channels;

	printf("%ld users × %ld channels = %lld rows, pages of up to %ld rows, PostgreSQL %d.%d,"
	       " synchronous_commit off. Times count writing the pages, not generating"
	       " their rows.\n\n",
	       opt->users, opt->channels, rows, opt->page_size, v / 10000, v % 10000);
	printf("| mode | run | rows | wall s | rows/s | client CPU s | backend CPU s |\n");
	printf("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
	for (int md = 0; md < MODE_COUNT; md++) {
		for (int ph = 0; ph < PHASE_COUNT; ph++)
			print_row(mode_name[md], phase_name[ph], rows, &m[md][ph]);
	}
	printf("\n");
	for (int ph = 0; ph < PHASE_COUNT; ph++) {
		const struct measure *pl = &m[MODE_PIPELINE][ph], *un = &m[MODE_UNNEST][ph];

		printf("- %s, pipeline ÷ unnest: wall ", phase_name[ph]);
		print_ratio(pl->wall, un->wall);
		printf(", backend CPU ");
		print_ratio(pl->backend_cpu, un->backend_cpu);
		printf("\n");
	}
}

/* ------------------------------------------------------------ main */

static bool WARN_UNUSED
parse_count(const char *flag, const char *s, long max, long *out)
{
	char *end;
	long v;

	if (s == NULL) {
		fprintf(stderr, "write_modes: %s needs a value\n", flag);
		return false;
	}
	v = strtol(s, &end, 10);
	if (end == s || *end != '\0' || v < 1 || v > max) {
		fprintf(stderr, "write_modes: %s must be a number from 1 to %ld, not \"%s\"\n",
			flag, max, s);
		return false;
	}
	*out = v;
	return true;
}

/* 0: go on; 1: exit 0 (help); -1: exit 1. */
static int
parse_args(int argc, char **argv, struct options *opt)
{
	for (int i = 1; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool ok;

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 1;
		} else if (strcmp(a, "--conninfo") == 0 && v != NULL) {
			opt->conninfo = v;
			ok = true;
		} else if (strcmp(a, "--users") == 0) {
			ok = parse_count(a, v, 10000000, &opt->users);
		} else if (strcmp(a, "--channels") == 0) {
			ok = parse_count(a, v, 10000000, &opt->channels);
		} else if (strcmp(a, "--page-size") == 0) {
			ok = parse_count(a, v, MAX_PAGE, &opt->page_size);
		} else {
			fprintf(stderr, "write_modes: unknown option or missing value \"%s\"\n", a);
			usage(stderr);
			return -1;
		}
		if (!ok)
			return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct options opt = {.conninfo = "", .users = 200, .channels = 500, .page_size = MAX_PAGE};
	struct measure m[MODE_COUNT][PHASE_COUNT];
	char sum[MODE_COUNT][64];
	int server_version = 0;
	int r = parse_args(argc, argv, &opt);

	if (r != 0)
		return r > 0 ? 0 : 1;
	for (int md = 0; md < MODE_COUNT; md++) {
		fprintf(stderr, "# write_modes: %s, %ld users x %ld channels\n", mode_name[md],
			opt.users, opt.channels);
		if (!run_mode((enum mode)md, &opt, m[md], sum[md], sizeof(sum[md]),
			      &server_version))
			return 1;
	}
	if (strcmp(sum[MODE_UNNEST], sum[MODE_PIPELINE]) != 0) {
		fprintf(stderr,
			"write_modes: the modes left different tables (hash sums %s and %s)\n",
			sum[MODE_UNNEST], sum[MODE_PIPELINE]);
		return 1;
	}
	print_report(&opt, m, server_version);
	return 0;
}
