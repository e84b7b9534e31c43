/*
 * backoff.c - how long to wait before retrying a request
 */
#include "config.h"

#include "backoff.h"

uint64_t
backoff_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

long
backoff_delay_ms(unsigned attempt, long base_ms, long max_ms, long retry_after_s, uint64_t *rng)
{
	long ceiling = base_ms, delay;

	if (base_ms < 1)
		base_ms = ceiling = 1;
	if (max_ms < base_ms)
		max_ms = base_ms;
	for (unsigned i = 0; i < attempt && ceiling < max_ms; i++)
		ceiling *= 2;
	if (ceiling > max_ms)
		ceiling = max_ms;
	delay = base_ms + (long)(backoff_random(rng) % (uint64_t)(ceiling - base_ms + 1));
	if (retry_after_s >= 0 && retry_after_s <= max_ms / 1000 && retry_after_s * 1000 > delay)
		delay = retry_after_s * 1000;
	else if (retry_after_s > max_ms / 1000)
		delay = max_ms;
	return delay;
}
