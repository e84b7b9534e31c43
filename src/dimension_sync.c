/*
 * dimension_sync.c - a service's own listings in a sweep, and who its users are
 *
 * One request at a time: the listings are short (a page holds 1000
 * entries) and come before any user's, so nothing else is in flight.  The
 * failure policy is the one of a user's listing (see listing.c): retry
 * throttling and server errors with backoff, restart a resumed listing
 * whose page the API no longer knows, stop the sweep on refused
 * credentials, and record anything else as the listing's failure.
 */
#include "config.h"

#include "dimension_sync.h"

#include "backoff.h"
#include "clock.h"
#include "cursor.h"
#include "db.h"
#include "dimension.h"
#include "http.h"
#include "listing.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "page_batch.h"
#include "page_parser.h"
#include "settings.h"
#include "store.h"
#include "url.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The API never sends more than 1000 entries a page (PageSize's maximum). */
#define MAX_ROWS_PER_PAGE 1000

/* Pages of one listing remembered to detect a next_page_url loop. */
#define LOOP_MEMORY 1024

/* The longest wait for the transfer in one turn, between ticks. */
#define TURN_MS 100

enum fetch_outcome {
	FETCH_OK,
	FETCH_FAILED,  /* the listing fails: reason and kind say why */
	FETCH_RESTART, /* a resumed page the API no longer knows: list again from page 1 */
	FETCH_STOPPED, /* the sweep cannot go on (stop, credentials) */
};

struct dimension_listing {
	struct sweep_state *st;
	enum dimension d;
	const char *service_sid;
	void (*tick)(void *arg);
	void *tick_arg;
	struct page_parser *parser;
	struct page_batch *batch;
	struct url_seen *fetched;
	unsigned page_no;
	unsigned requests, retries; /* not yet counted in the run */
	unsigned rejected;
	unsigned drift_logged;
	bool done; /* the transfer ended; res says how */
	struct http_result res;
	char reason[512];
	char kind[24];
};

static void
tick(struct dimension_listing *l)
{
	if (l->tick != NULL)
		l->tick(l->tick_arg);
}

/* Waits ms in short turns, so a stop is heard and the watchdog fed. */
static void
pause_ms(struct dimension_listing *l, long ms)
{
	while (ms > 0 && !*l->st->stop) {
		long step = ms < TURN_MS ? ms : TURN_MS;
		struct timespec ts = {0, step * 1000000L};

		nanosleep(&ts, NULL);
		ms -= step;
		tick(l);
	}
}

static void
log_drift(struct dimension_listing *l, const char *sid, unsigned drifted)
{
	const struct page_schema *schema = dimension_schema(l->d);
	unsigned fresh = drifted & ~l->drift_logged;

	for (unsigned i = 0; i < schema->n_fields; i++) {
		if ((fresh & (1u << i)) == 0)
			continue;
		log_warning("service %s %s listing page %u: %s: %s has an unexpected type or "
			    "value; stored as NULL (not logged again in this listing)",
			    l->service_sid, dimension_name(l->d), l->page_no, sid,
			    schema->fields[i].name);
	}
	l->drift_logged |= drifted;
}

static bool
on_entry(void *arg, const struct page_entry *e, const char *reject)
{
	struct dimension_listing *l = arg;
	unsigned drifted;
	char esc[128];

	if (reject == NULL && l->d == DIMENSION_SERVICE && strcmp(e->str[0], l->service_sid) != 0)
		reject = "sid is not the service asked for";
	if (reject != NULL) {
		l->rejected++;
		log_warning("service %s %s listing page %u: rejected an entry: %s (sid \"%s\")",
			    l->service_sid, dimension_name(l->d), l->page_no, reject,
			    log_escape(esc, sizeof(esc), e->str[0]));
		return true;
	}
	if (!dimension_batch_add(l->d, l->batch, e, l->st->s->store_attributes, &drifted))
		return false;
	if ((drifted & ~l->drift_logged) != 0)
		log_drift(l, e->str[0], drifted);
	return true;
}

static bool
on_body(void *arg, const char *data, size_t len)
{
	struct dimension_listing *l = arg;

	return page_parser_feed(l->parser, data, len);
}

static void
on_done(void *arg, const struct http_result *res)
{
	struct dimension_listing *l = arg;

	l->res = *res;
	l->done = true;
}

static enum fetch_outcome failed(struct dimension_listing *l, const char *kind, const char *fmt,
				 ...) __attribute__((format(printf, 3, 4)));

static enum fetch_outcome
failed(struct dimension_listing *l, const char *kind, const char *fmt, ...)
{
	va_list ap;

	snprintf(l->kind, sizeof(l->kind), "%s", kind);
	va_start(ap, fmt);
	vsnprintf(l->reason, sizeof(l->reason), fmt, ap);
	va_end(ap);
	return FETCH_FAILED;
}

/* One request for url, to its end; false if it could not start. */
static bool
get(struct dimension_listing *l, const char *url)
{
	struct sweep_state *st = l->st;
	char why[256];

	page_parser_reset(l->parser);
	page_batch_reset(l->batch);
	l->rejected = 0;
	l->done = false;
	if (!http_get(st->http, url, on_body, on_done, l, why, sizeof(why))) {
		failed(l, "transport", "could not start a request for page %u: %s", l->page_no,
		       why);
		return false;
	}
	while (!l->done) {
		if (!http_run(st->http, TURN_MS, NULL, 0, why, sizeof(why))) {
			log_warning("waiting for the transfer failed: %s", why);
			pause_ms(l, TURN_MS);
		}
		tick(l);
	}
	l->requests++;
	if (!l->res.aborted)
		metrics_http_response(st->metrics, l->res.transport_error ? 0 : l->res.status);
	return true;
}

static bool
retryable(const struct http_result *res)
{
	return res->transport_error || res->status == 429 ||
	       (res->status >= 500 && res->status < 600);
}

/* Fetches and parses a page, retrying as a user's listing does. */
static enum fetch_outcome
fetch(struct dimension_listing *l, const char *url, bool resumed)
{
	struct sweep_state *st = l->st;
	const struct settings *s = st->s;
	const struct http_result *res = &l->res;
	unsigned attempts = 0;

	for (;;) {
		long wait = pacer_take(&st->pacer, clock_now_ms());

		if (wait > 0) {
			pause_ms(l, wait);
			continue;
		}
		if (*st->stop)
			return FETCH_STOPPED;
		if (!get(l, url))
			return FETCH_FAILED;
		if (*st->stop)
			return FETCH_STOPPED;
		if (res->status >= 200 && res->status < 300 && !res->transport_error &&
		    !res->aborted) {
			pacer_success(&st->pacer);
			if (!page_parser_finish(l->parser))
				return failed(l, "parse", "could not parse page %u: %s", l->page_no,
					      page_parser_error(l->parser));
			return FETCH_OK;
		}
		if (res->aborted && page_parser_error(l->parser)[0] != '\0')
			return failed(l, "parse", "could not parse page %u: %s", l->page_no,
				      page_parser_error(l->parser));
		if (res->status == 401 || res->status == 403) {
			log_error("authentication failed (%s): check twilio.account_sid and the "
				  "auth token; stopping this sweep",
				  res->error);
			st->auth_failed = true;
			return FETCH_STOPPED;
		}
		if (retryable(res) && attempts < (unsigned)s->max_retries) {
			long delay = backoff_delay_ms(++attempts, s->backoff_base_ms,
						      s->max_backoff * 1000L, res->retry_after,
						      &st->rng);

			l->retries++;
			metrics_retry(st->metrics, res->status);
			if (res->status == 429)
				(void)pacer_throttled(&st->pacer, clock_now_ms());
			log_info("service %s %s listing page %u: %s; retry %u of %d in %.1f s",
				 l->service_sid, dimension_name(l->d), l->page_no, res->error,
				 attempts, s->max_retries, delay / 1000.0);
			pause_ms(l, delay);
			continue;
		}
		if ((res->status == 400 || res->status == 404) && resumed)
			return FETCH_RESTART;
		if (res->transport_error || res->status == 0)
			snprintf(l->kind, sizeof(l->kind), "transport");
		else
			snprintf(l->kind, sizeof(l->kind), "http %ld", res->status);
		snprintf(l->reason, sizeof(l->reason), "could not fetch page %u%s: %s", l->page_no,
			 retryable(res) ? " after retries" : "", res->error);
		return FETCH_FAILED;
	}
}

/* The listing failed: logged, and recorded on its cursor and in sync_errors. */
static void
record_failure(struct dimension_listing *l)
{
	struct sweep_state *st = l->st;
	const struct cursor_error e = {l->reason, l->kind, l->page_no, l->requests, l->retries};

	log_warning("service %s: the %s listing failed: %s", l->service_sid, dimension_name(l->d),
		    l->reason);
	if (dimension_record_failure(st->db, st->run_id, l->service_sid, l->d, &e)) {
		l->requests = l->retries = 0;
		return;
	}
	if (!db_alive(st->db))
		sweep_state_lost(st, st->db);
	else
		log_error("service %s: could not record the failure of the %s listing: %s",
			  l->service_sid, dimension_name(l->d), db_error(st->db));
}

/* Checks the next page's URL, as a user's listing does; false: the listing fails. */
static bool
next_ok(struct dimension_listing *l, const char *next, const char *first_url)
{
	char esc[256];

	if (next == NULL)
		return true;
	if (!url_same_listing(next, first_url))
		failed(l, "url", "page %u: refusing next_page_url \"%s\": not this listing at %s",
		       l->page_no, log_escape(esc, sizeof(esc), next), l->st->s->base_url);
	else if (url_seen_has(l->fetched, next))
		failed(l, "url", "page %u: next_page_url \"%s\" repeats a page of this listing",
		       l->page_no, log_escape(esc, sizeof(esc), next));
	else
		return true;
	return false;
}

/*
 * Commits the page just parsed; false if the sweep cannot go on (the
 * database is lost, or another chatsyncd has the schema).  *ok false: the
 * listing fails.
 */
static bool
store(struct dimension_listing *l, bool first_page, const char *next, bool *ok)
{
	struct sweep_state *st = l->st;
	const struct dimension_page page = {st->run_id, l->service_sid, first_page,
					    next,	l->requests,	l->retries};
	struct store_counts counts;

	*ok = false;
	if (!dimension_store_page(st->db, l->d, l->batch, &page, &counts)) {
		if (!db_alive(st->db)) {
			sweep_state_lost(st, st->db);
			return false;
		}
		failed(l, "database", "could not store page %u: %s", l->page_no, db_error(st->db));
		return true;
	}
	if (counts.refused) {
		st->fenced_out = true;
		st->db_lost = true;
		return false;
	}
	l->requests = l->retries = 0;
	*ok = true;
	log_debug("service %s %s listing page %u: %zu entries, %ld inserted, %ld updated, "
		  "%ld unchanged, %ld deleted, %u rejected",
		  l->service_sid, dimension_name(l->d), l->page_no, page_batch_rows(l->batch),
		  counts.inserted, counts.updated, counts.unchanged, counts.deleted, l->rejected);
	return true;
}

/* Where the listing starts; false if its cursor cannot be read. */
static bool
start_at(struct dimension_listing *l, const char *first_url, struct cursor_position *pos)
{
	struct sweep_state *st = l->st;
	char esc[256];

	if (!dimension_position(st->db, st->run_id, l->service_sid, l->d, pos)) {
		if (!db_alive(st->db))
			sweep_state_lost(st, st->db);
		else
			log_warning("service %s: could not read the cursor of the %s listing: %s",
				    l->service_sid, dimension_name(l->d), db_error(st->db));
		return false;
	}
	if (pos->start == CURSOR_RESUME && !url_same_listing(pos->next_url, first_url)) {
		log_warning("service %s: the %s listing's stored next page \"%s\" is not this "
			    "listing at %s; restarting it from page 1",
			    l->service_sid, dimension_name(l->d),
			    log_escape(esc, sizeof(esc), pos->next_url), st->s->base_url);
		free(pos->next_url);
		pos->next_url = NULL;
		pos->start = CURSOR_FIRST_PAGE;
		pos->pages_done = 0;
	}
	return true;
}

/* One dimension listing, to its end or its failure; false if the sweep cannot go on. */
static bool
list_dimension(struct dimension_listing *l)
{
	struct sweep_state *st = l->st;
	char *first_url = dimension_first_url(l->d, st->s->base_url, l->service_sid);
	struct cursor_position pos;
	char *url = NULL;
	bool first_page, restarted = false, go_on = true, stored;

	if (!start_at(l, first_url, &pos) || pos.start == CURSOR_SKIP) {
		free(first_url);
		return !st->db_lost;
	}
	first_page = pos.start == CURSOR_FIRST_PAGE;
	url = first_page ? xstrdup(first_url) : pos.next_url;
	l->page_no = first_page ? 1 : pos.pages_done + 1;
	l->drift_logged = 0;
	url_seen_clear(l->fetched);
	for (;;) {
		enum fetch_outcome outcome;
		const char *next;

		if (l->page_no > (unsigned)st->s->max_pages) {
			failed(l, "limit", "listing has more than %d pages (limits.max_pages)",
			       st->s->max_pages);
			outcome = FETCH_FAILED;
		} else {
			url_seen_add(l->fetched, url);
			outcome = fetch(l, url, !first_page && !restarted);
		}
		if (outcome == FETCH_RESTART) {
			log_warning("service %s %s listing page %u: %s for a resumed page; "
				    "restarting the listing from page 1",
				    l->service_sid, dimension_name(l->d), l->page_no, l->res.error);
			restarted = first_page = true;
			free(url);
			url = xstrdup(first_url);
			l->page_no = 1;
			url_seen_clear(l->fetched);
			continue;
		}
		if (outcome == FETCH_STOPPED) {
			go_on = false;
			break;
		}
		next = outcome == FETCH_OK && l->d != DIMENSION_SERVICE
			       ? page_parser_next_url(l->parser)
			       : NULL;
		if (outcome == FETCH_OK && page_parser_self_url(l->parser) != NULL)
			url_seen_add(l->fetched, page_parser_self_url(l->parser));
		if (outcome == FETCH_OK && next_ok(l, next, first_url)) {
			go_on = store(l, first_page, next, &stored);
			if (!go_on)
				break;
			if (stored && next == NULL)
				break;
			if (stored) {
				free(url);
				url = xstrdup(next);
				first_page = false;
				l->page_no++;
				continue;
			}
		}
		record_failure(l);
		go_on = !st->db_lost;
		break;
	}
	st->uncounted_requests += l->requests;
	st->uncounted_retries += l->retries;
	l->requests = l->retries = 0;
	free(url);
	free(first_url);
	return go_on;
}

/* Resolves the service's users; false if the sweep cannot go on. */
static bool
resolve_users(struct sweep_state *st, const struct settings_service *svc, char ***users,
	      size_t *n_users)
{
	if (!dimension_resolve_users(st->db, svc->sid, svc->users, svc->n_users, svc->all_users,
				     users, n_users)) {
		if (!db_alive(st->db)) {
			sweep_state_lost(st, st->db);
			return false;
		}
		log_warning("service %s: could not resolve its users (%s); listing them as "
			    "configured",
			    svc->sid, db_error(st->db));
		*n_users = svc->n_users;
		*users = xcalloc(svc->n_users + 1, sizeof(char *));
		for (size_t i = 0; i < svc->n_users; i++)
			(*users)[i] = xstrdup(svc->users[i]);
		return true;
	}
	for (size_t i = 0; i < *n_users; i++) {
		if ((*users)[i][0] == '\0') {
			/* The function's answer to a session fenced out: nothing was merged. */
			st->fenced_out = true;
			st->db_lost = true;
			return false;
		}
	}
	if (svc->all_users && *n_users == 0)
		log_warning("service %s: users = \"all\", but no user is known yet%s", svc->sid,
			    st->s->dimensions ? "" : " (sync.dimensions is off)");
	return true;
}

bool
dimension_sync_service(struct sweep_state *st, size_t service_index, void (*tick_fn)(void *arg),
		       void *arg, char ***users, size_t *n_users)
{
	const struct settings_service *svc = &st->s->services[service_index];
	const struct page_parser_limits limits = {
		.max_bytes = (size_t)st->s->max_body,
		.max_string = (size_t)st->s->max_string,
		.max_depth = (unsigned)st->s->max_depth,
		.max_rows = MAX_ROWS_PER_PAGE,
	};
	bool go_on = true;

	*users = NULL;
	*n_users = 0;
	for (int d = 0; st->s->dimensions && go_on && d < DIMENSIONS; d++) {
		struct dimension_listing l = {
			.st = st,
			.d = (enum dimension)d,
			.service_sid = svc->sid,
			.tick = tick_fn,
			.tick_arg = arg,
		};

		l.parser = page_parser_new(dimension_schema(l.d), &limits, on_entry, &l);
		l.batch = dimension_batch_new(l.d);
		l.fetched = url_seen_new(LOOP_MEMORY);
		go_on = list_dimension(&l) && sweep_state_may_work(st);
		page_parser_free(l.parser);
		page_batch_free(l.batch);
		url_seen_free(l.fetched);
	}
	return go_on && resolve_users(st, svc, users, n_users);
}
