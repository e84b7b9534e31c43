/*
 * sweep.c - one sweep over every configured user
 *
 * Up to twilio.concurrency users are listed at once.  Each job walks one
 * user's pages: fetch, parse as the body streams in, commit the page with
 * the cursor's advance, follow next_page_url.  A failure ends that user's
 * part of the sweep (recorded on its cursor) and the sweep goes on.
 *
 * A slot (one of twilio.concurrency, fewer while the API throttles) is held
 * by each listing being fetched, and given up when its last page is handed
 * to the writer: a quarter more jobs than slots (COMMIT_JOBS) let the next
 * users start while the writer finishes the others, and no more last pages
 * than that wait for it.
 */
#include "config.h"

#include "sweep.h"

#include "backoff.h"
#include "cursor.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "pacer.h"
#include "page_parser.h"
#include "settings.h"
#include "url.h"
#include "writer.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The API never sends more than 1000 entries a page (PageSize's maximum). */
#define MAX_ROWS_PER_PAGE 1000

/* Pages of one listing remembered to detect a next_page_url loop; limits.max_pages stops longer ones. */
#define LOOP_MEMORY 1024

/* Cursors read in one query, for the users about to start. */
#define LOOKAHEAD 64

/* Jobs beyond twilio.concurrency, whose pages wait for the writer or are being committed. */
#define COMMIT_JOBS(concurrency) ((size_t)(concurrency) / 4 + 1)

/* After a stop, how long a page being committed is let finish before it is cancelled. */
#define STOP_GRACE_MS 1000

/* Reconnecting to a lost database: attempts, and the backoff between them. */
#define DB_RECONNECT_TRIES 30
#define DB_BACKOFF_BASE_MS 200
#define DB_BACKOFF_MAX_MS 5000

struct sweep;
struct job;

/* A connection that commits pages, and the job whose page it is committing. */
struct writer_slot {
	struct db *db;
	struct job *job; /* NULL when idle, or when the job was released meanwhile */
};

enum job_state {
	JOB_IDLE,
	JOB_FETCHING,	/* a request is in flight */
	JOB_WAITING,	/* backing off before retrying the page */
	JOB_COMMITTING, /* the page is queued for the writer or being committed */
};

/* One user's listing in progress. */
struct job {
	struct sweep *sw;
	enum job_state state;
	size_t service_index;
	const char *service_sid;
	const char *user;
	char user_esc[160]; /* for log lines */
	char *url;	    /* the page being fetched */
	char *first_url;    /* the listing's first page */
	bool first_page;    /* url is the listing's first page */
	bool restarted;	    /* already restarted from page 1 once */
	unsigned page_no;   /* 1-based number of the page being fetched */
	unsigned attempts;  /* retries spent on this page */
	struct timespec retry_at;
	unsigned requests; /* not yet counted in the run */
	unsigned retries;  /* not yet counted in the run */
	unsigned rejected;
	char *pending_next; /* while committing: the page's next_page_url, NULL on the last */
	char known_digest[33]; /* the digest of the user's last one-page listing, or "" */
	bool sent_unchanged;   /* the writer was told the listing is unchanged, without rows */
	uint64_t *fetched;  /* hashes of the pages fetched in this listing */
	size_t n_fetched;
	struct page_parser *parser;
	struct page_batch *batch;
};

struct sweep {
	const struct settings *s;
	struct db *db;
	struct writer_slot *writers; /* commit pages asynchronously, one each at a time */
	size_t n_writers;
	struct http *http;
	const volatile sig_atomic_t *stop;
	int64_t run_id;
	size_t next_service, next_user;
	struct job *jobs;
	size_t n_jobs;
	bool db_lost;
	bool auth_failed;
	unsigned uncounted_requests, uncounted_retries; /* of pages that were dropped */
	uint64_t rng;
	const struct sweep_hooks *hooks;
	struct metrics *metrics;
	struct pacer pacer;
	struct sweep_progress progress;
	bool *service_failed; /* per configured service, in this process's part of the sweep */
	struct job **queue;   /* jobs whose page waits for a writer, oldest first */
	size_t queued;
	struct cursor_position ahead[LOOKAHEAD]; /* of the next users of one service */
	size_t ahead_service, ahead_user;	  /* ahead[0] is that user's */
	size_t ahead_n;
	double stop_seen_ms;	/* when the sweep first saw *stop; 0 before */
	bool commits_cancelled; /* after the stop's grace period */
};

static const char *const known_statuses[] = {"joined", "invited", "not_participating"};

static bool
status_known(const char *status)
{
	for (size_t i = 0; i < sizeof(known_statuses) / sizeof(known_statuses[0]); i++) {
		if (strcmp(status, known_statuses[i]) == 0)
			return true;
	}
	return false;
}

static bool
on_row(void *arg, const struct membership *m, const char *reject)
{
	struct job *j = arg;
	char esc[128];

	if (reject != NULL) {
		j->rejected++;
		log_warning("service %s user \"%s\" page %u: rejected an entry: %s (channel_sid \"%s\")",
			    j->service_sid, j->user_esc, j->page_no, reject,
			    log_escape(esc, sizeof(esc), m->channel_sid));
		return true;
	}
	if (m->status != NULL && !status_known(m->status))
		log_warning("service %s user \"%s\" page %u: channel %s has unexpected status \"%s\"",
			    j->service_sid, j->user_esc, j->page_no, m->channel_sid,
			    log_escape(esc, sizeof(esc), m->status));
	page_batch_add(j->batch, m);
	return true;
}

static bool
on_body(void *arg, const char *data, size_t len)
{
	struct job *j = arg;

	return page_parser_feed(j->parser, data, len);
}

static void on_done(void *arg, const struct http_result *res);

static bool
job_busy(const struct job *j)
{
	return j->state != JOB_IDLE;
}

/* Does j hold one of the slots that bound the listings in flight? */
static bool
job_holds_slot(const struct job *j)
{
	return j->state != JOB_IDLE && !(j->state == JOB_COMMITTING && j->pending_next == NULL);
}

static void
unqueue(struct sweep *sw, struct job *j)
{
	for (size_t i = 0; i < sw->queued; i++) {
		if (sw->queue[i] == j) {
			memmove(&sw->queue[i], &sw->queue[i + 1], (sw->queued - i - 1) * sizeof(j));
			sw->queued--;
			return;
		}
	}
}

/* Ends the job's part in this sweep; what it has not counted yet is kept for the run. */
static void
job_release(struct job *j)
{
	j->sw->uncounted_requests += j->requests;
	j->sw->uncounted_retries += j->retries;
	j->requests = j->retries = 0;
	if (j->state == JOB_COMMITTING) {
		unqueue(j->sw, j);
		for (size_t i = 0; i < j->sw->n_writers; i++) {
			if (j->sw->writers[i].job == j)
				j->sw->writers[i].job = NULL; /* its result is read and dropped */
		}
	}
	free(j->url);
	free(j->first_url);
	free(j->pending_next);
	j->url = j->first_url = j->pending_next = NULL;
	j->n_fetched = 0;
	j->state = JOB_IDLE;
}

static uint64_t
url_hash(const char *url)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (const unsigned char *p = (const unsigned char *)url; *p != '\0'; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return h;
}

static void
remember_fetched(struct job *j, const char *url)
{
	if (j->n_fetched < LOOP_MEMORY)
		j->fetched[j->n_fetched++] = url_hash(url);
}

static bool
already_fetched(const struct job *j, const char *url)
{
	uint64_t h = url_hash(url);

	for (size_t i = 0; i < j->n_fetched; i++) {
		if (j->fetched[i] == h)
			return true;
	}
	return false;
}

static void
now_monotonic(struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
}

static long
ms_until(const struct timespec *t)
{
	struct timespec now;

	now_monotonic(&now);
	return (t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec) / 1000000;
}

static void
fail_user(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
fail_user(struct job *j, const char *fmt, ...)
{
	struct sweep *sw = j->sw;
	char reason[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	log_warning("service %s user \"%s\": %s", j->service_sid, j->user_esc, reason);
	sw->service_failed[j->service_index] = true;
	metrics_user_done(sw->metrics, j->service_sid, false);
	if (cursor_fail(sw->db, sw->run_id, j->service_sid, j->user, reason, j->requests,
			j->retries))
		j->requests = j->retries = 0;
	else if (!db_alive(sw->db))
		sw->db_lost = true;
	job_release(j);
}

static double
now_ms(void)
{
	struct timespec ts;

	now_monotonic(&ts);
	return (double)ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void
wait_before_fetch(struct job *j, long delay_ms)
{
	now_monotonic(&j->retry_at);
	j->retry_at.tv_sec += delay_ms / 1000;
	j->retry_at.tv_nsec += (delay_ms % 1000) * 1000000;
	if (j->retry_at.tv_nsec >= 1000000000) {
		j->retry_at.tv_sec++;
		j->retry_at.tv_nsec -= 1000000000;
	}
	j->state = JOB_WAITING;
}

static void
fetch_page(struct job *j)
{
	const struct settings *s = j->sw->s;
	long wait;

	if (j->page_no > (unsigned)s->max_pages) {
		fail_user(j, "listing has more than %d pages (limits.max_pages)", s->max_pages);
		return;
	}
	wait = pacer_take(&j->sw->pacer, now_ms());
	if (wait > 0) {
		/* twilio.max_rps: this request waits for its turn. */
		wait_before_fetch(j, wait);
		return;
	}
	remember_fetched(j, j->url);
	page_parser_reset(j->parser);
	page_batch_reset(j->batch);
	j->rejected = 0;
	j->state = JOB_FETCHING;
	if (!http_get(j->sw->http, j->url, on_body, on_done, j)) {
		/* Logged by http; the next sweep resumes from the same cursor. */
		job_release(j);
	}
}

static bool may_start_work(const struct sweep *sw);

/* A commit on wdb failed: the database is gone (the page is fetched again later), or the page was refused. */
static void
commit_failed(struct job *j, struct db *wdb, const char *why)
{
	if (*j->sw->stop) {
		job_release(j); /* cancelled, or cut short by the stop: fetched again next time */
		return;
	}
	if (!db_alive(wdb)) {
		j->sw->db_lost = true;
		job_release(j);
		return;
	}
	fail_user(j, "could not store page %u: %s", j->page_no, why);
}

/* Hands the oldest queued pages to the writers that are free. */
static void
pump_writers(struct sweep *sw)
{
	for (size_t w = 0; w < sw->n_writers && sw->queued > 0 && !sw->db_lost && !*sw->stop; w++) {
		struct writer_slot *ws = &sw->writers[w];
		struct job *j = sw->queue[0];
		struct writer_page page = {
			.run_id = sw->run_id,
			.service_sid = j->service_sid,
			.user = j->user,
			.first_page = j->first_page,
			.next_url = j->pending_next,
			.rejected = j->rejected,
			.requests = j->requests,
			.retries = j->retries,
		};

		bool whole = j->first_page && j->pending_next == NULL; /* a one-page listing */
		char digest[33];
		bool sent;

		if (db_busy(ws->db))
			continue;
		unqueue(sw, j);
		if (whole) {
			page_batch_digest(j->batch, digest);
			page.digest = digest;
		}
		/* Equal to the last one-page listing applied: the table already holds it. */
		j->sent_unchanged = whole && strcmp(digest, j->known_digest) == 0;
		if (j->sent_unchanged)
			sent = writer_send_unchanged(ws->db, j->batch, &page);
		else
			sent = writer_send_page(ws->db, j->batch, &page);
		if (sent)
			ws->job = j;
		else
			commit_failed(j, ws->db, db_last_error(ws->db));
	}
}

/* The writer committed j's page: move on to the next page, or finish. */
static void
page_committed(struct job *j, const struct writer_counts *counts)
{
	struct sweep *sw = j->sw;

	sw->progress.pages++;
	metrics_page(sw->metrics, j->service_sid, (long)(page_batch_rows(j->batch) + j->rejected),
		     counts->inserted, counts->updated, counts->unchanged, counts->deleted,
		     j->rejected);
	j->requests = j->retries = 0;
	log_debug("service %s user \"%s\" page %u: %zu rows, %ld inserted, %ld updated, "
		  "%ld unchanged, %ld deleted, %u rejected",
		  j->service_sid, j->user_esc, j->page_no, page_batch_rows(j->batch),
		  counts->inserted, counts->updated, counts->unchanged, counts->deleted, j->rejected);
	if (j->pending_next == NULL) {
		metrics_user_done(sw->metrics, j->service_sid, true);
		job_release(j);
		return;
	}
	if (!may_start_work(sw)) {
		job_release(j);
		return;
	}
	free(j->url);
	j->url = j->pending_next;
	j->pending_next = NULL;
	j->first_page = false;
	j->page_no++;
	j->attempts = 0;
	fetch_page(j);
}

/* Reads ws's result if it has come (or waits for it). */
static void
poll_writer(struct sweep *sw, struct writer_slot *ws, bool wait)
{
	struct writer_counts counts;
	struct job *j;
	PGresult *res;
	char why[256];
	bool committed, applied = true;

	if (!db_collect(ws->db, wait, &res))
		return;
	j = ws->job;
	ws->job = NULL;
	if (j == NULL) {
		PQclear(res); /* the job was released meanwhile */
		return;
	}
	if (j->sent_unchanged)
		committed = writer_unchanged_result(ws->db, res, &applied, &counts);
	else
		committed = writer_page_result(ws->db, res, &counts);
	if (committed && !applied) {
		/* The cursor's digest changed meanwhile: send the page whole, first. */
		j->known_digest[0] = '\0';
		memmove(&sw->queue[1], &sw->queue[0], sw->queued * sizeof(j));
		sw->queue[0] = j;
		sw->queued++;
	} else if (committed) {
		j->state = JOB_FETCHING; /* leaves the commit states before moving on */
		page_committed(j, &counts);
	} else {
		snprintf(why, sizeof(why), "%s", db_last_error(ws->db));
		commit_failed(j, ws->db, why);
	}
}

/* Reads the results that have come (or, with wait, all of them), and feeds the writers. */
static void
poll_writers(struct sweep *sw, bool wait)
{
	for (size_t i = 0; i < sw->n_writers; i++) {
		if (db_busy(sw->writers[i].db))
			poll_writer(sw, &sw->writers[i], wait);
	}
	pump_writers(sw);
}

/* The sockets of the writers that wait for a result; returns how many. */
static size_t
busy_writer_sockets(const struct sweep *sw, int *fds)
{
	size_t n = 0;

	for (size_t i = 0; i < sw->n_writers; i++) {
		if (db_busy(sw->writers[i].db))
			fds[n++] = db_socket(sw->writers[i].db);
	}
	return n;
}

/* Checks the next page's URL before the page is committed. */
static bool
next_url_ok(struct job *j, const char *next)
{
	char esc[256];

	if (next == NULL)
		return true;
	if (!url_same_listing(next, j->first_url)) {
		fail_user(j, "page %u: refusing next_page_url \"%s\": not this user's listing at %s",
			  j->page_no, log_escape(esc, sizeof(esc), next), j->sw->s->base_url);
		return false;
	}
	if (already_fetched(j, next)) {
		fail_user(j, "page %u: next_page_url \"%s\" repeats a page of this listing (a loop)",
			  j->page_no, log_escape(esc, sizeof(esc), next));
		return false;
	}
	return true;
}

/* A page arrived whole: check it, store it, move on. */
static void
page_received(struct job *j)
{
	const char *next;

	if (!page_parser_finish(j->parser)) {
		fail_user(j, "could not parse page %u: %s", j->page_no, page_parser_error(j->parser));
		return;
	}
	next = page_parser_next_url(j->parser);
	/* The API may name this page differently from the URL we asked for. */
	if (page_parser_self_url(j->parser) != NULL)
		remember_fetched(j, page_parser_self_url(j->parser));
	if (!next_url_ok(j, next))
		return;
	free(j->pending_next);
	j->pending_next = xstrdup(next);
	j->state = JOB_COMMITTING;
	j->sw->queue[j->sw->queued++] = j;
	pump_writers(j->sw);
}

static bool
retryable(const struct http_result *res)
{
	return res->transport_error || res->status == 429 || (res->status >= 500 && res->status < 600);
}

static void
schedule_retry(struct job *j, const struct http_result *res)
{
	const struct settings *s = j->sw->s;
	long delay = backoff_delay_ms(++j->attempts, s->backoff_base_ms, s->max_backoff * 1000L,
				      res->retry_after, &j->sw->rng);

	j->retries++;
	metrics_retry(j->sw->metrics, res->status);
	if (res->status == 429 && pacer_throttled(&j->sw->pacer, now_ms()))
		log_info("the API is throttling: at most %u users in flight for now",
			 j->sw->pacer.limit);
	log_info("service %s user \"%s\" page %u: %s; retry %u of %d in %.1f s", j->service_sid,
		 j->user_esc, j->page_no, res->error, j->attempts, s->max_retries, delay / 1000.0);
	wait_before_fetch(j, delay);
}

/* The API refused a resumed page URL (expired page token): list again from page 1, once. */
static void
restart_listing(struct job *j, const struct http_result *res)
{
	log_warning("service %s user \"%s\" page %u: %s for a resumed page; restarting the listing "
		    "from page 1",
		    j->service_sid, j->user_esc, j->page_no, res->error);
	j->restarted = true;
	free(j->url);
	j->url = xstrdup(j->first_url);
	j->first_page = true;
	j->page_no = 1;
	j->attempts = 0;
	j->n_fetched = 0;
	fetch_page(j);
}

static void
auth_failed(struct job *j, const struct http_result *res)
{
	struct sweep *sw = j->sw;

	log_error("authentication failed (%s): check twilio.account_sid and the auth token; "
		  "stopping this sweep",
		  res->error);
	sw->auth_failed = true;
	sw->service_failed[j->service_index] = true;
	/* Not this user's fault: the sweep stays open and tries it again first. */
	if (!cursor_note_error(sw->db, sw->run_id, j->service_sid, j->user, "authentication failed") &&
	    !db_alive(sw->db))
		sw->db_lost = true;
	job_release(j);
}

static void
on_done(void *arg, const struct http_result *res)
{
	struct job *j = arg;
	const struct settings *s = j->sw->s;

	j->requests++;
	if (!res->aborted)
		metrics_http_response(j->sw->metrics, res->transport_error ? 0 : res->status);
	if (*j->sw->stop || j->sw->db_lost || j->sw->auth_failed)
		job_release(j);
	else if (res->status >= 200 && res->status < 300 && !res->transport_error && !res->aborted) {
		pacer_success(&j->sw->pacer);
		page_received(j);
	}
	else if (res->aborted && page_parser_error(j->parser)[0] != '\0')
		fail_user(j, "could not parse page %u: %s", j->page_no, page_parser_error(j->parser));
	else if (res->status == 401 || res->status == 403)
		auth_failed(j, res);
	else if (retryable(res) && j->attempts < (unsigned)s->max_retries)
		schedule_retry(j, res);
	else if (retryable(res))
		fail_user(j, "could not fetch page %u after %u retries: %s", j->page_no, j->attempts,
			  res->error);
	else if ((res->status == 400 || res->status == 404) && !j->first_page && !j->restarted)
		restart_listing(j, res);
	else if (res->status == 404 && j->page_no == 1)
		fail_user(j, "user not found: could not fetch page 1: %s", res->error);
	else
		fail_user(j, "could not fetch page %u: %s", j->page_no, res->error);
}

/* Forgets the cursors read ahead. */
static void
drop_lookahead(struct sweep *sw)
{
	for (size_t i = 0; i < sw->ahead_n; i++)
		free(sw->ahead[i].next_url);
	sw->ahead_n = 0;
}

/*
 * The cursor of user user_index of service service_index (its next_url is
 * then the caller's).  Users start in order, so when it is not at hand the
 * cursors of that user and the next LOOKAHEAD - 1 are read in one query: no
 * one else moves them before they start.
 */
static bool
user_position(struct sweep *sw, size_t service_index, size_t user_index,
	      struct cursor_position *out)
{
	const struct settings_service *svc = &sw->s->services[service_index];
	struct cursor_position *p;

	if (sw->ahead_n == 0 || sw->ahead_service != service_index || user_index < sw->ahead_user ||
	    user_index >= sw->ahead_user + sw->ahead_n) {
		size_t n = svc->n_users - user_index < LOOKAHEAD ? svc->n_users - user_index : LOOKAHEAD;

		drop_lookahead(sw);
		if (!cursor_positions(sw->db, sw->run_id, svc->sid,
				      (const char *const *)&svc->users[user_index], n, sw->ahead))
			return false;
		sw->ahead_service = service_index;
		sw->ahead_user = user_index;
		sw->ahead_n = n;
	}
	p = &sw->ahead[user_index - sw->ahead_user];
	*out = *p;
	p->next_url = NULL;
	return true;
}

/* Starts a user's listing on j, or returns false if it has nothing to do now. */
static bool
start_user(struct job *j, size_t service_index, size_t user_index)
{
	struct sweep *sw = j->sw;
	const char *service_sid = sw->s->services[service_index].sid;
	const char *user = sw->s->services[service_index].users[user_index];
	struct cursor_position pos;

	if (!user_position(sw, service_index, user_index, &pos)) {
		sw->db_lost = !db_alive(sw->db);
		return false;
	}
	if (pos.start == CURSOR_SKIP)
		return false;
	j->service_index = service_index;
	j->service_sid = service_sid;
	j->user = user;
	log_escape(j->user_esc, sizeof(j->user_esc), user);
	j->first_url = url_first_page(sw->s->base_url, service_sid, user, sw->s->page_size);
	j->first_page = pos.start == CURSOR_FIRST_PAGE;
	j->url = j->first_page ? xstrdup(j->first_url) : pos.next_url;
	j->page_no = pos.pages_done + 1;
	memcpy(j->known_digest, pos.digest, sizeof(j->known_digest));
	j->requests = j->retries = j->attempts = 0;
	j->restarted = false;
	j->n_fetched = 0;
	if (!j->first_page)
		log_info("service %s user \"%s\": resuming at page %u", service_sid, j->user_esc,
			 j->page_no);
	sw->progress.users_started++;
	fetch_page(j);
	return true;
}

static bool
may_start_work(const struct sweep *sw)
{
	return !*sw->stop && !sw->db_lost && !sw->auth_failed;
}

static size_t
slots_taken(const struct sweep *sw)
{
	size_t n = 0;

	for (size_t i = 0; i < sw->n_jobs; i++)
		n += job_holds_slot(&sw->jobs[i]);
	return n;
}

/* Gives idle jobs the next users that have work, while slots are free (up to the pacer's limit). */
static void
fill_jobs(struct sweep *sw)
{
	const struct settings *s = sw->s;
	size_t busy = slots_taken(sw);

	for (size_t i = 0; i < sw->n_jobs && busy < sw->pacer.limit; i++) {
		struct job *j = &sw->jobs[i];

		while (!job_busy(j) && may_start_work(sw) && sw->next_service < s->n_services) {
			size_t service_index = sw->next_service, user_index = sw->next_user;

			if (++sw->next_user == s->services[service_index].n_users) {
				sw->next_user = 0;
				sw->next_service++;
			}
			if (start_user(j, service_index, user_index))
				busy += job_holds_slot(j);
		}
	}
}

/* Sends the retries whose backoff is over; returns ms until the next one (or max_ms). */
static long
run_due_retries(struct sweep *sw, long max_ms)
{
	long next = max_ms;

	for (size_t i = 0; i < sw->n_jobs; i++) {
		struct job *j = &sw->jobs[i];
		long wait;

		if (j->state != JOB_WAITING)
			continue;
		if (!may_start_work(sw)) {
			job_release(j);
			continue;
		}
		wait = ms_until(&j->retry_at);
		if (wait <= 0)
			fetch_page(j);
		else if (wait < next)
			next = wait;
	}
	return next;
}

static bool
any_busy(const struct sweep *sw)
{
	for (size_t i = 0; i < sw->n_jobs; i++) {
		if (job_busy(&sw->jobs[i]))
			return true;
	}
	return false;
}

static void
tick(struct sweep *sw)
{
	if (sw->hooks != NULL && sw->hooks->tick != NULL)
		sw->hooks->tick(sw->hooks->arg, &sw->progress);
}

/* Waits out a backoff in short naps, so a stop request is seen at once. */
static void
nap(struct sweep *sw, long ms)
{
	while (ms > 0 && !*sw->stop) {
		long step = ms < 100 ? ms : 100;
		struct timespec ts = {0, step * 1000000L};

		nanosleep(&ts, NULL);
		ms -= step;
		tick(sw);
	}
}

/* Is this job's page on a writer (sent, its result not read yet)? */
static bool
on_a_writer(const struct sweep *sw, const struct job *j)
{
	for (size_t i = 0; i < sw->n_writers; i++) {
		if (sw->writers[i].job == j)
			return true;
	}
	return false;
}

/*
 * The database is lost or a stop was asked for: drops the pages that wait
 * for a writer and the retries that wait for their turn.  Pages on a writer
 * are let finish, so that whatever they committed is known before anything
 * is read again.
 */
static void
abandon_jobs(struct sweep *sw)
{
	for (size_t i = 0; i < sw->n_jobs; i++) {
		struct job *j = &sw->jobs[i];

		if (j->state == JOB_WAITING || (j->state == JOB_COMMITTING && !on_a_writer(sw, j)))
			job_release(j);
	}
}

/* Reconnects c if a round trip fails; a live connection (and its lock) is kept. */
static bool
revive(struct db *c)
{
	return db_alive(c) || db_reconnect(c);
}

/*
 * The database went away mid-sweep, and no page is on a writer any more:
 * whatever was uncommitted is rolled back.  Reconnect with backoff, then go
 * over the users again: the cursors say who is done and where each listing
 * stands.
 */
static bool
recover_database(struct sweep *sw)
{
	log_warning("lost the database connection; uncommitted pages will be fetched again");
	for (unsigned attempt = 1; attempt <= DB_RECONNECT_TRIES && !*sw->stop; attempt++) {
		nap(sw, backoff_delay_ms(attempt, DB_BACKOFF_BASE_MS, DB_BACKOFF_MAX_MS, -1, &sw->rng));
		if (*sw->stop)
			break;
		bool up = revive(sw->db);

		for (size_t i = 0; up && i < sw->n_writers; i++)
			up = revive(sw->writers[i].db);
		if (up) {
			metrics_db_reconnect(sw->metrics);
			drop_lookahead(sw); /* read again: the cursors may have moved */
			sw->db_lost = false;
			sw->next_service = sw->next_user = 0;
			return true;
		}
	}
	log_error("could not reconnect to the database after %d attempts", DB_RECONNECT_TRIES);
	return false;
}

static void
log_totals(const struct run_totals *t, double seconds)
{
	log_info("sweep finished in %.1f s: %ld users ok, %ld failed, %ld pages, %ld rows received, "
		 "%ld inserted, %ld updated, %ld unchanged, %ld deleted, %ld rejected, "
		 "%ld requests, %ld retries",
		 seconds, t->users_ok, t->users_failed, t->pages, t->received, t->inserted,
		 t->updated, t->unchanged, t->deleted, t->rejected, t->requests, t->retries);
}

/* Tells the metrics which services had every user succeed in this sweep. */
static void
report_services(struct sweep *sw, double seconds, long users_failed)
{
	const char **ok = xcalloc(sw->s->n_services, sizeof(char *));
	size_t n_ok = 0;

	for (size_t i = 0; i < sw->s->n_services; i++) {
		if (!sw->service_failed[i])
			ok[n_ok++] = sw->s->services[i].sid;
	}
	metrics_sweep_finished(sw->metrics, seconds, users_failed, ok, n_ok);
	free(ok);
}

static enum sweep_result
finish(struct sweep *sw, const struct timespec *t0)
{
	struct run_totals totals;
	struct timespec t1;
	double seconds;

	if (*sw->stop || sw->auth_failed || sw->db_lost ||
	    !cursor_finish_run(sw->db, sw->run_id, sw->uncounted_requests, sw->uncounted_retries,
			       &totals)) {
		metrics_sweep_stopped(sw->metrics);
		if (*sw->stop)
			return SWEEP_INTERRUPTED;
		return sw->auth_failed ? SWEEP_AUTH_FAILED : SWEEP_DB_FAILED;
	}
	now_monotonic(&t1);
	seconds = (double)(t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
	log_totals(&totals, seconds);
	report_services(sw, seconds, totals.users_failed);
	return totals.users_failed > 0 ? SWEEP_USERS_FAILED : SWEEP_OK;
}

static void
jobs_init(struct sweep *sw)
{
	const struct settings *s = sw->s;
	const struct page_parser_limits limits = {
		.max_bytes = (size_t)s->max_body,
		.max_string = (size_t)s->max_string,
		.max_depth = (unsigned)s->max_depth,
		.max_rows = MAX_ROWS_PER_PAGE,
	};

	sw->n_jobs = (size_t)s->concurrency + COMMIT_JOBS(s->concurrency);
	sw->jobs = xcalloc(sw->n_jobs, sizeof(struct job));
	for (size_t i = 0; i < sw->n_jobs; i++) {
		struct job *j = &sw->jobs[i];

		j->sw = sw;
		j->parser = page_parser_new(&limits, on_row, j);
		j->batch = page_batch_new();
		j->fetched = xcalloc(LOOP_MEMORY, sizeof(uint64_t));
	}
}

static void
jobs_free(struct sweep *sw)
{
	for (size_t i = 0; i < sw->n_jobs; i++) {
		job_release(&sw->jobs[i]);
		page_parser_free(sw->jobs[i].parser);
		page_batch_free(sw->jobs[i].batch);
		free(sw->jobs[i].fetched);
	}
	free(sw->jobs);
}

/*
 * A stop was asked for: pages being committed are let finish for
 * STOP_GRACE_MS, then their statements are cancelled (they roll back, and
 * the pages are fetched again next time), so that a commit stuck on a lock
 * does not hold up the stop.
 */
static void
cancel_slow_commits(struct sweep *sw)
{
	if (sw->stop_seen_ms == 0) {
		sw->stop_seen_ms = now_ms();
		return;
	}
	if (sw->commits_cancelled || now_ms() - sw->stop_seen_ms < STOP_GRACE_MS)
		return;
	for (size_t i = 0; i < sw->n_writers; i++) {
		if (db_busy(sw->writers[i].db)) {
			log_info("stopping: cancelling a commit still running after %d ms", STOP_GRACE_MS);
			db_cancel(sw->writers[i].db);
		}
	}
	sw->commits_cancelled = true;
}

enum sweep_result
sweep_run(const struct settings *s, struct db *db, struct db *const *writers, size_t n_writers,
	  struct http *http, const volatile sig_atomic_t *stop, const struct sweep_hooks *hooks)
{
	struct sweep sw = {.s = s, .db = db, .http = http, .stop = stop, .hooks = hooks};
	int fds[HTTP_MAX_EXTRA_FDS];
	enum sweep_result result;
	struct timespec t0;
	bool resumed;

	if (n_writers > HTTP_MAX_EXTRA_FDS)
		n_writers = HTTP_MAX_EXTRA_FDS;
	sw.writers = xcalloc(n_writers, sizeof(*sw.writers));
	for (size_t i = 0; i < n_writers; i++)
		sw.writers[i].db = writers[i];
	sw.n_writers = n_writers;

	sw.metrics = hooks != NULL ? hooks->metrics : NULL;
	pacer_init(&sw.pacer, (unsigned)s->concurrency, s->max_rps, now_ms());
	now_monotonic(&t0);
	sw.rng = (uint64_t)t0.tv_nsec ^ ((uint64_t)getpid() << 32);
	if (!cursor_begin_run(db, &sw.run_id, &resumed)) {
		free(sw.writers);
		return SWEEP_DB_FAILED;
	}
	sw.progress.run_id = sw.run_id;
	sw.progress.users_total = settings_user_count(s);
	log_info("%s sweep %" PRId64 " over %zu users", resumed ? "resuming" : "starting", sw.run_id,
		 sw.progress.users_total);
	jobs_init(&sw);
	sw.service_failed = xcalloc(s->n_services, sizeof(bool));
	sw.queue = xcalloc(sw.n_jobs, sizeof(struct job *));
	metrics_sweep_started(sw.metrics);
	for (;;) {
		size_t n_fds;
		long wait;

		if (*stop)
			cancel_slow_commits(&sw);
		if (sw.db_lost || *stop)
			abandon_jobs(&sw);
		if (sw.db_lost && !*stop && http_pending(http) == 0 &&
		    busy_writer_sockets(&sw, fds) == 0 && !recover_database(&sw))
			break;
		fill_jobs(&sw);
		pump_writers(&sw);
		wait = run_due_retries(&sw, 200);
		n_fds = busy_writer_sockets(&sw, fds);
		if (!any_busy(&sw) && http_pending(http) == 0 && n_fds == 0 &&
		    !(sw.db_lost && !*stop))
			break;
		http_run(http, (int)(wait > 0 ? wait : 0), fds, n_fds);
		if (n_fds > 0)
			poll_writers(&sw, false);
		tick(&sw);
	}
	/* Commits still in flight (after a stop) are let finish, so the connections are idle. */
	while (busy_writer_sockets(&sw, fds) > 0)
		poll_writers(&sw, true);
	result = finish(&sw, &t0);
	jobs_free(&sw);
	drop_lookahead(&sw);
	free(sw.service_failed);
	free(sw.queue);
	free(sw.writers);
	return result;
}
