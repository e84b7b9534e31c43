/*
 * sweep.c - one sweep over every configured user
 *
 * Users are handed, in the configured order, to up to twilio.concurrency
 * listings at once (see listing.c), fewer while the API throttles.  A
 * listing gives up its slot when its last page is handed to the commit
 * queue: a quarter more listings than slots (COMMIT_LISTINGS) let the next
 * users start while the writers finish the others, and no more last pages
 * than that wait for them.  When the database is lost, the sweep lets what
 * is on a writer finish, reconnects, and goes over the users again: their
 * cursors say who is done and where each listing stands.
 */
#include "config.h"

#include "sweep.h"

#include "backoff.h"
#include "clock.h"
#include "commit_queue.h"
#include "cursor.h"
#include "db.h"
#include "dimension.h"
#include "http.h"
#include "listing.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "run.h"
#include "settings.h"
#include "twilio.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Listings beyond twilio.concurrency, whose pages wait for a writer or are being committed. */
#define COMMIT_LISTINGS(concurrency) ((size_t)(concurrency) / 4 + 1)

/* Reconnecting to a lost database: attempts, and the backoff between them. */
#define DB_RECONNECT_TRIES 30
#define DB_BACKOFF_BASE_MS 200
#define DB_BACKOFF_MAX_MS 5000

/* Rows of each kind of history deleted in one transaction when pruning. */
#define PRUNE_BATCH 5000

/* The longest wait for activity in one turn of the loop. */
#define TURN_MS 200

struct sweep {
	struct sweep_state st; /* what the listings share */
	struct db *const *writers;
	size_t n_writers;
	size_t next_service, next_user; /* the next user to start */
	struct listing **listings;
	size_t n_listings;
	const struct sweep_hooks *hooks;
	struct cursor_lookahead *lookahead;
	/*
	 * Per configured service, the users to list, known once its sid is set
	 * (see resolve_service); n_resolved services are known.
	 */
	struct settings_service *resolved;
	size_t n_resolved;
	size_t next_job; /* the next dimension listing to start (see start_job) */
};

/*
 * The dimension listings of each service, in the order they start: the
 * users first, since the service's users are known only once that listing
 * has ended.
 */
static const enum dimension job_order[DIMENSIONS] = {DIMENSION_USERS, DIMENSION_SERVICE,
						     DIMENSION_CHANNELS};

/* Starts the user's listing on l, or returns false if the user has nothing to do now. */
static bool
start_user(struct sweep *sw, struct listing *l, size_t service_index, size_t user_index)
{
	const struct settings_service *svc = &sw->resolved[service_index];
	struct cursor_position pos;
	char reason[600];

	if (!cursor_lookahead_get(sw->lookahead, sw->st.db, sw->st.run_id, service_index, svc->sid,
				  (const char *const *)svc->users, svc->n_users, user_index,
				  &pos)) {
		if (!db_alive(sw->st.db)) {
			sweep_state_lost(&sw->st, sw->st.db);
			return false;
		}
		snprintf(reason, sizeof(reason), "could not read the cursor: %s",
			 db_error(sw->st.db));
		sweep_state_fail_user(&sw->st, service_index, svc->users[user_index], reason);
		return false;
	}
	if (pos.start == CURSOR_SKIP) {
		sw->st.progress.users_done++; /* finished before this process resumed the sweep */
		return false;
	}
	listing_start(l, service_index, svc->users[user_index], &pos);
	return true;
}

static size_t
slots_taken(const struct sweep *sw)
{
	size_t n = 0;

	for (size_t i = 0; i < sw->n_listings; i++)
		n += listing_holds_slot(sw->listings[i]);
	return n;
}

/* Are there users to start now (of a service whose users are known)? */
static bool
users_left(const struct sweep *sw)
{
	return sw->next_service < sw->st.s->n_services &&
	       sw->resolved[sw->next_service].sid != NULL;
}

/* Records the users of the sweep for sync_health, once every service's are known. */
static void
record_users(struct sweep *sw)
{
	struct sweep_state *st = &sw->st;
	struct settings_service *recorded = xcalloc(st->s->n_services, sizeof(*recorded));
	size_t total = 0;

	for (size_t i = 0; i < st->s->n_services; i++) {
		/* Users as configured; for users = "all", those listed. */
		recorded[i] = st->s->services[i].all_users ? sw->resolved[i] : st->s->services[i];
		total += sw->resolved[i].n_users;
	}
	if (!run_record_config(st->db, st->s->interval, recorded, st->s->n_services))
		log_warning("could not record the users: %s", db_error(st->db));
	free(recorded);
	st->progress.users_total = total;
	metrics_sweep_users(st->metrics, total);
}

/*
 * The users of service i become known: its users listing has ended (or is
 * off).  An identity the users listing knows becomes its User SID, and for
 * users = "all" the users are those listed (see dimension_resolve_users).
 */
static void
resolve_service(struct sweep *sw, size_t i)
{
	struct sweep_state *st = &sw->st;
	const struct settings_service *svc = &st->s->services[i];
	struct settings_service *out = &sw->resolved[i];

	if (out->sid != NULL)
		return;
	if (!dimension_resolve_users(st->db, svc->sid, svc->users, svc->n_users, svc->all_users,
				     &out->users, &out->n_users)) {
		char reason[600];

		if (!db_alive(st->db)) {
			sweep_state_lost(st, st->db); /* resolved again once it is back */
			return;
		}
		/*
		 * Listed as configured, an identity already merged into its SID
		 * would be stored twice: its users fail this sweep instead.
		 */
		snprintf(reason, sizeof(reason), "could not resolve the service's users: %s",
			 db_error(st->db));
		if (svc->all_users) {
			log_error("service %s: %s", svc->sid, reason);
			st->service_failed[i] = true;
		}
		for (size_t j = 0; j < svc->n_users; j++)
			sweep_state_fail_user(st, i, svc->users[j], reason);
	}
	for (size_t j = 0; j < out->n_users; j++) {
		if (out->users[j][0] == '\0') {
			/* The answer to a session fenced out: nothing was merged. */
			for (size_t k = 0; k < out->n_users; k++)
				free(out->users[k]);
			free(out->users);
			out->users = NULL;
			out->n_users = 0;
			st->fenced_out = true;
			st->db_lost = true;
			return;
		}
	}
	if (svc->all_users && out->n_users == 0)
		log_warning("service %s: users = \"all\", but its users listing has no user%s",
			    svc->sid, st->s->dimensions ? "" : " (sync.dimensions is off)");
	out->sid = svc->sid;
	if (++sw->n_resolved == st->s->n_services)
		record_users(sw);
}

static void
on_dimension_ended(void *arg, size_t service_index, int dimension)
{
	if (dimension == DIMENSION_USERS)
		resolve_service(arg, service_index);
}

static size_t
dimension_jobs(const struct sweep *sw)
{
	return sw->st.s->dimensions ? sw->st.s->n_services * DIMENSIONS : 0;
}

/*
 * Starts dimension listing `job` (of service job / DIMENSIONS) on l; false
 * if it has nothing to do in this sweep (then, for a users listing, the
 * service's users are resolved).
 */
static bool
start_job(struct sweep *sw, struct listing *l, size_t job)
{
	struct sweep_state *st = &sw->st;
	size_t service_index = job / DIMENSIONS;
	enum dimension d = job_order[job % DIMENSIONS];
	const struct settings_service *svc = &st->s->services[service_index];
	const char *sid = svc->sid;
	struct cursor_position pos;

	/* A conversation service's names come with each conversation: no channels listing. */
	if (d == DIMENSION_CHANNELS && !twilio_api_info(svc->api)->has_channels)
		return false;
	if (!dimension_position(st->db, st->run_id, sid, d, &pos)) {
		if (!db_alive(st->db)) {
			sweep_state_lost(st, st->db);
			return false;
		}
		log_warning("service %s: could not read the cursor of the %s listing: %s", sid,
			    dimension_name(d), db_error(st->db));
		pos.start = CURSOR_SKIP;
	}
	if (pos.start == CURSOR_SKIP) {
		on_dimension_ended(sw, service_index, (int)d);
		return false;
	}
	listing_start_dimension(l, service_index, d, &pos);
	return true;
}

/* Without the dimension listings, each service's users are resolved at once. */
static void
resolve_without_listings(struct sweep *sw)
{
	for (size_t i = 0; i < sw->st.s->n_services && sweep_state_may_work(&sw->st); i++)
		resolve_service(sw, i);
}

/*
 * Gives idle listings the next users that have work, while slots are free
 * (up to the pacer's limit).
 */
static void
fill_listings(struct sweep *sw)
{
	size_t busy = slots_taken(sw);

	for (size_t i = 0; i < sw->n_listings && busy < sw->st.pacer.limit; i++) {
		struct listing *l = sw->listings[i];

		while (!listing_busy(l) && sweep_state_may_work(&sw->st)) {
			size_t service_index = sw->next_service, user_index = sw->next_user;

			if (sw->next_job < dimension_jobs(sw)) {
				if (start_job(sw, l, sw->next_job++))
					busy += listing_holds_slot(l);
				continue;
			}
			if (!users_left(sw))
				return;
			if (sw->resolved[service_index].n_users == 0) {
				sw->next_service++; /* no user to list */
				continue;
			}
			if (++sw->next_user == sw->resolved[service_index].n_users) {
				sw->next_user = 0;
				sw->next_service++;
			}
			if (start_user(sw, l, service_index, user_index))
				busy += listing_holds_slot(l);
		}
	}
}

/* Sends the retries whose backoff is over; returns ms until the next one (or max_ms). */
static long
run_due_retries(struct sweep *sw, long max_ms)
{
	long next = max_ms;

	for (size_t i = 0; i < sw->n_listings; i++) {
		long wait = listing_retry_when_due(sw->listings[i]);

		if (wait >= 0 && wait < next)
			next = wait;
	}
	return next;
}

static bool
any_listing_busy(const struct sweep *sw)
{
	for (size_t i = 0; i < sw->n_listings; i++) {
		if (listing_busy(sw->listings[i]))
			return true;
	}
	return false;
}

static void
tick(struct sweep *sw)
{
	if (sw->hooks != NULL && sw->hooks->tick != NULL)
		sw->hooks->tick(sw->hooks->arg, &sw->st.progress);
}

/* Waits out a backoff in short naps, so a stop request is seen at once. */
static void
nap(struct sweep *sw, long ms)
{
	while (ms > 0 && !*sw->st.stop) {
		long step = ms < 100 ? ms : 100;
		struct timespec ts = {0, step * 1000000L};

		nanosleep(&ts, NULL);
		ms -= step;
		tick(sw);
	}
}

/* The database is lost or a stop was asked for: drops what need not finish. */
static void
abandon_listings(struct sweep *sw)
{
	for (size_t i = 0; i < sw->n_listings; i++)
		listing_abandon(sw->listings[i]);
}

/*
 * Reconnects db if it is lost (or, with renew, whatever its state); false
 * (logged) on failure.  *reconnected tells whether it did.
 */
static bool
db_usable(struct db *db, bool probe, bool renew, bool *reconnected)
{
	*reconnected = false;
	if (!renew && (probe ? db_alive(db) : db_connected(db)))
		return true;
	*reconnected = true;
	if (!db_reconnect(db)) {
		log_warning("could not reconnect to the database: %s",
			    db_error(db)[0] != '\0' ? db_error(db) : "stopped");
		return false;
	}
	log_info("reconnected to the database");
	return true;
}

bool
sweep_connections_usable(struct db *control, struct db *const *writers, size_t n_writers,
			 bool probe, bool renew, bool *took_back)
{
	bool reconnected;

	if (!db_usable(control, probe, renew, &reconnected))
		return false;
	if (took_back != NULL)
		*took_back = reconnected;
	for (size_t i = 0; i < n_writers; i++) {
		if (!db_usable(writers[i], probe, false, &reconnected))
			return false;
		/* After the control connection took the schema again, its writers follow. */
		if (db_epoch(writers[i]) != db_epoch(control) &&
		    !db_set_epoch(writers[i], db_epoch(control))) {
			log_warning("could not set a writer's fencing epoch: %s",
				    db_error(writers[i]));
			return false;
		}
	}
	return true;
}

/*
 * The schema was held by another chatsyncd while this one had lost it: if
 * the other finished this sweep meanwhile, this one ends rather than go
 * over it again.
 */
static void
check_taken_over(struct sweep *sw)
{
	bool finished;

	if (!run_is_finished(sw->st.db, sw->st.run_id, &finished))
		log_warning("could not read sweep %" PRId64 ": %s", sw->st.run_id,
			    db_error(sw->st.db));
	else if (finished) {
		log_info("sweep %" PRId64 " was finished by another chatsyncd meanwhile",
			 sw->st.run_id);
		sw->st.taken_over = true;
	}
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
	if (sw->st.fenced_out)
		log_warning(
			"another chatsyncd has taken the schema; uncommitted pages are dropped, "
			"and this one waits to take it back");
	else
		log_warning("lost the database connection (%s); uncommitted pages will be fetched "
			    "again",
			    sw->st.lost_reason[0] != '\0' ? sw->st.lost_reason : "no reason given");
	for (unsigned attempt = 1; attempt <= DB_RECONNECT_TRIES && !*sw->st.stop; attempt++) {
		nap(sw, backoff_delay_ms(attempt, DB_BACKOFF_BASE_MS, DB_BACKOFF_MAX_MS, -1,
					 &sw->st.rng));
		if (*sw->st.stop)
			break;
		bool took_back = false;
		bool up = sweep_connections_usable(sw->st.db, sw->writers, sw->n_writers, true,
						   sw->st.fenced_out, &took_back);

		if (took_back) {
			sw->st.fenced_out = false; /* the schema is this one's again */
			check_taken_over(sw);
			if (sw->st.taken_over)
				return true;
		}
		if (up) {
			metrics_db_reconnect(sw->st.metrics);
			cursor_lookahead_drop(sw->lookahead); /* the cursors may have moved */
			sw->st.db_lost = false;
			sw->st.lost_reason[0] = '\0';
			sw->next_service = sw->next_user = 0;
			sw->next_job = 0; /* their cursors say which listings are done */
			sw->st.progress.users_done =
				0; /* counted again as the users are gone over */
			return true;
		}
	}
	if (!*sw->st.stop)
		log_error("could not reconnect to the database after %d attempts",
			  DB_RECONNECT_TRIES);
	return false;
}

static void
log_totals(const struct run_totals *t, double seconds)
{
	log_info(
		"sweep finished in %.1f s: %ld users ok, %ld failed, %ld pages, %ld rows received, "
		"%ld inserted, %ld updated, %ld unchanged, %ld deleted, %ld rejected, "
		"%ld requests, %ld retries",
		seconds, t->users_ok, t->users_failed, t->pages, t->received, t->inserted,
		t->updated, t->unchanged, t->deleted, t->rejected, t->requests, t->retries);
}

/* Tells the metrics which services had every user succeed in this sweep. */
static void
report_services(struct sweep *sw, double seconds, long users_failed)
{
	const struct settings *s = sw->st.s;
	const char **ok = xcalloc(s->n_services, sizeof(char *));
	size_t n_ok = 0;

	for (size_t i = 0; i < s->n_services; i++) {
		if (!sw->st.service_failed[i])
			ok[n_ok++] = s->services[i].sid;
	}
	metrics_sweep_finished(sw->st.metrics, seconds, users_failed, ok, n_ok);
	free(ok);
}

/* Between two batches of pruning: the watchdog is fed, and a stop is heard. */
static bool
prune_go_on(void *arg)
{
	struct sweep *sw = arg;

	tick(sw);
	return !*sw->st.stop;
}

/* history.retention_days: after a finished sweep, older history goes, in small batches. */
static void
prune_history(struct sweep *sw)
{
	int days = sw->st.s->retention_days;
	long deleted;

	if (days == 0)
		return;
	if (!run_prune(sw->st.db, days, PRUNE_BATCH, prune_go_on, sw, &deleted))
		log_warning("could not prune the history: %s", db_error(sw->st.db));
	else if (deleted > 0)
		log_info("pruned %ld rows of history older than %d days", deleted, days);
}

static enum sweep_result
finish(struct sweep *sw, const struct timespec *t0)
{
	struct sweep_state *st = &sw->st;
	struct run_totals totals;
	double seconds;

	if (st->taken_over) {
		metrics_sweep_stopped(st->metrics);
		return SWEEP_OK;
	}
	if (*st->stop || st->auth_failed || st->db_lost) {
		metrics_sweep_stopped(st->metrics);
		if (*st->stop)
			return SWEEP_INTERRUPTED;
		return st->auth_failed ? SWEEP_AUTH_FAILED : SWEEP_DB_FAILED;
	}
	if (!run_finish(st->db, st->run_id, st->uncounted_requests, st->uncounted_retries,
			&totals)) {
		log_error("could not finish sweep %" PRId64 ": %s", st->run_id, db_error(st->db));
		metrics_sweep_stopped(st->metrics);
		return SWEEP_DB_FAILED;
	}
	totals.users_failed += st->unrecorded_failures;
	seconds = clock_seconds_since(t0);
	log_totals(&totals, seconds);
	report_services(sw, seconds, totals.users_failed);
	prune_history(sw);
	return totals.users_failed > 0 ? SWEEP_USERS_FAILED : SWEEP_OK;
}

static void
listings_new(struct sweep *sw)
{
	int concurrency = sw->st.s->concurrency;

	sw->n_listings = (size_t)concurrency + COMMIT_LISTINGS(concurrency);
	sw->listings = xcalloc(sw->n_listings, sizeof(*sw->listings));
	for (size_t i = 0; i < sw->n_listings; i++)
		sw->listings[i] = listing_new(&sw->st);
}

static void
listings_free(struct sweep *sw)
{
	for (size_t i = 0; i < sw->n_listings; i++)
		listing_free(sw->listings[i]);
	free(sw->listings);
}

/* The database is lost, and nothing that could still commit is in flight: time to reconnect. */
static bool
ready_to_recover(const struct sweep *sw, size_t commits_in_flight)
{
	const struct sweep_state *st = &sw->st;

	return st->db_lost && !*st->stop && http_pending(st->http) == 0 && commits_in_flight == 0;
}

/*
 * Nothing is left to do in this turn or any later one: no job, no
 * transfer, no commit in flight, and no lost database to recover.
 */
static bool
sweep_over(const struct sweep *sw, size_t commits_in_flight)
{
	bool must_recover = sw->st.db_lost && !*sw->st.stop;

	return !any_listing_busy(sw) && http_pending(sw->st.http) == 0 && commits_in_flight == 0 &&
	       !must_recover;
}

/* Waits up to wait_ms for a transfer or a writer, then moves both on. */
static void
await_activity(struct sweep *sw, long wait_ms, const int *fds, size_t n_fds)
{
	char why[256];

	if (!http_run(sw->st.http, (int)(wait_ms > 0 ? wait_ms : 0), fds, n_fds, why,
		      sizeof(why))) {
		log_warning("waiting for the transfers failed: %s", why);
		nap(sw, 100);
	}
	if (n_fds > 0)
		commit_queue_poll(sw->st.commits, false);
	/* The control connection holds the schema: its loss stops the writing at once. */
	if (!sw->st.db_lost && db_gone(sw->st.db))
		sweep_state_lost(&sw->st, sw->st.db);
}

static void
on_committed(void *arg, struct commit *c, const struct store_counts *counts)
{
	(void)arg;
	listing_committed(c, counts);
}

static void
on_commit_failed(void *arg, struct commit *c, struct db *wdb)
{
	(void)arg;
	listing_commit_failed(c, wdb);
}

static void
on_commit_refused(void *arg, struct commit *c)
{
	(void)arg;
	listing_commit_refused(c);
}

static bool
may_send_commits(void *arg)
{
	const struct sweep *sw = arg;

	return !sw->st.db_lost && !*sw->st.stop;
}

/* What the commit queue reports, and asks (.arg is the sweep). */
static const struct commit_queue_events commit_events = {
	.committed = on_committed,
	.failed = on_commit_failed,
	.refused = on_commit_refused,
	.may_send = may_send_commits,
};

/* Sets up the sweep's listings and queues; false (logged) if the sweep cannot begin. */
static bool
sweep_begin(struct sweep *sw)
{
	struct sweep_state *st = &sw->st;
	struct commit_queue_events events = commit_events;
	struct timespec now = clock_now();
	bool resumed;

	st->metrics = sw->hooks != NULL ? sw->hooks->metrics : NULL;
	pacer_init(&st->pacer, (unsigned)st->s->concurrency, st->s->max_rps, clock_now_ms());
	st->rng = (uint64_t)now.tv_nsec ^ ((uint64_t)getpid() << 32);
	if (!run_begin(st->db, &st->run_id, &resumed)) {
		log_error("could not begin a sweep: %s", db_error(st->db));
		return false;
	}
	/*
	 * The configured users are recorded at once, so that a sweep cut short
	 * still records a new interval or list; with users = "all" they are
	 * known only once listed (see record_users).
	 */
	if (!settings_discovers_users(st->s) &&
	    !run_record_config(st->db, st->s->interval, st->s->services, st->s->n_services))
		log_warning("could not record the configured users: %s", db_error(st->db));
	st->progress.run_id = st->run_id;
	st->progress.users_total = settings_user_count(st->s);
	log_info("%s sweep %" PRId64 " over %zu users", resumed ? "resuming" : "starting",
		 st->run_id, st->progress.users_total);
	listings_new(sw);
	events.arg = sw;
	st->commits = commit_queue_new(sw->writers, sw->n_writers, sw->n_listings, &events);
	st->service_failed = xcalloc(st->s->n_services, sizeof(bool));
	sw->lookahead = cursor_lookahead_new();
	sw->resolved = xcalloc(st->s->n_services, sizeof(*sw->resolved));
	st->dimension_ended = on_dimension_ended;
	st->dimension_ended_arg = sw;
	metrics_sweep_users(st->metrics, st->progress.users_total);
	metrics_sweep_started(st->metrics);
	return true;
}

static void
sweep_end(struct sweep *sw)
{
	listings_free(sw);
	commit_queue_free(sw->st.commits);
	cursor_lookahead_free(sw->lookahead);
	free(sw->st.service_failed);
	for (size_t i = 0; i < sw->st.s->n_services; i++) {
		for (size_t j = 0; j < sw->resolved[i].n_users; j++)
			free(sw->resolved[i].users[j]);
		free(sw->resolved[i].users);
	}
	free(sw->resolved);
}

enum sweep_result
sweep_run(const struct settings *s, struct db *db, struct db *const *writers, size_t n_writers,
	  struct http *http, const volatile sig_atomic_t *stop, const struct sweep_hooks *hooks)
{
	struct sweep sw = {.st = {.s = s, .db = db, .http = http, .stop = stop}, .hooks = hooks};
	int fds[HTTP_MAX_EXTRA_FDS];
	enum sweep_result result;
	struct timespec t0 = clock_now();

	sw.writers = writers;
	sw.n_writers = n_writers < HTTP_MAX_EXTRA_FDS - 1 ? n_writers : HTTP_MAX_EXTRA_FDS - 1;
	if (!sweep_begin(&sw))
		return SWEEP_DB_FAILED;
	for (;;) {
		size_t in_flight;
		long wait;

		if (*stop)
			commit_queue_stop(sw.st.commits);
		if (sw.st.db_lost || *stop)
			abandon_listings(&sw);
		in_flight = commit_queue_sockets(sw.st.commits, fds);
		if (ready_to_recover(&sw, in_flight) && !recover_database(&sw))
			break;
		if (sw.st.taken_over)
			break;
		if (!s->dimensions)
			resolve_without_listings(&sw);
		fill_listings(&sw);
		commit_queue_send(sw.st.commits);
		wait = run_due_retries(&sw, TURN_MS);
		in_flight = commit_queue_sockets(sw.st.commits, fds);
		if (sweep_over(&sw, in_flight))
			break;
		fds[in_flight] = db_socket(sw.st.db); /* news of the control connection's end */
		await_activity(&sw, wait, fds, in_flight + (fds[in_flight] >= 0));
		tick(&sw);
	}
	/* Commits still in flight (after a stop) are let finish, so the connections are idle. */
	while (commit_queue_sockets(sw.st.commits, fds) > 0)
		commit_queue_poll(sw.st.commits, true);
	result = finish(&sw, &t0);
	sweep_end(&sw);
	return result;
}
