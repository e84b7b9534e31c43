/*
 * listing.h - one user's listing within a sweep
 *
 * A listing walks one user's pages: fetch, parse as the body streams in,
 * hand the page to the commit queue, follow next_page_url once it is
 * committed.  It decides what each failure means for its user: retry the
 * page later, restart from page 1, or fail the user (recorded on its
 * cursor).  A service's dimension listings (its users, its channels, the
 * service itself) are walked the same way, a failure recorded on the
 * listing's own cursor.  The sweep decides which users and listings go,
 * and when.
 */
#ifndef CHATSYNC_LISTING_H
#define CHATSYNC_LISTING_H

#include "dimension.h"
#include "pacer.h"
#include "sweep.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct commit;
struct commit_queue;
struct cursor_position;
struct db;
struct http;
struct lease_key;
struct metrics;
struct settings;
struct store_counts;

/* What the listings of one sweep share; the sweep owns it. */
struct sweep_state {
	const struct settings *s;
	struct db *db; /* the cursors */
	struct http *http;
	struct commit_queue *commits;
	struct metrics *metrics; /* or NULL */
	const volatile sig_atomic_t *stop;
	int64_t run_id;
	uint64_t rng;
	struct pacer pacer;
	bool db_lost;
	char lost_reason[256];	   /* why the database was lost, first seen */
	unsigned long leases_lost; /* listings another instance took over in this sweep */
	bool auth_failed;
	unsigned uncounted_requests, uncounted_retries; /* of pages that were dropped */
	unsigned unrecorded_failures; /* users that failed where the database could not say so */
	bool *service_failed;	      /* per configured service */
	bool *account_refused; /* per service: the API refused its own account's credentials */
	struct sweep_progress progress;
	/*
	 * A dimension listing (enum dimension) of a service ended, complete or
	 * failed, in this sweep (not when it is dropped for a stop or a lost
	 * database).
	 */
	void (*dimension_ended)(void *arg, size_t service_index, int dimension);
	void *dimension_ended_arg;
	/*
	 * The lease of a user's listing (dimension -1) or of a dimension
	 * listing was taken over by another instance: the listing was dropped.
	 */
	void (*lease_lost)(void *arg, size_t service_index, const char *user, int dimension);
	void *lease_lost_arg;
};

/* The database is lost: db's error is kept as the reason, if it is the first one. */
void sweep_state_lost(struct sweep_state *st, struct db *db);

/* May listings start or go on (no stop, no lost database, credentials accepted)? */
bool sweep_state_may_work(const struct sweep_state *st);

/*
 * Fails a user that no listing started for (it could not be claimed, or
 * its account's credentials were refused), holding lease (0: none), for a
 * reason of this kind (see struct cursor_error): logged, counted and
 * recorded like any failed listing.
 */
void sweep_state_fail_user(struct sweep_state *st, size_t service_index, const char *user,
			   int64_t lease, const char *kind, const char *reason);

struct listing;

/* Returns an idle listing the caller owns, for the sweep st. */
struct listing *listing_new(struct sweep_state *st);
void listing_free(struct listing *l);

/*
 * Starts listing users[user_index] of service service_index from pos (whose
 * next_url it takes over), and sends its first request.
 */
void listing_start(struct listing *l, size_t service_index, const char *user,
		   struct cursor_position *pos);

/*
 * Starts listing dimension d of service service_index from pos (see
 * dimension_position), like a user's listing: the same retries, checks of
 * next_page_url, and commits through the queue.
 */
void listing_start_dimension(struct listing *l, size_t service_index, enum dimension d,
			     struct cursor_position *pos);

/* Is the listing doing anything (fetching, waiting to retry, committing)? */
bool listing_busy(const struct listing *l);

/*
 * Does it hold one of the slots that bound the listings in flight (all but
 * a last page being committed)?
 */
bool listing_holds_slot(const struct listing *l);

/*
 * A listing waiting to retry: sends the request once its time has come
 * (or drops the listing if work must stop).  Returns the ms until its
 * time, or -1 if there is nothing to wait for.
 */
long listing_retry_when_due(struct listing *l);

/*
 * The database is lost or a stop was asked for: drops the listing if it
 * waits to retry, or its page waits for a writer.  A page on a writer is
 * let finish, so that what it committed is known before anything is read
 * again.
 */
void listing_abandon(struct listing *l);

/* Ends the listing's part in the sweep; what it has not counted yet is kept for the run. */
void listing_release(struct listing *l);

/*
 * The lease the listing holds, if it is busy (with idle_too, the lease of
 * its last user even if it has ended since: a stop gives it up, whatever
 * ended the listing); false if none.
 */
bool listing_lease(const struct listing *l, bool idle_too, struct lease_key *out);

/*
 * Another instance has taken the listing's lease over: the listing is
 * dropped, at once or as soon as its transfer or commit ends.
 */
void listing_lease_lost(struct listing *l);

/* The commit queue's reports about a listing's page (c->owner is the listing). */
void listing_committed(struct commit *c, const struct store_counts *counts);
void listing_commit_failed(struct commit *c, struct db *wdb);
void listing_commit_refused(struct commit *c);
/*
 * The listing's last page went as unchanged, but the stored digests were
 * not those: makes the page whole to go again (see commit_queue.h); false
 * if the listing failed instead.
 */
bool listing_commit_whole(struct commit *c);

#endif
