/*
 * run.h - sweeps as the database records them (sync_runs)
 */
#ifndef CHATSYNC_RUN_H
#define CHATSYNC_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct db;
struct settings;
struct settings_service;

/*
 * The sweep instance_id is to work on: the open one (*resumed), else a new
 * one if the last began at least interval seconds ago or with force.  Else
 * *run_id is 0 and *wait_seconds says when the next may begin.  Under a
 * lock: the instances of a schema never open two sweeps at once.  On
 * failure the reason is in db_error(db).
 */
bool run_join(struct db *db, int64_t instance_id, int interval, bool force, int64_t *run_id,
	      bool *resumed, double *wait_seconds) __attribute__((warn_unused_result));

struct run_totals {
	long users_ok, users_failed, pages;
	long received, inserted, updated, unchanged, deleted, rejected;
	long requests, retries;
};

/*
 * Marks the sweep finished, adding requests not yet counted, and reads its
 * totals.  On failure the reason is in db_error(db).
 */
bool run_finish(struct db *db, int64_t run_id, unsigned requests, unsigned retries,
		struct run_totals *out) __attribute__((warn_unused_result));

/* Whether sweep run_id is finished.  On failure the reason is in db_error(db). */
bool run_is_finished(struct db *db, int64_t run_id, bool *finished)
	__attribute__((warn_unused_result));

/*
 * Records sync.interval and the users a sweep lists (sync_config,
 * sync_configured_users), for the sync_health view: as configured, and
 * for a service with users = "all" those its users listing holds.  On
 * failure the reason is in db_error(db).
 */
bool run_record_config(struct db *db, int interval_seconds, const struct settings_service *services,
		       size_t n_services) __attribute__((warn_unused_result));

/*
 * Deletes past versions, events and errors older than days days, in
 * batches of batch rows, each batch its own transaction, while go_on(arg)
 * says so (it is asked before each batch); *deleted counts them.  On
 * failure the reason is in db_error(db).
 */
bool run_prune(struct db *db, int days, int batch, bool (*go_on)(void *arg), void *arg,
	       long *deleted) __attribute__((warn_unused_result));

#endif
