/*
 * sweep.c - one sweep over every configured user
 *
 * Up to twilio.concurrency users are listed at once.  Each job walks one
 * user's pages: fetch, parse as the body streams in, commit the page with
 * the cursor's advance, follow next_page_url.  A failure ends that user's
 * part of the sweep (recorded on its cursor) and the sweep goes on.
 */
#include "config.h"

#include "sweep.h"

#include "cursor.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "mem.h"
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

#define MAX_BODY (16u << 20)
#define MAX_STRING 8192
#define MAX_DEPTH 32
#define MAX_ROWS_PER_PAGE 1000

struct sweep;

struct job {
	struct sweep *sw;
	bool busy;
	const char *service_sid;
	const char *user;
	char user_esc[160]; /* for log lines */
	char *url;	    /* the page being fetched */
	char *first_url;    /* the listing's first page */
	bool first_page;
	unsigned page_no; /* 1-based number of the page being fetched */
	unsigned requests;
	unsigned retries;
	unsigned rejected;
	struct page_parser *parser;
	struct page_batch *batch;
};

struct sweep {
	const struct settings *s;
	struct db *db;
	struct http *http;
	const volatile sig_atomic_t *stop;
	int64_t run_id;
	size_t next_service, next_user;
	struct job *jobs;
	size_t n_jobs;
	bool db_failed;
	unsigned uncounted_requests;
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

static void
job_release(struct job *j)
{
	free(j->url);
	free(j->first_url);
	j->url = j->first_url = NULL;
	j->busy = false;
}

static void
fetch_page(struct job *j)
{
	page_parser_reset(j->parser);
	page_batch_reset(j->batch);
	j->rejected = 0;
	if (!http_get(j->sw->http, j->url, on_body, on_done, j)) {
		/* Logged by http; retried at the next sweep from the same cursor. */
		job_release(j);
	}
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
	if (!cursor_fail(sw->db, sw->run_id, j->service_sid, j->user, reason, j->requests,
			 j->retries)) {
		if (!db_connected(sw->db))
			sw->db_failed = true;
		sw->uncounted_requests += j->requests;
	}
	j->requests = j->retries = 0;
	job_release(j);
}

static bool
commit_page(struct job *j, const char *next)
{
	struct writer_page page = {
		.run_id = j->sw->run_id,
		.service_sid = j->service_sid,
		.user = j->user,
		.first_page = j->first_page,
		.next_url = next,
		.rejected = j->rejected,
		.requests = j->requests,
		.retries = j->retries,
	};
	struct writer_counts counts;

	if (!writer_commit_page(j->sw->db, j->batch, &page, &counts))
		return false;
	j->requests = j->retries = 0;
	log_debug("service %s user \"%s\" page %u: %zu rows, %ld inserted, %ld updated, "
		  "%ld unchanged, %ld deleted, %u rejected",
		  j->service_sid, j->user_esc, j->page_no, page_batch_rows(j->batch),
		  counts.inserted, counts.updated, counts.unchanged, counts.deleted, j->rejected);
	return true;
}

/* A page arrived whole: check it, store it, move on. */
static void
page_received(struct job *j)
{
	const char *next;
	char esc[256];

	if (!page_parser_finish(j->parser)) {
		fail_user(j, "could not parse page %u: %s", j->page_no, page_parser_error(j->parser));
		return;
	}
	next = page_parser_next_url(j->parser);
	if (next != NULL && !url_same_listing(next, j->first_url)) {
		fail_user(j, "page %u: refusing next_page_url \"%s\": not this user's listing at %s",
			  j->page_no, log_escape(esc, sizeof(esc), next), j->sw->s->base_url);
		return;
	}
	if (!commit_page(j, next)) {
		if (!db_connected(j->sw->db)) {
			j->sw->db_failed = true;
			job_release(j);
			return;
		}
		fail_user(j, "could not store page %u", j->page_no);
		return;
	}
	if (next == NULL) {
		job_release(j);
		return;
	}
	free(j->url);
	j->url = xstrdup(next);
	j->first_page = false;
	j->page_no++;
	fetch_page(j);
}

static void
on_done(void *arg, const struct http_result *res)
{
	struct job *j = arg;

	j->requests++;
	if (*j->sw->stop || j->sw->db_failed) {
		j->sw->uncounted_requests += j->requests;
		j->requests = 0;
		job_release(j);
		return;
	}
	if (res->status >= 200 && res->status < 300 && !res->transport_error && !res->aborted) {
		page_received(j);
		return;
	}
	if (res->aborted && page_parser_error(j->parser)[0] != '\0') {
		fail_user(j, "could not parse page %u: %s", j->page_no, page_parser_error(j->parser));
		return;
	}
	fail_user(j, "could not fetch page %u: %s", j->page_no, res->error);
}

/* Starts user's listing on j, or returns false if it has nothing to do now. */
static bool
start_user(struct job *j, const char *service_sid, const char *user)
{
	struct sweep *sw = j->sw;
	struct cursor_position pos;

	if (!cursor_position(sw->db, sw->run_id, service_sid, user, &pos)) {
		sw->db_failed = !db_connected(sw->db);
		return false;
	}
	if (pos.start == CURSOR_SKIP)
		return false;
	j->busy = true;
	j->service_sid = service_sid;
	j->user = user;
	log_escape(j->user_esc, sizeof(j->user_esc), user);
	j->first_url = url_first_page(sw->s->base_url, service_sid, user, sw->s->page_size);
	j->first_page = pos.start == CURSOR_FIRST_PAGE;
	j->url = j->first_page ? xstrdup(j->first_url) : pos.next_url;
	j->page_no = pos.pages_done + 1;
	j->requests = j->retries = 0;
	if (!j->first_page)
		log_info("service %s user \"%s\": resuming at page %u", service_sid, j->user_esc,
			 j->page_no);
	fetch_page(j);
	return true;
}

/* Gives idle jobs the next users that have work in this sweep. */
static void
fill_jobs(struct sweep *sw)
{
	const struct settings *s = sw->s;

	for (size_t i = 0; i < sw->n_jobs; i++) {
		struct job *j = &sw->jobs[i];

		while (!j->busy && !*sw->stop && !sw->db_failed && sw->next_service < s->n_services) {
			const struct settings_service *svc = &s->services[sw->next_service];
			const char *user = svc->users[sw->next_user];

			if (++sw->next_user == svc->n_users) {
				sw->next_user = 0;
				sw->next_service++;
			}
			start_user(j, svc->sid, user);
		}
	}
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

static enum sweep_result
finish(struct sweep *sw, const struct timespec *t0)
{
	struct run_totals totals;
	struct timespec t1;

	if (*sw->stop)
		return SWEEP_INTERRUPTED;
	if (sw->db_failed ||
	    !cursor_finish_run(sw->db, sw->run_id, sw->uncounted_requests, 0, &totals))
		return SWEEP_DB_FAILED;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	log_totals(&totals, (double)(t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9);
	return totals.users_failed > 0 ? SWEEP_USERS_FAILED : SWEEP_OK;
}

static void
jobs_init(struct sweep *sw)
{
	const struct page_parser_limits limits = {
		.max_bytes = MAX_BODY,
		.max_string = MAX_STRING,
		.max_depth = MAX_DEPTH,
		.max_rows = MAX_ROWS_PER_PAGE,
	};

	sw->n_jobs = (size_t)sw->s->concurrency;
	sw->jobs = xcalloc(sw->n_jobs, sizeof(struct job));
	for (size_t i = 0; i < sw->n_jobs; i++) {
		sw->jobs[i].sw = sw;
		sw->jobs[i].parser = page_parser_new(&limits, on_row, &sw->jobs[i]);
		sw->jobs[i].batch = page_batch_new();
	}
}

static void
jobs_free(struct sweep *sw)
{
	for (size_t i = 0; i < sw->n_jobs; i++) {
		job_release(&sw->jobs[i]);
		page_parser_free(sw->jobs[i].parser);
		page_batch_free(sw->jobs[i].batch);
	}
	free(sw->jobs);
}

enum sweep_result
sweep_run(const struct settings *s, struct db *db, struct http *http,
	  const volatile sig_atomic_t *stop)
{
	struct sweep sw = {.s = s, .db = db, .http = http, .stop = stop};
	enum sweep_result result;
	struct timespec t0;
	bool resumed;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!cursor_begin_run(db, &sw.run_id, &resumed))
		return SWEEP_DB_FAILED;
	log_info("%s sweep %" PRId64 " over %zu users", resumed ? "resuming" : "starting", sw.run_id,
		 settings_user_count(s));
	jobs_init(&sw);
	for (;;) {
		fill_jobs(&sw);
		if (http_pending(http) == 0)
			break;
		http_run(http, 200);
	}
	result = finish(&sw, &t0);
	jobs_free(&sw);
	return result;
}
