/*
 * clock.c - the time helpers every module uses
 */
#include "config.h"

#include "clock.h"

#define NSEC_PER_SEC 1000000000L
#define NSEC_PER_MSEC 1000000L

struct timespec
clock_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts;
}

double
clock_now_ms(void)
{
	struct timespec ts = clock_now();

	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

struct timespec
clock_after_ms(struct timespec t, long ms)
{
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * NSEC_PER_MSEC;
	if (t.tv_nsec >= NSEC_PER_SEC) {
		t.tv_sec++;
		t.tv_nsec -= NSEC_PER_SEC;
	} else if (t.tv_nsec < 0) {
		t.tv_sec--;
		t.tv_nsec += NSEC_PER_SEC;
	}
	return t;
}

long
clock_ms_until(const struct timespec *t)
{
	struct timespec now = clock_now();

	return (long)(t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec) / NSEC_PER_MSEC;
}

double
clock_seconds_since(const struct timespec *t)
{
	struct timespec now = clock_now();

	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

bool
clock_reached(const struct timespec *t)
{
	struct timespec now = clock_now();

	return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

double
clock_unix_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
