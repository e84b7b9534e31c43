/*
 * backoff.h - how long to wait before retrying a request
 */
#ifndef CHATSYNC_BACKOFF_H
#define CHATSYNC_BACKOFF_H

#include <stdint.h>

/*
 * The delay in milliseconds before retry number attempt (1 for the first
 * retry): exponential backoff with full jitter, a uniform draw between
 * base_ms and min(max_ms, base_ms * 2^attempt).  A Retry-After of
 * retry_after_s seconds (-1 when absent) raises the delay to at least that,
 * still within max_ms.  The result is never below base_ms, so even
 * "Retry-After: 0" backs off.  *rng is the caller's PRNG state.
 */
long backoff_delay_ms(unsigned attempt, long base_ms, long max_ms, long retry_after_s,
		      uint64_t *rng);

/* A PRNG step (splitmix64) for backoff_delay_ms's jitter. */
uint64_t backoff_random(uint64_t *state);

#endif
