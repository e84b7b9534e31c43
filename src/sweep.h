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

/*
 * Runs a sweep, resuming an unfinished one where it stopped.  Returns when
 * it is over or as soon as *stop becomes non-zero.  db holds the schema lock
 * and serves the cursors; pages are committed on the n_writers connections
 * writers[] to the same database (at most HTTP_MAX_EXTRA_FDS), each one page
 * at a time, while the transfers go on.  hooks may be NULL.
 */
enum sweep_result sweep_run(const struct settings *s, struct db *db, struct db *const *writers,
			    size_t n_writers, struct http *http, const volatile sig_atomic_t *stop,
			    const struct sweep_hooks *hooks);

/*
 * Makes sure the connections are usable, reconnecting those that are lost
 * (the control connection takes the schema lock and a new fencing epoch
 * again, and the writers then carry it); live connections are kept, but
 * with renew the control connection is opened anew whatever its state.
 * probe checks with a round trip, else libpq's view is trusted.  Logs a
 * reconnection, or why it failed.  *took_back (if not NULL) tells whether
 * the control connection was opened anew, and so took the schema back.
 */
bool sweep_connections_usable(struct db *control, struct db *const *writers, size_t n_writers,
			      bool probe, bool renew, bool *took_back)
	__attribute__((warn_unused_result));

#endif
