/*
 * test_backoff.c - the retry delay: its bounds, its growth per attempt,
 * Retry-After, the floor at base_ms and the cap at max_ms
 */
#include "config.h"

#include "backoff.h"

#include "tap.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#define DRAWS 20000

/* The smallest and largest of DRAWS delays for one set of arguments. */
struct range {
	long lo, hi;
};

static struct range
draw(unsigned attempt, long base_ms, long max_ms, long retry_after_s, uint64_t seed)
{
	struct range r = {LONG_MAX, LONG_MIN};
	uint64_t rng = seed;

	for (int i = 0; i < DRAWS; i++) {
		long d = backoff_delay_ms(attempt, base_ms, max_ms, retry_after_s, &rng);

		if (d < r.lo)
			r.lo = d;
		if (d > r.hi)
			r.hi = d;
	}
	return r;
}

static void
test_random(void)
{
	uint64_t a = 42, b = 42, c = 43;
	uint64_t first = backoff_random(&a);

	is_int((long long)backoff_random(&b), (long long)first,
	       "the same state gives the same number");
	ok(a == b && a != 42, "and moves the state on");
	ok(backoff_random(&a) != first, "the next step gives another number");
	ok(backoff_random(&c) != first, "another seed gives another number");
}

static void
test_bounds_and_growth(void)
{
	struct range r1, r4;

	/* base 10 ms, cap 60 s: the ceiling is 10 * 2^attempt until the cap. */
	for (unsigned attempt = 0; attempt <= 6; attempt++) {
		long ceiling = 10L << attempt;
		struct range r = draw(attempt, 10, 60000, -1, 7 + attempt);

		ok(r.lo >= 10 && r.hi <= ceiling,
		   "attempt %u: every delay within [10, %ld] ms (drew %ld..%ld)", attempt, ceiling,
		   r.lo, r.hi);
		ok(r.lo == 10 && r.hi == ceiling,
		   "attempt %u: the jitter spans the whole range, both ends included", attempt);
	}
	r1 = draw(1, 100, 60000, -1, 1);
	r4 = draw(4, 100, 60000, -1, 1);
	ok(r4.hi > 2 * r1.hi, "the range grows with the attempt (%ld ms at 1, %ld ms at 4)", r1.hi,
	   r4.hi);
}

static void
test_jitter(void)
{
	uint64_t rng = 5, again = 5;
	long d[8];
	bool varied = false;

	for (int i = 0; i < 8; i++) {
		d[i] = backoff_delay_ms(6, 10, 60000, -1, &rng);
		varied |= i > 0 && d[i] != d[0];
	}
	ok(varied, "successive delays differ (jitter)");
	is_int(backoff_delay_ms(6, 10, 60000, -1, &again), d[0],
	       "the same PRNG state gives the same delay");
}

static void
test_cap(void)
{
	struct range r = draw(30, 10, 1000, -1, 3);

	ok(r.lo >= 10 && r.hi <= 1000,
	   "attempt 30: within [10, 1000] ms, never above max_ms (%ld..%ld)", r.lo, r.hi);
	is_int(r.hi, 1000, "the cap itself is drawn");
	r = draw(UINT_MAX, 250, 30000, -1, 3);
	ok(r.lo >= 250 && r.hi <= 30000,
	   "attempt UINT_MAX: no overflow, within [250, 30000] (%ld..%ld)", r.lo, r.hi);
	r = draw(5, 10, 100, -1, 3);
	ok(r.hi <= 100, "a cap below base * 2^attempt wins (%ld)", r.hi);
}

static void
test_floor(void)
{
	struct range r = draw(0, 10, 60000, -1, 9);

	is_int(r.lo, 10, "attempt 0 still waits base_ms at least");
	r = draw(3, 500, 100, -1, 9);
	ok(r.lo == 500 && r.hi == 500, "max_ms below base_ms: always base_ms (%ld..%ld)", r.lo,
	   r.hi);
	r = draw(3, 0, 1000, -1, 9);
	ok(r.lo >= 1 && r.hi <= 8,
	   "base_ms 0 counts as 1 ms: never 0, and it still grows (%ld..%ld)", r.lo, r.hi);
	r = draw(3, -50, 1000, -1, 9);
	ok(r.lo >= 1 && r.hi <= 8, "a negative base_ms too (%ld..%ld)", r.lo, r.hi);
}

static void
test_retry_after(void)
{
	struct range r = draw(1, 10, 60000, 2, 11);

	ok(r.lo == 2000 && r.hi == 2000,
	   "Retry-After: 2 raises a small backoff to exactly 2000 ms (%ld..%ld)", r.lo, r.hi);
	r = draw(12, 1000, 60000, 1, 11);
	ok(r.lo >= 1000 && r.hi <= 60000 && r.hi > 1000,
	   "a Retry-After below the drawn backoff leaves it be (%ld..%ld)", r.lo, r.hi);
	r = draw(1, 10, 60000, 0, 11);
	ok(r.lo >= 10 && r.hi <= 20, "Retry-After: 0 still backs off: within [10, 20] (%ld..%ld)",
	   r.lo, r.hi);
	r = draw(1, 10, 5000, 60, 11);
	ok(r.lo == 5000 && r.hi == 5000, "a Retry-After beyond max_ms waits max_ms (%ld..%ld)",
	   r.lo, r.hi);
	r = draw(1, 10, 5000, 5, 11);
	ok(r.lo == 5000 && r.hi == 5000, "a Retry-After of exactly max_ms waits it (%ld..%ld)",
	   r.lo, r.hi);
	r = draw(1, 10, 1500, 2, 11);
	ok(r.lo == 1500 && r.hi == 1500,
	   "a Retry-After between max_ms and the next whole second waits max_ms (%ld..%ld)", r.lo,
	   r.hi);
	r = draw(1, 10, 60000, LONG_MAX, 11);
	ok(r.lo == 60000 && r.hi == 60000,
	   "a huge Retry-After does not overflow: max_ms (%ld..%ld)", r.lo, r.hi);
	r = draw(1, 10, 60000, -1, 11);
	ok(r.lo >= 10 && r.hi <= 20, "no Retry-After (-1): the plain backoff (%ld..%ld)", r.lo,
	   r.hi);
}

int
main(void)
{
	test_random();
	test_bounds_and_growth();
	test_jitter();
	test_cap();
	test_floor();
	test_retry_after();
	return tap_done();
}
