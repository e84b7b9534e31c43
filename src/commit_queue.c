/*
 * commit_queue.c - pages waiting for a writer connection, and the writers
 * committing them
 */
#include "config.h"

#include "commit_queue.h"

#include "clock.h"
#include "db.h"
#include "dimension.h"
#include "log.h"
#include "mem.h"
#include "page_batch.h"

#include <stdlib.h>
#include <string.h>

/* After a stop, how long a page being committed is let finish before it is cancelled. */
#define STOP_GRACE_MS 1000

/* A connection that commits pages, and the page it is committing. */
struct writer {
	struct db *db;
	struct commit *commit; /* NULL when idle, or when the owner forgot it meanwhile */
};

struct commit_queue {
	struct writer writers[COMMIT_QUEUE_MAX_WRITERS];
	size_t n_writers;
	struct commit **waiting; /* pages waiting for a writer, oldest first */
	size_t n_waiting, capacity;
	struct commit_queue_events ev;
	double stop_seen_ms;	/* when commit_queue_stop was first called; 0 before */
	bool commits_cancelled; /* after the stop's grace period */
};

struct commit_queue *
commit_queue_new(struct db *const *writers, size_t n_writers, size_t capacity,
		 const struct commit_queue_events *events)
{
	struct commit_queue *q = xcalloc(1, sizeof(*q));

	if (n_writers > COMMIT_QUEUE_MAX_WRITERS)
		n_writers = COMMIT_QUEUE_MAX_WRITERS;
	for (size_t i = 0; i < n_writers; i++)
		q->writers[i].db = writers[i];
	q->n_writers = n_writers;
	q->waiting = xcalloc(capacity, sizeof(*q->waiting));
	q->capacity = capacity;
	q->ev = *events;
	return q;
}

void
commit_queue_free(struct commit_queue *q)
{
	if (q != NULL)
		free(q->waiting);
	free(q);
}

static void
unqueue(struct commit_queue *q, const struct commit *c)
{
	for (size_t i = 0; i < q->n_waiting; i++) {
		if (q->waiting[i] == c) {
			memmove(&q->waiting[i], &q->waiting[i + 1],
				(q->n_waiting - i - 1) * sizeof(*q->waiting));
			q->n_waiting--;
			return;
		}
	}
}

static void
push_front(struct commit_queue *q, struct commit *c)
{
	memmove(&q->waiting[1], &q->waiting[0], q->n_waiting * sizeof(*q->waiting));
	q->waiting[0] = c;
	q->n_waiting++;
}

/* Sends c on w: without its rows when the listing is one page the cursor already holds. */
static bool
send_on(struct writer *w, struct commit *c)
{
	if (c->dimension >= 0) {
		c->unchanged_sent = false;
		return dimension_send_page(w->db, (enum dimension)c->dimension, c->batch, &c->page);
	}
	c->unchanged_sent = c->page.unchanged != NULL;
	if (c->unchanged_sent)
		return store_send_unchanged(w->db, &c->page);
	return store_send_page(w->db, c->batch, &c->page);
}

/* Hands the oldest waiting pages to the writers that are free. */
static void
pump(struct commit_queue *q)
{
	for (size_t i = 0; i < q->n_writers && q->n_waiting > 0 && q->ev.may_send(q->ev.arg); i++) {
		struct writer *w = &q->writers[i];
		struct commit *c = q->waiting[0];

		if (db_busy(w->db))
			continue;
		unqueue(q, c);
		if (send_on(w, c))
			w->commit = c;
		else
			q->ev.failed(q->ev.arg, c, w->db);
	}
}

void
commit_queue_send(struct commit_queue *q)
{
	pump(q);
}

void
commit_queue_add(struct commit_queue *q, struct commit *c)
{
	q->waiting[q->n_waiting++] = c;
	pump(q);
}

void
commit_queue_forget(struct commit_queue *q, const struct commit *c)
{
	unqueue(q, c);
	for (size_t i = 0; i < q->n_writers; i++) {
		if (q->writers[i].commit == c)
			q->writers[i].commit = NULL; /* its result is read and dropped */
	}
}

bool
commit_queue_sending(const struct commit_queue *q, const struct commit *c)
{
	for (size_t i = 0; i < q->n_writers; i++) {
		if (q->writers[i].commit == c)
			return true;
	}
	return false;
}

/* Reads w's result if it has come (or waits for it), and reports it. */
static void
collect(struct commit_queue *q, struct writer *w, bool wait)
{
	struct store_counts counts;
	struct commit *c;
	PGresult *res;
	bool committed, applied = true;

	if (!db_collect(w->db, wait, &res))
		return;
	c = w->commit;
	w->commit = NULL;
	if (c == NULL) {
		PQclear(res); /* the owner forgot it meanwhile */
		return;
	}
	if (c->dimension >= 0)
		committed = dimension_page_result(w->db, res, &counts);
	else if (c->unchanged_sent)
		committed = store_unchanged_result(w->db, res, &applied, &counts);
	else
		committed = store_page_result(w->db, res, &counts);
	if (committed && counts.refused) {
		q->ev.refused(q->ev.arg, c);
	} else if (committed && !applied) {
		/* The stored digests are not those: send the page whole, first. */
		c->page.unchanged = NULL;
		if (q->ev.whole == NULL || q->ev.whole(q->ev.arg, c))
			push_front(q, c);
	} else if (committed) {
		q->ev.committed(q->ev.arg, c, &counts);
	} else {
		q->ev.failed(q->ev.arg, c, w->db);
	}
}

void
commit_queue_poll(struct commit_queue *q, bool wait)
{
	for (size_t i = 0; i < q->n_writers; i++) {
		if (db_busy(q->writers[i].db))
			collect(q, &q->writers[i], wait);
	}
	pump(q);
}

size_t
commit_queue_sockets(const struct commit_queue *q, int *fds)
{
	size_t n = 0;

	for (size_t i = 0; i < q->n_writers; i++) {
		if (db_busy(q->writers[i].db))
			fds[n++] = db_socket(q->writers[i].db);
	}
	return n;
}

void
commit_queue_stop(struct commit_queue *q)
{
	if (q->stop_seen_ms == 0) {
		q->stop_seen_ms = clock_now_ms();
		return;
	}
	if (q->commits_cancelled || clock_now_ms() - q->stop_seen_ms < STOP_GRACE_MS)
		return;
	for (size_t i = 0; i < q->n_writers; i++) {
		if (!db_busy(q->writers[i].db))
			continue;
		log_info("stopping: cancelling a commit still running after %d ms", STOP_GRACE_MS);
		if (!db_cancel(q->writers[i].db))
			log_warning("could not cancel a commit: %s", db_error(q->writers[i].db));
	}
	q->commits_cancelled = true;
}
