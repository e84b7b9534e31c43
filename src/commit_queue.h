/*
 * commit_queue.h - pages waiting for a writer connection, and the writers
 * committing them
 *
 * Pages are committed on the database.writers connections, one page on
 * each at a time, oldest first, without waiting: the transfers go on while
 * the server works.  A listing whose pages all equal the stored ones is
 * sent without its rows; if the stored digests differ, its last page goes
 * again whole, first in line.  Pages of the dimension listings
 * share the queue (see dimension_send_page).
 */
#ifndef CHATSYNC_COMMIT_QUEUE_H
#define CHATSYNC_COMMIT_QUEUE_H

#include "store.h"

#include <stdbool.h>
#include <stddef.h>

struct db;
struct page_batch;

/* A page to commit; the owner keeps it alive until it is reported or forgotten. */
struct commit {
	struct store_page page;
	struct page_batch *batch;
	int dimension; /* a page of a dimension listing (enum dimension), or -1: memberships */
	void *owner;
	bool unchanged_sent; /* sent without its rows */
};

struct commit_queue_events {
	/* c was committed, as counts tells. */
	void (*committed)(void *arg, struct commit *c, const struct store_counts *counts);
	/* c was not committed: why is db_error(wdb); the connection may be lost. */
	void (*failed)(void *arg, struct commit *c, struct db *wdb);
	/*
	 * c was refused: the writer has been fenced out (another chatsyncd took
	 * the schema), nothing was applied.
	 */
	void (*refused)(void *arg, struct commit *c);
	/*
	 * c went without its rows, but the stored digests are not those: it is
	 * to go again whole, and its owner makes it so (parsing a page it
	 * skipped as stored).  False: the owner gave c up instead.  NULL: c is
	 * always whole.
	 */
	bool (*whole)(void *arg, struct commit *c);
	/* May pages be sent now?  (Not while the database is lost, nor after a stop.) */
	bool (*may_send)(void *arg);
	void *arg;
};

struct commit_queue;

/* Writer connections a queue uses at most (database.writers allows 16). */
#define COMMIT_QUEUE_MAX_WRITERS 32

/*
 * Returns a queue the caller owns, for at most capacity pages at once, over
 * n_writers connections (borrowed; they must outlive the queue; at most
 * COMMIT_QUEUE_MAX_WRITERS are used).
 */
struct commit_queue *commit_queue_new(struct db *const *writers, size_t n_writers, size_t capacity,
				      const struct commit_queue_events *events);
void commit_queue_free(struct commit_queue *q);

/*
 * Queues c behind the pages waiting, and sends what the free writers can
 * take.  The owner never has more than capacity pages in the queue.
 */
void commit_queue_add(struct commit_queue *q, struct commit *c);

/*
 * The owner gives c up: it leaves the queue, and if it is on a writer, its
 * result will be read and dropped.
 */
void commit_queue_forget(struct commit_queue *q, const struct commit *c);

/* Is c on a writer (sent, its result not read yet)? */
bool commit_queue_sending(const struct commit_queue *q, const struct commit *c);

/* Sends the oldest waiting pages to the writers that are free. */
void commit_queue_send(struct commit_queue *q);

/* Reads the results that have come (with wait, waits for all of them), then sends more. */
void commit_queue_poll(struct commit_queue *q, bool wait);

/* The sockets of the writers that wait for a result, for poll; returns how many. */
size_t commit_queue_sockets(const struct commit_queue *q, int *fds);

/*
 * Called on each turn of the loop once a stop was asked for: commits still
 * running STOP_GRACE_MS after the first call are cancelled (they roll back,
 * and the pages are fetched again next time), so that a commit stuck on a
 * lock does not hold up the stop.
 */
void commit_queue_stop(struct commit_queue *q);

#endif
