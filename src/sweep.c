/*
 * sweep.c - one sweep over every configured user
 *
 * Users are claimed (see lease.c) from each service's list, stalest first,
 * in windows of CLAIM_WINDOW, and handed to up to twilio.concurrency
 * listings at once (see listing.c), fewer while the API throttles.  Users
 * that another instance holds are looked at again every REVISIT_MS until
 * they are done or their lease has expired and they are claimed here; the
 * sweep ends when every user is done.  The leases are renewed every third
 * of sync.lease_seconds.  A
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
#include "lease.h"
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
#include <string.h>
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

/* Users claimed in one query, at most. */
#define CLAIM_WINDOW 64

/*
 * Users claimed and waiting for a listing, at most: a window (see
 * claim_window()), and those a revisit claims besides.
 */
#define CLAIMED_MAX (2 * CLAIM_WINDOW)

/* How often users and listings another instance holds are looked at again. */
#define REVISIT_MS 1000

/* A user claimed, waiting for a listing. */
struct claimed {
	size_t service_index;
	const char *user;
	struct cursor_position pos;
};

/* A user (or dimension listing) due in this sweep that another instance holds. */
struct revisit {
	size_t service_index;
	const char *user;
};

struct sweep {
	struct sweep_state st; /* what the listings share */
	struct db *const *writers;
	size_t n_writers;
	size_t next_service, next_user; /* the next user to start */
	struct listing **listings;
	size_t n_listings;
	const struct sweep_hooks *hooks;
	const struct sweep_lease *lease;
	struct claimed claimed[CLAIMED_MAX]; /* claimed[0 .. n_claimed) wait, the last first */
	size_t n_claimed;
	/* A claim of the next window sent on the control connection, its result not yet read. */
	struct {
		bool in_flight;
		size_t service_index;
		const char *const *users; /* of sw->resolved[service_index] */
		size_t n, limit;
	} claiming;
	struct revisit *revisit; /* users another instance holds */
	size_t n_revisit, alloc_revisit;
	bool *job_pending; /* per dimension listing: another instance holds it */
	size_t n_jobs_pending;
	struct timespec last_revisit, last_job_revisit, last_renew;
	int live_instances;
	bool released; /* the leases were given up for a stop */
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

/* Remembers that another instance holds the user, to look at it again later. */
static void
add_revisit(struct sweep *sw, size_t service_index, const char *user)
{
	if (sw->n_revisit == sw->alloc_revisit) {
		sw->alloc_revisit = sw->alloc_revisit == 0 ? 16 : sw->alloc_revisit * 2;
		sw->revisit = xrealloc(sw->revisit, sw->alloc_revisit * sizeof(*sw->revisit));
	}
	sw->revisit[sw->n_revisit++] = (struct revisit){service_index, user};
}

/* Forgets the users claimed and not started (after a reconnect: they are claimed again). */
static void
drop_claimed(struct sweep *sw)
{
	for (size_t i = 0; i < sw->n_claimed; i++)
		cursor_position_free(&sw->claimed[i].pos);
	sw->n_claimed = 0;
	sw->claiming.in_flight = false; /* its result, if any, went with the connection */
}

/*
 * Starts the next user claimed on l; a user of a service whose account
 * refused its credentials fails at once, without a request.
 */
static void
start_claimed(struct sweep *sw, struct listing *l)
{
	struct claimed taken = sw->claimed[--sw->n_claimed], *c = &taken;
	const struct settings_service *svc = &sw->st.s->services[c->service_index];

	if (!sw->st.account_refused[c->service_index]) {
		listing_start(l, c->service_index, c->user, &c->pos);
		return;
	}
	cursor_position_free(&c->pos);
	sweep_state_fail_user(&sw->st, c->service_index, c->user, c->pos.lease, "auth",
			      svc->account_sid != NULL ? "authentication failed for its account"
						       : "authentication failed");
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
			sweep_state_fail_user(st, i, svc->users[j], 0, "database", reason);
	}
	for (size_t j = 0; j < out->n_users; j++) {
		if (out->users[j][0] == '\0') {
			/*
			 * The answer to a session whose instance is not live (it was
			 * frozen past its lease): nothing was merged.  Resolved again
			 * once the sweep has recovered, and its heartbeat is heard.
			 */
			for (size_t k = 0; k < out->n_users; k++)
				free(out->users[k]);
			free(out->users);
			out->users = NULL;
			out->n_users = 0;
			snprintf(st->lost_reason, sizeof(st->lost_reason),
				 "this instance was not heard of for longer than its lease");
			st->db_lost = true;
			return;
		}
	}
	if (!lease_stalest_first(st->db, svc->sid, out->users, out->n_users))
		log_warning("service %s: could not order the users, stalest first: %s", svc->sid,
			    db_error(st->db));
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
	enum lease_outcome outcome;

	if (!lease_claim_dimension(st->db, st->run_id, sw->lease->instance_id, st->s->lease_seconds,
				   sid, d, &outcome, &pos)) {
		if (!db_alive(st->db)) {
			sweep_state_lost(st, st->db);
			return false;
		}
		log_warning("service %s: could not claim the %s listing: %s", sid,
			    dimension_name(d), db_error(st->db));
		outcome = LEASE_DONE;
	}
	if (sw->job_pending[job]) {
		sw->job_pending[job] = false;
		sw->n_jobs_pending--;
	}
	if (outcome == LEASE_PENDING) {
		sw->job_pending[job] = true; /* another instance lists it: looked at again */
		sw->n_jobs_pending++;
		return false;
	}
	if (outcome == LEASE_DONE) {
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

/* Moves the next user to look at k users on, to the next service past the last. */
static void
advance(struct sweep *sw, size_t k)
{
	sw->next_user += k;
	if (sw->next_user >= sw->resolved[sw->next_service].n_users) {
		sw->next_user = 0;
		sw->next_service++;
	}
}

/* Listings that are idle now. */
static size_t
idle_listings(const struct sweep *sw)
{
	size_t n = 0;

	for (size_t i = 0; i < sw->n_listings; i++)
		n += !listing_busy(sw->listings[i]);
	return n;
}

/*
 * How many of n users to claim at once: all of them while no other
 * instance is live, else as many as listings are idle (the rest is left to
 * whichever instance is free first).
 */
static size_t
claim_limit(const struct sweep *sw, size_t n)
{
	size_t idle = idle_listings(sw);

	if (sw->live_instances <= 1)
		return n;
	return idle > 0 ? idle : 1;
}

/*
 * What a claim of n users of service i, up to limit, gave: those claimed
 * wait in sw->claimed, under those already waiting (the first on top);
 * those done are counted; those another holds go to *held (n entries),
 * *n_held of them.  Returns how many users were looked at (those after
 * the last claimed, when the limit was reached, are left to look at
 * again).
 */
static size_t
claim_outcomes(struct sweep *sw, size_t i, const char *const *users, size_t n, size_t limit,
	       const enum lease_outcome *outcome, struct cursor_position *pos, const char **held,
	       size_t *n_held)
{
	struct sweep_state *st = &sw->st;
	size_t claimed = 0, looked = n, m = 0;

	*n_held = 0;
	for (size_t k = 0; k < n; k++)
		claimed += outcome[k] == LEASE_CLAIMED;
	if (claimed == limit) {
		while (looked > 0 && outcome[looked - 1] != LEASE_CLAIMED)
			looked--;
	}
	memmove(&sw->claimed[claimed], &sw->claimed[0], sw->n_claimed * sizeof(*sw->claimed));
	sw->n_claimed += claimed;
	for (size_t k = looked; k-- > 0;) {
		if (outcome[k] == LEASE_CLAIMED)
			sw->claimed[m++] = (struct claimed){i, users[k], pos[k]};
		else if (outcome[k] == LEASE_DONE)
			st->progress.users_done++; /* finished before this process came to it */
		else
			held[(*n_held)++] = users[k];
	}
	return looked;
}

/*
 * Claims up to limit of the n users of service i (names borrowed from the
 * sweep's lists) and waits for the answer (see claim_outcomes()); 0 if the
 * claim failed.
 */
static size_t
claim(struct sweep *sw, size_t i, const char *const *users, size_t n, const char **held,
      size_t *n_held)
{
	struct sweep_state *st = &sw->st;
	enum lease_outcome outcome[CLAIM_WINDOW];
	struct cursor_position pos[CLAIM_WINDOW];
	size_t limit = claim_limit(sw, n);

	*n_held = 0;
	if (!lease_claim_users(st->db, st->run_id, sw->lease->instance_id, st->s->lease_seconds,
			       sw->resolved[i].sid, users, n, limit, outcome, pos))
		return 0;
	return claim_outcomes(sw, i, users, n, limit, outcome, pos, held, n_held);
}

/* A claim failed: lost database, or the users of the window fail with the reason. */
static void
claim_failed(struct sweep *sw, size_t i, const char *const *users, size_t n)
{
	struct sweep_state *st = &sw->st;
	char reason[600];

	if (!db_alive(st->db)) {
		sweep_state_lost(st, st->db);
		return;
	}
	snprintf(reason, sizeof(reason), "could not claim the user: %s", db_error(st->db));
	for (size_t k = 0; k < n; k++)
		sweep_state_fail_user(st, i, users[k], 0, "database", reason);
}

/*
 * Claims from the next window of the users: alone on the schema, the claim
 * is sent without waiting (its result is read by claim_collect()), so that
 * the transfers go on meanwhile; with other instances, where each claim
 * takes only as many users as listings are free, it is waited for.  False
 * once no user is left to look at now (or the database is lost), or while
 * a claim is in flight.
 */
static bool
claim_window(struct sweep *sw)
{
	struct sweep_state *st = &sw->st;
	size_t i, n;
	const char *const *users;

	while (users_left(sw) && sw->resolved[sw->next_service].n_users == 0)
		sw->next_service++; /* no user to list */
	if (sw->claiming.in_flight || !users_left(sw) || !sweep_state_may_work(st))
		return false;
	i = sw->next_service;
	users = (const char *const *)&sw->resolved[i].users[sw->next_user];
	n = sw->resolved[i].n_users - sw->next_user;
	if (n > CLAIM_WINDOW)
		n = CLAIM_WINDOW;
	if (sw->live_instances > 1) {
		/* With others, a few users at a time, as listings are free: at once. */
		const char *held[CLAIM_WINDOW];
		size_t looked, n_held;

		looked = claim(sw, i, users, n, held, &n_held);
		if (looked == 0) {
			claim_failed(sw, i, users, n);
			looked = n;
		}
		for (size_t k = 0; k < n_held; k++)
			add_revisit(sw, i, held[k]);
		advance(sw, looked);
		return true;
	}
	sw->claiming.service_index = i;
	sw->claiming.users = users;
	sw->claiming.n = n;
	/* No more than a window waits at once, claimed ahead or not. */
	sw->claiming.limit = claim_limit(sw, n);
	if (sw->claiming.limit > CLAIM_WINDOW - sw->n_claimed)
		sw->claiming.limit = CLAIM_WINDOW - sw->n_claimed;
	if (!lease_claim_send(st->db, st->run_id, sw->lease->instance_id, st->s->lease_seconds,
			      sw->resolved[i].sid, users, n, sw->claiming.limit)) {
		claim_failed(sw, i, users, n);
		advance(sw, n);
		return true;
	}
	sw->claiming.in_flight = true;
	return true;
}

/*
 * Reads the result of the claim in flight, if it has come (or waiting for
 * it): the users claimed wait for a listing, the rest are seen to, and the
 * sweep moves past those looked at.  True if a result was read.
 */
static bool
claim_collect(struct sweep *sw, bool wait)
{
	struct sweep_state *st = &sw->st;
	enum lease_outcome outcome[CLAIM_WINDOW];
	struct cursor_position pos[CLAIM_WINDOW];
	const char *held[CLAIM_WINDOW];
	size_t i = sw->claiming.service_index, n = sw->claiming.n, looked = n, n_held = 0;
	const char *const *users = sw->claiming.users;
	PGresult *res;

	if (!sw->claiming.in_flight || !db_collect(st->db, wait, &res))
		return false;
	sw->claiming.in_flight = false;
	if (lease_claim_read(st->db, res, st->run_id, n, outcome, pos))
		looked = claim_outcomes(sw, i, users, n, sw->claiming.limit, outcome, pos, held,
					&n_held);
	else
		claim_failed(sw, i, users, n);
	for (size_t k = 0; k < n_held; k++)
		add_revisit(sw, i, held[k]);
	advance(sw, looked);
	return true;
}

/*
 * Claims again up to CLAIM_WINDOW of the users another instance held, of
 * one service: those done since are counted, those whose lease expired are
 * claimed, the others stay.  Returns how many were looked at.
 */
static size_t
revisit_some(struct sweep *sw)
{
	const char *users[CLAIM_WINDOW], *held[CLAIM_WINDOW];
	size_t i, n = 0, n_held, kept = 0, looked;

	i = sw->revisit[0].service_index;
	for (size_t k = 0; k < sw->n_revisit; k++) {
		if (sw->revisit[k].service_index == i && n < CLAIM_WINDOW)
			users[n++] = sw->revisit[k].user;
		else
			sw->revisit[kept++] = sw->revisit[k];
	}
	sw->n_revisit = kept;
	looked = claim(sw, i, users, n, held, &n_held);
	if (looked == 0) {
		if (!db_alive(sw->st.db)) {
			sweep_state_lost(&sw->st, sw->st.db);
			return n;
		}
		log_warning("could not claim users held by another instance: %s",
			    db_error(sw->st.db));
		memcpy(held, users, n * sizeof(*users));
		n_held = n;
	}
	for (size_t k = 0; k < n_held; k++)
		add_revisit(sw, i, held[k]);
	/* Those after the last claimed, when the limit was reached, were not looked at. */
	for (size_t k = looked > 0 ? looked : n; k < n; k++)
		add_revisit(sw, i, users[k]);
	return n;
}

/*
 * Once REVISIT_MS has passed, looks again at every user another instance
 * held, a window at a time, until one is claimed (when no claimed user
 * waits).
 */
static void
claim_revisits(struct sweep *sw)
{
	if (sw->n_revisit == 0 || sw->n_claimed > 0 ||
	    clock_seconds_since(&sw->last_revisit) * 1000 < REVISIT_MS)
		return;
	sw->last_revisit = clock_now();
	for (size_t left = sw->n_revisit; left > 0 && sw->n_revisit > 0 && sw->n_claimed == 0 &&
					  sweep_state_may_work(&sw->st);) {
		size_t n = revisit_some(sw);

		left = n < left ? left - n : 0;
	}
}

/* Tries again, once REVISIT_MS has passed, the dimension listings another instance held. */
static void
start_pending_jobs(struct sweep *sw)
{
	if (sw->n_jobs_pending == 0 ||
	    clock_seconds_since(&sw->last_job_revisit) * 1000 < REVISIT_MS)
		return;
	sw->last_job_revisit = clock_now();
	for (size_t j = 0, i = 0; j < dimension_jobs(sw) && sweep_state_may_work(&sw->st); j++) {
		if (!sw->job_pending[j])
			continue;
		while (i < sw->n_listings && listing_busy(sw->listings[i]))
			i++;
		if (i == sw->n_listings)
			return;
		start_job(sw, sw->listings[i], j);
	}
}

/*
 * Gives idle listings the next users claimed, while slots are free (up to
 * the pacer's limit).
 */
static void
fill_listings(struct sweep *sw)
{
	size_t busy = slots_taken(sw);

	claim_collect(sw, false);
	start_pending_jobs(sw);
	for (size_t i = 0; i < sw->n_listings && busy < sw->st.pacer.limit; i++) {
		struct listing *l = sw->listings[i];

		while (!listing_busy(l) && sweep_state_may_work(&sw->st)) {
			if (sw->next_job < dimension_jobs(sw)) {
				if (start_job(sw, l, sw->next_job++))
					busy += listing_holds_slot(l);
				continue;
			}
			if (sw->n_claimed == 0 && !sw->claiming.in_flight && !claim_window(sw)) {
				claim_revisits(sw);
				if (sw->n_claimed == 0)
					return;
			}
			if (sw->n_claimed == 0) {
				if (sw->claiming.in_flight)
					return; /* its answer wakes the loop */
				continue;	/* none of that window to claim: the next */
			}
			start_claimed(sw, l);
			busy += listing_holds_slot(l);
		}
	}
	/*
	 * Alone on the schema, the next window is claimed while this one's
	 * users start; with others, users are claimed only as listings are
	 * free, and none is held waiting.
	 */
	if (sw->live_instances <= 1 && sw->n_claimed < CLAIM_WINDOW / 2 &&
	    sweep_state_may_work(&sw->st))
		claim_window(sw);
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

/* Reconnects db if it is lost; false (logged) on failure. */
static bool
db_usable(struct db *db, bool probe)
{
	if (probe ? db_alive(db) : db_connected(db))
		return true;
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
			 bool probe)
{
	if (!db_usable(control, probe))
		return false;
	for (size_t i = 0; i < n_writers; i++) {
		if (!db_usable(writers[i], probe))
			return false;
	}
	return true;
}

/*
 * Renews the leases this instance holds (its listings', and those of the
 * users claimed and not started) and tells the schema it is alive; a
 * lease another instance has taken over ends its listing here.  The live
 * instances set the share of twilio.account_max_rps.
 */
static void
renew_leases(struct sweep *sw)
{
	struct sweep_state *st = &sw->st;
	size_t cap = sw->n_listings + CLAIMED_MAX, n = 0;
	struct lease_key *keys = xcalloc(cap, sizeof(*keys));
	struct listing **owner = xcalloc(cap, sizeof(*owner));
	bool *lost = xcalloc(cap, sizeof(*lost));
	size_t first_claimed;
	int live;

	for (size_t i = 0; i < sw->n_listings; i++) {
		if (listing_lease(sw->listings[i], false, &keys[n]))
			owner[n++] = sw->listings[i];
	}
	first_claimed = n;
	for (size_t i = 0; i < sw->n_claimed; i++) {
		const struct claimed *c = &sw->claimed[i];

		keys[n++] = (struct lease_key){sw->resolved[c->service_index].sid, c->user, -1,
					       c->pos.lease};
	}
	if (!lease_renew(st->db, sw->lease->instance_id, st->s->lease_seconds, keys, n, lost) ||
	    !lease_heartbeat(st->db, sw->lease->instance_id, st->s->lease_seconds, false, &live)) {
		if (!db_alive(st->db))
			sweep_state_lost(st, st->db);
		else
			log_warning("could not renew the leases: %s", db_error(st->db));
		goto out;
	}
	if (live == 0)
		log_warning(
			"this instance's row in sync_instances is gone; its leases stay fenced");
	for (size_t i = n; i-- > 0;) {
		if (!lost[i])
			continue;
		if (owner[i] != NULL) {
			listing_lease_lost(owner[i]);
			continue;
		}
		/* A user claimed and not started: it is the other's to list. */
		size_t k = i - first_claimed; /* those after it moved down; those before did not */
		struct claimed c = sw->claimed[k];

		log_info("service %s user \"%s\": taken over by another instance before it started",
			 sw->resolved[c.service_index].sid, c.user);
		cursor_position_free(&c.pos);
		memmove(&sw->claimed[k], &sw->claimed[k + 1],
			(sw->n_claimed - k - 1) * sizeof(*sw->claimed));
		sw->n_claimed--;
		add_revisit(sw, c.service_index, c.user);
	}
	sw->live_instances = live;
	pacer_set_rate(&st->pacer, pacer_budget(st->s->max_rps, st->s->account_max_rps, live));
	metrics_leases(st->metrics, n, live);
out:
	free(keys);
	free(owner);
	free(lost);
}

/* Renews the leases every third of sync.lease_seconds. */
static void
renew_when_due(struct sweep *sw)
{
	if (sw->st.db_lost ||
	    clock_seconds_since(&sw->last_renew) * 3 < (double)sw->st.s->lease_seconds)
		return;
	sw->last_renew = clock_now();
	renew_leases(sw);
}

/* A stop: the leases held are given up, so that another instance may go on at once. */
static void
release_leases(struct sweep *sw)
{
	struct sweep_state *st = &sw->st;
	size_t cap = sw->n_listings + CLAIMED_MAX, n = 0;
	struct lease_key *keys = xcalloc(cap, sizeof(*keys));

	for (size_t i = 0; i < sw->n_listings; i++)
		n += listing_lease(sw->listings[i], true, &keys[n]);
	for (size_t i = 0; i < sw->n_claimed; i++)
		keys[n++] = (struct lease_key){sw->resolved[sw->claimed[i].service_index].sid,
					       sw->claimed[i].user, -1, sw->claimed[i].pos.lease};
	if (n > 0 && !st->db_lost && !lease_release(st->db, sw->lease->instance_id, keys, n))
		log_warning("could not give up the leases: %s (they expire in %d s)",
			    db_error(st->db), st->s->lease_seconds);
	free(keys);
	sw->released = true;
}

/* A listing's lease was taken over: the sweep looks at it again until it is done. */
static void
on_lease_lost(void *arg, size_t service_index, const char *user, int dimension)
{
	struct sweep *sw = arg;

	if (dimension < 0) {
		add_revisit(sw, service_index, user);
		return;
	}
	for (size_t k = 0; k < DIMENSIONS; k++) {
		size_t job = service_index * DIMENSIONS + k;

		if ((int)job_order[k] == dimension && !sw->job_pending[job]) {
			sw->job_pending[job] = true;
			sw->n_jobs_pending++;
		}
	}
}

/* Forgets what was claimed and who others held: after a reconnect it is all looked at again. */
static void
forget_claims(struct sweep *sw)
{
	drop_claimed(sw);
	sw->n_revisit = 0;
	memset(sw->job_pending, 0, dimension_jobs(sw) * sizeof(*sw->job_pending));
	sw->n_jobs_pending = 0;
}

/*
 * The database went away mid-sweep, and no page is on a writer any more:
 * whatever was uncommitted is rolled back.  Reconnect with backoff, then go
 * over the users again: their cursors say who is done and where each
 * listing stands, and the leases this instance holds are its own to claim
 * again.
 */
static bool
recover_database(struct sweep *sw)
{
	log_warning("lost the database connection (%s); uncommitted pages will be fetched again",
		    sw->st.lost_reason[0] != '\0' ? sw->st.lost_reason : "no reason given");
	for (unsigned attempt = 1; attempt <= DB_RECONNECT_TRIES && !*sw->st.stop; attempt++) {
		nap(sw, backoff_delay_ms(attempt, DB_BACKOFF_BASE_MS, DB_BACKOFF_MAX_MS, -1,
					 &sw->st.rng));
		if (*sw->st.stop)
			break;
		if (sweep_connections_usable(sw->st.db, sw->writers, sw->n_writers, true)) {
			metrics_db_reconnect(sw->st.metrics);
			forget_claims(sw);
			sw->st.db_lost = false;
			sw->st.lost_reason[0] = '\0';
			sw->next_service = sw->next_user = 0;
			sw->next_job = 0; /* their cursors say which listings are done */
			sw->st.progress.users_done =
				0;	  /* counted again as the users are gone over */
			renew_leases(sw); /* heard of again, before anything is claimed */
			sw->last_renew = clock_now();
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
	/* Users and listings others hold are waited for, unless the sweep cannot go on. */
	bool others_hold = (sw->n_revisit > 0 || sw->n_jobs_pending > 0 || sw->n_claimed > 0 ||
			    sw->claiming.in_flight) &&
			   sweep_state_may_work(&sw->st);

	return !any_listing_busy(sw) && http_pending(sw->st.http) == 0 && commits_in_flight == 0 &&
	       !must_recover && !others_hold;
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
	/* The control connection serves the claims: its loss is noticed at once. */
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
on_commit_whole(void *arg, struct commit *c)
{
	(void)arg;
	return listing_commit_whole(c);
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
	.whole = on_commit_whole,
	.may_send = may_send_commits,
};

/* Sets up the sweep's listings and queues; false (logged) if the sweep cannot begin. */
static bool
sweep_begin(struct sweep *sw)
{
	struct sweep_state *st = &sw->st;
	struct commit_queue_events events = commit_events;
	struct timespec now = clock_now();

	st->metrics = sw->hooks != NULL ? sw->hooks->metrics : NULL;
	sw->live_instances = sw->lease->live_instances;
	pacer_init(&st->pacer, (unsigned)st->s->concurrency,
		   pacer_budget(st->s->max_rps, st->s->account_max_rps, sw->live_instances),
		   clock_now_ms());
	st->rng = (uint64_t)now.tv_nsec ^ ((uint64_t)getpid() << 32);
	st->run_id = sw->lease->run_id;
	sw->last_renew = now;
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
	log_info("%s sweep %" PRId64 " over %zu users",
		 sw->lease->resumed ? "resuming" : "starting", st->run_id,
		 st->progress.users_total);
	listings_new(sw);
	events.arg = sw;
	st->commits = commit_queue_new(sw->writers, sw->n_writers, sw->n_listings, &events);
	st->service_failed = xcalloc(st->s->n_services, sizeof(bool));
	st->account_refused = xcalloc(st->s->n_services, sizeof(bool));
	sw->resolved = xcalloc(st->s->n_services, sizeof(*sw->resolved));
	sw->job_pending = xcalloc(dimension_jobs(sw) + 1, sizeof(*sw->job_pending));
	st->dimension_ended = on_dimension_ended;
	st->dimension_ended_arg = sw;
	st->lease_lost = on_lease_lost;
	st->lease_lost_arg = sw;
	metrics_sweep_users(st->metrics, st->progress.users_total);
	metrics_sweep_started(st->metrics);
	return true;
}

static void
sweep_end(struct sweep *sw)
{
	listings_free(sw);
	commit_queue_free(sw->st.commits);
	drop_claimed(sw);
	free(sw->revisit);
	free(sw->job_pending);
	free(sw->st.service_failed);
	free(sw->st.account_refused);
	for (size_t i = 0; i < sw->st.s->n_services; i++) {
		for (size_t j = 0; j < sw->resolved[i].n_users; j++)
			free(sw->resolved[i].users[j]);
		free(sw->resolved[i].users);
	}
	free(sw->resolved);
}

enum sweep_result
sweep_run(const struct settings *s, struct db *db, struct db *const *writers, size_t n_writers,
	  struct http *http, const struct sweep_lease *lease, const volatile sig_atomic_t *stop,
	  const struct sweep_hooks *hooks)
{
	struct sweep sw = {.st = {.s = s, .db = db, .http = http, .stop = stop},
			   .hooks = hooks,
			   .lease = lease};
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

		if (*stop && !sw.released) {
			claim_collect(&sw, true); /* what it claimed is given up too */
			release_leases(&sw);
		}
		if (*stop)
			commit_queue_stop(sw.st.commits);
		if (sw.st.db_lost || *stop)
			abandon_listings(&sw);
		in_flight = commit_queue_sockets(sw.st.commits, fds);
		if (ready_to_recover(&sw, in_flight) && !recover_database(&sw))
			break;
		renew_when_due(&sw);
		if (!s->dimensions)
			resolve_without_listings(&sw);
		fill_listings(&sw);
		commit_queue_send(sw.st.commits);
		wait = run_due_retries(&sw, sw.n_revisit > 0 || sw.n_jobs_pending > 0
						    ? REVISIT_MS / 4
						    : TURN_MS);
		in_flight = commit_queue_sockets(sw.st.commits, fds);
		if (sweep_over(&sw, in_flight))
			break;
		if (sw.claiming.in_flight && sw.n_claimed == 0 && claim_collect(&sw, false))
			wait = 0; /* answered meanwhile: its users start at once */
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
