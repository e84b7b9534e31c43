/*
 * test_pacer.c - the request-rate bucket and the AIMD concurrency limit
 */
#include "config.h"

#include "pacer.h"

#include "tap.h"

static void
test_no_rate_cap(void)
{
	struct pacer p;
	long waited = 0;

	pacer_init(&p, 8, 0, 0);
	for (int i = 0; i < 10000; i++)
		waited += pacer_take(&p, 0);
	is_int(waited, 0, "without max_rps every request may go at once");
}

static void
test_rate_cap(void)
{
	struct pacer p;
	int sent = 0;
	double t;

	pacer_init(&p, 8, 10, 0);
	for (int i = 0; i < 10; i++)
		sent += pacer_take(&p, 0) == 0;
	is_int(sent, 10, "a full bucket lets max_rps requests go at once");
	ok(pacer_take(&p, 0) > 0, "the next one has to wait");
	is_int(pacer_take(&p, 0), 101, "about 1/max_rps seconds (101 ms at 10/s)");
	is_int(pacer_take(&p, 100), 0, "and may go once that time has passed");
	/* Over 10 simulated seconds at most rate * 10 + burst requests go. */
	sent = 0;
	for (t = 100; t < 10100; t += 1)
		sent += pacer_take(&p, t) == 0;
	ok(sent >= 99 && sent <= 101, "10 s at 10/s lets about 100 requests go (%d)", sent);
	pacer_init(&p, 8, 0.5, 0);
	is_int(pacer_take(&p, 0), 0, "a rate below 1/s still allows one request");
	is_int(pacer_take(&p, 0), 2001, "then waits 2 s at 0.5/s");
}

static void
test_aimd(void)
{
	struct pacer p;

	pacer_init(&p, 16, 0, 0);
	is_int(p.limit, 16, "the limit starts at the configured concurrency");
	ok(pacer_throttled(&p, 5000), "a 429 cuts the limit");
	is_int(p.limit, 8, "by half");
	ok(!pacer_throttled(&p, 5500), "more 429s in the same second do not cut again");
	is_int(p.limit, 8, "so a burst counts once");
	ok(pacer_throttled(&p, 6100), "a 429 a second later cuts again");
	is_int(p.limit, 4, "to 4");
	for (int i = 0; i < 15; i++)
		pacer_success(&p);
	is_int(p.limit, 4, "15 successes at limit 4 do not grow it");
	pacer_success(&p);
	is_int(p.limit, 5, "the 16th (limit x 4) grows it by one");
	for (int i = 0; i < 10000; i++)
		pacer_success(&p);
	is_int(p.limit, 16, "it grows back to the configured concurrency, never above");
	for (int i = 0; i < 10; i++)
		pacer_throttled(&p, 10000 + i * 1000.0);
	is_int(p.limit, 1, "and never below 1");
}

int
main(void)
{
	test_no_rate_cap();
	test_rate_cap();
	test_aimd();
	return tap_done();
}
