/*
 * pacer.h - how many requests may be in flight, and how fast they may start
 *
 * Two controls: a token bucket that caps the request rate (twilio.max_rps),
 * and an additive-increase / multiplicative-decrease limit on concurrent
 * listings that halves when the API answers 429 and grows back by one after
 * a run of successes, never above the configured concurrency.  Pure
 * arithmetic on times the caller passes in, so it is easy to test.
 */
#ifndef CHATSYNC_PACER_H
#define CHATSYNC_PACER_H

#include <stdbool.h>

struct pacer {
	double rate;  /* requests per second; 0: no rate cap */
	double burst; /* bucket size */
	double tokens;
	double last_ms;
	unsigned cap;	    /* configured concurrency */
	unsigned limit;	    /* current concurrency limit, 1..cap */
	unsigned successes; /* since the last change of limit */
	double last_cut_ms; /* when limit was last cut */
};

/* Starts full: limit = concurrency, a full bucket. */
void pacer_init(struct pacer *p, unsigned concurrency, double max_rps, double now_ms);

/* A new rate cap (0: none), kept from now on; the bucket keeps what it holds, up to its size. */
void pacer_set_rate(struct pacer *p, double max_rps);

/*
 * The rate cap of one instance: twilio.max_rps (0: none), and a share of
 * twilio.account_max_rps (0: none) split evenly between the live instances,
 * whichever is lower.
 */
double pacer_budget(int max_rps, int account_max_rps, int live_instances);

/*
 * Asks to send a request now.  Returns 0 and takes a token if it may go,
 * else the milliseconds until it may.
 */
long pacer_take(struct pacer *p, double now_ms);

/* A request succeeded: after limit * 4 successes in a row the limit grows by one. */
void pacer_success(struct pacer *p);

/*
 * The API throttled a request (429): halves the limit, at most once a
 * second so one burst of 429s counts once.  True if the limit changed.
 */
bool pacer_throttled(struct pacer *p, double now_ms);

#endif
