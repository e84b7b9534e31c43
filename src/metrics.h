/*
 * metrics.h - a Prometheus endpoint (text format 0.0.4) for the daemon
 *
 * metrics_new() starts a listener on its own thread (metrics_server.h)
 * that answers GET /metrics.  Every other function is called from the
 * daemon's main thread to count what happened; they are cheap (atomic adds,
 * or a short mutex hold for the per-service table) and never block on a
 * scrape.
 *
 * Every function accepts a NULL struct metrics * and then does nothing, so
 * callers call them unconditionally and metrics are off when
 * metrics.listen is "".
 *
 * Strings passed in are copied when kept; the caller keeps ownership.
 */
#ifndef CHATSYNC_METRICS_H
#define CHATSYNC_METRICS_H

#include <stdbool.h>
#include <stddef.h>

/* Services tracked by the per-service families; later ones are dropped with one warning. */
#define METRICS_MAX_SERVICES 10000

struct metrics;

/*
 * listen is "ADDR:PORT" as listen_addr_parse takes it ("127.0.0.1:19187",
 * "[::1]:19187"; port 0 picks any free port); whether a remote address is
 * allowed is the configuration's business.  Returns a listener the caller
 * owns (free with metrics_free), or NULL after logging why if listen is
 * invalid or cannot be bound.  It is created once the configuration has
 * loaded, so chatsync_config_last_reload_successful starts at 1.
 */
struct metrics *metrics_new(const char *listen) __attribute__((warn_unused_result));

/* Stops the listener (waiting for its thread) and frees m; NULL is a no-op. */
void metrics_free(struct metrics *m);

/* The TCP port actually listened on (useful with port 0); 0 for NULL. */
unsigned metrics_port(const struct metrics *m);

/*
 * One response from the API: counted by class 2xx..5xx; status 0 (no
 * response: connection, TLS, timeout) or anything outside 200..599 counts
 * as "error".
 */
void metrics_http_response(struct metrics *m, long status);

/* A retry was scheduled after status; after a 429 it also counts in chatsync_http_429_total. */
void metrics_retry(struct metrics *m, long status);

/*
 * A page of service_sid was committed with these row counts.  Negative
 * counts are ignored (counters never go down); a NULL service_sid is ignored.
 */
void metrics_page(struct metrics *m, const char *service_sid, long received, long inserted,
		  long updated, long unchanged, long deleted, long rejected);

/*
 * A user's listing ended in a sweep, successfully or not; it also counts
 * in chatsync_sweep_users_done, up to the sweep's chatsync_sweep_users_total.
 */
void metrics_user_done(struct metrics *m, const char *service_sid, bool ok);

/*
 * A sweep over total users begins: chatsync_sweep_users_total becomes total
 * and chatsync_sweep_users_done 0.  Both keep their values after the sweep
 * until the next one begins.  Done counts the listings that end in this
 * process: in a sweep resumed after a restart, the users that had finished
 * before it are not counted, and done stays short of total.
 */
void metrics_sweep_users(struct metrics *m, size_t total);

/* Sets chatsync_sweep_in_progress to 1. */
void metrics_sweep_started(struct metrics *m);

/*
 * A sweep finished after seconds with users_failed users failing: counts
 * it, clears chatsync_sweep_in_progress and sets the last-sweep gauges.
 * ok_services (n_ok_services borrowed strings) are the services all of
 * whose users succeeded in this sweep: their last-success timestamp becomes
 * now and their sweep duration seconds.
 */
/*
 * A sweep ended without finishing (stop, lost database, refused
 * credentials): no longer in progress.
 */
void metrics_sweep_stopped(struct metrics *m);
void metrics_sweep_finished(struct metrics *m, double seconds, long users_failed,
			    const char *const *ok_services, size_t n_ok_services);

/* The connection to PostgreSQL was re-established. */
void metrics_db_reconnect(struct metrics *m);

/* A listing of this instance was taken over by another (chatsync_leases_lost_total). */
void metrics_lease_lost(struct metrics *m);

/* The leases held now, and the live instances at the last heartbeat (0: unknown, kept). */
void metrics_leases(struct metrics *m, size_t held, int live_instances);

/* The instance's name, for chatsync_instance_info{instance="..."}. */
void metrics_instance(struct metrics *m, const char *name);

/*
 * A reload (SIGHUP) replaced the configuration (ok) or was refused and the
 * running one kept: chatsync_config_last_reload_successful becomes 1 or 0.
 */
void metrics_config_reloaded(struct metrics *m, bool ok);

#endif
