/*
 * sweep.h - one sweep over every configured user
 *
 * The only module that knows all the others: it fetches each user's pages,
 * feeds them to the parser, commits each to the database, and decides what
 * a failure means.
 */
#ifndef CHATSYNC_SWEEP_H
#define CHATSYNC_SWEEP_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct settings;
struct db;
struct http;
struct metrics;

enum sweep_result {
	SWEEP_OK,	    /* every user's listing completed */
	SWEEP_USERS_FAILED, /* the sweep finished, some users failed */
	SWEEP_DB_FAILED,    /* the database went away; the sweep stays unfinished */
	SWEEP_INTERRUPTED,  /* *stop was set; the sweep stays unfinished */
	SWEEP_AUTH_FAILED,  /* the API refused the credentials; the sweep stays unfinished */
};

struct sweep_progress {
	int64_t run_id;
	size_t users_total;
	size_t users_started; /* listings started by this process in this sweep */
	size_t users_done;    /* users that need nothing more of this process: done or failed */
	unsigned long pages;  /* pages committed by this process in this sweep */
	unsigned long rows;   /* entries received in those pages */
};

/* What the caller learns while a sweep runs; every member may be NULL. */
struct sweep_hooks {
	/* Called at least every 200 ms, for watchdog pings and status lines. */
	void (*tick)(void *arg, const struct sweep_progress *progress);
	void *arg;
	struct metrics *metrics; /* counters to update, or NULL */
};

/* The sweep an instance works on (see run_join), and who it is. */
struct sweep_lease {
	int64_t instance_id; /* see lease_register */
	int64_t run_id;
	bool resumed;	    /* the sweep was open already */
	int live_instances; /* at the last heartbeat */
};

/*
 * Runs this instance's part of the sweep lease->run_id: its users that no
 * other instance has listed or holds, and then those another held once
 * they are free.  Returns when it is over or as soon as *stop becomes
 * non-zero.  db serves the cursors and the leases; pages are committed on
 * the n_writers connections writers[] to the same database (at most
 * HTTP_MAX_EXTRA_FDS), each one page at a time, while the transfers go on.
 * hooks may be NULL.
 */
enum sweep_result sweep_run(const struct settings *s, struct db *db, struct db *const *writers,
			    size_t n_writers, struct http *http, const struct sweep_lease *lease,
			    const volatile sig_atomic_t *stop, const struct sweep_hooks *hooks);

/*
 * Makes sure the connections are usable, reconnecting those that are lost;
 * live connections are kept.  probe checks with a round trip, else libpq's
 * view is trusted.  Logs a reconnection, or why it failed.
 */
bool sweep_connections_usable(struct db *control, struct db *const *writers, size_t n_writers,
			      bool probe) __attribute__((warn_unused_result));

#endif
