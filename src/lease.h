/*
 * lease.h - several chatsyncd on one schema: instances and leases
 *
 * Each chatsyncd registers as an instance of the schema, and claims the
 * users (and dimension listings) it lists with leases on their cursors:
 * an owner, an expiry and a fencing token (see sql/012_leases.sql).  It
 * renews its leases while it works; each write of a listing carries its
 * token, and is refused once another instance has taken the lease over.
 */
#ifndef CHATSYNC_LEASE_H
#define CHATSYNC_LEASE_H

#include "dimension.h"

#include <libpq-fe.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cursor_position;
struct db;

/*
 * Instances that are live by their lease but gone: those of this host whose
 * process is no longer there (killed, crashed), and, with name (an
 * explicit sync.instance_name), an earlier one of that name.  Their leases
 * are freed at once (see sync_instance_gone()); *reaped counts them.
 */
bool lease_reap(struct db *db, const char *name, size_t *reaped)
	__attribute__((warn_unused_result));

/* Registers this process as an instance of the schema, live for seconds. */
bool lease_register(struct db *db, const char *name, int seconds, int64_t *instance_id)
	__attribute__((warn_unused_result));

/*
 * The instance is alive for seconds more (with stop: it stops, and counts
 * as live no more).  *live: the live instances of the schema, itself
 * included; 0 if its row is gone (then it registers again).
 */
bool lease_heartbeat(struct db *db, int64_t instance_id, int seconds, bool stop, int *live)
	__attribute__((warn_unused_result));

enum lease_outcome {
	LEASE_CLAIMED, /* this instance holds it now: its position is read */
	LEASE_DONE,    /* finished or failed in this sweep */
	LEASE_PENDING, /* due, but another instance holds it, or left for a later claim */
};

/*
 * Claims up to limit of the n users of a service, in order, for the sweep
 * run_id: outcome[i] says what became of users[i]; pos[i] is its position
 * where claimed (its next_url and digests are the caller's), with the
 * lease token.
 */
bool lease_claim_users(struct db *db, int64_t run_id, int64_t instance_id, int seconds,
		       const char *service_sid, const char *const *users, size_t n, size_t limit,
		       enum lease_outcome *outcome, struct cursor_position *pos)
	__attribute__((warn_unused_result));

/*
 * The same in two steps, so that the sweep goes on meanwhile: the claim is
 * sent without waiting (see db_send_prepared), and its result, once
 * db_collect() has it, is read (and freed) by lease_claim_read().
 */
bool lease_claim_send(struct db *db, int64_t run_id, int64_t instance_id, int seconds,
		      const char *service_sid, const char *const *users, size_t n, size_t limit)
	__attribute__((warn_unused_result));
bool lease_claim_read(struct db *db, PGresult *res, int64_t run_id, size_t n,
		      enum lease_outcome *outcome, struct cursor_position *pos)
	__attribute__((warn_unused_result));

/* Claims dimension listing d of a service for the sweep run_id, as above. */
bool lease_claim_dimension(struct db *db, int64_t run_id, int64_t instance_id, int seconds,
			   const char *service_sid, enum dimension d, enum lease_outcome *outcome,
			   struct cursor_position *pos) __attribute__((warn_unused_result));

/* A lease held: of a user's listing, or (dimension >= 0) of a dimension listing. */
struct lease_key {
	const char *service_sid;
	const char *user; /* NULL for a dimension listing */
	int dimension;	  /* enum dimension, or -1 */
	int64_t token;
};

/*
 * Renews the n leases for seconds more; lost[i] tells that keys[i] is held
 * no more (another instance took it over).
 */
bool lease_renew(struct db *db, int64_t instance_id, int seconds, const struct lease_key *keys,
		 size_t n, bool *lost) __attribute__((warn_unused_result));

/* Gives the n leases up (a stop): another instance may take them at once. */
bool lease_release(struct db *db, int64_t instance_id, const struct lease_key *keys, size_t n)
	__attribute__((warn_unused_result));

/*
 * Orders the n users of a service as they are claimed: those never listed
 * completely first, then by their last complete listing, oldest first; the
 * order given breaks ties.
 */
bool lease_stalest_first(struct db *db, const char *service_sid, char **users, size_t n)
	__attribute__((warn_unused_result));

#endif
