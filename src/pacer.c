/*
 * pacer.c - how many requests may be in flight, and how fast they may start
 */
#include "config.h"

#include "pacer.h"

#define SUCCESSES_PER_STEP 4
#define CUT_INTERVAL_MS 1000.0

void
pacer_init(struct pacer *p, unsigned concurrency, double max_rps, double now_ms)
{
	p->rate = max_rps > 0 ? max_rps : 0;
	p->burst = p->rate >= 1 ? p->rate : 1;
	p->tokens = p->burst;
	p->last_ms = now_ms;
	p->cap = concurrency > 0 ? concurrency : 1;
	p->limit = p->cap;
	p->successes = 0;
	p->last_cut_ms = now_ms - CUT_INTERVAL_MS;
}

void
pacer_set_rate(struct pacer *p, double max_rps)
{
	double rate = max_rps > 0 ? max_rps : 0;

	if (rate == p->rate)
		return;
	p->rate = rate;
	p->burst = p->rate >= 1 ? p->rate : 1;
	if (p->tokens > p->burst)
		p->tokens = p->burst;
}

double
pacer_budget(int max_rps, int account_max_rps, int live_instances)
{
	double share;

	if (account_max_rps <= 0)
		return max_rps;
	share = (double)account_max_rps / (live_instances > 0 ? live_instances : 1);
	return max_rps > 0 && max_rps < share ? max_rps : share;
}

long
pacer_take(struct pacer *p, double now_ms)
{
	double wait;

	if (p->rate <= 0)
		return 0;
	if (now_ms > p->last_ms) {
		p->tokens += (now_ms - p->last_ms) * p->rate / 1000.0;
		if (p->tokens > p->burst)
			p->tokens = p->burst;
		p->last_ms = now_ms;
	}
	if (p->tokens >= 1.0) {
		p->tokens -= 1.0;
		return 0;
	}
	wait = (1.0 - p->tokens) * 1000.0 / p->rate;
	return (long)wait + 1;
}

void
pacer_success(struct pacer *p)
{
	if (p->limit >= p->cap)
		return;
	if (++p->successes >= p->limit * SUCCESSES_PER_STEP) {
		p->limit++;
		p->successes = 0;
	}
}

bool
pacer_throttled(struct pacer *p, double now_ms)
{
	unsigned before = p->limit;

	p->successes = 0;
	if (now_ms - p->last_cut_ms < CUT_INTERVAL_MS)
		return false;
	p->last_cut_ms = now_ms;
	p->limit = p->limit / 2 > 0 ? p->limit / 2 : 1;
	return p->limit != before;
}
